//! The verdict against a deliberately broken engine, on the process runtime: each test
//! switches on one sabotage (`STREAMD_SABOTAGE`, inherited by the streamd processes) and
//! asserts that the epoch checks catch what the final counts cannot.
//!
//! Tests here run one at a time (the environment is the process's): a lock serializes them.

use chaos::executor::run_one::run_plan;
use chaos::executor::{ReportKind, RunOptions};
use chaos::runtime::RuntimeKind;
use chaos::report::{Outcome, RunReport};
use chaos::runtime::process::ProcessRuntime;
use std::path::Path;
use tokio::sync::Mutex;

static ENV: Mutex<()> = Mutex::const_new(());

/// Runs a fault-free scenario on an engine broken by `sabotage`.
async fn run_broken(name: &str, sabotage: &str) -> RunReport {
    let yaml = format!(
        "name: {name}\nseed: 5\ncluster: {{ jobmanagers: 1, taskmanagers: 2, slots: 2 }}\n\
         job: {{ parallelism: 4, checkpoint_interval: 500ms }}\n\
         input: {{ generate: {{ lines: 60000, words_per_line: 8, vocabulary: 300 }}, rate: 20000 }}\n\
         faults: []\nexpect: {{ output: exactly-once, timeout: 60s }}\n"
    );
    run_yaml(&yaml, sabotage).await
}

/// Runs `yaml` on an engine broken by `sabotage`.
async fn run_yaml(yaml: &str, sabotage: &str) -> RunReport {
    let plan = chaos::scenario::parse_str(yaml, Path::new("inline.yaml"), None).expect("valid scenario");
    let opts = RunOptions { scenarios: vec![], seed: None, runtime: RuntimeKind::Process, reports: Vec::<ReportKind>::new(), out: None, keep: false, engines: vec![], disk: false };
    let mut rt = ProcessRuntime::new(chaos::images::build_streamd_binary().expect("building streamd"));
    let progress = chaos::report::terminal::Progress::hidden();
    // Set while no node runs; the nodes of this run inherit it.
    std::env::set_var("STREAMD_SABOTAGE", sabotage);
    let r = run_plan(&mut rt, &plan, &opts, &progress, None, None).await;
    std::env::remove_var("STREAMD_SABOTAGE");
    let r = r.expect("the run completes");
    println!("{}", chaos::report::terminal::summary(&r));
    r
}

fn ok(r: &RunReport, rule: &str) -> bool {
    r.checks.get(rule).unwrap_or_else(|| panic!("no {rule} check in {:?}", r.checks.keys())).ok
}

/// The blind spot of final counts alone: a sink that loses an intermediate epoch's updates. Every
/// word changes again later, so the final counts are right and counts only rise; only the
/// consistent-cut check sees the committed state at checkpoint 3 disagree with the input.
#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_drops_an_intermediate_epoch_fails_consistent_cuts_only() {
    let _g = ENV.lock().await;
    let r = run_broken("broken-drop-epoch", "drop-epoch:1:3").await;
    assert_eq!(r.final_state.as_deref(), Some("FINISHED"));
    assert_eq!(r.verdict, Outcome::Fail, "a lost epoch must fail the run");
    assert!(!ok(&r, "consistent_cuts"), "{:?}", r.checks["consistent_cuts"]);
    assert!(r.checks["consistent_cuts"].details.contains("checkpoint 3:"), "{}", r.checks["consistent_cuts"].details);
    for rule in ["final_counts", "well_formed", "monotonic", "epochs_complete"] {
        assert!(ok(&r, rule), "{rule} was expected to miss this bug: {:?}", r.checks[rule]);
    }
}

/// The engine's old behaviour for a staged file missing at commit: forget the epoch and
/// go on. One subtask then lacks an epoch the others committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_skips_an_epoch_fails_epochs_complete_and_consistent_cuts() {
    let _g = ENV.lock().await;
    let r = run_broken("broken-skip-commit", "skip-commit:2:3").await;
    assert_eq!(r.final_state.as_deref(), Some("FINISHED"));
    assert_eq!(r.verdict, Outcome::Fail);
    let ec = &r.checks["epochs_complete"];
    assert!(!ec.ok && ec.details.contains("subtask 2 lacks epoch(s) 3"), "{ec:?}");
    assert!(!ok(&r, "consistent_cuts"));
    assert!(ok(&r, "final_counts") && ok(&r, "monotonic") && ok(&r, "well_formed"), "{:?}", r.checks);
}

/// The engine before it re-took checkpoints at their cuts (tests/engine.rs runs the same
/// scenario on the real engine, and it passes there): checkpoint 4 is corrupt, checkpoint
/// 3 is restored, and the first checkpoint after the restore is taken wherever the replay
/// is, behind checkpoint 4's cut, whose epoch the sinks had committed.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_catch_up_a_corrupt_latest_checkpoint_fails_monotonic_and_consistent_cuts() {
    let _g = ENV.lock().await;
    let yaml = "name: broken-no-catch-up\nseed: 11\ncluster: { jobmanagers: 1, taskmanagers: 3, slots: 2 }\n\
         job: { parallelism: 4, checkpoint_interval: 1s, restart: { strategy: fixed-delay, attempts: 10, delay: 200ms } }\n\
         input: { generate: { lines: 120000, words_per_line: 8, vocabulary: 1500 }, rate: 20000 }\n\
         faults:\n  - { at: { checkpoint: 4 }, action: corrupt, target: taskmanager-2, what: snapshot, how: flip }\n\
         \x20 - { at: { checkpoint: 4 }, action: kill, target: taskmanager-2 }\n\
         expect: { output: exactly-once, recovery_within: 15s, timeout: 80s }\n";
    let r = run_yaml(yaml, "no-catch-up").await;
    assert!(r.restores.iter().all(|t| t.checkpoint == 3), "{:?}", r.restores);
    assert_eq!(r.verdict, Outcome::Fail, "the bug must be caught");
    assert!(!ok(&r, "monotonic") && !ok(&r, "consistent_cuts"), "{:?}", r.checks);
    assert!(ok(&r, "final_counts"), "final counts hide it: {:?}", r.checks["final_counts"]);
}
