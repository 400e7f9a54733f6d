//! `MetricSeries`: retention and window boundaries on a manual clock, rejected values, tags,
//! and a property test against a naive model (the seed's list filtering and a full sort).

use std::time::Duration;

use memocache::metrics::Sample;
use memocache::{
    ManualClock, MetricError, MetricSeries, MetricType, MetricValue, Percentile, Tags, Timestamp,
};
use proptest::prelude::*;

const SECOND: Duration = Duration::from_secs(1);

fn series(retention: Duration) -> (MetricSeries, ManualClock) {
    let clock = ManualClock::new();
    let s = MetricSeries::with_clock("latency", retention, clock.clone());
    (s, clock)
}

fn add(s: &mut MetricSeries, v: f64) {
    s.add_value(MetricValue::gauge(v), Tags::new()).unwrap();
}

fn values(s: &MetricSeries) -> Vec<f64> {
    s.samples().map(|x| x.value.value()).collect()
}

#[test]
fn retention_keeps_values_strictly_newer_than_the_cutoff() {
    let (mut s, clock) = series(10 * SECOND);
    clock.advance(SECOND);
    add(&mut s, 1.0); // t = 1
    clock.advance(9 * SECOND);
    add(&mut s, 2.0); // t = 10: cutoff 0, t = 1 is kept
    assert_eq!(values(&s), [1.0, 2.0]);
    clock.advance(SECOND);
    add(&mut s, 3.0); // t = 11: cutoff 1, t = 1 is not > 1 and goes
    assert_eq!(values(&s), [2.0, 3.0]);
    clock.advance(100 * SECOND);
    add(&mut s, 4.0); // everything older than 10 s goes at once
    assert_eq!(values(&s), [4.0]);
}

#[test]
fn zero_retention_keeps_nothing() {
    let (mut s, clock) = series(Duration::ZERO);
    clock.advance(SECOND);
    add(&mut s, 1.0);
    assert!(s.is_empty());
}

#[test]
fn window_boundaries() {
    let (mut s, clock) = series(100 * SECOND);
    for v in 1..=10 {
        clock.advance(SECOND);
        add(&mut s, f64::from(v)); // value v at t = v s
    }
    // Now t = 10. A window of w seconds holds the samples with t > 10 − w.
    assert_eq!(s.window_len(Duration::ZERO), 0);
    assert_eq!(s.window_len(SECOND), 1);
    assert_eq!(s.window_len(3 * SECOND), 3);
    assert_eq!(s.window_len(3 * SECOND + Duration::from_nanos(1)), 4);
    assert_eq!(s.window_len(9 * SECOND), 9);
    // 10 s reaches back to the clock's epoch (cutoff 0): t = 1..=10, all of them.
    assert_eq!(s.window_len(10 * SECOND), 10);
    // Windows longer than the clock's age include everything, without underflow.
    assert_eq!(s.window_len(Duration::MAX), 10);
    assert_eq!(s.get_average(3 * SECOND), 9.0);
    assert_eq!(s.calculate_percentile(Percentile::p50(), 4 * SECOND), 8.5);
    // Time passing empties the window without any add.
    clock.advance(5 * SECOND);
    assert_eq!(s.window_len(3 * SECOND), 0);
    assert_eq!(s.len(), 10);
}

#[test]
fn empty_windows_give_zero_as_the_seed() {
    let (mut s, clock) = series(60 * SECOND);
    assert_eq!(s.calculate_percentile(Percentile::p99(), 60 * SECOND), 0.0);
    assert_eq!(s.get_average(60 * SECOND), 0.0);
    assert_eq!(
        s.calculate_percentiles(&[Percentile::P50, Percentile::P95], SECOND),
        [0.0, 0.0]
    );
    clock.advance(SECOND);
    add(&mut s, 42.0);
    clock.advance(2 * SECOND);
    assert_eq!(s.calculate_percentile(Percentile::p99(), SECOND), 0.0);
    let stats = s.window_stats(SECOND);
    assert_eq!((stats.count, stats.sum, stats.mean), (0, 0.0, 0.0));
}

