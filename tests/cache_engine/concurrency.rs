//! Multi-threaded tests: the budget invariant and the accounting under a random concurrent mix,
//! and memoized loading (runs once, shares errors). A panicking loader's waiters are tested in
//! `src/cache/tests.rs`, which can see when they have joined its flight.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use memocache::{Cache, CacheEntry, CacheKey, LoadError, ManualClock, RemovalCause, Ttl};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::key;

/// Waits at most 10 s for `condition`.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::yield_now();
    }
}

/// Receives `n` results, failing instead of hanging if a thread is stranded.
fn collect<T>(results: &mpsc::Receiver<T>, n: usize) -> Vec<T> {
    (0..n)
        .map(|i| {
            results
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("caller {i} of {n} is stranded"))
        })
        .collect()
}

fn cause_index(cause: RemovalCause) -> usize {
    RemovalCause::ALL
        .iter()
        .position(|&c| c == cause)
        .expect("a known cause")
}

/// What the listener saw, by cause: (entries, charged bytes).
#[derive(Default)]
struct Tally {
    entries: [AtomicU64; 4],
    bytes: [AtomicU64; 4],
}

impl Tally {
    fn add(&self, cause: RemovalCause, value: &Bytes) {
        let i = cause_index(cause);
        self.entries[i].fetch_add(1, Ordering::Relaxed);
        self.bytes[i].fetch_add(
            CacheEntry::charged_size(value.len()) as u64,
            Ordering::Relaxed,
        );
    }

