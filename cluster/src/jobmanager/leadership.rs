//! Leading and standing by. `lead` drives a master: events, timers, and its HA ops, each
//! written through a leadership-guarded etcd transaction before the master acts on it; and
//! before every step it checks that the lease still holds (a leader that was frozen must not
//! act when it wakes up). Without HA a jobmanager leads at once and for good. With HA,
//! `run_ha` is its life: stand by (`stand_by`: campaign, point the REST view at the
//! leader, hold taskmanager registrations briefly), take over from what the previous leader
//! made durable, lead, step down when the lease is lost, stand by again.

use super::config::JmConfig;
use super::master::JobMaster;
use super::rpc::Event;
use super::view::{initial_view, SharedView};
use crate::ha::{self, HaConfig, HaError, LeaderInfo};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why a leadership ended.
pub(super) enum End {
    Shutdown,
    Lost(String),
}

/// Drives a master: events, timers, and its HA ops (each made durable before the master
/// acts on it). Returns on shutdown or when leadership is lost.
pub(super) async fn lead<F: Future<Output = ()>>(
    jm: &mut JobMaster,
    ev_rx: &mut mpsc::UnboundedReceiver<Event>,
    mut ha: Option<(&ha::Store, &mut ha::election::Leadership)>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> End {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            _ = &mut *shutdown => return End::Shutdown,
            why = lease_lost(&mut ha) => return End::Lost(why),
            Some(ev) = ev_rx.recv() => Some(ev),
            _ = tick.tick() => None,
        };
        // The zombie check: a leader that was frozen (SIGSTOP, docker pause) resumes right
        // here, with its lease lapsed and maybe a successor elected. It must not act on the
        // event it just woke up to.
        if let Some((_, l)) = &ha {
            if !l.is_valid() {
                return End::Lost("the leader lease lapsed before it could be renewed (was this jobmanager frozen, or etcd unreachable?)".into());
            }
        }
        match ev {
            Some(ev) => jm.handle_event(ev),
            None => jm.tick(),
        }
        while let Some(op) = jm.next_op() {
            let result = match &ha {
                None => Ok(()),
                Some((store, l)) => {
                    if l.is_valid() {
                        store.guarded_put(l.epoch(), &op.records).await
                    } else {
                        Err(HaError::NotLeader("the leader lease lapsed".into()))
                    }
                }
            };
            // Even when leadership is gone the op is settled first: an unpublished
            // completion's `_metadata` is discarded, not left behind.
            let lost = match &result {
                Err(HaError::NotLeader(why)) => Some(why.clone()),
                _ => None,
            };
            jm.op_done(op, result);
            if let Some(why) = lost {
                return End::Lost(why);
            }
        }
    }
}

async fn lease_lost(ha: &mut Option<(&ha::Store, &mut ha::election::Leadership)>) -> String {
    match ha {
        Some((_, l)) => l.lost().await,
        None => std::future::pending().await,
    }
}

