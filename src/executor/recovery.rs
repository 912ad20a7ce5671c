//! Per-fault facts, derived after the fact from what REST reported (the job's state
//! history and failure events) and the executor's samples — pure functions, no I/O, so
//! they are unit-tested on hand-made histories.
//!
//! - **Effective**: a fault tests something only if it hits a live job (RUNNING or
//!   RESTARTING). One that lands after the job ended, or before it ever ran, tested
//!   nothing, whatever happens afterwards.
//! - **Detected**: the jobmanager's failure events are matched to a fault by cause — the
//!   node they name (the lost taskmanager, the deposed leader) is one the fault hit — not
//!   by time, so overlapping faults on different nodes never swap credit. A consequence
//!   reported by another node (a count task on taskmanager-1 whose input from the killed
//!   taskmanager-2 broke) is not a detection of the fault.
//! - **Recovered**: after the fault (after RUNNING again, if the job went down), a
//!   checkpoint completed *and* committed output advanced. Input positions only say that
//!   records were read into socket buffers; a stalled pipeline reads on for a while.

use streamd_contract::api::{FailureEvent, JobState, StateChange};

/// One REST sample taken while the job ran.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall-clock ms.
    pub at_ms: u64,
    pub records_in: u64,
    pub state: JobState,
    /// The latest completed checkpoint the jobmanager reported.
    pub checkpoint: Option<u64>,
    /// Committed transaction files in the output directory.
    pub committed: u64,
}

/// One applied fault, as the executor saw it (wall-clock ms).
#[derive(Debug, Clone, Default)]
pub struct Applied<'a> {
    pub applied_ms: u64,
    /// The nodes it hit.
    pub nodes: &'a [String],
    /// The highest input position seen before it.
    pub records_before: u64,
    /// When the next fault on any of the same nodes was applied: later failures there are
    /// that fault's.
    pub next_on_same_nodes_ms: Option<u64>,
    /// When the next fault of any kind was applied: a restart after it is not this one's.
    pub next_ms: Option<u64>,
}

/// What the job was doing when a fault hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAtFault {
    /// RUNNING or RESTARTING: the fault tests the job.
    Live,
    /// The job had not started running.
    NotStarted,
    /// The job had ended (FINISHED, FAILED, CANCELED) at `at_ms`.
    Ended { state: JobState, at_ms: u64 },
}

/// What happened after one fault (all wall-clock ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    pub job_at_fault: JobAtFault,
    /// The jobmanager noticed a failure of a node the fault hit.
    pub detected_ms: Option<u64>,
    /// The job was RUNNING again (a new attempt deployed), if the fault brought it down.
    pub running_ms: Option<u64>,
    /// Recovered: a checkpoint completed and committed output advanced, after the fault
    /// (after `running_ms` if the job went down).
    pub recovered_ms: Option<u64>,
    /// The input position got back to where it was when the fault hit.
    pub caught_up_ms: Option<u64>,
}

/// Slack for clock reads on either side of a fault's API call.
const SLACK_MS: u64 = 20;

/// The job's state at `t`: the last state change at or before it.
pub fn job_at(t: u64, history: &[StateChange]) -> JobAtFault {
    match history.iter().rfind(|h| h.at_ms <= t) {
        None => JobAtFault::NotStarted,
        Some(h) => match h.state {
            JobState::Running | JobState::Restarting => JobAtFault::Live,
            JobState::Created => JobAtFault::NotStarted,
            state => JobAtFault::Ended { state, at_ms: h.at_ms },
        },
    }
}

/// Whether failure event `f` is about one of `nodes`: the taskmanager it names, or the
/// jobmanager it deposed.
fn concerns(f: &FailureEvent, nodes: &[String]) -> bool {
    let named = |n: &Option<String>| n.as_ref().is_some_and(|n| nodes.contains(n));
    named(&f.taskmanager) || named(&f.jobmanager)
}

