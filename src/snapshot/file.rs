//! Atomic replacement of a file: write a temporary file in the same directory, fsync it,
//! rename it over the target, fsync the directory.
//!
//! `rename` within one filesystem is atomic, so a reader (or a restart after a crash) sees
//! either the old file or the complete new one. The file is fsynced *before* the rename so
//! that the name can never point at data that is not on disk yet, and the directory is
//! fsynced *after* it so that the rename itself survives a power cut. Until the rename, the
//! old file is never opened for writing: a crash or a full disk mid-write costs only the
//! temporary file, which is removed on every error path.
//!
//! **Permissions and ownership.** The new file replaces the old one under its name, so it
//! gets the old file's permission bits, owner and group (on unix), set before any data is
//! written: a snapshot kept `0600` stays `0600`, and one a root process saves over a file
//! owned by the service's user stays that user's (else the service could no longer read
//! it). The owner and group are given with `fchown` on the temporary file, before its mode
//! is set (a change of owner may clear set-id bits, which the mode then restores). Changing
//! a file's owner needs privileges (`CAP_CHOWN`) and its group membership of that group, so
//! for a saver without them this is best effort: it keeps what it may — the group alone if
//! the saver may give that (it owns the new file and is a member of the old file's group),
//! else neither — and the file is the saver's, as a new file would be. A save never fails
//! over ownership: a save that worked before still works. With no old file the new one has
//! the default a newly created file gets (the saver's owner, `0666` less the umask).
//!
//! **Symbolic links.** A target that is a symbolic link to an existing file is replaced
//! where the link leads (the temporary file is made in that file's directory), and the link
//! stays: the load read through it. A dangling link is replaced like any missing file.
//! A target that exists but is not a regular file (a directory, FIFO, socket or device) is
//! refused before anything is written: renaming over it would replace the node itself.
//!
//! **The directory sync.** Once the rename happened the new file is in place, complete;
//! a failed directory fsync after it only means the rename may not survive a power cut (the
//! old file could come back, never a partial one). The save therefore does not report it as
//! a failed save but as [`SnapshotError::NotDurable`], which says exactly that and carries
//! the save's report; saving again may make it durable.
//!
//! **Leftovers of crashed saves.** A crash between creating the temporary file and the
//! rename leaves the file behind, named `.<target>.<pid>.<sequence>.tmp`, where no reader
//! looks. Each save first removes such leftovers *for its own target*, and only the ones
//! no live save is writing: a saver holds an advisory lock ([`File::try_lock`], `flock` on
//! unix) on its temporary file from just after creating it until after the rename, and the
//! kernel drops the lock when its process dies. A cleaner removes a file only if it can
//! lock it and the name still leads to the file it locked; a saver whose file a cleaner
//! got to in the moment between creation and lock (it cannot lock it, or the name is gone
//! or another file's) gives that name up and takes the next. No age threshold or process
//! id check is needed, and savers in other processes, PID namespaces or containers sharing
//! the directory are told apart the same way. Limits: on a filesystem without advisory
//! locks nothing is removed (a cleaner removes only what it locked); off unix no cleanup
//! runs; and a cleaner removes by name after checking it, so two cleaners and a new saver
//! that reuses the very same name (same process id and sequence number) in that instant
//! could cost that saver its file — its save then fails on the rename, leaving the previous
//! snapshot intact.
//!
//! **Early writeback.** Left alone, the kernel keeps a large write dirty in the page cache
//! and the final fsync then waits for all of it to reach the disk, after the writer is done.
//! A snapshot's writer is slowed by hashing, so the disk would sit idle while it works and
//! then be waited for. Instead, every [`WRITEBACK_EVERY`] bytes the writer asks a helper
//! thread to `fdatasync` what is written so far: the disk works while the caller writes and
//! the final fsync has little left. A request made while a sync is still running is merged
//! into the next one. An error from an early sync fails the save (after a failed fsync the
//! kernel may consider the pages clean, so the final fsync could not be trusted).

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};

use super::{SnapshotError, io_error};

/// Removes the temporary file unless the rename happened.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the error being returned matters more than a leftover temp file.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Temporary names tried past taken ones before a save gives up: far more than the leftovers
/// of crashed saves that could share this process's id.
const MAX_TEMP_ATTEMPTS: u32 = 4096;

/// Bytes written between two requests for an early sync: a few per second of writing, each
/// a sizeable write for the disk.
const WRITEBACK_EVERY: u64 = 64 << 20;

