//! Jobs: the seed's `Job` entity, a priority job queue with retries and leases, a worker pool,
//! and memoized jobs over the cache.
//!
//! The queue lives in the host process. It is how expensive work (transcription,
//! summarization, indexing, translation) gets run once and its result memoized.
//!
//! Only a job with a *memo key* is memoized: one made by [`Job::transcription`] or
//! [`Job::keyed`], or given a key with [`Job::with_memo_key`], which must be under the job
//! type's prefix ([`JobType::key_prefix`]). A job made by [`Job::new`] has
//! none: it skips the memo steps of the diagram (no memo lookup, no coalescing with an
//! identical job, no result stored) and runs every time it is submitted.
//!
//! ```text
//!  submit(Job) ──► memo key? ──no──► straight to the ready deques below
//!                     │ yes
//!                     ▼
//!                 memo hit? ──yes──► Completed (no worker)
//!                     │ no
//!                     ▼
//!              identical job in flight? ──yes──► follower: completes with it
//!                     │ no
//!                     ▼
//!   ready deques (High > Medium > Low, FIFO, aging) ◄── delayed retries (backoff)
//!                     │ next(worker)                          ▲
//!                     ▼                                       │ fail / lease expiry
//!              Processing (lease + heartbeat) ────────────────┤
//!                     │ complete                              ▼ retries exhausted
//!                     ▼                                  Failed (dead letter) ─► resubmit
//!              Completed; with a memo key, result stored in the memo store
//! ```
//!
//! * [`model`] — [`Job`] and its value objects ([`JobId`], [`JobType`], [`JobPriority`],
//!   [`JobStatus`], [`JobPayload`], [`JobResult`], [`WorkerId`]) and the checked state
//!   machine ([`InvalidStateTransition`]).
//! * [`retry`] — [`RetryConfig`] and [`Backoff`]: the seed's delays, saturating, optional
//!   full jitter.
//! * [`concurrency`] — [`ConcurrencyLimit`] (1–10), shared with the chunk layer.
//! * [`queue`] — [`JobQueue`]: priorities, aging, delayed retries, leases, dead letter,
//!   cancel, bounded capacity, waiting for a job to end.
//! * [`pool`] — [`WorkerPool`]: a handler per job type, panics caught, graceful shutdown.
//! * [`memo`] — [`MemoStore`]: memo hits, coalescing of identical jobs, storing results.

pub mod concurrency;
pub mod memo;
pub mod model;
pub mod pool;
pub mod queue;
pub mod retry;
mod slab;

pub use concurrency::{ConcurrencyLimit, InvalidConcurrency};
pub use memo::{MemoStore, MemoStoreError};
pub use model::{
    DEFAULT_MAX_RETRIES, InvalidPriority, InvalidStateTransition, Job, JobId, JobIdError,
    JobPayload, JobPriority, JobResult, JobStatus, JobType, WorkerId,
};
pub use pool::{
    Handler, JobContext, JobError, PoolError, PoolStats, Shutdown, WorkerPool, WorkerPoolBuilder,
};
pub use queue::{
    JobCompletion, JobQueue, JobQueueBuilder, Lease, QueueConfigError, QueueError, QueueStats,
    WaitError, WeakJobQueue,
};
pub use retry::{Backoff, RetryConfig, RetryConfigError};
