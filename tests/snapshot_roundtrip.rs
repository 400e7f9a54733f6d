//! Save and restore: values, remaining TTLs, access counts and policy ranking survive;
//! expired entries are dropped; a smaller cache keeps the most valuable entries.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use memocache::snapshot::{read_snapshot, read_snapshot_file};
use memocache::{Cache, CacheError, CacheKey, Clock, ManualClock, Ttl};
use proptest::prelude::*;

fn key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "transcript").expect("valid key")
}

/// A temporary directory holding `cache.snap`, saved from a 1 MiB cache that `fill` filled.
fn saved_snapshot(fill: impl FnOnce(&Cache)) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    fill(&cache);
    cache.save_snapshot(&path).expect("saves");
    (dir, path)
}

/// A temporary directory for the snapshot, and a 1 MiB cache on a manual clock.
fn manual_cache() -> (tempfile::TempDir, ManualClock, Cache) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .expect("builds");
    (dir, clock, cache)
}

fn ttl(secs: u64) -> Ttl {
    Ttl::seconds(secs).expect("positive TTL")
}

#[test]
fn round_trip_keeps_values_ttls_and_access_counts() {
    let (dir, clock, cache) = manual_cache();
    let path = dir.path().join("cache.snap");
    cache.insert(key(1), "forever").expect("inserts");
    cache
        .insert_with_ttl(key(2), "long", ttl(100))
        .expect("inserts");
    cache
        .insert_with_ttl(key(3), "short", ttl(10))
        .expect("inserts");
    for _ in 0..3 {
        assert!(cache.get(&key(1)).is_some());
    }
    assert!(cache.get(&key(2)).is_some());
    clock.advance(Duration::from_secs(5));

    let saved = cache.save_snapshot(&path).expect("saves");
    assert_eq!(saved.entries, 3);
    assert_eq!(saved.bytes, cache.size_bytes());
    assert_eq!(
        saved.file_bytes,
        std::fs::metadata(&path).expect("exists").len()
    );

    // The file holds TTLs as left at the save time: the manual clock did not move during it.
    let snapshot = read_snapshot_file(&path).expect("reads");
    assert_eq!(snapshot.saved_at, saved.saved_at);
    let ttl_of = |k: CacheKey| {
        snapshot
            .entries
            .iter()
            .find(|e| e.key == k)
            .expect("saved")
            .ttl_remaining
    };
    assert_eq!(ttl_of(key(1)), None);
    assert_eq!(ttl_of(key(2)), Some(Duration::from_secs(95)));
    assert_eq!(ttl_of(key(3)), Some(Duration::from_secs(5)));

    // Restored 3 s of wall time later, into a cache whose clock has another epoch.
    let clock2 = ManualClock::new();
    clock2.advance(Duration::from_secs(1_000));
    let restored = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock2.clone())
        .build()
        .expect("builds");
    let report =
        restored.restore_snapshot(snapshot.clone(), snapshot.saved_at + Duration::from_secs(3));
    assert_eq!((report.entries, report.restored, report.expired), (3, 3, 0));
    assert_eq!(report.left_out, 0);
    assert_eq!(report.restored_bytes, restored.size_bytes());
    let e1 = restored.entry(&key(1)).expect("restored");
    assert_eq!(&e1.value()[..], b"forever");
    assert_eq!(e1.ttl(), None);
    assert_eq!(e1.access_count(), 3);
    let e2 = restored.entry(&key(2)).expect("restored");
    assert_eq!(e2.ttl(), Some(ttl(92)));
    assert_eq!(e2.access_count(), 1);
    assert_eq!(restored.entry(&key(3)).and_then(|e| e.ttl()), Some(ttl(2)));
    // The short one lives exactly its remaining 2 s on the new clock.
    clock2.advance(Duration::from_secs(2));
    assert_eq!(restored.peek(&key(3)).as_deref(), Some(&b"short"[..]));
    clock2.advance(Duration::from_nanos(1));
    assert_eq!(restored.peek(&key(3)), None);

    // Restored 6 s later: the short one is dropped as expired.
    let late = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let report =
        late.restore_snapshot(snapshot.clone(), snapshot.saved_at + Duration::from_secs(6));
    assert_eq!((report.restored, report.expired), (2, 1));
    assert_eq!(report.expired_bytes, report.bytes - report.restored_bytes);
    assert!(!late.contains_key(&key(3)));

    // A wall clock that went backwards counts as no time passed.
    let early = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let report = early.restore_snapshot(
        snapshot.clone(),
        snapshot.saved_at - Duration::from_secs(60),
    );
    assert_eq!(report.restored, 3);

    // And through the file, now.
    let loaded = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let report = loaded.load_snapshot(&path).expect("loads");
    assert_eq!(
        (report.restored, report.expired, report.left_out),
        (3, 0, 0)
    );
    assert_eq!(report.file_bytes, saved.file_bytes);
    assert_eq!(loaded.get(&key(3)).as_deref(), Some(&b"short"[..]));
}

