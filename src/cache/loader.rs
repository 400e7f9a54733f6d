//! Memoized loading: concurrent misses on one key run the loader once.
//!
//! # Design
//!
//! In-flight loads are *claims*: a key and a *flight* (a mutex-guarded state and a condition
//! variable). The first caller to miss claims the key and becomes its *leader*: it runs the
//! loader with no lock held, stores the value in the cache, removes its claim and publishes
//! the outcome on the flight. Callers that find a claim wait on its flight and take the
//! leader's outcome: the value, or the leader's error (shared as `Arc<E>`), which is not
//! cached — the next call after the flight ends tries again.
//!
//! Most misses have no company, so the flight is allocated by the first *waiter*, not by the
//! leader: a claim starts empty, and a lone leader's miss costs one push and one
//! `swap_remove`, with no allocation, flight mutex or condition variable. The key is hashed
//! once, for the claims and for the cache's lookups and store alike, and the re-check after
//! claiming the key reads the clock only if it finds an entry, so a miss reads it twice (the
//! first lookup and the store), not three times. Only the leader removes its claim, so the
//! claim it removes is always its own; a caller that arrives after the removal finds no
//! claim, leads, and finds the stored value on its re-check. The re-check itself (a read
//! lock and a probe) runs only if the key's shard has stored anything since the caller's
//! miss, which a count of the shard's stores, read by the miss under its lock, tells with
//! one load (see `Inner::stored_since`). By callgrind, in `get_or_load` over operations
//! 200,000 to 400,000 of get-or-insert at Zipf(1.0) over 500,000 keys into 50,000 entries
//! (22.5 % misses), three runs each: 630.2–634.5 instructions an operation with the
//! re-check on every miss, 613.6–615.2 without, about 85 fewer a miss.
//!
//! ## Where claims live
//!
//! Claims sit in *stripes*, as many as the cache has shards, picked by the key's hash: each
//! a short list under its own mutex. Only the keys being loaded at this moment are in a
//! stripe — about as many as there are threads loading, spread over the stripes — so a claim
//! is a scan of a list that is nearly always empty, a push, and later a `swap_remove`. Until
//! session 13 they were a `DashMap`, whose insert and removal cost a lone miss about 126
//! instructions more. The price is the scan, which grows with the loads in flight in one
//! stripe: never more than the threads loading. A lone miss also no longer clones its value
//! for a flight that nobody waits on ([`Claim::land`] builds the outcome only for waiters):
//! 56 instructions a miss less. Measured with callgrind on get-or-insert at Zipf(1.0) over
//! 10× the capacity, 400,000 operations with 26 % misses, four runs of each build (each
//! process seeds its key hasher anew, which moves a run's total by up to 1 M): the whole run
//! took 724.3–724.7 M instructions with the `DashMap`, 711.3–712.1 M with stripes, and
//! 705.6–706.3 M with both changes — about 685, 653 and 638 instructions an operation in
//! the loop.
//!
//! A loader that panics must not strand its waiters or poison the key: the leader catches
//! the panic, marks the flight *abandoned*, removes it, and re-raises the panic in its own
//! thread only. Each waiter wakes, sees the abandonment and starts over — one of them becomes
//! the new leader and runs its own loader. Errors are shared only between callers whose error
//! types match (they are stored type-erased and downcast); a waiter with another error type
//! treats the flight like an abandoned one and loads for itself.
//!
//! The same holds for a panic anywhere else on the leader's path: its claim is a guard that
//! lands the flight as abandoned when dropped unlanded. The eviction listener, which the
//! leader's store may call, runs only after the flight has landed, so a listener that loads
//! through the cache never waits on a flight its own thread holds.
//!
//! # A loader that loads its own key
//!
//! A loader that loads its own key again on its own thread would wait on the flight its own
//! thread leads, for ever. A claim therefore records its leader's [`ThreadId`], and a caller
//! that finds a claim compares it with its own before waiting: if its own thread leads the
//! flight, it gets [`CacheError::ReentrantLoad`] naming the key instead (the outer load goes on
//! and may store its value). Only a caller that finds a claim pays the comparison; the leader
//! pays one thread-local read to record its id, and a hit pays nothing.
//!
//! # Cycles of loads across threads
//!
//! The same deadlock spans threads: thread A leads key K1 and its loader loads K2, which
//! thread B leads, and B's loader loads K1 — A waits for B's flight and B for A's (and so on
//! for A→B→C→A), and alike when the keys are in different caches (A's loader loads from
//! another cache). Every waiting thread therefore records, in one map of *thread → flight it
//! waits on* shared by every cache of the process, the flight it waits on, and a flight
//! records its leader. Before a caller waits it follows the chain — the flight's leader, the
//! flight that leader waits on, that flight's leader, ... — and if the chain comes back to a
//! flight its own thread leads, waiting would close a cycle: it gets [`CacheError::LoadCycle`]
//! naming the key instead. Its loader goes on (it may store a value or fail), its flight
//! lands, and every other thread of the cycle is released with the value or the error of the
//! flight it waits on: one thread of the cycle is refused, none is stranded.
//!
//! The check and the record are made under one mutex, so they are atomic with respect to
//! every other waiter's: of two threads closing a cycle at once, the second sees the first's
//! record and is refused — they cannot both pass. That makes the records acyclic, so a walk
//! ends within one step per record. A record is removed by its own thread (a guard, so on
//! every exit, unwinding included) after its wait ends; until then the record is *stale* —
//! its flight has landed and its thread is waking, not waiting — so the walk stops at a flight
//! that is no longer running rather than report a cycle that is not there. A flight's leader
//! never changes: a waiter that takes over after a panicking leader claims the key afresh,
//! and those who then wait record the new flight, led by the new leader. Lock order: the
//! records' mutex, then (in the walk) one flight's state at a time; a waiter releases its
//! flight's state before it removes its record.
//!
//! Only callers that find a flight pay for this — a mutex (one for the process, so that a
//! cycle through two caches is seen), a walk as long as the chain of waits, and an insert and
//! a removal in the records — and they are about to sleep anyway; a hit and a lone miss touch
//! none of it. What is not seen: a thread that waits for another by other means (`join`, a
//! channel, a lock) is invisible to the cache, so a loader that waits that way for a thread
//! loading a key the loader's own thread leads still waits for ever, and is the caller's to
//! avoid.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, LazyLock};
use std::thread::{self, ThreadId};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::listener::Removed;
use super::{Cache, CacheError, Padded};
use crate::key::CacheKey;

