//! [`ChunkedProcessor`]: split an input, run a chunk function on up to
//! [`ConcurrencyLimit`] chunks at once, memoize every chunk and the whole file.
//!
//! # Design
//!
//! * **One or two streaming passes.** Pass one hashes the whole input (SHA-256, constant
//!   memory) to derive the transcript key; a whole-file hit returns at once without splitting.
//!   Pass two splits the input with [`split`](super::split()) and feeds chunks to the
//!   workers. Both passes read from the start of a `Read + Seek` input, so a file path or any
//!   seekable reader works, and the input is never held whole: at most
//!   `2 × concurrency + 1` chunks are in memory (one being read, `concurrency` queued in a
//!   bounded channel, `concurrency` being processed).
//! * **Chunk buffers are kept.** A chunk is read into a buffer that comes back when the last
//!   handle to its bytes is dropped (see [`split`](mod@super::split)), and the processor keeps
//!   `2 × concurrency + 1` spare buffers across runs — as many as a run holds chunks at
//!   once — shared by its clones, so that the next run reads into the last one's buffers
//!   instead of having fresh memory mapped and faulted in for each chunk of up to 25 MB (the
//!   README's chunked-processing section counts the page faults). The price is memory held
//!   between runs: what a run held at its peak, up to `(2 × concurrency + 1) × chunk size`,
//!   225 MB at the default concurrency of 4 and the seed's 25 MB chunks. Runs on clones at
//!   the same time share the buffers, and the processor keeps as many as the most runs it
//!   has had at once hold (up to that much for each): with room for one run's, the others'
//!   were freed at their end and mapped anew by the next runs.
//!   [`ChunkedProcessorBuilder::keep_chunk_buffers`]`(false)` has each run free its buffers
//!   when it ends instead. Bytes a chunk function keeps are never read over: their buffer is
//!   not back until the last of them is dropped. Meanwhile they hold all of it, which is at
//!   most twice their chunk's size: a short chunk is not read into a full chunk's buffer.
//! * **Pass one is the serial part.** SHA-256 is sequential, so no number of workers shortens
//!   it, and on a CPU without SHA-NI it costs about as much as a light chunk function: by
//!   Amdahl's law it caps the speed-up of the whole run. A caller that already knows the
//!   input's hash — a Transcription job is named by it — passes it with
//!   [`RunOptions::file_hash`] and the run goes straight to pass two. A caller that memoizes
//!   the whole result itself (the [pipeline](crate::pipeline) stores the job's result under
//!   the transcript key) turns the processor's own whole-file memo off with
//!   [`RunOptions::skip_whole_file_memo`], so the key does not hold two kinds of record.
//! * **Workers.** `min(concurrency, chunks)` scoped threads pull chunks from the bounded channel;
//!   the splitting thread blocks when they are all busy, so reading is paced by processing.
//!   Results land in a slot per chunk index, so the output is in chunk order whatever the
//!   completion order.
//! * **Per-chunk memoization.** A chunk's key is `CacheKey::builder("chunk").part(sha256(chunk
//!   bytes)).part(identity).part(language)`: the content digest (`CacheKey::from_content(bytes,
//!   "chunk")`), the processor identity (model/version) and the language. The language is added
//!   to the issue's recipe because a chunk transcribed as French is not the English result. A
//!   byte-split chunk ([`ChunkKind::Bytes`]) adds `.part("bytes").part(duration)`: its
//!   [`ChunkInfo::duration`] in nanoseconds (16 bytes, little-endian), or an empty part when it
//!   has none. A WAV chunk's bytes hold its header, whose rate gives its duration, but a byte
//!   range's duration comes from the plan's [`ChunkPlan::byte_rate`]; without it in the key, a
//!   run at one byte rate was served the segments another rate had timed (and a run without a
//!   rate, segments it could not have made). It also keeps a byte range apart from a WAV chunk
//!   of the same bytes, which an engine may read another way (a
//!   [`CommandTranscriber`](crate::pipeline::CommandTranscriber) names their files `.bin` and
//!   `.wav`). Byte-split chunks stored before this part was added (session 26) are under keys
//!   no run derives now: they are misses, recomputed once, and age out of the cache. Workers
//!   look the key up before calling the chunk function and store each new result at once, so a
//!   run that fails or is cancelled keeps everything it finished and the next run resumes from
//!   there. Results are encoded with the crate codec; a stored value that does not decode is
//!   recomputed and overwritten. A result the cache refuses (larger than its budget) is still
//!   returned and counted in [`ProcessOutput::not_memoized`]. Each attempt is a load through
//!   the cache's coalescing loader ([`Cache::try_get_or_insert_with`]), so a worker that meets
//!   a chunk another worker or another run is computing at that moment (two requests for copies
//!   of a recording, an edited copy beside its original, stretches of digital silence) waits
//!   for that result instead of calling the chunk function too, and counts the chunk as found
//!   in the cache. A failed attempt is not shared: the waiting worker makes its own, since the
//!   error belongs to the other run's chunk function (its engine, its cancelled request). A
//!   wait lasts as long as the other attempt, which the waiting run's cancellation does not cut
//!   short. A run told to [`refuse_empty_text`](RunOptions::refuse_empty_text) is served no
//!   stored result without text, in a chunk or a whole-file record (which counts its chunks
//!   without): such a chunk is computed again and its result replaces the stored one. The key
//!   is the chunk's *content*: the chunk function must give a result that depends on the
//!   chunk's bytes, [`ChunkInfo::kind`] and [`ChunkInfo::duration`] (and the identity and
//!   language) only, not on where the chunk sits (its index, offsets, start time or overlap) —
//!   identical chunks share one entry wherever they sit. Results are relative to the chunk;
//!   placing them on the input's timeline is the merge step's job ([`merge_transcripts`]).
//! * **Whole-file memoization.** The merged result is stored under
//!   [`CacheKey::transcript`]`(sha256(file), language)`, the key the host uses for a file's
//!   transcript. That key has no model identity in it (it is the seed's `from_parts`), so the
//!   stored record carries the identity and a record from another identity counts as a miss
//!   and is overwritten. So, for byte-split input, does a record whose segments another byte
//!   rate timed: the record says what timed them (the chunks' headers, or the plan's
//!   [`ChunkPlan::byte_rate`]). A record stored before it said so (session 26) does not
//!   decode, and counts as a miss. The merge step is not part of any key: a caller who
//!   changes how chunks are merged should change the identity too.
//! * **A file that changes under the run.** The whole-file key names the bytes of pass one;
//!   the result is made from the bytes of pass two. A file rewritten in place between the
//!   passes (or during either) would have its new bytes' result stored under its old bytes'
//!   key, and the next request for the old bytes served it. So
//!   [`process_path`](ChunkedProcessor::process_path) takes the open file's fingerprint
//!   (`Fingerprint`: length and modification time, as the pipeline does for its jobs) before
//!   pass one and compares it just before it stores the whole-file record: on a mismatch it
//!   stores none and fails with [`ProcessError::Changed`]. So it does when the split fails on
//!   a file that changed length under it, which the splitter sees as truncated or as longer
//!   than its length ([`SplitError::LongerThanGiven`]). Chunk results stay: each is keyed by
//!   the bytes it was made from, so a rerun costs only what changed. (With a
//!   [`RunOptions::file_hash`] the check covers the run, from opening the file to the store;
//!   the time before is the caller's.) The open file is checked, not the path: a file
//!   *replaced* by a rename is not the one the run reads, whose bytes stay consistent. A bare
//!   reader has no such witness: [`process_reader`](ChunkedProcessor::process_reader) trusts
//!   it to hold still, and a caller whose reader may change passes
//!   [`RunOptions::file_hash`] of the bytes it means or turns the whole-file memo off
//!   ([`RunOptions::skip_whole_file_memo`]).
//! * **Retries.** A chunk whose function fails is retried up to `RetryConfig::max_retries`
//!   times, after `RetryConfig::retry_delay(retry)` (the seed's `calculate_delay`, with the
//!   jobs layer's optional jitter, exactly as the job queue waits), through the [`ProcessingTask`]
//!   state machine (`Processing → Failed → Pending → Processing`). A wait ends when the cache's
//!   clock reaches its deadline, checked at least every 10 ms, so with a `ManualClock` a test moves
//!   past a one-hour backoff by advancing the clock (and a wait lasts until it does). Waits are
//!   interruptible: another chunk's failure ends them at once, cancellation within 10 ms.
//! * **Failure.** A chunk that exhausts its retries stops the run: no new chunk starts, queued
//!   chunks are dropped, in-flight ones finish (and are memoized), and the error names the
//!   chunk index, the attempts and the cause.
//! * **Panics.** A chunk function (or progress callback) that panics stops the run the same
//!   way — chunks finished before it stay memoized — and once the other workers have returned,
//!   the panic is resumed on the caller's thread with its own payload (even if another chunk
//!   failed first), so the caller (or the job pool, which reports a handler's panic message)
//!   sees the original message rather than the generic "a scoped thread panicked" a worker
//!   thread's death would give.
//! * **Cancellation.** [`CancelToken::cancel`] stops scheduling, drops queued chunks and
//!   interrupts retry waits and the whole-file hashing pass (between two reads of the input);
//!   the run returns as soon as the chunk functions already running return. The chunk
//!   function is opaque and cannot be interrupted: one that runs long should check a clone of
//!   the token itself.
//! * **Progress.** After each chunk a worker updates the counters and calls the callback under
//!   one lock, so the callback sees a non-decreasing sequence ending with
//!   [`Progress::fraction`] exactly `1.0` (done == total), and must be quick. Elapsed time and
//!   the ETA are read from the cache's [`Clock`](crate::Clock), so a `ManualClock` drives them
//!   in tests. The elapsed time never decreases either: each report's is at least the last
//!   one's, since readings of the clock on two workers' cores need not come in order. The ETA
//!   extrapolates bytes per second so far, which cached chunks make optimistic.

