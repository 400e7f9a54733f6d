//! An adversarial audit of JobQueue (issue #5): edge cases the behaviour tests in
//! `job_queue.rs` do not reach. Each test names the promise it holds the queue to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use memocache::{
    Cache, CacheKey, ConcurrencyLimit, Job, JobError, JobId, JobPriority, JobQueue,
    JobQueueBuilder, JobStatus, JobType, ManualClock, QueueError, RetryConfig, Shutdown, WorkerId,
    WorkerPool,
};

const SEC: Duration = Duration::from_secs(1);

fn builder(clock: &ManualClock) -> JobQueueBuilder {
    JobQueue::builder().clock(Arc::new(clock.clone()))
}

fn job(p: JobPriority) -> Job {
    Job::new(JobType::Indexing, &b"x"[..]).with_priority(p)
}

fn w(name: &str) -> WorkerId {
    WorkerId::new(name)
}

fn transcription(n: u8, p: JobPriority) -> Job {
    Job::transcription(&format!("{n:02x}").repeat(32), "en", &b"audio"[..])
        .expect("valid key")
        .with_priority(p)
}

#[test]
fn a_submit_sees_the_room_a_lease_expiry_freed() {
    let clock = ManualClock::new();
    let queue = builder(&clock)
        .capacity(1)
        .lease(SEC)
        .retry(RetryConfig::fixed(0, SEC))
        .build()
        .expect("valid");
    let hung = queue.submit(job(JobPriority::Low)).expect("submit");
    queue.try_next(&w("dies")).expect("ready");
    clock.advance(SEC);
    // The lease is over and the job has no retries: it is dead-lettered, so the queue holds
    // no queued or running job and has room, whether or not another call noticed first.
    let next = queue
        .submit(job(JobPriority::Low))
        .expect("the expired job no longer takes the only place");
    assert_eq!(queue.status(hung), Some(JobStatus::Failed));
    assert_eq!(queue.status(next), Some(JobStatus::Queued));
}

#[test]
fn an_identical_job_is_not_coalesced_onto_a_leader_whose_lease_ran_out() {
    let clock = ManualClock::new();
    let queue = builder(&clock)
        .lease(SEC)
        .retry(RetryConfig::fixed(0, SEC))
        .build()
        .expect("valid");
    let hung = queue
        .submit(transcription(1, JobPriority::Medium))
        .expect("submit");
    queue.try_next(&w("dies")).expect("ready");
    clock.advance(SEC);
    // The leader's lease is over and it has no retries left: it is dead. A new identical job
    // must run, not follow it into the dead letter without ever being tried.
    let fresh = queue
        .submit(transcription(1, JobPriority::Medium))
        .expect("submit");
    assert_eq!(queue.status(hung), Some(JobStatus::Failed));
    let lease = queue.try_next(&w("w")).expect("the new job runs");
    assert_eq!(lease.job_id(), fresh);
    queue
        .complete(&lease, b"text".to_vec().into())
        .expect("current");
    assert_eq!(queue.status(fresh), Some(JobStatus::Completed));
    let stats = queue.stats();
    assert_eq!((stats.coalesced, stats.failed, stats.completed), (0, 1, 1));
}

#[test]
fn aging_promotes_at_exactly_one_and_two_steps() {
    let step = 10 * SEC;
    let tick = Duration::from_nanos(1);
    let clock = ManualClock::new();
    let queue = builder(&clock).aging(Some(step)).build().expect("valid");
    let take = || {
        let lease = queue.try_next(&w("w")).expect("ready");
        queue
            .complete(&lease, Bytes::new().into())
            .expect("current");
        lease.job_id()
    };

    // One step: Low competes with Medium, and wins on age.
    let low = queue.submit(job(JobPriority::Low)).expect("submit");
    clock.advance(step - tick);
    let medium = queue.submit(job(JobPriority::Medium)).expect("submit");
    assert_eq!(take(), medium, "one tick short of a step, Low is still Low");
    queue.submit(job(JobPriority::Medium)).expect("submit");
    clock.advance(tick);
    assert_eq!(take(), low, "at one step, Low is Medium and older");
    take();

    // Two steps: Low competes with High.
    let low = queue.submit(job(JobPriority::Low)).expect("submit");
    clock.advance(2 * step - tick);
    let high = queue.submit(job(JobPriority::High)).expect("submit");
    assert_eq!(take(), high, "one tick short of two steps, Low is Medium");
    queue.submit(job(JobPriority::High)).expect("submit");
    clock.advance(tick);
    assert_eq!(take(), low, "at two steps, Low is High and older");
}

