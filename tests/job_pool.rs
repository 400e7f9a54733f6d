//! WorkerPool behaviour, and the concurrent property test of queue + pool.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use memocache::{
    Cache, ConcurrencyLimit, Job, JobError, JobId, JobQueue, JobResult, JobStatus, JobType,
    ManualClock, PoolError, PoolStats, RetryConfig, Shutdown, WorkerId, WorkerPool,
};
use parking_lot::Mutex;
use proptest::prelude::*;

#[cfg(target_os = "linux")]
mod spawn_support;

mod panic_support;
use panic_support::{INJECTED, quiet_injected_panics};

fn queue_with_immediate_retries(max_retries: u32) -> JobQueue {
    JobQueue::builder()
        .retry(RetryConfig::fixed(max_retries, Duration::ZERO))
        .build()
        .expect("valid")
}

/// A queue on `clock` whose leases last 10 s and whose jobs get `max_retries` immediate
/// retries.
fn queue_with_10_s_leases(clock: &ManualClock, max_retries: u32) -> JobQueue {
    JobQueue::builder()
        .clock(Arc::new(clock.clone()))
        .retry(RetryConfig::fixed(max_retries, Duration::ZERO))
        .lease(Duration::from_secs(10))
        .build()
        .expect("valid")
}

#[test]
fn runs_a_handler_per_type() {
    let queue = queue_with_immediate_retries(0);
    let s = queue
        .submit(Job::new(JobType::Summarization, &b"abc"[..]))
        .expect("submit");
    let t = queue
        .submit(Job::new(JobType::Translation, &b"xyz"[..]))
        .expect("submit");
    let i = queue
        .submit(Job::new(JobType::Indexing, &b"no handler"[..]))
        .expect("submit");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Summarization, |ctx| {
            Ok(format!("summary of {:?}", ctx.payload().as_bytes()).into())
        })
        .handler(JobType::Translation, |ctx| {
            let mut v = ctx.payload().as_bytes().to_vec();
            v.reverse();
            Ok(v.into())
        })
        .concurrency(ConcurrencyLimit::new(3).expect("valid"))
        .start()
        .expect("start");
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.completed), (2, 2));
    let result = |id| queue.get(id).and_then(|j| j.result().cloned());
    assert_eq!(
        result(s),
        Some(JobResult::from(&b"summary of b\"abc\""[..]))
    );
    assert_eq!(result(t), Some(JobResult::from(&b"zyx"[..])));
    assert_eq!(
        queue.status(i),
        Some(JobStatus::Queued),
        "left for a pool with an Indexing handler"
    );
}

#[test]
fn a_panicking_handler_fails_the_job_not_the_pool() {
    quiet_injected_panics();
    let queue = queue_with_immediate_retries(1);
    let flaky = queue
        .submit(Job::new(JobType::Indexing, &b"flaky"[..]))
        .expect("submit");
    let broken = queue
        .submit(Job::new(JobType::Indexing, &b"broken"[..]))
        .expect("submit");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, |ctx| {
            if ctx.payload().as_bytes().as_ref() == b"broken" || ctx.attempt() == 0 {
                std::panic::panic_any(INJECTED);
            }
            Ok(Bytes::from_static(b"indexed").into())
        })
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.panicked, stats.completed), (4, 3, 1));
    assert_eq!(queue.status(flaky), Some(JobStatus::Completed));
    let dead = queue.get(broken).expect("known");
    assert_eq!(dead.status(), JobStatus::Failed);
    assert_eq!(
        dead.error_message(),
        Some(format!("handler panicked: {INJECTED}").as_str())
    );
}

#[test]
fn handler_errors_are_retried_then_dead_lettered() {
    let queue = queue_with_immediate_retries(2);
    let id = queue
        .submit(Job::new(JobType::Indexing, &b""[..]))
        .expect("submit");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, |ctx| {
            Err(format!("attempt {} failed", ctx.attempt()).into())
        })
        .start()
        .expect("start");
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.failed), (3, 3));
    let dead = queue.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id(), id);
    assert_eq!(dead[0].error_message(), Some("attempt 2 failed"));
}

/// A drain does not wait out a retry delay: the job stays queued (the queue outlives the
/// pool), the queue's stats show it as `delayed`, and a pool started once it is due runs it
/// (the way the docs give to wait for such jobs).
#[test]
fn a_drain_leaves_a_delayed_retry_queued_for_a_later_pool() {
    let clock = ManualClock::new();
    let queue = JobQueue::builder()
        .clock(Arc::new(clock.clone()))
        .retry(RetryConfig::fixed(1, Duration::from_secs(10)))
        .build()
        .expect("valid");
    let id = queue
        .submit(Job::new(JobType::Indexing, &b"flaky"[..]))
        .expect("submit");
    let start = || {
        WorkerPool::builder(queue.clone())
            .handler(JobType::Indexing, |ctx| match ctx.attempt() {
                0 => Err("first attempt fails".into()),
                _ => Ok(Bytes::from_static(b"indexed").into()),
            })
            .concurrency(ConcurrencyLimit::new(1).expect("valid"))
            .start()
            .expect("start")
    };

    let stats = start().shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.failed, stats.completed), (1, 1, 0));
    assert_eq!(queue.status(id), Some(JobStatus::Queued));
    let left = queue.stats();
    assert_eq!((left.queued, left.delayed, left.retries), (1, 1, 1));

    // Not due yet: a new pool drains at once and leaves it.
    assert_eq!(start().shutdown(Shutdown::Drain).executed, 0);
    clock.advance(Duration::from_secs(10));
    let stats = start().shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.completed), (1, 1));
    assert_eq!(queue.status(id), Some(JobStatus::Completed));
    assert_eq!((queue.stats().queued, queue.stats().delayed), (0, 0));
}

