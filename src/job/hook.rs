//! Calling the completion hook ([`crate::JobQueueBuilder::on_complete`]): after the queue's
//! lock is released, and never from inside the hook itself.
//!
//! A hook is the host's code and may use the queue — and a call that completes a job (a
//! submit the memo store answers, a `complete` of a job the hook itself took, a cancel whose
//! followers the store answers) calls the hook, which may call the queue again. Called
//! directly, each such round nests one hook call deeper on the stack, with no bound but the
//! hook's own: a hook that submits a job the memo store answers on each completion (the
//! next stage of a pipeline whose results are cached) overflowed a 256 KiB thread stack
//! within 20,000 rounds in a debug build, which aborts the whole process. So the first report on a thread opens a queue, and completions made by calls
//! from inside a hook (of any queue) are queued there and reported, in the order they
//! happened, by that first report once its hook call returns: a loop, not a recursion, so
//! the stack stays flat however long the chain. The cache's eviction listener is reported
//! the same way, for the same reason (see `cache/listener.rs`).
//!
//! The price: a call made from inside a hook returns before its own completions are heard,
//! and a panic of the hook while hearing them is re-raised to the outermost caller once the
//! chain is done, not to the inner call. Calls from outside any hook report before they
//! return, as before.
//!
//! Here too is how the job layer drops the panics it catches from the host's code (the
//! hook's and a pool's handlers'), whose payloads are the host's values: [`drop_payload`].

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use super::queue::JobCompletion;

/// The hook [`crate::JobQueueBuilder::on_complete`] sets, wrapped to take the jobs completed
/// together: it hears each of them even if it panics on one, then re-raises the first panic.
pub(super) type CompletionHook = Arc<dyn Fn(&[JobCompletion]) + Send + Sync>;

thread_local! {
    /// Whether this thread is inside a hook call (its outermost report is running).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// Whether `DEFERRED` has batches to report. A flag of its own so that the outermost
    /// report, which nearly always has nothing deferred, reads it instead of the list, a
    /// thread-local with a destructor whose registration is checked on each access
    /// (callgrind, one thread, a submit and a `complete_and_next` a job, with a hook: 1,567
    /// instructions a job without deferral, 1,648 taking the list after every hook call,
    /// 1,606 reading this flag; without a hook nothing here runs).
    static PENDING: Cell<bool> = const { Cell::new(false) };
    /// The completions that calls made from inside a hook call have yet to report, each
    /// batch with its queue's hook, in the order they completed.
    static DEFERRED: RefCell<Vec<(CompletionHook, Vec<JobCompletion>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Marks the thread as outside any hook call when the outermost report ends, however it
/// ends.
struct OutermostReport;

impl Drop for OutermostReport {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|inside| inside.set(false));
    }
}

/// Tells `hook` of `completions` (a call's, made under the lock just released). From inside
/// a hook call on this thread, only queues them for the outermost report (see the module
/// docs), which hears every batch even if the hook panics on one and then re-raises the
/// first panic.
pub(super) fn report(hook: &CompletionHook, completions: &[JobCompletion]) {
    if completions.is_empty() {
        return;
    }
    // `Ok(true)`: inside a hook call, so the batch is queued; `Ok(false)`: this is the
    // outermost report; `Err`: the thread is exiting and its thread-locals are gone (a queue
    // used from another thread-local's destructor), so report directly.
    match INSIDE.try_with(|inside| inside.replace(true)) {
        Ok(true) => {
            let batch = (Arc::clone(hook), completions.to_vec());
            // The list is gone only while the thread exits (`INSIDE`, with no destructor,
            // outlives it): then this call is reported here, nested, rather than lost.
            match DEFERRED.try_with(|d| d.borrow_mut().push(batch)) {
                Ok(()) => PENDING.set(true),
                Err(_) => hook(completions),
            }
            return;
        }
        Ok(false) => {}
        Err(_) => return hook(completions),
    }
    let _outermost = OutermostReport;
    let mut panic = catch_unwind(AssertUnwindSafe(|| hook(completions))).err();
    // Each batch may queue more; they are reported in the order they were queued.
    while PENDING.replace(false) {
        let Ok(batch) = DEFERRED.try_with(|d| mem::take(&mut *d.borrow_mut())) else {
            break;
        };
        for (hook, completions) in batch {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| hook(&completions))) {
                keep_first(&mut panic, p);
            }
        }
    }
    if let Some(panic) = panic {
        resume_unwind(panic);
    }
}

/// Keeps `payload` in `first` if it is the first panic caught, else drops it (see
/// [`drop_payload`]).
pub(super) fn keep_first(first: &mut Option<Box<dyn Any + Send>>, payload: Box<dyn Any + Send>) {
    match first {
        None => *first = Some(payload),
        Some(_) => drop_payload(payload),
    }
}

/// Drops a caught panic's payload without letting a panic of its drop out. A payload is the
/// host's value (a handler's, a hook's), so dropping it runs the host's code, and a payload
/// whose drop panics started a second panic where it was dropped: in a pool's worker loop it
/// ended the thread (the pool ran one worker short from then on), and in the completion
/// hook's loop it left the batch's other jobs unreported and, unwinding past the first
/// panic's payload, aborted the process if that one's drop panicked too. The payload of such
/// a second panic is forgotten, not dropped, since its drop could panic again.
pub(super) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
