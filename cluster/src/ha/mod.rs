//! Jobmanager high availability through etcd, with Apache Flink's HA semantics.
//!
//! Several jobmanagers run; one leads, the others stand by. What Flink keeps in ZooKeeper
//! or Kubernetes ConfigMaps we keep in etcd, under `/streamd/<job>/`:
//!
//! | key                  | what                                                        | Flink's name               |
//! |----------------------|-------------------------------------------------------------|----------------------------|
//! | `leader`             | [`LeaderInfo`], bound to the leader's lease                 | leader election / retrieval |
//! | `job`                | the job spec, written once by the first leader             | `JobGraphStore`            |
//! | `checkpoint`         | [`CheckpointPointer`]: the latest *completed* checkpoint    | `CompletedCheckpointStore` |
//! | `checkpoint-counter` | the highest checkpoint id ever triggered                    | `CheckpointIDCounter`      |
//! | `status`             | [`JobStatusRecord`]: attempt, restarts, history, end state  | `JobResultStore` (+ history) |
//!
//! The checkpoint data itself stays in shared storage (`/data/checkpoints`), as in Flink.
//!
//! **Election** ([`election`]): a candidate grants itself a lease (TTL 2 s by default,
//! renewed every 500 ms) and creates `leader` under it in one transaction that succeeds only
//! if the key does not exist. The **leader epoch** is the key's create revision: etcd
//! revisions only grow, so every new leader has a larger epoch than all before it. Standbys
//! watch the key and campaign as soon as it is deleted (the lease lapsed or was revoked).
//!
//! **Fencing.** A leader acts only while its lease is known valid: it tracks a local deadline
//! (the send time of the last acknowledged renewal plus the TTL, never later than etcd's own
//! expiry) and checks it before every event — a paused leader wakes up past its deadline
//! and steps down before it handles anything. On top of that, everything the leader does
//! that others must be able to rely on goes through [`Store::guarded_put`], a transaction
//! that succeeds only while `leader` still carries the leader's epoch: reserving a
//! checkpoint id before triggering it, recording an attempt before deploying it, and
//! publishing the checkpoint pointer **before** telling sinks to commit. A zombie leader's
//! transaction fails, so it never notifies a commit. Every command to a taskmanager
//! carries the epoch, and taskmanagers refuse commands of an epoch older than the newest
//! they have seen.
//!
//! **Takeover.** A new leader reads [`Recovered`]: it restores the checkpoint the pointer
//! names (falling back to older intact ones, never to newer unpublished ones), continues
//! checkpoint ids above the counter and attempts above the recorded one, and keeps the
//! job's history, restarts and end state (a FINISHED job is not run again).
//!
//! **etcd down** (Flink's semantics for a lost leader lease): the leader cannot renew its
//! lease, so when its deadline passes it *revokes its own leadership*: it cancels the job
//! on its taskmanagers, closes their connections and campaigns again. Nobody leads until
//! etcd is back; then a leader is elected, restores the latest published checkpoint and
//! the job resumes. An etcd outage shorter than the lease TTL changes nothing (a checkpoint
//! whose pointer cannot be published meanwhile is discarded, as Flink discards a checkpoint
//! its `CompletedCheckpointStore` cannot store). Taskmanagers keep their session with the
//! leader while etcd is unreachable: only the leader decides to step down.

pub mod election;
pub mod follow;
pub mod proxy;

use crate::api::{FailureEvent, JobState, StateChange};
use crate::spec::JobSpec;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Default leader lease TTL. etcd counts TTLs in whole seconds, and with its default
/// election timeout (1 s) the smallest TTL it grants is 2 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);
/// Default lease renewal interval: four renewals per TTL, so one lost renewal is harmless.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_millis(500);
/// Default bound on one etcd request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// At most this many history entries and failures are kept in the status record (the
/// REST history of a job restarted thousands of times need not all live in etcd).
const STATUS_HISTORY_LIMIT: usize = 500;

