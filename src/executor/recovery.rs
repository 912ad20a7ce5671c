//! Per-fault timings, derived after the fact from what REST reported (the job's state
//! history and failure events) and the executor's samples — pure functions, no I/O, so
//! they are unit-tested on hand-made histories.

use streamd_contract::api::{FailureEvent, JobState, StateChange};

/// One REST sample taken while the job ran.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall-clock ms.
    pub at_ms: u64,
    pub records_in: u64,
    pub state: JobState,
}

/// What happened after one fault (all wall-clock ms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// The jobmanager noticed a failure (a lost taskmanager, a failed task).
    pub detected_ms: Option<u64>,
    /// The job was RUNNING again (a new attempt deployed).
    pub running_ms: Option<u64>,
    /// RUNNING again *and* making progress (input position moved on).
    pub progress_ms: Option<u64>,
    /// The input position got back to where it was when the fault hit.
    pub caught_up_ms: Option<u64>,
}

/// Slack for clock reads on either side of a fault's API call.
const SLACK_MS: u64 = 20;

/// Works out a fault's recovery. `applied_ms`: when the fault took effect; `records_before`:
/// the highest input position seen before it; `until_ms`: the next fault (failures after it
/// belong to that one).
pub fn recovery(
    applied_ms: u64,
    records_before: u64,
    until_ms: Option<u64>,
    history: &[StateChange],
    failures: &[FailureEvent],
    samples: &[Sample],
) -> Recovery {
    let from = applied_ms.saturating_sub(SLACK_MS);
    let within = |t: u64| t >= from && until_ms.is_none_or(|u| t < u);
    let detected = failures
        .iter()
        .map(|f| f.at_ms)
        .chain(history.iter().filter(|h| h.state == JobState::Restarting).map(|h| h.at_ms))
        .filter(|&t| within(t))
        .min();
    let mut r = Recovery { detected_ms: detected, ..Recovery::default() };
    // Did the job actually go down? A lost taskmanager that ran no task (a spare) is
    // noticed but costs nothing: the job never stopped running.
    let restarted = history.iter().find(|h| h.state == JobState::Restarting && within(h.at_ms)).map(|h| h.at_ms);
    let disrupted_from = restarted.map(|t| detected.map_or(t, |d| d.min(t)));
    let running_from = disrupted_from.unwrap_or(from);
    r.running_ms = match disrupted_from {
        Some(d) => history.iter().filter(|h| h.state == JobState::Running && h.at_ms >= d).map(|h| h.at_ms).min(),
        None => None,
    };
    // Never before the fault itself (the slack only widens the search for failures).
    let base = r.running_ms.unwrap_or(running_from).max(applied_ms);
    if disrupted_from.is_none() || r.running_ms.is_some() {
        // Progress: the position moves past what it was at `base`.
        let at_base = samples.iter().filter(|s| s.at_ms <= base.max(from)).map(|s| s.records_in).last();
        r.progress_ms = samples
            .iter()
            .filter(|s| s.at_ms > base && matches!(s.state, JobState::Running | JobState::Finished))
            .find(|s| at_base.is_none_or(|b| s.records_in > b) || s.state == JobState::Finished)
            .map(|s| s.at_ms);
        r.caught_up_ms = samples
            .iter()
            .filter(|s| s.at_ms >= base && matches!(s.state, JobState::Running | JobState::Finished))
            .find(|s| s.records_in >= records_before || s.state == JobState::Finished)
            .map(|s| s.at_ms);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(state: JobState, at_ms: u64) -> StateChange {
        StateChange { state, at_ms, attempt: 1, reason: String::new() }
    }
    fn s(at_ms: u64, records_in: u64, state: JobState) -> Sample {
        Sample { at_ms, records_in, state }
    }

    #[test]
    fn a_kill_is_detected_restarted_and_caught_up() {
        let history = [h(JobState::Running, 0), h(JobState::Restarting, 1010), h(JobState::Running, 1300)];
        let failures = [FailureEvent { at_ms: 1005, attempt: 1, taskmanager: Some("tm2".into()), cause: "lost".into() }];
        let samples = [
            s(900, 900, JobState::Running),
            s(1100, 700, JobState::Restarting),
            s(1400, 700, JobState::Running),
            s(1500, 800, JobState::Running),
            s(1800, 950, JobState::Running),
        ];
        let r = recovery(1000, 900, None, &history, &failures, &samples);
        assert_eq!(r.detected_ms, Some(1005));
        assert_eq!(r.running_ms, Some(1300));
        assert_eq!(r.progress_ms, Some(1500));
        assert_eq!(r.caught_up_ms, Some(1800));
    }

    #[test]
    fn a_fault_that_breaks_nothing_only_needs_progress() {
        let history = [h(JobState::Running, 0)];
        let samples = [s(900, 900, JobState::Running), s(1100, 950, JobState::Running)];
        let r = recovery(1000, 900, None, &history, &[], &samples);
        assert_eq!(r.detected_ms, None);
        assert_eq!(r.running_ms, None);
        assert_eq!(r.progress_ms, Some(1100));
        assert_eq!(r.caught_up_ms, Some(1100));
    }

    #[test]
    fn a_lost_spare_is_detected_but_needs_only_progress() {
        let history = [h(JobState::Running, 0)];
        let failures = [FailureEvent { at_ms: 1005, attempt: 1, taskmanager: Some("tm3".into()), cause: "lost".into() }];
        let samples = [s(900, 900, JobState::Running), s(1100, 950, JobState::Running)];
        let r = recovery(1000, 900, None, &history, &failures, &samples);
        assert_eq!(r.detected_ms, Some(1005));
        assert_eq!(r.running_ms, None);
        assert_eq!(r.progress_ms, Some(1100));
    }

    #[test]
    fn failures_after_the_next_fault_are_not_this_ones() {
        let history = [h(JobState::Running, 0), h(JobState::Restarting, 3000), h(JobState::Running, 3200)];
        let failures = [FailureEvent { at_ms: 3000, attempt: 1, taskmanager: None, cause: "x".into() }];
        let r = recovery(1000, 0, Some(2000), &history, &failures, &[]);
        assert_eq!(r.detected_ms, None);
    }

    #[test]
    fn never_running_again_means_no_recovery() {
        let history = [h(JobState::Running, 0), h(JobState::Restarting, 1010)];
        let samples = [s(1100, 10, JobState::Restarting), s(5000, 10, JobState::Restarting)];
        let r = recovery(1000, 10, None, &history, &[], &samples);
        assert_eq!(r.detected_ms, Some(1010));
        assert_eq!(r.running_ms, None);
        assert_eq!(r.progress_ms, None);
    }
}
