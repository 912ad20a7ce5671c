//! The disk-fault passthrough on this machine, for real: `chaos-netd disk` mounts a FUSE
//! view of a directory (root and /dev/fuse needed; skipped loudly without them, an error
//! under CI=true), faults are applied and undone through the control file, a power loss
//! rolls back what was not fsynced through the view, and stopping removes the mount.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use chaos::diskfault::{faults, mount, DiskFault, DiskKind, Errno, Op};

fn fuse_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = Path::new("/dev/fuse").exists() && unsafe { libc::geteuid() } == 0;
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but /dev/fuse or root is missing: the disk-fault tests need both");
        }
        eprintln!("\n!!! SKIPPED: no /dev/fuse or not root; the disk-fault tests did NOT run !!!\n");
    }
    ok
}

fn fault(kind: DiskKind, ops: &[Op], path: &str) -> DiskFault {
    DiskFault { id: String::new(), kind, ops: ops.to_vec(), path: path.into() }
}

/// Waits until the daemon has read the control file (it polls every 50 ms).
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn the_passthrough_serves_the_run_directory_injects_faults_and_goes_away() {
    if !fuse_or_skip() {
        return;
    }
    let run = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(run.path().join("checkpoints")).unwrap();
    std::fs::write(run.path().join("job.yaml"), "x: 1\n").unwrap();
    let netd = Path::new(env!("CARGO_BIN_EXE_chaos-netd"));
    let view = mount::start(run.path(), "taskmanager-1", netd, None, false).unwrap();
    assert!(mount::is_mounted(&view));
    assert_eq!(mount::view_if_mounted(run.path(), "taskmanager-1").as_deref(), Some(view.as_path()));

    // A plain passthrough: what the node writes is in the run directory, and the control
    // directory is hidden from it.
    assert_eq!(std::fs::read_to_string(view.join("job.yaml")).unwrap(), "x: 1\n");
    std::fs::write(view.join("checkpoints/a"), b"hello").unwrap();
    std::fs::rename(view.join("checkpoints/a"), view.join("checkpoints/b")).unwrap();
    assert_eq!(std::fs::read(run.path().join("checkpoints/b")).unwrap(), b"hello");
    let names: Vec<String> = std::fs::read_dir(&view).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.contains(&".disk".to_string()), "{names:?}");

    // EIO on fsync under checkpoints only.
    let h = faults::apply(run.path(), "taskmanager-1", fault(DiskKind::Error { errno: Errno::Eio, probability: 1.0 }, &[Op::Fsync], "checkpoints")).unwrap();
    settle();
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o644).open(view.join("checkpoints/c")).unwrap();
    f.write_all(b"data").unwrap();
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    let journal = chaos::netfault::journal::Journal::in_run_dir(run.path());
    let open: Vec<String> = journal.open_disk_entries().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(open, std::slice::from_ref(&h.id), "an applied disk fault is open in the undo journal");
    let mut g = std::fs::File::create(view.join("other")).unwrap();
    g.write_all(b"data").unwrap();
    g.sync_all().expect("fsync outside checkpoints is untouched");
    faults::undo(&h).unwrap();
    assert!(journal.open_disk_entries().unwrap().is_empty(), "the undo closes it");
    settle();
    f.sync_all().expect("fsync works again after the undo");

    // A delay on writes: measured at least as asked.
    let h = faults::apply(run.path(), "taskmanager-1", fault(DiskKind::Delay { delay: Duration::from_millis(30), jitter: Duration::ZERO }, &[Op::Write], "")).unwrap();
    settle();
    let t = Instant::now();
    let mut w = std::fs::File::create(view.join("slow")).unwrap();
    w.write_all(b"x").unwrap();
    assert!(t.elapsed() >= Duration::from_millis(30), "{:?}", t.elapsed());
    faults::undo(&h).unwrap();

    // Full after 10 bytes.
    let h = faults::apply(run.path(), "taskmanager-1", fault(DiskKind::FullAfter { bytes: 10 }, &[], "")).unwrap();
    settle();
    let mut w = std::fs::File::create(view.join("full")).unwrap();
    w.write_all(b"12345678").unwrap();
    w.flush().unwrap();
    let e = w.write_all(b"90abc").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    faults::undo(&h).unwrap();
    std::thread::sleep(Duration::from_millis(400));

    // The measurements: errors counted per fault, delays asked and measured.
    let m = faults::measure(&[h]);
    let node = &m["disk"]["taskmanager-1"];
    assert_eq!(node["injected_by_op"]["write"]["ENOSPC"], 1, "{m}");
    assert_eq!(node["injected_by_op"]["fsync"]["EIO"], 1, "{m}");
    assert_eq!(node["errors_injected"], 1, "the full_after fault's own count: {m}");
    assert!(node["delay"]["write"]["measured_ms"].as_f64().unwrap() >= 30.0, "{m}");

    // A fault on a node without a passthrough is the user's error.
    let e = faults::apply(run.path(), "taskmanager-9", fault(DiskKind::FullAfter { bytes: 1 }, &[], "")).unwrap_err();
    assert!(matches!(e, chaos::diskfault::DiskError::Usage(_)), "{e}");

    drop((f, g, w));
    assert_eq!(mount::stop_all(run.path()).unwrap(), vec!["taskmanager-1".to_string()]);
    assert!(!mount::is_mounted(&view), "stop removes the mount");
    assert!(mount::stop_all(run.path()).is_ok(), "stopping twice is fine");
}

