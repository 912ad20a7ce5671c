//! The docker runtime against a real daemon: offline image build, cluster layout (names,
//! labels, aliases, mounts, cgroup limits), every lifecycle fault observed through
//! `inspect`, DNS between nodes, the label fence, and cleanup.
//!
//! The nodes run a tiny stand-in for streamd (compiled here with rustc, static), so this
//! tests the runtime, not the engine: it records its arguments in `/data`, listens on the
//! node's ports, answers HTTP on the REST port, resolves `taskmanager-1` from the
//! jobmanager, and exits on SIGTERM unless told to ignore it.
//!
//! Needs Docker. Without a daemon: fails when `CI=true`, otherwise says so loudly and passes.
//! Run with `--nocapture` to see the measured latencies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptions,
};
use bollard::Docker;
use chaos::images;
use chaos::runtime::docker::{self, labels, DockerRuntime};
use chaos::runtime::{ClusterDef, NodeDef, NodeState, Resources, Role, Runtime, RuntimeError};

/// The stand-in for streamd. Std only, so plain rustc builds it.
const FAKE_STREAMD: &str = r#"
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn _exit(code: i32) -> !;
}
extern "C" fn on_term(_: i32) {
    unsafe { _exit(0) }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| {
        args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned().unwrap_or_default()
    };
    let (role, id, data) = (args.first().cloned().unwrap_or_default(), flag("--id"), flag("--data-dir"));
    std::fs::write(format!("{data}/{id}.args"), args.join(" ")).unwrap();
    // As PID 1, a signal without a handler is ignored: that is how "ignore SIGTERM" is had.
    let ignoring = std::env::var("FAKE_IGNORE_TERM").unwrap_or_default();
    if !ignoring.split(',').any(|n| n == id) {
        unsafe { signal(15, on_term as *const () as usize) };
    }
    let bind = if role == "jobmanager" { flag("--rest-bind") } else { flag("--data-bind") };
    let listener = TcpListener::bind(&bind).unwrap();
    if role == "jobmanager" {
        let data = data.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                if let Ok(s) = TcpStream::connect("taskmanager-1:6121") {
                    let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    std::fs::write(format!("{data}/dns.txt"), format!("ok {peer}")).unwrap();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            std::fs::write(format!("{data}/dns.txt"), "failed").unwrap();
        });
    }
    for stream in listener.incoming() {
        if let Ok(mut s) = stream {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", id.len(), id);
        }
    }
}
"#;

/// The daemon, or `None` (after a loud message) when there is none outside CI.
async fn docker_or_skip() -> Option<Docker> {
    match docker::connect_docker().await {
        Ok(d) => Some(d),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but Docker is unreachable: {e}")
        }
        Err(e) => {
            // Straight to stderr: the test harness would swallow eprintln! of a passing test.
            let msg = format!("\n!!!!!!!! SKIPPING the docker runtime tests: {e} !!!!!!!!\n\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
            None
        }
    }
}

fn compile_fake_streamd(dir: &Path) -> PathBuf {
    let src = dir.join("fake_streamd.rs");
    let out = dir.join("streamd");
    // A per-process constant makes the binary, hence the image tag, this run's own: a
    // concurrent run of this test cannot remove the image from under us.
    let unique = format!(
        "{FAKE_STREAMD}\n#[used]\nstatic RUN: [u8; 8] = {:?};\n",
        u64::from(std::process::id()).to_le_bytes()
    );
    std::fs::write(&src, unique).unwrap();
    let status = std::process::Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "target-feature=+crt-static",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running rustc");
    assert!(status.success(), "compiling the fake streamd failed");
    out
}

