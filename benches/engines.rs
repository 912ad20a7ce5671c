//! The same word count on streamd and on Apache Flink 2.3.0, in one run on this machine,
//! on the same input file, side by side with the COST baseline (a single-threaded
//! tokenize + hash-map count of that file, which is also how the oracle counts).
//!
//! For each engine: a cluster of 1 jobmanager and 2 taskmanagers of 1 slot in Docker,
//! parallelism 2, no faults, input as fast as possible; once with checkpoints every 1 s and
//! once with checkpoints every hour (none during the run), so the overhead of checkpoints
//! is the difference. Words/s is the run's (first RUNNING to FINISHED, the report's
//! `words_per_s`); RSS is the largest resident memory of a taskmanager and of the
//! jobmanager seen while the job ran (Docker's stats, sampled every 500 ms). Every run's
//! verdict must pass: a fast wrong answer is no result.
//!
//! `cargo bench --bench engines` (`-- --lines N` for another input size; default 4 M lines,
//! 32 M words). Needs what the Flink scenarios need (a JDK, pip: see README).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use bollard::Docker;
use chaos::engine::Engine;
use chaos::executor::{run_one, RunOptions};
use chaos::runtime::docker::DockerRuntime;
use chaos::runtime::RuntimeKind;
use futures_util::StreamExt;

/// One measured configuration.
struct Row {
    what: String,
    words_per_s: f64,
    checkpoints: u64,
    tm_rss_mib: f64,
    jm_rss_mib: f64,
    pass: bool,
}

fn scenario(engine: Engine, lines: u64, checkpoint_interval: &str, input: &Path) -> String {
    format!(
        "name: bench-engines-{engine}\n\
         cluster: {{ engine: {engine}, taskmanagers: 2, slots: 1 }}\n\
         job: {{ parallelism: 2, checkpoint_interval: {checkpoint_interval}, heartbeat: {{ interval: 1s, timeout: 10s }} }}\n\
         input: {{ file: {}, rate: 0 }}\n\
         expect: {{ output: exactly-once, timeout: 600s }}\n\
         # {lines} lines\n",
        input.display()
    )
}

