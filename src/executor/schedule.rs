//! The run loop's decisions, apart from any I/O: given the time and what the jobmanager
//! last reported (or Ctrl-C), which faults fire, which are undone, whether network rules
//! are checked after a container restart, whether the run ends, and what is left to undo
//! when it does. `drive.rs` samples, carries the decisions out and reports back
//! ([`Schedule::applied`], [`Schedule::undone`]); this file decides. Being pure, every rule
//! of the timeline is unit-tested here.

use std::time::Duration;

use streamd_contract::api::JobState;
use tokio::time::Instant;

use crate::scenario::{Action, PlannedFault, Trigger};

/// How often network rules are checked while a network fault holds (a restarted
/// container loses its namespace's rules).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// What the loop knows of the job at a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// The job's state, once the jobmanager has answered.
    pub state: Option<JobState>,
    /// The latest completed checkpoint.
    pub last_checkpoint: Option<u64>,
}

/// One decision for the loop to carry out, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Apply fault `i` of the plan.
    Fire(usize),
    /// Check the network rules (re-apply what a restart wiped).
    Reconcile,
    /// Undo fault `i`: its `for:` is over.
    Undo(usize),
    /// Stop the loop.
    End(End),
}

/// Why the loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The job is FINISHED (or otherwise terminal) and every fault has fired.
    Done,
    /// The job FAILED: nothing more can happen.
    Failed,
    /// `expect.timeout` passed.
    Timeout,
    /// Ctrl-C: undo what is applied, tear down, exit 130.
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Pending,
    /// Being applied (decided, not yet reported back).
    Firing,
    /// `lasts`: something to undo (a pause, network rules), by `undo_due` or at the end.
    Applied { undo_due: Option<Instant>, holds_net: bool, lasts: bool },
    Undone,
    /// Its application failed: it will not be retried.
    Failed,
}

/// The timeline of one run.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    timeout_at: Instant,
    faults: Vec<(Trigger, Option<Duration>, bool)>,
    phases: Vec<Phase>,
    reconcile_due: Option<Instant>,
    ended: bool,
}

impl Schedule {
    /// `start`: when the job first ran (fault times count from it).
    pub fn new(faults: &[PlannedFault], start: Instant, timeout: Duration) -> Schedule {
        Schedule {
            start,
            timeout_at: start + timeout,
            faults: faults.iter().map(|f| (f.trigger, f.undo_after, restarts_containers(&f.action))).collect(),
            phases: vec![Phase::Pending; faults.len()],
            reconcile_due: None,
            ended: false,
        }
    }

    /// What to do now.
    pub fn decide(&mut self, now: Instant, job: Observed) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        for (i, (trigger, _, _)) in self.faults.iter().enumerate() {
            if self.phases[i] != Phase::Pending {
                continue;
            }
            let due = match *trigger {
                Trigger::At(d) => now >= self.start + d,
                Trigger::Checkpoint(n) => job.last_checkpoint.is_some_and(|c| c >= n),
            };
            if due {
                self.phases[i] = Phase::Firing;
                out.push(Decision::Fire(i));
            }
        }
        let net_held = self.phases.iter().any(|p| matches!(p, Phase::Applied { holds_net: true, .. }));
        if net_held && self.reconcile_due.is_none_or(|t| now >= t) {
            out.push(Decision::Reconcile);
            self.reconcile_due = Some(now + RECONCILE_EVERY);
        }
        for (i, p) in self.phases.iter().enumerate() {
            if let Phase::Applied { undo_due: Some(t), .. } = p {
                if now >= *t {
                    out.push(Decision::Undo(i));
                }
            }
        }
        let all_fired = self.phases.iter().all(|p| !matches!(p, Phase::Pending | Phase::Firing));
        let end = match job.state {
            Some(JobState::Failed) => Some(End::Failed),
            Some(s) if s.is_terminal() && all_fired => Some(End::Done),
            _ if now >= self.timeout_at => Some(End::Timeout),
            _ => None,
        };
        if let Some(e) = end {
            self.ended = true;
            out.push(Decision::End(e));
        }
        out
    }

    /// Fault `i` was applied at `now` (`ok`), or its application failed. `lasts`: it has
    /// something to undo; `holds_net`: it holds network rules.
    pub fn applied(&mut self, i: usize, now: Instant, ok: bool, lasts: bool, holds_net: bool) {
        let (_, undo_after, restarts) = self.faults[i];
        self.phases[i] = if ok {
            Phase::Applied { undo_due: undo_after.filter(|_| lasts).map(|d| now + d), holds_net, lasts }
        } else {
            Phase::Failed
        };
        // A container restart wipes its namespace's rules: check them at once.
        if ok && restarts {
            self.reconcile_due = Some(now);
        }
    }

    /// Fault `i` was undone.
    pub fn undone(&mut self, i: usize) {
        self.phases[i] = Phase::Undone;
    }

    /// Ctrl-C: the run ends now, whatever is due (what is applied is still undone, see
    /// [`Schedule::still_applied`]).
    pub fn interrupt(&mut self) -> Vec<Decision> {
        if std::mem::replace(&mut self.ended, true) {
            return Vec::new();
        }
        vec![Decision::End(End::Interrupted)]
    }

    /// Faults applied, with something to undo, and not undone: what the end of the run
    /// takes back (whichever way it ended), in plan order.
    pub fn still_applied(&self) -> Vec<usize> {
        (0..self.phases.len()).filter(|&i| matches!(self.phases[i], Phase::Applied { lasts: true, .. })).collect()
    }
}

