//! Snapshot save and load of 1 GiB of entries (values of 1 KiB to 1 MiB, log-uniform), next
//! to their limits in the same run: a plain sequential write (+ fsync) and read of the same
//! value bytes, and SHA-256 over them in memory (`ring`, the hash every snapshot byte goes
//! through) on one thread and split over all cores.
//!
//! Each operation on 1 GiB takes seconds, so this is a plain `harness = false` bench: a few
//! rounds, each running every row once, then a table of the median and best MiB/s (each
//! round's figures go to stderr as it ends). Every row counts the same bytes: the sum of the
//! value sizes. Writes are fsynced in both rows. Reads are measured twice: *cold*, from the
//! disk, right after the file's pages were dropped from the page cache
//! (`posix_fadvise(POSIX_FADV_DONTNEED)` on the fsynced file), and *warm*, from the page
//! cache.
//!
//! **Order.** Each snapshot row runs right next to its plain row, and the two swap places
//! every round. On a virtual machine the order matters a lot: on this project's (a
//! Firecracker guest that reports freed memory to its host) the second of two cold reads in a
//! row often ran at under half the first's rate, whichever file it read, and the second of
//! two writes was slowed too. Swapping gives both rows of a pair the
//! same share of each place; the default of 6 rounds gives each 3, and the median of an even
//! count is the mean of the middle two.
//!
//! Each row also reports the process CPU time it used (all threads) and the calling
//! thread's: on a machine shared with other work, where wall time is inflated by the load,
//! the larger of the caller's CPU time and the process's ÷ cores is what the row's
//! computation needs at least on an idle machine (waits for the disk come on top).
//!
//! Run with `cargo bench --bench snapshot`; `SNAPSHOT_BENCH_ROUNDS` sets the rounds (6).

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use memocache::{Cache, CacheKey};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use ring::digest::{Context, SHA256};
use rustix::fs::{Advice, fadvise};
use rustix::time::{ClockId, clock_gettime};

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

