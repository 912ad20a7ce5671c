//! Durable checkpoint storage under `<data>/checkpoints/<job>/chk-<n>/`.
//!
//! A task snapshot is one file: a header line `streamd-snapshot v1 crc32=<hex> len=<n>`
//! and a JSON payload, written atomically (temp file, fsync, rename, fsync dir; every
//! directory created on the way is fsynced into its parent). The jobmanager writes
//! `_metadata` last, framed and checksummed the same way, and only then is the checkpoint
//! complete: a crash in between leaves a directory without `_metadata`, which restores
//! ignore. A checksum mismatch (of a snapshot or of `_metadata`) makes a checkpoint
//! unusable, and restore falls back to an older one (the newer completed ones are then
//! re-taken at their cuts, and written again: see `jobmanager::catch_up`).
//!
//! Task-local recovery (`job.local_recovery`): a taskmanager also writes each snapshot to
//! its node-local directory, `<local>/<job>/chk-<n>/<task>.snap`, in the same format with
//! the checkpoint id and task in the header. [`restore_task`] prefers that copy when its
//! checkpoint id and checksum match the handle the jobmanager sent, and reads shared
//! storage otherwise. Local copies are pruned with the checkpoints they mirror
//! ([`prune_local`]).
//!
//! Reads of shared storage go through [`read_shared`], which can emulate remote storage
//! (latency and bandwidth) for measurements: see [`REMOTE_READ_STANDIN_ENV`].

