//! Metrics and alerts: time series with exact percentiles, a registry of counters, gauges and
//! histograms that renders the Prometheus text format, and alert rules evaluated with
//! Prometheus-style pending → firing → resolved states.
//!
//! ```
//! use memocache::metrics::{
//!     Aggregation, AlertEvaluator, AlertRule, MemoryNotifier, MetricsRegistry,
//! };
//! use memocache::{ManualClock, Severity, Threshold};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let registry = MetricsRegistry::with_clock(clock.clone(), Duration::from_secs(600));
//! let depth = registry.gauge("memocache_queue_depth", "Jobs waiting.", &[])?;
//!
//! let mut alerts = AlertEvaluator::new(registry.clone());
//! let pager = MemoryNotifier::new();
//! alerts.add_channel("pager", Arc::new(pager.clone()));
//! alerts.add_rule(
//!     AlertRule::new(
//!         "queue backed up",
//!         "memocache_queue_depth",
//!         Threshold::greater_than(100.0)?,
//!         Severity::Warning,
//!         Duration::from_secs(60),
//!     )
//!     .with_aggregation(Aggregation::Last)
//!     .with_pending_for(Duration::from_secs(30))
//!     .with_channel("pager"),
//! )?;
//!
//! depth.set(500.0);
//! alerts.evaluate(); // condition true: pending
//! clock.advance(Duration::from_secs(30));
//! alerts.evaluate(); // held for 30 s: firing, one notification
//! alerts.evaluate(); // still firing: no new notification
//! assert_eq!(pager.notifications().len(), 1);
//!
//! let text = registry.render_prometheus();
//! assert!(text.contains("# TYPE memocache_queue_depth gauge\nmemocache_queue_depth 500\n"));
//! # Ok::<(), memocache::MetricError>(())
//! ```
//!
//! # Layers
//!
//! * [`value`] — value objects: [`MetricValue`] (+ [`MetricType`]), [`Percentile`],
//!   [`Threshold`] (+ [`Comparison`]), [`Severity`].
//! * [`series`] — [`MetricSeries`]: a deque of timestamped samples pruned from the front,
//!   percentiles that equal `numpy.percentile` bit for bit (selection, not sorting), averages
//!   that equal `numpy.mean`.
//! * [`registry`] — [`MetricsRegistry`]: named, labelled counters (lock-free atomics on the hot
//!   path), gauges and histograms (each keeping a [`MetricSeries`] of its recent values), and
//!   [`MetricsRegistry::render_prometheus`].
//! * [`alert`] — [`AlertRule`], [`AlertEvaluator`], the [`Notifier`] trait with
//!   [`TracingNotifier`] and [`MemoryNotifier`].
//! * [`wiring`] — [`CacheMetrics`](wiring::CacheMetrics) and
//!   [`QueueMetrics`](wiring::QueueMetrics): publish the cache's and the job queue's statistics
//!   (and job latencies) into a registry under Prometheus names.
//!
//! # Fixes to the seed
//!
//! * Pruning is amortized O(1) per add instead of a rebuild of the whole list (O(n²) overall).
//! * A series holds one [`MetricType`]; NaN and ±∞ are rejected instead of poisoning averages.
//! * The seed's `AlertRule` carried the comparison twice, on the rule and on its threshold; it
//!   lives on [`Threshold`] only. A rule also says how its window is aggregated
//!   ([`Aggregation`]): the seed named a window but no aggregation.
//! * `EQUAL` thresholds compare within a tolerance ([`Threshold::EQUAL_EPSILON`]), not with `==`.
//! * Alerts do not flap: a rule fires only after its condition held for its `pending_for`
//!   duration, notifies once per firing, and resolves only after the condition stayed false for
//!   its `keep_firing_for` duration (Prometheus' `for` and `keep_firing_for`). Removing a
//!   firing rule resolves its alerts rather than leaving them open on every channel.
//! * Time comes from the crate's monotonic [`Clock`](crate::Clock), so tests drive retention,
//!   windows and alert timing with a [`ManualClock`](crate::ManualClock) instead of sleeping.

pub mod alert;
pub(crate) mod families;
pub mod registry;
pub mod series;
pub mod value;
pub mod wiring;

pub use alert::{
    Aggregation, AlertEvaluator, AlertRule, AlertRuleId, AlertState, AlertTransition,
    MemoryNotifier, Notification, Notifier, NotifyError, TracingNotifier,
};
pub use registry::{Counter, Gauge, Histogram, MetricsRegistry};
pub use series::{MetricSeries, Sample, SeriesId, Tags, WindowStats};
pub use value::{Comparison, MetricType, MetricValue, Percentile, Severity, Threshold};

use std::time::Duration;

