//! [`JobQueue`]: a priority job queue with aging, delayed retries, leases and a dead letter.
//!
//! # Design
//!
//! The queue's state sits behind **one main mutex**, but for the intake (below). Every
//! operation is a handful of O(1) or O(log n) steps on small structures, so the lock is held
//! for well under a microsecond and a single lock beats finer-grained schemes at the ≤ 10
//! workers a [`crate::ConcurrencyLimit`] allows; it also makes every transition atomic (a job
//! is never seen half-moved between two structures).
//!
//! * **The intake**: a plain submit does not take the main lock. A producer submitting while a
//!   worker takes and completes jobs made the two threads hand the main lock (and the records
//!   under it) back and forth on every job, and the queue's critical sections are about twice
//!   the `Mutex<BinaryHeap>` baseline's, so two threads ran at 0.67–0.87 of it while one ran
//!   at par. A submit with no memo key, while the queue has room by a conservative count, takes
//!   only the **intake lock**: it checks the job index for a duplicate, takes a slot for the
//!   record, files the index entry and pushes the job, stamped with the time it read before
//!   the lock, onto the intake's list. Every call that takes the main lock first **drains** the
//!   intake: it moves the jobs into their records and ready deques in submission order, each
//!   after the retries and expired leases that fell due by its submit time (the maintenance a
//!   submit under the main lock ran), under the main lock, holding the intake lock only to
//!   swap the list with an empty one. So a job
//!   whose submit returned before a call is seen by that call, and sequential callers see the
//!   order, priorities, sequence numbers and ages they saw with one lock. Everything else is
//!   the **slow path**, under the main lock after a drain, as every submit was before: a memo
//!   key (memo hit, coalescing), a count that says full (then the exact count decides, and the
//!   submit may wait for room), or an id already in the index, which is a duplicate or the
//!   entry of a record just dropped whose removal is not handed back yet (see *Storage*).
//!
//!   - *Drain check*: a call looks at one flag (`Signals::pending`), which a fast submit writes
//!     only when it makes the intake non-empty and the drain clears, so a worker does not pull
//!     the line the producer writes at every submit. The flag is written under the intake lock
//!     and read `Relaxed`: a submit that returned *before* a call (ordered before it by the
//!     program or by whatever synchronisation made it "before") happens-before the call's
//!     load, which then reads its `true` or a later value, and a later `false` is written only
//!     by a drain, under the main lock, which the call then holds: the job is in `State`
//!     either way. A submit concurrent with the call may be missed; it is then concurrent.
//!   - *Capacity*: a fast submit has room if `Signals::live` plus the intake's length is below
//!     the capacity. `Signals::live` is at least the true `State::live`: it is written only
//!     by the main lock's holder, under the intake lock too, by a drain (the live jobs plus
//!     the ones it takes, in the same hold of the intake lock as the swap) and by a slow path
//!     that claims a place (`State::live + 1`, before admitting the job); `State::live` only
//!     goes down in between. So the intake's
//!     jobs and the live ones never exceed the capacity; finishing jobs are noticed at the
//!     next drain, and until then a producer at the limit takes the slow path, whose exact
//!     count decides.
//!   - *Waking a taker*: a notify made without the main lock could fall between a taker's last
//!     look for a job and its wait. A fast submit reads `Signals::waiting` (the job types the
//!     takers blocked in [`JobQueue::next`] accept) after releasing the intake lock, and if
//!     its job's type is among them takes the main lock (which drains), then notifies the
//!     takers that accept it. A taker about to wait writes `Signals::waiting`, then looks at
//!     the intake under the intake lock, and waits (releasing the main lock atomically) only
//!     if it holds no job of a type it accepts. Either the submit's hold of the intake lock
//!     came first, and the taker sees its job, or the taker's did, and the submit, taking the
//!     lock after it, sees the types (lock release and acquire order the write before the
//!     read), and its notify comes after the taker started waiting.
//!   - *Takers by type*: blocked takers wait on one condition variable per set of job types
//!     they accept (a pool's workers all accept the types it has handlers for), and a job
//!     made ready wakes only the sets that accept its type. With one condition variable an
//!     idle worker was woken by every submit of a type it does not take, to look and sleep
//!     again: a taker of Transcription jobs went round its wait 200 times for 100 Indexing
//!     submits a millisecond apart, against 4 to 6 (its 50 ms wait slices) now. The hot path
//!     pays two instructions a submit (the job's type kept across the intake lock; the test
//!     of the signal is as before, its type checked out of line only with a taker waiting).
//!   - *Trade-offs*: a plain submit costs one lock as before, but the job is copied twice
//!     (into the intake, then into its record) instead of once, a worker takes the intake lock
//!     at every drain, and the index removals go through a list (session 18, callgrind, one
//!     thread with a drain for every job: 1,250 → 1,382 instructions a job with `next` +
//!     `complete`, 1,236 → 1,360 with `complete_and_next`). In return the producer no longer
//!     waits for the lock a busy worker holds: in the paired bench's two-thread rows the queue
//!     ran at 1.05–1.35 of the heap in twelve runs at load averages of 2 to 8, steadier than
//!     the single lock's 0.87–1.61 in the runs alternating with them but lower in most; on
//!     the idle machine, where the single lock fell short of the heap on two threads
//!     (0.70–1.00 in six runs), the intake reached 0.97–1.20, while one thread fell from
//!     0.90–1.03 to 0.83–0.97 (see the README's queue section). The index needs
//!     the whole id in every entry (see *Storage*), and the slab spans a few more slots (those
//!     dropped since the last drain).
//!
//! * **Ready jobs** live in one FIFO `VecDeque` per (priority, job type), each entry stamped
//!   with a queue-wide sequence number. A take looks at the heads and picks the highest
//!   *effective* priority, then the lowest sequence number: High before Medium before Low,
//!   FIFO within a priority. Splitting by type lets a worker take only the types it has
//!   handlers for without scanning past the others. A 12-bit mask of the non-empty deques
//!   (kept up to date by every push and pop) makes a take visit only the heads that exist —
//!   usually one to three — instead of all twelve. While no ready job has waited an aging
//!   step (the usual case; `ready_since` is a lower bound of their wait starts) none has
//!   aged, and a take looks only at the deques of the highest priority that has jobs.
//! * **Aging**: a job's effective priority rises one level per `aging_step` it has waited, up
//!   to High. Heads are the oldest jobs of their deque, so looking at heads suffices. A Low job
//!   therefore waits at most about `2 * aging_step` before it competes with fresh High work on
//!   equal terms (then FIFO order, i.e. its age, wins), so a steady High load cannot starve it.
//! * **Delayed retries** sit in a map ordered by due time; they hold no worker. Due jobs move
//!   to the back of their ready deque at the next operation that reads the clock, waiting
//!   (for aging) from their due time, in the order they fell due, expired leases among them.
//! * **Leases**: a take leases the job to a worker until `now + lease`. Leases sit in a list
//!   ordered by deadline (see *Storage*); an expired lease is treated as a failed attempt
//!   ("lease expired") at its deadline, however late a call notices it: the job is retried
//!   with backoff from the deadline, or dead-lettered once its retries are spent, so a job
//!   that always hangs its worker cannot loop forever. A completion,
//!   failure or heartbeat presents its [`Lease`]; one that is no longer current (expired,
//!   cancelled, or the job was leased again — possibly to the same worker, which is why a
//!   lease id and not the worker name is checked) is refused with [`QueueError::StaleLease`]
//!   or [`QueueError::LeaseExpired`]. A lease taken so close to the end of the clock's
//!   time (`u64::MAX` nanoseconds, some 584 years) that `now + lease` saturates there
//!   **never expires**: its true deadline is past any time the clock can show. Read as
//!   due, it expired the moment it was taken once the clock stood at the end (a
//!   [`crate::ManualClock`] advanced by `Duration::MAX` stops there), so no worker could
//!   complete or heartbeat any job, and each take burned an attempt until the job was
//!   dead-lettered although its worker was alive. The price is that a job whose worker
//!   died holding such a lease is not taken back; it stays Processing and can still be
//!   cancelled. A retry delay that saturates there is cut short instead (the retry is due
//!   at the end of time, so at once on a clock standing there): due early, the job still
//!   runs and its retries stay bounded, where "never due" would leave it waiting for ever.
//!   A worker that gives a job back unrun
//!   ([`JobQueue::release`]: a pool shutting down, an interrupted handler) counts no attempt,
//!   and the job gets back the FIFO turn and the age it was taken with, which its [`Lease`]
//!   carries: it is not put behind the jobs submitted after it, nor does its aging restart.
//! * **Dead letter**: a job that exhausts its retries is `Failed` and kept in a dead-letter
//!   list, oldest first, for inspection and [`JobQueue::resubmit_dead_letter`]. The list is
//!   bounded (`dead_letter_capacity`); overflow drops the oldest and is counted.
//! * **Finished jobs** (completed, cancelled) stay readable through [`JobQueue::get`] until
//!   `retain_finished` newer ones have finished; the queue does not grow without bound.
//! * **Capacity**: at most `capacity` jobs may be queued or running; a submit beyond that is
//!   refused with [`QueueError::Full`], never dropped. A follower (a job coalesced onto an
//!   identical one, see [`crate::job::memo`]) counts: it holds its record and payload until its
//!   leader finishes, and nothing else bounds how many a leader gathers. A job the memo store
//!   answers at submit does not: it completes at once and never holds a place, so a full queue
//!   accepts it (and [`JobQueue::submit_timeout`] does not wait), as does
//!   [`JobQueue::resubmit_dead_letter`]. A full queue checks the key only then, with a check
//!   the memo store does not count (a refused or waiting submit is no cache miss; see
//!   *Counting* in [`crate::job::memo`]); with room, an identical job in flight is followed
//!   first, as always. [`JobQueue::submit_timeout`]
//!   waits for room instead of refusing, up to a timeout: each place that frees wakes one
//!   waiting producer (a place already promised to a producer not yet awake wakes no other),
//!   so a producer waits no longer than its room takes to appear, and a free place does not
//!   wake every waiting producer to find the queue full again. (It woke them all once the
//!   queue had drained by a sixteenth of its capacity: a producer waited for six jobs of a
//!   hundred to finish, or out its wait slice.) A waiting
//!   producer also wakes when the first lease ends, the one way time alone frees a place (a
//!   job's last attempt dead-lettered), and so does any call whose maintenance frees one.
//! * **A worker's loop in one call**: [`JobQueue::complete_and_next`] completes a job and
//!   leases the next under one lock acquisition and one clock read. A busy worker then takes
//!   the lock once per job instead of twice, which matters most when producers contend for
//!   it; the [`crate::WorkerPool`] works this way.
//! * **Waiting for a job's end** ([`JobQueue::wait`]): a waiter registers a *watch* on its
//!   job in `State::watched` (by id: a count of waiters, and the `Ending` they share, a
//!   condition variable and the slot for the job as it ended). Every end (a completion, a
//!   memo hit, a cancel, a follower ending with its leader, a dead letter) goes through
//!   `State::file_finished` or `State::bury`, which, while any job is watched, hand the
//!   job to its watch, remove the watch and wake its waiters alone, before the record can be
//!   dropped: so a waiter gets the end whatever the retention, and a resubmitted dead letter
//!   or a clone submitted again under the id gets a watch of its own. A waiter that gives up
//!   uncounts itself, and the last removes the watch. With nothing watched a finish pays one
//!   test of the map's length (callgrind, one thread, the bench's loop, three and four runs:
//!   `next` + `complete` 1,276–1,279 instructions a job before and 1,276–1,280 after,
//!   `complete_and_next` 1,251–1,253 before and 1,254–1,255 after). A waiter sleeps until
//!   its job's lease deadline or a slice, as a blocked take does, so that a lease that runs
//!   out on a last attempt ends its wait with no other call.
//! * **Cancel** is O(queue length) in the worst case (a `VecDeque` removal); it is rare, and
//!   the hot paths stay free of tombstones.
//!
//! # Storage
//!
//! What a job costs the queue decides its throughput, so the layout is chosen for the hot path
//! (submit, take, complete):
//!
//! * Every job the queue has — live, dead-lettered, or finished and retained — has its record
//!   in a **slab**, and keeps its slot from submit until the record is dropped. Ready deques,
//!   retries, followers, leases and the finished ring refer to slots, and a [`Lease`] carries
//!   its job's slot, so a take or a completion reaches the record without a hash lookup. An
//!   index (job id → slot) serves the calls that name a job by id and refuses duplicates.
//!   The index and the **slot allocator** sit in the intake, behind the intake lock, so that a
//!   fast submit can refuse a duplicate and name its record's slot at once; the slab is
//!   behind the main lock and fills the slot it is given (`job/slab.rs`). An entry holds the
//!   whole id and the slot, 24 bytes: with only the id's hash (16 bytes, before the intake) a
//!   probe had to read the record to confirm the id, and a fast submit cannot read records (a
//!   parsed [`JobId`] can be chosen to collide with a job's hash, and must not reach it). The
//!   hash is the id's random bits folded (no SipHash).
//! * **Dropping a record** does not touch the intake: the worker side notes the id and slot,
//!   and the next drain removes the entries and gives the slots back in one hold of the
//!   intake lock, entry first, so a slot is never reused while an entry names it. Until then
//!   the entry is stale: a call under the main lock ignores an entry whose slot does not hold
//!   its job, and a fast submit that finds one takes the slow path, which hands back first
//!   (a clone of a job pushed out of the finished ring is accepted there). The slab thus
//!   spans the slots dropped since the last drain besides the records it holds.
//! * A record is the job, its place and its lease links: **256 bytes**, the most that
//!   `memcpy` copies on its short path, and a submit copies the record into the slab. A
//!   leader's followers are kept with it in `leaders` (the memo key's entry), not in the
//!   record, where an empty list took 24 bytes of every job's (session 12: the copy went from
//!   58 instructions to 29). A job of the fast path is copied four times, each hop through
//!   the stack: its pair with the slot is built, then pushed into the intake; its record is
//!   built from the intake, then stored in the slab. Session 20 tried three ways to copy it
//!   less (the jobs and their slots in two deques; the intake holding whole records; the
//!   intake carrying only a new job's own fields, the drain making the job again) and none
//!   cut the instructions a job (see the README's queue section).
//! * **Leases** form a doubly linked list threaded through the records, earliest deadline
//!   first. Every lease lasts the same time and the clock is monotonic, so a new lease goes at
//!   the back in O(1); completing unlinks in O(1); expiry reads the head. Nothing is allocated
//!   or freed per lease (a `BTreeMap` allocated a node as it filled and freed one as it
//!   emptied).
//! * A job that finishes **stays where it is**: its record is marked finished
//!   (`Place::Finished`) and its slot is written into a **ring of slots** in finishing order,
//!   at most `retain_finished` of them. Once the ring is full, the new slot is written over
//!   the oldest one, whose record is then dropped; the allocator hands that slot, just
//!   touched, to a submit after the next drain. So a finish moves no job and rewrites no
//!   index entry:
//!   it writes one slot number, and the only other work is dropping the oldest record (one
//!   index removal, at the next drain). The record is dropped where it lies: the slab is the
//!   queue's own
//!   (`job/slab.rs`), because the `slab` crate's removal moves the record out to return it,
//!   a copy of the record a job (280 bytes then; callgrind: about 58 instructions a job of
//!   the 1 670). Until session 10 a finish moved the record out of the slab and its job into
//!   a ring of jobs (two copies of a 216-byte job) and rewrote the job's index entry; this
//!   costs about 100 instructions a job fewer (see the README's queue section). The price
//!   is that the slab holds the retained jobs besides the live ones, at 256 bytes a record
//!   instead of 216 a job: at the default 1 024 that is some 260 KB, which
//!   stays in a core's L2 cache, while at 10 000 (the earlier default) each finish drops a
//!   record and each submit fills a slot that has left the cache (with the ring of jobs, 10
//!   000 kept made a job about 30 % slower on one pinned core). A kept job also holds its
//!   payload and result alive outside any cache's byte budget, which is the other reason the
//!   default is small: history belongs in the memo cache, whose budget bounds it.
//! * **Maintenance** (due retries, expired leases) runs at the start of every operation, but
//!   a lower bound of the next due time (`next_due`, lowered whenever a retry or lease is
//!   filed and recomputed when maintenance runs) makes it a single comparison until something
//!   is due.
//! * The clock is read once per operation (submit, take, complete); a blocking take reads
//!   real time only once it actually has to wait. Nothing is allocated per job in the steady
//!   state: slots, deque entries and ring places are reused.
//! * A take or submit that has to wait does so in a function of its own
//!   (`Inner::wait_and_take`, `Inner::submit_when_full`), so that the first attempt,
//!   which nearly always succeeds, does not carry the waiting loop's state.
//!
//! Session 12's cuts (the record, the waiting loops out of line, the one-deque take),
//! callgrind, one thread, the bench's loop, instructions a job: `next` + `complete` 1,454–1,466
//! → 1,292–1,297, `complete_and_next` 1,401–1,407 → 1,266–1,289, the `Mutex<BinaryHeap>`
//! baseline 1,134; under the queue's lock, a submit 334 → 301, a take 403 → 284, a
//! completion 379 → 358, `complete_and_next` 702 → 596 (see the README's queue section for how
//! these were counted).
//!
//! Session 32's cuts (the default clock read by a direct call, since session 33 through the
//! cache's and the queue's shared `ClockHandle`, and without saturating arithmetic, `submit` and `complete_and_next` inlined into their callers, a completion that
//! finds its record once), same count: `next` + `complete` 1,413–1,414 → 1,305–1,309,
//! `complete_and_next` 1,374–1,376 → 1,289–1,292, the baseline 1,039 (it builds and drops the
//! same jobs; the queue also keeps the record, the index entry and the lease).
//!
//! Time comes from the queue's [`crate::Clock`], so tests drive delays, aging and leases with a
//! [`crate::ManualClock`]. Blocking waits ([`JobQueue::next`]) use real time; since the queue
//! cannot see a clock move, a blocked taker re-checks at least every 50 ms, and at most once
//! a step of the clock ([`crate::Clock::resolution`]: a tick of the default coarse clock), which
//! a shorter sleep could not see pass. Any call that makes a job ready wakes the blocked takers
//! at once, including a retry fallen due that the maintenance at the start of a `cancel`,
//! `get` or `stats` moves (see `Inner::catch_up`). A taker sleeps until the first retry or
//! lease deadline it sees as it starts waiting; a retry filed while it waits, due within a
//! slice, wakes the takers of its type so that they wait for it instead (see `wakes_takers`).
//!
//! Memoized jobs (memo hits, coalescing, storing results) are described in [`crate::job::memo`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashTable;
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::memo::MemoStore;
use super::model::{InvalidStateTransition, Job, JobId, JobPayload, JobPriority, JobResult};
use super::model::{JobStatus, JobType, WorkerId};
use super::retry::RetryConfig;
use super::slab::{Slab, Slots};
use crate::cache::Cache;
use crate::callback::{self, FirstPanic, Turn};
use crate::key::CacheKey;
use crate::time::{Clock, ClockHandle, SharedClock, Timestamp};

/// Finished jobs kept readable by default: enough for a caller to read the outcome of a job
/// it just ran, few enough that the ring stays in a core's cache (about 260 KB of records).
const DEFAULT_RETAIN_FINISHED: usize = 1_024;

/// The last time a clock can show: a deadline saturated here lies past it (see *Leases*).
const END_OF_TIME: Timestamp = Timestamp::from_nanos(u64::MAX);

/// Whether a lease ending at `deadline` has run out at `now`. One that saturated at the end
/// of time never does (see *Leases*); the second comparison runs only for a lease already
/// at or past its deadline, so a current lease costs the one comparison it always did.
#[inline(always)]
fn lease_over(deadline: Timestamp, now: Timestamp) -> bool {
    deadline <= now && deadline != END_OF_TIME
}

/// The error a follower fails with when `leader`, the job it was coalesced onto, failed with
/// `error`. Shared with the pipeline, which words a follower's failure so when the follower's
/// record has left the queue before its request looked.
pub(crate) fn coalesced_failure(leader: JobId, error: &str) -> String {
    format!("coalesced with job {leader}, which failed: {error}")
}

/// What [`JobQueue::fail_telling`] tells of a failure that ends a job: the job, the message
/// it failed with, and the jobs coalesced onto it, which fail with it.
pub(crate) type FailureHook<'a> = dyn Fn(JobId, &str, &[JobId]) + Send + Sync + 'a;

/// Longest a blocked [`JobQueue::next`] sleeps before re-reading the clock.
const MAX_WAIT_SLICE: Duration = Duration::from_millis(50);

/// Whether a failed attempt whose job is ready again at `back` (now, or its retry's due time;
/// `None` if it was dead-lettered) wakes the blocked takers of its type: at once if it is
/// ready, and for a retry due within a wait slice, so that they plan their waits by it. A
/// blocked taker sleeps until the first retry or lease deadline it saw when it started
/// waiting, or a slice, so a retry filed since and due before then went unseen until that
/// wake: a retry 5 ms after a worker's `fail` was taken 37 to 50 ms later. A retry due
/// later than a slice is seen in time by every taker's next wake.
fn wakes_takers(back: Option<Timestamp>, now: Timestamp) -> bool {
    // Measured from `now`, not compared with `now` plus a slice, which saturates at the end
    // of time, where a job ready at once would then wake no one.
    back.is_some_and(|at| at.saturating_duration_since(now) < MAX_WAIT_SLICE)
}

/// How long a blocked call waits for an event due `at` (a retry, or a lease's end), having
/// read `now` on a clock that moves in steps of `step`: a wait for an event within a step
/// would not see the clock reach it (see `Clock::resolution`).
fn wait_until(at: Timestamp, now: Timestamp, step: Duration) -> Duration {
    at.saturating_duration_since(now).max(step)
}

/// Why a queue operation was refused. Nothing is changed when an error is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue already holds `capacity` queued or running jobs.
    #[error("job queue is full: {capacity} jobs are queued or running; retry later")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// A job with this id was already submitted. Detected while the queue keeps the job's
    /// record: while it is live or dead-lettered, and after it finished for as long as it is
    /// among the `retain_finished` most recent finished jobs. (Ids are random v4 UUIDs, so only
    /// a clone of a submitted job can collide.)
    #[error("job {0} was already submitted to this queue")]
    Duplicate(JobId),
    /// The job's memo key is not under its type's prefix ([`JobType::key_prefix`]). Jobs
    /// with the same key are one computation, so a key names one type's results: a job of
    /// another type with that key would be coalesced with them or answered by them, and
    /// would store its own result as theirs (see [`crate::job::memo`]).
    #[error(
        "job {id} of type {job_type} has the memo key {key}, which is not under its type's \
         prefix {prefix:?}: a memo key names the results of one job type",
        prefix = job_type.key_prefix()
    )]
    MemoKeyPrefix {
        /// The job.
        id: JobId,
        /// Its type.
        job_type: JobType,
        /// Its memo key (boxed: every result of a queue call carries this error's size).
        key: Box<CacheKey>,
    },
    /// Only a new job (status Queued) can be submitted.
    #[error("job {id} cannot be submitted in status {status}: only a new, queued job can")]
    NotNew {
        /// The job.
        id: JobId,
        /// Its status.
        status: JobStatus,
    },
    /// The queue has no record of the job: never submitted, or finished long enough ago that
    /// its record was dropped.
    #[error("job {0} is not known to this queue")]
    NotFound(JobId),
    /// The lease is no longer current: the job was cancelled, finished, or leased again. (A
    /// lease of another queue that holds the same job, a clone, is refused the same way.)
    #[error("worker {worker} no longer holds the lease on job {id} (the job is now {status})")]
    StaleLease {
        /// The job.
        id: JobId,
        /// The worker that presented the lease.
        worker: WorkerId,
        /// The job's status now.
        status: JobStatus,
    },
    /// The lease expired before the call; the job went back to the queue (or the dead letter).
    #[error("the lease of worker {worker} on job {id} expired; the job was taken back")]
    LeaseExpired {
        /// The job.
        id: JobId,
        /// The worker that presented the lease.
        worker: WorkerId,
    },
    /// The job is not in the dead-letter list.
    #[error("job {0} is not in the dead-letter list")]
    NotDeadLettered(JobId),
    /// The job's state machine refused the operation (for example cancelling a finished job).
    #[error(transparent)]
    InvalidTransition(#[from] InvalidStateTransition),
}

/// Why [`JobQueue::wait`] returned without the finished job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The queue has no record of the job as the wait begins: never submitted to this queue,
    /// or finished (or dead-lettered) and forgotten before the wait began (see
    /// [`JobQueueBuilder::retain_finished`] and [`JobQueueBuilder::dead_letter_capacity`]).
    #[error(
        "job {0} is not known to this queue: never submitted, or finished and forgotten before \
         the wait began"
    )]
    NotFound(JobId),
    /// The job had not ended when the timeout ran out; it goes on, and a later wait (or
    /// [`JobQueue::get`]) sees it end.
    #[error("job {id} did not end within {timeout:?}: it is still {status}")]
    TimedOut {
        /// The job.
        id: JobId,
        /// Its status when the wait gave up (Queued or Processing).
        status: JobStatus,
        /// The timeout the wait was given.
        timeout: Duration,
    },
}

/// Why a [`JobQueue`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueConfigError {
    /// A capacity of zero would refuse every job.
    #[error("queue capacity must be at least 1")]
    ZeroCapacity,
    /// A zero lease would expire every job the moment it is taken.
    #[error("lease duration must be positive")]
    ZeroLease,
    /// A zero aging step would make every job High at once.
    #[error("aging step must be positive (use `aging(None)` to turn aging off)")]
    ZeroAgingStep,
}

