//! The memoized transcription pipeline: every layer of the crate, composed.
//!
//! [`Pipeline::transcribe`] takes an audio file and a language and:
//!
//! 1. derives the transcript key from the file's content (SHA-256, streamed) and the language
//!    ([`CacheKey::transcript`]);
//! 2. on a cache hit — a transcript made by this pipeline's engine and timed as its plan
//!    times the file: the key has neither in it, so anything else under it is a miss and is
//!    replaced (a byte-split file's segments timed at another [`ChunkPlan::byte_rate`], for
//!    one; a WAV file's header times it alike for any plan, see [`Transcript::timing`]), as is
//!    a transcript with chunks without text for an engine that does not
//!    [allow](Transcriber::allows_empty_text) them — returns the transcript at once;
//! 3. otherwise submits a Transcription [`Job`] to the [`JobQueue`] — concurrent requests for
//!    the same content and language coalesce into one job there; the queue answers a job from
//!    the cache if the key holds a value by then, and an answer from another engine or byte
//!    rate (stored meanwhile by a pipeline sharing the cache) is stale as in step 2: removed,
//!    and the job submitted again; so is a job that failed with the job it coalesced onto,
//!    which may have been another file's with the same bytes, while this file is as it was
//!    hashed;
//! 4. a worker of the [`WorkerPool`] runs the [`ChunkedProcessor`]: the file is split into
//!    chunks, chunks already transcribed (by this or an earlier run) come from the cache, the
//!    others go to the [`Transcriber`] in parallel, and the results are merged in order;
//! 5. the merged [`Transcript`] is the job's result, which the queue stores in the cache —
//!    unless the file's length or modification time changed since it was hashed in step 1:
//!    its bytes are then not the ones the key names, and the job fails instead of storing
//!    another content's transcript under that key;
//! 6. latency and cache/queue figures go to the [`MetricsRegistry`], and the alert rules are
//!    evaluated (after a failed file too).
//!
//! The layers meet only through their public APIs; this module owns no caching or scheduling
//! logic of its own.
//!
//! ```
//! use std::sync::Arc;
//! use memocache::Cache;
//! use memocache::pipeline::{Pipeline, StandInTranscriber};
//!
//! let audio = std::env::temp_dir().join(format!("memocache-doc-{}.raw", std::process::id()));
//! std::fs::write(&audio, vec![7u8; 5000])?;
//!
//! let cache = Cache::builder().max_bytes(64 * 1024 * 1024).build()?;
//! // Any `Transcriber`: `CommandTranscriber` runs a command-line engine per chunk; the
//! // stand-in does not recognise speech.
//! let pipeline = Pipeline::builder(cache, Arc::new(StandInTranscriber::new(1))).build()?;
//! let first = pipeline.transcribe(&audio, "en")?;
//! assert!(!first.from_cache);
//! let second = pipeline.transcribe(&audio, "en")?;
//! assert!(second.from_cache);
//! assert_eq!(second.transcript.text, first.transcript.text);
//! # std::fs::remove_file(&audio)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Jobs are submitted with no job-level retries: the chunk processor already retries each
//! chunk by its [`RetryConfig`], and a file whose chunk keeps failing should fail promptly
//! with that chunk's error rather than be re-split after a back-off.

mod engine;

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use engine::{CommandTranscriber, StandInTranscriber, TranscribeError, Transcriber};

use crate::cache::Cache;
use crate::callback::FirstPanic;
use crate::chunk::processor::{Fingerprint, buffers_kept, open_regular};
use crate::chunk::split::ChunkBuffers;
use crate::chunk::{ChunkPlan, ChunkedProcessor, Progress, RunOptions, Segment, Timing};
use crate::codec::{self, CodecError};
use crate::job::queue::coalesced_failure;
use crate::job::{
    ConcurrencyLimit, Job, JobContext, JobError, JobId, JobQueue, JobResult, JobStatus, JobType,
    PoolError, QueueError, RetryConfig, Shutdown, WorkerPool,
};
use crate::key::{CacheKey, KeyError};
use crate::metrics::alert::Delivery;
use crate::metrics::families::{self, CrateFamily};
use crate::metrics::wiring::{CacheMetrics, QueueMetrics};
use crate::metrics::{
    AlertEvaluator, AlertRule, Histogram, MetricError, MetricsRegistry, Notification, Notifier,
    Percentile,
};
use crate::time::{SharedClock, timing_clock};

/// One family of each source a pipeline publishes from: found with series in the registry
/// it is given, they mean another cache or queue publishes there (see
/// [`PipelineError::RegistryInUse`]).
const SOURCE_METRICS: [&CrateFamily; 2] = [&families::CACHE_HITS, &families::JOBS_SUBMITTED];

/// A whole file's transcript, as memoized under its transcript key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    /// The language it was transcribed in.
    pub language: String,
    /// The text, chunk texts joined in order.
    pub text: String,
    /// Timed segments, relative to the start of the file.
    pub segments: Vec<Segment>,
    /// The engine identity that produced it.
    pub engine: String,
    /// Chunks the file was split into.
    pub chunks: usize,
    /// Of those, chunks the engine had to transcribe (the rest came from the cache).
    pub chunks_computed: usize,
    /// Of those, chunks without text
    /// ([`ChunkResult::has_text`](crate::chunk::ChunkResult::has_text)): a pipeline whose engine
    /// does not [allow empty text](Transcriber::allows_empty_text) is served the transcript
    /// only if there are none. (A transcript stored before this field was added does not
    /// decode, and is merged again from its cached chunks.)
    pub empty_chunks: usize,
    /// Time the computing run took; what a later cache hit saves.
    pub compute_time: Duration,
    /// What timed the segments: a WAV file's headers, which any pipeline reads alike, or for
    /// other input the byte rate of the plan that made it ([`ChunkPlan::byte_rate`], `None`
    /// for no rate and so no segments). A pipeline whose plan would time the file otherwise
    /// is not served it ([`Timing::fits`]): two pipelines with different byte rates over one
    /// cache were served each other's segment times. (A transcript stored before this field
    /// was added, session 26, does not decode, and is merged again from its cached chunks.)
    pub timing: Timing,
}

/// What [`Pipeline::transcribe`] returns.
#[derive(Clone, Debug)]
pub struct TranscriptOutcome {
    /// The file.
    pub path: PathBuf,
    /// Its transcript key.
    pub key: CacheKey,
    /// The transcript.
    pub transcript: Transcript,
    /// Served from the cache: no job ran.
    pub from_cache: bool,
    /// Time this call took.
    pub elapsed: Duration,
}

/// Why a file produced no transcript.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The language (or the file's hash) is not usable in a key.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// The job queue refused the job.
    #[error("the job queue refused the transcription: {0}")]
    Queue(#[from] QueueError),
    /// The request's job was cancelled (through [`Pipeline::queue`]: the pipeline itself
    /// cancels none).
    #[error("transcribing {path} was cancelled")]
    Cancelled {
        /// The file.
        path: PathBuf,
    },
    /// Transcription failed (the engine, splitting, ...).
    #[error("transcribing {path} failed: {message}")]
    Failed {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A stored transcript could not be encoded or decoded.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// Metrics could not be registered.
    #[error("{0}")]
    Metrics(#[from] MetricError),
    /// The registry given to [`PipelineBuilder::registry`] already carries a cache's or a
    /// job queue's metrics (another pipeline's, or the host's own [`CacheMetrics`] or
    /// [`QueueMetrics`]). Their names have no label telling two sources apart, so the two
    /// would publish into the same counters and show neither's figures.
    #[error(
        "the metrics registry already carries `{metric}` from another cache or queue: give \
         each pipeline a registry of its own"
    )]
    RegistryInUse {
        /// The metric found already registered.
        metric: &'static str,
    },
    /// The pipeline could not be started: the OS refused a worker thread. Nothing the
    /// build did is left behind (see [`PipelineBuilder::build`]).
    #[error("cannot start the pipeline: {0}")]
    Start(String),
    /// The request was made from the pipeline's progress callback during one of its runs,
    /// and the cache did not hold the transcript. Its job would wait for a worker, or for
    /// the very run the callback reports on (a request for the same content coalesces onto
    /// it), while that run waits for the callback: it is refused rather than left waiting
    /// for ever. A request the cache serves is served; so is one from another pipeline's
    /// callback, or from the callback's report of a request served without a run.
    #[error(
        "transcribing {path} was asked from the pipeline's progress callback during one of \
         its runs: its job would wait behind that run, which waits for the callback"
    )]
    InsideOwnRun {
        /// The file.
        path: PathBuf,
    },
    /// The request's job waited [`PipelineBuilder::callback_wait`] (60 s by default), not
    /// started, on one call of the pipeline's progress callback during a run: coalesced onto that run (the same content),
    /// or queued while every worker's run was in the callback. A callback that hands a request
    /// to another thread and waits for it (joins it) would wait for ever, and its run with it,
    /// and a thread is not told apart from the one it serves, so a callback that merely takes
    /// that long holds such a request up as much: the wait is bounded rather than refused at
    /// once (as a request from the callback's own thread is, with
    /// [`PipelineError::InsideOwnRun`]), and the job is cancelled. A request waiting on a run
    /// whose callback returns within the bound waits on as before.
    #[error(
        "transcribing {path} waited {waited:?} on a call of the pipeline's progress callback \
         during a run (a callback waiting for this request on another thread would wait for \
         ever): refused"
    )]
    WaitsOnCallback {
        /// The file.
        path: PathBuf,
        /// How long its job waited on the callback.
        waited: Duration,
    },
}

