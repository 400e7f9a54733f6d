//! [`JobQueue`]: a priority job queue with aging, delayed retries, leases and a dead letter.
//!
//! # Design
//!
//! All state sits behind **one mutex**. Every operation is a handful of O(1) or O(log n) steps
//! on small structures, so the lock is held for well under a microsecond and a single lock
//! beats finer-grained schemes at the ≤ 10 workers a [`crate::ConcurrencyLimit`] allows; it also
//! makes every transition atomic (a job is never seen half-moved between two structures).
//!
//! * **Ready jobs** live in one FIFO `VecDeque` per (priority, job type), each entry stamped
//!   with a queue-wide sequence number. A take looks at the (at most 12) heads and picks the
//!   highest *effective* priority, then the lowest sequence number: High before Medium before
//!   Low, FIFO within a priority. Splitting by type lets a worker take only the types it has
//!   handlers for without scanning past the others.
//! * **Aging**: a job's effective priority rises one level per `aging_step` it has waited, up
//!   to High. Heads are the oldest jobs of their deque, so looking at heads suffices. A Low job
//!   therefore waits at most about `2 * aging_step` before it competes with fresh High work on
//!   equal terms (then FIFO order, i.e. its age, wins), so a steady High load cannot starve it.
//! * **Delayed retries** sit in a map ordered by due time; they hold no worker. Due jobs move
//!   to the back of their ready deque at the next operation that reads the clock.
//! * **Leases**: a take leases the job to a worker until `now + lease`. Leases sit in a map
//!   ordered by deadline; an expired lease is treated as a failed attempt ("lease expired"): the
//!   job is retried with backoff, or dead-lettered once its retries are spent, so a job that
//!   always hangs its worker cannot loop forever. A completion, failure or heartbeat presents
//!   its [`Lease`]; one that is no longer current (expired, cancelled, or the job was leased
//!   again — possibly to the same worker, which is why a lease id and not the worker name is
//!   checked) is refused with [`QueueError::StaleLease`] or [`QueueError::LeaseExpired`].
//! * **Dead letter**: a job that exhausts its retries is `Failed` and kept in a dead-letter
//!   list, oldest first, for inspection and [`JobQueue::resubmit_dead_letter`]. The list is
//!   bounded (`dead_letter_capacity`); overflow drops the oldest and is counted.
//! * **Finished jobs** (completed, cancelled) stay readable through [`JobQueue::get`] until
//!   `retain_finished` newer ones have finished; the queue does not grow without bound.
//! * **Capacity**: at most `capacity` jobs may be queued or running; a submit beyond that is
//!   refused with [`QueueError::Full`], never dropped.
//! * **Cancel** is O(queue length) in the worst case (a `VecDeque` removal); it is rare, and
//!   the hot paths stay free of tombstones.
//!
//! Time comes from the queue's [`crate::Clock`], so tests drive delays, aging and leases with a
//! [`crate::ManualClock`]. Blocking waits ([`JobQueue::next`]) use real time; since the queue
//! cannot see a clock move, a blocked taker re-checks at least every 50 ms.
//!
//! Memoized jobs (memo hits, coalescing, storing results) are described in [`crate::job::memo`].

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::memo::MemoStore;
use super::model::{InvalidStateTransition, Job, JobId, JobPayload, JobPriority, JobResult};
use super::model::{JobStatus, JobType, WorkerId};
use super::retry::RetryConfig;
use crate::cache::Cache;
use crate::key::CacheKey;
use crate::time::{SharedClock, Timestamp, system_clock};

/// Longest a blocked [`JobQueue::next`] sleeps before re-reading the clock.
const MAX_WAIT_SLICE: Duration = Duration::from_millis(50);

/// Why a queue operation was refused. Nothing is changed when an error is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue already holds `capacity` queued or running jobs.
    #[error("job queue is full: {capacity} jobs are queued or running; retry later")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// A job with this id was already submitted.
    #[error("job {0} was already submitted to this queue")]
    Duplicate(JobId),
    /// Only a new job (status Queued) can be submitted.
    #[error("job {id} cannot be submitted in status {status}: only a new, queued job can")]
    NotNew {
        /// The job.
        id: JobId,
        /// Its status.
        status: JobStatus,
    },
    /// The queue has no record of the job: never submitted, or finished long enough ago that
    /// its record was dropped.
    #[error("job {0} is not known to this queue")]
    NotFound(JobId),
    /// The lease is no longer current: the job was cancelled, finished, or leased again.
    #[error("worker {worker} no longer holds the lease on job {id} (the job is now {status})")]
    StaleLease {
        /// The job.
        id: JobId,
        /// The worker that presented the lease.
        worker: WorkerId,
        /// The job's status now.
        status: JobStatus,
    },
    /// The lease expired before the call; the job went back to the queue (or the dead letter).
    #[error("the lease of worker {worker} on job {id} expired; the job was taken back")]
    LeaseExpired {
        /// The job.
        id: JobId,
        /// The worker that presented the lease.
        worker: WorkerId,
    },
    /// The job is not in the dead-letter list.
    #[error("job {0} is not in the dead-letter list")]
    NotDeadLettered(JobId),
    /// The job's state machine refused the operation (for example cancelling a finished job).
    #[error(transparent)]
    InvalidTransition(#[from] InvalidStateTransition),
}

