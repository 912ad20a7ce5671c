//! The process runtime against real processes: a stand-in for streamd (tests/common) that
//! binds its ports and sleeps, so the lifecycle is tested without the engine.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chaos::runtime::process::{ProcessRuntime, STATE_FILE};
use chaos::runtime::{ClusterDef, NodeDef, NodeState, Resources, Role, Runtime, RuntimeError};
use common::{lives, standin, KillOnDrop};

fn def(run_dir: &Path, taskmanagers: u32, env: Vec<(String, String)>) -> ClusterDef {
    let mut nodes = vec![NodeDef {
        name: "jobmanager-1".into(),
        role: Role::Jobmanager,
        slots: 0,
        resources: Resources::default(),
    }];
    for i in 1..=taskmanagers {
        nodes.push(NodeDef {
            name: format!("taskmanager-{i}"),
            role: Role::Taskmanager,
            slots: 2,
            resources: Resources::default(),
        });
    }
    ClusterDef { id: "test-cluster".into(), run_dir: run_dir.to_path_buf(), nodes, env }
}

async fn state_of(rt: &impl Runtime, node: &str) -> NodeState {
    let nodes = rt.nodes().await.unwrap();
    nodes.iter().find(|n| n.name == node).unwrap_or_else(|| panic!("no {node} in {nodes:?}")).state
}

