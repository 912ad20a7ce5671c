//! What a run reports, and the writers for it: [`RunReport`] is the one record of a run
//! (filled by the executor, checks copied from the [`crate::verdict::Verdict`]); the
//! writers render it for a human ([`terminal`]), for CI ([`json`], [`junit`]) and as a
//! self-contained page with a timeline chart ([`html`]).
//!
//! The keys DESIGN.md section 6 calls stable (`scenario`, `seed`, `verdict`, `checks`,
//! `lost`, `overcounted`, `unexpected`, `faults`, `restarts`, `checkpoints_completed`,
//! `words_per_s`, `run_dir`, `counts_file`) are the field names below; everything else is
//! an extra that CI scripts should not rely on. Times are milliseconds since the job
//! started running.

pub mod html;
pub mod json;
pub mod junit;
pub mod terminal;

use crate::verdict::{Check, Duplicate, Expectation, Malformed, Verdict, WordDiff};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The keys of `report.json` that CI scripts may rely on (DESIGN.md section 6).
pub const STABLE_KEYS: [&str; 13] = [
    "scenario",
    "seed",
    "verdict",
    "checks",
    "lost",
    "overcounted",
    "unexpected",
    "faults",
    "restarts",
    "checkpoints_completed",
    "words_per_s",
    "run_dir",
    "counts_file",
];

/// The stable keys of each entry of `faults`.
pub const STABLE_FAULT_KEYS: [&str; 8] =
    ["action", "target", "applied_ms", "undone_ms", "detected_ms", "running_ms", "caught_up_ms", "measured"];

/// `pass` or `fail`. A report that was never given a verdict says `fail`: a run that
/// could not be judged must not gate CI green.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    #[default]
    Fail,
}

impl Outcome {
    /// `Pass` iff `pass`.
    pub fn from_pass(pass: bool) -> Self {
        if pass {
            Outcome::Pass
        } else {
            Outcome::Fail
        }
    }
}

/// One run of one scenario. Construct with `RunReport { scenario, seed, .., ..Default::default() }`,
/// then [`RunReport::apply_verdict`] and [`RunReport::fill_derived`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    // --- stable keys ---
    /// The scenario's `name`.
    pub scenario: String,
    pub seed: u64,
    pub verdict: Outcome,
    /// Rule -> `{ok, required, details}`: the output checks, then the run's own failures.
    pub checks: IndexMap<String, Check>,
    pub lost: BTreeMap<String, WordDiff>,
    pub overcounted: BTreeMap<String, WordDiff>,
    pub unexpected: BTreeMap<String, WordDiff>,
    pub faults: Vec<FaultReport>,
    pub restarts: u64,
    pub checkpoints_completed: u64,
    /// Input words per second while the job ran (first RUNNING to FINISHED).
    pub words_per_s: f64,
    pub run_dir: PathBuf,
    /// `<run_dir>/counts.tsv`.
    pub counts_file: PathBuf,

    // --- extras ---
    /// The scenario file it came from.
    #[serde(default)]
    pub scenario_file: Option<PathBuf>,
    #[serde(default)]
    pub description: String,
    /// `docker` or `process`.
    #[serde(default)]
    pub runtime: String,
    /// `streamd` or `flink`.
    #[serde(default)]
    pub engine: String,
    /// `expect.output`.
    #[serde(default)]
    pub expectation: Expectation,
    /// The planned timeline as `chaos lint` prints it, one line per step.
    #[serde(default)]
    pub plan: Vec<String>,
    /// From the first container/process start to all taskmanagers registered.
    #[serde(default)]
    pub cluster_start_ms: Option<u64>,
    /// From the job RUNNING to the end of the run (FINISHED, failure or timeout).
    #[serde(default)]
    pub duration_ms: u64,
    /// Words (tokens) in the input, per the oracle.
    #[serde(default)]
    pub words_total: u64,
    /// Distinct words committed.
    #[serde(default)]
    pub words_distinct: u64,
    /// The final job state seen through REST (`FINISHED`, `FAILED`, …).
    #[serde(default)]
    pub final_state: Option<String>,
    /// Committed transactions read back.
    #[serde(default)]
    pub transactions: u64,
    /// The first duplicated commits (see [`crate::verdict::MAX_EXAMPLES`]).
    #[serde(default)]
    pub duplicates: Vec<Duplicate>,
    /// All duplicated commits.
    #[serde(default)]
    pub duplicates_total: u64,
    #[serde(default)]
    pub malformed: Vec<Malformed>,
    /// Socket input: the lines lost at each restart of the source, with their cause.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_lines: Vec<crate::verdict::at_most_once::LostRange>,
    /// Samples and events for the timeline chart.
    #[serde(default)]
    pub timeline: Timeline,
    /// streamd: how every task of every restarted attempt restored its state (local copy
    /// or shared storage, with the time its taskmanager measured), per the jobmanager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<streamd_contract::api::TaskRestore>,
    /// An adaptive checkpoint interval over the run (absent with a fixed interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<IntervalReport>,
    /// Trigger-to-complete times of the completed checkpoints the jobmanager still lists
    /// (its newest 200), absent when none completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_ms: Option<CheckpointDurations>,
    /// `cluster.checkpoint_storage`: the model and, per node, the delayed operations
    /// (asked against measured), from the disk passthroughs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_storage: Option<serde_json::Value>,
}

