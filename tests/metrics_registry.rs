//! `MetricsRegistry`: registration rules, handles, aggregation, the Prometheus text format line
//! by line, and concurrent recording.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use memocache::metrics::wiring::QueueMetrics;
use memocache::{
    Aggregation, ManualClock, MetricError, MetricSeries, MetricType, MetricValue, MetricsRegistry,
    Percentile, SharedClock, Tags,
};

const SECOND: Duration = Duration::from_secs(1);

fn registry() -> (MetricsRegistry, ManualClock) {
    let clock = ManualClock::new();
    let r = MetricsRegistry::with_clock(clock.clone(), 60 * SECOND);
    (r, clock)
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn metrics_take_a_clock_as_the_cache_and_queue_builders_do() {
    // By value: the registry and a series read the clock the host keeps advancing.
    let (r, clock) = registry();
    let latency = r.histogram("latency", "", &[]).unwrap();
    latency.observe(2.0).unwrap();
    let median =
        |h: &memocache::metrics::Histogram| h.percentiles(&[Percentile::p50()], 60 * SECOND);
    assert_eq!(median(&latency), [2.0]);
    clock.advance(61 * SECOND);
    assert_eq!(
        median(&latency),
        [0.0],
        "the sample aged out on the clock given by value"
    );
    let mut series = MetricSeries::with_clock("latency", 60 * SECOND, clock.clone());
    series
        .add_value(MetricValue::histogram(1.0), Tags::default())
        .unwrap();
    clock.advance(61 * SECOND);
    assert_eq!(series.get_average(60 * SECOND), 0.0);

    // Shared: kept as given, so the accessor hands back the very clock.
    let shared: SharedClock = Arc::new(clock);
    let r = MetricsRegistry::with_clock(Arc::clone(&shared), 60 * SECOND);
    assert!(Arc::ptr_eq(r.clock(), &shared));
}

#[test]
fn handles_share_storage_and_names_keep_their_type() {
    let (r, _clock) = registry();
    let a = r.counter("hits_total", "Hits.", &[]).unwrap();
    let b = r.counter("hits_total", "ignored help", &[]).unwrap();
    a.inc();
    b.inc_by(4);
    assert_eq!(a.get(), 5);
    // Label order does not matter: same series.
    let x = r
        .counter("evictions_total", "", &[("cause", "size"), ("shard", "1")])
        .unwrap();
    let y = r
        .counter("evictions_total", "", &[("shard", "1"), ("cause", "size")])
        .unwrap();
    x.inc();
    assert_eq!(y.get(), 1);
    assert_eq!(
        r.gauge("hits_total", "", &[]).unwrap_err(),
        MetricError::TypeConflict {
            name: "hits_total".into(),
            registered: MetricType::Counter,
            requested: MetricType::Gauge,
        }
    );
    assert_eq!(r.metric_type("hits_total"), Some(MetricType::Counter));
    assert_eq!(r.metric_type("nope"), None);
}

#[test]
fn retention_is_the_one_given_or_the_default() {
    let (r, _clock) = registry();
    assert_eq!(r.retention(), 60 * SECOND);
    assert_eq!(
        MetricsRegistry::new().retention(),
        MetricsRegistry::DEFAULT_RETENTION
    );
}

#[test]
fn invalid_names_and_labels_register_nothing() {
    let (r, _clock) = registry();
    assert!(matches!(
        r.counter("bad-name", "", &[]),
        Err(MetricError::InvalidMetricName(_))
    ));
    assert!(matches!(
        r.gauge("ok", "", &[("bad-label", "x")]),
        Err(MetricError::InvalidLabelName(_))
    ));
    assert!(matches!(
        r.histogram("ok", "", &[("quantile", "x")]),
        Err(MetricError::InvalidLabelName(_))
    ));
    assert_eq!(
        r.counter("ok", "", &[("a", "1"), ("a", "2")]).unwrap_err(),
        MetricError::DuplicateLabel("a".into())
    );
    assert_eq!(r.render_prometheus(), "");
}

/// Bug: a label with an empty value made a series of its own, rendered beside the series
/// without that label (`requests_total{path=""} 2` and `requests_total 1`). Prometheus ingests
/// a label with an empty value as no label at all (prometheus/docs#548), so the scrape held
/// one series twice. An empty value now names the series without that label, for
/// registration and for aggregation (an alert rule's labels) alike.
#[test]
fn an_empty_label_value_is_the_series_without_that_label() {
    let (r, _clock) = registry();
    let bare = r.counter("requests_total", "", &[]).unwrap();
    let empty = r.counter("requests_total", "", &[("path", "")]).unwrap();
    bare.inc();
    empty.inc_by(2);
    assert_eq!(bare.get(), 3, "one series");
    r.gauge("temp", "", &[("room", "a"), ("floor", "")])
        .unwrap()
        .set(20.0);
    assert_eq!(r.gauge("temp", "", &[("room", "a")]).unwrap().get(), 20.0);
    // Every pair given is still checked: a repeated name, even with an empty value.
    assert_eq!(
        r.counter("requests_total", "", &[("path", ""), ("path", "/")])
            .unwrap_err(),
        MetricError::DuplicateLabel("path".into())
    );
    assert!(matches!(
        r.counter("requests_total", "", &[("bad-name", "")]),
        Err(MetricError::InvalidLabelName(_))
    ));
    let last =
        |name, labels: &[(&str, &str)]| r.aggregate(name, &tags(labels), Aggregation::Last, SECOND);
    assert_eq!(last("requests_total", &[("path", "")]), Some(3.0));
    assert_eq!(last("temp", &[("floor", ""), ("room", "a")]), Some(20.0));
    assert_eq!(last("temp", &[("floor", "")]), None, "other labels");
    let text = r.render_prometheus();
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(samples, ["requests_total 3", "temp{room=\"a\"} 20"]);
}

/// Label values are written as given apart from the three escapes (`\\`, `\"`, `\n`):
/// non-ASCII text and other control characters pass through unchanged, as the exposition
/// format (UTF-8) allows. Label names stay ASCII.
#[test]
fn non_ascii_label_values_pass_through_and_label_names_stay_ascii() {
    let (r, _clock) = registry();
    r.counter(
        "files_total",
        "Fichiers traités.",
        &[("name", "café\tçà 日本")],
    )
    .unwrap()
    .inc();
    assert!(matches!(
        r.counter("files_total", "", &[("nom_é", "x")]),
        Err(MetricError::InvalidLabelName(_))
    ));
    assert_eq!(
        r.render_prometheus(),
        "# HELP files_total Fichiers traités.\n# TYPE files_total counter\n\
         files_total{name=\"café\tçà 日本\"} 1\n"
    );
}

/// A family with no help has no `# HELP` line, as the Prometheus clients write it (the
/// Rust and Go clients write none for an empty help). It rendered `# HELP name ` with a
/// trailing space, a line that says nothing and ends in whitespace the format ignores.
#[test]
fn a_family_without_help_has_no_help_line() {
    let (r, _clock) = registry();
    r.counter("loads_total", "", &[]).unwrap().inc();
    r.gauge("depth", "Jobs waiting.", &[]).unwrap();
    assert_eq!(
        r.render_prometheus(),
        "# HELP depth Jobs waiting.\n# TYPE depth gauge\ndepth 0\n\
         # TYPE loads_total counter\nloads_total 1\n"
    );
}

#[test]
fn counters_advance_monotonically() {
    let (r, _clock) = registry();
    let c = r.counter("loads_total", "", &[]).unwrap();
    c.advance_to(10);
    c.advance_to(7); // an older snapshot published late: ignored
    assert_eq!(c.get(), 10);
    c.advance_to(12);
    assert_eq!(c.get(), 12);
}

/// Bug: a histogram `h` renders `h_sum` and `h_count` lines, and nothing stopped another
/// metric from being registered under one of those names, so the exposition held the same
/// series name twice (as a counter and as part of a summary), which scrapers reject. Either
/// order of registration is refused now, and nothing is registered.
#[test]
fn names_a_histogram_renders_cannot_be_registered_as_other_metrics() {
    let (r, _clock) = registry();
    r.histogram("latency_seconds", "", &[]).unwrap();
    for name in ["latency_seconds_count", "latency_seconds_sum"] {
        assert_eq!(
            r.counter(name, "", &[]).unwrap_err(),
            MetricError::NameCollision {
                name: name.to_owned(),
                histogram: "latency_seconds".to_owned(),
                series: name.to_owned(),
            }
        );
    }
    r.gauge("queue_sum", "", &[]).unwrap();
    assert_eq!(
        r.histogram("queue", "", &[]).unwrap_err(),
        MetricError::NameCollision {
            name: "queue".to_owned(),
            histogram: "queue".to_owned(),
            series: "queue_sum".to_owned(),
        }
    );
    assert_eq!(r.metric_type("queue"), None);
    assert_eq!(r.metric_type("latency_seconds_count"), None);
    // Unrelated suffixes, and a `_count` of a non-histogram, are fine.
    r.counter("requests", "", &[]).unwrap();
    r.counter("requests_count", "", &[]).unwrap();
    r.histogram("latency_seconds", "", &[("path", "/")])
        .unwrap();
}

/// Bug: `inc_by` was a wrapping `fetch_add`, so a counter near `u64::MAX` wrapped to a small
/// number — a counter going backwards, which Prometheus reads as a reset. It saturates now.
#[test]
fn counters_saturate_instead_of_wrapping_backwards() {
    let (r, _clock) = registry();
    let c = r.counter("bytes_total", "", &[]).unwrap();
    c.inc_by(u64::MAX - 1);
    c.inc_by(5);
    assert_eq!(c.get(), u64::MAX);
    c.inc();
    assert_eq!(c.get(), u64::MAX);
    assert!(
        r.render_prometheus()
            .contains(&format!("bytes_total {}\n", u64::MAX))
    );
}

#[test]
fn aggregate_reads_each_kind() {
    let (r, clock) = registry();
    let c = r.counter("c_total", "", &[]).unwrap();
    let g = r.gauge("g", "", &[("k", "v")]).unwrap();
    let h = r.histogram("h_seconds", "", &[]).unwrap();
    let none = Tags::new();
    let kv = tags(&[("k", "v")]);
    let w = 10 * SECOND;
    c.inc_by(3);
    assert_eq!(
        r.aggregate("c_total", &none, Aggregation::Last, w),
        Some(3.0)
    );
    assert_eq!(r.aggregate("c_total", &none, Aggregation::Average, w), None);
    assert_eq!(r.aggregate("g", &kv, Aggregation::Last, w), Some(0.0));
    assert_eq!(r.aggregate("g", &kv, Aggregation::Average, w), None); // never set
    assert_eq!(r.aggregate("g", &none, Aggregation::Last, w), None); // other labels
    g.set(1.0);
    clock.advance(SECOND);
    g.add(2.0);
    assert_eq!(g.get(), 3.0);
    clock.advance(SECOND);
    g.set(f64::NAN); // exposed, not in the history, and no data
    assert_eq!(r.aggregate("g", &kv, Aggregation::Last, w), None);
    assert_eq!(r.aggregate("g", &kv, Aggregation::Average, w), Some(2.0));
    let p100 = Aggregation::Percentile(Percentile::new(100.0).unwrap());
    assert_eq!(r.aggregate("g", &kv, p100, w), Some(3.0));
    assert_eq!(
        r.aggregate("g", &kv, Aggregation::Average, 2 * SECOND),
        Some(3.0)
    );
    for v in [0.1, 0.2, 0.3] {
        h.observe(v).unwrap();
    }
    assert!(matches!(
        h.observe(f64::NAN),
        Err(MetricError::NonFinite { .. })
    ));
    assert_eq!(h.count(), 3);
    // In the order asked.
    let max = Percentile::new(100.0).unwrap();
    assert_eq!(h.percentiles(&[max, Percentile::P50], w), [0.3, 0.2]);
    assert_eq!(
        r.aggregate("h_seconds", &none, Aggregation::Last, w),
        Some(0.3)
    );
    assert_eq!(
        r.aggregate(
            "h_seconds",
            &none,
            Aggregation::Percentile(Percentile::P50),
            w
        ),
        Some(0.2)
    );
    clock.advance(w);
    assert_eq!(r.aggregate("h_seconds", &none, Aggregation::Last, w), None);
    assert_eq!(h.percentiles(&[Percentile::P50], w), [0.0]);
}

/// NaN is "no data" to `aggregate` for every kind and aggregation, as its docs and the alert
/// module's promise: never `Some(NaN)`. A gauge set to NaN (the wiring's hit ratio before the
/// first read) gave `Some(NaN)` for `Last`, and finite values whose percentile or average
/// overflows to NaN gave `Some(NaN)` for those; ±∞ stays a value.
#[test]
fn nan_is_no_data_for_every_kind_and_aggregation() {
    let (r, _clock) = registry();
    let none = Tags::new();
    let w = 10 * SECOND;
    let p0 = Aggregation::Percentile(Percentile::new(0.0).unwrap());
    let p50 = Aggregation::Percentile(Percentile::P50);

    let g = r.gauge("level", "", &[]).unwrap();
    g.set(f64::NAN);
    assert_eq!(r.aggregate("level", &none, Aggregation::Last, w), None);
    g.set(f64::INFINITY);
    assert_eq!(
        r.aggregate("level", &none, Aggregation::Last, w),
        Some(f64::INFINITY)
    );
    g.add(f64::NEG_INFINITY); // +∞ − ∞
    assert!(g.get().is_nan());
    assert_eq!(r.aggregate("level", &none, Aggregation::Last, w), None);

    // The 0th percentile of [−1e308, 1e308] interpolates with a difference past f64::MAX:
    // NaN, as numpy gives; its median is −∞, a value.
    let spread = r.gauge("spread", "", &[]).unwrap();
    let wide = r.histogram("wide", "", &[]).unwrap();
    for v in [-1e308, 1e308] {
        spread.set(v);
        wide.observe(v).unwrap();
    }
    for name in ["spread", "wide"] {
        assert_eq!(r.aggregate(name, &none, p0, w), None, "{name}");
        assert_eq!(
            r.aggregate(name, &none, p50, w),
            Some(f64::NEG_INFINITY),
            "{name}"
        );
    }

    // Sixteen values summed pairwise: the first accumulator overflows to +∞ (MAX + MAX), the
    // second to −∞, and their sum is NaN.
    let mut sixteen = [0.0; 16];
    sixteen[0] = f64::MAX;
    sixteen[8] = f64::MAX;
    sixteen[1] = -f64::MAX;
    sixteen[9] = -f64::MAX;
    let swing = r.gauge("swing", "", &[]).unwrap();
    let swings = r.histogram("swings", "", &[]).unwrap();
    for v in sixteen {
        swing.set(v);
        swings.observe(v).unwrap();
    }
    for name in ["swing", "swings"] {
        assert_eq!(
            r.aggregate(name, &none, Aggregation::Average, w),
            None,
            "{name}"
        );
    }
}

#[test]
fn prometheus_text_line_by_line() {
    // Names of the host's own: the crate's families render the crate's help whoever
    // registers them (see `metrics_wiring.rs`).
    let (r, clock) = registry();
    let hits = r
        .counter(
            "app_cache_hits_total",
            "Cache lookups that found a value.",
            &[],
        )
        .unwrap();
    hits.inc_by(42);
    for (cause, n) in [("size", 3), ("expired", 1)] {
        r.counter(
            "app_cache_evictions_total",
            "Entries evicted, by cause.",
            &[("cause", cause)],
        )
        .unwrap()
        .inc_by(n);
    }
    r.gauge("app_cache_size_bytes", "Bytes charged.", &[])
        .unwrap()
        .set(1_048_576.0);
    r.gauge(
        "weird",
        "Help with \\ and\nnewline.",
        &[("path", "C:\\x \"q\"\nz")],
    )
    .unwrap()
    .set(f64::INFINITY);
    let latency = r
        .histogram(
            "memocache_job_duration_seconds",
            "Job run time.",
            &[("type", "transcription")],
        )
        .unwrap();
    for i in 1..=100 {
        clock.advance(Duration::from_millis(10));
        latency.observe(f64::from(i) / 100.0).unwrap();
    }
    r.histogram("memocache_idle_seconds", "Never observed.", &[])
        .unwrap();

    let text = r.render_prometheus();
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        "# HELP app_cache_evictions_total Entries evicted, by cause.",
        "# TYPE app_cache_evictions_total counter",
        "app_cache_evictions_total{cause=\"expired\"} 1",
        "app_cache_evictions_total{cause=\"size\"} 3",
        "# HELP app_cache_hits_total Cache lookups that found a value.",
        "# TYPE app_cache_hits_total counter",
        "app_cache_hits_total 42",
        "# HELP app_cache_size_bytes Bytes charged.",
        "# TYPE app_cache_size_bytes gauge",
        "app_cache_size_bytes 1048576",
        "# HELP memocache_idle_seconds Never observed.",
        "# TYPE memocache_idle_seconds summary",
        "memocache_idle_seconds{quantile=\"0.5\"} NaN",
        "memocache_idle_seconds{quantile=\"0.95\"} NaN",
        "memocache_idle_seconds{quantile=\"0.99\"} NaN",
        "memocache_idle_seconds_sum 0",
        "memocache_idle_seconds_count 0",
        "# HELP memocache_job_duration_seconds Job run time.",
        "# TYPE memocache_job_duration_seconds summary",
        // numpy.percentile(np.arange(1, 101) / 100, [50, 95, 99]), to the last bit.
        "memocache_job_duration_seconds{type=\"transcription\",quantile=\"0.5\"} 0.505",
        "memocache_job_duration_seconds{type=\"transcription\",quantile=\"0.95\"} 0.9504999999999999",
        "memocache_job_duration_seconds{type=\"transcription\",quantile=\"0.99\"} 0.9901000000000001",
        "memocache_job_duration_seconds_sum{type=\"transcription\"} 50.5",
        "memocache_job_duration_seconds_count{type=\"transcription\"} 100",
        "# HELP weird Help with \\\\ and\\nnewline.",
        "# TYPE weird gauge",
        "weird{path=\"C:\\\\x \\\"q\\\"\\nz\"} +Inf",
    ];
    for (i, (got, want)) in lines.iter().zip(expected).enumerate() {
        assert_eq!(*got, want, "line {}", i + 1);
    }
    assert_eq!(lines.len(), expected.len());
    assert!(text.ends_with('\n'));
    // The quantiles are the exact windowed percentiles; once the window is empty they are NaN
    // while _sum and _count stay cumulative.
    clock.advance(61 * SECOND);
    let text = r.render_prometheus();
    assert!(text.contains(
        "memocache_job_duration_seconds{type=\"transcription\",quantile=\"0.99\"} NaN\n"
    ));
    assert!(text.contains("memocache_job_duration_seconds_count{type=\"transcription\"} 100\n"));
}

