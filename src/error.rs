//! The errors of a `chaos` command and the exit code each one means.
//!
//! Exit codes (the contract CI scripts rely on): 0 pass, 1 the verdict failed, 2 bad usage
//! or an invalid scenario, 3 infrastructure (no Docker daemon, an image build failed),
//! 130 interrupted. Every failure is a [`ChaosError`]; [`ChaosError::exit_code`] is the one
//! place that maps a failure to its code. Causes are kept as `source()` chains, which
//! `main` prints as "caused by:" lines.

use crate::netfault::NetfaultError;
use crate::runtime::RuntimeError;
use crate::scenario::ScenarioError;

/// Process exit codes.
pub mod exit {
    /// The verdict passed.
    pub const PASS: u8 = 0;
    /// The verdict failed: wrong output, not recovered in time.
    pub const FAIL: u8 = 1;
    /// Bad usage or an invalid scenario.
    pub const USAGE: u8 = 2;
    /// Infrastructure: no Docker daemon, image build failed.
    pub const INFRA: u8 = 3;
    /// Ctrl-C or SIGTERM cut the command short, after it undid what it had done (the
    /// shell's 128 + SIGINT).
    pub const INTERRUPTED: u8 = 130;
}

/// A failure of a chaos command, classified by exit code.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// An invalid scenario: file, line, column and what was expected (exit 2).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A runtime's failure (its kind decides the exit code).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A network fault that could not be applied or undone (its kind decides).
    #[error(transparent)]
    Netfault(#[from] NetfaultError),
    /// Preparing or running Flink failed: a missing host tool, a download, the image, a
    /// start (exit 3: scenario settings were checked before, so this is the machine's).
    #[error("flink: {0}")]
    Flink(#[from] crate::flink::FlinkError),
    /// A file of the run directory could not be read or written (exit 3).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The request makes no sense (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The machine cannot do it: a missing package, an unreachable daemon (exit 3).
    #[error("{0}")]
    Infrastructure(String),
    /// Anything else that stops the command (exit 3).
    #[error("{0}")]
    Other(String),
    /// Ctrl-C: faults were undone and the cluster removed (exit 130).
    #[error("interrupted")]
    Interrupted,
}

impl ChaosError {
    /// The process exit code this failure means.
    pub fn exit_code(&self) -> u8 {
        match self {
            ChaosError::Scenario(_) | ChaosError::Usage(_) => exit::USAGE,
            ChaosError::Runtime(RuntimeError::Usage(_)) => exit::USAGE,
            ChaosError::Runtime(_) => exit::INFRA,
            ChaosError::Netfault(e) if e.is_usage() => exit::USAGE,
            ChaosError::Netfault(_) => exit::INFRA,
            ChaosError::Flink(_) => exit::INFRA,
            ChaosError::Io { .. } | ChaosError::Infrastructure(_) | ChaosError::Other(_) => exit::INFRA,
            ChaosError::Interrupted => exit::INTERRUPTED,
        }
    }

    /// An I/O failure on `path`, doing `what` ("cannot write", "cannot read").
    pub fn io(what: &str, path: &std::path::Path, source: std::io::Error) -> ChaosError {
        ChaosError::Io { context: format!("{what} {}", path.display()), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        assert_eq!(ChaosError::Usage("x".into()).exit_code(), 2);
        assert_eq!(ChaosError::Runtime(RuntimeError::Usage("x".into())).exit_code(), 2);
        assert_eq!(ChaosError::Runtime(RuntimeError::Infrastructure("x".into())).exit_code(), 3);
        assert_eq!(ChaosError::Netfault(NetfaultError::Usage("x".into())).exit_code(), 2);
        assert_eq!(ChaosError::Netfault(NetfaultError::Infrastructure("x".into())).exit_code(), 3);
        assert_eq!(ChaosError::Interrupted.exit_code(), 130);
        let io = ChaosError::io("cannot write", std::path::Path::new("/x"), std::io::Error::other("disk full"));
        assert_eq!(io.exit_code(), 3);
        // The cause is kept for `main` to print.
        assert_eq!(std::error::Error::source(&io).map(|s| s.to_string()).as_deref(), Some("disk full"));
    }
}
