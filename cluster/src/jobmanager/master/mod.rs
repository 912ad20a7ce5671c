//! The job's master: one actor ([`JobMaster`]) holds all of the job's state. Connection
//! tasks ([`super::rpc`]) turn frames into [`Event`]s and a tick drives timers; every
//! decision happens in `handle_event`/`tick`, apart from I/O.
//!
//! # Layout
//! - here: the state; registrations, heartbeats and task messages; failures and restart
//!   decisions; the timers (heartbeats, the restart delay, checkpoint trigger and timeout);
//!   the checkpoint interval in force (fixed, or re-chosen after every completed checkpoint
//!   and job failure by [`super::interval`]); the refresh of the REST view.
//! - `schedule.rs`: deploying the next attempt: placement on slots, the checkpoint to
//!   restore, the deployments.
//! - `failover.rs`: the master's side of HA: the queue of [`HaOp`]s and what follows once
//!   they are durable, the takeover from a previous leader, stepping down.
//! - `tests.rs`: the master driven without I/O, its HA ops settled by the test.

mod failover;
mod schedule;
#[cfg(test)]
mod tests;

use super::attempts;
use super::checkpoints::Coordinator;
use super::config::JmConfig;
use super::interval::Adaptive;
use super::ops::{HaOp, Then};
use super::rpc::Event;
use super::view::{initial_view, SharedView};
use crate::api::{self, FailureEvent, JobDetails, JobState, Overview, StateChange, TaskManagerInfo};
use crate::ha::{CheckpointPointer, Record};
use crate::restart::{Decision, RestartTracker};
use crate::wire::{Assignment, JmToTm, TaskId, TaskMetrics, TmToJm};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Restore records kept for REST (a few per task and attempt).
const MAX_RESTORES_KEPT: usize = 4096;

struct Tm {
    id: String,
    conn: u64,
    data_address: String,
    slots: u32,
    tx: mpsc::UnboundedSender<JmToTm>,
    reader: AbortHandle,
    last_heard: Instant,
    registered_ms: u64,
}

/// The job's master: state machine, scheduler, checkpoint coordinator.
pub struct JobMaster {
    cfg: JmConfig,
    leader_epoch: u64,
    /// Steps waiting for their HA records to be durable.
    ops: VecDeque<HaOp>,
    /// The status changed since it was last written to HA storage.
    status_dirty: bool,
    /// Restores never use a checkpoint newer than this (HA: the latest *published* one; a
    /// checkpoint whose `_metadata` exists but whose pointer never made it to etcd is not
    /// complete). `None`: the latest intact checkpoint on disk (no HA).
    restore_ceiling: Option<u64>,
    /// The next attempt's restore point, being looked up off the loop (`schedule.rs`).
    lookup: Option<schedule::RestoreLookup>,
    /// HA: the checkpoint pointer last published (by this leader or, at takeover, the one
    /// before it); a catch-up checkpoint never publishes an older one over it.
    published: Option<CheckpointPointer>,
    state: JobState,
    attempt: u64,
    restarts: u64,
    tms: BTreeMap<String, Tm>,
    /// Pipelines of the current attempt -> taskmanager id.
    placement: Vec<Assignment>,
    /// The latest attempt's placement, kept after it failed: task-local recovery puts
    /// pipelines back where their local snapshot copies are.
    previous_placement: Vec<Assignment>,
    /// How tasks restored their state, per attempt (as the taskmanagers reported it).
    restores: Vec<api::TaskRestore>,
    deployed: BTreeSet<String>,
    restart: RestartTracker,
    restart_at: Option<Instant>,
    ckpt: Coordinator,
    sources_ended: BTreeSet<u32>,
    final_checkpoint: Option<u64>,
    committed_final: BTreeSet<u32>,
    /// Latest per-task metrics of the current attempt; restored source positions until then.
    source_lines: HashMap<u32, u64>,
    count_words: HashMap<u32, u64>,
    history: Vec<StateChange>,
    failures: Vec<FailureEvent>,
    failure_cause: Option<String>,
    start_ms: u64,
    last_hb_sent: Instant,
    view: SharedView,
    /// The adaptive interval's estimates and choice (`None`: a fixed interval).
    adaptive: Option<Adaptive>,
    /// When this master started: the exposure time of the failure-rate estimate.
    started: Instant,
}