use std::any::Any;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use super::size::ChunkPlan;
use super::split::{ChunkBuffers, SplitError, split_into};
use super::task::{
    AudioChunk, ChunkInfo, ChunkKind, ChunkResult, InvalidTaskTransition, ProcessingId,
    ProcessingTask, Segment,
};
use crate::cache::{Cache, LoadError};
use crate::codec;
use crate::job::{ConcurrencyLimit, RetryConfig};
use crate::key::{CacheKey, KeyError};
use crate::time::{SharedClock, Timestamp, timing_clock};

/// The longest a retry wait goes without looking at the clock and the caller's
/// [`CancelToken`].
const POLL: Duration = Duration::from_millis(10);

/// A handle to cancel a run; clones share the state.
///
/// ```
/// use memocache::chunk::CancelToken;
/// let token = CancelToken::new();
/// let other = token.clone();
/// other.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels every run holding the token; waits on it end at once.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
        let _guard = self.inner.lock.lock();
        self.inner.wake.notify_all();
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` or until cancelled; returns whether it was cancelled.
    fn wait_timeout(&self, timeout: Duration) -> bool {
        let mut guard = self.inner.lock.lock();
        if !self.is_cancelled() {
            self.inner
                .wake
                .wait_while_for(&mut guard, |_| !self.is_cancelled(), timeout);
        }
        self.is_cancelled()
    }
}

/// Where a run stands; passed to the progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Chunks finished (computed or found in the cache).
    pub chunks_done: usize,
    /// Chunks in the input.
    pub chunks_total: usize,
    /// Of the finished chunks, those found in the cache.
    pub chunks_cached: usize,
    /// Input audio bytes covered by finished chunks (overlap counted once).
    pub bytes_done: u64,
    /// The input's audio bytes.
    pub bytes_total: u64,
    /// Time since the run started, on the cache's clock (or the finer one it names for
    /// timing: [`crate::Clock::for_timing`]).
    pub elapsed: Duration,
    /// Estimated time to the end: the remaining bytes at the rate so far; `None` before the
    /// first chunk finishes.
    pub eta: Option<Duration>,
}

impl Progress {
    /// `chunks_done / chunks_total`, exactly `1.0` once every chunk is done (or if there are
    /// none).
    pub fn fraction(&self) -> f64 {
        if self.chunks_done >= self.chunks_total {
            1.0
        } else {
            self.chunks_done as f64 / self.chunks_total as f64
        }
    }
}

/// One chunk's outcome in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Where the chunk lies in the input.
    pub info: ChunkInfo,
    /// Its result.
    pub result: ChunkResult,
    /// Found in the cache (or loaded by another run at the same time), so the chunk function
    /// did not give this result.
    pub from_cache: bool,
    /// Calls of the chunk function: 1 + retries when computed; 0 when cached, unless calls
    /// failed before another run stored the result this run then found. Saturates at
    /// `u32::MAX`.
    pub attempts: u32,
}

/// What a successful run returns.
#[derive(Clone, Debug)]
pub struct ProcessOutput {
    /// The merged result for the whole input.
    pub result: ChunkResult,
    /// What timed its segments (on a whole-file hit, what the record says timed them).
    pub timing: Timing,
    /// Every chunk's outcome, in chunk order; empty on a whole-file hit.
    pub chunks: Vec<ChunkOutcome>,
    /// The whole-file key ([`CacheKey::transcript`] of the input's SHA-256 and the language);
    /// `None` when the run was told to [skip](RunOptions::skip_whole_file_memo) it.
    pub file_key: Option<CacheKey>,
    /// The whole result came from the cache; nothing was split or computed.
    pub whole_file_hit: bool,
    /// Chunks whose function ran.
    pub computed: usize,
    /// Chunks found in the cache.
    pub cached: usize,
    /// Retries over all chunks, saturating at `u32::MAX`.
    pub retries: u32,
    /// Results (chunk or whole-file) that the cache refused to store.
    pub not_memoized: usize,
}

/// Why a run produced no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError<E> {
    /// The input file could not be opened, or is not a regular file
    /// ([`ChunkedProcessor::process_path`]).
    #[error("opening {path} failed: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading or seeking the input failed.
    #[error("reading the input failed: {0}")]
    Io(#[from] io::Error),
    /// Hashing the input or deriving a key failed.
    #[error("deriving a cache key failed: {0}")]
    Key(#[from] KeyError),
    /// The file's length or modification time changed while it was processed, so the
    /// result may not be the transcript of the bytes its whole-file key names: no whole-file
    /// record was stored. Chunk results, keyed by their own bytes, stay cached.
    #[error("{path} changed while it was being processed; no whole-file result was stored for it")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The input could not be split.
    #[error("splitting the input failed: {0}")]
    Split(#[from] SplitError),
    /// A chunk failed on every attempt. Chunks finished before the run stopped stay cached.
    #[error("chunk {index} failed after {attempts} attempt(s): {cause}")]
    Chunk {
        /// The chunk's index.
        index: usize,
        /// Calls of the chunk function (1 + retries), saturating at `u32::MAX`.
        attempts: u32,
        /// The last error the chunk function returned.
        cause: E,
    },
    /// The run was cancelled. Chunks finished before it stopped stay cached.
    #[error("cancelled after {completed} of {total} chunks")]
    Cancelled {
        /// Chunks finished.
        completed: usize,
        /// Chunks in the input (0 if cancelled before splitting).
        total: usize,
    },
    /// A task state transition was refused: a bug in this module.
    #[error("internal error: {0}")]
    Task(#[from] InvalidTaskTransition),
    /// A chunk left no outcome without any error: a bug in this module.
    #[error("internal error: chunk {index} produced no outcome")]
    Incomplete {
        /// The chunk's index.
        index: usize,
    },
}

/// Why a [`ChunkedProcessor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorConfigError {
    /// The processor identity is empty.
    #[error("the processor identity (model/version) must not be empty")]
    EmptyIdentity,
    /// The language is not usable in a transcript key.
    #[error("invalid language: {0}")]
    Language(#[source] KeyError),
}

/// The merge step: chunk outcomes in order to one result.
pub type MergeFn<'a> = dyn Fn(&[ChunkOutcome]) -> ChunkResult + 'a;

/// The progress callback.
pub type ProgressFn<'a> = dyn Fn(&Progress) + Send + Sync + 'a;

/// Per-run options: progress callback, cancellation, merge step, whole-file memo.
#[derive(Default)]
pub struct RunOptions<'a> {
    progress: Option<Box<ProgressFn<'a>>>,
    cancel: Option<CancelToken>,
    merge: Option<Box<MergeFn<'a>>>,
    file_hash: Option<String>,
    skip_whole_file_memo: bool,
    refuse_empty_text: bool,
}

