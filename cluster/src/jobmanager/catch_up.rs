//! Catch-up: re-taking, after a restore of an older checkpoint, the completed checkpoints
//! that came after it.
//!
//! A restart restores the latest completed checkpoint that is intact. When the newest ones
//! are not (a task snapshot or `_metadata` fails its checksum), the jobmanager restores an
//! older one, `k`. But the newer checkpoints `m1 < m2 < …` did complete: their commit
//! notices went out, and sinks may have committed their epochs (`committed-<m>.tsv`).
//! Replaying from `k` and taking the next checkpoint wherever the interval happens to put
//! it would commit counts of a cut behind `m`'s over `m`'s: lower values after higher ones,
//! and a cut that goes backwards.
//!
//! The replay is deterministic, though: file and generate sources re-read their partitions
//! by position, and a count task's state at an aligned barrier (running counts, open and
//! fired windows; watermarks are functions of source positions) depends only on the
//! positions the barriers mark. So the new attempt re-takes `m1, m2, …` under their own ids
//! at exactly their recorded cuts: every source injects barrier `m_i` itself when its
//! position reaches its position in `m_i`'s cut, before it reads further. The sinks stage
//! epoch `m_i` with the updates it had the first time and commit it again (idempotently:
//! see the sink), the checkpoint directory gets fresh snapshots and a fresh `_metadata`, and
//! regular checkpoints resume only afterwards, above every id ever reserved.
//!
//! The cuts come from `cuts.tsv` (appended at every commit point, kept when checkpoints are
//! pruned) and from the `_metadata` of newer checkpoints whose own checksum holds (their
//! snapshots are what failed). Not for a socket source (it cannot replay: what it read
//! after `k` is gone) or `delivery: at-least-once` (no alignment, so no cut to re-take).

use crate::cuts::{self, Cut};
use crate::snapshot::{self, SnapshotError};
use std::path::Path;

/// The checkpoints to re-take after restoring checkpoint `restored`, whose cut is `from`
/// (one position per source subtask; all zeros without a restore), given the `recorded`
/// cuts of completed checkpoints (any order, duplicates allowed). Ascending by id; each
/// one's cut is at or past the previous one's (and `from`) on every source, since a replay
/// can only move forward. A cut that is not (or has the wrong number of positions) is
/// left out, with a warning: it cannot be re-taken.
pub fn plan(restored: u64, from: &[u64], recorded: &[Cut]) -> Vec<Cut> {
    let mut newer: Vec<&Cut> = recorded.iter().filter(|c| c.checkpoint > restored).collect();
    // Stable: of two lines for one id the first recorded wins.
    newer.sort_by_key(|c| c.checkpoint);
    newer.dedup_by(|b, a| {
        if a.checkpoint == b.checkpoint && a.positions != b.positions {
            tracing::warn!(checkpoint = a.checkpoint, "two different cuts recorded for one checkpoint; using the first");
        }
        a.checkpoint == b.checkpoint
    });
    let mut out: Vec<Cut> = Vec::new();
    let mut at = from.to_vec();
    for c in newer {
        if c.positions.len() != from.len() {
            tracing::warn!(checkpoint = c.checkpoint, "cut of {} positions for {} sources: not re-taken", c.positions.len(), from.len());
            continue;
        }
        if let Some(s) = (0..at.len()).find(|&s| c.positions[s] < at[s]) {
            tracing::warn!(
                checkpoint = c.checkpoint,
                source = s,
                "cut behind the one before it ({} < {}): not re-taken",
                c.positions[s],
                at[s]
            );
            continue;
        }
        at.clone_from(&c.positions);
        out.push(c.clone());
    }
    out
}