#[test]
fn concurrent_recording_loses_nothing() {
    let (r, _clock) = registry();
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 10_000;
    thread::scope(|s| {
        for t in 0..THREADS {
            let r = r.clone();
            s.spawn(move || {
                let label = if t % 2 == 0 { "even" } else { "odd" };
                for i in 0..PER_THREAD {
                    // Registering from every thread, and recording through fresh handles.
                    r.counter("ops_total", "", &[]).unwrap().inc();
                    r.counter("ops_by_parity_total", "", &[("parity", label)])
                        .unwrap()
                        .inc();
                    r.gauge("level", "", &[]).unwrap().add(1.0);
                    r.histogram("obs", "", &[])
                        .unwrap()
                        .observe(i as f64)
                        .unwrap();
                    if i % 2_500 == 0 {
                        // Rendering concurrently with writers must not deadlock or tear.
                        assert!(r.render_prometheus().contains("# TYPE ops_total counter"));
                    }
                }
            });
        }
    });
    let total = THREADS as u64 * PER_THREAD;
    let none = Tags::new();
    let last = |name| r.aggregate(name, &none, Aggregation::Last, SECOND);
    assert_eq!(last("ops_total"), Some(total as f64));
    let even = r.aggregate(
        "ops_by_parity_total",
        &tags(&[("parity", "even")]),
        Aggregation::Last,
        SECOND,
    );
    assert_eq!(even, Some((total / 2) as f64));
    assert_eq!(last("level"), Some(total as f64));
    let h = r.histogram("obs", "", &[]).unwrap();
    assert_eq!(h.count(), total);
    let expected_sum = THREADS as f64 * (PER_THREAD * (PER_THREAD - 1) / 2) as f64;
    assert_eq!(h.sum(), expected_sum);
}

