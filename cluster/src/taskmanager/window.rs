//! The keyed state of a windowed count task: the open event-time windows' counts, the
//! watermark of each input, and the windows fired since the last barrier.
//!
//! A window fires when the minimum watermark over all inputs reaches its end; its counts
//! leave the state at that moment and become the output of the current epoch, staged at
//! the next barrier and committed with that checkpoint (two-phase commit, as for running
//! counts). A snapshot therefore holds only open windows: after a restore, windows fired
//! and committed before the checkpoint are gone for good (their input lies before the
//! cut, so the replay never brings them back), and windows that were open are rebuilt
//! from the snapshot plus the replay. Watermarks are not snapshotted (as in Flink): they
//! restart at zero and the sources re-announce theirs when they resume.

use crate::window::{self, WindowClock};
use ahash::AHashMap;
use std::collections::BTreeMap;

pub struct Windows {
    clock: WindowClock,
    /// Open windows by start: word -> count.
    open: BTreeMap<u64, AHashMap<Box<str>, u64>>,
    /// Watermark per input (source subtask).
    inputs: Vec<u64>,
    /// The combined (minimum) watermark.
    watermark: u64,
    /// Fired since the last barrier: `(key, count)`.
    fired: Vec<(Box<str>, u64)>,
    /// Records for windows that had already fired, dropped (as Flink drops late data)
    /// since the count task last reported them.
    pub late: u64,
}

impl Windows {
    pub fn new(clock: WindowClock, inputs: u32) -> Self {
        Windows { clock, open: BTreeMap::new(), inputs: vec![0; inputs as usize], watermark: 0, fired: Vec::new(), late: 0 }
    }

    /// Restores the open windows of a snapshot (`<start><TAB><word>` keys).
    pub fn restore(&mut self, counts: Vec<(String, u64)>) -> Result<(), String> {
        for (k, c) in counts {
            let (start, word) = window::split_key(&k).ok_or_else(|| format!("snapshot key {k:?} is not a window key"))?;
            self.open.entry(start).or_default().insert(word.into(), c);
        }
        Ok(())
    }

    /// Adds `c` occurrences of a batch entry's key.
    pub fn add(&mut self, key: &str, c: u32) -> Result<(), String> {
        let (start, word) = window::split_key(key).ok_or_else(|| format!("batch key {key:?} is not a window key"))?;
        if window::closes(start, self.clock.width_ms, self.watermark) {
            self.late += c as u64;
            return Ok(());
        }
        let w = self.open.entry(start).or_default();
        match w.get_mut(word) {
            Some(n) => *n += c as u64,
            None => {
                w.insert(word.into(), c as u64);
            }
        }
        Ok(())
    }

    /// Input `input`'s watermark reached `t`; fires every window the combined watermark
    /// passed. Returns how many windows fired.
    pub fn on_watermark(&mut self, input: u32, t: u64) -> usize {
        let Some(w) = self.inputs.get_mut(input as usize) else { return 0 };
        *w = (*w).max(t);
        let min = self.inputs.iter().copied().min().unwrap_or(0);
        if min <= self.watermark {
            return 0;
        }
        self.watermark = min;
        let mut n = 0;
        while let Some((&start, _)) = self.open.first_key_value() {
            if !window::closes(start, self.clock.width_ms, min) {
                break;
            }
            let (start, words) = self.open.pop_first().expect("a first entry exists");
            let mut words: Vec<(Box<str>, u64)> = words.into_iter().collect();
            // Sorted, so a window's output is the same whatever the hash order.
            words.sort_unstable();
            self.fired.extend(words.into_iter().map(|(w, c)| (window::key(start, &w).into_boxed_str(), c)));
            n += 1;
        }
        n
    }

    /// The records fired since the last call: this epoch's output.
    pub fn take_fired(&mut self) -> Vec<(Box<str>, u64)> {
        std::mem::take(&mut self.fired)
    }

    pub fn has_fired(&self) -> bool {
        !self.fired.is_empty()
    }

    /// The open windows, for a snapshot.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (start, words) in &self.open {
            out.extend(words.iter().map(|(w, c)| (window::key(*start, w), *c)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> WindowClock {
        WindowClock { width_ms: 10, per_line_ms: 1 }
    }

    #[test]
    fn a_window_fires_once_every_input_passed_its_end() {
        let mut w = Windows::new(clock(), 2);
        w.add(&window::key(0, "a"), 2).unwrap();
        w.add(&window::key(0, "b"), 1).unwrap();
        w.add(&window::key(10, "a"), 5).unwrap();
        assert_eq!(w.on_watermark(0, 15), 0, "input 1 is still at 0");
        assert!(!w.has_fired(), "nothing fired yet: at-least-once has nothing to commit eagerly");
        assert_eq!(w.on_watermark(1, 10), 1);
        assert!(w.has_fired());
        assert_eq!(w.take_fired(), vec![(window::key(0, "a").into(), 2), (window::key(0, "b").into(), 1)]);
        assert!(!w.has_fired(), "taken: nothing left to commit");
        assert_eq!(w.snapshot(), vec![(window::key(10, "a"), 5)]);
        // Nothing fires twice, and a record for a fired window is late.
        assert_eq!(w.on_watermark(1, 12), 0);
        w.add(&window::key(0, "a"), 1).unwrap();
        assert_eq!(w.late, 1);
        assert_eq!(w.on_watermark(0, u64::MAX) + w.on_watermark(1, u64::MAX), 1);
        assert_eq!(w.take_fired(), vec![(window::key(10, "a").into(), 5)]);
        assert!(w.snapshot().is_empty());
    }

    #[test]
    fn a_restore_brings_back_open_windows_and_rejects_foreign_keys() {
        let mut w = Windows::new(clock(), 1);
        w.restore(vec![(window::key(20, "x"), 3)]).unwrap();
        w.add(&window::key(20, "x"), 1).unwrap();
        assert_eq!(w.on_watermark(0, 30), 1);
        assert_eq!(w.take_fired(), vec![(window::key(20, "x").into(), 4)]);
        assert!(w.restore(vec![("plain".into(), 1)]).is_err());
        assert!(w.add("plain", 1).is_err());
    }
}
