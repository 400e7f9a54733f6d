//! Fixtures shared by the pipeline tests.
#![allow(dead_code)] // each test crate uses part of this module

use std::path::{Path, PathBuf};

use memocache::Cache;
use tempfile::TempDir;

/// A 64 MiB cache: room for every transcript and chunk a test makes.
pub fn cache() -> Cache {
    Cache::builder().max_bytes(64 << 20).build().expect("valid")
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("writable temp dir");
}

/// The file `name`, holding `bytes`, in a new temporary directory that lasts as long as the
/// `TempDir` returned with it.
pub fn temp_file(name: &str, bytes: &[u8]) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    write(&path, bytes);
    (dir, path)
}