#[test]
fn an_empty_cache_round_trips() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let saved = cache.save_snapshot(&path).expect("saves");
    // Header, end marker, block count, one block digest, root.
    assert_eq!((saved.entries, saved.file_bytes), (0, 28 + 9 + 8 + 32 + 32));
    let report = cache.load_snapshot(&path).expect("loads");
    assert_eq!((report.entries, report.restored), (0, 0));
}

#[test]
fn saving_replaces_the_previous_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(key(1), "one").expect("inserts");
    cache.save_snapshot(&path).expect("saves");
    cache.insert(key(2), "two").expect("inserts");
    cache.save_snapshot(&path).expect("saves again");
    let snapshot = read_snapshot_file(&path).expect("reads");
    assert_eq!(snapshot.entries.len(), 2);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["cache.snap"], "no temp files left");
}

/// A snapshot path that is a symbolic link (a cache directory on a small disk linking its
/// snapshot to a larger one) is loaded through the link, so a save must write through it
/// too: the rename used to replace the link itself with a regular file, so the snapshot
/// moved onto the small disk and the linked file was left stale.
#[cfg(unix)]
#[test]
fn saving_through_a_symlink_replaces_the_linked_file_and_keeps_the_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let elsewhere = dir.path().join("big-disk");
    let cache_dir = dir.path().join("cache-dir");
    std::fs::create_dir(&elsewhere).expect("creates");
    std::fs::create_dir(&cache_dir).expect("creates");
    let target = elsewhere.join("cache.snap");
    let link = cache_dir.join("cache.snap");
    std::os::unix::fs::symlink("../big-disk/cache.snap", &link).expect("links");

    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(key(1), "one").expect("inserts");
    cache
        .save_snapshot(&target)
        .expect("saves the first snapshot");
    cache.insert(key(2), "two").expect("inserts");
    cache.save_snapshot(&link).expect("saves through the link");

    assert!(
        std::fs::symlink_metadata(&link)
            .expect("still there")
            .file_type()
            .is_symlink(),
        "the link was replaced by a file"
    );
    let snapshot = read_snapshot_file(&target).expect("reads the linked file");
    assert_eq!(
        snapshot.entries.len(),
        2,
        "the linked file has the new save"
    );
    for folder in [&elsewhere, &cache_dir] {
        let names: Vec<_> = std::fs::read_dir(folder)
            .expect("lists")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["cache.snap"], "no temp files left in {folder:?}");
    }
}

