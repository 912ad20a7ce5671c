//! The committed output: one file per committed sink transaction,
//! `/data/output/<job>/<subtask>/committed-<epoch>.tsv` (and, for the eager commits of
//! `delivery: at-least-once`, `committed-<epoch>-<part>.tsv`), each `word<TAB>count` lines
//! with the new cumulative count of every word that changed, closed by a trailer line
//! `#end<TAB><records>` so a torn or truncated transaction is detectable.
//! Staged (pre-committed) transactions are `staged-<epoch>.tsv` in the same directory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The trailer key that closes every transaction file.
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

/// Name of a staged transaction file.
pub fn staged_name(epoch: u64) -> String {
    format!("staged-{epoch}.tsv")
}

/// Name of a committed transaction file (`part` 0 is the plain name).
pub fn committed_name(epoch: u64, part: u32) -> String {
    if part == 0 {
        format!("committed-{epoch}.tsv")
    } else {
        format!("committed-{epoch}-{part}.tsv")
    }
}

/// Parses `committed-<epoch>[-<part>].tsv` / `staged-<epoch>.tsv`.
pub fn parse_name(name: &str) -> Option<(&'static str, u64, u32)> {
    let (kind, rest) = if let Some(r) = name.strip_prefix("committed-") {
        ("committed", r)
    } else if let Some(r) = name.strip_prefix("staged-") {
        ("staged", r)
    } else {
        return None;
    };
    let rest = rest.strip_suffix(".tsv")?;
    let (e, p) = match rest.split_once('-') {
        Some((e, p)) => (e, p.parse().ok()?),
        None => (rest, 0),
    };
    Some((kind, e.parse().ok()?, p))
}

/// Writes a transaction file atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_transaction<'a>(path: &Path, records: impl IntoIterator<Item = (&'a str, u64)>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut w = io::BufWriter::with_capacity(64 * 1024, File::create(&tmp)?);
        let mut n = 0u64;
        for (word, count) in records {
            writeln!(w, "{word}\t{count}")?;
            n += 1;
        }
        writeln!(w, "{TRAILER}\t{n}")?;
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

/// Reads and checks one transaction file.
pub fn read_transaction(path: &Path) -> io::Result<(Vec<(String, u64)>, Result<(), String>)> {
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
        let Some((w, c)) = line.split_once('\t') else {
            return Ok((records, Err(format!("line {}: expected word<TAB>count, got {line:?}", i + 1))));
        };
        let Ok(c) = c.parse::<u64>() else {
            return Ok((records, Err(format!("line {}: count {c:?} is not a number", i + 1))));
        };
        if w == TRAILER {
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
            let Some(("committed", epoch, part)) = name.to_str().and_then(parse_name) else { continue };
            let (records, well_formed) = read_transaction(&f.path())?;
            out.push(Transaction { subtask, epoch, part, path: f.path(), records, well_formed });
        }
    }
    out.sort_by_key(|t| (t.subtask, t.epoch, t.part));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&committed_name(12, 0)), Some(("committed", 12, 0)));
        assert_eq!(parse_name(&committed_name(12, 3)), Some(("committed", 12, 3)));
        assert_eq!(parse_name(&staged_name(4)), Some(("staged", 4, 0)));
        assert_eq!(parse_name("committed-x.tsv"), None);
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
        assert_eq!(t[0].records, vec![("a".to_string(), 2), ("b".to_string(), 5)]);
        assert!(t[0].well_formed.is_ok());
        assert!(t[1].well_formed.is_err());
    }
}
