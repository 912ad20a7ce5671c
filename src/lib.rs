//! `chaos`: fault-injection testing for stream clusters.
//!
//! # Layout
//! - [`scenario`]: YAML scenario -> validated [`scenario::Plan`] (every error with file,
//!   line, column), seeded target picks, `chaos lint`'s timeline.
//! - [`runtime`]: where nodes live: `docker` (bollard) and `process`, behind one trait.
//! - [`images`]: offline image builds (`FROM scratch` around static binaries).
//! - [`executor`]: one scenario run from start to verdict, `chaos up`, `chaos verify`:
//!   the run loop's decisions in pure code (schedule, observations, the faults' findings
//!   and recovery timings), carried out by an async shell (`executor::drive`).
//! - [`fault`]: every fault action applied, undone, held and measured, for the run loop
//!   and the interactive commands alike.
//! - [`feed`]: feeding the line server of a socket input (`nc -l 9000`'s other end).
//! - [`live`]: the live cluster of `chaos up`: find it, resolve node names, feed its
//!   input, read its counts, remove it.
//! - [`nodes`], [`signal`]: node names and aliases (and the leader lookup); signals. One
//!   rule each, for scenarios and command line alike.
//! - [`error`]: [`error::ChaosError`] and the exit code of each failure.
//! - [`engine`]: the engine seam: `streamd` or `flink`, and the one view of a running
//!   job the executor uses for both.
//! - [`flink`]: Apache Flink as a second engine (distribution from PyPI, the job, the
//!   offline image, a standalone cluster, REST mapped onto streamd's answers, output).
//! - [`diskfault`]: disk faults (delay, errors, full disk, remote-storage model) through a
//!   FUSE passthrough of each node's /data.
//! - [`netfault`]: network faults (netem or its iptables/NFQUEUE fallback, partitions)
//!   through sidecars, with an undo journal.
//! - [`host`]: what a scenario needs from this machine, checked before a run and by
//!   `chaos doctor`.
//! - [`client`]: the streamd REST client; [`current`]: which cluster is live.
//! - [`verdict`]: the oracle and the checks on the committed output (final counts, well-formed,
//!   monotonic; per epoch: consistent cuts, epochs complete; on Flink, every update
//!   committed once; for a socket input, at-most-once and which fault lost what).
//! - [`report`]: terminal summary and progress, JSON, JUnit, HTML.
//!
//! The command line itself (`src/main.rs`, `src/cli.rs`, `src/cli/`) is part of the binary,
//! not of this library: it parses and prints, and calls the modules above.
pub mod client;
pub mod current;
pub mod diskfault;
pub mod engine;
pub mod error;
pub mod executor;
pub mod fault;
pub mod feed;
pub mod flink;
pub mod host;
pub mod images;
pub mod live;
pub mod netfault;
pub mod nodes;
pub mod report;
pub mod runtime;
pub mod scenario;
pub mod signal;
pub mod verdict;
