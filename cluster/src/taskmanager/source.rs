//! The source task, with the tokenizer chained into it: reads its partition of the input
//! (replayable from a position in checkpoint state), tokenizes, pre-aggregates each chunk
//! of lines into `(word, count)` pairs, hash-partitions them to the count tasks over TCP,
//! and injects checkpoint barriers between chunks. A windowed job's source keys each word
//! by its line's event-time window and sends a watermark after every chunk: the time of
//! the next line it owns (see `streamd_contract::window`), so a barrier always follows the
//! watermark of exactly the position it records.
//!
//! A deployment that restored an older checkpoint than the latest completed one carries
//! catch-up checkpoints (see `jobmanager::catch_up`): the source injects each one's barrier
//! itself, without a trigger, once it has consumed exactly that checkpoint's position, and
//! never reads a chunk across it. Watermarks depend on the position alone, so the barrier
//! follows the same watermark it followed the first time.

use super::TaskCtx;
use crate::input::{FilePosition, Generator, PartitionReader, ReadOutcome};
use crate::snapshot;
use crate::spec::InputSpec;
use crate::tokenizer::for_each_token;
use crate::window::{self, WindowClock, END_OF_TIME};
use crate::wire::{self, Assignment, DataHello, TaskId, TmToJm};
use ahash::AHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
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

/// Catch-up barriers: `(checkpoint, position)` in checkpoint order, each injected by the
/// source once it has consumed exactly `position` lines of its partition.
#[derive(Debug, Default)]
pub struct CatchUpBarriers {
    queue: VecDeque<(u64, u64)>,
}

impl CatchUpBarriers {
    /// The barriers of `list` for a source resuming at `lines`. Positions must not go
    /// backwards, nor start behind `lines`: a replay only moves forward.
    pub fn new(list: Vec<(u64, u64)>, lines: u64) -> Result<Self, String> {
        let mut at = (0, lines);
        for &(n, pos) in &list {
            if n <= at.0 || pos < at.1 {
                return Err(format!("catch-up checkpoint {n} at line {pos} comes after checkpoint {} at line {}: out of order", at.0, at.1));
            }
            at = (n, pos);
        }
        Ok(CatchUpBarriers { queue: list.into() })
    }

    /// The barriers due once `lines` are consumed, in order (taken from the queue).
    pub fn due(&mut self, lines: u64) -> Vec<u64> {
        let mut due = Vec::new();
        while let Some(&(n, _)) = self.queue.front().filter(|(_, pos)| *pos == lines) {
            self.queue.pop_front();
            due.push(n);
        }
        due
    }

    /// How many more lines may be read before the next barrier is due (`None`: any).
    pub fn room(&self, lines: u64) -> Option<u64> {
        self.queue.front().map(|&(_, pos)| pos.saturating_sub(lines))
    }

    /// At the end of the input, after `lines`: a barrier still waiting beyond it can never
    /// be injected (the input is not the one the checkpoint saw). Those at `lines` are due.
    pub fn at_end(&self, lines: u64) -> Result<(), String> {
        match self.queue.iter().find(|(_, pos)| *pos > lines) {
            Some(&(n, pos)) => Err(format!(
                "the input ended after {lines} lines of this partition, before catch-up checkpoint {n}'s position {pos}: it is not the input that checkpoint saw"
            )),
            None => Ok(()),
        }
    }
}

