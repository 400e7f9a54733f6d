//! The cache publishing into a registry: every statistic under its Prometheus name, and an
//! alert on the published hit ratio.

use std::sync::Arc;
use std::time::Duration;

use memocache::metrics::wiring::CacheMetrics;
use memocache::{
    Aggregation, AlertEvaluator, AlertRule, Cache, CacheKey, ManualClock, MemoryNotifier,
    MetricError, MetricsRegistry, Severity, Tags, Threshold, Ttl,
};

const SECOND: Duration = Duration::from_secs(1);

fn key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "t").unwrap()
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
    let registry = MetricsRegistry::with_clock(Arc::new(clock.clone()), 600 * SECOND);

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
    for (series, want) in expected {
        assert_eq!(sample(&text, series), want, "{series}");
    }
    assert_eq!(stats.entries, cache.len() as u64);
    assert_eq!(stats.bytes, cache.size_bytes());
    for family in [
        "# TYPE memocache_cache_hits_total counter",
        "# TYPE memocache_cache_evictions_total counter",
        "# TYPE memocache_cache_size_bytes gauge",
        "# TYPE memocache_cache_hit_ratio gauge",
    ] {
        assert!(text.lines().any(|l| l == family), "{family}");
    }

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

#[test]
fn a_conflicting_name_is_reported() {
    let registry = MetricsRegistry::new();
    registry
        .gauge("memocache_cache_hits_total", "taken", &[])
        .unwrap();
    assert!(matches!(
        CacheMetrics::register(&registry),
        Err(MetricError::TypeConflict { .. })
    ));
}

#[test]
fn an_alert_on_the_published_hit_ratio() {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .unwrap();
    let registry = MetricsRegistry::with_clock(Arc::new(clock.clone()), 600 * SECOND);
    let metrics = CacheMetrics::register(&registry).unwrap();
    let mut alerts = AlertEvaluator::new(registry.clone());
    let pager = MemoryNotifier::new();
    alerts.add_channel("pager", Arc::new(pager.clone()));
    alerts.add_rule(
        AlertRule::new(
            "cache hit ratio low",
            "memocache_cache_hit_ratio",
            Threshold::less_than(0.5).unwrap(),
            Severity::Warning,
            60 * SECOND,
        )
        .with_pending_for(30 * SECOND)
        .with_channel("pager"),
    );
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
