//! Docker plumbing of network faults: finding a target container, starting sidecars in its
//! network namespace, running commands in them (`docker exec`), removing them.
//!
//! Everything created here is labelled `chaos.cluster`, `chaos.role=sidecar` and
//! `chaos.node`, so `chaos down` removes it like the rest of the cluster.

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::NetfaultError;
use crate::runtime::docker::errors::is_not_found;

use crate::runtime::docker::labels::{
    CLUSTER as LABEL_CLUSTER, NODE as LABEL_NODE, ROLE as LABEL_ROLE, ROLE_SIDECAR,
};

/// Label: the fault a sidecar belongs to (`netem-taskmanager-1-3f2a`, `measure`, `probe`).
pub const LABEL_FAULT: &str = "chaos.fault";

/// How long one command in a sidecar may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster node's container as network faults need it.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: String,
    pub container_id: String,
    pub container_name: String,
    /// `State.StartedAt`: changes when the container restarts.
    pub started_at: String,
    /// Running (paused counts: its namespace is there).
    pub running: bool,
    /// IPv4 address on the cluster network.
    pub ip: Option<String>,
}

pub(crate) fn docker_err(what: &str) -> impl FnOnce(bollard::errors::Error) -> NetfaultError + '_ {
    move |e| NetfaultError::Docker(format!("{what}: {e}"))
}

/// Inspects container `name_or_id`; `None` when it does not exist.
pub async fn inspect(
    docker: &Docker,
    name_or_id: &str,
    node: &str,
    network: &str,
) -> Result<Option<Target>, NetfaultError> {
    let c = match docker.inspect_container(name_or_id, None).await {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => {
            return Err(NetfaultError::Docker(format!(
                "inspecting container {name_or_id}: {e}"
            )))
        }
    };
    let state = c.state.unwrap_or_default();
    let ip = c
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .filter(|ip| !ip.is_empty());
    Ok(Some(Target {
        node: node.to_string(),
        container_id: c.id.unwrap_or_else(|| name_or_id.to_string()),
        container_name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        started_at: state.started_at.unwrap_or_default(),
        running: state.running.unwrap_or(false),
        ip,
    }))
}

/// Finds the running container of `node` in `cluster` (named `<cluster>-<node>`) and checks
/// that it carries the cluster's label: `chaos` never touches a container it did not create.
pub async fn resolve(
    docker: &Docker,
    cluster: &str,
    node: &str,
    network: &str,
) -> Result<Target, NetfaultError> {
    let name = format!("{cluster}-{node}");
    let labels = match docker.inspect_container(&name, None).await {
        Ok(c) => c.config.and_then(|c| c.labels).unwrap_or_default(),
        Err(e) if is_not_found(&e) => {
            return Err(NetfaultError::Usage(format!(
                "no container {name} for node {node} in cluster {cluster}"
            )))
        }
        Err(e) => {
            return Err(NetfaultError::Docker(format!(
                "inspecting container {name}: {e}"
            )))
        }
    };
    if labels.get(LABEL_CLUSTER).map(String::as_str) != Some(cluster) {
        return Err(NetfaultError::Usage(format!(
            "container {name} is not labelled {LABEL_CLUSTER}={cluster}: refusing to touch it"
        )));
    }
    let target = inspect(docker, &name, node, network)
        .await?
        .ok_or_else(|| NetfaultError::Usage(format!("container {name} disappeared")))?;
    if !target.running {
        return Err(NetfaultError::Usage(format!(
            "node {node} is not running: its network cannot be changed"
        )));
    }
    if target.ip.is_none() {
        return Err(NetfaultError::Usage(format!(
            "container {name} has no address on network {network}"
        )));
    }
    Ok(target)
}

/// What a new sidecar is.
pub struct SidecarSpec<'a> {
    pub image: &'a str,
    pub cluster: &'a str,
    pub node: &'a str,
    pub fault: &'a str,
    /// `container:<id>` to share a target's namespace, `none`, or a network name.
    pub network_mode: String,
    /// Arguments to `chaos-netd` (the image's entrypoint).
    pub cmd: Vec<String>,
}

/// Creates and starts a sidecar; returns its id.
pub async fn start(docker: &Docker, spec: SidecarSpec<'_>) -> Result<String, NetfaultError> {
    let labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), spec.cluster.to_string()),
        (LABEL_ROLE.to_string(), ROLE_SIDECAR.to_string()),
        (LABEL_NODE.to_string(), spec.node.to_string()),
        (LABEL_FAULT.to_string(), spec.fault.to_string()),
    ]);
    let name = format!(
        "{}-netfault-{}-{:06x}",
        spec.cluster,
        spec.node,
        rand::random::<u32>() & 0xff_ffff
    );
    let body = ContainerCreateBody {
        image: Some(spec.image.to_string()),
        cmd: Some(spec.cmd),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network_mode),
            // NET_ADMIN: iptables, tc, the NFQUEUE and SO_MARK; NET_RAW: the duplicates' raw socket.
            cap_add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| {
            NetfaultError::Docker(format!(
                "creating sidecar {name} (image {}): {e}",
                spec.image
            ))
        })?;
    if let Err(e) = docker.start_container(&created.id, None).await {
        let _ = remove(docker, &created.id).await;
        return Err(NetfaultError::Docker(format!(
            "starting sidecar {name}: {e}"
        )));
    }
    Ok(created.id)
}

