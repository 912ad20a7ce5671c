//! The undo journal: `<run_dir>/netfault-journal.jsonl`, one JSON record per line.
//!
//! An `open` record is appended (and synced) *before* a rule is applied, holding the exact
//! undo commands; a `done` record closes it. Whatever crashes in between, the journal
//! knows what may be left in which namespace, so `undo_all` can clean up after a `chaos`
//! killed with SIGKILL. A re-applied fault (after its container restarted) appends a new
//! `open` record with the same id, which supersedes the old one.
//!
//! Disk faults are journaled here too (`disk` records): their undo is removing the fault
//! from the node's passthrough control file (`crate::diskfault`), and a passthrough that
//! is stopped ends every fault it held, so `chaos down` closes them as `ended`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::rules::NetemParams;
use super::NetfaultError;

/// File name of the journal inside a run directory.
pub const FILE_NAME: &str = "netfault-journal.jsonl";

/// What a journal entry does to its namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Spec {
    /// Degrade the node's network (see [`super::rules`] for the direction).
    Netem { params: NetemParams },
    /// Drop what arrives from these nodes (one member's share of a partition); their
    /// addresses are resolved at apply time.
    Block { peers: Vec<String> },
}

/// The rules of one fault in one container's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique per journal: `<fault>/<node>`.
    pub id: String,
    /// The fault (handle) this entry belongs to.
    pub fault: String,
    pub cluster: String,
    /// The cluster network the addresses are on.
    pub network: String,
    /// The sidecar image (also used to undo).
    pub image: String,
    pub node: String,
    pub container_id: String,
    pub container_name: String,
    /// The target's `State.StartedAt` when the rules were applied: a different value later
    /// means it restarted, and its namespace (with the rules) was recreated empty.
    pub started_at: String,
    /// Interface the rules are on.
    pub iface: String,
    pub spec: Spec,
    /// Peer addresses the rules name (block entries), node -> IPv4.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_ips: BTreeMap<String, String>,
    /// The delayer sidecar that must stay up while the fault lasts.
    pub sidecar: Option<String>,
    /// Commands run in the namespace to apply.
    pub apply: Vec<Vec<String>>,
    /// Commands run in the namespace to undo (then the sidecar is removed).
    pub undo: Vec<Vec<String>>,
    /// Wall clock of the apply, milliseconds since the Unix epoch.
    pub applied_unix_ms: u64,
}

/// How an entry was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Closed {
    /// Undo commands ran (or found nothing to remove).
    Undone,
    /// The target restarted or went away: its rules vanished with its namespace.
    Ended,
    /// Applying failed; whatever had been applied was undone.
    Failed,
}

/// A disk fault on one node's passthrough.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskEntry {
    /// The fault's id in the node's control file (unique per run).
    pub id: String,
    pub node: String,
    pub fault: crate::diskfault::DiskFault,
    /// Wall clock of the apply, milliseconds since the Unix epoch.
    pub applied_unix_ms: u64,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Record {
    Open(Box<Entry>),
    /// A disk fault, announced before it is written to the node's control file.
    Disk(Box<DiskEntry>),
    Done {
        id: String,
        how: Closed,
        at_unix_ms: u64,
    },
}

