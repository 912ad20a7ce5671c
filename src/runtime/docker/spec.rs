//! What a node's container looks like: name, command line, labels, mounts, cgroup limits.
//! Pure functions of the [`ClusterDef`], so the contract with streamd's CLI is testable
//! without a daemon.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};

use super::labels;
use crate::runtime::{ClusterDef, NodeDef, Resources, Result, Role, RuntimeError};

/// Jobmanager RPC port (Flink's 6123).
pub const RPC_PORT: u16 = 6123;
/// Jobmanager REST port (Flink's 8081).
pub const REST_PORT: u16 = 8081;
/// Taskmanager data port (Flink's 6121).
pub const DATA_PORT: u16 = 6121;
/// Where the run directory is mounted inside every node.
pub const DATA_DIR: &str = "/data";
/// Where a taskmanager whose /data is a disk-fault view finds the job's input (`input/…`):
/// the run directory's input, bound read-only beside the view.
pub const INPUT_ROOT: &str = "/input-root";
/// A taskmanager's node-local storage (task-local recovery): a directory of the
/// container's own filesystem, not a mount, so it lives exactly as long as the container:
/// it survives `kill`/`stop` + `start` and `restart` (same container), not a re-creation.
pub const LOCAL_DIR: &str = "/local";

/// The cluster's bridge network: `<cluster>-internal`.
pub fn network_name(cluster: &str) -> String {
    format!("{cluster}-internal")
}

/// A node's container: `<cluster>-<node>`.
pub fn container_name(cluster: &str, node: &str) -> String {
    format!("{cluster}-{node}")
}

/// streamd's arguments (after the `/streamd` entrypoint) for `node`. `jobmanager` is the
/// node name of the jobmanager that taskmanagers register with.
pub fn node_command(node: &NodeDef, jobmanager: &str) -> Result<Vec<String>> {
    let name = node.name.as_str();
    let args: Vec<String> = match node.role {
        Role::Jobmanager => vec![
            "jobmanager".into(),
            "--job".into(),
            format!("{DATA_DIR}/job.yaml"),
            "--data-dir".into(),
            DATA_DIR.into(),
            "--id".into(),
            name.into(),
            "--rpc-bind".into(),
            format!("0.0.0.0:{RPC_PORT}"),
            "--rest-bind".into(),
            format!("0.0.0.0:{REST_PORT}"),
            "--advertise".into(),
            format!("{name}:{RPC_PORT}"),
        ],
        Role::Taskmanager => vec![
            "taskmanager".into(),
            "--jobmanager".into(),
            format!("{jobmanager}:{RPC_PORT}"),
            "--slots".into(),
            node.slots.to_string(),
            "--data-dir".into(),
            DATA_DIR.into(),
            "--id".into(),
            name.into(),
            "--data-bind".into(),
            format!("0.0.0.0:{DATA_PORT}"),
            "--advertise".into(),
            format!("{name}:{DATA_PORT}"),
            "--local-dir".into(),
            LOCAL_DIR.into(),
        ],
        // The etcd image's own entrypoint; see `super::etcd`.
        Role::Etcd => super::etcd::etcd_command(name),
        // Its source port is the job's `input.socket.port`, read from the job spec.
        Role::Lines => vec![
            "line-server".into(),
            "--id".into(),
            name.into(),
            "--data-dir".into(),
            DATA_DIR.into(),
            "--job".into(),
            format!("{DATA_DIR}/job.yaml"),
            "--feed-bind".into(),
            format!("0.0.0.0:{}", streamd_contract::lines::FEED_PORT),
        ],
        // ZooKeeper is Flink's HA service (src/flink); streamd's HA is etcd.
        Role::Zookeeper => {
            return Err(RuntimeError::Usage(format!(
                "{name}: a streamd cluster has no zookeeper node (its HA uses etcd)"
            )))
        }
    };
    Ok(args)
}