/// A handler that hangs past its lease: the job is taken back and run again on another
/// worker, whose result stands; the hung handler's late result is refused (counted `stale`),
/// and its thread comes back to the pool once the handler returns, so a drain ends.
#[test]
fn a_hung_handler_is_overtaken_after_its_lease_and_its_late_result_refused() {
    let clock = ManualClock::new();
    let queue = queue_with_10_s_leases(&clock, 1);
    let id = queue
        .submit(Job::new(JobType::Indexing, &b""[..]))
        .expect("submit");
    let (started_tx, started_rx) = mpsc::channel();
    let (unblock_tx, unblock_rx) = mpsc::channel::<()>();
    let unblock_rx = Mutex::new(unblock_rx);
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, move |ctx| {
            if ctx.attempt() == 0 {
                let _ = started_tx.send(ctx.worker().clone());
                let _ = unblock_rx.lock().recv();
                Ok(Bytes::from_static(b"late").into())
            } else {
                let _ = unblock_tx.send(());
                Ok(Bytes::from_static(b"retried").into())
            }
        })
        .concurrency(ConcurrencyLimit::new(2).expect("valid"))
        .start()
        .expect("start");
    let hung = started_rx.recv().expect("first attempt started");
    // The idle worker re-reads the clock at its next idle-wait slice and takes the job back.
    clock.advance(Duration::from_secs(11));
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!(
        (stats.executed, stats.completed, stats.stale, stats.failed),
        (2, 1, 1, 0)
    );
    let job = queue.get(id).expect("known");
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(
        job.result().map(|r| r.as_bytes().clone()),
        Some(Bytes::from_static(b"retried"))
    );
    assert_ne!(
        job.worker_id(),
        Some(&hung),
        "run again on the other worker"
    );
    let left = queue.stats();
    assert_eq!(
        (left.lease_expirations, left.retries, left.completed),
        (1, 1, 1)
    );
}

/// A handler's heartbeat tells it the extended deadline (the lease it sees keeps the one of
/// the take); it discarded it, so a handler could not know when its lease now ran out.
#[test]
fn a_handlers_heartbeat_returns_the_new_deadline() {
    let clock = ManualClock::new();
    let queue = JobQueue::builder()
        .clock(Arc::new(clock.clone()))
        .lease(Duration::from_secs(10))
        .build()
        .expect("valid");
    queue
        .submit(Job::new(JobType::Indexing, &b""[..]))
        .expect("submit");
    let (tx, rx) = mpsc::channel();
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, move |ctx| {
            let taken = ctx.lease().deadline();
            clock.advance(Duration::from_secs(4));
            let extended = ctx.heartbeat().map_err(|e| e.to_string())?;
            let _ = tx.send((taken, extended, ctx.lease().deadline()));
            Ok(JobResult::default())
        })
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let (taken, extended, seen) = rx.recv().expect("ran");
    assert_eq!(pool.shutdown(Shutdown::Drain).completed, 1);
    assert_eq!(extended, taken.saturating_add(Duration::from_secs(4)));
    assert_eq!(seen, taken, "the lease keeps the deadline of the take");
}

/// A panic whose payload is neither `&str` nor `String` fails the job with a fixed message.
#[test]
fn a_panic_with_a_non_string_payload_fails_the_job() {
    quiet_injected_panics();
    let queue = queue_with_immediate_retries(0);
    let id = queue
        .submit(Job::new(JobType::Indexing, &b""[..]))
        .expect("submit");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, |_| std::panic::panic_any(42_u32))
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!((stats.failed, stats.panicked), (1, 1));
    let job = queue.get(id).expect("known");
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(
        job.error_message(),
        Some("handler panicked: non-string panic payload")
    );
}

/// Runs one long job on a pool of `workers` whose handler heartbeats until
/// `Shutdown::Now`, then returns `Interrupted`; shuts the pool down once the job started.
fn interrupt_a_running_job(workers: usize) -> (PoolStats, Job, JobQueue) {
    let queue = queue_with_immediate_retries(0);
    let id = queue
        .submit(Job::new(JobType::Transcription, &b"long audio"[..]))
        .expect("submit");
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Transcription, move |ctx| {
            let _ = started_tx.lock().send(ctx.job_id());
            while !ctx.stop_requested() {
                ctx.heartbeat()
                    .map_err(|e| JobError::Failed(e.to_string()))?;
                std::thread::park_timeout(Duration::from_millis(1));
            }
            Err(JobError::Interrupted)
        })
        .concurrency(ConcurrencyLimit::new(workers).expect("valid"))
        .start()
        .expect("start");
    assert_eq!(started_rx.recv().expect("handler started"), id);
    let stats = pool.shutdown(Shutdown::Now);
    let job = queue.get(id).expect("known");
    (stats, job, queue)
}