/// Why [`Cache::try_get_or_insert_with`] returned no value.
///
/// `LoadError<E>` implements [`std::error::Error`] when `E` does, so `?` converts it into a
/// `Box<dyn Error>`; a loader error type that is not an `Error` (a `String`, say) is matched
/// instead. So is the error most code written with `?` returns, `Box<dyn Error + Send + Sync>`
/// (or `anyhow::Error`): the standard library implements `Error` for a `Box<T>` of a sized `T`
/// only, so `?` cannot convert a `LoadError` of it (the compiler says that
/// `dyn Error + Send + Sync` has no size known at compile-time). The second example below
/// matches it.
///
/// ```
/// use memocache::{Cache, CacheError, CacheKey, LoadError};
///
/// let cache = Cache::builder().max_bytes(1 << 20).build()?;
/// let file_hash = CacheKey::from_content(b"some audio", "file")?.digest_hex();
/// let key = CacheKey::transcript(&file_hash, "en")?;
///
/// // The loader's error reaches the caller (shared: `Arc<E>`) and is not cached.
/// let err = cache
///     .try_get_or_insert_with(key, || Err::<&str, String>("engine down".into()))
///     .unwrap_err();
/// assert!(matches!(&err, LoadError::Loader(e) if e.as_str() == "engine down"));
/// assert_eq!(err.to_string(), "the loader failed: engine down");
/// assert!(!cache.contains_key(&key));
///
/// // A loader that loads its own key on its own thread is refused, and says so.
/// let inner = cache.clone();
/// let outer = cache.try_get_or_insert_with(key, || {
///     let err = inner
///         .try_get_or_insert_with(key, || Ok::<_, String>("inner"))
///         .unwrap_err();
///     assert!(matches!(err, LoadError::Cache(CacheError::ReentrantLoad { .. })));
///     assert!(err.to_string().starts_with("the loader of key transcript:"));
///     Ok::<_, String>("outer")
/// });
/// assert_eq!(&outer.unwrap()[..], b"outer");
///
/// // A value larger than the whole budget is returned as an error and not stored.
/// let small = Cache::builder().max_bytes(200).build()?;
/// let err = small
///     .try_get_or_insert_with(key, || Ok::<_, String>(vec![0u8; 1000]))
///     .unwrap_err();
/// assert!(matches!(err, LoadError::Cache(CacheError::TooLarge { .. })));
/// assert!(err.to_string().starts_with("the loaded value was not cached: an entry charged"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A loader whose error is a `Box<dyn Error + Send + Sync>`, and a caller that returns one:
///
/// ```
/// use memocache::{Cache, CacheKey, LoadError};
///
/// type BoxError = Box<dyn std::error::Error + Send + Sync>;
///
/// // A loader written with `?`, as most are.
/// fn transcribe(audio: &[u8]) -> Result<String, BoxError> {
///     Ok(std::str::from_utf8(audio)?.to_uppercase())
/// }
///
/// fn transcript(cache: &Cache, audio: &[u8]) -> Result<String, BoxError> {
///     let key = CacheKey::from_content(audio, "transcript")?;
///     let text = cache
///         .try_get_or_insert_with(key, || transcribe(audio))
///         .map_err(|e| match e {
///             // Shared (`Arc`) with every caller that waited on this load: its message.
///             LoadError::Loader(e) => BoxError::from(e.to_string()),
///             LoadError::Cache(e) => BoxError::from(e),
///         })?;
///     Ok(String::from_utf8_lossy(&text).into_owned())
/// }
///
/// let cache = Cache::builder().max_bytes(1 << 20).build()?;
/// assert_eq!(transcript(&cache, b"hello")?, "HELLO");
/// let err = transcript(&cache, b"\xff").unwrap_err();
/// assert!(err.to_string().starts_with("invalid utf-8"));
/// # Ok::<(), BoxError>(())
/// ```
#[derive(Debug)]
pub enum LoadError<E> {
    /// The loader returned an error (this call's loader, or the one it waited for).
    Loader(Arc<E>),
    /// The cache refused the load: the loaded value could not be stored (for example it is
    /// larger than the whole budget, [`CacheError::TooLarge`]), or, before any loader ran,
    /// waiting for the key would never end ([`CacheError::ReentrantLoad`],
    /// [`CacheError::LoadCycle`]).
    Cache(CacheError),
}

