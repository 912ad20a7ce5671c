//! Framing and messages.
//!
//! Every connection carries length-prefixed frames: a big-endian `u32` length, then the
//! payload. A frame longer than [`MAX_FRAME`] or a payload that does not decode is a
//! [`WireError`] on that connection: the node closes it and lives on.
//!
//! - Control (taskmanager <-> jobmanager, port 6123): JSON-encoded [`TmToJm`] / [`JmToTm`].
//! - Data (taskmanager -> taskmanager, port 6121): a JSON [`DataHello`] naming the channel,
//!   then binary frames ([`FrameKind`]): pre-aggregated word batches (a windowed job's keys
//!   are `<window start><TAB><word>`), in-band barriers, and watermarks.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::spec::JobSpec;

/// Upper bound of one frame; anything larger is garbage or hostile.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// A broken connection or a frame that makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Reads one frame into `buf` (cleared first).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLarge(n));
    }
    buf.clear();
    buf.resize(n, 0);
    r.read_exact(buf).await?;
    Ok(())
}

/// Writes one frame (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> Result<(), WireError> {
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLarge(payload.len()));
    }
    w.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Reads a JSON frame.
pub async fn read_json<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<T, WireError> {
    read_frame(r, buf).await?;
    serde_json::from_slice(buf).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Writes and flushes a JSON frame.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> Result<(), WireError> {
    let v = serde_json::to_vec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    write_frame(w, &v).await?;
    w.flush().await?;
    Ok(())
}

/// Identifies a task: `source-<i>` or `count-<i>` (count includes the chained sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum TaskId {
    Source(u32),
    Count(u32),
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskId::Source(i) => write!(f, "source-{i}"),
            TaskId::Count(i) => write!(f, "count-{i}"),
        }
    }
}

/// Where a task's snapshot for one checkpoint lives, and how to check it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotHandle {
    /// Path relative to the data directory.
    pub path: String,
    pub crc32: u32,
    pub size: u64,
}

/// Counters a task reports with each heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskMetrics {
    pub attempt: u64,
    pub task: Option<TaskId>,
    /// Sources: lines consumed (absolute: includes the restored position).
    pub lines: u64,
    /// Sources: words emitted; counts: words received.
    pub words: u64,
}

/// Pipeline `subtask` (one slot: `source-i` + `count-i`) placed on a taskmanager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub subtask: u32,
    pub taskmanager: String,
    pub data_address: String,
}

/// Taskmanager -> jobmanager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TmToJm {
    Register { id: String, data_address: String, slots: u32 },
    Heartbeat { metrics: Vec<TaskMetrics> },
    /// The tasks of `attempt` on this taskmanager are deployed and running, with how each
    /// restored its state.
    Deployed {
        attempt: u64,
        #[serde(default)]
        restores: Vec<crate::api::TaskRestore>,
    },
    /// A task has taken its part of checkpoint `checkpoint`.
    /// `stall_us`: how long the task's data path was held up by it (a count task: from the
    /// first barrier of the epoch, when that input stops being read, to the state copied
    /// for the writer; a source: sending the barrier); the jobmanager's checkpoint cost.
    Ack {
        attempt: u64,
        checkpoint: u64,
        task: TaskId,
        handle: SnapshotHandle,
        lines: u64,
        #[serde(default)]
        stall_us: u64,
        /// CPU time the task's checkpoint writer spent making its part durable (staging,
        /// encoding and writing the snapshot; waiting for fsync excluded): taken from
        /// processing on a busy node, so part of the checkpoint's cost too.
        #[serde(default)]
        cpu_us: u64,
    },
    /// A task could not take its part of a checkpoint (the checkpoint is aborted).
    Decline { attempt: u64, checkpoint: u64, task: TaskId, reason: String },
    /// Source `subtask` has read all of its input.
    SourceEnded { attempt: u64, subtask: u32, lines: u64 },
    /// The sink of `subtask` has committed every epoch up to `checkpoint`.
    Committed { attempt: u64, subtask: u32, checkpoint: u64 },
    TaskFailed { attempt: u64, task: TaskId, cause: String },
}

