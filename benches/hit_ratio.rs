//! Hit ratio of memocache against moka, quick_cache, an exact LRU and Bélády's OPT.
//!
//! `cargo bench --bench hit_ratio` replays seeded Zipf workloads and every trace in
//! `../shared/traces` (see its SOURCES.md) at capacities of 1 % and 10 % of each workload's
//! distinct keys (sizes below 10 skipped), one request at a time, single-threaded, through
//! each contender, and prints one markdown table, also written to `target/hit_ratio.md`.
//!
//! Every contender is a [`Policy`]: `access(key)` looks the key up and inserts it on a miss
//! (empty values), so admission and eviction are each cache's own. Caches bounded in bytes are
//! bounded by entries here (memocache: `max_entries`, with a byte budget that never binds).
//! moka does its eviction bookkeeping lazily in batches; to measure its policy rather than its
//! lag, `run_pending_tasks` is called after every insert, so it never holds more than its
//! capacity between requests, as the other caches and the simulators do not.
//!
//! Run time (one run, 2-core machine shared with other builds and benches): 923 s wall,
//! 292 s of CPU; moka took 73 % of the replay time (its per-insert `run_pending_tasks`),
//! memocache 13 %.
//! The four traces with more than 4 M requests took about 740 s of the 923.
//!
//! Environment:
//! * `HIT_RATIO_TRACES=all` (default) replays every trace; `small` skips the four traces with
//!   more than 4 M requests (P2, P6, w106, orm-night): 110 s in the same conditions; `none`
//!   runs only the Zipf workloads.
//! * `MEMOCACHE_TRACES=<dir>` reads the traces from elsewhere.

use std::fmt::Write as _;
use std::time::Instant;

use memocache::trace::{CachePolicy, Lru, Opt, Policy, Trace, replay};

#[path = "../tests/trace_support/mod.rs"]
mod trace_support;

/// An online cache under test: its name and how to make one of a given capacity.
struct Contender {
    name: &'static str,
    make: fn(usize) -> Box<dyn Policy>,
}

/// The baselines memocache must match or beat, in table order.
const PEERS: [Contender; 3] = [
    Contender {
        name: "LRU",
        make: |capacity| Box::new(Lru::new(capacity)),
    },
    Contender {
        name: "moka",
        make: |capacity| {
            Box::new(Moka(moka::sync::Cache::new(
                u64::try_from(capacity).unwrap_or(u64::MAX),
            )))
        },
    },
    Contender {
        name: "quick_cache",
        make: |capacity| Box::new(QuickCache(quick_cache::sync::Cache::new(capacity))),
    },
];

/// memocache, bounded by entries, with the crate's trace-id → key mapping. (An `Option` so the
/// bench ran before the engine existed.)
const MEMOCACHE: Option<Contender> = Some(Contender {
    name: "memocache",
    make: |capacity| {
        Box::new(CachePolicy::with_capacity(capacity).expect("a valid entry-bounded configuration"))
    },
});

struct Moka(moka::sync::Cache<u64, ()>);

impl Policy for Moka {
    fn access(&mut self, key: u64) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        self.0.insert(key, ());
        self.0.run_pending_tasks();
        false
    }
}

struct QuickCache(quick_cache::sync::Cache<u64, ()>);

impl Policy for QuickCache {
    fn access(&mut self, key: u64) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        self.0.insert(key, ());
        false
    }
}

/// Zipf(`exponent`) ranks over `keys` keys, by inverting the CDF with a binary search, from a
/// seeded SplitMix64 stream: the same requests on every run and machine.
fn zipf(requests: usize, keys: usize, exponent: f64, seed: u64) -> Vec<u64> {
    let mut cdf: Vec<f64> = (1..=keys)
        .scan(0.0, |sum, rank| {
            *sum += (rank as f64).powf(-exponent);
            Some(*sum)
        })
        .collect();
    let total = cdf.last().copied().unwrap_or(1.0);
    cdf.iter_mut().for_each(|c| *c /= total);
    let mut state = seed;
    (0..requests)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let u = (z ^ (z >> 31)) as f64 / u64::MAX as f64;
            cdf.partition_point(|&c| c < u).min(keys - 1) as u64
        })
        .collect()
}

