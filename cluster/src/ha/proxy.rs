//! REST forwarding for standbys: a standby jobmanager answers `GET /jobs/...`,
//! `/taskmanagers` and `/metrics` by asking the leader, so a client (`chaos status`) works
//! whichever jobmanager it asks. (Flink's standbys redirect their web UI to the leader; a
//! redirect to an address on a container network would be useless to a client on the
//! host, so we forward instead.) A forwarded request carries [`FORWARDED_BY`]; a standby
//! never forwards a request that was forwarded already (no loops while leadership moves).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Header naming the standby that forwarded a request.
pub const FORWARDED_BY: &str = "x-streamd-forwarded-by";

/// Bound on one forwarded request (connect + answer).
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);

/// The leader's answer, to relay as it is.
#[derive(Debug)]
pub struct Forwarded {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// `GET <base_url><path_and_query>` on the leader, as standby `me`.
pub async fn get(base_url: &str, path_and_query: &str, me: &str) -> Result<Forwarded, String> {
    match tokio::time::timeout(FORWARD_TIMEOUT, get_inner(base_url, path_and_query, me)).await {
        Ok(r) => r,
        Err(_) => Err(format!("the leader at {base_url} did not answer within {FORWARD_TIMEOUT:?}")),
    }
}

async fn get_inner(base_url: &str, path_and_query: &str, me: &str) -> Result<Forwarded, String> {
    let authority = base_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("leader REST address {base_url:?} is not an http:// URL"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("cannot reach the leader at {base_url}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with the leader at {base_url}: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = Request::get(path_and_query)
        .header(hyper::header::HOST, authority)
        .header(FORWARDED_BY, me)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the forwarded request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("forwarding to the leader at {base_url}: {e}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the leader's answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(Forwarded { status, content_type, body })
}
