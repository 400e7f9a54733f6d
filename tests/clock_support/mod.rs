//! Fixtures on a manual clock shared by the chunk, metrics and pipeline tests.
#![allow(dead_code)] // each test crate uses part of this module

use std::sync::Arc;
use std::time::Duration;

use memocache::{AlertEvaluator, Cache, Clock, ManualClock, MemoryNotifier, MetricsRegistry};

/// A 1 MiB cache whose time is `clock`'s, so a test moves its TTLs and backoffs by hand.
pub fn cache_on(clock: &ManualClock) -> Cache {
    Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// An evaluator over `registry` with one channel, "pager", and the notifier that records what
/// reaches it.
pub fn paged_alerts(registry: &MetricsRegistry) -> (AlertEvaluator, MemoryNotifier) {
    let mut alerts = AlertEvaluator::new(registry.clone());
    let pager = MemoryNotifier::new();
    alerts.add_channel("pager", Arc::new(pager.clone()));
    (alerts, pager)
}

/// A registry on `clock` keeping ten minutes of samples.
pub fn registry_on(clock: &(impl Clock + Clone + 'static)) -> MetricsRegistry {
    MetricsRegistry::with_clock(clock.clone(), Duration::from_secs(600))
}
