//! Memoized transcription jobs over the real cache engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use memocache::{
    Cache, CacheKey, ConcurrencyLimit, Job, JobPriority, JobQueue, JobStatus, JobType, ManualClock,
    MemoStore, QueueError, RetryConfig, Shutdown, Ttl, WorkerId, WorkerPool,
};
use parking_lot::Mutex;

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn cache() -> Cache {
    Cache::builder()
        .max_bytes(1 << 20)
        .build()
        .expect("valid cache")
}

#[test]
fn a_cached_transcript_completes_the_job_at_submit() {
    let cache = cache();
    let key = CacheKey::transcript(&hash(1), "en").expect("valid");
    cache.insert(key, &b"hello world"[..]).expect("insert");
    let queue = JobQueue::builder()
        .cache(cache.clone())
        .build()
        .expect("valid");

    let id = queue
        .submit(Job::transcription(&hash(1), "en", &b"audio"[..]).expect("valid"))
        .expect("submit");
    let job = queue.get(id).expect("known");
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(
        job.result().map(|r| r.as_bytes().as_ref()),
        Some(&b"hello world"[..])
    );
    assert!(queue.try_next(&WorkerId::new("w")).is_none());
    assert_eq!(cache.stats().hits, 1);
}

#[test]
fn a_completed_transcription_is_stored_in_the_cache() {
    let cache = cache();
    let queue = JobQueue::builder()
        .cache(cache.clone())
        .build()
        .expect("valid");
    let id = queue
        .submit(Job::transcription(&hash(2), "fr", &b"audio"[..]).expect("valid"))
        .expect("submit");
    let lease = queue
        .try_next(&WorkerId::new("w"))
        .expect("a miss is queued");
    assert_eq!(lease.job_id(), id);
    queue
        .complete(&lease, b"bonjour".to_vec().into())
        .expect("complete");
    let key = CacheKey::transcript(&hash(2), "fr").expect("valid");
    assert_eq!(cache.peek(&key).as_deref(), Some(&b"bonjour"[..]));
}

/// Only a job with a memo key is memoized (the `job` module docs say so at the diagram): two
/// identical jobs made by `Job::new` both run, neither follows the other, and nothing is
/// looked up in or stored into the cache.
/// A result the cache refuses (larger than its whole budget) is a failed store: the job and
/// its follower complete with it all the same, and nothing is stored.
#[test]
fn a_result_too_large_for_the_cache_is_counted_and_the_jobs_still_complete() {
    let cache = Cache::builder().max_bytes(1024).build().expect("valid");
    let queue = JobQueue::builder()
        .cache(cache.clone())
        .build()
        .expect("valid");
    let keyed = || Job::keyed(JobType::Summarization, ["doc"], &b""[..]).expect("valid");
    let leader = queue.submit(keyed()).expect("submit");
    let follower = queue.submit(keyed()).expect("submit");
    let lease = queue.try_next(&WorkerId::new("w")).expect("leased");
    queue
        .complete(&lease, vec![7_u8; 4096].into())
        .expect("complete");
    for id in [leader, follower] {
        let job = queue.get(id).expect("known");
        assert_eq!(job.status(), JobStatus::Completed);
        assert_eq!(job.result().map(|r| r.as_bytes().len()), Some(4096));
    }
    let stats = queue.stats();
    assert_eq!(
        (stats.memo_store_failures, stats.completed, stats.coalesced),
        (1, 2, 1)
    );
    assert_eq!(cache.len(), 0);
}

#[test]
fn a_job_without_a_memo_key_always_runs_and_stores_nothing() {
    let cache = cache();
    let queue = JobQueue::builder()
        .cache(cache.clone())
        .build()
        .expect("valid");
    let first = queue
        .submit(Job::new(JobType::Transcription, &b"audio"[..]))
        .expect("submit");
    let second = queue
        .submit(Job::new(JobType::Transcription, &b"audio"[..]))
        .expect("submit");
    let worker = WorkerId::new("w");
    for id in [first, second] {
        let lease = queue
            .try_next(&worker)
            .expect("each job is queued for a worker");
        assert_eq!(lease.job_id(), id);
        queue
            .complete(&lease, b"text".to_vec().into())
            .expect("complete");
    }
    assert!(queue.try_next(&worker).is_none());
    assert_eq!(
        queue.get(first).expect("known").status(),
        JobStatus::Completed
    );
    assert!(cache.is_empty(), "nothing stored");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (0, 0), "nothing looked up");
}

