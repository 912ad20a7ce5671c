//! The committed output: one file per committed sink transaction,
//! `/data/output/<job>/<subtask>/committed-<epoch>.tsv` (and, for the eager commits of
//! `delivery: at-least-once`, `committed-<epoch>-<part>.tsv`), each `word<TAB>count` lines
//! with the new cumulative count of every word that changed (a windowed job:
//! `<window start ms><TAB>word<TAB>count`, each window's final count, see
//! [`crate::window`]), closed by a trailer line
//! `<TAB>#end<TAB><records>` so a torn or truncated transaction is detectable. The trailer
//! starts with a TAB, an empty word, which no token can be (tokens are non-empty and hold
//! no whitespace): a word `#end` is an ordinary record.
//! Staged (pre-committed) transactions are `staged-<epoch>-<attempt>.tsv` in the same
//! directory: the name says which execution attempt owns it, so a restore aborts only what
//! older attempts left (never a newer attempt's, see the sink).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The trailer key that closes every transaction file (after an empty word: see above).
pub const TRAILER: &str = "#end";

/// One committed transaction read back from disk.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub subtask: u32,
    pub epoch: u64,
    pub part: u32,
    pub path: PathBuf,
    pub records: Vec<(String, u64)>,
    /// `Err(reason)` when the file is not a complete, parseable transaction.
    pub well_formed: Result<(), String>,
}

/// Name of epoch `epoch`'s staged transaction file, written by execution attempt `attempt`.
pub fn staged_name(epoch: u64, attempt: u64) -> String {
    format!("staged-{epoch}-{attempt}.tsv")
}

/// Name of a committed transaction file (`part` 0 is the plain name).
pub fn committed_name(epoch: u64, part: u32) -> String {
    if part == 0 {
        format!("committed-{epoch}.tsv")
    } else {
        format!("committed-{epoch}-{part}.tsv")
    }
}

/// What a transaction file's name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnFile {
    /// `committed-<epoch>[-<part>].tsv`.
    Committed { epoch: u64, part: u32 },
    /// `staged-<epoch>-<attempt>.tsv`.
    Staged { epoch: u64, attempt: u64 },
}

/// Parses `committed-<epoch>[-<part>].tsv` / `staged-<epoch>-<attempt>.tsv`.
pub fn parse_name(name: &str) -> Option<TxnFile> {
    if let Some(rest) = name.strip_prefix("committed-").and_then(|r| r.strip_suffix(".tsv")) {
        let (e, p) = match rest.split_once('-') {
            Some((e, p)) => (e, p.parse().ok()?),
            None => (rest, 0),
        };
        return Some(TxnFile::Committed { epoch: e.parse().ok()?, part: p });
    }
    let (e, a) = name.strip_prefix("staged-")?.strip_suffix(".tsv")?.split_once('-')?;
    Some(TxnFile::Staged { epoch: e.parse().ok()?, attempt: a.parse().ok()? })
}

/// The file a transaction is written to before its atomic rename (see [`write_transaction`]).
pub fn in_progress_path(path: &Path) -> PathBuf {
    path.with_extension("tmp")
}

/// Parses the name of an in-progress file (`<transaction stem>.tmp`).
pub fn parse_in_progress_name(name: &str) -> Option<TxnFile> {
    parse_name(&format!("{}.tsv", name.strip_suffix(".tmp")?))
}

