//! Which jobmanager leads a ZooKeeper-HA Flink cluster, as Flink itself says: the address
//! the leader published in ZooKeeper.
//!
//! # Where the leader is written down
//! Every jobmanager runs one Curator leader latch (`<root>/<cluster-id>/leader/latch`);
//! the process that holds it leads all of its components at once (dispatcher, resource
//! manager, REST endpoint, the job's JobMaster) and publishes each one's address in the
//! EPHEMERAL znode `<root>/<cluster-id>/leader/<component>/connection_info`: Java
//! serialization of `writeUTF(address)` then the leader session's `UUID`
//! (`ZooKeeperUtils.writeLeaderInformationToZooKeeper`). Taskmanagers, the REST handlers
//! of every jobmanager and Flink's own CLI (`RestClusterClient`) find the leader there.
//! [`leader`] reads the dispatcher's (`pekko.tcp://flink@jobmanager-2:6123/user/rpc/
//! dispatcher_1`): the dispatcher owns the job and answers every job query. Its host is
//! the `jobmanager.rpc.address` each jobmanager is given, i.e. its node name.
//!
//! Flink's REST API has no endpoint naming the leader (FLINK-27590 asks for one): every
//! jobmanager's `/jobmanager/config`, `/jobmanager/environment` and
//! `/jobs/<id>/jobmanager/config` describe the jobmanager that answers, not the leader,
//! and job queries are forwarded, so they look the same on every jobmanager. Logs are not
//! read: ZooKeeper is the record Flink itself acts on.
//!
//! A SIGKILLed leader's ephemeral znodes (latch and connection info) outlive it until its
//! ZooKeeper session expires ([`super::config::ZooKeeperHa::session_timeout`]): until
//! then [`leader`] still names it, as Flink does; then no znode (`None`); then the new
//! leader's.
//!
//! # Whose REST answers job queries
//! Every jobmanager runs a REST endpoint, and its job handlers ask the *leading*
//! dispatcher (found through ZooKeeper) over RPC, so the standby answers job queries
//! exactly like the leader (no redirect; 503 only while no leader is published). Measured with
//! `tests/flink.rs` `ha_survives_a_leader_kill` (2 jobmanagers, session timeout 5 s,
//! REST client timeout 2 s):
//! - standby paused: the leader's REST answers at once;
//! - leader paused (2 s, shorter than the session): the standby's REST does not answer
//!   within 2 s: it waits for the frozen leader, it does not fail over;
//! - leader SIGKILLed: at once the standby's REST answers `500`
//!   (`RecipientUnreachableException`: the forwarded RPC to the dead dispatcher fails),
//!   then no answer within 2 s while ZooKeeper still names the dead leader (until its
//!   session expires: 5-7 s with a 5 s session), then `503` "Service temporarily
//!   unavailable due to an ongoing leader election" while no leader is published (a few
//!   hundred ms, not always caught), then, as the new leader, briefly no job (being
//!   recovered from the HA store), INITIALIZING, RUNNING with tasks deploying, RUNNING.
//!   Kill to new leader published: 5.5-7.2 s; kill to every task RUNNING again:
//!   6.8-9.8 s (five runs on a shared 2-core machine).
//!
//! The first job query a standby forwards after it starts may take longer than 2 s too
//! (it opens its RPC connection to the leader then).


use super::cluster::FlinkCluster;
use super::config::ZooKeeperHa;
use super::zk::{ZkError, ZkSession, ZK_TIMEOUT};
use super::{FlinkError, Result};

/// The component whose published address names the leader: the dispatcher (owner of the
/// job; every REST handler asks it).
pub const LEADER_COMPONENT: &str = "dispatcher";

/// The leader as published in ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The node name (the address's host).
    pub node: String,
    /// The published address, e.g. `pekko.tcp://flink@jobmanager-2:6123/user/rpc/dispatcher_1`.
    pub address: String,
}

