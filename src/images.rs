//! Offline image building. No registry is reachable where `chaos` runs, so every image is
//! `FROM scratch` around a static binary built on the host: the context is a tar made in
//! memory and handed to the daemon's classic builder (bollard `build_image`).
//!
//! Images are content-addressed: the tag is `<repo>:<first 12 hex of sha256(context)>`,
//! where the context holds the Dockerfile and the binary, so an image is rebuilt exactly
//! when the binary or the Dockerfile changed and reused otherwise. Each carries the label
//! `chaos.image=<kind>`, so `chaos down --images` finds it.
//!
//! Every Dockerfile instruction costs the classic builder an intermediate container
//! (~0.5 s each here): the Dockerfiles keep to FROM, COPY, ENTRYPOINT and one LABEL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::runtime::docker::{errors, labels};
use crate::runtime::{Result, RuntimeError};

/// Environment variable naming a ready streamd binary: skips the cargo build.
pub const STREAMD_BIN_ENV: &str = "CHAOS_STREAMD_BIN";
/// Repository part of the streamd image tag.
pub const STREAMD_REPO: &str = "chaos-streamd";
/// `chaos.image` value of the streamd image.
pub const STREAMD_KIND: &str = "streamd";
/// The top-level Dockerfile: the one source of truth for the streamd image, whether built
/// by `chaos` or by hand with `docker build`.
pub const STREAMD_DOCKERFILE: &str = include_str!("../Dockerfile");

/// One file of a build context.
#[derive(Debug, Clone)]
pub struct ContextFile {
    /// Path inside the context, e.g. `streamd`.
    pub path: String,
    /// Unix permission bits, e.g. `0o755` for a binary.
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// A build context: a Dockerfile and the files it copies. Helper images (network tools,
/// etcd) are described the same way and built with [`ensure_image`].
#[derive(Debug, Clone)]
pub struct ImageContext {
    /// `chaos.image` label value: `streamd`, `netfault`, ...
    pub kind: String,
    pub dockerfile: String,
    pub files: Vec<ContextFile>,
}

/// The first 12 hex digits of sha256(`bytes`): the tag part of a content-addressed image.
pub fn content_tag(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Dockerfile as built: `ctx.dockerfile`, plus a `LABEL chaos.image=<kind>` line when
/// it does not carry that label itself.
fn labelled_dockerfile(ctx: &ImageContext) -> String {
    let label = format!("{}={}", labels::IMAGE, ctx.kind);
    let has_label = ctx.dockerfile.lines().any(|l| {
        let l = l.trim();
        l.starts_with("LABEL ") && l.split_whitespace().any(|w| w == label)
    });
    if has_label {
        ctx.dockerfile.clone()
    } else {
        format!("{}\nLABEL {label}\n", ctx.dockerfile.trim_end())
    }
}

/// The tag [`ensure_image`] gives `ctx`: `<repo>:<12 hex of sha256(context tar)>`.
pub fn image_tag(repo: &str, ctx: &ImageContext) -> Result<String> {
    Ok(format!("{repo}:{}", content_tag(&context_tar(ctx)?)))
}

/// The context as an uncompressed tar, byte-for-byte deterministic (fixed mtime, owner),
/// so that its digest identifies the content.
pub fn context_tar(ctx: &ImageContext) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = labelled_dockerfile(ctx);
    let mut files: Vec<(&str, u32, &[u8])> = vec![("Dockerfile", 0o644, dockerfile.as_bytes())];
    files.extend(
        ctx.files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.contents.as_slice())),
    );
    for (path, mode, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, contents).map_err(|e| {
            RuntimeError::Infrastructure(format!("building the image context: {e}"))
        })?;
    }
    tar.into_inner()
        .map_err(|e| RuntimeError::Infrastructure(format!("building the image context: {e}")))
}

/// Builds the image of `ctx` under `repo` unless it exists already (same content, same
/// tag). Returns the tag.
pub async fn ensure_image(docker: &Docker, repo: &str, ctx: &ImageContext) -> Result<String> {
    let tar = context_tar(ctx)?;
    let tag = format!("{repo}:{}", content_tag(&tar));
    match docker.inspect_image(&tag).await {
        Ok(_) => return Ok(tag),
        Err(e) if errors::is_not_found(&e) => {}
        Err(e) => return Err(errors::map(&format!("inspecting image {tag}"), e)),
    }
    build_image(docker, &tag, tar).await?;
    Ok(tag)
}

