//! JobQueue behaviour, driven by a ManualClock, and the edge cases an adversarial read found.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use memocache::{
    Cache, CacheKey, Clock, CoarseClock, ConcurrencyLimit, Job, JobError, JobId, JobPriority,
    JobQueue, JobQueueBuilder, JobResult, JobStatus, JobType, Lease, ManualClock, QueueError,
    RetryConfig, SharedClock, Shutdown, SystemClock, Timestamp, Ttl, WorkerId, WorkerPool,
};

const SEC: Duration = Duration::from_secs(1);

fn cache() -> Cache {
    Cache::builder().max_bytes(1 << 20).build().expect("valid")
}

fn builder(clock: &ManualClock) -> JobQueueBuilder {
    JobQueue::builder().clock(clock.clone())
}

/// The queue `builder` makes, with a configuration the test expects to be valid.
fn built(builder: JobQueueBuilder) -> JobQueue {
    builder.build().expect("valid")
}

/// A queue on `clock` whose jobs age one priority level every 10 s.
fn aging_every_10_s(clock: &ManualClock) -> JobQueue {
    built(builder(clock).aging(Some(10 * SEC)))
}

fn job(p: JobPriority) -> Job {
    Job::new(JobType::Indexing, &b"x"[..]).with_priority(p)
}

fn w(name: &str) -> WorkerId {
    WorkerId::new(name)
}

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn transcription(n: u8, p: JobPriority) -> Job {
    Job::transcription(&hash(n), "en", &b"audio"[..])
        .expect("valid key")
        .with_priority(p)
}

/// Two identical transcriptions of audio `n`, at the priorities given: the second is coalesced
/// onto the first, its leader.
fn leader_and_follower(
    queue: &JobQueue,
    n: u8,
    leader: JobPriority,
    follower: JobPriority,
) -> (JobId, JobId) {
    (
        submit(queue, transcription(n, leader)),
        submit(queue, transcription(n, follower)),
    )
}

/// The priority `get` reports for job `id` (the one it was submitted with), if it is known.
fn priority_of(queue: &JobQueue, id: JobId) -> Option<JobPriority> {
    queue.get(id).map(|j| j.priority())
}

fn take_all(queue: &JobQueue) -> Vec<JobId> {
    std::iter::from_fn(|| {
        let lease = queue.try_next(&w("w"))?;
        complete(queue, &lease, Bytes::new());
        Some(lease.job_id())
    })
    .collect()
}

/// Submits `job`, which the test expects the queue to accept.
fn submit(queue: &JobQueue, job: Job) -> JobId {
    queue.submit(job).expect("submit")
}

/// Completes `lease` with `result`, which the test expects to be current.
fn complete(queue: &JobQueue, lease: &Lease, result: impl Into<JobResult>) {
    queue.complete(lease, result.into()).expect("current");
}

#[test]
fn priority_then_fifo() {
    use JobPriority::*;
    let clock = ManualClock::new();
    let queue = built(builder(&clock).aging(None));
    let order = [Low, Medium, High, Low, High, Medium];
    let ids: Vec<_> = order.iter().map(|&p| submit(&queue, job(p))).collect();
    assert_eq!(
        take_all(&queue),
        [ids[2], ids[4], ids[1], ids[5], ids[0], ids[3]]
    );
}

#[test]
fn fifo_across_job_types_within_a_priority() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let ids: Vec<_> = [
        JobType::Translation,
        JobType::Transcription,
        JobType::Indexing,
    ]
    .into_iter()
    .map(|t| submit(&queue, Job::new(t, &b""[..])))
    .collect();
    assert_eq!(take_all(&queue), ids);
}

#[test]
fn aging_bounds_the_wait_of_low_work_under_steady_high_load() {
    let clock = ManualClock::new();
    let queue = aging_every_10_s(&clock);
    let low = submit(&queue, job(JobPriority::Low));
    let medium = submit(&queue, job(JobPriority::Medium));
    let mut taken = Vec::new();
    // One High job arrives and one job is taken every second.
    for _ in 0..30 {
        clock.advance(SEC);
        submit(&queue, job(JobPriority::High));
        let lease = queue.try_next(&w("w")).expect("a job is ready");
        complete(&queue, &lease, Bytes::new());
        taken.push(lease.job_id());
    }
    let at = |id| taken.iter().position(|&t| t == id).expect("was taken");
    // Medium is promoted to High after 10 s, Low after 20 s; both then win on age.
    assert_eq!(at(medium), 9, "medium taken at t=10s");
    assert_eq!(at(low), 19, "low taken at t=20s");

    // Without aging the same load starves Low.
    let strict = built(builder(&clock).aging(None));
    let low = submit(&strict, job(JobPriority::Low));
    for _ in 0..30 {
        clock.advance(SEC);
        submit(&strict, job(JobPriority::High));
        let lease = strict.try_next(&w("w")).expect("a job is ready");
        assert_ne!(lease.job_id(), low);
        complete(&strict, &lease, Bytes::new());
    }
}

#[test]
fn retries_wait_out_the_backoff_then_dead_letter_and_resubmit() {
    let clock = ManualClock::new();
    let retry = RetryConfig::exponential(2, SEC).expect("valid");
    let queue = built(builder(&clock).retry(retry));
    let id = submit(&queue, job(JobPriority::Medium));
    let worker = w("w");

    let lease = queue.try_next(&worker).expect("ready");
    assert_eq!(lease.attempt(), 0);
    queue.fail(&lease, "first").expect("fail");
    let job_now = queue.get(id).expect("known");
    assert_eq!(
        (job_now.status(), job_now.retry_count()),
        (JobStatus::Queued, 1)
    );
    assert_eq!(job_now.error_message(), Some("first"));
    assert_eq!(queue.stats().delayed, 1);

    // First retry after calculate_delay(0) = 1 s, second after calculate_delay(1) = 2 s.
    for (attempt, delay) in [(1, SEC), (2, 2 * SEC)] {
        clock.advance(delay - Duration::from_nanos(1));
        assert!(queue.try_next(&worker).is_none(), "not due yet");
        clock.advance(Duration::from_nanos(1));
        let lease = queue.try_next(&worker).expect("due");
        assert_eq!(lease.attempt(), attempt);
        queue
            .fail(&lease, format!("failure {attempt}"))
            .expect("fail");
    }

    // Retries exhausted: dead letter, never ready again.
    assert_eq!(queue.status(id), Some(JobStatus::Failed));
    clock.advance(3600 * SEC);
    assert!(queue.try_next(&worker).is_none());
    let dead = queue.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id(), id);
    assert_eq!(dead[0].error_message(), Some("failure 2"));
    let stats = queue.stats();
    assert_eq!((stats.failed, stats.retries, stats.dead_letters), (1, 2, 1));

    // Re-submit: a fresh budget.
    queue.resubmit_dead_letter(id).expect("resubmit");
    assert!(matches!(
        queue.resubmit_dead_letter(id),
        Err(QueueError::NotDeadLettered(_))
    ));
    assert!(queue.dead_letters().is_empty());
    let lease = queue.try_next(&worker).expect("ready again");
    assert_eq!(lease.attempt(), 0);
    complete(&queue, &lease, b"ok".to_vec());
    assert_eq!(queue.status(id), Some(JobStatus::Completed));
}

/// A job's own `max_retries` overrides the queue's retry policy, both ways.
#[test]
fn a_jobs_own_retry_budget_overrides_the_queues() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).retry(RetryConfig::fixed(3, Duration::ZERO)));
    let none = submit(
        &queue,
        Job::new(JobType::Indexing, &b""[..]).with_max_retries(0),
    );
    let five = submit(
        &queue,
        Job::new(JobType::Indexing, &b""[..]).with_max_retries(5),
    );
    let default = submit(&queue, Job::new(JobType::Indexing, &b""[..]));
    let mut runs = std::collections::HashMap::new();
    while let Some(lease) = queue.try_next(&w("w")) {
        *runs.entry(lease.job_id()).or_insert(0) += 1;
        queue.fail(&lease, "no").expect("fail");
    }
    assert_eq!((runs[&none], runs[&five], runs[&default]), (1, 6, 4));
    let stats = queue.stats();
    assert_eq!((stats.dead_letters, stats.retries, stats.failed), (3, 8, 3));
}

/// A clock that jumps far past several retry delays makes them all ready in one step, in
/// the order they fell due (not the order they failed or were submitted in).
#[test]
fn retries_all_due_after_a_clock_jump_run_in_due_order() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .retry(RetryConfig::linear(2, SEC).expect("valid"))
            .aging(None),
    );
    let ids: Vec<JobId> = (0..3)
        .map(|_| submit(&queue, job(JobPriority::Medium)))
        .collect();
    let leases: Vec<_> = (0..3)
        .map(|_| queue.try_next(&w("w")).expect("ready"))
        .collect();
    // Due at 1 s, 1.5 s and 1.6 s: job 0, then job 2, then job 1.
    queue.fail(&leases[0], "x").expect("fail");
    clock.advance(Duration::from_millis(500));
    queue.fail(&leases[2], "x").expect("fail");
    clock.advance(Duration::from_millis(100));
    queue.fail(&leases[1], "x").expect("fail");
    assert_eq!(queue.stats().delayed, 3);
    clock.advance(Duration::from_secs(3600));
    let stats = queue.stats();
    assert_eq!((stats.delayed, stats.queued), (0, 3));
    let order: Vec<JobId> =
        std::iter::from_fn(|| queue.try_next(&w("w")).map(|l| l.job_id())).collect();
    assert_eq!(order, [ids[0], ids[2], ids[1]]);
}

#[test]
fn dead_letter_list_is_bounded() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .retry(RetryConfig::fixed(0, SEC))
            .dead_letter_capacity(2),
    );
    let ids: Vec<_> = (0..3)
        .map(|_| submit(&queue, job(JobPriority::Low)))
        .collect();
    for _ in 0..3 {
        let lease = queue.try_next(&w("w")).expect("ready");
        queue.fail(&lease, "no").expect("fail");
    }
    let dead: Vec<_> = queue.dead_letters().iter().map(Job::id).collect();
    assert_eq!(dead, ids[1..]);
    assert_eq!(queue.stats().dead_letters_evicted, 1);
    assert_eq!(queue.get(ids[0]).map(|j| j.status()), None);
}

/// A queue on `clock` with 10 s leases and three immediate retries, holding one submitted job.
fn one_job_with_a_10s_lease(clock: &ManualClock) -> (JobQueue, JobId) {
    let queue = builder(clock)
        .lease(10 * SEC)
        .retry(RetryConfig::fixed(3, Duration::ZERO))
        .build()
        .expect("valid");
    let id = submit(&queue, job(JobPriority::Medium));
    (queue, id)
}

#[test]
fn lease_expiry_requeues_and_refuses_the_stale_completion() {
    let clock = ManualClock::new();
    let (queue, id) = one_job_with_a_10s_lease(&clock);
    let (w1, w2) = (w("w1"), w("w2"));
    let old = queue.try_next(&w1).expect("ready");
    assert_eq!(old.deadline().as_nanos(), 10 * 1_000_000_000);

    clock.advance(10 * SEC);
    let new = queue.try_next(&w2).expect("taken back after the lease");
    assert_eq!((new.job_id(), new.attempt()), (id, 1));
    let job_now = queue.get(id).expect("known");
    assert_eq!(job_now.worker_id(), Some(&w2));
    assert_eq!(job_now.error_message(), Some("lease expired on worker w1"));

    let err = queue
        .complete(&old, b"late".to_vec().into())
        .expect_err("stale");
    assert!(
        matches!(&err, QueueError::StaleLease { worker, status: JobStatus::Processing, .. } if *worker == w1),
        "{err}"
    );
    assert!(queue.fail(&old, "late").is_err());
    assert!(queue.heartbeat(&old).is_err());
    complete(&queue, &new, b"ok".to_vec());
    let done = queue.get(id).expect("known");
    assert_eq!(
        done.result().map(|r| r.as_bytes().as_ref()),
        Some(&b"ok"[..])
    );
    assert_eq!(queue.stats().lease_expirations, 1);
}

