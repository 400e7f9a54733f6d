//! Adversarial probes of what reads outside input — snapshot files, traces — that the other
//! tests do not cover: leftovers of a crashed save, saves racing for one path, and trace
//! encodings that are valid but unusual.

use std::path::Path;

use memocache::snapshot::read_snapshot_file;
use memocache::{Cache, CacheKey};

fn key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "audit").expect("valid key")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("lists the directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A save that crashed between creating its temporary file and the rename leaves the file
/// behind, named after the process id and a per-process sequence number. A later process
/// with the same id (a container's PID 1 restarting, or ids wrapping) must still be able to
/// save: its temporary names run into the leftovers.
#[test]
fn a_temp_file_left_by_a_crashed_save_does_not_block_later_saves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let pid = std::process::id();
    // Every name this process could use for its next saves, as a crashed predecessor with
    // the same id would have left them.
    let stale: Vec<String> = (0..64)
        .map(|seq| format!(".cache.snap.{pid}.{seq}.tmp"))
        .collect();
    for name in &stale {
        std::fs::write(dir.path().join(name), b"half a snapshot").expect("writes");
    }

    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(key(1), "one").expect("inserts");
    let report = cache
        .save_snapshot(&path)
        .expect("saves despite the leftovers");
    assert_eq!(report.entries, 1);
    assert_eq!(read_snapshot_file(&path).expect("reads").entries.len(), 1);

    // The leftovers are not the save's to judge (another process might own them); only the
    // snapshot was added.
    let mut expected = stale.clone();
    expected.push("cache.snap".into());
    expected.sort();
    assert_eq!(files_in(dir.path()), expected);
}

/// Threads saving different caches to one path at once: every save succeeds, the file left
/// is exactly one of the caches (never a mix), and no temporary file remains.
#[test]
fn concurrent_saves_to_one_path_leave_one_whole_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shared.snap");
    const SAVERS: u32 = 4;
    let caches: Vec<Cache> = (0..SAVERS)
        .map(|s| {
            let cache = Cache::builder().max_bytes(8 << 20).build().expect("builds");
            for i in 0..200 {
                // Each saver's values carry its number, so a mixed file would show.
                cache
                    .insert(key(i), vec![s as u8; 1000 + i as usize])
                    .expect("inserts");
            }
            cache
        })
        .collect();
    for _round in 0..5 {
        std::thread::scope(|scope| {
            for cache in &caches {
                let path = &path;
                scope.spawn(move || cache.save_snapshot(path).expect("saves"));
            }
        });
        let snapshot = read_snapshot_file(&path).expect("a whole snapshot");
        assert_eq!(snapshot.entries.len(), 200);
        let saver = snapshot.entries[0].value[0];
        for entry in &snapshot.entries {
            assert!(
                entry.value.iter().all(|&b| b == saver),
                "entries of different saves in one file"
            );
        }
        assert_eq!(files_in(dir.path()), ["shared.snap"]);
    }
}
