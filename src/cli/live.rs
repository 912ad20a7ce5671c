//! The live cluster an interactive command acts on, and the names of its nodes.
//!
//! `chaos up` records its cluster in `target/chaos/current`; with no record, a Docker
//! cluster is found by its `chaos.cluster` label (exactly one must be live). The runtime
//! trait is not object-safe (async methods), so [`Live`] is an enum over the two runtimes.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::StreamdClient;
use crate::current::CurrentCluster;
use crate::executor::{ChaosError, RuntimeKind};
use crate::runtime::docker::{self, DockerRuntime};
use crate::runtime::process::ProcessRuntime;
use crate::runtime::{self, ClusterDef, NodeState, NodeStatus, Role, Runtime};

/// A live cluster: where it runs and where its files are.
#[derive(Debug, Clone)]
pub(super) struct LiveCluster {
    pub id: String,
    pub kind: RuntimeKind,
    pub run_dir: PathBuf,
}

/// What to tell a user who has no cluster up.
fn no_live_cluster(docker_note: &str) -> ChaosError {
    ChaosError::Usage(format!(
        "no live cluster: start one with `chaos up` (no {} and {docker_note})",
        CurrentCluster::path().display()
    ))
}

impl LiveCluster {
    /// The current cluster: `target/chaos/current`, else the one Docker cluster carrying
    /// chaos labels.
    pub async fn find() -> Result<LiveCluster, ChaosError> {
        if let Some(cur) = CurrentCluster::load().map_err(|e| ChaosError::Other(e.to_string()))? {
            return Ok(LiveCluster { id: cur.cluster_id, kind: cur.runtime, run_dir: cur.run_dir });
        }
        let docker = match docker::connect_docker().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("no Docker to discover clusters on: {e}");
                return Err(no_live_cluster("no Docker daemon to look for labelled containers"));
            }
        };
        let live = docker::discover(&docker).await?;
        match live.as_slice() {
            [] => Err(no_live_cluster("no containers labelled chaos.cluster")),
            [one] => Ok(LiveCluster { id: one.id.clone(), kind: RuntimeKind::Docker, run_dir: one.run_dir.clone() }),
            several => {
                let ids: Vec<&str> = several.iter().map(|c| c.id.as_str()).collect();
                Err(ChaosError::Usage(format!(
                    "several chaos clusters are live ({}) and none is recorded in {}: `chaos down` removes them all",
                    ids.join(", "),
                    CurrentCluster::path().display()
                )))
            }
        }
    }

    /// Connects the cluster's runtime.
    pub async fn connect(&self) -> Result<Live, ChaosError> {
        Ok(match self.kind {
            RuntimeKind::Process => Live::Process(ProcessRuntime::attach(&self.run_dir)?),
            RuntimeKind::Docker => Live::Docker(DockerRuntime::connect(Some(&self.id)).await?),
        })
    }

    pub fn runtime_name(&self) -> &'static str {
        match self.kind {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
        }
    }
}

/// Either runtime, behind the one trait.
pub(super) enum Live {
    Process(ProcessRuntime),
    Docker(DockerRuntime),
}

macro_rules! on_runtime {
    ($live:expr, $rt:ident => $body:expr) => {
        match $live {
            Live::Process($rt) => $body,
            Live::Docker($rt) => $body,
        }
    };
}

impl Runtime for Live {
    fn name(&self) -> &'static str {
        on_runtime!(self, rt => rt.name())
    }
    async fn up(&mut self, def: &ClusterDef) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.up(def).await)
    }
    async fn rest_url(&self, node: &str) -> runtime::Result<String> {
        on_runtime!(self, rt => rt.rest_url(node).await)
    }
    async fn kill(&self, node: &str, signal: &str) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.kill(node, signal).await)
    }
    async fn stop(&self, node: &str, grace: Duration) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.stop(node, grace).await)
    }
    async fn start(&self, node: &str) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.start(node).await)
    }
    async fn restart(&self, node: &str, grace: Duration) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.restart(node, grace).await)
    }
    async fn pause(&self, node: &str) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.pause(node).await)
    }
    async fn unpause(&self, node: &str) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.unpause(node).await)
    }
    async fn nodes(&self) -> runtime::Result<Vec<NodeStatus>> {
        on_runtime!(self, rt => rt.nodes().await)
    }
    async fn down(&mut self) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.down().await)
    }
}