/// Counts of a queue's jobs: current gauges, and totals since the queue was built.
///
/// Non-exhaustive, so that a later counter is not a breaking change: outside the crate a
/// `QueueStats` comes from [`JobQueue::stats`] or [`QueueStats::default`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Jobs waiting (ready, waiting out a retry delay, or coalesced onto a leader).
    pub queued: usize,
    /// Of `queued`, those waiting out a retry delay.
    pub delayed: usize,
    /// Of `queued`, followers coalesced onto an identical job.
    pub coalesced_waiting: usize,
    /// Jobs leased to a worker.
    pub processing: usize,
    /// Jobs in the dead-letter list.
    pub dead_letters: usize,
    /// Jobs accepted.
    pub submitted: u64,
    /// Submits refused because the queue was full.
    pub rejected_full: u64,
    /// Jobs completed (by a worker, a memo hit, or a coalesced leader).
    pub completed: u64,
    /// Of `completed`, memo hits: jobs the memo store answered at submit, and followers it
    /// answered when their leader was cancelled (see [`crate::job::memo`]).
    pub memo_hits: u64,
    /// Jobs coalesced onto an identical queued or running job.
    pub coalesced: u64,
    /// Jobs that failed for good (dead-lettered).
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Leases that expired.
    pub lease_expirations: u64,
    /// Results the memo store refused, or panicked on (see [`crate::job::memo`]).
    pub memo_store_failures: u64,
    /// Memo store lookups and peeks that panicked, each answered "not there" (see
    /// [`crate::job::memo`]): one per call, so a full queue's peek and the lookup after it
    /// can count two for one submit.
    pub memo_lookup_failures: u64,
    /// Dead letters dropped because the list was full.
    pub dead_letters_evicted: u64,
    /// Callers blocked in [`JobQueue::wait`] now, over all jobs.
    pub waiters: usize,
}

/// A job leased to a worker: what it needs to run the job, and the proof of its lease that
/// [`JobQueue::complete`], [`JobQueue::fail`], [`JobQueue::heartbeat`] and
/// [`JobQueue::release`] check.
#[derive(Clone, Debug)]
pub struct Lease {
    job_id: JobId,
    /// Where the job's record is, so that a completion finds it without a lookup.
    slot: usize,
    lease_id: u64,
    worker: WorkerId,
    job_type: JobType,
    priority: JobPriority,
    payload: JobPayload,
    attempt: u32,
    deadline: Timestamp,
    memo_key: Option<CacheKey>,
    /// The turn (sequence number) and the start of the wait the job had in its ready deque
    /// when it was taken, which a release gives back (see [`JobQueue::release`]). Kept in
    /// the lease rather than the record: only the current lease can be released, and the
    /// record's `Leased` place has no room for them without growing every record.
    seq: u64,
    since: Timestamp,
}

impl Lease {
    /// The job.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// The worker holding the lease.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// The kind of work.
    pub fn job_type(&self) -> JobType {
        self.job_type
    }

    /// The priority of the ready queue the job was taken from: its own, or a more urgent
    /// follower's that raised it (priority inheritance, see [`crate::job::memo`]). Aging is
    /// not included: a job taken ahead of more urgent work because it had waited (see
    /// *Aging* in [`crate::job::queue`]) still reports the priority it waited at. The job
    /// itself keeps the priority it was submitted with ([`Job::priority`]).
    pub fn priority(&self) -> JobPriority {
        self.priority
    }

    /// The job's input.
    pub fn payload(&self) -> &JobPayload {
        &self.payload
    }

    /// The job's retry count when it was taken: 0 on the first attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the lease expires unless extended by [`JobQueue::heartbeat`] (as of the take).
    /// `u64::MAX` nanoseconds means that `now + lease` saturated at the end of time: such a
    /// lease never expires (see *Leases* in the [`JobQueue`] module docs).
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// The job's memo key, if it is memoized.
    pub fn memo_key(&self) -> Option<&CacheKey> {
        self.memo_key.as_ref()
    }
}

/// A job that reached `Completed`, as reported to the hook set with
/// [`JobQueueBuilder::on_complete`] (for example to record its latency in a metrics registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobCompletion {
    /// The job.
    pub id: JobId,
    /// The kind of work.
    pub job_type: JobType,
    /// When the queue accepted the job (its `created_at`; a re-submitted dead letter keeps its
    /// first submit time).
    pub submitted_at: Timestamp,
    /// When it completed.
    pub completed_at: Timestamp,
    /// Whether the memo store answered it, without a worker: at submit, or as a follower
    /// whose leader was cancelled after the result was stored some other way.
    pub memo_hit: bool,
}

impl JobCompletion {
    /// Time from submit to completion on the queue's clock: with the default
    /// [`crate::CoarseClock`], in whole ticks of a few milliseconds (give the queue a
    /// [`crate::SystemClock`] to time jobs finer).
    pub fn latency(&self) -> Duration {
        self.completed_at
            .saturating_duration_since(self.submitted_at)
    }

    fn of(job: &Job, memo_hit: bool) -> JobCompletion {
        JobCompletion {
            id: job.id(),
            job_type: job.job_type(),
            submitted_at: job.created_at(),
            completed_at: job.completed_at().unwrap_or_default(),
            memo_hit,
        }
    }
}

/// Tells `hook` of `completions`, or, from inside a hook call, defers them to the outermost
/// report on this thread (see [`Inner::report`]). Out of line: inlined into the queue's
/// calls, it cost a queue without a hook about 35 instructions a job (callgrind, one thread,
/// `complete_and_next`), by the code it moved around.
#[inline(never)]
fn report_to(hook: &CompletionHook, completions: &[JobCompletion]) {
    let turn = Turn::start();
    if turn.is_nested() {
        let (hook, completions) = (Arc::clone(hook), completions.to_vec());
        callback::defer(move |panic| panic.catch(|| hook(&completions)));
        return;
    }
    let mut panic = FirstPanic::default();
    panic.catch(|| hook(completions));
    turn.finish(&mut panic);
    panic.resume();
}

/// Completions taken from under the queue's lock, to report once it is released.
enum Completions {
    /// The usual batch, one job without followers: copied out, so that the state's list
    /// keeps its buffer. Taking the list took its buffer too, and the next completion
    /// allocated a new one: a `malloc` and a `free` a job with a hook (callgrind, one thread:
    /// about 180 instructions a job).
    One(JobCompletion),
    /// More (a leader and its followers), the list taken whole.
    Many(Vec<JobCompletion>),
}

/// The hook [`JobQueueBuilder::on_complete`] sets, wrapped to take the jobs completed
/// together: it hears each of them even if it panics on one, then re-raises the first panic.
type CompletionHook = Arc<dyn Fn(&[JobCompletion]) + Send + Sync>;

/// Configures and builds a [`JobQueue`].
#[derive(Clone)]
pub struct JobQueueBuilder {
    capacity: usize,
    retry: RetryConfig,
    lease: Duration,
    aging_step: Option<Duration>,
    retain_finished: usize,
    dead_letter_capacity: usize,
    clock: ClockHandle,
    memo: Option<Arc<dyn MemoStore>>,
    on_complete: Option<CompletionHook>,
}

/// [`JobQueue::builder`]: the defaults each setting's docs give.
impl Default for JobQueueBuilder {
    fn default() -> JobQueueBuilder {
        JobQueue::builder()
    }
}

impl fmt::Debug for JobQueueBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueueBuilder")
            .field("capacity", &self.capacity)
            .field("retry", &self.retry)
            .field("lease", &self.lease)
            .field("aging_step", &self.aging_step)
            .field("retain_finished", &self.retain_finished)
            .field("dead_letter_capacity", &self.dead_letter_capacity)
            .field("memo", &self.memo)
            .field("on_complete", &self.on_complete.is_some())
            .finish_non_exhaustive()
    }
}

impl JobQueueBuilder {
    /// At most `capacity` jobs queued or running (default 100 000).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The retry policy (default [`RetryConfig::default`]); its `max_retries` applies to jobs
    /// that do not set their own, copies of jobs from another queue among them (see
    /// [`Job::max_retries`]).
    #[must_use]
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// How long a take leases a job before it is taken back (default 5 minutes).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Raise a waiting job's priority one level per `step` waited (default 30 s); `None` turns
    /// aging off (strict priorities).
    #[must_use]
    pub fn aging(mut self, step: Option<Duration>) -> Self {
        self.aging_step = step;
        self
    }

    /// Keep the records of this many finished (completed or cancelled) jobs readable through
    /// [`JobQueue::get`] and [`JobQueue::status`] (default 1 024).
    ///
    /// A kept job holds its payload and result alive, outside any cache's byte budget, and
    /// past a few thousand jobs their records no longer fit a core's cache, which makes every
    /// finish slower (see the module docs). Raise it when callers poll old jobs by id; use a
    /// memo cache to keep results.
    #[must_use]
    pub fn retain_finished(mut self, n: usize) -> Self {
        self.retain_finished = n;
        self
    }

    /// Keep at most this many dead letters, dropping the oldest (default 10 000).
    #[must_use]
    pub fn dead_letter_capacity(mut self, n: usize) -> Self {
        self.dead_letter_capacity = n;
        self
    }

    /// The clock for delays, aging and leases (default: [`crate::CoarseClock`], which moves in
    /// steps of a few milliseconds; [`crate::SystemClock`] for finer delays, at a cost on
    /// every submit, take and completion — see [`crate::time`]).
    ///
    /// Any [`Clock`] by value — a [`crate::ManualClock`] (whose clones share one time), an
    /// `Arc` of a clock, a [`SharedClock`] — so that one clock given to a queue and to a
    /// [`Cache`] ([`crate::CacheBuilder::clock`], which takes the same) is one timeline. The
    /// default is read by a direct call rather than through the trait object's vtable, and so
    /// is a [`crate::CoarseClock`] (or an `Arc` of one) given here, whose type this method
    /// sees; any other clock is read through the vtable, a [`SharedClock`] as the very handle
    /// given.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = ClockHandle::of(clock);
        self
    }

    /// The clock, as a shared handle: the same as [`clock`](JobQueueBuilder::clock) given a
    /// [`SharedClock`].
    ///
    /// It is read through the trait object's vtable, even an `Arc::new(CoarseClock)`, whose
    /// type the handle does not tell: the same readings as
    /// [`clock(CoarseClock)`](JobQueueBuilder::clock) or the default, at a few instructions
    /// more a read (about 20 a job of a one-thread `complete_and_next` loop, callgrind).
    #[must_use]
    pub fn shared_clock(mut self, clock: SharedClock) -> Self {
        self.clock = ClockHandle::shared(clock);
        self
    }

    /// Where memoized results are looked up and stored (default none).
    ///
    /// The store is called under the queue's lock (see [`crate::job::memo`]), so nothing it
    /// runs may call this queue: such a call waits for the lock for ever, and so does every
    /// other caller of the queue after it. A [`Cache`]'s eviction listener is not run there
    /// (see [`JobQueueBuilder::cache`]).
    #[must_use]
    pub fn memo_store(mut self, store: Arc<dyn MemoStore>) -> Self {
        self.memo = Some(store);
        self
    }

    /// Memoizes results in `cache` (shorthand for [`JobQueueBuilder::memo_store`]).
    ///
    /// The cache's eviction listener ([`crate::CacheBuilder::eviction_listener`]) hears of
    /// what the queue's lookups and stores remove (an insert that evicts, a lookup that finds
    /// its entry expired) once the queue's call has released its lock, on the same thread,
    /// before the call returns, so it may call the queue (through a [`WeakJobQueue`]: the
    /// queue holds the cache and so its listener, and a [`JobQueue`] handle the listener
    /// holds keeps both alive for ever); a panic of it goes on to the
    /// caller of the queue's call once the queue's work is done, as it goes on to the caller
    /// of the cache's own calls ([`JobQueue::complete_and_next`] first gives back the job it
    /// leased, as on a completion hook's panic). (Told under the lock, a listener that called the queue, even
    /// [`JobQueue::stats`], waited for the lock for ever: a pool's worker stopped, and every
    /// caller of the queue after it.)
    #[must_use]
    pub fn cache(self, cache: Cache) -> Self {
        self.memo_store(Arc::new(cache))
    }

    /// Calls `hook` once for every job that completes: by a worker, as a memo hit at submit, or
    /// with the leader it was coalesced onto. The hook runs on the completing thread after the
    /// queue's lock is released, so it may call the queue — through a [`WeakJobQueue`]: the
    /// hook is part of the queue, so a [`JobQueue`] handle it holds keeps the queue, its
    /// memo cache and that cache's sweeper thread alive for ever. It should be quick, since
    /// that thread is usually a worker. Failed and cancelled jobs are not reported (their
    /// counts are in [`JobQueue::stats`]).
    ///
    /// A call the hook makes that completes jobs (a submit the memo store answers, a
    /// completion) returns before they are reported: they are reported on the same thread
    /// once the hook call that made it returns, in the order they completed, so that a hook
    /// that keeps submitting memo hits runs a loop, not a recursion that overflows the
    /// stack. A panic of the hook while hearing of them goes on to the
    /// outermost caller, after the whole chain has been reported.
    ///
    /// A hook that panics does not undo or interrupt anything: every job of the call is still
    /// reported, the jobs stay completed and counted, and the queue is unlocked. The first
    /// panic then goes on to the caller of the call that completed the jobs, as a panic of
    /// the cache's eviction listener goes on to the caller of the cache's call: a worker's
    /// [`JobQueue::complete`] or [`JobQueue::complete_and_next`] (which first gives back a
    /// job it leased), and for a memo hit, [`JobQueue::submit`], [`JobQueue::submit_timeout`],
    /// [`JobQueue::cancel`] (followers answered by the memo store) or
    /// [`JobQueue::resubmit_dead_letter`]. A [`crate::WorkerPool`]'s workers catch it, so
    /// that the worker survives.
    #[must_use]
    pub fn on_complete(mut self, hook: impl Fn(&JobCompletion) + Send + Sync + 'static) -> Self {
        // Each job is reported even if the hook panics on another, and the first panic goes
        // on afterwards (see `Inner::report`). The loop is here, in the stored hook, rather
        // than in the queue's `report`: written there with its unwinding guards, it cost a
        // queue without a hook about 50 instructions a job (callgrind, one thread,
        // `complete_and_next`); here, about 15, all of it an inlining change (the ready
        // deque's `push_back` in submit is no longer inlined).
        self.on_complete = Some(Arc::new(move |completions: &[JobCompletion]| {
            let mut panic = FirstPanic::default();
            for c in completions {
                panic.catch(|| hook(c));
            }
            panic.resume();
        }));
        self
    }

    /// Builds the queue.
    pub fn build(self) -> Result<JobQueue, QueueConfigError> {
        if self.capacity == 0 {
            return Err(QueueConfigError::ZeroCapacity);
        }
        if self.lease.is_zero() {
            return Err(QueueConfigError::ZeroLease);
        }
        if self.aging_step.is_some_and(|s| s.is_zero()) {
            return Err(QueueConfigError::ZeroAgingStep);
        }
        let aging_nanos = self
            .aging_step
            .map(|s| u64::try_from(s.as_nanos()).unwrap_or(u64::MAX));
        Ok(JobQueue {
            inner: Arc::new(Inner {
                state: Padded(Mutex::new(State {
                    // Lease ids are sequence numbers, and a lease is checked by its job's id,
                    // slot and lease id. From 0 in every queue, the same job submitted to two
                    // queues (a clone) had the same slot and lease ids in both, so either
                    // queue took a lease of the other as its own. A random start below 2^63
                    // sets each queue's numbers apart at no cost to a call, and leaves 2^63
                    // of them before the counter could overflow; only their order matters.
                    seq: rand::random::<u64>() >> 1,
                    ..State::default()
                })),
                intake: Padded(Mutex::new(Intake::default())),
                signals: Padded(Signals::default()),
                available: std::array::from_fn(|_| Condvar::new()),
                room: Condvar::new(),
                clock: self.clock,
                memo: self.memo,
                capacity: self.capacity,
                retry: self.retry,
                lease_nanos: u64::try_from(self.lease.as_nanos()).unwrap_or(u64::MAX),
                aging_nanos,
                retain_finished: self.retain_finished,
                dead_letter_capacity: self.dead_letter_capacity,
                on_complete: self.on_complete,
            }),
        })
    }
}

/// A priority job queue; see the module docs. Cloning gives another handle to the same queue.
///
/// ```
/// use memocache::{Job, JobPriority, JobQueue, JobStatus, JobType, WorkerId};
///
/// let queue = JobQueue::builder().build()?;
/// let job = |payload: &'static [u8]| Job::new(JobType::Indexing, payload);
/// let low = queue.submit(job(b"a").with_priority(JobPriority::Low))?;
/// let high = queue.submit(job(b"b").with_priority(JobPriority::High))?;
///
/// let worker = WorkerId::new("w1");
/// let lease = queue.try_next(&worker).expect("a job is ready");
/// assert_eq!(lease.job_id(), high);
/// queue.complete(&lease, b"done".to_vec().into())?;
/// assert_eq!(queue.status(high), Some(JobStatus::Completed));
/// assert_eq!(queue.status(low), Some(JobStatus::Queued));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct JobQueue {
    inner: Arc<Inner>,
}

impl fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueue")
            .field("capacity", &self.inner.capacity)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A handle to a [`JobQueue`] that does not keep it alive: for a completion hook
/// ([`JobQueueBuilder::on_complete`]), or a memo cache's eviction listener, that calls the
/// queue.
///
/// The hook is part of the queue, and the memo cache ([`JobQueueBuilder::cache`]) is held by
/// it, listener and all, so a [`JobQueue`] handle captured by either is a cycle: the queue,
/// its jobs, the memo cache and the cache's sweeper thread
/// ([`crate::CacheBuilder::sweep_interval`]) are then never freed, even once every other
/// handle is dropped. A `WeakJobQueue` breaks the cycle: [`WeakJobQueue::upgrade`] gives a
/// handle for the length of a call, and `None` once the queue is gone.
///
/// ```
/// use memocache::{Job, JobQueue, JobType, WeakJobQueue, WorkerId};
/// use std::sync::{Arc, OnceLock};
///
/// let this: Arc<OnceLock<WeakJobQueue>> = Arc::default();
/// let hook_this = Arc::clone(&this);
/// let queue = JobQueue::builder()
///     .on_complete(move |done| {
///         // Follow each summary with an indexing job, on the same queue.
///         if done.job_type == JobType::Summarization
///             && let Some(queue) = hook_this.get().and_then(WeakJobQueue::upgrade)
///         {
///             let _ = queue.submit(Job::new(JobType::Indexing, &b"the summary"[..]));
///         }
///     })
///     .build()?;
/// this.set(queue.downgrade()).unwrap();
/// queue.submit(Job::new(JobType::Summarization, &b"transcript"[..]))?;
/// let lease = queue.try_next(&WorkerId::new("w")).expect("queued");
/// queue.complete(&lease, b"summary".to_vec().into())?;
/// assert_eq!(queue.stats().queued, 1, "the hook submitted the index job");
/// let weak = queue.downgrade();
/// drop(queue);
/// assert!(weak.upgrade().is_none(), "the hook did not keep the queue alive");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WeakJobQueue {
    inner: Weak<Inner>,
}