#[test]
fn an_expired_memo_runs_the_job_again() {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .default_ttl(Ttl::seconds(60).expect("positive"))
        .clock(clock.clone())
        .build()
        .expect("valid");
    let queue = JobQueue::builder()
        .clock(Arc::new(clock.clone()))
        .cache(cache)
        .build()
        .expect("valid");
    let transcription = || Job::transcription(&hash(3), "en", &b""[..]).expect("valid");
    queue.submit(transcription()).expect("submit");
    let lease = queue.try_next(&WorkerId::new("w")).expect("miss");
    queue
        .complete(&lease, b"t".to_vec().into())
        .expect("complete");
    let hit = queue.submit(transcription()).expect("submit");
    assert_eq!(queue.status(hit), Some(JobStatus::Completed));
    clock.advance(Duration::from_secs(61));
    let again = queue.submit(transcription()).expect("submit");
    assert_eq!(queue.status(again), Some(JobStatus::Queued));
}

/// The whole flow with a pool: many submissions of a few audio files, each transcribed once.
#[test]
fn a_pool_transcribes_each_audio_file_once() {
    let cache = cache();
    let queue = JobQueue::builder()
        .cache(cache.clone())
        .retry(RetryConfig::fixed(1, Duration::ZERO))
        .build()
        .expect("valid");
    let runs: Arc<Mutex<HashMap<Vec<u8>, u32>>> = Arc::default();
    let mut ids = Vec::new();
    // Submitted before the pool starts, so every duplicate is in flight together.
    for round in 0..5 {
        for file in 0..4u8 {
            let priority = if round % 2 == 0 {
                JobPriority::Low
            } else {
                JobPriority::High
            };
            let job = Job::transcription(&hash(file), "en", vec![file])
                .expect("valid")
                .with_priority(priority);
            ids.push((queue.submit(job).expect("submit"), file));
        }
    }
    let pool = {
        let runs = Arc::clone(&runs);
        WorkerPool::builder(queue.clone())
            .handler(JobType::Transcription, move |ctx| {
                let audio = ctx.payload().as_bytes().to_vec();
                *runs.lock().entry(audio.clone()).or_default() += 1;
                Ok(format!("transcript of file {}", audio[0]).into())
            })
            .concurrency(ConcurrencyLimit::new(3).expect("valid"))
            .start()
            .expect("start")
    };
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!(stats.executed, 4, "one run per audio file");
    assert!(runs.lock().values().all(|&n| n == 1));
    for (id, file) in ids {
        let job = queue.get(id).expect("known");
        assert_eq!(job.status(), JobStatus::Completed);
        let want = format!("transcript of file {file}");
        assert_eq!(
            job.result().map(|r| r.as_bytes().as_ref()),
            Some(want.as_bytes())
        );
    }
    assert_eq!(queue.stats().coalesced, 16);
    assert_eq!(cache.len(), 4);

    // Later submissions never reach a worker.
    let later = queue
        .submit(Job::transcription(&hash(0), "en", vec![0]).expect("valid"))
        .expect("submit");
    assert_eq!(queue.status(later), Some(JobStatus::Completed));
}

/// A host's memo store with a bug: a cache whose lookups, peeks or stores panic while the
/// matching switch is on (or, with `every` set, on every `every`-th call of any kind).
#[derive(Debug, Default)]
struct PanickyStore {
    cache: Option<Cache>,
    lookup: AtomicBool,
    peek: AtomicBool,
    store: AtomicBool,
    every: u64,
    calls: AtomicU64,
}

impl PanickyStore {
    fn over(cache: &Cache) -> PanickyStore {
        PanickyStore {
            cache: Some(cache.clone()),
            ..PanickyStore::default()
        }
    }

    fn check(&self, switch: &AtomicBool, call: &str) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if switch.load(Ordering::Relaxed) || (self.every > 0 && n.is_multiple_of(self.every)) {
            panic!("the host's memo store has a bug in {call}");
        }
    }
}

/// A cache holding `key(1)`, and a store over it whose every lookup panics.
fn stored_key_1_behind_panicking_lookups() -> (Cache, Arc<PanickyStore>) {
    let cache = cache();
    cache.insert(key(1), &b"stored"[..]).expect("insert");
    let store = Arc::new(PanickyStore::over(&cache));
    store.lookup.store(true, Ordering::Relaxed);
    (cache, store)
}

impl MemoStore for PanickyStore {
    fn lookup(&self, key: &CacheKey) -> Option<Bytes> {
        self.check(&self.lookup, "lookup");
        self.cache.as_ref()?.get(key)
    }

    fn peek(&self, key: &CacheKey) -> Option<Bytes> {
        self.check(&self.peek, "peek");
        self.cache.as_ref()?.peek(key)
    }

