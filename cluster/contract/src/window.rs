//! Event-time tumbling windows: the rules the engine's windowed job and the verdict's
//! window oracle share, so the two cannot disagree.
//!
//! - Event time is deterministic: line `i` of the input (0-based, counted over the whole
//!   input, not per source) has time `i × event_time_per_line` ([`event_time`]).
//! - A record at time `t` belongs to the window starting at `floor(t / width) × width`
//!   ([`window_start`]); windows are `[start, start + width)`.
//! - A source's watermark is the time of the next line it owns: every line it will still
//!   emit is at or after it ([`source_watermark`]). A source whose partition is exhausted
//!   has the watermark [`END_OF_TIME`]. A window fires once the minimum watermark over all
//!   sources reaches its end ([`closes`]). Because the watermark is a pure function of a
//!   source's position, the verdict can tell from a checkpoint's cut exactly which windows
//!   the engine must have fired before it.
//! - A window result is committed as the record key `<start_ms><TAB><word>` ([`key`]), so
//!   the output format (`key<TAB>count`) and every per-key check of the verdict apply
//!   unchanged: a window committed twice is a repeated key.

/// The watermark of a source with nothing left to emit.
pub const END_OF_TIME: u64 = u64::MAX;

/// A windowed job's clock: both in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClock {
    /// Window width (`job.window`).
    pub width_ms: u64,
    /// Event time between consecutive lines (`input.event_time_per_line`).
    pub per_line_ms: u64,
}

impl WindowClock {
    /// Event time of input line `index`.
    pub fn event_time(&self, index: u64) -> u64 {
        event_time(index, self.per_line_ms)
    }

    /// Start of the window that line `index` belongs to.
    pub fn window_of_line(&self, index: u64) -> u64 {
        window_start(self.event_time(index), self.width_ms)
    }
}

/// Whether `d` can be a window width or a per-line event time: event times are whole
/// milliseconds, and above zero.
pub fn is_whole_ms(d: std::time::Duration) -> bool {
    !d.is_zero() && d.as_nanos().is_multiple_of(1_000_000)
}

/// Event time of line `index` at `per_line_ms` per line (saturating: an absurd input
/// cannot wrap around into the past).
pub fn event_time(index: u64, per_line_ms: u64) -> u64 {
    index.saturating_mul(per_line_ms)
}

/// Start of the window of width `width_ms` that time `t` belongs to.
pub fn window_start(t: u64, width_ms: u64) -> u64 {
    let w = width_ms.max(1);
    t - t % w
}

/// Whether the window starting at `start` has fired once the watermark is `watermark`.
pub fn closes(start: u64, width_ms: u64, watermark: u64) -> bool {
    watermark >= start.saturating_add(width_ms)
}

/// The watermark of source subtask `subtask` of `p` after it consumed `consumed` lines of
/// its partition (it owns the lines whose index `% p == subtask`): the time of the next line
/// it owns, or [`END_OF_TIME`] when that line is past the input's end (`total_lines`, when
/// known).
pub fn source_watermark(subtask: u32, p: u32, consumed: u64, per_line_ms: u64, total_lines: Option<u64>) -> u64 {
    let next = next_owned_line(subtask, p, consumed);
    match total_lines {
        Some(total) if next >= total => END_OF_TIME,
        _ => event_time(next, per_line_ms),
    }
}

/// The index of the next line source subtask `subtask` of `p` owns after `consumed` lines.
pub fn next_owned_line(subtask: u32, p: u32, consumed: u64) -> u64 {
    (subtask as u64).saturating_add(consumed.saturating_mul(p.max(1) as u64))
}

/// The committed record key of a window's count of `word`.
pub fn key(start: u64, word: &str) -> String {
    let mut k = String::with_capacity(word.len() + 12);
    push_key(&mut k, start, word);
    k
}

/// Appends [`key`]`(start, word)` to `out` (no allocation on the engine's data path).
pub fn push_key(out: &mut String, start: u64, word: &str) {
    use std::fmt::Write;
    let _ = write!(out, "{start}\t{word}");
}

/// Splits a window record key back into `(start, word)`; `None` for a plain word.
pub fn split_key(key: &str) -> Option<(u64, &str)> {
    let (s, w) = key.split_once('\t')?;
    Some((s.parse().ok()?, w))
}

/// A key for people: `word in [10s, 15s)` for a window key, the word itself otherwise.
pub fn describe_key(key: &str, width_ms: Option<u64>) -> String {
    match split_key(key) {
        Some((start, word)) => match width_ms {
            Some(w) => format!("{word:?} in [{}, {})", fmt_ms(start), fmt_ms(start.saturating_add(w))),
            None => format!("{word:?} in the window at {}", fmt_ms(start)),
        },
        None => format!("{key:?}"),
    }
}

/// `15s`, `1.5s`, `250ms`: event times as people write them.
pub fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fall_into_windows_by_event_time() {
        let c = WindowClock { width_ms: 5000, per_line_ms: 1 };
        assert_eq!(c.window_of_line(0), 0);
        assert_eq!(c.window_of_line(4999), 0);
        assert_eq!(c.window_of_line(5000), 5000);
        let c = WindowClock { width_ms: 10, per_line_ms: 3 };
        // Lines at 0, 3, 6, 9 | 12, 15, 18 | 21 ...
        assert_eq!(c.window_of_line(3), 0);
        assert_eq!(c.window_of_line(4), 10);
    }

    #[test]
    fn a_window_closes_when_the_watermark_reaches_its_end() {
        assert!(!closes(5000, 5000, 9999));
        assert!(closes(5000, 5000, 10_000));
        assert!(closes(u64::MAX - 3, 5000, END_OF_TIME));
    }

    #[test]
    fn the_watermark_is_the_next_owned_line_or_the_end() {
        // p = 3, subtask 1 owns lines 1, 4, 7, ...; after 2 lines the next is 7.
        assert_eq!(source_watermark(1, 3, 2, 10, None), 70);
        assert_eq!(source_watermark(1, 3, 2, 10, Some(8)), 70);
        assert_eq!(source_watermark(1, 3, 2, 10, Some(7)), END_OF_TIME);
        // An empty partition is exhausted from the start.
        assert_eq!(source_watermark(2, 3, 0, 10, Some(2)), END_OF_TIME);
    }

    #[test]
    fn keys_round_trip_and_read_well() {
        let k = key(15_000, "#end");
        assert_eq!(split_key(&k), Some((15_000, "#end")));
        assert_eq!(split_key("plain"), None);
        assert_eq!(describe_key(&k, Some(5000)), "\"#end\" in [15s, 20s)");
        assert_eq!(describe_key("w", Some(5000)), "\"w\"");
        assert_eq!(fmt_ms(1500), "1.5s");
        assert_eq!(fmt_ms(250), "250ms");
    }
}