/// Where one file's transcription stands; passed to the progress callback.
///
/// A request served without a run of its own — the transcript was in the cache, the queue
/// answered its job from the cache, or it waited on another request's job for the same
/// content — gets one report, done: `chunks_done`, `chunks_total` and `chunks_cached` are
/// the transcript's [`chunks`](Transcript::chunks) (so [`Progress::fraction`] is `1.0`),
/// `bytes_done` and `bytes_total` the file's length (the stored transcript does not keep its
/// audio bytes, which for WAV leave out the header), `elapsed` the time since the request
/// started and `eta` zero.
#[derive(Clone, Debug)]
pub struct FileProgress {
    /// The file being transcribed.
    pub path: PathBuf,
    /// The chunk processor's progress.
    pub progress: Progress,
}

type ProgressCallback = Arc<dyn Fn(&FileProgress) + Send + Sync>;

/// Totals since the pipeline started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PipelineStats {
    /// Transcripts served from the cache.
    pub hits: u64,
    /// Transcripts that had to be computed: not in the cache when the request read it. A
    /// request that coalesced onto another's job for the same content counts here too (its
    /// transcript was computed, if not by its own job), as does one the queue answered from
    /// a value stored between that read and its submit; so with concurrent requests for one
    /// file this counts requests, not engine runs.
    pub misses: u64,
    /// Compute time the cache hits saved (the original runs' times).
    pub time_saved: Duration,
    /// Per-file latency percentiles (p50, p95, p99) in seconds; `NaN` when no file was served
    /// within the registry's retention (before the first file, for one).
    pub latency_p50_p95_p99: [f64; 3],
}

/// Configures a [`Pipeline`]; start with [`Pipeline::builder`].
#[must_use]
pub struct PipelineBuilder {
    cache: Cache,
    transcriber: Arc<dyn Transcriber>,
    plan: ChunkPlan,
    chunk_concurrency: ConcurrencyLimit,
    workers: ConcurrencyLimit,
    retry: RetryConfig,
    keep_chunk_buffers: bool,
    registry: Option<MetricsRegistry>,
    rules: Vec<AlertRule>,
    channels: Vec<(String, Arc<dyn Notifier>)>,
    progress: Option<ProgressCallback>,
    callback_wait: Duration,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("engine", &self.transcriber.identity())
            .field("plan", &self.plan)
            .field("chunk_concurrency", &self.chunk_concurrency)
            .field("workers", &self.workers)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// How files are cut into chunks (default: the seed's [`crate::ChunkSize`] rule).
    pub fn plan(mut self, plan: ChunkPlan) -> Self {
        self.plan = plan;
        self
    }

    /// Chunks transcribed at once within a file (default 4). A file's run holds up to
    /// `2 × chunk_concurrency + 1` chunks in memory at once, each up to the plan's chunk size
    /// (25 MB at most), and the pipeline keeps some of their buffers between files: see
    /// [`PipelineBuilder::keep_chunk_buffers`].
    pub fn chunk_concurrency(mut self, limit: ConcurrencyLimit) -> Self {
        self.chunk_concurrency = limit;
        self
    }

    /// Files transcribed at once (worker threads of the job pool; default 1). Each file's run
    /// has its own chunks in memory (see [`PipelineBuilder::chunk_concurrency`]), and the
    /// buffers the pipeline keeps between files grow with the workers too (see
    /// [`PipelineBuilder::keep_chunk_buffers`]).
    pub fn workers(mut self, limit: ConcurrencyLimit) -> Self {
        self.workers = limit;
        self
    }

    /// How a failing chunk is retried (default: [`RetryConfig::default`], 3 retries after
    /// 1 s, 2 s and 4 s, so a file whose chunk always fails fails after about 7 s).
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Whether the pipeline keeps chunk buffers between files (default `true`): its jobs
    /// share one set of spare buffers, so that a file's chunks are read into memory an
    /// earlier file's chunks used rather than into memory mapped and faulted in anew (up to
    /// 25 MB a chunk). It keeps up to `workers × (2 × chunk_concurrency + 1)` buffers — as
    /// many as the files transcribed at once hold chunks at once — each up to the plan's
    /// chunk size, and holds them while it is idle: what its busiest moment held, up to
    /// 225 MB with the default single worker, chunk concurrency of 4 and 25 MB chunks.
    /// `false` has each file's run free its buffers when it ends (it still reuses them within
    /// the file). See [`Pipeline::spare_chunk_buffers`] and
    /// [`ChunkedProcessorBuilder::keep_chunk_buffers`][keep].
    ///
    /// [keep]: crate::chunk::ChunkedProcessorBuilder::keep_chunk_buffers
    pub fn keep_chunk_buffers(mut self, keep: bool) -> Self {
        self.keep_chunk_buffers = keep;
        self
    }