impl<'a> RunOptions<'a> {
    /// No callback, no cancellation, the default merge ([`merge_transcripts`]).
    pub fn new() -> RunOptions<'a> {
        RunOptions::default()
    }

    /// Calls `callback` once at the start and after every chunk (see the module docs).
    #[must_use]
    pub fn on_progress(mut self, callback: impl Fn(&Progress) + Send + Sync + 'a) -> Self {
        self.progress = Some(Box::new(callback));
        self
    }

    /// Stops the run when `token` is cancelled.
    #[must_use]
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Merges the chunk outcomes with `merge` instead of [`merge_transcripts`].
    #[must_use]
    pub fn merge(mut self, merge: impl Fn(&[ChunkOutcome]) -> ChunkResult + 'a) -> Self {
        self.merge = Some(Box::new(merge));
        self
    }

    /// Uses `file_hash` (the input's SHA-256, hex) for the whole-file key instead of hashing
    /// the input: the run skips its serial hashing pass. The caller vouches for the hash; a
    /// wrong one files the result under another file's key. A hash that is not usable in a
    /// key fails the run with [`ProcessError::Key`].
    #[must_use]
    pub fn file_hash(mut self, file_hash: impl Into<String>) -> Self {
        self.file_hash = Some(file_hash.into());
        self
    }

    /// Neither looks up nor stores the whole-file result, and so does not hash the input:
    /// for a caller that memoizes the whole result under the transcript key itself. Chunks are
    /// still memoized; [`ProcessOutput::file_key`] is `None`.
    #[must_use]
    pub fn skip_whole_file_memo(mut self) -> Self {
        self.skip_whole_file_memo = true;
        self
    }

    /// Serves no result without text ([`ChunkResult::has_text`]) from the cache: such a
    /// chunk's function is called again (and its new result replaces the stored one), and a
    /// whole-file record with such a chunk in it is a miss. For a chunk function that fails
    /// on empty text (a [`CommandTranscriber`](crate::pipeline::CommandTranscriber) without
    /// `allow_empty`) over a cache that a run taking empty text filled: the keys do not tell
    /// the two runs apart, and it was served the empty text that it refuses from its engine.
    /// What the function itself returns is taken as it is.
    #[must_use]
    pub fn refuse_empty_text(mut self) -> Self {
        self.refuse_empty_text = true;
        self
    }
}

impl fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel)
            .field("merge", &self.merge.is_some())
            .field("file_hash", &self.file_hash)
            .field("skip_whole_file_memo", &self.skip_whole_file_memo)
            .field("refuse_empty_text", &self.refuse_empty_text)
            .finish()
    }
}

/// The default merge: texts joined with a space (empty ones skipped); segments shifted by their
/// chunk's start time, without those that lie wholly in the overlap with the previous chunk
/// (that chunk already has them). Text in an overlap is *not* de-duplicated: only segments carry
/// the timing needed for that. A shifted time beyond [`Duration::MAX`] saturates there.
pub fn merge_transcripts(chunks: &[ChunkOutcome]) -> ChunkResult {
    let mut merged = ChunkResult::default();
    for chunk in chunks {
        let text = chunk.result.text.trim();
        if !text.is_empty() {
            if !merged.text.is_empty() {
                merged.text.push(' ');
            }
            merged.text.push_str(text);
        }
        let offset = chunk.info.start_time.unwrap_or_default();
        let overlap = chunk.info.overlap.unwrap_or_default();
        merged.segments.extend(
            chunk
                .result
                .segments
                .iter()
                .filter(|s| s.end > overlap || overlap.is_zero())
                // Saturating: segment times come from the chunk function or from a stored
                // result (a restored snapshot), and a time past `Duration::MAX` must not panic.
                .map(|s| Segment {
                    start: offset.saturating_add(s.start),
                    end: offset.saturating_add(s.end),
                    text: s.text.clone(),
                }),
        );
    }
    merged
}

/// A file's length and modification time: a cheap witness that its bytes are still the ones
/// that were hashed for its key. Hashing the file again would be exact but costs the serial
/// pass that a caller with a known hash is spared; a rewrite that keeps the length within the
/// file system's timestamp granularity goes unseen. Shared with the
/// [pipeline](crate::pipeline), whose job payload carries it (hence serde).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint {
    len: u64,
    /// Since the Unix epoch; `None` where the platform keeps no modification time.
    modified: Option<Duration>,
}

impl Fingerprint {
    /// The fingerprint of the file `metadata` describes.
    pub(crate) fn of(metadata: &std::fs::Metadata) -> Fingerprint {
        Fingerprint {
            len: metadata.len(),
            modified: metadata
                .modified()
                .ok()
                .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok()),
        }
    }
}

/// Refuses what is not a regular file. A run reads its input twice (to hash it for the key,
/// then to cut it into chunks), and a pipe or a device cannot be read twice: a FIFO's open
/// waited for a writer, perhaps forever, and with one its bytes went to the hashing; a
/// directory opened and then failed as a key that could not be derived, naming no path.
fn regular_file(metadata: &std::fs::Metadata) -> io::Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "not a regular file (a directory, pipe or device): the input is read twice, to hash \
         it and to cut it into chunks",
    ))
}

/// Opens `path` for reading if it names a regular file (see [`regular_file`]), with the
/// file's metadata as opened. Checked on the name first, so that a directory or a device is
/// refused without being opened; then on what was opened (see [`open_checked`]), since the
/// name may lead elsewhere by then. Shared with the [pipeline](crate::pipeline), which opens
/// its requests' paths the same way before its jobs reach
/// [`ChunkedProcessor::process_path`].
pub(crate) fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    regular_file(&std::fs::metadata(path)?)?;
    open_checked(path)
}

