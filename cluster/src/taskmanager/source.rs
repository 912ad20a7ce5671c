//! The source task, with the tokenizer chained into it: reads its partition of the input
//! (replayable from a position in checkpoint state), tokenizes, pre-aggregates each chunk
//! of lines into `(word, count)` pairs, hash-partitions them to the count tasks over TCP,
//! and injects checkpoint barriers between chunks. A windowed job's source keys each word
//! by its line's event-time window and sends a watermark after every chunk: the time of
//! the next line it owns (see `streamd_contract::window`), so a barrier always follows the
//! watermark of exactly the position it records.

use super::TaskCtx;
use crate::input::{FilePosition, Generator, PartitionReader, ReadOutcome};
use crate::snapshot;
use crate::spec::InputSpec;
use crate::tokenizer::for_each_token;
use crate::window::{self, WindowClock, END_OF_TIME};
use crate::wire::{self, Assignment, DataHello, TaskId, TmToJm};
use ahash::AHashMap;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Commands from the taskmanager to a running source.
#[derive(Debug)]
pub enum SourceCmd {
    Trigger(u64),
}

/// A source's checkpoint state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceState {
    /// Lines of this subtask's partition consumed so far. Socket input: the global index
    /// of the next line (subtask 0; the others read nothing), which the line server is told
    /// on reconnection so it can journal what was lost.
    pub lines: u64,
    /// File sources: where to resume reading.
    pub file: FilePosition,
}

/// Where lines come from. Each read returns the line's global index (its position in
/// the whole input, over all subtasks) with the text.
enum Lines {
    Generate { gen: Generator, next: u64, subtask: u64, p: u64 },
    File(PartitionReader),
    Socket(super::socket::SocketLines),
    /// Socket input on a subtask other than 0: the socket source is non-parallel.
    Nothing,
}

/// Bytes of text per chunk when unthrottled; a barrier can only wait this long.
const CHUNK_BYTES: usize = 256 * 1024;