/// Cloned without `E: Clone`: the loader's error is shared, as it is among the callers that
/// waited on one load.
impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        match self {
            LoadError::Loader(e) => LoadError::Loader(Arc::clone(e)),
            LoadError::Cache(e) => LoadError::Cache(e.clone()),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Loader(e) => write!(f, "the loader failed: {e}"),
            // No value was loaded for these: this call's loader never ran.
            LoadError::Cache(
                e @ (CacheError::ReentrantLoad { .. } | CacheError::LoadCycle { .. }),
            ) => write!(f, "{e}"),
            LoadError::Cache(e) => write!(f, "the loaded value was not cached: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Loader(e) => Some(&**e),
            LoadError::Cache(e) => Some(e),
        }
    }
}

enum FlightState {
    Running,
    Loaded(Bytes),
    LoaderFailed(Arc<dyn Any + Send + Sync>),
    NotCached(CacheError),
    Abandoned,
}

struct Flight {
    /// The thread that runs the load: fixed for the flight's life (a takeover after a panic
    /// is a new claim with a new flight).
    leader: ThreadId,
    state: Mutex<FlightState>,
    done: Condvar,
}

impl Flight {
    fn new(leader: ThreadId) -> Flight {
        Flight {
            leader,
            state: Mutex::new(FlightState::Running),
            done: Condvar::new(),
        }
    }

    fn is_running(&self) -> bool {
        matches!(*self.state.lock(), FlightState::Running)
    }

    fn land(&self, state: FlightState) {
        *self.state.lock() = state;
        self.done.notify_all();
    }
}

/// A key with its seeded hash from the cache's `KeyHasher`: the hash picks the key's stripe of
/// the flights and serves the cache's lookups and store, so a miss hashes its key once.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FlightKey {
    hash: u64,
    key: CacheKey,
}

