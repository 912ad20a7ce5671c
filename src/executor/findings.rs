//! What the run found about its faults, after the loop: one report row per fault (with
//! the timings of [`super::recovery`]), the run failures they cause (a fault not recovered
//! within `recovery_within`, a FAILED job, a timeout), the `fault_effective` check (a
//! fault that hit no running job tested nothing), and the job's own events for the
//! timeline. Pure: the loop hands over what it did and saw.

use std::time::Duration;

use streamd_contract::api::{CheckpointsInfo, JobDetails, JobState};

use super::recovery::{recovery, Applied, JobAtFault, Recovery, Sample};
use crate::netfault::Reconciled;
use crate::report::{EventKind, FaultReport, TimelineEvent};
use crate::scenario::{Action, PlannedFault};
use crate::verdict::Check;

/// A run failure: the check it fails and why.
pub type Failure = (String, String);

/// What the loop did with one fault of the plan.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub planned: PlannedFault,
    /// The nodes it was applied to (`leader` resolved).
    pub targets: Vec<String>,
    /// When the call that applied it was issued (wall-clock ms); `None`: not applied.
    pub applied_ms: Option<u64>,
    pub inject_latency_ms: Option<u64>,
    pub undone_ms: Option<u64>,
    /// The highest input position seen before it.
    pub records_before: u64,
    /// Why it could not be applied (or undone).
    pub error: Option<String>,
    /// Network faults: their undo-journal ids (to match reconcile outcomes).
    pub net_ids: Vec<String>,
    /// Network faults: the effect measured while it held.
    pub measured: Option<serde_json::Value>,
}

impl FaultRecord {
    pub fn new(planned: &PlannedFault) -> FaultRecord {
        FaultRecord {
            planned: planned.clone(),
            targets: Vec::new(),
            applied_ms: None,
            inject_latency_ms: None,
            undone_ms: None,
            records_before: 0,
            error: None,
            net_ids: Vec::new(),
            measured: None,
        }
    }

    /// `kill taskmanager-2`: how the progress line and the timeline name it.
    pub fn label(&self) -> String {
        format!("{} {}", self.planned.action.name(), self.targets.join(","))
    }
}

/// The faults' verdicts.
#[derive(Debug, Default)]
pub struct Findings {
    pub reports: Vec<FaultReport>,
    pub failures: Vec<Failure>,
    /// `None` when no fault was there to judge (none applied, or only restoring ones).
    pub effective: Option<Check>,
}

/// Judges every fault against the job's final answer `job` and the loop's `samples`
/// (`t0`: the job's first RUNNING, wall-clock ms).
pub fn judge_faults(
    faults: &[FaultRecord],
    reconciled: &[Reconciled],
    job: &JobDetails,
    samples: &[Sample],
    t0: u64,
    recovery_within: Duration,
) -> Findings {
    let mut out = Findings::default();
    if job.state == JobState::Failed {
        out.failures.push(("job".into(), format!("the job FAILED: {}", job.failure_cause.clone().unwrap_or_default())));
    }
    let mut ineffective: Vec<String> = Vec::new();
    let mut judged = 0usize;
    for f in faults {
        let mut fr = report_row(f, reconciled);
        if let Some(a) = f.applied_ms {
            let r = recovery(&applied_facts(f, a, faults), &job.history, &job.failures, samples);
            let rel = |t: Option<u64>| t.map(|t| t.saturating_sub(t0));
            fr.applied_ms = rel(Some(a));
            fr.undone_ms = rel(f.undone_ms);
            fr.detected_ms = rel(r.detected_ms);
            fr.running_ms = rel(r.running_ms);
            fr.caught_up_ms = rel(r.caught_up_ms);
            fr.recovery_ms = r.recovered_ms.map(|t| t.saturating_sub(a));
            // Restoring actions (start, unpause) are not tests of their own.
            if !matches!(f.planned.action, Action::Start | Action::Unpause) {
                judged += 1;
                let label = format!("{} {} at {} ms", fr.action, fr.target, a.saturating_sub(t0));
                match missed(&r, t0) {
                    Some(why) => ineffective.push(format!("{label}: {why}")),
                    None => out.failures.extend(not_recovered(f, &fr, &r, a, recovery_within)),
                }
            }
        }
        out.reports.push(fr);
    }
    out.effective = effective(judged, &ineffective);
    out
}

/// The row of the report before the timings: what, where, when planned, the measured
/// effect (with what reconciling did to its rules).
fn report_row(f: &FaultRecord, reconciled: &[Reconciled]) -> FaultReport {
    let notes: Vec<&Reconciled> = reconciled.iter().filter(|r| f.net_ids.contains(&r.fault)).collect();
    let measured = match notes.is_empty() {
        true => f.measured.clone(),
        false => Some(serde_json::json!({ "probe": f.measured, "reconciled": notes })),
    };
    FaultReport {
        measured,
        action: f.planned.action.name().to_string(),
        target: f.targets.join(","),
        at: f.planned.trigger.to_string(),
        error: f.error.clone(),
        inject_latency_ms: f.inject_latency_ms,
        ..FaultReport::default()
    }
}

