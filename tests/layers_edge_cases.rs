//! An adversarial audit of the layers over the engine (issues #6, #7, #8): each test pins a
//! behaviour the existing suites did not reach — most of them a bug this audit found and fixed.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use memocache::chunk::{AudioChunk, ChunkPlan, ChunkResult, ChunkedProcessor, RunOptions, Timing};
use memocache::metrics::{Aggregation, AlertRule, MemoryNotifier};
use memocache::pipeline::{Pipeline, TranscribeError, Transcriber, Transcript};
use memocache::{
    Cache, CacheKey, Clock, ConcurrencyLimit, ManualClock, MetricsRegistry, Percentile,
    RetryConfig, Severity, Threshold, Timestamp,
};

mod clock_support;
use clock_support::paged_alerts;

mod pipeline_support;
use pipeline_support::{cache, temp_file, write};

/// An engine that answers with its own name and counts its calls.
struct Named {
    identity: &'static str,
    calls: AtomicUsize,
}

impl Named {
    fn new(identity: &'static str) -> Arc<Named> {
        Arc::new(Named {
            identity,
            calls: AtomicUsize::new(0),
        })
    }
}

impl Transcriber for Named {
    fn identity(&self) -> &str {
        self.identity
    }

    fn transcribe(&self, _: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(ChunkResult::from_text(self.identity))
    }
}

fn pipeline(cache: Cache, engine: Arc<dyn Transcriber>) -> Pipeline {
    Pipeline::builder(cache, engine)
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .build()
        .expect("starts")
}

/// The transcript key has no engine in it (it is the seed's `from_parts(hash, language)`), so
/// a transcript made by one engine must not be served to a pipeline running another: a user
/// who switches from the stand-in to a real engine (`memocache transcribe --engine-cmd ...`
/// over the same `--cache-dir`) would otherwise get the stand-in's words back.
#[test]
fn a_transcript_from_another_engine_is_not_served_and_is_replaced() {
    let (_dir, audio) = temp_file("a.raw", &[7u8; 2500]);
    let cache = cache();

    let old = Named::new("old-engine/1");
    let first = pipeline(cache.clone(), old.clone())
        .transcribe(&audio, "en")
        .expect("transcribed");
    assert_eq!(first.transcript.engine, "old-engine/1");

    let new = Named::new("new-engine/2");
    let pipe = pipeline(cache.clone(), new.clone());
    let second = pipe.transcribe(&audio, "en").expect("transcribed");
    assert!(!second.from_cache, "another engine's transcript was served");
    assert_eq!(second.transcript.engine, "new-engine/2");
    assert!(second.transcript.text.starts_with("new-engine/2"));
    assert!(new.calls.load(Ordering::SeqCst) > 0);

    // The new engine's transcript replaced the old one under the same key, and is served.
    let third = pipe.transcribe(&audio, "en").expect("transcribed");
    assert!(third.from_cache);
    assert_eq!(third.transcript.engine, "new-engine/2");
    let stored: Transcript = cache
        .get_typed(&third.key)
        .expect("decodes")
        .expect("stored");
    assert_eq!(stored.engine, "new-engine/2");
}

/// What the transcript key holds may not be a transcript at all: a `ChunkedProcessor` run
/// with its whole-file memo on stores its own record under the same key. The pipeline used to
/// skip it, submit the job, get those bytes back from the queue's memo lookup and fail the file
/// with a decoding error on every run.
#[test]
fn a_value_under_the_transcript_key_that_is_not_a_transcript_is_replaced() {
    let (_dir, audio) = temp_file("a.raw", b"some audio bytes");
    let cache = cache();
    let processor = ChunkedProcessor::builder(cache.clone(), "other-model/1")
        .language("en")
        .build()
        .expect("valid");
    let echo =
        |c: &AudioChunk| Ok::<_, String>(ChunkResult::from_text(format!("{}", c.data().len())));
    let processed = processor
        .process_path(&audio, &echo, RunOptions::new())
        .expect("processed");
    let key = processed.file_key.expect("whole-file memo on");
    assert!(
        cache.get_typed::<Transcript>(&key).is_err(),
        "not a transcript"
    );

    let pipe = pipeline(cache.clone(), Named::new("e/1"));
    let outcome = pipe.transcribe(&audio, "en").expect("transcribed");
    assert_eq!(outcome.key, key);
    assert!(!outcome.from_cache);
    assert_eq!(outcome.transcript.text, "e/1");
    assert!(pipe.transcribe(&audio, "en").expect("served").from_cache);
}

