//! The memoized transcription pipeline, end to end in the library.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};
use std::time::Duration;

use memocache::chunk::{AudioChunk, ChunkKind, ChunkPlan, ChunkResult, Progress, Timing, split};
use memocache::metrics::AlertTransition::{Firing, Resolved};
use memocache::metrics::{AlertTransition, Notification, Notifier, NotifyError};
use memocache::pipeline::{
    CommandTranscriber, FileProgress, Pipeline, PipelineBuilder, PipelineError, StandInTranscriber,
    TranscribeError, Transcriber, Transcript, TranscriptOutcome,
};
use memocache::{Cache, ConcurrencyLimit, RetryConfig};

mod noise_support;
use noise_support::noise;

mod pipeline_support;
use pipeline_support::{cache, temp_file, write};

mod log_support;
use log_support::EventSink;

#[cfg(target_os = "linux")]
mod spawn_support;

/// Counts calls; fails on chunks whose first data byte is `fail_on`.
struct Counting {
    calls: AtomicUsize,
    fail_on: Option<u8>,
}

impl Transcriber for Counting {
    fn identity(&self) -> &str {
        "counting/v1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .fail_on
            .is_some_and(|b| chunk.data().first() == Some(&b))
        {
            return Err(TranscribeError::Io(std::io::Error::other("engine crashed")));
        }
        // Results may depend only on the chunk's bytes: identical chunks share one entry.
        Ok(ChunkResult::from_text(format!("len{}", chunk.data().len())))
    }
}

fn counting(fail_on: Option<u8>) -> Arc<Counting> {
    Arc::new(Counting {
        calls: AtomicUsize::new(0),
        fail_on,
    })
}

fn pipeline(cache: Cache, engine: Arc<dyn Transcriber>) -> Pipeline {
    Pipeline::builder(cache, engine)
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .workers(ConcurrencyLimit::new(2).expect("valid"))
        .retry(RetryConfig::fixed(1, std::time::Duration::from_millis(1)))
        .build()
        .expect("starts")
}

/// The results of `f` run on `n` threads at once; a panic on any fails the test.
fn on_threads<T: Send>(n: usize, f: impl Fn() -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(&f)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic reaches the caller"))
            .collect()
    })
}

#[test]
fn second_request_is_served_from_the_cache_without_the_engine() {
    let (_dir, file) = temp_file("a.bin", &[7u8; 4500]);
    let engine = counting(None);
    let p = pipeline(cache(), engine.clone());
    let first = p.transcribe(&file, "en").expect("transcribed");
    assert!(!first.from_cache);
    assert_eq!(first.transcript.chunks, 5);
    assert_eq!(
        first.transcript.text,
        "len1000 len1000 len1000 len1000 len500"
    );
    // Identical chunk bytes share one cache entry: two distinct chunks, two engine calls
    // (a third at most, if two workers raced on the same chunk).
    let calls = engine.calls.load(Ordering::SeqCst);
    assert!((2..=5).contains(&calls), "{calls} engine calls");
    let second = p.transcribe(&file, "en").expect("transcribed");
    assert!(second.from_cache);
    assert_eq!(second.transcript, first.transcript);
    assert_eq!(
        engine.calls.load(Ordering::SeqCst),
        calls,
        "the engine ran again"
    );
    // Another language is another transcript.
    assert!(!p.transcribe(&file, "fr").expect("transcribed").from_cache);
    let stats = p.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
}

#[test]
fn concurrent_requests_for_one_file_coalesce_into_one_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("b.bin");
    let bytes: Vec<u8> = (0..8000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&file, &bytes);
    let engine = counting(None);
    let p = pipeline(cache(), engine.clone());
    let texts = on_threads(4, || {
        p.transcribe(&file, "en")
            .expect("transcribed")
            .transcript
            .text
    });
    assert!(texts.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        engine.calls.load(Ordering::SeqCst),
        8,
        "each chunk transcribed once"
    );
}

/// Names each chunk by its first byte.
struct FirstByte;

impl Transcriber for FirstByte {
    fn identity(&self) -> &str {
        "first-byte/v1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        let first = chunk.data().first().copied().unwrap_or_default();
        Ok(ChunkResult::from_text(format!("b{first}")))
    }
}

/// Bug: the transcript key is the hash the pipeline takes when the request arrives, but the
/// job reads the file again, later — after any queueing. A file rewritten in between had the
/// transcript of its new bytes stored under the key of its old ones, and a later request for
/// the old bytes was served that wrong transcript from the cache. A file that changed while it
/// was being transcribed now fails, storing nothing under the stale key.
#[test]
fn a_file_rewritten_during_its_transcription_stores_no_transcript_under_its_old_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("edited.bin");
    let original = vec![1u8; 3000];
    write(&file, &original);
    let edited = std::sync::atomic::AtomicBool::new(false);
    let target = file.clone();
    let p = Pipeline::builder(cache(), Arc::new(FirstByte))
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        // The first report comes after the job opened the file, before it reads the chunks.
        .on_progress(move |_| {
            if !edited.swap(true, Ordering::SeqCst) {
                write(&target, &[2u8; 4000]);
            }
        })
        .build()
        .expect("starts");
    let error = p.transcribe(&file, "en").expect_err("the file changed");
    let message = error.to_string();
    assert!(
        matches!(error, PipelineError::Failed { .. }) && message.contains("changed"),
        "{message}"
    );
    // The original bytes again: their transcript, not the edited file's.
    write(&file, &original);
    let outcome = p.transcribe(&file, "en").expect("transcribed");
    assert!(!outcome.from_cache);
    assert_eq!(outcome.transcript.text, "b1 b1 b1");
}

#[test]
fn failures_name_the_file_and_the_chunk_and_nothing_is_cached_wrongly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("c.bin");
    let mut bytes = vec![1u8; 3000];
    bytes[2000] = 9; // the first byte of chunk 2
    write(&file, &bytes);
    let p = pipeline(cache(), counting(Some(9)));
    let error = p.transcribe(&file, "en").expect_err("chunk 2 fails");
    let message = error.to_string();
    assert!(matches!(error, PipelineError::Failed { .. }), "{message}");
    assert!(
        message.contains("c.bin") && message.contains("chunk 2"),
        "{message}"
    );

    let missing = p
        .transcribe(dir.path().join("nope.wav"), "en")
        .expect_err("no file");
    assert!(matches!(missing, PipelineError::Read { .. }), "{missing}");
    let bad_language = p.transcribe(&file, "e n").expect_err("bad language");
    assert!(
        matches!(bad_language, PipelineError::Key(_)),
        "{bad_language}"
    );
}

/// An in-process engine's own error type, as a user's engine would have one.
#[derive(Debug)]
struct ModelNotLoaded;

impl std::fmt::Display for ModelNotLoaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("model not loaded")
    }
}

impl std::error::Error for ModelNotLoaded {}

/// An engine run in process, failing with its own error.
struct InProcess;

impl Transcriber for InProcess {
    fn identity(&self) -> &str {
        "in-process/v1"
    }

    fn transcribe(&self, _: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        Err(TranscribeError::Engine(Box::new(ModelNotLoaded)))
    }
}

/// Review: an in-process engine had no variant for its own error and had to pass it off as
/// I/O ("running the engine failed: ..."). `Engine` says the engine failed, shows its error
/// and keeps it as the source, down to its type.
#[test]
fn an_in_process_engine_reports_its_own_error_as_an_engine_failure() {
    let error = TranscribeError::Engine(Box::new(ModelNotLoaded));
    assert_eq!(error.to_string(), "the engine failed: model not loaded");
    let source = std::error::Error::source(&error).expect("the engine's error is the source");
    assert!(
        source.downcast_ref::<ModelNotLoaded>().is_some(),
        "{source:?}"
    );

    let (_dir, file) = temp_file("e.bin", b"some audio bytes");
    let error = pipeline(cache(), Arc::new(InProcess))
        .transcribe(&file, "en")
        .expect_err("the engine fails");
    let message = error.to_string();
    assert!(
        message.contains("the engine failed: model not loaded")
            && !message.contains("running the engine"),
        "{message}"
    );
}

#[test]
fn the_stand_in_is_deterministic_and_says_what_it_is() {
    let (_dir, file) = temp_file("d.bin", b"some audio bytes");
    let a = pipeline(cache(), Arc::new(StandInTranscriber::new(3)));
    let b = pipeline(cache(), Arc::new(StandInTranscriber::new(3)));
    let ta = a.transcribe(&file, "en").expect("ok").transcript.text;
    let tb = b.transcribe(&file, "en").expect("ok").transcript.text;
    assert_eq!(ta, tb);
    assert!(ta.starts_with("[stand-in]"), "{ta}");
}

/// `CommandTranscriber::chunk_dir`: the engine gets its chunk file in the directory given,
/// and the file is gone once the engine ran; without it, the file is in the system's
/// temporary directory.
/// The one chunk of the bytes "a byte range", as the command engines are given it.
fn a_byte_range_chunk() -> AudioChunk {
    let plan = ChunkPlan::with_chunk_bytes(1000).expect("valid size");
    split(&b"a byte range"[..], &plan, None)
        .expect("splits")
        .next()
        .expect("one chunk")
        .expect("reads")
}

#[test]
fn the_command_engine_writes_chunk_files_where_it_is_told() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chunk = a_byte_range_chunk();
    let path_given = |engine: CommandTranscriber| {
        std::path::PathBuf::from(engine.transcribe(&chunk).expect("runs").text)
    };

    let engine = CommandTranscriber::new("echo {chunk}").expect("has {chunk}");
    let path = path_given(engine.clone().chunk_dir(dir.path()));
    assert_eq!(path.parent(), Some(dir.path()), "{path:?}");
    assert!(!path.exists(), "removed after the run: {path:?}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("lists").count(), 0);

    let path = path_given(engine);
    assert_eq!(
        path.parent(),
        Some(std::env::temp_dir().as_path()),
        "{path:?}"
    );
}