impl JobQueue {
    /// A [`WeakJobQueue`] handle to this queue: one that does not keep it alive.
    pub fn downgrade(&self) -> WeakJobQueue {
        WeakJobQueue {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

impl WeakJobQueue {
    /// A handle to the queue, or `None` once its last [`JobQueue`] handle (a pool's workers
    /// hold one each) has been dropped.
    pub fn upgrade(&self) -> Option<JobQueue> {
        self.inner.upgrade().map(|inner| JobQueue { inner })
    }
}

impl fmt::Debug for WeakJobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakJobQueue")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}

struct Inner {
    state: Padded<Mutex<State>>,
    /// The fast path's submits, the job index and the slot allocator (see *Storage*). Always
    /// taken after `state` when both are held.
    intake: Padded<Mutex<Intake>>,
    signals: Padded<Signals>,
    /// Signalled when a job becomes ready (and by [`JobQueue::wake_all`]): one condition
    /// variable for each set of job types a taker may accept, indexed by the set's bits
    /// ([`TypeMask`]), each signalled only for a job of a type in its set (see *Waking a
    /// taker*).
    available: [Condvar; TypeMask::SETS],
    /// Signalled when a full queue has a free place: once for each (see
    /// [`Inner::signal_room`]).
    room: Condvar,
    /// Read on every submit, take and completion: the default clock directly, not through
    /// its vtable (see [`ClockHandle`]).
    clock: ClockHandle,
    memo: Option<Arc<dyn MemoStore>>,
    capacity: usize,
    retry: RetryConfig,
    /// The lease in nanoseconds, as a take adds it to the time it read.
    lease_nanos: u64,
    aging_nanos: Option<u64>,
    retain_finished: usize,
    dead_letter_capacity: usize,
    on_complete: Option<CompletionHook>,
}

/// A field on cache lines of its own, so that what one thread writes often does not share a
/// line with what the other reads often: the main lock, the intake lock and the signals each
/// move between the cores only when their own users alternate (128 bytes: x86 fetches lines in
/// adjacent pairs).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// What a submit on the fast path and the holders of the main lock tell each other without
/// taking the other's lock (see *The intake* in the module docs for the orderings).
#[derive(Default)]
struct Signals {
    /// The intake holds jobs. Written under the intake lock, and only on the intake's empty →
    /// non-empty transition and by the drain that empties it, so that the main lock's holders,
    /// which read it at every call, do not pull a line the producer writes at every submit.
    pending: AtomicBool,
    /// Places taken outside the intake, as of the last drain or claim: at least
    /// `State::live`, which only goes down in between. Written by the main lock's holder, under
    /// the intake lock; a fast submit adds the intake's length to it to decide there is room.
    live: AtomicUsize,
    /// The job types the takers blocked in a take accept ([`Waiting::types`]), for a fast
    /// submit to see whether it must wake one.
    waiting: AtomicU8,
}

/// The jobs submitted on the fast path and not yet in `State`, the job index and the slot
/// allocator: everything a submit needs to accept a job without the main lock.
#[derive(Default)]
struct Intake {
    /// In submission order. A deque rather than a `Vec` so that a drain moves each job out
    /// by `pop_front`, keeping the buffer without a `Drain` to drop (callgrind, one thread, a
    /// drain for every job: about 27 instructions a job).
    jobs: VecDeque<Pending>,
    /// The types of `jobs`, so that a taker about to wait sees whether the intake holds one
    /// for it without reading the jobs, lines the producer has just written (and without a
    /// scan as long as the intake, when it holds only jobs of other types).
    types: TypeMask,
    /// Where each job is, for the calls that name a job by id, and to refuse duplicates.
    index: HashTable<IndexEntry>,
    slots: Slots,
}

/// A job accepted on the fast path, stamped with its submit time, and the slot reserved for
/// its record.
struct Pending {
    job: Job,
    slot: Slot,
}

/// Where a record sits in the slab. A job keeps its slot from submit until its record is
/// dropped, so leases, deques and links can point at it directly.
type Slot = usize;

/// "No slot", the end of the lease list.
const NIL: Slot = usize::MAX;

/// An entry of the job index: the job's id and the slot of its record. The whole id is kept
/// (not only its hash, as before the intake) because the index is behind the intake lock and
/// the records behind the main lock: a submit must confirm a duplicate without reading a
/// record. A job's entry is written at submit, before its record exists, and removed after
/// its record is dropped (see *Storage*): finishing leaves it as it is.
#[derive(Clone, Copy)]
struct IndexEntry {
    id: JobId,
    slot: Slot,
}

/// A ready job in its (priority, type) deque.
#[derive(Clone, Copy)]
struct Ready {
    slot: Slot,
    seq: u64,
    since: Timestamp,
}

/// Where a non-terminal job is held, so that moving it touches exactly one structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// In `ready[priority][type]` with this sequence number. `priority` is the job's
    /// *effective* priority, the deque it is in: the highest of its own and its followers'
    /// (priority inheritance, see [`Inner::follow`]). It is kept here, in the place's
    /// padding (a `Place` is 24 bytes either way), rather than written into the job, so that
    /// the job keeps the priority it was submitted with and a cancelled follower's boost can
    /// be undone (see [`Inner::cancel_locked`]). A job that is not ready waits in no deque:
    /// it is placed by [`State::effective_priority`] when it becomes ready again.
    Ready { seq: u64, priority: JobPriority },
    /// In `delayed` under this key.
    Delayed { due: Timestamp, seq: u64 },
    /// In the lease list until `deadline`, under this lease id.
    Leased { deadline: Timestamp, lease_id: u64 },
    /// Coalesced: waiting for the result of its leader, which is always the leader of its
    /// memo key in `leaders` (a leader leaves that map only as it finishes, fails with its
    /// followers, or hands them over). `seq` and `since` are the turn and the start of the
    /// wait it was given when it was coalesced, which it keeps if it takes over as leader (see
    /// [`Inner::cancel_locked`]). Naming the leader here too would grow every record by a
    /// word.
    Follower { seq: u64, since: Timestamp },
    /// Failed for good: in `dead`. (Also a new record's place until it is admitted.)
    Done,
    /// Completed or cancelled: its slot is in `retained`, and the record stays until
    /// `retain_finished` newer jobs have finished.
    Finished,
}

/// A job and where it is. Its followers, if it leads any, are not here but in its entry in
/// `leaders` (see [`Leader`]): only a memoized job can have them, and keeping the list out
/// makes the record 256 bytes instead of 280, a size every submit copies into the slab.
struct Record {
    job: Job,
    place: Place,
    /// Neighbours in the lease list; meaningful only while `place` is `Leased`.
    prev: Slot,
    next: Slot,
}

impl Record {
    /// The record's neighbours in the lease list, `(prev, next)`, cleared here, for
    /// [`State::unlink`] to join.
    #[inline(always)]
    fn take_links(&mut self) -> (Slot, Slot) {
        let links = (self.prev, self.next);
        (self.prev, self.next) = (NIL, NIL);
        links
    }
}

/// The job that runs for a memo key (queued, delayed or running), and the jobs coalesced
/// onto it.
///
/// Every job with followers is the leader of its key, so the followers are kept here rather
/// than in the job's record: a record would carry an empty list for every other job, 24 of
/// its 280 bytes, and a submit copies the whole record into the slab (a copy of more than 256
/// bytes takes `memcpy`'s slower path; callgrind, one thread: 58 instructions a job against
/// 29). Only memoized jobs look here, by the key they already look up.
struct Leader {
    slot: Slot,
    followers: Vec<Slot>,
}

#[derive(Default)]
struct State {
    /// The records of every job the queue has: live, dead-lettered, and finished and
    /// retained.
    records: Slab<Record>,
    /// Records dropped since the last drain: their index entries are to be removed and their
    /// slots given back, under the intake lock, at the next drain (see *Storage*).
    dropped: Vec<(JobId, Slot)>,
    /// The buffer a drain swaps with the intake's list of jobs, empty between drains, so that
    /// neither side allocates per drain.
    drained: VecDeque<Pending>,
    ready: [[VecDeque<Ready>; 4]; 3],
    /// Bit `4 * priority + type` is set when `ready[priority][type]` is not empty, so that a
    /// take looks only at the heads that exist.
    nonempty: u16,
    /// No ready job has waited since before this time: a lower bound of their `since`,
    /// lowered as jobs become ready and raised when a take has looked at every head. While
    /// it is less than an aging step old no job has aged, and a take looks at one deque
    /// (see [`Inner::pick`]).
    ready_since: Timestamp,
    /// No retry is due and no lease ends before this time: a lower bound, so that
    /// [`Inner::maintain`] is one comparison until something is due.
    next_due: Timestamp,
    delayed: BTreeMap<(Timestamp, u64), Slot>,
    leases: LeaseList,
    /// By key alone: a memo key is under its job type's prefix (checked at submit), so the
    /// jobs of one key are of one type.
    leaders: HashMap<CacheKey, Leader>,
    /// The slots of the finished (completed or cancelled) jobs kept for `get`.
    retained: Retained,
    dead: VecDeque<Slot>,
    /// The last number given out by [`State::next_seq`]: ready turns, retry keys and lease
    /// ids. It starts at a random point of the queue's own (see [`JobQueueBuilder::build`]).
    seq: u64,
    /// Jobs queued or running (what `capacity` bounds).
    live: usize,
    followers: usize,
    /// Takers blocked in `next`, by the job types they accept.
    waiting: Waiting,
    /// Submitters blocked in `submit_timeout`, waiting for room.
    submitters_waiting: usize,
    /// Of `submitters_waiting`, those not signalled for a free place: the others are woken
    /// and not yet awake, and a free place promised to one of them wakes no other (see
    /// [`Inner::signal_room`]).
    submitters_unsignalled: usize,
    stats: QueueStats,
    /// Completions to report to the hook once the lock is released (empty without a hook).
    completions: Vec<JobCompletion>,
    /// The jobs callers wait for in [`JobQueue::wait`], each until it ends or its last
    /// waiter gives up. Empty but while someone waits, which is all a finish looks at.
    watched: HashMap<JobId, Watch, BuildHasherDefault<JobIdHasher>>,
}

/// The callers blocked in [`JobQueue::wait`] for one job.
struct Watch {
    /// How many: the last to time out removes the entry.
    waiters: usize,
    ending: Arc<Ending>,
}

/// How a watched job's end reaches its waiters. Held by each waiter as well as by its
/// [`Watch`], which the end removes: a waiter woken after the job's record has been dropped
/// (retention 0, or pushed out meanwhile), or after a clone of the job was submitted again
/// under the same id, still reads the end it waited for, and only that.
struct Ending {
    /// The job as it ended; set once, under the queue's lock.
    job: OnceLock<Job>,
    /// Waited on with the queue's lock, by this job's waiters alone: a job's end wakes no
    /// one waiting for another.
    wake: Condvar,
}

/// The finished jobs kept readable: a ring of the slots of at most `retain` jobs, in
/// finishing order. Their records stay in the slab, marked [`Place::Finished`].
///
/// Until the ring is full a finished job's slot is appended; after that it is written over
/// the oldest one, at `at`, and the oldest is handed back for its record to be dropped. A
/// finish thus writes one word here, and the ring never shifts or allocates.
#[derive(Default)]
struct Retained {
    slots: Vec<Slot>,
    /// Where the oldest slot is once the ring is full.
    at: usize,
}

impl Retained {
    /// Keeps `slot` (`retain` is at least 1) and returns the slot of the job it pushed out,
    /// whose record the caller drops.
    fn push(&mut self, slot: Slot, retain: usize) -> Option<Slot> {
        if self.slots.len() < retain {
            self.slots.push(slot);
            return None;
        }
        let oldest = self.slots.get_mut(self.at)?;
        // A compare, not `% retain`: a 64-bit division would cost more than the rest of this.
        self.at = if self.at + 1 >= retain {
            0
        } else {
            self.at + 1
        };
        Some(std::mem::replace(oldest, slot))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// The leased jobs, earliest deadline first: a doubly linked list threaded through the
/// records (`prev`, `next`), so that linking and unlinking allocate nothing.
struct LeaseList {
    head: Slot,
    tail: Slot,
    len: usize,
}

impl Default for LeaseList {
    fn default() -> Self {
        LeaseList {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

/// The hasher of the job index: [`JobId`] hashes as one word of random UUID bits, which is
/// already a good hash, so it is used as is instead of running SipHash over it. Safe against
/// flooding because every id in the table came from [`JobId::generate`] (a job cannot be
/// built with a chosen id), so no caller can pick colliding keys.
#[derive(Default)]
struct JobIdHasher(u64);

impl Hasher for JobIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    /// Not used by `JobId`; a plain FNV-1a fold so that the hasher is correct for any input.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Runs one call into the memo store, catching a panic; `None` if it panicked, which adds
/// one to `panics` (the [`QueueStats`] counter for the kind of call), or if the call was not
/// made (on a thread whose thread-locals are being destroyed; see below).
///
/// The store is the host's code and runs under the queue's lock, in the middle of a
/// transition (a submit's record is in the slab but not yet placed; a finished leader's
/// followers are not yet completed or handed over). A panic unwinding from there would leave
/// the transition half applied, so the queue catches it and goes on with a safe answer
/// instead (see *A store that panics* in [`crate::job::memo`]). The counter is taken here,
/// not at the call sites, so that no caught panic goes uncounted. Unwinding is table-driven,
/// so a call that returns does no more work than the call itself.
fn memo_call<T>(panics: &mut u64, call: impl FnOnce() -> T) -> Option<T> {
    // The cache's listener calls are held back while the queue's lock is held: the queue's
    // call runs them once it has released it (`JobQueue::run_held`). On a thread whose
    // thread-locals are being destroyed they cannot be held, and told here, under the lock,
    // a listener that called the queue waited for it for ever: the store is not asked then
    // (a lookup misses, so the job runs; a result is not stored, which counts nothing).
    let was = callback::hold()?;
    let answer = catch_unwind(AssertUnwindSafe(call));
    callback::unhold(was);
    match answer {
        Ok(answer) => Some(answer),
        Err(payload) => {
            // The payload is the host's value, and its drop may panic too: dropped here as
            // it came, that panic unwound out of the transition (a submit's job filed and
            // never placed) and, before the hold was ended, left every listener call on this
            // thread held back for good.
            callback::drop_payload(payload);
            *panics += 1;
            None
        }
    }
}

/// Removes the index entries of the records dropped since the last drain and gives their
/// slots back, entry first, so that a slot is never reused while an entry still names it.
/// Under both locks. Inlined into the drain: as a call, it cost about 20 instructions a job
/// more (callgrind, one thread, a drain for every job).
#[inline(always)]
fn hand_back(st: &mut State, intake: &mut Intake) {
    // Popped, not drained: the order does not matter, and a `Drain` costs its drop.
    while let Some((id, slot)) = st.dropped.pop() {
        if let Ok(entry) = intake.index.find_entry(hash_id(id), |e| e.slot == slot) {
            entry.remove();
        }
        intake.slots.give_back(slot);
    }
}

/// The hash of a job id in the index.
fn hash_id(id: JobId) -> u64 {
    BuildHasherDefault::<JobIdHasher>::default().hash_one(id)
}

/// A set of job types a taker accepts (or the intake holds).
#[derive(Clone, Copy, Default)]
struct TypeMask(u8);

impl TypeMask {
    const ALL: TypeMask = TypeMask(0b1111);
    const NONE: TypeMask = TypeMask(0);
    /// How many sets of job types there are: one bit a type.
    const SETS: usize = 1 << JobType::ALL.len();

    fn of(types: &[JobType]) -> TypeMask {
        TypeMask(types.iter().fold(0, |m, t| m | 1 << t.index()))
    }

    /// The set of one type.
    fn one(job_type: JobType) -> TypeMask {
        TypeMask(1 << job_type.index())
    }

    /// `self`, or no type if `when` is false: the types to wake takers for after a call
    /// that may or may not have made a job ready.
    fn when(self, when: bool) -> TypeMask {
        if when { self } else { TypeMask::NONE }
    }

    /// The types of `self` and of `other`.
    fn and(self, other: TypeMask) -> TypeMask {
        TypeMask(self.0 | other.0)
    }

    /// Whether a type is in both sets.
    fn overlaps(self, other: TypeMask) -> bool {
        self.0 & other.0 != 0
    }

    /// The index of this set of types in [`Inner::available`] and [`Waiting`].
    fn set(self) -> usize {
        usize::from(self.0)
    }

    /// The bits of [`State::nonempty`] this mask accepts: its type bits at every priority.
    fn ready_bits(self) -> u16 {
        let m = u16::from(self.0);
        m | m << 4 | m << 8
    }
}

/// The takers blocked in a take, counted by the set of job types each accepts (the index is
/// the set's [`TypeMask`] bits), so that a job wakes only the takers that can take it: a
/// pool's workers take only the types it has handlers for, and with one condition variable
/// an idle worker was woken by every submit of another type, to look and sleep again.
#[derive(Default)]
struct Waiting {
    counts: [usize; TypeMask::SETS],
    /// Bit `set` is set when `counts[set]` is not zero.
    sets: u16,
}

impl Waiting {
    /// Counts a taker of `mask` about to wait.
    fn add(&mut self, mask: TypeMask) {
        self.counts[mask.set()] += 1;
        self.sets |= 1 << mask.set();
    }

    /// Uncounts a taker of `mask` done waiting.
    fn remove(&mut self, mask: TypeMask) {
        let count = &mut self.counts[mask.set()];
        *count -= 1;
        if *count == 0 {
            self.sets &= !(1 << mask.set());
        }
    }

    /// The sets of types whose blocked takers accept a job of one of `types`, as bits of a
    /// `u16` (bit `set` for the takers of `TypeMask(set)`): the condition variables to signal
    /// once such a job is ready.
    fn sets_for(&self, types: TypeMask) -> u16 {
        let (mut sets, mut wake) = (self.sets, 0);
        while sets != 0 {
            let set = sets.trailing_zeros();
            sets &= sets - 1;
            if set & u32::from(types.0) != 0 {
                wake |= 1 << set;
            }
        }
        wake
    }

    /// Every type some blocked taker accepts.
    fn types(&self) -> u8 {
        let (mut sets, mut types) = (self.sets, 0);
        while sets != 0 {
            // Below `TypeMask::SETS`, so it fits.
            types |= sets.trailing_zeros() as u8;
            sets &= sets - 1;
        }
        types
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.counts.iter().sum()
    }
}

impl JobQueue {
    /// [`Inner::run_held`], after a call that may have reached the memo store. (A submit
    /// runs it in `Inner::submit_slow`, the only submit path that asks the store.)
    #[inline(always)]
    fn run_held(&self) {
        self.inner.run_held();
    }

    /// A builder with the defaults.
    pub fn builder() -> JobQueueBuilder {
        JobQueueBuilder {
            capacity: 100_000,
            retry: RetryConfig::default(),
            lease: Duration::from_secs(300),
            aging_step: Some(Duration::from_secs(30)),
            retain_finished: DEFAULT_RETAIN_FINISHED,
            dead_letter_capacity: 10_000,
            clock: ClockHandle::coarse(),
            memo: None,
            on_complete: None,
        }
    }

    /// Submits a new job. A memoized job may complete at once (memo hit) or be coalesced onto
    /// an identical job; see [`crate::job::memo`].
    ///
    /// [`QueueError::Full`] when `capacity` jobs are queued or running (followers included),
    /// unless the memo store answers the job: a memo hit takes no place.
    /// [`QueueError::MemoKeyPrefix`] when the job's memo key is not under its type's prefix
    /// ([`JobType::key_prefix`]).
    ///
    /// A refused job leaves no trace in the queue, so a caller that wants to retry after
    /// [`QueueError::Full`] can keep a clone (cheap: the payload is shared) and submit that.
    ///
    /// The job is new to this queue, whatever it went through elsewhere: its submit time is
    /// now, its retry budget this queue's `max_retries` unless it has its own
    /// ([`Job::with_max_retries`]), and no retries are counted yet. So a copy of a job taken
    /// out of another queue ([`JobQueue::get`], or a [reopened](Job::reopen) dead letter)
    /// runs here by this queue's retry policy, from attempt 0 (see [`Job::max_retries`]).
    ///
    /// A memo hit completes on this thread, so the completion hook
    /// ([`JobQueueBuilder::on_complete`]) hears of it here, once the queue's lock is released
    /// (from inside the hook itself: once that hook call returns).
    /// If the hook panics, the panic goes on to this call's caller, as it goes on to a
    /// worker's [`JobQueue::complete`]: after the queue's work is done. The job is then
    /// accepted, completed and counted, and the queue unlocked and consistent; only the
    /// returned [`JobId`] is lost, and it is the job's own ([`Job::id`], readable before the
    /// submit; a clone submitted again is refused as [`QueueError::Duplicate`]). Swallowing
    /// the panic would hide a host's bug from the one caller that can see it; the cache
    /// re-raises its listeners' panics to its callers the same way.
    // Inline, as is `complete_and_next`: a caller's call goes straight to the queue's own
    // (callgrind, one thread, the bench's loop: 6 instructions a submit, 13 a
    // `complete_and_next`; inlining `next` and `complete` too cost `next` + `complete` 19
    // more).
    #[inline]
    pub fn submit(&self, job: Job) -> Result<JobId, QueueError> {
        self.inner.submit(job, None)
    }

    /// Submits like [`JobQueue::submit`], but if the queue is full waits up to `timeout` for
    /// room before giving up with [`QueueError::Full`]: backpressure for a producer that
    /// would rather wait than spin.
    ///
    /// A full queue wakes a waiting producer as soon as a place is free, one producer for
    /// each free place, so that no producer waits while the queue has room for it and no
    /// more are woken than can submit (the rest would only look and sleep again).
    ///
    /// A memo hit's completion hook runs on this thread, and its panic reaches the caller, as
    /// for [`JobQueue::submit`].
    pub fn submit_timeout(&self, job: Job, timeout: Duration) -> Result<JobId, QueueError> {
        self.inner.submit(job, Some(timeout))
    }

    /// The next ready job, leased to `worker`, without waiting.
    pub fn try_next(&self, worker: &WorkerId) -> Option<Lease> {
        self.inner.take(worker, TypeMask::ALL, None)
    }

    /// The next ready job of one of `types`, leased to `worker`, without waiting.
    pub fn try_next_for(&self, worker: &WorkerId, types: &[JobType]) -> Option<Lease> {
        self.inner.take(worker, TypeMask::of(types), None)
    }

    /// The next ready job, leased to `worker`, waiting up to `timeout` for one.
    pub fn next(&self, worker: &WorkerId, timeout: Duration) -> Option<Lease> {
        self.inner.take(worker, TypeMask::ALL, Some(timeout))
    }

    /// The next ready job of one of `types`, leased to `worker`, waiting up to `timeout`.
    pub fn next_for(
        &self,
        worker: &WorkerId,
        types: &[JobType],
        timeout: Duration,
    ) -> Option<Lease> {
        self.inner.take(worker, TypeMask::of(types), Some(timeout))
    }

    /// Completes the leased job with `result` (and every job coalesced onto it); a memoized
    /// result is stored.
    pub fn complete(&self, lease: &Lease, result: JobResult) -> Result<(), QueueError> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        inner.complete_locked(&mut guard, lease, result)?;
        inner.after_completion(guard);
        self.run_held();
        Ok(())
    }

    /// Completes the leased job like [`JobQueue::complete`] and leases the next ready job to
    /// the same worker, waiting up to `timeout` for one (a zero timeout does not wait).
    ///
    /// This is a worker's loop in one call: the completion and the take share one lock
    /// acquisition and one clock read, which halves the worker's trips through the queue's
    /// lock — the lock that producers submitting at the same time contend for. If the
    /// completion is refused, nothing is taken and the error is returned as
    /// [`JobQueue::complete`] returns it; `Ok(None)` means the job completed and no job became
    /// ready within `timeout`.
    // Inline: see `submit`.
    #[inline]
    pub fn complete_and_next(
        &self,
        lease: &Lease,
        result: JobResult,
        timeout: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        if self.inner.memo.is_some() {
            return self.complete_then_take_held(lease, result, TypeMask::ALL, timeout);
        }
        self.inner
            .complete_then_take(lease, result, TypeMask::ALL, timeout)
    }

    /// [`JobQueue::complete_and_next`] for a worker that takes only jobs of `types`.
    pub fn complete_and_next_for(
        &self,
        lease: &Lease,
        result: JobResult,
        types: &[JobType],
        timeout: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let mask = TypeMask::of(types);
        if self.inner.memo.is_some() {
            return self.complete_then_take_held(lease, result, mask, timeout);
        }
        self.inner.complete_then_take(lease, result, mask, timeout)
    }

    /// [`JobQueue::complete_and_next_for`] for a queue with a memo store, which then runs the
    /// listener calls it held back ([`JobQueue::run_held`]). Apart, out of line: the lease
    /// the call returns, kept across that step, was built on the stack and copied out, which
    /// cost a queue without a store about 13 instructions a job (callgrind, one thread,
    /// `complete_and_next`: 1,470 against 1,455–1,458).
    ///
    /// A listener that panics there would unwind with the job just leased, which then stayed
    /// leased to nobody until its lease ran out (and counted an attempt it never made; a
    /// pool's worker, which catches the panic, lost it so): it is given back first, as on a
    /// completion hook's panic.
    #[cold]
    #[inline(never)]
    fn complete_then_take_held(
        &self,
        lease: &Lease,
        result: JobResult,
        mask: TypeMask,
        timeout: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let taken = self.inner.complete_then_take(lease, result, mask, timeout);
        if let Err(panic) = catch_unwind(callback::run_held) {
            self.inner.give_back(taken.ok().flatten().as_ref(), panic);
        }
        taken
    }

    /// Reports a failed attempt: the job is retried after the backoff delay, or dead-lettered
    /// if it has no retries left.
    pub fn fail(&self, lease: &Lease, error: impl Into<String>) -> Result<(), QueueError> {
        self.fail_telling(lease, error.into(), None)
    }

    /// [`JobQueue::fail`], telling `ended`, if the failure ends the job (it has no retry
    /// left), of the job, the message it failed with and the jobs coalesced onto it, which
    /// fail with it. Told under the queue's lock, in the step that fails them: so that a job
    /// coalesced onto the leased one up to that step is told too, and none of their records
    /// can leave the dead letters before `ended` has returned. (Asked beforehand, through
    /// [`JobQueue::followers`], the queue left out a job coalesced after that.) `ended` must
    /// not call the queue, nor panic.
    pub(crate) fn fail_telling(
        &self,
        lease: &Lease,
        error: String,
        ended: Option<&FailureHook<'_>>,
    ) -> Result<(), QueueError> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        let now = inner.clock.now();
        let (slot, deadline) = inner.check_lease(st, lease, now)?;
        // Before the failure takes the job out of the key's leaders: if it ends the job, these
        // are the followers it ends with it.
        let told = ended.map(|ended| (ended, st.follower_ids(slot), error.clone()));
        // Unlinked first because burying may drop the record; the job is Processing (checked
        // above), so the state machine accepts either outcome and the relink is a formality.
        st.unlink_lease(slot);
        let back = match inner.retry_or_bury(st, slot, lease.job_id, error, now) {
            Ok(back) => back,
            Err(e) => {
                st.link_lease(slot, deadline);
                return Err(e);
            }
        };
        if let (None, Some((ended, followers, error))) = (back, told) {
            ended(lease.job_id, &error, &followers);
        }
        inner.signal_room(st);
        let wake = st
            .waiting
            .sets_for(TypeMask::one(lease.job_type).when(wakes_takers(back, now)));
        drop(guard);
        inner.notify(wake);
        Ok(())
    }

    /// Gives the job back unrun, without counting an attempt (for example on shutdown).
    ///
    /// The job goes back to the ready jobs with the FIFO turn and the age it had when it was
    /// taken, not at the back with a fresh age: being given back is not the job's doing (a
    /// worker shutting down, a handler interrupted), so it keeps its place ahead of the jobs
    /// submitted after it, and the time it has waited (running time included) still counts
    /// towards aging, as a follower that takes over from a cancelled leader keeps its own.
    /// It waits at its effective priority as of the release (its followers may have changed
    /// while it ran).
    pub fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        self.inner.release(lease)
    }

    /// Extends the lease to `now + lease`; returns the new deadline.
    pub fn heartbeat(&self, lease: &Lease) -> Result<Timestamp, QueueError> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        let now = inner.clock.now();
        let (slot, _) = inner.check_lease(st, lease, now)?;
        let deadline = inner.lease_deadline(now);
        st.unlink_lease(slot);
        st.record_mut(slot, lease.job_id)?.place = Place::Leased {
            deadline,
            lease_id: lease.lease_id,
        };
        st.link_lease(slot, deadline);
        Ok(deadline)
    }

    /// The jobs coalesced onto the leased job now, as the queue decided (see
    /// [`crate::job::memo`]): those its outcome ends too, unless more are coalesced before it
    /// is given. Refused as [`JobQueue::heartbeat`] refuses a lease that is no longer the
    /// job's current one (cancelled, taken back), whose outcome the queue will not take. Lets a
    /// handler tell whoever waits on those jobs how they end without guessing them from their
    /// memo keys: a key's earlier job answered by the memo store, or a later one queued after
    /// the leader ends, has the same key and is no follower. A failure's followers are told
    /// exactly, as the queue fails them, by [`JobQueue::fail_telling`].
    pub(crate) fn followers(&self, lease: &Lease) -> Result<Vec<JobId>, QueueError> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        let now = inner.clock.now();
        let (slot, _) = inner.check_lease(st, lease, now)?;
        Ok(st.follower_ids(slot))
    }

    /// Cancels a queued or running job. A worker running it finds out when its completion,
    /// failure or heartbeat is refused: with [`QueueError::StaleLease`] while the cancelled
    /// job's record is kept, with [`QueueError::NotFound`] once it has left the finished jobs
    /// (see [`JobQueueBuilder::retain_finished`]; at 0 that is at once).
    pub fn cancel(&self, id: JobId) -> Result<(), QueueError> {
        self.cancel_if(id, false).map(|_| ())
    }

    /// Cancels job `id` unless a worker runs it now (it is leased); `Ok(false)`, with nothing
    /// changed, if one does. The check and the cancel are one step under the queue's lock, so
    /// a job leased meanwhile is not cancelled under its live run (the pipeline's bounded wait
    /// on a progress callback, `Pipeline::run_job`). A job that ran before and waits for its
    /// retry (ready, or out of its delay) has no live run, and its current attempt has not
    /// started ([`Job::started_at`] is cleared for it): it is cancelled, as a request waiting
    /// on it would otherwise wait on the callback as long as on a job never run.
    pub(crate) fn cancel_unstarted(&self, id: JobId) -> Result<bool, QueueError> {
        self.cancel_if(id, true)
    }

    /// [`JobQueue::cancel`], or with `unstarted_only` [`JobQueue::cancel_unstarted`].
    fn cancel_if(&self, id: JobId, unstarted_only: bool) -> Result<bool, QueueError> {
        let cancelled = self.cancel_if_unheld(id, unstarted_only);
        self.run_held();
        cancelled
    }

    /// [`JobQueue::cancel_if`] but for the listener calls held back (a takeover asks the store).
    fn cancel_if_unheld(&self, id: JobId, unstarted_only: bool) -> Result<bool, QueueError> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        let now = inner.clock.now();
        inner.catch_up(st, now);
        if unstarted_only
            && let Some(slot) = inner.find(st, id)
            && matches!(st.record_mut(slot, id)?.place, Place::Leased { .. })
        {
            return Ok(false);
        }
        let woke = inner.cancel_locked(st, id, now)?;
        inner.signal_room(st);
        // A takeover the memo store answers completes the followers: report them.
        inner.unlock_and_report(guard, woke);
        Ok(true)
    }

    /// Gives a dead-lettered job a fresh retry budget and queues it again (memo and
    /// coalescing apply as on submit, so a full queue refuses it with [`QueueError::Full`]
    /// unless the memo store answers it).
    pub fn resubmit_dead_letter(&self, id: JobId) -> Result<(), QueueError> {
        let resubmitted = self.resubmit_dead_letter_unheld(id);
        self.run_held();
        resubmitted
    }

    /// [`JobQueue::resubmit_dead_letter`] but for the listener calls held back.
    fn resubmit_dead_letter_unheld(&self, id: JobId) -> Result<(), QueueError> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        let now = inner.clock.now();
        inner.catch_up(st, now);
        let slot = inner.find(st, id);
        let Some(pos) = slot.and_then(|slot| st.dead.iter().position(|&d| d == slot)) else {
            return Err(QueueError::NotDeadLettered(id));
        };
        let slot = st.dead[pos];
        // As on submit, a job the memo store answers takes no place, so a full queue does
        // not refuse it (and a refusal counts nothing in the store).
        let mut hit = None;
        if !inner.claim_place(st) {
            let key = st.records.get(slot).and_then(|r| r.job.memo_key());
            hit = inner.memo_answer_when_full(&mut st.stats, key);
            if hit.is_none() {
                st.stats.rejected_full += 1;
                return Err(QueueError::Full {
                    capacity: inner.capacity,
                });
            }
        }
        let record = st.record_mut(slot, id)?;
        record.job.reopen()?;
        let job_type = record.job.job_type();
        st.dead.remove(pos);
        st.stats.dead_letters = st.dead.len();
        // A hit completes the job; anything else is admitted as usual.
        let answered = hit.is_some_and(|value| inner.memo_hit(st, slot, value, now));
        let woke = !answered && inner.admit(st, slot, now);
        inner.unlock_and_report(guard, TypeMask::one(job_type).when(woke));
        Ok(())
    }

