//! Configuration: [`CacheBuilder`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::listener::Listener;
use super::{Cache, CacheError, RemovalCause};
use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::time::{Clock, ClockHandle, SharedClock, Ttl};

/// Most shards a cache may have.
pub const MAX_SHARDS: usize = 1024;

/// Below this many entries per shard, fewer shards are used: per-shard eviction needs a few
/// dozen entries to rank well.
const MIN_ENTRIES_PER_SHARD: u64 = 1024;

/// What is wrong with a [`CacheBuilder`]'s settings: the value of
/// [`CacheError::InvalidConfig`], one variant a setting, so that a caller can tell which
/// setting to fix without reading the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// [`CacheBuilder::max_bytes`] was not called: every cache has a byte budget.
    #[error("max_bytes is required")]
    MissingMaxBytes,
    /// [`CacheBuilder::max_bytes`] is below the charge of one empty entry.
    #[error("max_bytes is {max_bytes}, less than one empty entry ({min} bytes)")]
    MaxBytesTooSmall {
        /// The budget given.
        max_bytes: u64,
        /// The charge of an entry with an empty value ([`CacheEntry::charged_size`]`(0)`).
        min: u64,
    },
    /// [`CacheBuilder::max_entries`] is 0.
    #[error("max_entries must be at least 1")]
    ZeroMaxEntries,
    /// [`CacheBuilder::shards`] is not a power of two from 1 to [`MAX_SHARDS`].
    #[error("shards must be a power of two from 1 to {MAX_SHARDS}, got {0}")]
    Shards(usize),
    /// [`CacheBuilder::sweep_interval`] is zero.
    #[error("sweep_interval must be positive")]
    ZeroSweepInterval,
}

/// Configures and builds a [`Cache`]. Start with [`Cache::builder`].
///
/// ```
/// use memocache::{Cache, RemovalCause, Ttl};
///
/// let cache = Cache::builder()
///     .max_bytes(64 * 1024 * 1024)
///     .max_entries(100_000)
///     .default_ttl(Ttl::hours(24)?)
///     .eviction_listener(|key, _value, cause| {
///         if cause == RemovalCause::Size {
///             eprintln!("evicted {key}");
///         }
///     })
///     .build()?;
/// assert!(cache.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct CacheBuilder {
    max_bytes: Option<u64>,
    max_entries: Option<u64>,
    default_ttl: Option<Ttl>,
    clock: ClockHandle,
    listener: Option<Listener>,
    shards: Option<usize>,
    sweep_interval: Option<Duration>,
    /// Set by `restore_from` (in the snapshot module).
    pub(crate) restore_from: Option<PathBuf>,
}

impl Default for CacheBuilder {
    fn default() -> CacheBuilder {
        CacheBuilder {
            max_bytes: None,
            max_entries: None,
            default_ttl: None,
            clock: ClockHandle::coarse(),
            listener: None,
            shards: None,
            sweep_interval: None,
            restore_from: None,
        }
    }
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_bytes", &self.max_bytes)
            .field("max_entries", &self.max_entries)
            .field("default_ttl", &self.default_ttl)
            .field("clock", &self.clock)
            .field("listener", &self.listener.is_some())
            .field("shards", &self.shards)
            .field("sweep_interval", &self.sweep_interval)
            .field("restore_from", &self.restore_from)
            .finish()
    }
}

