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
}