/// Why a [`JobQueue`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueConfigError {
    /// A capacity of zero would refuse every job.
    #[error("queue capacity must be at least 1")]
    ZeroCapacity,
    /// A zero lease would expire every job the moment it is taken.
    #[error("lease duration must be positive")]
    ZeroLease,
    /// A zero aging step would make every job High at once.
    #[error("aging step must be positive (use `aging(None)` to turn aging off)")]
    ZeroAgingStep,
}

/// Counts of a queue's jobs: current gauges, and totals since the queue was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs waiting (ready, waiting out a retry delay, or coalesced onto a leader).
    pub queued: usize,
    /// Of `queued`, those waiting out a retry delay.
    pub delayed: usize,
    /// Of `queued`, followers coalesced onto an identical job.
    pub coalesced_waiting: usize,
    /// Jobs leased to a worker.
    pub processing: usize,
    /// Jobs in the dead-letter list.
    pub dead_letters: usize,
    /// Jobs accepted.
    pub submitted: u64,
    /// Submits refused because the queue was full.
    pub rejected_full: u64,
    /// Jobs completed (by a worker, a memo hit, or a coalesced leader).
    pub completed: u64,
    /// Of `completed`, memo hits at submit.
    pub memo_hits: u64,
    /// Jobs coalesced onto an identical queued or running job.
    pub coalesced: u64,
    /// Jobs that failed for good (dead-lettered).
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Leases that expired.
    pub lease_expirations: u64,
    /// Results the memo store refused.
    pub memo_store_failures: u64,
    /// Dead letters dropped because the list was full.
    pub dead_letters_evicted: u64,
}

/// A job leased to a worker: what it needs to run the job, and the proof of its lease that
/// [`JobQueue::complete`], [`JobQueue::fail`], [`JobQueue::heartbeat`] and
/// [`JobQueue::release`] check.
#[derive(Clone, Debug)]
pub struct Lease {
    job_id: JobId,
    lease_id: u64,
    worker: WorkerId,
    job_type: JobType,
    priority: JobPriority,
    payload: JobPayload,
    attempt: u32,
    deadline: Timestamp,
    memo_key: Option<CacheKey>,
}

impl Lease {
    /// The job.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// The worker holding the lease.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// The kind of work.
    pub fn job_type(&self) -> JobType {
        self.job_type
    }

    /// The job's priority.
    pub fn priority(&self) -> JobPriority {
        self.priority
    }

    /// The job's input.
    pub fn payload(&self) -> &JobPayload {
        &self.payload
    }

    /// The job's retry count when it was taken: 0 on the first attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the lease expires unless extended by [`JobQueue::heartbeat`] (as of the take).
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// The job's memo key, if it is memoized.
    pub fn memo_key(&self) -> Option<&CacheKey> {
        self.memo_key.as_ref()
    }
}

/// A job that reached `Completed`, as reported to the hook set with
/// [`JobQueueBuilder::on_complete`] (for example to record its latency in a metrics registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobCompletion {
    /// The job.
    pub id: JobId,
    /// The kind of work.
    pub job_type: JobType,
    /// When the queue accepted the job (its `created_at`; a re-submitted dead letter keeps its
    /// first submit time).
    pub submitted_at: Timestamp,
    /// When it completed.
    pub completed_at: Timestamp,
    /// Whether it completed at submit from the memo store, without a worker.
    pub memo_hit: bool,
}

impl JobCompletion {
    /// Time from submit to completion on the queue's clock.
    pub fn latency(&self) -> Duration {
        self.completed_at
            .saturating_duration_since(self.submitted_at)
    }

    fn of(job: &Job, memo_hit: bool) -> JobCompletion {
        JobCompletion {
            id: job.id(),
            job_type: job.job_type(),
            submitted_at: job.created_at(),
            completed_at: job.completed_at().unwrap_or_default(),
            memo_hit,
        }
    }
}

/// The hook [`JobQueueBuilder::on_complete`] sets.
type CompletionHook = Arc<dyn Fn(&JobCompletion) + Send + Sync>;

/// Configures and builds a [`JobQueue`].
#[derive(Clone)]
pub struct JobQueueBuilder {
    capacity: usize,
    retry: RetryConfig,
    lease: Duration,
    aging_step: Option<Duration>,
    retain_finished: usize,
    dead_letter_capacity: usize,
    clock: Option<SharedClock>,
    memo: Option<Arc<dyn MemoStore>>,
    on_complete: Option<CompletionHook>,
}

impl fmt::Debug for JobQueueBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueueBuilder")
            .field("capacity", &self.capacity)
            .field("retry", &self.retry)
            .field("lease", &self.lease)
            .field("aging_step", &self.aging_step)
            .field("retain_finished", &self.retain_finished)
            .field("dead_letter_capacity", &self.dead_letter_capacity)
            .field("memo", &self.memo)
            .field("on_complete", &self.on_complete.is_some())
            .finish_non_exhaustive()
    }
}

