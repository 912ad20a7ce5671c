//! The `corrupt` fault: damage one class of a node's files, as a torn write or bit rot
//! would, and let the engine show it notices (checksums) and recovers from an older copy.
//!
//! - `snapshot`: every task snapshot of the latest completed checkpoint (shared storage).
//! - `metadata`: that checkpoint's `_metadata`.
//! - `staged`: the newest staged (pre-committed) sink transaction of each subtask.
//! - `local`: the taskmanager's node-local snapshot copies of its newest checkpoint
//!   (task-local recovery), inside the node (on docker through the container's archive
//!   API, so it works on a stopped container too).
//!
//! `how`: `flip` complements one byte in the middle of the file's payload, `truncate`
//! cuts the payload to half its length. Both are idempotent: a byte already flipped (not
//! ASCII) is left alone, and a file already shorter than its header or trailer says is
//! not cut again. The description names every file touched.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Which files `corrupt` damages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorruptWhat {
    Snapshot,
    Metadata,
    Staged,
    Local,
}

impl CorruptWhat {
    pub fn as_str(self) -> &'static str {
        match self {
            CorruptWhat::Snapshot => "snapshot",
            CorruptWhat::Metadata => "metadata",
            CorruptWhat::Staged => "staged",
            CorruptWhat::Local => "local",
        }
    }
}

/// How `corrupt` damages them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorruptHow {
    #[default]
    Flip,
    Truncate,
}

impl CorruptHow {
    pub fn as_str(self) -> &'static str {
        match self {
            CorruptHow::Flip => "flip",
            CorruptHow::Truncate => "truncate",
        }
    }
}

/// How `chaos lint` says the files are reached.
pub fn mechanism(what: CorruptWhat) -> &'static str {
    match what {
        CorruptWhat::Local => "the node's own filesystem (docker: container archive API)",
        _ => "the run directory on the host (every node's /data)",
    }
}

/// Where a file's payload starts: after the header line of a framed snapshot file
/// (`streamd-snapshot v1 ... len=N`), else at 0; and how long the payload should be.
fn payload_bounds(bytes: &[u8]) -> (usize, Option<usize>) {
    if bytes.starts_with(b"streamd-snapshot ") {
        if let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let header = String::from_utf8_lossy(&bytes[..nl]);
            let len = header.split(' ').find_map(|p| p.strip_prefix("len=")?.parse::<usize>().ok());
            return (nl + 1, len);
        }
    }
    (0, None)
}

/// Damages `bytes` in place; returns what was done (`None`: already damaged that way).
pub fn damage(bytes: &mut Vec<u8>, how: CorruptHow) -> Option<String> {
    let (start, declared) = payload_bounds(bytes);
    let payload = bytes.len().saturating_sub(start);
    match how {
        CorruptHow::Flip => {
            if payload == 0 {
                return None;
            }
            let at = start + payload / 2;
            // Snapshots, metadata and transactions are ASCII text here: a byte with the
            // high bit set is one this fault already flipped.
            if bytes[at] >= 0x80 {
                return None;
            }
            bytes[at] = !bytes[at];
            Some(format!("flipped byte {at}"))
        }
        CorruptHow::Truncate => {
            // Whole: a framed file with its declared length, or a transaction with its
            // trailer line. Anything else was cut already.
            let whole = match declared {
                Some(len) => payload == len,
                None => bytes.ends_with(b"\n") && bytes.split(|&b| b == b'\n').rev().nth(1).is_some_and(|l| l.starts_with(b"\t#end\t")),
            };
            if !whole || payload == 0 {
                return None;
            }
            let keep = start + payload / 2;
            bytes.truncate(keep);
            Some(format!("truncated to {keep} bytes"))
        }
    }
}

/// The `chk-<n>` directories under `dir`, ascending by n.
fn checkpoint_dirs(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok()?, e.path())))
        .collect();
    v.sort();
    v
}

