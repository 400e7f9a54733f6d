//! Memoized transcription jobs over the real cache engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use memocache::{
    Cache, CacheKey, ConcurrencyLimit, Job, JobPriority, JobQueue, JobStatus, JobType, ManualClock,
    RetryConfig, Shutdown, Ttl, WorkerId, WorkerPool,
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
