//! Flink's job as the scenario executor sees every engine's job: streamd's REST answers
//! ([`JobDetails`], [`CheckpointsInfo`]) built from Flink's REST API, so the run loop, the
//! recovery timings and the reports are the same code for both engines.
//!
//! What Flink does not keep is kept here, from polling (the executor polls every 100 ms):
//! - **State history.** Flink reports only when the job last entered each state, and a
//!   region failover restarts tasks without leaving RUNNING. Each change of the mapped
//!   state ([`JobOverview::streamd_state`]: RUNNING means every task runs) is recorded
//!   when first seen, so transitions are known to within one poll.
//! - **Attempts.** As in streamd's history, a RESTARTING entry carries the attempt that
//!   failed, and RUNNING after RESTARTING starts the next one. Tasks being deployed before
//!   the job first ran are CREATED, not RESTARTING.
//! - **Input position.** The job's source reports a gauge `linesRead` (the lines before
//!   its absolute position, so a restore moves it back); its sum over the subtasks is
//!   `records_in`. Flink's metric fetcher refreshes it every
//!   `metrics.fetcher.update-interval` (set to 500 ms by [`super::config`]) and keeps
//!   serving the failed attempt's last values until the new tasks report: after a
//!   restart the position counts as 0 (not caught up) until the value changes.
//!
//! Failures come from Flink's exception history: each names the taskmanager whose task
//! failed (its resource id, which chaos sets to the node name).

use std::time::Duration;

use streamd_contract::api::{now_ms, CheckpointStats, CheckpointsInfo, FailureEvent, JobDetails, JobState, StateChange};

use super::rest::{FlinkRest, RestError};

/// The source's gauge (see the job's `LineSource`).
pub const LINES_READ: &str = "linesRead";

/// A polling view of the one job of a Flink application cluster.
#[derive(Debug)]
pub struct FlinkWatch {
    rest: FlinkRest,
    parallelism: u32,
    input_lines: Option<u64>,
    jid: Option<String>,
    /// The source vertex and the full name of its `linesRead` metric, once found.
    source_metric: Option<(String, String)>,
    history: Vec<StateChange>,
    attempt: u64,
    restarts: u64,
    records_in: u64,
    /// After a restart: the failed attempt's last position, which the metric fetcher may
    /// still serve; `records_in` is 0 until the gauge reports something else.
    stale_position: Option<u64>,
    records_out: u64,
    start_ms: u64,
    /// Every task of the job has a slot (none is CREATED or SCHEDULED any more).
    placed: bool,
    /// With HA: the leader last seen, and every change of leader as a failure of the
    /// deposed jobmanager (Flink's exception history starts afresh on a new leader).
    leader: Option<String>,
    failovers: Vec<FailureEvent>,
}

impl FlinkWatch {
    pub fn new(rest: FlinkRest, parallelism: u32, input_lines: Option<u64>) -> Self {
        FlinkWatch {
            rest,
            parallelism,
            input_lines,
            jid: None,
            source_metric: None,
            history: Vec::new(),
            attempt: 1,
            restarts: 0,
            records_in: 0,
            stale_position: None,
            records_out: 0,
            start_ms: 0,
            placed: false,
            leader: None,
            failovers: Vec::new(),
        }
    }

    /// Whether every task of the job has been given a slot (as of the last [`Self::job`]).
    pub fn placed(&self) -> bool {
        self.placed
    }

    /// Records the leader Flink publishes now. A change from a known leader is the
    /// failover's detection: a failure event naming the deposed jobmanager, at the time
    /// the new leader was first seen. Returns whether the leader changed.
    pub fn note_leader(&mut self, node: String, now: u64) -> bool {
        let changed = match &self.leader {
            Some(old) if *old != node => {
                let attempt = self.history.iter().rfind(|h| h.at_ms <= now).map_or(self.attempt, |h| h.attempt);
                self.failovers.push(FailureEvent {
                    at_ms: now,
                    attempt,
                    taskmanager: None,
                    jobmanager: Some(old.clone()),
                    cause: format!("leadership moved from {old} to {node} (ZooKeeper)"),
                });
                true
            }
            _ => false,
        };
        self.leader = Some(node);
        changed
    }

