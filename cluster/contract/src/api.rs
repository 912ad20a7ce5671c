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