/// Windows of one sample, of equal values, and of signed zeros give what
/// `numpy.percentile` (numpy 2.4.6) gives, bit for bit.
///
/// Bug: the top of the range (`h ≥ n − 1`, so p100) returned the largest value as it is, but
/// numpy computes it with `_lerp(x, x, h + 1)` (its lower index is clamped to −1), which is
/// `x + 0.0` once there are two values or more: a window whose largest value is −0.0 gave
/// −0.0 where numpy gives +0.0 (the `[-0.0, -0.0]`, `[-0.0; 3]`, `[-1.0, -0.0]` and
/// `[-0.0 × 5, -3.0]` rows below). One sample keeps its sign, in numpy as here.
///
/// Windows mixing +0.0 and −0.0 are left out: numpy's partition takes them as equal and leaves
/// them in an order of its own, so the sign of a zero result there is an artefact of numpy's
/// selection algorithm (13 of 300 such cases with up to five values differ in sign only).
#[test]
fn one_sample_equal_values_and_signed_zeros_match_numpy_bit_for_bit() {
    /// The window's values, then pairs of a percentile and numpy's result.
    type Case = (&'static [f64], &'static [(f64, f64)]);
    let cases: [Case; 7] = [
        (&[7.25], &[(0.0, 7.25), (50.0, 7.25), (100.0, 7.25)]),
        (&[5.0; 4], &[(0.0, 5.0), (37.5, 5.0), (100.0, 5.0)]),
        (&[-0.0], &[(0.0, -0.0), (50.0, -0.0), (100.0, -0.0)]),
        (
            &[-0.0, -0.0],
            &[(0.0, 0.0), (50.0, -0.0), (99.0, -0.0), (100.0, 0.0)],
        ),
        (
            &[-0.0; 3],
            &[(0.0, 0.0), (50.0, 0.0), (99.0, -0.0), (100.0, 0.0)],
        ),
        (&[-1.0, -0.0], &[(0.0, -1.0), (50.0, -0.5), (100.0, 0.0)]),
        (
            &[-0.0, -0.0, -0.0, -0.0, -0.0, -3.0],
            &[(0.0, -3.0), (50.0, -0.0), (99.9, -0.0), (100.0, 0.0)],
        ),
    ];
    for (values, expected) in cases {
        let (mut s, clock) = series(60 * SECOND);
        for &v in values {
            clock.advance(SECOND);
            add(&mut s, v);
        }
        let ps: Vec<Percentile> = expected
            .iter()
            .map(|&(p, _)| Percentile::new(p).unwrap())
            .collect();
        // One at a time and all together (a shared selection) must agree with numpy.
        let together = s.calculate_percentiles(&ps, 60 * SECOND);
        for ((p, want), both) in ps.iter().zip(expected.iter().map(|e| e.1)).zip(together) {
            let alone = s.calculate_percentile(*p, 60 * SECOND);
            assert_eq!(
                alone.to_bits(),
                want.to_bits(),
                "{p} of {values:?}: {alone:?}"
            );
            assert_eq!(
                both.to_bits(),
                want.to_bits(),
                "{p} of {values:?}: {both:?}"
            );
        }
    }
}

/// Bug: a span longer than the clock's range (a `Duration::MAX` retention, meaning "keep
/// everything", or window) was clamped to `u64::MAX` nanoseconds, so once the clock stood at
/// the end of its range (a manual clock advanced by `Duration::MAX` saturates there) the
/// cutoff was the epoch itself: a sample stamped at the epoch was pruned by that retention
/// and left out of that window.
#[test]
fn spans_longer_than_the_clocks_range_exclude_nothing_at_the_end_of_time() {
    let (mut s, clock) = series(Duration::MAX);
    add(&mut s, 1.0); // t = 0
    clock.advance(Duration::MAX); // saturates at u64::MAX ns
    assert_eq!(s.window_len(Duration::MAX), 1);
    add(&mut s, 2.0);
    assert_eq!(values(&s), [1.0, 2.0]);
    assert_eq!(s.get_average(Duration::MAX), 1.5);
    // A span of exactly u64::MAX ns does reach back to the epoch, and the window
    // (now − span, now] leaves t = 0 out.
    assert_eq!(s.window_len(Duration::from_nanos(u64::MAX)), 1);
    // A jump that far with a finite retention drops everything older at once.
    let (mut s, clock) = series(60 * SECOND);
    add(&mut s, 1.0);
    clock.advance(Duration::MAX);
    // Only adds prune, but the expired sample they have not popped yet is in no window.
    assert_eq!((s.len(), s.window_len(Duration::MAX)), (1, 0));
    add(&mut s, 2.0);
    assert_eq!(values(&s), [2.0]);
}

