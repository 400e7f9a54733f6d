//! `JobQueue::wait`: a caller blocks until a job ends (completed, failed for good, cancelled)
//! and gets it as it ended, through retries, lease expiries, coalescing, retention and
//! resubmits; a waiter that gives up leaves nothing behind.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use memocache::{
    Cache, ConcurrencyLimit, Job, JobError, JobId, JobQueue, JobQueueBuilder, JobResult, JobStatus,
    JobType, ManualClock, RetryConfig, Shutdown, WaitError, WorkerId, WorkerPool,
};

mod panic_support;
use panic_support::{INJECTED, quiet_injected_panics};

const SEC: Duration = Duration::from_secs(1);
/// Longer than any of these tests should wait: reaching it is a failure, not a timing.
const LONG: Duration = Duration::from_secs(30);

fn w(name: &str) -> WorkerId {
    WorkerId::new(name)
}

fn plain() -> Job {
    Job::new(JobType::Indexing, &b"x"[..])
}

fn transcription(n: u8) -> Job {
    Job::transcription(&format!("{n:02x}").repeat(32), "en", &b"audio"[..]).expect("valid key")
}

/// A queue builder on `clock`.
fn on(clock: &ManualClock) -> JobQueueBuilder {
    JobQueue::builder().clock(clock.clone())
}

/// A queue on `clock` whose jobs are retried `retries` times at once (no backoff).
fn retrying(clock: &ManualClock, retries: u32) -> JobQueueBuilder {
    on(clock).retry(RetryConfig::fixed(retries, Duration::ZERO))
}

fn submit(queue: &JobQueue, job: Job) -> JobId {
    queue.submit(job).expect("submit")
}

fn result(bytes: &'static [u8]) -> JobResult {
    bytes.to_vec().into()
}

fn result_of(job: &Job) -> Option<&[u8]> {
    job.result().map(|r| &r.as_bytes()[..])
}

/// Waits for job `id` on a thread of its own.
fn waiter(queue: &JobQueue, id: JobId) -> JoinHandle<Result<Job, WaitError>> {
    let queue = queue.clone();
    thread::spawn(move || queue.wait(id, LONG))
}

/// Returns once `n` callers are blocked in `wait` (the queue counts them as it registers
/// them, under its lock, so a job that ends after this is an end they wait for).
fn until_waiting(queue: &JobQueue, n: usize) {
    while queue.stats().waiters != n {
        thread::yield_now();
    }
}

fn joined(handle: JoinHandle<Result<Job, WaitError>>) -> Job {
    handle
        .join()
        .expect("the waiter did not panic")
        .expect("the wait returned the job")
}

#[test]
fn a_wait_returns_the_job_once_a_worker_completes_it() {
    let clock = ManualClock::new();
    let queue = on(&clock).build().expect("valid");
    let id = submit(&queue, plain());
    let waiters: Vec<_> = (0..3).map(|_| waiter(&queue, id)).collect();
    until_waiting(&queue, 3);
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(queue.stats().waiters, 3, "a take is not an end");
    queue.complete(&lease, result(b"done")).expect("current");
    for handle in waiters {
        let job = joined(handle);
        assert_eq!((job.id(), job.status()), (id, JobStatus::Completed));
        assert_eq!(result_of(&job), Some(&b"done"[..]));
    }
    assert_eq!(queue.stats().waiters, 0);
}

#[test]
fn a_wait_for_a_job_that_has_ended_returns_it_at_once() {
    let clock = ManualClock::new();
    let queue = retrying(&clock, 0).build().expect("valid");
    let completed = submit(&queue, plain());
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.complete(&lease, result(b"ok")).expect("current");
    let failed = submit(&queue, plain());
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "boom").expect("current");
    let cancelled = submit(&queue, plain());
    queue.cancel(cancelled).expect("queued");
    for (id, status) in [
        (completed, JobStatus::Completed),
        (failed, JobStatus::Failed),
        (cancelled, JobStatus::Cancelled),
    ] {
        let job = queue.wait(id, Duration::ZERO).expect("ended");
        assert_eq!(job.status(), status);
    }
    assert_eq!(
        queue
            .wait(failed, Duration::ZERO)
            .expect("ended")
            .error_message(),
        Some("boom")
    );
}

