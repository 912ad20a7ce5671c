//! Runtimes: where the nodes of a cluster live. `docker` (the product: containers on a
//! bridge network, faults through the Docker Engine API) and `process` (the same nodes as
//! local processes on 127.0.0.1 ports: fast tests, machines without Docker).
//!
//! Both implement [`Runtime`]; the executor and the interactive commands are written
//! against the trait only. Tests use `fake` (compiled for tests only): a runtime that
//! records every call.

pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Jobmanager,
    Taskmanager,
    Etcd,
    /// A Flink cluster's ZooKeeper (its HA services); streamd clusters have none.
    Zookeeper,
    /// The line server a socket input reads (`streamd line-server`, `lines-1`).
    Lines,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Jobmanager => "jobmanager",
            Role::Taskmanager => "taskmanager",
            Role::Etcd => "etcd",
            Role::Zookeeper => "zookeeper",
            Role::Lines => "lines",
        }
    }
}

/// cgroup limits for one node (`cluster.resources` in a scenario).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPUs, fractional (docker `--cpus`).
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
}

/// One node to start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeDef {
    /// Canonical name: `jobmanager-1`, `taskmanager-2`, `etcd-1`, `zookeeper-1` (also its
    /// network alias).
    pub name: String,
    pub role: Role,
    /// Taskmanager slots (ignored for other roles).
    pub slots: u32,
    pub resources: Resources,
}

/// A whole cluster to start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterDef {
    /// Cluster id: label `chaos.cluster=<id>`, container name prefix `<id>-`.
    pub id: String,
    /// Host directory mounted at `/data` (holds `job.yaml`, input, checkpoints, output).
    pub run_dir: PathBuf,
    pub nodes: Vec<NodeDef>,
    /// Extra environment for every streamd node (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

/// A node as the runtime sees it now.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: Role,
    pub state: NodeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Running,
    Paused,
    Exited,
    Missing,
}

/// A runtime's failure, phrased for a user who must act on it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No Docker daemon, image build failed, ... (exit code 3).
    #[error("{0}")]
    Infrastructure(String),
    /// The request makes no sense here: unknown node, network fault on `process` (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The Docker daemon answered an operation with an error (exit code 3); the daemon's
    /// error is the source.
    #[error("{what}")]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Which runtime a cluster lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum RuntimeKind {
    Docker,
    Process,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
        }
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// A place to run a cluster's nodes and break them.
#[allow(async_fn_in_trait)]
pub trait Runtime {
    /// `docker` or `process`.
    fn name(&self) -> &'static str;

    /// The Docker runtime behind this one, if it is one: engines whose clusters are
    /// started by their own code (Flink) need the Docker connection.
    fn as_docker(&mut self) -> Option<&mut docker::DockerRuntime> {
        None
    }

    /// Starts every node of `def` (build images first where needed). Returns once every
    /// node has been started; readiness is the caller's business (REST polling).
    async fn up(&mut self, def: &ClusterDef) -> Result<()>;

    /// Base URL of a jobmanager's REST API, e.g. `http://172.18.0.2:8081`.
    async fn rest_url(&self, node: &str) -> Result<String>;

    /// The IP address other nodes (and this host) reach `node` at.
    async fn node_address(&self, node: &str) -> Result<String>;

    /// `host:port` where this host feeds lines to the line server `node`.
    async fn feed_address(&self, node: &str) -> Result<String>;

    /// Sends `signal` to the node's main process.
    async fn kill(&self, node: &str, signal: crate::signal::Signal) -> Result<()>;
    /// SIGTERM, then SIGKILL once `grace` has passed.
    async fn stop(&self, node: &str, grace: Duration) -> Result<()>;
    /// Starts a stopped/killed node again (same name, same addresses).
    async fn start(&self, node: &str) -> Result<()>;
    /// stop (with grace) then start.
    async fn restart(&self, node: &str, grace: Duration) -> Result<()>;
    /// Freezes every process of the node (cgroup freezer / SIGSTOP).
    async fn pause(&self, node: &str) -> Result<()>;
    async fn unpause(&self, node: &str) -> Result<()>;

    /// The nodes and their states.
    async fn nodes(&self) -> Result<Vec<NodeStatus>>;

    /// The host directory `node` mounts as its shared storage (`/data`: checkpoints,
    /// output), for faults that damage files there.
    async fn shared_dir(&self, node: &str) -> Result<PathBuf> {
        Err(RuntimeError::Usage(format!("the {} runtime cannot reach the files of {node}", self.name())))
    }

    /// Every file of a taskmanager's node-local directory (task-local recovery), as
    /// (path relative to it, contents); empty when it has none. Works on a stopped node.
    async fn read_local_files(&self, node: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Err(RuntimeError::Usage(format!("the {} runtime cannot reach the local files of {node}", self.name())))
    }

    /// Overwrites one file of a taskmanager's node-local directory (path relative to it).
    async fn write_local_file(&self, node: &str, path: &str, bytes: &[u8]) -> Result<()> {
        let _ = (path, bytes);
        Err(RuntimeError::Usage(format!("the {} runtime cannot reach the local files of {node}", self.name())))
    }

    /// Removes every node and resource of the cluster (idempotent).
    async fn down(&mut self) -> Result<()>;
}