    /// Talks to another jobmanager from now on (the leader after a failover).
    pub fn set_rest(&mut self, rest: FlinkRest) {
        self.rest = rest;
    }

    /// The REST client in use.
    pub fn rest(&self) -> &FlinkRest {
        &self.rest
    }

    /// Waits until `taskmanagers` taskmanagers have registered.
    pub async fn wait_ready(&self, taskmanagers: usize, timeout: Duration) -> Result<(), String> {
        let start = std::time::Instant::now();
        let mut last = String::from("no answer yet");
        while start.elapsed() < timeout {
            match self.rest.taskmanagers().await {
                Ok(tms) if tms.len() >= taskmanagers => return Ok(()),
                Ok(tms) => last = format!("{} of {taskmanagers} taskmanagers registered", tms.len()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("not ready within {timeout:?}: {last}"))
    }

    /// The job now, as streamd would report it. "No job yet" is a 404-like error.
    pub async fn job(&mut self) -> Result<JobDetails, RestError> {
        let Some(job) = self.rest.job().await? else {
            return Err(RestError::Status { url: format!("{}/jobs/overview", self.rest.base_url()), status: 404, body: "no job yet".into() });
        };
        let now = now_ms();
        let state = job.streamd_state();
        if self.jid.as_deref() != Some(job.head.jid.as_str()) {
            self.jid = Some(job.head.jid.clone());
            self.start_ms = job.head.start_time.max(0) as u64;
        }
        let n = |k: &str| job.tasks.get(k).copied().unwrap_or(0);
        self.placed = n("total") > 0 && n("created") + n("scheduled") == 0;
        let reason = format!("flink {:?}, tasks {}", job.head.state, tasks_line(&job.tasks)).to_uppercase();
        self.observe(state, now, reason);
        let jid = job.head.jid.clone();
        let checkpoints = self.rest.checkpoints(&jid).await.ok();
        let failures = self.failures(&jid).await;
        self.sample_metrics(&jid).await;
        let last_completed = checkpoints.as_ref().and_then(|c| c.latest.completed.as_ref().map(|c| c.id));
        Ok(JobDetails {
            id: jid,
            state,
            attempt: self.attempt,
            restarts: self.restarts,
            parallelism: self.parallelism,
            records_in: self.records_in,
            records_out: self.records_out,
            input_lines: self.input_lines,
            last_completed_checkpoint: last_completed,
            checkpoints_completed: checkpoints.as_ref().map_or(0, |c| c.counts.completed),
            failure_cause: failures.last().filter(|_| state == JobState::Failed).map(|f| f.cause.clone()),
            start_ms: self.start_ms,
            history: self.history.clone(),
            failures,
            now_ms: now,
            restores: Vec::new(),
        })
    }

    /// Records a state change of the mapped state (and counts attempts).
    fn observe(&mut self, state: JobState, now: u64, reason: String) {
        let ran = self.history.iter().any(|h| h.state == JobState::Running);
        // Before the job first ran, tasks being deployed are CREATED; after, a job being
        // set up again (a new leader's INITIALIZING after a failover) is RESTARTING.
        let state = match state {
            JobState::Restarting if !ran => JobState::Created,
            JobState::Created if ran => JobState::Restarting,
            s => s,
        };
        let last = self.history.last().map(|h| h.state);
        if last == Some(state) {
            return;
        }
        if state == JobState::Restarting {
            self.restarts += 1;
            self.stale_position = Some(self.records_in);
            self.records_in = 0;
        }
        if state == JobState::Running && last == Some(JobState::Restarting) {
            self.attempt += 1;
        }
        self.history.push(StateChange { state, at_ms: now, attempt: self.attempt, reason });
    }

    /// Flink's exception history as failure events.
    async fn failures(&self, jid: &str) -> Vec<FailureEvent> {
        let entries = match self.rest.exceptions(jid).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!("flink exceptions: {e}");
                Vec::new()
            }
        };
        let mut attempt = 1;
        let mut events: Vec<FailureEvent> = entries
            .into_iter()
            .map(|e| {
                let at_ms = e.timestamp.max(0) as u64;
                // The attempt the failure ended: the last one that had started by then.
                if let Some(h) = self.history.iter().rfind(|h| h.at_ms <= at_ms) {
                    attempt = h.attempt;
                }
                let first = e.stacktrace.lines().next().unwrap_or(&e.exception_name).to_string();
                // The node the failure is about: the one its message names (a broken
                // connection to taskmanager-2, reported by a task on taskmanager-1, is
                // Flink detecting taskmanager-2's loss), else where the task ran.
                let named = named_taskmanager(&first);
                FailureEvent {
                    at_ms,
                    attempt,
                    taskmanager: named.or(e.task_manager_id.filter(|t| t.starts_with("taskmanager-"))),
                    jobmanager: None,
                    cause: match e.task_name {
                        Some(t) => format!("{t}: {first}"),
                        None => first,
                    },
                }
            })
            .collect();
        events.extend(self.failovers.iter().cloned());
        events.sort_by_key(|e| e.at_ms);
        events
    }

