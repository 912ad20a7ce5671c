//! `report.html`: one self-contained page (inline CSS, inline SVG drawn here; no scripts,
//! fonts or URLs) that opens offline: the verdict, a timeline chart of the run (throughput,
//! job state, checkpoints, faults, restarts), and the checks, faults and word tables.

use super::{fault_cells, rate, secs, write_atomic, EventKind, Outcome, ReportError, RunReport, Sample};
use crate::verdict::{top_diffs, DuplicateKind, WordDiff};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Rows per word table; the rest is summarised ("… and N more").
const WORD_ROWS: usize = 50;

/// Writes the page for `report` to `path`, atomically.
pub fn write(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    write_atomic(path, render(report).as_bytes())
}

/// The page as text.
pub fn render(r: &RunReport) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let (badge, class) = match r.verdict {
        Outcome::Pass => ("PASS", "pass"),
        Outcome::Fail => ("FAIL", "fail"),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{badge} {} — chaos report</title><style>{CSS}</style></head><body>\n",
        esc(&r.scenario)
    );
    let _ = writeln!(h, "<header><span class=\"badge {class}\">{badge}</span><h1>{}</h1></header>", esc(&r.scenario));
    if !r.description.is_empty() {
        let _ = writeln!(h, "<p class=\"desc\">{}</p>", esc(&r.description));
    }
    let mut meta = vec![format!("seed <b>{}</b>", r.seed), format!("expect <b>{}</b>", r.expectation)];
    if !r.runtime.is_empty() {
        meta.push(format!("runtime <b>{}</b>", esc(&r.runtime)));
    }
    if let Some(st) = &r.final_state {
        meta.push(format!("job <b>{}</b>", esc(st)));
    }
    if !r.run_dir.as_os_str().is_empty() {
        meta.push(format!("run dir <code>{}</code>", esc(&r.run_dir.display().to_string())));
    }
    let _ = writeln!(h, "<p class=\"meta\">{}</p>", meta.join(" · "));

    cards(&mut h, r);
    let _ = writeln!(h, "<section><h2>Timeline</h2>{}</section>", chart(r));
    if let Some(i) = &r.checkpoint_interval {
        let _ = writeln!(h, "<section><h2>Checkpoint interval (adaptive)</h2>{}</section>", interval_chart(r, i));
    }
    checks(&mut h, r);
    faults(&mut h, r);
    words(&mut h, "Lost words", "below their oracle count", &r.lost);
    words(&mut h, "Over-counted words", "above their oracle count", &r.overcounted);
    words(&mut h, "Unexpected words", "committed, but not in the input", &r.unexpected);
    duplicates(&mut h, r);
    malformed(&mut h, r);
    if !r.plan.is_empty() {
        // The plan is `chaos lint`'s text, already laid out: keep its lines as they are.
        let _ = writeln!(h, "<section><h2>Plan</h2><pre class=\"plan\">");
        for step in &r.plan {
            let _ = writeln!(h, "{}", esc(step));
        }
        let _ = writeln!(h, "</pre></section>");
    }
    let _ = writeln!(
        h,
        "<footer>chaos report · counts in <code>{}</code> · times are seconds since the job started running</footer>",
        esc(&r.counts_file.display().to_string())
    );
    h.push_str("</body></html>\n");
    h
}

fn cards(h: &mut String, r: &RunReport) {
    let max_recovery = r.faults.iter().filter_map(|f| f.recovery_ms).max();
    let mut items = vec![
        ("restarts", r.restarts.to_string()),
        ("checkpoints", r.checkpoints_completed.to_string()),
        ("throughput", format!("{} words/s", rate(r.words_per_s))),
        ("words", group(r.words_total)),
        ("ran", secs(Some(r.duration_ms))),
    ];
    if let Some(ms) = r.cluster_start_ms {
        items.push(("cluster up", secs(Some(ms))));
    }
    if let Some(ms) = max_recovery {
        items.push(("slowest recovery", secs(Some(ms))));
    }
    h.push_str("<div class=\"cards\">");
    for (k, v) in items {
        let _ = write!(h, "<div class=\"card\"><div class=\"v\">{}</div><div class=\"k\">{k}</div></div>", esc(&v));
    }
    h.push_str("</div>\n");
}

