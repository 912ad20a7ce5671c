//! The master driven without I/O: a test plays the connections (events) and the
//! leadership loop (it settles each HA op as written or refused) and reads what the master
//! sends to its one taskmanager.

use super::*;
use crate::ha::{self, HaConfig, HaError, JobStatusRecord};
use crate::snapshot;
use crate::spec::JobSpec;
use crate::wire::SnapshotHandle;
use std::time::Duration;

/// A master with HA configured (no etcd is contacted: the test plays the run loop and
/// decides how each HA op ends) and one registered taskmanager, whose channel is
/// returned.
fn master(data: &std::path::Path) -> (JobMaster, mpsc::UnboundedReceiver<JmToTm>) {
    let mut jm = unregistered_master(data);
    let rx = register(&mut jm);
    (jm, rx)
}

/// [`master`] before any taskmanager registered (a leader that takes over resumes first).
fn unregistered_master(data: &std::path::Path) -> JobMaster {
    let job: JobSpec =
        serde_yaml::from_str("job_id: j\nparallelism: 1\ncheckpoint_interval: 10ms\ninput: { generate: { lines: 1000 } }").unwrap();
    let cfg = JmConfig {
        id: "jobmanager-1".into(),
        job,
        data_dir: data.to_path_buf(),
        rpc_bind: "127.0.0.1:0".into(),
        rest_bind: "127.0.0.1:0".into(),
        rpc_advertise: "127.0.0.1:1".into(),
        rest_url: "http://127.0.0.1:2".into(),
        ha: Some(HaConfig::new(vec!["http://127.0.0.1:9".into()])),
    };
    JobMaster::new(cfg, 7)
}

/// Registers taskmanager-1 (one slot); returns its channel.
fn register(jm: &mut JobMaster) -> mpsc::UnboundedReceiver<JmToTm> {
    let (tx, rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(std::future::pending::<()>()).abort_handle();
    jm.handle_event(Event::Registered { conn: 1, id: "taskmanager-1".into(), data_address: "x".into(), slots: 1, tx, reader });
    rx
}

/// Completes every queued op with `ok`, as the run loop does after a write.
fn settle(jm: &mut JobMaster, ok: bool) -> usize {
    let mut n = 0;
    while let Some(op) = jm.next_op() {
        let r = if ok { Ok(()) } else { Err(HaError::Timeout(Duration::from_secs(1))) };
        jm.op_done(op, r);
        n += 1;
    }
    n
}

fn drain(rx: &mut mpsc::UnboundedReceiver<JmToTm>) -> Vec<JmToTm> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Runs checkpoint `id` through: trigger (its id reserved), both tasks acknowledge.
fn checkpoint(jm: &mut JobMaster, rx: &mut mpsc::UnboundedReceiver<JmToTm>, id: u64) {
    jm.last_hb_sent = Instant::now() + Duration::from_secs(60); // no heartbeats in the way
    jm.ckpt.last_trigger = None;
    jm.tick();
    assert!(drain(rx).is_empty(), "a trigger went out before its id was reserved");
    settle(jm, true);
    let sent = drain(rx);
    assert!(
        sent.iter().any(|m| matches!(m, JmToTm::Trigger { checkpoint, leader_epoch: 7, .. } if *checkpoint == id)),
        "{sent:?}"
    );
    for task in [TaskId::Source(0), TaskId::Count(0)] {
        let handle = SnapshotHandle { path: format!("x/{task}"), crc32: 0, size: 1 };
        let msg = TmToJm::Ack { attempt: 1, checkpoint: id, task, handle, lines: 10, stall_us: 3000, cpu_us: 4000 };
        jm.handle_event(Event::Message { conn: 1, msg });
    }
}

#[tokio::test]
async fn sinks_hear_of_a_checkpoint_only_once_its_pointer_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, mut rx) = master(dir.path());
    assert!(matches!(drain(&mut rx).as_slice(), [JmToTm::Registered { leader_epoch: 7, .. }]));
    // The deployment goes out only after its attempt is recorded (with the status).
    let op = jm.next_op().expect("a deploy op");
    assert!(op.records.iter().any(|r| matches!(r, Record::Status(s) if s.attempt == 1)), "{:?}", op.records);
    assert!(drain(&mut rx).is_empty(), "deployed before the attempt was recorded");
    jm.op_done(op, Ok(()));
    assert!(matches!(drain(&mut rx).as_slice(), [JmToTm::Deploy(d)] if d.leader_epoch == 7 && d.attempt == 1));
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 1, restores: vec![] } });
    settle(&mut jm, true);

    // Checkpoint 1 completes on disk, but etcd cannot take its pointer: no commit.
    checkpoint(&mut jm, &mut rx, 1);
    let meta1 = snapshot::checkpoint_dir(dir.path(), "j", 1).join("_metadata");
    assert!(meta1.exists(), "_metadata is written before the pointer");
    assert!(drain(&mut rx).is_empty(), "completion sent before the pointer was published");
    settle(&mut jm, false);
    assert!(!drain(&mut rx).iter().any(|m| matches!(m, JmToTm::Complete { .. })), "completion sent for an unpublished checkpoint");
    assert!(!meta1.exists(), "an unpublished checkpoint must be discarded");
    assert_eq!(jm.ckpt.latest_id(), None);

    // Checkpoint 2 is published: now the sinks are told, under the leader's epoch.
    checkpoint(&mut jm, &mut rx, 2);
    let op = jm.next_op().expect("a publish op");
    assert!(op.records.iter().any(|r| matches!(r, Record::LatestCheckpoint(p) if p.checkpoint == 2 && p.epoch == 7)));
    jm.op_done(op, Ok(()));
    let sent = drain(&mut rx);
    assert!(sent.iter().any(|m| matches!(m, JmToTm::Complete { checkpoint: 2, leader_epoch: 7, .. })), "{sent:?}");
    assert_eq!(jm.restore_point().map(|m| m.checkpoint), None, "snapshots are fake: nothing restorable");
    assert_eq!(jm.restore_ceiling, Some(2));
    // Only the published checkpoint's cut is recorded for the verdict.
    let cuts = crate::cuts::read(&crate::cuts::path(dir.path(), "j")).unwrap();
    assert_eq!(cuts, vec![crate::cuts::Cut { checkpoint: 2, positions: vec![10] }]);
}

