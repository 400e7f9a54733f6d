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
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    let written = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        // The file's contents mean nothing; never truncate what a user may have put there.
        .truncate(false)
        .open(path);
    match written {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => File::open(path).map_err(|_| e),
        opened => opened,
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
}