fn checks(h: &mut String, r: &RunReport) {
    if r.checks.is_empty() {
        return;
    }
    h.push_str("<section><h2>Checks</h2><table><tr><th></th><th>rule</th><th>required</th><th>details</th></tr>\n");
    for (rule, c) in &r.checks {
        let (label, class) = match (c.ok, c.required) {
            (true, _) => ("ok", "pass"),
            (false, true) => ("FAIL", "fail"),
            (false, false) => ("fail", "warn"),
        };
        let _ = writeln!(
            h,
            "<tr><td><span class=\"pill {class}\">{label}</span></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(rule),
            if c.required { "yes" } else { "no" },
            esc(&c.details)
        );
    }
    h.push_str("</table></section>\n");
}

fn faults(h: &mut String, r: &RunReport) {
    if r.faults.is_empty() {
        return;
    }
    h.push_str(
        "<section><h2>Faults</h2><table><tr><th>#</th><th>action</th><th>target</th><th>at</th><th>applied</th>\
         <th>undone</th><th>detected</th><th>running</th><th>caught up</th><th>recovery</th><th>inject</th>\
         <th>notes</th></tr>\n",
    );
    for (i, f) in r.faults.iter().enumerate() {
        let mut notes = Vec::new();
        if let Some(e) = &f.error {
            notes.push(format!("<span class=\"err\">{}</span>", esc(e)));
        }
        if let Some(m) = &f.measured {
            notes.push(format!("measured <code>{}</code>", esc(&m.to_string())));
        }
        let [n, action, target, at, applied, undone, detected, running, caught_up, recovery, inject] =
            fault_cells(i, f).map(|c| esc(&c));
        let _ = writeln!(
            h,
            "<tr><td>{n}</td><td>{action}</td><td><code>{target}</code></td><td>{at}</td><td>{applied}</td><td>{undone}</td>\
             <td>{detected}</td><td>{running}</td><td>{caught_up}</td><td><b>{recovery}</b></td><td>{inject}</td><td>{}</td></tr>",
            notes.join("<br>")
        );
    }
    h.push_str("</table></section>\n");
}

fn words(h: &mut String, title: &str, what: &str, map: &BTreeMap<String, WordDiff>) {
    if map.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<section><h2>{title} <small>{} {what}</small></h2><table class=\"words\">\
         <tr><th>word</th><th>expected</th><th>committed</th><th>difference</th></tr>",
        map.len()
    );
    for (w, d) in top_diffs(map, WORD_ROWS) {
        let diff = d.got as i128 - d.expected as i128;
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{diff:+}</td></tr>",
            esc(&crate::verdict::display_key(w)),
            d.expected,
            d.got
        );
    }
    if map.len() > WORD_ROWS {
        let _ = writeln!(h, "<tr><td colspan=\"4\">… and {} more (all in report.json)</td></tr>", map.len() - WORD_ROWS);
    }
    h.push_str("</table></section>\n");
}

fn duplicates(h: &mut String, r: &RunReport) {
    if r.duplicates_total == 0 {
        return;
    }
    let _ = writeln!(
        h,
        "<section><h2>Duplicated commits <small>{} in all, a count that did not increase between two \
         transactions (subtask/epoch[-part])</small></h2><table><tr><th>word</th><th>kind</th><th>first</th>\
         <th>value</th><th>then</th><th>value</th></tr>",
        r.duplicates_total
    );
    for d in &r.duplicates {
        let kind = if d.kind == DuplicateKind::Repeat { "repeat" } else { "step back" };
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{kind}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&crate::verdict::display_key(&d.word)),
            d.first,
            d.first_value,
            d.second,
            d.second_value
        );
    }
    h.push_str("</table></section>\n");
}

fn malformed(h: &mut String, r: &RunReport) {
    if r.malformed.is_empty() {
        return;
    }
    h.push_str("<section><h2>Malformed transactions</h2><table><tr><th>transaction</th><th>file</th><th>problem</th></tr>\n");
    for m in &r.malformed {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            m.txn,
            esc(&m.path),
            esc(&m.reason)
        );
    }
    h.push_str("</table></section>\n");
}

