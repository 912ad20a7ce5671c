//! The taskmanager: registers its slots with the jobmanager, heartbeats, runs the tasks
//! the jobmanager deploys (fenced by attempt), and serves the data port where sources of
//! any taskmanager connect to its count tasks.
//!
//! A taskmanager that loses its jobmanager (connection closed, or no word from it within
//! the heartbeat timeout) cancels its tasks and registers again; the jobmanager redeploys.
//!
//! With high availability ([`crate::ha`]) the jobmanager to register with is the leader
//! published in etcd: the taskmanager follows the `leader` key and re-registers (in the
//! same process) when a newer leader is elected. It remembers the newest leader epoch it has
//! seen and refuses every command of an older epoch: a deposed leader that wakes up cannot
//! deploy, trigger, commit or cancel anything here.
//!
//! With `job.local_recovery` and a `--local-dir`, tasks also keep their snapshots on that
//! node-local directory and restore from it when the jobmanager places them here again
//! ([`crate::snapshot::restore_task`]); each deployment reports how every task restored
//! (local or remote, and how long it took) with its `Deployed`.
//!
//! A deployment that restores an older checkpoint than the latest completed one carries
//! the cuts of the newer ones (see `jobmanager::catch_up`): each source gets its own
//! position in every one and injects those barriers itself.

pub mod alignment;
pub mod count;
pub mod sabotage;
pub mod sink;
pub mod socket;
pub mod source;
pub mod window;

/// Runs `f` and returns its result with the CPU time the calling thread spent in it (µs;
/// user and system, so waiting for a disk does not count). A checkpoint writer's CPU is
/// what a checkpoint takes from processing on a busy node, beyond the data path's stall:
/// the adaptive interval's cost counts it (`jobmanager::interval`).
pub(crate) fn with_thread_cpu<T>(f: impl FnOnce() -> T) -> (T, u64) {
    fn now_us() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid pointer to a timespec; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
            return 0;
        }
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
    }
    let start = now_us();
    let r = f();
    (r, now_us().saturating_sub(start))
}

use crate::ha::{self, HaConfig, LeaderInfo};
use crate::spec::JobSpec;
use crate::snapshot;
use crate::api::TaskRestore;
use crate::wire::{self, DataHello, Deployment, JmToTm, SnapshotHandle, TaskId, TaskMetrics, TmToJm};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How a taskmanager is started (`streamd taskmanager ...`).
#[derive(Debug, Clone)]
pub struct TmConfig {
    pub id: String,
    /// Jobmanager RPC address (`host:port`).
    pub jobmanager: String,
    pub slots: u32,
    pub data_dir: PathBuf,
    /// Where the data server listens.
    pub data_bind: String,
    /// The data address other taskmanagers use to reach this one.
    pub advertise: String,
    /// High availability: follow the leader published in etcd instead of `jobmanager`.
    pub ha: Option<TmHa>,
    /// `host:port` of the line server, overriding the job's `input.socket` address.
    pub line_server: Option<String>,
    /// Node-local storage for task-local recovery: on Docker a directory of the
    /// container's own filesystem (it survives a restart of the container, not its
    /// re-creation). `None`: no local copies, whatever the job asks.
    pub local_dir: Option<PathBuf>,
    /// What a job's input file path is relative to; `None`: `data_dir`.
    pub input_root: Option<PathBuf>,
}

/// Where a taskmanager finds the leader with high availability.
#[derive(Debug, Clone)]
pub struct TmHa {
    pub config: HaConfig,
    /// The job whose leader key to follow (`/streamd/<job>/leader`).
    pub job_id: String,
}

/// Messages from tasks to the jobmanager, queued until the control connection sends them.
pub type Outbox = mpsc::UnboundedSender<TmToJm>;

/// Per-task counters, read for heartbeat metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub lines: AtomicU64,
    pub words: AtomicU64,
}

