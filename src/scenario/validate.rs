//! Raw scenario -> [`Plan`]: defaults, ranges, and every check that needs more than one
//! field (parallelism against slots, a node against the cluster). Errors are placed with
//! the position index, at the key or value they are about.

use super::faults;
use super::locate::{fmt_d, keypath, unknown_node, Ctx};
use super::plan::{ClusterPlan, Expectations, FlinkPlan, OutputExpectation, Plan};
use super::pos::Seg;
use super::raw::{RawInterval, RawCluster, RawStorage, RawExpect, RawFlink, RawInput, RawJob, RawOutput, RawRestart, RawScenario, RawSocket, StrategyName};
use crate::engine::Engine;
use super::ScenarioError;
use crate::nodes::canonical as canonical_name;
use crate::runtime::Resources;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use streamd_contract::spec::{AdaptiveInterval, CheckpointInterval, Delivery, FileSpec, GenerateSpec, HeartbeatSpec, InputSpec, JobKind, JobSpec, RestartStrategy, SocketSpec};

/// Validates a deserialized scenario into a plan.
pub(super) fn plan(raw: RawScenario, cx: &Ctx<'_>, seed_override: Option<u64>) -> Result<Plan, ScenarioError> {
    let name = match raw.name {
        Some(n) => {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(cx.at_value(&keypath!["name"], format!("invalid name `{n}`: expected letters, digits, `-`, `_` or `.` (it names the run)")));
            }
            n
        }
        None => cx
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "scenario".into()),
    };
    let seed = seed_override.or(raw.seed).unwrap_or(0);
    let mut cluster = cluster(raw.cluster, cx)?;
    let expect = expect(raw.expect, cx)?;
    let socket = socket(raw.input.socket.as_ref(), &cluster, cx)?;
    let (fed, input_source) = input(raw.input, seed, cx)?;
    // With a socket the engine reads the line server, and chaos feeds it the input.
    let (input, feed) = match socket {
        Some(s) => {
            cluster.lines = true;
            (InputSpec { generate: None, file: None, socket: Some(s), rate: 0, event_time_per_line: fed.event_time_per_line }, Some(fed))
        }
        None => (fed, None),
    };
    let heartbeat_given = raw.job.heartbeat.is_some();
    let job = job(raw.job, input, &cluster, cx)?;
    let flink = flink(raw.flink, &cluster, heartbeat_given.then(|| job.heartbeat.clone()), cx)?;
    let (faults, warnings) = faults::plan(raw.faults.unwrap_or_default(), &cluster, &job, &expect, seed, cx)?;
    Ok(Plan {
        name,
        description: raw.description.unwrap_or_default().trim().to_string(),
        file: cx.file.to_path_buf(),
        seed,
        cluster,
        job,
        input_source,
        feed,
        faults,
        expect,
        flink,
        warnings,
    })
}

/// The Flink section: only with `cluster.engine: flink` (elsewhere it would be silently
/// ignored), option names non-empty.
fn flink(
    raw: Option<RawFlink>,
    cluster: &ClusterPlan,
    heartbeat: Option<HeartbeatSpec>,
    cx: &Ctx<'_>,
) -> Result<Option<FlinkPlan>, ScenarioError> {
    if cluster.engine != Engine::Flink {
        return match raw {
            Some(_) => Err(cx.at_key(&keypath!["flink"], "`flink` applies only with `cluster.engine: flink`: expected no `flink` section, or that engine")),
            None => Ok(None),
        };
    }
    let mut config = Vec::new();
    for (key, value) in raw.and_then(|r| r.config).map(|m| m.0).unwrap_or_default() {
        if key.trim().is_empty() || key.contains(char::is_whitespace) {
            return Err(cx.at_key(&keypath!["flink", "config", key.as_str()], format!("`{key}` is not a Flink option name: expected a dotted key like `heartbeat.interval`")));
        }
        config.push((key, value.0));
    }
    Ok(Some(FlinkPlan { heartbeat, config }))
}

