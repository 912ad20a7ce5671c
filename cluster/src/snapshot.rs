//! Durable checkpoint storage under `<data>/checkpoints/<job>/chk-<n>/`.
//!
//! A task snapshot is one file: a header line `streamd-snapshot v1 crc32=<hex> len=<n>`
//! and a JSON payload, written atomically (temp file, fsync, rename, fsync dir; every
//! directory created on the way is fsynced into its parent). The jobmanager writes
//! `_metadata` last, framed and checksummed the same way, and only then is the checkpoint
//! complete: a crash in between leaves a directory without `_metadata`, which restores
//! ignore. A checksum mismatch (of a snapshot or of `_metadata`) makes a checkpoint
//! unusable, and restore falls back to an older one.

use crate::wire::{SnapshotHandle, TaskId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A snapshot that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("i/o on {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("corrupt snapshot {path}: {reason}")]
    Corrupt { path: String, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.display().to_string(), source }
}

/// The directory of checkpoint `n`.
pub fn checkpoint_dir(data: &Path, job: &str, n: u64) -> PathBuf {
    data.join("checkpoints").join(job).join(format!("chk-{n}"))
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::output::create_dir_all_durable(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("inprogress");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    crate::output::sync_dir(dir).map_err(io_err(dir))
}

/// Writes a task snapshot for checkpoint `n`; returns its handle (path relative to `data`).
pub fn write_task_snapshot<T: Serialize>(
    data: &Path,
    job: &str,
    n: u64,
    task: TaskId,
    state: &T,
) -> Result<SnapshotHandle, SnapshotError> {
    let rel = PathBuf::from("checkpoints").join(job).join(format!("chk-{n}")).join(format!("{task}.snap"));
    let path = data.join(&rel);
    let payload = serde_json::to_vec(state).map_err(|e| SnapshotError::Corrupt {
        path: path.display().to_string(),
        reason: format!("cannot encode: {e}"),
    })?;
    let (bytes, crc) = frame(&payload);
    write_atomic(&path, &bytes)?;
    Ok(SnapshotHandle { path: rel.display().to_string(), crc32: crc, size: bytes.len() as u64 })
}

/// A payload behind its checksummed header line; returns the bytes and the checksum.
fn frame(payload: &[u8]) -> (Vec<u8>, u32) {
    let crc = crc32fast::hash(payload);
    let mut bytes = format!("streamd-snapshot v1 crc32={crc:08x} len={}\n", payload.len()).into_bytes();
    bytes.extend_from_slice(payload);
    (bytes, crc)
}

/// The payload of a framed file, checked against its header; returns it and its checksum.
fn unframe<'a>(path: &Path, bytes: &'a [u8]) -> Result<(&'a [u8], u32), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt { path: path.display().to_string(), reason };
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| corrupt("no header".into()))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| corrupt("header is not text".into()))?;
    let mut crc = None;
    let mut len = None;
    for part in header.split(' ') {
        if let Some(v) = part.strip_prefix("crc32=") {
            crc = u32::from_str_radix(v, 16).ok();
        } else if let Some(v) = part.strip_prefix("len=") {
            len = v.parse::<usize>().ok();
        }
    }
    let (Some(crc), Some(len)) = (crc, len) else {
        return Err(corrupt(format!("bad header {header:?}")));
    };
    let payload = &bytes[nl + 1..];
    if payload.len() != len {
        return Err(corrupt(format!("length {} != {len} in header", payload.len())));
    }
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(corrupt(format!("checksum {actual:08x}, header {crc:08x}")));
    }
    Ok((payload, crc))
}

/// Reads the payload of a snapshot file and checks it against its header and `handle`.
pub fn read_verified(data: &Path, handle: &SnapshotHandle) -> Result<Vec<u8>, SnapshotError> {
    let path = data.join(&handle.path);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let (payload, crc) = unframe(&path, &bytes)?;
    if crc != handle.crc32 {
        return Err(SnapshotError::Corrupt {
            path: path.display().to_string(),
            reason: format!("checksum {crc:08x}, handle {:08x}", handle.crc32),
        });
    }
    Ok(payload.to_vec())
}

/// Reads and decodes a verified task snapshot.
pub fn read_task_snapshot<T: DeserializeOwned>(data: &Path, handle: &SnapshotHandle) -> Result<T, SnapshotError> {
    let payload = read_verified(data, handle)?;
    serde_json::from_slice(&payload).map_err(|e| SnapshotError::Corrupt {
        path: handle.path.clone(),
        reason: format!("cannot decode: {e}"),
    })
}

/// `_metadata` of a completed checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    pub job_id: String,
    pub checkpoint: u64,
    pub attempt: u64,
    pub trigger_ms: u64,
    pub complete_ms: u64,
    pub records_in: u64,
    /// The checkpoint's cut: lines consumed per source subtask (see [`crate::cuts`]).
    #[serde(default)]
    pub cut: Vec<u64>,
    pub tasks: Vec<(TaskId, SnapshotHandle)>,
}

