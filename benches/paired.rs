//! The throughput workloads of `throughput.rs`, with memocache, quick_cache and moka taking
//! turns, then those of `queue.rs`, with `JobQueue` and the `BinaryHeap` baseline taking turns:
//! `cargo bench --bench paired`.
//!
//! Criterion measures one cache after another, so on a machine whose speed drifts (a shared
//! VM) a ratio between two of its rows also measures the drift between them. Here every round
//! times each cache once on the same workload, right after the others, starting with a
//! different cache each round; a ratio is taken within a round, and the report gives the
//! geometric mean of those ratios and in how many rounds memocache was ahead, beside each
//! cache's median rate.
//!
//! The hit workload also times a bare `HashMap` (see `contenders::Bare`): the same lookups
//! with no lock and no bookkeeping at all, which is about how fast the machine can serve them,
//! and so what a cache's locking, statistics and access tracking cost on top (the README
//! discusses it).
//!
//! A cache's turn is `TURN_BATCHES` batches of `contenders::BATCH` operations per thread. The
//! caches are built once per workload, and an untimed round warms them first. A queue's turn
//! submits, takes and completes `QUEUE_TURN_JOBS` jobs on a new queue (the criterion bench's
//! loops, with its default configuration). Set `PAIRED_ROUNDS` to change the number of rounds
//! (default 10), and `PAIRED_ONLY=queue` to run only the queue part (or `PAIRED_ONLY=cache`,
//! only the caches): a queue change is measured in about a minute instead of three and a half.

mod contenders;
mod queues;

use std::time::Instant;

use contenders::*;
use queues::{WorkerLoop, heap_1t, heap_2t, jobqueue_1t, jobqueue_2t, queue};

/// Batches per timed turn: a turn of a million operations per thread lasts long enough that
/// thread start-up and timer resolution do not matter.
const TURN_BATCHES: u32 = 20;