/// What every task of an attempt gets.
#[derive(Clone)]
pub struct TaskCtx {
    pub attempt: u64,
    pub job: Arc<JobSpec>,
    pub data_dir: PathBuf,
    pub outbox: Outbox,
    pub counters: Arc<Counters>,
    /// See [`TmConfig::line_server`].
    pub line_server: Option<String>,
    /// Where snapshots get their local copy: set when the job asks for local recovery and
    /// this taskmanager has a local directory.
    pub local_dir: Option<PathBuf>,
    /// See [`TmConfig::input_root`].
    pub input_root: Option<PathBuf>,
}

impl TaskCtx {
    /// Where the job's input file `path` (relative, like `input/words.txt`) is.
    pub fn input_path(&self, path: &str) -> PathBuf {
        self.input_root.as_ref().unwrap_or(&self.data_dir).join(path)
    }
}

/// The tasks of the attempt this taskmanager currently runs.
struct Running {
    attempt: u64,
    handles: Vec<JoinHandle<()>>,
    sources: HashMap<u32, mpsc::Sender<source::SourceCmd>>,
    counts: HashMap<u32, mpsc::Sender<count::CountCmd>>,
    metrics: Vec<(TaskId, Arc<Counters>)>,
    /// Task-local recovery: the local directory and the job id, to prune local copies as
    /// checkpoints complete.
    local: Option<(PathBuf, String)>,
}

impl Running {
    fn cancel(self) {
        for h in self.handles {
            h.abort();
        }
    }
}

/// Where the data server sends an incoming channel: the count tasks of the current attempt.
#[derive(Default)]
struct Routes {
    attempt: u64,
    inputs: HashMap<u32, mpsc::Sender<(u32, TcpStream)>>,
}

type SharedRoutes = Arc<Mutex<Routes>>;

