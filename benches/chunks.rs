//! Chunked processing benchmarks.
//!
//! * `chunks/speedup`: a CPU-bound chunk function over 16 chunks of 1 MiB, at concurrency 1
//!   (the baseline) and 2 (goal: ≥ 1.8× faster on a 2-core machine). Every iteration uses an
//!   empty cache, so every chunk is computed. Two weights of chunk function: `light` (24
//!   rounds of the mix, ≈ 7 ms per MiB on the development VM: about the cost of hashing the
//!   chunk) and `model` (128 rounds, ≈ 34 ms per MiB — still far lighter than speech
//!   recognition, which spends seconds per MiB of audio). Each weight runs twice:
//!   `hashing/…` first hashes the whole input for the whole-file memo check, which no number
//!   of workers can speed up (SHA-256 is sequential, ≈ 90 ms for 16 MiB on that CPU, which has
//!   no SHA-NI) — by Amdahl's law that serial pass caps the light function's speed-up well
//!   below 2×, while the heavier a function is, the closer it gets to 2×; `hash_known/…` is
//!   given the hash ([`RunOptions::file_hash`], as a caller that named the job by it does),
//!   so what remains is reading, chunk keys and the chunk function.
//! * `chunks/rerun_200MiB`: a 200 MiB input split by the seed's size for it (25 MiB, 8
//!   chunks). Baselines: `sha256_pass` (one hashing pass over the input) and `full_run` (empty
//!   cache). `rerun_one_chunk_edit` changes 8 bytes inside chunk 3 before each timed run (a
//!   new value every time, so the edited chunk is always a miss) and re-runs with everything
//!   else cached. Goal: rerun / full_run ≤ 1.2 / 8 plus hashing time. At concurrency 1 a full
//!   run computes 8 chunks one after the other and a re-run computes 1; at concurrency 2 the
//!   full run halves while the single recomputed chunk cannot, so both are reported.

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use memocache::chunk::{AudioChunk, ChunkPlan, ChunkResult, ChunkedProcessor, RunOptions};
use memocache::{Cache, CacheKey, ConcurrencyLimit, RetryConfig};

#[path = "../tests/noise_support/mod.rs"]
mod noise_support;

const MIB: usize = 1024 * 1024;

/// A stand-in for a model: `rounds` passes of an integer mix over the chunk's words.
fn crunch(chunk: &AudioChunk, rounds: u32) -> Result<ChunkResult, String> {
    let mut acc = 0u64;
    for round in 0..rounds {
        for word in chunk.data().chunks_exact(8) {
            let w = u64::from_le_bytes([
                word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
            ]);
            acc = (acc ^ w ^ u64::from(round))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(23);
        }
    }
    Ok(ChunkResult::from_text(format!("{acc:016x}")))
}

/// The bench's input: the tests' noise (the state is odd, so `noise` keeps it as it is).
fn input(len: usize) -> Vec<u8> {
    noise_support::noise(len, 0x2545_f491_4f6c_dd1d)
}

fn processor(cache: &Cache, plan: ChunkPlan, concurrency: usize) -> ChunkedProcessor {
    ChunkedProcessor::builder(cache.clone(), "bench-model/1")
        .plan(plan)
        .concurrency(ConcurrencyLimit::new(concurrency).expect("1..=10"))
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .build()
        .expect("valid processor")
}

fn empty_cache() -> Cache {
    Cache::builder()
        .max_bytes(64 * MIB as u64)
        .build()
        .expect("valid cache")
}

fn speedup(c: &mut Criterion) {
    let data = input(16 * MIB);
    let plan = ChunkPlan::with_chunk_bytes(MIB as u64).expect("valid plan");
    let mut group = c.benchmark_group("chunks/speedup");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    let file_hash = CacheKey::from_content(&data, "file")
        .expect("key")
        .digest_hex();
    for (weight, rounds) in [("light", 24), ("model", 128)] {
        for (hash, known) in [("hashing", false), ("hash_known", true)] {
            for concurrency in [1, 2] {
                let name = format!("{weight}/{hash}/concurrency_{concurrency}");
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let p = processor(&empty_cache(), plan, concurrency);
                            let f = |chunk: &AudioChunk| crunch(chunk, rounds);
                            let options = if known {
                                RunOptions::new().file_hash(&file_hash)
                            } else {
                                RunOptions::new()
                            };
                            let started = Instant::now();
                            let out = p.process_reader(Cursor::new(&data), &f, options);
                            total += started.elapsed();
                            assert_eq!(out.expect("run").computed, 16);
                        }
                        total
                    });
                });
            }
        }
    }
    group.finish();
}

fn rerun(c: &mut Criterion) {
    let mut data = input(200 * MIB);
    // The seed's size for a 200 MB file: 25 MB chunks, 8 of them.
    let plan = ChunkPlan::default();
    let edit_at = 3 * 25 * MIB + 12_345;
    let f = |chunk: &AudioChunk| crunch(chunk, 16);
    let mut group = c.benchmark_group("chunks/rerun_200MiB");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("sha256_pass", |b| {
        b.iter(|| black_box(CacheKey::from_content(&data, "file").expect("key")));
    });
    for concurrency in [1, 2] {
        group.bench_function(format!("full_run/concurrency_{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let p = processor(&empty_cache(), plan, concurrency);
                    let started = Instant::now();
                    let out = p.process_reader(Cursor::new(&data), &f, RunOptions::new());
                    total += started.elapsed();
                    assert_eq!(out.expect("run").computed, 8);
                }
                total
            });
        });
        let cache = empty_cache();
        let p = processor(&cache, plan, concurrency);
        p.process_reader(Cursor::new(&data), &f, RunOptions::new())
            .expect("warm-up run");
        let mut edit = 0u64;
        group.bench_function(
            format!("rerun_one_chunk_edit/concurrency_{concurrency}"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        edit += 1;
                        let value = edit | (u64::from(concurrency as u32) << 56);
                        data[edit_at..edit_at + 8].copy_from_slice(&value.to_le_bytes());
                        let started = Instant::now();
                        let out = p.process_reader(Cursor::new(&data), &f, RunOptions::new());
                        total += started.elapsed();
                        let out = out.expect("run");
                        assert_eq!((out.computed, out.cached), (1, 7));
                    }
                    total
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, speedup, rerun);
criterion_main!(benches);
