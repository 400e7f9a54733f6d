//! Throughput of memocache against `moka::sync::Cache` and `quick_cache::sync::Cache`, all in
//! the same run, with equal capacities (counted in entries) and 32-byte digest keys.
//!
//! * **hits**: Zipf(1.0) reads over 50 000 keys that are all cached (capacity 100 000, so that
//!   no peer's sharding or admission leaves a key out; checked before timing).
//! * **get_or_insert**: Zipf(1.0) over 500 000 keys, 10× the capacity of 50 000: hot keys hit,
//!   the tail misses and inserts (memocache `get_or_insert_with`, quick_cache
//!   `get_or_insert_with`, moka `get_with`).
//! * **insert**: uniform inserts over 500 000 keys into a capacity of 50 000. Each iteration
//!   shifts its keys by another 50 000 (modulo 500 000): a batch replayed as it is would find
//!   its own keys from the previous iteration and update them. So about 90 % of the inserts
//!   are of absent keys and evict.
//!
//! Each is run on 1 and 2 threads. Key sequences are generated before timing; one iteration is
//! a fixed batch of operations per thread (threads started with `std::thread::scope`, whose
//! cost is well under 1 % of a batch), and throughput is reported in operations per second.
//!
//! memocache keys are `CacheKey::from_digest` (digest + interned prefix number, 34 bytes); the peers
//! are keyed by the bare `[u8; 32]` digest with their default hashers. Cached values of the hit
//! benchmark are one 16-byte heap `Bytes` per key (a hit clones it: a reference-count
//! increment for every cache); loaders and inserts store a static 16-byte `Bytes`, so that a miss
//! costs the cache's own work and not an allocation.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use memocache::{Cache, CacheKey};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Operations per thread per iteration.
const BATCH: usize = 50_000;
const HOT_KEYS: usize = 50_000;
const HIT_CAPACITY: usize = 100_000;
const CAPACITY: usize = 50_000;
const KEY_SPACE: usize = 10 * CAPACITY;
const STATIC_VALUE: &[u8; 16] = b"0123456789abcdef";

type Digest = [u8; 32];

fn digests(n: usize) -> Vec<Digest> {
    let mut rng = SmallRng::seed_from_u64(0xD16E57);
    (0..n).map(|_| rng.random()).collect()
}

/// One index sequence per thread.
fn zipf_sequences(keys: usize, threads: usize) -> Vec<Vec<u32>> {
    let zipf = Zipf::new(keys as f64, 1.0).expect("valid Zipf parameters");
    (0..threads)
        .map(|t| {
            let mut rng = SmallRng::seed_from_u64(100 + t as u64);
            // Zipf samples ranks 1..=keys.
            (0..BATCH)
                .map(|_| zipf.sample(&mut rng) as u32 - 1)
                .collect()
        })
        .collect()
}

fn uniform_sequences(keys: usize, threads: usize) -> Vec<Vec<u32>> {
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
trait Contender: Sync {
    const NAME: &'static str;
    fn get(&self, i: u32) -> Option<Bytes>;
    fn get_or_insert(&self, i: u32) -> Bytes;
    fn insert(&self, i: u32, value: Bytes);
}

struct Memo {
    cache: Cache,
    keys: Vec<CacheKey>,
}

impl Memo {
    fn new(capacity: usize, digests: &[Digest]) -> Memo {
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

struct Quick {
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

struct Moka {
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

fn quick(capacity: usize, digests: &[Digest]) -> Quick {
    Quick {
        cache: quick_cache::sync::Cache::new(capacity),
        keys: digests.to_vec(),
    }
}

fn moka(capacity: usize, digests: &[Digest]) -> Moka {
    Moka {
        cache: moka::sync::Cache::new(capacity as u64),
        keys: digests.to_vec(),
    }
}

#[derive(Clone, Copy)]
enum Workload {
    Hits,
    GetOrInsert,
    Insert,
}

/// Runs one batch per sequence, each on its own thread (the caller's thread for one). Inserts
/// add `shift` to every key index.
fn run<C: Contender>(cache: &C, sequences: &[Vec<u32>], workload: Workload, shift: u32) {
    let batch = |sequence: &[u32]| match workload {
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

fn bench_one<C: Contender>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    cache: &C,
    sequences: &[Vec<u32>],
    workload: Workload,
) {
    let threads = sequences.len();
    group.throughput(Throughput::Elements((threads * BATCH) as u64));
    let mut shift = 0;
    group.bench_with_input(
        BenchmarkId::new(C::NAME, format!("{threads}t")),
        &threads,
        |b, _| {
            b.iter(|| {
                run(cache, sequences, workload, shift);
                shift = (shift + BATCH as u32) % KEY_SPACE as u32;
            })
        },
    );
}

/// Stores one 16-byte heap value per hot key in every cache and checks they are all there.
fn fill_hot<C: Contender>(cache: &C) {
    for i in 0..HOT_KEYS as u32 {
        let value = Bytes::from(i.to_le_bytes().repeat(4));
        // Pay a Vec-backed Bytes' one-time shared-header allocation before timing.
        drop(value.clone());
        cache.insert(i, value);
    }
}

fn assert_all_hot<C: Contender>(cache: &C) {
    let missing = (0..HOT_KEYS as u32)
        .filter(|&i| cache.get(i).is_none())
        .count();
    assert_eq!(missing, 0, "{} lost {missing} hot keys", C::NAME);
}

fn hits(c: &mut Criterion) {
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

    let mut group = c.benchmark_group("hits_zipf1.0_50k");
    for threads in [1, 2] {
        let sequences = zipf_sequences(HOT_KEYS, threads);
        bench_one(&mut group, &memo, &sequences, Workload::Hits);
        bench_one(&mut group, &quick, &sequences, Workload::Hits);
        bench_one(&mut group, &moka, &sequences, Workload::Hits);
    }
    group.finish();
}

/// Runs `workload` on a fresh cache of each kind at `CAPACITY`, so every contender starts cold.
fn bench_fresh_caches(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    digests: &[Digest],
    sequences: &[Vec<u32>],
    workload: Workload,
) {
    bench_one(group, &Memo::new(CAPACITY, digests), sequences, workload);
    bench_one(group, &quick(CAPACITY, digests), sequences, workload);
    bench_one(group, &moka(CAPACITY, digests), sequences, workload);
}

fn get_or_insert(c: &mut Criterion) {
    let digests = digests(KEY_SPACE);
    let mut group = c.benchmark_group("get_or_insert_zipf1.0_500k_keys_cap50k");
    for threads in [1, 2] {
        let sequences = zipf_sequences(KEY_SPACE, threads);
        bench_fresh_caches(&mut group, &digests, &sequences, Workload::GetOrInsert);
    }
    group.finish();
}

fn insert(c: &mut Criterion) {
    let digests = digests(KEY_SPACE);
    let mut group = c.benchmark_group("insert_uniform_500k_keys_cap50k");
    for threads in [1, 2] {
        let sequences = uniform_sequences(KEY_SPACE, threads);
        bench_fresh_caches(&mut group, &digests, &sequences, Workload::Insert);
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = hits, get_or_insert, insert
}
criterion_main!(benches);
