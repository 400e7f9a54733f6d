//! A second review of chunked processing and the pipeline (issues #6 and #8): the engine
//! command's edge cases, retries on a manual clock, progress with retries and memo hits, the
//! concurrency limit under load, cancellation with chunks in flight, and the metrics after
//! failures. Each test pins a behaviour the other suites did not reach.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memocache::chunk::{
    AudioChunk, CancelToken, ChunkPlan, ChunkResult, ChunkedProcessor, ProcessError, Progress,
    RunOptions, split,
};
use memocache::pipeline::{CommandTranscriber, Pipeline, TranscribeError, Transcriber};
use memocache::{Cache, ConcurrencyLimit, ManualClock, RetryConfig, Timestamp};
use parking_lot::Mutex;

fn cache() -> Cache {
    Cache::builder().max_bytes(64 << 20).build().expect("valid")
}

/// The one chunk of `bytes` (a byte range: shorter than a chunk).
fn one_chunk(bytes: &[u8]) -> AudioChunk {
    let plan = ChunkPlan::with_chunk_bytes(1 << 20).expect("valid size");
    split(bytes, &plan, None)
        .expect("splits")
        .next()
        .expect("one chunk")
        .expect("reads")
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("lists").count()
}

/// A mono 16-bit WAV of `samples` at 1 kHz.
fn wav(samples: usize) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 1000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).expect("valid spec");
    for i in 0..samples {
        // Never periodic within a chunk, so no two chunks are alike.
        writer
            .write_sample((i as i16).wrapping_mul(7919))
            .expect("writes");
    }
    writer.finalize().expect("finalizes");
    out.into_inner()
}

/// Bug: `{chunk}` inside a command substitution in double quotes (`"$(realpath {chunk})"`)
/// became a bare `$1` there, since the placeholder was taken to stand in the double quotes.
/// A command substitution starts a new quoting context, so the path was split into words
/// and globbed inside it: in a directory named `a  b*` the engine was handed `.../a b*/...`
/// (or the pieces) and found no such file. The same for backquotes.
#[cfg(unix)]
#[test]
fn the_chunk_path_is_one_word_inside_a_command_substitution() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two spaces and a glob (word splitting and pathname expansion would change them), and
    // a `$` and a backquote (which must not be expanded again).
    let odd = dir.path().join("a  b* $HOME `x`");
    std::fs::create_dir(&odd).expect("creates");
    let chunk = one_chunk(&[5u8; 123]);
    for template in [
        "wc -c < \"$(printf %s {chunk})\"",
        "wc -c < \"$(printf %s \"$(printf %s {chunk})\")\"",
        "wc -c < \"`printf %s {chunk}`\"",
        "x=$(printf %s {chunk}); wc -c < \"$x\"",
        "(wc -c < {chunk})",
        "wc -c < \"$( (printf %s {chunk}) )\"",
    ] {
        let engine = CommandTranscriber::new(template)
            .expect("has {chunk}")
            .chunk_dir(&odd);
        let text = engine.transcribe(&chunk).map(|r| r.text);
        assert_eq!(text.as_deref().ok(), Some("123"), "{template}: {text:?}");
    }
    assert_eq!(entries(&odd), 0, "every chunk file was removed");
}