/// What [`Interposing`] stores, and where, once it fires.
struct Interposition {
    cache: Cache,
    key: CacheKey,
    transcript: Transcript,
    /// Whether the cache's statistics say it is time.
    when: fn(&memocache::CacheStats) -> bool,
}

/// A clock that plays another thread at the worst moment: the first time `thread` reads it
/// after the cache's statistics meet the interposition's `when` (a hit counted, a miss), it
/// stores a transcript, as another pipeline's job finishing just then would. (The cache reads
/// its clock before it takes a shard lock, so storing from here deadlocks nothing.)
#[derive(Clone)]
struct Interposing {
    time: ManualClock,
    thread: std::thread::ThreadId,
    /// Taken when it fires, so it fires once (its own insert reads the clock too) and the
    /// cycle cache → clock → cache is broken.
    pending: Arc<parking_lot::Mutex<Option<Interposition>>>,
}

impl std::fmt::Debug for Interposing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interposing").finish_non_exhaustive()
    }
}

/// A cache on an [`Interposing`] clock that plays no part until its slot is filled, and the
/// transcript key of `bytes` in English.
type InterposedCache = (
    Cache,
    Arc<parking_lot::Mutex<Option<Interposition>>>,
    CacheKey,
);

fn interposed_cache(bytes: &[u8]) -> InterposedCache {
    let pending = Arc::new(parking_lot::Mutex::new(None));
    let clock = Interposing {
        time: ManualClock::new(),
        thread: std::thread::current().id(),
        pending: Arc::clone(&pending),
    };
    let cache = Cache::builder()
        .max_bytes(64 << 20)
        .clock(clock)
        .build()
        .expect("valid");
    let file_hash = CacheKey::from_content(bytes, "file")
        .expect("valid prefix")
        .digest_hex();
    let key = CacheKey::transcript(&file_hash, "en").expect("valid key");
    (cache, pending, key)
}

impl Clock for Interposing {
    fn now(&self) -> Timestamp {
        if std::thread::current().id() == self.thread {
            let pending = self.pending.lock().take();
            if let Some(pending) = pending {
                if (pending.when)(&pending.cache.stats()) {
                    pending
                        .cache
                        .insert_typed(pending.key, &pending.transcript)
                        .expect("fits");
                } else {
                    *self.pending.lock() = Some(pending);
                }
            }
        }
        self.time.now()
    }
}

/// Bug: the pipeline read the transcript key, found another engine's transcript and removed
/// the key, unconditionally; a transcript of this engine stored in between (by a concurrent
/// call whose job had just finished) was thrown away and computed again. The removal now
/// takes only the value that was read, and the transcript stored in between is served.
#[test]
fn a_transcript_stored_between_the_stale_read_and_its_removal_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = dir.path().join("a.raw");
    let bytes = [7u8; 2500];
    write(&audio, &bytes);
    let (cache, pending, key) = interposed_cache(&bytes);
    let transcript = |engine: &str, text: &str| Transcript {
        language: "en".into(),
        text: text.into(),
        segments: Vec::new(),
        engine: engine.into(),
        chunks: 3,
        chunks_computed: 3,
        empty_chunks: 0,
        compute_time: Duration::from_secs(1),
        timing: Timing::ByteRate(None),
    };
    cache
        .insert_typed(key, &transcript("old-engine/1", "stale"))
        .expect("fits");
    let fresh = transcript("e/1", "stored meanwhile");
    *pending.lock() = Some(Interposition {
        cache: cache.clone(),
        key,
        transcript: fresh.clone(),
        when: |stats| stats.hits > 0,
    });
    let engine = Named::new("e/1");
    let pipe = pipeline(cache.clone(), engine.clone());
    let outcome = pipe.transcribe(&audio, "en").expect("transcribed");
    assert!(pending.lock().is_none(), "the interposed store never ran");
    assert_eq!(
        outcome.transcript, fresh,
        "the transcript stored meanwhile was lost"
    );
    assert_eq!(engine.calls.load(Ordering::SeqCst), 0, "computed again");
    let stored: Transcript = cache.get_typed(&key).expect("decodes").expect("stored");
    assert_eq!(stored, fresh);
}