    fn store(&self, key: CacheKey, value: Bytes) -> Result<(), memocache::job::MemoStoreError> {
        self.check(&self.store, "store");
        match &self.cache {
            Some(cache) => Ok(cache.insert(key, value)?),
            None => Ok(()),
        }
    }
}

fn transcription(file: u8) -> Job {
    Job::transcription(&hash(file), "en", vec![file]).expect("valid")
}

fn key(file: u8) -> CacheKey {
    CacheKey::transcript(&hash(file), "en").expect("valid")
}

fn result_of(queue: &JobQueue, id: memocache::JobId) -> Option<Vec<u8>> {
    let job = queue.get(id)?;
    job.result().map(|r| r.as_bytes().to_vec())
}

/// A lookup that panics answers "not there": the submit is placed (queued to run, not left
/// recorded and nowhere), a cancelled leader hands over to its follower, and nothing
/// unwinds out of the queue.
#[test]
fn a_memo_lookup_that_panics_is_a_miss_and_every_job_still_runs() {
    let (cache, store) = stored_key_1_behind_panicking_lookups();
    let queue = JobQueue::builder()
        .memo_store(store.clone())
        .build()
        .expect("valid");
    let worker = WorkerId::new("w");

    // At submit: the stored result is not seen, so the job runs.
    let first = queue.submit(transcription(1)).expect("submit");
    assert_eq!(queue.status(first), Some(JobStatus::Queued));
    let follower = queue.submit(transcription(1)).expect("submit");
    let lease = queue.try_next(&worker).expect("queued to run");
    assert_eq!(lease.job_id(), first);
    queue
        .complete(&lease, b"ran".to_vec().into())
        .expect("complete");
    for id in [first, follower] {
        assert_eq!(result_of(&queue, id).as_deref(), Some(&b"ran"[..]));
    }

    // At a takeover: a cancelled leader's follower takes over and runs.
    let leader = queue.submit(transcription(2)).expect("submit");
    let (next, last) = (
        queue.submit(transcription(2)).expect("submit"),
        queue.submit(transcription(2)).expect("submit"),
    );
    cache.insert(key(2), &b"stored"[..]).expect("insert");
    queue.cancel(leader).expect("cancel");
    let lease = queue.try_next(&worker).expect("the follower took over");
    assert_eq!(lease.job_id(), next);
    queue
        .complete(&lease, b"ran".to_vec().into())
        .expect("complete");
    assert_eq!(result_of(&queue, last).as_deref(), Some(&b"ran"[..]));

    let stats = queue.stats();
    assert_eq!(
        (stats.submitted, stats.completed, stats.cancelled),
        (5, 4, 1)
    );
    assert_eq!((stats.queued, stats.processing, stats.memo_hits), (0, 0, 0));
    // Two leaders' submits and the takeover looked up, and each lookup panicked.
    assert_eq!(stats.memo_lookup_failures, 3);

    // The lock is not poisoned and the queue answers from the store again once it works.
    store.lookup.store(false, Ordering::Relaxed);
    let hit = queue.submit(transcription(1)).expect("submit");
    assert_eq!(result_of(&queue, hit).as_deref(), Some(&b"ran"[..]));
    assert_eq!(queue.stats().memo_hits, 1);
    assert_eq!(queue.stats().memo_lookup_failures, 3);
}

/// A peek that panics answers "not there": a full queue refuses the job (or the dead letter)
/// as it does any job the store does not answer, and is unchanged.
#[test]
fn a_memo_peek_that_panics_on_a_full_queue_refuses_and_changes_nothing() {
    let cache = cache();
    let store = Arc::new(PanickyStore::over(&cache));
    let queue = JobQueue::builder()
        .memo_store(store.clone())
        .capacity(2)
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .build()
        .expect("valid");
    let worker = WorkerId::new("w");
    let dead = queue.submit(transcription(1)).expect("submit");
    let lease = queue.try_next(&worker).expect("ready");
    queue.fail(&lease, "boom").expect("fail");
    queue.submit(transcription(2)).expect("submit");
    queue.submit(transcription(3)).expect("submit");
    cache.insert(key(1), &b"stored"[..]).expect("insert");
    cache.insert(key(4), &b"stored"[..]).expect("insert");

    store.peek.store(true, Ordering::Relaxed);
    let before = queue.stats();
    assert!(matches!(
        queue.submit(transcription(4)),
        Err(QueueError::Full { capacity: 2 })
    ));
    assert!(matches!(
        queue.submit_timeout(transcription(4), Duration::ZERO),
        Err(QueueError::Full { .. })
    ));
    assert!(matches!(
        queue.resubmit_dead_letter(dead),
        Err(QueueError::Full { .. })
    ));
    let after = queue.stats();
    assert_eq!(after.rejected_full, before.rejected_full + 3);
    assert_eq!(after.memo_lookup_failures, before.memo_lookup_failures + 3);
    assert_eq!(
        (after.submitted, after.queued, after.dead_letters),
        (before.submitted, 2, 1)
    );
    assert_eq!(queue.status(dead), Some(JobStatus::Failed));

    // A peek that answers, then a lookup that panics: the peeked result answers the job.
    store.peek.store(false, Ordering::Relaxed);
    store.lookup.store(true, Ordering::Relaxed);
    let hit = queue
        .submit(transcription(4))
        .expect("answered by the peek");
    assert_eq!(result_of(&queue, hit).as_deref(), Some(&b"stored"[..]));
    queue
        .resubmit_dead_letter(dead)
        .expect("answered by the peek");
    assert_eq!(result_of(&queue, dead).as_deref(), Some(&b"stored"[..]));
    assert_eq!(queue.stats().memo_hits, 2);
    assert_eq!(
        queue.stats().memo_lookup_failures,
        after.memo_lookup_failures + 2
    );
}