fn in_range(cx: &Ctx<'_>, path: &[Seg], v: u32, lo: u32, hi: u32) -> Result<u32, ScenarioError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(cx.at_value(path, format!("{v} is out of range: expected {lo} to {hi}")))
    }
}

fn cluster(raw: Option<RawCluster>, cx: &Ctx<'_>) -> Result<ClusterPlan, ScenarioError> {
    let raw = raw.unwrap_or_default();
    let engine = raw.engine.unwrap_or_default();
    let checkpoint_storage = match raw.checkpoint_storage {
        None => None,
        Some(_) if engine == Engine::Flink => {
            return Err(cx.at_key(
                &keypath!["cluster", "checkpoint_storage"],
                "the remote-storage model acts through streamd's disk passthrough: expected no `checkpoint_storage` with `cluster.engine: flink`",
            ))
        }
        Some(RawStorage { latency: None, bandwidth: None }) => {
            return Err(cx.at_key(
                &keypath!["cluster", "checkpoint_storage"],
                "checkpoint_storage without a model: expected `latency`, `bandwidth` or both",
            ))
        }
        Some(s) => Some(crate::diskfault::StorageModel {
            path: "checkpoints".into(),
            latency: s.latency.map(|d| d.0).unwrap_or_default(),
            // `Rate` is in bits per second (tc's syntax); the model moves bytes.
            bandwidth: s.bandwidth.map(|r| (r.0 / 8).max(1)).unwrap_or(0),
        }),
    };
    let mut plan = ClusterPlan {
        engine,
        jobmanagers: in_range(cx, &keypath!["cluster", "jobmanagers"], raw.jobmanagers.unwrap_or(1), 1, 9)?,
        taskmanagers: in_range(cx, &keypath!["cluster", "taskmanagers"], raw.taskmanagers.unwrap_or(3), 1, 64)?,
        slots: in_range(cx, &keypath!["cluster", "slots"], raw.slots.unwrap_or(2), 1, 64)?,
        resources: BTreeMap::new(),
        lines: false,
        checkpoint_storage,
    };
    for (key, res) in raw.resources.map(|m| m.0).unwrap_or_default() {
        let p = keypath!["cluster", "resources", key.as_str()];
        let Some(name) = canonical_name(&key).filter(|n| plan.has_node(n)) else {
            return Err(cx.at_key(&p, unknown_node(&key, &plan, "")));
        };
        if plan.resources.contains_key(&name) {
            return Err(cx.at_key(&p, format!("`{key}` is `{name}`, which already has resources: expected each node once")));
        }
        plan.resources.insert(name, Resources { cpus: res.cpus.map(|c| c.0), memory_bytes: res.memory.map(|m| m.0) });
    }
    Ok(plan)
}