#[test]
fn shutdown_now_gives_back_an_interrupted_job() {
    let (stats, job, _) = interrupt_a_running_job(1);
    assert_eq!((stats.executed, stats.released, stats.failed), (1, 1, 0));
    assert_eq!((job.status(), job.retry_count()), (JobStatus::Queued, 0));
}

/// A job given back on a stop is not run again by the stopping pool's idle workers.
///
/// The workers that are idle at the stop are blocked in the queue (up to their idle wait),
/// and a job the interrupted worker gives back wakes them: before the fix one took it and
/// ran it, so `Shutdown::Now` started new work after the stop (two or three runs of the one
/// job instead of one, in five runs of this test; a handler that does not watch
/// `stop_requested` ran it to the end). Two idle workers, so that one is still blocked in the
/// queue when the job comes back even if the other's idle wait has just run out.
#[test]
fn shutdown_now_does_not_run_a_given_back_job_on_another_worker() {
    let (stats, job, queue) = interrupt_a_running_job(3);
    assert_eq!((stats.executed, stats.released), (1, 1), "{stats:?}");
    assert_eq!((job.status(), job.retry_count()), (JobStatus::Queued, 0));
    assert_eq!(queue.stats().processing, 0);
}

/// How a handler ends the run whose outcome the queue refuses.
#[derive(Clone, Copy, Debug)]
enum LateOutcome {
    Fail,
    Panic,
    Interrupt,
}

/// Every run is counted once, by what the queue did with its outcome: a completion, failure
/// or give-back it accepted, or an outcome it refused (`stale`). Here each run's lease runs
/// out while it runs, so the queue refuses what it reports. Before the fix a refused failure
/// or give-back was counted as `failed` (and `panicked`) or `released` and as `stale` too,
/// while a refused completion was counted as `stale` only.
#[test]
fn an_outcome_the_queue_refuses_counts_as_stale_only() {
    quiet_injected_panics();
    for outcome in [
        LateOutcome::Fail,
        LateOutcome::Panic,
        LateOutcome::Interrupt,
    ] {
        let clock = ManualClock::new();
        let queue = queue_with_10_s_leases(&clock, 0);
        let id = queue
            .submit(Job::new(JobType::Indexing, &b""[..]))
            .expect("submit");
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (started_tx, go_rx) = (Mutex::new(started_tx), Mutex::new(go_rx));
        let pool = WorkerPool::builder(queue.clone())
            .handler(JobType::Indexing, move |ctx| {
                let _ = started_tx.lock().send(());
                // Bounded: a test that goes wrong fails instead of hanging.
                let bound = std::time::Instant::now() + Duration::from_secs(30);
                match outcome {
                    LateOutcome::Interrupt => {
                        while !ctx.stop_requested() && std::time::Instant::now() < bound {
                            std::thread::park_timeout(Duration::from_millis(1));
                        }
                        Err(JobError::Interrupted)
                    }
                    LateOutcome::Fail | LateOutcome::Panic => {
                        let _ = go_rx.lock().recv_timeout(Duration::from_secs(30));
                        if matches!(outcome, LateOutcome::Panic) {
                            std::panic::panic_any(INJECTED);
                        }
                        Err(JobError::Failed("late".to_owned()))
                    }
                }
            })
            .concurrency(ConcurrencyLimit::new(1).expect("valid"))
            .start()
            .expect("start");
        started_rx.recv().expect("the handler started");
        clock.advance(Duration::from_secs(11));
        let stats = match outcome {
            LateOutcome::Interrupt => pool.shutdown(Shutdown::Now),
            LateOutcome::Fail | LateOutcome::Panic => {
                go_tx.send(()).expect("the handler waits");
                pool.shutdown(Shutdown::Drain)
            }
        };
        assert_eq!(
            stats,
            PoolStats {
                executed: 1,
                stale: 1,
                ..PoolStats::default()
            },
            "{outcome:?}"
        );
        assert_eq!(queue.status(id), Some(JobStatus::Failed), "{outcome:?}");
        assert_eq!(queue.stats().lease_expirations, 1, "{outcome:?}");
    }
}

/// A handler that returns `Interrupted` while the pool is not stopping fails the attempt.
/// Before the fix the job was given back, and the running pool took it straight again: the
/// worker spun on it for ever (still Queued after 10 s here, the handler run 8,489,628
/// times).
#[test]
fn interrupted_outside_a_shutdown_is_a_failed_attempt_not_a_spin() {
    let queue = queue_with_immediate_retries(1);
    let id = queue
        .submit(Job::new(JobType::Indexing, &b"doc"[..]))
        .expect("submit");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, |_| Err(JobError::Interrupted))
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queue.status(id) != Some(JobStatus::Failed) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = pool.shutdown(Shutdown::Now);
    let job = queue.get(id).expect("known");
    assert_eq!(job.status(), JobStatus::Failed, "{stats:?}");
    assert!(
        job.error_message()
            .is_some_and(|e| e.contains("Interrupted")),
        "{:?}",
        job.error_message()
    );
    // One attempt and one retry, each a failure; nothing given back.
    assert_eq!(
        (stats.executed, stats.failed, stats.released),
        (2, 2, 0),
        "{stats:?}"
    );
    assert_eq!(queue.dead_letters().len(), 1);
}