/// How to reach etcd and the election timings (`--etcd`, `--lease-ttl`, `--lease-renew`).
#[derive(Debug, Clone, PartialEq)]
pub struct HaConfig {
    /// etcd client URLs, e.g. `http://etcd-1:2379`.
    pub endpoints: Vec<String>,
    /// Leader lease TTL; rounded up to whole seconds (etcd's unit).
    pub lease_ttl: Duration,
    /// How often the leader renews its lease.
    pub keepalive_interval: Duration,
    /// Upper bound of one etcd request (a write on the commit path, a read at takeover).
    pub request_timeout: Duration,
}

impl HaConfig {
    /// Default timings for `endpoints`.
    pub fn new(endpoints: Vec<String>) -> Self {
        HaConfig {
            endpoints,
            lease_ttl: DEFAULT_LEASE_TTL,
            keepalive_interval: DEFAULT_KEEPALIVE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Parses `--etcd`: a comma-separated list of URLs (`http://` is added when missing).
    pub fn parse_endpoints(s: &str) -> Result<Vec<String>, HaError> {
        let eps: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| if e.contains("://") { e.to_string() } else { format!("http://{e}") })
            .collect();
        if eps.is_empty() {
            return Err(HaError::Config(format!("--etcd {s:?}: expected one or more URLs such as http://etcd-1:2379")));
        }
        Ok(eps)
    }

    /// Checks the timings: a renewal must fit several times into the TTL.
    pub fn validate(&self) -> Result<(), HaError> {
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(HaError::Config("lease TTL: expected at least 1s (etcd counts in seconds)".into()));
        }
        if self.keepalive_interval.is_zero() || self.keepalive_interval * 2 > self.lease_ttl {
            return Err(HaError::Config(format!(
                "lease renewal every {:?} with a TTL of {:?}: expected at least two renewals per TTL",
                self.keepalive_interval, self.lease_ttl
            )));
        }
        Ok(())
    }

    /// The TTL in etcd's unit (whole seconds, rounded up).
    pub fn ttl_secs(&self) -> i64 {
        let ms = self.lease_ttl.as_millis().max(1000) as i64;
        (ms + 999) / 1000
    }
}

/// Why an HA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// The guarded transaction found another leader (or none): this jobmanager must stop acting.
    #[error("not the leader any more: {0}")]
    NotLeader(String),
    #[error("malformed value under {key}: {reason}")]
    Malformed { key: String, reason: String },
    #[error("invalid HA configuration: {0}")]
    Config(String),
}

impl HaError {
    /// A failure to talk to etcd at all (as opposed to an answer etcd gave).
    pub fn is_transport(&self) -> bool {
        use tonic::Code;
        match self {
            HaError::Timeout(_) => true,
            HaError::Etcd(etcd_client::Error::GRpcStatus(s)) => {
                matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Internal)
            }
            HaError::Etcd(etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)) => true,
            HaError::Etcd(etcd_client::Error::WatchError(_) | etcd_client::Error::LeaseKeepAliveError(_)) => true,
            _ => false,
        }
    }
}

/// The etcd keys of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `/streamd/<job_id>/`.
    pub fn new(job_id: &str) -> Self {
        Keys { prefix: format!("/streamd/{job_id}/") }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }
    pub fn job(&self) -> String {
        format!("{}job", self.prefix)
    }
    pub fn checkpoint(&self) -> String {
        format!("{}checkpoint", self.prefix)
    }
    pub fn checkpoint_counter(&self) -> String {
        format!("{}checkpoint-counter", self.prefix)
    }
    pub fn status(&self) -> String {
        format!("{}status", self.prefix)
    }
}

/// The value of the `leader` key: who leads and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub jobmanager: String,
    /// RPC address taskmanagers register with (`host:port`).
    pub rpc_address: String,
    /// Base URL of the leader's REST API (`http://host:port`).
    pub rest_url: String,
    /// The leader epoch: the create revision of the `leader` key (authoritative, read from
    /// the key's metadata; the copy in the value is for humans running `etcdctl get`).
    pub epoch: u64,
}

/// The value of the `checkpoint` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    pub checkpoint: u64,
    /// The epoch of the leader that completed it.
    pub epoch: u64,
    pub completed_ms: u64,
}

