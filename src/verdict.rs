//! The verdict (DESIGN.md section 6): an oracle computed from the input alone (the engine's
//! tokenizer, none of its code), the committed output read back, and named checks on it —
//! `final_counts`, `well_formed`, `monotonic`, and, given the run's epoch evidence,
//! `consistent_cuts` and `epochs_complete` ([`epochs`]) — of which the scenario's
//! `expect.output` selects the ones that must hold.
//!
//! Why the checks can be done per word without looking at epochs globally: the sink is
//! hash-partitioned, so every word belongs to exactly one sink subtask, and each committed
//! transaction holds the *new cumulative count* of every word that changed in it. A word's
//! history is therefore the sequence of its values across its subtask's transactions in
//! (epoch, part) order, and its final count is the last value.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use streamd_contract::input::{for_each_file_line, Generator};
use streamd_contract::output::Transaction;
use streamd_contract::spec::{GenerateSpec, JobSpec};
use streamd_contract::tokenizer::for_each_token;
use streamd_contract::window::{self, WindowClock};

pub mod at_most_once;
pub mod epochs;
pub use at_most_once::AT_MOST_ONCE;
pub use epochs::{EpochEvidence, CONSISTENT_CUTS, EPOCHS_COMPLETE};

/// Rule names, as they appear in `checks` of the report.
pub const FINAL_COUNTS: &str = "final_counts";
/// Every committed transaction is complete and parseable; no word in two subtasks.
pub const WELL_FORMED: &str = "well_formed";
/// Per word, committed cumulative counts strictly increase.
pub const MONOTONIC: &str = "monotonic";
/// Every fault hit a running job (one after FINISHED, or before RUNNING, tested nothing);
/// a run-level check the executor adds.
pub const FAULT_EFFECTIVE: &str = "fault_effective";
/// No word below its oracle count, no word the oracle doesn't know (overcount allowed).
pub const AT_LEAST_ONCE: &str = "at_least_once";
/// Per word, the committed updates are exactly 1..N, each once (engines whose output has
/// no order to check, such as Flink's FileSink; see [`verdict_updates`]).
pub const COMPLETE_HISTORY: &str = "complete_history";

/// How many duplicated-commit examples a verdict lists (all are counted).
pub const MAX_EXAMPLES: usize = 20;

/// What the oracle reads: the same input the job was given.
#[derive(Debug, Clone)]
pub enum OracleInput {
    /// Every line `0..lines` of the deterministic generator.
    Generate(GenerateSpec),
    /// A text file on the host (every line, regardless of source partitioning).
    File(PathBuf),
}

impl OracleInput {
    /// Calls `f` with every line of the input in order; returns how many there were.
    pub fn for_each_line(&self, mut f: impl FnMut(&str)) -> io::Result<u64> {
        let mut n = 0u64;
        match self {
            OracleInput::Generate(spec) => {
                let g = Generator::new(spec);
                let mut line = String::new();
                for i in 0..g.lines() {
                    line.clear();
                    g.line_into(i, &mut line);
                    f(&line);
                }
                n = g.lines();
            }
            OracleInput::File(path) => for_each_file_line(path, |l| {
                n += 1;
                f(l)
            })?,
        }
        Ok(n)
    }
}

/// Adds every token of `line` to `counts`.
pub(crate) fn count_tokens(line: &str, counts: &mut HashMap<String, u64>) {
    // Look up by &str first so each distinct word is allocated once, not once per token.
    for_each_token(line, |t| match counts.get_mut(t) {
        Some(c) => *c += 1,
        None => {
            counts.insert(t.to_string(), 1);
        }
    })
}

/// Counts every token of the input: the expected final count of every word.
pub fn oracle(input: &OracleInput) -> io::Result<HashMap<String, u64>> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    input.for_each_line(|line| count_tokens(line, &mut counts))?;
    Ok(counts)
}

/// The expected count of every word in every event-time window, by window start: line
/// `i` is at `i × per_line_ms` (see `streamd_contract::window`).
/// Word counts per window start.
pub type WindowCounts = BTreeMap<u64, HashMap<String, u64>>;

/// [`WindowCounts`] of the input, and its number of lines.
pub fn window_counts(input: &OracleInput, clock: WindowClock) -> io::Result<(WindowCounts, u64)> {
    let mut windows = WindowCounts::new();
    let mut index = 0u64;
    let lines = input.for_each_line(|line| {
        let w = windows.entry(clock.window_of_line(index)).or_default();
        count_tokens(line, w);
        index += 1;
    })?;
    windows.retain(|_, w| !w.is_empty());
    Ok((windows, lines))
}

/// The oracle of a windowed job: every `(window, word)` count, keyed as the sink commits
/// it (`<start><TAB><word>`), so every per-key check applies to windows unchanged.
pub fn window_oracle(input: &OracleInput, clock: WindowClock) -> io::Result<HashMap<String, u64>> {
    let (windows, _) = window_counts(input, clock)?;
    Ok(windows.into_iter().flat_map(|(start, w)| w.into_iter().map(move |(word, c)| (window::key(start, &word), c))).collect())
}

/// The oracle of `job`: running counts, or window counts for a windowed job.
pub fn oracle_of(input: &OracleInput, job: &JobSpec) -> io::Result<HashMap<String, u64>> {
    match job.window_clock() {
        Some(c) => window_oracle(input, c),
        None => oracle(input),
    }
}

/// Which guarantees the output must show (the scenario's `expect.output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expectation {
    /// Final counts equal the oracle, well-formed, no duplicated commit.
    #[default]
    ExactlyOnce,
    /// Well-formed and nothing lost; overcounts and duplicated commits are allowed.
    AtLeastOnce,
    /// Well-formed, nothing counted twice, nothing above the oracle; loss is allowed
    /// (a source that cannot replay; see [`at_most_once`]).
    AtMostOnce,
    /// Only well-formed transactions are required.
    Any,
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expectation::ExactlyOnce => "exactly-once",
            Expectation::AtLeastOnce => "at-least-once",
            Expectation::AtMostOnce => "at-most-once",
            Expectation::Any => "any",
        })
    }
}

