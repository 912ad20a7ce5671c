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
// High availability: etcd + two jobmanagers.
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

/// The adaptive checkpoint interval under a storm of kills: the run passes, and the
/// interval the jobmanager chose changed over the run, stayed within `[min, max]`, and saw
/// the failures.
#[test]
fn adaptive_interval_storm() {
    let Some(o) = run("adaptive-interval-storm.yaml") else { return };
    assert_eq!(o.code, 0, "chaos run adaptive-interval-storm.yaml must pass:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "pass");
    let i = &o.report["checkpoint_interval"];
    assert_eq!((i["min_ms"].as_u64(), i["max_ms"].as_u64()), (Some(100), Some(4000)), "{i}");
    let points = i["points"].as_array().cloned().unwrap_or_default();
    let chosen: Vec<u64> = points.iter().filter_map(|p| p["interval_ms"].as_u64()).collect();
    assert!(chosen.iter().all(|ms| (100..=4000).contains(ms)), "outside [min, max]: {chosen:?}");
    let distinct: std::collections::BTreeSet<u64> = chosen.iter().copied().collect();
    assert!(distinct.len() >= 2, "the interval never changed: {chosen:?}");
    // Five kills, each of a taskmanager with tasks (the seed never picks the one that came
    // back idle); a kill can land in the previous restart's deployment and count once with
    // it, so three at least.
    let failures = points.iter().filter_map(|p| p["failures"].as_u64()).max().unwrap_or(0);
    assert!(failures >= 3, "the failure estimate missed the kills: {i}");
    assert!(o.stdout.contains("checkpoint interval adaptive 100ms..4s"), "the summary shows it:\n{}", o.stdout);
}

/// The restores report.json lists: (task, taskmanager, source, fallback) per restored task.
fn restores(report: &serde_json::Value) -> Vec<(String, String, String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    report["restores"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            assert!(r["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "a measured restore time: {r}");
            (s(&r["task"]), s(&r["taskmanager"]), s(&r["source"]), s(&r["fallback"]))
        })
        .collect()
}

/// Task-local recovery, the node returns (same container): every task of the restarted
/// attempt restores from its taskmanager's local copy, taskmanager-2's included.
#[test]
fn local_recovery_restart_tm() {
    let Some(o) = run("local-recovery-restart-tm.yaml") else { return };
    assert_eq!(o.code, 0, "{}", o.stdout);
    let r = restores(&o.report);
    assert_eq!(r.len(), 12, "6 sources and 6 counts restored once: {r:?}");
    assert!(r.iter().all(|(_, _, src, _)| src == "local"), "every restore is local: {r:?}");
    assert!(r.iter().any(|(_, tm, _, _)| tm == "taskmanager-2"), "the returned node restored its own tasks: {r:?}");
    assert!(o.stdout.contains("restores (per recovery"), "the summary shows them:\n{}", o.stdout);
}

/// Task-local recovery, the node is lost: its pipeline restores remotely elsewhere (no
/// local copy there), the surviving taskmanagers' pipelines locally.
#[test]
fn local_recovery_lost_tm() {
    let Some(o) = run("local-recovery-lost-tm.yaml") else { return };
    assert_eq!(o.code, 0, "{}", o.stdout);
    let r = restores(&o.report);
    assert_eq!(r.len(), 8, "{r:?}");
    assert!(r.iter().all(|(_, tm, _, _)| tm != "taskmanager-2"), "nothing runs on the lost node: {r:?}");
    let remote: Vec<_> = r.iter().filter(|(_, _, src, _)| src == "remote").collect();
    assert_eq!(remote.len(), 2, "the lost node's source and count restore remotely: {r:?}");
    assert!(remote.iter().all(|(_, _, _, why)| why.starts_with("missing")), "{remote:?}");
    assert_eq!(r.iter().filter(|(_, _, src, _)| src == "local").count(), 6, "{r:?}");
}

/// A large state on remote-like storage: the lost node's count task restores remotely and
/// more slowly than the count tasks restoring their local copies. One restart only: a
/// taskmanager building a vocabulary of millions of words, or reading megabytes of state
/// through the storage model, used to miss its heartbeats and be declared lost (8 to 12
/// restarts before the fix).
#[test]
fn local_vs_remote_restore() {
    let Some(o) = run("local-vs-remote-restore.yaml") else { return };
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert_eq!(o.report["restarts"], 1, "only the kill restarts the job:\n{}", o.stdout);
    let all = o.report["restores"].as_array().cloned().unwrap_or_default();
    let counts = |source: &str| -> Vec<f64> {
        all.iter()
            .filter(|r| r["source"] == source && r["task"].as_str().is_some_and(|t| t.starts_with("count")))
            .map(|r| r["duration_ms"].as_f64().unwrap_or(0.0))
            .collect()
    };
    let (local, remote) = (counts("local"), counts("remote"));
    assert_eq!((local.len(), remote.len()), (3, 1), "{all:?}");
    let slowest_local = local.iter().cloned().fold(0.0, f64::max);
    assert!(all.iter().all(|r| r["bytes"].as_u64().unwrap_or(0) > 0), "{all:?}");
    assert!(remote[0] > slowest_local, "remote {remote:?} ms against local {local:?} ms");
}

/// A damaged local copy (truncated while its node was down) is refused by its checksum:
/// that node's tasks restore from shared storage, the others locally; output exact.
#[test]
fn local_copy_corrupt() {
    let Some(o) = run("local-copy-corrupt.yaml") else { return };
    assert_eq!(o.code, 0, "{}", o.stdout);
    let r = restores(&o.report);
    assert_eq!(r.len(), 12, "{r:?}");
    for (task, tm, src, why) in &r {
        if tm == "taskmanager-2" {
            assert_eq!(src, "remote", "{task} on the damaged node: {r:?}");
            assert!(why.starts_with("corrupt"), "{task}: {why}");
        } else {
            assert_eq!(src, "local", "{task} on {tm}: {r:?}");
        }
    }
    assert_eq!(r.iter().filter(|(_, tm, _, _)| tm == "taskmanager-2").count(), 4, "{r:?}");
}

/// A corrupt latest checkpoint: the jobmanager's checksum check skips it and every task
/// restores the checkpoint before it. The skipped checkpoint had completed (its epoch may
/// be committed), so the new attempt re-takes it at its recorded cut before any new
/// checkpoint: the run passes, exact at every cut.
#[test]
fn corrupt_latest_checkpoint() {
    let Some(o) = run("corrupt-latest-checkpoint.yaml") else { return };
    let r = &o.report["restores"];
    let restored: Vec<u64> = r.as_array().into_iter().flatten().filter_map(|t| t["checkpoint"].as_u64()).collect();
    assert_eq!(restored.len(), 8, "{r}");
    assert!(restored.iter().all(|&c| c == 3), "restored the checkpoint before the corrupt one: {r}");
    assert_eq!(o.code, 0, "chaos run corrupt-latest-checkpoint.yaml must pass:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "pass");
    for rule in ["final_counts", "well_formed", "monotonic", "consistent_cuts", "epochs_complete"] {
        assert_eq!(o.report["checks"][rule]["ok"], true, "{rule}: {}", o.report["checks"]);
    }
}

/// A disk scenario: it passes, and the report carries the passthrough's measurements of
/// the first fault on `node`. Returns them and the report.
fn disk_passes(file: &str, node: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let o = run(file)?;
    assert_eq!(o.code, 0, "chaos run {file} must pass:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "pass");
    let f = &o.report["faults"][0];
    assert!(f["error"].is_null(), "the disk fault applied and undone: {f}");
    let m = f["measured"]["disk"][node].clone();
    assert!(m.is_object(), "the report measures the disk fault on {node}: {f}");
    assert!(o.stdout.contains("measured"), "the terminal summary shows the measurement:\n{}", o.stdout);
    Some((m, o.report))
}

#[test]
fn disk_slow_tm() {
    let Some((m, _)) = disk_passes("disk-slow-tm.yaml", "taskmanager-2") else { return };
    // 20ms ± 5ms asked: the mean asked is near 20 ms and the measured latency includes it.
    for op in ["write", "fsync", "rename"] {
        let d = &m["delay"][op];
        let (asked, took) = (d["asked_ms"].as_f64().unwrap_or(0.0), d["measured_ms"].as_f64().unwrap_or(0.0));
        assert!(d["delayed"].as_u64().unwrap_or(0) > 0, "{op} delayed: {m}");
        assert!((15.0..=25.0).contains(&asked), "{op}: asked {asked} ms: {m}");
        assert!(took >= asked, "{op}: measured {took} ms below the asked {asked} ms: {m}");
    }
}

#[test]
fn disk_eio_fsync() {
    let Some((m, report)) = disk_passes("disk-eio-fsync.yaml", "taskmanager-2") else { return };
    assert!(m["errors_injected"].as_u64().unwrap_or(0) > 0, "fsyncs failed: {m}");
    assert!(m["injected_by_op"]["fsync"]["EIO"].as_u64().unwrap_or(0) > 0, "{m}");
    // A failed snapshot fsync declines that checkpoint: no restart.
    assert_eq!(report["restarts"], 0, "a failed checkpoint write must not fail the job");
}

#[test]
fn disk_full_checkpoints() {
    let Some((m, _)) = disk_passes("disk-full-checkpoints.yaml", "taskmanager-2") else { return };
    assert!(m["injected_by_op"]["write"]["ENOSPC"].as_u64().unwrap_or(0) > 0, "the checkpoint disk filled: {m}");
}

/// `cluster.checkpoint_storage`: every node's checkpoint operations pay the modelled
/// latency (measured, not only asked), and restores from it take at least that long.
#[test]
fn remote_checkpoints_kill_tm() {
    let Some(o) = run("remote-checkpoints-kill-tm.yaml") else { return };
    assert_eq!(o.code, 0, "must pass:\n{}", o.stdout);
    let st = &o.report["checkpoint_storage"];
    assert_eq!(st["latency_ms"], 20.0, "{st}");
    assert_eq!(st["bandwidth_bytes_per_s"], 50_000_000, "{st}");
    for node in ["jobmanager-1", "taskmanager-1", "taskmanager-3"] {
        let w = &st["measured"][node]["write"];
        assert!(w["delayed"].as_u64().unwrap_or(0) > 0, "{node} wrote checkpoints through the model: {st}");
        let (asked, took) = (w["asked_ms"].as_f64().unwrap_or(0.0), w["measured_ms"].as_f64().unwrap_or(0.0));
        assert!(asked >= 20.0 && took >= asked, "{node}: asked {asked} ms, measured {took} ms: {st}");
    }
    assert!(o.stdout.contains("checkpoint storage remote-like, 20ms per operation, 50 MB/s"), "{}", o.stdout);
    let restores = o.report["restores"].as_array().cloned().unwrap_or_default();
    assert!(!restores.is_empty(), "the kill restarted the job: {}", o.report);
    for r in &restores {
        assert_eq!(r["source"], "remote", "{r}");
        assert!(r["duration_ms"].as_f64().unwrap_or(0.0) >= 20.0, "a restore from remote-like storage pays its latency: {r}");
    }
}

/// Power loss: taskmanager-2 killed with `lose_unsynced` while its checkpoint writes are
/// slowed, taskmanager-3 restarted with one. Exact output, and each power loss is
/// acknowledged with the daemon's account in the report and one summary line.
#[test]
fn power_loss_tm() {
    let Some(o) = run("power-loss-tm.yaml") else { return };
    assert_eq!(o.code, 0, "chaos run power-loss-tm.yaml must pass:\n{}", o.stdout);
    assert_eq!(o.report["verdict"], "pass");
    let faults = o.report["faults"].as_array().cloned().unwrap_or_default();
    for (i, node) in [(2, "taskmanager-2"), (4, "taskmanager-3")] {
        let f = &faults[i];
        assert!(f["error"].is_null(), "the power loss applied: {f}");
        let m = &f["measured"]["power_loss"][node];
        for k in ["files_rolled_back", "bytes_lost", "entries_undone"] {
            assert!(m[k].is_u64(), "{k} in the account of {node}: {f}");
        }
        assert_eq!(m["conflicts"], 0, "{f}");
    }
    assert!(o.stdout.contains("#3 power loss: taskmanager-2: "), "the summary line:\n{}", o.stdout);
    assert!(o.stdout.contains("#5 power loss: taskmanager-3: "), "the summary line:\n{}", o.stdout);
}

/// Every scenario file has a test in this file (a new file without one fails here).
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

/// The job's input stands for the source system's data, not the node's storage: through a
/// disk-fault passthrough, taskmanagers still read it from the run directory (bound
/// read-only beside the view). Every read of taskmanager-1's /data is slowed by 300 ms for
/// the whole run: read through the view, the input's reads would be delayed (and counted);
/// read beside it, the run passes and the fault delays no read.
#[test]
fn a_file_input_is_read_beside_the_disk_passthrough() {
    if !docker_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::new();
    for i in 0..60_000u32 {
        text.push_str(&format!("w{} w{} w{} w{}\n", i % 977, i % 131, i % 7, i % 4001));
    }
    std::fs::write(dir.path().join("words.txt"), text).expect("input");
    let scenario = dir.path().join("file-input-disk.yaml");
    std::fs::write(
        &scenario,
        "name: file-input-disk\nseed: 5\ncluster: { taskmanagers: 2, slots: 2 }\njob: { parallelism: 2 }\n\
         input: { file: words.txt, rate: 15000 }\n\
         faults:\n  - { at: 0s, action: disk, target: taskmanager-1, delay: 300ms, ops: [read], for: 30s }\n\
         expect: { output: exactly-once, timeout: 60s }\n",
    )
    .expect("scenario");
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .current_dir(root())
        .args(["run", "--report", "json", "--out"])
        .arg(dir.path())
        .arg(&scenario)
        .env("CHAOS_STREAMD_BIN", streamd_bin())
        .output()
        .expect("running chaos");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}\n--- stderr ---\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "the run must pass:\n{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("file-input-disk.json")).expect("report")).expect("json");
    let m = &report["faults"][0]["measured"]["disk"]["taskmanager-1"];
    assert!(m.is_object(), "the fault was measured: {report}");
    assert_eq!(m["delay"]["read"]["delayed"].as_u64().unwrap_or(0), 0, "no read of the input went through the view: {m}");
}
