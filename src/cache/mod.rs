//! The cache engine: a concurrent, sharded, size-bounded map from [`CacheKey`] to bytes.
//!
//! # Design
//!
//! * **Shards.** Keys are spread over a power-of-two number of shards, each a
//!   `parking_lot::RwLock` around a slab of records, a `hashbrown` index of slot numbers, the
//!   eviction policy's queues and an expiry wheel. There is no global lock. (Not `DashMap`,
//!   the map the product card named: a shard carries its policy, wheel and slab under the
//!   same lock as its index, which `DashMap`'s shards have no room for, and a bare
//!   `DashMap<[u8; 32], Bytes>` takes more memory an entry than this whole cache does — see
//!   the README's memory table. `dashmap` stays as that bench's baseline.)
//! * **Hits take no exclusive lock and allocate nothing.** A hit takes the shard's *read*
//!   lock, checks the deadline, and records the access with atomics only (access time, access
//!   count, the policy's 2-bit frequency). Values are [`Bytes`], so returning one is a
//!   reference-count increment. (A `Bytes` built from a `Vec` allocates a shared header on its
//!   first clone; the cache takes that clone at insert time so no hit ever pays it.)
//! * **Hashing.** Keys are SHA-256 digests, but an attacker who controls content can grind
//!   digests with shared low bits. Keys are re-mixed with a per-process random seed (see
//!   `shard::KeyHasher`) before they pick a shard and a bucket.
//! * **Budget.** Each entry is charged [`CacheEntry::charged_size`]: value + key + a fixed
//!   overhead. Two global counters (bytes, entries) are *reserved* with compare-and-swap before
//!   an entry is stored, and the inserter evicts — from its own shard first, then the others,
//!   never holding two shard locks — until its reservation fits. The counters therefore never
//!   exceed the bounds, under any interleaving: after every call, `size_bytes() <= max_bytes`
//!   and `len() <= max_entries`. In a full cache, a new key takes over its victims' budget
//!   under the shard lock it already holds, so the shared counters move only by the
//!   difference in size, if any: two threads inserting into a full cache do not pass the
//!   counters' cache lines back and forth on every insert. An update that grows makes room
//!   the same way but spares its own key, whose old value is replaced, not evicted. A value
//!   larger than the budget is refused with [`CacheError::TooLarge`] before anything is
//!   evicted.
//! * **Eviction policy.** S3-FIFO per shard, its small/main split adapted by ghost hits as
//!   ARC adapts its lists, and re-admission from the ghost gated by a TinyLFU frequency sketch;
//!   in shards of up to 4,096 entries a key leaving *small* unhit may still enter *main* if the
//!   sketch ranks it clearly above *main*'s next victim — see `src/cache/policy.rs` for why.
//! * **Memory.** A record is 96 bytes, key (34) included; deadlines are exact, creation and
//!   access times are kept as 32-bit offsets (see `shard::Record`).
//! * **Expiry.** An expired entry is never returned: expired by the cache's clock, which is
//!   by default [`CoarseClock`](crate::CoarseClock), the kernel's tick clock, read for a
//!   fraction of what the time-stamp counter costs a hit (see [`crate::time`] for the
//!   measurements and for what the ticks mean for a deadline). Expired entries are also removed
//!   proactively, in amortized O(1) each, by a hierarchical timer wheel per shard (see
//!   `src/cache/expiry.rs`) that [`Cache::purge_expired`] advances — by hand, or every
//!   interval from a sweeper thread the builder can start
//!   ([`CacheBuilder::sweep_interval`]), so expiry does not wait for traffic. A purge
//!   write-locks only the shards that may hold an expired entry, by a lower bound on its
//!   deadlines that each shard publishes, so a sweep does not stall readers. A full cache
//!   evicts expired entries before live ones: the first insert of each wheel tick (2^30 ns,
//!   about a second) that has to evict purges every shard first, so that, but for inserts
//!   racing that purge, no live entry is evicted for size while an entry whose deadline
//!   passed before the current tick is still stored. Not before every eviction: see
//!   `Inner::store`.
//! * **Loading.** [`Cache::get_or_insert_with`] coalesces concurrent misses so the loader
//!   runs once per key; a loader that loads its own key again on its own thread gets
//!   [`CacheError::ReentrantLoad`] rather than waiting for itself, and a load that would
//!   close a cycle of loads waiting on each other across threads gets
//!   [`CacheError::LoadCycle`]. See `src/cache/loader.rs`.
//! * **Listeners.** The eviction listener is called after the shard lock is released, with the
//!   [`RemovalCause`] (an insert over an expired, not yet purged value reports it as
//!   `Expired`, and counts as an insert). It may use the cache, loads included: a loader's
//!   removals are reported after its waiters are released. A panicking listener does not
//!   stop the call's work: every removal is still reported and every shard of a `clear` or
//!   `purge_expired` is done, then the first panic is re-raised to the caller (the sweeper
//!   thread survives it), or dropped if the call was made while its thread unwinds from
//!   another panic (from a host's `Drop`), where re-raising it would abort the process. So
//!   does a removed value whose drop panics (the owner of a `Bytes::from_owner`): values are
//!   dropped only after the books are settled and the locks released, and a `clear`, a purge,
//!   a restore, a listener's report, any call that removed more than one entry and any call
//!   made while its thread unwinds drop them one by one and go on. So does the drop of a
//!   cache's last handle, which drops the values it still holds unreported, and then the
//!   listener (see [`Cache`]). Removals made by the listener's own calls are queued and
//!   reported after it returns, in a loop, never by a nested listener call: a listener that
//!   inserts into a full cache cannot grow the stack without bound (see
//!   `src/cache/listener.rs`).

mod builder;
mod expiry;
mod listener;
mod loader;
mod policy;
mod shard;
mod stats;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use builder::{CacheBuilder, ConfigError, MAX_SHARDS};
pub use loader::LoadError;
pub use stats::CacheStats;

use expiry::TICK_SHIFT;
use listener::{Listener, Removed};
use loader::Loads;
use shard::{KeyHasher, NEVER, NewEntry, Record, Shard};
use stats::{Counter, StripedCounters};

use crate::callback::{self, FirstPanic};
use crate::codec::{self, CodecError};
use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::time::{ClockHandle, SharedClock, Timestamp, Ttl};

/// Why an entry left the cache, as told to the eviction listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    /// Evicted to keep the cache within its byte or entry budget.
    ///
    /// This includes a new key turned away on insert: an insert into a cache of 10 to 64 entries
    /// may be refused by admission, as moka's. Exactly: where a shard's share of
    /// [`CacheBuilder::max_entries`] (`max_entries` / [`CacheBuilder::shards`]; one shard by
    /// default below 2,048 entries) is 10 to 64, a new key whose insert needs an eviction because
    /// the cache holds `max_entries` and its shard its share of them, while the shard follows its
    /// LFU shadow (an LRU with TinyLFU admission that scores more hits than the default policy on
    /// the recent requests), is turned away if that shadow would not admit it: the insert returns
    /// `Ok` ([`Cache::get_or_insert_with`] returns the value to its caller and to those waiting on
    /// its load), and the value is removed at once — reported to the eviction listener with this
    /// cause, counted by [`CacheStats`] as an insert and a removal for `Size`. No resident entry is
    /// evicted for it, and the budget does not change. An update of a present key, an entry
    /// restored from a snapshot or an import, and an insert into a shard that has room or a cache
    /// full only by bytes are never turned away.
    Size,
    /// Its TTL ran out.
    Expired,
    /// A newer value was inserted under the same key.
    Replaced,
    /// Removed, while live, by [`Cache::remove`], [`Cache::remove_if`] or [`Cache::clear`].
    Removed,
}

impl RemovalCause {
    /// Every cause, in declaration order (to total [`CacheStats::removals`] over them, say).
    pub const ALL: [RemovalCause; 4] = [
        RemovalCause::Size,
        RemovalCause::Expired,
        RemovalCause::Replaced,
        RemovalCause::Removed,
    ];
}

/// Errors of the cache engine.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The builder's settings are inconsistent; the [`ConfigError`] names the setting.
    #[error("invalid cache configuration: {0}")]
    InvalidConfig(ConfigError),
    /// The entry alone is larger than the whole byte budget; nothing was evicted.
    #[error("an entry charged {size} bytes cannot fit a cache of max_bytes {max_bytes}")]
    TooLarge {
        /// The entry's charge ([`CacheEntry::charged_size`]).
        size: u64,
        /// The cache's budget.
        max_bytes: u64,
    },
    /// A typed value could not be encoded.
    #[error("the value was not stored: {0}")]
    Codec(#[source] Arc<CodecError>),
    /// The snapshot named by [`CacheBuilder::restore_from`] could not be restored.
    #[error("restoring the snapshot failed: {0}")]
    Snapshot(#[source] Arc<crate::snapshot::SnapshotError>),
    /// A loader given to [`Cache::get_or_insert_with`] or [`Cache::try_get_or_insert_with`]
    /// loaded its own key again on its own thread, which would wait for itself for ever. The
    /// inner call fails with this; the outer load is not affected.
    #[error("the loader of key {key} loaded the same key again, which would wait for itself")]
    ReentrantLoad {
        /// The key being loaded.
        key: CacheKey,
    },
    /// A call to [`Cache::get_or_insert_with`] or [`Cache::try_get_or_insert_with`] found
    /// `key` being loaded by another thread whose loader waits, directly or through other
    /// threads' loads, for a load that the calling thread's own loader is running: waiting
    /// would close a cycle in which every thread waits for ever. This call fails instead of
    /// waiting; the load it is called from goes on, and the other threads of the cycle then
    /// get their values (or their loaders' errors).
    #[error(
        "loading key {key} would wait for ever: its loader, on another thread, waits (directly \
         or through other threads' loads) for a load this thread's loader is running; loaders \
         must not depend on each other's keys in a cycle"
    )]
    LoadCycle {
        /// The key whose load this call would have waited for.
        key: CacheKey,
    },
}

