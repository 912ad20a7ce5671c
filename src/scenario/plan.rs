//! The validated scenario: what the executor runs, `chaos lint` prints, and the report
//! records. Built by `validate` from the raw file; every field is already checked.

use crate::runtime::{ClusterDef, NodeDef, Resources, Role};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use streamd_contract::duration::serde_str as dur;
use streamd_contract::spec::JobSpec;

/// A scenario, validated and resolved: picks are concrete node names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// `name:` (the file stem when absent).
    pub name: String,
    pub description: String,
    /// The scenario file, as given.
    pub file: PathBuf,
    /// The seed in effect: `--seed` when given, else `seed:` (0 when absent). It drives the
    /// picks and the generated input; printed in the report so a run can be repeated.
    pub seed: u64,
    pub cluster: ClusterPlan,
    /// The job, ready to be written to `/data/job.yaml`.
    pub job: JobSpec,
    /// For `input.file`: the absolute host path to copy to `<run dir>/input/<basename>`.
    pub input_source: Option<PathBuf>,
    /// With `input.socket`: what chaos feeds the line server (`generate` or `file`) and at
    /// what rate; `job.input` is then the socket. `None`: the job reads the input itself.
    pub feed: Option<streamd_contract::spec::InputSpec>,
    /// Faults in file order; a `repeat` expands in place into one fault per occurrence.
    pub faults: Vec<PlannedFault>,
    pub expect: Expectations,
    /// Flink only (`cluster.engine: flink`): what configures Flink beyond the job.
    pub flink: Option<FlinkPlan>,
    /// Things that are legal but probably not meant (e.g. too few slots after a kill),
    /// for `chaos lint` to show.
    pub warnings: Vec<String>,
}

/// What a Flink run is configured with beyond the job spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FlinkPlan {
    /// `job.heartbeat` when the scenario gives it; otherwise Flink keeps its own defaults
    /// (10 s / 50 s), which is what a Flink user runs with.
    pub heartbeat: Option<streamd_contract::spec::HeartbeatSpec>,
    /// `flink.config`, in file order.
    pub config: Vec<(String, String)>,
}

/// The shape of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterPlan {
    /// The engine the job runs on.
    pub engine: crate::engine::Engine,
    pub jobmanagers: u32,
    pub taskmanagers: u32,
    /// Slots per taskmanager.
    pub slots: u32,
    /// cgroup limits by canonical node name (only nodes that have some).
    pub resources: BTreeMap<String, Resources>,
    /// A line server node (`lines-1`): the job reads `input.socket`.
    pub lines: bool,
    /// `cluster.checkpoint_storage`: the shared checkpoint directory behaves like remote
    /// storage (latency per operation, bandwidth), through every node's disk passthrough.
    pub checkpoint_storage: Option<crate::diskfault::StorageModel>,
}

impl ClusterPlan {
    /// `jobmanagers > 1`: leader election through a coordinator node (`etcd-1` for
    /// streamd, `zookeeper-1` for Flink).
    pub fn ha(&self) -> bool {
        self.jobmanagers > 1
    }

    /// The coordinator node with HA, else none.
    pub fn coordinator(&self) -> Option<&'static str> {
        self.ha().then(|| self.engine.coordinator())
    }

    /// Every node's canonical name: the coordinator (HA only), `jobmanager-1..`,
    /// `taskmanager-1..`.
    pub fn node_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(c) = self.coordinator() {
            names.push(c.to_string());
        }
        names.extend((1..=self.jobmanagers).map(|i| format!("jobmanager-{i}")));
        names.extend((1..=self.taskmanagers).map(|i| format!("taskmanager-{i}")));
        if self.lines {
            names.push(streamd_contract::lines::NODE.to_string());
        }
        names
    }

    /// Whether `canonical` names a node of this cluster.
    pub fn has_node(&self, canonical: &str) -> bool {
        let num = |prefix: &str| canonical.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = num("taskmanager-") {
            return (1..=self.taskmanagers).contains(&n);
        }
        if let Some(n) = num("jobmanager-") {
            return (1..=self.jobmanagers).contains(&n);
        }
        self.coordinator() == Some(canonical) || (self.lines && canonical == streamd_contract::lines::NODE)
    }

    /// Slots of all taskmanagers.
    pub fn total_slots(&self) -> u32 {
        self.taskmanagers.saturating_mul(self.slots)
    }

    /// "jobmanager-1, taskmanager-1..3" (and the coordinator with HA), for messages.
    pub fn describe_nodes(&self) -> String {
        let range = |role: &str, n: u32| if n == 1 { format!("{role}-1") } else { format!("{role}-1..{n}") };
        let mut parts = vec![range("jobmanager", self.jobmanagers), range("taskmanager", self.taskmanagers)];
        if let Some(c) = self.coordinator() {
            parts.push(c.into());
        }
        if self.lines {
            parts.push(streamd_contract::lines::NODE.into());
        }
        parts.join(", ")
    }
}

