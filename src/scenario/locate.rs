//! Placing an error in a scenario file: the context every check carries ([`Ctx`]: the file
//! and the position of each node), key paths, and the messages several checks share. Both
//! the scenario-level checks (`validate`) and the fault checks (`faults`) build on it.

use super::plan::ClusterPlan;
use super::pos::{render_path, Pos, PosIndex, Seg};
use super::ScenarioError;
use crate::nodes::canonical as canonical_name;
use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

/// Builds a key path: `keypath!["faults", i, "target"]`.
macro_rules! keypath {
    ($($s:expr),* $(,)?) => { [$($crate::scenario::pos::Seg::from($s)),*] };
}
pub(super) use keypath;

/// What errors need: the file to name and where each node sits.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub idx: PosIndex,
}

impl Ctx<'_> {
    pub fn err(&self, pos: Pos, path: &[Seg], msg: impl Display) -> ScenarioError {
        let p = render_path(path);
        let message = if p.is_empty() { msg.to_string() } else { format!("{p}: {msg}") };
        ScenarioError { file: self.file.to_path_buf(), line: pos.line, column: pos.column, message }
    }
    /// An error about the value at `path` (or the mapping lacking it).
    pub fn at_value(&self, path: &[Seg], msg: impl Display) -> ScenarioError {
        self.err(self.idx.value(path), path, msg)
    }
    /// An error about the key that ends `path` (a field that does not belong there).
    pub fn at_key(&self, path: &[Seg], msg: impl Display) -> ScenarioError {
        self.err(self.idx.key(path), path, msg)
    }
}

/// Turns a serde_yaml error into a located one. serde_yaml appends ` at line L column C` to
/// its messages; the position goes into the fields instead.
pub(super) fn from_serde(file: &Path, e: &serde_yaml::Error, idx: &PosIndex) -> ScenarioError {
    let mut message = e.to_string();
    let (mut line, mut column) = match e.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(at) = message.find(&suffix) {
                message.replace_range(at..at + suffix.len(), "");
            }
            (loc.line(), loc.column())
        }
        None => (1, 1),
    };
    // serde names Rust types; say what they mean in YAML.
    for (rust, yaml) in [("expected u32", "expected a whole number (0 or more)"), ("expected u64", "expected a whole number (0 or more)"), ("expected f64", "expected a number"), ("expected a boolean", "expected true or false")] {
        if message.ends_with(rust) {
            message.truncate(message.len() - rust.len());
            message.push_str(yaml);
        }
    }
    // serde reports a duplicate key at its mapping (or nowhere): point at the repeat.
    for marker in ["duplicate field `", "duplicate entry `"] {
        if let Some(start) = message.find(marker).map(|i| i + marker.len()) {
            if let Some(pos) = message[start..].find('`').and_then(|end| idx.duplicate_key(&message[start..start + end])) {
                (line, column) = (pos.line, pos.column);
                message.push_str(": expected each key once");
            }
        }
    }
    ScenarioError { file: file.to_path_buf(), line, column, message }
}

/// The message for a name that is not a node of `cluster`; `extra` lists further accepted
/// forms (`leader`, `{ role, pick }`) where they apply.
pub(super) fn unknown_node(given: &str, cluster: &ClusterPlan, extra: &str) -> String {
    let why = match canonical_name(given) {
        Some(c) if c.starts_with("taskmanager-") => format!(
            " (`{c}`): the cluster has {} taskmanager{}",
            cluster.taskmanagers,
            if cluster.taskmanagers == 1 { "" } else { "s" }
        ),
        Some(c) if c.starts_with("jobmanager-") => format!(
            " (`{c}`): the cluster has {} jobmanager{}",
            cluster.jobmanagers,
            if cluster.jobmanagers == 1 { "" } else { "s" }
        ),
        Some(c) if c == "etcd-1" || c == "zookeeper-1" => format!(
            " (`{c}`): {c} exists only with jobmanagers > 1 on {}",
            if c == "etcd-1" { "streamd" } else { "flink" }
        ),
        Some(c) => format!(" (`{c}`): no such node"),
        None => String::new(),
    };
    format!("unknown node `{given}`{why}: expected one of {}, or an alias (tm1, jm1){extra}", cluster.describe_nodes())
}

pub(super) fn fmt_d(d: Duration) -> String {
    streamd_contract::duration::format_duration(d)
}
