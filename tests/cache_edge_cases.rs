//! An adversarial audit of the cache engine's promises (issue #3), through the public API.
//!
//! Each test is a probe that tried to make the engine break one promise at an edge the other
//! suites (`tests/cache_engine/`, `src/cache/tests.rs`) do not reach: listeners that panic or
//! call back into the cache (during loads too), inserts over expired values, TTLs under a
//! microsecond, updates that grow in a full cache, one entry spread over many shards, loads
//! that race inserts and clears, error types that differ between a leader and its waiters,
//! snapshots of expired values, clocks that step back, and allocation on a hit, and loads that
//! wait on each other in a cycle across threads (and across caches). The first seven found
//! bugs, now fixed, as did the cycles (within one cache, then through two); the others pass
//! and stay as coverage. Later probes — the metadata of an insert over an expired value,
//! `clear` of expired values, full caches that still hold expired entries — found bugs too,
//! now fixed. A property test at the
//! end rebuilds the cache's contents from the listener's reports alone and checks them, and
//! the counters, against the cache after every operation.
//!
//! This binary installs a counting global allocator (per thread, so tests running in parallel
//! do not disturb each other's counts) for the hit-allocation test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use memocache::snapshot::{Snapshot, read_snapshot_file};
use memocache::{
    Cache, CacheEntry, CacheError, CacheKey, Clock, LoadError, ManualClock, RemovalCause,
    Timestamp, Ttl,
};
use parking_lot::Mutex;

#[cfg(target_os = "linux")]
mod spawn_support;

fn key(i: u64) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "audit").expect("valid prefix")
}

fn secs(s: u64) -> Ttl {
    Ttl::seconds(s).expect("positive")
}

/// A 1 MiB cache on `clock`.
fn cache_on(clock: &ManualClock) -> Cache {
    Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .expect("valid")
}

/// Every removal the listener reports, in order.
type Removals = Arc<Mutex<Vec<(CacheKey, Bytes, RemovalCause)>>>;

/// A 1 MiB cache on `clock` whose listener records every removal.
fn recording_cache(clock: &ManualClock) -> (Cache, Removals) {
    let events: Removals = Arc::default();
    let sink = Arc::clone(&events);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .eviction_listener(move |k, v, cause| sink.lock().push((*k, v.clone(), cause)))
        .build()
        .expect("valid");
    (cache, events)
}

/// How long a test waits for what can only fail to come by a deadlock or a lost wake-up.
/// Far above what the work takes (milliseconds), so that a loaded machine cannot fail a run
/// that is only slow; a passing run never waits it out.
const DEADLOCK_AFTER: Duration = Duration::from_secs(60);

/// Waits for `condition`, failing after [`DEADLOCK_AFTER`].
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLOCK_AFTER;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::yield_now();
    }
}

/// Runs `f` on another thread and returns its result, failing instead of hanging if it does
/// not finish within [`DEADLOCK_AFTER`] (a deadlock).
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, result) = mpsc::channel();
    thread::spawn(move || {
        let _ = send.send(f());
    });
    result
        .recv_timeout(DEADLOCK_AFTER)
        .unwrap_or_else(|_| panic!("{what} did not finish within {DEADLOCK_AFTER:?}: deadlock"))
}

/// `cache.get_or_insert_with(key, || value)` on a thread of its own, failing on a deadlock as
/// [`within_deadline`] does.
fn load_within_deadline(
    cache: &Cache,
    what: &str,
    key: CacheKey,
    value: &'static str,
) -> Result<Bytes, CacheError> {
    let cache = cache.clone();
    within_deadline(what, move || cache.get_or_insert_with(key, || value))
}

/// Joins `workers`, failing if one panicked or if they do not all finish within
/// [`DEADLOCK_AFTER`].
fn join_within_deadline(workers: Vec<thread::JoinHandle<()>>) {
    let joined = within_deadline("the workers", move || {
        workers
            .into_iter()
            .map(|worker| worker.join().is_ok())
            .collect::<Vec<_>>()
    });
    assert!(joined.iter().all(|&ok| ok), "a worker panicked");
}

/// Joins `workers`, failing if one panicked or if `progress` (which they advance as they
/// work) stands still for 10 s (a deadlock). For stress tests whose total time is the
/// machine's business: 8 threads whose loaders yield the CPU took 0.26–14 s for the same
/// work on a loaded 2-core machine (0.2 s of CPU each time), so a bound on the total failed
/// runs that were slow, not stuck.
fn join_while_progressing(workers: Vec<thread::JoinHandle<()>>, progress: &AtomicU64) {
    let (mut seen, mut since) = (progress.load(Ordering::SeqCst), Instant::now());
    while !workers.iter().all(|worker| worker.is_finished()) {
        let now = progress.load(Ordering::SeqCst);
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "no progress for 10 s after {seen} steps: deadlock"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        workers.into_iter().all(|worker| worker.join().is_ok()),
        "a worker panicked"
    );
}

/// A load of `key(id)` that blocks in its loader until released, so that a test can act while
/// it is in flight.
struct HeldLoad {
    running: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl HeldLoad {
    fn new() -> HeldLoad {
        HeldLoad {
            running: Arc::new(AtomicBool::new(false)),
            release: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A loader that signals it runs, waits for the release, then returns `load()`.
    fn loader<T, L: FnOnce() -> T>(&self, load: L) -> impl FnOnce() -> T + use<T, L> {
        let (running, release) = (Arc::clone(&self.running), Arc::clone(&self.release));
        move || {
            running.store(true, Ordering::SeqCst);
            wait_until("the load is released", || release.load(Ordering::SeqCst));
            load()
        }
    }

    fn wait_running(&self) {
        wait_until("the loader runs", || self.running.load(Ordering::SeqCst));
    }

    fn release(&self) {
        self.release.store(true, Ordering::SeqCst);
    }
}

/// Bug: the leader stored its value — which runs the listener — before it landed its flight,
/// so a panicking listener unwound past the landing: the waiters waited for ever, and the key
/// stayed claimed, so every later load of it (once evicted) hung too.
#[test]
fn a_panicking_listener_during_a_load_strands_no_waiter_and_the_key_stays_loadable() {
    let armed = Arc::new(AtomicBool::new(false));
    let trip = Arc::clone(&armed);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(1)
        .shards(1)
        .eviction_listener(move |_, _, _| {
            if trip.swap(false, Ordering::SeqCst) {
                panic!("listener exploded");
            }
        })
        .build()
        .expect("valid");
    cache.insert(key(0), "evicted by the load").expect("fits");

    let held = HeldLoad::new();
    let leader = {
        let cache = cache.clone();
        let load = held.loader(move || {
            // The store that follows evicts key 0: the listener panics then.
            armed.store(true, Ordering::SeqCst);
            "loaded"
        });
        thread::spawn(move || cache.get_or_insert_with(key(1), load))
    };
    held.wait_running();
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || cache.get_or_insert_with(key(1), || "waiter's own"))
    };
    wait_until("the waiter missed", || cache.stats().misses >= 2);
    held.release();

    let payload = leader
        .join()
        .expect_err("the panic reaches the leader's caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"listener exploded"));
    let got = within_deadline("the waiter", move || waiter.join());
    assert_eq!(
        got.expect("no panic").expect("stored").as_ref(),
        b"loaded",
        "the value was stored before the listener ran"
    );
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"loaded"[..]));

    // Evicted, the key loads again: nobody holds a claim on it.
    cache.insert(key(2), "evicts key 1").expect("fits");
    let again = load_within_deadline(&cache, "a later load", key(1), "again");
    assert_eq!(again.expect("stored").as_ref(), b"again");
}

/// Bug: a listener that reloads evicted keys — a refresh-on-evict pattern, and the builder
/// says a listener "may use the cache" — deadlocked: the leader ran the listener while it
/// still held its claim, so a reload that evicted the key being led back out waited for that
/// claim, on the thread holding it.
#[test]
fn a_listener_that_reloads_evicted_keys_does_not_deadlock_a_load() {
    let slot: Arc<Mutex<Option<Cache>>> = Arc::default();
    let handle = Arc::clone(&slot);
    let reloads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reloads);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(1)
        .shards(1)
        .eviction_listener(move |evicted, _, cause| {
            // Bounded: with room for one entry, reloads would evict each other for ever.
            if cause == RemovalCause::Size && counted.fetch_add(1, Ordering::SeqCst) < 2 {
                let cache = handle.lock().clone().expect("set");
                cache
                    .get_or_insert_with(*evicted, || "reloaded")
                    .expect("fits");
            }
        })
        .build()
        .expect("valid");
    *slot.lock() = Some(cache.clone());
    cache.insert(key(0), "first").expect("fits");

    // Loading key 1 evicts key 0; its reload evicts key 1; its reload evicts key 0.
    let loaded = load_within_deadline(&cache, "the load", key(1), "loaded");
    assert_eq!(loaded.expect("stored").as_ref(), b"loaded");
    assert_eq!(reloads.load(Ordering::SeqCst), 3);
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"reloaded"[..]));
    assert_eq!(cache.stats().loads, 3);
    *slot.lock() = None; // breaks the cache → listener → cache cycle
}

/// Clears a 4-shard cache of 100 entries whose listener (on `clock`) counts each removal and
/// then calls `panic`, and checks that every shard was cleared and every removal reported all
/// the same. Returns the cache, the count of removals reported, and the panic that reached
/// the caller.
fn clear_under_a_panicking_listener(
    clock: &ManualClock,
    panic: fn(),
) -> (Cache, Arc<AtomicUsize>, Box<dyn std::any::Any + Send>) {
    let reported = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&reported);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .shards(4)
        .clock(clock.clone())
        .eviction_listener(move |_, _, _| {
            seen.fetch_add(1, Ordering::SeqCst);
            panic();
        })
        .build()
        .expect("valid");
    for i in 0..100 {
        cache.insert(key(i), "v").expect("fits");
    }
    let cleared = panic::catch_unwind(AssertUnwindSafe(|| cache.clear()));
    let payload = cleared.expect_err("the panic reaches the caller");
    assert_eq!(
        (cache.len(), cache.size_bytes()),
        (0, 0),
        "every shard cleared"
    );
    assert_eq!(
        reported.load(Ordering::SeqCst),
        100,
        "every removal reported"
    );
    (cache, reported, payload)
}

/// Bug: a panicking listener unwound out of `clear` and `purge_expired` after the first shard,
/// leaving the other shards uncleared (or unpurged) and the other removals unreported.
#[test]
fn a_panicking_listener_does_not_half_apply_clear_or_purge() {
    let clock = ManualClock::new();
    let (cache, reported, payload) = clear_under_a_panicking_listener(&clock, || {
        panic!("listener exploded");
    });
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"listener exploded"));
    assert_eq!(cache.stats().removals_explicit, 100);

    for i in 0..100 {
        cache.insert_with_ttl(key(i), "v", secs(1)).expect("fits");
    }
    clock.advance(Duration::from_secs(2));
    let purged = panic::catch_unwind(AssertUnwindSafe(|| cache.purge_expired()));
    assert!(purged.is_err(), "the panic reaches the caller");
    assert_eq!(
        (cache.len(), cache.size_bytes()),
        (0, 0),
        "every shard purged"
    );
    assert_eq!(reported.load(Ordering::SeqCst), 200);
    assert_eq!(cache.stats().evictions_expired, 100);
}

/// Bug: a panicking listener killed the sweeper thread, so expiry silently stopped for the
/// rest of the cache's life.
#[test]
fn the_sweeper_survives_a_panicking_listener() {
    sweeper_outlives(|_, _, _| panic!("listener exploded"));
}

/// Bug: the sweeper dropped the payload of a listener's panic itself, so a payload whose drop
/// panics (the host's value) started a second panic there that ended the sweeper thread, and
/// expiry stopped for the rest of the cache's life, as it did before the sweeper caught
/// listener panics at all.
#[test]
fn the_sweeper_survives_a_panic_payload_whose_drop_panics() {
    sweeper_outlives(|_, _, _| panic::panic_any(PanicsWhenDropped));
}

/// Three rounds of an entry expiring: the sweeper, hearing `listener` panic at each, purges
/// every one.
fn sweeper_outlives(listener: impl Fn(&CacheKey, &Bytes, RemovalCause) + Send + Sync + 'static) {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .sweep_interval(Duration::from_millis(1))
        .eviction_listener(listener)
        .build()
        .expect("valid");
    for round in 0..3 {
        cache
            .insert_with_ttl(key(round), "v", secs(1))
            .expect("fits");
        clock.advance(Duration::from_secs(2));
        wait_until("the sweeper purges", || cache.is_empty());
    }
    assert_eq!(cache.stats().evictions_expired, 3);
}

