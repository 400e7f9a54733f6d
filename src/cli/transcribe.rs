//! `memocache transcribe`: files through the memoized transcription pipeline, with the cache
//! kept in a directory across runs (as a snapshot).
//!
//! Design choices:
//!
//! * **Typos fail before anything is touched.** The language, every input path (it must be a
//!   readable regular file), the chunk size and the engine command are checked first, then
//!   that the cache directory (and the one a snapshot that is a symbolic link leads to) can
//!   be written in and that no other run holds it (below); only then is the snapshot loaded.
//!   So a typo never creates a cache directory or rewrites a snapshot, and an unwritable
//!   directory is found before an hour of transcription, not when the snapshot is saved.
//!   Every unusable input is named in the one error line.
//! * **A run goes on past a failing file.** Each failure is listed with the results, the cache
//!   keeps what the other files produced, and the one error line counts the failures and
//!   gives the first.
//! * **The snapshot is saved as the run goes, and at its end.** A checkpoint thread saves it
//!   every `--checkpoint-secs` (30 s by default) while the cache has stored something new,
//!   so a run killed at 90 % keeps the files (and the chunks of the current file) it had
//!   finished by the last checkpoint; each save is atomic, so a kill during one leaves the
//!   previous snapshot whole. Ctrl-C (or SIGTERM, SIGHUP) saves what is finished and ends
//!   the run with status 130 (143, 129; a second one quits without saving). See
//!   [`super::checkpoint`].
//!   A standard output that goes away or fills up stops the run after the file whose line
//!   failed, and what is finished is saved before `main` reports it.
//! * **One run at a time per cache directory.** A run holds an exclusive advisory lock on
//!   the directory's lock file from before it loads the snapshot until after its last save;
//!   a second run is refused at once with one line, before it loads the snapshot or
//!   transcribes anything. On a filesystem without advisory locks the run goes on without
//!   the lock, with a warning. See [`super::lock`].

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use memocache::chunk::{ChunkPlan, ChunkSize};
use memocache::pipeline::{
    CommandTranscriber, FileProgress, Pipeline, PipelineError, PipelineStats, StandInTranscriber,
    Transcriber, TranscriptOutcome,
};
use memocache::{Cache, CacheKey, RetryConfig, SnapshotError, SnapshotReport};

use super::checkpoint::Checkpoints;
use super::lock::lock_dir;
use super::number::{self, Decimal, NumberError};
use super::{file_name, printable, shown};

/// The snapshot file inside a cache directory.
pub const SNAPSHOT_FILE: &str = "cache.snapshot";

/// Options of `memocache transcribe`.
#[derive(clap::Args)]
pub struct Options {
    /// The audio files (WAV files are cut on sample-frame boundaries).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The language, part of the transcript key (1–35 letters, digits, `-`, `_`).
    #[arg(long)]
    language: String,
    /// The speech engine, run once per chunk: `{chunk}` is replaced by the chunk file's path
    /// (`*.wav` for WAV input, `*.bin` for a byte range of any other format) and its stdout
    /// is the text. A chunk fails, and nothing is cached for it, if the engine exits with a
    /// status other than 0 or writes no text (see --allow-empty-text). Without it, a
    /// labelled stand-in engine runs.
    #[arg(long)]
    engine_cmd: Option<String>,
    /// Take an engine's empty output (exit status 0, no text) as the chunk's transcript and
    /// cache it: for an engine that prints nothing for silence. Without it, empty output
    /// fails the file, since a misconfigured engine often exits 0 writing nothing, and the
    /// empty text a run with it cached is not served either: the engine is asked again for
    /// those chunks (the others still come from the cache).
    #[arg(long, requires = "engine_cmd")]
    allow_empty_text: bool,
    /// Where the cache is kept between runs (default: $XDG_CACHE_HOME/memocache or
    /// ~/.cache/memocache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The cache's byte budget, a whole number of MiB (1024, 1e4).
    // Every value with a hyphen is let through to the parser (not only those clap takes for
    // numbers: `-1_0`, `-.5`, `-inf`): taken for an unknown option, `-1` got clap's tip to
    // write `-- -1`, which makes it an input file. The other numeric options do the same.
    #[arg(
        long,
        value_name = "MIB",
        default_value = "1024",
        value_parser = parse_mib,
        allow_hyphen_values = true
    )]
    cache_mb: u64,
    /// Chunk size, a whole number of MB of 1,048,576 bytes, as the seed counts them (10–25;
    /// default: chosen from the file size as the seed does).
    // The range is checked here, with `ChunkSize`'s bounds, so that a number too large for a
    // `u32` is told the range 10..=25 rather than the type's 0..=4294967295.
    #[arg(long, value_parser = parse_chunk_mb, allow_hyphen_values = true)]
    chunk_mb: Option<u32>,
    /// Save the cache at least this many seconds apart while the run stores new results, so
    /// a killed run keeps what it finished (fractions from 0.001 allowed, such as 0.5 or 5e-3;
    /// 0: only at the end).
    #[arg(
        long,
        value_name = "SECS",
        default_value = "30",
        value_parser = parse_seconds,
        allow_hyphen_values = true
    )]
    checkpoint_secs: Duration,
}

