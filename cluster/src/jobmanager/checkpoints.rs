//! The checkpoint coordinator: triggers checkpoint `n`, collects every task's
//! acknowledgement, writes `_metadata` (the commit point), and keeps statistics.
//! One checkpoint at a time (Flink's `max-concurrent-checkpoints: 1`), except for a
//! deployment's catch-up checkpoints (see [`super::catch_up`]): those are registered all at
//! once when the attempt is deployed, since the sources inject their barriers themselves as
//! fast as the replay reaches the cuts. Their acknowledgements may come in for a later one
//! before an earlier one is complete; they still complete in id order, and no regular
//! checkpoint is triggered until the last one has.

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
    /// The longest stall a task reported for it (see `TmToJm::Ack`).
    pub stall_us: u64,
    /// The CPU time its tasks' checkpoint writers spent on it, summed.
    pub cpu_us: u64,
    /// A catch-up checkpoint: the cut it must have (it re-takes a completed checkpoint).
    pub catch_up: Option<Vec<u64>>,
}

/// A checkpoint whose `_metadata` is written.
#[derive(Debug)]
pub struct Completed {
    pub metadata: Metadata,
    /// Completing it finishes the job.
    pub is_final: bool,
    /// It re-took a checkpoint completed before (its id and cut are not new).
    pub catch_up: bool,
}

impl Pending {
    fn new(id: u64, attempt: u64, is_final: bool, catch_up: Option<Vec<u64>>) -> Self {
        Pending {
            id,
            attempt,
            started: Instant::now(),
            trigger_ms: crate::api::now_ms(),
            acks: BTreeMap::new(),
            positions: BTreeMap::new(),
            is_final,
            stall_us: 0,
            cpu_us: 0,
            catch_up,
        }
    }
}

/// Coordinator state.
pub struct Coordinator {
    next_id: u64,
    /// The checkpoint in progress (the oldest catch-up checkpoint during a catch-up).
    pub pending: Option<Pending>,
    /// The catch-up checkpoints after `pending`, ascending.
    queued: VecDeque<Pending>,
    pub last_trigger: Option<Instant>,
    recent: VecDeque<CheckpointStats>,
    pub completed_total: u64,
    pub failed_total: u64,
    pub restored: Option<u64>,
    /// The latest completed checkpoint and its cost: the longest stall a task reported
    /// for it plus its writers' CPU per lane.
    pub last_cost: Option<(u64, std::time::Duration)>,
}

impl Coordinator {
    /// Ids continue after the highest checkpoint directory on disk, so an id is never
    /// reused across attempts or jobmanager restarts (sinks name epochs by it).
    pub fn new(data: &Path, job: &str) -> Self {
        let next_id = snapshot::checkpoint_ids(data, job).last().copied().unwrap_or(0) + 1;
        Coordinator {
            next_id,
            pending: None,
            queued: VecDeque::new(),
            last_trigger: None,
            recent: VecDeque::new(),
            completed_total: 0,
            failed_total: 0,
            restored: None,
            last_cost: None,
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
        self.pending = Some(Pending::new(id, attempt, is_final, None));
        self.last_trigger = Some(Instant::now());
        id
    }

    /// Registers attempt `attempt`'s catch-up checkpoints (ascending, with their cuts) as
    /// pending: no trigger is sent, the sources inject their barriers at the cuts. Replaces
    /// whatever was pending. Regular ids stay above them.
    pub fn begin_catch_up(&mut self, attempt: u64, cuts: &[crate::cuts::Cut]) {
        self.abort("a new attempt is deployed");
        let mut all = cuts.iter().map(|c| Pending::new(c.checkpoint, attempt, false, Some(c.positions.clone())));
        self.pending = all.next();
        self.queued = all.collect();
        if let Some(last) = cuts.last() {
            self.bump_past(last.checkpoint);
        }
    }

    /// Whether `id` is one of the catch-up checkpoints still to complete.
    pub fn is_catch_up(&self, id: u64) -> bool {
        self.pending.iter().chain(&self.queued).any(|p| p.id == id && p.catch_up.is_some())
    }

    /// Drops the pending checkpoint (declined, timed out, or the attempt failed), and any
    /// catch-up checkpoints queued behind it.
    pub fn abort(&mut self, why: &str) {
        for p in self.pending.take().into_iter().chain(self.queued.drain(..)) {
            tracing::info!(checkpoint = p.id, "checkpoint aborted: {why}");
            self.failed_total += 1;
        }
    }

    /// Records an acknowledgement. Returns the checkpoints it completed (their `_metadata`
    /// durably written), oldest first: none, one, or — when it completes a catch-up
    /// checkpoint whose successors were all acknowledged already — several. `Err`: a
    /// catch-up checkpoint could not be completed (its `_metadata` write failed), so the
    /// attempt must fail (a later checkpoint at another cut would not be exact).
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
        (stall_us, cpu_us): (u64, u64),
        expected: usize,
    ) -> Vec<Result<Completed, String>> {
        let Some(p) = self.pending.iter_mut().chain(self.queued.iter_mut()).find(|p| p.id == id && p.attempt == attempt) else {
            return Vec::new();
        };
        // The pipeline runs at the pace of its slowest task: the longest stall counts.
        p.stall_us = p.stall_us.max(stall_us);
        p.cpu_us += cpu_us;
        if let TaskId::Source(i) = task {
            p.positions.insert(i, lines);
        }
        p.acks.insert(task, handle);
        let mut done = Vec::new();
        while self.pending.as_ref().is_some_and(|p| p.acks.len() >= expected) {
            let Some(p) = self.pending.take() else { break };
            // The next catch-up checkpoint is in progress from now on.
            self.pending = self.queued.pop_front().map(|mut q| {
                q.started = Instant::now();
                q
            });
            match self.complete(data, job, p) {
                Ok(c) => done.push(Ok(c)),
                Err(Some(why)) => {
                    done.push(Err(why));
                    break;
                }
                Err(None) => {}
            }
        }
        done
    }