/// Bug: an insert over an expired value that no purge had removed yet counted as an update
/// and told the listener `Replaced`, although `CacheStats::updates` counts inserts "that
/// replaced a live value" and no reader could see the old one.
#[test]
fn inserting_over_an_expired_value_reports_it_expired_and_counts_an_insert() {
    let clock = ManualClock::new();
    let (cache, events) = recording_cache(&clock);
    cache.insert_with_ttl(key(1), "old", secs(1)).expect("fits");
    clock.advance(Duration::from_secs(1));
    cache.insert(key(1), "live").expect("fits"); // at the deadline: still live
    clock.advance(Duration::from_secs(5));
    cache
        .insert_with_ttl(key(1), "expired", secs(1))
        .expect("fits");
    clock.advance(Duration::from_secs(2));
    cache.insert(key(1), "new").expect("fits");

    assert_eq!(
        *events.lock(),
        vec![
            (key(1), Bytes::from("old"), RemovalCause::Replaced),
            (key(1), Bytes::from("live"), RemovalCause::Replaced),
            (key(1), Bytes::from("expired"), RemovalCause::Expired),
        ]
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.inserts, stats.updates, stats.evictions_expired),
        (2, 2, 1)
    );
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"new"[..]));
    assert_eq!(cache.size_bytes(), CacheEntry::charged_size(3) as u64);
}

/// A value another leader stores between a get-or-insert's miss and its claim on the key is
/// returned without running the loader again. Here the other leader is the eviction
/// listener, which the miss calls when the value it found had expired, before it claims the
/// key. (A leader looks the key up again only if anything was stored in the shard since its
/// miss: the listener's store must count.)
#[test]
fn a_value_loaded_between_the_miss_and_the_claim_is_returned_without_loading_again() {
    let clock = ManualClock::new();
    let handle: Arc<std::sync::OnceLock<Cache>> = Arc::default();
    let listener_handle = Arc::clone(&handle);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .eviction_listener(move |k, _, cause| {
            if cause == RemovalCause::Expired {
                let cache = listener_handle.get().expect("set before the first removal");
                cache.get_or_insert_with(*k, || "fresh").expect("fits");
            }
        })
        .build()
        .expect("valid");
    handle.set(cache.clone()).expect("set once");
    cache.insert_with_ttl(key(1), "old", secs(1)).expect("fits");
    clock.advance(Duration::from_secs(2));

    let loaded = cache
        .get_or_insert_with(key(1), || -> Bytes {
            panic!("the listener loaded the key")
        })
        .expect("fits");
    assert_eq!(&loaded[..], b"fresh");
    let stats = cache.stats();
    assert_eq!(
        (stats.loads, stats.misses, stats.evictions_expired),
        (1, 2, 1)
    );
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"fresh"[..]));
}

/// Bug: an insert over an expired value not yet purged is counted as an insert, but it kept
/// the dead value's record: [`Cache::entry`] reported the dead value's reads as the new value's
/// `access_count`, and the eviction policy credited the new value with the dead one's hits and
/// place. The same insert after a read had removed the dead value started from nothing:
/// what the entry reports must not depend on whether a purge came first.
#[test]
fn an_insert_over_an_unpurged_expired_value_starts_with_no_reads() {
    let clock = ManualClock::new();
    let (cache, _) = recording_cache(&clock);
    for k in [key(1), key(2)] {
        cache.insert_with_ttl(k, "old", secs(1)).expect("fits");
        for _ in 0..3 {
            assert!(cache.get(&k).is_some());
        }
    }
    clock.advance(Duration::from_secs(2));
    // key(2)'s dead value is removed by a read first; key(1)'s is still stored.
    assert_eq!(cache.get(&key(2)), None);
    for k in [key(1), key(2)] {
        cache.insert(k, "new").expect("fits");
    }
    let unpurged = cache.entry(&key(1)).expect("live");
    let purged = cache.entry(&key(2)).expect("live");
    assert_eq!(
        unpurged.access_count(),
        0,
        "the dead value's reads were kept"
    );
    assert_eq!(
        (
            unpurged.created_at(),
            unpurged.accessed_at(),
            unpurged.ttl()
        ),
        (purged.created_at(), purged.accessed_at(), purged.ttl())
    );
    assert_eq!(purged.access_count(), 0);
}

/// Bug: `clear` reported (and counted) an expired value not yet purged as `Removed`, where
/// `remove`, `remove_if`, a read or an insert of its key, a purge and an eviction all report
/// it as `Expired`: the cause of one entry's removal depended on the call that removed it.
#[test]
fn clear_reports_an_unpurged_expired_value_as_expired() {
    let clock = ManualClock::new();
    let (cache, events) = recording_cache(&clock);
    cache
        .insert_with_ttl(key(1), "dead", secs(1))
        .expect("fits");
    cache.insert(key(2), "live").expect("fits");
    clock.advance(Duration::from_secs(2));
    cache.clear();
    let mut seen = events.lock().clone();
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        seen,
        vec![
            (key(1), Bytes::from("dead"), RemovalCause::Expired),
            (key(2), Bytes::from("live"), RemovalCause::Removed),
        ]
    );
    let stats = cache.stats();
    assert_eq!((stats.evictions_expired, stats.removals_explicit), (1, 1));
    assert!(cache.is_empty());
}

/// A cache of `max_entries` entries and `max_bytes` bytes in `shards` shards, on `clock`,
/// whose listener records every removal.
fn full_recording_cache(
    clock: &ManualClock,
    max_bytes: u64,
    max_entries: u64,
    shards: usize,
) -> (Cache, Removals) {
    let events: Removals = Arc::default();
    let sink = Arc::clone(&events);
    let cache = Cache::builder()
        .max_bytes(max_bytes)
        .max_entries(max_entries)
        .shards(shards)
        .clock(clock.clone())
        .eviction_listener(move |k, v, cause| sink.lock().push((*k, v.clone(), cause)))
        .build()
        .expect("valid");
    (cache, events)
}

/// Bug: a full cache chose its victims by the eviction policy alone, so it evicted live
/// entries for size (reported `Size`) while expired ones, not yet purged, kept their place
/// and their budget — in the inserter's own shard and in the others. Now the first insert
/// of each tick of the expiry wheel that must evict first removes every expired entry.
#[test]
fn a_full_cache_evicts_expired_entries_before_live_ones() {
    let clock = ManualClock::new();
    let (cache, events) = full_recording_cache(&clock, 1 << 20, 8, 4);
    for i in 0..4 {
        cache
            .insert_with_ttl(key(i), "dead", secs(1))
            .expect("fits");
        cache.insert(key(100 + i), "live").expect("fits");
    }
    clock.advance(Duration::from_secs(5));
    for i in 0..4 {
        cache.insert(key(200 + i), "new").expect("fits");
    }
    let mut seen = events.lock().clone();
    seen.sort_by_key(|event| event.0);
    let mut dead: Vec<_> = (0..4)
        .map(|i| (key(i), Bytes::from("dead"), RemovalCause::Expired))
        .collect();
    dead.sort_by_key(|event| event.0);
    assert_eq!(seen, dead);
    for i in 0..4 {
        assert!(
            cache.contains_key(&key(100 + i)),
            "live key {i} was evicted"
        );
        assert!(cache.contains_key(&key(200 + i)));
    }
    let stats = cache.stats();
    assert_eq!((stats.evictions_size, stats.evictions_expired), (0, 4));
}

/// Bug: the once-a-tick claim of the purge before evicting started as if tick 0 had been
/// purged, so no insert in the first tick of the clock (its first 2^30 ns, about 1.07 s:
/// the coarse clock's epoch is the process's first read of it) purged: a full cache evicted
/// live entries for size while entries expired within that second kept their room.
#[test]
fn a_full_cache_evicts_expired_entries_first_in_the_clocks_first_tick() {
    let clock = ManualClock::new();
    let (cache, events) = full_recording_cache(&clock, 1 << 20, 8, 4);
    let tenth = Ttl::new(Duration::from_millis(100)).expect("positive");
    for i in 0..4 {
        cache.insert_with_ttl(key(i), "dead", tenth).expect("fits");
        cache.insert(key(100 + i), "live").expect("fits");
    }
    // Past the deadlines, still in tick 0.
    clock.advance(Duration::from_millis(500));
    for i in 0..4 {
        cache.insert(key(200 + i), "new").expect("fits");
    }
    let causes: Vec<RemovalCause> = events.lock().iter().map(|event| event.2).collect();
    assert_eq!(causes, [RemovalCause::Expired; 4]);
    for i in 0..4 {
        assert!(
            cache.contains_key(&key(100 + i)),
            "live key {i} was evicted"
        );
    }
}

/// The purge before evicting comes in every later tick of the expiry wheel, not only the
/// first: the scenario above, played again in later ticks, goes the same way each time.
#[test]
fn a_full_cache_evicts_expired_entries_first_in_every_later_tick() {
    expired_entries_go_first_in_three_later_ticks(&ManualClock::new());
}

/// Bug: past 2^62 ns on the cache's clock (about 146 years; a `ManualClock` may stand
/// anywhere up to its end at 584) the expiry wheel's 32-bit tick stops at its last value,
/// and the once-a-tick claim of the purge before evicting read that tick: after one purge
/// there, no tick was ever later, so from the second round on a full cache evicted live
/// entries for size while expired ones kept their room. The claim counts ticks in 64 bits.
#[test]
fn a_full_cache_evicts_expired_entries_first_near_the_clocks_end() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_nanos(1 << 62));
    expired_entries_go_first_in_three_later_ticks(&clock);
}

/// Three rounds, each in a later tick of the expiry wheel, of a full cache on `clock` holding
/// expired and live entries: each round's new inserts evict the expired ones, never a live one.
fn expired_entries_go_first_in_three_later_ticks(clock: &ManualClock) {
    let (cache, events) = full_recording_cache(clock, 1 << 20, 8, 4);
    for round in 0..3 {
        cache.clear();
        events.lock().clear();
        let base = 1_000 * round;
        for i in 0..4 {
            cache
                .insert_with_ttl(key(base + i), "dead", secs(1))
                .expect("fits");
            cache.insert(key(base + 100 + i), "live").expect("fits");
        }
        // Past the deadlines and into a later tick (a tick is 2^30 ns).
        clock.advance(Duration::from_secs(5));
        for i in 0..4 {
            cache.insert(key(base + 200 + i), "new").expect("fits");
        }
        let causes: Vec<RemovalCause> = events.lock().iter().map(|event| event.2).collect();
        assert_eq!(causes, [RemovalCause::Expired; 4], "round {round}");
        for i in 0..4 {
            assert!(
                cache.contains_key(&key(base + 100 + i)),
                "round {round}: live key {i}"
            );
        }
    }
}

/// The same for an update that grows in a cache full by bytes: the expired entry makes the
/// room, not a live one.
#[test]
fn a_growing_update_in_a_full_cache_evicts_an_expired_entry_before_a_live_one() {
    let clock = ManualClock::new();
    let charge = CacheEntry::charged_size(10) as u64;
    let (cache, events) = full_recording_cache(&clock, 3 * charge, u64::MAX, 1);
    let ten = "0123456789";
    cache.insert_with_ttl(key(1), ten, secs(1)).expect("fits");
    cache.insert(key(2), ten).expect("fits");
    cache.insert(key(3), ten).expect("fits");
    clock.advance(Duration::from_secs(5));
    cache.insert(key(2), "01234567890123456789").expect("fits");
    assert_eq!(
        *events.lock(),
        vec![
            (key(1), Bytes::from(ten), RemovalCause::Expired),
            (key(2), Bytes::from(ten), RemovalCause::Replaced),
        ]
    );
    assert!(cache.contains_key(&key(3)), "a live entry was evicted");
    assert!(cache.size_bytes() <= cache.max_bytes());
}

/// Bug: a TTL under a microsecond (valid: `Ttl::new` takes any positive duration) is kept as
/// zero microseconds, and `Cache::entry` then reported the entry as never expiring.
#[test]
fn a_sub_microsecond_ttl_is_reported_with_its_deadline() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(3));
    let cache = cache_on(&clock);
    let ttl = Ttl::new(Duration::from_nanos(500)).expect("positive");
    cache.insert_with_ttl(key(1), "brief", ttl).expect("fits");
    let deadline = Timestamp::from_nanos(3_000_000_500);
    let entry = cache.entry(&key(1)).expect("live");
    assert_eq!(entry.expires_at(), Some(deadline));
    assert!(entry.ttl().is_some());
    clock.advance(Duration::from_nanos(500));
    assert!(cache.contains_key(&key(1)), "live at its deadline");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(cache.get(&key(1)), None);
}

