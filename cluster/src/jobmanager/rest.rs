//! The REST API (JSON), as Flink's: `/overview`, `/jobs`, `/jobs/<id>`,
//! `/jobs/<id>/checkpoints`, `/taskmanagers`, `/metrics` (Prometheus text).

use super::SharedView;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::fmt::Write;
use tokio::net::TcpListener;

pub fn router(view: SharedView) -> Router {
    Router::new()
        .route("/overview", get(overview))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/checkpoints", get(checkpoints))
        .route("/taskmanagers", get(taskmanagers))
        .route("/metrics", get(metrics))
        .with_state(view)
}

pub async fn serve(listener: TcpListener, view: SharedView) {
    if let Err(e) = axum::serve(listener, router(view)).await {
        tracing::error!("REST server stopped: {e}");
    }
}

fn read(view: &SharedView) -> Result<super::View, Response> {
    view.read().map(|v| v.clone()).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn overview(State(v): State<SharedView>) -> Response {
    match read(&v) {
        Ok(v) => Json(v.overview).into_response(),
        Err(e) => e,
    }
}

async fn jobs(State(v): State<SharedView>) -> Response {
    match read(&v) {
        Ok(v) => Json(serde_json::json!({ "jobs": [{ "id": v.job.id, "state": v.job.state }] })).into_response(),
        Err(e) => e,
    }
}

async fn job(State(v): State<SharedView>, Path(id): Path<String>) -> Response {
    match read(&v) {
        Ok(v) if v.job.id == id => Json(v.job).into_response(),
        Ok(_) => (StatusCode::NOT_FOUND, format!("no job {id}")).into_response(),
        Err(e) => e,
    }
}

async fn checkpoints(State(v): State<SharedView>, Path(id): Path<String>) -> Response {
    match read(&v) {
        Ok(v) if v.job.id == id => Json(v.checkpoints).into_response(),
        Ok(_) => (StatusCode::NOT_FOUND, format!("no job {id}")).into_response(),
        Err(e) => e,
    }
}

async fn taskmanagers(State(v): State<SharedView>) -> Response {
    match read(&v) {
        Ok(v) => Json(v.taskmanagers).into_response(),
        Err(e) => e,
    }
}

async fn metrics(State(v): State<SharedView>) -> Response {
    let v = match read(&v) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let mut s = String::new();
    let j = &v.job;
    let mut g = |name: &str, kind: &str, help: &str, val: u64| {
        let _ = writeln!(s, "# HELP streamd_{name} {help}\n# TYPE streamd_{name} {kind}\nstreamd_{name}{{job=\"{}\"}} {val}", j.id);
    };
    g("records_in_total", "counter", "Lines read by the sources (input position).", j.records_in);
    g("records_out_total", "counter", "Words counted by the count tasks in the current attempt.", j.records_out);
    g("checkpoints_completed_total", "counter", "Completed checkpoints.", v.checkpoints.completed_total);
    g("checkpoints_failed_total", "counter", "Aborted or declined checkpoints.", v.checkpoints.failed_total);
    g("checkpoint_last_duration_ms", "gauge", "Duration of the latest completed checkpoint.", v.checkpoint_last_duration_ms);
    g("restarts_total", "counter", "Job restarts.", j.restarts);
    g("attempt", "gauge", "Current execution attempt.", j.attempt);
    g("taskmanagers", "gauge", "Registered taskmanagers.", v.overview.taskmanagers as u64);
    g("running", "gauge", "1 while the job is RUNNING.", (j.state == crate::api::JobState::Running) as u64);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
}