impl JobQueueBuilder {
    /// At most `capacity` jobs queued or running (default 100 000).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The retry policy (default [`RetryConfig::default`]); its `max_retries` applies to jobs
    /// that do not set their own.
    #[must_use]
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// How long a take leases a job before it is taken back (default 5 minutes).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Raise a waiting job's priority one level per `step` waited (default 30 s); `None` turns
    /// aging off (strict priorities).
    #[must_use]
    pub fn aging(mut self, step: Option<Duration>) -> Self {
        self.aging_step = step;
        self
    }

    /// Keep the records of this many finished (completed or cancelled) jobs readable
    /// (default 10 000).
    #[must_use]
    pub fn retain_finished(mut self, n: usize) -> Self {
        self.retain_finished = n;
        self
    }

    /// Keep at most this many dead letters, dropping the oldest (default 10 000).
    #[must_use]
    pub fn dead_letter_capacity(mut self, n: usize) -> Self {
        self.dead_letter_capacity = n;
        self
    }

    /// The clock for delays, aging and leases (default the system clock).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Where memoized results are looked up and stored (default none).
    #[must_use]
    pub fn memo_store(mut self, store: Arc<dyn MemoStore>) -> Self {
        self.memo = Some(store);
        self
    }

    /// Memoizes results in `cache` (shorthand for [`JobQueueBuilder::memo_store`]).
    #[must_use]
    pub fn cache(self, cache: Cache) -> Self {
        self.memo_store(Arc::new(cache))
    }

    /// Calls `hook` once for every job that completes: by a worker, as a memo hit at submit, or
    /// with the leader it was coalesced onto. The hook runs on the completing thread after the
    /// queue's lock is released, so it may call the queue; it should be quick, since that
    /// thread is usually a worker. Failed and cancelled jobs are not reported (their counts are
    /// in [`JobQueue::stats`]).
    #[must_use]
    pub fn on_complete(mut self, hook: impl Fn(&JobCompletion) + Send + Sync + 'static) -> Self {
        self.on_complete = Some(Arc::new(hook));
        self
    }

    /// Builds the queue.
    pub fn build(self) -> Result<JobQueue, QueueConfigError> {
        if self.capacity == 0 {
            return Err(QueueConfigError::ZeroCapacity);
        }
        if self.lease.is_zero() {
            return Err(QueueConfigError::ZeroLease);
        }
        if self.aging_step.is_some_and(|s| s.is_zero()) {
            return Err(QueueConfigError::ZeroAgingStep);
        }
        let aging_nanos = self
            .aging_step
            .map(|s| u64::try_from(s.as_nanos()).unwrap_or(u64::MAX));
        Ok(JobQueue {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                available: Condvar::new(),
                clock: self.clock.unwrap_or_else(system_clock),
                memo: self.memo,
                capacity: self.capacity,
                retry: self.retry,
                lease: self.lease,
                aging_nanos,
                retain_finished: self.retain_finished,
                dead_letter_capacity: self.dead_letter_capacity,
                on_complete: self.on_complete,
            }),
        })
    }
}

/// A priority job queue; see the module docs. Cloning gives another handle to the same queue.
///
/// ```
/// use memocache::{Job, JobPriority, JobQueue, JobStatus, JobType, WorkerId};
///
/// let queue = JobQueue::builder().build()?;
/// let low = queue.submit(Job::new(JobType::Indexing, &b"a"[..]).with_priority(JobPriority::Low))?;
/// let high = queue.submit(Job::new(JobType::Indexing, &b"b"[..]).with_priority(JobPriority::High))?;
///
/// let worker = WorkerId::new("w1");
/// let lease = queue.try_next(&worker).expect("a job is ready");
/// assert_eq!(lease.job_id(), high);
/// queue.complete(&lease, b"done".to_vec().into())?;
/// assert_eq!(queue.status(high), Some(JobStatus::Completed));
/// assert_eq!(queue.status(low), Some(JobStatus::Queued));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct JobQueue {
    inner: Arc<Inner>,
}

impl fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueue")
            .field("capacity", &self.inner.capacity)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    state: Mutex<State>,
    available: Condvar,
    clock: SharedClock,
    memo: Option<Arc<dyn MemoStore>>,
    capacity: usize,
    retry: RetryConfig,
    lease: Duration,
    aging_nanos: Option<u64>,
    retain_finished: usize,
    dead_letter_capacity: usize,
    on_complete: Option<CompletionHook>,
}

/// A ready job in its (priority, type) deque.
#[derive(Clone, Copy)]
struct Ready {
    id: JobId,
    seq: u64,
    since: Timestamp,
}

/// Where a non-terminal job is held, so that moving it touches exactly one structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// In `ready[priority][type]` with this sequence number.
    Ready { seq: u64 },
    /// In `delayed` under this key.
    Delayed { due: Timestamp, seq: u64 },
    /// In `leases` under (deadline, lease id).
    Leased { deadline: Timestamp, lease_id: u64 },
    /// Waiting for this leader's result.
    Follower { leader: JobId },
    /// Terminal: in `finished` or `dead`.
    Done,
}