/// Bug: a deadline past the clock's end of time saturated to `u64::MAX`, the deadline that
/// means "no TTL": an entry inserted with `Ttl::MAX` was reported by `Cache::entry` as never
/// expiring, and no purge ever removed it. It now expires at the last nanosecond before the
/// end of time, and reports the TTL it was stored with up to that deadline, rounded up to the
/// record's unit (minutes, for TTLs of 34 years and more) as far as its creation time allows.
#[test]
fn ttl_max_is_reported_as_a_ttl_and_still_expires() {
    for start in [Duration::ZERO, Duration::from_secs(3_600)] {
        let clock = ManualClock::new();
        clock.advance(start);
        let cache = cache_on(&clock);
        cache
            .insert_with_ttl(key(1), "long", Ttl::MAX)
            .expect("fits");
        let entry = cache.entry(&key(1)).expect("live");
        let ttl = entry.ttl().expect("Ttl::MAX is a TTL, not none");
        let end = Timestamp::from_nanos(u64::MAX - 1);
        assert_eq!(entry.expires_at(), Some(end), "from {start:?}");
        // What is left to the end of time, and under one minute of rounding, which moves the
        // reported creation time back (never past the clock's epoch), not forward.
        let left = end.saturating_duration_since(Timestamp::ZERO.saturating_add(start));
        assert!(ttl.as_duration() >= left, "{ttl:?} from {start:?}");
        assert!(
            ttl.as_duration() - left < Duration::from_secs(60),
            "{ttl:?} from {start:?}"
        );
        assert!(entry.created_at() <= clock.now(), "from {start:?}");
        clock.advance(Duration::MAX);
        assert!(!cache.contains_key(&key(1)), "expired at the end of time");
        assert_eq!(
            cache.purge_expired(),
            1,
            "the expiry wheel knows its deadline"
        );
    }
}

/// Bug: a record keeps an entry's TTL in a coarse unit beyond 17.9 minutes and derives the
/// creation time as the exact deadline minus it. The TTL was rounded down, so the creation
/// time came out late, after the insert: by up to a minute for `Ttl::MAX` (33.7 s from a clock
/// at zero), by 0.891 s for a TTL of 1,234,567.891 s. `Cache::entry` then reported a value
/// created, and last read, in the future, and reads did not move its `accessed_at` until the
/// clock caught up. The TTL is now rounded up: the creation time is early by under one unit,
/// never late, and the deadline stays exact.
#[test]
fn entry_times_of_long_and_odd_ttls_are_never_in_the_future() {
    let ttls = [
        Ttl::new(Duration::from_nanos(500)).expect("positive"),
        Ttl::new(Duration::from_nanos(1_234_567)).expect("positive"),
        Ttl::new(Duration::from_millis(1_234_567_891)).expect("positive"),
        Ttl::new(Duration::from_secs(40 * 365 * 86_400 + 30)).expect("positive"),
        Ttl::MAX,
    ];
    for start in [Duration::ZERO, Duration::from_secs(1_000)] {
        let clock = ManualClock::new();
        clock.advance(start);
        let cache = cache_on(&clock);
        for (i, &ttl) in ttls.iter().enumerate() {
            let now = clock.now();
            cache
                .insert_with_ttl(key(i as u64), "v", ttl)
                .expect("fits");
            let deadline = now
                .saturating_add(ttl.as_duration())
                .as_nanos()
                .min(u64::MAX - 1);
            let entry = cache.entry(&key(i as u64)).expect("live");
            let what = format!("{ttl:?} from {start:?}: {entry:?}");
            assert!(entry.created_at() <= now, "created late: {what}");
            assert!(entry.accessed_at() <= now, "read in the future: {what}");
            assert_eq!(
                entry.expires_at(),
                Some(Timestamp::from_nanos(deadline)),
                "{what}"
            );
            let unit = if ttl.as_duration() < Duration::from_secs(1_000) {
                Duration::from_micros(1)
            } else {
                Duration::from_secs(60)
            };
            let early = now.saturating_duration_since(entry.created_at());
            assert!(early < unit, "created {early:?} early: {what}");
        }
        // The long-lived ones, read later: read now, not in the future.
        clock.advance(Duration::from_secs(5));
        for i in 2..ttls.len() as u64 {
            cache.get(&key(i));
            let entry = cache.entry(&key(i)).expect("live");
            // To within the 1 ms `CacheEntry::accessed_at` promises, and never ahead.
            let behind = clock.now().saturating_duration_since(entry.accessed_at());
            assert!(entry.accessed_at() <= clock.now(), "{entry:?}");
            assert!(behind < Duration::from_millis(1), "{behind:?}: {entry:?}");
        }
    }
}

/// A snapshot of a `Ttl::MAX` entry restored later (where its deadline passes the end of
/// time again) comes back with a TTL too.
#[test]
fn a_restored_ttl_max_entry_keeps_a_ttl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(ManualClock::new())
        .build()
        .expect("valid");
    cache
        .insert_with_ttl(key(1), "long", Ttl::MAX)
        .expect("fits");
    cache.save_snapshot(&path).expect("saves");
    let later = ManualClock::new();
    later.advance(Duration::from_secs(86_400));
    let restored = Cache::builder()
        .max_bytes(1 << 20)
        .clock(later)
        .build()
        .expect("valid");
    assert_eq!(restored.load_snapshot(&path).expect("loads").restored, 1);
    let entry = restored.entry(&key(1)).expect("live");
    assert!(entry.ttl().is_some(), "restored as never expiring");
    assert_eq!(
        entry.expires_at(),
        Some(Timestamp::from_nanos(u64::MAX - 1))
    );
}

/// `remove_if` removes the live value only if the predicate accepts it, and records the
/// removal like `remove`; it never shows the predicate an absent or expired value.
#[test]
fn remove_if_removes_only_a_live_value_the_predicate_accepts() {
    let clock = ManualClock::new();
    let (cache, events) = recording_cache(&clock);
    cache.insert(key(1), "kept").expect("fits");
    assert_eq!(cache.remove_if(&key(1), |v| v == "other"), None);
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"kept"[..]));
    assert_eq!(
        cache.remove_if(&key(1), |v| v == "kept"),
        Some(Bytes::from("kept"))
    );
    assert!(!cache.contains_key(&key(1)));
    assert_eq!(cache.size_bytes(), 0);
    assert_eq!(
        cache.remove_if(&key(1), |_| panic!("called for an absent key")),
        None
    );
    cache.insert_with_ttl(key(2), "old", secs(1)).expect("fits");
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        cache.remove_if(&key(2), |_| panic!("called for an expired value")),
        None
    );
    assert_eq!(cache.len(), 0, "the expired value is removed, as by remove");
    assert_eq!(
        *events.lock(),
        vec![
            (key(1), Bytes::from("kept"), RemovalCause::Removed),
            (key(2), Bytes::from("old"), RemovalCause::Expired),
        ]
    );
}

/// Compare-and-remove under concurrency: threads store their own values under one key and
/// each removes the key only if it still holds its own value. A removal that checked and
/// removed in two steps would, when another thread stored between them, remove (and return)
/// that thread's value.
#[test]
fn remove_if_checks_and_removes_in_one_step_under_concurrency() {
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 20_000;
    let removed = Arc::new(AtomicU64::new(0));
    let heard = Arc::clone(&removed);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .eviction_listener(move |_, _, cause| {
            if cause == RemovalCause::Removed {
                heard.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .expect("valid");
    let start = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cache, start) = (cache.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut own_removed = 0u64;
                for round in 0..ROUNDS {
                    let mine = Bytes::from(format!("{t}:{round}"));
                    cache.insert(key(1), mine.clone()).expect("fits");
                    if let Some(value) = cache.remove_if(&key(1), |current| *current == mine) {
                        assert_eq!(value, mine, "thread {t} removed another thread's value");
                        own_removed += 1;
                    }
                }
                own_removed
            })
        })
        .collect();
    let total: u64 = threads
        .into_iter()
        .map(|t| t.join().expect("no thread panicked"))
        .sum();
    assert!(total > 0, "no removal succeeded");
    assert_eq!(
        removed.load(Ordering::Relaxed),
        total,
        "one report per removal"
    );
    let left = u64::from(cache.contains_key(&key(1)));
    assert_eq!(cache.len() as u64, left);
    let stats = cache.stats();
    assert_eq!(
        stats.inserts,
        total + left,
        "every removal was of a fresh insert"
    );
}

/// Bug: an update with a larger value in a full cache made room through the eviction policy,
/// which could choose the key being updated: its old value was reported as evicted for size
/// (not replaced), the update was counted as an insert, one more entry than the growth needed
/// was evicted, and the key lost its standing with the policy. Tried on every key of a full
/// cache of one shard and of four.
#[test]
fn a_growing_update_in_a_full_cache_replaces_the_value_and_evicts_only_others() {
    const KEYS: u64 = 40;
    for shards in [1, 4] {
        let budget = 10 * CacheEntry::charged_size(100) as u64;
        for pick in 0..10 {
            let events = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&events);
            let cache = Cache::builder()
                .max_bytes(budget)
                .shards(shards)
                .eviction_listener(move |k, v, cause| sink.lock().push((*k, v.len(), cause)))
                .build()
                .expect("valid");
            for i in 0..KEYS {
                cache.insert(key(i), vec![0u8; 100]).expect("fits");
            }
            let present: Vec<u64> = (0..KEYS).filter(|&i| cache.contains_key(&key(i))).collect();
            let Some(&updated) = present.get(pick) else {
                continue;
            };
            events.lock().clear();
            let before = cache.stats();
            cache.insert(key(updated), vec![1u8; 150]).expect("fits");

            let events = events.lock();
            let of_key: Vec<_> = events.iter().filter(|e| e.0 == key(updated)).collect();
            assert_eq!(
                of_key,
                [&(key(updated), 100, RemovalCause::Replaced)],
                "{shards} shards, key {updated}: {events:?}"
            );
            // 50 more bytes need exactly one victim of 100 bytes.
            let evicted = events.iter().filter(|e| e.2 == RemovalCause::Size).count();
            assert_eq!(evicted, 1, "{shards} shards, key {updated}: {events:?}");
            let stats = cache.stats();
            assert_eq!(stats.updates - before.updates, 1);
            assert_eq!(stats.inserts, before.inserts);
            assert_eq!(cache.get(&key(updated)).map(|v| v.len()), Some(150));
            let live: u64 = (0..KEYS)
                .filter_map(|i| cache.entry(&key(i)))
                .map(|e| e.size_bytes() as u64)
                .sum();
            assert_eq!(live, cache.size_bytes());
            assert!(cache.size_bytes() <= budget);
        }
    }
}

/// A listener that uses the cache — reads, inserts, removes, purges and loads — while three
/// threads insert, remove, clear and load: no deadlock, and the budget holds. (Before the fix
/// of the load path it could deadlock here, as above, depending on the interleaving.)
#[test]
fn a_listener_may_use_the_cache_from_many_threads() {
    let slot: Arc<Mutex<Option<Cache>>> = Arc::default();
    let handle = Arc::clone(&slot);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let own = [key(10_000), key(10_001), key(10_002)];
    let cache = Cache::builder()
        .max_bytes(20 * CacheEntry::charged_size(10) as u64)
        .shards(2)
        .eviction_listener(move |k, _, cause| {
            counted.fetch_add(1, Ordering::Relaxed);
            let Some(cache) = handle.lock().clone() else {
                return;
            };
            let _ = cache.get(k);
            let _ = cache.peek(k);
            let _ = cache.contains_key(k);
            cache.purge_expired();
            // Not for its own keys' evictions: two keys evicting each other would be a chain
            // with no end, run by the cache in a loop on this thread.
            if cause == RemovalCause::Size && !own.contains(k) {
                let _ = cache.insert(own[0], vec![0u8; 10]);
                let _ = cache.remove(&own[1]);
                let _ = cache.get_or_insert_with(own[2], || vec![1u8; 10]);
            }
        })
        .build()
        .expect("valid");
    *slot.lock() = Some(cache.clone());
    let workers: Vec<_> = (0..3u64)
        .map(|t| {
            let cache = cache.clone();
            thread::spawn(move || {
                for i in 0..2_000u64 {
                    let k = key(t * 100_000 + i % 60);
                    cache.insert(k, vec![0u8; 10]).expect("fits");
                    if i % 13 == 0 {
                        cache.remove(&k);
                    }
                    if i % 97 == 0 {
                        cache.clear();
                    }
                    cache
                        .get_or_insert_with(key(i % 30), || vec![2u8; 10])
                        .expect("fits");
                    assert!(cache.size_bytes() <= cache.max_bytes());
                }
            })
        })
        .collect();
    join_within_deadline(workers);
    *slot.lock() = None;
    assert!(calls.load(Ordering::Relaxed) > 1_000);
}

/// A panic payload whose own drop panics (the host's value, so the host's code).
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("the payload's drop panicked");
    }
}

/// A listener whose panics carry payloads that panic when dropped: `clear` still clears
/// every shard and reports every removal, and the first payload reaches the caller. Before,
/// the second payload was dropped inside the reporting loop, so its drop's panic unwound
/// out of the cache mid-`clear`, past the first payload — whose drop panicked too, which
/// aborts the process.
#[test]
fn a_listener_panic_payload_whose_drop_panics_does_not_cut_a_clear_short() {
    let (_, _, payload) = clear_under_a_panicking_listener(&ManualClock::new(), || {
        panic::panic_any(PanicsWhenDropped)
    });
    assert!(payload.is::<PanicsWhenDropped>());
    // Dropping it would panic here, in the test.
    std::mem::forget(payload);
}