/// The facts recovery needs of fault `f` applied at `a`: later faults on the same nodes
/// (their failures are theirs), and of any kind.
fn applied_facts<'a>(f: &'a FaultRecord, a: u64, all: &[FaultRecord]) -> Applied<'a> {
    let later = || all.iter().filter_map(|g| g.applied_ms.filter(|&t| t > a).map(|t| (t, g)));
    Applied {
        applied_ms: a,
        nodes: &f.targets,
        records_before: f.records_before,
        next_on_same_nodes_ms: later().filter(|(_, g)| g.targets.iter().any(|n| f.targets.contains(n))).map(|(t, _)| t).min(),
        next_ms: later().map(|(t, _)| t).min(),
    }
}

/// Why a fault tested nothing (it hit no running job), if it did not.
fn missed(r: &Recovery, t0: u64) -> Option<String> {
    match r.job_at_fault {
        JobAtFault::Live => None,
        JobAtFault::NotStarted => Some("the job was not running yet".into()),
        JobAtFault::Ended { state, at_ms } => Some(format!(
            "the job was already {} (at {} ms)",
            format!("{state:?}").to_uppercase(),
            at_ms.saturating_sub(t0)
        )),
    }
}

/// The recovery failure of a fault that hit a running job, if it did not recover in time.
fn not_recovered(f: &FaultRecord, fr: &FaultReport, r: &Recovery, a: u64, within: Duration) -> Option<Failure> {
    // Judged from the undo when the fault lasted and brought nothing down.
    let from = f.undone_ms.filter(|_| r.running_ms.is_none() && r.detected_ms.is_none()).unwrap_or(a);
    let limit = within.as_millis() as u64;
    let why = match r.recovered_ms {
        Some(t) if t.saturating_sub(from) <= limit => return None,
        Some(t) => format!(
            "{} {}: a checkpoint completed and output was committed only {} ms after it, more than recovery_within {} ms",
            fr.action,
            fr.target,
            t - from,
            limit
        ),
        None => format!("{} {}: no checkpoint completed with committed output after it", fr.action, fr.target),
    };
    Some(("recovery".into(), why))
}

/// Faults that hit nothing make the run test nothing: a required check of its own.
fn effective(judged: usize, ineffective: &[String]) -> Option<Check> {
    match (judged, ineffective.is_empty()) {
        (0, _) => None,
        (_, true) => Some(Check::new(true, format!("{judged} fault(s), each hit a running job"))),
        (_, false) => Some(Check::new(false, format!("nothing was tested: {}", ineffective.join("; ")))),
    }
}

/// The run failure of a timeout: the job was still `state` at the end.
pub fn timed_out(timeout: Duration, state: Option<JobState>) -> Failure {
    let t = streamd_contract::duration::format_duration(timeout);
    ("timeout".into(), format!("the job was not FINISHED within {t} (state {state:?})"))
}

