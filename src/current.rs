//! Where live clusters are found between `chaos` invocations.
//!
//! `chaos up` leaves a cluster running and records it in `target/chaos/current` (a small
//! JSON file: cluster id, runtime, run directory); `chaos kill tm2`, `chaos status`, ...
//! started later read it back. Every run's files live in `target/chaos/runs/<run-id>/`
//! (DESIGN.md section 3), in the workspace's `target/` so `cargo clean` removes them.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::RuntimeKind;

/// The workspace's `target/` directory.
///
/// `CARGO_TARGET_DIR` wins when set (relative values are taken from the workspace root, as
/// cargo does); otherwise the nearest ancestor of the current directory whose `Cargo.toml`
/// declares `[workspace]`; otherwise `./target`. Never fails: a CLI run from anywhere still
/// has somewhere to keep its runs.
pub fn workspace_target_dir() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let root = workspace_root(&cwd);
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() { dir } else { root.unwrap_or(cwd).join(dir) };
    }
    root.unwrap_or(cwd).join("target")
}

/// The nearest ancestor of `start` (itself included) holding a workspace `Cargo.toml`.
fn workspace_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find(|dir| is_workspace_manifest(&dir.join("Cargo.toml"))).map(Path::to_path_buf)
}

fn is_workspace_manifest(path: &Path) -> bool {
    // A line-level check is enough: `[workspace]` is a table header on its own line, and
    // pulling in a TOML parser for one header is not worth it.
    std::fs::read_to_string(path)
        .map(|text| text.lines().any(|l| l.trim() == "[workspace]"))
        .unwrap_or(false)
}

/// `target/chaos`: everything `chaos` keeps on disk.
pub fn chaos_dir() -> PathBuf {
    workspace_target_dir().join("chaos")
}

/// `target/chaos/runs`: one directory per run or `chaos up`.
pub fn runs_dir() -> PathBuf {
    chaos_dir().join("runs")
}

/// A failure to read or write the current-cluster file.
#[derive(Debug, thiserror::Error)]
pub enum CurrentError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a current-cluster record ({message}); remove it or run `chaos down`")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The live cluster that interactive commands act on (`target/chaos/current`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentCluster {
    pub cluster_id: String,
    /// `docker` or `process`.
    #[serde(with = "runtime_kind_lowercase")]
    pub runtime: RuntimeKind,
    /// `target/chaos/runs/<run-id>/`.
    pub run_dir: PathBuf,
}

impl CurrentCluster {
    /// `target/chaos/current`.
    pub fn path() -> PathBuf {
        chaos_dir().join("current")
    }

    /// Reads `target/chaos/current`; `None` when no cluster was left up.
    pub fn load() -> Result<Option<CurrentCluster>, CurrentError> {
        Self::load_from(&Self::path())
    }

    /// Reads a current-cluster file at `path`; `None` when it does not exist.
    pub fn load_from(path: &Path) -> Result<Option<CurrentCluster>, CurrentError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CurrentError::Read { path: path.to_path_buf(), source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CurrentError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Writes `target/chaos/current`.
    pub fn save(&self) -> Result<(), CurrentError> {
        self.save_to(&Self::path())
    }

    /// Writes the record to `path` atomically (temp file + rename), so a concurrent
    /// reader never sees half a file.
    pub fn save_to(&self, path: &Path) -> Result<(), CurrentError> {
        let err = |source| CurrentError::Write { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| err(io::Error::other(e)))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text + "\n").map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Removes `target/chaos/current` (no error when it is already gone).
    pub fn clear() -> Result<(), CurrentError> {
        Self::clear_at(&Self::path())
    }

    /// Removes the record at `path` (no error when it is already gone).
    pub fn clear_at(path: &Path) -> Result<(), CurrentError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CurrentError::Write { path: path.to_path_buf(), source }),
        }
    }
}

/// `docker` / `process` on disk, whatever `RuntimeKind`'s own serde derive says.
mod runtime_kind_lowercase {
    use super::RuntimeKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &RuntimeKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RuntimeKind, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "docker" => Ok(RuntimeKind::Docker),
            "process" => Ok(RuntimeKind::Process),
            other => Err(serde::de::Error::custom(format!("unknown runtime `{other}`, expected docker or process"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chaos").join("current");
        assert_eq!(CurrentCluster::load_from(&path).unwrap(), None);
        let cur = CurrentCluster {
            cluster_id: "c-1".into(),
            runtime: RuntimeKind::Process,
            run_dir: dir.path().join("runs/c-1"),
        };
        cur.save_to(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"runtime\": \"process\""), "{text}");
        assert_eq!(CurrentCluster::load_from(&path).unwrap(), Some(cur));
        CurrentCluster::clear_at(&path).unwrap();
        CurrentCluster::clear_at(&path).unwrap();
        assert_eq!(CurrentCluster::load_from(&path).unwrap(), None);
    }

    #[test]
    fn garbage_is_a_parse_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current");
        std::fs::write(&path, "not json").unwrap();
        let err = CurrentCluster::load_from(&path).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn workspace_root_is_found_upward() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(dir.path().join("a/Cargo.toml"), "[package]\nname = \"a\"\n").unwrap();
        assert_eq!(workspace_root(&nested).as_deref(), Some(dir.path()));
    }
}