// ---------------------------------------------------------------------------------------
// The chart.

const W: f64 = 1100.0;
const PLOT_L: f64 = 64.0;
const PLOT_R: f64 = 1084.0;
const PLOT_T: f64 = 34.0;
const PLOT_B: f64 = 274.0;
/// The job-state strip under the plot.
const BAND_T: f64 = 284.0;
const BAND_H: f64 = 12.0;
const H: f64 = 338.0;

/// Records per second between consecutive samples, at the later sample's time. A counter
/// that went down (a restarted attempt counting from zero) is read as a reset, as
/// Prometheus's `rate()` does: the new value is the increase.
fn rates(samples: &[Sample], field: fn(&Sample) -> u64) -> Vec<(u64, f64)> {
    let mut out = Vec::with_capacity(samples.len());
    if let Some(first) = samples.first() {
        out.push((first.t_ms, 0.0));
    }
    for w in samples.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let dt = b.t_ms.saturating_sub(a.t_ms);
        if dt == 0 {
            continue;
        }
        let (x, y) = (field(a), field(b));
        let inc = if y >= x { y - x } else { y };
        out.push((b.t_ms, inc as f64 * 1000.0 / dt as f64));
    }
    out
}

/// A round step giving about `target` intervals over `span`: 1, 2 or 5 times a power of 10.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// `40k`, `1.5M`, `800`.
fn short(n: f64) -> String {
    if n >= 1e6 {
        format!("{}M", trim(n / 1e6))
    } else if n >= 1e3 {
        format!("{}k", trim(n / 1e3))
    } else {
        trim(n)
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn state_color(state: &str) -> &'static str {
    match state {
        "RUNNING" => "#3fb37f",
        "RESTARTING" | "CREATED" | "INITIALIZING" => "#f0a030",
        "FAILED" | "FAILING" => "#d9534f",
        "FINISHED" => "#7a8699",
        _ => "#c9ced6",
    }
}

/// The top of the rate axis: the steady rates, not the replay bursts. After a recovery the
/// sources replay from the checkpoint as fast as they can, millions of records/s for a
/// sample or two; scaled to that, the steady rate would be a line at zero. So the axis
/// goes to 1.5x the 90th percentile of the rates, or the maximum when it is lower.
fn rate_axis_top(rates: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = rates.filter(|r| *r > 0.0).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
    v[v.len() - 1].min(p90 * 1.5)
}

/// The timeline chart as an inline `<svg>`.
/// The end of the time axis: the last thing the run recorded.
fn time_span(r: &RunReport) -> u64 {
    let tl = &r.timeline;
    let mut t_max = r.duration_ms;
    t_max = t_max.max(tl.samples.last().map_or(0, |s| s.t_ms));
    t_max = t_max.max(tl.events.iter().map(|e| e.t_ms).max().unwrap_or(0));
    for f in &r.faults {
        for t in [f.applied_ms, f.undone_ms, f.detected_ms, f.running_ms, f.caught_up_ms].into_iter().flatten() {
            t_max = t_max.max(t);
        }
    }
    if let Some(i) = &r.checkpoint_interval {
        t_max = t_max.max(i.points.iter().map(|p| p.t_ms).max().unwrap_or(0));
    }
    t_max
}

/// The adaptive interval as a step line over the timeline's time axis (same x scale, so
/// the two charts line up), with its `[min, max]` as dashed lines and the faults as
/// marks: each failure should pull the line down.
fn interval_chart(r: &RunReport, i: &super::IntervalReport) -> String {
    const IH: f64 = 200.0;
    const IT: f64 = 16.0;
    const IB: f64 = 170.0;
    let t_max = time_span(r).max(1);
    let x = |t: u64| PLOT_L + (PLOT_R - PLOT_L) * t as f64 / t_max as f64;
    let top = i.max_ms.max(i.range().map_or(0, |r| r.1)).max(1) as f64 * 1.1;
    let y = |ms: u64| IB - (IB - IT) * ms as f64 / top;
    let ms = |v: u64| streamd_contract::duration::format_duration(std::time::Duration::from_millis(v));
    let mut s = String::with_capacity(8 * 1024);
    let _ = write!(s, "<svg class=\"chart\" viewBox=\"0 0 {W} {IH}\" role=\"img\" aria-label=\"checkpoint interval over the run\">");
    for f in r.faults.iter().filter_map(|f| f.applied_ms.map(|a| (a, f))) {
        let _ = write!(
            s,
            "<line class=\"faultline\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{IT}\" y2=\"{IB}\"><title>{1} {2} at {3}</title></line>",
            x(f.0),
            esc(&f.1.action),
            esc(&f.1.target),
            secs(Some(f.0))
        );
    }
    for (v, what) in [(i.min_ms, "min"), (i.max_ms, "max")] {
        let _ = write!(
            s,
            "<line class=\"bound\" x1=\"{PLOT_L}\" x2=\"{PLOT_R}\" y1=\"{0:.1}\" y2=\"{0:.1}\"/>\
             <text class=\"axis\" x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{what} {3}</text>",
            y(v),
            PLOT_L - 6.0,
            y(v) + 4.0,
            ms(v)
        );
    }
    let _ = write!(s, "<line class=\"axisline\" x1=\"{PLOT_L}\" x2=\"{PLOT_R}\" y1=\"{IB}\" y2=\"{IB}\"/>");
    let t_step = nice_step(t_max as f64 / 1000.0, 10.0).max(0.001);
    let mut t = 0.0;
    while t * 1000.0 <= t_max as f64 + 0.5 {
        let _ = write!(s, "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}s</text>", x((t * 1000.0) as u64), IB + 16.0, trim(t));
        t += t_step;
    }
    // A step line: each choice holds until the next one, the last until the end.
    let mut d = String::new();
    for (k, p) in i.points.iter().enumerate() {
        let end = i.points.get(k + 1).map_or(t_max, |n| n.t_ms);
        let _ = write!(d, "{}{:.1},{:.1} L{:.1},{:.1} ", if k == 0 { "M" } else { "L" }, x(p.t_ms), y(p.chosen.interval_ms), x(end), y(p.chosen.interval_ms));
        let cost = match (p.chosen.cost_ms, p.chosen.latency_ms) {
            (Some(c), Some(l)) => format!("cost {c:.1} ms, latency {l:.0} ms"),
            _ => "cost not measured".into(),
        };
        let _ = write!(
            s,
            "<circle class=\"ivpoint\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"><title>{} at {}: {cost}, MTBF estimate {}, {} failures; set by {}</title></circle>",
            x(p.t_ms),
            y(p.chosen.interval_ms),
            ms(p.chosen.interval_ms),
            secs(Some(p.t_ms)),
            ms(p.chosen.mtbf_ms),
            p.chosen.failures,
            p.chosen.limit
        );
    }
    let _ = write!(s, "<path class=\"interval\" d=\"{}\"/>", d.trim_end());
    s.push_str("</svg>");
    s
}

fn chart(r: &RunReport) -> String {
    let tl = &r.timeline;
    let t_max = time_span(r);
    let mut s = String::with_capacity(16 * 1024);
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"timeline of the run\">"
    );
    if t_max == 0 {
        let _ = write!(s, "<text x=\"{}\" y=\"{}\" class=\"muted\" text-anchor=\"middle\">no timeline recorded</text></svg>", W / 2.0, H / 2.0);
        return s;
    }
    let x = |t: u64| PLOT_L + (PLOT_R - PLOT_L) * t as f64 / t_max as f64;

    let rin = rates(&tl.samples, |s| s.records_in);
    let rout = rates(&tl.samples, |s| s.records_out);
    let y_top = rate_axis_top(rin.iter().chain(rout.iter()).map(|p| p.1));
    let y_step = nice_step(if y_top > 0.0 { y_top } else { 1.0 }, 4.0);
    let y_max = (y_top / y_step).ceil().max(1.0) * y_step;
    // A replay burst above the axis is drawn at its top (the tooltip of the sample says more).
    let y = |v: f64| PLOT_B - (PLOT_B - PLOT_T) * v.min(y_max) / y_max;

    // Fault spans first, under everything else.
    for (i, f) in r.faults.iter().enumerate() {
        let Some(a) = f.applied_ms else { continue };
        let label = format!("{} {} {}", i + 1, f.action, f.target);
        let tip = format!(
            "#{} {} {}: applied {}, undone {}, detected {}, running {}, caught up {}",
            i + 1,
            f.action,
            f.target,
            secs(f.applied_ms),
            secs(f.undone_ms),
            secs(f.detected_ms),
            secs(f.running_ms),
            secs(f.caught_up_ms)
        );
        match f.undone_ms {
            Some(u) if u > a => {
                let _ = write!(
                    s,
                    "<rect class=\"fault\" x=\"{:.1}\" y=\"{PLOT_T}\" width=\"{:.1}\" height=\"{}\"><title>{}</title></rect>",
                    x(a),
                    x(u) - x(a),
                    PLOT_B - PLOT_T,
                    esc(&tip)
                );
            }
            _ => {
                let _ = write!(
                    s,
                    "<line class=\"faultline\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{PLOT_T}\" y2=\"{PLOT_B}\"><title>{1}</title></line>",
                    x(a),
                    esc(&tip)
                );
            }
        }
        // Labels stagger over two rows so neighbouring faults don't overprint.
        let ly = if i % 2 == 0 { PLOT_T - 20.0 } else { PLOT_T - 7.0 };
        let _ = write!(s, "<text class=\"flabel\" x=\"{:.1}\" y=\"{ly}\">⚡ {}</text>", x(a) + 2.0, esc(&label));
        if let Some(d) = f.detected_ms {
            let _ = write!(
                s,
                "<circle class=\"detect\" cx=\"{:.1}\" cy=\"{}\" r=\"3.5\"><title>#{} detected at {}</title></circle>",
                x(d),
                PLOT_T + 6.0,
                i + 1,
                secs(Some(d))
            );
        }
    }

    // Grid and axes.
    let mut v = 0.0;
    while v <= y_max + y_step * 0.01 {
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{PLOT_L}\" x2=\"{PLOT_R}\" y1=\"{0:.1}\" y2=\"{0:.1}\"/>\
             <text class=\"axis\" x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{3}</text>",
            y(v),
            PLOT_L - 6.0,
            y(v) + 4.0,
            short(v)
        );
        v += y_step;
    }
    let t_step = nice_step(t_max as f64 / 1000.0, 10.0).max(0.001);
    let mut t = 0.0;
    while t * 1000.0 <= t_max as f64 + 0.5 {
        let px = x((t * 1000.0) as u64);
        let _ = write!(
            s,
            "<line class=\"tick\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{PLOT_B}\" y2=\"{}\"/>\
             <text class=\"axis\" x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}s</text>",
            BAND_T + BAND_H + 4.0,
            BAND_T + BAND_H + 17.0,
            trim(t)
        );
        t += t_step;
    }
    let _ = write!(
        s,
        "<text class=\"axis\" x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">records/s</text>",
        (PLOT_T + PLOT_B) / 2.0,
        (PLOT_T + PLOT_B) / 2.0
    );

    // Throughput: records in as a filled area, records out as a line.
    if rin.len() > 1 {
        let mut d = format!("M{:.1},{:.1}", x(rin[0].0), y(0.0));
        for (t, v) in &rin {
            let _ = write!(d, " L{:.1},{:.1}", x(*t), y(*v));
        }
        let _ = write!(d, " L{:.1},{:.1} Z", x(rin[rin.len() - 1].0), y(0.0));
        let _ = write!(s, "<path class=\"area\" d=\"{d}\"/>");
        let pts: Vec<String> = rin.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(s, "<polyline class=\"in\" points=\"{}\"/>", pts.join(" "));
    }
    if rout.len() > 1 {
        let pts: Vec<String> = rout.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(s, "<polyline class=\"out\" points=\"{}\"/>", pts.join(" "));
    }
    let _ = write!(s, "<line class=\"axisline\" x1=\"{PLOT_L}\" x2=\"{PLOT_R}\" y1=\"{PLOT_B}\" y2=\"{PLOT_B}\"/>");

    // Job state strip: each sample's state holds until the next sample; runs of one state
    // are one rectangle (adjacent ones would show anti-aliasing seams).
    let mut i = 0;
    while i < tl.samples.len() {
        let start = &tl.samples[i];
        let mut j = i + 1;
        while j < tl.samples.len() && tl.samples[j].state == start.state {
            j += 1;
        }
        let end = tl.samples.get(j).map_or(t_max.max(start.t_ms), |n| n.t_ms);
        if end > start.t_ms {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{BAND_T}\" width=\"{:.2}\" height=\"{BAND_H}\" fill=\"{}\"><title>{} from {} to {}</title></rect>",
                x(start.t_ms),
                x(end) - x(start.t_ms),
                state_color(&start.state),
                esc(&start.state),
                secs(Some(start.t_ms)),
                secs(Some(end))
            );
        }
        i = j;
    }

    // Checkpoints: from the events, or where the samples' count went up.
    let mut ckpts: Vec<(u64, String)> = tl
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Checkpoint)
        .map(|e| (e.t_ms, e.label.clone()))
        .collect();
    if ckpts.is_empty() {
        for w in tl.samples.windows(2) {
            if w[1].checkpoints > w[0].checkpoints {
                ckpts.push((w[1].t_ms, format!("{} checkpoints", w[1].checkpoints)));
            }
        }
    }
    for (t, label) in &ckpts {
        let px = x(*t);
        let _ = write!(
            s,
            "<path class=\"ckpt\" d=\"M{:.1},{PLOT_B} l-4,-7 h8 Z\"><title>{} at {}</title></path>",
            px,
            esc(label),
            secs(Some(*t))
        );
    }

    // Restarts and RUNNING again.
    for e in &tl.events {
        let (class, sym) = match e.kind {
            EventKind::Restart => ("restart", "↻"),
            EventKind::Running => ("running", "▶"),
            EventKind::Undo => ("undo", "⟲"),
            _ => continue,
        };
        let px = x(e.t_ms);
        let _ = write!(
            s,
            "<line class=\"{class}\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{PLOT_T}\" y2=\"{}\"><title>{} at {}</title></line>\
             <text class=\"{class}t\" x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{sym}</text>",
            BAND_T + BAND_H,
            esc(&e.label),
            secs(Some(e.t_ms)),
            PLOT_T + 20.0
        );
    }

    // Legend.
    let ly = H - 8.0;
    let mut lx = PLOT_L;
    let items: [(&str, &str); 8] = [
        ("<rect x=\"0\" y=\"-9\" width=\"14\" height=\"10\" class=\"area\"/><line x1=\"0\" x2=\"14\" y1=\"-4\" y2=\"-4\" class=\"in\"/>", "records in/s"),
        ("<line x1=\"0\" x2=\"14\" y1=\"-4\" y2=\"-4\" class=\"out\"/>", "records out/s"),
        ("<rect x=\"0\" y=\"-10\" width=\"14\" height=\"12\" class=\"fault\"/><line x1=\"1\" x2=\"1\" y1=\"-10\" y2=\"2\" class=\"faultline\"/>", "fault"),
        ("<circle cx=\"7\" cy=\"-4\" r=\"3.5\" class=\"detect\"/>", "detected"),
        ("<line x1=\"7\" x2=\"7\" y1=\"-11\" y2=\"3\" class=\"restart\"/>", "restart"),
        ("<line x1=\"7\" x2=\"7\" y1=\"-11\" y2=\"3\" class=\"running\"/>", "RUNNING again"),
        ("<path d=\"M7,2 l-4,-7 h8 Z\" class=\"ckpt\"/>", "checkpoint"),
        ("<rect x=\"0\" y=\"-9\" width=\"14\" height=\"10\" fill=\"#3fb37f\"/>", "job state"),
    ];
    for (sym, label) in items {
        let _ = write!(s, "<g transform=\"translate({lx:.1},{ly})\">{sym}<text class=\"legend\" x=\"19\" y=\"0\">{label}</text></g>");
        lx += 30.0 + label.chars().count() as f64 * 6.6;
    }
    s.push_str("</svg>");
    s
}