#[test]
fn a_memo_hit_is_completed_when_its_submit_returns() {
    let clock = ManualClock::new();
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let queue = on(&clock).cache(cache).build().expect("valid");
    submit(&queue, transcription(1));
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.complete(&lease, result(b"text")).expect("current");
    let hit = submit(&queue, transcription(1));
    let job = queue
        .wait(hit, Duration::ZERO)
        .expect("a memo hit has ended");
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(result_of(&job), Some(&b"text"[..]));
}

#[test]
fn an_unknown_id_is_not_found_and_says_so() {
    let queue = JobQueue::builder().build().expect("valid");
    let id = plain().id();
    let error = queue.wait(id, SEC).expect_err("never submitted");
    assert!(matches!(error, WaitError::NotFound(e) if e == id));
    assert_eq!(
        error.to_string(),
        format!(
            "job {id} is not known to this queue: never submitted, or finished and forgotten \
             before the wait began"
        )
    );
    assert_eq!(queue.stats().waiters, 0);
}

#[test]
fn a_wait_lasts_through_retries_and_lease_expiries_until_the_last_attempt_fails() {
    let clock = ManualClock::new();
    let queue = retrying(&clock, 2).lease(10 * SEC).build().expect("valid");
    let id = submit(&queue, plain());
    let handle = waiter(&queue, id);
    until_waiting(&queue, 1);
    // Attempt 1 fails and is retried.
    let lease = queue.try_next(&w("a")).expect("ready");
    queue.fail(&lease, "first").expect("current");
    // Attempt 2's lease runs out, seen by this call's maintenance: retried again.
    let _lost = queue.try_next(&w("b")).expect("the retry is ready");
    clock.advance(11 * SEC);
    assert_eq!(queue.stats().lease_expirations, 1);
    assert_eq!(queue.stats().waiters, 1, "a retried attempt is not an end");
    // Attempt 3 is the last: its failure ends the job.
    let lease = queue.try_next(&w("c")).expect("the second retry is ready");
    queue.fail(&lease, "last").expect("current");
    let job = joined(handle);
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!((job.retry_count(), job.error_message()), (2, Some("last")));
    assert_eq!(queue.stats().waiters, 0);
}

#[test]
fn a_waiter_sees_the_last_lease_run_out_without_another_call() {
    let clock = ManualClock::new();
    let queue = retrying(&clock, 0).lease(10 * SEC).build().expect("valid");
    let id = submit(&queue, plain());
    let _lost = queue.try_next(&w("gone")).expect("ready");
    let handle = waiter(&queue, id);
    until_waiting(&queue, 1);
    // No call reaches the queue from here on: the waiter's own look at the deadline (a
    // manual clock moves unseen, so within its 50 ms re-check) takes the lease back.
    clock.advance(11 * SEC);
    let job = joined(handle);
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(
        job.error_message(),
        Some("lease expired on worker gone"),
        "{job:?}"
    );
}

#[test]
fn a_follower_ends_with_its_leader() {
    let clock = ManualClock::new();
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let queue = retrying(&clock, 0).cache(cache).build().expect("valid");
    for (n, outcome) in [(1, Ok(b"text")), (2, Err("bad audio"))] {
        let leader = submit(&queue, transcription(n));
        let follower = submit(&queue, transcription(n));
        assert_eq!(queue.stats().coalesced_waiting, 1);
        let handle = waiter(&queue, follower);
        until_waiting(&queue, 1);
        let lease = queue.try_next(&w("w")).expect("the leader is ready");
        assert_eq!(lease.job_id(), leader);
        match outcome {
            Ok(text) => queue.complete(&lease, result(text)).expect("current"),
            Err(error) => queue.fail(&lease, error).expect("current"),
        }
        let job = joined(handle);
        assert_eq!(job.id(), follower);
        match outcome {
            Ok(text) => {
                assert_eq!(job.status(), JobStatus::Completed);
                assert_eq!(result_of(&job), Some(&text[..]));
            }
            Err(_) => {
                assert_eq!(job.status(), JobStatus::Failed);
                let message = job.error_message().expect("a failure has a message");
                assert!(message.contains("bad audio"), "{message}");
            }
        }
    }
}