/// A claimed key: who leads its load, and the flight once somebody waits for it.
struct Claimed {
    leader: ThreadId,
    flight: Option<Arc<Flight>>,
}

/// The calling thread's id. Cached in a thread-local: `thread::current()` clones and drops
/// the thread's handle (two atomic operations), which every leader would pay.
fn this_thread() -> ThreadId {
    thread_local! {
        static ID: ThreadId = thread::current().id();
    }
    ID.with(|id| *id)
}

/// The claimed keys of one stripe, with their claims.
type Stripe = Vec<(FlightKey, Claimed)>;

/// The in-flight loads of one cache.
pub(super) struct Loads {
    /// Claimed keys, in stripes picked by the key's hash (a power of two of them). A stripe is
    /// a short list under its own mutex: it holds only the keys being loaded at this moment,
    /// which are about as many as the threads loading, so a scan of a few entries finds a key
    /// and a claim is a push and a `swap_remove` — cheaper than a hash map's insert and
    /// removal (see the module docs).
    stripes: Box<[Padded<Mutex<Stripe>>]>,
}

/// The flight each waiting thread waits on: the edges of the wait-for graph that the cycle
/// check walks (see the module docs). One map for the whole process, not one per cache: a
/// loader of one cache may load from another, and a cycle of waits through two caches is
/// seen only if both caches' waits are in one graph (with a map per cache, each saw half of
/// it and the threads waited for ever). Flights are led by threads, whatever their cache, so
/// the walk needs nothing else.
static WAITING: LazyLock<Mutex<HashMap<ThreadId, Arc<Flight>>>> = LazyLock::new(Mutex::default);

impl fmt::Debug for Loads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loads")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Whether waiting on `flight` would close a cycle of waits: its leader waits on a flight
/// whose leader waits on ... a flight that `me` leads. `waiting` holds every waiting thread's
/// record; a record whose flight is no longer running is stale (its thread is waking) and
/// ends the chain.
fn closes_cycle(waiting: &HashMap<ThreadId, Arc<Flight>>, me: ThreadId, flight: &Flight) -> bool {
    let mut next = flight;
    // The records are acyclic (each was checked against the others when it was made), so the
    // chain ends within one step per record; bounding the walk keeps that from being a
    // matter of trust while the records' mutex is held.
    for _ in 0..=waiting.len() {
        if !next.is_running() {
            return false;
        }
        if next.leader == me {
            return true;
        }
        match waiting.get(&next.leader) {
            Some(waited) => next = waited,
            None => return false,
        }
    }
    false
}

/// This thread's record of the flight it waits on; dropping it removes the record.
struct Waiting {
    thread: ThreadId,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.lock().remove(&self.thread);
    }
}

impl Loads {
    /// Flights in `stripes` stripes, rounded up to a power of two.
    pub(super) fn new(stripes: usize) -> Loads {
        Loads {
            stripes: (0..stripes.max(1).next_power_of_two())
                .map(|_| Padded(Mutex::new(Vec::new())))
                .collect(),
        }
    }

    /// How many keys are claimed.
    pub(super) fn in_flight(&self) -> usize {
        self.stripes
            .iter()
            .map(|stripe| stripe.0.lock().len())
            .sum()
    }

    /// How many claimed keys have a flight, that is, a caller waiting (or about to wait) on
    /// their load: lets a test act once a waiter is committed to waiting.
    #[cfg(test)]
    pub(super) fn waited_on(&self) -> usize {
        self.stripes
            .iter()
            .map(|stripe| {
                let stripe = stripe.0.lock();
                stripe.iter().filter(|(_, c)| c.flight.is_some()).count()
            })
            .sum()
    }

    /// How many threads wait on the flight of the claimed key of hash `hash`: lets a test
    /// hold a load until every waiter is committed to it, without sleeping.
    #[cfg(test)]
    pub(super) fn waiting_on(&self, hash: u64) -> usize {
        let flight = {
            let stripe = self.stripe(hash).lock();
            stripe
                .iter()
                .find(|(claimed, _)| claimed.hash == hash)
                .and_then(|(_, c)| c.flight.clone())
        };
        // After the stripe's lock is released: no one takes `WAITING` while holding a stripe.
        flight.map_or(0, |flight| {
            let waiting = WAITING.lock();
            waiting.values().filter(|f| Arc::ptr_eq(f, &flight)).count()
        })
    }

