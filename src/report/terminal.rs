//! The terminal: live progress while a scenario runs ([`Progress`], indicatif, drawn on
//! stderr and hidden when stderr is not a terminal) and the summary table printed after
//! it ([`summary`]): verdict first, then checks, faults, and the figures.

use super::{fault_cells, rate, secs, Outcome, RunReport, FAULT_COLUMNS};
use crate::verdict::{top_diffs, DuplicateKind, WordDiff};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many lost / over-counted words the summary names.
const TOP: usize = 5;

/// One table comparing runs of the same scenarios on several engines (`--engine
/// streamd,flink`): per run, the verdict and, for its first disruptive fault, how long the
/// API call took (injection), and when after it the failure was detected, the job was
/// RUNNING again and the input had caught up; then the throughput. `-` where a fact is
/// absent (nothing detected, the job never went down).
pub fn comparison(runs: &[RunReport]) -> String {
    let mut rows = vec![[
        "scenario".to_string(),
        "engine".into(),
        "verdict".into(),
        "injection".into(),
        "detection".into(),
        "RUNNING again".into(),
        "caught up".into(),
        "words/s".into(),
    ]];
    for r in runs {
        let f = r.faults.iter().find(|f| f.applied_ms.is_some() && f.action != "start" && f.action != "unpause");
        let after = |t: Option<u64>| match (f.and_then(|f| f.applied_ms), t) {
            (Some(a), Some(t)) => format!("{:.2} s", t.saturating_sub(a) as f64 / 1000.0),
            _ => "-".into(),
        };
        let scenario = r.scenario.strip_suffix(&format!(".{}", r.engine)).unwrap_or(&r.scenario);
        rows.push([
            scenario.to_string(),
            r.engine.clone(),
            match r.verdict {
                Outcome::Pass => "PASS".into(),
                Outcome::Fail => "FAIL".into(),
            },
            f.and_then(|f| f.inject_latency_ms).map_or("-".into(), |ms| format!("{ms} ms")),
            after(f.and_then(|f| f.detected_ms)),
            after(f.and_then(|f| f.running_ms)),
            after(f.and_then(|f| f.caught_up_ms)),
            format!("{:.0}", r.words_per_s),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if n == 0 {
            let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
    }
    out
}

/// The human summary of a run: plain text (it also goes into JUnit's system-out, so no
/// colour codes), about 15-25 lines.
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let verdict = match r.verdict {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
    };
    let mut how = vec![format!("seed {}", r.seed)];
    if !r.runtime.is_empty() {
        how.push(r.runtime.clone());
    }
    if !r.engine.is_empty() {
        how.push(r.engine.clone());
    }
    how.push(r.expectation.to_string());
    let _ = writeln!(s, "{verdict}  {}  ({})", r.scenario, how.join(", "));
    if !r.description.is_empty() {
        let _ = writeln!(s, "      {}", r.description);
    }

    if !r.checks.is_empty() {
        let _ = writeln!(s, "\nchecks");
        let mut rows = Vec::new();
        let mut informational = false;
        for (rule, c) in &r.checks {
            let status = match (c.ok, c.required) {
                (true, _) => "ok",
                (false, true) => "FAIL",
                (false, false) => {
                    informational = true;
                    "fail*"
                }
            };
            rows.push(vec![status.to_string(), rule.clone(), c.details.clone()]);
        }
        table(&mut s, "  ", &rows);
        if informational {
            let _ = writeln!(s, "  * not required by expect.output: {}", r.expectation);
        }
    }

    if !r.faults.is_empty() {
        let _ = writeln!(s, "\nfaults (seconds since the job started running)");
        let mut rows = vec![FAULT_COLUMNS.map(String::from).to_vec()];
        rows.extend(r.faults.iter().enumerate().map(|(i, f)| fault_cells(i, f).to_vec()));
        table(&mut s, "  ", &rows);
        for (i, f) in r.faults.iter().enumerate() {
            if let Some(e) = &f.error {
                let _ = writeln!(s, "  #{}: {e}", i + 1);
            }
            if let Some(line) = f.measured.as_ref().and_then(power_loss_line) {
                let _ = writeln!(s, "  #{} power loss: {line}", i + 1);
            } else if let Some(m) = &f.measured {
                let _ = writeln!(s, "  #{} measured: {m}", i + 1);
            }
        }
    }

    restores(&mut s, &r.restores);

    let _ = writeln!(s);
    let mut figures = vec![
        format!("restarts {}", r.restarts),
        match &r.checkpoint_ms {
            Some(d) => format!("checkpoints {} (median {:.0} ms, max {} ms)", r.checkpoints_completed, d.median, d.max),
            None => format!("checkpoints {}", r.checkpoints_completed),
        },
        format!("{} words/s", rate(r.words_per_s)),
    ];
    if r.duration_ms > 0 {
        figures.push(format!("ran {}", secs(Some(r.duration_ms))));
    }
    if let Some(ms) = r.cluster_start_ms {
        figures.push(format!("cluster up in {}", secs(Some(ms))));
    }
    if let Some(st) = &r.final_state {
        figures.push(format!("job {st}"));
    }
    let _ = writeln!(s, "{}", figures.join(" · "));
    if let Some(line) = interval_line(r) {
        let _ = writeln!(s, "{line}");
    }
    if let Some(line) = storage_line(r) {
        let _ = writeln!(s, "{line}");
    }

    words_line(&mut s, "lost", &r.lost);
    words_line(&mut s, "over-counted", &r.overcounted);
    words_line(&mut s, "unexpected", &r.unexpected);
    if r.duplicates_total > 0 {
        let list: Vec<String> = r
            .duplicates
            .iter()
            .take(3)
            .map(|d| {
                let kind = if d.kind == DuplicateKind::Repeat { "repeat" } else { "step back" };
                format!("{} {} at {} -> {} at {} ({kind})", crate::verdict::describe(&d.word), d.first_value, d.first, d.second_value, d.second)
            })
            .collect();
        let _ = writeln!(s, "duplicated commits {}: {}", r.duplicates_total, list.join("; "));
    }
    if !r.run_dir.as_os_str().is_empty() {
        let _ = writeln!(s, "run dir {}", r.run_dir.display());
    }
    if !r.counts_file.as_os_str().is_empty() {
        let _ = writeln!(s, "counts  {}", r.counts_file.display());
    }
    s
}

/// One row per restored task, grouped by attempt: where its state came from and how long
/// its taskmanager took to read, verify and decode it.
fn restores(s: &mut String, list: &[streamd_contract::api::TaskRestore]) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nrestores (per recovery, measured in the taskmanagers)");
    let mut rows = vec![["attempt", "checkpoint", "task", "taskmanager", "from", "time", "size", "why not local"].map(String::from).to_vec()];
    let mut sorted: Vec<_> = list.iter().collect();
    sorted.sort_by(|a, b| (a.attempt, &a.task).cmp(&(b.attempt, &b.task)));
    for t in sorted {
        rows.push(vec![
            t.attempt.to_string(),
            t.checkpoint.to_string(),
            t.task.clone(),
            t.taskmanager.clone(),
            t.source.as_str().to_string(),
            format!("{:.1} ms", t.duration_ms),
            format!("{} B", t.bytes),
            t.fallback.clone().unwrap_or_default(),
        ]);
    }
    table(s, "  ", &rows);
}

/// `checkpoint storage remote-like, 20ms per operation under /data/checkpoints: measured
/// write 84 x 21.3ms (asked 20.0ms), fsync 84 x 20.9ms (asked 20.0ms)`, over all nodes.
fn storage_line(r: &RunReport) -> Option<String> {
    let st = r.checkpoint_storage.as_ref()?;
    let mut by_op: std::collections::BTreeMap<String, (u64, f64, f64)> = Default::default();
    for ops in st["measured"].as_object()?.values() {
        for (op, m) in ops.as_object()? {
            let n = m["delayed"].as_u64().unwrap_or(0);
            let e = by_op.entry(op.clone()).or_default();
            e.0 += n;
            e.1 += m["asked_ms"].as_f64().unwrap_or(0.0) * n as f64;
            e.2 += m["measured_ms"].as_f64().unwrap_or(0.0) * n as f64;
        }
    }
    let parts: Vec<String> = by_op
        .iter()
        .filter(|(_, (n, _, _))| *n > 0)
        .map(|(op, (n, asked, took))| format!("{op} {n} x {:.1}ms (asked {:.1}ms)", took / *n as f64, asked / *n as f64))
        .collect();
    let measured = if parts.is_empty() { "nothing delayed".to_string() } else { parts.join(", ") };
    Some(format!("checkpoint storage {}: measured {measured}", st["model"].as_str()?))
}

/// `checkpoint interval adaptive 200ms..5s: 200ms -> 900ms (range 200ms..1300ms, 2 changes;
/// 1 failures, MTBF estimate 32s, cost 40.2ms, latency 402ms; set by optimum)`.
fn interval_line(r: &RunReport) -> Option<String> {
    let i = r.checkpoint_interval.as_ref()?;
    let (first, last) = (i.points.first()?, i.points.last()?);
    let (lo, hi) = i.range()?;
    let ms = |v: u64| streamd_contract::duration::format_duration(std::time::Duration::from_millis(v));
    let cost = match (last.chosen.cost_ms, last.chosen.latency_ms) {
        (Some(c), Some(l)) => format!("cost {c:.1}ms, latency {l:.0}ms"),
        _ => "cost not measured".into(),
    };
    Some(format!(
        "checkpoint interval adaptive {}..{}: {} -> {} (range {}..{}, {} changes; {} failures, MTBF estimate {}, {cost}; set by {})",
        ms(i.min_ms),
        ms(i.max_ms),
        ms(first.chosen.interval_ms),
        ms(last.chosen.interval_ms),
        ms(lo),
        ms(hi),
        i.points.len().saturating_sub(1),
        last.chosen.failures,
        ms(last.chosen.mtbf_ms),
        last.chosen.limit
    ))
}

/// A power loss's account in one line: `taskmanager-2: 2 files rolled back (8.0 KiB
/// lost), 3 entries undone (create 2, rename 1)`; `None` for other measurements.
fn power_loss_line(m: &serde_json::Value) -> Option<String> {
    let nodes = m.get("power_loss")?.as_object()?;
    let parts: Vec<String> = nodes
        .iter()
        .filter_map(|(n, r)| {
            let r: crate::diskfault::unsynced::PowerLossReport = serde_json::from_value(r.clone()).ok()?;
            Some(format!("{n}: {}", crate::diskfault::faults::describe_power_loss(&r)))
        })
        .collect();
    Some(parts.join("; "))
}

/// `lost 3: kalo 10 -> 8, mi 4 -> 1, … (+1 more)`, largest differences first.
fn words_line(s: &mut String, what: &str, map: &BTreeMap<String, WordDiff>) {
    if map.is_empty() {
        return;
    }
    let top: Vec<String> = top_diffs(map, TOP).iter().map(|(w, d)| format!("{} {} -> {}", crate::verdict::display_key(w), d.expected, d.got)).collect();
    let more = if map.len() > TOP { format!(" (+{} more)", map.len() - TOP) } else { String::new() };
    let _ = writeln!(s, "{what} {}: {}{more}", map.len(), top.join(", "));
}

/// Left-aligned columns; the last column is not padded.
fn table(s: &mut String, indent: &str, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|x| x.chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let mut line = indent.to_string();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', width[c] - cell.chars().count() + 2));
            }
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
}

