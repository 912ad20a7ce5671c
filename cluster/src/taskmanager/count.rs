//! The count task with the sink chained into it: keeps a running count per word (keyed
//! state of its hash partition) or, for a windowed job, per word and event-time window
//! ([`Windows`]); aligns barriers across its inputs, snapshots state, and commits output
//! through the two-phase-commit [`FileSink`]. A running count commits each changed word's
//! new count; a windowed count commits each window's counts once, after it fired.

use super::alignment::Aligner;
use super::sabotage::Sabotage;
use super::sink::FileSink;
use super::window::Windows;
use super::TaskCtx;
use crate::snapshot;
use crate::spec::Delivery;
use crate::wire::{self, FrameKind, TaskId, TmToJm, WireError};
use ahash::AHashMap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// Commands from the taskmanager to a running count task.
#[derive(Debug)]
pub enum CountCmd {
    /// Checkpoint `n` completed: commit.
    Complete(u64),
}

/// The count task's checkpoint state: the counts (a windowed job's open windows, keyed
/// `<start><TAB><word>`) and the sink's pending epochs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CountState {
    pub counts: Vec<(String, u64)>,
    pub pending: Vec<u64>,
    /// The attempt that took the snapshot, which staged the pending epochs (their files
    /// carry its number).
    #[serde(default)]
    pub attempt: u64,
}

/// What the input readers hand to the task.
enum Input {
    Batch(Vec<u8>),
    Barrier(u32, u64),
    Watermark(u32, u64),
    Closed(u32, String),
}

/// How often at-least-once commits eagerly between barriers.
const EAGER_COMMIT_EVERY: Duration = Duration::from_millis(100);

struct Entry {
    count: u64,
    /// The epoch generation in which this word last changed (dirty tracking).
    gen: u64,
}