/// A leader deposed while a completion waits for its pointer must
/// not leave that checkpoint's `_metadata` behind.
#[tokio::test]
async fn a_deposed_leader_discards_its_unpublished_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, mut rx) = master(dir.path());
    settle(&mut jm, true);
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 1, restores: vec![] } });
    settle(&mut jm, true);
    drain(&mut rx);
    checkpoint(&mut jm, &mut rx, 1);
    let meta = snapshot::metadata_path(dir.path(), "j", 1);
    assert!(meta.exists());
    // The publish op is queued; leadership is lost before it is written.
    jm.step_down("lease lost");
    assert!(!meta.exists(), "an unpublished checkpoint survived its leader");
    assert!(crate::cuts::read(&crate::cuts::path(dir.path(), "j")).unwrap().is_empty());
}

/// A master without HA on `data`, one registered taskmanager with one slot; the job
/// wants `wait_for` taskmanagers at first.
fn master_without_ha(data: &std::path::Path, wait_for: u32) -> (JobMaster, mpsc::UnboundedReceiver<JmToTm>) {
    let yaml = format!("job_id: j\nparallelism: 1\nwait_for_taskmanagers: {wait_for}\ninput: {{ generate: {{ lines: 1000 }} }}");
    let mut jm = master_for(data, &yaml);
    let rx = register_as(&mut jm, 1, "taskmanager-1");
    (jm, rx)
}

fn deployed_attempts(jm: &mut JobMaster, rx: &mut mpsc::UnboundedReceiver<JmToTm>) -> Vec<u64> {
    settle(jm, true);
    drain(rx).into_iter().filter_map(|m| if let JmToTm::Deploy(d) = m { Some(d.attempt) } else { None }).collect()
}

/// A jobmanager restarted without HA continues the attempt numbers
/// (at-least-once part names would repeat otherwise) and does not wait for every
/// taskmanager of the cluster again (one may be dead).
#[tokio::test]
async fn a_restarted_jobmanager_without_ha_continues_attempts_and_does_not_wait_for_the_whole_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, mut rx) = master_without_ha(dir.path(), 1);
    assert_eq!(deployed_attempts(&mut first, &mut rx), vec![1]);
    drop(first);
    // The cluster has three taskmanagers; only one is alive when the jobmanager restarts.
    let (mut second, mut rx2) = master_without_ha(dir.path(), 3);
    assert_eq!(deployed_attempts(&mut second, &mut rx2), vec![2]);
}

