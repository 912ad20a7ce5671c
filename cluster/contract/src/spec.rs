//! The job spec: what the jobmanager runs, read from `/data/job.yaml` (application mode:
//! every jobmanager of an HA group reads the same file).

use crate::duration::{parse_duration, serde_opt as dur_opt, serde_str as dur};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// A word-count job: `source(p) -> tokenize -> hash-partition -> count(p) -> sink(p)`,
/// as a running count or, with `kind: window-wordcount`, counted per event-time window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Job id; names the checkpoint and output directories.
    #[serde(default = "default_job_id")]
    pub job_id: String,
    #[serde(default, skip_serializing_if = "JobKind::is_default")]
    pub kind: JobKind,
    /// `window-wordcount`: the width of its tumbling event-time windows.
    #[serde(default, with = "dur_opt", skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    pub parallelism: u32,
    /// A fixed period (`0` disables periodic checkpoints; a final one is still taken at the
    /// end of input), or `{ adaptive: { .. } }`: see [`CheckpointInterval`].
    #[serde(default)]
    pub checkpoint_interval: CheckpointInterval,
    /// A pending checkpoint older than this is declined.
    #[serde(default = "default_ckpt_timeout", with = "dur")]
    pub checkpoint_timeout: Duration,
    /// Completed checkpoints kept on disk (Flink's `state.checkpoints.num-retained`).
    #[serde(default = "default_retained")]
    pub checkpoints_retained: usize,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub restart: RestartStrategy,
    pub input: InputSpec,
    #[serde(default)]
    pub heartbeat: HeartbeatSpec,
    /// The first deployment waits until this many taskmanagers registered (so a test's
    /// cluster is spread as planned); later restarts take whatever slots there are.
    #[serde(default)]
    pub wait_for_taskmanagers: u32,
    /// Task-local recovery (Flink's `state.backend.local-recovery`): every taskmanager also
    /// keeps its tasks' latest snapshots on its own node-local storage, a restart places
    /// each task on its previous taskmanager when it can, and a task placed there restores
    /// from that copy (after checking it) instead of shared checkpoint storage.
    #[serde(default, skip_serializing_if = "is_false")]
    pub local_recovery: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_job_id() -> String {
    "wordcount".into()
}
fn default_ckpt_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retained() -> usize {
    3
}

/// How often checkpoints are triggered.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointInterval {
    /// Every this long (`0`: no periodic checkpoints).
    Fixed(Duration),
    /// Chosen by the jobmanager as the job runs, from the measured checkpoint cost and the
    /// observed failures (see [`AdaptiveInterval`]).
    Adaptive(AdaptiveInterval),
}

impl Default for CheckpointInterval {
    fn default() -> Self {
        CheckpointInterval::Fixed(Duration::from_secs(1))
    }
}

impl CheckpointInterval {
    /// Periodic checkpoints are off (`checkpoint_interval: 0`).
    pub fn is_disabled(&self) -> bool {
        matches!(self, CheckpointInterval::Fixed(d) if d.is_zero())
    }

    /// The period to assume before the job runs (estimates, lint): the fixed period, or an
    /// adaptive interval's `min`, the fastest it ever checkpoints.
    pub fn nominal(&self) -> Duration {
        match self {
            CheckpointInterval::Fixed(d) => *d,
            CheckpointInterval::Adaptive(a) => a.min,
        }
    }

    pub fn adaptive(&self) -> Option<&AdaptiveInterval> {
        match self {
            CheckpointInterval::Adaptive(a) => Some(a),
            CheckpointInterval::Fixed(_) => None,
        }
    }
}

impl std::fmt::Display for CheckpointInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fd = crate::duration::format_duration;
        match self {
            CheckpointInterval::Fixed(d) => f.write_str(&fd(*d)),
            CheckpointInterval::Adaptive(a) => {
                write!(f, "adaptive {}..{}", fd(a.min), fd(a.max))?;
                if let Some(t) = a.target_recovery {
                    write!(f, ", target recovery {}", fd(t))?;
                }
                write!(f, ", prior MTBF {}", fd(a.mtbf))
            }
        }
    }
}

/// `checkpoint_interval: { adaptive: { min, max, target_recovery, mtbf } }`: the jobmanager
/// sets the interval near the Young/Daly optimum from the measured checkpoint cost and the
/// estimated mean time between failures, bounded by `target_recovery` and clamped to
/// `[min, max]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveInterval {
    #[serde(with = "dur")]
    pub min: Duration,
    #[serde(with = "dur")]
    pub max: Duration,
    /// Keep the expected replay after a failure (interval / 2 + the checkpoint latency, trigger
    /// to complete) within this.
    #[serde(default, with = "dur_opt", skip_serializing_if = "Option::is_none")]
    pub target_recovery: Option<Duration>,
    /// The prior mean time between failures, worth 10 s of running at that rate: what the
    /// estimate starts from before the job has failed.
    #[serde(default = "default_prior_mtbf", with = "dur")]
    pub mtbf: Duration,
}

