//! Always-on statistics, striped per thread so that counting a hit never contends on one line.
//!
//! Each thread counts into one of a few cache-line-aligned stripes (chosen round-robin the first
//! time the thread counts); [`CacheStats`] sums the stripes. Counting is a relaxed `fetch_add`
//! on a line that, with no more threads than stripes, no other core writes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
    /// Entries removed by `remove` or `clear`.
    pub removals_explicit: u64,
    /// Values replaced by a newer insert of the same key (equals `updates`).
    pub replaced: u64,
    /// Loader runs (`get_or_insert_with` and friends) that produced a value.
    pub loads: u64,
    /// Loader runs that returned an error or panicked.
    pub load_failures: u64,
    /// Live entries now.
    pub entries: u64,
    /// Bytes charged now (see [`crate::CacheEntry::charged_size`]).
    pub bytes: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`; 0.0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
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

impl Counters {
    #[inline]
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn removal(&self, cause: RemovalCause) -> &AtomicU64 {
        match cause {
            RemovalCause::Size => &self.evictions_size,
            RemovalCause::Expired => &self.evictions_expired,
            RemovalCause::Removed => &self.removals_explicit,
            RemovalCause::Replaced => &self.updates,
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

/// Per-thread stripes of [`Counters`].
#[derive(Debug)]
pub(super) struct StripedCounters {
    stripes: Box<[Counters]>,
}

impl StripedCounters {
    pub(super) fn new() -> StripedCounters {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stripes = (cores * 2).next_power_of_two();
        StripedCounters {
            stripes: (0..stripes).map(|_| Counters::default()).collect(),
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub(super) fn local(&self) -> &Counters {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let stripe = STRIPE.with(|s| *s);
        &self.stripes[stripe & (self.stripes.len() - 1)]
    }

    pub(super) fn sum(&self) -> CacheStats {
        Counters::sum(self.stripes.iter())
    }
}