/// Runs the build and turns the daemon's progress stream into a result.
async fn build_image(docker: &Docker, tag: &str, tar: Vec<u8>) -> Result<()> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let failed =
        |msg: String| RuntimeError::Infrastructure(format!("building image {tag} failed: {msg}"));
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    // The daemon's own output, kept to explain a failure.
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e @ bollard::errors::Error::DockerStreamError { .. }) => {
                return Err(failed(format!("{e}\n{log}")))
            }
            Err(e) => return Err(errors::map(&format!("building image {tag}"), e)),
        };
        if let Some(detail) = info.error_detail {
            let msg = detail.message.unwrap_or_default();
            return Err(failed(format!("{msg}\n{log}")));
        }
        if let Some(line) = info.stream {
            log.push_str(&line);
        }
    }
    // The classic builder reports some failures only by not producing the tag.
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(()),
        Err(e) if errors::is_not_found(&e) => Err(failed(format!("no image was produced\n{log}"))),
        Err(e) => Err(errors::map(&format!("inspecting image {tag}"), e)),
    }
}

/// The build context of the streamd image around `binary` (read into memory).
pub fn streamd_context(binary: Vec<u8>) -> ImageContext {
    ImageContext {
        kind: STREAMD_KIND.to_string(),
        dockerfile: STREAMD_DOCKERFILE.to_string(),
        files: vec![ContextFile {
            path: "streamd".to_string(),
            mode: 0o755,
            contents: binary,
        }],
    }
}

/// Ensures the streamd image for `binary` (a static streamd executable) exists and returns
/// its tag, `chaos-streamd:<12 hex>` (see [`image_tag`]). Builds only when no image of that
/// tag exists, i.e. when the binary or the Dockerfile changed.
pub async fn ensure_streamd_image(docker: &Docker, binary: &Path) -> Result<String> {
    let contents = tokio::fs::read(binary).await.map_err(|e| {
        RuntimeError::Infrastructure(format!(
            "reading the streamd binary {}: {e}",
            binary.display()
        ))
    })?;
    check_static(&contents, binary)?;
    ensure_image(docker, STREAMD_REPO, &streamd_context(contents)).await
}

/// Refuses what cannot run as PID 1 of a `FROM scratch` image: anything but an ELF
/// executable without a program interpreter (a dynamically linked binary would fail to
/// start with a baffling "no such file or directory").
pub fn check_static(binary: &[u8], path: &Path) -> Result<()> {
    let bad = |why: &str| {
        RuntimeError::Infrastructure(format!(
            "{} cannot run in a FROM scratch image: {why}",
            path.display()
        ))
    };
    let u16_at = |o: usize| {
        binary
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        binary
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        binary
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only: that is what the workspace builds.
    if binary.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(bad("not a 64-bit little-endian ELF executable"));
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err(bad("truncated ELF header"));
    };
    const PT_INTERP: u32 = 3;
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * usize::from(phentsize)));
        match at.and_then(u32_at) {
            Some(PT_INTERP) => {
                return Err(bad(
                    "it is dynamically linked (build it with -C target-feature=+crt-static, \
                     as .cargo/config.toml does)",
                ))
            }
            Some(_) => {}
            None => return Err(bad("truncated ELF program headers")),
        }
    }
    Ok(())
}

/// The cargo profile this chaos was built with, as `cargo build` arguments and the target
/// directory's folder. The binaries chaos builds for its nodes (streamd, chaos-netd) use the
/// same one, so `cargo run` (the dev profile, quick to compile) or `cargo run --release`
/// compiles the dependencies they share with chaos once, not once per profile.
pub fn cargo_profile() -> CargoProfile {
    if cfg!(debug_assertions) {
        CargoProfile { name: "dev", args: &[], dir: "debug" }
    } else {
        CargoProfile { name: "release", args: &["--release"], dir: "release" }
    }
}

/// A cargo profile: see [`cargo_profile`].
#[derive(Debug, Clone, Copy)]
pub struct CargoProfile {
    pub name: &'static str,
    /// What selects it on `cargo build`'s command line.
    pub args: &'static [&'static str],
    /// Its folder under `target/<triple>/`.
    pub dir: &'static str,
}

