//! Input lines, shared by the engine's sources and by the oracle: the deterministic
//! generator and partitioned reading of a text file (subtask `i` of `p` owns the lines
//! whose index `% p == i`).

use crate::spec::GenerateSpec;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// SplitMix64: a tiny, stable PRNG. Stable across crate versions matters here: a line's
/// content must be a pure function of (seed, index) forever, or replays and oracles drift.
#[derive(Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Deterministic Zipf-like lines: word `k` of line `i` is drawn from a Zipf(s=1)
/// distribution over `vocabulary` pseudo-words by a PRNG seeded with `(seed, i)`, so any
/// line can be regenerated on its own (replay from an offset is O(1)).
pub struct Generator {
    spec: GenerateSpec,
    words: Vec<String>,
    /// Cumulative weights scaled to u64, for a binary search per word.
    cdf: Vec<u64>,
}

const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "be", "da", "fu", "go", "hi", "ju", "pe", "zo",
];

/// The pseudo-word of a rank: its base-16 digits spelled as syllables (`0 -> "ka"`).
pub fn word_of_rank(rank: u32) -> String {
    let mut n = rank as u64 + 1;
    let mut parts = Vec::new();
    while n > 0 {
        parts.push(SYLLABLES[(n % 16) as usize]);
        n /= 16;
    }
    parts.reverse();
    parts.concat()
}

impl Generator {
    pub fn new(spec: &GenerateSpec) -> Self {
        let v = spec.vocabulary.max(1) as usize;
        let weights: Vec<f64> = (1..=v).map(|r| 1.0 / r as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(v);
        for w in &weights {
            acc += w / total;
            cdf.push((acc.min(1.0) * u64::MAX as f64) as u64);
        }
        if let Some(last) = cdf.last_mut() {
            *last = u64::MAX;
        }
        Generator { spec: spec.clone(), words: (0..v as u32).map(word_of_rank).collect(), cdf }
    }

    /// Number of lines in the input.
    pub fn lines(&self) -> u64 {
        self.spec.lines
    }

    /// Appends line `index` (without newline) to `out`.
    pub fn line_into(&self, index: u64, out: &mut String) {
        let mut rng = SplitMix64::new(self.spec.seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        for k in 0..self.spec.words_per_line {
            if k > 0 {
                out.push(' ');
            }
            let u = rng.next_u64();
            let rank = self.cdf.partition_point(|&c| c < u).min(self.words.len() - 1);
            out.push_str(&self.words[rank]);
        }
    }

    /// Writes every line, each ended by `\n`: the input as a file, for engines that read
    /// files (Flink) and for benchmarks; the oracle can read it back or regenerate it.
    pub fn write_all(&self, w: &mut impl std::io::Write) -> io::Result<()> {
        let mut line = String::new();
        for i in 0..self.lines() {
            line.clear();
            self.line_into(i, &mut line);
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        w.flush()
    }

    /// Line `index` as a new string.
    pub fn line(&self, index: u64) -> String {
        let mut s = String::new();
        self.line_into(index, &mut s);
        s
    }
}

/// Where a file source stands: the next line index it owns and that line's byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilePosition {
    pub line: u64,
    pub byte: u64,
}

/// What a read attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A line this subtask owns (index, text without newline).
    Line(u64),
    /// No complete line right now (follow mode: the file may grow).
    Pending,
    /// The input has ended.
    End,
}

/// Reads the lines of one partition of a text file, from a [`FilePosition`].
/// A last line without a trailing newline counts once the input has ended (not follow
/// mode, or the end marker exists), so partial appends are never read half.
pub struct PartitionReader {
    path: PathBuf,
    reader: BufReader<std::fs::File>,
    subtask: u64,
    parallelism: u64,
    follow: bool,
    /// Position of the next unread line (any subtask's).
    pos: FilePosition,
    buf: Vec<u8>,
    /// The current line's text.
    pub text: String,
}

/// The end marker of a followed file: `<path>.end`.
pub fn end_marker(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".end");
    PathBuf::from(s)
}