/// With room for 20 of 100 equal-sized entries, the 20 the policy ranks highest come back.
#[test]
fn a_smaller_cache_keeps_the_highest_ranked_entries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .shards(4)
        .build()
        .expect("builds");
    for i in 0..100 {
        cache.insert(key(i), vec![i as u8; 100]).expect("inserts");
    }
    let hot: BTreeSet<u32> = (0..100).filter(|i| i % 5 == 0).collect();
    for &i in &hot {
        for _ in 0..3 {
            assert!(cache.get(&key(i)).is_some());
        }
    }
    // A few lukewarm entries rank between the hot and the cold ones.
    for i in [1, 2, 3] {
        assert!(cache.get(&key(i)).is_some());
    }
    cache.save_snapshot(&path).expect("saves");

    let small = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(20)
        .build()
        .expect("builds");
    let report = small.load_snapshot(&path).expect("loads");
    assert_eq!(
        (report.entries, report.restored, report.left_out),
        (100, 20, 80)
    );
    assert_eq!(report.left_out_bytes, report.bytes - report.restored_bytes);
    let kept: BTreeSet<u32> = (0..100).filter(|&i| small.contains_key(&key(i))).collect();
    assert_eq!(kept, hot);
    assert_eq!(small.entry(&key(0)).map(|e| e.access_count()), Some(3));

    // By bytes: room for the hot ones and the three lukewarm ones.
    let charge = memocache::CacheEntry::charged_size(100) as u64;
    let by_bytes = Cache::builder()
        .max_bytes(23 * charge)
        .build()
        .expect("builds");
    let report = by_bytes.load_snapshot(&path).expect("loads");
    assert_eq!(report.restored, 23);
    assert!(by_bytes.size_bytes() <= by_bytes.max_bytes());
    let kept: BTreeSet<u32> = (0..100)
        .filter(|&i| by_bytes.contains_key(&key(i)))
        .collect();
    let expected: BTreeSet<u32> = hot.iter().copied().chain([1, 2, 3]).collect();
    assert_eq!(kept, expected);
}

#[test]
fn loading_into_a_full_cache_restores_only_what_fits_and_evicts_nothing() {
    let (_dir, path) = saved_snapshot(|cache| {
        for i in 0..10 {
            cache.insert(key(i), vec![0u8; 100]).expect("inserts");
        }
    });
    let full = Cache::builder()
        .max_entries(5)
        .max_bytes(1 << 20)
        .build()
        .expect("builds");
    for i in 100..105 {
        full.insert(key(i), "resident").expect("inserts");
    }
    let report = full.load_snapshot(&path).expect("loads");
    assert_eq!((report.restored, report.left_out), (0, 10));
    assert!((100..105).all(|i| full.contains_key(&key(i))));
}

/// A cache full by bytes and by entries, holding `key(i)` → `[i; len]` for `i` in `0..n`,
/// with a listener that records every removal's cause.
fn full_cache(
    n: u32,
    len: usize,
    extra_bytes: u64,
) -> (Cache, Arc<Mutex<Vec<memocache::RemovalCause>>>) {
    let charge = memocache::CacheEntry::charged_size(len) as u64;
    let causes = Arc::new(Mutex::new(Vec::new()));
    let cache = Cache::builder()
        .max_bytes(u64::from(n) * charge + extra_bytes)
        .max_entries(u64::from(n))
        .shards(4)
        .eviction_listener({
            let causes = Arc::clone(&causes);
            move |_, _, cause| causes.lock().expect("not poisoned").push(cause)
        })
        .build()
        .expect("builds");
    for i in 0..n {
        cache.insert(key(i), vec![i as u8; len]).expect("inserts");
    }
    assert_eq!(cache.len(), n as usize);
    (cache, causes)
}

