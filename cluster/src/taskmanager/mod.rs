//! The taskmanager: registers its slots with the jobmanager, heartbeats, runs the tasks
//! the jobmanager deploys (fenced by attempt), and serves the data port where sources of
//! any taskmanager connect to its count tasks.
//!
//! A taskmanager that loses its jobmanager (connection closed, or no word from it within
//! the heartbeat timeout) cancels its tasks and registers again; the jobmanager redeploys.

pub mod alignment;
pub mod count;
pub mod sink;
pub mod source;

use crate::spec::JobSpec;
use crate::snapshot;
use crate::wire::{self, DataHello, Deployment, JmToTm, TaskId, TaskMetrics, TmToJm};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
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
}

/// The tasks of the attempt this taskmanager currently runs.
struct Running {
    attempt: u64,
    handles: Vec<JoinHandle<()>>,
    sources: HashMap<u32, mpsc::Sender<source::SourceCmd>>,
    counts: HashMap<u32, mpsc::Sender<count::CountCmd>>,
    metrics: Vec<(TaskId, Arc<Counters>)>,
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

    let mut running: Option<Running> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let session = session(&cfg, &routes, &mut running);
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
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
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

/// One registration with the jobmanager; returns when the connection is lost.
async fn session(cfg: &TmConfig, routes: &SharedRoutes, running: &mut Option<Running>) -> Result<(), String> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&cfg.jobmanager))
        .await
        .map_err(|_| format!("connecting to {} timed out", cfg.jobmanager))?
        .map_err(|e| format!("cannot connect to {}: {e}", cfg.jobmanager))?;
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
    loop {
        tokio::select! {
            m = in_rx.recv() => {
                let m = m.ok_or("reader ended")??;
                last_heard = Instant::now();
                handle(cfg, routes, running, &outbox, leader_epoch, m);
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

/// Acts on one jobmanager command.
fn handle(cfg: &TmConfig, routes: &SharedRoutes, running: &mut Option<Running>, outbox: &Outbox, epoch: u64, m: JmToTm) {
    let current = running.as_ref().map(|r| r.attempt);
    match m {
        JmToTm::Heartbeat | JmToTm::Registered { .. } => {}
        JmToTm::Deploy(d) => {
            if d.leader_epoch < epoch {
                tracing::warn!(attempt = d.attempt, "ignoring a deployment from a stale leader epoch");
                return;
            }
            if current.is_some_and(|a| a >= d.attempt) {
                tracing::warn!(attempt = d.attempt, "ignoring a deployment of an old attempt");
                return;
            }
            cancel(running, routes);
            let attempt = d.attempt;
            match deploy(cfg, routes, outbox, *d) {
                Ok(r) => {
                    *running = Some(r);
                    let _ = outbox.send(TmToJm::Deployed { attempt });
                }
                Err((task, cause)) => {
                    let _ = outbox.send(TmToJm::TaskFailed { attempt, task, cause });
                }
            }
        }
        JmToTm::Cancel { attempt } => {
            if current == Some(attempt) {
                cancel(running, routes);
            }
        }
        JmToTm::Finish { attempt } => {
            if current == Some(attempt) {
                tracing::info!(attempt, "job finished; stopping tasks");
                cancel(running, routes);
            }
        }
        JmToTm::Trigger { attempt, checkpoint } => {
            if let Some(r) = running.as_ref().filter(|r| r.attempt == attempt) {
                for tx in r.sources.values() {
                    let _ = tx.try_send(source::SourceCmd::Trigger(checkpoint));
                }
            }
        }
        JmToTm::Complete { attempt, checkpoint } => {
            if let Some(r) = running.as_ref().filter(|r| r.attempt == attempt) {
                for tx in r.counts.values() {
                    let _ = tx.try_send(count::CountCmd::Complete(checkpoint));
                }
            }
        }
    }
}

/// Starts the tasks of one deployment.
fn deploy(cfg: &TmConfig, routes: &SharedRoutes, outbox: &Outbox, d: Deployment) -> Result<Running, (TaskId, String)> {
    let job = Arc::new(d.job);
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
    };
    let restore_handle = |t: TaskId| d.restore.as_ref().and_then(|rs| rs.handles.iter().find(|(id, _)| *id == t).map(|(_, h)| h.clone()));
    let mut new_inputs = HashMap::new();
    for &i in &d.local {
        // Count task (sink chained).
        let counters = Arc::new(Counters::default());
        let ctx = TaskCtx { attempt: d.attempt, job: job.clone(), data_dir: cfg.data_dir.clone(), outbox: outbox.clone(), counters: counters.clone() };
        let restore = match restore_handle(TaskId::Count(i)) {
            Some(h) => {
                let st: count::CountState = snapshot::read_task_snapshot(&cfg.data_dir, &h).map_err(|e| (TaskId::Count(i), e.to_string()))?;
                Some((d.restore.as_ref().map(|r| r.checkpoint).unwrap_or(0), st))
            }
            None => None,
        };
        let (conn_tx, conn_rx) = mpsc::channel(p as usize + 4);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        new_inputs.insert(i, conn_tx);
        r.counts.insert(i, cmd_tx);
        r.metrics.push((TaskId::Count(i), counters));
        r.handles.push(spawn_task(ctx.clone(), TaskId::Count(i), count::run(ctx, i, restore, conn_rx, cmd_rx)));

        // Source task (tokenizer chained).
        let counters = Arc::new(Counters::default());
        let ctx = TaskCtx { attempt: d.attempt, job: job.clone(), data_dir: cfg.data_dir.clone(), outbox: outbox.clone(), counters: counters.clone() };
        let restore = match restore_handle(TaskId::Source(i)) {
            Some(h) => Some(snapshot::read_task_snapshot::<source::SourceState>(&cfg.data_dir, &h).map_err(|e| (TaskId::Source(i), e.to_string()))?),
            None => None,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        r.sources.insert(i, cmd_tx);
        r.metrics.push((TaskId::Source(i), counters));
        r.handles.push(spawn_task(ctx.clone(), TaskId::Source(i), source::run(ctx, i, outputs.clone(), restore, cmd_rx)));
    }
    if let Ok(mut g) = routes.lock() {
        g.attempt = d.attempt;
        g.inputs = new_inputs;
    }
    tracing::info!(attempt = d.attempt, pipelines = ?d.local, restore = ?d.restore.as_ref().map(|r| r.checkpoint), "deployed");
    Ok(r)
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