/// One fault to inject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedFault {
    /// Index of the fault in the file's `faults:` list (`faults[index]`).
    pub index: usize,
    /// Which occurrence of a `repeat` this is (0 for the first, and for unrepeated faults).
    pub repetition: u32,
    /// Line of the fault in the scenario file.
    pub line: usize,
    pub trigger: Trigger,
    pub action: Action,
    /// Concrete nodes (or the leader, resolved when the fault fires). For `partition`, every
    /// node of every group.
    pub targets: Vec<Target>,
    /// `for:`: the fault is undone this long after it was applied (unpause, remove the
    /// netem rules, heal the partition). `None`: it lasts until the run ends.
    #[serde(with = "streamd_contract::duration::serde_opt")]
    pub undo_after: Option<Duration>,
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// This long after the job first reached RUNNING.
    At(#[serde(with = "dur")] Duration),
    /// As soon as the jobmanager reports checkpoint N completed.
    Checkpoint(u64),
}

impl Trigger {
    /// A guess of when the trigger fires, for ordering and for `chaos lint`: checkpoint N is
    /// taken to complete at N x `checkpoint_interval` (faults and restarts delay it; an
    /// adaptive interval counts as its `min`, so the guess is the earliest).
    pub fn estimate(&self, checkpoint_interval: Duration) -> Duration {
        match *self {
            Trigger::At(d) => d,
            Trigger::Checkpoint(n) => checkpoint_interval.saturating_mul(n.min(u32::MAX as u64) as u32),
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::At(d) => f.write_str(&streamd_contract::duration::format_duration(*d)),
            Trigger::Checkpoint(n) => write!(f, "checkpoint {n}"),
        }
    }
}

/// What a fault does, with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Action {
    /// Send a signal (canonical name, e.g. `SIGKILL`). The node stays down until a `start`.
    /// `lose_unsynced`: once it is dead it also loses power (see [`crate::diskfault::unsynced`]).
    Kill {
        signal: crate::signal::Signal,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        lose_unsynced: bool,
    },
    /// SIGTERM, then SIGKILL after `grace`. The node stays down until a `start`.
    Stop {
        #[serde(with = "dur")]
        grace: Duration,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        lose_unsynced: bool,
    },
    /// Start a stopped or killed node.
    Start,
    /// Stop with `grace`, then start (with `lose_unsynced`: the power loss in between).
    Restart {
        #[serde(with = "dur")]
        grace: Duration,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        lose_unsynced: bool,
    },
    /// Freeze every process of the node (undone by `unpause` or `undo_after`).
    Pause,
    Unpause,
    /// Degrade the node's network (undone after `undo_after`).
    Netem(NetemParams),
    /// Drop traffic between groups of nodes (healed after `undo_after`).
    Partition {
        groups: Vec<Vec<Target>>,
        /// Only traffic from `groups[0]` to the other groups is dropped; replies and
        /// traffic from the others to `groups[0]` still flow.
        one_way: bool,
    },
    /// Damage one class of the node's files (see [`crate::fault::corrupt`]).
    Corrupt { what: crate::fault::corrupt::CorruptWhat, how: crate::fault::corrupt::CorruptHow },
    /// Slow, failing or full storage under the node's /data (undone after `undo_after`).
    Disk(crate::diskfault::DiskFault),
}

impl Action {
    /// A kill, stop or restart whose node also loses power.
    pub fn loses_unsynced(&self) -> bool {
        matches!(
            self,
            Action::Kill { lose_unsynced: true, .. } | Action::Stop { lose_unsynced: true, .. } | Action::Restart { lose_unsynced: true, .. }
        )
    }

