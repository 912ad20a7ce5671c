//! Power loss: what a node's disk would still hold if the node lost power now, and the
//! rollback to it (`lose_unsynced: true` on `kill`, `stop`, `restart`).
//!
//! # Semantics (those of lazyfs)
//! A write reaches the disk only when its file is fsynced (fsync or fdatasync); a change
//! of a directory entry (create, mkdir, unlink, rmdir, rename) only when the directory
//! holding it is fsynced. Power loss drops everything else: each file goes back to what
//! it held at its last fsync, and every entry change made since its directory's last
//! fsync is undone, newest first. Tracking begins when the daemon starts (the node's
//! files are all durable then) and begins afresh after each power loss.
//!
//! A rename is durable once its **destination** directory is fsynced: that is where the
//! new name lives, and fsyncing the directory a file was renamed into is what every
//! durable-write recipe (temp file, fsync, rename, fsync the directory) does. Fsyncing
//! only the source directory of a cross-directory rename leaves it undone, so a power
//! loss never makes a file vanish from both places. A file's own fsync does not make its
//! name durable (POSIX asks for the directory's fsync; ext4 happens to give more).
//!
//! # How
//! The tracker is an undo log, not a cache: every operation still goes straight to the
//! backing directory (so the other nodes, sharing the checkpoint directory, see it at
//! once, as before). Before a write changes bytes a file held at its last fsync, the old
//! bytes of the pages it touches (4 KiB) are kept, with the file's length then; a
//! truncate keeps the pages it cuts off. Appends beyond that length keep nothing: the
//! rollback cuts them off. fsync drops the file's pre-image. Each entry change is logged
//! with the directory whose fsync makes it durable; a name it removes (unlink, or the
//! target a rename replaces) is kept as a hard link under the hidden `.disk/` directory,
//! so it can be put back, and an fsync of the directory deletes those links. Rolling back
//! writes the pre-images through the tracker's own descriptor of each file (so it finds
//! the file wherever it was renamed to), then undoes the entry changes newest first.
//!
//! Only this node's own operations are tracked: another node's writes to a shared file
//! are its own (its own power). An undo that would destroy what another node made since
//! (the name now belongs to another file) is skipped and counted as a conflict.
//! Not tracked: metadata (mode, times), `RENAME_EXCHANGE` (the passthrough runs it, the
//! rollback leaves it), and writes through shared memory maps.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The unit of a pre-image.
pub const PAGE: u64 = 4096;

/// How many undone paths a report names (the counts are complete).
pub const NAMED: usize = 20;

/// A file changed since its last fsync.
struct FileUndo {
    /// Our own descriptor of the inode (read and write), so the rollback reaches it
    /// under whatever name it has now.
    file: File,
    /// Its name when first changed, for the report.
    path: PathBuf,
    /// Its length at its last fsync.
    len: u64,
    /// Old bytes of the pages changed since, by page index (within `len` only).
    pages: BTreeMap<u64, Vec<u8>>,
    /// Bytes written (and cut off by truncates) since its last fsync.
    changed: u64,
}

/// A name removed by an entry change, to put back.
#[derive(Debug, Clone)]
enum Removed {
    /// A file (or anything that hard-links): kept under this hidden path.
    Kept { kept: PathBuf, ino: u64 },
    /// An (empty) directory: made again with its mode.
    Dir { mode: u32 },
}

#[derive(Debug, Clone)]
enum EntryOp {
    Create { path: PathBuf, ino: u64 },
    Mkdir { path: PathBuf, ino: u64 },
    Unlink { path: PathBuf, removed: Removed },
    Rmdir { path: PathBuf, mode: u32 },
    Rename { from: PathBuf, to: PathBuf, ino: u64, replaced: Option<Removed> },
}

