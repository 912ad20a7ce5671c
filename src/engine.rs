//! The engine seam: which stream cluster a scenario runs on, and the one view of its job
//! the executor needs, whatever the engine.
//!
//! - [`Engine`]: `streamd` (ours, the default, built from this workspace) or `flink`
//!   (Apache Flink 2.3.0, [`crate::flink`]), chosen by `cluster.engine` or `--engine`.
//! - [`JobSource`]: what the run loop asks of a running job: its state, history,
//!   failures and checkpoints as streamd's REST answers them, and its committed output.
//!   [`JobView`] answers it for both engines: streamd's answers are used as they are;
//!   Flink's REST API is mapped onto them by [`crate::flink::watch`]. The run loop, the
//!   recovery timings and the reports are therefore one piece of code for both (and the
//!   loop's tests answer it with a script).
//! - [`committed_units`]: how much output is committed (recovery means it grows).
//!
//! Starting a cluster and judging its output differ more: see `executor::run`, which
//! dispatches on [`Engine`] at exactly those two points.

use std::path::{Path, PathBuf};
use std::time::Duration;

use streamd_contract::api::{CheckpointsInfo, IntervalInfo, JobDetails};

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

/// What the run loop asks of the running job, whatever answers: [`JobView`] (the
/// engine's REST and its output directory) in a run, a scripted job in the loop's tests.
#[allow(async_fn_in_trait)]
pub trait JobSource {
    /// The job now.
    async fn job(&mut self) -> Result<JobDetails, ClientError>;

    /// Its completed checkpoints.
    async fn checkpoints(&self) -> Result<CheckpointsInfo, ClientError>;

    /// The checkpoint interval and its history (streamd); `None` where there is none to
    /// ask for (Flink's is fixed, a scripted job has none).
    async fn interval(&self) -> Option<IntervalInfo> {
        None
    }

    /// Whether every task has its slot (so nodes that join now are spares).
    fn tasks_placed(&self) -> bool;

    /// How much output is committed so far (see [`committed_units`]): recovery means it
    /// grows.
    fn committed(&self) -> std::io::Result<u64>;

    /// With HA, a periodic look at who leads (see [`JobView`]'s).
    async fn track_leader<R: Runtime>(&mut self, rt: &R);

    /// With HA, switches to the jobmanager that leads now (the one asked may be dead or
    /// frozen). Keeps the current one when no leader is known.
    async fn follow_leader<R: Runtime>(&mut self, rt: &R);
}

/// The executor's view of the running job: its REST API and its committed output.
pub struct JobView {
    rest: Rest,
    /// The job's output directory on the host (the run directory is every node's /data).
    output_dir: PathBuf,
}

enum Rest {
    Streamd { client: StreamdClient, job_id: String },
    Flink(FlinkWatch),
}

impl JobView {
    /// A streamd job, `job_id` on the jobmanager `client` talks to.
    pub fn streamd(client: StreamdClient, job_id: String, output_dir: PathBuf) -> JobView {
        JobView { rest: Rest::Streamd { client, job_id }, output_dir }
    }

    /// A Flink job, through streamd's answers (see [`crate::flink::watch`]).
    pub fn flink(watch: FlinkWatch, output_dir: PathBuf) -> JobView {
        JobView { rest: Rest::Flink(watch), output_dir }
    }

    /// Waits until `taskmanagers` taskmanagers have registered with the jobmanager.
    pub async fn wait_ready(&self, taskmanagers: usize, timeout: Duration) -> Result<(), String> {
        match &self.rest {
            Rest::Streamd { client, .. } => client.wait_ready(taskmanagers, timeout).await.map(|_| ()).map_err(|e| e.to_string()),
            Rest::Flink(w) => w.wait_ready(taskmanagers, timeout).await,
        }
    }
}

impl JobSource for JobView {
    async fn job(&mut self) -> Result<JobDetails, ClientError> {
        match &mut self.rest {
            Rest::Streamd { client, job_id } => client.job(job_id).await,
            Rest::Flink(w) => w.job().await,
        }
    }

    async fn checkpoints(&self) -> Result<CheckpointsInfo, ClientError> {
        match &self.rest {
            Rest::Streamd { client, job_id } => client.checkpoints(job_id).await,
            Rest::Flink(w) => w.checkpoints().await,
        }
    }

    async fn interval(&self) -> Option<IntervalInfo> {
        match &self.rest {
            Rest::Streamd { client, job_id } => match client.interval(job_id).await {
                Ok(i) => Some(i),
                Err(e) => {
                    tracing::warn!("cannot read the checkpoint interval: {e}");
                    None
                }
            },
            Rest::Flink(_) => None,
        }
    }

    /// streamd deploys only once every taskmanager registered: always true there.
    fn tasks_placed(&self) -> bool {
        match &self.rest {
            Rest::Streamd { .. } => true,
            Rest::Flink(w) => w.placed(),
        }
    }

    fn committed(&self) -> std::io::Result<u64> {
        let engine = match self.rest {
            Rest::Streamd { .. } => Engine::Streamd,
            Rest::Flink(_) => Engine::Flink,
        };
        committed_units(engine, &self.output_dir)
    }

    /// On Flink: looks up the leader (published in ZooKeeper), records a change of leader
    /// as the deposed jobmanager's failure, and talks to the new leader. streamd reports
    /// failovers in its own history: nothing to do.
    async fn track_leader<R: Runtime>(&mut self, rt: &R) {
        let Rest::Flink(w) = &mut self.rest else { return };
        let Ok(node) = crate::nodes::leader(rt).await else { return };
        if w.note_leader(node.clone(), streamd_contract::api::now_ms()) {
            if let Some(rest) = flink_rest(rt, &node).await {
                w.set_rest(rest);
            }
        }
    }

    async fn follow_leader<R: Runtime>(&mut self, rt: &R) {
        match &mut self.rest {
            Rest::Streamd { client, .. } => {
                if let Some(c) = crate::nodes::leader_client(rt).await {
                    *client = c;
                }
            }
            Rest::Flink(w) => {
                let Ok(node) = crate::nodes::leader(rt).await else { return };
                if let Some(rest) = flink_rest(rt, &node).await {
                    w.set_rest(rest);
                }
            }
        }
    }
}

/// A REST client for the Flink jobmanager `node`, if its address is known.
async fn flink_rest<R: Runtime>(rt: &R, node: &str) -> Option<crate::flink::rest::FlinkRest> {
    crate::flink::rest::FlinkRest::new(rt.rest_url(node).await.ok()?).ok()
}
