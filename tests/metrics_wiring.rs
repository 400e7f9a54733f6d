//! The cache and the job queue publishing into a registry: every statistic under its
//! Prometheus name, job latency percentiles, and an alert on the published hit ratio.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use memocache::job::JobCompletion;
use memocache::metrics::wiring::{CacheMetrics, QueueMetrics};
use memocache::{
    Aggregation, AlertEvaluator, AlertRule, Cache, CacheKey, Job, JobPriority, JobQueue, JobType,
    ManualClock, MetricError, MetricType, MetricsRegistry, QueueError, QueueStats, RetryConfig,
    Severity, Tags, Threshold, Ttl, WorkerId,
};

mod clock_support;
use clock_support::{cache_on, paged_alerts, registry_on};

const SECOND: Duration = Duration::from_secs(1);

fn key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "t").unwrap()
}

/// The rule "cache hit ratio low": the published hit ratio below 0.5 over a minute.
fn hit_ratio_low() -> AlertRule {
    AlertRule::new(
        "cache hit ratio low",
        "memocache_cache_hit_ratio",
        Threshold::less_than(0.5).unwrap(),
        Severity::Warning,
        60 * SECOND,
    )
}

/// Asserts the value of each sample line `series` (as for [`sample`]) in `text`.
fn assert_samples(text: &str, expected: &[(&str, f64)]) {
    for &(series, want) in expected {
        assert_eq!(sample(text, series), want, "{series}");
    }
}

/// A registry on a manual clock, the job queue's metrics registered in it.
fn queue_metrics() -> (ManualClock, MetricsRegistry, QueueMetrics) {
    let clock = ManualClock::new();
    let registry = registry_on(&clock);
    let metrics = QueueMetrics::register(&registry).unwrap();
    (clock, registry, metrics)
}

/// A 1 MiB cache and a registry on one manual clock, the cache's metrics registered in it.
fn published_cache() -> (ManualClock, Cache, MetricsRegistry, CacheMetrics) {
    let clock = ManualClock::new();
    let cache = cache_on(&clock);
    let registry = registry_on(&clock);
    let metrics = CacheMetrics::register(&registry).unwrap();
    (clock, cache, registry, metrics)
}

/// Asserts that `text` has each of `lines` as a whole line.
fn assert_has_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.lines().any(|l| l == *line), "{line}");
    }
}

/// The value of the sample line `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {series} in\n{text}"));
    line[prefix.len()..].parse().unwrap()
}