/// What went wrong in the metrics layer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricError {
    /// A value was NaN or infinite; series hold finite values only.
    #[error("metric values must be finite, got {value} for series `{series}`")]
    NonFinite {
        /// The series the value was for.
        series: String,
        /// The rejected value.
        value: f64,
    },
    /// A value's type differs from the type of the series it was added to.
    #[error("series `{series}` holds {expected} values, got a {got} value")]
    KindMismatch {
        /// The series.
        series: String,
        /// The series' type.
        expected: MetricType,
        /// The rejected value's type.
        got: MetricType,
    },
    /// A percentile outside `0..=100`, or NaN.
    #[error("a percentile must be within 0..=100, got {0}")]
    InvalidPercentile(f64),
    /// A threshold that is NaN or infinite.
    #[error("a threshold must be finite, got {0}")]
    NonFiniteThreshold(f64),
    /// A metric name that is not `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name `{0}`: expected [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    /// A label name that is not `[a-zA-Z_][a-zA-Z0-9_]*`, starts with `__`, or is reserved.
    /// For the reserved `quantile` and `le`, what an alert rule selecting by them meant is
    /// said instead of the grammar: read the histogram with [`Aggregation::Percentile`].
    #[error("invalid label name `{name}`: {rule}", name = .0, rule = label_name_rule(.0))]
    InvalidLabelName(String),
    /// The same label name was given twice.
    #[error("label `{0}` given twice")]
    DuplicateLabel(String),
    /// A metric name that is one of the `_sum`/`_count` series a histogram (rendered as a
    /// summary) writes, or a histogram whose `_sum`/`_count` series is a registered name: the
    /// exposition would hold the same series name twice, which scrapers reject. The crate's
    /// own histograms ([`wiring`]'s job latency, a [`Pipeline`]'s duration) count whether or
    /// not the crate has registered them yet, so that their registration never fails on a
    /// host's name later: `histogram` names the crate's.
    ///
    /// [`Pipeline`]: crate::pipeline::Pipeline
    #[error("metric `{name}` collides with the `{series}` series of histogram `{histogram}`")]
    NameCollision {
        /// The name asked for.
        name: String,
        /// The histogram.
        histogram: String,
        /// The series name both would write.
        series: String,
    },
    /// An alert rule takes an [`Aggregation::Average`] or [`Aggregation::Percentile`] of a
    /// running total that keeps no history: a counter, or a histogram's `_sum` or `_count`.
    /// Only [`Aggregation::Last`] reads one; the window would hold no value, and the rule
    /// never fire.
    #[error(
        "alert rule `{rule}` takes the {aggregation} of `{metric}` over a window, but \
         `{metric}` is a running total (a counter, or a histogram's `_sum` or `_count`) that \
         keeps no history: only the `last` aggregation reads it"
    )]
    NoHistory {
        /// The rule's name.
        rule: String,
        /// The metric it names.
        metric: String,
        /// The aggregation it asks for.
        aggregation: Aggregation,
    },
    /// An alert rule reads a histogram over a window that, cut to the registry's retention,
    /// is zero long: it never holds an observation, and the rule would never fire.
    #[error(
        "alert rule `{rule}` reads histogram `{metric}` over a window of {window:?} in a \
         registry that keeps {retention:?} of observations: no observation is ever in it"
    )]
    EmptyWindow {
        /// The rule's name.
        rule: String,
        /// The histogram it names.
        metric: String,
        /// The rule's window.
        window: Duration,
        /// The registry's retention ([`MetricsRegistry::retention`]).
        retention: Duration,
    },
    /// An alert rule names `h_bucket` for a histogram `h`, as against a Prometheus
    /// histogram's exposition: the registry exposes its histograms as summaries, with no
    /// `_bucket` series (nor `le` label), so the rule would read nothing and never fire.
    #[error(
        "alert rule `{rule}` reads `{metric}`, but `{histogram}` is a histogram exposed as a \
         summary, which has no `_bucket` series: read `{histogram}` with a percentile \
         aggregation (`Aggregation::Percentile`, its quantiles), or `{histogram}_count` with \
         `last`"
    )]
    NoBuckets {
        /// The rule's name.
        rule: String,
        /// The name it reads.
        metric: String,
        /// The histogram.
        histogram: String,
    },
    /// An alert rule selects series by a label its metric never carries: the metric's
    /// family has a fixed set of label names, being one of the crate's own ([`wiring`], a
    /// [`Pipeline`]'s own metrics; registered yet or not) or declared by the host
    /// ([`MetricsRegistry::declare`]), and the registry refuses a series with another
    /// ([`MetricError::UndeclaredLabel`]). The rule would select no series, and never fire.
    ///
    /// [`Pipeline`]: crate::pipeline::Pipeline
    #[error(
        "alert rule `{rule}` selects series of `{metric}` by label `{label}`, which `{metric}` \
         never carries (its labels: {})",
        label_list(.labels)
    )]
    NoSuchLabel {
        /// The rule's name.
        rule: String,
        /// The metric it names.
        metric: String,
        /// The label no series of it has.
        label: String,
        /// The label names its series may have, sorted.
        labels: Vec<String>,
    },
    /// A series was asked for with a label its family was registered without, where the
    /// family's label names are fixed: those the crate registers for its own figures
    /// ([`wiring`], a [`Pipeline`]'s own metrics), whoever asks for one first, and those a
    /// host declared ([`MetricsRegistry::declare`]). Their series carry the labels their
    /// tables (or declarations) give, and only those, so that an alert rule selecting by
    /// another label can be refused ([`MetricError::NoSuchLabel`]).
    ///
    /// [`Pipeline`]: crate::pipeline::Pipeline
    #[error(
        "metric `{metric}` has a fixed set of labels ({}), and `{label}` is not one of them",
        label_list(.labels)
    )]
    UndeclaredLabel {
        /// The metric.
        metric: String,
        /// The label asked for.
        label: String,
        /// The label names its series may have, sorted.
        labels: Vec<String>,
    },
    /// A host declared the label names of a family ([`MetricsRegistry::declare`]) whose
    /// label names an earlier declaration fixed to others. Its series and the alert rules on
    /// it were accepted by those.
    #[error(
        "metric `{metric}` has a fixed set of labels ({}), which cannot become ({})",
        label_list(.labels),
        label_list(.declared)
    )]
    LabelsConflict {
        /// The metric.
        metric: String,
        /// The label names its series may have, sorted.
        labels: Vec<String>,
        /// The label names declared, sorted.
        declared: Vec<String>,
    },
    /// A host declared one of the crate's own families ([`wiring`], a [`Pipeline`]'s
    /// metrics; [`MetricsRegistry::declare`]) as another type, or with other label names,
    /// than the crate registers it with, or asked for a series of one as another type
    /// ([`MetricsRegistry::counter`], [`gauge`](MetricsRegistry::gauge),
    /// [`histogram`](MetricsRegistry::histogram)): whether or not the crate has registered
    /// it yet, the crate's registration would then have failed, or its series been refused.
    ///
    /// [`Pipeline`]: crate::pipeline::Pipeline
    #[error(
        "metric `{metric}` is one of memocache's own families, a {kind} with the labels ({}): \
         it cannot be declared or registered as a {declared_kind} with the labels ({})",
        label_list(.labels),
        label_list(.declared)
    )]
    CrateFamilyConflict {
        /// The metric.
        metric: String,
        /// The type the crate registers it with.
        kind: MetricType,
        /// The label names the crate's family carries, sorted.
        labels: Vec<String>,
        /// The type declared, or asked for.
        declared_kind: MetricType,
        /// The label names declared, or those of the series asked for, sorted.
        declared: Vec<String>,
    },
    /// [`MetricsRegistry::remove`] was asked for a series of one of the crate's own families,
    /// which the crate keeps publishing to.
    #[error("metric `{0}` is one of memocache's own families: its series cannot be removed")]
    CrateSeries(String),
    /// A metric name is already registered with another type.
    #[error("metric `{name}` is registered as a {registered}, not a {requested}")]
    TypeConflict {
        /// The metric name.
        name: String,
        /// The type it was registered with.
        registered: MetricType,
        /// The type asked for now.
        requested: MetricType,
    },
}

