//! Value objects: [`MetricValue`], [`Percentile`], [`Threshold`] and [`Severity`].
//!
//! They are immutable and compare by value, as in the seed. The constructors that take a float
//! validate it and return a [`MetricError`] instead of raising, so a NaN can never hide inside a
//! percentile or a threshold and silently make every comparison false.

use std::fmt;

use super::MetricError;

/// What a metric measures, which decides how it is aggregated and exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricType {
    /// A monotonically increasing count (requests served, evictions).
    Counter,
    /// A value that goes up and down (queue depth, bytes in use).
    Gauge,
    /// Individual observations whose distribution matters (latencies).
    Histogram,
}

impl MetricType {
    /// The lowercase name, as the seed spells it (`counter`, `gauge`, `histogram`).
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric value with its type.
///
/// Construction does not validate the float; a [`MetricSeries`](super::MetricSeries) rejects
/// non-finite values when they are added, which is where the error can be reported.
///
/// ```
/// use memocache::{MetricType, MetricValue};
///
/// let v = MetricValue::histogram(0.25);
/// assert_eq!(v.value(), 0.25);
/// assert_eq!(v.metric_type(), MetricType::Histogram);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricValue {
    value: f64,
    metric_type: MetricType,
}

impl MetricValue {
    /// A value of the given type.
    pub const fn new(value: f64, metric_type: MetricType) -> MetricValue {
        MetricValue { value, metric_type }
    }

    /// A counter value.
    pub const fn counter(value: f64) -> MetricValue {
        MetricValue::new(value, MetricType::Counter)
    }

    /// A gauge value.
    pub const fn gauge(value: f64) -> MetricValue {
        MetricValue::new(value, MetricType::Gauge)
    }

    /// A histogram observation.
    pub const fn histogram(value: f64) -> MetricValue {
        MetricValue::new(value, MetricType::Histogram)
    }

    /// The number.
    pub const fn value(self) -> f64 {
        self.value
    }

    /// The type.
    pub const fn metric_type(self) -> MetricType {
        self.metric_type
    }
}

/// A percentile in `0..=100`.
///
/// `Display` gives `p50`, `p95`, `p99`; the seed printed `p{int(value)}`, which showed p99.9 as
/// `p99`, so fractional percentiles keep their fraction here (`p99.9`).
///
/// The seed's `P50`, `P95` and `P99` class variables were declared but left at `None`; here
/// they are the constants their names say.
///
/// ```
/// use memocache::Percentile;
///
/// assert_eq!(Percentile::p95().to_string(), "p95");
/// assert_eq!(Percentile::new(99.9)?.to_string(), "p99.9");
/// assert!(Percentile::new(100.5).is_err());
/// assert!(Percentile::new(f64::NAN).is_err());
/// # Ok::<(), memocache::MetricError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percentile(f64);

impl Percentile {
    /// The median.
    pub const P50: Percentile = Percentile(50.0);
    /// The 95th percentile.
    pub const P95: Percentile = Percentile(95.0);
    /// The 99th percentile.
    pub const P99: Percentile = Percentile(99.0);

    /// A percentile; anything outside `0..=100`, and NaN, is an error.
    pub fn new(p: f64) -> Result<Percentile, MetricError> {
        // The range check is false for NaN, so NaN is rejected too.
        if (0.0..=100.0).contains(&p) {
            // −0.0 is in the range; adding +0.0 makes it +0.0, so it prints as `p0` (and its
            // quantile as `0`) instead of `p-0`.
            Ok(Percentile(p + 0.0))
        } else {
            Err(MetricError::InvalidPercentile(p))
        }
    }

    /// The median.
    pub const fn p50() -> Percentile {
        Percentile::P50
    }

    /// The 95th percentile.
    pub const fn p95() -> Percentile {
        Percentile::P95
    }

    /// The 99th percentile.
    pub const fn p99() -> Percentile {
        Percentile::P99
    }

    /// The percentile in `0..=100`.
    pub const fn value(self) -> f64 {
        self.0
    }

    /// The same point as a quantile in `0..=1` (the Prometheus `quantile` label).
    pub fn quantile(self) -> f64 {
        self.0 / 100.0
    }
}

impl fmt::Display for Percentile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // f64's Display prints 95.0 as "95" and 99.9 as "99.9": shortest round-trip form.
        write!(f, "p{}", self.0)
    }
}

/// How a [`Threshold`] compares the observed value with its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// Met when `actual > threshold`.
    GreaterThan,
    /// Met when `actual < threshold`.
    LessThan,
    /// Met when `actual` is within [`Threshold::EQUAL_EPSILON`] (relative) of the threshold.
    Equal,
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Comparison::GreaterThan => ">",
            Comparison::LessThan => "<",
            Comparison::Equal => "==",
        })
    }
}

/// An alert threshold: a finite value and the comparison that meets it.
///
/// The seed compared floats with `==` for `EQUAL`, which almost never holds for a computed
/// average or percentile; [`Comparison::Equal`] allows a relative error of
/// [`Threshold::EQUAL_EPSILON`] (absolute for values below 1).
///
/// ```
/// use memocache::Threshold;
///
/// let t = Threshold::greater_than(0.9)?;
/// assert!(t.check(0.95));
/// assert!(!t.check(0.9));
/// assert!(Threshold::equal(0.3)?.check(0.1 + 0.2));
/// assert!(Threshold::less_than(f64::NAN).is_err());
/// # Ok::<(), memocache::MetricError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    value: f64,
    comparison: Comparison,
}