    /// Input position (the source's `linesRead`) and words out of the source vertex.
    async fn sample_metrics(&mut self, jid: &str) {
        // One `GET /jobs/<id>` a sample: the source vertex, and its words out.
        let Ok(details) = self.rest.job_details(jid).await else { return };
        let Some(source) = details.vertices.first() else { return };
        if let Some(out) = source.metrics.get("write-records") {
            self.records_out = *out;
        }
        if self.source_metric.is_none() {
            if let Ok(names) = self.rest.vertex_metric_names(jid, &source.id).await {
                if let Some(name) = names.into_iter().find(|n| n.ends_with(&format!(".{LINES_READ}"))) {
                    self.source_metric = Some((source.id.clone(), name));
                }
            }
        }
        if let Some((vertex, metric)) = &self.source_metric {
            match self.rest.vertex_metric_sum(jid, vertex, metric).await {
                Ok(Some(v)) if self.stale_position == Some(v as u64) => {}
                Ok(Some(v)) => {
                    self.stale_position = None;
                    self.records_in = v as u64;
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("flink metric {metric}: {e}"),
            }
        }
    }

    /// Completed checkpoints, as streamd reports them.
    pub async fn checkpoints(&self) -> Result<CheckpointsInfo, RestError> {
        let Some(jid) = &self.jid else {
            return Ok(CheckpointsInfo { completed: vec![], completed_total: 0, failed_total: 0, in_progress: None, latest: None, restored: None });
        };
        let c = self.rest.checkpoints(jid).await?;
        let mut completed: Vec<CheckpointStats> = c
            .history
            .iter()
            .filter(|h| h.status == "COMPLETED" && !h.is_savepoint)
            .map(|h| CheckpointStats {
                id: h.id,
                attempt: self.history.iter().rfind(|s| s.at_ms as i64 <= h.trigger_timestamp).map_or(1, |s| s.attempt),
                trigger_ms: h.trigger_timestamp.max(0) as u64,
                complete_ms: h.latest_ack_timestamp.max(0) as u64,
                duration_ms: h.end_to_end_duration.max(0) as u64,
                size_bytes: h.checkpointed_size,
                records_in: 0,
            })
            .collect();
        completed.sort_by_key(|s| s.id);
        Ok(CheckpointsInfo {
            latest: completed.last().cloned(),
            completed,
            completed_total: c.counts.completed,
            failed_total: c.counts.failed,
            in_progress: (c.counts.in_progress > 0).then_some(c.counts.in_progress),
            restored: c.latest.restored.map(|r| r.id),
        })
    }
}

/// The first `taskmanager-<n>` a Flink message names ("Connection unexpectedly closed by
/// remote task manager 'taskmanager-2/172.18.0.5:6121'", "Heartbeat of TaskManager with
/// id taskmanager-2 timed out").
fn named_taskmanager(message: &str) -> Option<String> {
    let at = message.find("taskmanager-")?;
    let digits: String = message[at + "taskmanager-".len()..].chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| format!("taskmanager-{digits}"))
}