pub fn run(options: Options) -> Result<(), String> {
    // Everything the user typed is checked before the cache directory is touched, so a typo
    // (a misspelt file, a bad language or chunk size, an engine command without `{chunk}`)
    // is one error line and neither creates a cache directory nor rewrites its snapshot.
    CacheKey::transcript(&"0".repeat(64), &options.language).map_err(|e| e.to_string())?;
    // Every unusable input is named, not just the first: in `transcribe dir/*` over hundreds
    // of files, a few unreadable ones were found one run at a time.
    let unusable: Vec<(&PathBuf, String)> = options
        .files
        .iter()
        .filter_map(|file| check_input(file).err().map(|e| (file, e)))
        .collect();
    if let Some(((_, first), others)) = unusable.split_first() {
        if others.is_empty() {
            return Err(first.clone());
        }
        // A few names, so that the one line stays readable over a directory gone wrong.
        const NAMED: usize = 5;
        let mut names: Vec<String> = others
            .iter()
            .take(NAMED)
            .map(|(file, _)| shown(file))
            .collect();
        if others.len() > NAMED {
            names.push(format!("and {} more", others.len() - NAMED));
        }
        return Err(format!(
            "{first}; {} more inputs cannot be used either: {}",
            others.len(),
            names.join(", ")
        ));
    }
    let plan = match options.chunk_mb {
        Some(mb) => ChunkPlan::new(ChunkSize::new(mb).map_err(|e| e.to_string())?),
        None => ChunkPlan::default(),
    };
    let engine = options
        .engine_cmd
        .map(CommandTranscriber::new)
        .transpose()
        .map_err(|e| e.to_string())?
        .map(|engine| engine.allow_empty(options.allow_empty_text));

    let cache_dir = match options.cache_dir {
        Some(dir) => dir,
        None => default_cache_dir()?,
    };
    super::create_dir_all(&cache_dir).map_err(|e| {
        format!(
            "cannot create the cache directory {}: {e}",
            shown(&cache_dir)
        )
    })?;
    // The snapshot is written at checkpoints and at the end: a directory it cannot be written
    // in must fail now, not after files have been transcribed and the work would be lost.
    let writable = |dir: &Path| {
        tempfile::Builder::new()
            .prefix(".memocache-write-check")
            .tempfile_in(dir)
            .map(drop)
    };
    writable(&cache_dir).map_err(|e| {
        format!(
            "cannot write in the cache directory {}: {e}",
            shown(&cache_dir)
        )
    })?;
    let snapshot = cache_dir.join(SNAPSHOT_FILE);
    // A snapshot that is a symbolic link is saved where the link leads (as the library's
    // save does, for a target that exists): that directory is checked too. Only the cache
    // directory was, and a run whose link led into one it could not write in transcribed
    // everything, then failed to save any of it.
    let is_link = std::fs::symlink_metadata(&snapshot).is_ok_and(|m| m.file_type().is_symlink());
    if let Some(target_dir) = is_link
        .then(|| std::fs::canonicalize(&snapshot).ok())
        .flatten()
        .and_then(|target| target.parent().map(Path::to_path_buf))
    {
        writable(&target_dir).map_err(|e| {
            format!(
                "cannot write in {}, where the snapshot {} leads: {e}",
                shown(&target_dir),
                shown(&snapshot)
            )
        })?;
    }
    // Held to the end of `run`, after the last save: dropping it releases the lock.
    let _lock = lock_dir(&cache_dir, "--cache-dir")?;
    let cache = Cache::builder()
        // At most `MAX_CACHE_MB`: the shift loses no bits.
        .max_bytes(options.cache_mb << 20)
        .build()
        .map_err(|e| format!("cannot open the cache in {}: {e}", shown(&cache_dir)))?;
    restore(&cache, &snapshot, options.cache_mb)?;

    // The engine's chunk files go in a directory of the run's own, which outlives the
    // pipeline (declared before it) and which Ctrl-C removes: an engine still running then
    // leaves no file behind.
    let (engine, chunk_dir) = match engine {
        Some(engine) => {
            let dir = tempfile::Builder::new()
                .prefix("memocache-chunks-")
                .tempdir()
                .map_err(|e| format!("cannot create a directory for chunk files: {e}"))?;
            (Some(engine.chunk_dir(dir.path())), Some(dir))
        }
        None => (None, None),
    };
    let transcriber: Arc<dyn Transcriber> = match engine {
        Some(engine) => Arc::new(engine),
        None => {
            errln!(
                "note: no --engine-cmd given: using the built-in STAND-IN engine, which does not \
                 recognise speech"
            );
            Arc::new(StandInTranscriber::new(2))
        }
    };
    let bars = Bars::new(options.files.len());
    let chunk_bar = bars.chunks.clone();
    let pipeline = Pipeline::builder(cache.clone(), transcriber)
        .plan(plan)
        // One quick retry per chunk: an engine command that fails twice is reported, not
        // backed off for seconds.
        .retry(RetryConfig::fixed(1, Duration::from_millis(200)))
        .on_progress(move |p: &FileProgress| {
            chunk_bar.set_length(p.progress.chunks_total as u64);
            chunk_bar.set_position(p.progress.chunks_done as u64);
            chunk_bar.set_message(file_name(&p.path));
        })
        .build()
        .map_err(|e| e.to_string())?;

    let warn_bar = bars.files.clone();
    let checkpoints = Checkpoints::start(
        cache.clone(),
        snapshot.clone(),
        options.checkpoint_secs,
        move |line| warn_bar.suspend(|| errln!("{line}")),
    )?;
    checkpoints.save_on_interrupt(chunk_dir.as_ref().map(|dir| dir.path().to_path_buf()))?;
    let mut failures = Vec::new();
    // A panic here is, short of a bug, `println!` failing on a standard output that is gone
    // (`transcribe … | head`) or full; `main` reports it. It is caught so that the files
    // finished by then are saved first: it used to unwind past the final save, and a run
    // piped into `head -1` lost every transcript it had computed since the last checkpoint.
    let transcribed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        for file in &options.files {
            bars.files.set_message(file_name(file));
            match pipeline.transcribe(file, &options.language) {
                Ok(outcome) => bars.println(&describe(&outcome, None)),
                Err(e) => {
                    // Every failure is listed with the results, since the error line names
                    // only the first of several.
                    // The error quotes the engine's stderr, as it wrote it.
                    let error = printable(&file_error(&e));
                    bars.println(&format!("{}: FAILED: {error}", file_name(file)));
                    failures.push(error);
                }
            }
            bars.files.inc(1);
        }
    }));
    // Waits for a checkpoint in progress, so that the final save is the last rename.
    drop(checkpoints);
    bars.finish();
    let stats = pipeline.stats();
    drop(pipeline);
    let saved = final_save(cache.save_snapshot(&snapshot), &snapshot);
    if let Err(panic) = transcribed {
        if let Err(message) = &saved {
            errln!("memocache: error: {}", printable(message));
        }
        std::panic::resume_unwind(panic);
    }
    let report = saved?;
    // The summary counts the failed files too: it gave only the hits and misses of the files
    // served, so a run of 3 files with 2 failures ended on "hits 0  misses 1" and status 1.
    let files = options.files.len();
    println!(
        "\nfiles {files}  done {}  failed {}",
        files - failures.len(),
        failures.len()
    );
    print_summary(&stats, &report, &snapshot);
    match failures.len() {
        0 => Ok(()),
        1 if files == 1 => Err(failures.remove(0)),
        1 => Err(format!(
            "1 of {files} files failed (listed above): {}",
            failures.remove(0)
        )),
        n => Err(format!(
            "{n} of {files} files failed (each is listed above); the first: {}",
            failures.remove(0)
        )),
    }
}

