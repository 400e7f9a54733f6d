//! Telling the eviction listener of removals: after the locks are released, every removal
//! of a call reported even if the listener panics, and never from inside the listener itself.
//!
//! A listener is user code and may use the cache — and a listener that inserts into a full
//! cache evicts, which calls the listener, which inserts again. Called directly, each such
//! round nests one listener call deeper on the stack, with no bound but luck: three threads
//! churning a 20-entry cache whose listener inserts on every size eviction overflowed a
//! debug build's 2 MiB thread stack, which aborts the whole process. So the first listener
//! call on a thread opens a queue, and removals made by calls from inside a listener (on
//! any cache) are queued there and reported, in the order they happened, by that first call
//! once its listener returns: a loop, not a recursion, so the stack stays flat however long
//! the chain.
//!
//! The price: a call made from inside a listener returns before its own removals are heard,
//! and a panic of a listener they reach is re-raised to the outermost caller, not to the
//! inner call. Calls from outside any listener are reported before they return, as before.

use std::cell::RefCell;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use super::RemovalCause;
use crate::key::CacheKey;

/// The eviction listener, as the builder stores it.
pub(super) type Listener = Arc<dyn Fn(&CacheKey, &Bytes, RemovalCause) + Send + Sync>;

/// One removed entry, for the listener.
pub(super) type Removal = (CacheKey, Bytes, RemovalCause);

/// Entries a call removed, held until its shard lock is released so that the listener runs
/// and their values are dropped outside it. The first sits inline: an insert into a full
/// cache usually evicts exactly one entry, and it should not allocate to say so.
#[derive(Default)]
pub(super) struct Removed {
    first: Option<Removal>,
    rest: Vec<Removal>,
}

impl Removed {
    pub(super) fn new() -> Removed {
        Removed::default()
    }

    pub(super) fn one(removal: Removal) -> Removed {
        Removed {
            first: Some(removal),
            rest: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, removal: Removal) {
        if self.first.is_none() {
            self.first = Some(removal);
        } else {
            self.rest.push(removal);
        }
    }

    fn into_iter(self) -> impl Iterator<Item = Removal> {
        self.first.into_iter().chain(self.rest)
    }
}

/// The first panic of the eviction listener during a call, re-raised when the call's work is
/// done (see [`report`]).
#[derive(Default)]
pub(super) struct ListenerPanic(Option<Box<dyn std::any::Any + Send>>);

impl ListenerPanic {
    pub(super) fn resume(self) {
        if let Some(payload) = self.0 {
            panic::resume_unwind(payload);
        }
    }
}

thread_local! {
    /// `Some` while this thread is inside a listener call: the removals that calls made from
    /// inside it have yet to report, each with its cache's listener.
    static DEFERRED: RefCell<Option<Vec<(Listener, Removal)>>> = const { RefCell::new(None) };
}

/// Closes this thread's queue when the outermost report ends, however it ends.
struct OutermostReport;

impl Drop for OutermostReport {
    fn drop(&mut self) {
        let _ = DEFERRED.try_with(|deferred| deferred.borrow_mut().take());
    }
}

/// Reports `removed` to `listener`, keeping its first panic in `panicked` instead of
/// unwinding. A listener is user code: if its panic unwound through the cache, the other
/// removals of the call would never be reported and a call that works shard by shard
/// (`clear`, `purge_expired`) would stop half done — and the sweeper thread would die.
///
/// From inside a listener call, only queues `removed` for the outermost call to report (see
/// the module docs).
pub(super) fn report(listener: &Listener, removed: Removed, panicked: &mut ListenerPanic) {
    // `Ok(true)`: inside a listener call; `Ok(false)`: this is the outermost report, which
    // opens the queue; `Err`: the thread is exiting and its queue is gone (a cache used from
    // another thread-local's destructor), so report directly.
    let inside = DEFERRED.try_with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        let inside = deferred.is_some();
        deferred.get_or_insert_with(Vec::new);
        inside
    });
    match inside {
        Ok(true) => {
            let queued = removed.into_iter().map(|r| (Arc::clone(listener), r));
            DEFERRED.with(|deferred| {
                deferred
                    .borrow_mut()
                    .get_or_insert_with(Vec::new)
                    .extend(queued)
            });
            return;
        }
        Ok(false) => {}
        Err(_) => {
            for removal in removed.into_iter() {
                call(listener, &removal, panicked);
            }
            return;
        }
    }
    let _close = OutermostReport;
    for removal in removed.into_iter() {
        call(listener, &removal, panicked);
    }
    // Each batch may queue more; they are reported in the order they were queued.
    loop {
        let batch = DEFERRED.with(|deferred| {
            deferred
                .borrow_mut()
                .as_mut()
                .map(mem::take)
                .unwrap_or_default()
        });
        if batch.is_empty() {
            return;
        }
        for (listener, removal) in batch {
            call(&listener, &removal, panicked);
        }
    }
}

fn call(listener: &Listener, (key, value, cause): &Removal, panicked: &mut ListenerPanic) {
    let call = panic::catch_unwind(AssertUnwindSafe(|| listener(key, value, *cause)));
    if let Err(payload) = call {
        panicked.0.get_or_insert(payload);
    }
}
