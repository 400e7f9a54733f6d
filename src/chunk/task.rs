//! The seed's `ProcessingTask` entity and the values it carries: [`TaskId`], [`TaskStatus`],
//! [`AudioChunk`] (with its [`ChunkInfo`]) and [`ChunkResult`].
//!
//! # Differences from the seed
//!
//! * Ids are process-unique counters, not UUIDs: a task lives inside one process and one run,
//!   so a 64-bit counter is unique where it matters and costs no randomness or dependency.
//! * Every illegal transition is an [`InvalidTaskTransition`] naming both states. The seed let
//!   `fail` run from any state, which would turn a completed task (with a result) into a
//!   failed one; here `fail` is allowed from `Pending` and `Processing` only.
//! * [`ProcessingTask::retry`] (`Failed → Pending`, counting the retry) is added: the seed has
//!   a `retry_count` but no transition that uses it.
//! * Times are [`Timestamp`]s of the run's [`Clock`](crate::Clock), so tests drive them with a
//!   `ManualClock`.
//! * [`TaskStatus`] is an enum; the seed used a `TaskStatus` it never defined.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Identity of a [`ProcessingTask`]: unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(u64);

/// Identity of one processing run (all the tasks of one input): unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessingId(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

impl TaskId {
    /// A new, process-unique id.
    pub fn generate() -> TaskId {
        TaskId(next_id())
    }

    /// The number behind the id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl ProcessingId {
    /// A new, process-unique id.
    pub fn generate() -> ProcessingId {
        ProcessingId(next_id())
    }

    /// The number behind the id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

impl fmt::Display for ProcessingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "processing-{}", self.0)
    }
}

/// Where a [`ProcessingTask`] is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Waiting to run (again, after [`ProcessingTask::retry`]).
    Pending,
    /// Running.
    Processing,
    /// Finished with a result.
    Completed,
    /// Finished with an error.
    Failed,
}

impl TaskStatus {
    /// Completed or failed.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskStatus::Pending => "Pending",
            TaskStatus::Processing => "Processing",
            TaskStatus::Completed => "Completed",
            TaskStatus::Failed => "Failed",
        })
    }
}

/// A transition the task's state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid task transition: cannot move a task from {from} to {to}")]
pub struct InvalidTaskTransition {
    /// The state the task was in (and is still in).
    pub from: TaskStatus,
    /// The state that was asked for.
    pub to: TaskStatus,
}

/// How a chunk's bytes were cut from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChunkKind {
    /// Whole sample frames with a WAV header of their own: a valid WAV file.
    Wav,
    /// A byte range of the input, as is.
    Bytes,
}

/// Where a chunk lies in its input; everything about a chunk except its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Position in the input, from 0.
    pub index: usize,
    /// How the bytes were cut.
    pub kind: ChunkKind,
    /// Offset in the input of the first audio byte of the chunk (for WAV, of its first frame).
    pub source_offset: u64,
    /// Input bytes the chunk covers, overlap included (for WAV, without the new header).
    pub source_len: u64,
    /// Input bytes first covered by this chunk (`source_len` minus the overlap with the
    /// previous chunk); these add up to the input's audio bytes.
    pub new_bytes: u64,
    /// Time offset of the chunk's start in the input, when the rate is known.
    pub start_time: Option<Duration>,
    /// Length of the chunk's audio, when the rate is known.
    pub duration: Option<Duration>,
    /// Audio shared with the previous chunk (zero for the first chunk), when the rate is known.
    pub overlap: Option<Duration>,
}

/// One chunk: its [`ChunkInfo`] and its bytes — for [`ChunkKind::Wav`] a complete WAV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioChunk {
    info: ChunkInfo,
    data: Bytes,
}

impl AudioChunk {
    /// A chunk of `data` described by `info`.
    pub fn new(info: ChunkInfo, data: Bytes) -> AudioChunk {
        AudioChunk { info, data }
    }

    /// Where the chunk lies in its input.
    pub fn info(&self) -> &ChunkInfo {
        &self.info
    }

    /// Position in the input, from 0.
    pub fn index(&self) -> usize {
        self.info.index
    }

    /// The chunk's bytes, ready to upload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

/// A timed piece of a transcript, relative to the start of its chunk (or of the whole input,
/// after merging).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Start time.
    pub start: Duration,
    /// End time.
    pub end: Duration,
    /// The words.
    pub text: String,
}

/// What processing one chunk gives: text and optional timed segments. Serialisable, because
/// it is what the cache memoizes per chunk and, merged, per file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkResult {
    /// The chunk's text.
    pub text: String,
    /// Timed segments, relative to the chunk's start; may be empty.
    pub segments: Vec<Segment>,
}

impl ChunkResult {
    /// A result with `text` and no segments.
    pub fn from_text(text: impl Into<String>) -> ChunkResult {
        ChunkResult {
            text: text.into(),
            segments: Vec::new(),
        }
    }

