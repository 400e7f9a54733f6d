//! `memocache demo`: the whole pipeline on generated audio, with no setup.
//!
//! With `--dir`, the demo writes its files and `cache.snapshot` in a directory the user
//! names, which could also be a `transcribe` cache directory: it holds that directory's
//! lock ([`super::lock`]) for the whole demo, so two demos, or a demo and a `transcribe`, on
//! one directory are refused with the same error. A temporary directory is the demo's own and
//! is not locked, and Ctrl-C (or SIGTERM, SIGHUP) removes it before the process ends (status
//! 130, or 143 and 129). In a `--dir` the interrupt removes what the demo wrote there (and
//! the directory, if the demo made it), so the same command can be run again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use memocache::chunk::ChunkPlan;
use memocache::metrics::{Aggregation, AlertTransition, MemoryNotifier, Notification};
use memocache::pipeline::{FileProgress, Pipeline, StandInTranscriber, Transcriber};
use memocache::{AlertRule, Cache, ConcurrencyLimit, Severity, Threshold};

use super::checkpoint::{end_interrupted, end_interrupted_with, on_interrupt, remove_dir_all};
use super::lock::{DirLock, LOCK_FILE, lock_dir};
use super::shown;
use super::transcribe::{Bars, SNAPSHOT_FILE, describe, final_save, fmt_duration, print_summary};

/// Chunk size of the demo: small, so that a few seconds of audio make several chunks.
const DEMO_CHUNK_BYTES: u64 = 256 * 1024;
/// Sample rate of the generated audio.
const RATE: u32 = 16_000;

