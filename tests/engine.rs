//! The engine under real faults, on the process runtime: a jobmanager and three
//! taskmanagers as real OS processes on 127.0.0.1, real signals, real TCP, real files.
//! Each test runs a scenario through the executor and asserts on the verdict: the final
//! committed counts equal the oracle and every word's committed counts strictly increase.

use chaos::executor::run_one::run_plan;
use chaos::executor::{ReportKind, RunOptions};
use chaos::runtime::RuntimeKind;
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
        engines: vec![],
        disk: false,
    };
    let mut rt = ProcessRuntime::new(streamd());
    let progress = chaos::report::terminal::Progress::hidden();
    let r = run_plan(&mut rt, &plan, &opts, &progress, None, None).await.expect("the run completes");
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
    let faults = "  - { at: 2500ms, action: kill, target: taskmanager-2 }\n  - { at: 2900ms, action: kill, target: taskmanager-3 }\n";
    let mut y = scenario("engine-kill-during-recovery", "exactly-once", faults);
    // Two taskmanagers gone: one left with 2 slots, so parallelism 2; a 1 s restart delay
    // puts the second kill squarely inside RESTARTING.
    y = y.replace("parallelism: 4", "parallelism: 2").replace("delay: 200ms", "delay: 1s");
    let r = run(&y).await;
    assert_exactly_once(&r);
    assert!(r.restarts >= 1);
    let second = r.faults[1].applied_ms.expect("second kill applied");
    let restarting = r.timeline.events.iter().find(|e| matches!(e.kind, chaos::report::EventKind::Restart)).map(|e| e.t_ms).expect("restarted");
    let running_again = r
        .timeline
        .events
        .iter()
        .filter(|e| matches!(e.kind, chaos::report::EventKind::Running) && e.t_ms > restarting)
        .map(|e| e.t_ms)
        .next()
        .expect("running again");
    assert!(restarting <= second && second < running_again, "second kill at {second} ms is not within RESTARTING {restarting}..{running_again} ms");
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

/// A garbage frame on the jobmanager's RPC port or a taskmanager's data port closes that
/// connection; the node lives on and the job still ends exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_from_a_peer_closes_that_connection_and_the_node_lives_on() {
    use chaos::runtime::Runtime;
    use tokio::io::AsyncWriteExt;
    let yaml = scenario("engine-garbage", "exactly-once", "");
    let yaml = yaml.replace("faults:\n", "faults: []\n");
    let plan = chaos::scenario::parse_str(&yaml, Path::new("inline.yaml"), None).expect("valid");
    let prepared = chaos::executor::run_one::prepare(&plan).expect("run dir");
    let mut rt = ProcessRuntime::new(streamd());
    rt.up(&plan.cluster_def(&prepared.cluster_id, prepared.run_dir.clone())).await.expect("up");
    let client = chaos::client::StreamdClient::new(rt.rest_url("jobmanager-1").await.unwrap()).unwrap();
    client.wait_ready(3, std::time::Duration::from_secs(30)).await.expect("ready");
    let addrs: Vec<String> = rt
        .node_records()
        .iter()
        .flat_map(|n| [n.ports.rpc, n.ports.data])
        .flatten()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    assert!(addrs.len() >= 4, "{addrs:?}");
    for a in &addrs {
        for garbage in [&b"\xff\xff\xff\xffnot a frame"[..], &b"\x00\x00\x00\x05hello"[..]] {
            let mut s = tokio::net::TcpStream::connect(a).await.expect("connect");
            s.write_all(garbage).await.expect("write");
            drop(s);
        }
    }
    // Every node still serves: the job finishes and its output is exactly once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let d = loop {
        let d = client.job("wordcount").await.expect("the jobmanager still answers");
        if d.state.is_terminal() || std::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let nodes = rt.nodes().await.expect("nodes");
    rt.down().await.expect("down");
    assert_eq!(d.state, streamd_contract::api::JobState::Finished, "{:?}", d.failure_cause);
    assert_eq!(d.restarts, 0, "garbage must not fail the job: {:?}", d.failures);
    assert!(nodes.iter().all(|n| n.state == chaos::runtime::NodeState::Running), "{nodes:?}");
    let oracle = chaos::verdict::oracle(&prepared.oracle_input).unwrap();
    let txns = streamd_contract::output::read_committed(&prepared.run_dir.join("output/wordcount")).unwrap();
    let v = chaos::verdict::verdict(&oracle, &txns, chaos::verdict::Expectation::ExactlyOnce, vec![]);
    assert!(v.pass, "{:?}", v.checks);
}