/// Opens `path` for reading without waiting, and refuses what is not a regular file. The
/// open does not wait (`O_NONBLOCK`, on Linux): a FIFO put in the file's place after the
/// name was checked (a link turned, a file renamed over) was opened as a FIFO, and the open
/// waited for a writer, perhaps forever, before the check on the handle could refuse it. A
/// regular file's reads ignore the flag.
fn open_checked(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        rustix::fs::OFlags::NONBLOCK.bits().cast_signed(),
    );
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    regular_file(&metadata)?;
    Ok((file, metadata))
}

/// What `process_path` checks before it stores a whole-file record: the file it opened, as it
/// was before the hash pass.
struct Unchanged<'a> {
    path: &'a Path,
    file: &'a File,
    before: Fingerprint,
}

impl Unchanged<'_> {
    fn check<E>(&self) -> Result<(), ProcessError<E>> {
        let now = self.file.metadata()?;
        if Fingerprint::of(&now) == self.before {
            Ok(())
        } else {
            Err(ProcessError::Changed {
                path: self.path.to_owned(),
            })
        }
    }
}

/// A reader that fails once `cancelled` says so, so that a hashing pass stops between reads.
struct Watched<'a, R, C> {
    reader: &'a mut R,
    cancelled: &'a C,
}

impl<R: Read, C: Fn() -> bool> Read for Watched<'_, R, C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.cancelled)() {
            // Not `Interrupted`, which readers retry.
            return Err(io::Error::other("the run was cancelled"));
        }
        self.reader.read(buf)
    }
}

/// What is stored under the whole-file key.
#[derive(Serialize, Deserialize)]
struct WholeFileRecord {
    identity: String,
    /// What timed the segments: a run whose plan would time them otherwise takes no record.
    timing: Timing,
    total_chunks: u64,
    /// Chunks whose result has no text: a run that [refuses](RunOptions::refuse_empty_text)
    /// them takes the record only if there are none.
    empty_chunks: u64,
    bytes_total: u64,
    result: ChunkResult,
}

/// What timed a run's segments, which a key made of the input's bytes does not say: the
/// whole-file record stores it, and so does the [pipeline](crate::pipeline)'s transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timing {
    /// The chunks' WAV headers, made from the input's bytes: any plan times them alike.
    Headers,
    /// The plan's [`ChunkPlan::byte_rate`] (`None`: no rate, so no segments), for byte-split
    /// input.
    ByteRate(Option<u64>),
}

impl Timing {
    /// How a run by `plan` times input of `kind`.
    fn of(kind: ChunkKind, plan: &ChunkPlan) -> Timing {
        match kind {
            ChunkKind::Wav => Timing::Headers,
            ChunkKind::Bytes => Timing::ByteRate(plan.byte_rate_hint()),
        }
    }

    /// Whether segments timed so are the times a run by `plan` would give: always for WAV
    /// headers, for a byte rate only if it is the plan's.
    pub fn fits(self, plan: &ChunkPlan) -> bool {
        self == Timing::Headers || self == Timing::ByteRate(plan.byte_rate_hint())
    }
}

/// Builds a [`ChunkedProcessor`]; see [`ChunkedProcessor::builder`].
#[derive(Clone, Debug)]
pub struct ChunkedProcessorBuilder {
    cache: Cache,
    identity: String,
    language: String,
    plan: ChunkPlan,
    concurrency: ConcurrencyLimit,
    retry: RetryConfig,
    keep_chunk_buffers: bool,
    /// Buffers kept elsewhere that the processor keeps its spare ones in, with their limit:
    /// see [`ChunkedProcessorBuilder::share_chunk_buffers`].
    shared_chunk_buffers: Option<Arc<ChunkBuffers>>,
}

impl ChunkedProcessorBuilder {
    /// Where chunks fall (default: [`ChunkPlan::default`], the seed's size by file size).
    #[must_use]
    pub fn plan(mut self, plan: ChunkPlan) -> Self {
        self.plan = plan;
        self
    }

    /// How many chunks run at once (default 4).
    #[must_use]
    pub fn concurrency(mut self, limit: ConcurrencyLimit) -> Self {
        self.concurrency = limit;
        self
    }

    /// How failing chunks are retried (default: [`RetryConfig::default`], 3 retries after
    /// 1 s, 2 s and 4 s, so a chunk that always fails stops the run after about 7 s; a test
    /// or a host whose engine fails fast passes a shorter policy, or drives the waits with a
    /// [`ManualClock`](crate::ManualClock) on the cache).
    #[must_use]
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Whether the processor keeps chunk buffers across runs (default `true`): up to
    /// `2 × concurrency + 1` of them (as many as a run holds at once) for each run it has had
    /// at once on its clones, which share them, so the next runs read their chunks into them
    /// rather than into freshly mapped memory. They hold up to `(2 × concurrency + 1) ×` the
    /// chunk size ([`ChunkPlan::chunk_bytes_for`], at most 25 MB) between runs, for each run
    /// at once; `false` has each run free its buffers when it ends (it still reuses them
    /// within the run). See [`ChunkedProcessor::spare_chunk_buffers`].
    #[must_use]
    pub fn keep_chunk_buffers(mut self, keep: bool) -> Self {
        self.keep_chunk_buffers = keep;
        self
    }

    /// Keeps the processor's spare chunk buffers in `buffers`, with whoever else holds them
    /// and up to their limit, rather than in buffers of its own: the pipeline builds a
    /// processor per job (the language is the request's) and its jobs share one set this
    /// way. Ignored with [`keep_chunk_buffers`](Self::keep_chunk_buffers)`(false)`.
    pub(crate) fn share_chunk_buffers(mut self, buffers: Arc<ChunkBuffers>) -> Self {
        self.shared_chunk_buffers = Some(buffers);
        self
    }

    /// The language of the transcripts (default `"und"`, undetermined): part of every key.
    #[must_use]
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = language.into();
        self
    }

    /// The processor; fails on an empty identity or a language a transcript key refuses.
    pub fn build(self) -> Result<ChunkedProcessor, ProcessorConfigError> {
        if self.identity.is_empty() {
            return Err(ProcessorConfigError::EmptyIdentity);
        }
        // The language rules are the transcript key's: check them once, here.
        CacheKey::transcript(&"0".repeat(64), &self.language)
            .map_err(ProcessorConfigError::Language)?;
        let (concurrency, shared) = (self.concurrency, self.shared_chunk_buffers);
        let chunk_buffers = self.keep_chunk_buffers.then(|| {
            shared.unwrap_or_else(|| Arc::new(ChunkBuffers::new(buffers_kept(concurrency))))
        });
        Ok(ChunkedProcessor {
            cache: self.cache,
            identity: self.identity,
            language: self.language,
            plan: self.plan,
            concurrency: self.concurrency,
            retry: self.retry,
            chunk_buffers,
        })
    }
}

