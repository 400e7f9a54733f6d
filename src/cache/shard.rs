//! One shard: a slab of entry records, a hash index over it, the eviction policy's queues and
//! the expiry wheel — everything one lock protects.
//!
//! Records live in a slab (`Vec<Option<Record>>` plus a free list) and the hash index holds
//! only `u32` slot numbers, so the index stays small (5 bytes a bucket) and the policy's lists
//! and the wheel can name an entry with 4 bytes.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::Bytes;
use hashbrown::HashTable;

use super::expiry::{TICK_SHIFT, TimerWheel, tick_of};
use super::policy::{Links, Queue, S3Fifo, Slab};
use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::time::{Timestamp, Ttl};

/// `expires_at` of an entry without a TTL.
pub(super) const NEVER: u64 = u64::MAX;

/// `access_count` stops counting here instead of wrapping.
const COUNT_CEILING: u32 = u32::MAX - (1 << 20);

/// `access_count` is exact below this; see [`Record::touch`].
const EXACT_COUNT: u32 = 1 << 16;

/// Durations in 32 bits, for the two metadata times a record keeps besides one exact
/// timestamp: 30 bits count units of the finest of 1 µs, 1 ms, 1 s or 1 min that holds the
/// duration (up to 17.9 minutes, 12.4 days, 34 years, and beyond [`Ttl::MAX`]), and 2 bits name
/// the unit. An access time's offset is rounded down to its unit, a TTL up (so that the
/// creation time derived from it is early, not late).
///
/// Three `u64` timestamps would make every record 8 bytes larger; with this a record is 96
/// bytes. Deadlines are not rounded (see [`Record`]): only the reported creation and access
/// times are, by less than one unit, and never into the future.
mod span {
    /// Nanoseconds per unit, by 2-bit tag.
    const UNITS: [u64; 4] = [1_000, 1_000_000, 1_000_000_000, 60_000_000_000];
    const COUNT_BITS: u32 = 30;
    const COUNT_MASK: u32 = (1 << COUNT_BITS) - 1;
    /// "No duration" (no TTL). Never made by [`encode`]: `u64::MAX` nanoseconds are fewer than
    /// `COUNT_MASK` minutes.
    pub(super) const NONE: u32 = u32::MAX;

    /// `nanos`, rounded down to the finest unit that holds it.
    ///
    /// Runs on every hit that restamps an entry's access time, so each unit's division is by a
    /// constant (a multiplication), not by a value loaded from `UNITS`.
    #[inline]
    pub(super) fn encode(nanos: u64) -> u32 {
        // The largest count kept: one below the mask, so that `NONE` is never produced.
        const MAX: u64 = COUNT_MASK as u64 - 1;
        let (tag, count) = if nanos / 1_000 <= MAX {
            (0, nanos / 1_000)
        } else if nanos / 1_000_000 <= MAX {
            (1, nanos / 1_000_000)
        } else if nanos / 1_000_000_000 <= MAX {
            (2, nanos / 1_000_000_000)
        } else {
            (3, (nanos / 60_000_000_000).min(MAX))
        };
        // `count <= MAX < 2^30`: the cast is exact.
        (tag << COUNT_BITS) | count as u32
    }

    /// `nanos`, rounded up to the unit [`encode`] picks for it: for a TTL, so that the creation
    /// time derived from the exact deadline (the deadline minus this) is never later than the
    /// real one (see `Record::created_at`). Within a minute of `u64::MAX` nanoseconds the
    /// result is more than `u64::MAX` nanoseconds: decode it with [`decode_saturating`].
    pub(super) fn encode_up(nanos: u64) -> u32 {
        let down = encode(nanos);
        // One more unit. The count stays within its 30 bits (`encode` keeps it at most
        // `COUNT_MASK - 1`), so it cannot carry into the tag; and it is never `NONE`: a count
        // in minutes is at most `u64::MAX / 60e9 + 1`, far below `COUNT_MASK`.
        if decode(down) < nanos { down + 1 } else { down }
    }

    /// [`decode`] of a span [`encode_up`] may have rounded past `u64::MAX` nanoseconds: that
    /// much, at most.
    #[inline]
    pub(super) fn decode_saturating(span: u32) -> u64 {
        u64::from(span & COUNT_MASK).saturating_mul(UNITS[(span >> COUNT_BITS) as usize])
    }

    #[inline]
    pub(super) fn decode(span: u32) -> u64 {
        u64::from(span & COUNT_MASK) * UNITS[(span >> COUNT_BITS) as usize]
    }

    /// How far behind a read's age an access time kept in each unit (by tag) may fall before
    /// the read rewrites it: 1 ms, or the unit where that is coarser. Not 1 ms throughout: an
    /// age kept in seconds (an entry created 12.4 days or more before the read) is always a
    /// fraction of a second behind, so every hit of such an entry rewrote it — with the value
    /// it already held, until the second turned — and wrote the hot entry's cache line on
    /// every hit, which the rule exists to avoid.
    const STALE_AFTER: [u64; 4] = [1_000_000, 1_000_000, 1_000_000_000, 60_000_000_000];