#[test]
fn a_raised_leader_keeps_its_age_against_younger_work() {
    let step = 10 * SEC;
    let clock = ManualClock::new();
    let queue = builder(&clock).aging(Some(step)).build().expect("valid");
    let leader = queue
        .submit(transcription(2, JobPriority::Low))
        .expect("submit");
    clock.advance(15 * SEC);
    // Of the leader's type, so that it shares the deque the leader is raised into.
    let younger = queue
        .submit(transcription(7, JobPriority::Medium))
        .expect("submit");
    clock.advance(4 * SEC);
    // A Medium follower raises the leader to Medium; it has waited 19 s.
    queue
        .submit(transcription(2, JobPriority::Medium))
        .expect("submit");
    clock.advance(2 * SEC);
    let high = queue.submit(job(JobPriority::High)).expect("submit");
    // At 21 s the leader has waited two steps: it competes with High work and is older than
    // it; the Medium job has waited 6 s and is still Medium. Raising must not cost the
    // leader its place among the oldest (the heads the take looks at).
    let order: Vec<JobId> = std::iter::from_fn(|| {
        let lease = queue.try_next(&w("w"))?;
        queue
            .complete(&lease, Bytes::new().into())
            .expect("current");
        Some(lease.job_id())
    })
    .collect();
    assert_eq!(order, [leader, high, younger]);
}

#[test]
fn followers_fail_with_a_leader_whose_lease_expiry_dead_letters_it() {
    let clock = ManualClock::new();
    let queue = builder(&clock)
        .lease(SEC)
        .retry(RetryConfig::fixed(1, SEC))
        .build()
        .expect("valid");
    let leader = queue
        .submit(transcription(3, JobPriority::Low))
        .expect("submit");
    let follower = queue
        .submit(transcription(3, JobPriority::Low))
        .expect("submit");
    // First expiry: a retry; the follower keeps waiting on the leader.
    queue.try_next(&w("hangs")).expect("ready");
    clock.advance(SEC);
    assert_eq!(queue.status(follower), Some(JobStatus::Queued));
    assert!(queue.try_next(&w("x")).is_none(), "the retry is delayed");
    clock.advance(SEC);
    let stale = queue.try_next(&w("hangs")).expect("the retry");
    assert_eq!(stale.job_id(), leader);
    // Second expiry: no retries left. Both end Failed, in the dead letter, none lost.
    clock.advance(SEC);
    assert!(matches!(
        queue.heartbeat(&stale),
        Err(QueueError::LeaseExpired { .. })
    ));
    assert_eq!(queue.status(leader), Some(JobStatus::Failed));
    assert_eq!(queue.status(follower), Some(JobStatus::Failed));
    let dead: Vec<_> = queue.dead_letters().iter().map(Job::id).collect();
    assert_eq!(dead, [leader, follower]);
    let stats = queue.stats();
    assert_eq!(
        (stats.queued, stats.coalesced_waiting, stats.processing),
        (0, 0, 0)
    );
    assert_eq!((stats.failed, stats.lease_expirations), (2, 2));
}