impl From<CodecError> for CacheError {
    fn from(e: CodecError) -> CacheError {
        CacheError::Codec(Arc::new(e))
    }
}

/// A lock on its own cache lines (a shard's, a loader stripe's) or a shared counter.
#[repr(align(128))]
struct Padded<T>(T);

/// A shard behind its lock, and a count of the stores into it.
struct ShardCell {
    lock: RwLock<Shard>,
    /// Values stored into the shard so far (new keys and rewrites), written only under the
    /// write lock. A miss reads it under its read lock; a loader compares that with the
    /// count once it has claimed the key, and looks the key up again only if something was
    /// stored in between (see [`Inner::stored_since`]).
    stores: AtomicU64,
    /// The shard's [`Shard::earliest_deadline`]: a purge reads it before it takes the lock.
    earliest: Arc<AtomicU64>,
}

/// Resolved builder settings.
struct Config {
    max_bytes: u64,
    max_entries: u64,
    default_ttl: Option<Ttl>,
    clock: ClockHandle,
    listener: Option<Listener>,
    shards: usize,
    sweep_interval: Option<Duration>,
}

/// A concurrent, size-bounded, content-addressed cache. Cloning gives another handle to the
/// same cache.
///
/// ```
/// use memocache::{Cache, CacheKey};
///
/// let cache = Cache::builder().max_bytes(1 << 20).build()?;
/// let file_hash = CacheKey::from_content(b"some audio", "file")?.digest_hex();
/// let key = CacheKey::transcript(&file_hash, "en")?;
/// assert_eq!(cache.get(&key), None);
/// cache.insert(key, "hello world")?;
/// assert_eq!(cache.get(&key).as_deref(), Some(&b"hello world"[..]));
/// let loaded = cache.get_or_insert_with(key, || "not run: already cached")?;
/// assert_eq!(&loaded[..], b"hello world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Dropping the last handle ([`WeakCache`]s do not count) stops the sweeper thread and drops
/// the values the cache still holds, without telling the eviction listener: a dropped cache
/// reports nothing, as moka's does not. A value's drop is the host's code (a
/// `Bytes::from_owner` runs its owner's): the values are dropped one by one, then the
/// listener (what it captured is the host's too), and if some of those drops panic, every
/// one is still dropped and the first panic is then re-raised by the handle's drop. Dropped
/// while its thread already unwinds from another panic, where a second panic let out would
/// abort the process, the handle discards their panics instead and the other panic goes on.
/// The sweeper holds a handle while it sweeps; if the last other one goes meanwhile, the
/// values are dropped on the sweeper's thread, which a panic then ends.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Padded<ShardCell>]>,
    counters: StripedCounters,
    hasher: KeyHasher,
    /// Right shift that turns a hash into a shard index.
    shard_shift: u32,
    max_bytes: u64,
    max_entries: u64,
    bytes: Padded<AtomicU64>,
    entries: Padded<AtomicU64>,
    /// The expiry wheels' tick (see `expiry.rs`) up to which every shard has been purged:
    /// by [`Cache::purge_expired`], or by an insert of a later tick that had to evict (see
    /// `Inner::store`); set once such a walk is done, not when it starts (see
    /// `Inner::mark_purged`). Read only by inserts that must evict; written by each walk, so
    /// about once a tick (by the tick's first walk and any started before it ended).
    /// Counted in 64 bits ([`pass_tick`]), not as the wheels' 32-bit ticks: those stop at
    /// their last value 2^62 ns (about 146 years) after the clock's epoch, where no later
    /// tick would ever have needed a purge again. And counted from 1, so that the 0 it
    /// starts at is no tick: as tick 0 it said the clock's first tick had been purged, and
    /// no insert in it (the coarse clock's first second in the process) purged.
    purged_tick: AtomicU64,
    default_ttl: Option<Ttl>,
    /// Read on every hit: the default clock directly, not through its vtable (see
    /// [`ClockHandle`]).
    clock: ClockHandle,
    listener: Option<Listener>,
    loads: Loads,
    sweeper: Mutex<Option<Sweeper>>,
}