use crate::wire::{SnapshotHandle, TaskId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
/// With `local` (task-local recovery) a second copy goes to the node-local directory; a
/// failure there only loses the local copy (logged), never the checkpoint.
pub fn write_task_snapshot<T: Serialize>(
    data: &Path,
    local: Option<&Path>,
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
    let (bytes, crc) = frame(&payload, "");
    write_atomic(&path, &bytes)?;
    if let Some(local) = local {
        let copy = local_copy_path(local, job, n, task);
        let (bytes, _) = frame(&payload, &format!(" checkpoint={n} task={task}"));
        if let Err(e) = write_atomic(&copy, &bytes) {
            tracing::warn!(checkpoint = n, %task, "no local copy of the snapshot: {e}");
            let _ = std::fs::remove_file(&copy);
        }
    }
    Ok(SnapshotHandle { path: rel.display().to_string(), crc32: crc, size: bytes.len() as u64 })
}

/// A payload behind its checksummed header line (plus `extra` header fields, each
/// ` key=value`); returns the bytes and the checksum.
fn frame(payload: &[u8], extra: &str) -> (Vec<u8>, u32) {
    let crc = crc32fast::hash(payload);
    let mut bytes = format!("streamd-snapshot v1 crc32={crc:08x} len={}{extra}\n", payload.len()).into_bytes();
    bytes.extend_from_slice(payload);
    (bytes, crc)
}

/// A framed file's header, checked against its payload.
struct Header {
    crc: u32,
    /// Local copies only: the checkpoint the copy belongs to.
    checkpoint: Option<u64>,
}

/// The payload of a framed file, checked against its header; returns it and the header.
fn unframe<'a>(path: &Path, bytes: &'a [u8]) -> Result<(&'a [u8], Header), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt { path: path.display().to_string(), reason };
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| corrupt("no header".into()))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| corrupt("header is not text".into()))?;
    if !header.starts_with("streamd-snapshot v1 ") {
        return Err(corrupt(format!("bad header {header:?}")));
    }
    let mut crc = None;
    let mut len = None;
    let mut checkpoint = None;
    for part in header.split(' ') {
        if let Some(v) = part.strip_prefix("crc32=") {
            crc = u32::from_str_radix(v, 16).ok();
        } else if let Some(v) = part.strip_prefix("len=") {
            len = v.parse::<usize>().ok();
        } else if let Some(v) = part.strip_prefix("checkpoint=") {
            checkpoint = v.parse::<u64>().ok();
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
    Ok((payload, Header { crc, checkpoint }))
}

/// Emulates remote shared storage on reads, for measurements: `<latency>,<MB/s>` (e.g.
/// `20ms,100`) adds the latency plus size / bandwidth to every read of shared checkpoint
/// storage. A documented stand-in for a real remote-storage model; unset, reads are plain.
pub const REMOTE_READ_STANDIN_ENV: &str = "STREAMD_REMOTE_READ_STANDIN";

static STANDIN: std::sync::OnceLock<Option<(Duration, f64)>> = std::sync::OnceLock::new();

/// Sets the stand-in for this process (the restore benchmark), before any shared read;
/// `false` when it was already fixed.
pub fn set_remote_standin(standin: Option<(Duration, f64)>) -> bool {
    STANDIN.set(standin).is_ok()
}

/// The stand-in's latency and bandwidth (bytes/s), parsed once.
fn remote_standin() -> Option<(Duration, f64)> {
    *STANDIN.get_or_init(|| {
        let v = std::env::var(REMOTE_READ_STANDIN_ENV).ok()?;
        let parsed = parse_standin(&v);
        if parsed.is_none() {
            tracing::warn!("{REMOTE_READ_STANDIN_ENV}={v:?} ignored: expected `<latency>,<MB/s>` like `20ms,100`");
        }
        parsed
    })
}

/// `20ms,100` -> (20 ms, 100e6 bytes/s).
pub fn parse_standin(v: &str) -> Option<(Duration, f64)> {
    let (lat, bw) = v.split_once(',')?;
    let lat = crate::duration::parse_duration(lat.trim()).ok()?;
    let mb_s: f64 = bw.trim().parse().ok().filter(|x: &f64| x.is_finite() && *x > 0.0)?;
    Some((lat, mb_s * 1e6))
}

/// Reads a file of shared checkpoint storage (through the remote stand-in when set).
pub fn read_shared(path: &Path) -> io::Result<Vec<u8>> {
    let t = Instant::now();
    let bytes = std::fs::read(path)?;
    if let Some((latency, bandwidth)) = remote_standin() {
        let due = latency + Duration::from_secs_f64(bytes.len() as f64 / bandwidth);
        std::thread::sleep(due.saturating_sub(t.elapsed()));
    }
    Ok(bytes)
}

/// Reads the payload of a snapshot file and checks it against its header and `handle`.
pub fn read_verified(data: &Path, handle: &SnapshotHandle) -> Result<Vec<u8>, SnapshotError> {
    let path = data.join(&handle.path);
    let bytes = read_shared(&path).map_err(io_err(&path))?;
    let (payload, Header { crc, .. }) = unframe(&path, &bytes)?;
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
    write_atomic(&path, &frame(&payload, "").0)
}

/// Test support: checkpoint `n` of `job` completed on disk as the coordinator leaves it,
/// one snapshot per `(task, state)` and `cut` as its cut.
#[cfg(test)]
pub(crate) fn write_test_checkpoint(data: &Path, job: &str, n: u64, cut: &[u64], states: &[(TaskId, serde_json::Value)]) -> Metadata {
    let tasks = states.iter().map(|(t, st)| (*t, write_task_snapshot(data, None, job, n, *t, st).unwrap())).collect();
    let m = Metadata {
        job_id: job.into(),
        checkpoint: n,
        attempt: 1,
        trigger_ms: 0,
        complete_ms: 0,
        records_in: cut.iter().sum(),
        cut: cut.to_vec(),
        tasks,
    };
    write_metadata(data, &m).unwrap();
    m
}

/// Where checkpoint `n`'s `_metadata` is.
pub fn metadata_path(data: &Path, job: &str, n: u64) -> PathBuf {
    checkpoint_dir(data, job, n).join("_metadata")
}

/// Every checkpoint id with a directory (complete or not), ascending.
pub fn checkpoint_ids(data: &Path, job: &str) -> Vec<u64> {
    checkpoint_ids_in(&data.join("checkpoints").join(job))
}

/// The `chk-<n>` directories of `dir`, ascending.
fn checkpoint_ids_in(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Reads a checkpoint's `_metadata`, checked against its own checksum only (not the task
/// snapshots it names: a catch-up needs the cut of a checkpoint whose snapshots are bad).
pub fn load_metadata(data: &Path, job: &str, n: u64) -> Result<Metadata, SnapshotError> {
    let path = metadata_path(data, job, n);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let (payload, _) = unframe(&path, &bytes)?;
    serde_json::from_slice(payload).map_err(|e| SnapshotError::Corrupt { path: path.display().to_string(), reason: e.to_string() })
}

/// Reads a checkpoint's metadata and verifies every task snapshot it names.
pub fn load_verified(data: &Path, job: &str, n: u64) -> Result<Metadata, SnapshotError> {
    load_verified_keeping(data, job, n, |_| false).map(|(m, _)| m)
}

/// Verified snapshot payloads, by task.
pub type Payloads = Vec<(TaskId, Vec<u8>)>;

/// [`load_verified`], keeping the verified payloads of the tasks `keep` names (every
/// snapshot is read once: on remote-like storage a second read costs as much again).
fn load_verified_keeping(data: &Path, job: &str, n: u64, keep: impl Fn(TaskId) -> bool) -> Result<(Metadata, Payloads), SnapshotError> {
    let m = load_metadata(data, job, n)?;
    let mut kept = Vec::new();
    for (t, h) in &m.tasks {
        let payload = read_verified(data, h)?;
        if keep(*t) {
            kept.push((*t, payload));
        }
    }
    Ok((m, kept))
}

/// The latest checkpoint that is complete and intact, skipping (and logging) corrupt ones.
pub fn latest_valid(data: &Path, job: &str) -> Option<Metadata> {
    latest_valid_keeping(data, job, None, |_| false).map(|(m, _)| m)
}

/// The newest complete and intact checkpoint not above `ceiling` (`None`: the newest),
/// skipping (and logging) corrupt ones, with the verified payloads of the tasks `keep`
/// names. A checkpoint without `_metadata` never completed and is skipped quietly, unless
/// it is within a ceiling (HA published it as complete).
pub fn latest_valid_keeping(
    data: &Path,
    job: &str,
    ceiling: Option<u64>,
    keep: impl Fn(TaskId) -> bool,
) -> Option<(Metadata, Payloads)> {
    for n in checkpoint_ids(data, job).into_iter().rev().filter(|&n| ceiling.is_none_or(|max| n <= max)) {
        match load_verified_keeping(data, job, n, &keep) {
            Ok(found) => return Some(found),
            Err(SnapshotError::Io { source, .. }) if ceiling.is_none() && source.kind() == io::ErrorKind::NotFound => {}
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

/// Where a taskmanager keeps its local copy of `task`'s snapshot for checkpoint `n`.
pub fn local_copy_path(local: &Path, job: &str, n: u64, task: TaskId) -> PathBuf {
    local.join(job).join(format!("chk-{n}")).join(format!("{task}.snap"))
}

/// Checkpoint ids with a local copy directory, ascending.
pub fn local_checkpoint_ids(local: &Path, job: &str) -> Vec<u64> {
    checkpoint_ids_in(&local.join(job))
}

/// Reads the local copy of `task`'s snapshot for checkpoint `n` and checks it against
/// `handle` (the primary the jobmanager restores): its own checksum, its checkpoint id,
/// and the primary's checksum. `Err` says why it cannot be used.
pub fn read_local_copy(local: &Path, job: &str, n: u64, task: TaskId, handle: &SnapshotHandle) -> Result<Vec<u8>, String> {
    let path = local_copy_path(local, job, n, task);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Stale: this node holds other checkpoints only. Missing: nothing of this task
            // (it ran elsewhere, or the node came back empty).
            let held = local_checkpoint_ids(local, job);
            return Err(match held.last() {
                Some(m) if !held.contains(&n) => format!("stale: no local copy of checkpoint {n} (newest held: {m})"),
                _ => format!("missing: no local copy of {task}"),
            });
        }
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let (payload, header) = unframe(&path, &bytes).map_err(|e| format!("corrupt: {e}"))?;
    if header.checkpoint != Some(n) {
        return Err(format!("stale: the copy is of checkpoint {:?}, not {n}", header.checkpoint));
    }
    if header.crc != handle.crc32 {
        return Err(format!("stale: checksum {:08x}, the checkpoint's is {:08x}", header.crc, handle.crc32));
    }
    Ok(payload.to_vec())
}

/// A task's state as restored, and how.
pub struct Restored<T> {
    pub state: T,
    pub source: crate::api::RestoreSource,
    pub bytes: u64,
    /// Why the local copy was not used (when one was looked for).
    pub fallback: Option<String>,
    pub duration: Duration,
}

/// Restores `task` from checkpoint `n`: from the local copy under `local` when it is
/// there and matches `handle`, else from shared storage. Decoding failures of the local
/// copy fall back too; only a bad primary is an error.
pub fn restore_task<T: DeserializeOwned>(
    data: &Path,
    local: Option<&Path>,
    job: &str,
    n: u64,
    task: TaskId,
    handle: &SnapshotHandle,
) -> Result<Restored<T>, SnapshotError> {
    use crate::api::RestoreSource;
    let t = Instant::now();
    let mut fallback = None;
    if let Some(local) = local {
        match read_local_copy(local, job, n, task, handle).and_then(|p| {
            let bytes = p.len() as u64;
            serde_json::from_slice::<T>(&p).map(|s| (s, bytes)).map_err(|e| format!("corrupt: cannot decode: {e}"))
        }) {
            Ok((state, bytes)) => {
                return Ok(Restored { state, source: RestoreSource::Local, bytes, fallback: None, duration: t.elapsed() })
            }
            Err(why) => {
                tracing::warn!(checkpoint = n, %task, "local copy not used, restoring from shared storage: {why}");
                fallback = Some(why);
            }
        }
    }
    let payload = read_verified(data, handle)?;
    let bytes = payload.len() as u64;
    let state = serde_json::from_slice(&payload)
        .map_err(|e| SnapshotError::Corrupt { path: handle.path.clone(), reason: format!("cannot decode: {e}") })?;
    Ok(Restored { state, source: RestoreSource::Remote, bytes, fallback, duration: t.elapsed() })
}

/// Removes local copies that no longer mirror a checkpoint worth keeping: every one
/// below `below` (subsumed by a newer completed checkpoint), and with `except` every one
/// but that checkpoint (a restore of it: newer copies belong to the failed attempt,
/// older ones are subsumed).
pub fn prune_local(local: &Path, job: &str, below: u64, except: Option<u64>) {
    for m in local_checkpoint_ids(local, job) {
        let keep = m >= below && except.is_none_or(|e| e == m);
        if !keep {
            let _ = std::fs::remove_dir_all(local.join(job).join(format!("chk-{m}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(data: &Path, n: u64, value: u64) -> Metadata {
        write_test_checkpoint(data, "j", n, &[0], &[(TaskId::Count(0), value.into())])
    }

    #[test]
    fn round_trip_and_corruption_falls_back_to_an_older_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        complete(d.path(), 1, 10);
        let m2 = complete(d.path(), 2, 20);
        // An incomplete checkpoint 3 (no _metadata) is ignored.
        write_task_snapshot(d.path(), None, "j", 3, TaskId::Count(0), &30u64).unwrap();
        assert_eq!(latest_valid(d.path(), "j").unwrap().checkpoint, 2);
        let v: u64 = read_task_snapshot(d.path(), &m2.tasks[0].1).unwrap();
        assert_eq!(v, 20);
        // The size the REST API reports is the snapshot file's.
        assert_eq!(m2.size_bytes(), std::fs::metadata(d.path().join(&m2.tasks[0].1.path)).unwrap().len());
        // Flip a byte of checkpoint 2's snapshot: restore falls back to 1.
        let p = d.path().join(&m2.tasks[0].1.path);
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        std::fs::write(&p, b).unwrap();
        assert!(matches!(read_verified(d.path(), &m2.tasks[0].1), Err(SnapshotError::Corrupt { .. })));
        assert_eq!(latest_valid(d.path(), "j").unwrap().checkpoint, 1);
    }

    /// `_metadata` is checksummed. A flipped digit that leaves valid
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
        // Keeping none still keeps the newest: it is what a restore would use.
        prune(d.path(), "j", 0);
        assert_eq!(checkpoint_ids(d.path(), "j"), vec![5]);
    }

    /// Writes a snapshot of `value` for checkpoint `n` with a local copy under `local`.
    fn with_copy(data: &Path, local: &Path, n: u64, value: u64) -> SnapshotHandle {
        write_task_snapshot(data, Some(local), "j", n, TaskId::Count(0), &value).unwrap()
    }

    fn restore(data: &Path, local: &Path, n: u64, h: &SnapshotHandle) -> Restored<u64> {
        restore_task(data, Some(local), "j", n, TaskId::Count(0), h).unwrap()
    }

    #[test]
    fn a_matching_local_copy_is_restored_locally() {
        let (d, l) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let h = with_copy(d.path(), l.path(), 4, 40);
        assert!(local_copy_path(l.path(), "j", 4, TaskId::Count(0)).exists());
        // The shared primary is gone: only the local copy can answer.
        std::fs::remove_file(d.path().join(&h.path)).unwrap();
        let r = restore(d.path(), l.path(), 4, &h);
        assert_eq!((r.state, r.source, r.fallback), (40, crate::api::RestoreSource::Local, None));
    }

    #[test]
    fn a_missing_stale_or_corrupt_local_copy_falls_back_to_shared_storage() {
        use crate::api::RestoreSource::Remote;
        let (d, l) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Missing: never written locally.
        let h = write_task_snapshot(d.path(), None, "j", 1, TaskId::Count(0), &10u64).unwrap();
        let r = restore(d.path(), l.path(), 1, &h);
        assert_eq!((r.state, r.source), (10, Remote));
        assert!(r.fallback.unwrap().starts_with("missing"));

        // Stale: the node holds checkpoint 3 only, the restore is of checkpoint 2.
        let h2 = write_task_snapshot(d.path(), None, "j", 2, TaskId::Count(0), &20u64).unwrap();
        with_copy(d.path(), l.path(), 3, 30);
        let r = restore(d.path(), l.path(), 2, &h2);
        assert_eq!((r.state, r.source), (20, Remote));
        assert!(r.fallback.unwrap().contains("newest held: 3"));

        // Stale: a copy under the right name whose header names another checkpoint.
        let h5 = with_copy(d.path(), l.path(), 5, 50);
        let p5 = local_copy_path(l.path(), "j", 5, TaskId::Count(0));
        let p3 = local_copy_path(l.path(), "j", 3, TaskId::Count(0));
        std::fs::copy(&p3, &p5).unwrap();
        let r = restore(d.path(), l.path(), 5, &h5);
        assert_eq!((r.state, r.source), (50, Remote));
        assert!(r.fallback.unwrap().contains("of checkpoint Some(3), not 5"));

        // Stale: right checkpoint, but not the snapshot the checkpoint recorded.
        let h6 = with_copy(d.path(), l.path(), 6, 60);
        let other = SnapshotHandle { crc32: h6.crc32 ^ 1, ..h6.clone() };
        let r = restore_task::<u64>(d.path(), Some(l.path()), "j", 6, TaskId::Count(0), &other);
        assert!(r.is_err(), "the primary does not match the altered handle either");
        let msg = read_local_copy(l.path(), "j", 6, TaskId::Count(0), &other).unwrap_err();
        assert!(msg.starts_with("stale: checksum"), "{msg}");

        // Corrupt: a flipped byte, and a truncated file.
        let h7 = with_copy(d.path(), l.path(), 7, 70);
        let p7 = local_copy_path(l.path(), "j", 7, TaskId::Count(0));
        let mut b = std::fs::read(&p7).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        std::fs::write(&p7, &b).unwrap();
        let r = restore(d.path(), l.path(), 7, &h7);
        assert_eq!((r.state, r.source), (70, Remote));
        assert!(r.fallback.unwrap().starts_with("corrupt: "));
        std::fs::write(&p7, &b[..b.len() - 1]).unwrap();
        let r = restore(d.path(), l.path(), 7, &h7);
        assert_eq!((r.state, r.source), (70, Remote));
        assert!(r.fallback.unwrap().contains("length"));

        // Missing, not stale: the node holds checkpoint 8, but only another task's copy.
        let h8 = write_task_snapshot(d.path(), Some(l.path()), "j", 8, TaskId::Source(0), &0u64).unwrap();
        let msg = read_local_copy(l.path(), "j", 8, TaskId::Count(0), &h8).unwrap_err();
        assert!(msg.starts_with("missing: no local copy of count-0"), "{msg}");
        // Unreadable: something that is not a file where the copy should be.
        std::fs::create_dir_all(local_copy_path(l.path(), "j", 8, TaskId::Count(0))).unwrap();
        let msg = read_local_copy(l.path(), "j", 8, TaskId::Count(0), &h8).unwrap_err();
        assert!(msg.starts_with("unreadable: "), "{msg}");
    }

    #[test]
    fn local_copies_are_pruned_with_the_checkpoints_they_mirror() {
        let (d, l) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for n in 1..=5 {
            with_copy(d.path(), l.path(), n, n);
        }
        // Checkpoint 4 completed: 1..3 are subsumed, 5 may be in flight.
        prune_local(l.path(), "j", 4, None);
        assert_eq!(local_checkpoint_ids(l.path(), "j"), vec![4, 5]);
        // A restore of 4: 5 belonged to the failed attempt.
        prune_local(l.path(), "j", 0, Some(4));
        assert_eq!(local_checkpoint_ids(l.path(), "j"), vec![4]);
        // A fresh start (no restore): nothing local is kept.
        prune_local(l.path(), "j", 0, Some(0));
        assert!(local_checkpoint_ids(l.path(), "j").is_empty());
    }

    #[test]
    fn the_remote_read_standin_parses_latency_and_bandwidth() {
        assert_eq!(parse_standin("20ms,100"), Some((Duration::from_millis(20), 100e6)));
        assert_eq!(parse_standin(" 1s , 0.5 "), Some((Duration::from_secs(1), 0.5e6)));
        assert_eq!(parse_standin("20ms"), None);
        assert_eq!(parse_standin("20ms,0"), None);
        assert_eq!(parse_standin("fast,100"), None);
    }
}