/// The result of one named rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Check {
    pub ok: bool,
    /// Whether the verdict depends on it (selected by the expectation, or a run failure);
    /// a failed check that is not required is reported but does not fail the run.
    #[serde(default = "yes")]
    pub required: bool,
    /// One human-readable paragraph: what was found, with the first examples.
    pub details: String,
}

fn yes() -> bool {
    true
}

impl Check {
    /// A required check.
    pub fn new(ok: bool, details: impl Into<String>) -> Self {
        Check { ok, required: true, details: details.into() }
    }
}

impl Verdict {
    /// Adds a run-level check found outside the output (a required one that failed fails
    /// the verdict), keeping the rule's place if it is already there.
    pub fn add_check(&mut self, rule: &str, check: Check) {
        self.checks.insert(rule.to_string(), check);
        self.pass = self.checks.values().all(|c| c.ok || !c.required);
    }
}

/// A word whose final count differs from the oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WordDiff {
    pub expected: u64,
    pub got: u64,
}

/// One committed transaction, by its coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct TxnRef {
    pub subtask: u32,
    pub epoch: u64,
    pub part: u32,
}

impl TxnRef {
    fn of(t: &Transaction) -> Self {
        TxnRef { subtask: t.subtask, epoch: t.epoch, part: t.part }
    }
}

impl std::fmt::Display for TxnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.subtask, self.epoch)?;
        if self.part != 0 {
            write!(f, "-{}", self.part)?;
        }
        Ok(())
    }
}

/// A word whose committed count did not increase from one transaction to the next: the
/// same update committed twice (`repeat`), or a replay committed over newer output
/// (`step-back`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    pub word: String,
    pub kind: DuplicateKind,
    pub first: TxnRef,
    pub first_value: u64,
    pub second: TxnRef,
    pub second_value: u64,
}

/// How a committed count failed to increase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicateKind {
    Repeat,
    StepBack,
}

/// A committed transaction that is not well-formed, or a word owned by two subtasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Malformed {
    pub txn: TxnRef,
    pub path: String,
    pub reason: String,
}

/// Everything the checks found; [`crate::report::RunReport::apply_verdict`] copies it into
/// the report.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub pass: bool,
    pub expectation: Expectation,
    /// Rule name -> result, in a stable order: the three output rules first (plus
    /// `at_least_once` when selected), then the run's own failures.
    pub checks: IndexMap<String, Check>,
    /// Words below their oracle count (a word never committed has `got: 0`).
    pub lost: BTreeMap<String, WordDiff>,
    /// Words above their oracle count.
    pub overcounted: BTreeMap<String, WordDiff>,
    /// Committed words the oracle doesn't know (`expected: 0`).
    pub unexpected: BTreeMap<String, WordDiff>,
    /// The first [`MAX_EXAMPLES`] duplicated commits.
    pub duplicates: Vec<Duplicate>,
    /// All duplicated commits found.
    pub duplicates_total: usize,
    /// Every malformed transaction (and every word found in two subtasks).
    pub malformed: Vec<Malformed>,
    /// Final committed count of every word (what `counts.tsv` holds).
    pub finals: BTreeMap<String, u64>,
    /// Committed transactions read.
    pub transactions: usize,
    /// Sum of the oracle's counts (words in the input).
    pub oracle_words: u64,
    /// Socket input: the lines lost at each restart, with their cause.
    pub socket_losses: Vec<at_most_once::LostRange>,
}

/// Checks committed `transactions` (as [`streamd_contract::output::read_committed`] returns them)
/// against the `oracle`. `run_failures` are the executor's run-level failures
/// (`("recovery", "taskmanager-2 kill: not RUNNING within 20s")`, `("timeout", …)`): each
/// becomes a failed, required check, so the verdict fails with them.
pub fn verdict(
    oracle: &HashMap<String, u64>,
    transactions: &[Transaction],
    expectation: Expectation,
    run_failures: Vec<(String, String)>,
) -> Verdict {
    verdict_with(oracle, transactions, expectation, None, run_failures)
}

