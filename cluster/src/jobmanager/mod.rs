//! The jobmanager: accepts taskmanager registrations, watches heartbeats, places the job's
//! pipelines on slots, coordinates checkpoints, restarts the job on failure (per its
//! restart strategy, restoring the latest completed checkpoint), and serves REST.
//!
//! All state lives in one actor ([`JobMaster`]); connection tasks turn frames into
//! [`Event`]s, and a tick drives timers. Every decision happens in `handle_event`/`tick`,
//! apart from I/O.
//!
//! With high availability (`--etcd`, see [`crate::ha`]) the jobmanager campaigns for
//! leadership and runs a `JobMaster` only while it leads. Steps others must be able to rely
//! on after a failover — triggering a checkpoint id, deploying an attempt, telling sinks a
//! checkpoint completed — are queued as [`HaOp`]s: `run` makes their records durable
//! through a leadership-guarded etcd transaction first, and only then does the
//! `JobMaster` act ([`JobMaster::op_done`]). Without HA the ops complete at once.

pub mod attempts;
pub mod checkpoints;
pub mod rest;

use crate::api::{self, FailureEvent, JobDetails, JobState, Overview, StateChange, TaskManagerInfo};
use crate::ha::{self, CheckpointPointer, HaConfig, HaError, JobStatusRecord, LeaderInfo, Record};
use crate::restart::{Decision, RestartTracker};
use crate::snapshot::{self, Metadata};
use crate::spec::JobSpec;
use crate::taskmanager::source::SourceState;
use crate::wire::{self, Assignment, Deployment, JmToTm, Restore, TaskId, TaskMetrics, TmToJm};
use checkpoints::Coordinator;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How a jobmanager is started (`streamd jobmanager ...`).
#[derive(Debug, Clone)]
pub struct JmConfig {
    pub id: String,
    pub job: JobSpec,
    pub data_dir: PathBuf,
    pub rpc_bind: String,
    pub rest_bind: String,
    /// The RPC address taskmanagers use to reach this jobmanager (published when it leads).
    pub rpc_advertise: String,
    /// This jobmanager's REST base URL as others reach it (`http://host:port`).
    pub rest_url: String,
    /// High availability through etcd; `None`: a single jobmanager that always leads.
    pub ha: Option<HaConfig>,
}

/// A step the leader takes only once `records` are durable in HA storage (see
/// [`crate::ha`]); produced by [`JobMaster::next_op`], completed by [`JobMaster::op_done`].
#[derive(Debug)]
pub struct HaOp {
    pub records: Vec<Record>,
    then: Then,
}

/// What an [`HaOp`] does once its records are written.
#[derive(Debug)]
enum Then {
    /// Only the status record.
    Nothing,
    /// Send the triggers of a checkpoint whose id is reserved.
    Trigger { attempt: u64, checkpoint: u64 },
    /// Send the deployments of an attempt that is recorded.
    Deploy { attempt: u64, deployments: Vec<(String, Deployment)> },
    /// Tell the sinks a checkpoint completed: its pointer is published.
    Complete { metadata: Box<Metadata>, is_final: bool, attempt: u64 },
}

/// What connection tasks tell the actor.
#[derive(Debug)]
pub enum Event {
    Registered { conn: u64, id: String, data_address: String, slots: u32, tx: mpsc::UnboundedSender<JmToTm>, reader: AbortHandle },
    Message { conn: u64, msg: TmToJm },
    Lost { conn: u64, cause: String },
}

/// The REST API's view, refreshed by the actor.
#[derive(Debug, Clone)]
pub struct View {
    pub overview: Overview,
    pub job: JobDetails,
    pub checkpoints: api::CheckpointsInfo,
    pub taskmanagers: Vec<TaskManagerInfo>,
    pub checkpoint_last_duration_ms: u64,
}

