//! Snapshot save and load of 1 GiB of entries (values of 1 KiB to 1 MiB, log-uniform), next
//! to their limits in the same run: a plain sequential write (+ fsync) and read of the same
//! value bytes, and SHA-256 over them in memory (`ring`, the checksum every snapshot byte
//! goes through).
//!
//! Each operation on 1 GiB takes seconds, so this is a plain `harness = false` bench: a few
//! rounds, each running every row once (interleaved, so that load from other processes hits
//! all rows alike), then a table of the median and best MiB/s. Every row counts the same
//! bytes: the sum of the value sizes. Reads come from the page cache for both the plain file
//! and the snapshot (both were just written, and RAM is far larger than 2 GiB); writes are
//! fsynced in both.
//!
//! Run with `cargo bench --bench snapshot`; `SNAPSHOT_BENCH_ROUNDS` sets the rounds (3).

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use memocache::{Cache, CacheKey};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use ring::digest::{Context, SHA256};

const TOTAL: u64 = 1 << 30;
const MIN_VALUE: f64 = 1024.0;
const MAX_VALUE: f64 = 1024.0 * 1024.0;

/// Values totalling ~1 GiB, sizes log-uniform in [1 KiB, 1 MiB] from a fixed seed.
fn values() -> Vec<Bytes> {
    let mut rng = SmallRng::seed_from_u64(0x5EED);
    let mut values = Vec::new();
    let mut total = 0u64;
    while total < TOTAL {
        let exponent: f64 = rng.random_range(MIN_VALUE.log2()..=MAX_VALUE.log2());
        let len = exponent.exp2() as usize;
        values.push(Bytes::from(vec![rng.random::<u8>(); len]));
        total += len as u64;
    }
    values
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = black_box(f());
    (start.elapsed(), out)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: run only then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("SNAPSHOT_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let snap_path = dir.path().join("bench.snap");
    let plain_path = dir.path().join("bench.plain");
    let values = values();
    let bytes: u64 = values.iter().map(|v| v.len() as u64).sum();
    let cache = Cache::builder()
        .max_bytes(2 * TOTAL)
        .build()
        .expect("builds");
    for (i, value) in values.iter().enumerate() {
        let key = CacheKey::from_content(&(i as u64).to_le_bytes(), "bench").expect("key");
        cache.insert(key, value.clone()).expect("fits");
    }
    println!(
        "{} entries, {bytes} value bytes; {rounds} rounds",
        values.len()
    );

    let rows = [
        "plain_write_fsync",
        "save_snapshot",
        "plain_read",
        "load_snapshot",
        "sha256_in_memory",
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        let (t, ()) = time(|| {
            let file = File::create(&plain_path).expect("creates");
            let mut out = BufWriter::with_capacity(1 << 20, &file);
            for value in &values {
                out.write_all(value).expect("writes");
            }
            out.flush().expect("flushes");
            drop(out);
            file.sync_all().expect("syncs");
        });
        times[0].push(t);
        let (t, report) = time(|| cache.save_snapshot(&snap_path).expect("saves"));
        assert_eq!(report.entries as usize, values.len());
        times[1].push(t);
        let (t, plain) = time(|| std::fs::read(&plain_path).expect("reads"));
        assert_eq!(plain.len() as u64, bytes);
        drop(plain);
        times[2].push(t);
        let restored = Cache::builder()
            .max_bytes(2 * TOTAL)
            .build()
            .expect("builds");
        let (t, report) = time(|| restored.load_snapshot(&snap_path).expect("loads"));
        assert_eq!(report.restored as usize, values.len());
        drop(restored);
        times[3].push(t);
        let (t, _) = time(|| {
            let mut hasher = Context::new(&SHA256);
            for value in &values {
                hasher.update(value);
            }
            hasher.finish()
        });
        times[4].push(t);
        eprintln!("round {} of {rounds} done", round + 1);
    }

    let mib_s = |t: Duration| bytes as f64 / (1 << 20) as f64 / t.as_secs_f64();
    let median = |ts: &[Duration]| {
        let mut ts = ts.to_vec();
        ts.sort();
        ts[ts.len() / 2]
    };
    let medians: Vec<f64> = times.iter().map(|ts| mib_s(median(ts))).collect();
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>10}",
        "row", "median s", "median MiB/s", "best MiB/s", "vs plain"
    );
    for (i, row) in rows.iter().enumerate() {
        let best = times[i].iter().min().copied().unwrap_or_default();
        let ratio = match i {
            1 => format!("{:.0} %", 100.0 * medians[1] / medians[0]),
            3 => format!("{:.0} %", 100.0 * medians[3] / medians[2]),
            _ => String::new(),
        };
        println!(
            "{row:<20} {:>12.2} {:>12.1} {:>12.1} {:>10}",
            median(&times[i]).as_secs_f64(),
            medians[i],
            mib_s(best),
            ratio
        );
    }
}