/// The chunk file's path was pasted into the engine command as text in single quotes: a
/// placeholder the user had double-quoted (`"{chunk}"`) gave the engine the path with the
/// quotes in it, and a path that is not UTF-8 (any `TMPDIR`) reached it with U+FFFD in place
/// of its bytes; either way the engine found no such file ("cannot open '/tmp/...'"). Every
/// way of writing the placeholder now gives the engine the path, in a folder whose name has
/// a space, both quotes and a byte that is not UTF-8.
#[cfg(unix)]
#[test]
fn the_command_engine_gets_the_chunk_path_however_the_placeholder_is_quoted() {
    use std::os::unix::ffi::OsStrExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"it's a \"dir\" \xff"));
    std::fs::create_dir(&odd).expect("creates");
    let plan = ChunkPlan::with_chunk_bytes(1000).expect("valid size");
    let chunk = split(&[1u8; 321][..], &plan, None)
        .expect("splits")
        .next()
        .expect("one chunk")
        .expect("reads");
    for template in [
        "wc -c < {chunk}",
        "wc -c < \"{chunk}\"",
        "wc -c < '{chunk}'",
        "cat \"$(echo {chunk})\" | wc -c",
        "sh -c 'wc -c < \"$0\"' {chunk}",
        "echo \"it's \\\"quoted\\\"\" >/dev/null; wc -c < {chunk}",
    ] {
        let engine = CommandTranscriber::new(template)
            .expect("has {chunk}")
            .chunk_dir(&odd);
        let text = engine.transcribe(&chunk).map(|r| r.text);
        assert_eq!(text.as_deref().ok(), Some("321"), "{template}: {text:?}");
    }
}

/// An engine that failed without a word on stderr gave a message ending in a bare `: `
/// ("... exited with exit status: 1: "), which reads as if its cause had been cut off.
#[test]
fn an_engine_that_fails_silently_is_reported_as_such() {
    let chunk = a_byte_range_chunk();
    let silent = CommandTranscriber::new("exit 4; {chunk}").expect("has {chunk}");
    let message = silent.transcribe(&chunk).expect_err("fails").to_string();
    assert!(
        message.ends_with("exited with exit status: 4 and wrote nothing on stderr"),
        "{message}"
    );
    let loud = CommandTranscriber::new("echo no model >&2; exit 4; {chunk}").expect("has it");
    let message = loud.transcribe(&chunk).expect_err("fails").to_string();
    assert!(
        message.ends_with("exited with exit status: 4: no model"),
        "{message}"
    );
}

/// Bug: the command engine's chunk file was always named `*.wav`, also for a byte range of
/// MP3, FLAC, M4A, ... input, so an engine that picks its decoder by extension read it as WAV.
/// A byte-range chunk is now named `*.bin`; a WAV chunk (a complete WAV file) stays `*.wav`.
#[test]
fn the_command_engine_names_a_chunk_file_for_what_it_holds() {
    let engine = CommandTranscriber::new("basename {chunk}").expect("has {chunk}");
    let plan = ChunkPlan::with_chunk_bytes(1000).expect("valid size");
    let named = |input: &[u8]| {
        let chunk = split(input, &plan, None)
            .expect("splits")
            .next()
            .expect("one chunk")
            .expect("reads");
        let name = engine.transcribe(&chunk).expect("runs").text;
        (chunk.info().kind, name)
    };

    let (kind, name) = named(b"ID3\x04\x00 an mp3 file, cut as bytes");
    assert_eq!(kind, ChunkKind::Bytes);
    assert!(
        name.starts_with("memocache-chunk-") && name.ends_with(".bin"),
        "{name}"
    );

    let mut wav = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::new(&mut wav, spec).expect("header");
    for sample in 0..100i16 {
        writer.write_sample(sample).expect("sample");
    }
    writer.finalize().expect("finalized");
    let (kind, name) = named(&wav.into_inner());
    assert_eq!(kind, ChunkKind::Wav);
    assert!(name.ends_with(".wav"), "{name}");
}

/// Builds a pipeline on `registry` with the OS refusing its workers' threads, asserts that
/// the build fails so and leaves the registry's rendering as it was, then builds it again
/// there with threads to be had. Call it only in a child process ([`spawn_support::in_child`]).
#[cfg(target_os = "linux")]
fn fails_to_start_then_starts(registry: &memocache::MetricsRegistry) -> Pipeline {
    let before = registry.render_prometheus();
    let builder = || {
        Pipeline::builder(cache(), Arc::new(StandInTranscriber::new(1)))
            .registry(registry.clone())
            .workers(ConcurrencyLimit::new(ConcurrencyLimit::MAX).expect("valid"))
    };
    let refused = builder();
    let started = spawn_support::with_room_for_threads(0, || refused.build());
    assert!(
        matches!(&started, Err(PipelineError::Start(e)) if e.contains("spawning worker thread")),
        "{started:?}"
    );
    assert_eq!(registry.render_prometheus(), before);
    builder().build().expect("starts on the same registry")
}

/// A registry holding a host's metrics, one of them in a family of the pipeline's, is left as
/// it was when the pipeline fails to start after registering its metrics (its workers
/// cannot start): no family the build created, no series it added to the host's, and the
/// host's in place with their values. The name that used to provoke the failure, the
/// `_count` of the pipeline's duration summary, is refused at the host's call now, before
/// the pipeline registers the summary, so the failure is provoked by the OS refusing the
/// workers' threads.
#[cfg(target_os = "linux")]
#[test]
fn a_pipeline_that_fails_to_start_leaves_a_registry_with_the_hosts_metrics_as_it_was() {
    if !spawn_support::in_child(
        "a_pipeline_that_fails_to_start_leaves_a_registry_with_the_hosts_metrics_as_it_was",
        1,
    ) {
        return;
    }
    let registry = memocache::MetricsRegistry::new();
    let count = "memocache_transcription_duration_seconds_count";
    assert!(
        matches!(
            registry.counter(count, "Taken as a counter.", &[]),
            Err(memocache::MetricError::NameCollision { histogram, .. })
                if histogram == "memocache_transcription_duration_seconds"
        ),
        "{count} taken"
    );
    registry
        .counter("host_uploads_total", "Uploads.", &[])
        .expect("registered")
        .inc();
    let queued = [("status", "queued")];
    let depth = registry
        .gauge("memocache_jobs", "", &queued)
        .expect("registered");
    depth.set(7.0);
    let pipeline = fails_to_start_then_starts(&registry);
    assert_eq!(depth.get(), 7.0);
    let text = pipeline.registry().render_prometheus();
    assert!(text.contains("host_uploads_total 1\n"), "{text}");
    assert!(text.contains(&format!("{count} 0\n")), "{text}");
}