    /// The access time to record for a read `age` nanoseconds after the creation time, if the
    /// one recorded, `accessed`, is stale (see [`STALE_AFTER`]).
    #[inline]
    pub(super) fn restamp(age: u64, accessed: u32) -> Option<u32> {
        let stale_after = STALE_AFTER[(accessed >> COUNT_BITS) as usize];
        (age.saturating_sub(decode(accessed)) >= stale_after).then(|| encode(age))
    }
}

/// Hashes keys for the shard index and shard choice.
///
/// Keys are SHA-256 digests, so their bits are already uniform — unless an attacker who
/// controls content grinds digests that share their low bits, or one who can choose digests
/// outright ([`CacheKey::from_digest`], a parsed key) picks them to differ only where the hash
/// does not look, to pile entries into one bucket. So every bit that key equality compares is
/// mixed with per-process random words: the digest's four 8-byte words go through two folded
/// 64×64→128-bit multiplies, `(w0 ^ k0) × (w1 ^ k1)` and `(w2 ^ k2) × (w3 ^ k3)` (as `foldhash`
/// hashes 32 bytes), the results and the prefix's number are XORed, and a third folded multiply
/// by a fifth random word stirs that. The first two are independent, so they overlap in the
/// CPU. The third is needed: without it, keys that differ only in the high half of one word
/// reach the low bits (the bucket) only through the product's high word, a multiplicative hash
/// of those 32 bits by one random word, and for about one seed in five that left 800 of 4,096
/// buckets empty in the chosen-keys test (it failed 20 runs of 100). Reading all 32 bytes
/// instead of 16, stirred, costs about 6 instructions a hit (callgrind, 1,000,000 Zipf gets
/// over 50,000 keys, setup and quanta's calibration subtracted: 441.7 → 448.1 an iteration of
/// the driver, whose Zipf draw is in both).
///
/// Nothing but a key word is XORed into a digest word before its multiply: a prefix number
/// folded in there could be cancelled by a chosen digest (`w0 ^ p == w0' ^ p'`), making two
/// different keys collide under every seed. The key words are independent random values, so
/// swapping `w2` and `w3` (the multiply commutes) does not collide either.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyHasher {
    keys: [u64; 4],
    stir: u64,
}

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl KeyHasher {
    pub(super) fn random() -> KeyHasher {
        let state = RandomState::new();
        KeyHasher {
            keys: [
                0x243F_6A88_85A3_08D3u64,
                0x1319_8A2E_0370_7344,
                0xA409_3822_299F_31D0,
                0x082E_FA98_EC4E_6C89,
            ]
            .map(|salt| state.hash_one(salt) | 1),
            stir: state.hash_one(0x4528_21E6_38D0_1377u64) | 1,
        }
    }

    #[inline]
    pub(super) fn hash(&self, key: &CacheKey) -> u64 {
        let digest = key.digest();
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&digest[8 * i..8 * i + 8]);
            u64::from_le_bytes(bytes) ^ self.keys[i]
        };
        // The prefix is interned, so its number identifies it. It joins the seeded result, where
        // no chosen digest can cancel it: two keys collide only if their digests' results
        // differ by exactly the XOR of their prefix numbers, which depends on the seed.
        let prefix = u64::from(key.prefix_number());
        let mixed = folded_multiply(word(0), word(1)) ^ folded_multiply(word(2), word(3));
        folded_multiply(mixed ^ prefix, self.stir)
    }
}

/// True with probability `1 / n` (`n` a power of two), from a per-thread xorshift generator.
fn sample_one_in(n: u32) -> bool {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            // Distinct, non-zero seeds per thread.
            let seed = std::hash::RandomState::new().hash_one(std::thread::current().id());
            seed | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x as u32) & (n - 1) == 0
    })
}

/// What a shard stores per entry: 96 bytes (checked by a test), the bulk of the memory an
/// entry costs beyond its value.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) key: CacheKey,
    pub(super) value: Bytes,
    /// The exact deadline if the entry has a TTL, else the exact creation time: expiry checks,
    /// the only hot use of time, read this alone.
    base: u64,
    /// The TTL as a [`span`], rounded up (so the creation time is `base` minus it, early by
    /// less than one unit, never late); [`span::NONE`] without a TTL.
    ttl: u32,
    /// How long after the creation time the last recorded access was, as a [`span`].
    accessed: AtomicU32,
    access_count: AtomicU32,
    pub(super) links: Links,
}

impl Record {
    /// The deadline, or [`NEVER`].
    #[inline]
    pub(super) fn expires_at(&self) -> u64 {
        if self.ttl == span::NONE {
            NEVER
        } else {
            self.base
        }
    }