/// Jobmanager -> taskmanager. Every command carries the attempt and the leader epoch it
/// belongs to; taskmanagers ignore commands of an attempt they no longer run, and commands
/// of a leader epoch older than the newest they have seen (a deposed leader: see `ha`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JmToTm {
    Registered { jobmanager: String, leader_epoch: u64, heartbeat_interval_ms: u64, heartbeat_timeout_ms: u64 },
    Heartbeat,
    Deploy(Box<Deployment>),
    Cancel {
        attempt: u64,
        #[serde(default)]
        leader_epoch: u64,
    },
    Trigger {
        attempt: u64,
        checkpoint: u64,
        #[serde(default)]
        leader_epoch: u64,
    },
    Complete {
        attempt: u64,
        checkpoint: u64,
        #[serde(default)]
        leader_epoch: u64,
    },
    /// The job finished: stop the tasks of `attempt`.
    Finish {
        attempt: u64,
        #[serde(default)]
        leader_epoch: u64,
    },
}

impl JmToTm {
    /// The leader epoch a command was sent under (`None` for the handshake and heartbeats).
    pub fn leader_epoch(&self) -> Option<u64> {
        match self {
            JmToTm::Registered { .. } | JmToTm::Heartbeat => None,
            JmToTm::Deploy(d) => Some(d.leader_epoch),
            JmToTm::Cancel { leader_epoch, .. }
            | JmToTm::Trigger { leader_epoch, .. }
            | JmToTm::Complete { leader_epoch, .. }
            | JmToTm::Finish { leader_epoch, .. } => Some(*leader_epoch),
        }
    }
}

/// Everything a taskmanager needs to run its part of one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub attempt: u64,
    pub leader_epoch: u64,
    pub job: JobSpec,
    /// Every pipeline's placement (sources connect to every count task).
    pub assignments: Vec<Assignment>,
    /// The pipelines this taskmanager runs.
    pub local: Vec<u32>,
    /// The checkpoint to restore, with its task snapshots.
    pub restore: Option<Restore>,
    /// Checkpoints that completed after the restored one (whose own snapshots or metadata
    /// are unusable) and that sinks may already have committed: re-taken at exactly their
    /// recorded cuts, in order, before any regular checkpoint (see
    /// `jobmanager::catch_up`).
    #[serde(default)]
    pub catch_up: Vec<CatchUp>,
}

/// A checkpoint to re-take: its id and its cut (lines consumed per source subtask, indexed
/// by subtask). Source `i` injects barrier `checkpoint` itself once it has consumed
/// `positions[i]` lines of its partition, before reading further.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUp {
    pub checkpoint: u64,
    pub positions: Vec<u64>,
}

/// A completed checkpoint to restore from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restore {
    pub checkpoint: u64,
    pub handles: Vec<(TaskId, SnapshotHandle)>,
}

/// First frame on a data connection: which channel this is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataHello {
    pub attempt: u64,
    pub from: u32,
    pub to: u32,
}

const TAG_BATCH: u8 = 1;
const TAG_BARRIER: u8 = 2;
const TAG_WATERMARK: u8 = 3;

/// What a data frame is, without copying a batch's contents out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Batch,
    Barrier(u64),
    /// Event time has reached this (ms): the sender emits nothing earlier any more (see
    /// `streamd_contract::window`).
    Watermark(u64),
}

/// Starts a batch frame payload; append entries with [`push_entry`].
pub fn begin_batch(buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(TAG_BATCH);
}

/// Appends one `(word, count)` to a batch payload. The length field is 32 bits: a token of
/// any size round-trips whole (the oracle counts it whole; cutting it would be a wrong
/// count), bounded only by [`MAX_FRAME`] for the whole batch (lint refuses longer lines).
#[inline]
pub fn push_entry(buf: &mut Vec<u8>, word: &str, count: u32) {
    let w = word.as_bytes();
    buf.extend_from_slice(&(w.len() as u32).to_le_bytes());
    buf.extend_from_slice(w);
    buf.extend_from_slice(&count.to_le_bytes());
}

/// Encodes a barrier payload.
pub fn barrier_payload(id: u64) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[0] = TAG_BARRIER;
    b[1..].copy_from_slice(&id.to_le_bytes());
    b
}

/// Encodes a watermark payload.
pub fn watermark_payload(t: u64) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[0] = TAG_WATERMARK;
    b[1..].copy_from_slice(&t.to_le_bytes());
    b
}