/// A host may declare the crate's families before building a pipeline, as the pipeline
/// registers them: the declaration is taken, the family rendered with the crate's help, its
/// series held to the crate's labels, and the pipeline builds on the registry and publishes
/// into it. Before the fix the build refused the registry with `RegistryInUse`: the
/// declared family, with no series, was taken for another cache's or queue's metrics.
#[test]
fn a_pipeline_builds_on_a_registry_that_declared_its_families_as_it_registers_them() {
    use memocache::{MetricError, MetricType};

    let registry = memocache::MetricsRegistry::new();
    for (name, kind, labels) in [
        ("memocache_cache_hits_total", MetricType::Counter, &[][..]),
        ("memocache_jobs_submitted_total", MetricType::Counter, &[]),
        ("memocache_jobs", MetricType::Gauge, &["status"]),
        (
            "memocache_transcriptions_total",
            MetricType::Counter,
            &["source"],
        ),
    ] {
        registry
            .declare(name, "The host's words.", kind, labels)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let text = registry.render_prometheus();
    assert!(
        text.contains(
            "# HELP memocache_cache_hits_total Cache reads that found a live value.\n\
             # TYPE memocache_cache_hits_total counter\n"
        ),
        "{text}"
    );
    assert!(matches!(
        registry.gauge("memocache_jobs", "", &[("state", "queued")]),
        Err(MetricError::UndeclaredLabel { .. })
    ));
    let p = Pipeline::builder(cache(), counting(None))
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .registry(registry.clone())
        .build()
        .expect("builds on a registry that declared its families");
    let (_dir, file) = temp_file("a.bin", &[1u8; 1500]);
    // Publishes the cache's and the queue's figures once served.
    p.transcribe(&file, "en").expect("transcribed");
    let text = registry.render_prometheus();
    for line in [
        "\nmemocache_cache_hits_total ",
        "memocache_jobs_submitted_total 1\n",
        "memocache_transcriptions_total{source=\"computed\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

/// Every family a pipeline registers is one of the crate's, as `declare` knows them: declared
/// as the pipeline registered it (its type, the label names of its series) it is taken,
/// before a pipeline registers it as after; declared with a label more it is refused, and
/// the error names the family's labels. So no family the crate registers is missing from
/// the table `declare` consults, or registered otherwise than the table says.
#[test]
fn every_family_a_pipeline_registers_is_declared_only_as_the_pipeline_registers_it() {
    use memocache::{MetricError, MetricType};
    use std::collections::{BTreeMap, BTreeSet};

    let p = pipeline(cache(), counting(None));
    let text = p.registry().render_prometheus();
    // name -> (type, label names), from the exposition.
    let mut families: BTreeMap<String, (MetricType, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(typed) = line.strip_prefix("# TYPE ") {
            let (name, kind) = typed.split_once(' ').expect("name and type");
            let kind = match kind {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "summary" => MetricType::Histogram,
                other => panic!("type {other}"),
            };
            families.insert(name.to_owned(), (kind, BTreeSet::new()));
        } else if let Some((name, rest)) = line.split_once('{') {
            let labels = rest.split_once('}').expect("closed").0;
            let names = labels
                .split(',')
                .map(|pair| pair.split_once('=').expect("pair").0);
            let name = name.trim_end_matches("_sum").trim_end_matches("_count");
            let (_, found) = families.get_mut(name).expect("a family's series");
            found.extend(names.filter(|&n| n != "quantile").map(str::to_owned));
        }
    }
    assert_eq!(families.len(), 30, "{families:?}");
    let fresh = memocache::MetricsRegistry::new();
    for (name, (kind, labels)) in &families {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let more: Vec<&str> = labels.iter().copied().chain(["zz_more"]).collect();
        for registry in [p.registry(), &fresh] {
            registry
                .declare(name, "", *kind, &labels)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            match registry.declare(name, "", *kind, &more) {
                Err(MetricError::CrateFamilyConflict {
                    labels: crate_labels,
                    ..
                }) => assert_eq!(crate_labels, labels, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

/// A pipeline whose workers cannot start (the OS refuses their threads) leaves a given
/// registry as it was, so that the host can build it again there once threads are to be had.
/// The pipeline registered its metrics first, then built its queue and started its workers:
/// the failed build kept the metrics, and every later build on that registry failed with
/// `RegistryInUse`.
#[cfg(target_os = "linux")]
#[test]
fn a_pipeline_whose_workers_cannot_start_leaves_the_registry_as_it_was() {
    if !spawn_support::in_child(
        "a_pipeline_whose_workers_cannot_start_leaves_the_registry_as_it_was",
        1,
    ) {
        return;
    }
    let registry = memocache::MetricsRegistry::new();
    let pipeline = fails_to_start_then_starts(&registry);
    assert!(
        pipeline
            .registry()
            .render_prometheus()
            .contains("memocache_cache_hits_total")
    );
}

/// The job payload carried the path as a serde `PathBuf`, which bincode encodes as a string:
/// a file whose name is not UTF-8 (any bytes but `/` and NUL make a Linux file name) failed
/// with "encoding a value failed: OtherString(\"path contains invalid UTF-8 characters\")"
/// before any work.
#[cfg(unix)]
#[test]
fn a_file_whose_name_is_not_utf8_is_transcribed() {
    use std::os::unix::ffi::OsStrExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.bin"));
    write(&file, &[3u8; 2500]);
    let p = pipeline(cache(), counting(None));
    let first = p.transcribe(&file, "en").expect("transcribed");
    assert!(!first.from_cache);
    assert_eq!(first.path, file);
    assert_eq!(first.transcript.text, "len1000 len1000 len500");
    assert!(p.transcribe(&file, "en").expect("transcribed").from_cache);
}

/// Bug: the pipeline reads its input twice (to hash it for the key, then in the job to cut
/// it into chunks), and the library call accepted any path. A FIFO's open waited for a
/// writer; with one, the hashing took its bytes and the job's open then waited for another
/// writer, forever, holding the worker and everything queued behind it. (The `transcribe`
/// command checks its inputs itself; the library did not.) A path that is not a regular
/// file is now refused at once, a link to a FIFO too, and the pipeline goes on serving.
#[cfg(unix)]
#[test]
fn a_pipe_is_refused_at_once_not_waited_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("pipe.wav");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("runs mkfifo");
    assert!(status.success());
    let link = dir.path().join("link.wav");
    std::os::unix::fs::symlink(&fifo, &link).expect("links");
    let file = dir.path().join("a.bin");
    write(&file, &[7u8; 1500]);
    let (done, outcome) = std::sync::mpsc::channel();
    // On its own thread: on the old code the call never returns.
    std::thread::spawn(move || {
        let p = pipeline(cache(), counting(None));
        let refused = [&fifo, &link].map(|path| {
            p.transcribe(path, "en")
                .map(|_| ())
                .map_err(|e| (matches!(e, PipelineError::Read { .. }), e.to_string()))
        });
        let served = p.transcribe(&file, "en").map(|o| o.transcript.text);
        let _ = done.send((refused, served));
    });
    let (refused, served) = outcome
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the pipeline answered within 30 s");
    for result in refused {
        let (is_read, message) = result.expect_err("a pipe is refused");
        assert!(is_read, "{message}");
        assert!(message.contains("not a regular file"), "{message}");
    }
    assert_eq!(served.expect("a regular file is served"), "len1000 len500");
}

/// Panics on chunks whose first byte is 9, after a pause (so that concurrent requests find
/// the job still running and coalesce onto it).
struct PanicsOnNine;

impl Transcriber for PanicsOnNine {
    fn identity(&self) -> &str {
        "panics-on-nine/v1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if chunk.data().first() == Some(&9) {
            panic!("engine bug");
        }
        Ok(ChunkResult::from_text(format!("len{}", chunk.data().len())))
    }
}

/// An engine that panics on one chunk, under requests that coalesce onto one job: each
/// request gets an error that names the file and the panic (none waits forever or gets a
/// result), nothing is stored under the file's transcript key, the failure reaches the
/// queue's metrics, and the pipeline's single worker survives to serve the next file.
#[test]
fn a_panicking_engine_fails_every_coalesced_request_and_the_worker_survives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.bin");
    let mut bytes = vec![1u8; 3000];
    bytes[2000] = 9;
    write(&file, &bytes);
    let cache = cache();
    let p = Pipeline::builder(cache.clone(), Arc::new(PanicsOnNine))
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .retry(RetryConfig::fixed(0, std::time::Duration::ZERO))
        .build()
        .expect("starts");
    let errors = on_threads(3, || {
        p.transcribe(&file, "en")
            .expect_err("chunk 2 panics")
            .to_string()
    });
    for message in &errors {
        assert!(
            message.contains("bad.bin") && message.contains("panicked: engine bug"),
            "{message}"
        );
    }
    let file_hash = memocache::CacheKey::from_content(&bytes, "file")
        .expect("key")
        .digest_hex();
    let key = memocache::CacheKey::transcript(&file_hash, "en").expect("key");
    assert!(
        !cache.contains_key(&key),
        "nothing stored for the failed file"
    );
    assert!(p.queue().stats().failed >= 1);
    let metrics = p.registry().render_prometheus();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("memocache_jobs_finished_total{status=\"failed\"}")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    let good = dir.path().join("good.bin");
    write(&good, &[1u8; 1500]);
    let served = p.transcribe(&good, "en").expect("the worker still serves");
    assert_eq!(served.transcript.text, "len1000 len500");
}

/// An empty file has no audio: it fails with a clear error, every time (nothing is cached
/// for it that a second call could be served), without calling the engine.
#[test]
fn an_empty_file_fails_clearly_without_the_engine() {
    let (_dir, file) = temp_file("empty.wav", b"");
    let engine = counting(None);
    let p = pipeline(cache(), engine.clone());
    for _ in 0..2 {
        let error = p.transcribe(&file, "en").expect_err("no audio");
        let message = error.to_string();
        assert!(matches!(error, PipelineError::Failed { .. }), "{message}");
        assert!(
            message.contains("empty.wav") && message.contains("no audio"),
            "{message}"
        );
    }
    assert_eq!(engine.calls.load(Ordering::SeqCst), 0);
}

/// A stand-in pipeline over `cache` cutting 1000-byte chunks, timing byte ranges at `rate`.
fn at_rate(cache: &Cache, rate: Option<u64>) -> Pipeline {
    let plan = ChunkPlan::with_chunk_bytes(1000).expect("valid size");
    Pipeline::builder(cache.clone(), Arc::new(StandInTranscriber::new(1)))
        .plan(rate.map_or(plan, |rate| plan.byte_rate(rate)))
        .build()
        .expect("starts")
}

/// A transcript's segment times, in milliseconds.
fn times(transcript: &Transcript) -> Vec<(u128, u128)> {
    transcript
        .segments
        .iter()
        .map(|s| (s.start.as_millis(), s.end.as_millis()))
        .collect()
}

/// Bug: a byte-split file's segments are timed by the plan's byte rate, which the transcript
/// key (the file's bytes and the language) does not name, and the stored transcript did not
/// say which rate timed it: a pipeline at 500 B/s over the cache of one at 1000 B/s was
/// served the 1000 B/s transcript, its segments half as long as its own plan makes them (and
/// a pipeline without a rate, segments it cannot time). Each now gets its own rate's times.
#[test]
fn pipelines_at_other_byte_rates_over_one_cache_get_their_own_segment_times() {
    let (_dir, file) = temp_file("a.bin", &[7u8; 2000]);
    let cache = cache();
    let run = |rate| {
        let outcome = at_rate(&cache, rate).transcribe(&file, "en").expect("ok");
        (
            times(&outcome.transcript),
            outcome.transcript.timing,
            outcome.from_cache,
        )
    };
    let fast = vec![(0, 1000), (1000, 2000)];
    let slow = vec![(0, 2000), (2000, 4000)];
    assert_eq!(run(Some(1000)), (fast, Timing::ByteRate(Some(1000)), false));
    assert_eq!(
        run(Some(500)),
        (slow.clone(), Timing::ByteRate(Some(500)), false)
    );
    // The later transcript replaced the earlier one, and is served to its own rate.
    assert_eq!(run(Some(500)), (slow, Timing::ByteRate(Some(500)), true));
    assert_eq!(run(None), (vec![], Timing::ByteRate(None), false));
}

/// A WAV file's header gives its rate: its transcript is timed alike by any plan, and
/// pipelines with any byte rate (or none) share it.
#[test]
fn pipelines_at_any_byte_rate_share_a_wav_files_transcript() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 1000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&file, spec).expect("header");
    for sample in 0..900i16 {
        writer.write_sample(sample).expect("sample");
    }
    writer.finalize().expect("finalized");
    let cache = cache();
    let first = at_rate(&cache, Some(1000))
        .transcribe(&file, "en")
        .expect("ok");
    assert!(!first.from_cache);
    assert_eq!(first.transcript.timing, Timing::Headers);
    // 900 frames at 1 kHz, whatever the plan's byte rate says.
    assert_eq!(times(&first.transcript).last().map(|t| t.1), Some(900));
    for rate in [Some(500), None] {
        let outcome = at_rate(&cache, rate).transcribe(&file, "en").expect("ok");
        assert!(outcome.from_cache, "{rate:?}");
        assert_eq!(outcome.transcript, first.transcript, "{rate:?}");
    }
}

/// Holds every call until the gate lets it through (all of them once it opens); counts the
/// calls that arrived.
#[derive(Default)]
struct Gated {
    arrived: AtomicUsize,
    /// How many calls, in the order they arrived, may return.
    through: parking_lot::Mutex<usize>,
    moved: parking_lot::Condvar,
}

impl Gated {
    fn open(&self) {
        self.let_through(usize::MAX);
    }

    /// Lets the first `calls` calls return.
    fn let_through(&self, calls: usize) {
        *self.through.lock() = calls;
        self.moved.notify_all();
    }
}

impl Transcriber for Gated {
    fn identity(&self) -> &str {
        "gated/v1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        let turn = self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut through = self.through.lock();
        while *through <= turn {
            self.moved.wait(&mut through);
        }
        Ok(ChunkResult::from_text(format!("len{}", chunk.data().len())))
    }
}

/// A pipeline over a new cache with one worker, running `engine` on chunks of 1000 bytes.
fn one_worker_on(engine: &Arc<Gated>) -> PipelineBuilder {
    Pipeline::builder(cache(), engine.clone())
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .workers(ConcurrencyLimit::new(1).expect("valid"))
}

/// The files of [`coalesce_p2_onto_p1`] in `dir`: `busy.bin` (300 bytes of 1), and `p1.bin`
/// and `p2.bin`, each `twin_len` bytes of 2.
fn busy_and_twins(dir: &Path, twin_len: usize) -> [std::path::PathBuf; 3] {
    let [busy, p1, p2] = ["busy.bin", "p1.bin", "p2.bin"].map(|name| dir.join(name));
    write(&busy, &[1u8; 300]);
    write(&p1, &vec![2u8; twin_len]);
    write(&p2, &vec![2u8; twin_len]);
    [busy, p1, p2]
}

/// A `Pipeline::transcribe` request running on a scoped thread.
type Request<'scope> =
    std::thread::ScopedJoinHandle<'scope, Result<TranscriptOutcome, PipelineError>>;

/// The requests of one coalescing scenario: `busy` holds the pipeline's one worker (its engine
/// is `engine`, closed), `p1`'s job waits in the queue behind it, and `p2`, the same bytes as
/// `p1`, is coalesced onto that job. Returns the three requests' handles once all that holds;
/// nothing runs until the caller opens the engine.
fn coalesce_p2_onto_p1<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    p: &'env Pipeline,
    engine: &Gated,
    [busy, p1, p2]: [&'env Path; 3],
) -> [Request<'scope>; 3] {
    let first = s.spawn(move || p.transcribe(busy, "en"));
    wait_until("the worker runs busy.bin", || {
        engine.arrived.load(Ordering::SeqCst) == 1
    });
    let from_p1 = s.spawn(move || p.transcribe(p1, "en"));
    wait_until("p1's job is queued", || p.queue().stats().submitted == 2);
    let from_p2 = s.spawn(move || p.transcribe(p2, "en"));
    wait_until("p2 coalesced onto p1's job", || {
        p.queue().stats().coalesced == 1
    });
    [first, from_p1, from_p2]
}

/// Waits (up to a minute: a deadlock guard, not a timing claim) until `ready` holds.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Bug: requests coalesce by content, so a request for one file could wait on the job of
/// *another* file with the same bytes — and when that file was deleted before its job ran,
/// the request failed with "coalesced with job …, which failed: opening …/p1 failed",
/// although its own file was there all along. It is now submitted again and served.
#[test]
fn a_request_coalesced_onto_another_files_job_survives_that_file_being_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let [busy, p1, p2] = busy_and_twins(dir.path(), 500);
    let engine = Arc::new(Gated::default());
    let p = one_worker_on(&engine).build().expect("starts");
    std::thread::scope(|s| {
        let [first, from_p1, from_p2] = coalesce_p2_onto_p1(s, &p, &engine, [&busy, &p1, &p2]);
        std::fs::remove_file(&p1).expect("removes p1");
        engine.open();
        assert_eq!(
            first
                .join()
                .expect("no panic")
                .expect("served")
                .transcript
                .text,
            "len300"
        );
        let error = from_p1.join().expect("no panic").expect_err("p1 is gone");
        assert!(error.to_string().contains("p1.bin"), "{error}");
        let served = from_p2.join().expect("no panic");
        let served = served.unwrap_or_else(|e| panic!("p2 failed for p1's sake: {e}"));
        assert_eq!(served.transcript.text, "len500");
        assert!(!served.from_cache);
    });
}

/// The reports a pipeline's progress callback received, by file.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<FileProgress>>>);

impl Reports {
    fn of(&self, path: &Path) -> Vec<Progress> {
        let reports = self.0.lock().expect("not poisoned");
        reports
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.progress)
            .collect()
    }
}

/// `(chunks_done, chunks_total, chunks_cached, bytes_done, bytes_total, eta)` and whether
/// the fraction is exactly 1.
fn done(p: &Progress) -> (usize, usize, usize, u64, u64, Option<Duration>, bool) {
    let (d, t, c) = (p.chunks_done, p.chunks_total, p.chunks_cached);
    (
        d,
        t,
        c,
        p.bytes_done,
        p.bytes_total,
        p.eta,
        p.fraction() == 1.0,
    )
}

/// Bug: the progress callback was called only by the chunk processor, so a file whose
/// transcript was in the cache — or a request that waited on another file's job for the same
/// bytes — completed with no report at all, and a host's progress bar for it never reached
/// its end. Such a request now gets one report, done.
#[test]
fn a_request_served_without_a_run_of_its_own_reports_its_progress_done() {
    let dir = tempfile::tempdir().expect("temp dir");
    let [busy, p1, p2] = busy_and_twins(dir.path(), 2500);
    let engine = Arc::new(Gated::default());
    let reports = Reports::default();
    let sink = reports.clone();
    let p = one_worker_on(&engine)
        .on_progress(move |r: &FileProgress| sink.0.lock().expect("not poisoned").push(r.clone()))
        .build()
        .expect("starts");
    std::thread::scope(|s| {
        let requests = coalesce_p2_onto_p1(s, &p, &engine, [&busy, &p1, &p2]);
        engine.open();
        for request in requests {
            request.join().expect("no panic").expect("served");
        }
    });
    // p1's job ran: its reports are the processor's, one at the start and one a chunk.
    let ran = reports.of(&p1);
    let chunks_done: Vec<usize> = ran.iter().map(|r| r.chunks_done).collect();
    assert_eq!(chunks_done, [0, 1, 2, 3]);
    // p2 waited on it: one report, done, every chunk counted as cached.
    let waited = reports.of(&p2);
    assert_eq!(
        waited.iter().map(done).collect::<Vec<_>>(),
        [(3, 3, 3, 2500, 2500, Some(Duration::ZERO), true)]
    );

    // Served from the cache: one report, done.
    let served = p.transcribe(&p1, "en").expect("served");
    assert!(served.from_cache);
    let again = reports.of(&p1);
    assert_eq!(again.len(), ran.len() + 1);
    let last = again.last().expect("a report");
    assert_eq!(
        done(last),
        (3, 3, 3, 2500, 2500, Some(Duration::ZERO), true)
    );
    assert!(last.elapsed <= served.elapsed);
}

// --- alert notifiers: run with no lock of the pipeline held ----------------------------------

/// A pipeline on `cache` with one rule, "the cache holds entries" (it fires as soon as that
/// is true and resolves as soon as it is not), sending to `channels`, of which "pager" is
/// served by `notifier`.
fn alerting(cache: Cache, channels: &[&str], notifier: Arc<dyn Notifier>) -> Arc<Pipeline> {
    use memocache::{Aggregation, AlertRule, Severity, Threshold};
    let rule = AlertRule::new(
        "cache holds entries",
        "memocache_cache_entries",
        Threshold::greater_than(0.0).expect("finite"),
        Severity::Info,
        std::time::Duration::from_secs(60),
    )
    .with_aggregation(Aggregation::Last);
    let rule = channels.iter().fold(rule, |rule, &c| rule.with_channel(c));
    let pipeline = Pipeline::builder(cache, Arc::new(StandInTranscriber::new(1)))
        .alert_rule(rule)
        .notifier("pager", notifier)
        .build()
        .expect("starts");
    Arc::new(pipeline)
}

fn entry() -> memocache::CacheKey {
    memocache::CacheKey::from_content(b"entry", "alerts").expect("valid prefix")
}

/// Runs `f` on a thread of its own and gives its result, or fails if that takes a minute
/// (a deadlock guard, not a timing claim).
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("never returned: {what}"))
}

