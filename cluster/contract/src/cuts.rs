//! The consistent cuts of a job's completed checkpoints: `checkpoints/<job>/cuts.tsv` in
//! the data directory, one line appended by the jobmanager per completed checkpoint (after
//! its commit point: `_metadata` written and, with HA, its pointer published), kept when
//! checkpoints are pruned. A checkpoint re-taken after a restore of an older one (the
//! engine's catch-up, at the same cut) keeps its one line. A line is `<checkpoint><TAB><position of source 0><TAB>…`, where
//! a source subtask's position is the number of lines of its partition (the lines whose
//! index `% p ==` its index) it had read when it injected the checkpoint's barrier.
//!
//! The verdict replays the input up to each cut and compares with what the sinks committed
//! up to that checkpoint (see `chaos`'s verdict). A torn last line (the jobmanager died in
//! the middle of an append) has no newline and is ignored.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A completed checkpoint and the source positions it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub checkpoint: u64,
    /// Lines consumed per source subtask, indexed by subtask.
    pub positions: Vec<u64>,
}

/// A cuts file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CutsError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}:{line}: {reason}")]
    Malformed { path: String, line: usize, reason: String },
}

/// `<data>/checkpoints/<job>/cuts.tsv`.
pub fn path(data: &Path, job: &str) -> PathBuf {
    data.join("checkpoints").join(job).join("cuts.tsv")
}

/// Appends `cut` as one line, with one write, and makes it durable: the line by the
/// file's fsync, and the file's name, when this append created it, by its directory's
/// fsync. Without the latter a power loss of the jobmanager took the whole file with it
/// (its directory is made, and fsynced, by whoever writes the first snapshot, not by
/// the jobmanager), and with it every cut before.
pub fn append(path: &Path, cut: &Cut) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::output::create_dir_all_durable(dir)?;
    let mut line = cut.checkpoint.to_string();
    for p in &cut.positions {
        line.push('\t');
        line.push_str(&p.to_string());
    }
    line.push('\n');
    let (mut f, created) = match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (std::fs::OpenOptions::new().create(true).append(true).open(path)?, true),
        Err(e) => return Err(e),
    };
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    if created {
        crate::output::sync_dir(dir)?;
    }
    Ok(())
}

/// Every cut in `path`, in file order; no file means no cuts.
pub fn read(path: &Path) -> Result<Vec<Cut>, CutsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CutsError::Io { path: path.display().to_string(), source }),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return Ok(Vec::new()),
    };
    let mut cuts = Vec::new();
    for (i, line) in complete.split('\n').enumerate() {
        let malformed = |reason: String| CutsError::Malformed { path: path.display().to_string(), line: i + 1, reason };
        let mut fields = line.split('\t').map(|f| f.parse::<u64>().map_err(|_| malformed(format!("{f:?} is not a number"))));
        let checkpoint = fields.next().ok_or_else(|| malformed("empty line".into()))??;
        let positions = fields.collect::<Result<Vec<u64>, _>>()?;
        if positions.is_empty() {
            return Err(malformed("no source positions".into()));
        }
        cuts.push(Cut { checkpoint, positions });
    }
    Ok(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_round_trip_and_a_torn_last_line_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path(), "j");
        assert_eq!(read(&p).unwrap(), vec![]);
        let a = Cut { checkpoint: 3, positions: vec![10, 12] };
        let b = Cut { checkpoint: 5, positions: vec![20, 21] };
        append(&p, &a).unwrap();
        append(&p, &b).unwrap();
        assert_eq!(read(&p).unwrap(), vec![a.clone(), b.clone()]);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"7\t30\t3").unwrap(); // the jobmanager died mid-append
        assert_eq!(read(&p).unwrap(), vec![a, b]);
        std::fs::write(&p, "3\tx\n").unwrap();
        assert!(matches!(read(&p), Err(CutsError::Malformed { line: 1, .. })));
        std::fs::write(&p, "3\n").unwrap();
        assert!(matches!(read(&p), Err(CutsError::Malformed { line: 1, .. })));
    }

    /// Only a missing file means no cuts: one that cannot be read is an error, or the
    /// verdict's cut checks would pass with nothing to check.
    #[test]
    fn an_unreadable_cuts_file_is_an_error_not_no_cuts() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path(), "j");
        std::fs::create_dir_all(&p).unwrap(); // a directory where the file should be
        assert!(matches!(read(&p), Err(CutsError::Io { .. })));
    }
}
