//! [`WorkerPool`]: threads that take jobs from a [`JobQueue`] and run a handler per job type.
//!
//! # Design
//!
//! Each of the pool's `ConcurrencyLimit` threads loops: take a job of a type the pool has a
//! handler for ([`JobQueue::next_for`], so jobs of other types stay queued for someone else),
//! run the handler, report the outcome. A completion also takes the next ready job in the
//! same call ([`JobQueue::complete_and_next_for`]), so a busy worker goes through the queue's
//! lock once per job instead of twice, and only an idle one blocks in `next_for`.
//!
//! A handler returns `Ok(result)` (complete), `Err(JobError::Failed(..))` (a failed attempt:
//! retry or dead letter), or `Err(JobError::Interrupted)` (give the job back unrun, see
//! shutdown; outside a [`Shutdown::Now`] it is a failed attempt, since a job given back to a
//! running pool is taken straight again, and a handler that keeps returning it would spin a
//! worker on that job for ever). A handler that **panics** is caught with `catch_unwind` and counts
//! as a failed attempt with the panic message; the thread survives and takes the next job. So does
//! a panic of the queue's completion hook, or of the eviction listener of the cache it memoizes
//! into, which run on the completing worker: the completion stands, and a job leased along with
//! it is given back.
//!
//! Long handlers call [`JobContext::heartbeat`] to keep their lease; a refused heartbeat means
//! the job was cancelled or taken back, and the handler should stop.
//!
//! # Shutdown
//!
//! [`WorkerPool::shutdown`] with [`Shutdown::Drain`] lets the workers run until no job they can
//! handle is ready and none of them runs one (a running one may fail and come back for an immediate
//! retry), then stop; the pool counts its workers that hold a job, and the last to finish wakes the
//! idle ones, so a drain ends with its last job. A job running **outside the pool** is not waited
//! for, of whatever type: one another pool runs, or one a host thread took with [`JobQueue::next`].
//! The pool cannot run it, and the thread holding it may be the one waiting for the drain: a host
//! thread that shuts the pool down with a lease in hand, or another pool's handler. A drain that
//! waited for every running job of its types hung there until that lease ran out, and the job then
//! counted a failed attempt. Such a job is finished by its holder; if it fails back into the queue
//! after the drain, it stays queued for a later pool, as a delayed retry does.
//!
//! Nor is a job **waiting out a retry delay**: a drain that waited for it would sleep for up
//! to the retry's `max_delay` on work that may fail again. It stays queued, since the queue
//! outlives the pool; one whose delay ends while the pool is still busy is run like any
//! ready job, but one still waiting when the pool runs out of work is left behind. The
//! returned [`PoolStats`] count what the pool ran, not what it left: the queue tells that
//! ([`crate::QueueStats::delayed`] in [`JobQueue::stats`], on the caller's clone of the
//! queue; `queued` also counts the ready jobs of types the pool had no handler for). There
//! is no call that blocks until delayed jobs are done. A caller who wants them run either
//! starts a pool again once they are due (the queue keeps them, with their retry counts),
//! or keeps this pool running and polls [`JobQueue::stats`] until `delayed` and
//! `processing` are both zero before draining (a running job can still fail into a delay
//! until then; retries are bounded, so this ends).
//!
//! [`Shutdown::Now`] stops the workers after their current job; while stopping,
//! [`JobContext::stop_requested`] is true so a long handler can return
//! [`JobError::Interrupted`] and the job goes back to the queue without counting an attempt,
//! as does a job a worker took along with its last completion just before the stop, or
//! took from the queue after it (an idle worker blocked in the queue does not see the stop
//! until its take returns, perhaps with a job another worker just gave back). A job
//! given back keeps its turn and its age ([`JobQueue::release`]): stopping a pool does not
//! send it behind the jobs submitted after it. A thread cannot be preempted, so both modes
//! wait for running handlers to return. Dropping the pool is `shutdown(Shutdown::Now)`.
//!
//! A handler may shut down (or drop) the pool it runs in, but then nothing waits: the
//! calling thread cannot wait for itself, and a drain's other workers wait for the caller's
//! job. The call sets the mode and returns what the pool has done so far; the threads end
//! on their own as they would have, the caller's once its handler returns. To do so a
//! handler holds the pool (in a `Mutex<Option<WorkerPool>>` it takes it out of): the
//! workers hold their handlers, so that pool is stopped only when a handler or the host
//! takes it out and shuts it down or drops it; left in, its threads run for ever.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::RwLock;