pub async fn run(
    ctx: TaskCtx,
    subtask: u32,
    outputs: Vec<Assignment>,
    restore: Option<SourceState>,
    mut cmds: mpsc::Receiver<SourceCmd>,
) -> Result<(), String> {
    let job = ctx.job.clone();
    let p = job.parallelism;
    let mut state = restore.unwrap_or_default();
    let mut lines = open_lines(&ctx, subtask, p, &state)?;
    ctx.counters.lines.store(state.lines, Ordering::Relaxed);

    let mut outs = connect_outputs(&ctx, subtask, &outputs).await?;
    let id = TaskId::Source(subtask);
    let clock = job.window_clock();
    // Windowed: where event time stands before the first chunk (a restored source resumes
    // mid-input; an empty partition is already at the end).
    let mut watermark = 0;
    if let Some(c) = clock {
        watermark = source_watermark(&lines, c, subtask, p, state.lines)?;
        send_watermark(watermark, &mut outs).await?;
    }
    // Windowed: `(window start, end of its lines in the chunk)`, in chunk order.
    let mut segments: Vec<(u64, usize)> = Vec::new();

    // Rate limit: this subtask's share of the lines per second.
    let rate = if job.input.rate == 0 { 0.0 } else { (job.input.rate as f64 / p as f64).max(0.001) };
    let chunk_lines = if rate > 0.0 { ((rate / 100.0) as usize).max(1) } else { usize::MAX };
    let start = Instant::now();
    let start_lines = state.lines;

    let mut chunk = String::with_capacity(CHUNK_BYTES + 4096);
    let mut frames: Vec<Vec<u8>> = vec![Vec::new(); p as usize];
    let mut ended = false;
    loop {
        // Barriers go between chunks, so a chunk never straddles a checkpoint.
        while let Ok(cmd) = cmds.try_recv() {
            handle_cmd(&ctx, id, cmd, &state, &mut outs).await?;
        }
        if ended {
            match cmds.recv().await {
                Some(cmd) => {
                    handle_cmd(&ctx, id, cmd, &state, &mut outs).await?;
                    continue;
                }
                None => return Ok(()),
            }
        }
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64((state.lines - start_lines) as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    cmd = cmds.recv() => if let Some(cmd) = cmd { handle_cmd(&ctx, id, cmd, &state, &mut outs).await? },
                }
                continue;
            }
        }
        // Read a chunk.
        chunk.clear();
        segments.clear();
        let mut n = 0usize;
        let mut pending = false;
        while n < chunk_lines && chunk.len() < CHUNK_BYTES {
            match next_line(&mut lines, &mut chunk)? {
                // `i`: the line's global index in the whole input (feed order for a
                // socket), whatever the source: what event time derives from.
                ReadOutcome::Line(i) => {
                    chunk.push('\n');
                    n += 1;
                    if let Some(c) = clock {
                        let start = c.window_of_line(i);
                        match segments.last_mut() {
                            Some((s, end)) if *s == start => *end = chunk.len(),
                            _ => segments.push((start, chunk.len())),
                        }
                    }
                }
                ReadOutcome::Pending => {
                    pending = true;
                    break;
                }
                ReadOutcome::End => {
                    ended = true;
                    break;
                }
            }
        }
        if n > 0 {
            let words = match clock {
                None => emit_chunk(&chunk, p, &mut frames, &mut outs).await?,
                Some(_) => emit_window_chunk(&chunk, &segments, p, &mut frames, &mut outs).await?,
            };
            state.lines = match &lines {
                Lines::Socket(s) => s.next_index(),
                _ => state.lines + n as u64,
            };
            if let Lines::File(r) = &lines {
                state.file = r.position();
            }
            ctx.counters.lines.store(state.lines, Ordering::Relaxed);
            ctx.counters.words.fetch_add(words, Ordering::Relaxed);
            if let Some(c) = clock {
                let w = if ended { END_OF_TIME } else { source_watermark(&lines, c, subtask, p, state.lines)? };
                // The chunk's frames are buffered, not flushed: one flush for both.
                if w > watermark {
                    watermark = w;
                    send_watermark(w, &mut outs).await?;
                } else {
                    flush(&mut outs).await?;
                }
            }
        }
        if ended && clock.is_some() && watermark < END_OF_TIME {
            watermark = END_OF_TIME;
            send_watermark(watermark, &mut outs).await?;
        }
        if ended {
            tracing::info!(subtask, lines = state.lines, "source reached the end of its input");
            let _ = ctx.outbox.send(TmToJm::SourceEnded { attempt: ctx.attempt, subtask, lines: state.lines });
        } else if pending && n == 0 {
            // Follow mode, nothing new yet: wait a little (or for a trigger).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                cmd = cmds.recv() => if let Some(cmd) = cmd { handle_cmd(&ctx, id, cmd, &state, &mut outs).await? },
            }
        }
    }
}

fn open_lines(ctx: &TaskCtx, subtask: u32, p: u32, state: &SourceState) -> Result<Lines, String> {
    let (input, data): (&InputSpec, &Path) = (&ctx.job.input, &ctx.data_dir);
    if let Some(s) = &input.socket {
        if subtask != 0 {
            return Ok(Lines::Nothing);
        }
        let addr = ctx.line_server.clone().unwrap_or_else(|| format!("{}:{}", s.host, s.port));
        Ok(Lines::Socket(super::socket::SocketLines::connect(addr, ctx.attempt, state.lines)))
    } else if let Some(g) = &input.generate {
        Ok(Lines::Generate {
            gen: Generator::new(g),
            next: subtask as u64 + state.lines * p as u64,
            subtask: subtask as u64,
            p: p as u64,
        })
    } else if let Some(f) = &input.file {
        let path = data.join(&f.path);
        PartitionReader::open(&path, subtask, p, f.follow, state.file)
            .map(Lines::File)
            .map_err(|e| format!("cannot open input file {}: {e}", path.display()))
    } else {
        Err("the job has no input".into())
    }
}