/// Splits inputs into chunks, processes them in parallel, memoizes per chunk and per file.
///
/// ```
/// use memocache::Cache;
/// use memocache::chunk::{ChunkPlan, ChunkResult, ChunkedProcessor, RunOptions};
///
/// let cache = Cache::builder().max_bytes(1 << 20).build()?;
/// let processor = ChunkedProcessor::builder(cache, "echo-model/1")
///     .plan(ChunkPlan::with_chunk_bytes(4)?)
///     .build()?;
/// let transcribe = |chunk: &memocache::chunk::AudioChunk| {
///     Ok::<_, String>(ChunkResult::from_text(String::from_utf8_lossy(chunk.data())))
/// };
/// let input = || std::io::Cursor::new("abcdefghij");
/// let out = processor.process_reader(input(), &transcribe, RunOptions::new())?;
/// assert_eq!(out.result.text, "abcd efgh ij");
/// assert_eq!((out.computed, out.cached), (3, 0));
/// // The same bytes again: the whole-file result is cached.
/// let again = processor.process_reader(input(), &transcribe, RunOptions::new())?;
/// assert!(again.whole_file_hit);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ChunkedProcessor {
    cache: Cache,
    identity: String,
    language: String,
    plan: ChunkPlan,
    concurrency: ConcurrencyLimit,
    retry: RetryConfig,
    /// Spare chunk buffers kept across runs; `None` when each run frees its own
    /// ([`ChunkedProcessorBuilder::keep_chunk_buffers`]).
    chunk_buffers: Option<Arc<ChunkBuffers>>,
}

/// How many spare chunk buffers a run keeps (and a processor keeps across runs): as many as
/// a run can hold chunks at once (see the module docs), one being read, `concurrency` queued
/// and `concurrency` being processed. Keeping `concurrency + 1` (session 28's first choice)
/// was enough when the workers kept up with the splitter, as on a re-run of cached chunks,
/// but with a chunk function slower than reading a chunk — any speech engine — the queue
/// fills, and every run had up to `concurrency` buffers mapped and faulted in anew (the
/// README counts the page faults).
pub(crate) fn buffers_kept(concurrency: ConcurrencyLimit) -> usize {
    concurrency.get().saturating_mul(2).saturating_add(1)
}

/// A chunk attempt that gave the cache's loader no value to store: the chunk function failed
/// (its error stays with the run that called it; a run waiting on the load makes its own
/// attempt), or its result did not encode.
struct NotLoaded;

/// Why a chunk stopped without an outcome.
enum Stop<E> {
    Failed {
        index: usize,
        attempts: u32,
        cause: E,
    },
    Halted,
    Key(KeyError),
    Task(InvalidTaskTransition),
    /// The chunk function or the progress callback panicked with this payload.
    Panicked(Box<dyn Any + Send>),
}

/// State shared by the workers of one run.
struct Run<'a, E> {
    id: ProcessingId,
    total: usize,
    bytes_total: u64,
    clock: SharedClock,
    started: Timestamp,
    /// Set when a chunk fails for good; ends retry waits at once.
    stop: CancelToken,
    user_cancel: Option<&'a CancelToken>,
    failure: Mutex<Option<Stop<E>>>,
    counters: Mutex<Counters>,
    callback: Option<&'a ProgressFn<'a>>,
    retries: AtomicU32,
    not_memoized: AtomicUsize,
    /// [`RunOptions::refuse_empty_text`].
    refuse_empty_text: bool,
}

#[derive(Default)]
struct Counters {
    done: usize,
    cached: usize,
    bytes_done: u64,
    /// The elapsed time last reported: no report shows less (see [`Run::progress`]).
    elapsed: Duration,
}

impl<E> Run<'_, E> {
    fn halted(&self) -> bool {
        self.stop.is_cancelled() || self.user_cancel.is_some_and(CancelToken::is_cancelled)
    }

    /// Waits `delay` unless the run halts first; returns whether it halted.
    fn wait(&self, delay: Duration) -> bool {
        let deadline = self.clock.now().saturating_add(delay);
        loop {
            if self.halted() {
                return true;
            }
            let left = deadline.saturating_duration_since(self.clock.now());
            if left.is_zero() {
                return false;
            }
            if self.stop.wait_timeout(left.min(POLL)) {
                return true;
            }
        }
    }

    /// The report of `counters`, taken under their lock. The clock is read under it too, but
    /// that does not order the readings: a clock read on one core may lag a reading just
    /// taken on another ([`SystemClock`](crate::SystemClock), the timing clock of a default
    /// cache, reads each core's own counter), or a host's clock may step back. So the elapsed
    /// time is at least the last one reported, and the callback never sees it decrease.
    fn progress(&self, counters: &mut Counters) -> Progress {
        let elapsed = self
            .clock
            .now()
            .saturating_duration_since(self.started)
            .max(counters.elapsed);
        counters.elapsed = elapsed;
        let eta = match counters.bytes_done {
            0 => None,
            done => {
                let left = self.bytes_total.saturating_sub(done);
                let nanos = elapsed.as_nanos() * u128::from(left) / u128::from(done);
                Some(Duration::from_nanos(
                    u64::try_from(nanos).unwrap_or(u64::MAX),
                ))
            }
        };
        Progress {
            chunks_done: counters.done,
            chunks_total: self.total,
            chunks_cached: counters.cached,
            bytes_done: counters.bytes_done,
            bytes_total: self.bytes_total,
            elapsed,
            eta,
        }
    }

    /// Counts a finished chunk and tells the callback, under one lock so reports stay ordered.
    fn finished(&self, info: &ChunkInfo, cached: bool) {
        let mut counters = self.counters.lock();
        counters.done += 1;
        counters.cached += usize::from(cached);
        counters.bytes_done += info.new_bytes;
        if let Some(callback) = self.callback {
            callback(&self.progress(&mut counters));
        }
    }

    fn report(&self) {
        if let Some(callback) = self.callback {
            callback(&self.progress(&mut self.counters.lock()));
        }
    }
}

impl ChunkedProcessor {
    /// A builder for a processor storing into `cache`, whose chunk function is identified by
    /// `identity` (model and version, e.g. `"whisper-large-v3/2024-06"`): change it whenever
    /// the function's results would change, or stale results will be reused.
    pub fn builder(cache: Cache, identity: impl Into<String>) -> ChunkedProcessorBuilder {
        ChunkedProcessorBuilder {
            cache,
            identity: identity.into(),
            language: "und".to_owned(),
            plan: ChunkPlan::default(),
            concurrency: ConcurrencyLimit::default(),
            retry: RetryConfig::default(),
            keep_chunk_buffers: true,
            shared_chunk_buffers: None,
        }
    }