    fn stripe(&self, hash: u64) -> &Mutex<Stripe> {
        // Low bits: the shard index takes the high ones.
        &self.stripes[(hash as usize) & (self.stripes.len() - 1)].0
    }

    /// Records that this thread waits on `flight`, or `None` if that would close a cycle of
    /// waits — checked and recorded under one lock, so two threads cannot both close a cycle.
    fn start_waiting(flight: &Arc<Flight>) -> Option<Waiting> {
        let me = this_thread();
        let mut waiting = WAITING.lock();
        if closes_cycle(&waiting, me, flight) {
            return None;
        }
        waiting.insert(me, Arc::clone(flight));
        Some(Waiting { thread: me })
    }

    /// The live value under `key`, or the value `load` loads for it (see the module docs).
    ///
    /// Inline, and only the lookup: a hit costs what [`Cache::get`] does. The miss is
    /// [`Loads::load_missed`], out of line. Whole, as one function, a hit also paid its frame
    /// and the moves of the key and the result through it: by callgrind, a get-or-insert hit
    /// cost 331.9 instructions against 283.1 for a `get` of the same keys; split, 291.0
    /// (`benches/HISTORY.md`, session 28).
    #[inline]
    pub(super) fn get_or_load<E: Send + Sync + 'static>(
        &self,
        cache: &Cache,
        key: CacheKey,
        load: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, LoadError<E>> {
        // One hash serves the cache's lookups and store and the claims' stripe.
        let hash = cache.inner.hasher.hash(&key);
        // One lookup, counted as one hit or one miss, before the claims: a caller that starts
        // over (its flight was abandoned, or failed with another error type) goes straight
        // to the claims, where it waits again or leads — and a leader re-checks the cache
        // anyway. Looking up again would count one call as two reads.
        let mut stores = 0;
        if let Some(value) = cache.inner.read_hashed(hash, &key, true, &mut stores) {
            return Ok(value);
        }
        self.load_missed(cache, FlightKey { hash, key }, stores, load)
    }

    /// [`Loads::get_or_load`] after its lookup missed (the shard's store count then was
    /// `stores`): waits for the key's flight, or leads it.
    #[inline(never)]
    fn load_missed<E: Send + Sync + 'static>(
        &self,
        cache: &Cache,
        flight_key: FlightKey,
        stores: u64,
        load: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, LoadError<E>> {
        let key = flight_key.key;
        loop {
            let mut stripe = self.stripe(flight_key.hash).lock();
            let flight = match stripe
                .iter_mut()
                .find(|(claimed, _)| *claimed == flight_key)
            {
                Some((_, claimed)) => {
                    let leader = claimed.leader;
                    // Our own thread leads this load: we are inside its loader, and waiting
                    // would wait for ourselves.
                    if leader == this_thread() {
                        return Err(LoadError::Cache(CacheError::ReentrantLoad { key }));
                    }
                    Arc::clone(
                        claimed
                            .flight
                            .get_or_insert_with(|| Arc::new(Flight::new(leader))),
                    )
                }
                None => {
                    stripe.push((
                        flight_key,
                        Claimed {
                            leader: this_thread(),
                            flight: None,
                        },
                    ));
                    drop(stripe);
                    return self.lead(cache, flight_key, stores, load);
                }
            };
            drop(stripe);
            // After the stripe's lock is released: the cycle check takes the records' mutex
            // and other flights' states, which no one takes while holding a stripe.
            if let Some(outcome) = self.wait(&flight, key) {
                return outcome;
            }
            // Abandoned, or an error of another type: start over (and perhaps lead).
        }
    }