#[test]
fn a_pool_needs_a_handler() {
    let queue = queue_with_immediate_retries(0);
    assert!(matches!(
        WorkerPool::builder(queue).start(),
        Err(PoolError::NoHandlers)
    ));
}

/// Under load the pool runs at most its `ConcurrencyLimit` of handlers at once, and reaches
/// it: the first three calls wait for each other at a barrier, which would never open with
/// fewer threads.
#[test]
fn a_pool_runs_exactly_its_concurrency_limit_of_handlers_at_once() {
    use std::sync::Barrier;
    const LIMIT: usize = 3;
    let queue = queue_with_immediate_retries(0);
    for _ in 0..200 {
        queue
            .submit(Job::new(JobType::Indexing, &b""[..]))
            .expect("submit");
    }
    let (running, most, calls) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        AtomicUsize::new(0),
    );
    let barrier = Barrier::new(LIMIT);
    let (r, m) = (Arc::clone(&running), Arc::clone(&most));
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, move |_| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            if calls.fetch_add(1, Ordering::SeqCst) < LIMIT {
                barrier.wait();
            }
            std::thread::yield_now();
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(JobResult::default())
        })
        .concurrency(ConcurrencyLimit::new(LIMIT).expect("valid"))
        .start()
        .expect("start");
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.completed), (200, 200));
    assert_eq!(most.load(Ordering::SeqCst), LIMIT);
    assert_eq!(running.load(Ordering::SeqCst), 0);
}

/// Bug: a worker was named `{name}-{index}` in its pool, so two pools over one queue under
/// the same name (the default, "worker") both had a "worker-0", and the worker id a job
/// records (and a lease expiry's message) did not tell which had run it. Each pool's one
/// worker here runs one of the two jobs, and they name different workers.
#[test]
fn two_pools_of_one_name_have_distinct_worker_ids() {
    let queue = queue_with_immediate_retries(0);
    let meet = Arc::new(std::sync::Barrier::new(2));
    let pools: Vec<WorkerPool> = (0..2)
        .map(|_| {
            let meet = Arc::clone(&meet);
            WorkerPool::builder(queue.clone())
                .handler(JobType::Indexing, move |ctx| {
                    // Both jobs run at once, one on each pool's only worker.
                    meet.wait();
                    Ok(ctx.worker().as_str().as_bytes().to_vec().into())
                })
                .concurrency(ConcurrencyLimit::new(1).expect("valid"))
                .start()
                .expect("start")
        })
        .collect();
    let ids: Vec<JobId> = (0..2)
        .map(|_| {
            queue
                .submit(Job::new(JobType::Indexing, &b""[..]))
                .expect("submit")
        })
        .collect();
    for pool in pools {
        pool.shutdown(Shutdown::Drain);
    }
    let workers: HashSet<String> = ids
        .iter()
        .map(|&id| {
            let job = queue.get(id).expect("known");
            assert_eq!(job.status(), JobStatus::Completed);
            let ran = job.worker_id().expect("ran").as_str().to_owned();
            assert_eq!(
                job.result().map(|r| r.as_bytes().to_vec()),
                Some(ran.clone().into_bytes())
            );
            ran
        })
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
}

/// A name with a NUL byte cannot name a thread: it is refused, where spawning panicked.
#[test]
fn a_pool_name_with_a_nul_byte_is_refused() {
    let queue = queue_with_immediate_retries(0);
    let start = |name: &str| {
        WorkerPool::builder(queue.clone())
            .handler(JobType::Indexing, |_| Ok(JobResult::default()))
            .name(name)
            .start()
    };
    assert!(matches!(start("a\0b"), Err(PoolError::InvalidName(name)) if name == "a\0b"));
    assert!(start("a b").is_ok());
}

