//! The REST view: a snapshot of the job that the master writes ([`View`], shared as
//! [`SharedView`]) and the REST server ([`super::rest`]) reads. The view outlives
//! leaderships: `initial_view` is what it shows while no master runs (a standby, or a
//! leader about to start its master); a running master refreshes it from its state
//! (`JobMaster::refresh_view`, in [`super::master`]).

use super::config::JmConfig;
use crate::api::{self, JobDetails, JobState, Overview, TaskManagerInfo};
use crate::ha::LeaderInfo;
use crate::spec::JobSpec;
use std::sync::{Arc, RwLock};

/// The REST API's view, refreshed by the actor.
#[derive(Debug, Clone)]
pub struct View {
    pub overview: Overview,
    pub job: JobDetails,
    pub checkpoints: api::CheckpointsInfo,
    pub taskmanagers: Vec<TaskManagerInfo>,
    pub checkpoint_last_duration_ms: u64,
    pub interval: api::IntervalInfo,
}

pub type SharedView = Arc<RwLock<View>>;

fn empty_details(job: &JobSpec, start_ms: u64) -> JobDetails {
    JobDetails {
        id: job.job_id.clone(),
        state: JobState::Created,
        attempt: 0,
        restarts: 0,
        parallelism: job.parallelism,
        records_in: 0,
        records_out: 0,
        input_lines: None,
        last_completed_checkpoint: None,
        checkpoints_completed: 0,
        failure_cause: None,
        start_ms,
        history: vec![],
        failures: vec![],
        now_ms: start_ms,
        restores: Vec::new(),
    }
}

/// The interval before a master chose one: the fixed one, or an adaptive one's `min`.
fn fixed_or_unstarted_interval(job: &JobSpec) -> api::IntervalInfo {
    let a = job.checkpoint_interval.adaptive();
    api::IntervalInfo {
        adaptive: a.is_some(),
        current_ms: job.checkpoint_interval.nominal().as_millis() as u64,
        min_ms: a.map(|a| a.min.as_millis() as u64),
        max_ms: a.map(|a| a.max.as_millis() as u64),
        history: vec![],
    }
}

/// The REST view when no master runs: a standby (`leader: false`, pointing at `known`),
/// or a leader about to start its master.
pub(super) fn initial_view(cfg: &JmConfig, leader: bool, known: Option<&LeaderInfo>) -> View {
    let now = api::now_ms();
    View {
        overview: Overview {
            jobmanager: cfg.id.clone(),
            leader,
            leader_address: if leader { Some(cfg.rest_url.clone()) } else { known.map(|l| l.rest_url.clone()) },
            leader_epoch: known.map(|l| l.epoch).unwrap_or(0),
            job_id: cfg.job.job_id.clone(),
            job_state: JobState::Created,
            taskmanagers: 0,
            slots_total: 0,
            slots_available: 0,
        },
        job: empty_details(&cfg.job, now),
        checkpoints: api::CheckpointsInfo {
            completed: vec![],
            completed_total: 0,
            failed_total: 0,
            in_progress: None,
            latest: None,
            restored: None,
        },
        taskmanagers: vec![],
        checkpoint_last_duration_ms: 0,
        interval: fixed_or_unstarted_interval(&cfg.job),
    }
}