impl CacheBuilder {
    /// The byte budget (required): the sum of [`CacheEntry::charged_size`] over all entries
    /// never exceeds it.
    pub fn max_bytes(mut self, max_bytes: u64) -> CacheBuilder {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// A bound on the number of entries, on top of the byte budget.
    pub fn max_entries(mut self, max_entries: u64) -> CacheBuilder {
        self.max_entries = Some(max_entries);
        self
    }

    /// The TTL of entries inserted without one, and of entries a snapshot restores without
    /// one (saved by a cache without a default TTL). Without it, entries live until evicted.
    pub fn default_ttl(mut self, ttl: Ttl) -> CacheBuilder {
        self.default_ttl = Some(ttl);
        self
    }

    /// The clock for TTLs and access times (default: [`crate::CoarseClock`], which moves in
    /// steps of a few milliseconds; [`crate::SystemClock`] for finer TTLs, at a cost on every
    /// hit — see [`crate::time`]).
    ///
    /// Any [`Clock`] by value — a [`crate::ManualClock`] (whose clones share one time), an
    /// `Arc` of a clock, a [`SharedClock`] — so that one clock given to a cache and to a
    /// [`crate::JobQueue`] ([`crate::JobQueueBuilder::clock`], which takes the same) is one
    /// timeline. The default is read by a direct call rather than through the trait object's
    /// vtable, and so is a [`crate::CoarseClock`] (or an `Arc` of one) given here, whose type
    /// this method sees; any other clock is read through the vtable, a [`SharedClock`] as the
    /// very handle given.
    pub fn clock(mut self, clock: impl Clock + 'static) -> CacheBuilder {
        self.clock = ClockHandle::of(clock);
        self
    }

    /// The clock, as a shared handle: the same as [`clock`](CacheBuilder::clock) given a
    /// [`SharedClock`].
    ///
    /// It is read through the trait object's vtable, even an `Arc::new(CoarseClock)`, whose
    /// type the handle does not tell: the same readings as
    /// [`clock(CoarseClock)`](CacheBuilder::clock) or the default, at a few instructions more a
    /// read.
    pub fn shared_clock(mut self, clock: SharedClock) -> CacheBuilder {
        self.clock = ClockHandle::shared(clock);
        self
    }

    /// Called after every removal, with no cache lock held, so it may use the cache —
    /// through a [`crate::WeakCache`]: the listener is part of the cache, so a [`Cache`]
    /// handle it holds keeps the cache, its values and its sweeper thread alive for ever. If
    /// it panics, the cache still finishes the call (every removal is reported) and then
    /// re-raises the first panic to the caller (unless the call was made while its thread
    /// unwinds from another panic: the first is then dropped, as re-raising would abort the
    /// process). It is not called for the values a cache still
    /// holds when its last handle is dropped: a dropped cache reports nothing (see [`Cache`]).
    ///
    /// A cache that memoizes a job queue's results ([`crate::JobQueueBuilder::cache`]) tells
    /// the listener of the removals the queue's calls make once the queue's lock is released,
    /// so the listener may call that queue too, through a [`crate::WeakJobQueue`] (the queue
    /// holds the cache, so a [`crate::JobQueue`] handle in the listener is a cycle too).
    ///
    /// Removals made by the listener's own calls (an insert into a full cache evicts) are not
    /// reported from inside it, which could nest without bound and overflow the stack: they
    /// are queued and reported, in order, when it returns, by the call that first called it
    /// on this thread. That call re-raises their panics too. A listener that answers every
    /// eviction with an insert that evicts again therefore loops rather than crashes: give
    /// the chain an end.
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(&CacheKey, &Bytes, RemovalCause) + Send + Sync + 'static,
    ) -> CacheBuilder {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// The number of shards, a power of two from 1 to [`MAX_SHARDS`]. By default four per
    /// core, fewer for small caches.
    pub fn shards(mut self, shards: usize) -> CacheBuilder {
        self.shards = Some(shards);
        self
    }

    /// Starts a background thread that removes expired entries every `interval`, as
    /// [`Cache::purge_expired`] does. The cache owns the thread and stops it when its last
    /// handle is dropped. `interval` is wall-clock time, while what has expired is judged on
    /// the cache's clock (with a [`crate::ManualClock`], what the test has advanced it past).
    /// A sweep write-locks only the shards that may hold an expired entry (each publishes a
    /// lower bound on its deadlines), so the readers of a busy cache with nothing due are not
    /// stalled every interval. A zero interval fails [`CacheBuilder::build`]. Without a
    /// sweeper, expired entries
    /// stay counted and charged until [`Cache::purge_expired`], an access to their key or a
    /// full cache's need for room (the first insert of a wheel tick that must evict purges
    /// them all, see [`Cache::purge_expired`]) removes them.
    pub fn sweep_interval(mut self, interval: Duration) -> CacheBuilder {
        self.sweep_interval = Some(interval);
        self
    }

    /// Builds the cache; an inconsistent configuration is an error that says what is wrong.
    pub fn build(self) -> Result<Cache, CacheError> {
        let invalid = |e: ConfigError| Err(CacheError::InvalidConfig(e));
        let Some(max_bytes) = self.max_bytes else {
            return invalid(ConfigError::MissingMaxBytes);
        };
        let min = CacheEntry::charged_size(0) as u64;
        if max_bytes < min {
            return invalid(ConfigError::MaxBytesTooSmall { max_bytes, min });
        }
        let max_entries = self.max_entries.unwrap_or(u64::MAX);
        if max_entries == 0 {
            return invalid(ConfigError::ZeroMaxEntries);
        }
        let shards = match self.shards {
            Some(n) if !n.is_power_of_two() || n > MAX_SHARDS => {
                return invalid(ConfigError::Shards(n));
            }
            Some(n) => n,
            None => default_shards(max_bytes / min, max_entries),
        };
        if self.sweep_interval.is_some_and(|i| i.is_zero()) {
            return invalid(ConfigError::ZeroSweepInterval);
        }
        let cache = Cache::from_config(super::Config {
            max_bytes,
            max_entries,
            default_ttl: self.default_ttl,
            clock: self.clock,
            listener: self.listener,
            shards,
            sweep_interval: self.sweep_interval,
        });
        if let Some(path) = &self.restore_from {
            crate::snapshot::restore_on_build(&cache, path)?;
        }
        Ok(cache)
    }
}

fn default_shards(entries_by_bytes: u64, max_entries: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let by_cores = (cores * 4).next_power_of_two().min(MAX_SHARDS);
    let most_entries = entries_by_bytes.min(max_entries);
    let by_size = (most_entries / MIN_ENTRIES_PER_SHARD).max(1);
    // Largest power of two not above by_size.
    let by_size = 1usize << (63 - by_size.leading_zeros()).min(10);
    by_cores.min(by_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shard count a cache of `max_bytes` and `max_entries` is built with by default.
    fn shards_for(max_bytes: u64, max_entries: Option<u64>) -> usize {
        let builder = Cache::builder().max_bytes(max_bytes);
        let builder = match max_entries {
            Some(n) => builder.max_entries(n),
            None => builder,
        };
        builder.build().expect("valid").shard_count()
    }

    #[test]
    fn debug_shows_the_settings_and_only_whether_a_listener_is_set() {
        let builder = Cache::builder()
            .max_bytes(4096)
            .shards(2)
            .eviction_listener(|_, _, _| {});
        let shown = format!("{builder:?}");
        for field in ["max_bytes: Some(4096)", "shards: Some(2)", "listener: true"] {
            assert!(shown.contains(field), "{shown}");
        }
    }

    #[test]
    fn a_shared_clock_is_the_one_ttls_are_judged_on() {
        let clock = Arc::new(crate::time::ManualClock::new());
        let cache = Cache::builder()
            .max_bytes(1 << 20)
            .default_ttl(Ttl::seconds(10).expect("valid"))
            .shared_clock(clock.clone())
            .build()
            .expect("valid");
        let key = CacheKey::from_content(b"k", "t").expect("valid prefix");
        cache.insert(key, &b"v"[..]).expect("fits");
        clock.advance(Duration::from_secs(9));
        assert!(
            cache.get(&key).is_some(),
            "not yet expired on the shared clock"
        );
        clock.advance(Duration::from_secs(2));
        assert!(cache.get(&key).is_none(), "expired on the shared clock");
        // The cache hands back the clock it was given, not a copy.
        let shared: crate::time::SharedClock = clock;
        assert!(Arc::ptr_eq(cache.clock(), &shared));
    }

    #[test]
    fn default_shards_are_four_per_core_and_fewer_for_small_caches() {
        let entry = CacheEntry::charged_size(0) as u64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_core = (cores * 4).next_power_of_two().min(MAX_SHARDS);
        // Large: four per core (rounded up to a power of two).
        assert_eq!(shards_for(1 << 40, None), per_core);
        // Small: one shard per MIN_ENTRIES_PER_SHARD entries the budget holds, rounded down
        // to a power of two, whichever of bytes and entries is the tighter bound.
        let per_shard = MIN_ENTRIES_PER_SHARD;
        assert_eq!(shards_for(100 * entry, None), 1);
        assert_eq!(shards_for(3 * per_shard * entry, None), 2);
        assert_eq!(shards_for(1 << 40, Some(3 * per_shard)), 2);
        assert_eq!(shards_for(3 * per_shard * entry, Some(1 << 40)), 2);
        assert_eq!(shards_for(1 << 40, Some(per_shard - 1)), 1);
    }
}