struct Sweeper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Cache {
    /// A builder; `max_bytes` is required.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    fn from_config(config: Config) -> Cache {
        let hasher = KeyHasher::random();
        let shards = (0..config.shards)
            .map(|_| {
                let shard = Shard::new(
                    hasher,
                    config.max_bytes / config.shards as u64,
                    config.max_entries / config.shards as u64,
                );
                Padded(ShardCell {
                    earliest: shard.earliest_deadline(),
                    lock: RwLock::new(shard),
                    stores: AtomicU64::new(0),
                })
            })
            .collect();
        let inner = Arc::new(Inner {
            shards,
            counters: StripedCounters::new(),
            hasher,
            // shards is a power of two ≤ 1024; shifting a u64 by 64 is not allowed, so one
            // shard uses index 0 explicitly (see `shard_of`).
            shard_shift: 64 - config.shards.trailing_zeros(),
            max_bytes: config.max_bytes,
            max_entries: config.max_entries,
            bytes: Padded(AtomicU64::new(0)),
            entries: Padded(AtomicU64::new(0)),
            purged_tick: AtomicU64::new(0),
            default_ttl: config.default_ttl,
            clock: config.clock,
            listener: config.listener,
            loads: Loads::new(config.shards),
            sweeper: Mutex::new(None),
        });
        if let Some(interval) = config.sweep_interval {
            Inner::start_sweeper(&inner, interval);
        }
        Cache { inner }
    }

    /// Stores `value` under `key` with the default TTL, replacing any previous value.
    ///
    /// Evicts as needed to stay within budget. An entry larger than the whole budget is
    /// refused with [`CacheError::TooLarge`] and evicts nothing.
    ///
    /// An insert into a cache of 10 to 64 entries may be refused by admission, as moka's: it
    /// returns `Ok`, stores nothing, evicts nothing, and the listener hears of the value as
    /// evicted for [`RemovalCause::Size`] (see there for the exact bound).
    pub fn insert(&self, key: CacheKey, value: impl Into<Bytes>) -> Result<(), CacheError> {
        self.inner.insert(key, value.into(), self.inner.default_ttl)
    }

    /// Stores `value` under `key`, expiring after `ttl`. As with [`Cache::insert`], an insert
    /// into a cache of 10 to 64 entries may be refused by admission (see
    /// [`RemovalCause::Size`]).
    pub fn insert_with_ttl(
        &self,
        key: CacheKey,
        value: impl Into<Bytes>,
        ttl: Ttl,
    ) -> Result<(), CacheError> {
        self.inner.insert(key, value.into(), Some(ttl))
    }

    /// The live value under `key`, recording the access.
    #[inline]
    pub fn get(&self, key: &CacheKey) -> Option<Bytes> {
        self.inner.read(key, true)
    }

    /// The live value under `key`, without recording an access or counting a hit or miss.
    pub fn peek(&self, key: &CacheKey) -> Option<Bytes> {
        self.inner.read(key, false)
    }

    /// A snapshot of the live entry under `key`, with its metadata; no access is recorded.
    pub fn entry(&self, key: &CacheKey) -> Option<CacheEntry> {
        let inner = &self.inner;
        let hash = inner.hasher.hash(key);
        let now = inner.clock.now().as_nanos();
        let shard = inner.shard(hash).read();
        shard
            .find(hash, key)
            .filter(|record| !record.is_expired(now))
            .map(Record::to_entry)
    }

    /// Whether a live value is stored under `key`; no access is recorded.
    pub fn contains_key(&self, key: &CacheKey) -> bool {
        let inner = &self.inner;
        let hash = inner.hasher.hash(key);
        let now = inner.clock.now().as_nanos();
        let shard = inner.shard(hash).read();
        shard.find(hash, key).is_some_and(|r| !r.is_expired(now))
    }

    /// Removes the entry under `key`, returning its value if it was live.
    pub fn remove(&self, key: &CacheKey) -> Option<Bytes> {
        self.remove_if(key, |_| true)
    }

    /// Removes the entry under `key` if its live value satisfies `predicate`; returns the
    /// value removed.
    ///
    /// The check and the removal are one step under the shard's lock, so a value another
    /// thread stores after the caller looked is never removed by mistake: compare-and-remove
    /// is `cache.remove_if(&key, |value| *value == seen)`. `predicate` is not called when
    /// there is no live value; an expired value is removed as by [`Cache::remove`] (reported
    /// as [`RemovalCause::Expired`]). A removal is counted and reported as by
    /// [`Cache::remove`].
    ///
    /// `predicate` runs under the shard's write lock: keep it short, and do not use this cache
    /// from it (that deadlocks). If it panics, nothing is removed.
    pub fn remove_if(
        &self,
        key: &CacheKey,
        predicate: impl FnOnce(&Bytes) -> bool,
    ) -> Option<Bytes> {
        let inner = &self.inner;
        let hash = inner.hasher.hash(key);
        let now = inner.clock.now().as_nanos();
        let index = inner.shard_of(hash);
        let record = inner.shards[index]
            .0
            .lock
            .write()
            .remove_if(hash, key, |found| {
                found.is_expired(now) || predicate(&found.value)
            })?;
        let cause = if record.is_expired(now) {
            RemovalCause::Expired
        } else {
            RemovalCause::Removed
        };
        let value = (cause == RemovalCause::Removed).then(|| record.value.clone());
        inner.release(record.charge(), 1);
        inner.counters.local().bump(Counter::Removal(cause));
        inner.notify(Removed::one((record.key, record.value, cause)));
        value
    }

    /// Removes every entry. Live ones are reported as [`RemovalCause::Removed`]; expired
    /// ones not yet purged as [`RemovalCause::Expired`], as every other call that removes
    /// them reports them.
    ///
    /// The memory the cache grew to keep track of its entries (up to about 150 bytes an entry,
    /// besides the values) is given back, as if the cache were built anew; the eviction
    /// policy's history of keys starts over too.
    pub fn clear(&self) {
        let inner = &self.inner;
        let now = inner.clock.now().as_nanos();
        // Every shard is cleared even if the listener or a value's drop panics; the panic is
        // re-raised after.
        let mut panicked = FirstPanic::default();
        for shard in inner.shards.iter() {
            let records = shard.0.lock.write().clear();
            // A value that had expired left by expiry, whichever call found it: `remove`, a
            // read, an insert, a purge and an eviction all say so, and so must `clear`, or
            // the listener's cause and the stats would depend on which came first.
            let (expired, live): (Vec<Record>, Vec<Record>) = records
                .into_iter()
                .flatten()
                .partition(|record| record.is_expired(now));
            let mut removed = Removed::new();
            inner.account_removals(expired, RemovalCause::Expired, &mut removed);
            inner.account_removals(live, RemovalCause::Removed, &mut removed);
            inner.report(removed, &mut panicked);
        }
        panicked.resume();
    }

    /// The value under `key`, or else the value `load` returns, stored and returned.
    ///
    /// Concurrent calls for one key run `load` once; the others wait and receive its value.
    /// If `load` panics, the panic propagates to its caller; the waiting callers are not
    /// stranded — one of them runs its own `load`. An insert, a [`Cache::remove`] or a
    /// [`Cache::clear`] while `load` runs does not cancel the load: its value is stored when
    /// `load` returns, after them, as an insert made then would be — so the loaded value
    /// replaces a value inserted meanwhile (reported as [`RemovalCause::Replaced`]), and
    /// reads see the inserted value until then.
    ///
    /// In a cache of 10 to 64 entries the store may be refused by admission, as moka's (see
    /// [`RemovalCause::Size`]): the caller and the waiting callers still receive the value,
    /// the listener hears of it as evicted for `Size`, and the next call loads again.
    ///
    /// `load` may use the cache, loads of other keys included. If it loads the same key on
    /// its own thread, directly or through other keys' loaders, that inner call returns
    /// [`CacheError::ReentrantLoad`] instead of waiting for its own result. If loads wait on
    /// each other in a cycle across threads — this thread's loader waits for a key another
    /// thread is loading, whose loader waits (perhaps through more threads' loads) for a key
    /// this thread is loading — the call that would close the cycle returns
    /// [`CacheError::LoadCycle`] instead of waiting: one thread of the cycle gets it (which
    /// one depends on timing), and the others get their values once its loader returns.
    ///
    /// The cycle may run through loads of other caches (a loader of this cache that loads
    /// from another): waits in every cache of the process are seen. A loader that waits for
    /// another thread by other means — `join`, a channel, a lock — while that thread loads a
    /// key this thread is loading is invisible to the cache: that never returns, and is the
    /// caller's to avoid.
    ///
    /// ```
    /// use memocache::{Cache, CacheKey};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let cache = Cache::builder().max_bytes(1 << 20).build()?;
    /// let file_hash = CacheKey::from_content(b"some audio", "file")?.digest_hex();
    /// let key = CacheKey::transcript(&file_hash, "en")?;
    /// let runs = AtomicUsize::new(0);
    /// std::thread::scope(|scope| {
    ///     for _ in 0..4 {
    ///         scope.spawn(|| {
    ///             let text = cache.get_or_insert_with(key, || {
    ///                 runs.fetch_add(1, Ordering::Relaxed);
    ///                 "hello world" // an expensive transcription, in real use
    ///             });
    ///             assert_eq!(&text.unwrap()[..], b"hello world");
    ///         });
    ///     }
    /// });
    /// // Whether a caller waited for the load or came after it, the loader ran once.
    /// assert_eq!(runs.load(Ordering::Relaxed), 1);
    /// assert_eq!(cache.stats().loads, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn get_or_insert_with<V: Into<Bytes>>(
        &self,
        key: CacheKey,
        load: impl FnOnce() -> V,
    ) -> Result<Bytes, CacheError> {
        self.inner
            .loads
            .get_or_load(self, key, || {
                Ok::<_, std::convert::Infallible>(load().into())
            })
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(never) => match *never {},
            })
    }

    /// Like [`Cache::get_or_insert_with`], for a loader that can fail. An error is returned
    /// to the caller and to every caller waiting on the same load, and is not cached. As
    /// there, `load` loading the same key on its own thread gets
    /// `LoadError::Cache(CacheError::ReentrantLoad { .. })`, and the call that would close a
    /// cycle of loads across threads gets `LoadError::Cache(CacheError::LoadCycle { .. })`;
    /// a thread that waits for another by other means (`join`, a channel, a lock) is
    /// invisible to the cache, and a cycle through it is not detected. [`LoadError`] has an
    /// example of each.
    #[inline]
    pub fn try_get_or_insert_with<V: Into<Bytes>, E: Send + Sync + 'static>(
        &self,
        key: CacheKey,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Bytes, LoadError<E>> {
        self.inner
            .loads
            .get_or_load(self, key, || load().map(Into::into))
    }

    /// Encodes `value` with the crate's codec (bincode 2) and stores it, as [`Cache::insert`]
    /// does (in a cache of 10 to 64 entries, it may be refused by admission).
    ///
    /// Encoding does not check nesting: a value nested deeper than [`crate::codec::MAX_DEPTH`]
    /// is stored, but [`Cache::get_typed`] refuses it with [`CodecError::TooDeep`].
    ///
    /// The encoding is bincode's: compact, and silent on what it holds, so a type must read
    /// back by its shape alone. Serde attributes that need more do not round-trip, and the
    /// compiler cannot tell: a `#[serde(flatten)]` field is refused here
    /// ([`CodecError::Encode`]); an internally tagged (`#[serde(tag = "..")]`) or untagged
    /// enum, or a `serde_json::Value`, is stored, and every [`Cache::get_typed`] of it fails;
    /// and a field skipped by `#[serde(skip_serializing_if = "..")]` writes nothing, so it
    /// reads back from the bytes of the fields after it, an error or a wrong value. Give such
    /// types a plain twin for the cache, or store them as bytes of a self-describing format.
    ///
    /// ```
    /// use memocache::{Cache, CacheKey, CodecError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// #[serde(tag = "kind")]
    /// enum Outcome {
    ///     Text { text: String },
    ///     Silence,
    /// }
    ///
    /// let cache = Cache::builder().max_bytes(1 << 20).build()?;
    /// let key = CacheKey::from_content(b"some audio", "outcome")?;
    /// cache.insert_typed(key, &Outcome::Silence)?; // stored...
    /// let err = cache.get_typed::<Outcome>(&key).err().expect("...but never read back");
    /// assert!(matches!(&err, CodecError::AtKey { .. }));
    /// assert!(err.to_string().contains("`#[serde(tag = ..)]` or `#[serde(untagged)]` enum"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert_typed<T: Serialize + ?Sized>(
        &self,
        key: CacheKey,
        value: &T,
    ) -> Result<(), CacheError> {
        let bytes = codec::encode(value)?;
        self.insert(key, bytes)
    }

    /// Reads and decodes a value stored by [`Cache::insert_typed`]. Bytes that do not decode
    /// as `T` are an error, never a panic: [`CodecError::AtKey`], naming `key`.
    ///
    /// The encoding does not record the type, so a value stored as another type whose bytes
    /// happen to decode as `T` is returned as a `T`: a `u32` read as a `u64`, a struct read as
    /// another whose fields have the same types in the same order. Keys whose content names
    /// the type (a [`CacheKey`] prefix per type, say) keep types apart.
    pub fn get_typed<T: DeserializeOwned>(&self, key: &CacheKey) -> Result<Option<T>, CodecError> {
        self.get(key)
            .map(|bytes| {
                codec::decode(&bytes).map_err(|source| CodecError::AtKey {
                    key: *key,
                    source: Box::new(source),
                })
            })
            .transpose()
    }

    /// Removes every expired entry now; returns how many were removed.
    ///
    /// An expired entry is never returned, but it is counted by [`Cache::len`] and charged
    /// against the budget until it is purged — by this call, by a read or an insert of its
    /// key, by the first insert of a later tick of the expiry wheel (about a second) that
    /// finds the cache full, or by the sweeper thread of [`CacheBuilder::sweep_interval`].
    /// Each removal is reported to the eviction listener as [`RemovalCause::Expired`].
    ///
    /// ```
    /// use memocache::{Cache, CacheKey, ManualClock, RemovalCause, Ttl};
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let causes = Arc::new(Mutex::new(Vec::new()));
    /// let heard = Arc::clone(&causes);
    /// let cache = Cache::builder()
    ///     .max_bytes(1 << 20)
    ///     .default_ttl(Ttl::minutes(5)?)
    ///     .clock(clock.clone())
    ///     .eviction_listener(move |_key, _value, cause| heard.lock().unwrap().push(cause))
    ///     .build()?;
    /// for n in 0..3u8 {
    ///     cache.insert(CacheKey::from_content(&[n], "example")?, "text")?;
    /// }
    /// clock.advance(Duration::from_secs(5 * 60 + 1));
    /// assert_eq!(cache.len(), 3); // expired, but not yet purged
    /// assert_eq!(cache.purge_expired(), 3);
    /// assert!(cache.is_empty());
    /// assert_eq!(*causes.lock().unwrap(), [RemovalCause::Expired; 3]);
    /// assert_eq!(cache.stats().evictions_expired, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge_expired(&self) -> usize {
        self.inner.purge_expired()
    }

    /// Number of entries (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        usize::try_from(self.inner.entries.0.load(Ordering::Acquire)).unwrap_or(usize::MAX)
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged against the budget now.
    pub fn size_bytes(&self) -> u64 {
        self.inner.bytes.0.load(Ordering::Acquire)
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// The entry bound (`u64::MAX` if none was set).
    pub fn max_entries(&self) -> u64 {
        self.inner.max_entries
    }

    /// The default TTL, if any.
    pub fn default_ttl(&self) -> Option<Ttl> {
        self.inner.default_ttl
    }

    /// The cache's clock.
    pub fn clock(&self) -> &SharedClock {
        self.inner.clock.get()
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let mut stats = self.inner.counters.sum();
        stats.entries = self.len() as u64;
        stats.bytes = self.size_bytes();
        stats
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.len())
            .field("size_bytes", &self.size_bytes())
            .field("max_bytes", &self.inner.max_bytes)
            .field("max_entries", &self.inner.max_entries)
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

/// A handle to a [`Cache`] that does not keep it alive: for an eviction listener, or anything
/// else the cache owns, that uses the cache.
///
/// The listener is part of the cache, so a [`Cache`] handle captured by it is a cycle: the
/// cache, its values and its sweeper thread ([`CacheBuilder::sweep_interval`]) are then never
/// freed, even once every other handle is dropped. A `WeakCache` breaks the cycle:
/// [`WeakCache::upgrade`] gives a handle for the length of a call, and `None` once the cache
/// is gone.
///
/// ```
/// use memocache::{Cache, CacheKey, RemovalCause, WeakCache};
/// use std::sync::{Arc, OnceLock};
///
/// let this: Arc<OnceLock<WeakCache>> = Arc::default();
/// let listener_this = Arc::clone(&this);
/// let cache = Cache::builder()
///     .max_bytes(1 << 20)
///     .eviction_listener(move |key, _value, cause| {
///         // Keep a tombstone of removed keys, in the cache itself.
///         if cause == RemovalCause::Removed
///             && let Some(cache) = listener_this.get().and_then(WeakCache::upgrade)
///         {
///             let tombstone = CacheKey::from_content(key.digest(), "tombstone").unwrap();
///             cache.insert(tombstone, "removed").unwrap();
///         }
///     })
///     .build()?;
/// this.set(cache.downgrade()).unwrap();
/// let key = CacheKey::from_content(b"some text", "example")?;
/// cache.insert(key, "text")?;
/// cache.remove(&key);
/// assert_eq!(cache.len(), 1);
/// let weak = cache.downgrade();
/// drop(cache);
/// assert!(weak.upgrade().is_none(), "the listener did not keep the cache alive");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WeakCache {
    inner: Weak<Inner>,
}

