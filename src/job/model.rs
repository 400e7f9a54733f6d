//! The [`Job`] entity and its value objects.
//!
//! # The state machine
//!
//! The seed checked only two of its transitions (`start_processing`, `complete`); `fail` and
//! `schedule_retry` could be applied to any job, so a completed job could be failed and a job
//! with no retries left re-queued. Here every transition is checked and every illegal one is an
//! [`InvalidStateTransition`] naming both states. The whole table:
//!
//! | method                 | from                 | to           | also requires      |
//! |------------------------|----------------------|--------------|--------------------|
//! | [`Job::start_processing`] | Queued            | Processing   |                    |
//! | [`Job::complete`]      | Processing           | Completed    |                    |
//! | [`Job::complete_memoized`] | Queued           | Completed    |                    |
//! | [`Job::fail`]          | Queued, Processing   | Failed       |                    |
//! | [`Job::schedule_retry`] | Processing          | Queued       | [`Job::can_retry`] |
//! | [`Job::release`]       | Processing           | Queued       |                    |
//! | [`Job::cancel`]        | Queued, Processing   | Cancelled    |                    |
//! | [`Job::reopen`]        | Failed               | Queued       |                    |
//!
//! [`JobStatus::Cancelled`] is not in the seed, whose four statuses had no way to say "nobody
//! wants this any more"; a cancelled job is terminal like a completed or failed one.
//!
//! The two checks the seed did make could never pass as written: they compared with
//! `JobStatus.QUEUED` and `JobStatus.PROCESSING`, class variables it declared but left at
//! `None`, so every `start_processing` and `complete` raised. The value objects here are enums,
//! and the checks are the ones the seed evidently meant (a status equal to `queued()`).
//!
//! # Time
//!
//! Timestamps come from the [`crate::Clock`] of the queue that runs the job, so the domain
//! methods take the time as an argument instead of reading a wall clock as the seed did; a job
//! built outside a queue has `created_at` at the clock's epoch until a queue stamps it on submit.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU8;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use uuid::Uuid;

use crate::key::{self, CacheKey, KeyError};
use crate::time::Timestamp;

/// The number of retries a job gets unless told otherwise (the seed's default).
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// A job's identity: a random (version 4) UUID.
///
/// Parsing is stricter than the seed's `from_string` (Python's `UUID(s)`). It accepts the
/// standard spellings (hyphenated, simple, braced, URN; any case), not Python's looser ones
/// (hyphens anywhere, an unbalanced brace), and only a version-4 UUID, where the seed took any
/// version (the nil UUID too), none of which its `generate` makes.
///
/// ```
/// use memocache::JobId;
/// let id = JobId::generate();
/// assert_eq!(id.to_string().parse::<JobId>()?, id);
/// assert!("not-a-uuid".parse::<JobId>().is_err());
/// // Only version 4 names a job: the nil UUID and other versions are refused.
/// assert!("00000000-0000-0000-0000-000000000000".parse::<JobId>().is_err());
/// assert!("6ba7b810-9dad-11d1-80b4-00c04fd430c8".parse::<JobId>().is_err());
/// # Ok::<(), memocache::JobIdError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobId(Uuid);

/// A string that is not a version-4 UUID was parsed as a [`JobId`].
#[derive(Debug, thiserror::Error)]
#[error("invalid job id {input:?}: {problem}")]
pub struct JobIdError {
    input: String,
    problem: JobIdProblem,
}