/// Every lookup or peek that panics is counted once in `memo_lookup_failures`, wherever the
/// queue catches it (a submit with room, a cancelled leader's takeover, a full queue's peek
/// and the lookup after it), and the job goes on as if the store had nothing. Calls that
/// are not made (a follower, a job with no key) and stores count nothing there.
#[test]
fn every_memo_lookup_or_peek_that_panics_is_counted_once() {
    let (cache, store) = stored_key_1_behind_panicking_lookups();
    let queue = JobQueue::builder()
        .memo_store(store.clone())
        .capacity(3)
        .build()
        .expect("valid");
    let failures = || queue.stats().memo_lookup_failures;
    let calls = || store.calls.load(Ordering::Relaxed);

    // A submit with room: one lookup, which panics; the job is queued to run all the same.
    let leader = queue.submit(transcription(1)).expect("submit");
    assert_eq!(queue.status(leader), Some(JobStatus::Queued));
    assert_eq!((failures(), calls()), (1, 1));
    let stats = queue.stats();
    assert_eq!((stats.queued, stats.memo_hits), (1, 0));

    // A follower and a job with no key ask the store nothing, so nothing is counted.
    let follower = queue.submit(transcription(1)).expect("submit");
    queue
        .submit(Job::new(JobType::Summarization, &b"text"[..]))
        .expect("submit");
    assert_eq!((failures(), calls()), (1, 1));
    assert_eq!(queue.stats().coalesced_waiting, 1);

    // A leader cancelled with a follower waiting: one lookup for it, which panics; the
    // follower takes over rather than being answered from the store.
    queue.cancel(leader).expect("cancel");
    assert_eq!((failures(), calls()), (2, 2));
    let stats = queue.stats();
    assert_eq!((stats.queued, stats.coalesced_waiting), (2, 0));
    assert_eq!(queue.status(follower), Some(JobStatus::Queued));

    // Fill the queue: another leader, another panicking lookup.
    queue.submit(transcription(2)).expect("submit");
    assert_eq!((failures(), calls()), (3, 3));

    // Full: the peek finds the key, the lookup after it panics (one count), and the peeked
    // result answers the job.
    let answered = queue
        .submit(transcription(1))
        .expect("answered by the peek");
    assert_eq!(result_of(&queue, answered).as_deref(), Some(&b"stored"[..]));
    assert_eq!((failures(), calls()), (4, 5));

    // Full, and the peek panics too: one count, no lookup, the job is refused.
    store.peek.store(true, Ordering::Relaxed);
    assert!(matches!(
        queue.submit(transcription(1)),
        Err(QueueError::Full { capacity: 3 })
    ));
    assert_eq!((failures(), calls()), (5, 6));

    // Nothing the store did counted in the cache, and no store was made or failed.
    assert_eq!((cache.stats().hits, cache.stats().misses), (0, 0));
    let stats = queue.stats();
    assert_eq!((stats.memo_store_failures, stats.memo_hits), (0, 1));
    assert_eq!((stats.submitted, stats.rejected_full), (5, 1));
}