/// The leading jobmanager's node name, or `None` when there is none (no HA, election
/// under way, ZooKeeper unreachable, an address that names no jobmanager of the cluster).
/// [`leader_info`] says why.
pub async fn leader(cluster: &FlinkCluster) -> Option<String> {
    match leader_info(cluster).await {
        Ok(l) => l.map(|l| l.node),
        Err(e) => {
            tracing::debug!("no leader: {e}");
            None
        }
    }
}

/// The leader published in ZooKeeper; `Ok(None)` while no leader is published. An error
/// when the cluster has no HA, ZooKeeper cannot be read, or the address is not one of the
/// cluster's jobmanagers.
pub async fn leader_info(cluster: &FlinkCluster) -> Result<Option<Leader>> {
    let ha = cluster
        .def()
        .settings
        .ha
        .as_ref()
        .ok_or_else(|| FlinkError::Usage(format!("cluster {} has no high availability", cluster.def().id)))?;
    let zk = cluster.zookeeper_address().await?;
    let Some(address) = published_address(&zk, ha, LEADER_COMPONENT).await.map_err(zk_err)? else {
        return Ok(None);
    };
    let host = host_of(&address).ok_or_else(|| FlinkError::Usage(format!("leader address {address:?} has no host")))?;
    let jobmanagers = cluster.def().jobmanager_names();
    if !jobmanagers.iter().any(|n| n == host) {
        return Err(FlinkError::Usage(format!(
            "the leader's address {address:?} names none of the jobmanagers {jobmanagers:?}"
        )));
    }
    Ok(Some(Leader { node: host.to_string(), address }))
}

/// The leading jobmanager's node name, read from the ZooKeeper at `zk` (`host:port`)
/// alone: the one cluster id under Flink's root (every chaos cluster has its own
/// ZooKeeper) and its dispatcher's published address. What the fault layer's `leader`
/// target uses, which knows the nodes but not the cluster's Flink settings.
pub async fn leader_at(zk: &str) -> std::result::Result<Option<String>, String> {
    let root = super::config::ZK_ROOT;
    let mut session = ZkSession::connect(zk, ZK_TIMEOUT).await.map_err(|e| e.to_string())?;
    let children = session.get_children(root).await;
    session.close().await;
    let ids = children.map_err(|e| e.to_string())?.unwrap_or_default();
    let [id] = ids.as_slice() else {
        return Err(format!("expected one cluster under {root} in ZooKeeper, found {ids:?}"));
    };
    let ha = ZooKeeperHa::for_cluster(id, super::cluster::ZOOKEEPER);
    let address = published_address(zk, &ha, LEADER_COMPONENT).await.map_err(|e| e.to_string())?;
    Ok(address.and_then(|a| host_of(&a).map(str::to_string)))
}

/// The address the leader of `component` published, read from ZooKeeper at `zk`
/// (`host:port`); `None` when no leader is published.
pub async fn published_address(zk: &str, ha: &ZooKeeperHa, component: &str) -> std::result::Result<Option<String>, ZkError> {
    let path = ha.connection_info_path(component);
    let mut session = ZkSession::connect(zk, ZK_TIMEOUT).await?;
    let data = session.get_data(&path).await;
    session.close().await;
    match data? {
        // Flink empties the znode rather than deleting it in some transitions.
        None => Ok(None),
        Some(d) if d.is_empty() => Ok(None),
        Some(d) => decode_leader_information(&d)
            .map(Some)
            .map_err(|message| ZkError::Protocol { server: zk.to_string(), message: format!("{path}: {message}") }),
    }
}

fn zk_err(e: ZkError) -> FlinkError {
    FlinkError::Usage(e.to_string())
}