/// The temporary file as the writer sees it: writes go straight to the file, and every
/// [`WRITEBACK_EVERY`] bytes a helper thread is asked to sync them.
pub(super) struct Output<'a> {
    file: &'a File,
    /// Bytes written since the last request.
    unrequested: u64,
    /// Started at the first request; `None` before, or if it could not be started (then
    /// everything is left to the final fsync).
    syncer: Option<Syncer>,
    /// Whether starting the syncer was tried.
    tried: bool,
}

struct Syncer {
    requests: SyncSender<()>,
    thread: JoinHandle<io::Result<()>>,
}

impl Output<'_> {
    fn request_sync(&mut self) {
        if !self.tried {
            self.tried = true;
            // A second handle to the same open file: the helper outlives no borrow.
            self.syncer = self.file.try_clone().ok().and_then(|file| {
                let (requests, received) = mpsc::sync_channel::<()>(1);
                let thread = thread::Builder::new()
                    .name("memocache-snapshot-sync".into())
                    .spawn(move || received.iter().try_for_each(|()| file.sync_data()))
                    .ok()?;
                Some(Syncer { requests, thread })
            });
        }
        if let Some(syncer) = &self.syncer {
            match syncer.requests.try_send(()) {
                // Full: a request is waiting, and the sync it starts will cover these bytes.
                // Disconnected: the helper stopped on an error, which `finish` reports.
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }

    /// Stops the helper and returns the first error of an early sync.
    fn finish(&mut self) -> io::Result<()> {
        let Some(Syncer { requests, thread }) = self.syncer.take() else {
            return Ok(());
        };
        drop(requests);
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked")))
    }
}

impl Write for Output<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.unrequested += written as u64;
        if self.unrequested >= WRITEBACK_EVERY {
            self.unrequested = 0;
            self.request_sync();
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Output<'_> {
    fn drop(&mut self) {
        // An error path: the write's own error is the one returned.
        let _ = self.finish();
    }
}

/// What [`replace_atomically`] did once the new file was renamed into place.
#[derive(Debug)]
pub(super) struct Replaced<T> {
    /// What the writer returned.
    pub(super) value: T,
    /// Whether the directory sync after the rename worked; if not, the directory and the
    /// error. The new file is in place either way: only its durability is in doubt.
    pub(super) dir_sync: Result<(), (PathBuf, io::Error)>,
}

/// Replaces `path` with what `write` puts into a fresh file, then makes the rename durable
/// with `sync_dir`. On error `path` is untouched and the temporary file is gone. The new
/// file gets the old one's permissions and, where the process may give them, its owner and
/// group (on unix). Temporary files that crashed saves to
/// `path` left behind are removed first (see [`remove_stale_temps`]).
pub(super) fn replace_atomically<T>(
    path: &Path,
    sync_dir: fn(&Path) -> io::Result<()>,
    write: impl FnOnce(&mut Output<'_>) -> io::Result<T>,
) -> Result<Replaced<T>, SnapshotError> {
    let resolved = link_target(path);
    let path = resolved.as_deref().unwrap_or(path);
    let name = path.file_name().ok_or_else(|| {
        io_error(
            "saving a snapshot to",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // The mode (and on unix the owner) the new file must have: the old file's, or (no old
    // file) the default a new file gets. Read before anything is written, so a failure
    // costs nothing.
    let old_metadata = match std::fs::metadata(path) {
        Ok(metadata) => Some(metadata),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("reading the permissions of", path, e)),
    };
    // Only a regular file is replaced. The rename replaces whatever node holds the name, so a
    // save to a FIFO, a socket or a device (`/dev/null`, `/dev/full`, `/dev/stdout`) put a
    // regular file in its place and reported success: the process reading the FIFO waited
    // forever, and a root process destroyed the device node (the whole snapshot went to
    // a file named `/dev/full`). A directory was refused only by the rename, after the
    // whole snapshot had been written. Both are refused here, before anything is written.
    if let Some(old) = old_metadata.as_ref().filter(|old| !old.is_file()) {
        let what = if old.is_dir() {
            "it is a directory"
        } else {
            "it is not a regular file (a FIFO, socket or device); a save replaces a regular \
             file by renaming a new one over it, which would put a file in that node's place"
        };
        return Err(io_error(
            "saving a snapshot to",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, what),
        ));
    }
    // Before this save's own file takes space: a crashed save's leftover may be as large.
    remove_stale_temps(dir, name);
    #[cfg(target_os = "linux")]
    if old_metadata.is_some() {
        drop_cached_pages(path);
    }
    // Unique per process and call, so concurrent saves to one path never share a temp file.
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let temp_path = || {
        dir.join(temp_name(
            name,
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
        ))
    };
    let mut temp = TempFile {
        path: temp_path(),
        armed: false,
    };
    // A name can still be taken: by a live save, or by a leftover that the cleanup above
    // could not remove, or that a saver of the same process id (a container's PID 1 always
    // has it) left since; take the next number instead of failing the save. A file that a
    // cleaner removed between its creation and its lock is given up the same way.
    let mut attempts = 0;
    let file = loop {
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path);
        match created {
            Ok(file) => {
                // On an error here the file is not removed: the name may no longer be ours.
                // Unlocked, it is a leftover the next save's cleanup takes.
                if claim(&file, &temp.path)
                    .map_err(|e| temp_error(path, "locking", &temp.path, e))?
                {
                    break file;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            // Name what the caller gave, not the temporary file they never heard of.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                return Err(SnapshotError::Io {
                    action: format!(
                        "saving a snapshot to {}: its directory {} does not exist",
                        path.display(),
                        dir.display()
                    ),
                    source: e,
                });
            }
            Err(e) => return Err(temp_error(path, "creating", &temp.path, e)),
        }
        if attempts == MAX_TEMP_ATTEMPTS {
            return Err(temp_error(
                path,
                "creating",
                &temp.path,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{MAX_TEMP_ATTEMPTS} temporary names were all taken"),
                ),
            ));
        }
        attempts += 1;
        temp.path = temp_path();
    };
    temp.armed = true;
    #[cfg(unix)]
    if let Some(old) = old_metadata {
        use std::os::unix::fs::MetadataExt;
        // Owner first: a change of owner may clear set-id bits, which the mode restores.
        keep_owner(&file, (old.uid(), old.gid()), |file, uid, gid| {
            std::os::unix::fs::fchown(file, uid, gid)
        });
        // Set before any data is written, so the content is never readable by more than
        // the old file was.
        file.set_permissions(old.permissions())
            .map_err(|e| temp_error(path, "setting the permissions of", &temp.path, e))?;
    }
    #[cfg(not(unix))]
    let _ = old_metadata;
    let mut output = Output {
        file: &file,
        unrequested: 0,
        syncer: None,
        tried: false,
    };
    let value = write(&mut output).map_err(|e| temp_error(path, "writing", &temp.path, e))?;
    output
        .finish()
        .map_err(|e| temp_error(path, "syncing", &temp.path, e))?;
    drop(output);
    file.sync_all()
        .map_err(|e| temp_error(path, "syncing", &temp.path, e))?;
    std::fs::rename(&temp.path, path).map_err(|e| io_error("renaming into", path, e))?;
    temp.armed = false;
    // The lock goes with the file, after the rename: until then a cleaner must not take it.
    drop(file);
    // The rename happened: from here on the new snapshot is in place whatever happens, so a
    // failed directory sync is not a failed save. It is reported as what it is.
    let dir_sync = sync_dir(dir).map_err(|e| (dir.to_path_buf(), e));
    Ok(Replaced { value, dir_sync })
}