/// A value's bytes whose owner panics when dropped, the first time of all those sharing the
/// flag: the host's code, run by `Bytes::from_owner` when the last handle goes. Only once, so
/// that a second panicking drop during the first one's unwinding cannot abort the process.
struct DropPanicsOnce(Arc<AtomicBool>);

impl AsRef<[u8]> for DropPanicsOnce {
    fn as_ref(&self) -> &[u8] {
        b"v"
    }
}

impl Drop for DropPanicsOnce {
    fn drop(&mut self) {
        if self.0.swap(false, Ordering::SeqCst) {
            panic!("the value's drop panicked");
        }
    }
}

impl DropPanicsOnce {
    /// A value whose drop panics the first time one sharing `flag` is dropped.
    fn value(flag: &Arc<AtomicBool>) -> Bytes {
        Bytes::from_owner(DropPanicsOnce(Arc::clone(flag)))
    }
}

/// `n` armed flags, one for each value a test gives its own.
fn armed_flags(n: usize) -> Vec<Arc<AtomicBool>> {
    (0..n).map(|_| Arc::new(AtomicBool::new(true))).collect()
}

/// Bug: a value whose drop panicked unwound out of `clear` and `purge_expired` while the first
/// shard's removals were dropped, leaving the other shards uncleared (or unpurged) and, with a
/// listener, the rest of that shard's removals unreported: the books were right for what had
/// been removed, but the call was half applied. Every shard is now done and every removal
/// reported, and the drop's panic reaches the caller after.
#[test]
fn a_value_whose_drop_panics_does_not_cut_a_clear_or_purge_short() {
    for listening in [false, true] {
        let clock = ManualClock::new();
        let reported = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&reported);
        let mut builder = Cache::builder()
            .max_bytes(1 << 20)
            .shards(4)
            .clock(clock.clone());
        if listening {
            builder = builder.eviction_listener(move |_, _, _| {
                seen.fetch_add(1, Ordering::SeqCst);
            });
        }
        let cache = builder.build().expect("valid");
        let armed = Arc::new(AtomicBool::new(false));
        let fill = |ttl: Option<Ttl>| {
            for i in 0..100 {
                let value = DropPanicsOnce::value(&armed);
                match ttl {
                    Some(ttl) => cache.insert_with_ttl(key(i), value, ttl),
                    None => cache.insert(key(i), value),
                }
                .expect("fits");
            }
            armed.store(true, Ordering::SeqCst);
        };
        let panicked = |call: &dyn Fn()| {
            let payload = panic::catch_unwind(AssertUnwindSafe(call)).expect_err("panics");
            assert_eq!(
                payload.downcast_ref::<&str>(),
                Some(&"the value's drop panicked"),
                "listening: {listening}"
            );
            assert_eq!(
                (cache.len(), cache.size_bytes()),
                (0, 0),
                "listening: {listening}: every shard done"
            );
        };

        fill(None);
        panicked(&|| cache.clear());
        assert_eq!(cache.stats().removals_explicit, 100);

        fill(Some(secs(1)));
        clock.advance(Duration::from_secs(2));
        panicked(&|| {
            cache.purge_expired();
        });
        assert_eq!(cache.stats().evictions_expired, 100);
        let heard = if listening { 200 } else { 0 };
        assert_eq!(
            reported.load(Ordering::SeqCst),
            heard,
            "every removal reported"
        );
    }
}

/// Bug: without a listener, an insert dropped the values it removed all together, as one
/// `Removed`, so a second value whose drop panicked, while the first one's panic unwound,
/// aborted the process ("panic in a destructor during cleanup"). One insert that must evict
/// removes several when it purges every shard of its expired entries (once a tick), or evicts
/// more than one entry to make room. Its values are now dropped one by one, each once, and
/// the first panic reaches the caller once the insert is done. Run in a child process, so
/// that the abort fails the test rather than the whole binary.
#[cfg(target_os = "linux")]
#[test]
fn an_insert_without_a_listener_survives_several_removed_values_whose_drops_panic() {
    if !spawn_support::in_child(
        "an_insert_without_a_listener_survives_several_removed_values_whose_drops_panic",
        1,
    ) {
        return;
    }
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(8)
        .shards(4)
        .clock(clock.clone())
        .build()
        .expect("valid");
    // A flag of its own for each value: every one's drop panics.
    let armed = armed_flags(8);
    for (i, flag) in (0..).zip(&armed) {
        let value = DropPanicsOnce::value(flag);
        cache.insert_with_ttl(key(i), value, secs(1)).expect("fits");
    }
    clock.advance(Duration::from_secs(2));
    // The cache is full: the insert purges the eight expired entries before it stores.
    let payload = panic::catch_unwind(AssertUnwindSafe(|| cache.insert(key(100), vec![1u8])))
        .expect_err("the drops' panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the value's drop panicked")
    );
    assert!(
        armed.iter().all(|flag| !flag.load(Ordering::SeqCst)),
        "every value dropped"
    );
    assert_eq!(cache.stats().evictions_expired, 8);
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.get(&key(100)).as_deref(), Some(&[1u8][..]));
    assert_eq!(
        cache.size_bytes(),
        CacheEntry::charged_size(1) as u64,
        "the books hold the new entry alone"
    );
}

/// A snapshot of live entries (key number, value, access count), saved now. Its types are
/// `#[non_exhaustive]`: it is read from a file a cache saved, and its public fields set.
fn snapshot_of(entries: Vec<(u64, Bytes, u64)>) -> Snapshot {
    let source = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    source.insert(key(0), "template").expect("fits");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("snap");
    source.save_snapshot(&path).expect("saves");
    let mut snapshot = read_snapshot_file(&path).expect("reads");
    let template = snapshot.entries.pop().expect("one entry");
    snapshot.entries = entries
        .into_iter()
        .map(|(i, value, access_count)| {
            let mut entry = template.clone();
            entry.key = key(i);
            entry.value = value;
            entry.access_count = access_count;
            entry
        })
        .collect();
    snapshot
}

/// Bug: a restore dropped the values it left out for want of room as they were, after it
/// had purged the expired entries to make room and before it restored anything: a value
/// whose drop panicked (a `Snapshot`'s entries are public, so its values may be the host's
/// `Bytes::from_owner`) unwound out of `restore_snapshot` with nothing restored, the
/// listener's panic during the purge lost, and the next such drop, during that unwinding,
/// aborted the process. Every value left out or superseded is now dropped one by one,
/// everything that fits is restored, and the first panic (the listener's) reaches the caller
/// after. Run in a child process, so that the abort fails the test rather than the whole
/// binary.
#[cfg(target_os = "linux")]
#[test]
fn a_restore_whose_left_out_values_panic_when_dropped_restores_what_fits() {
    if !spawn_support::in_child(
        "a_restore_whose_left_out_values_panic_when_dropped_restores_what_fits",
        1,
    ) {
        return;
    }
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(4)
        .shards(4)
        .clock(clock.clone())
        .eviction_listener(|_, _, cause| {
            if cause == RemovalCause::Expired {
                panic!("the listener panicked");
            }
        })
        .build()
        .expect("valid");
    for i in 0..4 {
        cache.insert_with_ttl(key(i), "old", secs(1)).expect("fits");
    }
    clock.advance(Duration::from_secs(2));
    // A flag of its own for each value: every one's drop panics. Keys 10..18, ranked by key;
    // an earlier copy of key 17, superseded by the last, is left out too.
    let armed = armed_flags(9);
    let mut entries = vec![(17, DropPanicsOnce::value(&armed[8]), 0)];
    entries.extend(
        (10..18)
            .zip(&armed)
            .map(|(i, flag)| (i, DropPanicsOnce::value(flag), i)),
    );
    let snapshot = snapshot_of(entries);
    // Eight live entries do not fit the four entries' room: the restore purges the four
    // expired ones (the listener panics) and stores the four most valuable.
    let payload = panic::catch_unwind(AssertUnwindSafe(|| {
        cache.restore_snapshot(snapshot, SystemTime::now())
    }))
    .expect_err("the first panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the listener panicked")
    );
    assert_eq!(cache.stats().evictions_expired, 4);
    assert_eq!(cache.len(), 4);
    for i in 14..18 {
        assert_eq!(cache.get(&key(i)).as_deref(), Some(&b"v"[..]), "key {i}");
    }
    let dropped: Vec<bool> = armed.iter().map(|f| !f.load(Ordering::SeqCst)).collect();
    assert_eq!(
        dropped,
        [true, true, true, true, false, false, false, false, true],
        "the values left out and the superseded copy dropped, the restored ones held"
    );
    // The restored values' drops, when the cache goes, are not this test's.
    for flag in &armed {
        flag.store(false, Ordering::SeqCst);
    }
}

/// Bug: a restored entry whose room another writer took between the restore's choice and
/// its store (here, the listener, told of the value an earlier entry replaced) is left out,
/// and its value's last handle was dropped as it was: a drop that panicked unwound out of
/// `restore_snapshot`, leaving the entries after it unrestored. It is now dropped under
/// `catch_unwind`, the rest restored, and the panic re-raised at the end.
#[test]
fn a_restore_goes_on_past_a_value_whose_store_failed_and_whose_drop_panics() {
    let slot: Arc<Mutex<Option<Cache>>> = Arc::default();
    let handle = Arc::clone(&slot);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(3)
        .eviction_listener(move |replaced, _, cause| {
            // Takes the one entry's room left once key 0's value is replaced.
            if *replaced == key(0) && cause == RemovalCause::Replaced {
                let cache = handle.lock().clone().expect("set");
                cache.insert(key(9), "f").expect("fits");
            }
        })
        .build()
        .expect("valid");
    *slot.lock() = Some(cache.clone());
    cache.insert(key(0), "a").expect("fits");
    cache.insert(key(2), "c").expect("fits");
    let armed = Arc::new(AtomicBool::new(true));
    // Stored least valuable first: key 0 (replacing, the listener then fills the room), then
    // key 1 (no room left: left out), then key 2 (replacing, needing no room).
    let snapshot = snapshot_of(vec![
        (0, Bytes::from_static(b"A"), 0),
        (1, DropPanicsOnce::value(&armed), 1),
        (2, Bytes::from_static(b"C"), 2),
    ]);
    let payload = panic::catch_unwind(AssertUnwindSafe(|| {
        cache.restore_snapshot(snapshot, SystemTime::now())
    }))
    .expect_err("the drop's panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the value's drop panicked")
    );
    assert!(!armed.load(Ordering::SeqCst), "key 1's value dropped");
    assert_eq!(cache.get(&key(1)), None);
    assert_eq!(cache.get(&key(0)).as_deref(), Some(&b"A"[..]));
    assert_eq!(cache.get(&key(9)).as_deref(), Some(&b"f"[..]));
    assert_eq!(
        cache.get(&key(2)).as_deref(),
        Some(&b"C"[..]),
        "the entry after it restored"
    );
    assert_eq!(cache.len(), 3);
    *slot.lock() = None;
}

/// Bug: dropping the last handle of a cache dropped the values it still stored all together,
/// with its shards: a value whose drop panicked unwound out of the drop, and a second one,
/// during that unwinding, aborted the process. They are now dropped one by one and the first
/// panic is re-raised once all are; a cache dropped while its thread already unwinds from
/// another panic (where a second panic let out would abort) drops them all and lets that
/// panic go on alone. The listener hears of none of them: a dropped cache reports nothing.
/// Run in a child process, so that the abort fails the test rather than the whole binary.
#[cfg(target_os = "linux")]
#[test]
fn dropping_a_cache_whose_values_panic_when_dropped_drops_every_value() {
    if !spawn_support::in_child(
        "dropping_a_cache_whose_values_panic_when_dropped_drops_every_value",
        1,
    ) {
        return;
    }
    let heard = Arc::new(AtomicUsize::new(0));
    // A cache of eight values over four shards, a flag of its own for each value: every
    // one's drop panics.
    let filled = || {
        let seen = Arc::clone(&heard);
        let cache = Cache::builder()
            .max_bytes(1 << 20)
            .shards(4)
            .sweep_interval(Duration::from_secs(3600))
            .eviction_listener(move |_, _, _| {
                seen.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .expect("valid");
        let armed = armed_flags(8);
        for (i, flag) in (0..).zip(&armed) {
            let value = DropPanicsOnce::value(flag);
            cache.insert(key(i), value).expect("fits");
        }
        (cache, armed)
    };
    let dropped =
        |armed: &[Arc<AtomicBool>]| armed.iter().filter(|f| !f.load(Ordering::SeqCst)).count();

    let (cache, armed) = filled();
    let other = cache.clone();
    drop(other);
    assert_eq!(dropped(&armed), 0, "another handle keeps the values");
    let payload = panic::catch_unwind(AssertUnwindSafe(move || drop(cache)))
        .expect_err("the first drop's panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the value's drop panicked")
    );
    assert_eq!(dropped(&armed), 8, "every value dropped");

    let (cache, armed) = filled();
    let payload = panic::catch_unwind(AssertUnwindSafe(move || {
        let _dropped_while_unwinding = cache;
        panic!("the caller panicked");
    }))
    .expect_err("the caller's panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the caller panicked"));
    assert_eq!(dropped(&armed), 8, "every value dropped while unwinding");

    assert_eq!(
        heard.load(Ordering::SeqCst),
        0,
        "a dropped cache reports nothing"
    );
}

