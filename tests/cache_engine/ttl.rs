//! Expiry, driven by a `ManualClock`: default and per-entry TTLs, the exact deadline, purging
//! and the background sweeper; and one check on the real clocks.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memocache::{
    Cache, CacheEntry, Clock, CoarseClock, ManualClock, RemovalCause, SystemClock, Timestamp, Ttl,
    WeakCache,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::{key, of_cause, recorded, secs};

const NANO: Duration = Duration::from_nanos(1);

/// Asserts that `k` is gone through every read path.
fn assert_gone(cache: &Cache, k: &memocache::CacheKey) {
    assert_eq!(cache.entry(k), None);
    assert!(!cache.contains_key(k));
    assert_eq!(cache.peek(k), None);
    assert_eq!(cache.get(k), None);
}

#[test]
fn default_ttl_expires_strictly_after_created_plus_ttl() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(7));
    let (builder, events) = recorded(&clock);
    let cache = builder.default_ttl(secs(10)).build().expect("valid");
    let k = key(1);
    cache.insert(k, "v").expect("fits");

    let entry = cache.entry(&k).expect("live");
    assert_eq!(entry.created_at(), Timestamp::from_nanos(7_000_000_000));
    assert_eq!(entry.ttl(), Some(secs(10)));
    assert_eq!(
        entry.expires_at(),
        Some(Timestamp::from_nanos(17_000_000_000))
    );

    clock.advance(Duration::from_secs(10));
    assert_eq!(
        cache.get(&k).as_deref(),
        Some(&b"v"[..]),
        "live at exactly created + ttl"
    );
    clock.advance(NANO);
    assert_gone(&cache, &k);
    assert_eq!(cache.len(), 0, "the read removed the expired entry");
    assert_eq!(cache.size_bytes(), 0);
    assert_eq!(
        of_cause(&events, RemovalCause::Expired),
        vec![(k, "v".into())]
    );
    assert_eq!(cache.stats().evictions_expired, 1);
}

#[test]
fn a_loaded_value_takes_the_default_ttl_and_is_loaded_again_once_expired() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let cache = builder.default_ttl(secs(10)).build().expect("valid");
    let k = key(1);
    let first = cache.get_or_insert_with(k, || "first").expect("fits");
    assert_eq!(&first[..], b"first");
    assert_eq!(cache.entry(&k).expect("live").ttl(), Some(secs(10)));

    clock.advance(Duration::from_secs(10));
    let cached = cache.get_or_insert_with(k, || "not loaded").expect("fits");
    assert_eq!(&cached[..], b"first", "live at exactly created + ttl");

    clock.advance(NANO);
    let reloaded = cache.get_or_insert_with(k, || "second").expect("fits");
    assert_eq!(
        &reloaded[..],
        b"second",
        "an expired value is never returned"
    );
    assert_eq!(cache.get(&k).as_deref(), Some(&b"second"[..]));
    assert_eq!(
        of_cause(&events, RemovalCause::Expired),
        vec![(k, "first".into())]
    );
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.inserts, stats.hits), (2, 2, 2));
}

#[test]
fn per_entry_ttl_overrides_the_default_and_no_ttl_never_expires() {
    let clock = ManualClock::new();
    let (builder, _) = recorded(&clock);
    let with_default = builder.default_ttl(secs(10)).build().expect("valid");
    with_default.insert(key(1), "default").expect("fits");
    with_default
        .insert_with_ttl(key(2), "short", secs(3))
        .expect("fits");
    with_default
        .insert_with_ttl(key(3), "long", secs(100))
        .expect("fits");

    clock.advance(Duration::from_secs(3) + NANO);
    assert_gone(&with_default, &key(2));
    assert!(with_default.contains_key(&key(1)));
    clock.advance(Duration::from_secs(7));
    assert_gone(&with_default, &key(1));
    assert_eq!(
        with_default.entry(&key(3)).map(|e| e.ttl()),
        Some(Some(secs(100)))
    );
    clock.advance(Duration::from_secs(90));
    assert_gone(&with_default, &key(3));

    let (builder, _) = recorded(&clock);
    let no_default = builder.build().expect("valid");
    no_default.insert(key(4), "forever").expect("fits");
    assert_eq!(no_default.entry(&key(4)).map(|e| e.ttl()), Some(None));
    clock.advance(Duration::from_secs(1_000 * 86_400));
    assert!(no_default.contains_key(&key(4)));
    assert_eq!(no_default.purge_expired(), 0);
}