/// Removes the test's cluster and image whatever happens to the assertions: Drop runs
/// during a panic's unwinding too. Uses its own runtime on its own thread, since the
/// test's runtime cannot be blocked on from inside.
struct Cleanup {
    cluster: String,
    image: Option<String>,
    extra_containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let cluster = self.cluster.clone();
        let image = self.image.clone();
        let extra = std::mem::take(&mut self.extra_containers);
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                let docker = docker::connect_docker().await.expect("cleanup: docker");
                for name in extra {
                    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
                    let _ = docker.remove_container(&name, Some(opts)).await;
                }
                let mut runtime = DockerRuntime::with_docker(docker.clone(), Some(cluster));
                if let Err(e) = runtime.down().await {
                    eprintln!("cleanup: down failed: {e}");
                }
                if let Some(image) = image {
                    let _ = docker
                        .remove_image(&image, None::<RemoveImageOptions>, None)
                        .await;
                }
            })
        })
        .join();
        if joined.is_err() {
            eprintln!("cleanup thread panicked");
        }
    }
}

async fn inspect(docker: &Docker, name: &str) -> ContainerInspectResponse {
    docker.inspect_container(name, None).await.expect("inspect")
}

async fn status(docker: &Docker, name: &str) -> Option<ContainerStateStatusEnum> {
    inspect(docker, name).await.state.and_then(|s| s.status)
}

/// Polls `inspect` until the container reaches `want`; returns how long it took.
async fn wait_for(docker: &Docker, name: &str, want: ContainerStateStatusEnum) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        if status(docker, name).await == Some(want) {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "{name} did not become {want} within 15s (is {:?})",
        status(docker, name).await
    );
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

