//! What the passthrough measured: per operation, how many ran, the delay asked of them and
//! how long they took (injected wait included), and the errors injected. The daemon writes
//! it to `<node>.stats.json` beside the control file; the report reads it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::{Errno, Op};

/// Counters of one operation kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    pub count: u64,
    /// Operations that were given a delay, and the delay asked of them, summed.
    pub delayed: u64,
    pub asked_us: u64,
    /// Time from the operation's arrival to its answer, summed (and for delayed ones).
    pub took_us: u64,
    pub delayed_took_us: u64,
    pub max_us: u64,
    /// Errors injected, by errno name.
    #[serde(default)]
    pub injected: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub ops: BTreeMap<Op, OpStats>,
    /// Bytes written through the mount since it was made.
    pub written: u64,
    /// `written` when each fault was first seen: `full_after` counts from there.
    #[serde(default)]
    pub baseline: BTreeMap<String, u64>,
    /// Errors injected by each fault id.
    #[serde(default)]
    pub by_fault: BTreeMap<String, u64>,
    /// With the undo log: files with a pre-image and entry changes pending now (what a
    /// power loss now would undo), as of the last publication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced_now: Option<(usize, usize)>,
    /// Power losses done, by request id: the acknowledgement and what was lost.
    #[serde(default)]
    pub power_losses: BTreeMap<String, super::unsynced::PowerLossReport>,
    /// Delay being asked for the current operation, per op (set by `asked`, consumed by
    /// `finished`): tells apart delayed operations from plain ones.
    #[serde(skip)]
    pending: BTreeMap<Op, u64>,
}

impl Stats {
    pub fn asked(&mut self, op: Op, delay: Duration) {
        if !delay.is_zero() {
            let s = self.ops.entry(op).or_default();
            s.delayed += 1;
            s.asked_us += delay.as_micros() as u64;
            *self.pending.entry(op).or_default() += 1;
        }
    }

    pub fn finished(&mut self, op: Op, took: Duration) {
        let us = took.as_micros() as u64;
        let s = self.ops.entry(op).or_default();
        s.count += 1;
        s.took_us += us;
        s.max_us = s.max_us.max(us);
        if let Some(p) = self.pending.get_mut(&op).filter(|p| **p > 0) {
            *p -= 1;
            s.delayed_took_us += us;
        }
    }

    pub fn injected(&mut self, op: Op, errno: Errno, fault: &str) {
        *self.ops.entry(op).or_default().injected.entry(errno.name().to_string()).or_default() += 1;
        *self.by_fault.entry(fault.to_string()).or_default() += 1;
    }

    pub fn wrote(&mut self, bytes: u64) {
        self.written += bytes;
    }

    /// Marks fault `id` as begun now (first call wins).
    pub fn begin(&mut self, id: &str) {
        let w = self.written;
        self.baseline.entry(id.to_string()).or_insert(w);
    }

    /// Bytes written since fault `id` began.
    pub fn written_since(&self, id: &str) -> u64 {
        self.written - self.baseline.get(id).copied().unwrap_or(self.written)
    }

    /// Errors injected in total.
    pub fn errors(&self) -> u64 {
        self.by_fault.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delayed_operations_are_measured_apart_and_full_after_counts_from_its_start() {
        let mut s = Stats::default();
        s.finished(Op::Write, Duration::from_micros(100));
        s.wrote(1000);
        s.begin("f");
        s.asked(Op::Write, Duration::from_millis(20));
        s.finished(Op::Write, Duration::from_micros(20_500));
        s.wrote(50);
        s.injected(Op::Fsync, Errno::Eio, "g");
        let w = &s.ops[&Op::Write];
        assert_eq!((w.count, w.delayed, w.asked_us, w.delayed_took_us), (2, 1, 20_000, 20_500));
        assert_eq!(s.written_since("f"), 50);
        assert_eq!(s.ops[&Op::Fsync].injected["EIO"], 1);
        assert_eq!(s.errors(), 1);
    }
}