#[tokio::test]
async fn a_new_leader_continues_ids_attempts_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, _rx) = master(dir.path());
    let rec = ha::Recovered {
        job: None,
        checkpoint: Some(CheckpointPointer { checkpoint: 12, epoch: 3, completed_ms: 0 }),
        checkpoint_counter: 14,
        status: Some(JobStatusRecord {
            leader: "jobmanager-2".into(),
            epoch: 3,
            state: JobState::Running,
            attempt: 4,
            restarts: 2,
            start_ms: 1,
            failure_cause: None,
            history: vec![StateChange { state: JobState::Running, at_ms: 1, attempt: 4, reason: "x".into() }],
            failures: vec![],
        }),
    };
    jm.resume(&rec);
    assert_eq!((jm.attempt, jm.restarts, jm.state), (4, 3, JobState::Restarting));
    assert_eq!(jm.restore_ceiling, Some(12), "restores never go past the published pointer");
    assert_eq!(jm.ckpt.trigger(4, false), 15, "checkpoint ids continue above the reserved ones");
    assert!(jm.failures.last().is_some_and(|f| f.cause.contains("took over from jobmanager-2")));
    // A finished job stays finished under the next leader (Flink's JobResultStore).
    let (mut jm2, _rx2) = master(dir.path());
    let mut done = rec.clone();
    if let Some(s) = done.status.as_mut() {
        s.state = JobState::Finished;
    }
    jm2.resume(&done);
    assert_eq!(jm2.state, JobState::Finished);
}

#[tokio::test]
async fn stepping_down_cancels_under_the_old_epoch_and_drops_taskmanagers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, mut rx) = master(dir.path());
    settle(&mut jm, true);
    drain(&mut rx);
    jm.step_down("lease lost");
    assert!(matches!(drain(&mut rx).as_slice(), [JmToTm::Cancel { leader_epoch: 7, .. }]));
    assert!(jm.tms.is_empty());
    assert!(jm.next_op().is_none_or(|op| matches!(op.then, Then::Nothing)));
}

#[tokio::test]
async fn an_adaptive_interval_starts_at_min_then_follows_the_cost_and_the_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, mut rx) = master(dir.path());
    jm.cfg.job.checkpoint_interval = crate::spec::CheckpointInterval::Adaptive(crate::spec::AdaptiveInterval {
        min: Duration::from_millis(10),
        max: Duration::from_secs(5),
        target_recovery: None,
        mtbf: Duration::from_secs(60),
    });
    jm.adaptive = jm.cfg.job.checkpoint_interval.adaptive().cloned().map(super::Adaptive::new);
    jm.adapt_interval();
    assert_eq!(jm.checkpoint_interval(), Duration::from_millis(10), "no cost measured yet: min");
    settle(&mut jm, true);
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 1, restores: Vec::new() } });
    drain(&mut rx);
    checkpoint(&mut jm, &mut rx, 1);
    settle(&mut jm, true);
    let measured = jm.checkpoint_interval();
    let info = jm.interval_info();
    let last = info.history.last().unwrap();
    assert!(info.adaptive && last.cost_ms.is_some(), "{info:?}");
    // C = the longest stall (3 ms) + the writers' CPU (4 ms from each of the two tasks)
    // over the one lane: what the checkpoint took from processing.
    assert!((last.cost_ms.unwrap() - 11.0).abs() < 1e-6, "{info:?}");
    // The test's checkpoint completes within milliseconds: sqrt(2 · C · 60 s) is between
    // min and max, or `min` when C rounds to nothing.
    assert!(measured >= Duration::from_millis(10) && measured <= Duration::from_secs(5), "{measured:?}");
    assert_eq!(info.current_ms, measured.as_millis() as u64);
    // A failure: counted once however many tasks report it, and the interval never grows.
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::TaskFailed { attempt: 1, task: TaskId::Source(0), cause: "boom".into() } });
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::TaskFailed { attempt: 1, task: TaskId::Count(0), cause: "boom".into() } });
    let info = jm.interval_info();
    assert_eq!(info.history.last().map(|p| p.failures), Some(1), "{info:?}");
    assert!(jm.checkpoint_interval() <= measured);
}

