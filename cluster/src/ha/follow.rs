//! Leader retrieval: follow the `leader` key (Flink's `LeaderRetrievalService`).
//!
//! Taskmanagers use it to find the jobmanager to register with, standbys to point REST
//! clients at the leader. The value is kept while etcd is unreachable: a taskmanager keeps
//! its session with the leader it knows, and only the leader decides to step down.

use super::{LeaderInfo, Store};
use etcd_client::{EventType, KeyValue, WatchOptions};
use std::time::Duration;
use tokio::sync::watch;

/// Pause between attempts when etcd is unreachable.
const RETRY: Duration = Duration::from_millis(200);

/// Starts following the leader key; the receiver always holds the latest known leader
/// (`None`: nobody leads, or not known yet). The task ends when every receiver is dropped.
pub fn follow(store: Store) -> watch::Receiver<Option<LeaderInfo>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = follow_once(&store, &tx) => {
                    if let Err(e) = r {
                        tracing::debug!("following the leader key: {e}");
                    }
                }
                _ = tx.closed() => return,
            }
            tokio::time::sleep(RETRY).await;
        }
    });
    rx
}

/// Reads the key, then watches it from the next revision until the stream breaks; a
/// silent watch is backed by a direct read every [`super::RESYNC`]. Values are applied in
/// revision order only (a read may overtake watch events still in flight).
async fn follow_once(store: &Store, tx: &watch::Sender<Option<LeaderInfo>>) -> Result<(), super::HaError> {
    let key = store.keys().leader();
    let mut c = store.client();
    let resp = store.timed(c.get(key.clone(), None)).await?;
    let mut applied = resp.header().map(|h| h.revision()).unwrap_or(0);
    publish(tx, resp.kvs().first().and_then(parse));
    let mut ws = store.timed(c.watch(key.clone(), Some(WatchOptions::new().with_start_revision(applied + 1)))).await?;
    loop {
        match tokio::time::timeout(super::RESYNC, ws.message()).await {
            Ok(m) => {
                let Some(m) = m? else { return Ok(()) };
                if m.canceled() {
                    return Ok(());
                }
                for e in m.events() {
                    let Some(kv) = e.kv() else { continue };
                    if kv.mod_revision() <= applied {
                        continue;
                    }
                    applied = kv.mod_revision();
                    match e.event_type() {
                        EventType::Put => publish(tx, parse(kv)),
                        EventType::Delete => publish(tx, None),
                    }
                }
            }
            Err(_) => {
                let resp = store.timed(store.client().get(key.clone(), None)).await?;
                let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                if revision > applied {
                    applied = revision;
                    publish(tx, resp.kvs().first().and_then(parse));
                }
            }
        }
    }
}

fn publish(tx: &watch::Sender<Option<LeaderInfo>>, v: Option<LeaderInfo>) {
    tx.send_if_modified(|cur| {
        if *cur == v {
            false
        } else {
            tracing::info!(leader = ?v.as_ref().map(|l| (&l.jobmanager, l.epoch)), "leader changed");
            *cur = v;
            true
        }
    });
}

/// The leader in a key-value pair; the epoch is the key's create revision.
pub fn parse(kv: &KeyValue) -> Option<LeaderInfo> {
    match serde_json::from_slice::<LeaderInfo>(kv.value()) {
        Ok(mut l) => {
            l.epoch = kv.create_revision().max(0) as u64;
            Some(l)
        }
        Err(e) => {
            tracing::warn!("ignoring a malformed leader key: {e}");
            None
        }
    }
}