/// A pool that fails to start (the OS refuses its tenth thread) runs none of the queue's jobs:
/// the workers started before the refusal took jobs, ran them and completed them until the
/// failed start stopped them, so the caller, told the pool had not started, found part of its
/// queue done (or failed, retried, dead-lettered) by a pool it never had. Whether a worker
/// reached the queue before the refusal was a race, which that code lost in about 22 runs of
/// 25: five runs.
#[cfg(target_os = "linux")]
#[test]
fn a_pool_that_fails_to_start_runs_no_job() {
    if !spawn_support::in_child("a_pool_that_fails_to_start_runs_no_job", 5) {
        return;
    }
    const JOBS: usize = 1000;
    let queue = queue_with_immediate_retries(0);
    for i in 0..JOBS {
        let job = Job::new(JobType::Indexing, i.to_le_bytes().to_vec());
        queue.submit(job).expect("submit");
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let builder = {
        let runs = Arc::clone(&runs);
        WorkerPool::builder(queue.clone())
            .handler(JobType::Indexing, move |_| {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(JobResult::default())
            })
            .concurrency(ConcurrencyLimit::new(ConcurrencyLimit::MAX).expect("valid"))
    };
    let started = spawn_support::with_room_for_threads(9, || builder.start());
    // Some threads started: the refusal came after them.
    assert!(
        matches!(&started, Err(PoolError::Spawn { index, .. }) if *index > 0),
        "{started:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let stats = queue.stats();
    assert_eq!(
        (stats.queued, stats.processing, stats.completed),
        (JOBS, 0, 0)
    );
}

#[test]
fn dropping_a_pool_stops_its_threads() {
    let queue = queue_with_immediate_retries(0);
    let ran = Arc::new(AtomicBool::new(false));
    let pool = {
        let ran = Arc::clone(&ran);
        WorkerPool::builder(queue.clone())
            .handler(JobType::Indexing, move |_| {
                ran.store(true, Ordering::SeqCst);
                Ok(JobResult::default())
            })
            .start()
            .expect("start")
    };
    drop(pool);
    queue
        .submit(Job::new(JobType::Indexing, &b""[..]))
        .expect("submit");
    assert_eq!(queue.stats().queued, 1, "nobody takes it any more");
    assert!(!ran.load(Ordering::SeqCst));
}

/// A handler may shut down or drop the pool it runs in: the call returns instead of
/// waiting for its own thread (which panicked, "Resource deadlock avoided") or, in a drain,
/// for workers that wait for the caller's job (which never returned). The pool stops as
/// asked (a drain runs the jobs submitted while the caller's job still runs, a stop does
/// not), the caller's job completes, and every worker thread ends on its own.
#[test]
fn a_handler_can_shut_down_its_own_pool() {
    for mode in [Some(Shutdown::Drain), Some(Shutdown::Now), None] {
        let queue = queue_with_immediate_retries(0);
        let slot: Arc<Mutex<Option<WorkerPool>>> = Arc::default();
        // Sent once the shutdown returned, with the jobs submitted after it; disconnected
        // once the handler is dropped, which happens when the last worker thread has ended.
        let (tx, rx) = mpsc::channel();
        let (in_handler, in_queue) = (Arc::clone(&slot), queue.clone());
        let pool = WorkerPool::builder(queue.clone())
            .handler(JobType::Indexing, move |_| {
                let pool = in_handler.lock().take();
                if let Some(pool) = pool {
                    match mode {
                        Some(mode) => drop(pool.shutdown(mode)),
                        None => drop(pool),
                    }
                    let later: Vec<JobId> = (0..3)
                        .map(|_| in_queue.submit(Job::new(JobType::Indexing, &b""[..])))
                        .collect::<Result<_, _>>()
                        .expect("submit");
                    let _ = tx.send(later);
                }
                Ok(JobResult::default())
            })
            .concurrency(ConcurrencyLimit::new(2).expect("valid"))
            .start()
            .expect("start");
        *slot.lock() = Some(pool);
        let id = queue
            .submit(Job::new(JobType::Indexing, &b""[..]))
            .expect("submit");
        // Deadlock guards only: both come at once.
        let guard = Duration::from_secs(30);
        let later = rx.recv_timeout(guard).expect("the shutdown returned");
        assert_eq!(
            rx.recv_timeout(guard),
            Err(mpsc::RecvTimeoutError::Disconnected),
            "{mode:?}: every worker thread ended"
        );
        assert_eq!(queue.status(id), Some(JobStatus::Completed), "{mode:?}");
        let want = match mode {
            Some(Shutdown::Drain) => JobStatus::Completed,
            _ => JobStatus::Queued,
        };
        for id in later {
            assert_eq!(queue.status(id), Some(want), "{mode:?}");
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Panic,
}

/// What one property-test run observed from inside the handlers.
#[derive(Default)]
struct Observed {
    in_flight: HashSet<JobId>,
    /// Every (job, attempt) that ran.
    runs: HashSet<(JobId, u32)>,
    /// Successful runs: (content group, job).
    successes: Vec<(u8, JobId)>,
    violations: Vec<String>,
}

const MAX_RETRIES: u32 = 2;

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Several workers, random failures and panics, identical jobs, concurrent cancels:
    /// every submitted job ends Completed, Failed (dead-lettered) or Cancelled; none runs
    /// twice (the lease outlives every run, so there is no expiry to excuse a re-run); none
    /// is lost; each content group is computed successfully at most once (not counting runs
    /// of jobs cancelled mid-run, whose results are refused).
    #[test]
    fn every_job_ends_in_a_terminal_state_exactly_once(
        workers in 2usize..=6,
        // Per content group, the outcome of attempts 0, 1, 2.
        groups in prop::collection::vec(
            prop::array::uniform3(prop_oneof![
                3 => Just(Outcome::Ok), 1 => Just(Outcome::Fail), 1 => Just(Outcome::Panic)
            ]),
            4..24,
        ),
        job_groups in prop::collection::vec(any::<prop::sample::Index>(), 20..150),
        cancels in prop::collection::vec(any::<prop::sample::Index>(), 0..15),
    ) {
        quiet_injected_panics();
        let queue = JobQueue::builder()
            .retry(RetryConfig::fixed(MAX_RETRIES, Duration::ZERO))
            .lease(Duration::from_secs(600))
            .cache(Cache::builder().max_bytes(1 << 20).build().expect("valid"))
            .build()
            .expect("valid");
        let observed = Arc::new(Mutex::new(Observed::default()));
        let group_of: Arc<Mutex<HashMap<JobId, u8>>> = Arc::default();
        let pool = {
            let (observed, group_of, groups) =
                (Arc::clone(&observed), Arc::clone(&group_of), groups.clone());
            WorkerPool::builder(queue.clone())
                .handler(JobType::Transcription, move |ctx| {
                    let id = ctx.job_id();
                    let group = group_of.lock()[&id];
                    {
                        let mut o = observed.lock();
                        if !o.in_flight.insert(id) {
                            o.violations.push(format!("{id} ran concurrently with itself"));
                        }
                        if !o.runs.insert((id, ctx.attempt())) {
                            o.violations.push(format!("{id} attempt {} ran twice", ctx.attempt()));
                        }
                    }
                    std::thread::yield_now();
                    let outcome = groups[usize::from(group)][ctx.attempt() as usize];
                    let mut o = observed.lock();
                    o.in_flight.remove(&id);
                    match outcome {
                        Outcome::Ok => {
                            o.successes.push((group, id));
                            Ok(vec![group].into())
                        }
                        Outcome::Fail => Err("injected failure".into()),
                        Outcome::Panic => {
                            drop(o);
                            std::panic::panic_any(INJECTED)
                        }
                    }
                })
                .concurrency(ConcurrencyLimit::new(workers).expect("1..=10"))
                .start()
                .expect("start")
        };

        let mut submitted = Vec::new();
        for (n, pick) in job_groups.iter().enumerate() {
            let group = u8::try_from(pick.index(groups.len())).expect("< 24");
            let job = Job::transcription(&format!("{group:02x}").repeat(32), "en", &b"audio"[..])
                .expect("valid");
            group_of.lock().insert(job.id(), group);
            submitted.push((queue.submit(job).expect("capacity is ample"), group));
            if let Some(c) = cancels.get(n) {
                // Cancel some earlier job; it may already be finished.
                let (victim, _) = submitted[c.index(submitted.len())];
                let _ = queue.cancel(victim);
            }
        }
        let stats = pool.shutdown(Shutdown::Drain);

        let observed = observed.lock();
        prop_assert!(observed.violations.is_empty(), "{:?}", observed.violations);
        prop_assert!(observed.in_flight.is_empty());
        // A run of a job cancelled mid-run is wasted (its result is refused) and the group's
        // next job runs again; every other success is the group's only one.
        let mut successes: HashMap<u8, u32> = HashMap::new();
        for &(group, id) in &observed.successes {
            if queue.status(id) != Some(JobStatus::Cancelled) {
                *successes.entry(group).or_default() += 1;
            }
        }
        for (group, n) in successes {
            prop_assert_eq!(n, 1, "group {} computed successfully {} times", group, n);
        }
        let dead: HashSet<JobId> = queue.dead_letters().iter().map(Job::id).collect();
        let mut cancelled = 0;
        for &(id, group) in &submitted {
            let job = queue.get(id).expect("no job is lost");
            match job.status() {
                JobStatus::Completed => {
                    prop_assert_eq!(job.result().map(|r| r.as_bytes().to_vec()), Some(vec![group]));
                    // A group completes only if one of its attempts succeeds.
                    prop_assert!(groups[usize::from(group)].contains(&Outcome::Ok));
                }
                JobStatus::Failed => {
                    prop_assert!(dead.contains(&id), "{} failed but is not dead-lettered", id);
                    prop_assert!(!groups[usize::from(group)].contains(&Outcome::Ok));
                }
                JobStatus::Cancelled => cancelled += 1,
                other => prop_assert!(false, "{} ended {}", id, other),
            }
            // A job runs at most once per attempt, and at most 1 + MAX_RETRIES attempts.
            let runs = observed.runs.iter().filter(|(j, _)| *j == id).count();
            prop_assert!(runs <= 1 + MAX_RETRIES as usize);
        }
        let qs = queue.stats();
        prop_assert_eq!((qs.queued, qs.processing), (0, 0));
        prop_assert_eq!(qs.cancelled, cancelled);
        prop_assert_eq!(qs.submitted, submitted.len() as u64);
        prop_assert_eq!(stats.executed as usize, observed.runs.len());
        // No lease expired, so an outcome is refused only when its job was cancelled mid-run.
        prop_assert!(stats.stale <= cancelled, "{} refused outcomes", stats.stale);
    }
}

/// A draining pool waits for a running job it could see again (one of its types may fail and
/// come back for a retry), not for a job of a type it has no handler for: a pool for one type
/// shuts down while another pool's long job of another type still runs.
#[test]
fn a_draining_pool_does_not_wait_for_another_pools_job_of_another_type() {
    let queue = queue_with_immediate_retries(0);
    let (started_tx, started_rx) = mpsc::channel();
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let finish_rx = Mutex::new(finish_rx);
    let long = WorkerPool::builder(queue.clone())
        .handler(JobType::Transcription, move |_| {
            started_tx.send(()).expect("test waits");
            finish_rx.lock().recv().expect("test finishes it");
            Ok(Bytes::from_static(b"transcript").into())
        })
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let short = WorkerPool::builder(queue.clone())
        .handler(JobType::Summarization, |_| Ok(JobResult::default()))
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let transcription = queue
        .submit(Job::new(JobType::Transcription, &b"audio"[..]))
        .expect("submit");
    let summary = queue
        .submit(Job::new(JobType::Summarization, &b"text"[..]))
        .expect("submit");
    started_rx.recv().expect("the long job runs");
    let (done_tx, done_rx) = mpsc::channel();
    let drain = std::thread::spawn(move || {
        let stats = short.shutdown(Shutdown::Drain);
        let _ = done_tx.send(());
        stats
    });
    // A correct drain returns at once; a wrong one waits for the long job, which only ends
    // once this test lets it (after the bound: the test then fails rather than hangs).
    let drained = done_rx.recv_timeout(Duration::from_secs(10)).is_ok();
    finish_tx.send(()).expect("the long handler waits");
    let stats = drain.join().expect("no panic");
    assert!(
        drained,
        "the drain waited for a job of a type it does not run"
    );
    assert_eq!(stats.completed, 1);
    assert_eq!(queue.status(summary), Some(JobStatus::Completed));
    assert_eq!(long.shutdown(Shutdown::Drain).completed, 1);
    assert_eq!(queue.status(transcription), Some(JobStatus::Completed));
}

/// A panic payload of the handler's own type whose drop panics in turn.
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        std::panic::panic_any(INJECTED);
    }
}

/// A handler's panic payload is the handler's value, and dropping it runs the handler's
/// code: a payload whose drop panics must fail the job, as any panic does, and not end the
/// worker. Before the fix the worker failed the job, then dropped the payload in its loop,
/// and that second panic unwound out of the thread: with one worker, the pool ran nothing
/// more (`executed` 1, both jobs left `Queued`), and the drain returned as if done.
#[test]
fn a_panic_payload_whose_drop_panics_fails_the_job_not_the_worker() {
    quiet_injected_panics();
    let queue = queue_with_immediate_retries(1);
    let bomb = queue
        .submit(Job::new(JobType::Indexing, &b"bomb"[..]))
        .expect("submit");
    let plain = queue
        .submit(Job::new(JobType::Indexing, &b"plain"[..]))
        .expect("submit");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, |ctx| {
            if ctx.payload().as_bytes().as_ref() == b"bomb" && ctx.attempt() == 0 {
                std::panic::panic_any(PanicsWhenDropped);
            }
            Ok(Bytes::from_static(b"indexed").into())
        })
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.panicked, stats.completed), (3, 1, 2));
    assert_eq!(queue.status(bomb), Some(JobStatus::Completed));
    assert_eq!(queue.status(plain), Some(JobStatus::Completed));
    let retried = queue.get(bomb).expect("known");
    assert_eq!(retried.retry_count(), 1);
}

