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
    let mut jm = JobMaster::new(cfg, 7);
    let (tx, rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(std::future::pending::<()>()).abort_handle();
    jm.handle_event(Event::Registered { conn: 1, id: "taskmanager-1".into(), data_address: "x".into(), slots: 1, tx, reader });
    (jm, rx)
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
        let msg = TmToJm::Ack { attempt: 1, checkpoint: id, task, handle, lines: 10 };
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
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 1 } });
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

/// Issue 10, item 7: a leader deposed while a completion waits for its pointer must
/// not leave that checkpoint's `_metadata` behind.
#[tokio::test]
async fn a_deposed_leader_discards_its_unpublished_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (mut jm, mut rx) = master(dir.path());
    settle(&mut jm, true);
    jm.handle_event(Event::Message { conn: 1, msg: TmToJm::Deployed { attempt: 1 } });
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
    let cfg = JmConfig {
        id: "jobmanager-1".into(),
        job: serde_yaml::from_str(&yaml).unwrap(),
        data_dir: data.to_path_buf(),
        rpc_bind: "127.0.0.1:0".into(),
        rest_bind: "127.0.0.1:0".into(),
        rpc_advertise: "127.0.0.1:1".into(),
        rest_url: "http://127.0.0.1:2".into(),
        ha: None,
    };
    let mut jm = JobMaster::new(cfg, 1);
    let (tx, rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(std::future::pending::<()>()).abort_handle();
    jm.handle_event(Event::Registered { conn: 1, id: "taskmanager-1".into(), data_address: "x".into(), slots: 1, tx, reader });
    (jm, rx)
}

fn deployed_attempts(jm: &mut JobMaster, rx: &mut mpsc::UnboundedReceiver<JmToTm>) -> Vec<u64> {
    settle(jm, true);
    drain(rx).into_iter().filter_map(|m| if let JmToTm::Deploy(d) = m { Some(d.attempt) } else { None }).collect()
}

/// Issue 10, item 6: a jobmanager restarted without HA continues the attempt numbers
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
