//! Ctrl-C during `chaos run`: faults are undone (a paused node is unpaused first) and the
//! cluster is removed, and chaos exits 130. Process runtime, real signals.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn ctrl_c_undoes_faults_and_removes_the_cluster() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let name = format!("interrupt-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "name: {name}\ncluster: {{ taskmanagers: 2, slots: 2 }}\njob: {{ parallelism: 2 }}\n\
             input: {{ generate: {{ lines: 1000000 }}, rate: 10000 }}\n\
             faults:\n  - {{ at: 1s, action: pause, target: taskmanager-1, for: 60s }}\n\
             expect: {{ timeout: 120s, recovery_within: 100s }}\n"
        ),
    )
    .unwrap();
    let bin = chaos::images::build_streamd_binary().expect("streamd");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .current_dir(&root)
        .args(["run", "--runtime", "process"])
        .arg(&file)
        .env("CHAOS_STREAMD_BIN", &bin)
        .spawn()
        .expect("chaos starts");

    // Wait until taskmanager-1 is frozen (state T), reading the run's cluster.json.
    let runs = root.join("target/chaos/runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (run_dir, pids) = loop {
        assert!(Instant::now() < deadline, "the pause was never applied");
        std::thread::sleep(Duration::from_millis(100));
        let Some(d) = std::fs::read_dir(&runs)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}-"))))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(d.join("cluster.json")) else { continue };
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let pids: Vec<(String, u32)> = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| Some((n["name"].as_str()?.to_string(), n["pid"].as_u64()? as u32)))
            .collect();
        let tm1 = pids.iter().find(|(n, _)| n == "taskmanager-1").map(|(_, p)| *p);
        if tm1.and_then(proc_state) == Some('T') {
            break (d, pids);
        }
    };
    assert!(pids.len() >= 3, "{pids:?}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("chaos exits");
    assert_eq!(status.code(), Some(130), "interrupted run exits 130");
    for (node, pid) in &pids {
        let st = proc_state(*pid);
        assert!(st.is_none() || st == Some('Z'), "{node} (pid {pid}) still alive in state {st:?} after Ctrl-C");
    }
    let _ = std::fs::remove_dir_all(run_dir);
}