/// Bug: the pipeline checked the engine of a transcript it read from the cache, but not of one
/// its job returned, and the job queue answers a job from the cache at submit. A pipeline whose
/// read missed, while another engine's pipeline over the same cache stored this file's
/// transcript before the submit, was handed that engine's transcript as its own result. It is
/// now taken for the stale value it is: removed, and the file transcribed by this engine.
#[test]
fn another_engines_transcript_stored_before_the_submit_is_not_returned() {
    // Three chunks of 1000 bytes or less, no two alike: three calls of the engine.
    let bytes: Vec<u8> = (0..2500u32).map(|i| (i / 1000) as u8).collect();
    let (_dir, audio) = temp_file("a.raw", &bytes);
    let (cache, pending, key) = interposed_cache(&bytes);
    let engine = Named::new("e/1");
    let pipe = pipeline(cache.clone(), engine.clone());
    // After the pipeline's read of the key misses: another engine's job finishing then.
    *pending.lock() = Some(Interposition {
        cache: cache.clone(),
        key,
        transcript: Transcript {
            language: "en".into(),
            text: "other words".into(),
            segments: Vec::new(),
            engine: "other-engine/1".into(),
            chunks: 3,
            chunks_computed: 3,
            empty_chunks: 0,
            compute_time: Duration::from_secs(1),
            timing: Timing::ByteRate(None),
        },
        when: |stats| stats.misses > 0,
    });
    let outcome = pipe.transcribe(&audio, "en").expect("transcribed");
    assert!(pending.lock().is_none(), "the interposed store never ran");
    assert_eq!(
        outcome.transcript.engine, "e/1",
        "another engine's transcript"
    );
    assert_eq!(outcome.transcript.text, "e/1 e/1 e/1");
    assert_eq!(engine.calls.load(Ordering::SeqCst), 3);
    let stored: Transcript = cache.get_typed(&key).expect("decodes").expect("stored");
    assert_eq!(stored, outcome.transcript);
}

/// An engine that takes `took` of the cache's (manual) clock per chunk.
struct Slow {
    clock: ManualClock,
    took: Duration,
}

impl Transcriber for Slow {
    fn identity(&self) -> &str {
        "slow/1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        self.clock.advance(self.took);
        Ok(ChunkResult::from_text(format!(
            "{} bytes",
            chunk.data().len()
        )))
    }
}

/// A long recording takes a real engine far longer than the job queue's default five-minute
/// lease. The pipeline's workers are threads of this process that report every outcome (a
/// panicking handler is caught), so a lease expiring under a running transcription must not
/// fail the file.
#[test]
fn a_file_that_takes_longer_than_a_job_lease_is_still_transcribed() {
    // Three different chunks, so each one costs the engine its time.
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i / 1000) as u8).collect();
    let (_dir, audio) = temp_file("long.raw", &bytes);
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(64 << 20)
        .clock(clock.clone())
        .build()
        .expect("valid");
    let engine = Arc::new(Slow {
        clock: clock.clone(),
        took: Duration::from_secs(4 * 60),
    });
    let pipe = Pipeline::builder(cache, engine)
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .chunk_concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .build()
        .expect("starts");
    let outcome = pipe.transcribe(&audio, "en").expect("transcribed");
    assert_eq!(outcome.transcript.chunks, 3);
    assert_eq!(outcome.transcript.text, "1000 bytes 1000 bytes 1000 bytes");
    assert_eq!(pipe.queue().stats().lease_expirations, 0);
}

/// `PipelineStats::latency_p50_p95_p99` is documented as NaN before the first file (the
/// command prints `-` for it), not as a latency of zero.
#[test]
fn latency_percentiles_are_nan_until_a_file_is_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipe = pipeline(cache(), Named::new("e/1"));
    assert!(pipe.stats().latency_p50_p95_p99.iter().all(|v| v.is_nan()));
    // A failed file is not a served one.
    assert!(
        pipe.transcribe(dir.path().join("missing.wav"), "en")
            .is_err()
    );
    assert!(pipe.stats().latency_p50_p95_p99.iter().all(|v| v.is_nan()));
    let audio = dir.path().join("a.raw");
    write(&audio, &[2u8; 10]);
    pipe.transcribe(&audio, "en").expect("transcribed");
    assert!(
        pipe.stats()
            .latency_p50_p95_p99
            .iter()
            .all(|v| v.is_finite())
    );
}

/// A clock for a registry that moves on by a second each time the thread it is stepped for
/// reads it, as a real clock moves between two reads; other threads (the pipeline's workers)
/// read it standing still.
#[derive(Debug, Default)]
struct SteppedFor {
    at: std::sync::atomic::AtomicU64,
    thread: std::sync::Mutex<Option<std::thread::ThreadId>>,
}