#[test]
fn every_cache_statistic_is_published_under_its_name() {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(4)
        .shards(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let registry = registry_on(&clock);

    // Hits, misses, inserts, an update, size evictions, an expiry, a removal, loads.
    for i in 0..6 {
        cache.insert(key(i), vec![0u8; 100]).unwrap();
    }
    cache.insert(key(5), vec![1u8; 100]).unwrap();
    for i in 0..8 {
        cache.get(&key(i));
    }
    cache
        .insert_with_ttl(key(100), "short", Ttl::seconds(1).unwrap())
        .unwrap();
    clock.advance(2 * SECOND);
    cache.purge_expired();
    cache.insert(key(300), "removed").unwrap();
    assert!(cache.remove(&key(300)).is_some());
    cache.get_or_insert_with(key(200), || "loaded").unwrap();
    let failed: Result<_, _> = cache.try_get_or_insert_with(key(201), || Err::<&str, _>("no"));
    assert!(failed.is_err());

    let stats = cache.stats();
    assert!(stats.hits > 0 && stats.misses > 0 && stats.updates > 0);
    assert!(stats.evictions_size > 0 && stats.evictions_expired > 0);
    assert!(stats.removals_explicit > 0 && stats.loads > 0 && stats.load_failures > 0);
    registry.record_cache(&stats).unwrap();

    let text = registry.render_prometheus();
    let expected = [
        ("memocache_cache_hits_total", stats.hits as f64),
        ("memocache_cache_misses_total", stats.misses as f64),
        ("memocache_cache_inserts_total", stats.inserts as f64),
        ("memocache_cache_updates_total", stats.updates as f64),
        (
            "memocache_cache_evictions_total{cause=\"size\"}",
            stats.evictions_size as f64,
        ),
        (
            "memocache_cache_evictions_total{cause=\"expired\"}",
            stats.evictions_expired as f64,
        ),
        (
            "memocache_cache_removals_total",
            stats.removals_explicit as f64,
        ),
        ("memocache_cache_loads_total", stats.loads as f64),
        (
            "memocache_cache_load_failures_total",
            stats.load_failures as f64,
        ),
        ("memocache_cache_entries", stats.entries as f64),
        ("memocache_cache_size_bytes", stats.bytes as f64),
        ("memocache_cache_hit_ratio", stats.hit_ratio()),
    ];
    assert_samples(&text, &expected);
    assert_eq!(stats.entries, cache.len() as u64);
    assert_eq!(stats.bytes, cache.size_bytes());
    assert_has_lines(
        &text,
        &[
            "# TYPE memocache_cache_hits_total counter",
            "# TYPE memocache_cache_evictions_total counter",
            "# TYPE memocache_cache_size_bytes gauge",
            "# TYPE memocache_cache_hit_ratio gauge",
        ],
    );

    // An older snapshot published late does not move counters backwards.
    let old = stats;
    cache.get(&key(200));
    registry.record_cache(&cache.stats()).unwrap();
    registry.record_cache(&old).unwrap();
    let text = registry.render_prometheus();
    assert_eq!(
        sample(&text, "memocache_cache_hits_total"),
        (old.hits + 1) as f64
    );
}

/// One of the cache's names asked for as another type is refused at once, the error naming
/// the type and labels the crate registers it with, and registers nothing; the cache's
/// registration, which the name taken made fail before (`TypeConflict`), goes through.
#[test]
fn a_cache_name_asked_for_as_another_type_is_refused() {
    let registry = MetricsRegistry::new();
    assert_eq!(
        registry
            .gauge("memocache_cache_hits_total", "taken", &[])
            .unwrap_err(),
        MetricError::CrateFamilyConflict {
            metric: "memocache_cache_hits_total".into(),
            kind: MetricType::Counter,
            labels: vec![],
            declared_kind: MetricType::Gauge,
            declared: vec![],
        }
    );
    assert_eq!(registry.render_prometheus(), "");
    CacheMetrics::register(&registry).expect("the name is the cache's");
}

#[test]
fn an_alert_on_the_published_hit_ratio() {
    let (clock, cache, registry, metrics) = published_cache();
    let (mut alerts, pager) = paged_alerts(&registry);
    alerts
        .add_rule(
            hit_ratio_low()
                .with_pending_for(30 * SECOND)
                .with_channel("pager"),
        )
        .unwrap();
    // Only misses: the ratio is 0, for long enough to fire.
    for t in 0..4 {
        cache.get(&key(t));
        metrics.publish(&cache.stats());
        alerts.evaluate();
        clock.advance(15 * SECOND);
    }
    let fired = pager.take();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].value, Some(0.0));
    // Hits bring the average over the window back above 0.5: resolved.
    cache.insert(key(0), "x").unwrap();
    for _ in 0..100 {
        cache.get(&key(0));
    }
    for _ in 0..5 {
        metrics.publish(&cache.stats());
        clock.advance(15 * SECOND);
    }
    let ratio = registry.aggregate(
        "memocache_cache_hit_ratio",
        &Tags::new(),
        Aggregation::Average,
        60 * SECOND,
    );
    assert!(ratio.unwrap() > 0.9);
    assert_eq!(alerts.evaluate().len(), 1);
    assert_eq!(pager.take().len(), 1);
}

/// Bug: a cache that had not been read published a hit ratio of 0, so a "hit ratio below X"
/// rule fired on an idle system that had served nothing — the false alert that treating an
/// empty window as "no data" exists to prevent. The ratio is NaN ("no data") until the first
/// read, for every aggregation.
#[test]
fn an_unread_cache_publishes_no_hit_ratio_and_fires_no_low_ratio_alert() {
    let (clock, cache, registry, metrics) = published_cache();
    let mut alerts = AlertEvaluator::new(registry.clone());
    let rule = |aggregation| hit_ratio_low().with_aggregation(aggregation);
    alerts.add_rule(rule(Aggregation::Last)).unwrap();
    alerts.add_rule(rule(Aggregation::Average)).unwrap();
    cache.insert(key(0), "written, never read").unwrap();
    for _ in 0..4 {
        metrics.publish(&cache.stats());
        assert_eq!(alerts.evaluate(), Vec::new());
        clock.advance(15 * SECOND);
    }
    let text = registry.render_prometheus();
    assert!(text.contains("\nmemocache_cache_hit_ratio NaN\n"), "{text}");
    // The first read defines it: one miss is a ratio of 0, and both rules fire.
    cache.get(&key(1));
    metrics.publish(&cache.stats());
    assert_eq!(alerts.evaluate().len(), 2);
    assert!(
        registry
            .render_prometheus()
            .contains("\nmemocache_cache_hit_ratio 0\n")
    );
}

