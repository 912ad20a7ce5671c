//! The Flink image, built offline like every chaos image ([`crate::images::ensure_image`]:
//! an in-memory context, content-addressed tag, label `chaos.image=flink`):
//!
//! - `/opt/java`: a JRE `jlink`ed from the host's JDK (Java SE plus the few `jdk.*`
//!   modules Flink touches; ~80 MB instead of the JDK's 260 MB), cached by JDK version;
//! - the shared libraries its ELF files need, found with `ldd` at their host paths, and
//!   the program interpreter (`/lib64/ld-linux-x86-64.so.2`);
//! - `/opt/flink/lib`: the distribution's runtime jars and the job jar;
//! - `/opt/flink/conf/log4j-console.properties`, and an empty `/tmp`.
//!
//! `FROM scratch`, one `COPY`, `ENTRYPOINT ["/opt/java/bin/java"]`: no shell, no package
//! manager, nothing pulled.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;

use super::dist::FlinkDist;
use super::job::{jdk_tool, JOB_JAR};
use super::{digest, io_err, publish, run_tool, scratch_for, FlinkError, Result};
use crate::images::{ContextFile, ImageContext};

/// Repository part of the image tag.
pub const REPO: &str = "chaos-flink";
/// `chaos.image` label value.
pub const KIND: &str = "flink";
/// Where the JRE lives in the image.
pub const JAVA_DIR: &str = "opt/java";
/// The image's Dockerfile.
pub const DOCKERFILE: &str = "FROM scratch\nCOPY . /\nENTRYPOINT [\"/opt/java/bin/java\"]\nLABEL chaos.image=flink\n";
/// The log4j configuration shipped in the image.
pub const LOG4J: &str = include_str!("../../cluster/flink/conf/log4j-console.properties");

/// The modules of the jlinked JRE: all of Java SE (`java.sql` for Flink's type system,
/// `java.management` for metrics, `java.desktop` for `java.beans`), `jdk.unsupported`
/// (`sun.misc.Unsafe`, used by Flink's memory segments), `jdk.management` (process
/// metrics), and the EC crypto, zip file system, DNS naming and extra charsets providers.
pub const JRE_MODULES: &str =
    "java.se,jdk.unsupported,jdk.management,jdk.crypto.ec,jdk.zipfs,jdk.naming.dns,jdk.charsets";

/// Native libraries of the JRE whose dependencies are not copied: GUI, sound and font
/// code a headless Flink never loads (their closure is X11, ALSA, freetype, harfbuzz).
const GUI_LIBS: &[&str] = &[
    "libawt_xawt.so",
    "libfontmanager.so",
    "libjsound.so",
    "libsplashscreen.so",
    "libjawt.so",
    "liblcms.so",
    "libjavajpeg.so",
    "libmlib_image.so",
];

/// The jlinked JRE, `<cache>/jre-<hash>`, built when missing. Blocking.
pub fn ensure_jre(cache: &Path) -> Result<PathBuf> {
    super::job::ensure_jdk()?;
    let version = run_tool("java -version", Command::new(jdk_tool("java")).arg("-version"))?;
    let key = digest(&[&version.stderr, JRE_MODULES.as_bytes()]);
    let dir = cache.join(format!("jre-{key}"));
    if dir.join("bin/java").is_file() {
        return Ok(dir);
    }
    let tmp = scratch_for(&dir)?;
    let out = tmp.join("jre");
    run_tool(
        "jlink",
        Command::new(jdk_tool("jlink"))
            .args(["--add-modules", JRE_MODULES])
            .args(["--strip-debug", "--no-header-files", "--no-man-pages", "--output"])
            .arg(&out),
    )?;
    // Publish the jlink output itself (tmp only existed to be on the same file system).
    publish(&out, &dir)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(dir)
}