/// A file's error, its path [`shown`]: the library's message displays it lossily, and two
/// names that differ only in bytes that are not UTF-8 read alike there.
fn file_error(error: &PipelineError) -> String {
    match error {
        PipelineError::Read { path, source } => format!("cannot read {}: {source}", shown(path)),
        PipelineError::Failed { path, message } => {
            format!("transcribing {} failed: {message}", shown(path))
        }
        PipelineError::Cancelled { path } => format!("transcribing {} was cancelled", shown(path)),
        other => other.to_string(),
    }
}

/// Loads the snapshot, if there is one, into the new `cache` of `cache_mb` MiB.
///
/// A snapshot that cannot be read stops the run, since its final save would replace it; the
/// error names the file and the way out, which the user was left to find (it named only the
/// directory). A budget smaller than the snapshot (`--cache-mb`) leaves entries out, and the
/// run's save then drops them from the file for good: that used to happen without a word.
fn restore(cache: &Cache, snapshot: &Path, cache_mb: u64) -> Result<(), String> {
    // The library reads a snapshot from a FIFO as it arrives, so a FIFO here made the run wait
    // forever for a writer; and the run's saves refuse to replace anything but a regular file,
    // so whatever else is there could only fail the run at its end.
    if let Ok(metadata) = std::fs::metadata(snapshot)
        && !metadata.is_file()
    {
        let what = if metadata.is_dir() {
            "is a directory"
        } else {
            "is not a regular file (a FIFO, socket or device)"
        };
        return Err(format!(
            "cannot restore the cache from {}: it {what}, where the run keeps its snapshot; \
             move it aside to start with an empty cache",
            shown(snapshot)
        ));
    }
    let report = match cache.load_snapshot(snapshot) {
        Ok(report) => report,
        Err(SnapshotError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(());
        }
        // An I/O error may pass (a file server back up); the file itself is not at fault.
        Err(e @ SnapshotError::Io { .. }) => {
            return Err(format!(
                "cannot restore the cache from {}: {e}",
                shown(snapshot)
            ));
        }
        // Not corrupt, perhaps: deleting it would lose the cache a newer build saved there.
        Err(e @ SnapshotError::UnsupportedVersion { .. }) => {
            return Err(format!(
                "cannot restore the cache from {}: {e}; a newer memocache may have written \
                 it: run that, or give another --cache-dir (deleting the file loses that cache)",
                shown(snapshot)
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot restore the cache from {}: {e}; move the file aside (or delete it) to \
                 start with an empty cache",
                shown(snapshot)
            ));
        }
    };
    if report.left_out > 0 {
        let note = format!(
            "note: --cache-mb {cache_mb} holds {} of the {} live entries in {} ({} of {} \
             bytes); the other {} are left out, and this run's save drops them from the file",
            report.restored,
            report.restored + report.left_out,
            shown(snapshot),
            report.restored_bytes,
            report.restored_bytes + report.left_out_bytes,
            report.left_out
        );
        errln!("{}", printable(&note));
    }
    Ok(())
}