fn transitions(notifications: &[Notification]) -> Vec<AlertTransition> {
    notifications.iter().map(|n| n.transition).collect()
}

/// On "firing", empties the cache and evaluates the pipeline's rules again, from inside the
/// notifier; records what it is sent and what that inner evaluation returned.
struct EvaluatesAgain {
    pipeline: Arc<OnceLock<Weak<Pipeline>>>,
    cache: Cache,
    seen: Arc<Mutex<Vec<AlertTransition>>>,
    inner: Arc<Mutex<Vec<Notification>>>,
}

impl Notifier for EvaluatesAgain {
    fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        self.seen.lock().unwrap().push(n.transition);
        if n.transition == Firing
            && let Some(pipeline) = self.pipeline.get().and_then(Weak::upgrade)
        {
            self.cache.remove(&entry());
            let again = pipeline.evaluate_alerts();
            self.inner.lock().unwrap().extend(again);
        }
        Ok(())
    }
}

/// Bug: `evaluate_alerts` (and so `transcribe`, which calls it) ran the notifiers holding
/// the alert evaluator's lock, so a notifier that called the pipeline back — to evaluate
/// again, or to transcribe a file — deadlocked its thread for good. The inner evaluation
/// now returns what it decided, and the channel gets that after the notification it was
/// called from.
#[test]
fn a_notifier_may_call_the_pipeline_back() {
    let cache = cache();
    let slot = Arc::new(OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner = Arc::new(Mutex::new(Vec::new()));
    let notifier = EvaluatesAgain {
        pipeline: Arc::clone(&slot),
        cache: cache.clone(),
        seen: Arc::clone(&seen),
        inner: Arc::clone(&inner),
    };
    let pipeline = alerting(cache.clone(), &["pager"], Arc::new(notifier));
    slot.set(Arc::downgrade(&pipeline)).expect("set once");
    cache.insert(entry(), "x").expect("fits");
    let outer = {
        let pipeline = Arc::clone(&pipeline);
        within_a_minute("an evaluation whose notifier evaluates again", move || {
            pipeline.evaluate_alerts()
        })
    };
    assert_eq!(transitions(&outer), [Firing]);
    assert_eq!(transitions(&inner.lock().unwrap()), [Resolved]);
    assert_eq!(*seen.lock().unwrap(), [Firing, Resolved]);
}

/// Blocks in its first call until released; records what it is sent once it returns.
struct Stalls {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
    seen: Arc<Mutex<Vec<AlertTransition>>>,
}

impl Notifier for Stalls {
    fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            let _ = entered.send(());
            let _ = self.release.lock().unwrap().recv();
        }
        self.seen.lock().unwrap().push(n.transition);
        Ok(())
    }
}

/// Bug: while a notifier ran, the evaluator's lock was held, so a slow notifier (a pager's
/// HTTP call timing out) held up every other thread's `evaluate_alerts`, and with it every
/// `transcribe`, which evaluates after each file. Another thread's evaluation now returns
/// at once, and its notification reaches the channel after the one being delivered, in the
/// order the evaluations decided them.
#[test]
fn a_slow_notifier_holds_up_no_other_threads_evaluation_and_order_is_kept() {
    let cache = cache();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let notifier = Stalls {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(release_rx),
        seen: Arc::clone(&seen),
    };
    let pipeline = alerting(cache.clone(), &["pager"], Arc::new(notifier));
    cache.insert(entry(), "x").expect("fits");
    let first = {
        let pipeline = Arc::clone(&pipeline);
        std::thread::spawn(move || pipeline.evaluate_alerts())
    };
    entered
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the firing notification reaches the notifier");
    cache.remove(&entry());
    let second = {
        let pipeline = Arc::clone(&pipeline);
        within_a_minute("an evaluation while a notifier stalls", move || {
            pipeline.evaluate_alerts()
        })
    };
    assert_eq!(transitions(&second), [Resolved]);
    release.send(()).expect("the notifier waits");
    assert_eq!(transitions(&first.join().expect("no panic")), [Firing]);
    assert_eq!(*seen.lock().unwrap(), [Firing, Resolved]);
}

/// A `tracing` subscriber that panics on every event: a host's logging with a bug.
fn panicking_log() -> EventSink<fn(&tracing::Event<'_>)> {
    EventSink(|_| panic!("log sink bug"))
}