/// The queue's builder takes a clock by value, as the cache's does: a [`ManualClock`] given
/// as it is (it took only a `SharedClock`, so `.clock(ManualClock::new())` did not compile)
/// drives the queue's retry delays.
#[test]
fn a_manual_clock_given_by_value_drives_the_retry_delay() {
    let clock = ManualClock::new();
    let queue = built(
        JobQueue::builder()
            .clock(clock.clone())
            .retry(RetryConfig::fixed(1, 5 * SEC)),
    );
    let id = submit(&queue, job(JobPriority::Medium));
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "again").expect("current");
    clock.advance(5 * SEC - Duration::from_nanos(1));
    assert!(
        queue.try_next(&w("w")).is_none(),
        "the retry is not due yet"
    );
    clock.advance(Duration::from_nanos(1));
    let retry = queue.try_next(&w("w")).expect("due on the manual clock");
    assert_eq!((retry.job_id(), retry.attempt()), (id, 1));
    assert_eq!(queue.clock().now(), Timestamp::from_nanos(5_000_000_000));
}

/// One `Arc<ManualClock>` given to a cache and to a queue is one timeline for both: a TTL and
/// a lease of 10 s, both running 1 ns before 10 s, have both ended 1 ns after (the cache
/// still serves an entry at its deadline, a lease has ended at its own). A [`SharedClock`] given to either builder, through
/// `clock` or `shared_clock`, is kept as the very handle given.
#[test]
fn one_shared_manual_clock_drives_a_cache_and_a_queue() {
    let clock = Arc::new(ManualClock::new());
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(Arc::clone(&clock))
        .build()
        .expect("valid");
    let queue = built(
        JobQueue::builder()
            .clock(Arc::clone(&clock))
            .lease(10 * SEC)
            .retry(RetryConfig::fixed(1, Duration::ZERO)),
    );
    let key = CacheKey::from_content(b"k", "test").expect("valid key");
    let ttl = Ttl::seconds(10).expect("positive");
    cache.insert_with_ttl(key, &b"v"[..], ttl).expect("stored");
    let id = submit(&queue, job(JobPriority::Medium));
    let _abandoned = queue.try_next(&w("a")).expect("ready");

    clock.advance(10 * SEC - Duration::from_nanos(1));
    assert!(cache.get(&key).is_some(), "the TTL has not ended");
    assert!(queue.try_next(&w("b")).is_none(), "the lease has not ended");
    clock.advance(Duration::from_nanos(2));
    assert!(
        cache.get(&key).is_none(),
        "the TTL ended on the shared clock"
    );
    let taken = queue
        .try_next(&w("b"))
        .expect("the lease ended on the shared clock");
    assert_eq!((taken.job_id(), taken.attempt()), (id, 1));

    let shared: SharedClock = clock;
    let queues = [
        JobQueue::builder().clock(Arc::clone(&shared)),
        JobQueue::builder().shared_clock(Arc::clone(&shared)),
    ];
    for builder in queues {
        assert!(Arc::ptr_eq(built(builder).clock(), &shared));
    }
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(Arc::clone(&shared));
    assert!(Arc::ptr_eq(cache.build().expect("valid").clock(), &shared));
}

#[test]
fn a_lease_is_checked_by_id_not_by_worker_name() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .lease(SEC)
            .retry(RetryConfig::fixed(3, Duration::ZERO)),
    );
    submit(&queue, job(JobPriority::Medium));
    let worker = w("same");
    let first = queue.try_next(&worker).expect("ready");
    clock.advance(SEC);
    let second = queue
        .try_next(&worker)
        .expect("re-leased to the same worker");
    assert!(matches!(
        queue.complete(&first, Bytes::new().into()),
        Err(QueueError::StaleLease { .. })
    ));
    complete(&queue, &second, Bytes::new());
}

/// A lease is proof only to the queue that gave it. The same job (a clone) submitted to two
/// queues sits in the same slot of each, and both count their leases from the same start, so
/// a lease of one matched the other's current lease field for field: queue `b` took `a`'s
/// worker's result (or failure, heartbeat, release) for its own job's, under its own worker's
/// lease.
#[test]
fn a_lease_of_another_queue_holding_the_same_job_is_refused() {
    let (a, b) = (JobQueue::builder().build(), JobQueue::builder().build());
    let (a, b) = (a.expect("valid"), b.expect("valid"));
    let shared = job(JobPriority::Medium);
    let id = submit(&a, shared.clone());
    b.submit(shared).expect("another queue");
    let of_a = a.try_next(&w("a")).expect("ready");
    let of_b = b.try_next(&w("b")).expect("ready");
    let stale = |r: Result<(), QueueError>| matches!(r, Err(QueueError::StaleLease { .. }));
    assert!(stale(b.complete(&of_a, b"from a".to_vec().into())));
    assert!(stale(b.fail(&of_a, "from a")));
    assert!(stale(b.heartbeat(&of_a).map(drop)));
    assert!(stale(b.release(&of_a)));
    let job_b = b.get(id).expect("known");
    assert_eq!(job_b.status(), JobStatus::Processing);
    assert_eq!(job_b.worker_id(), Some(&w("b")));
    b.complete(&of_b, b"from b".to_vec().into())
        .expect("b's own lease");
    a.complete(&of_a, b"from a".to_vec().into())
        .expect("a's own lease");
    let result = |q: &JobQueue| q.get(id).and_then(|j| j.result().cloned());
    assert_eq!(result(&b), Some(b"from b".to_vec().into()));
    assert_eq!(result(&a), Some(b"from a".to_vec().into()));
}

/// Delays, leases and aging steps of `Duration::MAX` on a real clock: every deadline
/// saturates at the end of time instead of overflowing, the retry waits (a blocked take
/// returns at its own timeout, not at once or never), and the job can still be cancelled.
#[test]
fn the_longest_delays_leases_and_aging_steps_end_at_the_end_of_time() {
    let end = Timestamp::from_nanos(u64::MAX);
    for jitter in [false, true] {
        let queue = built(
            JobQueue::builder()
                .clock(Arc::new(SystemClock))
                .retry(RetryConfig::fixed(2, Duration::MAX).with_full_jitter(jitter))
                .lease(Duration::MAX)
                .aging(Some(Duration::MAX)),
        );
        let id = submit(&queue, job(JobPriority::Low));
        submit(&queue, job(JobPriority::High));
        let lease = queue.try_next(&w("w")).expect("ready");
        assert_eq!(
            lease.priority(),
            JobPriority::High,
            "an endless step ages nothing"
        );
        queue.release(&lease).expect("current");
        let lease = queue.try_next(&w("w")).expect("ready");
        assert_eq!(
            (lease.deadline(), queue.heartbeat(&lease).ok()),
            (end, Some(end))
        );
        complete(&queue, &lease, Bytes::new());
        let lease = queue.try_next(&w("w")).expect("ready");
        assert_eq!(lease.job_id(), id);
        queue.fail(&lease, "once").expect("current");
        if !jitter {
            // A jittered delay may be short enough to be due already; this one is not.
            assert_eq!(queue.stats().delayed, 1);
            let asked = std::time::Instant::now();
            assert!(queue.next(&w("w"), Duration::from_millis(20)).is_none());
            let waited = asked.elapsed();
            assert!(waited >= Duration::from_millis(20), "{waited:?}");
            assert!(waited < 50 * SEC, "a deadlock guard: {waited:?}");
        }
        queue.cancel(id).expect("waiting");
        assert_eq!(queue.status(id), Some(JobStatus::Cancelled));
        assert_eq!(queue.stats().delayed, 0);
    }
}

/// [`CoarseClock`], counting its reads: a blocked take reads the clock once a wake-up.
#[derive(Debug, Default)]
struct CountedCoarse(AtomicU64);

impl Clock for CountedCoarse {
    fn now(&self) -> Timestamp {
        self.0.fetch_add(1, Ordering::Relaxed);
        CoarseClock.now()
    }

    fn resolution(&self) -> Duration {
        CoarseClock.resolution()
    }
}

/// A `next` blocked on a retry due a few microseconds into the coarse clock's next tick
/// sleeps until the clock can have moved. It used to wait out the remaining microseconds,
/// which the clock does not see pass, again and again until the tick: 50–65 wake-ups and
/// 0.6–0.7 ms of CPU a tick of 4 ms with Linux's default timer slack of 50 µs, a whole tick
/// of CPU with a slack of 1 ns (a real-time thread's). Failed just after a tick with a delay
/// of a tick and 10 µs, the job is due 10 µs into the tick after next: the fixed take wakes
/// about twice, and still gets the job once it is due.
#[test]
fn a_take_blocked_on_a_retry_due_within_a_tick_does_not_spin_until_the_tick() {
    let clock = Arc::new(CountedCoarse::default());
    let tick = clock.resolution().max(Duration::from_millis(1));
    let delay = tick + Duration::from_micros(10);
    let queue = built(
        JobQueue::builder()
            .clock(clock.clone())
            .retry(RetryConfig::fixed(u32::MAX - 1, delay)),
    );
    let endless = Job::new(JobType::Indexing, &b"x"[..]).with_max_retries(u32::MAX - 1);
    submit(&queue, endless);
    let mut lease = queue.try_next(&w("w")).expect("ready");
    for _ in 0..5 {
        let start = CoarseClock.now();
        while CoarseClock.now() == start {}
        queue.fail(&lease, "again").expect("current");
        let failed = std::time::Instant::now();
        clock.0.store(0, Ordering::Relaxed);
        lease = queue
            .next(&w("w"), 50 * SEC)
            .expect("due before the timeout");
        let reads = clock.0.load(Ordering::Relaxed);
        assert!(
            failed.elapsed() >= delay,
            "taken early: {:?}",
            failed.elapsed()
        );
        // The first look, then a wake-up each for the delay, the rest of the tick and one
        // spare (a tick that came a little late).
        assert!(reads <= 4, "{reads} reads of the clock in one blocked take");
    }
}

#[test]
fn an_expired_lease_is_refused_even_before_anyone_reaps_it() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).lease(SEC).retry(RetryConfig::fixed(0, SEC)));
    let id = submit(&queue, job(JobPriority::Medium));
    let lease = queue.try_next(&w("w")).expect("ready");
    clock.advance(SEC);
    assert!(matches!(
        queue.complete(&lease, Bytes::new().into()),
        Err(QueueError::LeaseExpired { .. })
    ));
    // No retries: the expiry dead-lettered it.
    assert_eq!(queue.status(id), Some(JobStatus::Failed));
    assert_eq!(queue.dead_letters().len(), 1);
}

#[test]
fn heartbeat_extends_the_lease() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).lease(10 * SEC));
    submit(&queue, job(JobPriority::Medium));
    let lease = queue.try_next(&w("w")).expect("ready");
    clock.advance(8 * SEC);
    let deadline = queue.heartbeat(&lease).expect("current");
    assert_eq!(deadline.as_nanos(), 18 * 1_000_000_000);
    clock.advance(8 * SEC);
    assert!(queue.try_next(&w("other")).is_none(), "still leased");
    queue
        .complete(&lease, Bytes::new().into())
        .expect("within the extended lease");
    assert_eq!(queue.stats().lease_expirations, 0);
}