/// A crashed `chaos` leaves the daemon running: `stop_all` finds it by its pidfile.
#[test]
fn a_daemon_left_by_a_crash_is_found_and_stopped() {
    if !fuse_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run-1");
    std::fs::create_dir_all(&run).unwrap();
    let netd = Path::new(env!("CARGO_BIN_EXE_chaos-netd"));
    let view = mount::start(&run, "jobmanager-1", netd, None, false).unwrap();
    let pid: i32 = std::fs::read_to_string(run.join(".disk/jobmanager-1.pid")).unwrap().trim().parse().unwrap();
    // Starting again keeps the daemon that serves.
    assert_eq!(mount::start(&run, "jobmanager-1", netd, None, false).unwrap(), view);
    assert_eq!(std::fs::read_to_string(run.join(".disk/jobmanager-1.pid")).unwrap().trim(), pid.to_string());
    // A fault the crashed run never undid: open in the journal until the sweep.
    faults::apply(&run, "jobmanager-1", fault(DiskKind::FullAfter { bytes: 1 }, &[], "")).unwrap();
    let journal = chaos::netfault::journal::Journal::in_run_dir(&run);
    assert_eq!(journal.open_disk_entries().unwrap().len(), 1);
    let root = root.path();
    assert!(mount::stop_all_runs(root).unwrap().contains(&"jobmanager-1".to_string()));
    assert!(!mount::is_mounted(&view));
    assert!(journal.open_disk_entries().unwrap().is_empty(), "the sweep ends the faults it removed");
    // SAFETY: existence check only.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the daemon is gone");
}

/// Stops the run's passthroughs when the test ends, also when it fails (a panicking test
/// would leave its daemon and mount behind).
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = mount::stop_all(self.0);
    }
}

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn sync_dir(path: &Path) {
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}

/// Writes through the mount with and without fsync, a power loss, and the backing
/// directory holds exactly what was made durable.
#[test]
fn a_power_loss_keeps_only_what_was_fsynced_through_the_view() {
    if !fuse_or_skip() {
        return;
    }
    let run = tempfile::tempdir().unwrap();
    let backing = run.path();
    std::fs::create_dir_all(backing.join("output")).unwrap();
    std::fs::write(backing.join("job.yaml"), "x: 1\n").unwrap();
    std::fs::write(backing.join("output/replaced"), "old").unwrap();
    let netd = Path::new(env!("CARGO_BIN_EXE_chaos-netd"));
    let view = mount::start(backing, "taskmanager-1", netd, None, true).unwrap();
    let _unmount = Unmount(backing);

    // Durable: data fsynced, name fsynced in its directory.
    write_synced(&view.join("output/durable"), b"kept");
    sync_dir(&view.join("output"));
    // Data fsynced, then more appended without fsync: the fsynced part survives.
    let mut f = std::fs::OpenOptions::new().append(true).open(view.join("output/durable")).unwrap();
    f.write_all(b" and lost").unwrap();
    drop(f);
    // Never fsynced, nor its directory: gone.
    std::fs::write(view.join("output/never"), b"lost").unwrap();
    // Data fsynced, name not: gone.
    write_synced(&view.join("output/unnamed"), b"lost");
    // A rename over an existing file without the directory's fsync: undone.
    write_synced(&view.join("output/replaced.tmp"), b"new");
    std::fs::rename(view.join("output/replaced.tmp"), view.join("output/replaced")).unwrap();
    // An fsynced file truncated: undone.
    std::fs::OpenOptions::new().write(true).open(view.join("job.yaml")).unwrap().set_len(0).unwrap();

    let rep = faults::power_loss(backing, "taskmanager-1").unwrap();
    let read = |rel: &str| std::fs::read_to_string(backing.join(rel)).ok();
    assert_eq!(read("output/durable").as_deref(), Some("kept"));
    assert_eq!(read("output/never"), None);
    assert_eq!(read("output/unnamed"), None);
    assert_eq!(read("output/replaced").as_deref(), Some("old"));
    assert_eq!(read("output/replaced.tmp"), None);
    assert_eq!(read("job.yaml").as_deref(), Some("x: 1\n"));
    assert!(rep.files_rolled_back >= 3, "{rep:?}");
    assert_eq!(rep.bytes_lost, 9 + 4 + 5, "appended, never, job.yaml's cut bytes: {rep:?}");
    assert_eq!(rep.undone_by_kind.get("create"), Some(&3), "never, unnamed, replaced.tmp: {rep:?}");
    assert_eq!(rep.undone_by_kind.get("rename"), Some(&1), "{rep:?}");
    assert_eq!(rep.conflicts, 0, "{rep:?}");
    // The request is gone from the control file once answered, and the view goes on.
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(backing.join(".disk/taskmanager-1.control.json")).unwrap()).unwrap();
    assert!(c.get("power_loss").is_none(), "{c}");
    assert_eq!(std::fs::read_to_string(view.join("output/replaced")).unwrap(), "old");
    // Tracking starts afresh: nothing more to lose.
    let again = faults::power_loss(backing, "taskmanager-1").unwrap();
    assert_eq!((again.files_rolled_back, again.entries_undone), (0, 0), "{again:?}");
    // No hard link left under .disk.
    assert_eq!(std::fs::read_dir(backing.join(".disk/unsynced/taskmanager-1")).unwrap().count(), 0);

    mount::stop_all(backing).unwrap();
    assert!(!mount::is_mounted(&view));
}