/// What the run's last save means for the run: a report, or its error line. A save whose
/// file is in place but whose directory could not be synced ([`SnapshotError::NotDurable`];
/// some network and FUSE filesystems refuse to sync a directory) is a warning: it failed the
/// run as "cannot save the cache to …: snapshot saved, but …", status 1, on every run there,
/// though the file held everything, as checkpoints already took it.
pub fn final_save(
    saved: Result<SnapshotReport, SnapshotError>,
    snapshot: &Path,
) -> Result<SnapshotReport, String> {
    saved.or_else(|e| {
        let message = e.to_string();
        match e {
            SnapshotError::NotDurable { report, .. } => {
                errln!("warning: {}", printable(&message));
                Ok(report)
            }
            _ => Err(format!(
                "cannot save the cache to {}: {message}",
                shown(snapshot)
            )),
        }
    })
}

/// The shortest `--checkpoint-secs` other than 0. The interval runs from the end of one check
/// to the start of the next, so a microsecond made the checkpoint thread wake a million times
/// a second for the whole run; the tests checkpoint every millisecond or few.
const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(1);

/// `--checkpoint-secs`: 0 (save only at the end), or a number of seconds from
/// [`MIN_CHECKPOINT_INTERVAL`] up to the longest `Duration` (about 1.8e19 s), in the command's
/// grammar ([`number`]), exact to the nanosecond (digits past it are dropped, never a value
/// past 0 to 0: `1e-400` was taken as 0, "save only at the end"). A number past the longest
/// was taken as it; it is refused, naming the largest, as other options' are. `inf` is
/// refused rather than read as "never": that is what 0 means, and the message says so.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let refused = |e: NumberError| {
        format!(
            "{e} (expected a number of seconds, 0 or from {} up, such as 30 or 0.5; 0 saves \
             only at the end)",
            MIN_CHECKPOINT_INTERVAL.as_secs_f64()
        )
    };
    let secs: Decimal = text.parse().map_err(refused)?;
    if secs.is_negative() {
        return Err(refused(NumberError::Negative));
    }
    const NANOS: u128 = 1_000_000_000;
    let interval = secs
        .scaled(1, 9)
        .0
        .and_then(|nanos| {
            let whole = u64::try_from(nanos / NANOS).ok()?;
            // Below 10^9, so the cast keeps the value.
            Some(Duration::new(whole, (nanos % NANOS) as u32))
        })
        .ok_or_else(|| refused(NumberError::Above(Duration::MAX.as_secs().to_string())))?;
    if !secs.is_zero() && interval < MIN_CHECKPOINT_INTERVAL {
        return Err(refused(NumberError::Below(
            MIN_CHECKPOINT_INTERVAL.as_secs_f64().to_string(),
        )));
    }
    Ok(interval)
}