pub async fn run(
    ctx: TaskCtx,
    subtask: u32,
    outputs: Vec<Assignment>,
    restore: Option<SourceState>,
    catch_up: Vec<(u64, u64)>,
    mut cmds: mpsc::Receiver<SourceCmd>,
) -> Result<(), String> {
    let job = ctx.job.clone();
    let p = job.parallelism;
    let mut state = restore.unwrap_or_default();
    let mut catch_up = CatchUpBarriers::new(catch_up, state.lines)?;
    // Off the runtime's workers: a generated input's vocabulary table (millions of words)
    // takes a second to build, and a worker busy that long starves the taskmanager's
    // heartbeats (the jobmanager then declares the node lost).
    let mut lines = {
        let (ctx, state) = (ctx.clone(), state.clone());
        tokio::task::spawn_blocking(move || open_lines(&ctx, subtask, p, &state))
            .await
            .map_err(|e| format!("opening the input: {e}"))??
    };
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
        // Catch-up barriers first, at exactly their positions (chunks stop there).
        for n in catch_up.due(state.lines) {
            tracing::info!(subtask, checkpoint = n, lines = state.lines, "catch-up barrier");
            handle_cmd(&ctx, id, SourceCmd::Trigger(n), &state, &mut outs).await?;
        }
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
        let room = catch_up.room(state.lines);
        while n < chunk_lines && chunk.len() < CHUNK_BYTES && room.is_none_or(|r| (n as u64) < r) {
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
            catch_up.at_end(state.lines)?;
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
    let input: &InputSpec = &ctx.job.input;
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
        let path = ctx.input_path(&f.path);
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
            let sending = std::time::Instant::now();
            let b = wire::barrier_payload(n);
            for out in outs.iter_mut() {
                wire::write_frame(out, &b).await.map_err(|e| format!("sending a barrier: {e}"))?;
                out.flush().await.map_err(|e| format!("sending a barrier: {e}"))?;
            }
            let stall_us = sending.elapsed().as_micros() as u64;
            let (data, local, job, st, outbox, attempt) =
                (ctx.data_dir.clone(), ctx.local_dir.clone(), ctx.job.job_id.clone(), state.clone(), ctx.outbox.clone(), ctx.attempt);
            tokio::spawn(async move {
                let lines = st.lines;
                let res = tokio::task::spawn_blocking(move || {
                    super::with_thread_cpu(|| snapshot::write_task_snapshot(&data, local.as_deref(), &job, n, id, &st))
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|(r, cpu_us)| r.map(|h| (h, cpu_us)).map_err(|e| e.to_string()));
                let _ = outbox.send(match res {
                    Ok((handle, cpu_us)) => TmToJm::Ack { attempt, checkpoint: n, task: id, handle, lines, stall_us, cpu_us },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::JobSpec;
    use crate::taskmanager::Counters;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    #[test]
    fn catch_up_barriers_are_due_at_exactly_their_positions() {
        let mut c = CatchUpBarriers::new(vec![(4, 10), (5, 10), (6, 25)], 3).unwrap();
        assert_eq!(c.room(3), Some(7));
        assert!(c.due(3).is_empty());
        assert!(c.due(9).is_empty());
        assert_eq!(c.due(10), vec![4, 5], "two checkpoints at one position: both, in order");
        assert_eq!(c.room(10), Some(15));
        c.at_end(25).unwrap();
        let e = c.at_end(20).unwrap_err();
        assert!(e.contains("catch-up checkpoint 6's position 25"), "{e}");
        assert_eq!(c.due(25), vec![6]);
        assert_eq!(c.room(25), None);
        c.at_end(25).unwrap();
        // At the restored position: due before anything is read.
        assert_eq!(CatchUpBarriers::new(vec![(4, 3)], 3).unwrap().due(3), vec![4]);
        // Behind the restored position, or out of order: refused.
        assert!(CatchUpBarriers::new(vec![(4, 2)], 3).is_err());
        assert!(CatchUpBarriers::new(vec![(5, 10), (4, 12)], 0).is_err());
        assert!(CatchUpBarriers::new(vec![(4, 12), (5, 10)], 0).is_err());
    }

    /// Runs source subtask 0 of 1 on a generated input of 100 lines (unthrottled: without
    /// catch-up one chunk would take everything), restored at line `from`, against a fake
    /// count task on real TCP. Returns, per barrier, its id and the words received before
    /// it; the acknowledgements (checkpoint, lines); and how the task ended.
    async fn run_source(from: u64, catch_up: Vec<(u64, u64)>) -> (Vec<(u64, u64)>, Vec<(u64, u64)>, Result<(), String>, JobSpec) {
        let job: JobSpec =
            serde_yaml::from_str("job_id: j\nparallelism: 1\ninput: { generate: { lines: 100, words_per_line: 3, vocabulary: 50 }, rate: 0 }")
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (outbox, mut out_rx) = mpsc::unbounded_channel();
        let ctx = TaskCtx {
            attempt: 2,
            job: Arc::new(job.clone()),
            data_dir: dir.path().to_path_buf(),
            outbox,
            counters: Arc::default(),
            line_server: None,
            local_dir: None,
            input_root: None,
        };
        let outputs = vec![Assignment { subtask: 0, taskmanager: "tm".into(), data_address: addr }];
        let restore = SourceState { lines: from, file: FilePosition::default() };
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let expected_acks = catch_up.len();
        let task = tokio::spawn(run(ctx, 0, outputs, Some(restore), catch_up, cmd_rx));
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let _hello: DataHello = wire::read_json(&mut stream, &mut buf).await.unwrap();
        let (mut words, mut barriers) = (0u64, Vec::new());
        // Until the source failed (its connection closes) or ended with every barrier
        // acknowledged (an ended source waits for commands with its connection open).
        let mut acks = Vec::new();
        let mut ended = false;
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        while !(ended && acks.len() >= expected_acks) {
            tokio::select! {
                r = wire::read_frame(&mut stream, &mut buf) => {
                    if r.is_err() { break; }
                    match wire::decode_kind(&buf).unwrap() {
                        wire::FrameKind::Batch => words += wire::for_each_entry(&buf, |_, _| {}).unwrap(),
                        wire::FrameKind::Barrier(n) => barriers.push((n, words)),
                        wire::FrameKind::Watermark(_) => {}
                    }
                }
                m = out_rx.recv() => match m {
                    Some(TmToJm::Ack { checkpoint, lines, .. }) => acks.push((checkpoint, lines)),
                    Some(TmToJm::SourceEnded { .. }) => ended = true,
                    _ => {}
                },
                _ = &mut deadline => panic!("the source neither ended nor failed: barriers {barriers:?}, acks {acks:?}"),
            }
        }
        drop(cmd_tx);
        let result = tokio::time::timeout(Duration::from_secs(5), task).await.expect("the source stops").unwrap();
        acks.sort_unstable();
        (barriers, acks, result, job)
    }

    /// Words of the generated lines `from..to` (subtask 0 of 1 owns every line).
    fn words(job: &JobSpec, from: u64, to: u64) -> u64 {
        let g = Generator::new(job.input.generate.as_ref().unwrap());
        let mut n = 0;
        for i in from..to {
            for_each_token(&g.line(i), |_| n += 1);
        }
        n
    }

    #[tokio::test]
    async fn a_source_injects_catch_up_barriers_at_exactly_their_positions() {
        let (barriers, acks, result, job) = run_source(5, vec![(4, 5), (5, 40), (6, 41), (7, 100)]).await;
        result.unwrap();
        let expect: Vec<(u64, u64)> = [(4, 5), (5, 40), (6, 41), (7, 100)].iter().map(|&(n, at)| (n, words(&job, 5, at))).collect();
        assert_eq!(barriers, expect, "each barrier after exactly the lines before its position");
        assert_eq!(acks, vec![(4, 5), (5, 40), (6, 41), (7, 100)], "acknowledged with its position");
    }

    #[tokio::test]
    async fn a_catch_up_position_past_the_end_of_the_input_fails_the_source() {
        let (barriers, _, result, _) = run_source(0, vec![(3, 20), (4, 200)]).await;
        assert_eq!(barriers.iter().map(|b| b.0).collect::<Vec<_>>(), vec![3]);
        let e = result.unwrap_err();
        assert!(e.contains("before catch-up checkpoint 4's position 200"), "{e}");
    }

    // ----------------------------------------------------------------------------------
    // The real source task against fake count tasks on 127.0.0.1: what each data
    // connection carries, and what the source tells the jobmanager.
    // ----------------------------------------------------------------------------------

    /// How long any one wait may take before a test fails (a hung source, or one that
    /// sleeps far too long); the tests themselves take well under a second each.
    const DEADLINE: Duration = Duration::from_secs(10);
    /// Every source here runs as this attempt (not 0 or 1, so a wrong one shows).
    const ATTEMPT: u64 = 7;

    fn job(yaml: &str) -> JobSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// What one fake count task saw on its data connection, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Frame {
        /// The `DataHello`: `(attempt, from, to)`.
        Hello(u64, u32, u32),
        Batch(Vec<(String, u32)>),
        Barrier(u64),
        Watermark(u64),
    }

    /// A fake count task: accepts one connection and forwards what arrives on it, frame by
    /// frame, as output `out`, until the source closes it.
    async fn fake_count_task(listener: TcpListener, out: usize, tx: mpsc::UnboundedSender<(usize, Frame)>) {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let mut buf = Vec::new();
        let Ok(h) = wire::read_json::<_, DataHello>(&mut stream, &mut buf).await else { return };
        let _ = tx.send((out, Frame::Hello(h.attempt, h.from, h.to)));
        while wire::read_frame(&mut stream, &mut buf).await.is_ok() {
            let f = match wire::decode_kind(&buf).expect("a well-formed data frame") {
                wire::FrameKind::Batch => {
                    let mut entries = Vec::new();
                    wire::for_each_entry(&buf, |w, c| entries.push((w.to_string(), c))).expect("a well-formed batch");
                    Frame::Batch(entries)
                }
                wire::FrameKind::Barrier(n) => Frame::Barrier(n),
                wire::FrameKind::Watermark(t) => Frame::Watermark(t),
            };
            if tx.send((out, f)).is_err() {
                return;
            }
        }
    }

    #[derive(Default)]
    struct Opts {
        subtask: u32,
        restore: Option<SourceState>,
        catch_up: Vec<(u64, u64)>,
        /// Triggers queued on the command channel before the source starts.
        queued: Vec<u64>,
        line_server: Option<String>,
    }

    /// A running source task and what it sent so far.
    struct Source {
        data_dir: PathBuf,
        counters: Arc<Counters>,
        cmds: Option<mpsc::Sender<SourceCmd>>,
        msgs_rx: mpsc::UnboundedReceiver<TmToJm>,
        msgs: Vec<TmToJm>,
        frames_rx: mpsc::UnboundedReceiver<(usize, Frame)>,
        /// Per output, its frames so far.
        frames: Vec<Vec<Frame>>,
        addrs: Vec<String>,
        task: tokio::task::JoinHandle<Result<(), String>>,
        started: std::time::Instant,
        /// From the start to the `SourceEnded` message.
        ended_after: Option<Duration>,
    }

    /// A finished source: how it ended, and everything it sent.
    struct Finished {
        data_dir: PathBuf,
        result: Result<(), String>,
        msgs: Vec<TmToJm>,
        frames: Vec<Vec<Frame>>,
        /// The task's counters at the end (heartbeat metrics).
        lines: u64,
        words: u64,
        ended_after: Option<Duration>,
    }

    impl Source {
        /// Starts the source with one fake count task per pipeline of the job.
        async fn start(data_dir: &Path, job: &JobSpec, o: Opts) -> Source {
            let (tx, frames_rx) = mpsc::unbounded_channel();
            let mut outputs = Vec::new();
            for out in 0..job.parallelism as usize {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let data_address = l.local_addr().unwrap().to_string();
                outputs.push(Assignment { subtask: out as u32, taskmanager: format!("tm-{out}"), data_address });
                tokio::spawn(fake_count_task(l, out, tx.clone()));
            }
            Source::spawn(data_dir, job, o, outputs, frames_rx)
        }

        /// Starts the source against `outputs` (whose fake count tasks forward to `frames_rx`).
        fn spawn(
            data_dir: &Path,
            job: &JobSpec,
            o: Opts,
            outputs: Vec<Assignment>,
            frames_rx: mpsc::UnboundedReceiver<(usize, Frame)>,
        ) -> Source {
            let (outbox, msgs_rx) = mpsc::unbounded_channel();
            let counters: Arc<Counters> = Arc::default();
            let ctx = TaskCtx {
                attempt: ATTEMPT,
                job: Arc::new(job.clone()),
                data_dir: data_dir.to_path_buf(),
                outbox,
                counters: counters.clone(),
                line_server: o.line_server,
                local_dir: None,
                input_root: None,
            };
            let (cmd_tx, cmd_rx) = mpsc::channel(16);
            for n in o.queued {
                cmd_tx.try_send(SourceCmd::Trigger(n)).unwrap();
            }
            let addrs = outputs.iter().map(|a| a.data_address.clone()).collect();
            let frames = vec![Vec::new(); outputs.len()];
            let started = std::time::Instant::now();
            let task = tokio::spawn(run(ctx, o.subtask, outputs, o.restore, o.catch_up, cmd_rx));
            Source {
                data_dir: data_dir.to_path_buf(),
                counters,
                cmds: Some(cmd_tx),
                msgs_rx,
                msgs: Vec::new(),
                frames_rx,
                frames,
                addrs,
                task,
                started,
                ended_after: None,
            }
        }

        fn take_msg(&mut self, m: TmToJm) {
            if matches!(m, TmToJm::SourceEnded { .. }) && self.ended_after.is_none() {
                self.ended_after = Some(self.started.elapsed());
            }
            self.msgs.push(m);
        }

        /// Takes in frames and messages until `done` holds (failing the test if the source
        /// stops first, or after the deadline).
        async fn until(&mut self, what: &str, mut done: impl FnMut(&Source) -> bool) {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while !done(self) {
                tokio::select! {
                    Some((out, f)) = self.frames_rx.recv() => self.frames[out].push(f),
                    Some(m) = self.msgs_rx.recv() => self.take_msg(m),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if self.task.is_finished() {
                            while let Ok((out, f)) = self.frames_rx.try_recv() {
                                self.frames[out].push(f);
                            }
                            while let Ok(m) = self.msgs_rx.try_recv() {
                                self.take_msg(m);
                            }
                            if !done(self) {
                                let r = (&mut self.task).await;
                                panic!("the source stopped before {what}: {r:?}; frames {:?}, messages {:?}", self.frames, self.msgs);
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        panic!("no {what} within {DEADLINE:?}: frames {:?}, messages {:?}", self.frames, self.msgs)
                    }
                }
            }
        }

        async fn trigger(&self, n: u64) {
            self.cmds.as_ref().unwrap().send(SourceCmd::Trigger(n)).await.unwrap();
        }

        fn ended(&self) -> bool {
            self.msgs.iter().any(|m| matches!(m, TmToJm::SourceEnded { .. }))
        }

        fn acked(&self, checkpoint: u64) -> bool {
            self.msgs.iter().any(|m| matches!(m, TmToJm::Ack { checkpoint: c, .. } | TmToJm::Decline { checkpoint: c, .. } if *c == checkpoint))
        }

        /// Closes the commands (the source then returns) and collects everything sent.
        async fn finish(mut self) -> Finished {
            drop(self.cmds.take());
            let result = tokio::time::timeout(DEADLINE, &mut self.task)
                .await
                .expect("a source stops once its commands are closed")
                .expect("the source task does not panic");
            // A fake count task the source never reached still waits to accept: unblock it
            // (one that was reached has the source's connection first in its queue).
            for a in &self.addrs {
                let _ = TcpStream::connect(a).await;
            }
            let (frames_rx, msgs_rx) = (&mut self.frames_rx, &mut self.msgs_rx);
            let (mut frames, mut msgs) = (std::mem::take(&mut self.frames), Vec::new());
            tokio::time::timeout(DEADLINE, async {
                while let Some((out, f)) = frames_rx.recv().await {
                    frames[out].push(f);
                }
                // Closed once the task and its snapshot writers are all done.
                while let Some(m) = msgs_rx.recv().await {
                    msgs.push(m);
                }
            })
            .await
            .expect("every connection and the outbox close after the source returned");
            for m in msgs {
                self.take_msg(m);
            }
            Finished {
                data_dir: self.data_dir,
                result,
                msgs: self.msgs,
                frames,
                lines: self.counters.lines.load(Ordering::Relaxed),
                words: self.counters.words.load(Ordering::Relaxed),
                ended_after: self.ended_after,
            }
        }
    }

    impl Finished {
        /// The lines of the one `SourceEnded` message (which must name this attempt and
        /// subtask).
        fn ended(&self, subtask: u32) -> u64 {
            let ends: Vec<_> = self.msgs.iter().filter(|m| matches!(m, TmToJm::SourceEnded { .. })).collect();
            assert_eq!(ends.len(), 1, "exactly one end: {:?}", self.msgs);
            match ends[0] {
                TmToJm::SourceEnded { attempt, subtask: s, lines } => {
                    assert_eq!((*attempt, *s), (ATTEMPT, subtask), "the end names the attempt and subtask");
                    *lines
                }
                _ => unreachable!(),
            }
        }

        /// The acknowledged checkpoints as `(checkpoint, lines, snapshot)` in checkpoint
        /// order, after checking that each names this task and attempt and that the
        /// snapshot it points to holds the acknowledged position. No declines.
        fn acks(&self, subtask: u32) -> Vec<(u64, u64, SourceState)> {
            let mut acks = Vec::new();
            for m in &self.msgs {
                match m {
                    TmToJm::Ack { attempt, checkpoint, task, handle, lines, .. } => {
                        assert_eq!((*attempt, *task), (ATTEMPT, TaskId::Source(subtask)), "the ack names the attempt and task");
                        let st: SourceState = snapshot::read_task_snapshot(&self.data_dir, handle).unwrap();
                        assert_eq!(st.lines, *lines, "checkpoint {checkpoint}: the snapshot holds the acknowledged position");
                        acks.push((*checkpoint, *lines, st));
                    }
                    TmToJm::Decline { .. } => panic!("a declined checkpoint: {m:?}"),
                    _ => {}
                }
            }
            acks.sort_by_key(|a| a.0);
            acks
        }

        fn ack_positions(&self, subtask: u32) -> Vec<(u64, u64)> {
            self.acks(subtask).into_iter().map(|(n, l, _)| (n, l)).collect()
        }
    }

    /// The word of a key (a windowed job's keys are `<start>\t<word>`).
    fn word_of_key(k: &str) -> &str {
        window::split_key(k).map_or(k, |(_, w)| w)
    }

    /// The rules every data connection follows: a hello naming the channel first (and only
    /// first); batches pre-aggregated (a key once per batch), never empty (an output with
    /// no word in a chunk gets no frame), holding only keys of the output's own partition;
    /// window keys and watermarks exactly when the job is windowed.
    fn check_outputs(outs: &[Vec<Frame>], subtask: u32, windowed: bool) {
        let p = outs.len() as u32;
        for (o, frames) in outs.iter().enumerate() {
            assert_eq!(frames.first(), Some(&Frame::Hello(ATTEMPT, subtask, o as u32)), "output {o}: the hello names the channel");
            for f in &frames[1..] {
                match f {
                    Frame::Hello(..) => panic!("output {o}: a second hello"),
                    Frame::Batch(entries) => {
                        assert!(!entries.is_empty(), "output {o}: an empty batch frame");
                        let mut keys = std::collections::HashSet::new();
                        for (k, c) in entries {
                            assert!(*c > 0 && keys.insert(k), "output {o}: {k:?} twice or with no count in one batch");
                            assert_eq!(window::split_key(k).is_some(), windowed, "output {o}: {k:?}");
                            assert_eq!(wire::partition(word_of_key(k), p), o as u32, "output {o}: {k:?} belongs to another count task");
                        }
                    }
                    Frame::Watermark(_) => assert!(windowed, "output {o}: a watermark in a job without windows"),
                    Frame::Barrier(_) => {}
                }
            }
        }
    }

    /// The counts of one output's batches (those before barrier `until`, if given).
    fn words_of(frames: &[Frame], until: Option<u64>) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        let mut reached = until.is_none();
        for f in frames {
            match f {
                Frame::Batch(entries) => {
                    for (k, c) in entries {
                        *m.entry(k.clone()).or_insert(0) += *c as u64;
                    }
                }
                Frame::Barrier(n) if Some(*n) == until => {
                    reached = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(reached, "no barrier {until:?} in {frames:?}");
        m
    }

    /// The counts over every output (before barrier `until` on each, if given).
    fn all_words(outs: &[Vec<Frame>], until: Option<u64>) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for frames in outs {
            for (k, c) in words_of(frames, until) {
                *m.entry(k).or_insert(0) += c;
            }
        }
        m
    }

    fn total(m: &BTreeMap<String, u64>) -> u64 {
        m.values().sum()
    }

    /// The words in each batch of one output.
    fn batch_sizes(frames: &[Frame]) -> Vec<u64> {
        frames.iter().filter_map(|f| if let Frame::Batch(e) = f { Some(e.iter().map(|(_, c)| *c as u64).sum()) } else { None }).collect()
    }

    fn barriers(frames: &[Frame]) -> Vec<u64> {
        frames.iter().filter_map(|f| if let Frame::Barrier(n) = f { Some(*n) } else { None }).collect()
    }

    fn watermarks(frames: &[Frame]) -> Vec<u64> {
        frames.iter().filter_map(|f| if let Frame::Watermark(t) = f { Some(*t) } else { None }).collect()
    }

    /// The generated lines source `subtask` owns (`i % p == subtask`), from its `from`-th
    /// owned line on, as `(global index, text)`.
    fn owned_generated(job: &JobSpec, subtask: u32, from: u64) -> Vec<(u64, String)> {
        let g = Generator::new(job.input.generate.as_ref().unwrap());
        let p = job.parallelism as u64;
        (subtask as u64 + from * p..g.lines()).step_by(p as usize).map(|i| (i, g.line(i))).collect()
    }

    /// The lines of a file source `subtask` of `p` owns, from its `from`-th on.
    fn owned_file(path: &Path, subtask: u32, p: u32, from: usize) -> Vec<(u64, String)> {
        let mut all = Vec::new();
        crate::input::for_each_file_line(path, |l| all.push(l.to_string())).unwrap();
        let owned = all.into_iter().enumerate().map(|(i, l)| (i as u64, l)).filter(|(i, _)| i % p as u64 == subtask as u64);
        owned.skip(from).collect()
    }

    /// The oracle: each key's count over `lines`, keyed as the job keys it (a windowed
    /// job: by the window of the line's event time).
    fn oracle(job: &JobSpec, lines: &[(u64, String)]) -> BTreeMap<String, u64> {
        let clock = job.window_clock();
        let mut m = BTreeMap::new();
        for (i, text) in lines {
            for_each_token(text, |w| {
                let k = match clock {
                    Some(c) => window::key(c.window_of_line(*i), w),
                    None => w.to_string(),
                };
                *m.entry(k).or_insert(0) += 1;
            });
        }
        m
    }

    /// The part of `m` that count task `out` of `p` owns.
    fn restrict(m: &BTreeMap<String, u64>, out: usize, p: u32) -> BTreeMap<String, u64> {
        m.iter().filter(|(k, _)| wire::partition(word_of_key(k), p) == out as u32).map(|(k, c)| (k.clone(), *c)).collect()
    }

    const GEN: &str = "job_id: j\nparallelism: 2\ninput: { generate: { lines: 200, words_per_line: 8, vocabulary: 50, seed: 1 } }";

    /// Unthrottled, a source sends the words of exactly the lines it owns (`i % p ==
    /// subtask`), each to the count task `wire::partition` names, after a hello naming the
    /// channel; it reports its end with the lines it read, counts lines and words for the
    /// heartbeats, and returns cleanly once its commands close. A partition this small (a
    /// few KiB, far below a chunk's 256 KiB) is one chunk: one batch per output.
    #[tokio::test]
    async fn a_source_sends_its_partitions_words_each_to_the_count_task_that_owns_it() {
        for subtask in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let job = job(GEN);
            let mut s = Source::start(dir.path(), &job, Opts { subtask, ..Default::default() }).await;
            s.until("end of the input", Source::ended).await;
            let f = s.finish().await;
            f.result.clone().unwrap();
            check_outputs(&f.frames, subtask, false);
            let lines = owned_generated(&job, subtask, 0);
            assert_eq!(lines.len(), 100);
            assert_eq!(all_words(&f.frames, None), oracle(&job, &lines), "subtask {subtask}: exactly its lines' words");
            for (o, frames) in f.frames.iter().enumerate() {
                assert_eq!(batch_sizes(frames).len(), 1, "subtask {subtask}, output {o}: one chunk, one batch: {frames:?}");
                assert!(barriers(frames).is_empty());
            }
            assert_eq!(f.ended(subtask), 100);
            assert_eq!(f.msgs.len(), 1, "nothing but the end: {:?}", f.msgs);
            assert_eq!((f.lines, f.words), (100, 800), "the counters: lines read, words sent");
        }
    }

    /// A restored source resumes at its position in its own partition: its `k`-th owned
    /// line is global line `subtask + k·p`. It sends the words from there on and ends at
    /// the partition's full length (the position is absolute, not relative to the restore).
    #[tokio::test]
    async fn a_restored_source_resumes_at_its_position_in_its_partition() {
        for subtask in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let job = job(GEN);
            let restore = Some(SourceState { lines: 30, ..Default::default() });
            let mut s = Source::start(dir.path(), &job, Opts { subtask, restore, ..Default::default() }).await;
            s.until("end of the input", Source::ended).await;
            let f = s.finish().await;
            f.result.clone().unwrap();
            check_outputs(&f.frames, subtask, false);
            let lines = owned_generated(&job, subtask, 30);
            assert_eq!(lines.len(), 70);
            assert_eq!(all_words(&f.frames, None), oracle(&job, &lines), "subtask {subtask}: the lines from its 30th on");
            assert_eq!(f.ended(subtask), 100);
            assert_eq!((f.lines, f.words), (100, 70 * 8));
        }
    }

    /// A trigger puts a barrier on every output between chunks, and acknowledges (after
    /// writing the snapshot) exactly the position the barrier follows. One queued before
    /// the source starts cuts before any word, at the restored position; one after the end
    /// (an ended source still takes checkpoints) cuts after every word, at the partition's
    /// full length.
    #[tokio::test]
    async fn triggers_cut_every_output_at_the_position_they_acknowledge() {
        let dir = tempfile::tempdir().unwrap();
        let job = job(GEN);
        let restore = Some(SourceState { lines: 10, ..Default::default() });
        let mut s = Source::start(dir.path(), &job, Opts { subtask: 1, restore, queued: vec![3], ..Default::default() }).await;
        s.until("end of the input", Source::ended).await;
        s.trigger(4).await;
        s.until("ack of checkpoint 4", |s| s.acked(4)).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        check_outputs(&f.frames, 1, false);
        let expect = oracle(&job, &owned_generated(&job, 1, 10));
        for (o, frames) in f.frames.iter().enumerate() {
            assert_eq!(frames[1], Frame::Barrier(3), "output {o}: the queued trigger's barrier before any word");
            assert_eq!(frames.last(), Some(&Frame::Barrier(4)), "output {o}: the barrier after the end follows every word");
            assert_eq!(barriers(frames), vec![3, 4], "output {o}");
            assert_eq!(words_of(frames, Some(4)), restrict(&expect, o, 2), "output {o}");
        }
        assert!(all_words(&f.frames, Some(3)).is_empty());
        assert_eq!(all_words(&f.frames, Some(4)), expect);
        assert_eq!(f.ack_positions(1), vec![(3, 10), (4, 100)], "acknowledged at the positions the barriers follow");
        assert_eq!(f.ended(1), 100);
    }

    /// Catch-up barriers go out without a trigger once exactly their position in the
    /// partition is consumed, on every output, in checkpoint order (two at one position
    /// back to back, with nothing between), each acknowledged at its position; then the
    /// rest of the input follows. A list out of order is refused before anything is read.
    #[tokio::test]
    async fn catch_up_barriers_cut_every_output_at_exactly_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let job = job(GEN);
        let catch_up = vec![(5, 10), (6, 10), (7, 30)];
        let mut s = Source::start(dir.path(), &job, Opts { subtask: 1, catch_up, ..Default::default() }).await;
        s.until("end of the input", Source::ended).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        check_outputs(&f.frames, 1, false);
        let owned = owned_generated(&job, 1, 0);
        let (first10, first30) = (oracle(&job, &owned[..10]), oracle(&job, &owned[..30]));
        for (o, frames) in f.frames.iter().enumerate() {
            assert_eq!(barriers(frames), vec![5, 6, 7], "output {o}");
            let at5 = frames.iter().position(|f| *f == Frame::Barrier(5)).unwrap();
            assert_eq!(frames[at5 + 1], Frame::Barrier(6), "output {o}: 5 and 6 share a position");
            assert_eq!(words_of(frames, Some(5)), restrict(&first10, o, 2), "output {o}: 10 lines before 5");
            assert_eq!(words_of(frames, Some(7)), restrict(&first30, o, 2), "output {o}: 30 lines before 7");
        }
        assert_eq!(all_words(&f.frames, None), oracle(&job, &owned));
        assert_eq!(f.ack_positions(1), vec![(5, 10), (6, 10), (7, 30)]);
        assert_eq!(f.ended(1), 100);

        let s = Source::start(dir.path(), &job, Opts { catch_up: vec![(5, 10), (4, 20)], ..Default::default() }).await;
        let f = s.finish().await;
        let e = f.result.unwrap_err();
        assert!(e.contains("out of order"), "{e}");
        assert!(f.frames.iter().all(|o| o.is_empty()) && f.msgs.is_empty(), "nothing sent: {:?} {:?}", f.frames, f.msgs);
    }

    /// `input.rate` is lines per second over all subtasks: each subtask reads its share in
    /// chunks of a hundredth of a second (2000/s over 2: 10 lines, one batch each) and never
    /// ahead of its schedule, so its 200 lines take at least 190 ms (a lower bound only: a
    /// slow machine is slower, never faster). A trigger arriving meanwhile cuts at a chunk
    /// boundary and is acknowledged with that position. Every word here is the same one, so
    /// one output gets every batch and the other gets no frame at all (never an empty one).
    #[tokio::test]
    async fn a_rate_limited_source_reads_chunks_of_a_hundredth_of_a_second_on_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let job = job("parallelism: 2\ninput: { generate: { lines: 400, words_per_line: 8, vocabulary: 1 }, rate: 2000 }");
        let mut s = Source::start(dir.path(), &job, Opts::default()).await;
        s.until("a first batch", |s| s.frames.iter().flatten().any(|f| matches!(f, Frame::Batch(_)))).await;
        s.trigger(9).await;
        s.until("end and ack", |s| s.ended() && s.acked(9)).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        check_outputs(&f.frames, 0, false);
        let word = owned_generated(&job, 0, 0)[0].1.split(' ').next().unwrap().to_string();
        let full = wire::partition(&word, 2) as usize;
        assert_eq!(batch_sizes(&f.frames[full]), vec![80; 20], "chunks of 10 lines of 8 words");
        assert!(batch_sizes(&f.frames[1 - full]).is_empty(), "no frame for an output without words");
        let acks = f.ack_positions(0);
        assert_eq!(acks.len(), 1);
        let (n, lines) = acks[0];
        assert!(n == 9 && lines % 10 == 0 && (10..=200).contains(&lines), "a chunk boundary after the first chunk: {acks:?}");
        for frames in &f.frames {
            assert_eq!(barriers(frames), vec![9]);
        }
        assert_eq!(total(&words_of(&f.frames[full], Some(9))), lines * 8, "the words of exactly the acknowledged lines");
        assert_eq!(f.ended(0), 200);
        let took = f.ended_after.unwrap();
        assert!(took >= Duration::from_millis(180), "200 lines at 1000/s: the last chunk is due at 190 ms, not {took:?}");
    }

    /// A restored source paces from where it resumed: the schedule counts the lines read
    /// since the start of this run, not the restored position (which would put it far in
    /// the future). 10 lines/s is a chunk of one line every 100 ms: 5 lines take 400 ms.
    #[tokio::test]
    async fn a_restored_rate_limited_source_paces_from_its_restored_position() {
        let dir = tempfile::tempdir().unwrap();
        let job = job("parallelism: 1\ninput: { generate: { lines: 1005, words_per_line: 8, vocabulary: 1 }, rate: 10 }");
        let restore = Some(SourceState { lines: 1000, ..Default::default() });
        let mut s = Source::start(dir.path(), &job, Opts { restore, ..Default::default() }).await;
        s.until("end of the input", Source::ended).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        check_outputs(&f.frames, 0, false);
        assert_eq!(batch_sizes(&f.frames[0]), vec![8; 5], "one line a chunk");
        assert_eq!(f.ended(0), 1005);
        let took = f.ended_after.unwrap();
        assert!(took >= Duration::from_millis(380), "the fifth line is due at 400 ms, not {took:?}");
    }

    /// A windowed job's source keys each word by its line's event-time window (lines of one
    /// chunk can span windows) and sends, before its first chunk and after every chunk, the
    /// watermark of its position: the time of the next line it owns, the end of time once
    /// none is left, never twice and never backwards. Subtask 1 of 2 at 1 ms a line owns
    /// lines 1, 3, ..., 99; 2000 lines/s is 10 lines a chunk (20 ms of event time, two
    /// 10-ms windows). The same for a generated input (whose length the source knows) and a
    /// file of the same lines (where it looks ahead).
    #[tokio::test]
    async fn a_windowed_source_keys_words_by_window_and_sends_the_watermark_of_its_position() {
        const GEN100: &str = "{ lines: 100, words_per_line: 8, vocabulary: 50, seed: 3 }";
        for file in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let generated = job(&format!("parallelism: 2\ninput: {{ generate: {GEN100} }}"));
            let owned = owned_generated(&generated, 1, 0);
            let input = if file {
                std::fs::create_dir_all(dir.path().join("input")).unwrap();
                let mut w = std::fs::File::create(dir.path().join("input/gen.txt")).unwrap();
                Generator::new(generated.input.generate.as_ref().unwrap()).write_all(&mut w).unwrap();
                "file: { path: input/gen.txt }".to_string()
            } else {
                format!("generate: {GEN100}")
            };
            let job = job(&format!(
                "kind: window-wordcount\nwindow: 10ms\nparallelism: 2\ninput: {{ {input}, rate: 2000, event_time_per_line: 1ms }}"
            ));
            assert_eq!(job.window_clock(), Some(WindowClock { width_ms: 10, per_line_ms: 1 }));
            let mut s = Source::start(dir.path(), &job, Opts { subtask: 1, ..Default::default() }).await;
            s.until("end of the input", Source::ended).await;
            let f = s.finish().await;
            f.result.clone().unwrap();
            check_outputs(&f.frames, 1, true);
            for (o, frames) in f.frames.iter().enumerate() {
                assert_eq!(watermarks(frames), vec![1, 21, 41, 61, 81, END_OF_TIME], "file {file}, output {o}");
                assert_eq!(frames[1], Frame::Watermark(1), "file {file}, output {o}: event time before the first chunk");
                assert_eq!(frames.last(), Some(&Frame::Watermark(END_OF_TIME)), "file {file}, output {o}");
                for pair in frames.windows(2) {
                    assert!(!matches!(pair, [Frame::Batch(_), Frame::Batch(_)]), "file {file}, output {o}: a watermark after every chunk");
                }
            }
            assert_eq!(all_words(&f.frames, None), oracle(&job, &owned), "file {file}: every word in its line's window");
            assert_eq!(f.ended(1), 50);
            assert_eq!((f.lines, f.words), (50, 400));
        }
    }

    /// A file source reads the lines of the file it owns (`i % p == subtask`; a CRLF ending,
    /// a blank line and a last line without newline included), snapshots its position in
    /// the file (next line, byte offset) with each checkpoint, and a source restored from
    /// that snapshot sends exactly the rest.
    #[tokio::test]
    async fn a_file_source_reads_its_lines_of_the_file_and_resumes_from_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..20 {
            match i {
                5 => text.push_str("windows line\r\n"),
                9 => text.push('\n'),
                _ => text.push_str(&format!("w{} w{} common  x{}\n", i % 7, i % 3, i)),
            }
        }
        text.push_str("last without newline");
        std::fs::create_dir_all(dir.path().join("input")).unwrap();
        let path = dir.path().join("input/words.txt");
        std::fs::write(&path, &text).unwrap();
        let job = job("parallelism: 2\ninput: { file: { path: input/words.txt } }");
        for subtask in 0..2u32 {
            let owned = owned_file(&path, subtask, 2, 0);
            assert_eq!(owned.len(), 11 - subtask as usize);
            let mut s = Source::start(dir.path(), &job, Opts { subtask, catch_up: vec![(1, 4)], ..Default::default() }).await;
            s.until("end of the input", Source::ended).await;
            let f = s.finish().await;
            f.result.clone().unwrap();
            check_outputs(&f.frames, subtask, false);
            assert_eq!(all_words(&f.frames, None), oracle(&job, &owned), "subtask {subtask}");
            assert_eq!(all_words(&f.frames, Some(1)), oracle(&job, &owned[..4]), "subtask {subtask}");
            assert_eq!(f.ended(subtask), owned.len() as u64);
            let acks = f.acks(subtask);
            assert_eq!(acks.len(), 1);
            let (_, _, state) = acks.into_iter().next().unwrap();
            // After its 4th line (global line subtask + 6): the next line, and its offset.
            let last = subtask as usize + 6;
            let byte = text.match_indices('\n').nth(last).unwrap().0 as u64 + 1;
            assert_eq!((state.lines, state.file), (4, FilePosition { line: last as u64 + 1, byte }), "subtask {subtask}");

            let mut s = Source::start(dir.path(), &job, Opts { subtask, restore: Some(state), ..Default::default() }).await;
            s.until("end of the input", Source::ended).await;
            let f = s.finish().await;
            f.result.clone().unwrap();
            assert_eq!(all_words(&f.frames, None), oracle(&job, &owned[4..]), "subtask {subtask}: the rest");
            assert_eq!(f.ended(subtask), owned.len() as u64);
        }
    }

    /// Unthrottled, a chunk stops once it holds 256 KiB of text (newlines included): lines
    /// of exactly 1 KiB make 256 a chunk, so 300 lines are two batches of 256 and 44.
    #[tokio::test]
    async fn an_unthrottled_chunk_holds_at_most_256_kib_of_text() {
        let dir = tempfile::tempdir().unwrap();
        let line = "x".repeat(1023) + "\n";
        std::fs::write(dir.path().join("big.txt"), line.repeat(300)).unwrap();
        let job = job("parallelism: 1\ninput: { file: { path: big.txt } }");
        let mut s = Source::start(dir.path(), &job, Opts::default()).await;
        s.until("end of the input", Source::ended).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        check_outputs(&f.frames, 0, false);
        assert_eq!(batch_sizes(&f.frames[0]), vec![256, 44]);
        assert_eq!(f.ended(0), 300);
    }

    /// A followed file (`follow: true`) is read as it grows, until its end marker
    /// `<path>.end` ends the input. With nothing new the source waits (sleeping, not
    /// spinning: on this single-threaded runtime a spinning source would starve every other
    /// task, this test included).
    #[tokio::test]
    async fn a_followed_file_is_read_as_it_grows_until_its_end_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        std::fs::write(&path, "a b\nb c\nc d\n").unwrap();
        let job = job("parallelism: 1\ninput: { file: { path: f.txt, follow: true } }");
        let mut s = Source::start(dir.path(), &job, Opts::default()).await;
        s.until("the first 3 lines", |s| total(&all_words(&s.frames, None)) == 6).await;
        assert!(!s.ended());
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(b"d e\ne f\n").unwrap();
        }
        std::fs::write(crate::input::end_marker(&path), "").unwrap();
        s.until("end of the input", Source::ended).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        assert_eq!(all_words(&f.frames, None), oracle(&job, &owned_file(&path, 0, 1, 0)));
        assert_eq!(f.ended(0), 5);
    }

    /// Socket input is non-parallel (Flink's socketTextStream). Subtask 0 connects to the
    /// line server as its attempt with its restored position, and takes each line's global
    /// index from the server's header (lines lost meanwhile are skipped): its position, its
    /// watermark and its windows follow that index. When the server ends the input after a
    /// pause, the watermark still reaches the end of time. Subtask 1 reads nothing (it
    /// never connects: here the line server address refuses, so it would retry forever)
    /// and ends at once, at the end of event time.
    #[tokio::test]
    async fn a_socket_source_reads_the_line_server_on_subtask_0_only() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let job = job(
            "kind: window-wordcount\nwindow: 10ms\nparallelism: 2\ninput: { socket: { port: 9 }, event_time_per_line: 1ms }",
        );
        let texts = ["to be or", "not to be", "be quick", "or not", "to be to"];
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap().to_string();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (stream, _) = server.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut hello = String::new();
            tokio::io::BufReader::new(r).read_line(&mut hello).await.unwrap();
            let mut out = String::from("lines 7\n");
            for t in texts {
                out.push_str(t);
                out.push('\n');
            }
            w.write_all(out.as_bytes()).await.unwrap();
            go_rx.await.unwrap();
            w.write_all(format!("{}\n", crate::lines::END).as_bytes()).await.unwrap();
            w.flush().await.unwrap();
            hello
        });
        let dir = tempfile::tempdir().unwrap();
        let restore = Some(SourceState { lines: 3, ..Default::default() });
        let opts = Opts { subtask: 0, restore, line_server: Some(server_addr), ..Default::default() };
        let mut s = Source::start(dir.path(), &job, opts).await;
        s.until("the watermark after line 11", |s| s.frames.iter().all(|f| f.contains(&Frame::Watermark(12)))).await;
        go_tx.send(()).unwrap();
        s.until("end of the input", Source::ended).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        assert_eq!(server.await.unwrap(), "hello 7 3\n", "the attempt and the restored position");
        check_outputs(&f.frames, 0, true);
        for (o, frames) in f.frames.iter().enumerate() {
            let w = watermarks(frames);
            assert_eq!(w[0], 3, "output {o}: the restored position's time first");
            assert!(w.windows(2).all(|p| p[0] < p[1]), "output {o}: {w:?}");
            assert_eq!(w[w.len() - 2..], [12, END_OF_TIME], "output {o}: {w:?}");
        }
        let lines: Vec<(u64, String)> = texts.iter().enumerate().map(|(k, t)| (7 + k as u64, t.to_string())).collect();
        assert_eq!(all_words(&f.frames, None), oracle(&job, &lines), "lines 7..12: windows 0 and 10");
        assert_eq!(f.ended(0), 12, "the server's next index, not the restored position plus the lines read");
        assert_eq!(f.lines, 12);

        // Subtask 1: a line server address that refuses connections.
        let refused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let restore = Some(SourceState { lines: 3, ..Default::default() });
        let mut s = Source::start(dir.path(), &job, Opts { subtask: 1, restore, line_server: Some(refused), ..Default::default() }).await;
        s.until("end of the input", Source::ended).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        check_outputs(&f.frames, 1, true);
        for frames in &f.frames {
            assert_eq!(frames[1..], [Frame::Watermark(END_OF_TIME)]);
        }
        assert_eq!(f.ended(1), 3);
    }

    /// A count task whose taskmanager is still deploying (not listening yet) is retried
    /// until it listens.
    #[tokio::test]
    async fn a_source_retries_a_count_task_that_is_not_listening_yet() {
        let dir = tempfile::tempdir().unwrap();
        let job = job("parallelism: 1\ninput: { generate: { lines: 20, words_per_line: 4, vocabulary: 10 } }");
        // A free port, closed until the count task "deploys".
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let (tx, frames_rx) = mpsc::unbounded_channel();
        let outputs = vec![Assignment { subtask: 0, taskmanager: "tm".into(), data_address: addr.clone() }];
        let mut s = Source::spawn(dir.path(), &job, Opts::default(), outputs, frames_rx);
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::spawn(fake_count_task(TcpListener::bind(&addr).await.unwrap(), 0, tx));
        s.until("end of the input", Source::ended).await;
        let f = s.finish().await;
        f.result.clone().unwrap();
        check_outputs(&f.frames, 0, false);
        assert_eq!(all_words(&f.frames, None), oracle(&job, &owned_generated(&job, 0, 0)));
        assert_eq!(f.ended(0), 20);
    }

    /// A count task that never listens fails the source after its 10-s deadline (not at the
    /// first refusal, and not never). On tokio's paused clock: the 10 s pass at once.
    #[tokio::test(start_paused = true)]
    async fn a_source_gives_up_on_a_count_task_that_never_listens_after_10_s() {
        let dir = tempfile::tempdir().unwrap();
        let job = job("parallelism: 1\ninput: { generate: { lines: 20 } }");
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let (outbox, _out_rx) = mpsc::unbounded_channel();
        let ctx = TaskCtx {
            attempt: ATTEMPT,
            job: Arc::new(job),
            data_dir: dir.path().to_path_buf(),
            outbox,
            counters: Arc::default(),
            line_server: None,
            local_dir: None,
            input_root: None,
        };
        let outputs = vec![Assignment { subtask: 0, taskmanager: "tm".into(), data_address: addr.clone() }];
        let (_cmd_tx, cmd_rx) = mpsc::channel(1);
        let start = tokio::time::Instant::now();
        let mut task = tokio::spawn(run(ctx, 0, outputs, None, vec![], cmd_rx));
        // Short ticks, not one long timeout: the paused clock jumps to the next timer
        // whenever the runtime idles, and that must be the source's own retry timer.
        let result = loop {
            tokio::select! {
                r = &mut task => break r.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    assert!(start.elapsed() < Duration::from_secs(60), "the source never gave up");
                }
            }
        };
        let e = result.unwrap_err();
        assert!(e.contains(&format!("cannot connect to count-0 at {addr}")), "{e}");
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(11), "gave up after {took:?}");
    }
}