/// The canonical name for an alias: `tm2` -> `taskmanager-2`, `jm1` -> `jobmanager-1`,
/// `etcd1` -> `etcd-1`, `taskmanager2` -> `taskmanager-2`. Other names come back as
/// they are (`leader` is resolved against the live cluster, not here).
pub fn canonical_node_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    for (prefixes, role) in [
        (&["taskmanager-", "taskmanager", "tm-", "tm"][..], "taskmanager"),
        (&["jobmanager-", "jobmanager", "jm-", "jm"][..], "jobmanager"),
        (&["etcd-", "etcd"][..], "etcd"),
    ] {
        for p in prefixes {
            if let Some(n) = lower.strip_prefix(p) {
                if n.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(i) = n.parse::<u32>() {
                        return format!("{role}-{i}");
                    }
                }
            }
        }
    }
    name.trim().to_string()
}

/// Resolves a NODE argument against the live cluster: aliases, `leader`, and a clear
/// error naming the cluster's nodes when there is no such node.
pub(super) async fn resolve_node(cluster: &LiveCluster, rt: &Live, name: &str) -> Result<String, ChaosError> {
    let nodes = rt.nodes().await?;
    if name.trim().eq_ignore_ascii_case("leader") {
        return leader(rt, &nodes).await;
    }
    let canon = canonical_node_name(name);
    if nodes.iter().any(|n| n.name == canon) {
        return Ok(canon);
    }
    let shown = if canon == name { format!("`{name}`") } else { format!("`{name}` ({canon})") };
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    Err(ChaosError::Usage(format!(
        "no node {shown} in cluster {} ({}); its nodes: {}",
        cluster.id,
        cluster.runtime_name(),
        if names.is_empty() {
            "none (the cluster is gone: `chaos down` clears its record)".to_string()
        } else {
            names.join(", ")
        }
    )))
}

/// The jobmanager whose `/overview` says `leader: true`.
pub(super) async fn leader(rt: &Live, nodes: &[NodeStatus]) -> Result<String, ChaosError> {
    let mut why = Vec::new();
    for n in nodes.iter().filter(|n| n.role == Role::Jobmanager) {
        if n.state != NodeState::Running {
            why.push(format!("{} is {:?}", n.name, n.state).to_lowercase());
            continue;
        }
        let url = rt.rest_url(&n.name).await?;
        let client = StreamdClient::new(url).map_err(|e| ChaosError::Other(e.to_string()))?;
        match client.overview().await {
            Ok(o) if o.leader => return Ok(n.name.clone()),
            Ok(_) => why.push(format!("{} is a standby", n.name)),
            Err(e) => why.push(format!("{}: {e}", n.name)),
        }
    }
    Err(ChaosError::Other(format!(
        "no jobmanager says it leads{}",
        if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
    )))
}

#[cfg(test)]
mod tests {
    use super::canonical_node_name as c;

    #[test]
    fn aliases_become_canonical_names() {
        assert_eq!(c("tm2"), "taskmanager-2");
        assert_eq!(c("TM12"), "taskmanager-12");
        assert_eq!(c("jm1"), "jobmanager-1");
        assert_eq!(c("taskmanager-3"), "taskmanager-3");
        assert_eq!(c("taskmanager3"), "taskmanager-3");
        assert_eq!(c("etcd1"), "etcd-1");
        assert_eq!(c("tm02"), "taskmanager-2");
        assert_eq!(c("tm"), "tm");
        assert_eq!(c("tmx"), "tmx");
        assert_eq!(c("leader"), "leader");
    }
}
