//! What a node's disk does wrong right now: the control file `chaos` writes and the
//! passthrough daemon reads (pure: parsing, matching, the decision for one operation).
//!
//! The control file holds every active disk fault of one node. `chaos` rewrites it whole
//! (write to a temporary file, rename), the daemon re-reads it when it changed, so a fault
//! is applied or undone by one atomic rename, and a daemon restarted later finds the same
//! faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The filesystem operations a fault can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// open, create, opendir.
    Open,
    Read,
    Write,
    /// fsync of a file or a directory.
    Fsync,
    Rename,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Open, Op::Read, Op::Write, Op::Fsync, Op::Rename];

    pub fn name(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Fsync => "fsync",
            Op::Rename => "rename",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// The errors a fault can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Errno {
    Eio,
    Enospc,
    Erofs,
}

impl Errno {
    pub const ALL: [Errno; 3] = [Errno::Eio, Errno::Enospc, Errno::Erofs];

    pub fn name(self) -> &'static str {
        match self {
            Errno::Eio => "EIO",
            Errno::Enospc => "ENOSPC",
            Errno::Erofs => "EROFS",
        }
    }

    pub fn parse(s: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.name() == s)
    }

    pub fn raw(self) -> i32 {
        match self {
            Errno::Eio => libc::EIO,
            Errno::Enospc => libc::ENOSPC,
            Errno::Erofs => libc::EROFS,
        }
    }
}

/// One kind of disk fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DiskKind {
    /// Every matching operation waits `delay` +- `jitter` (uniform) before it runs.
    Delay {
        #[serde(with = "ms")]
        delay: Duration,
        #[serde(with = "ms", default)]
        jitter: Duration,
    },
    /// A matching operation fails with `errno` with this probability (0..=1), without
    /// reaching the backing file.
    Error { errno: Errno, probability: f64 },
    /// Writes succeed until `bytes` have been written (since the fault began), then every
    /// write fails with ENOSPC.
    FullAfter { bytes: u64 },
}

/// A disk fault as the daemon applies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskFault {
    /// Unique per node: the undo removes the fault with this id.
    pub id: String,
    #[serde(flatten)]
    pub kind: DiskKind,
    /// The operations it acts on; empty: all of them (`full_after`: writes).
    #[serde(default)]
    pub ops: Vec<Op>,
    /// Only paths under this prefix of the node's /data (e.g. `checkpoints`); empty: all.
    #[serde(default)]
    pub path: String,
}

/// A remote-storage model (`cluster.checkpoint_storage`): every operation under `path`
/// pays `latency`, and reads and writes are limited to `bandwidth` bytes per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageModel {
    pub path: String,
    #[serde(with = "ms")]
    pub latency: Duration,
    /// Bytes per second; 0: unlimited.
    #[serde(default)]
    pub bandwidth: u64,
}

impl StorageModel {
    /// For a person: `remote-like, 20ms per operation, 100 MB/s under /data/checkpoints`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} per operation", streamd_contract::duration::format_duration(self.latency))];
        if self.bandwidth > 0 {
            let mb = self.bandwidth as f64 / 1e6;
            parts.push(if mb >= 1.0 { format!("{mb} MB/s") } else { format!("{} kB/s", self.bandwidth as f64 / 1e3) });
        }
        format!("remote-like, {} under /data/{}", parts.join(", "), self.path.trim_matches('/'))
    }
}

/// The control file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Control {
    #[serde(default)]
    pub faults: Vec<DiskFault>,
    #[serde(default)]
    pub storage: Option<StorageModel>,
    /// Keep the undo log of what the node has not fsynced (see `unsynced`): set from the
    /// start for a run that may lose power, so every change since the node started is
    /// known. Off, an operation pays one atomic load for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub track_unsynced: bool,
    /// A power-loss request: its id, acknowledged in the stats' `power_losses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_loss: Option<String>,
}

/// What the daemon does to one operation before (or instead of) running it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    /// Fail with this errno instead of running the operation; the fault id is for the
    /// count of injected errors.
    pub fail: Option<(Errno, String)>,
}

/// The directory of /data a disk fault acts under, from what the user wrote (`checkpoints`,
/// `/data/output/wordcount`; empty: all of /data), relative and without slashes at either
/// end. Refused, with what was expected: a path that leaves /data, and the job's input,
/// which taskmanagers read beside the passthrough (it stands for the source system's data,
/// not the node's storage), so a fault there would change nothing.
pub fn fault_path(raw: &str) -> Result<String, String> {
    if raw.split('/').any(|c| c == "..") {
        return Err(format!("`{raw}` leaves /data: expected a directory under /data like `checkpoints`"));
    }
    let path = raw.trim_start_matches("/data").trim_matches('/').to_string();
    if under(&path, "input") {
        return Err(format!(
            "`{raw}` is the job's input, which is read beside the node's storage, not through it: \
             expected a directory of the node's storage like `checkpoints` or `output`"
        ));
    }
    Ok(path)
}

