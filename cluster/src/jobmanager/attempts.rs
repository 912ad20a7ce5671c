//! The attempt counter of a jobmanager without HA, kept on disk next to the checkpoints
//! (`checkpoints/<job>/attempt`), so a restarted jobmanager continues above the attempts of
//! the one before it. Attempt numbers fence tasks of older attempts and name the parts of
//! at-least-once output: starting again at 1 would overwrite earlier output with new parts
//! of the same name. (With HA the counter lives in etcd's status record.)

use crate::snapshot::{write_atomic, SnapshotError};
use std::path::{Path, PathBuf};

fn path(data: &Path, job: &str) -> PathBuf {
    data.join("checkpoints").join(job).join("attempt")
}

/// The highest attempt recorded (0: none, a fresh job). An unreadable record counts as
/// none, with a warning: the checkpoints still say where the job stands.
pub fn recorded(data: &Path, job: &str) -> u64 {
    let p = path(data, job);
    match std::fs::read_to_string(&p) {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| {
            tracing::warn!("{}: {s:?} is not an attempt number; starting from 0", p.display());
            0
        }),
        Err(_) => 0,
    }
}

/// Records `attempt` durably (before it is deployed).
pub fn record(data: &Path, job: &str, attempt: u64) -> Result<(), SnapshotError> {
    write_atomic(&path(data, job), attempt.to_string().as_bytes())
}