fn job(raw: RawJob, input: InputSpec, cluster: &ClusterPlan, cx: &Ctx<'_>) -> Result<JobSpec, ScenarioError> {
    let slots = cluster.total_slots();
    if raw.parallelism == 0 {
        return Err(cx.at_value(&keypath!["job", "parallelism"], "0 is out of range: expected at least 1"));
    }
    if raw.parallelism > slots {
        return Err(cx.at_value(
            &keypath!["job", "parallelism"],
            format!(
                "parallelism {} is above the cluster's {slots} slots ({} taskmanagers x {} slots): expected at most {slots}, or more taskmanagers/slots",
                raw.parallelism, cluster.taskmanagers, cluster.slots
            ),
        ));
    }
    let heartbeat = match raw.heartbeat {
        None => HeartbeatSpec::default(),
        Some(h) => {
            let d = HeartbeatSpec::default();
            let hb = HeartbeatSpec { interval: h.interval.map_or(d.interval, |x| x.0), timeout: h.timeout.map_or(d.timeout, |x| x.0) };
            if hb.interval.is_zero() || hb.timeout <= hb.interval {
                return Err(cx.at_value(&keypath!["job", "heartbeat"], "expected 0 < interval < timeout"));
            }
            hb
        }
    };
    let kind = raw.kind.unwrap_or_default();
    let window = window(kind, raw.window, cluster, cx)?;
    if raw.local_recovery == Some(true) && cluster.engine == Engine::Flink {
        return Err(cx.at_value(
            &keypath!["job", "local_recovery"],
            "task-local recovery is a streamd option here: expected `false` (or no key) with `cluster.engine: flink`",
        ));
    }
    let spec = JobSpec {
        job_id: "wordcount".into(),
        kind,
        window,
        parallelism: raw.parallelism,
        checkpoint_interval: checkpoint_interval(raw.checkpoint_interval, cluster, cx)?,
        checkpoint_timeout: Duration::from_secs(10),
        checkpoints_retained: 3,
        delivery: raw.delivery.unwrap_or(Delivery::ExactlyOnce),
        restart: match raw.restart {
            Some(r) => restart(r, cx)?,
            None => RestartStrategy::default(),
        },
        input,
        heartbeat,
        // Deploy only once every taskmanager registered, so the job is spread over the whole
        // cluster and a fault on `taskmanager-2` hits running tasks.
        wait_for_taskmanagers: cluster.taskmanagers,
        local_recovery: raw.local_recovery.unwrap_or(false),
    };
    // The engine's own checks, as a safety net: everything it rejects was rejected above
    // with a better position, so this only fires if the two drift apart.
    spec.validate().map_err(|m| cx.at_value(&keypath!["job"], m))?;
    Ok(spec)
}

/// `job.checkpoint_interval`: a duration (default 1s) or `{ adaptive: { min, max,
/// target_recovery, mtbf } }` with `0 < min <= max`; adaptive runs on streamd only (Flink's
/// interval is fixed for the job's life).
fn checkpoint_interval(raw: Option<RawInterval>, cluster: &ClusterPlan, cx: &Ctx<'_>) -> Result<CheckpointInterval, ScenarioError> {
    let a = match raw {
        None => return Ok(CheckpointInterval::default()),
        Some(RawInterval::Fixed(d)) => return Ok(CheckpointInterval::Fixed(d)),
        Some(RawInterval::Adaptive(a)) => a,
    };
    let at = |k: &str| keypath!["job", "checkpoint_interval", "adaptive", k];
    if cluster.engine == Engine::Flink {
        return Err(cx.at_key(
            &keypath!["job", "checkpoint_interval", "adaptive"],
            "an adaptive interval runs on streamd only (Flink checkpoints at one interval for the job's life): expected a duration like `1s` with `cluster.engine: flink`",
        ));
    }
    if a.min.0.is_zero() {
        return Err(cx.at_value(&at("min"), "expected a duration above 0, like `200ms`"));
    }
    if a.max.0 < a.min.0 {
        return Err(cx.at_value(&at("max"), format!("{} is below min {}: expected at least min", fmt_d(a.max.0), fmt_d(a.min.0))));
    }
    if let Some(t) = &a.target_recovery {
        if t.0.is_zero() {
            return Err(cx.at_value(&at("target_recovery"), "expected a duration above 0, like `3s`"));
        }
    }
    if let Some(m) = &a.mtbf {
        if m.0.is_zero() {
            return Err(cx.at_value(&at("mtbf"), "expected a duration above 0: the mean time between failures expected before any is seen, like `30s`"));
        }
    }
    Ok(CheckpointInterval::Adaptive(AdaptiveInterval {
        min: a.min.0,
        max: a.max.0,
        target_recovery: a.target_recovery.map(|t| t.0),
        mtbf: a.mtbf.map_or_else(streamd_contract::spec::default_prior_mtbf, |m| m.0),
    }))
}

