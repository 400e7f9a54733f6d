//! Metrics benchmarks, each with its baseline in the same run.
//!
//! * `add_value_1M_retention`: `MetricSeries::add_value` in steady state with one million
//!   samples retained (a manual clock advancing 1 ns per add, retention 1 ms), against the
//!   seed's prune-by-copy (`self.values = [v for v in self.values if v.timestamp > cutoff]`)
//!   written in Rust.
//! * `p99_1M_window`: the p99 of a one-million-sample window by selection (the series' own
//!   `calculate_percentile`, copy included) against copying and fully sorting the same values.
//!
//! Run with `cargo bench --bench metrics`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memocache::{Clock, ManualClock, MetricSeries, MetricValue, Percentile, Tags, Timestamp};

const SAMPLES: u64 = 1_000_000;
const NANO: Duration = Duration::from_nanos(1);

/// A small deterministic generator (xorshift64*), so both sides see the same values.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        // Latency-like: milliseconds from 0 to 1000.
        bits as f64 / (1u64 << 53) as f64 * 1_000.0
    }
}

/// A series holding `SAMPLES` values, one per nanosecond, with a retention of `SAMPLES` ns.
fn full_series(clock: &ManualClock) -> MetricSeries {
    let mut series =
        MetricSeries::with_clock("latency_ms", Duration::from_nanos(SAMPLES), clock.clone());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..SAMPLES {
        clock.advance(NANO);
        series
            .add_value(MetricValue::histogram(rng.next_f64()), Tags::new())
            .expect("finite");
    }
    series
}

/// The seed's `MetricSeries`, transliterated: a list rebuilt on every add.
struct SeedSeries {
    values: Vec<TimestampedValue>,
    retention: Duration,
    clock: ManualClock,
}

#[derive(Clone)]
// The value and tags are carried and copied as in the seed, but pruning reads only the time.
#[allow(dead_code)]
struct TimestampedValue {
    value: MetricValue,
    timestamp: Timestamp,
    tags: Tags,
}

impl SeedSeries {
    fn add_value(&mut self, value: MetricValue, tags: Tags) {
        let now = self.clock.now();
        self.values.push(TimestampedValue {
            value,
            timestamp: now,
            tags,
        });
        let cutoff = now
            .as_nanos()
            .saturating_sub(self.retention.as_nanos() as u64);
        self.values = self
            .values
            .iter()
            .filter(|v| v.timestamp.as_nanos() > cutoff)
            .cloned()
            .collect();
    }
}

fn add_value(c: &mut Criterion) {
    let mut group = c.benchmark_group("add_value_1M_retention");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let clock = ManualClock::new();
    let mut series = full_series(&clock);
    assert_eq!(series.len() as u64, SAMPLES);
    group.bench_function("deque_prune_front", |b| {
        b.iter(|| {
            clock.advance(NANO);
            series
                .add_value(MetricValue::histogram(black_box(1.5)), Tags::new())
                .expect("finite");
        })
    });
    assert_eq!(series.len() as u64, SAMPLES);

    let clock = ManualClock::new();
    // Filled directly: filling through the seed's add would take O(n²).
    let values = (0..SAMPLES)
        .map(|i| TimestampedValue {
            value: MetricValue::histogram(i as f64),
            timestamp: Timestamp::from_nanos(i + 1),
            tags: Tags::new(),
        })
        .collect();
    clock.advance(Duration::from_nanos(SAMPLES));
    let mut seed = SeedSeries {
        values,
        retention: Duration::from_nanos(SAMPLES),
        clock: clock.clone(),
    };
    group.bench_function("seed_prune_by_copy", |b| {
        b.iter(|| {
            clock.advance(NANO);
            seed.add_value(MetricValue::histogram(black_box(1.5)), Tags::new());
        })
    });
    assert_eq!(seed.values.len() as u64, SAMPLES);
    group.finish();
}

/// numpy's `linear` percentile of sorted data.
fn sorted_percentile(sorted: &[f64], p: f64) -> f64 {
    let last = sorted.len() - 1;
    let h = last as f64 * (p / 100.0);
    let lo = h.floor() as usize;
    if lo >= last {
        return sorted[last];
    }
    let (a, b, g) = (sorted[lo], sorted[lo + 1], h - h.floor());
    let d = b - a;
    if g >= 0.5 {
        b - d * (1.0 - g)
    } else {
        a + d * g
    }
}

fn p99(c: &mut Criterion) {
    let mut group = c.benchmark_group("p99_1M_window");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let clock = ManualClock::new();
    let series = full_series(&clock);
    let window = Duration::from_nanos(SAMPLES);
    assert_eq!(series.window_len(window) as u64, SAMPLES);
    let values: Vec<f64> = series.samples().map(|s| s.value.value()).collect();

    // Both sides produce the same number.
    let selected = series.calculate_percentile(Percentile::P99, window);
    let mut sorted = values.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    assert_eq!(
        selected.to_bits(),
        sorted_percentile(&sorted, 99.0).to_bits()
    );

    group.bench_function("select", |b| {
        b.iter(|| series.calculate_percentile(black_box(Percentile::P99), window))
    });
    group.bench_function("full_sort", |b| {
        b.iter(|| {
            let mut data = black_box(&values).to_vec();
            data.sort_unstable_by(f64::total_cmp);
            sorted_percentile(&data, 99.0)
        })
    });
    group.bench_function("select_p50_p95_p99", |b| {
        b.iter(|| {
            series.calculate_percentiles(
                black_box(&[Percentile::P50, Percentile::P95, Percentile::P99]),
                window,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, add_value, p99);
criterion_main!(benches);
