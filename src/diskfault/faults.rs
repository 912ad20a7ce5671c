//! Applying and undoing a node's disk faults: one rewrite of its control file each,
//! announced in the run's undo journal first (as network rules are), so what a crashed
//! `chaos` left applied is known and `chaos down` closes it.

use std::path::Path;

use super::mount::{is_mounted, NodeFiles};
use super::rules::{DiskFault, DiskKind, Op};
use super::DiskError;
use crate::netfault::journal::{now_unix_ms, Closed, DiskEntry, Journal, Record};

/// What was applied, to undo it.
#[derive(Debug, Clone)]
pub struct DiskHandle {
    pub run_dir: std::path::PathBuf,
    pub node: String,
    pub id: String,
    pub description: String,
}

/// A person's description: `delay 20ms ±5ms on write, fsync under checkpoints`.
pub fn describe(f: &DiskFault) -> String {
    let what = match &f.kind {
        DiskKind::Delay { delay, jitter } => {
            let mut s = format!("delay {}", streamd_contract::duration::format_duration(*delay));
            if !jitter.is_zero() {
                s.push_str(&format!(" ±{}", streamd_contract::duration::format_duration(*jitter)));
            }
            s
        }
        DiskKind::Error { errno, probability } => format!("{} with probability {}%", errno.name(), probability * 100.0),
        DiskKind::FullAfter { bytes } => format!("ENOSPC after {bytes} bytes written"),
    };
    let ops = if f.ops.is_empty() {
        match f.kind {
            DiskKind::FullAfter { .. } => "write".to_string(),
            _ => "every operation".to_string(),
        }
    } else {
        f.ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
    };
    let path = if f.path.is_empty() { String::new() } else { format!(" under /data/{}", f.path.trim_matches('/')) };
    format!("{what} on {ops}{path}")
}