/// Bug: a window longer than the retention period took in the samples older than the
/// retention that no add or `prune_expired` had popped yet, although expired samples are in no
/// window: the same query gave one answer before a `prune_expired` and another after it (here
/// 2 samples averaging 3 before, 1 sample of 5 after).
#[test]
fn a_window_longer_than_the_retention_leaves_expired_samples_out_before_any_prune() {
    let (mut s, clock) = series(10 * SECOND);
    clock.advance(SECOND);
    add(&mut s, 1.0); // t = 1
    clock.advance(4 * SECOND);
    add(&mut s, 5.0); // t = 5
    clock.advance(8 * SECOND); // t = 13: the retention's cutoff is 3, t = 1 has expired
    let ask = |s: &MetricSeries, window: Duration| {
        (
            s.window_len(window),
            s.window_stats(window),
            s.calculate_percentiles(&[Percentile::new(0.0).unwrap(), Percentile::p50()], window),
        )
    };
    for window in [60 * SECOND, Duration::MAX] {
        let (len, stats, percentiles) = ask(&s, window);
        assert_eq!(len, 1, "window {window:?}");
        assert_eq!((stats.count, stats.sum, stats.mean), (1, 5.0, 5.0));
        assert_eq!(percentiles, [5.0, 5.0]);
    }
    // Windows within the retention are unaffected: 9 s reaches back to t = 5 only.
    assert_eq!(s.window_len(9 * SECOND), 1);
    assert_eq!(s.window_len(7 * SECOND), 0);
    let before = ask(&s, 60 * SECOND);
    assert_eq!(s.len(), 2, "only adds and prune_expired pop");
    s.prune_expired();
    assert_eq!(s.len(), 1);
    assert_eq!(ask(&s, 60 * SECOND), before, "pruning changes no result");
}

#[test]
fn non_finite_values_are_rejected_and_change_nothing() {
    let (mut s, clock) = series(60 * SECOND);
    clock.advance(SECOND);
    add(&mut s, 1.0);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = s
            .add_value(MetricValue::gauge(bad), Tags::new())
            .unwrap_err();
        assert!(matches!(err, MetricError::NonFinite { .. }), "{err}");
        assert!(err.to_string().contains("latency"), "{err}");
    }
    assert_eq!(values(&s), [1.0]);
    assert_eq!(s.get_average(60 * SECOND), 1.0);
}

/// The module docs say finite values can overflow to a non-finite aggregate, as in numpy.
/// numpy 2.4.6: `np.percentile([-1e308, 1e308], [0, 50, 100])` is `[nan, -inf, 1e308]`,
/// `np.mean([-1e308, 1e308])` is `0.0`, `np.mean([1e308, 1e308])` is `inf`.
#[test]
fn finite_extremes_overflow_as_in_numpy() {
    let (mut s, clock) = series(60 * SECOND);
    clock.advance(SECOND);
    add(&mut s, -1e308);
    add(&mut s, 1e308);
    let p = |v| s.calculate_percentile(Percentile::new(v).unwrap(), 60 * SECOND);
    assert!(p(0.0).is_nan());
    assert_eq!(p(50.0), f64::NEG_INFINITY);
    assert_eq!(p(100.0), 1e308);
    assert_eq!(s.get_average(60 * SECOND), 0.0);
    let (mut s, clock) = series(60 * SECOND);
    clock.advance(SECOND);
    add(&mut s, 1e308);
    add(&mut s, 1e308);
    assert_eq!(s.get_average(60 * SECOND), f64::INFINITY);
}

#[test]
fn a_series_holds_one_metric_type() {
    let (mut s, _clock) = series(60 * SECOND);
    assert_eq!(s.metric_type(), None);
    s.add_value(MetricValue::histogram(1.0), Tags::new())
        .unwrap();
    assert_eq!(s.metric_type(), Some(MetricType::Histogram));
    let err = s
        .add_value(MetricValue::counter(1.0), Tags::new())
        .unwrap_err();
    assert_eq!(
        err,
        MetricError::KindMismatch {
            series: "latency".into(),
            expected: MetricType::Histogram,
            got: MetricType::Counter,
        }
    );
    assert_eq!(s.len(), 1);
}