/// A lease whose `now + lease` saturates at the end of time never expires: on a clock
/// standing there (a `ManualClock` advanced by `Duration::MAX` stops there) a worker can
/// still heartbeat and complete, and a lease taken just before the end outlives the
/// clock's reaching it. Read as due, every such lease expired as it was taken: the
/// completion was refused with `LeaseExpired` and each take burned an attempt until the
/// job was dead-lettered, its worker alive. A retry delay saturating there is due at once
/// (cut short, not never), and a blocked take does not spin on the endless lease.
/// A [`ManualClock`] counting its reads.
#[derive(Debug, Default)]
struct CountedManual(ManualClock, AtomicU64);

impl Clock for CountedManual {
    fn now(&self) -> Timestamp {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.now()
    }
}

#[test]
fn a_lease_saturated_at_the_end_of_time_never_expires() {
    let end = Timestamp::from_nanos(u64::MAX);
    let counted = Arc::new(CountedManual::default());
    let clock = counted.0.clone();
    let queue = built(
        JobQueue::builder()
            .clock(counted.clone())
            .lease(10 * SEC)
            .retry(RetryConfig::fixed(1, SEC)),
    );
    // Taken 5 s before the end: the deadline saturates, and the clock then reaches it.
    clock.advance(Duration::from_nanos(u64::MAX) - 5 * SEC);
    let before = submit(&queue, job(JobPriority::Medium));
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.deadline(), end);
    clock.advance(Duration::MAX);
    assert_eq!(clock.now(), end);
    assert_eq!(queue.heartbeat(&lease).expect("current"), end);
    queue
        .complete(&lease, Bytes::new().into())
        .expect("a saturated lease is still current at the end of time");
    assert_eq!(queue.status(before), Some(JobStatus::Completed));

    // Taken at the end itself: heartbeat, fail, retry (due at once), complete.
    let at_end = submit(&queue, job(JobPriority::Medium));
    let lease = queue.try_next(&w("w")).expect("ready");
    assert!(queue.try_next(&w("other")).is_none(), "still leased");
    queue.heartbeat(&lease).expect("current");
    queue.fail(&lease, "once").expect("current");
    let retry = queue.try_next(&w("w")).expect("the retry is due at once");
    assert_eq!((retry.job_id(), retry.attempt()), (at_end, 1));
    counted.1.store(0, Ordering::Relaxed);
    assert!(queue.next(&w("other"), Duration::from_millis(30)).is_none());
    let reads = counted.1.load(Ordering::Relaxed);
    assert!(reads <= 3, "{reads} reads of the clock: the take spun");
    complete(&queue, &retry, Bytes::new());
    assert_eq!(queue.status(at_end), Some(JobStatus::Completed));
    let stats = queue.stats();
    assert_eq!(
        (stats.lease_expirations, stats.failed, stats.completed),
        (0, 0, 2)
    );
}

#[test]
fn lease_expiry_counts_attempts_so_a_hanging_job_ends_in_the_dead_letter() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .lease(SEC)
            .retry(RetryConfig::fixed(2, Duration::ZERO)),
    );
    let id = submit(&queue, job(JobPriority::Medium));
    for _ in 0..3 {
        queue.try_next(&w("hangs")).expect("ready");
        clock.advance(SEC);
    }
    assert!(queue.try_next(&w("hangs")).is_none());
    assert_eq!(queue.status(id), Some(JobStatus::Failed));
    assert_eq!(queue.stats().lease_expirations, 3);
}

#[test]
fn cancel_in_every_state() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).retry(RetryConfig::fixed(3, SEC)));
    let queued = submit(&queue, job(JobPriority::High));
    let running = submit(&queue, job(JobPriority::Medium));
    let delayed = submit(&queue, job(JobPriority::Low));

    queue.cancel(queued).expect("cancel queued");
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), running, "the cancelled job is gone");
    let retried = queue.try_next(&w("w")).expect("ready");
    queue.fail(&retried, "later").expect("fail");
    queue.cancel(delayed).expect("cancel delayed");
    queue.cancel(running).expect("cancel running");

    assert!(matches!(
        queue.complete(&lease, Bytes::new().into()),
        Err(QueueError::StaleLease {
            status: JobStatus::Cancelled,
            ..
        })
    ));
    clock.advance(10 * SEC);
    assert!(
        queue.try_next(&w("w")).is_none(),
        "the delayed retry is gone"
    );
    for id in [queued, running, delayed] {
        assert_eq!(queue.status(id), Some(JobStatus::Cancelled));
    }
    assert!(matches!(
        queue.cancel(queued),
        Err(QueueError::InvalidTransition(_))
    ));
    assert!(matches!(
        queue.cancel(JobId::generate()),
        Err(QueueError::NotFound(_))
    ));
    let stats = queue.stats();
    assert_eq!((stats.cancelled, stats.queued, stats.processing), (3, 0, 0));
}

#[test]
fn capacity_is_backpressure_not_a_silent_drop() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).capacity(2));
    submit(&queue, job(JobPriority::Low));
    submit(&queue, job(JobPriority::Low));
    let rejected = job(JobPriority::High);
    let rejected_id = rejected.id();
    let err = queue.submit(rejected).expect_err("full");
    assert!(matches!(err, QueueError::Full { capacity: 2 }));
    assert!(err.to_string().contains("full"));
    assert_eq!(queue.status(rejected_id), None);
    assert_eq!(queue.stats().rejected_full, 1);

    let lease = queue.try_next(&w("w")).expect("ready");
    assert!(
        queue.submit(job(JobPriority::Low)).is_err(),
        "running jobs count"
    );
    queue.complete(&lease, Bytes::new().into()).expect("done");
    queue.submit(job(JobPriority::Low)).expect("room again");
    assert!(JobQueue::builder().capacity(0).build().is_err());
    assert!(JobQueue::builder().lease(Duration::ZERO).build().is_err());
}

#[test]
fn submit_refuses_duplicates_and_non_new_jobs() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let original = job(JobPriority::Low);
    let copy = original.clone();
    let late_copy = original.clone();
    let id = submit(&queue, original);
    assert!(matches!(queue.submit(copy), Err(QueueError::Duplicate(d)) if d == id));
    let snapshot = queue.get(id).expect("known");
    assert!(matches!(
        queue.submit(snapshot),
        Err(QueueError::Duplicate(_))
    ));
    // Finished and still retained: the id is still taken.
    assert_eq!(take_all(&queue), [id]);
    assert!(matches!(queue.submit(late_copy), Err(QueueError::Duplicate(d)) if d == id));
    assert_eq!(queue.status(id), Some(JobStatus::Completed));

    let mut started = job(JobPriority::Low);
    started
        .start_processing(w("x"), clock.now())
        .expect("start");
    assert!(matches!(
        queue.submit(started),
        Err(QueueError::NotNew {
            status: JobStatus::Processing,
            ..
        })
    ));
    assert_eq!(queue.stats().submitted, 1);
}

#[test]
fn release_gives_a_job_back_without_an_attempt() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let id = submit(&queue, job(JobPriority::Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.release(&lease).expect("release");
    assert!(queue.release(&lease).is_err(), "the lease is spent");
    let again = queue.try_next(&w("w")).expect("ready again");
    assert_eq!((again.job_id(), again.attempt()), (id, 0));
}

/// A job given back unrun (a pool shutting down, an interrupted handler) was not at fault: it
/// keeps its FIFO turn ahead of jobs submitted after it, and the time it has waited counts
/// towards aging as if it had never been taken.
#[test]
fn a_released_job_keeps_its_fifo_turn_and_its_aging_credit() {
    use JobPriority::*;
    let clock = ManualClock::new();
    let queue = aging_every_10_s(&clock);

    // Its turn: taken first, given back, it is still first.
    let a = submit(&queue, job(Medium));
    let b = submit(&queue, job(Medium));
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), a);
    let c = submit(&queue, job(Medium));
    queue.release(&lease).expect("release");
    assert_eq!(take_all(&queue), [a, b, c]);

    // Its age: a Low job that has been in the queue two aging steps competes as High, so
    // it goes before High work submitted after it, released or not.
    let low = submit(&queue, job(Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), low);
    clock.advance(20 * SEC);
    let high = submit(&queue, job(High));
    queue.release(&lease).expect("release");
    let again = queue.try_next(&w("w")).expect("ready");
    assert_eq!((again.job_id(), again.attempt()), (low, 0));
    queue
        .release(&again)
        .expect("released twice, still in turn");
    assert_eq!(take_all(&queue), [low, high]);
}

/// A take that finds no job old enough to have aged looks only at the highest priority it
/// has; a job given back with the age it was taken with must still count as aged.
#[test]
fn a_job_given_back_counts_as_aged_after_takes_that_saw_only_fresh_work() {
    use JobPriority::*;
    let clock = ManualClock::new();
    let queue = aging_every_10_s(&clock);
    let low = submit(&queue, job(Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    clock.advance(15 * SEC);
    let first = submit(&queue, job(Medium));
    let second = submit(&queue, job(Medium));
    // Nothing ready has waited a step.
    assert_eq!(queue.try_next(&w("w")).map(|l| l.job_id()), Some(first));
    clock.advance(SEC);
    queue.release(&lease).expect("release");
    // Low has waited 16 s, more than a step: it competes as Medium, and it is older.
    assert_eq!(take_all(&queue), [low, second]);
}

#[test]
fn takers_can_filter_by_job_type() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let t = submit(
        &queue,
        Job::new(JobType::Transcription, &b""[..]).with_priority(JobPriority::High),
    );
    let s = submit(&queue, Job::new(JobType::Summarization, &b""[..]));
    let types = [JobType::Summarization, JobType::Indexing];
    let lease = queue.try_next_for(&w("w"), &types).expect("one matches");
    assert_eq!(lease.job_id(), s);
    assert!(queue.try_next_for(&w("w"), &types).is_none());
    assert_eq!(queue.try_next(&w("w")).map(|l| l.job_id()), Some(t));
}

#[test]
fn memo_hit_completes_at_submit_with_no_worker() {
    let clock = ManualClock::new();
    let store = cache();
    let key = CacheKey::transcript(&hash(1), "en").expect("valid");
    store
        .insert(key, Bytes::from_static(b"cached text"))
        .expect("insert");
    let queue = built(builder(&clock).cache(store.clone()));

    let id = submit(&queue, transcription(1, JobPriority::Low));
    let done = queue.get(id).expect("known");
    assert_eq!(done.status(), JobStatus::Completed);
    assert_eq!(
        done.result().map(|r| r.as_bytes().as_ref()),
        Some(&b"cached text"[..])
    );
    assert_eq!(done.worker_id(), None);
    assert!(queue.try_next(&w("w")).is_none(), "no worker runs it");
    let stats = queue.stats();
    assert_eq!((stats.memo_hits, stats.completed, stats.queued), (1, 1, 0));

    // Another language is another key: a miss, queued.
    let other = Job::transcription(&hash(1), "de", &b""[..]).expect("valid");
    let other = submit(&queue, other);
    assert_eq!(queue.status(other), Some(JobStatus::Queued));
}

#[test]
fn identical_jobs_are_coalesced_and_the_result_is_memoized() {
    let clock = ManualClock::new();
    let store = cache();
    let queue = built(builder(&clock).cache(store.clone()));
    let (a, b) = leader_and_follower(&queue, 1, JobPriority::Medium, JobPriority::Medium);
    let c = submit(&queue, transcription(2, JobPriority::Medium));
    let stats = queue.stats();
    assert_eq!(
        (stats.coalesced, stats.coalesced_waiting, stats.queued),
        (1, 1, 3)
    );

    let lease_a = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease_a.job_id(), a);
    // The follower is not handed to a second worker while the leader runs.
    let lease_c = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease_c.job_id(), c);
    assert!(queue.try_next(&w("w")).is_none());
    assert_eq!(queue.status(b), Some(JobStatus::Queued));

    complete(&queue, &lease_a, b"text 1".to_vec());
    let follower = queue.get(b).expect("known");
    assert_eq!(follower.status(), JobStatus::Completed);
    assert_eq!(
        follower.result().map(|r| r.as_bytes().as_ref()),
        Some(&b"text 1"[..])
    );
    let key = CacheKey::transcript(&hash(1), "en").expect("valid");
    assert_eq!(
        store.peek(&key).map(|v| v.to_vec()),
        Some(b"text 1".to_vec())
    );

    // From now on a submit is a memo hit.
    let d = submit(&queue, transcription(1, JobPriority::High));
    assert_eq!(queue.status(d), Some(JobStatus::Completed));
    assert_eq!(queue.stats().memo_hits, 1);
}

