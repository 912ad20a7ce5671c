//! A REST client for a streamd jobmanager (DESIGN.md section 3, "REST API").
//!
//! Everything `chaos` reports about a job comes from here, never from log greps. Timeouts
//! are short (2 s): a jobmanager that does not answer in that time is itself news (paused,
//! partitioned), and the caller decides whether to retry.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use streamd_contract::api::{CheckpointsInfo, IntervalInfo, JobDetails, Overview, TaskManagerInfo};

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
///
/// hyper's own client (the one bollard already builds on), not a higher-level HTTP crate:
/// these are plain GETs to nodes we started, on local or bridge addresses (no TLS, no
/// proxy, no redirects), and one HTTP stack less is a faster first build.
#[derive(Debug, Clone)]
pub struct JsonHttp {
    base: String,
    http: HttpClient,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<hyper::body::Bytes>,
>;

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

    /// `GET /jobs/<id>/checkpoints/interval`.
    pub async fn interval(&self, id: &str) -> Result<IntervalInfo, ClientError> {
        self.get_json(&format!("/jobs/{id}/checkpoints/interval")).await
    }

    /// `GET /taskmanagers`.
    pub async fn taskmanagers(&self) -> Result<Vec<TaskManagerInfo>, ClientError> {
        self.get_json("/taskmanagers").await
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (_, body) = self.http.get("/metrics").await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
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
        if let Err(e) = format!("{base}/").parse::<hyper::Uri>() {
            return Err(ClientError::Http { url: base, message: format!("not a URL: {e}") });
        }
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(JsonHttp { base, http })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET <base><path>` and its whole body, connecting and answering within
    /// [`REQUEST_TIMEOUT`]; a non-2xx answer is [`ClientError::Status`] with its body.
    pub async fn get(&self, path: &str) -> Result<(String, hyper::body::Bytes), ClientError> {
        use http_body_util::BodyExt;
        let url = format!("{}{path}", self.base);
        let uri: hyper::Uri = url.parse().map_err(|e| ClientError::Http { url: url.clone(), message: format!("not a URL: {e}") })?;
        let exchange = async {
            let resp = self.http.get(uri).await.map_err(|e| transport(&url, &e, e.is_connect()))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| transport(&url, &e, false))?.to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r?,
            Err(_) => return Err(ClientError::Timeout { url, timeout: REQUEST_TIMEOUT }),
        };
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body);
            let body = body.trim();
            // Bodies are error messages; keep the report readable if one is a page long.
            let body = if body.chars().count() > 300 {
                format!("{}…", body.chars().take(300).collect::<String>())
            } else {
                body.to_string()
            };
            return Err(ClientError::Status { url, status: status.as_u16(), body });
        }
        Ok((url, body))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (url, body) = self.get(path).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Json { url, message: e.to_string() })
    }
}

/// Sorts a transport error into refused (nothing to connect to) or other; timeouts are
/// the caller's (the whole exchange has one deadline).
fn transport(url: &str, e: &(dyn std::error::Error + 'static), connect: bool) -> ClientError {
    let url = url.to_string();
    if connect {
        ClientError::Connect { url, message: root_cause(e) }
    } else {
        ClientError::Http { url, message: root_cause(e) }
    }
}

/// The innermost error message: the client's own Display ("client error (Connect)")
/// hides the useful part ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