    /// The registry to publish into (default: a new one on the cache's clock, keeping an
    /// hour of gauge and histogram values). Besides the cache's and the queue's metrics (see
    /// [`wiring`](crate::metrics::wiring)), the pipeline registers
    /// `memocache_transcriptions_total{source="cache"|"computed"}` (counter, files served;
    /// "computed" counts requests that missed the cache, as [`PipelineStats::misses`] does),
    /// `memocache_transcription_duration_seconds` (summary, the time to serve one file, cache
    /// hits included) and `memocache_transcription_saved_seconds` (gauge, compute time the
    /// hits saved): alert rules can name any of them. [`PipelineBuilder::build`] fails with
    /// [`PipelineError::Metrics`] if a given registry cannot take one of these names (see
    /// [`MetricsRegistry::counter`] for why a name is refused). A registry serves one
    /// pipeline: it fails with [`PipelineError::RegistryInUse`] if the registry already
    /// carries a cache's or a queue's metrics, whose totals the two sources would otherwise
    /// share (see [`wiring`](crate::metrics::wiring)); families the host only declared
    /// ([`MetricsRegistry::declare`], which takes them only as the pipeline registers them)
    /// carry none.
    pub fn registry(mut self, registry: MetricsRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// An alert rule, evaluated after every file. [`PipelineBuilder::build`] fails with
    /// [`PipelineError::Metrics`] for a rule whose metric or label name no series can have,
    /// that was given two values of one label, or that could never read a value of its
    /// metric: the pipeline's metrics (or the given registry's) are checked as
    /// [`AlertEvaluator::add_rule`] checks registered ones, so a rule averaging a counter
    /// such as `memocache_cache_hits_total` is refused ([`MetricError::NoHistory`]), as is
    /// one selecting a label the pipeline's metric never carries, such as
    /// `memocache_jobs{state="failed"}` ([`MetricError::NoSuchLabel`]: the label is
    /// `status`). A rule on a metric registered later is checked at each evaluation:
    /// [`Pipeline::alert_rules`] gives each rule's health.
    pub fn alert_rule(mut self, rule: AlertRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// A notification channel the alert rules can name.
    ///
    /// The pipeline holds the notifier: one that uses the pipeline holds it through a
    /// [`std::sync::Weak`], as the progress callback does (see
    /// [`on_progress`](PipelineBuilder::on_progress)).
    pub fn notifier(mut self, channel: impl Into<String>, notifier: Arc<dyn Notifier>) -> Self {
        self.channels.push((channel.into(), notifier));
        self
    }

    /// Called as chunks finish (from worker threads), and once, done, for a request served
    /// without a run of its own (from the requesting thread; see [`FileProgress`]). Called
    /// during a run, it may ask the pipeline for a transcript the cache holds, but not for
    /// one to be made: that request is refused with [`PipelineError::InsideOwnRun`]. Nor may
    /// it wait for another thread asking for one (the request waits on the callback's run,
    /// or for a worker, which the callback holds): that request is refused after
    /// [`PipelineBuilder::callback_wait`] (60 s by default) with
    /// [`PipelineError::WaitsOnCallback`], and so is any request whose job waits that long,
    /// not started, on one call of the callback.
    ///
    /// The pipeline's workers hold the callback, so a callback that holds the pipeline (to
    /// ask it for transcripts) holds it through a [`std::sync::Weak`] of the host's
    /// `Arc<Pipeline>`: an `Arc` it held would keep the pipeline, its cache and its worker
    /// threads alive for ever, after every other handle was dropped.
    pub fn on_progress(mut self, callback: impl Fn(&FileProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }

    /// How long a request may wait, its job not started, on one call of the progress callback
    /// during a run, before it is refused with [`PipelineError::WaitsOnCallback`] (default 60
    /// s). The wait cannot tell a callback that waits for the request on another thread (which
    /// would wait for ever) from one that is only slow, so the bound should be longer than a
    /// call of the host's callback ever takes; a zero bound is taken as the smallest one, a
    /// request refused as soon as its job is seen waiting on a callback.
    pub fn callback_wait(mut self, limit: Duration) -> Self {
        self.callback_wait = limit;
        self
    }

    /// Starts the queue and its workers. Fails, leaving a given registry as it was and no
    /// thread running, with [`PipelineError::Metrics`] for an alert rule on an invalid name or
    /// one that could never read its metric (see [`PipelineBuilder::alert_rule`]), or a
    /// metric name the registry cannot take, with [`PipelineError::RegistryInUse`] (see
    /// [`PipelineBuilder::registry`]), and with [`PipelineError::Start`] if the OS refuses a
    /// worker thread: the same registry can then be given to a build again.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        let clock: SharedClock = Arc::clone(self.cache.clock());
        // Work is timed on a finer clock than the coarse one (see `Clock::for_timing`).
        let timer = timing_clock(&clock);
        let registry = self.registry.unwrap_or_else(|| {
            MetricsRegistry::with_clock(Arc::clone(&clock), Duration::from_secs(3600))
        });
        // The rules before anything else: one on a name no series can have is refused with
        // the registry untouched and nothing started.
        let mut alerts = AlertEvaluator::new(registry.clone());
        for (channel, notifier) in self.channels {
            alerts.add_channel(channel, notifier);
        }
        for rule in self.rules {
            alerts.add_rule(rule)?;
        }
        let engine = self.transcriber.identity().to_owned();
        let allows_empty_text = self.transcriber.allows_empty_text();
        let chunk_buffers = self.keep_chunk_buffers.then(|| {
            let per_file = buffers_kept(self.chunk_concurrency);
            Arc::new(ChunkBuffers::new(
                per_file.saturating_mul(self.workers.get()),
            ))
        });
        let watch = Arc::new(Watch::new(self.workers.get()));
        let runner = Arc::new(Runner {
            cache: self.cache.clone(),
            transcriber: self.transcriber,
            plan: self.plan,
            concurrency: self.chunk_concurrency,
            retry: self.retry,
            chunk_buffers: chunk_buffers.clone(),
            progress: self.progress.clone(),
            clock: Arc::clone(&timer),
            watch: Arc::clone(&watch),
        });
        // All or nothing, in one batch: the metrics, then the queue and its workers, which
        // need the queue's metrics. A failure anywhere (a name taken in the caller's registry,
        // the OS refusing a worker thread) takes every metric back, and the workers started
        // are stopped, so a given registry is left as it was and can be built on again.
        // Registered first and kept on a failed start, the metrics made every later build on
        // the registry fail with `RegistryInUse`. The workers start under the registry's
        // write lock (ten threads at most, once); they do not use the registry itself, only
        // the handles, whose values have locks of their own.
        let (metrics, queue, pool) = registry.register_all(|batch| {
            // Checked in the batch, under the registry's write lock, so that two pipelines
            // built at once on one registry cannot both pass the check.
            let taken = SOURCE_METRICS
                .into_iter()
                .find(|f| batch.has_series(f.name));
            if let Some(taken) = taken {
                return Err(PipelineError::RegistryInUse { metric: taken.name });
            }
            let served = |source| batch.counter(&families::TRANSCRIPTIONS, &[("source", source)]);
            let metrics = PipelineMetrics {
                queue: QueueMetrics::register_in(batch)?,
                cache: CacheMetrics::register_in(batch)?,
                latency: batch.histogram(&families::TRANSCRIPTION_DURATION, &[])?,
                served: [served("cache")?, served("computed")?],
                saved: batch.gauge(&families::TRANSCRIPTION_SAVED, &[])?,
            };
            // The rules were added before these metrics existed, checked against the crate's
            // table for them (a rule averaging one of the counters, the default aggregation,
            // is refused there): checked again now that they do, under the registry's lock,
            // which also covers the host's names registered meanwhile, before anything runs.
            alerts.check_rules(|name| batch.source(name))?;
            let queue = JobQueue::builder()
                .cache(self.cache.clone())
                .clock(Arc::clone(&clock))
                // A lease takes a job back from a worker that stopped reporting. The pool's
                // workers are threads of this process that report every outcome (a handler's
                // panic is caught), so a lease could only expire under a transcription still
                // running — a long recording takes a real engine far beyond the default five
                // minutes — and fail the file (jobs here have no retries) while its worker
                // carries on.
                .lease(Duration::MAX)
                .on_complete({
                    let (observe, watch) = (metrics.queue.completion_hook(), Arc::clone(&watch));
                    move |completion| {
                        observe(completion);
                        watch.completed(completion.id);
                    }
                })
                .build()
                .map_err(|e| PipelineError::Start(e.to_string()))?;
            // A pool that fails to start stops the workers it started; the queue is new and
            // holds no job, so none of them ran one.
            let pool = start_workers(&queue, &watch, self.workers, move |ctx| runner.run(ctx))
                .map_err(|e| PipelineError::Start(e.to_string()))?;
            Ok((metrics, queue, pool))
        })?;
        Ok(Pipeline {
            cache_metrics: metrics.cache,
            queue_metrics: metrics.queue,
            latency: metrics.latency,
            served: metrics.served,
            saved: metrics.saved,
            cache: self.cache,
            engine,
            plan: self.plan,
            allows_empty_text,
            chunk_buffers,
            queue,
            pool: Mutex::new(Some(pool)),
            registry,
            alerts: Mutex::new(alerts),
            outbox: Mutex::default(),
            progress: self.progress,
            clock: timer,
            watch,
            callback_wait: self.callback_wait,
        })
    }
}

/// The memoized transcription pipeline. Shuts its workers down (draining) when dropped.
pub struct Pipeline {
    cache: Cache,
    /// The transcriber's identity: what a cached transcript must have been made by.
    engine: String,
    /// How files are cut, and so timed: what a cached transcript's timing must fit.
    plan: ChunkPlan,
    /// [`Transcriber::allows_empty_text`]: whether a cached transcript may have chunks
    /// without text.
    allows_empty_text: bool,
    /// The spare chunk buffers its jobs share ([`PipelineBuilder::keep_chunk_buffers`]).
    chunk_buffers: Option<Arc<ChunkBuffers>>,
    queue: JobQueue,
    pool: Mutex<Option<WorkerPool>>,
    registry: MetricsRegistry,
    cache_metrics: CacheMetrics,
    queue_metrics: QueueMetrics,
    latency: Histogram,
    served: [crate::metrics::Counter; 2],
    saved: crate::metrics::Gauge,
    alerts: Mutex<AlertEvaluator>,
    /// Notifications decided and not yet delivered: see [`Pipeline::evaluate_alerts`].
    outbox: Mutex<Outbox>,
    /// The host's progress callback, told here of a request served without a run.
    progress: Option<ProgressCallback>,
    /// Times each file's service (see [`crate::Clock::for_timing`]).
    clock: SharedClock,
    /// How the jobs its requests wait on ended, for a record that left the queue first.
    watch: Arc<Watch>,
    /// [`PipelineBuilder::callback_wait`].
    callback_wait: Duration,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// Alert notifications waiting to be delivered, oldest first.
#[derive(Default)]
struct Outbox {
    pending: VecDeque<Delivery>,
    /// Whether a thread is delivering them (it delivers every one queued meanwhile too).
    delivering: bool,
}

/// The handles [`PipelineBuilder::build`] registers, in one batch.
struct PipelineMetrics {
    queue: QueueMetrics,
    cache: CacheMetrics,
    latency: Histogram,
    served: [crate::metrics::Counter; 2],
    saved: crate::metrics::Gauge,
}

/// What a Transcription job's payload carries.
#[derive(Serialize, Deserialize)]
struct Request {
    /// The file's path as bytes ([`path_to_bytes`]), not a `PathBuf`: serde encodes that as a
    /// string and refuses one that is not UTF-8, which a file name on Linux need not be, so
    /// such a file failed before any work with "path contains invalid UTF-8 characters".
    path: Vec<u8>,
    language: String,
    /// The file as it was when it was hashed for the job's key.
    hashed: Fingerprint,
}

/// Whether the file at `path` still has the length and modification time it had when it was
/// hashed (see [`Fingerprint`]); a file that cannot be read is not.
fn still_as_hashed(path: &Path, hashed: Fingerprint) -> bool {
    std::fs::metadata(path).is_ok_and(|m| Fingerprint::of(&m) == hashed)
}

/// How a submitted Transcription job ended, when it did not fail on its own.
enum JobEnd {
    /// Completed (or answered from the cache at submit) with this value.
    Result {
        /// The value.
        value: bytes::Bytes,
        /// Whether a worker of this pipeline ran this job, reporting its progress (rather
        /// than the memo store answering it, or its leader's run, or a host's worker).
        ran: bool,
    },
    /// Coalesced onto another request's job, which failed before this one ever ran.
    LeaderFailed(PipelineError),
    /// Completed, but its record had left the queue and the cache no longer held (or never
    /// took) its result when this request looked: nothing to read it from.
    Lost {
        /// As for [`JobEnd::Result`].
        ran: bool,
    },
}

/// What the pipeline learns of the jobs its requests wait on, by job id, for when a job's
/// record has left the queue before its request saw it end: the queue keeps a finished job's
/// record only until `retain_finished` (1 024) newer jobs have finished, and a dead letter
/// until 10 000 newer ones. Only a waiting request adds an entry, before it submits (the
/// job's id is known then, so no outcome can come before it), and it takes the entry out
/// when it stops waiting ([`Watching`]); the workers, the queue's completion hook and the
/// queue's failure of a worker's job only fill entries in. So it holds one entry a request
/// in flight, whatever the host runs through [`Pipeline::queue`]. It is told only outcomes
/// the queue takes: a run's completion while its job is still leased to it (see
/// `Runner::run`), and a failure as the queue takes it, in the queue's message (see
/// [`start_workers`]).
///
/// It also keeps the progress callbacks in progress during runs, for a request that waits
/// on one (see [`PipelineError::WaitsOnCallback`]).
struct Watch {
    jobs: Mutex<HashMap<JobId, Learned>>,
    callbacks: Mutex<Callbacks>,
    /// The pipeline's workers: with as many runs in callbacks, none takes a queued job.
    workers: usize,
}

/// The progress callbacks in progress during runs, each by a number of its own.
#[derive(Default)]
struct Callbacks {
    next: u64,
    /// The run's job and memo key, by the callback's number.
    running: HashMap<u64, (JobId, Option<CacheKey>)>,
}

/// How long a request may wait, its job not started, on one progress callback in progress
/// during a run, before it is refused with [`PipelineError::WaitsOnCallback`], unless
/// [`PipelineBuilder::callback_wait`] says otherwise: long enough that a callback that is
/// merely slow (a terminal, a log, a network write) is not taken for one waiting on the
/// request, short enough that a callback that is has the request refused, not hung.
const DEFAULT_CALLBACK_WAIT: Duration = Duration::from_secs(60);

/// What is known of one watched job.
struct Learned {
    /// A worker of this pipeline started it.
    ran: bool,
    /// How it ended, if a worker, the completion hook or its leader's worker said so.
    end: Option<Ended>,
}

/// How a watched job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    /// Completed: its result was stored under its key, unless the cache refused it.
    Completed,
    /// Its own run failed, with this message.
    Failed(String),
    /// The job it was coalesced onto failed before it ran itself; the message is the one the
    /// queue fails it with, naming that job.
    LeaderFailed(String),
}

impl Watch {
    fn new(workers: usize) -> Watch {
        Watch {
            jobs: Mutex::default(),
            callbacks: Mutex::default(),
            workers,
        }
    }

    /// Watches job `id` until the guard is dropped.
    fn watch(&self, id: JobId) -> Watching<'_> {
        let learned = Learned {
            ran: false,
            end: None,
        };
        self.jobs.lock().insert(id, learned);
        Watching { watch: self, id }
    }

    /// A worker started job `id`.
    fn started(&self, id: JobId) {
        if let Some(learned) = self.jobs.lock().get_mut(&id) {
            learned.ran = true;
        }
    }

    /// The queue reports job `id` completed (at submit, by a worker, or with its leader).
    fn completed(&self, id: JobId) {
        if let Some(learned) = self.jobs.lock().get_mut(&id) {
            learned.end = Some(Ended::Completed);
        }
    }

    /// A worker's run of job `id` ended so, and the queue ends `followers`, the jobs coalesced
    /// onto it, with it. Told before their records can go. A completion is told by the run
    /// (`Runner::run`), before its worker hands it to the queue, with the followers the
    /// queue reports then ([`JobContext`]'s `followers`); one coalesced later is marked by
    /// the completion hook. A failure (`Err`, with the message the queue fails the job with)
    /// is told by the queue as it fails the job and its followers, under its lock (see
    /// [`start_workers`]); it words theirs with [`coalesced_failure`] and reports no
    /// completion for them.
    ///
    /// The followers are the queue's word, not guessed: they were taken to be the watched
    /// jobs under the job's memo key that had not run, which took in a job of the key the
    /// memo store had answered (a completion overwritten with this run's failure), and a job
    /// queued behind a finished leader.
    fn ran(&self, id: JobId, followers: &[JobId], outcome: Result<(), String>) {
        let mut watched = self.jobs.lock();
        if let Some(learned) = watched.get_mut(&id) {
            learned.end = Some(match &outcome {
                Ok(()) => Ended::Completed,
                Err(message) => Ended::Failed(message.clone()),
            });
        }
        for follower in followers {
            if let Some(learned) = watched.get_mut(follower) {
                learned.end = Some(match &outcome {
                    Ok(()) => Ended::Completed,
                    Err(message) => Ended::LeaderFailed(coalesced_failure(id, message)),
                });
            }
        }
    }

    /// A callback in progress that a job of memo key `key`, not started, waits on: one
    /// during a run of that key, which the job is coalesced onto (a key has one job in
    /// flight, and a run's job leads its key), or any, when every worker's run is in one and
    /// none is free to take the job. `current`, if it still is one, is preferred, so that a
    /// wait is timed on one callback throughout.
    fn blocking(&self, key: &CacheKey, current: Option<u64>) -> Option<u64> {
        let callbacks = self.callbacks.lock();
        let running = &callbacks.running;
        if running.is_empty() {
            return None;
        }
        // A run's callback may be in progress on several of its chunk threads at once.
        let runs: HashSet<JobId> = running.values().map(|(id, _)| *id).collect();
        let every = runs.len() >= self.workers;
        let blocks = |(_, of): &(JobId, Option<CacheKey>)| every || of.as_ref() == Some(key);
        if let Some(current) = current
            && running.get(&current).is_some_and(blocks)
        {
            return Some(current);
        }
        running
            .iter()
            .find(|(_, run)| blocks(run))
            .map(|(number, _)| *number)
    }

    /// Whether job `id` ran on this pipeline's workers, and how it ended, as far as known.
    fn learned(&self, id: JobId) -> (bool, Option<Ended>) {
        self.jobs
            .lock()
            .get(&id)
            .map_or((false, None), |learned| (learned.ran, learned.end.clone()))
    }
}

/// How long a request's job, not started, has waited on one progress callback.
#[derive(Default)]
struct Stall(Option<(u64, std::time::Instant)>);

impl Stall {
    /// How long the job of memo key `key`, not started, has waited on the callback it
    /// waits on now, if it waits on one (see [`Watch::blocking`]); `None` starts over.
    fn waited(&mut self, watch: &Watch, key: &CacheKey) -> Option<Duration> {
        let blocking = watch.blocking(key, self.0.map(|(number, _)| number));
        match (blocking, self.0) {
            (Some(number), Some((on, since))) if number == on => Some(since.elapsed()),
            (Some(number), _) => {
                self.0 = Some((number, std::time::Instant::now()));
                Some(Duration::ZERO)
            }
            (None, _) => {
                self.0 = None;
                None
            }
        }
    }

