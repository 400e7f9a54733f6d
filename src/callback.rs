//! Calling the host's callbacks — the cache's eviction listener, the job queue's completion
//! hook — so that neither a panic nor a callback that calls back in can break the call that
//! reports to it.
//!
//! Two rules, shared by both callbacks:
//!
//! * **Every callback of a call runs, then the first panic goes on.** A callback is the
//!   host's code; a panic let out at once would leave the call's other removals or
//!   completions unreported and a call that works part by part (a cache's `clear`) half done.
//!   So each callback runs under `catch_unwind`, [`FirstPanic`] keeps the first payload, and
//!   the caller re-raises it once its work is done (or drops it, if the call was made while
//!   the thread unwinds from another panic: re-raised, it would abort). Later payloads are
//!   dropped by [`drop_payload`], which contains a panic of the payload's own drop: a payload
//!   is the host's value too, and a drop that panicked there started a second unwind that cut
//!   the rest short (or, past the first payload, aborted the process).
//! * **Callbacks never nest.** A callback may use the cache or the queue, and a call it makes
//!   may remove entries or complete jobs, which calls a callback again. Called directly, each
//!   such round nests one callback deeper on the stack with no bound but the host's: a cache
//!   listener that inserted into a full cache, and a completion hook that submitted jobs the
//!   memo store answered, each overflowed the stack, which aborts the process (the first in
//!   a CI run). So the first report on a thread is the *outermost* one ([`Turn::Outermost`]);
//!   reports made while it runs are deferred (with [`defer`]) and run by it, in the order
//!   they were made, after its own callbacks: a loop, not a recursion, however long the
//!   chain.
//!
//! The price of the second rule: a call made from inside a callback returns before its own
//! callbacks run, and their panics go on to the outermost caller, not to that inner call.
//! Calls from outside any callback report before they return.
//!
//! A third, for the cache's listener: **no listener call under a lock it may need.** A job
//! queue calls its memo store (a cache) under the queue's lock, and an insert that evicts, or
//! a lookup that finds its entry expired, told the cache's listener there: a listener that
//! called the queue (its `stats`, a submit) waited for that lock for ever, on a pool's worker,
//! and every caller of the queue after it. So the queue [holds](hold) listener calls on its
//! thread while it calls the store; they are deferred as a nested report's are, and run, in
//! order, once the queue's call has released its lock ([`run_held`]).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// A caught panic's payload.
pub(crate) type Payload = Box<dyn Any + Send>;

/// A deferred report: the callbacks of a call made from inside a callback.
type Deferred = Box<dyn FnOnce(&mut FirstPanic)>;