/// The largest `--cache-mb`: the budget in bytes is a `u64` (a larger number was taken as
/// `u64::MAX` MiB, and the bytes saturated).
const MAX_CACHE_MB: u64 = u64::MAX >> 20;

/// `--cache-mb`: a whole number of MiB from 1 to [`MAX_CACHE_MB`], in the command's grammar
/// ([`number`]). clap's ranged parser said "invalid digit found in string" for `-1` and "not
/// in 1..18446744073709551615" for `0`.
fn parse_mib(text: &str) -> Result<u64, String> {
    number::whole(text, 1, MAX_CACHE_MB)
        .map_err(|e| format!("{e} (expected a whole number of MiB from 1 up, such as 1024)"))
}

/// `--chunk-mb`: a whole number in [`ChunkSize`]'s range, in the command's grammar
/// ([`number`]). clap's ranged parser named the range only for a whole number: `25.5` or
/// `16MB` was "invalid digit found in string", and a number too large for a `u32` was told
/// the type's range, 0..=4294967295.
fn parse_chunk_mb(text: &str) -> Result<u32, String> {
    let (least, most) = (ChunkSize::MIN_MB, ChunkSize::MAX_MB);
    number::whole(text, least.into(), most.into())
        // In `ChunkSize`'s range, so the cast keeps the value.
        .map(|mb| mb as u32)
        .map_err(|e| format!("{e} (expected a whole number of MB in {least}..={most}, such as 16)"))
}

/// An input the pipeline cannot read: missing, unreadable, or not a regular file (a
/// directory, or a pipe or device, which the pipeline cannot seek in).
fn check_input(path: &Path) -> Result<(), String> {
    let cannot_read = |e: std::io::Error| format!("cannot read {}: {e}", shown(path));
    let metadata = std::fs::metadata(path).map_err(|e| {
        // `-` is standard input to `key` and `replay`; here it was "cannot read -: No such
        // file or directory", as if the input had gone missing. (A file named `-` is read.)
        if path.as_os_str() == "-" && e.kind() == std::io::ErrorKind::NotFound {
            "- (standard input) cannot be transcribed: the pipeline seeks in its inputs, so \
             save the stream to a file first"
                .to_owned()
        } else {
            cannot_read(e)
        }
    })?;
    if metadata.is_dir() {
        return Err(format!("{} is a directory, not an audio file", shown(path)));
    }
    if !metadata.is_file() {
        return Err(format!(
            "{} is not a regular file (a pipe or device): the pipeline seeks in its inputs, so \
             save the stream to a file first",
            shown(path)
        ));
    }
    std::fs::File::open(path).map_err(cannot_read)?;
    Ok(())
}