/// Writes a transaction file atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_transaction<'a>(path: &Path, records: impl IntoIterator<Item = (&'a str, u64)>) -> io::Result<()> {
    let tmp = in_progress_path(path);
    {
        let mut w = io::BufWriter::with_capacity(64 * 1024, File::create(&tmp)?);
        let mut n = 0u64;
        for (word, count) in records {
            writeln!(w, "{word}\t{count}")?;
            n += 1;
        }
        writeln!(w, "\t{TRAILER}\t{n}")?;
        w.flush()?;
        w.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, durably: every directory it creates is fsynced into its parent (a
/// new directory's entry is not on disk until its parent is synced, and a file renamed
/// into a directory that vanished in a crash is gone with it). Returns the directories it
/// created, outermost first.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.as_os_str().is_empty() && !d.exists() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    missing.reverse();
    for m in &missing {
        match std::fs::create_dir(m) {
            Ok(()) => {}
            // Someone else (another task, another taskmanager) created it meanwhile.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let parent = m.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(missing)
}

/// One transaction file as read: the records up to the first defect, and the defect
/// (`Err`) if the file is not well formed.
pub type ReadTransaction = (Vec<(String, u64)>, Result<(), String>);

/// Reads and checks one transaction file.
pub fn read_transaction(path: &Path) -> io::Result<ReadTransaction> {
    let r = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    let mut trailer = None;
    for (i, line) in r.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Ok((records, Err(format!("line {}: {e}", i + 1)))),
        };
        if trailer.is_some() {
            return Ok((records, Err(format!("line {}: data after the trailer", i + 1))));
        }
        // An empty first field opens the trailer; every other line is a record, `#end`
        // included. A record's count is after its last TAB: the key before it is a word,
        // or a window's `<start><TAB><word>`.
        let (trailer_line, w, c) = match line.strip_prefix('\t') {
            Some(rest) => match rest.split_once('\t') {
                Some((TRAILER, n)) => (true, "", n),
                _ => return Ok((records, Err(format!("line {}: malformed trailer {line:?}", i + 1)))),
            },
            None => match line.rsplit_once('\t') {
                Some((w, c)) => (false, w, c),
                None => return Ok((records, Err(format!("line {}: expected key<TAB>count, got {line:?}", i + 1)))),
            },
        };
        let Ok(c) = c.parse::<u64>() else {
            return Ok((records, Err(format!("line {}: count {c:?} is not a number", i + 1))));
        };
        if trailer_line {
            trailer = Some(c);
        } else {
            records.push((w.to_string(), c));
        }
    }
    let ok = match trailer {
        None => Err("no trailer: the transaction is truncated".to_string()),
        Some(n) if n != records.len() as u64 => {
            Err(format!("trailer says {n} records, the file has {}", records.len()))
        }
        Some(_) => Ok(()),
    };
    Ok((records, ok))
}

/// Every committed transaction under `<output>/<job>/`, sorted by (subtask, epoch, part).
pub fn read_committed(job_output_dir: &Path) -> io::Result<Vec<Transaction>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(job_output_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for sub in entries {
        let sub = sub?;
        let Some(subtask) = sub.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        for f in std::fs::read_dir(sub.path())? {
            let f = f?;
            let name = f.file_name();
            let Some(TxnFile::Committed { epoch, part }) = name.to_str().and_then(parse_name) else { continue };
            let (records, well_formed) = read_transaction(&f.path())?;
            out.push(Transaction { subtask, epoch, part, path: f.path(), records, well_formed });
        }
    }
    out.sort_by_key(|t| (t.subtask, t.epoch, t.part));
    Ok(out)
}

/// How many committed transaction files are under `<output>/<job>/` (cheap: names only),
/// to see committed output advance while a job runs.
pub fn count_committed(job_output_dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    let entries = match std::fs::read_dir(job_output_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for sub in entries {
        let sub = sub?;
        if !sub.file_type()?.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(sub.path())? {
            let name = f?.file_name();
            if matches!(name.to_str().and_then(parse_name), Some(TxnFile::Committed { .. })) {
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&committed_name(12, 0)), Some(TxnFile::Committed { epoch: 12, part: 0 }));
        assert_eq!(parse_name(&committed_name(12, 3)), Some(TxnFile::Committed { epoch: 12, part: 3 }));
        assert_eq!(parse_name(&staged_name(4, 9)), Some(TxnFile::Staged { epoch: 4, attempt: 9 }));
        assert_eq!(parse_name("committed-x.tsv"), None);
        assert_eq!(parse_name("staged-4.tsv"), None, "a staged file names its attempt");
        let tmp = in_progress_path(Path::new(&staged_name(4, 9)));
        assert_eq!(parse_in_progress_name(tmp.to_str().unwrap()), Some(TxnFile::Staged { epoch: 4, attempt: 9 }));
    }

    /// Every token round-trips, `#end` (a Velocity directive) and look-alikes of the
    /// trailer included: the trailer is the only line with an empty word.
    #[test]
    fn a_word_that_looks_like_the_trailer_is_a_record() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(committed_name(1, 0));
        let recs = [("#end", 1), ("a", 2), ("#end\u{a0}", 3), ("#", 4)];
        write_transaction(&p, recs).unwrap();
        let (got, ok) = read_transaction(&p).unwrap();
        assert_eq!(ok, Ok(()));
        assert_eq!(got, recs.iter().map(|(w, c)| (w.to_string(), *c)).collect::<Vec<_>>());
        // A file that ends in a `#end` record is still truncated, whatever its count.
        std::fs::write(&p, "a\t2\n#end\t1\n").unwrap();
        assert!(read_transaction(&p).unwrap().1.is_err());
        std::fs::write(&p, "a\t2\n\tnope\t1\n").unwrap();
        assert!(read_transaction(&p).unwrap().1.is_err());
    }

    /// A windowed job's keys (`<start><TAB><word>`) round-trip, `#end` as the word too.
    #[test]
    fn window_keys_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(committed_name(2, 0));
        let keys = [crate::window::key(0, "#end"), crate::window::key(5000, "a")];
        write_transaction(&p, keys.iter().map(|k| (k.as_str(), 7))).unwrap();
        let (got, ok) = read_transaction(&p).unwrap();
        assert_eq!(ok, Ok(()));
        assert_eq!(got, keys.iter().map(|k| (k.clone(), 7)).collect::<Vec<_>>());
        std::fs::write(&p, "0\ta\tx\n\t#end\t1\n").unwrap();
        assert!(read_transaction(&p).unwrap().1.is_err(), "a count that is not a number");
    }

    #[test]
    fn durable_dir_creation_creates_every_missing_level_once() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        assert_eq!(create_dir_all_durable(&deep).unwrap(), vec![d.path().join("a"), d.path().join("a/b"), deep.clone()]);
        assert!(deep.is_dir());
        assert!(create_dir_all_durable(&deep).unwrap().is_empty());
    }

    #[test]
    fn transactions_round_trip_and_truncation_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("1");
        std::fs::create_dir_all(&sub).unwrap();
        write_transaction(&sub.join(committed_name(3, 0)), [("a", 2), ("b", 5)]).unwrap();
        std::fs::write(sub.join(committed_name(4, 0)), "a\t3\n").unwrap();
        let t = read_committed(d.path()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(count_committed(d.path()).unwrap(), 2);
        assert_eq!(t[0].records, vec![("a".to_string(), 2), ("b".to_string(), 5)]);
        assert!(t[0].well_formed.is_ok());
        assert!(t[1].well_formed.is_err());
    }
}