/// Jobs per timed queue turn.
const QUEUE_TURN_JOBS: u64 = 500_000;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn geometric_mean(xs: &[f64]) -> f64 {
    (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp()
}

/// Times `rounds` rounds (after an untimed one) in which every contender takes one turn, each
/// round starting with the next contender; returns each contender's rates by round.
fn rounds_of(turns: &mut [&mut dyn FnMut() -> f64], rounds: usize) -> Vec<Vec<f64>> {
    let n = turns.len();
    let mut rates = vec![Vec::with_capacity(rounds); n];
    for round in 0..=rounds {
        for k in 0..n {
            let which = (round + k) % n;
            let rate = turns[which]();
            if round > 0 {
                rates[which].push(rate);
            }
        }
    }
    rates
}

/// The geometric mean of contender `a`'s per-round ratios to contender `b`'s, and in how many
/// rounds `a` was ahead.
fn ratio(rates: &[Vec<f64>], a: usize, b: usize) -> (f64, usize) {
    let ratios: Vec<f64> = rates[a].iter().zip(&rates[b]).map(|(a, b)| a / b).collect();
    let ahead = ratios.iter().filter(|&&r| r > 1.0).count();
    (geometric_mean(&ratios), ahead)
}

/// Runs `rounds` rounds on the three caches, and on the bare map if there is one (the hit
/// workload), and prints one line.
fn compare(
    label: &str,
    (memo, quick, moka): (&Memo, &Quick, &Moka),
    bare: Option<&Bare>,
    sequences: &[Vec<u32>],
    workload: Workload,
    rounds: usize,
) {
    let shift = std::cell::Cell::new(0);
    let turn_of = |cache: &dyn Fn(u32)| {
        let start = Instant::now();
        for _ in 0..TURN_BATCHES {
            cache(shift.get());
            shift.set((shift.get() + BATCH as u32) % KEY_SPACE as u32);
        }
        let ops = f64::from(TURN_BATCHES) * (sequences.len() * BATCH) as f64;
        ops / start.elapsed().as_secs_f64()
    };
    let mut memo_turn = || turn_of(&|s| run(memo, sequences, workload, s));
    let mut quick_turn = || turn_of(&|s| run(quick, sequences, workload, s));
    let mut moka_turn = || turn_of(&|s| run(moka, sequences, workload, s));
    let mut bare_turn = bare.map(|bare| move || turn_of(&|s| run(bare, sequences, workload, s)));
    let mut turns: Vec<&mut dyn FnMut() -> f64> =
        vec![&mut memo_turn, &mut quick_turn, &mut moka_turn];
    if let Some(bare_turn) = bare_turn.as_mut() {
        turns.push(bare_turn);
    }
    let rates = rounds_of(&mut turns, rounds);
    let (vs_quick, ahead_quick) = ratio(&rates, 0, 1);
    let (vs_moka, ahead_moka) = ratio(&rates, 0, 2);
    let [m, q, k] = [0, 1, 2].map(|i| median(rates[i].clone()) / 1e6);
    let (bare_rate, vs_bare) = match rates.get(3) {
        Some(bare_rates) => {
            let (vs_bare, _) = ratio(&rates, 0, 3);
            let b = median(bare_rates.clone()) / 1e6;
            (format!("{b:.2} M"), format!("{vs_bare:.2}"))
        }
        None => ("—".into(), "—".into()),
    };
    println!(
        "| {label} | {m:.2} M | {q:.2} M | {k:.2} M | {bare_rate} | \
         {vs_quick:.2} ({ahead_quick}/{rounds}) | {vs_moka:.2} ({ahead_moka}/{rounds}) | {vs_bare} |"
    );
}

/// Runs `rounds` rounds of `JobQueue` (both worker loops) and the heap and prints one line.
fn compare_queues(threads: usize, rounds: usize) {
    let jobs_per_second =
        |elapsed: std::time::Duration| QUEUE_TURN_JOBS as f64 / elapsed.as_secs_f64();
    let job_queue = |how| {
        jobs_per_second(if threads == 1 {
            jobqueue_1t(queue(), how, QUEUE_TURN_JOBS)
        } else {
            jobqueue_2t(how, QUEUE_TURN_JOBS)
        })
    };
    let heap = || {
        jobs_per_second(if threads == 1 {
            heap_1t(QUEUE_TURN_JOBS)
        } else {
            heap_2t(QUEUE_TURN_JOBS)
        })
    };
    let rates = rounds_of(
        &mut [
            &mut || job_queue(WorkerLoop::NextThenComplete),
            &mut || job_queue(WorkerLoop::CompleteAndNext),
            &mut || heap(),
        ],
        rounds,
    );
    let (plain, ahead_plain) = ratio(&rates, 0, 2);
    let (one_call, ahead_one_call) = ratio(&rates, 1, 2);
    let [p, c, h] = [0, 1, 2].map(|i| median(rates[i].clone()) / 1e6);
    println!(
        "| {threads} thread(s) | {p:.2} M | {c:.2} M | {h:.2} M | {plain:.2} ({ahead_plain}/{rounds}) | \
         {one_call:.2} ({ahead_one_call}/{rounds}) |"
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there are no other arguments to take.
    let rounds = std::env::var("PAIRED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10);
    println!(
        "{rounds} rounds; medians of operations per second; memocache ÷ peer as the geometric \
         mean of the per-round ratios (rounds memocache was ahead)\n"
    );
    let only = std::env::var("PAIRED_ONLY").unwrap_or_default();
    if only != "queue" {
        caches(rounds);
    }
    if only != "cache" {
        queues(rounds);
    }
}

/// The cache workloads' table.
fn caches(rounds: usize) {
    println!(
        "| workload | memocache | quick_cache | moka | bare HashMap | ÷ quick_cache | ÷ moka | \
         ÷ bare HashMap |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");

    let (hot_memo, hot_quick, hot_moka) = hot_caches();
    let bare = hot_bare();
    for threads in [1, 2] {
        let sequences = zipf_sequences(HOT_KEYS, threads, 1);
        let label = format!("hits, {threads} thread(s)");
        compare(
            &label,
            (&hot_memo, &hot_quick, &hot_moka),
            Some(&bare),
            &sequences,
            Workload::Hits,
            rounds,
        );
    }

    let keys = digests(KEY_SPACE);
    // What the get-or-insert rows timed: hits only, or misses too.
    let mut misses = Vec::new();
    for (name, workload) in [
        ("get-or-insert", Workload::GetOrInsert),
        ("inserts", Workload::Insert),
    ] {
        for threads in [1, 2] {
            let sequences = match workload {
                Workload::Insert => uniform_sequences(KEY_SPACE, threads),
                _ => zipf_sequences(KEY_SPACE, threads, STREAM_BATCHES),
            };
            let caches = (
                &Memo::new(CAPACITY, &keys),
                &quick(CAPACITY, &keys),
                &moka(CAPACITY, &keys),
            );
            let label = format!("{name}, {threads} thread(s)");
            compare(&label, caches, None, &sequences, workload, rounds);
            if let Workload::GetOrInsert = workload {
                // quick_cache counts only with a feature that would slow it down.
                misses.push(format!(
                    "{label}: {:.1} % of memocache's reads missed",
                    100.0 * caches.0.miss_ratio(),
                ));
            }
        }
    }
    println!();
    for line in misses {
        println!("{line}");
    }
}

/// The job queue's table.
fn queues(rounds: usize) {
    println!(
        "\nJob queue: {QUEUE_TURN_JOBS} jobs a turn; JobQueue (default configuration) ÷ \
         Mutex<BinaryHeap> + Condvar\n"
    );
    println!(
        "| threads | JobQueue, next + complete | JobQueue, complete_and_next | BinaryHeap | \
         ÷ heap, next + complete | ÷ heap, complete_and_next |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for threads in [1, 2] {
        compare_queues(threads, rounds);
    }
}