/// Bug: the warning about a channel the rule names but no notifier serves was logged outside
/// the panic guard, so a host's `tracing` subscriber that panicked there skipped the rule's
/// later channels (the pager never heard of the firing), and with the outbox it would have
/// left the pipeline marked as delivering, every later notification queued for good. The
/// panic goes on to the caller once every channel is served, and the next evaluation
/// delivers.
#[test]
fn a_panic_while_logging_a_delivery_does_not_stop_later_deliveries() {
    let cache = cache();
    let pager = memocache::MemoryNotifier::new();
    let pipeline = alerting(
        cache.clone(),
        &["nowhere", "pager"],
        Arc::new(pager.clone()),
    );
    cache.insert(entry(), "x").expect("fits");
    let evaluated = tracing::subscriber::with_default(panicking_log(), || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.evaluate_alerts()))
    });
    let payload = evaluated.expect_err("the subscriber's panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"log sink bug"));
    assert_eq!(transitions(&pager.take()), [Firing]);
    cache.remove(&entry());
    assert_eq!(transitions(&pipeline.evaluate_alerts()), [Resolved]);
    assert_eq!(transitions(&pager.take()), [Resolved]);
}

/// Bug: two pipelines given one registry published both caches' and both queues' statistics
/// into the same unlabelled metrics, where `Counter::advance_to` keeps the larger of the two
/// totals (neither's figure, not their sum) and each gauge the last one published. A second
/// pipeline on a registry that already carries a cache's or a queue's metrics is now
/// refused, naming the fix.
#[test]
fn a_second_pipeline_on_one_registry_is_refused() {
    let registry = memocache::MetricsRegistry::new();
    let first = Pipeline::builder(cache(), Arc::new(StandInTranscriber::new(1)))
        .registry(registry.clone())
        .build()
        .expect("the first pipeline starts");
    let before = registry.render_prometheus();
    let second = Pipeline::builder(cache(), Arc::new(StandInTranscriber::new(1)))
        .registry(registry.clone())
        .build();
    match second {
        Err(err) => assert!(err.to_string().contains("a registry of its own"), "{err}"),
        other => panic!("a second pipeline on one registry started: {other:?}"),
    }
    assert_eq!(registry.render_prometheus(), before);
    drop(first);
}

/// Builds a stand-in pipeline on a new registry with the rules `refused`, hands the result to
/// `check`, asserts that the registry is left as it was (empty), then builds one on it with
/// the rules `taken`, which must start: the three refusals of a rule below share this.
fn a_refusal_leaves_the_registry_as_it_was(
    refused: Vec<memocache::AlertRule>,
    check: impl FnOnce(Result<Pipeline, PipelineError>),
    taken: Vec<memocache::AlertRule>,
) {
    let registry = memocache::MetricsRegistry::new();
    let with = |rules: Vec<memocache::AlertRule>| {
        let builder = Pipeline::builder(cache(), Arc::new(StandInTranscriber::new(1)))
            .registry(registry.clone());
        rules
            .into_iter()
            .fold(builder, |b, rule| b.alert_rule(rule))
            .build()
    };
    check(with(refused));
    assert_eq!(registry.render_prometheus(), "");
    with(taken).expect("the registry was left as it was");
}

/// Bug: a pipeline built with an alert rule on a name no series can have (`memocache
/// transcription duration`, a typo) started, and the rule never fired. The build is refused,
/// naming the name, before anything is registered: the same registry then takes a pipeline.
#[test]
fn a_pipeline_refuses_a_rule_on_an_invalid_name() {
    use memocache::{AlertRule, MetricError, Severity, Threshold};

    let rule = |metric: &str| {
        let above = Threshold::greater_than(0.01).expect("finite");
        AlertRule::new(
            "slow",
            metric,
            above,
            Severity::Warning,
            Duration::from_secs(60),
        )
    };
    a_refusal_leaves_the_registry_as_it_was(
        vec![
            rule("memocache_transcription_duration_seconds"),
            rule("memocache transcription duration"),
        ],
        |built| match built {
            Err(PipelineError::Metrics(MetricError::InvalidMetricName(name))) => {
                assert_eq!(name, "memocache transcription duration");
            }
            other => panic!("a rule on an invalid name was taken: {other:?}"),
        },
        vec![rule("memocache_transcription_duration_seconds")],
    );
}

/// Bug: a pipeline's rules are added before its metrics are registered, so a rule averaging
/// one of its counters (`Average` is a rule's default) was built, and never fired: a counter
/// keeps no history. The build checks the rules against the metrics it registers, refuses
/// it, naming the rule and the metric, and leaves the registry as it was; the same rule on
/// the total (`Last`), or on the latency summary's `_count`, is built.
#[test]
fn a_pipeline_refuses_a_rule_averaging_one_of_its_counters() {
    use memocache::{Aggregation, AlertRule, MetricError, Severity, Threshold};

    let rule = |metric: &str| {
        let above = Threshold::greater_than(100.0).expect("finite");
        let hour = Duration::from_secs(3600);
        AlertRule::new("busy", metric, above, Severity::Warning, hour)
    };
    let last = |metric| rule(metric).with_aggregation(Aggregation::Last);
    a_refusal_leaves_the_registry_as_it_was(
        vec![rule("memocache_cache_hits_total")],
        |built| match built {
            Err(PipelineError::Metrics(MetricError::NoHistory { rule, metric, .. })) => {
                assert_eq!((&*rule, &*metric), ("busy", "memocache_cache_hits_total"));
            }
            other => panic!("a rule averaging a counter was taken: {other:?}"),
        },
        vec![
            last("memocache_cache_hits_total"),
            last("memocache_transcription_duration_seconds_count"),
        ],
    );
}

/// Bug: a pipeline rule selecting its metric's series by a label the metric never carries
/// (`memocache_jobs{state="failed"}`, the label being `status`) was built, and never fired.
/// The pipeline's metrics have fixed label names: the build refuses the rule, naming the
/// label and the ones there are, and leaves the registry as it was; on `status`, it builds.
#[test]
fn a_pipeline_refuses_a_rule_on_a_label_its_metric_never_carries() {
    use memocache::{Aggregation, AlertRule, MetricError, Severity, Threshold};

    let rule = |label: &str| {
        let above = Threshold::greater_than(0.0).expect("finite");
        let hour = Duration::from_secs(3600);
        AlertRule::new(
            "dead letters",
            "memocache_jobs",
            above,
            Severity::Critical,
            hour,
        )
        .with_aggregation(Aggregation::Last)
        .with_label(label, "failed")
    };
    a_refusal_leaves_the_registry_as_it_was(
        vec![rule("state")],
        |built| match built {
            Err(PipelineError::Metrics(MetricError::NoSuchLabel { label, labels, .. })) => {
                assert_eq!((&*label, &*labels), ("state", &["status".to_owned()][..]));
            }
            other => panic!("a rule on a label no series carries was taken: {other:?}"),
        },
        vec![rule("status")],
    );
}

/// A pipeline rule on a metric the host registers later, as something the rule cannot read
/// (here the default `Average` of a counter), reads nothing; the pipeline showed that only in
/// its log, and a rule given twice (a clone keeps its id) was given a new id the host never
/// saw. `Pipeline::alert_rules` lists each rule as the pipeline holds it, with its health.
#[test]
fn a_pipeline_gives_its_rules_with_their_health() {
    use memocache::{Aggregation, AlertRule, MetricError, Severity, Threshold};

    let above = Threshold::greater_than(100.0).expect("finite");
    let hour = Duration::from_secs(3600);
    let average = AlertRule::new("busy", "app_requests_total", above, Severity::Warning, hour);
    let last = average.clone().with_aggregation(Aggregation::Last);
    let pipeline = Pipeline::builder(cache(), Arc::new(StandInTranscriber::new(1)))
        .alert_rule(average.clone())
        .alert_rule(last)
        .build()
        .expect("built");
    let rules = pipeline.alert_rules();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].0.id(), average.id());
    let second = rules[1].0.id();
    assert_ne!(second, average.id());
    assert_eq!(rules[1].0.aggregation(), Aggregation::Last);
    assert!(rules.iter().all(|(_, health)| health.is_ok()));

    pipeline
        .registry()
        .counter("app_requests_total", "Requests.", &[])
        .expect("registered")
        .inc_by(500);
    let fired = pipeline.evaluate_alerts();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].rule_id, second);
    let rules = pipeline.alert_rules();
    assert_eq!(
        rules[0].1,
        Err(MetricError::NoHistory {
            rule: "busy".into(),
            metric: "app_requests_total".into(),
            aggregation: Aggregation::Average,
        })
    );
    assert_eq!(rules[1].1, Ok(()));
    assert!(rules[1].0.last_triggered().is_some());
}

/// Takes 100 ms a chunk, so that a request waiting for its job polls at its longest pause.
struct Slow;

impl Transcriber for Slow {
    fn identity(&self) -> &str {
        "slow/v1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        std::thread::sleep(Duration::from_millis(100));
        Ok(ChunkResult::from_text(format!("len{}", chunk.data().len())))
    }
}

/// Bug: the queue keeps a finished job's record only until 1 024 newer jobs have finished,
/// and a request polls its job every 20 ms at most; a host running jobs of its own through
/// `Pipeline::queue` (here a thread completing plain jobs as fast as it can) pushed a
/// transcription's record out between two polls, and the request failed with "the job
/// vanished from the queue" although its transcript had been made and stored. A stress test:
/// the old code failed it in each of three runs, at its first, second or third request.
#[test]
fn a_request_whose_finished_job_left_the_queue_still_gets_its_transcript() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = pipeline(cache(), Arc::new(Slow));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let host = {
        let (queue, done) = (pipeline.queue().clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let worker = memocache::WorkerId::new("host");
            let mut finished = 0u64;
            while !done.load(Ordering::Relaxed) {
                finish_host_job(&queue, &worker);
                finished += 1;
            }
            finished
        })
    };
    let outcomes: Vec<_> = (0..10u8)
        .map(|i| {
            let path = dir.path().join(format!("{i}.raw"));
            write(&path, &[i; 500]);
            pipeline.transcribe(&path, "en").map(|o| o.transcript.text)
        })
        .collect();
    done.store(true, Ordering::Relaxed);
    let finished = host.join().expect("the host thread returns");
    for outcome in outcomes {
        assert_eq!(outcome.expect("transcribed"), "len500");
    }
    assert!(finished > 10_000, "the host finished only {finished} jobs");
}