/// Bug: registering the cache metrics created the hit ratio gauge at 0, so until the first
/// publish it read as "no hits at all": a render (a scrape) showed
/// `memocache_cache_hit_ratio 0` and a "hit ratio below X" rule on the last value fired,
/// before the cache had been asked anything. The gauge starts as NaN ("no data"); a
/// registration that finds the gauge already published keeps its value.
#[test]
fn the_hit_ratio_is_no_data_until_the_first_publish() {
    let clock = ManualClock::new();
    let registry = registry_on(&clock);
    let metrics = CacheMetrics::register(&registry).unwrap();
    assert_hit_ratio_is_no_data(&registry);

    // Published, the ratio is the cache's; registering again (as `record_cache` does on
    // every call) finds the gauge and leaves it as published.
    let cache = Cache::builder().max_bytes(1 << 20).build().unwrap();
    cache.insert(key(0), "x").unwrap();
    cache.get(&key(0));
    metrics.publish(&cache.stats());
    CacheMetrics::register(&registry).unwrap();
    let text = registry.render_prometheus();
    assert!(text.contains("\nmemocache_cache_hit_ratio 1\n"), "{text}");
    assert_eq!(last_hit_ratio(&registry), Some(1.0));
}

/// The hit ratio's last value, as a reader (and an alert rule on `Last`) gets it.
fn last_hit_ratio(registry: &MetricsRegistry) -> Option<f64> {
    let name = "memocache_cache_hit_ratio";
    registry.aggregate(name, &Tags::new(), Aggregation::Last, 60 * SECOND)
}

/// Asserts that the hit ratio is "no data": rendered as NaN, `None` (not `Some(NaN)`) to a
/// reader, and a "hit ratio below X" rule on its last value does not fire.
fn assert_hit_ratio_is_no_data(registry: &MetricsRegistry) {
    let text = registry.render_prometheus();
    assert!(text.contains("\nmemocache_cache_hit_ratio NaN\n"), "{text}");
    assert_eq!(last_hit_ratio(registry), None);
    let mut alerts = AlertEvaluator::new(registry.clone());
    alerts
        .add_rule(hit_ratio_low().with_aggregation(Aggregation::Last))
        .unwrap();
    assert_eq!(alerts.evaluate(), Vec::new());
}

/// Bug: a host that registered `memocache_cache_hit_ratio` itself before the crate did (the
/// crate's family whoever registers it first) created the gauge at 0, and the crate's
/// registration, finding it, kept that 0: until the first publish a render showed
/// `memocache_cache_hit_ratio 0` and a "hit ratio below X" rule on the last value fired. A
/// series of the family starts as NaN whoever creates it; a value the host sets is its own
/// and is kept until the crate publishes.
#[test]
fn the_hit_ratio_is_no_data_until_the_first_publish_when_the_host_registered_it_first() {
    let clock = ManualClock::new();
    let registry = registry_on(&clock);
    let hosts = registry
        .gauge("memocache_cache_hit_ratio", "", &[])
        .unwrap();
    assert_hit_ratio_is_no_data(&registry);
    let metrics = CacheMetrics::register(&registry).unwrap();
    assert_hit_ratio_is_no_data(&registry);

    // The host's own value, set through its handle, is not taken back by a registration
    // (`record_cache` registers at every call) until the crate publishes its own.
    hosts.set(0.75);
    CacheMetrics::register(&registry).unwrap();
    assert_eq!(last_hit_ratio(&registry), Some(0.75));
    let cache = Cache::builder().max_bytes(1 << 20).build().unwrap();
    cache.insert(key(0), "x").unwrap();
    cache.get(&key(0));
    metrics.publish(&cache.stats());
    assert_eq!(last_hit_ratio(&registry), Some(1.0));
    assert_eq!(hosts.get(), 1.0, "one series, shared");
}

/// Checked, and held: the published figures follow the cache through a `clear` and a
/// snapshot load (no other test publishes across either). A clear is removals, not
/// evictions, and empties the level gauges; a load counts what it restores as inserts, and
/// a key it overwrites as an update; no counter goes backwards.
#[test]
fn published_figures_follow_a_clear_and_a_snapshot_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.snapshot");
    let saved = Cache::builder().max_bytes(1 << 20).build().unwrap();
    for i in 0..3 {
        saved.insert(key(i), vec![7u8; 10]).unwrap();
    }
    saved.save_snapshot(&path).unwrap();

    let cache = Cache::builder().max_bytes(1 << 20).build().unwrap();
    let registry = MetricsRegistry::new();
    let metrics = CacheMetrics::register(&registry).unwrap();
    cache.insert(key(0), vec![1u8; 10]).unwrap();
    cache.insert(key(9), vec![1u8; 10]).unwrap();
    metrics.publish(&cache.stats());
    cache.clear();
    metrics.publish(&cache.stats());
    let text = registry.render_prometheus();
    assert_samples(
        &text,
        &[
            ("memocache_cache_entries", 0.0),
            ("memocache_cache_size_bytes", 0.0),
            ("memocache_cache_removals_total", 2.0),
            ("memocache_cache_evictions_total{cause=\"size\"}", 0.0),
            ("memocache_cache_inserts_total", 2.0),
        ],
    );

    cache.insert(key(0), vec![1u8; 10]).unwrap();
    cache.load_snapshot(&path).unwrap();
    metrics.publish(&cache.stats());
    let text = registry.render_prometheus();
    assert_eq!(sample(&text, "memocache_cache_entries"), 3.0);
    assert_eq!(
        sample(&text, "memocache_cache_size_bytes"),
        cache.size_bytes() as f64
    );
    assert_eq!(sample(&text, "memocache_cache_inserts_total"), 5.0);
    assert_eq!(sample(&text, "memocache_cache_updates_total"), 1.0);
    assert_eq!(sample(&text, "memocache_cache_removals_total"), 2.0);
}