/// Checkpoint `n` of the one-pipeline job on disk, its source at `lines`, its cut
/// recorded; `corrupt`: its source snapshot then fails its checksum.
fn real_checkpoint(data: &std::path::Path, n: u64, lines: u64, corrupt: bool) -> snapshot::Metadata {
    use crate::taskmanager::{count::CountState, source::SourceState};
    let source = serde_json::to_value(SourceState { lines, ..Default::default() }).unwrap();
    let states = [(TaskId::Source(0), source), (TaskId::Count(0), serde_json::to_value(CountState::default()).unwrap())];
    let m = snapshot::write_test_checkpoint(data, "j", n, &[lines], &states);
    crate::cuts::append(&crate::cuts::path(data, "j"), &crate::cuts::Cut { checkpoint: n, positions: vec![lines] }).unwrap();
    if corrupt {
        let p = data.join(&m.tasks[0].1.path);
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 2;
        b[last] ^= 0x01;
        std::fs::write(&p, b).unwrap();
    }
    m
}

fn ack_both(jm: &mut JobMaster, attempt: u64, id: u64, lines: u64) {
    for task in [TaskId::Source(0), TaskId::Count(0)] {
        let handle = SnapshotHandle { path: format!("x/{task}"), crc32: 0, size: 1 };
        let msg = TmToJm::Ack { attempt, checkpoint: id, task, handle, lines: if task == TaskId::Source(0) { lines } else { 0 }, stall_us: 0, cpu_us: 0 };
        jm.handle_event(Event::Message { conn: 1, msg });
    }
}

/// Checkpoint 4 is corrupt: the deployment restores 3 and re-takes 4 at its recorded cut;
/// no checkpoint is triggered before 4 completed again, its cut is not recorded twice, and
/// regular ids continue at 5.
#[tokio::test]
async fn a_restore_of_an_older_checkpoint_re_takes_the_newer_completed_one_first() {
    let dir = tempfile::tempdir().unwrap();
    real_checkpoint(dir.path(), 3, 30, false);
    real_checkpoint(dir.path(), 4, 40, true);
    let (mut jm, mut rx) = master_without_ha(dir.path(), 1);
    settle(&mut jm, true);
    let d = drain(&mut rx)
        .into_iter()
        .find_map(|m| if let JmToTm::Deploy(d) = m { Some(d) } else { None })
        .expect("deployed");
    assert_eq!(d.restore.as_ref().map(|r| r.checkpoint), Some(3));
    assert_eq!(d.catch_up, vec![crate::wire::CatchUp { checkpoint: 4, positions: vec![40] }]);
    let attempt = d.attempt;
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt, restores: vec![] } });
    assert_eq!(jm.state, JobState::Running);
    jm.last_hb_sent = Instant::now() + Duration::from_secs(60);
    jm.ckpt.last_trigger = None;
    jm.tick();
    settle(&mut jm, true);
    assert!(!drain(&mut rx).iter().any(|m| matches!(m, JmToTm::Trigger { .. })), "a checkpoint triggered during the catch-up");
    ack_both(&mut jm, attempt, 4, 40);
    settle(&mut jm, true);
    let sent = drain(&mut rx);
    assert!(sent.iter().any(|m| matches!(m, JmToTm::Complete { checkpoint: 4, .. })), "{sent:?}");
    let cuts = crate::cuts::read(&crate::cuts::path(dir.path(), "j")).unwrap();
    assert_eq!(cuts.iter().map(|c| c.checkpoint).collect::<Vec<_>>(), vec![3, 4], "one line per checkpoint");
    assert!(snapshot::load_metadata(dir.path(), "j", 4).unwrap().trigger_ms > 0, "a fresh _metadata replaced the old one");
    jm.ckpt.last_trigger = None;
    jm.tick();
    settle(&mut jm, true);
    let sent = drain(&mut rx);
    assert!(sent.iter().any(|m| matches!(m, JmToTm::Trigger { checkpoint: 5, .. })), "{sent:?}");
}

