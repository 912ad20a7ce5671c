//! Deploying the job's next attempt: once it is due (a restart delay has passed) and enough
//! slots are registered, the pipelines are spread over the taskmanagers, the checkpoint to
//! restore is picked (the newest intact one not above the restore ceiling), the attempt is
//! recorded, and its deployments are queued as an HA op: they go out once the attempt is
//! durable (`failover.rs`).
//!
//! When the restored checkpoint is older than the latest completed one (the newer ones
//! are unusable), the deployment carries the newer ones' cuts to re-take first
//! ([`crate::jobmanager::catch_up`]), and the coordinator registers them as pending.
//!
//! With task-local recovery a restart first puts each pipeline back on the taskmanager
//! that ran it in the previous attempt, if that one is registered and has a free slot
//! (its local snapshot copies are there); the rest are spread as usual ([`place`]).
//!
//! The checkpoint to restore is looked up on a thread of its own ([`RestoreLookup`]):
//! checking that a checkpoint is intact reads every snapshot in it, seconds on remote-like
//! storage, and the master's loop must go on heartbeating meanwhile.

use super::JobMaster;
use crate::api::JobState;
use crate::jobmanager::{attempts, catch_up};
use crate::jobmanager::ops::{HaOp, Then};
use crate::snapshot::{self, Metadata};
use crate::spec::Delivery;
use crate::taskmanager::sabotage::Sabotage;
use crate::taskmanager::source::SourceState;
use crate::wire::{Assignment, CatchUp, Deployment, Restore, TaskId};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;
use tokio::time::Instant;

impl JobMaster {
    /// Deploys the next attempt when it is due and enough slots are registered.
    pub(super) fn schedule(&mut self) {
        if !matches!(self.state, JobState::Created | JobState::Restarting) || !self.placement.is_empty() {
            return;
        }
        if self.restart_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let total: u32 = self.tms.values().map(|t| t.slots).sum();
        if total < self.p() {
            return; // wait for taskmanagers to (re)register
        }
        // Only a job's very first deployment waits for the whole cluster; a restarted
        // jobmanager (attempts recorded) must not stall on a taskmanager that is dead.
        if self.attempt == 0 && (self.tms.len() as u32) < self.cfg.job.wait_for_taskmanagers {
            return;
        }
        let Some(RestorePlan { restore, source_lines }) = self.restore_plan() else {
            return; // still looking (the loop goes on; a later tick picks the result up)
        };
        let free: Vec<(String, String, u32)> =
            self.tms.values().map(|t| (t.id.clone(), t.data_address.clone(), t.slots)).collect();
        // Only a restore can use local copies; without one, placement is the plain spread.
        let previous = if self.cfg.job.local_recovery && restore.is_some() { &self.previous_placement[..] } else { &[] };
        let placement = place(free, self.p(), previous);
        if self.cfg.ha.is_none() {
            // Recorded before it is deployed, as HA records it in etcd first.
            if let Err(e) = attempts::record(&self.cfg.data_dir, &self.cfg.job.job_id, self.attempt + 1) {
                tracing::warn!("cannot record attempt {}: {e}; retrying", self.attempt + 1);
                self.restart_at = Some(Instant::now() + Duration::from_millis(500));
                return;
            }
        }
        self.attempt += 1;
        self.restart_at = None;
        self.source_lines = source_lines;
        self.count_words.clear();
        if let Some(m) = &restore {
            self.ckpt.restored = Some(m.checkpoint);
            self.ckpt.bump_past(m.checkpoint);
        }
        let catch_up = self.catch_up(restore.as_ref().map_or(0, |m| m.checkpoint));
        self.ckpt.begin_catch_up(self.attempt, &catch_up);
        let catch_up: Vec<CatchUp> = catch_up.into_iter().map(|c| CatchUp { checkpoint: c.checkpoint, positions: c.positions }).collect();
        let restore = restore.map(|m| Restore { checkpoint: m.checkpoint, handles: m.tasks });
        tracing::info!(
            attempt = self.attempt,
            restore = ?restore.as_ref().map(|r| r.checkpoint),
            catch_up = ?catch_up.iter().map(|c| c.checkpoint).collect::<Vec<_>>(),
            "deploying"
        );
        let by_tm: BTreeMap<String, Vec<u32>> = placement.iter().fold(BTreeMap::new(), |mut m, a| {
            m.entry(a.taskmanager.clone()).or_insert_with(Vec::new).push(a.subtask);
            m
        });
        let deployments = by_tm
            .into_iter()
            .map(|(tm, local)| {
                let d = Deployment {
                    attempt: self.attempt,
                    leader_epoch: self.leader_epoch,
                    job: self.cfg.job.clone(),
                    assignments: placement.clone(),
                    local,
                    restore: restore.clone(),
                    catch_up: catch_up.clone(),
                };
                (tm, d)
            })
            .collect();
        // Sent once the attempt is recorded (HA): a new leader continues above it, so an
        // attempt number never names two deployments.
        self.status_dirty = true;
        self.ops.push_back(HaOp { records: Vec::new(), then: Then::Deploy { attempt: self.attempt, deployments } });
        self.previous_placement.clone_from(&placement);
        self.placement = placement;
        self.deployed.clear();
    }