// --- the job queue ----------------------------------------------------------------------------

fn audio(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn worker() -> WorkerId {
    WorkerId::new("w")
}

/// The lines of the family `name`, from its `# HELP` line to the next family.
fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let help = format!("# HELP {name} ");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&help));
    let first = lines.next().unwrap_or_else(|| panic!("no family {name}"));
    std::iter::once(first)
        .chain(lines.take_while(|l| !l.starts_with("# HELP ")))
        .collect()
}

#[test]
fn every_queue_statistic_is_published_under_its_name() {
    let (clock, registry, metrics) = queue_metrics();
    let cache = cache_on(&clock);
    let queue = JobQueue::builder()
        .clock(Arc::new(clock.clone()))
        .capacity(4)
        .lease(60 * SECOND)
        .retry(RetryConfig::fixed(1, 10 * SECOND))
        .cache(cache)
        .on_complete(metrics.completion_hook())
        .build()
        .unwrap();
    let plain = |p| Job::new(JobType::Indexing, &b"doc"[..]).with_priority(p);
    let transcription = |n| Job::transcription(&audio(n), "en", &b"audio"[..]).unwrap();

    // A: completed by a worker after 2 s.
    queue.submit(plain(JobPriority::Medium)).unwrap();
    let a = queue.try_next(&worker()).unwrap();
    clock.advance(2 * SECOND);
    queue.complete(&a, b"a".to_vec().into()).unwrap();
    // B: fails, is retried after 10 s, fails again: dead-lettered.
    queue.submit(plain(JobPriority::Medium)).unwrap();
    let b = queue.try_next(&worker()).unwrap();
    queue.fail(&b, "first").unwrap();
    clock.advance(10 * SECOND);
    let b = queue.try_next(&worker()).unwrap();
    queue.fail(&b, "second").unwrap();
    // C: cancelled.
    let c = queue.submit(plain(JobPriority::Medium)).unwrap();
    queue.cancel(c).unwrap();
    // D: a transcription completed after 3 s; E: the same audio, a memo hit at submit.
    queue.submit(transcription(1)).unwrap();
    let d = queue.try_next(&worker()).unwrap();
    clock.advance(3 * SECOND);
    queue.complete(&d, b"hello".to_vec().into()).unwrap();
    queue.submit(transcription(1)).unwrap();
    // F and G: the same new audio, G coalesced onto F; both wait.
    queue
        .submit(transcription(2).with_priority(JobPriority::Low))
        .unwrap();
    queue
        .submit(transcription(2).with_priority(JobPriority::Low))
        .unwrap();
    // I: taken, its worker hangs: the lease expires and it waits out a retry delay.
    queue.submit(plain(JobPriority::High)).unwrap();
    let _hung = queue.try_next(&worker()).unwrap();
    // H: taken 50 s later, still running at the end.
    queue.submit(plain(JobPriority::High)).unwrap();
    clock.advance(50 * SECOND);
    let _running = queue.try_next(&worker()).unwrap();
    clock.advance(10 * SECOND);
    // F, G, H and I fill the queue: one more is refused.
    assert!(matches!(
        queue.submit(plain(JobPriority::High)),
        Err(QueueError::Full { .. })
    ));

    let stats = queue.stats();
    metrics.publish(&stats);
    let text = registry.render_prometheus();
    let expected = [
        ("memocache_jobs{status=\"queued\"}", 3.0),
        ("memocache_jobs{status=\"processing\"}", 1.0),
        ("memocache_jobs{status=\"failed\"}", 1.0),
        ("memocache_jobs_delayed", 1.0),
        ("memocache_jobs_coalesced_waiting", 1.0),
        ("memocache_job_waiters", 0.0),
        ("memocache_jobs_submitted_total", 9.0),
        ("memocache_jobs_rejected_total", 1.0),
        ("memocache_jobs_finished_total{status=\"completed\"}", 3.0),
        ("memocache_jobs_finished_total{status=\"failed\"}", 1.0),
        ("memocache_jobs_finished_total{status=\"cancelled\"}", 1.0),
        ("memocache_job_retries_total", 2.0),
        ("memocache_job_dead_letters_total", 1.0),
        ("memocache_job_dead_letters_evicted_total", 0.0),
        ("memocache_job_lease_expirations_total", 1.0),
        ("memocache_job_memo_hits_total", 1.0),
        ("memocache_job_coalesced_total", 1.0),
        ("memocache_job_memo_store_failures_total", 0.0),
        ("memocache_job_memo_lookup_failures_total", 0.0),
        // A (2 s) and D (3 s); the memo hit E is not a latency.
        ("memocache_job_latency_seconds_count", 2.0),
        ("memocache_job_latency_seconds_sum", 5.0),
    ];
    assert_samples(&text, &expected);
    // The depth family, line by line: disjoint statuses sorted by label, no ids or hashes.
    assert_eq!(
        family(&text, "memocache_jobs"),
        [
            "# HELP memocache_jobs Jobs the queue holds, by status (queued: waiting, including \
             delayed retries and coalesced followers; processing: leased to a worker; failed: \
             in the dead letter list).",
            "# TYPE memocache_jobs gauge",
            "memocache_jobs{status=\"failed\"} 1",
            "memocache_jobs{status=\"processing\"} 1",
            "memocache_jobs{status=\"queued\"} 3",
        ]
    );
    assert_has_lines(
        &text,
        &[
            "# TYPE memocache_jobs_finished_total counter",
            "# TYPE memocache_job_retries_total counter",
            "# TYPE memocache_job_dead_letters_total counter",
            "# TYPE memocache_job_latency_seconds summary",
        ],
    );
    assert_eq!(
        (stats.queued, stats.processing, stats.dead_letters),
        (3, 1, 1)
    );

    // A late, older snapshot moves no counter backwards; gauges take the newest publish.
    let old = stats;
    registry.record_queue(&queue.stats()).unwrap();
    metrics.publish(&QueueStats::default());
    metrics.publish(&old);
    let text = registry.render_prometheus();
    assert_eq!(sample(&text, "memocache_jobs_submitted_total"), 9.0);
    assert_eq!(sample(&text, "memocache_jobs{status=\"queued\"}"), 3.0);
}