/// How long checkpoints took, trigger to complete (ms).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckpointDurations {
    pub count: usize,
    pub mean: f64,
    pub median: f64,
    pub max: u64,
}

impl CheckpointDurations {
    /// `None` for no checkpoints.
    pub fn of(completed: &[streamd_contract::api::CheckpointStats]) -> Option<CheckpointDurations> {
        let mut d: Vec<u64> = completed.iter().map(|c| c.duration_ms).collect();
        if d.is_empty() {
            return None;
        }
        d.sort_unstable();
        let n = d.len();
        let median = if n % 2 == 1 { d[n / 2] as f64 } else { (d[n / 2 - 1] + d[n / 2]) as f64 / 2.0 };
        Some(CheckpointDurations { count: n, mean: d.iter().sum::<u64>() as f64 / n as f64, median, max: d[n - 1] })
    }
}

/// The adaptive checkpoint interval as the jobmanager chose it (`GET
/// /jobs/<id>/checkpoints/interval`, read at the end of the run).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IntervalReport {
    pub min_ms: u64,
    pub max_ms: u64,
    /// Every choice, oldest first.
    pub points: Vec<IntervalSample>,
}

/// One choice of the interval and the estimates behind it, as the jobmanager's REST API
/// gave it (its fields appear in the report beside `t_ms`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IntervalSample {
    /// Ms since the job started running (0: chosen before).
    pub t_ms: u64,
    #[serde(flatten)]
    pub chosen: streamd_contract::api::IntervalPoint,
}

impl IntervalReport {
    /// The report of an adaptive interval, times relative to `t0`; `None` for a fixed one.
    pub fn from_info(info: &streamd_contract::api::IntervalInfo, t0: u64) -> Option<IntervalReport> {
        if !info.adaptive {
            return None;
        }
        let points = info
            .history
            .iter()
            .map(|p| IntervalSample { t_ms: p.at_ms.saturating_sub(t0), chosen: p.clone() })
            .collect();
        Some(IntervalReport { min_ms: info.min_ms.unwrap_or(0), max_ms: info.max_ms.unwrap_or(0), points })
    }

    /// The shortest and longest interval chosen.
    pub fn range(&self) -> Option<(u64, u64)> {
        let lo = self.points.iter().map(|p| p.chosen.interval_ms).min()?;
        let hi = self.points.iter().map(|p| p.chosen.interval_ms).max()?;
        Some((lo, hi))
    }
}

/// What happened to one fault of the plan. All times are ms since the job started running.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    /// `kill`, `stop`, `pause`, `netem`, `partition`, …
    pub action: String,
    /// The resolved node(s), e.g. `taskmanager-2` or `taskmanager-1,taskmanager-3`.
    pub target: String,
    /// When the runtime call that applies it returned.
    pub applied_ms: Option<u64>,
    /// When it was undone (`for:` elapsed, unpause, heal); `None` = never undone.
    pub undone_ms: Option<u64>,
    /// When the jobmanager noticed (job left RUNNING, or the node lost its registration).
    pub detected_ms: Option<u64>,
    /// When the job was RUNNING again.
    pub running_ms: Option<u64>,
    /// When records-in was back to the pre-fault rate / past the pre-fault position.
    pub caught_up_ms: Option<u64>,
    /// Network faults: what was measured in the target's namespace (RTT, loss rate, …).
    pub measured: Option<serde_json::Value>,
    // --- extras ---
    /// The plan's trigger, e.g. `4s` or `checkpoint 5`.
    #[serde(default)]
    pub at: String,
    /// From the API call to the observed effect (container state changed, rule in place).
    #[serde(default)]
    pub inject_latency_ms: Option<u64>,
    /// From applied to RUNNING again (see [`RunReport::fill_derived`]).
    #[serde(default)]
    pub recovery_ms: Option<u64>,
    /// Why the fault could not be applied, if it could not.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the chart draws: periodic samples of the job plus discrete events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub samples: Vec<Sample>,
    pub events: Vec<TimelineEvent>,
}