/// Reloading a snapshot into the full cache it was saved from replaces every value in place.
/// A present key needs no room beyond its value's growth (an update frees the old charge),
/// but the load charged each one in full against the room left — none, in a full cache — and
/// left every entry out: a warm reload restored nothing.
#[test]
fn a_reload_into_the_full_cache_it_was_saved_from_leaves_nothing_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let (cache, causes) = full_cache(20, 100, 0);
    assert_eq!(cache.size_bytes(), cache.max_bytes(), "full by bytes too");
    cache.save_snapshot(&path).expect("saves");
    let contents = |cache: &Cache| -> Vec<Option<bytes::Bytes>> {
        (0..20).map(|i| cache.peek(&key(i))).collect()
    };
    let before = contents(&cache);

    let report = cache.load_snapshot(&path).expect("loads");
    assert_eq!(
        (report.entries, report.restored, report.left_out),
        (20, 20, 0)
    );
    assert_eq!(contents(&cache), before);
    assert_eq!((cache.len(), cache.size_bytes()), (20, cache.max_bytes()));
    // An update, as an insert over a present key is: each old value reported replaced,
    // nothing evicted.
    let stats = cache.stats();
    assert_eq!((stats.updates, stats.replaced), (20, 20));
    assert_eq!(stats.evictions_size, 0);
    let heard = std::mem::take(&mut *causes.lock().expect("not poisoned"));
    assert_eq!(heard, vec![memocache::RemovalCause::Replaced; 20]);

    // The same through a decoded snapshot.
    let snapshot = read_snapshot_file(&path).expect("reads");
    let report = cache.restore_snapshot(snapshot, SystemTime::now());
    assert_eq!((report.restored, report.left_out), (20, 0));
    assert_eq!(contents(&cache), before);
    assert_eq!(cache.stats().updates, 40);
}

/// A reload whose values grew: each present key needs only its growth, and what does not
/// fit the room is still left out (keeping its old value) — the budget is never overshot.
/// With room for five growths, the five ranked highest are replaced; charged in full and
/// as new entries, as the load did, none fitted a cache full by entries.
#[test]
fn a_reload_of_grown_values_replaces_what_fits_and_never_overshoots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let (cache, causes) = full_cache(20, 100, 5 * 100);
    {
        let grown = Cache::builder().max_bytes(1 << 20).build().expect("builds");
        for i in 0..20 {
            grown.insert(key(i), vec![i as u8; 200]).expect("inserts");
        }
        // Keys 10..15 rank highest.
        for i in 10..15 {
            for _ in 0..3 {
                assert!(grown.get(&key(i)).is_some());
            }
        }
        grown.save_snapshot(&path).expect("saves");
    }
    let report = cache.load_snapshot(&path).expect("loads");
    assert_eq!((report.restored, report.left_out), (5, 15));
    assert!(cache.size_bytes() <= cache.max_bytes());
    assert_eq!(cache.len(), 20, "nothing evicted, nothing added");
    for i in 0..20 {
        let len = cache.peek(&key(i)).map(|v| v.len());
        let want = if (10..15).contains(&i) { 200 } else { 100 };
        assert_eq!(len, Some(want), "key {i}");
    }
    assert_eq!(cache.stats().evictions_size, 0);
    assert_eq!(causes.lock().expect("not poisoned").len(), 5);

    // Nothing more fits now: a second reload replaces only what does not grow.
    let report = cache.load_snapshot(&path).expect("loads");
    assert_eq!((report.restored, report.left_out), (5, 15));
    assert!(cache.size_bytes() <= cache.max_bytes());
}