    /// The dead letters, oldest first (a job whose last lease has run out among them).
    pub fn dead_letters(&self) -> Vec<Job> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        // Expired leases are taken back first, as for every call that reports jobs: without
        // this, a job whose worker died on its last attempt was missing from the list until
        // some other call happened to reap it, although `status` already reported it Failed.
        inner.catch_up(st, inner.clock.now());
        st.dead
            .iter()
            .filter_map(|&slot| st.records.get(slot).map(|r| Job::clone(&r.job)))
            .collect()
    }

    /// The job's status, if the queue still has its record.
    pub fn status(&self, id: JobId) -> Option<JobStatus> {
        self.get(id).map(|job| job.status())
    }

    /// A snapshot of the job, if the queue still has its record.
    pub fn get(&self, id: JobId) -> Option<Job> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        let now = inner.clock.now();
        inner.catch_up(st, now);
        let slot = inner.find(st, id)?;
        st.records.get(slot).map(|r| r.job.clone())
    }

    /// Waits up to `timeout` for job `id` to end and returns it as it ended: Completed (its
    /// result in [`Job::result`]), Failed for good (dead-lettered: its retries spent, its last
    /// lease run out, or the job it was coalesced onto failed), or Cancelled. A job that has
    /// ended already is returned at once, as [`JobQueue::get`] has it; so is a job the memo
    /// store answered, which is Completed when its submit returns. A zero timeout does not
    /// block.
    ///
    /// Only an end ends the wait: a failed attempt that will be retried, a lease that runs
    /// out with retries left, or a job given back ([`JobQueue::release`]) waits on. A job
    /// coalesced onto an identical one (see [`crate::job::memo`]) ends when that one does,
    /// with its result or its failure.
    ///
    /// The queue hands a job to its waiters as it ends, so a wait that began before the end
    /// gets it even if the queue forgets the job at once ([`JobQueueBuilder::retain_finished`]
    /// of 0, or a dead-letter list that is full). A wait that begins after the queue has
    /// forgotten the job fails with [`WaitError::NotFound`], as `get` returns `None`. A
    /// dead-lettered job has ended: a wait returns it Failed, and one that began before it
    /// failed returns then, even if it is [resubmitted](JobQueue::resubmit_dead_letter) before
    /// the waiter wakes; a wait begun after the resubmit waits for the new run.
    ///
    /// [`WaitError::TimedOut`] says the job's status when the wait gave up; the job goes on.
    /// The timeout is real time, as for [`JobQueue::next`]. The queue cannot go away under a
    /// waiter, which holds a handle to it, and it has no shutdown of its own: a
    /// [`crate::WorkerPool`] that shuts down leaves the jobs it did not run queued, and a wait
    /// for one of them times out.
    ///
    /// A lease that runs out on the job's last attempt ends it when a call notices (see
    /// *Leases* in the module docs); a waiter looks at its job's deadline as a blocked
    /// [`JobQueue::next`] does, and at least every 50 ms, since the queue's clock may not be
    /// real time.
    ///
    /// A job nobody waits for pays one test as it ends; a waited-for job's end wakes only its
    /// own waiters, each with a copy of the job (its payload and result shared, not copied).
    ///
    /// ```
    /// use std::time::Duration;
    /// use memocache::{Job, JobQueue, JobStatus, JobType, WorkerId};
    ///
    /// let queue = JobQueue::builder().build()?;
    /// let id = queue.submit(Job::new(JobType::Transcription, &b"talk.wav"[..]))?;
    /// let worker = {
    ///     let queue = queue.clone();
    ///     std::thread::spawn(move || {
    ///         let lease = queue.next(&WorkerId::new("w1"), Duration::from_secs(10));
    ///         let lease = lease.expect("the job is ready");
    ///         queue.complete(&lease, b"hello world".to_vec().into())
    ///     })
    /// };
    /// let job = queue.wait(id, Duration::from_secs(10))?;
    /// assert_eq!(job.status(), JobStatus::Completed);
    /// assert_eq!(job.result().map(|r| &r.as_bytes()[..]), Some(&b"hello world"[..]));
    /// worker.join().expect("the worker did not panic")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Many jobs
    ///
    /// To wait for several jobs, wait for each in turn against one deadline, so that the
    /// whole takes no longer than it: a job that ends while an earlier one is waited for is
    /// returned at once when its turn comes, as long as the queue keeps it. A batch larger
    /// than [`JobQueueBuilder::retain_finished`] may have jobs ended and forgotten before
    /// their turn, which are then [`WaitError::NotFound`]: wait for such a batch from
    /// several threads (a waiter registered before the end always gets it), or keep the
    /// retention above the batch.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use memocache::{Job, JobQueue, JobType, WaitError, WorkerId};
    /// # let queue = JobQueue::builder().build()?;
    /// # let ids: Vec<_> = (0..3u8)
    /// #     .map(|i| queue.submit(Job::new(JobType::Indexing, vec![i])))
    /// #     .collect::<Result<_, _>>()?;
    /// # while let Some(lease) = queue.try_next(&WorkerId::new("w")) {
    /// #     queue.complete(&lease, Vec::new().into())?;
    /// # }
    /// let deadline = Instant::now() + Duration::from_secs(30);
    /// let jobs = ids
    ///     .iter()
    ///     .map(|&id| queue.wait(id, deadline.saturating_duration_since(Instant::now())))
    ///     .collect::<Result<Vec<_>, WaitError>>()?;
    /// assert_eq!(jobs.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self, id: JobId, timeout: Duration) -> Result<Job, WaitError> {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        let now = inner.clock.now();
        // As for `get`: a lease that ran out on a last attempt ends the job now.
        inner.catch_up(st, now);
        let slot = inner.find(st, id).ok_or(WaitError::NotFound(id))?;
        let job = &st.records.get(slot).ok_or(WaitError::NotFound(id))?.job;
        if job.status().is_terminal() {
            return Ok(job.clone());
        }
        inner.wait_for_end(guard, id, slot, timeout)
    }

    /// Counts of jobs by status, and totals.
    pub fn stats(&self) -> QueueStats {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let st = &mut *guard;
        let now = inner.clock.now();
        inner.catch_up(st, now);
        let mut stats = st.stats;
        stats.processing = st.leases.len;
        stats.queued = st.live - stats.processing;
        stats.delayed = st.delayed.len();
        stats.coalesced_waiting = st.followers;
        stats.dead_letters = st.dead.len();
        stats.waiters = st.watched.values().map(|w| w.waiters).sum();
        stats
    }

    /// The queue's clock.
    pub fn clock(&self) -> &SharedClock {
        self.inner.clock.get()
    }

    /// [`JobQueue::next_for`], giving up with `None` as soon as `stop` returns true, checked
    /// before each wait and after each wake ([`JobQueue::wake_all`]): how a pool's idle
    /// worker waits, so that a pool that stops, or drains and sees its last job end, is not
    /// held up by its workers' idle waits. Other takers are not affected.
    pub(crate) fn next_for_until(
        &self,
        worker: &WorkerId,
        types: &[JobType],
        timeout: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Option<Lease> {
        self.inner
            .take_until(worker, TypeMask::of(types), Some(timeout), Some(stop))
    }

    /// Wakes every blocked taker, so that it re-reads the clock and a pool's idle worker its
    /// stop condition ([`JobQueue::next_for_until`]).
    pub(crate) fn wake_all(&self) {
        // Under the lock: a taker checks its stop condition and starts waiting in one hold of
        // it, so a stop made before this cannot fall between the check and the wait (and be
        // missed until the wait times out).
        let _state = self.inner.state.lock();
        for available in &self.inner.available {
            available.notify_all();
        }
    }
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The record in `slot`, which holds job `id` (the id only names the job in the error).
    fn record_mut(&mut self, slot: Slot, id: JobId) -> Result<&mut Record, QueueError> {
        self.records.get_mut(slot).ok_or(QueueError::NotFound(id))
    }

    /// Puts a job just submitted on the slow path in a record of its own in `slot` (its place
    /// is left to [`Inner::admit`]), stamped with the submit time and its retry budget. (A
    /// function of its own: written out in `submit`, the same lines cost 5–8 more
    /// instructions a job in a one-thread callgrind loop, session 8.)
    #[inline(always)]
    fn add_submitted(&mut self, mut job: Job, slot: Slot, now: Timestamp, max_retries: u32) {
        job.stamp_submitted(now, max_retries);
        self.records.insert_at(
            slot,
            Record {
                job,
                place: Place::Done,
                prev: NIL,
                next: NIL,
            },
        );
        self.stats.submitted += 1;
    }

    /// Moves a job from the intake into its record in `slot` and the back of its ready deque:
    /// a job of the fast path has no memo key, so it neither coalesces nor asks the memo
    /// store, and it takes a place (already counted in [`Signals::live`] by the drain).
    #[inline(always)]
    fn admit_pending(&mut self, job: Job, slot: Slot) {
        // The record goes into the slab first and is read there: the job is moved once, from
        // the intake's buffer into its slot.
        let (job_type, priority, created_at) = (job.job_type(), job.priority(), job.created_at());
        let seq = self.next_seq();
        self.records.insert_at(
            slot,
            Record {
                job,
                place: Place::Ready { seq, priority },
                prev: NIL,
                next: NIL,
            },
        );
        let (p, t) = (priority.index(), job_type.index());
        let deque = &mut self.ready[p][t];
        // Its wait started when its producer read the clock, which can be before the wait of
        // a job this side made ready since (a retry that fell due, at the time of the call
        // that moved it): no earlier than the job ahead of it, so that every deque stays
        // sorted by wait as well as by turn (a take looks only at heads).
        let since = match deque.back() {
            Some(ahead) if ahead.since > created_at => ahead.since,
            _ => created_at,
        };
        deque.push_back(Ready { slot, seq, since });
        self.nonempty |= 1 << (4 * p + t);
        self.note_ready_since(since);
        self.live += 1;
        self.stats.submitted += 1;
    }

    /// The priority a job waits at: the highest of its own and its followers' (priority
    /// inheritance: coalescing never makes an urgent job wait behind less urgent work).
    /// O(followers); only a job with followers that becomes ready again (a retry, a release,
    /// a takeover or a cancelled follower) needs it.
    fn effective_priority(&self, slot: Slot) -> JobPriority {
        let Some(record) = self.records.get(slot) else {
            return JobPriority::Low;
        };
        let own = record.job.priority();
        match self.followers_of(slot, record.job.memo_key()) {
            Some(followers) => followers
                .iter()
                .filter_map(|&f| self.records.get(f))
                .map(|r| r.job.priority())
                .fold(own, JobPriority::max),
            None => own,
        }
    }

    /// The followers of the job in `slot`, whose memo key is `key`, if it leads its key.
    fn followers_of(&self, slot: Slot, key: Option<&CacheKey>) -> Option<&Vec<Slot>> {
        let lead = self.leaders.get(key?)?;
        (lead.slot == slot).then_some(&lead.followers)
    }

    /// The ids of the jobs coalesced onto the job in `slot` (none if it leads no key).
    fn follower_ids(&self, slot: Slot) -> Vec<JobId> {
        let key = self.records.get(slot).and_then(|r| r.job.memo_key());
        self.followers_of(slot, key).map_or_else(Vec::new, |slots| {
            slots
                .iter()
                .filter_map(|&f| self.records.get(f).map(|r| r.job.id()))
                .collect()
        })
    }

    /// Takes the job in `slot` out of `leaders` if it leads `key`, returning its followers.
    fn unlead(&mut self, slot: Slot, key: Option<CacheKey>) -> Option<Vec<Slot>> {
        let key = key?;
        if self.leaders.get(&key)?.slot != slot {
            return None;
        }
        self.leaders.remove(&key).map(|lead| lead.followers)
    }

    /// Puts a queued job at the back of the ready deque of `priority`, its effective priority
    /// (its own for a new job, which has no followers yet; see
    /// [`State::effective_priority`]).
    fn enqueue(&mut self, slot: Slot, priority: JobPriority, now: Timestamp) {
        let seq = self.next_seq();
        if let Some(record) = self.records.get_mut(slot) {
            let (p, t) = (priority.index(), record.job.job_type().index());
            record.place = Place::Ready { seq, priority };
            let deque = &mut self.ready[p][t];
            // No earlier than the job ahead of it, as in `admit_pending`: a clock that went
            // backwards (against its promise) would otherwise leave an older wait behind a
            // younger head, unseen by aging (which looks at heads) and by `ready_since` (which
            // a pick raises to the oldest head) until it reached the head. So a job queued
            // after a step back waits, for aging, from its deque's last stamp: it ages up to
            // that step late, but by one rule, whatever the other deques hold.
            let since = match deque.back() {
                Some(ahead) if ahead.since > now => ahead.since,
                _ => now,
            };
            deque.push_back(Ready { slot, seq, since });
            self.nonempty |= 1 << (4 * p + t);
            self.note_ready_since(since);
        }
    }

    /// Puts a ready job taken out of one deque into the deque of its (new) priority, at the
    /// place its sequence number gives it: a raised job keeps its age *and* its turn. (A
    /// follower taking over from a cancelled leader comes in the same way, with the turn and
    /// the time it was given when it was coalesced, and so does a released job, with those
    /// it was taken with.)
    ///
    /// Pushing it at the back with its old `since` would leave an older job behind younger
    /// heads; since a take looks only at heads, it would then wait for every younger job of
    /// its new deque to be taken or aged, beyond the aging bound (and out of FIFO order).
    ///
    /// Sequence numbers and `since` need not grow together, though: a fast submit's stamp is
    /// read before its push, so a job pushed after another was made ready (or after the clock
    /// stepped back) can hold a later turn and an earlier stamp, and a job put back ahead of
    /// it left the deque out of wait order. `ready_since`, raised to the oldest head, then
    /// hid the older job behind it, which aged at one time or another depending on whether
    /// some pick looked at every head. So the rule of `enqueue` and `admit_pending` holds
    /// here too: a job waits, for aging, from no earlier than the job ahead of it, both for
    /// this one and for those it is put ahead of. O(jobs behind it that it raises), and this
    /// runs only for a release, a priority change or a takeover.
    fn reinsert_ready(&mut self, mut ready: Ready, priority: JobPriority) {
        if let Some(record) = self.records.get_mut(ready.slot) {
            let (p, t) = (priority.index(), record.job.job_type().index());
            record.place = Place::Ready {
                seq: ready.seq,
                priority,
            };
            let deque = &mut self.ready[p][t];
            let at = deque.partition_point(|r| r.seq < ready.seq);
            if let Some(ahead) = at.checked_sub(1).and_then(|i| deque.get(i)) {
                ready.since = ready.since.max(ahead.since);
            }
            for behind in deque.range_mut(at..) {
                if behind.since >= ready.since {
                    break;
                }
                behind.since = ready.since;
            }
            deque.insert(at, ready);
            self.nonempty |= 1 << (4 * p + t);
            self.note_ready_since(ready.since);
        }
    }

    /// Moves a ready job to the deque of `priority`, its new effective priority, keeping its
    /// age and its turn (see [`State::reinsert_ready`]). A job that is not ready is left
    /// alone: it is placed by [`State::effective_priority`] when it becomes ready again.
    fn move_ready(&mut self, slot: Slot, priority: JobPriority) {
        let Some(record) = self.records.get(slot) else {
            return;
        };
        let (job_type, place) = (record.job.job_type(), record.place);
        if let Place::Ready { seq, priority: old } = place
            && priority != old
            && let Some(ready) = self.unready(old, job_type, seq)
        {
            self.reinsert_ready(ready, priority);
        }
    }

    /// Keeps `ready_since` a lower bound as a job that has waited since `since` becomes
    /// ready. Written only when it goes down (rarely: a job given back, or one whose
    /// followers raised it), so that the line it is on stays shared with the other cores.
    fn note_ready_since(&mut self, since: Timestamp) {
        if since < self.ready_since {
            self.ready_since = since;
        }
    }

    /// Takes the head of `ready[p][t]`.
    fn pop_ready(&mut self, p: usize, t: usize) -> Option<Ready> {
        let deque = &mut self.ready[p][t];
        let ready = deque.pop_front();
        if deque.is_empty() {
            self.nonempty &= !(1 << (4 * p + t));
        }
        ready
    }

    /// Takes a ready job out of its deque (for cancel or a priority change).
    fn unready(&mut self, priority: JobPriority, job_type: JobType, seq: u64) -> Option<Ready> {
        let (p, t) = (priority.index(), job_type.index());
        let deque = &mut self.ready[p][t];
        // Sequence numbers only grow and are pushed at the back, so each deque is sorted.
        let pos = deque.binary_search_by_key(&seq, |r| r.seq).ok()?;
        let ready = deque.remove(pos);
        if deque.is_empty() {
            self.nonempty &= !(1 << (4 * p + t));
        }
        ready
    }

    /// The deadline of a leased job's lease.
    fn deadline_of(&self, slot: Slot) -> Option<Timestamp> {
        match self.records.get(slot)?.place {
            Place::Leased { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// The leased job whose lease ends first, with its deadline.
    fn first_lease(&self) -> Option<(Timestamp, Slot)> {
        let slot = self.leases.head;
        self.deadline_of(slot).map(|deadline| (deadline, slot))
    }

    /// When the first lease to end does, for a blocked call to wait for. A lease that never
    /// ends (see *Leases*) is no event: waited for, it was due at once, and a clock of zero
    /// resolution standing at the end of time spun the waiting loop.
    fn next_expiry(&self) -> Option<Timestamp> {
        self.first_lease()
            .map(|(at, _)| at)
            .filter(|&at| at != END_OF_TIME)
    }

    /// Links a job whose place was just set to `Leased { deadline, .. }` into the lease list,
    /// keeping it sorted by deadline. Every lease lasts the same time and the clock is
    /// monotonic, so a new deadline is the latest and this appends in O(1); the walk back only
    /// guards the order against a clock that breaks its promise.
    fn link_lease(&mut self, slot: Slot, deadline: Timestamp) {
        self.next_due = self.next_due.min(deadline);
        let mut after = self.leases.tail;
        while after != NIL && self.deadline_of(after).is_some_and(|d| d > deadline) {
            after = self.records.get(after).map_or(NIL, |r| r.prev);
        }
        let next = if after == NIL {
            self.leases.head
        } else {
            self.records.get(after).map_or(NIL, |r| r.next)
        };
        if let Some(r) = self.records.get_mut(slot) {
            (r.prev, r.next) = (after, next);
        }
        match self.records.get_mut(after) {
            Some(r) => r.next = slot,
            None => self.leases.head = slot,
        }
        match self.records.get_mut(next) {
            Some(r) => r.prev = slot,
            None => self.leases.tail = slot,
        }
        self.leases.len += 1;
    }

    /// Unlinks a leased job from the lease list (its place is left to the caller).
    fn unlink_lease(&mut self, slot: Slot) {
        let Some(r) = self.records.get_mut(slot) else {
            return;
        };
        let links = r.take_links();
        self.unlink(links);
    }

    /// Joins the neighbours a leased job had in the lease list, `(prev, next)`, taken from
    /// its record by [`Record::take_links`], to each other.
    #[inline(always)]
    fn unlink(&mut self, (prev, next): (Slot, Slot)) {
        match self.records.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.leases.head = next,
        }
        match self.records.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.leases.tail = prev,
        }
        self.leases.len -= 1;
    }

    /// Drops the record in `slot` (a dead letter, or a finished job pushed out of the ring)
    /// where it lies, not moved out first (see [`Slab::remove`]). Its index entry is removed
    /// and the slot given back at the next drain ([`hand_back`]): the index is behind the
    /// intake lock, which this side takes once per drain rather than once per job.
    fn drop_record(&mut self, slot: Slot) {
        if let Some(id) = self.records.remove(slot, |record| record.job.id()) {
            self.dropped.push((id, slot));
        }
    }

    /// Files a job that just finished (completed or cancelled) as the newest retained one,
    /// dropping the oldest once `retain` are kept. The caller took the job out of every other
    /// structure. The record stays where it is: neither it nor its index entry moves.
    /// Inlined into every completion: as a call, it cost its frame (callgrind, one thread,
    /// the bench's loop: 11 instructions a job).
    #[inline(always)]
    fn finished(&mut self, slot: Slot, retain: usize) {
        let Some(record) = self.records.get_mut(slot) else {
            return;
        };
        record.place = Place::Finished;
        self.file_finished(slot, retain);
    }

    /// [`State::finished`] for a job whose record is already marked finished: a completion
    /// marks it while it holds the record, rather than finding it again here.
    #[inline(always)]
    fn file_finished(&mut self, slot: Slot, retain: usize) {
        // Before the record can be dropped. With no one waiting, a finish pays this test.
        if !self.watched.is_empty() {
            self.tell_waiters(slot);
        }
        if retain == 0 {
            self.drop_record(slot);
        } else if let Some(oldest) = self.retained.push(slot, retain) {
            self.drop_record(oldest);
        }
    }

    /// Adds a job that just failed for good to the dead letter, dropping the oldest beyond
    /// the bound.
    fn bury(&mut self, slot: Slot, capacity: usize) {
        if let Some(record) = self.records.get_mut(slot) {
            record.place = Place::Done;
        }
        // Before the record can be dropped (a dead-letter list of capacity 0). A resubmit
        // restarts the job, but the failure was its end for whoever waited for it.
        if !self.watched.is_empty() {
            self.tell_waiters(slot);
        }
        self.dead.push_back(slot);
        while self.dead.len() > capacity {
            if let Some(old) = self.dead.pop_front() {
                self.drop_record(old);
                self.stats.dead_letters_evicted += 1;
            }
        }
        self.stats.dead_letters = self.dead.len();
    }

    /// Hands the job in `slot`, which has just ended (completed, cancelled or failed for
    /// good), to the callers waiting for it in [`JobQueue::wait`], if any, and wakes them.
    /// Its watch goes with it: a wait begun after this reads the record, or finds it gone.
    /// Out of line, and reached only while some job is waited for.
    #[cold]
    #[inline(never)]
    fn tell_waiters(&mut self, slot: Slot) {
        let Some(record) = self.records.get(slot) else {
            return;
        };
        if let Some(watch) = self.watched.remove(&record.job.id()) {
            // Set for the first time: the watch is removed as it is set.
            let _ = watch.ending.job.set(record.job.clone());
            watch.ending.wake.notify_all();
        }
    }
}

impl Inner {
    /// The completions to report once the lock is released, if there are any. Without a
    /// hook nothing is ever pushed, so nothing is taken: taking the empty list wrote it back
    /// and dropped it on every submit and completion. An empty list is left as it is, with
    /// its buffer, and so is the list of a single completion (see [`Completions::One`]).
    #[inline(always)]
    fn take_completions(&self, st: &mut State) -> Option<Completions> {
        self.on_complete.as_ref()?;
        match st.completions.as_slice() {
            [] => None,
            &[one] => {
                st.completions.clear();
                Some(Completions::One(one))
            }
            _ => Some(Completions::Many(std::mem::take(&mut st.completions))),
        }
    }

    /// When a lease taken or extended at `now` ends.
    fn lease_deadline(&self, now: Timestamp) -> Timestamp {
        Timestamp::from_nanos(now.as_nanos().saturating_add(self.lease_nanos))
    }

    /// Calls the completion hook, if any, for jobs completed under the lock just released.
    ///
    /// Each job is reported even if the hook panics on another: one completion reports a
    /// leader and its followers together, and a panic let out of the loop at once left the
    /// rest unreported (a hook counting completions for metrics missed them for good, though
    /// the jobs had completed). The first panic goes on once every job has been reported,
    /// so that the caller still sees it as before. The loop that does this is the stored
    /// hook itself (see [`JobQueueBuilder::on_complete`]), so that this is one call.
    ///
    /// From inside a hook call (a hook that submits, completes or cancels), the jobs are
    /// only queued, and reported by the outermost report on this thread once its hook call
    /// returns: called here, each round of a hook that submits memo hits nested one hook
    /// call deeper, without bound, and overflowed a 256 KiB thread stack within 20,000
    /// rounds in a debug build (see [`crate::callback`]).
    #[inline(always)]
    fn report(&self, completions: Option<Completions>) {
        // The completions first: they are `None` without a hook, known before the unlock,
        // while the hook would be read again after it.
        if let Some(completions) = completions
            && let Some(on_complete) = &self.on_complete
        {
            let completions = match &completions {
                Completions::One(one) => std::slice::from_ref(one),
                Completions::Many(many) => many.as_slice(),
            };
            report_to(on_complete, completions);
        }
    }

    /// Places a queued job whose record is in `slot` (a new submit or a reopened dead letter):
    /// memo hit, follower, or ready. Returns whether a taker should be woken. Always inlined
    /// (see [`Inner::after_completion`]).
    #[inline(always)]
    fn admit(&self, st: &mut State, slot: Slot, now: Timestamp) -> bool {
        let Some(record) = st.records.get(slot) else {
            return false;
        };
        let (key, priority) = (record.job.memo_key().copied(), record.job.priority());
        if let Some(key) = key {
            if let Some(lead) = st.leaders.get_mut(&key) {
                lead.followers.push(slot);
                let leader = lead.slot;
                self.follow(st, slot, leader, priority, now);
                return false;
            }
            let hit = self.memo_lookup(&mut st.stats, Some(&key));
            if hit.is_some_and(|value| self.memo_hit(st, slot, value, now)) {
                return false;
            }
            st.leaders.insert(
                key,
                Leader {
                    slot,
                    followers: Vec::new(),
                },
            );
        }
        st.live += 1;
        st.enqueue(slot, priority, now);
        true
    }

    /// Counts a place for a job about to be admitted under the main lock, if the queue has room
    /// (the jobs still in the intake hold places too). Under the intake lock, so that no fast
    /// submit takes the place meanwhile.
    fn claim_place(&self, st: &State) -> bool {
        let intake = self.intake.lock();
        if st.live + intake.jobs.len() >= self.capacity {
            return false;
        }
        self.signals.live.store(st.live + 1, Ordering::Relaxed);
        true
    }

    /// The memo store's result for `key`, if there are both. A lookup that panics answers
    /// "not there" and is counted in `stats` (see *A store that panics* in
    /// [`crate::job::memo`]).
    fn memo_lookup(&self, stats: &mut QueueStats, key: Option<&CacheKey>) -> Option<Bytes> {
        let (memo, key) = self.memo.as_ref().zip(key)?;
        memo_call(&mut stats.memo_lookup_failures, || memo.lookup(key)).flatten()
    }

    /// The memo store's result for a job a full queue has no room for, if it has one. The
    /// check is a [`MemoStore::peek`], which counts nothing, because it is made before the
    /// queue refuses the job or makes it wait, and again on every wake of a waiting submit:
    /// as a lookup it counted a miss each time, misses no caller asked for (see *Counting* in
    /// [`crate::job::memo`]). Only a key that is there is looked up, to count the hit and
    /// refresh the entry as any memo hit does. Out of line: only a full queue asks.
    #[cold]
    #[inline(never)]
    fn memo_answer_when_full(
        &self,
        stats: &mut QueueStats,
        key: Option<&CacheKey>,
    ) -> Option<Bytes> {
        let (memo, key) = self.memo.as_ref().zip(key)?;
        // A peek or a lookup that panics answers "not there", and is counted, as in
        // `memo_lookup`.
        let panics = &mut stats.memo_lookup_failures;
        let peeked = memo_call(panics, || memo.peek(key)).flatten()?;
        // Should the entry go between the two calls (expired, evicted, removed), the result
        // peeked a moment ago is still this key's: answer with it rather than refuse.
        Some(
            memo_call(panics, || memo.lookup(key))
                .flatten()
                .unwrap_or(peeked),
        )
    }

    /// Completes the queued job in `slot` with a memoized result: it finishes at once and
    /// takes no place (the caller uncounts a follower from `live` and `followers`; a new job
    /// was never counted). Returns false, changing nothing, if the job's state machine
    /// refuses (not reachable: only queued jobs get here).
    fn memo_hit(&self, st: &mut State, slot: Slot, value: Bytes, now: Timestamp) -> bool {
        let Some(record) = st.records.get_mut(slot) else {
            return false;
        };
        if record.job.complete_memoized(value.into(), now).is_err() {
            return false;
        }
        if self.on_complete.is_some() {
            st.completions.push(JobCompletion::of(&record.job, true));
        }
        st.stats.memo_hits += 1;
        st.stats.completed += 1;
        st.finished(slot, self.retain_finished);
        true
    }

    /// Coalesces the job in `slot` onto `leader` (the caller has added it to the leader's
    /// followers), raising the leader's priority if the job is more urgent. The follower takes
    /// a turn now, as a ready job would, so that if it takes over from a cancelled leader it
    /// competes with its own age, not the takeover's.
    fn follow(
        &self,
        st: &mut State,
        slot: Slot,
        leader: Slot,
        priority: JobPriority,
        now: Timestamp,
    ) {
        st.live += 1;
        st.followers += 1;
        st.stats.coalesced += 1;
        let seq = st.next_seq();
        if let Some(r) = st.records.get_mut(slot) {
            r.place = Place::Follower { seq, since: now };
        }
        let Some(lead) = st.records.get(leader) else {
            return;
        };
        // Priority inheritance. A follower can only raise its leader's effective priority,
        // so this is O(1); the leader's own priority (what `get` reports) is left as
        // submitted, so that the boost can be undone if this follower is cancelled.
        if let Place::Ready { priority: old, .. } = lead.place
            && priority > old
        {
            st.move_ready(leader, priority);
        }
    }

    /// Moves due retries to the ready deques and takes back expired leases, each as of the
    /// time it fell due and in the order they did (a retry first on a tie). Returns the types
    /// of the jobs that became ready.
    ///
    /// Each event is dated at its own time, not at the call that notices it, which may come
    /// much later (no call reached the queue meanwhile): an expired lease is a failed attempt
    /// at its deadline, so its retry is due a backoff after the deadline; and a retry is
    /// ready, and waits for aging, from its due time. Dated at the call, a job whose worker
    /// died was held back a whole backoff more from a worker asking long after its lease had
    /// run out, and queued behind retries that fell due after it.
    fn maintain(&self, st: &mut State, now: Timestamp) -> TypeMask {
        if now < st.next_due {
            return TypeMask::NONE;
        }
        let mut woke = TypeMask::NONE;
        loop {
            let retry = st.delayed.first_key_value().map(|(&(due, _), _)| due);
            let lease = st.first_lease();
            let retry_first = match (retry, lease) {
                (Some(due), Some((deadline, _))) => due <= deadline && due <= now,
                (Some(due), None) => due <= now,
                (None, _) => false,
            };
            if retry_first {
                let Some(((due, _), slot)) = st.delayed.pop_first() else {
                    break;
                };
                let priority = st.effective_priority(slot);
                st.enqueue(slot, priority, due);
                if let Some(record) = st.records.get(slot) {
                    woke = woke.and(TypeMask::one(record.job.job_type()));
                }
                continue;
            }
            match lease {
                Some((deadline, slot)) if lease_over(deadline, now) => {
                    st.unlink_lease(slot);
                    woke = woke.and(self.expire(st, slot, deadline, now));
                }
                _ => break,
            }
        }
        let next_retry = st.delayed.first_key_value().map(|((at, _), _)| *at);
        let next_expiry = st.first_lease().map(|(at, _)| at);
        st.next_due = [next_retry, next_expiry]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(END_OF_TIME);
        woke
    }

    /// [`Inner::maintain`], waking blocked takers if a job became ready: every call runs it,
    /// whatever it is for, since a retry it makes ready is a job for them (`cancel`, `get`,
    /// `stats` and the like called `maintain` itself and woke no one, so a blocked taker got
    /// such a job only at its next re-check, up to 50 ms later). The callers on the hot paths
    /// (submit, take, a lease check) call it only once something is due, comparing the time
    /// with `next_due` inline, so that until then maintenance costs them one comparison and
    /// no call (callgrind, one thread: 30–60 instructions a job fewer than calling `maintain`
    /// each time).
    ///
    /// It also wakes the submitters waiting for room if a lease it took back was the job's
    /// last attempt and freed places (the job and its followers dead-lettered): they were
    /// woken by a `fail` of the same job, but not by this, and waited out their wait slice
    /// although the queue had room.
    #[cold]
    #[inline(never)]
    fn catch_up(&self, st: &mut State, now: Timestamp) {
        let woke = self.maintain(st, now);
        self.signal_room(st);
        self.notify(st.waiting.sets_for(woke));
    }

    /// Handles an expired lease (already unlinked), which ran out at `deadline`, as a failed
    /// attempt at that time, seen at `now`. Returns the job's type if its takers are to be
    /// woken: it became ready again, or its retry is due soon (see [`wakes_takers`]).
    fn expire(&self, st: &mut State, slot: Slot, deadline: Timestamp, now: Timestamp) -> TypeMask {
        st.stats.lease_expirations += 1;
        let Some(record) = st.records.get(slot) else {
            return TypeMask::NONE;
        };
        let (id, job_type) = (record.job.id(), record.job.job_type());
        let worker = record.job.worker_id().map(ToString::to_string);
        let error = format!("lease expired on worker {}", worker.unwrap_or_default());
        // The job is Processing (it was leased), so the state machine accepts either outcome.
        let back = self
            .retry_or_bury(st, slot, id, error, deadline)
            .ok()
            .flatten();
        TypeMask::one(job_type).when(wakes_takers(back, now))
    }

    /// After an attempt that failed at `now` (lease already unlinked; for an expired lease,
    /// `now` is its deadline): schedule a retry or dead-letter the job and its followers.
    /// Returns when the job is ready again: `now`, or its retry's due time; `None` if it was
    /// dead-lettered.
    fn retry_or_bury(
        &self,
        st: &mut State,
        slot: Slot,
        id: JobId,
        error: String,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, QueueError> {
        let record = st.record_mut(slot, id)?;
        if record.job.can_retry() {
            let delay = self.retry.retry_delay(record.job.retry_count());
            record.job.schedule_retry(error)?;
            st.stats.retries += 1;
            if delay.is_zero() {
                let priority = st.effective_priority(slot);
                st.enqueue(slot, priority, now);
                return Ok(Some(now));
            }
            let due = now.saturating_add(delay);
            let seq = st.next_seq();
            st.delayed.insert((due, seq), slot);
            st.next_due = st.next_due.min(due);
            st.record_mut(slot, id)?.place = Place::Delayed { due, seq };
            return Ok(Some(due));
        }
        record.job.fail(error.clone(), now)?;
        let key = record.job.memo_key().copied();
        let followers = st.unlead(slot, key).unwrap_or_default();
        st.live -= 1;
        st.stats.failed += 1;
        st.bury(slot, self.dead_letter_capacity);
        let message = coalesced_failure(id, &error);
        for f in followers {
            if let Some(r) = st.records.get_mut(f)
                && r.job.fail(message.clone(), now).is_ok()
            {
                st.live -= 1;
                st.followers -= 1;
                st.stats.failed += 1;
                st.bury(f, self.dead_letter_capacity);
            }
        }
        Ok(None)
    }

    /// Verifies that `lease` is the job's current, unexpired lease and returns the job's slot
    /// and the lease's deadline. An expired one is taken back here (as every due lease is),
    /// and reported as such.
    fn check_lease(
        &self,
        st: &mut State,
        lease: &Lease,
        now: Timestamp,
    ) -> Result<(Slot, Timestamp), QueueError> {
        // A job keeps its slot until its record is dropped, so the lease's slot is where it
        // is, finished or not, unless the record is gone (or the lease is from another queue).
        // The current lease is checked inline; a refusal is worded out of line, so that the
        // hot path neither loads what only an error names nor copies an error-sized result.
        if let Some(record) = st.records.get(lease.slot)
            && record.job.id() == lease.job_id
            && let Place::Leased { lease_id, deadline } = record.place
            && lease_id == lease.lease_id
            && !lease_over(deadline, now)
        {
            // Maintenance never touches a lease that is still current.
            if now >= st.next_due {
                self.catch_up(st, now);
            }
            return Ok((lease.slot, deadline));
        }
        self.check_lease_slow(st, lease, now)
    }

    /// [`Inner::check_lease`] for every lease that is not the current one of the record in its
    /// slot: the lease is refused (or, should its job have been found elsewhere by id,
    /// accepted there), after the maintenance every operation runs.
    #[cold]
    #[inline(never)]
    fn check_lease_slow(
        &self,
        st: &mut State,
        lease: &Lease,
        now: Timestamp,
    ) -> Result<(Slot, Timestamp), QueueError> {
        let id = lease.job_id;
        let slot = match st.records.get(lease.slot) {
            Some(r) if r.job.id() == id => lease.slot,
            _ => self.find(st, id).ok_or(QueueError::NotFound(id))?,
        };
        let record = st.records.get(slot).ok_or(QueueError::NotFound(id))?;
        let verdict = match record.place {
            Place::Leased { lease_id, deadline } if lease_id == lease.lease_id => {
                if lease_over(deadline, now) {
                    Err(QueueError::LeaseExpired {
                        id,
                        worker: lease.worker.clone(),
                    })
                } else {
                    Ok((slot, deadline))
                }
            }
            _ => Err(QueueError::StaleLease {
                id,
                worker: lease.worker.clone(),
                status: record.job.status(),
            }),
        };
        // The verdict is taken before maintenance, which takes an expired lease back; it
        // never touches a lease that is still current, so the verdict stands.
        if now >= st.next_due {
            self.catch_up(st, now);
        }
        verdict
    }

    fn complete_leased(
        &self,
        st: &mut State,
        slot: Slot,
        id: JobId,
        result: JobResult,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        // The record is found once, and taken out of the lease list and marked finished
        // while held: found again by `unlink_lease` and `finished`, it cost 13 to 16
        // instructions a job (callgrind, one thread, the bench's loop). Hence the field, not
        // `State::record_mut`, whose borrow would hold all of `st`.
        let record = st.records.get_mut(slot).ok_or(QueueError::NotFound(id))?;
        // The result is shared only if it is stored or handed to followers, and only a
        // memoized job has either.
        let shared = record.job.memo_key().map(|&key| (key, result.clone()));
        record.job.complete(result, now)?;
        if self.on_complete.is_some() {
            let completion = JobCompletion::of(&record.job, false);
            st.completions.push(completion);
        }
        let links = record.take_links();
        record.place = Place::Finished;
        st.unlink(links);
        st.live -= 1;
        st.stats.completed += 1;
        st.file_finished(slot, self.retain_finished);
        let Some((key, result)) = shared else {
            return Ok(());
        };
        // The job has finished (its record is kept in the finished ring, or already
        // dropped): a panic let out of the store here would strand its followers and leave
        // `leaders` naming a finished or freed slot, so one is a failed store like any other
        // (see *A store that panics* in `memo`). `memo_call` counts a panic; an error is
        // counted here.
        if let Some(memo) = &self.memo
            && let Some(Err(_)) = memo_call(&mut st.stats.memo_store_failures, || {
                memo.store(key, result.as_bytes().clone())
            })
        {
            st.stats.memo_store_failures += 1;
        }
        let followers = st.unlead(slot, Some(key)).unwrap_or_default();
        for f in followers {
            if let Some(r) = st.records.get_mut(f)
                && r.job.complete_memoized(result.clone(), now).is_ok()
            {
                if self.on_complete.is_some() {
                    let completion = JobCompletion::of(&r.job, false);
                    st.completions.push(completion);
                }
                st.live -= 1;
                st.followers -= 1;
                st.stats.completed += 1;
                st.finished(f, self.retain_finished);
            }
        }
        Ok(())
    }

    /// Cancels job `id` under the lock. Returns its type if a follower took over from it and
    /// became ready (so takers of that type should be woken).
    fn cancel_locked(
        &self,
        st: &mut State,
        id: JobId,
        now: Timestamp,
    ) -> Result<TypeMask, QueueError> {
        let slot = self.find(st, id).ok_or(QueueError::NotFound(id))?;
        let record = st.record_mut(slot, id)?;
        let (job_type, place) = (record.job.job_type(), record.place);
        // A finished or dead-lettered job is terminal: the state machine words the refusal,
        // before anything has changed.
        record.job.cancel(now)?;
        let key = record.job.memo_key().copied();
        match place {
            Place::Ready { seq, priority } => {
                st.unready(priority, job_type, seq);
            }
            Place::Delayed { due, seq } => {
                st.delayed.remove(&(due, seq));
            }
            Place::Leased { .. } => st.unlink_lease(slot),
            Place::Follower { .. } => {
                st.followers -= 1;
                if let Some(lead) = key.and_then(|key| st.leaders.get_mut(&key)) {
                    lead.followers.retain(|&f| f != slot);
                    let leader = lead.slot;
                    // The boost this follower gave its leader ends with it: a waiting leader
                    // goes back to the highest of its own priority and its remaining
                    // followers' (keeping its turn), so that it no longer runs ahead of
                    // earlier work on behalf of a job nobody waits for. O(followers), and
                    // cancelling is rare.
                    let priority = st.effective_priority(leader);
                    st.move_ready(leader, priority);
                }
            }
            Place::Done | Place::Finished => {}
        }
        st.live -= 1;
        st.stats.cancelled += 1;
        // A cancelled leader hands its followers to the first of them.
        let led = st.unlead(slot, key);
        st.finished(slot, self.retain_finished);
        let mut woke = false;
        if let (Some(key), Some(mut followers)) = (key, led) {
            // The key may have been stored some other way while the leader waited or ran (a
            // direct cache insert, another queue sharing the store): then the followers are
            // answered as a submit would be, and the work does not run again. Looked up only
            // when someone waits for it, since a lookup refreshes the entry and counts a hit.
            let hit = if followers.is_empty() {
                None
            } else {
                self.memo_lookup(&mut st.stats, Some(&key))
            };
            if let Some(value) = hit {
                for &f in &followers {
                    // Followers are always queued, so the hit is accepted; were one refused,
                    // it would stay counted rather than be lost from the gauges.
                    if self.memo_hit(st, f, value.clone(), now) {
                        st.live -= 1;
                        st.followers -= 1;
                    }
                }
            } else if !followers.is_empty() {
                let first = followers.remove(0);
                st.followers -= 1;
                st.leaders.insert(
                    key,
                    Leader {
                        slot: first,
                        followers,
                    },
                );
                // It waits at the highest of its own priority and its remaining followers'.
                let priority = st.effective_priority(first);
                // The new leader joins the ready jobs with the turn and the wait it has had
                // since it was coalesced. Enqueued as new, it would lose its aging credit and
                // its FIFO turn to every job submitted after it, and aging's bound (a Low job
                // competes as High after about two steps) would restart at the takeover.
                match st.records.get(first).map(|r| r.place) {
                    Some(Place::Follower { seq, since }) => st.reinsert_ready(
                        Ready {
                            slot: first,
                            seq,
                            since,
                        },
                        priority,
                    ),
                    _ => st.enqueue(first, priority, now),
                }
                woke = true;
            }
        }
        Ok(TypeMask::one(job_type).when(woke))
    }

    /// Picks the deque whose head should run next: highest effective priority, then FIFO.
    /// Returns (priority index, type index).
    #[inline(always)]
    fn pick(&self, st: &mut State, mask: TypeMask, now: Timestamp) -> Option<(usize, usize)> {
        // Only the deques that hold jobs of an accepted type: usually one to three.
        let accepted = st.nonempty & mask.ready_bits();
        if accepted == 0 {
            return None;
        }
        // A head has aged one level if it has waited at least one step (`since <= now -
        // step`), two at two steps; two levels (Low to High) is all that can matter. The
        // bounds are worked out once per pick, so that a head costs two comparisons (a
        // 64-bit division was a tenth of a take). A bound of 0 ages nothing: without aging,
        // or before a step has passed since the epoch.
        let below = |steps: u64| {
            now.as_nanos()
                .checked_sub(steps)
                .map_or(0, |latest| latest + 1)
        };
        let (one, two) = self
            .aging_nanos
            .map_or((0, 0), |step| (below(step), below(step.saturating_mul(2))));
        // No ready job has waited a whole step, so none has aged: the highest priority with
        // a job wins, then the oldest head among its types. This is the usual case (jobs wait
        // less than a step), and it looks at one deque instead of every non-empty one
        // (callgrind, one thread, three priorities in use: about 90 instructions a take).
        if st.ready_since.as_nanos() >= one {
            let p = (15 - accepted.leading_zeros() as usize) / 4;
            let types = (accepted >> (4 * p)) & 0b1111;
            if types.is_power_of_two() {
                return Some((p, types.trailing_zeros() as usize));
            }
            return (0..4)
                .filter(|&t| types & (1 << t) != 0)
                .filter_map(|t| st.ready[p][t].front().map(|head| (head.seq, t)))
                .min()
                .map(|(_, t)| (p, t));
        }
        // Rank: (effective priority index, older first); the best rank wins.
        type Rank = (usize, Reverse<u64>);
        let mut best: Option<(Rank, usize, usize)> = None;
        // The oldest head's wait start: every ready job's, as each deque is oldest first.
        let mut oldest = u64::MAX;
        let mut bits = accepted;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let (p, t) = (i / 4, i % 4);
            let Some(head) = st.ready[p][t].front() else {
                continue;
            };
            let since = head.since.as_nanos();
            oldest = oldest.min(since);
            let aged = usize::from(since < one) + usize::from(since < two);
            let rank = ((p + aged).min(2), Reverse(head.seq));
            if best.is_none_or(|(b, _, _)| rank > b) {
                best = Some((rank, p, t));
            }
        }
        // Raised only from a look at every head; a taker of some types sees only theirs.
        if accepted == st.nonempty {
            st.ready_since = Timestamp::from_nanos(oldest);
        }
        best.map(|(_, p, t)| (p, t))
    }

    /// Leases the next ready job of `mask` to `worker`, if there is one. Always inlined into
    /// its two callers, `take` and `complete_then_take` (see [`Inner::after_completion`]).
    #[inline(always)]
    fn try_take(
        &self,
        st: &mut State,
        worker: &WorkerId,
        mask: TypeMask,
        now: Timestamp,
    ) -> Option<Lease> {
        loop {
            let (p, t) = self.pick(st, mask, now)?;
            let ready = st.pop_ready(p, t)?;
            let lease_id = st.next_seq();
            let deadline = self.lease_deadline(now);
            let Some(record) = st.records.get_mut(ready.slot) else {
                continue;
            };
            if record
                .job
                .start_processing_on(|| worker.clone(), now)
                .is_err()
            {
                // Not reachable: only queued jobs are in the ready deques. Skip it rather
                // than hand out a job twice.
                continue;
            }
            // The deque it was taken from: its own priority or one a follower raised it to.
            let priority = match record.place {
                Place::Ready { priority, .. } => priority,
                _ => record.job.priority(),
            };
            record.place = Place::Leased { deadline, lease_id };
            let (job_id, job_type, attempt) = (
                record.job.id(),
                record.job.job_type(),
                record.job.retry_count(),
            );
            let (payload, memo_key) =
                (record.job.payload().clone(), record.job.memo_key().copied());
            // Linked before the lease is built, so that the lease is built where it is
            // returned (built first, it was built on the stack and copied out).
            st.link_lease(ready.slot, deadline);
            return Some(Lease {
                job_id,
                slot: ready.slot,
                lease_id,
                worker: worker.clone(),
                job_type,
                priority,
                payload,
                attempt,
                deadline,
                memo_key,
                seq: ready.seq,
                since: ready.since,
            });
        }
    }

    /// Locks the main lock and moves the intake's jobs into `State` first, if it has any:
    /// every call that takes the main lock comes through here (or drains after its waits), so
    /// a job whose submit returned before a call is seen by it (see *The intake*).
    #[inline(always)]
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut guard = self.state.lock();
        self.drain_if_pending(&mut guard);
        guard
    }

    /// Drains the intake if its flag says it holds jobs. One load of a line the producer
    /// writes only when the intake goes from empty to non-empty.
    #[inline(always)]
    fn drain_if_pending(&self, st: &mut State) {
        if self.signals.pending.load(Ordering::Relaxed) {
            self.drain(st);
        }
    }

    /// Moves every job of the intake into `State`, in submission order, after handing back
    /// the index entries and slots of the records dropped since the last drain. The intake
    /// lock is held only for two swaps and the hand-back; the jobs are admitted after it is
    /// released. Out of line: a take that finds nothing to drain does not carry it.
    #[inline(never)]
    fn drain(&self, st: &mut State) {
        let mut intake = self.intake.lock();
        hand_back(st, &mut intake);
        std::mem::swap(&mut intake.jobs, &mut st.drained);
        intake.types = TypeMask::NONE;
        self.signals.pending.store(false, Ordering::Relaxed);
        // Every drained job takes a place: counted before the intake lock is released, so
        // that a fast submit sees them either in the intake's length or here.
        self.signals
            .live
            .store(st.live + st.drained.len(), Ordering::Relaxed);
        drop(intake);
        while let Some(next) = st.drained.front() {
            // What fell due by the time the job was submitted (a retry, an expired lease)
            // goes first, as when every submit ran maintenance under the main lock: else a
            // retry due before a plain submit was queued behind it, and behind every job
            // submitted until some call ran maintenance. One comparison until something is
            // due; the times it runs at only grow (after it, `next_due` is later), so the
            // deques stay sorted by wait. Read at the head of the list, and the job taken
            // out only after the call: a job taken out before it was held across it, copied
            // twice more and dropped out of line (callgrind, one thread, a drain for every
            // batch of 64: about 70 instructions a job).
            let submitted = next.job.created_at();
            if submitted >= st.next_due {
                self.catch_up(st, submitted);
            }
            let Some(Pending { job, slot }) = st.drained.pop_front() else {
                break;
            };
            st.admit_pending(job, slot);
        }
    }

    /// The slot of job `id`, if the queue has its record. Takes the intake lock for the
    /// index. An entry whose record is not in its slot does not count: a record dropped whose
    /// entry is not removed yet, or a job still in the intake (submitted after this call's
    /// drain, so concurrently with it). A slot is given back only with its entry removed, so
    /// an entry never names another job's record.
    fn find(&self, st: &State, id: JobId) -> Option<Slot> {
        let slot = self
            .intake
            .lock()
            .index
            .find(hash_id(id), |e| e.id == id)?
            .slot;
        st.records
            .get(slot)
            .is_some_and(|r| r.job.id() == id)
            .then_some(slot)
    }

    fn submit(&self, mut job: Job, timeout: Option<Duration>) -> Result<JobId, QueueError> {
        let id = job.id();
        if job.status() != JobStatus::Queued {
            return Err(QueueError::NotNew {
                id,
                status: job.status(),
            });
        }
        // A job with a memo key may complete at once or coalesce, which needs `State`.
        if let Some(key) = job.memo_key() {
            // The key is the job's identity for coalescing and in the memo store, so it must
            // say the job's type: a key of another prefix made a job of one type follow,
            // or be answered by, a job or stored result of another (see `crate::job::memo`).
            if !job.job_type().owns(key) {
                return Err(QueueError::MemoKeyPrefix {
                    id,
                    job_type: job.job_type(),
                    key: Box::new(*key),
                });
            }
            return self.submit_slow(job, timeout);
        }
        // The fast path: the clock is read before the lock, so that the lock is held only
        // for the index probe and the push.
        job.stamp_submitted(self.clock.now(), self.retry.max_retries());
        let job_type = job.job_type();
        let mut intake = self.intake.lock();
        let Some(slot) = self.file_fast(&mut intake, id) else {
            drop(intake);
            return self.submit_slow(job, timeout);
        };
        if intake.jobs.is_empty() {
            self.signals.pending.store(true, Ordering::Relaxed);
        }
        intake.jobs.push_back(Pending { job, slot });
        intake.types = intake.types.and(TypeMask::one(job_type));
        drop(intake);
        // See *The intake* for why this cannot miss a taker about to sleep. Whether one
        // of them takes this type is asked out of line: the hot path, with nobody waiting,
        // tests the word as it did before takers were told apart by type.
        let waiting = self.signals.waiting.load(Ordering::Relaxed);
        if waiting != 0 {
            self.wake_takers(waiting, job_type);
        }
        Ok(id)
    }

    /// Files the index entry of a job for the intake, with a slot for its record, if the queue
    /// has room by a count that is never below the true one and no entry has its id; `None`
    /// sends the job to the slow path (a full queue, a duplicate, or the stale entry of a
    /// record just dropped). The job is not moved here, so that the slow path gets it where
    /// it is: returned from a function that took it, it was copied on every submit.
    #[inline(always)]
    fn file_fast(&self, intake: &mut Intake, id: JobId) -> Option<Slot> {
        let Intake {
            jobs, index, slots, ..
        } = intake;
        if self.signals.live.load(Ordering::Relaxed) + jobs.len() >= self.capacity {
            return None;
        }
        let hashbrown::hash_table::Entry::Vacant(vacant) =
            index.entry(hash_id(id), |e| e.id == id, |e| hash_id(e.id))
        else {
            return None;
        };
        let slot = slots.take();
        vacant.insert(IndexEntry { id, slot });
        Some(slot)
    }

    /// After a fast submit of a job of `job_type` that saw takers blocked, accepting the types
    /// of `waiting`: wakes those that accept the job, found under the main lock (see *The
    /// intake*), whose drain gives them the job at once. A submit of a type no blocked
    /// taker accepts neither takes the lock nor wakes anyone.
    #[cold]
    #[inline(never)]
    fn wake_takers(&self, waiting: u8, job_type: JobType) {
        let types = TypeMask::one(job_type);
        if waiting & types.0 == 0 {
            return;
        }
        let wake = self.lock().waiting.sets_for(types);
        self.notify(wake);
    }

    /// A submit the fast path did not take: the main lock, the intake drained, then the
    /// whole submit (maintenance, memo and coalescing, capacity, waiting for room). Only
    /// this path asks the memo store, so only it runs the cache listener calls held back
    /// meanwhile, once the lock is released ([`callback::run_held`]). Run after every
    /// submit, in [`JobQueue::submit`], the check cost a queue without a store about 13
    /// instructions a job (callgrind, one thread, the bench's loop, `next` + `complete`:
    /// 1,275.3 before the listener calls were held back, 1,289.1 checked there, 1,276.8
    /// here) and, in paired runs alternating with the code before, a few points of its
    /// one-thread rate.
    #[cold]
    #[inline(never)]
    fn submit_slow(&self, job: Job, timeout: Option<Duration>) -> Result<JobId, QueueError> {
        let submitted = self.submit_locked(job, timeout);
        self.run_held();
        submitted
    }

    /// Runs the cache's listener calls held back while a call that has just released the
    /// queue's lock asked the memo store under it (see [`crate::callback`]): told under the
    /// lock, a listener that called the queue (even [`JobQueue::stats`]) waited for it for
    /// ever. A queue without a store pays one test.
    #[inline(always)]
    fn run_held(&self) {
        if self.memo.is_some() {
            callback::run_held();
        }
    }

    /// [`Inner::submit_slow`] up to the release of the lock.
    fn submit_locked(&self, job: Job, timeout: Option<Duration>) -> Result<JobId, QueueError> {
        let id = job.id();
        let mut guard = self.lock();
        let now = self.clock.now();
        match self.reserve(&mut guard, id, now)? {
            Some(slot) => {
                self.enter(guard, job, slot, now, None);
                Ok(id)
            }
            None => self.submit_when_full(guard, job, timeout, now),
        }
    }

    /// The start of a slow submit, under the main lock: takes back expired leases, rules out a
    /// duplicate and, if there is room, files the job's index entry with a slot for its
    /// record, and counts its place. `Ok(None)` when the queue is full, with nothing filed.
    ///
    /// Expired leases are taken back before the capacity check and the coalescing check: a
    /// lease that ran out on a job with no retries left frees its place (else a full queue
    /// refuses, and a waiting submit waits out its timeout, while it has room), and a new
    /// identical job must not be coalesced onto a leader that is about to be dead-lettered.
    fn reserve(
        &self,
        st: &mut State,
        id: JobId,
        now: Timestamp,
    ) -> Result<Option<Slot>, QueueError> {
        if now >= st.next_due {
            self.catch_up(st, now);
        }
        let mut guard = self.intake.lock();
        // The entries of records dropped since the last drain go first: a clone of a job
        // pushed out of the finished ring is no duplicate any more.
        hand_back(st, &mut guard);
        let Intake {
            jobs, index, slots, ..
        } = &mut *guard;
        // One probe both rules out a duplicate and finds the place of the new entry.
        let hashbrown::hash_table::Entry::Vacant(vacant) =
            index.entry(hash_id(id), |e| e.id == id, |e| hash_id(e.id))
        else {
            return Err(QueueError::Duplicate(id));
        };
        // The jobs still in the intake (submitted since this call drained) hold places too.
        if st.live + jobs.len() >= self.capacity {
            return Ok(None);
        }
        let slot = slots.take();
        vacant.insert(IndexEntry { id, slot });
        // Counted under the intake lock, before the job is admitted, so that no fast submit
        // takes this place meanwhile (a memo hit leaves the count one high until the next
        // drain: only stricter).
        self.signals.live.store(st.live + 1, Ordering::Relaxed);
        Ok(Some(slot))
    }

    /// A submit that found the queue full (see [`Inner::reserve`]; `now` is the time it read):
    /// accepts a job the memo store answers, else waits for room up to `timeout`, or refuses.
    /// Out of line, with the waiting loop, so that a submit with room does not carry them:
    /// in one function with it, the hot path kept the loop's state in registers and on the
    /// stack.
    #[cold]
    #[inline(never)]
    fn submit_when_full(
        &self,
        mut guard: MutexGuard<'_, State>,
        job: Job,
        timeout: Option<Duration>,
        mut now: Timestamp,
    ) -> Result<JobId, QueueError> {
        let id = job.id();
        // When the waiting started: real time, read only once a submit has to wait.
        let started = Instant::now();
        let step = self.clock.get().resolution();
        loop {
            let st = &mut *guard;
            // A job the memo store answers completes at once and takes no place, so a full
            // queue neither refuses it nor makes it wait. Checked only when full: with room,
            // `admit` looks (after coalescing, which also ends with a result). The check
            // counts nothing in the store unless it answers, so that a submit that waits and
            // re-checks on every wake still counts once (see `memo_answer_when_full`).
            if let Some(value) = self.memo_answer_when_full(&mut st.stats, job.memo_key()) {
                let slot = {
                    let mut intake = self.intake.lock();
                    let Intake { index, slots, .. } = &mut *intake;
                    // The intake lock was let go since `reserve` ruled out a duplicate.
                    let hashbrown::hash_table::Entry::Vacant(vacant) =
                        index.entry(hash_id(id), |e| e.id == id, |e| hash_id(e.id))
                    else {
                        drop(intake);
                        self.signal_room(st);
                        return Err(QueueError::Duplicate(id));
                    };
                    let slot = slots.take();
                    vacant.insert(IndexEntry { id, slot });
                    slot
                };
                self.enter(guard, job, slot, now, Some(value));
                return Ok(id);
            }
            let remaining = timeout.and_then(|t| t.checked_sub(started.elapsed()));
            let Some(remaining) = remaining.filter(|r| !r.is_zero()) else {
                st.stats.rejected_full += 1;
                return Err(QueueError::Full {
                    capacity: self.capacity,
                });
            };
            // The one place freed by time alone is a lease's, expiring into the dead letter:
            // the wait ends when the first lease does, so that the submit takes the place
            // itself if no other call has run the maintenance that signals it by then (it
            // waited out its slice, 50 ms, for a lease ending in 15). Sliced as a taker's
            // wait is, for a clock that is not real time and for leases taken meanwhile.
            let next_expiry = st.next_expiry().map(|at| wait_until(at, now, step));
            let wait = remaining
                .min(MAX_WAIT_SLICE)
                .min(next_expiry.unwrap_or(Duration::MAX));
            st.submitters_waiting += 1;
            st.submitters_unsignalled += 1;
            let timed_out = self.room.wait_for(&mut guard, wait).timed_out();
            guard.submitters_waiting -= 1;
            // A thread a signal wakes never reports a timeout, and its signaller counted it
            // out of the unsignalled.
            if timed_out {
                guard.submitters_unsignalled -= 1;
            }
            self.drain_if_pending(&mut guard);
            now = self.clock.now();
            match self.reserve(&mut guard, id, now) {
                Ok(Some(slot)) => {
                    self.enter(guard, job, slot, now, None);
                    return Ok(id);
                }
                Ok(None) => {}
                Err(e) => {
                    // Refused (a duplicate submitted meanwhile): a place it was woken for
                    // goes to another waiting submit.
                    self.signal_room(&mut guard);
                    return Err(e);
                }
            }
        }
    }

    /// The end of a slow submit whose index entry is filed: records the job in `slot`, places
    /// it (or completes it with `hit`, the memo store's answer to a full queue), and unlocks.
    #[inline(always)]
    fn enter(
        &self,
        mut guard: MutexGuard<'_, State>,
        job: Job,
        slot: Slot,
        now: Timestamp,
        hit: Option<Bytes>,
    ) {
        let st = &mut *guard;
        let job_type = job.job_type();
        st.add_submitted(job, slot, now, self.retry.max_retries());
        let woke = match hit {
            None => self.admit(st, slot, now),
            Some(value) => self.admit_answered(st, slot, value, now),
        };
        // A job the memo store answered takes no place: one a waiting submit was woken for
        // goes to another (a submit woken for a place, whose job the memo store answered
        // once the place's job had stored it, left the next waiting submit asleep).
        self.signal_room(st);
        self.unlock_and_report(guard, TypeMask::one(job_type).when(woke));
    }

    /// Completes a job just submitted that a full queue accepted because the memo store
    /// answers it: out of line, so that the common submit keeps its size. Returns whether a
    /// taker should be woken.
    #[cold]
    #[inline(never)]
    fn admit_answered(&self, st: &mut State, slot: Slot, value: Bytes, now: Timestamp) -> bool {
        // The hit cannot be refused (the job is new); were it, the job would be admitted
        // rather than lost, its place counted first.
        if self.memo_hit(st, slot, value, now) {
            return false;
        }
        let intake = self.intake.lock();
        self.signals.live.store(st.live + 1, Ordering::Relaxed);
        drop(intake);
        self.admit(st, slot, now)
    }

    /// Releases the lock after a submit, a re-submit or a cancel, then wakes the blocked takers
    /// that accept a job of `woke` (the types of the jobs that became ready) and reports
    /// completions (memo hits) to the hook.
    #[inline(always)]
    fn unlock_and_report(&self, mut guard: MutexGuard<'_, State>, woke: TypeMask) {
        let completions = self.take_completions(&mut guard);
        let wake = guard.waiting.sets_for(woke);
        drop(guard);
        self.notify(wake);
        self.report(completions);
    }

    /// Wakes the takers of `sets` (from [`Waiting::sets_for`], read under the lock, which
    /// may since be released: a taker counted there is already waiting).
    fn notify(&self, mut sets: u16) {
        while sets != 0 {
            self.available[sets.trailing_zeros() as usize].notify_all();
            sets &= sets - 1;
        }
    }

    /// Wakes a submitter waiting for room for each free place not yet promised to one (see
    /// [`JobQueue::submit_timeout`]). Called with the lock held, after `live` went down. The
    /// hot path, with no submitter waiting unsignalled, pays one comparison.
    #[inline(always)]
    fn signal_room(&self, st: &mut State) {
        if st.submitters_unsignalled > 0 {
            self.signal_room_slow(st);
        }
    }

    /// [`Inner::signal_room`] with submitters to wake. It woke them all once the queue had
    /// drained by a sixteenth of its capacity: with 100 places, a submitter waited for six
    /// jobs to finish (or its wait slice, 50 ms) although the first left room for it, and a
    /// free place woke every waiting submitter, all but one to find the queue full again.
    #[cold]
    #[inline(never)]
    fn signal_room_slow(&self, st: &mut State) {
        // The jobs still in the intake hold places too, but counting them takes the intake
        // lock: without them a submitter may be woken for a place a fast submit takes, and
        // sleeps again; that place's next freeing wakes one again.
        let free = self.capacity.saturating_sub(st.live);
        let mut promised = st.submitters_waiting - st.submitters_unsignalled;
        while promised < free && st.submitters_unsignalled > 0 && self.room.notify_one() {
            st.submitters_unsignalled -= 1;
            promised += 1;
        }
    }

    /// Checks the lease and completes its job, under the lock; returns the time it read.
    #[inline]
    fn complete_locked(
        &self,
        st: &mut State,
        lease: &Lease,
        result: JobResult,
    ) -> Result<Timestamp, QueueError> {
        let now = self.clock.now();
        let (slot, _) = self.check_lease(st, lease, now)?;
        self.complete_leased(st, slot, lease.job_id, result, now)?;
        self.signal_room(st);
        Ok(now)
    }

    /// Releases the lock after a completion and reports the completions to the hook. It wakes
    /// no taker: a completion makes no job ready, and a draining pool waits for its own
    /// workers' jobs, not the queue's leases (see *Shutdown* in `crate::job::pool`).
    ///
    /// Always inlined, as are `admit` and `try_take`: the compiler kept these three out of
    /// line (this one despite `#[inline]`, `admit` with it too), and inlined they save their
    /// calls' register saves and argument moves (callgrind, one thread: 10–35 instructions a
    /// job each; see the README).
    #[inline(always)]
    fn after_completion(&self, mut guard: MutexGuard<'_, State>) {
        let completions = self.take_completions(&mut guard);
        drop(guard);
        self.report(completions);
    }

    fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let now = self.clock.now();
        let (slot, _) = self.check_lease(st, lease, now)?;
        st.record_mut(slot, lease.job_id)?.job.release()?;
        st.unlink_lease(slot);
        let priority = st.effective_priority(slot);
        // Back in the turn and with the age it was taken with (the lease kept them): enqueued
        // as new, a job given back on shutdown lost its place to every job submitted after
        // it, and its aging credit with it, through no fault of its own. Its sequence number
        // was not reused meanwhile (they only grow), so it sorts in its deque as it did.
        st.reinsert_ready(
            Ready {
                slot,
                seq: lease.seq,
                since: lease.since,
            },
            priority,
        );
        let wake = st.waiting.sets_for(TypeMask::one(lease.job_type));
        drop(guard);
        self.notify(wake);
        Ok(())
    }

    /// Gives back `next`, a job leased along with a completion whose callbacks (the completion
    /// hook, the cache's listener) then panicked, and lets the panic go on: unwound with it,
    /// the job stayed leased to nobody until its lease ran out. Refused, and left so, if the
    /// lease is no longer current (a callback cancelled the job, say).
    #[cold]
    #[inline(never)]
    fn give_back(&self, next: Option<&Lease>, panic: callback::Payload) -> ! {
        if let Some(next) = next {
            let _ = self.release(next);
        }
        resume_unwind(panic)
    }

    fn complete_then_take(
        &self,
        lease: &Lease,
        result: JobResult,
        mask: TypeMask,
        timeout: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let mut guard = self.lock();
        let now = self.complete_locked(&mut guard, lease, result)?;
        if self.on_complete.is_some() {
            let next = self.try_take(&mut guard, &lease.worker, mask, now);
            // The completion hook runs in `after_completion`, on this thread. If it panics,
            // the job just leased would be dropped with the unwinding and stay leased to
            // nobody until its lease ran out (then count as an attempt it never made): give
            // it back unrun first, then let the panic go on.
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.after_completion(guard))) {
                self.give_back(next.as_ref(), panic);
            }
            return Ok(match next {
                None if !timeout.is_zero() => self.take(&lease.worker, mask, Some(timeout)),
                next => next,
            });
        }
        // No hook, so nothing can panic after the take: no unwinding guard. A lease taken is
        // returned at once, the lock released as it goes: the completion's unlock has nothing
        // to do then (no completions to report). Returned after that unlock instead, it was
        // built on the stack and copied out, 152 bytes (callgrind, one thread: about 25
        // instructions a job).
        if let Some(next) = self.try_take(&mut guard, &lease.worker, mask, now) {
            return Ok(Some(next));
        }
        self.after_completion(guard);
        Ok(match timeout.is_zero() {
            true => None,
            false => self.take(&lease.worker, mask, Some(timeout)),
        })
    }

    #[inline]
    fn take(&self, worker: &WorkerId, mask: TypeMask, timeout: Option<Duration>) -> Option<Lease> {
        self.take_until(worker, mask, timeout, None)
    }

    /// [`Inner::take`], whose wait (if any) gives up once `stop` returns true.
    #[inline(always)]
    fn take_until(
        &self,
        worker: &WorkerId,
        mask: TypeMask,
        timeout: Option<Duration>,
        stop: Option<&dyn Fn() -> bool>,
    ) -> Option<Lease> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let now = self.clock.now();
        if now >= st.next_due {
            self.catch_up(st, now);
        }
        if let Some(lease) = self.try_take(st, worker, mask, now) {
            return Some(lease);
        }
        self.wait_and_take(guard, worker, mask, timeout?, stop, now)
    }

    /// [`JobQueue::wait`] for job `id`, live in `slot`: registers the caller as one of the
    /// job's waiters and waits for its end, up to `timeout`.
    fn wait_for_end(
        &self,
        mut guard: MutexGuard<'_, State>,
        id: JobId,
        slot: Slot,
        timeout: Duration,
    ) -> Result<Job, WaitError> {
        let started = Instant::now();
        let step = self.clock.get().resolution();
        let watch = guard.watched.entry(id).or_insert_with(|| Watch {
            waiters: 0,
            ending: Arc::new(Ending {
                job: OnceLock::new(),
                wake: Condvar::new(),
            }),
        });
        watch.waiters += 1;
        let ending = Arc::clone(&watch.ending);
        loop {
            // The end is looked for before the time: a job that ended as the wait ran out is
            // returned, not reported still running.
            if let Some(job) = ending.job.get() {
                return Ok(job.clone());
            }
            let st = &mut *guard;
            let remaining = timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(self.give_up_waiting(st, id, slot, timeout));
            }
            // A lease running out on a last attempt ends the job, and nothing wakes this
            // waiter for it but its own look at the deadline (or another call's maintenance).
            let deadline = match st.records.get(slot).map(|r| r.place) {
                Some(Place::Leased { deadline, .. }) if deadline != END_OF_TIME => {
                    wait_until(deadline, self.clock.now(), step)
                }
                _ => MAX_WAIT_SLICE,
            };
            ending
                .wake
                .wait_for(&mut guard, remaining.min(deadline).min(MAX_WAIT_SLICE));
            if ending.job.get().is_none() {
                let st = &mut *guard;
                self.drain_if_pending(st);
                let now = self.clock.now();
                if now >= st.next_due {
                    self.catch_up(st, now);
                }
            }
        }
    }

    /// A waiter of job `id` (in `slot`, not ended) that gives up: it is uncounted, and the
    /// job's watch goes with its last waiter. Returns the error the wait fails with.
    #[cold]
    fn give_up_waiting(
        &self,
        st: &mut State,
        id: JobId,
        slot: Slot,
        timeout: Duration,
    ) -> WaitError {
        if let Some(watch) = st.watched.get_mut(&id) {
            watch.waiters -= 1;
            if watch.waiters == 0 {
                st.watched.remove(&id);
            }
        }
        match st.records.get(slot) {
            Some(record) if record.job.id() == id => WaitError::TimedOut {
                id,
                status: record.job.status(),
                timeout,
            },
            // Not reached: a job's record outlives its waiters' watch (see `tell_waiters`).
            _ => WaitError::NotFound(id),
        }
    }

    /// A take that found nothing ready at `now` and may wait up to `timeout`. Out of line, as
    /// [`Inner::submit_when_full`] is: in one function with the waiting loop, a take that
    /// finds a job kept the loop's state in registers and on the stack (callgrind, one
    /// thread: about 25 instructions a take).
    #[cold]
    #[inline(never)]
    fn wait_and_take(
        &self,
        mut guard: MutexGuard<'_, State>,
        worker: &WorkerId,
        mask: TypeMask,
        timeout: Duration,
        stop: Option<&dyn Fn() -> bool>,
        mut now: Timestamp,
    ) -> Option<Lease> {
        // When the waiting started: real time, read only once a take has to wait.
        let started = Instant::now();
        // A wait for an event due within the clock's step would not see the clock reach it:
        // waking in the microseconds to go, over and over until the coarse clock ticked, cost
        // up to a tick of CPU (see `Clock::resolution`). A wait of a step from a reading taken
        // within that step ends after the next tick, at most a step after the event is seen.
        let step = self.clock.get().resolution();
        loop {
            let st = &mut *guard;
            let remaining = timeout.checked_sub(started.elapsed())?;
            // A stopping pool wakes its idle workers, which wait here and see the stop only
            // once this returns. Woken, they used to look for a job and wait out the rest of
            // their idle wait (100 ms): an idle pool took that long to shut down, and a job
            // given back meanwhile by an interrupted worker was taken by one of them. Checked
            // under the lock, before each wait (see `JobQueue::wake_all`).
            if remaining.is_zero() || stop.is_some_and(|stop| stop()) {
                return None;
            }
            // Sleep until the next retry or lease deadline, but never past the timeout and
            // never longer than a slice, since the clock may not be real time.
            let next_retry = st.delayed.first_key_value().map(|((at, _), _)| *at);
            let next_event = [next_retry, st.next_expiry()]
                .into_iter()
                .flatten()
                .map(|at| wait_until(at, now, step))
                .min()
                .unwrap_or(MAX_WAIT_SLICE);
            let wait = remaining.min(next_event).min(MAX_WAIT_SLICE);
            st.waiting.add(mask);
            self.signals
                .waiting
                .store(st.waiting.types(), Ordering::Relaxed);
            // A fast submit wakes takers only if it sees its job's type in `waiting` after its
            // push (see *The intake*): the types are written before this look at the intake,
            // under the intake lock, so either that submit sees them or this look sees its
            // job. Jobs of other types there are not this taker's to wait for.
            if !self.intake.lock().types.overlaps(mask) {
                self.available[mask.set()].wait_for(&mut guard, wait);
            }
            guard.waiting.remove(mask);
            self.signals
                .waiting
                .store(guard.waiting.types(), Ordering::Relaxed);
            if stop.is_some_and(|stop| stop()) {
                return None;
            }
            let st = &mut *guard;
            self.drain_if_pending(st);
            now = self.clock.now();
            if now >= st.next_due {
                self.catch_up(st, now);
            }
            if let Some(lease) = self.try_take(st, worker, mask, now) {
                return Some(lease);
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::time::Clock;

    /// A clock that can be set anywhere, even backwards, which breaks the promise the lease
    /// list's O(1) append relies on.
    #[derive(Debug, Default)]
    struct SetClock(AtomicU64);

    impl SetClock {
        fn set(&self, nanos: u64) {
            self.0.store(nanos, Ordering::SeqCst);
        }
    }

    impl Clock for SetClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_nanos(self.0.load(Ordering::SeqCst))
        }
    }

    /// A queue on `clock` whose jobs age one priority level every 10 s.
    fn aging_every_10_s(clock: SharedClock) -> JobQueueBuilder {
        JobQueue::builder()
            .clock(clock)
            .aging(Some(Duration::from_secs(10)))
    }

    /// The lease list's deadlines, head to tail, checking its links on the way.
    fn lease_deadlines(queue: &JobQueue) -> Vec<u64> {
        let st = queue.inner.state.lock();
        let (mut at, mut prev, mut out) = (st.leases.head, NIL, Vec::new());
        while at != NIL {
            let record = st.records.get(at).expect("a linked slot holds a record");
            assert_eq!(record.prev, prev, "back link of slot {at}");
            let Place::Leased { deadline, .. } = record.place else {
                panic!("slot {at} is linked but not leased");
            };
            out.push(deadline.as_nanos());
            (prev, at) = (at, record.next);
        }
        assert_eq!(st.leases.tail, prev);
        assert_eq!(st.leases.len, out.len());
        out
    }

    #[test]
    fn the_lease_list_stays_sorted_and_linked_even_if_the_clock_goes_backwards() {
        let clock = Arc::new(SetClock::default());
        let queue = JobQueue::builder()
            .clock(clock.clone())
            .lease(Duration::from_nanos(100))
            .retry(RetryConfig::fixed(0, Duration::ZERO))
            .aging(None)
            .build()
            .expect("valid");
        let worker = WorkerId::new("w");
        let mut leases = Vec::new();
        for at in [50, 10, 30, 30, 5, 70] {
            queue.submit(plain(JobPriority::Medium)).expect("submit");
            clock.set(at);
            leases.push(queue.try_next(&worker).expect("ready"));
        }
        assert_eq!(lease_deadlines(&queue), [105, 110, 130, 130, 150, 170]);

        // Unlinking the head, the tail and a middle one; a heartbeat moves a lease back.
        clock.set(0);
        for i in [4, 5, 2] {
            queue
                .complete(&leases[i], JobResult::default())
                .expect("current");
        }
        assert_eq!(lease_deadlines(&queue), [110, 130, 150]);
        clock.set(60);
        let deadline = queue.heartbeat(&leases[1]).expect("current");
        assert_eq!(deadline.as_nanos(), 160);
        assert_eq!(lease_deadlines(&queue), [130, 150, 160]);

        // Expiry walks the list from the head: exactly the due leases are taken back.
        clock.set(150);
        let stats = queue.stats();
        assert_eq!((stats.lease_expirations, stats.processing), (2, 1));
        assert_eq!(lease_deadlines(&queue), [160]);
        assert_eq!(queue.dead_letters().len(), 2);
    }

    /// A job made ready after the clock stepped back waits, for aging, from the stamp of the
    /// job ahead of it, as a fast submit's does: its deque stays sorted by wait, and whether
    /// it ages does not depend on the other deques. Before, it kept the earlier stamp behind
    /// a younger head: a pick raised `ready_since` to the oldest head, above its wait, so it
    /// aged at one time or another depending on whether some other job forced a full look.
    #[test]
    fn a_job_made_ready_after_the_clock_steps_back_keeps_its_deque_sorted_by_wait() {
        const S: u64 = 1_000_000_000;
        let clock = Arc::new(SetClock::default());
        let queue = aging_every_10_s(clock.clone())
            .retry(RetryConfig::fixed(3, Duration::ZERO))
            .build()
            .expect("valid");
        let worker = WorkerId::new("w");
        let low = || Job::new(JobType::Indexing, &b""[..]).with_priority(JobPriority::Low);
        let retried = queue.submit(low()).expect("submit");
        let lease = queue.try_next(&worker).expect("ready");
        clock.set(100 * S);
        let ahead = queue.submit(low()).expect("submit");
        // 50 s back: the retry is made ready behind a job stamped at 100 s.
        clock.set(50 * S);
        queue.fail(&lease, "once").expect("current");
        assert_consistent(&queue);
        let taken = queue.try_next(&worker).expect("ready");
        assert_eq!(taken.job_id(), ahead);
        queue
            .complete(&taken, JobResult::default())
            .expect("current");
        // At 75 s a Medium job submitted at 60 s has aged to High; the retry, waiting since
        // 100 s by its deque's stamps, has not aged at all (from 50 s it would have aged to
        // High too, and won as the older).
        clock.set(60 * S);
        let medium = Job::new(JobType::Indexing, &b""[..]).with_priority(JobPriority::Medium);
        let medium = queue.submit(medium).expect("submit");
        clock.set(75 * S);
        let order: Vec<JobId> = std::iter::from_fn(|| {
            let lease = queue.try_next(&worker)?;
            queue
                .complete(&lease, JobResult::default())
                .expect("current");
            Some(lease.job_id())
        })
        .collect();
        assert_eq!(order, [medium, retried]);
        assert_consistent(&queue);
    }

    /// A clock whose first reading after `hold` is returned only once the test has passed
    /// both barriers: a producer stopped between its fast submit's clock read and its push
    /// into the intake, as a preempted thread is.
    #[derive(Debug)]
    struct HeldClock {
        nanos: AtomicU64,
        hold: AtomicBool,
        read: std::sync::Barrier,
        go: std::sync::Barrier,
    }

    impl HeldClock {
        fn new() -> HeldClock {
            HeldClock {
                nanos: AtomicU64::new(0),
                hold: AtomicBool::new(false),
                read: std::sync::Barrier::new(2),
                go: std::sync::Barrier::new(2),
            }
        }
    }

    impl Clock for HeldClock {
        fn now(&self) -> Timestamp {
            let now = Timestamp::from_nanos(self.nanos.load(Ordering::SeqCst));
            if self.hold.swap(false, Ordering::SeqCst) {
                self.read.wait();
                self.go.wait();
            }
            now
        }
    }

    /// A fast submit stamped at 0 s whose push comes after a job submitted at 5 s was taken:
    /// the taken job, given back, goes ahead of it (its turn is earlier), and the one behind
    /// waits, for aging, from no earlier than it, as it would have had the job still been in
    /// the deque when it was drained. Before, the deque was left out of wait order: a pick
    /// raised `ready_since` to the head's 5 s, hiding the 0 s behind it, so the job counted
    /// as unaged at 12 s (one step after 0 s) but two steps old at 20 s, and beat a fresh
    /// High job then.
    #[test]
    fn a_job_given_back_ahead_of_a_fast_submit_stamped_before_it_keeps_its_deque_in_wait_order() {
        const S: u64 = 1_000_000_000;
        let clock = Arc::new(HeldClock::new());
        let queue = aging_every_10_s(clock.clone()).build().expect("valid");
        let worker = WorkerId::new("w");
        clock.hold.store(true, Ordering::SeqCst);
        let producer = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.submit(plain(JobPriority::Low)).expect("room"))
        };
        clock.read.wait();
        clock.nanos.store(5 * S, Ordering::SeqCst);
        let first = queue.submit(plain(JobPriority::Low)).expect("room");
        let lease = queue.try_next(&worker).expect("ready");
        assert_eq!(lease.job_id(), first);
        clock.go.wait();
        let late = producer.join().expect("the producer returns");
        queue.release(&lease).expect("current");
        assert_consistent(&queue);
        let take = |at: u64| {
            clock.nanos.store(at * S, Ordering::SeqCst);
            let lease = queue.try_next(&worker).expect("ready");
            queue
                .complete(&lease, JobResult::default())
                .expect("current");
            lease.job_id()
        };
        assert_eq!(take(12), first);
        clock.nanos.store(20 * S, Ordering::SeqCst);
        let high = queue.submit(plain(JobPriority::High)).expect("room");
        assert_eq!([take(20), take(20)], [high, late]);
        assert_consistent(&queue);
    }

    /// The same for a follower taking over from its cancelled leader, which comes back with
    /// the turn it was given when it was coalesced: a job made ready after that, while the
    /// leader ran, with an earlier stamp (here the clock stepped back) is behind it in turn,
    /// and now waits, for aging, from no earlier than it.
    #[test]
    fn a_follower_taking_over_ahead_of_a_job_stamped_before_it_keeps_its_deque_in_wait_order() {
        const S: u64 = 1_000_000_000;
        let clock = Arc::new(SetClock::default());
        let queue = aging_every_10_s(clock.clone()).build().expect("valid");
        let transcription = || {
            Job::transcription(&"ab".repeat(32), "en", &b""[..])
                .expect("valid")
                .with_priority(JobPriority::Low)
        };
        clock.set(100 * S);
        let leader = queue.submit(transcription()).expect("room");
        let follower = queue.submit(transcription()).expect("room");
        let lease = queue.try_next(&WorkerId::new("w")).expect("ready");
        assert_eq!(lease.job_id(), leader);
        clock.set(50 * S);
        let unkeyed = Job::new(JobType::Transcription, &b""[..]).with_priority(JobPriority::Low);
        let behind = queue.submit(unkeyed).expect("room");
        queue.cancel(leader).expect("running");
        assert_consistent(&queue);
        let worker = WorkerId::new("w");
        let order: Vec<JobId> = std::iter::from_fn(|| queue.try_next(&worker))
            .map(|lease| lease.job_id())
            .collect();
        assert_eq!(order, [follower, behind]);
    }

    /// The main lock and the intake lock, the intake drained and the dropped records' entries
    /// removed: the structures as they are between calls, once the hand-back is done.
    fn settled(queue: &JobQueue) -> (MutexGuard<'_, State>, MutexGuard<'_, Intake>) {
        let mut st = queue.inner.state.lock();
        queue.inner.drain(&mut st);
        (st, queue.inner.intake.lock())
    }

    /// Checks the structures that shadow each other: the ready bitmask and `ready_since`
    /// against the deques, the index against the slab, and the finished ring against the
    /// records' places.
    fn assert_consistent(queue: &JobQueue) {
        let (st, intake) = settled(queue);
        for (p, by_type) in st.ready.iter().enumerate() {
            for (t, deque) in by_type.iter().enumerate() {
                let bit = st.nonempty & (1 << (4 * p + t)) != 0;
                assert_eq!(bit, !deque.is_empty(), "nonempty bit of ready[{p}][{t}]");
                if let Some(head) = deque.front() {
                    assert!(
                        head.since >= st.ready_since,
                        "ready[{p}][{t}] older than ready_since"
                    );
                }
                // Sorted by turn and by wait: a take and aging look only at the heads.
                for (a, b) in deque.iter().zip(deque.iter().skip(1)) {
                    assert!(a.seq < b.seq, "ready[{p}][{t}] out of turn");
                    assert!(a.since <= b.since, "ready[{p}][{t}] out of wait order");
                }
            }
        }
        assert!(intake.jobs.is_empty() && st.dropped.is_empty());
        assert_eq!(intake.index.len(), st.records.len());
        for e in intake.index.iter() {
            let record = st
                .records
                .get(e.slot)
                .expect("an index entry names a record");
            assert_eq!(record.job.id(), e.id);
        }
        let finished = st
            .records
            .iter()
            .filter(|(_, r)| r.place == Place::Finished)
            .count();
        assert_eq!(finished, st.retained.len());
        for &slot in &st.retained.slots {
            let place = st.records.get(slot).map(|r| r.place);
            assert_eq!(place, Some(Place::Finished), "retained slot {slot}");
        }
        // A watch is a live job's, with a waiter: an end removes it, and so does its last
        // waiter giving up.
        for (&id, watch) in &st.watched {
            assert!(watch.waiters > 0, "a watch of job {id} without a waiter");
            assert!(
                watch.ending.job.get().is_none(),
                "job {id} ended, still watched"
            );
            let slot = intake
                .index
                .find(hash_id(id), |e| e.id == id)
                .expect("a watched job is known")
                .slot;
            let record = st.records.get(slot).expect("a watched job has its record");
            assert!(
                !record.job.status().is_terminal(),
                "job {id} ended, still watched"
            );
        }
    }

    #[test]
    fn waiters_that_give_up_leave_no_watch_and_an_end_takes_the_watch_with_it() {
        let queue = retaining(0);
        let id = queue.submit(plain(JobPriority::Medium)).expect("submit");
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || queue.wait(id, Duration::from_millis(5)))
            })
            .collect();
        for waiter in waiters {
            let timed_out = waiter.join().expect("no panic");
            assert!(matches!(timed_out, Err(WaitError::TimedOut { .. })));
        }
        assert!(settled(&queue).0.watched.is_empty());
        let waiter = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.wait(id, Duration::from_secs(30)))
        };
        while queue.stats().waiters == 0 {
            std::thread::yield_now();
        }
        assert_eq!(settled(&queue).0.watched.len(), 1);
        assert_consistent(&queue);
        queue.cancel(id).expect("queued");
        assert!(settled(&queue).0.watched.is_empty());
        let ended = waiter.join().expect("no panic").expect("cancelled");
        assert_eq!(ended.status(), JobStatus::Cancelled);
        assert_consistent(&queue);
    }

    proptest::proptest! {
        /// Whatever mix of completions and cancellations, exactly the last `retain` finished
        /// jobs are readable, and every structure agrees with the others.
        #[test]
        fn the_finished_ring_keeps_exactly_the_last_jobs(
            retain in 0usize..6,
            ops in proptest::collection::vec((0u8..3, 0u8..3), 1..60),
        ) {
            let queue = retaining(retain);
            let worker = WorkerId::new("w");
            let mut finished = Vec::new();
            let mut queued = VecDeque::new();
            for (op, priority) in ops {
                match op {
                    0 => {
                        let job = Job::new(JobType::Indexing, &b""[..])
                            .with_priority(JobPriority::ALL[usize::from(priority)]);
                        queued.push_back(queue.submit(job).expect("submit"));
                    }
                    1 => {
                        if let Some(lease) = queue.try_next(&worker) {
                            queued.retain(|&id| id != lease.job_id());
                            queue.complete(&lease, JobResult::default()).expect("current");
                            finished.push(lease.job_id());
                        }
                    }
                    _ => {
                        if let Some(id) = queued.pop_front() {
                            queue.cancel(id).expect("queued");
                            finished.push(id);
                        }
                    }
                }
                assert_consistent(&queue);
                let kept = finished.len().saturating_sub(retain);
                for (i, &id) in finished.iter().enumerate() {
                    let status = queue.status(id);
                    proptest::prop_assert_eq!(status.is_some(), i >= kept, "finished job {}", i);
                }
                for &id in &queued {
                    proptest::prop_assert_eq!(queue.status(id), Some(JobStatus::Queued));
                }
            }
        }
    }

    #[test]
    fn an_id_chosen_to_collide_with_a_job_does_not_reach_it() {
        let queue = retaining(4);
        let worker = WorkerId::new("w");
        let queued = queue.submit(plain(JobPriority::Medium)).expect("submit");
        let done = queue.submit(plain(JobPriority::Medium)).expect("submit");
        let lease = queue.try_next(&worker).expect("ready");
        queue
            .complete(&lease, JobResult::default())
            .expect("current");
        // Flipping the same bits in both halves keeps the index hash (hi ^ lo) unchanged.
        let twin = |id: JobId| -> JobId {
            let (hi, lo) = id.as_uuid().as_u64_pair();
            let twin = uuid::Uuid::from_u64_pair(hi ^ 0xff, lo ^ 0xff).to_string();
            twin.parse().expect("a UUID")
        };
        for id in [queued, done] {
            let other = twin(id);
            assert_eq!(hash_id(other), hash_id(id));
            assert!(queue.get(other).is_none());
            assert!(matches!(queue.cancel(other), Err(QueueError::NotFound(_))));
            assert!(queue.get(id).is_some());
        }
        assert_consistent(&queue);
    }

    /// With a hook, a job's completion is reported from a copy, and the queue's list of
    /// completions keeps its buffer from job to job (taken with the list, it was freed and
    /// allocated again for every job).
    #[test]
    fn the_hook_hears_every_job_and_the_completion_list_keeps_its_buffer() {
        let heard = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&heard);
        let queue = JobQueue::builder()
            .on_complete(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let worker = WorkerId::new("w");
        let job = || Job::new(JobType::Indexing, &b"x"[..]);
        let buffer_kept = |queue: &JobQueue| queue.inner.state.lock().completions.capacity() > 0;
        queue.submit(job()).unwrap();
        let mut lease = queue.try_next(&worker).unwrap();
        for round in 1..=3 {
            queue.submit(job()).unwrap();
            lease = queue
                .complete_and_next(&lease, JobResult::default(), Duration::ZERO)
                .unwrap()
                .unwrap();
            assert_eq!(heard.load(Ordering::SeqCst), 2 * round - 1);
            assert!(buffer_kept(&queue), "round {round}, complete_and_next");
            queue.submit(job()).unwrap();
            assert!(buffer_kept(&queue), "round {round}, submit");
            queue.complete(&lease, JobResult::default()).unwrap();
            assert_eq!(heard.load(Ordering::SeqCst), 2 * round);
            assert!(buffer_kept(&queue), "round {round}, complete");
            lease = queue.try_next(&worker).unwrap();
        }
    }

    /// A submit copies the record into the slab, and a copy of more than 256 bytes takes
    /// `memcpy`'s slower path (see [`Leader`]).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_record_is_at_most_256_bytes() {
        assert!(size_of::<Record>() <= 256, "{} bytes", size_of::<Record>());
    }

    /// The sizes the module docs and the README's queue section give.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn sizes_are_as_documented() {
        assert_eq!(size_of::<Record>(), 256);
        assert_eq!(size_of::<Job>(), 216);
        assert_eq!(size_of::<IndexEntry>(), 24);
        assert_eq!(size_of::<WorkerId>(), 24);
    }

    #[test]
    fn finished_jobs_keep_their_slot_until_newer_ones_push_them_out() {
        let queue = retaining(3);
        let worker = WorkerId::new("w");
        let mut ids = Vec::new();
        for _ in 0..5 {
            let id = queue.submit(plain(JobPriority::Medium)).expect("submit");
            let lease = queue.try_next(&worker).expect("ready");
            queue
                .complete(&lease, JobResult::default())
                .expect("current");
            ids.push(id);
            // The slab holds the retained jobs and no more: the job pushed out frees its slot,
            // which goes back to the allocator with its index entry removed at the next drain
            // (the `try_next` after the next submit), so the submit after that fills it. The
            // slab thus spans one slot more than the retained and the running job.
            let st = queue.inner.state.lock();
            assert_eq!(st.records.len(), ids.len().min(3));
            assert_eq!(st.retained.len(), ids.len().min(3));
            let entries = queue.inner.intake.lock().index.len();
            assert_eq!(entries, st.records.len() + st.dropped.len());
            assert!(
                st.records.iter().all(|(slot, _)| slot < 5),
                "slots are reused"
            );
        }
        let kept: Vec<_> = ids.iter().map(|&id| queue.status(id)).collect();
        let done = Some(JobStatus::Completed);
        assert_eq!(kept, [None, None, done, done, done]);
    }

    /// A pool's idle worker, blocked in [`JobQueue::next_for_until`], returns at once when
    /// its stop condition turns true and [`JobQueue::wake_all`] wakes it, so that a stopping
    /// pool's idle workers see the stop. Before the fix it looked for a job and waited out
    /// the rest of its timeout (here 60 s; a pool's idle wait is 100 ms, and an idle pool took
    /// 95.4-96.2 ms to shut down in five runs of a pool test, about a millisecond with the
    /// fix). A plain taker woken by the same call waits on: only the pool's own workers give
    /// up. Deterministic: a taker is known to be waiting once `waiting` counts it, since it
    /// counts itself and starts waiting in one hold of the lock.
    #[test]
    fn wake_all_releases_a_pool_worker_at_once_and_no_other_taker() {
        use std::sync::atomic::AtomicBool;

        let queue = JobQueue::builder().build().expect("valid");
        let stopped = Arc::new(AtomicBool::new(false));
        let pool_worker = {
            let (queue, stopped) = (queue.clone(), Arc::clone(&stopped));
            std::thread::spawn(move || {
                let started = Instant::now();
                let stop = || stopped.load(Ordering::Acquire);
                let types = [JobType::Indexing];
                let got = queue.next_for_until(
                    &WorkerId::new("p"),
                    &types,
                    // Far above the bound below, so that a loaded machine cannot make the
                    // fixed code look like the old one, which waited all of it out.
                    Duration::from_secs(60),
                    &stop,
                );
                (got.is_none(), started.elapsed())
            })
        };
        let plain_wait = Duration::from_millis(300);
        let plain_taker = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let got = queue.next(&WorkerId::new("w"), plain_wait);
                (got.is_none(), started.elapsed())
            })
        };
        while queue.inner.state.lock().waiting.total() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        stopped.store(true, Ordering::Release);
        queue.wake_all();
        let (none, took) = pool_worker.join().expect("the pool worker returns");
        assert!(none, "nothing was ready");
        assert!(
            took < Duration::from_secs(30),
            "the pool worker returned after {took:?}"
        );
        let (none, took) = plain_taker.join().expect("the plain taker returns");
        assert!(none, "nothing was ready");
        assert!(took >= plain_wait, "the plain taker gave up after {took:?}");
    }

    /// Checks what the model tests cannot see from outside: every live job is in exactly the
    /// structure its place names, `live`, `followers` and the lease count match the records,
    /// every follower is in its key's leader's list once, every leader is live and ready,
    /// delayed or leased, and each ready deque is sorted by turn and by wait.
    fn assert_placed(queue: &JobQueue) {
        let st = queue.inner.state.lock();
        let (mut live, mut followers, mut leased) = (0, 0, 0);
        for (slot, r) in st.records.iter() {
            let status = r.job.status();
            match r.place {
                Place::Ready { seq, priority } => {
                    let deque = &st.ready[priority.index()][r.job.job_type().index()];
                    assert!(
                        deque.iter().any(|e| e.slot == slot && e.seq == seq),
                        "{slot}"
                    );
                    assert_eq!(status, JobStatus::Queued);
                }
                Place::Delayed { due, seq } => {
                    assert_eq!(st.delayed.get(&(due, seq)), Some(&slot));
                    assert_eq!(status, JobStatus::Queued);
                }
                Place::Leased { .. } => {
                    leased += 1;
                    assert_eq!(status, JobStatus::Processing);
                }
                Place::Follower { .. } => {
                    followers += 1;
                    assert_eq!(status, JobStatus::Queued);
                    let key = r.job.memo_key().expect("a follower has a memo key");
                    let lead = st.leaders.get(key).expect("its key has a leader");
                    assert_eq!(lead.followers.iter().filter(|&&f| f == slot).count(), 1);
                }
                Place::Done => {
                    assert_eq!(status, JobStatus::Failed);
                    assert!(
                        st.dead.contains(&slot),
                        "{slot} failed but not dead-lettered"
                    );
                    continue;
                }
                Place::Finished => {
                    assert!(status.is_terminal());
                    continue;
                }
            }
            live += 1;
        }
        for (key, lead) in &st.leaders {
            let r = st.records.get(lead.slot).expect("a leader has a record");
            assert_eq!(r.job.memo_key(), Some(key));
            let waits_or_runs = matches!(
                r.place,
                Place::Ready { .. } | Place::Delayed { .. } | Place::Leased { .. }
            );
            assert!(waits_or_runs, "a leader is {:?}", r.place);
        }
        for deque in st.ready.iter().flatten() {
            let pairs = deque.iter().zip(deque.iter().skip(1));
            assert!(
                pairs
                    .clone()
                    .all(|(a, b)| a.seq < b.seq && a.since <= b.since)
            );
        }
        assert_eq!(
            (st.live, st.followers, st.leases.len),
            (live, followers, leased)
        );
        assert!(st.live <= queue.inner.capacity);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The paths the model tests (`tests/job_queue_model.rs`) leave out, at random and
        /// on small bounds: takes and `complete_and_next` for one job type only, memo keys of
        /// jobs of two types (the same files under each type's prefix), and a completion
        /// hook, which must hear of exactly the jobs `stats` counts as completed. After every
        /// step each job is where its place says (see [`assert_placed`]).
        #[test]
        fn typed_takes_shared_keys_and_the_hook_keep_every_job_placed(
            capacity in 1usize..6,
            retain in 0usize..3,
            dead_capacity in 0usize..3,
            ops in proptest::collection::vec((0u8..12, 0u8..8, 0u8..8), 1..120),
        ) {
            let clock = Arc::new(crate::time::ManualClock::new());
            let heard = Arc::new(AtomicU64::new(0));
            let queue = {
                let heard = Arc::clone(&heard);
                JobQueue::builder()
                    .clock(clock.clone())
                    .capacity(capacity)
                    .retain_finished(retain)
                    .dead_letter_capacity(dead_capacity)
                    .aging(Some(Duration::from_secs(2)))
                    .retry(RetryConfig::fixed(1, Duration::from_secs(1)))
                    .lease(Duration::from_secs(3))
                    .on_complete(move |_| {
                        heard.fetch_add(1, Ordering::Relaxed);
                    })
                    .build()
                    .expect("valid")
            };
            let types = [JobType::Indexing, JobType::Summarization];
            let (mut ids, mut leases) = (Vec::new(), Vec::<Lease>::new());
            for (op, a, b) in ops {
                let worker = WorkerId::new(format!("w{}", a % 2));
                let one_type = &types[usize::from(b % 2)..=usize::from(b % 2)];
                let lease = |leases: &[Lease]| leases[usize::from(a) % leases.len()].clone();
                match op {
                    0 | 1 => {
                        let job_type = types[usize::from(a % 2)];
                        let mut job = Job::new(job_type, &b""[..])
                            .with_priority(JobPriority::ALL[usize::from(b % 3)]);
                        // Three keys of each type, and some jobs with none.
                        if b % 4 != 3 {
                            let file = format!("{:02x}", b % 3).repeat(32);
                            let key = CacheKey::from_parts(&file, "en", job_type.key_prefix())
                                .expect("valid");
                            job = job.with_memo_key(key);
                        }
                        if let Ok(id) = queue.submit(job) {
                            ids.push(id);
                        }
                    }
                    2 => leases.extend(queue.try_next_for(&worker, one_type)),
                    3 => leases.extend(queue.try_next(&worker)),
                    4 if !leases.is_empty() => {
                        let done = queue.complete_and_next_for(
                            &lease(&leases),
                            JobResult::default(),
                            one_type,
                            Duration::ZERO,
                        );
                        leases.extend(done.ok().flatten());
                    }
                    5 if !leases.is_empty() => {
                        let _ = queue.complete(&lease(&leases), JobResult::default());
                    }
                    6 if !leases.is_empty() => {
                        let _ = queue.fail(&lease(&leases), "x");
                    }
                    7 if !leases.is_empty() => {
                        let _ = queue.release(&lease(&leases));
                    }
                    8 if !leases.is_empty() => {
                        let _ = queue.heartbeat(&lease(&leases));
                    }
                    9 if !ids.is_empty() => {
                        let _ = queue.cancel(ids[usize::from(a) % ids.len()]);
                    }
                    10 if !ids.is_empty() => {
                        let _ = queue.resubmit_dead_letter(ids[usize::from(a) % ids.len()]);
                    }
                    11 => clock.advance(Duration::from_millis(u64::from(b) * 300)),
                    _ => {}
                }
                let completed = queue.stats().completed;
                assert_placed(&queue);
                proptest::prop_assert_eq!(heard.load(Ordering::Relaxed), completed);
            }
        }
    }

    proptest::proptest! {
        /// What the test above leaves out: a memo store (hits at submit, at a re-submit and
        /// at a cancelled leader's handover, results stored some other way or evicted
        /// meanwhile), plain jobs left in the intake across several steps and clock jumps
        /// (it checks, and so drains, after every step), jumps of up to months, and retries
        /// with no delay. After each step that is not a submit or a jump, every job is where
        /// its place says, and what the queue holds is bounded by what it must keep: a record
        /// for each live job, dead letter and retained finished job, and no more leaders,
        /// followers or retries than live jobs.
        #[test]
        fn memo_hits_the_intake_and_clock_jumps_keep_every_job_placed_and_bounded(
            capacity in 1usize..6,
            retain in 0usize..3,
            dead_capacity in 0usize..3,
            no_delay in proptest::bool::ANY,
            ops in proptest::collection::vec((0u8..15, 0u8..8, 0u8..8), 1..120),
        ) {
            let clock = Arc::new(crate::time::ManualClock::new());
            let cache = Cache::builder().max_bytes(1 << 16).build().expect("valid");
            let delay = if no_delay { Duration::ZERO } else { Duration::from_secs(1) };
            let queue = JobQueue::builder()
                .clock(clock.clone())
                .cache(cache.clone())
                .capacity(capacity)
                .retain_finished(retain)
                .dead_letter_capacity(dead_capacity)
                .aging(Some(Duration::from_secs(2)))
                .retry(RetryConfig::fixed(1, delay))
                .lease(Duration::from_secs(3))
                .build()
                .expect("valid");
            let types = [JobType::Indexing, JobType::Summarization];
            let key = |job_type: JobType, b: u8| {
                let file = format!("{:02x}", b % 3).repeat(32);
                CacheKey::from_parts(&file, "en", job_type.key_prefix()).expect("valid")
            };
            let (mut ids, mut leases) = (Vec::new(), Vec::<Lease>::new());
            for (op, a, b) in ops {
                let worker = WorkerId::new(format!("w{}", a % 2));
                let job_type = types[usize::from(a % 2)];
                let lease = |leases: &[Lease]| leases[usize::from(a) % leases.len()].clone();
                match op {
                    0 | 1 => {
                        let mut job = Job::new(job_type, &b""[..])
                            .with_priority(JobPriority::ALL[usize::from(b % 3)]);
                        if b % 4 != 3 {
                            job = job.with_memo_key(key(job_type, b));
                        }
                        ids.extend(queue.submit(job).ok());
                    }
                    2 => leases.extend(queue.try_next(&worker)),
                    3 if !leases.is_empty() => {
                        let done = queue.complete_and_next(
                            &lease(&leases),
                            JobResult::default(),
                            Duration::ZERO,
                        );
                        leases.extend(done.ok().flatten());
                    }
                    4 if !leases.is_empty() => {
                        let _ = queue.fail(&lease(&leases), "x");
                    }
                    5 if !leases.is_empty() => {
                        let _ = queue.release(&lease(&leases));
                    }
                    6 if !leases.is_empty() => {
                        let _ = queue.heartbeat(&lease(&leases));
                    }
                    7 if !ids.is_empty() => {
                        let _ = queue.cancel(ids[usize::from(a) % ids.len()]);
                    }
                    8 if !ids.is_empty() => {
                        let _ = queue.resubmit_dead_letter(ids[usize::from(a) % ids.len()]);
                    }
                    9 => {
                        let _ = cache.insert(key(job_type, b), Bytes::from_static(b"r"));
                    }
                    10 => cache.clear(),
                    11 => clock.advance(Duration::from_millis(u64::from(b) * 300)),
                    12 => clock.advance(Duration::from_secs(u64::from(b) << 20)),
                    _ => {}
                }
                if matches!(op, 0 | 1 | 11 | 12) {
                    continue;
                }
                let stats = queue.stats();
                assert_placed(&queue);
                assert_consistent(&queue);
                let st = queue.inner.state.lock();
                proptest::prop_assert!(st.records.len() <= st.live + st.dead.len() + retain);
                proptest::prop_assert!(st.leaders.len() + st.followers <= st.live);
                proptest::prop_assert!(st.delayed.len() <= st.live);
                proptest::prop_assert_eq!(stats.queued + stats.processing, st.live);
                proptest::prop_assert_eq!(stats.dead_letters, st.dead.len());
            }
        }
    }

    /// The jobs in the intake, not yet drained into `State`.
    fn in_intake(queue: &JobQueue) -> usize {
        queue.inner.intake.lock().jobs.len()
    }

    /// A queue that keeps the records of the last `finished` jobs that finished.
    fn retaining(finished: usize) -> JobQueue {
        JobQueue::builder()
            .retain_finished(finished)
            .build()
            .expect("valid")
    }

    fn plain(priority: JobPriority) -> Job {
        Job::new(JobType::Indexing, &b""[..]).with_priority(priority)
    }

    /// A clone of a job still in the intake is refused at once, by the fast path's look at
    /// the index: nothing else would catch it before the drain.
    #[test]
    fn a_duplicate_of_a_job_still_in_the_intake_is_refused() {
        let queue = JobQueue::builder().build().expect("valid");
        let job = plain(JobPriority::Medium);
        let id = queue.submit(job.clone()).expect("submit");
        assert_eq!(in_intake(&queue), 1);
        assert!(matches!(queue.submit(job), Err(QueueError::Duplicate(d)) if d == id));
        let stats = queue.stats();
        assert_eq!((stats.submitted, stats.queued), (1, 1));
    }

    /// A clone of a job whose record was dropped (pushed out of the finished ring) is a new
    /// job again, although its index entry is still there until the next drain: the fast
    /// path finds the entry, and the slow path hands the dropped entries back first.
    #[test]
    fn a_clone_of_a_dropped_job_is_accepted_although_its_entry_is_stale() {
        let queue = retaining(0);
        let job = plain(JobPriority::Medium);
        let id = queue.submit(job.clone()).expect("submit");
        let lease = queue.try_next(&WorkerId::new("w")).expect("ready");
        queue
            .complete(&lease, JobResult::default())
            .expect("current");
        assert_eq!(queue.status(id), None, "the record was dropped at once");
        {
            let st = queue.inner.state.lock();
            assert_eq!(st.dropped.len(), 1, "its entry is not removed yet");
            let entries = queue.inner.intake.lock().index.len();
            assert_eq!(entries, 1);
        }
        assert_eq!(queue.submit(job).expect("a new job again"), id);
        assert_eq!(queue.status(id), Some(JobStatus::Queued));
        assert_consistent(&queue);
    }

    /// Status, get and cancel of a job whose submit returned but which is still in the intake
    /// see it: every call under the main lock drains first.
    #[test]
    fn status_get_and_cancel_see_a_job_still_in_the_intake() {
        let queue = JobQueue::builder().build().expect("valid");
        let kept = queue.submit(plain(JobPriority::Low)).expect("submit");
        assert_eq!(in_intake(&queue), 1);
        assert_eq!(queue.status(kept), Some(JobStatus::Queued));
        assert_eq!(in_intake(&queue), 0, "drained");

        let read = queue.submit(plain(JobPriority::High)).expect("submit");
        assert_eq!(in_intake(&queue), 1);
        let job = queue.get(read).expect("known");
        assert_eq!((job.id(), job.status()), (read, JobStatus::Queued));

        let cancelled = queue.submit(plain(JobPriority::High)).expect("submit");
        assert_eq!(in_intake(&queue), 1);
        queue.cancel(cancelled).expect("queued");
        assert_eq!(queue.status(cancelled), Some(JobStatus::Cancelled));
        let worker = WorkerId::new("w");
        let taken: Vec<JobId> = std::iter::from_fn(|| queue.try_next(&worker))
            .map(|lease| lease.job_id())
            .collect();
        assert_eq!(taken, [read, kept]);
        assert_consistent(&queue);
    }

    /// A taker blocked in `next` is woken by a submit on the fast path from another thread.
    /// A liveness check, not a timing claim: a lost wake-up would leave the taker to its next
    /// wait slice (50 ms), so the bound only catches a taker that is never woken and never
    /// drains (it waits far beyond it: 30 s).
    #[test]
    fn a_taker_blocked_in_next_is_woken_by_a_fast_submit() {
        let queue = JobQueue::builder().build().expect("valid");
        for _ in 0..3 {
            let taker = {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let lease = queue.next(&WorkerId::new("w"), Duration::from_secs(30));
                    (lease.map(|l| l.job_id()), started.elapsed())
                })
            };
            while queue.inner.state.lock().waiting.total() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let id = queue.submit(plain(JobPriority::Medium)).expect("submit");
            let (got, took) = taker.join().expect("the taker returns");
            assert_eq!(got, Some(id));
            assert!(
                took < Duration::from_secs(5),
                "the taker returned after {took:?}"
            );
            assert_eq!(queue.inner.signals.waiting.load(Ordering::Relaxed), 0);
        }
    }

    /// The jobs still in the intake hold places: with no call in between to drain them, a
    /// submit beyond the capacity is refused (by the slow path, which the fast path's count
    /// sends it to), and it waits its timeout out while they are there.
    #[test]
    fn jobs_still_in_the_intake_count_against_the_capacity() {
        let queue = JobQueue::builder().capacity(2).build().expect("valid");
        queue.submit(plain(JobPriority::Low)).expect("room");
        queue.submit(plain(JobPriority::Low)).expect("room");
        assert_eq!(in_intake(&queue), 2);
        let refused = queue.submit_timeout(plain(JobPriority::Low), Duration::from_millis(1));
        assert!(matches!(refused, Err(QueueError::Full { capacity: 2 })));
        let stats = queue.stats();
        assert_eq!((stats.queued, stats.rejected_full), (2, 1));
    }

    /// Several producers and a worker: after every call the live jobs (queued and running)
    /// are within the capacity, whether the submits took the fast path or the slow one, and
    /// every job accepted is completed once.
    #[test]
    fn the_capacity_holds_with_two_producers_and_a_worker() {
        const CAPACITY: usize = 8;
        const PER_PRODUCER: usize = 3_000;
        let queue = JobQueue::builder()
            .capacity(CAPACITY)
            .build()
            .expect("valid");
        let within = |queue: &JobQueue| {
            let stats = queue.stats();
            assert!(
                stats.queued + stats.processing <= CAPACITY,
                "{} queued and {} running",
                stats.queued,
                stats.processing
            );
            assert!(queue.inner.state.lock().live <= CAPACITY);
        };
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let mut accepted = 0;
                    for n in 0..PER_PRODUCER {
                        // Plain jobs take the fast path while it sees room; every tenth has a
                        // memo key and takes the slow one.
                        let mut job = plain(JobPriority::ALL[n % 3]);
                        if n % 10 == 0 {
                            let file = format!("{:02x}", (p * 7 + n) % 256).repeat(32);
                            let key = CacheKey::from_parts(&file, "en", "index").expect("valid");
                            job = job.with_memo_key(key);
                        }
                        if queue.submit(job).is_ok() {
                            accepted += 1;
                        }
                        within(&queue);
                    }
                    accepted
                })
            })
            .collect();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worker = {
            let (queue, done) = (queue.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let worker = WorkerId::new("w");
                let mut completed = std::collections::HashSet::new();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    match queue.next(&worker, Duration::from_millis(1)) {
                        Some(lease) => {
                            within(&queue);
                            queue
                                .complete(&lease, JobResult::default())
                                .expect("current");
                            assert!(completed.insert(lease.job_id()), "ran twice");
                            within(&queue);
                        }
                        None if finished => return completed.len(),
                        None => {}
                    }
                }
            })
        };
        let accepted: usize = producers
            .into_iter()
            .map(|p| p.join().expect("producer"))
            .sum();
        done.store(true, Ordering::Release);
        let ran = worker.join().expect("worker");
        let stats = queue.stats();
        assert_eq!(stats.submitted, accepted as u64);
        // A follower completes with its leader, without a lease.
        assert_eq!(stats.completed, accepted as u64);
        assert_eq!(ran as u64 + stats.coalesced, accepted as u64);
        assert!(stats.rejected_full > 0, "the queue was full at times");
        assert_consistent(&queue);
    }

    /// Sequential submits keep their order across the two paths: a memo-keyed job (slow path)
    /// submitted after plain ones (fast path, still in the intake) gets its turn after them,
    /// because the slow path drains first.
    #[test]
    fn sequential_submits_keep_their_order_across_the_fast_and_slow_paths() {
        let queue = JobQueue::builder().build().expect("valid");
        let key = CacheKey::from_parts(&"ab".repeat(32), "en", "index").expect("valid");
        let first = queue.submit(plain(JobPriority::Medium)).expect("submit");
        let keyed = queue
            .submit(plain(JobPriority::Medium).with_memo_key(key))
            .expect("submit");
        let last = queue.submit(plain(JobPriority::Medium)).expect("submit");
        let urgent = queue.submit(plain(JobPriority::High)).expect("submit");
        assert_eq!(in_intake(&queue), 2, "the last two are in the intake");
        let worker = WorkerId::new("w");
        let taken: Vec<JobId> = std::iter::from_fn(|| queue.try_next(&worker))
            .map(|lease| lease.job_id())
            .collect();
        assert_eq!(taken, [urgent, first, keyed, last]);
        assert_placed(&queue);
    }

    /// A taker of some job types sleeps through submits of other types: a submit wakes only
    /// the takers that accept its job's type. Before the fix every submit, fast or slow, that
    /// saw a taker waiting woke them all, and a taker of Transcription jobs woke (and looked,
    /// and slept again) once for each of a stream of Indexing submits: 200 rounds for 100
    /// submits in three runs, where it now has 4 to 6. The taker's stop condition
    /// is asked before each wait and after each wake, so it counts the taker's rounds; with
    /// nothing for it, only its 50 ms wait slices end a wait (two asks each).
    #[test]
    fn a_typed_taker_sleeps_through_submits_of_other_types() {
        use std::sync::atomic::AtomicBool;

        let queue = JobQueue::builder().build().expect("valid");
        let (asked, stopped) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let taker = {
            let (queue, asked, stopped) = (queue.clone(), asked.clone(), stopped.clone());
            std::thread::spawn(move || {
                let stop = || {
                    asked.fetch_add(1, Ordering::SeqCst);
                    stopped.load(Ordering::SeqCst)
                };
                let types = [JobType::Transcription];
                let worker = WorkerId::new("t");
                queue.next_for_until(&worker, &types, Duration::from_secs(60), &stop)
            })
        };
        while queue.inner.state.lock().waiting.total() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        let before = asked.load(Ordering::SeqCst);
        let submits: usize = 100;
        for i in 0..submits {
            // Every other one with a memo key, which takes the slow path.
            let job = match i % 2 {
                0 => plain(JobPriority::Medium),
                _ => Job::keyed(JobType::Indexing, [i.to_le_bytes()], &b""[..]).expect("key"),
            };
            queue.submit(job).expect("submit");
            // Time for a woken taker to go back to its wait, as under a steady stream.
            std::thread::sleep(Duration::from_millis(1));
        }
        let rounds = asked.load(Ordering::SeqCst) - before;
        let slices = u64::try_from(started.elapsed().as_millis() / 50).expect("small");
        stopped.store(true, Ordering::SeqCst);
        queue.wake_all();
        assert!(taker.join().expect("the taker returns").is_none());
        assert!(
            rounds <= 2 * (slices + 2),
            "{rounds} rounds in {slices} wait slices for {submits} submits of another type"
        );
        assert_eq!(queue.stats().queued, submits);
    }

    /// Far above any bound the tests set, so that a waiter never gives up before it is woken.
    const SIXTY_SECONDS: Duration = Duration::from_secs(60);

    /// The fastest of three runs of `run`, which must be under `limit`. A lost wake-up costs
    /// a waiter its wait slice, 50 ms, in every run (a condition variable of `parking_lot`
    /// wakes only when signalled or timed out), so the old code cannot pass; a loaded machine
    /// can slow one run of the fixed code, not all three.
    fn assert_fastest_of_three_under(limit: Duration, mut run: impl FnMut() -> Duration) {
        let fastest = (0..3).map(|_| run()).min().expect("three runs");
        assert!(fastest < limit, "the fastest of three took {fastest:?}");
    }

    /// Waits until `queue` counts `takers` blocked takers and `submitters` blocked submits,
    /// which are then waiting: each counts itself and starts its wait in one hold of the lock.
    fn until_waiting(queue: &JobQueue, takers: usize, submitters: usize) {
        loop {
            let st = queue.inner.state.lock();
            if st.waiting.total() == takers && st.submitters_waiting == submitters {
                return;
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A retry that a worker's `fail` files while a taker of its type is blocked, due before
    /// the taker's wait would end, wakes it, and the taker takes the job once it is due. A
    /// blocked taker sleeps until the first retry or lease deadline it saw as it began to
    /// wait, or a slice (50 ms); before the fix nothing told it of a retry filed since, and a
    /// retry due 5 ms after the `fail` was taken at the end of the taker's slice (the taker
    /// took at least 50 ms in every run; 37 to 50 ms after the `fail`).
    #[test]
    fn a_retry_filed_while_a_typed_taker_waits_is_taken_when_due() {
        assert_fastest_of_three_under(Duration::from_millis(40), || {
            let queue = JobQueue::builder()
                .clock(Arc::new(crate::SystemClock))
                .retry(RetryConfig::fixed(1, Duration::from_millis(5)))
                .build()
                .expect("valid");
            let summary = Job::new(JobType::Summarization, &b""[..]);
            let id = queue.submit(summary).expect("room");
            let lease = queue.try_next(&WorkerId::new("w")).expect("ready");
            let taker = {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let types = [JobType::Summarization];
                    let lease = queue.next_for(&WorkerId::new("t"), &types, SIXTY_SECONDS);
                    (lease.map(|l| l.job_id()), started.elapsed())
                })
            };
            until_waiting(&queue, 1, 0);
            queue.fail(&lease, "once").expect("current");
            let (got, took) = taker.join().expect("the taker returns");
            assert_eq!(got, Some(id));
            took
        });
    }

    /// A queue of one place, on the system clock, whose leases last `lease` and whose jobs
    /// have no retry, and the job that fills it: the lease it is given ends its last attempt.
    fn full_of_a_last_attempt(lease: Duration) -> (JobQueue, JobId) {
        let queue = JobQueue::builder()
            .clock(Arc::new(crate::SystemClock))
            .capacity(1)
            .lease(lease)
            .retry(RetryConfig::fixed(0, Duration::ZERO))
            .build()
            .expect("valid");
        let id = queue.submit(plain(JobPriority::Medium)).expect("room");
        (queue, id)
    }

    /// A submit waiting for room in a full queue takes the place that a lease ending on the
    /// job's last attempt frees, when the lease ends: it waits no longer than that. Before the
    /// fix it waited out its slice (50 ms in every run, for a lease of 15 ms), since nothing
    /// ran the maintenance that takes the lease back until it woke.
    #[test]
    fn a_waiting_submit_takes_the_place_of_a_lease_that_ends_on_a_last_attempt() {
        assert_fastest_of_three_under(Duration::from_millis(40), || {
            let (queue, abandoned) = full_of_a_last_attempt(Duration::from_millis(15));
            let _lease = queue.try_next(&WorkerId::new("w")).expect("ready");
            let started = Instant::now();
            queue
                .submit_timeout(plain(JobPriority::Medium), SIXTY_SECONDS)
                .expect("room once the lease ends");
            let took = started.elapsed();
            assert_eq!(queue.status(abandoned), Some(JobStatus::Failed));
            took
        });
    }

    /// A call whose maintenance takes back a lease on a job's last attempt, freeing its place,
    /// wakes the submits waiting for room, as a `fail` of the job does. Here a blocked taker
    /// wakes at the lease's end and takes it back; the submit began to wait before the job
    /// was leased, so its own wait runs for a slice. Before the fix the taker woke no one, and
    /// the submit took the place only at the end of its slice (50 ms in every run).
    #[test]
    fn maintenance_that_frees_a_place_wakes_a_waiting_submit() {
        assert_fastest_of_three_under(Duration::from_millis(40), || {
            let (queue, abandoned) = full_of_a_last_attempt(Duration::from_millis(10));
            let submitter = {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let job = plain(JobPriority::Medium);
                    let id = queue.submit_timeout(job, SIXTY_SECONDS).expect("room");
                    (id, started.elapsed())
                })
            };
            until_waiting(&queue, 0, 1);
            let _lease = queue.try_next(&WorkerId::new("w")).expect("ready");
            let taker = {
                let queue = queue.clone();
                std::thread::spawn(move || queue.next(&WorkerId::new("t"), SIXTY_SECONDS))
            };
            let (id, took) = submitter.join().expect("the submitter returns");
            let taken = taker.join().expect("the taker returns");
            assert_eq!(taken.map(|l| l.job_id()), Some(id));
            assert_eq!(queue.status(abandoned), Some(JobStatus::Failed));
            took
        });
    }

    /// A submit woken for a free place that the memo store then answers takes no place, and
    /// the place goes to the next waiting submit at once. Here the job whose completion frees
    /// the place stores the result the first waiter asks for. Before the fix nothing signalled
    /// the place on: the second waiter, counted as not signalled, waited out its slice (50 ms
    /// in every run) while the queue had room.
    #[test]
    fn a_place_a_woken_submit_leaves_to_a_memo_hit_goes_to_the_next() {
        assert_fastest_of_three_under(Duration::from_millis(40), || {
            let cache = Cache::builder().max_bytes(1 << 16).build().expect("valid");
            let queue = JobQueue::builder()
                .cache(cache)
                .capacity(1)
                .build()
                .expect("valid");
            let key = CacheKey::from_parts(&"cd".repeat(32), "en", "index").expect("valid");
            let keyed = || plain(JobPriority::Medium).with_memo_key(key);
            queue.submit(keyed()).expect("room");
            let waiter = |job: Job| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let id = queue.submit_timeout(job, SIXTY_SECONDS).expect("room");
                    (id, started.elapsed())
                })
            };
            // Woken first (a condition variable of `parking_lot` wakes in order of waiting).
            let answered = waiter(keyed());
            until_waiting(&queue, 0, 1);
            let next = waiter(plain(JobPriority::Medium));
            until_waiting(&queue, 0, 2);
            let lease = queue.try_next(&WorkerId::new("w")).expect("ready");
            queue
                .complete(&lease, JobResult::default())
                .expect("current");
            // Joined before any other call: each runs the maintenance, which signals a free
            // place too.
            let (answered, _) = answered.join().expect("the first waiter returns");
            let (next, took) = next.join().expect("the second waiter returns");
            assert_eq!(queue.status(answered), Some(JobStatus::Completed));
            assert_eq!(queue.status(next), Some(JobStatus::Queued));
            took
        });
    }

    /// Producers waiting for room in a queue of three places, with workers that complete,
    /// fail, cancel and abandon jobs (short leases, one retry, a memo store answering and
    /// coalescing some keys, clones refused as duplicates): every wait is bounded and ends,
    /// no submit is refused as full before its timeout has run out, every accepted job ends,
    /// and the count of waiting and of unsignalled submits returns to zero (a signal counted
    /// for a submit that then reported a timeout would leave it off by one for good, and
    /// underflow at the next).
    #[test]
    fn waiting_submits_under_churn_end_in_room_or_a_full_timeout() {
        use std::sync::mpsc;
        const PRODUCERS: usize = 4;
        const SUBMITS: usize = 120;
        let cache = Cache::builder().max_bytes(1 << 16).build().expect("valid");
        let queue = JobQueue::builder()
            .clock(Arc::new(crate::SystemClock))
            .cache(cache.clone())
            .capacity(3)
            .lease(Duration::from_millis(3))
            .retry(RetryConfig::fixed(1, Duration::from_millis(1)))
            .retain_finished(4)
            .build()
            .expect("valid");
        let producing = Arc::new(AtomicUsize::new(PRODUCERS));
        let (done, finished) = mpsc::channel();
        for p in 0..PRODUCERS {
            let (queue, producing, done, cache) = (
                queue.clone(),
                producing.clone(),
                done.clone(),
                cache.clone(),
            );
            std::thread::spawn(move || {
                // A panic is sent too, so that the test fails at once rather than at its
                // bound, and the workers are told the producer is done.
                let ended = catch_unwind(AssertUnwindSafe(|| {
                    let mut accepted = Vec::new();
                    for i in 0..SUBMITS {
                        let mut job = plain(JobPriority::ALL[i % 3]);
                        if i % 3 == 0 {
                            let file = format!("{:02x}", (p * SUBMITS + i) % 5).repeat(32);
                            let key = CacheKey::from_parts(&file, "en", "index").expect("valid");
                            if i % 9 == 0 {
                                cache.remove(&key);
                            }
                            job = job.with_memo_key(key);
                        }
                        let timeout = Duration::from_millis([0, 1, 4, 20][i % 4]);
                        let clone = (i % 7 == 0).then(|| job.clone());
                        let started = Instant::now();
                        match queue.submit_timeout(job, timeout) {
                            Ok(id) => accepted.push(id),
                            Err(QueueError::Full { capacity: 3 }) => assert!(
                                started.elapsed() >= timeout,
                                "refused as full after {:?} of {timeout:?}",
                                started.elapsed()
                            ),
                            Err(e) => panic!("submit refused: {e}"),
                        }
                        if let Some(clone) = clone {
                            let id = clone.id();
                            match queue.submit_timeout(clone, timeout) {
                                Ok(_) | Err(QueueError::Full { .. }) => {}
                                Err(QueueError::Duplicate(d)) => assert_eq!(d, id),
                                Err(e) => panic!("clone refused: {e}"),
                            }
                        }
                    }
                    accepted
                }));
                producing.fetch_sub(1, Ordering::SeqCst);
                done.send(ended.map(Some)).expect("the test listens");
            });
        }
        for w in 0..2 {
            let (queue, producing, done) = (queue.clone(), producing.clone(), done.clone());
            std::thread::spawn(move || {
                let ended = catch_unwind(AssertUnwindSafe(|| {
                    let worker = WorkerId::new(format!("w{w}"));
                    let mut n = 0usize;
                    loop {
                        let Some(lease) = queue.next(&worker, Duration::from_millis(5)) else {
                            let stats = queue.stats();
                            let idle = stats.queued + stats.processing + stats.delayed == 0;
                            if producing.load(Ordering::SeqCst) == 0 && idle {
                                break;
                            }
                            continue;
                        };
                        n += 1;
                        // Refused only as stale: a lease that ran out meanwhile.
                        let _ = match n % 10 {
                            0 => queue.fail(&lease, "failed"),
                            1 => queue.cancel(lease.job_id()),
                            2 => Ok(()), // abandoned: its lease runs out
                            _ => queue.complete(&lease, JobResult::default()),
                        };
                    }
                }));
                done.send(ended.map(|()| None)).expect("the test listens");
            });
        }
        let mut accepted = Vec::new();
        for _ in 0..PRODUCERS + 2 {
            let ended = finished
                .recv_timeout(SIXTY_SECONDS)
                .expect("every producer and worker ends");
            let ended = ended.unwrap_or_else(|panic| resume_unwind(panic));
            accepted.extend(ended.unwrap_or_default());
        }
        let stats = queue.stats();
        assert_eq!(stats.queued + stats.processing + stats.delayed, 0);
        assert!(stats.rejected_full > 0, "the queue was full at times");
        assert!(!accepted.is_empty());
        let st = queue.inner.state.lock();
        assert_eq!((st.submitters_waiting, st.submitters_unsignalled), (0, 0));
        drop(st);
        assert_consistent(&queue);
    }

    /// The pipeline's failed runs are told to it through `fail_telling`, with every job the
    /// failure ends: a follower coalesced after `followers` was asked is told too (it was left
    /// out when the pipeline marked the followers `followers` had reported), and nothing is
    /// told of an attempt that is retried, whose followers wait on.
    #[test]
    fn a_failure_tells_every_follower_it_ends_and_a_retry_tells_nothing() {
        let queue = JobQueue::builder()
            .retry(RetryConfig::fixed(1, Duration::ZERO))
            .build()
            .unwrap();
        let job = |payload: &'static [u8]| {
            Job::transcription(&"ef".repeat(32), "en", payload).expect("a valid key")
        };
        let worker = WorkerId::new("w");
        let told = Mutex::new(Vec::new());
        let tell = |id: JobId, message: &str, followers: &[JobId]| {
            told.lock()
                .push((id, message.to_owned(), followers.to_vec()));
        };
        let leader = queue.submit(job(b"leader")).unwrap();
        let early = queue.submit(job(b"early")).unwrap();
        let lease = queue.try_next(&worker).unwrap();
        assert_eq!(lease.job_id(), leader);
        queue
            .fail_telling(&lease, "once".to_owned(), Some(&tell))
            .unwrap();
        assert!(told.lock().is_empty(), "a retry ends nothing");
        assert_eq!(queue.status(early), Some(JobStatus::Queued));

        let lease = queue.try_next(&worker).unwrap();
        assert_eq!(lease.job_id(), leader);
        assert_eq!(queue.followers(&lease).unwrap(), [early]);
        let late = queue.submit(job(b"late")).unwrap();
        queue
            .fail_telling(&lease, "twice".to_owned(), Some(&tell))
            .unwrap();
        let told = told.into_inner();
        assert_eq!(told, [(leader, "twice".to_owned(), vec![early, late])]);
        for follower in [early, late] {
            let job = queue.get(follower).unwrap();
            assert_eq!(job.status(), JobStatus::Failed);
            assert_eq!(
                job.error_message(),
                Some(&*coalesced_failure(leader, "twice"))
            );
        }
        assert_consistent(&queue);
    }

    /// A job that ran once and waits for its retry, ready or out of its delay, has no live
    /// run: `cancel_unstarted` cancels it (the pipeline's bounded wait on a progress callback
    /// gives up on it), and refuses only a job a worker runs now.
    #[test]
    fn cancel_unstarted_cancels_a_job_waiting_for_its_retry_not_one_running() {
        for delay in [Duration::ZERO, Duration::from_secs(3600)] {
            let queue = JobQueue::builder()
                .retry(RetryConfig::fixed(2, delay))
                .build()
                .unwrap();
            let worker = WorkerId::new("w");
            let id = queue
                .submit(Job::new(JobType::Indexing, &b"x"[..]))
                .unwrap();
            let lease = queue.try_next(&worker).unwrap();
            assert!(!queue.cancel_unstarted(id).unwrap(), "{delay:?}: running");
            queue.fail(&lease, "once").unwrap();
            if delay.is_zero() {
                let lease = queue.try_next(&worker).unwrap();
                assert!(!queue.cancel_unstarted(id).unwrap(), "running again");
                queue.fail(&lease, "twice").unwrap();
            }
            assert_eq!(queue.status(id), Some(JobStatus::Queued), "{delay:?}");
            assert!(queue.cancel_unstarted(id).unwrap(), "{delay:?}: waiting");
            assert_eq!(queue.status(id), Some(JobStatus::Cancelled), "{delay:?}");
            assert_consistent(&queue);
        }
    }
}