/// One poll of `GET /jobs/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t_ms: u64,
    pub records_in: u64,
    pub records_out: u64,
    /// Job state: `RUNNING`, `RESTARTING`, …
    pub state: String,
    /// Completed checkpoints so far.
    pub checkpoints: u64,
}

/// A point in time worth marking on the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub t_ms: u64,
    pub kind: EventKind,
    pub label: String,
}

/// What kind of mark an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A checkpoint completed.
    Checkpoint,
    /// A fault was applied.
    Fault,
    /// A fault was undone.
    Undo,
    /// The job restarted (attempt increased).
    Restart,
    /// The job is RUNNING (again).
    Running,
}

impl RunReport {
    /// Copies the verdict's outcome, checks and word lists into the report.
    pub fn apply_verdict(&mut self, v: &Verdict) {
        self.verdict = Outcome::from_pass(v.pass);
        self.expectation = v.expectation;
        self.checks = v.checks.clone();
        self.lost = v.lost.clone();
        self.overcounted = v.overcounted.clone();
        self.unexpected = v.unexpected.clone();
        self.duplicates = v.duplicates.clone();
        self.duplicates_total = v.duplicates_total as u64;
        self.malformed = v.malformed.clone();
        self.lost_lines = v.socket_losses.clone();
        self.transactions = v.transactions as u64;
        self.words_distinct = v.finals.len() as u64;
        if self.words_total == 0 {
            self.words_total = v.oracle_words;
        }
    }

    /// Fills what can be computed from other fields and was left empty: each fault's
    /// `recovery_ms` (RUNNING again minus applied), and `words_per_s` (words over the
    /// run's duration).
    pub fn fill_derived(&mut self) {
        for f in &mut self.faults {
            if f.recovery_ms.is_none() {
                if let (Some(a), Some(r)) = (f.applied_ms, f.running_ms) {
                    f.recovery_ms = Some(r.saturating_sub(a));
                }
            }
        }
        if self.words_per_s == 0.0 && self.duration_ms > 0 {
            self.words_per_s = self.words_total as f64 * 1000.0 / self.duration_ms as f64;
        }
    }

    /// Names of the failed checks that decide the verdict.
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks.iter().filter(|(_, c)| !c.ok && c.required).map(|(k, _)| k.as_str()).collect()
    }
}

/// A report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write report {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot encode report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode JUnit report: {0}")]
    Junit(#[from] quick_junit::SerializeError),
}

/// Writes `bytes` to `path` atomically (temp file, rename): a CI step reading the report
/// never sees half of it.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), ReportError> {
    let io = |source| ReportError::Io { path: path.to_path_buf(), source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Milliseconds as seconds for humans: `1.234s`; `-` for none.
/// The cells of a fault's row in the terminal's and the HTML report's fault tables (see
/// [`FAULT_COLUMNS`]): its number (from 1), what, where, when planned, each time in
/// seconds since the job first ran, the injection latency.
pub(crate) fn fault_cells(i: usize, f: &FaultReport) -> [String; 11] {
    [
        (i + 1).to_string(),
        f.action.clone(),
        f.target.clone(),
        if f.at.is_empty() { "-".into() } else { f.at.clone() },
        secs(f.applied_ms),
        secs(f.undone_ms),
        secs(f.detected_ms),
        secs(f.running_ms),
        secs(f.caught_up_ms),
        secs(f.recovery_ms),
        f.inject_latency_ms.map_or("-".into(), |ms| format!("{ms}ms")),
    ]
}

/// The headings of [`fault_cells`].
pub(crate) const FAULT_COLUMNS: [&str; 11] =
    ["#", "action", "target", "at", "applied", "undone", "detected", "running", "caught up", "recovery", "inject"];

pub(crate) fn secs(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{:.2}s", ms as f64 / 1000.0),
        None => "-".into(),
    }
}

