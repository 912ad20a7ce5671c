//! Jobmanager high availability on real processes: Debian's etcd (package `etcd-server`)
//! as a local process, two jobmanagers and three taskmanagers of the real streamd, started
//! by the process runtime. What is checked:
//!
//! - election: exactly one leader; the standby points at it and forwards REST to it;
//! - failover after SIGKILL of the leader: the standby leads with a higher epoch, the job
//!   is RUNNING with progress again within 5 s, and the output is exactly once;
//! - the zombie leader: SIGSTOP past its lease, a successor elected, SIGCONT: it steps
//!   down without completing or committing anything, and no commit is duplicated;
//! - etcd down longer than the lease: the leader steps down; etcd back: a leader again;
//! - the fence itself: a deposed leader's guarded etcd write fails.
//!
//! The cluster tests run one at a time (a lock here; nextest's `docker` group too): on
//! two cores, parallel clusters would turn lease timings into scheduling noise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaos::client::StreamdClient;
use chaos::runtime::process::{etcd_binary, ProcessRuntime};
use chaos::runtime::{ClusterDef, NodeDef, Resources, Role, Runtime};
use chaos::verdict::{self, Expectation, OracleInput};
use common::KillOnDrop;
use streamd_contract::api::{JobDetails, JobState, Overview};
use streamd::ha::election::Candidate;
use streamd::ha::{CheckpointPointer, HaConfig, HaError, Record, Recovered, Store};
use streamd_contract::spec::JobSpec;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const JOB: &str = "wordcount";
const JMS: [&str; 2] = ["jobmanager-1", "jobmanager-2"];

fn etcd() -> PathBuf {
    etcd_binary().expect("these tests need etcd: apt-get install etcd-server (CI's .ci/test does)")
}

/// A running HA cluster; killed on drop whatever happens.
struct Cluster {
    rt: ProcessRuntime,
    run_dir: PathBuf,
    job: JobSpec,
    _guard: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(id: &str, lines: u64, checkpoint_interval: &str) -> Cluster {
        etcd();
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let yaml = format!(
            "job_id: {JOB}\nparallelism: 4\ncheckpoint_interval: {checkpoint_interval}\ndelivery: exactly-once\n\
             restart: {{ strategy: fixed-delay, attempts: 20, delay: 200ms }}\n\
             input: {{ generate: {{ lines: {lines}, words_per_line: 8, vocabulary: 1500, seed: 5 }}, rate: 20000 }}\n\
             heartbeat: {{ interval: 250ms, timeout: 2s }}\nwait_for_taskmanagers: 3\n"
        );
        std::fs::write(run_dir.join("job.yaml"), &yaml).unwrap();
        let job: JobSpec = serde_yaml::from_str(&yaml).unwrap();
        let node = |name: &str, role, slots| NodeDef { name: name.into(), role, slots, resources: Resources::default() };
        let mut nodes = vec![node("etcd-1", Role::Etcd, 0)];
        nodes.extend(JMS.iter().map(|n| node(n, Role::Jobmanager, 0)));
        nodes.extend((1..=3).map(|i| node(&format!("taskmanager-{i}"), Role::Taskmanager, 2)));
        let def = ClusterDef {
            id: id.into(),
            run_dir: run_dir.clone(),
            nodes,
            env: vec![("RUST_LOG".into(), "info".into())],
        };
        let guard = KillOnDrop(run_dir.clone());
        let mut rt = ProcessRuntime::with_binary(chaos::images::build_streamd_binary().expect("building streamd"));
        rt.up(&def).await.expect("the HA cluster starts");
        Cluster { rt, run_dir, job, _guard: guard, _dir: dir }
    }

    async fn client(&self, jm: &str) -> StreamdClient {
        StreamdClient::new(self.rt.rest_url(jm).await.unwrap()).unwrap()
    }

    async fn overview(&self, jm: &str) -> Option<Overview> {
        self.client(jm).await.overview().await.ok()
    }

    /// The jobmanagers that say they lead, with their overviews.
    async fn leaders(&self) -> Vec<(String, Overview)> {
        let mut out = Vec::new();
        for jm in JMS {
            if let Some(o) = self.overview(jm).await.filter(|o| o.leader) {
                out.push((jm.to_string(), o));
            }
        }
        out
    }

