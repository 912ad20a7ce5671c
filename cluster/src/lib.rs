//! `streamd`: a small stream cluster in Apache Flink's mould.
//!
//! # Layout
//! - [`spec`], [`duration`], [`tokenizer`], [`input`], [`lines`], [`output`], [`window`], [`cuts`],
//!   [`api`]: the contract shared with `chaos` (job spec, tokenizer, input, committed output
//!   format, event time and windows, REST types).
//!   They live in the small crate `streamd-contract` (`cluster/contract/`), so that the CLI
//!   builds without the engine's server side; re-exported here under the same names.
//! - [`wire`]: framing and messages: control RPC (jobmanager <-> taskmanager) and the data
//!   plane (taskmanager <-> taskmanager).
//! - [`jobmanager`]: registration, heartbeats, scheduling, the checkpoint coordinator,
//!   restart strategies, the catch-up after a restore of an older checkpoint than the
//!   latest completed one (`jobmanager/catch_up.rs`), the REST API.
//! - [`taskmanager`]: slots, tasks (source+tokenize, count+sink), barrier alignment, the
//!   two-phase-commit sink, snapshots, the open windows of a windowed count (`window.rs`).
//! - [`snapshot`]: durable checkpoint storage (atomic, checksummed, metadata last).
//! - [`ha`]: jobmanager high availability through etcd: leader election with a lease,
//!   leader epochs that fence stale leaders, the checkpoint pointer, REST forwarding.
//! - [`bench`]: `streamd bench`, the COST-baseline comparison, and its `--restore` mode
//!   ([`bench_restore`]: task-local against remote restore time); [`bench_interval`]: `streamd
//!   bench-interval`, the adaptive checkpoint interval against fixed ones under seeded kills.
//! - [`line_server`]: `streamd line-server`, the `nc -l 9000` a socket input reads (its
//!   protocol is [`lines`]; the source's side is `taskmanager::socket`).

pub use streamd_contract::{api, cuts, duration, input, lines, output, spec, tokenizer, window};
pub mod line_server;
pub mod bench;
pub mod bench_interval;
pub mod bench_restore;
pub mod ha;
pub mod jobmanager;
pub mod restart;
pub mod snapshot;
pub mod taskmanager;
pub mod wire;
