//! A standalone Flink cluster in Docker: `jobmanager-1` in application mode (the job starts
//! with the cluster) and `taskmanager-1..N`, laid out exactly like a streamd cluster —
//! containers `<cluster>-<node>`, labels `chaos.cluster` / `chaos.role` / `chaos.node` /
//! `chaos.run_dir`, the bridge network `<cluster>-internal` with the node names as aliases,
//! the run directory at `/data` — so [`DockerRuntime`] finds, kills, pauses and removes its
//! nodes like any other and `chaos down` cleans it up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListNetworksOptionsBuilder};
use bollard::Docker;
use streamd_contract::api::JobState;

use super::config::{FlinkSettings, CONF_DIR};
use super::rest::{FlinkRest, JobOverview};
use super::{io_err, FlinkError, Result};
use crate::runtime::docker::{labels, spec, DockerRuntime};
use crate::runtime::{Role, Runtime};

/// The jobmanager's node name (its hostname and network alias).
pub const JOBMANAGER: &str = "jobmanager-1";

/// What to start.
#[derive(Debug, Clone)]
pub struct FlinkClusterDef {
    /// Cluster id: label `chaos.cluster=<id>`, container name prefix.
    pub id: String,
    /// Host directory mounted at `/data`: input, `flink/conf`, checkpoints, output.
    pub run_dir: PathBuf,
    /// The image from [`super::image::ensure_flink_image`].
    pub image: String,
    /// Number of taskmanagers (`taskmanager-1..N`).
    pub taskmanagers: u32,
    pub settings: FlinkSettings,
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
pub fn container_body(def: &FlinkClusterDef, run_dir: &Path, node: &str, role: Role) -> ContainerCreateBody {
    let cmd = match role {
        Role::Jobmanager => def.settings.jobmanager_command(),
        _ => def.settings.taskmanager_command(node),
    };
    let network = spec::network_name(&def.id);
    ContainerCreateBody {
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
    }
}

impl FlinkCluster {
    /// Writes the configuration into the run directory, creates the network and starts
    /// every node. Refuses when resources labelled with this id exist already; removes
    /// what it created when a start fails.
    pub async fn up(docker: Docker, def: FlinkClusterDef) -> Result<FlinkCluster> {
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
        let mut runtime = DockerRuntime::with_docker(docker.clone(), Some(def.id.clone()));
        if !networks.is_empty() || !runtime.nodes().await?.is_empty() {
            return Err(FlinkError::Usage(format!("cluster {} already exists", def.id)));
        }
        let conf = run_dir.join(CONF_DIR.trim_start_matches("/data/"));
        std::fs::create_dir_all(&conf).map_err(io_err(&conf))?;
        let conf_file = conf.join("config.yaml");
        std::fs::write(&conf_file, def.settings.config_yaml()).map_err(io_err(&conf_file))?;

        let network = NetworkCreateRequest {
            name: spec::network_name(&def.id),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([
                (labels::CLUSTER.to_string(), def.id.clone()),
                (labels::ROLE.to_string(), labels::ROLE_NETWORK.to_string()),
            ])),
            ..Default::default()
        };
        docker
            .create_network(network)
            .await
            .map_err(|e| FlinkError::Usage(format!("creating network {}: {e}", spec::network_name(&def.id))))?;
        let mut nodes = vec![(JOBMANAGER.to_string(), Role::Jobmanager)];
        nodes.extend((1..=def.taskmanagers).map(|i| (taskmanager_name(i), Role::Taskmanager)));
        for (node, role) in &nodes {
            if let Err(e) = start_node(&docker, &def, &run_dir, node, *role).await {
                if let Err(down) = runtime.down().await {
                    tracing::warn!("cleaning up after a failed start: {down}");
                }
                return Err(e);
            }
        }
        Ok(FlinkCluster { def, runtime })
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

    /// A REST client of the jobmanager (its address on the bridge network).
    pub async fn rest(&self) -> Result<FlinkRest> {
        let url = self.runtime.rest_url(JOBMANAGER).await?;
        Ok(FlinkRest::new(url)?)
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
        .create_container(Some(options), container_body(def, run_dir, node, role))
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
                    return Err(FlinkError::Usage(format!("job {} failed while waiting for {what}", job.jid)));
                }
                last = format!("job {:?}, tasks {:?}", job.state, job.tasks);
            }
            Ok(None) => last = "no job yet".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(FlinkError::Timeout(format!("{what} within {timeout:?} (last: {last})")))
}