    /// The processor identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The language.
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The chunk plan.
    pub fn plan(&self) -> &ChunkPlan {
        &self.plan
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// How many spare chunk buffers the processor (with its clones) holds now, for its next
    /// runs: up to `2 × concurrency + 1` after a run, and that many for each run it has had at
    /// once on its clones, each up to a chunk's size; 0 before the first run, and always with
    /// [`ChunkedProcessorBuilder::keep_chunk_buffers`]`(false)`.
    pub fn spare_chunk_buffers(&self) -> usize {
        self.chunk_buffers
            .as_ref()
            .map_or(0, |buffers| buffers.spare())
    }

    /// The key `chunk`'s result is memoized under (see the module docs): its bytes, the
    /// identity and the language, and for a [`ChunkKind::Bytes`] chunk its
    /// [`duration`](ChunkInfo::duration) too (or that it has none), which its bytes do not
    /// carry.
    pub fn chunk_key(&self, chunk: &AudioChunk) -> Result<CacheKey, KeyError> {
        let content = CacheKey::from_content(chunk.data(), "chunk")?;
        let key = CacheKey::builder("chunk")?
            .part(content.digest())
            .part(&self.identity)
            .part(&self.language);
        Ok(match chunk.info().kind {
            // The header in the chunk's bytes gives its rate, and so its duration.
            ChunkKind::Wav => key,
            // The plan's byte rate gave the duration: the same bytes timed by another rate (or
            // by none) are another entry. An empty part says "no duration"; a duration is 16.
            ChunkKind::Bytes => key.part("bytes").part(
                chunk
                    .info()
                    .duration
                    .map_or_else(Vec::new, |d| d.as_nanos().to_le_bytes().to_vec()),
            ),
        }
        .finish())
    }

    /// Processes the file at `path`; see [`ChunkedProcessor::process_reader`].
    ///
    /// `path` must name a regular file (or a link to one): the file is read twice, so a
    /// directory, a pipe or a device is refused at once with [`ProcessError::Open`], before
    /// anything is read (a FIFO's open would wait for a writer). For bytes that arrive
    /// once, hand [`ChunkedProcessor::process_reader`] a seekable copy.
    ///
    /// If the file's length or modification time changed between the start of the run and
    /// the storing of the whole-file record, the run stores no such record and fails with
    /// [`ProcessError::Changed`] (see the module docs).
    ///
    /// A WAV file is cut on sample-frame boundaries, and every chunk is a complete WAV file:
    ///
    /// ```
    /// use std::time::Duration;
    /// use memocache::{Cache, ConcurrencyLimit, RetryConfig};
    /// use memocache::chunk::{AudioChunk, ChunkKind, ChunkPlan, ChunkResult, ChunkedProcessor,
    ///     ProcessError, RunOptions};
    ///
    /// // Three seconds of 16 kHz mono 16-bit audio: 96,000 bytes of samples.
    /// let dir = std::env::temp_dir().join(format!("memocache-doc-wav-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let wav = dir.join("talk.wav");
    /// let spec = hound::WavSpec {
    ///     channels: 1,
    ///     sample_rate: 16_000,
    ///     bits_per_sample: 16,
    ///     sample_format: hound::SampleFormat::Int,
    /// };
    /// let mut writer = hound::WavWriter::create(&wav, spec)?;
    /// for n in 0..48_000 {
    ///     writer.write_sample((n % 1000) as i16)?;
    /// }
    /// writer.finalize()?;
    ///
    /// let cache = Cache::builder().max_bytes(64 * 1024 * 1024).build()?;
    /// let processor = ChunkedProcessor::builder(cache, "frame-counter/1")
    ///     // At most 32,000 bytes a chunk (one second), for the example; real plans use
    ///     // a `ChunkSize` of 10 to 25 MB.
    ///     .plan(ChunkPlan::with_chunk_bytes(32_000)?)
    ///     .concurrency(ConcurrencyLimit::new(2)?)
    ///     .retry(RetryConfig::exponential(0, Duration::from_millis(10))?)
    ///     .language("en")
    ///     .build()?;
    /// let frames = |chunk: &AudioChunk| {
    ///     assert_eq!(chunk.info().kind, ChunkKind::Wav);
    ///     let reader = hound::WavReader::new(&chunk.data()[..]).map_err(|e| e.to_string())?;
    ///     Ok::<_, String>(ChunkResult::from_text(format!("{} frames", reader.duration())))
    /// };
    /// let out = processor.process_path(&wav, &frames, RunOptions::new())?;
    /// // 32,000 bytes hold a 44-byte header and 15,978 frames; the last chunk has the other 66.
    /// assert_eq!(out.result.text, "15978 frames 15978 frames 15978 frames 66 frames");
    /// assert_eq!(out.chunks[1].info.start_time, Some(Duration::from_micros(998_625)));
    /// assert_eq!(out.computed, 4);
    /// assert!(processor.process_path(&wav, &frames, RunOptions::new())?.whole_file_hit);
    ///
    /// // A file that grows while it is processed is refused, and no whole-file record is
    /// // stored for it; its chunk results stay cached. (Another identity: the results of
    /// // "frame-counter/1" are not this function's.)
    /// let growing = dir.join("growing.wav");
    /// std::fs::copy(&wav, &growing)?;
    /// let processor = ChunkedProcessor::builder(processor.cache().clone(), "appender/1")
    ///     .plan(ChunkPlan::with_chunk_bytes(32_000)?)
    ///     .build()?;
    /// let append = |chunk: &AudioChunk| {
    ///     use std::io::Write as _;
    ///     let mut file = std::fs::OpenOptions::new()
    ///         .append(true)
    ///         .open(&growing)
    ///         .map_err(|e| e.to_string())?;
    ///     file.write_all(&[0; 2]).map_err(|e| e.to_string())?;
    ///     Ok::<_, String>(ChunkResult::from_text(format!("chunk {}", chunk.index())))
    /// };
    /// let err = processor.process_path(&growing, &append, RunOptions::new()).unwrap_err();
    /// assert!(matches!(err, ProcessError::Changed { .. }));
    /// assert!(err.to_string().ends_with(
    ///     "changed while it was being processed; no whole-file result was stored for it"
    /// ));
    /// let again = processor.process_path(&growing, &append, RunOptions::new());
    /// assert!(matches!(again, Ok(out) if out.computed == 0 && out.cached == 4));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn process_path<F, E>(
        &self,
        path: impl AsRef<Path>,
        f: &F,
        options: RunOptions<'_>,
    ) -> Result<ProcessOutput, ProcessError<E>>
    where
        F: Fn(&AudioChunk) -> Result<ChunkResult, E> + Sync,
        E: fmt::Display + Send,
    {
        let path = path.as_ref();
        let open_error = |source| ProcessError::Open {
            path: path.to_owned(),
            source,
        };
        // The metadata is taken before the hash pass, so that a rewrite during it shows too.
        let (file, metadata) = open_regular(path).map_err(open_error)?;
        let unchanged = Unchanged {
            path,
            before: Fingerprint::of(&metadata),
            file: &file,
        };
        self.run(&file, f, options, Some(&unchanged))
    }

    /// Processes everything `reader` holds from its start: whole-file memo check, split,
    /// chunk function on each uncached chunk (in parallel, with retries), merge, memoize.
    ///
    /// The reader is read twice (hashed, then split) unless the options spare the hash pass,
    /// and nothing can tell whether it held the same bytes both times: a caller whose reader
    /// may change meanwhile (a file others write) passes [`RunOptions::file_hash`] of the
    /// bytes it means or [`RunOptions::skip_whole_file_memo`], or else another content's
    /// result may be stored under the whole-file key. [`ChunkedProcessor::process_path`]
    /// checks a file for this itself.
    pub fn process_reader<R, F, E>(
        &self,
        reader: R,
        f: &F,
        options: RunOptions<'_>,
    ) -> Result<ProcessOutput, ProcessError<E>>
    where
        R: Read + Seek,
        F: Fn(&AudioChunk) -> Result<ChunkResult, E> + Sync,
        E: fmt::Display + Send,
    {
        self.run(reader, f, options, None)
    }