/// A passthrough without the undo log (no `lose_unsynced` in the run) refuses a power
/// loss as the user's error, and so does a node without a passthrough.
#[test]
fn a_power_loss_needs_the_undo_log() {
    if !fuse_or_skip() {
        return;
    }
    let run = tempfile::tempdir().unwrap();
    let netd = Path::new(env!("CARGO_BIN_EXE_chaos-netd"));
    let view = mount::start(run.path(), "taskmanager-1", netd, None, false).unwrap();
    let _unmount = Unmount(run.path());
    let e = faults::power_loss(run.path(), "taskmanager-1").unwrap_err();
    assert!(matches!(e, chaos::diskfault::DiskError::Usage(_)) && e.to_string().contains("undo log"), "{e}");
    let e = faults::power_loss(run.path(), "taskmanager-2").unwrap_err();
    assert!(matches!(e, chaos::diskfault::DiskError::Usage(_)) && e.to_string().contains("no disk passthrough"), "{e}");
    mount::stop_all(run.path()).unwrap();
    assert!(!mount::is_mounted(&view));
}

/// The engine's durable writes through a view that loses power: a sink's staged and
/// committed transactions, a task snapshot, and the jobmanager's cuts. Regression: the
/// first append to `cuts.tsv` created the file without fsyncing its directory (made by
/// the first snapshot's writer), so a power loss of the jobmanager removed every cut.
#[test]
fn the_engines_durable_writes_survive_a_power_loss() {
    if !fuse_or_skip() {
        return;
    }
    let run = tempfile::tempdir().unwrap();
    let backing = run.path();
    let netd = Path::new(env!("CARGO_BIN_EXE_chaos-netd"));
    let view = mount::start(backing, "jobmanager-1", netd, None, true).unwrap();
    let _unmount = Unmount(backing);

    let mut sink = streamd::taskmanager::sink::FileSink::open(view.join("output/job/0"), 1).unwrap();
    sink.pre_commit(1, [("a", 1)]).unwrap();
    let handle = streamd::snapshot::write_task_snapshot(&view, None, "job", 1, streamd::wire::TaskId::Count(0), &vec![1u8, 2, 3]).unwrap();
    sink.commit_up_to(1).unwrap();
    sink.pre_commit(2, [("a", 2)]).unwrap();
    let cut = streamd_contract::cuts::Cut { checkpoint: 1, positions: vec![10] };
    streamd_contract::cuts::append(&streamd_contract::cuts::path(&view, "job"), &cut).unwrap();

    let rep = faults::power_loss(backing, "jobmanager-1").unwrap();
    assert_eq!((rep.files_rolled_back, rep.entries_undone), (0, 0), "every write was durable: {rep:?}");
    let committed = streamd_contract::output::read_committed(&backing.join("output/job")).unwrap();
    assert_eq!(committed.len(), 1, "{rep:?}");
    assert!(backing.join("output/job/0").join(streamd_contract::output::staged_name(2, 1)).exists(), "{rep:?}");
    assert!(backing.join(&handle.path).exists(), "{rep:?}");
    assert_eq!(streamd_contract::cuts::read(&streamd_contract::cuts::path(backing, "job")).unwrap(), vec![cut], "{rep:?}");
    mount::stop_all(backing).unwrap();
}
