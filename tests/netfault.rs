//! Network faults measured for their effect, on real containers: round-trip times before,
//! during and after a delay, the loss ratio over hundreds of probes, partitions (both ways
//! and one way) and heal, re-apply after a restart, and cleanup after a SIGKILLed `chaos`.
//!
//! Needs Docker. Without a daemon the tests say so loudly and pass, except under `CI=true`,
//! where they fail. The containers are built from the sidecar image itself (it has
//! `chaos-netd echo` to stand in for a node).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RestartContainerOptionsBuilder,
};
use bollard::Docker;
use chaos::netfault::journal::Journal;
use chaos::netfault::sidecar::{self, SidecarSpec};
use chaos::netfault::{
    ensure_image, undo_all, Distribution, NetFaults, NetemParams, ProbeStats, ReconcileAction,
    ReconcilePolicy,
};
use futures_util::FutureExt;

/// Port of the echo every test node runs as its main process.
const NODE_ECHO_PORT: u16 = 9000;

/// One test at a time: round-trip figures are timing measurements on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn docker_or_skip(test: &str) -> Option<Docker> {
    let connected = match Docker::connect_with_local_defaults() {
        Ok(d) => tokio::time::timeout(Duration::from_secs(10), d.negotiate_version())
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
        Err(e) => Err(e.to_string()),
    };
    match connected {
        Ok(d) => Some(d),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: Docker is required in CI and unreachable: {e}")
        }
        Err(e) => {
            eprintln!("\n!!!!! {test}: SKIPPED, no Docker daemon ({e}) !!!!!\n");
            None
        }
    }
}

/// A stand-in cluster: containers `<id>-<node>` on `<id>-internal`, labelled like chaos's.
struct TestCluster {
    docker: Docker,
    id: String,
    network: String,
    image: String,
    run_dir: tempfile::TempDir,
}

impl TestCluster {
    async fn start(docker: &Docker, nodes: &[&str]) -> TestCluster {
        let id = format!("nft{:06x}", rand::random::<u32>() & 0xff_ffff);
        let image = ensure_image(docker, Path::new(env!("CARGO_BIN_EXE_chaos-netd")))
            .await
            .expect("sidecar image");
        let network = format!("{id}-internal");
        let labels = HashMap::from([
            ("chaos.cluster".to_string(), id.clone()),
            ("chaos.role".to_string(), "network".to_string()),
        ]);
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .expect("network");
        let cluster = TestCluster {
            docker: docker.clone(),
            id,
            network,
            image,
            run_dir: tempfile::tempdir().unwrap(),
        };
        for node in nodes {
            cluster.start_node(node).await;
        }
        cluster
    }

