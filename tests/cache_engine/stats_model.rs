//! A model test of the counters: random sequences of every kind of call, after each of which
//! every field of [`CacheStats`] must equal what a model of the calls predicts.
//!
//! The other model tests check what reads return (`model.rs`) and that the listener's reports
//! agree with the contents (`listener_model` in `tests/cache_edge_cases.rs`), but neither
//! checks hits against misses, inserts against updates, or loads against load failures, nor
//! the cause of each removal that a call other than an evicting insert makes. Which entry an
//! evicting insert drops is the policy's choice, so the model learns of size evictions from
//! the listener — and checks that they are of live entries other than the inserted one (an
//! expired entry an insert removes must be reported as `Expired`); everything else it
//! predicts: a `get` of an expired key is a miss that reports it `Expired`, a `peek` of it
//! counts nothing but removes it, `entry` and `contains_key` count and remove nothing, an
//! insert over an expired value is an insert (not an update), a purge and a `clear` report
//! exactly the entries the model holds, and so on.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use memocache::{
    Cache, CacheEntry, CacheError, CacheStats, Clock, LoadError, ManualClock, RemovalCause, Ttl,
};
use parking_lot::Mutex;
use proptest::prelude::*;

use super::key;

const KEYS: u64 = 6;
const MAX_LEN: usize = 300;

/// What a loader does when it runs.
#[derive(Clone, Copy, Debug)]
enum Loader {
    Value,
    Fails,
    Panics,
    /// Returns a value larger than the whole budget.
    TooLarge,
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        key: u64,
        len: usize,
        ttl_ms: Option<u64>,
    },
    InsertTooLarge {
        key: u64,
    },
    Get {
        key: u64,
    },
    GetTyped {
        key: u64,
    },
    Peek {
        key: u64,
    },
    Entry {
        key: u64,
    },
    ContainsKey {
        key: u64,
    },
    Remove {
        key: u64,
    },
    RemoveIf {
        key: u64,
        accept: bool,
    },
    Load {
        key: u64,
        len: usize,
        loader: Loader,
    },
    Advance {
        ms: u64,
    },
    Purge,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    let k = || 0..KEYS;
    let loader = prop_oneof![
        5 => Just(Loader::Value),
        1 => Just(Loader::Fails),
        1 => Just(Loader::Panics),
        1 => Just(Loader::TooLarge),
    ];
    prop_oneof![
        6 => (k(), 0..MAX_LEN, prop::option::of(1..2_000u64))
            .prop_map(|(key, len, ttl_ms)| Op::Insert { key, len, ttl_ms }),
        1 => k().prop_map(|key| Op::InsertTooLarge { key }),
        3 => k().prop_map(|key| Op::Get { key }),
        1 => k().prop_map(|key| Op::GetTyped { key }),
        1 => k().prop_map(|key| Op::Peek { key }),
        1 => k().prop_map(|key| Op::Entry { key }),
        1 => k().prop_map(|key| Op::ContainsKey { key }),
        1 => k().prop_map(|key| Op::Remove { key }),
        1 => (k(), any::<bool>()).prop_map(|(key, accept)| Op::RemoveIf { key, accept }),
        4 => (k(), 0..MAX_LEN, loader).prop_map(|(key, len, loader)| Op::Load { key, len, loader }),
        3 => (0..1_500u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Purge),
        1 => Just(Op::Clear),
    ]
}

/// A value the model holds: its bytes and the last instant it is live.
#[derive(Clone, Debug)]
struct Held {
    value: Bytes,
    deadline: Option<u64>,
}

impl Held {
    fn is_expired(&self, now: u64) -> bool {
        self.deadline.is_some_and(|d| now > d)
    }
}

struct Harness {
    cache: Cache,
    clock: ManualClock,
    reports: Arc<Mutex<Vec<(u64, Bytes, RemovalCause)>>>,
    held: HashMap<u64, Held>,
    expected: CacheStats,
    serial: u8,
}

