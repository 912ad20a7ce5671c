//! Undoing network faults: the journal's undo commands, run idempotently (an absent rule or
//! qdisc, a removed container, a recreated namespace all count as clean), for one fault, a
//! cluster (`chaos heal`), or everything a run left behind (`chaos down`, after a crash).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bollard::Docker;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::journal::{Closed, Entry, Journal};
use super::rules::TC;
use super::sidecar::{self, SidecarSpec};
use super::NetfaultError;

type Result<T> = std::result::Result<T, NetfaultError>;

/// What an undo did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoReport {
    /// Entries whose rules were removed (or found already absent).
    pub undone: Vec<String>,
    /// Entries whose namespace was gone (container removed, stopped or restarted).
    pub ended: Vec<String>,
    /// Orphan sidecars removed by the sweep.
    pub sidecars_removed: usize,
    /// Entries that could not be undone, with the reason; they stay open in the journal.
    pub errors: Vec<String>,
}

impl UndoReport {
    /// Nothing failed.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}
/// Runs undo commands; an absent rule or qdisc counts as removed.
pub(super) async fn run_undo(
    docker: &Docker,
    sidecar_id: &str,
    undo: &[Vec<String>],
) -> Result<()> {
    for cmd in undo {
        if let Some(pos) = cmd.iter().position(|a| a == "-D") {
            // iptables: delete while the rule exists (-C exit 1: no such rule). Bounded, in
            // case an interrupted re-apply added it twice.
            let mut check = cmd.clone();
            check[pos] = "-C".into();
            for _ in 0..8 {
                let c = sidecar::exec(docker, sidecar_id, &check).await?;
                match c.code {
                    0 => {
                        sidecar::exec_ok(docker, sidecar_id, cmd).await?;
                    }
                    1 => break,
                    code => {
                        return Err(NetfaultError::Command {
                            command: check.join(" "),
                            code,
                            output: format!("{}{}", c.stdout, c.stderr).trim().to_string(),
                        })
                    }
                }
            }
        } else if cmd.first().is_some_and(|c| c == TC) {
            let out = sidecar::exec(docker, sidecar_id, cmd).await?;
            let text = format!("{}{}", out.stdout, out.stderr);
            let absent = [
                "handle of zero",
                "Cannot find device",
                "No such file or directory",
                "Invalid handle",
            ];
            if out.code != 0 && !absent.iter().any(|a| text.contains(a)) {
                return Err(NetfaultError::Command {
                    command: cmd.join(" "),
                    code: out.code,
                    output: text.trim().to_string(),
                });
            }
        } else {
            sidecar::exec_ok(docker, sidecar_id, cmd).await?;
        }
    }
    Ok(())
}

/// Undoes one entry and closes it in the journal.
pub(super) async fn undo_entry(
    docker: &Docker,
    journal: &Journal,
    entry: &Entry,
) -> Result<Closed> {
    let now = sidecar::inspect(docker, &entry.container_id, &entry.node, &entry.network).await?;
    let how = match now {
        // No namespace, or a new one: the rules went with the old one.
        None => Closed::Ended,
        Some(t) if !t.running || t.started_at != entry.started_at => Closed::Ended,
        Some(t) => {
            let spec = SidecarSpec {
                image: &entry.image,
                cluster: &entry.cluster,
                node: &entry.node,
                fault: &entry.fault,
                network_mode: format!("container:{}", t.container_id),
                cmd: vec!["hold".into(), "--max-secs".into(), "120".into()],
            };
            // Rules first (so nothing is queued to a delayer that is going away), then the
            // delayer: on SIGTERM it lets the packets it holds go.
            let worker = sidecar::start(docker, spec).await?;
            let undone = run_undo(docker, &worker, &entry.undo).await;
            let _ = sidecar::remove(docker, &worker).await;
            undone?;
            Closed::Undone
        }
    };
    if let Some(s) = &entry.sidecar {
        sidecar::remove(docker, s).await?;
    }
    journal.close(&entry.id, how)?;
    tracing::info!(fault = %entry.fault, node = %entry.node, ?how, "network fault undone");
    Ok(how)
}

pub(super) async fn undo_entries(
    docker: &Docker,
    journal: &Journal,
    entries: &[Entry],
) -> UndoReport {
    let results = join_all(entries.iter().map(|e| undo_entry(docker, journal, e))).await;
    let mut report = UndoReport::default();
    for (e, r) in entries.iter().zip(results) {
        match r {
            Ok(Closed::Undone) => report.undone.push(e.id.clone()),
            Ok(_) => report.ended.push(e.id.clone()),
            Err(err) => report.errors.push(format!("{}: {err}", e.id)),
        }
    }
    report
}

/// Undoes every open entry of the journal in `run_dir`, whatever cluster, and removes the
/// sidecars of those clusters (including ones orphaned by a crash before they were
/// journaled). Idempotent. For `chaos down`, Ctrl-C, and the start of the next run.
pub async fn undo_all(docker: &Docker, run_dir: &Path) -> Result<UndoReport> {
    let journal = Journal::in_run_dir(run_dir);
    let entries = journal.open_entries()?;
    let mut report = undo_entries(docker, &journal, &entries).await;
    let clusters: BTreeSet<&str> = entries.iter().map(|e| e.cluster.as_str()).collect();
    for cluster in clusters {
        for id in sidecar::list(docker, cluster).await? {
            match sidecar::remove(docker, &id).await {
                Ok(()) => report.sidecars_removed += 1,
                Err(e) => report.errors.push(format!("sidecar {id}: {e}")),
            }
        }
    }
    Ok(report)
}

/// [`undo_all`] for every run directory under `runs_root` (e.g. `target/chaos/runs`) that
/// holds a journal: what the next `chaos run` calls first, since it does not know which
/// earlier run crashed.
pub async fn undo_all_runs(docker: &Docker, runs_root: &Path) -> Result<UndoReport> {
    let mut total = UndoReport::default();
    let dirs: Vec<PathBuf> = match std::fs::read_dir(runs_root) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(total),
        Err(e) => {
            return Err(NetfaultError::Journal(format!(
                "{}: {e}",
                runs_root.display()
            )))
        }
    };
    for dir in dirs {
        if !dir.join(super::journal::FILE_NAME).is_file() {
            continue;
        }
        let r = undo_all(docker, &dir).await?;
        total.undone.extend(r.undone);
        total.ended.extend(r.ended);
        total.sidecars_removed += r.sidecars_removed;
        total.errors.extend(r.errors);
    }
    Ok(total)
}