/// A store that panics is a failed store: the leader and its followers complete with the
/// result, the key has no leader any more (an identical job runs rather than waiting on a
/// job that is gone), and the failure is counted.
#[test]
fn a_memo_store_that_panics_is_a_failed_store_and_the_jobs_still_complete() {
    let cache = cache();
    let store = Arc::new(PanickyStore::over(&cache));
    store.store.store(true, Ordering::Relaxed);
    let queue = JobQueue::builder()
        .memo_store(store.clone())
        .build()
        .expect("valid");
    let worker = WorkerId::new("w");
    let ids: Vec<_> = (0..3)
        .map(|_| queue.submit(transcription(1)).expect("submit"))
        .collect();
    let lease = queue.try_next(&worker).expect("ready");
    queue
        .complete(&lease, b"ran".to_vec().into())
        .expect("the completion stands");
    for &id in &ids {
        assert_eq!(result_of(&queue, id).as_deref(), Some(&b"ran"[..]));
    }
    let stats = queue.stats();
    assert_eq!(stats.memo_store_failures, 1);
    assert_eq!(stats.memo_lookup_failures, 0, "a store is not a lookup");
    assert_eq!((stats.completed, stats.queued, stats.processing), (3, 0, 0));
    assert!(cache.peek(&key(1)).is_none(), "nothing was stored");

    // The next identical job leads and runs; complete_and_next survives the panic too.
    let again = queue.submit(transcription(1)).expect("submit");
    let other = queue.submit(transcription(2)).expect("submit");
    assert_eq!(
        queue.stats().coalesced,
        2,
        "not coalesced onto the finished job"
    );
    let lease = queue.try_next(&worker).expect("ready");
    assert_eq!(lease.job_id(), again);
    let next = queue
        .complete_and_next(&lease, b"ran".to_vec().into(), Duration::ZERO)
        .expect("the completion stands")
        .expect("the next job is leased");
    assert_eq!(next.job_id(), other);
    assert_eq!(queue.stats().memo_store_failures, 2);

    // Once the store works again, results are stored.
    store.store.store(false, Ordering::Relaxed);
    queue
        .complete(&next, b"two".to_vec().into())
        .expect("complete");
    assert_eq!(cache.peek(&key(2)).as_deref(), Some(&b"two"[..]));
}

