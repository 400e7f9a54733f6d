//! # memocache
//!
//! An in-process, content-addressed cache engine for memoizing expensive results — first of all
//! transcriptions of audio files.
//!
//! ```
//! use memocache::{CacheKey, Ttl};
//!
//! // Keys are derived from content: the same bytes always give the same key. A transcript is
//! // keyed by its audio's hash and the language, as the seed derives it.
//! let audio = CacheKey::from_content(b"...audio bytes...", "file")?;
//! let key = CacheKey::transcript(&audio.digest_hex(), "en")?;
//! assert_eq!(key.prefix(), "transcript");
//! let ttl = Ttl::hours(24)?;
//! assert_eq!(ttl.to_seconds(), 86_400);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The cache itself: a byte budget (required), optionally an entry bound and a default TTL;
//! concurrent loads of one key run the loader once.
//!
//! ```
//! use memocache::{Cache, CacheKey, Job, Ttl};
//!
//! let cache = Cache::builder()
//!     .max_bytes(64 * 1024 * 1024)
//!     .max_entries(10_000)
//!     .default_ttl(Ttl::hours(24)?)
//!     .build()?;
//! let file_hash = CacheKey::from_content(b"...audio bytes...", "file")?.digest_hex();
//! let key = CacheKey::transcript(&file_hash, "en")?;
//! // The key a transcription job of that file is memoized under, so a job finds this entry.
//! let job = Job::transcription(&file_hash, "en", &b"...audio bytes..."[..])?;
//! assert_eq!(job.memo_key(), Some(&key));
//! let text = cache.get_or_insert_with(key, || "hello world")?;
//! assert_eq!(&text[..], b"hello world");
//! assert_eq!(cache.get(&key).as_deref(), Some(&b"hello world"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Module map
//!
//! * [`cache`] — [`Cache`] and its [`CacheBuilder`]: the sharded, byte-budgeted engine
//!   (S3-FIFO eviction, TTLs, coalesced loads, removal listener, optional sweeper thread).
//! * [`key`] — [`CacheKey`]: prefix + SHA-256 digest, derivations, parsing.
//! * [`time`] — [`Ttl`], the [`Clock`] trait, [`SystemClock`], [`CoarseClock`] and
//!   [`ManualClock`].
//! * [`entry`] — the [`CacheEntry`] entity and the byte-budget charge of an entry.
//! * [`job`] — [`Job`], [`JobQueue`] and [`WorkerPool`]: memoized, prioritised background work.
//! * [`codec`] — the one place values are encoded (bincode 2 via serde).
//! * [`snapshot`] — warm restarts: crash-safe snapshot files, verified all-or-nothing restore.
//! * `trace` (feature `trace`, on by default) — access-trace readers and exact LRU / OPT
//!   simulators for hit-ratio measurements.
//! * [`metrics`] — [`MetricSeries`] with numpy-exact percentiles, [`MetricsRegistry`] rendering
//!   Prometheus text, [`AlertRule`]s evaluated by an [`AlertEvaluator`].
//! * [`chunk`] — chunked parallel processing of long recordings: [`ChunkSize`], the
//!   streaming splitter, [`ProcessingTask`], [`ChunkedProcessor`] with per-chunk memoization.
//! * [`pipeline`] — the transcription pipeline that composes all of the above (what the
//!   `memocache transcribe` command runs), with the [`pipeline::Transcriber`] engines.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
mod callback;
pub mod codec;
pub mod entry;
pub mod job;
pub mod key;
pub mod metrics;
pub mod pipeline;
pub mod snapshot;
pub mod time;
#[cfg(feature = "trace")]
pub mod trace;

/// The type of every stored value, from the `bytes` crate (1.x): what [`Cache::get`] returns
/// and the eviction listener is given. Re-exported so that a host can name it (in a field, a
/// function's signature, a listener written as a function) without depending on `bytes`
/// itself.
pub use bytes::Bytes;
pub use cache::{
    Cache, CacheBuilder, CacheError, CacheStats, ConfigError, LoadError, RemovalCause, WeakCache,
};
pub use codec::CodecError;
pub use entry::CacheEntry;
pub use job::{
    Backoff, ConcurrencyLimit, InvalidConcurrency, InvalidPriority, InvalidStateTransition, Job,
    JobContext, JobError, JobId, JobIdError, JobPayload, JobPriority, JobQueue, JobQueueBuilder,
    JobResult, JobStatus, JobType, Lease, MemoStore, PoolError, PoolStats, QueueConfigError,
    QueueError, QueueStats, RetryConfig, RetryConfigError, Shutdown, WaitError, WeakJobQueue,
    WorkerId, WorkerPool,
};
pub use key::{CacheKey, KeyBuilder, KeyError, Rejected};
pub use metrics::{
    Aggregation, AlertEvaluator, AlertRule, AlertRuleId, Comparison, MemoryNotifier, MetricError,
    MetricSeries, MetricType, MetricValue, MetricsRegistry, Notifier, Percentile, SeriesId,
    Severity, Tags, Threshold, TracingNotifier,
};
pub use snapshot::{SnapshotError, SnapshotReport};
pub use time::{
    Clock, CoarseClock, ManualClock, SharedClock, SystemClock, Timestamp, Ttl, TtlError,
};
pub mod chunk;
pub use chunk::{
    AudioChunk, CancelToken, ChunkInfo, ChunkPlan, ChunkResult, ChunkSize, ChunkedProcessor,
    ProcessError, ProcessOutput, ProcessingId, ProcessingTask, Progress, RunOptions, TaskId,
    TaskStatus,
};