fn percent(hits: u64, requests: usize) -> f64 {
    100.0 * hits as f64 / requests.max(1) as f64
}

/// Replays `trace` at 1 % and 10 % of its distinct keys; one table row per capacity.
fn rows(name: &str, trace: &Trace, table: &mut String) {
    // Integer division: floor(f × unique), the libCacheSim convention SOURCES.md uses.
    for divisor in [100, 10] {
        let capacity = trace.unique() / divisor;
        if capacity < 10 {
            continue;
        }
        // Seconds per contender, printed with the progress line (not part of the table).
        let mut timings = String::new();
        let mut ratio = |name: &str, policy: &mut dyn Policy| {
            let started = Instant::now();
            let hits = replay(policy, trace.keys()).hits;
            let _ = write!(timings, " {name} {:.1}s", started.elapsed().as_secs_f64());
            percent(hits, trace.requests())
        };
        let peers: Vec<f64> = PEERS
            .iter()
            .map(|c| ratio(c.name, &mut *(c.make)(capacity)))
            .collect();
        let memocache = MEMOCACHE
            .as_ref()
            .map(|c| ratio(c.name, &mut *(c.make)(capacity)));
        // Planning OPT (the next-use pass) is part of its time.
        let opt = {
            let started = Instant::now();
            let hits = replay(&mut Opt::new(trace.keys(), capacity), trace.keys()).hits;
            let _ = write!(timings, " OPT {:.1}s", started.elapsed().as_secs_f64());
            percent(hits, trace.requests())
        };
        let best = peers.iter().copied().fold(f64::MIN, f64::max);
        let (memo, delta) = match memocache {
            Some(m) => (format!("{m:.2}"), format!("{:+.2}", m - best)),
            None => ("n/a".to_owned(), "n/a".to_owned()),
        };
        let peers: String = peers.iter().map(|p| format!("{p:.2} | ")).collect();
        let row = format!(
            "| {name} | {capacity} | {} | {peers}{memo} | {opt:.2} | {delta} |",
            trace.requests(),
        );
        eprintln!("{row}  [{}]", timings.trim());
        table.push_str(&row);
        table.push('\n');
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test --benches` run passes nothing useful and
    // should not spend minutes here.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("hit_ratio: run with `cargo bench --bench hit_ratio`");
        return;
    }
    let selection = std::env::var("HIT_RATIO_TRACES").unwrap_or_else(|_| "all".to_owned());
    let max_requests = match selection.as_str() {
        "all" => usize::MAX,
        "small" => 4_000_000,
        "none" => 0,
        other => {
            eprintln!("HIT_RATIO_TRACES={other:?}: expected all, small or none");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let names: Vec<&str> = PEERS.iter().map(|c| c.name).collect();
    let mut table = format!(
        "| trace | capacity | requests | {} | memocache | OPT | memocache − best({}) |\n\
         |---|---:|---:|{}---:|---:|---:|\n",
        names.join(" | "),
        names.join(","),
        "---:|".repeat(names.len()),
    );
    for exponent in [0.8, 1.0, 1.2] {
        let trace = Trace::from_keys(zipf(1_000_000, 100_000, exponent, 42));
        rows(
            &format!("zipf-{exponent:.1} (1M req, 100k keys)"),
            &trace,
            &mut table,
        );
    }
    if max_requests > 0
        && let Some(dir) = trace_support::traces_dir()
    {
        for path in trace_support::trace_files(&dir) {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match Trace::load(&path) {
                Ok(trace) if trace.requests() > max_requests => {
                    eprintln!(
                        "{name}: skipped ({} requests; HIT_RATIO_TRACES=all replays it)",
                        trace.requests()
                    );
                }
                Ok(trace) => rows(&name, &trace, &mut table),
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = writeln!(
        table,
        "\nHit ratio in percent; one run, single-threaded; HIT_RATIO_TRACES={selection}; {elapsed:.0} s."
    );
    println!("{table}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|target| target.join("hit_ratio.md"));
    match out.map(|path| std::fs::write(&path, &table).map(|()| path)) {
        Some(Ok(path)) => eprintln!("table written to {}", path.display()),
        Some(Err(e)) => eprintln!("could not write the table: {e}"),
        None => eprintln!("could not locate the target directory"),
    }
}