/// Polls until `node` is in `want`, for up to 5 s.
async fn wait_state(rt: &impl Runtime, node: &str, want: NodeState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = state_of(rt, node).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{node} is {got:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_lives(run_dir: &Path, node: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while lives(run_dir, node) < n {
        assert!(Instant::now() < deadline, "{node} did not come up {n} time(s)");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pid_of(rt: &ProcessRuntime, node: &str) -> u32 {
    rt.node_records().iter().find(|n| n.name == node).and_then(|n| n.pid).expect("a pid")
}

#[tokio::test]
async fn lifecycle_kill_start_pause_unpause_down() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let _guard = KillOnDrop(run_dir.clone());
    let mut rt = ProcessRuntime::with_binary(standin());
    rt.up(&def(&run_dir, 2, vec![])).await.unwrap();

    // up spawns every node, each on its own ports, output in its log.
    assert!(run_dir.join(STATE_FILE).is_file());
    for node in ["jobmanager-1", "taskmanager-1", "taskmanager-2"] {
        wait_lives(&run_dir, node, 1).await;
        assert_eq!(state_of(&rt, node).await, NodeState::Running);
    }
    let records = rt.node_records();
    let mut ports: Vec<u16> =
        records.iter().flat_map(|r| [r.ports.rpc, r.ports.rest, r.ports.data]).flatten().collect();
    assert_eq!(ports.len(), 4, "{records:?}");
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4, "ports must be distinct: {records:?}");
    let jm = &records[0];
    assert_eq!(rt.rest_url("jobmanager-1").await.unwrap(), format!("http://127.0.0.1:{}", jm.ports.rest.unwrap()));
    assert!(matches!(rt.rest_url("taskmanager-1").await, Err(RuntimeError::Usage(_))));
    let tm1 = records.iter().find(|r| r.name == "taskmanager-1").unwrap();
    assert!(tm1.args.iter().any(|a| *a == format!("127.0.0.1:{}", jm.ports.rpc.unwrap())), "{:?}", tm1.args);

    // kill -> exited; start -> the same ports, bound again by a new process.
    let first_pid = pid_of(&rt, "taskmanager-1");
    let t = Instant::now();
    rt.kill("taskmanager-1", chaos::signal::Signal::KILL).await.unwrap();
    // A SIGKILL returns once the node is gone: no polling needed.
    assert_eq!(state_of(&rt, "taskmanager-1").await, NodeState::Exited);
    eprintln!("kill -> exited in {:?}", t.elapsed());
    assert!(matches!(rt.kill("taskmanager-1", chaos::signal::Signal::KILL).await, Err(RuntimeError::Usage(m)) if m.contains("not running")));
    rt.start("taskmanager-1").await.unwrap();
    wait_lives(&run_dir, "taskmanager-1", 2).await;
    let restarted = rt.node_records().into_iter().find(|r| r.name == "taskmanager-1").unwrap();
    assert_eq!(restarted.ports, tm1.ports);
    assert_eq!(restarted.args, tm1.args);
    assert_ne!(restarted.pid, Some(first_pid));
    // The stand-in exits 3 when it cannot bind: still running means the ports were free.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state_of(&rt, "taskmanager-1").await, NodeState::Running);
    let log = std::fs::read_to_string(run_dir.join("logs/taskmanager-1.log")).unwrap();
    assert_eq!(log.matches("==== chaos: starting taskmanager-1").count(), 2, "log keeps both lives:\n{log}");

    // pause -> T state; unpause -> running again.
    rt.pause("taskmanager-2").await.unwrap();
    assert_eq!(state_of(&rt, "taskmanager-2").await, NodeState::Paused);
    let pid2 = pid_of(&rt, "taskmanager-2");
    let stat = std::fs::read_to_string(format!("/proc/{pid2}/stat")).unwrap();
    assert!(stat[stat.rfind(')').unwrap() + 1..].trim_start().starts_with('T'), "{stat}");
    rt.unpause("taskmanager-2").await.unwrap();
    wait_state(&rt, "taskmanager-2", NodeState::Running).await;

    // A signal other than SIGKILL.
    rt.kill("taskmanager-2", chaos::signal::Signal::TERM).await.unwrap();
    wait_state(&rt, "taskmanager-2", NodeState::Exited).await;
    assert!(matches!(rt.kill("taskmanager-9", chaos::signal::Signal::KILL).await, Err(RuntimeError::Usage(m)) if m.contains("taskmanager-9")));

    // down kills everything, even a paused node, and is idempotent.
    rt.pause("jobmanager-1").await.unwrap();
    let pids: Vec<u32> = rt.node_records().iter().filter_map(|r| r.pid).collect();
    rt.down().await.unwrap();
    for n in rt.nodes().await.unwrap() {
        assert!(matches!(n.state, NodeState::Missing | NodeState::Exited), "{n:?}");
    }
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        assert!(stat.is_err(), "pid {pid} survived down (reaped? no zombie may stay): {stat:?}");
    }
    rt.down().await.unwrap();
}

#[tokio::test]
async fn stop_sends_sigterm_and_escalates_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let _guard = KillOnDrop(run_dir.clone());
    let env = vec![("STANDIN_IGNORE_TERM".to_string(), "taskmanager-1".to_string())];
    let mut rt = ProcessRuntime::with_binary(standin());
    rt.up(&def(&run_dir, 2, env)).await.unwrap();
    wait_lives(&run_dir, "taskmanager-1", 1).await;
    wait_lives(&run_dir, "taskmanager-2", 1).await;

    // A node that honours SIGTERM is gone well before the grace.
    let t = Instant::now();
    rt.stop("taskmanager-2", Duration::from_secs(5)).await.unwrap();
    let polite = t.elapsed();
    assert_eq!(state_of(&rt, "taskmanager-2").await, NodeState::Exited);
    assert!(polite < Duration::from_secs(2), "SIGTERM stop took {polite:?}");
    let log = std::fs::read_to_string(run_dir.join("logs/taskmanager-2.log")).unwrap();
    assert!(log.contains("SIGTERM, exiting 0"), "{log}");

    // One that ignores it is SIGKILLed once the grace has passed.
    let grace = Duration::from_millis(600);
    let t = Instant::now();
    rt.stop("taskmanager-1", grace).await.unwrap();
    let firm = t.elapsed();
    assert_eq!(state_of(&rt, "taskmanager-1").await, NodeState::Exited);
    assert!(firm >= grace && firm < grace + Duration::from_secs(2), "stop took {firm:?} with a {grace:?} grace");

    // Stopping a stopped node is a no-op; restart brings it back.
    rt.stop("taskmanager-1", grace).await.unwrap();
    rt.restart("taskmanager-2", Duration::from_secs(1)).await.unwrap();
    wait_lives(&run_dir, "taskmanager-2", 2).await;
    assert_eq!(state_of(&rt, "taskmanager-2").await, NodeState::Running);
    rt.down().await.unwrap();
}