/// Without a prior, one failure a minute: pessimistic enough that a job that fails often
/// is not caught with a long interval before its first failures are seen.
pub fn default_prior_mtbf() -> Duration {
    Duration::from_secs(60)
}

impl AdaptiveInterval {
    /// The bounds' rules, as one sentence per broken rule.
    pub fn check(&self) -> Result<(), String> {
        if self.min.is_zero() {
            return Err("min: expected a duration above 0".into());
        }
        if self.max < self.min {
            return Err("max: expected at least min".into());
        }
        if self.mtbf.is_zero() {
            return Err("mtbf: expected a duration above 0".into());
        }
        if self.target_recovery.is_some_and(|t| t.is_zero()) {
            return Err("target_recovery: expected a duration above 0".into());
        }
        Ok(())
    }
}

const INTERVAL_EXPECTED: &str = "a duration like `1s`, or `{ adaptive: { min: 200ms, max: 5s } }`";

impl Serialize for CheckpointInterval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            CheckpointInterval::Fixed(d) => s.serialize_str(&crate::duration::format_duration(*d)),
            CheckpointInterval::Adaptive(a) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("adaptive", a)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for CheckpointInterval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CheckpointInterval;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(INTERVAL_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CheckpointInterval, E> {
                if s.trim() == "adaptive" {
                    return Err(E::custom(format!("`adaptive` needs its bounds: expected {INTERVAL_EXPECTED}")));
                }
                parse_duration(s).map(CheckpointInterval::Fixed).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<CheckpointInterval, E> {
                match n {
                    0 => Ok(CheckpointInterval::Fixed(Duration::ZERO)),
                    n => Err(E::custom(format!("invalid duration `{n}`: expected a number with a unit (ms, s, m, h), e.g. `{n}s`"))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CheckpointInterval, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!("empty mapping: expected {INTERVAL_EXPECTED}")));
                };
                if key != "adaptive" {
                    return Err(de::Error::unknown_field(&key, &["adaptive"]));
                }
                let a: AdaptiveInterval = map.next_value()?;
                if let Some(k) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!("unexpected `{k}` beside `adaptive`: expected {INTERVAL_EXPECTED}")));
                }
                Ok(CheckpointInterval::Adaptive(a))
            }
        }
        d.deserialize_any(V)
    }
}

/// What the job computes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// A running count per word; every checkpoint commits the new count of each word
    /// that changed.
    #[default]
    Wordcount,
    /// Counts per word in tumbling event-time windows (`window`); each window's counts are
    /// committed once, after the watermark passed its end (see [`crate::window`]).
    WindowWordcount,
}

impl JobKind {
    fn is_default(&self) -> bool {
        *self == JobKind::Wordcount
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobKind::Wordcount => "wordcount",
            JobKind::WindowWordcount => "window-wordcount",
        })
    }
}

/// Flink's `CheckpointingMode`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Barrier alignment + two-phase-commit sink.
    #[default]
    ExactlyOnce,
    /// No alignment; the sink commits eagerly. Exists so a checker can be shown to catch it.
    AtLeastOnce,
}

/// Restart strategies with Flink's semantics (`restart-strategy.type`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "strategy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RestartStrategy {
    /// Fail the job at the first failure.
    None,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay {
        attempts: u32,
        #[serde(with = "dur")]
        delay: Duration,
    },
    /// Restart after `delay` unless more than `max_failures` happened within `interval`.
    FailureRate {
        max_failures: u32,
        #[serde(with = "dur")]
        interval: Duration,
        #[serde(with = "dur")]
        delay: Duration,
    },
    /// Delay doubles (times `multiplier`) from `initial` up to `max`, with +-`jitter`
    /// (a fraction); it resets to `initial` after `reset_threshold` without failure.
    ExponentialDelay {
        #[serde(with = "dur")]
        initial: Duration,
        #[serde(with = "dur")]
        max: Duration,
        #[serde(default = "default_multiplier")]
        multiplier: f64,
        #[serde(default = "default_jitter")]
        jitter: f64,
        #[serde(default = "default_reset", with = "dur")]
        reset_threshold: Duration,
        /// Give up after this many restarts (Flink: `attempts-before-reset-backoff`); default unbounded.
        #[serde(default)]
        attempts: Option<u32>,
    },
}