impl Harness {
    fn new(entries: Option<u64>, shards: usize, default_ttl_ms: Option<u64>) -> Harness {
        let clock = ManualClock::new();
        let reports: Arc<Mutex<Vec<(u64, Bytes, RemovalCause)>>> = Arc::default();
        let sink = Arc::clone(&reports);
        let mut builder = Cache::builder()
            .max_bytes(4 * CacheEntry::charged_size(MAX_LEN) as u64)
            .max_entries(entries.unwrap_or(u64::MAX))
            .shards(shards)
            .clock(clock.clone())
            .eviction_listener(move |k, v, cause| {
                let i = (0..KEYS).find(|&i| key(i) == *k).expect("one of ours");
                sink.lock().push((i, v.clone(), cause));
            });
        if let Some(ms) = default_ttl_ms {
            builder = builder.default_ttl(Ttl::new(Duration::from_millis(ms)).expect("positive"));
        }
        Harness {
            cache: builder.build().expect("valid"),
            clock,
            reports,
            held: HashMap::new(),
            expected: CacheStats::default(),
            serial: 0,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now().as_nanos()
    }

    fn fresh_value(&mut self, len: usize) -> Bytes {
        self.serial = self.serial.wrapping_add(1);
        Bytes::from(vec![self.serial; len])
    }

    fn live(&self, k: u64, now: u64) -> Option<&Bytes> {
        self.held
            .get(&k)
            .filter(|held| !held.is_expired(now))
            .map(|held| &held.value)
    }

    fn deadline(&self, now: u64, ttl_ms: Option<u64>) -> Option<u64> {
        ttl_ms
            .map(|ms| ms * 1_000_000)
            .or_else(|| self.cache.default_ttl().map(Ttl::as_nanos))
            .map(|ttl| now + ttl)
    }

    /// A read: a hit if the model holds a live value (which it must return), else a miss
    /// that reports an expired value as `Expired`.
    fn read(
        &mut self,
        k: u64,
        got: Option<&Bytes>,
        now: u64,
        counted: bool,
    ) -> Vec<(u64, RemovalCause)> {
        let live = self.live(k, now).cloned();
        assert_eq!(
            got,
            live.as_ref(),
            "key {k}: the read disagrees with the model"
        );
        if counted {
            if live.is_some() {
                self.expected.hits += 1;
            } else {
                self.expected.misses += 1;
            }
        }
        self.expired_report(k, now)
    }

    /// `Expired` for `k` if the model holds an expired value for it: what a call that finds
    /// it (a read, a remove, an insert over it) must report.
    fn expired_report(&self, k: u64, now: u64) -> Vec<(u64, RemovalCause)> {
        match self.held.get(&k) {
            Some(held) if held.is_expired(now) => vec![(k, RemovalCause::Expired)],
            _ => Vec::new(),
        }
    }

    /// Runs `op`, checks the listener's reports against the model, and updates the model and
    /// the expected counters.
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now();
        // Reports the model predicts exactly, and the key an insert or load stores, whose
        // call may also evict other keys (the policy picks which).
        let mut predicted: Vec<(u64, RemovalCause)> = Vec::new();
        let mut stored: Option<(u64, Held)> = None;
        match *op {
            Op::Insert {
                key: k,
                len,
                ttl_ms,
            } => {
                let value = self.fresh_value(len);
                match ttl_ms {
                    Some(ms) => self.cache.insert_with_ttl(
                        key(k),
                        value.clone(),
                        Ttl::new(Duration::from_millis(ms)).expect("positive"),
                    ),
                    None => self.cache.insert(key(k), value.clone()),
                }
                .expect("fits");
                match self.held.get(&k) {
                    Some(held) if !held.is_expired(now) => {
                        self.expected.updates += 1;
                        predicted.push((k, RemovalCause::Replaced));
                    }
                    _ => {
                        self.expected.inserts += 1;
                        predicted.extend(self.expired_report(k, now));
                    }
                }
                let deadline = self.deadline(now, ttl_ms);
                stored = Some((k, Held { value, deadline }));
            }
            Op::InsertTooLarge { key: k } => {
                let too_large = vec![0u8; self.cache.max_bytes() as usize];
                let refused = self.cache.insert(key(k), too_large);
                prop_assert!(
                    matches!(refused, Err(CacheError::TooLarge { .. })),
                    "{:?}",
                    refused
                );
            }
            Op::Get { key: k } => {
                let got = self.cache.get(&key(k));
                predicted = self.read(k, got.as_ref(), now, true);
            }
            Op::GetTyped { key: k } => {
                // The values are not encodings of a `u64` (or are, by chance): either way no
                // panic, and one read counted.
                let got = self.cache.get_typed::<u64>(&key(k));
                let live = self.live(k, now).is_some();
                prop_assert_eq!(live, !matches!(got, Ok(None)), "key {}", k);
                let value = self.live(k, now).cloned();
                predicted = self.read(k, value.as_ref(), now, true);
            }
            Op::Peek { key: k } => {
                let got = self.cache.peek(&key(k));
                predicted = self.read(k, got.as_ref(), now, false);
            }
            Op::Entry { key: k } => {
                let got = self.cache.entry(&key(k));
                let live = self.live(k, now);
                prop_assert_eq!(got.as_ref().map(CacheEntry::value), live);
            }
            Op::ContainsKey { key: k } => {
                let live = self.live(k, now).is_some();
                prop_assert_eq!(self.cache.contains_key(&key(k)), live);
            }
            Op::Remove { key: k } => {
                let got = self.cache.remove(&key(k));
                prop_assert_eq!(got.as_ref(), self.live(k, now));
                predicted = self.removal(k, now, true);
            }
            Op::RemoveIf { key: k, accept } => {
                let mut called = false;
                let got = self.cache.remove_if(&key(k), |_| {
                    called = true;
                    accept
                });
                let live = self.live(k, now).cloned();
                prop_assert_eq!(
                    called,
                    live.is_some(),
                    "the predicate sees only live values"
                );
                prop_assert_eq!(got, live.filter(|_| accept));
                predicted = self.removal(k, now, accept);
            }
            Op::Load {
                key: k,
                len,
                loader,
            } => {
                let value = self.fresh_value(len);
                let too_large = Bytes::from(vec![0u8; self.cache.max_bytes() as usize]);
                let mut ran = false;
                let result = catch_unwind(AssertUnwindSafe(|| {
                    self.cache.try_get_or_insert_with(key(k), || {
                        ran = true;
                        match loader {
                            Loader::Value => Ok(value.clone()),
                            Loader::Fails => Err("the loader fails"),
                            // Not `panic!`: no message printed for each case.
                            Loader::Panics => resume_unwind(Box::new("the loader panics")),
                            Loader::TooLarge => Ok(too_large.clone()),
                        }
                    })
                }));
                let live = self.live(k, now).cloned();
                prop_assert_eq!(ran, live.is_none(), "the loader runs exactly on a miss");
                predicted = self.read(k, live.as_ref(), now, true);
                match (live, loader) {
                    (Some(live), _) => {
                        prop_assert_eq!(result.expect("no panic").expect("a hit"), live);
                    }
                    (None, Loader::Value) => {
                        prop_assert_eq!(&result.expect("no panic").expect("stored"), &value);
                        self.expected.loads += 1;
                        // The read removed an expired value: this is an insert.
                        self.expected.inserts += 1;
                        let deadline = self.deadline(now, None);
                        stored = Some((k, Held { value, deadline }));
                    }
                    (None, Loader::Fails) => {
                        let failed = matches!(result, Ok(Err(LoadError::Loader(_))));
                        prop_assert!(failed, "the loader's error reaches the caller");
                        self.expected.load_failures += 1;
                    }
                    (None, Loader::Panics) => {
                        prop_assert!(result.is_err(), "the panic reaches the caller");
                        self.expected.load_failures += 1;
                    }
                    (None, Loader::TooLarge) => {
                        let too_large = matches!(
                            result,
                            Ok(Err(LoadError::Cache(CacheError::TooLarge { .. })))
                        );
                        prop_assert!(too_large, "the cache refuses the value");
                        // The loader produced a value; the cache refused it.
                        self.expected.loads += 1;
                    }
                }
            }
            Op::Advance { ms } => self.clock.advance(Duration::from_millis(ms)),
            Op::Purge => {
                predicted = self
                    .held
                    .iter()
                    .filter(|(_, held)| held.is_expired(now))
                    .map(|(&k, _)| (k, RemovalCause::Expired))
                    .collect();
                prop_assert_eq!(self.cache.purge_expired(), predicted.len());
            }
            Op::Clear => {
                self.cache.clear();
                predicted = self
                    .held
                    .iter()
                    .map(|(&k, held)| {
                        let cause = if held.is_expired(now) {
                            RemovalCause::Expired
                        } else {
                            RemovalCause::Removed
                        };
                        (k, cause)
                    })
                    .collect();
            }
        }
        self.check_reports(op, now, predicted, stored.as_ref().map(|(k, _)| *k))?;
        if let Some((k, held)) = stored {
            self.held.insert(k, held);
        }
        let actual = self.cache.stats();
        self.expected.entries = self.held.len() as u64;
        self.expected.bytes = self
            .held
            .values()
            .map(|held| CacheEntry::charged_size(held.value.len()) as u64)
            .sum();
        prop_assert_eq!(actual, self.expected, "after {:?}", op);
        prop_assert_eq!(actual.replaced, actual.updates);
        Ok(())
    }