    /// Writes `_metadata` of an acknowledged checkpoint and records its statistics. On a
    /// failed write a regular checkpoint is just not complete (`Err(None)`); a catch-up one
    /// says why the attempt must fail.
    fn complete(&mut self, data: &Path, job: &str, p: Pending) -> Result<Completed, Option<String>> {
        let cut: Vec<u64> = p.positions.values().copied().collect();
        if let Some(want) = p.catch_up.as_ref().filter(|w| **w != cut) {
            // The sources inject catch-up barriers at exactly these positions: a different
            // cut is an engine bug, and the verdict's epoch checks will say so.
            tracing::error!(checkpoint = p.id, ?want, got = ?cut, "a catch-up checkpoint was taken at another cut");
        }
        let m = Metadata {
            job_id: job.to_string(),
            checkpoint: p.id,
            attempt: p.attempt,
            trigger_ms: p.trigger_ms,
            complete_ms: crate::api::now_ms(),
            records_in: cut.iter().sum(),
            cut,
            tasks: p.acks.into_iter().collect(),
        };
        if let Err(e) = snapshot::write_metadata(data, &m) {
            tracing::warn!(checkpoint = m.checkpoint, "cannot write checkpoint metadata: {e}");
            self.failed_total += 1;
            if p.catch_up.is_some() {
                self.abort("a catch-up checkpoint before it failed");
                return Err(Some(format!("catch-up checkpoint {}: cannot write its metadata: {e}", m.checkpoint)));
            }
            return Err(None);
        }
        self.completed_total += 1;
        // What it took from processing: the longest stall, plus the writers' CPU shared
        // out over the pipeline's lanes (one per source subtask), each lane a core's worth
        // of work on a busy node.
        let lanes = m.cut.len().max(1) as u64;
        self.last_cost = Some((m.checkpoint, std::time::Duration::from_micros(p.stall_us + p.cpu_us / lanes)));
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
        Ok(Completed { metadata: m, is_final: p.is_final, catch_up: p.catch_up.is_some() })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuts::Cut;

    fn ack(c: &mut Coordinator, data: &Path, id: u64, task: TaskId, lines: u64) -> Vec<Result<Completed, String>> {
        let handle = SnapshotHandle { path: format!("x/{task}"), crc32: 0, size: 1 };
        c.ack(data, "j", 2, id, task, handle, lines, (0, 0), 2)
    }

    #[test]
    fn catch_up_checkpoints_complete_in_order_and_regular_ids_continue_above() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Coordinator::new(d.path(), "j");
        let cuts = [Cut { checkpoint: 4, positions: vec![40] }, Cut { checkpoint: 5, positions: vec![50] }];
        c.begin_catch_up(2, &cuts);
        assert_eq!(c.pending.as_ref().map(|p| p.id), Some(4));
        assert!(c.is_catch_up(4) && c.is_catch_up(5) && !c.is_catch_up(6));
        // Checkpoint 5 is acknowledged in full before 4: it waits.
        assert!(ack(&mut c, d.path(), 5, TaskId::Source(0), 50).is_empty());
        assert!(ack(&mut c, d.path(), 5, TaskId::Count(0), 0).is_empty());
        assert!(ack(&mut c, d.path(), 4, TaskId::Source(0), 40).is_empty());
        // Another attempt's acknowledgement counts for nothing.
        let h = SnapshotHandle { path: "x".into(), crc32: 0, size: 1 };
        assert!(c.ack(d.path(), "j", 1, 4, TaskId::Count(0), h, 0, (0, 0), 2).is_empty());
        let done = ack(&mut c, d.path(), 4, TaskId::Count(0), 0);
        let done: Vec<(u64, Vec<u64>, bool)> =
            done.into_iter().map(|r| r.unwrap()).map(|c| (c.metadata.checkpoint, c.metadata.cut, c.catch_up)).collect();
        assert_eq!(done, vec![(4, vec![40], true), (5, vec![50], true)]);
        assert!(c.pending.is_none() && !c.is_catch_up(5));
        assert_eq!(snapshot::load_metadata(d.path(), "j", 5).unwrap().cut, vec![50], "_metadata written again");
        assert_eq!(c.trigger(2, false), 6, "regular ids continue above the catch-up ones");
    }

