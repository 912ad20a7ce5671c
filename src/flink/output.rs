//! Flink's committed output read back and checked. The job writes every count update as
//! `word<TAB>count` lines; committed output is every file in the output directory whose
//! name does not start with `.` (FileSink's in-progress and pending part files are hidden
//! `.part-*` files until the checkpoint that covers them completes; the at-least-once
//! control's files are visible at once). Every word belongs to one sink subtask and its
//! updates are 1, 2, ... in order there, so exactly-once means: per word, the committed
//! values are exactly 1..=N, each once, with N the oracle's count — the rule
//! [`crate::verdict::verdict_updates`] checks.

use std::collections::BTreeMap;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_visible_files_only_and_checks_each_update_once() {
        use std::collections::HashMap;
        use crate::verdict::{verdict_updates, Expectation, COMPLETE_HISTORY, FINAL_COUNTS};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-a-0.tsv"), "a\t1\nb\t1\na\t2\n").unwrap();
        std::fs::write(dir.path().join("part-a-1.tsv"), "a\t3\n").unwrap();
        std::fs::write(dir.path().join(".part-a-2.tsv.inprogress.x"), "a\t4\n").unwrap();
        let got = read_committed(dir.path()).unwrap();
        assert_eq!((got.files.len(), got.hidden), (2, 1));
        let oracle = HashMap::from([("a".to_string(), 3), ("b".to_string(), 1)]);
        let judge = |c: &Committed, o: &HashMap<String, u64>| verdict_updates(o, &c.updates, &c.malformed, c.files.len(), Expectation::ExactlyOnce, vec![]);
        assert!(judge(&got, &oracle).pass);

        // A replayed update committed twice: right final counts, but not exactly once.
        std::fs::write(dir.path().join("direct-0-1.tsv"), "a\t2\na\t3\n").unwrap();
        let v = judge(&read_committed(dir.path()).unwrap(), &oracle);
        assert!(v.checks[FINAL_COUNTS].ok && !v.checks[COMPLETE_HISTORY].ok);
        assert_eq!(v.duplicates_total, 2);

        // A torn line is malformed.
        std::fs::write(dir.path().join("part-b-0.tsv"), "a\t4\nzz").unwrap();
        assert_eq!(read_committed(dir.path()).unwrap().malformed.len(), 1);
    }
}
