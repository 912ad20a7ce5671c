//! `chaos lint`: a plan as a readable timeline.

use super::plan::{Action, NetemParams, Plan, Trigger};
use super::values::format_memory;
use streamd_contract::duration::format_duration as fd;
use streamd_contract::spec::{CheckpointInterval, Delivery, RestartStrategy};
use std::time::Duration;

/// What `timeline()` says about netem when no probe of the target machine was made.
pub const NETEM_UNPROBED: &str = "tc netem or iptables/NFQUEUE fallback (decided at run time by probing)";

impl Plan {
    /// The plan as text: the cluster, job and expectations, then one row per fault in
    /// (estimated) time order, then any warnings. Netem rows name [`NETEM_UNPROBED`].
    pub fn timeline(&self) -> String {
        self.timeline_with(|_| NETEM_UNPROBED.to_string())
    }

    /// As [`Plan::timeline`], with `netem_mechanism` naming how each netem fault will be
    /// applied (e.g. after probing the kernel for `sch_netem`).
    pub fn timeline_with(&self, netem_mechanism: impl Fn(&NetemParams) -> String) -> String {
        let mut out = String::new();
        let c = &self.cluster;
        out.push_str(&format!("scenario {} ({}), seed {}\n", self.name, self.file.display(), self.seed));
        if !self.description.is_empty() {
            for line in wrap(&self.description, 86) {
                out.push_str(&format!("  {line}\n"));
            }
        }
        let plural = |n: u32, w: &str| if n == 1 { format!("{n} {w}") } else { format!("{n} {w}s") };
        out.push_str(&format!(
            "cluster: {}{}{}, {} x {} slots ({} slots){}\n",
            if c.engine == crate::engine::Engine::Streamd { String::new() } else { format!("{} ", c.engine) },
            plural(c.jobmanagers, "jobmanager"),
            c.coordinator().map(|n| format!(" (HA, with {n})")).unwrap_or_default(),
            plural(c.taskmanagers, "taskmanager"),
            c.slots,
            c.total_slots(),
            if c.lines { format!(", line server {}", streamd_contract::lines::NODE) } else { String::new() }
        ));
        for (node, r) in &c.resources {
            let mut parts = Vec::new();
            if let Some(cpus) = r.cpus {
                parts.push(format!("cpus {cpus}"));
            }
            if let Some(m) = r.memory_bytes {
                parts.push(format!("memory {}", format_memory(m)));
            }
            out.push_str(&format!("  {node}: {}\n", parts.join(", ")));
        }
        if let Some(m) = &c.checkpoint_storage {
            out.push_str(&format!("  checkpoint storage: {}; via the FUSE passthrough of /data (chaos-netd disk)\n", m.describe()));
        }
        let j = &self.job;
        let restart = match &j.restart {
            RestartStrategy::None => "none".to_string(),
            RestartStrategy::FixedDelay { attempts, delay } => format!("fixed-delay {attempts} x {}", fd(*delay)),
            RestartStrategy::FailureRate { max_failures, interval, delay } => {
                format!("failure-rate {max_failures} per {}, delay {}", fd(*interval), fd(*delay))
            }
            RestartStrategy::ExponentialDelay { initial, max, .. } => format!("exponential-delay {}..{}", fd(*initial), fd(*max)),
        };
        out.push_str(&format!(
            "job: parallelism {}, checkpoints {}, {}, restart {restart}, heartbeat timeout {}\n",
            j.parallelism,
            match &j.checkpoint_interval {
                CheckpointInterval::Fixed(d) => format!("every {}", fd(*d)),
                adaptive => adaptive.to_string(),
            },
            match j.delivery {
                Delivery::ExactlyOnce => "exactly-once",
                Delivery::AtLeastOnce => "at-least-once",
            },
            fd(j.heartbeat.timeout)
        ));
        // With a socket, the input is what chaos feeds the line server.
        let input = self.feed.as_ref().unwrap_or(&j.input);
        if let Some(s) = &j.input.socket {
            out.push_str(&format!(
                "input: socket {}:{} (the line server; source subtask 0 reads it, at most once), fed by chaos:\n",
                s.host, s.port
            ));
        }
        if let Some(c) = j.window_clock() {
            let windows = input.generate.as_ref().map(|g| {
                let last = c.window_of_line(g.lines.saturating_sub(1));
                let wall = if input.rate > 0 {
                    format!(", one fires every ~{:.2}s of wall time", c.width_ms as f64 / c.per_line_ms as f64 / input.rate as f64)
                } else {
                    String::new()
                };
                format!(" ({} windows{wall})", last / c.width_ms + 1)
            });
            out.push_str(&format!(
                "windows: {} tumbling event-time windows, line i at i x {} of event time{}\n",
                fd(Duration::from_millis(c.width_ms)),
                fd(Duration::from_millis(c.per_line_ms)),
                windows.unwrap_or_default()
            ));
        }
        let rate = if input.rate == 0 { "as fast as possible".to_string() } else { format!("at {} lines/s", input.rate) };
        if let Some(g) = &input.generate {
            let span = if input.rate > 0 { format!(" (~{:.1}s)", g.lines as f64 / input.rate as f64) } else { String::new() };
            out.push_str(&format!(
                "input: {} generated lines x {} words (vocabulary {}, seed {}) {rate}{span}\n",
                g.lines, g.words_per_line, g.vocabulary, g.seed
            ));
        }
        if let (Some(f), Some(src)) = (&input.file, &self.input_source) {
            out.push_str(&format!("input: {} (copied to /data/{}) {rate}\n", src.display(), f.path));
        }
        out.push_str(&format!(
            "expect: output {}, recovery within {}, timeout {}\n\n",
            self.expect.output.as_str(),
            fd(self.expect.recovery_within),
            fd(self.expect.timeout)
        ));

        if self.faults.is_empty() {
            out.push_str("no faults (a baseline run)\n");
        } else {
            let interval = j.checkpoint_interval.nominal();
            let mut order: Vec<_> = self.faults.iter().collect();
            order.sort_by_key(|f| f.trigger.estimate(interval));
            let mut rows = vec![["WHEN", "ACTION", "TARGETS", "PARAMS", "UNDO", "LINE"].map(String::from)];
            for f in order {
                let when = match f.trigger {
                    Trigger::At(d) => fd(d),
                    Trigger::Checkpoint(n) => format!("checkpoint {n} (~{})", fd(f.trigger.estimate(interval))),
                };
                let targets: Vec<String> = f.targets.iter().map(|t| t.to_string()).collect();
                let (targets, params) = match &f.action {
                    Action::Kill { signal, lose_unsynced } => (targets.join(", "), format!("{}{}", signal.name(), power_note(*lose_unsynced, "then"))),
                    Action::Stop { grace, lose_unsynced } => (targets.join(", "), format!("grace {}{}", fd(*grace), power_note(*lose_unsynced, "then"))),
                    Action::Restart { grace, lose_unsynced } => {
                        (targets.join(", "), format!("grace {}{}", fd(*grace), power_note(*lose_unsynced, "while down")))
                    }
                    Action::Netem(p) => (targets.join(", "), format!("{p}; via {}", netem_mechanism(p))),
                    Action::Partition { groups, one_way } => {
                        let gs: Vec<String> = groups
                            .iter()
                            .map(|g| format!("[{}]", g.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")))
                            .collect();
                        (gs.join(" | "), if *one_way { "one way: from the first group".into() } else { "both ways".into() })
                    }
                    Action::Corrupt { what, how } => (
                        targets.join(", "),
                        format!("{} {}; via {}", how.as_str(), what.as_str(), crate::fault::corrupt::mechanism(*what)),
                    ),
                    Action::Disk(d) => (
                        targets.join(", "),
                        format!("{}; via the FUSE passthrough of /data (chaos-netd disk)", crate::diskfault::faults::describe(d)),
                    ),
                    _ => (targets.join(", "), String::new()),
                };
                let undo = match (f.undo_after, f.trigger) {
                    (Some(d), Trigger::At(t)) => format!("{} at {}", undo_word(&f.action), fd(t + d)),
                    (Some(d), Trigger::Checkpoint(_)) => format!("{} {} later", undo_word(&f.action), fd(d)),
                    (None, _) if matches!(f.action, Action::Pause | Action::Netem(_) | Action::Partition { .. } | Action::Disk(_)) => {
                        "until the run ends".to_string()
                    }
                    (None, _) => "-".to_string(),
                };
                let mut action = f.action.name().to_string();
                if f.repetition > 0 {
                    action.push_str(&format!(" (#{})", f.repetition + 1));
                }
                rows.push([when, action, targets, params, undo, f.line.to_string()]);
            }
            let mut widths = [0usize; 6];
            for r in &rows {
                for (w, cell) in widths.iter_mut().zip(r) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for r in &rows {
                let mut line = String::from(" ");
                for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
                    if i + 1 == r.len() {
                        line.push_str(&format!(" {cell}"));
                    } else {
                        line.push_str(&format!(" {cell:<w$} "));
                    }
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        if !self.warnings.is_empty() {
            out.push('\n');
            for w in &self.warnings {
                out.push_str(&format!("warning: {w}\n"));
            }
        }
        out
    }
}

/// How a power loss is done, for the PARAMS column (`when`: `then`, `while down`).
fn power_note(lose_unsynced: bool, when: &str) -> String {
    match lose_unsynced {
        true => format!(
            "; {when} power loss: writes not fsynced and entry changes of directories not fsynced are rolled back; via the FUSE passthrough of /data (chaos-netd disk)"
        ),
        false => String::new(),
    }
}

fn undo_word(a: &Action) -> &'static str {
    match a {
        Action::Pause => "unpause",
        Action::Netem(_) | Action::Disk(_) => "remove",
        Action::Partition { .. } => "heal",
        _ => "undo",
    }
}

/// Greedy word wrap (descriptions are prose).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut cur = String::new();
        for word in para.split_whitespace() {
            if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        lines.push(cur);
    }
    lines
}
