//! The `docker` runtime, the product: every node is a container of the streamd image on a
//! per-cluster bridge network, and faults go through the Docker Engine API (bollard).
//!
//! - [`labels`]: the `chaos.*` labels, the only way `chaos` recognises its resources.
//! - [`spec`]: what a node's container looks like (command line, mounts, limits).
//! - `inventory`: finding ([`discover`]) and removing ([`down_all`]) resources by label.
//! - `errors`: bollard errors phrased for the user.
//!
//! Every operation on a node goes through the container id found by listing containers
//! labelled with this cluster's id, so `chaos` never touches a container it did not
//! label. Separate `chaos` invocations find a live cluster with [`discover`].

pub(crate) mod errors;
pub mod etcd;
mod inventory;
pub mod labels;
pub mod spec;

pub use inventory::{discover, down_all, remove_container, ClusterInfo, DownSummary};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;

use inventory::{list_containers, list_networks, node_status, remove_labelled, role_of_name, sort_nodes};

use super::{ClusterDef, NodeDef, NodeState, NodeStatus, Result, Role, Runtime, RuntimeError};

/// How long to wait for the daemon's first answer before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack added to a stop's grace for the HTTP request that waits through it.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// Connects to the local Docker daemon and negotiates the API version (the daemons we
/// meet speak 1.41, older than bollard's default).
pub async fn connect_docker() -> Result<Docker> {
    negotiate(Docker::connect_with_local_defaults().map_err(errors::unreachable)?).await
}