pub async fn run(
    ctx: TaskCtx,
    subtask: u32,
    restore: Option<(u64, CountState)>,
    mut conns: mpsc::Receiver<(u32, TcpStream)>,
    mut cmds: mpsc::Receiver<CountCmd>,
) -> Result<(), String> {
    let job = ctx.job.clone();
    let p = job.parallelism;
    let exactly_once = job.delivery == Delivery::ExactlyOnce;
    let out_dir = ctx.data_dir.join("output").join(&job.job_id).join(subtask.to_string());
    let mut sink = FileSink::open(out_dir, ctx.attempt).map_err(|e| format!("opening the sink: {e}"))?;
    let sabotage = Sabotage::from_env();
    if let Some(Sabotage::SkipCommit { subtask: s, epoch }) = sabotage {
        if s == subtask {
            sink.forget_at_commit(epoch);
        }
    }

    let mut counts: AHashMap<Box<str>, Entry> = AHashMap::new();
    let mut windows = job.window_clock().map(|c| Windows::new(c, p));
    let (restored_checkpoint, restored) = restore.unwrap_or_default();
    sink.restore(&restored.pending, restored.attempt).map_err(|e| format!("restoring the sink: {e}"))?;
    match &mut windows {
        Some(w) => w.restore(restored.counts).map_err(|e| format!("restoring windows: {e}"))?,
        None => {
            for (w, c) in restored.counts {
                counts.insert(w.into_boxed_str(), Entry { count: c, gen: 0 });
            }
        }
    }
    let mut gen = 1u64;
    let mut dirty: Vec<Box<str>> = Vec::new();

    // Accept one connection per source subtask.
    let (tx, mut rx) = mpsc::channel::<Input>(16 * p as usize);
    let (release_tx, release_rx) = watch::channel(0u64);
    let mut connected = vec![false; p as usize];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while connected.iter().any(|c| !c) {
        let (from, stream) = tokio::time::timeout_at(deadline, conns.recv())
            .await
            .map_err(|_| "timed out waiting for every source to connect".to_string())?
            .ok_or("cancelled")?;
        if from >= p || connected[from as usize] {
            tracing::warn!(from, "unexpected or duplicate data connection; closing it");
            continue;
        }
        connected[from as usize] = true;
        tokio::spawn(read_input(from, stream, tx.clone(), release_rx.clone(), exactly_once));
    }
    drop(tx);

    let writer = spawn_writer(ctx.clone(), TaskId::Count(subtask));
    let mut aligner = Aligner::new(p);
    // Epochs continue from the restored checkpoint, so this attempt's at-least-once parts
    // sort after the ones the failed attempt wrote.
    let mut last_barrier = restored_checkpoint;
    // When the first barrier of the epoch being aligned arrived: the stall starts there.
    let mut align_started: Option<std::time::Instant> = None;
    let mut eager = tokio::time::interval(EAGER_COMMIT_EVERY);
    eager.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return Err("every input closed".into()) };
                match msg {
                    Input::Batch(payload) if windows.is_some() => {
                        let w = windows.as_mut().expect("windowed");
                        let mut bad = None;
                        let words = wire::for_each_entry(&payload, |k, c| {
                            if let Err(e) = w.add(k, c) {
                                bad.get_or_insert(e);
                            }
                        }).map_err(|e| format!("bad batch from a source: {e}"))?;
                        if let Some(e) = bad {
                            return Err(format!("bad batch from a source: {e}"));
                        }
                        if w.late > 0 {
                            // Only a source without alignment (at-least-once) replaying into
                            // fired windows gets here: dropped, as Flink drops late records.
                            tracing::warn!(records = w.late, "records for windows that had already fired dropped");
                            w.late = 0;
                        }
                        ctx.counters.words.fetch_add(words, Ordering::Relaxed);
                    }
                    Input::Watermark(input, t) => {
                        if let Some(w) = &mut windows {
                            let fired = w.on_watermark(input, t);
                            if fired > 0 {
                                tracing::debug!(fired, watermark = t, "windows fired");
                            }
                        }
                    }
                    Input::Batch(payload) => {
                        let words = wire::for_each_entry(&payload, |w, c| {
                            if let Some(e) = counts.get_mut(w) {
                                e.count += c as u64;
                                if e.gen != gen {
                                    e.gen = gen;
                                    dirty.push(w.into());
                                }
                            } else {
                                counts.insert(w.into(), Entry { count: c as u64, gen });
                                dirty.push(w.into());
                            }
                        }).map_err(|e| format!("bad batch from a source: {e}"))?;
                        ctx.counters.words.fetch_add(words, Ordering::Relaxed);
                    }
                    Input::Barrier(input, n) => {
                        let first = *align_started.get_or_insert_with(std::time::Instant::now);
                        if let Some(n) = aligner.on_barrier(input, n) {
                            align_started = None;
                            // Epoch n is complete on every input. Copy what the checkpoint
                            // needs (the epoch's updates, the counts), release the inputs at
                            // once, and let the writer make it durable and acknowledge: the
                            // data path never waits for an fsync (Flink's asynchronous phase).
                            let mut records: Vec<(Box<str>, u64)> = match &mut windows {
                                Some(w) => w.take_fired(),
                                None => std::mem::take(&mut dirty)
                                    .into_iter()
                                    .map(|w| {
                                        let c = counts.get(&w).map(|e| e.count).unwrap_or(0);
                                        (w, c)
                                    })
                                    .collect(),
                            };
                            if Sabotage::drops(sabotage, subtask, n) {
                                tracing::warn!(epoch = n, "sabotage: staging the epoch without its updates");
                                records.clear();
                            }
                            let staged = if exactly_once {
                                sink.will_stage(n);
                                Staged::Stage(sink.staged_path(n))
                            } else {
                                Staged::Commit(sink.eager_path(n))
                            };
                            let state = CountState {
                                counts: match &windows {
                                    Some(w) => w.snapshot(),
                                    None => counts.iter().map(|(w, e)| (w.to_string(), e.count)).collect(),
                                },
                                pending: sink.pending(),
                                attempt: ctx.attempt,
                            };
                            gen += 1;
                            last_barrier = n;
                            let _ = release_tx.send(n);
                            let stall_us = first.elapsed().as_micros() as u64;
                            if writer.send(WriteJob { checkpoint: n, staged, records, state, stall_us }).is_err() {
                                return Err("the checkpoint writer stopped".into());
                            }
                        }
                    }
                    Input::Closed(input, why) => return Err(format!("input from source-{input} lost: {why}")),
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(CountCmd::Complete(n)) => {
                    if exactly_once {
                        sink.commit_up_to(n).map_err(|e| format!("committing epoch {n}: {e}"))?;
                    }
                    let _ = ctx.outbox.send(TmToJm::Committed { attempt: ctx.attempt, subtask, checkpoint: n });
                }
                None => return Ok(()),
            },
            _ = eager.tick(), if !exactly_once && (!dirty.is_empty() || windows.as_ref().is_some_and(Windows::has_fired)) => {
                // at-least-once: output goes out at once, not at checkpoint completion.
                if let Some(w) = &mut windows {
                    let fired = w.take_fired();
                    sink.commit_eager(last_barrier + 1, fired.iter().map(|(k, c)| (&**k, *c)))
                        .map_err(|e| format!("eager commit: {e}"))?;
                    continue;
                }
                let records: Vec<(&str, u64)> =
                    dirty.iter().map(|w| (&**w, counts.get(w).map(|e| e.count).unwrap_or(0))).collect();
                sink.commit_eager(last_barrier + 1, records).map_err(|e| format!("eager commit: {e}"))?;
                dirty.clear();
                gen += 1;
            }
        }
    }
}

