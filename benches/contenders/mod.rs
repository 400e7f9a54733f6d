//! The workloads and the three caches the throughput benches compare, shared by
//! `throughput.rs` (criterion, one row per cache) and `paired.rs` (the caches take turns).
//!
//! Each bench uses only part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;

use bytes::Bytes;
use memocache::{Cache, CacheKey};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Operations per thread per iteration.
pub const BATCH: usize = 50_000;
pub const HOT_KEYS: usize = 50_000;
pub const HIT_CAPACITY: usize = 100_000;
pub const CAPACITY: usize = 50_000;
pub const KEY_SPACE: usize = 10 * CAPACITY;
pub const STATIC_VALUE: &[u8; 16] = b"0123456789abcdef";

pub type Digest = [u8; 32];

pub fn digests(n: usize) -> Vec<Digest> {
    let mut rng = SmallRng::seed_from_u64(0xD16E57);
    (0..n).map(|_| rng.random()).collect()
}

/// Batches in each thread's get-or-insert sequence: one for every shift of the benches'
/// iterations (`run`), which step by a batch through the key space. Replayed as one batch, a
/// sequence of 50,000 samples names about 19,500 keys, which all fit in the capacity of
/// 50,000: after the first iteration every get-or-insert hit (session 28 counted no loader
/// call in 20 batches, for memocache or quick_cache), and the workload timed only hits. A
/// stream of ten batches misses about a fifth of the time, as a Zipf(1.0) workload over ten
/// times the capacity does.
pub const STREAM_BATCHES: usize = KEY_SPACE / BATCH;

/// One index sequence per thread, of `batches` batches (see `run`).
pub fn zipf_sequences(keys: usize, threads: usize, batches: usize) -> Vec<Vec<u32>> {
    let zipf = Zipf::new(keys as f64, 1.0).expect("valid Zipf parameters");
    (0..threads)
        .map(|t| {
            let mut rng = SmallRng::seed_from_u64(100 + t as u64);
            // Zipf samples ranks 1..=keys.
            (0..BATCH * batches)
                .map(|_| zipf.sample(&mut rng) as u32 - 1)
                .collect()
        })
        .collect()
}

pub fn uniform_sequences(keys: usize, threads: usize) -> Vec<Vec<u32>> {
    (0..threads)
        .map(|t| {
            let mut rng = SmallRng::seed_from_u64(200 + t as u64);
            (0..BATCH)
                .map(|_| rng.random_range(0..keys as u32))
                .collect()
        })
        .collect()
}

/// The three operations, by key index, for each cache.
pub trait Contender: Sync {
    const NAME: &'static str;
    fn get(&self, i: u32) -> Option<Bytes>;
    fn get_or_insert(&self, i: u32) -> Bytes;
    fn insert(&self, i: u32, value: Bytes);
}

pub struct Memo {
    cache: Cache,
    keys: Vec<CacheKey>,
}

impl Memo {
    pub fn new(capacity: usize, digests: &[Digest]) -> Memo {
        let cache = Cache::builder()
            .max_bytes(1 << 40)
            .max_entries(capacity as u64)
            .build()
            .expect("valid");
        let keys = digests
            .iter()
            .map(|d| CacheKey::from_digest(*d, "bench").expect("valid prefix"))
            .collect();
        Memo { cache, keys }
    }

    /// The fraction of its reads that missed, by its own counters.
    pub fn miss_ratio(&self) -> f64 {
        let stats = self.cache.stats();
        stats.misses as f64 / (stats.hits + stats.misses) as f64
    }
}

impl Contender for Memo {
    const NAME: &'static str = "memocache";
    #[inline]
    fn get(&self, i: u32) -> Option<Bytes> {
        self.cache.get(&self.keys[i as usize])
    }
    #[inline]
    fn get_or_insert(&self, i: u32) -> Bytes {
        self.cache
            .get_or_insert_with(self.keys[i as usize], || Bytes::from_static(STATIC_VALUE))
            .expect("fits")
    }
    #[inline]
    fn insert(&self, i: u32, value: Bytes) {
        self.cache
            .insert(self.keys[i as usize], value)
            .expect("fits");
    }
}

pub struct Quick {
    cache: quick_cache::sync::Cache<Digest, Bytes>,
    keys: Vec<Digest>,
}