impl Cache {
    /// A [`WeakCache`] handle to this cache: one that does not keep it alive.
    pub fn downgrade(&self) -> WeakCache {
        WeakCache {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

impl WeakCache {
    /// A handle to the cache, or `None` once the cache is gone: its last [`Cache`] handle has
    /// been dropped, and so has the sweeper's, which holds one while it sweeps (so a sweep in
    /// progress, and its listener calls, may still upgrade for a moment after the last
    /// handle of the caller's is dropped).
    pub fn upgrade(&self) -> Option<Cache> {
        self.inner.upgrade().map(|inner| Cache { inner })
    }
}

impl std::fmt::Debug for WeakCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakCache")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}

/// The deadline of an entry stored at `now` to live `ttl_nanos` more nanoseconds.
///
/// Saturating, but never [`NEVER`], which means "no TTL": a TTL whose deadline passes the
/// clock's end of time (`Ttl::MAX`, from any time) would otherwise be stored, reported and
/// expired as no TTL at all. It expires one nanosecond before the end of time instead (about
/// 584 years after the clock's epoch).
///
/// Except at the end of time itself (`now` is `u64::MAX`, where a `ManualClock` advanced by
/// `Duration::MAX` stops): one nanosecond before it is before the insert, and the value was
/// stored expired, never returned. Nothing comes after that instant, so an entry stored then
/// cannot expire (as `CacheEntry::is_expired` says of it): it gets no deadline.
#[inline]
fn deadline(now: u64, ttl_nanos: u64) -> u64 {
    now.saturating_add(ttl_nanos).min(NEVER - 1).max(now)
}

/// The expiry wheels' tick of `now` (see `expiry.rs`), in 64 bits and counted from 1: the
/// wheels' own `tick_of` saturates at `u32::MAX` from 2^62 ns on, and a once-a-tick mark
/// made with it would see no tick after that one; and `Inner::purged_tick` starts at 0,
/// which must be before every tick, the clock's first included. (At most 2^34, so adding 1
/// cannot overflow.)
fn pass_tick(now: u64) -> u64 {
    (now >> TICK_SHIFT) + 1
}

impl Inner {
    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        if self.shards.len() == 1 {
            0
        } else {
            // High bits: hashbrown uses the low bits for the bucket and the top 7 as a tag.
            ((hash << 7) >> self.shard_shift) as usize
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[self.shard_of(hash)].0.lock
    }

    #[inline]
    fn read(&self, key: &CacheKey, touch: bool) -> Option<Bytes> {
        self.read_hashed(self.hasher.hash(key), key, touch, &mut 0)
    }

    /// [`Inner::read`] for a caller that already hashed the key (the loader, which needs the
    /// hash for its own map too). A miss sets `stores` to the shard's store count, read under
    /// the lock, for [`Inner::stored_since`]. (Set through a reference, not returned with the
    /// value: a `Result<Bytes, u64>` cost every hit about 4 instructions, by callgrind.)
    #[inline(always)]
    pub(super) fn read_hashed(
        &self,
        hash: u64,
        key: &CacheKey,
        touch: bool,
        stores: &mut u64,
    ) -> Option<Bytes> {
        let index = self.shard_of(hash);
        // Read before the lookup: see the README's cache throughput section for the variant that
        // read it only once the lookup had found an entry.
        let now = self.clock.now().as_nanos();
        let cell = &self.shards[index].0;
        let shard = cell.lock.read();
        let (value, expired_at) = match shard.find(hash, key) {
            Some(record) if !record.is_expired(now) => {
                if touch {
                    record.touch(now);
                }
                (Some(record.value.clone()), None)
            }
            found => {
                *stores = cell.stores.load(Ordering::Relaxed);
                (None, found.map(|_| now))
            }
        };
        drop(shard);
        if touch {
            self.counters.local().bump(if value.is_some() {
                Counter::Hits
            } else {
                Counter::Misses
            });
        }
        if let Some(now) = expired_at {
            self.remove_if_expired(index, hash, key, now);
        }
        value
    }

    fn remove_if_expired(&self, index: usize, hash: u64, key: &CacheKey, now: u64) {
        let mut shard = self.shards[index].0.lock.write();
        if !shard.find(hash, key).is_some_and(|r| r.is_expired(now)) {
            return;
        }
        let record = shard.remove(hash, key);
        drop(shard);
        let mut removed = Removed::new();
        self.account_removals(record, RemovalCause::Expired, &mut removed);
        self.notify(removed);
    }

    /// Whether a value has been stored into the shard of `hash` since a miss there saw the
    /// store count `seen` ([`Inner::read_hashed`]); if not, a loader that has claimed the key
    /// since need not look it up again ([`Inner::live_value`]): one load instead of a read
    /// lock and a probe, about 85 instructions a get-or-insert miss (callgrind).
    ///
    /// Relaxed is enough. The miss read `seen` under the shard's read lock, so a store whose
    /// write lock came later bumped the count past it. A leader that stored the key after
    /// the miss then removed its claim under its stripe's mutex before the caller took that
    /// mutex to claim the key (had it not, the caller would have found the claim and
    /// waited), so its bump happened before this load and is seen. A plain insert racing the
    /// miss may go unseen, as it would had it landed just after the re-check: the load then
    /// replaces its value, as a load always may.
    #[inline]
    pub(super) fn stored_since(&self, hash: u64, seen: u64) -> bool {
        self.shards[self.shard_of(hash)]
            .0
            .stores
            .load(Ordering::Relaxed)
            != seen
    }

    /// The live value under `key`, recording no access and leaving an expired entry in place,
    /// so that no listener runs (see `loader.rs`).
    fn live_value(&self, hash: u64, key: &CacheKey) -> Option<Bytes> {
        let shard = self.shard(hash).read();
        let record = shard.find(hash, key)?;
        // The re-check almost always misses: read the clock only for an entry.
        let now = self.clock.now().as_nanos();
        (!record.is_expired(now)).then(|| record.value.clone())
    }

    fn insert(&self, key: CacheKey, value: Bytes, ttl: Option<Ttl>) -> Result<(), CacheError> {
        // Pay the one-time shared-header allocation of a Vec-backed Bytes here, not on a hit
        // (see `Inner::store`).
        drop(value.clone());
        let mut removed = Removed::new();
        let stored = self.insert_unreported(self.hasher.hash(&key), key, value, ttl, &mut removed);
        self.notify(removed);
        stored
    }

    /// Inserts like [`Inner::insert`] but adds the removals to `removed` instead of reporting
    /// them, for a caller that must do something first (see `loader.rs`); `hash` is the key's.
    #[inline]
    fn insert_unreported(
        &self,
        hash: u64,
        key: CacheKey,
        value: Bytes,
        ttl: Option<Ttl>,
        removed: &mut Removed,
    ) -> Result<(), CacheError> {
        let now = self.clock.now().as_nanos();
        let expires_at = ttl.map_or(NEVER, |ttl| deadline(now, ttl.as_nanos()));
        self.store::<true>(
            hash,
            NewEntry {
                key,
                value,
                now,
                expires_at,
                access_count: 0,
                accessed_at: now,
                freq: 0,
                main: false,
            },
            removed,
        )
        .map(|_| ())
    }

    /// Stores `entry`; adds the removals it caused to `removed`, for the caller to report.
    /// The caller has cloned `entry.value` before: a `Bytes` built from a `Vec` allocates its
    /// shared header on its first clone, which must not be a hit's (under the read lock).
    /// A loader clones its value anyway, to return it; a clone and drop here as well cost its
    /// miss about 15 instructions and, for such a value, two atomic updates of its count.
    /// (Passed in rather than returned: moving them out through a `Result` cost an evicting
    /// insert about 28 instructions, by callgrind.)
    ///
    /// With `EVICT` false, nothing is evicted: an entry that does not fit the room left is
    /// not stored, and `Ok(false)` says so. A snapshot restore stores that way, because it
    /// promises to evict nothing, and the room it measured before storing may have been
    /// taken by other writers since. With `EVICT` true the result is always `Ok(true)`.
    fn store<const EVICT: bool>(
        &self,
        hash: u64,
        entry: NewEntry,
        removed: &mut Removed,
    ) -> Result<bool, CacheError> {
        let charge = CacheEntry::charged_size(entry.value.len()) as u64;
        if charge > self.max_bytes {
            return Err(CacheError::TooLarge {
                size: charge,
                max_bytes: self.max_bytes,
            });
        }
        let key = entry.key;
        let now = entry.now;
        let index = self.shard_of(hash);
        // Reserve under the shard lock, where it is known whether the key is present: an
        // update needs only its growth in bytes, a new key its charge and one entry. A new key
        // that does not fit first takes over the budget of victims from its own shard, under
        // the lock it already holds; only if that shard runs dry does eviction move to the
        // others, with the lock released, so no thread ever holds two shard locks.
        let (mut shard, found) = loop {
            let mut shard = self.shards[index].0.lock.write();
            let found = shard.slot_of(hash, &key);
            let old_charge = found.map(|slot| shard.charge_of(slot));
            // Expired entries go before live ones: an entry still stored after its deadline
            // holds budget that no reader can use, and the policy, which knows nothing of
            // deadlines, would evict live entries (reported as `Size`) around it. So an
            // insert that must evict purges every shard first, one lock at a time (then looks
            // again: the key itself may have expired), unless a purge of this wheel tick has
            // already walked every shard. Once a tick, not before every eviction: the wheel's
            // current bucket holds the entries due later in the tick, and advancing it at
            // every insert would visit them all. The tick is marked purged only once a walk
            // is done (see `expire_all`), not when it starts: an insert that had to evict
            // while another's walk had yet to reach a shard holding expired entries found the
            // tick taken and evicted live entries around them. Until the mark, every insert
            // of the tick that must evict walks too: work done twice at worst, and a shard
            // already purged is passed over on its `earliest` deadline. The mark is read
            // where eviction would start, once the room is known to be short; an insert that
            // fits never reads it.
            let mut purge = false;
            let fits = match old_charge {
                Some(old) => {
                    charge <= old
                        || self.try_reserve_bytes(charge - old)
                        || (EVICT && {
                            purge = self.expiry_pass_due(now);
                            !purge
                                && self.make_room_for_growth(
                                    &mut shard,
                                    hash,
                                    &key,
                                    charge - old,
                                    now,
                                    removed,
                                )
                        })
                }
                None => {
                    self.try_reserve(charge)
                        || (EVICT && {
                            purge = self.expiry_pass_due(now);
                            !purge && self.make_room(&mut shard, hash, charge, now, removed)
                        })
                }
            };
            if fits {
                break (shard, found);
            }
            if !EVICT {
                return Ok(false);
            }
            if purge {
                drop(shard);
                self.expire_all(now, removed);
                continue;
            }
            if shard.take_refusal() {
                drop(shard);
                self.refuse(entry, removed);
                return Ok(true);
            }
            drop(shard);
            // An update's own shard has nothing left to evict but the key being updated, and
            // that key never has to go: with nothing else stored, the budget holds just the
            // new value's charge, which fits (it is not `TooLarge`), so what is short is
            // budget in flight (below). Evicting the key anyway, as a last resort, reported
            // the value being replaced as evicted for `Size` and counted an insert instead of
            // an update whenever the update raced a removal in another shard. So an update
            // evicts only from the other shards here; entries that reach its own shard
            // meanwhile are evicted, sparing the key, on the next round.
            let (first, shards) = match old_charge {
                Some(_) => (index + 1, self.shards.len() - 1),
                None => (index, self.shards.len()),
            };
            if !self.evict_one(first, shards, now, removed) {
                // Nothing to evict: the budget is held in flight, for a moment — by inserts
                // that reserved it under a shard lock and will land (and become evictable),
                // or by removals that have unlocked their shard but not yet released it.
                std::thread::yield_now();
            }
        };
        let replaced = shard.insert(hash, found, entry);
        // The only writer, under the write lock: a load and a store, not a locked add.
        let stores = &self.shards[index].0.stores;
        stores.store(stores.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        drop(shard);
        let counters = self.counters.local();
        match replaced {
            Some(old) => {
                if old.charge > charge {
                    self.bytes
                        .0
                        .fetch_sub(old.charge - charge, Ordering::AcqRel);
                }
                if old.expired {
                    // The old value had expired (not yet purged): it left by expiry, and the
                    // key was absent as far as any reader could tell, so this is an insert.
                    counters.bump(Counter::Removal(RemovalCause::Expired));
                    counters.bump(Counter::Inserts);
                    removed.push((key, old.value, RemovalCause::Expired));
                } else {
                    counters.bump(Counter::Updates);
                    removed.push((key, old.value, RemovalCause::Replaced));
                }
            }
            None => counters.bump(Counter::Inserts),
        }
        Ok(true)
    }

    /// Accepts the insert of `entry`, which its shard turned away (admission in a shard of
    /// 10 to 64 entries: see *Refusing the new key* in the policy's docs), and removes it at
    /// once: it is counted as an insert and as an eviction for size, and the listener hears of
    /// it as of any such eviction. It never held budget, and evicted nothing.
    #[cold]
    #[inline(never)]
    fn refuse(&self, entry: NewEntry, removed: &mut Removed) {
        let counters = self.counters.local();
        counters.bump(Counter::Inserts);
        counters.bump(Counter::Removal(RemovalCause::Size));
        removed.push((entry.key, entry.value, RemovalCause::Size));
    }

    /// Reserves `charge` bytes and one entry if both fit.
    fn try_reserve(&self, charge: u64) -> bool {
        // A cache bounded by entries is usually full: find that out with a load instead of
        // reserving bytes and giving them back, two writes to a line every inserter shares.
        if self.entries.0.load(Ordering::Acquire) >= self.max_entries
            || !self.try_reserve_bytes(charge)
        {
            return false;
        }
        let max_entries = self.max_entries;
        let entries_ok = self
            .entries
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                (e < max_entries).then_some(e + 1)
            })
            .is_ok();
        if !entries_ok {
            self.bytes.0.fetch_sub(charge, Ordering::AcqRel);
        }
        entries_ok
    }

    /// Reserves `bytes` if they fit.
    fn try_reserve_bytes(&self, bytes: u64) -> bool {
        let max_bytes = self.max_bytes;
        self.bytes
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(bytes).filter(|&sum| sum <= max_bytes)
            })
            .is_ok()
    }

