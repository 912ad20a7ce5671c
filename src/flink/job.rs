//! The Flink job: `cluster/flink/src` (embedded in this binary) compiled with the host's
//! `javac` against the distribution's jars into `<cache>/job-<hash>/chaos-wordcount.jar`.
//! The hash covers the sources, the Flink version and the `javac` version, so the jar is
//! rebuilt exactly when one of them changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::dist::{FlinkDist, FLINK_VERSION};
use super::{digest, io_err, publish, run_tool, scratch_for, FlinkError, Result};

/// The job's main class.
pub const JOB_CLASS: &str = "chaos.flink.WordCount";
/// The jar's file name (in the cache and in the image's `lib/`).
pub const JOB_JAR: &str = "chaos-wordcount.jar";
/// The Debian package providing javac, jar, jlink and the JRE the image copies.
pub const JDK_PACKAGE: &str = "openjdk-17-jdk-headless";
/// The JDK's home on Debian 12.
pub const JAVA_HOME: &str = "/usr/lib/jvm/java-17-openjdk-amd64";

/// The job's sources: (path under `cluster/flink/src`, text).
pub const SOURCES: &[(&str, &str)] = &[(
    "chaos/flink/WordCount.java",
    include_str!("../../cluster/flink/src/chaos/flink/WordCount.java"),
)];

/// A JDK tool (`javac`, `jar`, `jlink`, `java`) of [`JAVA_HOME`].
pub fn jdk_tool(name: &str) -> PathBuf {
    Path::new(JAVA_HOME).join("bin").join(name)
}

/// Makes sure the JDK is there (`javac` and `jlink`); otherwise says what to install.
/// chaos never installs packages itself: `chaos doctor` names what is missing, and the
/// test command installs it.
pub fn ensure_jdk() -> Result<()> {
    for tool in ["javac", "jlink"] {
        if !jdk_tool(tool).is_file() {
            return Err(FlinkError::Tool {
                tool: tool.into(),
                message: format!("{} is missing: apt-get install {JDK_PACKAGE}", jdk_tool(tool).display()),
            });
        }
    }
    Ok(())
}

/// `javac -version`, part of the jar's cache key.
fn javac_version() -> Result<String> {
    let out = run_tool("javac -version", Command::new(jdk_tool("javac")).arg("-version"))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// The cache key of the job jar.
pub fn job_key(javac_version: &str) -> String {
    let mut parts: Vec<&[u8]> = vec![FLINK_VERSION.as_bytes(), javac_version.as_bytes()];
    for (path, text) in SOURCES {
        parts.push(path.as_bytes());
        parts.push(text.as_bytes());
    }
    digest(&parts)
}

/// The job jar, compiled when its cache entry is missing. Blocking.
pub fn ensure_job_jar(cache: &Path, dist: &FlinkDist) -> Result<PathBuf> {
    ensure_jdk()?;
    let dir = cache.join(format!("job-{}", job_key(&javac_version()?)));
    let jar = dir.join(JOB_JAR);
    if jar.is_file() {
        return Ok(jar);
    }
    let tmp = scratch_for(&dir)?;
    let src = tmp.join("src");
    let classes = tmp.join("classes");
    let mut files = Vec::new();
    for (path, text) in SOURCES {
        let file = src.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&file, text).map_err(io_err(&file))?;
        files.push(file);
    }
    let classpath = std::env::join_paths(dist.compile_jars()?)
        .map_err(|e| FlinkError::Usage(format!("jar path unusable in a class path: {e}")))?;
    run_tool(
        "javac",
        Command::new(jdk_tool("javac"))
            .args(["--release", "17", "-nowarn", "-encoding", "UTF-8", "-d"])
            .arg(&classes)
            .arg("-cp")
            .arg(&classpath)
            .args(&files),
    )?;
    run_tool(
        "jar",
        Command::new(jdk_tool("jar"))
            .arg("--create")
            .arg("--file")
            .arg(tmp.join(JOB_JAR))
            .arg("-C")
            .arg(&classes)
            .arg("."),
    )?;
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&classes);
    publish(&tmp, &dir)?;
    Ok(jar)
}
