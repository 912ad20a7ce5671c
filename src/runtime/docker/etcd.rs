//! The etcd node of an HA cluster (`jobmanagers > 1`): a one-member etcd cluster in a
//! container named by the network alias `etcd-1`.
//!
//! No registry is reachable where `chaos` runs, so the image is built offline like the
//! others: `FROM scratch` around the host's etcd binary (Debian's `etcd-server` package,
//! or `CHAOS_ETCD_BIN`) plus what `ldd` says it loads (the glibc loader and libc: Debian
//! builds etcd with cgo). Where a registry is reachable, any etcd 3.4+ image that accepts
//! the same flags works too: see [`etcd_command`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bollard::Docker;

use crate::images::{ensure_image, ContextFile, ImageContext};
use crate::runtime::{Result, RuntimeError};

/// Repository part of the etcd image tag.
pub const ETCD_REPO: &str = "chaos-etcd";
/// `chaos.image` value of the etcd image.
pub const ETCD_KIND: &str = "etcd";
/// etcd's client port (what `--etcd` points at).
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port (a one-member cluster: only etcd itself uses it).
pub const PEER_PORT: u16 = 2380;
/// Where the binary lives in the image.
pub const ETCD_PATH: &str = "/usr/local/bin/etcd";

/// The etcd client URL jobmanagers and taskmanagers use (`--etcd`).
pub fn client_url(node: &str) -> String {
    format!("http://{node}:{CLIENT_PORT}")
}

/// etcd's arguments (after the entrypoint) for node `node`. Its data lives in the
/// container's writable layer: it survives `stop`/`start` (a restarted etcd keeps the
/// leases, the leader epoch and the checkpoint pointer) and goes with the container.
pub fn etcd_command(node: &str) -> Vec<String> {
    let peer = format!("http://127.0.0.1:{PEER_PORT}");
    [
        "--name",
        node,
        "--data-dir",
        "/var/lib/etcd",
        "--listen-client-urls",
        &format!("http://0.0.0.0:{CLIENT_PORT}"),
        "--advertise-client-urls",
        &client_url(node),
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("{node}={peer}"),
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The Dockerfile: the root filesystem is assembled in the context (`rootfs/`), so one
/// COPY places the binary and its libraries at their paths.
const ETCD_DOCKERFILE: &str = "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/usr/local/bin/etcd\"]\nLABEL chaos.image=etcd\n";

/// The shared objects `ldd` lists for `binary` (absolute paths; none for a static binary).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).stdin(Stdio::null()).output().map_err(|e| {
        RuntimeError::Infrastructure(format!("cannot run ldd on {} to build the etcd image: {e}", binary.display()))
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": a static etcd needs nothing else.
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&text))
}

/// Paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x..)` and the loader line
/// `/lib64/ld-linux-x86-64.so.2 (0x..)`; the vDSO has no file.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The build context of the etcd image around `binary`.
pub fn etcd_context(binary: &Path) -> Result<ImageContext> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| RuntimeError::Infrastructure(format!("reading {} for the etcd image: {e}", p.display())))
    };
    let mut files = vec![ContextFile { path: format!("rootfs{ETCD_PATH}"), mode: 0o755, contents: read(binary)? }];
    for lib in shared_libraries(binary)? {
        // Symlinks (the loader on Debian) are read through: the image gets a regular file
        // at the path the binary asks for.
        files.push(ContextFile { path: format!("rootfs{}", lib.display()), mode: 0o755, contents: read(&lib)? });
    }
    Ok(ImageContext { kind: ETCD_KIND.to_string(), dockerfile: ETCD_DOCKERFILE.to_string(), files })
}

/// Ensures the etcd image exists (built when the binary or its libraries changed) and
/// returns its tag, `chaos-etcd:<12 hex>`.
pub async fn ensure_etcd_image(docker: &Docker) -> Result<String> {
    let binary = crate::runtime::process::etcd_binary()?;
    let ctx = tokio::task::spawn_blocking(move || etcd_context(&binary))
        .await
        .map_err(|e| RuntimeError::Other(format!("preparing the etcd image: {e}")))??;
    ensure_image(docker, ETCD_REPO, &ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_yields_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn command_is_a_one_member_cluster_reachable_by_its_alias() {
        let cmd = etcd_command("etcd-1").join(" ");
        assert!(cmd.contains("--name etcd-1"), "{cmd}");
        assert!(cmd.contains("--advertise-client-urls http://etcd-1:2379"), "{cmd}");
        assert!(cmd.contains("--listen-client-urls http://0.0.0.0:2379"), "{cmd}");
        assert!(cmd.contains("--initial-cluster etcd-1=http://127.0.0.1:2380"), "{cmd}");
    }

    #[test]
    fn dockerfile_is_from_scratch_with_the_etcd_label() {
        assert!(ETCD_DOCKERFILE.starts_with("FROM scratch\n"));
        assert!(ETCD_DOCKERFILE.contains("LABEL chaos.image=etcd"));
        assert!(ETCD_DOCKERFILE.contains(ETCD_PATH));
    }
}