/// Chunks of this size are read into buffers of `BUFFER` bytes (a chunk and a spare byte):
/// more than the allocator's per-thread caches hold, less than it maps alone.
const POOLED: usize = 64 * 1024;
const BUFFER: usize = POOLED + 1;

/// 8 chunks of noise from `seed`, unlike other seeds' chunks (and no WAV header).
fn pooled_input(seed: u64) -> Vec<u8> {
    noise(8 * POOLED, seed << 1)
}

/// Records where each chunk's bytes lay; with a gate, holds every call until `gate` calls
/// are in at once.
#[derive(Default)]
struct Where {
    at: Mutex<std::collections::HashSet<usize>>,
    gate: Option<(usize, Mutex<usize>, std::sync::Condvar)>,
}

impl Transcriber for Where {
    fn identity(&self) -> &str {
        "where/v1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        self.at
            .lock()
            .unwrap()
            .insert(chunk.data().as_ptr() as usize);
        if let Some((gate, inside, opened)) = &self.gate {
            let mut inside = inside.lock().unwrap();
            *inside += 1;
            if *inside >= *gate {
                opened.notify_all();
            }
            let (inside, timeout) = opened
                .wait_timeout_while(inside, Duration::from_secs(60), |n| *n < *gate)
                .unwrap();
            drop(inside);
            assert!(
                !timeout.timed_out(),
                "the gate's calls never came in at once"
            );
        }
        Ok(ChunkResult::from_text(format!("len{}", chunk.data().len())))
    }
}

impl Where {
    /// Where chunks lay since the last call.
    fn take(&self) -> std::collections::HashSet<usize> {
        std::mem::take(&mut *self.at.lock().unwrap())
    }
}

/// A pipeline of `POOLED`-byte chunks with `workers` and a chunk concurrency of 2, whose
/// runs, as each starts (on the worker thread that reads its chunks), take memory of a chunk
/// buffer's size: enough to take every buffer an earlier run freed, so that a chunk lands
/// where an earlier one was only if its buffer was kept.
fn pooling(engine: Arc<Where>, workers: usize, occupied: &Arc<Mutex<Vec<Vec<u8>>>>) -> Pipeline {
    let occupied = Arc::clone(occupied);
    Pipeline::builder(cache(), engine)
        .plan(ChunkPlan::with_chunk_bytes(POOLED as u64).expect("valid size"))
        .workers(ConcurrencyLimit::new(workers).expect("valid"))
        .chunk_concurrency(ConcurrencyLimit::new(2).expect("valid"))
        .retry(RetryConfig::fixed(0, Duration::from_millis(1)))
        .on_progress(move |p: &FileProgress| {
            if p.progress.chunks_done == 0 {
                let mut occupied = occupied.lock().unwrap();
                occupied.extend((0..12).map(|_| Vec::with_capacity(BUFFER)));
            }
        })
        .build()
        .expect("starts")
}

/// Before session 28 the pipeline built a chunk processor for each job (its language is the
/// request's), with chunk buffers of its own that went when the job ended: every file's
/// chunks were read into freshly mapped memory, faulted in anew, 25 MB a chunk.
#[test]
fn a_pipelines_next_job_reads_into_the_last_jobs_chunk_buffers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = (dir.path().join("first.raw"), dir.path().join("second.raw"));
    write(&first, &pooled_input(1));
    write(&second, &pooled_input(2));
    let engine = Arc::new(Where::default());
    let occupied = Arc::new(Mutex::new(Vec::new()));
    let pipeline = pooling(Arc::clone(&engine), 1, &occupied);
    assert_eq!(pipeline.spare_chunk_buffers(), 0);
    pipeline.transcribe(&first, "en").expect("transcribed");
    let at_first = engine.take();
    // Another file in another language: a job (and a processor) of its own.
    let outcome = pipeline.transcribe(&second, "fr").expect("transcribed");
    assert_eq!(outcome.transcript.chunks_computed, 8);
    let at_second = engine.take();
    assert!(
        !at_first.is_disjoint(&at_second),
        "the second job read into none of the first job's buffers"
    );
}

#[test]
fn a_pipeline_keeps_at_most_as_many_buffers_as_its_runs_hold_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Both files' chunk workers (2 each) held at once: both jobs have chunks in flight.
    let engine = Arc::new(Where {
        gate: Some((4, Mutex::new(0), std::sync::Condvar::new())),
        ..Where::default()
    });
    let occupied = Arc::new(Mutex::new(Vec::new()));
    let pipeline = pooling(engine, 2, &occupied);
    std::thread::scope(|scope| {
        for seed in [3, 4] {
            let path = dir.path().join(format!("{seed}.raw"));
            write(&path, &pooled_input(seed));
            let pipeline = &pipeline;
            scope.spawn(move || pipeline.transcribe(&path, "en").expect("transcribed"));
        }
    });
    // Each run holds up to 2 × 2 + 1 chunks, and the pipeline keeps what both held: the 4 at
    // the gate at least, 2 × (2 × 2 + 1) at most.
    let spare = pipeline.spare_chunk_buffers();
    assert!((4..=10).contains(&spare), "{spare} spare buffers");

    let pipeline = Pipeline::builder(cache(), Arc::new(Where::default()))
        .plan(ChunkPlan::with_chunk_bytes(POOLED as u64).expect("valid size"))
        .keep_chunk_buffers(false)
        .build()
        .expect("starts");
    let path = dir.path().join("5.raw");
    write(&path, &pooled_input(5));
    pipeline.transcribe(&path, "en").expect("transcribed");
    assert_eq!(pipeline.spare_chunk_buffers(), 0);
}

// --- a request whose job's record left the queue before it saw the job end -----------------

/// Holds the worker 80 ms on a chunk whose first byte is 1 (the busy files of
/// [`behind_a_busy_job`]); answers any other at once.
struct Held;

impl Transcriber for Held {
    fn identity(&self) -> &str {
        "held/v1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        if chunk.data().first() == Some(&1) {
            std::thread::sleep(Duration::from_millis(80));
        }
        Ok(ChunkResult::from_text(format!("len{}", chunk.data().len())))
    }
}

/// Finishes 1 100 plain jobs of the host's own on `queue` (a submit, a take and a
/// completion each): more than the 1 024 finished records the queue keeps, so every record
/// finished before them is gone.
fn push_records_out(queue: &memocache::JobQueue) {
    let worker = memocache::WorkerId::new("host");
    for _ in 0..1100 {
        finish_host_job(queue, &worker);
    }
}

/// Submits, takes and completes one Indexing job of the host's own on the pipeline's queue.
fn finish_host_job(queue: &memocache::JobQueue, worker: &memocache::WorkerId) {
    let job = memocache::Job::new(memocache::JobType::Indexing, &b""[..]);
    queue.submit(job).expect("room");
    let lease = queue
        .try_next_for(worker, &[memocache::JobType::Indexing])
        .expect("the host's own job");
    queue
        .complete(&lease, memocache::JobResult::default())
        .expect("current");
}

/// A pipeline of [`Held`] with one worker, reporting progress to `reports`.
fn held(reports: &Reports) -> Pipeline {
    let sink = reports.clone();
    Pipeline::builder(cache(), Arc::new(Held))
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .workers(ConcurrencyLimit::new(1).expect("valid"))
        .on_progress(move |r: &FileProgress| sink.0.lock().expect("not poisoned").push(r.clone()))
        .build()
        .expect("starts")
}

/// Round `round` of a race: a request for a busy file (300 bytes, the first 1) holds `p`'s
/// one worker for 80 ms, and a request for the target (500 bytes of 2, one chunk) waits
/// behind it, so that it polls its job at its longest pause, 20 ms; `host` runs meanwhile on
/// a thread of its own, given the queue's statistics from before the two submits. Returns
/// the target and its request's outcome.
fn behind_a_busy_job(
    p: &Pipeline,
    dir: &Path,
    round: u8,
    host: impl FnOnce(memocache::QueueStats) + Send,
) -> (std::path::PathBuf, Result<TranscriptOutcome, PipelineError>) {
    let (busy, target) = (
        dir.join(format!("busy{round}")),
        dir.join(format!("t{round}")),
    );
    let mut bytes = vec![1u8; 300];
    bytes[1] = round;
    write(&busy, &bytes);
    let mut bytes = vec![2u8; 500];
    bytes[1] = round;
    write(&target, &bytes);
    let before = p.queue().stats();
    let outcome = std::thread::scope(|s| {
        let first = s.spawn(|| p.transcribe(&busy, "en"));
        wait_until("the worker runs the busy file", || {
            p.queue().stats().processing == 1
        });
        let host = s.spawn(move || host(before));
        let outcome = p.transcribe(&target, "en");
        first
            .join()
            .expect("no panic")
            .expect("the busy file is served");
        host.join().expect("no panic");
        outcome
    });
    (target, outcome)
}

/// Bug: a request learned whether its job ran only from the polls that saw it running; a
/// job that ran entirely between two polls, its record pushed out of the queue before the
/// second, counted as not run, and the request reported one more progress event, "done",
/// with every chunk counted as cached. A race: the old code failed it in each of three
/// runs, in rounds 0, 3 and 2.
#[test]
fn a_job_that_ran_between_two_polls_reports_no_extra_done_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reports = Reports::default();
    let p = held(&reports);
    for round in 0..10 {
        let (target, outcome) = behind_a_busy_job(&p, dir.path(), round, |before| {
            wait_until("both jobs completed", || {
                p.queue().stats().completed == before.completed + 2
            });
            push_records_out(p.queue());
        });
        let outcome = outcome.expect("served");
        assert!(!outcome.from_cache);
        let cached: Vec<_> = reports
            .of(&target)
            .iter()
            .map(|r| r.chunks_cached)
            .collect();
        // The processor's reports, at the start and for the one chunk: none counted cached.
        assert_eq!(cached, [0, 0], "round {round}");
    }
}

/// Bug: a request whose job completed but whose transcript the cache did not keep (too
/// large for it, refused by admission, or evicted — here the host clears the cache), the
/// job's record pushed out of the queue before the request's next poll, failed with "the job
/// finished and left the queue's records …, and no transcript is stored under its key",
/// although its transcript had been made. The job is now submitted again. A race (the busy
/// file's request, whose job completed first, can lose its transcript too): the old code
/// failed it in each of three runs, at the busy file's request, in rounds 0, 1 and 1.
#[test]
fn a_transcript_the_cache_did_not_keep_is_made_again_not_failed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = held(&Reports::default());
    for round in 0..10 {
        let (_, outcome) = behind_a_busy_job(&p, dir.path(), round, |before| {
            wait_until("both jobs completed", || {
                p.queue().stats().completed == before.completed + 2
            });
            p.cache().clear();
            push_records_out(p.queue());
        });
        let outcome = outcome.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(outcome.transcript.text, "len500", "round {round}");
    }
}