/// A queue whose leases last a minute: a drain that waits for a job held outside the pool
/// waits about that long.
fn queue_with_a_long_lease() -> JobQueue {
    JobQueue::builder()
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .lease(Duration::from_secs(60))
        .build()
        .expect("valid")
}

/// Waits up to 10 s for `done`; on a timeout cancels `held`, the job the drain wrongly waits
/// for, so that the test fails instead of hanging for the rest of its lease. Whether the
/// drain returned in time.
fn drained_in_time(done: &mpsc::Receiver<PoolStats>, queue: &JobQueue, held: JobId) -> bool {
    let in_time = done.recv_timeout(Duration::from_secs(10)).is_ok();
    if !in_time {
        let _ = queue.cancel(held);
    }
    in_time
}

/// A drain called by a thread that holds a lease itself (here a host thread that took a job
/// of a type the pool runs) returns without waiting for that job, and the caller then
/// completes it. Before the fix the pool's workers waited for every running job of their
/// types, and this one could only end after the drain returned or once its lease ran out (a
/// minute here).
#[test]
fn a_drain_called_by_a_thread_holding_a_lease_does_not_wait_for_it() {
    let queue = queue_with_a_long_lease();
    let held = queue
        .submit(Job::new(JobType::Indexing, &b"held"[..]))
        .expect("submit");
    let lease = queue.try_next(&WorkerId::new("host")).expect("ready");
    let other = queue
        .submit(Job::new(JobType::Indexing, &b"other"[..]))
        .expect("submit");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, |_| Ok(JobResult::default()))
        .concurrency(ConcurrencyLimit::new(2).expect("valid"))
        .start()
        .expect("start");
    let (done_tx, done_rx) = mpsc::channel();
    let host = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            let _ = done_tx.send(pool.shutdown(Shutdown::Drain));
            queue.complete(&lease, Bytes::from_static(b"by the host").into())
        })
    };
    let drained = drained_in_time(&done_rx, &queue, held);
    let completed = host.join().expect("no panic");
    assert!(drained, "the drain waited for its caller's own job");
    assert!(completed.is_ok(), "{completed:?}");
    assert_eq!(queue.status(held), Some(JobStatus::Completed));
    assert_eq!(queue.status(other), Some(JobStatus::Completed));
}