#[test]
fn a_cancelled_delayed_leader_hands_over_to_its_follower_at_once() {
    let clock = ManualClock::new();
    let queue = builder(&clock)
        .retry(RetryConfig::fixed(3, 60 * SEC))
        .build()
        .expect("valid");
    let leader = queue
        .submit(transcription(4, JobPriority::Low))
        .expect("submit");
    let follower = queue
        .submit(transcription(4, JobPriority::High))
        .expect("submit");
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "later").expect("current");
    assert_eq!(queue.stats().delayed, 1);
    queue.cancel(leader).expect("cancel the delayed leader");
    let lease = queue
        .try_next(&w("w"))
        .expect("the follower runs now, not after the leader's delay");
    assert_eq!(
        (lease.job_id(), lease.priority()),
        (follower, JobPriority::High)
    );
    clock.advance(120 * SEC);
    assert!(
        queue.try_next(&w("w")).is_none(),
        "the delayed entry is gone"
    );
    queue
        .complete(&lease, Bytes::new().into())
        .expect("current");
    let stats = queue.stats();
    assert_eq!((stats.cancelled, stats.completed, stats.queued), (1, 1, 0));
}

#[test]
fn with_no_dead_letter_room_a_failed_job_and_its_followers_are_counted_not_kept() {
    let clock = ManualClock::new();
    let queue = builder(&clock)
        .retry(RetryConfig::fixed(0, SEC))
        .dead_letter_capacity(0)
        .build()
        .expect("valid");
    let leader = queue
        .submit(transcription(5, JobPriority::Low))
        .expect("submit");
    let follower = queue
        .submit(transcription(5, JobPriority::Low))
        .expect("submit");
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "bad").expect("current");
    assert!(queue.dead_letters().is_empty());
    for id in [leader, follower] {
        assert_eq!(queue.status(id), None);
        assert!(matches!(
            queue.resubmit_dead_letter(id),
            Err(QueueError::NotDeadLettered(_))
        ));
    }
    let stats = queue.stats();
    assert_eq!(
        (stats.failed, stats.dead_letters_evicted, stats.dead_letters),
        (2, 2, 0)
    );
    assert_eq!((stats.queued, stats.coalesced_waiting), (0, 0));
    // The key is free again: an identical job leads and runs.
    let again = queue
        .submit(transcription(5, JobPriority::Low))
        .expect("submit");
    assert_eq!(queue.try_next(&w("w")).map(|l| l.job_id()), Some(again));
}

#[test]
fn with_no_finished_records_kept_a_cancelled_jobs_worker_is_still_refused() {
    let clock = ManualClock::new();
    let queue = builder(&clock).retain_finished(0).build().expect("valid");
    let id = queue.submit(job(JobPriority::Low)).expect("submit");
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.cancel(id).expect("cancel running");
    assert_eq!(queue.status(id), None, "nothing finished is kept");
    // The slot is reused by the next job; the old lease must not reach it.
    let other = queue.submit(job(JobPriority::Low)).expect("submit");
    let other_lease = queue.try_next(&w("w2")).expect("ready");
    assert!(queue.complete(&lease, Bytes::new().into()).is_err());
    assert!(queue.heartbeat(&lease).is_err());
    assert!(queue.fail(&lease, "late").is_err());
    assert_eq!(queue.status(other), Some(JobStatus::Processing));
    queue
        .complete(&other_lease, Bytes::new().into())
        .expect("current");
    let stats = queue.stats();
    assert_eq!(
        (stats.cancelled, stats.completed, stats.processing),
        (1, 1, 0)
    );
}

#[test]
fn resubmitting_a_dead_letter_into_a_full_queue_is_refused_and_changes_nothing() {
    let clock = ManualClock::new();
    let queue = builder(&clock)
        .capacity(1)
        .retry(RetryConfig::fixed(0, SEC))
        .build()
        .expect("valid");
    let dead = queue.submit(job(JobPriority::Low)).expect("submit");
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "bad").expect("current");
    let filler = queue.submit(job(JobPriority::Low)).expect("room");
    assert!(matches!(
        queue.resubmit_dead_letter(dead),
        Err(QueueError::Full { capacity: 1 })
    ));
    assert_eq!(queue.status(dead), Some(JobStatus::Failed));
    assert_eq!(queue.dead_letters().len(), 1);
    let stats = queue.stats();
    assert_eq!(
        (stats.queued, stats.dead_letters, stats.rejected_full),
        (1, 1, 1)
    );
    queue.cancel(filler).expect("cancel");
    queue.resubmit_dead_letter(dead).expect("room now");
    assert_eq!(queue.status(dead), Some(JobStatus::Queued));
}