/// `1600000` -> `1,600,000`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "
:root{--fg:#1d2330;--muted:#6b7385;--line:#e3e6eb;--pass:#1f9d62;--fail:#cf3b36;--warn:#d08a16;--accent:#2f6fd6}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);margin:24px auto;max-width:1160px;padding:0 16px}
header{display:flex;align-items:center;gap:14px}
h1{font-size:26px;margin:0}
h2{font-size:17px;margin:26px 0 8px}
h2 small{font-weight:normal;color:var(--muted);font-size:13px;margin-left:6px}
.badge{font-weight:700;font-size:18px;padding:4px 12px;border-radius:6px;color:#fff;letter-spacing:.05em}
.badge.pass{background:var(--pass)}.badge.fail{background:var(--fail)}
.desc{margin:8px 0 2px;font-size:15px}
.meta{color:var(--muted);margin:4px 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:120px}
.card .v{font-size:20px;font-weight:600}.card .k{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
table.words{width:auto}table.words td:nth-child(n+2){text-align:right;font-variant-numeric:tabular-nums}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.pill{font-size:12px;font-weight:700;padding:1px 8px;border-radius:10px;color:#fff}
.pill.pass{background:var(--pass)}.pill.fail{background:var(--fail)}.pill.warn{background:var(--warn)}
.err{color:var(--fail)}
.plan{margin:0;white-space:pre-wrap}
footer{margin:30px 0 10px;color:var(--muted);font-size:12px}
svg.chart{width:100%;height:auto;border:1px solid var(--line);border-radius:8px;background:#fff}
svg text{font-family:system-ui,sans-serif}
.axis{font-size:11px;fill:var(--muted)}.legend{font-size:12px;fill:var(--fg)}.muted{fill:var(--muted)}
.grid{stroke:#eef0f3}.tick{stroke:#b9bfc9}.axisline{stroke:#9aa2ae}
.area{fill:rgba(47,111,214,.14)}.in{fill:none;stroke:var(--accent);stroke-width:1.8}
.out{fill:none;stroke:#8a4fd0;stroke-width:1.2;stroke-dasharray:4 2}
.fault{fill:rgba(207,59,54,.13);stroke:rgba(207,59,54,.5)}
.faultline{stroke:var(--fail);stroke-width:2}
.flabel{font-size:11.5px;fill:var(--fail);font-weight:600}
.detect{fill:#fff;stroke:var(--fail);stroke-width:1.8}
.restart{stroke:var(--warn);stroke-width:1.5;stroke-dasharray:5 3}.restartt{fill:var(--warn);font-size:14px}
.running{stroke:var(--pass);stroke-width:1.5;stroke-dasharray:2 3}.runningt{fill:var(--pass);font-size:12px}
.undo{stroke:#888;stroke-width:1;stroke-dasharray:1 3}.undot{fill:#888;font-size:13px}
.ckpt{fill:#1f9d62}
.interval{fill:none;stroke:#1f6fd0;stroke-width:2}.ivpoint{fill:#1f6fd0}.bound{stroke:#9aa2ae;stroke-dasharray:5 3}
";

#[cfg(test)]
mod tests {
    use super::super::sample;
    use super::*;

    #[test]
    fn page_is_self_contained_with_a_chart_and_the_tables() {
        let r = sample::failed();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.html");
        write(&r, &path).unwrap();
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<svg"), "no chart");
        assert!(!page.to_lowercase().contains("http"), "external reference in a self-contained page");
        assert!(!page.contains("<script src") && !page.contains("<link"));
        assert!(page.contains("class=\"badge fail\">FAIL"));
        // A fault span for the pause (applied..undone) and a line for the kill.
        assert!(page.contains("<rect class=\"fault\""));
        assert!(page.contains("<line class=\"faultline\""));
        // One mark per checkpoint, restart and RUNNING marks.
        assert_eq!(page.matches("<path class=\"ckpt\"").count(), 11);
        assert!(page.contains("<line class=\"restart\"") && page.contains("<line class=\"running\""));
        // The state strip shows the restart.
        assert!(page.contains("<title>RESTARTING from 4.25s to 5.50s</title>"), "{page}");
        // Tables: checks, faults, words, duplicates.
        assert!(page.contains("<code>final_counts</code>"));
        assert!(page.contains("<code>kalo</code></td><td>10</td><td>8</td><td>-2</td>"));
        assert!(page.contains("<code>mi</code></td><td>4</td><td>5</td><td>+1</td>"));
        assert!(page.contains("Duplicated commits"));
        assert!(page.contains("<b>1.47s</b>"), "recovery of the kill");
    }

    #[test]
    fn an_adaptive_interval_gets_its_own_chart_on_the_timeline_axis() {
        let mut r = sample::failed();
        assert!(!render(&r).contains("Checkpoint interval"), "a fixed interval has no chart");
        r.checkpoint_interval = Some(sample::adaptive());
        let page = render(&r);
        assert!(page.contains("<h2>Checkpoint interval (adaptive)</h2>"));
        assert_eq!(page.matches("<circle class=\"ivpoint\"").count(), 3);
        assert!(page.contains("<path class=\"interval\" d=\"M"), "no step line");
        assert!(page.contains("min 200ms") && page.contains("max 5s"), "bounds not drawn");
        assert!(page.contains("<title>900ms at 4.30s: cost 40.2 ms, latency 402 ms, MTBF estimate 32s, 1 failures; set by optimum</title>"), "{page}");
    }

    #[test]
    fn text_is_escaped() {
        let mut r = sample::failed();
        r.scenario = "<script>alert(1)</script>".into();
        r.lost.insert("<b>&".into(), WordDiff { expected: 1, got: 0 });
        let page = render(&r);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("<code>&lt;b&gt;&amp;</code>"));
    }

    #[test]
    fn throughput_is_the_records_in_rate_and_survives_counter_resets() {
        let s = |t_ms, records_in| Sample { t_ms, records_in, ..Default::default() };
        let r = rates(&[s(0, 0), s(1000, 500), s(1500, 1000), s(2500, 200)], |s| s.records_in);
        assert_eq!(r, vec![(0, 0.0), (1000, 500.0), (1500, 1000.0), (2500, 200.0)]);
    }

    /// Renders the sample report for a look in a browser:
    /// `cargo test --release --lib render_sample -- --ignored` (writes `$CHAOS_SAMPLE_HTML`,
    /// default /tmp/sample-report.html).
    #[test]
    #[ignore]
    fn render_sample() {
        let path = std::env::var("CHAOS_SAMPLE_HTML").unwrap_or_else(|_| "/tmp/sample-report.html".into());
        write(&sample::failed(), Path::new(&path)).unwrap();
        println!("{}", super::super::terminal::summary(&sample::failed()));
    }

    #[test]
    fn an_empty_report_still_renders() {
        let page = render(&RunReport::default());
        assert!(page.contains("no timeline recorded"));
        assert!(page.contains("FAIL"));
    }

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(12.0, 10.0), 2.0);
        assert_eq!(nice_step(137_000.0, 4.0), 50_000.0);
        assert_eq!(nice_step(0.0, 4.0), 1.0);
        assert_eq!(short(50_000.0), "50k");
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!((group(1_600_000), group(999), group(0)), ("1,600,000".into(), "999".into(), "0".into()));
    }

    #[test]
    fn the_rate_axis_follows_steady_rates_not_replay_bursts() {
        let steady = std::iter::repeat_n(20_000.0, 50);
        let top = rate_axis_top(steady.clone().chain([3_000_000.0, 2_500_000.0]));
        assert!((20_000.0..=30_000.0).contains(&top), "{top}");
        // Without a burst the maximum stands.
        assert_eq!(rate_axis_top(steady.chain([25_000.0])), 25_000.0);
        assert_eq!(rate_axis_top(std::iter::empty()), 0.0);
    }
}