pub fn run(dir: Option<PathBuf>) -> Result<(), String> {
    let scratch;
    // Held to the end of `run`, after the snapshot is saved.
    let _lock: Option<DirLock>;
    let kept = dir.is_some();
    let dir = match dir {
        Some(dir) => {
            // A run in progress there has created the lock file: it is refused with the lock's
            // error, not as "not empty". The lock file is not created in a directory that is
            // then refused as not empty: a user's directory gets no stray file.
            let early = if dir.join(LOCK_FILE).exists() {
                Some(lock_dir(&dir, "--dir")?)
            } else {
                None
            };
            check_demo_dir(&dir)?;
            let created = !dir.exists();
            super::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", shown(&dir)))?;
            _lock = Some(match early {
                Some(lock) => lock,
                None => lock_dir(&dir, "--dir")?,
            });
            // An interrupted demo left its part-written files there, and the next `demo --dir`
            // on the same directory was refused as not empty. What it wrote is removed (the
            // directory too, if the demo made it): it was new or empty, so nothing else goes.
            let own = dir.clone();
            on_interrupt(move |status| {
                end_interrupted_with(|| remove_demo_files(&own, created), status)
            })?;
            dir
        }
        None => {
            _lock = None;
            scratch = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
            // Ctrl-C ends the process without running destructors, so the temporary
            // directory, which `scratch` removes when dropped, would be left in the system's
            // temporary folder with megabytes of generated audio: remove it, then exit with
            // the status `transcribe` uses. (`--dir` is the user's and is kept, as documented.)
            let path = scratch.path().to_owned();
            on_interrupt(move |status| end_interrupted(Some(&path), status))?;
            scratch.path().to_owned()
        }
    };
    if kept {
        println!("memocache demo — working in {}\n", shown(&dir));
    } else {
        println!(
            "memocache demo — working in {} (removed at the end; `--dir DIR` keeps the files)\n",
            shown(&dir)
        );
    }

    let files = DEMO_FILES
        .iter()
        .zip([40, 55, 30])
        .enumerate()
        .map(|(i, (name, seconds))| {
            let path = dir.join(name);
            write_wav(&path, seconds, i as u64)?;
            Ok(path)
        })
        .collect::<Result<Vec<_>, String>>()?;
    println!(
        "generated {} WAV files (16 kHz mono), cut into {} KiB chunks",
        files.len(),
        DEMO_CHUNK_BYTES / 1024
    );
    let engine = Arc::new(StandInTranscriber::new(60));
    println!(
        "engine: STAND-IN `{}` — deterministic and CPU-bound, it does NOT recognise speech\n",
        engine.identity()
    );

    let cache = Cache::builder()
        .max_bytes(256 * 1024 * 1024)
        .build()
        .map_err(|e| e.to_string())?;
    let notifier = Arc::new(MemoryNotifier::new());
    // 10 ms: every file the stand-in engine computes takes longer (15–50 ms in a release
    // build on the development VM, more in a debug build), every cache hit far less (about
    // 1 ms), so the alert fires on the first pass and resolves on the second. At 50 ms it
    // fired in a debug build but never in a release build on that VM: `cargo run --release
    // -- demo` showed no alert at all.
    let slow = AlertRule::new(
        "SlowTranscription",
        "memocache_transcription_duration_seconds",
        Threshold::greater_than(0.01).map_err(|e| e.to_string())?,
        Severity::Warning,
        Duration::from_secs(3600),
    )
    .with_aggregation(Aggregation::Last)
    .with_channel("demo");
    let bars = Bars::new(0);
    let chunk_bar = bars.chunks.clone();
    let pipeline = Pipeline::builder(cache.clone(), engine.clone())
        .plan(ChunkPlan::with_chunk_bytes(DEMO_CHUNK_BYTES).map_err(|e| e.to_string())?)
        .chunk_concurrency(ConcurrencyLimit::new(2).map_err(|e| e.to_string())?)
        .alert_rule(slow)
        .notifier("demo", notifier.clone())
        .on_progress(move |p: &FileProgress| {
            chunk_bar.set_length(p.progress.chunks_total as u64);
            chunk_bar.set_position(p.progress.chunks_done as u64);
        })
        .build()
        .map_err(|e| e.to_string())?;

    let shown = std::cell::Cell::new(0);
    let pass = |title: &str, files: &[PathBuf]| -> Result<(), String> {
        println!("== {title}");
        bars.files.set_length(files.len() as u64);
        bars.files.set_position(0);
        for file in files {
            let outcome = pipeline.transcribe(file, "en").map_err(|e| e.to_string())?;
            bars.println(&describe(&outcome, Some(80)));
            bars.files.inc(1);
        }
        // The pipeline evaluates its rules after every file; show what reached the channel
        // during this pass.
        let delivered = notifier.notifications();
        for n in delivered.iter().skip(shown.replace(delivered.len())) {
            bars.println(&alert_line(n));
        }
        bars.println("");
        Ok(())
    };
    pass("pass 1: cold cache, every chunk goes to the engine", &files)?;
    pass(
        "pass 2: the same files again, served from the cache",
        &files,
    )?;

    // Change a few bytes in the middle of one file: only the chunk holding them is redone.
    edit_middle(&files[1])?;
    pass(
        "pass 3: lecture.wav edited in one place — only that chunk is transcribed again",
        &files[1..2],
    )?;

    let snapshot = dir.join(SNAPSHOT_FILE);
    let report = final_save(cache.save_snapshot(&snapshot), &snapshot)?;
    let restarted = Cache::builder()
        .max_bytes(256 * 1024 * 1024)
        .restore_from(&snapshot)
        .build()
        .map_err(|e| format!("cannot restore the snapshot: {e}"))?;
    println!(
        "== warm restart: snapshot of {} entries saved and restored into a new cache ({} entries)",
        report.entries,
        restarted.len()
    );
    let after_restart = Pipeline::builder(restarted, engine)
        .plan(ChunkPlan::with_chunk_bytes(DEMO_CHUNK_BYTES).map_err(|e| e.to_string())?)
        .build()
        .map_err(|e| e.to_string())?;
    let outcome = after_restart
        .transcribe(&files[0], "en")
        .map_err(|e| e.to_string())?;
    println!("{}\n", describe(&outcome, Some(80)));
    bars.finish();

    println!("== metrics (Prometheus text, excerpt)");
    let text = pipeline.registry().render_prometheus();
    for line in text.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("memocache_cache_hit")
                || l.starts_with("memocache_cache_misses")
                || l.starts_with("memocache_cache_entries")
                || l.starts_with("memocache_transcriptions_total")
                || l.starts_with("memocache_transcription_duration_seconds{")
                || l.starts_with("memocache_transcription_saved")
                || l.starts_with("memocache_job_latency_seconds{")
                || l.starts_with("memocache_jobs_finished_total"))
    }) {
        println!("  {line}");
    }
    println!(
        "\nalerts delivered to the `demo` channel: {}",
        notifier.notifications().len()
    );
    println!();
    print_summary(&pipeline.stats(), &report, &snapshot);
    println!(
        "time saved is the compute time of the runs whose results the cache served ({}).",
        fmt_duration(pipeline.stats().time_saved)
    );
    if !kept {
        println!(
            "the temporary directory is removed now; `memocache demo --dir DIR` keeps the WAV \
             files and the snapshot."
        );
    }
    Ok(())
}