#[test]
fn a_waiter_gets_its_job_even_if_the_queue_forgets_it_at_once() {
    let clock = ManualClock::new();
    let queue = retrying(&clock, 0)
        .retain_finished(0)
        .dead_letter_capacity(0)
        .build()
        .expect("valid");
    let completed = submit(&queue, plain());
    let failed = submit(&queue, plain());
    let cancelled = submit(&queue, plain());
    let handles: Vec<_> = [completed, failed, cancelled]
        .iter()
        .map(|&id| waiter(&queue, id))
        .collect();
    until_waiting(&queue, 3);
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.complete(&lease, result(b"kept")).expect("current");
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "gone").expect("current");
    queue.cancel(cancelled).expect("queued");
    let ended: Vec<_> = handles.into_iter().map(joined).collect();
    let statuses: Vec<_> = ended.iter().map(|j| (j.id(), j.status())).collect();
    assert_eq!(
        statuses,
        [
            (completed, JobStatus::Completed),
            (failed, JobStatus::Failed),
            (cancelled, JobStatus::Cancelled),
        ]
    );
    assert_eq!(result_of(&ended[0]), Some(&b"kept"[..]));
    // Forgotten before these waits began: unknown, as `get` has them.
    for id in [completed, failed, cancelled] {
        assert_eq!(queue.get(id).map(|j| j.status()), None);
        assert!(matches!(queue.wait(id, SEC), Err(WaitError::NotFound(e)) if e == id));
    }
    assert_eq!(queue.stats().waiters, 0);
}

#[test]
fn a_wait_begun_before_a_dead_letter_is_resubmitted_returns_the_failure() {
    let clock = ManualClock::new();
    let queue = retrying(&clock, 0).build().expect("valid");
    let id = submit(&queue, plain());
    let handle = waiter(&queue, id);
    until_waiting(&queue, 1);
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "first run").expect("current");
    // Most likely before the waiter wakes: the end it waited for was the failure.
    queue.resubmit_dead_letter(id).expect("dead-lettered");
    let job = joined(handle);
    assert_eq!(
        (job.status(), job.error_message()),
        (JobStatus::Failed, Some("first run"))
    );
    // A wait begun after the resubmit waits for the new run.
    let error = queue.wait(id, Duration::ZERO).expect_err("queued again");
    assert!(matches!(
        error,
        WaitError::TimedOut { id: e, status: JobStatus::Queued, .. } if e == id
    ));
    let handle = waiter(&queue, id);
    until_waiting(&queue, 1);
    let lease = queue.try_next(&w("w")).expect("ready again");
    queue
        .complete(&lease, result(b"second run"))
        .expect("current");
    let job = joined(handle);
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(result_of(&job), Some(&b"second run"[..]));
}

#[test]
fn a_timed_out_waiter_leaves_nothing_behind_and_others_wait_on() {
    let clock = ManualClock::new();
    let queue = on(&clock).build().expect("valid");
    let id = submit(&queue, plain());
    let patient = waiter(&queue, id);
    until_waiting(&queue, 1);
    let error = queue
        .wait(id, Duration::from_millis(5))
        .expect_err("nothing runs the job");
    assert!(matches!(
        error,
        WaitError::TimedOut { id: e, status: JobStatus::Queued, timeout }
            if e == id && timeout == Duration::from_millis(5)
    ));
    assert_eq!(
        error.to_string(),
        format!("job {id} did not end within 5ms: it is still QUEUED")
    );
    assert_eq!(
        queue.stats().waiters,
        1,
        "only the one that gave up is gone"
    );
    let lease = queue.try_next(&w("w")).expect("ready");
    let error = queue.wait(id, Duration::ZERO).expect_err("running");
    assert!(matches!(
        error,
        WaitError::TimedOut {
            status: JobStatus::Processing,
            ..
        }
    ));
    queue.complete(&lease, result(b"late")).expect("current");
    assert_eq!(joined(patient).status(), JobStatus::Completed);
    assert_eq!(queue.stats().waiters, 0);
}

