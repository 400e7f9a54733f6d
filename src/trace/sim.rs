//! Exact reference policies: LRU and Bélády's OPT, one request at a time.

use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A cache replacement policy replayed one request at a time.
///
/// Implemented by [`Lru`] and [`Opt`] here and, through thin adapters, by real caches in the
/// hit-ratio benchmark and `memocache replay`, so that every contender is driven the same way.
pub trait Policy {
    /// Requests `key`: returns `true` on a hit. On a miss the policy decides whether to admit
    /// the key and what to evict.
    fn access(&mut self, key: u64) -> bool;
}

/// What a [`replay`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Requests replayed.
    pub requests: u64,
    /// Requests that hit.
    pub hits: u64,
}

impl ReplayStats {
    /// `hits / requests` in `[0, 1]`; `0` for an empty replay.
    pub fn hit_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.hits as f64 / self.requests as f64
        }
    }
}

/// Replays `keys` through `policy` and counts the hits.
pub fn replay<P: Policy + ?Sized>(policy: &mut P, keys: &[u64]) -> ReplayStats {
    let hits = keys.iter().filter(|&&key| policy.access(key)).count();
    ReplayStats {
        requests: keys.len() as u64,
        hits: hits as u64,
    }
}

/// A cheap hasher for `u64` trace keys. The simulators hash every request, SipHash would
/// dominate their cost, and trace keys are not adversarial input to a long-lived map, so one
/// multiply (whose high bits, which hashbrown uses for its control bytes, depend on every key
/// bit) is enough.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, key: u64) {
        // Fold the high half down first so keys differing only in high bits still spread
        // over the low (bucket index) bits as well.
        self.0 = (self.0 ^ key ^ (key >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `HashMap`/`HashSet` state using [`KeyHasher`].
pub(crate) type KeyHashBuilder = BuildHasherDefault<KeyHasher>;

/// Sentinel link of the LRU list.
const NIL: usize = usize::MAX;

/// An exact LRU cache of keys, O(1) per access: a hash map into a slab of list nodes linked
/// from most to least recently used. Memory is proportional to the capacity actually used.
#[derive(Debug, Clone)]
pub struct Lru {
    capacity: usize,
    slots: HashMap<u64, usize, KeyHashBuilder>,
    nodes: Vec<LruNode>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next victim.
    tail: usize,
}

#[derive(Debug, Clone, Copy)]
struct LruNode {
    key: u64,
    prev: usize,
    next: usize,
}

impl Lru {
    /// An empty LRU holding at most `capacity` keys (`0` caches nothing).
    pub fn new(capacity: usize) -> Lru {
        Lru {
            capacity,
            slots: HashMap::default(),
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// The number of keys cached.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The maximum number of keys.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `key` is cached, without touching it.
    pub fn contains(&self, key: u64) -> bool {
        self.slots.contains_key(&key)
    }

    fn unlink(&mut self, i: usize) {
        let LruNode { prev, next, .. } = self.nodes[i];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n].prev = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.nodes[h].prev = i,
        }
        self.head = i;
    }
}

impl Policy for Lru {
    fn access(&mut self, key: u64) -> bool {
        if let Some(&i) = self.slots.get(&key) {
            if self.head != i {
                self.unlink(i);
                self.push_front(i);
            }
            return true;
        }
        if self.capacity == 0 {
            return false;
        }
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(LruNode {
                key,
                prev: NIL,
                next: NIL,
            });
            self.nodes.len() - 1
        } else {
            // Full, so the list is non-empty and `tail` is a node: reuse the victim's slot.
            let victim = self.tail;
            self.slots.remove(&self.nodes[victim].key);
            self.unlink(victim);
            self.nodes[victim].key = key;
            victim
        };
        self.push_front(i);
        self.slots.insert(key, i);
        false
    }
}

/// "Never requested again".
const NEVER: usize = usize::MAX;

/// Bélády's optimal policy with bypass, over a trace known in advance: on a miss with the cache
/// full, of the cached items and the new one, the one whose next request is farthest away is
/// dropped — so a key never requested again is not admitted (Caffeine's `Clairvoyant`
/// semantics). Its hit ratio bounds every online policy of the same capacity from above.
///
/// `new` precomputes, for each request, the index of the next request of the same key (one
/// hash-map pass from the end). Replaying is then O(log capacity) per request and hashes
/// nothing: the cache is a max-heap of next-use indices, and whether request `t` hits is a flag
/// at index `t` set when its key was cached for that use. Entries consumed by a hit stay in the
/// heap (their index is in the past, so below every live one) until a rebuild drops them, which
/// keeps the heap within twice the capacity, amortized O(1) per request.
///
/// [`Policy::access`] must be called with the trace's keys in order. A key that is not the
/// trace's next request cannot be planned for: it is counted by [`Opt::off_script`], reported
/// as a miss and not admitted, and the position in the trace does not move.
#[derive(Debug, Clone)]
pub struct Opt<'a> {
    keys: &'a [u64],
    next_use: Vec<usize>,
    /// `cached_for[t]`: the key of request `t` is cached, put there for exactly that use.
    cached_for: Vec<bool>,
    /// Next-use indices of the cached items (plus stale, past ones; `NEVER` may repeat).
    heap: BinaryHeap<usize>,
    len: usize,
    capacity: usize,
    pos: usize,
    off_script: u64,
}