/// Classifies a data frame payload (without copying batch contents out).
pub fn decode_kind(payload: &[u8]) -> Result<FrameKind, WireError> {
    let u64_at_1 = || {
        let mut id = [0u8; 8];
        id.copy_from_slice(&payload[1..9]);
        u64::from_le_bytes(id)
    };
    match payload.first() {
        Some(&TAG_BATCH) => Ok(FrameKind::Batch),
        Some(&TAG_BARRIER) if payload.len() == 9 => Ok(FrameKind::Barrier(u64_at_1())),
        Some(&TAG_WATERMARK) if payload.len() == 9 => Ok(FrameKind::Watermark(u64_at_1())),
        Some(t) => Err(WireError::Malformed(format!("unknown data frame tag {t} (len {})", payload.len()))),
        None => Err(WireError::Malformed("empty data frame".into())),
    }
}

/// Iterates the entries of a batch payload; a malformed entry ends the iteration with an error.
pub fn for_each_entry(payload: &[u8], mut f: impl FnMut(&str, u32)) -> Result<u64, WireError> {
    let mut i = 1;
    let mut words = 0u64;
    while i < payload.len() {
        if i + 4 > payload.len() {
            return Err(WireError::Malformed("truncated batch entry".into()));
        }
        let n = u32::from_le_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]]) as usize;
        i += 4;
        if n > payload.len() - i || payload.len() - i - n < 4 {
            return Err(WireError::Malformed("truncated batch entry".into()));
        }
        let w = std::str::from_utf8(&payload[i..i + n]).map_err(|_| WireError::Malformed("word is not UTF-8".into()))?;
        i += n;
        let c = u32::from_le_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]]);
        i += 4;
        words += c as u64;
        f(w, c);
    }
    Ok(words)
}

/// The partition (count subtask) of a word: FNV-1a, stable across processes and builds
/// (std's `RandomState` is not, and every source must agree on where a word goes).
#[inline]
pub fn partition(word: &str, parallelism: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in word.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % parallelism.max(1) as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_garbage_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_json(&mut a, &TmToJm::SourceEnded { attempt: 3, subtask: 1, lines: 5 }).await.unwrap();
        let mut buf = Vec::new();
        let m: TmToJm = read_json(&mut b, &mut buf).await.unwrap();
        assert!(matches!(m, TmToJm::SourceEnded { attempt: 3, subtask: 1, lines: 5 }));
        // Garbage: a huge length prefix.
        a.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(read_frame(&mut b, &mut buf).await, Err(WireError::TooLarge(_))));
        // Garbage: valid length, invalid JSON.
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"not json").await.unwrap();
        assert!(matches!(read_json::<_, TmToJm>(&mut b, &mut buf).await, Err(WireError::Malformed(_))));
        drop(a);
        assert!(matches!(read_frame(&mut b, &mut buf).await, Err(WireError::Closed)));
    }

    #[test]
    fn batches_round_trip_and_truncation_is_detected() {
        let mut b = Vec::new();
        begin_batch(&mut b);
        push_entry(&mut b, "hello", 3);
        push_entry(&mut b, "żółw", 1);
        assert_eq!(decode_kind(&b).unwrap(), FrameKind::Batch);
        let mut got = Vec::new();
        assert_eq!(for_each_entry(&b, |w, c| got.push((w.to_string(), c))).unwrap(), 4);
        assert_eq!(got, vec![("hello".into(), 3), ("żółw".into(), 1)]);
        assert!(for_each_entry(&b[..b.len() - 1], |_, _| {}).is_err());
        // A token far beyond 64 KiB round-trips whole (it used to be cut).
        let long = "ż".repeat(50_000) + "x";
        begin_batch(&mut b);
        push_entry(&mut b, &long, 2);
        let mut got = Vec::new();
        for_each_entry(&b, |w, c| got.push((w.to_string(), c))).unwrap();
        assert_eq!(got, vec![(long, 2)]);
        // A length field past the end is an error, not a panic or an overflow.
        let mut bad = vec![1u8];
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(for_each_entry(&bad, |_, _| {}).is_err());
        assert_eq!(decode_kind(&barrier_payload(42)).unwrap(), FrameKind::Barrier(42));
        assert!(decode_kind(&[9, 9]).is_err());
        assert_eq!(decode_kind(&watermark_payload(7)).unwrap(), FrameKind::Watermark(7));
        assert!(decode_kind(&[3, 1]).is_err());
    }

    #[test]
    fn partition_is_stable() {
        assert_eq!(partition("hello", 4), partition("hello", 4));
        let spread: std::collections::HashSet<u32> = (0..100).map(|i| partition(&format!("w{i}"), 4)).collect();
        assert_eq!(spread.len(), 4);
    }
}