/// The address in a `connection_info` znode: Java serialization (`AC ED 00 05`) whose
/// first block-data record(s) hold `writeUTF(address)` (2-byte length, modified UTF-8,
/// plain ASCII for host names); the leader session's `UUID` object follows and is not
/// needed.
pub fn decode_leader_information(data: &[u8]) -> std::result::Result<String, String> {
    const MAGIC: [u8; 4] = [0xAC, 0xED, 0x00, 0x05];
    const TC_BLOCKDATA: u8 = 0x77;
    const TC_BLOCKDATALONG: u8 = 0x7A;
    if data.get(..4) != Some(&MAGIC[..]) {
        return Err("not a Java serialization stream".into());
    }
    // Concatenate the leading block-data records: writeUTF may span several.
    let mut block = Vec::new();
    let mut pos = 4;
    loop {
        let (len, header) = match data.get(pos) {
            Some(&TC_BLOCKDATA) => (data.get(pos + 1).map(|&n| n as usize), 2),
            Some(&TC_BLOCKDATALONG) => (
                data.get(pos + 1..pos + 5).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize),
                5,
            ),
            _ => break,
        };
        let len = len.ok_or("truncated block header")?;
        let body = data.get(pos + header..pos + header + len).ok_or("truncated block")?;
        block.extend_from_slice(body);
        pos += header + len;
    }
    let n = block.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize).ok_or("no address")?;
    let text = block.get(2..2 + n).ok_or("truncated address")?;
    String::from_utf8(text.to_vec()).map_err(|_| "address is not UTF-8".to_string())
}

/// The host of an address: `http://jobmanager-2:8081` and
/// `pekko.tcp://flink@jobmanager-2:6123/user/rpc/dispatcher_1` give `jobmanager-2`.
pub fn host_of(address: &str) -> Option<&str> {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ObjectOutputStream` writes for `writeUTF(address); writeObject(uuid)` (the
    /// UUID part abbreviated: the decoder stops before it).
    fn serialized(address: &str) -> Vec<u8> {
        let mut utf = (address.len() as u16).to_be_bytes().to_vec();
        utf.extend(address.as_bytes());
        let mut out = vec![0xAC, 0xED, 0x00, 0x05];
        if utf.len() <= 255 {
            out.extend([0x77, utf.len() as u8]);
        } else {
            out.push(0x7A);
            out.extend((utf.len() as u32).to_be_bytes());
        }
        out.extend(utf);
        out.extend([0x73, 0x72, 0x00, 0x0E]);
        out.extend(b"java.util.UUID");
        out
    }

    #[test]
    fn decodes_published_addresses_and_their_hosts() {
        let a = "pekko.tcp://flink@jobmanager-2:6123/user/rpc/dispatcher_1";
        assert_eq!(decode_leader_information(&serialized(a)).as_deref(), Ok(a));
        assert_eq!(host_of(a), Some("jobmanager-2"));
        assert_eq!(host_of("http://jobmanager-1:8081"), Some("jobmanager-1"));
        assert_eq!(host_of("jobmanager-3:6123"), Some("jobmanager-3"));
        let long = format!("http://{}:8081", "j".repeat(300));
        assert_eq!(decode_leader_information(&serialized(&long)), Ok(long));
        // Split over two block records, as ObjectOutputStream does past its block size.
        let mut split = serialized("http://jobmanager-1:8081");
        let body = split[6..6 + 26].to_vec();
        split.truncate(4);
        split.extend([0x77, 10]);
        split.extend(&body[..10]);
        split.extend([0x77, 16]);
        split.extend(&body[10..]);
        assert_eq!(decode_leader_information(&split).as_deref(), Ok("http://jobmanager-1:8081"));
    }

    #[test]
    fn bad_znode_data_is_an_error_not_a_panic() {
        assert!(decode_leader_information(b"").is_err());
        assert!(decode_leader_information(b"jobmanager-1").is_err());
        assert!(decode_leader_information(&[0xAC, 0xED, 0x00, 0x05]).is_err());
        assert!(decode_leader_information(&[0xAC, 0xED, 0x00, 0x05, 0x77, 9, 0, 20, b'a']).is_err());
        assert!(decode_leader_information(&[0xAC, 0xED, 0x00, 0x05, 0x7A, 0xFF, 0xFF]).is_err());
        let mut truncated = serialized("http://jobmanager-1:8081");
        truncated.truncate(12);
        assert!(decode_leader_information(&truncated).is_err());
        assert_eq!(host_of("http://:8081"), None);
    }
}
