//! A model test: random operation sequences against a map of "the last value inserted per key".
//!
//! The cache may evict at any time, so the model holds what a key *may* hold: a read returns
//! that value or nothing — never an older value, never an expired one — and once a read has
//! found nothing, the key stays empty until the next insert. After every step the budget holds;
//! after a purge, no expired entry is left and the counters match the contents.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use memocache::{Cache, CacheEntry, CacheKey, Clock, ManualClock, Timestamp, Ttl};
use proptest::prelude::*;

use super::key;

const KEYS: u64 = 8;
const MAX_LEN: usize = 200;

#[derive(Clone, Debug)]
enum Op {
    Insert {
        key: u64,
        len: usize,
    },
    InsertWithTtl {
        key: u64,
        len: usize,
        ttl_ms: u64,
    },
    Get {
        key: u64,
    },
    Entry {
        key: u64,
    },
    Remove {
        key: u64,
    },
    /// Moves the clock; whole milliseconds often land exactly on a deadline (plus_nanos = 0).
    Advance {
        ms: u64,
        plus_nanos: u64,
    },
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    prop_oneof![
        4 => (k.clone(), 0..MAX_LEN).prop_map(|(key, len)| Op::Insert { key, len }),
        3 => (k.clone(), 0..MAX_LEN, 1..3_000u64)
            .prop_map(|(key, len, ttl_ms)| Op::InsertWithTtl { key, len, ttl_ms }),
        4 => k.clone().prop_map(|key| Op::Get { key }),
        1 => k.clone().prop_map(|key| Op::Entry { key }),
        1 => k.prop_map(|key| Op::Remove { key }),
        2 => (0..1_500u64, 0..2u64).prop_map(|(ms, plus_nanos)| Op::Advance { ms, plus_nanos }),
        1 => Just(Op::Purge),
    ]
}

/// What a key may hold.
#[derive(Clone, Debug)]
struct Expected {
    value: Bytes,
    created_at: u64,
    /// Last instant at which the value is live.
    deadline: Option<u64>,
}

impl Expected {
    fn is_expired(&self, now: u64) -> bool {
        self.deadline.is_some_and(|d| now > d)
    }
}

struct Harness {
    cache: Cache,
    clock: ManualClock,
    keys: Vec<CacheKey>,
    model: HashMap<u64, Expected>,
    serial: u64,
}