/// Live progress of one run on stderr: phase, input lines read, and counters for
/// checkpoints, faults and restarts. indicatif hides it when stderr is not a terminal
/// (or `TERM=dumb`), so CI logs get no escape codes. Methods take `&self`: share it
/// (`Arc<Progress>`) between the executor's tasks.
pub struct Progress {
    bar: ProgressBar,
    checkpoints: AtomicU64,
    faults: AtomicU64,
    restarts: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Progress on stderr (hidden when it is not a terminal).
    pub fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    /// Progress that draws nothing (tests, `--quiet`).
    pub fn hidden() -> Self {
        Self::with_target(ProgressDrawTarget::hidden())
    }

    /// Progress drawn to `target`.
    pub fn with_target(target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        let style = ProgressStyle::with_template(
            "{spinner:.cyan} {prefix:<10.bold} [{bar:28.cyan/blue}] {human_pos}/{human_len} lines  {msg}  {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix("starting");
        if !bar.is_hidden() {
            // Keep the spinner and elapsed time moving while nothing else changes
            // (cluster start, recovery).
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        let p = Progress { bar, checkpoints: AtomicU64::new(0), faults: AtomicU64::new(0), restarts: AtomicU64::new(0) };
        p.update_message();
        p
    }

    /// Whether nothing is drawn.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// What the run is doing: `building`, `starting`, `running`, `recovering`, `verifying`.
    pub fn set_phase(&self, phase: &str) {
        self.bar.set_prefix(phase.to_string());
    }

    /// Input lines read so far, of `total` (0 = unknown).
    pub fn set_input(&self, read: u64, total: u64) {
        if total > 0 {
            self.bar.set_length(total);
        }
        self.bar.set_position(read);
    }

    /// One more completed checkpoint.
    pub fn inc_checkpoints(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.update_message();
    }

    /// A fault was applied: counted, and printed above the bar.
    pub fn fault(&self, label: &str) {
        self.faults.fetch_add(1, Ordering::Relaxed);
        self.bar.println(format!("  fault  {label}"));
        self.update_message();
    }

    /// The job restarted.
    pub fn restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.update_message();
    }

    /// (checkpoints, faults, restarts) counted so far.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.checkpoints.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
            self.restarts.load(Ordering::Relaxed),
        )
    }

    /// Removes the bar (the summary is printed next).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn update_message(&self) {
        let (c, f, r) = self.counters();
        self.bar.set_message(format!("checkpoints {c} · faults {f} · restarts {r}"));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An early return (error, Ctrl-C) must not leave a half-drawn bar behind.
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{sample, FaultReport};
    use super::*;
    use std::io::IsTerminal;

    #[test]
    fn summary_leads_with_the_verdict_and_names_what_failed() {
        let s = summary(&sample::failed());
        let first = s.lines().next().unwrap();
        assert!(first.starts_with("FAIL  kill-tm2"), "{first}");
        assert!(first.contains("seed 7"));
        assert!(s.contains("FAIL  final_counts"), "{s}");
        assert!(s.contains("ok    well_formed"), "{s}");
        assert!(s.contains("lost 1: kalo 10 -> 8"), "{s}");
        assert!(s.contains("over-counted 1: mi 4 -> 5"), "{s}");
        assert!(s.contains("duplicated commits 1"), "{s}");
        // The fault row: applied 4.01 s, RUNNING again 5.48 s, recovered in 1.47 s.
        let kill = s.lines().find(|l| l.contains("taskmanager-2") && l.contains("kill")).unwrap();
        for want in ["4.01s", "5.48s", "1.47s", "12ms"] {
            assert!(kill.contains(want), "{want} missing in {kill}");
        }
        assert!(s.contains("restarts 1 · checkpoints 11"), "{s}");
        assert!(s.contains("cluster up in 3.12s"), "{s}");
    }

    #[test]
    fn an_adaptive_interval_is_summed_up_in_one_line() {
        let mut r = sample::failed();
        assert!(!summary(&r).contains("checkpoint interval"));
        r.checkpoint_interval = Some(super::super::sample::adaptive());
        let s = summary(&r);
        assert!(
            s.contains("checkpoint interval adaptive 200ms..5s: 200ms -> 900ms (range 200ms..1300ms, 2 changes; 1 failures, MTBF estimate 32s, cost 40.2ms, latency 402ms; set by optimum)"),
            "{s}"
        );
    }

    #[test]
    fn summary_lists_each_restore_with_its_source_and_time() {
        use streamd_contract::api::{RestoreSource, TaskRestore};
        let mut r = sample::failed();
        let t = |task: &str, tm: &str, source, ms, fallback: Option<&str>| TaskRestore {
            attempt: 2,
            checkpoint: 5,
            task: task.into(),
            taskmanager: tm.into(),
            source,
            duration_ms: ms,
            bytes: 1234,
            fallback: fallback.map(str::to_string),
        };
        r.restores = vec![
            t("source-1", "taskmanager-3", RestoreSource::Remote, 12.25, Some("missing: no local copy")),
            t("count-0", "taskmanager-1", RestoreSource::Local, 0.5, None),
        ];
        let s = summary(&r);
        let local = s.lines().find(|l| l.contains("count-0")).unwrap();
        assert!(local.contains("local") && local.contains("0.5 ms") && local.contains("taskmanager-1"), "{local}");
        let remote = s.lines().find(|l| l.contains("source-1")).unwrap();
        assert!(remote.contains("remote") && remote.contains("12.2 ms") && remote.contains("missing: no local copy"), "{remote}");
        // Sorted by attempt, then task.
        assert!(s.find("count-0").unwrap() < s.find("source-1").unwrap());
        // And they are in report.json.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["restores"][0]["source"], "remote");
        assert_eq!(json["restores"][1]["duration_ms"], 0.5);
    }

    #[test]
    fn summary_of_a_pass_marks_informational_failures() {
        let mut r = sample::failed();
        r.verdict = Outcome::Pass;
        r.expectation = crate::verdict::Expectation::AtLeastOnce;
        for (k, c) in r.checks.iter_mut() {
            c.required = k == "well_formed";
        }
        r.faults = vec![FaultReport { action: "kill".into(), target: "tm3".into(), ..Default::default() }];
        let s = summary(&r);
        assert!(s.starts_with("PASS"), "{s}");
        assert!(s.contains("fail*  final_counts"), "{s}");
        assert!(s.contains("not required by expect.output: at-least-once"), "{s}");
    }

    #[test]
    fn progress_is_hidden_off_a_terminal_and_counts_anyway() {
        let p = Progress::new();
        if !std::io::stderr().is_terminal() {
            assert!(p.is_hidden(), "stderr is not a terminal: the bar must not draw");
        }
        let p = Progress::hidden();
        assert!(p.is_hidden());
        p.set_phase("running");
        p.set_input(10, 100);
        p.inc_checkpoints();
        p.inc_checkpoints();
        p.fault("kill taskmanager-2");
        p.restart();
        assert_eq!(p.counters(), (2, 1, 1));
        assert_eq!(p.bar.position(), 10);
        assert_eq!(p.bar.length(), Some(100));
        assert_eq!(p.bar.prefix(), "running");
        assert!(p.bar.message().contains("checkpoints 2"));
        p.finish();
        assert!(p.bar.is_finished());
    }
}