impl Threshold {
    /// Tolerance of [`Comparison::Equal`]: `|actual − value| ≤ EQUAL_EPSILON · max(1, |actual|,
    /// |value|)`. Large enough to absorb the rounding of a sum over millions of samples, small
    /// enough that no two values anyone would configure as distinct thresholds compare equal.
    pub const EQUAL_EPSILON: f64 = 1e-9;

    /// A threshold; a non-finite value is an error.
    pub fn new(value: f64, comparison: Comparison) -> Result<Threshold, MetricError> {
        if value.is_finite() {
            Ok(Threshold { value, comparison })
        } else {
            Err(MetricError::NonFiniteThreshold(value))
        }
    }

    /// Met when the actual value is greater than `value`.
    pub fn greater_than(value: f64) -> Result<Threshold, MetricError> {
        Threshold::new(value, Comparison::GreaterThan)
    }

    /// Met when the actual value is less than `value`.
    pub fn less_than(value: f64) -> Result<Threshold, MetricError> {
        Threshold::new(value, Comparison::LessThan)
    }

    /// Met when the actual value equals `value` within [`Threshold::EQUAL_EPSILON`].
    pub fn equal(value: f64) -> Result<Threshold, MetricError> {
        Threshold::new(value, Comparison::Equal)
    }

    /// The threshold value.
    pub const fn value(self) -> f64 {
        self.value
    }

    /// The comparison.
    pub const fn comparison(self) -> Comparison {
        self.comparison
    }

    /// Whether `actual` meets the threshold. A NaN `actual` never does, nor does an infinite
    /// one meet [`Comparison::Equal`] (the threshold is finite).
    pub fn check(self, actual: f64) -> bool {
        match self.comparison {
            Comparison::GreaterThan => actual > self.value,
            Comparison::LessThan => actual < self.value,
            // The tolerance scales with |actual|: an infinite actual would make it infinite
            // and "equal" to every threshold.
            Comparison::Equal if !actual.is_finite() => false,
            Comparison::Equal => {
                let scale = 1.0_f64.max(actual.abs()).max(self.value.abs());
                (actual - self.value).abs() <= Threshold::EQUAL_EPSILON * scale
            }
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.comparison, self.value)
    }
}

/// How urgent an alert is; ordered `Info < Warning < Critical`.
///
/// The seed's rule held a string, `INFO`, `WARNING` or `CRITICAL`; the names here
/// ([`Severity::as_str`], `Display`, what the tracing notifier logs) are lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The lowercase name (`info`, `warning`, `critical`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_bounds() {
        assert_eq!(Percentile::new(0.0).map(Percentile::value), Ok(0.0));
        assert_eq!(Percentile::new(100.0).map(Percentile::value), Ok(100.0));
        for bad in [-0.001, 100.001, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(
                matches!(Percentile::new(bad), Err(MetricError::InvalidPercentile(_))),
                "{bad} accepted"
            );
        }
        assert_eq!(Percentile::p50(), Percentile::P50);
        assert_eq!(Percentile::p99().quantile(), 0.99);
        assert_eq!(Percentile::p50().to_string(), "p50");
        assert_eq!(Percentile::p99().to_string(), "p99");
    }

    #[test]
    fn each_comparison() {
        let gt = Threshold::greater_than(10.0).unwrap();
        assert!(gt.check(10.5) && !gt.check(10.0) && !gt.check(9.0) && !gt.check(f64::NAN));
        let lt = Threshold::less_than(10.0).unwrap();
        assert!(lt.check(9.5) && !lt.check(10.0) && !lt.check(11.0) && !lt.check(f64::NAN));
        let eq = Threshold::equal(10.0).unwrap();
        assert!(eq.check(10.0) && eq.check(10.0 + 5e-9) && eq.check(10.0 - 5e-9));
        assert!(!eq.check(10.0 + 2e-7) && !eq.check(f64::NAN));
        // Absolute tolerance near zero, relative for large values.
        let zero = Threshold::equal(0.0).unwrap();
        assert!(zero.check(1e-10) && !zero.check(1e-8));
        let big = Threshold::equal(1e12).unwrap();
        assert!(big.check(1e12 + 100.0) && !big.check(1e12 + 10_000.0));
        // An infinite actual would scale the tolerance to infinity and equal everything.
        assert!(!eq.check(f64::INFINITY) && !eq.check(f64::NEG_INFINITY));
        assert!(gt.check(f64::INFINITY) && lt.check(f64::NEG_INFINITY));
    }

    /// What alert logs and notifications show of a rule's threshold.
    #[test]
    fn threshold_parts_and_display() {
        let t = Threshold::less_than(0.5).unwrap();
        assert_eq!((t.value(), t.comparison()), (0.5, Comparison::LessThan));
        assert_eq!(t.to_string(), "< 0.5");
        assert_eq!(Threshold::greater_than(-2.0).unwrap().to_string(), "> -2");
        assert_eq!(Threshold::equal(1e-3).unwrap().to_string(), "== 0.001");
    }

    #[test]
    fn threshold_rejects_non_finite() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                Threshold::greater_than(bad),
                Err(MetricError::NonFiniteThreshold(_))
            ));
        }
    }

    #[test]
    fn severity_orders_and_prints() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        assert_eq!(Severity::Critical.to_string(), "critical");
        assert_eq!(MetricType::Histogram.to_string(), "histogram");
    }
}
