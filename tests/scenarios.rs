//! The product: every scenario in `scenarios/` run by the `chaos` binary on Docker, as a
//! user (or CI) would run it, judged by its exit code and its report. One test per
//! scenario; nextest runs them one at a time (.config/nextest.toml).
//!
//! Without a Docker daemon these tests fail under CI=true and say so loudly otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Is Docker reachable? In CI its absence is an error, not a skip.
fn docker_or_skip() -> bool {
    let ok = Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but the Docker daemon is unreachable: the scenario suite needs Docker");
        }
        eprintln!("\n!!! SKIPPED: no Docker daemon reachable; the scenario suite did NOT run !!!\n");
    }
    ok
}

struct Outcome {
    code: i32,
    stdout: String,
    report: serde_json::Value,
}

fn run(file: &str) -> Option<Outcome> {
    if !docker_or_skip() {
        return None;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .current_dir(root())
        .args(["run", &format!("scenarios/{file}"), "--report", "json", "--report", "junit", "--report", "html", "--out"])
        .arg(out_dir.path())
        .env("CHAOS_STREAMD_BIN", streamd_bin())
        .output()
        .expect("running chaos");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("{stdout}\n--- stderr ---\n{stderr}");
    let name = file.trim_end_matches(".yaml");
    let report = std::fs::read_to_string(out_dir.path().join(format!("{name}.json")))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    assert!(out_dir.path().join("junit.xml").exists() || out.status.code() != Some(0), "junit.xml written");
    Some(Outcome { code: out.status.code().unwrap_or(-1), stdout, report })
}

fn streamd_bin() -> PathBuf {
    chaos::images::build_streamd_binary().expect("building streamd")
}

/// A scenario that must pass: exit 0, verdict pass, every fault applied and recovered.
fn passes(file: &str) {
    let Some(o) = run(file) else { return };
    assert_eq!(o.code, 0, "chaos run {file} must pass:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "pass");
    for f in o.report["faults"].as_array().into_iter().flatten() {
        assert!(f["applied_ms"].is_u64(), "every fault applied: {f}");
        assert!(f["error"].is_null(), "no fault failed: {f}");
    }
    assert!(Path::new(o.report["counts_file"].as_str().unwrap_or("")).exists(), "counts.tsv written");
}

macro_rules! scenario {
    ($name:ident, $file:literal) => {
        #[test]
        fn $name() {
            passes($file);
        }
    };
}

scenario!(kill_tm2, "kill-tm2.yaml");
scenario!(stop_tm, "stop-tm.yaml");
scenario!(pause_tm, "pause-tm.yaml");
scenario!(restart_tm, "restart-tm.yaml");
scenario!(kill_two_tms, "kill-two-tms.yaml");
scenario!(kill_during_recovery, "kill-during-recovery.yaml");
scenario!(random_kills, "random-kills.yaml");
scenario!(heterogeneous, "heterogeneous.yaml");
scenario!(netem_delay_tm, "netem-delay-tm.yaml");
scenario!(netem_loss_jm, "netem-loss-jm.yaml");
scenario!(partition_tm, "partition-tm.yaml");
scenario!(partition_one_way, "partition-one-way.yaml");
// The windowed job: every (window, word) count exactly once under faults.
scenario!(window_kill_tm2, "window-kill-tm2.yaml");
scenario!(window_kill_during_firing, "window-kill-during-firing.yaml");
scenario!(window_pause_tm, "window-pause-tm.yaml");
// High availability (issue 5): etcd + two jobmanagers.
scenario!(kill_jm_leader, "kill-jm-leader.yaml");
scenario!(pause_jm_leader, "pause-jm-leader.yaml");
scenario!(kill_leader_and_tm, "kill-leader-and-tm.yaml");
scenario!(restart_etcd, "restart-etcd.yaml");

// Apache Flink 2.3.0 under the same faults and verdict (cluster.engine: flink).
scenario!(flink_kill_tm2_default_heartbeats, "flink-kill-tm2-default-heartbeats.yaml");
scenario!(flink_pause_tm, "flink-pause-tm.yaml");
scenario!(flink_netem_delay_tm, "flink-netem-delay-tm.yaml");
// Flink's high availability: two jobmanagers and ZooKeeper.
scenario!(flink_kill_jm_leader, "flink-kill-jm-leader.yaml");

/// On Flink, a kill is detected (Flink's exception history names the lost taskmanager),
/// the job is RUNNING again, and the report's timings are filled from Flink's REST API.
#[test]
fn flink_kill_is_timed_from_flinks_rest_api() {
    let Some(o) = run("flink-kill-tm2.yaml") else { return };
    assert_eq!(o.code, 0, "{}", o.stdout);
    let f = &o.report["faults"][0];
    let applied = f["applied_ms"].as_u64().expect("applied");
    for key in ["detected_ms", "running_ms", "caught_up_ms"] {
        let t = f[key].as_u64().unwrap_or_else(|| panic!("{key} measured: {f}"));
        assert!(t >= applied, "{key} after the fault: {f}");
    }
    assert_eq!(o.report["engine"], "flink");
    assert!(o.report["restarts"].as_u64() >= Some(1), "Flink restarted the job");
}

/// The checker catches Flink too: AT_LEAST_ONCE checkpoints and a sink without two-phase
/// commit, judged exactly-once, exit 1 with the updates committed twice named.
#[test]
fn flink_at_least_once_caught() {
    let Some(o) = run("flink-at-least-once-caught.yaml") else { return };
    assert_eq!(o.code, 1, "chaos must exit 1 on flink-at-least-once-caught:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "fail");
    assert_eq!(o.report["checks"]["complete_history"]["ok"], false, "{}", o.report["checks"]);
    assert!(o.stdout.contains("committed twice"), "the summary says why:\n{}", o.stdout);
}

/// Flink's classic demo with a socket source (`nc -l 9000` is the line server lines-1):
/// the taskmanager reading the socket is stopped; what its source read after the last
/// checkpoint is lost. At-most-once passes, and the report names the lost lines and the
/// fault that lost them.
#[test]
fn socket_stop_tm() {
    let Some(o) = run("socket-stop-tm.yaml") else { return };
    assert_eq!(o.code, 0, "chaos run socket-stop-tm.yaml must pass:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "pass");
    assert_eq!(o.report["checks"]["at_most_once"]["ok"], true, "{}", o.report["checks"]);
    assert_eq!(o.report["checks"]["monotonic"]["ok"], true, "{}", o.report["checks"]);
    let lost = o.report["lost_lines"].as_array().cloned().unwrap_or_default();
    assert!(!lost.is_empty(), "the stop lost lines read after the last checkpoint: {}", o.report);
    assert!(lost.iter().any(|r| r["cause"].as_str().is_some_and(|c| c.contains("stop taskmanager-1"))), "{lost:?}");
    assert!(o.stdout.contains("cannot replay"), "the summary says why:\n{}", o.stdout);
}

/// The same run judged exactly-once: exit 1, and `final_counts` names the loss and its cause.
#[test]
fn socket_stop_tm_exactly_once_names_the_loss() {
    let Some(o) = run("socket-stop-tm-exactly-once.yaml") else { return };
    assert_eq!(o.code, 1, "chaos must exit 1 on socket-stop-tm-exactly-once:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "fail");
    let fc = &o.report["checks"]["final_counts"];
    assert_eq!(fc["ok"], false, "{fc}");
    let details = fc["details"].as_str().unwrap_or("");
    for needle in ["lost at the restart", "stop taskmanager-1", "cannot replay"] {
        assert!(details.contains(needle), "final_counts names the loss ({needle}): {details}");
    }
}

/// The checker can fail: at-least-once under a kill, judged as exactly-once, exits 1 and
/// names duplicated commits or over-counted words.
#[test]
fn at_least_once_caught() {
    let Some(o) = run("at-least-once-caught.yaml") else { return };
    assert_eq!(o.code, 1, "chaos must exit 1 on at-least-once-caught:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "fail");
    let dup = o.report["checks"]["monotonic"]["ok"] == false;
    let over = o.report["overcounted"].as_object().is_some_and(|m| !m.is_empty());
    assert!(dup || over, "the report names duplicated commits or over-counted words");
    assert!(o.stdout.contains("monotonic") || o.stdout.contains("overcount"), "the summary says why");
}

/// The checker can fail on windows too: at-least-once windows under a kill, judged
/// exactly-once, exit 1 naming (window, word) counts committed twice.
#[test]
fn window_at_least_once_caught() {
    let Some(o) = run("window-at-least-once-caught.yaml") else { return };
    assert_eq!(o.code, 1, "chaos must exit 1 on window-at-least-once-caught:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "fail");
    assert_eq!(o.report["checks"]["monotonic"]["ok"], false, "{}", o.report["checks"]);
    assert!(o.stdout.contains("in the window at"), "the summary names windows:\n{}", o.stdout);
}

/// Every scenario file has a test above (a new file without one fails here).
#[test]
fn every_scenario_file_is_covered() {
    let src = std::fs::read_to_string(root().join("tests/scenarios.rs")).expect("this file");
    for e in std::fs::read_dir(root().join("scenarios")).expect("scenarios/") {
        let name = e.expect("entry").file_name().to_string_lossy().to_string();
        if name.ends_with(".yaml") {
            assert!(src.contains(&format!("\"{name}\"")), "scenarios/{name} has no test in tests/scenarios.rs");
        }
    }
}