/// What [`MetricError::InvalidLabelName`] says of `name`: what to do instead, for a label
/// reserved by the exposition, and else the grammar.
fn label_name_rule(name: &str) -> &'static str {
    match name {
        // A rule written against a summary's exposition (`h{quantile="0.99"}`) or a
        // Prometheus histogram's (`h_bucket{le="0.5"}`): refused with the grammar alone, the
        // host was not told how to alert on a quantile here.
        "quantile" => {
            "`quantile` is reserved for the quantile lines the registry writes for a \
             histogram, which are no series of their own: to alert on a histogram's quantile, \
             read the histogram with a percentile aggregation (`Aggregation::Percentile`: p99 \
             for `quantile=\"0.99\"`)"
        }
        "le" => {
            "`le` is reserved for a histogram's bucket bounds, and the registry exposes \
             histograms as summaries, with no buckets: to alert on a histogram's \
             distribution, read the histogram with a percentile aggregation \
             (`Aggregation::Percentile`)"
        }
        _ => "expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with `__`, and not `quantile` or `le`",
    }
}

/// `labels` as an error message lists them: quoted, or "none".
fn label_list(labels: &[String]) -> String {
    if labels.is_empty() {
        return "none".to_owned();
    }
    let quoted: Vec<String> = labels.iter().map(|l| format!("`{l}`")).collect();
    quoted.join(", ")
}