/// What is wrong with a string parsed as a [`JobId`].
#[derive(Debug, thiserror::Error)]
enum JobIdProblem {
    #[error("{0}")]
    NotAUuid(#[source] uuid::Error),
    /// A well-formed UUID of another version (or variant): no [`JobId::generate`] makes one,
    /// so it cannot name a job, and saying so beats a lookup that finds nothing.
    #[error("a job id is a random (version 4) UUID, this one is {0}")]
    NotVersion4(String),
}

impl JobId {
    /// A fresh random id.
    pub fn generate() -> JobId {
        JobId(Uuid::new_v4())
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Hash for JobId {
    /// Hashes one word: the two halves of the UUID folded together. Version-4 UUIDs carry 122
    /// random bits, so this loses nothing a hash table needs and hashes in a single step.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (hi, lo) = self.0.as_u64_pair();
        state.write_u64(hi ^ lo);
    }
}

impl FromStr for JobId {
    type Err = JobIdError;
    fn from_str(s: &str) -> Result<JobId, JobIdError> {
        let error = |problem| JobIdError {
            input: s.to_owned(),
            problem,
        };
        let uuid = Uuid::parse_str(s).map_err(|e| error(JobIdProblem::NotAUuid(e)))?;
        let kind = match (uuid.get_variant(), uuid.get_version_num()) {
            (uuid::Variant::RFC4122, 4) => return Ok(JobId(uuid)),
            _ if uuid.is_nil() => "the nil UUID".to_owned(),
            (uuid::Variant::RFC4122, version) => format!("version {version}"),
            (variant, _) => format!("of the {variant:?} variant, not RFC 4122"),
        };
        Err(error(JobIdProblem::NotVersion4(kind)))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0.hyphenated())
    }
}

/// What kind of work a job is; a worker pool has one handler per type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobType {
    /// Speech to text of an audio file.
    Transcription,
    /// Summarizing a transcript.
    Summarization,
    /// Indexing a transcript for search.
    Indexing,
    /// Translating a transcript.
    Translation,
}

impl JobType {
    /// Every job type, in declaration order.
    pub const ALL: [JobType; 4] = [
        JobType::Transcription,
        JobType::Summarization,
        JobType::Indexing,
        JobType::Translation,
    ];

    /// The cache-key prefix under which results of this type are memoized. A job's memo key
    /// must be under its type's prefix ([`Job::transcription`] and [`Job::keyed`] make such
    /// keys), so that jobs of two types never share a key; a queue refuses any other key
    /// ([`crate::QueueError::MemoKeyPrefix`]).
    pub const fn key_prefix(self) -> &'static str {
        match self {
            JobType::Transcription => "transcript",
            JobType::Summarization => "summary",
            JobType::Indexing => "index",
            JobType::Translation => "translation",
        }
    }

    /// Whether `key` is under this type's prefix ([`JobType::key_prefix`]), as a queue
    /// requires of a job's memo key. By the prefixes' numbers in the process's table, the
    /// types' interned on the first call: a queue asks at every keyed submit, where comparing
    /// the names added about 45 instructions, the numbers 10 (callgrind). A type whose prefix
    /// could not be interned (a full table, which never empties) has `None`: no key has it.
    pub(crate) fn owns(self, key: &CacheKey) -> bool {
        static NUMBERS: OnceLock<[Option<u16>; 4]> = OnceLock::new();
        let numbers = NUMBERS
            .get_or_init(|| JobType::ALL.map(|t| key::prefix_number_of(t.key_prefix()).ok()));
        numbers[self.index()] == Some(key.prefix_number())
    }

    /// Position in [`JobType::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobType::Transcription => "TRANSCRIPTION",
            JobType::Summarization => "SUMMARIZATION",
            JobType::Indexing => "INDEXING",
            JobType::Translation => "TRANSLATION",
        })
    }
}

/// How urgent a job is: `High > Medium > Low`, numbered 3, 2, 1 as in the seed.
///
/// The order is total here; the seed defined only `>` (and Python's reflected `<`), so `>=`
/// raised. The default, [`JobPriority::Medium`] (what [`Job::new`] gives), is not in the seed,
/// whose jobs always named one.
///
/// ```
/// use memocache::JobPriority;
/// assert!(JobPriority::High > JobPriority::Low);
/// assert_eq!(JobPriority::try_from(2), Ok(JobPriority::Medium));
/// assert!(JobPriority::try_from(4).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum JobPriority {
    /// 1.
    Low = 1,
    /// 2.
    #[default]
    Medium = 2,
    /// 3.
    High = 3,
}