impl PartitionReader {
    pub fn open(path: &Path, subtask: u32, parallelism: u32, follow: bool, from: FilePosition) -> io::Result<Self> {
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(from.byte))?;
        Ok(PartitionReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(256 * 1024, f),
            subtask: subtask as u64,
            parallelism: parallelism.max(1) as u64,
            follow,
            pos: from,
            buf: Vec::with_capacity(256),
            text: String::new(),
        })
    }

    /// The position to snapshot: replay restarts exactly here.
    pub fn position(&self) -> FilePosition {
        self.pos
    }

    /// Whether a line this subtask owns is left (or may still come: a followed file before
    /// its end marker), without consuming anything: a second handle reads ahead from the
    /// current position, past at most `parallelism - 1` lines of other subtasks.
    pub fn has_more(&self) -> io::Result<bool> {
        let ended = !self.follow || end_marker(&self.path).exists();
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.pos.byte))?;
        let mut r = BufReader::with_capacity(16 * 1024, f);
        let mut buf = Vec::new();
        let mut index = self.pos.line;
        loop {
            buf.clear();
            let n = r.read_until(b'\n', &mut buf)?;
            let complete = buf.last() == Some(&b'\n');
            if n == 0 || (!complete && !ended) {
                return Ok(!ended);
            }
            if index % self.parallelism == self.subtask {
                return Ok(true);
            }
            index += 1;
        }
    }

    /// Advances to the next line this subtask owns; its text is left in `self.text`.
    pub fn next_line(&mut self) -> io::Result<ReadOutcome> {
        loop {
            // Check the marker *before* reading, so lines appended before it was created
            // are still read: EOF after a marker seen earlier is the real end.
            let ended = !self.follow || end_marker(&self.path).exists();
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf)?;
            let complete = self.buf.last() == Some(&b'\n');
            if n == 0 || (!complete && !ended) {
                if n > 0 {
                    // A partial line: rewind and wait for the rest.
                    self.reader.seek_relative(-(n as i64))?;
                }
                return Ok(if ended { ReadOutcome::End } else { ReadOutcome::Pending });
            }
            let index = self.pos.line;
            self.pos.line += 1;
            self.pos.byte += n as u64;
            if index % self.parallelism == self.subtask {
                let bytes = if complete { &self.buf[..n - 1] } else { &self.buf[..] };
                let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
                self.text.clear();
                self.text.push_str(&String::from_utf8_lossy(bytes));
                return Ok(ReadOutcome::Line(index));
            }
        }
    }
}

/// Reads every line of a file (the oracle's view), calling `f` on each.
pub fn for_each_file_line(path: &Path, mut f: impl FnMut(&str)) -> io::Result<()> {
    let mut r = BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let b = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let b = b.strip_suffix(b"\r").unwrap_or(b);
        f(&String::from_utf8_lossy(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn generator_is_deterministic_and_zipfy() {
        let spec = GenerateSpec { lines: 1000, words_per_line: 8, vocabulary: 100, seed: 7 };
        let g = Generator::new(&spec);
        assert_eq!(g.line(42), Generator::new(&spec).line(42));
        assert_ne!(g.line(42), g.line(43));
        let mut first = 0;
        let mut total = 0;
        for i in 0..1000 {
            for w in g.line(i).split(' ') {
                total += 1;
                if w == word_of_rank(0) {
                    first += 1;
                }
            }
        }
        assert_eq!(total, 8000);
        // Zipf(1) over 100 words: rank 1 has ~19% of the mass.
        assert!(first > 1000 && first < 2200, "{first}");
    }

    #[test]
    fn partitions_cover_every_line_once_and_resume_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.txt");
        let mut f = std::fs::File::create(&p).unwrap();
        for i in 0..10 {
            writeln!(f, "line {i}").unwrap();
        }
        write!(f, "tail").unwrap(); // no trailing newline
        drop(f);
        let mut seen = Vec::new();
        for s in 0..3 {
            let mut r = PartitionReader::open(&p, s, 3, false, FilePosition::default()).unwrap();
            while let ReadOutcome::Line(i) = r.next_line().unwrap() {
                seen.push((i, r.text.clone()));
            }
        }
        seen.sort();
        assert_eq!(seen.len(), 11);
        assert_eq!(seen[10].1, "tail");
        // Resume subtask 0 after its second line.
        let mut r = PartitionReader::open(&p, 0, 3, false, FilePosition::default()).unwrap();
        r.next_line().unwrap();
        r.next_line().unwrap();
        let pos = r.position();
        let mut r2 = PartitionReader::open(&p, 0, 3, false, pos).unwrap();
        assert_eq!(r2.next_line().unwrap(), ReadOutcome::Line(6));
        assert_eq!(r2.text, "line 6");
        // Looking ahead consumes nothing; subtask 0's last line is 9 (10 is the tail, 1's).
        assert!(r2.has_more().unwrap());
        assert_eq!(r2.next_line().unwrap(), ReadOutcome::Line(9));
        assert!(!r2.has_more().unwrap());
        assert_eq!(r2.next_line().unwrap(), ReadOutcome::End);
        let mut r1 = PartitionReader::open(&p, 1, 3, false, FilePosition::default()).unwrap();
        while r1.next_line().unwrap() != ReadOutcome::Line(7) {}
        assert!(r1.has_more().unwrap(), "the unterminated tail is subtask 1's last line");
        assert_eq!(r1.next_line().unwrap(), ReadOutcome::Line(10));
        assert!(!r1.has_more().unwrap());
    }

    #[test]
    fn follow_mode_waits_for_complete_lines_and_the_end_marker() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.txt");
        std::fs::write(&p, "a b\nhalf").unwrap();
        let mut r = PartitionReader::open(&p, 0, 1, true, FilePosition::default()).unwrap();
        assert_eq!(r.next_line().unwrap(), ReadOutcome::Line(0));
        assert_eq!(r.next_line().unwrap(), ReadOutcome::Pending);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        writeln!(f, " line").unwrap();
        assert_eq!(r.next_line().unwrap(), ReadOutcome::Line(1));
        assert_eq!(r.text, "half line");
        assert!(r.has_more().unwrap(), "a followed file may grow");
        assert_eq!(r.next_line().unwrap(), ReadOutcome::Pending);
        std::fs::write(end_marker(&p), "").unwrap();
        assert_eq!(r.next_line().unwrap(), ReadOutcome::End);
    }
}