/// HA: the arguments that point a jobmanager or taskmanager at the cluster's etcd node
/// (`--etcd http://etcd-1:2379`); none without an etcd node. With them, taskmanagers
/// follow the elected leader instead of `--jobmanager`.
pub fn ha_args(def: &ClusterDef, node: &NodeDef) -> Vec<String> {
    let Some(etcd) = def.nodes.iter().find(|n| n.role == Role::Etcd) else { return Vec::new() };
    match node.role {
        Role::Jobmanager | Role::Taskmanager => vec!["--etcd".into(), super::etcd::client_url(&etcd.name)],
        Role::Etcd | Role::Zookeeper | Role::Lines => Vec::new(),
    }
}

/// The jobmanager taskmanagers register with: `jobmanager-1` when present, else the first
/// jobmanager of the definition.
pub fn first_jobmanager(def: &ClusterDef) -> Result<&str> {
    let jobmanagers = || def.nodes.iter().filter(|n| n.role == Role::Jobmanager);
    jobmanagers()
        .find(|n| n.name == "jobmanager-1")
        .or_else(|| jobmanagers().next())
        .map(|n| n.name.as_str())
        .ok_or_else(|| RuntimeError::Usage(format!("cluster {} has no jobmanager", def.id)))
}

/// Labels of a node container.
pub fn node_labels(def: &ClusterDef, node: &NodeDef, run_dir: &Path) -> HashMap<String, String> {
    HashMap::from([
        (labels::CLUSTER.to_string(), def.id.clone()),
        (labels::ROLE.to_string(), node.role.as_str().to_string()),
        (labels::NODE.to_string(), node.name.clone()),
        (labels::RUN_DIR.to_string(), run_dir.display().to_string()),
    ])
}

/// cgroup limits as Docker wants them: `(nano_cpus, memory)`. Memory swap is set equal to
/// memory by the caller so a capped node cannot spill into swap.
pub fn limits(node: &str, r: &Resources) -> Result<(Option<i64>, Option<i64>)> {
    let nano_cpus = match r.cpus {
        None => None,
        Some(c) if c.is_finite() && c > 0.0 && c <= 1024.0 => Some((c * 1e9).round() as i64),
        Some(c) => {
            return Err(RuntimeError::Usage(format!(
                "{node}: cpus must be a positive number of CPUs, got {c}"
            )))
        }
    };
    let memory = match r.memory_bytes {
        None => None,
        Some(m) => Some(i64::try_from(m).map_err(|_| {
            RuntimeError::Usage(format!("{node}: memory limit {m} bytes is too large"))
        })?),
    };
    Ok((nano_cpus, memory))
}

/// The full create request of one node container. `run_dir` must be absolute (it is a
/// bind mount source on the daemon's host).
pub fn container_body(
    def: &ClusterDef,
    node: &NodeDef,
    image: &str,
    run_dir: &Path,
    jobmanager: &str,
) -> Result<ContainerCreateBody> {
    let mut cmd = node_command(node, jobmanager)?;
    cmd.extend(ha_args(def, node));
    let (nano_cpus, memory) = limits(&node.name, &node.resources)?;
    let network = network_name(&def.id);
    let endpoint = EndpointSettings {
        aliases: Some(vec![node.name.clone()]),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(node.name.clone()),
        cmd: Some(cmd),
        env: Some(def.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(node_labels(def, node, run_dir)),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{DATA_DIR}", run_dir.display())]),
            network_mode: Some(network.clone()),
            nano_cpus,
            memory,
            memory_swap: memory,
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network, endpoint)])),
        }),
        ..Default::default()
    })
}