/// The value of the `status` key: what a new leader needs to continue the job's story.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatusRecord {
    /// The jobmanager that wrote it, and its epoch.
    pub leader: String,
    pub epoch: u64,
    pub state: JobState,
    /// The highest execution attempt deployed (written before the deployment is sent).
    pub attempt: u64,
    pub restarts: u64,
    pub start_ms: u64,
    pub failure_cause: Option<String>,
    pub history: Vec<StateChange>,
    pub failures: Vec<FailureEvent>,
}

impl JobStatusRecord {
    /// Drops the oldest history entries and failures beyond the storage limit.
    pub fn truncate(&mut self) {
        if self.history.len() > STATUS_HISTORY_LIMIT {
            self.history.drain(..self.history.len() - STATUS_HISTORY_LIMIT);
        }
        if self.failures.len() > STATUS_HISTORY_LIMIT {
            self.failures.drain(..self.failures.len() - STATUS_HISTORY_LIMIT);
        }
    }
}

/// One write the leader makes durable before acting on it.
#[derive(Debug, Clone)]
pub enum Record {
    /// Checkpoint ids up to this one are taken.
    CheckpointCounter(u64),
    /// The latest completed checkpoint.
    LatestCheckpoint(CheckpointPointer),
    /// The job's status (carries the attempt about to be deployed).
    Status(Box<JobStatusRecord>),
}

impl Record {
    fn key_value(&self, keys: &Keys) -> Result<(String, Vec<u8>), HaError> {
        let enc = |key: String, v: Result<Vec<u8>, serde_json::Error>| {
            v.map(|v| (key.clone(), v)).map_err(|e| HaError::Malformed { key, reason: e.to_string() })
        };
        match self {
            Record::CheckpointCounter(n) => Ok((keys.checkpoint_counter(), n.to_string().into_bytes())),
            Record::LatestCheckpoint(p) => enc(keys.checkpoint(), serde_json::to_vec(p)),
            Record::Status(s) => enc(keys.status(), serde_json::to_vec(s)),
        }
    }
}

/// What a new leader reads at takeover.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub job: Option<JobSpec>,
    pub checkpoint: Option<CheckpointPointer>,
    /// Highest checkpoint id ever reserved (0: none).
    pub checkpoint_counter: u64,
    pub status: Option<JobStatusRecord>,
}

/// How long a watch may stay silent before the key is read directly (a watch on a wedged
/// connection can stay silent for good).
pub(crate) const RESYNC: Duration = Duration::from_secs(1);

/// The fewest time between two rebuilds of the etcd client.
const REBUILD_EVERY: Duration = Duration::from_secs(1);

/// A connection to etcd for one job's HA keys. Cheap to clone (clones share the client).
#[derive(Clone)]
pub struct Store {
    client: Arc<Mutex<(Client, Instant)>>,
    opts: ConnectOptions,
    keys: Keys,
    cfg: HaConfig,
}

