//! The job queues the queue benches compare and the loops that drive them, shared by
//! `queue.rs` (criterion, one row per queue) and `paired.rs` (the queues take turns).
//!
//! Every variant moves the same `Job` values (created with `Job::new`, priorities cycling
//! Low/Medium/High) and makes the same state transitions on them, so the difference is the
//! queueing: the baseline hands the job itself to the worker and forgets it, `JobQueue` also
//! keeps the record (status lookups, leases, retries, retention of finished jobs).
//!
//! Each bench uses only part of this module.
#![allow(dead_code)]

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use memocache::{Job, JobPriority, JobQueue, JobResult, JobType, Timestamp, WorkerId};
use parking_lot::{Condvar, Mutex};

/// Jobs submitted before they are taken, in the single-threaded loop.
pub const BATCH: u64 = 64;

pub fn make_job(n: u64) -> Job {
    let priority = JobPriority::ALL[(n % 3) as usize];
    Job::new(JobType::Transcription, &b"payload"[..]).with_priority(priority)
}

/// What a worker does with a job it got from a baseline: the same transitions the queue makes.
pub fn run(mut job: Job, worker: &WorkerId) {
    let now = Timestamp::ZERO;
    let _ = job.start_processing(worker.clone(), now);
    let _ = job.complete(JobResult::default(), now);
    black_box(job);
}

// --- baseline: Mutex<BinaryHeap> + Condvar -------------------------------------------------

pub struct Item {
    priority: JobPriority,
    seq: Reverse<u64>,
    job: Job,
}

impl PartialEq for Item {
    fn eq(&self, other: &Item) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Item) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Item) -> Ordering {
        (self.priority, self.seq).cmp(&(other.priority, other.seq))
    }
}

#[derive(Default)]
pub struct HeapQueue {
    heap: Mutex<(BinaryHeap<Item>, u64)>,
    ready: Condvar,
}

impl HeapQueue {
    fn push(&self, job: Job) {
        let mut guard = self.heap.lock();
        let (heap, seq) = &mut *guard;
        *seq += 1;
        heap.push(Item {
            priority: job.priority(),
            seq: Reverse(*seq),
            job,
        });
        drop(guard);
        self.ready.notify_one();
    }

    fn pop(&self) -> Job {
        let mut guard = self.heap.lock();
        loop {
            if let Some(item) = guard.0.pop() {
                return item.job;
            }
            self.ready.wait(&mut guard);
        }
    }
}

// --- the runs ---------------------------------------------------------------------------------

/// The queue as configured by default.
pub fn queue() -> JobQueue {
    JobQueue::builder().build().expect("valid config")
}

/// The earlier default retention, 10 000 finished records (mostly out of cache by the time
/// they are dropped): what keeping a long history costs per job.
pub fn queue_long_retention() -> JobQueue {
    JobQueue::builder()
        .retain_finished(10_000)
        .build()
        .expect("valid config")
}

/// How a `JobQueue` worker takes and completes its jobs.
#[derive(Clone, Copy)]
pub enum WorkerLoop {
    /// `next`, then `complete`: two trips through the queue's lock per job.
    NextThenComplete,
    /// `complete_and_next`: one trip per job.
    CompleteAndNext,
}

/// Takes and completes `count` jobs (which are, or will be, submitted), waiting up to `wait`
/// for each.
pub fn work(queue: &JobQueue, count: u64, how: WorkerLoop, wait: Duration) {
    let worker = WorkerId::new("w");
    let take = || queue.next(&worker, wait).expect("a job is ready in time");
    match how {
        WorkerLoop::NextThenComplete => {
            for _ in 0..count {
                let lease = take();
                queue
                    .complete(&lease, JobResult::default())
                    .expect("current lease");
            }
        }
        WorkerLoop::CompleteAndNext => {
            let Some(mut lease) = (count > 0).then(take) else {
                return;
            };
            for _ in 1..count {
                lease = queue
                    .complete_and_next(&lease, JobResult::default(), wait)
                    .expect("current lease")
                    .expect("a job is ready in time");
            }
            // The last job: nothing follows it, so do not wait for one.
            queue
                .complete(&lease, JobResult::default())
                .expect("current lease");
        }
    }
}

pub fn jobqueue_1t(queue: JobQueue, how: WorkerLoop, iters: u64) -> Duration {
    let start = Instant::now();
    let mut n = 0;
    while n < iters {
        let batch = BATCH.min(iters - n);
        for i in 0..batch {
            queue.submit(make_job(n + i)).expect("room");
        }
        work(&queue, batch, how, Duration::ZERO);
        n += batch;
    }
    start.elapsed()
}

/// A baseline on one thread: `BATCH` jobs pushed, then popped and run, until `iters` ran.
pub fn baseline_1t(iters: u64, push: impl Fn(Job), pop: impl Fn() -> Job) -> Duration {
    let worker = WorkerId::new("w");
    let start = Instant::now();
    let mut n = 0;
    while n < iters {
        let batch = BATCH.min(iters - n);
        for i in 0..batch {
            push(make_job(n + i));
        }
        for _ in 0..batch {
            run(pop(), &worker);
        }
        n += batch;
    }
    start.elapsed()
}

/// A baseline on two threads: a producer pushes `iters` jobs while this thread pops and runs
/// them.
pub fn baseline_2t(
    iters: u64,
    push: impl Fn(Job) + Send + 'static,
    pop: impl Fn() -> Job,
) -> Duration {
    let start = Instant::now();
    let producer = thread::spawn(move || (0..iters).for_each(|n| push(make_job(n))));
    let worker = WorkerId::new("w");
    for _ in 0..iters {
        run(pop(), &worker);
    }
    producer.join().expect("producer");
    start.elapsed()
}

pub fn heap_1t(iters: u64) -> Duration {
    let queue = HeapQueue::default();
    baseline_1t(iters, |job| queue.push(job), || queue.pop())
}

pub fn jobqueue_2t(how: WorkerLoop, iters: u64) -> Duration {
    let queue = queue();
    let start = Instant::now();
    let producer = {
        let queue = queue.clone();
        thread::spawn(move || {
            for n in 0..iters {
                queue
                    .submit_timeout(make_job(n), Duration::from_secs(10))
                    .expect("the worker makes room");
            }
        })
    };
    work(&queue, iters, how, Duration::from_secs(10));
    producer.join().expect("producer");
    start.elapsed()
}

pub fn heap_2t(iters: u64) -> Duration {
    let queue = Arc::new(HeapQueue::default());
    let producer_queue = Arc::clone(&queue);
    baseline_2t(iters, move |job| producer_queue.push(job), || queue.pop())
}
