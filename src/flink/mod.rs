//! Apache Flink as a second engine: everything needed to run the same word count on a
//! real Flink cluster in Docker and to read its committed output back. A scenario with
//! `cluster.engine: flink` runs here; [`crate::engine`] is the seam the executor uses.
//!
//! # Layout (lower layers first)
//! - [`dist`]: the Flink distribution's jars, from PyPI's `apache-flink-libraries` wheel
//!   (no other registry is reachable), unpacked once into the cache.
//! - [`job`]: the job (`cluster/flink/src`, embedded) compiled with the host's `javac`
//!   into a content-addressed jar.
//! - [`config`]: [`config::FlinkSettings`] -> Flink's `config.yaml` and each node's
//!   `java ...` command line (no Flink shell scripts, so no shell in the image).
//! - [`image`]: the offline image: a `jlink`ed JRE with its shared-library closure, Flink's
//!   jars, the job jar; `FROM scratch`, label `chaos.image=flink`.
//! - [`zk`]: the smallest ZooKeeper client (read a znode, list children), for [`ha`].
//! - [`cluster`]: a standalone application cluster (`jobmanager-N`, `taskmanager-N`, and
//!   `zookeeper-1` with HA) as containers labelled like streamd's, on the cluster's bridge
//!   network, `/data` mounted.
//! - [`ha`]: which jobmanager leads an HA cluster, as published in ZooKeeper.
//! - [`rest`]: a typed client of Flink's REST API, with Flink's job states mapped to
//!   streamd's.
//! - [`output`]: the committed part files read back and checked against the oracle.
//! - [`plan`]: a scenario plan on Flink: settings, input, start with spares, verdict.
//! - [`watch`]: the job as the scenario executor sees every engine's job (streamd's REST
//!   answers, built from Flink's).
//!
//! Everything downloaded or built is cached under [`cache_dir`] (never committed).

pub mod cluster;
pub mod config;
pub mod dist;
pub mod ha;
pub mod image;
pub mod job;
pub mod output;
pub mod plan;
pub mod rest;
pub mod watch;
pub mod zk;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::runtime::RuntimeError;

/// Environment variable overriding [`cache_dir`].
pub const CACHE_ENV: &str = "CHAOS_FLINK_CACHE";

/// Everything that can go wrong preparing or running a Flink cluster.
#[derive(Debug, thiserror::Error)]
pub enum FlinkError {
    /// A host tool (pip, python3, javac, jar, jlink, ldd, apt-get) failed or is missing.
    #[error("{tool}: {message}")]
    Tool { tool: String, message: String },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A Docker operation failed (through the docker runtime's error mapping).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The REST API failed or answered something unexpected.
    #[error(transparent)]
    Rest(#[from] rest::RestError),
    /// A setting or request that cannot work.
    #[error("{0}")]
    Usage(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Result of this module's operations.
pub type Result<T> = std::result::Result<T, FlinkError>;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FlinkError + '_ {
    move |source| FlinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache of downloads and builds: `$CHAOS_FLINK_CACHE`, else
/// `<workspace>/target/chaos/cache/flink`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os(CACHE_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos/cache/flink"),
    }
}

/// Runs `cmd` to completion; a spawn failure or non-zero exit becomes [`FlinkError::Tool`]
/// with the tail of its stderr.
pub(crate) fn run_tool(tool: &str, cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FlinkError::Tool {
            tool: tool.to_string(),
            message: format!("cannot run it: {e}"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = if stderr.trim().is_empty() { stdout } else { stderr };
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(FlinkError::Tool {
            tool: tool.to_string(),
            message: format!("{} failed:\n{}", out.status, tail.join("\n")),
        });
    }
    Ok(out)
}

/// 12 hex digits of sha256 over `parts` (length-prefixed, so part boundaries count).
pub(crate) fn digest(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Renames `tmp` to `dst` unless another builder got there first (then `tmp` is dropped):
/// cache entries are complete or absent.
pub(crate) fn publish(tmp: &Path, dst: &Path) -> Result<()> {
    match std::fs::rename(tmp, dst) {
        Ok(()) => Ok(()),
        Err(_) if dst.exists() => {
            let _ = std::fs::remove_dir_all(tmp);
            Ok(())
        }
        Err(e) => Err(io_err(dst)(e)),
    }
}

/// A scratch directory next to `dst` (same file system, so [`publish`] is a rename).
pub(crate) fn scratch_for(dst: &Path) -> Result<PathBuf> {
    let parent = dst.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    Ok(tmp)
}