/// The same from a handler: a handler of one pool that drains another pool running its own
/// job's type returns from the drain, and its job completes. Before the fix the drain waited
/// for the handler's own job, as above.
#[test]
fn a_handler_can_drain_another_pool_that_runs_its_jobs_type() {
    let queue = queue_with_a_long_lease();
    let second: Arc<Mutex<Option<WorkerPool>>> = Arc::default();
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let (started_tx, done_tx) = (Mutex::new(started_tx), Mutex::new(done_tx));
    let slot = Arc::clone(&second);
    let first = WorkerPool::builder(queue.clone())
        .handler(JobType::Summarization, move |_| {
            let _ = started_tx.lock().send(());
            let bound = std::time::Instant::now() + Duration::from_secs(30);
            let pool = loop {
                match slot.lock().take() {
                    None if std::time::Instant::now() < bound => {}
                    pool => break pool,
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            if let Some(pool) = pool {
                let _ = done_tx.lock().send(pool.shutdown(Shutdown::Drain));
            }
            Ok(JobResult::default())
        })
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let stopper = queue
        .submit(Job::new(JobType::Summarization, &b"stop"[..]))
        .expect("submit");
    started_rx.recv().expect("the first pool runs the stopper");
    // The first pool's one worker is busy: the second pool runs this one.
    let summary = queue
        .submit(Job::new(JobType::Summarization, &b"text"[..]))
        .expect("submit");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Summarization, |_| Ok(JobResult::default()))
        .handler(JobType::Indexing, |_| Ok(JobResult::default()))
        .concurrency(ConcurrencyLimit::new(2).expect("valid"))
        .start()
        .expect("start");
    *second.lock() = Some(pool);
    let drained = drained_in_time(&done_rx, &queue, stopper);
    let first_stats = first.shutdown(Shutdown::Drain);
    assert!(drained, "the drain waited for its caller's own job");
    assert_eq!(queue.status(stopper), Some(JobStatus::Completed));
    assert_eq!(queue.status(summary), Some(JobStatus::Completed));
    assert_eq!(first_stats.completed, 1);
}

/// A guard for `Shutdown::Now` under load (the property test above drains): while a host
/// thread keeps submitting, four workers whose handlers fail, panic, give their job back on
/// the stop or complete it are stopped mid-stream. No run's outcome is lost or counted
/// twice, no job is left Processing, none ran an attempt twice (a job given back is run
/// again at the same attempt, and that is not counted), and a later pool finishes them all.
#[test]
fn shutdown_now_under_load_loses_no_job_and_runs_none_twice() {
    quiet_injected_panics();
    for round in 0..20u64 {
        let queue = queue_with_immediate_retries(2);
        let runs: Arc<Mutex<HashSet<(JobId, u32)>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let turn = Arc::new(std::sync::atomic::AtomicU64::new(round));
        let start = || {
            let (runs, violations, turn) = (
                Arc::clone(&runs),
                Arc::clone(&violations),
                Arc::clone(&turn),
            );
            WorkerPool::builder(queue.clone())
                .handler(JobType::Indexing, move |ctx| {
                    let run = (ctx.job_id(), ctx.attempt());
                    if !runs.lock().insert(run) {
                        violations.lock().push(format!("{run:?} ran twice"));
                    }
                    std::thread::yield_now();
                    match turn.fetch_add(7, Ordering::Relaxed) % 5 {
                        0 => Err("injected failure".into()),
                        1 => std::panic::panic_any(INJECTED),
                        2 if ctx.stop_requested() => {
                            runs.lock().remove(&run);
                            Err(JobError::Interrupted)
                        }
                        _ => Ok(JobResult::default()),
                    }
                })
                .concurrency(ConcurrencyLimit::new(4).expect("valid"))
                .start()
                .expect("start")
        };
        let pool = start();
        let stop = Arc::new(AtomicBool::new(false));
        let submitter = {
            let (queue, stop) = (queue.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                while ids.len() < 400 && (ids.len() < 50 || !stop.load(Ordering::Relaxed)) {
                    ids.push(
                        queue
                            .submit(Job::new(JobType::Indexing, &b""[..]))
                            .expect("submit"),
                    );
                }
                ids
            })
        };
        while pool.stats().executed < 20 && !submitter.is_finished() {
            std::thread::yield_now();
        }
        let stats = pool.shutdown(Shutdown::Now);
        stop.store(true, Ordering::Relaxed);
        let ids = submitter.join().expect("submitter");
        let counted = stats.completed + stats.failed + stats.released + stats.stale;
        assert_eq!((stats.executed, stats.stale), (counted, 0), "{stats:?}");
        assert_eq!(queue.stats().processing, 0, "round {round}");
        start().shutdown(Shutdown::Drain);
        for id in ids {
            let status = queue.status(id);
            assert!(
                matches!(status, Some(JobStatus::Completed | JobStatus::Failed)),
                "round {round}: {id} is {status:?}"
            );
        }
        assert_eq!(*violations.lock(), Vec::<String>::new());
    }
}