#[test]
fn other_job_types_memoize_under_their_multi_part_key() {
    let clock = ManualClock::new();
    let store = cache();
    let queue = built(builder(&clock).cache(store.clone()));
    let summary = |model: &str| {
        Job::keyed(JobType::Summarization, ["transcript-key", model], &b""[..]).expect("valid")
    };
    let first = submit(&queue, summary("small"));
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), first);
    complete(&queue, &lease, b"sum".to_vec());
    let hit = submit(&queue, summary("small"));
    assert_eq!(queue.status(hit), Some(JobStatus::Completed));
    let miss = submit(&queue, summary("large"));
    assert_eq!(queue.status(miss), Some(JobStatus::Queued));
    let key = CacheKey::builder("summary")
        .expect("valid")
        .part("transcript-key")
        .part("small")
        .finish();
    assert!(store.contains_key(&key));
}

/// Every keyed type stores its result under its own prefix's multi-part key: the same parts
/// under two types are two computations, neither coalesced nor answered by the other.
#[test]
fn each_job_type_memoizes_under_its_own_prefix() {
    let clock = ManualClock::new();
    let store = cache();
    let queue = built(builder(&clock).cache(store.clone()));
    let types = [
        JobType::Summarization,
        JobType::Indexing,
        JobType::Translation,
    ];
    for t in types {
        submit(
            &queue,
            Job::keyed(t, ["doc", "v1"], &b""[..]).expect("valid"),
        );
    }
    assert_eq!(queue.stats().coalesced, 0);
    while let Some(lease) = queue.try_next(&w("w")) {
        let result = lease.job_type().to_string().into_bytes();
        complete(&queue, &lease, result);
    }
    for t in types {
        let key = CacheKey::builder(t.key_prefix())
            .expect("valid")
            .part("doc")
            .part("v1")
            .finish();
        assert_eq!(
            store.peek(&key).map(|v| v.to_vec()),
            Some(t.to_string().into_bytes()),
            "{t}"
        );
    }
    assert_eq!(queue.stats().completed, 3);
}

#[test]
fn coalescing_works_without_a_memo_store() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let (a, b) = leader_and_follower(&queue, 3, JobPriority::Low, JobPriority::Low);
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), a);
    assert!(queue.try_next(&w("w")).is_none());
    complete(&queue, &lease, b"t".to_vec());
    assert_eq!(queue.status(b), Some(JobStatus::Completed));
    // Nothing remembers it: a new identical job runs again.
    let c = submit(&queue, transcription(3, JobPriority::Low));
    assert_eq!(queue.try_next(&w("w")).map(|l| l.job_id()), Some(c));
}

#[test]
fn an_urgent_follower_raises_its_leaders_priority() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).aging(None));
    let medium = submit(&queue, job(JobPriority::Medium));
    let leader = submit(&queue, transcription(4, JobPriority::Low));
    submit(&queue, transcription(4, JobPriority::High));
    let first = queue.try_next(&w("w")).expect("ready");
    assert_eq!(first.job_id(), leader);
    assert_eq!(first.priority(), JobPriority::High);
    assert_eq!(queue.try_next(&w("w")).map(|l| l.job_id()), Some(medium));
}

#[test]
fn a_cancelled_leader_hands_over_to_its_first_follower() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let (a, b) = leader_and_follower(&queue, 5, JobPriority::Low, JobPriority::Low);
    let c = submit(&queue, transcription(5, JobPriority::Low));
    let old = queue.try_next(&w("w")).expect("ready");
    queue.cancel(a).expect("cancel");
    assert!(queue.complete(&old, Bytes::new().into()).is_err());
    let lease = queue.try_next(&w("w")).expect("b took over");
    assert_eq!(lease.job_id(), b);
    assert!(queue.try_next(&w("w")).is_none(), "c still follows b");
    complete(&queue, &lease, b"t".to_vec());
    assert_eq!(queue.status(c), Some(JobStatus::Completed));
    let stats = queue.stats();
    assert_eq!((stats.queued, stats.coalesced_waiting), (0, 0));
}

#[test]
fn a_follower_can_be_cancelled_alone() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let (a, b) = leader_and_follower(&queue, 6, JobPriority::Low, JobPriority::Low);
    queue.cancel(b).expect("cancel");
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), a);
    complete(&queue, &lease, Bytes::new());
    assert_eq!(queue.status(b), Some(JobStatus::Cancelled));
}

#[test]
fn followers_share_their_leaders_final_failure() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).retry(RetryConfig::fixed(0, SEC)));
    let (a, b) = leader_and_follower(&queue, 7, JobPriority::Low, JobPriority::Low);
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "bad audio").expect("fail");
    let dead: Vec<_> = queue.dead_letters().iter().map(Job::id).collect();
    assert_eq!(dead, [a, b]);
    let follower = queue.get(b).expect("known");
    assert_eq!(
        follower.error_message(),
        Some(format!("coalesced with job {a}, which failed: bad audio").as_str())
    );
    // Re-submitted, the two coalesce again.
    queue.resubmit_dead_letter(b).expect("resubmit");
    queue.resubmit_dead_letter(a).expect("resubmit");
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), b);
    assert!(queue.try_next(&w("w")).is_none());
    complete(&queue, &lease, Bytes::new());
    assert_eq!(queue.status(a), Some(JobStatus::Completed));
}

#[test]
fn finished_records_are_retained_up_to_a_bound() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).retain_finished(2));
    let ids: Vec<_> = (0..3)
        .map(|_| submit(&queue, job(JobPriority::Low)))
        .collect();
    take_all(&queue);
    assert_eq!(queue.status(ids[0]), None);
    assert_eq!(queue.status(ids[2]), Some(JobStatus::Completed));
    assert_eq!(queue.stats().completed, 3);
}

#[test]
fn by_default_the_last_1024_finished_jobs_stay_readable() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let ids: Vec<_> = (0..1_025)
        .map(|_| submit(&queue, job(JobPriority::Low)))
        .collect();
    take_all(&queue);
    assert_eq!(
        queue.status(ids[0]),
        None,
        "the oldest finished job is dropped"
    );
    assert!(
        ids[1..]
            .iter()
            .all(|&id| queue.status(id) == Some(JobStatus::Completed))
    );
}

#[test]
fn blocking_next_waits_for_a_submit_and_times_out_when_idle() {
    let queue = built(JobQueue::builder());
    assert!(queue.next(&w("w"), Duration::from_millis(20)).is_none());
    let taker = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.next(&w("w"), Duration::from_secs(30)))
    };
    let id = submit(&queue, job(JobPriority::Low));
    let lease = taker.join().expect("no panic").expect("got the job");
    assert_eq!(lease.job_id(), id);
}

#[test]
fn complete_and_next_completes_then_leases_the_next_job_in_order() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock));
    let low = submit(&queue, job(JobPriority::Low));
    let high = submit(&queue, job(JobPriority::High));
    let medium = submit(&queue, job(JobPriority::Medium));
    let other_type = submit(&queue, transcription(1, JobPriority::High));

    let worker = w("w");
    let first = queue
        .try_next_for(&worker, &[JobType::Indexing])
        .expect("ready");
    assert_eq!(first.job_id(), high);
    let mut order = vec![first.job_id()];
    let mut lease = first;
    while let Some(next) = queue
        .complete_and_next_for(
            &lease,
            Bytes::new().into(),
            &[JobType::Indexing],
            Duration::ZERO,
        )
        .expect("current lease")
    {
        assert_eq!(next.worker(), &worker);
        assert_eq!(queue.status(lease.job_id()), Some(JobStatus::Completed));
        assert_eq!(queue.status(next.job_id()), Some(JobStatus::Processing));
        order.push(next.job_id());
        lease = next;
    }
    assert_eq!(order, [high, medium, low]);
    assert_eq!(queue.status(low), Some(JobStatus::Completed));
    // The type filter held: the transcription job is still queued, and any-type takes it.
    assert_eq!(queue.status(other_type), Some(JobStatus::Queued));
    let stats = queue.stats();
    assert_eq!((stats.completed, stats.processing, stats.queued), (3, 0, 1));
}

#[test]
fn a_refused_completion_takes_no_next_job() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).lease(10 * SEC));
    submit(&queue, job(JobPriority::High));
    let lease = queue.try_next(&w("w")).expect("ready");
    let waiting = submit(&queue, job(JobPriority::Low));
    clock.advance(11 * SEC);
    let err = queue
        .complete_and_next(&lease, Bytes::new().into(), Duration::ZERO)
        .expect_err("the lease expired");
    assert!(matches!(err, QueueError::LeaseExpired { .. }), "{err}");
    assert_eq!(queue.status(waiting), Some(JobStatus::Queued));
    assert_eq!(queue.stats().processing, 0);
    assert_eq!(queue.stats().completed, 0);
}

