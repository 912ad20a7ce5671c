//! What the disk-fault passthrough costs with no fault active: the same job on the same
//! input, once with every node's /data the plain run directory and once served through
//! the FUSE passthrough (`chaos run --disk`), alternating, on the process runtime (real
//! streamd processes, no Docker: the passthrough is the same daemon on both runtimes).
//!
//! A jobmanager and two taskmanagers of one slot, parallelism 2, the input file read as
//! fast as possible (through /data like every other file), checkpoints every 1 s. Per
//! run: words/s (first RUNNING to FINISHED, the report's `words_per_s`) and the median
//! checkpoint duration (trigger to complete, the report's `checkpoint_ms`). The order
//! alternates per rep (ABBA) and every run starts after a sync(2). Printed: each run, then
//! the medians side by side, the passthrough's cost in percent, and the median of the
//! per-rep paired costs. Every run's verdict must pass.
//!
//! `cargo bench --bench passthrough` (`-- --lines N --reps R`; default 4 M lines, 3 reps).
//! Needs /dev/fuse and root, as disk faults do.

use std::path::Path;

use chaos::executor::{run_one, RunOptions};
use chaos::runtime::process::ProcessRuntime;
use chaos::runtime::RuntimeKind;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn scenario(input: &Path) -> String {
    format!(
        "name: bench-passthrough\n\
         cluster: {{ taskmanagers: 2, slots: 1 }}\n\
         job: {{ parallelism: 2, checkpoint_interval: 1s }}\n\
         input: {{ file: {}, rate: 0 }}\n\
         expect: {{ output: exactly-once, timeout: 600s }}\n",
        input.display()
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lines = arg(&args, "--lines", 4_000_000);
    let reps = arg(&args, "--reps", 3).max(1);

    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    let spec = streamd_contract::spec::GenerateSpec { lines, words_per_line: 8, vocabulary: 10_000, seed: 1 };
    let file = std::fs::File::create(&input).expect("input file");
    streamd_contract::input::Generator::new(&spec).write_all(&mut std::io::BufWriter::new(file)).expect("writing the input");
    let file = dir.path().join("bench-passthrough.yaml");
    std::fs::write(&file, scenario(&input)).expect("scenario");
    let plan = chaos::scenario::load(&file, None).expect("the bench scenario is valid");

    let bin = chaos::images::build_streamd_binary().expect("building streamd");
    let progress = chaos::report::terminal::Progress::hidden();
    // (words/s, median checkpoint ms) per run, plain and through the passthrough.
    let mut plain: Vec<(f64, f64)> = Vec::new();
    let mut through: Vec<(f64, f64)> = Vec::new();
    println!("{:<4} {:<12} {:>14} {:>16} {:>7}", "rep", "/data", "words/s", "checkpoint ms", "verdict");
    for rep in 1..=reps {
        // ABBA: which mode runs first alternates, so neither always inherits the other's
        // leftovers (each run copies the input into its run directory and deletes it after).
        let order = if rep % 2 == 1 { [false, true] } else { [true, false] };
        for disk in order {
            // Each run starts with no dirty pages to write back: the last run's input copy
            // and output would otherwise be flushed during this one, behind its fsyncs.
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let opts = RunOptions {
                scenarios: vec![],
                seed: None,
                runtime: RuntimeKind::Process,
                reports: vec![],
                out: None,
                keep: false,
                engines: vec![],
                disk,
            };
            let mut rt = ProcessRuntime::new(bin.clone());
            let r = run_one::run_plan(&mut rt, &plan, &opts, &progress, None, None).await.expect("the run");
            let ckpt = r.checkpoint_ms.as_ref().map(|c| c.median).unwrap_or(f64::NAN);
            let pass = r.verdict == chaos::report::Outcome::Pass;
            println!(
                "{rep:<4} {:<12} {:>14.0} {:>16.1} {:>7}",
                if disk { "passthrough" } else { "plain" },
                r.words_per_s,
                ckpt,
                if pass { "PASS" } else { "FAIL" }
            );
            if !pass {
                eprintln!("a run's verdict failed: its figures are not results");
                std::process::exit(1);
            }
            if disk { &mut through } else { &mut plain }.push((r.words_per_s, ckpt));
        }
    }
    let m = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let (pw, pc) = (m(&plain, |x| x.0), m(&plain, |x| x.1));
    let (tw, tc) = (m(&through, |x| x.0), m(&through, |x| x.1));
    // Paired per rep (the two runs of a rep ran back to back, under the same load).
    let paired = |f: fn(&(f64, f64)) -> f64, cost: fn(f64, f64) -> f64| {
        median(&mut plain.iter().zip(&through).map(|(p, t)| cost(f(p), f(t))).collect::<Vec<_>>())
    };
    let words = lines * 8;
    println!("\nmedians of {reps} ({lines} lines, {words} words; parallelism 2, checkpoints every 1 s):");
    println!("{:<12} {:>14} {:>16}", "/data", "words/s", "checkpoint ms");
    println!("{:<12} {:>14.0} {:>16.1}", "plain", pw, pc);
    println!("{:<12} {:>14.0} {:>16.1}", "passthrough", tw, tc);
    println!(
        "passthrough cost: throughput {:+.1} %, checkpoint duration {:+.1} % (goal: under 10 % each)",
        (pw - tw) / pw * 100.0,
        (tc - pc) / pc * 100.0
    );
    println!(
        "paired per rep (median): throughput {:+.1} %, checkpoint duration {:+.1} %",
        paired(|x| x.0, |p, t| (p - t) / p * 100.0),
        paired(|x| x.1, |p, t| (t - p) / p * 100.0)
    );
}
