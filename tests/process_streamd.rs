//! The process runtime with the real streamd: a 1+2 cluster runs a small generated
//! word count to FINISHED; a taskmanager SIGKILL mid-run is recovered. Needs the built
//! binary (`cargo build --release -p streamd`, or CHAOS_STREAMD_BIN), hence `--ignored`:
//! `cargo test --release --test process_streamd -- --ignored`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chaos::client::StreamdClient;
use chaos::runtime::process::ProcessRuntime;
use chaos::runtime::{ClusterDef, NodeDef, Resources, Role, Runtime};
use common::KillOnDrop;
use streamd_contract::api::JobState;

fn streamd_binary() -> PathBuf {
    std::env::var_os("CHAOS_STREAMD_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/x86_64-unknown-linux-gnu/release/streamd")
    })
}

#[tokio::test]
#[ignore = "needs the built streamd binary"]
async fn a_word_count_finishes_and_survives_a_taskmanager_kill() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let _guard = KillOnDrop(run_dir.clone());
    std::fs::write(
        run_dir.join("job.yaml"),
        "parallelism: 4\ncheckpoint_interval: 200ms\n\
         restart: { strategy: fixed-delay, attempts: 10, delay: 100ms }\n\
         input:\n  generate: { lines: 40000, words_per_line: 8, vocabulary: 500, seed: 7 }\n  rate: 10000\n",
    )
    .unwrap();
    let mut nodes = vec![NodeDef { name: "jobmanager-1".into(), role: Role::Jobmanager, slots: 0, resources: Resources::default() }];
    for i in 1..=2 {
        nodes.push(NodeDef { name: format!("taskmanager-{i}"), role: Role::Taskmanager, slots: 2, resources: Resources::default() });
    }
    let def = ClusterDef {
        id: "streamd-smoke".into(),
        run_dir: run_dir.clone(),
        nodes,
        env: vec![("RUST_LOG".into(), "info".into())],
    };
    let mut rt = ProcessRuntime::with_binary(streamd_binary());
    let t = Instant::now();
    rt.up(&def).await.unwrap();
    let client = StreamdClient::new(rt.rest_url("jobmanager-1").await.unwrap()).unwrap();
    let o = client.wait_ready(2, Duration::from_secs(10)).await.unwrap();
    eprintln!("ready in {:?}: {o:?}", t.elapsed());

    // Let it make progress, then kill a taskmanager and bring it back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.job(&o.job_id).await.map(|j| j.checkpoints_completed).unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "no checkpoints completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rt.kill("taskmanager-2", chaos::signal::Signal::KILL).await.unwrap();
    rt.start("taskmanager-2").await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = client.job(&o.job_id).await;
        if let Ok(j) = &job {
            if j.state.is_terminal() {
                break job.unwrap();
            }
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(run_dir.join("logs/jobmanager-1.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("not finished: {job:?}\njobmanager log (last lines, newest first):\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("finished in {:?}: {} restarts, {} checkpoints", t.elapsed(), job.restarts, job.checkpoints_completed);
    assert_eq!(job.state, JobState::Finished, "{job:?}");
    assert!(job.restarts >= 1, "the kill must have caused a restart: {job:?}");
    rt.down().await.unwrap();
}
