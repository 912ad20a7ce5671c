//! Deploying the job's next attempt: once it is due (a restart delay has passed) and enough
//! slots are registered, the pipelines are spread over the taskmanagers, the checkpoint to
//! restore is picked (the newest intact one not above the restore ceiling), the attempt is
//! recorded, and its deployments are queued as an HA op: they go out once the attempt is
//! durable (`failover.rs`).

use super::JobMaster;
use crate::api::JobState;
use crate::jobmanager::attempts;
use crate::jobmanager::ops::{HaOp, Then};
use crate::snapshot::{self, Metadata};
use crate::taskmanager::source::SourceState;
use crate::wire::{Assignment, Deployment, Restore, TaskId};
use std::collections::BTreeMap;
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
        // Spread pipelines over taskmanagers (most free slots first), as Flink's
        // cluster.evenly-spread-out-slots.
        let mut free: Vec<(String, String, u32)> =
            self.tms.values().map(|t| (t.id.clone(), t.data_address.clone(), t.slots)).collect();
        let mut placement = Vec::new();
        for subtask in 0..self.p() {
            free.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            let slot = &mut free[0];
            slot.2 -= 1;
            placement.push(Assignment { subtask, taskmanager: slot.0.clone(), data_address: slot.1.clone() });
        }
        let restore = self.restore_point();
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
        self.source_lines.clear();
        self.count_words.clear();
        if let Some(m) = &restore {
            self.ckpt.restored = Some(m.checkpoint);
            self.ckpt.bump_past(m.checkpoint);
            for (t, h) in &m.tasks {
                if let TaskId::Source(i) = t {
                    if let Ok(s) = snapshot::read_task_snapshot::<SourceState>(&self.cfg.data_dir, h) {
                        self.source_lines.insert(*i, s.lines);
                    }
                }
            }
        }
        let restore = restore.map(|m| Restore { checkpoint: m.checkpoint, handles: m.tasks });
        tracing::info!(attempt = self.attempt, restore = ?restore.as_ref().map(|r| r.checkpoint), "deploying");
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
                };
                (tm, d)
            })
            .collect();
        // Sent once the attempt is recorded (HA): a new leader continues above it, so an
        // attempt number never names two deployments.
        self.status_dirty = true;
        self.ops.push_back(HaOp { records: Vec::new(), then: Then::Deploy { attempt: self.attempt, deployments } });
        self.placement = placement;
        self.deployed.clear();
    }

    /// The checkpoint to restore: the newest intact one not above the restore ceiling.
    pub(super) fn restore_point(&self) -> Option<Metadata> {
        let (data, job) = (&self.cfg.data_dir, &self.cfg.job.job_id);
        let Some(max) = self.restore_ceiling else { return snapshot::latest_valid(data, job) };
        for n in snapshot::checkpoint_ids(data, job).into_iter().rev().filter(|&n| n <= max) {
            match snapshot::load_verified(data, job, n) {
                Ok(m) => return Some(m),
                Err(e) => tracing::warn!("checkpoint {n} unusable, falling back to an older one: {e}"),
            }
        }
        None
    }
}