#[test]
fn a_waiter_timing_out_as_its_job_ends_gets_the_job_or_a_live_status_never_a_lost_end() {
    let queue = JobQueue::builder().build().expect("valid");
    let mut ended_in_time = 0;
    for round in 0..200u32 {
        let id = submit(&queue, plain());
        let lease = queue.try_next(&w("w")).expect("ready");
        let start = Arc::new(Barrier::new(2));
        let handle = {
            let (queue, start) = (queue.clone(), Arc::clone(&start));
            // Timeouts spread over the time a completion takes, so that both orders happen,
            // and one round in twenty that cannot time out.
            let timeout = match round % 20 {
                19 => LONG,
                r => Duration::from_micros(u64::from(r) * 5),
            };
            thread::spawn(move || {
                start.wait();
                queue.wait(id, timeout)
            })
        };
        start.wait();
        queue.complete(&lease, result(b"r")).expect("current");
        match handle.join().expect("the waiter did not panic") {
            Ok(job) => {
                assert_eq!(job.status(), JobStatus::Completed);
                ended_in_time += 1;
            }
            Err(WaitError::TimedOut { status, .. }) => {
                assert!(!status.is_terminal(), "timed out on an ended job: {status}");
            }
            Err(e) => panic!("unexpected {e}"),
        }
        // The end was handed over or the waiter uncounted: no watch is left either way, and
        // a wait now returns the job.
        assert_eq!(queue.stats().waiters, 0);
        assert_eq!(
            queue.wait(id, Duration::ZERO).expect("ended").status(),
            JobStatus::Completed
        );
    }
    assert!(ended_in_time > 0);
}

/// What a stress job's handler does on attempt `attempt`, by the first payload byte.
fn stress_handler(payload: &[u8], attempt: u32) -> Result<JobResult, JobError> {
    match (payload.first().copied().unwrap_or(0) % 4, attempt) {
        // Succeeds at once.
        (0, _) => Ok(result(b"at once")),
        // Fails once, then succeeds on its retry.
        (1, 0) => Err("flaky".into()),
        (1, _) => Ok(result(b"on retry")),
        // Panics on its first attempt, then succeeds.
        (2, 0) => std::panic::panic_any(INJECTED),
        (2, _) => Ok(result(b"after a panic")),
        // Always fails: dead-lettered once its retries are spent.
        _ => Err("always".into()),
    }
}

