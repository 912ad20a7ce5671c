//! The checkpoint coordinator: triggers checkpoint `n`, collects every task's
//! acknowledgement, writes `_metadata` (the commit point), and keeps statistics.
//! One checkpoint at a time (Flink's `max-concurrent-checkpoints: 1`).

use crate::api::{CheckpointStats, CheckpointsInfo};
use crate::snapshot::{self, Metadata};
use crate::wire::{SnapshotHandle, TaskId};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use tokio::time::Instant;

/// A triggered, not yet complete checkpoint.
pub struct Pending {
    pub id: u64,
    pub attempt: u64,
    pub started: Instant,
    pub trigger_ms: u64,
    pub acks: BTreeMap<TaskId, SnapshotHandle>,
    /// The cut: lines consumed per source subtask at its barrier.
    pub positions: BTreeMap<u32, u64>,
    /// Triggered after every source ended: completing it finishes the job.
    pub is_final: bool,
}

/// Coordinator state.
pub struct Coordinator {
    next_id: u64,
    pub pending: Option<Pending>,
    pub last_trigger: Option<Instant>,
    recent: VecDeque<CheckpointStats>,
    pub completed_total: u64,
    pub failed_total: u64,
    pub restored: Option<u64>,
}

impl Coordinator {
    /// Ids continue after the highest checkpoint directory on disk, so an id is never
    /// reused across attempts or jobmanager restarts (sinks name epochs by it).
    pub fn new(data: &Path, job: &str) -> Self {
        let next_id = snapshot::checkpoint_ids(data, job).last().copied().unwrap_or(0) + 1;
        Coordinator {
            next_id,
            pending: None,
            last_trigger: None,
            recent: VecDeque::new(),
            completed_total: 0,
            failed_total: 0,
            restored: None,
        }
    }

    /// Makes sure ids stay above `id` (an id seen elsewhere, e.g. in HA storage).
    pub fn bump_past(&mut self, id: u64) {
        self.next_id = self.next_id.max(id + 1);
    }

    /// Starts checkpoint `n`; the caller sends the triggers.
    pub fn trigger(&mut self, attempt: u64, is_final: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending = Some(Pending {
            id,
            attempt,
            started: Instant::now(),
            trigger_ms: crate::api::now_ms(),
            acks: BTreeMap::new(),
            positions: BTreeMap::new(),
            is_final,
        });
        self.last_trigger = Some(Instant::now());
        id
    }

    /// Drops the pending checkpoint (declined, timed out, or the attempt failed).
    pub fn abort(&mut self, why: &str) {
        if let Some(p) = self.pending.take() {
            tracing::info!(checkpoint = p.id, "checkpoint aborted: {why}");
            self.failed_total += 1;
        }
    }

    /// Records an acknowledgement. Returns the completed metadata once all `expected`
    /// tasks acknowledged and `_metadata` is durably written.
    #[allow(clippy::too_many_arguments)]
    pub fn ack(
        &mut self,
        data: &Path,
        job: &str,
        attempt: u64,
        id: u64,
        task: TaskId,
        handle: SnapshotHandle,
        lines: u64,
        expected: usize,
    ) -> Option<(Metadata, bool)> {
        let p = self.pending.as_mut().filter(|p| p.id == id && p.attempt == attempt)?;
        if let TaskId::Source(i) = task {
            p.positions.insert(i, lines);
        }
        p.acks.insert(task, handle);
        if p.acks.len() < expected {
            return None;
        }
        let p = self.pending.take()?;
        let m = Metadata {
            job_id: job.to_string(),
            checkpoint: p.id,
            attempt: p.attempt,
            trigger_ms: p.trigger_ms,
            complete_ms: crate::api::now_ms(),
            records_in: p.positions.values().sum(),
            cut: p.positions.into_values().collect(),
            tasks: p.acks.into_iter().collect(),
        };
        if let Err(e) = snapshot::write_metadata(data, &m) {
            tracing::warn!(checkpoint = m.checkpoint, "cannot write checkpoint metadata: {e}");
            self.failed_total += 1;
            return None;
        }
        self.completed_total += 1;
        let stats = CheckpointStats {
            id: m.checkpoint,
            attempt: m.attempt,
            trigger_ms: m.trigger_ms,
            complete_ms: m.complete_ms,
            duration_ms: m.complete_ms.saturating_sub(m.trigger_ms),
            size_bytes: m.size_bytes(),
            records_in: m.records_in,
        };
        self.recent.push_back(stats);
        while self.recent.len() > 200 {
            self.recent.pop_front();
        }
        Some((m, p.is_final))
    }

    /// Takes back the completion of checkpoint `id` (HA: its pointer could not be
    /// published, so it does not count as complete and is discarded).
    pub fn retract(&mut self, id: u64) {
        if self.recent.back().is_some_and(|s| s.id == id) {
            self.recent.pop_back();
            self.completed_total = self.completed_total.saturating_sub(1);
            self.failed_total += 1;
        }
    }

    /// REST view.
    pub fn info(&self) -> CheckpointsInfo {
        CheckpointsInfo {
            completed: self.recent.iter().cloned().collect(),
            completed_total: self.completed_total,
            failed_total: self.failed_total,
            in_progress: self.pending.as_ref().map(|p| p.id),
            latest: self.recent.back().cloned(),
            restored: self.restored,
        }
    }

    /// The newest completed checkpoint id known to this coordinator.
    pub fn latest_id(&self) -> Option<u64> {
        self.recent.back().map(|s| s.id)
    }

    /// Checkpoint durations, for the metrics endpoint.
    pub fn last_duration_ms(&self) -> u64 {
        self.recent.back().map(|s| s.duration_ms).unwrap_or(0)
    }
}