/// Bug: the listener, which a cache's last handle drops with the cache, holds the host's
/// values too (here a value it kept, whose drop panics). Dropped as a field of the cache,
/// after the handle's drop re-raised a stored value's panic, or while the handle was dropped
/// during unwinding from another panic, its drop's panic was let out during unwinding and
/// aborted the process. It is now dropped under `catch_unwind`, as the values are: its panic
/// is re-raised if it is the first, and dropped while the thread already unwinds.
#[cfg(target_os = "linux")]
#[test]
fn dropping_a_cache_whose_listener_panics_when_dropped_does_not_abort() {
    if !spawn_support::in_child(
        "dropping_a_cache_whose_listener_panics_when_dropped_does_not_abort",
        1,
    ) {
        return;
    }
    let built = || {
        let kept_flag = Arc::new(AtomicBool::new(true));
        let kept = DropPanicsOnce::value(&kept_flag);
        let cache = Cache::builder()
            .max_bytes(1 << 20)
            .eviction_listener(move |_, _, _| assert_eq!(kept.len(), 1))
            .build()
            .expect("valid");
        let stored_flag = Arc::new(AtomicBool::new(true));
        let stored = DropPanicsOnce::value(&stored_flag);
        cache.insert(key(1), stored).expect("fits");
        (cache, [kept_flag, stored_flag])
    };
    let (cache, flags) = built();
    let payload = panic::catch_unwind(AssertUnwindSafe(move || drop(cache)))
        .expect_err("the first drop's panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the value's drop panicked")
    );
    assert!(
        flags.iter().all(|f| !f.load(Ordering::SeqCst)),
        "both dropped"
    );

    let (cache, flags) = built();
    let payload = panic::catch_unwind(AssertUnwindSafe(move || {
        let _dropped_while_unwinding = cache;
        panic!("the caller panicked");
    }))
    .expect_err("the caller's panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the caller panicked"));
    assert!(
        flags.iter().all(|f| !f.load(Ordering::SeqCst)),
        "both dropped"
    );
}

/// Calls its closure when dropped: a host's value whose drop calls the cache.
struct CallsOnDrop(Box<dyn FnMut()>);

impl Drop for CallsOnDrop {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A host's value whose drop calls the cache (here: clears it, removes a key) may be dropped
/// while its thread unwinds from another panic. If a stored value's drop, or the listener,
/// panics during that call, the call cannot re-raise it: a panic let out of a drop during
/// unwinding aborts the process (it did). The call drops it instead, finishes its work, and
/// the first panic goes on alone.
#[test]
fn a_cache_call_made_while_unwinding_drops_a_value_or_listener_panic_instead_of_aborting() {
    if !spawn_support::in_child(
        "a_cache_call_made_while_unwinding_drops_a_value_or_listener_panic_instead_of_aborting",
        1,
    ) {
        return;
    }
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let armed = Arc::new(AtomicBool::new(true));
    let value = DropPanicsOnce::value(&armed);
    cache.insert(key(1), value).expect("fits");
    cache.insert(key(2), &b"plain"[..]).expect("fits");
    let clearing = cache.clone();
    let payload = panic::catch_unwind(AssertUnwindSafe(move || {
        let _clears = CallsOnDrop(Box::new(move || clearing.clear()));
        panic!("the caller panicked");
    }))
    .expect_err("the caller's panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the caller panicked"));
    assert!(!armed.load(Ordering::SeqCst), "the value was dropped");
    assert_eq!(
        (cache.len(), cache.size_bytes()),
        (0, 0),
        "the clear finished"
    );

    let heard = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&heard);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .eviction_listener(move |_, _, _| {
            seen.fetch_add(1, Ordering::SeqCst);
            panic!("the listener panicked");
        })
        .build()
        .expect("valid");
    cache.insert(key(1), &b"one"[..]).expect("fits");
    let removing = cache.clone();
    let payload = panic::catch_unwind(AssertUnwindSafe(move || {
        let _removes = CallsOnDrop(Box::new(move || {
            assert!(removing.remove(&key(1)).is_some());
        }));
        panic!("the caller panicked");
    }))
    .expect_err("the caller's panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the caller panicked"));
    assert_eq!(heard.load(Ordering::SeqCst), 1, "the listener was told");
    assert!(!cache.contains_key(&key(1)), "the removal was made");
}

/// Bug: a call made while its thread unwinds from another panic (from a host's `Drop`) that
/// removed a single value, with no listener, dropped that value as it was, so a drop of it
/// that panicked unwound out of the host's `Drop` during unwinding and aborted the process:
/// here an update replacing a value whose drop panics, and an insert evicting one. Such a
/// call now drops the value under `catch_unwind` and drops its panic, as it does for several
/// values or a listener.
#[test]
fn a_single_removal_made_while_unwinding_drops_a_value_panic_instead_of_aborting() {
    if !spawn_support::in_child(
        "a_single_removal_made_while_unwinding_drops_a_value_panic_instead_of_aborting",
        1,
    ) {
        return;
    }
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(1)
        .build()
        .expect("valid");
    for call in ["update", "evicting insert"] {
        let armed = Arc::new(AtomicBool::new(true));
        let value = DropPanicsOnce::value(&armed);
        cache.insert(key(1), value).expect("fits");
        let storing = cache.clone();
        let new_key = key(if call == "update" { 1 } else { 2 });
        let payload = panic::catch_unwind(AssertUnwindSafe(move || {
            let _stores = CallsOnDrop(Box::new(move || {
                storing.insert(new_key, &b"new"[..]).expect("fits");
            }));
            panic!("the caller panicked");
        }))
        .expect_err("the caller's panic goes on");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"the caller panicked"));
        assert!(
            !armed.load(Ordering::SeqCst),
            "{call}: the value was dropped"
        );
        assert_eq!(cache.get(&new_key).as_deref(), Some(&b"new"[..]), "{call}");
        assert_eq!(cache.len(), 1, "{call}");
        cache.clear();
    }
}

/// A listener that inserts into a full cache on every size eviction starts a chain: each
/// insert evicts, which calls the listener, which inserts. The cache reports the chain's
/// removals in a loop, not by nesting listener calls, so a 20,000-long chain runs on a
/// 256 KiB stack with listener calls never more than one deep. (Before, each round nested
/// one call deeper; three threads churning a small cache whose listener inserted overflowed
/// a 2 MiB stack, which aborts the process.)
#[test]
fn a_listener_that_refills_a_full_cache_runs_its_chain_in_a_loop_not_a_recursion() {
    const CHAIN: usize = 20_000;
    let slot: Arc<Mutex<Option<Cache>>> = Arc::default();
    let handle = Arc::clone(&slot);
    let heard = Arc::new(AtomicUsize::new(0));
    let (depth, deepest) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, inside, max_inside) =
        (Arc::clone(&heard), Arc::clone(&depth), Arc::clone(&deepest));
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(1)
        .eviction_listener(move |_, _, cause| {
            let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
            max_inside.fetch_max(now_inside, Ordering::SeqCst);
            let round = counted.fetch_add(1, Ordering::SeqCst) + 1;
            if cause == RemovalCause::Size && round < CHAIN {
                let cache = handle.lock().clone().expect("set before the first insert");
                cache
                    .insert(key(round as u64 + 1), vec![0u8; 10])
                    .expect("fits");
            }
            inside.fetch_sub(1, Ordering::SeqCst);
        })
        .build()
        .expect("valid");
    *slot.lock() = Some(cache.clone());
    let worker = thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            cache.insert(key(0), vec![0u8; 10]).expect("fits");
            cache.insert(key(1), vec![0u8; 10]).expect("fits");
            cache
        })
        .expect("spawned");
    let cache = within_deadline("the chain", move || worker.join().expect("no panic"));
    *slot.lock() = None;
    assert_eq!(heard.load(Ordering::SeqCst), CHAIN);
    assert_eq!(deepest.load(Ordering::SeqCst), 1, "listener calls nested");
    assert_eq!(cache.len(), 1);
    assert!(cache.contains_key(&key(CHAIN as u64)));
    assert_eq!(cache.stats().evictions_size, CHAIN as u64);
}

/// Removals made from inside a listener are reported after it returns, still every one of
/// them, and a panic of the listener while reporting them reaches the outermost caller once
/// the chain is done.
#[test]
fn a_panic_in_a_chained_listener_call_reaches_the_outermost_caller_after_the_chain() {
    const CHAIN: usize = 10;
    let slot: Arc<Mutex<Option<Cache>>> = Arc::default();
    let handle = Arc::clone(&slot);
    let heard: Arc<Mutex<Vec<(CacheKey, RemovalCause)>>> = Arc::default();
    let recorded = Arc::clone(&heard);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(1)
        .eviction_listener(move |k, _, cause| {
            let round = {
                let mut heard = recorded.lock();
                heard.push((*k, cause));
                heard.len()
            };
            if round < CHAIN {
                let cache = handle.lock().clone().expect("set before the first insert");
                cache
                    .insert(key(round as u64 + 1), vec![0u8; 10])
                    .expect("fits");
                assert_eq!(
                    recorded.lock().len(),
                    round,
                    "a removal made inside the listener was reported inside it"
                );
            }
            assert_ne!(round, 5, "the fifth removal");
        })
        .build()
        .expect("valid");
    *slot.lock() = Some(cache.clone());
    cache.insert(key(0), vec![0u8; 10]).expect("fits");
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| cache.insert(key(1), vec![0u8; 10])));
    *slot.lock() = None;
    let payload = outcome.expect_err("the panic reaches the outermost caller");
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(message.contains("the fifth removal"), "{message}");
    let expected: Vec<_> = (0..CHAIN as u64)
        .map(|i| (key(i), RemovalCause::Size))
        .collect();
    assert_eq!(*heard.lock(), expected);
    assert_eq!(cache.len(), 1);
    assert!(cache.contains_key(&key(CHAIN as u64)));
}

/// `len() <= max_entries` at 1 with 64 shards: every insert must evict across shards (the
/// path that drops its lock, evicts elsewhere and retries), under four threads, with loads.
#[test]
fn one_entry_over_many_shards_holds_under_concurrent_inserts_and_loads() {
    const THREADS: u64 = 4;
    const OPS: u64 = 3_000;
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(1)
        .shards(64)
        .build()
        .expect("valid");
    let barrier = Barrier::new(THREADS as usize);
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (cache, barrier) = (&cache, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for i in 0..OPS {
                    let value = vec![0u8; (i % 100) as usize];
                    cache.insert(key(100 + t * OPS + i), value).expect("fits");
                    assert!(cache.len() <= 1, "{} entries", cache.len());
                    if i % 7 == 0 {
                        cache
                            .get_or_insert_with(key(i % 3), || vec![1u8; 50])
                            .expect("fits");
                        assert!(cache.len() <= 1, "{} entries", cache.len());
                    }
                }
            });
        }
    });
    let live: Vec<CacheEntry> = (0..100 + THREADS * OPS)
        .filter_map(|i| cache.entry(&key(i)))
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.size_bytes(), live[0].size_bytes() as u64);
}

/// A byte budget of exactly one 100-byte value over 1,024 shards, so that each shard's share
/// of it rounds down to no bytes at all: a value of exactly the budget, a smaller one and an
/// empty one are each stored, by an insert or a load, evicting the one entry there (for
/// size) and nothing else — never refused, never looping; and the lone entry growing to the
/// whole budget is an update that replaces it, not an eviction of it. With and without an
/// entry bound of one.
#[test]
fn a_budget_of_one_value_over_1024_shards_stores_every_value_that_fits() {
    let budget = CacheEntry::charged_size(100) as u64;
    for max_entries in [None, Some(1)] {
        let events: Removals = Arc::default();
        let sink = Arc::clone(&events);
        let mut builder = Cache::builder()
            .max_bytes(budget)
            .shards(1024)
            .eviction_listener(move |k, v, cause| sink.lock().push((*k, v.clone(), cause)));
        if let Some(n) = max_entries {
            builder = builder.max_entries(n);
        }
        let cache = builder.build().expect("valid");
        let mut previous: Option<(CacheKey, Bytes)> = None;
        for i in 0..60u64 {
            let value = Bytes::from(vec![i as u8; [100, 37, 0][i as usize % 3]]);
            if i % 2 == 0 {
                cache.insert(key(i), value.clone()).expect("fits");
            } else {
                let got = cache
                    .get_or_insert_with(key(i), || value.clone())
                    .expect("fits");
                assert_eq!(got, value);
            }
            let evicted: Vec<_> = previous
                .iter()
                .map(|(k, v)| (*k, v.clone(), RemovalCause::Size))
                .collect();
            assert_eq!(*events.lock(), evicted, "value {i}, {max_entries:?}");
            events.lock().clear();
            assert_eq!(cache.len(), 1);
            assert_eq!(
                cache.size_bytes(),
                CacheEntry::charged_size(value.len()) as u64
            );
            assert!(cache.size_bytes() <= budget);
            previous = Some((key(i), value));
        }
        let (k, old) = previous.expect("stored");
        let grown = Bytes::from(vec![0xEE; 100]);
        cache.insert(k, grown.clone()).expect("fits");
        assert!(old.is_empty(), "the last value stored is the empty one");
        assert_eq!(*events.lock(), [(k, old, RemovalCause::Replaced)]);
        assert_eq!(cache.get(&k), Some(grown));
        assert_eq!(cache.size_bytes(), budget);
        let stats = cache.stats();
        assert_eq!(
            (stats.inserts, stats.updates, stats.evictions_size),
            (60, 1, 59),
            "{max_entries:?}"
        );
    }
}