#[test]
fn callers_blocked_in_wait_are_published() {
    let (_clock, registry, metrics) = queue_metrics();
    let queue = JobQueue::builder().build().unwrap();
    let id = queue
        .submit(Job::new(JobType::Indexing, &b"x"[..]))
        .unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || queue.wait(id, 60 * SECOND))
        })
        .collect();
    while queue.stats().waiters < 2 {
        std::thread::yield_now();
    }
    metrics.publish(&queue.stats());
    assert_eq!(
        sample(&registry.render_prometheus(), "memocache_job_waiters"),
        2.0
    );

    let lease = queue.try_next(&worker()).unwrap();
    queue.complete(&lease, Vec::new().into()).unwrap();
    for waiter in waiters {
        assert!(waiter.join().unwrap().unwrap().status().is_terminal());
    }
    metrics.publish(&queue.stats());
    assert_eq!(
        sample(&registry.render_prometheus(), "memocache_job_waiters"),
        0.0
    );
}

#[test]
fn job_latency_percentiles_come_from_the_completion_hook() {
    let (clock, registry, metrics) = queue_metrics();
    let queue = JobQueue::builder()
        .clock(Arc::new(clock.clone()))
        .on_complete(metrics.completion_hook())
        .build()
        .unwrap();
    // 101 jobs submitted at t = 0; job i completes at t = i s: latencies 0, 1, ..., 100 s.
    for _ in 0..=100 {
        queue
            .submit(Job::new(JobType::Summarization, &b"text"[..]))
            .unwrap();
    }
    for i in 0..=100 {
        if i > 0 {
            clock.advance(SECOND);
        }
        let lease = queue.try_next(&worker()).unwrap();
        queue.complete(&lease, b"summary".to_vec().into()).unwrap();
    }
    let text = registry.render_prometheus();
    // numpy.percentile([0..=100], [50, 95, 99]) = 50, 95, 99; sum 5050.
    assert_eq!(
        family(&text, "memocache_job_latency_seconds"),
        [
            "# HELP memocache_job_latency_seconds Seconds from submit to completion of jobs run \
             by a worker or coalesced onto one (memo hits excluded).",
            "# TYPE memocache_job_latency_seconds summary",
            "memocache_job_latency_seconds{quantile=\"0.5\"} 50",
            "memocache_job_latency_seconds{quantile=\"0.95\"} 95",
            "memocache_job_latency_seconds{quantile=\"0.99\"} 99",
            "memocache_job_latency_seconds_sum 5050",
            "memocache_job_latency_seconds_count 101",
        ]
    );

    // The summary is over the registry's retention: 10 minutes later the window is empty and
    // the quantiles are NaN, while the sum and count keep everything since creation.
    clock.advance(601 * SECOND);
    let text = registry.render_prometheus();
    assert!(text.contains("memocache_job_latency_seconds{quantile=\"0.99\"} NaN\n"));
    assert_eq!(sample(&text, "memocache_job_latency_seconds_count"), 101.0);
}