/// A declined catch-up checkpoint fails the attempt (it cannot be skipped), and the next
/// attempt re-takes it again.
#[tokio::test]
async fn a_declined_catch_up_checkpoint_fails_the_attempt_and_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    real_checkpoint(dir.path(), 3, 30, false);
    real_checkpoint(dir.path(), 4, 40, true);
    let (mut jm, mut rx) = master_without_ha(dir.path(), 1);
    jm.cfg.job.restart = serde_yaml::from_str("{ strategy: fixed-delay, attempts: 5, delay: 0ms }").unwrap();
    jm.restart = crate::restart::RestartTracker::new(jm.cfg.job.restart.clone(), api::now_ms());
    settle(&mut jm, true);
    drain(&mut rx);
    let attempt = jm.attempt;
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt, restores: vec![] } });
    let msg = TmToJm::Decline { attempt, checkpoint: 4, task: TaskId::Count(0), reason: "disk full".into() };
    jm.handle_event(Event::Message { conn: 1, msg });
    assert!(jm.failure_cause.as_deref().is_some_and(|c| c.contains("declined catch-up checkpoint 4")), "{:?}", jm.failure_cause);
    jm.tick();
    settle(&mut jm, true);
    let d = drain(&mut rx).into_iter().find_map(|m| if let JmToTm::Deploy(d) = m { Some(d) } else { None }).expect("redeployed");
    assert_eq!((d.attempt, d.catch_up.len()), (attempt + 1, 1));
}

/// HA: checkpoints 4 and 5 are corrupt and 5 is the published pointer. Re-taking 4 must
/// not move the pointer back to 4 (it is written again as it is, under this leader's
/// fence); re-taking 5 publishes 5 under this leader.
#[tokio::test]
async fn a_catch_up_never_moves_the_published_pointer_back() {
    let dir = tempfile::tempdir().unwrap();
    real_checkpoint(dir.path(), 3, 30, false);
    real_checkpoint(dir.path(), 4, 40, true);
    real_checkpoint(dir.path(), 5, 50, true);
    let mut jm = unregistered_master(dir.path());
    let published = CheckpointPointer { checkpoint: 5, epoch: 3, completed_ms: 11 };
    let rec = ha::Recovered {
        job: None,
        checkpoint: Some(published),
        checkpoint_counter: 6,
        status: Some(JobStatusRecord {
            leader: "jobmanager-2".into(),
            epoch: 3,
            state: JobState::Running,
            attempt: 4,
            restarts: 0,
            start_ms: 1,
            failure_cause: None,
            history: vec![],
            failures: vec![],
        }),
    };
    jm.resume(&rec);
    let mut rx = register(&mut jm);
    settle(&mut jm, true);
    let d = drain(&mut rx).into_iter().find_map(|m| if let JmToTm::Deploy(d) = m { Some(d) } else { None }).expect("deployed");
    assert_eq!(d.restore.as_ref().map(|r| r.checkpoint), Some(3));
    assert_eq!(d.catch_up.iter().map(|c| c.checkpoint).collect::<Vec<_>>(), vec![4, 5]);
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 5, restores: vec![] } });
    settle(&mut jm, true);
    ack_both(&mut jm, 5, 4, 40);
    let op = jm.next_op().expect("a publish op for 4");
    let pointers: Vec<CheckpointPointer> =
        op.records.iter().filter_map(|r| if let Record::LatestCheckpoint(p) = r { Some(*p) } else { None }).collect();
    assert_eq!(pointers, vec![published], "the pointer stays at 5");
    jm.op_done(op, Ok(()));
    assert!(drain(&mut rx).iter().any(|m| matches!(m, JmToTm::Complete { checkpoint: 4, leader_epoch: 7, .. })));
    ack_both(&mut jm, 5, 5, 50);
    let op = jm.next_op().expect("a publish op for 5");
    assert!(op.records.iter().any(|r| matches!(r, Record::LatestCheckpoint(p) if p.checkpoint == 5 && p.epoch == 7)), "{:?}", op.records);
    jm.op_done(op, Ok(()));
    assert_eq!(jm.ckpt.trigger(5, false), 7, "regular ids continue above the reserved ones");
}