/// Not a defect, pinned: the engine's stdout and stderr are read together, so an engine that
/// writes far more than a pipe holds (64 KiB) to stderr before its text does not deadlock;
/// when it fails, the message quotes the last line of its stderr.
#[cfg(unix)]
#[test]
fn an_engine_that_floods_stderr_does_not_block() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chunk = one_chunk(b"audio");
    let flood = "head -c 2000000 /dev/zero | tr '\\0' 'e' >&2; echo >&2; echo last words >&2";
    let engine = CommandTranscriber::new(format!("{flood}; echo hello; cat {{chunk}} >/dev/null"))
        .expect("has {chunk}")
        .chunk_dir(dir.path());
    let started = Instant::now();
    assert_eq!(engine.transcribe(&chunk).expect("runs").text, "hello");
    let failing = CommandTranscriber::new(format!("{flood}; echo some text; exit 3 # {{chunk}}"))
        .expect("has {chunk}")
        .chunk_dir(dir.path());
    let err = failing.transcribe(&chunk).expect_err("exits 3");
    assert!(started.elapsed() < Duration::from_secs(60));
    match &err {
        TranscribeError::EngineFailed { status, stderr, .. } => {
            assert!(status.contains('3'), "{status}");
            assert_eq!(stderr, "last words");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(entries(dir.path()), 0);
}

/// Not a defect, pinned: an engine killed by a signal fails with the signal in the message
/// (its partial stdout is not taken for a transcript); one that prints nothing is refused as
/// no text (session 24: it was an empty text, cached for good), and gives an empty text with
/// no segments only where empty text is allowed; output that is not UTF-8 is refused; the
/// chunk file is removed in every case.
#[cfg(unix)]
#[test]
fn signals_silence_and_binary_output_from_the_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chunk = one_chunk(b"audio");
    let engine = |template: &str| {
        CommandTranscriber::new(template)
            .expect("has {chunk}")
            .chunk_dir(dir.path())
    };
    let run = |template: &str| engine(template).transcribe(&chunk);
    let err = run("echo partial; kill -9 $$ # {chunk}").expect_err("killed");
    assert!(
        matches!(&err, TranscribeError::EngineFailed { status, .. } if status.contains("signal")),
        "{err:?}"
    );
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    let err = run("cat {chunk} >/dev/null").expect_err("no text");
    assert!(matches!(err, TranscribeError::NoText { .. }), "{err:?}");
    let silent = engine("cat {chunk} >/dev/null")
        .allow_empty(true)
        .transcribe(&chunk)
        .expect("exits 0");
    assert_eq!(silent, ChunkResult::default());
    let err = run("printf 'caf\\351' # {chunk}").expect_err("Latin-1");
    assert!(matches!(err, TranscribeError::NotText { .. }), "{err:?}");
    assert_eq!(entries(dir.path()), 0);
}

