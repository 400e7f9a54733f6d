//! Saving while writers and readers keep going: the file holds, for every key it contains, a
//! whole value that some writer wrote for that key.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memocache::snapshot::read_snapshot_file;
use memocache::{Cache, CacheKey};

const KEYS: u32 = 256;
const WRITERS: u32 = 3;

fn key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "chunk").expect("valid key")
}

/// A value only `writer` writes for key `k` at step `seq`: a 12-byte tag, then a body whose
/// length and bytes derive from the tag, so a torn or mixed-up value cannot pass `check`.
fn value(k: u32, writer: u32, seq: u32) -> Vec<u8> {
    let len = 16 + (k * 31 + seq * 17) as usize % 4_000;
    let mut v = Vec::with_capacity(12 + len);
    v.extend_from_slice(&k.to_le_bytes());
    v.extend_from_slice(&writer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..len).map(|i| (i as u32 ^ k ^ writer.wrapping_mul(7) ^ seq) as u8));
    v
}

fn check(k: u32, v: &[u8]) -> Result<(), String> {
    let word = |i: usize| {
        v.get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("value of {} bytes is too short", v.len()))
    };
    let (tag_key, writer, seq) = (word(0)?, word(1)?, word(2)?);
    if tag_key != k {
        return Err(format!("value of key {tag_key} stored under key {k}"));
    }
    if writer >= WRITERS {
        return Err(format!("no writer {writer}"));
    }
    if v != value(k, writer, seq) {
        return Err(format!("torn value: key {k} writer {writer} seq {seq}"));
    }
    Ok(())
}

#[test]
fn a_save_during_writes_holds_whole_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("busy.snap");
    let cache = Cache::builder()
        .max_bytes(512 * 1024)
        .shards(8)
        .build()
        .expect("builds");
    let stop = Arc::new(AtomicBool::new(false));
    // Every writer's steps, so that the test can tell a save that overlapped writes.
    let steps = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (cache, stop, steps) = (cache.clone(), Arc::clone(&stop), Arc::clone(&steps));
            std::thread::spawn(move || {
                let mut seq = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let k = (seq.wrapping_mul(2_654_435_761) ^ writer) % KEYS;
                    match seq % 5 {
                        0 => drop(cache.remove(&key(k))),
                        1 => drop(cache.get(&key(k))),
                        _ => cache.insert(key(k), value(k, writer, seq)).expect("fits"),
                    }
                    seq = seq.wrapping_add(1);
                    steps.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let index: HashMap<CacheKey, u32> = (0..KEYS).map(|k| (key(k), k)).collect();
    let mut saved_entries = 0;
    // At least 20 saves, and at least 10 during which the writers made progress: counted, not
    // assumed, since a loaded machine may leave the writers unscheduled for a whole save. The
    // deadline only turns writers that never run into a failure.
    let (mut saves, mut overlapped) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while saves < 20 || overlapped < 10 {
        assert!(
            Instant::now() < deadline,
            "{overlapped} of {saves} saves overlapped writes"
        );
        let before = steps.load(Ordering::Relaxed);
        let report = cache.save_snapshot(&path).expect("saves");
        if steps.load(Ordering::Relaxed) > before {
            overlapped += 1;
        }
        saves += 1;
        let snapshot = read_snapshot_file(&path).expect("a complete, valid file");
        assert_eq!(snapshot.entries.len() as u64, report.entries);
        for entry in &snapshot.entries {
            let k = index.get(&entry.key).expect("a key some writer used");
            check(*k, &entry.value).unwrap_or_else(|e| panic!("{e}"));
        }
        saved_entries += snapshot.entries.len();
        // Restoring a busy file also works while the writers go on.
        let restored = Cache::builder()
            .max_bytes(512 * 1024)
            .build()
            .expect("builds");
        restored.load_snapshot(&path).expect("loads");
        assert!(restored.size_bytes() <= restored.max_bytes());
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("writer finished");
    }
    assert!(saved_entries > 0);
    assert!(cache.size_bytes() <= cache.max_bytes());
}

/// Two savers to one path and a loader of it, while writers insert, remove and now and then
/// clear the whole cache: every save succeeds, every load finds a whole snapshot (the one
/// either saver renamed into place last), each holds only whole values, and no temporary
/// file is left. (The test above has one saver and no `clear`.)
#[test]
fn concurrent_saves_and_loads_of_one_path_during_clears_see_whole_snapshots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shared.snap");
    let cache = Cache::builder()
        .max_bytes(512 * 1024)
        .shards(8)
        .build()
        .expect("builds");
    cache.save_snapshot(&path).expect("first save");
    let stop = Arc::new(AtomicBool::new(false));
    let clears = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (cache, stop, clears) = (cache.clone(), Arc::clone(&stop), Arc::clone(&clears));
            std::thread::spawn(move || {
                let mut seq = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let k = (seq.wrapping_mul(2_654_435_761) ^ writer) % KEYS;
                    match seq % 200 {
                        0 => {
                            cache.clear();
                            clears.fetch_add(1, Ordering::Relaxed);
                        }
                        n if n % 5 == 1 => drop(cache.remove(&key(k))),
                        _ => cache.insert(key(k), value(k, writer, seq)).expect("fits"),
                    }
                    seq = seq.wrapping_add(1);
                }
            })
        })
        .collect();
    let index: HashMap<CacheKey, u32> = (0..KEYS).map(|k| (key(k), k)).collect();
    let verify = |entries: &[memocache::snapshot::SnapshotEntry]| {
        for entry in entries {
            let k = index.get(&entry.key).expect("a key some writer used");
            check(*k, &entry.value).unwrap_or_else(|e| panic!("{e}"));
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..15 {
                    let report = cache.save_snapshot(&path).expect("saves");
                    assert!(report.entries <= u64::from(KEYS));
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..15 {
                verify(&read_snapshot_file(&path).expect("a whole file").entries);
                let restored = Cache::builder()
                    .max_bytes(512 * 1024)
                    .build()
                    .expect("builds");
                let report = restored.load_snapshot(&path).expect("loads a whole file");
                assert_eq!(report.restored + report.left_out, report.entries);
            }
        });
    });
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("writer finished");
    }
    assert!(clears.load(Ordering::Relaxed) > 0, "the writers cleared");
    verify(&read_snapshot_file(&path).expect("a whole file").entries);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["shared.snap"], "no temporary file is left");
}