struct Record {
    /// Boxed so that table entries stay small: the table is probed on every operation and
    /// keeps `retain_finished` old records, so its size decides how much of it stays cached.
    job: Box<Job>,
    place: Place,
    /// Jobs coalesced onto this one.
    followers: Vec<JobId>,
}

#[derive(Default)]
struct State {
    records: HashMap<JobId, Record, BuildHasherDefault<JobIdHasher>>,
    ready: [[VecDeque<Ready>; 4]; 3],
    delayed: BTreeMap<(Timestamp, u64), JobId>,
    leases: BTreeMap<(Timestamp, u64), JobId>,
    leaders: HashMap<CacheKey, JobId>,
    finished: VecDeque<JobId>,
    dead: VecDeque<JobId>,
    seq: u64,
    /// Jobs queued or running (what `capacity` bounds).
    live: usize,
    followers: usize,
    /// Takers blocked in `next`.
    waiting: usize,
    stats: QueueStats,
    /// Completions to report to the hook once the lock is released (empty without a hook).
    completions: Vec<JobCompletion>,
}

/// The hasher of the job table: [`JobId`] hashes as one word of random UUID bits, which is
/// already a good hash, so it is used as is instead of running SipHash over it. Safe against
/// flooding because every id in the table came from [`JobId::generate`] (a job cannot be
/// built with a chosen id), so no caller can pick colliding keys.
#[derive(Default)]
struct JobIdHasher(u64);

impl Hasher for JobIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    /// Not used by `JobId`; a plain FNV-1a fold so that the hasher is correct for any input.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A set of job types a taker accepts.
#[derive(Clone, Copy)]
struct TypeMask(u8);

impl TypeMask {
    const ALL: TypeMask = TypeMask(0b1111);

    fn of(types: &[JobType]) -> TypeMask {
        TypeMask(types.iter().fold(0, |m, t| m | 1 << t.index()))
    }

    fn contains(self, t: usize) -> bool {
        self.0 & (1 << t) != 0
    }
}

impl JobQueue {
    /// A builder with the defaults.
    pub fn builder() -> JobQueueBuilder {
        JobQueueBuilder {
            capacity: 100_000,
            retry: RetryConfig::default(),
            lease: Duration::from_secs(300),
            aging_step: Some(Duration::from_secs(30)),
            retain_finished: 10_000,
            dead_letter_capacity: 10_000,
            clock: None,
            memo: None,
            on_complete: None,
        }
    }

    /// Submits a new job. A memoized job may complete at once (memo hit) or be coalesced onto
    /// an identical job; see [`crate::job::memo`].
    ///
    /// A refused job leaves no trace in the queue, so a caller that wants to retry after
    /// [`QueueError::Full`] can keep a clone (cheap: the payload is shared) and submit that.
    pub fn submit(&self, mut job: Job) -> Result<JobId, QueueError> {
        let id = job.id();
        if job.status() != JobStatus::Queued {
            return Err(QueueError::NotNew {
                id,
                status: job.status(),
            });
        }
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        if st.live >= inner.capacity && !st.records.contains_key(&id) {
            st.stats.rejected_full += 1;
            return Err(QueueError::Full {
                capacity: inner.capacity,
            });
        }
        match st.records.entry(id) {
            Entry::Occupied(_) => return Err(QueueError::Duplicate(id)),
            Entry::Vacant(slot) => {
                job.stamp_submitted(now, inner.retry.max_retries());
                slot.insert(Record {
                    job: Box::new(job),
                    place: Place::Done,
                    followers: Vec::new(),
                });
            }
        }
        st.stats.submitted += 1;
        let woke = inner.admit(&mut st, id, now) && st.waiting > 0;
        let completions = std::mem::take(&mut st.completions);
        drop(st);
        if woke {
            inner.available.notify_all();
        }
        inner.report(&completions);
        Ok(id)
    }

    /// The next ready job, leased to `worker`, without waiting.
    pub fn try_next(&self, worker: &WorkerId) -> Option<Lease> {
        self.inner.take(worker, TypeMask::ALL, None)
    }

    /// The next ready job of one of `types`, leased to `worker`, without waiting.
    pub fn try_next_for(&self, worker: &WorkerId, types: &[JobType]) -> Option<Lease> {
        self.inner.take(worker, TypeMask::of(types), None)
    }

    /// The next ready job, leased to `worker`, waiting up to `timeout` for one.
    pub fn next(&self, worker: &WorkerId, timeout: Duration) -> Option<Lease> {
        self.inner.take(worker, TypeMask::ALL, Some(timeout))
    }

    /// The next ready job of one of `types`, leased to `worker`, waiting up to `timeout`.
    pub fn next_for(
        &self,
        worker: &WorkerId,
        types: &[JobType],
        timeout: Duration,
    ) -> Option<Lease> {
        self.inner.take(worker, TypeMask::of(types), Some(timeout))
    }

