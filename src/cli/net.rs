//! `chaos netem`, `chaos partition`, `chaos heal`: network faults on the live cluster. The
//! first two are faults like any other (see `interactive::fault`); the process runtime
//! refuses them through the fault layer.
//!
//! A fault without `--for` stays in place (journaled in the run directory) until
//! `chaos heal` or `chaos down`; with `--for` it is undone after that long, or at once on
//! Ctrl-C.

use std::time::Instant;

use super::interactive::{fault, took};
use super::{NetemArgs, PartitionArgs};
use chaos::error::{exit, ChaosError};
use chaos::live::LiveCluster;
use chaos::scenario::{Action, NetemParams, Target};

/// `chaos netem NODE ...`.
pub(super) async fn netem(a: NetemArgs) -> Result<u8, ChaosError> {
    let params = NetemParams {
        delay: a.delay,
        jitter: a.jitter,
        distribution: a.distribution,
        loss: a.loss,
        duplicate: a.duplicate,
        corrupt: a.corrupt,
        rate: a.rate,
    };
    // Nothing to do is a usage error before any cluster is looked up.
    chaos::fault::net::to_netfault(&params).validate()?;
    fault(Action::Netem(params), &[a.node], a.for_).await
}

/// `chaos partition GROUP GROUP... [--one-way]`.
pub(super) async fn partition(a: PartitionArgs) -> Result<u8, ChaosError> {
    let mut groups = Vec::new();
    for g in &a.groups {
        let group: Vec<Target> =
            g.split(',').map(str::trim).filter(|n| !n.is_empty()).map(|n| Target::Node(n.to_string())).collect();
        if group.is_empty() {
            return Err(ChaosError::Usage(format!("empty partition group `{g}`")));
        }
        groups.push(group);
    }
    fault(Action::Partition { groups, one_way: a.one_way }, &[], a.for_).await
}

/// `chaos heal`: undoes every network fault of the live cluster.
pub(super) async fn heal() -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    let rt = cluster.connect().await?;
    let Some(nf) = rt.net_faults(&cluster).await? else {
        println!("nothing to heal: the process runtime has no network faults");
        return Ok(exit::PASS);
    };
    let t = Instant::now();
    let report = nf.heal().await?;
    let n = report.undone.len() + report.ended.len();
    println!("healed {n} network fault rule set{} in {}", if n == 1 { "" } else { "s" }, took(t.elapsed()));
    if report.is_clean() {
        Ok(exit::PASS)
    } else {
        Err(ChaosError::Infrastructure(format!("some rules could not be undone: {}", report.errors.join("; "))))
    }
}