    fn release(&self, charge: u64, entries: u64) {
        if charge > 0 {
            self.bytes.0.fetch_sub(charge, Ordering::AcqRel);
        }
        if entries > 0 {
            self.entries.0.fetch_sub(entries, Ordering::AcqRel);
        }
    }

    /// Evicts from the locked `shard` until its victims' budget — topped up from the shared
    /// counters if they have room — covers a new entry charged `charge`, and hands that budget
    /// over to the new entry: the shared counters move only by the difference (usually
    /// nothing, or one subtraction), which is what keeps a full cache's inserts from bouncing
    /// them between cores. A cache full by entries loses one victim for a large value, not as
    /// many as its bytes. Returns false, with the victims' budget released, if the shard
    /// empties first, or turns the new key (of hash `hash`) away ([`Shard::take_refusal`]).
    fn make_room(
        &self,
        shard: &mut Shard,
        hash: u64,
        charge: u64,
        now: u64,
        removed: &mut Removed,
    ) -> bool {
        let (mut bytes, mut entries) = (0, 0);
        while entries == 0 || (bytes < charge && !self.try_reserve_bytes(charge - bytes)) {
            let Some(record) = shard.evict(hash, &|| {
                self.entries.0.load(Ordering::Acquire) >= self.max_entries
            }) else {
                self.release(bytes, entries);
                return false;
            };
            bytes += record.charge();
            entries += 1;
            self.tally(record, now, removed);
        }
        self.release(bytes.saturating_sub(charge), entries - 1);
        true
    }