    /// Completes the leased job with `result` (and every job coalesced onto it); a memoized
    /// result is stored.
    pub fn complete(&self, lease: &Lease, result: JobResult) -> Result<(), QueueError> {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        let held = inner.check_lease(&mut st, lease, now)?;
        inner.complete_leased(&mut st, lease.job_id, held, result, now)?;
        // A draining pool waits for the last running job.
        let last = st.leases.is_empty() && st.waiting > 0;
        let completions = std::mem::take(&mut st.completions);
        drop(st);
        if last {
            inner.available.notify_all();
        }
        inner.report(&completions);
        Ok(())
    }

    /// Reports a failed attempt: the job is retried after the backoff delay, or dead-lettered
    /// if it has no retries left.
    pub fn fail(&self, lease: &Lease, error: impl Into<String>) -> Result<(), QueueError> {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        let (deadline, lease_id) = inner.check_lease(&mut st, lease, now)?;
        let woke = inner.retry_or_bury(&mut st, lease.job_id, error.into(), now)?;
        st.leases.remove(&(deadline, lease_id));
        let woke = woke || st.leases.is_empty();
        drop(st);
        if woke {
            inner.available.notify_all();
        }
        Ok(())
    }

    /// Gives the job back unrun, without counting an attempt (for example on shutdown).
    pub fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        let (deadline, lease_id) = inner.check_lease(&mut st, lease, now)?;
        st.record_mut(lease.job_id)?.job.release()?;
        st.leases.remove(&(deadline, lease_id));
        st.enqueue(lease.job_id, now);
        drop(st);
        inner.available.notify_all();
        Ok(())
    }

    /// Extends the lease to `now + lease`; returns the new deadline.
    pub fn heartbeat(&self, lease: &Lease) -> Result<Timestamp, QueueError> {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        let (deadline, lease_id) = inner.check_lease(&mut st, lease, now)?;
        let new_deadline = now.saturating_add(inner.lease);
        st.leases.remove(&(deadline, lease_id));
        st.leases.insert((new_deadline, lease_id), lease.job_id);
        st.record_mut(lease.job_id)?.place = Place::Leased {
            deadline: new_deadline,
            lease_id,
        };
        Ok(new_deadline)
    }

    /// Cancels a queued or running job. A worker running it finds out when its completion,
    /// failure or heartbeat is refused with [`QueueError::StaleLease`].
    pub fn cancel(&self, id: JobId) -> Result<(), QueueError> {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        inner.maintain(&mut st, now);
        let woke = inner.cancel_locked(&mut st, id, now)?;
        drop(st);
        if woke {
            inner.available.notify_all();
        }
        Ok(())
    }

    /// Gives a dead-lettered job a fresh retry budget and queues it again (memo and
    /// coalescing apply as on submit).
    pub fn resubmit_dead_letter(&self, id: JobId) -> Result<(), QueueError> {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        inner.maintain(&mut st, now);
        let Some(pos) = st.dead.iter().position(|&d| d == id) else {
            return Err(QueueError::NotDeadLettered(id));
        };
        if st.live >= inner.capacity {
            st.stats.rejected_full += 1;
            return Err(QueueError::Full {
                capacity: inner.capacity,
            });
        }
        st.record_mut(id)?.job.reopen()?;
        st.dead.remove(pos);
        st.stats.dead_letters = st.dead.len();
        let woke = inner.admit(&mut st, id, now);
        let completions = std::mem::take(&mut st.completions);
        drop(st);
        if woke {
            inner.available.notify_all();
        }
        inner.report(&completions);
        Ok(())
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<Job> {
        let st = self.inner.state.lock();
        st.dead
            .iter()
            .filter_map(|id| st.records.get(id).map(|r| Job::clone(&r.job)))
            .collect()
    }

    /// The job's status, if the queue still has its record.
    pub fn status(&self, id: JobId) -> Option<JobStatus> {
        self.get(id).map(|job| job.status())
    }

    /// A snapshot of the job, if the queue still has its record.
    pub fn get(&self, id: JobId) -> Option<Job> {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        inner.maintain(&mut st, now);
        st.records.get(&id).map(|r| Job::clone(&r.job))
    }

    /// Counts of jobs by status, and totals.
    pub fn stats(&self) -> QueueStats {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        inner.maintain(&mut st, now);
        let mut stats = st.stats;
        stats.processing = st.leases.len();
        stats.queued = st.live - stats.processing;
        stats.delayed = st.delayed.len();
        stats.coalesced_waiting = st.followers;
        stats.dead_letters = st.dead.len();
        stats
    }

    /// The queue's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Whether no job of `types` is ready and no job at all is running, i.e. nothing a
    /// draining pool could still get to do (short of new submits or due retries).
    pub(crate) fn is_drained_for(&self, types: &[JobType]) -> bool {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        let now = inner.clock.now();
        inner.maintain(&mut st, now);
        let mask = TypeMask::of(types);
        st.leases.is_empty()
            && st
                .ready
                .iter()
                .all(|by_type| (0..4).all(|t| !mask.contains(t) || by_type[t].is_empty()))
    }

    /// Wakes every blocked taker so it re-reads the clock and its own stop conditions.
    pub(crate) fn wake_all(&self) {
        self.inner.available.notify_all();
    }
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn record_mut(&mut self, id: JobId) -> Result<&mut Record, QueueError> {
        self.records.get_mut(&id).ok_or(QueueError::NotFound(id))
    }

    /// Puts a queued job at the back of its ready deque.
    fn enqueue(&mut self, id: JobId, now: Timestamp) {
        self.enqueue_since(id, now);
    }

    fn enqueue_since(&mut self, id: JobId, since: Timestamp) {
        let seq = self.next_seq();
        if let Some(record) = self.records.get_mut(&id) {
            let (p, t) = (record.job.priority().index(), record.job.job_type().index());
            record.place = Place::Ready { seq };
            self.ready[p][t].push_back(Ready { id, seq, since });
        }
    }

    /// Takes a ready job out of its deque (for cancel or a priority change).
    fn unready(&mut self, priority: JobPriority, job_type: JobType, seq: u64) -> Option<Ready> {
        let deque = &mut self.ready[priority.index()][job_type.index()];
        // Sequence numbers only grow and are pushed at the back, so each deque is sorted.
        let pos = deque.binary_search_by_key(&seq, |r| r.seq).ok()?;
        deque.remove(pos)
    }

    /// Records a job that just finished (completed or cancelled) and drops the oldest
    /// finished records beyond the retention bound.
    fn finished(&mut self, id: JobId, retain: usize) {
        if let Some(record) = self.records.get_mut(&id) {
            record.place = Place::Done;
        }
        self.finished.push_back(id);
        while self.finished.len() > retain {
            if let Some(old) = self.finished.pop_front() {
                self.records.remove(&old);
            }
        }
    }

    /// Adds a job that just failed for good to the dead letter, dropping the oldest beyond
    /// the bound.
    fn bury(&mut self, id: JobId, capacity: usize) {
        if let Some(record) = self.records.get_mut(&id) {
            record.place = Place::Done;
        }
        self.dead.push_back(id);
        while self.dead.len() > capacity {
            if let Some(old) = self.dead.pop_front() {
                self.records.remove(&old);
                self.stats.dead_letters_evicted += 1;
            }
        }
        self.stats.dead_letters = self.dead.len();
    }
}

