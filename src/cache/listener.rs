//! Telling the eviction listener of removals: after the locks are released, every removal
//! of a call reported even if the listener panics, and never from inside the listener itself
//! — removals made by the listener's own calls are reported after it returns, in a loop (see
//! [`crate::callback`], which the queue's completion hook shares). Three threads churning a
//! 20-entry cache whose listener inserted on every size eviction once nested listener calls
//! until a debug build's 2 MiB thread stack overflowed, which aborts the whole process.

use std::sync::Arc;

use bytes::Bytes;

use super::RemovalCause;
use crate::callback::{self, FirstPanic, Turn};
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

    /// Whether more than one entry was removed: the values of such a call are dropped one
    /// by one even without a listener (see `Inner::notify`).
    #[inline]
    pub(super) fn several(&self) -> bool {
        !self.rest.is_empty()
    }

    fn into_iter(self) -> impl Iterator<Item = Removal> {
        self.first.into_iter().chain(self.rest)
    }

    /// Drops the removed values one by one, keeping the first panic of a drop in `panicked`.
    /// A value's drop is the host's code (`Bytes::from_owner` runs its owner's), and one that
    /// panicked unwound out of the cache as `Removed` was dropped: `clear` and `purge_expired`
    /// stopped after that shard, and the listener never heard of the rest of its removals. A
    /// second panicking drop during that unwinding aborted the process.
    pub(super) fn drop_each(self, panicked: &mut FirstPanic) {
        for (_, value, _) in self.into_iter() {
            panicked.catch(move || drop(value));
        }
    }
}

/// Reports `removed` to `listener`, keeping its first panic in `panicked` instead of
/// unwinding: if a panic unwound through the cache, the other removals of the call would
/// never be reported and a call that works shard by shard (`clear`, `purge_expired`) would
/// stop half done — and the sweeper thread would die. From inside a listener call, or while
/// a job queue holds listener calls back (its lock held: see [`crate::callback`]), only
/// defers `removed` to the outermost report on this thread.
pub(super) fn report(listener: &Listener, removed: Removed, panicked: &mut FirstPanic) {
    let turn = Turn::start();
    if turn.is_nested() || callback::held() {
        let listener = Arc::clone(listener);
        callback::defer(move |panicked| tell(&listener, removed, panicked));
        return;
    }
    tell(listener, removed, panicked);
    turn.finish(panicked);
}

fn tell(listener: &Listener, removed: Removed, panicked: &mut FirstPanic) {
    for (key, value, cause) in removed.into_iter() {
        panicked.catch(|| listener(&key, &value, cause));
        // Apart from the listener's call, so that a value whose drop panics while a panic of
        // the listener unwinds cannot abort the process (see `Removed::drop_each`).
        panicked.catch(move || drop(value));
    }
}