/// Where a checkpoint's output goes.
enum Staged {
    /// exactly-once: phase one of the two-phase commit.
    Stage(std::path::PathBuf),
    /// at-least-once: committed at once.
    Commit(std::path::PathBuf),
}

/// One checkpoint's durable part, done off the data path.
struct WriteJob {
    checkpoint: u64,
    staged: Staged,
    records: Vec<(Box<str>, u64)>,
    state: CountState,
    stall_us: u64,
}

/// An epoch whose staging failed: its number, where and what it stages.
type Unstaged = (u64, Staged, Vec<(Box<str>, u64)>);

/// The checkpoint writer: one job at a time, in checkpoint order, each acknowledged only
/// once durable.
///
/// A write that fails (EIO, ENOSPC, a failed fsync) declines that checkpoint and the task
/// goes on: a disk that fails for a while must cost checkpoints, not the job. The epoch is
/// already pending in the sink and listed in later snapshots, so its staged transaction
/// is kept in memory and written again before each later checkpoint's; a checkpoint is
/// acknowledged only when every epoch up to it is staged, so a commit of `<= m` never
/// skips over a hole.
fn spawn_writer(ctx: TaskCtx, id: TaskId) -> mpsc::UnboundedSender<WriteJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<WriteJob>();
    tokio::spawn(async move {
        // Epochs whose staging failed, oldest first, with what they must stage.
        let mut unstaged: Vec<Unstaged> = Vec::new();
        while let Some(job) = rx.recv().await {
            let data = ctx.data_dir.clone();
            let local = ctx.local_dir.clone();
            let job_id = ctx.job.job_id.clone();
            let (n, stall_us) = (job.checkpoint, job.stall_us);
            let retry = std::mem::take(&mut unstaged);
            let ((result, left), cpu_us) = tokio::task::spawn_blocking(move || super::with_thread_cpu(|| {
                let mut left = Vec::new();
                let mut first_err: Option<String> = None;
                for (e, staged, records) in retry.into_iter().chain(std::iter::once((n, job.staged, job.records))) {
                    let path = match &staged {
                        Staged::Stage(p) | Staged::Commit(p) => p,
                    };
                    if let Err(err) = crate::output::write_transaction(path, records.iter().map(|(w, c)| (&**w, *c))) {
                        first_err.get_or_insert(format!("staging epoch {e}: {err}"));
                        left.push((e, staged, records));
                    }
                }
                let result = match first_err {
                    Some(e) => Err(e),
                    None => snapshot::write_task_snapshot(&data, local.as_deref(), &job_id, n, id, &job.state).map_err(|e| e.to_string()),
                };
                (result, left)
            }))
            .await
            .unwrap_or_else(|e| ((Err(format!("checkpoint writer: {e}")), Vec::new()), 0));
            unstaged = left;
            match result {
                Ok(handle) => {
                    let _ = ctx.outbox.send(TmToJm::Ack { attempt: ctx.attempt, checkpoint: n, task: id, handle, lines: 0, stall_us, cpu_us });
                }
                Err(reason) => {
                    tracing::warn!(checkpoint = n, unstaged = unstaged.len(), "checkpoint write failed, checkpoint declined: {reason}");
                    let _ = ctx.outbox.send(TmToJm::Decline { attempt: ctx.attempt, checkpoint: n, task: id, reason });
                }
            }
        }
    });
    tx
}

