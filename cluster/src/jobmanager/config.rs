//! How a jobmanager is started: [`JmConfig`], read by every other part of the jobmanager
//! and built by the command line (`streamd jobmanager ...`).

use crate::ha::HaConfig;
use crate::spec::JobSpec;
use std::path::PathBuf;

/// How a jobmanager is started (`streamd jobmanager ...`).
#[derive(Debug, Clone)]
pub struct JmConfig {
    pub id: String,
    pub job: JobSpec,
    pub data_dir: PathBuf,
    pub rpc_bind: String,
    pub rest_bind: String,
    /// The RPC address taskmanagers use to reach this jobmanager (published when it leads).
    pub rpc_advertise: String,
    /// This jobmanager's REST base URL as others reach it (`http://host:port`).
    pub rest_url: String,
    /// High availability through etcd; `None`: a single jobmanager that always leads.
    pub ha: Option<HaConfig>,
}
