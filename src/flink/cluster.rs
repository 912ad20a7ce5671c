//! A standalone Flink cluster in Docker: `jobmanager-1..J` in application mode (the job
//! starts with the cluster) and `taskmanager-1..N`, laid out exactly like a streamd
//! cluster — containers `<cluster>-<node>`, labels `chaos.cluster` / `chaos.role` /
//! `chaos.node` / `chaos.run_dir`, the bridge network `<cluster>-internal` with the node
//! names as aliases, the run directory at `/data` — so [`DockerRuntime`] finds, kills,
//! pauses and removes its nodes like any other and `chaos down` cleans it up.
//!
//! More than one jobmanager means ZooKeeper HA ([`FlinkClusterDef::resolved`]): a
//! `zookeeper-1` node (role `zookeeper`, Flink's bundled server from the same image) is
//! started and serving before the jobmanagers, which then elect a leader through it
//! (see [`super::ha`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListNetworksOptionsBuilder};
use bollard::Docker;
use streamd_contract::api::JobState;

use super::config::{zookeeper_command, FlinkSettings, ZooKeeperHa, CONF_DIR, ZOO_CFG, ZK_DATA_DIR};
use super::rest::{FlinkRest, JobOverview};
use super::{io_err, zk, FlinkError, Result};
use crate::runtime::docker::{labels, spec, DockerRuntime};
use crate::runtime::{Role, Runtime};

/// The first jobmanager's node name (its hostname and network alias); the only one
/// without HA.
pub const JOBMANAGER: &str = "jobmanager-1";
/// The ZooKeeper node's name, with HA.
pub const ZOOKEEPER: &str = "zookeeper-1";
/// How long ZooKeeper may take to serve after its container starts.
pub const ZOOKEEPER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Debug, Clone)]
pub struct FlinkClusterDef {
    /// Cluster id: label `chaos.cluster=<id>`, container name prefix.
    pub id: String,
    /// Host directory mounted at `/data`: input, `flink/conf`, checkpoints, output.
    pub run_dir: PathBuf,
    /// The image from [`super::image::ensure_flink_image`].
    pub image: String,
    /// Number of jobmanagers (`jobmanager-1..N`); more than one means ZooKeeper HA.
    pub jobmanagers: u32,
    /// Number of taskmanagers (`taskmanager-1..N`).
    pub taskmanagers: u32,
    pub settings: FlinkSettings,
}

impl FlinkClusterDef {
    /// The definition as started: at least one jobmanager, and with more than one, HA
    /// settings (ZooKeeper at [`ZOOKEEPER`], this cluster's id) unless given. The one place
    /// that decides whether a cluster has HA.
    pub fn resolved(mut self) -> Result<Self> {
        if self.jobmanagers == 0 {
            return Err(FlinkError::Usage(format!("cluster {}: at least one jobmanager is needed", self.id)));
        }
        if self.jobmanagers > 1 && self.settings.ha.is_none() {
            self.settings.ha = Some(ZooKeeperHa::for_cluster(&self.id, ZOOKEEPER));
        }
        Ok(self)
    }

    /// `jobmanager-1..N`.
    pub fn jobmanager_names(&self) -> Vec<String> {
        (1..=self.jobmanagers).map(jobmanager_name).collect()
    }

    /// Every node, in start order: ZooKeeper (with HA), jobmanagers, taskmanagers.
    pub fn nodes(&self) -> Vec<(String, Role)> {
        let mut nodes = Vec::new();
        if self.settings.ha.is_some() {
            nodes.push((ZOOKEEPER.to_string(), Role::Zookeeper));
        }
        nodes.extend(self.jobmanager_names().into_iter().map(|n| (n, Role::Jobmanager)));
        nodes.extend((1..=self.taskmanagers).map(|i| (taskmanager_name(i), Role::Taskmanager)));
        nodes
    }
}

/// The name of jobmanager `i` (1-based).
pub fn jobmanager_name(i: u32) -> String {
    format!("jobmanager-{i}")
}

/// The name of taskmanager `i` (1-based).
pub fn taskmanager_name(i: u32) -> String {
    format!("taskmanager-{i}")
}

