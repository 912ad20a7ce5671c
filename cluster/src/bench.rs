//! `streamd bench`: throughput against the COST baseline, measured side by side in one run
//! on the same generated input file:
//! 1. the baseline: single-threaded read + tokenize + hash-map count;
//! 2. the engine (a jobmanager and one taskmanager with 2 slots, as real processes,
//!    parallelism 2) with checkpoints off;
//! 3. the same with checkpoints every 1 s;
//! 4. the windowed word count (5 s tumbling event-time windows, 1 ms per line) with
//!    checkpoints every 1 s, beside the running count of 3;
//!
//! and the idle resident memory of a taskmanager. Each measurement is repeated (`--reps`,
//! alternating the configurations so a noisy neighbour hits all of them) and the median
//! is reported. Figures, not assertions.
//!
//! `streamd bench --restore` measures something else: task-local against remote restore
//! time of one large count state (see [`crate::bench_restore`]).

use crate::api::{JobDetails, JobState};
use crate::input::Generator;
use crate::spec::GenerateSpec;
use crate::tokenizer::for_each_token;
use ahash::AHashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Input lines (8 words each by default).
    #[arg(long, default_value_t = 12_000_000)]
    pub lines: u64,
    #[arg(long, default_value_t = 8)]
    pub words_per_line: u32,
    #[arg(long, default_value_t = 10_000)]
    pub vocabulary: u32,
    #[arg(long, default_value_t = 2)]
    pub parallelism: u32,
    /// Repetitions of each measurement (alternating engine configurations); the median counts.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Measure restore time instead: a count state of `--state-words` distinct words
    /// restored from a task-local copy and from shared storage behind `--remote-standin`.
    #[arg(long)]
    pub restore: bool,
    #[arg(long, default_value_t = 1_000_000)]
    pub state_words: u64,
    /// The remote-storage stand-in for shared storage reads: `<latency>,<MB/s>`.
    #[arg(long, default_value = "20ms,100")]
    pub remote_standin: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The figures of one bench run.
#[derive(Debug, serde::Serialize)]
pub struct BenchResult {
    pub words: u64,
    pub distinct_words: usize,
    pub baseline_words_per_s: f64,
    pub engine_words_per_s: f64,
    pub engine_checkpointed_words_per_s: f64,
    pub engine_windowed_words_per_s: f64,
    pub checkpoint_overhead_pct: f64,
    pub engine_vs_baseline: f64,
    pub checkpoints_completed: u64,
    pub taskmanager_idle_rss_bytes: u64,
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.restore {
        return crate::bench_restore::run(a.state_words, a.reps, &a.remote_standin, a.json);
    }
    let dir = std::env::temp_dir().join(format!("streamd-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("input"))?;
    let _cleanup = RemoveDir(dir.clone());
    let input = dir.join("input/words.txt");
    eprintln!("generating {} lines into {} ...", a.lines, input.display());
    let spec = GenerateSpec { lines: a.lines, words_per_line: a.words_per_line, vocabulary: a.vocabulary, seed: 42 };
    {
        let g = Generator::new(&spec);
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&input)?);
        let mut line = String::new();
        for i in 0..a.lines {
            line.clear();
            g.line_into(i, &mut line);
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        w.flush()?;
    }

    let reps = a.reps.max(1);
    let (mut base, mut off, mut on, mut win) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut words, mut distinct, mut ckpts, mut rss) = (0, 0, 0, 0);
    for rep in 1..=reps {
        eprintln!("[{rep}/{reps}] baseline: single-threaded tokenize + hash-map count ...");
        let (w, d, secs) = baseline(&input)?;
        (words, distinct) = (w, d);
        base.push(w as f64 / secs);
        eprintln!("[{rep}/{reps}] engine, parallelism {}, checkpoints off ...", a.parallelism);
        let (e1, _, _) = engine(&dir, a.parallelism, "0", Job::Running, false).await?;
        off.push(w as f64 / e1);
        eprintln!("[{rep}/{reps}] engine, parallelism {}, checkpoints every 1s ...", a.parallelism);
        let (e2, c, r) = engine(&dir, a.parallelism, "1s", Job::Running, rep == reps).await?;
        on.push(w as f64 / e2);
        ckpts = c;
        rss = rss.max(r);
        eprintln!("[{rep}/{reps}] windowed engine, parallelism {}, 5s windows, checkpoints every 1s ...", a.parallelism);
        let (e3, _, _) = engine(&dir, a.parallelism, "1s", Job::Windowed, false).await?;
        win.push(w as f64 / e3);
    }
    let baseline_wps = median(base);
    let engine_wps = median(off);
    let ckpt_wps = median(on);
    let r = BenchResult {
        words,
        distinct_words: distinct,
        baseline_words_per_s: baseline_wps,
        engine_words_per_s: engine_wps,
        engine_checkpointed_words_per_s: ckpt_wps,
        engine_windowed_words_per_s: median(win),
        checkpoint_overhead_pct: (1.0 - ckpt_wps / engine_wps) * 100.0,
        engine_vs_baseline: ckpt_wps / baseline_wps,
        checkpoints_completed: ckpts,
        taskmanager_idle_rss_bytes: rss,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("input: {} words, {} distinct, {} lines", r.words, r.distinct_words, a.lines);
        println!("{:<44} {:>14}", "", "words/s");
        println!("{:<44} {:>14.0}", "baseline (1 thread, hash map)", r.baseline_words_per_s);
        println!("{:<44} {:>14.0}", format!("engine p={} checkpoints off", a.parallelism), r.engine_words_per_s);
        println!("{:<44} {:>14.0}", format!("engine p={} checkpoints 1s ({} taken)", a.parallelism, r.checkpoints_completed), r.engine_checkpointed_words_per_s);
        println!("{:<44} {:>14.0}", format!("engine p={} 5s windows, checkpoints 1s", a.parallelism), r.engine_windowed_words_per_s);
        println!("engine (checkpointed) / baseline: {:.2}x   (goal >= 0.5x)", r.engine_vs_baseline);
        println!("checkpoint overhead: {:.1} %   (goal < 5 %)", r.checkpoint_overhead_pct);
        println!("taskmanager idle RSS: {:.1} MB   (goal < 20 MB)", r.taskmanager_idle_rss_bytes as f64 / 1e6);
    }
    Ok(())
}

