//! `chaos`: fault-injection testing for stream clusters.
//!
//! # Layout
//! - [`scenario`]: YAML scenario -> validated [`scenario::Plan`] (every error with file,
//!   line, column), seeded target picks, `chaos lint`'s timeline.
//! - [`runtime`]: where nodes live: `docker` (bollard) and `process`, behind one trait.
//! - [`images`]: offline image builds (`FROM scratch` around static binaries).
//! - [`executor`]: one scenario run from start to verdict, `chaos up`, `chaos verify`;
//!   per-fault recovery timings.
//! - [`netfault`]: network faults (netem or its iptables/NFQUEUE fallback, partitions)
//!   through sidecars, with an undo journal.
//! - [`client`]: the streamd REST client; [`current`]: which cluster is live.
//! - [`verdict`]: the oracle and the checks on the committed output (final counts, well-formed,
//!   monotonic; per epoch: consistent cuts, epochs complete).
//! - [`report`]: terminal summary and progress, JSON, JUnit, HTML.
//! - [`cli`]: the command line (`src/main.rs` only parses and exits).
pub mod cli;
pub mod client;
pub mod current;
pub mod executor;
pub mod images;
pub mod netfault;
pub mod report;
pub mod runtime;
pub mod scenario;
pub mod verdict;