    #[inline]
    fn created_at(&self) -> u64 {
        if self.ttl == span::NONE {
            self.base
        } else {
            // At least 1 ns before the deadline: a deadline cut to the end of time at or
            // after it (see `deadline`) leaves a TTL of 0, and a creation time equal to the
            // deadline would report a zero TTL, which `Ttl` cannot hold — `Cache::entry`
            // would then say the entry never expires. Saturating: a TTL rounded up (see
            // `set_lifetime`) from within a minute of the end of time is more nanoseconds
            // than a `u64` holds; it puts the creation time at the epoch, where it can only
            // be early.
            self.base
                .saturating_sub(span::decode_saturating(self.ttl).max(1))
        }
    }

    #[inline]
    pub(super) fn is_expired(&self, now: u64) -> bool {
        now > self.expires_at()
    }

    #[inline]
    fn accessed_at(&self) -> u64 {
        self.created_at()
            .saturating_add(span::decode(self.accessed.load(Ordering::Relaxed)))
    }

    /// Sets the creation time and deadline of a new or rewritten value.
    fn set_lifetime(&mut self, now: u64, expires_at: u64) {
        if expires_at == NEVER {
            self.base = now;
            self.ttl = span::NONE;
        } else {
            self.base = expires_at;
            // Rounded up, not down: the creation time is derived as the deadline minus this,
            // and a TTL rounded down put it in the future, by up to a minute for `Ttl::MAX`
            // (a second for a TTL of 14.1 days and a fraction), so that `Cache::entry`
            // reported a value created, and read, after the clock's present.
            self.ttl = span::encode_up(expires_at.saturating_sub(now));
        }
    }

    /// Records a read; only atomics, so it runs under the shard's read lock.
    ///
    /// A write to a hot entry moves its cache line away from every other core reading it, so
    /// a hit avoids writing when it can: `accessed_at` is rewritten only once it is 1 ms old
    /// (1 s or 1 minute for an entry old enough that its age is kept in those units: see
    /// `span::restamp`), and past 65,536 hits `access_count` counts in sampled steps —
    /// adding `2^k` with probability `2^-k`, where `2^k` is about 1/4096 of the count — which
    /// keeps it an unbiased estimate (relative standard error under 2 %) while a hot entry is
    /// written on only a small fraction of its hits.
    #[inline]
    pub(super) fn touch(&self, now: u64) {
        // Ages since creation: the creation time is derived once, not once per comparison.
        let age = now.saturating_sub(self.created_at());
        if let Some(accessed) = span::restamp(age, self.accessed.load(Ordering::Relaxed)) {
            self.accessed.store(accessed, Ordering::Relaxed);
        }
        let count = self.access_count.load(Ordering::Relaxed);
        if count < EXACT_COUNT {
            self.access_count.fetch_add(1, Ordering::Relaxed);
        } else if count < COUNT_CEILING {
            let step = 1u32 << ((31 - count.leading_zeros()) - 12);
            if sample_one_in(step) {
                self.access_count.fetch_add(step, Ordering::Relaxed);
            }
        }
        self.links.hit();
    }

    pub(super) fn charge(&self) -> u64 {
        CacheEntry::charged_size(self.value.len()) as u64
    }

    pub(super) fn access_count(&self) -> u64 {
        u64::from(self.access_count.load(Ordering::Relaxed))
    }

    pub(super) fn freq(&self) -> u8 {
        self.links.freq()
    }

    pub(super) fn in_main(&self) -> bool {
        self.links.queue == Queue::Main
    }

    pub(super) fn to_entry(&self) -> CacheEntry {
        let created_at = self.created_at();
        let ttl = (self.ttl != span::NONE)
            .then(|| Ttl::new(std::time::Duration::from_nanos(self.base - created_at)).ok())
            .flatten();
        CacheEntry::from_parts(
            self.key,
            self.value.clone(),
            Timestamp::from_nanos(created_at),
            Timestamp::from_nanos(self.accessed_at()),
            ttl,
            self.access_count(),
        )
    }
}

/// The value an insert replaced in place.
#[derive(Debug)]
pub(super) struct Replaced {
    pub(super) value: Bytes,
    pub(super) charge: u64,
    /// Whether it had expired by the insert's `now` (and was not purged yet).
    pub(super) expired: bool,
}

/// What is known about an entry that is being inserted.
#[derive(Debug)]
pub(super) struct NewEntry {
    pub(super) key: CacheKey,
    pub(super) value: Bytes,
    pub(super) now: u64,
    pub(super) expires_at: u64,
    /// Restored access history (snapshots); zero for fresh inserts.
    pub(super) access_count: u64,
    pub(super) accessed_at: u64,
    pub(super) freq: u8,
    pub(super) main: bool,
}

/// The slab half of a shard, split from the policy so both can be borrowed at once.
#[derive(Debug)]
struct Records {
    slots: Vec<Option<Record>>,
    free: Vec<u32>,
    hasher: KeyHasher,
}

impl Records {
    // Inline across crates: a hit, inlined into the caller's crate, reads its record with this.
    #[inline]
    fn get(&self, slot: u32) -> Option<&Record> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn record(&self, slot: u32) -> &Record {
        match self.get(slot) {
            Some(record) => record,
            None => unreachable!("the policy named an empty slot {slot}"),
        }
    }

