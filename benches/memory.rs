//! Resident memory per entry: 1 000 000 entries with empty values, for memocache (with a
//! default TTL, so every entry is on the expiry wheel, and access tracking as always), moka,
//! quick_cache and a bare `DashMap<[u8; 32], Bytes>`.
//!
//! Each cache is measured in a fresh process — this binary re-invokes itself with the name of
//! the cache in `MEMOCACHE_MEMORY_CHILD` — so that one allocator's free lists cannot flatter
//! the next. The child reads its resident set (`VmRSS` of `/proc/self/status`, which is
//! `/proc/self/statm`'s resident pages already in bytes, without assuming a page size) before
//! building the cache and after filling it, and reports the difference per entry held. Keys are
//! derived from a counter inside the fill loop, so no key list is counted. Linux only.
//!
//! Run with `cargo bench --bench memory`. Under `cargo test` (no `--bench` argument) it does
//! nothing, so the test run stays fast.

use std::hint::black_box;
use std::process::Command;

use bytes::Bytes;
use dashmap::DashMap;
use memocache::{Cache, CacheKey, Ttl};

const ENTRIES: u64 = 1_000_000;
const CHILD: &str = "MEMOCACHE_MEMORY_CHILD";
const CACHES: [&str; 5] = [
    "memocache",
    "memocache-no-ttl",
    "moka",
    "quick_cache",
    "dashmap",
];

/// A well-spread digest for entry `i` (SplitMix64 of four counters).
fn digest(i: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (lane, chunk) in out.chunks_exact_mut(8).enumerate() {
        let mut z = (i * 4 + lane as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// Resident set size in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// The RSS growth since `before` while `cache` (holding `held` entries) is alive.
fn settle<T>(cache: T, held: u64, before: u64) -> (u64, u64) {
    let grown = rss().saturating_sub(before);
    drop(black_box(cache));
    (held, grown)
}

/// Fills the named cache; returns the entries it holds and the RSS growth.
fn measure(name: &str) -> (u64, u64) {
    // Intern the prefix before the first reading.
    black_box(CacheKey::from_digest(digest(0), "mem").expect("valid prefix"));
    let before = rss();
    match name {
        "memocache" | "memocache-no-ttl" => {
            let mut builder = Cache::builder().max_bytes(1 << 40);
            if name == "memocache" {
                builder = builder.default_ttl(Ttl::hours(24).expect("positive"));
            }
            let cache = builder.build().expect("valid");
            for i in 0..ENTRIES {
                let key = CacheKey::from_digest(digest(i), "mem").expect("valid prefix");
                cache.insert(key, Bytes::new()).expect("fits");
            }
            let held = cache.len() as u64;
            settle(cache, held, before)
        }
        "moka" => {
            let cache = moka::sync::Cache::new(ENTRIES);
            for i in 0..ENTRIES {
                cache.insert(digest(i), Bytes::new());
            }
            cache.run_pending_tasks();
            let held = cache.entry_count();
            settle(cache, held, before)
        }
        "quick_cache" => {
            let cache = quick_cache::sync::Cache::new(ENTRIES as usize);
            for i in 0..ENTRIES {
                cache.insert(digest(i), Bytes::new());
            }
            let held = cache.len() as u64;
            settle(cache, held, before)
        }
        "dashmap" => {
            let map = DashMap::new();
            for i in 0..ENTRIES {
                map.insert(digest(i), Bytes::new());
            }
            let held = map.len() as u64;
            settle(map, held, before)
        }
        other => panic!("unknown cache {other}"),
    }
}

fn main() {
    if let Ok(name) = std::env::var(CHILD) {
        let (held, grown) = measure(&name);
        println!("{held} {grown}");
        return;
    }
    if !std::env::args().any(|arg| arg == "--bench") {
        // `cargo test --benches` runs bench binaries without `--bench`: stay out of its way.
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    println!("RSS per entry, {ENTRIES} entries with empty values (each in its own process):");
    println!(
        "{:<18} {:>10} {:>14} {:>12}",
        "cache", "held", "RSS growth", "B/entry"
    );
    for name in CACHES {
        let output = Command::new(&exe)
            .env(CHILD, name)
            .output()
            .expect("re-run self");
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse::<u64>().expect("a number"));
        let (held, grown) = (fields.next().expect("held"), fields.next().expect("grown"));
        println!(
            "{name:<18} {held:>10} {grown:>14} {:>12.1}",
            grown as f64 / held as f64
        );
    }
}