impl JobMaster {
    pub fn new(cfg: JmConfig, leader_epoch: u64) -> Self {
        let view = Arc::new(RwLock::new(initial_view(&cfg, true, None)));
        Self::with_view(cfg, leader_epoch, view)
    }

    /// A master that publishes its REST view into `view` (shared with the REST server,
    /// which outlives leaderships).
    pub fn with_view(cfg: JmConfig, leader_epoch: u64, view: SharedView) -> Self {
        let ckpt = Coordinator::new(&cfg.data_dir, &cfg.job.job_id);
        let restart = RestartTracker::new(cfg.job.restart.clone(), api::now_ms());
        let start_ms = api::now_ms();
        let restore_ceiling = if cfg.ha.is_some() { Some(0) } else { None };
        let mut jm = JobMaster {
            leader_epoch,
            ops: VecDeque::new(),
            status_dirty: true,
            restore_ceiling,
            lookup: None,
            published: None,
            state: JobState::Created,
            attempt: 0,
            restarts: 0,
            tms: BTreeMap::new(),
            placement: Vec::new(),
            previous_placement: Vec::new(),
            restores: Vec::new(),
            deployed: BTreeSet::new(),
            restart,
            restart_at: None,
            ckpt,
            sources_ended: BTreeSet::new(),
            final_checkpoint: None,
            committed_final: BTreeSet::new(),
            source_lines: HashMap::new(),
            count_words: HashMap::new(),
            history: Vec::new(),
            failures: Vec::new(),
            failure_cause: None,
            start_ms,
            last_hb_sent: Instant::now(),
            view,
            adaptive: cfg.job.checkpoint_interval.adaptive().cloned().map(Adaptive::new),
            started: Instant::now(),
            cfg,
        };
        jm.adapt_interval();
        if jm.cfg.ha.is_none() {
            // A restarted jobmanager continues the attempts of the one before it (HA keeps
            // them in etcd instead): attempt numbers name output parts and fence tasks.
            jm.attempt = attempts::recorded(&jm.cfg.data_dir, &jm.cfg.job.job_id);
        }
        jm.set_state(JobState::Created, "job submitted");
        jm.check_input();
        jm.refresh_view();
        jm
    }

    pub fn view(&self) -> SharedView {
        self.view.clone()
    }

    fn p(&self) -> u32 {
        self.cfg.job.parallelism
    }

    fn set_state(&mut self, s: JobState, reason: &str) {
        tracing::info!(state = ?s, attempt = self.attempt, "job {}: {reason}", self.cfg.job.job_id);
        self.state = s;
        self.status_dirty = true;
        self.history.push(StateChange { state: s, at_ms: api::now_ms(), attempt: self.attempt, reason: reason.to_string() });
    }

    /// A missing input file fails the job at once, with the reason visible in REST.
    fn check_input(&mut self) {
        if let Some(f) = &self.cfg.job.input.file {
            let path = self.cfg.data_dir.join(&f.path);
            if !path.exists() {
                let cause = format!("input file {} does not exist", path.display());
                self.failure_cause = Some(cause.clone());
                self.set_state(JobState::Failed, &cause);
            }
        }
    }