#[test]
fn complete_and_next_waits_up_to_its_timeout() {
    let queue = built(JobQueue::builder());
    submit(&queue, job(JobPriority::Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    let second = submit(&queue, job(JobPriority::Low));
    let lease = queue
        .complete_and_next(&lease, Bytes::new().into(), Duration::from_millis(20))
        .expect("current")
        .expect("the second job was ready");
    assert_eq!(lease.job_id(), second);
    // Nothing else is queued: it completes, waits out the timeout, and takes nothing.
    let none = queue
        .complete_and_next(&lease, Bytes::new().into(), Duration::from_millis(20))
        .expect("current");
    assert!(none.is_none());
    assert_eq!(queue.status(second), Some(JobStatus::Completed));

    // A job submitted while it waits is handed to it.
    submit(&queue, job(JobPriority::Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    let taker = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            queue.complete_and_next(&lease, Bytes::new().into(), Duration::from_secs(30))
        })
    };
    let third = submit(&queue, job(JobPriority::Low));
    let got = taker.join().expect("no panic").expect("current");
    assert_eq!(got.map(|l| l.job_id()), Some(third));
}

#[test]
fn submit_timeout_gives_up_with_full_and_leaves_no_trace() {
    let queue = built(JobQueue::builder().capacity(1));
    submit(&queue, job(JobPriority::Low));
    let refused = job(JobPriority::High);
    let refused_id = refused.id();
    let started = std::time::Instant::now();
    let err = queue
        .submit_timeout(refused, Duration::from_millis(30))
        .expect_err("still full");
    assert!(started.elapsed() >= Duration::from_millis(30), "it waited");
    assert!(matches!(err, QueueError::Full { capacity: 1 }), "{err}");
    assert_eq!(queue.status(refused_id), None);
    let stats = queue.stats();
    assert_eq!(
        (stats.rejected_full, stats.submitted, stats.queued),
        (1, 1, 1)
    );
    // A duplicate is refused as such, full queue or not, without waiting.
    let twin = job(JobPriority::Low);
    queue.submit(twin.clone()).expect_err("full");
    let twin_id = twin.id();
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.complete(&lease, Bytes::new().into()).expect("done");
    queue.submit(twin.clone()).expect("room");
    let err = queue
        .submit_timeout(twin, Duration::from_secs(30))
        .expect_err("duplicate");
    assert!(
        matches!(err, QueueError::Duplicate(id) if id == twin_id),
        "{err}"
    );
}

/// Producers blocked in `submit_timeout` on a tiny queue and a worker looping on
/// `complete_and_next`: every job gets in (none refused, none lost), each runs once, and the
/// queue never holds more than its capacity.
#[test]
fn blocked_producers_and_a_complete_and_next_worker_lose_nothing() {
    const PRODUCERS: usize = 3;
    const PER_PRODUCER: usize = 200;
    const CAPACITY: usize = 4;
    let queue = built(
        JobQueue::builder()
            .capacity(CAPACITY)
            .retain_finished(PRODUCERS * PER_PRODUCER),
    );
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                (0..PER_PRODUCER)
                    .map(|i| {
                        let priority = JobPriority::ALL[(p + i) % 3];
                        queue
                            .submit_timeout(job(priority), Duration::from_secs(30))
                            .expect("room within the timeout")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let worker = w("w");
    let mut ran = Vec::new();
    let mut lease = None;
    while ran.len() < PRODUCERS * PER_PRODUCER {
        let current = match lease.take() {
            Some(current) => current,
            None => queue
                .next(&worker, Duration::from_secs(30))
                .expect("producers keep submitting"),
        };
        let stats = queue.stats();
        assert!(stats.queued + stats.processing <= CAPACITY, "{stats:?}");
        ran.push(current.job_id());
        lease = queue
            .complete_and_next(&current, Bytes::new().into(), Duration::ZERO)
            .expect("current lease");
    }
    assert!(lease.is_none(), "no job beyond those submitted");
    let mut submitted: Vec<JobId> = producers
        .into_iter()
        .flat_map(|p| p.join().expect("producer"))
        .collect();
    let stats = queue.stats();
    assert_eq!(stats.rejected_full, 0);
    assert_eq!(stats.completed as usize, PRODUCERS * PER_PRODUCER);
    submitted.sort();
    ran.sort();
    assert_eq!(ran, submitted, "each job ran exactly once");
    assert!(
        ran.iter()
            .all(|&id| queue.status(id) == Some(JobStatus::Completed))
    );
}

// Edge cases from an adversarial read of the queue (session 7). Four of these tests guard bugs
// it found and fixed: a submit's capacity and coalescing checks saw leases that had run out
// (two tests), a raised leader lost its turn, and a panicking completion hook stranded the job
// `complete_and_next` had just leased.

#[test]
fn a_submit_sees_the_room_a_lease_expiry_freed() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .capacity(1)
            .lease(SEC)
            .retry(RetryConfig::fixed(0, SEC)),
    );
    let hung = submit(&queue, job(JobPriority::Low));
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
    let queue = built(builder(&clock).lease(SEC).retry(RetryConfig::fixed(0, SEC)));
    let hung = submit(&queue, transcription(1, JobPriority::Medium));
    queue.try_next(&w("dies")).expect("ready");
    clock.advance(SEC);
    // The leader's lease is over and it has no retries left: it is dead. A new identical job
    // must run, not follow it into the dead letter without ever being tried.
    let fresh = submit(&queue, transcription(1, JobPriority::Medium));
    assert_eq!(queue.status(hung), Some(JobStatus::Failed));
    let lease = queue.try_next(&w("w")).expect("the new job runs");
    assert_eq!(lease.job_id(), fresh);
    complete(&queue, &lease, b"text".to_vec());
    assert_eq!(queue.status(fresh), Some(JobStatus::Completed));
    let stats = queue.stats();
    assert_eq!((stats.coalesced, stats.failed, stats.completed), (0, 1, 1));
}

#[test]
fn aging_promotes_at_exactly_one_and_two_steps() {
    let step = 10 * SEC;
    let tick = Duration::from_nanos(1);
    let clock = ManualClock::new();
    let queue = built(builder(&clock).aging(Some(step)));
    let take = || {
        let lease = queue.try_next(&w("w")).expect("ready");
        complete(&queue, &lease, Bytes::new());
        lease.job_id()
    };

    // One step: Low competes with Medium, and wins on age.
    let low = submit(&queue, job(JobPriority::Low));
    clock.advance(step - tick);
    let medium = submit(&queue, job(JobPriority::Medium));
    assert_eq!(take(), medium, "one tick short of a step, Low is still Low");
    submit(&queue, job(JobPriority::Medium));
    clock.advance(tick);
    assert_eq!(take(), low, "at one step, Low is Medium and older");
    take();

    // Two steps: Low competes with High.
    let low = submit(&queue, job(JobPriority::Low));
    clock.advance(2 * step - tick);
    let high = submit(&queue, job(JobPriority::High));
    assert_eq!(take(), high, "one tick short of two steps, Low is Medium");
    submit(&queue, job(JobPriority::High));
    clock.advance(tick);
    assert_eq!(take(), low, "at two steps, Low is High and older");
}

#[test]
fn a_raised_leader_keeps_its_age_against_younger_work() {
    let step = 10 * SEC;
    let clock = ManualClock::new();
    let queue = built(builder(&clock).aging(Some(step)));
    let leader = submit(&queue, transcription(2, JobPriority::Low));
    clock.advance(15 * SEC);
    // Of the leader's type, so that it shares the deque the leader is raised into.
    let younger = submit(&queue, transcription(7, JobPriority::Medium));
    clock.advance(4 * SEC);
    // A Medium follower raises the leader to Medium; it has waited 19 s.
    submit(&queue, transcription(2, JobPriority::Medium));
    clock.advance(2 * SEC);
    let high = submit(&queue, job(JobPriority::High));
    // At 21 s the leader has waited two steps: it competes with High work and is older than
    // it; the Medium job has waited 6 s and is still Medium. Raising must not cost the
    // leader its place among the oldest (the heads the take looks at).
    let order: Vec<JobId> = std::iter::from_fn(|| {
        let lease = queue.try_next(&w("w"))?;
        complete(&queue, &lease, Bytes::new());
        Some(lease.job_id())
    })
    .collect();
    assert_eq!(order, [leader, high, younger]);
}

#[test]
fn followers_fail_with_a_leader_whose_lease_expiry_dead_letters_it() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).lease(SEC).retry(RetryConfig::fixed(1, SEC)));
    let (leader, follower) = leader_and_follower(&queue, 3, JobPriority::Low, JobPriority::Low);
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
    let queue = built(builder(&clock).retry(RetryConfig::fixed(3, 60 * SEC)));
    let (leader, follower) = leader_and_follower(&queue, 4, JobPriority::Low, JobPriority::High);
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
    complete(&queue, &lease, Bytes::new());
    let stats = queue.stats();
    assert_eq!((stats.cancelled, stats.completed, stats.queued), (1, 1, 0));
}

#[test]
fn with_no_dead_letter_room_a_failed_job_and_its_followers_are_counted_not_kept() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .retry(RetryConfig::fixed(0, SEC))
            .dead_letter_capacity(0),
    );
    let (leader, follower) = leader_and_follower(&queue, 5, JobPriority::Low, JobPriority::Low);
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
    let again = submit(&queue, transcription(5, JobPriority::Low));
    assert_eq!(queue.try_next(&w("w")).map(|l| l.job_id()), Some(again));
}

#[test]
fn with_no_finished_records_kept_a_cancelled_jobs_worker_is_still_refused() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).retain_finished(0));
    let id = submit(&queue, job(JobPriority::Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.cancel(id).expect("cancel running");
    assert_eq!(queue.status(id), None, "nothing finished is kept");
    // The slot is reused by the next job; the old lease must not reach it.
    let other = submit(&queue, job(JobPriority::Low));
    let other_lease = queue.try_next(&w("w2")).expect("ready");
    assert!(queue.complete(&lease, Bytes::new().into()).is_err());
    assert!(queue.heartbeat(&lease).is_err());
    assert!(queue.fail(&lease, "late").is_err());
    assert_eq!(queue.status(other), Some(JobStatus::Processing));
    complete(&queue, &other_lease, Bytes::new());
    let stats = queue.stats();
    assert_eq!(
        (stats.cancelled, stats.completed, stats.processing),
        (1, 1, 0)
    );
}

#[test]
fn resubmitting_a_dead_letter_into_a_full_queue_is_refused_and_changes_nothing() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .capacity(1)
            .retry(RetryConfig::fixed(0, SEC)),
    );
    let dead = submit(&queue, job(JobPriority::Low));
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
    let queue = built(builder(&clock).cache(store.clone()));
    let leader = submit(&queue, transcription(6, JobPriority::Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    // Someone else stores the transcript while the leader runs.
    let key = CacheKey::transcript(&"06".repeat(32), "en").expect("valid");
    store
        .insert(key, Bytes::from_static(b"elsewhere"))
        .expect("insert");
    let second = submit(&queue, transcription(6, JobPriority::Low));
    assert!(queue.try_next(&w("w2")).is_none(), "no second execution");
    complete(&queue, &lease, b"ran".to_vec());
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
    let queue = built(builder(&clock).retry(RetryConfig::fixed(1, 60 * SEC)));
    let id = submit(&queue, job(JobPriority::Low));
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

/// Keeps the default panic output for real failures only.
fn quiet_hook_panics() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&HOOK_PANIC) {
                default(info);
            }
        }));
    });
}

#[test]
fn a_panicking_completion_hook_neither_strands_a_job_nor_kills_a_worker() {
    quiet_hook_panics();
    let armed = Arc::new(AtomicBool::new(true));
    let queue = {
        let armed = Arc::clone(&armed);
        built(JobQueue::builder().on_complete(move |_| {
            if armed.swap(false, Ordering::SeqCst) {
                std::panic::panic_any(HOOK_PANIC);
            }
        }))
    };
    let ids: Vec<JobId> = (0..3)
        .map(|_| submit(&queue, job(JobPriority::Low)))
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

/// A leader's completion reports its followers' in the same call: a hook that panics on one
/// job must not keep the others from being reported. Before the fix the panic left the
/// loop, so the two followers' completions were never reported (one hook call of three) and
/// a metrics hook under-counted what completed.
#[test]
fn a_completion_hook_that_panics_on_one_job_still_hears_of_the_others() {
    let (queue, ids, completed) = complete_a_leader_and_two_followers(
        |heard| heard == 1,
        || std::panic::panic_any(HOOK_PANIC),
    );
    assert!(completed.is_err(), "the hook's panic reaches the caller");
    for id in ids {
        assert_eq!(queue.status(id), Some(JobStatus::Completed));
    }
    assert_eq!(queue.stats().completed, 3);
}

/// Submits three identical jobs (a leader and two followers) to a queue whose completion hook
/// records every job it hears of and then calls `panic` when `panics_at(jobs heard so
/// far)`, completes the leader, and checks that the hook heard of each job once. Returns the
/// queue, the ids and what the completion returned.
fn complete_a_leader_and_two_followers(
    panics_at: impl Fn(usize) -> bool + Send + Sync + 'static,
    panic: fn(),
) -> (
    JobQueue,
    Vec<JobId>,
    std::thread::Result<Result<(), QueueError>>,
) {
    quiet_hook_panics();
    let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let queue = {
        let heard = Arc::clone(&heard);
        built(JobQueue::builder().on_complete(move |c| {
            let mut heard = heard.lock();
            heard.push(c.id);
            let count = heard.len();
            drop(heard);
            if panics_at(count) {
                panic();
            }
        }))
    };
    let ids: Vec<JobId> = (0..3)
        .map(|_| submit(&queue, transcription(1, JobPriority::Medium)))
        .collect();
    assert_eq!(queue.stats().coalesced_waiting, 2);
    let lease = queue.try_next(&w("w")).expect("the leader");
    let completed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        queue.complete(&lease, b"text".to_vec().into())
    }));
    let mut heard = heard.lock().clone();
    heard.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(heard, want, "every completion is reported once");
    (queue, ids, completed)
}

