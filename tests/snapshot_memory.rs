//! A load into a cache smaller than the snapshot holds what the cache keeps, not the file.
//!
//! Memory is observed with a global allocator that tracks the bytes live on the heap and
//! their peak; the test compares the peak during a load with the file's size and with what
//! the cache keeps. Its bound is loose (the point is "not the whole file"), and it counts
//! bytes, not time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use memocache::{Cache, CacheEntry, CacheKey};

/// The system allocator, counting live bytes and their peak (all threads: the hash workers
/// hold blocks too).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests of this binary take turns: the counters are process-wide, and the test harness
/// runs tests on parallel threads, so one test's save would count in the other's peak.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` and returns its result with the heap's peak above what was live when it began.
fn peak_heap_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = f();
    (result, PEAK.load(Ordering::Relaxed) - before)
}

const VALUE: usize = 1 << 20;
const VALUES: u32 = 64;
const KEPT: u64 = 3;

fn key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "memory").expect("valid key")
}

/// 64 values of 1 MiB saved, then loaded into a cache that keeps 3 of them: the heap's peak
/// during the load stays well under the file's size (the old one-pass load held all of it),
/// and the three kept are the ones ranked highest.
#[test]
fn a_load_into_a_smaller_cache_holds_what_it_keeps_not_the_file() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.snap");
    {
        let cache = Cache::builder().max_bytes(1 << 30).build().expect("builds");
        for i in 0..VALUES {
            cache.insert(key(i), vec![i as u8; VALUE]).expect("inserts");
        }
        // The last three are read, so they rank highest; file order does not favour them.
        for i in VALUES - 3..VALUES {
            assert!(cache.get(&key(i)).is_some());
        }
        cache.save_snapshot(&path).expect("saves");
    }
    let file_bytes = std::fs::metadata(&path).expect("stat").len();

    let small = Cache::builder()
        .max_bytes(1 << 30)
        .max_entries(KEPT)
        .build()
        .expect("builds");
    let (report, peak) = peak_heap_during(|| small.load_snapshot(&path).expect("loads"));

    assert_eq!(
        (report.restored, report.left_out),
        (KEPT, u64::from(VALUES) - KEPT)
    );
    for i in VALUES - 3..VALUES {
        assert!(small.contains_key(&key(i)), "entry {i} ranks highest");
    }
    eprintln!("peak heap {peak} bytes during the load of a {file_bytes}-byte file");
    let kept = KEPT * CacheEntry::charged_size(VALUE) as u64;
    // What is kept, plus buffers: the read buffer, the skipped value chunk and the blocks
    // queued for the hash workers (two per worker, at most 8 workers, and those being
    // hashed), all 1 MiB.
    let buffers = (1 + 1 + 3 * 8) << 20;
    assert!(
        (peak as u64) < kept + buffers && (peak as u64) < file_bytes / 2,
        "peak heap {peak} bytes during a load of a {file_bytes}-byte file keeping {kept} bytes"
    );
}

/// Small records, many of them.
const SMALL: u32 = 100_000;

/// 100 000 records of 8-byte values loaded into a cache that keeps 10: what the load holds
/// per record it does not keep is its heads. The first pass keeps only what the choice
/// needs (ranking inputs, TTL, length: 32 bytes) and drops it once the choice is made; the
/// second pass's full heads (key, TTL, rank, length, offset) and its duplicate-key check
/// are then the peak. Printed for the record.
#[test]
fn a_load_of_many_small_records_holds_one_set_of_heads() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("small.snap");
    {
        let cache = Cache::builder().max_bytes(1 << 30).build().expect("builds");
        for i in 0..SMALL {
            cache
                .insert(key(i), i.to_le_bytes().repeat(2))
                .expect("inserts");
        }
        cache.save_snapshot(&path).expect("saves");
    }
    let small = Cache::builder()
        .max_bytes(1 << 30)
        .max_entries(10)
        .build()
        .expect("builds");
    let (report, peak) = peak_heap_during(|| small.load_snapshot(&path).expect("loads"));
    assert_eq!(report.restored, 10);
    let per_record = peak as f64 / f64::from(SMALL);
    eprintln!("peak heap {peak} bytes during the load: {per_record:.1} bytes per record");
    // The second pass's heads (a record's is about 110 bytes, up to twice that while its
    // list grows) and its duplicate-key check are about 200 bytes a record; holding the first
    // pass's full heads beside them, as loads did until session 9, made it about 350.
    assert!(
        per_record < 280.0,
        "{per_record:.1} bytes per record: more than one set of heads"
    );
}