/// A missing input file FAILS the job, with the reason visible over REST.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_input_file_fails_the_job_with_the_reason_in_rest() {
    use chaos::runtime::Runtime;
    let yaml = scenario("engine-missing-input", "exactly-once", "").replace("faults:\n", "faults: []\n");
    let mut plan = chaos::scenario::parse_str(&yaml, Path::new("inline.yaml"), None).expect("valid");
    plan.job.input.generate = None;
    plan.job.input.file = Some(streamd_contract::spec::FileSpec { path: "input/nowhere.txt".into(), follow: false });
    let prepared = chaos::executor::run_one::prepare(&plan).expect("run dir");
    let mut rt = ProcessRuntime::new(streamd());
    rt.up(&plan.cluster_def(&prepared.cluster_id, prepared.run_dir.clone())).await.expect("up");
    let client = chaos::client::StreamdClient::new(rt.rest_url("jobmanager-1").await.unwrap()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let d = loop {
        if let Ok(d) = client.job("wordcount").await {
            if d.state.is_terminal() || std::time::Instant::now() > deadline {
                break d;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    rt.down().await.expect("down");
    assert_eq!(d.state, streamd_contract::api::JobState::Failed);
    let cause = d.failure_cause.unwrap_or_default();
    assert!(cause.contains("nowhere.txt") && cause.contains("does not exist"), "{cause}");
}

/// A fault that lands after the job FINISHED tested nothing; it used to
/// count as recovered with delay 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_fault_after_the_job_finished_fails_fault_effective() {
    let y = scenario("engine-late-fault", "exactly-once", "  - { at: 4s, action: kill, target: taskmanager-2 }\n")
        .replace("lines: 120000", "lines: 2000")
        .replace("rate: 20000", "rate: 0");
    let r = run(&y).await;
    assert_eq!(r.final_state.as_deref(), Some("FINISHED"));
    let fe = r.checks.get("fault_effective").expect("a fault_effective check");
    assert!(!fe.ok && fe.required, "{fe:?}");
    assert!(fe.details.contains("nothing was tested") && fe.details.contains("already FINISHED"), "{}", fe.details);
    assert_eq!(r.verdict, Outcome::Fail);
    assert_eq!(r.faults[0].recovery_ms, None, "a fault on a finished job has no recovery");
    // The output itself is right: only the run tested nothing.
    for rule in ["final_counts", "consistent_cuts", "epochs_complete"] {
        assert!(r.checks[rule].ok, "{rule}: {:?}", r.checks[rule]);
    }
}

/// `#end` (the old trailer's key) and a token over 64 KiB go through the
/// engine and come back exactly.
#[tokio::test(flavor = "multi_thread")]
async fn trailer_lookalikes_and_long_tokens_round_trip_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("velocity.txt");
    let long = "ł".repeat(40_000); // 80 KB: its length does not fit 16 bits
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!("#if $x #end word{} #end\t#end#end\n", i % 7));
    }
    text.push_str(&format!("{long} tail\n{long}\n"));
    std::fs::write(&input, &text).unwrap();
    let y = scenario("engine-trailer", "exactly-once", "")
        .replace("faults:\n", "faults: []\n")
        .replace("generate: { lines: 120000, words_per_line: 8, vocabulary: 1500 }, rate: 20000", &format!("file: {}, rate: 3000", input.display()));
    let r = run(&y).await;
    assert_eq!(r.verdict, Outcome::Pass, "failed checks: {:?}", r.failed_checks());
    assert!(r.lost.is_empty() && r.unexpected.is_empty());
    let counts = std::fs::read_to_string(&r.counts_file).unwrap();
    assert!(counts.lines().any(|l| l == "#end\t6000"), "#end must be counted as a word");
    assert!(counts.lines().any(|l| l == format!("{long}\t2")), "the long token must come back whole");
}