/// `12.3 M`, `45.6 k`, `789`: a rate without its unit (`words/s` follows).
pub(crate) fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

#[cfg(test)]
mod interval_tests {
    use super::*;
    use streamd_contract::api::{IntervalInfo, IntervalLimit, IntervalPoint};

    #[test]
    fn the_interval_report_is_relative_to_the_run_and_only_for_adaptive() {
        let point = |at_ms, interval_ms| IntervalPoint { at_ms, interval_ms, cost_ms: Some(5.0), latency_ms: Some(90.0), mtbf_ms: 60_000, failures: 0, limit: IntervalLimit::Optimum };
        let mut info = IntervalInfo { adaptive: true, current_ms: 700, min_ms: Some(100), max_ms: Some(2000), history: vec![point(900, 100), point(1500, 700)] };
        let r = IntervalReport::from_info(&info, 1000).unwrap();
        assert_eq!(r.points.iter().map(|p| (p.t_ms, p.chosen.interval_ms)).collect::<Vec<_>>(), vec![(0, 100), (500, 700)]);
        assert_eq!((r.min_ms, r.max_ms, r.range()), (100, 2000, Some((100, 700))));
        info.adaptive = false;
        assert_eq!(IntervalReport::from_info(&info, 1000), None);
    }
}

#[cfg(test)]
pub(crate) mod sample {
    //! A filled-in report for the writers' tests.
    use super::*;
    use crate::verdict::{DuplicateKind, TxnRef};

    /// An adaptive interval: `min` until the first checkpoint, up to the optimum, down
    /// after the kill at 4.01 s.
    pub fn adaptive() -> IntervalReport {
        use streamd_contract::api::IntervalLimit;
        let p = |t_ms, interval_ms, cost_ms: Option<f64>, mtbf_ms, failures, limit| IntervalSample {
            t_ms,
            chosen: streamd_contract::api::IntervalPoint {
                at_ms: 1_700_000_000_000 + t_ms,
                interval_ms,
                cost_ms,
                latency_ms: cost_ms.map(|c| c * 10.0),
                mtbf_ms,
                failures,
                limit,
            },
        };
        IntervalReport {
            min_ms: 200,
            max_ms: 5000,
            points: vec![
                p(0, 200, None, 60_000, 0, IntervalLimit::Unmeasured),
                p(250, 1300, Some(14.1), 60_250, 0, IntervalLimit::Optimum),
                p(4300, 900, Some(40.2), 32_000, 1, IntervalLimit::Optimum),
            ],
        }
    }

