//! Always-on statistics, striped per thread so that counting a hit never contends on one line.
//!
//! Every thread gets a process-wide *thread number*, unique among live threads and handed to
//! a new thread once its holder has exited, so the numbers stay as small as the number of
//! threads. A cache has a few cache-line-aligned stripes per core. A thread whose number is
//! below that count owns the stripe of that number: nobody else writes it, so it counts with a
//! relaxed load and store, which is exact and cheaper than a locked read-modify-write (the
//! `lock` prefix also stalls the core's later loads, the cache misses a hit is made of, until
//! it completes). Threads beyond the owned stripes share a second set of stripes and count with
//! `fetch_add`. [`CacheStats`] sums all stripes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::RemovalCause;

/// A point-in-time summary of a cache's counters.
///
/// Counters are read one by one while the cache keeps serving, so under concurrent traffic a
/// snapshot can mix values from slightly different instants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads that found a live value.
    pub hits: u64,
    /// Reads that found nothing (or only an expired value).
    pub misses: u64,
    /// Inserts of a key that was absent.
    pub inserts: u64,
    /// Inserts that replaced a live value.
    pub updates: u64,
    /// Entries evicted to respect the byte or entry budget.
    pub evictions_size: u64,
    /// Entries removed because their TTL ran out.
    pub evictions_expired: u64,
    /// Entries removed by `remove`, `remove_if` or `clear`.
    pub removals_explicit: u64,
    /// Values replaced by a newer insert of the same key (equals `updates`).
    pub replaced: u64,
    /// Loader runs (`get_or_insert_with` and friends) that produced a value.
    pub loads: u64,
    /// Loader runs that returned an error or panicked.
    pub load_failures: u64,
    /// Entries now, as [`Cache::len`](crate::Cache::len): expired ones not yet purged included.
    pub entries: u64,
    /// Bytes charged now (see [`crate::CacheEntry::charged_size`]).
    pub bytes: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`; 0.0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        // In floating point: the sum of two u64 counts can exceed u64::MAX.
        let reads = self.hits as f64 + self.misses as f64;
        if reads == 0.0 {
            0.0
        } else {
            self.hits as f64 / reads
        }
    }

    /// Evictions and removals with the given cause.
    pub fn removals(&self, cause: RemovalCause) -> u64 {
        match cause {
            RemovalCause::Size => self.evictions_size,
            RemovalCause::Expired => self.evictions_expired,
            RemovalCause::Removed => self.removals_explicit,
            RemovalCause::Replaced => self.replaced,
        }
    }
}

/// One stripe of counters, on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) inserts: AtomicU64,
    pub(super) updates: AtomicU64,
    pub(super) evictions_size: AtomicU64,
    pub(super) evictions_expired: AtomicU64,
    pub(super) removals_explicit: AtomicU64,
    pub(super) loads: AtomicU64,
    pub(super) load_failures: AtomicU64,
}

/// One of the counters a [`Stripe`] counts into.
#[derive(Clone, Copy, Debug)]
pub(super) enum Counter {
    Hits,
    Misses,
    Inserts,
    Updates,
    Loads,
    LoadFailures,
    Removal(RemovalCause),
}

impl Counters {
    fn get(&self, counter: Counter) -> &AtomicU64 {
        match counter {
            Counter::Hits => &self.hits,
            Counter::Misses => &self.misses,
            Counter::Inserts => &self.inserts,
            Counter::Updates | Counter::Removal(RemovalCause::Replaced) => &self.updates,
            Counter::Loads => &self.loads,
            Counter::LoadFailures => &self.load_failures,
            Counter::Removal(RemovalCause::Size) => &self.evictions_size,
            Counter::Removal(RemovalCause::Expired) => &self.evictions_expired,
            Counter::Removal(RemovalCause::Removed) => &self.removals_explicit,
        }
    }

    pub(super) fn sum<'a>(all: impl Iterator<Item = &'a Counters>) -> CacheStats {
        let mut stats = CacheStats::default();
        for c in all {
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            stats.hits += get(&c.hits);
            stats.misses += get(&c.misses);
            stats.inserts += get(&c.inserts);
            stats.updates += get(&c.updates);
            stats.evictions_size += get(&c.evictions_size);
            stats.evictions_expired += get(&c.evictions_expired);
            stats.removals_explicit += get(&c.removals_explicit);
            stats.loads += get(&c.loads);
            stats.load_failures += get(&c.load_failures);
        }
        stats.replaced = stats.updates;
        stats
    }
}

/// Per-thread stripes of [`Counters`]: `owned` ones, each written only by the thread whose
/// number it has, then `shared` ones for the threads beyond them.
#[derive(Debug)]
pub(super) struct StripedCounters {
    owned: Box<[Counters]>,
    shared: Box<[Counters]>,
}

/// The calling thread's stripe; see the module docs.
pub(super) struct Stripe<'a> {
    counters: &'a Counters,
    /// No other thread writes `counters`.
    owned: bool,
}

impl Stripe<'_> {
    #[inline]
    pub(super) fn bump(&self, counter: Counter) {
        self.add(counter, 1);
    }

    #[inline]
    pub(super) fn add(&self, counter: Counter, n: u64) {
        let counter = self.counters.get(counter);
        if self.owned {
            // Sole writer: no update can come between the load and the store.
            counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        } else {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl StripedCounters {
    pub(super) fn new() -> StripedCounters {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stripes = (cores * 2).next_power_of_two();
        let make = || (0..stripes).map(|_| Counters::default()).collect();
        StripedCounters {
            owned: make(),
            shared: make(),
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub(super) fn local(&self) -> Stripe<'_> {
        match thread_number::current() {
            Some(n) if n < self.owned.len() => Stripe {
                counters: &self.owned[n],
                owned: true,
            },
            // A thread past the owned stripes, or one whose number is already gone because it
            // is running thread-local destructors.
            n => Stripe {
                counters: &self.shared[n.unwrap_or(0) & (self.shared.len() - 1)],
                owned: false,
            },
        }
    }

    pub(super) fn sum(&self) -> CacheStats {
        Counters::sum(self.owned.iter().chain(self.shared.iter()))
    }
}

/// Process-wide thread numbers: the smallest free ones are not sought, but a number is given
/// back when its thread exits and handed to the next new thread, so they stay about as small as
/// the number of live threads.
mod thread_number {
    use super::{AtomicUsize, Mutex, Ordering};

    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static FREED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    struct Number(usize);

    impl Drop for Number {
        fn drop(&mut self) {
            // The mutex orders this thread's last counting before the next holder's first.
            FREED.lock().push(self.0);
        }
    }

    thread_local! {
        static NUMBER: Number = Number(
            FREED.lock().pop().unwrap_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed)),
        );
    }

    /// The calling thread's number; `None` once its thread-local storage is being destroyed,
    /// when the number may already belong to another thread.
    #[inline]
    pub(super) fn current() -> Option<usize> {
        NUMBER.try_with(|n| n.0).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::thread;

    #[test]
    fn hit_ratio_of_counts_near_u64_max_does_not_overflow() {
        let stats = super::CacheStats {
            hits: u64::MAX,
            misses: u64::MAX,
            ..Default::default()
        };
        assert_eq!(stats.hit_ratio(), 0.5);
    }

    /// Both ways of counting are exact: a stripe's owner (a load and a store) and the
    /// threads that share a stripe (`fetch_add`). Which one a given test thread uses depends
    /// on its thread number, so each is checked here directly.
    #[test]
    fn owned_and_shared_stripes_count_exactly() {
        use super::{Counter, Counters, RemovalCause, Stripe};
        for owned in [true, false] {
            let counters = Counters::default();
            let stripe = Stripe {
                counters: &counters,
                owned,
            };
            stripe.bump(Counter::Hits);
            stripe.bump(Counter::Hits);
            stripe.add(Counter::Misses, 5);
            stripe.add(Counter::Misses, 2);
            stripe.add(Counter::Removal(RemovalCause::Replaced), 3);
            let stats = Counters::sum(std::iter::once(&counters));
            assert_eq!(
                (stats.hits, stats.misses, stats.updates, stats.replaced),
                (2, 7, 3, 3),
                "owned: {owned}"
            );
        }
    }

    /// Many threads counting at once, owners and sharers alike (64 live threads hold 64
    /// distinct numbers, more than there are owned stripes), lose no count.
    #[test]
    fn counts_from_many_live_threads_are_exact() {
        use super::{Counter, StripedCounters};
        const THREADS: usize = 64;
        const BUMPS: u64 = 1_000;
        let counters = StripedCounters::new();
        let barrier = Barrier::new(THREADS);
        thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    barrier.wait();
                    for _ in 0..BUMPS {
                        counters.local().bump(Counter::Hits);
                    }
                });
            }
        });
        assert_eq!(counters.sum().hits, THREADS as u64 * BUMPS);
    }

    use super::thread_number;

    #[test]
    fn live_threads_have_distinct_numbers() {
        const THREADS: usize = 16;
        let barrier = Barrier::new(THREADS);
        let mut numbers: Vec<usize> = thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        let n = thread_number::current();
                        // Every thread holds its number until all have taken one.
                        barrier.wait();
                        n
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic").expect("a number"))
                .collect()
        });
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), THREADS);
    }

    #[test]
    fn numbers_of_exited_threads_are_handed_on() {
        // Without reuse, 1 000 threads one after another would take 1 000 numbers; with it they
        // take a few (other tests' threads may hold some meanwhile).
        let most = (0..1_000)
            .map(|_| {
                thread::spawn(thread_number::current)
                    .join()
                    .expect("no panic")
                    .expect("a number")
            })
            .max();
        assert!(most.is_some_and(|n| n < 500), "largest number {most:?}");
    }
}
