//! The checks that look at every epoch, not only at the end: `consistent_cuts` and
//! `epochs_complete`.
//!
//! Final counts hide a lost intermediate epoch: every word's last value comes from the
//! last epoch or two. The jobmanager records the cut of every completed checkpoint (the
//! lines each source subtask had consumed at its barrier, `streamd_contract::cuts`), and
//! exactly-once means that after applying every committed epoch `<= N` the committed
//! counts equal the oracle over exactly the input before cut `N` — for every `N`.
//!
//! The walk is incremental. Completed checkpoints' cuts are monotone in checkpoint id
//! (each completed checkpoint descends from the restored latest one), so every input line
//! belongs to the first cut that covers it (line `j` is line `j / p` of source subtask
//! `j % p`); one pass over the input buckets the lines' tokens by cut, and a second walk
//! applies, cut by cut, that bucket to the expected counts and the committed epochs up to
//! the cut to the committed counts, keeping the set of words on which the two differ.
//!
//! A windowed job's epochs hold fired windows, not running counts. A source's watermark is
//! a pure function of its position (`streamd_contract::window`), so the cut of checkpoint
//! `N` says exactly which windows had fired before it: those whose end the minimum
//! watermark at the cut had reached. Each window's full counts belong to the first cut
//! that closes it, and the same walk compares.

use super::{Check, OracleInput};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use streamd_contract::cuts::Cut;
use streamd_contract::output::{parse_in_progress_name, parse_name, Transaction};
use streamd_contract::window::{self, WindowClock};

/// Every committed epoch, cut by cut, equals the oracle over the input before the cut.
pub const CONSISTENT_CUTS: &str = "consistent_cuts";
/// Every sink subtask committed the same epochs (every completed checkpoint's), and nothing
/// staged is left once the job FINISHED.
pub const EPOCHS_COMPLETE: &str = "epochs_complete";

/// How many examples a failed epoch check names.
const EXAMPLES: usize = 3;

/// What the epoch checks read besides the committed transactions.
#[derive(Debug, Clone)]
pub struct EpochEvidence {
    /// The job's input (the same the oracle reads).
    pub input: OracleInput,
    /// Source and sink parallelism.
    pub parallelism: u32,
    /// The cuts of the completed checkpoints, as recorded.
    pub cuts: Vec<Cut>,
    /// Staged or half-written transaction files found in the output directory.
    pub leftovers: Vec<PathBuf>,
    /// The job FINISHED: its final checkpoint was committed by every sink.
    pub finished: bool,
    /// A windowed job's clock: epochs hold fired windows (see the module doc).
    pub window: Option<WindowClock>,
}

impl EpochEvidence {
    /// Reads the cuts (`<data>/checkpoints/<job>/cuts.tsv`) and the leftovers of
    /// `<data>/output/<job>/`.
    pub fn read(data: &Path, job: &str, input: OracleInput, parallelism: u32, finished: bool) -> Result<Self, String> {
        let cuts = streamd_contract::cuts::read(&streamd_contract::cuts::path(data, job)).map_err(|e| e.to_string())?;
        let leftovers = leftovers(&data.join("output").join(job)).map_err(|e| format!("reading the output directory: {e}"))?;
        Ok(EpochEvidence { input, parallelism, cuts, leftovers, finished, window: None })
    }

    /// The evidence of a windowed job (`None`: a running count).
    pub fn windowed(mut self, clock: Option<WindowClock>) -> Self {
        self.window = clock;
        self
    }
}