    /// A run of [`ChunkedProcessor::process_reader`]; `unchanged`, if given, must pass before
    /// the whole-file record is stored.
    fn run<R, F, E>(
        &self,
        mut reader: R,
        f: &F,
        options: RunOptions<'_>,
        unchanged: Option<&Unchanged<'_>>,
    ) -> Result<ProcessOutput, ProcessError<E>>
    where
        R: Read + Seek,
        F: Fn(&AudioChunk) -> Result<ChunkResult, E> + Sync,
        E: fmt::Display + Send,
    {
        let clock = timing_clock(self.cache.clock());
        let started = clock.now();
        let cancelled = || {
            options
                .cancel
                .as_ref()
                .is_some_and(CancelToken::is_cancelled)
        };

        let input_len = reader.seek(SeekFrom::End(0))?;
        // Pass one, unless the caller knows the hash or memoizes the whole file itself.
        let file_key = if options.skip_whole_file_memo {
            None
        } else if let Some(file_hash) = &options.file_hash {
            Some(CacheKey::transcript(file_hash, &self.language)?)
        } else {
            reader.rewind()?;
            // Pass one reads the whole input, seconds for a long recording: a cancelled run
            // must not wait for it, so the token is checked between reads.
            let watched = Watched {
                reader: &mut reader,
                cancelled: &cancelled,
            };
            // The length the split goes by, and no more: an input that yields more than its
            // `seek` said (a character device such as `/dev/zero`, whose length is 0, or a
            // reader that lies) was hashed to its end, which for a device never came; the
            // split then refuses it as longer than its length.
            let file_hash = match CacheKey::from_reader(watched.take(input_len), "file") {
                Err(KeyError::Io(_)) if cancelled() => {
                    return Err(ProcessError::Cancelled {
                        completed: 0,
                        total: 0,
                    });
                }
                hashed => hashed?.digest_hex(),
            };
            Some(CacheKey::transcript(&file_hash, &self.language)?)
        };
        if let Some(record) = file_key.as_ref().and_then(|key| {
            self.cache
                .get_typed::<WholeFileRecord>(key)
                .ok()
                .flatten()
                .filter(|record| record.identity == self.identity)
                .filter(|record| record.timing.fits(&self.plan))
                .filter(|record| record.empty_chunks == 0 || !options.refuse_empty_text)
        }) {
            let total = usize::try_from(record.total_chunks).unwrap_or(usize::MAX);
            if let Some(callback) = &options.progress {
                callback(&Progress {
                    chunks_done: total,
                    chunks_total: total,
                    chunks_cached: total,
                    bytes_done: record.bytes_total,
                    bytes_total: record.bytes_total,
                    elapsed: clock.now().saturating_duration_since(started),
                    eta: Some(Duration::ZERO),
                });
            }
            return Ok(ProcessOutput {
                result: record.result,
                timing: record.timing,
                chunks: Vec::new(),
                file_key,
                whole_file_hit: true,
                computed: 0,
                cached: 0,
                retries: 0,
                not_memoized: 0,
            });
        }
        if cancelled() {
            return Err(ProcessError::Cancelled {
                completed: 0,
                total: 0,
            });
        }

        // Pass two: split and process.
        reader.rewind()?;
        let per_run = buffers_kept(self.concurrency);
        let buffers = self
            .chunk_buffers
            .clone()
            .unwrap_or_else(|| Arc::new(ChunkBuffers::new(per_run)));
        // Counted while it reads into them, so that runs on clones together keep what they
        // hold together (see `ChunkBuffers::run`).
        let _seat = buffers.run(per_run);
        let mut stream = split_into(
            &mut reader,
            &self.plan,
            Some(input_len),
            Arc::clone(&buffers),
        )?;
        let timing = Timing::of(stream.kind(), &self.plan);
        let bytes_total = stream.total_bytes().unwrap_or(input_len);
        // Known: the input length was given.
        let total = stream
            .total_chunks()
            .ok_or(ProcessError::Incomplete { index: 0 })?;
        let run = Run {
            id: ProcessingId::generate(),
            total,
            bytes_total,
            clock,
            started,
            stop: CancelToken::new(),
            user_cancel: options.cancel.as_ref(),
            failure: Mutex::new(None),
            counters: Mutex::new(Counters::default()),
            callback: options.progress.as_deref(),
            retries: AtomicU32::new(0),
            not_memoized: AtomicUsize::new(0),
            refuse_empty_text: options.refuse_empty_text,
        };
        run.report();
        // Grown as outcomes land, not sized by `total`: that count comes from the input's
        // length, which a reader's `seek` (or a sparse file) states without holding the bytes,
        // and a slot per promised chunk of 2^62 bytes did not fit in memory (a capacity
        // overflow panic, or an abort) before the split found the input truncated.
        let slots: Mutex<Vec<Option<ChunkOutcome>>> = Mutex::new(Vec::new());
        let workers = self.concurrency.get().min(total).max(1);
        let mut split_error = None;
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<AudioChunk>(workers);
            // Only workers hold the receiver: if they all die, sending fails instead of hanging.
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..workers {
                let rx = Arc::clone(&rx);
                let (run, slots) = (&run, &slots);
                scope.spawn(move || self.worker(run, &rx, f, slots));
            }
            drop(rx);
            for chunk in stream.by_ref() {
                if run.halted() {
                    break;
                }
                match chunk {
                    Ok(chunk) => {
                        if tx.send(chunk).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        split_error = Some(e);
                        run.stop.cancel();
                        break;
                    }
                }
            }
            drop(tx);
        });

        let failure = match run.failure.into_inner() {
            // Before any error: a bug in the caller's code must not hide behind it.
            Some(Stop::Panicked(payload)) => resume_unwind(payload),
            failure => failure,
        };
        if let Some(e) = split_error {
            // A file that grew or shrank under the run reads as too long or truncated to the
            // splitter; what happened is that it changed, which names the file.
            if let Some(unchanged) = unchanged {
                unchanged.check()?;
            }
            return Err(ProcessError::Split(e));
        }
        let slots = slots.into_inner();
        let completed = slots.iter().filter(|s| s.is_some()).count();
        if completed < total {
            return Err(match failure {
                Some(Stop::Failed {
                    index,
                    attempts,
                    cause,
                }) => ProcessError::Chunk {
                    index,
                    attempts,
                    cause,
                },
                Some(Stop::Key(e)) => ProcessError::Key(e),
                Some(Stop::Task(e)) => ProcessError::Task(e),
                Some(Stop::Halted) | None if cancelled() => {
                    ProcessError::Cancelled { completed, total }
                }
                Some(Stop::Halted | Stop::Panicked(_)) | None => ProcessError::Incomplete {
                    index: slots
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(slots.len()),
                },
            });
        }
        let chunks: Vec<ChunkOutcome> = slots.into_iter().flatten().collect();
        let result = match &options.merge {
            Some(merge) => merge(&chunks),
            None => merge_transcripts(&chunks),
        };
        let record = WholeFileRecord {
            identity: self.identity.clone(),
            timing,
            total_chunks: total as u64,
            empty_chunks: chunks.iter().filter(|c| !c.result.has_text()).count() as u64,
            bytes_total,
            result,
        };
        if let Some(key) = file_key {
            // Last thing before the store: the result must be of the bytes the key names.
            if let Some(unchanged) = unchanged {
                unchanged.check()?;
            }
            if self.cache.insert_typed(key, &record).is_err() {
                run.not_memoized.fetch_add(1, Ordering::Relaxed);
            }
        }
        let cached = chunks.iter().filter(|c| c.from_cache).count();
        Ok(ProcessOutput {
            result: record.result,
            timing,
            computed: chunks.len() - cached,
            cached,
            chunks,
            file_key,
            whole_file_hit: false,
            retries: run.retries.into_inner(),
            not_memoized: run.not_memoized.into_inner(),
        })
    }

    /// A worker: takes chunks until the channel closes; once the run halts it only drains.
    fn worker<F, E>(
        &self,
        run: &Run<'_, E>,
        jobs: &Mutex<Receiver<AudioChunk>>,
        f: &F,
        slots: &Mutex<Vec<Option<ChunkOutcome>>>,
    ) where
        F: Fn(&AudioChunk) -> Result<ChunkResult, E>,
        E: fmt::Display,
    {
        loop {
            let Ok(chunk) = jobs.lock().recv() else {
                return;
            };
            if run.halted() {
                continue;
            }
            // A panic in the caller's code is caught so that it stops the run like a failure
            // and reaches the caller with its own payload (see the module docs); letting the
            // thread die would lose the payload and let the run go on to the last chunk.
            let done = catch_unwind(AssertUnwindSafe(|| {
                let outcome = self.run_chunk(run, chunk, f)?;
                run.finished(&outcome.info, outcome.from_cache);
                Ok(outcome)
            }));
            match done.unwrap_or_else(|panic| Err(Stop::Panicked(panic))) {
                Ok(outcome) => {
                    // A chunk past the total has no place in the output (the splitter
                    // yields none: an input longer than its length is an error).
                    let index = outcome.info.index;
                    if index < run.total {
                        let mut slots = slots.lock();
                        if slots.len() <= index {
                            slots.resize_with(index + 1, || None);
                        }
                        slots[index] = Some(outcome);
                    }
                }
                Err(Stop::Halted) => {}
                Err(stop) => {
                    let mut failure = run.failure.lock();
                    // The first stop wins, except that a panic displaces an ordinary error:
                    // the caller must see a bug in its code (it is resumed before any error
                    // is returned), not the error of a chunk that happened to fail first.
                    let displace = matches!(stop, Stop::Panicked(_))
                        && !matches!(*failure, Some(Stop::Panicked(_)));
                    if failure.is_none() || displace {
                        *failure = Some(stop);
                    }
                    drop(failure);
                    run.stop.cancel();
                }
            }
        }
    }

    /// One chunk: its result from the cache, or from the chunk function (with retries),
    /// memoized. Each attempt is a load through the cache's loader, so that a run (or a worker)
    /// that meets a chunk another one is computing waits for that result (see the module docs).
    fn run_chunk<F, E>(
        &self,
        run: &Run<'_, E>,
        chunk: AudioChunk,
        f: &F,
    ) -> Result<ChunkOutcome, Stop<E>>
    where
        F: Fn(&AudioChunk) -> Result<ChunkResult, E>,
        E: fmt::Display,
    {
        let key = self.chunk_key(&chunk).map_err(Stop::Key)?;
        let info = *chunk.info();
        let mut task = ProcessingTask::new(run.id, chunk, run.total);
        // Set once the cache cannot coalesce this chunk's loads: the function is called and
        // its result inserted directly.
        let mut direct = false;
        loop {
            let (started, result, stored) = if direct {
                let (started, result) = (run.clock.now(), f(task.chunk()));
                let stored = match &result {
                    Ok(result) => self.cache.insert_typed(key, result).is_ok(),
                    Err(_) => false,
                };
                (started, result, stored)
            } else {
                let mut attempt = None;
                let loaded = self.cache.try_get_or_insert_with(key, || {
                    let (started, result) = (run.clock.now(), f(task.chunk()));
                    let encoded = result.as_ref().ok().map(codec::encode);
                    attempt = Some((started, result));
                    match encoded {
                        Some(Ok(bytes)) => Ok(bytes),
                        _ => Err(NotLoaded),
                    }
                });
                match (attempt, loaded) {
                    // This call's attempt; its result is stored unless the cache refused it
                    // (larger than the budget) or it did not encode.
                    (Some((started, result)), loaded) => (started, result, loaded.is_ok()),
                    // Found in the cache, or loaded by the run this call waited for.
                    (None, Ok(bytes)) => match codec::decode::<ChunkResult>(&bytes) {
                        Ok(result) if result.has_text() || !run.refuse_empty_text => {
                            return Ok(ChunkOutcome {
                                info,
                                result,
                                from_cache: true,
                                // Calls that failed before another run stored it, if any.
                                attempts: task.retry_count(),
                            });
                        }
                        // A stored value that does not decode, or has no text for a run that
                        // refuses empty text, is recomputed and overwritten.
                        Ok(_) | Err(_) => {
                            direct = true;
                            continue;
                        }
                    },
                    // The attempt this call waited for failed, in another run perhaps, with
                    // an error that is not this run's: load again, leading or waiting anew.
                    // Or the cache cannot hold the value (the load waited for was refused as
                    // too large) or cannot wait for it (a chunk function that loads this key
                    // itself): compute without it.
                    (None, Err(error)) => {
                        if run.halted() {
                            return Err(Stop::Halted);
                        }
                        direct = matches!(error, LoadError::Cache(_));
                        continue;
                    }
                }
            };
            if result.is_ok() && !stored {
                run.not_memoized.fetch_add(1, Ordering::Relaxed);
            }
            task.start(started).map_err(Stop::Task)?;
            match result {
                Ok(result) => {
                    task.complete(result.clone(), run.clock.now())
                        .map_err(Stop::Task)?;
                    return Ok(ChunkOutcome {
                        info,
                        result,
                        from_cache: false,
                        attempts: task.attempts(),
                    });
                }
                Err(cause) => {
                    task.fail(cause.to_string(), run.clock.now())
                        .map_err(Stop::Task)?;
                    let retries = task.retry_count();
                    if run.halted() {
                        return Err(Stop::Halted);
                    }
                    if retries >= self.retry.max_retries() {
                        return Err(Stop::Failed {
                            index: info.index,
                            attempts: task.attempts(),
                            cause,
                        });
                    }
                    if run.wait(self.retry.retry_delay(retries)) {
                        return Err(Stop::Halted);
                    }
                    task.retry().map_err(Stop::Task)?;
                    count_retry(&run.retries);
                }
            }
        }
    }
}

