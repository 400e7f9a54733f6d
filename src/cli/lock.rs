//! The lock on a directory a command keeps a cache snapshot in: `transcribe` takes it on its
//! `--cache-dir`, `demo` on its `--dir`.
//!
//! * **One run at a time per directory.** A run loads the snapshot at its start and replaces
//!   it as it goes and at its end, so of two concurrent runs the last to save would replace
//!   the other's snapshot and lose its transcripts. Merging on save instead is not safe: the
//!   merge would have to re-read the snapshot and rename over it with nothing to stop a third
//!   run saving in between, and two runs that computed the same key with different engines
//!   would have no rule for which transcript wins. So a run holds an exclusive advisory lock
//!   ([`File::try_lock`], `flock` on Unix) on [`LOCK_FILE`] in the directory from before it
//!   loads or writes anything there until after its last save, and a second run finds the
//!   directory locked and fails at once with one line — it does not wait, since the first
//!   run may take an hour. `demo --dir` takes the same lock with the same helper, so two
//!   demos, or a demo and a `transcribe`, on one directory are refused with the same error.
//! * **The lock file is left in place after a run.** The lock, not the file, is what
//!   excludes: the kernel drops an advisory lock when its process dies, so a run that is
//!   killed never blocks the next one, and there is no stale-lock cleanup to get wrong.
//!   Removing the file at the end would even break the exclusion: a run that opened the old
//!   file just before its removal would lock an unlinked file while a third run creates and
//!   locks a new one. Files are opened close-on-exec, so the engine commands a run starts do
//!   not inherit the lock and cannot keep it alive after the run ends.
//! * **A symbolic lock file is followed only to an existing file.** Then every run locks
//!   that file, as the snapshot's save follows a link to an existing snapshot. A dangling
//!   link is refused with its name, and nothing is created where it leads (which may be
//!   outside the directory).
//! * **Without advisory locks, a run goes on unprotected, and says so.** Some filesystems
//!   (and platforms) do not implement `flock`: `try_lock` fails with
//!   [`std::io::ErrorKind::Unsupported`] whether or not another run is there. Refusing would
//!   make the command unusable on them for a risk the user can avoid by not starting two
//!   runs, so the run prints one warning naming the directory and goes on. Any other failure
//!   to lock (an I/O error, no permission) still stops the run: nothing says the lock could
//!   not have excluded a second run. (An NFS mount without a lock daemon reports `ENOLCK`,
//!   which std does not classify; it is refused as an error, with the OS's message.)

use super::shown;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::Path;

/// The lock file inside a cache directory: a run holds an exclusive advisory lock on it from
/// before it loads the snapshot until after its last save.
pub const LOCK_FILE: &str = "cache.lock";

/// A directory locked by [`lock_dir`]: the lock is held until this is dropped (or, where
/// the filesystem has no advisory locks, there is none to hold).
#[must_use = "the directory is unlocked when this is dropped"]
pub struct DirLock {
    _file: File,
}

/// Takes the exclusive advisory lock on `dir`'s [`LOCK_FILE`] without waiting, creating the
/// file if needed. `dir_flag` is the option that named the directory (`--cache-dir`,
/// `--dir`), for the message that tells the user to give another one. Where the filesystem
/// does not support the lock, prints one warning on stderr and goes on without it.
pub fn lock_dir(dir: &Path, dir_flag: &str) -> Result<DirLock, String> {
    let (lock, warning) = lock_with(dir, dir_flag, File::try_lock)?;
    if let Some(warning) = warning {
        errln!("warning: {warning}");
    }
    Ok(lock)
}