fn default_multiplier() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.1
}
fn default_reset() -> Duration {
    Duration::from_secs(3600)
}

impl Default for RestartStrategy {
    /// Flink's default with checkpointing on: exponential-delay 1 s .. 1 min; ours starts
    /// lower because our recovery target is 2 s.
    fn default() -> Self {
        RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.1,
            reset_threshold: Duration::from_secs(3600),
            attempts: None,
        }
    }
}

/// Where the lines come from, and how fast.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSpec>,
    /// Lines from a line server, like Flink's `socketTextStream` reading `nc -l 9000`:
    /// not replayable (see [`crate::lines`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<SocketSpec>,
    /// Lines per second over all source subtasks; 0 = as fast as possible.
    #[serde(default)]
    pub rate: u64,
    /// Event time between consecutive lines (line `i` is at `i ×` this); windowed jobs only.
    #[serde(default = "default_event_time_per_line", with = "dur", skip_serializing_if = "is_default_event_time")]
    pub event_time_per_line: Duration,
}

fn default_event_time_per_line() -> Duration {
    Duration::from_millis(1)
}
fn is_default_event_time(d: &Duration) -> bool {
    *d == default_event_time_per_line()
}

/// Deterministic Zipf-like lines from a seed (see [`crate::input::Generator`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    pub lines: u64,
    #[serde(default = "default_wpl")]
    pub words_per_line: u32,
    #[serde(default = "default_vocab")]
    pub vocabulary: u32,
    #[serde(default)]
    pub seed: u64,
}
fn default_wpl() -> u32 {
    8
}
fn default_vocab() -> u32 {
    2000
}

/// A text file; relative paths are resolved against the data directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    /// Tail the file as it grows until `<path>.end` exists (interactive feeding).
    #[serde(default)]
    pub follow: bool,
}

/// A line server to read from. Non-parallel, as Flink's socket source: source subtask 0
/// reads it, the others end at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SocketSpec {
    /// The line server's host as taskmanagers reach it (its node name on the cluster
    /// network); a taskmanager's `--line-server` overrides host and port (process runtime).
    #[serde(default = "default_socket_host")]
    pub host: String,
    pub port: u16,
}
fn default_socket_host() -> String {
    crate::lines::NODE.into()
}

/// Taskmanager heartbeats (Flink: `heartbeat.interval` / `heartbeat.timeout`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSpec {
    #[serde(default = "default_hb_interval", with = "dur")]
    pub interval: Duration,
    #[serde(default = "default_hb_timeout", with = "dur")]
    pub timeout: Duration,
}
fn default_hb_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_hb_timeout() -> Duration {
    Duration::from_secs(2)
}
impl Default for HeartbeatSpec {
    fn default() -> Self {
        HeartbeatSpec { interval: default_hb_interval(), timeout: default_hb_timeout() }
    }
}

/// An invalid job spec: what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read job spec {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid job spec {path}: {message}")]
    Invalid { path: String, message: String },
}

