//! `chaos netem`, `chaos partition`, `chaos heal`: network faults on the live cluster
//! through [`crate::netfault`]. Docker only: the process runtime refuses them up front.
//!
//! A fault without `--for` stays in place (journaled in the run directory) until
//! `chaos heal` or `chaos down`; with `--for` it is undone after that long, or at once on
//! Ctrl-C.

use std::time::Instant;

use super::interactive::{took, Interrupt, EXIT_INTERRUPTED};
use super::live::{resolve_node, Live, LiveCluster};
use super::{NetemArgs, PartitionArgs};
use crate::executor::{exit, ChaosError, RuntimeKind};
use crate::netfault::{self, FaultHandle, NetFaults, NetfaultError};
use crate::runtime::process;

/// Maps a network-fault error onto the exit codes: the user's to fix (2) or the machine's (3).
pub(super) fn nf_err(e: NetfaultError) -> ChaosError {
    if e.is_usage() {
        ChaosError::Usage(e.to_string())
    } else {
        ChaosError::Infrastructure(e.to_string())
    }
}

/// The live Docker cluster, or the process runtime's refusal.
async fn docker_cluster() -> Result<(LiveCluster, Live), ChaosError> {
    let cluster = LiveCluster::find().await?;
    if cluster.kind == RuntimeKind::Process {
        return Err(process::refuse_network_fault().into());
    }
    let rt = cluster.connect().await?;
    Ok((cluster, rt))
}

/// The cluster's network faults, with the sidecar image built if it is not there yet.
async fn net_faults(cluster: &LiveCluster, rt: &Live) -> Result<NetFaults, ChaosError> {
    let Live::Docker(rt) = rt else { return Err(process::refuse_network_fault().into()) };
    let docker = rt.docker().clone();
    // Locating (maybe building) chaos-netd runs cargo: keep it off the async threads.
    let netd = tokio::task::spawn_blocking(netfault::netd_binary)
        .await
        .map_err(|e| ChaosError::Other(e.to_string()))?
        .map_err(nf_err)?;
    let image = netfault::ensure_image(&docker, &netd).await.map_err(nf_err)?;
    Ok(NetFaults::new(docker, &cluster.id, &cluster.run_dir, rt.network_name()?, image))
}

/// Leaves `handle` in place, or undoes it after `for_` (sooner on Ctrl-C).
async fn hold(
    nf: &NetFaults,
    handle: &FaultHandle,
    for_: Option<std::time::Duration>,
    interrupt: Option<&mut Interrupt>,
) -> Result<u8, ChaosError> {
    let (Some(d), Some(interrupt)) = (for_, interrupt) else {
        eprintln!("in place until `chaos heal` or `chaos down`");
        return Ok(exit::PASS);
    };
    eprintln!("undoing in {} (Ctrl-C undoes now)", streamd_contract::duration::format_duration(d));
    let interrupted = interrupt.sleep(d).await;
    let t = Instant::now();
    nf.undo(handle).await.map_err(nf_err)?;
    println!("undid {} in {}{}", handle.description, took(t.elapsed()), if interrupted { " (interrupted)" } else { "" });
    Ok(if interrupted { EXIT_INTERRUPTED } else { exit::PASS })
}

/// `chaos netem NODE ...`.
pub(super) async fn netem(a: NetemArgs) -> Result<u8, ChaosError> {
    let params = netfault::NetemParams {
        delay: a.delay,
        jitter: a.jitter,
        distribution: a.distribution,
        loss: a.loss.map(|p| p / 100.0),
        duplicate: a.duplicate.map(|p| p / 100.0),
        corrupt: a.corrupt.map(|p| p / 100.0),
        rate_bps: a.rate,
    };
    // Nothing to do is a usage error before any cluster is looked up.
    params.validate().map_err(nf_err)?;
    let (cluster, rt) = docker_cluster().await?;
    let node = resolve_node(&cluster, &rt, &a.node).await?;
    let nf = net_faults(&cluster, &rt).await?;
    let mut interrupt = a.for_.map(|_| Interrupt::new());
    let t = Instant::now();
    let handle = nf.apply_netem(&node, &params).await.map_err(nf_err)?;
    println!("applied {} in {}", handle.description, took(t.elapsed()));
    hold(&nf, &handle, a.for_, interrupt.as_mut()).await
}

/// `chaos partition GROUP GROUP... [--one-way]`.
pub(super) async fn partition(a: PartitionArgs) -> Result<u8, ChaosError> {
    let (cluster, rt) = docker_cluster().await?;
    let mut groups = Vec::new();
    for g in &a.groups {
        let mut group = Vec::new();
        for n in g.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            group.push(resolve_node(&cluster, &rt, n).await?);
        }
        if group.is_empty() {
            return Err(ChaosError::Usage(format!("empty partition group `{g}`")));
        }
        groups.push(group);
    }
    let nf = net_faults(&cluster, &rt).await?;
    let mut interrupt = a.for_.map(|_| Interrupt::new());
    let t = Instant::now();
    let handle = nf.partition(&groups, a.one_way).await.map_err(nf_err)?;
    println!("applied {} in {}", handle.description, took(t.elapsed()));
    hold(&nf, &handle, a.for_, interrupt.as_mut()).await
}

/// `chaos heal`: undoes every network fault of the live cluster.
pub(super) async fn heal() -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    if cluster.kind == RuntimeKind::Process {
        println!("nothing to heal: the process runtime has no network faults");
        return Ok(exit::PASS);
    }
    let rt = cluster.connect().await?;
    let nf = net_faults(&cluster, &rt).await?;
    let t = Instant::now();
    let report = nf.heal().await.map_err(nf_err)?;
    let n = report.undone.len() + report.ended.len();
    println!("healed {n} network fault rule set{} in {}", if n == 1 { "" } else { "s" }, took(t.elapsed()));
    if report.is_clean() {
        Ok(exit::PASS)
    } else {
        Err(ChaosError::Infrastructure(format!("some rules could not be undone: {}", report.errors.join("; "))))
    }
}