/// Registrations racing on one name from several threads: exactly one type wins, and every
/// other thread is told which (a `TypeConflict`), never a second family. A batch
/// (`QueueMetrics::register`) racing a registration of a series its latency summary writes:
/// the host's is refused whichever comes first (the name is the crate's histogram's before
/// the crate registers it), the batch goes through, and a render running meanwhile sees the
/// batch whole or not at all. (A failed batch leaving none of its names behind is tested in
/// `metrics::wiring`'s unit tests: no name a host can take makes this batch fail.)
#[test]
fn racing_registrations_have_one_winner_and_a_batch_is_seen_whole_or_not_at_all() {
    const LATENCY_COUNT: &str = "memocache_job_latency_seconds_count";
    for round in 0..100 {
        let (r, _clock) = registry();
        let start = Barrier::new(4);
        let (counter, gauge, batch, taken) = thread::scope(|s| {
            let counter = s.spawn(|| {
                start.wait();
                r.counter("x", "", &[]).map(drop)
            });
            let gauge = s.spawn(|| {
                start.wait();
                r.gauge("x", "", &[("k", "v")]).map(drop)
            });
            let batch = s.spawn(|| {
                start.wait();
                QueueMetrics::register(&r).map(drop)
            });
            start.wait();
            let taken = r.counter(LATENCY_COUNT, "", &[]).map(drop);
            for _ in 0..20 {
                let text = r.render_prometheus();
                // The batch registers the latency summary last: its first family without its
                // last one would be a batch seen half done.
                let first = text.contains("# TYPE memocache_jobs gauge");
                let last = text.contains("# TYPE memocache_job_latency_seconds summary");
                assert_eq!(first, last, "round {round}: a batch seen half done");
            }
            let join = |h: thread::ScopedJoinHandle<'_, _>| h.join().unwrap();
            (join(counter), join(gauge), join(batch), taken)
        });
        assert!(counter.is_ok() != gauge.is_ok(), "round {round}");
        let winner = r.metric_type("x").unwrap();
        let loser = counter.err().or(gauge.err()).unwrap();
        assert!(
            matches!(loser, MetricError::TypeConflict { registered, .. } if registered == winner),
            "round {round}: {loser}"
        );
        assert!(batch.is_ok(), "round {round}: {batch:?}");
        assert!(
            matches!(&taken, Err(MetricError::NameCollision { histogram, .. })
                if histogram == "memocache_job_latency_seconds"),
            "round {round}: {taken:?}"
        );
        assert_eq!(r.metric_type(LATENCY_COUNT), None);
    }
}