/// Producers and a pool over a store that panics on every few calls: every job completes
/// with its file's transcript, none is lost or left waiting, and no thread sees a panic.
#[test]
fn a_store_that_panics_under_load_loses_no_job() {
    let store = Arc::new(PanickyStore {
        cache: Some(cache()),
        every: 3,
        ..PanickyStore::default()
    });
    let queue = JobQueue::builder()
        .memo_store(store.clone())
        .retain_finished(10_000)
        .build()
        .expect("valid");
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Transcription, |ctx| {
            Ok(format!("transcript of file {}", ctx.payload().as_bytes()[0]).into())
        })
        .concurrency(ConcurrencyLimit::new(3).expect("valid"))
        .start()
        .expect("start");
    let producers: Vec<_> = (0..4u8)
        .map(|p| {
            let queue = queue.clone();
            thread::spawn(move || {
                (0..300u16)
                    .map(|i| {
                        let file = (u16::from(p) * 7 + i) as u8 % 8;
                        let id = queue
                            .submit(transcription(file))
                            .expect("capacity is ample");
                        (id, file)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<_> = producers
        .into_iter()
        .flat_map(|p| p.join().expect("no producer saw a panic"))
        .collect();
    let pool_stats = pool.shutdown(Shutdown::Drain);
    assert_eq!(
        pool_stats.panicked, 0,
        "the store's panics never reach a handler"
    );
    for (id, file) in ids {
        let want = format!("transcript of file {file}");
        assert_eq!(
            result_of(&queue, id).as_deref(),
            Some(want.as_bytes()),
            "job {id}"
        );
    }
    let stats = queue.stats();
    assert_eq!((stats.submitted, stats.completed), (1_200, 1_200));
    assert_eq!((stats.queued, stats.processing, stats.failed), (0, 0, 0));
    assert!(
        store.calls.load(Ordering::Relaxed) >= 3,
        "the store was called"
    );
}

/// Two jobs with the same memo key are the same computation, so they must be of the same
/// type: a memo key is under its job type's prefix ([`JobType::key_prefix`]), and a job
/// given a key of another prefix ([`Job::with_memo_key`]) is refused at submit. Before the
/// fix a Summarization job given a transcription's key was coalesced onto the transcription
/// and completed with its transcript, and its own result would have been stored as that
/// file's transcript.
#[test]
fn a_job_with_another_types_memo_key_is_not_coalesced_with_it() {
    let queue = JobQueue::builder().cache(cache()).build().expect("valid");
    let transcription = Job::transcription(&hash(5), "en", &b"audio"[..]).expect("valid");
    let key = *transcription.memo_key().expect("keyed");
    let leader = queue.submit(transcription).expect("submit");
    let summary = Job::new(JobType::Summarization, &b"text"[..]).with_memo_key(key);
    let summary_id = summary.id();
    let got = queue.submit(summary);
    assert!(
        matches!(
            &got,
            Err(QueueError::MemoKeyPrefix { id, job_type: JobType::Summarization, key: k })
                if *id == summary_id && **k == key
        ),
        "{got:?}"
    );
    assert_eq!(queue.stats().coalesced, 0);
    assert_eq!(queue.status(summary_id), None, "nothing was recorded");
    let lease = queue.try_next(&WorkerId::new("w")).expect("ready");
    assert_eq!(lease.job_id(), leader);
}

/// The same rule keeps the memo store's lookup at submit to one type's results: a stored
/// transcript does not answer an Indexing job given its key. Before the fix the job
/// completed at submit as a memo hit, with the transcript as its result. The refusal names
/// the job's type, the key and the prefix the key should have had.
#[test]
fn a_stored_result_of_one_type_does_not_answer_a_job_of_another() {
    let cache = cache();
    let key = CacheKey::transcript(&hash(6), "en").expect("valid");
    cache.insert(key, &b"a transcript"[..]).expect("insert");
    let queue = JobQueue::builder()
        .cache(cache.clone())
        .build()
        .expect("valid");
    let got = queue.submit(Job::new(JobType::Indexing, &b""[..]).with_memo_key(key));
    let Err(error) = got else {
        panic!("an Indexing job with a transcript's key was accepted: {got:?}");
    };
    let message = error.to_string();
    for part in ["INDEXING", &key.to_string(), "\"index\""] {
        assert!(message.contains(part), "{message:?} names {part}");
    }
    assert_eq!(queue.stats().memo_hits, 0);
    assert_eq!(cache.stats().hits, 0, "the store was not asked");
    // A key under the job's own prefix is accepted as always.
    let own = Job::keyed(JobType::Indexing, ["doc"], &b""[..]).expect("valid");
    assert!(queue.submit(own).is_ok());
}

/// A queue memoizing into a cache on `clock` with `listener`, of 1,000 bytes in one shard:
/// three results of 300 bytes fill it, and the third one's store evicts.
fn memoizing_into_three_results(
    clock: &ManualClock,
    listener: impl Fn(&CacheKey, &Bytes, memocache::RemovalCause) + Send + Sync + 'static,
) -> (Cache, JobQueue) {
    let cache = Cache::builder()
        .max_bytes(1_000)
        .shards(1)
        .clock(clock.clone())
        .eviction_listener(listener)
        .build()
        .expect("valid cache");
    let queue = JobQueue::builder()
        .cache(cache.clone())
        .build()
        .expect("valid");
    (cache, queue)
}

/// Runs and completes the jobs of files 1 to `last` on `queue`, one by one, each with a result
/// of 300 bytes: in [`memoizing_into_three_results`]'s cache, the third store evicts.
fn run_results_up_to(queue: &JobQueue, last: u8) {
    let worker = WorkerId::new("w");
    for file in 1..=last {
        queue.submit(transcription(file)).expect("submit");
        let lease = queue.try_next(&worker).expect("a job");
        queue
            .complete(&lease, vec![file; 300].into())
            .expect("complete");
    }
}

/// [`memoizing_into_three_results`] with a listener that panics.
fn memoizing_into_three_results_for_a_panicking_listener() -> (Cache, JobQueue) {
    memoizing_into_three_results(&ManualClock::new(), |_key, _value, _cause| {
        panic!("listener bug")
    })
}

/// Bug: the queue calls its memo store under its lock, and the cache told its eviction
/// listener of what a store or a lookup removed right there, so a listener that called the
/// queue (here only `stats`) waited for the queue's lock for ever: the completing thread (a
/// pool's worker) hung, and every caller of the queue after it. The listener now hears of
/// those removals once the queue's call has released its lock, on the same thread, before the
/// call returns: an eviction by a store, an expiry found by a submit's lookup, and both on a
/// pool's worker.
#[test]
fn a_cache_listener_may_call_the_queue_the_cache_memoizes() {
    let (done, outcome) = std::sync::mpsc::channel();
    // On its own thread: on the old code the first completion never returns.
    thread::spawn(move || {
        let clock = ManualClock::new();
        let queue_slot: Arc<std::sync::OnceLock<JobQueue>> = Arc::default();
        let heard: Arc<Mutex<Vec<(memocache::RemovalCause, u64)>>> = Arc::default();
        let (slot, log) = (Arc::clone(&queue_slot), Arc::clone(&heard));
        let (cache, queue) = memoizing_into_three_results(&clock, move |_key, _value, cause| {
            if let Some(queue) = slot.get() {
                log.lock().push((cause, queue.stats().completed));
            }
        });
        assert!(queue_slot.set(queue.clone()).is_ok());
        run_results_up_to(&queue, 3);
        let evicted = heard.lock().clone();
        // A submit whose lookup finds its entry expired.
        let expiring = Job::transcription(&hash(9), "en", &b"audio"[..]).expect("valid");
        cache
            .insert_with_ttl(key(9), vec![9u8; 10], Ttl::seconds(1).expect("ttl"))
            .expect("stored");
        clock.advance(Duration::from_secs(2));
        queue.submit(expiring).expect("submit");
        let expired = heard.lock().last().copied();
        // A pool's worker completing the job the expiry sent to it, its store evicting.
        let pool = WorkerPool::builder(queue.clone())
            .handler(JobType::Transcription, |_| Ok(vec![7u8; 300].into()))
            .start()
            .expect("started");
        let stats = pool.shutdown(Shutdown::Drain);
        let _ = done.send((evicted, expired, stats.completed, heard.lock().len()));
    });
    let (evicted, expired, pool_completed, heard) = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("no call waited for the queue's lock");
    // Told after the completion whose store evicted: the queue already counted it.
    assert_eq!(evicted, [(memocache::RemovalCause::Size, 3)]);
    assert_eq!(expired, Some((memocache::RemovalCause::Expired, 3)));
    assert_eq!(pool_completed, 1);
    assert!(heard >= 3, "{heard}");
}

/// A listener told after the queue's lock is released panics out of the queue's call, as out
/// of the cache's own calls, once the queue's work is done: the job completed and its result
/// stored. (Told under the lock, its panic was caught as the store's and the store counted
/// as failed, though the result was stored.)
#[test]
fn a_cache_listeners_panic_goes_on_to_the_queues_caller_after_its_work() {
    let (cache, queue) = memoizing_into_three_results_for_a_panicking_listener();
    let worker = WorkerId::new("w");
    for file in 1..=3 {
        queue.submit(transcription(file)).expect("submit");
        let lease = queue.try_next(&worker).expect("a job");
        let completed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            queue.complete(&lease, vec![file; 300].into())
        }));
        // The third store evicts the first result.
        assert_eq!(completed.is_err(), file == 3, "file {file}");
        assert_eq!(queue.status(lease.job_id()), Some(JobStatus::Completed));
    }
    assert!(cache.contains_key(&key(3)));
    assert_eq!(queue.stats().memo_store_failures, 0);
}

/// Bug: `complete_and_next` on a queue memoizing into a cache without a completion hook ran
/// the held listener calls after it had leased the next job, and a listener that panicked
/// unwound with that lease: the job stayed leased to nobody until its lease ran out, and then
/// counted an attempt it never made (a pool's worker, which catches the panic, lost it so).
/// As with a completion hook's panic, the job taken along is given back first.
#[test]
fn a_cache_listeners_panic_gives_back_the_job_complete_and_next_took() {
    let (_cache, queue) = memoizing_into_three_results_for_a_panicking_listener();
    run_results_up_to(&queue, 2);
    let worker = WorkerId::new("w");
    queue.submit(transcription(3)).expect("submit");
    let next = queue.submit(transcription(4)).expect("submit");
    let lease = queue.try_next(&worker).expect("job 3");
    // The third store evicts the first result, and the listener panics.
    let completed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        queue.complete_and_next(&lease, vec![3; 300].into(), Duration::ZERO)
    }));
    assert!(completed.is_err());
    assert_eq!(queue.status(lease.job_id()), Some(JobStatus::Completed));
    assert_eq!(queue.status(next), Some(JobStatus::Queued));
    let again = queue.try_next(&worker).expect("the job given back");
    assert_eq!(again.job_id(), next);
}

