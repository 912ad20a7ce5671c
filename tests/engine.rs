//! The engine under real faults, on the process runtime: a jobmanager and three
//! taskmanagers as real OS processes on 127.0.0.1, real signals, real TCP, real files.
//! Each test runs a scenario through the executor and asserts on the verdict: the final
//! committed counts equal the oracle and every word's committed counts strictly increase.

use chaos::executor::run_one::run_plan;
use chaos::executor::{ReportKind, RunOptions, RuntimeKind};
use chaos::report::{Outcome, RunReport};
use chaos::runtime::process::ProcessRuntime;
use std::path::Path;

fn streamd() -> std::path::PathBuf {
    chaos::images::build_streamd_binary().expect("building streamd")
}

async fn run(yaml: &str) -> RunReport {
    let plan = chaos::scenario::parse_str(yaml, Path::new("inline.yaml"), None).expect("valid scenario");
    let opts = RunOptions {
        scenarios: vec![],
        seed: None,
        runtime: RuntimeKind::Process,
        reports: Vec::<ReportKind>::new(),
        out: None,
        keep: false,
    };
    let mut rt = ProcessRuntime::new(streamd());
    let progress = chaos::report::terminal::Progress::hidden();
    let r = run_plan(&mut rt, &plan, &opts, &progress).await.expect("the run completes");
    println!("{}", chaos::report::terminal::summary(&r));
    r
}

fn scenario(name: &str, delivery: &str, faults: &str) -> String {
    format!(
        "name: {name}\nseed: 11\ncluster: {{ jobmanagers: 1, taskmanagers: 3, slots: 2 }}\n\
         job: {{ parallelism: 4, checkpoint_interval: 1s, delivery: {delivery}, restart: {{ strategy: fixed-delay, attempts: 10, delay: 200ms }} }}\n\
         input: {{ generate: {{ lines: 120000, words_per_line: 8, vocabulary: 1500 }}, rate: 20000 }}\n\
         faults:\n{faults}\
         expect: {{ output: exactly-once, recovery_within: 15s, timeout: 80s }}\n"
    )
}

fn assert_exactly_once(r: &RunReport) {
    assert_eq!(r.verdict, Outcome::Pass, "failed checks: {:?}", r.failed_checks());
    for rule in ["final_counts", "well_formed", "monotonic"] {
        assert!(r.checks.get(rule).is_some_and(|c| c.ok), "{rule} must hold");
    }
    assert!(r.lost.is_empty() && r.overcounted.is_empty() && r.unexpected.is_empty());
    assert_eq!(r.words_total, 120_000 * 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_a_taskmanager_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let r = run(&scenario("engine-kill", "exactly-once", "  - { at: 2500ms, action: kill, target: taskmanager-2 }\n")).await;
    assert_exactly_once(&r);
    assert!(r.restarts >= 1, "the kill must have restarted the job");
    let f = &r.faults[0];
    assert!(f.detected_ms.is_some() && f.running_ms.is_some(), "{f:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taskmanager_frozen_past_the_heartbeat_timeout_is_detected_by_heartbeat_and_replaced() {
    let r = run(&scenario("engine-pause", "exactly-once", "  - { at: 2s, action: pause, target: taskmanager-2, for: 3500ms }\n")).await;
    assert_exactly_once(&r);
    let f = &r.faults[0];
    let (a, d) = (f.applied_ms.unwrap(), f.detected_ms.expect("the jobmanager noticed the frozen taskmanager"));
    // Detection is the heartbeat timeout (2 s), not a closed connection.
    assert!((1800..=3200).contains(&(d - a)), "detected after {} ms", d - a);
    let u = f.undone_ms.expect("unpaused");
    assert!((3300..=4200).contains(&(u - a)), "undone after {} ms", u - a);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_kill_while_the_job_is_restarting_still_ends_exactly_once() {
    let faults = "  - { at: 2500ms, action: kill, target: taskmanager-2 }\n  - { at: 2700ms, action: kill, target: taskmanager-3 }\n";
    let mut y = scenario("engine-kill-during-recovery", "exactly-once", faults);
    // Two taskmanagers gone: one left with 2 slots, so parallelism 2.
    y = y.replace("parallelism: 4", "parallelism: 2");
    let r = run(&y).await;
    assert_exactly_once(&r);
    assert!(r.restarts >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_least_once_under_a_kill_is_caught_by_the_checker() {
    // Eager commits every 100 ms and no alignment: a kill between checkpoints replays
    // records whose counts were already committed.
    let r = run(&scenario("engine-alo", "at-least-once", "  - { at: 2500ms, action: kill, target: taskmanager-2 }\n")).await;
    assert_eq!(r.verdict, Outcome::Fail, "the checker must flag at-least-once under a kill");
    let mono = r.checks.get("monotonic").expect("monotonic rule");
    assert!(!mono.ok, "duplicated commits must be found");
    assert!(r.duplicates_total > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_trigger_fires_after_that_checkpoint_completed() {
    let r = run(&scenario("engine-ckpt-trigger", "exactly-once", "  - { at: { checkpoint: 3 }, action: kill, target: taskmanager-1 }\n")).await;
    assert_exactly_once(&r);
    let applied = r.faults[0].applied_ms.expect("fired");
    let ckpt3 = r
        .timeline
        .events
        .iter()
        .find(|e| e.label.starts_with("checkpoint 3 "))
        .map(|e| e.t_ms)
        .expect("checkpoint 3 completed");
    assert!(applied >= ckpt3, "fired at {applied} ms, before checkpoint 3 at {ckpt3} ms");
    assert!(applied < ckpt3 + 1000, "fired {} ms after checkpoint 3", applied - ckpt3);
}