/// "Existing entries are never evicted to make room" must hold when the cache fills up
/// while a load runs. The room is measured before the entries are stored; writers (here
/// the eviction listener, which hears of the restored value it replaces) can take it in
/// between, and the restore then evicted their entries to store its own.
#[test]
fn a_load_evicts_nothing_even_when_writers_fill_the_cache_meanwhile() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (_dir, path) = saved_snapshot(|saver| {
        saver.insert(key(1), "restored first").expect("inserts");
        saver.insert(key(2), "restored second").expect("inserts");
        // Read key 2, so that it ranks higher and is stored after key 1.
        for _ in 0..3 {
            assert!(saver.get(&key(2)).is_some());
        }
    });

    let this: Arc<OnceLock<Cache>> = Arc::new(OnceLock::new());
    let filled = Arc::new(AtomicBool::new(false));
    let loader = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(3)
        .eviction_listener({
            let this = Arc::clone(&this);
            let filled = Arc::clone(&filled);
            move |_, _, _| {
                // Once, when key 1's restore replaces its resident value: two writers'
                // entries take the room left.
                if let Some(cache) = this.get()
                    && !filled.swap(true, Ordering::SeqCst)
                {
                    cache.insert(key(101), "writer").expect("inserts");
                    cache.insert(key(102), "writer").expect("inserts");
                }
            }
        })
        .build()
        .expect("builds");
    assert!(this.set(loader.clone()).is_ok());
    loader.insert(key(1), "resident").expect("inserts");

    let report = loader.load_snapshot(&path).expect("loads");
    assert!(filled.load(Ordering::SeqCst), "the listener ran");
    for k in [1, 101, 102] {
        assert!(loader.contains_key(&key(k)), "key {k} was evicted");
    }
    assert!(!loader.contains_key(&key(2)), "no room was left for key 2");
    assert_eq!((report.restored, report.left_out), (1, 1));
}

#[test]
fn the_builder_restores_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");

    // First start: no file yet.
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .restore_from(&path)
        .build()
        .expect("a missing snapshot is a first start");
    assert!(cache.is_empty());
    cache.insert(key(7), "seven").expect("inserts");
    cache.save_snapshot(&path).expect("saves");

    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .restore_from(&path)
        .build()
        .expect("builds");
    assert_eq!(cache.get(&key(7)).as_deref(), Some(&b"seven"[..]));

    // A damaged snapshot fails the build, naming the problem.
    std::fs::write(&path, b"not a snapshot").expect("writes");
    let err = Cache::builder()
        .max_bytes(1 << 20)
        .restore_from(&path)
        .build()
        .expect_err("damaged");
    assert!(matches!(err, CacheError::Snapshot(_)));
    assert!(err.to_string().contains("bad magic"), "{err}");
}