/// Checking the checkpoint to restore reads every snapshot in it: seconds on remote-like
/// storage. The master must go on heartbeating meanwhile (it used to stall its loop, so
/// every taskmanager was declared lost at every restart) and deploy once the check is done.
/// Here the snapshot is a FIFO: reading it blocks until the test writes it.
#[tokio::test]
async fn the_master_heartbeats_while_the_restore_point_is_checked() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let m = real_checkpoint(data, 3, 42, false);
    let h = m.tasks[0].1.clone(); // the source's snapshot
    let path = data.join(&h.path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // The snapshot's bytes go in when the test says so, or after 5 s whatever happens: a
    // master that blocks on the read must fail this test, not hang it.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let _ = wait.recv_timeout(Duration::from_secs(5));
        std::fs::write(&path, &bytes).unwrap();
    });

    let (mut jm, mut rx) = master_without_ha(data, 1);
    assert!(jm.next_op().is_none(), "deployed before the restore point was checked");
    jm.last_hb_sent = Instant::now() - Duration::from_secs(60);
    jm.tick();
    let sent = drain(&mut rx);
    assert!(sent.iter().any(|m| matches!(m, JmToTm::Heartbeat)), "no heartbeat while checking: {sent:?}");
    assert!(jm.next_op().is_none(), "deployed before the restore point was checked");

    go.send(()).unwrap();
    writer.join().unwrap();
    let op = (0..500)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            jm.tick();
            jm.next_op()
        })
        .expect("deployed once the check was done");
    jm.op_done(op, Ok(()));
    let deploy = drain(&mut rx).into_iter().find_map(|m| match m {
        JmToTm::Deploy(d) => Some(d),
        _ => None,
    });
    let d = deploy.expect("a deployment");
    assert_eq!((d.attempt, d.restore.map(|r| r.checkpoint)), (1, Some(3)));
    assert_eq!(jm.source_lines.get(&0), Some(&42), "the restored source position");
}

fn recorded(attempt: u64, state: JobState) -> ha::Recovered {
    ha::Recovered {
        job: None,
        checkpoint: None,
        checkpoint_counter: 0,
        status: Some(JobStatusRecord {
            leader: "jobmanager-2".into(),
            epoch: 3,
            state,
            attempt,
            restarts: 0,
            start_ms: 1,
            failure_cause: Some("recorded cause".into()),
            history: vec![],
            failures: vec![],
        }),
    }
}

/// What a new leader resumes depends on what the old one recorded: a status from before
/// any deployment (attempt 0, CREATED) is no failover; one that carries the attempt about
/// to be deployed (still CREATED: its deployments may be out) is; and a leader whose own
/// start failed (its input is missing) stays FAILED with its own reason.
#[tokio::test]
async fn a_new_leader_restarts_only_a_job_that_was_deployed_and_keeps_its_own_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut never = unregistered_master(dir.path());
    never.resume(&recorded(0, JobState::Created));
    assert_eq!((never.state, never.restarts), (JobState::Created, 0));
    assert!(never.failures.is_empty());

    let mut recorded_attempt = unregistered_master(dir.path());
    recorded_attempt.resume(&recorded(1, JobState::Created));
    assert_eq!((recorded_attempt.state, recorded_attempt.restarts, recorded_attempt.attempt), (JobState::Restarting, 1, 1));

    let mut failed = unregistered_master(dir.path());
    failed.state = JobState::Failed;
    failed.failure_cause = Some("cannot open input file".into());
    failed.resume(&recorded(2, JobState::Running));
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.failure_cause.as_deref(), Some("cannot open input file"));
}

/// A deployed, running master with no heartbeat due for a minute.
fn running_master(data: &std::path::Path) -> (JobMaster, mpsc::UnboundedReceiver<JmToTm>) {
    let (mut jm, mut rx) = master(data);
    settle(&mut jm, true);
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 1, restores: vec![] } });
    settle(&mut jm, true);
    drain(&mut rx);
    jm.last_hb_sent = Instant::now() + Duration::from_secs(60);
    (jm, rx)
}

fn triggered(op: &HaOp) -> u64 {
    match op.then {
        Then::Trigger { checkpoint, .. } => checkpoint,
        _ => panic!("not a trigger: {op:?}"),
    }
}