fn next_line(lines: &mut Lines, out: &mut String) -> Result<ReadOutcome, String> {
    match lines {
        Lines::Generate { gen, next, p, subtask } => {
            let _ = subtask;
            if *next >= gen.lines() {
                return Ok(ReadOutcome::End);
            }
            gen.line_into(*next, out);
            let i = *next;
            *next += *p;
            Ok(ReadOutcome::Line(i))
        }
        Lines::File(r) => {
            let o = r.next_line().map_err(|e| format!("reading input: {e}"))?;
            if let ReadOutcome::Line(_) = o {
                out.push_str(&r.text);
            }
            Ok(o)
        }
        Lines::Socket(s) => s.next_line(out),
        Lines::Nothing => Ok(ReadOutcome::End),
    }
}

/// The watermark after `consumed` lines: the next owned line's time, or the end of time
/// once no owned line is left (the generator knows its length; a file is looked ahead in).
fn source_watermark(lines: &Lines, c: WindowClock, subtask: u32, p: u32, consumed: u64) -> Result<u64, String> {
    let total = match lines {
        // The one socket reader owns every line: the next is the server's next index
        // (`consumed` holds it); the other subtasks own none.
        Lines::Socket(_) => return Ok(window::event_time(consumed, c.per_line_ms)),
        Lines::Nothing => return Ok(END_OF_TIME),
        Lines::Generate { gen, .. } => Some(gen.lines()),
        Lines::File(r) => {
            let more = r.has_more().map_err(|e| format!("reading input: {e}"))?;
            // Without more lines the next one is past the end; with more (or a followed
            // file that may grow) the bound is unknown.
            (!more).then_some(0)
        }
    };
    Ok(window::source_watermark(subtask, p, consumed, c.per_line_ms, total))
}

async fn send_watermark(t: u64, outs: &mut [BufWriter<OwnedWriteHalf>]) -> Result<(), String> {
    let w = wire::watermark_payload(t);
    for out in outs.iter_mut() {
        wire::write_frame(out, &w).await.map_err(|e| format!("sending a watermark: {e}"))?;
        out.flush().await.map_err(|e| format!("sending a watermark: {e}"))?;
    }
    Ok(())
}

/// [`emit_chunk`] for a windowed job: each token keyed by its line's window
/// (`<start><TAB><word>`), partitioned by the word alone, so a word's windows all live in
/// one count task as in Flink's `keyBy(word).window(...)`.
async fn emit_window_chunk(
    chunk: &str,
    segments: &[(u64, usize)],
    p: u32,
    frames: &mut [Vec<u8>],
    outs: &mut [BufWriter<OwnedWriteHalf>],
) -> Result<u64, String> {
    let mut agg: AHashMap<(u64, &str), u32> = AHashMap::with_capacity(4096);
    let mut words = 0u64;
    let mut from = 0;
    for &(start, end) in segments {
        for_each_token(&chunk[from..end], |w| {
            *agg.entry((start, w)).or_insert(0) += 1;
            words += 1;
        });
        from = end;
    }
    for f in frames.iter_mut() {
        wire::begin_batch(f);
    }
    let mut key = String::new();
    for ((start, w), c) in agg {
        let dest = wire::partition(w, p) as usize;
        key.clear();
        window::push_key(&mut key, start, w);
        wire::push_entry(&mut frames[dest], &key, c);
    }
    // Flushed with the watermark that follows (see the caller).
    write_frames(frames, outs).await?;
    Ok(words)
}

/// Sends every non-empty batch frame and flushes.
async fn send_frames(frames: &[Vec<u8>], outs: &mut [BufWriter<OwnedWriteHalf>]) -> Result<(), String> {
    write_frames(frames, outs).await?;
    flush(outs).await
}