/// Adds `fault` to `node`'s disk. The node must have a passthrough (the run was set up
/// for disk faults).
pub fn apply(run_dir: &Path, node: &str, mut fault: DiskFault) -> Result<DiskHandle, DiskError> {
    let files = NodeFiles::new(run_dir, node);
    if !is_mounted(&files.mount_point()) {
        return Err(DiskError::Usage(format!(
            "node {node} has no disk passthrough: only a run whose scenario has `disk` faults (or \
             `cluster.checkpoint_storage`) mounts one, when its cluster starts"
        )));
    }
    if fault.id.is_empty() {
        fault.id = format!("disk-{node}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    }
    let mut c = files.read_control()?;
    let description = format!("{} on {node}", describe(&fault));
    let id = fault.id.clone();
    let journal = Journal::in_run_dir(run_dir);
    let entry = DiskEntry { id: id.clone(), node: node.to_string(), fault: fault.clone(), applied_unix_ms: now_unix_ms() };
    journal.append(&Record::Disk(Box::new(entry))).map_err(|e| DiskError::Io(e.to_string()))?;
    c.faults.retain(|f| f.id != id);
    c.faults.push(fault);
    if let Err(e) = files.write_control(&c) {
        let _ = journal.close(&id, Closed::Failed);
        return Err(e);
    }
    Ok(DiskHandle { run_dir: run_dir.to_path_buf(), node: node.to_string(), id, description })
}

/// Removes the fault; one already gone counts as removed.
pub fn undo(h: &DiskHandle) -> Result<(), DiskError> {
    let files = NodeFiles::new(&h.run_dir, &h.node);
    let mut c = files.read_control()?;
    let before = c.faults.len();
    c.faults.retain(|f| f.id != h.id);
    if c.faults.len() != before {
        files.write_control(&c)?;
    }
    Journal::in_run_dir(&h.run_dir).close(&h.id, Closed::Undone).map_err(|e| DiskError::Io(e.to_string()))
}

/// Closes the journal's open disk faults of `node` (all nodes: `None`): its passthrough
/// was stopped, and the faults with it.
pub fn ended(run_dir: &Path, node: Option<&str>) -> Result<(), DiskError> {
    let journal = Journal::in_run_dir(run_dir);
    let open = journal.open_disk_entries().map_err(|e| DiskError::Io(e.to_string()))?;
    for e in open.iter().filter(|e| node.is_none_or(|n| n == e.node)) {
        journal.close(&e.id, Closed::Ended).map_err(|e| DiskError::Io(e.to_string()))?;
    }
    Ok(())
}

/// Errors injected so far on `node` by fault `id`, and its operations' measurements.
pub fn injected(run_dir: &Path, node: &str, id: &str) -> u64 {
    NodeFiles::new(run_dir, node).read_stats().and_then(|s| s.by_fault.get(id).copied()).unwrap_or(0)
}

/// The operations a fault acts on, for the report.
pub fn ops_of(f: &DiskFault) -> Vec<Op> {
    if !f.ops.is_empty() {
        return f.ops.clone();
    }
    match f.kind {
        DiskKind::FullAfter { .. } => vec![Op::Write],
        _ => Op::ALL.to_vec(),
    }
}

/// The measured effect of applied faults, for the report: per node, the delayed
/// operations (asked delay against measured latency, means in ms) and the errors each
/// fault injected.
pub fn measure(handles: &[DiskHandle]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for h in handles {
        let Some(stats) = NodeFiles::new(&h.run_dir, &h.node).read_stats() else { continue };
        let ops = delays(&stats);
        let injected: serde_json::Map<String, serde_json::Value> = stats
            .ops
            .iter()
            .filter(|(_, s)| !s.injected.is_empty())
            .map(|(op, s)| (op.name().to_string(), serde_json::json!(s.injected)))
            .collect();
        out.insert(
            h.node.clone(),
            serde_json::json!({
                "errors_injected": stats.by_fault.get(&h.id).copied().unwrap_or(0),
                "injected_by_op": injected,
                "delay": ops,
            }),
        );
    }
    serde_json::json!({ "disk": out })
}

/// Per operation: how many were delayed, the mean delay asked and the mean time they took
/// (ms), from a node's passthrough measurements.
fn delays(stats: &super::stats::Stats) -> serde_json::Map<String, serde_json::Value> {
    let mut ops = serde_json::Map::new();
    for (op, s) in &stats.ops {
        if s.delayed > 0 {
            let mean = |us: u64| (us as f64 / s.delayed as f64 / 10.0).round() / 100.0;
            ops.insert(
                op.name().to_string(),
                serde_json::json!({ "delayed": s.delayed, "asked_ms": mean(s.asked_us), "measured_ms": mean(s.delayed_took_us) }),
            );
        }
    }
    ops
}

/// The remote-storage model's measured effect, for the report: the model, and per node
/// the delayed operations (asked against measured). The counts cover the whole run, so
/// a `delay` fault held meanwhile on the same node is in them too.
pub fn measure_storage(run_dir: &Path, model: &super::StorageModel, nodes: &[String]) -> serde_json::Value {
    let mut per_node = serde_json::Map::new();
    for n in nodes {
        if let Some(stats) = NodeFiles::new(run_dir, n).read_stats() {
            per_node.insert(n.clone(), serde_json::Value::Object(delays(&stats)));
        }
    }
    serde_json::json!({
        "model": model.describe(),
        "latency_ms": model.latency.as_secs_f64() * 1e3,
        "bandwidth_bytes_per_s": model.bandwidth,
        "measured": per_node,
    })
}

/// How long `chaos` waits for a daemon to acknowledge a power loss.
pub const POWER_LOSS_ACK: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `node` can lose power: its passthrough is mounted and keeps the undo log (a
/// usage error otherwise, said before anything is done to the node).
pub fn can_lose_power(run_dir: &Path, node: &str) -> Result<(), DiskError> {
    let files = NodeFiles::new(run_dir, node);
    if !is_mounted(&files.mount_point()) {
        return Err(DiskError::Usage(format!(
            "node {node} has no disk passthrough, so it cannot lose its unsynced writes: only a run whose \
             scenario has `lose_unsynced` (or `disk`) faults, or `chaos up --disk`, mounts one when its cluster starts"
        )));
    }
    if !files.read_control()?.track_unsynced {
        return Err(DiskError::Usage(format!(
            "the disk passthrough of {node} does not keep the undo log a power loss needs: it is kept from the \
             start for scenarios with `lose_unsynced` and for `chaos up --disk`"
        )));
    }
    Ok(())
}

/// Power loss on `node` (already dead): asks its daemon to roll back everything the node
/// had not fsynced, and waits for the acknowledgement, which is the daemon's account.
pub fn power_loss(run_dir: &Path, node: &str) -> Result<super::unsynced::PowerLossReport, DiskError> {
    can_lose_power(run_dir, node)?;
    let files = NodeFiles::new(run_dir, node);
    let mut c = files.read_control()?;
    let id = format!("power-{node}-{:08x}", rand::random::<u32>());
    c.power_loss = Some(id.clone());
    files.write_control(&c)?;
    let deadline = std::time::Instant::now() + POWER_LOSS_ACK;
    let report = loop {
        if let Some(r) = files.read_stats().and_then(|s| s.power_losses.get(&id).cloned()) {
            break r;
        }
        if std::time::Instant::now() > deadline {
            return Err(DiskError::Io(format!(
                "the disk passthrough of {node} did not acknowledge the power loss within {} s (its log: {})",
                POWER_LOSS_ACK.as_secs(),
                files.log().display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    // Answered: take the request out, so that no daemon ever runs it again.
    let mut c = files.read_control()?;
    if c.power_loss.as_deref() == Some(id.as_str()) {
        c.power_loss = None;
        files.write_control(&c)?;
    }
    Ok(report)
}

/// `3 files rolled back (12.1 KiB lost), 4 entries undone (create 2, rename 2)`.
pub fn describe_power_loss(r: &super::unsynced::PowerLossReport) -> String {
    let kib = r.bytes_lost as f64 / 1024.0;
    let mut s = format!(
        "{} file{} rolled back ({} lost), {} entr{} undone",
        r.files_rolled_back,
        if r.files_rolled_back == 1 { "" } else { "s" },
        if r.bytes_lost < 1024 { format!("{} bytes", r.bytes_lost) } else { format!("{kib:.1} KiB") },
        r.entries_undone,
        if r.entries_undone == 1 { "y" } else { "ies" },
    );
    if !r.undone_by_kind.is_empty() {
        let kinds: Vec<String> = r.undone_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s.push_str(&format!(" ({})", kinds.join(", ")));
    }
    if r.conflicts > 0 {
        s.push_str(&format!(", {} skipped (changed by another node since)", r.conflicts));
    }
    if r.untracked > 0 {
        s.push_str(&format!(", {} change(s) not tracked (kept)", r.untracked));
    }
    // What was lost, by name: data the node never made durable.
    if !r.lost.is_empty() {
        let shown: Vec<&str> = r.lost.iter().take(3).map(String::as_str).collect();
        let total = (r.files_rolled_back + r.entries_undone) as usize;
        let more = if total > shown.len() { format!(" (+{} more)", total - shown.len()) } else { String::new() };
        s.push_str(&format!("; never made durable: {}{more}", shown.join(", ")));
    }
    s
}

/// The report's `measured` of a fault that cut the power of `reports`' nodes.
pub fn measure_power_loss(reports: &[(String, super::unsynced::PowerLossReport)]) -> serde_json::Value {
    let nodes: serde_json::Map<String, serde_json::Value> =
        reports.iter().map(|(n, r)| (n.clone(), serde_json::to_value(r).unwrap_or_default())).collect();
    serde_json::json!({ "power_loss": nodes })
}
