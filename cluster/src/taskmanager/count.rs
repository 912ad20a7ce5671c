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
                        if let Some(n) = aligner.on_barrier(input, n) {
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
                            if writer.send(WriteJob { checkpoint: n, staged, records, state }).is_err() {
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
}

/// The checkpoint writer: one job at a time, in checkpoint order (so when checkpoint `m`
/// is acknowledged every earlier staged epoch is on disk too, and a commit of `<= m` finds
/// them), each acknowledged only once durable.
///
/// A write that fails declines the checkpoint *and fails the task*, and the writer stops:
/// the epoch is already pending in the sink and listed in later snapshots, so carrying on
/// would commit a later epoch over a hole. The restart restores the latest completed
/// checkpoint and aborts what this attempt staged.
fn spawn_writer(ctx: TaskCtx, id: TaskId) -> mpsc::UnboundedSender<WriteJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<WriteJob>();
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let data = ctx.data_dir.clone();
            let job_id = ctx.job.job_id.clone();
            let n = job.checkpoint;
            let result = tokio::task::spawn_blocking(move || {
                let path = match &job.staged {
                    Staged::Stage(p) | Staged::Commit(p) => p,
                };
                crate::output::write_transaction(path, job.records.iter().map(|(w, c)| (&**w, *c)))
                    .map_err(|e| format!("staging epoch {n}: {e}"))?;
                snapshot::write_task_snapshot(&data, &job_id, n, id, &job.state).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("checkpoint writer: {e}")));
            match result {
                Ok(handle) => {
                    let _ = ctx.outbox.send(TmToJm::Ack { attempt: ctx.attempt, checkpoint: n, task: id, handle, lines: 0 });
                }
                Err(reason) => {
                    tracing::warn!(checkpoint = n, "checkpoint write failed: {reason}");
                    let _ = ctx.outbox.send(TmToJm::Decline { attempt: ctx.attempt, checkpoint: n, task: id, reason: reason.clone() });
                    let _ = ctx.outbox.send(TmToJm::TaskFailed { attempt: ctx.attempt, task: id, cause: reason });
                    return;
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

    /// Issue 10, item 1: a staging write that fails must fail the task, not only decline
    /// the checkpoint (the epoch stays pending and a later commit would skip it).
    #[tokio::test]
    async fn a_failed_staging_write_declines_and_fails_the_task_and_stops_the_writer() {
        let d = tempfile::tempdir().unwrap();
        let job: JobSpec = serde_yaml::from_str("parallelism: 1\ninput: { generate: { lines: 10 } }").unwrap();
        let (outbox, mut out_rx) = mpsc::unbounded_channel();
        let ctx = TaskCtx { attempt: 4, job: Arc::new(job), data_dir: d.path().to_path_buf(), outbox, counters: Arc::default(), line_server: None };
        let writer = spawn_writer(ctx, TaskId::Count(0));
        // A staged path whose directory does not exist: the write fails.
        let bad = d.path().join("missing-dir").join("staged-3-4.tsv");
        let job = |n: u64, p: std::path::PathBuf| WriteJob { checkpoint: n, staged: Staged::Stage(p), records: vec![], state: CountState::default() };
        // Epoch 4 is queued behind it and would be written fine.
        let good = d.path().join("staged-4-4.tsv");
        writer.send(job(3, bad)).unwrap();
        writer.send(job(4, good.clone())).unwrap();
        let first = out_rx.recv().await.unwrap();
        assert!(matches!(first, TmToJm::Decline { attempt: 4, checkpoint: 3, .. }), "{first:?}");
        let second = out_rx.recv().await.unwrap();
        assert!(matches!(second, TmToJm::TaskFailed { attempt: 4, task: TaskId::Count(0), .. }), "{second:?}");
        // The writer is gone: the later epoch is never written over the hole.
        assert!(out_rx.recv().await.is_none(), "the writer must stop after a failed write");
        assert!(!good.exists());
    }
}