    /// Evicts from the locked `shard` until its victims' bytes — topped up from the shared
    /// counter if it has room — cover `growth`, the extra bytes of a new value for the present
    /// `key`, which is spared: an update must not evict the very value it replaces and report
    /// it as evicted for size (nor evict one more entry than the growth needs). The victims'
    /// entries are released (an update needs none). Returns false, with the victims' budget
    /// released, if the shard has nothing else left to evict.
    fn make_room_for_growth(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: &CacheKey,
        growth: u64,
        now: u64,
        removed: &mut Removed,
    ) -> bool {
        let Some(spared) = shard.spare(hash, key) else {
            return false;
        };
        let (mut bytes, mut entries) = (0, 0);
        let fits = loop {
            if bytes >= growth || self.try_reserve_bytes(growth - bytes) {
                break true;
            }
            let Some(record) = shard.evict_alone() else {
                break false;
            };
            bytes += record.charge();
            entries += 1;
            self.tally(record, now, removed);
        };
        shard.unspare(spared);
        let surplus = if fits {
            bytes.saturating_sub(growth)
        } else {
            bytes
        };
        self.release(surplus, entries);
        fits
    }

    /// Counts an evicted record by its cause and readies its notification.
    fn tally(&self, record: Record, now: u64, removed: &mut Removed) {
        let cause = if record.is_expired(now) {
            RemovalCause::Expired
        } else {
            RemovalCause::Size
        };
        self.counters.local().bump(Counter::Removal(cause));
        removed.push((record.key, record.value, cause));
    }

    /// Evicts the policy's victim of the first shard that has one among the `shards` shards
    /// from `home` on (wrapping round). (Expired entries were purged before: see
    /// `Inner::store`.)
    fn evict_one(&self, home: usize, shards: usize, now: u64, removed: &mut Removed) -> bool {
        let count = self.shards.len();
        for step in 0..shards {
            let index = (home + step) & (count - 1);
            let mut shard = self.shards[index].0.lock.write();
            if shard.len() == 0 {
                continue;
            }
            let victim = shard.evict_alone();
            drop(shard);
            if let Some(record) = victim {
                self.release(record.charge(), 1);
                self.tally(record, now, removed);
                return true;
            }
        }
        false
    }

    /// Releases the budget of removed records, counts them, and readies their notifications
    /// in `removed`.
    fn account_removals(
        &self,
        records: impl IntoIterator<Item = Record>,
        cause: RemovalCause,
        removed: &mut Removed,
    ) {
        let (mut bytes, mut entries) = (0, 0);
        for record in records {
            bytes += record.charge();
            entries += 1;
            removed.push((record.key, record.value, cause));
        }
        if entries > 0 {
            self.release(bytes, entries);
            self.counters.local().add(Counter::Removal(cause), entries);
        }
    }

    /// Reports `removed` to the listener; a panic of the listener, or of a removed value's
    /// drop, is re-raised once every removal has been reported and every value dropped.
    ///
    /// For calls of one step (an insert, a removal, a load): without a listener, a single
    /// removed value is dropped here as it is, so a drop that panics unwinds to the caller,
    /// the call's work being done and its books settled. Several are dropped one by one, as
    /// [`Inner::report`] drops them for the calls that work shard by shard: an insert that
    /// must evict may evict several entries and purge every shard of expired ones, and dropped
    /// together, a second value whose drop panicked, during the first one's unwinding,
    /// aborted the process. So does a call made while its thread unwinds from another panic
    /// (from a host's `Drop`): a single value's drop that panicked, let out then, aborted the
    /// process; under `catch_unwind` its panic is dropped (see [`FirstPanic::resume`]).
    #[inline]
    fn notify(&self, removed: Removed) {
        // Checked here, inline, so that a cache without a listener pays no call for a single
        // removal, the usual one of an evicting insert: dropping it under `catch_unwind` cost
        // such an insert about 90 instructions more (callgrind, `memocache replay`).
        // `panicking` last: read only on that path, a load of the global panic count.
        if self.listener.is_some() || removed.several() || std::thread::panicking() {
            let mut panicked = FirstPanic::default();
            self.report(removed, &mut panicked);
            panicked.resume();
        }
    }

    /// Reports `removed` to the listener and drops the removed values, keeping the first panic
    /// of either in `panicked` (see `listener::report` and `Removed::drop_each`).
    fn report(&self, removed: Removed, panicked: &mut FirstPanic) {
        match &self.listener {
            Some(listener) => listener::report(listener, removed, panicked),
            None => removed.drop_each(panicked),
        }
    }

    fn purge_expired(&self) -> usize {
        // Every shard is purged even if the listener or a value's drop panics; the panic is
        // re-raised after.
        let mut panicked = FirstPanic::default();
        let total = self.purge_expired_into(&mut panicked);
        panicked.resume();
        total
    }

    /// [`Inner::purge_expired`], keeping the listener's first panic in `panicked` for the
    /// caller to re-raise once its own work is done.
    fn purge_expired_into(&self, panicked: &mut FirstPanic) -> usize {
        let now = self.clock.now().as_nanos();
        let mut total = 0;
        let mut scratch = Vec::new();
        for index in 0..self.shards.len() {
            let mut removed = Removed::new();
            total += self.expire_shard(index, now, &mut scratch, &mut removed);
            self.report(removed, panicked);
        }
        self.mark_purged(now);
        total
    }

    /// Removes the expired entries of shard `index` (through `scratch`, left empty) and
    /// accounts for them, their notifications added to `removed`; returns how many.
    fn expire_shard(
        &self,
        index: usize,
        now: u64,
        scratch: &mut Vec<Record>,
        removed: &mut Removed,
    ) -> usize {
        let cell = &self.shards[index].0;
        // Nothing in the shard can have expired by `now`: its write lock, which would stall
        // its readers, is not taken (see `Shard::earliest_deadline`).
        if now <= cell.earliest.load(Ordering::Relaxed) {
            return 0;
        }
        cell.lock.write().expire(now, scratch);
        let count = scratch.len();
        self.account_removals(scratch.drain(..), RemovalCause::Expired, removed);
        count
    }