/// The files of shared storage (the run directory) that `what` names, for every job.
pub fn shared_targets(run_dir: &Path, what: CorruptWhat) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let jobs = |sub: &str| -> Vec<PathBuf> {
        std::fs::read_dir(run_dir.join(sub)).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
    };
    match what {
        CorruptWhat::Snapshot | CorruptWhat::Metadata => {
            for job in jobs("checkpoints") {
                let latest = checkpoint_dirs(&job).into_iter().rev().find(|(_, d)| d.join("_metadata").is_file());
                let Some((_, dir)) = latest else { continue };
                if what == CorruptWhat::Metadata {
                    out.push(dir.join("_metadata"));
                    continue;
                }
                let mut snaps: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "snap"))
                    .collect();
                snaps.sort();
                out.extend(snaps);
            }
        }
        CorruptWhat::Staged => {
            for job in jobs("output") {
                let mut subtasks: Vec<PathBuf> = std::fs::read_dir(&job).into_iter().flatten().flatten().map(|e| e.path()).collect();
                subtasks.sort();
                for sub in subtasks {
                    let newest = std::fs::read_dir(&sub)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| {
                            let name = e.file_name().to_str()?.to_string();
                            let epoch: u64 = name.strip_prefix("staged-")?.split('-').next()?.parse().ok()?;
                            Some((epoch, e.path()))
                        })
                        .max();
                    out.extend(newest.map(|(_, p)| p));
                }
            }
        }
        CorruptWhat::Local => {}
    }
    out
}

/// Of a node's local files (paths relative to its local directory), the snapshot copies
/// (`<job>/chk-<n>/<task>.snap`) of the latest completed checkpoint (`completed`, from
/// shared storage: the one a restore would use) when the node holds it, else of each
/// job's newest checkpoint.
pub fn local_targets(files: &[String], completed: Option<u64>) -> Vec<String> {
    let mut newest: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let parsed: Vec<(&str, u64, &String)> = files
        .iter()
        .filter_map(|f| {
            let mut parts = f.split('/');
            let (job, chk, name) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || !name.ends_with(".snap") {
                return None;
            }
            Some((job, chk.strip_prefix("chk-")?.parse().ok()?, f))
        })
        .collect();
    for (job, n, _) in &parsed {
        let e = newest.entry(job).or_insert(*n);
        *e = (*e).max(*n);
    }
    if let Some(c) = completed.filter(|c| parsed.iter().any(|(_, n, _)| n == c)) {
        newest.values_mut().for_each(|n| *n = c);
    }
    let mut out: Vec<String> = parsed.into_iter().filter(|(job, n, _)| newest.get(job) == Some(n)).map(|(_, _, f)| f.clone()).collect();
    out.sort();
    out
}

