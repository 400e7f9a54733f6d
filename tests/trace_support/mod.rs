//! Locating the shared traces, for the trace tests and the `hit_ratio` bench (which includes
//! this file with `#[path]`), and compressing small traces of the tests' own.

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

/// `data` as a gzip file.
#[allow(dead_code)] // Not every includer compresses.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// `data` as a zstd file.
#[allow(dead_code)] // Not every includer compresses.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// `"1\n2\n3\n"` ten times as an xz file (`xz -9`): there is no xz encoder among the
/// dependencies.
#[allow(dead_code)] // Not every includer compresses.
pub const XZ_LOOP: &[u8] = &[
    0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00, 0x21, 0x01,
    0x1c, 0x00, 0x00, 0x00, 0x10, 0xcf, 0x58, 0xcc, 0xe0, 0x00, 0x3b, 0x00, 0x0c, 0x5d, 0x00, 0x18,
    0x82, 0x82, 0x8f, 0x22, 0x4f, 0x00, 0xef, 0x91, 0x91, 0x10, 0x00, 0x00, 0x8a, 0xb5, 0xa3, 0xd3,
    0x54, 0x22, 0xd1, 0xb2, 0x00, 0x01, 0x28, 0x3c, 0x06, 0x67, 0xb4, 0x52, 0x1f, 0xb6, 0xf3, 0x7d,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 0x59, 0x5a,
];