#[test]
fn a_follower_is_timed_from_its_own_submit_and_the_hook_may_call_the_queue() {
    let (clock, registry, metrics) = queue_metrics();
    // The hook publishes the queue's stats on every completion: it runs outside the queue's
    // lock, so calling the queue from it does not deadlock.
    let handle: Arc<OnceLock<JobQueue>> = Arc::new(OnceLock::new());
    let hook = {
        let (handle, metrics) = (Arc::clone(&handle), metrics.clone());
        let observe = metrics.completion_hook();
        move |done: &JobCompletion| {
            observe(done);
            if let Some(queue) = handle.get() {
                metrics.publish(&queue.stats());
            }
        }
    };
    let queue = JobQueue::builder()
        .clock(Arc::new(clock.clone()))
        .on_complete(hook)
        .build()
        .unwrap();
    handle.set(queue.clone()).unwrap();

    let job = || Job::transcription(&audio(7), "de", &b"audio"[..]).unwrap();
    queue.submit(job()).unwrap();
    clock.advance(4 * SECOND);
    queue.submit(job()).unwrap();
    let lease = queue.try_next(&worker()).unwrap();
    clock.advance(6 * SECOND);
    queue.complete(&lease, b"hallo".to_vec().into()).unwrap();

    let text = registry.render_prometheus();
    // Leader 10 s, follower 6 s; both completed, published from inside the hook.
    assert_samples(
        &text,
        &[
            ("memocache_job_latency_seconds_count", 2.0),
            ("memocache_job_latency_seconds_sum", 16.0),
            ("memocache_jobs_finished_total{status=\"completed\"}", 2.0),
            ("memocache_jobs{status=\"queued\"}", 0.0),
        ],
    );
}

/// The `_sum` and `_count` series the crate's histograms write (the queue's latency
/// summary, a pipeline's duration summary) are refused at the host's call, whether it
/// registers them as any type or declares them, before the crate registers the histogram as
/// after, with the error naming the crate's histogram; the queue's registration then goes
/// through. Before the fix the host's call was taken, and `QueueMetrics::register` (and
/// `record_queue`, and a pipeline's build) failed later with that `NameCollision`, on a
/// registry it had every right to. `_bucket`, which a summary does not write, stays free.
#[test]
fn the_series_a_crate_histogram_writes_are_refused_at_the_hosts_call() {
    let registry = MetricsRegistry::new();
    let refuse_all = |registry: &MetricsRegistry| {
        for histogram in [
            "memocache_job_latency_seconds",
            "memocache_transcription_duration_seconds",
        ] {
            for suffix in ["_sum", "_count"] {
                let name = format!("{histogram}{suffix}");
                let collision = MetricError::NameCollision {
                    name: name.clone(),
                    histogram: histogram.to_owned(),
                    series: name.clone(),
                };
                assert_eq!(registry.counter(&name, "", &[]).unwrap_err(), collision);
                assert_eq!(registry.gauge(&name, "", &[]).unwrap_err(), collision);
                assert_eq!(registry.histogram(&name, "", &[]).unwrap_err(), collision);
                for kind in [
                    MetricType::Counter,
                    MetricType::Gauge,
                    MetricType::Histogram,
                ] {
                    let declared = registry.declare(&name, "", kind, &[]);
                    assert_eq!(declared, Err(collision.clone()), "{name} as a {kind}");
                }
                assert_eq!(registry.metric_type(&name), None, "{name}");
            }
        }
    };
    refuse_all(&registry);
    assert_eq!(registry.render_prometheus(), "");
    let bucket = "memocache_job_latency_seconds_bucket";
    registry.counter(bucket, "", &[]).unwrap();

    QueueMetrics::register(&registry).unwrap();
    registry.record_queue(&QueueStats::default()).unwrap();
    refuse_all(&registry);
    let text = registry.render_prometheus();
    assert_samples(
        &text,
        &[
            ("memocache_job_latency_seconds_count", 0.0),
            ("memocache_job_latency_seconds_sum", 0.0),
            (bucket, 0.0),
        ],
    );
}

/// A memo store that panics on every call.
#[derive(Debug)]
struct BrokenMemo;