/// The first request: bollard connects lazily, so this is where a missing daemon shows.
async fn negotiate(docker: Docker) -> Result<Docker> {
    match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(errors::unreachable(e)),
        Err(_) => Err(errors::unreachable(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A cluster's nodes as containers. Bound to one cluster id (from [`DockerRuntime::connect`]
/// or from the [`ClusterDef`] given to `up`).
pub struct DockerRuntime {
    docker: Docker,
    cluster: Option<String>,
    /// The image to run; built from the workspace on `up` when absent.
    image: Option<String>,
    /// Node name -> container id, for containers listed under this cluster's label.
    containers: Mutex<HashMap<String, String>>,
}

impl DockerRuntime {
    /// Connects to the daemon. With `Some(id)`, binds to that cluster (live or about to be
    /// started). With `None`, binds to the one live cluster if there is exactly one, stays
    /// unbound when there is none (for `up`), and refuses to guess among several.
    pub async fn connect(cluster_id: Option<&str>) -> Result<Self> {
        let docker = connect_docker().await?;
        let cluster = match cluster_id {
            Some(id) => Some(id.to_string()),
            None => {
                let live = discover(&docker).await?;
                match live.as_slice() {
                    [] => None,
                    [one] => Some(one.id.clone()),
                    several => {
                        let ids: Vec<&str> = several.iter().map(|c| c.id.as_str()).collect();
                        return Err(RuntimeError::Usage(format!(
                            "several chaos clusters are live ({}): name the one to use",
                            ids.join(", ")
                        )));
                    }
                }
            }
        };
        Ok(Self::with_docker(docker, cluster))
    }

    /// A runtime over an existing connection.
    pub fn with_docker(docker: Docker, cluster_id: Option<String>) -> Self {
        DockerRuntime {
            docker,
            cluster: cluster_id,
            image: None,
            containers: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `image` instead of building the streamd image from the workspace on `up`.
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// The Docker connection (for sidecars and helper images).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The daemon's inspection of a node's container.
    async fn inspect_node(&self, node: &str) -> Result<bollard::models::ContainerInspectResponse> {
        let id = self.container_id(node).await?;
        self.docker.inspect_container(&id, None).await.map_err(|e| errors::map(&format!("inspecting {node}"), e))
    }

    /// A node's IP on the cluster's network, from its inspection.
    fn ip_in(&self, node: &str, info: bollard::models::ContainerInspectResponse) -> Result<String> {
        let network = self.network_name()?;
        info.network_settings
            .and_then(|s| s.networks)
            .and_then(|mut n| n.remove(&network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| RuntimeError::Other(format!("{node} has no address on {network}: is it running?")))
    }

    /// Binds this runtime to cluster `id` (started by someone else, e.g. a Flink cluster):
    /// every later operation finds that cluster's nodes by label.
    pub fn bind(&mut self, id: &str) {
        self.cluster = Some(id.to_string());
        self.forget_all();
    }

    /// The cluster this runtime is bound to, if any.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// The cluster's bridge network, `<cluster>-internal`.
    pub fn network_name(&self) -> Result<String> {
        Ok(spec::network_name(self.bound()?))
    }

    fn bound(&self) -> Result<&str> {
        self.cluster.as_deref().ok_or_else(|| {
            RuntimeError::Usage("no live chaos cluster: start one with `chaos up`".into())
        })
    }

    /// The id of `node`'s container, which is guaranteed to carry this cluster's label.
    pub async fn container_id(&self, node: &str) -> Result<String> {
        if let Some(id) = self.cached(node) {
            return Ok(id);
        }
        let cluster = self.bound()?;
        let mut filter = labels::filter_eq(labels::CLUSTER, cluster);
        filter
            .entry("label".to_string())
            .or_default()
            .push(format!("{}={node}", labels::NODE));
        let found = list_containers(&self.docker, filter).await?;
        match found.iter().find_map(|c| c.id.clone()) {
            Some(id) => {
                self.remember(node, &id);
                Ok(id)
            }
            None => {
                let known =
                    list_containers(&self.docker, labels::filter_eq(labels::CLUSTER, cluster))
                        .await?
                        .iter()
                        .filter_map(node_status)
                        .map(|s| s.name)
                        .collect::<Vec<_>>();
                Err(RuntimeError::Usage(format!(
                    "cluster {cluster} has no node `{node}` (nodes: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )))
            }
        }
    }

    fn cached(&self, node: &str) -> Option<String> {
        self.containers.lock().ok()?.get(node).cloned()
    }

    fn remember(&self, node: &str, id: &str) {
        if let Ok(mut map) = self.containers.lock() {
            map.insert(node.to_string(), id.to_string());
        }
    }

    fn forget_all(&self) {
        if let Ok(mut map) = self.containers.lock() {
            map.clear();
        }
    }

    /// Runs a container operation on `node`; a 404 means the container vanished behind our
    /// back, so the cached id is dropped and the user told.
    async fn on_node<F, Fut>(&self, node: &str, what: &str, op: F) -> Result<()>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), bollard::errors::Error>>,
    {
        let id = self.container_id(node).await?;
        match op(id).await {
            Ok(()) => Ok(()),
            Err(e) if errors::is_not_found(&e) => {
                self.forget_all();
                Err(RuntimeError::Usage(format!(
                    "{what} {node}: its container is gone"
                )))
            }
            Err(e) => Err(errors::map(&format!("{what} {node}"), e)),
        }
    }

    /// The image for `up`: the configured one, or the streamd image built from the
    /// workspace (cargo, then an offline image build when the binary changed).
    async fn image(&self) -> Result<String> {
        if let Some(image) = &self.image {
            return Ok(image.clone());
        }
        let binary = tokio::task::spawn_blocking(crate::images::build_streamd_binary)
            .await
            .map_err(|e| RuntimeError::Other(format!("building streamd: {e}")))??;
        crate::images::ensure_streamd_image(&self.docker, &binary).await
    }

    /// Checks everything `up` can check before creating anything.
    async fn preflight(&self, def: &ClusterDef) -> Result<PathBuf> {
        if let Some(bound) = &self.cluster {
            if bound != &def.id {
                return Err(RuntimeError::Usage(format!(
                    "this runtime manages cluster {bound}, not {}",
                    def.id
                )));
            }
        }
        if def.nodes.is_empty() {
            return Err(RuntimeError::Usage(format!(
                "cluster {} has no nodes",
                def.id
            )));
        }
        let jobmanager = spec::first_jobmanager(def)?;
        let mut seen = HashSet::new();
        for node in &def.nodes {
            if !seen.insert(node.name.as_str()) {
                return Err(RuntimeError::Usage(format!(
                    "node {} is defined twice",
                    node.name
                )));
            }
            spec::node_command(node, jobmanager)?;
            spec::limits(&node.name, &node.resources)?;
        }
        let run_dir = std::fs::canonicalize(&def.run_dir).map_err(|e| {
            RuntimeError::Usage(format!("run directory {}: {e}", def.run_dir.display()))
        })?;
        // The bind-mount syntax `src:dst` cannot carry a ':' in the source.
        if run_dir.to_str().is_none_or(|s| s.contains(':')) {
            return Err(RuntimeError::Usage(format!(
                "run directory {} must be valid UTF-8 without ':' to be mounted",
                run_dir.display()
            )));
        }
        let filter = labels::filter_eq(labels::CLUSTER, &def.id);
        let leftovers = list_containers(&self.docker, filter.clone()).await?;
        let networks = list_networks(&self.docker, &filter).await?;
        if !leftovers.is_empty() || !networks.is_empty() {
            return Err(RuntimeError::Usage(format!(
                "cluster {} already exists ({} containers, {} networks): remove it with \
                 `chaos down` first",
                def.id,
                leftovers.len(),
                networks.len()
            )));
        }
        Ok(run_dir)
    }

    /// Creates and starts one node's container; returns its id.
    async fn start_node(
        &self,
        def: &ClusterDef,
        node: &NodeDef,
        image: &str,
        run_dir: &Path,
        jobmanager: &str,
    ) -> Result<String> {
        let mut body = spec::container_body(def, node, image, run_dir, jobmanager)?;
        // Disk faults: /data is the node's passthrough view of the run directory. The job's
        // input is the source system's data, not the node's storage: a taskmanager reads it
        // from the run directory itself (read-only), beside the view.
        if let (Some(view), Some(hc)) = (crate::diskfault::mount::view_if_mounted(run_dir, &node.name), body.host_config.as_mut()) {
            let mut binds = vec![format!("{}:{}", view.display(), spec::DATA_DIR)];
            if node.role == Role::Taskmanager {
                binds.push(format!("{}:{}/input:ro", run_dir.join("input").display(), spec::INPUT_ROOT));
                body.cmd.get_or_insert_with(Vec::new).extend(["--input-root".to_string(), spec::INPUT_ROOT.to_string()]);
            }
            hc.binds = Some(binds);
        }
        let name = spec::container_name(&def.id, &node.name);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| errors::map(&format!("creating container {name}"), e))?;
        self.remember(&node.name, &created.id);
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| errors::map(&format!("starting container {name}"), e))?;
        Ok(created.id)
    }
}

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn as_docker(&mut self) -> Option<&mut DockerRuntime> {
        Some(self)
    }

    async fn up(&mut self, def: &ClusterDef) -> Result<()> {
        let run_dir = self.preflight(def).await?;
        let jobmanager = spec::first_jobmanager(def)?;
        let image = self.image().await?;
        // HA: the etcd node runs its own image (built offline around the host's etcd).
        let etcd_image = match def.nodes.iter().any(|n| n.role == Role::Etcd) {
            true => Some(etcd::ensure_etcd_image(&self.docker).await?),
            false => None,
        };
        self.cluster = Some(def.id.clone());
        self.forget_all();

        let network = spec::network_request(&def.id);
        self.docker
            .create_network(network)
            .await
            .map_err(|e| errors::map(&format!("creating network {}-internal", def.id), e))?;

        let starts = def
            .nodes
            .iter()
            .map(|node| {
                let image = match (node.role, &etcd_image) {
                    (Role::Etcd, Some(etcd)) => etcd,
                    _ => &image,
                };
                self.start_node(def, node, image, &run_dir, jobmanager)
            });
        let failures: Vec<RuntimeError> = join_all(starts)
            .await
            .into_iter()
            .filter_map(|r| r.err())
            .collect();
        if let Some(first) = failures.into_iter().next() {
            // Leave nothing half-started behind; the first error is the one to report.
            if let Err(e) = self.down().await {
                tracing::warn!("cleaning up after a failed start: {e}");
            }
            return Err(first);
        }
        Ok(())
    }

    async fn rest_url(&self, node: &str) -> Result<String> {
        let info = self.inspect_node(node).await?;
        let role = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(labels::ROLE));
        if role.map(String::as_str) != Some(Role::Jobmanager.as_str()) {
            return Err(RuntimeError::Usage(format!(
                "{node} is not a jobmanager: it has no REST API"
            )));
        }
        Ok(format!("http://{}:{}", self.ip_in(node, info)?, spec::REST_PORT))
    }

    async fn node_address(&self, node: &str) -> Result<String> {
        let info = self.inspect_node(node).await?;
        self.ip_in(node, info)
    }

    async fn feed_address(&self, node: &str) -> Result<String> {
        // On Linux the host reaches container addresses on the bridge network directly.
        Ok(format!("{}:{}", self.node_address(node).await?, streamd_contract::lines::FEED_PORT))
    }

    async fn kill(&self, node: &str, signal: crate::signal::Signal) -> Result<()> {
        let options = KillContainerOptionsBuilder::default()
            .signal(&signal.name())
            .build();
        self.on_node(node, "kill", |id| async move {
            self.docker.kill_container(&id, Some(options)).await
        })
        .await
    }

    async fn stop(&self, node: &str, grace: Duration) -> Result<()> {
        // Docker counts the grace in whole seconds: round up, never kill earlier than asked.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let t = i32::try_from(secs).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(t).build();
        // The request lasts as long as the grace: give the client more than that.
        let docker = self.docker.clone().with_timeout(grace + STOP_SLACK);
        self.on_node(node, "stop", |id| async move {
            match docker.stop_container(&id, Some(options)).await {
                Err(e) if errors::is_not_modified(&e) => Ok(()), // already stopped
                other => other,
            }
        })
        .await
    }

    async fn start(&self, node: &str) -> Result<()> {
        self.on_node(node, "start", |id| async move {
            match self.docker.start_container(&id, None).await {
                Err(e) if errors::is_not_modified(&e) => Ok(()), // already running
                other => other,
            }
        })
        .await
    }

    async fn restart(&self, node: &str, grace: Duration) -> Result<()> {
        // Two calls rather than Docker's restart, so each step's timing is observable.
        self.stop(node, grace).await?;
        self.start(node).await
    }

    async fn pause(&self, node: &str) -> Result<()> {
        // runc's cgroup-v1 freezer can fail to reach FROZEN while the node's many threads
        // are busy (the daemon answers 500, "failed to freeze"; seen with JVMs on a loaded
        // host). runc thaws the cgroup again when it gives up, so a retry is safe.
        let mut tries = 0;
        loop {
            tries += 1;
            let res = self.on_node(node, "pause", |id| async move { self.docker.pause_container(&id).await }).await;
            match res {
                Err(RuntimeError::Docker { source, what }) if errors::status(&source) == Some(500) && tries < 4 => {
                    tracing::warn!("{what}; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    async fn unpause(&self, node: &str) -> Result<()> {
        self.on_node(node, "unpause", |id| async move {
            self.docker.unpause_container(&id).await
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let cluster = self.bound()?;
        let containers =
            list_containers(&self.docker, labels::filter_eq(labels::CLUSTER, cluster)).await?;
        let mut nodes: Vec<NodeStatus> = containers.iter().filter_map(node_status).collect();
        // Nodes this runtime started or touched whose container has disappeared.
        let known: Vec<String> = self
            .containers
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for name in known {
            if !nodes.iter().any(|n| n.name == name) {
                if let Some(role) = role_of_name(&name) {
                    nodes.push(NodeStatus {
                        name,
                        role,
                        state: NodeState::Missing,
                    });
                }
            }
        }
        sort_nodes(&mut nodes);
        Ok(nodes)
    }

    async fn shared_dir(&self, node: &str) -> Result<PathBuf> {
        let info = self.inspect_node(node).await?;
        info.config
            .and_then(|c| c.labels)
            .and_then(|mut l| l.remove(labels::RUN_DIR))
            .map(PathBuf::from)
            .ok_or_else(|| RuntimeError::Other(format!("{node} has no {} label", labels::RUN_DIR)))
    }

    async fn read_local_files(&self, node: &str) -> Result<Vec<(String, Vec<u8>)>> {
        use futures_util::TryStreamExt;
        let id = self.container_id(node).await?;
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default().path(spec::LOCAL_DIR).build();
        let tar: Vec<u8> = match self
            .docker
            .download_from_container(&id, Some(options))
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await
        {
            Ok(t) => t,
            // No local directory yet: the node never kept a local copy.
            Err(e) if errors::is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(errors::map(&format!("reading {}:{}", node, spec::LOCAL_DIR), e)),
        };
        let prefix = format!("{}/", spec::LOCAL_DIR.trim_start_matches('/'));
        let mut files = Vec::new();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries = archive.entries().map_err(|e| RuntimeError::Other(format!("the archive of {node}:{}: {e}", spec::LOCAL_DIR)))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| RuntimeError::Other(format!("the archive of {node}: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(|e| RuntimeError::Other(e.to_string()))?.to_string_lossy().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| RuntimeError::Other(e.to_string()))?;
            files.push((path.strip_prefix(&prefix).unwrap_or(&path).to_string(), bytes));
        }
        Ok(files)
    }

    async fn write_local_file(&self, node: &str, path: &str, bytes: &[u8]) -> Result<()> {
        let id = self.container_id(node).await?;
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(streamd_contract::api::now_ms() / 1000);
        builder
            .append_data(&mut header, path, bytes)
            .and_then(|_| builder.into_inner())
            .map_err(|e| RuntimeError::Other(format!("packing {path}: {e}")))
            .map(|tar| (id, tar))
            .map(|(id, tar)| (id, bollard::body_full(tar.into())))
            .map(|(id, body)| async move {
                let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default().path(spec::LOCAL_DIR).build();
                self.docker
                    .upload_to_container(&id, Some(options), body)
                    .await
                    .map_err(|e| errors::map(&format!("writing {node}:{}/{path}", spec::LOCAL_DIR), e))
            })?
            .await
    }

    async fn down(&mut self) -> Result<()> {
        let Some(cluster) = self.cluster.clone() else {
            return Ok(());
        };
        self.forget_all();
        remove_labelled(&self.docker, labels::filter_eq(labels::CLUSTER, &cluster)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_daemon_is_an_infrastructure_error_saying_how_to_start_one() {
        // A path that exists (bollard checks that eagerly) but where no daemon listens.
        let not_a_socket = tempfile::NamedTempFile::new().unwrap();
        let addr = format!("unix://{}", not_a_socket.path().display());
        let docker = Docker::connect_with_unix(&addr, 5, bollard::API_DEFAULT_VERSION).unwrap();
        let err = match negotiate(docker).await {
            Err(e) => e,
            Ok(_) => panic!("a missing socket must not connect"),
        };
        let msg = err.to_string();
        assert!(matches!(err, RuntimeError::Infrastructure(_)), "{err:?}");
        assert!(
            msg.starts_with("cannot reach the Docker daemon at unix://"),
            "{msg}"
        );
        assert!(
            msg.contains("systemctl start docker") && msg.contains("--runtime process"),
            "{msg}"
        );
    }
}