#[test]
fn reinserting_restarts_the_ttl_and_can_drop_it() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let cache = builder.default_ttl(secs(10)).build().expect("valid");
    cache.insert(key(1), "old").expect("fits");
    clock.advance(Duration::from_secs(8));
    cache.insert(key(1), "new").expect("fits");
    clock.advance(Duration::from_secs(8));
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"new"[..]));
    // The old value's deadline (t = 10 s) must not expire the new value through the wheel.
    assert_eq!(cache.purge_expired(), 0);
    assert!(cache.contains_key(&key(1)));

    // Replacing a timed entry with an untimed one removes its deadline.
    cache
        .insert_with_ttl(key(2), "timed", secs(1))
        .expect("fits");
    let untimed = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .expect("valid");
    untimed
        .insert_with_ttl(key(3), "timed", secs(1))
        .expect("fits");
    untimed.insert(key(3), "untimed").expect("fits");
    clock.advance(Duration::from_secs(5));
    assert_eq!(untimed.purge_expired(), 0);
    assert_eq!(untimed.get(&key(3)).as_deref(), Some(&b"untimed"[..]));
    assert_eq!(
        cache.purge_expired(),
        2,
        "key 1 (t = 18 s) and key 2 (t = 17 s)"
    );
    assert_eq!(
        of_cause(&events, RemovalCause::Replaced),
        vec![(key(1), "old".into())]
    );
}

#[test]
fn purge_expired_removes_exactly_the_expired_entries_and_reports_them() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let cache = builder.build().expect("valid");
    for i in 0..100 {
        cache
            .insert_with_ttl(key(i), "short", secs(1))
            .expect("fits");
    }
    for i in 100..150 {
        cache
            .insert_with_ttl(key(i), "long", secs(100))
            .expect("fits");
    }
    for i in 150..160 {
        cache.insert(key(i), "forever").expect("fits");
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        cache.purge_expired(),
        0,
        "nothing is expired at exactly the deadline"
    );
    clock.advance(NANO);
    assert_eq!(cache.purge_expired(), 100);
    assert_eq!(cache.purge_expired(), 0, "a second purge finds nothing");
    assert_eq!(cache.len(), 60);
    assert_eq!(
        cache.size_bytes(),
        50 * CacheEntry::charged_size(4) as u64 + 10 * CacheEntry::charged_size(7) as u64
    );
    let expired: HashSet<_> = of_cause(&events, RemovalCause::Expired)
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v, "short");
            k
        })
        .collect();
    assert_eq!(expired, (0..100).map(key).collect());
    assert_eq!(events.lock().len(), 100, "only Expired events");
    assert_eq!(cache.stats().evictions_expired, 100);

    clock.advance(Duration::from_secs(99));
    assert_eq!(cache.purge_expired(), 50);
    assert_eq!(cache.len(), 10);
}

/// Random TTLs from a nanosecond to days, the clock moved in random steps: after every purge,
/// exactly the entries whose deadline has passed are gone (this walks all levels of the wheel).
#[test]
fn purge_tracks_random_deadlines_across_time_scales() {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 24)
        .clock(clock.clone())
        .build()
        .expect("valid");
    let mut rng = SmallRng::seed_from_u64(7);
    let mut deadlines = Vec::new();
    let mut purged = 0;
    for round in 0..60u64 {
        for j in 0..50u64 {
            let i = round * 50 + j;
            let scale = [
                1u64,
                1_000_000,
                1_000_000_000,
                60_000_000_000,
                86_400_000_000_000,
            ][rng.random_range(0..5)];
            let ttl = Duration::from_nanos(rng.random_range(1..=3 * scale));
            cache
                .insert_with_ttl(key(i), "", Ttl::new(ttl).expect("positive"))
                .expect("fits");
            deadlines.push(clock.now().as_nanos() + ttl.as_nanos() as u64);
        }
        let step = [1u64, 1_000_000_000, 90_000_000_000, 7_200_000_000_000][rng.random_range(0..4)];
        clock.advance(Duration::from_nanos(rng.random_range(0..=step)));
        purged += cache.purge_expired();
        let now = clock.now().as_nanos();
        let live = deadlines.iter().filter(|&&d| d >= now).count();
        assert_eq!(cache.len(), live, "round {round}: only live entries remain");
        assert_eq!(purged, deadlines.len() - live);
    }
}

/// A clock that counts its readers' calls.
#[derive(Debug, Clone)]
struct CountingClock {
    clock: ManualClock,
    reads: Arc<AtomicU64>,
}

impl Clock for CountingClock {
    fn now(&self) -> Timestamp {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.clock.now()
    }
}

/// Threads of this process with the given name (Linux truncates names to 15 bytes).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|task| {
                    std::fs::read_to_string(task.path().join("comm"))
                        .is_ok_and(|comm| comm.trim_end() == name)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits (at most 10 s) until `count` threads carry `name`: a new thread names itself after it