/// A run's journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal of the run in `run_dir`.
    pub fn in_run_dir(run_dir: &Path) -> Journal {
        Journal {
            path: run_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and syncs it to disk before returning: the rule it announces may be
    /// applied right after, and a crash must not lose the announcement.
    pub fn append(&self, record: &Record) -> Result<(), NetfaultError> {
        let io =
            |e: std::io::Error| NetfaultError::Journal(format!("{}: {e}", self.path.display()));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut line = serde_json::to_vec(record)
            .map_err(|e| NetfaultError::Journal(format!("encoding a record: {e}")))?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        // One write of the whole line: O_APPEND keeps concurrent writers' lines apart.
        f.write_all(&line).map_err(io)?;
        f.sync_data().map_err(io)
    }

    /// Records that entry `id` is closed.
    pub fn close(&self, id: &str, how: Closed) -> Result<(), NetfaultError> {
        self.append(&Record::Done {
            id: id.to_string(),
            how,
            at_unix_ms: now_unix_ms(),
        })
    }

    /// Every network entry opened and not closed, latest `open` record per id, in opening
    /// order. A missing journal has none; a torn last line (crash mid-write) is skipped.
    pub fn open_entries(&self) -> Result<Vec<Entry>, NetfaultError> {
        Ok(self
            .open_records()?
            .into_iter()
            .filter_map(|r| match r {
                Record::Open(e) => Some(*e),
                _ => None,
            })
            .collect())
    }

    /// Every disk fault applied and not closed, in applying order.
    pub fn open_disk_entries(&self) -> Result<Vec<DiskEntry>, NetfaultError> {
        Ok(self
            .open_records()?
            .into_iter()
            .filter_map(|r| match r {
                Record::Disk(e) => Some(*e),
                _ => None,
            })
            .collect())
    }

    /// The open records (network and disk), latest per id, in opening order.
    fn open_records(&self) -> Result<Vec<Record>, NetfaultError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(NetfaultError::Journal(format!(
                    "{}: {e}",
                    self.path.display()
                )))
            }
        };
        let mut order: Vec<String> = Vec::new();
        let mut open: BTreeMap<String, Record> = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(line) {
                Ok(Record::Done { id, .. }) => {
                    open.remove(&id);
                }
                Ok(r) => {
                    let id = match &r {
                        Record::Open(e) => e.id.clone(),
                        Record::Disk(e) => e.id.clone(),
                        Record::Done { .. } => unreachable!("matched above"),
                    };
                    if !open.contains_key(&id) {
                        order.push(id.clone());
                    }
                    open.insert(id, r);
                }
                Err(e) => tracing::warn!(
                    "{}:{}: skipping an unreadable journal line: {e}",
                    self.path.display(),
                    n + 1
                ),
            }
        }
        // An id closed and opened again is listed twice in `order`: the first takes it.
        Ok(order
            .into_iter()
            .filter_map(|id| open.remove(&id))
            .collect())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, started_at: &str) -> Entry {
        Entry {
            id: id.into(),
            fault: "f".into(),
            cluster: "c".into(),
            network: "c-internal".into(),
            image: "chaos-netfault:x".into(),
            node: "taskmanager-1".into(),
            container_id: "abc".into(),
            container_name: "c-taskmanager-1".into(),
            started_at: started_at.into(),
            iface: "eth0".into(),
            spec: Spec::Block {
                peers: vec!["jobmanager-1".into()],
            },
            peer_ips: BTreeMap::from([("jobmanager-1".into(), "10.0.0.2".into())]),
            sidecar: None,
            apply: vec![vec!["iptables".into(), "-I".into()]],
            undo: vec![vec!["iptables".into(), "-D".into()]],
            applied_unix_ms: 1,
        }
    }

    #[test]
    fn open_entries_are_those_not_closed_latest_record_wins() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_run_dir(dir.path());
        assert!(j.open_entries().unwrap().is_empty());
        j.append(&Record::Open(Box::new(entry("a", "t1")))).unwrap();
        j.append(&Record::Open(Box::new(entry("b", "t1")))).unwrap();
        j.append(&Record::Open(Box::new(entry("a", "t2")))).unwrap();
        j.close("b", Closed::Undone).unwrap();
        let open = j.open_entries().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].started_at, "t2");
        j.close("a", Closed::Ended).unwrap();
        assert!(j.open_entries().unwrap().is_empty());
    }

    #[test]
    fn disk_faults_are_journaled_beside_network_rules() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_run_dir(dir.path());
        let disk = |id: &str| DiskEntry {
            id: id.into(),
            node: "taskmanager-2".into(),
            fault: crate::diskfault::DiskFault {
                id: id.into(),
                kind: crate::diskfault::DiskKind::FullAfter { bytes: 1024 },
                ops: vec![],
                path: "checkpoints".into(),
            },
            applied_unix_ms: 2,
        };
        j.append(&Record::Open(Box::new(entry("net", "t1")))).unwrap();
        j.append(&Record::Disk(Box::new(disk("d1")))).unwrap();
        j.append(&Record::Disk(Box::new(disk("d2")))).unwrap();
        j.close("d1", Closed::Undone).unwrap();
        assert_eq!(j.open_entries().unwrap().len(), 1, "disk records are not network entries");
        let open = j.open_disk_entries().unwrap();
        assert_eq!(open.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["d2"]);
        assert_eq!(open[0].fault.path, "checkpoints");
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(j.path()).unwrap().lines().nth(1).unwrap()).unwrap();
        assert_eq!((line["op"].as_str(), line["fault"]["kind"].as_str()), (Some("disk"), Some("full_after")));
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_run_dir(dir.path());
        j.append(&Record::Open(Box::new(entry("a", "t1")))).unwrap();
        let mut f = OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(br#"{"op":"done","id":"a","ho"#).unwrap();
        assert_eq!(j.open_entries().unwrap().len(), 1);
    }

    #[test]
    fn records_are_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_run_dir(dir.path());
        j.append(&Record::Open(Box::new(entry("a", "t1")))).unwrap();
        j.close("a", Closed::Undone).unwrap();
        let text = std::fs::read_to_string(j.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["op"], "open");
        assert_eq!(lines[0]["spec"]["kind"], "block");
        assert_eq!(lines[0]["undo"][0][1], "-D");
        assert_eq!(lines[1]["op"], "done");
        assert_eq!(lines[1]["how"], "undone");
    }
}