/// [`verdict`], plus `consistent_cuts` and `epochs_complete` when the run's epoch
/// evidence is given (runs whose checkpoints recorded cuts; without it those checks are
/// not made, and the report has no row for them).
pub fn verdict_with(
    oracle: &HashMap<String, u64>,
    transactions: &[Transaction],
    expectation: Expectation,
    epochs: Option<&EpochEvidence>,
    run_failures: Vec<(String, String)>,
) -> Verdict {
    let mut v = Verdict {
        expectation,
        transactions: transactions.len(),
        oracle_words: oracle.values().sum(),
        ..Verdict::default()
    };

    // Walk the transactions once: per (subtask, word) the last value seen, and per word the
    // subtask that owns it.
    struct Last {
        value: u64,
        txn: TxnRef,
    }
    let mut last: HashMap<(u32, &str), Last> = HashMap::new();
    let mut owner: HashMap<&str, u32> = HashMap::new();
    let mut shared_words = 0usize;
    for t in transactions {
        let at = TxnRef::of(t);
        if let Err(reason) = &t.well_formed {
            v.malformed.push(Malformed { txn: at, path: t.path.display().to_string(), reason: reason.clone() });
        }
        for (word, value) in &t.records {
            let word = word.as_str();
            let o = *owner.entry(word).or_insert(t.subtask);
            if o != t.subtask {
                shared_words += 1;
                if shared_words <= MAX_EXAMPLES {
                    v.malformed.push(Malformed {
                        txn: at,
                        path: t.path.display().to_string(),
                        reason: format!("word {word:?} is also committed by subtask {o}: partitions overlap"),
                    });
                }
            }
            match last.get_mut(&(t.subtask, word)) {
                Some(prev) if prev.txn == at => {
                    v.malformed.push(Malformed {
                        txn: at,
                        path: t.path.display().to_string(),
                        reason: format!("word {word:?} appears twice in one transaction"),
                    });
                    prev.value = *value;
                }
                Some(prev) => {
                    if *value <= prev.value {
                        v.duplicates_total += 1;
                        if v.duplicates.len() < MAX_EXAMPLES {
                            v.duplicates.push(Duplicate {
                                word: word.to_string(),
                                kind: if *value == prev.value { DuplicateKind::Repeat } else { DuplicateKind::StepBack },
                                first: prev.txn,
                                first_value: prev.value,
                                second: at,
                                second_value: *value,
                            });
                        }
                    }
                    *prev = Last { value: *value, txn: at };
                }
                None => {
                    last.insert((t.subtask, word), Last { value: *value, txn: at });
                }
            }
        }
    }

    // Final count: the last committed value. A word in two subtasks (already a
    // well_formed failure) takes the value of its latest transaction.
    let mut latest: HashMap<&str, (u64, u32, u32, u64)> = HashMap::new();
    for ((subtask, word), l) in &last {
        let key = (l.txn.epoch, l.txn.part, *subtask, l.value);
        let e = latest.entry(word).or_insert(key);
        if key > *e {
            *e = key;
        }
    }
    v.finals = latest.into_iter().map(|(w, k)| (w.to_string(), k.3)).collect();

    compare_finals(&mut v, oracle);
    let mut checks: IndexMap<String, Check> = IndexMap::new();
    let mut add = |rule: &str, ok: bool, details: String| {
        checks.insert(rule.to_string(), Check { ok, required: required(expectation, rule), details });
    };
    add_final_counts(&v, oracle, &mut add);

    let details = if v.malformed.is_empty() {
        format!("{} committed transactions, all complete", v.transactions)
    } else {
        let mut s = format!("{} problem(s) in {} transactions", v.malformed.len(), v.transactions);
        if shared_words > MAX_EXAMPLES {
            s.push_str(&format!(" ({shared_words} words in two subtasks, first {MAX_EXAMPLES} listed)"));
        }
        for m in v.malformed.iter().take(5) {
            s.push_str(&format!("; {}: {}", m.txn, m.reason));
        }
        s
    };
    add(WELL_FORMED, v.malformed.is_empty(), details);

    let details = if v.duplicates_total == 0 && is_windowed(v.finals.keys()) {
        format!("{} (window, word) counts: each committed once", v.finals.len())
    } else if v.duplicates_total == 0 {
        format!("{} words: committed counts strictly increase", v.finals.len())
    } else {
        let mut s = format!("{} duplicated commit(s)", v.duplicates_total);
        for d in v.duplicates.iter().take(3) {
            s.push_str(&format!(
                "; {}: {} at {} then {} at {} ({})",
                describe(&d.word),
                d.first_value,
                d.first,
                d.second_value,
                d.second,
                match d.kind {
                    DuplicateKind::Repeat => "repeat",
                    DuplicateKind::StepBack => "step back",
                }
            ));
        }
        s
    };
    add(MONOTONIC, v.duplicates_total == 0, details);

    add_at_least_once(&v, oracle, expectation, &mut add);
    at_most_once::add_check(&v, oracle, expectation, &mut add);

    if let Some(ev) = epochs {
        for (rule, c) in epochs::checks(ev, transactions) {
            add(rule, c.ok, c.details);
        }
    }

    v.checks = checks;
    finish(&mut v, run_failures);
    v
}

/// Whether `rule` must hold under `expectation`; the others are reported only.
fn required(expectation: Expectation, rule: &str) -> bool {
    match expectation {
        Expectation::ExactlyOnce => rule != AT_LEAST_ONCE,
        Expectation::AtLeastOnce => rule == WELL_FORMED || rule == AT_LEAST_ONCE,
        Expectation::AtMostOnce => rule == WELL_FORMED || rule == MONOTONIC || rule == AT_MOST_ONCE,
        Expectation::Any => rule == WELL_FORMED,
    }
}

/// Fills `lost`, `overcounted` and `unexpected` from `v.finals` against the oracle.
fn compare_finals(v: &mut Verdict, oracle: &HashMap<String, u64>) {
    for (word, &expected) in oracle {
        let got = v.finals.get(word).copied().unwrap_or(0);
        if got < expected {
            v.lost.insert(word.clone(), WordDiff { expected, got });
        } else if got > expected {
            v.overcounted.insert(word.clone(), WordDiff { expected, got });
        }
    }
    for (word, &got) in &v.finals {
        if !oracle.contains_key(word) {
            v.unexpected.insert(word.clone(), WordDiff { expected: 0, got });
        }
    }
}

/// The `final_counts` check. An input without a word tests nothing: an empty oracle
/// never passes.
fn add_final_counts(v: &Verdict, oracle: &HashMap<String, u64>, add: &mut impl FnMut(&str, bool, String)) {
    let counts_ok = !oracle.is_empty() && v.lost.is_empty() && v.overcounted.is_empty() && v.unexpected.is_empty();
    let details = if oracle.is_empty() {
        "the input has no words: nothing was tested".to_string()
    } else if counts_ok && is_windowed(oracle.keys()) {
        let windows: std::collections::HashSet<u64> = oracle.keys().filter_map(|k| window::split_key(k).map(|(s, _)| s)).collect();
        format!("{} windows, {} (window, word) counts, {} occurrences: all equal the oracle", windows.len(), oracle.len(), v.oracle_words)
    } else if counts_ok {
        format!("{} words, {} occurrences: all equal the oracle", oracle.len(), v.oracle_words)
    } else {
        count_details(v)
    };
    add(FINAL_COUNTS, counts_ok, details);
}