/// The COST baseline: one thread, no engine.
fn baseline(input: &Path) -> anyhow::Result<(u64, usize, f64)> {
    let t = Instant::now();
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(input)?);
    let mut counts: AHashMap<Box<str>, u64> = AHashMap::new();
    let mut words = 0u64;
    let mut line = String::new();
    while r.read_line(&mut line)? > 0 {
        for_each_token(&line, |w| {
            words += 1;
            match counts.get_mut(w) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(w.into(), 1);
                }
            }
        });
        line.clear();
    }
    Ok((words, counts.len(), t.elapsed().as_secs_f64()))
}

pub(crate) struct Kill(pub(crate) Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) struct RemoveDir(pub(crate) std::path::PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Which word count the engine runs.
#[derive(Clone, Copy)]
enum Job {
    Running,
    /// 5 s tumbling event-time windows, 1 ms of event time per line.
    Windowed,
}

/// Runs the job on real processes; returns (seconds RUNNING -> FINISHED, checkpoints, idle TM RSS).
async fn engine(dir: &Path, p: u32, interval: &str, kind: Job, measure_rss: bool) -> anyhow::Result<(f64, u64, u64)> {
    let _ = std::fs::remove_dir_all(dir.join("checkpoints"));
    let _ = std::fs::remove_dir_all(dir.join("output"));
    let job = dir.join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "parallelism: {p}\ncheckpoint_interval: {interval}\nwait_for_taskmanagers: 1\n\
             input: {{ file: {{ path: input/words.txt }} }}\n{}",
            match kind {
                Job::Running => "",
                Job::Windowed => "kind: window-wordcount\nwindow: 5s\n",
            }
        ),
    )?;
    let exe = std::env::current_exe()?;
    let (rpc, rest, data) = (free_port()?, free_port()?, free_port()?);
    let log = |name: &str| -> anyhow::Result<Stdio> { Ok(std::fs::File::create(dir.join(format!("{name}.log")))?.into()) };
    let jm = Command::new(&exe)
        .args(["jobmanager", "--job"])
        .arg(&job)
        .arg("--data-dir")
        .arg(dir)
        .args(["--rpc-bind", &format!("127.0.0.1:{rpc}"), "--rest-bind", &format!("127.0.0.1:{rest}")])
        .env("RUST_LOG", "warn")
        .stderr(log("jm")?)
        .spawn()?;
    let mut kids = Kill(vec![jm]);
    let tm = Command::new(&exe)
        .args(["taskmanager", "--jobmanager", &format!("127.0.0.1:{rpc}"), "--slots", &p.to_string(), "--data-dir"])
        .arg(dir)
        .args(["--data-bind", &format!("127.0.0.1:{data}")])
        .env("RUST_LOG", "warn")
        .stderr(log("tm")?)
        .spawn()?;
    let tm_pid = tm.id();
    kids.0.push(tm);
    let url = format!("http://127.0.0.1:{rest}/jobs/wordcount");
    let deadline = Instant::now() + Duration::from_secs(600);
    let details = loop {
        if Instant::now() > deadline {
            anyhow::bail!("the bench job did not finish in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(d) = http_get_json::<JobDetails>(&url).await else { continue };
        match d.state {
            JobState::Finished => break d,
            JobState::Failed => anyhow::bail!("the bench job failed: {:?}", d.failure_cause),
            _ => {}
        }
    };
    let at = |s: JobState| details.history.iter().find(|h| h.state == s).map(|h| h.at_ms);
    let (Some(start), Some(end)) = (at(JobState::Running), at(JobState::Finished)) else {
        anyhow::bail!("no RUNNING/FINISHED in the job history");
    };
    let rss = if measure_rss {
        // The job is done: the taskmanager is idle now. Let it settle, then read VmRSS.
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_bytes(tm_pid).unwrap_or(0)
    } else {
        0
    };
    Ok(((end - start).max(1) as f64 / 1000.0, details.checkpoints_completed, rss))
}

/// Resident set size of a process, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A minimal HTTP/1.1 GET for the bench (streamd carries no HTTP client).
pub(crate) async fn http_get_json<T: serde::de::DeserializeOwned>(url: &str) -> anyhow::Result<T> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("not an http url"))?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).ok_or_else(|| anyhow::anyhow!("no body"))?;
    Ok(serde_json::from_str(body)?)
}
