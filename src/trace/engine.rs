//! memocache's own [`Cache`] as a replay contender, and how trace ids become [`CacheKey`]s.
//!
//! Traces name objects by `u64` ids; the engine is keyed by [`CacheKey`]s (a prefix and a
//! 32-byte digest). [`trace_key`] is the one mapping used wherever a trace is replayed through
//! the engine — the `hit_ratio` benchmark and `memocache replay` — so that their numbers are
//! comparable. [`CachePolicy`] drives a cache as a [`Policy`]: look the key up, insert an empty
//! value on a miss, and let the cache's own admission and eviction decide the rest.

use bytes::Bytes;

use super::Policy;
use crate::cache::{Cache, CacheError};
use crate::key::{CacheKey, KeyError};

/// The prefix of the keys [`trace_key`] makes.
pub const TRACE_KEY_PREFIX: &str = "trace";

/// The key standing for the trace object `id`: prefix [`TRACE_KEY_PREFIX`], the id
/// (little-endian) in the first 8 digest bytes and a multiplicative mix of `id ^ lane` in each
/// of the other three 8-byte lanes.
///
/// The mapping is injective (the first lane alone is the id), so hit ratios are those of the
/// ids. The mixed lanes make the key look like a real digest to any part of the engine that
/// reads other bytes than the first (the shard and bucket hash reads all of them), so a trace
/// of small consecutive ids is not an unrealistically regular key set.
///
/// Fails only if the process has already interned the maximum number of key prefixes and
/// [`TRACE_KEY_PREFIX`] is not one of them (see [`KeyError::TooManyPrefixes`]).
pub fn trace_key(id: u64) -> Result<CacheKey, KeyError> {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&id.to_le_bytes());
    for (lane, bytes) in digest.chunks_exact_mut(8).enumerate().skip(1) {
        let mixed = (id ^ lane as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        bytes.copy_from_slice(&mixed.to_le_bytes());
    }
    CacheKey::from_digest(digest, TRACE_KEY_PREFIX)
}

/// A [`Cache`] replayed as a [`Policy`]: each request is a [`Cache::get`] of the request's
/// [`trace_key`] and, on a miss, an [`Cache::insert`] of an empty value.
///
/// A request the cache cannot take — the insert is refused, or the key cannot be made (see
/// [`trace_key`]) — counts as a miss that was not admitted, and is counted by
/// [`CachePolicy::rejected`] so a replay can say so rather than report a skewed ratio silently.
///
/// ```
/// use memocache::trace::{CachePolicy, Trace, replay};
///
/// let trace = Trace::from_keys([1, 2, 1, 2, 3, 1].to_vec());
/// let mut policy = CachePolicy::with_capacity(100)?;
/// let stats = replay(&mut policy, trace.keys());
/// assert_eq!(stats.hits, 3);
/// assert_eq!(policy.rejected(), 0);
/// # Ok::<(), memocache::CacheError>(())
/// ```
#[derive(Debug)]
pub struct CachePolicy {
    cache: Cache,
    rejected: u64,
}

impl CachePolicy {
    /// Drives an existing cache.
    pub fn new(cache: Cache) -> CachePolicy {
        CachePolicy { cache, rejected: 0 }
    }

    /// A cache bounded by entries only, as traces count requests, not bytes: at most
    /// `capacity` entries and a byte budget that never binds. Fails for a capacity of `0`.
    pub fn with_capacity(capacity: usize) -> Result<CachePolicy, CacheError> {
        let cache = Cache::builder()
            .max_bytes(u64::MAX)
            .max_entries(u64::try_from(capacity).unwrap_or(u64::MAX))
            .build()?;
        Ok(CachePolicy::new(cache))
    }

    /// The cache being driven.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Requests that missed and could not be inserted.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }
}

impl Policy for CachePolicy {
    fn access(&mut self, id: u64) -> bool {
        let Ok(key) = trace_key(id) else {
            self.rejected += 1;
            return false;
        };
        if self.cache.get(&key).is_some() {
            return true;
        }
        if self.cache.insert(key, Bytes::new()).is_err() {
            self.rejected += 1;
        }
        false
    }
}
