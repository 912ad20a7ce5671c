//! The whole run loop against a recording runtime and a scripted job: no Docker, no
//! processes. The job replays a script of state changes, each at a time after its start
//! or after a call of the runtime (so a kill is noticed after the kill, however slow the
//! machine); every answer while RUNNING completes a checkpoint and commits output.
//! The tests assert on the calls the loop made and on what it reported.

use std::path::Path;
use std::time::Duration;

use streamd_contract::api::{CheckpointsInfo, FailureEvent, JobDetails, JobState, StateChange};

use super::*;
use crate::client::ClientError;
use crate::runtime::fake::{Calls, Recorder};

/// When a step of the script happens.
#[derive(Clone, Copy)]
enum When {
    /// This many ms after the job's start.
    At(u64),
    /// This many ms after the first runtime call containing the text.
    After(&'static str, u64),
}

/// One state change, and the failure the jobmanager reports with it.
#[derive(Clone, Copy)]
struct Step {
    when: When,
    state: JobState,
    /// A taskmanager the jobmanager lost at this step.
    lost: Option<&'static str>,
}

fn step(when: When, state: JobState) -> Step {
    Step { when, state, lost: None }
}

struct ScriptedJob {
    start_ms: u64,
    calls: Calls,
    script: Vec<Step>,
    /// Answers given while RUNNING: each one a checkpoint and a commit.
    progress: u64,
    asked: usize,
}

impl ScriptedJob {
    fn new(rt: &Recorder, script: Vec<Step>) -> ScriptedJob {
        ScriptedJob { start_ms: now_ms(), calls: rt.log_handle(), script, progress: 0, asked: 0 }
    }