/// Retries wait what the policy says on the cache's clock, never less: with a manual clock
/// that a helper thread moves one second at a time, the attempts of a chunk that fails three
/// times are at least 10 s, 20 s and 40 s apart (exponential from 10 s), and the run ends
/// without the hour of real time a default clock would take.
#[test]
fn retry_waits_follow_the_policy_on_a_manual_clock() {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .expect("valid");
    let p = ChunkedProcessor::builder(cache.clone(), "flaky/1")
        .plan(ChunkPlan::with_chunk_bytes(64).expect("valid"))
        .concurrency(ConcurrencyLimit::new(2).expect("valid"))
        .retry(RetryConfig::exponential(3, Duration::from_secs(10)).expect("valid"))
        .build()
        .expect("valid");
    let attempts = Mutex::new(Vec::<Timestamp>::new());
    let f = |chunk: &AudioChunk| {
        if chunk.index() != 1 {
            return Ok(ChunkResult::from_text(format!("c{}", chunk.index())));
        }
        let mut attempts = attempts.lock();
        attempts.push(cache.clock().now());
        if attempts.len() <= 3 {
            Err(format!("attempt {} failed", attempts.len()))
        } else {
            Ok(ChunkResult::from_text("c1"))
        }
    };
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                clock.advance(Duration::from_secs(1));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let data: Vec<u8> = (0..200u8).collect();
        let out = p.process_reader(Cursor::new(data), &f, RunOptions::new());
        done.store(true, Ordering::SeqCst);
        out
    })
    .expect("succeeds on the fourth attempt");
    assert_eq!((out.retries, out.chunks[1].attempts), (3, 4));
    assert_eq!(out.result.text, "c0 c1 c2 c3");
    let attempts = attempts.into_inner();
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .collect();
    for (gap, least) in gaps.iter().zip([10, 20, 40]) {
        assert!(*gap >= Duration::from_secs(least), "{gaps:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Progress with everything at once — WAV chunks with overlap, a memo hit for all but one
/// chunk, and a retried chunk: one report at the start and one per chunk (a retried chunk
/// counts once), chunk and byte counts that only grow, every input byte counted once
/// (overlap included once), and a last report of exactly 1.0.
#[test]
fn progress_counts_retried_and_cached_chunks_once_and_ends_at_one() {
    let cache = cache();
    let p = ChunkedProcessor::builder(cache, "progress/1")
        .plan(
            ChunkPlan::with_chunk_bytes(244)
                .expect("valid")
                .overlap(Duration::from_millis(20)),
        )
        .concurrency(ConcurrencyLimit::new(3).expect("valid"))
        .retry(RetryConfig::fixed(2, Duration::ZERO))
        .build()
        .expect("valid");
    let first = wav(1000);
    let f = |chunk: &AudioChunk| {
        Ok::<_, String>(ChunkResult::from_text(chunk.data().len().to_string()))
    };
    let warm = p
        .process_reader(Cursor::new(&first), &f, RunOptions::new())
        .expect("runs");
    let total = warm.chunks.len();
    // One sample changed in the middle of chunk 5 (80 ms stride: samples 400..480 are its
    // own, away from the overlaps).
    let mut edited = first.clone();
    edited[44 + 2 * 440] ^= 0x55;
    let failed_once = AtomicBool::new(false);
    let flaky = |chunk: &AudioChunk| {
        if !failed_once.swap(true, Ordering::SeqCst) {
            return Err("first call fails".to_owned());
        }
        f(chunk)
    };
    let reports = Mutex::new(Vec::<Progress>::new());
    let options = RunOptions::new().on_progress(|r: &Progress| reports.lock().push(*r));
    let out = p
        .process_reader(Cursor::new(&edited), &flaky, options)
        .expect("runs");
    assert_eq!((out.computed, out.cached, out.retries), (1, total - 1, 1));
    let reports = reports.into_inner();
    assert_eq!(reports.len(), total + 1);
    for (k, pair) in reports.windows(2).enumerate() {
        assert_eq!(pair[1].chunks_done, k + 1);
        assert!(pair[1].bytes_done > pair[0].bytes_done, "{pair:?}");
        assert!(pair[1].elapsed >= pair[0].elapsed, "{pair:?}");
        assert!(pair[1].fraction() >= pair[0].fraction(), "{pair:?}");
    }
    let last = reports.last().expect("reports");
    assert_eq!(last.fraction(), 1.0);
    assert_eq!((last.chunks_done, last.chunks_cached), (total, total - 1));
    assert_eq!(last.bytes_done, last.bytes_total);
    assert_eq!(last.bytes_total, 2000);
}

/// The concurrency limit holds under load, with retries and memo hits in the mix: never more
/// chunk-function calls at once than the limit, and the limit is reached.
#[test]
fn the_concurrency_limit_holds_with_retries_and_memo_hits() {
    let cache = cache();
    let p = ChunkedProcessor::builder(cache, "bounded/1")
        .plan(ChunkPlan::with_chunk_bytes(64).expect("valid"))
        .concurrency(ConcurrencyLimit::new(3).expect("valid"))
        .retry(RetryConfig::fixed(2, Duration::from_millis(1)))
        .build()
        .expect("valid");
    let data: Vec<u8> = (0..64 * 30).map(|i| (i / 64 * 7 + i % 64) as u8).collect();
    let in_flight = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let failed = Mutex::new(std::collections::HashSet::new());
    let f = |chunk: &AudioChunk| {
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        // Until the limit has been reached once, a call waits (a few seconds at most) for the
        // others, so that reaching it does not depend on how the threads are scheduled.
        let deadline = Instant::now() + Duration::from_secs(5);
        while peak.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(2));
        // The first call for every third chunk fails.
        let first = failed.lock().insert(chunk.index());
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if first && chunk.index().is_multiple_of(3) {
            return Err("transient".to_owned());
        }
        Ok(ChunkResult::from_text(chunk.index().to_string()))
    };
    // Half the chunks memoized first.
    p.process_reader(Cursor::new(&data[..64 * 15]), &f, RunOptions::new())
        .expect("runs");
    let out = p
        .process_reader(Cursor::new(&data), &f, RunOptions::new())
        .expect("runs");
    assert_eq!((out.cached, out.computed), (15, 15));
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

/// An engine that holds every call until released, to cancel a run with chunks in flight.
struct Gated {
    started: AtomicUsize,
    open: Mutex<bool>,
    opened: parking_lot::Condvar,
}

/// Cancelling a run with chunks in flight: the run returns `Cancelled` once they return, the
/// in-flight chunks' results are stored (the next run computes only the rest), and no chunk
/// file of the command engine is left behind.
#[cfg(unix)]
#[test]
fn a_cancelled_run_keeps_its_in_flight_chunks_and_leaves_no_chunk_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = CommandTranscriber::new("wc -c < {chunk}")
        .expect("has {chunk}")
        .chunk_dir(dir.path());
    let p = ChunkedProcessor::builder(cache(), engine.identity())
        .plan(ChunkPlan::with_chunk_bytes(100).expect("valid"))
        .concurrency(ConcurrencyLimit::new(2).expect("valid"))
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .build()
        .expect("valid");
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 / 7) as u8).collect();
    let gate = Gated {
        started: AtomicUsize::new(0),
        open: Mutex::new(false),
        opened: parking_lot::Condvar::new(),
    };
    let token = CancelToken::new();
    let f = |chunk: &AudioChunk| {
        gate.started.fetch_add(1, Ordering::SeqCst);
        let mut open = gate.open.lock();
        while !*open {
            gate.opened.wait(&mut open);
        }
        drop(open);
        engine.transcribe(chunk)
    };
    let err = std::thread::scope(|s| {
        let run = s.spawn(|| {
            p.process_reader(
                Cursor::new(&data),
                &f,
                RunOptions::new().cancel_token(token.clone()),
            )
        });
        // A deadlock guard, not a timing claim.
        let deadline = Instant::now() + Duration::from_secs(60);
        while gate.started.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        token.cancel();
        *gate.open.lock() = true;
        gate.opened.notify_all();
        run.join().expect("no panic").expect_err("cancelled")
    });
    assert!(
        matches!(
            err,
            ProcessError::Cancelled {
                completed: 2,
                total: 10
            }
        ),
        "{err:?}"
    );
    assert_eq!(entries(dir.path()), 0);
    let out = p
        .process_reader(Cursor::new(&data), &f, RunOptions::new())
        .expect("runs");
    assert_eq!((out.cached, out.computed), (2, 8));
    assert_eq!(out.result.text, ["100"; 10].join(" "));
    assert_eq!(entries(dir.path()), 0);
}

