//! What the run loop has seen of the job: every REST answer, kept for the recovery
//! timings ([`super::recovery::Sample`]) and the report's chart, and what changed since
//! the answer before (checkpoints completed, a restart) for the progress line. Pure: the
//! loop feeds it answers and the committed output it counted; the schedule reads
//! [`Observations::observed`].

use streamd_contract::api::JobDetails;

use super::recovery::Sample;
use super::schedule::Observed;
use crate::report;

/// On Flink with HA the leader is looked up every this many samples (twice a second at
/// the loop's 100 ms tick): ZooKeeper names it, REST does not.
const TRACK_LEADER_EVERY: usize = 5;

/// What an answer brought that the progress line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct News {
    /// Checkpoints completed since the previous answer.
    pub checkpoints: u64,
    /// A new attempt: the job restarted.
    pub restarted: bool,
}

/// Every answer of the run, from the job's first RUNNING (`t0`, wall-clock ms) on.
#[derive(Debug)]
pub struct Observations {
    t0: u64,
    /// For the recovery timings.
    pub samples: Vec<Sample>,
    /// For the report's chart (times relative to `t0`).
    pub chart: Vec<report::Sample>,
    /// The latest answer.
    pub last: Option<JobDetails>,
    /// The highest input position seen: a fault's "before".
    pub max_records: u64,
    checkpoints: u64,
    attempt: u64,
}

impl Observations {
    pub fn new(t0: u64) -> Observations {
        Observations { t0, samples: Vec::new(), chart: Vec::new(), last: None, max_records: 0, checkpoints: 0, attempt: 1 }
    }

    /// One answer, with the committed output counted at the same time (`None`: it could
    /// not be counted, the previous count stands).
    pub fn record(&mut self, d: JobDetails, committed: Option<u64>) -> News {
        self.max_records = self.max_records.max(d.records_in);
        let committed = committed.unwrap_or_else(|| self.samples.last().map_or(0, |s| s.committed));
        self.samples.push(Sample {
            at_ms: d.now_ms,
            records_in: d.records_in,
            state: d.state,
            checkpoint: d.last_completed_checkpoint,
            committed,
        });
        self.chart.push(report::Sample {
            t_ms: d.now_ms.saturating_sub(self.t0),
            records_in: d.records_in,
            records_out: d.records_out,
            state: format!("{:?}", d.state).to_uppercase(),
            checkpoints: d.checkpoints_completed,
        });
        let news = News {
            checkpoints: d.checkpoints_completed.saturating_sub(self.checkpoints),
            restarted: d.attempt > self.attempt,
        };
        self.checkpoints = self.checkpoints.max(d.checkpoints_completed);
        self.attempt = self.attempt.max(d.attempt);
        self.last = Some(d);
        news
    }

    /// What the schedule needs of the job: its state and latest checkpoint.
    pub fn observed(&self) -> Observed {
        Observed {
            state: self.last.as_ref().map(|d| d.state),
            last_checkpoint: self.last.as_ref().and_then(|d| d.last_completed_checkpoint),
        }
    }

    /// Whether the leader is due to be looked up (Flink with HA; see
    /// [`crate::engine::JobSource::track_leader`]).
    pub fn track_leader_due(&self) -> bool {
        self.samples.len().is_multiple_of(TRACK_LEADER_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamd_contract::api::JobState;

    fn answer(now_ms: u64, state: JobState, attempt: u64, checkpoints: u64, records_in: u64) -> JobDetails {
        JobDetails {
            id: "wordcount".into(),
            state,
            attempt,
            restarts: attempt - 1,
            parallelism: 2,
            records_in,
            records_out: records_in * 8,
            input_lines: None,
            last_completed_checkpoint: (checkpoints > 0).then_some(checkpoints),
            checkpoints_completed: checkpoints,
            failure_cause: None,
            start_ms: 1_000,
            history: Vec::new(),
            failures: Vec::new(),
            now_ms,
            restores: Vec::new(),
        }
    }

    #[test]
    fn answers_become_samples_news_and_what_the_schedule_sees() {
        let mut o = Observations::new(1_000);
        assert_eq!(o.observed(), Observed::default());
        assert_eq!(o.record(answer(1_100, JobState::Running, 1, 2, 500), Some(3)), News { checkpoints: 2, restarted: false });
        assert_eq!(o.observed(), Observed { state: Some(JobState::Running), last_checkpoint: Some(2) });
        // A restore rewinds the input: the highest position stays; the count that failed
        // keeps the previous one.
        assert_eq!(o.record(answer(1_200, JobState::Running, 2, 3, 100), None), News { checkpoints: 1, restarted: true });
        assert_eq!(o.max_records, 500);
        assert_eq!(o.samples.iter().map(|s| s.committed).collect::<Vec<_>>(), [3, 3]);
        assert_eq!(o.chart[1].t_ms, 200);
        assert_eq!(o.chart[1].state, "RUNNING");
        // Nothing new: no news.
        assert_eq!(o.record(answer(1_300, JobState::Running, 2, 3, 200), Some(4)), News::default());
    }

    #[test]
    fn the_leader_is_looked_up_every_fifth_sample() {
        let mut o = Observations::new(0);
        let due: Vec<bool> = (0..6)
            .map(|i| {
                let due = o.track_leader_due();
                o.record(answer(i, JobState::Running, 1, 0, 0), None);
                due
            })
            .collect();
        assert_eq!(due, [true, false, false, false, false, true]);
    }
}
