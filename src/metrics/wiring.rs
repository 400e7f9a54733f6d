//! Adapters publishing the cache's statistics into a [`MetricsRegistry`].
//!
//! # Design
//!
//! The cache counts with its own striped atomics ([`CacheStats`]) and knows nothing of metrics;
//! an adapter copies a snapshot into registry metrics when the host asks, typically right before
//! rendering `/metrics` and before each alert evaluation. Publishing is pull-based, so the cache's
//! hot paths pay nothing for metrics.
//!
//! The cache's counters are cumulative, so they are mirrored with [`Counter::advance_to`], which
//! keeps each exposed counter monotonic even if two threads publish snapshots out of order.
//! Levels (entries, bytes, hit ratio) are gauges, and each publish adds a sample to the gauge's
//! history, so alert rules can average them over a window (the hit ratio over five minutes).
//!
//! # Names
//!
//! Prometheus conventions: a `memocache_cache_` prefix, `_total` on counters, base units
//! (`_bytes`), and labels with a small fixed set of values (`cause`) — never keys or content
//! hashes.
//!
//! | metric | type | from |
//! |---|---|---|
//! | `memocache_cache_hits_total` | counter | `hits` |
//! | `memocache_cache_misses_total` | counter | `misses` |
//! | `memocache_cache_inserts_total` | counter | `inserts` |
//! | `memocache_cache_updates_total` | counter | `updates` (a live value replaced; equals `replaced`) |
//! | `memocache_cache_evictions_total{cause="size"}` | counter | `evictions_size` |
//! | `memocache_cache_evictions_total{cause="expired"}` | counter | `evictions_expired` |
//! | `memocache_cache_removals_total` | counter | `removals_explicit` (`remove`, `clear`) |
//! | `memocache_cache_loads_total` | counter | `loads` |
//! | `memocache_cache_load_failures_total` | counter | `load_failures` |
//! | `memocache_cache_entries` | gauge | `entries` |
//! | `memocache_cache_size_bytes` | gauge | `bytes` |
//! | `memocache_cache_hit_ratio` | gauge | `hit_ratio()`, since the cache was built |
//!
//! Explicit removals and replacements are not evictions (the cache did not choose them), so
//! they are separate families; `sum(memocache_cache_evictions_total)` is what the policy and the
//! TTLs removed.

use super::{Counter, Gauge, MetricError, MetricsRegistry};
use crate::cache::CacheStats;

/// Registry handles for a cache's statistics; [`CacheMetrics::publish`] copies a snapshot in.
///
/// ```
/// use memocache::metrics::wiring::CacheMetrics;
/// use memocache::{Cache, CacheKey, MetricsRegistry};
///
/// let cache = Cache::builder().max_bytes(1 << 20).build()?;
/// let registry = MetricsRegistry::new();
/// let metrics = CacheMetrics::register(&registry)?;
///
/// let key = CacheKey::from_content(b"audio", "transcript")?;
/// cache.insert(key.clone(), "hello")?;
/// cache.get(&key);
/// metrics.publish(&cache.stats());
///
/// assert!(registry.render_prometheus().contains("memocache_cache_hits_total 1\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    inserts: Counter,
    updates: Counter,
    evictions_size: Counter,
    evictions_expired: Counter,
    removals: Counter,
    loads: Counter,
    load_failures: Counter,
    entries: Gauge,
    bytes: Gauge,
    hit_ratio: Gauge,
}

impl CacheMetrics {
    /// Registers (or finds) the cache metrics in `registry`. Fails only if one of the names is
    /// already registered with another type.
    pub fn register(registry: &MetricsRegistry) -> Result<CacheMetrics, MetricError> {
        let counter = |name: &str, help: &str| registry.counter(name, help, &[]);
        let eviction = |cause: &str| {
            registry.counter(
                "memocache_cache_evictions_total",
                "Entries the cache evicted, by cause (size: over budget, expired: TTL ran out).",
                &[("cause", cause)],
            )
        };
        let gauge = |name: &str, help: &str| registry.gauge(name, help, &[]);
        Ok(CacheMetrics {
            hits: counter(
                "memocache_cache_hits_total",
                "Cache reads that found a live value.",
            )?,
            misses: counter(
                "memocache_cache_misses_total",
                "Cache reads that found no live value.",
            )?,
            inserts: counter(
                "memocache_cache_inserts_total",
                "Inserts of a key that was absent.",
            )?,
            updates: counter(
                "memocache_cache_updates_total",
                "Inserts that replaced a live value.",
            )?,
            evictions_size: eviction("size")?,
            evictions_expired: eviction("expired")?,
            removals: counter(
                "memocache_cache_removals_total",
                "Entries removed explicitly (remove, clear).",
            )?,
            loads: counter(
                "memocache_cache_loads_total",
                "Loader runs that produced a value.",
            )?,
            load_failures: counter(
                "memocache_cache_load_failures_total",
                "Loader runs that failed or panicked.",
            )?,
            entries: gauge("memocache_cache_entries", "Live entries.")?,
            bytes: gauge(
                "memocache_cache_size_bytes",
                "Bytes charged against the cache's budget.",
            )?,
            hit_ratio: gauge(
                "memocache_cache_hit_ratio",
                "Hits / (hits + misses) since the cache was built; 0 before the first read.",
            )?,
        })
    }

    /// Copies a statistics snapshot into the registry.
    pub fn publish(&self, stats: &CacheStats) {
        for (counter, total) in [
            (&self.hits, stats.hits),
            (&self.misses, stats.misses),
            (&self.inserts, stats.inserts),
            (&self.updates, stats.updates),
            (&self.evictions_size, stats.evictions_size),
            (&self.evictions_expired, stats.evictions_expired),
            (&self.removals, stats.removals_explicit),
            (&self.loads, stats.loads),
            (&self.load_failures, stats.load_failures),
        ] {
            counter.advance_to(total);
        }
        self.entries.set(stats.entries as f64);
        self.bytes.set(stats.bytes as f64);
        self.hit_ratio.set(stats.hit_ratio());
    }
}

impl MetricsRegistry {
    /// Publishes a cache statistics snapshot (see [`CacheMetrics`] for the names). Each call
    /// looks the metrics up by name; a host publishing often can keep a [`CacheMetrics`].
    pub fn record_cache(&self, stats: &CacheStats) -> Result<(), MetricError> {
        CacheMetrics::register(self)?.publish(stats);
        Ok(())
    }
}
