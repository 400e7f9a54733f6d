//! The [`CacheEntry`] entity: a cached value and what the cache knows about it.
//!
//! The cache does not store `CacheEntry` values internally (its per-entry record is packed
//! tighter); [`CacheEntry`] is the self-contained view that [`crate::Cache::entry`] hands out and
//! that callers can build and reason about on their own. Its domain methods follow the seed and
//! read time from a [`Clock`], so tests drive them with a [`crate::ManualClock`].
//!
//! # Differences from the seed
//!
//! * The TTL is optional (`None`: the entry never expires), as a cache's default TTL is
//!   (issue 3); the seed required one.
//! * The seed's `is_expired` added the `TTL` value object itself to a datetime, which raises a
//!   `TypeError`; [`CacheEntry::is_expired`] adds the TTL's duration, as it evidently meant.
//! * `size_bytes` is derived, not given: the bytes charged against a budget (below). The seed
//!   left its meaning open, and its `update_value` did not change it with the value.
//!
//! # Size accounting
//!
//! [`CacheEntry::charged_size`] is what an entry costs against a cache's byte budget: the value
//! bytes, plus the key, plus [`ENTRY_OVERHEAD_BYTES`] for the cache's bookkeeping. Charging the
//! overhead keeps the budget close to real memory even for many tiny values. The overhead is
//! what the cache really spends per entry beyond the key: the rest of its 96-byte record
//! (62 bytes: the `Bytes` handle, times, access count, queue links), 5–11 bytes of hash index
//! (depending on how full the table is), 8 bytes of timer-wheel filing for an entry with a
//! TTL, and about 5 bytes of eviction history (ghost fingerprint and frequency sketch). The
//! `memory` bench measures 117 bytes per entry with a TTL, key included.

use bytes::Bytes;

use crate::key::CacheKey;
use crate::time::{Clock, Timestamp, Ttl};

/// Fixed per-entry bookkeeping charged against a cache's byte budget, beyond value and key.
pub const ENTRY_OVERHEAD_BYTES: usize = 80;

/// A cached value with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    key: CacheKey,
    value: Bytes,
    created_at: Timestamp,
    accessed_at: Timestamp,
    ttl: Option<Ttl>,
    access_count: u64,
    size_bytes: usize,
}

impl CacheEntry {
    /// A new entry created now, never accessed yet. `ttl: None` means it never expires.
    pub fn new(
        key: CacheKey,
        value: impl Into<Bytes>,
        ttl: Option<Ttl>,
        clock: &dyn Clock,
    ) -> CacheEntry {
        let now = clock.now();
        CacheEntry::from_parts(key, value.into(), now, now, ttl, 0)
    }

    /// An entry with every field given; `size_bytes` is derived from the value.
    pub fn from_parts(
        key: CacheKey,
        value: Bytes,
        created_at: Timestamp,
        accessed_at: Timestamp,
        ttl: Option<Ttl>,
        access_count: u64,
    ) -> CacheEntry {
        let size_bytes = CacheEntry::charged_size(value.len());
        CacheEntry {
            key,
            value,
            created_at,
            accessed_at,
            ttl,
            access_count,
            size_bytes,
        }
    }

    /// What an entry with a value of `value_len` bytes costs against a byte budget.
    pub const fn charged_size(value_len: usize) -> usize {
        value_len
            .saturating_add(std::mem::size_of::<CacheKey>())
            .saturating_add(ENTRY_OVERHEAD_BYTES)
    }

    /// The key.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The value.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// When the current value was stored.
    ///
    /// A cache derives it from the exact deadline of an entry with a TTL, less the TTL as the
    /// cache keeps it (see [`CacheEntry::ttl`]): it may be early by less than that TTL's unit,
    /// never later than the insert.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When the entry was last read (its creation time if never read). A cache records it to
    /// within 1 ms, so that hits on hot entries do not all write it — within 1 s once the
    /// read is 12.4 days or more after the entry's creation time, and 1 minute past 34 years,
    /// the units in which it keeps ages that long.
    ///
    /// A cache also stamps it when an insert replaces a live value, where the seed's
    /// `update_value` (and [`CacheEntry::update_value`]) leave it at the last read; both keep
    /// the read count.
    pub fn accessed_at(&self) -> Timestamp {
        self.accessed_at
    }

    /// The time to live, if any.
    ///
    /// A cache reports the TTL an entry was stored with, rounded up to the unit its record
    /// keeps it in (1 µs below 17.9 minutes, 1 ms below 12.4 days, 1 s below 34 years, 1 minute
    /// beyond) — up, so that [`CacheEntry::created_at`], the deadline less this, is never
    /// later than the insert — but never back past the clock's epoch, and at least 1 ns; the
    /// deadline itself is exact (see [`CacheEntry::expires_at`]). A TTL whose deadline would
    /// pass the end of the cache's clock (`u64::MAX` ns after its epoch: [`Ttl::MAX`] does
    /// from any time) is cut to end one nanosecond before it, and reported as that shorter
    /// TTL — still a TTL, never `None`.
    pub fn ttl(&self) -> Option<Ttl> {
        self.ttl
    }

    /// How many times the entry was read. A cache counts exactly up to 65,536 reads; beyond,
    /// it keeps an unbiased sampled estimate (relative standard error under 2 %), so that a
    /// hot entry is not written on every hit.
    pub fn access_count(&self) -> u64 {
        self.access_count
    }

