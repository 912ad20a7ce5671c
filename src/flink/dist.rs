//! The Flink distribution's jars. The only registry with Flink that is reachable is PyPI:
//! `apache-flink-libraries` is a wheel (a zip) whose `pyflink/lib/` is the binary
//! distribution's `lib/` (flink-dist with the DataStream API and the runtime entry
//! points, flink-connector-files with FileSink, log4j). It is downloaded with pip, never
//! installed, and only `pyflink/lib/*.jar` is unpacked, into
//! `<cache>/dist-<version>/lib/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{io_err, publish, run_tool, scratch_for, FlinkError, Result};

/// The Flink version the job is compiled against and the image runs.
pub const FLINK_VERSION: &str = "2.3.0";
/// The PyPI package holding the jars.
pub const WHEEL_PACKAGE: &str = "apache-flink-libraries";
/// Environment variable naming a ready distribution (a directory with `lib/*.jar`, e.g. an
/// unpacked `flink-2.3.0-bin`): skips the download.
pub const DIST_ENV: &str = "CHAOS_FLINK_DIST";

/// The jars of `lib/` the image ships: the DataStream runtime, the file connector, and
/// logging. The table planner, Scala, CEP, CSV and JSON jars are left out (~85 MB).
pub const RUNTIME_JARS: &[&str] = &[
    "flink-dist-2.3.0.jar",
    "flink-connector-files-2.3.0.jar",
    "log4j-1.2-api-2.25.3.jar",
    "log4j-api-2.25.3.jar",
    "log4j-core-2.25.3.jar",
    "log4j-slf4j-impl-2.25.3.jar",
];

/// The jars javac needs to compile the job.
pub const COMPILE_JARS: &[&str] = &["flink-dist-2.3.0.jar", "flink-connector-files-2.3.0.jar"];

/// An unpacked distribution.
#[derive(Debug, Clone)]
pub struct FlinkDist {
    /// Directory holding the jars.
    pub lib: PathBuf,
}

impl FlinkDist {
    /// The path of jar `name` in `lib/`.
    pub fn jar(&self, name: &str) -> PathBuf {
        self.lib.join(name)
    }

    /// The [`RUNTIME_JARS`], checked to exist.
    pub fn runtime_jars(&self) -> Result<Vec<PathBuf>> {
        self.existing(RUNTIME_JARS)
    }

    /// The [`COMPILE_JARS`], checked to exist.
    pub fn compile_jars(&self) -> Result<Vec<PathBuf>> {
        self.existing(COMPILE_JARS)
    }

    fn existing(&self, names: &[&str]) -> Result<Vec<PathBuf>> {
        names
            .iter()
            .map(|n| {
                let p = self.jar(n);
                match p.is_file() {
                    true => Ok(p),
                    false => Err(FlinkError::Usage(format!(
                        "the Flink distribution at {} has no {n} (Flink {FLINK_VERSION} expected)",
                        self.lib.display()
                    ))),
                }
            })
            .collect()
    }
}

/// Whether [`ensure_dist`] can work without surprises, for `chaos doctor` and the checks
/// before a run: where the jars are, or that pip can fetch them; otherwise why not.
pub fn available(cache: &Path) -> std::result::Result<String, String> {
    if let Some(dir) = std::env::var_os(DIST_ENV) {
        let dist = FlinkDist { lib: PathBuf::from(dir).join("lib") };
        return dist.runtime_jars().map(|_| format!("{DIST_ENV}: {}", dist.lib.display())).map_err(|e| e.to_string());
    }
    let dist = FlinkDist { lib: cache.join(format!("dist-{FLINK_VERSION}")).join("lib") };
    if dist.runtime_jars().is_ok() {
        return Ok(format!("cached in {}", dist.lib.display()));
    }
    let pip = Command::new("python3").args(["-m", "pip", "--version"]).output();
    match pip {
        Ok(o) if o.status.success() => Ok(format!(
            "not cached yet: pip downloads {WHEEL_PACKAGE} {FLINK_VERSION} (~330 MB) on first use ({})",
            String::from_utf8_lossy(&o.stdout).split(" from ").next().unwrap_or("pip").trim()
        )),
        _ => Err(format!("not cached in {}, and `python3 -m pip` is not available to download it", cache.display())),
    }
}

/// The distribution: `$CHAOS_FLINK_DIST/lib` when set, else the cached one, downloaded
/// (~330 MB, once) and unpacked on first use. Blocking.
pub fn ensure_dist(cache: &Path) -> Result<FlinkDist> {
    if let Some(dir) = std::env::var_os(DIST_ENV) {
        let dist = FlinkDist { lib: PathBuf::from(dir).join("lib") };
        dist.runtime_jars()?;
        return Ok(dist);
    }
    let root = cache.join(format!("dist-{FLINK_VERSION}"));
    let dist = FlinkDist { lib: root.join("lib") };
    if dist.runtime_jars().is_ok() {
        return Ok(dist);
    }
    let wheel = ensure_wheel(cache)?;
    let tmp = scratch_for(&root)?;
    // Python's zipfile: pip implies python3, while `unzip` may be missing.
    let script = "import sys, zipfile, os\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        os.makedirs(os.path.join(sys.argv[2], 'lib'), exist_ok=True)\n\
        for n in z.namelist():\n\
        \x20   if n.startswith('pyflink/lib/') and n.endswith('.jar'):\n\
        \x20       with z.open(n) as s, open(os.path.join(sys.argv[2], 'lib', os.path.basename(n)), 'wb') as d:\n\
        \x20           while True:\n\
        \x20               b = s.read(1 << 20)\n\
        \x20               if not b: break\n\
        \x20               d.write(b)\n";
    run_tool(
        "python3 (unpacking the Flink wheel)",
        Command::new("python3").arg("-c").arg(script).arg(&wheel).arg(&tmp),
    )?;
    publish(&tmp, &root)?;
    dist.runtime_jars()?;
    Ok(dist)
}

/// The `apache-flink-libraries` wheel in `<cache>/wheels`, downloaded with pip when absent.
fn ensure_wheel(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("wheels");
    let find = |dir: &Path| -> Option<PathBuf> {
        let prefix = format!("{}-{FLINK_VERSION}-", WHEEL_PACKAGE.replace('-', "_"));
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
            })
    };
    if let Some(w) = find(&dir) {
        return Ok(w);
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    run_tool(
        "pip download",
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(&dir)
            .arg(format!("{WHEEL_PACKAGE}=={FLINK_VERSION}")),
    )?;
    find(&dir).ok_or_else(|| FlinkError::Tool {
        tool: "pip download".into(),
        message: format!("no {WHEEL_PACKAGE} {FLINK_VERSION} wheel in {}", dir.display()),
    })
}
