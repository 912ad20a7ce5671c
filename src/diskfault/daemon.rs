//! `chaos-netd disk`: mounts the passthrough of one node's view and serves it until
//! SIGTERM, following the control file and publishing the measurements.
//!
//! A power loss is a request in the control file (`power_loss: <id>`): the daemon rolls
//! back what the node never fsynced ([`super::unsynced`]) and acknowledges with its
//! account under that id in the stats file, written at once. A request already in the
//! control file when the daemon starts is stale (an earlier daemon's) and is not run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::fs::{Passthrough, Shared};
use super::rules::Control;

/// Where the daemon of one node reads and writes.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub backing: PathBuf,
    pub mount: PathBuf,
    pub control: PathBuf,
    pub stats: PathBuf,
}

/// Writes `bytes` to `path` through a temporary file and a rename: a reader never sees
/// half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The control file's bytes and content. Changes are told by the bytes, not the mtime:
/// two rewrites within one tick of the filesystem's clock must not look like one.
fn read_control(path: &Path) -> Option<(Vec<u8>, Control)> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(c) => Some((text, c)),
        Err(e) => {
            eprintln!("chaos-netd disk: ignoring {}: {e}", path.display());
            None
        }
    }
}

/// Where a node's removed names are kept for a power loss: `<backing>/.disk/unsynced/<mount
/// point's name>` (hidden from the view, on the backing filesystem, so hard links work).
pub fn keep_dir(cfg: &DaemonConfig) -> PathBuf {
    let name = cfg.mount.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "view".into());
    cfg.backing.join(super::fs::HIDDEN).join("unsynced").join(name)
}

fn publish(cfg: &DaemonConfig, shared: &Shared) -> std::io::Result<String> {
    let json = serde_json::to_string(&*shared.stats.lock().unwrap()).map_err(std::io::Error::other)?;
    write_atomic(&cfg.stats, json.as_bytes())?;
    Ok(json)
}

pub fn run(cfg: &DaemonConfig, stop: &AtomicBool) -> std::io::Result<()> {
    // The passthrough stands in for a disk, which does not queue for the CPU behind the
    // node it serves. At normal priority its threads did on a saturated machine: every
    // checkpoint's few dozen FUSE round trips waited for a core, +19 % on checkpoint
    // duration with no fault active (benches/passthrough). A higher priority (nice -10,
    // set before the FUSE threads start: they inherit it) keeps those waits short; it
    // changes nothing when the machine is idle. Not being allowed to is not an error.
    // SAFETY: setpriority(2) on the calling thread, plain integers.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
    let shared = Arc::new(Shared::new(&cfg.backing, keep_dir(cfg)));
    let mut seen: Option<Vec<u8>> = None;
    let mut stale_request: Option<String> = None;
    let mut first = true;
    // Returns whether a power loss ran (the stats are then published at once).
    let mut load = |shared: &Shared| -> bool {
        let Some((bytes, c)) = read_control(&cfg.control) else { return false };
        if seen.as_ref() == Some(&bytes) {
            return false;
        }
        seen = Some(bytes);
        if std::mem::take(&mut first) {
            stale_request.clone_from(&c.power_loss);
        }
        shared.track.store(c.track_unsynced, Ordering::Relaxed);
        let mut stats = shared.stats.lock().unwrap();
        for f in &c.faults {
            stats.begin(&f.id);
        }
        let request = c.power_loss.clone().filter(|id| Some(id) != stale_request.as_ref() && !stats.power_losses.contains_key(id));
        drop(stats);
        *shared.control.write().unwrap() = c;
        let Some(id) = request else { return false };
        let report = shared.power_loss();
        eprintln!("chaos-netd disk: power loss {id}: {}", serde_json::to_string(&report).unwrap_or_default());
        shared.stats.lock().unwrap().power_losses.insert(id, report);
        true
    };
    load(&shared);
    let fs = Passthrough::new(cfg.backing.clone(), shared.clone())?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("chaos-disk".into()), fuser::MountOption::Subtype("chaos".into())];
    // Any user of the node's container (root there is root here: no user namespace).
    config.acl = fuser::SessionACL::All;
    // Operations wait their injected delay in the handler thread: several threads keep one
    // delayed operation from holding up all the others.
    config.n_threads = Some(8);
    let session = fuser::spawn_mount(fs, &cfg.mount, &config)?;
    eprintln!("chaos-netd disk: mounted {} on {}", cfg.backing.display(), cfg.mount.display());
    let mut last = String::new();
    let mut ticks = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let lost = load(&shared);
        if lost || ticks.is_multiple_of(20) {
            let pending = shared.pending();
            shared.stats.lock().unwrap().unsynced_now = pending;
            let json = serde_json::to_string(&*shared.stats.lock().unwrap()).map_err(std::io::Error::other)?;
            if json != last {
                write_atomic(&cfg.stats, json.as_bytes())?;
                last = json;
            }
        }
        ticks += 1;
        // Every 10 ms: a power loss must follow the node's death closely, before the job
        // restores elsewhere from the files it rolls back.
        std::thread::sleep(Duration::from_millis(if lost { 0 } else { 10 }));
    }
    publish(cfg, &shared)?;
    session.umount_and_join()
}