use super::concurrency::ConcurrencyLimit;
use super::model::{JobId, JobPayload, JobResult, JobType, WorkerId};
use super::queue::{FailureHook, JobQueue, Lease, QueueError};
use crate::callback::drop_payload;
use crate::time::Timestamp;

/// How long an idle worker blocks in the queue before re-checking for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Workers started so far in the process, which numbers them: see [`WorkerPoolBuilder::name`].
static WORKERS_STARTED: AtomicUsize = AtomicUsize::new(0);

/// Why a handler did not produce a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The attempt failed; the job is retried or dead-lettered.
    #[error("{0}")]
    Failed(String),
    /// The handler stopped because the pool is shutting down ([`JobContext::stop_requested`]);
    /// the job is given back unrun. Returned while the pool is not stopping, it counts as a
    /// failed attempt instead (see the module docs).
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl From<String> for JobError {
    fn from(message: String) -> JobError {
        JobError::Failed(message)
    }
}

impl From<&str> for JobError {
    fn from(message: &str) -> JobError {
        JobError::Failed(message.to_owned())
    }
}

/// A handler: runs one job.
pub type Handler = Arc<dyn Fn(&JobContext<'_>) -> Result<JobResult, JobError> + Send + Sync>;

/// What a handler sees of the job it runs.
pub struct JobContext<'a> {
    lease: &'a Lease,
    queue: &'a JobQueue,
    shared: &'a Shared,
}

impl JobContext<'_> {
    /// The job.
    pub fn job_id(&self) -> JobId {
        self.lease.job_id()
    }

    /// The kind of work.
    pub fn job_type(&self) -> JobType {
        self.lease.job_type()
    }

    /// The input.
    pub fn payload(&self) -> &JobPayload {
        self.lease.payload()
    }

    /// 0 on the first attempt, then the number of retries so far.
    pub fn attempt(&self) -> u32 {
        self.lease.attempt()
    }

    /// The worker running the job.
    pub fn worker(&self) -> &WorkerId {
        self.lease.worker()
    }

    /// The lease, for the memo key and deadline.
    pub fn lease(&self) -> &Lease {
        self.lease
    }

    /// Extends the lease and returns its new deadline ([`JobContext::lease`]'s
    /// [`Lease::deadline`] stays the one of the take, so this is the only way a handler
    /// learns it). An error means the job is no longer this worker's (cancelled or taken
    /// back after a lease expiry): the handler should stop, its result would be refused.
    pub fn heartbeat(&self) -> Result<Timestamp, QueueError> {
        self.queue.heartbeat(self.lease)
    }

    /// The jobs coalesced onto this one now ([`JobQueue::followers`]); an error as for
    /// [`JobContext::heartbeat`]: the job is no longer this worker's.
    pub(crate) fn followers(&self) -> Result<Vec<JobId>, QueueError> {
        self.queue.followers(self.lease)
    }

    /// Whether the pool is shutting down with [`Shutdown::Now`].
    pub fn stop_requested(&self) -> bool {
        self.shared.mode.load(Ordering::SeqCst) == STOPPING
    }
}

impl fmt::Debug for JobContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("lease", self.lease)
            .finish_non_exhaustive()
    }
}

/// How to shut a pool down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Run until no job the pool can handle is ready and none of its workers runs one, then
    /// stop. Jobs waiting out a retry delay stay queued, and jobs running outside the pool
    /// (another pool's, or one a host thread took) are left to their holders: neither is
    /// waited for (see *Shutdown* in [`crate::job::pool`]).
    Drain,
    /// Stop after the current job; handlers see [`JobContext::stop_requested`].
    Now,
}

/// What a pool did, counted across its workers.
///
/// Each handler run is counted in `executed` when it starts and, once it has reported, in
/// exactly one of `completed`, `failed`, `released` and `stale`, by what the queue did with
/// its outcome: so with the pool shut down, `executed` is the sum of those four. A run the
/// queue refused is `stale` whatever the handler returned, since the job had already moved
/// on without it (its retry or dead letter, if any, is the queue's, counted in
/// [`crate::QueueStats`]). A job a stopping worker gives back without running it (taken
/// just as [`Shutdown::Now`] came) is no run and counted nowhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Handler runs started.
    pub executed: u64,
    /// Runs whose result the queue accepted: the job completed.
    pub completed: u64,
    /// Runs that returned [`JobError::Failed`], panicked, or returned
    /// [`JobError::Interrupted`] while the pool was not stopping, whose failed attempt the
    /// queue accepted: the job was retried or dead-lettered.
    pub failed: u64,
    /// Of `failed`, runs that panicked (one whose failure the queue refused is `stale`).
    pub panicked: u64,
    /// Runs that returned [`JobError::Interrupted`] during [`Shutdown::Now`] and whose job
    /// the queue took back unrun.
    pub released: u64,
    /// Runs whose outcome the queue refused because the lease was no longer current (the
    /// job was cancelled, or its lease ran out and it was taken back).
    pub stale: u64,
}