impl SteppedFor {
    fn set(&self, at: Duration, stepping: Option<std::thread::ThreadId>) {
        let nanos = u64::try_from(at.as_nanos()).expect("fits");
        self.at.store(nanos, Ordering::SeqCst);
        *self.thread.lock().expect("not poisoned") = stepping;
    }
}

impl Clock for SteppedFor {
    fn now(&self) -> Timestamp {
        let mine = *self.thread.lock().expect("not poisoned") == Some(std::thread::current().id());
        let step = if mine { 1_000_000_000 } else { 0 };
        Timestamp::from_nanos(self.at.fetch_add(step, Ordering::SeqCst))
    }
}

/// Bug: `Pipeline::stats` asked the registry whether the latency window had data and then,
/// reading the clock again, for its percentiles; a file's latency that expired between the
/// two reads gave a p50, p95 and p99 of 0.0 (the empty window's), a latency of zero where
/// "no file" is NaN. Stepping the clock a second a read, from each start around the expiry,
/// the answer must be the latency or NaN.
#[test]
fn a_latency_expiring_during_stats_is_no_file_not_zero() {
    let (_dir, audio) = temp_file("a.raw", &[4u8; 10]);
    let clock = Arc::new(SteppedFor::default());
    let retention = Duration::from_secs(60);
    let registry = MetricsRegistry::with_clock(clock.clone(), retention);
    let pipe = Pipeline::builder(cache(), Named::new("e/1"))
        .registry(registry)
        .build()
        .expect("starts");
    clock.set(Duration::from_secs(100), None);
    pipe.transcribe(&audio, "en").expect("transcribed");
    let [latency, ..] = pipe.stats().latency_p50_p95_p99;
    assert!(latency.is_finite() && latency > 0.0, "{latency}");
    // The latency, stamped at 100 s, leaves the 60 s retention at 160 s.
    for start in 150..=161 {
        clock.set(
            Duration::from_secs(start),
            Some(std::thread::current().id()),
        );
        let got = pipe.stats().latency_p50_p95_p99;
        assert!(
            got.iter().all(|v| v.is_nan()) || got.iter().all(|&v| v == latency),
            "from {start} s: {got:?}"
        );
    }
}

/// The time saved adds up the compute times of the transcripts served from the cache; a stored
/// transcript is data the host controls, and a huge compute time must not panic `stats`.
#[test]
fn stats_survive_a_stored_transcript_with_a_huge_compute_time() {
    let (_dir, audio) = temp_file("a.raw", &[3u8; 10]);
    let cache = cache();
    let pipe = pipeline(cache.clone(), Named::new("e/1"));
    let first = pipe.transcribe(&audio, "en").expect("transcribed");
    let mut stored = first.transcript.clone();
    stored.compute_time = Duration::MAX;
    cache.insert_typed(first.key, &stored).expect("stored");
    for _ in 0..2 {
        assert!(pipe.transcribe(&audio, "en").expect("served").from_cache);
    }
    assert_eq!(pipe.stats().time_saved, Duration::MAX);
}

/// `Comparison::Equal` compares within a tolerance scaled by the values; an infinite actual
/// value scaled the tolerance to infinity and so "equalled" every threshold. A gauge can hold
/// +Inf (it is exposed as such), so an `Equal` rule on it fired.
#[test]
fn an_infinite_value_equals_no_finite_threshold() {
    let equal = Threshold::equal(5.0).expect("finite");
    assert!(!equal.check(f64::INFINITY));
    assert!(!equal.check(f64::NEG_INFINITY));
    assert!(equal.check(5.0));

    let clock = ManualClock::new();
    let registry = MetricsRegistry::with_clock(clock.clone(), Duration::from_secs(60));
    let gauge = registry.gauge("level", "A level.", &[]).expect("valid");
    let (mut alerts, pager) = paged_alerts(&registry);
    alerts
        .add_rule(
            AlertRule::new(
                "exactly five",
                "level",
                equal,
                Severity::Info,
                Duration::from_secs(60),
            )
            .with_aggregation(Aggregation::Last)
            .with_channel("pager"),
        )
        .unwrap();
    gauge.set(f64::INFINITY);
    assert!(alerts.evaluate().is_empty());
    assert!(pager.notifications().is_empty());
}

