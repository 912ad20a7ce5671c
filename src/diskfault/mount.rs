//! The host side of the passthrough: one `chaos-netd disk` daemon per node, started
//! before the node's container (which bind-mounts the view instead of the run directory)
//! and stopped, with its mount, by `chaos down`.
//!
//! Why a host process and not a sidecar container: a FUSE mount made inside a container
//! reaches the host (and from there another container) only through `rshared` bind
//! propagation, which needs the source directory on a shared mount; the host's root is
//! `private` here, so `chaos` would have to make a shared mount on the host anyway. A
//! daemon in the host's mount namespace makes the view visible to the node's bind mount
//! directly, works the same on the process runtime, and is found again through its
//! pidfile (`<run_dir>/.disk/<node>.pid`) after a crash.
//!
//! Layout under `<run_dir>/.disk/` (hidden from the nodes' views): `mnt/<node>/` the
//! mount point, `<node>.control.json` the faults, `<node>.stats.json` the measurements,
//! `<node>.pid`, `<node>.log` the daemon's stderr.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fs::HIDDEN;
use super::rules::Control;
use super::stats::Stats;
use super::DiskError;

/// The files of one node's passthrough.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub node: String,
    pub dir: PathBuf,
}

impl NodeFiles {
    pub fn new(run_dir: &Path, node: &str) -> NodeFiles {
        NodeFiles { node: node.to_string(), dir: run_dir.join(HIDDEN) }
    }
    pub fn mount_point(&self) -> PathBuf {
        self.dir.join("mnt").join(&self.node)
    }
    pub fn control(&self) -> PathBuf {
        self.dir.join(format!("{}.control.json", self.node))
    }
    pub fn stats(&self) -> PathBuf {
        self.dir.join(format!("{}.stats.json", self.node))
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.node))
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.node))
    }

    pub fn read_control(&self) -> Result<Control, DiskError> {
        match std::fs::read(self.control()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| DiskError::Io(format!("{}: {e}", self.control().display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Control::default()),
            Err(e) => Err(DiskError::Io(format!("{}: {e}", self.control().display()))),
        }
    }

    pub fn write_control(&self, c: &Control) -> Result<(), DiskError> {
        let bytes = serde_json::to_vec(c).map_err(|e| DiskError::Io(e.to_string()))?;
        super::daemon::write_atomic(&self.control(), &bytes).map_err(|e| DiskError::Io(format!("{}: {e}", self.control().display())))
    }

    pub fn read_stats(&self) -> Option<Stats> {
        serde_json::from_slice(&std::fs::read(self.stats()).ok()?).ok()
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pidfile()).ok()?.trim().parse().ok()
    }
}

/// Whether `path` is a mount point now (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&p))
}

/// The view a node's /data must bind, when its passthrough is mounted.
pub fn view_if_mounted(run_dir: &Path, node: &str) -> Option<PathBuf> {
    let m = NodeFiles::new(run_dir, node).mount_point();
    is_mounted(&m).then_some(m)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |e| DiskError::Io(format!("{}: {e}", what.display()))
}