/// The `at_least_once` check, made only when the expectation is at-least-once.
fn add_at_least_once(v: &Verdict, oracle: &HashMap<String, u64>, expectation: Expectation, add: &mut impl FnMut(&str, bool, String)) {
    if expectation != Expectation::AtLeastOnce {
        return;
    }
    let ok = !oracle.is_empty() && v.lost.is_empty() && v.unexpected.is_empty();
    let details = if oracle.is_empty() {
        "the input has no words: nothing was tested".to_string()
    } else if ok {
        format!("no word lost ({} over-counted, allowed at-least-once)", v.overcounted.len())
    } else {
        format!(
            "{} lost, {} unexpected{}",
            v.lost.len(),
            v.unexpected.len(),
            examples(&v.lost).or_else(|| examples(&v.unexpected)).unwrap_or_default()
        )
    };
    add(AT_LEAST_ONCE, ok, details);
}

/// Adds the executor's run-level failures as failed, required checks and sets `pass`.
fn finish(v: &mut Verdict, run_failures: Vec<(String, String)>) {
    for (rule, details) in run_failures {
        // Two failures of one kind (two faults that did not recover) share a row.
        match v.checks.get_mut(&rule) {
            Some(c) if !c.ok && c.required => c.details = format!("{}; {details}", c.details),
            _ => {
                let rule = if v.checks.contains_key(&rule) { format!("run.{rule}") } else { rule };
                v.checks.insert(rule, Check::new(false, details));
            }
        }
    }
    v.pass = v.checks.values().all(|c| c.ok || !c.required);
}

/// The verdict on an engine whose sink commits every count update as its own record in
/// no checkable order (Flink's FileSink: part files named by a random id): per word, the
/// set of committed values. Exactly once means that set is exactly 1, 2, ..., N, each
/// value once, N the oracle's count: a complete history, no loss, no duplicate.
/// `final_counts` takes each word's highest value; `monotonic` is replaced by
/// [`COMPLETE_HISTORY`]; `well_formed` is about lines (`malformed`).
pub fn verdict_updates(
    oracle: &HashMap<String, u64>,
    updates: &BTreeMap<String, Vec<u64>>,
    malformed: &[String],
    files: usize,
    expectation: Expectation,
    run_failures: Vec<(String, String)>,
) -> Verdict {
    let mut v = Verdict { expectation, transactions: files, oracle_words: oracle.values().sum(), ..Verdict::default() };
    v.finals = updates.iter().map(|(w, vals)| (w.clone(), vals.iter().copied().max().unwrap_or(0))).collect();
    compare_finals(&mut v, oracle);
    let mut checks: IndexMap<String, Check> = IndexMap::new();
    let mut add = |rule: &str, ok: bool, details: String| {
        checks.insert(rule.to_string(), Check { ok, required: required(expectation, rule), details });
    };
    add_final_counts(&v, oracle, &mut add);
    let details = match malformed.first() {
        None => format!("{files} committed files, every line `word<TAB>count`"),
        Some(first) => format!("{} malformed line(s) in {files} committed files; first: {first}", malformed.len()),
    };
    add(WELL_FORMED, malformed.is_empty(), details);

    // Per word: values committed twice, and values of 1..=N never committed.
    let mut duplicated = 0u64;
    let mut gaps = 0u64;
    let mut gap_words = 0usize;
    let mut examples_dup: Vec<String> = Vec::new();
    let mut examples_gap: Vec<String> = Vec::new();
    for (word, values) in updates {
        let n = oracle.get(word).copied().unwrap_or(0);
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for pair in sorted.windows(2).filter(|p| p[0] == p[1]) {
            duplicated += 1;
            v.duplicates_total += 1;
            if examples_dup.len() < 3 {
                examples_dup.push(format!("{word:?} {} twice", pair[0]));
            }
        }
        sorted.dedup();
        let present = sorted.iter().filter(|&&x| (1..=n).contains(&x)).count() as u64;
        if present < n {
            gaps += n - present;
            gap_words += 1;
            if examples_gap.len() < 3 {
                let missing = (1..=n).find(|x| sorted.binary_search(x).is_err()).unwrap_or(0);
                examples_gap.push(format!("{word:?} lacks {missing} of 1..{n}"));
            }
        }
    }
    for (word, &n) in oracle {
        if !updates.contains_key(word) {
            gaps += n;
            gap_words += 1;
        }
    }
    let ok = !oracle.is_empty() && duplicated == 0 && gaps == 0;
    let details = if oracle.is_empty() {
        "the input has no words: nothing was tested".to_string()
    } else if ok {
        format!("{} words: every update 1..N committed exactly once", oracle.len())
    } else {
        let mut parts = Vec::new();
        if duplicated > 0 {
            parts.push(format!("{duplicated} update(s) committed twice ({})", examples_dup.join(", ")));
        }
        if gaps > 0 {
            parts.push(format!("{gaps} update(s) of {gap_words} word(s) never committed ({})", examples_gap.join(", ")));
        }
        parts.join("; ")
    };
    add(COMPLETE_HISTORY, ok, details);
    add_at_least_once(&v, oracle, expectation, &mut add);
    at_most_once::add_check(&v, oracle, expectation, &mut add);
    v.checks = checks;
    finish(&mut v, run_failures);
    v
}

