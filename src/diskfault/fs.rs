//! The FUSE passthrough filesystem: every operation on the mount runs on the backing
//! directory, after the decision of the current [`Control`] (wait, or fail instead).
//!
//! Inode numbers are the backing files' own (`st_ino`), the root's being FUSE's 1; each
//! inode remembers its last known path, and a rename moves the paths below it. Attributes
//! and entries are never cached by the kernel (TTL 0): several nodes' mounts share the
//! checkpoint directory, and one must see at once what another wrote.
//! `.disk` at the root (where the control files and the mount points live) is hidden.
//!
//! With `track_unsynced` in the control file (a run with a `lose_unsynced` fault, or
//! `chaos up --disk`), every change also goes through the node's undo log
//! ([`super::unsynced`]), under a gate that a power loss closes: the rollback waits for
//! the operations under way and none runs while it rolls back. Without it an operation
//! pays one atomic load.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::rules::{Control, Op};
use super::stats::Stats;
use super::unsynced::{PowerLossReport, Tracker};

/// The hidden directory at the root of the backing directory.
pub const HIDDEN: &str = ".disk";

const TTL: Duration = Duration::ZERO;

/// State shared with the daemon's control loop.
pub struct Shared {
    pub control: RwLock<Control>,
    pub stats: Mutex<Stats>,
    /// Changes go through the undo log (the control file's `track_unsynced`).
    pub track: AtomicBool,
    /// Operations hold it shared while tracked; a power loss holds it exclusively.
    power: RwLock<()>,
    /// `None` when the undo log could not be set up (every tracked change then counts as
    /// untracked).
    unsynced: Mutex<Option<Tracker>>,
    /// inode -> path relative to the backing directory ("" for the root).
    paths: Mutex<HashMap<u64, PathBuf>>,
    /// When the last power loss was.
    lost_at: Mutex<Option<Instant>>,
}

/// Everything known under `from` now lives under `to`.
fn move_paths(paths: &mut HashMap<u64, PathBuf>, from: &Path, to: &Path) {
    for p in paths.values_mut() {
        if let Ok(rest) = p.strip_prefix(from) {
            *p = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
        }
    }
}

impl Shared {
    /// For the view of `backing`; removed names are kept under `keep` (which must be on
    /// the same filesystem, hidden from the view).
    pub fn new(backing: &Path, keep: PathBuf) -> Shared {
        let unsynced = match Tracker::new(backing.to_path_buf(), keep) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("chaos-netd disk: no undo log for power losses: {e}");
                None
            }
        };
        Shared {
            control: RwLock::default(),
            stats: Mutex::default(),
            track: AtomicBool::new(false),
            power: RwLock::new(()),
            unsynced: Mutex::new(unsynced),
            paths: Mutex::new(HashMap::from([(1, PathBuf::new())])),
            lost_at: Mutex::new(None),
        }
    }

    /// Files with a pre-image and entry changes pending, when tracking.
    pub fn pending(&self) -> Option<(usize, usize)> {
        if !self.track.load(Ordering::Relaxed) {
            return None;
        }
        self.unsynced.lock().unwrap().as_ref().map(|t| t.pending())
    }

    /// Power loss: waits for the operations under way, rolls back everything not fsynced
    /// (see [`super::unsynced`]) and starts tracking afresh.
    pub fn power_loss(&self) -> PowerLossReport {
        let _closed = self.power.write().unwrap();
        let mut t = self.unsynced.lock().unwrap();
        let Some(t) = t.as_mut() else {
            return PowerLossReport { untracked: 1, ..PowerLossReport::default() };
        };
        let (rep, moved) = t.lose();
        *self.lost_at.lock().unwrap() = Some(Instant::now());
        let mut paths = self.paths.lock().unwrap();
        for (from, to) in moved {
            move_paths(&mut paths, &from, &to);
        }
        rep
    }
}

pub struct Passthrough {
    backing: PathBuf,
    root_ino: u64,
    shared: Arc<Shared>,
    files: Mutex<HashMap<u64, (Arc<File>, PathBuf)>>,
    next_fh: Mutex<u64>,
}