    fn total(counters: &[AtomicU64; 4]) -> u64 {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// A value for key `i`: every byte is `i`, so a reader can tell whose value it got.
fn value_for(i: u64, len: usize) -> Bytes {
    Bytes::from(vec![i as u8; len])
}

fn run_stress(shards: usize, seed: u64) {
    const THREADS: u64 = 4;
    const OPS: usize = 4_000;
    const KEYS: u64 = 64;
    let max_bytes = 6_000;
    let max_entries = 24;

    let clock = ManualClock::new();
    let tally = Arc::new(Tally::default());
    let sink = Arc::clone(&tally);
    let cache = Cache::builder()
        .max_bytes(max_bytes)
        .max_entries(max_entries)
        .shards(shards)
        .clock(clock.clone())
        .eviction_listener(move |_, value, cause| sink.add(cause, value))
        .build()
        .expect("valid");
    let keys: Vec<CacheKey> = (0..KEYS).map(key).collect();
    // Entries and charged bytes handed to the cache (inserts and loader runs).
    let stored = AtomicU64::new(0);
    let stored_bytes = AtomicU64::new(0);

    thread::scope(|scope| {
        for t in 0..THREADS {
            let (cache, keys, clock) = (&cache, &keys, &clock);
            let (stored, stored_bytes) = (&stored, &stored_bytes);
            scope.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed * 100 + t);
                let store = |len: usize| {
                    stored.fetch_add(1, Ordering::Relaxed);
                    stored_bytes.fetch_add(CacheEntry::charged_size(len) as u64, Ordering::Relaxed);
                };
                let check_value = |i: u64, value: &Bytes| {
                    assert!(
                        value.iter().all(|&b| b == i as u8),
                        "key {i} read another key's value"
                    );
                };
                for _ in 0..OPS {
                    let i = rng.random_range(0..KEYS);
                    let k = keys[i as usize];
                    let len = rng.random_range(0..400);
                    match rng.random_range(0..100) {
                        0..30 => {
                            cache.insert(k, value_for(i, len)).expect("fits");
                            store(len);
                        }
                        30..40 => {
                            let ttl = Ttl::seconds(rng.random_range(1..4)).expect("positive");
                            cache
                                .insert_with_ttl(k, value_for(i, len), ttl)
                                .expect("fits");
                            store(len);
                        }
                        40..65 => {
                            if let Some(v) = cache.get(&k) {
                                check_value(i, &v);
                            }
                        }
                        65..75 => {
                            if let Some(v) = cache.remove(&k) {
                                check_value(i, &v);
                            }
                        }
                        75..88 => {
                            let v = cache
                                .get_or_insert_with(k, || {
                                    store(len);
                                    value_for(i, len)
                                })
                                .expect("fits");
                            check_value(i, &v);
                        }
                        88..95 => {
                            let fail = rng.random_bool(0.5);
                            let loaded = cache.try_get_or_insert_with(k, || {
                                if fail {
                                    return Err("refused");
                                }
                                store(len);
                                Ok(value_for(i, len))
                            });
                            match loaded {
                                Ok(v) => check_value(i, &v),
                                Err(LoadError::Loader(e)) => assert_eq!(*e, "refused"),
                                Err(e) => panic!("unexpected {e}"),
                            }
                        }
                        95..99 => {
                            if let Some(entry) = cache.entry(&k) {
                                check_value(i, entry.value());
                                assert_eq!(entry.key(), &k);
                            }
                            cache.contains_key(&k);
                            if let Some(v) = cache.peek(&k) {
                                check_value(i, &v);
                            }
                        }
                        _ => {
                            if t == 0 {
                                clock.advance(Duration::from_millis(700));
                            }
                            cache.purge_expired();
                        }
                    }
                    assert!(
                        cache.size_bytes() <= max_bytes,
                        "{} bytes",
                        cache.size_bytes()
                    );
                    assert!(cache.len() as u64 <= max_entries, "{} entries", cache.len());
                }
            });
        }
    });

    // Quiescent now. Expired entries still stored are not visible through `entry`, so purge
    // them first (the clock does not move any more).
    cache.purge_expired();
    let (mut live, mut live_bytes) = (0, 0);
    for k in &keys {
        if let Some(entry) = cache.entry(k) {
            live += 1;
            live_bytes += entry.size_bytes() as u64;
        }
    }
    assert_eq!(live, cache.len(), "entry count matches the contents");
    assert_eq!(
        live_bytes,
        cache.size_bytes(),
        "byte count matches the contents"
    );

    // Everything stored is either still there or was reported once to the listener.
    let stored = stored.load(Ordering::Relaxed);
    let stored_bytes = stored_bytes.load(Ordering::Relaxed);
    assert_eq!(stored, Tally::total(&tally.entries) + live as u64);
    assert_eq!(stored_bytes, Tally::total(&tally.bytes) + live_bytes);

    let stats = cache.stats();
    assert_eq!(stats.inserts + stats.updates, stored);
    for cause in RemovalCause::ALL {
        assert_eq!(
            stats.removals(cause),
            tally.entries[cause_index(cause)].load(Ordering::Relaxed),
            "{cause:?}"
        );
    }
    assert!(
        stats.evictions_size > 1_000,
        "the budget forced evictions: {stats:?}"
    );
    assert!(stats.evictions_expired > 0, "entries expired: {stats:?}");
}

#[test]
fn concurrent_mix_keeps_the_budget_and_the_accounting() {
    run_stress(4, 1);
}

#[test]
fn concurrent_mix_on_one_shard() {
    run_stress(1, 2);
}

/// Each report the listener heard: the key, the value, the cause, and the key the reporting
/// thread was storing (inserting or loading) at the time, if any.
type Heard = Arc<Mutex<Vec<(CacheKey, Bytes, RemovalCause, Option<CacheKey>)>>>;

thread_local! {
    /// The key this thread is storing now, for the listener of `reports_name_the_right_cause_*`.
    static STORING: std::cell::Cell<Option<CacheKey>> = const { std::cell::Cell::new(None) };
}

/// Stores `value` under `k` by `store`, telling the listener that this thread stores `k`.
fn storing<T>(k: CacheKey, store: impl FnOnce() -> T) -> T {
    STORING.with(|s| s.set(Some(k)));
    let result = store();
    STORING.with(|s| s.set(None));
    result
}