    /// Handles one event from a connection.
    pub fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::Registered { conn, id, data_address, slots, tx, reader } => {
                if let Some(old) = self.tms.remove(&id) {
                    // The same taskmanager registered again (it restarted before we noticed).
                    old.reader.abort();
                    self.tm_lost(old, "re-registered (the previous instance is gone)".into());
                }
                let _ = tx.send(JmToTm::Registered {
                    jobmanager: self.cfg.id.clone(),
                    leader_epoch: self.leader_epoch,
                    heartbeat_interval_ms: self.cfg.job.heartbeat.interval.as_millis() as u64,
                    heartbeat_timeout_ms: self.cfg.job.heartbeat.timeout.as_millis() as u64,
                });
                tracing::info!(%id, %data_address, slots, "taskmanager registered");
                self.tms.insert(
                    id.clone(),
                    Tm { id, conn, data_address, slots, tx, reader, last_heard: Instant::now(), registered_ms: api::now_ms() },
                );
            }
            Event::Lost { conn, cause } => {
                if let Some(id) = self.tms.values().find(|t| t.conn == conn).map(|t| t.id.clone()) {
                    if let Some(tm) = self.tms.remove(&id) {
                        self.tm_lost(tm, cause);
                    }
                }
            }
            Event::Message { conn, msg } => {
                let Some(tm) = self.tms.values_mut().find(|t| t.conn == conn) else { return };
                tm.last_heard = Instant::now();
                let tm_id = tm.id.clone();
                self.on_message(&tm_id, msg);
            }
        }
        self.schedule();
    }

    fn on_message(&mut self, tm: &str, msg: TmToJm) {
        let current = self.attempt;
        match msg {
            TmToJm::Register { .. } => {}
            TmToJm::Heartbeat { metrics } => self.on_metrics(metrics),
            TmToJm::Deployed { attempt, restores } if attempt == current => {
                self.deployed.insert(tm.to_string());
                self.restores.extend(restores);
                // Bounded: a job that restarts forever keeps only the newest restores.
                let excess = self.restores.len().saturating_sub(MAX_RESTORES_KEPT);
                self.restores.drain(..excess);
                let needed: BTreeSet<String> = self.placement.iter().map(|a| a.taskmanager.clone()).collect();
                let deploying = self.state == JobState::Restarting || self.state == JobState::Created;
                if deploying && needed.is_subset(&self.deployed) {
                    self.set_state(JobState::Running, &format!("attempt {current} deployed on {} taskmanagers", needed.len()));
                }
            }
            TmToJm::Ack { attempt, checkpoint, task, handle, lines, stall_us, cpu_us } => {
                let expected = 2 * self.p() as usize;
                let (data, job) = (&self.cfg.data_dir, &self.cfg.job.job_id);
                for done in self.ckpt.ack(data, job, attempt, checkpoint, task, handle, lines, (stall_us, cpu_us), expected) {
                    let c = match done {
                        Ok(c) => c,
                        Err(why) => {
                            self.fail(None, format!("{why}; the next attempt redoes the catch-up"));
                            break;
                        }
                    };
                    // `_metadata` is written; the sinks hear of it only once the pointer is
                    // published (HA) — the fence of the commit path. A catch-up checkpoint
                    // older than the published one leaves the pointer as it is (it must
                    // never go backwards), written again under this leader's fence.
                    let m = c.metadata;
                    let fresh = CheckpointPointer { checkpoint: m.checkpoint, epoch: self.leader_epoch, completed_ms: m.complete_ms };
                    let pointer = self.published.filter(|p| p.checkpoint > m.checkpoint).unwrap_or(fresh);
                    self.ops.push_back(HaOp {
                        records: vec![Record::LatestCheckpoint(pointer)],
                        then: Then::Complete { metadata: Box::new(m), is_final: c.is_final, catch_up: c.catch_up, attempt },
                    });
                }
            }
            TmToJm::Decline { attempt, checkpoint, task, reason } if attempt == current => {
                if self.ckpt.is_catch_up(checkpoint) {
                    // A catch-up checkpoint cannot be skipped: a later one at another cut
                    // would commit over what may be committed already.
                    self.fail(Some(tm.to_string()), format!("{task} declined catch-up checkpoint {checkpoint}: {reason}; the next attempt redoes the catch-up"));
                } else if self.ckpt.pending.as_ref().is_some_and(|p| p.id == checkpoint) {
                    self.ckpt.abort(&format!("{task} declined: {reason}"));
                }
            }
            TmToJm::SourceEnded { attempt, subtask, lines } if attempt == current => {
                self.sources_ended.insert(subtask);
                self.source_lines.insert(subtask, lines);
            }
            TmToJm::Committed { attempt, subtask, checkpoint } if attempt == current => {
                if self.final_checkpoint.is_some_and(|f| checkpoint >= f) {
                    self.committed_final.insert(subtask);
                    if self.committed_final.len() as u32 == self.p() && self.state == JobState::Running {
                        self.set_state(JobState::Finished, "all input processed, final checkpoint committed");
                        self.broadcast(JmToTm::Finish { attempt, leader_epoch: self.leader_epoch });
                    }
                }
            }
            TmToJm::TaskFailed { attempt, task, cause } if attempt == current => {
                self.fail(Some(tm.to_string()), format!("{task} on {tm} failed: {cause}"));
            }
            other => tracing::debug!(?other, "ignoring a message of another attempt"),
        }
    }

    fn on_metrics(&mut self, metrics: Vec<TaskMetrics>) {
        for m in metrics {
            if m.attempt != self.attempt {
                continue;
            }
            match m.task {
                Some(TaskId::Source(i)) => {
                    self.source_lines.insert(i, m.lines);
                }
                Some(TaskId::Count(i)) => {
                    self.count_words.insert(i, m.words);
                }
                None => {}
            }
        }
    }

    fn tm_lost(&mut self, tm: Tm, cause: String) {
        tm.reader.abort();
        tracing::warn!(tm = %tm.id, "taskmanager lost: {cause}");
        let hosts_tasks = self.placement.iter().any(|a| a.taskmanager == tm.id);
        self.failures.push(FailureEvent {
            at_ms: api::now_ms(),
            attempt: self.attempt,
            taskmanager: Some(tm.id.clone()),
            jobmanager: None,
            cause: format!("taskmanager {} lost: {cause}", tm.id),
        });
        self.status_dirty = true;
        if hosts_tasks && matches!(self.state, JobState::Running | JobState::Restarting | JobState::Created) {
            self.fail(None, format!("taskmanager {} lost: {cause}", tm.id));
        }
    }

    /// A failure of the current attempt: cancel everything, then restart per the strategy.
    fn fail(&mut self, tm: Option<String>, cause: String) {
        if self.state.is_terminal() {
            return;
        }
        if tm.is_some() {
            self.failures.push(FailureEvent { at_ms: api::now_ms(), attempt: self.attempt, taskmanager: tm, jobmanager: None, cause: cause.clone() });
        }
        if self.state == JobState::Restarting && self.placement.is_empty() {
            // This attempt already failed and is cancelled: more of its tasks reporting
            // the same fault is not a new failure.
            return;
        }
        self.broadcast(JmToTm::Cancel { attempt: self.attempt, leader_epoch: self.leader_epoch });
        self.ckpt.abort("the attempt failed");
        if let Some(a) = &mut self.adaptive {
            // One job failure, however many tasks report it (the early return above).
            a.failures.failed();
        }
        self.adapt_interval();
        self.placement.clear();
        self.deployed.clear();
        self.sources_ended.clear();
        self.final_checkpoint = None;
        self.committed_final.clear();
        self.failure_cause = Some(cause.clone());
        match self.restart.on_failure(Instant::now()) {
            Decision::RestartAfter(d) => {
                self.restarts += 1;
                // A lookup still running (a failure while restarting) predates this failure.
                self.lookup = None;
                self.restart_at = Some(Instant::now() + d);
                self.set_state(JobState::Restarting, &format!("{cause}; restarting in {} ms", d.as_millis()));
            }
            Decision::GiveUp(why) => {
                self.set_state(JobState::Failed, &format!("{cause}; {why}"));
            }
        }
    }

    fn broadcast(&self, m: JmToTm) {
        for tm in self.tms.values() {
            let _ = tm.tx.send(m.clone());
        }
    }

    /// Timers: heartbeats, restart delay, checkpoint trigger and timeout.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let hb = self.cfg.job.heartbeat.clone();
        let dead: Vec<String> =
            self.tms.values().filter(|t| now.duration_since(t.last_heard) > hb.timeout).map(|t| t.id.clone()).collect();
        for id in dead {
            if let Some(tm) = self.tms.remove(&id) {
                let ms = now.duration_since(tm.last_heard).as_millis();
                self.tm_lost(tm, format!("heartbeat timeout: no heartbeat for {ms} ms"));
            }
        }
        if now.duration_since(self.last_hb_sent) >= hb.interval {
            self.last_hb_sent = now;
            self.broadcast(JmToTm::Heartbeat);
        }
        self.schedule();

        if self.state == JobState::Running {
            if let Some(p) = &self.ckpt.pending {
                // A catch-up checkpoint is not timed out: aborting it could not help (the
                // next checkpoint must be it, at its cut), and the replay to its cut takes
                // as long as the input took the first time.
                if p.catch_up.is_none() && now.duration_since(p.started) > self.cfg.job.checkpoint_timeout {
                    self.ckpt.abort("timed out");
                }
            }
            let all_ended = self.sources_ended.len() as u32 == self.p();
            if self.ckpt.pending.is_none() && self.final_checkpoint.is_none() {
                let interval = self.checkpoint_interval();
                let due = !interval.is_zero() && self.ckpt.last_trigger.is_none_or(|t| now.duration_since(t) >= interval);
                if all_ended || due {
                    let id = self.ckpt.trigger(self.attempt, all_ended);
                    tracing::debug!(checkpoint = id, is_final = all_ended, "triggering checkpoint");
                    // Flink's CheckpointIDCounter: the id is reserved in HA storage before any
                    // barrier carries it, so no later leader reuses it.
                    self.ops.push_back(HaOp {
                        records: vec![Record::CheckpointCounter(id)],
                        then: Then::Trigger { attempt: self.attempt, checkpoint: id },
                    });
                }
            }
        }
        self.refresh_view();
    }

    /// The interval in force: the fixed one, or the adaptive one's latest choice.
    fn checkpoint_interval(&self) -> std::time::Duration {
        match &self.adaptive {
            Some(a) => a.current,
            None => self.cfg.job.checkpoint_interval.nominal(),
        }
    }

    /// Re-chooses an adaptive interval from the estimates (after a checkpoint completed or
    /// the job failed); a fixed interval stays as it is.
    pub(super) fn adapt_interval(&mut self) {
        let exposure = self.started.elapsed();
        if let Some(a) = &mut self.adaptive {
            let before = a.current;
            let now = a.update(exposure, api::now_ms());
            if now != before {
                tracing::debug!(interval_ms = now.as_millis() as u64, limit = %a.history.last().map(|p| p.limit.to_string()).unwrap_or_default(), "checkpoint interval adapted");
            }
        }
    }

    fn interval_info(&self) -> api::IntervalInfo {
        let a = self.adaptive.as_ref();
        api::IntervalInfo {
            adaptive: a.is_some(),
            current_ms: self.checkpoint_interval().as_millis() as u64,
            min_ms: a.map(|a| a.cfg.min.as_millis() as u64),
            max_ms: a.map(|a| a.cfg.max.as_millis() as u64),
            history: a.map(|a| a.history.clone()).unwrap_or_default(),
        }
    }

    fn refresh_view(&self) {
        let now_ms = api::now_ms();
        let slots_total: u32 = self.tms.values().map(|t| t.slots).sum();
        let used: HashMap<&str, u32> = self.placement.iter().fold(HashMap::new(), |mut m, a| {
            *m.entry(a.taskmanager.as_str()).or_insert(0) += 1;
            m
        });
        let taskmanagers: Vec<TaskManagerInfo> = self
            .tms
            .values()
            .map(|t| TaskManagerInfo {
                id: t.id.clone(),
                data_address: t.data_address.clone(),
                slots: t.slots,
                slots_used: used.get(t.id.as_str()).copied().unwrap_or(0),
                last_heartbeat_ms_ago: t.last_heard.elapsed().as_millis() as u64,
                registered_ms: t.registered_ms,
            })
            .collect();
        let info = self.ckpt.info();
        let input_lines = match (&self.cfg.job.input.generate, &self.cfg.job.input.file) {
            (Some(g), _) => Some(g.lines),
            _ => None,
        };
        let job = JobDetails {
            id: self.cfg.job.job_id.clone(),
            state: self.state,
            attempt: self.attempt,
            restarts: self.restarts,
            parallelism: self.p(),
            records_in: self.source_lines.values().sum(),
            records_out: self.count_words.values().sum(),
            input_lines,
            last_completed_checkpoint: info.latest.as_ref().map(|c| c.id),
            checkpoints_completed: info.completed_total,
            failure_cause: self.failure_cause.clone(),
            start_ms: self.start_ms,
            history: self.history.clone(),
            failures: self.failures.clone(),
            now_ms,
            restores: self.restores.clone(),
        };
        let overview = Overview {
            jobmanager: self.cfg.id.clone(),
            leader: true,
            leader_address: Some(self.cfg.rest_url.clone()),
            leader_epoch: self.leader_epoch,
            job_id: self.cfg.job.job_id.clone(),
            job_state: self.state,
            taskmanagers: self.tms.len(),
            slots_total,
            slots_available: slots_total.saturating_sub(self.placement.len() as u32),
        };
        if let Ok(mut v) = self.view.write() {
            v.overview = overview;
            v.job = job;
            v.checkpoint_last_duration_ms = self.ckpt.last_duration_ms();
            v.checkpoints = info;
            v.taskmanagers = taskmanagers;
            v.interval = self.interval_info();
        }
    }
}