/// The recorded cuts of completed checkpoints newer than `restored`: `cuts.tsv`, plus the
/// cut in the intact `_metadata` of newer checkpoint directories missing there (the
/// jobmanager died between the commit point and the append). Without HA (`published`
/// `None`) every `_metadata` marks a completed checkpoint. With HA only the published
/// pointer's is known to be complete: a `_metadata` whose pointer never made it to etcd
/// is not, and a leader that took over never re-took it, so later checkpoints do not
/// descend from its cut.
pub fn recorded_cuts(data: &Path, job: &str, restored: u64, published: Option<u64>) -> Vec<Cut> {
    let mut out = cuts::read(&cuts::path(data, job)).unwrap_or_else(|e| {
        tracing::warn!("cannot read the recorded cuts: {e}");
        Vec::new()
    });
    out.retain(|c| c.checkpoint > restored);
    for n in snapshot::checkpoint_ids(data, job) {
        if n <= restored || published.is_some_and(|p| n != p) || out.iter().any(|c| c.checkpoint == n) {
            continue;
        }
        match snapshot::load_metadata(data, job, n) {
            Ok(m) if !m.cut.is_empty() => out.push(Cut { checkpoint: n, positions: m.cut }),
            Ok(_) => {}
            // No `_metadata`: never completed.
            Err(SnapshotError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(checkpoint = n, "no cut from its metadata: {e}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(checkpoint: u64, positions: &[u64]) -> Cut {
        Cut { checkpoint, positions: positions.to_vec() }
    }

    #[test]
    fn only_checkpoints_newer_than_the_restored_one_are_re_taken_in_order() {
        let recorded = [cut(5, &[50, 51]), cut(2, &[20, 20]), cut(3, &[30, 31]), cut(4, &[40, 40])];
        assert_eq!(plan(3, &[30, 31], &recorded), vec![cut(4, &[40, 40]), cut(5, &[50, 51])]);
        assert_eq!(plan(5, &[50, 51], &recorded), vec![]);
        // Nothing restorable: every recorded cut is re-taken, from the start.
        assert_eq!(plan(0, &[0, 0], &recorded).iter().map(|c| c.checkpoint).collect::<Vec<_>>(), [2, 3, 4, 5]);
    }

    #[test]
    fn a_cut_recorded_twice_counts_once() {
        // cuts.tsv and an intact `_metadata` both name checkpoint 4 (or a catch-up recorded
        // it again): one re-take.
        let recorded = [cut(4, &[40, 40]), cut(4, &[40, 40]), cut(4, &[41, 40])];
        assert_eq!(plan(3, &[30, 30], &recorded), vec![cut(4, &[40, 40])]);
    }

    #[test]
    fn a_cut_a_replay_cannot_reach_again_is_left_out() {
        // 4 is behind the restored cut on source 1; 6 has too few positions; 7 is behind 5.
        let recorded = [cut(4, &[40, 29]), cut(5, &[50, 50]), cut(6, &[60]), cut(7, &[70, 49]), cut(8, &[80, 80])];
        assert_eq!(plan(3, &[30, 30], &recorded), vec![cut(5, &[50, 50]), cut(8, &[80, 80])]);
        // A source that did not move between two checkpoints is fine (equal positions).
        assert_eq!(plan(3, &[30, 30], &[cut(4, &[30, 35])]), vec![cut(4, &[30, 35])]);
    }

    fn checkpoint(data: &Path, n: u64, positions: &[u64]) -> snapshot::Metadata {
        snapshot::write_test_checkpoint(data, "j", n, positions, &[(crate::wire::TaskId::Count(0), n.into())])
    }

    #[test]
    fn cuts_come_from_the_cuts_file_and_from_intact_metadata() {
        let d = tempfile::tempdir().unwrap();
        let path = cuts::path(d.path(), "j");
        for (n, p) in [(2, [20, 20]), (3, [30, 30]), (4, [40, 40])] {
            checkpoint(d.path(), n, &p);
            cuts::append(&path, &cut(n, &p)).unwrap();
        }
        // Checkpoint 5 completed but its cut line was never appended (the jobmanager died
        // in between); 6 is incomplete (no `_metadata`); 7's `_metadata` is corrupt.
        checkpoint(d.path(), 5, &[50, 50]);
        snapshot::write_task_snapshot(d.path(), None, "j", 6, crate::wire::TaskId::Count(0), &6u64).unwrap();
        checkpoint(d.path(), 7, &[70, 70]);
        let meta7 = snapshot::metadata_path(d.path(), "j", 7);
        let text = std::fs::read_to_string(&meta7).unwrap().replace("70", "71");
        std::fs::write(&meta7, text).unwrap();
        let got = recorded_cuts(d.path(), "j", 3, None);
        assert_eq!(got, vec![cut(4, &[40, 40]), cut(5, &[50, 50])]);
        // HA: of the checkpoints missing in the cuts file, only the published pointer's
        // metadata counts (5 is not published: the pointer is 4, or 7).
        assert_eq!(recorded_cuts(d.path(), "j", 3, Some(4)), vec![cut(4, &[40, 40])]);
        assert_eq!(recorded_cuts(d.path(), "j", 3, Some(7)), vec![cut(4, &[40, 40])]);
        std::fs::remove_file(cuts::path(d.path(), "j")).unwrap();
        assert_eq!(recorded_cuts(d.path(), "j", 3, Some(5)), vec![cut(5, &[50, 50])]);
        for (n, p) in [(2, [20, 20]), (3, [30, 30]), (4, [40, 40])] {
            cuts::append(&cuts::path(d.path(), "j"), &cut(n, &p)).unwrap();
        }
        // Without the cuts file the intact metadata still tells the cuts (7's does not).
        std::fs::remove_file(cuts::path(d.path(), "j")).unwrap();
        assert_eq!(recorded_cuts(d.path(), "j", 3, None), vec![cut(4, &[40, 40]), cut(5, &[50, 50])]);
    }
}
