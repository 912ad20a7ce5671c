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
}
