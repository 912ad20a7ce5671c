//! At-most-once: the guarantee of a source that cannot replay (`input.socket`, like Flink's
//! socketTextStream reading `nc -l 9000`). Lines a failed attempt read after its last
//! completed checkpoint are gone: the restarted source cannot ask the socket for them
//! again. So loss is allowed, but nothing may be counted twice (`monotonic`), no word may
//! exceed its oracle count, and no word may appear that was never fed (`at_most_once`).
//!
//! Where the loss comes from is read from the line server's journal
//! ([`streamd_contract::lines`]): every source connection says what its checkpoint
//! restored, and the server notes where it went on sending, so lines `restored..first` of a
//! new connection are exactly the lines lost at that restart. Each lost range is matched
//! with the connection that carried it, the jobmanager's failure and the fault before it.

use super::{examples, Expectation, Verdict, FINAL_COUNTS};
use std::collections::HashMap;
use std::path::Path;
use streamd_contract::api::FailureEvent;
use streamd_contract::lines::Event;
use streamd_contract::tokenizer::for_each_token;

/// The rule's name in `checks`.
pub const AT_MOST_ONCE: &str = "at_most_once";

/// The one-line reason every loss report gives.
pub const WHY: &str = "the source cannot replay what was read after the last completed checkpoint: a socket cannot be rewound";

/// The `at_most_once` check, made only under that expectation: no word above its oracle
/// count, none the oracle does not know. (Nothing counted twice is `monotonic`'s rule.)
pub(super) fn add_check(v: &Verdict, oracle: &HashMap<String, u64>, expectation: Expectation, add: &mut impl FnMut(&str, bool, String)) {
    if expectation != Expectation::AtMostOnce {
        return;
    }
    let ok = !oracle.is_empty() && v.overcounted.is_empty() && v.unexpected.is_empty();
    let details = if oracle.is_empty() {
        "the input has no words: nothing was tested".to_string()
    } else if ok {
        "no word over-counted or unexpected (loss is allowed at-most-once)".to_string()
    } else {
        let mut parts = Vec::new();
        if !v.overcounted.is_empty() {
            parts.push(format!("{} over-counted{}", v.overcounted.len(), examples(&v.overcounted).unwrap_or_default()));
        }
        if !v.unexpected.is_empty() {
            parts.push(format!("{} unexpected{}", v.unexpected.len(), examples(&v.unexpected).unwrap_or_default()));
        }
        parts.join(", ")
    };
    add(AT_MOST_ONCE, ok, details);
}

/// A fault of the run, as the loss report names it.
#[derive(Debug, Clone)]
pub struct FaultFact {
    /// `stop taskmanager-1`.
    pub label: String,
    /// Wall-clock ms.
    pub applied_ms: u64,
}

/// What a socket run recorded besides its output.
#[derive(Debug, Clone)]
pub struct SocketEvidence {
    pub journal: Vec<Event>,
    /// Every line fed, in order (`lines/fed.txt`).
    pub fed: Vec<String>,
    pub faults: Vec<FaultFact>,
    /// The jobmanager's failures.
    pub failures: Vec<FailureEvent>,
    /// Wall-clock ms of the job's first RUNNING: times are reported from it.
    pub t0_ms: u64,
}

impl SocketEvidence {
    /// Reads the line server's files in the run directory.
    pub fn read(run_dir: &Path, faults: Vec<FaultFact>, failures: Vec<FailureEvent>, t0_ms: u64) -> std::io::Result<Self> {
        let journal = streamd_contract::lines::read_journal(&streamd_contract::lines::journal_path(run_dir))?;
        let mut fed = Vec::new();
        let path = streamd_contract::lines::fed_path(run_dir);
        if path.exists() {
            streamd_contract::input::for_each_file_line(&path, |l| fed.push(l.to_string()))?;
        }
        Ok(SocketEvidence { journal, fed, faults, failures, t0_ms })
    }
}

/// Lines lost at one restart of the source.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LostRange {
    /// Lines `from..to` (global indices in feed order).
    pub from: u64,
    pub to: u64,
    /// Word occurrences in those lines.
    pub words: u64,
    /// The attempt whose source reconnected (restored before `from`).
    pub attempt: u64,
    /// What lost them: the connection that carried them, the failure, the fault.
    pub cause: String,
}