    /// The job as `jm` reports it (a standby forwards to the leader).
    async fn job(&self, jm: &str) -> Option<JobDetails> {
        self.client(jm).await.job(JOB).await.ok()
    }

    /// Waits until exactly one jobmanager leads and the job runs there with a completed
    /// checkpoint; returns (leader, standby).
    async fn wait_running(&self, limit: Duration) -> (String, String) {
        let deadline = Instant::now() + limit;
        loop {
            let leaders = self.leaders().await;
            if let [(leader, _)] = leaders.as_slice() {
                if let Some(j) = self.job(leader).await {
                    if j.state == JobState::Running && j.last_completed_checkpoint.is_some() {
                        let standby = JMS.iter().find(|n| *n != leader).unwrap().to_string();
                        return (leader.clone(), standby);
                    }
                }
            }
            assert!(Instant::now() < deadline, "no single leader running the job within {limit:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for FINISHED, asking whichever jobmanager answers.
    async fn wait_finished(&self, limit: Duration) -> JobDetails {
        let deadline = Instant::now() + limit;
        loop {
            for jm in JMS {
                if let Some(j) = self.job(jm).await {
                    assert_ne!(j.state, JobState::Failed, "the job failed: {:?}", j.failure_cause);
                    if j.state == JobState::Finished {
                        return j;
                    }
                }
            }
            assert!(Instant::now() < deadline, "the job did not finish within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The committed output against the oracle, exactly once, epoch by epoch (the cuts
    /// recorded by whichever jobmanager led at each checkpoint).
    fn assert_exactly_once(&self) {
        let gen = self.job.input.generate.clone().expect("generated input");
        let input = OracleInput::Generate(gen);
        let oracle = verdict::oracle(&input).unwrap();
        let txns = streamd_contract::output::read_committed(&self.run_dir.join("output").join(JOB)).unwrap();
        let epochs = verdict::EpochEvidence::read(&self.run_dir, JOB, input, self.job.parallelism, true).unwrap();
        let v = verdict::verdict_with(&oracle, &txns, Expectation::ExactlyOnce, Some(&epochs), vec![]);
        assert!(v.checks.contains_key(verdict::CONSISTENT_CUTS) && v.checks.contains_key(verdict::EPOCHS_COMPLETE));
        let failed: Vec<_> = v.checks.iter().filter(|(_, c)| !c.ok).collect();
        assert!(v.pass, "exactly-once violated: {failed:?}; duplicates {:?}", v.duplicates);
        assert_eq!(v.oracle_words, v.finals.values().sum::<u64>());
    }

    /// A store on this cluster's etcd.
    async fn store(&self) -> Store {
        let port = self
            .rt
            .node_records()
            .iter()
            .find(|n| n.role == Role::Etcd)
            .and_then(|n| n.ports.etcd_client)
            .expect("the etcd node's client port");
        Store::connect(HaConfig::new(vec![format!("http://127.0.0.1:{port}")]), JOB).await.unwrap()
    }

    fn log(&self, node: &str) -> String {
        let raw = std::fs::read_to_string(self.run_dir.join("logs").join(format!("{node}.log"))).unwrap_or_default();
        strip_ansi(&raw)
    }

    async fn down(mut self) {
        self.rt.down().await.expect("down");
        assert!(!self.run_dir.join("etcd").exists(), "down removes etcd's data");
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
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
async fn one_leader_is_elected_standbys_forward_and_a_killed_leader_fails_over_within_5s() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("ha-kill", 200_000, "1s").await;
    let (leader, standby) = c.wait_running(Duration::from_secs(30)).await;

    // Exactly one leader; the standby points at it and answers with its numbers.
    let lo = c.overview(&leader).await.unwrap();
    // The standby learns the leader through its watch: give it a moment under load.
    let deadline = Instant::now() + Duration::from_secs(5);
    let so = loop {
        let so = c.overview(&standby).await.unwrap();
        if so.leader_address.is_some() || Instant::now() > deadline {
            break so;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(!so.leader, "two leaders: {lo:?} {so:?}");
    assert_eq!(so.leader_address.as_deref(), Some(c.rt.rest_url(&leader).await.unwrap().as_str()));
    assert_eq!((so.leader_epoch, so.taskmanagers), (lo.leader_epoch, 3), "{so:?}");
    let forwarded = c.job(&standby).await.expect("the standby forwards /jobs/<id> to the leader");
    assert_eq!((forwarded.id.as_str(), forwarded.state), (JOB, JobState::Running));
    let before = c.job(&leader).await.unwrap();

    // SIGKILL the leader: the standby must lead with a higher epoch and the job run again.
    let t = Instant::now();
    c.rt.kill(&leader, chaos::signal::Signal::KILL).await.unwrap();
    let mut resumed_at: Option<u64> = None;
    let failover = loop {
        assert!(t.elapsed() < Duration::from_secs(15), "no failover within 15 s");
        let o = c.overview(&standby).await;
        let j = c.job(&standby).await;
        if let (Some(o), Some(j)) = (o, j) {
            if o.leader && j.state == JobState::Running && j.attempt > before.attempt {
                assert!(o.leader_epoch > lo.leader_epoch, "the new epoch must be higher: {} -> {}", lo.leader_epoch, o.leader_epoch);
                // Progress: the input position moves on under the new leader.
                match resumed_at {
                    None => resumed_at = Some(j.records_in),
                    Some(r) if j.records_in > r => break t.elapsed(),
                    Some(_) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    println!("failover (SIGKILL of the leader -> new leader RUNNING with progress): {} ms", failover.as_millis());
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}, the goal is under 5 s");

    let done = c.wait_finished(Duration::from_secs(60)).await;
    assert!(done.failures.iter().any(|f| f.cause.contains("jobmanager failover")), "{:?}", done.failures);
    assert!(done.restarts >= 1);
    c.assert_exactly_once();
    assert_eq!(c.leaders().await.len(), 1);
    c.down().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_wakes_up_deposed_steps_down_and_commits_nothing() {
    let _serial = SERIAL.lock().await;
    // Checkpoints every 200 ms: the freeze almost surely lands with one in flight, so the
    // zombie wakes up to acknowledgements it could complete.
    let c = Cluster::start("ha-pause", 240_000, "200ms").await;
    let (zombie, successor) = c.wait_running(Duration::from_secs(30)).await;
    let old_epoch = c.overview(&zombie).await.unwrap().leader_epoch;

    c.rt.pause(&zombie).await.unwrap();
    let t = Instant::now();
    let new_epoch = loop {
        assert!(t.elapsed() < Duration::from_secs(8), "no successor while the leader is frozen");
        if let Some(o) = c.overview(&successor).await.filter(|o| o.leader) {
            break o.leader_epoch;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(new_epoch > old_epoch);
    println!("successor elected {} ms after the freeze", t.elapsed().as_millis());
    // Let the successor run the job for a while, then thaw the zombie.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.job(&successor).await.is_none_or(|j| j.state != JobState::Running) {
        assert!(Instant::now() < deadline, "the successor does not run the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let thawed = Instant::now();
    c.rt.unpause(&zombie).await.unwrap();

    // It finds its lease lapsed and steps down.
    loop {
        assert!(thawed.elapsed() < Duration::from_secs(3), "the thawed leader still claims to lead");
        if c.overview(&zombie).await.is_some_and(|o| !o.leader) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // ...and then follows the successor (its watch catches up after the step-down).
    let want = c.rt.rest_url(&successor).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = c.overview(&zombie).await;
        if o.as_ref().and_then(|o| o.leader_address.as_deref()) == Some(want.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "the deposed leader does not point at its successor: {o:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let leaders = c.leaders().await;
    assert!(matches!(leaders.as_slice(), [(l, _)] if *l == successor), "{leaders:?}");

    c.wait_finished(Duration::from_secs(60)).await;
    // No duplicated or stepped-back commit, nothing lost.
    c.assert_exactly_once();
    // The zombie did nothing as leader after waking: it stepped down on the spot, and the
    // last checkpoint it completed was before its successor existed.
    let log = c.log(&zombie);
    let down_at = log.find("stepping down").expect("the zombie logs its step-down");
    assert!(log[down_at..].lines().next().unwrap_or("").contains("lapsed"), "{}", &log[down_at..]);
    assert!(!log[down_at..].contains("checkpoint complete"), "the zombie completed a checkpoint after waking");
    // The pointer in etcd is the successor's.
    let rec = c.store().await.recover().await.unwrap();
    let p = rec.checkpoint.expect("a published checkpoint");
    assert_eq!(p.epoch, new_epoch, "the last published checkpoint must be the successor's: {p:?}");
    c.down().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_etcd_down_past_the_lease_the_leader_steps_down_and_a_leader_returns_with_etcd() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("ha-etcd", 300_000, "1s").await;
    let (leader, _) = c.wait_running(Duration::from_secs(30)).await;

    c.rt.stop("etcd-1", Duration::from_secs(1)).await.unwrap();
    let t = Instant::now();
    // TTL 2 s: the leader cannot renew its lease and revokes its own leadership.
    loop {
        assert!(t.elapsed() < Duration::from_secs(6), "the leader kept leading without etcd");
        if c.leaders().await.is_empty() && c.overview(&leader).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("leader stepped down {} ms after etcd stopped", t.elapsed().as_millis());
    assert!(c.log(&leader).contains("stepping down"), "the leader logs why it stepped down");
    // Nobody leads while etcd is away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(c.leaders().await.is_empty(), "a leader without etcd");

    c.rt.start("etcd-1").await.unwrap();
    let t = Instant::now();
    c.wait_running(Duration::from_secs(15)).await;
    println!("job RUNNING again {} ms after etcd restarted", t.elapsed().as_millis());
    c.wait_finished(Duration::from_secs(60)).await;
    c.assert_exactly_once();
    c.down().await;
}

/// etcd as a bare child process (no cluster), killed on drop.
struct Etcd {
    child: Child,
    url: String,
    peer: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect::<Vec<_>>()
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let (url, peer) = (format!("http://127.0.0.1:{}", ports[0]), format!("http://127.0.0.1:{}", ports[1]));
        let child = Etcd::spawn(dir.path(), &url, &peer);
        Etcd { child, url, peer, dir }
    }

    fn spawn(dir: &Path, client: &str, peer: &str) -> Child {
        Command::new(etcd())
            .args(["--name", "fence", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", client, "--advertise-client-urls", client])
            .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
            .args(["--initial-cluster", &format!("fence={peer}"), "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd")
    }

    /// SIGKILL, then the same member again on the same ports and data.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start_again(&mut self) {
        self.child = Etcd::spawn(self.dir.path(), &self.url, &self.peer);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn candidate(id: &str) -> Candidate {
    Candidate { jobmanager: id.into(), rpc_address: format!("{id}:6123"), rest_url: format!("http://{id}:8081") }
}

fn pointer(checkpoint: u64, epoch: u64) -> Record {
    Record::LatestCheckpoint(CheckpointPointer { checkpoint, epoch, completed_ms: 0 })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_leader_cannot_publish_a_checkpoint() {
    let etcd = Etcd::start();
    let cfg = HaConfig::new(vec![etcd.url.clone()]);
    let (a, b) = (Store::connect(cfg.clone(), "fence").await.unwrap(), Store::connect(cfg, "fence").await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.recover().await.is_err() {
        assert!(Instant::now() < deadline, "etcd did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let la = a.campaign(&candidate("jm-a")).await.unwrap();
    let epoch_a = la.epoch();
    assert!(la.is_valid());
    a.guarded_put(epoch_a, &[pointer(1, epoch_a)]).await.unwrap();
    // While a leads, b does not get elected.
    assert!(tokio::time::timeout(Duration::from_millis(800), b.campaign(&candidate("jm-b"))).await.is_err());

    // a freezes: its lease is no longer renewed (nor revoked). b takes over once it lapses.
    drop(la);
    let t = Instant::now();
    let lb = tokio::time::timeout(Duration::from_secs(6), b.campaign(&candidate("jm-b"))).await.expect("b elected").unwrap();
    println!("b elected {} ms after a stopped renewing", t.elapsed().as_millis());
    assert!(lb.epoch() > epoch_a);

    // a wakes up and tries to publish what it completed meanwhile: refused.
    match a.guarded_put(epoch_a, &[pointer(2, epoch_a)]).await {
        Err(HaError::NotLeader(_)) => {}
        other => panic!("a deposed leader's write must fail with NotLeader, got {other:?}"),
    }
    b.guarded_put(lb.epoch(), &[pointer(3, lb.epoch())]).await.unwrap();
    let rec = a.recover().await.unwrap();
    assert_eq!(rec.checkpoint, Some(CheckpointPointer { checkpoint: 3, epoch: lb.epoch(), completed_ms: 0 }));
    // Resigning deletes the leader key at once.
    lb.resign(&b).await;
    let lc = tokio::time::timeout(Duration::from_secs(1), a.campaign(&candidate("jm-a"))).await.expect("no TTL wait after a resignation");
    assert!(lc.unwrap().epoch() > epoch_a);
}

/// The store itself on a bare etcd: each record lands under its own key and a new leader
/// reads every one back; the first leader's job spec wins over a later one; a write or a
/// spec under an epoch that does not lead is not stored.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_keeps_each_record_under_its_key_and_the_first_job_spec() {
    let etcd = Etcd::start();
    let cfg = HaConfig::new(vec![etcd.url.clone()]);
    let s = Store::connect(cfg.clone(), "records").await.unwrap();
    let empty = recovered(&s, Duration::from_secs(10), "etcd did not come up").await;
    assert!(empty.job.is_none() && empty.checkpoint.is_none() && empty.status.is_none() && empty.checkpoint_counter == 0);
    let leader = s.campaign(&candidate("jm-a")).await.unwrap();
    let e = leader.epoch();
    let status = streamd::ha::JobStatusRecord {
        leader: "jm-a".into(),
        epoch: e,
        state: JobState::Running,
        attempt: 3,
        restarts: 2,
        start_ms: 11,
        failure_cause: Some("lost taskmanager-2".into()),
        history: vec![],
        failures: vec![],
    };
    s.guarded_put(e, &[Record::CheckpointCounter(7), pointer(5, e), Record::Status(Box::new(status))]).await.unwrap();
    let job = |lines: u64| -> JobSpec { serde_yaml::from_str(&format!("parallelism: 2\ninput: {{ generate: {{ lines: {lines} }} }}")).unwrap() };
    s.publish_job(e, &job(100)).await.unwrap();
    s.publish_job(e, &job(200)).await.unwrap();
    // Not leading: neither the write nor the spec is stored.
    assert!(matches!(s.guarded_put(e + 1000, &[Record::CheckpointCounter(99)]).await, Err(HaError::NotLeader(_))));
    let other = Store::connect(cfg, "records-other").await.unwrap();
    other.publish_job(e, &job(300)).await.unwrap();
    assert!(other.recover().await.unwrap().job.is_none(), "no leader key for that job: nothing stored");

    let r = s.recover().await.unwrap();
    assert_eq!(r.checkpoint_counter, 7);
    assert_eq!(r.checkpoint, Some(CheckpointPointer { checkpoint: 5, epoch: e, completed_ms: 0 }));
    let st = r.status.expect("the status");
    assert_eq!((st.leader.as_str(), st.epoch, st.state, st.attempt, st.restarts, st.start_ms), ("jm-a", e, JobState::Running, 3, 2, 11));
    assert_eq!(st.failure_cause.as_deref(), Some("lost taskmanager-2"));
    let stored = r.job.expect("the job spec");
    assert_eq!(stored.input.generate.as_ref().map(|g| g.lines), Some(100), "the first spec wins");
}

/// etcd killed and started again (same member, same data): the store's requests fail
/// while it is down and work again once it is back, with what was written before; a
/// store that stayed cut off would leave the job without a leader for good. (etcd-client
/// reconnects by itself after this kind of restart; the store's client rebuild is for
/// connections that do not come back, which this test does not produce.)
#[tokio::test(flavor = "multi_thread")]
async fn the_store_works_again_after_etcd_restarts() {
    let mut etcd = Etcd::start();
    let cfg = HaConfig::new(vec![etcd.url.clone()]);
    let s = Store::connect(cfg, "restart").await.unwrap();
    recovered(&s, Duration::from_secs(20), "etcd did not come up").await;
    let leader = s.campaign(&candidate("jm-a")).await.unwrap();
    s.guarded_put(leader.epoch(), &[Record::CheckpointCounter(3)]).await.unwrap();
    etcd.kill();
    assert!(s.recover().await.is_err(), "a request with etcd down fails");
    etcd.start_again();
    let r = recovered(&s, Duration::from_secs(20), "the store did not reach etcd again").await;
    assert_eq!(r.checkpoint_counter, 3, "what was written before the restart");
}

/// What a new leader reads, retried until etcd answers (at most `within`).
async fn recovered(s: &Store, within: Duration, what: &str) -> Recovered {
    let deadline = Instant::now() + within;
    loop {
        match s.recover().await {
            Ok(r) => return r,
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