/// The names of the audio files the demo generates.
const DEMO_FILES: [&str; 3] = ["interview.wav", "lecture.wav", "podcast.wav"];

/// Removes what an interrupted demo wrote in `dir`: the whole directory if the demo `created`
/// it, else its audio, its snapshot and a snapshot save's temporary file
/// (`.cache.snapshot.<pid>.<n>.tmp`); the lock file stays, as `check_demo_dir` allows it.
fn remove_demo_files(dir: &Path, created: bool) {
    if created {
        return remove_dir_all(dir);
    }
    for name in DEMO_FILES.into_iter().chain([SNAPSHOT_FILE]) {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let temp_prefix = format!(".{SNAPSHOT_FILE}.");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&temp_prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The demo writes `interview.wav`, `lecture.wav`, `podcast.wav` and `cache.snapshot`, and
/// edits `lecture.wav` in place: into a directory of the user's own files that would destroy
/// any of theirs with those names, so `--dir` must be new or empty — but for the lock file,
/// whose contents mean nothing (a run that was refused or killed there leaves it).
fn check_demo_dir(dir: &Path) -> Result<(), String> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A missing directory is created; anything else (a file, no permission) is reported
        // by the creation or the first write, with its cause.
        Err(_) => return Ok(()),
    };
    if entries.any(|entry| entry.map_or(true, |e| e.file_name() != LOCK_FILE)) {
        return Err(format!(
            "{} is not empty: the demo writes interview.wav, lecture.wav, podcast.wav, \
             cache.snapshot and cache.lock there, so give a new or empty directory",
            shown(dir)
        ));
    }
    Ok(())
}

fn alert_line(n: &Notification) -> String {
    let verb = match n.transition {
        AlertTransition::Firing => "FIRING",
        AlertTransition::Resolved => "resolved",
    };
    let value = n
        .value
        .map_or_else(|| "no data".to_owned(), |v| format!("{v:.3}"));
    format!(
        "  alert {verb}: {} ({:?}) — {} {} is {value}, threshold {}",
        n.rule_name, n.severity, n.aggregation, n.metric_name, n.threshold
    )
}

/// A deterministic mix of tones and noise, `seconds` long.
fn write_wav(path: &Path, seconds: u32, seed: u64) -> Result<(), String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let fail = |e: hound::Error| format!("cannot write {}: {e}", shown(path));
    let mut writer = hound::WavWriter::create(path, spec).map_err(fail)?;
    let mut noise = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for n in 0..seconds * RATE {
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let t = f64::from(n) / f64::from(RATE);
        let tone = (t * (220.0 + 40.0 * seed as f64) * std::f64::consts::TAU).sin();
        let jitter = (noise >> 53) as f64 / f64::from(1u32 << 11) - 0.5;
        let sample = (tone * 8_000.0 + jitter * 2_000.0) as i16;
        writer.write_sample(sample).map_err(fail)?;
    }
    writer.finalize().map_err(fail)
}

/// Overwrites a few samples in the middle of the file (one chunk's worth of change).
fn edit_middle(path: &Path) -> Result<(), String> {
    use std::io::{Seek, SeekFrom, Write};
    let fail = |e: std::io::Error| format!("cannot edit {}: {e}", shown(path));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(fail)?;
    let len = file.metadata().map_err(fail)?.len();
    file.seek(SeekFrom::Start(len / 2)).map_err(fail)?;
    file.write_all(&[0x55; 64]).map_err(fail)
}