impl JobSpec {
    /// Reads and validates a job spec file.
    pub fn load(path: &Path) -> Result<JobSpec, SpecError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io { path: p.clone(), source })?;
        Self::parse(&text).map_err(|message| SpecError::Invalid { path: p, message })
    }

    /// Parses and validates YAML text. The error names the field (and line/column when
    /// the YAML parser knows it).
    pub fn parse(text: &str) -> Result<JobSpec, String> {
        let spec: JobSpec = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what types cannot: ranges and exclusive choices.
    pub fn validate(&self) -> Result<(), String> {
        if self.parallelism == 0 || self.parallelism > 1024 {
            return Err(format!("parallelism: expected 1..=1024, got {}", self.parallelism));
        }
        if self.job_id.is_empty() || !self.job_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("job_id: expected letters, digits, `-` or `_`, got `{}`", self.job_id));
        }
        let given = [self.input.generate.is_some(), self.input.file.is_some(), self.input.socket.is_some()];
        if given.iter().filter(|&&g| g).count() > 1 {
            return Err("input: expected exactly one of `generate`, `file` or `socket`, got more".into());
        }
        if let Some(s) = &self.input.socket {
            if s.port == 0 {
                return Err("input.socket.port: expected 1..=65535, got 0".into());
            }
            // The line server serves sources and feeders side by side.
            if s.port == crate::lines::FEED_PORT {
                return Err(format!("input.socket.port: {} is the line server's feed port: expected another", s.port));
            }
            if s.host.is_empty() {
                return Err("input.socket.host: expected a host name".into());
            }
        }
        if given.iter().all(|&g| !g) {
            return Err("input: expected one of `generate`, `file` or `socket`".into());
        }
        if let Some(g) = &self.input.generate {
            if g.words_per_line == 0 {
                return Err("input.generate.words_per_line: expected at least 1".into());
            }
            if g.vocabulary == 0 || g.vocabulary > 10_000_000 {
                return Err(format!("input.generate.vocabulary: expected 1..=10000000, got {}", g.vocabulary));
            }
        }
        if let Some(f) = &self.input.file {
            if f.path.is_empty() {
                return Err("input.file.path: expected a path".into());
            }
        }
        self.validate_window()?;
        if self.heartbeat.interval.is_zero() || self.heartbeat.timeout <= self.heartbeat.interval {
            return Err("heartbeat: expected 0 < interval < timeout".into());
        }
        if let Some(a) = self.checkpoint_interval.adaptive() {
            a.check().map_err(|m| format!("checkpoint_interval.adaptive.{m}"))?;
        }
        if self.checkpoints_retained == 0 {
            return Err("checkpoints_retained: expected at least 1".into());
        }
        match &self.restart {
            RestartStrategy::ExponentialDelay { initial, max, multiplier, jitter, .. } => {
                if initial > max {
                    return Err("restart.initial: expected at most restart.max".into());
                }
                if *multiplier < 1.0 {
                    return Err("restart.multiplier: expected at least 1.0".into());
                }
                if !(0.0..=1.0).contains(jitter) {
                    return Err("restart.jitter: expected a fraction in 0.0..=1.0".into());
                }
            }
            RestartStrategy::FailureRate { max_failures, .. } if *max_failures == 0 => {
                return Err("restart.max_failures: expected at least 1".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// `window` belongs to `window-wordcount` and is a whole number of milliseconds, as is
    /// `input.event_time_per_line` (event times are milliseconds).
    fn validate_window(&self) -> Result<(), String> {
        let whole_ms = crate::window::is_whole_ms;
        match (self.kind, self.window) {
            (JobKind::WindowWordcount, None) => return Err("window: expected a window width like `5s` for kind window-wordcount".into()),
            (JobKind::Wordcount, Some(_)) => return Err("window: only a window-wordcount job has windows (set kind: window-wordcount)".into()),
            (JobKind::WindowWordcount, Some(w)) if !whole_ms(w) => {
                return Err(format!("window: expected a positive whole number of milliseconds, got {w:?}"))
            }
            _ => {}
        }
        if !whole_ms(self.input.event_time_per_line) {
            return Err(format!(
                "input.event_time_per_line: expected a positive whole number of milliseconds, got {:?}",
                self.input.event_time_per_line
            ));
        }
        Ok(())
    }

    /// The windowed job's clock; `None` for a running count.
    pub fn window_clock(&self) -> Option<crate::window::WindowClock> {
        match (self.kind, self.window) {
            (JobKind::WindowWordcount, Some(w)) => Some(crate::window::WindowClock {
                width_ms: w.as_millis() as u64,
                per_line_ms: self.input.event_time_per_line.as_millis() as u64,
            }),
            _ => None,
        }
    }

    /// Reads a duration field by name, for callers that hold strings (CLI flags).
    pub fn duration(s: &str) -> Result<Duration, String> {
        parse_duration(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_spec() {
        let s = JobSpec::parse(
            "parallelism: 4\ncheckpoint_interval: 500ms\ndelivery: at-least-once\n\
             restart: { strategy: fixed-delay, attempts: 3, delay: 1s }\n\
             input: { generate: { lines: 100, words_per_line: 4, vocabulary: 50, seed: 7 }, rate: 1000 }\n",
        )
        .unwrap();
        assert_eq!(s.parallelism, 4);
        assert_eq!(s.delivery, Delivery::AtLeastOnce);
        assert_eq!(s.restart, RestartStrategy::FixedDelay { attempts: 3, delay: Duration::from_secs(1) });
        assert_eq!(s.heartbeat.timeout, Duration::from_secs(2));
        let s = JobSpec::parse("parallelism: 2\ninput: { socket: { port: 9000 } }\n").unwrap();
        assert_eq!(s.input.socket, Some(SocketSpec { host: "lines-1".into(), port: 9000 }));
    }

    #[test]
    fn a_windowed_job_needs_a_window_in_whole_milliseconds() {
        let s = JobSpec::parse("kind: window-wordcount\nwindow: 5s\nparallelism: 2\ninput: { generate: { lines: 10 }, event_time_per_line: 2ms }\n").unwrap();
        assert_eq!(s.window_clock(), Some(crate::window::WindowClock { width_ms: 5000, per_line_ms: 2 }));
        // It round-trips through the YAML the executor writes.
        assert_eq!(JobSpec::parse(&serde_yaml::to_string(&s).unwrap()).unwrap(), s);
        let e = JobSpec::parse("kind: window-wordcount\nparallelism: 2\ninput: { generate: { lines: 10 } }\n").unwrap_err();
        assert!(e.contains("window"), "{e}");
        let e = JobSpec::parse("window: 5s\nparallelism: 2\ninput: { generate: { lines: 10 } }\n").unwrap_err();
        assert!(e.contains("window-wordcount"), "{e}");
        let e = JobSpec::parse("kind: window-wordcount\nwindow: 1.5ms\nparallelism: 2\ninput: { generate: { lines: 10 } }\n").unwrap_err();
        assert!(e.contains("milliseconds"), "{e}");
        assert_eq!(JobSpec::parse("parallelism: 2\ninput: { generate: { lines: 10 } }\n").unwrap().window_clock(), None);
    }

    #[test]
    fn an_interval_is_fixed_or_adaptive() {
        let base = "parallelism: 2\ninput: { generate: { lines: 10 } }\n";
        let s = JobSpec::parse(base).unwrap();
        assert_eq!(s.checkpoint_interval, CheckpointInterval::Fixed(Duration::from_secs(1)));
        let s = JobSpec::parse(&format!("{base}checkpoint_interval: 0\n")).unwrap();
        assert!(s.checkpoint_interval.is_disabled());
        let s = JobSpec::parse(&format!("{base}checkpoint_interval: {{ adaptive: {{ min: 200ms, max: 5s, target_recovery: 3s }} }}\n")).unwrap();
        let a = s.checkpoint_interval.adaptive().unwrap();
        assert_eq!((a.min, a.max, a.target_recovery, a.mtbf), (Duration::from_millis(200), Duration::from_secs(5), Some(Duration::from_secs(3)), default_prior_mtbf()));
        assert_eq!(s.checkpoint_interval.nominal(), Duration::from_millis(200));
        // It round-trips through the YAML the executor writes.
        assert_eq!(JobSpec::parse(&serde_yaml::to_string(&s).unwrap()).unwrap(), s);
        let e = JobSpec::parse(&format!("{base}checkpoint_interval: adaptive\n")).unwrap_err();
        assert!(e.contains("needs its bounds"), "{e}");
        let e = JobSpec::parse(&format!("{base}checkpoint_interval: {{ adaptive: {{ min: 2s, max: 1s }} }}\n")).unwrap_err();
        assert!(e.contains("checkpoint_interval.adaptive.max"), "{e}");
        let e = JobSpec::parse(&format!("{base}checkpoint_interval: {{ adaptive: {{ min: 1s }} }}\n")).unwrap_err();
        assert!(e.contains("max"), "{e}");
        let e = JobSpec::parse(&format!("{base}checkpoint_interval: {{ adaptiv: {{ min: 1s, max: 2s }} }}\n")).unwrap_err();
        assert!(e.contains("adaptiv"), "{e}");
    }

    #[test]
    fn rejects_unknown_fields_and_names_them() {
        let e = JobSpec::parse("parallelism: 2\nparalelism: 3\ninput: { file: { path: x } }\n").unwrap_err();
        assert!(e.contains("paralelism"), "{e}");
        let e = JobSpec::parse("parallelism: 2\ninput: { file: { path: x } }\nrestart: { strategy: fixed-delay, attempts: 1, delay: 1s, foo: 1 }\n").unwrap_err();
        assert!(e.contains("foo"), "{e}");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(JobSpec::parse("parallelism: 0\ninput: { file: { path: x } }\n").unwrap_err().contains("parallelism"));
        assert!(JobSpec::parse("parallelism: 1\ninput: { rate: 5 }\n").unwrap_err().contains("input"));
        let e = JobSpec::parse("parallelism: 1\ninput: { socket: { port: 9000 }, file: { path: x } }\n").unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        assert!(JobSpec::parse("parallelism: 1\ninput: { socket: { port: 0 } }\n").unwrap_err().contains("input.socket.port"));
        assert!(JobSpec::parse("parallelism: 1\ninput: { socket: { port: 6125 } }\n").unwrap_err().contains("feed port"));
        assert!(JobSpec::parse("parallelism: 1\ninput: { socket: { port: 9000, hots: x } }\n").unwrap_err().contains("hots"));
        assert!(JobSpec::parse("parallelism: 1\ncheckpoint_interval: 5 parsecs\ninput: { file: { path: x } }\n")
            .unwrap_err()
            .contains("unknown unit"));
    }
}
