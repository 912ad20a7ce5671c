//! The `chaos.*` labels every Docker resource of a cluster carries. They are how separate
//! `chaos` invocations find a live cluster, and the fence that keeps `chaos` away from
//! containers it did not create.

use std::collections::HashMap;

/// Cluster id: on containers (nodes and sidecars) and networks.
pub const CLUSTER: &str = "chaos.cluster";
/// `jobmanager` | `taskmanager` | `etcd` | `network` | `sidecar`.
pub const ROLE: &str = "chaos.role";
/// Canonical node name (`taskmanager-2`), on node containers.
pub const NODE: &str = "chaos.node";
/// Host run directory mounted at `/data`, on node containers.
pub const RUN_DIR: &str = "chaos.run_dir";
/// Image kind (`streamd`, helper images), on images `chaos` builds.
pub const IMAGE: &str = "chaos.image";

/// `chaos.role` of the cluster's network.
pub const ROLE_NETWORK: &str = "network";
/// `chaos.role` of helper containers (network-fault sidecars): removed by `down`, not nodes.
pub const ROLE_SIDECAR: &str = "sidecar";

/// A Docker list filter selecting resources labelled `key=value`.
pub fn filter_eq(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{key}={value}")])])
}

/// A Docker list filter selecting resources that carry label `key`, whatever its value.
pub fn filter_has(key: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![key.to_string()])])
}