    /// The job started (or was never waiting on a callback): starts over.
    fn clear(&mut self) {
        self.0 = None;
    }
}

/// A job [`Watch`]ed while its request waits; dropped, it is forgotten.
struct Watching<'a> {
    watch: &'a Watch,
    id: JobId,
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.watch.jobs.lock().remove(&self.id);
    }
}

thread_local! {
    /// The pipeline whose progress callback this thread is in, during one of its runs,
    /// named by the address of its [`Watch`] (which the run keeps alive); 0 outside.
    static REPORTING: Cell<usize> = const { Cell::new(0) };
}

/// This thread is in a pipeline's progress callback, during one of its runs, until dropped
/// (see [`PipelineError::InsideOwnRun`]), and the callback is in progress in the pipeline's
/// [`Watch`] (see [`PipelineError::WaitsOnCallback`]). A guard, so that a callback that
/// panics does not leave the mark on the thread: the first report of a run is made on the
/// pool's worker thread, which goes on to serve other requests' jobs.
struct Reporting<'a> {
    /// What the thread had before.
    previous: usize,
    watch: &'a Arc<Watch>,
    /// The callback's number in the watch.
    number: u64,
}

impl<'a> Reporting<'a> {
    /// Enters the callback of a run of job `id`, of memo key `key`.
    fn enter(watch: &'a Arc<Watch>, id: JobId, key: Option<CacheKey>) -> Reporting<'a> {
        let number = {
            let mut callbacks = watch.callbacks.lock();
            let number = callbacks.next;
            callbacks.next += 1;
            callbacks.running.insert(number, (id, key));
            number
        };
        Reporting {
            previous: REPORTING.replace(Arc::as_ptr(watch).addr()),
            watch,
            number,
        }
    }

    /// Whether this thread is in the progress callback of the pipeline that `watch` is of.
    fn inside(watch: &Arc<Watch>) -> bool {
        REPORTING.get() == Arc::as_ptr(watch).addr()
    }
}

impl Drop for Reporting<'_> {
    fn drop(&mut self) {
        REPORTING.set(self.previous);
        self.watch.callbacks.lock().running.remove(&self.number);
    }
}

/// Runs Transcription jobs on the worker threads.
struct Runner {
    cache: Cache,
    transcriber: Arc<dyn Transcriber>,
    plan: ChunkPlan,
    concurrency: ConcurrencyLimit,
    retry: RetryConfig,
    /// The spare chunk buffers every job's processor keeps its own in; `None` when each
    /// job frees its buffers ([`PipelineBuilder::keep_chunk_buffers`]).
    chunk_buffers: Option<Arc<ChunkBuffers>>,
    progress: Option<ProgressCallback>,
    /// Times the compute (see [`crate::Clock::for_timing`]).
    clock: SharedClock,
    /// Told of every run, for the requests waiting on them.
    watch: Arc<Watch>,
}