    /// The completed checkpoints newer than `restored` (0: none) to re-take at their cuts
    /// (see [`crate::jobmanager::catch_up`]); `source_lines` holds the restored positions.
    /// None for a source that cannot replay (socket) or without alignment (at-least-once).
    fn catch_up(&self, restored: u64) -> Vec<crate::cuts::Cut> {
        let job = &self.cfg.job;
        if job.input.socket.is_some() || job.delivery != Delivery::ExactlyOnce {
            return Vec::new();
        }
        if Sabotage::from_env() == Some(Sabotage::NoCatchUp) {
            return Vec::new();
        }
        let from: Vec<u64> = (0..self.p()).map(|i| self.source_lines.get(&i).copied().unwrap_or(0)).collect();
        let recorded = catch_up::recorded_cuts(&self.cfg.data_dir, &job.job_id, restored, self.restore_ceiling);
        let plan = catch_up::plan(restored, &from, &recorded);
        if !plan.is_empty() {
            tracing::warn!(
                restored,
                catch_up = ?plan.iter().map(|c| c.checkpoint).collect::<Vec<_>>(),
                "newer completed checkpoints are unusable: re-taking them at their cuts before any new checkpoint"
            );
        }
        plan
    }

    /// The checkpoint to restore: the newest intact one not above the restore ceiling.
    #[cfg(test)]
    pub(super) fn restore_point(&self) -> Option<Metadata> {
        snapshot::latest_valid_keeping(&self.cfg.data_dir, &self.cfg.job.job_id, self.restore_ceiling, |_| false).map(|(m, _)| m)
    }

    /// The next attempt's restore plan once it is known: starts a lookup, or picks up the
    /// running one's result. The first call waits [`LOOKUP_WAIT`] for it (a small
    /// checkpoint on a local disk is checked well within that, so the deployment goes out
    /// in the same step); later calls only look.
    fn restore_plan(&mut self) -> Option<RestorePlan> {
        if self.lookup.as_ref().is_some_and(|l| l.ceiling != self.restore_ceiling) {
            self.lookup = None; // the ceiling moved (HA): the running lookup answers another question
        }
        let (data, job, ceiling) = (&self.cfg.data_dir, &self.cfg.job.job_id, self.restore_ceiling);
        let lookup = self.lookup.get_or_insert_with(|| RestoreLookup::start(data, job, ceiling));
        let got = if std::mem::replace(&mut lookup.waited, true) {
            lookup.rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            lookup.rx.recv_timeout(LOOKUP_WAIT)
        };
        match got {
            Ok(plan) => {
                self.lookup = None;
                Some(plan)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                tracing::warn!("the restore point lookup ended without an answer; looking again");
                self.lookup = None;
                None
            }
        }
    }
}

/// How long the first [`JobMaster::restore_plan`] call waits for its lookup.
const LOOKUP_WAIT: Duration = Duration::from_millis(50);

/// A restore point being looked up on its own thread. Checking a checkpoint reads and
/// checksums every snapshot in it: on remote-like storage (20 ms per operation, 50 MB/s)
/// four 3.6 MB states took over two seconds, and a master doing that on its loop sent no
/// heartbeats and read none: every taskmanager was declared lost at every restart, and
/// every taskmanager declared its jobmanager lost, until the restart delay had grown past
/// the stall.
pub(super) struct RestoreLookup {
    /// The ceiling asked for.
    ceiling: Option<u64>,
    rx: mpsc::Receiver<RestorePlan>,
    /// The first look (which may wait) happened.
    waited: bool,
}