/// The create request of a cluster's bridge network `<id>-internal`, labelled as the
/// cluster's (whatever engine runs on it).
pub fn network_request(cluster_id: &str) -> bollard::models::NetworkCreateRequest {
    bollard::models::NetworkCreateRequest {
        name: network_name(cluster_id),
        driver: Some("bridge".into()),
        labels: Some(std::collections::HashMap::from([
            (super::labels::CLUSTER.to_string(), cluster_id.to_string()),
            (super::labels::ROLE.to_string(), super::labels::ROLE_NETWORK.to_string()),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn def() -> ClusterDef {
        let node = |name: &str, role, slots, resources| NodeDef {
            name: name.into(),
            role,
            slots,
            resources,
        };
        ClusterDef {
            id: "c1".into(),
            run_dir: PathBuf::from("/runs/r1"),
            nodes: vec![
                node("jobmanager-1", Role::Jobmanager, 0, Resources::default()),
                node(
                    "taskmanager-2",
                    Role::Taskmanager,
                    3,
                    Resources {
                        cpus: Some(0.5),
                        memory_bytes: Some(256 << 20),
                    },
                ),
            ],
            env: vec![("RUST_LOG".into(), "info".into())],
        }
    }

    #[test]
    fn jobmanager_command_matches_streamd_cli() {
        let d = def();
        let cmd = node_command(&d.nodes[0], "jobmanager-1").unwrap().join(" ");
        assert_eq!(
            cmd,
            "jobmanager --job /data/job.yaml --data-dir /data --id jobmanager-1 \
             --rpc-bind 0.0.0.0:6123 --rest-bind 0.0.0.0:8081 --advertise jobmanager-1:6123"
        );
    }

    #[test]
    fn taskmanager_command_matches_streamd_cli() {
        let d = def();
        let cmd = node_command(&d.nodes[1], "jobmanager-1").unwrap().join(" ");
        assert_eq!(
            cmd,
            "taskmanager --jobmanager jobmanager-1:6123 --slots 3 --data-dir /data \
             --id taskmanager-2 --data-bind 0.0.0.0:6121 --advertise taskmanager-2:6121 --local-dir /local"
        );
    }

    #[test]
    fn body_carries_labels_mount_alias_and_limits() {
        let d = def();
        let b = container_body(
            &d,
            &d.nodes[1],
            "img:1",
            Path::new("/runs/r1"),
            "jobmanager-1",
        )
        .unwrap();
        let labels = b.labels.unwrap();
        assert_eq!(labels[labels::CLUSTER], "c1");
        assert_eq!(labels[labels::ROLE], "taskmanager");
        assert_eq!(labels[labels::NODE], "taskmanager-2");
        assert_eq!(labels[labels::RUN_DIR], "/runs/r1");
        assert_eq!(b.hostname.as_deref(), Some("taskmanager-2"));
        assert_eq!(b.env.unwrap(), vec!["RUST_LOG=info".to_string()]);
        let hc = b.host_config.unwrap();
        assert_eq!(hc.binds.unwrap(), vec!["/runs/r1:/data".to_string()]);
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.memory_swap, Some(256 << 20));
        let eps = b.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            eps["c1-internal"].aliases.as_deref(),
            Some(&["taskmanager-2".to_string()][..])
        );
    }

    #[test]
    fn bad_limits_are_refused() {
        let bad = Resources {
            cpus: Some(-1.0),
            memory_bytes: None,
        };
        assert!(matches!(limits("tm", &bad), Err(RuntimeError::Usage(_))));
    }

    #[test]
    fn with_an_etcd_node_streamd_nodes_get_its_address() {
        let mut d = def();
        assert!(ha_args(&d, &d.nodes[0]).is_empty(), "no etcd, no HA");
        d.nodes.insert(0, NodeDef { name: "etcd-1".into(), role: Role::Etcd, slots: 0, resources: Resources::default() });
        let etcd = container_body(&d, &d.nodes[0], "etcd:1", Path::new("/runs/r1"), "jobmanager-1").unwrap();
        let cmd = etcd.cmd.unwrap().join(" ");
        assert!(cmd.starts_with("--name etcd-1 "), "{cmd}");
        assert_eq!(etcd.labels.unwrap()[labels::ROLE], "etcd");
        for n in [&d.nodes[1], &d.nodes[2]] {
            let b = container_body(&d, n, "img:1", Path::new("/runs/r1"), "jobmanager-1").unwrap();
            let cmd = b.cmd.unwrap().join(" ");
            assert!(cmd.ends_with(" --etcd http://etcd-1:2379"), "{cmd}");
        }
    }

    #[test]
    fn first_jobmanager_prefers_jobmanager_1() {
        let mut d = def();
        assert_eq!(first_jobmanager(&d).unwrap(), "jobmanager-1");
        d.nodes.retain(|n| n.role != Role::Jobmanager);
        assert!(first_jobmanager(&d).is_err());
    }
}