/// A number other than 1, 2 or 3 was given as a [`JobPriority`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid job priority {0}: must be 1 (LOW), 2 (MEDIUM) or 3 (HIGH)")]
pub struct InvalidPriority(pub u8);

impl JobPriority {
    /// Every priority, lowest first.
    pub const ALL: [JobPriority; 3] = [JobPriority::Low, JobPriority::Medium, JobPriority::High];

    /// The seed's number: 1, 2 or 3.
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// 0, 1 or 2: a dense index for per-priority tables.
    pub(crate) const fn index(self) -> usize {
        self as usize - 1
    }
}

impl TryFrom<u8> for JobPriority {
    type Error = InvalidPriority;
    fn try_from(value: u8) -> Result<JobPriority, InvalidPriority> {
        match value {
            1 => Ok(JobPriority::Low),
            2 => Ok(JobPriority::Medium),
            3 => Ok(JobPriority::High),
            other => Err(InvalidPriority(other)),
        }
    }
}

impl fmt::Display for JobPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobPriority::Low => "LOW",
            JobPriority::Medium => "MEDIUM",
            JobPriority::High => "HIGH",
        })
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting to run: ready, waiting out a retry delay, or coalesced onto an identical job.
    Queued,
    /// Leased to a worker.
    Processing,
    /// Finished with a result (terminal).
    Completed,
    /// Gave up: retries exhausted (terminal; the queue keeps it in its dead-letter list).
    Failed,
    /// Cancelled before it finished (terminal; not in the seed).
    Cancelled,
}

impl JobStatus {
    /// Whether the job will never change again (short of [`Job::reopen`] on a failed job).
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobStatus::Queued => "QUEUED",
            JobStatus::Processing => "PROCESSING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        })
    }
}

/// A job's input: opaque bytes the queue never looks inside (the host encrypts them).
///
/// Cloning is cheap (a reference count), and `Debug` shows only the length so that payloads do
/// not end up in logs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct JobPayload(Bytes);

impl JobPayload {
    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, consuming the payload.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl<T: Into<Bytes>> From<T> for JobPayload {
    fn from(bytes: T) -> JobPayload {
        JobPayload(bytes.into())
    }
}

impl fmt::Debug for JobPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobPayload({} bytes)", self.0.len())
    }
}

/// A job's output: opaque bytes, stored in the cache when the job is memoized.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct JobResult(Bytes);

impl JobResult {
    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, consuming the result.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl<T: Into<Bytes>> From<T> for JobResult {
    fn from(bytes: T) -> JobResult {
        JobResult(bytes.into())
    }
}

impl fmt::Debug for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobResult({} bytes)", self.0.len())
    }
}

/// The name of a worker.
///
/// Cloning is cheap and, for a name of up to 15 bytes (a pool's `worker-12` is 9), touches no
/// shared memory: such a name is kept inline, and a clone is a copy of its bytes and a test of
/// a null pointer. A longer one is a shared string, whose
/// clone counts a reference. Why it matters: a take clones the worker's name twice (into the
/// job and into the lease) and each clone is dropped later, so a shared string cost every job
/// four atomic read-modify-writes, as many as the queue's locks in a `complete_and_next` loop
/// (the README's job queue section has the measurements).
#[derive(Clone)]
pub struct WorkerId(Name);

/// A [`WorkerId`]'s text. A name is inline exactly when it fits, so that two equal names are
/// always kept the same way and the derived `PartialEq` and `Hash` agree with the text's.
///
/// A struct, not an enum of the two ways: a clone (two a take, see [`WorkerId`]) copies the
/// inline bytes whole and tests one pointer, with no variant to match. The enum kept 22
/// bytes inline, but its clone copied them in pieces through the stack (callgrind, one
/// thread: about 13 instructions a job more, in `next` + `complete` and in
/// `complete_and_next`); 15 bytes still hold a pool's worker names.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Name {
    /// An inline name's bytes, zero after it; all zero for a shared one.
    bytes: [u8; Name::INLINE],
    /// An inline name's length plus one (one for a shared name): never zero, which leaves
    /// `Option<WorkerId>` the niche that keeps it 24 bytes.
    len: NonZeroU8,
    /// A name too long to be inline. Boxed so that the pointer is one word.
    shared: Option<Arc<Box<str>>>,
}

