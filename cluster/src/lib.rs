//! `streamd`: a small stream cluster in Apache Flink's mould.
//!
//! # Layout
//! - [`spec`], [`duration`]: the job spec (`/data/job.yaml`) and human durations.
//! - [`tokenizer`], [`input`], [`output`]: what the engine and the oracle share: the
//!   tokenizer, the generated / file input (partitioned by line index), and the committed
//!   output format (read back by `chaos`).
//! - [`api`]: REST response types (JSON), shared with `chaos`.
//! - [`wire`]: framing and messages: control RPC (jobmanager <-> taskmanager) and the data
//!   plane (taskmanager <-> taskmanager).
//! - [`jobmanager`]: registration, heartbeats, scheduling, the checkpoint coordinator,
//!   restart strategies, the REST API.
//! - [`taskmanager`]: slots, tasks (source+tokenize, count+sink), barrier alignment, the
//!   two-phase-commit sink, snapshots.
//! - [`snapshot`]: durable checkpoint storage (atomic, checksummed, metadata last).
//! - [`ha`]: jobmanager high availability through etcd: leader election with a lease,
//!   leader epochs that fence stale leaders, the checkpoint pointer, REST forwarding.
//! - [`bench`]: `streamd bench`, the COST-baseline comparison.

pub mod api;
pub mod duration;
pub mod input;
pub mod output;
pub mod spec;
pub mod tokenizer;
pub mod bench;
pub mod ha;
pub mod jobmanager;
pub mod restart;
pub mod snapshot;
pub mod taskmanager;
pub mod wire;