impl Store {
    /// Prepares a client for `cfg.endpoints`. Connections are made lazily (and remade after
    /// etcd restarts), so this succeeds while etcd is still starting.
    pub async fn connect(cfg: HaConfig, job_id: &str) -> Result<Store, HaError> {
        cfg.validate()?;
        let opts = ConnectOptions::new()
            .with_connect_timeout(cfg.request_timeout)
            // HTTP/2 pings find a frozen or partitioned etcd under a long-lived watch. Not
            // more often than etcd's `--grpc-keepalive-min-time` (5 s): it answers more
            // frequent pings with GOAWAY ("too many pings") and drops the connection.
            .with_keep_alive(Duration::from_secs(6), Duration::from_secs(3));
        let client = Client::connect(&cfg.endpoints, Some(opts.clone())).await?;
        Ok(Store { client: Arc::new(Mutex::new((client, Instant::now()))), opts, keys: Keys::new(job_id), cfg })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn config(&self) -> &HaConfig {
        &self.cfg
    }

    pub(crate) fn client(&self) -> Client {
        self.client.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Runs one etcd request with the configured bound. A timeout or a transport failure
    /// also replaces the client: after etcd restarts, a client whose connection pool got
    /// wedged would otherwise fail every request from then on, and HA would never recover.
    pub(crate) async fn timed<T>(&self, fut: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, HaError> {
        let r = match tokio::time::timeout(self.cfg.request_timeout, fut).await {
            Ok(r) => r.map_err(HaError::from),
            Err(_) => Err(HaError::Timeout(self.cfg.request_timeout)),
        };
        if let Err(e) = &r {
            if e.is_transport() {
                self.rebuild().await;
            }
        }
        r
    }

    /// Replaces the client with a fresh one (at most once per [`REBUILD_EVERY`]). Streams
    /// opened on the old one live on until they end.
    async fn rebuild(&self) {
        {
            let g = self.client.lock().unwrap_or_else(|e| e.into_inner());
            if g.1.elapsed() < REBUILD_EVERY {
                return;
            }
        }
        match Client::connect(&self.cfg.endpoints, Some(self.opts.clone())).await {
            Ok(c) => {
                tracing::debug!("etcd client rebuilt after a failed request");
                *self.client.lock().unwrap_or_else(|e| e.into_inner()) = (c, Instant::now());
            }
            Err(e) => tracing::debug!("rebuilding the etcd client: {e}"),
        }
    }

    /// Reads everything a new leader needs, in one request (one consistent revision).
    pub async fn recover(&self) -> Result<Recovered, HaError> {
        let mut c = self.client();
        let resp = self.timed(c.get(self.keys.prefix(), Some(GetOptions::new().with_prefix()))).await?;
        let mut out = Recovered::default();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let bad = |reason: String| HaError::Malformed { key: key.clone(), reason };
            if key == self.keys.job() {
                out.job = Some(serde_json::from_slice(kv.value()).map_err(|e| bad(e.to_string()))?);
            } else if key == self.keys.checkpoint() {
                out.checkpoint = Some(serde_json::from_slice(kv.value()).map_err(|e| bad(e.to_string()))?);
            } else if key == self.keys.checkpoint_counter() {
                let s = std::str::from_utf8(kv.value()).map_err(|e| bad(e.to_string()))?;
                out.checkpoint_counter = s.trim().parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?;
            } else if key == self.keys.status() {
                out.status = Some(serde_json::from_slice(kv.value()).map_err(|e| bad(e.to_string()))?);
            }
        }
        Ok(out)
    }

    /// Writes `records` in one transaction that succeeds only while the `leader` key was
    /// created at revision `epoch`, i.e. while the caller still leads. `NotLeader` when it
    /// does not: the caller must stop acting as leader.
    pub async fn guarded_put(&self, epoch: u64, records: &[Record]) -> Result<(), HaError> {
        let mut ops = Vec::with_capacity(records.len());
        for r in records {
            let (k, v) = r.key_value(&self.keys)?;
            ops.push(TxnOp::put(k, v, None));
        }
        self.guarded(epoch, ops).await
    }

    /// Stores the job spec unless one is stored already (the first leader's spec wins, so
    /// every later leader runs the same job, whatever its local file says).
    pub async fn publish_job(&self, epoch: u64, job: &JobSpec) -> Result<(), HaError> {
        let key = self.keys.job();
        let v = serde_json::to_vec(job).map_err(|e| HaError::Malformed { key: key.clone(), reason: e.to_string() })?;
        let txn = Txn::new()
            .when([
                Compare::create_revision(self.keys.leader(), CompareOp::Equal, epoch as i64),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key, v, None)]);
        let mut c = self.client();
        // Failing the second compare (the spec exists) is the normal case, not an error.
        self.timed(c.txn(txn)).await.map(|_| ())
    }

    async fn guarded(&self, epoch: u64, ops: Vec<TxnOp>) -> Result<(), HaError> {
        let txn = Txn::new()
            .when([Compare::create_revision(self.keys.leader(), CompareOp::Equal, epoch as i64)])
            .and_then(ops);
        let mut c = self.client();
        let resp = self.timed(c.txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(HaError::NotLeader(format!("{} no longer holds epoch {epoch}", self.keys.leader())))
        }
    }

    /// Puts `key` bound to `lease` while `leader` still has epoch `epoch`.
    pub(crate) async fn guarded_put_with_lease(&self, epoch: u64, key: String, value: Vec<u8>, lease: i64) -> Result<(), HaError> {
        self.guarded(epoch, vec![TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_as_a_comma_list() {
        assert_eq!(
            HaConfig::parse_endpoints("http://etcd-1:2379, etcd-2:2379").unwrap(),
            vec!["http://etcd-1:2379".to_string(), "http://etcd-2:2379".to_string()]
        );
        assert!(HaConfig::parse_endpoints(" , ").is_err());
    }

    #[test]
    fn timings_are_validated_and_ttl_rounds_up() {
        let mut c = HaConfig::new(vec!["http://e:2379".into()]);
        c.validate().unwrap();
        assert_eq!(c.ttl_secs(), 2);
        c.lease_ttl = Duration::from_millis(2500);
        assert_eq!(c.ttl_secs(), 3);
        c.keepalive_interval = Duration::from_secs(2);
        assert!(c.validate().is_err());
        c.lease_ttl = Duration::from_millis(500);
        assert!(c.validate().is_err());
        // The limits themselves are allowed: a 1 s TTL renewed exactly twice per TTL.
        c.lease_ttl = Duration::from_secs(1);
        c.keepalive_interval = Duration::from_millis(500);
        c.validate().unwrap();
    }

    /// Only a failure to reach etcd is retried as one (a reconnect); an answer etcd gave,
    /// or a lost leadership, is not.
    #[test]
    fn transport_failures_are_told_from_answers() {
        use etcd_client::Error as E;
        let transport = [
            HaError::Timeout(Duration::from_secs(1)),
            HaError::Etcd(E::GRpcStatus(tonic::Status::unavailable("connection refused"))),
            HaError::Etcd(E::IoError(std::io::Error::other("reset"))),
            HaError::Etcd(E::WatchError("stream ended".into())),
            HaError::Etcd(E::LeaseKeepAliveError("stream ended".into())),
        ];
        for e in &transport {
            assert!(e.is_transport(), "{e}");
        }
        let answers = [
            HaError::Etcd(E::GRpcStatus(tonic::Status::failed_precondition("compacted"))),
            HaError::NotLeader("another leader".into()),
            HaError::Malformed { key: "k".into(), reason: "r".into() },
        ];
        for e in &answers {
            assert!(!e.is_transport(), "{e}");
        }
    }

    #[test]
    fn keys_live_under_the_job() {
        let k = Keys::new("wc");
        assert_eq!(k.leader(), "/streamd/wc/leader");
        assert_eq!(k.checkpoint(), "/streamd/wc/checkpoint");
        assert_eq!(k.checkpoint_counter(), "/streamd/wc/checkpoint-counter");
        assert_eq!(k.prefix(), "/streamd/wc/");
        assert!(k.status().starts_with(k.prefix()) && k.job().starts_with(k.prefix()));
    }

    /// History and failures are each bounded, the newest kept: a job restarting for days
    /// must not outgrow etcd's value size limit.
    #[test]
    fn status_history_and_failures_are_bounded_to_the_newest() {
        let h = |at_ms| StateChange { state: JobState::Running, at_ms, attempt: 1, reason: String::new() };
        let f = |at_ms| FailureEvent { at_ms, attempt: 1, taskmanager: None, jobmanager: None, cause: String::new() };
        let n = STATUS_HISTORY_LIMIT as u64;
        let mut s = JobStatusRecord {
            leader: "jm".into(),
            epoch: 1,
            state: JobState::Running,
            attempt: 1,
            restarts: 0,
            start_ms: 0,
            failure_cause: None,
            history: (0..n + 10).map(h).collect(),
            failures: (0..n + 3).map(f).collect(),
        };
        s.truncate();
        assert_eq!(s.history.len(), STATUS_HISTORY_LIMIT);
        assert_eq!((s.history[0].at_ms, s.history.last().unwrap().at_ms), (10, n + 9));
        assert_eq!(s.failures.len(), STATUS_HISTORY_LIMIT);
        assert_eq!((s.failures[0].at_ms, s.failures.last().unwrap().at_ms), (3, n + 2));
        // At the limit nothing is dropped.
        s.truncate();
        assert_eq!((s.history.len(), s.failures[0].at_ms), (STATUS_HISTORY_LIMIT, 3));
    }
}
