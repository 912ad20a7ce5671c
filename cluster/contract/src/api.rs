//! REST API types (JSON), shared by the jobmanager (server) and `chaos` (client).
//! Timestamps are wall-clock milliseconds since the Unix epoch: every node of a cluster
//! runs on one host here, so one clock orders them all.

use serde::{Deserialize, Serialize};

/// Job states, as Flink names them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Created,
    Running,
    Restarting,
    Finished,
    Failed,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Finished | JobState::Failed)
    }
}

/// `GET /overview`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    /// This jobmanager's id and whether it is the leader (always true without HA).
    pub jobmanager: String,
    pub leader: bool,
    /// The leader's REST address, when known (standbys point here).
    pub leader_address: Option<String>,
    pub leader_epoch: u64,
    pub job_id: String,
    pub job_state: JobState,
    pub taskmanagers: usize,
    pub slots_total: u32,
    pub slots_available: u32,
}

/// One state change of the job, with why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateChange {
    pub state: JobState,
    pub at_ms: u64,
    pub attempt: u64,
    pub reason: String,
}

/// A failure the jobmanager noticed (a lost taskmanager, a failed task, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureEvent {
    pub at_ms: u64,
    pub attempt: u64,
    /// The taskmanager it concerns, when there is one.
    pub taskmanager: Option<String>,
    /// The jobmanager it concerns, when there is one (a failover: the deposed leader).
    #[serde(default)]
    pub jobmanager: Option<String>,
    pub cause: String,
}

/// `GET /jobs/<id>`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobDetails {
    pub id: String,
    pub state: JobState,
    /// Execution attempt (increments on every restart; fences stale tasks).
    pub attempt: u64,
    pub restarts: u64,
    pub parallelism: u32,
    /// Lines read by all sources (absolute input position: restores rewind it).
    pub records_in: u64,
    /// Words handed to the sink (cumulative over the current attempt, from the restore).
    pub records_out: u64,
    /// Whole input size in lines when known (generate / non-follow file).
    pub input_lines: Option<u64>,
    pub last_completed_checkpoint: Option<u64>,
    pub checkpoints_completed: u64,
    pub failure_cause: Option<String>,
    pub start_ms: u64,
    pub history: Vec<StateChange>,
    pub failures: Vec<FailureEvent>,
    pub now_ms: u64,
    /// How each task of each restarted attempt got its state back (only attempts that
    /// restored a checkpoint), as the taskmanagers measured it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<TaskRestore>,
}

/// Where a task's restored state was read from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RestoreSource {
    /// The taskmanager's own node-local copy (task-local recovery).
    Local,
    /// Shared checkpoint storage.
    Remote,
}

impl RestoreSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreSource::Local => "local",
            RestoreSource::Remote => "remote",
        }
    }
}

/// One task's restore at the start of an attempt, measured in its taskmanager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRestore {
    pub attempt: u64,
    pub checkpoint: u64,
    /// `source-0`, `count-1`, ...
    pub task: String,
    pub taskmanager: String,
    pub source: RestoreSource,
    /// Reading, verifying and decoding the snapshot, including a local copy that was tried
    /// and refused first.
    pub duration_ms: f64,
    /// Size of the snapshot file that was used.
    pub bytes: u64,
    /// Why the local copy was not used, when one was looked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// One checkpoint's statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointStats {
    pub id: u64,
    pub attempt: u64,
    pub trigger_ms: u64,
    pub complete_ms: u64,
    pub duration_ms: u64,
    pub size_bytes: u64,
    /// Lines read by all sources at this checkpoint.
    pub records_in: u64,
}

/// `GET /jobs/<id>/checkpoints`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointsInfo {
    pub completed: Vec<CheckpointStats>,
    pub completed_total: u64,
    pub failed_total: u64,
    pub in_progress: Option<u64>,
    pub latest: Option<CheckpointStats>,
    /// The checkpoint the current attempt restored, if any.
    pub restored: Option<u64>,
}

/// `GET /jobs/<id>/checkpoints/interval`: the checkpoint interval and, for an adaptive
/// one, every change of it with the estimates behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IntervalInfo {
    pub adaptive: bool,
    /// The interval in force now (the fixed one, or the adaptive one's latest choice).
    pub current_ms: u64,
    /// Adaptive only: its bounds.
    pub min_ms: Option<u64>,
    pub max_ms: Option<u64>,
    /// Adaptive only: every change, oldest first (the newest 2000).
    pub history: Vec<IntervalPoint>,
}

/// One choice of the adaptive interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IntervalPoint {
    /// When it was chosen (wall clock).
    pub at_ms: u64,
    pub interval_ms: u64,
    /// The checkpoint cost estimate C: the pipeline's stall per checkpoint (none before a
    /// checkpoint completed).
    pub cost_ms: Option<f64>,
    /// The latency estimate L: trigger to commit point.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// The estimate of the mean time between failures M.
    pub mtbf_ms: u64,
    /// Job failures seen so far by this jobmanager.
    pub failures: u64,
    pub limit: IntervalLimit,
}

/// What set an adaptive interval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IntervalLimit {
    /// No checkpoint completed yet, so no cost is known: `min`.
    Unmeasured,
    /// Young/Daly's `sqrt(2·C·M)`.
    Optimum,
    /// Capped so the expected replay stays within `target_recovery`.
    TargetRecovery,
    Min,
    Max,
}

impl std::fmt::Display for IntervalLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IntervalLimit::Unmeasured => "unmeasured",
            IntervalLimit::Optimum => "optimum",
            IntervalLimit::TargetRecovery => "target-recovery",
            IntervalLimit::Min => "min",
            IntervalLimit::Max => "max",
        })
    }
}

/// `GET /taskmanagers` entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskManagerInfo {
    pub id: String,
    pub data_address: String,
    pub slots: u32,
    pub slots_used: u32,
    pub last_heartbeat_ms_ago: u64,
    pub registered_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