#[derive(Debug)]
struct OtherError;

/// A waiter whose error type differs from the leader's cannot take the leader's error: it
/// runs its own loader, as `loader.rs` promises.
#[test]
fn a_waiter_with_another_error_type_runs_its_own_loader() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let held = HeldLoad::new();
    let leader = {
        let cache = cache.clone();
        let load = held.loader(|| Err::<Bytes, _>("the leader's error"));
        thread::spawn(move || cache.try_get_or_insert_with(key(1), load))
    };
    held.wait_running();
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || cache.try_get_or_insert_with(key(1), || Err::<Bytes, _>(OtherError)))
    };
    wait_until("the waiter missed", || cache.stats().misses >= 2);
    held.release();
    match leader.join().expect("no panic") {
        Err(LoadError::Loader(e)) => assert_eq!(*e, "the leader's error"),
        other => panic!("expected the leader's error, got {other:?}"),
    }
    let got = within_deadline("the waiter", move || waiter.join().expect("no panic"));
    assert!(matches!(got, Err(LoadError::Loader(e)) if matches!(*e, OtherError)));
    assert_eq!(cache.stats().load_failures, 2);
    assert!(cache.is_empty());
}

/// Bug (user review): a loader that loaded its own key again, on its own thread, waited for
/// its own flight for ever. The inner call now fails with `ReentrantLoad` naming the key, and
/// the outer load stores its value; with `try_get_or_insert_with` too.
#[test]
fn a_loader_that_loads_its_own_key_gets_a_reentrant_load_error() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let (outer, inner) = {
        let cache = cache.clone();
        within_deadline("the re-entrant load", move || {
            let mut inner = None;
            let outer = cache.get_or_insert_with(key(1), || {
                inner = Some(cache.get_or_insert_with(key(1), || "inner"));
                "outer"
            });
            (outer, inner)
        })
    };
    let err = inner
        .expect("the loader ran")
        .expect_err("the inner load is refused");
    assert!(
        matches!(err, CacheError::ReentrantLoad { key: k } if k == key(1)),
        "{err:?}"
    );
    assert!(err.to_string().contains(&key(1).to_string()), "{err}");
    assert_eq!(outer.expect("stored").as_ref(), b"outer");
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"outer"[..]));

    let (outer, inner) = {
        let cache = cache.clone();
        within_deadline("the re-entrant fallible load", move || {
            let mut inner = None;
            let outer = cache.try_get_or_insert_with(key(2), || {
                inner = Some(cache.try_get_or_insert_with(key(2), || Ok::<_, OtherError>("inner")));
                Ok::<_, OtherError>("outer")
            });
            (outer, inner)
        })
    };
    let err = inner
        .expect("the loader ran")
        .expect_err("the inner load is refused");
    assert!(
        matches!(err, LoadError::Cache(CacheError::ReentrantLoad { key: k }) if k == key(2)),
        "{err:?}"
    );
    assert_eq!(outer.expect("stored").as_ref(), b"outer");
}

/// A re-entrant load is refused only to the leader's own thread: a caller on another thread
/// that waits on the same flight meanwhile still gets the leader's value.
#[test]
fn a_reentrant_load_does_not_disturb_waiters_on_other_threads() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let waiter_missed = Arc::new(AtomicBool::new(false));
    let leader = {
        let cache = cache.clone();
        let waiter_missed = Arc::clone(&waiter_missed);
        thread::spawn(move || {
            let mut inner = None;
            let outer = cache.get_or_insert_with(key(1), || {
                // Once a waiter is on the flight, the claim has its flight allocated.
                wait_until("the waiter waits", || waiter_missed.load(Ordering::SeqCst));
                inner = Some(cache.get_or_insert_with(key(1), || "inner"));
                "outer"
            });
            (outer, inner)
        })
    };
    wait_until("the leader missed", || cache.stats().misses >= 1);
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || cache.get_or_insert_with(key(1), || "waiter's own"))
    };
    wait_until("the waiter missed", || cache.stats().misses >= 2);
    waiter_missed.store(true, Ordering::SeqCst);
    let (outer, inner) = within_deadline("the leader", move || leader.join().expect("no panic"));
    assert!(
        matches!(inner, Some(Err(CacheError::ReentrantLoad { .. }))),
        "{inner:?}"
    );
    assert_eq!(outer.expect("stored").as_ref(), b"outer");
    let got = within_deadline("the waiter", move || waiter.join().expect("no panic"));
    assert_eq!(got.expect("the leader's value").as_ref(), b"outer");
}

/// Stress: threads load a few keys, each loader re-entering its own key, while others remove
/// them so that loads keep starting. Every inner call is refused (none waits on another
/// thread's flight by mistake, none hangs), and every outer call gets a value.
#[test]
fn reentrant_loads_under_contention_are_always_refused_and_never_hang() {
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 300;
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let refused = Arc::new(AtomicU64::new(0));
    let loaded = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS as usize));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cache, refused, loaded, start) = (
                cache.clone(),
                Arc::clone(&refused),
                Arc::clone(&loaded),
                Arc::clone(&start),
            );
            thread::spawn(move || {
                start.wait();
                for i in 0..ROUNDS {
                    let k = key((i + t) % 3);
                    let value = cache.get_or_insert_with(k, || {
                        loaded.fetch_add(1, Ordering::SeqCst);
                        match cache.get_or_insert_with(k, || "inner") {
                            Err(CacheError::ReentrantLoad { key }) if key == k => {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                            other => panic!("a re-entrant load got {other:?}"),
                        }
                        "outer"
                    });
                    assert_eq!(value.expect("stored").as_ref(), b"outer");
                    if i % 2 == 0 {
                        cache.remove(&k);
                    }
                }
            })
        })
        .collect();
    join_within_deadline(workers);
    assert!(loaded.load(Ordering::SeqCst) > 0);
    assert_eq!(
        refused.load(Ordering::SeqCst),
        loaded.load(Ordering::SeqCst)
    );
}

/// The value thread `t` of a ring of loads stores under its key.
fn ring_value(t: u64) -> Bytes {
    Bytes::from(format!("ring {t}"))
}

/// Loads `k` with `get_or_insert_with`, or with `try_get_or_insert_with` if `fallible`.
fn load_with(
    cache: &Cache,
    k: CacheKey,
    fallible: bool,
    load: impl FnOnce() -> Bytes,
) -> Result<Bytes, CacheError> {
    if fallible {
        cache
            .try_get_or_insert_with(k, || Ok::<_, OtherError>(load()))
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(e) => panic!("no loader here fails, got {e:?}"),
            })
    } else {
        cache.get_or_insert_with(k, load)
    }
}

/// What one thread of a ring got: its own load's result, and its loader's load of the next
/// thread's key.
type RingLoad = (Result<Bytes, CacheError>, Option<Result<Bytes, CacheError>>);

/// The cache that holds thread `t`'s key in a ring of loads over `caches`.
fn ring_cache(caches: &[Cache], t: u64) -> &Cache {
    &caches[t as usize % caches.len()]
}

/// Runs a ring of `n` loads on `n` threads: thread `t` leads `key(first + t)` in
/// `ring_cache(caches, t)`, and once all `n` loaders run, each loads the next thread's key
/// (from that thread's cache), so that every loader waits for the next one — a cycle of
/// waits, as long as `n`. Fails instead of hanging if the ring deadlocks.
fn load_ring(caches: &[Cache], first: u64, n: u64, fallible: bool) -> Vec<RingLoad> {
    let all_running = Arc::new(Barrier::new(n as usize));
    let threads: Vec<_> = (0..n)
        .map(|t| {
            let own = ring_cache(caches, t).clone();
            let next_cache = ring_cache(caches, (t + 1) % n).clone();
            let all_running = Arc::clone(&all_running);
            thread::spawn(move || {
                let mut inner = None;
                let outer = load_with(&own, key(first + t), fallible, || {
                    all_running.wait();
                    let next = key(first + (t + 1) % n);
                    inner = Some(load_with(&next_cache, next, fallible, || {
                        Bytes::from_static(b"the next key was not being loaded")
                    }));
                    ring_value(t)
                });
                (outer, inner)
            })
        })
        .collect();
    within_deadline(&format!("a ring of {n} loads"), move || {
        threads
            .into_iter()
            .map(|thread| thread.join().expect("no panic"))
            .collect()
    })
}

/// Checks a ring's outcome: exactly one thread's load of the next key was refused with
/// `LoadCycle` naming that key, every other thread's got the next thread's value, and every
/// thread's own load stored its value.
fn assert_one_load_of_the_ring_refused(caches: &[Cache], first: u64, ring: &[RingLoad]) {
    let n = ring.len() as u64;
    let mut refused = 0;
    for (t, (outer, inner)) in (0..n).zip(ring) {
        let next = (t + 1) % n;
        match inner {
            Some(Err(e @ CacheError::LoadCycle { key: k })) => {
                assert_eq!(*k, key(first + next), "thread {t} was refused another key");
                assert!(e.to_string().contains(&k.to_string()), "{e}");
                refused += 1;
            }
            Some(Ok(value)) => assert_eq!(*value, ring_value(next), "thread {t}'s inner load"),
            other => panic!("thread {t}'s inner load got {other:?}"),
        }
        assert_eq!(
            outer.as_ref().expect("every outer load stores"),
            &ring_value(t)
        );
        assert_eq!(
            ring_cache(caches, t).get(&key(first + t)),
            Some(ring_value(t))
        );
    }
    assert_eq!(refused, 1, "{ring:?}");
}

/// Rings of `n` threads on one cache, with `get_or_insert_with` (keys from 10), then with
/// `try_get_or_insert_with` (keys from 20): each refuses one load.
fn assert_one_load_of_each_ring_on_one_cache_refused(n: u64) {
    let caches = [Cache::builder().max_bytes(1 << 20).build().expect("valid")];
    let ring = load_ring(&caches, 10, n, false);
    assert_one_load_of_the_ring_refused(&caches, 10, &ring);
    let ring = load_ring(&caches, 20, n, true);
    assert_one_load_of_the_ring_refused(&caches, 20, &ring);
}

/// Bug (issue #3): thread A led key 1 and its loader loaded key 2, which thread B led, whose
/// loader loaded key 1: A waited for B's flight and B for A's, for ever (the single-thread
/// version already got `ReentrantLoad`). Now the load that would close the cycle is refused
/// with `LoadCycle` naming the key, and the other thread gets its value; with
/// `try_get_or_insert_with` too.
#[test]
fn a_cycle_of_loads_across_two_threads_refuses_one_load_and_strands_none() {
    assert_one_load_of_each_ring_on_one_cache_refused(2);
}

/// The same across three threads, A → B → C → A: the check follows the chain of leaders.
#[test]
fn a_cycle_of_loads_across_three_threads_refuses_one_load_and_strands_none() {
    assert_one_load_of_each_ring_on_one_cache_refused(3);
}

/// Bug: each cache kept its own records of waiting threads, so a cycle through two caches —
/// thread A leads a key of cache X and its loader loads a key of cache Y that thread B leads,
/// whose loader loads A's key of X — was invisible to both: each cache saw one wait and no
/// cycle, and A and B waited for each other for ever. A loader of one cache that loads from
/// another (a transcript cache whose loader reads an audio-features cache) is ordinary use;
/// the records are now one process-wide map, and such a cycle is refused like any other.
#[test]
fn a_cycle_of_loads_through_two_caches_refuses_one_load_and_strands_none() {
    let caches = [0, 1].map(|_| Cache::builder().max_bytes(1 << 20).build().expect("valid"));
    for (first, n, fallible) in [(10, 2, false), (20, 2, true), (30, 4, false)] {
        let ring = load_ring(&caches, first, n, fallible);
        assert_one_load_of_the_ring_refused(&caches, first, &ring);
    }
}