    fn record_mut(&mut self, slot: u32) -> &mut Record {
        match self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            Some(record) => record,
            None => unreachable!("the policy named an empty slot {slot}"),
        }
    }
}

impl Slab for Records {
    fn links(&self, slot: u32) -> &Links {
        &self.record(slot).links
    }
    fn links_mut(&mut self, slot: u32) -> &mut Links {
        &mut self.record_mut(slot).links
    }
    fn charge(&self, slot: u32) -> u64 {
        self.record(slot).charge()
    }
    fn hash(&self, slot: u32) -> u64 {
        self.hasher.hash(&self.record(slot).key)
    }
    fn accesses(&self, slot: u32) -> u64 {
        self.record(slot).access_count()
    }
    fn resident(&self, slot: u32) -> Option<(u64, u64)> {
        self.get(slot)
            .map(|record| (self.hasher.hash(&record.key), record.access_count()))
    }
}

/// One shard of the cache.
#[derive(Debug)]
pub(super) struct Shard {
    records: Records,
    index: HashTable<u32>,
    policy: S3Fifo,
    wheel: TimerWheel,
    /// Live entries with a deadline (to know when the wheel is mostly stale filings).
    timed: usize,
    /// A lower bound on every deadline filed in the wheel ([`NEVER`] if none is), shared with
    /// the cache, which reads it without the lock: a purge skips the shard, and its write
    /// lock, while its clock is not past this (see [`Shard::earliest_deadline`]).
    earliest: Arc<AtomicU64>,
}

impl Shard {
    /// A shard holding about `share_bytes` / `share_entries` of the cache's budget.
    pub(super) fn new(hasher: KeyHasher, share_bytes: u64, share_entries: u64) -> Shard {
        Shard::empty(
            hasher,
            S3Fifo::for_shard(share_bytes, share_entries),
            Arc::new(AtomicU64::new(NEVER)),
        )
    }

    /// A shard with nothing stored and nothing allocated for entries.
    fn empty(hasher: KeyHasher, mut policy: S3Fifo, earliest: Arc<AtomicU64>) -> Shard {
        let records = Records {
            slots: Vec::new(),
            free: Vec::new(),
            hasher,
        };
        policy.fit(&records, 0);
        Shard {
            records,
            index: HashTable::new(),
            policy,
            wheel: TimerWheel::new(),
            timed: 0,
            earliest,
        }
    }

    /// A lower bound on the deadline of every entry in the shard, kept up to date under the
    /// write lock, for a purge to read without it: while its clock is not past the bound,
    /// nothing in the shard has expired, and the purge leaves the shard alone instead of
    /// write-locking it, which stalled its readers on every sweep.
    ///
    /// Relaxed is enough. Only holders of the write lock change it: an insert that files an
    /// earlier deadline lowers it before it unlocks, and a purge raises it only after removing
    /// what was due. A purge that an insert happens before (the same thread, or one the
    /// inserter signalled) reads its value or a later one, as coherence requires of every
    /// atomic; one racing the insert may read the older bound, as it may run before the
    /// insert.
    pub(super) fn earliest_deadline(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.earliest)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of the entry under `key`.
    #[inline]
    pub(super) fn slot_of(&self, hash: u64, key: &CacheKey) -> Option<u32> {
        let slots = &self.records.slots;
        self.index
            .find(hash, |&slot| {
                slots[slot as usize]
                    .as_ref()
                    .is_some_and(|record| record.key == *key)
            })
            .copied()
    }

    #[inline]
    pub(super) fn find(&self, hash: u64, key: &CacheKey) -> Option<&Record> {
        let slots = &self.records.slots;
        self.index
            .find(hash, |&slot| {
                slots[slot as usize]
                    .as_ref()
                    .is_some_and(|record| record.key == *key)
            })
            // `get`, not `record`: the match has just found the slot holding the key, and
            // `record`'s panic for an empty slot kept it out of line, a call on every hit.
            .and_then(|&slot| self.records.get(slot))
    }

    /// The charge of the entry in `slot` (from [`Shard::slot_of`]).
    pub(super) fn charge_of(&self, slot: u32) -> u64 {
        self.records.record(slot).charge()
    }