impl RestoreLookup {
    fn start(data: &Path, job: &str, ceiling: Option<u64>) -> RestoreLookup {
        let (tx, rx) = mpsc::channel();
        let (data, job): (PathBuf, String) = (data.to_path_buf(), job.to_string());
        // A plain thread: restarts are rare, and the master runs without a runtime in tests.
        let spawned = std::thread::Builder::new().name("restore-lookup".into()).spawn(move || {
            let _ = tx.send(RestorePlan::look_up(&data, &job, ceiling));
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the restore point lookup: {e}");
        }
        RestoreLookup { ceiling, rx, waited: false }
    }
}

/// What a restart restores: the checkpoint, and its sources' positions.
pub(super) struct RestorePlan {
    restore: Option<Metadata>,
    source_lines: HashMap<u32, u64>,
}

impl RestorePlan {
    fn look_up(data: &Path, job: &str, ceiling: Option<u64>) -> RestorePlan {
        let is_source = |t: TaskId| matches!(t, TaskId::Source(_));
        let Some((m, sources)) = snapshot::latest_valid_keeping(data, job, ceiling, is_source) else {
            return RestorePlan { restore: None, source_lines: HashMap::new() };
        };
        let mut source_lines = HashMap::new();
        for (t, payload) in sources {
            if let (TaskId::Source(i), Ok(s)) = (t, serde_json::from_slice::<SourceState>(&payload)) {
                source_lines.insert(i, s.lines);
            }
        }
        RestorePlan { restore: Some(m), source_lines }
    }
}

/// Places pipelines `0..p` on taskmanagers `(id, data address, slots)`. A pipeline first
/// goes back to its taskmanager in `previous` when that one is still here with a free
/// slot (task-local recovery); the others are spread, most free slots first, as Flink's
/// `cluster.evenly-spread-out-slots`. The caller has checked there are `p` slots.
pub(super) fn place(mut free: Vec<(String, String, u32)>, p: u32, previous: &[Assignment]) -> Vec<Assignment> {
    let mut placed: BTreeMap<u32, Assignment> = BTreeMap::new();
    for a in previous.iter().filter(|a| a.subtask < p) {
        if let Some(slot) = free.iter_mut().find(|f| f.0 == a.taskmanager && f.2 > 0) {
            slot.2 -= 1;
            placed.insert(a.subtask, Assignment { subtask: a.subtask, taskmanager: slot.0.clone(), data_address: slot.1.clone() });
        }
    }
    for subtask in 0..p {
        if placed.contains_key(&subtask) {
            continue;
        }
        free.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let slot = &mut free[0];
        slot.2 -= 1;
        placed.insert(subtask, Assignment { subtask, taskmanager: slot.0.clone(), data_address: slot.1.clone() });
    }
    placed.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tms(slots: &[(&str, u32)]) -> Vec<(String, String, u32)> {
        slots.iter().map(|(id, n)| (id.to_string(), format!("{id}:6121"), *n)).collect()
    }

    fn on(placement: &[Assignment]) -> Vec<&str> {
        placement.iter().map(|a| a.taskmanager.as_str()).collect()
    }

    #[test]
    fn without_a_previous_placement_pipelines_are_spread() {
        let p = place(tms(&[("tm1", 2), ("tm2", 2), ("tm3", 2)]), 4, &[]);
        assert_eq!(on(&p), ["tm1", "tm2", "tm3", "tm1"]);
        assert_eq!(p.iter().map(|a| a.subtask).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn pipelines_go_back_to_their_previous_taskmanager_when_it_has_a_slot() {
        // The previous attempt: 0 and 3 on tm3, 1 on tm1, 2 on tm2 (not the spread order).
        let prev = place(tms(&[("tm1", 1), ("tm2", 1), ("tm3", 2)]), 4, &[]);
        let prev: Vec<Assignment> = [(0, "tm3"), (1, "tm1"), (2, "tm2"), (3, "tm3")]
            .iter()
            .map(|(s, tm)| Assignment { subtask: *s, taskmanager: tm.to_string(), data_address: prev[0].data_address.clone() })
            .collect();
        let p = place(tms(&[("tm1", 2), ("tm2", 2), ("tm3", 2)]), 4, &prev);
        assert_eq!(on(&p), ["tm3", "tm1", "tm2", "tm3"]);
        assert_eq!(p[0].data_address, "tm3:6121", "the address is the taskmanager's current one");

        // tm2 is gone: only its pipeline moves, to the taskmanager with most free slots.
        let p = place(tms(&[("tm1", 2), ("tm3", 2), ("tm4", 2)]), 4, &prev);
        assert_eq!(on(&p), ["tm3", "tm1", "tm4", "tm3"]);

        // tm3 came back with one slot: one of its two pipelines moves.
        let p = place(tms(&[("tm1", 2), ("tm2", 2), ("tm3", 1)]), 4, &prev);
        assert_eq!(on(&p), ["tm3", "tm1", "tm2", "tm1"]);
    }
}