impl Name {
    /// The longest name kept inline: with its length and the pointer, 24 bytes.
    const INLINE: usize = 15;

    fn new(name: &str) -> Name {
        let mut bytes = [0; Name::INLINE];
        match (bytes.get_mut(..name.len()), u8::try_from(name.len() + 1)) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(name.as_bytes());
                Name {
                    bytes,
                    len: NonZeroU8::new(len).unwrap_or(NonZeroU8::MIN),
                    shared: None,
                }
            }
            _ => Name {
                bytes,
                len: NonZeroU8::MIN,
                shared: Some(Arc::new(Box::from(name))),
            },
        }
    }

    fn as_str(&self) -> &str {
        match &self.shared {
            // Copied whole from a `str` in `new`, so always in bounds and UTF-8; the empty
            // fallback is never taken and saves an `unsafe` unchecked conversion.
            None => self
                .bytes
                .get(..usize::from(self.len.get() - 1))
                .and_then(|text| std::str::from_utf8(text).ok())
                .unwrap_or_default(),
            Some(name) => name,
        }
    }
}

impl WorkerId {
    /// A worker named `name`.
    pub fn new(name: impl AsRef<str>) -> WorkerId {
        WorkerId(Name::new(name.as_ref()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for WorkerId {
    fn eq(&self, other: &WorkerId) -> bool {
        self.0 == other.0
    }
}

impl Eq for WorkerId {}

impl std::hash::Hash for WorkerId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Ordered by name, as strings are.
impl PartialOrd for WorkerId {
    fn partial_cmp(&self, other: &WorkerId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for WorkerId {
    fn cmp(&self, other: &WorkerId) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl From<&str> for WorkerId {
    fn from(name: &str) -> WorkerId {
        WorkerId::new(name)
    }
}

impl From<String> for WorkerId {
    fn from(name: String) -> WorkerId {
        WorkerId::new(name)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerId({:?})", self.as_str())
    }
}

/// Where a job's retry budget comes from (see [`Job::max_retries`]).
#[derive(Clone, Copy, Debug)]
enum RetryBudget {
    /// Never submitted and none of its own: [`DEFAULT_MAX_RETRIES`].
    Unset,
    /// Its own ([`Job::with_max_retries`]), in any queue.
    Own(u32),
    /// The `max_retries` of the queue it was last submitted to, replaced at every submit.
    Queue(u32),
}

/// A transition the state machine does not allow (see the module docs for the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("job {job}: cannot move from {from} to {to}: {reason}")]
pub struct InvalidStateTransition {
    /// The job.
    pub job: JobId,
    /// Its status, unchanged by the refused call.
    pub from: JobStatus,
    /// The status the call would have moved it to.
    pub to: JobStatus,
    /// Why not.
    pub reason: &'static str,
}

/// A unit of work: the seed's `Job` entity.
///
/// Equality is by identity (the seed's "entities compare by identity"): two values with the same
/// [`JobId`] are the same job, whatever their other fields say.
///
/// ```
/// use memocache::{Job, JobPriority, JobStatus, JobType, Timestamp};
///
/// let mut job =
///     Job::new(JobType::Summarization, &b"encrypted"[..]).with_priority(JobPriority::High);
/// job.start_processing("worker-1".into(), Timestamp::from_nanos(5))?;
/// job.complete(b"summary".to_vec().into(), Timestamp::from_nanos(9))?;
/// assert_eq!(job.status(), JobStatus::Completed);
/// assert!(job.fail("too late".into(), Timestamp::from_nanos(10)).is_err());
/// # Ok::<(), memocache::InvalidStateTransition>(())
/// ```
#[derive(Clone, Debug)]
pub struct Job {
    id: JobId,
    job_type: JobType,
    payload: JobPayload,
    priority: JobPriority,
    status: JobStatus,
    retry_count: u32,
    max_retries: RetryBudget,
    created_at: Timestamp,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    /// Boxed rather than a `String`: set once, never grown, and 8 bytes smaller, which keeps
    /// the queue's record within the 256 bytes `memcpy` copies fastest (see its tests).
    error_message: Option<Box<str>>,
    worker_id: Option<WorkerId>,
    result: Option<JobResult>,
    memo_key: Option<CacheKey>,
}

impl PartialEq for Job {
    fn eq(&self, other: &Job) -> bool {
        self.id == other.id
    }
}

impl Eq for Job {}

impl Job {
    /// A new queued job with a fresh id, [`JobPriority::Medium`], and no memo key (it always
    /// runs, and identical jobs are not coalesced).
    pub fn new(job_type: JobType, payload: impl Into<JobPayload>) -> Job {
        Job {
            id: JobId::generate(),
            job_type,
            payload: payload.into(),
            priority: JobPriority::Medium,
            status: JobStatus::Queued,
            retry_count: 0,
            max_retries: RetryBudget::Unset,
            created_at: Timestamp::ZERO,
            started_at: None,
            completed_at: None,
            error_message: None,
            worker_id: None,
            result: None,
            memo_key: None,
        }
    }

    /// A transcription of the audio whose SHA-256 is `file_hash`, in `language`, memoized under
    /// [`CacheKey::transcript`]`(file_hash, language)`.
    ///
    /// Fails if `file_hash` is not 64 hex digits or `language` is not a valid language tag.
    pub fn transcription(
        file_hash: &str,
        language: &str,
        payload: impl Into<JobPayload>,
    ) -> Result<Job, KeyError> {
        let key = CacheKey::transcript(file_hash, language)?;
        Ok(Job::new(JobType::Transcription, payload).with_memo_key(key))
    }

    /// A job of `job_type` memoized under the multi-part key of `parts`
    /// (`CacheKey::builder(job_type.key_prefix())` with each part appended in order).
    ///
    /// The parts must name everything the result depends on: two jobs with the same parts are
    /// treated as the same computation and run once.
    pub fn keyed<P: AsRef<[u8]>>(
        job_type: JobType,
        parts: impl IntoIterator<Item = P>,
        payload: impl Into<JobPayload>,
    ) -> Result<Job, KeyError> {
        let key = parts
            .into_iter()
            .fold(CacheKey::builder(job_type.key_prefix())?, |b, part| {
                b.part(part)
            })
            .finish();
        Ok(Job::new(job_type, payload).with_memo_key(key))
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: JobPriority) -> Job {
        self.priority = priority;
        self
    }

    /// Sets how many retries this job gets, overriding the [`crate::RetryConfig`] of any
    /// queue it is submitted to.
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Job {
        self.max_retries = RetryBudget::Own(max_retries);
        self
    }

    /// Sets the key under which the result is memoized and identical jobs are coalesced. It
    /// must be under the job type's prefix ([`JobType::key_prefix`]), or a queue refuses the
    /// job ([`crate::QueueError::MemoKeyPrefix`]): a key names one type's results.
    #[must_use]
    pub fn with_memo_key(mut self, key: CacheKey) -> Job {
        self.memo_key = Some(key);
        self
    }

    /// The identity.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The kind of work.
    pub fn job_type(&self) -> JobType {
        self.job_type
    }

    /// The input.
    pub fn payload(&self) -> &JobPayload {
        &self.payload
    }

    /// The priority, as submitted. A queue may run the job at a higher one while a more
    /// urgent identical job is coalesced onto it (see [`crate::job::memo`]); that raise is
    /// the queue's and is not written here.
    pub fn priority(&self) -> JobPriority {
        self.priority
    }

    /// The status.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// How many retries have been scheduled so far in the queue that has the job: a submit
    /// starts it at 0, as a dead letter's re-submit does (see [`Job::max_retries`]).
    pub fn retry_count(&self) -> u32 {
        self.retry_count
    }

    /// How many retries the job gets: its own [`Job::with_max_retries`], else the
    /// `max_retries` of the [`crate::RetryConfig`] of the queue it was last submitted to,
    /// stamped on submit, else (never submitted) [`DEFAULT_MAX_RETRIES`].
    ///
    /// A job's retry budget is the queue's that runs it: a copy of a job taken out of one
    /// queue ([`crate::JobQueue::get`], or a dead letter [reopened](Job::reopen)) and
    /// submitted to another gets the other queue's `max_retries` (unless it has its own) and
    /// starts with no retries used ([`Job::retry_count`] 0), as a job new to that queue.
    /// (The first queue's stamp used to go with the copy as if it were the job's own, and so
    /// did the retries used there.)
    pub fn max_retries(&self) -> u32 {
        match self.max_retries {
            RetryBudget::Own(n) | RetryBudget::Queue(n) => n,
            RetryBudget::Unset => DEFAULT_MAX_RETRIES,
        }
    }

    /// When a queue accepted the job (the clock's epoch before that).
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When the current attempt started.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.started_at
    }

    /// When the job reached a terminal status.
    pub fn completed_at(&self) -> Option<Timestamp> {
        self.completed_at
    }

    /// The last error: of the final failure, or of the attempt before a retry.
    pub fn error_message(&self) -> Option<&str> {
        self.error_message.as_deref()
    }

    /// The worker running the job.
    pub fn worker_id(&self) -> Option<&WorkerId> {
        self.worker_id.as_ref()
    }

    /// The result of a completed job.
    pub fn result(&self) -> Option<&JobResult> {
        self.result.as_ref()
    }

    /// The memo key, if the job is memoized.
    pub fn memo_key(&self) -> Option<&CacheKey> {
        self.memo_key.as_ref()
    }

    /// Whether another retry is allowed: `retry_count < max_retries`, as in the seed.
    pub fn can_retry(&self) -> bool {
        self.retry_count < self.max_retries()
    }

    fn refuse(&self, to: JobStatus, reason: &'static str) -> InvalidStateTransition {
        InvalidStateTransition {
            job: self.id,
            from: self.status,
            to,
            reason,
        }
    }

    /// Queued → Processing on `worker_id`.
    #[inline]
    pub fn start_processing(
        &mut self,
        worker_id: WorkerId,
        now: Timestamp,
    ) -> Result<(), InvalidStateTransition> {
        self.start_processing_on(|| worker_id, now)
    }

    /// [`Job::start_processing`] on the worker `worker_id` makes, made only if the job can
    /// start: a queue's take clones its worker's id straight into the job, where a clone
    /// passed by value was built on the stack and copied in.
    #[inline(always)]
    pub(crate) fn start_processing_on(
        &mut self,
        worker_id: impl FnOnce() -> WorkerId,
        now: Timestamp,
    ) -> Result<(), InvalidStateTransition> {
        if self.status != JobStatus::Queued {
            return Err(self.refuse(JobStatus::Processing, "only a queued job can start"));
        }
        self.status = JobStatus::Processing;
        self.started_at = Some(now);
        match &mut self.worker_id {
            // A queued job has no worker (`new`, `back_to_queue` and `reopen` see to it), so
            // nothing is dropped here and the id is written straight into its place; as one
            // assignment, with a possible drop in between, it went through two copies on the
            // stack first (callgrind, one thread: about 7-12 instructions a job more).
            slot @ None => *slot = Some(worker_id()),
            slot @ Some(_) => *slot = Some(worker_id()),
        }
        Ok(())
    }

    /// Processing → Completed with `result`.
    pub fn complete(
        &mut self,
        result: JobResult,
        now: Timestamp,
    ) -> Result<(), InvalidStateTransition> {
        if self.status != JobStatus::Processing {
            return Err(self.refuse(JobStatus::Completed, "only a processing job can complete"));
        }
        self.finish(JobStatus::Completed, now);
        self.result = Some(result);
        Ok(())
    }

    /// Queued → Completed with a result computed elsewhere (a memo hit, or the result of the
    /// identical job this one was coalesced with); no worker ever ran it.
    pub fn complete_memoized(
        &mut self,
        result: JobResult,
        now: Timestamp,
    ) -> Result<(), InvalidStateTransition> {
        if self.status != JobStatus::Queued {
            return Err(self.refuse(
                JobStatus::Completed,
                "only a queued job can take a memoized result",
            ));
        }
        self.finish(JobStatus::Completed, now);
        self.result = Some(result);
        Ok(())
    }

    /// Queued or Processing → Failed with `error`. A terminal job cannot fail (the seed allowed
    /// it, overwriting a completed job's outcome).
    pub fn fail(&mut self, error: String, now: Timestamp) -> Result<(), InvalidStateTransition> {
        if self.status.is_terminal() {
            return Err(self.refuse(JobStatus::Failed, "the job already finished"));
        }
        self.finish(JobStatus::Failed, now);
        self.error_message = Some(error.into_boxed_str());
        Ok(())
    }

    /// Processing → Queued after a failed attempt, counting one retry.
    ///
    /// Requires [`Job::can_retry`]; the seed re-queued unconditionally.
    pub fn schedule_retry(&mut self, error: String) -> Result<(), InvalidStateTransition> {
        if self.status != JobStatus::Processing {
            return Err(self.refuse(JobStatus::Queued, "only a processing job can be retried"));
        }
        if !self.can_retry() {
            return Err(self.refuse(JobStatus::Queued, "the job has no retries left"));
        }
        self.retry_count += 1;
        self.back_to_queue();
        self.error_message = Some(error.into_boxed_str());
        Ok(())
    }

    /// Processing → Queued without counting a retry: the worker gives the job back unrun (for
    /// example because it is shutting down).
    pub fn release(&mut self) -> Result<(), InvalidStateTransition> {
        if self.status != JobStatus::Processing {
            return Err(self.refuse(JobStatus::Queued, "only a processing job can be released"));
        }
        self.back_to_queue();
        Ok(())
    }

    /// Queued or Processing → Cancelled.
    pub fn cancel(&mut self, now: Timestamp) -> Result<(), InvalidStateTransition> {
        if self.status.is_terminal() {
            return Err(self.refuse(JobStatus::Cancelled, "the job already finished"));
        }
        self.finish(JobStatus::Cancelled, now);
        Ok(())
    }

    /// Failed → Queued with a fresh retry budget: a dead letter is given another chance. The
    /// last error is kept for reference until the next attempt.
    pub fn reopen(&mut self) -> Result<(), InvalidStateTransition> {
        if self.status != JobStatus::Failed {
            return Err(self.refuse(JobStatus::Queued, "only a failed job can be reopened"));
        }
        self.status = JobStatus::Queued;
        self.retry_count = 0;
        self.started_at = None;
        self.completed_at = None;
        self.worker_id = None;
        Ok(())
    }

    fn back_to_queue(&mut self) {
        self.status = JobStatus::Queued;
        self.started_at = None;
        self.worker_id = None;
    }

    fn finish(&mut self, status: JobStatus, now: Timestamp) {
        self.status = status;
        self.completed_at = Some(now);
    }

    /// What a queue does on submit: stamps the time and, unless the job has its own, the
    /// queue's `max_retries`, and counts no retries yet (the job may be a copy of one that
    /// another queue ran: see [`Job::max_retries`]).
    pub(crate) fn stamp_submitted(&mut self, now: Timestamp, default_max_retries: u32) {
        self.created_at = now;
        self.retry_count = 0;
        if !matches!(self.max_retries, RetryBudget::Own(_)) {
            self.max_retries = RetryBudget::Queue(default_max_retries);
        }
    }
}