    /// Inserts or replaces. Returns what was replaced. `found` is what [`Shard::slot_of`]
    /// returned for the key under the same hold of the shard's lock (evictions of other keys
    /// since leave it valid): the caller had to look the key up anyway, and looking it up
    /// again here cost about 20 instructions (callgrind).
    ///
    /// A live value is rewritten in place: the key keeps its record, its reads and its place
    /// with the policy. An expired one is removed and the new value inserted as a new key:
    /// to every reader the key was absent (the cache counts this as an insert), so the new
    /// value must not inherit the dead one's access count, hits or place — nor report
    /// anything other than what it would had a purge removed the dead value first.
    pub(super) fn insert(
        &mut self,
        hash: u64,
        found: Option<u32>,
        new: NewEntry,
    ) -> Option<Replaced> {
        debug_assert_eq!(found, self.slot_of(hash, &new.key));
        if let Some(slot) = found {
            let record = self.records.record_mut(slot);
            if record.is_expired(new.now) {
                return Some(self.replace_expired(hash, slot, new));
            }
            let old_charge = record.charge();
            let old_value = std::mem::replace(&mut record.value, new.value);
            let had_deadline = record.ttl != span::NONE;
            record.set_lifetime(new.now, new.expires_at);
            // A rewrite is a use of the key: it keeps its place and gains a hit.
            *record.accessed.get_mut() = 0;
            record.links.hit();
            let expires_at = record.expires_at();
            let (queue, new_charge) = (record.links.queue, record.charge());
            self.policy.recharge(queue, old_charge, new_charge);
            self.timed = self.timed + usize::from(expires_at != NEVER) - usize::from(had_deadline);
            self.file_deadline(slot, expires_at);
            return Some(Replaced {
                value: old_value,
                charge: old_charge,
                expired: false,
            });
        }

        let queue = if new.main {
            self.policy.restore(&self.records, hash)
        } else {
            self.policy.admission_queue(
                &self.records,
                hash,
                CacheEntry::charged_size(new.value.len()) as u64,
            )
        };
        let mut links = Links::new(queue);
        *links.freq.get_mut() = new.freq.min(super::policy::MAX_FREQ);
        let mut record = Record {
            key: new.key,
            value: new.value,
            base: new.now,
            ttl: span::NONE,
            accessed: AtomicU32::new(span::encode(new.accessed_at.saturating_sub(new.now))),
            access_count: AtomicU32::new(u32::try_from(new.access_count).unwrap_or(COUNT_CEILING)),
            links,
        };
        record.set_lifetime(new.now, new.expires_at);
        let expires_at = record.expires_at();
        let slot = match self.records.free.pop() {
            Some(slot) => {
                self.records.slots[slot as usize] = Some(record);
                slot
            }
            None => {
                let slot = u32::try_from(self.records.slots.len())
                    .unwrap_or_else(|_| unreachable!("more than 4 billion entries in one shard"));
                self.records.slots.push(Some(record));
                slot
            }
        };
        let hasher = self.records.hasher;
        let slots = &self.records.slots;
        self.index.insert_unique(hash, slot, |&s| {
            slots[s as usize]
                .as_ref()
                .map_or(0, |record| hasher.hash(&record.key))
        });
        self.policy.push(&mut self.records, slot);
        self.policy.fit(&self.records, self.index.len());
        if expires_at != NEVER {
            self.timed += 1;
            self.file_deadline(slot, expires_at);
        }
        None
    }

    /// [`Shard::insert`] over the expired record in `slot`: removes it, then inserts `new` as
    /// a new key.
    // Out of line: the less common case (a read of the key, a purge, the sweeper and a full
    // cache's expiry pass all remove expired values first), and kept apart it leaves the
    // common paths of `insert` as they were. Sharing the new-key path with it in one
    // function, or moving `new` into helpers for both, cost an evicting insert 12 to 25
    // instructions (callgrind).
    #[cold]
    #[inline(never)]
    fn replace_expired(&mut self, hash: u64, slot: u32, new: NewEntry) -> Replaced {
        let old = self.remove_slot(hash, slot);
        let none = self.insert(hash, None, new);
        debug_assert!(none.is_none(), "the key was just removed");
        Replaced {
            charge: old.charge(),
            value: old.value,
            expired: true,
        }
    }

    fn file_deadline(&mut self, slot: u32, expires_at: u64) {
        if expires_at == NEVER {
            return;
        }
        // Only writers under the lock change the bound: a load and, rarely, a store, not a
        // locked read-modify-write. Entries without a deadline never come here.
        if expires_at < self.earliest.load(Ordering::Relaxed) {
            self.earliest.store(expires_at, Ordering::Relaxed);
        }
        self.wheel.schedule(slot, tick_of(expires_at));
        if self.wheel.filings() > 2 * self.timed + 1024 {
            self.rebuild_wheel();
        }
    }

    /// Re-files only live deadlines, dropping stale filings.
    fn rebuild_wheel(&mut self) {
        self.wheel.clear();
        for (slot, record) in self.records.slots.iter().enumerate() {
            if let Some(expires_at) = record
                .as_ref()
                .map(Record::expires_at)
                .filter(|&at| at != NEVER)
            {
                // Slots are u32 by construction.
                self.wheel.schedule(slot as u32, tick_of(expires_at));
            }
        }
    }

    pub(super) fn remove(&mut self, hash: u64, key: &CacheKey) -> Option<Record> {
        self.remove_if(hash, key, |_| true)
    }

    /// Removes the entry under `key` if `accept` says so, with one probe of the index for the
    /// key (a compare-and-remove under the lock the caller holds).
    pub(super) fn remove_if(
        &mut self,
        hash: u64,
        key: &CacheKey,
        accept: impl FnOnce(&Record) -> bool,
    ) -> Option<Record> {
        let slot = self.slot_of(hash, key)?;
        if !accept(self.records.record(slot)) {
            return None;
        }
        Some(self.remove_slot(hash, slot))
    }