/// Writes every non-empty batch frame into the output buffers.
async fn write_frames(frames: &[Vec<u8>], outs: &mut [BufWriter<OwnedWriteHalf>]) -> Result<(), String> {
    for (f, out) in frames.iter().zip(outs.iter_mut()) {
        if f.len() > 1 {
            wire::write_frame(out, f).await.map_err(|e| format!("sending to a count task: {e}"))?;
        }
    }
    Ok(())
}

async fn flush(outs: &mut [BufWriter<OwnedWriteHalf>]) -> Result<(), String> {
    for out in outs.iter_mut() {
        out.flush().await.map_err(|e| format!("sending to a count task: {e}"))?;
    }
    Ok(())
}

/// Tokenizes a chunk, pre-aggregates, partitions and sends. Returns the words emitted.
async fn emit_chunk(chunk: &str, p: u32, frames: &mut [Vec<u8>], outs: &mut [BufWriter<OwnedWriteHalf>]) -> Result<u64, String> {
    let mut agg: AHashMap<&str, u32> = AHashMap::with_capacity(4096);
    let mut words = 0u64;
    for_each_token(chunk, |w| {
        *agg.entry(w).or_insert(0) += 1;
        words += 1;
    });
    for f in frames.iter_mut() {
        wire::begin_batch(f);
    }
    for (w, c) in agg {
        let dest = wire::partition(w, p) as usize;
        wire::push_entry(&mut frames[dest], w, c);
    }
    send_frames(frames, outs).await?;
    Ok(words)
}

async fn handle_cmd(
    ctx: &TaskCtx,
    id: TaskId,
    cmd: SourceCmd,
    state: &SourceState,
    outs: &mut [BufWriter<OwnedWriteHalf>],
) -> Result<(), String> {
    match cmd {
        SourceCmd::Trigger(n) => {
            // The barrier goes out at once: everything before it is covered by the
            // position copied here. Writing that position durably (an fsync) happens off
            // the data path; the checkpoint is acknowledged only once it is on disk.
            let b = wire::barrier_payload(n);
            for out in outs.iter_mut() {
                wire::write_frame(out, &b).await.map_err(|e| format!("sending a barrier: {e}"))?;
                out.flush().await.map_err(|e| format!("sending a barrier: {e}"))?;
            }
            let (data, job, st, outbox, attempt) =
                (ctx.data_dir.clone(), ctx.job.job_id.clone(), state.clone(), ctx.outbox.clone(), ctx.attempt);
            tokio::spawn(async move {
                let lines = st.lines;
                let res = tokio::task::spawn_blocking(move || snapshot::write_task_snapshot(&data, &job, n, id, &st))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let _ = outbox.send(match res {
                    Ok(handle) => TmToJm::Ack { attempt, checkpoint: n, task: id, handle, lines },
                    Err(reason) => TmToJm::Decline { attempt, checkpoint: n, task: id, reason },
                });
            });
            Ok(())
        }
    }
}

/// Connects to every count task (retrying while their taskmanagers deploy).
async fn connect_outputs(ctx: &TaskCtx, subtask: u32, outputs: &[Assignment]) -> Result<Vec<BufWriter<OwnedWriteHalf>>, String> {
    let mut outs = Vec::with_capacity(outputs.len());
    for a in outputs {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match TcpStream::connect(&a.data_address).await {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("connect to {} failed ({e}); retrying", a.data_address);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(format!("cannot connect to count-{} at {}: {e}", a.subtask, a.data_address)),
            }
        };
        let _ = stream.set_nodelay(true);
        let (_r, w) = stream.into_split();
        let mut w = BufWriter::with_capacity(256 * 1024, w);
        let hello = DataHello { attempt: ctx.attempt, from: subtask, to: a.subtask };
        wire::write_json(&mut w, &hello).await.map_err(|e| format!("handshake with {}: {e}", a.data_address))?;
        outs.push(w);
    }
    Ok(outs)
}