/// Stress: rings of 2 to 5 threads close at once, again and again. The check and the record
/// are one step under a lock, so exactly one load of each ring is refused: never none (a
/// deadlock) and never two.
#[test]
fn cycles_closing_at_once_refuse_exactly_one_load_each() {
    let caches = [Cache::builder().max_bytes(1 << 20).build().expect("valid")];
    for round in 0..100 {
        let first = 100 + round * 10;
        let ring = load_ring(&caches, first, 2 + round % 4, round % 2 == 1);
        assert_one_load_of_the_ring_refused(&caches, first, &ring);
    }
}

/// A waiter that takes over a load after its leader panicked becomes the flight's leader, and
/// the records follow: a cycle through the new leader is refused, not left to hang.
#[test]
fn a_cycle_through_a_leader_that_took_over_after_a_panic_is_refused() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let held = HeldLoad::new();
    let panicking = {
        let cache = cache.clone();
        let load = held.loader(|| -> Bytes { panic!("the first leader's loader panics") });
        thread::spawn(move || cache.get_or_insert_with(key(1), load))
    };
    held.wait_running();
    // B waits on key 1; when the leader panics it takes over, and its loader then loads key
    // 2, whose loader (on C) loads key 1.
    let both_running = Arc::new(Barrier::new(2));
    let took_over = Arc::new(AtomicBool::new(false));
    let b = {
        let (cache, both_running, took_over) = (
            cache.clone(),
            Arc::clone(&both_running),
            Arc::clone(&took_over),
        );
        thread::spawn(move || {
            let mut inner = None;
            let outer = cache.get_or_insert_with(key(1), || {
                took_over.store(true, Ordering::SeqCst);
                both_running.wait();
                inner = Some(cache.get_or_insert_with(key(2), || "not loaded by C"));
                "B"
            });
            (outer, inner)
        })
    };
    wait_until("B waits on key 1", || cache.stats().misses >= 2);
    held.release();
    assert!(panicking.join().is_err(), "the first leader panics");
    wait_until("B took over key 1", || took_over.load(Ordering::SeqCst));
    let c = {
        let cache = cache.clone();
        thread::spawn(move || {
            let mut inner = None;
            let outer = cache.get_or_insert_with(key(2), || {
                both_running.wait();
                inner = Some(cache.get_or_insert_with(key(1), || "not loaded by B"));
                "C"
            });
            (outer, inner)
        })
    };
    let ring = within_deadline("B and C", move || {
        vec![
            b.join().expect("B does not panic"),
            c.join().expect("C does not panic"),
        ]
    });
    let refused = ring
        .iter()
        .filter(|(_, inner)| matches!(inner, Some(Err(CacheError::LoadCycle { .. }))))
        .count();
    assert_eq!(refused, 1, "{ring:?}");
    let [(b_outer, b_inner), (c_outer, c_inner)] = &ring[..] else {
        unreachable!("two threads")
    };
    assert_eq!(b_outer.as_ref().expect("stored").as_ref(), b"B");
    assert_eq!(c_outer.as_ref().expect("stored").as_ref(), b"C");
    for (inner, other_thread_value, cycle_key) in [(b_inner, "C", key(2)), (c_inner, "B", key(1))] {
        match inner {
            Some(Ok(value)) => assert_eq!(value.as_ref(), other_thread_value.as_bytes()),
            Some(Err(CacheError::LoadCycle { key: k })) => assert_eq!(*k, cycle_key),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Loads keys whose loaders load other keys first, along acyclic dependencies.
struct DependentLoads {
    cache: Cache,
    /// The keys each key's loader loads first: all greater than the key, so no cycle.
    deps: Vec<Vec<u64>>,
    /// A bit per key whose loader is running.
    running: AtomicU64,
    /// Loads, made inside a loader, of a key whose loader was running meanwhile: chains of
    /// waits.
    nested_waits: AtomicU64,
    /// Every error or wrong value seen.
    failures: Mutex<Vec<String>>,
}

impl DependentLoads {
    /// Loads `key(i)`, checking the value of each dependency its loader loads.
    fn load(&self, i: u64) -> Result<Bytes, CacheError> {
        self.cache.get_or_insert_with(key(i), || {
            self.running.fetch_or(1 << i, Ordering::SeqCst);
            for &j in &self.deps[i as usize] {
                if self.running.load(Ordering::SeqCst) & (1 << j) != 0 {
                    self.nested_waits.fetch_add(1, Ordering::Relaxed);
                }
                match self.load(j) {
                    Ok(value) if value == ring_value(j) => {}
                    other => self
                        .failures
                        .lock()
                        .push(format!("{i}'s loader loading {j} got {other:?}")),
                }
            }
            // Long enough a flight that other threads find it and wait on it.
            for _ in 0..20 {
                thread::yield_now();
            }
            self.running.fetch_and(!(1 << i), Ordering::SeqCst);
            ring_value(i)
        })
    }
}

/// Stress: many threads load random keys whose loaders load other keys along random but
/// acyclic dependencies, while keys are removed so that loads keep starting; chains of
/// threads waiting on each other's loads form all the time. No load is ever refused as a
/// cycle (stale records of waits that ended must not count), none hangs, and every value is
/// right.
#[test]
fn acyclic_dependencies_between_loads_are_never_refused_as_cycles() {
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    const KEYS: u64 = 32;
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 1000;
    let mut rng = SmallRng::seed_from_u64(3);
    let loads = Arc::new(DependentLoads {
        cache: Cache::builder().max_bytes(1 << 20).build().expect("valid"),
        deps: (0..KEYS)
            .map(|i| {
                (i + 1..KEYS)
                    .filter(|_| rng.random_range(0..8) == 0)
                    .collect()
            })
            .collect(),
        running: AtomicU64::new(0),
        nested_waits: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
    });
    let start = Arc::new(Barrier::new(THREADS as usize));
    let rounds_done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (loads, start) = (Arc::clone(&loads), Arc::clone(&start));
            let rounds_done = Arc::clone(&rounds_done);
            thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(100 + t);
                start.wait();
                for _ in 0..ROUNDS {
                    let i = rng.random_range(0..KEYS);
                    match loads.load(i) {
                        Ok(value) if value == ring_value(i) => {}
                        other => loads
                            .failures
                            .lock()
                            .push(format!("loading {i} got {other:?}")),
                    }
                    loads.cache.remove(&key(rng.random_range(0..KEYS)));
                    rounds_done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // A deadlock stops every round; a slow machine only slows them (see the helper).
    join_while_progressing(workers, &rounds_done);
    let failures = loads.failures.lock();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(
        loads.nested_waits.load(Ordering::Relaxed) > 0,
        "no chain of waits formed"
    );
}

/// An insert, a remove and a clear while a load is in flight neither block nor cancel it:
/// readers see the inserted value meanwhile, and the load's value, stored last, wins.
#[test]
fn inserts_removes_and_clears_during_a_load_do_not_stop_it() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let held = HeldLoad::new();
    let leader = {
        let cache = cache.clone();
        let load = held.loader(|| "loaded");
        thread::spawn(move || cache.get_or_insert_with(key(1), load))
    };
    held.wait_running();
    cache.insert(key(1), "inserted").expect("fits");
    let hit = cache.get_or_insert_with(key(1), || "not run");
    assert_eq!(hit.expect("a hit").as_ref(), b"inserted");
    assert_eq!(cache.remove(&key(1)).as_deref(), Some(&b"inserted"[..]));
    cache.insert(key(2), "other").expect("fits");
    cache.clear();
    held.release();
    let loaded = leader.join().expect("no panic").expect("stored");
    assert_eq!(loaded.as_ref(), b"loaded");
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"loaded"[..]));
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.size_bytes(), CacheEntry::charged_size(6) as u64);
}

/// An insert of the key being loaded, while its load runs, is overwritten when the load
/// returns, as `Cache::get_or_insert_with` says: the inserted value is reported `Replaced`
/// and counted as an update, and the budget holds the loaded value alone.
#[test]
fn an_insert_during_a_load_of_its_key_is_replaced_by_the_loaded_value() {
    let clock = ManualClock::new();
    let (cache, events) = recording_cache(&clock);
    let held = HeldLoad::new();
    let leader = {
        let cache = cache.clone();
        let load = held.loader(|| "loaded value");
        thread::spawn(move || cache.get_or_insert_with(key(1), load))
    };
    held.wait_running();
    cache.insert(key(1), "inserted").expect("fits");
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"inserted"[..]));
    held.release();
    let loaded = leader.join().expect("no panic").expect("stored");
    assert_eq!(&loaded[..], b"loaded value");
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"loaded value"[..]));
    assert_eq!(
        *events.lock(),
        [(key(1), Bytes::from("inserted"), RemovalCause::Replaced)]
    );
    let stats = cache.stats();
    assert_eq!((stats.inserts, stats.updates, stats.loads), (1, 1, 1));
    assert_eq!(cache.size_bytes(), CacheEntry::charged_size(12) as u64);
}

/// A snapshot holds only live values: an expired value no purge has removed yet is left out.
/// Restored into a cache too small for one of them, that one is left out and the rest fit.
#[test]
fn a_snapshot_skips_unpurged_expired_values_and_leaves_out_what_cannot_fit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let clock = ManualClock::new();
    let cache = cache_on(&clock);
    cache
        .insert_with_ttl(key(1), "expired", secs(1))
        .expect("fits");
    cache
        .insert_with_ttl(key(2), "timed", secs(3))
        .expect("fits");
    cache.insert(key(3), vec![0u8; 10_000]).expect("fits");
    cache.insert(key(4), "small").expect("fits");
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.len(), 4, "key 1 expired but is not purged");
    let saved = cache.save_snapshot(&path).expect("saves");
    assert_eq!(saved.entries, 3);

    let small = Cache::builder().max_bytes(5_000).build().expect("valid");
    let report = small.load_snapshot(&path).expect("loads");
    assert_eq!((report.restored, report.left_out), (2, 1));
    assert_eq!(
        report.left_out_bytes,
        CacheEntry::charged_size(10_000) as u64
    );
    assert!(small.contains_key(&key(2)) && small.contains_key(&key(4)));
    assert!(!small.contains_key(&key(1)) && !small.contains_key(&key(3)));
}

/// A clock that breaks the monotonic contract: it jumps back and forth on every read.
#[derive(Debug, Default)]
struct SteppingBackClock(AtomicU64);

impl Clock for SteppingBackClock {
    fn now(&self) -> Timestamp {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        Timestamp::from_nanos(if n.is_multiple_of(2) {
            5_000_000_000 + n * 1_000_000
        } else {
            1_000
        })
    }
}

/// A clock is caller-supplied code; one that steps back (against the `Clock` contract) must
/// not make the cache's time arithmetic panic (debug builds check overflow), nor break its
/// accounting.
#[test]
fn a_clock_that_steps_back_panics_nowhere() {
    let cache = Cache::builder()
        .max_bytes(1 << 16)
        .clock(SteppingBackClock::default())
        .build()
        .expect("valid");
    for i in 0..2_000u64 {
        let ttl = Ttl::new(Duration::from_millis(1 + i % 7)).expect("positive");
        let value = vec![0u8; (i % 300) as usize];
        cache
            .insert_with_ttl(key(i % 50), value, ttl)
            .expect("fits");
        cache.get(&key(i % 37));
        cache.entry(&key(i % 41));
        cache.purge_expired();
        assert!(cache.size_bytes() <= cache.max_bytes());
    }
    let dir = tempfile::tempdir().expect("temp dir");
    cache
        .save_snapshot(dir.path().join("cache.snap"))
        .expect("saves");
}

thread_local! {
    /// Allocations made by this thread; const-initialised, so reading it allocates nothing.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations per thread.
struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// "A hit allocates nothing", for values of every origin: a `Vec` (exact and with spare
/// capacity), a `String`, a static string, and a loader's `Vec`. Values built from a `Vec` get
/// a shared header on their first clone; the cache must take it at insert time.
#[test]
fn a_hit_allocates_nothing() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    cache.insert(key(1), vec![1u8; 100]).expect("fits");
    cache.insert(key(2), String::from("text")).expect("fits");
    cache.insert(key(3), "static").expect("fits");
    let mut spare = Vec::with_capacity(200);
    spare.extend_from_slice(&[3u8; 50]);
    cache.insert(key(4), spare).expect("fits");
    cache
        .get_or_insert_with(key(5), || vec![5u8; 10])
        .expect("fits");
    let keys: Vec<CacheKey> = (1..=5).map(key).collect();
    // The first read of the clock and of the thread's stripe number may set them up: read a
    // missing key and the static value first, not the others, whose first hit must not
    // allocate either.
    assert!(cache.get(&key(6)).is_none());
    assert!(cache.get(&key(3)).is_some());
    let before = allocations();
    let probe = vec![0u8; 8];
    assert_eq!(allocations(), before + 1, "the counter counts");
    drop(probe);
    let before = allocations();
    for _ in 0..1_000 {
        for k in &keys {
            assert!(cache.get(k).is_some());
        }
    }
    assert_eq!(allocations() - before, 0, "allocations in 5,000 hits");
}