/// The windowed job on local processes: a kill mid-stream, and every (window, word) count
/// committed exactly once (the window oracle and the window cuts both hold).
#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_job_under_a_kill_commits_every_window_once() {
    let y = scenario("engine-window-kill", "exactly-once", "  - { at: 2500ms, action: kill, target: taskmanager-2 }\n")
        .replace("job: { parallelism: 4,", "job: { kind: window-wordcount, window: 2s, parallelism: 4,");
    let r = run(&y).await;
    assert_eq!(r.verdict, Outcome::Pass, "failed checks: {:?}", r.failed_checks());
    for rule in ["final_counts", "monotonic", "consistent_cuts", "epochs_complete"] {
        assert!(r.checks.get(rule).is_some_and(|c| c.ok), "{rule} must hold");
    }
    // 120000 lines at 1 ms: 60 windows of 2 s, each committed with its words.
    assert!(r.checks["final_counts"].details.starts_with("60 windows,"), "{}", r.checks["final_counts"].details);
    assert!(r.restarts >= 1, "the kill must have restarted the job");
}

/// A socket input (the line server `lines-1`, like `nc -l 9000`) under faults: at most once.
fn socket_scenario(name: &str, faults: &str) -> String {
    format!(
        "name: {name}\nseed: 5\ncluster: {{ jobmanagers: 1, taskmanagers: 3, slots: 2 }}\n\
         job: {{ parallelism: 4, checkpoint_interval: 1s, restart: {{ strategy: fixed-delay, attempts: 10, delay: 200ms }} }}\n\
         input: {{ socket: {{ port: 9000 }}, generate: {{ lines: 20000, words_per_line: 6, vocabulary: 500 }}, rate: 4000 }}\n\
         faults:\n{faults}\
         expect: {{ output: at-most-once, recovery_within: 15s, timeout: 60s }}\n"
    )
}