#[test]
fn tags_and_timestamps_are_kept() {
    let (mut s, clock) = series(60 * SECOND);
    let tags: Tags = [("worker", "w1"), ("lang", "en")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    clock.advance(SECOND);
    s.add_value(MetricValue::histogram(0.5), tags.clone())
        .unwrap();
    clock.advance(SECOND);
    s.add_value(MetricValue::histogram(0.7), Tags::new())
        .unwrap();
    let samples: Vec<Sample<'_>> = s.samples().collect();
    assert_eq!(samples[0].tags, &tags);
    assert_eq!(samples[0].timestamp, Timestamp::from_nanos(1_000_000_000));
    assert_eq!(samples[0].value, MetricValue::histogram(0.5));
    assert!(samples[1].tags.is_empty());
    assert_eq!(s.last().map(|x| x.value.value()), Some(0.7));
    assert_eq!(s.name(), "latency");
    assert_eq!(s.retention_period(), 60 * SECOND);
    assert_ne!(s.id(), series(SECOND).0.id());
    assert_eq!(s.id().to_string(), s.id().as_uuid().to_string());
    assert_eq!((s.len(), s.is_empty()), (2, false));
}

/// The seed's algorithm: keep a list, filter it by time, sort, interpolate as numpy does.
struct Model {
    samples: Vec<(u64, f64)>,
}

impl Model {
    fn window(&self, now: u64, window: u64) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|(t, _)| now < window || *t > now - window)
            .map(|&(_, v)| v)
            .collect()
    }

    fn percentile(&self, now: u64, window: u64, p: f64) -> f64 {
        let mut xs = self.window(now, window);
        if xs.is_empty() {
            return 0.0;
        }
        xs.sort_by(f64::total_cmp);
        let last = xs.len() - 1;
        let h = last as f64 * (p / 100.0);
        let lo = h.floor() as usize;
        if lo >= last {
            return xs[last];
        }
        let (a, b, g) = (xs[lo], xs[lo + 1], h - h.floor());
        let d = b - a;
        if g >= 0.5 {
            b - d * (1.0 - g)
        } else {
            a + d * g
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add {
        dt: u64,
        v: f64,
    },
    /// Time passes and the series is pruned without an add.
    Prune {
        dt: u64,
    },
    /// Time passes (with no add and no prune) and the series is asked about a window.
    Query {
        dt: u64,
        window: u64,
        ps: Vec<f64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..5, -1e6f64..1e6).prop_map(|(dt, v)| Op::Add { dt, v }),
        // Few distinct values too, to exercise ties.
        1 => (0u64..5, 0u8..4).prop_map(|(dt, v)| Op::Add { dt, v: f64::from(v) }),
        1 => (0u64..10).prop_map(|dt| Op::Prune { dt }),
        1 => (0u64..5, 0u64..40, prop::collection::vec(0.0f64..=100.0, 1..6))
            .prop_map(|(dt, window, ps)| Op::Query { dt, window, ps }),
    ]
}

proptest! {
    #[test]
    fn matches_the_naive_model(retention in 0u64..30, ops in prop::collection::vec(op(), 1..200)) {
        let (mut s, clock) = series(Duration::from_nanos(retention));
        let mut model = Model { samples: Vec::new() };
        let mut now = 0;
        for op in ops {
            match op {
                Op::Add { dt, v } => {
                    clock.advance(Duration::from_nanos(dt));
                    now += dt;
                    add(&mut s, v);
                    model.samples.push((now, v));
                    // The seed's prune-by-copy.
                    model.samples.retain(|&(t, _)| now < retention || t > now - retention);
                    prop_assert_eq!(values(&s), model.window(now, u64::MAX));
                }
                Op::Prune { dt } => {
                    clock.advance(Duration::from_nanos(dt));
                    now += dt;
                    s.prune_expired();
                    model.samples.retain(|&(t, _)| now < retention || t > now - retention);
                    prop_assert_eq!(values(&s), model.window(now, u64::MAX));
                }
                Op::Query { dt, window, ps } => {
                    clock.advance(Duration::from_nanos(dt));
                    now += dt;
                    let w = Duration::from_nanos(window);
                    // Samples the series still holds but the retention has expired are in
                    // no window: the model looks back no further than the retention.
                    let window = window.min(retention);
                    let ps: Vec<Percentile> =
                        ps.iter().map(|&p| Percentile::new(p).unwrap()).collect();
                    let got = s.calculate_percentiles(&ps, w);
                    for (p, got) in ps.iter().zip(got) {
                        let want = model.percentile(now, window, p.value());
                        prop_assert_eq!(got.to_bits(), want.to_bits(), "{} window {}", p, window);
                    }
                    let xs = model.window(now, window);
                    prop_assert_eq!(s.window_len(w), xs.len());
                    let mean = s.get_average(w);
                    if xs.is_empty() {
                        prop_assert_eq!(mean, 0.0);
                    } else {
                        let naive = xs.iter().sum::<f64>() / xs.len() as f64;
                        prop_assert!((mean - naive).abs() <= 1e-9 * naive.abs().max(1e6));
                    }
                }
            }
        }
    }
}
