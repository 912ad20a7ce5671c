//! Node names: the one rule for aliases (`tm2` -> `taskmanager-2`), and the one lookup of
//! the leader jobmanager. Scenarios, the run loop and the interactive commands all use these.

use crate::client::StreamdClient;
use crate::runtime::{NodeState, Role, Runtime};

/// Roles and the spellings that name them: `taskmanager-2`, `taskmanager2`, `tm-2`, `tm2`,
/// in any case. Longer prefixes first, so `taskmanager2` is not read as `t` + ...
const ROLES: [(&[&str], &str); 5] = [
    (&["taskmanager-", "taskmanager", "tm-", "tm"], "taskmanager"),
    (&["jobmanager-", "jobmanager", "jm-", "jm"], "jobmanager"),
    (&["etcd-", "etcd"], "etcd"),
    (&["zookeeper-", "zookeeper", "zk-", "zk"], "zookeeper"),
    (&["lines-", "lines"], "lines"),
];

/// The canonical name of a node alias, by syntax alone (no cluster needed):
/// `tm2`, `TM-2`, `taskmanager2` -> `taskmanager-2`; `jm1` -> `jobmanager-1`; `etcd1` ->
/// `etcd-1`; `zk1` -> `zookeeper-1`. Nodes count from 1. `leader` and anything else ->
/// `None` (`leader` is resolved against a live cluster, by [`leader`]).
pub fn canonical(name: &str) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase();
    for (prefixes, role) in ROLES {
        for p in prefixes {
            let Some(num) = lower.strip_prefix(p) else { continue };
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            return match num.parse::<u32>() {
                Ok(n) if n > 0 => Some(format!("{role}-{n}")),
                _ => None,
            };
        }
    }
    None
}

/// Whether `name` asks for the leader jobmanager.
pub fn is_leader(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("leader")
}

/// The leading jobmanager; without one, why not. streamd: the jobmanager whose REST
/// `/overview` says `leader: true`. Flink (a cluster with `zookeeper-1`): the leader Flink
/// published in ZooKeeper (Flink's REST API names no leader).
pub async fn leader<R: Runtime>(rt: &R) -> Result<String, String> {
    let nodes = rt.nodes().await.map_err(|e| format!("cannot list the nodes: {e}"))?;
    if let Some(zk) = nodes.iter().find(|n| n.role == Role::Zookeeper) {
        let ip = rt.node_address(&zk.name).await.map_err(|e| format!("{}: {e}", zk.name))?;
        let zk_addr = format!("{ip}:{}", crate::flink::config::ZK_CLIENT_PORT);
        return match crate::flink::ha::leader_at(&zk_addr).await {
            Ok(Some(node)) => Ok(node),
            Ok(None) => Err("no jobmanager leads (Flink has published no leader in ZooKeeper)".into()),
            Err(e) => Err(format!("cannot read the leader from {}: {e}", zk.name)),
        };
    }
    let mut why = Vec::new();
    for n in nodes.iter().filter(|n| n.role == Role::Jobmanager) {
        if n.state != NodeState::Running {
            why.push(format!("{} is {:?}", n.name, n.state).to_lowercase());
            continue;
        }
        let client = match rt.rest_url(&n.name).await.map_err(|e| e.to_string()).and_then(|u| StreamdClient::new(u).map_err(|e| e.to_string())) {
            Ok(c) => c,
            Err(e) => {
                why.push(format!("{}: {e}", n.name));
                continue;
            }
        };
        match client.overview().await {
            Ok(o) if o.leader => return Ok(n.name.clone()),
            Ok(_) => why.push(format!("{} is a standby", n.name)),
            Err(e) => why.push(format!("{}: {e}", n.name)),
        }
    }
    Err(format!(
        "no jobmanager says it leads{}",
        if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
    ))
}

/// A REST client for the leader (after a failover, the jobmanager asked first may be dead).
pub async fn leader_client<R: Runtime>(rt: &R) -> Option<StreamdClient> {
    let node = leader(rt).await.ok()?;
    StreamdClient::new(rt.rest_url(&node).await.ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::canonical as c;

    #[test]
    fn every_spelling_of_a_node_is_one_name() {
        for s in ["tm2", "TM2", "tm-2", "taskmanager2", "taskmanager-2", "Taskmanager-2", " tm02 "] {
            assert_eq!(c(s).as_deref(), Some("taskmanager-2"), "{s}");
        }
        assert_eq!(c("TM12").as_deref(), Some("taskmanager-12"));
        assert_eq!(c("jm1").as_deref(), Some("jobmanager-1"));
        assert_eq!(c("jobmanager-1").as_deref(), Some("jobmanager-1"));
        assert_eq!(c("etcd1").as_deref(), Some("etcd-1"));
        assert_eq!(c("etcd-1").as_deref(), Some("etcd-1"));
        assert_eq!(c("zk1").as_deref(), Some("zookeeper-1"));
        assert_eq!(c("lines1").as_deref(), Some("lines-1"));
    }

    #[test]
    fn what_is_no_node_name_is_none() {
        for s in ["tm", "tmx", "tm0", "taskmanager-x", "leader", "", "worker-1", "tm-"] {
            assert_eq!(c(s), None, "{s}");
        }
        assert!(super::is_leader(" Leader "));
    }
}