    /// The bytes charged against the budget: see [`CacheEntry::charged_size`].
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// When the entry expires, if it has a TTL.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.ttl
            .map(|ttl| self.created_at.saturating_add(ttl.as_duration()))
    }

    /// Whether the entry has expired: strictly after `created_at + ttl`, as in the seed.
    pub fn is_expired(&self, clock: &dyn Clock) -> bool {
        self.expires_at().is_some_and(|at| clock.now() > at)
    }

    /// Records a read: updates `accessed_at` and increments `access_count`.
    pub fn touch(&mut self, clock: &dyn Clock) {
        self.accessed_at = clock.now();
        self.access_count = self.access_count.saturating_add(1);
    }

    /// Replaces the value and TTL and restarts the TTL from now, as in the seed; reads
    /// (`access_count`, `accessed_at`) are kept. Unlike the seed, `size_bytes` follows the new
    /// value.
    pub fn update_value(&mut self, value: impl Into<Bytes>, ttl: Option<Ttl>, clock: &dyn Clock) {
        self.value = value.into();
        self.size_bytes = CacheEntry::charged_size(self.value.len());
        self.ttl = ttl;
        self.created_at = clock.now();
    }

    /// The value, consuming the entry.
    pub fn into_value(self) -> Bytes {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;
    use std::time::Duration;

    fn key() -> CacheKey {
        CacheKey::from_content(b"audio", "transcript").expect("valid prefix")
    }

    #[test]
    fn expires_strictly_after_created_plus_ttl() {
        let clock = ManualClock::new();
        let ttl = Ttl::seconds(10).expect("positive");
        let entry = CacheEntry::new(key(), &b"text"[..], Some(ttl), &clock);
        clock.advance(Duration::from_secs(10));
        assert!(
            !entry.is_expired(&clock),
            "at exactly created + ttl it is still live"
        );
        clock.advance(Duration::from_nanos(1));
        assert!(entry.is_expired(&clock));
    }

    /// A clock behind the entry's creation (another clock's timestamps) does not expire it,
    /// and a deadline past the end of time saturates there instead of wrapping to the past.
    #[test]
    fn deadlines_before_creation_and_past_the_end_of_time() {
        let clock = ManualClock::new();
        let ttl = Ttl::seconds(1).expect("positive");
        let later = Timestamp::from_nanos(5_000_000_000);
        let entry = CacheEntry::from_parts(key(), Bytes::new(), later, later, Some(ttl), 0);
        assert!(!entry.is_expired(&clock), "now is before creation");
        assert_eq!(
            entry.expires_at(),
            Some(Timestamp::from_nanos(6_000_000_000))
        );

        let entry = CacheEntry::from_parts(key(), Bytes::new(), later, later, Some(Ttl::MAX), 0);
        assert_eq!(entry.expires_at(), Some(Timestamp::from_nanos(u64::MAX)));
        clock.advance(Duration::MAX);
        assert!(
            !entry.is_expired(&clock),
            "never strictly after the end of time"
        );
    }

    #[test]
    fn no_ttl_never_expires() {
        let clock = ManualClock::new();
        let entry = CacheEntry::new(key(), &b"text"[..], None, &clock);
        clock.advance(Duration::MAX);
        assert!(!entry.is_expired(&clock));
    }

    #[test]
    fn touch_counts_and_stamps() {
        let clock = ManualClock::new();
        let mut entry = CacheEntry::new(key(), &b"text"[..], None, &clock);
        clock.advance(Duration::from_secs(3));
        entry.touch(&clock);
        entry.touch(&clock);
        assert_eq!(entry.access_count(), 2);
        assert_eq!(entry.accessed_at(), clock.now());
        assert_eq!(entry.created_at(), Timestamp::ZERO);
    }

    #[test]
    fn created_at_is_the_time_of_creation_then_of_the_last_update() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        let mut entry = CacheEntry::new(key(), &b"old"[..], None, &clock);
        assert_eq!(entry.created_at(), Timestamp::from_nanos(5_000_000_000));
        assert_eq!(entry.accessed_at(), entry.created_at(), "never read yet");
        clock.advance(Duration::from_secs(2));
        entry.update_value(&b"new"[..], None, &clock);
        assert_eq!(entry.created_at(), Timestamp::from_nanos(7_000_000_000));
        assert_eq!(entry.into_value().as_ref(), b"new");
    }

    #[test]
    fn update_value_restarts_ttl_and_resizes() {
        let clock = ManualClock::new();
        let ttl = Ttl::seconds(10).expect("positive");
        let mut entry = CacheEntry::new(key(), &b"old"[..], Some(ttl), &clock);
        clock.advance(Duration::from_secs(8));
        entry.update_value(&b"a longer value"[..], Some(ttl), &clock);
        clock.advance(Duration::from_secs(8));
        assert!(!entry.is_expired(&clock), "TTL restarted at the update");
        assert_eq!(entry.value().as_ref(), b"a longer value");
        assert_eq!(entry.size_bytes(), CacheEntry::charged_size(14));
        assert_eq!(CacheEntry::charged_size(14), 14 + 34 + ENTRY_OVERHEAD_BYTES);
    }
}