/// Runs a taskmanager until `shutdown` resolves.
pub async fn run(cfg: TmConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&cfg.data_bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on data address {}: {e}", cfg.data_bind))?;
    tracing::info!(id = %cfg.id, data = %cfg.data_bind, slots = cfg.slots, "taskmanager started");
    let routes: SharedRoutes = Arc::default();
    let server = tokio::spawn(data_server(listener, routes.clone()));
    tokio::pin!(shutdown);

    let mut leader_rx = match &cfg.ha {
        Some(h) => {
            let store = ha::Store::connect(h.config.clone(), &h.job_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(etcd = ?h.config.endpoints, job = %h.job_id, "following the leader through etcd");
            Some(ha::follow::follow(store))
        }
        None => None,
    };
    let mut running: Option<Running> = None;
    let mut newest_epoch = 0u64;
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut registered = false;
        let session = session(&cfg, &routes, &mut running, leader_rx.as_mut(), &mut newest_epoch, &mut registered);
        tokio::select! {
            _ = &mut shutdown => break,
            r = session => {
                match r {
                    Ok(()) => tracing::warn!("jobmanager connection ended; cancelling tasks and re-registering"),
                    Err(e) => tracing::warn!("jobmanager connection: {e}; cancelling tasks and re-registering"),
                }
                // Without a jobmanager our tasks are orphans: a new leader (or the same one
                // after recovery) redeploys from the latest checkpoint.
                cancel(&mut running, &routes);
                if registered {
                    backoff = Duration::from_millis(50);
                }
                let known = leader_rx.as_ref().and_then(|rx| rx.borrow().as_ref().map(|l| l.epoch)).unwrap_or(0);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                    // A newly elected leader: register at once rather than after the backoff.
                    _ = newer_leader(leader_rx.as_mut(), known) => {}
                }
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
    tracing::info!("taskmanager shutting down");
    cancel(&mut running, &routes);
    server.abort();
    Ok(())
}

fn cancel(running: &mut Option<Running>, routes: &SharedRoutes) {
    if let Some(r) = running.take() {
        tracing::info!(attempt = r.attempt, "cancelling tasks");
        r.cancel();
    }
    if let Ok(mut g) = routes.lock() {
        g.inputs.clear();
    }
}

/// Resolves once `rx` names a leader of an epoch above `epoch` (never without HA).
async fn newer_leader(rx: Option<&mut watch::Receiver<Option<LeaderInfo>>>, epoch: u64) {
    match rx {
        Some(rx) => {
            if rx.wait_for(|l| l.as_ref().is_some_and(|l| l.epoch > epoch)).await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// One registration with the jobmanager (with HA: the leader etcd names, of an epoch not
/// older than `newest_epoch`); returns when the connection is lost or a newer leader is
/// elected.
async fn session(
    cfg: &TmConfig,
    routes: &SharedRoutes,
    running: &mut Option<Running>,
    leader_rx: Option<&mut watch::Receiver<Option<LeaderInfo>>>,
    newest_epoch: &mut u64,
    registered: &mut bool,
) -> Result<(), String> {
    let Some(rx) = leader_rx else {
        return registered_session(cfg, &cfg.jobmanager, routes, running, newest_epoch, registered).await;
    };
    let floor = *newest_epoch;
    let leader = rx
        .wait_for(|l| l.as_ref().is_some_and(|l| l.epoch >= floor))
        .await
        .map_err(|_| "the leader follower stopped".to_string())?
        .clone()
        .ok_or("no leader")?;
    *newest_epoch = (*newest_epoch).max(leader.epoch);
    tokio::select! {
        r = registered_session(cfg, &leader.rpc_address, routes, running, newest_epoch, registered) => r,
        _ = newer_leader(Some(rx), leader.epoch) => {
            Err(format!("a newer leader was elected (after {} of epoch {})", leader.jobmanager, leader.epoch))
        }
    }
}

/// Registers with the jobmanager at `address` and serves it until the connection breaks.
async fn registered_session(
    cfg: &TmConfig,
    address: &str,
    routes: &SharedRoutes,
    running: &mut Option<Running>,
    newest_epoch: &mut u64,
    registered: &mut bool,
) -> Result<(), String> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    wire::write_json(&mut w, &TmToJm::Register { id: cfg.id.clone(), data_address: cfg.advertise.clone(), slots: cfg.slots })
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let first: JmToTm = tokio::time::timeout(Duration::from_secs(5), wire::read_json(&mut r, &mut buf))
        .await
        .map_err(|_| "no answer to registration".to_string())?
        .map_err(|e| e.to_string())?;
    let JmToTm::Registered { jobmanager, leader_epoch, heartbeat_interval_ms, heartbeat_timeout_ms } = first else {
        return Err(format!("expected Registered, got {first:?}"));
    };
    if leader_epoch < *newest_epoch {
        return Err(format!("{jobmanager} leads epoch {leader_epoch}, older than epoch {newest_epoch} seen already"));
    }
    *newest_epoch = leader_epoch;
    *registered = true;
    let fence = leader_epoch;
    tracing::info!(%jobmanager, leader_epoch, "registered");
    let hb_interval = Duration::from_millis(heartbeat_interval_ms.max(10));
    let hb_timeout = Duration::from_millis(heartbeat_timeout_ms.max(50));

    // Frames are read by their own task so a half-read frame is never dropped by select!.
    let (in_tx, mut in_rx) = mpsc::channel::<Result<JmToTm, String>>(64);
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            let m = wire::read_json::<_, JmToTm>(&mut r, &mut buf).await.map_err(|e| e.to_string());
            let stop = m.is_err();
            if in_tx.send(m).await.is_err() || stop {
                return;
            }
        }
    });
    let _reader_guard = AbortOnDrop(reader);

    let (outbox, mut out_rx) = mpsc::unbounded_channel::<TmToJm>();
    let mut hb = tokio::time::interval(hb_interval);
    let mut last_heard = Instant::now();
    // A deployment whose tasks are reading their state: a session's own (a lost
    // connection fails the attempt anyway).
    let mut restoring: Option<Restoring> = None;
    loop {
        tokio::select! {
            m = in_rx.recv() => {
                let m = m.ok_or("reader ended")??;
                last_heard = Instant::now();
                handle(cfg, routes, running, &mut restoring, fence, m);
            }
            (attempt, restored) = restored(&mut restoring) => {
                match restored.and_then(|(d, r)| deploy(cfg, routes, &outbox, d, r)) {
                    Ok((r, restores)) => {
                        *running = Some(r);
                        let _ = outbox.send(TmToJm::Deployed { attempt, restores });
                    }
                    Err((task, cause)) => {
                        let _ = outbox.send(TmToJm::TaskFailed { attempt, task, cause });
                    }
                }
            }
            Some(msg) = out_rx.recv() => {
                wire::write_json(&mut w, &msg).await.map_err(|e| e.to_string())?;
            }
            _ = hb.tick() => {
                if last_heard.elapsed() > hb_timeout {
                    return Err(format!("no word from the jobmanager for {:?}", last_heard.elapsed()));
                }
                let metrics = running.as_ref().map(|r| r.metrics.iter().map(|(t, c)| TaskMetrics {
                    attempt: r.attempt,
                    task: Some(*t),
                    lines: c.lines.load(Ordering::Relaxed),
                    words: c.words.load(Ordering::Relaxed),
                }).collect()).unwrap_or_default();
                wire::write_json(&mut w, &TmToJm::Heartbeat { metrics }).await.map_err(|e| e.to_string())?;
            }
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A deployment whose tasks' state is being read (local copy or shared storage, verified,
/// decoded) on a blocking thread. Off the control loop, so the taskmanager goes on
/// heartbeating while it reads: a large state from remote-like storage used to take longer
/// than the heartbeat timeout, and the jobmanager declared the restoring node lost and
/// restarted the job, again and again.
struct Restoring {
    attempt: u64,
    task: JoinHandle<Result<(Deployment, Restored), (TaskId, String)>>,
}

/// Each task's restored state, and how each was restored.
#[derive(Default)]
struct Restored {
    counts: HashMap<u32, count::CountState>,
    sources: HashMap<u32, source::SourceState>,
    restores: Vec<TaskRestore>,
}

impl Restoring {
    fn start(cfg: &TmConfig, d: Deployment) -> Restoring {
        let cfg = cfg.clone();
        let attempt = d.attempt;
        let task = tokio::task::spawn_blocking(move || restore_states(&cfg, &d).map(|r| (d, r)));
        Restoring { attempt, task }
    }
}

/// Resolves when the deployment being restored has its state, with its attempt (never
/// while there is none); the deployment is then no longer restoring.
async fn restored(restoring: &mut Option<Restoring>) -> (u64, Result<(Deployment, Restored), (TaskId, String)>) {
    let Some(r) = restoring.as_mut() else { return std::future::pending().await };
    let out = (&mut r.task).await;
    let attempt = r.attempt;
    *restoring = None;
    // A panic on the blocking thread is the deployment's failure, not the node's.
    (attempt, out.unwrap_or_else(|e| Err((TaskId::Source(0), format!("restoring the deployment's state: {e}")))))
}

/// Acts on one jobmanager command. `newest_epoch` is the newest leader epoch this
/// taskmanager has seen: commands of an older epoch come from a deposed leader and are
/// refused, whatever they are. A deployment starts restoring (see [`Restoring`]); its tasks
/// start when [`restored`] resolves.
fn handle(cfg: &TmConfig, routes: &SharedRoutes, running: &mut Option<Running>, restoring: &mut Option<Restoring>, newest_epoch: u64, m: JmToTm) {
    if let Some(epoch) = m.leader_epoch().filter(|&e| e < newest_epoch) {
        tracing::warn!(epoch, newest_epoch, command = ?command_name(&m), "refusing a command of a stale leader epoch");
        return;
    }
    let current = running.as_ref().map(|r| r.attempt);
    let newest = current.max(restoring.as_ref().map(|r| r.attempt));
    match m {
        JmToTm::Heartbeat | JmToTm::Registered { .. } => {}
        JmToTm::Deploy(d) => {
            if newest.is_some_and(|a| a >= d.attempt) {
                tracing::warn!(attempt = d.attempt, "ignoring a deployment of an old attempt");
                return;
            }
            cancel(running, routes);
            // A newer deployment supersedes one still restoring: its result is dropped.
            *restoring = Some(Restoring::start(cfg, *d));
        }
        JmToTm::Cancel { attempt, .. } => {
            if current == Some(attempt) {
                cancel(running, routes);
            }
            if restoring.as_ref().is_some_and(|r| r.attempt == attempt) {
                *restoring = None;
            }
        }
        JmToTm::Finish { attempt, .. } => {
            if current == Some(attempt) {
                tracing::info!(attempt, "job finished; stopping tasks");
                cancel(running, routes);
            }
            if restoring.as_ref().is_some_and(|r| r.attempt == attempt) {
                *restoring = None;
            }
        }
        JmToTm::Trigger { attempt, checkpoint, .. } => {
            if let Some(r) = running.as_ref().filter(|r| r.attempt == attempt) {
                for tx in r.sources.values() {
                    let _ = tx.try_send(source::SourceCmd::Trigger(checkpoint));
                }
            }
        }
        JmToTm::Complete { attempt, checkpoint, .. } => {
            if let Some(r) = running.as_ref().filter(|r| r.attempt == attempt) {
                for tx in r.counts.values() {
                    let _ = tx.try_send(count::CountCmd::Complete(checkpoint));
                }
                // The completed checkpoint subsumes older ones: their local copies go
                // (newer ones may be in flight and stay).
                if let Some((dir, job)) = &r.local {
                    snapshot::prune_local(dir, job, checkpoint, None);
                }
            }
        }
    }
}

fn command_name(m: &JmToTm) -> &'static str {
    match m {
        JmToTm::Registered { .. } => "registered",
        JmToTm::Heartbeat => "heartbeat",
        JmToTm::Deploy(_) => "deploy",
        JmToTm::Cancel { .. } => "cancel",
        JmToTm::Trigger { .. } => "trigger",
        JmToTm::Complete { .. } => "complete",
        JmToTm::Finish { .. } => "finish",
    }
}

/// Where this taskmanager keeps local copies for `job`: its local directory when the job
/// asks for task-local recovery.
fn local_dir_for(cfg: &TmConfig, job: &JobSpec) -> Option<PathBuf> {
    match (job.local_recovery, &cfg.local_dir) {
        (true, Some(dir)) => Some(dir.clone()),
        (true, None) => {
            tracing::warn!("the job asks for local recovery but this taskmanager has no --local-dir: restoring from shared storage only");
            None
        }
        (false, _) => None,
    }
}

/// Reads, verifies and decodes the state of every task of `d` that has a snapshot in the
/// restored checkpoint (blocking: run by [`Restoring`]).
fn restore_states(cfg: &TmConfig, d: &Deployment) -> Result<Restored, (TaskId, String)> {
    let mut out = Restored::default();
    let Some(restore) = &d.restore else { return Ok(out) };
    let local_dir = local_dir_for(cfg, &d.job);
    let handle = |t: TaskId| restore.handles.iter().find(|(id, _)| *id == t).map(|(_, h)| h.clone());
    let (job, n) = (&d.job.job_id, restore.checkpoint);
    for &i in &d.local {
        if let Some(h) = handle(TaskId::Count(i)) {
            let st = restore_one(cfg, local_dir.as_deref(), job, d.attempt, n, TaskId::Count(i), &h, &mut out.restores)?;
            out.counts.insert(i, st);
        }
        if let Some(h) = handle(TaskId::Source(i)) {
            let st = restore_one(cfg, local_dir.as_deref(), job, d.attempt, n, TaskId::Source(i), &h, &mut out.restores)?;
            out.sources.insert(i, st);
        }
    }
    Ok(out)
}

/// Starts the tasks of one deployment from their restored state; returns them and how
/// each restored its state.
fn deploy(cfg: &TmConfig, routes: &SharedRoutes, outbox: &Outbox, d: Deployment, mut restored: Restored) -> Result<(Running, Vec<TaskRestore>), (TaskId, String)> {
    let job = Arc::new(d.job);
    let local_dir = local_dir_for(cfg, &job);
    let restore_from = d.restore.as_ref().map(|r| r.checkpoint);
    let restores = std::mem::take(&mut restored.restores);
    let p = job.parallelism;
    let mut outputs = d.assignments.clone();
    outputs.sort_by_key(|a| a.subtask);
    if outputs.len() != p as usize {
        return Err((TaskId::Source(0), format!("deployment has {} placements for parallelism {p}", outputs.len())));
    }
    let mut r = Running {
        attempt: d.attempt,
        handles: Vec::new(),
        sources: HashMap::new(),
        counts: HashMap::new(),
        metrics: Vec::new(),
        local: local_dir.clone().map(|dir| (dir, job.job_id.clone())),
    };
    let mut new_inputs = HashMap::new();
    for &i in &d.local {
        // Count task (sink chained).
        let counters = Arc::new(Counters::default());
        let ctx = task_ctx(cfg, d.attempt, &job, outbox, &counters, &local_dir);
        let restore = restored.counts.remove(&i).map(|st| (restore_from.unwrap_or(0), st));
        let (conn_tx, conn_rx) = mpsc::channel(p as usize + 4);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        new_inputs.insert(i, conn_tx);
        r.counts.insert(i, cmd_tx);
        r.metrics.push((TaskId::Count(i), counters));
        r.handles.push(spawn_task(ctx.clone(), TaskId::Count(i), count::run(ctx, i, restore, conn_rx, cmd_rx)));

        // Source task (tokenizer chained).
        let counters = Arc::new(Counters::default());
        let ctx = task_ctx(cfg, d.attempt, &job, outbox, &counters, &local_dir);
        let restore = restored.sources.remove(&i);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        r.sources.insert(i, cmd_tx);
        r.metrics.push((TaskId::Source(i), counters));
        // This source's position in every catch-up checkpoint's cut.
        let catch_up: Vec<(u64, u64)> =
            d.catch_up.iter().filter_map(|c| c.positions.get(i as usize).map(|&at| (c.checkpoint, at))).collect();
        r.handles.push(spawn_task(ctx.clone(), TaskId::Source(i), source::run(ctx, i, outputs.clone(), restore, catch_up, cmd_rx)));
    }
    if let Ok(mut g) = routes.lock() {
        g.attempt = d.attempt;
        g.inputs = new_inputs;
    }
    // Local copies of any other checkpoint are now useless: newer ones belong to the failed
    // attempt (never completed, or not restorable), older ones are subsumed.
    if let Some(dir) = &local_dir {
        snapshot::prune_local(dir, &job.job_id, 0, Some(restore_from.unwrap_or(0)));
    }
    tracing::info!(attempt = d.attempt, pipelines = ?d.local, restore = ?restore_from, "deployed");
    Ok((r, restores))
}

/// Restores one task from checkpoint `n` (local copy first, when there is a local
/// directory) and records how.
#[allow(clippy::too_many_arguments)]
fn restore_one<T: serde::de::DeserializeOwned>(
    cfg: &TmConfig,
    local_dir: Option<&std::path::Path>,
    job: &str,
    attempt: u64,
    n: u64,
    t: TaskId,
    h: &SnapshotHandle,
    restores: &mut Vec<TaskRestore>,
) -> Result<T, (TaskId, String)> {
    let r = snapshot::restore_task(&cfg.data_dir, local_dir, job, n, t, h).map_err(|e| (t, e.to_string()))?;
    restores.push(TaskRestore {
        attempt,
        checkpoint: n,
        task: t.to_string(),
        taskmanager: cfg.id.clone(),
        source: r.source,
        duration_ms: r.duration.as_secs_f64() * 1e3,
        bytes: r.bytes,
        fallback: r.fallback,
    });
    Ok(r.state)
}

fn task_ctx(cfg: &TmConfig, attempt: u64, job: &Arc<JobSpec>, outbox: &Outbox, counters: &Arc<Counters>, local_dir: &Option<PathBuf>) -> TaskCtx {
    TaskCtx {
        attempt,
        job: job.clone(),
        data_dir: cfg.data_dir.clone(),
        outbox: outbox.clone(),
        counters: counters.clone(),
        line_server: cfg.line_server.clone(),
        local_dir: local_dir.clone(),
        input_root: cfg.input_root.clone(),
    }
}

/// Runs a task; its failure becomes a `TaskFailed` report (never a crash of the node).
fn spawn_task(ctx: TaskCtx, task: TaskId, fut: impl Future<Output = Result<(), String>> + Send + 'static) -> JoinHandle<()> {
    tokio::spawn(async move {
        match fut.await {
            Ok(()) => tracing::debug!(%task, "task ended"),
            Err(cause) => {
                tracing::warn!(%task, attempt = ctx.attempt, "task failed: {cause}");
                let _ = ctx.outbox.send(TmToJm::TaskFailed { attempt: ctx.attempt, task, cause });
            }
        }
    })
}

/// Accepts data connections and routes each to its count task (fenced by attempt).
async fn data_server(listener: TcpListener, routes: SharedRoutes) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("data accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            if let Err(e) = route(stream, &routes).await {
                tracing::warn!(%peer, "data connection refused: {e}");
            }
        });
    }
}

