//! A typed client of Flink's REST API (port 8081 of the jobmanager): the endpoints chaos
//! needs (jobs, checkpoints with their history, the exception history, taskmanagers, a
//! vertex's aggregated subtask metrics), and Flink's job states mapped onto streamd's
//! [`JobState`].
//!
//! The HTTP part (timeouts, error classes) is [`crate::client::JsonHttp`], the streamd
//! client's, so callers tell "not up (yet)" from "up but wrong" the same way for both
//! engines.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use streamd_contract::api::JobState;

pub use crate::client::ClientError as RestError;
use crate::client::JsonHttp;

/// Flink's `JobStatus` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlinkJobStatus {
    Initializing,
    Created,
    Running,
    Failing,
    Failed,
    Cancelling,
    Canceled,
    Finished,
    Restarting,
    Suspended,
    Reconciling,
}

impl FlinkJobStatus {
    /// streamd's name for the state. Failing/Suspended are on their way to a restart (or a
    /// terminal failure, which shows next); a cancelled job did not finish its input.
    pub fn to_streamd(self) -> JobState {
        match self {
            Self::Initializing | Self::Created | Self::Reconciling => JobState::Created,
            Self::Running => JobState::Running,
            Self::Failing | Self::Restarting | Self::Suspended | Self::Cancelling => JobState::Restarting,
            Self::Finished => JobState::Finished,
            Self::Failed | Self::Canceled => JobState::Failed,
        }
    }
}

/// What `GET /jobs/overview` and `GET /jobs/<id>` both say of a job.
#[derive(Debug, Clone, Deserialize)]
pub struct JobHead {
    pub jid: String,
    pub name: String,
    pub state: FlinkJobStatus,
    #[serde(rename = "start-time")]
    pub start_time: i64,
    #[serde(rename = "end-time")]
    pub end_time: i64,
    /// Milliseconds.
    pub duration: i64,
}

/// One job of `GET /jobs/overview`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobOverview {
    #[serde(flatten)]
    pub head: JobHead,
    /// Task (subtask) counts by execution state, lower-case keys, plus `total`.
    #[serde(default)]
    pub tasks: BTreeMap<String, u32>,
}

impl JobOverview {
    /// The job's state as streamd names it. Region failover restarts tasks without
    /// leaving the job's RUNNING state, so a RUNNING job with any task not running (and
    /// not finished) counts as restarting: RUNNING means "every task runs".
    pub fn streamd_state(&self) -> JobState {
        let state = self.head.state.to_streamd();
        if state != JobState::Running {
            return state;
        }
        let n = |k: &str| self.tasks.get(k).copied().unwrap_or(0);
        match n("total") > 0 && n("running") + n("finished") < n("total") {
            true => JobState::Restarting,
            false => JobState::Running,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct JobsOverview {
    jobs: Vec<JobOverview>,
}

/// One vertex (chained operators) of `GET /jobs/<id>`.
#[derive(Debug, Clone, Deserialize)]
pub struct Vertex {
    pub id: String,
    pub name: String,
    pub parallelism: u32,
    pub status: String,
    /// `read-records`, `write-records`, ... (and `*-complete` flags, skipped).
    #[serde(default, deserialize_with = "numbers_only")]
    pub metrics: BTreeMap<String, u64>,
}

/// `GET /jobs/<id>`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobDetails {
    #[serde(flatten)]
    pub head: JobHead,
    /// When the job entered each state it has been in (ms since the epoch).
    #[serde(default)]
    pub timestamps: BTreeMap<String, i64>,
    #[serde(default)]
    pub vertices: Vec<Vertex>,
}

/// `counts` of `GET /jobs/<id>/checkpoints`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CheckpointCounts {
    pub restored: u64,
    pub total: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
}

/// A completed checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletedCheckpoint {
    pub id: u64,
    pub latest_ack_timestamp: Option<i64>,
    pub external_path: Option<String>,
}

/// The checkpoint a restore started from.
#[derive(Debug, Clone, Deserialize)]
pub struct RestoredCheckpoint {
    pub id: u64,
    pub restore_timestamp: Option<i64>,
}