/// "running 2/3, deploying 1" from Flink's task counts.
fn tasks_line(tasks: &std::collections::BTreeMap<String, u32>) -> String {
    let total = tasks.get("total").copied().unwrap_or(0);
    let mut parts: Vec<String> = tasks
        .iter()
        .filter(|(k, v)| k.as_str() != "total" && **v > 0)
        .map(|(k, v)| format!("{k} {v}/{total}"))
        .collect();
    if parts.is_empty() {
        parts.push(format!("none of {total}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_are_recorded_once_and_count_attempts() {
        let mut w = FlinkWatch::new(FlinkRest::new("http://127.0.0.1:1").unwrap(), 2, None);
        w.observe(JobState::Created, 1, "a".into());
        w.observe(JobState::Restarting, 1, "deploying".into());
        w.observe(JobState::Running, 2, "b".into());
        w.observe(JobState::Running, 3, "b".into());
        w.observe(JobState::Restarting, 4, "c".into());
        w.observe(JobState::Running, 5, "d".into());
        // A new leader sets the job up again after a failover: a restart too.
        w.observe(JobState::Created, 6, "initializing".into());
        w.observe(JobState::Running, 7, "f".into());
        w.observe(JobState::Finished, 8, "e".into());
        let got: Vec<(JobState, u64, u64)> = w.history.iter().map(|h| (h.state, h.at_ms, h.attempt)).collect();
        assert_eq!(
            got,
            vec![
                (JobState::Created, 1, 1),
                (JobState::Running, 2, 1),
                (JobState::Restarting, 4, 1),
                (JobState::Running, 5, 2),
                (JobState::Restarting, 6, 2),
                (JobState::Running, 7, 3),
                (JobState::Finished, 8, 3)
            ]
        );
        assert_eq!(w.restarts, 2);
    }

    #[test]
    fn a_change_of_leader_is_the_deposed_jobmanagers_failure() {
        let mut w = FlinkWatch::new(FlinkRest::new("http://127.0.0.1:1").unwrap(), 2, None);
        w.observe(JobState::Running, 10, "r".into());
        assert!(!w.note_leader("jobmanager-1".into(), 20), "the first leader seen is no change");
        assert!(!w.note_leader("jobmanager-1".into(), 30));
        assert!(w.note_leader("jobmanager-2".into(), 40));
        assert_eq!(w.failovers.len(), 1);
        let f = &w.failovers[0];
        assert_eq!((f.at_ms, f.attempt, f.jobmanager.as_deref(), f.taskmanager.as_deref()), (40, 1, Some("jobmanager-1"), None));
    }

    #[test]
    fn the_node_a_failure_names_is_the_one_it_concerns() {
        let m = "org.apache.flink.runtime.io.network.netty.exception.RemoteTransportException: Connection unexpectedly closed by remote task manager 'taskmanager-2/172.18.0.5:6121'.";
        assert_eq!(named_taskmanager(m).as_deref(), Some("taskmanager-2"));
        assert_eq!(named_taskmanager("Heartbeat of TaskManager with id taskmanager-13 timed out.").as_deref(), Some("taskmanager-13"));
        assert_eq!(named_taskmanager("java.lang.RuntimeException: boom"), None);
        assert_eq!(named_taskmanager("taskmanager-x"), None);
    }

    #[test]
    fn exception_history_parses() {
        let e: crate::flink::rest::Exceptions = serde_json::from_str(
            r#"{"exceptionHistory":{"entries":[{"exceptionName":"java.util.concurrent.TimeoutException",
            "stacktrace":"java.util.concurrent.TimeoutException: Heartbeat of TaskManager with id taskmanager-2 timed out.\n\tat x",
            "timestamp":1700000000123,"taskName":"count (1/2)","endpoint":"172.18.0.4:6121",
            "taskManagerId":"taskmanager-2","failureLabels":{},"concurrentExceptions":[]}],"truncated":false}}"#,
        )
        .unwrap();
        let entry = &e.exception_history.entries[0];
        assert_eq!(entry.task_manager_id.as_deref(), Some("taskmanager-2"));
        assert_eq!(entry.timestamp, 1_700_000_000_123);
    }
}