fn arb_entry() -> impl Strategy<Value = (u32, Vec<u8>, Option<u64>, u8)> {
    (
        0u32..64,
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(1u64..1_000_000),
        0u8..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever a cache holds, the file read back holds the same keys, values, TTLs and
    /// access counts; and a cache restored from it holds the same values.
    #[test]
    fn saved_entries_read_back_unchanged(entries in proptest::collection::vec(arb_entry(), 0..40)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("p.snap");
        let cache = Cache::builder()
            .max_bytes(1 << 24)
            .clock(ManualClock::new())
            .build()
            .expect("builds");
        for (k, value, ttl_ms, reads) in &entries {
            match ttl_ms {
                Some(ms) => cache.insert_with_ttl(key(*k), value.clone(), Ttl::new(Duration::from_millis(*ms)).expect("positive")),
                None => cache.insert(key(*k), value.clone()),
            }
            .expect("inserts");
            for _ in 0..*reads {
                cache.get(&key(*k));
            }
        }
        cache.save_snapshot(&path).expect("saves");
        let bytes = std::fs::read(&path).expect("reads");
        let snapshot = read_snapshot(&bytes[..]).expect("decodes");
        prop_assert_eq!(snapshot.entries.len(), cache.len());
        for saved in &snapshot.entries {
            let live = cache.entry(&saved.key).expect("in the cache");
            prop_assert_eq!(&saved.value, live.value());
            prop_assert_eq!(saved.ttl_remaining, live.ttl().map(Ttl::as_duration));
            prop_assert_eq!(saved.access_count, live.access_count());
        }
        let restored = Cache::builder().max_bytes(1 << 24).build().expect("builds");
        let report = restored.restore_snapshot(snapshot, SystemTime::UNIX_EPOCH);
        prop_assert_eq!(report.restored as usize, cache.len());
        prop_assert_eq!(restored.size_bytes(), cache.size_bytes());
    }
}

/// Time and room at their edges in one load. An entry saved at its exact deadline (still
/// served by the saving cache, with nothing left) and one saved with a microsecond left (gone
/// by the time any load runs) are reported expired, not restored. A cache whose clock is a
/// century past every saved deadline restores the live entries with what is left of their
/// TTLs, counted from its own clock. With room for fewer entries than are live (the two-pass
/// load) it keeps the highest ranked, and the report's counts add up, in entries and bytes.
#[test]
fn a_load_reports_every_entry_once_at_the_edges_of_time_and_room() {
    let (dir, clock, cache) = manual_cache();
    let path = dir.path().join("cache.snap");
    let micro = Duration::from_micros(1);
    cache
        .insert_with_ttl(key(1), "at its deadline", ttl(10))
        .expect("inserts");
    let almost = Ttl::new(Duration::from_secs(10) + micro).expect("positive TTL");
    cache
        .insert_with_ttl(key(2), "a microsecond left", almost)
        .expect("inserts");
    for i in 3..=12 {
        cache
            .insert_with_ttl(key(i), vec![i as u8; 100], ttl(3600))
            .expect("inserts");
    }
    for i in 13..=17 {
        cache.insert(key(i), vec![i as u8; 100]).expect("inserts");
    }
    // Keys 3..=7 are read, so they rank above the other live ones.
    for i in 3..=7 {
        for _ in 0..3 {
            assert!(cache.get(&key(i)).is_some());
        }
    }
    clock.advance(Duration::from_secs(10));
    assert!(cache.get(&key(1)).is_some(), "live at its deadline");
    let saved = cache.save_snapshot(&path).expect("saves");
    assert_eq!(saved.entries, 17);
    let snapshot = read_snapshot_file(&path).expect("reads");
    let left = |k| {
        snapshot
            .entries
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.ttl_remaining)
    };
    assert_eq!(left(key(1)), Some(Some(Duration::ZERO)));
    assert_eq!(left(key(2)), Some(Some(micro)));

    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    for (max_entries, restored) in [(100, 15), (5, 5)] {
        let later = ManualClock::new();
        later.advance(century);
        let small = Cache::builder()
            .max_bytes(1 << 20)
            .max_entries(max_entries)
            .clock(later.clone())
            .build()
            .expect("builds");
        let report = small.load_snapshot(&path).expect("loads");
        assert_eq!(
            (report.entries, report.expired, report.restored),
            (17, 2, restored),
            "{report:?}"
        );
        assert_eq!(report.left_out, 15 - restored);
        assert_eq!(
            report.bytes,
            report.restored_bytes + report.expired_bytes + report.left_out_bytes
        );
        assert_eq!(report.restored_bytes, small.size_bytes());
        assert!(!small.contains_key(&key(1)) && !small.contains_key(&key(2)));
        for i in 3..=7 {
            let entry = small.entry(&key(i)).expect("a highest ranked entry");
            let deadline = entry.expires_at().expect("has a TTL");
            let left = deadline.saturating_duration_since(later.now());
            // The hour less the wall time between the save and the load.
            assert!(
                left <= Duration::from_secs(3600) && left > Duration::from_secs(3500),
                "{left:?}"
            );
        }
    }
}