impl Inner {
    /// Calls the completion hook, if any, for jobs completed under the lock just released.
    fn report(&self, completions: &[JobCompletion]) {
        if let Some(hook) = &self.on_complete {
            completions.iter().for_each(|c| hook(c));
        }
    }

    /// Places a queued job whose record is in `records` (a new submit or a reopened dead
    /// letter): memo hit, follower, or ready. Returns whether a taker should be woken.
    fn admit(&self, st: &mut State, id: JobId, now: Timestamp) -> bool {
        let Some(record) = st.records.get(&id) else {
            return false;
        };
        let (key, priority) = (record.job.memo_key().copied(), record.job.priority());
        if let Some(key) = key {
            if let Some(&leader) = st.leaders.get(&key) {
                self.follow(st, id, leader, priority);
                return false;
            }
            let hit = self.memo.as_ref().and_then(|m| m.lookup(&key));
            if let Some(value) = hit
                && let Some(record) = st.records.get_mut(&id)
            {
                // Only a queued job reaches here, so the transition cannot be refused.
                if record.job.complete_memoized(value.into(), now).is_ok() {
                    if self.on_complete.is_some() {
                        st.completions.push(JobCompletion::of(&record.job, true));
                    }
                    st.stats.memo_hits += 1;
                    st.stats.completed += 1;
                    st.finished(id, self.retain_finished);
                    return false;
                }
            }
            st.leaders.insert(key, id);
        }
        st.live += 1;
        st.enqueue(id, now);
        true
    }

    /// Coalesces `id` onto `leader`, raising the leader's priority if `id` is more urgent.
    fn follow(&self, st: &mut State, id: JobId, leader: JobId, priority: JobPriority) {
        st.live += 1;
        st.followers += 1;
        st.stats.coalesced += 1;
        if let Some(r) = st.records.get_mut(&id) {
            r.place = Place::Follower { leader };
        }
        let Some(lead) = st.records.get_mut(&leader) else {
            return;
        };
        lead.followers.push(id);
        let (old, job_type, place) = (lead.job.priority(), lead.job.job_type(), lead.place);
        if priority <= old {
            return;
        }
        lead.job.raise_priority(priority);
        if let Place::Ready { seq } = place {
            // Move it to the more urgent deque, keeping its age for aging.
            if let Some(ready) = st.unready(old, job_type, seq) {
                st.enqueue_since(leader, ready.since);
            }
        }
    }