/// `latest` of `GET /jobs/<id>/checkpoints`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LatestCheckpoints {
    pub completed: Option<CompletedCheckpoint>,
    pub restored: Option<RestoredCheckpoint>,
}

/// One entry of a job's checkpoint `history` (newest first; `web.checkpoints.history`
/// entries are kept).
#[derive(Debug, Clone, Deserialize)]
pub struct CheckpointEntry {
    pub id: u64,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub status: String,
    #[serde(default)]
    pub is_savepoint: bool,
    pub trigger_timestamp: i64,
    #[serde(default)]
    pub latest_ack_timestamp: i64,
    /// Milliseconds from trigger to the last acknowledgement.
    #[serde(default)]
    pub end_to_end_duration: i64,
    #[serde(default)]
    pub checkpointed_size: u64,
}

/// `GET /jobs/<id>/checkpoints` (the parts chaos uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Checkpoints {
    pub counts: CheckpointCounts,
    #[serde(default)]
    pub latest: LatestCheckpoints,
    #[serde(default)]
    pub history: Vec<CheckpointEntry>,
}

/// One failure of `GET /jobs/<id>/exceptions` (Flink's exception history: every global
/// or task failure that led to a restart, with where it happened).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionEntry {
    pub exception_name: String,
    /// When the failure was handled, ms since the epoch.
    pub timestamp: i64,
    #[serde(default)]
    pub task_name: Option<String>,
    /// The resource id of the taskmanager the failed task ran on (chaos sets it to the
    /// node name, so this is `taskmanager-2`); absent for global failures.
    #[serde(default)]
    pub task_manager_id: Option<String>,
    #[serde(default)]
    pub stacktrace: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ExceptionHistory {
    #[serde(default)]
    pub(crate) entries: Vec<ExceptionEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Exceptions {
    #[serde(default)]
    pub(crate) exception_history: ExceptionHistory,
}

/// One metric of a vertex's aggregated subtask metrics.
#[derive(Debug, Clone, Deserialize)]
pub struct AggregatedMetric {
    pub id: String,
    #[serde(default)]
    pub sum: Option<f64>,
}

/// One taskmanager of `GET /taskmanagers`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskManager {
    /// The resource id (chaos sets it to the node name, `taskmanager-2`).
    pub id: String,
    #[serde(rename = "slotsNumber")]
    pub slots: u32,
    #[serde(rename = "freeSlots")]
    pub free_slots: u32,
    #[serde(rename = "timeSinceLastHeartbeat")]
    pub last_heartbeat: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct TaskManagers {
    taskmanagers: Vec<TaskManager>,
}

fn numbers_only<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u64>, D::Error> {
    let raw: BTreeMap<String, serde_json::Value> = BTreeMap::deserialize(d)?;
    Ok(raw.into_iter().filter_map(|(k, v)| v.as_u64().map(|n| (k, n))).collect())
}

/// A client of one Flink jobmanager's REST API.
#[derive(Debug, Clone)]
pub struct FlinkRest {
    http: JsonHttp,
}

impl FlinkRest {
    /// A client for `base_url`, e.g. `http://172.18.0.2:8081`.
    pub fn new(base_url: impl Into<String>) -> Result<Self, RestError> {
        Ok(FlinkRest { http: JsonHttp::new(base_url)? })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// `GET /jobs/overview`.
    pub async fn jobs(&self) -> Result<Vec<JobOverview>, RestError> {
        Ok(self.get_json::<JobsOverview>("/jobs/overview").await?.jobs)
    }

    /// The one job of an application cluster, once submitted.
    pub async fn job(&self) -> Result<Option<JobOverview>, RestError> {
        Ok(self.jobs().await?.into_iter().next())
    }

    /// `GET /jobs/<id>`.
    pub async fn job_details(&self, id: &str) -> Result<JobDetails, RestError> {
        self.get_json(&format!("/jobs/{id}")).await
    }

    /// `GET /jobs/<id>/checkpoints`.
    pub async fn checkpoints(&self, id: &str) -> Result<Checkpoints, RestError> {
        self.get_json(&format!("/jobs/{id}/checkpoints")).await
    }

    /// `GET /jobs/<id>/exceptions`: the failures that caused restarts, oldest first.
    pub async fn exceptions(&self, id: &str) -> Result<Vec<ExceptionEntry>, RestError> {
        let e: Exceptions = self.get_json(&format!("/jobs/{id}/exceptions?maxExceptions=1000")).await?;
        let mut entries = e.exception_history.entries;
        entries.sort_by_key(|e| e.timestamp);
        Ok(entries)
    }

    /// The metric names a vertex's subtasks report (`GET .../subtasks/metrics`).
    pub async fn vertex_metric_names(&self, id: &str, vertex: &str) -> Result<Vec<String>, RestError> {
        let all: Vec<AggregatedMetric> = self.get_json(&format!("/jobs/{id}/vertices/{vertex}/subtasks/metrics")).await?;
        Ok(all.into_iter().map(|m| m.id).collect())
    }

    /// The sum of `metric` over a vertex's subtasks; `None` while no subtask reports it
    /// (tasks being deployed, or the metric fetcher not updated yet).
    pub async fn vertex_metric_sum(&self, id: &str, vertex: &str, metric: &str) -> Result<Option<f64>, RestError> {
        let got: Vec<AggregatedMetric> =
            self.get_json(&format!("/jobs/{id}/vertices/{vertex}/subtasks/metrics?get={metric}&agg=sum")).await?;
        Ok(got.into_iter().find(|m| m.id == metric).and_then(|m| m.sum))
    }

    /// `GET /taskmanagers`.
    pub async fn taskmanagers(&self) -> Result<Vec<TaskManager>, RestError> {
        Ok(self.get_json::<TaskManagers>("/taskmanagers").await?.taskmanagers)
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, RestError> {
        self.http.get_json(path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_parses_and_maps_states() {
        let json = r#"{"jobs":[{"jid":"ab","name":"wordcount","start-time":1,"end-time":-1,
            "duration":5,"last-modification":2,"state":"RUNNING",
            "tasks":{"running":4,"canceling":0,"total":6,"deploying":2,"finished":0}}]}"#;
        let o: JobsOverview = serde_json::from_str(json).unwrap();
        assert_eq!(o.jobs[0].head.state, FlinkJobStatus::Running);
        assert_eq!((o.jobs[0].head.jid.as_str(), o.jobs[0].head.start_time, o.jobs[0].head.end_time), ("ab", 1, -1));
        assert_eq!(o.jobs[0].streamd_state(), JobState::Restarting, "tasks still deploying");
        let mut j = o.jobs[0].clone();
        j.tasks.insert("running".into(), 6);
        assert_eq!(j.streamd_state(), JobState::Running);
        j.head.state = FlinkJobStatus::Finished;
        assert_eq!(j.streamd_state(), JobState::Finished);
        assert_eq!(FlinkJobStatus::Canceled.to_streamd(), JobState::Failed);
        assert_eq!(FlinkJobStatus::Initializing.to_streamd(), JobState::Created);
    }

    #[test]
    fn checkpoints_and_taskmanagers_parse() {
        let c: Checkpoints = serde_json::from_str(r#"{"counts":{"restored":1,"total":9,"in_progress":0,
            "completed":8,"failed":1},"summary":{},"latest":{"completed":{"id":9,"status":"COMPLETED",
            "latest_ack_timestamp":5,"external_path":"file:/x"},"savepoint":null,"failed":null,
            "restored":{"id":4,"restore_timestamp":7,"is_savepoint":false}},"history":[]}"#).unwrap();
        assert_eq!((c.counts.restored, c.latest.completed.map(|c| c.id)), (1, Some(9)));
        let t: TaskManagers = serde_json::from_str(r#"{"taskmanagers":[{"id":"taskmanager-1",
            "path":"p","dataPort":6121,"slotsNumber":1,"freeSlots":0,"timeSinceLastHeartbeat":3}]}"#).unwrap();
        assert_eq!(t.taskmanagers[0].id, "taskmanager-1");
        let v: Vertex = serde_json::from_str(r#"{"id":"v","name":"n","parallelism":2,"status":"RUNNING",
            "metrics":{"read-records":10,"read-records-complete":true}}"#).unwrap();
        assert_eq!(v.metrics.get("read-records"), Some(&10));
    }
}
