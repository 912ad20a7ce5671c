//! Flink's committed output read back and checked. The job writes every count update as
//! `word<TAB>count` lines; committed output is every file in the output directory whose
//! name does not start with `.` (FileSink's in-progress and pending part files are hidden
//! `.part-*` files until the checkpoint that covers them completes; the at-least-once
//! control's files are visible at once). Every word belongs to one sink subtask and its
//! updates are 1, 2, ... in order there, so exactly-once means: per word, the committed
//! values are exactly 1..=N, each once, with N the oracle's count.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{io_err, Result};

/// Every committed update, per word.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// Word -> its committed values, in file-name then line order.
    pub updates: BTreeMap<String, Vec<u64>>,
    /// The committed files read.
    pub files: Vec<PathBuf>,
    /// Lines that are not `word<TAB>count` (a torn line would show here).
    pub malformed: Vec<String>,
    /// Hidden (uncommitted) files seen and ignored.
    pub hidden: usize,
}

/// The committed (visible) files of `dir`, sorted, and how many hidden (in-progress or
/// pending) ones it holds. A missing directory holds none.
pub fn committed_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, usize)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    let mut hidden = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden += 1;
        } else if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok((files, hidden))
}

/// Reads the committed files of `dir` (a missing directory reads as no output).
pub fn read_committed(dir: &Path) -> Result<Committed> {
    let mut out = Committed::default();
    let (files, hidden) = committed_files(dir).map_err(io_err(dir))?;
    out.hidden = hidden;
    for file in &files {
        let bytes = std::fs::read(file).map_err(io_err(file))?;
        for line in String::from_utf8_lossy(&bytes).split_terminator('\n') {
            match line.rsplit_once('\t').and_then(|(w, c)| Some((w, c.parse::<u64>().ok()?))) {
                Some((word, count)) if !word.is_empty() => {
                    out.updates.entry(word.to_string()).or_default().push(count)
                }
                _ => out.malformed.push(format!("{}: {line:?}", file.display())),
            }
        }
    }
    out.files = files;
    Ok(out)
}

/// The verdict on committed output against the oracle.
#[derive(Debug, Clone, Default)]
pub struct Check {
    /// Words whose last (highest) committed count differs from the oracle, with both.
    pub wrong_final: Vec<(String, u64, u64)>,
    /// Words the output lacks or the oracle does not know.
    pub missing: Vec<String>,
    pub unknown: Vec<String>,
    /// Values committed more than once (summed over words).
    pub duplicates: u64,
    /// Values in 1..=N never committed (summed over words).
    pub gaps: u64,
    /// A few duplicated updates, `word<TAB>count xK`.
    pub duplicate_examples: Vec<String>,
    pub malformed: usize,
}

impl Check {
    /// Final counts equal the oracle's for every word (at-least-once may also pass this).
    pub fn final_counts_ok(&self) -> bool {
        self.wrong_final.is_empty() && self.missing.is_empty() && self.unknown.is_empty()
    }

    /// Exactly once: right final counts and every update 1..=N committed once.
    pub fn exactly_once_ok(&self) -> bool {
        self.final_counts_ok() && self.duplicates == 0 && self.gaps == 0 && self.malformed == 0
    }
}

/// Checks `committed` against the oracle's counts.
pub fn check(committed: &Committed, oracle: &HashMap<String, u64>) -> Check {
    let mut c = Check { malformed: committed.malformed.len(), ..Check::default() };
    for (word, values) in &committed.updates {
        let Some(&expected) = oracle.get(word) else {
            c.unknown.push(word.clone());
            continue;
        };
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let last = sorted.last().copied().unwrap_or(0);
        if last != expected {
            c.wrong_final.push((word.clone(), last, expected));
        }
        let mut distinct = 0u64;
        let mut i = 0;
        while i < sorted.len() {
            let v = sorted[i];
            let mut j = i;
            while j < sorted.len() && sorted[j] == v {
                j += 1;
            }
            let times = (j - i) as u64;
            if times > 1 {
                c.duplicates += times - 1;
                if c.duplicate_examples.len() < 10 {
                    c.duplicate_examples.push(format!("{word}\t{v} x{times}"));
                }
            }
            if (1..=expected).contains(&v) {
                distinct += 1;
            }
            i = j;
        }
        c.gaps += expected.saturating_sub(distinct);
    }
    let mut missing: Vec<String> =
        oracle.keys().filter(|w| !committed.updates.contains_key(*w)).cloned().collect();
    missing.sort();
    c.missing = missing;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_visible_files_only_and_checks_each_update_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-a-0.tsv"), "a\t1\nb\t1\na\t2\n").unwrap();
        std::fs::write(dir.path().join("part-a-1.tsv"), "a\t3\n").unwrap();
        std::fs::write(dir.path().join(".part-a-2.tsv.inprogress.x"), "a\t4\n").unwrap();
        let got = read_committed(dir.path()).unwrap();
        assert_eq!((got.files.len(), got.hidden), (2, 1));
        let oracle = HashMap::from([("a".to_string(), 3), ("b".to_string(), 1)]);
        let c = check(&got, &oracle);
        assert!(c.exactly_once_ok(), "{c:?}");

        // A replayed update committed twice: right final counts, but not exactly once.
        std::fs::write(dir.path().join("direct-0-1.tsv"), "a\t2\na\t3\n").unwrap();
        let c = check(&read_committed(dir.path()).unwrap(), &oracle);
        assert!(c.final_counts_ok() && !c.exactly_once_ok());
        assert_eq!(c.duplicates, 2);
        assert_eq!(c.duplicate_examples[0], "a\t2 x2");

        // A lost update.
        let oracle = HashMap::from([("a".to_string(), 4), ("b".to_string(), 1), ("c".to_string(), 1)]);
        let c = check(&read_committed(dir.path()).unwrap(), &oracle);
        assert_eq!((c.gaps, c.missing.clone()), (1, vec!["c".to_string()]));
        assert_eq!(c.wrong_final, vec![("a".to_string(), 3, 4)]);
    }
}