    /// The steps that have happened by `now`, in time order, with their times.
    fn happened(&self, now: u64) -> Vec<(u64, Step)> {
        let calls = self.calls.lock().unwrap();
        let mut out: Vec<(u64, Step)> = self
            .script
            .iter()
            .filter_map(|s| {
                let at = match s.when {
                    When::At(ms) => Some(self.start_ms + ms),
                    When::After(text, ms) => calls.iter().find(|c| c.what.contains(text)).map(|c| c.at_ms + ms),
                };
                at.filter(|&t| t <= now).map(|t| (t, *s))
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out
    }
}

impl JobSource for ScriptedJob {
    async fn job(&mut self) -> Result<JobDetails, ClientError> {
        self.asked += 1;
        let now = now_ms();
        let (mut history, mut failures, mut attempt) = (Vec::new(), Vec::new(), 1);
        for (at_ms, s) in self.happened(now) {
            // A restart's RUNNING is a new attempt.
            if s.state == JobState::Running && history.last().is_some_and(|h: &StateChange| h.state == JobState::Restarting) {
                attempt += 1;
            }
            if let Some(tm) = s.lost {
                failures.push(FailureEvent { at_ms, attempt, taskmanager: Some(tm.into()), jobmanager: None, cause: "lost".into() });
            }
            history.push(StateChange { state: s.state, at_ms, attempt, reason: format!("{:?}", s.state) });
        }
        let state = history.last().map_or(JobState::Created, |h| h.state);
        if state == JobState::Running {
            self.progress += 1;
        }
        let p = self.progress;
        Ok(JobDetails {
            id: "wordcount".into(),
            state,
            attempt,
            restarts: attempt - 1,
            parallelism: 2,
            records_in: p * 100,
            records_out: p * 800,
            input_lines: None,
            last_completed_checkpoint: (p > 0).then_some(p),
            checkpoints_completed: p,
            failure_cause: (state == JobState::Failed).then(|| "scripted".into()),
            start_ms: self.start_ms,
            history,
            failures,
            now_ms: now,
            restores: Vec::new(),
        })
    }

    async fn checkpoints(&self) -> Result<CheckpointsInfo, ClientError> {
        Ok(CheckpointsInfo { completed: Vec::new(), completed_total: 0, failed_total: 0, in_progress: None, latest: None, restored: None })
    }

    fn tasks_placed(&self) -> bool {
        true
    }

    fn committed(&self) -> std::io::Result<u64> {
        Ok(self.progress)
    }

    async fn track_leader<R: Runtime>(&mut self, _: &R) {}

    async fn follow_leader<R: Runtime>(&mut self, _: &R) {}
}

/// A plan with `faults` (YAML list items) and `expect` (YAML mapping body).
fn plan(faults: &str, expect: &str) -> Plan {
    let text = format!(
        "name: loop\ncluster: {{ taskmanagers: 3, slots: 2 }}\njob: {{ parallelism: 4 }}\n\
         input: {{ generate: {{ lines: 1000 }} }}\nfaults:\n{faults}\nexpect: {expect}\n"
    );
    crate::scenario::parse_str(&text, Path::new("scenarios/loop.yaml"), None).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Runs the loop; `interrupt_after`: a Ctrl-C that long after the start.
async fn run(rt: &Recorder, plan: &Plan, job: &mut ScriptedJob, interrupt_after: Option<Duration>) -> (Result<Driven, ChaosError>, RunReport) {
    let progress = Progress::hidden();
    let env = Env { rt, nf: None, plan, progress: &progress, flink: None, feed: None, run_dir: std::path::Path::new("/nonexistent") };
    let interrupt = async move {
        match interrupt_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let mut rep = RunReport::default();
    let r = drive(&env, job, interrupt, &mut rep).await;
    (r, rep)
}

fn kinds(rep: &RunReport) -> Vec<EventKind> {
    rep.timeline.events.iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn a_kill_fires_at_its_time_and_its_recovery_is_measured() {
    let rt = Recorder::default();
    let plan = plan("  - { at: 300ms, action: kill, target: taskmanager-2 }", "{ recovery_within: 3s, timeout: 10s }");
    let mut job = ScriptedJob::new(
        &rt,
        vec![
            step(When::At(0), JobState::Running),
            Step { when: When::After("kill", 20), state: JobState::Restarting, lost: Some("taskmanager-2") },
            step(When::After("kill", 150), JobState::Running),
            step(When::After("kill", 700), JobState::Finished),
        ],
    );
    let (r, rep) = run(&rt, &plan, &mut job, None).await;
    let driven = r.unwrap();
    assert_eq!(rt.calls(), ["kill SIGKILL taskmanager-2"]);
    assert!(driven.failures.is_empty(), "{:?}", driven.failures);
    assert!(driven.fault_effective.as_ref().is_some_and(|c| c.ok), "{:?}", driven.fault_effective);
    let f = &rep.faults[0];
    assert_eq!((f.action.as_str(), f.target.as_str()), ("kill", "taskmanager-2"));
    // Fired at its time (the loop ticks every 100 ms), never before.
    let applied = f.applied_ms.unwrap();
    assert!((300..1_000).contains(&applied), "applied at {applied} ms");
    // The script's times count from the runtime's call, a moment after `applied`.
    assert!(f.detected_ms.is_some_and(|d| (20..40).contains(&(d - applied))), "{f:?}");
    assert!(f.running_ms.is_some_and(|d| (150..170).contains(&(d - applied))), "{f:?}");
    assert!(f.recovery_ms.is_some_and(|r| r >= 150), "{f:?}");
    assert_eq!(f.undone_ms, None, "a kill has nothing to undo");
    assert_eq!(rep.final_state.as_deref(), Some("FINISHED"));
    assert_eq!(rep.restarts, 1);
    assert_eq!(kinds(&rep), [EventKind::Running, EventKind::Fault, EventKind::Restart, EventKind::Running]);
    assert!(rep.timeline.samples.len() >= 5, "sampled every tick: {}", rep.timeline.samples.len());
}

#[tokio::test]
async fn a_pause_is_undone_after_its_for_and_the_undo_is_recorded() {
    let rt = Recorder::default();
    let plan = plan("  - { at: 200ms, action: pause, target: taskmanager-1, for: 300ms }", "{ recovery_within: 3s, timeout: 10s }");
    let mut job = ScriptedJob::new(&rt, vec![step(When::At(0), JobState::Running), step(When::After("unpause", 500), JobState::Finished)]);
    let (r, rep) = run(&rt, &plan, &mut job, None).await;
    let driven = r.unwrap();
    assert_eq!(rt.calls(), ["pause taskmanager-1", "unpause taskmanager-1"]);
    let f = &rep.faults[0];
    let held = f.undone_ms.unwrap() - f.applied_ms.unwrap();
    assert!((300..700).contains(&held), "held {held} ms");
    assert!(driven.failures.is_empty(), "{:?}", driven.failures);
    assert_eq!(kinds(&rep), [EventKind::Running, EventKind::Fault, EventKind::Undo]);
}

#[tokio::test]
async fn a_fault_after_the_job_finished_fires_and_is_reported_as_testing_nothing() {
    let rt = Recorder::default();
    let plan = plan("  - { at: 400ms, action: kill, target: taskmanager-2 }", "{ recovery_within: 5s, timeout: 10s }");
    let mut job = ScriptedJob::new(&rt, vec![step(When::At(0), JobState::Running), step(When::At(100), JobState::Finished)]);
    let (r, rep) = run(&rt, &plan, &mut job, None).await;
    let driven = r.unwrap();
    // The run waits for the fault (a FINISHED job does not end it early), fires it, ends.
    assert_eq!(rt.calls(), ["kill SIGKILL taskmanager-2"]);
    let check = driven.fault_effective.expect("a fault to judge");
    assert!(!check.ok);
    assert!(check.details.contains("the job was already FINISHED (at 100 ms)"), "{}", check.details);
    assert!(driven.failures.is_empty(), "no recovery failure for a fault that tested nothing: {:?}", driven.failures);
    assert_eq!(rep.faults[0].recovery_ms, None);
}

#[tokio::test]
async fn ctrl_c_undoes_what_is_applied_and_ends_the_run_as_interrupted() {
    let rt = Recorder::default();
    let plan = plan(
        "  - { at: 100ms, action: pause, target: taskmanager-3, for: 30s }\n  - { at: 5s, action: kill, target: taskmanager-1 }",
        "{ timeout: 60s }",
    );
    let mut job = ScriptedJob::new(&rt, vec![step(When::At(0), JobState::Running)]);
    let t = std::time::Instant::now();
    let (r, _) = run(&rt, &plan, &mut job, Some(Duration::from_millis(600))).await;
    assert!(matches!(r, Err(ChaosError::Interrupted)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "ended at Ctrl-C, not at the pause's end");
    // The pause is taken back; the later kill never fires.
    assert_eq!(rt.calls(), ["pause taskmanager-3", "unpause taskmanager-3"]);
}

#[tokio::test]
async fn the_timeout_ends_the_run_with_a_failure_and_undoes_what_is_applied() {
    let rt = Recorder::default();
    let plan = plan("  - { at: 100ms, action: pause, target: taskmanager-2, for: 30s }", "{ recovery_within: 500ms, timeout: 800ms }");
    let mut job = ScriptedJob::new(&rt, vec![step(When::At(0), JobState::Running)]);
    let (r, rep) = run(&rt, &plan, &mut job, None).await;
    let driven = r.unwrap();
    assert_eq!(rt.calls(), ["pause taskmanager-2", "unpause taskmanager-2"]);
    assert_eq!(driven.failures[0].0, "timeout");
    assert!(driven.failures[0].1.contains("not FINISHED within 800ms (state Some(Running))"), "{:?}", driven.failures);
    assert_eq!(rep.final_state.as_deref(), Some("RUNNING"));
}

#[tokio::test]
async fn a_failed_job_ends_the_run_and_a_refused_fault_is_a_failure() {
    let rt = Recorder::refusing("taskmanager-2");
    let plan = plan("  - { at: 100ms, action: kill, target: taskmanager-2 }", "{ recovery_within: 5s, timeout: 10s }");
    let mut job = ScriptedJob::new(&rt, vec![step(When::At(0), JobState::Running), step(When::At(500), JobState::Failed)]);
    let (r, rep) = run(&rt, &plan, &mut job, None).await;
    let driven = r.unwrap();
    assert!(rt.calls().is_empty());
    let checks: Vec<&str> = driven.failures.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(checks, ["faults", "job"], "{:?}", driven.failures);
    assert!(rep.faults[0].error.as_deref().is_some_and(|e| e.contains("not running")), "{:?}", rep.faults[0]);
    assert_eq!(driven.fault_effective.map(|c| c.ok), None, "a fault never applied is judged by its error, not here");
    assert_eq!(rep.final_state.as_deref(), Some("FAILED"));
}

#[tokio::test]
async fn a_job_that_fails_at_start_is_an_error_before_any_fault() {
    let rt = Recorder::default();
    let plan = plan("  - { at: 0s, action: kill, target: taskmanager-2 }", "{ recovery_within: 5s, timeout: 10s }");
    let mut job = ScriptedJob::new(&rt, vec![step(When::At(0), JobState::Failed)]);
    let (r, _) = run(&rt, &plan, &mut job, None).await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("FAILED at start"), "{e}");
    assert!(rt.calls().is_empty());
    assert_eq!(job.asked, 1);
}
