//! The exact LRU and OPT simulators against naive models, and their known properties.

#![cfg(feature = "trace")]

use memocache::trace::{Lru, Opt, Policy, Trace, replay};
use proptest::prelude::*;

/// LRU the obvious way: a list, most recent first.
fn naive_lru(keys: &[u64], capacity: usize) -> Vec<bool> {
    let mut list: Vec<u64> = Vec::new();
    keys.iter()
        .map(|&k| {
            let hit = match list.iter().position(|&c| c == k) {
                Some(i) => {
                    list.remove(i);
                    true
                }
                None => false,
            };
            if hit || capacity > 0 {
                list.insert(0, k);
                list.truncate(capacity);
            }
            hit
        })
        .collect()
}

/// Bélády with bypass the obvious way: on a miss with a full cache, scan the future for each
/// cached key and the new one, and drop the one used farthest ahead (or never).
fn naive_opt(keys: &[u64], capacity: usize) -> Vec<bool> {
    let next_use = |t: usize, k: u64| {
        keys[t + 1..]
            .iter()
            .position(|&f| f == k)
            .map_or(usize::MAX, |d| t + 1 + d)
    };
    let mut cache: Vec<u64> = Vec::new();
    keys.iter()
        .enumerate()
        .map(|(t, &k)| {
            if cache.contains(&k) {
                return true;
            }
            if cache.len() < capacity {
                cache.push(k);
            } else if capacity > 0 {
                let (victim, far) = cache
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (i, next_use(t, c)))
                    .max_by_key(|&(_, n)| n)
                    .expect("full cache is non-empty");
                if next_use(t, k) < far {
                    cache[victim] = k;
                }
            }
            false
        })
        .collect()
}

fn hits_of(policy: &mut impl Policy, keys: &[u64]) -> Vec<bool> {
    keys.iter().map(|&k| policy.access(k)).collect()
}

fn trace_strategy() -> impl Strategy<Value = (Vec<u64>, usize)> {
    // Few distinct keys so that hits, evictions and bypasses all happen.
    (proptest::collection::vec(0u64..24, 0..400), 0usize..16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn lru_matches_the_naive_model((keys, capacity) in trace_strategy()) {
        let mut lru = Lru::new(capacity);
        for (t, (&k, want)) in keys.iter().zip(naive_lru(&keys, capacity)).enumerate() {
            prop_assert_eq!(lru.access(k), want, "request {} (key {})", t, k);
            prop_assert!(lru.len() <= capacity);
            prop_assert!(lru.contains(k) == (capacity > 0));
        }
    }

    #[test]
    fn opt_matches_the_naive_model((keys, capacity) in trace_strategy()) {
        let mut opt = Opt::new(&keys, capacity);
        prop_assert_eq!(hits_of(&mut opt, &keys), naive_opt(&keys, capacity));
        prop_assert!(opt.len() <= capacity);
        prop_assert_eq!(opt.off_script(), 0);
    }

    #[test]
    fn opt_hits_at_least_as_often_as_lru((keys, capacity) in trace_strategy()) {
        let lru = replay(&mut Lru::new(capacity), &keys);
        let opt = replay(&mut Opt::new(&keys, capacity), &keys);
        prop_assert!(opt.hits >= lru.hits, "OPT {} < LRU {}", opt.hits, lru.hits);
    }

    /// Both are stack algorithms: a larger cache never hits less.
    #[test]
    fn more_capacity_never_hits_less((keys, capacity) in trace_strategy()) {
        let lru = |c| replay(&mut Lru::new(c), &keys).hits;
        let opt = |c| replay(&mut Opt::new(&keys, c), &keys).hits;
        prop_assert!(lru(capacity + 1) >= lru(capacity));
        prop_assert!(opt(capacity + 1) >= opt(capacity));
    }
}

#[test]
fn a_loop_one_larger_than_the_cache_defeats_lru_but_not_opt() {
    let keys = [1, 2, 3, 4].repeat(100);
    assert_eq!(replay(&mut Lru::new(3), &keys).hits, 0);
    assert_eq!(replay(&mut Lru::new(4), &keys).hits, 396);
    // OPT keeps 3 of the 4 and misses once per 3 requests after the first pass.
    let opt = replay(&mut Opt::new(&keys, 3), &keys);
    assert_eq!(
        opt.hits,
        naive_opt(&keys, 3).iter().filter(|&&h| h).count() as u64
    );
    assert!(opt.hit_ratio() > 0.66, "{}", opt.hit_ratio());
}

#[test]
fn zero_capacity_never_hits() {
    let keys = [5, 5, 5, 5];
    assert_eq!(replay(&mut Lru::new(0), &keys).hits, 0);
    assert_eq!(replay(&mut Opt::new(&keys, 0), &keys).hits, 0);
    assert!(Lru::new(0).is_empty());
}

#[test]
fn opt_counts_off_script_keys_as_bypassed_misses_and_keeps_its_place() {
    let keys = [1, 2, 1, 2, 3, 1];
    let mut opt = Opt::new(&keys, 2);
    let mut hits = Vec::new();
    for (i, &k) in keys.iter().enumerate() {
        if i == 2 {
            assert!(!opt.access(99), "a key off the script is a miss");
        }
        hits.push(opt.access(k));
    }
    assert!(!opt.access(1), "past the end of the trace");
    assert_eq!(opt.off_script(), 2);
    assert_eq!(hits, naive_opt(&keys, 2));
}

#[test]
fn replay_stats_and_trace_counts() {
    let trace = Trace::from_keys(vec![3, 1, 3, 3, 2]);
    assert_eq!((trace.requests(), trace.unique()), (5, 3));
    let stats = replay(&mut Lru::new(1), trace.keys());
    assert_eq!((stats.requests, stats.hits), (5, 1));
    assert!((stats.hit_ratio() - 0.2).abs() < 1e-12);
    assert_eq!(replay(&mut Lru::new(1), &[]).hit_ratio(), 0.0);
}

/// A long random trace with a large cache: the heap rebuild path (stale entries dropped once
/// they outnumber live ones) runs many times and must not change a single decision.
#[test]
fn opt_heap_rebuilds_do_not_change_decisions() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let keys: Vec<u64> = (0..6_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 300
        })
        .collect();
    let hits = hits_of(&mut Opt::new(&keys, 100), &keys);
    assert!(
        hits.iter().filter(|&&h| h).count() > 2_000,
        "enough hits to force rebuilds"
    );
    assert_eq!(hits, naive_opt(&keys, 100));
}
