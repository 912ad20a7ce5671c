//! The master's side of high availability ([`crate::ha`]). Steps others must be able to
//! rely on after a failover wait in a queue of [`HaOp`]s: `next_op` hands out the next one
//! (a changed job status rides along), `op_done` acts once its records are durable —
//! triggers a reserved checkpoint id, sends a recorded attempt's deployments, tells the sinks
//! of a published checkpoint — or gives it up. `resume` continues the job where a previous
//! leader left it; `step_down` ends a leadership.

use super::JobMaster;
use crate::api::{self, FailureEvent, JobState};
use crate::ha::{self, HaError, JobStatusRecord, Record};
use crate::jobmanager::ops::{HaOp, Then};
use crate::snapshot;
use crate::wire::JmToTm;
use std::time::Duration;
use tokio::time::Instant;

impl JobMaster {
    /// Takeover after a failover: continue the job where the previous leader left it, from
    /// what it made durable in HA storage (see [`crate::ha`]).
    pub fn resume(&mut self, rec: &ha::Recovered) {
        let pointer = rec.checkpoint.map(|p| p.checkpoint);
        self.restore_ceiling = Some(pointer.unwrap_or(0));
        self.published = rec.checkpoint;
        self.ckpt.bump_past(rec.checkpoint_counter.max(pointer.unwrap_or(0)));
        let Some(st) = &rec.status else { return };
        // A job that cannot start here (its input file is missing) stays FAILED, with the
        // reason, whatever the previous leader recorded.
        let local_failure = (self.state == JobState::Failed).then(|| self.failure_cause.clone()).flatten();
        self.attempt = st.attempt;
        self.restarts = st.restarts;
        self.start_ms = st.start_ms;
        self.history = st.history.clone();
        self.failures = st.failures.clone();
        self.failure_cause = st.failure_cause.clone();
        self.status_dirty = true;
        if let Some(cause) = local_failure {
            self.failure_cause = Some(cause.clone());
            self.set_state(JobState::Failed, &cause);
            self.refresh_view();
            return;
        }
        if st.state.is_terminal() {
            // Flink's JobResultStore: a job that ended is not run again by the next leader.
            self.state = st.state;
            tracing::info!(state = ?st.state, "the job already ended under leader {}", st.leader);
            self.refresh_view();
            return;
        }
        if st.attempt == 0 && st.state == JobState::Created {
            return; // the previous leader never deployed: nothing to recover from
        }
        let cause = format!(
            "jobmanager failover: {} took over from {} (epoch {} -> {}); restoring checkpoint {}",
            self.cfg.id,
            st.leader,
            st.epoch,
            self.leader_epoch,
            pointer.map(|p| p.to_string()).unwrap_or_else(|| "none (replay from the start)".into())
        );
        self.failures.push(FailureEvent {
            at_ms: api::now_ms(),
            attempt: self.attempt,
            taskmanager: None,
            jobmanager: Some(st.leader.clone()),
            cause: cause.clone(),
        });
        self.failure_cause = Some(cause.clone());
        self.restarts += 1;
        self.set_state(JobState::Restarting, &cause);
        self.refresh_view();
    }

    /// What HA storage keeps of the job's status.
    fn status_record(&self) -> JobStatusRecord {
        let mut r = JobStatusRecord {
            leader: self.cfg.id.clone(),
            epoch: self.leader_epoch,
            state: self.state,
            attempt: self.attempt,
            restarts: self.restarts,
            start_ms: self.start_ms,
            failure_cause: self.failure_cause.clone(),
            history: self.history.clone(),
            failures: self.failures.clone(),
        };
        r.truncate();
        r
    }

    /// The next step that needs HA records written first. With HA, a changed status rides
    /// along (or goes alone); without HA there is nothing to write.
    pub fn next_op(&mut self) -> Option<HaOp> {
        let mut op = self.ops.pop_front();
        if self.cfg.ha.is_some() && self.status_dirty {
            self.status_dirty = false;
            let status = Record::Status(Box::new(self.status_record()));
            match &mut op {
                Some(op) => op.records.push(status),
                None => op = Some(HaOp { records: vec![status], then: Then::Nothing }),
            }
        }
        op
    }

