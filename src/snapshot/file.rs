//! Atomic replacement of a file: write a temporary file in the same directory, fsync it,
//! rename it over the target, fsync the directory.
//!
//! `rename` within one filesystem is atomic, so a reader (or a restart after a crash) sees
//! either the old file or the complete new one. The file is fsynced *before* the rename so
//! that the name can never point at data that is not on disk yet, and the directory is
//! fsynced *after* it so that the rename itself survives a power cut. Until the rename, the
//! old file is never opened for writing: a crash or a full disk mid-write costs only the
//! temporary file, which is removed on every error path (a crash leaves it behind, under a
//! name no reader looks at).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Replaces `path` with what `write` puts into a fresh file. On any error `path` is untouched
/// and the temporary file is gone.
pub(super) fn replace_atomically<T>(
    path: &Path,
    write: impl FnOnce(&File) -> io::Result<T>,
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
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let mut temp = TempFile {
        path: dir.join(temp_name),
        armed: false,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp.path)
        .map_err(|e| io_error("creating", &temp.path, e))?;
    temp.armed = true;
    let out = write(&file).map_err(|e| io_error("writing", &temp.path, e))?;
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