    async fn start_node(&self, node: &str) {
        let name = format!("{}-{node}", self.id);
        let labels = HashMap::from([
            ("chaos.cluster".to_string(), self.id.clone()),
            ("chaos.role".to_string(), "taskmanager".to_string()),
            ("chaos.node".to_string(), node.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(vec![
                "echo".into(),
                "--port".into(),
                NODE_ECHO_PORT.to_string(),
            ]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![node.to_string()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let c = self
            .docker
            .create_container(Some(options), body)
            .await
            .expect("create node");
        self.docker
            .start_container(&c.id, None)
            .await
            .expect("start node");
    }

    fn faults(&self) -> NetFaults {
        NetFaults::new(
            self.docker.clone(),
            &self.id,
            self.run_dir.path(),
            &self.network,
            &self.image,
        )
    }

    async fn container_id(&self, node: &str) -> String {
        let t = sidecar::inspect(
            &self.docker,
            &format!("{}-{node}", self.id),
            node,
            &self.network,
        )
        .await
        .unwrap()
        .expect("node exists");
        t.container_id
    }

    async fn ip(&self, node: &str) -> String {
        let t = sidecar::inspect(
            &self.docker,
            &format!("{}-{node}", self.id),
            node,
            &self.network,
        )
        .await
        .unwrap()
        .expect("node exists");
        t.ip.expect("node has an address")
    }

    /// Probes `to`'s main echo from inside `from`'s namespace.
    async fn probe_node(&self, from: &str, to: &str, count: u32) -> ProbeStats {
        let to_ip = self.ip(to).await;
        let spec = SidecarSpec {
            image: &self.image,
            cluster: &self.id,
            node: from,
            fault: "test-probe",
            network_mode: format!("container:{}", self.container_id(from).await),
            cmd: vec![
                "probe".into(),
                "--to".into(),
                format!("{to_ip}:{NODE_ECHO_PORT}"),
                "--count".into(),
                count.to_string(),
                "--timeout-ms".into(),
                "1000".into(),
            ],
        };
        let id = sidecar::start(&self.docker, spec).await.unwrap();
        let out = sidecar::wait_output(&self.docker, &id, Duration::from_secs(60)).await;
        sidecar::remove(&self.docker, &id).await.unwrap();
        let (_, stdout, stderr) = out.unwrap();
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"))
    }

    /// Whether `node`'s echo has heard from `from`'s address.
    async fn heard(&self, node: &str, from: &str) -> bool {
        let (_, stderr) = sidecar::logs(&self.docker, &format!("{}-{node}", self.id))
            .await
            .unwrap();
        stderr.contains(&format!("first datagram from {}\n", self.ip(from).await))
    }

    /// Every rule and qdisc in `node`'s namespace, as the sidecar's tools list them.
    async fn namespace_state(&self, node: &str) -> String {
        let spec = SidecarSpec {
            image: &self.image,
            cluster: &self.id,
            node,
            fault: "test-inspect",
            network_mode: format!("container:{}", self.container_id(node).await),
            cmd: vec!["hold".into(), "--max-secs".into(), "60".into()],
        };
        let id = sidecar::start(&self.docker, spec).await.unwrap();
        let mut all = String::new();
        for cmd in [
            &["/usr/sbin/xtables-nft-multi", "iptables", "-S"][..],
            &["/usr/sbin/xtables-legacy-multi", "iptables", "-S"][..],
            &["/usr/sbin/tc", "qdisc", "show"][..],
        ] {
            let argv: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            let out = sidecar::exec(&self.docker, &id, &argv).await.unwrap();
            all.push_str(&out.stdout);
            all.push_str(&out.stderr);
        }
        sidecar::remove(&self.docker, &id).await.unwrap();
        all
    }

    async fn containers(&self) -> Vec<String> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("chaos.cluster={}", self.id)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(options)).await.unwrap();
        list.into_iter().filter_map(|c| c.id).collect()
    }

    async fn sidecars(&self) -> Vec<String> {
        sidecar::list(&self.docker, &self.id).await.unwrap()
    }

    /// Removes every container and the network; asserts nothing of the cluster is left.
    async fn remove(self) {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        for id in self.containers().await {
            let _ = self
                .docker
                .remove_container(&id, Some(options.clone()))
                .await;
        }
        let _ = self.docker.remove_network(&self.network).await;
        assert!(
            self.containers().await.is_empty(),
            "containers of {} left",
            self.id
        );
        assert!(
            self.docker
                .inspect_network(&self.network, None)
                .await
                .is_err(),
            "network left"
        );
    }
}

/// Runs `body` on a fresh cluster of `nodes` and removes the cluster whatever happens.
async fn with_cluster<F>(test: &str, nodes: &[&str], body: F)
where
    F: for<'a> FnOnce(&'a TestCluster) -> futures_util::future::BoxFuture<'a, ()>,
{
    let _serial = SERIAL.lock().await;
    let Some(docker) = docker_or_skip(test).await else {
        return;
    };
    let cluster = TestCluster::start(&docker, nodes).await;
    let outcome = std::panic::AssertUnwindSafe(body(&cluster))
        .catch_unwind()
        .await;
    let _ = undo_all(&docker, cluster.run_dir.path()).await;
    cluster.remove().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn mean(s: &ProbeStats) -> f64 {
    s.mean_rtt_ms()
        .unwrap_or_else(|| panic!("no answers: {s:?}"))
}

#[tokio::test]
async fn delay_200ms_jitter_50ms_is_measured_and_undone() {
    with_cluster("delay", &["a", "b"], |c| {
        async move {
            let nf = c.faults();
            let mech = nf.probe().await.unwrap();
            eprintln!("mechanism: {mech:?}");
            let before = nf.measure(Some("a"), "b", 200).await.unwrap();
            assert!(mean(&before) < 5.0, "baseline {before:?}");

            let params = NetemParams {
                delay: Some(Duration::from_millis(200)),
                jitter: Some(Duration::from_millis(50)),
                ..NetemParams::default()
            };
            let handle = nf.apply_netem("b", &params).await.unwrap();
            let during = nf.measure(Some("a"), "b", 300).await.unwrap();
            let added = mean(&during) - mean(&before);
            eprintln!("delay 200ms +- 50ms: added {added:.1} ms, {during:?}");
            assert!(
                (180.0..=220.0).contains(&added),
                "mean added delay {added} ms not within 10% of 200 ms"
            );
            assert_eq!(during.loss, 0.0);
            let rtt = during.rtt_ms.clone().unwrap();
            // Uniform over +-50 ms: sd 28.9 ms, nothing outside 150..250 ms (plus the base).
            assert!(
                (20.0..=38.0).contains(&rtt.stddev),
                "jitter sd {}",
                rtt.stddev
            );
            assert!(rtt.min >= 149.0 && rtt.max <= 260.0, "{rtt:?}");
            // The fault is b's alone: a probe from outside every fault sees the same delay.
            let outside = nf.measure(None, "b", 100).await.unwrap();
            assert!((180.0..=225.0).contains(&mean(&outside)), "{outside:?}");

            nf.undo(&handle).await.unwrap();
            let after = nf.measure(Some("a"), "b", 200).await.unwrap();
            eprintln!("after undo: {after:?}");
            assert!(
                mean(&after) < 5.0,
                "delay still there after undo: {after:?}"
            );
            assert!(Journal::in_run_dir(c.run_dir.path())
                .open_entries()
                .unwrap()
                .is_empty());
            assert!(c.sidecars().await.is_empty(), "sidecars left after undo");
            let state = c.namespace_state("b").await;
            assert!(!state.contains("chaos:"), "{state}");
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn normal_jitter_and_duplicates_through_the_same_fault() {
    with_cluster("normal+duplicate", &["a", "b"], |c| {
        async move {
            let nf = c.faults();
            let params = NetemParams {
                delay: Some(Duration::from_millis(100)),
                jitter: Some(Duration::from_millis(20)),
                distribution: Distribution::Normal,
                duplicate: Some(0.5),
                ..NetemParams::default()
            };
            let h = nf.apply_netem("b", &params).await.unwrap();
            let s = nf.measure(Some("a"), "b", 300).await.unwrap();
            eprintln!("delay 100ms, normal sd 20ms, duplicate 50%: {s:?}");
            let rtt = s.rtt_ms.clone().unwrap();
            // A duplicate goes out with its original: the delay is one draw per pair.
            assert!((90.0..=110.0).contains(&rtt.mean), "{rtt:?}");
            assert!(
                (14.0..=26.0).contains(&rtt.stddev),
                "normal sd 20 ms: {rtt:?}"
            );
            let dup = f64::from(s.duplicates) / f64::from(s.received);
            assert!((0.38..=0.62).contains(&dup), "duplicate ratio {dup}");
            nf.undo(&h).await.unwrap();
            let after = nf.measure(Some("a"), "b", 100).await.unwrap();
            assert_eq!(after.duplicates, 0);
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn loss_30_percent_is_observed_over_hundreds_of_probes() {
    with_cluster("loss", &["a", "b"], |c| {
        async move {
            let nf = c.faults();
            let h = nf
                .apply_netem(
                    "b",
                    &NetemParams {
                        loss: Some(0.3),
                        ..NetemParams::default()
                    },
                )
                .await
                .unwrap();
            let s = nf.measure(Some("a"), "b", 400).await.unwrap();
            // Binomial(400, 0.3): sd 2.3 points; accept 5 sd either side.
            eprintln!("loss 30%: observed {:.1}% of {}", s.loss * 100.0, s.sent);
            assert!(
                (0.185..=0.415).contains(&s.loss),
                "observed loss {}",
                s.loss
            );
            nf.undo(&h).await.unwrap();
            let after = nf.measure(Some("a"), "b", 200).await.unwrap();
            assert_eq!(after.loss, 0.0, "loss after undo: {after:?}");
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn partition_blocks_between_groups_only_and_heal_restores() {
    with_cluster("partition", &["a", "b", "c"], |c| {
        async move {
            let nf = c.faults();
            let groups = vec![
                vec!["a".to_string()],
                vec!["b".to_string(), "c".to_string()],
            ];
            let h = nf.partition(&groups, false).await.unwrap();
            assert_eq!(h.entries.len(), 3);
            assert_eq!(c.probe_node("a", "b", 50).await.loss, 1.0);
            assert_eq!(c.probe_node("c", "a", 50).await.loss, 1.0);
            assert_eq!(
                c.probe_node("b", "c", 50).await.loss,
                0.0,
                "within a group traffic flows"
            );
            assert!(
                !c.heard("a", "c").await,
                "a must not have received anything from c"
            );

            let report = nf.heal().await.unwrap();
            assert_eq!(report.undone.len(), 3, "{report:?}");
            assert_eq!(c.probe_node("a", "b", 50).await.loss, 0.0);
            assert_eq!(c.probe_node("c", "a", 50).await.loss, 0.0);
            assert!(c.sidecars().await.is_empty());
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn one_way_partition_drops_only_traffic_from_group_zero() {
    with_cluster("one-way", &["a", "b"], |c| {
        async move {
            let nf = c.faults();
            let groups = vec![vec!["a".to_string()], vec!["b".to_string()]];
            let h = nf.partition(&groups, true).await.unwrap();
            // a -> b: nothing arrives at b.
            assert_eq!(c.probe_node("a", "b", 30).await.loss, 1.0);
            assert!(
                !c.heard("b", "a").await,
                "b received from a despite the one-way partition"
            );
            // b -> a arrives (a hears b); only a's answers, being traffic from a, are dropped.
            assert_eq!(c.probe_node("b", "a", 30).await.loss, 1.0);
            assert!(c.heard("a", "b").await, "traffic from b to a must flow");
            nf.undo(&h).await.unwrap();
            assert_eq!(c.probe_node("a", "b", 30).await.loss, 0.0);
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn a_restart_wipes_the_rules_and_reconcile_reapplies_or_ends() {
    with_cluster("restart", &["a", "b"], |c| {
        async move {
            let nf = c.faults();
            let params = NetemParams {
                delay: Some(Duration::from_millis(100)),
                ..NetemParams::default()
            };
            nf.apply_netem("b", &params).await.unwrap();
            let restart = || async {
                let options = RestartContainerOptionsBuilder::default().t(1).build();
                c.docker
                    .restart_container(&format!("{}-b", c.id), Some(options))
                    .await
                    .unwrap();
            };
            restart().await;
            let gone = nf.measure(Some("a"), "b", 50).await.unwrap();
            assert!(mean(&gone) < 5.0, "a restart wipes the namespace: {gone:?}");

            let r = nf.reconcile(ReconcilePolicy::Reapply).await.unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].action, ReconcileAction::Reapplied, "{r:?}");
            let back = nf.measure(Some("a"), "b", 50).await.unwrap();
            assert!(
                (90.0..=115.0).contains(&mean(&back)),
                "re-applied delay: {back:?}"
            );
            let r = nf.reconcile(ReconcilePolicy::Reapply).await.unwrap();
            assert_eq!(r[0].action, ReconcileAction::Intact, "{r:?}");

            restart().await;
            let r = nf.reconcile(ReconcilePolicy::End).await.unwrap();
            assert_eq!(r[0].action, ReconcileAction::Ended, "{r:?}");
            assert!(Journal::in_run_dir(c.run_dir.path())
                .open_entries()
                .unwrap()
                .is_empty());
            assert!(
                c.sidecars().await.is_empty(),
                "the old delayer sidecar must go"
            );
            assert!(mean(&nf.measure(Some("a"), "b", 50).await.unwrap()) < 5.0);
        }
        .boxed()
    })
    .await;
}

/// Environment variable that turns [`driver_holds_faults_until_killed`] into the driver.
const DRIVER_ENV: &str = "CHAOS_NETFAULT_TEST_DRIVER";

#[derive(serde::Serialize, serde::Deserialize)]
struct DriverConfig {
    cluster: String,
    network: String,
    image: String,
    run_dir: PathBuf,
    ready: PathBuf,
}

/// Not a test on its own: the process the SIGKILL test starts (this same test binary) to
/// hold faults, as `chaos` would, until it is killed.
#[tokio::test]
#[ignore = "driver for sigkill_mid_fault_then_undo_all_leaves_nothing"]
async fn driver_holds_faults_until_killed() {
    let Ok(json) = std::env::var(DRIVER_ENV) else {
        return;
    };
    let cfg: DriverConfig = serde_json::from_str(&json).unwrap();
    let docker = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let nf = NetFaults::new(docker, &cfg.cluster, &cfg.run_dir, &cfg.network, &cfg.image);
    let params = NetemParams {
        delay: Some(Duration::from_millis(150)),
        loss: Some(0.2),
        rate_bps: Some(10_000_000),
        ..NetemParams::default()
    };
    nf.apply_netem("b", &params).await.unwrap();
    nf.partition(&[vec!["a".into()], vec!["c".into()]], false)
        .await
        .unwrap();
    std::fs::write(&cfg.ready, "ready").unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[tokio::test]
async fn sigkill_mid_fault_then_undo_all_leaves_nothing() {
    with_cluster("sigkill", &["a", "b", "c"], |c| {
        async move {
            let ready = c.run_dir.path().join("driver-ready");
            let cfg = DriverConfig {
                cluster: c.id.clone(),
                network: c.network.clone(),
                image: c.image.clone(),
                run_dir: c.run_dir.path().to_path_buf(),
                ready: ready.clone(),
            };
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "driver_holds_faults_until_killed",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DRIVER_ENV, serde_json::to_string(&cfg).unwrap())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !ready.exists() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("driver exited early: {status}");
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "driver never got its faults applied"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // SIGKILL: no destructor, no signal handler, nothing of the driver runs again.
            child.kill().unwrap();
            child.wait().unwrap();

            let open = Journal::in_run_dir(c.run_dir.path())
                .open_entries()
                .unwrap();
            assert_eq!(open.len(), 3, "netem on b + partition entries on a and c");
            assert_eq!(
                c.probe_node("a", "c", 20).await.loss,
                1.0,
                "the partition outlived the driver"
            );
            assert!(
                !c.sidecars().await.is_empty(),
                "the delayer outlived the driver"
            );

            let report = undo_all(&c.docker, c.run_dir.path()).await.unwrap();
            assert!(report.is_clean(), "{report:?}");
            assert_eq!(report.undone.len(), 3, "{report:?}");
            assert!(Journal::in_run_dir(c.run_dir.path())
                .open_entries()
                .unwrap()
                .is_empty());
            assert!(
                c.sidecars().await.is_empty(),
                "sidecars left: {:?}",
                c.sidecars().await
            );
            for node in ["a", "b", "c"] {
                let state = c.namespace_state(node).await;
                assert!(!state.contains("chaos:"), "{node}: {state}");
                assert!(
                    !state.contains("netem") && !state.contains("tbf"),
                    "{node}: {state}"
                );
            }
            assert_eq!(c.probe_node("a", "c", 20).await.loss, 0.0);
            let s = c.probe_node("a", "b", 50).await;
            assert!(s.loss == 0.0 && mean(&s) < 5.0, "{s:?}");
            // Idempotent: a second undo_all finds nothing to do.
            let again = undo_all(&c.docker, c.run_dir.path()).await.unwrap();
            assert!(
                again.undone.is_empty() && again.ended.is_empty() && again.is_clean(),
                "{again:?}"
            );
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn rate_limits_throughput_and_a_delayed_node_keeps_tcp_flowing() {
    with_cluster("rate+tcp", &["a", "b"], |c| {
        async move {
            let nf = c.faults();
            let secs = Duration::from_secs(3);
            let base = nf.measure_throughput(Some("b"), "a", secs).await.unwrap();
            eprintln!("baseline b->a: {:.1} Mbit/s", base.bits_per_s / 1e6);
            assert!(base.bits_per_s > 100e6, "{base:?}");

            // Rate shapes what b sends.
            let h = nf
                .apply_netem(
                    "b",
                    &NetemParams {
                        rate_bps: Some(8_000_000),
                        ..NetemParams::default()
                    },
                )
                .await
                .unwrap();
            let shaped = nf.measure_throughput(Some("b"), "a", secs).await.unwrap();
            eprintln!(
                "rate 8 Mbit/s on b: b->a {:.2} Mbit/s",
                shaped.bits_per_s / 1e6
            );
            assert!((5.6e6..=8.8e6).contains(&shaped.bits_per_s), "{shaped:?}");
            nf.undo(&h).await.unwrap();

            // Regression: held on egress (OUTPUT), packets stay charged to the sending socket
            // and TCP Small Queues let ~2 packets through per delay (0.3 MB/s at 20 ms). On
            // arrival, a 50 ms delay leaves a connection what its window allows.
            let params = NetemParams {
                delay: Some(Duration::from_millis(50)),
                ..NetemParams::default()
            };
            let h = nf.apply_netem("b", &params).await.unwrap();
            for (from, to) in [("a", "b"), ("b", "a")] {
                let t = nf.measure_throughput(Some(from), to, secs).await.unwrap();
                eprintln!(
                    "delay 50 ms on b: {from}->{to} {:.1} Mbit/s",
                    t.bits_per_s / 1e6
                );
                assert!(t.bits_per_s > 20e6, "{from}->{to} strangled: {t:?}");
            }
            nf.undo(&h).await.unwrap();
        }
        .boxed()
    })
    .await;
}