/// The shared libraries (absolute host paths) that `elfs` need, per `ldd`, including the
/// program interpreter, leaving out those under `own` (copied with the JRE). A library
/// `ldd` cannot find is an error: the JVM would not start.
pub fn library_closure(elfs: &[PathBuf], own: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for elf in elfs {
        let out = run_tool("ldd", Command::new("ldd").arg(elf))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            // The JRE's own libraries (libjvm.so for libawt.so, ...) are loaded by the JVM
            // itself before their dependants, so ldd cannot see them: they are copied.
            let own_lib = line
                .split_whitespace()
                .next()
                .is_some_and(|name| walk_has(own, name));
            if line.contains("=> not found") && !own_lib {
                return Err(FlinkError::Tool {
                    tool: "ldd".into(),
                    message: format!("{}: {line}", elf.display()),
                });
            }
            // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`; vdso has no path.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                let p = PathBuf::from(p);
                if !p.starts_with(own) {
                    libs.insert(p);
                }
            }
        }
    }
    Ok(libs)
}

/// Whether a file named `name` exists anywhere under `dir`.
fn walk_has(dir: &Path, name: &str) -> bool {
    walk(dir).is_ok_and(|files| files.iter().any(|(p, _)| p.file_name().is_some_and(|n| n == name)))
}

/// Every regular file under `dir` (symlinks followed), as (relative path, mode).
fn walk(dir: &Path) -> Result<Vec<(PathBuf, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let path = entry.map_err(io_err(&d))?.path();
            let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                out.push((rel, meta.permissions().mode() & 0o7777));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn file(path: impl Into<String>, mode: u32, src: &Path) -> Result<ContextFile> {
    Ok(ContextFile {
        path: path.into(),
        mode,
        contents: std::fs::read(src).map_err(io_err(src))?,
    })
}

/// The image's build context: JRE, its library closure, jars, log4j config. Blocking
/// (reads ~300 MB).
pub fn context(jre: &Path, dist: &FlinkDist, job_jar: &Path) -> Result<ImageContext> {
    let mut files = Vec::new();
    let mut elfs = vec![jre.join("bin/java"), jre.join("lib/server/libjvm.so")];
    for (rel, mode) in walk(jre)? {
        let name = rel.to_string_lossy().into_owned();
        let base = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("lib/") && base.ends_with(".so") && !GUI_LIBS.contains(&base.as_str()) {
            elfs.push(jre.join(&rel));
        }
        files.push(file(format!("{JAVA_DIR}/{name}"), mode, &jre.join(&rel))?);
    }
    elfs.sort();
    elfs.dedup();
    for lib in library_closure(&elfs, jre)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib).to_string_lossy().into_owned();
        files.push(file(rel, 0o755, &lib)?);
    }
    for jar in dist.runtime_jars()? {
        let name = jar.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        files.push(file(format!("opt/flink/lib/{name}"), 0o644, &jar)?);
    }
    files.push(file(format!("opt/flink/lib/{JOB_JAR}"), 0o644, job_jar)?);
    files.push(ContextFile {
        path: "opt/flink/conf/log4j-console.properties".into(),
        mode: 0o644,
        contents: LOG4J.as_bytes().to_vec(),
    });
    // COPY creates /tmp (Flink's io.tmp.dirs, the JVM's java.io.tmpdir) through this file.
    files.push(ContextFile { path: "tmp/.keep".into(), mode: 0o644, contents: Vec::new() });
    Ok(ImageContext { kind: KIND.into(), dockerfile: DOCKERFILE.into(), files })
}

/// Builds (or finds) the Flink image; returns its tag `chaos-flink:<12 hex>`. Runs the
/// blocking preparation (download, javac, jlink, reading files) off the async threads.
pub async fn ensure_flink_image(docker: &Docker, cache: &Path) -> Result<String> {
    let cache = cache.to_path_buf();
    let ctx = tokio::task::spawn_blocking(move || -> Result<ImageContext> {
        let dist = super::dist::ensure_dist(&cache)?;
        let jar = super::job::ensure_job_jar(&cache, &dist)?;
        let jre = ensure_jre(&cache)?;
        context(&jre, &dist, &jar)
    })
    .await
    .map_err(|e| FlinkError::Usage(format!("preparing the Flink image: {e}")))??;
    Ok(crate::images::ensure_image(docker, REPO, &ctx).await?)
}