/// Counts one retry of a run, saturating at `u32::MAX` as each chunk's attempts do (see
/// `ProcessingTask::attempts`): a `RetryConfig` may allow `u32::MAX` retries a chunk, so a
/// run's total over its chunks can pass it, and `fetch_add` wrapped it round to a small count.
fn count_retry(retries: &AtomicU32) {
    // Relaxed: the count orders nothing; it is read once the workers are joined. The closure
    // returns `None` only at the maximum, which is then kept.
    let _ = retries.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug: a run's retries were counted with `fetch_add`, which wrapped past `u32::MAX`
    /// (across a run's chunks, each allowed up to `u32::MAX` retries) to 0.
    #[test]
    fn a_runs_retry_count_saturates() {
        let retries = AtomicU32::new(u32::MAX - 1);
        count_retry(&retries);
        assert_eq!(retries.load(Ordering::Relaxed), u32::MAX);
        count_retry(&retries);
        assert_eq!(retries.load(Ordering::Relaxed), u32::MAX);
    }

    /// Bug: `process_path` (and the pipeline) checked the name, then opened it, then checked
    /// the handle; a FIFO put in the file's place between the first check and the open was
    /// opened as one, and the open waited for a writer for ever. The open is the step after
    /// the name's check, so it is run on a FIFO here: it refuses at once, naming the kind.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_open_after_the_names_check_refuses_a_fifo_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("swapped.wav");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("runs mkfifo");
        assert!(made.success());
        let (done, opened) = std::sync::mpsc::channel();
        // On its own thread: on the old code the open never returns (no writer comes).
        std::thread::spawn(move || {
            let _ = done.send(open_checked(&fifo).map(|_| ()).map_err(|e| e.kind()));
        });
        let opened = opened
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the open did not wait for a writer");
        assert_eq!(opened, Err(io::ErrorKind::InvalidInput));
    }
}