    /// Completes `op` once its records were written (`Ok`), or gives it up (`Err`: etcd
    /// unavailable; the caller steps down itself on [`HaError::NotLeader`]).
    pub fn op_done(&mut self, op: HaOp, result: Result<(), HaError>) {
        if let Err(e) = &result {
            tracing::warn!("HA storage: {e}");
            if op.records.iter().any(|r| matches!(r, Record::Status(_))) {
                self.status_dirty = true;
            }
        }
        let ok = result.is_ok();
        match op.then {
            Then::Nothing => {}
            Then::Trigger { attempt, checkpoint } => {
                if !ok {
                    if self.ckpt.pending.as_ref().is_some_and(|p| p.id == checkpoint) {
                        self.ckpt.abort("its id could not be reserved in HA storage");
                    }
                } else if attempt == self.attempt && self.ckpt.pending.as_ref().is_some_and(|p| p.id == checkpoint) {
                    self.broadcast(JmToTm::Trigger { attempt, checkpoint, leader_epoch: self.leader_epoch });
                }
            }
            Then::Deploy { attempt, deployments } => {
                if attempt != self.attempt || self.placement.is_empty() {
                    return; // the attempt failed before it went out
                }
                if !ok {
                    // Not recorded, so not sent: try again shortly.
                    self.placement.clear();
                    self.restart_at = Some(Instant::now() + Duration::from_millis(500));
                    return;
                }
                for (tm, d) in deployments {
                    if let Some(t) = self.tms.get(&tm) {
                        let _ = t.tx.send(JmToTm::Deploy(Box::new(d)));
                    }
                }
            }
            Then::Complete { metadata, is_final, catch_up, attempt } => {
                let id = metadata.checkpoint;
                if !ok {
                    // Flink discards a checkpoint its CompletedCheckpointStore cannot store:
                    // without the `_metadata` it is an incomplete directory, never restored.
                    let meta = snapshot::checkpoint_dir(&self.cfg.data_dir, &self.cfg.job.job_id, id).join("_metadata");
                    if let Err(e) = std::fs::remove_file(&meta) {
                        tracing::warn!("cannot discard {}: {e}", meta.display());
                    }
                    self.ckpt.retract(id);
                    if catch_up && attempt == self.attempt {
                        // Regular checkpoints must not follow a catch-up that did not finish.
                        self.fail(None, format!("catch-up checkpoint {id} could not be published; the next attempt redoes the catch-up"));
                    }
                    return;
                }
                for r in &op.records {
                    if let Record::LatestCheckpoint(p) = r {
                        if self.published.is_none_or(|q| q.checkpoint <= p.checkpoint) {
                            self.published = Some(*p);
                        }
                    }
                }
                tracing::info!(checkpoint = id, records_in = metadata.records_in, catch_up, "checkpoint complete");
                if let Some(a) = &mut self.adaptive {
                    // C is what the checkpoint took from processing (the pipeline's stall
                    // and its writers' CPU), L trigger to commit point: see
                    // `jobmanager::interval`.
                    let cost = self.ckpt.last_cost.filter(|s| s.0 == id).map_or(Duration::ZERO, |s| s.1);
                    a.cost.observe(cost);
                    a.latency.observe(Duration::from_millis(metadata.complete_ms.saturating_sub(metadata.trigger_ms)));
                    self.adapt_interval();
                }
                // The verdict's evidence: the cut of every checkpoint that counts as
                // complete (past its commit point), kept when checkpoints are pruned. A
                // failed append loses a check, never the job. A catch-up checkpoint has the
                // cut recorded the first time (it is where it was re-taken): one line per
                // checkpoint, so it is appended only when that line is missing.
                let cut = crate::cuts::Cut { checkpoint: id, positions: metadata.cut.clone() };
                let path = crate::cuts::path(&self.cfg.data_dir, &self.cfg.job.job_id);
                let recorded = catch_up && crate::cuts::read(&path).is_ok_and(|cuts| cuts.iter().any(|c| c.checkpoint == id));
                if !recorded {
                    if let Err(e) = crate::cuts::append(&path, &cut) {
                        tracing::warn!(checkpoint = id, "cannot record the checkpoint's cut: {e}");
                    }
                }
                self.restore_ceiling = self.restore_ceiling.map(|c| c.max(id));
                self.broadcast(JmToTm::Complete { attempt, checkpoint: id, leader_epoch: self.leader_epoch });
                snapshot::prune(&self.cfg.data_dir, &self.cfg.job.job_id, self.cfg.job.checkpoints_retained);
                if is_final && attempt == self.attempt {
                    self.final_checkpoint = Some(id);
                }
            }
        }
    }

    /// Leadership is lost: cancel the job on the taskmanagers and drop their connections
    /// (they find the next leader through etcd). The master is not used afterwards.
    pub fn step_down(&mut self, why: &str) {
        tracing::warn!(epoch = self.leader_epoch, "stepping down: {why}");
        self.broadcast(JmToTm::Cancel { attempt: self.attempt, leader_epoch: self.leader_epoch });
        for (_, tm) in std::mem::take(&mut self.tms) {
            tm.reader.abort();
        }
        // Nothing queued was made durable: give every op up as refused, which discards the
        // `_metadata` of completions whose pointer was never published (a deposed leader
        // must not leave a checkpoint that looks complete on disk).
        while let Some(op) = self.ops.pop_front() {
            self.op_done(op, Err(HaError::NotLeader(why.to_string())));
        }
        self.placement.clear();
    }
}