mod listener_model {
    //! The listener as the ground truth: a model rebuilt only from inserts and the listener's
    //! reports must agree with the cache after every operation.

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use memocache::{Cache, CacheEntry, CacheKey, Clock, ManualClock, RemovalCause, Ttl};
    use parking_lot::Mutex;
    use proptest::prelude::*;

    use super::key;

    const KEYS: u64 = 6;

    #[derive(Clone, Debug)]
    enum Op {
        Insert {
            key: u64,
            len: usize,
            ttl_ms: Option<u64>,
        },
        Get {
            key: u64,
        },
        Remove {
            key: u64,
        },
        Load {
            key: u64,
            len: usize,
        },
        Advance {
            ms: u64,
        },
        Purge,
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..KEYS, 0..300usize, prop::option::of(1..2_000u64))
                .prop_map(|(key, len, ttl_ms)| Op::Insert { key, len, ttl_ms }),
            3 => (0..KEYS).prop_map(|key| Op::Get { key }),
            1 => (0..KEYS).prop_map(|key| Op::Remove { key }),
            2 => (0..KEYS, 0..300usize).prop_map(|(key, len)| Op::Load { key, len }),
            2 => (0..1_500u64).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Purge),
            1 => Just(Op::Clear),
        ]
    }

    /// What the cache holds for a key, by the model: the value and its deadline.
    type Held = HashMap<u64, (Bytes, Option<u64>)>;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Every removal the listener reports is of a value the model holds, with the cause
        /// the model predicts for an insert over it (`Expired` past its deadline, else
        /// `Replaced`); an insert never reports its own key as evicted for size; and after
        /// every operation the model's entries and charges equal `len()` and `size_bytes()`,
        /// and the counters equal the reports.
        #[test]
        fn the_listener_accounts_for_every_value(
            ops in prop::collection::vec(op(), 1..60),
            entries in prop::option::of(1..5u64),
            shards in prop::sample::select(vec![1usize, 2]),
        ) {
            let clock = ManualClock::new();
            let events: Arc<Mutex<Vec<(u64, Bytes, RemovalCause)>>> = Arc::default();
            let sink = Arc::clone(&events);
            let cache = Cache::builder()
                .max_bytes(4 * CacheEntry::charged_size(300) as u64)
                .max_entries(entries.unwrap_or(u64::MAX))
                .shards(shards)
                .clock(clock.clone())
                .eviction_listener(move |k, v, cause| {
                    let i = (0..KEYS).find(|&i| key(i) == *k).expect("one of ours");
                    sink.lock().push((i, v.clone(), cause));
                })
                .build()
                .expect("valid");
            let mut held = Held::new();
            let mut stores = 0u64;
            let mut serial = 0u8;
            let mut reported = [0u64; 4];
            for op in &ops {
                let now = clock.now().as_nanos();
                // The cause an insert over `k` must report, if the model holds it.
                let mut expected_own = None;
                let mut stored = None;
                match *op {
                    Op::Insert { key: k, len, ttl_ms } => {
                        serial = serial.wrapping_add(1);
                        let value = Bytes::from(vec![serial; len]);
                        match ttl_ms {
                            Some(ms) => cache.insert_with_ttl(
                                key(k),
                                value.clone(),
                                Ttl::new(Duration::from_millis(ms)).expect("positive"),
                            ),
                            None => cache.insert(key(k), value.clone()),
                        }
                        .expect("fits");
                        expected_own = held.get(&k).map(|(_, deadline)| {
                            if deadline.is_some_and(|d| now > d) {
                                RemovalCause::Expired
                            } else {
                                RemovalCause::Replaced
                            }
                        });
                        let deadline = ttl_ms.map(|ms| now + ms * 1_000_000);
                        stored = Some((k, value, deadline));
                        stores += 1;
                    }
                    Op::Load { key: k, len } => {
                        serial = serial.wrapping_add(1);
                        let value = Bytes::from(vec![serial; len]);
                        let live = held.get(&k).filter(|(_, d)| !d.is_some_and(|d| now > d));
                        let got = cache
                            .get_or_insert_with(key(k), || value.clone())
                            .expect("fits");
                        match live {
                            Some((v, _)) => prop_assert_eq!(&got, v),
                            None => {
                                prop_assert_eq!(&got, &value);
                                // A load replaces only an expired value it could not see.
                                expected_own = held.get(&k).map(|_| RemovalCause::Expired);
                                stored = Some((k, value, None));
                                stores += 1;
                            }
                        }
                    }
                    Op::Get { key: k } => {
                        let got = cache.get(&key(k));
                        let live = held.get(&k).filter(|(_, d)| !d.is_some_and(|d| now > d));
                        prop_assert_eq!(got.as_ref(), live.map(|(v, _)| v));
                    }
                    Op::Remove { key: k } => drop(cache.remove(&key(k))),
                    Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
                    Op::Purge => drop(cache.purge_expired()),
                    Op::Clear => cache.clear(),
                }
                let mut own = Vec::new();
                for (k, value, cause) in events.lock().drain(..) {
                    let (held_value, _) = held.remove(&k).expect("reported a value not held");
                    prop_assert_eq!(&value, &held_value, "key {} reported another value", k);
                    reported[cause as usize] += 1;
                    if stored.as_ref().is_some_and(|(s, _, _)| *s == k)
                        && matches!(cause, RemovalCause::Replaced | RemovalCause::Expired)
                    {
                        own.push(cause);
                    } else if stored.as_ref().is_some_and(|(s, _, _)| *s == k) {
                        prop_assert!(false, "{:?}: the insert evicted its own key ({:?})", op, cause);
                    }
                }
                prop_assert_eq!(own, expected_own.into_iter().collect::<Vec<_>>(), "{:?}", op);
                if let Some((k, value, deadline)) = stored {
                    held.insert(k, (value, deadline));
                }
                let charges: u64 = held
                    .values()
                    .map(|(v, _)| CacheEntry::charged_size(v.len()) as u64)
                    .sum();
                prop_assert_eq!(cache.len(), held.len(), "{:?}", op);
                prop_assert_eq!(cache.size_bytes(), charges, "{:?}", op);
                let stats = cache.stats();
                prop_assert_eq!(stats.inserts + stats.updates, stores);
                for cause in RemovalCause::ALL {
                    prop_assert_eq!(stats.removals(cause), reported[cause as usize], "{:?}", cause);
                }
            }
        }
    }

    /// Log-uniform popularity over 500 keys from `seed`: a workload on which a cache of 10 to
    /// 64 entries a shard follows its LFU shadow, and so turns away keys it rejects.
    fn popular(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            500f64.powf((state % 1_000_000) as f64 / 1e6) as u64
        }
    }

    #[derive(Clone, Debug)]
    enum TinyOp {
        /// An insert of the next key of the skewed workload, or of a fresh key.
        Insert {
            fresh: bool,
            len: usize,
        },
        Get,
        Remove,
        Load {
            fresh: bool,
            len: usize,
        },
    }

    fn tiny_op() -> impl Strategy<Value = TinyOp> {
        prop_oneof![
            6 => (any::<bool>(), 0..64usize).prop_map(|(fresh, len)| TinyOp::Insert { fresh, len }),
            4 => Just(TinyOp::Get),
            1 => Just(TinyOp::Remove),
            3 => (any::<bool>(), 0..64usize).prop_map(|(fresh, len)| TinyOp::Load { fresh, len }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            if cfg!(debug_assertions) { 12 } else { 48 }
        ))]

        /// In caches of 10 to 64 entries a shard, warmed on a skewed workload until admission
        /// turns keys away, a model rebuilt from the stores and the listener's reports agrees
        /// with the cache after every operation: a store that is not readable afterwards was
        /// reported — its own value evicted for `Size` (turned away: only a new key, and then
        /// nothing else is evicted) — never silently lost; an update is never turned away.
        #[test]
        fn tiny_caches_lose_no_store_silently(
            ops in prop::collection::vec(tiny_op(), 200..400),
            shape in prop::sample::select(
                vec![(10u64, 1usize), (12, 1), (30, 1), (64, 1), (40, 2)]
            ),
            seed in any::<u64>(),
        ) {
            let (entries, shards) = shape;
            let events: Arc<Mutex<Vec<(CacheKey, Bytes, RemovalCause)>>> = Arc::default();
            let sink = Arc::clone(&events);
            let cache = Cache::builder()
                .max_bytes(1 << 20)
                .max_entries(entries)
                .shards(shards)
                .eviction_listener(move |k, v, cause| sink.lock().push((*k, v.clone(), cause)))
                .build()
                .expect("valid");
            let mut draw = popular(seed);
            // Warmed until admission turns a fresh key away (how soon depends on the cache's
            // hash seed): from then on the shard follows its LFU shadow.
            let probes = 2_000_000..2_400_000u64;
            let mut probe = probes.clone().step_by(1_000).map(key);
            let mut refusing = false;
            for i in 0..400_000 {
                let k = key(draw());
                if cache.get(&k).is_none() {
                    cache.insert(k, "warm").expect("fits");
                }
                if i >= 20_000 && i % 1_000 == 0 {
                    let k = probe.next().expect("a probe");
                    cache.insert(k, "probe").expect("fits");
                    refusing = events.lock().iter().any(|(e, _, cause)| {
                        *e == k && *cause == RemovalCause::Size
                    });
                    if refusing {
                        break;
                    }
                }
            }
            prop_assert!(refusing, "admission never turned a key away ({} entries)", entries);
            let mut held: HashMap<CacheKey, Bytes> = (0..500)
                .chain(probes.step_by(1_000))
                .filter_map(|i| cache.peek(&key(i)).map(|v| (key(i), v)))
                .collect();
            prop_assert_eq!(cache.len(), held.len());
            events.lock().clear();
            let mut turned_away = 0;
            for (i, op) in ops.iter().enumerate() {
                let pick = |fresh: bool, draw: &mut dyn FnMut() -> u64| {
                    key(if fresh { 1_000_000 + i as u64 } else { draw() })
                };
                let value = |len: usize| {
                    let mut v = (i as u64).to_le_bytes().to_vec();
                    v.resize(8 + len, 0);
                    Bytes::from(v)
                };
                let mut stored = None;
                match *op {
                    TinyOp::Insert { fresh, len } => {
                        let (k, v) = (pick(fresh, &mut draw), value(len));
                        cache.insert(k, v.clone()).expect("fits");
                        stored = Some((k, v));
                    }
                    TinyOp::Load { fresh, len } => {
                        let (k, v) = (pick(fresh, &mut draw), value(len));
                        let got = cache.get_or_insert_with(k, || v.clone()).expect("fits");
                        match held.get(&k) {
                            Some(present) => prop_assert_eq!(&got, present),
                            None => {
                                prop_assert_eq!(&got, &v);
                                stored = Some((k, v));
                            }
                        }
                    }
                    TinyOp::Get => {
                        let k = key(draw());
                        let got = cache.get(&k);
                        prop_assert_eq!(got.as_ref(), held.get(&k));
                    }
                    TinyOp::Remove => {
                        let k = key(draw());
                        let got = cache.remove(&k);
                        prop_assert_eq!(got.as_ref(), held.get(&k));
                    }
                }
                let heard: Vec<_> = events.lock().drain(..).collect();
                let refused = stored.as_ref().is_some_and(|(k, v)| {
                    heard.iter().any(|(hk, hv, cause)| {
                        hk == k && hv == v && *cause == RemovalCause::Size
                    })
                });
                if refused {
                    turned_away += 1;
                    let (k, _) = stored.as_ref().expect("a store");
                    prop_assert!(!held.contains_key(k), "{:?}: an update was turned away", op);
                    prop_assert_eq!(heard.len(), 1, "{:?}: a refused insert evicted", op);
                }
                for (k, v, cause) in &heard {
                    if refused && stored.as_ref().is_some_and(|(_, sv)| sv == v) {
                        continue;
                    }
                    let was = held.remove(k);
                    prop_assert_eq!(was.as_ref(), Some(v), "{:?}: reported a value not held", op);
                    let own = stored.as_ref().is_some_and(|(sk, _)| sk == k);
                    let expected = match op {
                        _ if own => RemovalCause::Replaced,
                        TinyOp::Remove => RemovalCause::Removed,
                        _ => RemovalCause::Size,
                    };
                    prop_assert_eq!(*cause, expected, "{:?}", op);
                }
                if let Some((k, v)) = stored.filter(|_| !refused) {
                    held.insert(k, v);
                }
                prop_assert_eq!(cache.len(), held.len(), "{:?}", op);
                let charges: u64 =
                    held.values().map(|v| CacheEntry::charged_size(v.len()) as u64).sum();
                prop_assert_eq!(cache.size_bytes(), charges, "{:?}", op);
                for (k, v) in &held {
                    let got = cache.peek(k);
                    prop_assert_eq!(got.as_ref(), Some(v), "{:?}: lost silently", op);
                }
            }
            // Warmed so, every shape turned away dozens of these keys in 48 cases out of 48.
            prop_assert!(turned_away > 0, "nothing turned away ({} entries)", entries);
        }
    }
}