/// An engine that fails on chunks whose first byte is 0.
struct FailsOnZero;

impl Transcriber for FailsOnZero {
    fn identity(&self) -> &str {
        "fails-on-zero/1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        if chunk.data().first() == Some(&0) {
            return Err(TranscribeError::Engine("refused".into()));
        }
        Ok(ChunkResult::from_text(format!("{}", chunk.data().len())))
    }
}

/// The metrics after a mix of outcomes add up with what happened: one file computed, served
/// again from the cache, one that fails (twice). The pipeline counts one of each served, the
/// latency summary two files, the queue two completed and two failed jobs and no retries
/// (jobs have none: chunks are retried in the processor); the failed file stores nothing.
#[test]
fn metrics_after_failures_add_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (good, bad) = (dir.path().join("good.raw"), dir.path().join("bad.raw"));
    std::fs::write(&good, [1u8; 2500]).expect("writes");
    std::fs::write(&bad, [0u8; 2500]).expect("writes");
    let pipeline = Pipeline::builder(cache(), Arc::new(FailsOnZero))
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid"))
        .retry(RetryConfig::fixed(1, Duration::ZERO))
        .build()
        .expect("starts");
    assert!(
        !pipeline
            .transcribe(&good, "en")
            .expect("computed")
            .from_cache
    );
    assert!(pipeline.transcribe(&good, "en").expect("cached").from_cache);
    for _ in 0..2 {
        let err = pipeline.transcribe(&bad, "en").expect_err("fails");
        // Every chunk of the file fails and they run concurrently, so any of them may be the
        // one reported.
        assert!(
            (0..3).any(|i| err
                .to_string()
                .contains(&format!("chunk {i} failed after 2 attempt(s)"))),
            "{err}"
        );
    }
    let stats = pipeline.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    let text = pipeline.registry().render_prometheus();
    for line in [
        "memocache_transcriptions_total{source=\"cache\"} 1\n",
        "memocache_transcriptions_total{source=\"computed\"} 1\n",
        "memocache_transcription_duration_seconds_count 2\n",
        "memocache_jobs_submitted_total 3\n",
        "memocache_jobs_finished_total{status=\"completed\"} 1\n",
        "memocache_jobs_finished_total{status=\"failed\"} 2\n",
        "memocache_job_retries_total 0\n",
        "memocache_job_dead_letters_total 2\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

/// Bug: a panic in the chunk function is resumed on the caller's thread "before any error: a
/// bug in the caller's code must not hide behind it" — but only if it came first. A worker
/// that panicked after another chunk had failed found the failure slot taken and dropped the
/// payload, so the caller got the other chunk's ordinary error and never saw the panic. A
/// panic now takes the slot from an error.
#[test]
fn a_panic_after_another_chunks_failure_still_reaches_the_caller() {
    let p = ChunkedProcessor::builder(cache(), "panics-late/1")
        .plan(ChunkPlan::with_chunk_bytes(64).expect("valid"))
        .concurrency(ConcurrencyLimit::new(2).expect("valid"))
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .build()
        .expect("valid");
    let data: Vec<u8> = (0..128u8).collect();
    let (failing_tx, failing_rx) = std::sync::mpsc::channel::<()>();
    let failing_tx = Mutex::new(failing_tx);
    let failing_rx = Mutex::new(failing_rx);
    // Both chunks start before either ends.
    let both_started = std::sync::Barrier::new(2);
    let f = |chunk: &AudioChunk| {
        both_started.wait();
        if chunk.index() == 0 {
            let _ = failing_tx.lock().send(());
            return Err("an ordinary error".to_owned());
        }
        // Chunk 1 panics once chunk 0's error has had time to be recorded.
        let _ = failing_rx.lock().recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
        panic!("a bug in the chunk function");
    };
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.process_reader(Cursor::new(&data), &f, RunOptions::new())
    }));
    let payload = match caught {
        Err(payload) => payload,
        Ok(out) => panic!(
            "the panic was swallowed; the run returned {:?}",
            out.map(|o| o.result)
        ),
    };
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"a bug in the chunk function")
    );
}