/// The lost ranges the journal shows, each with its cause.
pub fn lost_ranges(ev: &SocketEvidence) -> Vec<LostRange> {
    let rel = |t: u64| format!("{:.2} s", t.saturating_sub(ev.t0_ms) as f64 / 1000.0);
    let mut out = Vec::new();
    // Per connection: when and why it closed, and what it was sent.
    let mut closes: HashMap<u64, (u64, u64, &str)> = HashMap::new();
    let mut opens: Vec<(u64, u64, u64)> = Vec::new(); // (conn, first, open ms)
    let mut restarts: Vec<u64> = Vec::new(); // server (re)starts after the first
    for e in &ev.journal {
        match e {
            Event::Close { t_ms, conn, sent, reason } => {
                closes.insert(*conn, (*t_ms, *sent, reason.as_str()));
            }
            Event::Start { t_ms, .. } => restarts.push(*t_ms),
            Event::Open { t_ms, conn, first, .. } => opens.push((*conn, *first, *t_ms)),
            Event::Ended { .. } => {}
        }
    }
    // The first start is the server's birth, not a restart.
    restarts.drain(..restarts.len().min(1));
    for e in &ev.journal {
        let Event::Open { t_ms, attempt, restored, first, .. } = e else { continue };
        if restored >= first {
            continue;
        }
        let (from, to) = (*restored, *first);
        let words = ev
            .fed
            .iter()
            .skip(from as usize)
            .take((to - from) as usize)
            .map(|l| {
                let mut n = 0u64;
                for_each_token(l, |_| n += 1);
                n
            })
            .sum();
        // The connection that was sent the last of them: the latest one that started
        // before `to` (earlier connections can only hold earlier lines).
        let carrier = opens.iter().filter(|(_, f, at)| *f < to && at < t_ms).max_by_key(|(_, _, at)| *at);
        let mut parts = Vec::new();
        // The first sign of the loss (the carrier closing, the attempt failing, the server
        // restarting; at the latest the reconnection): the fault that caused it came before.
        let mut signs = vec![*t_ms];
        match carrier.map(|(conn, _, _)| (conn, closes.get(conn))) {
            Some((conn, Some((closed, _, reason)))) => {
                parts.push(format!("read by connection {conn}, closed at {} ({reason})", rel(*closed)));
                signs.push(*closed);
            }
            Some((conn, None)) => parts.push(format!("read by connection {conn}, which the line server never saw close")),
            None => parts.push("never sent to a source".into()),
        }
        // A restart of the server while the carrier was its connection (or before any).
        let since = carrier.map_or(0, |(_, _, at)| *at);
        if let Some(r) = restarts.iter().filter(|&&r| r > since && r <= *t_ms).max() {
            parts.push(format!("the line server restarted at {}", rel(*r)));
            signs.push(*r);
        }
        // The failure that ended the attempt which read them: the latest attempt before
        // this one that failed.
        // Its first failure is the cause; later ones (a count task that lost its input)
        // are consequences.
        let failed = ev.failures.iter().filter(|f| f.attempt < *attempt && f.at_ms <= *t_ms).map(|f| f.attempt).max();
        if let Some(f) = ev.failures.iter().filter(|f| Some(f.attempt) == failed).min_by_key(|f| f.at_ms) {
            let node = f.taskmanager.as_deref().or(f.jobmanager.as_deref()).map(|n| format!("{n}: ")).unwrap_or_default();
            parts.push(format!("attempt {} failed at {} ({node}{})", f.attempt, rel(f.at_ms), f.cause));
            signs.push(f.at_ms);
        }
        let by = signs.into_iter().min().unwrap_or(*t_ms);
        // (Interactive runs know no faults: `chaos kill` was another invocation.)
        match ev.faults.iter().filter(|f| f.applied_ms <= by).max_by_key(|f| f.applied_ms) {
            Some(f) => parts.push(format!("fault: {} at {}", f.label, rel(f.applied_ms))),
            None if !ev.faults.is_empty() => parts.push("no fault of the run before it".into()),
            None => {}
        }
        out.push(LostRange { from, to, words, attempt: *attempt, cause: parts.join("; ") });
    }
    out
}

