//! `chaos`: fault-injection testing for stream clusters.
//!
//! # Layout
//! - [`scenario`]: YAML scenario -> validated [`scenario::Plan`] (every error with file,
//!   line, column), seeded target picks, `chaos lint`.
//! - [`runtime`]: where nodes live: `docker` (bollard) and `process`, behind one trait.
//! - [`verdict`]: the oracle and the three checks on the committed output.
//! - [`report`]: terminal summary, JSON, JUnit, HTML.
pub mod runtime;
pub mod scenario;
pub mod executor;
pub mod images;
pub mod client;
pub mod cli;
pub mod current;
pub mod verdict;
pub mod report;
pub mod netfault;