/// A panic payload whose drop panics too.
struct DropPanics;

impl Drop for DropPanics {
    fn drop(&mut self) {
        panic!("the payload's drop has a bug too");
    }
}

/// A memo store whose lookup panics with a [`DropPanics`] payload.
#[derive(Debug)]
struct LookupPanicsWithABadPayload;

impl MemoStore for LookupPanicsWithABadPayload {
    fn lookup(&self, _key: &CacheKey) -> Option<Bytes> {
        std::panic::panic_any(DropPanics)
    }

    fn peek(&self, _key: &CacheKey) -> Option<Bytes> {
        None
    }

    fn store(&self, _key: CacheKey, _value: Bytes) -> Result<(), memocache::job::MemoStoreError> {
        Ok(())
    }
}

/// Bug: the queue dropped the payload of a memo store's panic as it caught it, and a payload
/// whose drop panicked unwound out of the submit, its job filed but never placed, and left the
/// thread holding back every cache listener call it made from then on (the hold was never
/// ended): a cache used on that thread told its listener nothing again. The payload's drop is
/// contained, as for the host's other callbacks, and the lookup is a miss like any that panics.
#[test]
fn a_memo_lookups_panic_whose_payload_panics_on_drop_is_a_miss_and_holds_nothing_back() {
    let queue = JobQueue::builder()
        .memo_store(Arc::new(LookupPanicsWithABadPayload))
        .build()
        .expect("valid");
    let submitted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        queue.submit(transcription(1))
    }));
    let id = submitted.expect("no panic").expect("submitted");
    assert_eq!(queue.status(id), Some(JobStatus::Queued));
    assert_eq!(queue.stats().memo_lookup_failures, 1);
    let heard = Arc::new(AtomicU64::new(0));
    let told = Arc::clone(&heard);
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(1)
        .shards(1)
        .eviction_listener(move |_key, _value, _cause| {
            told.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .expect("valid cache");
    cache.insert(key(1), &b"one"[..]).expect("insert");
    cache.insert(key(2), &b"two"[..]).expect("insert");
    assert_eq!(heard.load(Ordering::Relaxed), 1);
}

/// The same through a pool: its worker catches the listener's panic after the evicting store
/// and goes on, and the job its completion took along is run, not left leased to nobody.
#[test]
fn a_pools_worker_runs_every_job_past_a_cache_listeners_panic() {
    let (_cache, queue) = memoizing_into_three_results_for_a_panicking_listener();
    let ids: Vec<_> = (1..=4)
        .map(|file| queue.submit(transcription(file)).expect("submit"))
        .collect();
    let pool = WorkerPool::builder(queue.clone())
        .handler(JobType::Transcription, |ctx| {
            Ok(vec![ctx.payload().as_bytes()[0]; 300].into())
        })
        .concurrency(ConcurrencyLimit::new(1).expect("valid"))
        .start()
        .expect("started");
    let stats = pool.shutdown(Shutdown::Drain);
    assert_eq!(stats.completed, 4);
    for id in ids {
        assert_eq!(queue.status(id), Some(JobStatus::Completed));
    }
}

/// Completes a memoized job on `queue` when dropped: a host's thread-local that finishes its
/// work as its thread exits.
struct CompletesOnDrop(Option<(JobQueue, Job)>);

impl Drop for CompletesOnDrop {
    fn drop(&mut self) {
        if let Some((queue, job)) = self.0.take() {
            let id = queue.submit(job).expect("submit");
            let lease = queue.try_next(&WorkerId::new("w")).expect("the job");
            assert_eq!(lease.job_id(), id);
            queue
                .complete(&lease, vec![4; 300].into())
                .expect("complete");
        }
    }
}

thread_local! {
    static AT_EXIT: std::cell::RefCell<CompletesOnDrop> =
        const { std::cell::RefCell::new(CompletesOnDrop(None)) };
}

/// Bug: on a thread whose thread-locals were being destroyed, the list the queue holds
/// listener calls back in could be gone already, and a call held then was told at once, under
/// the queue's lock: a listener that called the queue (here `stats`) waited for it for ever,
/// and the thread never ended. The queue leaves its memo store alone on such a thread. (A
/// thread-local's destructor runs after those of the thread-locals first used after it:
/// `AT_EXIT` is set up before the queue's first held listener call sets up that list.)
#[cfg(target_os = "linux")]
#[test]
fn a_thread_local_that_completes_a_job_as_its_thread_exits_does_not_deadlock_the_queue() {
    let queue_slot: Arc<std::sync::OnceLock<JobQueue>> = Arc::default();
    let slot = Arc::clone(&queue_slot);
    let (_cache, queue) =
        memoizing_into_three_results(&ManualClock::new(), move |_key, _value, _cause| {
            if let Some(queue) = slot.get() {
                let _ = queue.stats();
            }
        });
    assert!(queue_slot.set(queue.clone()).is_ok());
    let exiting = queue.clone();
    let thread = thread::spawn(move || {
        AT_EXIT.with(|late| {
            late.borrow_mut().0 = Some((exiting.clone(), transcription(4)));
        });
        // The third store evicts: a listener call is held, and the list made.
        run_results_up_to(&exiting, 3);
    });
    let (done, ended) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(thread.join().is_ok());
    });
    let ended = ended
        .recv_timeout(Duration::from_secs(30))
        .expect("the thread ended");
    assert!(ended);
    assert_eq!(queue.stats().completed, 4);
}