/// Time used so far: (process CPU, this thread's CPU).
fn cpu_time() -> (Duration, Duration) {
    let at = |clock| {
        let t = clock_gettime(clock);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    (at(ClockId::ProcessCPUTime), at(ClockId::ThreadCPUTime))
}

/// What one run of a row took: wall time, process CPU time, calling thread's CPU time.
type Times = (Duration, Duration, Duration);

/// The times of `f`, and its result.
fn time<T>(f: impl FnOnce() -> T) -> (Times, T) {
    let (process, thread) = cpu_time();
    let start = Instant::now();
    let out = black_box(f());
    let wall = start.elapsed();
    let (process_now, thread_now) = cpu_time();
    ((wall, process_now - process, thread_now - thread), out)
}

/// Drops the (fsynced, hence clean) pages of the file at `path` from the page cache, so the
/// next read comes from the disk.
fn drop_from_page_cache(path: &Path) {
    let file = File::open(path).expect("opens");
    file.sync_all().expect("syncs");
    fadvise(&file, 0, None, Advice::DontNeed).expect("fadvise");
}

const ROWS: [&str; 8] = [
    "plain_write_fsync",
    "save_snapshot",
    "plain_read_cold",
    "load_snapshot_cold",
    "plain_read_warm",
    "load_snapshot_warm",
    "sha256_1_thread",
    "sha256_all_cores",
];

/// The row each snapshot row is compared with.
fn baseline(row: usize) -> Option<usize> {
    match ROWS[row] {
        "save_snapshot" => Some(0),
        "load_snapshot_cold" => Some(2),
        "load_snapshot_warm" => Some(4),
        _ => None,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: run only then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("SNAPSHOT_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
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
        "{} entries, {bytes} value bytes; {rounds} rounds; {cores} cores",
        values.len()
    );

    let mut wall: Vec<Vec<Duration>> = vec![Vec::new(); ROWS.len()];
    let mut cpu: Vec<Vec<Duration>> = vec![Vec::new(); ROWS.len()];
    let mut caller: Vec<Vec<Duration>> = vec![Vec::new(); ROWS.len()];
    let mut record = |row: usize, (w, c, t): Times| {
        wall[row].push(w);
        cpu[row].push(c);
        caller[row].push(t);
        w
    };
    let load = |row: usize| {
        let restored = Cache::builder()
            .max_bytes(2 * TOTAL)
            .build()
            .expect("builds");
        let (times, report) = time(|| restored.load_snapshot(&snap_path).expect("loads"));
        assert_eq!(report.restored as usize, values.len(), "{}", ROWS[row]);
        // Freeing 1 GiB is not part of the load.
        drop(restored);
        times
    };
    let read = || {
        let (times, plain) = time(|| std::fs::read(&plain_path).expect("reads"));
        assert_eq!(plain.len() as u64, bytes);
        drop(plain);
        times
    };
    let run = |row: usize| -> Times {
        match ROWS[row] {
            "plain_write_fsync" => {
                time(|| {
                    let file = File::create(&plain_path).expect("creates");
                    let mut out = BufWriter::with_capacity(1 << 20, &file);
                    for value in &values {
                        out.write_all(value).expect("writes");
                    }
                    out.flush().expect("flushes");
                    drop(out);
                    file.sync_all().expect("syncs");
                })
                .0
            }
            "save_snapshot" => {
                let (times, report) = time(|| cache.save_snapshot(&snap_path).expect("saves"));
                assert_eq!(report.entries as usize, values.len());
                times
            }
            "plain_read_cold" => {
                drop_from_page_cache(&plain_path);
                read()
            }
            "load_snapshot_cold" => {
                drop_from_page_cache(&snap_path);
                load(row)
            }
            "plain_read_warm" => read(),
            "load_snapshot_warm" => load(row),
            "sha256_1_thread" => {
                time(|| {
                    let mut hasher = Context::new(&SHA256);
                    for value in &values {
                        hasher.update(value);
                    }
                    hasher.finish()
                })
                .0
            }
            "sha256_all_cores" => {
                time(|| {
                    std::thread::scope(|scope| {
                        for t in 0..cores {
                            let values = &values;
                            scope.spawn(move || {
                                for value in values.iter().skip(t).step_by(cores) {
                                    black_box(ring::digest::digest(&SHA256, value));
                                }
                            });
                        }
                    })
                })
                .0
            }
            other => unreachable!("no row {other}"),
        }
    };
    let mib_s = |t: Duration| bytes as f64 / (1 << 20) as f64 / t.as_secs_f64();
    for round in 0..rounds {
        // Each snapshot row runs next to its plain row, first in even rounds and second in
        // odd ones: what one operation leaves behind (freed memory the host has or has not
        // taken back yet, pages being written back) then favours neither row of a pair.
        let mut this_round = vec![Duration::ZERO; ROWS.len()];
        for pair in [[0, 1], [2, 3], [4, 5], [6, 7]] {
            let order = if round % 2 == 0 {
                pair
            } else {
                [pair[1], pair[0]]
            };
            for row in order {
                this_round[row] = record(row, run(row));
            }
        }
        let figures: Vec<String> = this_round
            .iter()
            .map(|&t| format!("{:.0}", mib_s(t)))
            .collect();
        eprintln!(
            "round {} of {rounds}, MiB/s by row: {}",
            round + 1,
            figures.join(" ")
        );
    }

    let median = |ts: &[Duration]| {
        let mut ts = ts.to_vec();
        ts.sort();
        let mid = ts.len() / 2;
        if ts.len().is_multiple_of(2) {
            (ts[mid - 1] + ts[mid]) / 2
        } else {
            ts[mid]
        }
    };
    let medians: Vec<f64> = wall.iter().map(|ts| mib_s(median(ts))).collect();
    println!(
        "{:<20} {:>9} {:>13} {:>11} {:>13} {:>16} {:>9}",
        "row", "median s", "median MiB/s", "best MiB/s", "median CPU s", "caller CPU s", "vs plain"
    );
    for (i, row) in ROWS.iter().enumerate() {
        let best = wall[i].iter().min().copied().unwrap_or_default();
        let ratio = baseline(i)
            .map(|b| format!("{:.0} %", 100.0 * medians[i] / medians[b]))
            .unwrap_or_default();
        println!(
            "{row:<20} {:>9.2} {:>13.1} {:>11.1} {:>13.2} {:>16.2} {:>9}",
            median(&wall[i]).as_secs_f64(),
            medians[i],
            mib_s(best),
            median(&cpu[i]).as_secs_f64(),
            median(&caller[i]).as_secs_f64(),
            ratio
        );
    }
}