/// Works out a fault's recovery.
pub fn recovery(fault: &Applied, history: &[StateChange], failures: &[FailureEvent], samples: &[Sample]) -> Recovery {
    let applied = fault.applied_ms;
    let from = applied.saturating_sub(SLACK_MS);
    let detection = failures
        .iter()
        .filter(|f| f.at_ms >= from && fault.next_on_same_nodes_ms.is_none_or(|u| f.at_ms < u))
        .filter(|f| concerns(f, fault.nodes))
        .min_by_key(|f| f.at_ms);
    let mut r = Recovery {
        job_at_fault: job_at(applied, history),
        detected_ms: detection.map(|f| f.at_ms),
        running_ms: None,
        recovered_ms: None,
        caught_up_ms: None,
    };
    // Did the job go down for it? The attempt in which the fault was detected ended in a
    // restart (possibly reported first by another node: a task whose input broke). A lost
    // taskmanager that ran no task (a spare) is noticed but costs nothing.
    let restarted = detection.and_then(|d| {
        history
            .iter()
            .filter(|h| h.state == JobState::Restarting && h.attempt == d.attempt)
            .find(|h| fault.next_ms.is_none_or(|u| h.at_ms < u))
            .map(|h| h.at_ms)
    });
    if let Some(down) = restarted {
        let after = down.max(applied);
        r.running_ms = history.iter().filter(|h| h.state == JobState::Running && h.at_ms >= after).map(|h| h.at_ms).min();
        if r.running_ms.is_none() {
            return r; // never RUNNING again
        }
    }
    // From RUNNING again if the job went down, else from the fault itself (a job that
    // commits through a network delay has recovered; the executor judges a lasting fault's
    // delay from its undo).
    let base = r.running_ms.unwrap_or(applied).max(applied);
    let at_base = samples.iter().rfind(|s| s.at_ms <= base);
    let (ckpt_before, committed_before) = at_base.map_or((None, 0), |s| (s.checkpoint, s.committed));
    let live = |s: &&Sample| s.at_ms >= base && matches!(s.state, JobState::Running | JobState::Finished);
    // FINISHED stands for the job's final checkpoint: a bounded job finishes only after
    // its last commit (streamd's final checkpoint; Flink's final transactions), which a
    // short replay can reach before any checkpoint of the attempt shows in the REST API.
    // Committed output must still have advanced.
    let checkpointed = |s: &Sample| s.checkpoint > ckpt_before || s.state == JobState::Finished;
    r.recovered_ms =
        samples.iter().filter(live).find(|s| checkpointed(s) && s.committed > committed_before).map(|s| s.at_ms);
    r.caught_up_ms = samples
        .iter()
        .filter(live)
        .find(|s| s.records_in >= fault.records_before || s.state == JobState::Finished)
        .map(|s| s.at_ms);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(state: JobState, at_ms: u64, attempt: u64) -> StateChange {
        StateChange { state, at_ms, attempt, reason: String::new() }
    }
    fn s(at_ms: u64, records_in: u64, state: JobState, checkpoint: u64, committed: u64) -> Sample {
        Sample { at_ms, records_in, state, checkpoint: Some(checkpoint), committed }
    }
    fn lost(at_ms: u64, attempt: u64, tm: &str) -> FailureEvent {
        FailureEvent { at_ms, attempt, taskmanager: Some(tm.into()), jobmanager: None, cause: "lost".into() }
    }
    fn nodes(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_kill_is_detected_restarted_and_recovered_by_a_checkpoint_and_a_commit() {
        let history = [h(JobState::Running, 0, 1), h(JobState::Restarting, 1010, 1), h(JobState::Running, 1300, 2)];
        // Another node's task notices first; the jobmanager then loses tm2 itself.
        let failures = [
            FailureEvent { at_ms: 1003, attempt: 1, taskmanager: Some("tm1".into()), jobmanager: None, cause: "input lost".into() },
            lost(1005, 1, "tm2"),
        ];
        let samples = [
            s(900, 900, JobState::Running, 3, 12),
            s(1100, 700, JobState::Restarting, 3, 12),
            // Reading again, but nothing checkpointed or committed yet: not recovered.
            s(1400, 800, JobState::Running, 3, 12),
            s(1800, 950, JobState::Running, 3, 12),
            s(2300, 1000, JobState::Running, 5, 16),
        ];
        let tm2 = nodes(&["tm2"]);
        let f = Applied { applied_ms: 1000, nodes: &tm2, records_before: 900, ..Applied::default() };
        let r = recovery(&f, &history, &failures, &samples);
        assert_eq!(r.job_at_fault, JobAtFault::Live);
        assert_eq!(r.detected_ms, Some(1005), "tm1's report is a consequence, not the detection");
        assert_eq!(r.running_ms, Some(1300));
        assert_eq!(r.recovered_ms, Some(2300));
        assert_eq!(r.caught_up_ms, Some(1800));
    }

    /// Input positions that move on are not recovery.
    #[test]
    fn records_read_without_a_checkpoint_or_a_commit_are_not_recovery() {
        let history = [h(JobState::Running, 0, 1)];
        let samples = [s(900, 900, JobState::Running, 3, 12), s(1100, 950, JobState::Running, 3, 12), s(1500, 990, JobState::Running, 4, 12)];
        let tm = nodes(&["tm2"]);
        let f = Applied { applied_ms: 1000, nodes: &tm, records_before: 900, ..Applied::default() };
        let r = recovery(&f, &history, &[], &samples);
        assert_eq!(r.recovered_ms, None, "a checkpoint without a commit (or the reverse) is not enough");
        assert_eq!(r.caught_up_ms, Some(1100));
    }

    /// A replay that ends the input before the attempt's first checkpoint: the job's
    /// final commit, at FINISHED, is its recovery; without new output it is not.
    #[test]
    fn finishing_with_committed_output_after_the_fault_is_recovery() {
        let history = [h(JobState::Running, 0, 1), h(JobState::Restarting, 1010, 1), h(JobState::Running, 1300, 2), h(JobState::Finished, 2000, 2)];
        let tm2 = nodes(&["tm2"]);
        let f = Applied { applied_ms: 1000, nodes: &tm2, records_before: 900, ..Applied::default() };
        let finished = |committed| [s(900, 900, JobState::Running, 3, 12), s(1400, 950, JobState::Running, 3, 12), s(2000, 1000, JobState::Finished, 3, committed)];
        let r = recovery(&f, &history, &[lost(1005, 1, "tm2")], &finished(20));
        assert_eq!((r.running_ms, r.recovered_ms), (Some(1300), Some(2000)));
        let r = recovery(&f, &history, &[lost(1005, 1, "tm2")], &finished(12));
        assert_eq!(r.recovered_ms, None, "finished without committing anything after the fault");
    }

    #[test]
    fn a_lost_spare_is_detected_but_the_job_never_went_down() {
        let history = [h(JobState::Running, 0, 1)];
        let samples = [s(900, 900, JobState::Running, 3, 12), s(1100, 950, JobState::Running, 4, 16)];
        let tm3 = nodes(&["tm3"]);
        let f = Applied { applied_ms: 1000, nodes: &tm3, ..Applied::default() };
        let r = recovery(&f, &history, &[lost(1005, 1, "tm3")], &samples);
        assert_eq!(r.detected_ms, Some(1005));
        assert_eq!(r.running_ms, None);
        assert_eq!(r.recovered_ms, Some(1100));
    }

    /// Two overlapping faults on different nodes keep their own
    /// detections, whichever happened first.
    #[test]
    fn detections_are_matched_by_node_not_by_time() {
        let history = [h(JobState::Running, 0, 1), h(JobState::Restarting, 1020, 1), h(JobState::Running, 1500, 2)];
        // tm2 paused at 1000 (detected by heartbeat at 3000), tm3 killed at 1010 (at once).
        let failures = [lost(1020, 1, "tm3"), lost(3000, 2, "tm2")];
        let (tm2, tm3) = (nodes(&["tm2"]), nodes(&["tm3"]));
        let pause = Applied { applied_ms: 1000, nodes: &tm2, ..Applied::default() };
        let kill = Applied { applied_ms: 1010, nodes: &tm3, ..Applied::default() };
        assert_eq!(recovery(&pause, &history, &failures, &[]).detected_ms, Some(3000));
        assert_eq!(recovery(&kill, &history, &failures, &[]).detected_ms, Some(1020));
        // A later fault on the same node takes the failures after it.
        let pause = Applied { next_on_same_nodes_ms: Some(2000), ..pause };
        assert_eq!(recovery(&pause, &history, &failures, &[]).detected_ms, None);
    }

    #[test]
    fn a_failover_is_credited_to_the_deposed_leader() {
        let history = [h(JobState::Running, 0, 3), h(JobState::Restarting, 2100, 3), h(JobState::Running, 2600, 4)];
        let failover = FailureEvent {
            at_ms: 2100,
            attempt: 3,
            taskmanager: None,
            jobmanager: Some("jobmanager-1".into()),
            cause: "jobmanager failover: jobmanager-2 took over from jobmanager-1".into(),
        };
        let (jm1, jm2) = (nodes(&["jobmanager-1"]), nodes(&["jobmanager-2"]));
        let r = recovery(&Applied { applied_ms: 100, nodes: &jm1, ..Applied::default() }, &history, std::slice::from_ref(&failover), &[]);
        assert_eq!((r.detected_ms, r.running_ms), (Some(2100), Some(2600)));
        let r = recovery(&Applied { applied_ms: 100, nodes: &jm2, ..Applied::default() }, &history, &[failover], &[]);
        assert_eq!(r.detected_ms, None, "the new leader is named too, but it is not the one that failed");
    }

    /// A fault after FINISHED (or before the job ran) tested nothing.
    #[test]
    fn a_fault_on_a_finished_or_not_yet_running_job_is_not_live() {
        let history = [h(JobState::Created, 0, 0), h(JobState::Running, 100, 1), h(JobState::Finished, 2000, 1)];
        assert_eq!(job_at(50, &history), JobAtFault::NotStarted);
        assert_eq!(job_at(1000, &history), JobAtFault::Live);
        assert_eq!(job_at(4000, &history), JobAtFault::Ended { state: JobState::Finished, at_ms: 2000 });
        let tm = nodes(&["tm2"]);
        let samples = [s(1900, 900, JobState::Running, 3, 12), s(2100, 1000, JobState::Finished, 4, 16), s(4100, 1000, JobState::Finished, 4, 16)];
        let r = recovery(&Applied { applied_ms: 4000, nodes: &tm, ..Applied::default() }, &history, &[], &samples);
        assert!(matches!(r.job_at_fault, JobAtFault::Ended { .. }));
        assert_eq!(r.recovered_ms, None, "nothing after the fault checkpointed or committed");
    }

    #[test]
    fn never_running_again_means_no_recovery() {
        let history = [h(JobState::Running, 0, 1), h(JobState::Restarting, 1010, 1)];
        let samples = [s(1100, 10, JobState::Restarting, 3, 12), s(5000, 10, JobState::Restarting, 3, 12)];
        let tm = nodes(&["tm2"]);
        let r = recovery(&Applied { applied_ms: 1000, nodes: &tm, ..Applied::default() }, &history, &[lost(1010, 1, "tm2")], &samples);
        assert_eq!(r.detected_ms, Some(1010));
        assert_eq!(r.running_ms, None);
        assert_eq!(r.recovered_ms, None);
    }
}
