//! The steps a leader takes only once their records are durable in HA storage: an
//! [`HaOp`] and what it does afterwards (`Then`). The master queues them, the leadership
//! loop ([`super::leadership`]) writes their records through a leadership-guarded etcd
//! transaction, and only then does the master act (`JobMaster::op_done`). Without HA there
//! is nothing to write and they complete at once.

use crate::ha::Record;
use crate::snapshot::Metadata;
use crate::wire::Deployment;

/// A step the leader takes only once `records` are durable in HA storage (see
/// [`crate::ha`]); produced by [`JobMaster::next_op`], completed by [`JobMaster::op_done`].
///
/// [`JobMaster::next_op`]: super::master::JobMaster::next_op
/// [`JobMaster::op_done`]: super::master::JobMaster::op_done
#[derive(Debug)]
pub struct HaOp {
    pub records: Vec<Record>,
    pub(super) then: Then,
}

/// What an [`HaOp`] does once its records are written.
#[derive(Debug)]
pub(super) enum Then {
    /// Only the status record.
    Nothing,
    /// Send the triggers of a checkpoint whose id is reserved.
    Trigger { attempt: u64, checkpoint: u64 },
    /// Send the deployments of an attempt that is recorded.
    Deploy { attempt: u64, deployments: Vec<(String, Deployment)> },
    /// Tell the sinks a checkpoint completed: its pointer is published. `catch_up`: it
    /// re-took a checkpoint that had completed before (see `jobmanager::catch_up`).
    Complete { metadata: Box<Metadata>, is_final: bool, catch_up: bool, attempt: u64 },
}
