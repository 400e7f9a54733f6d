//! Behaviour tests of the cache engine, through its public API only.
//!
//! One test binary (`tests/cache_engine/`, one submodule per topic) so that the helpers below are
//! shared and the suite links once.

mod behaviour;
mod concurrency;
mod model;
mod stats_model;
mod ttl;

use std::sync::Arc;

use bytes::Bytes;
use memocache::{Cache, CacheBuilder, CacheKey, ManualClock, RemovalCause, Ttl};
use parking_lot::Mutex;

/// The `i`th test key.
pub fn key(i: u64) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "test").expect("valid prefix")
}

/// A TTL of whole seconds.
pub fn secs(s: u64) -> Ttl {
    Ttl::seconds(s).expect("positive")
}

/// Every listener call, in order.
pub type Events = Arc<Mutex<Vec<(CacheKey, Bytes, RemovalCause)>>>;

/// A builder with a generous budget, the given clock, and a listener recording into `Events`.
pub fn recorded(clock: &ManualClock) -> (CacheBuilder, Events) {
    let events = Events::default();
    let sink = Arc::clone(&events);
    let builder = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .eviction_listener(move |key, value, cause| sink.lock().push((*key, value.clone(), cause)));
    (builder, events)
}

/// The events of one cause.
pub fn of_cause(events: &Events, cause: RemovalCause) -> Vec<(CacheKey, Bytes)> {
    events
        .lock()
        .iter()
        .filter(|(_, _, c)| *c == cause)
        .map(|(k, v, _)| (*k, v.clone()))
        .collect()
}
