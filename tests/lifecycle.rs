//! What a long-running host needs of the crate's lifecycle: every thread a cache, queue, pool
//! or pipeline starts ends once its owner is gone, however the last handle goes (from a
//! listener, a handler, a progress callback, another thread, while a call is in progress),
//! and failed file operations close what they opened and leave no temporary file.
//!
//! Threads and file descriptors are the process's, so every test here holds [`SERIAL`]: no
//! other test of this binary starts or ends a thread or opens a file meanwhile. The churn
//! test at the end, which checks that the structures stop growing, is `#[ignore]`d: run it
//! with `cargo test --release --test lifecycle -- --ignored --nocapture`.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use memocache::chunk::{
    AudioChunk, CancelToken, ChunkPlan, ChunkResult, ChunkedProcessor, RunOptions,
};
use memocache::pipeline::{Pipeline, StandInTranscriber};
use memocache::{
    Bytes, Cache, CacheKey, ConcurrencyLimit, Job, JobQueue, JobResult, JobType, ManualClock,
    RetryConfig, Ttl, WeakCache, WeakJobQueue, WorkerId, WorkerPool,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn key(i: u64) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "lifecycle").expect("valid")
}

/// The crate's threads in this process: the sweepers, the snapshot syncer, and the workers
/// of the pools (named "worker-N" by default) and pipelines ("transcriber-N"). Counted by
/// name, so that the test harness's own threads, which come and go, do not count.
#[cfg(target_os = "linux")]
fn crate_threads() -> Vec<String> {
    let crate_made = |name: &str| {
        ["memocache-", "worker-", "transcriber-"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    };
    std::fs::read_dir("/proc/self/task")
        .expect("lists the threads")
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .filter(|name| crate_made(name))
        .collect()
}

/// Waits (at most 10 s) until the crate's threads are `expected`: a new thread names itself
/// a moment after it starts, and a thread that was told to stop, or that a drop has joined,
/// leaves `/proc` a moment after it returns.
#[cfg(target_os = "linux")]
fn wait_for_crate_threads(expected: &[&str], after: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let threads = crate_threads();
        if threads == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {after}, threads: {threads:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(target_os = "linux")]
fn assert_no_crate_threads_left(after: &str) {
    wait_for_crate_threads(&[], after);
}

#[cfg(target_os = "linux")]
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("lists the descriptors")
        .flatten()
        .map(|fd| {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                fd.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("lists")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn summarizer(queue: &JobQueue) -> memocache::job::WorkerPoolBuilder {
    WorkerPool::builder(queue.clone())
        .handler(JobType::Summarization, |_| {
            Ok(JobResult::from(Bytes::new()))
        })
        .concurrency(ConcurrencyLimit::new(2).expect("positive"))
}

/// Bug: a completion hook, or a memo cache's eviction listener, that called its queue (as
/// their docs invite) could only do so through a `JobQueue` handle it captured, a cycle
/// through the queue: the queue, its jobs, the memo cache and the cache's sweeper thread were
/// never freed. A `WeakJobQueue` breaks it.
#[cfg(target_os = "linux")]
#[test]
fn a_hook_and_a_memo_listener_holding_weak_queues_let_the_queue_its_cache_and_sweeper_go() {
    let _serial = serial();
    let this: Arc<OnceLock<WeakJobQueue>> = Arc::default();
    let (hook_this, listener_this) = (Arc::clone(&this), Arc::clone(&this));
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .sweep_interval(Duration::from_millis(1))
        .eviction_listener(move |_, _, _| {
            if let Some(queue) = listener_this.get().and_then(WeakJobQueue::upgrade) {
                let _ = queue.stats();
            }
        })
        .build()
        .expect("valid");
    let weak_cache = cache.downgrade();
    let queue = JobQueue::builder()
        .cache(cache)
        .on_complete(move |done| {
            if done.job_type == JobType::Summarization
                && let Some(queue) = hook_this.get().and_then(WeakJobQueue::upgrade)
            {
                queue
                    .submit(Job::new(JobType::Indexing, &b"follow-up"[..]))
                    .expect("room");
            }
        })
        .build()
        .expect("valid");
    this.set(queue.downgrade()).expect("set once");
    let worker = WorkerId::new("w");
    for i in 0..3 {
        let job = Job::keyed(JobType::Summarization, [[i]], &b"text"[..]).expect("valid");
        queue.submit(job).expect("room");
        let lease = queue
            .try_next_for(&worker, &[JobType::Summarization])
            .expect("queued");
        queue
            .complete(&lease, JobResult::from(Bytes::from_static(b"summary")))
            .expect("leased");
    }
    assert_eq!(queue.stats().queued, 3, "the hook called the queue");
    wait_for_crate_threads(&["memocache-sweep"], "building the cache");

    drop(queue);
    // A sweep in progress holds the cache, and its listener call the queue, for a moment
    // after the last handle goes (see `WeakCache::upgrade`); with the cycle, for ever.
    let deadline = Instant::now() + Duration::from_secs(10);
    while this.get().and_then(WeakJobQueue::upgrade).is_some() || weak_cache.upgrade().is_some() {
        assert!(
            Instant::now() < deadline,
            "the queue and its memo cache outlived their last handles by 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_no_crate_threads_left("dropping the queue");
}

/// Every way the last handle of a cache with a sweeper, a pool or a pipeline can go leaves
/// none of their threads running, and no drop hangs.
#[cfg(target_os = "linux")]
#[test]
fn every_thread_ends_however_the_last_handle_goes() {
    let _serial = serial();
    assert_no_crate_threads_left("the start");
    let sweeping = || {
        Cache::builder()
            .max_bytes(1 << 22)
            .sweep_interval(Duration::from_millis(1))
    };

    for _ in 0..1000 {
        let cache = sweeping().build().expect("valid");
        cache.insert(key(1), "x").expect("fits");
    }
    assert_no_crate_threads_left("1,000 caches dropped");

    // The last handle held by the listener, which drops it on the sweeper's thread, or on the
    // thread of another's call.
    for round in 0..100 {
        let clock = ManualClock::new();
        let slot: Arc<Mutex<Option<Cache>>> = Arc::default();
        let in_listener = Arc::clone(&slot);
        let cache = sweeping()
            .clock(clock.clone())
            .default_ttl(Ttl::new(Duration::from_secs(1)).expect("positive"))
            .eviction_listener(move |_, _, _| drop(in_listener.lock().expect("held").take()))
            .build()
            .expect("valid");
        cache.insert(key(1), "x").expect("fits");
        if round % 2 == 0 {
            *slot.lock().expect("held") = Some(cache);
            clock.advance(Duration::from_secs(5));
        } else {
            *slot.lock().expect("held") = Some(cache.clone());
            std::thread::spawn(move || cache.remove(&key(1)))
                .join()
                .expect("removes");
        }
    }
    assert_no_crate_threads_left("listeners dropped their caches' last handles");

    // A listener holding a WeakCache (the documented way to call the cache from it).
    for _ in 0..100 {
        let this: Arc<OnceLock<WeakCache>> = Arc::default();
        let in_listener = Arc::clone(&this);
        let cache = sweeping()
            .eviction_listener(move |_, _, _| {
                if let Some(cache) = in_listener.get().and_then(WeakCache::upgrade) {
                    let _ = cache.len();
                }
            })
            .build()
            .expect("valid");
        this.set(cache.downgrade()).expect("set once");
        cache.insert(key(1), "x").expect("fits");
        cache.remove(&key(1));
    }
    assert_no_crate_threads_left("caches whose listeners hold WeakCaches");

    // Dropped while a load is in progress on another thread, which then holds the last one.
    for _ in 0..100 {
        let cache = sweeping().build().expect("valid");
        let loading = cache.clone();
        let (started, loads) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let loader = std::thread::spawn(move || {
            loading.get_or_insert_with(key(1), || {
                started.send(()).expect("the test waits");
                finished.recv().expect("the test sends");
                "loaded"
            })
        });
        loads.recv().expect("started");
        drop(cache);
        finish.send(()).expect("the loader waits");
        assert_eq!(&loader.join().expect("loads").expect("fits")[..], b"loaded");
    }
    assert_no_crate_threads_left("caches dropped during a load");

    for _ in 0..100 {
        let queue = JobQueue::builder().build().expect("valid");
        let pool = summarizer(&queue).start().expect("starts");
        queue
            .submit(Job::new(JobType::Summarization, &b"x"[..]))
            .expect("room");
        drop(queue);
        drop(pool);
    }
    assert_no_crate_threads_left("pools dropped");

    // A pool whose last handle its own handler drops: its threads are detached, and end.
    for _ in 0..100 {
        let queue = JobQueue::builder().build().expect("valid");
        let slot: Arc<Mutex<Option<WorkerPool>>> = Arc::default();
        let in_handler = Arc::clone(&slot);
        let pool = WorkerPool::builder(queue.clone())
            .handler(JobType::Summarization, move |_| {
                drop(in_handler.lock().expect("held").take());
                Ok(JobResult::from(Bytes::new()))
            })
            .concurrency(ConcurrencyLimit::new(2).expect("positive"))
            .start()
            .expect("starts");
        *slot.lock().expect("held") = Some(pool);
        queue
            .submit(Job::new(JobType::Summarization, &b"x"[..]))
            .expect("room");
    }
    assert_no_crate_threads_left("pools dropped by their own handlers");

    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = |cache: Cache| {
        Pipeline::builder(cache, Arc::new(StandInTranscriber::new(1)))
            .workers(ConcurrencyLimit::new(2).expect("positive"))
    };
    for i in 0..30u8 {
        let audio = dir.path().join(format!("{i}.raw"));
        std::fs::write(&audio, vec![i; 5000]).expect("writes");
        let cache = sweeping().build().expect("valid");
        match i % 3 {
            // Dropped where it was used.
            0 => {
                let pipeline = pipeline(cache).build().expect("starts");
                pipeline.transcribe(&audio, "en").expect("transcribes");
            }
            // Dropped by its own progress callback, on a worker of its own.
            1 => {
                let slot: Arc<Mutex<Option<Arc<Pipeline>>>> = Arc::default();
                let in_callback = Arc::clone(&slot);
                let pipeline = Arc::new(
                    pipeline(cache)
                        .on_progress(move |_| drop(in_callback.lock().expect("held").take()))
                        .build()
                        .expect("starts"),
                );
                *slot.lock().expect("held") = Some(Arc::clone(&pipeline));
                pipeline.transcribe(&audio, "en").expect("transcribes");
            }
            // Dropped while another thread's request is in progress, which holds the last.
            _ => {
                let pipeline = Arc::new(pipeline(cache).build().expect("starts"));
                let requesting = Arc::clone(&pipeline);
                let request = std::thread::spawn(move || requesting.transcribe(&audio, "en"));
                drop(pipeline);
                request.join().expect("returns").expect("transcribes");
            }
        }
    }
    assert_no_crate_threads_left("pipelines dropped");
}

/// Failed saves, loads, trace reads and runs close every file they opened, and a failed save
/// leaves no temporary file beside its target.
#[cfg(target_os = "linux")]
#[test]
fn failures_close_what_they_opened_and_leave_no_temporary_file() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let at = |name: &str| dir.path().join(name);
    let cache = Cache::builder().max_bytes(1 << 22).build().expect("valid");
    for i in 0..100 {
        cache.insert(key(i), vec![i as u8; 1000]).expect("fits");
    }
    cache.save_snapshot(at("good.snap")).expect("saves");
    let good = std::fs::read(at("good.snap")).expect("reads");
    std::fs::create_dir(at("a.snap")).expect("creates");
    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    std::fs::write(at("corrupt.snap"), &corrupt).expect("writes");
    std::fs::write(at("short.snap"), &good[..good.len() - 1]).expect("writes");
    std::fs::write(at("t.trace"), "1\n2\nthree\n").expect("writes");
    std::fs::write(at("t.trace.gz"), b"\x1f\x8b\x08\x00not gzip").expect("writes");
    std::fs::write(at("t.trace.zst"), b"\x28\xb5\x2f\xfdnot zstd").expect("writes");
    std::fs::write(at("t.trace.xz"), b"\xfd7zXZ\x00not xz").expect("writes");
    std::fs::write(at("audio.raw"), vec![3u8; 10_000]).expect("writes");
    let files = names_in(dir.path());
    let processor = ChunkedProcessor::builder(cache.clone(), "lifecycle/1")
        .plan(ChunkPlan::with_chunk_bytes(1000).expect("valid"))
        .retry(RetryConfig::fixed(0, Duration::ZERO))
        .build()
        .expect("valid");
    let failing = |_: &AudioChunk| Err::<ChunkResult, String>("refused".into());
    let before = open_fds();

    for _ in 0..20 {
        assert!(cache.save_snapshot(at("a.snap")).is_err(), "a directory");
        assert!(cache.save_snapshot(at("missing/x.snap")).is_err());
        for bad in ["corrupt.snap", "short.snap", "a.snap", "missing.snap"] {
            assert!(cache.load_snapshot(at(bad)).is_err(), "{bad}");
            assert!(
                memocache::snapshot::read_snapshot_file(at(bad)).is_err(),
                "{bad}"
            );
        }
        let small = Cache::builder().max_bytes(1 << 12).build().expect("valid");
        small
            .load_snapshot(at("good.snap"))
            .expect("loads what fits");
        for bad in [
            "t.trace",
            "t.trace.gz",
            "t.trace.zst",
            "t.trace.xz",
            "a.snap",
        ] {
            assert!(memocache::trace::Trace::load(at(bad)).is_err(), "{bad}");
        }
        for bad in ["audio.raw", "a.snap", "missing.raw"] {
            assert!(
                processor
                    .process_path(at(bad), &failing, RunOptions::new())
                    .is_err()
            );
        }
        let cancelled = CancelToken::new();
        cancelled.cancel();
        let options = RunOptions::new().cancel_token(cancelled);
        assert!(
            processor
                .process_path(at("audio.raw"), &failing, options)
                .is_err()
        );
    }
    assert_eq!(open_fds(), before, "every file opened was closed");
    assert_eq!(names_in(dir.path()), files, "no temporary file was left");
}

/// This process's resident memory, in KiB (`/proc/self/statm` counts 4 KiB pages here).
#[cfg(target_os = "linux")]
fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("readable");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("a page count");
    pages * 4
}

/// Runs `round` `rounds` times and asserts that the resident memory stopped growing: the
/// last quarter of the rounds ends within `slack_kib` of where the second quarter ended.
#[cfg(target_os = "linux")]
fn assert_steady(what: &str, rounds: usize, slack_kib: u64, mut round: impl FnMut(usize)) {
    let mut resident = Vec::with_capacity(rounds);
    for index in 0..rounds {
        round(index);
        resident.push(resident_kib());
    }
    eprintln!("{what}: resident KiB after each round {resident:?}");
    let warm = resident[rounds / 2 - 1];
    let last = resident[rounds - 1];
    assert!(
        last <= warm + slack_kib,
        "{what}: {warm} KiB half way, {last} KiB at the end"
    );
}

/// Millions of operations through each structure a long-running host keeps: jobs completed,
/// failed into the dead letters, cancelled, resubmitted, coalesced onto memoized leaders that
/// complete or fail; loaders that fail or panic; metric series labelled by a value that
/// keeps changing (removed once done with), with alerts firing and resolving on them. The
/// resident memory must level off once the bounded structures are full.
///
/// `cargo test --release --test lifecycle -- --ignored --nocapture` (about a minute).
#[cfg(target_os = "linux")]
#[test]
#[ignore = "a long churn: run in release, see the doc comment"]
fn long_churn_reaches_a_steady_state() {
    use memocache::{
        Aggregation, AlertEvaluator, AlertRule, MetricsRegistry, RetryConfig as Retry, Severity,
        Threshold,
    };
    let _serial = serial();

    let cache = Cache::builder().max_bytes(1 << 22).build().expect("valid");
    let queue = JobQueue::builder()
        .cache(cache.clone())
        .retry(Retry::fixed(0, Duration::ZERO))
        .build()
        .expect("valid");
    let worker = WorkerId::new("churn");
    let mut n = 0u64;
    assert_steady("queue", 16, 4 << 10, |_| {
        for _ in 0..25_000 {
            n += 1;
            let submit = |job: Job| queue.submit(job).expect("room");
            submit(Job::new(JobType::Summarization, &b"plain"[..]));
            for _ in 0..2 {
                let memo = Job::keyed(JobType::Summarization, [n.to_le_bytes()], &b"m"[..]);
                submit(memo.expect("valid"));
                let doomed = Job::keyed(JobType::Translation, [n.to_le_bytes()], &b"m"[..]);
                submit(doomed.expect("valid"));
            }
            let dead = submit(Job::new(JobType::Indexing, &b"dead"[..]));
            let cancelled = submit(Job::new(JobType::Transcription, &b"cancelled"[..]));
            queue.cancel(cancelled).expect("queued");
            let run_all = || {
                while let Some(lease) = queue.try_next(&worker) {
                    if lease.job_type() == JobType::Summarization {
                        queue
                            .complete(&lease, JobResult::from(Bytes::from_static(b"r")))
                            .expect("leased");
                    } else {
                        queue.fail(&lease, "refused").expect("leased");
                    }
                }
            };
            run_all();
            if n.is_multiple_of(3) {
                queue.resubmit_dead_letter(dead).expect("a dead letter");
                run_all();
            }
        }
    });
    let stats = queue.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.dead_letters, 10_000, "the dead letters are capped");

    let loads = Cache::builder().max_bytes(1 << 22).build().expect("valid");
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    assert_steady("loaders", 16, 4 << 10, |_| {
        for _ in 0..50_000 {
            n += 1;
            let key = key(n);
            let failed = loads.try_get_or_insert_with(key, || Err::<Bytes, _>("refused"));
            assert!(failed.is_err());
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                loads.get_or_insert_with(key, || -> Bytes { panic!("the loader panics") })
            }));
            assert!(panicked.is_err());
            loads.get_or_insert_with(key, || "loaded").expect("fits");
        }
    });
    std::panic::set_hook(hook);

    let registry = MetricsRegistry::new();
    let mut alerts = AlertEvaluator::new(registry.clone());
    let above = Threshold::greater_than(0.5).expect("finite");
    let rule = AlertRule::new(
        "stuck",
        "file_progress",
        above,
        Severity::Info,
        Duration::ZERO,
    )
    .with_aggregation(Aggregation::Last);
    alerts.add_rule(rule).expect("valid");
    assert_steady("metrics", 16, 4 << 10, |_| {
        for _ in 0..2_000 {
            n += 1;
            let file = format!("{n}.wav");
            let labels = [("file", file.as_str())];
            let progress = registry.gauge("file_progress", "", &labels).expect("valid");
            progress.set(1.0);
            assert_eq!(alerts.evaluate().len(), 1, "fires");
            registry.remove("file_progress", &labels).expect("valid");
            assert_eq!(alerts.evaluate().len(), 1, "resolves");
        }
    });
}