    /// Waits on `flight`, which another thread leads, and takes its outcome: `None` if the
    /// caller must start over (the flight was abandoned, or failed with another error type),
    /// `LoadCycle` if waiting would close a cycle of waits. Out of line and cold: most misses
    /// find no flight, and keeping the waiter's code out of `get_or_load` keeps the hit and
    /// the lone miss as they were (measured with callgrind: inlined, it cost them ~5
    /// instructions an operation).
    #[cold]
    #[inline(never)]
    fn wait<E: Send + Sync + 'static>(
        &self,
        flight: &Arc<Flight>,
        key: CacheKey,
    ) -> Option<Result<Bytes, LoadError<E>>> {
        let Some(waiting) = Loads::start_waiting(flight) else {
            return Some(Err(LoadError::Cache(CacheError::LoadCycle { key })));
        };
        let mut state = flight.state.lock();
        while matches!(*state, FlightState::Running) {
            flight.done.wait(&mut state);
        }
        let outcome = match &*state {
            FlightState::Loaded(value) => Some(Ok(value.clone())),
            FlightState::NotCached(e) => Some(Err(LoadError::Cache(e.clone()))),
            FlightState::LoaderFailed(e) => Arc::clone(e)
                .downcast::<E>()
                .ok()
                .map(|e| Err(LoadError::Loader(e))),
            FlightState::Abandoned | FlightState::Running => None,
        };
        // In this order: the cycle check takes the records' mutex before a flight's state,
        // so no one may take them the other way round.
        drop(state);
        drop(waiting);
        outcome
    }

    fn lead<E: Send + Sync + 'static>(
        &self,
        cache: &Cache,
        flight_key: FlightKey,
        stores: u64,
        load: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, LoadError<E>> {
        let FlightKey { hash, key } = flight_key;
        let inner = &cache.inner;
        let claim = Claim {
            loads: self,
            key: flight_key,
        };
        // Another leader may have stored the value between our miss and our flight, but only
        // if anything was stored in the shard since the miss (`stores`, its count then). Not
        // `peek`: it would remove an expired entry and run the listener while we hold the claim.
        if inner.stored_since(hash, stores)
            && let Some(value) = inner.live_value(hash, &key)
        {
            claim.land(|| FlightState::Loaded(value.clone()));
            return Ok(value);
        }
        match panic::catch_unwind(AssertUnwindSafe(load)) {
            Ok(Ok(value)) => {
                inner.count_load(true);
                // The listener hears of the removals only after the flight has landed: a
                // listener that loads through the cache must not wait for this flight (or for
                // a flight whose leader waits, in its own listener, for ours), and a panicking
                // listener must not leave the flight unlanded.
                let mut removed = Removed::new();
                // The clone also gives a `Vec`-backed value its shared header before it is
                // stored (see `Inner::store`).
                match inner.insert_unreported(
                    hash,
                    key,
                    value.clone(),
                    inner.default_ttl,
                    &mut removed,
                ) {
                    Ok(()) => {
                        claim.land(|| FlightState::Loaded(value.clone()));
                        inner.notify(removed);
                        Ok(value)
                    }
                    Err(e) => {
                        claim.land(|| FlightState::NotCached(e.clone()));
                        Err(LoadError::Cache(e))
                    }
                }
            }
            Ok(Err(e)) => {
                inner.count_load(false);
                let e = Arc::new(e);
                claim.land(|| FlightState::LoaderFailed(e.clone()));
                Err(LoadError::Loader(e))
            }
            Err(payload) => {
                inner.count_load(false);
                // Dropping the claim lands the flight as abandoned.
                drop(claim);
                panic::resume_unwind(payload)
            }
        }
    }
}

/// A leader's claim on a key. Landing it removes it from its stripe and wakes the waiters;
/// dropping it unlanded — the leader is unwinding — lands it as abandoned, so that no panic
/// on the leader's path strands a waiter or leaves the key claimed for ever.
struct Claim<'a> {
    loads: &'a Loads,
    key: FlightKey,
}

impl Claim<'_> {
    /// Removes the claim and, if anyone waits, publishes the outcome `state` builds: a lone
    /// miss, which has no flight, builds none (no clone of the value to drop again).
    fn land(self, state: impl FnOnce() -> FlightState) {
        self.finish(state);
        std::mem::forget(self);
    }

    fn finish(&self, state: impl FnOnce() -> FlightState) {
        let claimed = {
            let mut stripe = self.loads.stripe(self.key.hash).lock();
            let at = stripe.iter().position(|(claimed, _)| *claimed == self.key);
            at.map(|at| stripe.swap_remove(at).1)
        };
        if let Some(Claimed {
            flight: Some(flight),
            ..
        }) = claimed
        {
            flight.land(state());
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.finish(|| FlightState::Abandoned);
    }
}