/// Bug: a request whose job was cancelled (a host took its lease through `Pipeline::queue`
/// and cancelled it), the record pushed out of the queue before the request's next poll,
/// failed with "the job finished and left the queue's records …" rather than as cancelled;
/// so did one that saw the record, with "the job ended without a result". It is now
/// `PipelineError::Cancelled` either way. The old code failed it in each of three runs, in
/// round 0, with the first message.
#[test]
fn a_request_whose_job_was_cancelled_says_so_after_the_record_went() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = held(&Reports::default());
    for round in 0..5 {
        let (target, outcome) = behind_a_busy_job(&p, dir.path(), round, |before| {
            wait_until("the target's job is queued", || {
                p.queue().stats().submitted == before.submitted + 2
            });
            // The worker is held 80 ms: by now the request polls at its longest pause.
            std::thread::sleep(Duration::from_millis(25));
            let host = memocache::WorkerId::new("host");
            let lease = p
                .queue()
                .try_next_for(&host, &[memocache::JobType::Transcription])
                .expect("the target's job");
            p.queue().cancel(lease.job_id()).expect("cancels");
            push_records_out(p.queue());
        });
        let error = outcome.expect_err("cancelled").to_string();
        let expected = format!("transcribing {} was cancelled", target.display());
        assert_eq!(error, expected, "round {round}");
    }
}

// --- a leader failing under its followers, their records pushed out in the same step ----------

/// How [`FailsFirst`] fails its first call.
#[derive(Clone, Copy)]
enum FirstCall {
    /// An engine error, "refused once".
    Refuse,
    /// A panic, "engine bug".
    Panic,
}

/// Holds each call until its gate lets it through; then fails the first as `first` says and
/// answers the others.
struct FailsFirst {
    gate: Gated,
    first: FirstCall,
    calls: AtomicUsize,
}

impl Transcriber for FailsFirst {
    fn identity(&self) -> &str {
        "fails-first/v1"
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        let answer = self.gate.transcribe(chunk)?;
        if !first {
            return Ok(answer);
        }
        match self.first {
            FirstCall::Refuse => Err(TranscribeError::Engine("refused once".into())),
            FirstCall::Panic => panic!("engine bug"),
        }
    }
}

/// The dead letters a pipeline's queue keeps (the queue's default `dead_letter_capacity`).
const DEAD_LETTERS: usize = 10_000;

/// The requests for `p1` and `p2` (the same 500 bytes, one chunk) and what became of them.
struct Failed {
    p1: std::path::PathBuf,
    p2: std::path::PathBuf,
    from_p1: Result<TranscriptOutcome, PipelineError>,
    from_p2: Result<TranscriptOutcome, PipelineError>,
}

/// p1's request leads a job that its engine's first call holds; p2's request is coalesced
/// onto that job, and behind it [`DEAD_LETTERS`] jobs of the host's own for the same key.
/// Then `before_open` runs (given p2's path) and the engine lets its first call through,
/// which fails as `first` says: the queue dead-letters the leader and all its followers in
/// one step, so that the oldest two, p1's and p2's jobs, have left the dead letters before
/// either request can look (checked). Deterministic: no poll can fall between the failure
/// and the push-out, and the engine lets no later call through (p2's, submitted again)
/// until p1's request has returned, so that it cannot be served the transcript that call
/// makes.
fn leader_fails_under_followers(first: FirstCall, before_open: impl FnOnce(&Path)) -> Failed {
    let dir = tempfile::tempdir().expect("temp dir");
    let [p1, p2] = ["p1.bin", "p2.bin"].map(|name| dir.path().join(name));
    let bytes = [2u8; 500];
    write(&p1, &bytes);
    write(&p2, &bytes);
    let engine = Arc::new(FailsFirst {
        gate: Gated::default(),
        first,
        calls: AtomicUsize::new(0),
    });
    let p = Pipeline::builder(cache(), engine.clone())
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .workers(ConcurrencyLimit::new(1).expect("valid"))
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .build()
        .expect("starts");
    let file_hash = memocache::CacheKey::from_content(&bytes, "file")
        .expect("key")
        .digest_hex();
    let (from_p1, from_p2) = std::thread::scope(|s| {
        let from_p1 = s.spawn(|| p.transcribe(&p1, "en"));
        wait_until("p1's job runs", || {
            engine.gate.arrived.load(Ordering::SeqCst) == 1
        });
        let from_p2 = s.spawn(|| p.transcribe(&p2, "en"));
        wait_until("p2 coalesced onto p1's job", || {
            p.queue().stats().coalesced == 1
        });
        for _ in 0..DEAD_LETTERS {
            let job = memocache::Job::transcription(&file_hash, "en", &b""[..]).expect("key");
            p.queue().submit(job).expect("room");
        }
        assert_eq!(p.queue().stats().coalesced_waiting, DEAD_LETTERS + 1);
        before_open(&p2);
        engine.gate.let_through(1);
        let from_p1 = from_p1.join().expect("no panic");
        engine.gate.open();
        (from_p1, from_p2.join().expect("no panic"))
    });
    let dead = p.queue().dead_letters();
    assert_eq!(dead.len(), DEAD_LETTERS);
    assert!(
        dead.iter().all(|job| job.payload().as_bytes().is_empty()),
        "a request's job is still among the dead letters"
    );
    Failed {
        p1,
        p2,
        from_p1,
        from_p2,
    }
}

/// The fallback session 29 left untested end to end: a request coalesced onto a job that
/// failed, whose record left the queue before the request looked, learns from the pipeline's
/// own watch that its leader failed, and is submitted again and served (its file is as it was
/// hashed); the leader's request fails with its engine's error.
#[test]
fn a_follower_whose_failed_leaders_record_went_is_submitted_again_and_served() {
    let failed = leader_fails_under_followers(FirstCall::Refuse, |_| {});
    let error = failed.from_p1.expect_err("p1's job failed").to_string();
    assert!(
        error.contains("p1.bin") && error.ends_with("refused once"),
        "{error}"
    );
    let served = failed.from_p2.unwrap_or_else(|e| panic!("p2 failed: {e}"));
    assert_eq!(served.transcript.text, "len500");
    assert!(!served.from_cache);
    assert_eq!(served.path, failed.p2);
}

/// Bug: a request whose job panicked, its record gone before the request looked, failed with
/// "the transcription panicked", the panic's message lost; read from the record it was
/// "handler panicked: engine bug". The pipeline's watch now keeps the message the queue gets.
#[test]
fn a_panic_is_named_the_same_after_the_record_went() {
    let failed = leader_fails_under_followers(FirstCall::Panic, |_| {});
    let error = failed.from_p1.expect_err("p1's job panicked").to_string();
    let expected = format!(
        "transcribing {} failed: handler panicked: engine bug",
        failed.p1.display()
    );
    assert_eq!(error, expected);
    let served = failed.from_p2.unwrap_or_else(|e| panic!("p2 failed: {e}"));
    assert_eq!(served.transcript.text, "len500");
}

/// Bug: a request coalesced onto a job that failed, whose own file changed meanwhile (so it
/// is not submitted again), failed with the leader's message bare when the record had gone
/// before it looked, as if its own job had failed so; read from the record, the message says
/// "coalesced with job …, which failed: …". The watch now words it as the queue does.
#[test]
fn a_followers_failure_says_whose_job_failed_after_the_record_went() {
    let failed = leader_fails_under_followers(FirstCall::Refuse, |p2| write(p2, &[3u8; 600]));
    let error = failed.from_p2.expect_err("p2 changed").to_string();
    let start = format!(
        "transcribing {} failed: coalesced with job ",
        failed.p2.display()
    );
    assert!(
        error.starts_with(&start)
            && error.ends_with(
                ", which failed: chunk 0 failed after 1 attempt(s): the engine failed: refused once"
            ),
        "{error}"
    );
    failed.from_p1.expect_err("p1's job failed");
}

/// Bug: a worker told the pipeline's watch how its run of a job ended even when the job had
/// been cancelled while it ran, whose outcome the queue then refused: the job was taken as
/// completed (or failed), and so were the jobs coalesced onto it, which the cancel had handed
/// over to the first of them. Here p1's job is cancelled while it runs, p2's job takes over
/// and the host takes and fails it, pushing its record out of the dead letters with the
/// host's own followers; the old code read p2's job as completed with its transcript lost,
/// submitted it again and served it. Nothing is known of it now, which reads as cancelled.
#[test]
fn a_job_cancelled_while_it_ran_is_not_taken_as_ended_by_its_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let [busy, p1, p2] = busy_and_twins(dir.path(), 500);
    let engine = Arc::new(Gated::default());
    let p = one_worker_on(&engine).build().expect("starts");
    let file_hash = memocache::CacheKey::from_content(&[2u8; 500], "file")
        .expect("key")
        .digest_hex();
    let host = memocache::WorkerId::new("host");
    let transcriptions = [memocache::JobType::Transcription];
    std::thread::scope(|s| {
        let [first, from_p1, from_p2] = coalesce_p2_onto_p1(s, &p, &engine, [&busy, &p1, &p2]);
        for _ in 0..DEAD_LETTERS {
            let job = memocache::Job::transcription(&file_hash, "en", &b""[..]).expect("key");
            p.queue().submit(job).expect("room");
        }
        // p1's job's id, learned by taking the job and giving it back unrun.
        let lease = p
            .queue()
            .try_next_for(&host, &transcriptions)
            .expect("p1's job");
        let p1_job = lease.job_id();
        p.queue().release(&lease).expect("current");
        engine.let_through(1);
        wait_until("p1's job runs", || {
            engine.arrived.load(Ordering::SeqCst) == 2
        });
        p.queue().cancel(p1_job).expect("cancels");
        let taken = p
            .queue()
            .try_next_for(&host, &transcriptions)
            .expect("p2's job, leading now");
        assert_ne!(taken.job_id(), p1_job);
        engine.open();
        // The pipeline's one worker serves another file only once p1's run has ended.
        let other = dir.path().join("other.bin");
        write(&other, &[4u8; 300]);
        p.transcribe(&other, "en").expect("served");
        p.queue().fail(&taken, "the host gave up").expect("current");
        first.join().expect("no panic").expect("busy.bin is served");
        let cancelled = from_p1.join().expect("no panic");
        assert!(
            matches!(cancelled, Err(PipelineError::Cancelled { .. })),
            "{cancelled:?}"
        );
        match from_p2.join().expect("no panic") {
            Err(PipelineError::Cancelled { path }) => assert_eq!(path, p2),
            other => panic!("p2's job was taken as ended by p1's run: {other:?}"),
        }
    });
    let dead = p.queue().dead_letters();
    assert_eq!(dead.len(), DEAD_LETTERS);
    assert!(dead.iter().all(|job| job.payload().as_bytes().is_empty()));
}