impl Runner {
    /// Runs a job. A failure (an error or a panic) is told to the watch by the pool, as the
    /// queue takes it (see [`start_workers`]); a completion here.
    fn run(&self, ctx: &JobContext<'_>) -> Result<JobResult, JobError> {
        let id = ctx.job_id();
        self.watch.started(id);
        let result = self.transcribe(ctx);
        // A job cancelled while it ran is no longer this worker's: the queue refuses its
        // outcome, and the cancel handed its followers to the first of them, which runs (or
        // is cancelled) on its own. Told the outcome anyway, the watch took the job and them
        // as ended so, and a request whose record then went was served, not told it was
        // cancelled.
        if result.is_ok()
            && let Ok(followers) = ctx.followers()
        {
            self.watch.ran(id, &followers, Ok(()));
        }
        result
    }

    fn transcribe(&self, ctx: &JobContext<'_>) -> Result<JobResult, JobError> {
        let request: Request = codec::decode(ctx.payload().as_bytes())
            .map_err(|e| JobError::Failed(format!("bad transcription request: {e}")))?;
        let path = path_from_bytes(request.path)
            .map_err(|e| JobError::Failed(format!("bad transcription request: {e}")))?;
        let started = self.clock.now();
        // A processor per job, for the request's language; its chunk buffers are the
        // pipeline's, so that this file reads into buffers earlier files left.
        let mut processor =
            ChunkedProcessor::builder(self.cache.clone(), self.transcriber.identity())
                .plan(self.plan)
                .concurrency(self.concurrency)
                .retry(self.retry)
                .language(request.language.clone())
                .keep_chunk_buffers(self.chunk_buffers.is_some());
        if let Some(buffers) = &self.chunk_buffers {
            processor = processor.share_chunk_buffers(Arc::clone(buffers));
        }
        let processor = processor
            .build()
            .map_err(|e| JobError::Failed(e.to_string()))?;
        // The queue memoizes the transcript under the transcript key when the job completes,
        // and the file was hashed to name the job: the processor does neither again.
        let mut options = RunOptions::new().skip_whole_file_memo();
        if !self.transcriber.allows_empty_text() {
            options = options.refuse_empty_text();
        }
        if let Some(callback) = &self.progress {
            let path = path.clone();
            let watch = Arc::clone(&self.watch);
            let (id, key) = (ctx.job_id(), ctx.lease().memo_key().copied());
            options = options.on_progress(move |progress: &Progress| {
                let _reporting = Reporting::enter(&watch, id, key);
                callback(&FileProgress {
                    path: path.clone(),
                    progress: *progress,
                });
            });
        }
        let transcriber = &self.transcriber;
        let output = processor
            .process_path(&path, &|chunk| transcriber.transcribe(chunk), options)
            .map_err(|e| JobError::Failed(e.to_string()))?;
        // The transcript is stored under the key of the bytes that were hashed: refuse it if
        // the file was rewritten since (see `Fingerprint`). Chunk results stay cached, keyed by
        // their own bytes, so a retry costs only what changed.
        if !still_as_hashed(&path, request.hashed) {
            return Err(JobError::Failed(format!(
                "{} changed while it was being transcribed; nothing was stored for it",
                path.display()
            )));
        }
        let transcript = Transcript {
            language: request.language,
            text: output.result.text,
            segments: output.result.segments,
            engine: self.transcriber.identity().to_owned(),
            chunks: output.computed + output.cached,
            chunks_computed: output.computed,
            empty_chunks: output
                .chunks
                .iter()
                .filter(|c| !c.result.has_text())
                .count(),
            compute_time: self.clock.now().saturating_duration_since(started),
            timing: output.timing,
        };
        let bytes = codec::encode(&transcript).map_err(|e| JobError::Failed(e.to_string()))?;
        Ok(JobResult::from(bytes))
    }
}

/// Starts the pipeline's `workers` on `queue`, running `handler` (a [`Runner`]'s, which a
/// test wraps) on its Transcription jobs. A failure is told to `watch`, with the followers
/// it ends, by the queue as it fails them, under its lock (the watch's lock is taken under
/// the queue's, never the other way round). Told by the run, with the followers the queue
/// reported before the pool handed it the failure, the watch missed a job coalesced in
/// between, which the queue failed with the others: a request whose record then left the
/// dead letters before it looked was told its job had been cancelled.
fn start_workers(
    queue: &JobQueue,
    watch: &Arc<Watch>,
    workers: ConcurrencyLimit,
    handler: impl Fn(&JobContext<'_>) -> Result<JobResult, JobError> + Send + Sync + 'static,
) -> Result<WorkerPool, PoolError> {
    let watch = Arc::clone(watch);
    WorkerPool::builder(queue.clone())
        .name("transcriber")
        .concurrency(workers)
        .handler(JobType::Transcription, handler)
        .on_failure(move |id, message, followers| {
            watch.ran(id, followers, Err(message.to_owned()));
        })
        .start()
}

/// A path as [`Request`] carries it: the bytes of its name on unix, where any bytes but NUL
/// may name a file; elsewhere its encoded bytes, of which [`path_from_bytes`] takes back
/// only UTF-8 (as the `PathBuf` encoding did).
fn path_to_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    #[cfg(not(unix))]
    let bytes = path.as_os_str().as_encoded_bytes();
    bytes.to_vec()
}

/// The path [`path_to_bytes`] encoded.
fn path_from_bytes(bytes: Vec<u8>) -> Result<PathBuf, std::string::FromUtf8Error> {
    #[cfg(unix)]
    let name = Ok(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes));
    #[cfg(not(unix))]
    let name = String::from_utf8(bytes).map(std::ffi::OsString::from);
    name.map(PathBuf::from)
}

impl Pipeline {
    /// A pipeline storing into `cache` and transcribing with `transcriber`.
    pub fn builder(cache: Cache, transcriber: Arc<dyn Transcriber>) -> PipelineBuilder {
        PipelineBuilder {
            cache,
            transcriber,
            plan: ChunkPlan::default(),
            chunk_concurrency: ConcurrencyLimit::default(),
            workers: ConcurrencyLimit::new(1).unwrap_or_default(),
            retry: RetryConfig::default(),
            keep_chunk_buffers: true,
            registry: None,
            rules: Vec::new(),
            channels: Vec::new(),
            progress: None,
            callback_wait: DEFAULT_CALLBACK_WAIT,
        }
    }

    /// The transcript of the file at `path` in `language`: from the cache, or computed.
    /// `path` must name a regular file (or a link to one): the file is read twice, so a pipe
    /// or a device is refused with [`PipelineError::Read`].
    /// Afterwards, whatever the outcome, the cache's and the queue's statistics are published
    /// and the alert rules evaluated ([`Pipeline::evaluate_alerts`]); a file served also
    /// counts in the pipeline's own metrics (see [`PipelineBuilder::registry`]) and
    /// [`Pipeline::stats`], a failed one does not.
    pub fn transcribe(
        &self,
        path: impl AsRef<Path>,
        language: &str,
    ) -> Result<TranscriptOutcome, PipelineError> {
        let path = path.as_ref();
        let outcome = self.transcribe_file(path, language);
        if let Ok(outcome) = &outcome {
            self.record(&outcome.transcript, outcome.from_cache, outcome.elapsed);
        }
        // After every file, served or failed, as the builder documents (a rule on failed jobs
        // must see a failure without waiting for the next success).
        self.evaluate_alerts();
        outcome
    }

    fn transcribe_file(
        &self,
        path: &Path,
        language: &str,
    ) -> Result<TranscriptOutcome, PipelineError> {
        let started = self.clock.now();
        let read_error = |source| PipelineError::Read {
            path: path.to_owned(),
            source,
        };
        // The metadata is taken before hashing, so that a rewrite during the hashing shows too.
        let (file, metadata) = open_regular(path).map_err(read_error)?;
        let hashed = Fingerprint::of(&metadata);
        let file_hash = CacheKey::from_reader(std::io::BufReader::new(file), "file")
            .map_err(|e| match e {
                KeyError::Io(source) => read_error(source),
                other => PipelineError::Key(other),
            })?
            .digest_hex();
        let key = CacheKey::transcript(&file_hash, language)?;

        // The transcript key has no engine or plan in it (it is the seed's key), so what it
        // holds may come from another engine or byte rate — or not be a transcript at all (a
        // `ChunkedProcessor` run with its own whole-file memo stores its record there). Each is
        // a miss, and is removed first: the queue looks the key up at submit and would hand it
        // back as the job's result. The new transcript then replaces it.
        let (transcript, from_cache, ran) = match self.cache.get(&key) {
            None => {
                let (transcript, ran) = self.compute(path, language, &file_hash, hashed, &key)?;
                (transcript, false, ran)
            }
            Some(stored) => match self.ours(&stored) {
                Some(transcript) => (transcript, true, false),
                None => {
                    // Only the value that was read: a concurrent call's job may have stored
                    // this engine's transcript since, and the submit below is then served it.
                    self.cache.remove_if(&key, |current| *current == stored);
                    let (transcript, ran) =
                        self.compute(path, language, &file_hash, hashed, &key)?;
                    (transcript, false, ran)
                }
            },
        };
        let elapsed = self.clock.now().saturating_duration_since(started);
        // A run reported its chunks as they finished; a request served without one is
        // reported once, done, so that a host's progress for the file reaches its end.
        if let (false, Some(callback)) = (ran, &self.progress) {
            let chunks = transcript.chunks;
            callback(&FileProgress {
                path: path.to_owned(),
                progress: Progress {
                    chunks_done: chunks,
                    chunks_total: chunks,
                    chunks_cached: chunks,
                    bytes_done: metadata.len(),
                    bytes_total: metadata.len(),
                    elapsed,
                    eta: Some(Duration::ZERO),
                },
            });
        }
        Ok(TranscriptOutcome {
            path: path.to_owned(),
            key,
            transcript,
            from_cache,
            elapsed,
        })
    }