impl EntryOp {
    fn kind(&self) -> &'static str {
        match self {
            EntryOp::Create { .. } => "create",
            EntryOp::Mkdir { .. } => "mkdir",
            EntryOp::Unlink { .. } => "unlink",
            EntryOp::Rmdir { .. } => "rmdir",
            EntryOp::Rename { .. } => "rename",
        }
    }

    fn describe(&self) -> String {
        match self {
            EntryOp::Create { path, .. } => format!("create {}", path.display()),
            EntryOp::Mkdir { path, .. } => format!("mkdir {}", path.display()),
            EntryOp::Unlink { path, .. } => format!("unlink {}", path.display()),
            EntryOp::Rmdir { path, .. } => format!("rmdir {}", path.display()),
            EntryOp::Rename { from, to, .. } => format!("rename {} -> {}", from.display(), to.display()),
        }
    }

    fn kept(&self) -> Option<&Path> {
        match self {
            EntryOp::Unlink { removed: Removed::Kept { kept, .. }, .. }
            | EntryOp::Rename { replaced: Some(Removed::Kept { kept, .. }), .. } => Some(kept),
            _ => None,
        }
    }
}

/// An entry change not yet durable, with the directory (its inode) whose fsync makes it so.
#[derive(Debug, Clone)]
struct Pending {
    dir: u64,
    op: EntryOp,
}

/// What one power loss dropped: the daemon's account, acknowledged through its stats file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PowerLossReport {
    /// Files put back to their content at their last fsync.
    pub files_rolled_back: u64,
    /// Bytes written (or cut off) since those fsyncs: what the node lost.
    pub bytes_lost: u64,
    /// Directory entry changes undone, and by kind (create, mkdir, unlink, rmdir, rename).
    pub entries_undone: u64,
    #[serde(default)]
    pub undone_by_kind: BTreeMap<String, u64>,
    /// Undos skipped because another node changed the name since (see the module doc).
    #[serde(default)]
    pub conflicts: u64,
    /// Operations the tracker could not record (their data survives the power loss).
    #[serde(default)]
    pub untracked: u64,
    /// The first [`NAMED`] files rolled back and entry changes undone.
    #[serde(default)]
    pub lost: Vec<String>,
    /// How long the rollback took.
    #[serde(default)]
    pub took_ms: f64,
}

/// The undo log of one node's view (see the module doc).
pub struct Tracker {
    root: PathBuf,
    /// Where removed names are kept (hidden from the view, on the same filesystem).
    keep: PathBuf,
    files: HashMap<u64, FileUndo>,
    log: Vec<Pending>,
    seq: u64,
    /// Operations that could not be recorded since the last power loss.
    untracked: u64,
}

fn ino_of(path: &Path) -> io::Result<u64> {
    Ok(std::fs::symlink_metadata(path)?.ino())
}

impl Tracker {
    /// The tracker of the directory `root`, keeping removed names in `keep` (emptied now).
    pub fn new(root: PathBuf, keep: PathBuf) -> io::Result<Tracker> {
        match std::fs::remove_dir_all(&keep) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&keep)?;
        Ok(Tracker { root, keep, files: HashMap::new(), log: Vec::new(), seq: 0, untracked: 0 })
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// The inode of the directory holding `rel`.
    fn parent_ino(&self, rel: &Path) -> io::Result<u64> {
        ino_of(&self.full(rel.parent().unwrap_or(Path::new(""))))
    }

    /// Files with a pre-image, entry changes pending: for the stats.
    pub fn pending(&self) -> (usize, usize) {
        (self.files.len(), self.log.len())
    }

    /// Something could not be recorded (logged by the caller): counted in the report.
    pub fn untracked(&mut self) {
        self.untracked += 1;
    }

