//! Chunked parallel processing of long recordings, with per-chunk memoization and progress.
//!
//! # Design
//!
//! A long recording is cut into chunks small enough for a speech-to-text upload (at most
//! 25 MB), the chunks are processed in parallel under a
//! [`ConcurrencyLimit`](crate::ConcurrencyLimit), and every chunk result is memoized in the
//! [`Cache`](crate::Cache) under a key derived from the chunk's *content* (and, for a byte
//! range, the duration the plan's byte rate gives it: see [`processor`]). A re-run after an edit,
//! a crash or a failure therefore redoes only the chunks whose bytes changed or that never
//! finished; the merged result is memoized too, under the file's transcript key, so an unchanged
//! file costs one hashing pass.
//!
//! * [`size`] — [`ChunkSize`] (the seed's 10–25 MB value object) and [`ChunkPlan`] (size,
//!   overlap, input format). [`ChunkPlan::with_chunk_bytes`] is an advanced/test-only way to
//!   use chunks below 10 MB; [`ChunkSize`] itself keeps the seed's range.
//! * [`split`](mod@split) — the streaming splitter: WAV (and declared raw PCM) on sample-frame
//!   boundaries with a valid WAV header per chunk, everything else on byte boundaries.
//! * [`task`] — the seed's [`ProcessingTask`] state machine and the chunk/result values.
//! * [`processor`] — [`ChunkedProcessor`]: workers, retries, memoization, progress,
//!   cancellation.
//!
//! # Trade-offs
//!
//! * Boundaries are a pure function of input and plan, so an edit that changes the input's
//!   *length* (an insertion or deletion) shifts every later boundary and every later chunk is
//!   recomputed; an in-place edit recomputes only the chunks containing it (two, if it falls
//!   in an overlap). Content-defined chunking would survive insertions, but its chunks are not
//!   frame-aligned files of a bounded size, which the upload limit requires.
//! * Everything is hashed twice (the whole file, then each chunk); with SHA-NI that is a small
//!   cost next to any model, and it is what lets an unchanged file return without splitting.
//!
//! [`RetryConfig`](crate::RetryConfig) and [`ConcurrencyLimit`](crate::ConcurrencyLimit) are
//! the jobs layer's value objects, shared with the job queue.

pub mod processor;
pub mod size;
pub mod split;
pub mod task;

pub use processor::{
    CancelToken, ChunkOutcome, ChunkedProcessor, ChunkedProcessorBuilder, MergeFn, ProcessError,
    ProcessOutput, ProcessorConfigError, Progress, ProgressFn, RunOptions, Timing,
    merge_transcripts,
};
pub use size::{ChunkPlan, ChunkSize, ChunkSizeError, InputFormat, PcmSpec};
pub use split::{ChunkStream, DEFAULT_SPARE_BUFFERS, SplitError, split};
pub use task::{
    AudioChunk, ChunkInfo, ChunkKind, ChunkResult, InvalidTaskTransition, ProcessingId,
    ProcessingTask, Segment, TaskId, TaskStatus,
};