/// A submit the memo store answers completes its job at once, on the submitter's thread, so
/// the completion hook hears of it there. A hook that panics reaches the submitter, as it
/// reaches a worker's `complete`, after the queue's work is done: the job is accepted,
/// completed and counted, its id is the one the job had before the submit, and the queue is
/// neither locked nor half changed.
#[test]
fn a_memo_hit_whose_completion_hook_panics_completes_and_the_panic_reaches_the_submitter() {
    quiet_hook_panics();
    let clock = ManualClock::new();
    let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let queue = {
        let heard = Arc::clone(&heard);
        built(
            builder(&clock)
                .capacity(1)
                .cache(cache_with(&[1]))
                .on_complete(move |c| {
                    heard.lock().push(c.id);
                    if c.memo_hit {
                        std::panic::panic_any(HOOK_PANIC);
                    }
                }),
        )
    };
    let submit_panics = |submit: &dyn Fn(Job) -> Result<JobId, QueueError>| -> JobId {
        let hit = transcription(1, JobPriority::Low);
        let (id, again) = (hit.id(), hit.clone());
        let submitted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| submit(hit)));
        let payload = submitted.expect_err("the hook's panic reaches the submitter");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&HOOK_PANIC));
        let job = queue.get(id).expect("accepted and kept");
        assert_eq!(job.status(), JobStatus::Completed);
        assert_eq!(
            job.result().map(|r| r.as_bytes().as_ref()),
            Some(&b"memo"[..])
        );
        assert!(matches!(queue.submit(again), Err(QueueError::Duplicate(d)) if d == id));
        id
    };
    // With room, and on a full queue (a memo hit takes no place and does not wait).
    let with_room = submit_panics(&|job| queue.submit(job));
    let filler = queue
        .submit(job(JobPriority::Low))
        .expect("the hit took no place");
    let when_full = submit_panics(&|job| queue.submit_timeout(job, 60 * SEC));
    let stats = queue.stats();
    assert_eq!((stats.memo_hits, stats.completed), (2, 2));
    assert_eq!((stats.submitted, stats.queued, stats.processing), (3, 1, 0));
    assert_eq!(*heard.lock(), [with_room, when_full]);

    // The queue works on: the filler is taken and completed, and the hook hears of it.
    let lease = queue.try_next(&w("w")).expect("the filler is ready");
    assert_eq!(lease.job_id(), filler);
    queue
        .complete(&lease, b"done".to_vec().into())
        .expect("completes");
    assert_eq!(queue.stats().completed, 3);
    assert_eq!(*heard.lock(), [with_room, when_full, filler]);
}

// Issue #5's two late defects (session 8): a full queue refused a job the memo store answers,
// and a follower that took over from a cancelled leader queued as if submitted at the takeover.

/// A cache holding the transcripts of the files `ns`.
fn cache_with(ns: &[u8]) -> Cache {
    let cache = cache();
    for &n in ns {
        let key = CacheKey::transcript(&hash(n), "en").expect("valid");
        cache
            .insert(key, Bytes::from_static(b"memo"))
            .expect("insert");
    }
    cache
}

#[test]
fn a_full_queue_accepts_a_job_the_memo_answers_and_it_takes_no_place() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).capacity(1).cache(cache_with(&[1])));
    let filler = queue.submit(job(JobPriority::Low)).expect("room");
    let hit = queue
        .submit(transcription(1, JobPriority::Low))
        .expect("a memo hit needs no room");
    // Nor does it wait for room: a full queue would hold this call for the whole minute.
    let waited = queue
        .submit_timeout(transcription(1, JobPriority::Low), 60 * SEC)
        .expect("a memo hit needs no room");
    for id in [hit, waited] {
        let job = queue.get(id).expect("kept");
        assert_eq!(job.status(), JobStatus::Completed);
        assert_eq!(
            job.result().map(|r| r.as_bytes().as_ref()),
            Some(&b"memo"[..])
        );
    }
    // A job the memo does not answer is still refused, and the filler kept its place.
    assert!(matches!(
        queue.submit(transcription(2, JobPriority::Low)),
        Err(QueueError::Full { capacity: 1 })
    ));
    assert_eq!(queue.status(filler), Some(JobStatus::Queued));
    let stats = queue.stats();
    assert_eq!((stats.memo_hits, stats.completed), (2, 2));
    assert_eq!(
        (stats.submitted, stats.rejected_full, stats.queued),
        (3, 1, 1)
    );
}

/// A follower holds its record (payload included) until its leader finishes, and nothing else
/// bounds how many a leader gathers, so a follower takes a place like any queued job.
#[test]
fn a_follower_takes_a_place_so_a_full_queue_refuses_it() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).capacity(2));
    let leader = submit(&queue, transcription(1, JobPriority::Low));
    let follower = queue
        .submit(transcription(1, JobPriority::Low))
        .expect("room for one follower");
    let refused = transcription(1, JobPriority::Low);
    let refused_id = refused.id();
    assert!(matches!(
        queue.submit(refused),
        Err(QueueError::Full { capacity: 2 })
    ));
    assert_eq!(queue.status(refused_id), None);
    let stats = queue.stats();
    assert_eq!(
        (stats.queued, stats.coalesced_waiting, stats.coalesced),
        (2, 1, 1)
    );
    assert_eq!(stats.rejected_full, 1);
    // The leader's completion frees both places.
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), leader);
    complete(&queue, &lease, Bytes::new());
    assert_eq!(queue.status(follower), Some(JobStatus::Completed));
    assert_eq!(queue.stats().queued, 0);
}

/// With an identical job in flight *and* the key in the memo store, a queue with room coalesces
/// the new job (it completes with the leader); a full one completes it from the memo store
/// rather than refuse it. Either way it ends with a result and no second execution.
#[test]
fn a_full_queue_answers_from_the_memo_a_job_it_has_no_room_to_coalesce() {
    let clock = ManualClock::new();
    let store = cache();
    let queue = built(builder(&clock).capacity(1).cache(store.clone()));
    let leader = submit(&queue, transcription(1, JobPriority::Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    let key = CacheKey::transcript(&hash(1), "en").expect("valid");
    store
        .insert(key, Bytes::from_static(b"elsewhere"))
        .expect("insert");
    let late = queue
        .submit(transcription(1, JobPriority::High))
        .expect("answered by the memo store");
    assert_eq!(queue.status(late), Some(JobStatus::Completed));
    assert!(queue.try_next(&w("w2")).is_none(), "no second execution");
    complete(&queue, &lease, b"ran".to_vec());
    assert_eq!(queue.status(leader), Some(JobStatus::Completed));
    let stats = queue.stats();
    assert_eq!(
        (stats.memo_hits, stats.coalesced, stats.completed),
        (1, 0, 2)
    );
}

#[test]
fn a_full_queue_resubmits_a_dead_letter_the_memo_now_answers() {
    let clock = ManualClock::new();
    let store = cache();
    let queue = built(
        builder(&clock)
            .capacity(1)
            .retry(RetryConfig::fixed(0, SEC))
            .cache(store.clone()),
    );
    let leader = submit(&queue, transcription(1, JobPriority::Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    queue.fail(&lease, "bad").expect("current");
    queue.submit(job(JobPriority::Low)).expect("room");
    // The transcript arrives in the cache some other way.
    let key = CacheKey::transcript(&hash(1), "en").expect("valid");
    store
        .insert(key, Bytes::from_static(b"later"))
        .expect("insert");
    queue
        .resubmit_dead_letter(leader)
        .expect("answered by the memo store");
    let job = queue.get(leader).expect("kept");
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(
        job.result().map(|r| r.as_bytes().as_ref()),
        Some(&b"later"[..])
    );
    assert!(queue.dead_letters().is_empty());
    let stats = queue.stats();
    assert_eq!((stats.memo_hits, stats.completed, stats.failed), (1, 1, 1));
    assert_eq!(
        (stats.queued, stats.dead_letters, stats.rejected_full),
        (1, 0, 0)
    );
}

#[test]
fn a_follower_that_takes_over_keeps_its_fifo_turn() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).aging(None));
    let (leader, follower) = leader_and_follower(&queue, 1, JobPriority::Low, JobPriority::Low);
    let later = submit(&queue, job(JobPriority::Low));
    queue.try_next(&w("w")).expect("the leader");
    queue.cancel(leader).expect("cancel");
    // The follower was submitted before `later`, so it runs first.
    assert_eq!(take_all(&queue), [follower, later]);
}

#[test]
fn a_follower_that_takes_over_keeps_its_aging_credit() {
    let step = 10 * SEC;
    let clock = ManualClock::new();
    let queue = built(builder(&clock).aging(Some(step)));
    let (leader, follower) = leader_and_follower(&queue, 1, JobPriority::Low, JobPriority::Low);
    let running = queue.try_next(&w("w")).expect("the leader");
    assert_eq!(running.job_id(), leader);
    // The leader is cancelled after one and a half steps, under a steady High load.
    clock.advance(step + step / 2);
    queue.cancel(leader).expect("cancel");
    let high = submit(&queue, job(JobPriority::High));
    let take = || {
        let lease = queue.try_next(&w("w")).expect("ready");
        complete(&queue, &lease, Bytes::new());
        lease.job_id()
    };
    assert_eq!(take(), high, "after one step the follower is only Medium");
    // At two steps since its submit (not since the takeover) it competes as High, and is older.
    clock.advance(step / 2);
    let younger = submit(&queue, job(JobPriority::High));
    assert_eq!(take(), follower);
    assert_eq!(take(), younger);
}

// Probes of the memo, coalescing and cancel interactions (session 8) that no test above covers.

/// Priority flows from followers to their leader, never back: a follower that takes over from
/// a more urgent cancelled leader runs at its own priority.
#[test]
fn a_follower_taking_over_from_an_urgent_leader_keeps_its_own_priority() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).aging(None));
    let (leader, follower) = leader_and_follower(&queue, 1, JobPriority::High, JobPriority::Low);
    let medium = submit(&queue, job(JobPriority::Medium));
    queue.cancel(leader).expect("cancel");
    let stats = queue.stats();
    assert_eq!(
        (stats.queued, stats.coalesced_waiting, stats.cancelled),
        (2, 0, 1)
    );
    assert_eq!(take_all(&queue), [medium, follower]);
    assert_eq!(priority_of(&queue, follower), Some(JobPriority::Low));
}

// Issue #5 (session 8): a cancelled follower's priority boost, and a takeover the memo answers.

