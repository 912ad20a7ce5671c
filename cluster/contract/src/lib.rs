//! The contract between `chaos` and the `streamd` engine: everything both sides must agree
//! on, and nothing else.
//!
//! # Layout
//! - [`spec`], [`duration`]: the job spec (`/data/job.yaml`) and human durations (`250ms`, `2s`).
//! - [`tokenizer`]: the one tokenizer, used by the engine and by the oracle.
//! - [`input`]: generated and file input, partitioned by line index.
//! - [`lines`]: the line server (a socket input like `nc -l 9000`): protocols and journal.
//! - [`output`]: the committed output format, written by the sink and read back by the verdict.
//! - [`cuts`]: the source positions of every completed checkpoint, written by the
//!   jobmanager and read back by the verdict's consistent-cut check.
//! - [`window`]: event time, windows and watermarks of the windowed job, shared by the
//!   engine and the verdict's window oracle.
//! - [`api`]: REST response types (JSON).
//!
//! The engine re-exports these modules under the same names (`streamd::spec`, ...).

pub mod api;
pub mod cuts;
pub mod duration;
pub mod input;
pub mod lines;
pub mod output;
pub mod spec;
pub mod tokenizer;
pub mod window;