    /// What the REST API and the adaptive interval read: totals, the latest 200, the
    /// latest id, duration and cost; a retraction; a `_metadata` that cannot be written.
    #[test]
    fn statistics_count_every_completion_failure_and_retraction() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Coordinator::new(d.path(), "j");
        for n in 1..=201u64 {
            assert_eq!(c.trigger(2, false), n);
            c.pending.as_mut().unwrap().trigger_ms -= 40; // triggered 40 ms ago
            let h = |t: TaskId| SnapshotHandle { path: format!("x/{t}"), crc32: 0, size: 1 };
            // Two source subtasks: two lanes.
            let (s0, s1) = (TaskId::Source(0), TaskId::Source(1));
            assert!(c.ack(d.path(), "j", 2, n, s0, h(s0), n, (3000, 1000), 2).is_empty());
            let done = c.ack(d.path(), "j", 2, n, s1, h(s1), n, (1000, 3000), 2);
            assert_eq!(done.len(), 1);
        }
        let info = c.info();
        assert_eq!((info.completed_total, info.failed_total, info.completed.len()), (201, 0, 200), "the latest 200 kept");
        assert_eq!(info.completed.first().map(|s| s.id), Some(2));
        assert_eq!(c.latest_id(), Some(201));
        assert!((40..1000).contains(&c.last_duration_ms()), "{}", c.last_duration_ms());
        // The longest stall (3 ms) plus the writers' CPU (4 ms) shared over the two lanes.
        assert_eq!(c.last_cost, Some((201, std::time::Duration::from_millis(5))));

        c.retract(201);
        assert_eq!((c.completed_total, c.failed_total, c.latest_id()), (200, 1, Some(200)));

        // Checkpoint 202's directory cannot be made (a file is in its way): not complete.
        let n = c.trigger(2, false);
        std::fs::write(snapshot::checkpoint_dir(d.path(), "j", n), b"in the way").unwrap();
        assert!(ack(&mut c, d.path(), n, TaskId::Source(0), 1).is_empty());
        assert!(ack(&mut c, d.path(), n, TaskId::Count(0), 0).is_empty(), "completed without its _metadata");
        assert_eq!((c.completed_total, c.failed_total, c.latest_id()), (200, 2, Some(200)));
    }

    #[test]
    fn aborting_drops_every_catch_up_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Coordinator::new(d.path(), "j");
        c.begin_catch_up(2, &[Cut { checkpoint: 4, positions: vec![40] }, Cut { checkpoint: 5, positions: vec![50] }]);
        c.abort("the attempt failed");
        assert!(c.pending.is_none() && !c.is_catch_up(5));
        assert_eq!(c.info().failed_total, 2);
        assert!(ack(&mut c, d.path(), 5, TaskId::Source(0), 50).is_empty());
    }
}