/// `job.window`: required by, and only allowed with, `kind: window-wordcount` (streamd
/// only), a positive whole number of milliseconds.
fn window(kind: JobKind, raw: Option<super::raw::Dur>, cluster: &ClusterPlan, cx: &Ctx<'_>) -> Result<Option<Duration>, ScenarioError> {
    if kind == JobKind::WindowWordcount && cluster.engine == Engine::Flink {
        return Err(cx.at_value(&keypath!["job", "kind"], "window-wordcount runs on streamd only: expected `kind: wordcount` with `cluster.engine: flink`"));
    }
    match (kind, raw) {
        (JobKind::WindowWordcount, None) => {
            Err(cx.at_key(&keypath!["job", "kind"], "a window-wordcount job needs its window width: expected `window: 5s` beside `kind`"))
        }
        (JobKind::Wordcount, Some(_)) => {
            Err(cx.at_key(&keypath!["job", "window"], "`window` applies only to `kind: window-wordcount`: expected that kind, or no `window`"))
        }
        (JobKind::WindowWordcount, Some(w)) if !streamd_contract::window::is_whole_ms(w.0) => {
            Err(cx.at_value(&keypath!["job", "window"], "expected a positive whole number of milliseconds, like `5s` or `250ms`"))
        }
        (_, w) => Ok(w.map(|w| w.0)),
    }
}


fn restart(r: RawRestart, cx: &Ctx<'_>) -> Result<RestartStrategy, ScenarioError> {
    let base = keypath!["job", "restart"].to_vec();
    let p = |k: &str| {
        let mut v = base.clone();
        v.push(Seg::from(k));
        v
    };
    let strategy_name = match r.strategy {
        StrategyName::None => "none",
        StrategyName::FixedDelay => "fixed-delay",
        StrategyName::FailureRate => "failure-rate",
        StrategyName::ExponentialDelay => "exponential-delay",
    };
    let allowed: &[&str] = match r.strategy {
        StrategyName::None => &[],
        StrategyName::FixedDelay => &["attempts", "delay"],
        StrategyName::FailureRate => &["max_failures", "interval", "delay"],
        StrategyName::ExponentialDelay => &["initial", "max", "multiplier", "jitter", "reset_threshold", "attempts"],
    };
    let present = [
        ("attempts", r.attempts.is_some()),
        ("delay", r.delay.is_some()),
        ("max_failures", r.max_failures.is_some()),
        ("interval", r.interval.is_some()),
        ("initial", r.initial.is_some()),
        ("max", r.max.is_some()),
        ("multiplier", r.multiplier.is_some()),
        ("jitter", r.jitter.is_some()),
        ("reset_threshold", r.reset_threshold.is_some()),
    ];
    for (field, set) in present {
        if set && !allowed.contains(&field) {
            let takes = if allowed.is_empty() { "takes no parameters".to_string() } else { format!("takes {}", allowed.join(", ")) };
            return Err(cx.at_key(&p(field), format!("`{field}` does not apply to strategy `{strategy_name}`: it {takes}")));
        }
    }
    let d = |x: &Option<super::raw::Dur>, default: Duration| x.as_ref().map_or(default, |v| v.0);
    Ok(match r.strategy {
        StrategyName::None => RestartStrategy::None,
        StrategyName::FixedDelay => {
            let Some(attempts) = r.attempts else {
                return Err(cx.at_value(&base, "missing field `attempts`: expected the number of restarts fixed-delay allows"));
            };
            RestartStrategy::FixedDelay { attempts, delay: d(&r.delay, Duration::from_secs(1)) }
        }
        StrategyName::FailureRate => {
            let Some(max_failures) = r.max_failures else {
                return Err(cx.at_value(&base, "missing field `max_failures`: expected the failures allowed per interval"));
            };
            if max_failures == 0 {
                return Err(cx.at_value(&p("max_failures"), "0 is out of range: expected at least 1"));
            }
            let interval = d(&r.interval, Duration::from_secs(60));
            if interval.is_zero() {
                return Err(cx.at_value(&p("interval"), "expected a positive duration"));
            }
            RestartStrategy::FailureRate { max_failures, interval, delay: d(&r.delay, Duration::from_secs(1)) }
        }
        StrategyName::ExponentialDelay => {
            let initial = d(&r.initial, Duration::from_millis(200));
            let max = d(&r.max, Duration::from_secs(5));
            if initial > max {
                return Err(cx.at_value(&p("initial"), format!("{} is above max ({}): expected initial <= max", fmt_d(initial), fmt_d(max))));
            }
            let multiplier = r.multiplier.unwrap_or(2.0);
            if !(multiplier.is_finite() && multiplier >= 1.0) {
                return Err(cx.at_value(&p("multiplier"), format!("{multiplier} is out of range: expected at least 1.0")));
            }
            let jitter = r.jitter.unwrap_or(0.1);
            if !(0.0..=1.0).contains(&jitter) {
                return Err(cx.at_value(&p("jitter"), format!("{jitter} is out of range: expected a fraction in 0.0..=1.0")));
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                jitter,
                reset_threshold: d(&r.reset_threshold, Duration::from_secs(3600)),
                attempts: r.attempts,
            }
        }
    })
}