/// A running (or partly running) Flink cluster.
pub struct FlinkCluster {
    def: FlinkClusterDef,
    runtime: DockerRuntime,
}

/// The create request of one node's container.
pub fn container_body(def: &FlinkClusterDef, run_dir: &Path, node: &str, role: Role) -> Result<ContainerCreateBody> {
    let cmd = match role {
        Role::Jobmanager => def.settings.jobmanager_command(node),
        Role::Taskmanager => def.settings.taskmanager_command(node),
        Role::Zookeeper => zookeeper_command(),
        Role::Etcd => return Err(FlinkError::Usage(format!("{node}: a Flink cluster has no etcd node"))),
        Role::Lines => return Err(FlinkError::Usage(format!("{node}: a Flink job here reads no socket"))),
    };
    let network = spec::network_name(&def.id);
    Ok(ContainerCreateBody {
        image: Some(def.image.clone()),
        hostname: Some(node.to_string()),
        cmd: Some(cmd),
        labels: Some(HashMap::from([
            (labels::CLUSTER.to_string(), def.id.clone()),
            (labels::ROLE.to_string(), role.as_str().to_string()),
            (labels::NODE.to_string(), node.to_string()),
            (labels::RUN_DIR.to_string(), run_dir.display().to_string()),
        ])),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{}", run_dir.display(), spec::DATA_DIR)]),
            network_mode: Some(network.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network,
                EndpointSettings { aliases: Some(vec![node.to_string()]), ..Default::default() },
            )])),
        }),
        ..Default::default()
    })
}