fn kind_of(ft: std::fs::FileType) -> FileType {
    FileType::from_std(ft).unwrap_or(FileType::RegularFile)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

/// Whether thread `pid` (as FUSE names the caller, in the daemon's pid namespace) still
/// runs: it exists and is neither a zombie nor dead.
fn thread_alive(pid: u32) -> bool {
    if pid == 0 {
        return true;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) S ...`: the state follows the last `)` (comm may hold anything).
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X' | 'x') | None)
}

fn err(e: std::io::Error) -> FErrno {
    FErrno::from(e)
}

impl Passthrough {
    pub fn new(backing: PathBuf, shared: Arc<Shared>) -> std::io::Result<Passthrough> {
        let root_ino = std::fs::metadata(&backing)?.ino();
        Ok(Passthrough {
            backing,
            root_ino,
            shared,
            files: Mutex::new(HashMap::new()),
            next_fh: Mutex::new(1),
        })
    }

    fn ino_of(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino {
            1
        } else {
            st_ino
        }
    }

    fn rel(&self, ino: INodeNo) -> Result<PathBuf, FErrno> {
        self.shared.paths.lock().unwrap().get(&ino.0).cloned().ok_or(FErrno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, FErrno> {
        let p = self.rel(parent)?;
        if p.as_os_str().is_empty() && name == HIDDEN {
            return Err(FErrno::ENOENT);
        }
        Ok(p.join(name))
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn attr(&self, rel: &Path) -> Result<FileAttr, FErrno> {
        let m = std::fs::symlink_metadata(self.full(rel)).map_err(err)?;
        let ino = self.ino_of(m.ino());
        self.shared.paths.lock().unwrap().insert(ino, rel.to_path_buf());
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: m.size(),
            blocks: m.blocks(),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind_of(m.file_type()),
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            blksize: m.blksize() as u32,
            flags: 0,
        })
    }

    /// Applies the current faults to `op` on `rel`: waits the delay, or fails. Returns the
    /// start of the operation, for [`Self::done`].
    fn gate(&self, op: Op, rel: &Path, bytes: u64) -> Result<Instant, FErrno> {
        let start = Instant::now();
        let rel_s = rel.to_string_lossy();
        let decision = {
            let control = self.shared.control.read().unwrap();
            if control.faults.is_empty() && control.storage.is_none() {
                return Ok(start);
            }
            let stats = self.shared.stats.lock().unwrap();
            control.decide(op, &rel_s, bytes, &mut || rand::random::<f64>(), &|id| stats.written_since(id))
        };
        if !decision.delay.is_zero() {
            std::thread::sleep(decision.delay);
        }
        let mut stats = self.shared.stats.lock().unwrap();
        stats.asked(op, decision.delay);
        if let Some((errno, id)) = decision.fail {
            stats.injected(op, errno, &id);
            stats.finished(op, start.elapsed());
            return Err(FErrno::from_i32(errno.raw()));
        }
        Ok(start)
    }

    fn done(&self, op: Op, start: Instant, written: u64) {
        let mut stats = self.shared.stats.lock().unwrap();
        stats.finished(op, start.elapsed());
        if written > 0 {
            stats.wrote(written);
        }
    }

    /// The power-loss gate, held for a whole operation, when changes are tracked. An
    /// operation that `arrived` before the last power loss (it waited out an injected
    /// delay meanwhile) comes from the node that lost power: it fails with EIO and never
    /// reaches the disk.
    ///
    /// `arrived` also names the thread that asked: after an injected delay, an operation
    /// whose thread died meanwhile (the node was killed while it waited) is dropped the
    /// same way. Its caller never saw it return, so it cannot count on it, and a power
    /// loss that follows must find the disk as the node left it, not as a queue of its
    /// operations finished afterwards.
    fn power_guard(&self, arrived: Option<(Instant, u32)>) -> Result<Option<RwLockReadGuard<'_, ()>>, FErrno> {
        if !self.shared.track.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let guard = self.shared.power.read().unwrap();
        if let Some((at, pid)) = arrived {
            if self.shared.lost_at.lock().unwrap().is_some_and(|lost| at < lost) {
                return Err(FErrno::EIO);
            }
            if at.elapsed() > Duration::from_millis(1) && !thread_alive(pid) {
                return Err(FErrno::EIO);
            }
        }
        Ok(Some(guard))
    }

    /// Records something in the undo log (`guard`: from [`Self::power_guard`]).
    fn note(&self, guard: &Option<RwLockReadGuard<'_, ()>>, what: impl FnOnce(&mut Tracker) -> std::io::Result<()>) {
        if guard.is_none() {
            return;
        }
        if let Some(t) = self.shared.unsynced.lock().unwrap().as_mut() {
            if let Err(e) = what(t) {
                eprintln!("chaos-netd disk: not tracked for power loss: {e}");
                t.untracked();
            }
        }
    }

    /// Runs an entry change: `plain` untracked, or `tracked` with the undo log held for
    /// the whole change (so the log's order is the order the changes happened in).
    fn entry<T>(
        &self,
        guard: &Option<RwLockReadGuard<'_, ()>>,
        plain: impl FnOnce() -> T,
        tracked: impl FnOnce(&mut Tracker) -> T,
    ) -> T {
        if guard.is_none() {
            return plain();
        }
        match self.shared.unsynced.lock().unwrap().as_mut() {
            Some(t) => tracked(t),
            None => plain(),
        }
    }

    fn add_file(&self, f: File, rel: PathBuf) -> FileHandle {
        let mut n = self.next_fh.lock().unwrap();
        *n += 1;
        self.files.lock().unwrap().insert(*n, (Arc::new(f), rel));
        FileHandle(*n)
    }

    fn file(&self, fh: FileHandle) -> Result<(Arc<File>, PathBuf), FErrno> {
        self.files.lock().unwrap().get(&fh.0).cloned().ok_or(FErrno::EBADF)
    }

    fn open_flags(o: &mut OpenOptions, flags: i32) {
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => o.write(true),
            libc::O_RDWR => o.read(true).write(true),
            _ => o.read(true),
        };
        // O_APPEND stays: pwrite on an O_APPEND file appends, as the caller asked.
        o.custom_flags(flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOFOLLOW));
        if flags & libc::O_TRUNC != 0 {
            o.truncate(true);
        }
    }
}

impl Filesystem for Passthrough {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|rel| self.attr(&rel)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.rel(ino).and_then(|rel| self.attr(&rel)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = (|| {
            let rel = self.rel(ino)?;
            let full = self.full(&rel);
            if let Some(m) = mode {
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(m & 0o7777)).map_err(err)?;
            }
            if let Some(len) = size {
                let guard = self.power_guard(None)?;
                let f = match fh.map(|h| self.file(h)) {
                    Some(Ok((f, _))) => f,
                    _ => Arc::new(OpenOptions::new().write(true).open(&full).map_err(err)?),
                };
                self.note(&guard, |t| t.before_truncate(&f, &rel, len));
                f.set_len(len).map_err(err)?;
            }
            if let Some(t) = mtime {
                let t = match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let f = File::options().write(true).open(&full).or_else(|_| File::open(&full)).map_err(err)?;
                f.set_modified(t).map_err(err)?;
            }
            self.attr(&rel)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let r = self.child(parent, name).and_then(|rel| {
            let guard = self.power_guard(None)?;
            let mk = || std::fs::DirBuilder::new().mode(mode & !umask).create(self.full(&rel));
            self.entry(&guard, mk, |t| {
                mk()?;
                if let Err(e) = t.made_dir(&rel) {
                    eprintln!("chaos-netd disk: not tracked for power loss: {e}");
                    t.untracked();
                }
                Ok(())
            })
            .map_err(err)?;
            self.attr(&rel)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.child(parent, name).and_then(|rel| {
            let guard = self.power_guard(None)?;
            let rm = || std::fs::remove_file(self.full(&rel));
            self.entry(&guard, rm, |t| t.unlink(&rel, rm)).map_err(err)
        });
        reply_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.child(parent, name).and_then(|rel| {
            let guard = self.power_guard(None)?;
            let rm = || std::fs::remove_dir(self.full(&rel));
            self.entry(&guard, rm, |t| t.rmdir(&rel, rm)).map_err(err)
        });
        reply_empty(reply, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            let start = self.gate(Op::Rename, &from, 0)?;
            let guard = self.power_guard(Some((start, req.pid())))?;
            let mv = || -> std::io::Result<()> {
                if flags.is_empty() {
                    return std::fs::rename(self.full(&from), self.full(&to));
                }
                let a = std::ffi::CString::new(self.full(&from).as_os_str().as_bytes()).map_err(std::io::Error::other)?;
                let b = std::ffi::CString::new(self.full(&to).as_os_str().as_bytes()).map_err(std::io::Error::other)?;
                // SAFETY: two valid NUL-terminated paths.
                let rc = unsafe {
                    libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags.bits())
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            // An exchange swaps two names: not an undo the log keeps (see `unsynced`).
            let exchange = flags.bits() & libc::RENAME_EXCHANGE != 0;
            let r = self.entry(&guard, mv, |t| if exchange { mv() } else { t.rename(&from, &to, mv) }).map_err(err);
            self.done(Op::Rename, start, 0);
            r?;
            move_paths(&mut self.shared.paths.lock().unwrap(), &from, &to);
            Ok(())
        })();
        reply_empty(reply, r);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let rel = self.rel(ino)?;
            let start = self.gate(Op::Open, &rel, 0)?;
            let guard = self.power_guard(Some((start, req.pid())))?;
            let mut o = OpenOptions::new();
            // Tracked, a truncation on open keeps the old bytes first: open, then cut.
            let truncate = guard.is_some() && flags.0 & libc::O_TRUNC != 0 && flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            Self::open_flags(&mut o, if truncate { flags.0 & !libc::O_TRUNC } else { flags.0 });
            let f = o.open(self.full(&rel));
            if let (true, Ok(f)) = (truncate, &f) {
                self.note(&guard, |t| t.before_truncate(f, &rel, 0));
                f.set_len(0).map_err(err)?;
            }
            self.done(Op::Open, start, 0);
            Ok(self.add_file(f.map_err(err)?, rel))
        })();
        match r {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let rel = self.child(parent, name)?;
            let start = self.gate(Op::Open, &rel, 0)?;
            let guard = self.power_guard(Some((start, req.pid())))?;
            let truncate = guard.is_some() && flags & libc::O_TRUNC != 0;
            let mut o = OpenOptions::new();
            Self::open_flags(&mut o, if truncate { flags & !libc::O_TRUNC } else { flags });
            o.create(true).mode(mode & !umask);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
            if flags & libc::O_ACCMODE == libc::O_RDONLY {
                // create(2) with O_RDONLY still creates; std needs write access for that.
                o.write(true);
            }
            let full = self.full(&rel);
            let f = self.entry(&guard, || o.open(&full), |t| {
                let existed = std::fs::symlink_metadata(&full).is_ok();
                let f = o.open(&full)?;
                let noted = match existed {
                    // An existing file opened with O_TRUNC: its old bytes are kept first.
                    true if truncate => t.before_truncate(&f, &rel, 0).and_then(|()| f.set_len(0)),
                    true => Ok(()),
                    false => t.created(&rel),
                };
                if let Err(e) = noted {
                    eprintln!("chaos-netd disk: not tracked for power loss: {e}");
                    t.untracked();
                }
                Ok(f)
            });
            self.done(Op::Open, start, 0);
            let f = f.map_err(err)?;
            let a = self.attr(&rel)?;
            Ok((a, self.add_file(f, rel)))
        })();
        match r {
            Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = (|| {
            let (f, rel) = self.file(fh)?;
            let start = self.gate(Op::Read, &rel, size as u64)?;
            let mut buf = vec![0u8; size as usize];
            let mut n = 0;
            let r = loop {
                match f.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break Ok(()),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(err(e)),
                }
            };
            self.done(Op::Read, start, 0);
            r?;
            buf.truncate(n);
            Ok(buf)
        })();
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = (|| {
            let (f, rel) = self.file(fh)?;
            let start = self.gate(Op::Write, &rel, data.len() as u64)?;
            let guard = self.power_guard(Some((start, req.pid())))?;
            self.note(&guard, |t| t.before_write(&f, &rel, offset, data.len() as u64));
            let r = f.write_all_at(data, offset).map_err(err);
            self.done(Op::Write, start, if r.is_ok() { data.len() as u64 } else { 0 });
            r.map(|()| data.len() as u32)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let r = (|| {
            let (f, rel) = self.file(fh)?;
            let start = self.gate(Op::Fsync, &rel, 0)?;
            let guard = self.power_guard(Some((start, req.pid())))?;
            let r = if datasync { f.sync_data() } else { f.sync_all() };
            if r.is_ok() {
                self.note(&guard, |t| {
                    t.synced_file(&f);
                    Ok(())
                });
            }
            self.done(Op::Fsync, start, 0);
            r.map_err(err)
        })();
        reply_empty(reply, r);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.rel(ino).and_then(|rel| File::open(self.full(&rel)).map(|f| (f, rel)).map_err(err)) {
            Ok((f, rel)) => reply.opened(self.add_file(f, rel), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let r = (|| {
            let rel = self.rel(ino)?;
            let mut entries: Vec<(u64, FileType, OsString)> =
                vec![(ino.0, FileType::Directory, ".".into()), (1, FileType::Directory, "..".into())];
            for e in std::fs::read_dir(self.full(&rel)).map_err(err)? {
                let e = e.map_err(err)?;
                if rel.as_os_str().is_empty() && e.file_name() == HIDDEN {
                    continue;
                }
                let kind = e.file_type().map(kind_of).unwrap_or(FileType::RegularFile);
                entries.push((self.ino_of(std::os::unix::fs::DirEntryExt::ino(&e)), kind, e.file_name()));
            }
            Ok(entries)
        })();
        match r {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.files.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let r = (|| {
            let (f, rel) = self.file(fh)?;
            let start = self.gate(Op::Fsync, &rel, 0)?;
            let guard = self.power_guard(Some((start, req.pid())))?;
            let r = f.sync_all();
            if r.is_ok() {
                self.note(&guard, |t| {
                    t.synced_dir(&f);
                    Ok(())
                });
            }
            self.done(Op::Fsync, start, 0);
            r.map_err(err)
        })();
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let path = std::ffi::CString::new(self.backing.as_os_str().as_bytes()).unwrap_or_default();
        // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
            return reply.error(err(std::io::Error::last_os_error()));
        }
        reply.statfs(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize as u32, s.f_namemax as u32, s.f_frsize as u32);
    }
}

/// Answers an operation that returns nothing: done, or its error.
fn reply_empty(reply: ReplyEmpty, r: Result<(), FErrno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}