    /// Whether the result has any text (other than whitespace). An engine that prints
    /// nothing for silence gives a result without, which only some runs take as a transcript
    /// (see [`RunOptions::refuse_empty_text`](super::RunOptions::refuse_empty_text)).
    pub fn has_text(&self) -> bool {
        !self.text.trim().is_empty()
    }
}

/// The seed's `ProcessingTask`: one chunk's way through processing.
///
/// ```
/// use memocache::chunk::{AudioChunk, ChunkInfo, ChunkKind, ChunkResult, ProcessingId,
///     ProcessingTask, TaskStatus};
/// use memocache::Timestamp;
///
/// let info = ChunkInfo { index: 1, kind: ChunkKind::Bytes, source_offset: 10, source_len: 10,
///     new_bytes: 10, start_time: None, duration: None, overlap: None };
/// let chunk = AudioChunk::new(info, bytes::Bytes::from_static(&[0; 10]));
/// let mut task = ProcessingTask::new(ProcessingId::generate(), chunk, 4);
/// assert_eq!(task.get_progress(), 0.25);
/// task.start(Timestamp::from_nanos(5))?;
/// task.complete(ChunkResult::from_text("hi"), Timestamp::from_nanos(9))?;
/// assert_eq!((task.status(), task.get_progress()), (TaskStatus::Completed, 0.5));
/// let err = task.start(Timestamp::from_nanos(10)).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid task transition: cannot move a task from Completed to Processing"
/// );
/// # Ok::<(), memocache::chunk::InvalidTaskTransition>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProcessingTask {
    id: TaskId,
    processing_id: ProcessingId,
    chunk: AudioChunk,
    index: usize,
    total_chunks: usize,
    status: TaskStatus,
    retry_count: u32,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    result: Option<ChunkResult>,
    error: Option<String>,
}

impl ProcessingTask {
    /// A pending task for `chunk`, one of `total_chunks` in run `processing_id`.
    pub fn new(
        processing_id: ProcessingId,
        chunk: AudioChunk,
        total_chunks: usize,
    ) -> ProcessingTask {
        ProcessingTask {
            id: TaskId::generate(),
            processing_id,
            index: chunk.index(),
            chunk,
            total_chunks,
            status: TaskStatus::Pending,
            retry_count: 0,
            started_at: None,
            completed_at: None,
            result: None,
            error: None,
        }
    }

    fn transition(
        &mut self,
        allowed: &[TaskStatus],
        to: TaskStatus,
    ) -> Result<(), InvalidTaskTransition> {
        if allowed.contains(&self.status) {
            self.status = to;
            Ok(())
        } else {
            Err(InvalidTaskTransition {
                from: self.status,
                to,
            })
        }
    }

    /// `Pending → Processing`.
    pub fn start(&mut self, now: Timestamp) -> Result<(), InvalidTaskTransition> {
        self.transition(&[TaskStatus::Pending], TaskStatus::Processing)?;
        self.started_at = Some(now);
        Ok(())
    }

    /// `Processing → Completed`, keeping `result`.
    pub fn complete(
        &mut self,
        result: ChunkResult,
        now: Timestamp,
    ) -> Result<(), InvalidTaskTransition> {
        self.transition(&[TaskStatus::Processing], TaskStatus::Completed)?;
        self.completed_at = Some(now);
        self.result = Some(result);
        Ok(())
    }

    /// `Pending | Processing → Failed`, keeping `error`.
    pub fn fail(
        &mut self,
        error: impl Into<String>,
        now: Timestamp,
    ) -> Result<(), InvalidTaskTransition> {
        self.transition(
            &[TaskStatus::Pending, TaskStatus::Processing],
            TaskStatus::Failed,
        )?;
        self.completed_at = Some(now);
        self.error = Some(error.into());
        Ok(())
    }

    /// `Failed → Pending`, counting one retry; the last error is kept until the next outcome.
    pub fn retry(&mut self) -> Result<(), InvalidTaskTransition> {
        self.transition(&[TaskStatus::Failed], TaskStatus::Pending)?;
        // Saturating: nothing bounds the retries of a task driven by a caller (the processor
        // stops at its `RetryConfig`), and the 2^32nd one panicked in a debug build, or
        // wrapped the count to 0 in a release one.
        self.retry_count = self.retry_count.saturating_add(1);
        self.started_at = None;
        self.completed_at = None;
        Ok(())
    }