/// Four threads write four keys each — their own, so each thread knows what it stored under
/// them — by inserts (some with a TTL of a few milliseconds), loads, gets and removes, into a
/// budget of about two entries shared by all, while the clock moves and purges run; then the
/// cache is cleared, so every value stored must have been reported exactly once. The causes
/// must be right under every interleaving: a value is `Replaced` only by a store of its own
/// key, on its own thread, and no store evicts its own key's value for `Size` (an update
/// whose key was alone in its shard did, when it raced a removal in another shard: this
/// test failed 3 runs of 20 on that code, timing permitting; the deterministic test is
/// `cache::tests::a_growing_update_waits_for_budget_in_flight_instead_of_evicting_itself`).
/// The stats count every store once and every report under its cause.
#[test]
fn reports_name_the_right_cause_under_concurrent_writes() {
    const THREADS: u64 = 4;
    for shards in [1, 2, 4] {
        let clock = ManualClock::new();
        let heard: Heard = Arc::default();
        let sink = Arc::clone(&heard);
        let cache = Cache::builder()
            .max_bytes(2 * CacheEntry::charged_size(200) as u64)
            .shards(shards)
            .clock(clock.clone())
            .eviction_listener(move |k, v, cause| {
                let storing = STORING.with(std::cell::Cell::get);
                sink.lock().push((*k, v.clone(), cause, storing));
            })
            .build()
            .expect("valid");
        let stored = AtomicU64::new(0);
        thread::scope(|scope| {
            for t in 0..THREADS {
                let (cache, clock, stored) = (&cache, &clock, &stored);
                scope.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(shards as u64 * 10 + t);
                    for serial in 0..3_000u32 {
                        let k = key(t * 100 + rng.random_range(0..4));
                        // Unique: the thread and a serial number, then filler.
                        let mut value = vec![0u8; 4 + rng.random_range(0..200)];
                        value[..4].copy_from_slice(&(serial | (t as u32) << 24).to_le_bytes());
                        let value = Bytes::from(value);
                        match rng.random_range(0..10) {
                            0..3 => {
                                storing(k, || cache.insert(k, value)).expect("fits");
                                stored.fetch_add(1, Ordering::Relaxed);
                            }
                            3 | 4 => {
                                let ttl = Duration::from_millis(rng.random_range(1..6));
                                let ttl = Ttl::new(ttl).expect("positive");
                                storing(k, || cache.insert_with_ttl(k, value, ttl)).expect("fits");
                                stored.fetch_add(1, Ordering::Relaxed);
                            }
                            5 => drop(cache.get(&k)),
                            6 => drop(cache.remove(&k)),
                            7 => {
                                let got = storing(k, || {
                                    cache.get_or_insert_with(k, || {
                                        stored.fetch_add(1, Ordering::Relaxed);
                                        value
                                    })
                                });
                                got.expect("fits");
                            }
                            8 if t == 0 => clock.advance(Duration::from_millis(1)),
                            _ => drop(cache.purge_expired()),
                        }
                    }
                });
            }
        });
        cache.clear();
        let heard = heard.lock();
        let mut seen = std::collections::HashSet::new();
        let mut by_cause = [0u64; 4];
        for (k, value, cause, storing) in heard.iter() {
            assert!(
                seen.insert(value.clone()),
                "{shards} shards: reported twice: {value:?}"
            );
            by_cause[cause_index(*cause)] += 1;
            match cause {
                RemovalCause::Size => assert_ne!(
                    *storing,
                    Some(*k),
                    "{shards} shards: a store of {k} evicted its own key's value for size"
                ),
                RemovalCause::Replaced => assert_eq!(
                    *storing,
                    Some(*k),
                    "{shards} shards: {k} replaced, but not by a store of its own"
                ),
                RemovalCause::Expired | RemovalCause::Removed => {}
            }
        }
        let stored = stored.load(Ordering::Relaxed);
        assert_eq!(
            seen.len() as u64,
            stored,
            "{shards} shards: every value left once"
        );
        let stats = cache.stats();
        assert_eq!(stats.inserts + stats.updates, stored, "{stats:?}");
        for cause in RemovalCause::ALL {
            assert_eq!(
                stats.removals(cause),
                by_cause[cause_index(cause)],
                "{cause:?}"
            );
        }
        assert!(stats.evictions_size > 0 && stats.updates > 0, "{stats:?}");
    }
}

