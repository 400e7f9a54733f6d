//! Job queue throughput: submit + take + complete, one thread and two (a producer and a worker),
//! against a `Mutex<BinaryHeap>` + `Condvar` priority queue and a crossbeam channel (no
//! priorities) in the same run.
//!
//! The queues and their loops are in `queues/mod.rs` (the channel's are here): every variant
//! moves the same jobs through the same state transitions.
//!
//! `JobQueue` runs twice: with `next` + `complete` (the worker loop every queue has), and with
//! `complete_and_next`, which does both under one lock acquisition (what `WorkerPool` uses).
//! The two-thread producer submits with `submit_timeout`, sleeping while the bounded queue is
//! full; the baselines are unbounded, so their producer never waits.
//!
//! Run with `cargo bench --bench queue`.

mod queues;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use queues::*;

fn channel_1t(iters: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::unbounded();
    baseline_1t(
        iters,
        |job| tx.send(job).expect("open"),
        || rx.recv().expect("open"),
    )
}

fn channel_2t(iters: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::unbounded();
    baseline_2t(
        iters,
        move |job| tx.send(job).expect("open"),
        || rx.recv().expect("open"),
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("submit_take_complete");
    group
        .throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(15);
    use WorkerLoop::{CompleteAndNext, NextThenComplete};
    group.bench_function("1_thread/job_queue", |b| {
        b.iter_custom(|iters| jobqueue_1t(queue(), NextThenComplete, iters))
    });
    group.bench_function("1_thread/job_queue_complete_and_next", |b| {
        b.iter_custom(|iters| jobqueue_1t(queue(), CompleteAndNext, iters))
    });
    group.bench_function("1_thread/job_queue_retain_10000", |b| {
        b.iter_custom(|iters| jobqueue_1t(queue_long_retention(), NextThenComplete, iters))
    });
    group.bench_function("1_thread/binary_heap_condvar", |b| b.iter_custom(heap_1t));
    group.bench_function("1_thread/crossbeam_channel", |b| b.iter_custom(channel_1t));
    group.bench_function("2_threads/job_queue", |b| {
        b.iter_custom(|iters| jobqueue_2t(NextThenComplete, iters))
    });
    group.bench_function("2_threads/job_queue_complete_and_next", |b| {
        b.iter_custom(|iters| jobqueue_2t(CompleteAndNext, iters))
    });
    group.bench_function("2_threads/binary_heap_condvar", |b| b.iter_custom(heap_2t));
    group.bench_function("2_threads/crossbeam_channel", |b| b.iter_custom(channel_2t));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