pub type SharedView = Arc<RwLock<View>>;

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
    state: JobState,
    attempt: u64,
    restarts: u64,
    tms: BTreeMap<String, Tm>,
    /// Pipelines of the current attempt -> taskmanager id.
    placement: Vec<Assignment>,
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
            state: JobState::Created,
            attempt: 0,
            restarts: 0,
            tms: BTreeMap::new(),
            placement: Vec::new(),
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
            cfg,
        };
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

    /// Takeover after a failover: continue the job where the previous leader left it, from
    /// what it made durable in HA storage (see [`crate::ha`]).
    pub fn resume(&mut self, rec: &ha::Recovered) {
        let pointer = rec.checkpoint.map(|p| p.checkpoint);
        self.restore_ceiling = Some(pointer.unwrap_or(0));
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
            Then::Complete { metadata, is_final, attempt } => {
                let id = metadata.checkpoint;
                if !ok {
                    // Flink discards a checkpoint its CompletedCheckpointStore cannot store:
                    // without the `_metadata` it is an incomplete directory, never restored.
                    let meta = snapshot::checkpoint_dir(&self.cfg.data_dir, &self.cfg.job.job_id, id).join("_metadata");
                    if let Err(e) = std::fs::remove_file(&meta) {
                        tracing::warn!("cannot discard {}: {e}", meta.display());
                    }
                    self.ckpt.retract(id);
                    return;
                }
                tracing::info!(checkpoint = id, records_in = metadata.records_in, "checkpoint complete");
                // The verdict's evidence: the cut of every checkpoint that counts as
                // complete (past its commit point), kept when checkpoints are pruned. A
                // failed append loses a check, never the job.
                let cut = crate::cuts::Cut { checkpoint: id, positions: metadata.cut.clone() };
                if let Err(e) = crate::cuts::append(&crate::cuts::path(&self.cfg.data_dir, &self.cfg.job.job_id), &cut) {
                    tracing::warn!(checkpoint = id, "cannot record the checkpoint's cut: {e}");
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

    /// The checkpoint to restore: the newest intact one not above the restore ceiling.
    fn restore_point(&self) -> Option<Metadata> {
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
            TmToJm::Deployed { attempt } if attempt == current => {
                self.deployed.insert(tm.to_string());
                let needed: BTreeSet<String> = self.placement.iter().map(|a| a.taskmanager.clone()).collect();
                if self.state == JobState::Restarting || self.state == JobState::Created {
                    if needed.is_subset(&self.deployed) {
                        self.set_state(JobState::Running, &format!("attempt {current} deployed on {} taskmanagers", needed.len()));
                    }
                }
            }
            TmToJm::Ack { attempt, checkpoint, task, handle, lines } => {
                let expected = 2 * self.p() as usize;
                if let Some((m, is_final)) =
                    self.ckpt.ack(&self.cfg.data_dir, &self.cfg.job.job_id, attempt, checkpoint, task, handle, lines, expected)
                {
                    // `_metadata` is written; the sinks hear of it only once the pointer is
                    // published (HA) — the fence of the commit path.
                    let pointer = CheckpointPointer { checkpoint: m.checkpoint, epoch: self.leader_epoch, completed_ms: m.complete_ms };
                    self.ops.push_back(HaOp {
                        records: vec![Record::LatestCheckpoint(pointer)],
                        then: Then::Complete { metadata: Box::new(m), is_final, attempt },
                    });
                }
            }
            TmToJm::Decline { attempt, checkpoint, task, reason } if attempt == current => {
                if self.ckpt.pending.as_ref().is_some_and(|p| p.id == checkpoint) {
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
        self.placement.clear();
        self.deployed.clear();
        self.sources_ended.clear();
        self.final_checkpoint = None;
        self.committed_final.clear();
        self.failure_cause = Some(cause.clone());
        match self.restart.on_failure(Instant::now()) {
            Decision::RestartAfter(d) => {
                self.restarts += 1;
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

    /// Deploys the next attempt when it is due and enough slots are registered.
    fn schedule(&mut self) {
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
                if now.duration_since(p.started) > self.cfg.job.checkpoint_timeout {
                    self.ckpt.abort("timed out");
                }
            }
            let all_ended = self.sources_ended.len() as u32 == self.p();
            if self.ckpt.pending.is_none() && self.final_checkpoint.is_none() {
                let interval = self.cfg.job.checkpoint_interval;
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
        }
    }
}

fn empty_details(job: &JobSpec, start_ms: u64) -> JobDetails {
    JobDetails {
        id: job.job_id.clone(),
        state: JobState::Created,
        attempt: 0,
        restarts: 0,
        parallelism: job.parallelism,
        records_in: 0,
        records_out: 0,
        input_lines: None,
        last_completed_checkpoint: None,
        checkpoints_completed: 0,
        failure_cause: None,
        start_ms,
        history: vec![],
        failures: vec![],
        now_ms: start_ms,
    }
}

/// The REST view when no master runs: a standby (`leader: false`, pointing at `known`),
/// or a leader about to start its master.
fn initial_view(cfg: &JmConfig, leader: bool, known: Option<&LeaderInfo>) -> View {
    let now = api::now_ms();
    View {
        overview: Overview {
            jobmanager: cfg.id.clone(),
            leader,
            leader_address: if leader { Some(cfg.rest_url.clone()) } else { known.map(|l| l.rest_url.clone()) },
            leader_epoch: known.map(|l| l.epoch).unwrap_or(0),
            job_id: cfg.job.job_id.clone(),
            job_state: JobState::Created,
            taskmanagers: 0,
            slots_total: 0,
            slots_available: 0,
        },
        job: empty_details(&cfg.job, now),
        checkpoints: api::CheckpointsInfo {
            completed: vec![],
            completed_total: 0,
            failed_total: 0,
            in_progress: None,
            latest: None,
            restored: None,
        },
        taskmanagers: vec![],
        checkpoint_last_duration_ms: 0,
    }
}

/// Runs a jobmanager until `shutdown` resolves. Without HA it leads at once (epoch 1);
/// with HA it stands by, campaigns, leads while its lease holds, and steps down and
/// campaigns again when it is lost.
pub async fn run(cfg: JmConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let rpc = TcpListener::bind(&cfg.rpc_bind).await.map_err(|e| anyhow::anyhow!("cannot listen on RPC address {}: {e}", cfg.rpc_bind))?;
    let rest = TcpListener::bind(&cfg.rest_bind).await.map_err(|e| anyhow::anyhow!("cannot listen on REST address {}: {e}", cfg.rest_bind))?;
    tracing::info!(id = %cfg.id, rpc = %cfg.rpc_bind, rest = %cfg.rest_bind, job = %cfg.job.job_id, ha = cfg.ha.is_some(), "jobmanager started");
    let view: SharedView = Arc::new(RwLock::new(initial_view(&cfg, cfg.ha.is_none(), None)));
    let rest_task = tokio::spawn(rest::serve(rest, view.clone()));
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let accept = tokio::spawn(accept_loop(rpc, ev_tx));
    tokio::pin!(shutdown);
    let result = match cfg.ha.clone() {
        None => {
            let mut jm = JobMaster::with_view(cfg, 1, view);
            lead(&mut jm, &mut ev_rx, None, &mut shutdown).await;
            Ok(())
        }
        Some(ha_cfg) => run_ha(cfg, ha_cfg, view, &mut ev_rx, &mut shutdown).await,
    };
    tracing::info!("jobmanager shutting down");
    accept.abort();
    rest_task.abort();
    result
}

/// Why a leadership ended.
enum End {
    Shutdown,
    Lost(String),
}

/// Drives a master: events, timers, and its HA ops (each made durable before the master
/// acts on it). Returns on shutdown or when leadership is lost.
async fn lead<F: Future<Output = ()>>(
    jm: &mut JobMaster,
    ev_rx: &mut mpsc::UnboundedReceiver<Event>,
    mut ha: Option<(&ha::Store, &mut ha::election::Leadership)>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> End {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            _ = &mut *shutdown => return End::Shutdown,
            why = lease_lost(&mut ha) => return End::Lost(why),
            Some(ev) = ev_rx.recv() => Some(ev),
            _ = tick.tick() => None,
        };
        // The zombie check: a leader that was frozen (SIGSTOP, docker pause) resumes right
        // here, with its lease lapsed and maybe a successor elected. It must not act on the
        // event it just woke up to.
        if let Some((_, l)) = &ha {
            if !l.is_valid() {
                return End::Lost("the leader lease lapsed before it could be renewed (was this jobmanager frozen, or etcd unreachable?)".into());
            }
        }
        match ev {
            Some(ev) => jm.handle_event(ev),
            None => jm.tick(),
        }
        while let Some(op) = jm.next_op() {
            let result = match &ha {
                None => Ok(()),
                Some((store, l)) => {
                    if l.is_valid() {
                        store.guarded_put(l.epoch(), &op.records).await
                    } else {
                        Err(HaError::NotLeader("the leader lease lapsed".into()))
                    }
                }
            };
            // Even when leadership is gone the op is settled first: an unpublished
            // completion's `_metadata` is discarded, not left behind.
            let lost = match &result {
                Err(HaError::NotLeader(why)) => Some(why.clone()),
                _ => None,
            };
            jm.op_done(op, result);
            if let Some(why) = lost {
                return End::Lost(why);
            }
        }
    }
}

async fn lease_lost(ha: &mut Option<(&ha::Store, &mut ha::election::Leadership)>) -> String {
    match ha {
        Some((_, l)) => l.lost().await,
        None => std::future::pending().await,
    }
}

/// The HA life of a jobmanager: stand by, lead, step down, stand by again.
async fn run_ha<F: Future<Output = ()>>(
    cfg: JmConfig,
    ha_cfg: HaConfig,
    view: SharedView,
    ev_rx: &mut mpsc::UnboundedReceiver<Event>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> anyhow::Result<()> {
    let store = ha::Store::connect(ha_cfg, &cfg.job.job_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut leader_rx = ha::follow::follow(store.clone());
    let me = ha::election::Candidate {
        jobmanager: cfg.id.clone(),
        rpc_address: cfg.rpc_advertise.clone(),
        rest_url: cfg.rest_url.clone(),
    };
    loop {
        let Some((mut leadership, held)) = stand_by(&store, &me, &cfg, &view, &mut leader_rx, ev_rx, shutdown).await else {
            return Ok(());
        };
        let epoch = leadership.epoch();
        let rec = match store.recover().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the job's HA state; giving leadership up: {e}");
                leadership.release(&store);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut leader_cfg = cfg.clone();
        match &rec.job {
            Some(job) => {
                if *job != cfg.job {
                    tracing::warn!("the job spec in etcd differs from {}: running the stored one", cfg.job.job_id);
                }
                leader_cfg.job = job.clone();
            }
            None => {
                if let Err(e) = store.publish_job(epoch, &cfg.job).await {
                    tracing::warn!("cannot store the job spec in etcd: {e}");
                }
            }
        }
        tracing::info!(epoch, checkpoint = ?rec.checkpoint.map(|p| p.checkpoint), "leading");
        let mut jm = JobMaster::with_view(leader_cfg, epoch, view.clone());
        jm.resume(&rec);
        for ev in held {
            jm.handle_event(ev);
        }
        match lead(&mut jm, ev_rx, Some((&store, &mut leadership)), shutdown).await {
            End::Shutdown => {
                jm.step_down("shutting down");
                // Revoking the lease lets a standby take over at once instead of after the TTL.
                leadership.resign(&store).await;
                return Ok(());
            }
            End::Lost(why) => {
                jm.step_down(&why);
                leadership.release(&store);
            }
        }
    }
}

/// How long a standby holds a taskmanager's registration before refusing it: taskmanagers
/// learn of a new leader from etcd at the same moment the leader does, and may knock
/// before it has switched from standby to leading.
const HOLD_REGISTRATION: Duration = Duration::from_secs(1);

/// Standby: serve REST pointing at the leader, campaign, hold taskmanager registrations
/// briefly (handed to the master if this jobmanager wins, refused otherwise). `None` on
/// shutdown.
async fn stand_by<F: Future<Output = ()>>(
    store: &ha::Store,
    me: &ha::election::Candidate,
    cfg: &JmConfig,
    view: &SharedView,
    leader_rx: &mut tokio::sync::watch::Receiver<Option<LeaderInfo>>,
    ev_rx: &mut mpsc::UnboundedReceiver<Event>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<(ha::election::Leadership, Vec<Event>)> {
    let set_view = |known: Option<&LeaderInfo>| {
        if let Ok(mut v) = view.write() {
            *v = initial_view(cfg, false, known.filter(|l| l.jobmanager != cfg.id));
        }
    };
    set_view(leader_rx.borrow().as_ref());
    let mut held: Vec<(Instant, Event)> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let campaign = store.campaign(me);
        tokio::pin!(campaign);
        let result = loop {
            tokio::select! {
                _ = &mut *shutdown => return None,
                r = &mut campaign => break r,
                Some(ev) = ev_rx.recv() => match ev {
                    Event::Registered { .. } => held.push((Instant::now(), ev)),
                    // A held taskmanager gave up waiting.
                    Event::Lost { conn, .. } => held.retain(|(_, e)| !matches!(e, Event::Registered { conn: c, .. } if *c == conn)),
                    // Traffic of connections of an earlier leadership.
                    Event::Message { .. } => {}
                },
                Ok(()) = leader_rx.changed() => set_view(leader_rx.borrow().as_ref()),
                _ = tokio::time::sleep(Duration::from_millis(100)), if !held.is_empty() => {
                    held.retain(|(at, ev)| {
                        let keep = at.elapsed() < HOLD_REGISTRATION;
                        if let (false, Event::Registered { id, reader, .. }) = (keep, ev) {
                            // Not the leader: close the connection; the taskmanager asks etcd again.
                            tracing::debug!(tm = %id, "refusing a registration: this jobmanager is a standby");
                            reader.abort();
                        }
                        keep
                    });
                }
            }
        };
        match result {
            Ok(l) => {
                if let Ok(mut v) = view.write() {
                    *v = initial_view(cfg, true, None);
                }
                return Some((l, held.into_iter().map(|(_, ev)| ev).collect()));
            }
            Err(e) => {
                tracing::warn!("campaigning for leadership: {e}; retrying in {} ms", backoff.as_millis());
                tokio::select! {
                    _ = &mut *shutdown => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, events: mpsc::UnboundedSender<Event>) {
    let mut next_conn = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("RPC accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_conn += 1;
        let conn = next_conn;
        let events = events.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(conn, stream, events).await {
                tracing::warn!(%peer, "RPC connection closed: {e}");
            }
        });
    }
}

/// One taskmanager connection: the first frame must be `Register`; then frames become
/// events until the connection breaks (a garbage frame closes this connection only).
async fn connection(conn: u64, stream: TcpStream, events: mpsc::UnboundedSender<Event>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut buf = Vec::new();
    let first: TmToJm = tokio::time::timeout(Duration::from_secs(5), wire::read_json(&mut r, &mut buf))
        .await
        .map_err(|_| "no registration within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    let TmToJm::Register { id, data_address, slots } = first else {
        return Err("unexpected first frame (expected Register)".into());
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<JmToTm>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if wire::write_json(&mut w, &m).await.is_err() {
                break;
            }
        }
    });
    let ev2 = events.clone();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let cause = loop {
            match wire::read_json::<_, TmToJm>(&mut r, &mut buf).await {
                Ok(msg) => {
                    if ev2.send(Event::Message { conn, msg }).is_err() {
                        return;
                    }
                }
                Err(e) => break e.to_string(),
            }
        };
        let _ = ev2.send(Event::Lost { conn, cause });
    });
    let _ = events.send(Event::Registered { conn, id, data_address, slots, tx, reader: reader.abort_handle() });
    let _ = reader.await;
    writer.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SnapshotHandle;

    /// A master with HA configured (no etcd is contacted: the test plays the run loop and
    /// decides how each HA op ends) and one registered taskmanager, whose channel is
    /// returned.
    fn master(data: &std::path::Path) -> (JobMaster, mpsc::UnboundedReceiver<JmToTm>) {
        let job: JobSpec =
            serde_yaml::from_str("job_id: j\nparallelism: 1\ncheckpoint_interval: 10ms\ninput: { generate: { lines: 1000 } }").unwrap();
        let cfg = JmConfig {
            id: "jobmanager-1".into(),
            job,
            data_dir: data.to_path_buf(),
            rpc_bind: "127.0.0.1:0".into(),
            rest_bind: "127.0.0.1:0".into(),
            rpc_advertise: "127.0.0.1:1".into(),
            rest_url: "http://127.0.0.1:2".into(),
            ha: Some(HaConfig::new(vec!["http://127.0.0.1:9".into()])),
        };
        let mut jm = JobMaster::new(cfg, 7);
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(std::future::pending::<()>()).abort_handle();
        jm.handle_event(Event::Registered { conn: 1, id: "taskmanager-1".into(), data_address: "x".into(), slots: 1, tx, reader });
        (jm, rx)
    }

    /// Completes every queued op with `ok`, as the run loop does after a write.
    fn settle(jm: &mut JobMaster, ok: bool) -> usize {
        let mut n = 0;
        while let Some(op) = jm.next_op() {
            let r = if ok { Ok(()) } else { Err(HaError::Timeout(Duration::from_secs(1))) };
            jm.op_done(op, r);
            n += 1;
        }
        n
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<JmToTm>) -> Vec<JmToTm> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Runs checkpoint `id` through: trigger (its id reserved), both tasks acknowledge.
    fn checkpoint(jm: &mut JobMaster, rx: &mut mpsc::UnboundedReceiver<JmToTm>, id: u64) {
        jm.last_hb_sent = Instant::now() + Duration::from_secs(60); // no heartbeats in the way
        jm.ckpt.last_trigger = None;
        jm.tick();
        assert!(drain(rx).is_empty(), "a trigger went out before its id was reserved");
        settle(jm, true);
        let sent = drain(rx);
        assert!(
            sent.iter().any(|m| matches!(m, JmToTm::Trigger { checkpoint, leader_epoch: 7, .. } if *checkpoint == id)),
            "{sent:?}"
        );
        for task in [TaskId::Source(0), TaskId::Count(0)] {
            let handle = SnapshotHandle { path: format!("x/{task}"), crc32: 0, size: 1 };
            let msg = TmToJm::Ack { attempt: 1, checkpoint: id, task, handle, lines: 10 };
            jm.handle_event(Event::Message { conn: 1, msg });
        }
    }

    #[tokio::test]
    async fn sinks_hear_of_a_checkpoint_only_once_its_pointer_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let (mut jm, mut rx) = master(dir.path());
        assert!(matches!(drain(&mut rx).as_slice(), [JmToTm::Registered { leader_epoch: 7, .. }]));
        // The deployment goes out only after its attempt is recorded (with the status).
        let op = jm.next_op().expect("a deploy op");
        assert!(op.records.iter().any(|r| matches!(r, Record::Status(s) if s.attempt == 1)), "{:?}", op.records);
        assert!(drain(&mut rx).is_empty(), "deployed before the attempt was recorded");
        jm.op_done(op, Ok(()));
        assert!(matches!(drain(&mut rx).as_slice(), [JmToTm::Deploy(d)] if d.leader_epoch == 7 && d.attempt == 1));
        jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 1 } });
        settle(&mut jm, true);

        // Checkpoint 1 completes on disk, but etcd cannot take its pointer: no commit.
        checkpoint(&mut jm, &mut rx, 1);
        let meta1 = snapshot::checkpoint_dir(dir.path(), "j", 1).join("_metadata");
        assert!(meta1.exists(), "_metadata is written before the pointer");
        assert!(drain(&mut rx).is_empty(), "completion sent before the pointer was published");
        settle(&mut jm, false);
        assert!(!drain(&mut rx).iter().any(|m| matches!(m, JmToTm::Complete { .. })), "completion sent for an unpublished checkpoint");
        assert!(!meta1.exists(), "an unpublished checkpoint must be discarded");
        assert_eq!(jm.ckpt.latest_id(), None);

        // Checkpoint 2 is published: now the sinks are told, under the leader's epoch.
        checkpoint(&mut jm, &mut rx, 2);
        let op = jm.next_op().expect("a publish op");
        assert!(op.records.iter().any(|r| matches!(r, Record::LatestCheckpoint(p) if p.checkpoint == 2 && p.epoch == 7)));
        jm.op_done(op, Ok(()));
        let sent = drain(&mut rx);
        assert!(sent.iter().any(|m| matches!(m, JmToTm::Complete { checkpoint: 2, leader_epoch: 7, .. })), "{sent:?}");
        assert_eq!(jm.restore_point().map(|m| m.checkpoint), None, "snapshots are fake: nothing restorable");
        assert_eq!(jm.restore_ceiling, Some(2));
        // Only the published checkpoint's cut is recorded for the verdict.
        let cuts = crate::cuts::read(&crate::cuts::path(dir.path(), "j")).unwrap();
        assert_eq!(cuts, vec![crate::cuts::Cut { checkpoint: 2, positions: vec![10] }]);
    }

    /// Issue 10, item 7: a leader deposed while a completion waits for its pointer must
    /// not leave that checkpoint's `_metadata` behind.
    #[tokio::test]
    async fn a_deposed_leader_discards_its_unpublished_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (mut jm, mut rx) = master(dir.path());
        settle(&mut jm, true);
        jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 1 } });
        settle(&mut jm, true);
        drain(&mut rx);
        checkpoint(&mut jm, &mut rx, 1);
        let meta = snapshot::metadata_path(dir.path(), "j", 1);
        assert!(meta.exists());
        // The publish op is queued; leadership is lost before it is written.
        jm.step_down("lease lost");
        assert!(!meta.exists(), "an unpublished checkpoint survived its leader");
        assert!(crate::cuts::read(&crate::cuts::path(dir.path(), "j")).unwrap().is_empty());
    }

    /// A master without HA on `data`, one registered taskmanager with one slot; the job
    /// wants `wait_for` taskmanagers at first.
    fn master_without_ha(data: &std::path::Path, wait_for: u32) -> (JobMaster, mpsc::UnboundedReceiver<JmToTm>) {
        let yaml = format!("job_id: j\nparallelism: 1\nwait_for_taskmanagers: {wait_for}\ninput: {{ generate: {{ lines: 1000 }} }}");
        let cfg = JmConfig {
            id: "jobmanager-1".into(),
            job: serde_yaml::from_str(&yaml).unwrap(),
            data_dir: data.to_path_buf(),
            rpc_bind: "127.0.0.1:0".into(),
            rest_bind: "127.0.0.1:0".into(),
            rpc_advertise: "127.0.0.1:1".into(),
            rest_url: "http://127.0.0.1:2".into(),
            ha: None,
        };
        let mut jm = JobMaster::new(cfg, 1);
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(std::future::pending::<()>()).abort_handle();
        jm.handle_event(Event::Registered { conn: 1, id: "taskmanager-1".into(), data_address: "x".into(), slots: 1, tx, reader });
        (jm, rx)
    }

    fn deployed_attempts(jm: &mut JobMaster, rx: &mut mpsc::UnboundedReceiver<JmToTm>) -> Vec<u64> {
        settle(jm, true);
        drain(rx).into_iter().filter_map(|m| if let JmToTm::Deploy(d) = m { Some(d.attempt) } else { None }).collect()
    }

    /// Issue 10, item 6: a jobmanager restarted without HA continues the attempt numbers
    /// (at-least-once part names would repeat otherwise) and does not wait for every
    /// taskmanager of the cluster again (one may be dead).
    #[tokio::test]
    async fn a_restarted_jobmanager_without_ha_continues_attempts_and_does_not_wait_for_the_whole_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (mut first, mut rx) = master_without_ha(dir.path(), 1);
        assert_eq!(deployed_attempts(&mut first, &mut rx), vec![1]);
        drop(first);
        // The cluster has three taskmanagers; only one is alive when the jobmanager restarts.
        let (mut second, mut rx2) = master_without_ha(dir.path(), 3);
        assert_eq!(deployed_attempts(&mut second, &mut rx2), vec![2]);
    }

    #[tokio::test]
    async fn a_new_leader_continues_ids_attempts_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let (mut jm, _rx) = master(dir.path());
        let rec = ha::Recovered {
            job: None,
            checkpoint: Some(CheckpointPointer { checkpoint: 12, epoch: 3, completed_ms: 0 }),
            checkpoint_counter: 14,
            status: Some(JobStatusRecord {
                leader: "jobmanager-2".into(),
                epoch: 3,
                state: JobState::Running,
                attempt: 4,
                restarts: 2,
                start_ms: 1,
                failure_cause: None,
                history: vec![StateChange { state: JobState::Running, at_ms: 1, attempt: 4, reason: "x".into() }],
                failures: vec![],
            }),
        };
        jm.resume(&rec);
        assert_eq!((jm.attempt, jm.restarts, jm.state), (4, 3, JobState::Restarting));
        assert_eq!(jm.restore_ceiling, Some(12), "restores never go past the published pointer");
        assert_eq!(jm.ckpt.trigger(4, false), 15, "checkpoint ids continue above the reserved ones");
        assert!(jm.failures.last().is_some_and(|f| f.cause.contains("took over from jobmanager-2")));
        // A finished job stays finished under the next leader (Flink's JobResultStore).
        let (mut jm2, _rx2) = master(dir.path());
        let mut done = rec.clone();
        if let Some(s) = done.status.as_mut() {
            s.state = JobState::Finished;
        }
        jm2.resume(&done);
        assert_eq!(jm2.state, JobState::Finished);
    }

    #[tokio::test]
    async fn stepping_down_cancels_under_the_old_epoch_and_drops_taskmanagers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut jm, mut rx) = master(dir.path());
        settle(&mut jm, true);
        drain(&mut rx);
        jm.step_down("lease lost");
        assert!(matches!(drain(&mut rx).as_slice(), [JmToTm::Cancel { leader_epoch: 7, .. }]));
        assert!(jm.tms.is_empty());
        assert!(jm.next_op().is_none_or(|op| matches!(op.then, Then::Nothing)));
    }
}