/// Starts the passthrough of `node` (`netd` is the `chaos-netd` binary) and waits until it
/// is mounted. A daemon already serving this node is kept. `track_unsynced`: keep the undo
/// log a power loss needs (`lose_unsynced`), from the first operation on.
pub fn start(
    run_dir: &Path,
    node: &str,
    netd: &Path,
    storage: Option<&super::rules::StorageModel>,
    track_unsynced: bool,
) -> Result<PathBuf, DiskError> {
    let f = NodeFiles::new(run_dir, node);
    let mp = f.mount_point();
    std::fs::create_dir_all(&mp).map_err(io(&mp))?;
    let mut control = f.read_control()?;
    control.storage = storage.cloned();
    control.track_unsynced = track_unsynced;
    // A request of an earlier daemon was answered (or is moot): never run it again.
    control.power_loss = None;
    f.write_control(&control)?;
    if is_mounted(&mp) && f.pid().is_some_and(alive) {
        return Ok(mp);
    }
    let log = std::fs::File::create(f.log()).map_err(io(&f.log()))?;
    let mut cmd = Command::new(netd);
    cmd.arg("disk").arg("--backing").arg(run_dir).arg("--mount").arg(&mp).arg("--control").arg(f.control()).arg("--stats").arg(f.stats());
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    // Its own session: the daemon outlives a `chaos` that crashes or is interrupted (the
    // cluster still needs its disk), until `chaos down` stops it.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let _ = std::fs::remove_file(f.stats());
    let child = cmd.spawn().map_err(|e| DiskError::Io(format!("starting {}: {e}", netd.display())))?;
    std::fs::write(f.pidfile(), child.id().to_string()).map_err(io(&f.pidfile()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if is_mounted(&mp) {
            return Ok(mp);
        }
        if !alive(child.id() as i32) || Instant::now() > deadline {
            let said = std::fs::read_to_string(f.log()).unwrap_or_default();
            let _ = stop(run_dir, node);
            return Err(DiskError::Io(format!("the disk passthrough of {node} did not mount: {}", said.trim())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the daemon of `node` and removes its mount (lazily, should a process still hold
/// it). Idempotent.
pub fn stop(run_dir: &Path, node: &str) -> Result<(), DiskError> {
    let f = NodeFiles::new(run_dir, node);
    if let Some(pid) = f.pid() {
        if alive(pid) {
            // SAFETY: plain signals to the daemon we started (its pid from our pidfile).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while alive(pid) && Instant::now() < deadline {
                reap(pid);
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            reap(pid);
        }
        let _ = std::fs::remove_file(f.pidfile());
    }
    let mp = f.mount_point();
    if is_mounted(&mp) {
        let c = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()).map_err(|e| DiskError::Io(e.to_string()))?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(DiskError::Io(format!("unmounting {}: {}", mp.display(), std::io::Error::last_os_error())));
        }
    }
    Ok(())
}

/// A daemon started by this process is our child: collect it so it does not linger as a
/// zombie (which `kill(pid, 0)` would still find).
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: non-blocking wait on one pid; ECHILD when it is not ours.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// The nodes with passthrough files in `run_dir`.
pub fn nodes(run_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(run_dir.join(HIDDEN).join("mnt"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Stops every passthrough of a run: `chaos down`, also after a crash. Returns the nodes
/// whose view was removed.
pub fn stop_all(run_dir: &Path) -> Result<Vec<String>, DiskError> {
    let mut stopped = Vec::new();
    for node in nodes(run_dir) {
        stop(run_dir, &node)?;
        stopped.push(node);
    }
    // The faults the stopped views held are over: say so in the journal.
    super::faults::ended(run_dir, None)?;
    Ok(stopped)
}

/// Whether a plan needs the passthrough: it has `disk` faults, a node that loses power
/// (`lose_unsynced`) or a remote-storage model (`cluster.checkpoint_storage`). Other runs
/// keep the plain bind mount and pay nothing.
pub fn plan_needs(plan: &crate::scenario::Plan) -> bool {
    plan.cluster.checkpoint_storage.is_some()
        || plan_loses_power(plan)
        || plan.faults.iter().any(|f| matches!(f.action, crate::scenario::Action::Disk(_)))
}

/// Whether a plan has a fault with `lose_unsynced`: its passthroughs keep the undo log.
pub fn plan_loses_power(plan: &crate::scenario::Plan) -> bool {
    plan.faults.iter().any(|f| f.action.loses_unsynced())
}

/// Starts the passthroughs of every jobmanager and taskmanager of `plan`, when it needs
/// them or `always` (`chaos up --disk`, `chaos run --disk`); returns the nodes served.
/// They keep the undo log of power loss when the plan loses power or `track` (`chaos up
/// --disk`, so that `chaos kill --lose-unsynced` can be asked later; not `chaos run
/// --disk`, which measures the plain passthrough).
pub fn start_for_plan(plan: &crate::scenario::Plan, run_dir: &Path, always: bool, track: bool) -> Result<Vec<String>, DiskError> {
    if !always && !plan_needs(plan) {
        return Ok(Vec::new());
    }
    let netd = crate::netfault::netd_binary().map_err(|e| DiskError::Io(e.to_string()))?;
    let nodes: Vec<String> = plan
        .cluster
        .node_names()
        .into_iter()
        .filter(|n| n.starts_with("jobmanager-") || n.starts_with("taskmanager-"))
        .collect();
    let track = track || plan_loses_power(plan);
    for n in &nodes {
        start(run_dir, n, &netd, plan.cluster.checkpoint_storage.as_ref(), track)?;
    }
    Ok(nodes)
}

/// [`stop_all`] for every run under `runs_root`: `chaos down` without a current cluster.
pub fn stop_all_runs(runs_root: &Path) -> Result<Vec<String>, DiskError> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(runs_root).into_iter().flatten().flatten() {
        if dir.path().join(HIDDEN).is_dir() {
            out.extend(stop_all(&dir.path())?);
        }
    }
    Ok(out)
}