    /// The seed's progress contribution: `(index + 1) / total` once completed, `index / total`
    /// before. It is the fraction of the input *up to and including* this chunk, which is the
    /// overall progress only when chunks finish in order; a parallel run's overall progress is
    /// [`Progress::fraction`](super::Progress::fraction) instead.
    ///
    /// Differences from the seed: zero chunks count as done (1.0), where the seed raised
    /// `ZeroDivisionError`; and the division is in `f64`, so above 2^53 chunks the result may
    /// differ in the last bits from the seed's exactly rounded integer division; and a chunk
    /// numbered at or past the total (which the seed did not check either) counts as the
    /// last one, so the result is never above 1.0 — the seed gave 1.5 for chunk 5 of 4,
    /// completed, a fraction no progress bar can show.
    pub fn get_progress(&self) -> f64 {
        if self.total_chunks == 0 {
            return 1.0;
        }
        let position = if self.status == TaskStatus::Completed {
            // Saturating: the index comes from the caller's `ChunkInfo`, and `usize::MAX + 1`
            // panicked (debug) or wrapped to a progress of 0 (release).
            self.index.saturating_add(1)
        } else {
            self.index
        };
        position.min(self.total_chunks) as f64 / self.total_chunks as f64
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The run the task belongs to.
    pub fn processing_id(&self) -> ProcessingId {
        self.processing_id
    }

    /// The chunk.
    pub fn chunk(&self) -> &AudioChunk {
        &self.chunk
    }

    /// Position in the input.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Chunks in the run.
    pub fn total_chunks(&self) -> usize {
        self.total_chunks
    }

    /// The current state.
    pub fn status(&self) -> TaskStatus {
        self.status
    }

    /// Retries so far.
    pub fn retry_count(&self) -> u32 {
        self.retry_count
    }

    /// Calls of the chunk function, this attempt included: 1 + [`Self::retry_count`],
    /// saturating at `u32::MAX` (a processor allowed `u32::MAX` retries makes one more call
    /// than that). Computed with `+ 1`, the run's outcome after the last retry overflowed: a
    /// panic in a debug build, 0 attempts in a release one.
    pub(crate) fn attempts(&self) -> u32 {
        self.retry_count.saturating_add(1)
    }

    /// When the current attempt started.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.started_at
    }

    /// When the task completed or failed.
    pub fn completed_at(&self) -> Option<Timestamp> {
        self.completed_at
    }

    /// The result, once completed.
    pub fn result(&self) -> Option<&ChunkResult> {
        self.result.as_ref()
    }