/// "3 lost (foo 10 -> 8, …), 1 over-counted (…)".
fn count_details(v: &Verdict) -> String {
    let mut parts = Vec::new();
    if is_windowed(v.lost.keys().chain(v.overcounted.keys()).chain(v.unexpected.keys())) {
        // A window's count is committed once: one that never came is missing, one that
        // came with another count is wrong.
        let (missing, short): (BTreeMap<String, WordDiff>, BTreeMap<String, WordDiff>) =
            v.lost.iter().map(|(k, d)| (k.clone(), *d)).partition(|(_, d)| d.got == 0);
        let mut wrong = short;
        wrong.extend(v.overcounted.iter().map(|(k, d)| (k.clone(), *d)));
        for (what, map) in [("missing", &missing), ("wrong", &wrong), ("unexpected", &v.unexpected)] {
            if !map.is_empty() {
                parts.push(format!("{} (window, word) count(s) {what}{}", map.len(), examples(map).unwrap_or_default()));
            }
        }
        return parts.join(", ");
    }
    for (what, map) in [("lost", &v.lost), ("over-counted", &v.overcounted), ("unexpected", &v.unexpected)] {
        if !map.is_empty() {
            parts.push(format!("{} {what}{}", map.len(), examples(map).unwrap_or_default()));
        }
    }
    parts.join(", ")
}

/// Whether these keys are a windowed job's (`<start><TAB><word>`: no word holds a TAB).
fn is_windowed<'a>(mut keys: impl Iterator<Item = &'a String>) -> bool {
    keys.next().is_some_and(|k| window::split_key(k).is_some())
}

/// A key for people: the word (quoted), or the word and its window.
pub fn describe(key: &str) -> String {
    window::describe_key(key, None)
}

/// A key for a table cell: the word as it is, or `word @ window start`.
pub fn display_key(key: &str) -> std::borrow::Cow<'_, str> {
    match window::split_key(key) {
        Some((start, word)) => format!("{word} @ {}", window::fmt_ms(start)).into(),
        None => key.into(),
    }
}

/// " (word expected -> got, …)" for the first few entries, the largest differences first.
fn examples(map: &BTreeMap<String, WordDiff>) -> Option<String> {
    if map.is_empty() {
        return None;
    }
    let top = top_diffs(map, 3);
    let list: Vec<String> = top
        .iter()
        .map(|(w, d)| match window::split_key(w) {
            Some(_) => format!("{} {} -> {}", describe(w), d.expected, d.got),
            None => format!("{w} {} -> {}", d.expected, d.got),
        })
        .collect();
    let more = if map.len() > top.len() { ", …" } else { "" };
    Some(format!(" ({}{more})", list.join(", ")))
}

/// The `n` entries with the largest |got - expected|, ties by word.
pub fn top_diffs(map: &BTreeMap<String, WordDiff>, n: usize) -> Vec<(&str, WordDiff)> {
    let mut all: Vec<(&str, WordDiff)> = map.iter().map(|(w, d)| (w.as_str(), *d)).collect();
    all.sort_by(|a, b| b.1.got.abs_diff(b.1.expected).cmp(&a.1.got.abs_diff(a.1.expected)).then(a.0.cmp(b.0)));
    all.truncate(n);
    all
}

