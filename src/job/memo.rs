//! Memoized jobs: where the queue looks results up and stores them.
//!
//! # Design
//!
//! A job with a memo key ([`crate::Job::transcription`], [`crate::Job::keyed`],
//! [`crate::Job::with_memo_key`]) names its computation by content: two jobs with the same key
//! compute the same result. So the key must also say which computation, the job's type: it is
//! under the type's prefix ([`crate::JobType::key_prefix`]), as the first two constructors
//! make it, and a queue refuses at submit a job whose key is under any other prefix
//! ([`crate::QueueError::MemoKeyPrefix`]). Two jobs with the same key are then of the same
//! type, and a stored result answers only jobs of the type that computed it. (Before that
//! check, a Summarization job given a transcription's key was coalesced onto it and completed
//! with its transcript, a stored transcript answered an Indexing job given its key, and such
//! a job's own result was stored as the transcript.) The queue uses the key three ways:
//!
//! 1. **Memo hit.** At submit, if the [`MemoStore`] holds the key, the job completes at once
//!    with the stored result ([`crate::Job::complete_memoized`]); no worker ever sees it. It
//!    never holds a place, so a full queue accepts it rather than refuse it or make
//!    [`crate::JobQueue::submit_timeout`] wait (a full queue checks the key before it
//!    refuses, even when an identical job is in flight, which with room it would follow).
//! 2. **Coalescing.** If an identical job (same key) is already queued or running, the new job
//!    becomes its *follower*: it is not queued for a worker, and when the leader completes,
//!    every follower completes with the same result. One execution per content key. A follower
//!    more urgent than its leader raises the leader's priority (priority inheritance), so
//!    coalescing never makes an urgent job wait behind low-priority work. The raise lasts
//!    only as long as a follower needs it: a leader waits at the highest of its own priority
//!    and its followers', so cancelling the urgent follower puts it back (keeping its turn)
//!    rather than letting it run ahead of earlier work for a job nobody waits for. The raise
//!    is the queue's: the leader itself keeps the priority it was submitted with
//!    ([`crate::JobQueue::get`] reports that one), and a [`crate::Lease`] tells the priority
//!    the job was taken at. If the leader is cancelled, the memo store is asked first, as at
//!    submit: the result may have been stored some other way while the leader waited or ran
//!    (a direct cache insert, another queue sharing the store), and then every follower
//!    completes with it as a memo hit and nothing runs again. Otherwise its first follower
//!    takes over as leader, with its own priority (raised by the followers it now leads), age
//!    and FIFO turn (those of its submit: a follower is given a turn when it is coalesced),
//!    so aging bounds its wait as it bounds any job's. A leader cancelled while it runs is not
//!    stopped: its worker's result is refused as any stale lease's is, and the follower that
//!    takes over runs the work again. If the leader fails for good, its
//!    followers fail with it (and are dead-lettered), since they would fail the same way. A
//!    follower takes a place under the queue's capacity: it holds its record and payload
//!    until the leader finishes, and nothing else bounds how many a leader gathers.
//! 3. **Store.** When a memoized job completes, its result is stored under the key.
//!
//! The lookups (at submit and at a takeover) and the store at completion happen under the
//! queue's lock, which closes the race where a submit misses the store just before a leader's
//! result lands and then, the leader being gone, runs the computation again. The price is
//! that the store's own code runs under the queue's lock, so a store must never call back into
//! the queue. A [`crate::Cache`]'s eviction listener may: the queue holds back the listener
//! calls of the removals its lookups and stores make (an insert that evicts, a lookup that
//! finds its entry expired) until it has released its lock, and they run on the same thread
//! before the queue's call returns. Told under the lock, a listener that called the queue, even
//! for its stats, waited for the lock for ever.
//!
//! # A store that panics
//!
//! A store is the host's code (the crate's [`Cache`] does not panic), and its calls come in
//! the middle of the queue's transitions: a submit's lookup after the job is recorded but
//! before it is placed, a cancelled leader's lookup after it has left and before its
//! followers are answered or handed over, a store after the leader has completed and before
//! its followers do. A panic unwinding from there would leave the queue half changed (a job
//! recorded but never placed, followers stranded, a finished leader still named for its
//! key). So the queue catches a panic of each call and carries on with the answer that is
//! safe whatever the store meant:
//!
//! * a **lookup** or a **peek** that panics answers "not there": the job is queued to run
//!   (or, on a full queue, refused or made to wait), a cancelled leader's first follower
//!   takes over. The work may run once more than needed; no job is lost or answered wrongly.
//!   Each such call is counted in [`crate::QueueStats::memo_lookup_failures`], so a store
//!   whose lookups keep failing shows in the queue's stats, not only as work run again.
//! * a **store** that panics is a failed store, counted in
//!   [`crate::QueueStats::memo_store_failures`]: the job and its followers complete with the
//!   result all the same, as they do when the store returns an error.
//!
//! The queue's lock is a `parking_lot` mutex, which a panic does not poison, and the panic
//! is not let out of the queue's call. It is still reported by the process's panic hook,
//! which runs under the queue's lock and so must not call the queue either. Whether the
//! store's own state survived its panic is for the store to say. (In a build with
//! `panic = "abort"` nothing is caught: the process ends.)
//!
//! # Counting
//!
//! A store that counts lookups (the [`Cache`] does, in [`crate::CacheStats`]) is the host's,
//! and its counts must say what was asked of it, so the queue counts each submit (and each
//! re-submitted dead letter) once, for what it is:
//!
//! * one **hit** if the memo store answers it, whether the queue had room or not;
//! * one **miss** if its job is queued to run (it becomes a leader);
//! * **nothing** if it is coalesced onto an identical job in flight (no lookup is made: the
//!   leader's result will answer it) or refused because the queue is full.
//!
//! A full queue must know whether the store answers a job before it refuses it or makes
//! [`crate::JobQueue::submit_timeout`] wait, and a waiting submit checks again each time it
//! wakes. Those checks are [`MemoStore::peek`]s, which count nothing; only when the key is
//! there does the queue make the [`MemoStore::lookup`] that counts the hit. (Should the entry
//! go between the two calls, that lookup counts a miss and the queue answers with the peeked
//! result: a content-addressed result that was there a moment ago is still the right one.)
//! So a submit that waited and
//! re-checked a hundred times still counts one miss, when its job is finally queued (the
//! lookup `admit` makes with room, after coalescing), or nothing if it gives up. A leader
//! cancelled with followers waiting makes one lookup for them all: a hit if they are
//! answered, else a miss for the follower that takes over and runs.
//!
//! The queue depends only on the [`MemoStore`] trait, not on a particular cache, so it builds
//! and runs without one (then nothing is memoized across time, but identical in-flight jobs are
//! still coalesced). The crate's [`Cache`] implements it (build the queue with
//! [`crate::JobQueueBuilder::cache`]): a lookup is a [`Cache::get`], so memo hits count as
//! cache hits and refresh the entry, a peek is a [`Cache::peek`], which counts and refreshes
//! nothing, and a store is a [`Cache::insert`] under the cache's default TTL.