    /// The last error, if any attempt failed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The result, taken out of a completed task.
    pub fn into_result(self) -> Option<ChunkResult> {
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(index: usize, total: usize) -> ProcessingTask {
        let info = ChunkInfo {
            index,
            kind: ChunkKind::Bytes,
            source_offset: 0,
            source_len: 1,
            new_bytes: 1,
            start_time: None,
            duration: None,
            overlap: None,
        };
        ProcessingTask::new(
            ProcessingId::generate(),
            AudioChunk::new(info, Bytes::from_static(b"x")),
            total,
        )
    }

    const T: Timestamp = Timestamp::from_nanos(7);

    /// Bug: `retry` counted with `+= 1`, and the retry after `u32::MAX` of them panicked
    /// ("attempt to add with overflow") in a debug build, or wrapped the count to 0.
    #[test]
    fn the_retry_count_saturates() {
        let mut t = task(0, 1);
        t.retry_count = u32::MAX - 1;
        for _ in 0..2 {
            t.start(T).unwrap();
            t.fail("boom", T).unwrap();
            t.retry().unwrap();
        }
        assert_eq!(
            (t.status(), t.retry_count()),
            (TaskStatus::Pending, u32::MAX)
        );
    }

    /// Bug: a run reported `retry_count() + 1` attempts, which overflowed after `u32::MAX`
    /// retries (a `RetryConfig` may allow that many): it saturates instead.
    #[test]
    fn the_attempts_saturate() {
        let mut t = task(0, 1);
        assert_eq!(t.attempts(), 1);
        t.retry_count = u32::MAX - 1;
        assert_eq!(t.attempts(), u32::MAX);
        t.retry_count = u32::MAX;
        assert_eq!(t.attempts(), u32::MAX);
    }

    #[test]
    fn legal_lifecycle_with_a_retry() {
        let mut t = task(2, 4);
        assert_eq!((t.status(), t.get_progress()), (TaskStatus::Pending, 0.5));
        t.start(T).unwrap();
        t.fail("boom", T).unwrap();
        assert_eq!((t.status(), t.error()), (TaskStatus::Failed, Some("boom")));
        t.retry().unwrap();
        assert_eq!(
            (t.status(), t.retry_count(), t.started_at()),
            (TaskStatus::Pending, 1, None)
        );
        t.start(T).unwrap();
        t.complete(ChunkResult::from_text("ok"), T).unwrap();
        assert_eq!(t.get_progress(), 0.75);
        assert_eq!(t.result().map(|r| r.text.as_str()), Some("ok"));
        let last = task(3, 4);
        assert_eq!(last.get_progress(), 0.75);
        assert_eq!(task(0, 0).get_progress(), 1.0);
        assert_ne!(t.id(), last.id());
    }

    #[test]
    fn a_task_reports_its_run_position_times_and_outcome() {
        let run = ProcessingId::generate();
        let info = ChunkInfo {
            index: 2,
            kind: ChunkKind::Wav,
            source_offset: 44,
            source_len: 3,
            new_bytes: 3,
            start_time: None,
            duration: None,
            overlap: None,
        };
        let chunk = AudioChunk::new(info, Bytes::from_static(b"abc"));
        let mut t = ProcessingTask::new(run, chunk.clone(), 5);
        assert_eq!(t.processing_id(), run);
        assert_eq!((t.index(), t.total_chunks()), (2, 5));
        assert_eq!(t.chunk(), &chunk);
        assert!(!t.status().is_terminal());
        assert_eq!((t.started_at(), t.completed_at()), (None, None));

        let [t1, t2, t3, t4] = [7, 9, 11, 13].map(Timestamp::from_nanos);
        t.start(t1).unwrap();
        assert!(!t.status().is_terminal());
        assert_eq!((t.started_at(), t.completed_at()), (Some(t1), None));
        t.fail("boom", t2).unwrap();
        assert!(t.status().is_terminal());
        assert_eq!((t.started_at(), t.completed_at()), (Some(t1), Some(t2)));
        // A retry starts a new attempt: neither time belongs to it yet.
        t.retry().unwrap();
        assert_eq!((t.started_at(), t.completed_at()), (None, None));
        t.start(t3).unwrap();
        t.complete(ChunkResult::from_text("ok"), t4).unwrap();
        assert!(t.status().is_terminal());
        assert_eq!((t.started_at(), t.completed_at()), (Some(t3), Some(t4)));
        let err = t.start(t4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid task transition: cannot move a task from Completed to Processing"
        );
        assert_eq!(t.into_result(), Some(ChunkResult::from_text("ok")));
        assert_eq!(task(0, 1).into_result(), None, "not completed");
    }

    /// Bug: a completed task's position was `index + 1` in `usize`, which overflowed for the
    /// largest index a caller can give ([`ChunkInfo::index`] is public): a panic in a debug
    /// build, and in a release build a wrap to 0, a progress of 0 for a finished chunk.
    #[test]
    fn progress_of_a_completed_task_at_the_largest_index_does_not_overflow() {
        let mut t = task(usize::MAX, usize::MAX);
        assert_eq!(t.get_progress(), 1.0);
        t.start(T).unwrap();
        t.complete(ChunkResult::default(), T).unwrap();
        assert_eq!(t.get_progress(), 1.0);
    }

    #[test]
    fn ids_are_distinct_and_display_their_number() {
        let (a, b) = (TaskId::generate(), TaskId::generate());
        assert_ne!(a.get(), b.get());
        assert_eq!(a.to_string(), format!("task-{}", a.get()));
        let (p, q) = (ProcessingId::generate(), ProcessingId::generate());
        assert_ne!(p.get(), q.get());
        assert_eq!(p.to_string(), format!("processing-{}", p.get()));
    }

    #[test]
    fn every_illegal_transition_is_refused_and_changes_nothing() {
        use TaskStatus::*;
        type Op = fn(&mut ProcessingTask) -> Result<(), InvalidTaskTransition>;
        let ops: [(TaskStatus, Op); 4] = [
            (Processing, |t| t.start(T)),
            (Completed, |t| t.complete(ChunkResult::default(), T)),
            (Failed, |t| t.fail("x", T)),
            (Pending, |t| t.retry()),
        ];
        let legal = |from: TaskStatus, to: TaskStatus| {
            matches!(
                (from, to),
                (Pending, Processing)
                    | (Processing, Completed)
                    | (Pending | Processing, Failed)
                    | (Failed, Pending)
            )
        };
        let reach = |status: TaskStatus| {
            let mut t = task(0, 1);
            match status {
                Pending => {}
                Processing => t.start(T).unwrap(),
                Completed => {
                    t.start(T).unwrap();
                    t.complete(ChunkResult::default(), T).unwrap();
                }
                Failed => t.fail("f", T).unwrap(),
            }
            t
        };
        for from in [Pending, Processing, Completed, Failed] {
            for (to, op) in ops {
                let mut t = reach(from);
                let before = format!("{t:?}");
                match op(&mut t) {
                    Ok(()) => assert!(legal(from, to), "{from} -> {to} was allowed"),
                    Err(e) => {
                        assert!(!legal(from, to), "{from} -> {to} was refused");
                        assert_eq!(e, InvalidTaskTransition { from, to });
                        assert!(e.to_string().contains(&format!("from {from} to {to}")));
                        assert_eq!(format!("{t:?}"), before);
                    }
                }
            }
        }
    }
}