    fn remove_slot(&mut self, hash: u64, slot: u32) -> Record {
        if let Ok(found) = self.index.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        self.policy.unlink(&mut self.records, slot);
        self.release_slot(slot)
    }

    fn release_slot(&mut self, slot: u32) -> Record {
        let record = match self.records.slots[slot as usize].take() {
            Some(record) => record,
            None => unreachable!("released an empty slot {slot}"),
        };
        self.records.free.push(slot);
        if record.ttl != span::NONE {
            self.timed -= 1;
        }
        record
    }

    /// Takes the entry under `key` off the policy's queues, so that [`Shard::evict`] cannot
    /// choose it, and returns its slot. It must be put back with [`Shard::unspare`] before the
    /// shard's lock is released.
    pub(super) fn spare(&mut self, hash: u64, key: &CacheKey) -> Option<u32> {
        let slot = self.slot_of(hash, key)?;
        self.policy.unlink(&mut self.records, slot);
        Some(slot)
    }

    /// Puts an entry taken off by [`Shard::spare`] back, at the head of its queue: it is being
    /// rewritten, which counts as a use.
    pub(super) fn unspare(&mut self, slot: u32) {
        self.policy.push(&mut self.records, slot);
    }

    /// Evicts the policy's victim for the new key of hash `new` that [`Shard::insert`] stores
    /// next under the same hold of the lock: a duel shard's miss then skips the reading of
    /// access counts this eviction has just done. Any other eviction is
    /// [`Shard::evict_alone`].
    ///
    /// `None` if the shard is empty, or if a duel shard at its entry bound turns the new key
    /// away instead ([`Shard::take_refusal`] says which): then it must not be stored. The
    /// bound is the shard's share of entries while `cache_full_by_entries` says the cache
    /// holds its `max_entries` (see [`S3Fifo::duel_evict`]).
    // Out of line, with the policy's `evict` inside it: see `S3Fifo::evict`. The test is a
    // `&dyn`: a generic one, instantiated twice, cost an evicting insert into a cache of 8
    // shards of 6,250 about 40 instructions more (callgrind), a `&dyn` none.
    #[inline(never)]
    pub(super) fn evict(
        &mut self,
        new: u64,
        cache_full_by_entries: &dyn Fn() -> bool,
    ) -> Option<Record> {
        let (slot, hash) = if self.policy.duels() {
            self.policy
                .duel_evict(&mut self.records, Some(new), cache_full_by_entries)?
        } else {
            self.policy.evict(&mut self.records)?
        };
        Some(self.unindex_victim(slot, hash))
    }

    /// Evicts the policy's victim when no new key of this shard follows under the same hold of
    /// the lock (another shard's insert, an update that grows).
    pub(super) fn evict_alone(&mut self) -> Option<Record> {
        let victim = if self.policy.duels() {
            self.policy
                .duel_evict(&mut self.records, None, &|| false)
                .map(|(slot, hash)| self.unindex_victim(slot, hash))
        } else {
            // No duel: the new key's hash is not used.
            self.evict(0, &|| false)
        };
        self.policy.forget_sync();
        victim
    }

    /// Whether the last [`Shard::evict`] turned its new key away (see *Refusing the new key*
    /// in the policy's docs), and clears that.
    pub(super) fn take_refusal(&mut self) -> bool {
        self.policy.take_refusal()
    }

    /// Takes the victim the policy has just unlinked out of the index and the slab.
    fn unindex_victim(&mut self, slot: u32, hash: u64) -> Record {
        if let Ok(found) = self.index.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        self.release_slot(slot)
    }

    /// Removes every entry whose deadline has passed at `now`.
    pub(super) fn expire(&mut self, now: u64, expired: &mut Vec<Record>) {
        let mut due = Vec::new();
        // The earliest deadline of the filings kept in the current bucket (see below).
        let mut kept = NEVER;
        let records = &self.records;
        self.wheel.advance(tick_of(now), |slot, tick| {
            match records.get(slot) {
                Some(record) if tick_of(record.expires_at()) == tick => {
                    if record.is_expired(now) {
                        due.push(slot);
                        false
                    } else {
                        // Due later within this tick: keep the filing.
                        kept = kept.min(record.expires_at());
                        true
                    }
                }
                // Removed, or replaced with another deadline (filed separately): stale.
                _ => false,
            }
        });
        for slot in due {
            // A slot can be filed twice (re-inserted with the same deadline tick).
            if self.records.get(slot).is_some_and(|r| r.is_expired(now)) {
                let hash = self.records.hash(slot);
                expired.push(self.remove_slot(hash, slot));
            }
        }
        // The current bucket holds just the filings kept above, whose exact deadlines bound
        // theirs; what is left elsewhere is filed after the wheel's tick, and its buckets
        // bound it (see `TimerWheel::earliest`). Not the current tick's start for the kept
        // ones: every later clock reading is past it, so each purge of the tick took the
        // lock again — and from 2^62 ns on, where every deadline is in the wheel's last
        // tick, each purge for good, walking every filing. Stale filings elsewhere keep the
        // bound low until their bucket comes up, which costs a purge a lock, never a missed
        // deadline.
        let filed = self
            .wheel
            .earliest()
            .map_or(NEVER, |tick| u64::from(tick) << TICK_SHIFT);
        self.earliest.store(kept.min(filed), Ordering::Relaxed);
    }