impl Harness {
    fn new(max_bytes: u64, max_entries: u64, default_ttl: Option<Ttl>) -> Harness {
        let clock = ManualClock::new();
        let mut builder = Cache::builder()
            .max_bytes(max_bytes)
            .max_entries(max_entries)
            .clock(clock.clone());
        if let Some(ttl) = default_ttl {
            builder = builder.default_ttl(ttl);
        }
        Harness {
            cache: builder.build().expect("valid"),
            clock,
            keys: (0..KEYS).map(key).collect(),
            model: HashMap::new(),
            serial: 0,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now().as_nanos()
    }

    /// Notes that `key` holds `value` from `now`, live up to `deadline`.
    fn stored(&mut self, key: u64, value: Bytes, now: u64, deadline: Option<u64>) {
        self.model.insert(
            key,
            Expected {
                value,
                created_at: now,
                deadline,
            },
        );
    }

    /// A value no earlier insert used: its serial number, then filler.
    fn fresh_value(&mut self, len: usize) -> Bytes {
        self.serial += 1;
        let mut value = BytesMut::with_capacity(8 + len);
        value.put_u64_le(self.serial);
        value.put_bytes(0xAB, len);
        value.freeze()
    }

    /// Checks what a read returned against the model, and forgets a key found empty.
    fn check_read(&mut self, k: u64, got: Option<&Bytes>, what: &str) -> Result<(), TestCaseError> {
        let now = self.now();
        match (self.model.get(&k), got) {
            (None, got) => prop_assert!(
                got.is_none(),
                "{what}: key {k} was never inserted or is gone"
            ),
            (Some(expected), Some(got)) => {
                prop_assert!(
                    !expected.is_expired(now),
                    "{what}: key {k} returned after expiry"
                );
                prop_assert_eq!(
                    got,
                    &expected.value,
                    "{}: key {} returned a stale value",
                    what,
                    k
                );
            }
            (Some(expected), None) => {
                // Evicted: stays gone until inserted again. (An expired value stays in the
                // model: `entry` does not remove it, so a purge may still find it.)
                if !expected.is_expired(now) {
                    self.model.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now();
        match *op {
            Op::Insert { key, len } => {
                let value = self.fresh_value(len);
                self.cache
                    .insert(self.keys[key as usize], value.clone())
                    .expect("fits");
                let deadline = self
                    .cache
                    .default_ttl()
                    .map(|ttl| now + ttl.as_duration().as_nanos() as u64);
                self.stored(key, value, now, deadline);
            }
            Op::InsertWithTtl { key, len, ttl_ms } => {
                let value = self.fresh_value(len);
                let ttl = Duration::from_millis(ttl_ms);
                self.cache
                    .insert_with_ttl(
                        self.keys[key as usize],
                        value.clone(),
                        Ttl::new(ttl).expect("positive"),
                    )
                    .expect("fits");
                let deadline = Some(now + ttl.as_nanos() as u64);
                self.stored(key, value, now, deadline);
            }
            Op::Get { key } => {
                let got = self.cache.get(&self.keys[key as usize]);
                self.check_read(key, got.as_ref(), "get")?;
            }
            Op::Entry { key } => {
                let got = self.cache.entry(&self.keys[key as usize]);
                if let (Some(entry), Some(expected)) = (&got, self.model.get(&key)) {
                    prop_assert_eq!(
                        entry.created_at(),
                        Timestamp::from_nanos(expected.created_at)
                    );
                    prop_assert_eq!(
                        entry.expires_at().map(Timestamp::as_nanos),
                        expected.deadline
                    );
                    prop_assert_eq!(
                        entry.size_bytes(),
                        CacheEntry::charged_size(expected.value.len())
                    );
                }
                self.check_read(key, got.as_ref().map(CacheEntry::value), "entry")?;
            }
            Op::Remove { key } => {
                let got = self.cache.remove(&self.keys[key as usize]);
                self.check_read(key, got.as_ref(), "remove")?;
                self.model.remove(&key);
                prop_assert!(!self.cache.contains_key(&self.keys[key as usize]));
            }
            Op::Advance { ms, plus_nanos } => {
                self.clock
                    .advance(Duration::from_millis(ms) + Duration::from_nanos(plus_nanos));
            }
            Op::Purge => {
                let expired_in_model = self.model.values().filter(|e| e.is_expired(now)).count();
                let purged = self.cache.purge_expired();
                prop_assert!(
                    purged <= expired_in_model,
                    "purged {} of {} expired",
                    purged,
                    expired_in_model
                );
                self.model.retain(|_, e| !e.is_expired(now));
                // Nothing expired is left: the visible entries account for everything.
                let (mut live, mut bytes) = (0, 0);
                for k in &self.keys {
                    if let Some(entry) = self.cache.entry(k) {
                        live += 1;
                        bytes += entry.size_bytes() as u64;
                    }
                }
                prop_assert_eq!(live, self.cache.len());
                prop_assert_eq!(bytes, self.cache.size_bytes());
            }
        }
        prop_assert!(self.cache.size_bytes() <= self.cache.max_bytes());
        prop_assert!(self.cache.len() as u64 <= self.cache.max_entries());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A budget of about four entries, so that most sequences evict.
    #[test]
    fn reads_agree_with_the_model_under_a_tight_budget(
        ops in prop::collection::vec(op(), 1..80),
        entries_bound in prop::option::of(1..6u64),
        default_ttl_ms in prop::option::of(1..4_000u64),
    ) {
        let max_bytes = 4 * CacheEntry::charged_size(8 + MAX_LEN) as u64;
        let default_ttl = default_ttl_ms.map(|ms| Ttl::new(Duration::from_millis(ms)).expect("positive"));
        let mut harness = Harness::new(max_bytes, entries_bound.unwrap_or(u64::MAX), default_ttl);
        for op in &ops {
            harness.step(op)?;
        }
    }

    /// A budget nothing exceeds: then nothing may be lost but by expiry or removal.
    #[test]
    fn nothing_is_lost_without_budget_pressure(ops in prop::collection::vec(op(), 1..80)) {
        let mut harness = Harness::new(1 << 20, u64::MAX, None);
        for op in &ops {
            let before = harness.model.clone();
            harness.step(op)?;
            let now = harness.now();
            if matches!(op, Op::Get { .. } | Op::Entry { .. }) {
                // A read may only forget a key whose value expired.
                for (k, e) in &before {
                    prop_assert!(harness.model.contains_key(k) || e.is_expired(now), "key {} lost", k);
                }
            }
        }
    }
}
