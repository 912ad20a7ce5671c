//! The exactly-once file sink: two-phase commit with Flink's subsuming contract.
//!
//! At barrier `n` the sink *pre-commits* the epoch's updates (the new cumulative count of
//! every word that changed) as `staged-<n>.tsv` and remembers `n` as pending; the pending
//! list is part of the task snapshot. When the jobmanager says checkpoint `m` completed,
//! every pending epoch `<= m` is committed by an atomic rename to `committed-<n>.tsv`
//! (notices can be lost, so a later one subsumes earlier ones). On restore the pending
//! epochs of the restored snapshot are committed (idempotently: they belong to a completed
//! checkpoint) and every other staged file is aborted (deleted).
//!
//! `delivery: at-least-once` commits eagerly instead: `committed-<epoch>-<part>.tsv`
//! straight away, where `part` orders the writes of successive attempts.

use crate::output::{committed_name, parse_name, staged_name, sync_dir, write_transaction};
use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

/// One sink subtask's transactions.
pub struct FileSink {
    dir: PathBuf,
    pending: BTreeSet<u64>,
    attempt: u64,
    eager_seq: u32,
}

impl FileSink {
    /// The sink of `<data>/output/<job>/<subtask>/`, for execution attempt `attempt`.
    pub fn open(dir: PathBuf, attempt: u64) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(FileSink { dir, pending: BTreeSet::new(), attempt, eager_seq: 0 })
    }

    /// Epochs staged and not yet known to be committed (goes into the snapshot).
    pub fn pending(&self) -> Vec<u64> {
        self.pending.iter().copied().collect()
    }

    /// Restore: commit the restored snapshot's pending epochs, abort every other staged one.
    pub fn restore(&mut self, pending: &[u64]) -> io::Result<()> {
        for &e in pending {
            self.commit_one(e)?;
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let abort = matches!(parse_name(name), Some(("staged", _, _))) || name.ends_with(".tmp");
            if abort {
                tracing::debug!(file = name, "aborting uncovered staged transaction");
                std::fs::remove_file(entry.path())?;
            }
        }
        sync_dir(&self.dir)
    }

    /// Phase one: stage epoch `epoch`'s updates durably.
    pub fn pre_commit<'a>(&mut self, epoch: u64, records: impl IntoIterator<Item = (&'a str, u64)>) -> io::Result<()> {
        write_transaction(&self.dir.join(staged_name(epoch)), records)?;
        self.pending.insert(epoch);
        Ok(())
    }

    /// Phase one, split for asynchronous checkpoints: where epoch `epoch` is staged...
    pub fn staged_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(staged_name(epoch))
    }

    /// ...and marking it pending now (so the snapshot taken at this barrier lists it),
    /// while the file is written off the data path before the checkpoint is acknowledged.
    pub fn will_stage(&mut self, epoch: u64) {
        self.pending.insert(epoch);
    }

    /// at-least-once: the file of the next eager commit of `epoch`.
    pub fn eager_path(&mut self, epoch: u64) -> PathBuf {
        self.eager_seq += 1;
        let part = (self.attempt.min(40_000) as u32) * 100_000 + self.eager_seq;
        self.dir.join(committed_name(epoch, part))
    }

    /// Phase two: commit every pending epoch `<= upto`. Returns the epochs committed.
    pub fn commit_up_to(&mut self, upto: u64) -> io::Result<Vec<u64>> {
        let done: Vec<u64> = self.pending.range(..=upto).copied().collect();
        for &e in &done {
            self.commit_one(e)?;
        }
        if !done.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(done)
    }

    fn commit_one(&mut self, epoch: u64) -> io::Result<()> {
        let staged = self.dir.join(staged_name(epoch));
        let committed = self.dir.join(committed_name(epoch, 0));
        match std::fs::rename(&staged, &committed) {
            Ok(()) => {}
            // Already committed (a repeated notice, or a restore after the commit): fine.
            Err(e) if e.kind() == io::ErrorKind::NotFound && committed.exists() => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(epoch, "staged transaction missing at commit; nothing to commit");
            }
            Err(e) => return Err(e),
        }
        self.pending.remove(&epoch);
        Ok(())
    }

    /// at-least-once: commit `records` at once as a new part of `epoch`.
    pub fn commit_eager<'a>(&mut self, epoch: u64, records: impl IntoIterator<Item = (&'a str, u64)>) -> io::Result<()> {
        let path = self.eager_path(epoch);
        write_transaction(&path, records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::read_committed;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn commit_subsumes_earlier_epochs_and_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("0");
        let mut s = FileSink::open(dir.clone(), 1).unwrap();
        s.pre_commit(3, [("a", 1)]).unwrap();
        s.pre_commit(4, [("a", 2)]).unwrap();
        s.pre_commit(5, [("b", 1)]).unwrap();
        // The notice for 3 was lost; 4's commits 3 and 4, not 5.
        assert_eq!(s.commit_up_to(4).unwrap(), vec![3, 4]);
        assert_eq!(names(&dir), vec!["committed-3.tsv", "committed-4.tsv", "staged-5.tsv"]);
        assert_eq!(s.commit_up_to(4).unwrap(), Vec::<u64>::new());
        assert_eq!(s.pending(), vec![5]);
    }

    #[test]
    fn restore_commits_covered_epochs_and_aborts_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("0");
        let mut s = FileSink::open(dir.clone(), 1).unwrap();
        s.pre_commit(6, [("a", 1)]).unwrap();
        s.pre_commit(7, [("a", 2)]).unwrap();
        // Crash: checkpoint 6 completed (its snapshot says pending [6]), 7 did not.
        let mut r = FileSink::open(dir.clone(), 2).unwrap();
        r.restore(&[6]).unwrap();
        assert_eq!(names(&dir), vec!["committed-6.tsv"]);
        // Restoring again (a second crash) is harmless.
        FileSink::open(dir.clone(), 3).unwrap().restore(&[6]).unwrap();
        let t = read_committed(d.path()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].records, vec![("a".to_string(), 1)]);
    }

    #[test]
    fn eager_parts_of_later_attempts_sort_after_earlier_ones() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("0");
        FileSink::open(dir.clone(), 1).unwrap().commit_eager(6, [("a", 5)]).unwrap();
        FileSink::open(dir.clone(), 2).unwrap().commit_eager(6, [("a", 5)]).unwrap();
        let t = read_committed(d.path()).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].part < t[1].part);
    }
}