/// `$XDG_CACHE_HOME/memocache`, else `$HOME/.cache/memocache`.
fn default_cache_dir() -> Result<PathBuf, String> {
    // A relative value is ignored, as the XDG Base Directory specification requires: joined
    // as given, it put the cache under whatever directory each run was started in.
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(dir).join("memocache"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("memocache")),
        None => Err("no --cache-dir given, no absolute XDG_CACHE_HOME and no HOME".into()),
    }
}

/// Where a file's transcript came from and how long it took, then its text (cut to
/// `max_chars` characters if given).
pub fn describe(outcome: &TranscriptOutcome, max_chars: Option<usize>) -> String {
    let t = &outcome.transcript;
    let took = fmt_duration(outcome.elapsed);
    let source = if outcome.from_cache {
        format!("from cache in {took}")
    } else if t.chunks_computed == 0 {
        // The file's transcript was not cached but all its chunks were: no engine ran.
        match t.chunks {
            1 => format!("merged in {took} from its cached chunk (none transcribed)"),
            n => format!("merged in {took} from its {n} cached chunks (none transcribed)"),
        }
    } else if t.chunks == 1 {
        format!("computed in {took} (one chunk, transcribed)")
    } else if t.chunks_computed == t.chunks {
        format!("computed in {took} (all {} chunks transcribed)", t.chunks)
    } else {
        format!(
            "computed in {took} ({} of {} chunks transcribed, the others from the cache)",
            t.chunks_computed, t.chunks
        )
    };
    // The engine's text as it is cached, escaped only here: an engine is any command, and
    // what it prints reaches the user's terminal.
    let text = match max_chars {
        Some(max) if t.text.chars().count() > max => {
            format!(
                "{}…",
                printable(&t.text.chars().take(max).collect::<String>())
            )
        }
        // A blank line read as if the text had been lost.
        _ if t.text.is_empty() => "(no text)".to_owned(),
        _ => printable(&t.text),
    };
    format!("{}: {source}\n    {text}", file_name(&outcome.path))
}

/// The hits, misses, time saved and latencies, then where the cache was saved; the caller
/// prints the blank line before them, and the file counts where it has them.
pub fn print_summary(stats: &PipelineStats, report: &SnapshotReport, snapshot: &Path) {
    let [p50, p95, p99] = stats.latency_p50_p95_p99;
    println!(
        "hits {}  misses {}  time saved {}  latency p50 {} p95 {} p99 {}",
        stats.hits,
        stats.misses,
        fmt_duration(stats.time_saved),
        fmt_secs(p50),
        fmt_secs(p95),
        fmt_secs(p99),
    );
    println!(
        "cache saved to {} ({} entries, {} bytes)",
        shown(snapshot),
        report.entries,
        report.file_bytes
    );
}

pub fn fmt_duration(d: Duration) -> String {
    fmt_secs(d.as_secs_f64())
}

/// Seconds as `12.3 ms` below a second, `1.23 s` from there; `-` for NaN (no data).
pub fn fmt_secs(secs: f64) -> String {
    if secs.is_nan() {
        return "-".into();
    }
    if secs < 1.0 {
        let ms = format!("{:.1} ms", secs * 1000.0);
        // Just under a second (0.99996 s) rounds up to `1000.0 ms`: shown in seconds instead.
        if ms != "1000.0 ms" {
            return ms;
        }
    }
    format!("{secs:.2} s")
}

/// A bar for files and one for the chunks of the current file; drawn only on a terminal.
pub struct Bars {
    multi: MultiProgress,
    pub files: ProgressBar,
    pub chunks: ProgressBar,
}