    /// The action's name as written in a scenario.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Kill { .. } => "kill",
            Action::Stop { .. } => "stop",
            Action::Start => "start",
            Action::Restart { .. } => "restart",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Netem(_) => "netem",
            Action::Partition { .. } => "partition",
            Action::Corrupt { .. } => "corrupt",
            Action::Disk(_) => "disk",
        }
    }
}

/// Network degradation, as tc netem / tbf understand it. At least one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetemParams {
    #[serde(with = "streamd_contract::duration::serde_opt")]
    pub delay: Option<Duration>,
    /// Only with `delay`.
    #[serde(with = "streamd_contract::duration::serde_opt")]
    pub jitter: Option<Duration>,
    /// How the jitter is spread around the delay (uniform unless said).
    pub distribution: crate::netfault::Distribution,
    /// Percentages, 0..=100.
    pub loss: Option<f64>,
    pub duplicate: Option<f64>,
    pub corrupt: Option<f64>,
    /// Bits per second.
    pub rate: Option<u64>,
}

impl fmt::Display for NetemParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fd = streamd_contract::duration::format_duration;
        let mut parts = Vec::new();
        if let Some(d) = self.delay {
            parts.push(format!("delay {}", fd(d)));
        }
        if let Some(j) = self.jitter {
            parts.push(format!("jitter {}", fd(j)));
            if self.distribution != crate::netfault::Distribution::Uniform {
                parts.push(format!("distribution {}", self.distribution.as_str()));
            }
        }
        for (name, v) in [("loss", self.loss), ("duplicate", self.duplicate), ("corrupt", self.corrupt)] {
            if let Some(v) = v {
                parts.push(format!("{name} {v}%"));
            }
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {}", super::values::format_rate(r)));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A fault's target: a concrete node, or whichever jobmanager leads when the fault fires.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Node(String),
    Leader,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(n) => f.write_str(n),
            Target::Leader => f.write_str("leader"),
        }
    }
}

/// Serialized as the string `taskmanager-2` or `leader`, as the report shows it.
impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which rules of the verdict must hold (DESIGN.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputExpectation {
    /// Final counts equal the oracle, transactions well-formed, counts strictly increase.
    ExactlyOnce,
    /// Nothing lost (over-counting allowed), transactions well-formed.
    AtLeastOnce,
    /// Nothing counted twice, no word above the oracle, well-formed; loss allowed (a
    /// source that cannot replay: `input.socket`).
    AtMostOnce,
    /// No output check: only recovery and the timeout count.
    Any,
}

impl OutputExpectation {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputExpectation::ExactlyOnce => "exactly-once",
            OutputExpectation::AtLeastOnce => "at-least-once",
            OutputExpectation::AtMostOnce => "at-most-once",
            OutputExpectation::Any => "any",
        }
    }
}

/// `expect:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expectations {
    pub output: OutputExpectation,
    /// Every fault: the job is back to RUNNING, with progress, this long after it.
    #[serde(with = "dur")]
    pub recovery_within: Duration,
    /// The whole run.
    #[serde(with = "dur")]
    pub timeout: Duration,
}

impl Plan {
    /// The nodes to start for this plan: `etcd-1` first when HA (jobmanagers elect through
    /// it), then the jobmanagers, then the taskmanagers, with their slots and limits.
    pub fn cluster_def(&self, cluster_id: &str, run_dir: PathBuf) -> ClusterDef {
        let nodes = self
            .cluster
            .node_names()
            .into_iter()
            .map(|name| {
                let role = if name.starts_with("taskmanager-") {
                    Role::Taskmanager
                } else if name.starts_with("jobmanager-") {
                    Role::Jobmanager
                } else if name == streamd_contract::lines::NODE {
                    Role::Lines
                } else {
                    Role::Etcd
                };
                let slots = if role == Role::Taskmanager { self.cluster.slots } else { 0 };
                let resources = self.cluster.resources.get(&name).cloned().unwrap_or_default();
                NodeDef { name, role, slots, resources }
            })
            .collect();
        ClusterDef { id: cluster_id.to_string(), run_dir, nodes, env: Vec::new() }
    }
}
