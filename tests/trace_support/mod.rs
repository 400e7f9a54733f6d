//! Locating the shared traces, for the trace tests and the `hit_ratio` bench (which includes
//! this file with `#[path]`).

use std::path::{Path, PathBuf};

/// The shared traces folder: `shared/traces` in the nearest ancestor of the repository that has
/// one (CI clones the repository beside `shared/`; worktrees sit deeper), or `MEMOCACHE_TRACES`
/// if set. `None`, with the reason printed, if there is none.
pub fn traces_dir() -> Option<PathBuf> {
    let found = match std::env::var_os("MEMOCACHE_TRACES") {
        Some(dir) => Some(PathBuf::from(dir)).filter(|d| d.join("SOURCES.md").is_file()),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .skip(1)
            .map(|a| a.join("shared/traces"))
            .find(|d| d.join("SOURCES.md").is_file()),
    };
    if found.is_none() {
        eprintln!(
            "skipped: no shared/traces/SOURCES.md beside {} or its ancestors, nor at \
             $MEMOCACHE_TRACES",
            env!("CARGO_MANIFEST_DIR")
        );
    }
    found
}

/// Every trace file in `dir`'s subfolders, sorted by path.
pub fn trace_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .flat_map(|sub| std::fs::read_dir(sub).into_iter().flatten())
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}