/// `input.socket`: a port the line server can serve on, on an engine that has the source.
fn socket(raw: Option<&RawSocket>, cluster: &ClusterPlan, cx: &Ctx<'_>) -> Result<Option<SocketSpec>, ScenarioError> {
    let Some(raw) = raw else { return Ok(None) };
    if cluster.engine != Engine::Streamd {
        return Err(cx.at_key(
            &keypath!["input", "socket"],
            format!("the {} engine has no socket source here: expected `generate` or `file` without `socket`, or `cluster.engine: streamd`", cluster.engine),
        ));
    }
    let p = keypath!["input", "socket", "port"];
    if raw.port == 0 {
        return Err(cx.at_value(&p, "0 is out of range: expected 1 to 65535"));
    }
    if raw.port == streamd_contract::lines::FEED_PORT {
        return Err(cx.at_value(&p, format!("{} is the line server's feed port: expected another port", raw.port)));
    }
    Ok(Some(SocketSpec { host: streamd_contract::lines::NODE.into(), port: raw.port }))
}

fn input(raw: RawInput, seed: u64, cx: &Ctx<'_>) -> Result<(InputSpec, Option<PathBuf>), ScenarioError> {
    let rate = raw.rate.unwrap_or(0);
    let event_time_per_line = match raw.event_time_per_line {
        Some(d) if !streamd_contract::window::is_whole_ms(d.0) => {
            return Err(cx.at_value(&keypath!["input", "event_time_per_line"], "expected a positive whole number of milliseconds, like `1ms`"))
        }
        Some(d) => d.0,
        None => Duration::from_millis(1),
    };
    match (raw.generate, raw.file) {
        (Some(_), Some(_)) => Err(cx.at_key(&keypath!["input", "file"], "both `generate` and `file` given: expected exactly one")),
        (None, None) => Err(cx.at_value(
            &keypath!["input"],
            "missing input: expected `generate: { lines, words_per_line, vocabulary }` or `file: path/to/text.txt` (with `socket`: what chaos feeds into it)",
        )),
        (Some(g), None) => {
            if g.lines == 0 {
                return Err(cx.at_value(&keypath!["input", "generate", "lines"], "0 is out of range: expected at least 1 line"));
            }
            let words_per_line = g.words_per_line.unwrap_or(8);
            if !(1..=10_000).contains(&words_per_line) {
                return Err(cx.at_value(&keypath!["input", "generate", "words_per_line"], format!("{words_per_line} is out of range: expected 1 to 10000")));
            }
            let vocabulary = g.vocabulary.unwrap_or(2000);
            if !(1..=10_000_000).contains(&vocabulary) {
                return Err(cx.at_value(&keypath!["input", "generate", "vocabulary"], format!("{vocabulary} is out of range: expected 1 to 10000000")));
            }
            let generate = GenerateSpec { lines: g.lines, words_per_line, vocabulary, seed };
            Ok((InputSpec { generate: Some(generate), file: None, socket: None, rate, event_time_per_line }, None))
        }
        (None, Some(f)) => {
            let p = keypath!["input", "file"];
            let base = cx.file.parent().unwrap_or(Path::new(""));
            let host = base.join(&f);
            if !host.is_file() {
                return Err(cx.at_value(&p, format!("`{f}` not found (looked for {}): expected a text file, relative to the scenario file", host.display())));
            }
            let abs = std::fs::canonicalize(&host)
                .map_err(|e| cx.at_value(&p, format!("cannot resolve `{f}` ({}): {e}", host.display())))?;
            let Some(basename) = abs.file_name().and_then(|b| b.to_str()).map(str::to_string) else {
                return Err(cx.at_value(&p, format!("`{f}`: expected a file name in UTF-8")));
            };
            check_input_file(&abs).map_err(|msg| cx.at_value(&p, format!("`{f}`{msg}")))?;
            let file = FileSpec { path: format!("input/{basename}"), follow: false };
            Ok((InputSpec { generate: None, file: Some(file), socket: None, rate, event_time_per_line }, Some(abs)))
        }
    }
}