    /// Whether the calling insert, which must evict, finds that no purge has walked every
    /// shard in the wheels' tick of `now`; it then purges them itself (see `Inner::store`).
    /// Only a load: the evicting inserts of a tick after its first walk only read the line.
    #[inline]
    fn expiry_pass_due(&self, now: u64) -> bool {
        self.purged_tick.load(Ordering::Relaxed) < pass_tick(now)
    }

    /// Marks the wheels' tick of `now` purged, once a walk (an insert's or
    /// [`Cache::purge_expired`]'s) has purged every shard: inserts that must evict later in
    /// this tick need not purge again. Not before the walk: an insert of this tick that had
    /// to evict while the walk had yet to reach a shard holding expired entries would find
    /// the tick purged, and evict live entries for size around them. Until the mark, such an
    /// insert purges too: work done twice at worst, one shard lock at a time, and a shard
    /// already purged is passed over on its `earliest` deadline (see `expire_shard`).
    /// `fetch_max`: a walk that read the clock earlier, and ends later, never moves it back.
    fn mark_purged(&self, now: u64) {
        self.purged_tick
            .fetch_max(pass_tick(now), Ordering::Relaxed);
    }

    /// Purges every shard of its expired entries, one shard lock at a time, for an insert
    /// that reports them with its other removals; then marks the tick purged.
    fn expire_all(&self, now: u64, removed: &mut Removed) {
        let mut scratch = Vec::new();
        for index in 0..self.shards.len() {
            self.expire_shard(index, now, &mut scratch, removed);
        }
        self.mark_purged(now);
    }

    fn count_load(&self, ok: bool) {
        self.counters.local().bump(if ok {
            Counter::Loads
        } else {
            Counter::LoadFailures
        });
    }

    fn start_sweeper(inner: &Arc<Inner>, interval: Duration) {
        let stop = Arc::new(AtomicBool::new(false));
        let weak: Weak<Inner> = Arc::downgrade(inner);
        let stop_flag = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("memocache-sweeper".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    if stop_flag.load(Ordering::Acquire) {
                        break;
                    }
                    match weak.upgrade() {
                        Some(inner) => {
                            // A panicking listener must not end expiry for the cache's
                            // lifetime: the purge completed regardless (see `report`), and
                            // the panic hook has already printed the panic. The payload is
                            // the host's value: dropped here directly, a drop that panicked
                            // ended this thread.
                            let swept =
                                panic::catch_unwind(AssertUnwindSafe(|| inner.purge_expired()));
                            if let Err(payload) = swept {
                                callback::drop_payload(payload);
                            }
                        }
                        None => break,
                    }
                }
            });
        // If no thread can be spawned, expiry still happens on reads and purge_expired.
        if let Ok(thread) = spawned {
            *inner.sweeper.lock() = Some(Sweeper { stop, thread });
        }
    }
}

/// The last handle's drop: stops the sweeper, then drops the values still stored one by one,
/// and the listener, re-raising the first panic of their drops once all are dropped (see
/// [`Cache`]'s docs).
impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(sweeper) = self.sweeper.get_mut().take() {
            sweeper.stop.store(true, Ordering::Release);
            sweeper.thread.thread().unpark();
            // The sweeper itself may drop the last handle; it is exiting then anyway.
            if sweeper.thread.thread().id() != std::thread::current().id() {
                let _ = sweeper.thread.join();
            }
        }
        // A value's drop is the host's code (a `Bytes::from_owner` runs its owner's). Dropped
        // with the shards, all together, one that panicked unwound out of the drop, and a
        // second one, during that unwinding, aborted the process. The listener is not told:
        // a dropped cache reports nothing, as moka's does not.
        let mut panicked = FirstPanic::default();
        for shard in std::mem::take(&mut self.shards) {
            for record in shard.0.lock.into_inner().into_records() {
                panicked.catch(move || drop(record));
            }
        }
        // So is the listener's: what it captured is the host's (a listener that keeps the
        // values it hears of holds them). Dropped as a field, after the first panic above was
        // re-raised or while the thread unwinds, a panic of its drop aborted the process.
        if let Some(listener) = self.listener.take() {
            panicked.catch(move || drop(listener));
        }
        // Dropped while this thread unwinds from another panic, the first panic is dropped
        // instead: let out of this drop then, it would abort the process.
        panicked.resume();
    }
}

/// One live entry as a snapshot sees it: enough to restore the value, its remaining TTL and its
/// standing with the eviction policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EntryImage {
    pub(crate) key: CacheKey,
    pub(crate) value: Bytes,
    /// Time left to live; `None` for entries without a TTL.
    pub(crate) ttl_remaining: Option<Duration>,
    pub(crate) access_count: u64,
    /// The policy's frequency counter (0–3).
    pub(crate) freq: u8,
    /// Whether the entry is in the policy's main queue (it proved itself).
    pub(crate) main: bool,
}

impl EntryImage {
    /// Policy rank: higher is more valuable (kept first when not everything fits).
    pub(crate) fn rank(&self) -> (bool, u8, u64) {
        EntryImage::rank_of(self.main, self.freq, self.access_count)
    }

    /// The rank of an entry with this standing, for callers (a snapshot's first pass) that
    /// choose before they hold the values.
    pub(crate) fn rank_of(main: bool, freq: u8, access_count: u64) -> (bool, u8, u64) {
        (main, freq, access_count)
    }
}

/// Room left in a cache's budget, as an import counts it down while it chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Room {
    pub(crate) bytes: u64,
    pub(crate) entries: u64,
}

impl Room {
    /// Takes the room an entry charged `charge` needs, if it is there; `held` is the charge
    /// of the entry its key already has in the cache, if any.
    ///
    /// A present key's value is replaced, not added: it needs no entry and only the bytes by
    /// which it outgrows the old value, which is what storing it reserves (see
    /// `Inner::store`). Charging it in full refused every entry of a snapshot reloaded into
    /// the full cache it was saved from. A value smaller than the one it replaces frees
    /// bytes, but they are not added to the room: entries are stored least valuable first,
    /// in the reverse of the order they are chosen in, so the less valuable ones this room
    /// would go to are stored before the replacement frees it, and would not fit then.
    pub(crate) fn take(&mut self, charge: u64, held: Option<u64>) -> bool {
        let (bytes, entries) = match held {
            Some(old) => (charge.saturating_sub(old), 0),
            None => (charge, 1),
        };
        if bytes > self.bytes || entries > self.entries {
            return false;
        }
        self.bytes -= bytes;
        self.entries -= entries;
        true
    }

    /// This room and `other` together (saturating).
    pub(crate) fn plus(self, other: Room) -> Room {
        Room {
            bytes: self.bytes.saturating_add(other.bytes),
            entries: self.entries.saturating_add(other.entries),
        }
    }
}

/// What [`Cache::choose_for_import`] does with expired entries when not everything fits.
pub(crate) enum Expired<'p> {
    /// Purges them (reported as `Expired`), as an insert that must evict does: for the
    /// import, which stores what it chose right after. A panic of the listener goes to the
    /// given slot, for the caller to re-raise once it has restored what it chose: passed
    /// straight up, it ended a load after the purge and before any entry was restored. So
    /// does a panic of the drop of an item left out (see [`Expired::leave_out`]).
    Purge(&'p mut FirstPanic),
    /// Leaves them in place, counting the room of those expired by the given time as free
    /// ([`Cache::room_once_purged`]): for a snapshot load's choice, made before its second
    /// read, which may still fail. A failed load must leave the cache as it was; it used to
    /// purge them here, telling the listener and counting them, and then fail. The import
    /// purges them once the read checked out. The time is the one the charges held by
    /// present keys were noted at (see [`Cache::live_held_charge`]): a key that expired
    /// since was counted both ways, its room free and its entry in the file as replacing
    /// it, so the choice took values that did not fit together.
    CountAsFree(Timestamp),
}

impl Expired<'_> {
    /// Drops an item the choice left out. The import's items hold the host's values, whose
    /// drop is the host's code (a `Bytes::from_owner` runs its owner's): each is dropped
    /// under `catch_unwind`, its panic kept in the slot. Dropped as they were, one whose drop
    /// panicked unwound out of the import after the purge and before anything was restored,
    /// the purge's kept panic lost, and a second such drop, during that unwinding, aborted.
    /// A load's choice, which purges nothing, chooses among ranks that hold no values.
    fn leave_out<T>(&mut self, item: T) {
        match self {
            Expired::Purge(panicked) => panicked.catch(move || drop(item)),
            Expired::CountAsFree(_) => drop(item),
        }
    }
}

/// What [`Cache::import`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ImportOutcome {
    pub(crate) restored: usize,
    pub(crate) restored_bytes: u64,
    pub(crate) left_out: usize,
    pub(crate) left_out_bytes: u64,
}

