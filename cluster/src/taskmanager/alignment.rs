//! Barrier alignment (Chandy-Lamport / asynchronous barrier snapshotting) for a task with
//! several inputs.
//!
//! Exactly-once: an input that has delivered barrier `n` is blocked (its reader stops
//! reading, so TCP backpressure holds its sender) until every input has delivered `n`;
//! then the task snapshots and releases them all. At-least-once: nothing is blocked; the
//! task snapshots when the last input's barrier `n` arrives (Flink's barrier tracker), so
//! records after the barrier on fast inputs are in the snapshot and replayed again.

use std::collections::{BTreeMap, BTreeSet};

/// Tracks which inputs have delivered which barrier.
#[derive(Debug, Default)]
pub struct Aligner {
    inputs: u32,
    seen: BTreeMap<u64, BTreeSet<u32>>,
    /// The newest barrier aligned so far; older barriers arriving late are subsumed.
    last_aligned: u64,
}

impl Aligner {
    pub fn new(inputs: u32) -> Self {
        Aligner { inputs, seen: BTreeMap::new(), last_aligned: 0 }
    }

    /// Input `input` delivered barrier `id`. Returns `Some(id)` when that completes the
    /// alignment of `id` (every input has delivered it).
    pub fn on_barrier(&mut self, input: u32, id: u64) -> Option<u64> {
        if id <= self.last_aligned {
            return None;
        }
        let set = self.seen.entry(id).or_default();
        set.insert(input);
        if set.len() as u32 == self.inputs {
            // Completing `id` subsumes every older, still incomplete barrier.
            self.seen = self.seen.split_off(&(id + 1));
            self.last_aligned = id;
            Some(id)
        } else {
            None
        }
    }

    /// Inputs blocked in exactly-once mode: those that delivered the oldest open barrier.
    pub fn blocked(&self) -> BTreeSet<u32> {
        self.seen.values().next().cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_when_every_input_delivered_the_barrier() {
        let mut a = Aligner::new(3);
        assert_eq!(a.on_barrier(0, 1), None);
        assert_eq!(a.blocked(), [0].into());
        assert_eq!(a.on_barrier(2, 1), None);
        assert_eq!(a.blocked(), [0, 2].into());
        assert_eq!(a.on_barrier(0, 1), None, "a repeated barrier does not count twice");
        assert_eq!(a.on_barrier(1, 1), Some(1));
        assert!(a.blocked().is_empty());
    }

    #[test]
    fn a_newer_barrier_subsumes_an_older_incomplete_one() {
        let mut a = Aligner::new(2);
        assert_eq!(a.on_barrier(0, 1), None);
        assert_eq!(a.on_barrier(0, 2), None);
        assert_eq!(a.on_barrier(1, 2), Some(2));
        assert_eq!(a.on_barrier(1, 1), None, "late barrier 1 is subsumed");
        assert_eq!(a.on_barrier(0, 3), None);
        assert_eq!(a.on_barrier(1, 3), Some(3));
    }
}