    /// The charged bytes and number of the entries [`Shard::expire`] would remove at `now`,
    /// removing none. Reads the slab in order, not the policy's queues: a load's choice
    /// that counts on their room asks it of every shard that may hold one.
    pub(super) fn expired_room(&self, now: u64) -> (u64, u64) {
        self.records
            .slots
            .iter()
            .flatten()
            .filter(|record| record.is_expired(now))
            .fold((0, 0), |(bytes, entries), record| {
                (bytes + record.charge(), entries + 1)
            })
    }

    /// Removes everything, and returns the slab that held it (empty slots included) for the
    /// caller to drop outside the lock.
    ///
    /// The shard is then as it was built, its bookkeeping memory given back: the slab, the
    /// index, the wheel's buckets and the policy's ghost, sketch and shadows, grown as the
    /// shard filled. A user clears a cache to free what it holds, and a cache that once held
    /// a million entries kept most of that after `clear`: of 100,000 entries with a TTL in 4
    /// shards (147 bytes an entry, the slab's 96 included), 13.7 MB stayed; now each shard
    /// holds what a new one does (1,088 bytes). They grow again, amortized, if the shard fills
    /// again, as a new shard's do. (quick_cache's `clear` keeps its slab's and table's
    /// capacity; moka frees each entry's node and shrinks its table as the removals are
    /// processed.)
    pub(super) fn clear(&mut self) -> Vec<Option<Record>> {
        self.earliest.store(NEVER, Ordering::Relaxed);
        let cleared = Shard::empty(
            self.records.hasher,
            self.policy.cleared(),
            Arc::clone(&self.earliest),
        );
        std::mem::replace(self, cleared).records.slots
    }

    /// The records the shard holds, for the cache's drop to drop one by one. Taken by value,
    /// not as [`Shard::clear`] takes them: a dropped cache needs no empty shards, and building
    /// them, once the first shards' values were freed, cost malloc about 11 instructions an
    /// entry (callgrind, a cache of 1,000,000 entries in 8 shards).
    pub(super) fn into_records(self) -> impl Iterator<Item = Record> {
        self.records.slots.into_iter().flatten()
    }

    /// Whether the duel's LFU shadow would turn a new `key` away if the shard evicted for it now
    /// (see `S3Fifo::lfu_shadow_turns_away`); for tests.
    #[cfg(test)]
    pub(super) fn lfu_shadow_turns_away(&self, key: &CacheKey) -> bool {
        self.policy
            .lfu_shadow_turns_away(self.records.hasher.hash(key))
    }

    /// Whether a duel follows its LFU shadow; for tests.
    #[cfg(test)]
    pub(super) fn follows_lfu(&self) -> bool {
        self.policy.follows_lfu()
    }

    /// Whether a duel's shadows have heard of every hit; for tests.
    #[cfg(test)]
    pub(super) fn duel_in_sync(&self) -> bool {
        self.policy.duel_in_sync(&self.records)
    }

    /// Bytes held for bookkeeping (not values); for tests.
    #[cfg(test)]
    pub(super) fn footprint(&self) -> usize {
        self.records.slots.capacity() * std::mem::size_of::<Option<Record>>()
            + self.records.free.capacity() * std::mem::size_of::<u32>()
            + self.index.capacity() * std::mem::size_of::<u32>()
            + self.wheel.footprint()
            + self.policy.footprint()
    }

    /// Live records in eviction order: least valuable (first to go) first.
    pub(super) fn records_by_rank(&self) -> impl Iterator<Item = &Record> {
        self.policy
            .iter_queue(&self.records, Queue::Small)
            .chain(self.policy.iter_queue(&self.records, Queue::Main))
            .map(|slot| self.records.record(slot))
    }