/// Whether `rel` (a path relative to the node's /data, no leading slash) is under `prefix`.
pub fn under(rel: &str, prefix: &str) -> bool {
    let p = prefix.trim_matches('/');
    p.is_empty() || rel == p || rel.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
}

impl DiskFault {
    fn matches(&self, op: Op, rel: &str) -> bool {
        let ops_ok = if self.ops.is_empty() {
            !matches!(self.kind, DiskKind::FullAfter { .. }) || op == Op::Write
        } else {
            self.ops.contains(&op)
        };
        ops_ok && under(rel, &self.path)
    }
}

impl Control {
    /// The decision for operation `op` on `rel` moving `bytes`. `roll` draws uniformly in
    /// [0, 1) (injected so tests are exact); `written` is how many bytes a `full_after`
    /// fault has seen so far, by fault id.
    pub fn decide(
        &self,
        op: Op,
        rel: &str,
        bytes: u64,
        roll: &mut dyn FnMut() -> f64,
        written: &dyn Fn(&str) -> u64,
    ) -> Decision {
        let mut d = Decision::default();
        if let Some(s) = &self.storage {
            if under(rel, &s.path) {
                d.delay += s.latency;
                if s.bandwidth > 0 && matches!(op, Op::Read | Op::Write) {
                    d.delay += Duration::from_secs_f64(bytes as f64 / s.bandwidth as f64);
                }
            }
        }
        for f in self.faults.iter().filter(|f| f.matches(op, rel)) {
            match &f.kind {
                DiskKind::Delay { delay, jitter } => {
                    let j = jitter.as_secs_f64() * (2.0 * roll() - 1.0);
                    d.delay += Duration::from_secs_f64((delay.as_secs_f64() + j).max(0.0));
                }
                DiskKind::Error { errno, probability } => {
                    if d.fail.is_none() && roll() < *probability {
                        d.fail = Some((*errno, f.id.clone()));
                    }
                }
                DiskKind::FullAfter { bytes: limit } => {
                    if d.fail.is_none() && written(&f.id) + bytes > *limit {
                        d.fail = Some((Errno::Enospc, f.id.clone()));
                    }
                }
            }
        }
        d
    }
}

/// `chaos disk --error`: `OPS=ERRNO[:PERCENT]`, e.g. `fsync=EIO:10%`, `write,fsync=ENOSPC`
/// (100% when the percentage is left out).
pub fn parse_error_spec(s: &str) -> Result<(Vec<Op>, Errno, f64), String> {
    let bad = |why: String| format!("invalid --error `{s}`: {why}; expected OPS=ERRNO[:PERCENT], e.g. fsync=EIO:10%");
    let (ops, rest) = s.split_once('=').ok_or_else(|| bad("no `=`".into()))?;
    let mut list = Vec::new();
    for o in ops.split(',').map(str::trim) {
        let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
        list.push(Op::parse(o).ok_or_else(|| bad(format!("unknown operation `{o}` (one of {})", names.join(", "))))?);
    }
    let (errno, p) = match rest.split_once(':') {
        Some((e, p)) => (e, Some(p)),
        None => (rest, None),
    };
    let errno = Errno::parse(errno.trim()).ok_or_else(|| bad(format!("unknown error `{errno}` (one of EIO, ENOSPC, EROFS)")))?;
    let probability = match p {
        None => 1.0,
        Some(p) => {
            let t = p.trim();
            let v: f64 = t.strip_suffix('%').unwrap_or(t).trim().parse().map_err(|_| bad(format!("`{p}` is not a percentage")))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(bad(format!("`{p}` is not within 0% to 100%")));
            }
            v / 100.0
        }
    };
    Ok((list, errno, probability))
}