/// Bug: a progress callback that asked its own pipeline for a file the cache did not hold
/// (to start the next file of a batch once this one is done, say) waited for ever, and so did
/// the request whose run it reported on: the new request's job waited for a worker, or
/// coalesced onto the run, and the run waited for the callback. Such a request is now
/// refused at once with `PipelineError::InsideOwnRun`; one the cache serves is served.
#[test]
fn a_progress_callback_asking_its_own_pipeline_for_a_run_is_refused_not_left_waiting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let [first, next, cached] = ["first.bin", "next.bin", "cached.bin"].map(|n| dir.path().join(n));
    write(&first, &[1u8; 500]);
    write(&next, &[2u8; 500]);
    write(&cached, &[3u8; 500]);
    let slot: Arc<OnceLock<Weak<Pipeline>>> = Arc::new(OnceLock::new());
    let answers = Arc::new(Mutex::new(Vec::new()));
    let pipeline = {
        let (slot, answers, first) = (Arc::clone(&slot), Arc::clone(&answers), first.clone());
        let (next, cached) = (next.clone(), cached.clone());
        Arc::new(
            Pipeline::builder(cache(), counting(None))
                .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
                .workers(ConcurrencyLimit::new(1).expect("valid"))
                .on_progress(move |r: &FileProgress| {
                    let done = r.progress.chunks_done == r.progress.chunks_total;
                    if r.path == first
                        && done
                        && let Some(p) = slot.get().and_then(Weak::upgrade)
                    {
                        let mut answers = answers.lock().expect("not poisoned");
                        for path in [&next, &first, &cached] {
                            answers.push(p.transcribe(path, "en").map(|o| o.from_cache));
                        }
                    }
                })
                .build()
                .expect("starts"),
        )
    };
    slot.set(Arc::downgrade(&pipeline)).expect("set once");
    pipeline.transcribe(&cached, "en").expect("served");
    let outer = {
        let (pipeline, first) = (Arc::clone(&pipeline), first.clone());
        within_a_minute(
            "a request whose progress callback asks for another file",
            move || pipeline.transcribe(&first, "en").map(|o| o.transcript.text),
        )
    };
    assert_eq!(outer.expect("served"), "len500");
    let answers = std::mem::take(&mut *answers.lock().expect("not poisoned"));
    let [from_next, from_first, from_cached] = <[_; 3]>::try_from(answers).expect("three");
    for (path, answer) in [(&next, from_next), (&first, from_first)] {
        match answer {
            Err(e @ PipelineError::InsideOwnRun { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "transcribing {} was asked from the pipeline's progress callback during \
                     one of its runs: its job would wait behind that run, which waits for the \
                     callback",
                    path.display()
                )
            ),
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    assert!(from_cached.expect("served from the cache"));
    // Outside the callback, the same request is served.
    assert!(!pipeline.transcribe(&next, "en").expect("served").from_cache);
}

// --- session 31: the pipeline's watch, and requests resubmitted --------------------------------

/// [`Gated`] under an identity of 8 KiB, which every transcript carries: a cache of
/// [`SMALL_CACHE`] bytes keeps its chunk results and refuses its transcripts as too large.
struct LongNamed {
    gate: Gated,
    identity: String,
}

impl Transcriber for LongNamed {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        self.gate.transcribe(chunk)
    }
}

/// A cache budget above a chunk result's charge and below a [`LongNamed`] transcript's.
const SMALL_CACHE: u64 = 4096;

/// Waits, spinning (a deadlock guard of a minute, not a timing claim), until `ready` holds:
/// for a step the test must follow at once.
fn spin_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::yield_now();
    }
}

/// Bug: a request learned whether it ran from its last job alone. Here its first job runs
/// (reporting the file's progress), completes with followers of the host's own that push
/// its record out of the queue in the same step, and the cache refuses the transcript, so
/// the request finds it lost and submits again; the job submitted again is coalesced onto a
/// job of the host's, which completes it with the transcript. The old code took the request
/// as served without a run and reported it once more, done, every chunk counted as cached,
/// after its run's reports. Deterministic but for one step: should the request poll between
/// its first job's completion and the host's submit just after it (the test spins for it,
/// the request polls every 20 ms), its second job leads, the host takes that one, and the
/// old code passes too.
#[test]
fn a_request_whose_job_ran_reports_no_done_event_when_its_resubmit_is_answered_without_a_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (target, busy) = (dir.path().join("t.bin"), dir.path().join("busy.bin"));
    write(&target, &[2u8; 500]);
    write(&busy, &[1u8; 300]);
    let engine = Arc::new(LongNamed {
        gate: Gated::default(),
        identity: "long/".repeat(1640),
    });
    let reports = Reports::default();
    let sink = reports.clone();
    let small = Cache::builder()
        .max_bytes(SMALL_CACHE)
        .build()
        .expect("valid");
    let p = Pipeline::builder(small, engine.clone())
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
        .workers(ConcurrencyLimit::new(1).expect("valid"))
        .on_progress(move |r: &FileProgress| sink.0.lock().expect("not poisoned").push(r.clone()))
        .build()
        .expect("starts");
    let file_hash = memocache::CacheKey::from_content(&[2u8; 500], "file")
        .expect("key")
        .digest_hex();
    let host_job = || memocache::Job::transcription(&file_hash, "en", &b""[..]).expect("key");
    let host = memocache::WorkerId::new("host");
    let outcome = std::thread::scope(|s| {
        let request = s.spawn(|| p.transcribe(&target, "en"));
        wait_until("the target's job runs", || {
            engine.gate.arrived.load(Ordering::SeqCst) == 1
        });
        let busy_request = s.spawn(|| p.transcribe(&busy, "en"));
        wait_until("the busy file's job is queued", || {
            p.queue().stats().submitted == 2
        });
        let followers: Vec<_> = (0..1100)
            .map(|_| p.queue().submit(host_job()).expect("room"))
            .collect();
        assert_eq!(p.queue().stats().coalesced, 1100);
        engine.gate.let_through(1);
        spin_until("the target's job and its followers completed", || {
            p.queue().stats().completed == 1101
        });
        p.queue().submit(host_job()).expect("room");
        wait_until("the request submitted again, coalesced", || {
            p.queue().stats().coalesced == 1101
        });
        assert_eq!(p.queue().stats().memo_store_failures, 1);
        let transcript = p
            .queue()
            .get(*followers.last().expect("followers"))
            .and_then(|job| job.result().cloned())
            .expect("the last follower's record keeps the transcript");
        let lease = p
            .queue()
            .try_next_for(&host, &[memocache::JobType::Transcription])
            .expect("the host's job, leading");
        p.queue().complete(&lease, transcript).expect("current");
        let outcome = request.join().expect("no panic");
        engine.gate.open();
        busy_request
            .join()
            .expect("no panic")
            .expect("the busy file is served");
        outcome
    });
    let outcome = outcome.unwrap_or_else(|e| panic!("the target failed: {e}"));
    assert!(!outcome.from_cache);
    assert_eq!(outcome.transcript.text, "len500");
    let cached: Vec<_> = reports
        .of(&target)
        .iter()
        .map(|r| (r.chunks_done, r.chunks_cached))
        .collect();
    // The processor's reports, at the start and for the one chunk: none counted cached.
    assert_eq!(cached, [(0, 0), (1, 0)]);
}

/// Bug: a progress callback that handed a request to another thread and joined it, the
/// request's job coalesced onto the very run the callback reports on (the same file, here),
/// waited for ever, and the run with it: the refusal of such a request
/// (`PipelineError::InsideOwnRun`) saw only the callback's own thread. A job that waits,
/// not started, on one call of the callback is now refused after the builder's
/// `callback_wait` (`PipelineError::WaitsOnCallback`, no sooner) and cancelled; a request the
/// other worker can run is served meanwhile.
#[test]
fn a_request_from_a_thread_the_progress_callback_joins_is_refused_not_left_waiting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let [first, next] = ["first.bin", "next.bin"].map(|n| dir.path().join(n));
    write(&first, &[1u8; 500]);
    write(&next, &[2u8; 500]);
    let slot: Arc<OnceLock<Weak<Pipeline>>> = Arc::new(OnceLock::new());
    let answers = Arc::new(Mutex::new(Vec::new()));
    let pipeline = {
        let (slot, answers, first) = (Arc::clone(&slot), Arc::clone(&answers), first.clone());
        let next = next.clone();
        Arc::new(
            Pipeline::builder(cache(), counting(None))
                .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid size"))
                .workers(ConcurrencyLimit::new(2).expect("valid"))
                .callback_wait(Duration::from_millis(300))
                .on_progress(move |r: &FileProgress| {
                    let done = r.progress.chunks_done == r.progress.chunks_total;
                    if r.path == first
                        && done
                        && let Some(p) = slot.get().and_then(Weak::upgrade)
                    {
                        let (next, first) = (next.clone(), first.clone());
                        let asked = std::thread::spawn(move || {
                            [&next, &first].map(|path| p.transcribe(path, "en"))
                        });
                        let asked = asked.join().expect("no panic");
                        answers.lock().expect("not poisoned").extend(asked);
                    }
                })
                .build()
                .expect("starts"),
        )
    };
    slot.set(Arc::downgrade(&pipeline)).expect("set once");
    let outer = {
        let (pipeline, first) = (Arc::clone(&pipeline), first.clone());
        within_a_minute(
            "a request whose progress callback joins a thread asking for the same file",
            move || pipeline.transcribe(&first, "en").map(|o| o.transcript.text),
        )
    };
    assert_eq!(outer.expect("served"), "len500");
    let answers = std::mem::take(&mut *answers.lock().expect("not poisoned"));
    let [from_next, from_first] = <[_; 2]>::try_from(answers).expect("two");
    let served = from_next.expect("the other worker runs next.bin");
    assert!(!served.from_cache);
    match from_first {
        Err(e @ PipelineError::WaitsOnCallback { waited, .. }) => {
            assert!(
                waited >= Duration::from_millis(300),
                "refused after {waited:?}"
            );
            let message = e.to_string();
            let start = format!("transcribing {} waited ", first.display());
            assert!(
                message.starts_with(&start)
                    && message.ends_with(
                        "on a call of the pipeline's progress callback during a run (a callback \
                         waiting for this request on another thread would wait for ever): \
                         refused"
                    ),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The refused job was cancelled, not left to run once the callback returned.
    let stats = pipeline.queue().stats();
    assert_eq!((stats.cancelled, stats.queued), (1, 0));
}
