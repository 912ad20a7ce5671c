//! The `chaos` binary end to end: usage errors exit 2, a missing cluster is explained, and
//! the interactive commands drive a live process-runtime cluster of stand-ins.
//!
//! Every invocation runs in a temporary directory with `CARGO_TARGET_DIR` pointing into it
//! (so `target/chaos/current` is the test's own) and `DOCKER_HOST` pointing nowhere (so
//! clusters other people run on this machine's Docker are never seen, let alone touched).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chaos::current::CurrentCluster;
use chaos::runtime::RuntimeKind;
use chaos::runtime::process::ProcessRuntime;
use chaos::runtime::{ClusterDef, NodeDef, NodeState, Resources, Role, Runtime};
use common::{lives, standin, wait_until, KillOnDrop};

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().unwrap() }
    }

    fn target(&self) -> PathBuf {
        self.dir.path().join("target")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chaos"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("CARGO_TARGET_DIR", self.target())
            .env("DOCKER_HOST", format!("unix://{}/no-docker.sock", self.dir.path().display()))
            .env_remove("RUST_LOG")
            .env_remove("CHAOS_RUNTIME");
        cmd
    }

    /// Runs `chaos args…` with `stdin`, killing it if it outlives 20 s.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that never reads stdin may already be gone: EPIPE is fine.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("chaos {args:?} did not finish within 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait_with_output().unwrap()
    }

    /// A process cluster of stand-ins in `target/chaos/runs/<id>`, optionally recorded as
    /// the current cluster.
    fn up(&self, id: &str, current: bool) -> (PathBuf, KillOnDrop) {
        let run_dir = self.target().join("chaos/runs").join(id);
        let guard = KillOnDrop(run_dir.clone());
        let mut nodes = vec![NodeDef {
            name: "jobmanager-1".into(),
            role: Role::Jobmanager,
            slots: 0,
            resources: Resources::default(),
        }];
        for i in 1..=2 {
            nodes.push(NodeDef {
                name: format!("taskmanager-{i}"),
                role: Role::Taskmanager,
                slots: 2,
                resources: Resources::default(),
            });
        }
        let def = ClusterDef { id: id.into(), run_dir: run_dir.clone(), nodes, env: vec![] };
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio.block_on(ProcessRuntime::with_binary(standin()).up(&def)).unwrap();
        for n in ["jobmanager-1", "taskmanager-1", "taskmanager-2"] {
            assert!(wait_until(Duration::from_secs(5), || lives(&run_dir, n) == 1), "{n} did not start");
        }
        if current {
            let cur = CurrentCluster { cluster_id: id.into(), runtime: RuntimeKind::Process, run_dir: run_dir.clone() };
            cur.save_to(&self.target().join("chaos/current")).unwrap();
        }
        (run_dir, guard)
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn state(run_dir: &Path, node: &str) -> NodeState {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rt = ProcessRuntime::attach(run_dir).unwrap();
    let nodes = tokio.block_on(rt.nodes()).unwrap();
    nodes.into_iter().find(|n| n.name == node).unwrap().state
}

#[test]
fn bad_usage_exits_2() {
    let sb = Sandbox::new();
    for args in [
        &[][..],
        &["frobnicate"],
        &["kill"],
        &["stop", "tm2", "--grace", "10"],
        &["run"],
        &["run", "s.yaml", "--report", "pdf"],
        &["partition", "tm1"],
        &["up", "s.yaml", "--taskmanagers", "2"],
        &["netem", "tm1"],
        &["netem", "tm1", "--loss", "5%", "--distribution", "pareto"],
    ] {
        let o = sb.run(args, "");
        assert_eq!(code(&o), 2, "chaos {args:?}: {}", stderr(&o));
    }
    assert_eq!(code(&sb.run(&["--help"], "")), 0);
    assert_eq!(code(&sb.run(&["kill", "--help"], "")), 0);
}

#[test]
fn a_command_without_a_live_cluster_says_how_to_start_one() {
    let sb = Sandbox::new();
    let o = sb.run(&["kill", "tm9"], "");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no live cluster") && err.contains("chaos up"), "{err}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn interactive_commands_drive_a_process_cluster() {
    let sb = Sandbox::new();
    let (run_dir, _guard) = sb.up("cli-test", true);

    let o = sb.run(&["kill", "tm1"], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("killed taskmanager-1 with SIGKILL in "), "{}", stdout(&o));
    assert!(wait_until(Duration::from_secs(5), || state(&run_dir, "taskmanager-1") == NodeState::Exited));

    let o = sb.run(&["kill", "tm9"], "");
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no node `tm9` (taskmanager-9) in cluster cli-test")
            && stderr(&o).contains("jobmanager-1, taskmanager-1, taskmanager-2"),
        "{}",
        stderr(&o)
    );
    assert_eq!(code(&sb.run(&["kill", "tm2", "--signal", "SIGNOPE"], "")), 2);

    let o = sb.run(&["start", "taskmanager-1"], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(wait_until(Duration::from_secs(5), || lives(&run_dir, "taskmanager-1") == 2));

    let o = sb.run(&["pause", "tm2", "--for", "200ms"], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("paused taskmanager-2") && out.contains("unpaused taskmanager-2"), "{out}");
    assert_eq!(state(&run_dir, "taskmanager-2"), NodeState::Running);

    let o = sb.run(&["netem", "tm1", "--delay", "10ms"], "");
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("need the docker runtime"), "{}", stderr(&o));

    // status: nodes from the runtime; the stand-in serves no REST, which status reports.
    let o = sb.run(&["status"], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("cluster cli-test (process runtime)"), "{out}");
    assert!(out.lines().any(|l| l.contains("taskmanager-2") && l.contains("running")), "{out}");
    assert!(out.contains("job: unknown"), "{out}");

    // feed appends whole lines to the follow-mode input.
    std::fs::create_dir_all(run_dir.join("input")).unwrap();
    std::fs::write(run_dir.join("input/input.txt"), "").unwrap();
    let o = sb.run(&["feed"], "to be or\nnot to be");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(run_dir.join("input/input.txt")).unwrap(), "to be or\nnot to be\n");

    // counts: the last committed value per word, highest first.
    let out_dir = run_dir.join("output/wordcount/0");
    std::fs::create_dir_all(&out_dir).unwrap();
    let commit = |epoch: u64, recs: &[(&str, u64)]| {
        streamd_contract::output::write_transaction(
            &out_dir.join(streamd_contract::output::committed_name(epoch, 0)),
            recs.iter().map(|(w, c)| (*w, *c)),
        )
        .unwrap()
    };
    commit(1, &[("to", 1), ("be", 1), ("or", 1)]);
    commit(2, &[("to", 2), ("be", 2), ("not", 1)]);
    let o = sb.run(&["counts"], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "be\t2\nto\t2\nnot\t1\nor\t1\n");
    assert_eq!(stdout(&sb.run(&["counts", "--top", "1"], "")), "be\t2\n");

    let o = sb.run(&["down"], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for n in ["jobmanager-1", "taskmanager-1", "taskmanager-2"] {
        assert!(matches!(state(&run_dir, n), NodeState::Exited | NodeState::Missing), "{n}");
    }
    assert!(!sb.target().join("chaos/current").exists(), "down clears target/chaos/current");
}

#[test]
fn ctrl_c_during_pause_for_unpauses_first() {
    let sb = Sandbox::new();
    let (run_dir, _guard) = sb.up("ctrl-c", true);
    let mut child = sb
        .command(&["pause", "tm1", "--for", "30s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("paused taskmanager-1"), "{line}");
    assert_eq!(state(&run_dir, "taskmanager-1"), NodeState::Paused);

    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("chaos pause did not end after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("unpaused taskmanager-1") && rest.contains("interrupted"), "{rest}");
    assert_eq!(state(&run_dir, "taskmanager-1"), NodeState::Running);
    assert_eq!(code(&sb.run(&["down"], "")), 0);
}

#[test]
fn down_without_a_current_cluster_kills_leftover_process_nodes() {
    let sb = Sandbox::new();
    let (run_dir, _guard) = sb.up("leftover", false);
    let o = sb.run(&["down"], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("killed taskmanager-2 of process cluster leftover"), "{}", stdout(&o));
    for n in ["jobmanager-1", "taskmanager-1", "taskmanager-2"] {
        assert!(matches!(state(&run_dir, n), NodeState::Exited | NodeState::Missing), "{n}");
    }
    // No Docker daemon is not a failure of `down`: it says so and goes on.
    assert!(stderr(&o).contains("docker: nothing removed"), "{}", stderr(&o));
}

#[test]
fn lint_prints_timelines_and_rejects_invalid_scenarios_with_their_position() {
    let sb = Sandbox::new();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/kill-tm2.yaml");
    let good = good.to_str().unwrap();
    let o = sb.run(&["lint", good], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("scenario kill-tm2"), "{}", stdout(&o));

    let bad = sb.dir.path().join("bad.yaml");
    std::fs::write(&bad, "job:\n  parallelism: 2\n  bogus: 1\ninput:\n  generate: { lines: 10 }\n").unwrap();
    let o = sb.run(&["lint", good, bad.to_str().unwrap()], "");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stdout(&o).contains("scenario kill-tm2"), "the valid file is still shown");
    assert!(stderr(&o).contains(&format!("{}:3:3:", bad.display())), "{}", stderr(&o));
}

#[test]
fn doctor_without_docker_exits_3_and_says_how_to_fix_it() {
    let sb = Sandbox::new();
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let o = sb
        .command(&["doctor", "--scenarios", scenarios.to_str().unwrap()])
        .env("CHAOS_ETCD_BIN", sb.dir.path().join("no-etcd"))
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(code(&o), 3, "{out}\n{}", stderr(&o));
    assert!(out.contains("MISS  Docker Engine"), "{out}");
    assert!(out.contains("systemctl start docker"), "{out}");
    // Every missing piece has its fix and the shipped scenarios it blocks.
    assert!(out.contains("MISS  etcd"), "{out}");
    assert!(out.contains("apt-get install etcd-server"), "{out}");
    assert!(out.contains("kill-jm-leader"), "{out}");
    assert!(out.contains("cannot run here"), "{out}");
}

#[test]
fn run_names_every_missing_need_before_starting_anything() {
    let sb = Sandbox::new();
    let ha = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/kill-jm-leader.yaml");
    let o = sb
        .command(&["run", ha.to_str().unwrap()])
        .env("CHAOS_ETCD_BIN", sb.dir.path().join("no-etcd"))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 3, "{err}");
    assert!(err.contains("nothing was started"), "{err}");
    assert!(err.contains("Docker Engine") && err.contains("etcd"), "both needs are named: {err}");
    assert!(err.contains("apt-get install etcd-server"), "{err}");
    assert!(!sb.target().join("chaos/runs").exists(), "no run directory was made");

    // The process runtime needs no Docker, but HA still needs etcd.
    let o = sb
        .command(&["run", "--runtime", "process", ha.to_str().unwrap()])
        .env("CHAOS_ETCD_BIN", sb.dir.path().join("no-etcd"))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 3, "{err}");
    assert!(err.contains("etcd") && !err.contains("Docker Engine"), "{err}");
}