thread_local! {
    /// Whether this thread is inside its outermost report.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// Whether `DEFERRED` holds reports. A flag of its own so that the outermost report,
    /// which nearly always has nothing deferred, reads it instead of the list, a thread-local
    /// with a destructor whose registration is checked on each access (the completion hook,
    /// callgrind, one thread, a submit and a `complete_and_next` a job: 1,567 instructions a
    /// job before reports were deferred, 1,648 taking the list after every report, 1,606
    /// reading this flag).
    static PENDING: Cell<bool> = const { Cell::new(false) };
    /// The reports deferred by calls made from inside a callback, in the order they were
    /// made.
    static DEFERRED: RefCell<Vec<Deferred>> = const { RefCell::new(Vec::new()) };
    /// Whether [`hold`] is in force on this thread: the cache's listener calls are deferred.
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Starts deferring the cache's listener calls on this thread (see the module docs); returns
/// whether they were deferred already, for [`unhold`]. The caller must not unwind before
/// [`unhold`] (a job queue's memo calls run under `catch_unwind`).
///
/// `None`, holding nothing, once the list deferred calls wait in is gone: the thread's
/// thread-locals are being destroyed (a host's thread-local whose drop calls the queue). A
/// call deferred then runs at once (see [`defer`]), which under the queue's lock is the
/// deadlock holding prevents, so the caller must not make the calls it would have held.
pub(crate) fn hold() -> Option<bool> {
    DEFERRED.try_with(|_| ()).ok()?;
    Some(HELD.replace(true))
}

/// Ends [`hold`]: `was` is what it returned. What was deferred waits for [`run_held`].
pub(crate) fn unhold(was: bool) {
    HELD.set(was);
}

/// Runs the listener calls deferred by holds on this thread, once the lock they could need
/// is released, and re-raises their first panic, as the call that made them would have. From
/// inside a hold or a callback they are left to the outermost one, as a nested report's are.
/// Out of line: only a job queue with a memo store calls it.
#[cold]
#[inline(never)]
pub(crate) fn run_held() {
    if !HELD.get() && PENDING.get() {
        let mut panics = FirstPanic::default();
        Turn::start().finish(&mut panics);
        panics.resume();
    }
}

/// Whether [`hold`] is in force on this thread.
pub(crate) fn held() -> bool {
    HELD.get()
}

/// The first panic caught from the host's callbacks during one call.
#[derive(Default)]
pub(crate) struct FirstPanic(Option<Payload>);

impl FirstPanic {
    /// Runs `callback`, keeping its panic if it is the first.
    pub(crate) fn catch(&mut self, callback: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(callback)) {
            self.keep(payload);
        }
    }

    /// Keeps `payload` if it is the first, else drops it (see [`drop_payload`]). Cold: the
    /// callbacks that reach it have panicked.
    #[cold]
    #[inline(never)]
    fn keep(&mut self, payload: Payload) {
        match self.0 {
            None => self.0 = Some(payload),
            Some(_) => drop_payload(payload),
        }
    }

    /// Re-raises the kept panic, if any, unless this thread is already unwinding from another
    /// panic: the call is then made from a drop that unwinding runs (a host's value whose drop
    /// clears a cache, or the cache's own last handle), and a panic let out of it would abort
    /// the process, so the payload is dropped (see [`drop_payload`]) and the other panic goes
    /// on alone.
    pub(crate) fn resume(self) {
        if let Some(payload) = self.0 {
            if std::thread::panicking() {
                drop_payload(payload);
            } else {
                resume_unwind(payload);
            }
        }
    }
}

/// Drops a caught panic's payload without letting a panic of its drop out. A payload is the
/// host's value, so dropping it runs the host's code: in a worker pool's loop, a drop that
/// panicked ended the worker thread (the pool ran one short from then on). The payload of
/// such a second panic is forgotten, not dropped, since its drop could panic again.
pub(crate) fn drop_payload(payload: Payload) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        mem::forget(again);
    }
}

/// Which report this is, on this thread; see the module docs.
pub(crate) enum Turn {
    /// The first: it runs its callbacks, then [`Turn::finish`] runs the deferred ones.
    Outermost(Outermost),
    /// Made from inside a callback: its callbacks go to [`defer`].
    Nested,
}

/// Marks the thread as outside any report when the outermost one ends, however it ends.
pub(crate) struct Outermost(());

impl Drop for Outermost {
    fn drop(&mut self) {
        INSIDE.set(false);
    }
}

impl Turn {
    /// Starts a report on this thread.
    pub(crate) fn start() -> Turn {
        // A `const` `Cell<bool>` has no destructor, so it is there even while the thread
        // exits.
        if INSIDE.replace(true) {
            Turn::Nested
        } else {
            Turn::Outermost(Outermost(()))
        }
    }

    /// Whether this report must [`defer`] its callbacks.
    pub(crate) fn is_nested(&self) -> bool {
        matches!(self, Turn::Nested)
    }

    /// Ends the report: the outermost one runs every report deferred meanwhile — each may
    /// defer more — in the order they were made, keeping the first panic in `panics`.
    pub(crate) fn finish(self, panics: &mut FirstPanic) {
        let Turn::Outermost(_outermost) = self else {
            return;
        };
        while PENDING.replace(false) {
            let Ok(batch) = DEFERRED.try_with(|deferred| mem::take(&mut *deferred.borrow_mut()))
            else {
                return;
            };
            for report in batch {
                report(panics);
            }
        }
    }
}

/// Defers a nested report's callbacks to the outermost report on this thread. While the
/// thread exits, when the list is gone, runs them here instead and re-raises their first
/// panic, as a direct call would.
pub(crate) fn defer(report: impl FnOnce(&mut FirstPanic) + 'static) {
    let mut report = Some(Box::new(report) as Deferred);
    let _ = DEFERRED.try_with(|deferred| deferred.borrow_mut().extend(report.take()));
    match report {
        None => PENDING.set(true),
        Some(report) => {
            let mut panics = FirstPanic::default();
            report(&mut panics);
            panics.resume();
        }
    }
}