impl Bars {
    pub fn new(files: usize) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>7} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let files = multi.add(ProgressBar::new(files as u64));
        files.set_style(style.clone());
        files.set_prefix("files");
        let chunks = multi.add(ProgressBar::new(0));
        chunks.set_style(style);
        chunks.set_prefix("chunks");
        Bars {
            multi,
            files,
            chunks,
        }
    }

    /// Prints a result line on stdout, with the bars lifted while it is written. Not
    /// `MultiProgress::println`: that writes to the bars' own target, stderr, whenever they
    /// are drawn, so with stderr on a terminal and stdout redirected (`transcribe … >
    /// out.txt`) the transcripts went to the screen and the file got only the summary.
    pub fn println(&self, line: &str) {
        use std::io::Write as _;
        // `suspend` holds the bars' lock while it runs the write: a `println!` panic there (a
        // closed stdout, which `main` recognises) would poison it, and dropping the bars would
        // then panic on it with a backtrace. So the write there is fallible, and a failure is
        // raised by `println!` after the lock is released.
        let written = self.multi.suspend(|| writeln!(std::io::stdout(), "{line}"));
        if written.is_err() {
            println!("{line}");
        }
    }

    pub fn finish(&self) {
        self.chunks.finish_and_clear();
        self.files.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole-file transcript missing from the cache while its chunks are there (another
    /// engine's transcript replaced, or left out by a smaller `--cache-mb`) is merged from
    /// them with no engine run. One chunk said "(one chunk, transcribed)", and several
    /// "(0 of 3 chunks transcribed, the others from the cache)".
    #[test]
    fn a_transcript_merged_from_cached_chunks_does_not_claim_a_transcription() {
        let outcome = |chunks, chunks_computed| TranscriptOutcome {
            path: PathBuf::from("/audio/a.wav"),
            key: CacheKey::transcript(&"0".repeat(64), "en").expect("key"),
            transcript: memocache::pipeline::Transcript {
                language: "en".into(),
                text: "words".into(),
                segments: Vec::new(),
                engine: "stand-in".into(),
                chunks,
                chunks_computed,
                empty_chunks: 0,
                compute_time: Duration::from_millis(5),
                timing: memocache::chunk::Timing::Headers,
            },
            from_cache: false,
            elapsed: Duration::from_millis(2),
        };
        let first_line = |chunks, computed| {
            let text = describe(&outcome(chunks, computed), None);
            text.lines().next().expect("a line").to_owned()
        };
        assert_eq!(
            first_line(1, 0),
            "a.wav: merged in 2.0 ms from its cached chunk (none transcribed)"
        );
        assert_eq!(
            first_line(3, 0),
            "a.wav: merged in 2.0 ms from its 3 cached chunks (none transcribed)"
        );
        assert_eq!(
            first_line(1, 1),
            "a.wav: computed in 2.0 ms (one chunk, transcribed)"
        );
        assert_eq!(
            first_line(3, 3),
            "a.wav: computed in 2.0 ms (all 3 chunks transcribed)"
        );
        assert_eq!(
            first_line(3, 1),
            "a.wav: computed in 2.0 ms (1 of 3 chunks transcribed, the others from the cache)"
        );
    }

    #[test]
    fn a_final_save_that_is_only_not_durable_does_not_fail_the_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let snapshot = dir.path().join(SNAPSHOT_FILE);
        let cache = Cache::builder().max_bytes(1 << 20).build().expect("cache");
        let key = CacheKey::from_content(b"audio", "content").expect("key");
        cache.insert(key, &b"text"[..]).expect("insert");
        let report = cache.save_snapshot(&snapshot).expect("saved");
        let not_durable = SnapshotError::NotDurable {
            dir: dir.path().to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            report,
        };
        assert_eq!(final_save(Err(not_durable), &snapshot), Ok(report));
        let failed = SnapshotError::Truncated { at: 7 };
        let line = final_save(Err(failed), &snapshot).expect_err("a failed save");
        assert!(line.starts_with("cannot save the cache to "), "{line}");
    }

    #[test]
    fn checkpoint_seconds_are_finite_and_not_negative() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("5e-3"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        // Negative zero is zero: save only at the end.
        assert_eq!(parse_seconds("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_seconds("-0.0"), Ok(Duration::ZERO));
        // Blanks around the number, as a quoted shell argument may carry, are ignored.
        assert_eq!(parse_seconds(" 5 "), Ok(Duration::from_secs(5)));
        // Exact to the nanosecond, digits past it dropped.
        assert_eq!(parse_seconds("1.0000000019"), Ok(Duration::new(1, 1)));
        let said = |text| parse_seconds(text).expect_err(text);
        for negative in ["-1", "-1e-300"] {
            assert!(
                said(negative).starts_with("a negative number ("),
                "{negative}"
            );
        }
        for infinite in ["inf", "infinity", "+inf", "-inf", "NaN", "nan"] {
            let err = said(infinite);
            assert!(
                err.starts_with("not a finite number ("),
                "{infinite}: {err}"
            );
            assert!(err.contains("0 saves only at the end"), "{infinite}: {err}");
        }
        for (not_a_number, problem) in [
            ("30s", "'s' is not part of a number"),
            ("", "no number given"),
            ("thirty", "'t' is not part of a number"),
            ("0x10", "'x' is not part of a number"),
        ] {
            let err = said(not_a_number);
            assert!(
                err.starts_with(&format!("{problem} (expected a number of seconds,")),
                "{not_a_number}: {err}"
            );
        }
    }

    /// A finite number past the longest `Duration` was taken as the longest, a figure
    /// nobody gave: it is refused, naming the largest.
    #[test]
    fn a_checkpoint_interval_past_the_longest_duration_is_refused() {
        for huge in [
            "1e20",
            "1e30",
            "18446744073709551616",
            "1.7976931348623157e308",
            "1e400",
        ] {
            let err = parse_seconds(huge).expect_err(huge);
            assert!(
                err.starts_with("more than 18446744073709551615 ("),
                "{huge}: {err}"
            );
        }
        assert_eq!(
            parse_seconds("1e19"),
            Ok(Duration::from_secs(10_000_000_000_000_000_000))
        );
        assert_eq!(
            parse_seconds("18446744073709551615.999999999"),
            Ok(Duration::MAX)
        );
    }

    #[test]
    fn durations_just_under_a_second_do_not_print_as_1000_ms() {
        assert_eq!(fmt_secs(0.0123), "12.3 ms");
        assert_eq!(fmt_secs(0.99994), "999.9 ms");
        assert_eq!(fmt_secs(0.99996), "1.00 s");
        assert_eq!(fmt_secs(1.5), "1.50 s");
        assert_eq!(fmt_secs(f64::NAN), "-");
    }

    #[test]
    fn cache_sizes_are_whole_mib_from_one_up() {
        assert_eq!(parse_mib("1024"), Ok(1024));
        assert_eq!(parse_mib("1"), Ok(1));
        assert_eq!(parse_mib("1e3"), Ok(1000));
        assert_eq!(parse_mib("17592186044415"), Ok(MAX_CACHE_MB));
        for bad in ["0", "-1", "1.5", "", "abc", "1_024", "1GiB"] {
            let err = parse_mib(bad).expect_err(bad);
            assert!(err.contains("from 1 up"), "{bad}: {err}");
        }
    }

    /// `--cache-mb 99999999999999999999` was taken as `u64::MAX` MiB, and every number from
    /// 2^44 up gave a budget of `u64::MAX` bytes: the bytes saturated, silently.
    #[test]
    fn a_cache_size_whose_bytes_overflow_is_refused() {
        for huge in ["17592186044416", "99999999999999999999", "1e20"] {
            let err = parse_mib(huge).expect_err(huge);
            assert!(
                err.starts_with("more than 17592186044415 ("),
                "{huge}: {err}"
            );
        }
    }

    #[test]
    fn chunk_sizes_are_whole_mb_in_the_seeds_range() {
        assert_eq!(parse_chunk_mb("16"), Ok(16));
        assert_eq!(parse_chunk_mb("1.6e1"), Ok(16));
        assert_eq!(parse_chunk_mb("25.0"), Ok(25));
        for (bad, problem) in [
            ("9", "less than 10"),
            ("26", "more than 25"),
            ("99999999999", "more than 25"),
            ("-5", "a negative number"),
            ("25.5", "not a whole number"),
            ("16MB", "'M' is not part of a number"),
        ] {
            assert_eq!(
                parse_chunk_mb(bad),
                Err(format!(
                    "{problem} (expected a whole number of MB in 10..=25, such as 16)"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_checkpoint_interval_shorter_than_the_minimum_is_refused() {
        assert_eq!(parse_seconds("0.001"), Ok(MIN_CHECKPOINT_INTERVAL));
        // `1e-400` and `5e-999` are below the smallest `f64`, and parse as 0: they were
        // taken as 0, "save only at the end".
        for too_short in ["1e-6", "0.0009", "1e-300", "1e-400", " 5E-999 "] {
            let err = parse_seconds(too_short).expect_err(too_short);
            assert!(err.starts_with("less than 0.001 ("), "{too_short}: {err}");
        }
    }
}