#[tokio::test]
async fn a_second_runtime_attaches_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let _guard = KillOnDrop(run_dir.clone());
    let mut owner = ProcessRuntime::with_binary(standin());
    owner.up(&def(&run_dir, 2, vec![])).await.unwrap();
    wait_lives(&run_dir, "taskmanager-1", 1).await;

    let mut attached = ProcessRuntime::attach(&run_dir).unwrap();
    assert_eq!(attached.cluster_id().as_deref(), Some("test-cluster"));
    for n in attached.nodes().await.unwrap() {
        assert_eq!(n.state, NodeState::Running, "{n:?}");
    }
    // A kill through one object is seen by the other (zombie or reaped: exited either way).
    attached.kill("taskmanager-1", chaos::signal::Signal::KILL).await.unwrap();
    wait_state(&owner, "taskmanager-1", NodeState::Exited).await;
    // A start through the attached object records the new pid; the owner picks it up.
    attached.start("taskmanager-1").await.unwrap();
    wait_lives(&run_dir, "taskmanager-1", 2).await;
    assert_eq!(pid_of(&owner, "taskmanager-1"), pid_of(&attached, "taskmanager-1"));
    owner.pause("taskmanager-1").await.unwrap();
    assert_eq!(state_of(&attached, "taskmanager-1").await, NodeState::Paused);

    attached.down().await.unwrap();
    for n in owner.nodes().await.unwrap() {
        assert!(matches!(n.state, NodeState::Missing | NodeState::Exited), "{n:?}");
    }
    // A runtime that still thinks it runs a cluster may bring up a new one once all died.
    owner.up(&def(&run_dir, 1, vec![])).await.unwrap();
    assert!(
        matches!(owner.up(&def(&run_dir, 1, vec![])).await, Err(RuntimeError::Usage(m)) if m.contains("already")),
        "a second up over live nodes must be refused"
    );
    owner.down().await.unwrap();
}

#[tokio::test]
async fn a_reused_pid_is_never_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    // A process that is not ours sits on the pid the state file records.
    let mut bystander = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let state = serde_json::json!({
        "id": "stale",
        "run_dir": run_dir,
        "streamd": standin(),
        "env": [],
        "nodes": [{ "name": "taskmanager-1", "role": "taskmanager", "args": ["taskmanager", "--id", "taskmanager-1"],
                    "ports": { "data": 1 }, "pid": bystander.id() }]
    });
    std::fs::write(run_dir.join(STATE_FILE), state.to_string()).unwrap();
    let mut rt = ProcessRuntime::attach(&run_dir).unwrap();
    assert_eq!(state_of(&rt, "taskmanager-1").await, NodeState::Exited);
    assert!(matches!(rt.kill("taskmanager-1", chaos::signal::Signal::KILL).await, Err(RuntimeError::Usage(_))));
    rt.pause("taskmanager-1").await.unwrap_err();
    rt.down().await.unwrap();
    assert!(bystander.try_wait().unwrap().is_none(), "the bystander was signalled");
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[tokio::test]
async fn a_missing_binary_is_an_infrastructure_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut rt = ProcessRuntime::with_binary(dir.path().join("no-such-streamd"));
    let err = rt.up(&def(&dir.path().join("run"), 1, vec![])).await.unwrap_err();
    assert!(matches!(&err, RuntimeError::Infrastructure(m) if m.contains("no-such-streamd")), "{err}");
}

#[tokio::test]
async fn high_availability_without_etcd_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut d = def(&run_dir, 1, vec![]);
    d.nodes.push(NodeDef { name: "jobmanager-2".into(), role: Role::Jobmanager, slots: 0, resources: Resources::default() });
    let mut rt = ProcessRuntime::with_binary(standin());
    let err = rt.up(&d).await.unwrap_err();
    assert!(matches!(&err, RuntimeError::Usage(m) if m.contains("etcd")), "{err}");
    assert!(!run_dir.join(STATE_FILE).exists(), "nothing may start");
}