/// Durations as integer milliseconds in the control file.
mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64(v.max(0.0) / 1000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_path_is_a_directory_of_the_nodes_storage() {
        assert_eq!(fault_path("").unwrap(), "");
        assert_eq!(fault_path("/data/checkpoints/").unwrap(), "checkpoints");
        assert_eq!(fault_path("output/wordcount").unwrap(), "output/wordcount");
        assert_eq!(fault_path("inputs").unwrap(), "inputs", "only the input directory itself is refused");
        assert!(fault_path("../etc").unwrap_err().contains("leaves /data"));
        for input in ["input", "/data/input/", "input/words.txt"] {
            assert!(fault_path(input).unwrap_err().contains("the job's input"), "{input}");
        }
    }

    fn fault(kind: DiskKind, ops: &[Op], path: &str) -> DiskFault {
        DiskFault { id: "f1".into(), kind, ops: ops.to_vec(), path: path.into() }
    }

    fn decide(c: &Control, op: Op, rel: &str, bytes: u64, roll: f64, written: u64) -> Decision {
        c.decide(op, rel, bytes, &mut || roll, &|_| written)
    }

    #[test]
    fn prefixes_match_whole_path_components() {
        assert!(under("checkpoints/chk-1/x", "checkpoints"));
        assert!(under("checkpoints", "/checkpoints/"));
        assert!(!under("checkpoints2/x", "checkpoints"));
        assert!(under("anything", ""));
    }

    #[test]
    fn a_delay_applies_with_its_jitter_to_its_operations_only() {
        let c = Control {
            faults: vec![fault(
                DiskKind::Delay { delay: Duration::from_millis(20), jitter: Duration::from_millis(10) },
                &[Op::Write, Op::Fsync],
                "",
            )],
            storage: None,
            ..Default::default()
        };
        assert_eq!(decide(&c, Op::Write, "a", 1, 0.5, 0).delay, Duration::from_millis(20));
        assert_eq!(decide(&c, Op::Fsync, "a", 0, 1.0, 0).delay, Duration::from_millis(30));
        assert_eq!(decide(&c, Op::Write, "a", 1, 0.0, 0).delay, Duration::from_millis(10));
        assert_eq!(decide(&c, Op::Read, "a", 1, 0.5, 0), Decision::default());
    }

    #[test]
    fn an_error_fires_with_its_probability_on_its_path() {
        let c = Control {
            faults: vec![fault(DiskKind::Error { errno: Errno::Eio, probability: 0.1 }, &[Op::Fsync], "checkpoints")],
            storage: None,
            ..Default::default()
        };
        assert_eq!(decide(&c, Op::Fsync, "checkpoints/chk-3/op-0", 0, 0.05, 0).fail, Some((Errno::Eio, "f1".into())));
        assert_eq!(decide(&c, Op::Fsync, "checkpoints/chk-3/op-0", 0, 0.5, 0).fail, None);
        assert_eq!(decide(&c, Op::Fsync, "output/part-0", 0, 0.05, 0).fail, None, "outside the path");
    }

    #[test]
    fn full_after_refuses_the_write_that_would_cross_the_limit() {
        let c = Control { faults: vec![fault(DiskKind::FullAfter { bytes: 100 }, &[], "")], storage: None, ..Default::default() };
        assert_eq!(decide(&c, Op::Write, "a", 40, 0.0, 60).fail, None);
        assert_eq!(decide(&c, Op::Write, "a", 41, 0.0, 60).fail, Some((Errno::Enospc, "f1".into())));
        assert_eq!(decide(&c, Op::Fsync, "a", 0, 0.0, 1000).fail, None, "only writes fill a disk");
    }

    #[test]
    fn the_storage_model_charges_latency_and_bandwidth_under_its_path() {
        let c = Control {
            faults: vec![],
            storage: Some(StorageModel { path: "checkpoints".into(), latency: Duration::from_millis(5), bandwidth: 1_000_000 }),
            ..Default::default()
        };
        assert_eq!(decide(&c, Op::Write, "checkpoints/x", 500_000, 0.0, 0).delay, Duration::from_millis(505));
        assert_eq!(decide(&c, Op::Open, "checkpoints/x", 0, 0.0, 0).delay, Duration::from_millis(5));
        assert_eq!(decide(&c, Op::Write, "output/x", 500_000, 0.0, 0).delay, Duration::ZERO);
    }

    #[test]
    fn error_specs_of_the_command_line() {
        assert_eq!(parse_error_spec("fsync=EIO:10%").unwrap(), (vec![Op::Fsync], Errno::Eio, 0.1));
        assert_eq!(parse_error_spec("write,fsync=ENOSPC").unwrap(), (vec![Op::Write, Op::Fsync], Errno::Enospc, 1.0));
        assert!(parse_error_spec("fsync").unwrap_err().contains("no `=`"));
        assert!(parse_error_spec("sync=EIO").unwrap_err().contains("unknown operation `sync`"));
        assert!(parse_error_spec("fsync=EPERM").unwrap_err().contains("unknown error `EPERM`"));
        assert!(parse_error_spec("fsync=EIO:150%").unwrap_err().contains("within 0% to 100%"));
    }

    #[test]
    fn the_control_file_round_trips() {
        let c = Control {
            faults: vec![fault(DiskKind::Delay { delay: Duration::from_millis(20), jitter: Duration::ZERO }, &[Op::Read], "")],
            storage: None,
            ..Default::default()
        };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""kind":"delay""#), "{text}");
        assert_eq!(serde_json::from_str::<Control>(&text).unwrap(), c);
    }
}
