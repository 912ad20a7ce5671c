//! The jobmanager: accepts taskmanager registrations, watches heartbeats, places the job's
//! pipelines on slots, coordinates checkpoints, restarts the job on failure (per its
//! restart strategy, restoring the latest completed checkpoint), and serves REST.
//!
//! All state lives in one actor ([`JobMaster`]); connection tasks turn frames into
//! [`Event`]s, and a tick drives timers. Every decision happens in `handle_event`/`tick`,
//! apart from I/O.

pub mod checkpoints;
pub mod rest;

use crate::api::{self, FailureEvent, JobDetails, JobState, Overview, StateChange, TaskManagerInfo};
use crate::restart::{Decision, RestartTracker};
use crate::snapshot;
use crate::spec::JobSpec;
use crate::taskmanager::source::SourceState;
use crate::wire::{self, Assignment, Deployment, JmToTm, Restore, TaskId, TaskMetrics, TmToJm};
use checkpoints::Coordinator;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
        let ckpt = Coordinator::new(&cfg.data_dir, &cfg.job.job_id);
        let restart = RestartTracker::new(cfg.job.restart.clone(), api::now_ms());
        let start_ms = api::now_ms();
        let mut jm = JobMaster {
            leader_epoch,
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
            view: Arc::new(RwLock::new(View {
                overview: Overview {
                    jobmanager: cfg.id.clone(),
                    leader: true,
                    leader_address: None,
                    leader_epoch,
                    job_id: cfg.job.job_id.clone(),
                    job_state: JobState::Created,
                    taskmanagers: 0,
                    slots_total: 0,
                    slots_available: 0,
                },
                job: empty_details(&cfg.job, start_ms),
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
            })),
            cfg,
        };
        jm.set_state(JobState::Created, "job submitted");
        jm.check_input();
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
                    tracing::info!(checkpoint = m.checkpoint, records_in = m.records_in, "checkpoint complete");
                    self.broadcast(JmToTm::Complete { attempt, checkpoint: m.checkpoint });
                    snapshot::prune(&self.cfg.data_dir, &self.cfg.job.job_id, self.cfg.job.checkpoints_retained);
                    if is_final {
                        self.final_checkpoint = Some(m.checkpoint);
                    }
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
                        self.broadcast(JmToTm::Finish { attempt });
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
            cause: format!("taskmanager {} lost: {cause}", tm.id),
        });
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
            self.failures.push(FailureEvent { at_ms: api::now_ms(), attempt: self.attempt, taskmanager: tm, cause: cause.clone() });
        }
        if self.state == JobState::Restarting && self.placement.is_empty() {
            // This attempt already failed and is cancelled: more of its tasks reporting
            // the same fault is not a new failure.
            return;
        }
        self.broadcast(JmToTm::Cancel { attempt: self.attempt });
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
        let restore = snapshot::latest_valid(&self.cfg.data_dir, &self.cfg.job.job_id);
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
        for (tm, local) in by_tm {
            if let Some(t) = self.tms.get(&tm) {
                let d = Deployment {
                    attempt: self.attempt,
                    leader_epoch: self.leader_epoch,
                    job: self.cfg.job.clone(),
                    assignments: placement.clone(),
                    local,
                    restore: restore.clone(),
                };
                let _ = t.tx.send(JmToTm::Deploy(Box::new(d)));
            }
        }
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
                    self.broadcast(JmToTm::Trigger { attempt: self.attempt, checkpoint: id });
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
            leader_address: None,
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

/// Runs a jobmanager until `shutdown` resolves.
pub async fn run(cfg: JmConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let rpc = TcpListener::bind(&cfg.rpc_bind).await.map_err(|e| anyhow::anyhow!("cannot listen on RPC address {}: {e}", cfg.rpc_bind))?;
    let rest = TcpListener::bind(&cfg.rest_bind).await.map_err(|e| anyhow::anyhow!("cannot listen on REST address {}: {e}", cfg.rest_bind))?;
    tracing::info!(id = %cfg.id, rpc = %cfg.rpc_bind, rest = %cfg.rest_bind, job = %cfg.job.job_id, "jobmanager started");
    let mut jm = JobMaster::new(cfg, 1);
    let view = jm.view();
    let rest_task = tokio::spawn(rest::serve(rest, view));
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let accept = tokio::spawn(accept_loop(rpc, ev_tx));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(ev) = ev_rx.recv() => jm.handle_event(ev),
            _ = tick.tick() => jm.tick(),
        }
    }
    tracing::info!("jobmanager shutting down");
    accept.abort();
    rest_task.abort();
    Ok(())
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