/// An error about the temporary file of a save to `path`, naming `path` first: the caller
/// never heard of the temporary name, and an error that named only it (a full disk's
/// "writing /d/.cache.snap.7.0.tmp: No space left on device") did not say which save failed.
fn temp_error(path: &Path, action: &str, temp: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        action: format!(
            "saving a snapshot to {}: {action} its temporary file {}",
            path.display(),
            temp.display()
        ),
        source,
    }
}

/// Where the symbolic link `path` leads, if it is one and its target exists. A load reads
/// through the link, so the save must write there too: renaming over the link replaced the
/// link itself with a regular file, which moved the snapshot into the link's directory
/// (perhaps the small disk the link was made to avoid) and left the linked file stale, to
/// be loaded by anything else that links to it. A dangling link has no file to replace and
/// is replaced as a plain name would be.
fn link_target(path: &Path) -> Option<PathBuf> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        std::fs::canonicalize(path).ok()
    } else {
        None
    }
}

/// Drops the page-cache pages of the old snapshot at `path`, best effort. They are freed at
/// the rename anyway; dropped now, the new file's pages take their place, so a save needs
/// page cache for one snapshot, not two at once, as a plain rewrite (which truncates first)
/// does. Only clean pages go (the old file was fsynced when it was saved); the file itself is
/// untouched, and a reader of it meanwhile reads from the disk. In two alternating pairs of
/// runs of `cargo bench --bench snapshot` (session 12), saves ran at 101 % and 118 % of the
/// plain rewrite's rate without this and at 114 % and 121 % with it: within the noise of that
/// VM's disk, not worse.
#[cfg(target_os = "linux")]
fn drop_cached_pages(path: &Path) {
    if let Ok(old) = File::open(path) {
        let _ = rustix::fs::fadvise(&old, 0, None, rustix::fs::Advice::DontNeed);
    }
}