/// A checkpoint whose id cannot be reserved is aborted and never triggered; a reservation
/// that lands after its checkpoint was aborted (and the next one triggered) sends no stale
/// trigger.
#[tokio::test]
async fn only_the_pending_checkpoint_is_triggered_once_its_id_is_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, mut rx) = running_master(dir.path());
    jm.ckpt.last_trigger = None;
    jm.tick();
    assert!(jm.ckpt.pending.is_some());
    settle(&mut jm, false);
    assert!(jm.ckpt.pending.is_none(), "a checkpoint whose id could not be reserved is aborted");
    assert!(!drain(&mut rx).iter().any(|m| matches!(m, JmToTm::Trigger { .. })));

    jm.ckpt.last_trigger = None;
    jm.tick();
    let stale = jm.next_op().expect("a reservation");
    jm.ckpt.abort("timed out");
    jm.ckpt.last_trigger = None;
    jm.tick();
    let fresh = jm.next_op().expect("the next reservation");
    let (stale_id, fresh_id) = (triggered(&stale), triggered(&fresh));
    assert!(fresh_id > stale_id);
    jm.op_done(stale, Ok(()));
    jm.op_done(fresh, Ok(()));
    let sent: Vec<u64> = drain(&mut rx).into_iter().filter_map(|m| if let JmToTm::Trigger { checkpoint, .. } = m { Some(checkpoint) } else { None }).collect();
    assert_eq!(sent, vec![fresh_id]);
}

/// A deployment goes out only once its attempt is recorded: a refused record is retried
/// after a delay (not in a busy loop against an unavailable etcd), and an attempt that
/// failed while its record was being written is not sent at all.
#[tokio::test]
async fn a_deployment_goes_out_only_for_the_live_attempt_once_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, mut rx) = master(dir.path());
    drain(&mut rx);
    let op = jm.next_op().expect("the first deployment");
    jm.op_done(op, Err(HaError::Timeout(Duration::from_secs(1))));
    assert!(!drain(&mut rx).iter().any(|m| matches!(m, JmToTm::Deploy(_))));
    assert!(jm.restart_at.is_some_and(|t| t > Instant::now()), "retried after a delay");

    jm.restart_at = None;
    jm.last_hb_sent = Instant::now() + Duration::from_secs(60);
    jm.tick();
    let op = jm.next_op().expect("the deployment again");
    jm.fail(Some("taskmanager-1".into()), "lost taskmanager-1".into());
    jm.op_done(op, Ok(()));
    assert!(!drain(&mut rx).iter().any(|m| matches!(m, JmToTm::Deploy(_))), "a failed attempt's deployment was sent");
}

/// The published pointer follows every newer published checkpoint, and the final
/// checkpoint of the live attempt is the one the job finishes on.
#[tokio::test]
async fn the_pointer_moves_forward_and_the_final_checkpoint_finishes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, mut rx) = running_master(dir.path());
    checkpoint(&mut jm, &mut rx, 1);
    settle(&mut jm, true);
    drain(&mut rx);
    assert_eq!(jm.published.map(|p| p.checkpoint), Some(1));
    checkpoint(&mut jm, &mut rx, 2);
    settle(&mut jm, true);
    drain(&mut rx);
    assert_eq!(jm.published.map(|p| p.checkpoint), Some(2));
    assert_eq!(jm.final_checkpoint, None);

    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::SourceEnded { attempt: 1, subtask: 0, lines: 10 } });
    // All sources ended: the final checkpoint is triggered at once.
    jm.tick();
    assert!(drain(&mut rx).is_empty(), "a trigger went out before its id was reserved");
    settle(&mut jm, true);
    let sent = drain(&mut rx);
    assert!(sent.iter().any(|m| matches!(m, JmToTm::Trigger { checkpoint: 3, .. })), "{sent:?}");
    ack_both(&mut jm, 1, 3, 10);
    settle(&mut jm, true);
    assert_eq!(jm.final_checkpoint, Some(3));
}