impl Metadata {
    pub fn size_bytes(&self) -> u64 {
        self.tasks.iter().map(|(_, h)| h.size).sum()
    }
}

/// Writes `_metadata` (the commit point of a checkpoint), framed with its checksum.
pub fn write_metadata(data: &Path, m: &Metadata) -> Result<(), SnapshotError> {
    let path = metadata_path(data, &m.job_id, m.checkpoint);
    let payload = serde_json::to_vec_pretty(m).map_err(|e| SnapshotError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_atomic(&path, &frame(&payload).0)
}

/// Where checkpoint `n`'s `_metadata` is.
pub fn metadata_path(data: &Path, job: &str, n: u64) -> PathBuf {
    checkpoint_dir(data, job, n).join("_metadata")
}

/// Every checkpoint id with a directory (complete or not), ascending.
pub fn checkpoint_ids(data: &Path, job: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(data.join("checkpoints").join(job))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Reads a checkpoint's metadata and verifies every task snapshot it names.
pub fn load_verified(data: &Path, job: &str, n: u64) -> Result<Metadata, SnapshotError> {
    let path = metadata_path(data, job, n);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let (payload, _) = unframe(&path, &bytes)?;
    let m: Metadata = serde_json::from_slice(payload).map_err(|e| SnapshotError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    for (_, h) in &m.tasks {
        read_verified(data, h)?;
    }
    Ok(m)
}

/// The latest checkpoint that is complete and intact, skipping (and logging) corrupt ones.
pub fn latest_valid(data: &Path, job: &str) -> Option<Metadata> {
    for n in checkpoint_ids(data, job).into_iter().rev() {
        match load_verified(data, job, n) {
            Ok(m) => return Some(m),
            Err(SnapshotError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("checkpoint {n} unusable, falling back to an older one: {e}"),
        }
    }
    None
}

/// Removes completed checkpoints beyond the newest `keep`, and incomplete ones older than
/// the newest complete one.
pub fn prune(data: &Path, job: &str, keep: usize) {
    let ids = checkpoint_ids(data, job);
    let complete: Vec<u64> =
        ids.iter().copied().filter(|n| checkpoint_dir(data, job, *n).join("_metadata").exists()).collect();
    let Some(&newest) = complete.last() else { return };
    let kept: Vec<u64> = complete.iter().rev().take(keep).copied().collect();
    for n in ids {
        if n < newest && !kept.contains(&n) {
            let _ = std::fs::remove_dir_all(checkpoint_dir(data, job, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(data: &Path, n: u64, value: u64) -> Metadata {
        let h = write_task_snapshot(data, "j", n, TaskId::Count(0), &value).unwrap();
        let m = Metadata {
            job_id: "j".into(),
            checkpoint: n,
            attempt: 1,
            trigger_ms: 0,
            complete_ms: 0,
            records_in: 0,
            cut: vec![0],
            tasks: vec![(TaskId::Count(0), h)],
        };
        write_metadata(data, &m).unwrap();
        m
    }

    #[test]
    fn round_trip_and_corruption_falls_back_to_an_older_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        complete(d.path(), 1, 10);
        let m2 = complete(d.path(), 2, 20);
        // An incomplete checkpoint 3 (no _metadata) is ignored.
        write_task_snapshot(d.path(), "j", 3, TaskId::Count(0), &30u64).unwrap();
        assert_eq!(latest_valid(d.path(), "j").unwrap().checkpoint, 2);
        let v: u64 = read_task_snapshot(d.path(), &m2.tasks[0].1).unwrap();
        assert_eq!(v, 20);
        // Flip a byte of checkpoint 2's snapshot: restore falls back to 1.
        let p = d.path().join(&m2.tasks[0].1.path);
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        std::fs::write(&p, b).unwrap();
        assert!(matches!(read_verified(d.path(), &m2.tasks[0].1), Err(SnapshotError::Corrupt { .. })));
        assert_eq!(latest_valid(d.path(), "j").unwrap().checkpoint, 1);
    }

    /// Issue 10, item 7: `_metadata` is checksummed. A flipped digit that leaves valid
    /// JSON (a different source position, a different handle) must make the checkpoint
    /// unusable, not silently restore something else.
    #[test]
    fn a_corrupt_metadata_file_falls_back_to_an_older_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        complete(d.path(), 1, 10);
        complete(d.path(), 2, 20);
        let p = metadata_path(d.path(), "j", 2);
        let text = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
        let flipped = text.replacen("\"checkpoint\": 2", "\"checkpoint\": 3", 1);
        assert_ne!(text, flipped);
        std::fs::write(&p, flipped).unwrap();
        assert!(matches!(load_verified(d.path(), "j", 2), Err(SnapshotError::Corrupt { .. })));
        assert_eq!(latest_valid(d.path(), "j").unwrap().checkpoint, 1);
    }

    #[test]
    fn prune_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        for n in 1..=5 {
            complete(d.path(), n, n);
        }
        prune(d.path(), "j", 2);
        assert_eq!(checkpoint_ids(d.path(), "j"), vec![4, 5]);
    }
}