/// Adds the loss report to the verdict: in `at_most_once` (a pass says what was lost and
/// why), and in a failed `final_counts` (exactly-once expected: the failure names the loss
/// and its cause). Lost words the journal cannot account for are said to be so.
pub fn explain(v: &mut Verdict, ev: &SocketEvidence) {
    let ranges = lost_ranges(ev);
    let lost_words: u64 = v.lost.values().map(|d| d.expected - d.got).sum();
    if lost_words == 0 && ranges.is_empty() {
        return;
    }
    let in_ranges: u64 = ranges.iter().map(|r| r.words).sum();
    let mut why = String::new();
    for r in &ranges {
        why.push_str(&format!(
            "; lines {}..{} ({} lines, {} words) lost at the restart of attempt {}: {}",
            r.from,
            r.to,
            r.to - r.from,
            r.words,
            r.attempt,
            r.cause
        ));
    }
    if in_ranges != lost_words {
        why.push_str(&format!("; the line server's journal accounts for {in_ranges} of the {lost_words} lost word(s)"));
    }
    why.push_str(&format!("; why: {WHY}"));
    if let Some(c) = v.checks.get_mut(AT_MOST_ONCE) {
        let lost = format!("lost {lost_words} occurrence(s) of {} word(s){}", v.lost.len(), examples(&v.lost).unwrap_or_default());
        c.details = format!("{}; {lost}{why}", c.details);
    }
    if let Some(c) = v.checks.get_mut(FINAL_COUNTS).filter(|c| !c.ok) {
        c.details.push_str(&why);
    }
    v.socket_losses = ranges;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{verdict, MONOTONIC};
    use std::path::PathBuf;
    use streamd_contract::output::Transaction;

    fn txn(subtask: u32, epoch: u64, records: &[(&str, u64)]) -> Transaction {
        Transaction {
            subtask,
            epoch,
            part: 0,
            path: PathBuf::from(format!("{subtask}/committed-{epoch}.tsv")),
            records: records.iter().map(|(w, c)| (w.to_string(), *c)).collect(),
            well_formed: Ok(()),
        }
    }

    fn oracle() -> HashMap<String, u64> {
        [("to", 4), ("be", 4), ("or", 2), ("not", 2)].iter().map(|(w, c)| (w.to_string(), *c)).collect()
    }

    fn failed(v: &Verdict) -> Vec<&str> {
        v.checks.iter().filter(|(_, c)| !c.ok && c.required).map(|(k, _)| k.as_str()).collect()
    }

    /// Lines of the first failed attempt were lost: fewer counts, each committed once.
    fn lossy() -> Vec<Transaction> {
        vec![txn(0, 1, &[("to", 2), ("be", 2)]), txn(1, 1, &[("or", 1)]), txn(0, 3, &[("to", 3), ("be", 3)]), txn(1, 3, &[("not", 1)])]
    }

    #[test]
    fn loss_passes_at_most_once_and_fails_exactly_once() {
        let v = verdict(&oracle(), &lossy(), Expectation::AtMostOnce, vec![]);
        assert!(v.pass, "{:?}", v.checks);
        assert!(v.checks[AT_MOST_ONCE].ok);
        assert!(!v.checks[FINAL_COUNTS].required, "loss is allowed");
        let v = verdict(&oracle(), &lossy(), Expectation::ExactlyOnce, vec![]);
        assert_eq!(failed(&v), vec![FINAL_COUNTS]);
    }

    #[test]
    fn a_duplicate_commit_fails_at_most_once() {
        let mut t = lossy();
        t.push(txn(0, 4, &[("to", 3)])); // the same count committed again: a replay
        let v = verdict(&oracle(), &t, Expectation::AtMostOnce, vec![]);
        assert!(!v.pass);
        assert_eq!(failed(&v), vec![MONOTONIC]);
    }

    #[test]
    fn an_unexpected_or_overcounted_word_fails_at_most_once() {
        let mut t = lossy();
        t.push(txn(1, 4, &[("question", 1)]));
        let v = verdict(&oracle(), &t, Expectation::AtMostOnce, vec![]);
        assert_eq!(failed(&v), vec![AT_MOST_ONCE]);
        assert!(v.checks[AT_MOST_ONCE].details.contains("unexpected"), "{}", v.checks[AT_MOST_ONCE].details);
        let mut t = lossy();
        t.push(txn(1, 4, &[("or", 3)])); // above the oracle's 2: counted twice somewhere
        let v = verdict(&oracle(), &t, Expectation::AtMostOnce, vec![]);
        assert_eq!(failed(&v), vec![AT_MOST_ONCE]);
        assert!(v.checks[AT_MOST_ONCE].details.contains("over-counted"));
    }

    /// The journal of a run whose source was on a stopped taskmanager: connection 1 was sent
    /// lines 0..4 and closed; attempt 2 restored line 2 and got lines from 4 on.
    fn evidence() -> SocketEvidence {
        let t0 = 1_000_000;
        SocketEvidence {
            journal: vec![
                Event::Start { t_ms: t0 - 500, fed: 0, cursor: 0 },
                Event::Open { t_ms: t0, conn: 1, peer: "tm1".into(), attempt: 1, restored: 0, first: 0 },
                Event::Close { t_ms: t0 + 5050, conn: 1, sent: 4, reason: "the source closed the connection".into() },
                Event::Open { t_ms: t0 + 5400, conn: 2, peer: "tm2".into(), attempt: 2, restored: 2, first: 4 },
                Event::Ended { t_ms: t0 + 9000, lines: 6 },
            ],
            fed: ["to be", "or not", "to be", "or not", "to be", "to be"].iter().map(|s| s.to_string()).collect(),
            faults: vec![
                FaultFact { label: "stop taskmanager-1".into(), applied_ms: t0 + 5000 },
                FaultFact { label: "start taskmanager-1".into(), applied_ms: t0 + 12000 },
            ],
            failures: vec![
                FailureEvent { at_ms: t0 + 5060, attempt: 1, taskmanager: Some("taskmanager-1".into()), jobmanager: None, cause: "connection closed".into() },
                FailureEvent { at_ms: t0 + 5070, attempt: 1, taskmanager: Some("taskmanager-3".into()), jobmanager: None, cause: "input lost".into() },
            ],
            t0_ms: t0,
        }
    }

    #[test]
    fn lost_lines_are_attributed_to_their_connection_failure_and_fault() {
        let r = lost_ranges(&evidence());
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].from, r[0].to, r[0].words, r[0].attempt), (2, 4, 4, 2));
        for needle in ["connection 1, closed at 5.05 s", "attempt 1 failed at 5.06 s (taskmanager-1: connection closed)", "fault: stop taskmanager-1 at 5.00 s"] {
            assert!(r[0].cause.contains(needle), "{needle}: {}", r[0].cause);
        }
    }

    /// The line server stopped (the attempt fails at once) and started later: the loss is
    /// the stop's, not the start's, though the start came before the reconnection.
    #[test]
    fn the_fault_named_is_the_one_before_the_first_sign_of_the_loss() {
        let t0 = 1_000_000;
        let ev = SocketEvidence {
            journal: vec![
                Event::Start { t_ms: t0 - 500, fed: 0, cursor: 0 },
                Event::Open { t_ms: t0, conn: 1, peer: "tm1".into(), attempt: 1, restored: 0, first: 0 },
                Event::Start { t_ms: t0 + 5200, fed: 6, cursor: 6 },
                Event::Open { t_ms: t0 + 5300, conn: 2, peer: "tm2".into(), attempt: 2, restored: 2, first: 6 },
            ],
            fed: ["to be"; 6].iter().map(|s| s.to_string()).collect(),
            faults: vec![
                FaultFact { label: "stop lines-1".into(), applied_ms: t0 + 3000 },
                FaultFact { label: "start lines-1".into(), applied_ms: t0 + 5000 },
            ],
            failures: vec![FailureEvent { at_ms: t0 + 3020, attempt: 1, taskmanager: None, jobmanager: None, cause: "input lost".into() }],
            t0_ms: t0,
        };
        let r = lost_ranges(&ev);
        assert_eq!((r[0].from, r[0].to), (2, 6));
        for needle in ["never saw close", "restarted at 5.20 s", "fault: stop lines-1 at 3.00 s"] {
            assert!(r[0].cause.contains(needle), "{needle}: {}", r[0].cause);
        }
    }

    #[test]
    fn exactly_once_names_the_loss_and_why() {
        // Lines 2..4 ("to be", "or not") never counted.
        let t = vec![txn(0, 1, &[("to", 3), ("be", 3)]), txn(1, 1, &[("or", 1), ("not", 1)])];
        let mut v = verdict(&oracle(), &t, Expectation::ExactlyOnce, vec![]);
        explain(&mut v, &evidence());
        let d = &v.checks[FINAL_COUNTS].details;
        assert!(!v.pass);
        assert!(d.contains("lines 2..4 (2 lines, 4 words)") && d.contains(WHY), "{d}");
        assert!(!d.contains("accounts for"), "every lost word is in the lost lines: {d}");
        assert_eq!(v.socket_losses.len(), 1);
    }
}
