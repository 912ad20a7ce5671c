//! The jobmanager: accepts taskmanager registrations, watches heartbeats, places the job's
//! pipelines on slots, coordinates checkpoints, restarts the job on failure (per its
//! restart strategy, restoring the latest completed checkpoint), and serves REST.
//!
//! With high availability (`--etcd`, see [`crate::ha`]) the jobmanager campaigns for
//! leadership and runs a [`JobMaster`] only while it leads. Steps others must be able to
//! rely on after a failover — triggering a checkpoint id, deploying an attempt, telling
//! sinks a checkpoint completed — are queued as [`HaOp`]s: the leadership loop makes their
//! records durable through a leadership-guarded etcd transaction first, and only then does
//! the `JobMaster` act. Without HA the ops complete at once.
//!
//! # Layout (lower layers first; none imports a higher one)
//! - [`config`]: [`JmConfig`], how a jobmanager is started.
//! - [`view`]: the REST view, written by the master, read by the REST server.
//! - [`rpc`]: the RPC listener: taskmanager connections, their frames as [`Event`]s.
//! - [`attempts`]: the attempt counter without HA; [`checkpoints`]: the checkpoint
//!   coordinator; [`interval`]: the adaptive checkpoint interval (pure estimates and choice);
//!   [`catch_up`]: which completed checkpoints a restore of an older one must re-take.
//! - [`ops`]: [`HaOp`], a step taken only once its records are durable.
//! - [`master`]: [`JobMaster`], the actor that makes every decision: registrations,
//!   heartbeats, failures and restarts, scheduling, checkpoints, the master's side of HA.
//! - [`leadership`]: driving a master while leading (fenced by the lease); with HA, standing
//!   by, campaigning, taking over, stepping down.
//! - [`rest`]: the REST API over the view.
//! - here: [`run`], which opens the listeners and then leads at once (no HA) or lives the
//!   HA life.

pub mod attempts;
pub mod catch_up;
pub mod checkpoints;
pub mod config;
pub mod interval;
pub mod leadership;
pub mod master;
pub mod ops;
pub mod rest;
pub mod rpc;
pub mod view;

pub use config::JmConfig;
pub use master::JobMaster;
pub use ops::HaOp;
pub use rpc::Event;
pub use view::{SharedView, View};

use leadership::{lead, run_ha};
use rpc::accept_loop;
use std::future::Future;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use view::initial_view;

/// Runs a jobmanager until `shutdown` resolves. Without HA it leads at once (epoch 1);
/// with HA it stands by, campaigns, leads while its lease holds, and steps down and
/// campaigns again when it is lost.
pub async fn run(cfg: JmConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let rpc = TcpListener::bind(&cfg.rpc_bind).await.map_err(|e| anyhow::anyhow!("cannot listen on RPC address {}: {e}", cfg.rpc_bind))?;
    let rest = TcpListener::bind(&cfg.rest_bind).await.map_err(|e| anyhow::anyhow!("cannot listen on REST address {}: {e}", cfg.rest_bind))?;
    tracing::info!(id = %cfg.id, rpc = %cfg.rpc_bind, rest = %cfg.rest_bind, job = %cfg.job.job_id, ha = cfg.ha.is_some(), "jobmanager started");
    let view: SharedView = Arc::new(RwLock::new(initial_view(&cfg, cfg.ha.is_none(), None)));
    let rest_task = tokio::spawn(rest::serve(rest, view.clone()));
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let accept = tokio::spawn(accept_loop(rpc, ev_tx));
    tokio::pin!(shutdown);
    let result = match cfg.ha.clone() {
        None => {
            let mut jm = JobMaster::with_view(cfg, 1, view);
            lead(&mut jm, &mut ev_rx, None, &mut shutdown).await;
            Ok(())
        }
        Some(ha_cfg) => run_ha(cfg, ha_cfg, view, &mut ev_rx, &mut shutdown).await,
    };
    tracing::info!("jobmanager shutting down");
    accept.abort();
    rest_task.abort();
    result
}