/// Lifecycle actions that (re)start or remove a container, and with it its rules.
fn restarts_containers(a: &Action) -> bool {
    matches!(a, Action::Kill { .. } | Action::Stop { .. } | Action::Restart { .. } | Action::Start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{NetemParams, Target};

    fn fault(trigger: Trigger, action: Action, undo_after: Option<Duration>) -> PlannedFault {
        PlannedFault {
            index: 0,
            repetition: 0,
            line: 1,
            trigger,
            action,
            targets: vec![Target::Node("taskmanager-2".into())],
            undo_after,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;
    const RUNNING: Observed = Observed { state: Some(JobState::Running), last_checkpoint: None };

    #[test]
    fn a_timed_fault_fires_once_when_due_and_is_undone_after_its_for() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[fault(Trigger::At(S(4)), Action::Pause, Some(S(3)))], t0, S(60));
        assert!(s.decide(t0 + S(3), RUNNING).is_empty());
        assert_eq!(s.decide(t0 + S(4), RUNNING), vec![Decision::Fire(0)]);
        // Being applied: not fired twice.
        assert!(s.decide(t0 + S(4), RUNNING).is_empty());
        s.applied(0, t0 + S(4), true, true, false);
        assert!(s.decide(t0 + S(6), RUNNING).is_empty());
        assert_eq!(s.decide(t0 + S(7), RUNNING), vec![Decision::Undo(0)]);
        s.undone(0);
        assert!(s.decide(t0 + S(8), RUNNING).is_empty());
        assert!(s.still_applied().is_empty());
    }

    #[test]
    fn a_checkpoint_trigger_waits_for_that_checkpoint() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[fault(Trigger::Checkpoint(5), Action::Kill { signal: crate::signal::Signal::KILL, lose_unsynced: false }, None)], t0, S(60));
        let at = |c| Observed { state: Some(JobState::Running), last_checkpoint: Some(c) };
        assert!(s.decide(t0 + S(30), at(4)).is_empty());
        assert_eq!(s.decide(t0 + S(31), at(6)), vec![Decision::Fire(0)]);
    }

    #[test]
    fn the_run_ends_when_the_job_is_done_and_every_fault_fired_or_on_failure_or_timeout() {
        let t0 = Instant::now();
        let finished = Observed { state: Some(JobState::Finished), last_checkpoint: None };
        // A finished job with a fault still to come: the fault fires (and the verdict
        // says it tested nothing); the run ends after.
        let mut s = Schedule::new(&[fault(Trigger::At(S(10)), Action::Kill { signal: crate::signal::Signal::KILL, lose_unsynced: false }, None)], t0, S(60));
        assert!(s.decide(t0 + S(2), finished).is_empty());
        assert_eq!(s.decide(t0 + S(10), finished), vec![Decision::Fire(0)]);
        s.applied(0, t0 + S(10), true, false, false);
        assert_eq!(s.decide(t0 + S(10), finished), vec![Decision::End(End::Done)]);
        // Nothing after the end.
        assert!(s.decide(t0 + S(11), finished).is_empty());

        let failed = Observed { state: Some(JobState::Failed), last_checkpoint: None };
        let mut s = Schedule::new(&[fault(Trigger::At(S(10)), Action::Pause, None)], t0, S(60));
        assert_eq!(s.decide(t0 + S(1), failed), vec![Decision::End(End::Failed)]);

        let mut s = Schedule::new(&[], t0, S(60));
        assert!(s.decide(t0 + S(59), RUNNING).is_empty());
        assert_eq!(s.decide(t0 + S(60), RUNNING), vec![Decision::End(End::Timeout)]);
        // No answer from the jobmanager at all: the timeout still ends the run.
        let mut s = Schedule::new(&[], t0, S(5));
        assert_eq!(s.decide(t0 + S(5), Observed::default()), vec![Decision::End(End::Timeout)]);
    }

    #[test]
    fn a_failed_application_is_not_retried_and_counts_as_fired() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[fault(Trigger::At(S(1)), Action::Pause, Some(S(2)))], t0, S(60));
        assert_eq!(s.decide(t0 + S(1), RUNNING), vec![Decision::Fire(0)]);
        s.applied(0, t0 + S(1), false, false, false);
        let finished = Observed { state: Some(JobState::Finished), last_checkpoint: None };
        assert_eq!(s.decide(t0 + S(5), finished), vec![Decision::End(End::Done)]);
    }

    #[test]
    fn network_rules_are_checked_every_second_while_held_and_at_once_after_a_restart() {
        let t0 = Instant::now();
        let netem = Action::Netem(NetemParams { delay: Some(Duration::from_millis(100)), ..Default::default() });
        let faults = [
            fault(Trigger::At(S(1)), netem, Some(S(10))),
            fault(Trigger::At(S(3)), Action::Restart { grace: S(1), lose_unsynced: false }, None),
        ];
        let mut s = Schedule::new(&faults, t0, S(60));
        assert_eq!(s.decide(t0 + S(1), RUNNING), vec![Decision::Fire(0)]);
        s.applied(0, t0 + S(1), true, true, true);
        assert_eq!(s.decide(t0 + Duration::from_millis(1100), RUNNING), vec![Decision::Reconcile]);
        assert!(s.decide(t0 + Duration::from_millis(1500), RUNNING).is_empty());
        assert_eq!(s.decide(t0 + Duration::from_millis(2100), RUNNING), vec![Decision::Reconcile]);
        assert_eq!(s.decide(t0 + Duration::from_millis(3000), RUNNING), vec![Decision::Fire(1)]);
        s.applied(1, t0 + Duration::from_millis(3050), true, false, false);
        // Right after the restart, not a second later.
        assert_eq!(s.decide(t0 + Duration::from_millis(3100), RUNNING), vec![Decision::Reconcile]);
        assert_eq!(s.decide(t0 + S(11), RUNNING), vec![Decision::Reconcile, Decision::Undo(0)]);
        s.undone(0);
        // No rules held: no more checks.
        assert!(s.decide(t0 + S(13), RUNNING).is_empty());
    }

    #[test]
    fn ctrl_c_ends_the_run_at_once_and_leaves_what_lasts_to_undo() {
        let t0 = Instant::now();
        let faults = [
            fault(Trigger::At(S(1)), Action::Kill { signal: crate::signal::Signal::KILL, lose_unsynced: false }, None),
            fault(Trigger::At(S(2)), Action::Pause, Some(S(30))),
            fault(Trigger::At(S(50)), Action::Pause, None),
        ];
        let mut s = Schedule::new(&faults, t0, S(60));
        assert_eq!(s.decide(t0 + S(2), RUNNING), vec![Decision::Fire(0), Decision::Fire(1)]);
        s.applied(0, t0 + S(2), true, false, false);
        s.applied(1, t0 + S(2), true, true, false);
        assert_eq!(s.interrupt(), vec![Decision::End(End::Interrupted)]);
        // The kill has nothing to undo; the pause is taken back although its `for` is not
        // over; the fault that never fired is not.
        assert_eq!(s.still_applied(), vec![1]);
        // Ended: nothing fires any more, and a second Ctrl-C decides nothing.
        assert!(s.decide(t0 + S(55), RUNNING).is_empty());
        assert!(s.interrupt().is_empty());
    }

    #[test]
    fn what_lasts_is_left_to_undo_at_a_timeout_and_at_the_end() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[fault(Trigger::At(S(1)), Action::Pause, Some(S(100)))], t0, S(10));
        assert_eq!(s.decide(t0 + S(1), RUNNING), vec![Decision::Fire(0)]);
        s.applied(0, t0 + S(1), true, true, false);
        assert_eq!(s.decide(t0 + S(10), RUNNING), vec![Decision::End(End::Timeout)]);
        assert_eq!(s.still_applied(), vec![0]);
        s.undone(0);
        assert!(s.still_applied().is_empty());
    }

    #[test]
    fn a_fault_due_with_the_timeout_fires_before_the_run_ends() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[fault(Trigger::At(S(10)), Action::Pause, None)], t0, S(10));
        assert_eq!(s.decide(t0 + S(10), RUNNING), vec![Decision::Fire(0), Decision::End(End::Timeout)]);
    }
}