/// Reads one input connection; in exactly-once mode, stops after each barrier until the
/// task releases it (so the sender is backpressured while this input is blocked).
async fn read_input(from: u32, stream: TcpStream, tx: mpsc::Sender<Input>, mut release: watch::Receiver<u64>, align: bool) {
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let mut buf = Vec::new();
    loop {
        let msg = match wire::read_frame(&mut r, &mut buf).await {
            Ok(()) => match wire::decode_kind(&buf) {
                Ok(FrameKind::Batch) => Input::Batch(std::mem::take(&mut buf)),
                Ok(FrameKind::Barrier(n)) => Input::Barrier(from, n),
                Ok(FrameKind::Watermark(t)) => Input::Watermark(from, t),
                Err(e) => Input::Closed(from, e.to_string()),
            },
            Err(WireError::Closed) => Input::Closed(from, "connection closed".into()),
            Err(e) => Input::Closed(from, e.to_string()),
        };
        let (barrier, closed) = match &msg {
            Input::Barrier(_, n) => (Some(*n), false),
            Input::Closed(..) => (None, true),
            _ => (None, false),
        };
        if tx.send(msg).await.is_err() || closed {
            return;
        }
        if let (Some(n), true) = (barrier, align) {
            if release.wait_for(|&r| r >= n).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::JobSpec;
    use std::sync::Arc;

    /// A staging write that fails declines its checkpoint and the task goes on; the epoch
    /// is staged again before the next checkpoint, which is acknowledged only then, so a
    /// later commit never skips it.
    #[tokio::test]
    async fn a_failed_staging_write_declines_and_is_staged_again_before_the_next_ack() {
        let d = tempfile::tempdir().unwrap();
        let job: JobSpec = serde_yaml::from_str("parallelism: 1\ninput: { generate: { lines: 10 } }").unwrap();
        let (outbox, mut out_rx) = mpsc::unbounded_channel();
        let ctx = TaskCtx { attempt: 4, job: Arc::new(job), data_dir: d.path().to_path_buf(), outbox, counters: Arc::default(), line_server: None, local_dir: None, input_root: None };
        let writer = spawn_writer(ctx, TaskId::Count(0));
        // A staged path whose directory does not exist yet: the write fails (a full disk).
        let dir = d.path().join("later-dir");
        let bad = dir.join("staged-3-4.tsv");
        let job = |n: u64, p: std::path::PathBuf, w: &str| WriteJob {
            checkpoint: n,
            staged: Staged::Stage(p),
            records: vec![(w.into(), n)],
            state: CountState::default(),
            stall_us: 0,
        };
        writer.send(job(3, bad.clone(), "three")).unwrap();
        let first = out_rx.recv().await.unwrap();
        assert!(matches!(first, TmToJm::Decline { attempt: 4, checkpoint: 3, .. }), "{first:?}");
        // Still failing: epoch 4 is declined too, though its own file could be written.
        let good4 = d.path().join("staged-4-4.tsv");
        writer.send(job(4, good4.clone(), "four")).unwrap();
        let second = out_rx.recv().await.unwrap();
        assert!(matches!(second, TmToJm::Decline { checkpoint: 4, .. }), "{second:?}");
        // The disk is back: epoch 3 is staged again, then 5, and checkpoint 5 is acknowledged.
        std::fs::create_dir_all(&dir).unwrap();
        let good5 = d.path().join("staged-5-4.tsv");
        writer.send(job(5, good5.clone(), "five")).unwrap();
        let third = out_rx.recv().await.unwrap();
        assert!(matches!(third, TmToJm::Ack { checkpoint: 5, .. }), "{third:?}");
        assert!(std::fs::read_to_string(&bad).unwrap().starts_with("three\t3\n"), "epoch 3 staged before the ack of 5");
        assert!(good4.exists() && good5.exists());
        // No TaskFailed: the task was never failed.
        assert!(out_rx.try_recv().is_err());
    }

    /// A count task under test: its inputs are real TCP connections on 127.0.0.1, handed
    /// over as the taskmanager's data server hands them, and the test writes frames as
    /// the sources would.
    struct Harness {
        dir: tempfile::TempDir,
        job: Arc<JobSpec>,
        conns: mpsc::Sender<(u32, TcpStream)>,
        cmds: mpsc::Sender<CountCmd>,
        out: mpsc::UnboundedReceiver<TmToJm>,
        task: tokio::task::JoinHandle<Result<(), String>>,
        listener: tokio::net::TcpListener,
    }

    impl Harness {
        /// Starts subtask 0 of a job; no input is connected yet.
        fn start(yaml: &str, attempt: u64, restore: Option<(u64, CountState)>) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            Harness::start_in(dir, yaml, attempt, restore)
        }

        fn start_in(dir: tempfile::TempDir, yaml: &str, attempt: u64, restore: Option<(u64, CountState)>) -> Harness {
            let job: Arc<JobSpec> = Arc::new(serde_yaml::from_str(yaml).unwrap());
            let (outbox, out) = mpsc::unbounded_channel();
            let ctx = TaskCtx { attempt, job: job.clone(), data_dir: dir.path().to_path_buf(), outbox, counters: Arc::default(), line_server: None, local_dir: None, input_root: None };
            let (conns, conns_rx) = mpsc::channel(8);
            let (cmds, cmds_rx) = mpsc::channel(8);
            let task = tokio::spawn(run(ctx, 0, restore, conns_rx, cmds_rx));
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            std_listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            Harness { dir, job, conns, cmds, out, task, listener }
        }

        /// Connects one input as source subtask `from`; returns the source's end.
        async fn connect(&self, from: u32) -> TcpStream {
            let (client, server) = tokio::join!(TcpStream::connect(self.listener.local_addr().unwrap()), self.listener.accept());
            self.conns.send((from, server.unwrap().0)).await.unwrap();
            client.unwrap()
        }

        fn out_dir(&self) -> std::path::PathBuf {
            self.dir.path().join("output").join(&self.job.job_id).join("0")
        }

        /// The next message to the jobmanager (within 10 s).
        async fn next(&mut self) -> TmToJm {
            tokio::time::timeout(Duration::from_secs(10), self.out.recv()).await.expect("a message from the task").expect("outbox open")
        }

        /// One transaction file of this subtask, its records sorted.
        fn read(&self, name: &str) -> Vec<(String, u64)> {
            let (mut records, ok) = crate::output::read_transaction(&self.out_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            ok.unwrap();
            records.sort();
            records
        }

        fn files(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(self.out_dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        }
    }

    async fn batch(s: &mut TcpStream, entries: &[(&str, u32)]) {
        let mut b = Vec::new();
        wire::begin_batch(&mut b);
        for (w, c) in entries {
            wire::push_entry(&mut b, w, *c);
        }
        wire::write_frame(s, &b).await.unwrap();
    }

    async fn barrier(s: &mut TcpStream, n: u64) {
        wire::write_frame(s, &wire::barrier_payload(n)).await.unwrap();
    }

    fn recs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(w, c)| (w.to_string(), *c)).collect()
    }

    const TWO: &str = "parallelism: 2\ninput: { generate: { lines: 10 } }";

    /// Exactly-once with two inputs: an input that delivered barrier n is held until the
    /// other delivers it too (what it sends meanwhile belongs to epoch n + 1); epoch n
    /// stages each word changed in it with its new total, is acknowledged with the stall
    /// of the alignment, and is committed only when checkpoint n completes.
    #[tokio::test]
    async fn barriers_are_aligned_and_each_epoch_stages_and_commits_its_changed_words() {
        let mut h = Harness::start(TWO, 3, None);
        // Connected after the task started waiting: it waits for both.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut a = h.connect(0).await;
        let mut b = h.connect(1).await;
        batch(&mut a, &[("x", 1), ("y", 2)]).await;
        batch(&mut b, &[("x", 3)]).await;
        barrier(&mut a, 1).await;
        // After its barrier: epoch 2, held back until b's barrier.
        batch(&mut a, &[("x", 100)]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        batch(&mut b, &[("z", 1)]).await;
        barrier(&mut b, 1).await;
        match h.next().await {
            TmToJm::Ack { attempt: 3, checkpoint: 1, task: TaskId::Count(0), stall_us, .. } => {
                assert!(stall_us >= 40_000, "the alignment waited 50 ms: {stall_us} us");
            }
            m => panic!("{m:?}"),
        }
        assert_eq!(h.read("staged-1-3.tsv"), recs(&[("x", 4), ("y", 2), ("z", 1)]));
        assert!(!h.out_dir().join("committed-1.tsv").exists(), "committed before the checkpoint completed");
        h.cmds.send(CountCmd::Complete(1)).await.unwrap();
        assert!(matches!(h.next().await, TmToJm::Committed { attempt: 3, subtask: 0, checkpoint: 1 }));
        assert_eq!(h.read("committed-1.tsv"), recs(&[("x", 4), ("y", 2), ("z", 1)]));
        // Epoch 2: only x changed (the held-back batch).
        barrier(&mut a, 2).await;
        barrier(&mut b, 2).await;
        assert!(matches!(h.next().await, TmToJm::Ack { checkpoint: 2, .. }));
        h.cmds.send(CountCmd::Complete(2)).await.unwrap();
        assert!(matches!(h.next().await, TmToJm::Committed { checkpoint: 2, .. }));
        assert_eq!(h.read("committed-2.tsv"), recs(&[("x", 104)]));
        assert_eq!(h.files(), ["committed-1.tsv", "committed-2.tsv"]);
        // The taskmanager closing the command channel ends the task cleanly.
        drop(h.cmds);
        assert_eq!(h.task.await.unwrap(), Ok(()));
    }

    /// A second connection claiming an input already connected (a stale source of an
    /// older deployment, or a retry) is closed: its data never counts.
    #[tokio::test]
    async fn a_duplicate_input_connection_is_ignored() {
        let mut h = Harness::start(TWO, 1, None);
        let mut a = h.connect(0).await;
        let mut stale = h.connect(0).await;
        batch(&mut stale, &[("stale", 5)]).await;
        let mut b = h.connect(1).await;
        batch(&mut a, &[("w", 1)]).await;
        barrier(&mut a, 1).await;
        barrier(&mut b, 1).await;
        assert!(matches!(h.next().await, TmToJm::Ack { checkpoint: 1, .. }));
        assert_eq!(h.read("staged-1-1.tsv"), recs(&[("w", 1)]));
    }

    /// A restored task continues the restored counts, commits the restored snapshot's
    /// pending epochs (they belong to a completed checkpoint) and numbers its epochs on
    /// from the restored checkpoint.
    #[tokio::test]
    async fn a_restored_task_continues_the_counts_and_commits_the_restored_pending_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("output").join("wordcount").join("0");
        std::fs::create_dir_all(&out).unwrap();
        crate::output::write_transaction(&out.join("staged-5-1.tsv"), [("x", 7u64)]).unwrap();
        let restored = CountState { counts: vec![("x".into(), 7), ("y".into(), 1)], pending: vec![5], attempt: 1 };
        let mut h = Harness::start_in(dir, TWO, 2, Some((5, restored)));
        let mut a = h.connect(0).await;
        let mut b = h.connect(1).await;
        assert_eq!(h.read("committed-5.tsv"), recs(&[("x", 7)]), "committed at restore");
        batch(&mut b, &[("x", 1)]).await;
        barrier(&mut a, 6).await;
        barrier(&mut b, 6).await;
        assert!(matches!(h.next().await, TmToJm::Ack { attempt: 2, checkpoint: 6, .. }));
        assert_eq!(h.read("staged-6-2.tsv"), recs(&[("x", 8)]));
    }

    /// At-least-once: no alignment and no staging; changed words are committed at once,
    /// as parts of the epoch after the latest barrier.
    #[tokio::test]
    async fn at_least_once_commits_changed_words_eagerly_between_barriers() {
        let yaml = "parallelism: 2\ndelivery: at-least-once\ninput: { generate: { lines: 10 } }";
        let restored = CountState { counts: vec![("x".into(), 7)], pending: vec![], attempt: 1 };
        let mut h = Harness::start(yaml, 2, Some((4, restored)));
        let mut a = h.connect(0).await;
        let mut b = h.connect(1).await;
        batch(&mut a, &[("x", 1)]).await;
        barrier(&mut a, 5).await;
        // Not aligned: what a sends after its barrier counts before b's barrier.
        batch(&mut a, &[("y", 1)]).await;
        // Every part committed so far of epoch 5 (the epoch after the restored 4), each
        // word at its latest count.
        let epoch5 = |h: &Harness| {
            let mut seen = std::collections::BTreeMap::new();
            for f in h.files().into_iter().filter(|f| f.starts_with("committed-5")) {
                for (w, c) in h.read(&f) {
                    let e = seen.entry(w).or_insert(0);
                    *e = c.max(*e);
                }
            }
            seen.into_iter().collect::<Vec<_>>()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while epoch5(&h).len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(epoch5(&h), recs(&[("x", 8), ("y", 1)]), "{:?}", h.files());
        barrier(&mut b, 5).await;
        assert!(matches!(h.next().await, TmToJm::Ack { checkpoint: 5, .. }));
        assert!(h.files().iter().all(|f| !f.starts_with("staged-")), "{:?}", h.files());
    }

    /// Twenty inputs (more than the input queue's per-input share of 16 at low
    /// parallelism): a barrier completes only once it arrived on every one of them.
    #[tokio::test]
    async fn a_barrier_is_aligned_across_twenty_inputs() {
        let mut h = Harness::start("parallelism: 20\ninput: { generate: { lines: 10 } }", 1, None);
        let mut inputs = Vec::new();
        for from in 0..20 {
            inputs.push(h.connect(from).await);
        }
        for (i, s) in inputs.iter_mut().enumerate() {
            batch(s, &[("w", 1)]).await;
            if i < 19 {
                barrier(s, 1).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(h.out.try_recv().is_err(), "acknowledged before the last input's barrier");
        barrier(&mut inputs[19], 1).await;
        assert!(matches!(h.next().await, TmToJm::Ack { checkpoint: 1, .. }));
        assert_eq!(h.read("staged-1-1.tsv"), recs(&[("w", 20)]));
    }

    /// An input that closes fails the task with the input named: the jobmanager restarts
    /// the job rather than count a partial epoch. The task's other inputs are let go once
    /// it is gone: their source sees the connection closed instead of sending on into a
    /// task that no longer counts.
    #[tokio::test]
    async fn a_lost_input_fails_the_task_and_lets_go_of_the_others() {
        let h = Harness::start(TWO, 1, None);
        let a = h.connect(0).await;
        let mut b = h.connect(1).await;
        drop(a);
        let r = tokio::time::timeout(Duration::from_secs(10), h.task).await.unwrap().unwrap();
        assert!(r.as_ref().is_err_and(|e| e.contains("input from source-0 lost")), "{r:?}");
        batch(&mut b, &[("late", 1)]).await;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut b, &mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the other input is still held open: {read:?}");
    }
}