/// Stops (SIGTERM, so a delayer lets its held packets go) and removes a sidecar. A sidecar
/// that is already gone counts as removed.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), NetfaultError> {
    let stop = StopContainerOptionsBuilder::default().t(3).build();
    match docker.stop_container(id, Some(stop)).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        // Already stopped (304) or any other trouble: the forced removal below settles it.
        Err(_) => {}
    }
    crate::runtime::docker::remove_container(docker, id)
        .await
        .map_err(|e| NetfaultError::Docker(format!("removing sidecar {id}: {e}")))
}

/// Whether container `id` is running.
pub async fn is_running(docker: &Docker, id: &str) -> Result<bool, NetfaultError> {
    match docker.inspect_container(id, None).await {
        Ok(c) => Ok(c.state.and_then(|s| s.running).unwrap_or(false)),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(NetfaultError::Docker(format!(
            "inspecting sidecar {id}: {e}"
        ))),
    }
}

/// The sidecars of `cluster` (any state).
pub async fn list(docker: &Docker, cluster: &str) -> Result<Vec<String>, NetfaultError> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_CLUSTER}={cluster}"),
            format!("{LABEL_ROLE}={ROLE_SIDECAR}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(docker_err("listing sidecars"))?;
    Ok(found.into_iter().filter_map(|c| c.id).collect())
}

/// The result of one command in a sidecar.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` in container `id` and waits for it (bounded).
pub async fn exec(docker: &Docker, id: &str, argv: &[String]) -> Result<ExecOutput, NetfaultError> {
    let what = || argv.join(" ");
    let run = async {
        let created = docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(argv.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..CreateExecOptions::default()
                },
            )
            .await
            .map_err(|e| NetfaultError::Docker(format!("exec {}: {e}", what())))?;
        let mut stdout = String::new();
        let mut stderr = String::new();
        match docker.start_exec(&created.id, None).await {
            Ok(StartExecResults::Attached { mut output, .. }) => {
                while let Some(chunk) = output.next().await {
                    match chunk {
                        Ok(bollard::container::LogOutput::StdOut { message }) => {
                            stdout.push_str(&String::from_utf8_lossy(&message))
                        }
                        Ok(bollard::container::LogOutput::StdErr { message }) => {
                            stderr.push_str(&String::from_utf8_lossy(&message))
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(NetfaultError::Docker(format!("exec {}: {e}", what())))
                        }
                    }
                }
            }
            Ok(StartExecResults::Detached) => {}
            Err(e) => return Err(NetfaultError::Docker(format!("exec {}: {e}", what()))),
        }
        let inspected = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| NetfaultError::Docker(format!("exec {}: {e}", what())))?;
        Ok(ExecOutput {
            code: inspected.exit_code.unwrap_or(-1),
            stdout,
            stderr,
        })
    };
    tokio::time::timeout(EXEC_TIMEOUT, run).await.map_err(|_| {
        NetfaultError::Docker(format!(
            "exec {}: no answer within {EXEC_TIMEOUT:?}",
            what()
        ))
    })?
}

/// Runs `argv` and fails unless it exits 0.
pub async fn exec_ok(
    docker: &Docker,
    id: &str,
    argv: &[String],
) -> Result<ExecOutput, NetfaultError> {
    let out = exec(docker, id, argv).await?;
    if out.code != 0 {
        return Err(NetfaultError::Command {
            command: argv.join(" "),
            code: out.code,
            output: format!("{}{}", out.stdout, out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// Waits up to `timeout` for container `id` to exit; returns its stdout and exit code.
pub async fn wait_output(
    docker: &Docker,
    id: &str,
    timeout: Duration,
) -> Result<(i64, String, String), NetfaultError> {
    let waited = tokio::time::timeout(timeout, async {
        let mut w = docker.wait_container(id, None);
        let mut code = -1;
        while let Some(r) = w.next().await {
            match r {
                Ok(resp) => code = resp.status_code,
                // bollard reports a non-zero exit as an error carrying the code.
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
                Err(e) => return Err(NetfaultError::Docker(format!("waiting for {id}: {e}"))),
            }
        }
        Ok(code)
    })
    .await
    .map_err(|_| {
        NetfaultError::Docker(format!("container {id} did not finish within {timeout:?}"))
    })??;
    let (stdout, stderr) = logs(docker, id).await?;
    Ok((waited, stdout, stderr))
}

/// Everything container `id` wrote so far.
pub async fn logs(docker: &Docker, id: &str) -> Result<(String, String), NetfaultError> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(id, Some(options));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Some(chunk) = stream.next().await {
        match chunk.map_err(docker_err("reading sidecar logs"))? {
            bollard::container::LogOutput::StdOut { message } => {
                stdout.push_str(&String::from_utf8_lossy(&message))
            }
            bollard::container::LogOutput::StdErr { message } => {
                stderr.push_str(&String::from_utf8_lossy(&message))
            }
            _ => {}
        }
    }
    Ok((stdout, stderr))
}

/// Waits (bounded) until container `id` has written `needle` to stderr: readiness by what
/// the program says, not by a fixed sleep.
pub async fn wait_for_stderr(
    docker: &Docker,
    id: &str,
    needle: &str,
    timeout: Duration,
) -> Result<(), NetfaultError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, stderr) = logs(docker, id).await?;
        if stderr.contains(needle) {
            return Ok(());
        }
        if !is_running(docker, id).await? {
            return Err(NetfaultError::Docker(format!(
                "sidecar {id} exited: {}",
                stderr.trim()
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NetfaultError::Docker(format!(
                "sidecar {id} did not say {needle:?} within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