    /// Moves due retries to the ready deques and takes back expired leases. Returns whether a
    /// job became ready.
    fn maintain(&self, st: &mut State, now: Timestamp) -> bool {
        let mut woke = false;
        while let Some(entry) = st.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            st.enqueue(id, now);
            woke = true;
        }
        while let Some(entry) = st.leases.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            woke |= self.expire(st, id, now);
        }
        woke
    }

    /// Handles an expired lease (already out of `leases`) as a failed attempt.
    fn expire(&self, st: &mut State, id: JobId, now: Timestamp) -> bool {
        st.stats.lease_expirations += 1;
        let worker = st
            .records
            .get(&id)
            .and_then(|r| r.job.worker_id().map(ToString::to_string))
            .unwrap_or_default();
        let error = format!("lease expired on worker {worker}");
        // The job is Processing (it was leased), so the state machine accepts either outcome.
        self.retry_or_bury(st, id, error, now).unwrap_or(false)
    }

    /// After a failed attempt (lease already removed): schedule a retry or dead-letter the job
    /// and its followers. Returns whether a job became ready.
    fn retry_or_bury(
        &self,
        st: &mut State,
        id: JobId,
        error: String,
        now: Timestamp,
    ) -> Result<bool, QueueError> {
        let record = st.record_mut(id)?;
        if record.job.can_retry() {
            let delay = self.retry.retry_delay(record.job.retry_count());
            record.job.schedule_retry(error)?;
            st.stats.retries += 1;
            if delay.is_zero() {
                st.enqueue(id, now);
                return Ok(true);
            }
            let due = now.saturating_add(delay);
            let seq = st.next_seq();
            st.delayed.insert((due, seq), id);
            st.record_mut(id)?.place = Place::Delayed { due, seq };
            return Ok(false);
        }
        record.job.fail(error.clone(), now)?;
        let followers = std::mem::take(&mut record.followers);
        let key = record.job.memo_key().copied();
        if let Some(key) = key {
            st.leaders.remove(&key);
        }
        st.live -= 1;
        st.stats.failed += 1;
        st.bury(id, self.dead_letter_capacity);
        let message = format!("coalesced with job {id}, which failed: {error}");
        for f in followers {
            if let Some(r) = st.records.get_mut(&f)
                && r.job.fail(message.clone(), now).is_ok()
            {
                st.live -= 1;
                st.followers -= 1;
                st.stats.failed += 1;
                st.bury(f, self.dead_letter_capacity);
            }
        }
        Ok(false)
    }

    /// Verifies that `lease` is the job's current, unexpired lease and returns its key in
    /// `leases` (deadline, lease id). An expired one is taken back here (as every due lease
    /// is), and reported as such.
    fn check_lease(
        &self,
        st: &mut State,
        lease: &Lease,
        now: Timestamp,
    ) -> Result<(Timestamp, u64), QueueError> {
        let id = lease.job_id;
        let record = st.records.get(&id).ok_or(QueueError::NotFound(id))?;
        let verdict = match record.place {
            Place::Leased { lease_id, deadline } if lease_id == lease.lease_id => {
                if deadline <= now {
                    Err(QueueError::LeaseExpired {
                        id,
                        worker: lease.worker.clone(),
                    })
                } else {
                    Ok((deadline, lease_id))
                }
            }
            _ => Err(QueueError::StaleLease {
                id,
                worker: lease.worker.clone(),
                status: record.job.status(),
            }),
        };
        // Maintenance never touches a lease that is still current, so the verdict stands.
        if self.maintain(st, now) && st.waiting > 0 {
            self.available.notify_all();
        }
        verdict
    }

    fn complete_leased(
        &self,
        st: &mut State,
        id: JobId,
        (deadline, lease_id): (Timestamp, u64),
        result: JobResult,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let record = st.record_mut(id)?;
        record.job.complete(result.clone(), now)?;
        let followers = std::mem::take(&mut record.followers);
        let key = record.job.memo_key().copied();
        if self.on_complete.is_some() {
            let completion = JobCompletion::of(&record.job, false);
            st.completions.push(completion);
        }
        st.leases.remove(&(deadline, lease_id));
        st.live -= 1;
        st.stats.completed += 1;
        st.finished(id, self.retain_finished);
        if let Some(key) = key {
            if let Some(memo) = &self.memo
                && memo.store(key, result.as_bytes().clone()).is_err()
            {
                st.stats.memo_store_failures += 1;
            }
            st.leaders.remove(&key);
        }
        for f in followers {
            if let Some(r) = st.records.get_mut(&f)
                && r.job.complete_memoized(result.clone(), now).is_ok()
            {
                if self.on_complete.is_some() {
                    let completion = JobCompletion::of(&r.job, false);
                    st.completions.push(completion);
                }
                st.live -= 1;
                st.followers -= 1;
                st.stats.completed += 1;
                st.finished(f, self.retain_finished);
            }
        }
        Ok(())
    }

    fn cancel_locked(&self, st: &mut State, id: JobId, now: Timestamp) -> Result<bool, QueueError> {
        let record = st.record_mut(id)?;
        let (priority, job_type, place) =
            (record.job.priority(), record.job.job_type(), record.place);
        record.job.cancel(now)?;
        let followers = std::mem::take(&mut record.followers);
        let key = record.job.memo_key().copied();
        match place {
            Place::Ready { seq } => {
                st.unready(priority, job_type, seq);
            }
            Place::Delayed { due, seq } => {
                st.delayed.remove(&(due, seq));
            }
            Place::Leased { deadline, lease_id } => {
                st.leases.remove(&(deadline, lease_id));
            }
            Place::Follower { leader } => {
                st.followers -= 1;
                if let Some(lead) = st.records.get_mut(&leader) {
                    lead.followers.retain(|&f| f != id);
                }
            }
            Place::Done => {}
        }
        st.live -= 1;
        st.stats.cancelled += 1;
        st.finished(id, self.retain_finished);
        // A cancelled leader hands its followers to the first of them.
        let mut woke = false;
        if let Some(key) = key
            && st.leaders.get(&key) == Some(&id)
        {
            st.leaders.remove(&key);
            if let Some((&first, rest)) = followers.split_first() {
                st.followers -= 1;
                st.leaders.insert(key, first);
                st.enqueue(first, now);
                let mut best = JobPriority::Low;
                for &f in rest {
                    if let Some(r) = st.records.get_mut(&f) {
                        r.place = Place::Follower { leader: first };
                        best = best.max(r.job.priority());
                    }
                }
                if let Some(lead) = st.records.get_mut(&first) {
                    lead.followers = rest.to_vec();
                }
                self.raise(st, first, best);
                woke = true;
            }
        }
        Ok(woke)
    }

    /// Raises a ready job's priority, moving it to the right deque.
    fn raise(&self, st: &mut State, id: JobId, priority: JobPriority) {
        let Some(record) = st.records.get_mut(&id) else {
            return;
        };
        let (old, job_type, place) = (record.job.priority(), record.job.job_type(), record.place);
        if priority <= old {
            return;
        }
        record.job.raise_priority(priority);
        if let Place::Ready { seq } = place
            && let Some(ready) = st.unready(old, job_type, seq)
        {
            st.enqueue_since(id, ready.since);
        }
    }

    /// Picks the deque whose head should run next: highest effective priority, then FIFO.
    /// Returns (priority index, type index).
    fn pick(&self, st: &State, mask: TypeMask, now: Timestamp) -> Option<(usize, usize)> {
        // Rank: (effective priority index, older first); the best rank wins.
        type Rank = (usize, Reverse<u64>);
        let mut best: Option<(Rank, usize, usize)> = None;
        for (p, by_type) in st.ready.iter().enumerate() {
            for (t, deque) in by_type.iter().enumerate() {
                let Some(head) = deque.front() else { continue };
                if !mask.contains(t) {
                    continue;
                }
                let aged = self.aging_nanos.map_or(0, |step| {
                    let waited = now.as_nanos().saturating_sub(head.since.as_nanos());
                    // Two levels (Low to High) is all that can matter: compare, don't divide
                    // (a 64-bit division was a tenth of a take).
                    usize::from(waited >= step) + usize::from(waited >= step.saturating_mul(2))
                });
                let rank = ((p + aged).min(2), Reverse(head.seq));
                if best.is_none_or(|(b, _, _)| rank > b) {
                    best = Some((rank, p, t));
                }
            }
        }
        best.map(|(_, p, t)| (p, t))
    }

    fn try_take(
        &self,
        st: &mut State,
        worker: &WorkerId,
        mask: TypeMask,
        now: Timestamp,
    ) -> Option<Lease> {
        loop {
            let (p, t) = self.pick(st, mask, now)?;
            let ready = st.ready[p][t].pop_front()?;
            let lease_id = st.next_seq();
            let deadline = now.saturating_add(self.lease);
            let Some(record) = st.records.get_mut(&ready.id) else {
                continue;
            };
            if record.job.start_processing(worker.clone(), now).is_err() {
                // Not reachable: only queued jobs are in the ready deques. Skip it rather
                // than hand out a job twice.
                continue;
            }
            record.place = Place::Leased { deadline, lease_id };
            let lease = Lease {
                job_id: ready.id,
                lease_id,
                worker: worker.clone(),
                job_type: record.job.job_type(),
                priority: record.job.priority(),
                payload: record.job.payload().clone(),
                attempt: record.job.retry_count(),
                deadline,
                memo_key: record.job.memo_key().copied(),
            };
            st.leases.insert((deadline, lease_id), ready.id);
            return Some(lease);
        }
    }

    fn take(&self, worker: &WorkerId, mask: TypeMask, timeout: Option<Duration>) -> Option<Lease> {
        // Only a blocking take needs real time (and reading it is not free).
        let started = timeout.map(|_| Instant::now());
        let mut st = self.state.lock();
        loop {
            let now = self.clock.now();
            if self.maintain(&mut st, now) && st.waiting > 0 {
                self.available.notify_all();
            }
            if let Some(lease) = self.try_take(&mut st, worker, mask, now) {
                return Some(lease);
            }
            let remaining = timeout?.checked_sub(started?.elapsed())?;
            if remaining.is_zero() {
                return None;
            }
            // Sleep until the next retry or lease deadline, but never past the timeout and
            // never longer than a slice, since the clock may not be real time.
            let next_event = [st.delayed.first_key_value(), st.leases.first_key_value()]
                .into_iter()
                .flatten()
                .map(|((at, _), _)| at.saturating_duration_since(now))
                .min()
                .unwrap_or(MAX_WAIT_SLICE);
            let wait = remaining.min(next_event).min(MAX_WAIT_SLICE);
            st.waiting += 1;
            self.available.wait_for(&mut st, wait);
            st.waiting -= 1;
        }
    }
}
