//! A REST client for a streamd jobmanager (DESIGN.md section 3, "REST API").
//!
//! Everything `chaos` reports about a job comes from here, never from log greps. Timeouts
//! are short (2 s): a jobmanager that does not answer in that time is itself news (paused,
//! partitioned), and the caller decides whether to retry.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use streamd_contract::api::{CheckpointsInfo, JobDetails, Overview, TaskManagerInfo};

/// Per-request timeout (connect + answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How often [`StreamdClient::wait_ready`] asks.
const READY_POLL: Duration = Duration::from_millis(50);

/// Why a REST call failed, so callers can tell "not up (yet)" from "up but wrong".
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepts connections there (not started, dead, wrong port).
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    /// Connected, but no answer within the timeout (paused? partitioned?).
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// An answer with a non-success HTTP status.
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    /// A 2xx answer whose body is not the expected JSON.
    #[error("{url} answered with unexpected JSON: {message}")]
    Json { url: String, message: String },
    /// Any other transport failure.
    #[error("request to {url} failed: {message}")]
    Http { url: String, message: String },
    /// [`StreamdClient::wait_ready`] gave up.
    #[error("the cluster at {url} was not ready within {waited:?}: {last}")]
    NotReady { url: String, waited: Duration, last: String },
}

impl ClientError {
    /// True when the jobmanager could not be reached at all (refused or timed out), as
    /// opposed to answering badly.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::Timeout { .. })
    }
}

/// JSON over HTTP GET to one base URL, with the timeouts and error classes every REST
/// client of chaos shares (streamd's, and Flink's in `flink::rest`).
#[derive(Debug, Clone)]
pub struct JsonHttp {
    base: String,
    http: reqwest::Client,
}

/// A client for one jobmanager's REST API.
#[derive(Debug, Clone)]
pub struct StreamdClient {
    http: JsonHttp,
}

impl StreamdClient {
    /// A client for `base_url`, e.g. `http://127.0.0.1:8081` (a trailing `/` is ignored).
    pub fn new(base_url: impl Into<String>) -> Result<StreamdClient, ClientError> {
        Ok(StreamdClient { http: JsonHttp::new(base_url)? })
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    fn base(&self) -> &str {
        self.http.base_url()
    }

    async fn get(&self, path: &str) -> Result<(String, reqwest::Response), ClientError> {
        self.http.get(path).await
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.http.get_json(path).await
    }


    /// `GET /overview`.
    pub async fn overview(&self) -> Result<Overview, ClientError> {
        self.get_json("/overview").await
    }

    /// `GET /jobs/<id>`.
    pub async fn job(&self, id: &str) -> Result<JobDetails, ClientError> {
        self.get_json(&format!("/jobs/{id}")).await
    }

    /// `GET /jobs/<id>/checkpoints`.
    pub async fn checkpoints(&self, id: &str) -> Result<CheckpointsInfo, ClientError> {
        self.get_json(&format!("/jobs/{id}/checkpoints")).await
    }

    /// `GET /taskmanagers`.
    pub async fn taskmanagers(&self) -> Result<Vec<TaskManagerInfo>, ClientError> {
        self.get_json("/taskmanagers").await
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (url, resp) = self.get("/metrics").await?;
        resp.text().await.map_err(|e| transport(&url, e))
    }

    /// Polls `/overview` every 50 ms until it answers and reports `expected_taskmanagers`
    /// registered taskmanagers, or `timeout` passes. Returns the overview that said so.
    pub async fn wait_ready(&self, expected_taskmanagers: usize, timeout: Duration) -> Result<Overview, ClientError> {
        let start = Instant::now();
        let mut last;
        loop {
            match self.overview().await {
                Ok(o) if o.taskmanagers == expected_taskmanagers => return Ok(o),
                Ok(o) => {
                    last = format!(
                        "{} of {expected_taskmanagers} taskmanagers registered (job {:?})",
                        o.taskmanagers, o.job_state
                    )
                }
                Err(e) => last = e.to_string(),
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(ClientError::NotReady { url: self.base().to_string(), waited, last });
            }
            tokio::time::sleep(READY_POLL.min(timeout - waited)).await;
        }
    }
}

impl JsonHttp {
    /// A client for `base_url` (a trailing `/` is ignored).
    pub fn new(base_url: impl Into<String>) -> Result<JsonHttp, ClientError> {
        let base = base_url.into().trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            // Requests go to nodes we start on local or bridge addresses; a proxy from the
            // environment would only get in the way.
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Http { url: base.clone(), message: e.to_string() })?;
        Ok(JsonHttp { base, http })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET <base><path>`; a non-2xx answer is [`ClientError::Status`] with its body.
    pub async fn get(&self, path: &str) -> Result<(String, reqwest::Response), ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self.http.get(&url).send().await.map_err(|e| transport(&url, e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let body = body.trim();
            // Bodies are error messages; keep the report readable if one is a page long.
            let body = if body.chars().count() > 300 {
                format!("{}…", body.chars().take(300).collect::<String>())
            } else {
                body.to_string()
            };
            return Err(ClientError::Status { url, status: status.as_u16(), body });
        }
        Ok((url, resp))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (url, resp) = self.get(path).await?;
        let bytes = resp.bytes().await.map_err(|e| transport(&url, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Json { url, message: e.to_string() })
    }
}

/// Sorts a reqwest transport error into refused / timed out / other.
fn transport(url: &str, e: reqwest::Error) -> ClientError {
    let url = url.to_string();
    if e.is_timeout() {
        ClientError::Timeout { url, timeout: REQUEST_TIMEOUT }
    } else if e.is_connect() {
        ClientError::Connect { url, message: root_cause(&e) }
    } else {
        ClientError::Http { url, message: root_cause(&e) }
    }
}

/// The innermost error message: reqwest's own Display ("error sending request") hides
/// the useful part ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