#[test]
fn many_waiters_on_many_jobs_get_each_jobs_true_end_under_retries_panics_and_cancels() {
    quiet_injected_panics();
    let queue = JobQueue::builder()
        .retry(RetryConfig::fixed(1, Duration::ZERO))
        .cache(Cache::builder().max_bytes(1 << 20).build().expect("valid"))
        .build()
        .expect("valid");
    // Plain jobs of every kind, and transcriptions of three audios, coalesced.
    let jobs = (0..240u8).map(|n| {
        if n % 5 == 0 {
            Job::transcription(&format!("{:02x}", n % 15).repeat(32), "en", vec![n])
                .expect("valid key")
        } else {
            Job::new(JobType::Indexing, vec![n])
        }
    });
    let ids: Vec<JobId> = jobs.map(|job| submit(&queue, job)).collect();
    // Four threads wait, two for each job, in other orders.
    let waiters: Vec<_> = (0..4)
        .map(|t| {
            let queue = queue.clone();
            let mut mine: Vec<JobId> = ids.iter().copied().skip(t % 2).step_by(2).collect();
            if t >= 2 {
                mine.reverse();
            }
            thread::spawn(move || {
                mine.into_iter()
                    .map(|id| (id, queue.wait(id, LONG)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Every eleventh job is cancelled before any runs; every seventh is cancelled while the
    // pool runs, if it has not ended by then.
    let cancelled_first = ids
        .iter()
        .step_by(11)
        .filter(|&&id| queue.cancel(id).is_ok());
    let cancelled_first = cancelled_first.count();
    let canceller = {
        let (queue, ids) = (queue.clone(), ids.clone());
        thread::spawn(move || {
            ids.iter()
                .skip(3)
                .step_by(7)
                .filter(|&&id| queue.cancel(id).is_ok())
                .count()
        })
    };
    let pool = WorkerPool::builder(queue.clone())
        .concurrency(ConcurrencyLimit::new(3).expect("valid"))
        .handler(JobType::Indexing, |ctx| {
            stress_handler(&ctx.payload().as_bytes()[..], ctx.attempt())
        })
        .handler(JobType::Transcription, |ctx| {
            stress_handler(&ctx.payload().as_bytes()[..], ctx.attempt())
        })
        .start()
        .expect("valid");
    let mut ends: HashMap<JobId, Vec<Job>> = HashMap::new();
    for handle in waiters {
        for (id, outcome) in handle.join().expect("the waiter did not panic") {
            let job = outcome.unwrap_or_else(|e| panic!("wait for {id}: {e}"));
            ends.entry(id).or_default().push(job);
        }
    }
    let cancelled = cancelled_first + canceller.join().expect("the canceller did not panic");
    pool.shutdown(Shutdown::Drain);
    let stats = queue.stats();
    assert_eq!(stats.waiters, 0, "no waiter state is left");
    assert_eq!(stats.cancelled, cancelled as u64);
    assert!(cancelled > 0);
    assert_eq!(stats.completed + stats.failed + stats.cancelled, 240);
    assert!(
        stats.retries > 0 && stats.failed > 0 && stats.coalesced > 0,
        "{stats:?}"
    );
    assert_eq!(ends.len(), 240);
    for (id, seen) in &ends {
        // The queue keeps every job here (240 is within its retention): its record is the
        // job's true end, and every wait for it returned that.
        let truth = queue.get(*id).expect("retained");
        assert!(truth.status().is_terminal(), "{truth:?}");
        assert_eq!(seen.len(), 2);
        for job in seen {
            assert_eq!(
                (job.id(), job.status(), job.result(), job.error_message()),
                (*id, truth.status(), truth.result(), truth.error_message())
            );
            assert_eq!(job.retry_count(), truth.retry_count());
        }
    }
}

#[test]
fn a_job_still_in_the_intake_can_be_waited_for() {
    let queue = JobQueue::builder().build().expect("valid");
    // Submitted on the fast path: the wait's lock drains it first.
    let id = submit(&queue, plain());
    let error = queue.wait(id, Duration::ZERO).expect_err("queued");
    assert!(matches!(
        error,
        WaitError::TimedOut {
            status: JobStatus::Queued,
            ..
        }
    ));
}

#[test]
fn a_clone_submitted_again_after_its_job_was_forgotten_is_waited_for_afresh() {
    let clock = ManualClock::new();
    let queue = on(&clock).retain_finished(0).build().expect("valid");
    let original = plain();
    let clone = original.clone();
    let id = submit(&queue, original);
    let handle = waiter(&queue, id);
    until_waiting(&queue, 1);
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.complete(&lease, result(b"first")).expect("current");
    // The first job is forgotten at once; its clone is a new job under the same id.
    assert_eq!(submit(&queue, clone), id);
    assert_eq!(result_of(&joined(handle)), Some(&b"first"[..]));
    let error = queue
        .wait(id, Duration::ZERO)
        .expect_err("the clone has not run");
    assert!(matches!(
        error,
        WaitError::TimedOut {
            status: JobStatus::Queued,
            ..
        }
    ));
}