impl FlinkCluster {
    /// Writes the configuration into the run directory, creates the network and starts
    /// every node (with HA, ZooKeeper first, serving before the jobmanagers start).
    /// Refuses when resources labelled with this id exist already; removes what it
    /// created when a start fails.
    pub async fn up(docker: Docker, def: FlinkClusterDef) -> Result<FlinkCluster> {
        let def = def.resolved()?;
        let run_dir = std::fs::canonicalize(&def.run_dir).map_err(io_err(&def.run_dir))?;
        if run_dir.to_str().is_none_or(|s| s.contains(':')) {
            return Err(FlinkError::Usage(format!(
                "run directory {} must be valid UTF-8 without ':' to be mounted",
                run_dir.display()
            )));
        }
        let filter = labels::filter_eq(labels::CLUSTER, &def.id);
        let networks = docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filter).build()))
            .await
            .map_err(|e| FlinkError::Usage(format!("listing networks: {e}")))?;
        let runtime = DockerRuntime::with_docker(docker.clone(), Some(def.id.clone()));
        if !networks.is_empty() || !runtime.nodes().await?.is_empty() {
            return Err(FlinkError::Usage(format!("cluster {} already exists", def.id)));
        }
        let conf = run_dir.join(CONF_DIR.trim_start_matches("/data/"));
        std::fs::create_dir_all(&conf).map_err(io_err(&conf))?;
        let conf_file = conf.join("config.yaml");
        std::fs::write(&conf_file, def.settings.config_yaml()).map_err(io_err(&conf_file))?;
        if let Some(ha) = &def.settings.ha {
            let zoo_cfg = run_dir.join(ZOO_CFG.trim_start_matches("/data/"));
            std::fs::write(&zoo_cfg, ha.zoo_cfg()).map_err(io_err(&zoo_cfg))?;
            let data = run_dir.join(ZK_DATA_DIR.trim_start_matches("/data/"));
            std::fs::create_dir_all(&data).map_err(io_err(&data))?;
        }

        let network = spec::network_request(&def.id);
        docker
            .create_network(network)
            .await
            .map_err(|e| FlinkError::Usage(format!("creating network {}: {e}", spec::network_name(&def.id))))?;
        let mut cluster = FlinkCluster { def, runtime };
        for (node, role) in cluster.def.nodes() {
            let started = match start_node(&docker, &cluster.def, &run_dir, &node, role).await {
                Ok(()) if role == Role::Zookeeper => match cluster.zookeeper_address().await {
                    Ok(zk) => zk::wait_zookeeper(&zk, ZOOKEEPER_START_TIMEOUT).await,
                    Err(e) => Err(e),
                },
                other => other,
            };
            if let Err(e) = started {
                if let Err(down) = cluster.runtime.down().await {
                    tracing::warn!("cleaning up after a failed start: {down}");
                }
                return Err(e);
            }
        }
        Ok(cluster)
    }

    /// Starts one more taskmanager, `taskmanager-<i>` (e.g. a spare that joins after the
    /// job has taken the first taskmanagers' slots, so which ones run tasks is known).
    pub async fn add_taskmanager(&self, i: u32) -> Result<()> {
        let run_dir = std::fs::canonicalize(&self.def.run_dir).map_err(io_err(&self.def.run_dir))?;
        start_node(self.runtime.docker(), &self.def, &run_dir, &taskmanager_name(i), Role::Taskmanager).await
    }

    /// The definition it was started from.
    pub fn def(&self) -> &FlinkClusterDef {
        &self.def
    }

    /// The docker runtime bound to this cluster: kill, stop, pause, nodes, down.
    pub fn runtime(&self) -> &DockerRuntime {
        &self.runtime
    }

    /// A REST client of `jobmanager-1` (its address on the bridge network).
    pub async fn rest(&self) -> Result<FlinkRest> {
        self.rest_of(JOBMANAGER).await
    }

    /// A REST client of jobmanager `node`.
    pub async fn rest_of(&self, node: &str) -> Result<FlinkRest> {
        let url = self.runtime.rest_url(node).await?;
        Ok(FlinkRest::new(url)?)
    }

    /// `<ip>:2181` of the ZooKeeper node on the bridge network (reachable from the host,
    /// like the jobmanagers' REST).
    pub async fn zookeeper_address(&self) -> Result<String> {
        let id = self.runtime.container_id(ZOOKEEPER).await?;
        let info = self
            .runtime
            .docker()
            .inspect_container(&id, None)
            .await
            .map_err(|e| FlinkError::Usage(format!("inspecting {ZOOKEEPER}: {e}")))?;
        let network = self.runtime.network_name()?;
        let ip = info
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|mut n| n.remove(&network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| FlinkError::Usage(format!("{ZOOKEEPER} has no address on {network} (not running?)")))?;
        Ok(zk::zk_address(&ip))
    }

    /// The committed output directory on the host.
    pub fn output_dir(&self) -> PathBuf {
        let inside = self.def.settings.output_dir();
        self.def.run_dir.join(inside.trim_start_matches("/data/"))
    }

    /// Removes every container and the network labelled with this cluster's id.
    pub async fn down(&mut self) -> Result<()> {
        Ok(self.runtime.down().await?)
    }
}

async fn start_node(docker: &Docker, def: &FlinkClusterDef, run_dir: &Path, node: &str, role: Role) -> Result<()> {
    let name = spec::container_name(&def.id, node);
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = docker
        .create_container(Some(options), container_body(def, run_dir, node, role)?)
        .await
        .map_err(|e| FlinkError::Usage(format!("creating container {name}: {e}")))?;
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|e| FlinkError::Usage(format!("starting container {name}: {e}")))?;
    Ok(())
}

/// Polls the job until `done(job)` holds, every 100 ms, for at most `timeout`. Returns the
/// job and when the predicate first held. Unreachable REST or no job yet are retried; a
/// terminal state that is not what `done` waits for is an error.
pub async fn wait_job(
    rest: &FlinkRest,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&JobOverview) -> bool,
) -> Result<(JobOverview, Instant)> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < timeout {
        match rest.job().await {
            Ok(Some(job)) => {
                if done(&job) {
                    return Ok((job, Instant::now()));
                }
                if job.streamd_state() == JobState::Failed {
                    return Err(FlinkError::Usage(format!("job {} failed while waiting for {what}", job.head.jid)));
                }
                last = format!("job {:?}, tasks {:?}", job.head.state, job.tasks);
            }
            Ok(None) => last = "no job yet".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(FlinkError::Timeout(format!("{what} within {timeout:?} (last: {last})")))
}