    /// A failed run: a SIGKILL and a pause, one lost and one over-counted word, one
    /// duplicated commit, samples every 250 ms over 12 s with a restart at 4-5.5 s and
    /// 11 checkpoints.
    pub fn failed() -> RunReport {
        let mut r = RunReport {
            scenario: "kill-tm2".into(),
            description: "SIGKILL taskmanager-2 while words stream in.".into(),
            seed: 7,
            runtime: "docker".into(),
            expectation: Expectation::ExactlyOnce,
            run_dir: "target/chaos/runs/kill-tm2-7".into(),
            counts_file: "target/chaos/runs/kill-tm2-7/counts.tsv".into(),
            plan: vec!["at 4s: kill taskmanager-2 (SIGKILL)".into(), "at checkpoint 8: pause taskmanager-1 for 2s".into()],
            cluster_start_ms: Some(3120),
            duration_ms: 12_000,
            words_total: 1_600_000,
            restarts: 1,
            final_state: Some("FINISHED".into()),
            verdict: Outcome::Fail,
            ..Default::default()
        };
        r.checks.insert("final_counts".into(), Check::new(false, "1 lost (kalo 10 -> 8), 1 over-counted (mi 4 -> 5)"));
        r.checks.insert("well_formed".into(), Check::new(true, "40 committed transactions, all complete"));
        r.checks.insert("monotonic".into(), Check::new(false, "1 duplicated commit(s); \"mi\": 4 at 1/3 then 4 at 1/3-1 (repeat)"));
        r.lost.insert("kalo".into(), WordDiff { expected: 10, got: 8 });
        r.overcounted.insert("mi".into(), WordDiff { expected: 4, got: 5 });
        r.duplicates.push(Duplicate {
            word: "mi".into(),
            kind: DuplicateKind::Repeat,
            first: TxnRef { subtask: 1, epoch: 3, part: 0 },
            first_value: 4,
            second: TxnRef { subtask: 1, epoch: 3, part: 1 },
            second_value: 4,
        });
        r.duplicates_total = 1;
        r.faults.push(FaultReport {
            action: "kill".into(),
            target: "taskmanager-2".into(),
            at: "4s".into(),
            applied_ms: Some(4010),
            detected_ms: Some(4030),
            running_ms: Some(5480),
            caught_up_ms: Some(6200),
            inject_latency_ms: Some(12),
            ..Default::default()
        });
        r.faults.push(FaultReport {
            action: "pause".into(),
            target: "taskmanager-1".into(),
            at: "checkpoint 8".into(),
            applied_ms: Some(8500),
            undone_ms: Some(10_500),
            detected_ms: Some(10_400),
            inject_latency_ms: Some(8),
            ..Default::default()
        });
        let mut records = 0u64;
        let mut ckpt = 0;
        for i in 0..=48u64 {
            let t = i * 250;
            let state = if (4030..5480).contains(&t) { "RESTARTING" } else { "RUNNING" };
            if state == "RUNNING" && !(8500..10_500).contains(&t) {
                records += 30_000 + (i % 5) * 1500;
            }
            if t > 0 && t % 1000 == 0 && state == "RUNNING" {
                ckpt += 1;
                r.timeline.events.push(TimelineEvent { t_ms: t, kind: EventKind::Checkpoint, label: format!("chk-{ckpt}") });
            }
            r.timeline.samples.push(Sample { t_ms: t, records_in: records, records_out: records / 2, state: state.into(), checkpoints: ckpt });
        }
        r.checkpoints_completed = ckpt;
        r.timeline.events.push(TimelineEvent { t_ms: 4010, kind: EventKind::Fault, label: "kill taskmanager-2".into() });
        r.timeline.events.push(TimelineEvent { t_ms: 4300, kind: EventKind::Restart, label: "attempt 2".into() });
        r.timeline.events.push(TimelineEvent { t_ms: 5480, kind: EventKind::Running, label: "RUNNING".into() });
        r.timeline.events.push(TimelineEvent { t_ms: 8500, kind: EventKind::Fault, label: "pause taskmanager-1".into() });
        r.timeline.events.push(TimelineEvent { t_ms: 10_500, kind: EventKind::Undo, label: "unpause taskmanager-1".into() });
        r.fill_derived();
        r
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checkpoint_durations_summarise_the_completed_list() {
        let stats = |ms: &[u64]| -> Vec<streamd_contract::api::CheckpointStats> {
            ms.iter()
                .enumerate()
                .map(|(i, &d)| streamd_contract::api::CheckpointStats {
                    id: i as u64 + 1,
                    attempt: 1,
                    trigger_ms: 0,
                    complete_ms: d,
                    duration_ms: d,
                    size_bytes: 0,
                    records_in: 0,
                })
                .collect()
        };
        assert_eq!(super::CheckpointDurations::of(&[]), None);
        let d = super::CheckpointDurations::of(&stats(&[30, 10, 20, 100])).unwrap();
        assert_eq!((d.count, d.mean, d.median, d.max), (4, 40.0, 25.0, 100));
        assert_eq!(super::CheckpointDurations::of(&stats(&[7, 3, 5])).unwrap().median, 5.0);
    }

    use super::*;

    #[test]
    fn an_empty_report_fails() {
        assert_eq!(RunReport::default().verdict, Outcome::Fail);
    }

    #[test]
    fn derived_fields_are_filled_only_when_missing() {
        let mut r = sample::failed();
        assert_eq!(r.faults[0].recovery_ms, Some(5480 - 4010));
        assert_eq!(r.faults[1].recovery_ms, None, "never RUNNING again: no recovery time");
        assert!((r.words_per_s - 1_600_000.0 / 12.0).abs() < 1e-6);
        r.words_per_s = 5.0;
        r.faults[0].recovery_ms = Some(1);
        r.fill_derived();
        assert_eq!((r.words_per_s, r.faults[0].recovery_ms), (5.0, Some(1)));
        assert_eq!(r.failed_checks(), ["final_counts", "monotonic"]);
    }
}