impl Cache {
    /// Number of shards (snapshots export shard by shard).
    pub(crate) fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The live entries of one shard, least valuable first, taken under its read lock (values
    /// are shared handles, not copies).
    pub(crate) fn export_shard(&self, index: usize) -> Vec<EntryImage> {
        let now = self.inner.clock.now().as_nanos();
        let Some(shard) = self.inner.shards.get(index) else {
            return Vec::new();
        };
        let shard = shard.0.lock.read();
        shard
            .records_by_rank()
            .filter(|record| !record.is_expired(now))
            .map(|record| EntryImage {
                key: record.key,
                value: record.value.clone(),
                ttl_remaining: (record.expires_at() != NEVER)
                    .then(|| Duration::from_nanos(record.expires_at() - now)),
                access_count: record.access_count(),
                freq: record.freq(),
                main: record.in_main(),
            })
            .collect()
    }

    /// What [`Cache::import`] would keep of `items` given the room left now: sorted most
    /// valuable first by `rank` (stable: equal ranks keep their order), each taken if it fits
    /// what is left (see [`Room::take`]: `charge` is its charge, `held` the charge its key
    /// already holds in the cache, if present). Returns the chosen items, most valuable first,
    /// and counts the others in `outcome`'s `left_out` fields. Shared with a snapshot load
    /// that decides which values to read before it reads them.
    ///
    /// If not everything fits, expired entries do not count against the room: they hold
    /// budget no reader can use. Counted as residents, a cache whose entries had all expired
    /// restored nothing and reported every entry of the snapshot as left out for want of
    /// room. `expired` says whether they are purged, and how the items left out are dropped
    /// (see [`Expired`]).
    pub(crate) fn choose_for_import<T>(
        &self,
        mut items: Vec<T>,
        rank: impl Fn(&T) -> (bool, u8, u64),
        charge: impl Fn(&T) -> u64,
        held: impl Fn(&T) -> Option<u64>,
        outcome: &mut ImportOutcome,
        mut expired: Expired<'_>,
    ) -> Vec<T> {
        items.sort_by_key(|item| std::cmp::Reverse(rank(item)));
        // If everything fits as new entries (a restart into a cache as large as the saved
        // one), presence cannot change the choice: it is not asked, which saves a shard
        // lookup an entry (see the cost in `Cache::load_snapshot_with`).
        let need = items
            .iter()
            .fold(0u64, |sum, item| sum.saturating_add(charge(item)));
        let fits = |room: &Room| need <= room.bytes && items.len() as u64 <= room.entries;
        let mut room = self.room();
        let mut all_fit = fits(&room);
        if !all_fit {
            let freed = match &mut expired {
                Expired::Purge(panicked) => {
                    (self.inner.purge_expired_into(panicked) > 0).then(|| self.room())
                }
                Expired::CountAsFree(at) => Some(self.room_once_purged(*at)),
            };
            if let Some(freed) = freed {
                room = freed;
                all_fit = fits(&room);
            }
        }
        let mut chosen = Vec::with_capacity(items.len());
        for item in items {
            let charge = charge(&item);
            let held = if all_fit { None } else { held(&item) };
            if room.take(charge, held) {
                chosen.push(item);
            } else {
                outcome.left_out += 1;
                outcome.left_out_bytes += charge;
                expired.leave_out(item);
            }
        }
        chosen
    }

    /// The room left in the budget now: charged bytes and entries.
    pub(crate) fn room(&self) -> Room {
        let inner = &self.inner;
        Room {
            bytes: inner.max_bytes.saturating_sub(self.size_bytes()),
            entries: inner.max_entries.saturating_sub(self.len() as u64),
        }
    }

    /// The room [`Cache::room`] would give once the entries expired by `at` were purged,
    /// purging none.
    pub(crate) fn room_once_purged(&self, at: Timestamp) -> Room {
        self.room().plus(self.expired_room(at))
    }

    /// The room the entries expired by `at` hold, purging none: each shard that may hold one
    /// is read under its read lock.
    pub(crate) fn expired_room(&self, at: Timestamp) -> Room {
        let now = at.as_nanos();
        let mut room = Room {
            bytes: 0,
            entries: 0,
        };
        for cell in self.inner.shards.iter().map(|shard| &shard.0) {
            // As `Inner::expire_shard`: nothing in the shard can have expired by `now`.
            if now <= cell.earliest.load(Ordering::Relaxed) {
                continue;
            }
            let (bytes, entries) = cell.lock.read().expired_room(now);
            room = room.plus(Room { bytes, entries });
        }
        room
    }

    /// The charge of the entry under `key`, if there is one — expired or not, as a store over
    /// it counts it — recording no access.
    pub(crate) fn held_charge(&self, key: &CacheKey) -> Option<u64> {
        let inner = &self.inner;
        let hash = inner.hasher.hash(key);
        inner.shard(hash).read().find(hash, key).map(Record::charge)
    }

    /// [`Cache::held_charge`], but `None` for an entry expired by `now`: for a choice made
    /// later from charges noted now, by which time an expired entry may have been purged (see
    /// [`Cache::choose_for_import`]) and its key hold nothing.
    pub(crate) fn live_held_charge(&self, key: &CacheKey, now: Timestamp) -> Option<u64> {
        let inner = &self.inner;
        let hash = inner.hasher.hash(key);
        let shard = inner.shard(hash).read();
        let record = shard.find(hash, key)?;
        (!record.is_expired(now.as_nanos())).then(|| record.charge())
    }

    /// Stores restored entries: the most valuable ones that fit the room left in the budget
    /// (by [`EntryImage::rank`], ties kept in the given order), inserted least valuable first
    /// so that the queues come back in their old order. No live entry is evicted (expired
    /// ones may be purged, see [`Cache::choose_for_import`], and so they are when an entry
    /// finds no room): an entry whose room other writers took meanwhile is left out. An
    /// entry whose key is present replaces its value as an insert does (an update: the old
    /// value is reported as `Replaced`, or `Expired` if it had expired), so it needs only the
    /// room by which it outgrows the old one (see [`Room::take`]). An entry without a TTL
    /// gets the cache's default TTL, if it has one. Entries whose TTL ran out are the
    /// caller's to drop (one with 0 ns left is live until `now` passes). Deadlines count from `now`, a reading of this cache's clock that the
    /// caller took no later than the wall-clock time it measured the TTLs left at.
    ///
    /// Every chosen entry is stored even if the listener (told of purged and replaced values)
    /// or a value's drop (of those replaced, purged or left out) panics: the first panic is
    /// kept in `panicked`, for the caller to re-raise once its own work is done.
    pub(crate) fn import(
        &self,
        images: Vec<EntryImage>,
        now: Timestamp,
        panicked: &mut FirstPanic,
    ) -> ImportOutcome {
        let inner = &self.inner;
        let mut outcome = ImportOutcome::default();
        let chosen = self.choose_for_import(
            images,
            EntryImage::rank,
            |image| CacheEntry::charged_size(image.value.len()) as u64,
            |image| self.held_charge(&image.key),
            &mut outcome,
            Expired::Purge(panicked),
        );
        let now = now.as_nanos();
        for image in chosen.into_iter().rev() {
            let charge = CacheEntry::charged_size(image.value.len()) as u64;
            // Saved without a TTL, an entry gets this cache's default, as an insert without
            // one does: restored ones lived for ever in a cache built to bound every entry's
            // life, and every save and restart carried them on.
            let ttl = image
                .ttl_remaining
                .or(inner.default_ttl.map(Ttl::as_duration));
            let expires_at = ttl.map_or(NEVER, |left| {
                deadline(now, u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
            });
            let mut removed = Removed::new();
            let hash = inner.hasher.hash(&image.key);
            let entry = |value| NewEntry {
                key: image.key,
                value,
                now,
                expires_at,
                access_count: image.access_count,
                accessed_at: now,
                freq: image.freq,
                main: image.main,
            };
            // The shared header, as `Inner::insert` does. Held until the stores are done and
            // dropped under `catch_unwind` below: a store that fails drops its entry's handle,
            // so one of them was the last handle of a value left out, and a value whose drop
            // panicked unwound out of the import with the rest unrestored.
            let again = image.value.clone();
            // Without evicting: writers may have taken the room chosen against above. But
            // expired entries hold room no reader can use: a store that finds none purges
            // them and tries once more. It left the entry out while they held its room, when
            // a writer took the rest between the choice (which purges only if what it
            // chooses does not fit as it chooses) and the store. Called twice, the store is
            // no longer inlined here: a load of 100,000 entries into an empty cache costs
            // about 25 instructions an entry more (callgrind), and one call in a loop, or the
            // second out of line, cost more still.
            let mut stored = inner.store::<false>(hash, entry(image.value), &mut removed);
            if let Ok(false) = stored
                && inner.purge_expired_into(panicked) > 0
            {
                stored = inner.store::<false>(hash, entry(again.clone()), &mut removed);
            }
            inner.report(removed, panicked);
            if let Ok(true) = stored {
                outcome.restored += 1;
                outcome.restored_bytes += charge;
            } else {
                outcome.left_out += 1;
                outcome.left_out_bytes += charge;
            }
            panicked.catch(move || drop(again));
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