    /// The transcript in a value stored under a transcript key, if this pipeline's engine made
    /// it and would have: `None` for another engine's, one timed otherwise than this
    /// pipeline's plan times the file (another byte rate's), one with chunks without text for
    /// an engine that does not allow them (the same engine, set to allow them, stored it), or
    /// a value that is not a transcript.
    fn ours(&self, stored: &[u8]) -> Option<Transcript> {
        codec::decode::<Transcript>(stored)
            .ok()
            .filter(|transcript| {
                transcript.engine == self.engine
                    && transcript.timing.fits(&self.plan)
                    && (transcript.empty_chunks == 0 || self.allows_empty_text)
            })
    }

    /// Submits the job and waits for it (or for the job it coalesced with).
    ///
    /// The queue answers a job from the cache when `key` holds a value at submit, and the key
    /// has no engine or plan in it: a pipeline of another engine or byte rate over the same
    /// cache may have stored its transcript there since this call's read missed. Such an
    /// answer is stale here, as it is on a read: it is removed (that value only) and the job
    /// submitted again, a few times at most, so that two pipelines storing in turn cannot keep
    /// this call looping.
    ///
    /// The job is submitted again, too, when it was coalesced onto another request's job and
    /// that job failed while this file is as it was hashed. Requests coalesce by content, so
    /// the job that ran may have read *another file* with the same bytes, and failed for that
    /// file's sake: deleted, or rewritten, before its worker read it. Returned as is, that
    /// failure failed this request too, whose own file was fine. The price is paid when the
    /// content itself fails (an engine that refuses a chunk): the requests that waited on the
    /// failed job resubmit and coalesce again, one of them runs and the rest wait again, up
    /// to `SUBMITS` runs in all — each redoing only the chunks that failed, since the others'
    /// results are cached. A request whose own file is gone or changed does not resubmit.
    ///
    /// It is submitted again, too, when its job completed but both the job's record and the
    /// transcript were gone when the request looked ([`JobEnd::Lost`]: see `run_job`): the
    /// transcript was made, and a run to make it again redoes only the merge, its chunks
    /// being cached (unless the cache lost them too). A cache that keeps refusing it (a
    /// transcript over its whole budget) still serves the request through the job's record,
    /// which a request polling at its longest pause misses only when over 1 024 other jobs
    /// finish within that pause; at the `SUBMITS`-th loss it fails, saying so.
    ///
    /// Returns the transcript and whether this request's own job ran the chunk processor (a
    /// job the queue answered from the cache, or coalesced onto another, did not).
    fn compute(
        &self,
        path: &Path,
        language: &str,
        file_hash: &str,
        hashed: Fingerprint,
        key: &CacheKey,
    ) -> Result<(Transcript, bool), PipelineError> {
        const SUBMITS: usize = 3;
        if Reporting::inside(&self.watch) {
            return Err(PipelineError::InsideOwnRun {
                path: path.to_owned(),
            });
        }
        let request = codec::encode(&Request {
            path: path_to_bytes(path),
            language: language.to_owned(),
            hashed,
        })?;
        let mut leader_failed = None;
        let mut lost = 0;
        // Whether any of this request's jobs ran, not only the last: a run reported the
        // file's progress, chunk by chunk, whichever submit it was. Taken from the last
        // alone, a request whose first job ran and lost its transcript, and whose next was
        // answered without a run (coalesced onto another request's job, or by the cache),
        // got the "done" report of a request served without a run after its run's reports.
        let mut ran = false;
        for _ in 0..SUBMITS {
            match self.run_job(path, language, file_hash, key, request.clone())? {
                JobEnd::Result {
                    value: result,
                    ran: this_ran,
                } => {
                    ran |= this_ran;
                    if let Some(transcript) = self.ours(&result) {
                        return Ok((transcript, ran));
                    }
                    self.cache.remove_if(key, |current| *current == result);
                }
                JobEnd::LeaderFailed(error) => {
                    if !still_as_hashed(path, hashed) {
                        return Err(error);
                    }
                    leader_failed = Some(error);
                }
                // Made and lost: run again (its chunks are cached, so only the merge is
                // redone), rather than fail a request whose transcript was made.
                JobEnd::Lost { ran: this_ran } => {
                    ran |= this_ran;
                    lost += 1;
                }
            }
        }
        Err(leader_failed.unwrap_or_else(|| PipelineError::Failed {
            path: path.to_owned(),
            message: if lost == 0 {
                format!(
                    "another engine's (or byte rate's) result was stored under its transcript \
                     key at each of {SUBMITS} submits"
                )
            } else {
                let stale = match SUBMITS - lost {
                    0 => String::new(),
                    n => format!(
                        ", and at the other {n} another engine's (or byte rate's) result was \
                         stored under the key"
                    ),
                };
                format!(
                    "the transcript was made, but at {lost} of {SUBMITS} submits the job's \
                     record had left the queue and the cache held no transcript under its key \
                     (refused as too large or by admission, or evicted) when this request \
                     looked{stale}"
                )
            },
        }))
    }