/// Why a pool could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A pool with no handlers would take no jobs.
    #[error("a worker pool needs at least one handler")]
    NoHandlers,
    /// The name holds a NUL byte, which an OS thread name cannot.
    #[error("a worker pool's name may not contain a NUL byte: {0:?}")]
    InvalidName(String),
    /// The OS refused a thread. The threads already started were stopped before they took
    /// a job: a pool that fails to start runs none of the queue's jobs.
    #[error("spawning worker thread {index} failed: {source}")]
    Spawn {
        /// Which of the pool's workers, counted from 0 in the pool: not the process-wide
        /// number its name would have carried (see [`WorkerPoolBuilder::name`]).
        index: usize,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The error of a failed attempt whose handler returned [`JobError::Interrupted`] while the
/// pool was not stopping.
const INTERRUPTED_UNASKED: &str =
    "the handler returned Interrupted while the pool was not stopping";

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPING: u8 = 2;

struct Shared {
    /// `mode` and `busy` are read and written `SeqCst`: a drain's last worker decrements
    /// `busy` and then reads `mode`, while `stop` sets `mode` and the waiting workers then
    /// read `busy` — a store-buffering pattern, in which acquire/release alone would let
    /// both sides read the old value on a weak-memory CPU, so the last worker would not
    /// wake the waiters and the drain would end only at their `IDLE_WAIT`. On x86 the
    /// read-modify-writes are locked either way and the loads are plain loads.
    mode: AtomicU8,
    /// The workers holding a lease: what a drain waits for (see *Shutdown*).
    busy: AtomicUsize,
    executed: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    released: AtomicU64,
    stale: AtomicU64,
}

impl Shared {
    fn stats(&self) -> PoolStats {
        PoolStats {
            executed: self.executed.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
        }
    }
}

/// Configures and starts a [`WorkerPool`].
pub struct WorkerPoolBuilder {
    queue: JobQueue,
    handlers: [Option<Handler>; 4],
    concurrency: ConcurrencyLimit,
    name: String,
    /// See [`WorkerPoolBuilder::on_failure`].
    on_failure: Option<Arc<FailureHook<'static>>>,
}

impl fmt::Debug for WorkerPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<_> = JobType::ALL
            .iter()
            .filter(|t| self.handlers[t.index()].is_some())
            .collect();
        f.debug_struct("WorkerPoolBuilder")
            .field("handlers", &types)
            .field("concurrency", &self.concurrency)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WorkerPoolBuilder {
    /// Runs jobs of `job_type` with `handler` (replacing any earlier handler for the type).
    #[must_use]
    pub fn handler<F>(mut self, job_type: JobType, handler: F) -> Self
    where
        F: Fn(&JobContext<'_>) -> Result<JobResult, JobError> + Send + Sync + 'static,
    {
        self.handlers[job_type.index()] = Some(Arc::new(handler));
        self
    }

    /// The number of worker threads (default [`ConcurrencyLimit::default`], 4).
    #[must_use]
    pub fn concurrency(mut self, limit: ConcurrencyLimit) -> Self {
        self.concurrency = limit;
        self
    }

    /// The prefix of worker names and thread names (default `"worker"`); one with a NUL byte
    /// is refused by [`WorkerPoolBuilder::start`]. A worker is named `{name}-{n}`, `n` taken
    /// from one count for the whole process (a start that fails uses its numbers up too), so
    /// that no two pools' workers share a [`WorkerId`] (the one a job records, and a lease
    /// expiry names) even under one name; a pool started again has new numbers, not
    /// `{name}-0` on. The thread takes the same name, but Linux keeps only its first 15
    /// bytes, so tools that show thread names (`top -H`, a debugger) may show two workers
    /// alike (`transcriber-1000` to `-1009` all as `transcriber-100`); the [`WorkerId`] is
    /// never cut. A worker name of up to 15 bytes is also the cheapest to clone (see
    /// [`WorkerId`]).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Told of each job that a failure a worker reports ends (its last attempt failed),
    /// with the message and the jobs coalesced onto it, under the queue's lock as the queue
    /// fails them ([`JobQueue::fail_telling`]): so it must not call the queue, nor panic.
    pub(crate) fn on_failure(
        mut self,
        hook: impl Fn(JobId, &str, &[JobId]) + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Starts the threads.
    pub fn start(self) -> Result<WorkerPool, PoolError> {
        let types: Vec<JobType> = JobType::ALL
            .into_iter()
            .filter(|t| self.handlers[t.index()].is_some())
            .collect();
        if types.is_empty() {
            return Err(PoolError::NoHandlers);
        }
        // The name becomes the threads' names, and std panics on spawning a thread whose
        // name has a NUL byte: refused here, before any thread starts.
        if self.name.contains('\0') {
            return Err(PoolError::InvalidName(self.name));
        }
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(RUNNING),
            busy: AtomicUsize::new(0),
            executed: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            released: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        });
        let handlers = Arc::new(self.handlers);
        let types: Arc<[JobType]> = types.into();
        let mut pool = WorkerPool {
            queue: self.queue.clone(),
            shared: Arc::clone(&shared),
            threads: Vec::with_capacity(self.concurrency.get()),
        };
        // The workers wait at this gate until every one of them is spawned, so that a start
        // the OS refuses a thread runs no job: let through at once, the workers started
        // before the refusal took the queue's jobs and ran them (hundreds, in a test) until
        // the failed start stopped them.
        let gate = Arc::new(RwLock::new(()));
        let closed = gate.write();
        // Numbered across pools: two pools over one queue, both named "worker" by default,
        // each had a "worker-0", and a job's worker id or a lease expiry's message did not
        // tell which had run it.
        let first = WORKERS_STARTED.fetch_add(self.concurrency.get(), Ordering::Relaxed);
        for index in 0..self.concurrency.get() {
            let worker = Worker {
                id: WorkerId::new(format!("{}-{}", self.name, first.wrapping_add(index))),
                queue: self.queue.clone(),
                handlers: Arc::clone(&handlers),
                types: Arc::clone(&types),
                shared: Arc::clone(&shared),
                on_failure: self.on_failure.clone(),
            };
            let gate = Arc::clone(&gate);
            let spawned = std::thread::Builder::new()
                .name(worker.id.to_string())
                .spawn(move || {
                    drop(gate.read());
                    worker.run();
                });
            match spawned {
                Ok(handle) => pool.threads.push(handle),
                Err(source) => {
                    // Stopping before the gate opens: each worker then ends before its
                    // first take. Dropping the pool joins them.
                    shared.mode.store(STOPPING, Ordering::SeqCst);
                    drop(closed);
                    drop(pool);
                    return Err(PoolError::Spawn { index, source });
                }
            }
        }
        drop(closed);
        Ok(pool)
    }
}

/// A pool of worker threads over a [`JobQueue`]; see the module docs.
///
/// Keep it for as long as its workers should run: dropping it is
/// [`shutdown(Shutdown::Now)`](WorkerPool::shutdown), so a pool started and not kept
/// (`builder.start()?;` as a statement) stops at once: a worker finishes the job it may have
/// taken meanwhile, and the queue's other jobs wait for a pool that is kept.
///
/// ```
/// use memocache::{ConcurrencyLimit, Job, JobQueue, JobStatus, JobType, Shutdown, WorkerPool};
///
/// let queue = JobQueue::builder().build()?;
/// let id = queue.submit(Job::new(JobType::Summarization, &b"transcript"[..]))?;
/// let pool = WorkerPool::builder(queue.clone())
///     .handler(JobType::Summarization, |ctx| Ok(ctx.payload().as_bytes().slice(0..5).into()))
///     .concurrency(ConcurrencyLimit::new(2)?)
///     .start()?;
/// let stats = pool.shutdown(Shutdown::Drain);
/// assert_eq!(stats.completed, 1);
/// assert_eq!(queue.status(id), Some(JobStatus::Completed));
/// assert_eq!(queue.get(id).and_then(|j| j.result().cloned()), Some(b"trans".to_vec().into()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping the pool stops its workers at once (`shutdown(Shutdown::Now)`)"]
pub struct WorkerPool {
    queue: JobQueue,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.len())
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// A builder for a pool over `queue`.
    pub fn builder(queue: JobQueue) -> WorkerPoolBuilder {
        WorkerPoolBuilder {
            queue,
            handlers: [None, None, None, None],
            concurrency: ConcurrencyLimit::default(),
            name: "worker".to_owned(),
            on_failure: None,
        }
    }

    /// What the pool has done so far.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }

    /// Stops the pool (see *Shutdown* in [`crate::job::pool`]) and waits for its threads;
    /// returns what it did. What it left in the queue, such as retries still waiting out
    /// their delay after a [`Shutdown::Drain`], is in the queue's [`JobQueue::stats`]
    /// ([`crate::QueueStats::delayed`]). Called from one of the pool's own handlers, it
    /// does not wait (see the module docs), and the stats are those so far. Called by a
    /// thread that holds a lease of its own (taken with [`JobQueue::next`], or in another
    /// pool's handler), it does not wait for that job: a drain waits only for the jobs the
    /// pool's workers run.
    ///
    /// A rule for hosts: do not shut pools down from each other's handlers. Called from a
    /// handler of the *same* pool it returns without waiting, as said above; but called from
    /// a handler of *another* pool it joins this pool's threads, so two pools whose handlers
    /// each shut the other down wait on each other's handlers for ever (a deadlock this
    /// method does not detect). Shut such pools down from a thread that runs no handler.
    pub fn shutdown(mut self, mode: Shutdown) -> PoolStats {
        self.stop(mode);
        self.shared.stats()
    }

    fn stop(&mut self, mode: Shutdown) {
        let code = match mode {
            Shutdown::Drain => DRAINING,
            Shutdown::Now => STOPPING,
        };
        // Never downgrade Now to Drain.
        self.shared.mode.fetch_max(code, Ordering::SeqCst);
        self.queue.wake_all();
        // Stopped from one of its own handlers (or dropped there), the pool cannot wait for
        // its threads: joining the calling thread panicked ("Resource deadlock avoided"),
        // and in a drain the other workers wait for the caller's own job to finish, so
        // joining them first never returned. The mode is set, so every thread ends on its
        // own as it would have (the caller's once its handler returns); they are detached.
        let me = std::thread::current().id();
        if self.threads.iter().any(|h| h.thread().id() == me) {
            self.threads.clear();
            return;
        }
        for handle in self.threads.drain(..) {
            // A worker catches handler panics, so its thread only ends by returning; a join
            // error would mean a bug in the loop itself, and there is nothing left to undo.
            let _ = handle.join();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // A pool shut down already has no threads left to stop; stopping it again would turn
        // a drain that a handler asked for (whose threads run on, detached) into a stop.
        if !self.threads.is_empty() {
            self.stop(Shutdown::Now);
        }
    }
}

struct Worker {
    id: WorkerId,
    queue: JobQueue,
    handlers: Arc<[Option<Handler>; 4]>,
    types: Arc<[JobType]>,
    shared: Arc<Shared>,
    /// See [`WorkerPoolBuilder::on_failure`].
    on_failure: Option<Arc<FailureHook<'static>>>,
}

impl Worker {
    /// Waits up to `IDLE_WAIT` for a job, giving up as soon as the pool leaves `mode` (a
    /// stop wakes the queue's takers) or, draining, once no other worker holds a job (the
    /// last one to finish wakes them): an idle pool stops at once, and a draining one once
    /// its last job ends, not after the idle wait.
    fn idle_wait(&self, mode: u8) -> Option<Lease> {
        let shared = &*self.shared;
        let stop = || {
            shared.mode.load(Ordering::SeqCst) != mode
                || (mode == DRAINING && shared.busy.load(Ordering::SeqCst) == 0)
        };
        let lease = self
            .queue
            .next_for_until(&self.id, &self.types, IDLE_WAIT, &stop);
        self.taken(lease)
    }

    /// Counts this worker as holding a job if it took one.
    fn taken(&self, lease: Option<Lease>) -> Option<Lease> {
        if lease.is_some() {
            self.shared.busy.fetch_add(1, Ordering::SeqCst);
        }
        lease
    }

    /// Counts this worker as holding no job; the last one to finish in a drain wakes the
    /// workers waiting for it.
    fn done(&self) {
        if self.shared.busy.fetch_sub(1, Ordering::SeqCst) == 1
            && self.shared.mode.load(Ordering::SeqCst) == DRAINING
        {
            self.queue.wake_all();
        }
    }

    fn run(self) {
        // The job taken along with the last completion, if any (still counted in `busy`).
        let mut held = None;
        loop {
            let lease = match (held.take(), self.shared.mode.load(Ordering::SeqCst)) {
                (Some(lease), _) => Some(lease),
                (None, RUNNING) => self.idle_wait(RUNNING),
                (None, DRAINING) => {
                    match self.taken(self.queue.try_next_for(&self.id, &self.types)) {
                        Some(lease) => Some(lease),
                        // A job another worker runs may fail and come back for a retry; a job
                        // held outside the pool is not waited for (see *Shutdown*).
                        None if self.shared.busy.load(Ordering::SeqCst) == 0 => return,
                        None => self.idle_wait(DRAINING),
                    }
                }
                (None, _) => return,
            };
            let Some(lease) = lease else { continue };
            // The stop is checked after the take, not only before it: a take blocks in the
            // queue for up to `IDLE_WAIT` without seeing the stop, and the job it gets may be
            // one another worker has just given back because of that stop (or one taken
            // along with this worker's last completion). Run, it would be new work started
            // after `Shutdown::Now`, and a handler that does not watch `stop_requested`
            // would hold the shutdown for its whole run: give it back unrun instead.
            if self.shared.mode.load(Ordering::SeqCst) == STOPPING {
                let _ = self.queue.release(&lease);
                self.done();
                return;
            }
            held = self.execute(&lease);
            if held.is_none() {
                self.done();
            }
        }
    }

    /// Runs the leased job and reports its outcome; a completion while the pool is not
    /// stopping also takes the next ready job, which is returned.
    fn execute(&self, lease: &Lease) -> Option<Lease> {
        let Some(handler) = &self.handlers[lease.job_type().index()] else {
            // Unreachable: the worker only takes types it has handlers for. Give it back.
            let _ = self.queue.release(lease);
            return None;
        };
        let ctx = JobContext {
            lease,
            queue: &self.queue,
            shared: &self.shared,
        };
        self.shared.executed.fetch_add(1, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| handler(&ctx)));
        let mut next = None;
        let reported = match outcome {
            Ok(Ok(result)) => {
                // A completion calls the queue's completion hook on this thread, after the
                // outcome is recorded; a hook that panics must not take the worker down with
                // it (the queue gives back a job leased along with the completion). The
                // panic has been reported by the panic hook; the completion stands.
                let done = catch_unwind(AssertUnwindSafe(|| {
                    if self.shared.mode.load(Ordering::SeqCst) == STOPPING {
                        self.queue.complete(lease, result)
                    } else {
                        self.queue
                            .complete_and_next_for(lease, result, &self.types, Duration::ZERO)
                            .map(|taken| next = taken)
                    }
                }))
                .unwrap_or_else(|panic| {
                    drop_payload(panic);
                    Ok(())
                });
                done.map(|()| {
                    self.shared.completed.fetch_add(1, Ordering::Relaxed);
                })
            }
            Ok(Err(JobError::Failed(error))) => self.fail(lease, error).map(|()| {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
            }),
            Ok(Err(JobError::Interrupted))
                if self.shared.mode.load(Ordering::SeqCst) == STOPPING =>
            {
                self.queue.release(lease).map(|()| {
                    self.shared.released.fetch_add(1, Ordering::Relaxed);
                })
            }
            Ok(Err(JobError::Interrupted)) => {
                self.fail(lease, INTERRUPTED_UNASKED.to_owned()).map(|()| {
                    self.shared.failed.fetch_add(1, Ordering::Relaxed);
                })
            }
            Err(panic) => {
                let error = handler_panicked(&*panic);
                drop_payload(panic);
                self.fail(lease, error).map(|()| {
                    self.shared.failed.fetch_add(1, Ordering::Relaxed);
                    self.shared.panicked.fetch_add(1, Ordering::Relaxed);
                })
            }
        };
        // Each run is counted once, by what the queue did with its outcome (see
        // `PoolStats`): counted before the report, a failure or give-back the queue refused
        // was counted both as what the handler meant and as stale.
        if reported.is_err() {
            // Cancelled, expired or re-leased meanwhile: the queue already moved on.
            self.shared.stale.fetch_add(1, Ordering::Relaxed);
        }
        next
    }

    /// Reports a failed attempt, telling the pool's failure hook if it ends the job.
    fn fail(&self, lease: &Lease, error: String) -> Result<(), QueueError> {
        self.queue
            .fail_telling(lease, error, self.on_failure.as_deref())
    }
}

/// The error a pool fails a job with when its handler panics with `panic`.
fn handler_panicked(panic: &(dyn Any + Send)) -> String {
    format!("handler panicked: {}", panic_message(panic))
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