/// Hits and misses are counted exactly, however many threads count at once: threads beyond the
/// cache's owned stripes share stripes, and threads that exit hand their stripes on to new ones
/// (a lost count would show if two live threads ever owned one stripe).
#[test]
fn stats_count_every_read_of_many_threads_exactly() {
    const READS: u64 = 20_000;
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    // More threads than the cache has stripes of either kind (2 × cores, rounded up).
    let threads = 4 * cores.next_power_of_two() + 3;
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    cache.insert(key(1), "present").expect("fits");
    for wave in 1..=3u64 {
        let barrier = Barrier::new(threads);
        thread::scope(|scope| {
            for t in 0..threads {
                let (cache, barrier) = (&cache, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..READS {
                        let k = if (i + t as u64).is_multiple_of(4) {
                            2
                        } else {
                            1
                        };
                        cache.get(&key(k));
                    }
                });
            }
        });
        let stats = cache.stats();
        let reads = wave * threads as u64 * READS;
        assert_eq!(stats.hits + stats.misses, reads, "wave {wave}: {stats:?}");
        assert_eq!(stats.misses, reads / 4, "wave {wave}: {stats:?}");
    }
}

/// Calls `call(cache, id, hold)` from `callers` threads that start together, on one 1 MiB
/// cache; the loader `call` passes must call `hold` first, which holds the load until every
/// caller has missed, then a little longer so that they are all waiting on it, and counts
/// the loader's runs. Returns the cache, the runs and each call's result.
fn from_callers<T: Send + 'static>(
    callers: usize,
    call: fn(&Cache, usize, &dyn Fn()) -> T,
) -> (Cache, usize, Vec<T>) {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(callers));
    let (send, results) = mpsc::channel();
    for id in 0..callers {
        let (cache, runs, barrier, send) =
            (cache.clone(), runs.clone(), barrier.clone(), send.clone());
        thread::spawn(move || {
            barrier.wait();
            let hold = || {
                wait_until("all callers missed", || {
                    cache.stats().misses >= callers as u64
                });
                thread::sleep(Duration::from_millis(50));
                runs.fetch_add(1, Ordering::SeqCst);
            };
            let _ = send.send(call(&cache, id, &hold));
        });
    }
    let results = collect(&results, callers);
    (cache, runs.load(Ordering::SeqCst), results)
}

#[test]
fn loader_runs_once_for_concurrent_callers() {
    const CALLERS: usize = 8;
    let (cache, runs, results) = from_callers(CALLERS, |cache, _, hold| {
        cache.get_or_insert_with(key(1), || {
            hold();
            Bytes::from_static(b"loaded once")
        })
    });
    for loaded in results {
        assert_eq!(loaded.expect("stored").as_ref(), b"loaded once");
    }
    assert_eq!(runs, 1);
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.inserts, stats.load_failures), (1, 1, 0));
}

#[derive(Debug, PartialEq)]
struct LoadFailed(usize);

#[test]
fn loader_error_reaches_every_waiter_and_is_not_cached() {
    const CALLERS: usize = 6;
    let (cache, runs, results) = from_callers(CALLERS, |cache, id, hold| {
        cache.try_get_or_insert_with(key(1), || {
            hold();
            Err::<Bytes, _>(LoadFailed(id))
        })
    });
    let errors: Vec<Arc<LoadFailed>> = results
        .into_iter()
        .map(|loaded| match loaded {
            Err(LoadError::Loader(e)) => e,
            other => panic!("expected the loader's error, got {other:?}"),
        })
        .collect();
    assert_eq!(runs, 1);
    assert!(
        errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])),
        "one shared error"
    );
    assert_eq!(cache.stats().load_failures, 1);

    assert!(!cache.contains_key(&key(1)), "the error was not cached");
    let retried = cache
        .try_get_or_insert_with(key(1), || Ok::<_, LoadFailed>("second try"))
        .expect("the next call loads again");
    assert_eq!(retried.as_ref(), b"second try");
    assert_eq!(cache.get(&key(1)), Some(retried));
}