/// starts, and a joined thread leaves `/proc` a moment after it exits.
fn wait_for_threads(name: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_named(name) != count {
        assert!(
            Instant::now() < deadline,
            "expected {count} threads named {name}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sweeper_removes_expired_entries_without_traffic_and_stops_on_drop() {
    const SWEEPER: &str = "memocache-sweep";
    let clock = ManualClock::new();
    let reads = Arc::new(AtomicU64::new(0));
    let counting = CountingClock {
        clock: clock.clone(),
        reads: Arc::clone(&reads),
    };
    let (_, events) = recorded(&clock);
    let sink = Arc::clone(&events);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(counting)
        .default_ttl(secs(60))
        .sweep_interval(Duration::from_millis(2))
        .eviction_listener(move |k, v, cause| sink.lock().push((*k, v.clone(), cause)))
        .build()
        .expect("valid");
    if cfg!(target_os = "linux") {
        wait_for_threads(SWEEPER, 1);
    }
    for i in 0..20 {
        cache.insert(key(i), "x").expect("fits");
    }
    cache
        .insert_with_ttl(key(99), "x", secs(600))
        .expect("fits");

    clock.advance(Duration::from_secs(61));
    // No reads or writes from here on: only the sweeper can remove the entries.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.len() > 1 {
        assert!(
            Instant::now() < deadline,
            "the sweeper did not purge within 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(of_cause(&events, RemovalCause::Expired).len(), 20);
    assert_eq!(cache.stats().evictions_expired, 20);

    let handle = cache.clone();
    drop(cache);
    assert_eq!(
        handle.len(),
        1,
        "a live handle keeps the cache and its sweeper"
    );
    drop(handle);
    // Dropping the last handle joined the sweeper, which released its clock.
    if cfg!(target_os = "linux") {
        wait_for_threads(SWEEPER, 0);
    }
    assert_eq!(
        Arc::strong_count(&reads),
        1,
        "the cache and its clock were freed"
    );
    let after = reads.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        reads.load(Ordering::Relaxed),
        after,
        "nothing reads the clock any more"
    );
}

/// The longest sweep interval there is: the sweeper sleeps for good between sweeps (a
/// `park_timeout` whose deadline overflows the clock), yet dropping the cache wakes it and
/// joins it at once.
#[test]
fn a_sweeper_with_the_longest_interval_stops_at_once_on_drop() {
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .sweep_interval(Duration::MAX)
        .build()
        .expect("valid");
    cache.insert(key(1), "x").expect("fits");
    let started = Instant::now();
    drop(cache);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drop waited {:?} for the sweeper",
        started.elapsed()
    );
}

/// Waits (at most 10 s) for `done`, sleeping between looks: for what a sweeper does on its
/// own thread.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An eviction listener that uses its cache through a `WeakCache` (here, on the sweeper's
/// thread) does not keep it alive: once the last `Cache` handle is dropped, the cache and
/// its listener are freed and the sweeper stops. One holding a `Cache` handle would be a
/// cycle that keeps them for ever (checked too, so that the test shows what it guards).
#[test]
fn a_listener_holding_a_weak_handle_lets_its_cache_and_sweeper_go() {
    for weak in [true, false] {
        let clock = ManualClock::new();
        let alive = Arc::new(());
        let in_listener = Arc::clone(&alive);
        let weak_slot: Arc<std::sync::OnceLock<WeakCache>> = Arc::default();
        let strong_slot: Arc<parking_lot::Mutex<Option<Cache>>> = Arc::default();
        let (weak_handle, strong_handle) = (Arc::clone(&weak_slot), Arc::clone(&strong_slot));
        let cache = Cache::builder()
            .max_bytes(1 << 20)
            .clock(clock.clone())
            .sweep_interval(Duration::from_millis(1))
            .eviction_listener(move |k, _, cause| {
                let _ = &in_listener;
                let cache = weak_handle
                    .get()
                    .and_then(WeakCache::upgrade)
                    .or_else(|| strong_handle.lock().clone());
                if let Some(cache) = cache
                    && cause == RemovalCause::Expired
                {
                    cache.insert(*k, "again").expect("fits");
                }
            })
            .build()
            .expect("valid");
        if weak {
            weak_slot.set(cache.downgrade()).expect("set once");
        } else {
            *strong_slot.lock() = Some(cache.clone());
        }
        cache.insert_with_ttl(key(1), "x", secs(1)).expect("fits");
        clock.advance(Duration::from_secs(2));
        wait_for("the sweeper's listener re-inserted the key", || {
            cache.peek(&key(1)).as_deref() == Some(&b"again"[..])
        });
        let watch = cache.downgrade();
        drop(cache);
        if weak {
            wait_for("the cache is freed", || Arc::strong_count(&alive) == 1);
            assert!(watch.upgrade().is_none());
        } else {
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(Arc::strong_count(&alive), 2, "the cycle keeps the cache");
            assert!(watch.upgrade().is_some());
            // Broken by hand, so that no sweeper outlives the test.
            let last = strong_slot.lock().take();
            drop(last);
            wait_for("the cache is freed", || Arc::strong_count(&alive) == 1);
        }
    }
}

/// The last handle dropped from inside the sweeper's own listener call: the cache is freed
/// on the sweeper's thread when its purge returns, without the thread joining itself (which
/// fails) or deadlocking, and nothing is left running or held.
#[test]
fn the_last_handle_dropped_in_the_sweepers_listener_frees_the_cache() {
    let clock = ManualClock::new();
    let alive = Arc::new(());
    let in_listener = Arc::clone(&alive);
    let slot: Arc<parking_lot::Mutex<Option<Cache>>> = Arc::default();
    let listener_slot = Arc::clone(&slot);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .sweep_interval(Duration::from_millis(1))
        .eviction_listener(move |_, _, _| {
            let _ = &in_listener;
            // Taken out of the lock first: the cache is not dropped while the lock is held.
            let last = listener_slot.lock().take();
            drop(last);
        })
        .build()
        .expect("valid");
    cache.insert_with_ttl(key(1), "x", secs(1)).expect("fits");
    let watch = cache.downgrade();
    *slot.lock() = Some(cache);
    clock.advance(Duration::from_secs(2));
    wait_for("the cache is freed", || Arc::strong_count(&alive) == 1);
    assert!(watch.upgrade().is_none());
}

/// With the real clocks and TTLs of a few microseconds to a few milliseconds, no read returns
/// a value whose deadline a clock reading taken before the read had passed, and once a value
/// is gone it stays gone on every read path. (`CoarseClock` moves in kernel ticks, so its
/// entries live up to a tick; the promise is about the cache's own clock, which the test reads
/// too.)
#[test]
fn real_clocks_never_serve_a_value_past_its_deadline() {
    let clocks: [Arc<dyn Clock>; 2] = [Arc::new(SystemClock), Arc::new(CoarseClock)];
    for clock in clocks {
        let cache = Cache::builder()
            .max_bytes(1 << 20)
            .shared_clock(Arc::clone(&clock))
            .build()
            .expect("valid");
        let mut reads = 0u64;
        for i in 0..30u64 {
            let ttl = Ttl::new(Duration::from_micros(1 + i * i * 2)).expect("positive");
            cache.insert_with_ttl(key(i), "v", ttl).expect("fits");
            // Gone already, on a fine clock and a tiny TTL: nothing to check.
            let Some(entry) = cache.entry(&key(i)) else {
                continue;
            };
            let deadline = entry.expires_at().expect("a TTL");
            assert_eq!(
                Some(deadline),
                entry
                    .ttl()
                    .map(|ttl| entry.created_at().saturating_add(ttl.as_duration()))
            );
            loop {
                let before = clock.now();
                let value = cache.get(&key(i));
                let after = clock.now();
                reads += 1;
                match value {
                    Some(_) => assert!(before <= deadline, "{clock:?}: served past {deadline}"),
                    None => {
                        assert!(after > deadline, "{clock:?}: gone before {deadline}");
                        assert_gone(&cache, &key(i));
                        break;
                    }
                }
            }
        }
        assert!(reads > 30, "{clock:?}: {reads} reads");
    }
}

/// Bug: at the clock's last nanosecond (`u64::MAX`, where a `ManualClock` advanced by
/// `Duration::MAX` stops), a value inserted with a TTL was stored already expired: its deadline
/// was cut to one nanosecond before the end of time, which is before the insert. The insert
/// returned `Ok` and counted the entry, yet no read ever returned it, and a get-or-insert ran
/// its loader on every call, each store reporting the last one as expired. Nothing comes after
/// that instant, so the entry can never expire there (as `CacheEntry::is_expired` says of it).
#[test]
fn a_value_inserted_at_the_end_of_time_is_live() {
    let clock = ManualClock::new();
    clock.advance(Duration::MAX);
    let (builder, events) = recorded(&clock);
    let cache = builder.default_ttl(secs(10)).build().expect("valid");
    cache.insert(key(1), "default").expect("fits");
    cache
        .insert_with_ttl(key(2), "own", Ttl::MAX)
        .expect("fits");
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"default"[..]));
    assert_eq!(cache.peek(&key(2)).as_deref(), Some(&b"own"[..]));
    assert!(cache.contains_key(&key(2)));
    let entry = cache.entry(&key(1)).expect("live");
    assert!(!entry.is_expired(&clock));
    let mut runs = 0;
    for _ in 0..3 {
        let loaded = cache.get_or_insert_with(key(3), || {
            runs += 1;
            "loaded"
        });
        assert_eq!(loaded.expect("fits"), &b"loaded"[..]);
    }
    assert_eq!(runs, 1, "the loaded value was served from the cache");
    assert_eq!(cache.purge_expired(), 0);
    assert_eq!(cache.len(), 3);
    assert!(events.lock().is_empty(), "{:?}", events.lock());
}
