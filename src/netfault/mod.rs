//! Network faults: netem-style degradation and partitions inside a node container's
//! network namespace, on kernels with or without `sch_netem`, with an undo journal.
//!
//! # How
//! Nothing runs on the host: a *sidecar* container from the `chaos-netfault` image
//! ([`image`]) joins the target's namespace (`network_mode: container:<id>`, `NET_ADMIN`)
//! and runs `iptables` / `tc` there through `docker exec` ([`sidecar`]). The kernel is
//! probed once per run ([`NetFaults::probe`]): where netem exists, a netem qdisc on the
//! node's egress does everything; where it does not, loss is an iptables `statistic`
//! drop, rate a `tbf` qdisc, and delay, jitter, duplicate and corrupt an iptables
//! `NFQUEUE` rule (`--queue-bypass`) served by `chaos-netd delay` ([`netd`]) in a sidecar
//! that stays up while the fault lasts; the iptables rules act on packets arriving at the
//! node (why: [`rules`]). Partitions are DROP rules on arrival. Everything is on the
//! cluster network's interface (found from the node's address, not assumed to be `eth0`);
//! IPv4 only.
//!
//! # Undo
//! Every rule is announced in `<run_dir>/netfault-journal.jsonl` ([`journal`]) with its
//! exact undo commands before it is applied; [`undo_all`] undoes whatever a run left open
//! (after a crash, on `chaos down`, at the start of the next run), idempotently. A
//! container restart wipes its namespace: [`NetFaults::reconcile`] notices (`StartedAt`
//! changed) and re-applies or ends the fault, and says which.
//!
//! # Layout
//! - [`rules`]: parameters, mechanisms, the exact commands (pure).
//! - [`journal`]: the append-only undo journal.
//! - [`sidecar`]: Docker plumbing (targets, sidecars, exec).
//! - [`image`]: the sidecar image, built offline from the host's tools.
//! - [`faults`]: [`NetFaults`], the API the executor and the CLI call; `kernel`: the
//!   mechanism probe; `measure`: [`NetFaults::measure`] and friends.
//! - [`undo`]: undoing, idempotently, down to [`undo_all`] after a crash.
//! - [`probe`]: measurement results; [`netd`]: the `chaos-netd` program.

pub mod faults;
pub mod image;
pub mod journal;
mod kernel;
mod measure;
pub mod netd;
pub mod probe;
pub mod rules;
pub mod sidecar;
pub mod undo;

pub use faults::{FaultHandle, NetFaults, ReconcileAction, ReconcilePolicy, Reconciled};
pub use image::{ensure_host_tools, ensure_image, netd_binary, HOST_PACKAGES};
pub use netd::schedule::Distribution;
pub use probe::{ProbeStats, RttStats, Throughput};
pub use rules::{describe, plan, Iptables, Mechanism, NetemParams, Via};
pub use undo::{undo_all, undo_all_runs, UndoReport};

/// A network fault that could not be applied or undone.
#[derive(Debug, thiserror::Error)]
pub enum NetfaultError {
    /// The request makes no sense: unknown node, node not running, bad parameters (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The kernel offers no mechanism for a requested parameter (exit 2: the scenario
    /// cannot run on this machine, and `chaos lint` can say so beforehand).
    #[error("{0}")]
    Unsupported(String),
    /// The Docker daemon refused or failed (exit 3).
    #[error("{0}")]
    Docker(String),
    /// Building the sidecar image, host tools (exit 3).
    #[error("{0}")]
    Infrastructure(String),
    /// A command in the target's namespace failed (exit 3).
    #[error("`{command}` failed with exit code {code}: {output}")]
    Command {
        command: String,
        code: i64,
        output: String,
    },
    /// Reading or writing the journal (exit 3).
    #[error("network-fault journal: {0}")]
    Journal(String),
}

impl NetfaultError {
    /// Whether this is the user's to fix (exit code 2) rather than the machine's (3).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            NetfaultError::Usage(_) | NetfaultError::Unsupported(_)
        )
    }
}