/// Expired entries that nothing has purged yet are no reader's, so they do not hold room
/// against a load: it purges them (reported `Expired`) when not everything fits, as an insert
/// that must evict does. They used to count as residents, and a cache whose entries had all
/// expired restored nothing, reporting every entry as left out for want of room.
#[test]
fn a_load_purges_expired_residents_instead_of_leaving_entries_out() {
    let (_dir, path) = saved_snapshot(|saved| {
        for i in 0..5 {
            saved.insert(key(i), vec![i as u8; 100]).expect("inserts");
        }
    });

    let clock = ManualClock::new();
    let causes = Arc::new(Mutex::new(Vec::new()));
    // Full by entries and, with a value of 10 KiB each, nearly full by bytes.
    let charge = memocache::CacheEntry::charged_size(10_000) as u64;
    let cache = Cache::builder()
        .max_bytes(5 * charge)
        .max_entries(5)
        .clock(clock.clone())
        .eviction_listener({
            let causes = Arc::clone(&causes);
            move |_, _, cause| causes.lock().expect("not poisoned").push(cause)
        })
        .build()
        .expect("builds");
    for i in 100..105 {
        cache
            .insert_with_ttl(key(i), vec![0u8; 10_000], ttl(1))
            .expect("inserts");
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.len(), 5, "expired, not yet purged");

    let report = cache.load_snapshot(&path).expect("loads");
    assert_eq!((report.restored, report.left_out), (5, 0), "{report:?}");
    assert_eq!(cache.len(), 5);
    assert!(cache.size_bytes() <= cache.max_bytes());
    assert!((0..5).all(|i| cache.peek(&key(i)) == Some(vec![i as u8; 100].into())));
    assert_eq!(
        *causes.lock().expect("not poisoned"),
        [memocache::RemovalCause::Expired; 5]
    );

    // A restore from a decoded snapshot chooses the same way.
    let snapshot = read_snapshot_file(&path).expect("reads");
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(5)
        .clock(clock.clone())
        .build()
        .expect("builds");
    for i in 100..105 {
        cache
            .insert_with_ttl(key(i), "old", ttl(1))
            .expect("inserts");
    }
    clock.advance(Duration::from_secs(2));
    let report = cache.restore_snapshot(snapshot, SystemTime::now());
    assert_eq!((report.restored, report.left_out), (5, 0), "{report:?}");
}

/// A cache built with a default TTL bounds the life of every entry, restored ones included:
/// an entry saved without a TTL (by a cache without a default) gets the restoring cache's
/// default, as an insert without a TTL does. It used to be restored without a deadline and
/// never expired, and every later save and restart carried that on. An entry with its own
/// TTL keeps what is left of it.
#[test]
fn an_entry_saved_without_a_ttl_gets_the_restoring_caches_default() {
    let (_dir, path) = saved_snapshot(|saved| {
        saved.insert(key(1), "no ttl").expect("inserts");
        saved
            .insert_with_ttl(key(2), "own ttl", ttl(1000))
            .expect("inserts");
    });

    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .default_ttl(ttl(10))
        .clock(clock.clone())
        .restore_from(&path)
        .build()
        .expect("builds");
    let left = |k| {
        let deadline = cache.entry(&k).and_then(|e| e.expires_at())?;
        Some(deadline.saturating_duration_since(clock.now()))
    };
    assert_eq!(left(key(1)), Some(Duration::from_secs(10)));
    assert!(left(key(2)).is_some_and(|l| l > Duration::from_secs(990)));
    clock.advance(Duration::from_secs(11));
    assert_eq!(cache.get(&key(1)), None, "expired after the default TTL");
    assert!(cache.get(&key(2)).is_some(), "its own TTL is longer");

    // Without a default TTL it still never expires.
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .restore_from(&path)
        .build()
        .expect("builds");
    assert_eq!(cache.entry(&key(1)).map(|e| e.expires_at()), Some(None));
}