/// Bug (session 25): a run that allowed empty text cached a silent chunk's empty text, and a
/// pipeline over the same cache that did not allow it was served that text, in the file's
/// transcript and in its chunk, without a word: the very thing `NoText` was added to stop.
/// Without `allow_empty`, a cached chunk with no text is asked of the engine again (the
/// others come from the cache), and a file transcript holding such a chunk is not served;
/// an engine fixed since replaces the empty text, which any run is then served.
#[cfg(unix)]
#[test]
fn empty_text_a_permissive_run_cached_is_not_served_to_a_strict_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = dir.path().join("talk.raw");
    let mut bytes = Vec::new();
    for byte in [b'A', b'B', b'C'] {
        bytes.extend(std::iter::repeat_n(byte, 4096));
    }
    std::fs::write(&audio, bytes).expect("writable");
    let (calls, fixed) = (dir.path().join("calls"), dir.path().join("fixed"));
    // Prints nothing for the B chunk until `fixed` exists; the same command line either
    // way, so every run shares the chunk keys.
    let template = format!(
        "c=$(head -c1 {{chunk}}); echo $c >> '{calls}'; \
         if [ $c = B ] && [ ! -e '{fixed}' ]; then exit 0; fi; echo text-$c",
        calls = calls.display(),
        fixed = fixed.display(),
    );
    let asked = || std::fs::read_to_string(&calls).unwrap_or_default();
    let cache = cache();
    let pipeline = |allow: bool| {
        let engine = CommandTranscriber::new(template.clone())
            .expect("has {chunk}")
            .chunk_dir(dir.path())
            .allow_empty(allow);
        Pipeline::builder(cache.clone(), Arc::new(engine))
            .plan(ChunkPlan::with_chunk_bytes(4096).expect("valid"))
            .retry(RetryConfig::exponential(0, Duration::from_millis(1)).expect("valid"))
            .build()
            .expect("starts")
    };

    let permissive = pipeline(true);
    let first = permissive
        .transcribe(&audio, "en")
        .expect("silence allowed");
    assert_eq!(first.transcript.text, "text-A text-C");
    assert_eq!(asked().lines().count(), 3);
    assert!(
        permissive
            .transcribe(&audio, "en")
            .expect("cached")
            .from_cache
    );
    drop(permissive);

    let strict = pipeline(false);
    let err = strict
        .transcribe(&audio, "en")
        .expect_err("no text for chunk 1");
    assert!(err.to_string().contains("chunk 1"), "{err}");
    assert!(err.to_string().contains("wrote no text"), "{err}");
    // The first run's three calls, in whatever order its workers made them, then B alone.
    let log = asked();
    let (first_run, later) = log.split_at(6);
    let mut first_run: Vec<&str> = first_run.lines().collect();
    first_run.sort_unstable();
    assert_eq!(first_run, ["A", "B", "C"]);
    assert_eq!(later, "B\n", "only the silent chunk is asked again");

    std::fs::write(&fixed, b"").expect("writable");
    let fixed_run = strict
        .transcribe(&audio, "en")
        .expect("the engine has text now");
    assert_eq!(fixed_run.transcript.text, "text-A text-B text-C");
    assert_eq!(fixed_run.transcript.chunks_computed, 1);
    drop(strict);
    let permissive = pipeline(true);
    let again = permissive.transcribe(&audio, "en").expect("cached");
    assert!(again.from_cache);
    assert_eq!(again.transcript.text, "text-A text-B text-C");
    assert_eq!(asked().lines().count(), 5);
}