/// The HA life of a jobmanager: stand by, lead, step down, stand by again.
pub(super) async fn run_ha<F: Future<Output = ()>>(
    cfg: JmConfig,
    ha_cfg: HaConfig,
    view: SharedView,
    ev_rx: &mut mpsc::UnboundedReceiver<Event>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> anyhow::Result<()> {
    let store = ha::Store::connect(ha_cfg, &cfg.job.job_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut leader_rx = ha::follow::follow(store.clone());
    let me = ha::election::Candidate {
        jobmanager: cfg.id.clone(),
        rpc_address: cfg.rpc_advertise.clone(),
        rest_url: cfg.rest_url.clone(),
    };
    loop {
        let Some((mut leadership, held)) = stand_by(&store, &me, &cfg, &view, &mut leader_rx, ev_rx, shutdown).await else {
            return Ok(());
        };
        let epoch = leadership.epoch();
        let rec = match store.recover().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the job's HA state; giving leadership up: {e}");
                leadership.release(&store);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut leader_cfg = cfg.clone();
        match &rec.job {
            Some(job) => {
                if *job != cfg.job {
                    tracing::warn!("the job spec in etcd differs from {}: running the stored one", cfg.job.job_id);
                }
                leader_cfg.job = job.clone();
            }
            None => {
                if let Err(e) = store.publish_job(epoch, &cfg.job).await {
                    tracing::warn!("cannot store the job spec in etcd: {e}");
                }
            }
        }
        tracing::info!(epoch, checkpoint = ?rec.checkpoint.map(|p| p.checkpoint), "leading");
        let mut jm = JobMaster::with_view(leader_cfg, epoch, view.clone());
        jm.resume(&rec);
        for ev in held {
            jm.handle_event(ev);
        }
        match lead(&mut jm, ev_rx, Some((&store, &mut leadership)), shutdown).await {
            End::Shutdown => {
                jm.step_down("shutting down");
                // Revoking the lease lets a standby take over at once instead of after the TTL.
                leadership.resign(&store).await;
                return Ok(());
            }
            End::Lost(why) => {
                jm.step_down(&why);
                leadership.release(&store);
            }
        }
    }
}

/// How long a standby holds a taskmanager's registration before refusing it: taskmanagers
/// learn of a new leader from etcd at the same moment the leader does, and may knock
/// before it has switched from standby to leading.
const HOLD_REGISTRATION: Duration = Duration::from_secs(1);

/// Standby: serve REST pointing at the leader, campaign, hold taskmanager registrations
/// briefly (handed to the master if this jobmanager wins, refused otherwise). `None` on
/// shutdown.
async fn stand_by<F: Future<Output = ()>>(
    store: &ha::Store,
    me: &ha::election::Candidate,
    cfg: &JmConfig,
    view: &SharedView,
    leader_rx: &mut tokio::sync::watch::Receiver<Option<LeaderInfo>>,
    ev_rx: &mut mpsc::UnboundedReceiver<Event>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<(ha::election::Leadership, Vec<Event>)> {
    let set_view = |known: Option<&LeaderInfo>| {
        if let Ok(mut v) = view.write() {
            *v = initial_view(cfg, false, known.filter(|l| l.jobmanager != cfg.id));
        }
    };
    set_view(leader_rx.borrow().as_ref());
    let mut held: Vec<(Instant, Event)> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let campaign = store.campaign(me);
        tokio::pin!(campaign);
        let result = loop {
            tokio::select! {
                _ = &mut *shutdown => return None,
                r = &mut campaign => break r,
                Some(ev) = ev_rx.recv() => match ev {
                    Event::Registered { .. } => held.push((Instant::now(), ev)),
                    // A held taskmanager gave up waiting.
                    Event::Lost { conn, .. } => held.retain(|(_, e)| !matches!(e, Event::Registered { conn: c, .. } if *c == conn)),
                    // Traffic of connections of an earlier leadership.
                    Event::Message { .. } => {}
                },
                Ok(()) = leader_rx.changed() => set_view(leader_rx.borrow().as_ref()),
                _ = tokio::time::sleep(Duration::from_millis(100)), if !held.is_empty() => {
                    held.retain(|(at, ev)| {
                        let keep = at.elapsed() < HOLD_REGISTRATION;
                        if let (false, Event::Registered { id, reader, .. }) = (keep, ev) {
                            // Not the leader: close the connection; the taskmanager asks etcd again.
                            tracing::debug!(tm = %id, "refusing a registration: this jobmanager is a standby");
                            reader.abort();
                        }
                        keep
                    });
                }
            }
        };
        match result {
            Ok(l) => {
                if let Ok(mut v) = view.write() {
                    *v = initial_view(cfg, true, None);
                }
                return Some((l, held.into_iter().map(|(_, ev)| ev).collect()));
            }
            Err(e) => {
                tracing::warn!("campaigning for leadership: {e}; retrying in {} ms", backoff.as_millis());
                tokio::select! {
                    _ = &mut *shutdown => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