    /// What removing `k` (if `accept`) must report: `Removed` for a live value, `Expired` for
    /// an expired one (whatever `accept` says).
    fn removal(&self, k: u64, now: u64, accept: bool) -> Vec<(u64, RemovalCause)> {
        match self.held.get(&k) {
            Some(held) if held.is_expired(now) => vec![(k, RemovalCause::Expired)],
            Some(_) if accept => vec![(k, RemovalCause::Removed)],
            _ => Vec::new(),
        }
    }

    /// Takes the listener's reports of the call: each of a value the model holds, the
    /// predicted ones exactly, and besides them only evictions by an insert or load of
    /// `stored` — of other keys, for size if live, as expired if expired. Counts them all.
    fn check_reports(
        &mut self,
        op: &Op,
        now: u64,
        mut predicted: Vec<(u64, RemovalCause)>,
        stored: Option<u64>,
    ) -> Result<(), TestCaseError> {
        let reports: Vec<_> = self.reports.lock().drain(..).collect();
        for (k, value, cause) in reports {
            let held = self
                .held
                .remove(&k)
                .unwrap_or_else(|| panic!("{op:?}: reported key {k}, which the model lacks"));
            prop_assert_eq!(
                &value,
                &held.value,
                "{:?}: key {} reported another value",
                op,
                k
            );
            if let Some(at) = predicted.iter().position(|&p| p == (k, cause)) {
                predicted.swap_remove(at);
            } else {
                prop_assert!(
                    stored.is_some_and(|s| s != k),
                    "{:?}: unexpected report ({}, {:?})",
                    op,
                    k,
                    cause
                );
                let due = if held.is_expired(now) {
                    RemovalCause::Expired
                } else {
                    RemovalCause::Size
                };
                prop_assert_eq!(
                    cause,
                    due,
                    "{:?}: key {} evicted with the wrong cause",
                    op,
                    k
                );
            }
            match cause {
                RemovalCause::Size => self.expected.evictions_size += 1,
                RemovalCause::Expired => self.expected.evictions_expired += 1,
                RemovalCause::Replaced => self.expected.replaced += 1,
                RemovalCause::Removed => self.expected.removals_explicit += 1,
            }
        }
        prop_assert!(
            predicted.is_empty(),
            "{:?}: not reported: {:?}",
            op,
            predicted
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// About four entries of budget, so that inserts and loads evict; an optional entry
    /// bound, default TTL and shard count.
    #[test]
    fn every_counter_matches_the_model_after_every_call(
        ops in prop::collection::vec(op(), 1..80),
        entries in prop::option::of(1..6u64),
        shards in prop::sample::select(vec![1usize, 2, 4]),
        default_ttl_ms in prop::option::of(1..3_000u64),
    ) {
        let mut harness = Harness::new(entries, shards, default_ttl_ms);
        for op in &ops {
            harness.step(op)?;
        }
    }
}