    /// The undo record of the file open as `handle` (named `rel`), made on first change.
    fn undo_of(&mut self, handle: &File, rel: &Path) -> io::Result<&mut FileUndo> {
        let m = handle.metadata()?;
        let ino = m.ino();
        match self.files.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                // Our own descriptor of the same inode, whatever the handle's access mode.
                let file = OpenOptions::new().read(true).write(true).open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
                Ok(e.insert(FileUndo { file, path: rel.to_path_buf(), len: m.len(), pages: BTreeMap::new(), changed: 0 }))
            }
        }
    }

    /// Keeps the old bytes of every page of `[from, to)` that the file held at its last
    /// fsync and that is not kept yet.
    fn keep_pages(u: &mut FileUndo, from: u64, to: u64) -> io::Result<()> {
        let to = to.min(u.len);
        if from >= to {
            return Ok(());
        }
        for p in from / PAGE..to.div_ceil(PAGE) {
            if u.pages.contains_key(&p) {
                continue;
            }
            // A page not kept yet still holds its old bytes: every change keeps first.
            let start = p * PAGE;
            let mut buf = vec![0u8; (PAGE.min(u.len - start)) as usize];
            let mut n = 0;
            while n < buf.len() {
                match u.file.read_at(&mut buf[n..], start + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(n);
            u.pages.insert(p, buf);
        }
        Ok(())
    }

    /// Before `len` bytes are written at `offset` through `handle`.
    pub fn before_write(&mut self, handle: &File, rel: &Path, offset: u64, len: u64) -> io::Result<()> {
        let u = self.undo_of(handle, rel)?;
        Self::keep_pages(u, offset, offset.saturating_add(len))?;
        u.changed += len;
        Ok(())
    }

    /// Before the file open as `handle` is truncated (or extended) to `new_len`.
    pub fn before_truncate(&mut self, handle: &File, rel: &Path, new_len: u64) -> io::Result<()> {
        let now = handle.metadata()?.len();
        let u = self.undo_of(handle, rel)?;
        Self::keep_pages(u, new_len, u64::MAX)?;
        u.changed += now.saturating_sub(new_len);
        Ok(())
    }

    /// The file open as `handle` was fsynced: its content is durable.
    pub fn synced_file(&mut self, handle: &File) {
        if let Ok(m) = handle.metadata() {
            self.files.remove(&m.ino());
        }
    }

    /// The directory open as `handle` was fsynced: its entry changes are durable.
    pub fn synced_dir(&mut self, handle: &File) {
        let Ok(dir) = handle.metadata().map(|m| m.ino()) else { return };
        let (durable, pending): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.log).into_iter().partition(|p| p.dir == dir);
        self.log = pending;
        for p in durable {
            if let Some(kept) = p.op.kept() {
                let _ = std::fs::remove_file(kept);
            }
            // A name removed for good: nothing reaches its content any more.
            if let EntryOp::Unlink { removed: Removed::Kept { ino, .. }, .. } | EntryOp::Rename { replaced: Some(Removed::Kept { ino, .. }), .. } = &p.op {
                if self.files.get(ino).and_then(|u| u.file.metadata().ok()).is_some_and(|m| m.nlink() == 0) {
                    self.files.remove(ino);
                }
            }
        }
    }

    fn push(&mut self, dir: u64, op: EntryOp) {
        self.log.push(Pending { dir, op });
    }

    /// `rel` was created as a new file (it did not exist before the call).
    pub fn created(&mut self, rel: &Path) -> io::Result<()> {
        let ino = ino_of(&self.full(rel))?;
        let dir = self.parent_ino(rel)?;
        self.push(dir, EntryOp::Create { path: rel.to_path_buf(), ino });
        Ok(())
    }

    /// `rel` was made as a new directory.
    pub fn made_dir(&mut self, rel: &Path) -> io::Result<()> {
        let ino = ino_of(&self.full(rel))?;
        let dir = self.parent_ino(rel)?;
        self.push(dir, EntryOp::Mkdir { path: rel.to_path_buf(), ino });
        Ok(())
    }

    /// Keeps what `rel` names, before it is removed or replaced: a hard link for a file,
    /// the mode for a directory. `None` when nothing is there.
    fn keep_name(&mut self, rel: &Path) -> io::Result<Option<Removed>> {
        let m = match std::fs::symlink_metadata(self.full(rel)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if m.is_dir() {
            return Ok(Some(Removed::Dir { mode: m.mode() & 0o7777 }));
        }
        self.seq += 1;
        let kept = self.keep.join(self.seq.to_string());
        std::fs::hard_link(self.full(rel), &kept)?;
        Ok(Some(Removed::Kept { kept, ino: m.ino() }))
    }

    fn drop_kept(r: &Option<Removed>) {
        if let Some(Removed::Kept { kept, .. }) = r {
            let _ = std::fs::remove_file(kept);
        }
    }

    /// Runs `op`, which removes the file `rel`, and records it.
    pub fn unlink<T>(&mut self, rel: &Path, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let dir = self.parent_ino(rel);
        let kept = self.keep_name(rel);
        let r = op();
        match (&r, dir, kept) {
            (Ok(_), Ok(dir), Ok(Some(removed))) => self.push(dir, EntryOp::Unlink { path: rel.to_path_buf(), removed }),
            (Ok(_), _, _) => self.untracked += 1,
            (Err(_), _, Ok(k)) => Self::drop_kept(&k),
            (Err(_), _, Err(_)) => {}
        }
        r
    }

    /// Runs `op`, which removes the (empty) directory `rel`, and records it.
    pub fn rmdir<T>(&mut self, rel: &Path, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let dir = self.parent_ino(rel);
        let mode = std::fs::symlink_metadata(self.full(rel)).map(|m| m.mode() & 0o7777);
        let r = op();
        match (&r, dir, mode) {
            (Ok(_), Ok(dir), Ok(mode)) => self.push(dir, EntryOp::Rmdir { path: rel.to_path_buf(), mode }),
            (Ok(_), _, _) => self.untracked += 1,
            _ => {}
        }
        r
    }

    /// Runs `op`, which renames `from` to `to` (replacing what `to` named), and records it.
    pub fn rename<T>(&mut self, from: &Path, to: &Path, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let ino = ino_of(&self.full(from));
        let replaced = match &ino {
            Ok(_) => self.keep_name(to),
            Err(_) => Ok(None),
        };
        let r = op();
        let dir = self.parent_ino(to);
        match (&r, ino, dir, replaced) {
            (Ok(_), Ok(ino), Ok(dir), Ok(replaced)) => {
                self.push(dir, EntryOp::Rename { from: from.to_path_buf(), to: to.to_path_buf(), ino, replaced })
            }
            (Ok(_), _, _, replaced) => {
                self.untracked += 1;
                if let Ok(r) = replaced {
                    Self::drop_kept(&r);
                }
            }
            (Err(_), _, _, Ok(r)) => Self::drop_kept(&r),
            _ => {}
        }
        r
    }

    /// Power loss: every file back to its content at its last fsync, then every entry
    /// change not yet durable undone, newest first; then tracking starts afresh. Returns
    /// the account and the renames undone (`to`, `from`), for the caller's map of names.
    pub fn lose(&mut self) -> (PowerLossReport, Vec<(PathBuf, PathBuf)>) {
        let t = std::time::Instant::now();
        let mut rep = PowerLossReport { untracked: self.untracked, ..PowerLossReport::default() };
        let mut moved = Vec::new();
        let name = |rep: &mut PowerLossReport, s: String| {
            if rep.lost.len() < NAMED {
                rep.lost.push(s);
            }
        };
        let mut files: Vec<FileUndo> = self.files.drain().map(|(_, u)| u).collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for u in files {
            let r = (|| {
                u.file.set_len(u.len)?;
                for (p, bytes) in &u.pages {
                    u.file.write_all_at(bytes, p * PAGE)?;
                }
                io::Result::Ok(())
            })();
            match r {
                Ok(()) => {
                    rep.files_rolled_back += 1;
                    rep.bytes_lost += u.changed;
                    name(&mut rep, format!("write {} ({} bytes since its last fsync)", u.path.display(), u.changed));
                }
                Err(e) => {
                    eprintln!("chaos-netd disk: power loss: rolling back {}: {e}", u.path.display());
                    rep.conflicts += 1;
                }
            }
        }
        while let Some(p) = self.log.pop() {
            match self.undo(&p.op, &mut moved) {
                Ok(true) => {
                    rep.entries_undone += 1;
                    *rep.undone_by_kind.entry(p.op.kind().to_string()).or_default() += 1;
                    name(&mut rep, p.op.describe());
                }
                Ok(false) => rep.conflicts += 1,
                Err(e) => {
                    eprintln!("chaos-netd disk: power loss: undoing {}: {e}", p.op.describe());
                    rep.conflicts += 1;
                }
            }
            if let Some(kept) = p.op.kept() {
                let _ = std::fs::remove_file(kept);
            }
        }
        self.untracked = 0;
        rep.took_ms = (t.elapsed().as_secs_f64() * 1e5).round() / 100.0;
        (rep, moved)
    }

    /// Whether `rel` names inode `ino` now.
    fn names(&self, rel: &Path, ino: u64) -> bool {
        ino_of(&self.full(rel)).is_ok_and(|i| i == ino)
    }

    fn free(&self, rel: &Path) -> bool {
        matches!(std::fs::symlink_metadata(self.full(rel)), Err(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// Puts a removed name back; `false` when the name is taken by something else now.
    fn put_back(&self, rel: &Path, r: &Removed) -> io::Result<bool> {
        if !self.free(rel) {
            return Ok(false);
        }
        match r {
            Removed::Kept { kept, .. } => std::fs::hard_link(kept, self.full(rel))?,
            Removed::Dir { mode } => std::fs::DirBuilder::new().mode(*mode).create(self.full(rel))?,
        }
        Ok(true)
    }

    /// Undoes one entry change; `Ok(false)` for a conflict (skipped).
    fn undo(&mut self, op: &EntryOp, moved: &mut Vec<(PathBuf, PathBuf)>) -> io::Result<bool> {
        match op {
            EntryOp::Create { path, ino } => {
                if !self.names(path, *ino) {
                    return Ok(false);
                }
                std::fs::remove_file(self.full(path))?;
            }
            EntryOp::Mkdir { path, ino } => {
                if !self.names(path, *ino) {
                    return Ok(false);
                }
                match std::fs::remove_dir(self.full(path)) {
                    Ok(()) => {}
                    // It holds durable entries (its own fsync came, its parent's did not):
                    // the whole directory is unreachable after the power loss. Moved
                    // aside under the hidden directory, never destroyed.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                        self.seq += 1;
                        std::fs::rename(self.full(path), self.keep.join(format!("lost-{}", self.seq)))?;
                    }
                    Err(e) => return Err(e),
                }
            }
            EntryOp::Unlink { path, removed } => return self.put_back(path, removed),
            EntryOp::Rmdir { path, mode } => {
                if !self.free(path) {
                    return Ok(false);
                }
                std::fs::DirBuilder::new().mode(*mode).create(self.full(path))?;
                std::fs::set_permissions(self.full(path), std::fs::Permissions::from_mode(*mode))?;
            }
            EntryOp::Rename { from, to, ino, replaced } => {
                if !self.names(to, *ino) || !self.free(from) {
                    return Ok(false);
                }
                std::fs::rename(self.full(to), self.full(from))?;
                moved.push((to.clone(), from.clone()));
                if let Some(r) = replaced {
                    self.put_back(to, r)?;
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Fx {
        _dir: tempfile::TempDir,
        root: PathBuf,
        t: Tracker,
    }

    fn fx() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(&root).unwrap();
        let t = Tracker::new(root.clone(), dir.path().join("keep")).unwrap();
        Fx { _dir: dir, root, t }
    }

    impl Fx {
        fn p(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }
        /// A write through the tracker, as the passthrough does it.
        fn write(&mut self, f: &File, rel: &str, offset: u64, data: &[u8]) {
            self.t.before_write(f, Path::new(rel), offset, data.len() as u64).unwrap();
            f.write_all_at(data, offset).unwrap();
        }
        fn create(&mut self, rel: &str) -> File {
            let f = OpenOptions::new().create_new(true).read(true).write(true).open(self.p(rel)).unwrap();
            self.t.created(Path::new(rel)).unwrap();
            f
        }
        fn sync_dir(&mut self, rel: &str) {
            let d = File::open(self.p(rel)).unwrap();
            d.sync_all().unwrap();
            self.t.synced_dir(&d);
        }
        fn mv(&mut self, from: &str, to: &str) {
            let (a, b) = (self.p(from), self.p(to));
            self.t.rename(Path::new(from), Path::new(to), || std::fs::rename(&a, &b)).unwrap();
        }
        fn rm(&mut self, rel: &str) {
            let a = self.p(rel);
            self.t.unlink(Path::new(rel), || std::fs::remove_file(&a)).unwrap();
        }
        fn rmdir(&mut self, rel: &str) {
            let a = self.p(rel);
            self.t.rmdir(Path::new(rel), || std::fs::remove_dir(&a)).unwrap();
        }
        fn read(&self, rel: &str) -> Option<Vec<u8>> {
            std::fs::read(self.p(rel)).ok()
        }
    }

    #[test]
    fn only_the_fsynced_content_survives() {
        let mut x = fx();
        let f = x.create("a");
        x.sync_dir("");
        x.write(&f, "a", 0, b"hello ");
        f.sync_all().unwrap();
        x.t.synced_file(&f);
        // More, unsynced: an append and an overwrite of fsynced bytes across a page.
        let big = vec![b'x'; 5000];
        x.write(&f, "a", 6, &big);
        x.write(&f, "a", 0, b"HE");
        assert_eq!(x.read("a").unwrap().len(), 5006);
        let (rep, _) = x.t.lose();
        assert_eq!(x.read("a").unwrap(), b"hello ");
        assert_eq!((rep.files_rolled_back, rep.bytes_lost, rep.entries_undone), (1, 5002, 0), "{rep:?}");
        // Tracking starts afresh: a second power loss loses nothing more.
        let (rep, _) = x.t.lose();
        assert_eq!(rep, PowerLossReport { took_ms: rep.took_ms, ..PowerLossReport::default() });
        assert_eq!(x.read("a").unwrap(), b"hello ");
    }

    #[test]
    fn overwritten_pages_within_a_large_file_get_their_old_bytes_back() {
        let mut x = fx();
        let old: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 251) as u8).collect();
        std::fs::write(x.p("big"), &old).unwrap();
        let f = OpenOptions::new().write(true).open(x.p("big")).unwrap();
        x.write(&f, "big", PAGE + 10, &[0u8; 20]);
        x.write(&f, "big", 3 * PAGE + 50, &[0u8; 200]); // the last, short page and past the end
        x.t.lose();
        assert_eq!(x.read("big").unwrap(), old);
    }

    #[test]
    fn a_new_file_without_its_directorys_fsync_is_gone() {
        let mut x = fx();
        std::fs::create_dir(x.p("d")).unwrap();
        let f = x.create("d/new");
        x.write(&f, "d/new", 0, b"data");
        f.sync_all().unwrap();
        x.t.synced_file(&f);
        let (rep, _) = x.t.lose();
        assert!(x.read("d/new").is_none(), "the file's own fsync does not make its name durable");
        assert_eq!(rep.undone_by_kind["create"], 1);
        // With the directory fsynced it stays.
        let f = x.create("d/kept");
        x.write(&f, "d/kept", 0, b"data");
        f.sync_all().unwrap();
        x.t.synced_file(&f);
        x.sync_dir("d");
        x.t.lose();
        assert_eq!(x.read("d/kept").unwrap(), b"data");
    }

    #[test]
    fn a_rename_without_the_directorys_fsync_is_undone_and_the_old_target_restored() {
        let mut x = fx();
        std::fs::write(x.p("final"), b"old").unwrap();
        // The durable-write recipe, less the directory's fsync at the end.
        let f = x.create("final.tmp");
        x.write(&f, "final.tmp", 0, b"new");
        f.sync_all().unwrap();
        x.t.synced_file(&f);
        x.mv("final.tmp", "final");
        assert_eq!(x.read("final").unwrap(), b"new");
        let (rep, moved) = x.t.lose();
        assert_eq!(x.read("final").unwrap(), b"old", "the replaced target is back");
        assert!(x.read("final.tmp").is_none(), "and the temp file's creation undone too");
        assert_eq!(rep.entries_undone, 2, "{rep:?}");
        assert_eq!(moved, vec![(PathBuf::from("final"), PathBuf::from("final.tmp"))]);
        assert_eq!(std::fs::read_dir(&x.t.keep).unwrap().count(), 0, "no hard link left behind");

        // The whole recipe: durable.
        let f = x.create("final.tmp");
        x.write(&f, "final.tmp", 0, b"new");
        f.sync_all().unwrap();
        x.t.synced_file(&f);
        x.mv("final.tmp", "final");
        x.sync_dir("");
        let (rep, _) = x.t.lose();
        assert_eq!(x.read("final").unwrap(), b"new");
        assert_eq!(rep.entries_undone, 0);
        assert_eq!(std::fs::read_dir(&x.t.keep).unwrap().count(), 0, "the replaced file's link went with the fsync");
    }

    #[test]
    fn a_rename_is_durable_with_its_destination_directory() {
        let mut x = fx();
        for d in ["src", "dst"] {
            std::fs::create_dir(x.p(d)).unwrap();
        }
        std::fs::write(x.p("src/a"), b"a").unwrap();
        std::fs::write(x.p("src/b"), b"b").unwrap();
        x.mv("src/a", "dst/a");
        x.mv("src/b", "dst/b");
        x.sync_dir("src"); // the source only: not durable
        x.t.lose();
        assert_eq!((x.read("src/a").unwrap(), x.read("dst/a")), (b"a".to_vec(), None));
        x.mv("src/a", "dst/a");
        x.sync_dir("dst");
        x.t.lose();
        assert_eq!((x.read("src/a"), x.read("dst/a").unwrap()), (None, b"a".to_vec()));
    }

    #[test]
    fn a_truncate_is_undone() {
        let mut x = fx();
        let old: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        std::fs::write(x.p("t"), &old).unwrap();
        let f = OpenOptions::new().write(true).open(x.p("t")).unwrap();
        x.t.before_truncate(&f, Path::new("t"), 100).unwrap();
        f.set_len(100).unwrap();
        x.write(&f, "t", 100, b"tail"); // the new tail, over bytes the truncate cut
        let (rep, _) = x.t.lose();
        assert_eq!(x.read("t").unwrap(), old);
        assert_eq!(rep.bytes_lost, 9_900 + 4);
    }

    #[test]
    fn unlinks_and_directories_come_back_newest_first() {
        let mut x = fx();
        std::fs::create_dir_all(x.p("chk-1")).unwrap();
        std::fs::write(x.p("chk-1/_metadata"), b"meta").unwrap();
        // A prune (remove_dir_all), then a new directory with a file, none fsynced.
        x.rm("chk-1/_metadata");
        x.rmdir("chk-1");
        std::fs::create_dir(x.p("chk-2")).unwrap();
        x.t.made_dir(Path::new("chk-2")).unwrap();
        let f = x.create("chk-2/x");
        x.write(&f, "chk-2/x", 0, b"x");
        let (rep, _) = x.t.lose();
        assert_eq!(x.read("chk-1/_metadata").unwrap(), b"meta");
        assert!(!x.p("chk-2").exists());
        assert_eq!(rep.entries_undone, 4, "{rep:?}");
        assert_eq!(rep.files_rolled_back, 1);
    }

    #[test]
    fn a_directory_made_durable_inside_a_lost_one_goes_with_it() {
        let mut x = fx();
        std::fs::create_dir(x.p("d")).unwrap();
        x.t.made_dir(Path::new("d")).unwrap();
        let mut f = x.create("d/f");
        f.write_all(b"").unwrap();
        x.sync_dir("d"); // d's entries are durable, d's own is not
        x.t.lose();
        assert!(!x.p("d").exists());
        assert_eq!(std::fs::read_dir(&x.t.keep).unwrap().count(), 1, "moved aside, not destroyed");
    }

    #[test]
    fn what_another_node_made_since_is_left_alone() {
        let mut x = fx();
        let _f = x.create("shared");
        // Another node replaces it (not through this tracker).
        std::fs::remove_file(x.p("shared")).unwrap();
        std::fs::write(x.p("shared"), b"theirs").unwrap();
        let (rep, _) = x.t.lose();
        assert_eq!(x.read("shared").unwrap(), b"theirs");
        assert_eq!((rep.entries_undone, rep.conflicts), (0, 1));
    }
}