/// [`lock_dir`] with the locking call injected (tests stand in a filesystem without locks),
/// returning the warning instead of printing it.
fn lock_with(
    dir: &Path,
    dir_flag: &str,
    try_lock: impl FnOnce(&File) -> Result<(), TryLockError>,
) -> Result<(DirLock, Option<String>), String> {
    let path = dir.join(LOCK_FILE);
    let file = open_lock_file(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", shown(&path)))?;
    match try_lock(&file) {
        Ok(()) => Ok((DirLock { _file: file }, None)),
        Err(TryLockError::WouldBlock) => Err(format!(
            "the cache directory {} is in use by another `memocache transcribe` or \
             `memocache demo`: wait for it to finish, or give another {dir_flag}",
            shown(dir)
        )),
        Err(TryLockError::Error(e)) if e.kind() == ErrorKind::Unsupported => {
            let warning = format!(
                "cannot lock the cache directory {} (with {}): {e}; going on without the \
                 lock, so start no other run on this directory until this one ends",
                shown(dir),
                shown(&path)
            );
            Ok((DirLock { _file: file }, Some(warning)))
        }
        Err(TryLockError::Error(e)) => Err(format!(
            "cannot lock the cache directory {} (with {}): {e}",
            shown(dir),
            shown(&path)
        )),
    }
}

/// The lock file at `path`, created if missing. One the user may not write is opened read
/// only: the lock needs no write access, and in a directory shared by a group, the lock file
/// another member's run had created (mode 0644 under the usual umask) refused every run of
/// the others, though they could write the snapshot there.
///
/// A symbolic link to an existing file is followed, as the snapshot's is (`cache.snapshot`,
/// see `src/snapshot/file.rs`): every run locks the file it leads to, so they still exclude
/// each other. A dangling link is refused, naming it, and nothing is created: opening it with
/// `create` made a file wherever it led, perhaps outside the directory. (The snapshot's save
/// replaces a dangling link by a plain file instead; a lock file must not be replaced while a
/// run may hold it, see the module doc.) The file is created with `O_EXCL` (`create_new`),
/// which does not follow a link, so a link made between the look and the creation is refused
/// too rather than followed.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    let open_existing = || {
        let written = OpenOptions::new().read(true).write(true).open(path);
        match written {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => File::open(path).map_err(|_| e),
            opened => opened,
        }
    };
    match open_existing() {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        opened => return opened,
    }
    // Missing, or a dangling link. The file's contents mean nothing, so a new one is empty.
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
    {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match std::fs::read_link(path) {
            Ok(target) => Err(std::io::Error::new(
                ErrorKind::NotFound,
                format!(
                    "it is a symbolic link to {}, which does not exist; remove the link, or \
                     create the file it leads to",
                    shown(&target)
                ),
            )),
            // Another run created the file in the meantime: it is locked as any other.
            Err(_) => open_existing(),
        },
        created => created,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsupported(_: &File) -> Result<(), TryLockError> {
        Err(TryLockError::Error(std::io::Error::from(
            ErrorKind::Unsupported,
        )))
    }

    /// A filesystem without advisory locks: the run goes on, with one warning that names the
    /// directory and says it is unprotected.
    #[test]
    fn unsupported_locking_is_a_warning_not_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_lock, warning) =
            lock_with(dir.path(), "--cache-dir", unsupported).expect("goes on without the lock");
        let warning = warning.expect("a warning");
        assert!(
            warning.contains(&dir.path().display().to_string()),
            "{warning}"
        );
        assert!(warning.contains("without the lock"), "{warning}");
        assert!(!warning.contains('\n'), "{warning}");
    }

    /// Only "unsupported" is let through: another failure to lock still refuses the run, and
    /// a lock held elsewhere refuses it with the in-use message naming the option to change.
    #[test]
    fn other_lock_failures_and_a_held_lock_refuse_the_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let denied = lock_with(dir.path(), "--cache-dir", |_| {
            Err(TryLockError::Error(std::io::Error::from(
                ErrorKind::PermissionDenied,
            )))
        });
        let Err(message) = denied else {
            panic!("a lock that failed for another reason must refuse the run")
        };
        assert!(
            message.starts_with("cannot lock the cache directory"),
            "{message}"
        );

        let held = lock_with(dir.path(), "--dir", |_| Err(TryLockError::WouldBlock));
        let Err(message) = held else {
            panic!("a held lock must refuse the run")
        };
        assert!(message.contains("in use by another"), "{message}");
        assert!(message.ends_with("give another --dir"), "{message}");
    }

    /// The real lock: a second taker is refused while the first holds it, and gets it once
    /// the first is dropped.
    #[test]
    fn the_lock_excludes_until_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = lock_dir(dir.path(), "--cache-dir").expect("free");
        let Err(message) = lock_dir(dir.path(), "--cache-dir") else {
            panic!("a second lock must be refused while the first is held")
        };
        assert!(message.contains("in use by another"), "{message}");
        drop(first);
        let _second = lock_dir(dir.path(), "--cache-dir").expect("free again");
    }

    /// A `cache.lock` that is a symbolic link to a missing file is refused, with a message
    /// naming it, and the file it leads to is not created: opened with `create`, the link was
    /// followed and the run made a file wherever it led (here, outside the directory).
    #[cfg(unix)]
    #[test]
    fn a_dangling_lock_link_is_refused_and_creates_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache_dir = dir.path().join("cache");
        std::fs::create_dir(&cache_dir).expect("cache dir");
        let target = dir.path().join("elsewhere.lock");
        let link = cache_dir.join(LOCK_FILE);
        std::os::unix::fs::symlink(&target, &link).expect("symlink");

        let Err(message) = lock_dir(&cache_dir, "--cache-dir") else {
            panic!("a dangling lock link must refuse the run")
        };
        assert!(
            message.starts_with(&format!("cannot open the lock file {}", link.display())),
            "{message}"
        );
        assert!(message.contains("symbolic link"), "{message}");
        assert!(message.contains(&target.display().to_string()), "{message}");
        assert!(!target.exists(), "the link's target was created");
        assert!(
            std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
            "the link itself is left as it was"
        );
    }

    /// A link to an existing file is followed: the runs lock the file it leads to, and still
    /// exclude each other.
    #[cfg(unix)]
    #[test]
    fn a_lock_link_to_an_existing_file_is_locked_through() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("shared.lock");
        std::fs::write(&target, b"").expect("target");
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).expect("symlink");
        let _first = lock_dir(dir.path(), "--cache-dir").expect("locked through the link");
        let Err(message) = lock_dir(dir.path(), "--cache-dir") else {
            panic!("a second lock through the link must be refused")
        };
        assert!(message.contains("in use by another"), "{message}");
        let held = File::open(&target).expect("target");
        assert!(
            matches!(held.try_lock(), Err(TryLockError::WouldBlock)),
            "the link's target is the file locked"
        );
    }

    /// A plain missing lock file is still created, and locked.
    #[test]
    fn a_missing_lock_file_is_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _lock = lock_dir(dir.path(), "--cache-dir").expect("created");
        assert!(dir.path().join(LOCK_FILE).is_file());
    }
}