/// Largest RSS (MiB) per role among the containers of runs named `bench-engines-*`.
async fn sample_rss(docker: Docker, peaks: Arc<Mutex<HashMap<String, f64>>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let opts = ListContainersOptionsBuilder::default().build();
        if let Ok(list) = docker.list_containers(Some(opts)).await {
            for c in list {
                let labels = c.labels.unwrap_or_default();
                let ours = labels.get("chaos.run_dir").is_some_and(|d| d.contains("/bench-engines-"));
                let (Some(role), Some(id), true) = (labels.get("chaos.role").cloned(), c.id, ours) else { continue };
                let s = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
                if let Some(Ok(stats)) = docker.stats(&id, Some(s)).next().await {
                    let Some(mem) = stats.memory_stats else { continue };
                    let st = mem.stats.unwrap_or_default();
                    let Some(bytes) = st.get("rss").or_else(|| st.get("anon")).copied().or(mem.usage) else { continue };
                    let mib = bytes as f64 / f64::from(1 << 20);
                    let mut p = peaks.lock().unwrap();
                    let e = p.entry(role).or_insert(0.0);
                    *e = e.max(mib);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lines: u64 = args.iter().position(|a| a == "--lines").and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(4_000_000);
    let docker = chaos::runtime::docker::connect_docker().await.expect("the benchmark needs Docker");

    // One input file for every run and the baseline.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    let spec = streamd_contract::spec::GenerateSpec { lines, words_per_line: 8, vocabulary: 10_000, seed: 1 };
    let file = std::fs::File::create(&input).expect("input file");
    streamd_contract::input::Generator::new(&spec).write_all(&mut std::io::BufWriter::new(file)).expect("writing the input");
    let size_mb = std::fs::metadata(&input).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);

    // COST baseline: median of 3.
    let mut base = Vec::new();
    let mut words = 0u64;
    for _ in 0..3 {
        let t = Instant::now();
        let counts = chaos::verdict::oracle(&chaos::verdict::OracleInput::File(input.clone())).expect("counting");
        let secs = t.elapsed().as_secs_f64();
        words = counts.values().sum();
        base.push(words as f64 / secs);
    }
    base.sort_by(f64::total_cmp);
    let baseline = base[1];

    let bin = chaos::images::build_streamd_binary().expect("building streamd");
    let streamd_image = chaos::images::ensure_streamd_image(&docker, &bin).await.expect("streamd image");
    let flink_image = chaos::flink::image::ensure_flink_image(&docker, &chaos::flink::cache_dir()).await.expect("Flink image");
    let progress = chaos::report::terminal::Progress::new();
    let opts = RunOptions { scenarios: vec![], seed: None, runtime: RuntimeKind::Docker, reports: vec![], out: None, keep: false, engines: vec![], disk: false };

    let mut rows = Vec::new();
    for engine in [Engine::Streamd, Engine::Flink] {
        for (label, interval) in [("checkpoints 1 s", "1s"), ("no checkpoint", "1h")] {
            let file = dir.path().join(format!("bench-{engine}.yaml"));
            std::fs::write(&file, scenario(engine, lines, interval, &input)).expect("scenario");
            let plan = chaos::scenario::load(&file, None).expect("the bench scenario is valid");
            let mut rt = DockerRuntime::with_docker(docker.clone(), None).with_image(streamd_image.clone());
            let peaks = Arc::new(Mutex::new(HashMap::new()));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = tokio::spawn(sample_rss(docker.clone(), peaks.clone(), stop.clone()));
            let rep = run_one::run_plan(&mut rt, &plan, &opts, &progress, None, Some(&flink_image)).await.expect("the run");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = sampler.await;
            let p = peaks.lock().unwrap();
            rows.push(Row {
                what: format!("{engine}, {label}"),
                words_per_s: rep.words_per_s,
                checkpoints: rep.checkpoints_completed,
                tm_rss_mib: p.get("taskmanager").copied().unwrap_or(0.0),
                jm_rss_mib: p.get("jobmanager").copied().unwrap_or(0.0),
                pass: rep.verdict == chaos::report::Outcome::Pass,
            });
        }
    }
    progress.finish();

    println!("\nsame word count, same input ({lines} lines, {words} words, {size_mb:.0} MB), this machine, parallelism 2:\n");
    println!("{:<34} {:>14} {:>8} {:>11} {:>11} {:>7}", "run", "words/s", "ckpts", "TM RSS MiB", "JM RSS MiB", "verdict");
    println!("{:<34} {:>14.0} {:>8} {:>11} {:>11} {:>7}", "COST baseline (1 thread, hash map)", baseline, "-", "-", "-", "-");
    for r in &rows {
        println!(
            "{:<34} {:>14.0} {:>8} {:>11.0} {:>11.0} {:>7}",
            r.what,
            r.words_per_s,
            r.checkpoints,
            r.tm_rss_mib,
            r.jm_rss_mib,
            if r.pass { "PASS" } else { "FAIL" }
        );
    }
    let wps = |i: usize| rows[i].words_per_s;
    for (i, engine) in [(0, "streamd"), (2, "flink")] {
        let overhead = (wps(i + 1) - wps(i)) / wps(i + 1) * 100.0;
        println!("{engine}: checkpoint overhead {overhead:+.1} %, {:.2}x the COST baseline", wps(i) / baseline);
    }
    println!("streamd / flink (checkpoints 1 s): {:.2}x (goal: at least 2x)", wps(0) / wps(2));
    if rows.iter().any(|r| !r.pass) {
        eprintln!("a run's verdict failed: its figures are not results");
        std::process::exit(1);
    }
}
