//! Leader election with an etcd lease, and the leader's watch over its own lease.
//!
//! [`Store::campaign`] returns once this jobmanager leads; the [`Leadership`] it returns
//! renews the lease in the background and says when leadership is lost: the lease expired,
//! or it could not be renewed before the local deadline (etcd unreachable). The deadline is
//! the *send* time of the last acknowledged renewal plus the TTL — never later than the
//! moment etcd itself expires the lease, so a jobmanager never believes it leads while
//! another may already have been elected.

use super::{HaError, LeaderInfo, Store};
use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long [`Leadership::release`] keeps trying to revoke a lease while etcd is down.
const RELEASE_PATIENCE: Duration = Duration::from_secs(60);

/// Who campaigns: the jobmanager's id and where to reach it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub jobmanager: String,
    pub rpc_address: String,
    pub rest_url: String,
}

/// This jobmanager leads, for as long as [`Leadership::is_valid`] says so.
pub struct Leadership {
    epoch: u64,
    lease: i64,
    deadline: Arc<Mutex<Instant>>,
    lost_rx: watch::Receiver<Option<String>>,
    keeper: JoinHandle<()>,
}

impl Leadership {
    /// The leader epoch (the create revision of the `leader` key).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The etcd lease id.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Whether the lease is known to be valid *now* (no I/O: a monotonic-clock check, so
    /// it is right even in the first instant after a SIGSTOP/SIGCONT).
    pub fn is_valid(&self) -> bool {
        self.lost_rx.borrow().is_none() && Instant::now() < self.deadline()
    }

    /// When the lease may lapse, by the local clock.
    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves with the reason once the lease keeper reports the loss. (The deadline
    /// itself is checked by [`Leadership::is_valid`], which callers consult before acting.)
    pub async fn lost(&mut self) -> String {
        match self.lost_rx.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone().unwrap_or_default(),
            Err(_) => "the lease keeper stopped".to_string(),
        }
    }