    /// Submits a Transcription job and waits for it (or for the job it coalesced with);
    /// returns how it ended.
    ///
    /// The queue keeps a finished job's record only until `retain_finished` (1 024) newer
    /// jobs have finished, and a dead letter (a failed job, or a follower failed with its
    /// leader) until 10 000 newer ones, so the record can go between two polls: jobs a host
    /// runs through [`Pipeline::queue`], or many requests at once, finish that many within a
    /// pause. The job is [`Watch`]ed meanwhile, and a record gone is read through what the
    /// watch learned:
    ///
    /// * a value under `key` is the job's result (or a later one), checked as any answer is
    ///   (see `compute`); whether the job ran is the watch's word, so a job that ran
    ///   entirely between two polls does not get the "done" report of a request served
    ///   without a run (which counted every chunk as cached);
    /// * a job that completed, with nothing under `key` (the cache refused the transcript,
    ///   too large or by admission, or evicted it), is [`JobEnd::Lost`] and submitted again;
    /// * a failure is its own (the run's message, a panic's included), or its leader's, in
    ///   the words the record has;
    /// * nothing learned means no worker of this pipeline ran it to an end the queue took,
    ///   no leader of its key did, and the queue reported no completion: it was cancelled
    ///   ([`PipelineError::Cancelled`]), before or while it ran (a run whose job is no longer
    ///   its worker's when it ends tells the watch nothing). A host that takes a pipeline
    ///   job's lease and fails it itself, or fails a host job this one followed, and then
    ///   pushes 10 000 dead letters out before a poll, is read so too; and a cancel that
    ///   falls between a completed run's last look at its lease and the queue taking its
    ///   result, the record then pushed out before a poll, is read as completed (a failure
    ///   is told as the queue takes it).
    ///
    /// Before, a record gone was read only through the cache: the request failed with "the
    /// job finished and left the queue's records …" for all but a stored result.
    fn run_job(
        &self,
        path: &Path,
        language: &str,
        file_hash: &str,
        key: &CacheKey,
        request: Vec<u8>,
    ) -> Result<JobEnd, PipelineError> {
        let job = Job::transcription(file_hash, language, request)?.with_max_retries(0);
        // Watched before the submit: a job the cache answers completes inside it.
        let _watching = self.watch.watch(job.id());
        let id = self.queue.submit(job)?;
        let failed = |message: String| PipelineError::Failed {
            path: path.to_owned(),
            message,
        };
        // The queue has no completion callback; poll with a short, growing pause.
        let mut pause = Duration::from_micros(200);
        let mut stall = Stall::default();
        let job = loop {
            match self.queue.get(id) {
                Some(job) if job.status().is_terminal() => break job,
                Some(job) => {
                    if job.started_at().is_some() {
                        // Running: whatever its callbacks do, nothing of this request's waits.
                        stall.clear();
                    } else if let Some(waited) = stall.waited(&self.watch, key)
                        && waited >= self.callback_wait
                    {
                        // Not left to run for nobody once the callback returns. A job that
                        // ended or started since the poll is not refused: its end decides
                        // (its transcript may be there, or its run live).
                        if gave_up_waiting(&self.queue, id) {
                            return Err(PipelineError::WaitsOnCallback {
                                path: path.to_owned(),
                                waited,
                            });
                        }
                        stall.clear();
                        continue;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                None => {
                    let (ran, end) = self.watch.learned(id);
                    // A peek: this is the job's own result, not a cache hit of the request.
                    if let Some(value) = self.cache.peek(key) {
                        return Ok(JobEnd::Result { value, ran });
                    }
                    return match end {
                        Some(Ended::Completed) => Ok(JobEnd::Lost { ran }),
                        Some(Ended::Failed(message)) => Err(failed(message)),
                        Some(Ended::LeaderFailed(message)) => {
                            Ok(JobEnd::LeaderFailed(failed(message)))
                        }
                        None => Err(PipelineError::Cancelled {
                            path: path.to_owned(),
                        }),
                    };
                }
            }
        };
        if let (JobStatus::Completed, Some(result)) = (job.status(), job.result()) {
            return Ok(JobEnd::Result {
                value: result.as_bytes().clone(),
                // The watch's word, as when the record has gone: a job the memo store
                // answered, or a follower, never started, and one a host's worker took (through
                // `Pipeline::queue`) started but reported no progress of the file.
                ran: self.watch.learned(id).0,
            });
        }
        if job.status() == JobStatus::Cancelled {
            return Err(PipelineError::Cancelled {
                path: path.to_owned(),
            });
        }
        let error = failed(
            job.error_message()
                .unwrap_or("the job ended without a result")
                .to_owned(),
        );
        // A job fails without ever being leased only as a follower, with its leader.
        if job.status() == JobStatus::Failed && job.started_at().is_none() {
            Ok(JobEnd::LeaderFailed(error))
        } else {
            Err(error)
        }
    }

    fn record(&self, transcript: &Transcript, from_cache: bool, elapsed: Duration) {
        // A non-finite latency is impossible (it comes from a Duration); nothing to report.
        let _ = self.latency.observe(elapsed.as_secs_f64());
        self.served[usize::from(!from_cache)].inc();
        if from_cache {
            self.saved.add(transcript.compute_time.as_secs_f64());
        }
    }

    /// Publishes the cache's and the queue's statistics, then evaluates the alert rules now;
    /// returns what fired or resolved (also sent to the rules' channels). [`Pipeline::transcribe`]
    /// does this after every file; a host with rules on time windows calls it on a timer too.
    ///
    /// Notifiers run with no lock of the pipeline held, so one may call the pipeline (this
    /// method too), and a slow one holds up no other thread's evaluation. Each channel gets
    /// the notifications in the order the evaluations made them: while one thread delivers,
    /// an evaluation on another thread (or from inside a notifier) queues its own behind and
    /// returns, and the delivering thread sends them too, and re-raises the first panic of a
    /// notifier among all it delivered.
    pub fn evaluate_alerts(&self) -> Vec<Notification> {
        self.cache_metrics.publish(&self.cache.stats());
        self.queue_metrics.publish(&self.queue.stats());
        let notifications = {
            // Held across a notifier's call, the evaluator's lock deadlocked a notifier that
            // called back in, and a slow notifier held every thread's `transcribe` up.
            let mut alerts = self.alerts.lock();
            let decided = alerts.decide();
            let notifications = decided.iter().filter_map(|d| d.notification().cloned());
            let notifications = notifications.collect();
            // Queued while the evaluator is still locked: in the order evaluations decided.
            self.outbox.lock().pending.extend(decided);
            notifications
        };
        self.deliver_alerts();
        notifications
    }

    /// Delivers the queued notifications in order, unless a thread (another, or this one
    /// further up its stack, in a notifier) is delivering already: that one sends them.
    fn deliver_alerts(&self) {
        {
            let mut outbox = self.outbox.lock();
            if outbox.delivering {
                return;
            }
            outbox.delivering = true;
        }
        let mut panics = FirstPanic::default();
        loop {
            let next = {
                let mut outbox = self.outbox.lock();
                let next = outbox.pending.pop_front();
                outbox.delivering = next.is_some();
                next
            };
            let Some(delivery) = next else { break };
            delivery.send(&mut panics);
        }
        panics.resume();
    }

    /// Totals since the pipeline started.
    pub fn stats(&self) -> PipelineStats {
        let percentiles = [Percentile::p50(), Percentile::p95(), Percentile::p99()];
        // `Histogram::percentiles` gives 0.0 for an empty window (the seed's rule), which
        // would read as a latency of zero; NaN says "no file", as documented. One copy of the
        // window tells an empty one apart: asking `aggregate` first read the clock twice, and
        // a latency expiring in between gave 0.0.
        let mut latency = [f64::NAN; 3];
        let retention = self.registry.retention();
        if let Some(values) = self.latency.percentiles_if_any(&percentiles, retention) {
            for (slot, value) in latency.iter_mut().zip(values) {
                *slot = value;
            }
        }
        // The sum of stored compute times can exceed what a Duration holds (a stored
        // transcript is the host's data); `from_secs_f64` would panic on it.
        let saved = Duration::try_from_secs_f64(self.saved.get().max(0.0));
        PipelineStats {
            hits: self.served[0].get(),
            misses: self.served[1].get(),
            time_saved: saved.unwrap_or(Duration::MAX),
            latency_p50_p95_p99: latency,
        }
    }

    /// The alert rules ([`PipelineBuilder::alert_rule`]), in the order the builder was given
    /// them, each as the pipeline holds it, with its health: `Ok` if the last evaluation
    /// ([`Pipeline::evaluate_alerts`], which every file's service runs) could evaluate it,
    /// or none has run yet, and else why not, as [`AlertEvaluator::rule_health`] gives it.
    ///
    /// The build refuses a rule that cannot read the pipeline's metrics (or a given
    /// registry's), but a rule may name a metric the host registers later, in
    /// [`Pipeline::registry`], as something it cannot read (a counter the rule averages):
    /// the next evaluation finds it, logs it once at `WARN`, and reads nothing for the rule,
    /// which is what this reports. Each rule carries the id the pipeline knows it by
    /// ([`AlertRule::id`], as in its [`Notification`]s): a rule given twice (a clone keeps
    /// its id) has a new one the second time ([`AlertEvaluator::add_rule`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use memocache::{AlertRule, Cache, MetricError, Severity, Threshold};
    /// use memocache::pipeline::{Pipeline, StandInTranscriber};
    ///
    /// let cache = Cache::builder().max_bytes(1 << 20).build()?;
    /// let above = Threshold::greater_than(100.0)?;
    /// let hour = Duration::from_secs(3600);
    /// let rule = AlertRule::new("busy", "app_requests_total", above, Severity::Warning, hour);
    /// let pipeline = Pipeline::builder(cache, Arc::new(StandInTranscriber::new(1)))
    ///     .alert_rule(rule) // not registered yet: taken
    ///     .build()?;
    /// pipeline.registry().counter("app_requests_total", "Requests.", &[])?.inc_by(500);
    /// pipeline.evaluate_alerts();
    /// // The rule averages (the default aggregation) a counter, which keeps no history.
    /// let rules = pipeline.alert_rules();
    /// assert_eq!(rules[0].0.name(), "busy");
    /// assert!(matches!(rules[0].1, Err(MetricError::NoHistory { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alert_rules(&self) -> Vec<(AlertRule, Result<(), MetricError>)> {
        let alerts = self.alerts.lock();
        let rules = alerts.rules_with_health();
        rules
            .map(|(rule, health)| (rule.clone(), health.map_err(MetricError::clone)))
            .collect()
    }

    /// The registry the pipeline publishes into (render it with
    /// [`MetricsRegistry::render_prometheus`]).
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }

    /// How many spare chunk buffers the pipeline holds now for its next files: up to
    /// `workers × (2 × chunk_concurrency + 1)`, each up to the plan's chunk size (see
    /// [`PipelineBuilder::keep_chunk_buffers`]); 0 before the first file's run, and always
    /// with `keep_chunk_buffers(false)`.
    pub fn spare_chunk_buffers(&self) -> usize {
        self.chunk_buffers
            .as_ref()
            .map_or(0, |buffers| buffers.spare())
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The job queue.
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.get_mut().take() {
            pool.shutdown(Shutdown::Drain);
        }
    }
}