/// What an input file must be for a run to test something: at least one word (an empty
/// input has an empty oracle, which would pass whatever the engine did), and no line
/// longer than [`MAX_LINE_BYTES`]. The error names the file's line (`:L: ...`).
fn check_input_file(path: &Path) -> Result<(), String> {
    let mut words = 0u64;
    let mut index = 0u64;
    let mut too_long = None;
    streamd_contract::input::for_each_file_line(path, |line| {
        index += 1;
        if line.len() > MAX_LINE_BYTES && too_long.is_none() {
            too_long = Some((index, line.len()));
        }
        streamd_contract::tokenizer::for_each_token(line, |_| words += 1);
    })
    .map_err(|e| format!(": cannot read it: {e}"))?;
    if let Some((line, len)) = too_long {
        return Err(format!(
            ":{line}: a line of {len} bytes: expected lines of at most {MAX_LINE_BYTES} bytes (a source sends a chunk of lines as one data frame)"
        ));
    }
    if words == 0 {
        return Err(format!(" has no words ({index} lines, all blank): expected some text; an empty input tests nothing"));
    }
    Ok(())
}

/// The longest input line a scenario may have. A source pre-aggregates a chunk of lines
/// into one data frame of at most `streamd::wire::MAX_FRAME` (64 MiB): a line of 8 MiB of
/// one-letter distinct tokens encodes to under 40 MiB. Tokens of any length below it
/// round-trip whole.
pub const MAX_LINE_BYTES: usize = 8 << 20;

fn expect(raw: Option<RawExpect>, cx: &Ctx<'_>) -> Result<Expectations, ScenarioError> {
    let raw = raw.unwrap_or(RawExpect { output: None, recovery_within: None, timeout: None });
    let output = match raw.output.unwrap_or(RawOutput::ExactlyOnce) {
        RawOutput::ExactlyOnce => OutputExpectation::ExactlyOnce,
        RawOutput::AtLeastOnce => OutputExpectation::AtLeastOnce,
        RawOutput::AtMostOnce => OutputExpectation::AtMostOnce,
        RawOutput::Any => OutputExpectation::Any,
    };
    let recovery_within = raw.recovery_within.map_or(Duration::from_secs(20), |d| d.0);
    let timeout = raw.timeout.map_or(Duration::from_secs(120), |d| d.0);
    if recovery_within.is_zero() {
        return Err(cx.at_value(&keypath!["expect", "recovery_within"], "expected a positive duration"));
    }
    if timeout.is_zero() {
        return Err(cx.at_value(&keypath!["expect", "timeout"], "expected a positive duration"));
    }
    if recovery_within > timeout {
        return Err(cx.at_value(
            &keypath!["expect", "recovery_within"],
            format!("{} is longer than the timeout ({}): expected at most the timeout", fmt_d(recovery_within), fmt_d(timeout)),
        ));
    }
    Ok(Expectations { output, recovery_within, timeout })
}