impl memocache::MemoStore for BrokenMemo {
    fn lookup(&self, _: &CacheKey) -> Option<bytes::Bytes> {
        panic!("the memo store is down")
    }
    fn store(&self, _: CacheKey, _: bytes::Bytes) -> Result<(), memocache::job::MemoStoreError> {
        panic!("the memo store is down")
    }
}

#[test]
fn memo_store_failures_are_published() {
    let registry = MetricsRegistry::new();
    let metrics = QueueMetrics::register(&registry).unwrap();
    let queue = JobQueue::builder()
        .memo_store(Arc::new(BrokenMemo))
        .build()
        .unwrap();
    // Two transcriptions: each submit's lookup panics (the job is queued), and the first's
    // result cannot be stored.
    queue
        .submit(Job::transcription(&audio(1), "en", &b"audio"[..]).unwrap())
        .unwrap();
    queue
        .submit(Job::transcription(&audio(2), "en", &b"audio"[..]).unwrap())
        .unwrap();
    let lease = queue.try_next(&worker()).unwrap();
    queue.complete(&lease, b"text".to_vec().into()).unwrap();

    metrics.publish(&queue.stats());
    let text = registry.render_prometheus();
    assert_eq!(
        sample(&text, "memocache_job_memo_lookup_failures_total"),
        2.0
    );
    assert_eq!(
        sample(&text, "memocache_job_memo_store_failures_total"),
        1.0
    );
}

/// Registration finds what a host registered under the queue's names and keeps it: no name
/// a host can take makes it fail (the series its latency summary writes are refused to the
/// host: see above), and the series a host registered in one of its families keeps its
/// value beside the queue's. (That a registration failing half way takes back what it
/// registered is tested in `metrics::wiring`'s unit tests, where a batch can be made to
/// fail.)
#[test]
fn a_registration_keeps_what_the_host_registered_under_its_names() {
    let registry = MetricsRegistry::new();
    registry
        .gauge("memocache_jobs", "Jobs.", &[("status", "queued")])
        .unwrap()
        .set(7.0);
    assert!(matches!(
        registry.counter("memocache_job_latency_seconds_count", "Taken.", &[]),
        Err(MetricError::NameCollision { .. })
    ));
    QueueMetrics::register(&registry).unwrap();
    CacheMetrics::register(&registry).unwrap();
    let text = registry.render_prometheus();
    assert_samples(
        &text,
        &[
            ("memocache_jobs{status=\"queued\"}", 7.0),
            ("memocache_jobs{status=\"processing\"}", 0.0),
            ("memocache_jobs_submitted_total", 0.0),
        ],
    );
}

/// A host's declaration of one of the crate's own families is checked against the crate's
/// table, not only against what the registry holds: declared as another type or with other
/// label names before the crate registers it, it is refused at once, the error naming the
/// crate's labels, and the crate's registration then goes through; after the crate
/// registers it, it is refused the same way. Before the fix a declaration made first was
/// taken, and the crate's registration failed later, on a registry it had every right to
/// (`UndeclaredLabel`: `memocache_jobs` registered with `status` in a family declared with
/// `state`).
#[test]
fn a_crate_family_declared_otherwise_is_refused_before_and_after_the_crate_registers_it() {
    let registry = registry_on(&ManualClock::new());
    let conflict = |metric: &str, kind, labels: &[&str], declared_kind, declared: &[&str]| {
        let owned = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect();
        MetricError::CrateFamilyConflict {
            metric: metric.to_owned(),
            kind,
            labels: owned(labels),
            declared_kind,
            declared: owned(declared),
        }
    };
    let state = || registry.declare("memocache_jobs", "", MetricType::Gauge, &["state"]);
    let jobs_conflict = conflict(
        "memocache_jobs",
        MetricType::Gauge,
        &["status"],
        MetricType::Gauge,
        &["state"],
    );
    assert_eq!(state().unwrap_err(), jobs_conflict);
    assert_eq!(
        jobs_conflict.to_string(),
        "metric `memocache_jobs` is one of memocache's own families, a gauge with the labels \
         (`status`): it cannot be declared or registered as a gauge with the labels (`state`)"
    );
    // Another type with the crate's labels; fewer labels; a pipeline's family, before any
    // pipeline registers it.
    let evictions = "memocache_cache_evictions_total";
    assert_eq!(
        registry
            .declare(evictions, "", MetricType::Gauge, &["cause"])
            .unwrap_err(),
        conflict(
            evictions,
            MetricType::Counter,
            &["cause"],
            MetricType::Gauge,
            &["cause"]
        )
    );
    let finished = "memocache_jobs_finished_total";
    assert_eq!(
        registry
            .declare(finished, "", MetricType::Counter, &[])
            .unwrap_err(),
        conflict(
            finished,
            MetricType::Counter,
            &["status"],
            MetricType::Counter,
            &[]
        )
    );
    let served = "memocache_transcriptions_total";
    assert_eq!(
        registry
            .declare(served, "", MetricType::Counter, &["route"])
            .unwrap_err(),
        conflict(
            served,
            MetricType::Counter,
            &["source"],
            MetricType::Counter,
            &["route"]
        )
    );
    assert_eq!(registry.render_prometheus(), "", "nothing was declared");

    let queue = QueueMetrics::register(&registry).expect("the crate registers its families");
    CacheMetrics::register(&registry).expect("the crate registers its families");
    queue.publish(&QueueStats::default());
    assert!(
        registry
            .render_prometheus()
            .contains("memocache_jobs{status=\"queued\"} 0\n")
    );
    assert_eq!(state().unwrap_err(), jobs_conflict);
}

