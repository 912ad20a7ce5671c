//! The REST API (JSON), as Flink's: `/overview`, `/jobs`, `/jobs/<id>`,
//! `/jobs/<id>/checkpoints`, `/jobs/<id>/checkpoints/interval` (the checkpoint interval
//! and, when adaptive, its history), `/taskmanagers`, `/metrics` (Prometheus text).
//!
//! With HA, a standby answers `/overview` itself (`leader: false`, `leader_address`: the
//! leader's REST URL; the cluster numbers are the leader's, fetched from it) and forwards
//! every other request to the leader ([`crate::ha::proxy`]). When no leader is known or it
//! does not answer, a standby says so with `503 Service Unavailable` and a JSON body
//! `{"error", "jobmanager", "leader": false, "leader_address"}`.

use super::view::{SharedView, View};
use crate::ha::proxy;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
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
        .route("/jobs/{id}/checkpoints/interval", get(interval))
        .route("/taskmanagers", get(taskmanagers))
        .route("/metrics", get(metrics))
        .with_state(view)
}

pub async fn serve(listener: TcpListener, view: SharedView) {
    if let Err(e) = axum::serve(listener, router(view)).await {
        tracing::error!("REST server stopped: {e}");
    }
}

// The error is the handler's answer itself, returned at once: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn read(view: &SharedView) -> Result<View, Response> {
    view.read().map(|v| v.clone()).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The view of a leader; a standby's answer (forwarded or 503) as the error.
async fn leader_view(view: &SharedView, uri: &Uri, headers: &HeaderMap) -> Result<View, Response> {
    let v = read(view)?;
    if v.overview.leader {
        return Ok(v);
    }
    let me = v.overview.jobmanager.clone();
    let unavailable = |why: String| {
        let body = serde_json::json!({
            "error": why,
            "jobmanager": me,
            "leader": false,
            "leader_address": v.overview.leader_address,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    };
    if headers.contains_key(proxy::FORWARDED_BY) {
        return Err(unavailable(format!("{me} is a standby; it does not forward a forwarded request")));
    }
    let Some(leader) = v.overview.leader_address.clone() else {
        return Err(unavailable(format!("{me} is a standby and no leader is known (election in progress?)")));
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match proxy::get(&leader, path, &me).await {
        Ok(f) => {
            let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = f.content_type.unwrap_or_else(|| "application/octet-stream".into());
            Err((status, [(axum::http::header::CONTENT_TYPE, ct)], f.body).into_response())
        }
        Err(e) => Err(unavailable(e)),
    }
}

async fn overview(State(view): State<SharedView>, headers: HeaderMap) -> Response {
    let own = match read(&view) {
        Ok(v) => v.overview,
        Err(e) => return e,
    };
    if own.leader || headers.contains_key(proxy::FORWARDED_BY) {
        return Json(own).into_response();
    }
    // A standby: the cluster as the leader sees it, but who we are and that we don't lead.
    if let Some(leader) = own.leader_address.clone() {
        if let Ok(f) = proxy::get(&leader, "/overview", &own.jobmanager).await {
            if let (200, Ok(mut o)) = (f.status, serde_json::from_slice::<crate::api::Overview>(&f.body)) {
                o.jobmanager = own.jobmanager.clone();
                o.leader = false;
                o.leader_address = Some(leader);
                return Json(o).into_response();
            }
        }
    }
    Json(own).into_response()
}

async fn jobs(State(v): State<SharedView>, uri: Uri, headers: HeaderMap) -> Response {
    match leader_view(&v, &uri, &headers).await {
        Ok(v) => Json(serde_json::json!({ "jobs": [{ "id": v.job.id, "state": v.job.state }] })).into_response(),
        Err(e) => e,
    }
}

async fn job(State(v): State<SharedView>, Path(id): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    match leader_view(&v, &uri, &headers).await {
        Ok(v) if v.job.id == id => Json(v.job).into_response(),
        Ok(_) => (StatusCode::NOT_FOUND, format!("no job {id}")).into_response(),
        Err(e) => e,
    }
}

async fn checkpoints(State(v): State<SharedView>, Path(id): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    match leader_view(&v, &uri, &headers).await {
        Ok(v) if v.job.id == id => Json(v.checkpoints).into_response(),
        Ok(_) => (StatusCode::NOT_FOUND, format!("no job {id}")).into_response(),
        Err(e) => e,
    }
}

async fn interval(State(v): State<SharedView>, Path(id): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    match leader_view(&v, &uri, &headers).await {
        Ok(v) if v.job.id == id => Json(v.interval).into_response(),
        Ok(_) => (StatusCode::NOT_FOUND, format!("no job {id}")).into_response(),
        Err(e) => e,
    }
}

async fn taskmanagers(State(v): State<SharedView>, uri: Uri, headers: HeaderMap) -> Response {
    match leader_view(&v, &uri, &headers).await {
        Ok(v) => Json(v.taskmanagers).into_response(),
        Err(e) => e,
    }
}

async fn metrics(State(v): State<SharedView>, uri: Uri, headers: HeaderMap) -> Response {
    let v = match leader_view(&v, &uri, &headers).await {
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
    g("checkpoint_interval_ms", "gauge", "The checkpoint interval in force (adaptive: its latest choice).", v.interval.current_ms);
    g("restarts_total", "counter", "Job restarts.", j.restarts);
    g("attempt", "gauge", "Current execution attempt.", j.attempt);
    g("taskmanagers", "gauge", "Registered taskmanagers.", v.overview.taskmanagers as u64);
    g("running", "gauge", "1 while the job is RUNNING.", (j.state == crate::api::JobState::Running) as u64);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
}
