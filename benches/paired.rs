//! The throughput workloads of `throughput.rs`, with memocache, quick_cache and moka taking
//! turns: `cargo bench --bench paired`.
//!
//! Criterion measures one cache after another, so on a machine whose speed drifts (a shared
//! VM) a ratio between two of its rows also measures the drift between them. Here every round
//! times each cache once on the same workload, right after the others, starting with a
//! different cache each round; a ratio is taken within a round, and the report gives the
//! geometric mean of those ratios and in how many rounds memocache was ahead, beside each
//! cache's median rate.
//!
//! A turn is `TURN_BATCHES` batches of `contenders::BATCH` operations per thread. The caches are
//! built once per workload, and an untimed round warms them first. Set `PAIRED_ROUNDS` to
//! change the number of rounds (default 10).

mod contenders;

use std::time::Instant;

use contenders::*;

/// Batches per timed turn: a turn of a million operations per thread lasts long enough that
/// thread start-up and timer resolution do not matter.
const TURN_BATCHES: u32 = 20;

/// Times one turn of `cache` and returns operations per second. Inserts continue the key
/// shift from the previous turn, so that they keep evicting.
fn turn<C: Contender>(
    cache: &C,
    sequences: &[Vec<u32>],
    workload: Workload,
    shift: &mut u32,
) -> f64 {
    let start = Instant::now();
    for _ in 0..TURN_BATCHES {
        run(cache, sequences, workload, *shift);
        *shift = (*shift + BATCH as u32) % KEY_SPACE as u32;
    }
    let ops = f64::from(TURN_BATCHES) * (sequences.len() * BATCH) as f64;
    ops / start.elapsed().as_secs_f64()
}

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

/// Runs `rounds` rounds on the three caches and prints one line.
fn compare(
    label: &str,
    (memo, quick, moka): (&Memo, &Quick, &Moka),
    sequences: &[Vec<u32>],
    workload: Workload,
    rounds: usize,
) {
    let mut shift = 0;
    // rates[cache][round]: 0 memocache, 1 quick_cache, 2 moka.
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..=rounds {
        let mut this_round = [0.0; 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            this_round[which] = match which {
                0 => turn(memo, sequences, workload, &mut shift),
                1 => turn(quick, sequences, workload, &mut shift),
                _ => turn(moka, sequences, workload, &mut shift),
            };
        }
        // Round 0 warms the caches and is not counted.
        if round > 0 {
            for (rate, r) in rates.iter_mut().zip(this_round) {
                rate.push(r);
            }
        }
    }
    let ratio = |other: usize| -> (f64, usize) {
        let ratios: Vec<f64> = rates[0]
            .iter()
            .zip(&rates[other])
            .map(|(m, o)| m / o)
            .collect();
        let ahead = ratios.iter().filter(|&&r| r > 1.0).count();
        (geometric_mean(&ratios), ahead)
    };
    let (vs_quick, ahead_quick) = ratio(1);
    let (vs_moka, ahead_moka) = ratio(2);
    let [m, q, k] = rates.map(|r| median(r) / 1e6);
    println!(
        "| {label} | {m:.2} M | {q:.2} M | {k:.2} M | {vs_quick:.2} ({ahead_quick}/{rounds}) | \
         {vs_moka:.2} ({ahead_moka}/{rounds}) |"
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
    println!("| workload | memocache | quick_cache | moka | ÷ quick_cache | ÷ moka |");
    println!("|---|---:|---:|---:|---:|---:|");

    let (hot_memo, hot_quick, hot_moka) = hot_caches();
    for threads in [1, 2] {
        let sequences = zipf_sequences(HOT_KEYS, threads);
        let label = format!("hits, {threads} thread(s)");
        compare(
            &label,
            (&hot_memo, &hot_quick, &hot_moka),
            &sequences,
            Workload::Hits,
            rounds,
        );
    }

    let keys = digests(KEY_SPACE);
    for (name, workload) in [
        ("get-or-insert", Workload::GetOrInsert),
        ("inserts", Workload::Insert),
    ] {
        for threads in [1, 2] {
            let sequences = match workload {
                Workload::Insert => uniform_sequences(KEY_SPACE, threads),
                _ => zipf_sequences(KEY_SPACE, threads),
            };
            let caches = (
                &Memo::new(CAPACITY, &keys),
                &quick(CAPACITY, &keys),
                &moka(CAPACITY, &keys),
            );
            let label = format!("{name}, {threads} thread(s)");
            compare(&label, caches, &sequences, workload, rounds);
        }
    }
}