/// `Percentile::new(-0.0)` is accepted (−0 is within 0..=100) and must print as `p0`, with a
/// Prometheus quantile of `0`, not `p-0` and `-0`.
#[test]
fn negative_zero_percentile_prints_as_zero() {
    let p = Percentile::new(-0.0).expect("in range");
    assert_eq!(p.to_string(), "p0");
    assert_eq!(p.quantile().to_string(), "0");
    assert_eq!(p, Percentile::new(0.0).expect("in range"));
}

/// A chunk function that panics: the panic reaches the caller with its own message (a worker
/// thread's death used to surface as the generic "a scoped thread panicked", which is all the
/// job pool could then report), and the chunks finished before it stay memoized, so a re-run
/// computes only what is missing.
#[test]
fn a_panicking_chunk_function_keeps_the_other_chunks_memoized() {
    let cache = cache();
    let processor = ChunkedProcessor::builder(cache.clone(), "panicky/1")
        .plan(ChunkPlan::with_chunk_bytes(4).expect("valid"))
        .concurrency(ConcurrencyLimit::new(2).expect("valid"))
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .build()
        .expect("valid");
    let input = b"aaaabbbbccccdddd";
    let calls = AtomicUsize::new(0);
    let panicking = |chunk: &AudioChunk| -> Result<ChunkResult, String> {
        calls.fetch_add(1, Ordering::SeqCst);
        if &chunk.data()[..] == b"bbbb" {
            panic!("engine bug");
        }
        Ok(ChunkResult::from_text(String::from_utf8_lossy(
            chunk.data(),
        )))
    };
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process_reader(Cursor::new(&input[..]), &panicking, RunOptions::new())
    }));
    let payload = run.expect_err("the panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"engine bug"));
    let computed = AtomicUsize::new(0);
    let fine = |chunk: &AudioChunk| -> Result<ChunkResult, String> {
        computed.fetch_add(1, Ordering::SeqCst);
        Ok(ChunkResult::from_text(String::from_utf8_lossy(
            chunk.data(),
        )))
    };
    let out = processor
        .process_reader(Cursor::new(&input[..]), &fine, RunOptions::new())
        .expect("runs");
    assert_eq!(out.result.text, "aaaa bbbb cccc dddd");
    // Everything the first run finished came from the cache.
    let first_done = calls.load(Ordering::SeqCst) - 1;
    assert_eq!(computed.load(Ordering::SeqCst), 4 - first_done);
}

/// An engine that always fails.
struct Broken;

impl Transcriber for Broken {
    fn identity(&self) -> &str {
        "broken/1"
    }

    fn transcribe(&self, _: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        Err(TranscribeError::Io(std::io::Error::other("engine down")))
    }
}

/// The builder documents its alert rules as "evaluated after every file" (and the issue has
/// the pipeline end with "metrics recorded and alert rules evaluated"), but nothing was
/// evaluated until the host called `evaluate_alerts`; and a failed file published nothing, so
/// a rule on failed jobs could not see it.
#[test]
fn alert_rules_are_evaluated_after_every_file_served_or_failed() {
    let (_dir, audio) = temp_file("a.raw", b"audio");
    let pager = MemoryNotifier::new();
    let rule = |name: &str, metric: &str, label: (&str, &str)| {
        AlertRule::new(
            name,
            metric,
            Threshold::greater_than(0.0).expect("finite"),
            Severity::Warning,
            Duration::from_secs(60),
        )
        .with_aggregation(Aggregation::Last)
        .with_label(label.0, label.1)
        .with_channel("pager")
    };
    let build = |engine: Arc<dyn Transcriber>| {
        Pipeline::builder(cache(), engine)
            .retry(RetryConfig::fixed(0, Duration::ZERO))
            .alert_rule(rule(
                "computed",
                "memocache_transcriptions_total",
                ("source", "computed"),
            ))
            .alert_rule(rule(
                "failed",
                "memocache_jobs_finished_total",
                ("status", "failed"),
            ))
            .notifier("pager", Arc::new(pager.clone()))
            .build()
            .expect("starts")
    };

    let working = build(Named::new("e/1"));
    working.transcribe(&audio, "en").expect("transcribed");
    let fired: Vec<String> = pager.take().into_iter().map(|n| n.rule_name).collect();
    assert_eq!(fired, ["computed"]);

    let broken = build(Arc::new(Broken));
    assert!(broken.transcribe(&audio, "en").is_err());
    let fired: Vec<String> = pager.take().into_iter().map(|n| n.rule_name).collect();
    assert_eq!(fired, ["failed"]);
}