/// Damages the shared files `what` names under `run_dir`; returns one line per file.
pub fn corrupt_shared(run_dir: &Path, what: CorruptWhat, how: CorruptHow) -> Result<Vec<String>, String> {
    let targets = shared_targets(run_dir, what);
    if targets.is_empty() {
        return Err(format!("no {} file to corrupt under {} yet", what.as_str(), run_dir.display()));
    }
    let mut done = Vec::new();
    for path in targets {
        let mut bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let rel = path.strip_prefix(run_dir).unwrap_or(&path).display().to_string();
        match damage(&mut bytes, how) {
            Some(what_done) => {
                // In place (not a rename): the damage a disk does, not a new file.
                std::fs::write(&path, &bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
                done.push(format!("{rel}: {what_done}"));
            }
            None => done.push(format!("{rel}: already damaged")),
        }
    }
    Ok(done)
}

/// Applies `corrupt` to `targets` on `rt`; returns what was done, for the report.
pub async fn apply<R: crate::runtime::Runtime>(
    rt: &R,
    what: CorruptWhat,
    how: CorruptHow,
    targets: &[String],
) -> Result<String, crate::error::ChaosError> {
    let mut lines = Vec::new();
    for node in targets {
        if what != CorruptWhat::Local {
            let run_dir = rt.shared_dir(node).await?;
            let done = tokio::task::spawn_blocking(move || corrupt_shared(&run_dir, what, how))
                .await
                .map_err(|e| crate::error::ChaosError::Other(e.to_string()))?
                .map_err(crate::error::ChaosError::Other)?;
            lines.extend(done);
            continue;
        }
        let files = rt.read_local_files(node).await?;
        let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        let run_dir = rt.shared_dir(node).await?;
        let completed = shared_targets(&run_dir, CorruptWhat::Metadata)
            .iter()
            .filter_map(|m| m.parent()?.file_name()?.to_str()?.strip_prefix("chk-")?.parse::<u64>().ok())
            .max();
        let chosen = local_targets(&names, completed);
        if chosen.is_empty() {
            return Err(crate::error::ChaosError::Other(format!("{node} holds no local snapshot copy to corrupt yet")));
        }
        for (name, mut bytes) in files.into_iter().filter(|(n, _)| chosen.contains(n)) {
            match damage(&mut bytes, how) {
                Some(done) => {
                    rt.write_local_file(node, &name, &bytes).await?;
                    lines.push(format!("{node}:{name}: {done}"));
                }
                None => lines.push(format!("{node}:{name}: already damaged")),
            }
        }
    }
    Ok(format!("corrupted ({} {}) {}", how.as_str(), what.as_str(), lines.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_and_truncate_damage_the_payload_once() {
        let header = "streamd-snapshot v1 crc32=00000000 len=10\n";
        let mut b = format!("{header}0123456789").into_bytes();
        assert!(damage(&mut b, CorruptHow::Flip).unwrap().contains("flipped byte 47"));
        assert_eq!(b[header.len() + 5], !b'5');
        let once = b.clone();
        assert_eq!(damage(&mut b, CorruptHow::Flip), None, "idempotent");
        assert_eq!(b, once);

        let mut b = format!("{header}0123456789").into_bytes();
        assert!(damage(&mut b, CorruptHow::Truncate).is_some());
        assert_eq!(b.len(), header.len() + 5);
        assert_eq!(damage(&mut b, CorruptHow::Truncate), None, "a cut file is not cut again");

        // A transaction: whole while its trailer closes it.
        let mut t = b"a\t1\nb\t2\n\t#end\t2\n".to_vec();
        assert!(damage(&mut t, CorruptHow::Truncate).is_some());
        assert_eq!(damage(&mut t, CorruptHow::Truncate), None);
    }

    #[test]
    fn targets_are_the_latest_completed_checkpoint_and_the_newest_staged_files() {
        let d = tempfile::tempdir().unwrap();
        let chk = |n: u64, complete: bool| {
            let dir = d.path().join(format!("checkpoints/wordcount/chk-{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("count-0.snap"), "x").unwrap();
            std::fs::write(dir.join("source-0.snap"), "x").unwrap();
            if complete {
                std::fs::write(dir.join("_metadata"), "x").unwrap();
            }
        };
        chk(4, true);
        chk(9, true);
        chk(10, false); // in flight: not completed
        let snaps = shared_targets(d.path(), CorruptWhat::Snapshot);
        let names: Vec<String> = snaps.iter().map(|p| p.strip_prefix(d.path()).unwrap().display().to_string()).collect();
        assert_eq!(names, ["checkpoints/wordcount/chk-9/count-0.snap", "checkpoints/wordcount/chk-9/source-0.snap"]);
        let meta = shared_targets(d.path(), CorruptWhat::Metadata);
        assert!(meta[0].ends_with("chk-9/_metadata"));

        let out = d.path().join("output/wordcount/0");
        std::fs::create_dir_all(&out).unwrap();
        for f in ["staged-7-1.tsv", "staged-12-2.tsv", "committed-5.tsv"] {
            std::fs::write(out.join(f), "x").unwrap();
        }
        let staged = shared_targets(d.path(), CorruptWhat::Staged);
        assert_eq!(staged.len(), 1);
        assert!(staged[0].ends_with("staged-12-2.tsv"));

        let local = ["wordcount/chk-3/count-1.snap", "wordcount/chk-4/count-1.snap", "wordcount/chk-4/source-1.snap", "wordcount/chk-4/x.inprogress"];
        let local: Vec<String> = local.iter().map(|s| s.to_string()).collect();
        assert_eq!(local_targets(&local, None), ["wordcount/chk-4/count-1.snap", "wordcount/chk-4/source-1.snap"]);
        // Checkpoint 4 is in flight; 3 is the latest completed one, which a restore uses.
        assert_eq!(local_targets(&local, Some(3)), ["wordcount/chk-3/count-1.snap"]);
        assert_eq!(local_targets(&local, Some(2)), ["wordcount/chk-4/count-1.snap", "wordcount/chk-4/source-1.snap"]);
    }

    #[test]
    fn corrupting_shared_files_breaks_their_checksum_and_says_which() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("checkpoints/wordcount/chk-2");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("_metadata"), "streamd-snapshot v1 crc32=1 len=4\n{ }\n").unwrap();
        let lines = corrupt_shared(d.path(), CorruptWhat::Metadata, CorruptHow::Flip).unwrap();
        assert_eq!(lines, ["checkpoints/wordcount/chk-2/_metadata: flipped byte 36"]);
        let again = corrupt_shared(d.path(), CorruptWhat::Metadata, CorruptHow::Flip).unwrap();
        assert!(again[0].ends_with("already damaged"));
        let e = corrupt_shared(d.path(), CorruptWhat::Staged, CorruptHow::Flip).unwrap_err();
        assert!(e.contains("no staged file"), "{e}");
    }
}