/// Staged and in-progress transaction files under a job's output directory.
fn leftovers(job_output: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let subs = match std::fs::read_dir(job_output) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for sub in subs {
        let sub = sub?;
        if !sub.file_type()?.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(sub.path())? {
            let f = f?;
            let name = f.file_name();
            let Some(name) = name.to_str() else { continue };
            let staged = matches!(parse_name(name), Some(streamd_contract::output::TxnFile::Staged { .. }));
            if staged || parse_in_progress_name(name).is_some() {
                out.push(f.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `consistent_cuts`: replays the input cut by cut against the committed epochs.
pub fn consistent_cuts(ev: &EpochEvidence, transactions: &[Transaction]) -> (bool, String) {
    let p = ev.parallelism.max(1) as usize;
    if ev.cuts.is_empty() {
        return (false, "no completed checkpoint recorded a cut: no epoch could be checked".into());
    }
    let mut cuts: Vec<&Cut> = ev.cuts.iter().collect();
    cuts.sort_by_key(|c| c.checkpoint);
    // The cuts must be well-formed and monotone before anything can be attributed to them.
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.checkpoint == b.checkpoint {
            return (false, format!("checkpoint {} recorded twice", a.checkpoint));
        }
        if let Some(s) = (0..p).find(|&s| b.positions.get(s) < a.positions.get(s)) {
            return (
                false,
                format!(
                    "the cut of checkpoint {} is behind checkpoint {}'s on source {s} ({:?} < {:?}): a completed checkpoint did not descend from the one before",
                    b.checkpoint,
                    a.checkpoint,
                    b.positions.get(s),
                    a.positions.get(s)
                ),
            );
        }
    }
    if let Some(c) = cuts.iter().find(|c| c.positions.len() != p) {
        return (false, format!("the cut of checkpoint {} has {} positions for parallelism {p}", c.checkpoint, c.positions.len()));
    }

    // Pass 1: what each cut adds to the expected output.
    let buckets = match ev.window {
        None => running_buckets(ev, &cuts, p),
        Some(clock) => window_buckets(ev, &cuts, p, clock),
    };
    let buckets = match buckets {
        Ok(b) => b,
        Err(why) => return (false, why),
    };

    // Pass 2: walk the cuts.
    let mut txns: Vec<&Transaction> = transactions.iter().collect();
    txns.sort_by_key(|t| (t.epoch, t.part, t.subtask));
    let mut next = 0usize;
    let mut expected: HashMap<&str, u64> = HashMap::new();
    let mut committed: HashMap<&str, u64> = HashMap::new();
    let mut differ: HashSet<&str> = HashSet::new();
    let mut failed: Vec<String> = Vec::new();
    let mut failed_total = 0usize;
    for (c, cut) in cuts.iter().enumerate() {
        let mut touched: Vec<&str> = Vec::new();
        while next < txns.len() && txns[next].epoch <= cut.checkpoint {
            for (w, v) in &txns[next].records {
                committed.insert(w.as_str(), *v);
                touched.push(w.as_str());
            }
            next += 1;
        }
        for (w, n) in &buckets[c] {
            *expected.entry(w.as_str()).or_insert(0) += n;
            touched.push(w.as_str());
        }
        for w in touched {
            if committed.get(w).copied().unwrap_or(0) == expected.get(w).copied().unwrap_or(0) {
                differ.remove(w);
            } else {
                differ.insert(w);
            }
        }
        if !differ.is_empty() {
            failed_total += 1;
            if failed.len() < EXAMPLES {
                let mut words: Vec<&str> = differ.iter().copied().collect();
                words.sort_unstable();
                let ex: Vec<String> = words
                    .iter()
                    .take(EXAMPLES)
                    .map(|w| format!("{} {} -> {}", super::display_key(w), expected.get(w).copied().unwrap_or(0), committed.get(w).copied().unwrap_or(0)))
                    .collect();
                failed.push(format!("checkpoint {}: {} word(s) differ ({})", cut.checkpoint, differ.len(), ex.join(", ")));
            }
        }
    }
    if failed_total == 0 {
        (true, format!("{} cuts: the committed epochs equal the oracle at every one", cuts.len()))
    } else {
        (false, format!("{failed_total} of {} cuts differ from the oracle; {}", cuts.len(), failed.join("; ")))
    }
}

/// Running counts: every line's tokens into the bucket of the first cut that covers it.
fn running_buckets(ev: &EpochEvidence, cuts: &[&Cut], p: usize) -> Result<Vec<HashMap<String, u64>>, String> {
    let mut buckets: Vec<HashMap<String, u64>> = vec![HashMap::new(); cuts.len()];
    let mut index = 0u64;
    let lines = ev
        .input
        .for_each_line(|line| {
            let (s, k) = ((index % p as u64) as usize, index / p as u64);
            index += 1;
            let c = cuts.partition_point(|c| c.positions[s] <= k);
            if let Some(b) = buckets.get_mut(c) {
                super::count_tokens(line, b);
            }
        })
        .map_err(|e| format!("cannot read the input: {e}"))?;
    covered(cuts, lines)?;
    Ok(buckets)
}

/// Windowed: every window's counts into the bucket of the first cut whose minimum
/// watermark reached the window's end.
fn window_buckets(ev: &EpochEvidence, cuts: &[&Cut], p: usize, clock: WindowClock) -> Result<Vec<HashMap<String, u64>>, String> {
    let (windows, lines) = super::window_counts(&ev.input, clock).map_err(|e| format!("cannot read the input: {e}"))?;
    covered(cuts, lines)?;
    // Monotone in the cut, as positions are.
    let watermarks: Vec<u64> = cuts
        .iter()
        .map(|c| {
            (0..p)
                .map(|s| window::source_watermark(s as u32, p as u32, c.positions[s], clock.per_line_ms, Some(lines)))
                .min()
                .unwrap_or(window::END_OF_TIME)
        })
        .collect();
    let mut buckets: Vec<HashMap<String, u64>> = vec![HashMap::new(); cuts.len()];
    for (start, words) in windows {
        let c = watermarks.partition_point(|&w| !window::closes(start, clock.width_ms, w));
        if let Some(b) = buckets.get_mut(c) {
            b.extend(words.into_iter().map(|(word, n)| (window::key(start, &word), n)));
        }
    }
    Ok(buckets)
}

/// The last cut cannot cover more lines than the input has.
fn covered(cuts: &[&Cut], lines: u64) -> Result<(), String> {
    let last = cuts.last().map(|c| c.positions.iter().sum::<u64>()).unwrap_or(0);
    if last > lines {
        return Err(format!("the last cut covers {last} lines, the input has {lines}"));
    }
    Ok(())
}

/// `epochs_complete`: the same epochs on every sink subtask, every completed checkpoint's
/// among them, nothing staged left. Judged once the job FINISHED (before that, commits
/// may legitimately be under way).
pub fn epochs_complete(ev: &EpochEvidence, transactions: &[Transaction]) -> (bool, String) {
    if !ev.finished {
        return (true, "not judged: the job did not finish, so commits may have been under way".into());
    }
    let p = ev.parallelism.max(1);
    let mut by_subtask: BTreeMap<u32, BTreeSet<u64>> = (0..p).map(|s| (s, BTreeSet::new())).collect();
    for t in transactions {
        by_subtask.entry(t.subtask).or_default().insert(t.epoch);
    }
    let mut all: BTreeSet<u64> = by_subtask.values().flatten().copied().collect();
    all.extend(ev.cuts.iter().map(|c| c.checkpoint));
    let mut problems = Vec::new();
    for (s, epochs) in &by_subtask {
        let missing: Vec<u64> = all.difference(epochs).copied().collect();
        if !missing.is_empty() {
            problems.push(format!("subtask {s} lacks epoch(s) {}", list(&missing)));
        }
    }
    if !ev.leftovers.is_empty() {
        let names: Vec<String> = ev.leftovers.iter().take(EXAMPLES).map(|p| p.display().to_string()).collect();
        problems.push(format!("{} staged file(s) left after FINISHED ({})", ev.leftovers.len(), names.join(", ")));
    }
    if problems.is_empty() {
        (true, format!("{p} subtasks committed the same {} epochs; nothing staged left", all.len()))
    } else {
        (false, problems.join("; "))
    }
}

/// "3, 5, 7" (the first few, then "…").
fn list(v: &[u64]) -> String {
    let mut s: Vec<String> = v.iter().take(8).map(u64::to_string).collect();
    if v.len() > 8 {
        s.push(format!("… ({} in all)", v.len()));
    }
    s.join(", ")
}

/// Both checks, as [`Check`]s with `required` set by the caller.
pub fn checks(ev: &EpochEvidence, transactions: &[Transaction]) -> [(&'static str, Check); 2] {
    let (ok, details) = consistent_cuts(ev, transactions);
    let cc = Check { ok, required: true, details };
    let (ok, details) = epochs_complete(ev, transactions);
    [(CONSISTENT_CUTS, cc), (EPOCHS_COMPLETE, Check { ok, required: true, details })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamd_contract::output::{committed_name, read_committed, staged_name, write_transaction};

    const P: u32 = 2;
    /// Line `j` belongs to source `j % 2`; `#end` (a Velocity directive) is a word like any.
    const TEXT: &str = "a b\nb c\n#end a\nc c\nd a\nb #end\na\nd d\n";

    /// A correct engine, simulated: at each cut, every word that changed since the last
    /// one is committed with its new cumulative count by the subtask owning it.
    fn engine(dir: &Path, cuts: &[Cut], sabotage: impl Fn(u32, u64, &mut Vec<(String, u64)>)) -> Vec<Transaction> {
        let lines: Vec<&str> = TEXT.lines().collect();
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut done = vec![0u64; P as usize];
        for cut in cuts {
            let mut changed: BTreeMap<String, u64> = BTreeMap::new();
            for (j, line) in lines.iter().enumerate() {
                let (s, k) = (j % P as usize, (j / P as usize) as u64);
                if k >= done[s] && k < cut.positions[s] {
                    for t in line.split_whitespace() {
                        *counts.entry(t.to_string()).or_default() += 1;
                        changed.insert(t.to_string(), counts[t]);
                    }
                }
            }
            done.clone_from(&cut.positions);
            for s in 0..P {
                let mut recs: Vec<(String, u64)> = changed.iter().filter(|(w, _)| w.len() as u32 % P == s).map(|(w, c)| (w.clone(), *c)).collect();
                sabotage(s, cut.checkpoint, &mut recs);
                let sub = dir.join("output/j").join(s.to_string());
                std::fs::create_dir_all(&sub).unwrap();
                write_transaction(&sub.join(committed_name(cut.checkpoint, 0)), recs.iter().map(|(w, c)| (w.as_str(), *c))).unwrap();
            }
        }
        read_committed(&dir.join("output/j")).unwrap()
    }

    fn cuts() -> Vec<Cut> {
        [(2, [1, 1]), (3, [2, 1]), (5, [3, 3]), (6, [4, 4])]
            .into_iter()
            .map(|(checkpoint, p)| Cut { checkpoint, positions: p.to_vec() })
            .collect()
    }

    fn evidence(dir: &Path, cuts: Vec<Cut>, finished: bool) -> EpochEvidence {
        let input = dir.join("in.txt");
        std::fs::write(&input, TEXT).unwrap();
        for c in &cuts {
            streamd_contract::cuts::append(&streamd_contract::cuts::path(dir, "j"), c).unwrap();
        }
        EpochEvidence::read(dir, "j", OracleInput::File(input), P, finished).unwrap()
    }

    #[test]
    fn a_correct_engine_passes_both_checks() {
        let d = tempfile::tempdir().unwrap();
        let t = engine(d.path(), &cuts(), |_, _, _| {});
        let ev = evidence(d.path(), cuts(), true);
        assert_eq!(ev.cuts, cuts());
        let (ok, details) = consistent_cuts(&ev, &t);
        assert!(ok, "{details}");
        let (ok, details) = epochs_complete(&ev, &t);
        assert!(ok, "{details}");
    }

    /// The blind spot of final counts: an intermediate epoch loses an update of a word that
    /// changes again later.
    #[test]
    fn a_lost_intermediate_epoch_fails_consistent_cuts() {
        let d = tempfile::tempdir().unwrap();
        let t = engine(d.path(), &cuts(), |_, epoch, recs| {
            if epoch == 3 {
                recs.retain(|(w, _)| w != "#end");
            }
        });
        let ev = evidence(d.path(), cuts(), true);
        let (ok, details) = consistent_cuts(&ev, &t);
        assert!(!ok);
        assert!(details.starts_with("1 of 4 cuts") && details.contains("checkpoint 3: 1 word(s) differ (#end 1 -> 0)"), "{details}");
    }

    #[test]
    fn an_epoch_missing_on_one_subtask_or_a_leftover_fails_epochs_complete() {
        let d = tempfile::tempdir().unwrap();
        let t = engine(d.path(), &cuts(), |_, _, _| {});
        // Subtask 1 lost its epoch 5 (the file, not only its words).
        let t: Vec<Transaction> = t.into_iter().filter(|t| !(t.subtask == 1 && t.epoch == 5)).collect();
        let ev = evidence(d.path(), cuts(), true);
        let (ok, details) = epochs_complete(&ev, &t);
        assert!(!ok && details.contains("subtask 1 lacks epoch(s) 5"), "{details}");
        // A staged file left after FINISHED.
        let d2 = tempfile::tempdir().unwrap();
        let t2 = engine(d2.path(), &cuts(), |_, _, _| {});
        std::fs::write(d2.path().join("output/j/0").join(staged_name(7, 2)), "").unwrap();
        let (ok, details) = epochs_complete(&evidence(d2.path(), cuts(), true), &t2);
        assert!(!ok && details.contains("1 staged file(s) left after FINISHED"), "{details}");
        // Before FINISHED, commits may be under way: not judged.
        assert!(epochs_complete(&evidence(tempfile::tempdir().unwrap().path(), cuts(), false), &t2).0);
    }

    #[test]
    fn broken_cuts_fail_consistent_cuts() {
        let d = tempfile::tempdir().unwrap();
        let t = engine(d.path(), &cuts(), |_, _, _| {});
        let mut behind = cuts();
        behind[2].positions = vec![1, 3];
        let (ok, details) = consistent_cuts(&evidence(d.path(), behind, true), &t);
        assert!(!ok && details.contains("the cut of checkpoint 5 is behind checkpoint 3's on source 0"), "{details}");
        let d = tempfile::tempdir().unwrap();
        let (ok, details) = consistent_cuts(&evidence(d.path(), vec![], true), &t);
        assert!(!ok && details.contains("no completed checkpoint"), "{details}");
        let d = tempfile::tempdir().unwrap();
        let (ok, details) = consistent_cuts(&evidence(d.path(), vec![Cut { checkpoint: 1, positions: vec![9, 9] }], true), &t);
        assert!(!ok && details.contains("covers 18 lines, the input has 8"), "{details}");
    }

    /// Committed epochs that are no cut's (a checkpoint that was aborted, its epoch
    /// committed with the next one) count at the next cut.
    #[test]
    fn an_aborted_checkpoints_epoch_is_judged_at_the_next_cut() {
        let d = tempfile::tempdir().unwrap();
        let t = engine(d.path(), &cuts(), |_, _, _| {});
        let recorded: Vec<Cut> = cuts().into_iter().filter(|c| c.checkpoint != 3).collect();
        let (ok, details) = consistent_cuts(&evidence(d.path(), recorded, true), &t);
        assert!(ok, "{details}");
    }

    /// Windowed: each window's counts belong to the first cut whose watermark closed it.
    /// With 2 ms windows over TEXT (line i at i ms): the cut of checkpoint 2 (next lines 2
    /// and 3) closes [0, 2); 3 closes nothing; 5 (next lines 6 and 7) closes [2, 4) and
    /// [4, 6); 6 (both sources exhausted) closes [6, 8).
    #[test]
    fn windowed_epochs_hold_exactly_the_windows_their_cut_closed() {
        let clock = WindowClock { width_ms: 2, per_line_ms: 1 };
        // (checkpoint that commits it, window start, its counts)
        type Window = (u64, u64, &'static [(&'static str, u64)]);
        let windows: [Window; 4] = [
            (2, 0, &[("a", 1), ("b", 2), ("c", 1)]),
            (5, 2, &[("#end", 1), ("a", 1), ("c", 2)]),
            (5, 4, &[("d", 1), ("a", 1), ("b", 1), ("#end", 1)]),
            (6, 6, &[("a", 1), ("d", 2)]),
        ];
        let commit = |dir: &Path, epoch_of: &dyn Fn(u64, u64) -> u64| {
            for s in 0..P {
                let sub = dir.join("output/j").join(s.to_string());
                std::fs::create_dir_all(&sub).unwrap();
                for epoch in [2u64, 3, 5, 6] {
                    let recs: Vec<(String, u64)> = windows
                        .iter()
                        .filter(|(e, start, _)| epoch_of(*e, *start) == epoch)
                        .flat_map(|(_, start, ws)| ws.iter().map(move |(w, c)| (window::key(*start, w), *c)))
                        .filter(|(k, _)| window::split_key(k).unwrap().1.len() as u32 % P == s)
                        .collect();
                    write_transaction(&sub.join(committed_name(epoch, 0)), recs.iter().map(|(k, c)| (k.as_str(), *c))).unwrap();
                }
            }
            read_committed(&dir.join("output/j")).unwrap()
        };
        let d = tempfile::tempdir().unwrap();
        let t = commit(d.path(), &|e, _| e);
        let ev = evidence(d.path(), cuts(), true).windowed(Some(clock));
        let (ok, details) = consistent_cuts(&ev, &t);
        assert!(ok, "{details}");
        // Window [4, 6) committed one checkpoint late: the cut of 5 had closed it.
        let d = tempfile::tempdir().unwrap();
        let t = commit(d.path(), &|e, start| if start == 4 { 6 } else { e });
        let ev = evidence(d.path(), cuts(), true).windowed(Some(clock));
        let (ok, details) = consistent_cuts(&ev, &t);
        assert!(!ok && details.starts_with("1 of 4 cuts") && details.contains("checkpoint 5"), "{details}");
        assert!(details.contains("@ 4ms"), "window keys are shown as word @ window: {details}");
        // Judged as running counts the same output is nonsense: the mode matters.
        let ev = evidence(d.path(), cuts(), true);
        assert!(!consistent_cuts(&ev, &t).0);
    }
}