/// Bug: a host that registered one of the crate's family names through the plain calls
/// (`counter`, `gauge`, `histogram`), before the crate registered it, got a family of its
/// own, with any labels: `memocache_jobs` as a counter made the queue's registration fail
/// later, and a gauge with `state` series got the queue's `status` series beside them, and
/// alert rules on `state` taken. The name is the crate's family whoever registers it first:
/// as another type it is refused (`CrateFamilyConflict`, naming the crate's type and labels),
/// with a label the family does not carry it is refused as it is once the crate registered
/// it (`UndeclaredLabel`), registering nothing either way; one that fits is taken, with the
/// crate's help and labels, and the crate's registration takes it as its own.
#[test]
fn a_crate_family_registered_by_the_host_first_is_held_to_the_crate_table() {
    let clock = ManualClock::new();
    let registry = registry_on(&clock);
    let undeclared = |metric: &str, label: &str, labels: &[&str]| MetricError::UndeclaredLabel {
        metric: metric.into(),
        label: label.into(),
        labels: labels.iter().map(|&l| l.to_owned()).collect(),
    };
    let as_counter = registry
        .counter("memocache_jobs", "", &[("status", "queued")])
        .unwrap_err();
    assert_eq!(
        as_counter,
        MetricError::CrateFamilyConflict {
            metric: "memocache_jobs".into(),
            kind: MetricType::Gauge,
            labels: vec!["status".into()],
            declared_kind: MetricType::Counter,
            declared: vec!["status".into()],
        }
    );
    assert_eq!(
        as_counter.to_string(),
        "metric `memocache_jobs` is one of memocache's own families, a gauge with the labels \
         (`status`): it cannot be declared or registered as a counter with the labels (`status`)"
    );
    assert_eq!(
        registry
            .gauge("memocache_jobs", "", &[("state", "queued")])
            .unwrap_err(),
        undeclared("memocache_jobs", "state", &["status"])
    );
    // A pipeline's family, with no pipeline anywhere.
    let served = "memocache_transcriptions_total";
    assert!(matches!(
        registry.histogram(served, "", &[]),
        Err(MetricError::CrateFamilyConflict { .. })
    ));
    assert_eq!(
        registry
            .counter(served, "", &[("route", "cache")])
            .unwrap_err(),
        undeclared(served, "route", &["source"])
    );
    assert_eq!(registry.render_prometheus(), "", "nothing was registered");

    // As the crate registers them: taken, and held to the crate's labels from then on.
    let queued = registry
        .gauge(
            "memocache_jobs",
            "The host's words.",
            &[("status", "queued")],
        )
        .expect("the crate's type and a label of its");
    let hits = registry
        .counter("memocache_cache_hits_total", "The host's words.", &[])
        .expect("the crate's type and labels");
    assert_eq!(
        registry
            .gauge("memocache_jobs", "", &[("state", "queued")])
            .unwrap_err(),
        undeclared("memocache_jobs", "state", &["status"])
    );
    let text = registry.render_prometheus();
    assert!(
        text.contains("# HELP memocache_cache_hits_total Cache reads that found a live value.\n"),
        "{text}"
    );
    assert!(!text.contains("The host's words."), "{text}");

    let queue = QueueMetrics::register(&registry).expect("the families are the queue's");
    let cache = CacheMetrics::register(&registry).expect("the families are the cache's");
    let mut stats = QueueStats::default();
    stats.queued = 3;
    queue.publish(&stats);
    let engine = cache_on(&clock);
    engine.insert(key(1), "x").unwrap();
    engine.get(&key(1));
    cache.publish(&engine.stats());
    // One series each, the host's handles and the crate's.
    assert_eq!((queued.get(), hits.get()), (3.0, 1));
    let text = registry.render_prometheus();
    assert_eq!(family(&text, "memocache_jobs").len(), 5, "{text}");
}