    /// Checks the shard's internal invariants; for tests.
    #[cfg(test)]
    pub(super) fn check(&self) -> u64 {
        let (small, main) = self.policy.lens();
        assert_eq!(small + main, self.index.len());
        let live = self.records.slots.iter().flatten().count();
        assert_eq!(live, self.index.len());
        // A purge that skips the shard by the bound misses nothing.
        let earliest = self.earliest.load(Ordering::Relaxed);
        assert!(
            self.records
                .slots
                .iter()
                .flatten()
                .all(|record| record.expires_at() >= earliest),
            "a deadline before the published bound {earliest}"
        );
        assert_eq!(self.records_by_rank().count(), live);
        self.records
            .slots
            .iter()
            .flatten()
            .map(Record::charge)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_96_bytes() {
        assert_eq!(std::mem::size_of::<CacheKey>(), 34);
        assert_eq!(std::mem::size_of::<Option<Record>>(), 96);
    }

    #[test]
    fn spans_round_down_by_at_most_one_unit() {
        let cases = [
            (0, 0),
            (999, 0),
            (1_000, 1_000),
            (5_000_000_000, 5_000_000_000),
            // 17.9 minutes and beyond: milliseconds.
            ((1 << 30) * 1_000 + 123_456, 1_073_741_000_000),
            (86_400_000_000_123, 86_400_000_000_000),
            // 12.4 days and beyond: seconds.
            (
                30 * 86_400_000_000_000 + 999_999_999,
                30 * 86_400_000_000_000,
            ),
            // 34 years and beyond: minutes; `u64::MAX` nanoseconds still fits.
            (u64::MAX, u64::MAX / 60_000_000_000 * 60_000_000_000),
        ];
        for (nanos, kept) in cases {
            assert_eq!(span::decode(span::encode(nanos)), kept, "{nanos} ns");
            assert_ne!(span::encode(nanos), span::NONE);
        }
    }

    /// A read rewrites the access time once it is 1 ms behind, or one unit where the age is
    /// kept in a coarser one — not on every hit of an entry whose age is kept in seconds.
    #[test]
    fn an_access_time_is_rewritten_once_a_granule_or_unit_behind() {
        const MS: u64 = 1_000_000;
        const S: u64 = 1_000_000_000;
        const DAY: u64 = 86_400 * S;
        // Ages in microseconds and milliseconds: 1 ms.
        let young = span::encode(0);
        assert_eq!(span::restamp(400_000, young), None);
        assert_eq!(span::restamp(MS, young), Some(span::encode(MS)));
        let hour = span::encode(3_600 * S + 5 * MS);
        assert_eq!(span::restamp(3_600 * S + 5 * MS + 999_999, hour), None);
        assert_eq!(
            span::restamp(3_600 * S + 6 * MS, hour),
            Some(span::encode(3_600 * S + 6 * MS))
        );
        // In seconds: a second. (Every one of these reads was a write before.)
        let old = span::encode(13 * DAY);
        for behind in [MS, 500 * MS, S - 1] {
            assert_eq!(span::restamp(13 * DAY + behind, old), None, "{behind} ns");
        }
        assert_eq!(
            span::restamp(13 * DAY + S, old),
            Some(span::encode(13 * DAY + S))
        );
        // An age that moves into seconds from a stamp kept in milliseconds is restamped.
        let before = span::encode(12 * DAY);
        assert_eq!(
            span::restamp(13 * DAY, before),
            Some(span::encode(13 * DAY))
        );
        // In minutes: a minute.
        let ancient = span::encode(40 * 365 * DAY);
        assert_eq!(span::restamp(40 * 365 * DAY + 59 * S, ancient), None);
        assert!(span::restamp(40 * 365 * DAY + 60 * S, ancient).is_some());
    }

    /// Rounding up moves by less than one unit of the finest unit that holds the duration,
    /// keeps exact values exact, never produces `NONE`, and saturates within a minute of
    /// `u64::MAX` nanoseconds.
    #[test]
    fn spans_rounded_up_are_at_most_one_unit_over() {
        let cases = [
            (1, 1_000),
            (999, 1_000),
            (1_000, 1_000),
            (1_001, 2_000),
            ((1 << 30) * 1_000 + 123_456, 1_073_742_000_000),
            (
                30 * 86_400_000_000_000 + 1,
                30 * 86_400_000_000_000 + 1_000_000_000,
            ),
            // Past the end of time: saturated.
            (u64::MAX - 1, u64::MAX),
        ];
        for (nanos, kept) in cases {
            assert_eq!(
                span::decode_saturating(span::encode_up(nanos)),
                kept,
                "{nanos} ns"
            );
            assert_ne!(span::encode_up(nanos), span::NONE);
        }
        // Every count just below each unit's switch, where the count is at its largest.
        for unit in [1_000u64, 1_000_000, 1_000_000_000] {
            let largest = ((1u64 << 30) - 2) * unit;
            for nanos in [largest - 1, largest, largest + 1] {
                let up = span::decode_saturating(span::encode_up(nanos));
                assert!(
                    up >= nanos && up - nanos < 60_000_000_000,
                    "{nanos} ns: {up}"
                );
            }
        }
    }

    #[test]
    fn span_encoding_keeps_order() {
        let mut previous = 0;
        for exponent in 0..64 {
            for nanos in [(1u64 << exponent) - 1, 1 << exponent, (1 << exponent) + 1] {
                let kept = span::decode(span::encode(nanos));
                assert!(kept <= nanos, "{nanos} ns came back as {kept}");
                assert!(kept >= previous.min(nanos), "order lost at {nanos} ns");
                previous = previous.max(kept);
            }
        }
    }
}