impl<'a> Opt<'a> {
    /// An empty OPT cache of `capacity` keys that will replay `keys`. The plan takes 9 bytes
    /// a request and a map of the distinct keys; like `Vec`, this ends the process if the
    /// memory is refused ([`Opt::try_new`] returns an error instead).
    pub fn new(keys: &'a [u64], capacity: usize) -> Opt<'a> {
        match Opt::try_new(keys, capacity) {
            Ok(opt) => opt,
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<usize>()),
        }
    }

    /// [`Opt::new`], with an error where the memory for the plan is refused: `memocache
    /// replay` of a trace that fits in memory, but not with its plan, ended in SIGABRT.
    pub fn try_new(
        keys: &'a [u64],
        capacity: usize,
    ) -> Result<Opt<'a>, std::collections::TryReserveError> {
        let mut next_use = Vec::new();
        next_use.try_reserve_exact(keys.len())?;
        next_use.resize(keys.len(), NEVER);
        let mut cached_for = Vec::new();
        cached_for.try_reserve_exact(keys.len())?;
        cached_for.resize(keys.len(), false);
        let mut seen: HashMap<u64, usize, KeyHashBuilder> = HashMap::default();
        for (t, &key) in keys.iter().enumerate().rev() {
            if seen.len() == seen.capacity() {
                seen.try_reserve(seen.len().max(1 << 10))?;
            }
            if let Some(later) = seen.insert(key, t) {
                next_use[t] = later;
            }
        }
        Ok(Opt {
            keys,
            next_use,
            cached_for,
            heap: BinaryHeap::new(),
            len: 0,
            capacity,
            pos: 0,
            off_script: 0,
        })
    }

    /// The number of keys cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Accesses that did not match the trace's next request (see the type docs).
    pub fn off_script(&self) -> u64 {
        self.off_script
    }

    /// Caches the current request's key until its next use `next`.
    fn admit(&mut self, next: usize) {
        if next != NEVER {
            self.cached_for[next] = true;
        }
        self.heap.push(next);
    }
}

impl Policy for Opt<'_> {
    fn access(&mut self, key: u64) -> bool {
        let t = self.pos;
        if self.keys.get(t) != Some(&key) {
            self.off_script += 1;
            return false;
        }
        self.pos += 1;
        let next = self.next_use[t];
        let hit = self.cached_for[t];
        if hit {
            // The heap entry `t` is now stale; the key stays cached for its next use.
            self.cached_for[t] = false;
            self.admit(next);
        } else if self.len < self.capacity {
            self.len += 1;
            self.admit(next);
        } else if let Some(&farthest) = self.heap.peek() {
            // Live entries are all > t and stale ones <= t, so the top is live. Ties are only
            // NEVER against NEVER, where dropping either is optimal: bypass.
            if next < farthest {
                self.heap.pop();
                if farthest != NEVER {
                    self.cached_for[farthest] = false;
                }
                self.admit(next);
            }
        }
        if self.heap.len() > 2 * self.len + 1024 {
            self.heap.retain(|&use_at| use_at > t);
        }
        hit
    }
}