/// A load that needs its second pass chooses as a restore of the same entries does, also
/// when the cache holds expired entries under keys of the file. The second pass's choice
/// purges them, and used to count each such key as still holding its old charge (asked in
/// the first pass), so a file entry under it looked nearly free: the choice read values that
/// did not fit together, and the import, choosing again among those alone, left out an entry
/// the ranking would have kept.
#[test]
fn a_two_pass_load_does_not_count_purged_residents_as_present() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let overhead = memocache::CacheEntry::charged_size(0) as u64;
    let small = 1_000;
    let charge = small as u64 + overhead;
    let budget = 3 * charge;
    // Ranked k > x > y by their hits. x does not fit beside k; y does.
    let (k, x, y) = (key(1), key(2), key(3));
    let saved = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    saved.insert(k, vec![1u8; small]).expect("inserts");
    saved
        .insert(x, vec![2u8; (budget - charge + 1 - overhead) as usize])
        .expect("inserts");
    saved.insert(y, vec![3u8; small]).expect("inserts");
    for (key, hits) in [(k, 3), (x, 2), (y, 1)] {
        for _ in 0..hits {
            saved.get(&key).expect("present");
        }
    }
    saved.save_snapshot(&path).expect("saves");

    // A cache of the budget whose only entry, under k, has expired.
    let loading = || {
        let clock = ManualClock::new();
        let cache = Cache::builder()
            .max_bytes(budget)
            .clock(clock.clone())
            .build()
            .expect("builds");
        cache
            .insert_with_ttl(k, vec![0u8; small], ttl(1))
            .expect("inserts");
        clock.advance(Duration::from_secs(2));
        cache
    };
    let kept = |cache: &Cache| [k, x, y].map(|key| cache.peek(&key).is_some());

    let restored = loading();
    let report =
        restored.restore_snapshot(read_snapshot_file(&path).expect("reads"), SystemTime::now());
    assert_eq!(kept(&restored), [true, false, true], "{report:?}");

    let loaded = loading();
    let report = loaded.load_snapshot(&path).expect("loads");
    assert_eq!(kept(&loaded), [true, false, true], "{report:?}");
    assert_eq!((report.restored, report.left_out), (2, 1), "{report:?}");
}

/// A listener that panics while a load purges expired residents does not cut the load short:
/// the chosen entries are restored, every purged entry is reported, and then the panic is
/// passed on, as a purge or an insert does. It used to leave the load right after the purge,
/// with nothing restored, through a decoded snapshot (one choice) and through a file that
/// does not fit (two passes) alike.
#[test]
fn a_listener_panic_during_a_loads_purge_is_raised_after_the_restore() {
    let (_dir, path) = saved_snapshot(|saved| {
        for i in 0..10 {
            saved.insert(key(i), vec![i as u8; 100]).expect("inserts");
        }
    });

    // A cache bounded to `room` entries, full of entries that have expired, whose listener
    // panics on each one it hears of.
    let expired_cache = |room: u64| {
        let clock = ManualClock::new();
        let heard = Arc::new(Mutex::new(0));
        let cache = Cache::builder()
            .max_bytes(1 << 20)
            .max_entries(room)
            .clock(clock.clone())
            .eviction_listener({
                let heard = Arc::clone(&heard);
                move |_, _, cause| {
                    assert_eq!(cause, memocache::RemovalCause::Expired);
                    *heard.lock().expect("not poisoned") += 1;
                    panic!("the listener panics");
                }
            })
            .build()
            .expect("builds");
        for i in 100..100 + room as u32 {
            cache
                .insert_with_ttl(key(i), "old", ttl(1))
                .expect("inserts");
        }
        clock.advance(Duration::from_secs(2));
        (cache, heard)
    };
    let restored = |cache: &Cache| (0..10).filter(|&i| cache.contains_key(&key(i))).count();

    // Everything fits once the purge makes room: one choice, in the import.
    let (cache, heard) = expired_cache(12);
    let snapshot = read_snapshot_file(&path).expect("reads");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.restore_snapshot(snapshot, SystemTime::now())
    }));
    assert!(outcome.is_err(), "the listener's panic is passed on");
    assert_eq!(restored(&cache), 10);
    assert_eq!(*heard.lock().expect("not poisoned"), 12);
    assert_eq!(cache.len(), 10);

    // Nothing fits beside the expired entries: the file is read twice, the choice purging.
    let (cache, heard) = expired_cache(8);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.load_snapshot(&path)));
    assert!(outcome.is_err(), "the listener's panic is passed on");
    assert_eq!(restored(&cache), 8);
    assert_eq!(*heard.lock().expect("not poisoned"), 8);
    assert_eq!(cache.len(), 8);
    assert!(cache.size_bytes() <= cache.max_bytes());
}