/// What a socket run must show: nothing counted twice or unexpected, and every lost word
/// inside the lines the line server's journal says were lost.
fn assert_at_most_once(r: &RunReport) {
    assert_eq!(r.verdict, Outcome::Pass, "failed checks: {:?}", r.failed_checks());
    for rule in ["well_formed", "monotonic", "at_most_once"] {
        assert!(r.checks.get(rule).is_some_and(|c| c.ok), "{rule} must hold");
    }
    assert!(r.overcounted.is_empty() && r.unexpected.is_empty());
    let lost: u64 = r.lost.values().map(|d| d.expected - d.got).sum();
    let in_lines: u64 = r.lost_lines.iter().map(|l| l.words).sum();
    assert_eq!(lost, in_lines, "every lost word is in the lost lines: {:?}", r.lost_lines);
    assert_eq!(r.final_state.as_deref(), Some("FINISHED"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_source_loses_only_what_it_read_after_its_checkpoint() {
    // taskmanager-1 runs source subtask 0, the one that reads the socket.
    let r = run(&socket_scenario("engine-socket-kill", "  - { at: 2500ms, action: kill, target: taskmanager-1 }\n")).await;
    assert_at_most_once(&r);
    assert!(r.restarts >= 1);
    assert!(!r.lost_lines.is_empty(), "lines read after the last checkpoint are lost");
    assert!(r.lost_lines[0].cause.contains("kill taskmanager-1"), "{:?}", r.lost_lines);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_line_server_is_found_again_by_the_source_and_the_feeder() {
    let r = run(&socket_scenario("engine-socket-restart-lines", "  - { at: 2s, action: restart, target: lines-1, grace: 1s }\n")).await;
    assert_at_most_once(&r);
    assert!(r.restarts >= 1, "the source's connection broke: the job restarted");
}

/// Windows over a socket: event time comes from the line server's index of each line, the
/// one socket reader's watermark from the next index. At most once per (window, word):
/// nothing counted twice, and every lost occurrence inside the lines the journal lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_socket_job_loses_only_the_lost_lines_windows() {
    let y = socket_scenario("engine-socket-window-kill", "  - { at: 2500ms, action: kill, target: taskmanager-1 }\n")
        .replace("job: { parallelism: 4,", "job: { kind: window-wordcount, window: 1s, parallelism: 4,");
    let r = run(&y).await;
    assert_at_most_once(&r);
    assert!(r.restarts >= 1);
    assert!(r.lost.keys().all(|k| streamd_contract::window::split_key(k).is_some()), "window keys: {:?}", r.lost.keys().take(3).collect::<Vec<_>>());
}

/// Bit rot in the latest completed checkpoint: once checkpoint 4 completed, `what`
/// (`snapshot`: every task snapshot; `metadata`: its `_metadata`) is damaged and
/// taskmanager-2 killed. (The same scenario runs on an engine without the catch-up in
/// tests/broken_engine.rs, and fails there.)
fn corrupt_latest_scenario(name: &str, what: &str) -> String {
    let faults = format!(
        "  - {{ at: {{ checkpoint: 4 }}, action: corrupt, target: taskmanager-2, what: {what}, how: flip }}\n  - {{ at: {{ checkpoint: 4 }}, action: kill, target: taskmanager-2 }}\n"
    );
    scenario(name, "exactly-once", &faults)
}

/// What a corrupt-latest run must show: every task restored checkpoint 3 (4 is unusable),
/// the jobmanager re-took checkpoint 4 at its recorded cut before any new one, and the
/// output is exact at every cut.
fn assert_restored_3_and_re_took_4(r: &RunReport) {
    assert_exactly_once(r);
    for rule in ["consistent_cuts", "epochs_complete"] {
        assert!(r.checks.get(rule).is_some_and(|c| c.ok), "{rule} must hold: {:?}", r.checks.get(rule));
    }
    assert_eq!(r.restores.len(), 8, "{:?}", r.restores);
    assert!(r.restores.iter().all(|t| t.checkpoint == 3), "restored the checkpoint before the corrupt one: {:?}", r.restores);
    let log = plain(&std::fs::read_to_string(r.run_dir.join("logs/jobmanager-1.log")).expect("the jobmanager's log"));
    assert!(
        log.lines().any(|l| l.contains("re-taking them at their cuts") && l.contains("restored=3") && l.contains("catch_up=[4]")),
        "the jobmanager re-took checkpoint 4: {}",
        log.lines().filter(|l| l.contains("deploying") || l.contains("catch")).collect::<Vec<_>>().join("\n")
    );
    // Checkpoint 4's cut is recorded once, and it is where checkpoint 4 was re-taken.
    let cuts = streamd_contract::cuts::read(&streamd_contract::cuts::path(&r.run_dir, "wordcount")).unwrap();
    assert_eq!(cuts.iter().filter(|c| c.checkpoint == 4).count(), 1, "{cuts:?}");
    assert!(
        log.lines().any(|l| l.contains("checkpoint complete checkpoint=4 ") && l.contains("catch_up=true")),
        "checkpoint 4 completed again, as a catch-up"
    );
}

/// A log without its ANSI colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_latest_checkpoint_is_re_taken_at_its_cut_after_restoring_the_one_before() {
    let r = run(&corrupt_latest_scenario("engine-corrupt-snapshot", "snapshot")).await;
    assert_restored_3_and_re_took_4(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_latest_metadata_is_re_taken_at_its_cut_after_restoring_the_one_before() {
    let r = run(&corrupt_latest_scenario("engine-corrupt-metadata", "metadata")).await;
    assert_restored_3_and_re_took_4(&r);
}

/// Windows: the fired windows of epoch 4 are a function of checkpoint 4's cut too.
#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_job_re_takes_a_corrupt_latest_checkpoint_at_its_cut() {
    let y = corrupt_latest_scenario("engine-corrupt-window", "snapshot")
        .replace("job: { parallelism: 4,", "job: { kind: window-wordcount, window: 2s, parallelism: 4,");
    let r = run(&y).await;
    assert_eq!(r.verdict, Outcome::Pass, "failed checks: {:?}", r.failed_checks());
    for rule in ["final_counts", "monotonic", "consistent_cuts", "epochs_complete"] {
        assert!(r.checks.get(rule).is_some_and(|c| c.ok), "{rule} must hold");
    }
    assert!(r.restores.iter().all(|t| t.checkpoint == 3), "{:?}", r.restores);
}
