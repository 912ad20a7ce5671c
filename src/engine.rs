//! The engine seam: which stream cluster a scenario runs on, and the one view of its job
//! the executor needs, whatever the engine.
//!
//! - [`Engine`]: `streamd` (ours, the default, built from this workspace) or `flink`
//!   (Apache Flink 2.3.0, [`crate::flink`]), chosen by `cluster.engine` or `--engine`.
//! - [`JobView`]: the job's state, history, failures and checkpoints as streamd's REST
//!   answers them. streamd's answers are used as they are; Flink's REST API is mapped onto
//!   them by [`crate::flink::watch`]. The run loop, the recovery timings and the reports
//!   are therefore one piece of code for both.
//! - [`committed_units`]: how much output is committed (recovery means it grows).
//!
//! Starting a cluster and judging its output differ more: see `executor::run`, which
//! dispatches on [`Engine`] at exactly those two points.

use std::path::{Path, PathBuf};
use std::time::Duration;

use streamd_contract::api::{CheckpointsInfo, JobDetails};

use crate::client::{ClientError, StreamdClient};
use crate::flink::watch::FlinkWatch;
use crate::runtime::Runtime;

/// The stream engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// This workspace's engine: needs only Docker (or nothing, on the process runtime).
    #[default]
    Streamd,
    /// Apache Flink 2.3.0, in containers built offline (a JDK on the host, PyPI reachable).
    Flink,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Streamd => "streamd",
            Engine::Flink => "flink",
        }
    }

    /// The node that jobmanager high availability (`jobmanagers > 1`) adds.
    pub fn coordinator(self) -> &'static str {
        match self {
            Engine::Streamd => "etcd-1",
            Engine::Flink => "zookeeper-1",
        }
    }

    /// Where the job's committed output appears, relative to the run directory.
    pub fn output_dir(self, job_id: &str) -> PathBuf {
        match self {
            Engine::Streamd => Path::new("output").join(job_id),
            Engine::Flink => Path::new("output").join(job_id).join("flink"),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much output `engine` has committed in `dir`: streamd's committed transactions, or
/// the bytes of Flink's visible files (FileSink's finished part files; the at-least-once
/// control's files grow as it writes). Only growth matters.
pub fn committed_units(engine: Engine, dir: &Path) -> std::io::Result<u64> {
    match engine {
        Engine::Streamd => streamd_contract::output::count_committed(dir),
        Engine::Flink => {
            let mut bytes = 0;
            for f in crate::flink::output::committed_files(dir)?.0 {
                bytes += std::fs::metadata(&f)?.len();
            }
            Ok(bytes)
        }
    }
}

/// The executor's view of the running job.
pub enum JobView {
    Streamd { client: StreamdClient, job_id: String },
    Flink(FlinkWatch),
}

impl JobView {
    /// Waits until `taskmanagers` taskmanagers have registered with the jobmanager.
    pub async fn wait_ready(&self, taskmanagers: usize, timeout: Duration) -> Result<(), String> {
        match self {
            JobView::Streamd { client, .. } => client.wait_ready(taskmanagers, timeout).await.map(|_| ()).map_err(|e| e.to_string()),
            JobView::Flink(w) => w.wait_ready(taskmanagers, timeout).await,
        }
    }

    /// The job now.
    pub async fn job(&mut self) -> Result<JobDetails, ClientError> {
        match self {
            JobView::Streamd { client, job_id } => client.job(job_id).await,
            JobView::Flink(w) => w.job().await,
        }
    }

    /// Whether every task has its slot (so nodes that join now are spares). streamd
    /// deploys only once every taskmanager registered: always true there.
    pub fn tasks_placed(&self) -> bool {
        match self {
            JobView::Streamd { .. } => true,
            JobView::Flink(w) => w.placed(),
        }
    }

    /// Its completed checkpoints.
    pub async fn checkpoints(&self) -> Result<CheckpointsInfo, ClientError> {
        match self {
            JobView::Streamd { client, job_id } => client.checkpoints(job_id).await,
            JobView::Flink(w) => w.checkpoints().await,
        }
    }

    /// With HA on Flink: looks up the leader (published in ZooKeeper), records a change
    /// of leader as the deposed jobmanager's failure, and talks to the new leader. streamd
    /// reports failovers in its own history: nothing to do.
    pub async fn track_leader<R: Runtime>(&mut self, rt: &R) {
        if let JobView::Flink(w) = self {
            if let Ok(node) = crate::nodes::leader(rt).await {
                if w.note_leader(node.clone(), streamd_contract::api::now_ms()) {
                    if let Ok(rest) = rt.rest_url(&node).await.map_err(|e| e.to_string()).and_then(|u| crate::flink::rest::FlinkRest::new(u).map_err(|e| e.to_string())) {
                        w.set_rest(rest);
                    }
                }
            }
        }
    }

    /// With HA, switches to the jobmanager that leads now (the one asked may be dead or
    /// frozen). Keeps the current one when no leader is known.
    pub async fn follow_leader<R: Runtime>(&mut self, rt: &R) {
        match self {
            JobView::Streamd { client, .. } => {
                if let Some(c) = crate::nodes::leader_client(rt).await {
                    *client = c;
                }
            }
            JobView::Flink(w) => {
                if let Ok(node) = crate::nodes::leader(rt).await {
                    if let Ok(url) = rt.rest_url(&node).await {
                        if let Ok(rest) = crate::flink::rest::FlinkRest::new(url) {
                            w.set_rest(rest);
                        }
                    }
                }
            }
        }
    }
}
