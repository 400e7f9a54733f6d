//! The eviction policy: S3-FIFO, per shard.
//!
//! # Why S3-FIFO
//!
//! The policy has to do three things at once: resist scans and loops (where LRU collapses to a
//! 0 % hit ratio), keep frequently used entries, and — because this is a concurrent cache —
//! let a hit do no more than flip a few bits. S3-FIFO (Yang et al., SOSP '23) fits: a hit only
//! bumps a 2-bit saturating frequency counter in the entry (an atomic store under the shard's
//! *read* lock); all list surgery happens at eviction time under the write lock that insertion
//! holds anyway. LRU must move the entry to the head on every hit, and W-TinyLFU needs a
//! frequency sketch and an LRU window, so both need either a lock per hit or Caffeine-style read
//! buffers.
//!
//! # The three queues
//!
//! * **small** (≈ 5 % of the shard's bytes): new entries land here once the shard is full. At eviction its tail is
//!   dropped unless it was hit since it came in; one-hit wonders and scans leave through here
//!   without disturbing the main queue.
//! * **main**: entries that proved themselves. Eviction works as CLOCK: a tail entry with a
//!   non-zero counter is moved back to the head with the counter decremented, otherwise evicted.
//! * **ghost**: fingerprints of entries recently dropped from *small*. A key that comes back
//!   while its fingerprint is still there was evicted too early, and goes straight to *main*.
//!   The ghost is a direct-mapped table of 32-bit fingerprints (4 bytes an entry, no links),
//!   sized to the shard's entry count; a newer fingerprint overwrites an older one in its slot,
//!   which ages the ghost roughly like a FIFO of the same length.
//!
//! While a shard is filling (it has never had to evict), new entries go straight to *main*
//! as long as main is under 95 % of the shard's share of the budget, as quick_cache does. On a
//! loop or scan larger than the cache this keeps a fixed set resident instead of cycling
//! everything through *small*: LRU and plain S3-FIFO score 0 % on such traces.
//!
//! Queues are intrusive doubly linked lists threaded through the shard's slab by `u32` slot
//! index, so moving or unlinking an entry is O(1) and allocates nothing.

use std::sync::atomic::{AtomicU8, Ordering};

/// The highest value of an entry's frequency counter.
pub(super) const MAX_FREQ: u8 = 3;

/// A `small` entry needs at least this many hits to be promoted to `main` instead of evicted.
const PROMOTE_AT: u8 = 1;

/// `small` is kept to at most this share of the shard's bytes (in percent). The S3-FIFO paper
/// uses 10 %; on the traces in `benches/hit_ratio.rs` 5 % scored better (quick_cache uses 3 %).
const SMALL_PERCENT: u64 = 5;

/// "No slot".
pub(super) const NIL: u32 = u32::MAX;

/// Which queue an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Queue {
    Small,
    Main,
}

/// The policy fields of an entry.
#[derive(Debug)]
pub(super) struct Links {
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) queue: Queue,
    pub(super) freq: AtomicU8,
}

impl Links {
    pub(super) fn new(queue: Queue) -> Links {
        Links {
            prev: NIL,
            next: NIL,
            queue,
            freq: AtomicU8::new(0),
        }
    }

    /// Records a hit. Racy by design: two concurrent hits may count once.
    #[inline]
    pub(super) fn hit(&self) {
        let freq = self.freq.load(Ordering::Relaxed);
        if freq < MAX_FREQ {
            self.freq.store(freq + 1, Ordering::Relaxed);
        }
    }

    pub(super) fn freq(&self) -> u8 {
        self.freq.load(Ordering::Relaxed)
    }
}

/// Access to the links of the entries in a slab, by slot.
pub(super) trait Slab {
    fn links(&self, slot: u32) -> &Links;
    fn links_mut(&mut self, slot: u32) -> &mut Links;
    fn charge(&self, slot: u32) -> u64;
    fn hash(&self, slot: u32) -> u64;
}

/// One FIFO queue: head is newest, tail is oldest.
#[derive(Debug)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
    bytes: u64,
}

impl List {
    const fn new() -> List {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
            bytes: 0,
        }
    }
}

/// The policy state of one shard.
#[derive(Debug)]
pub(super) struct S3Fifo {
    small: List,
    main: List,
    ghost: Vec<u32>,
    /// This shard's share of the cache's byte and entry bounds.
    share_bytes: u64,
    share_entries: u64,
    /// Set by the first eviction: the shard is full, the filling phase is over.
    full: bool,
}

impl S3Fifo {
    pub(super) fn new(share_bytes: u64, share_entries: u64) -> S3Fifo {
        S3Fifo {
            small: List::new(),
            main: List::new(),
            ghost: Vec::new(),
            share_bytes,
            share_entries,
            full: false,
        }
    }

    /// The queue a new entry with this hash and charge should join.
    pub(super) fn admission_queue(&mut self, hash: u64, charge: u64) -> Queue {
        if self.ghost_take(hash) {
            return Queue::Main;
        }
        let main_share = 100 - SMALL_PERCENT;
        let room = (self.main.bytes + charge) * 100 <= self.share_bytes.saturating_mul(main_share)
            && (self.main.len as u64 + 1) * 100 <= self.share_entries.saturating_mul(main_share);
        if !self.full && room {
            Queue::Main
        } else {
            Queue::Small
        }
    }

