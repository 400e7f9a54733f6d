//! Atomic replacement of a file: write a temporary file in the same directory, fsync it,
//! rename it over the target, fsync the directory.
//!
//! `rename` within one filesystem is atomic, so a reader (or a restart after a crash) sees
//! either the old file or the complete new one. The file is fsynced *before* the rename so
//! that the name can never point at data that is not on disk yet, and the directory is
//! fsynced *after* it so that the rename itself survives a power cut. Until the rename, the
//! old file is never opened for writing: a crash or a full disk mid-write costs only the
//! temporary file, which is removed on every error path (a crash leaves it behind, under a
//! name no reader looks at, and which a later save with the same process id steps over).
//!
//! **Early writeback.** Left alone, the kernel keeps a large write dirty in the page cache
//! and the final fsync then waits for all of it to reach the disk, after the writer is done.
//! A snapshot's writer is slowed by hashing, so the disk would sit idle while it works and
//! then be waited for. Instead, every [`WRITEBACK_EVERY`] bytes the writer asks a helper
//! thread to `fdatasync` what is written so far: the disk works while the caller writes and
//! the final fsync has little left. A request made while a sync is still running is merged
//! into the next one. An error from an early sync fails the save (after a failed fsync the
//! kernel may consider the pages clean, so the final fsync could not be trusted).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};

use super::SnapshotError;

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

fn io_error(action: &str, path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        action: format!("{action} {}", path.display()),
        source,
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

/// Replaces `path` with what `write` puts into a fresh file. On any error `path` is untouched
/// and the temporary file is gone.
pub(super) fn replace_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut Output<'_>) -> io::Result<T>,
) -> Result<T, SnapshotError> {
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
    // Unique per process and call, so concurrent saves to one path never share a temp file.
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let temp_path = || {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        dir.join(temp_name)
    };
    let mut temp = TempFile {
        path: temp_path(),
        armed: false,
    };
    // A name can still be taken: a save that crashed before its rename leaves its temp file,
    // and a later process may get the same id (a container's PID 1 always does) and count
    // from 0 again; so can a process of another PID namespace sharing the directory. Such a
    // file is not ours to remove, so take the next number instead of failing the save.
    let mut attempts = 0;
    let file = loop {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path)
        {
            Ok(file) => break file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < MAX_TEMP_ATTEMPTS => {
                attempts += 1;
                temp.path = temp_path();
            }
            Err(e) => return Err(io_error("creating", &temp.path, e)),
        }
    };
    temp.armed = true;
    let mut output = Output {
        file: &file,
        unrequested: 0,
        syncer: None,
        tried: false,
    };
    let out = write(&mut output).map_err(|e| io_error("writing", &temp.path, e))?;
    output
        .finish()
        .map_err(|e| io_error("syncing", &temp.path, e))?;
    drop(output);
    file.sync_all()
        .map_err(|e| io_error("syncing", &temp.path, e))?;
    drop(file);
    std::fs::rename(&temp.path, path).map_err(|e| io_error("renaming into", path, e))?;
    temp.armed = false;
    sync_dir(dir).map_err(|e| io_error("syncing directory", dir, e))?;
    Ok(out)
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; its renames are journaled by NTFS.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write longer than [`WRITEBACK_EVERY`] starts the helper, which syncs while the
    /// writing goes on; the file ends up exactly as written and the helper is gone.
    #[test]
    fn a_long_write_is_synced_early_and_lands_whole() {
        let dir = tempfile::tempdir().expect("creates a temp dir");
        let path = dir.path().join("big");
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let chunks = ((2 * WRITEBACK_EVERY) >> 20) + 3;
        let started = replace_atomically(&path, |out| {
            assert!(out.syncer.is_none(), "no helper for a short write");
            for _ in 0..chunks {
                out.write_all(&chunk)?;
            }
            Ok(out.syncer.is_some())
        })
        .expect("writes");
        assert!(started, "the helper was started");
        let written = std::fs::read(&path).expect("reads");
        assert_eq!(written.len() as u64, chunks << 20);
        assert!(written.chunks(1 << 20).all(|c| c == &chunk[..]));
    }
}