/// A leader waits at the highest of its own priority and its waiting followers'. Once the
/// urgent follower is cancelled, the leader falls back to its remaining follower's Medium
/// (keeping its turn: behind the earlier Medium job, ahead of the earlier Low one), and `get`
/// reports the priority it was submitted with throughout.
#[test]
fn a_cancelled_followers_boost_ends_with_it() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).aging(None));
    let low = submit(&queue, job(JobPriority::Low));
    let medium = submit(&queue, job(JobPriority::Medium));
    let leader = submit(&queue, transcription(3, JobPriority::Low));
    submit(&queue, transcription(3, JobPriority::Medium));
    let urgent = submit(&queue, transcription(3, JobPriority::High));
    assert_eq!(
        priority_of(&queue, leader),
        Some(JobPriority::Low),
        "the raise is the queue's, not the job's"
    );
    queue.cancel(urgent).expect("cancel");
    assert_eq!(priority_of(&queue, leader), Some(JobPriority::Low));
    let first = queue.try_next(&w("w")).expect("ready");
    assert_eq!(
        first.job_id(),
        medium,
        "the cancelled follower's boost is gone"
    );
    complete(&queue, &first, Bytes::new());
    let second = queue.try_next(&w("w")).expect("ready");
    assert_eq!(second.job_id(), leader);
    assert_eq!(
        second.priority(),
        JobPriority::Medium,
        "taken at its remaining follower's priority"
    );
    complete(&queue, &second, Bytes::new());
    assert_eq!(take_all(&queue), [low]);
}

/// The same when the follower is cancelled while its leader runs: a retry of the leader waits
/// at its own priority again.
#[test]
fn a_retried_leader_no_longer_has_the_boost_of_a_follower_cancelled_while_it_ran() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .aging(None)
            .retry(RetryConfig::fixed(1, Duration::ZERO)),
    );
    let leader = submit(&queue, transcription(3, JobPriority::Low));
    let lease = queue.try_next(&w("w")).expect("ready");
    let urgent = submit(&queue, transcription(3, JobPriority::High));
    let medium = submit(&queue, job(JobPriority::Medium));
    queue.cancel(urgent).expect("cancel");
    queue.fail(&lease, "transient").expect("current");
    assert_eq!(take_all(&queue), [medium, leader]);
    assert_eq!(priority_of(&queue, leader), Some(JobPriority::Low));
}

/// A leader is cancelled after the key was stored some other way while it ran: its followers
/// are answered from the memo store, as a submit would be, and nothing runs again.
#[test]
fn followers_of_a_cancelled_leader_take_a_result_stored_meanwhile_without_running() {
    let clock = ManualClock::new();
    let store = cache();
    let reported = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&reported);
    let queue = built(
        builder(&clock)
            .cache(store.clone())
            .on_complete(move |c| sink.lock().expect("not poisoned").push((c.id, c.memo_hit))),
    );
    let leader = submit(&queue, transcription(8, JobPriority::Low));
    let followers =
        [JobPriority::Low, JobPriority::High].map(|p| submit(&queue, transcription(8, p)));
    let lease = queue.try_next(&w("w")).expect("ready");
    assert_eq!(lease.job_id(), leader);
    let key = CacheKey::transcript(&hash(8), "en").expect("valid");
    store
        .insert(key, Bytes::from_static(b"elsewhere"))
        .expect("insert");
    queue.cancel(leader).expect("cancel");
    assert!(queue.try_next(&w("w")).is_none(), "no second execution");
    for id in followers {
        let job = queue.get(id).expect("kept");
        assert_eq!(job.status(), JobStatus::Completed);
        assert_eq!(
            job.result().map(|r| r.as_bytes().as_ref()),
            Some(&b"elsewhere"[..])
        );
    }
    let stats = queue.stats();
    assert_eq!(
        (stats.queued, stats.coalesced_waiting, stats.processing),
        (0, 0, 0)
    );
    assert_eq!(
        (stats.completed, stats.memo_hits, stats.cancelled),
        (2, 2, 1)
    );
    assert_eq!(
        *reported.lock().expect("not poisoned"),
        followers.map(|id| (id, true))
    );
    // The key has no leader left: an identical job is a plain memo hit.
    let later = submit(&queue, transcription(8, JobPriority::Low));
    assert_eq!(queue.status(later), Some(JobStatus::Completed));
    assert!(queue.try_next(&w("w")).is_none());
    assert!(queue.complete(&lease, Bytes::new().into()).is_err());
}

// Issue #5 (session 9): what a submit's memo check counts in the cache's stats. The cache is
// the host's; a user reading `cache.stats()` must see one lookup per submit that asked for a
// result, not one per capacity check.

/// A full queue checks the memo store before it refuses or waits, and that check counts
/// nothing: a submit it refuses counts neither a hit nor a miss, however many times a waiting
/// one re-checked (every 50 ms slice), and one the memo answers counts exactly one hit.
#[test]
fn a_full_queue_counts_one_hit_per_answered_submit_and_no_miss_for_a_refused_one() {
    let store = cache_with(&[1]);
    let queue = built(JobQueue::builder().capacity(1).cache(store.clone()));
    queue.submit(job(JobPriority::Low)).expect("room");
    assert!(matches!(
        queue.submit(transcription(2, JobPriority::Low)),
        Err(QueueError::Full { capacity: 1 })
    ));
    let err = queue
        .submit_timeout(
            transcription(2, JobPriority::Low),
            Duration::from_millis(120),
        )
        .expect_err("still full");
    assert!(matches!(err, QueueError::Full { capacity: 1 }), "{err}");
    let stats = store.stats();
    assert_eq!((stats.hits, stats.misses), (0, 0), "refused: nothing asked");
    queue
        .submit(transcription(1, JobPriority::Low))
        .expect("a memo hit needs no room");
    queue
        .submit_timeout(transcription(1, JobPriority::Low), 60 * SEC)
        .expect("a memo hit needs no room");
    let stats = store.stats();
    assert_eq!(
        (stats.hits, stats.misses),
        (2, 0),
        "one hit per answered submit"
    );
    assert_eq!(queue.stats().memo_hits, 2);
}

/// A submit whose job is queued to run counts one miss, also when a full queue refused the
/// same job before and held it while it waited for room.
#[test]
fn a_submit_that_waited_for_room_counts_one_miss_when_its_job_is_queued() {
    let store = cache();
    let queue = built(JobQueue::builder().capacity(1).cache(store.clone()));
    queue.submit(job(JobPriority::Low)).expect("room");
    let work = transcription(2, JobPriority::Low);
    assert!(matches!(
        queue.submit(work.clone()),
        Err(QueueError::Full { capacity: 1 })
    ));
    let producer = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.submit_timeout(work, 30 * SEC))
    };
    // Room appears whether or not the producer waits already: either way its job gets in.
    let lease = queue.next(&w("w"), 30 * SEC).expect("the filler");
    complete(&queue, &lease, Bytes::new());
    let id = producer.join().expect("no panic").expect("room");
    assert_eq!(queue.status(id), Some(JobStatus::Queued));
    let stats = store.stats();
    assert_eq!((stats.hits, stats.misses), (0, 1));
}

// Audit of session 9 (issue #5): defects a user would hit.

/// A job whose last lease ran out is dead-lettered by whichever call comes first, and
/// `dead_letters` is such a call: it lists the job even when no other call noticed first.
#[test]
fn dead_letters_lists_a_job_whose_last_lease_ran_out_without_another_call() {
    let clock = ManualClock::new();
    let queue = built(builder(&clock).lease(SEC).retry(RetryConfig::fixed(0, SEC)));
    let hung = submit(&queue, job(JobPriority::Low));
    queue.try_next(&w("dies")).expect("ready");
    clock.advance(SEC);
    let dead: Vec<JobId> = queue.dead_letters().iter().map(Job::id).collect();
    assert_eq!(dead, [hung]);
    assert_eq!(queue.status(hung), Some(JobStatus::Failed));
}

/// A completion hook may use the queue, and a submit the memo store answers completes at
/// once, which calls the hook, which may submit again: a chain (a hook that submits the next
/// stage of a pipeline whose results are cached). The queue reports the chain's completions
/// in a loop, not by nesting hook calls, so a 20,000-long chain runs on a 256 KiB stack with
/// hook calls never more than one deep. Before, each round nested one hook call (and a
/// submit, a report and two `catch_unwind` frames) deeper, and the chain overflowed the
/// thread's stack, which aborts the whole test process (`thread ... has overflowed its
/// stack`, SIGABRT), as the cache's refilling eviction listener did.
#[test]
fn a_completion_hook_that_submits_memo_hits_runs_its_chain_in_a_loop_not_a_recursion() {
    const CHAIN: usize = 20_000;
    let slot: Arc<parking_lot::Mutex<Option<JobQueue>>> = Arc::default();
    let (heard, depth, deepest) = (
        Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let queue = {
        let (handle, heard, depth, deepest) = (
            Arc::clone(&slot),
            Arc::clone(&heard),
            Arc::clone(&depth),
            Arc::clone(&deepest),
        );
        built(
            JobQueue::builder()
                .cache(cache_with(&[1]))
                .on_complete(move |c| {
                    let inside = depth.fetch_add(1, Ordering::SeqCst) + 1;
                    deepest.fetch_max(inside, Ordering::SeqCst);
                    let round = heard.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(c.memo_hit);
                    if round < CHAIN {
                        let queue = handle.lock().clone().expect("set before the first submit");
                        queue
                            .submit(transcription(1, JobPriority::Low))
                            .expect("a memo hit is accepted");
                    }
                    depth.fetch_sub(1, Ordering::SeqCst);
                }),
        )
    };
    *slot.lock() = Some(queue.clone());
    let submitter = {
        let queue = queue.clone();
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || queue.submit(transcription(1, JobPriority::Low)))
            .expect("spawned")
    };
    submitter.join().expect("no panic").expect("accepted");
    *slot.lock() = None;
    assert_eq!(heard.load(Ordering::SeqCst), CHAIN);
    assert_eq!(deepest.load(Ordering::SeqCst), 1, "hook calls nested");
    let stats = queue.stats();
    assert_eq!(
        (stats.submitted, stats.completed),
        (CHAIN as u64, CHAIN as u64)
    );
    assert_eq!((stats.memo_hits, stats.queued), (CHAIN as u64, 0));
}

/// Jobs completed by a call from inside the completion hook are reported after the hook
/// returns, every one of them, and a panic of the hook while hearing them reaches the
/// outermost caller once the chain is done, the queue unlocked and every job completed.
#[test]
fn a_panic_in_a_chained_hook_call_reaches_the_outermost_caller_after_the_chain() {
    quiet_hook_panics();
    const CHAIN: usize = 10;
    let slot: Arc<parking_lot::Mutex<Option<JobQueue>>> = Arc::default();
    let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let queue = {
        let (handle, recorded) = (Arc::clone(&slot), Arc::clone(&heard));
        built(
            JobQueue::builder()
                .cache(cache_with(&[1]))
                .on_complete(move |c| {
                    let round = {
                        let mut heard = recorded.lock();
                        heard.push(c.id);
                        heard.len()
                    };
                    if round < CHAIN {
                        let queue = handle.lock().clone().expect("set before the first submit");
                        queue
                            .submit(transcription(1, JobPriority::Low))
                            .expect("a memo hit is accepted");
                        assert_eq!(
                            recorded.lock().len(),
                            round,
                            "a job completed inside the hook was reported inside it"
                        );
                    }
                    if round == 5 {
                        std::panic::panic_any(HOOK_PANIC);
                    }
                }),
        )
    };
    *slot.lock() = Some(queue.clone());
    let first = transcription(1, JobPriority::Low);
    let first_id = first.id();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| queue.submit(first)));
    *slot.lock() = None;
    let payload = outcome.expect_err("the panic reaches the outermost caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&HOOK_PANIC));
    let heard = heard.lock().clone();
    assert_eq!(heard.len(), CHAIN);
    assert_eq!(heard[0], first_id, "reported in the order completed");
    for id in heard {
        assert_eq!(queue.status(id), Some(JobStatus::Completed));
    }
    let stats = queue.stats();
    assert_eq!(
        (stats.completed, stats.memo_hits),
        (CHAIN as u64, CHAIN as u64)
    );
}