impl Contender for Quick {
    const NAME: &'static str = "quick_cache";
    #[inline]
    fn get(&self, i: u32) -> Option<Bytes> {
        self.cache.get(&self.keys[i as usize])
    }
    #[inline]
    fn get_or_insert(&self, i: u32) -> Bytes {
        let loaded = self.cache.get_or_insert_with(&self.keys[i as usize], || {
            Ok::<_, std::convert::Infallible>(Bytes::from_static(STATIC_VALUE))
        });
        match loaded {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
    #[inline]
    fn insert(&self, i: u32, value: Bytes) {
        self.cache.insert(self.keys[i as usize], value);
    }
}

pub struct Moka {
    cache: moka::sync::Cache<Digest, Bytes>,
    keys: Vec<Digest>,
}

impl Contender for Moka {
    const NAME: &'static str = "moka";
    #[inline]
    fn get(&self, i: u32) -> Option<Bytes> {
        self.cache.get(&self.keys[i as usize])
    }
    #[inline]
    fn get_or_insert(&self, i: u32) -> Bytes {
        self.cache
            .get_with(self.keys[i as usize], || Bytes::from_static(STATIC_VALUE))
    }
    #[inline]
    fn insert(&self, i: u32, value: Bytes) {
        self.cache.insert(self.keys[i as usize], value);
    }
}

/// Not a cache: a `HashMap` filled once and then only read, with no lock, no statistics, no
/// access tracking and a hash that is the digest's first word. What a lookup of the same keys
/// costs the machine with none of a concurrent cache's bookkeeping: a ceiling for the hit
/// workload, and the only workload it serves.
pub struct Bare {
    map: HashMap<Digest, Bytes, BuildHasherDefault<FirstWord>>,
    keys: Vec<Digest>,
}

/// Hashes a digest as its first eight bytes (they are already uniformly random).
#[derive(Default)]
pub struct FirstWord(u64);

impl Hasher for FirstWord {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }
}

impl Contender for Bare {
    const NAME: &'static str = "bare HashMap";
    #[inline]
    fn get(&self, i: u32) -> Option<Bytes> {
        self.map.get(&self.keys[i as usize]).cloned()
    }
    fn get_or_insert(&self, _: u32) -> Bytes {
        unreachable!("the bare map is only read")
    }
    fn insert(&self, _: u32, _: Bytes) {
        unreachable!("the bare map is only read")
    }
}

pub fn quick(capacity: usize, digests: &[Digest]) -> Quick {
    Quick {
        cache: quick_cache::sync::Cache::new(capacity),
        keys: digests.to_vec(),
    }
}

pub fn moka(capacity: usize, digests: &[Digest]) -> Moka {
    Moka {
        cache: moka::sync::Cache::new(capacity as u64),
        keys: digests.to_vec(),
    }
}

#[derive(Clone, Copy)]
pub enum Workload {
    Hits,
    GetOrInsert,
    Insert,
}

/// Runs one batch per sequence, each on its own thread (the caller's thread for one). Inserts
/// add `shift` to every key index; a sequence of several batches runs the one `shift` names
/// (batch `shift / BATCH`, wrapping), so that successive shifts walk through it.
pub fn run<C: Contender>(cache: &C, sequences: &[Vec<u32>], workload: Workload, shift: u32) {
    let batch = |sequence: &[u32]| {
        let batches = (sequence.len() / BATCH).max(1);
        let start = (shift as usize / BATCH % batches) * BATCH;
        let sequence = &sequence[start..sequence.len().min(start + BATCH)];
        run_batch(cache, sequence, workload, shift);
    };
    match sequences {
        [only] => batch(only),
        _ => std::thread::scope(|scope| {
            for sequence in sequences {
                scope.spawn(move || batch(sequence));
            }
        }),
    }
}

fn run_batch<C: Contender>(cache: &C, sequence: &[u32], workload: Workload, shift: u32) {
    match workload {
        Workload::Hits => {
            for &i in sequence {
                black_box(cache.get(i));
            }
        }
        Workload::GetOrInsert => {
            for &i in sequence {
                black_box(cache.get_or_insert(i));
            }
        }
        Workload::Insert => {
            for &i in sequence {
                let key = (i + shift) % KEY_SPACE as u32;
                cache.insert(key, Bytes::from_static(STATIC_VALUE));
            }
        }
    }
}

/// The 16-byte heap value of hot key `i`. A `Vec`-backed `Bytes` allocates a shared header on
/// its first clone; that one-time cost is paid here, before anything is timed.
fn hot_value(i: u32) -> Bytes {
    let value = Bytes::from(i.to_le_bytes().repeat(4));
    drop(value.clone());
    value
}

/// Stores one 16-byte heap value per hot key in every cache and checks they are all there.
pub fn fill_hot<C: Contender>(cache: &C) {
    for i in 0..HOT_KEYS as u32 {
        cache.insert(i, hot_value(i));
    }
}

pub fn assert_all_hot<C: Contender>(cache: &C) {
    let missing = (0..HOT_KEYS as u32)
        .filter(|&i| cache.get(i).is_none())
        .count();
    assert_eq!(missing, 0, "{} lost {missing} hot keys", C::NAME);
}

/// The bare map of the hit workload, holding all `HOT_KEYS` keys with the values `fill_hot`
/// stores.
pub fn hot_bare() -> Bare {
    let keys = digests(HOT_KEYS);
    let map = (0..HOT_KEYS as u32)
        .map(|i| (keys[i as usize], hot_value(i)))
        .collect();
    let bare = Bare { map, keys };
    assert_all_hot(&bare);
    bare
}

/// The three caches of the hit workload, each holding all `HOT_KEYS` keys.
pub fn hot_caches() -> (Memo, Quick, Moka) {
    let digests = digests(HOT_KEYS);
    let memo = Memo::new(HIT_CAPACITY, &digests);
    let quick = quick(HIT_CAPACITY, &digests);
    let moka = moka(HIT_CAPACITY, &digests);
    fill_hot(&memo);
    fill_hot(&quick);
    fill_hot(&moka);
    moka.cache.run_pending_tasks();
    assert_all_hot(&memo);
    assert_all_hot(&quick);
    assert_all_hot(&moka);
    (memo, quick, moka)
}