/// Bug: a series, once registered, stayed for the registry's life, history and all, and
/// every alert rule on its name read it at each evaluation: a host labelling a gauge by file
/// or request grew the registry, and each evaluation's work, without bound. A removed
/// series is no longer rendered nor read, its firing alert resolves, and asking for it again
/// starts a new one.
#[test]
fn a_removed_series_is_gone_from_rendering_reading_and_alerts() {
    use memocache::metrics::AlertTransition;
    use memocache::{AlertEvaluator, AlertRule, Severity, Threshold};

    let (r, clock) = registry();
    let mut alerts = AlertEvaluator::new(r.clone());
    let rule = AlertRule::new(
        "stuck",
        "file_progress",
        Threshold::greater_than(0.5).unwrap(),
        Severity::Warning,
        SECOND,
    )
    .with_aggregation(Aggregation::Last);
    alerts.add_rule(rule).unwrap();
    for file in 0..1000 {
        let label = format!("{file}.wav");
        let labels = [("file", label.as_str())];
        r.gauge("file_progress", "", &labels).unwrap().set(1.0);
        assert_eq!(alerts.evaluate().len(), 1, "fires for {label}");
        assert!(r.remove("file_progress", &labels).unwrap());
        let resolved = alerts.evaluate();
        assert_eq!(resolved.len(), 1, "resolves once {label} is removed");
        assert_eq!(resolved[0].transition, AlertTransition::Resolved);
        clock.advance(SECOND);
    }
    assert!(!r.render_prometheus().contains(".wav"), "no series left");
    assert_eq!(
        r.metric_type("file_progress"),
        Some(MetricType::Gauge),
        "the family stays"
    );

    let old = r
        .counter("uploads_total", "", &[("file", "a"), ("tier", "")])
        .unwrap();
    old.inc_by(7);
    assert!(
        r.remove("uploads_total", &[("file", "a")]).unwrap(),
        "an empty label is none"
    );
    assert!(
        !r.remove("uploads_total", &[("file", "a")]).unwrap(),
        "already removed"
    );
    assert!(!r.remove("never_registered", &[]).unwrap());
    old.inc();
    let new = r.counter("uploads_total", "", &[("file", "a")]).unwrap();
    assert_eq!(new.get(), 0, "asked for again, the series starts anew");
    assert!(
        !r.render_prometheus()
            .contains("uploads_total{file=\"a\"} 8")
    );

    assert!(matches!(
        r.remove("bad name", &[]),
        Err(MetricError::InvalidMetricName(_))
    ));
    let queue = memocache::JobQueue::builder().build().unwrap();
    QueueMetrics::register(&r).unwrap().publish(&queue.stats());
    assert!(matches!(
        r.remove("memocache_jobs", &[("status", "queued")]),
        Err(MetricError::CrateSeries(name)) if name == "memocache_jobs"
    ));
    assert!(
        r.render_prometheus()
            .contains("memocache_jobs{status=\"queued\"}")
    );
}