/// Gives the freshly created `file` the owner and group `(uid, gid)` of the file it will
/// replace, with `chown` (`fchown`; tests inject refusals). Best effort, never an error (see
/// the module docs): without the privilege to give the owner, the group alone is tried, and
/// without that the file stays the saver's, which is what a save did before it kept owners.
#[cfg(unix)]
fn keep_owner(
    file: &File,
    (uid, gid): (u32, u32),
    chown: impl Fn(&File, Option<u32>, Option<u32>) -> io::Result<()>,
) {
    use std::os::unix::fs::MetadataExt;
    // Unknown: try to set both; `fchown` to the owner and group a file has is a no-op.
    let (own_uid, own_gid) = file
        .metadata()
        .map_or((None, None), |m| (Some(m.uid()), Some(m.gid())));
    if own_uid == Some(uid) && own_gid == Some(gid) {
        return;
    }
    // Any error, not only EPERM: the user namespace may not map the old owner (EINVAL), and
    // the saver's ownership is still a working file.
    if chown(file, Some(uid), Some(gid)).is_err() && own_gid != Some(gid) {
        let _ = chown(file, None, Some(gid));
    }
}

/// The temporary name a save to the file `name` uses: `.<name>.<pid>.<sequence>.tmp`.
fn temp_name(name: &OsStr, pid: u32, sequence: u64) -> OsString {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".{pid}.{sequence}.tmp"));
    temp
}

/// Whether `file_name` is one of [`temp_name`]'s names for `name`, whatever the numbers.
fn is_temp_name(file_name: &OsStr, name: &OsStr) -> bool {
    let file_name = file_name.as_encoded_bytes();
    let name = name.as_encoded_bytes();
    let Some(rest) = file_name
        .strip_prefix(b".")
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix(b"."))
        .and_then(|rest| rest.strip_suffix(b".tmp"))
    else {
        return false;
    };
    let mut numbers = rest.split(|&b| b == b'.');
    let number = |part: Option<&[u8]>| {
        part.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
    };
    number(numbers.next()) && number(numbers.next()) && numbers.next().is_none()
}

/// Takes the advisory lock that marks a freshly created temporary file as a live save's, and
/// checks that the name still leads to it. `false`: a cleaner got to the file first (it holds
/// the lock, or already removed the name), so the save must use another name.
fn claim(file: &File, path: &Path) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        // No advisory locks on this filesystem: no cleaner can lock the file either, and a
        // cleaner removes only what it locked, so the file is safe unlocked.
        Err(TryLockError::Error(_)) => return Ok(true),
    }
    // Between the creation and the lock a cleaner may have locked, checked and removed the
    // file (it looked like a crashed save's); then the name is gone or someone else's.
    same_file(file, path)
}

/// Whether `path` (not following a symlink) is the file `file` has open.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Without inode numbers the check is not possible; no cleaner runs there (see
/// [`remove_stale_temps`]), so the name is still the file's.
#[cfg(not(unix))]
fn same_file(_file: &File, _path: &Path) -> io::Result<bool> {
    Ok(true)
}

/// Removes the temporary files that crashed saves to `name` in `dir` left behind. Only
/// regular files named by [`temp_name`] for this target are considered, and of those only
/// the ones no live save holds: a saver keeps an advisory lock ([`File::try_lock`]) on its
/// temporary file from just after creating it until after the rename, and the lock dies with
/// its process. So a file this can lock is no live save's, and it is removed if the name
/// still leads to the file that was locked. Best effort: errors only mean a leftover stays.
///
/// Unix only: elsewhere an open file generally cannot be removed, and there are no inode
/// numbers to check a name against.
#[cfg(unix)]
fn remove_stale_temps(dir: &Path, name: &OsStr) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_temp_name(&entry.file_name(), name) {
            continue;
        }
        // Never open anything but a regular file: opening a FIFO would block.
        if !entry.file_type().is_ok_and(|kind| kind.is_file()) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() && same_file(&file, &path).unwrap_or(false) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(not(unix))]