/// The processor's own whole-file memo follows the same rule: with
/// `RunOptions::refuse_empty_text`, neither a cached chunk result with no text nor a
/// whole-file record holding one is served.
#[test]
fn a_run_refusing_empty_text_is_served_none_from_the_cache() {
    let cache = cache();
    let p = ChunkedProcessor::builder(cache, "e/1")
        .plan(ChunkPlan::with_chunk_bytes(4).expect("valid"))
        .build()
        .expect("valid");
    let input = b"aaaabbbbcccc";
    let silent_b = |chunk: &AudioChunk| -> Result<ChunkResult, String> {
        let text = match chunk.data()[0] {
            b'b' => String::new(),
            c => format!("text-{}", c as char),
        };
        Ok(ChunkResult::from_text(text))
    };
    let first = p
        .process_reader(Cursor::new(&input[..]), &silent_b, RunOptions::new())
        .expect("runs");
    assert_eq!(first.result.text, "text-a text-c");
    let hit = p
        .process_reader(Cursor::new(&input[..]), &silent_b, RunOptions::new())
        .expect("runs");
    assert!(hit.whole_file_hit);
    let asked = AtomicUsize::new(0);
    let with_text = |chunk: &AudioChunk| -> Result<ChunkResult, String> {
        asked.fetch_add(1, Ordering::Relaxed);
        Ok(ChunkResult::from_text(format!(
            "text-{}",
            chunk.data()[0] as char
        )))
    };
    let strict = p
        .process_reader(
            Cursor::new(&input[..]),
            &with_text,
            RunOptions::new().refuse_empty_text(),
        )
        .expect("runs");
    assert!(!strict.whole_file_hit);
    assert_eq!(strict.result.text, "text-a text-b text-c");
    assert_eq!((strict.computed, strict.cached), (1, 2));
    assert_eq!(asked.load(Ordering::Relaxed), 1);
}