#[test]
fn a_job_memoized_while_an_identical_one_runs_completes_once_with_one_result() {
    let clock = ManualClock::new();
    let store = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let queue = builder(&clock).cache(store.clone()).build().expect("valid");
    let leader = queue
        .submit(transcription(6, JobPriority::Low))
        .expect("submit");
    let lease = queue.try_next(&w("w")).expect("ready");
    // Someone else stores the transcript while the leader runs.
    let key = CacheKey::transcript(&"06".repeat(32), "en").expect("valid");
    store
        .insert(key, Bytes::from_static(b"elsewhere"))
        .expect("insert");
    let second = queue
        .submit(transcription(6, JobPriority::Low))
        .expect("submit");
    assert!(queue.try_next(&w("w2")).is_none(), "no second execution");
    queue
        .complete(&lease, b"ran".to_vec().into())
        .expect("current");
    for id in [leader, second] {
        let job = queue.get(id).expect("kept");
        assert_eq!(job.status(), JobStatus::Completed);
        assert!(job.result().is_some());
    }
    let stats = queue.stats();
    assert_eq!(stats.completed, 2);
    assert_eq!(stats.memo_hits + stats.coalesced, 1);
}

#[test]
fn a_draining_pool_stops_with_a_retry_still_delayed_and_a_later_pool_runs_it() {
    let clock = ManualClock::new();
    let queue = builder(&clock)
        .retry(RetryConfig::fixed(1, 60 * SEC))
        .build()
        .expect("valid");
    let id = queue.submit(job(JobPriority::Low)).expect("submit");
    let pool = |queue: &JobQueue| {
        WorkerPool::builder(queue.clone())
            .handler(JobType::Indexing, |ctx| match ctx.attempt() {
                0 => Err(JobError::Failed("first attempt".into())),
                _ => Ok(b"second".to_vec().into()),
            })
            .concurrency(ConcurrencyLimit::new(2).expect("valid"))
            .start()
            .expect("start")
    };
    // The retry is due in a minute of a clock that does not move: a draining pool must not
    // wait for it, and must not lose it.
    let stats = pool(&queue).shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.failed), (1, 1));
    let job_now = queue.get(id).expect("kept");
    assert_eq!(
        (job_now.status(), job_now.retry_count()),
        (JobStatus::Queued, 1)
    );
    assert_eq!(queue.stats().delayed, 1);

    clock.advance(60 * SEC);
    let stats = pool(&queue).shutdown(Shutdown::Drain);
    assert_eq!((stats.executed, stats.completed), (1, 1));
    assert_eq!(queue.status(id), Some(JobStatus::Completed));
}

const HOOK_PANIC: &str = "injected completion-hook panic";

#[test]
fn a_panicking_completion_hook_neither_strands_a_job_nor_kills_a_worker() {
    // Keeps the default panic output for real failures only.
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&HOOK_PANIC) {
                default(info);
            }
        }));
    });
    let armed = Arc::new(AtomicBool::new(true));
    let queue = {
        let armed = Arc::clone(&armed);
        JobQueue::builder()
            .on_complete(move |_| {
                if armed.swap(false, Ordering::SeqCst) {
                    std::panic::panic_any(HOOK_PANIC);
                }
            })
            .build()
            .expect("valid")
    };
    let ids: Vec<JobId> = (0..3)
        .map(|_| queue.submit(job(JobPriority::Low)).expect("submit"))
        .collect();
    // One worker: its first completion also leases the second job, then the hook panics.
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Indexing, |_| Ok(b"done".to_vec().into()))
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("start");
    let stats = pool.shutdown(Shutdown::Drain);
    assert!(!armed.load(Ordering::SeqCst), "the hook did panic");
    for id in ids {
        assert_eq!(queue.status(id), Some(JobStatus::Completed));
    }
    assert_eq!((stats.executed, stats.completed, stats.stale), (3, 3, 0));
    let q = queue.stats();
    assert_eq!((q.processing, q.queued, q.lease_expirations), (0, 0, 0));
}