    /// Gives leadership up: stops renewing and revokes the lease in the background (which
    /// deletes the `leader` key at once, so nobody waits for the TTL). While etcd is
    /// unreachable it keeps trying: etcd *extends* leases when it restarts, so without the
    /// revocation a deposed leader's key would outlive the outage by another TTL.
    pub fn release(self, store: &Store) {
        self.keeper.abort();
        let store = store.clone();
        let lease = self.lease;
        let give_up = Instant::now() + RELEASE_PATIENCE;
        tokio::spawn(async move {
            while Instant::now() < give_up {
                let mut c = store.client();
                match store.timed(c.lease_revoke(lease)).await {
                    Ok(_) => return,
                    // Already gone (expired): nothing to revoke.
                    Err(HaError::Etcd(e)) if e.to_string().contains("not found") => return,
                    Err(e) => tracing::debug!("revoking lease {lease:x}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Waits for the revocation of [`Leadership::release`] (graceful shutdown).
    pub async fn resign(self, store: &Store) {
        self.keeper.abort();
        let mut c = store.client();
        if let Err(e) = store.timed(c.lease_revoke(self.lease)).await {
            tracing::debug!("revoking the lease on shutdown: {e}");
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Store {
    /// Campaigns until `me` leads. Returns an error when etcd fails (the caller retries
    /// after a pause); while another jobmanager leads, waits for its key to disappear.
    pub async fn campaign(&self, me: &Candidate) -> Result<Leadership, HaError> {
        let key = self.keys().leader();
        loop {
            let sent = Instant::now();
            let mut c = self.client();
            let lease = self.timed(c.lease_grant(self.config().ttl_secs(), None)).await?;
            let (lease_id, ttl) = (lease.id(), lease.ttl().max(1) as u64);
            let info = |epoch| LeaderInfo {
                jobmanager: me.jobmanager.clone(),
                rpc_address: me.rpc_address.clone(),
                rest_url: me.rest_url.clone(),
                epoch,
            };
            let value = serde_json::to_vec(&info(0))
                .map_err(|e| HaError::Malformed { key: key.clone(), reason: e.to_string() })?;
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(lease_id)))])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = match self.timed(c.txn(txn)).await {
                Ok(r) => r,
                Err(e) => {
                    self.revoke_quietly(lease_id);
                    return Err(e);
                }
            };
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.succeeded() && revision > 0 {
                let epoch = revision as u64;
                // The epoch in the value is informational (readers use the create revision).
                if let Ok(v) = serde_json::to_vec(&info(epoch)) {
                    if let Err(e) = self.guarded_put_with_lease(epoch, key.clone(), v, lease_id).await {
                        tracing::debug!("recording the epoch in the leader key: {e}");
                    }
                }
                tracing::info!(epoch, lease = format!("{lease_id:x}"), ttl_s = ttl, "elected leader");
                return Ok(self.start_keeper(epoch, lease_id, sent + Duration::from_secs(ttl)));
            }
            self.revoke_quietly(lease_id);
            // Someone else leads: wait for its key to go (lease lapsed or revoked).
            let opts = WatchOptions::new().with_start_revision(revision + 1);
            let mut ws = self.timed(c.watch(key.clone(), Some(opts))).await?;
            loop {
                match tokio::time::timeout(super::RESYNC, ws.message()).await {
                    Ok(m) => {
                        let Some(m) = m? else {
                            return Err(HaError::Etcd(etcd_client::Error::WatchError("etcd ended the watch stream".into())));
                        };
                        // Cancelled (compacted): campaign again from a fresh read.
                        if m.canceled() || m.events().iter().any(|e| e.event_type() == EventType::Delete) {
                            break;
                        }
                    }
                    // A watch on a wedged connection can stay silent for good: look directly.
                    Err(_) => {
                        if self.timed(self.client().get(key.clone(), None)).await?.kvs().is_empty() {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn revoke_quietly(&self, lease: i64) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut c = store.client();
            let _ = store.timed(c.lease_revoke(lease)).await;
        });
    }

    fn start_keeper(&self, epoch: u64, lease: i64, deadline: Instant) -> Leadership {
        let deadline = Arc::new(Mutex::new(deadline));
        let (lost_tx, lost_rx) = watch::channel(None);
        let keeper = tokio::spawn(keep_alive(self.clone(), lease, deadline.clone(), lost_tx));
        Leadership { epoch, lease, deadline, lost_rx, keeper }
    }
}

/// Renews the lease every `keepalive_interval`; moves the deadline on each acknowledged
/// renewal; reports loss when etcd says the lease is gone or the deadline passes.
async fn keep_alive(store: Store, lease: i64, deadline: Arc<Mutex<Instant>>, lost: watch::Sender<Option<String>>) {
    let every = store.config().keepalive_interval;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream = None;
    let get_deadline = || *deadline.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        tick.tick().await;
        if Instant::now() >= get_deadline() {
            tracing::warn!(lease = format!("{lease:x}"), "lease not renewed in time (etcd unreachable?)");
            let _ = lost.send(Some("the leader lease could not be renewed before it lapsed (etcd unreachable)".into()));
            return;
        }
        if stream.is_none() {
            let mut c = store.client();
            match store.timed(c.lease_keep_alive(lease)).await {
                Ok(s) => stream = Some(s),
                Err(e) => {
                    tracing::debug!("opening the lease keep-alive stream: {e}");
                    continue;
                }
            }
        }
        let Some((keeper, responses)) = stream.as_mut() else { continue };
        let sent = Instant::now();
        let renewed = tokio::time::timeout(every, async {
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        match renewed {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                let until = sent + Duration::from_secs(r.ttl() as u64);
                let mut d = deadline.lock().unwrap_or_else(|e| e.into_inner());
                if until > *d {
                    *d = until;
                }
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease = format!("{lease:x}"), "etcd says the leader lease expired");
                let _ = lost.send(Some("the leader lease expired".into()));
                return;
            }
            // An error, the end of the stream, or no answer in time: a late answer must not
            // be mistaken for the next renewal's, so reopen the stream.
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => stream = None,
        }
    }
}