fn node(name: &str, role: Role, resources: Resources) -> NodeDef {
    NodeDef {
        name: name.into(),
        role,
        slots: 2,
        resources,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runtime_end_to_end() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let binary = compile_fake_streamd(work.path());
    let cluster = format!("chaostest-{}", std::process::id());
    let mut cleanup = Cleanup {
        cluster: cluster.clone(),
        image: None,
        extra_containers: Vec::new(),
    };

    // --- image: built offline, content-addressed, reused when unchanged ---
    let expected_tag = images::image_tag(
        images::STREAMD_REPO,
        &images::streamd_context(std::fs::read(&binary).unwrap()),
    )
    .unwrap();
    cleanup.image = Some(expected_tag.clone());
    let _ = docker
        .remove_image(&expected_tag, None::<RemoveImageOptions>, None)
        .await; // measure a real build
    let t0 = Instant::now();
    let tag = images::ensure_streamd_image(&docker, &binary)
        .await
        .unwrap();
    let build_time = t0.elapsed();
    assert_eq!(tag, expected_tag);
    let t0 = Instant::now();
    assert_eq!(
        images::ensure_streamd_image(&docker, &binary)
            .await
            .unwrap(),
        tag
    );
    let cached_time = t0.elapsed();
    let image = docker.inspect_image(&tag).await.unwrap();
    let config = image.config.unwrap();
    assert_eq!(config.labels.unwrap()[labels::IMAGE], "streamd");
    assert_eq!(config.entrypoint.unwrap(), vec!["/streamd".to_string()]);
    // Rebuilt only when the binary changed: the second call reused the image.
    assert!(
        cached_time < build_time,
        "reuse {cached_time:?} vs build {build_time:?}"
    );
    // A dynamically linked binary is refused before any build.
    let err = images::ensure_streamd_image(&docker, Path::new("/bin/sh"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dynamically linked"), "{err}");

    // --- up: 1 jobmanager + 3 taskmanagers ---
    let run_dir = work.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let capped = Resources {
        cpus: Some(0.5),
        memory_bytes: Some(64 << 20),
    };
    let def = ClusterDef {
        id: cluster.clone(),
        run_dir: run_dir.clone(),
        nodes: vec![
            node("jobmanager-1", Role::Jobmanager, Resources::default()),
            node("taskmanager-1", Role::Taskmanager, capped),
            node("taskmanager-2", Role::Taskmanager, Resources::default()),
            node("taskmanager-3", Role::Taskmanager, Resources::default()),
        ],
        env: vec![
            ("RUST_LOG".into(), "info".into()),
            ("FAKE_IGNORE_TERM".into(), "taskmanager-2".into()),
        ],
    };
    let mut rt = DockerRuntime::with_docker(docker.clone(), None).with_image(&tag);
    let t0 = Instant::now();
    rt.up(&def).await.unwrap();
    let up_returned = t0.elapsed();
    let name = |n: &str| format!("{cluster}-{n}");
    for n in &def.nodes {
        wait_for(&docker, &name(&n.name), ContainerStateStatusEnum::RUNNING).await;
    }
    let all_running = t0.elapsed();
    // A second up of the same cluster is refused, not merged.
    let again = DockerRuntime::with_docker(docker.clone(), None)
        .with_image(&tag)
        .up(&def)
        .await;
    assert!(matches!(again, Err(RuntimeError::Usage(_))), "{again:?}");

    // --- layout: names, labels, hostname, alias, mount, limits, command ---
    let network = format!("{cluster}-internal");
    let canonical_run_dir = std::fs::canonicalize(&run_dir).unwrap();
    for n in &def.nodes {
        let info = inspect(&docker, &name(&n.name)).await;
        let config = info.config.unwrap();
        let l = config.labels.unwrap();
        assert_eq!(l[labels::CLUSTER], cluster);
        assert_eq!(l[labels::ROLE], n.role.as_str());
        assert_eq!(l[labels::NODE], n.name);
        assert_eq!(Path::new(&l[labels::RUN_DIR]), canonical_run_dir);
        assert_eq!(config.hostname.as_deref(), Some(n.name.as_str()));
        let nets = info.network_settings.unwrap().networks.unwrap();
        let aliases = nets[&network].aliases.clone().unwrap_or_default();
        assert!(aliases.contains(&n.name), "{} aliases {aliases:?}", n.name);
        let hc = info.host_config.unwrap();
        assert_eq!(
            hc.binds.unwrap(),
            vec![format!("{}:/data", canonical_run_dir.display())]
        );
        if n.name == "taskmanager-1" {
            assert_eq!(hc.nano_cpus, Some(500_000_000));
            assert_eq!(hc.memory, Some(64 << 20));
            assert_eq!(hc.memory_swap, Some(64 << 20));
        } else {
            assert!(matches!(hc.nano_cpus, None | Some(0)), "{:?}", hc.nano_cpus);
            assert!(matches!(hc.memory, None | Some(0)), "{:?}", hc.memory);
        }
    }
    let args = wait_for_file(&run_dir.join("taskmanager-1.args")).await;
    assert_eq!(
        args,
        "taskmanager --jobmanager jobmanager-1:6123 --slots 2 --data-dir /data --id \
         taskmanager-1 --data-bind 0.0.0.0:6121 --advertise taskmanager-1:6121 --local-dir /local"
    );
    let nets = docker.inspect_network(&network, None).await.unwrap();
    let nl = nets.labels.unwrap();
    assert_eq!(
        (nl[labels::CLUSTER].as_str(), nl[labels::ROLE].as_str()),
        (cluster.as_str(), "network")
    );

    // --- nodes(), discover() ---
    let nodes = rt.nodes().await.unwrap();
    let seen: Vec<(&str, NodeState)> = nodes.iter().map(|n| (n.name.as_str(), n.state)).collect();
    assert_eq!(
        seen,
        [
            ("jobmanager-1", NodeState::Running),
            ("taskmanager-1", NodeState::Running),
            ("taskmanager-2", NodeState::Running),
            ("taskmanager-3", NodeState::Running)
        ]
    );
    let live = docker::discover(&docker).await.unwrap();
    let mine = live.iter().find(|c| c.id == cluster).expect("discovered");
    assert_eq!(mine.run_dir, canonical_run_dir);
    assert_eq!(mine.nodes.len(), 4);
    let bound = DockerRuntime::connect(Some(&cluster)).await.unwrap();
    assert_eq!(bound.nodes().await.unwrap().len(), 4);

    // --- REST from the host, DNS between nodes ---
    let url = rt.rest_url("jobmanager-1").await.unwrap();
    assert!(
        url.starts_with("http://") && url.ends_with(":8081"),
        "{url}"
    );
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok((_, b)) = chaos::client::JsonHttp::new(url.clone()).unwrap().get("/").await {
            body = String::from_utf8_lossy(&b).into_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body, "jobmanager-1");
    assert!(matches!(
        rt.rest_url("taskmanager-1").await,
        Err(RuntimeError::Usage(_))
    ));
    let dns = wait_for_file(&run_dir.join("dns.txt")).await;
    assert!(
        dns.starts_with("ok ") && dns.ends_with(":6121"),
        "jobmanager-1 -> taskmanager-1: {dns}"
    );

    // --- pause / unpause ---
    let t0 = Instant::now();
    rt.pause("taskmanager-3").await.unwrap();
    let pause_call = t0.elapsed();
    let pause_seen = wait_for(
        &docker,
        &name("taskmanager-3"),
        ContainerStateStatusEnum::PAUSED,
    )
    .await
        + pause_call;
    let s = inspect(&docker, &name("taskmanager-3"))
        .await
        .state
        .unwrap();
    assert_eq!((s.paused, s.running), (Some(true), Some(true)));
    let tm3 = rt
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == "taskmanager-3")
        .unwrap();
    assert_eq!(tm3.state, NodeState::Paused);
    rt.unpause("taskmanager-3").await.unwrap();
    wait_for(
        &docker,
        &name("taskmanager-3"),
        ContainerStateStatusEnum::RUNNING,
    )
    .await;
    let again = rt.unpause("taskmanager-3").await;
    assert!(matches!(again, Err(RuntimeError::Usage(_))), "{again:?}");

    // --- kill SIGKILL / start ---
    let t0 = Instant::now();
    rt.kill("taskmanager-1", chaos::signal::Signal::KILL).await.unwrap();
    let kill_call = t0.elapsed();
    let kill_seen = wait_for(
        &docker,
        &name("taskmanager-1"),
        ContainerStateStatusEnum::EXITED,
    )
    .await
        + kill_call;
    let s = inspect(&docker, &name("taskmanager-1"))
        .await
        .state
        .unwrap();
    assert_eq!(s.exit_code, Some(137), "SIGKILL exit code");
    let tm1 = rt
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == "taskmanager-1")
        .unwrap();
    assert_eq!(tm1.state, NodeState::Exited);
    // Killing a dead node is a usage error, not a crash.
    assert!(matches!(
        rt.kill("taskmanager-1", chaos::signal::Signal::KILL).await,
        Err(RuntimeError::Usage(_))
    ));
    let t0 = Instant::now();
    rt.start("taskmanager-1").await.unwrap();
    let start_call = t0.elapsed();
    wait_for(
        &docker,
        &name("taskmanager-1"),
        ContainerStateStatusEnum::RUNNING,
    )
    .await;
    rt.start("taskmanager-1").await.unwrap(); // already running: fine

    // --- stop: grace honoured for a process ignoring SIGTERM, not waited for otherwise ---
    let t0 = Instant::now();
    rt.stop("taskmanager-2", Duration::from_secs(2))
        .await
        .unwrap();
    let stop_ignoring = t0.elapsed();
    assert_eq!(
        status(&docker, &name("taskmanager-2")).await,
        Some(ContainerStateStatusEnum::EXITED)
    );
    assert!(
        stop_ignoring >= Duration::from_millis(1900) && stop_ignoring < Duration::from_secs(6),
        "stop with 2s grace of a SIGTERM-ignoring node took {stop_ignoring:?}"
    );
    assert_eq!(
        inspect(&docker, &name("taskmanager-2"))
            .await
            .state
            .unwrap()
            .exit_code,
        Some(137)
    );
    let t0 = Instant::now();
    rt.stop("taskmanager-3", Duration::from_secs(5))
        .await
        .unwrap();
    let stop_polite = t0.elapsed();
    assert!(
        stop_polite < Duration::from_secs(2),
        "SIGTERM-handling stop took {stop_polite:?}"
    );
    assert_eq!(
        inspect(&docker, &name("taskmanager-3"))
            .await
            .state
            .unwrap()
            .exit_code,
        Some(0)
    );
    rt.stop("taskmanager-3", Duration::from_secs(1))
        .await
        .unwrap(); // already stopped: fine

    // --- restart = stop + start ---
    rt.start("taskmanager-2").await.unwrap();
    wait_for(
        &docker,
        &name("taskmanager-2"),
        ContainerStateStatusEnum::RUNNING,
    )
    .await;
    let t0 = Instant::now();
    rt.restart("taskmanager-2", Duration::from_secs(1))
        .await
        .unwrap();
    let restart_time = t0.elapsed();
    assert_eq!(
        status(&docker, &name("taskmanager-2")).await,
        Some(ContainerStateStatusEnum::RUNNING)
    );
    assert!(
        restart_time >= Duration::from_millis(900),
        "restart {restart_time:?} skipped the grace"
    );

    // --- the label fence: unknown nodes, unlabelled look-alikes, sidecars ---
    assert!(matches!(
        rt.kill("taskmanager-7", chaos::signal::Signal::KILL).await,
        Err(RuntimeError::Usage(_))
    ));
    let impostor = name("taskmanager-9");
    cleanup.extra_containers.push(impostor.clone());
    let body = ContainerCreateBody {
        image: Some(tag.clone()),
        cmd: Some(vec!["taskmanager".into(), "--id".into(), "x".into()]),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default()
        .name(&impostor)
        .build();
    docker.create_container(Some(opts), body).await.unwrap();
    assert!(matches!(
        rt.start("taskmanager-9").await,
        Err(RuntimeError::Usage(_))
    ));
    let sidecar = name("sidecar-test");
    let body = ContainerCreateBody {
        image: Some(tag.clone()),
        labels: Some(HashMap::from([
            (labels::CLUSTER.to_string(), cluster.clone()),
            (labels::ROLE.to_string(), labels::ROLE_SIDECAR.to_string()),
        ])),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default()
        .name(&sidecar)
        .build();
    docker.create_container(Some(opts), body).await.unwrap();
    assert_eq!(
        rt.nodes().await.unwrap().len(),
        4,
        "a sidecar is not a node"
    );

    // --- down: everything labelled goes (paused nodes too), nothing else; idempotent ---
    rt.pause("jobmanager-1").await.unwrap();
    rt.down().await.unwrap();
    let filter = labels::filter_eq(labels::CLUSTER, &cluster);
    let left = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .unwrap();
    assert!(left.is_empty(), "left after down: {left:?}");
    let net = docker.inspect_network(&network, None).await;
    assert!(net.is_err(), "network {network} survived down");
    assert_eq!(
        status(&docker, &impostor).await,
        Some(ContainerStateStatusEnum::CREATED),
        "unlabelled container touched"
    );
    rt.down().await.unwrap();
    assert!(matches!(rt.nodes().await, Ok(n) if n.iter().all(|n| n.state == NodeState::Missing)));
    drop(cleanup);
    assert!(
        docker.inspect_image(&tag).await.is_err(),
        "test image left behind"
    );

    println!("docker runtime figures:");
    println!("  image build (FROM scratch, {} KiB binary): {build_time:?}; reuse when unchanged: {cached_time:?}",
        std::fs::metadata(&binary).unwrap().len() / 1024);
    println!("  up 1+3 containers: up() returned after {up_returned:?}, all running after {all_running:?}");
    println!("  kill SIGKILL: API call {kill_call:?}, exited observed after {kill_seen:?}");
    println!("  pause: API call {pause_call:?}, paused observed after {pause_seen:?}");
    println!("  start after kill: API call {start_call:?}");
    println!(
        "  stop grace 2s, SIGTERM ignored: {stop_ignoring:?}; SIGTERM handled: {stop_polite:?}"
    );
    println!("  restart (grace 1s, SIGTERM ignored): {restart_time:?}");
}