/// A catch-up checkpoint whose cut line is missing (its first append failed) gets it
/// now; one whose line is there does not get a second.
#[tokio::test]
async fn a_catch_up_checkpoint_records_its_cut_only_when_it_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    real_checkpoint(dir.path(), 3, 30, false);
    real_checkpoint(dir.path(), 4, 40, true);
    let cuts_path = crate::cuts::path(dir.path(), "j");
    std::fs::remove_file(&cuts_path).unwrap();
    crate::cuts::append(&cuts_path, &crate::cuts::Cut { checkpoint: 3, positions: vec![30] }).unwrap();
    let (mut jm, mut rx) = master_without_ha(dir.path(), 1);
    settle(&mut jm, true);
    drain(&mut rx);
    let attempt = jm.attempt;
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt, restores: vec![] } });
    ack_both(&mut jm, attempt, 4, 40);
    settle(&mut jm, true);
    let cuts = crate::cuts::read(&cuts_path).unwrap();
    assert_eq!(cuts.iter().map(|c| (c.checkpoint, c.positions.clone())).collect::<Vec<_>>(), vec![(3, vec![30]), (4, vec![40])]);
}

/// HA: a catch-up checkpoint that cannot be published fails the attempt (regular
/// checkpoints must not follow an unfinished catch-up); the next attempt redoes it.
#[tokio::test]
async fn an_unpublished_catch_up_checkpoint_fails_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    real_checkpoint(dir.path(), 3, 30, false);
    real_checkpoint(dir.path(), 4, 40, true);
    let (mut jm, mut rx) = master(dir.path());
    settle(&mut jm, true);
    let d = drain(&mut rx).into_iter().find_map(|m| if let JmToTm::Deploy(d) = m { Some(d) } else { None }).expect("deployed");
    let first = d.catch_up.first().expect("a catch-up checkpoint").clone();
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: d.attempt, restores: vec![] } });
    settle(&mut jm, true);
    ack_both(&mut jm, d.attempt, first.checkpoint, first.positions[0]);
    // Refused once (settling every op as refused would not end: a refused status write
    // is retried).
    let op = jm.next_op().expect("the catch-up checkpoint's publication");
    jm.op_done(op, Err(HaError::Timeout(Duration::from_secs(1))));
    assert_eq!(jm.state, JobState::Restarting);
    let why = format!("catch-up checkpoint {} could not be published", first.checkpoint);
    assert!(jm.failure_cause.as_deref().is_some_and(|c| c.contains(&why)), "{:?}", jm.failure_cause);
}

/// A master without HA for `yaml`, with no taskmanager registered.
fn master_for(data: &std::path::Path, yaml: &str) -> JobMaster {
    let cfg = JmConfig {
        id: "jobmanager-1".into(),
        job: serde_yaml::from_str(yaml).unwrap(),
        data_dir: data.to_path_buf(),
        rpc_bind: "127.0.0.1:0".into(),
        rest_bind: "127.0.0.1:0".into(),
        rpc_advertise: "127.0.0.1:1".into(),
        rest_url: "http://127.0.0.1:2".into(),
        ha: None,
    };
    JobMaster::new(cfg, 1)
}

fn register_as(jm: &mut JobMaster, conn: u64, id: &str) -> mpsc::UnboundedReceiver<JmToTm> {
    let (tx, rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(std::future::pending::<()>()).abort_handle();
    jm.handle_event(Event::Registered { conn, id: id.into(), data_address: "x".into(), slots: 1, tx, reader });
    rx
}

/// A deployment waits for a free slot for every pipeline, and a restart for its delay.
#[tokio::test]
async fn a_deployment_waits_for_enough_slots_and_a_restart_for_its_delay() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "job_id: j\nparallelism: 2\nwait_for_taskmanagers: 1\n\
                restart: { strategy: fixed-delay, attempts: 5, delay: 10s }\ninput: { generate: { lines: 1000 } }";
    let mut jm = master_for(dir.path(), yaml);
    let _one = register_as(&mut jm, 1, "taskmanager-1");
    jm.tick();
    assert!(jm.next_op().is_none(), "deployed two pipelines on one slot");
    let _two = register_as(&mut jm, 2, "taskmanager-2");
    jm.tick();
    let op = jm.next_op().expect("deployed once two slots are there");
    jm.op_done(op, Ok(()));
    assert_eq!(jm.attempt, 1);
    jm.fail(Some("taskmanager-2".into()), "task failed".into());
    assert_eq!(jm.state, JobState::Restarting);
    jm.tick();
    assert!(jm.next_op().is_none(), "redeployed before the restart delay of 10 s");
    assert_eq!(jm.attempt, 1);
}