async fn route(mut stream: TcpStream, routes: &SharedRoutes) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let hello: DataHello = tokio::time::timeout(Duration::from_secs(5), wire::read_json(&mut stream, &mut buf))
        .await
        .map_err(|_| "no handshake".to_string())?
        .map_err(|e| e.to_string())?;
    // The sender's taskmanager may have been deployed before ours: wait a little.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let target = {
            let g = routes.lock().map_err(|_| "routes poisoned")?;
            if hello.attempt < g.attempt {
                return Err(format!("stale attempt {} (running {})", hello.attempt, g.attempt));
            }
            if hello.attempt == g.attempt { g.inputs.get(&hello.to).cloned() } else { None }
        };
        if let Some(tx) = target {
            return tx.send((hello.from, stream)).await.map_err(|_| "count task gone".to_string());
        }
        if Instant::now() > deadline {
            return Err(format!("no count-{} of attempt {} here", hello.to, hello.attempt));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TmConfig {
        TmConfig {
            id: "taskmanager-1".into(),
            jobmanager: "127.0.0.1:1".into(),
            slots: 2,
            data_dir: PathBuf::from("/nonexistent"),
            data_bind: "127.0.0.1:0".into(),
            advertise: "127.0.0.1:0".into(),
            ha: None,
            line_server: None,
            local_dir: None,
            input_root: None,
        }
    }

    /// An attempt "running" here: one source and one count task, as command channels.
    fn running(attempt: u64) -> (Running, mpsc::Receiver<source::SourceCmd>, mpsc::Receiver<count::CountCmd>) {
        let (src_tx, src_rx) = mpsc::channel(8);
        let (cnt_tx, cnt_rx) = mpsc::channel(8);
        let r = Running {
            attempt,
            handles: Vec::new(),
            sources: HashMap::from([(0, src_tx)]),
            counts: HashMap::from([(0, cnt_tx)]),
            metrics: Vec::new(),
            local: None,
        };
        (r, src_rx, cnt_rx)
    }

    fn deployment(attempt: u64, leader_epoch: u64) -> JmToTm {
        let job: JobSpec = serde_yaml::from_str("parallelism: 2\ninput: { generate: { lines: 10 } }").unwrap();
        JmToTm::Deploy(Box::new(Deployment { attempt, leader_epoch, job, assignments: vec![], local: vec![0], restore: None, catch_up: vec![] }))
    }

    #[tokio::test]
    async fn commands_of_a_stale_leader_epoch_are_refused() {
        let (cfg, routes) = (cfg(), SharedRoutes::default());
        let (r, mut src_rx, mut cnt_rx) = running(7);
        let mut running = Some(r);
        let mut restoring = None;
        // The newest epoch seen is 5; a deposed leader of epoch 3 (a zombie that woke up)
        // triggers, completes, deploys, finishes and cancels: all refused.
        let newest = 5;
        for m in [
            JmToTm::Trigger { attempt: 7, checkpoint: 9, leader_epoch: 3 },
            JmToTm::Complete { attempt: 7, checkpoint: 9, leader_epoch: 3 },
            deployment(8, 3),
            JmToTm::Finish { attempt: 7, leader_epoch: 3 },
            JmToTm::Cancel { attempt: 7, leader_epoch: 3 },
        ] {
            handle(&cfg, &routes, &mut running, &mut restoring, newest, m);
        }
        assert!(src_rx.try_recv().is_err(), "a stale trigger reached a source");
        assert!(cnt_rx.try_recv().is_err(), "a stale completion reached a sink");
        assert!(restoring.is_none(), "a stale deployment was acted on");
        assert_eq!(running.as_ref().map(|r| r.attempt), Some(7), "the running attempt was touched");

        // The current leader's commands are obeyed.
        handle(&cfg, &routes, &mut running, &mut restoring, newest, JmToTm::Trigger { attempt: 7, checkpoint: 9, leader_epoch: 5 });
        assert!(matches!(src_rx.try_recv(), Ok(source::SourceCmd::Trigger(9))));
        handle(&cfg, &routes, &mut running, &mut restoring, newest, JmToTm::Complete { attempt: 7, checkpoint: 9, leader_epoch: 5 });
        assert!(matches!(cnt_rx.try_recv(), Ok(count::CountCmd::Complete(9))));
        handle(&cfg, &routes, &mut running, &mut restoring, newest, JmToTm::Cancel { attempt: 7, leader_epoch: 5 });
        assert!(running.is_none(), "the current leader's cancel must stop the tasks");
    }

    #[tokio::test]
    async fn a_newer_epoch_is_obeyed() {
        let (cfg, routes) = (cfg(), SharedRoutes::default());
        let (r, mut src_rx, _cnt_rx) = running(7);
        let mut running = Some(r);
        let mut restoring = None;
        // A command of a newer epoch than the session's is not stale (the session ends
        // when the taskmanager learns of the new leader, but fencing only refuses the old).
        handle(&cfg, &routes, &mut running, &mut restoring, 5, JmToTm::Trigger { attempt: 7, checkpoint: 2, leader_epoch: 6 });
        assert!(matches!(src_rx.try_recv(), Ok(source::SourceCmd::Trigger(2))));
    }

    /// A large state from remote-like storage took longer to restore than the heartbeat
    /// timeout while the control loop waited for it: the jobmanager declared the node lost
    /// and restarted the job again and again. The restore now runs off the loop: `handle`
    /// returns at once, heartbeats go on, and the result arrives through `restored` (here a
    /// missing snapshot: the deployment fails with the task that could not restore).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_deployment_restores_off_the_control_loop() {
        let (cfg, routes) = (cfg(), SharedRoutes::default());
        let (mut running, mut restoring) = (None, None);
        let deploy = |attempt| {
            let job: JobSpec = serde_yaml::from_str("job_id: j\nparallelism: 1\ninput: { generate: { lines: 10 } }").unwrap();
            let handle = SnapshotHandle { path: "checkpoints/j/chk-4/count-0.snap".into(), crc32: 0, size: 10 };
            let restore = wire::Restore { checkpoint: 4, handles: vec![(TaskId::Count(0), handle)] };
            JmToTm::Deploy(Box::new(Deployment { attempt, leader_epoch: 1, job, assignments: vec![], local: vec![0], restore: Some(restore), catch_up: vec![] }))
        };
        handle(&cfg, &routes, &mut running, &mut restoring, 1, deploy(3));
        assert!(running.is_none() && restoring.as_ref().is_some_and(|r| r.attempt == 3), "restoring, not yet running");
        handle(&cfg, &routes, &mut running, &mut restoring, 1, deploy(2));
        assert_eq!(restoring.as_ref().map(|r| r.attempt), Some(3), "an older deployment does not replace a restoring one");
        let (attempt, r) = restored(&mut restoring).await;
        assert_eq!(attempt, 3);
        let Err((task, cause)) = r else { panic!("restored from a missing snapshot") };
        assert_eq!(task, TaskId::Count(0), "{cause}");
        assert!(restoring.is_none());
        // A cancel or a finish of the restoring attempt drops it.
        handle(&cfg, &routes, &mut running, &mut restoring, 1, deploy(4));
        handle(&cfg, &routes, &mut running, &mut restoring, 1, JmToTm::Cancel { attempt: 4, leader_epoch: 1 });
        assert!(restoring.is_none(), "cancelled while restoring");
        handle(&cfg, &routes, &mut running, &mut restoring, 1, deploy(5));
        handle(&cfg, &routes, &mut running, &mut restoring, 1, JmToTm::Finish { attempt: 5, leader_epoch: 1 });
        assert!(restoring.is_none(), "finished while restoring");
    }
}