use std::error::Error;
use std::fmt;

use bytes::Bytes;

use crate::cache::Cache;
use crate::key::CacheKey;

/// The error a [`MemoStore`] reports when it could not store a result.
pub type MemoStoreError = Box<dyn Error + Send + Sync>;

/// Where a [`crate::JobQueue`] looks up and stores memoized results.
pub trait MemoStore: Send + Sync + fmt::Debug {
    /// The stored result for `key`, if any. The queue asks this once for a submit whose
    /// result it uses or whose work it queues (see *Counting* in [`crate::job::memo`]), so a
    /// store that counts lookups counts what its callers asked for.
    fn lookup(&self, key: &CacheKey) -> Option<Bytes>;

    /// The stored result for `key`, if any, as a check that is not a lookup: a store that
    /// counts lookups or refreshes entries on them must do neither here. A full queue asks
    /// this before it refuses a job or makes it wait, and again each time a waiting submit
    /// wakes; it asks [`MemoStore::lookup`] only once the key is there.
    ///
    /// The default is [`MemoStore::lookup`], right for a store whose lookups have no side
    /// effects; [`Cache`] answers with [`Cache::peek`].
    fn peek(&self, key: &CacheKey) -> Option<Bytes> {
        self.lookup(key)
    }

    /// Stores `value` under `key`. A failure does not fail the job (its result was computed);
    /// the queue counts it in [`crate::QueueStats::memo_store_failures`]. A panic counts as a
    /// failure (see *A store that panics* in [`crate::job::memo`]); a panicking
    /// [`MemoStore::lookup`] or [`MemoStore::peek`] answers "not there" and is counted in
    /// [`crate::QueueStats::memo_lookup_failures`].
    fn store(&self, key: CacheKey, value: Bytes) -> Result<(), MemoStoreError>;
}

impl MemoStore for Cache {
    fn lookup(&self, key: &CacheKey) -> Option<Bytes> {
        self.get(key)
    }

    fn peek(&self, key: &CacheKey) -> Option<Bytes> {
        Cache::peek(self, key)
    }

    fn store(&self, key: CacheKey, value: Bytes) -> Result<(), MemoStoreError> {
        Ok(self.insert(key, value)?)
    }
}