/// Builds the static streamd binary with `cargo build [--release] --workspace --bin streamd`
/// (the profile of [`cargo_profile`]) in the workspace and returns its path
/// (`target/x86_64-unknown-linux-gnu/<profile>/streamd`). When [`STREAMD_BIN_ENV`] is set,
/// returns that path without building.
///
/// Blocking (it runs cargo): call it from `spawn_blocking` in async code.
pub fn build_streamd_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(STREAMD_BIN_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(RuntimeError::Usage(format!(
                "{STREAMD_BIN_ENV}={} is not a file",
                path.display()
            )));
        }
        return Ok(path);
    }
    let root = workspace_root()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile = cargo_profile();
    let output = Command::new(&cargo)
        .current_dir(&root)
        // `--workspace`: the same feature unification as `cargo build` of the whole
        // workspace, so this never rebuilds what that built (with `-p streamd` shared
        // dependencies would get other features and flip-flop).
        .arg("build")
        .args(profile.args)
        .args(["--workspace", "--bin", "streamd"])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            RuntimeError::Infrastructure(format!(
                "cannot run {} to build streamd: {e}; set {STREAMD_BIN_ENV} to a static \
                 streamd binary instead",
                Path::new(&cargo).display()
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(RuntimeError::Infrastructure(format!(
            "cargo build --workspace --bin streamd ({} profile) failed ({}):\n{}",
            profile.name,
            output.status,
            tail.join("\n")
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(streamd_artifact(&stdout).unwrap_or_else(|| {
        // Cargo prints no artifact line in some fresh cases on old versions: fall back to
        // the layout .cargo/config.toml implies.
        root.join("target/x86_64-unknown-linux-gnu").join(profile.dir).join("streamd")
    }))
}

/// The `executable` of the streamd binary in cargo's JSON messages (honours any target
/// directory configuration).
fn streamd_artifact(json_lines: &str) -> Option<PathBuf> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "streamd")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// The workspace root: where this crate was compiled from, or else what cargo finds from
/// the current directory.
fn workspace_root() -> Result<PathBuf> {
    let compiled_at = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if compiled_at.join("cluster/Cargo.toml").is_file() {
        return Ok(compiled_at);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            RuntimeError::Infrastructure(format!("cannot run cargo locate-project: {e}"))
        })?;
    let manifest = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    match manifest.parent() {
        Some(dir) if out.status.success() && manifest.is_file() => Ok(dir.to_path_buf()),
        _ => Err(RuntimeError::Infrastructure(format!(
            "cannot find the chaos workspace to build streamd (run from inside it, or set \
             {STREAMD_BIN_ENV} to a static streamd binary)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_tag_is_12_hex_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(content_tag(b"abc"), "ba7816bf8f01");
    }

    #[test]
    fn context_tar_is_deterministic_and_holds_the_files() {
        let ctx = streamd_context(b"\x7fELF...".to_vec());
        let a = context_tar(&ctx).unwrap();
        assert_eq!(a, context_tar(&ctx).unwrap());
        let mut archive = tar::Archive::new(&a[..]);
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (
                    "Dockerfile".to_string(),
                    0o644,
                    STREAMD_DOCKERFILE.len() as u64
                ),
                ("streamd".to_string(), 0o755, 7)
            ]
        );
    }

    #[test]
    fn tag_changes_with_binary_and_dockerfile() {
        let a = image_tag(STREAMD_REPO, &streamd_context(b"one".to_vec())).unwrap();
        assert!(
            a.starts_with("chaos-streamd:") && a.len() == "chaos-streamd:".len() + 12,
            "{a}"
        );
        assert_eq!(
            a,
            image_tag(STREAMD_REPO, &streamd_context(b"one".to_vec())).unwrap()
        );
        assert_ne!(
            a,
            image_tag(STREAMD_REPO, &streamd_context(b"two".to_vec())).unwrap()
        );
        let mut edited = streamd_context(b"one".to_vec());
        edited.dockerfile.push_str("\n# edited\n");
        assert_ne!(a, image_tag(STREAMD_REPO, &edited).unwrap());
    }

    #[test]
    fn image_label_is_added_once() {
        // The streamd Dockerfile labels itself: nothing is appended (no extra build step).
        let ctx = streamd_context(Vec::new());
        assert_eq!(labelled_dockerfile(&ctx), STREAMD_DOCKERFILE);
        let helper = ImageContext {
            kind: "netfault".into(),
            dockerfile: "FROM scratch\nCOPY nf /nf\n".into(),
            files: Vec::new(),
        };
        assert_eq!(
            labelled_dockerfile(&helper),
            "FROM scratch\nCOPY nf /nf\nLABEL chaos.image=netfault\n"
        );
    }

    #[test]
    fn dockerfile_is_from_scratch_around_streamd() {
        let lines: Vec<&str> = STREAMD_DOCKERFILE
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(lines.first(), Some(&"FROM scratch"));
        assert!(lines.contains(&"COPY streamd /streamd"));
        assert!(lines.contains(&r#"ENTRYPOINT ["/streamd"]"#));
        assert!(lines.contains(&"LABEL chaos.image=streamd"));
    }

    #[test]
    fn check_static_tells_static_from_dynamic() {
        let p = Path::new("x");
        assert!(check_static(b"#!/bin/sh\n", p).is_err());
        // /bin/sh on Debian is dynamically linked.
        let sh = std::fs::read("/bin/sh").unwrap();
        let err = check_static(&sh, p).unwrap_err().to_string();
        assert!(err.contains("dynamically linked"), "{err}");
        // This test binary is built with +crt-static (.cargo/config.toml).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        check_static(&me, p).unwrap();
    }

    #[test]
    fn artifact_path_comes_from_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","target":{"name":"streamd","kind":["bin"]},"executable":"/t/release/streamd"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            streamd_artifact(json),
            Some(PathBuf::from("/t/release/streamd"))
        );
        assert_eq!(streamd_artifact("{}"), None);
    }
}
