//! Throughput of memocache against `moka::sync::Cache` and `quick_cache::sync::Cache`, all in
//! the same run, with equal capacities (counted in entries) and 32-byte digest keys.
//!
//! * **hits**: Zipf(1.0) reads over 50 000 keys that are all cached (capacity 100 000, so that
//!   no peer's sharding or admission leaves a key out; checked before timing).
//! * **get_or_insert**: Zipf(1.0) over 500 000 keys, 10× the capacity of 50 000: hot keys hit,
//!   the tail misses and inserts (memocache `get_or_insert_with`, quick_cache
//!   `get_or_insert_with`, moka `get_with`). Each thread walks a stream of ten batches, one an
//!   iteration, so that about a fifth of the reads miss all along; until session 28 each
//!   replayed one batch, whose 19,500-odd keys all fit, and after the first pass it timed hits.
//! * **insert**: uniform inserts over 500 000 keys into a capacity of 50 000. Each iteration
//!   shifts its keys by another 50 000 (modulo 500 000): a batch replayed as it is would find
//!   its own keys from the previous iteration and update them. So about 90 % of the inserts
//!   are of absent keys and evict.
//!
//! Each is run on 1 and 2 threads. Key sequences are generated before timing; one iteration is
//! a fixed batch of operations per thread (threads started with `std::thread::scope`, whose
//! cost is well under 1 % of a batch), and throughput is reported in operations per second.
//!
//! memocache keys are `CacheKey::from_digest` (digest + interned prefix number, 34 bytes); the
//! peers are keyed by the bare `[u8; 32]` digest with their default hashers. Cached values of the hit
//! benchmark are one 16-byte heap `Bytes` per key (a hit clones it: a reference-count
//! increment for every cache); loaders and inserts store a static 16-byte `Bytes`, so that a miss
//! costs the cache's own work and not an allocation.

mod contenders;

use std::time::Duration;

use contenders::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

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

fn hits(c: &mut Criterion) {
    let (memo, quick, moka) = hot_caches();
    let mut group = c.benchmark_group("hits_zipf1.0_50k");
    for threads in [1, 2] {
        let sequences = zipf_sequences(HOT_KEYS, threads, 1);
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
        let sequences = zipf_sequences(KEY_SPACE, threads, STREAM_BATCHES);
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