fn remove_stale_temps(_dir: &Path, _name: &OsStr) {}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; its renames are journaled by NTFS.
#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    /// A cleaner that got to a saver's fresh file before the saver locked it: the saver
    /// cannot claim it, whether the cleaner still holds it or already removed it, and claims
    /// a file of its own.
    #[test]
    fn a_saver_does_not_claim_a_file_a_cleaner_got_to_first() {
        let dir = tempfile::tempdir().expect("creates a temp dir");
        let path = dir.path().join(".t.1.0.tmp");
        let saver = File::create_new(&path).expect("creates");
        let cleaner = File::open(&path).expect("opens");
        cleaner.try_lock().expect("locks: nobody holds it yet");
        assert!(
            !claim(&saver, &path).expect("claims"),
            "the cleaner holds it"
        );
        std::fs::remove_file(&path).expect("the cleaner removes it");
        drop(cleaner);
        assert!(!claim(&saver, &path).expect("claims"), "the name is gone");
        // Someone else's file under the name now: still not the saver's.
        File::create_new(&path).expect("creates");
        assert!(!claim(&saver, &path).expect("claims"), "another file");

        let mine = dir.path().join(".t.1.1.tmp");
        let file = File::create_new(&mine).expect("creates");
        assert!(claim(&file, &mine).expect("claims"));
        // Claimed: a cleaner cannot lock it, so leaves it alone.
        remove_stale_temps(dir.path(), OsStr::new("t"));
        assert!(mine.exists(), "a claimed file is not removed");
        assert!(!path.exists(), "an unclaimed leftover is");
    }

    /// A saver that may not give the old file's owner gives its group if it may, and else
    /// leaves the file as created; neither fails the save.
    #[cfg(unix)]
    #[test]
    fn a_saver_without_the_privilege_keeps_what_it_may_of_the_owner() {
        use std::cell::RefCell;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("creates a temp dir");
        let file = File::create_new(dir.path().join("f")).expect("creates");
        let (uid, gid) = file.metadata().map(|m| (m.uid(), m.gid())).expect("stat");
        let refused = || io::Error::from(io::ErrorKind::PermissionDenied);

        // Group allowed, owner not: the second call gives the group.
        let calls = RefCell::new(Vec::new());
        keep_owner(&file, (uid + 1, gid + 1), |_, u, g| {
            calls.borrow_mut().push((u, g));
            if u.is_some() { Err(refused()) } else { Ok(()) }
        });
        assert_eq!(
            *calls.borrow(),
            [(Some(uid + 1), Some(gid + 1)), (None, Some(gid + 1))]
        );

        // Neither allowed: both tried, nothing else, no error.
        let calls = RefCell::new(Vec::new());
        keep_owner(&file, (uid + 1, gid + 1), |_, u, g| {
            calls.borrow_mut().push((u, g));
            Err(refused())
        });
        assert_eq!(
            *calls.borrow(),
            [(Some(uid + 1), Some(gid + 1)), (None, Some(gid + 1))]
        );

        // Only the owner differs: a refusal leaves the group, which is already right.
        let calls = RefCell::new(Vec::new());
        keep_owner(&file, (uid + 1, gid), |_, u, g| {
            calls.borrow_mut().push((u, g));
            Err(refused())
        });
        assert_eq!(*calls.borrow(), [(Some(uid + 1), Some(gid))]);

        // Already the old owner and group: nothing to do.
        keep_owner(&file, (uid, gid), |_, _, _| panic!("no chown needed"));
    }

    #[test]
    fn temp_names_are_recognised_exactly() {
        let name = OsStr::new("cache.snap");
        assert!(is_temp_name(&temp_name(name, 17, 3), name));
        for other in [
            ".cache.snap.17.3.tmp.x",
            ".cache.snap.17.tmp",
            ".cache.snap..3.tmp",
            ".cache.snap.17.3a.tmp",
            "cache.snap.17.3.tmp",
            ".cache.snapx.17.3.tmp",
            ".other.17.3.tmp",
        ] {
            assert!(!is_temp_name(OsStr::new(other), name), "{other}");
        }
    }

    /// A write longer than [`WRITEBACK_EVERY`] starts the helper, which syncs while the
    /// writing goes on; the file ends up exactly as written and the helper is gone.
    #[test]
    fn a_long_write_is_synced_early_and_lands_whole() {
        let dir = tempfile::tempdir().expect("creates a temp dir");
        let path = dir.path().join("big");
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let chunks = ((2 * WRITEBACK_EVERY) >> 20) + 3;
        let started = replace_atomically(&path, sync_dir, |out| {
            assert!(out.syncer.is_none(), "no helper for a short write");
            for _ in 0..chunks {
                out.write_all(&chunk)?;
            }
            Ok(out.syncer.is_some())
        })
        .expect("writes")
        .value;
        assert!(started, "the helper was started");
        let written = std::fs::read(&path).expect("reads");
        assert_eq!(written.len() as u64, chunks << 20);
        assert!(written.chunks(1 << 20).all(|c| c == &chunk[..]));
    }
}