/// A panic payload of the hook's own type whose drop panics in turn.
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        std::panic::panic_any(HOOK_PANIC);
    }
}

/// A hook's panic payload is the hook's value, and dropping it runs the hook's code. The
/// queue keeps the first panic of a call and drops the others: a payload whose drop panics
/// must not keep the rest of the batch from being reported. Before the fix, the second
/// payload's drop panicked inside the reporting loop, so the third job was never reported,
/// and that panic, unwinding past the first payload (whose drop panicked too), aborted the
/// test process ("panic in a destructor during cleanup", SIGABRT).
#[test]
fn a_hook_panic_payload_whose_drop_panics_does_not_cut_the_batch_short() {
    let (_, _, completed) = complete_a_leader_and_two_followers(
        |heard| heard <= 2,
        || std::panic::panic_any(PanicsWhenDropped),
    );
    let payload = completed.expect_err("the hook's first panic reaches the caller");
    assert!(payload.is::<PanicsWhenDropped>());
    // Dropping it would panic here, in the test.
    std::mem::forget(payload);
}

/// A heartbeat is checked like a completion: one that comes at or after its lease's deadline
/// is refused as expired (and the job is taken back), and one from an old lease, after the
/// job was leased again to a worker of the same name, is refused as stale and extends
/// nothing: the new lease still ends when it would have.
#[test]
fn a_heartbeat_after_expiry_or_from_an_old_lease_is_refused_and_extends_nothing() {
    let clock = ManualClock::new();
    let (queue, id) = one_job_with_a_10s_lease(&clock);
    let old = queue.try_next(&w("w")).expect("ready");
    clock.advance(10 * SEC);
    assert!(matches!(
        queue.heartbeat(&old),
        Err(QueueError::LeaseExpired { id: e, .. }) if e == id
    ));
    assert_eq!(queue.status(id), Some(JobStatus::Queued), "taken back");
    let new = queue.try_next(&w("w")).expect("ready again");
    assert_eq!(new.attempt(), 1);
    clock.advance(5 * SEC);
    assert!(matches!(
        queue.heartbeat(&old),
        Err(QueueError::StaleLease { id: e, status: JobStatus::Processing, .. }) if e == id
    ));
    clock.advance(5 * SEC);
    assert!(matches!(
        queue.complete(&new, Bytes::new().into()),
        Err(QueueError::LeaseExpired { .. })
    ));
    assert_eq!(queue.stats().lease_expirations, 2);
}

/// A copy of a job taken out of one queue and submitted to another gets the other queue's
/// retry budget: its `RetryConfig`'s `max_retries` (unless the job set its own) and no
/// retries used, so that its first attempt there is attempt 0. Before the fix the first
/// queue's `max_retries`, stamped on the job at its first submit, went with every copy as if
/// it were the job's own, and so did the retries used there: each copy below ran six times
/// in the strict queue (five from attempt 1 for the copy taken while it waited out a retry)
/// instead of twice.
#[test]
fn a_job_copied_to_another_queue_gets_that_queues_retry_budget() {
    let clock = ManualClock::new();
    let first = built(builder(&clock).retry(RetryConfig::fixed(5, SEC)));
    // The attempts a job makes in a new queue that retries once, at once.
    let attempts_in_a_strict_queue = |job: Job| -> Vec<u32> {
        let strict = built(builder(&clock).retry(RetryConfig::fixed(1, Duration::ZERO)));
        let id = submit(&strict, job);
        let mut attempts = Vec::new();
        while let Some(lease) = strict.try_next(&w("w")) {
            attempts.push(lease.attempt());
            strict.fail(&lease, "no").expect("current");
        }
        assert_eq!(strict.status(id), Some(JobStatus::Failed));
        attempts
    };

    let id = submit(&first, job(JobPriority::Medium));
    let queued = first.get(id).expect("known");
    assert_eq!(queued.max_retries(), 5, "the first queue's budget");
    assert_eq!(attempts_in_a_strict_queue(queued), [0, 1]);

    let lease = first.try_next(&w("w")).expect("ready");
    first.fail(&lease, "once").expect("current");
    let retrying = first.get(id).expect("known");
    assert_eq!(
        (retrying.status(), retrying.retry_count()),
        (JobStatus::Queued, 1)
    );
    assert_eq!(attempts_in_a_strict_queue(retrying), [0, 1]);

    while first.status(id) != Some(JobStatus::Failed) {
        clock.advance(SEC);
        let lease = first.try_next(&w("w")).expect("due");
        first.fail(&lease, "again").expect("current");
    }
    let mut dead = first.dead_letters().pop().expect("dead-lettered");
    dead.reopen().expect("failed");
    assert_eq!(attempts_in_a_strict_queue(dead), [0, 1]);

    // A budget of the job's own goes with it.
    let own = submit(&first, job(JobPriority::Medium).with_max_retries(2));
    let own = first.get(own).expect("known");
    assert_eq!(attempts_in_a_strict_queue(own), [0, 1, 2]);
}

/// A memo store that holds nothing and counts the peeks a full queue makes at a keyed submit
/// waiting for room: one as it starts to wait, under the lock it sleeps with, and one at
/// each wake that finds no room (a wake that finds room submits without another).
#[derive(Debug, Default)]
struct PeekCounter(AtomicU64);

impl memocache::MemoStore for PeekCounter {
    fn lookup(&self, _: &CacheKey) -> Option<Bytes> {
        None
    }

    fn peek(&self, _: &CacheKey) -> Option<Bytes> {
        self.0.fetch_add(1, Ordering::SeqCst);
        None
    }

    fn store(&self, _: CacheKey, _: Bytes) -> Result<(), memocache::job::MemoStoreError> {
        Ok(())
    }
}

/// Three submits wait for room in a full queue of `capacity`; three jobs then complete one
/// by one, each once the place the one before freed is taken. Returns how long that took and
/// how many wakes found no room.
fn three_waiting_submits_and_three_free_places(capacity: usize) -> (Duration, u64) {
    let store = Arc::new(PeekCounter::default());
    let queue = JobQueue::builder()
        .capacity(capacity)
        .memo_store(store.clone())
        .build()
        .expect("valid");
    for _ in 0..capacity {
        queue.submit(job(JobPriority::Medium)).expect("room");
    }
    let leases: Vec<_> = (0..3)
        .map(|_| queue.try_next(&w("w")).expect("ready"))
        .collect();
    let started = std::time::Instant::now();
    let submitters: Vec<_> = (0..3)
        .map(|n| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                queue.submit_timeout(transcription(n, JobPriority::Medium), 60 * SEC)
            })
        })
        .collect();
    // Each has peeked once it is waiting (or about to, holding the lock a completion takes).
    while store.0.load(Ordering::SeqCst) < 3 {
        std::thread::yield_now();
    }
    for (taken, lease) in (1..).zip(&leases) {
        queue.complete(lease, Bytes::new().into()).expect("current");
        while queue.stats().submitted < (capacity + taken) as u64 {
            std::thread::yield_now();
        }
    }
    for submitter in submitters {
        submitter.join().expect("returns").expect("room");
    }
    (started.elapsed(), store.0.load(Ordering::SeqCst) - 3)
}

/// A submit waiting for room in a full queue is woken by the first free place, and a free
/// place wakes one waiting submit, not all of them. Before the fix the waiting submits were
/// woken, all at once, only when a sixteenth of the capacity had drained: with capacity 100
/// none was woken until six jobs had finished, and each took its place at the end of its
/// wait slice (50 ms in every run); with 16 or 17 every free place woke all three, and the
/// two that found no room looked again (three wasted wakes in every run). A wake-up is seen
/// by the memo store's peeks; a run slower than the slice (a loaded machine) may see a
/// submit look again at the end of its slice, so the best of three runs must be clean.
#[test]
fn a_free_place_wakes_one_waiting_submit_at_once() {
    for capacity in [16, 17, 100] {
        let runs: Vec<_> = (0..3)
            .map(|_| three_waiting_submits_and_three_free_places(capacity))
            .collect();
        assert!(
            runs.iter()
                .any(|&(took, wasted)| took < Duration::from_millis(40) && wasted == 0),
            "capacity {capacity}: (time, wakes that found no room) of three runs: {runs:?}"
        );
    }
}

/// A taker blocked in `next` takes back a lease shorter than its wait slice (50 ms) when the
/// lease ends, give or take the clock's resolution: it waits for the first lease's end. (A
/// guard: this held before session 31, which was asked to check it.)
#[test]
fn a_blocked_taker_takes_back_a_short_lease_when_it_ends() {
    let lease = Duration::from_millis(10);
    let clock = Arc::new(CoarseClock);
    let limit = lease + clock.resolution() + Duration::from_millis(15);
    let fastest = (0..3)
        .map(|_| {
            let queue = JobQueue::builder()
                .clock(clock.clone())
                .lease(lease)
                .retry(RetryConfig::fixed(1, Duration::ZERO))
                .build()
                .expect("valid");
            let id = queue.submit(job(JobPriority::Medium)).expect("room");
            let _abandoned = queue.try_next(&w("a")).expect("ready");
            let started = std::time::Instant::now();
            let taken = queue.next(&w("b"), 60 * SEC).expect("taken back");
            assert_eq!((taken.job_id(), taken.attempt()), (id, 1));
            started.elapsed()
        })
        .min()
        .expect("three runs");
    assert!(fastest < limit, "the fastest of three took {fastest:?}");
}

/// A lease that runs out while no call reaches the queue fails its attempt at its deadline,
/// not when a call first notices it: the retry is due its backoff after the deadline, and a
/// last attempt is dead-lettered as of the deadline. (The attempt was dated at the call that
/// noticed it: a worker asking 50 s after a lease ran out on a 1 s backoff was told there was
/// nothing to run, and the retry waited another second.)
#[test]
fn a_lease_noticed_late_fails_at_its_deadline_and_is_retried_a_backoff_after_it() {
    let clock = ManualClock::new();
    let queue = built(
        builder(&clock)
            .lease(10 * SEC)
            .retry(RetryConfig::fixed(1, SEC)),
    );
    let id = submit(&queue, job(JobPriority::Medium));
    // Its worker dies: the lease runs out at 10 s, the retry is due at 11 s.
    let _lost = queue.try_next(&w("dead")).expect("ready");
    // No call reaches the queue until 60 s.
    clock.advance(60 * SEC);
    let lease = queue.try_next(&w("w")).expect("due since 11 s");
    assert_eq!((lease.job_id(), lease.attempt()), (id, 1));
    // The last attempt's lease runs out at 70 s: dead-lettered as of then.
    clock.advance(30 * SEC);
    let dead = queue.get(id).expect("kept");
    assert_eq!(dead.status(), JobStatus::Failed);
    assert_eq!(
        dead.completed_at(),
        Some(Timestamp::from_nanos(70_000_000_000))
    );
}
