//! Disk faults: slow, failing and full storage under a node's /data, through a FUSE
//! passthrough filesystem.
//!
//! # How
//! For a run that uses disk faults (or `cluster.checkpoint_storage`), every node's /data
//! is not the run directory itself but a passthrough view of it: a `chaos-netd disk`
//! daemon on the host ([`mount`]) mounts it with `fuser` (pure Rust, no libfuse: it
//! mounts /dev/fuse itself as root), and the node's container binds that view. Each
//! operation the node makes (open, read, write, fsync, rename) passes the node's current
//! faults first ([`rules`]): it waits, or fails with EIO/ENOSPC/EROFS without reaching the
//! backing file. The faults live in a control file that `chaos` rewrites atomically and
//! the daemon follows, so applying or undoing a fault is one rename; the daemon publishes
//! what it measured ([`stats`]) beside it.
//!
//! # Power loss
//! `lose_unsynced: true` on a `kill`, `stop` or `restart` makes the node lose what it had
//! not made durable, as after a power cut: after the node is dead, `chaos` asks its daemon
//! (through the control file) to roll back every write not fsynced and every directory
//! entry change whose directory was not fsynced ([`unsynced`], lazyfs's semantics), and
//! waits for the account in the stats file ([`faults::power_loss`]). The undo log is kept
//! only for runs that can lose power (the control file's `track_unsynced`).
//!
//! # Undo
//! Each applied fault is announced in the run's undo journal (the network faults' one)
//! before it is written; undoing removes it from the control file. `chaos down` stops the
//! daemons and removes the mounts ([`mount::stop_all`]), also after a crash.
//!
//! # Layout
//! - [`rules`]: the control file and the decision for one operation (pure).
//! - [`stats`]: the measurements.
//! - [`fs`]: the FUSE passthrough; [`daemon`]: `chaos-netd disk`.
//! - [`mount`]: starting, finding and stopping the daemons from the host.
//! - [`faults`]: applying and undoing faults, for the run loop and `chaos disk`; power
//!   losses.
//! - [`unsynced`]: the undo log of what a node has not fsynced, and the rollback.

pub mod daemon;
pub mod faults;
pub mod fs;
pub mod mount;
pub mod rules;
pub mod stats;
pub mod unsynced;

pub use rules::{Control, DiskFault, DiskKind, Errno, Op, StorageModel};

/// A disk fault that could not be applied or undone.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The request makes no sense: the node has no passthrough (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Files, mounts, the daemon (exit 3).
    #[error("{0}")]
    Io(String),
}

impl From<DiskError> for crate::error::ChaosError {
    fn from(e: DiskError) -> Self {
        match e {
            DiskError::Usage(m) => crate::error::ChaosError::Usage(m),
            DiskError::Io(m) => crate::error::ChaosError::Infrastructure(format!("disk faults: {m}")),
        }
    }
}