    /// Links a new entry (its `Links` already name the queue) at the head of its queue.
    pub(super) fn push(&mut self, slab: &mut impl Slab, slot: u32) {
        let charge = slab.charge(slot);
        let queue = slab.links(slot).queue;
        let list = self.list(queue);
        let old_head = list.head;
        list.head = slot;
        if list.tail == NIL {
            list.tail = slot;
        }
        list.len += 1;
        list.bytes += charge;
        let links = slab.links_mut(slot);
        links.prev = NIL;
        links.next = old_head;
        if old_head != NIL {
            slab.links_mut(old_head).prev = slot;
        }
    }

    /// Unlinks an entry from its queue.
    pub(super) fn unlink(&mut self, slab: &mut impl Slab, slot: u32) {
        let charge = slab.charge(slot);
        let links = slab.links(slot);
        let (prev, next, queue) = (links.prev, links.next, links.queue);
        if prev != NIL {
            slab.links_mut(prev).next = next;
        }
        if next != NIL {
            slab.links_mut(next).prev = prev;
        }
        let list = self.list(queue);
        if list.head == slot {
            list.head = next;
        }
        if list.tail == slot {
            list.tail = prev;
        }
        list.len -= 1;
        list.bytes -= charge;
    }

    /// Adjusts the queue's byte count when an entry's value is replaced in place.
    pub(super) fn recharge(&mut self, queue: Queue, old: u64, new: u64) {
        let list = self.list(queue);
        list.bytes = list.bytes - old + new;
    }

    /// Chooses the entry to evict and unlinks it; `None` if the shard is empty.
    pub(super) fn evict(&mut self, slab: &mut impl Slab) -> Option<u32> {
        self.full = true;
        loop {
            let total = self.small.bytes + self.main.bytes;
            let from_small = self.small.len > 0
                && (self.main.len == 0 || self.small.bytes * 100 >= total * SMALL_PERCENT);
            if from_small {
                let slot = self.small.tail;
                self.unlink(slab, slot);
                if slab.links(slot).freq() >= PROMOTE_AT {
                    let links = slab.links_mut(slot);
                    links.queue = Queue::Main;
                    *links.freq.get_mut() = 0;
                    self.push(slab, slot);
                    continue;
                }
                self.ghost_put(slab.hash(slot));
                return Some(slot);
            }
            let slot = self.main.tail;
            if slot == NIL {
                return None;
            }
            self.unlink(slab, slot);
            let freq = slab.links_mut(slot).freq.get_mut();
            if *freq > 0 {
                *freq -= 1;
                self.push(slab, slot);
                continue;
            }
            return Some(slot);
        }
    }

    /// Resizes the ghost to track about `entries` fingerprints (a power of two).
    pub(super) fn fit_ghost(&mut self, entries: usize) {
        let want = entries.max(16).next_power_of_two();
        if self.ghost.len() < want {
            // Growing re-hashes nothing: fingerprints of the old size would land in the wrong
            // slots, and a ghost is only a hint, so it simply starts over.
            self.ghost = vec![0; want];
        }
    }

    fn ghost_slot(&self, hash: u64) -> Option<(usize, u32)> {
        if self.ghost.is_empty() {
            return None;
        }
        let index = (hash as usize) & (self.ghost.len() - 1);
        // Never zero, so an empty slot never matches.
        let fingerprint = ((hash >> 32) as u32) | 1;
        Some((index, fingerprint))
    }

    fn ghost_put(&mut self, hash: u64) {
        if let Some((index, fingerprint)) = self.ghost_slot(hash) {
            self.ghost[index] = fingerprint;
        }
    }

    fn ghost_take(&mut self, hash: u64) -> bool {
        match self.ghost_slot(hash) {
            Some((index, fingerprint)) if self.ghost[index] == fingerprint => {
                self.ghost[index] = 0;
                true
            }
            _ => false,
        }
    }

    pub(super) fn clear(&mut self) {
        self.full = false;
        self.small = List::new();
        self.main = List::new();
        self.ghost.fill(0);
    }

    fn list(&mut self, queue: Queue) -> &mut List {
        match queue {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
        }
    }

    /// The slots of a queue from tail (oldest) to head, for snapshots and checks.
    pub(super) fn iter_queue<'a>(
        &self,
        slab: &'a impl Slab,
        queue: Queue,
    ) -> impl Iterator<Item = u32> + 'a {
        let mut slot = match queue {
            Queue::Small => self.small.tail,
            Queue::Main => self.main.tail,
        };
        std::iter::from_fn(move || {
            (slot != NIL).then(|| {
                let current = slot;
                slot = slab.links(current).prev;
                current
            })
        })
    }

    /// Entries on (small, main).
    #[cfg(test)]
    pub(super) fn lens(&self) -> (usize, usize) {
        (self.small.len, self.main.len)
    }
}