/// The job's own events for the timeline (RUNNING, restarts, completed checkpoints),
/// relative to `t0`.
pub fn job_events(job: &JobDetails, checkpoints: Option<CheckpointsInfo>, t0: u64) -> Vec<TimelineEvent> {
    let mut out = Vec::new();
    for h in &job.history {
        let kind = match h.state {
            JobState::Running => EventKind::Running,
            JobState::Restarting => EventKind::Restart,
            _ => continue,
        };
        out.push(TimelineEvent { t_ms: h.at_ms.saturating_sub(t0), kind, label: h.reason.clone() });
    }
    for s in checkpoints.into_iter().flat_map(|c| c.completed) {
        out.push(TimelineEvent {
            t_ms: s.complete_ms.saturating_sub(t0),
            kind: EventKind::Checkpoint,
            label: format!("checkpoint {} ({} ms)", s.id, s.duration_ms),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Target, Trigger};
    use streamd_contract::api::{FailureEvent, StateChange};

    const T0: u64 = 10_000;

    fn record(action: Action, node: &str, applied_ms: Option<u64>) -> FaultRecord {
        let planned = PlannedFault {
            index: 0,
            repetition: 0,
            line: 1,
            trigger: Trigger::At(Duration::from_secs(1)),
            action,
            targets: vec![Target::Node(node.into())],
            undo_after: None,
        };
        FaultRecord { targets: vec![node.into()], applied_ms, ..FaultRecord::new(&planned) }
    }

    fn kill(node: &str, at: u64) -> FaultRecord {
        record(Action::Kill { signal: crate::signal::Signal::KILL, lose_unsynced: false }, node, Some(at))
    }

    fn job(state: JobState, history: &[(JobState, u64, u64)], failures: &[(u64, &str)]) -> JobDetails {
        JobDetails {
            id: "wordcount".into(),
            state,
            attempt: 1,
            restarts: 0,
            parallelism: 2,
            records_in: 0,
            records_out: 0,
            input_lines: None,
            last_completed_checkpoint: None,
            checkpoints_completed: 0,
            failure_cause: Some("boom".into()),
            start_ms: T0,
            history: history.iter().map(|&(state, at_ms, attempt)| StateChange { state, at_ms, attempt, reason: String::new() }).collect(),
            failures: failures
                .iter()
                .map(|&(at_ms, tm)| FailureEvent { at_ms, attempt: 1, taskmanager: Some(tm.into()), jobmanager: None, cause: "lost".into() })
                .collect(),
            now_ms: T0 + 60_000,
            restores: Vec::new(),
        }
    }

    fn sample(at_ms: u64, checkpoint: u64, committed: u64) -> Sample {
        Sample { at_ms, records_in: 0, state: JobState::Running, checkpoint: Some(checkpoint), committed }
    }

    const WITHIN: Duration = Duration::from_secs(5);

    #[test]
    fn a_recovered_kill_is_effective_and_timed_from_t0() {
        let history = [(JobState::Running, T0, 1), (JobState::Restarting, T0 + 1_020, 1), (JobState::Running, T0 + 1_300, 2)];
        let d = job(JobState::Finished, &history, &[(T0 + 1_010, "taskmanager-2")]);
        let samples = [sample(T0 + 900, 3, 5), sample(T0 + 1_400, 3, 5), sample(T0 + 2_000, 4, 6)];
        let f = judge_faults(&[kill("taskmanager-2", T0 + 1_000)], &[], &d, &samples, T0, WITHIN);
        assert!(f.failures.is_empty(), "{:?}", f.failures);
        assert!(f.effective.as_ref().is_some_and(|c| c.ok && c.details == "1 fault(s), each hit a running job"));
        let r = &f.reports[0];
        assert_eq!((r.applied_ms, r.detected_ms, r.running_ms, r.recovery_ms), (Some(1_000), Some(1_010), Some(1_300), Some(1_000)));
        assert_eq!(r.at, "1s");
    }

    #[test]
    fn a_slow_or_missing_recovery_is_a_failure_named_after_the_fault() {
        let d = job(JobState::Finished, &[(JobState::Running, T0, 1)], &[]);
        let late = [sample(T0 + 900, 3, 5), sample(T0 + 7_000, 4, 6)];
        let f = judge_faults(&[kill("taskmanager-1", T0 + 1_000)], &[], &d, &late, T0, WITHIN);
        assert_eq!(f.failures.len(), 1);
        assert!(f.failures[0].1.starts_with("kill taskmanager-1: a checkpoint completed and output was committed only 6000 ms after it"));
        let none = [sample(T0 + 900, 3, 5)];
        let f = judge_faults(&[kill("taskmanager-1", T0 + 1_000)], &[], &d, &none, T0, WITHIN);
        assert_eq!(f.failures, [("recovery".to_string(), "kill taskmanager-1: no checkpoint completed with committed output after it".to_string())]);
    }

    #[test]
    fn faults_that_hit_no_running_job_test_nothing_and_restoring_ones_are_not_judged() {
        let history = [(JobState::Running, T0, 1), (JobState::Finished, T0 + 500, 1)];
        let d = job(JobState::Finished, &history, &[]);
        let faults = [kill("taskmanager-2", T0 + 800), record(Action::Start, "taskmanager-2", Some(T0 + 900))];
        let f = judge_faults(&faults, &[], &d, &[], T0, WITHIN);
        let c = f.effective.unwrap();
        assert!(!c.ok);
        assert_eq!(c.details, "nothing was tested: kill taskmanager-2 at 800 ms: the job was already FINISHED (at 500 ms)");
        assert!(f.failures.is_empty(), "{:?}", f.failures);
        // Only a restoring action, or nothing applied: nothing to judge.
        let f = judge_faults(&faults[1..], &[], &d, &[], T0, WITHIN);
        assert!(f.effective.is_none());
        let f = judge_faults(&[record(Action::Pause, "taskmanager-1", None)], &[], &d, &[], T0, WITHIN);
        assert!(f.effective.is_none());
        assert_eq!(f.reports[0].applied_ms, None);
    }

    #[test]
    fn a_failed_job_and_a_timeout_are_run_failures() {
        let d = job(JobState::Failed, &[(JobState::Running, T0, 1), (JobState::Failed, T0 + 100, 1)], &[]);
        let f = judge_faults(&[], &[], &d, &[], T0, WITHIN);
        assert_eq!(f.failures, [("job".to_string(), "the job FAILED: boom".to_string())]);
        let (check, why) = timed_out(Duration::from_secs(90), Some(JobState::Running));
        assert_eq!((check.as_str(), why.as_str()), ("timeout", "the job was not FINISHED within 90s (state Some(Running))"));
    }
}