/// Writes `word<TAB>count` lines sorted by word, atomically (temp file, rename), so a
/// reader never sees half a file.
pub fn write_counts(path: &Path, finals: &BTreeMap<String, u64>) -> io::Result<()> {
    let tmp = path.with_extension("tsv.tmp");
    {
        let mut w = io::BufWriter::new(std::fs::File::create(&tmp)?);
        // Window keys (`<start><TAB><word>`) in time order, not in string order.
        let mut rows: Vec<(&String, &u64)> = finals.iter().collect();
        rows.sort_by_key(|(k, _)| window::split_key(k).map(|(s, _)| s));
        for (word, count) in rows {
            writeln!(w, "{word}\t{count}")?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamd_contract::output::{committed_name, read_committed, write_transaction};

    fn oracle_of(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(w, c)| (w.to_string(), *c)).collect()
    }

    /// A hand-made committed transaction: (subtask, epoch, part, records).
    type Txn<'a> = (u32, u64, u32, &'a [(&'a str, u64)]);

    /// Writes committed transactions into a fresh output directory and reads them back
    /// the way the executor does.
    fn committed(txns: &[Txn]) -> (tempfile::TempDir, Vec<Transaction>) {
        let dir = tempfile::tempdir().unwrap();
        for (subtask, epoch, part, records) in txns {
            let sub = dir.path().join(subtask.to_string());
            std::fs::create_dir_all(&sub).unwrap();
            write_transaction(&sub.join(committed_name(*epoch, *part)), records.iter().copied()).unwrap();
        }
        let t = read_committed(dir.path()).unwrap();
        (dir, t)
    }

    const ORACLE: &[(&str, u64)] = &[("a", 5), ("b", 3), ("c", 2)];

    /// A correct run: `a` and `c` on subtask 0, `b` on subtask 1, over three epochs.
    fn correct() -> Vec<Txn<'static>> {
        vec![
            (0, 1, 0, &[("a", 2), ("c", 1)]),
            (0, 2, 0, &[("a", 4)]),
            (0, 3, 0, &[("a", 5), ("c", 2)]),
            (1, 1, 0, &[("b", 1)]),
            (1, 3, 0, &[("b", 3)]),
        ]
    }

    fn failed(v: &Verdict) -> Vec<&str> {
        v.checks.iter().filter(|(_, c)| !c.ok).map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn oracle_counts_generated_input_with_the_engine_tokenizer() {
        let spec = GenerateSpec { lines: 50, words_per_line: 4, vocabulary: 10, seed: 3 };
        let o = oracle(&OracleInput::Generate(spec.clone())).unwrap();
        assert_eq!(o.values().sum::<u64>(), 200);
        // Recount by hand from the generator's lines.
        let g = Generator::new(&spec);
        let mut by_hand: HashMap<String, u64> = HashMap::new();
        for i in 0..50 {
            for w in g.line(i).split(' ') {
                *by_hand.entry(w.to_string()).or_default() += 1;
            }
        }
        assert_eq!(o, by_hand);
        assert!(o.len() <= 10);
    }

    #[test]
    fn oracle_counts_a_file_case_sensitive_with_punctuation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.txt");
        std::fs::write(&p, "To be, or not\tto be.\r\n\n  żółw To\nlast line no newline").unwrap();
        let o = oracle(&OracleInput::File(p)).unwrap();
        let want = oracle_of(&[
            ("To", 2),
            ("be,", 1),
            ("or", 1),
            ("not", 1),
            ("to", 1),
            ("be.", 1),
            ("żółw", 1),
            ("last", 1),
            ("line", 1),
            ("no", 1),
            ("newline", 1),
        ]);
        assert_eq!(o, want);
        assert!(oracle(&OracleInput::File(dir.path().join("missing"))).is_err());
    }

    #[test]
    fn a_correct_run_passes_and_counts_are_written_sorted() {
        let (dir, t) = committed(&correct());
        let v = verdict(&oracle_of(ORACLE), &t, Expectation::ExactlyOnce, vec![]);
        assert!(v.pass, "{:?}", v.checks);
        assert_eq!(v.checks.keys().collect::<Vec<_>>(), [FINAL_COUNTS, WELL_FORMED, MONOTONIC]);
        assert!(v.checks.values().all(|c| c.ok && c.required));
        assert_eq!(v.transactions, 5);
        assert_eq!(v.finals, BTreeMap::from([("a".into(), 5), ("b".into(), 3), ("c".into(), 2)]));
        let path = dir.path().join("counts.tsv");
        write_counts(&path, &v.finals).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\t5\nb\t3\nc\t2\n");
    }

    #[test]
    fn a_lost_word_fails_final_counts_with_numbers() {
        let mut txns = correct();
        txns.pop(); // subtask 1's last epoch never committed: b stays at 1
        let (_d, t) = committed(&txns);
        let mut o = oracle_of(ORACLE);
        o.insert("never".into(), 4); // and one word never committed at all
        let v = verdict(&o, &t, Expectation::ExactlyOnce, vec![]);
        assert!(!v.pass);
        assert_eq!(failed(&v), [FINAL_COUNTS]);
        assert_eq!(v.lost["b"], WordDiff { expected: 3, got: 1 });
        assert_eq!(v.lost["never"], WordDiff { expected: 4, got: 0 });
        assert!(v.overcounted.is_empty() && v.unexpected.is_empty());
        assert!(v.checks[FINAL_COUNTS].details.contains("2 lost"), "{}", v.checks[FINAL_COUNTS].details);
    }

    #[test]
    fn an_overcount_and_an_unexpected_word_fail_final_counts() {
        let mut txns = correct();
        txns.push((1, 4, 0, &[("b", 4), ("zz", 1)]));
        let (_d, t) = committed(&txns);
        let v = verdict(&oracle_of(ORACLE), &t, Expectation::ExactlyOnce, vec![]);
        assert_eq!(failed(&v), [FINAL_COUNTS]);
        assert_eq!(v.overcounted["b"], WordDiff { expected: 3, got: 4 });
        assert_eq!(v.unexpected["zz"], WordDiff { expected: 0, got: 1 });
        assert!(v.lost.is_empty());
    }

    #[test]
    fn a_repeated_commit_fails_monotonic_and_names_both_transactions() {
        let mut txns = correct();
        // Epoch 2's output committed again as part 1 (an eager re-commit after replay).
        txns.push((0, 2, 1, &[("a", 4)]));
        let (_d, t) = committed(&txns);
        let v = verdict(&oracle_of(ORACLE), &t, Expectation::ExactlyOnce, vec![]);
        assert!(!v.pass);
        assert_eq!(failed(&v), [MONOTONIC]);
        assert_eq!(v.duplicates_total, 1);
        let d = &v.duplicates[0];
        assert_eq!(d.word, "a");
        assert_eq!(d.kind, DuplicateKind::Repeat);
        assert_eq!((d.first, d.first_value), (TxnRef { subtask: 0, epoch: 2, part: 0 }, 4));
        assert_eq!((d.second, d.second_value), (TxnRef { subtask: 0, epoch: 2, part: 1 }, 4));
        assert!(v.checks[MONOTONIC].details.contains("0/2 then 4 at 0/2-1"), "{}", v.checks[MONOTONIC].details);
    }

    #[test]
    fn a_step_back_fails_monotonic_even_when_the_final_count_is_right() {
        // a: 2, 4, then a replayed 3, then 5: final is right, the history is not.
        let (_d, t) = committed(&[
            (0, 1, 0, &[("a", 2), ("c", 2)]),
            (0, 2, 0, &[("a", 4)]),
            (0, 3, 0, &[("a", 3)]),
            (0, 4, 0, &[("a", 5)]),
            (1, 1, 0, &[("b", 3)]),
        ]);
        let v = verdict(&oracle_of(ORACLE), &t, Expectation::ExactlyOnce, vec![]);
        assert_eq!(failed(&v), [MONOTONIC]);
        let d = &v.duplicates[0];
        assert_eq!(d.kind, DuplicateKind::StepBack);
        assert_eq!((d.first.epoch, d.first_value, d.second.epoch, d.second_value), (2, 4, 3, 3));
    }

    #[test]
    fn duplicate_examples_are_capped_but_all_counted() {
        let words: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
        let recs: Vec<(&str, u64)> = words.iter().map(|w| (w.as_str(), 1)).collect();
        let (_d, t) = committed(&[(0, 1, 0, &recs), (0, 2, 0, &recs)]);
        let o: HashMap<String, u64> = words.iter().map(|w| (w.clone(), 1)).collect();
        let v = verdict(&o, &t, Expectation::ExactlyOnce, vec![]);
        assert_eq!(v.duplicates_total, 30);
        assert_eq!(v.duplicates.len(), MAX_EXAMPLES);
        assert!(v.checks[MONOTONIC].details.starts_with("30 duplicated"));
    }

    #[test]
    fn a_truncated_transaction_fails_well_formed() {
        let (dir, _) = committed(&correct());
        // Overwrite subtask 1's last transaction with one missing its trailer.
        std::fs::write(dir.path().join("1").join(committed_name(3, 0)), "b\t3\n").unwrap();
        let t = read_committed(dir.path()).unwrap();
        let v = verdict(&oracle_of(ORACLE), &t, Expectation::ExactlyOnce, vec![]);
        assert_eq!(failed(&v), [WELL_FORMED]);
        assert_eq!(v.malformed.len(), 1);
        assert_eq!(v.malformed[0].txn, TxnRef { subtask: 1, epoch: 3, part: 0 });
        assert!(v.malformed[0].reason.contains("truncated"), "{}", v.malformed[0].reason);
        // Even with no expectation on counts, a torn transaction fails the run.
        assert!(!verdict(&oracle_of(ORACLE), &t, Expectation::Any, vec![]).pass);
    }

    #[test]
    fn a_word_in_two_subtasks_fails_well_formed() {
        let mut txns = correct();
        txns.push((1, 5, 0, &[("a", 5)]));
        let (_d, t) = committed(&txns);
        let v = verdict(&oracle_of(ORACLE), &t, Expectation::ExactlyOnce, vec![]);
        assert!(failed(&v).contains(&WELL_FORMED));
        assert!(v.malformed[0].reason.contains("also committed by subtask 0"), "{:?}", v.malformed);
        // Not a duplicate of subtask 0's history: histories are per subtask.
        assert_eq!(v.duplicates_total, 0);
    }

    #[test]
    fn at_least_once_accepts_overcount_and_duplicates_but_not_loss() {
        let mut txns = correct();
        txns.push((1, 3, 1, &[("b", 3)])); // a repeat
        txns.push((1, 4, 0, &[("b", 5)])); // and an overcount
        let (_d, t) = committed(&txns);
        let o = oracle_of(ORACLE);
        let v = verdict(&o, &t, Expectation::AtLeastOnce, vec![]);
        assert!(v.pass, "{:?}", v.checks);
        // The failed rules are still reported, as not required.
        assert!(!v.checks[FINAL_COUNTS].ok && !v.checks[FINAL_COUNTS].required);
        assert!(!v.checks[MONOTONIC].ok && !v.checks[MONOTONIC].required);
        assert!(v.checks[AT_LEAST_ONCE].ok && v.checks[AT_LEAST_ONCE].required);
        // The same output fails exactly-once.
        assert!(!verdict(&o, &t, Expectation::ExactlyOnce, vec![]).pass);

        let mut lossy = correct();
        lossy.pop();
        let (_d2, t2) = committed(&lossy);
        let v = verdict(&o, &t2, Expectation::AtLeastOnce, vec![]);
        assert!(!v.pass);
        assert_eq!(failed(&v), [FINAL_COUNTS, AT_LEAST_ONCE]);
        assert!(v.checks[AT_LEAST_ONCE].details.contains("b 3 -> 1"), "{}", v.checks[AT_LEAST_ONCE].details);
        // `any` only asks for well-formed output.
        assert!(verdict(&o, &t2, Expectation::Any, vec![]).pass);
    }

    #[test]
    fn run_failures_fail_a_correct_output() {
        let (_d, t) = committed(&correct());
        let v = verdict(
            &oracle_of(ORACLE),
            &t,
            Expectation::ExactlyOnce,
            vec![
                ("recovery".into(), "kill taskmanager-2: not RUNNING within 20s".into()),
                ("recovery".into(), "pause taskmanager-1: not RUNNING within 20s".into()),
                ("timeout".into(), "run exceeded 120s".into()),
            ],
        );
        assert!(!v.pass);
        assert_eq!(failed(&v), ["recovery", "timeout"]);
        assert!(v.checks["recovery"].details.contains("taskmanager-2") && v.checks["recovery"].details.contains("taskmanager-1"));
    }

    /// An input without words tests nothing, and must not pass.
    #[test]
    fn an_empty_oracle_never_passes() {
        for expectation in [Expectation::ExactlyOnce, Expectation::AtLeastOnce] {
            let v = verdict(&HashMap::new(), &[], expectation, vec![]);
            assert!(!v.pass, "{expectation}");
            assert!(v.checks[FINAL_COUNTS].details.contains("nothing was tested"));
        }
    }

    #[test]
    fn a_run_check_added_later_decides_the_verdict_too() {
        let (_d, t) = committed(&correct());
        let mut v = verdict(&oracle_of(ORACLE), &t, Expectation::ExactlyOnce, vec![]);
        v.add_check(FAULT_EFFECTIVE, Check::new(true, "1 fault hit a running job"));
        assert!(v.pass);
        v.add_check(FAULT_EFFECTIVE, Check::new(false, "nothing was tested"));
        assert!(!v.pass);
    }

    #[test]
    fn no_output_at_all_loses_every_word() {
        let v = verdict(&oracle_of(ORACLE), &[], Expectation::ExactlyOnce, vec![]);
        assert!(!v.pass);
        assert_eq!(v.lost.len(), 3);
        assert!(v.finals.is_empty());
    }

    #[test]
    fn complete_history_catches_a_repeated_and_a_missing_update() {
        let oracle = HashMap::from([("a".to_string(), 3), ("b".to_string(), 2)]);
        let ups = |a: &[u64], b: &[u64]| BTreeMap::from([("a".to_string(), a.to_vec()), ("b".to_string(), b.to_vec())]);
        let v = verdict_updates(&oracle, &ups(&[1, 2, 3], &[2, 1]), &[], 2, Expectation::ExactlyOnce, vec![]);
        assert!(v.pass, "{:?}", v.checks);
        // A replayed update committed again: final counts right, history not.
        let v = verdict_updates(&oracle, &ups(&[1, 2, 2, 3], &[1, 2]), &[], 2, Expectation::ExactlyOnce, vec![]);
        assert!(!v.pass && v.checks[FINAL_COUNTS].ok && !v.checks[COMPLETE_HISTORY].ok);
        assert!(v.checks[COMPLETE_HISTORY].details.contains("\"a\" 2 twice"), "{}", v.checks[COMPLETE_HISTORY].details);
        // An update lost in the middle: invisible to the final counts.
        let v = verdict_updates(&oracle, &ups(&[1, 3], &[1, 2]), &[], 2, Expectation::ExactlyOnce, vec![]);
        assert!(v.checks[FINAL_COUNTS].ok && !v.checks[COMPLETE_HISTORY].ok);
        assert!(v.checks[COMPLETE_HISTORY].details.contains("lacks 2 of 1..3"));
        // At-least-once tolerates the repeat, not the loss of a whole word.
        let v = verdict_updates(&oracle, &ups(&[1, 2, 2, 3], &[1, 2]), &[], 2, Expectation::AtLeastOnce, vec![]);
        assert!(v.pass, "{:?}", v.checks);
        let v = verdict_updates(&oracle, &BTreeMap::from([("a".to_string(), vec![1, 2, 3])]), &[], 1, Expectation::AtLeastOnce, vec![]);
        assert!(!v.pass && v.lost.contains_key("b"));
        // A malformed line fails well_formed; an empty oracle tests nothing.
        let v = verdict_updates(&oracle, &ups(&[1, 2, 3], &[1, 2]), &["f: \"x\"".into()], 2, Expectation::ExactlyOnce, vec![]);
        assert!(!v.checks[WELL_FORMED].ok && !v.pass);
        let v = verdict_updates(&HashMap::new(), &BTreeMap::new(), &[], 0, Expectation::ExactlyOnce, vec![]);
        assert!(!v.pass);
    }

    /// A windowed job's keys: a missing window, a window committed twice and a wrong
    /// count are each caught and named as windows.
    #[test]
    fn window_counts_are_checked_per_window_and_word() {
        let clock = WindowClock { width_ms: 2, per_line_ms: 1 };
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in.txt");
        std::fs::write(&input, "a b\nb\na a\nc\n").unwrap();
        let o = window_oracle(&OracleInput::File(input), clock).unwrap();
        let k = |start, w| window::key(start, w);
        assert_eq!(o, oracle_of_pairs(&[(&k(0, "a"), 1), (&k(0, "b"), 2), (&k(2, "a"), 2), (&k(2, "c"), 1)]));
        type Commit<'a> = (u32, u64, &'a [(String, u64)]);
        let write = |recs: &[Commit]| {
            let dir = tempfile::tempdir().unwrap();
            for (s, e, r) in recs {
                let sub = dir.path().join(s.to_string());
                std::fs::create_dir_all(&sub).unwrap();
                write_transaction(&sub.join(committed_name(*e, 0)), r.iter().map(|(w, c)| (w.as_str(), *c))).unwrap();
            }
            let t = read_committed(dir.path()).unwrap();
            (dir, t)
        };
        let w0 = [(k(0, "a"), 1), (k(0, "b"), 2)];
        let w2 = [(k(2, "a"), 2), (k(2, "c"), 1)];
        let (_d, t) = write(&[(0, 1, &w0), (0, 2, &w2)]);
        let v = verdict(&o, &t, Expectation::ExactlyOnce, vec![]);
        assert!(failed(&v).is_empty(), "{:?}", v.checks);
        assert!(v.checks[FINAL_COUNTS].details.starts_with("2 windows, 4 (window, word) counts"), "{}", v.checks[FINAL_COUNTS].details);
        // Window 2 never committed: missing.
        let (_d, t) = write(&[(0, 1, &w0)]);
        let v = verdict(&o, &t, Expectation::ExactlyOnce, vec![]);
        let d = &v.checks[FINAL_COUNTS].details;
        assert!(!failed(&v).is_empty() && d.contains("2 (window, word) count(s) missing") && d.contains("\"a\" in the window at 2ms 2 -> 0"), "{d}");
        // Window 0 committed again by a later epoch: duplicated.
        let (_d, t) = write(&[(0, 1, &w0), (0, 2, &w2), (0, 3, &w0)]);
        let v = verdict(&o, &t, Expectation::ExactlyOnce, vec![]);
        assert!(!v.checks[MONOTONIC].ok && v.checks[MONOTONIC].details.contains("\"a\" in the window at 0s: 1 at 0/1 then 1 at 0/3 (repeat)"), "{}", v.checks[MONOTONIC].details);
        // A wrong count.
        let w2_wrong = [(k(2, "a"), 3), (k(2, "c"), 1)];
        let (_d, t) = write(&[(0, 1, &w0), (0, 2, &w2_wrong)]);
        let v = verdict(&o, &t, Expectation::ExactlyOnce, vec![]);
        assert!(v.checks[FINAL_COUNTS].details.contains("1 (window, word) count(s) wrong"), "{}", v.checks[FINAL_COUNTS].details);
    }

    fn oracle_of_pairs(pairs: &[(&String, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, c)| ((*k).clone(), *c)).collect()
    }
}