/// Cancels job `id` of a request that waited its bound on a progress callback, if the job
/// still waits (not started, not ended): whether it did, and the request is to be refused.
/// Before, the cancel's answer was ignored and the request refused even when its job had
/// completed, or started, between the poll and the cancel.
fn gave_up_waiting(queue: &JobQueue, id: JobId) -> bool {
    matches!(queue.cancel_unstarted(id), Ok(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkerId;

    /// Bug: a worker's failed run marked as failed with it every watched job of its memo key
    /// that had not run, taken to be its followers: a job of the key the memo store had
    /// answered at its submit, whose request had not looked yet, was marked failed over its
    /// completion (and read so once its record went). The followers are now the queue's.
    #[test]
    fn a_failed_run_marks_the_jobs_the_queue_coalesced_onto_it_and_no_other() {
        let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
        let watch = Arc::new(Watch::new(1));
        let queue = JobQueue::builder()
            .cache(cache.clone())
            .on_complete({
                let watch = Arc::clone(&watch);
                move |completion| watch.completed(completion.id)
            })
            .build()
            .expect("valid");
        // Without retries, as the pipeline's jobs.
        let job = |payload: &'static [u8]| {
            let job = Job::transcription(&"ab".repeat(32), "en", payload).expect("a valid key");
            job.with_max_retries(0)
        };
        // Answered by the memo store at its submit, then the stored result goes.
        let answered = job(b"answered");
        let key = *answered.memo_key().expect("memoized");
        cache.insert(key, &b"stored"[..]).expect("stored");
        let _answered = watch.watch(answered.id());
        let answered = queue.submit(answered).expect("room");
        assert_eq!(watch.learned(answered).1, Some(Ended::Completed));
        cache.remove(&key);
        // A leader of the key, and a follower.
        let leader = job(b"leader");
        let _leader = watch.watch(leader.id());
        let leader = queue.submit(leader).expect("room");
        let follower = job(b"follower");
        let _follower = watch.watch(follower.id());
        let follower = queue.submit(follower).expect("room");
        assert_eq!(queue.stats().coalesced, 1);

        let lease = queue.try_next(&WorkerId::new("w")).expect("the leader");
        assert_eq!(lease.job_id(), leader);
        watch.started(leader);
        let mark = |id, message: &str, followers: &[JobId]| {
            watch.ran(id, followers, Err(message.to_owned()));
        };
        queue
            .fail_telling(&lease, "refused".to_owned(), Some(&mark))
            .expect("current");

        assert_eq!(
            watch.learned(leader),
            (true, Some(Ended::Failed("refused".to_owned())))
        );
        assert_eq!(
            watch.learned(follower),
            (
                false,
                Some(Ended::LeaderFailed(coalesced_failure(leader, "refused")))
            )
        );
        assert_eq!(watch.learned(answered), (false, Some(Ended::Completed)));
        // A lease no longer current: refused, nothing marked.
        let told = |_: JobId, _: &str, _: &[JobId]| panic!("told of a stale lease's failure");
        assert!(
            queue
                .fail_telling(&lease, "again".to_owned(), Some(&told))
                .is_err()
        );
    }

    /// Bug: a request that had waited its bound on a progress callback cancelled its job and
    /// was refused whatever the cancel said: a job completed (a follower, with its leader as
    /// the callback returned) or started between the poll and the cancel was refused
    /// although its transcript was there or its run live. Only a job still waiting is
    /// cancelled and refused now; the others go on being polled. (A unit test of the
    /// decision: the window between the poll and the cancel is not hit deterministically.)
    #[test]
    fn a_wait_on_a_callback_refuses_only_a_job_that_still_waits() {
        let queue = JobQueue::builder().build().expect("valid");
        let job = |payload: &'static [u8]| {
            Job::transcription(&"cd".repeat(32), "en", payload).expect("a valid key")
        };
        let worker = WorkerId::new("w");
        // Started: left to its live run.
        let started = queue.submit(job(b"started")).expect("room");
        let lease = queue.try_next(&worker).expect("the job");
        assert_eq!(lease.job_id(), started);
        assert!(!gave_up_waiting(&queue, started));
        assert_eq!(
            queue.get(started).map(|job| job.status()),
            Some(JobStatus::Processing)
        );
        // Completed: its result decides.
        queue
            .complete(&lease, JobResult::from(&b"transcript"[..]))
            .expect("current");
        assert!(!gave_up_waiting(&queue, started));
        assert_eq!(
            queue.get(started).map(|job| job.status()),
            Some(JobStatus::Completed)
        );
        // Still waiting: cancelled, and refused.
        let waiting = queue.submit(job(b"waiting")).expect("room");
        assert!(gave_up_waiting(&queue, waiting));
        assert_eq!(
            queue.get(waiting).map(|job| job.status()),
            Some(JobStatus::Cancelled)
        );
    }

    /// Fails its first call ("refused once"); answers the others once `later` lets them
    /// through (or its sender has gone).
    struct RefusesFirst {
        failed: std::sync::atomic::AtomicBool,
        later: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Transcriber for RefusesFirst {
        fn identity(&self) -> &str {
            "refuses-first/v1"
        }

        fn transcribe(
            &self,
            chunk: &crate::chunk::AudioChunk,
        ) -> Result<crate::chunk::ChunkResult, TranscribeError> {
            if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(TranscribeError::Engine("refused once".into()));
            }
            let _ = self.later.lock().recv();
            let text = format!("len{}", chunk.data().len());
            Ok(crate::chunk::ChunkResult::from_text(text))
        }
    }

    /// Bug: a failed run's outcome was given to the followers the queue reported when the run
    /// ended, before its worker handed the failure to the queue; a request coalesced onto the
    /// job in between was failed by the queue with the leader but never marked, so once its
    /// record had left the dead letters before it looked, it was read as cancelled
    /// (`PipelineError::Cancelled`), and not submitted again as a follower of a failed job
    /// is. The followers are now marked under the queue's lock, in the step that fails them.
    ///
    /// Deterministic: the pipeline's own handler runs p1's job, whose engine fails, and the
    /// worker then waits at a barrier before reporting; meanwhile p2's request is coalesced
    /// onto the job, and behind it 10 000 jobs of the host's own (the queue's dead letters),
    /// so that the failure pushes p1's and p2's records out in the step that buries them.
    #[test]
    fn a_request_coalesced_onto_a_run_after_it_ended_is_marked_with_its_failure() {
        use std::sync::Barrier;
        use std::sync::atomic::{AtomicBool, Ordering};
        const DEAD_LETTERS: usize = 10_000;

        let dir = tempfile::tempdir().expect("temp dir");
        let [p1, p2] = ["p1.bin", "p2.bin"].map(|name| dir.path().join(name));
        let bytes = [2u8; 500];
        std::fs::write(&p1, bytes).expect("written");
        std::fs::write(&p2, bytes).expect("written");
        let file_hash = CacheKey::from_content(&bytes, "file")
            .expect("key")
            .digest_hex();
        let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
        // p2's job, submitted again, runs only once p1's request has returned, so that p1's
        // request, which looks in the cache first, cannot be served the transcript it makes.
        let (p1_returned, later) = std::sync::mpsc::channel();
        let engine: Arc<dyn Transcriber> = Arc::new(RefusesFirst {
            failed: AtomicBool::new(false),
            later: Mutex::new(later),
        });
        let plan = ChunkPlan::with_chunk_bytes(1000).expect("valid size");
        let retry = RetryConfig::fixed(0, Duration::ZERO);
        let p = Pipeline::builder(cache, Arc::clone(&engine))
            .plan(plan)
            .retry(retry)
            .build()
            .expect("starts");
        // The pipeline's own handler, on workers of the test's whose first run waits after it.
        if let Some(pool) = p.pool.lock().take() {
            pool.shutdown(Shutdown::Now);
        }
        let runner = Runner {
            cache: p.cache.clone(),
            transcriber: engine,
            plan,
            concurrency: ConcurrencyLimit::default(),
            retry,
            chunk_buffers: None,
            progress: None,
            clock: Arc::clone(&p.clock),
            watch: Arc::clone(&p.watch),
        };
        let (ended, go) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let held = AtomicBool::new(false);
        let one = ConcurrencyLimit::new(1).expect("valid");
        let pool = start_workers(&p.queue, &p.watch, one, {
            let (ended, go) = (Arc::clone(&ended), Arc::clone(&go));
            move |ctx| {
                let outcome = runner.run(ctx);
                if !held.swap(true, Ordering::SeqCst) {
                    ended.wait();
                    go.wait();
                }
                outcome
            }
        })
        .expect("starts");

        let (from_p1, from_p2) = std::thread::scope(|s| {
            let from_p1 = s.spawn(|| p.transcribe(&p1, "en"));
            ended.wait();
            let from_p2 = s.spawn(|| p.transcribe(&p2, "en"));
            let since = std::time::Instant::now();
            while p.queue.stats().coalesced == 0 {
                assert!(
                    since.elapsed() < Duration::from_secs(60),
                    "p2 never coalesced"
                );
                std::thread::yield_now();
            }
            for _ in 0..DEAD_LETTERS {
                let job = Job::transcription(&file_hash, "en", &b""[..]).expect("key");
                p.queue.submit(job).expect("room");
            }
            assert_eq!(p.queue.stats().coalesced_waiting, DEAD_LETTERS + 1);
            go.wait();
            let from_p1 = from_p1.join().expect("no panic");
            p1_returned.send(()).expect("the engine listens");
            (from_p1, from_p2.join().expect("no panic"))
        });
        pool.shutdown(Shutdown::Drain);
        let dead = p.queue.dead_letters();
        assert_eq!(dead.len(), DEAD_LETTERS);
        assert!(dead.iter().all(|job| job.payload().as_bytes().is_empty()));
        let error = from_p1.expect_err("p1's job failed").to_string();
        assert!(error.ends_with("refused once"), "{error}");
        let served = from_p2.unwrap_or_else(|e| panic!("p2 failed: {e}"));
        assert_eq!(served.transcript.text, "len500");
        assert_eq!(served.path, p2);
    }
}
