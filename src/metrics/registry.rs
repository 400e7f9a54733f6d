//! [`MetricsRegistry`]: named, labelled counters, gauges and histograms, rendered in the
//! Prometheus text exposition format.
//!
//! # Design
//!
//! A registry is a cheap, cloneable handle (`Arc` inside), `Send + Sync`. Asking it for a metric
//! ([`MetricsRegistry::counter`], [`gauge`](MetricsRegistry::gauge),
//! [`histogram`](MetricsRegistry::histogram)) registers the name and label set on first use and
//! returns a handle that points straight at the metric's storage, so recording never touches the
//! registry's map: code on a hot path asks once and keeps the handle.
//!
//! * [`Counter`] — an `AtomicU64`: an increment is one relaxed compare-and-swap (retried only
//!   under contention), no lock, saturating at `u64::MAX` so that it never wraps backwards.
//!   Counters keep no history, so alert rules read them with [`Aggregation::Last`] only
//!   ([`AlertEvaluator::add_rule`](super::AlertEvaluator::add_rule) refuses the others).
//! * [`Gauge`] — the current value plus a [`MetricSeries`] of the values it was set to within
//!   the registry's retention, so alerts can aggregate a gauge over a window (the average hit
//!   ratio over five minutes); a window it was not set in, once it was first set, holds its
//!   current value. Setting a gauge takes a short mutex.
//! * [`Histogram`] — every observation goes into a [`MetricSeries`] (retention as above) for
//!   exact windowed percentiles, plus a running count and sum since creation. It is exposed as a
//!   Prometheus **summary**: `quantile="0.5"`, `"0.95"`, `"0.99"` lines computed exactly over
//!   the retention window (`NaN` when it is empty, as Prometheus clients do), then `_sum` and
//!   `_count`. Exact quantiles cost memory proportional to the observations in the window; that
//!   is the trade for numbers that match `numpy` rather than bucket approximations. Percentiles
//!   are selected from a copy of the window taken under the histogram's lock, so a concurrent
//!   `observe` waits for a `memcpy`, not for the selection.
//!
//! Reads (rendering, [`MetricsRegistry::aggregate`], [`Histogram::percentiles`]) prune the
//! series they read ([`MetricSeries::prune_expired`]) under the lock they take anyway, so a
//! gauge or histogram that stops being recorded does not keep its last retention period of
//! values, however large, for as long as the registry lives.
//!
//! Names are checked against Prometheus' grammar (`[a-zA-Z_:][a-zA-Z0-9_:]*` for metrics,
//! `[a-zA-Z_][a-zA-Z0-9_]*` for labels, `__` prefixes and the `quantile`/`le` labels reserved).
//! A name keeps the type it was first registered with; asking for it as another type is a
//! [`MetricError::TypeConflict`]. A histogram `h` also writes the series `h_sum` and
//! `h_count`, so those names and `h` exclude each other ([`MetricError::NameCollision`]):
//! an exposition with a series name twice is rejected by scrapers. For the crate's own
//! histograms that holds before the crate registers them as after: a host is refused
//! `memocache_job_latency_seconds_count` at once, rather than the queue's registration
//! failing on it later. Read by name
//! ([`MetricsRegistry::aggregate`], an alert rule), `h_sum` and `h_count` are the histogram's
//! running sum and count, as the exposition shows them; `h_bucket`, which a Prometheus
//! histogram would write, reads nothing (an alert rule on it is refused). A label with an
//! empty value is no label, as Prometheus ingests it: `x{a=""}` is the series `x`. The first
//! help text given for a name is the one rendered (the crate's own, for its families).
//!
//! A family takes series with any label names, as Prometheus' exposition allows, except
//! the families the crate registers for its own figures ([`wiring`](super::wiring), a
//! pipeline's): each has the type and the fixed label names the crate's table of them gives
//! (`memocache_jobs` is a gauge with `status`), and a series with another label is refused
//! ([`MetricError::UndeclaredLabel`]), so that an alert rule selecting by another label,
//! which would never fire, can be refused too ([`MetricError::NoSuchLabel`]). That holds
//! whoever registers the family first: a host asking for one of these names before the
//! crate registers it gets the crate's family (its help, its labels), and is refused one of
//! another type ([`MetricError::CrateFamilyConflict`]) or with another label, as it would be
//! afterwards, so that the crate's registration never fails on it later nor adds its series
//! beside others; and an alert rule on one is checked against the table before the crate
//! registers it as after. A family the host registers under a name of its own keeps taking
//! any names, unless the host declares them ([`MetricsRegistry::declare`]): then its series
//! and alert rules are held to them as the crate's own families are.
//!
//! [`MetricsRegistry::render_prometheus`] writes families sorted by name and series sorted by
//! labels, so the output is deterministic and diffable.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use super::alert::Aggregation;
use super::families::{CrateFamily, crate_family};
use super::series::linear_percentiles;
use super::{MetricError, MetricSeries, MetricType, MetricValue, Percentile, Tags};
use crate::time::{Clock, SharedClock, share, system_clock};

/// The quantiles a histogram exposes.
const SUMMARY_QUANTILES: [Percentile; 3] = [Percentile::P50, Percentile::P95, Percentile::P99];

/// A registry of metrics; clones share the same metrics.
#[derive(Clone)]
pub struct MetricsRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    clock: SharedClock,
    retention: Duration,
    families: RwLock<BTreeMap<String, Family>>,
}

struct Family {
    help: String,
    metrics: Metrics,
    /// The label names its series may carry, if fixed: a family of the crate's own figures
    /// (created under a name of the crate's table, [`families`](super::families), whoever
    /// asks first: see [`insert`]) has the names its entry gives, and a series with another
    /// is refused ([`MetricError::UndeclaredLabel`]), so that an alert rule selecting by a
    /// label it can never carry is refused too; a family the host declares
    /// ([`MetricsRegistry::declare`]) has the names declared. `None`, as for any other family
    /// the registry's other public calls create: any names, since a series with new ones may
    /// come at any time.
    labels: Option<Arc<BTreeSet<String>>>,
}

enum Metrics {
    Counter(BTreeMap<Tags, Counter>),
    Gauge(BTreeMap<Tags, Gauge>),
    Histogram(BTreeMap<Tags, Histogram>),
}

impl Metrics {
    fn metric_type(&self) -> MetricType {
        match self {
            Metrics::Counter(_) => MetricType::Counter,
            Metrics::Gauge(_) => MetricType::Gauge,
            Metrics::Histogram(_) => MetricType::Histogram,
        }
    }

    /// The label sets of its series.
    fn label_sets(&self) -> Box<dyn Iterator<Item = &Tags> + '_> {
        match self {
            Metrics::Counter(map) => Box::new(map.keys()),
            Metrics::Gauge(map) => Box::new(map.keys()),
            Metrics::Histogram(map) => Box::new(map.keys()),
        }
    }

    /// Forgets the series `labels` (a failed [`Batch`] taking back what it added, or
    /// [`MetricsRegistry::remove`]): whether it was there.
    fn remove(&mut self, labels: &Tags) -> bool {
        match self {
            Metrics::Counter(map) => map.remove(labels).is_some(),
            Metrics::Gauge(map) => map.remove(labels).is_some(),
            Metrics::Histogram(map) => map.remove(labels).is_some(),
        }
    }
}

/// The three handle types, so that one routine registers them all.
trait Handle: Clone {
    const TYPE: MetricType;
    fn empty_family() -> Metrics;
    fn family(metrics: &Metrics) -> Option<&BTreeMap<Tags, Self>>;
    fn family_mut(metrics: &mut Metrics) -> Option<&mut BTreeMap<Tags, Self>>;
    fn new(name: &str, registry: &Inner) -> Self;
}

/// Implements [`Handle`] for a handle type whose family is the [`Metrics`] variant and whose
/// [`MetricType`] variant share its name; `$new` makes a handle for a new series.
macro_rules! impl_handle {
    ($handle:ident, $new:expr) => {
        impl Handle for $handle {
            const TYPE: MetricType = MetricType::$handle;
            fn empty_family() -> Metrics {
                Metrics::$handle(BTreeMap::new())
            }
            fn family(metrics: &Metrics) -> Option<&BTreeMap<Tags, Self>> {
                match metrics {
                    Metrics::$handle(map) => Some(map),
                    _ => None,
                }
            }
            fn family_mut(metrics: &mut Metrics) -> Option<&mut BTreeMap<Tags, Self>> {
                match metrics {
                    Metrics::$handle(map) => Some(map),
                    _ => None,
                }
            }
            fn new(name: &str, registry: &Inner) -> Self {
                $new(name, registry)
            }
        }
    };
}

impl_handle!(Counter, |_: &str, _: &Inner| Counter::default());
impl_handle!(Gauge, |name: &str, registry: &Inner| {
    // Looked up for each series created, whoever creates it (a host may register the
    // family first), not for each lookup of a registered one.
    let no_data = crate_family(name).is_some_and(|own| own.starts_as_no_data);
    Gauge::new(registry.series(name), if no_data { f64::NAN } else { 0.0 })
});
impl_handle!(Histogram, |name: &str, registry: &Inner| {
    Histogram::new(registry.series(name))
});

impl Inner {
    /// A series on the registry's clock and retention.
    fn series(&self, name: &str) -> MetricSeries {
        MetricSeries::with_clock(name, self.retention, self.clock.clone())
    }
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRegistry")
            .field("retention", &self.inner.retention)
            .field("families", &self.inner.families.read().len())
            .finish_non_exhaustive()
    }
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        MetricsRegistry::new()
    }
}

impl MetricsRegistry {
    /// How long gauges and histograms keep their recent values by default.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

    /// An empty registry on the system clock with [`MetricsRegistry::DEFAULT_RETENTION`].
    pub fn new() -> MetricsRegistry {
        MetricsRegistry::with_clock(system_clock(), MetricsRegistry::DEFAULT_RETENTION)
    }

    /// An empty registry reading time from `clock`, keeping gauge and histogram values for
    /// `retention` (windows longer than that see only `retention`). The clock is taken as
    /// [`crate::CacheBuilder::clock`] takes it: by value, or shared as an `Arc` or a
    /// [`SharedClock`], which is then kept as given (and returned by
    /// [`MetricsRegistry::clock`]).
    pub fn with_clock(clock: impl Clock + 'static, retention: Duration) -> MetricsRegistry {
        MetricsRegistry {
            inner: Arc::new(Inner {
                clock: share(clock),
                retention,
                families: RwLock::new(BTreeMap::new()),
            }),
        }
    }

    /// The clock the registry's series read.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// How long gauges and histograms keep their values.
    pub fn retention(&self) -> Duration {
        self.inner.retention
    }

    /// The counter `name{labels}`, registered with `help` if new.
    ///
    /// A `name` of one of the crate's own families (see the [module docs](self)) is that
    /// family whoever registers it first: registered here before the crate registers it, it
    /// gets the crate's help (not `help`) and label names, as if declared
    /// ([`declare`](MetricsRegistry::declare)), and the crate's registration takes it as its
    /// own. It is checked against the crate's table only when it is created, not each time
    /// an existing series is looked up.
    ///
    /// Errors, registering nothing: [`MetricError::InvalidMetricName`],
    /// [`MetricError::InvalidLabelName`] or [`MetricError::DuplicateLabel`] for names outside
    /// Prometheus' grammar, [`MetricError::TypeConflict`] if `name` is registered as another
    /// type, [`MetricError::CrateFamilyConflict`] if it is one of the crate's families,
    /// not registered yet, of another type, [`MetricError::NameCollision`] if `name` is a
    /// histogram's `_sum`/`_count` series (one of the crate's own histograms', registered
    /// yet or not, naming it), and [`MetricError::UndeclaredLabel`] for a label
    /// a family with fixed label names does not have: one of the crate's own, registered
    /// yet or not (each error naming the crate's labels), or one the host declared. The
    /// same holds for [`gauge`](MetricsRegistry::gauge) and
    /// [`histogram`](MetricsRegistry::histogram).
    ///
    /// ```
    /// use memocache::{MetricError, MetricsRegistry};
    ///
    /// let registry = MetricsRegistry::new();
    /// let cache = [("source", "cache")];
    /// let served = registry.counter("files_served_total", "Files served.", &cache)?;
    /// served.inc();
    /// assert_eq!(registry.counter("files_served_total", "", &cache)?.get(), 1);
    /// assert!(matches!(
    ///     registry.gauge("files_served_total", "", &[]),
    ///     Err(MetricError::TypeConflict { .. })
    /// ));
    /// registry.histogram("upload_seconds", "Upload time.", &[])?;
    /// assert!(matches!(
    ///     registry.counter("upload_seconds_count", "", &[]),
    ///     Err(MetricError::NameCollision { .. })
    /// ));
    /// assert!(matches!(
    ///     registry.counter("files served", "", &[]),
    ///     Err(MetricError::InvalidMetricName(_))
    /// ));
    /// // The queue's depth is a gauge with a `status` label, even before a queue publishes.
    /// assert!(matches!(
    ///     registry.counter("memocache_jobs", "", &[("status", "queued")]),
    ///     Err(MetricError::CrateFamilyConflict { .. })
    /// ));
    /// assert!(matches!(
    ///     registry.gauge("memocache_jobs", "", &[("state", "queued")]),
    ///     Err(MetricError::UndeclaredLabel { .. })
    /// ));
    /// registry.gauge("memocache_jobs", "", &[("status", "queued")])?;
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Counter, MetricError> {
        self.get_or_register(name, help, labels)
    }

    /// The gauge `name{labels}`, registered with `help` if new. Errors as for
    /// [`MetricsRegistry::counter`].
    ///
    /// A new gauge starts at 0; one of the crate's `memocache_cache_hit_ratio` starts as NaN
    /// ("no data", see [`Gauge::set`]), as the crate's own registration creates it, so that
    /// a "hit ratio below X" rule does not fire on it before the cache's first publish.
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Gauge, MetricError> {
        self.get_or_register(name, help, labels)
    }

    /// The histogram `name{labels}`, registered with `help` if new; rendered as a summary
    /// that also writes `name_sum` and `name_count`. Errors as for
    /// [`MetricsRegistry::counter`].
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Histogram, MetricError> {
        self.get_or_register(name, help, labels)
    }

    /// Looks `name{labels}` up, registering it on first use. Nothing is registered on error.
    fn get_or_register<H: Handle>(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<H, MetricError> {
        validate_metric_name(name)?;
        let labels = to_tags(labels)?;
        let conflict = |registered| MetricError::TypeConflict {
            name: name.to_owned(),
            registered,
            requested: H::TYPE,
        };
        // Fast path under the shared lock: handles are usually asked for again and again.
        if let Some(family) = self.inner.families.read().get(name) {
            let map =
                H::family(&family.metrics).ok_or_else(|| conflict(family.metrics.metric_type()))?;
            if let Some(handle) = map.get(&labels) {
                return Ok(handle.clone());
            }
        }
        let (handle, _) = insert(
            &mut self.inner.families.write(),
            &self.inner,
            name,
            help,
            labels,
        )?;
        Ok(handle)
    }

    /// Declares the family `name`, of type `kind`, and the label names its series may carry:
    /// as for the crate's own families, a series with another label is then refused
    /// ([`MetricError::UndeclaredLabel`]), and so is an alert rule added afterwards that
    /// selects by a label the family never carries ([`MetricError::NoSuchLabel`]), which
    /// would select no series and never fire. A series may leave declared labels out (a label
    /// with an empty value is no label). A family not declared takes any label names.
    ///
    /// The family is registered with `help` if new, and rendered (with no series) from
    /// then on. A family registered already, with series, is declared if all of them carry
    /// only declared labels ([`MetricError::UndeclaredLabel`] names one that does not).
    /// Declaring a family again with the same names does nothing; with others it is
    /// [`MetricError::LabelsConflict`].
    ///
    /// One of the crate's own families ([`wiring`](super::wiring)'s tables, a pipeline's:
    /// see [`PipelineBuilder::registry`]) is declared only as the crate registers it, of its
    /// type and with its label names; as another type or with other names it is refused
    /// with [`MetricError::CrateFamilyConflict`], which names the crate's, before the crate
    /// registers it as after, so that the crate's registration never fails on it later.
    /// Declared first, it is registered with the crate's help, and the crate's registration
    /// takes it as its own (as it takes one a host registered first through
    /// [`counter`](MetricsRegistry::counter), which the table holds to the same). Names are
    /// checked as for [`MetricsRegistry::counter`], which gives the other errors; nothing is
    /// changed on error.
    ///
    /// [`PipelineBuilder::registry`]: crate::pipeline::PipelineBuilder::registry
    ///
    /// ```
    /// use memocache::{MetricError, MetricType, MetricsRegistry};
    ///
    /// let registry = MetricsRegistry::new();
    /// registry.declare("uploads_total", "Uploads.", MetricType::Counter, &["source"])?;
    /// registry.counter("uploads_total", "", &[("source", "cache")])?.inc();
    /// assert!(matches!(
    ///     registry.counter("uploads_total", "", &[("sorce", "cache")]),
    ///     Err(MetricError::UndeclaredLabel { .. })
    /// ));
    ///
    /// // The queue's depth gauge carries `status`, not `state`, even before a queue publishes.
    /// assert!(matches!(
    ///     registry.declare("memocache_jobs", "", MetricType::Gauge, &["state"]),
    ///     Err(MetricError::CrateFamilyConflict { .. })
    /// ));
    /// registry.declare("memocache_jobs", "", MetricType::Gauge, &["status"])?;
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn declare(
        &self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[&str],
    ) -> Result<(), MetricError> {
        validate_metric_name(name)?;
        let mut declared = BTreeSet::new();
        for &label in labels {
            validate_label_name(label)?;
            if !declared.insert(label.to_owned()) {
                return Err(MetricError::DuplicateLabel(label.to_owned()));
            }
        }
        // Checked against the table, not the registry: the crate may not have registered
        // its family yet, and a declaration taken now made its registration fail later.
        let own = crate_family(name);
        if let Some(own) = own
            && (own.kind != kind
                || !own
                    .labels
                    .iter()
                    .copied()
                    .eq(declared.iter().map(String::as_str)))
        {
            return Err(own.conflict(kind, declared));
        }
        let mut families = self.inner.families.write();
        let Some(family) = families.get_mut(name) else {
            check_summary_names(&families, name, kind)?;
            let metrics = match kind {
                MetricType::Counter => Counter::empty_family(),
                MetricType::Gauge => Gauge::empty_family(),
                MetricType::Histogram => Histogram::empty_family(),
            };
            let labels = Some(Arc::new(declared));
            // The crate's family means what the crate says it does.
            let help = own.map_or(help, |own| own.help).to_owned();
            families.insert(
                name.to_owned(),
                Family {
                    help,
                    metrics,
                    labels,
                },
            );
            return Ok(());
        };
        let registered = family.metrics.metric_type();
        if registered != kind {
            return Err(MetricError::TypeConflict {
                name: name.to_owned(),
                registered,
                requested: kind,
            });
        }
        if let Some(fixed) = &family.labels {
            if **fixed == declared {
                return Ok(());
            }
            return Err(MetricError::LabelsConflict {
                metric: name.to_owned(),
                labels: fixed.iter().cloned().collect(),
                declared: declared.into_iter().collect(),
            });
        }
        for tags in family.metrics.label_sets() {
            check_labels(name, tags, Some(&declared))?;
        }
        family.labels = Some(Arc::new(declared));
        Ok(())
    }

    /// Registers several metrics all or nothing: `register` asks the [`Batch`] for each
    /// handle, and if it returns an error, every family and series the batch created is
    /// taken back. The registry's write lock is held throughout, so no one sees a batch
    /// half done (and `register` must not call the registry itself: it would deadlock).
    /// The error need not be the batch's own: a caller that must do more than register to
    /// succeed (start threads that use the handles) does it in `register`, and a failure
    /// there takes the metrics back as well.
    pub(crate) fn register_all<T, E>(
        &self,
        register: impl FnOnce(&Batch<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let batch = Batch {
            inner: &self.inner,
            families: RefCell::new(self.inner.families.write()),
            added: RefCell::new(Vec::new()),
        };
        let registered = register(&batch);
        if registered.is_err() {
            batch.undo();
        }
        registered
    }

    /// Removes the series `name{labels}`: whether it was registered. The only way a series
    /// leaves the registry: one registered for each value of a label that keeps changing (a
    /// file, a request, a tenant) is kept, with its history, until removed, and every alert
    /// rule on its name reads it at each evaluation, so a long-running host removes the
    /// series it is done with, as Prometheus clients' `remove` does.
    ///
    /// Handles to the series still work, but what they record is no longer rendered nor
    /// read; asking for the series again registers a new one, from zero. The family stays
    /// (its type, help and declared labels), even with no series left. An alert firing or
    /// pending on the series resolves at the next evaluation, as for a series with no value.
    /// The crate's own families ([`wiring`](super::wiring)) are refused
    /// ([`MetricError::CrateSeries`]): the crate keeps publishing to their handles.
    ///
    /// ```
    /// use memocache::{MetricError, MetricsRegistry};
    ///
    /// let registry = MetricsRegistry::new();
    /// registry.gauge("upload_progress", "", &[("file", "a.wav")])?.set(0.5);
    /// assert!(registry.remove("upload_progress", &[("file", "a.wav")])?);
    /// assert!(!registry.remove("upload_progress", &[("file", "a.wav")])?);
    /// assert!(!registry.render_prometheus().contains("a.wav"));
    /// assert!(matches!(
    ///     registry.remove("memocache_jobs", &[("status", "queued")]),
    ///     Err(MetricError::CrateSeries(_))
    /// ));
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) -> Result<bool, MetricError> {
        validate_metric_name(name)?;
        let labels = to_tags(labels)?;
        if crate_family(name).is_some() {
            return Err(MetricError::CrateSeries(name.to_owned()));
        }
        let mut families = self.inner.families.write();
        Ok(families
            .get_mut(name)
            .is_some_and(|family| family.metrics.remove(&labels)))
    }

    /// The type `name` is registered with, if it is.
    pub fn metric_type(&self, name: &str) -> Option<MetricType> {
        let families = self.inner.families.read();
        families.get(name).map(|f| f.metrics.metric_type())
    }

    /// `aggregation` of the metric `name{labels}` over the `window` ending now; `None` when the
    /// metric does not exist or has no data for it. A label with an empty value is no label, as
    /// at registration.
    ///
    /// * Counters: [`Aggregation::Last`] is the total; windowed aggregations give `None` because
    ///   counters keep no history.
    /// * Gauges: `Last` is the current value; `Average` and `Percentile` aggregate the values the
    ///   gauge was set to within the window, and a window it was not set in is the value it
    ///   held throughout: its current value (a gauge is a level, and one set only when it
    ///   changes has stood at that value all along). A gauge never set has no data for a
    ///   window (its initial 0 was never measured), though `Last` reads that 0 (none, for a
    ///   gauge starting as NaN: see [`gauge`](MetricsRegistry::gauge)).
    /// * Histograms: `Last` is the newest observation within the window; `Average` and
    ///   `Percentile` aggregate the observations within the window.
    /// * A histogram `h`'s `h_sum` and `h_count`, the series its exposition writes besides the
    ///   quantiles: `Last` is the sum or count of its observations since creation, as rendered;
    ///   windowed aggregations give `None`, as for a counter.
    ///
    /// NaN is no data, for every kind and aggregation: the result is never `Some(NaN)`. A gauge
    /// set to NaN (as [`CacheMetrics`](super::wiring::CacheMetrics) publishes a hit ratio
    /// before the first read) gives `None` for `Last`, and its windows leave the NaN out (see
    /// [`Gauge::set`]), so a window it was not set in since is `None` too; finite values whose
    /// average or percentile overflows to NaN (see [`MetricSeries`]' docs) give `None` as
    /// well. ±∞ is a value: a gauge set to +∞ gives `Some(+∞)` for `Last` (but, left out of
    /// the windows, `None` for a window it was not set to a number in).
    ///
    /// ```
    /// use memocache::{Aggregation, ManualClock, MetricsRegistry, Tags};
    /// use std::time::Duration;
    ///
    /// let registry = MetricsRegistry::with_clock(ManualClock::new(), Duration::MAX);
    /// let ratio = registry.gauge("hit_ratio", "Hits / reads.", &[])?;
    /// let last = |r: &MetricsRegistry| {
    ///     r.aggregate("hit_ratio", &Tags::new(), Aggregation::Last, Duration::MAX)
    /// };
    /// ratio.set(0.5);
    /// assert_eq!(last(&registry), Some(0.5));
    /// ratio.set(f64::NAN);
    /// assert_eq!(last(&registry), None);
    /// # Ok::<(), memocache::MetricError>(())
    /// ```
    pub fn aggregate(
        &self,
        name: &str,
        labels: &Tags,
        aggregation: Aggregation,
        window: Duration,
    ) -> Option<f64> {
        let labels = &*without_empty(labels);
        let families = self.inner.families.read();
        let series = |metrics| aggregate_one(metrics, aggregation, window);
        let Found { family, part } = find(&families, name)?;
        match (&family.metrics, part) {
            (Metrics::Counter(map), Part::Own) => series(Series::Counter(map.get(labels)?)),
            (Metrics::Gauge(map), Part::Own) => series(Series::Gauge(map.get(labels)?)),
            (Metrics::Histogram(map), Part::Own) => series(Series::Histogram(map.get(labels)?)),
            (Metrics::Histogram(map), Part::Total(total)) => {
                series(Series::Total(map.get(labels)?, total))
            }
            // A summary has no buckets (and only a histogram's names are derived).
            (_, Part::Total(_) | Part::NoBuckets(_)) => None,
        }
    }

    /// What the metric name `name` reads, if anything is registered under it, or if it is
    /// one of the crate's own families or a name derived from one (see [`source_in`]): a
    /// family, the `_sum` or `_count` of a histogram family (see
    /// [`aggregate`](Self::aggregate)), or the `_bucket` a histogram, exposed as a summary,
    /// does not have.
    pub(crate) fn source(&self, name: &str) -> Option<Source> {
        source_in(&self.inner.families.read(), name)
    }

    /// [`aggregate`](Self::aggregate) of every series of `name` that `selector` selects, as
    /// a Prometheus selector does: the series that have each of its labels, and for a label
    /// with an empty value, the series that do not have that label. An empty selector selects
    /// every series of the metric. Sorted by labels; empty when the metric does not exist.
    pub(crate) fn aggregate_selected(
        &self,
        name: &str,
        selector: &Tags,
        aggregation: Aggregation,
        window: Duration,
    ) -> Vec<(Tags, Option<f64>)> {
        fn each<'m, H>(
            map: &'m BTreeMap<Tags, H>,
            selector: &'m Tags,
            wrap: impl Fn(&'m H) -> Series<'m>,
            aggregation: Aggregation,
            window: Duration,
        ) -> Vec<(Tags, Option<f64>)> {
            map.iter()
                .filter(|(labels, _)| selects(selector, labels))
                .map(|(labels, h)| (labels.clone(), aggregate_one(wrap(h), aggregation, window)))
                .collect()
        }
        let families = self.inner.families.read();
        let Some(Found { family, part }) = find(&families, name) else {
            return Vec::new();
        };
        let (selector, a, w) = (selector, aggregation, window);
        match (&family.metrics, part) {
            (Metrics::Counter(map), Part::Own) => each(map, selector, Series::Counter, a, w),
            (Metrics::Gauge(map), Part::Own) => each(map, selector, Series::Gauge, a, w),
            (Metrics::Histogram(map), Part::Own) => each(map, selector, Series::Histogram, a, w),
            (Metrics::Histogram(map), Part::Total(total)) => {
                each(map, selector, |h| Series::Total(h, total), a, w)
            }
            (_, Part::Total(_) | Part::NoBuckets(_)) => Vec::new(),
        }
    }

    /// All metrics in the Prometheus text exposition format (version 0.0.4), ready to be served
    /// with `Content-Type: text/plain; version=0.0.4` from the host's HTTP endpoint.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let families = self.inner.families.read();
        for (name, family) in families.iter() {
            // Writing to a String cannot fail.
            let _ = render_family(&mut out, name, family, self.inner.retention);
        }
        out
    }
}

/// The series a histogram writes besides its own name (see [`render_family`]), with the
/// running total each exposes.
const SUMMARY_TOTALS: [(&str, Total); 2] = [("_sum", Total::Sum), ("_count", Total::Count)];

/// One of a histogram's running totals since creation, exposed as its `_sum` or `_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Total {
    Sum,
    Count,
}

/// The series a Prometheus histogram `h` writes for its buckets, `h_bucket{le="…"}`, which
/// this registry's histograms, exposed as summaries, do not (see [`find`]).
const BUCKET_SUFFIX: &str = "_bucket";

/// What a metric name reads in a registry (see [`MetricsRegistry::source`]), for an alert
/// rule to tell whether it can read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    /// The kind of series.
    pub(crate) reads: Reads,
    /// The label names those series may carry, if fixed (see [`Family`]'s); `None`: any.
    pub(crate) labels: Option<Arc<BTreeSet<String>>>,
}

/// The kind of series a metric name reads (see [`Source`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reads {
    /// A registered family of this type.
    Family(MetricType),
    /// A histogram's `_sum` or `_count`: a running total, with no history.
    HistogramTotal,
    /// Nothing: the `_bucket` of the histogram of this name, which has no buckets.
    NoBuckets(String),
}

/// What a name reads in `families` (see [`find`]).
struct Found<'f> {
    /// The family whose series it reads: its own, or the histogram's whose exposition (or a
    /// Prometheus histogram's) derives the name.
    family: &'f Family,
    /// Which of them.
    part: Part<'f>,
}

/// What of its family a name reads (see [`Found`]).
#[derive(Clone, Copy)]
enum Part<'f> {
    /// The family's own series.
    Own,
    /// A histogram's running total: `h_sum` or `h_count`.
    Total(Total),
    /// Nothing: `h_bucket`, for the histogram `h` named here.
    NoBuckets(&'f str),
}

impl Part<'_> {
    /// What the part reads of a family of type `kind`.
    fn reads(self, kind: MetricType) -> Reads {
        match self {
            Part::Own => Reads::Family(kind),
            Part::Total(_) => Reads::HistogramTotal,
            Part::NoBuckets(histogram) => Reads::NoBuckets(histogram.to_owned()),
        }
    }
}

/// What `name` reads in `families` ([`find`]), or else in the crate's table
/// ([`families`](super::families)): what it reads once the crate registers the family, which
/// is all it can read, since a family created under that name is the crate's (see
/// [`insert`]). So a rule on one of the crate's families is checked against its type and
/// labels before the crate registers it as after.
fn source_in(families: &BTreeMap<String, Family>, name: &str) -> Option<Source> {
    if let Some(Found { family, part }) = find(families, name) {
        let reads = part.reads(family.metrics.metric_type());
        let labels = family.labels.clone();
        return Some(Source { reads, labels });
    }
    let (own, part) = match crate_family(name) {
        Some(own) => (own, Part::Own),
        None => derived(name).find_map(|(histogram, total)| {
            let own = crate_family(histogram).filter(|own| own.kind == MetricType::Histogram)?;
            Some((own, total.map_or(Part::NoBuckets(own.name), Part::Total)))
        })?,
    };
    let labels = Some(Arc::new(own.label_set()));
    Some(Source {
        reads: part.reads(own.kind),
        labels,
    })
}

/// The names `name` may be derived from as a histogram's (see [`find`]): for each suffix it
/// has, the histogram's name and the running total it reads (`None`: the buckets it does not
/// have).
fn derived(name: &str) -> impl Iterator<Item = (&str, Option<Total>)> {
    let totals = SUMMARY_TOTALS.map(|(suffix, total)| (suffix, Some(total)));
    let suffixes = totals.into_iter().chain([(BUCKET_SUFFIX, None)]);
    suffixes.filter_map(move |(suffix, total)| Some((name.strip_suffix(suffix)?, total)))
}

/// What the name `name` reads in `families`. A histogram `h` exposes `h_sum` and `h_count`,
/// so a rule written as it would be against the exposition (`h_count > 100`) reads the
/// histogram's totals; the registry refuses a family of either name next to `h`
/// ([`check_summary_names`]), so a name never means both. `h_bucket`, which a rule written
/// against a Prometheus histogram's exposition reads, is found too, as the nothing it reads
/// here (a summary has no buckets), so that such a rule is refused rather than taken, never
/// to fire; a family registered as `h_bucket` (which a summary does not collide with) is
/// what that name reads, as any family is.
fn find<'f>(families: &'f BTreeMap<String, Family>, name: &str) -> Option<Found<'f>> {
    if let Some(family) = families.get(name) {
        let part = Part::Own;
        return Some(Found { family, part });
    }
    derived(name).find_map(|(histogram, total)| {
        let (histogram, family) = families.get_key_value(histogram)?;
        let part = match (&family.metrics, total) {
            (Metrics::Histogram(_), Some(total)) => Part::Total(total),
            (Metrics::Histogram(_), None) => Part::NoBuckets(histogram),
            (Metrics::Counter(_) | Metrics::Gauge(_), _) => return None,
        };
        Some(Found { family, part })
    })
}

/// Looks the series `name{labels}` up in `families`, adding it (and its family) if new.
/// A family it creates under the name of one of the crate's own families
/// ([`families`](super::families)) is that family: of its type, with its help, and with its
/// label names fixed (see [`Family`]'s), whoever asks first. Returns the handle and, when it
/// added the series, whether it created the family too. Nothing is added on error.
fn insert<H: Handle>(
    families: &mut BTreeMap<String, Family>,
    inner: &Inner,
    name: &str,
    help: &str,
    labels: Tags,
) -> Result<(H, Option<bool>), MetricError> {
    let created = !families.contains_key(name);
    let (mut help, mut fixed) = (help, None);
    if created {
        check_summary_names(families, name, H::TYPE)?;
        // Looked up only for a family created here, not for each lookup of one registered
        // (the crate's batches look theirs up at every publish): a family of the crate's is
        // held to the table from its creation on.
        if let Some(own) = crate_family(name) {
            if own.kind != H::TYPE {
                return Err(own.conflict(H::TYPE, labels.keys().cloned()));
            }
            let names = Arc::new(own.label_set());
            // Before the family is added, so that a series refused adds no family either.
            check_labels(name, &labels, Some(&names))?;
            (help, fixed) = (own.help, Some(names));
        }
    }
    let family = families.entry(name.to_owned()).or_insert_with(|| Family {
        help: help.to_owned(),
        metrics: H::empty_family(),
        labels: fixed,
    });
    let registered = family.metrics.metric_type();
    let map = H::family_mut(&mut family.metrics).ok_or_else(|| MetricError::TypeConflict {
        name: name.to_owned(),
        registered,
        requested: H::TYPE,
    })?;
    if let Some(handle) = map.get(&labels) {
        return Ok((handle.clone(), None));
    }
    check_labels(name, &labels, family.labels.as_deref())?;
    let handle = H::new(name, inner);
    map.insert(labels, handle.clone());
    Ok((handle, Some(created)))
}

/// Refuses a series `labels` of the family `metric` if its label names are fixed to `fixed`
/// and it carries another ([`MetricError::UndeclaredLabel`]).
fn check_labels(
    metric: &str,
    labels: &Tags,
    fixed: Option<&BTreeSet<String>>,
) -> Result<(), MetricError> {
    let Some(fixed) = fixed else {
        return Ok(());
    };
    match labels.keys().find(|label| !fixed.contains(*label)) {
        Some(label) => Err(MetricError::UndeclaredLabel {
            metric: metric.to_owned(),
            label: label.clone(),
            labels: fixed.iter().cloned().collect(),
        }),
        None => Ok(()),
    }
}

/// Registration of several metrics as one step; see [`MetricsRegistry::register_all`].
/// Its methods are those of the registry, with the same errors; but a batch registers the
/// crate's own figures ([`wiring`](super::wiring), a pipeline's), so it takes a family of
/// the crate's table ([`families`](super::families)) rather than a name and a help text (a
/// family it creates, as any created under a name of the table, has the table's help and
/// label names: see [`insert`]).
pub(crate) struct Batch<'a> {
    inner: &'a Inner,
    families: RefCell<RwLockWriteGuard<'a, BTreeMap<String, Family>>>,
    /// The series the batch added, with whether it created their family: what a failed
    /// batch takes back.
    added: RefCell<Vec<(String, Tags, bool)>>,
}

impl Batch<'_> {
    /// Whether the family `name` has a series (registered by anyone, in this batch or
    /// before it). A family declared ([`MetricsRegistry::declare`]) but given no series yet
    /// has none: nothing publishes into it.
    pub(crate) fn has_series(&self, name: &str) -> bool {
        let families = self.families.borrow();
        families
            .get(name)
            .is_some_and(|family| family.metrics.label_sets().next().is_some())
    }

    /// [`MetricsRegistry::source`], in the batch.
    pub(crate) fn source(&self, name: &str) -> Option<Source> {
        source_in(&self.families.borrow(), name)
    }

    /// [`MetricsRegistry::counter`], in the batch.
    pub(crate) fn counter(
        &self,
        family: &CrateFamily,
        labels: &[(&str, &str)],
    ) -> Result<Counter, MetricError> {
        self.get_or_register(family, labels)
    }

    /// [`MetricsRegistry::gauge`], in the batch.
    pub(crate) fn gauge(
        &self,
        family: &CrateFamily,
        labels: &[(&str, &str)],
    ) -> Result<Gauge, MetricError> {
        self.get_or_register(family, labels)
    }

    /// [`MetricsRegistry::histogram`], in the batch.
    pub(crate) fn histogram(
        &self,
        family: &CrateFamily,
        labels: &[(&str, &str)],
    ) -> Result<Histogram, MetricError> {
        self.get_or_register(family, labels)
    }

    /// The series `family{labels}`, registered if new, as an `H`: the caller asks for the
    /// table's type, as any registration of the family must ([`insert`]).
    fn get_or_register<H: Handle>(
        &self,
        family: &CrateFamily,
        labels: &[(&str, &str)],
    ) -> Result<H, MetricError> {
        let name = family.name;
        validate_metric_name(name)?;
        let labels = to_tags(labels)?;
        let mut families = self.families.borrow_mut();
        let (handle, added) = insert(&mut families, self.inner, name, family.help, labels.clone())?;
        if let Some(created) = added {
            self.added
                .borrow_mut()
                .push((name.to_owned(), labels, created));
        }
        Ok(handle)
    }

    /// Takes back everything the batch added, newest first.
    fn undo(self) {
        let mut families = self.families.into_inner();
        for (name, labels, created) in self.added.into_inner().into_iter().rev() {
            if created {
                families.remove(&name);
            } else if let Some(family) = families.get_mut(&name) {
                let _ = family.metrics.remove(&labels);
            }
        }
    }
}

/// Refuses a new family `name` of type `kind` whose rendered series would repeat a name
/// another family renders: a histogram `h` writes `h_sum` and `h_count` too. The crate's own
/// histograms ([`families`](super::families)) count whether or not the crate has registered
/// them yet: a family taking the name of one of their series made the crate's registration
/// fail later, on a registry it had every right to.
fn check_summary_names(
    families: &BTreeMap<String, Family>,
    name: &str,
    kind: MetricType,
) -> Result<(), MetricError> {
    let collision = |histogram: &str, series: String| MetricError::NameCollision {
        name: name.to_owned(),
        histogram: histogram.to_owned(),
        series,
    };
    for (suffix, _) in SUMMARY_TOTALS {
        if kind == MetricType::Histogram {
            let series = format!("{name}{suffix}");
            if families.contains_key(&series) {
                return Err(collision(name, series));
            }
        }
        if let Some(base) = name.strip_suffix(suffix)
            && (families
                .get(base)
                .is_some_and(|f| f.metrics.metric_type() == MetricType::Histogram)
                || crate_family(base).is_some_and(|own| own.kind == MetricType::Histogram))
        {
            return Err(collision(base, name.to_owned()));
        }
    }
    Ok(())
}

/// One series of a family, whichever its type, or a histogram's running total.
enum Series<'m> {
    Counter(&'m Counter),
    Gauge(&'m Gauge),
    Histogram(&'m Histogram),
    Total(&'m Histogram, Total),
}

/// `aggregation` of one series over `window` (see [`MetricsRegistry::aggregate`]); never
/// `Some(NaN)`.
fn aggregate_one(series: Series<'_>, aggregation: Aggregation, window: Duration) -> Option<f64> {
    let value = match series {
        Series::Counter(counter) => match aggregation {
            Aggregation::Last => Some(counter.get() as f64),
            Aggregation::Average | Aggregation::Percentile(_) => None,
        },
        Series::Gauge(gauge) => {
            let mut cell = gauge.0.lock();
            cell.history.prune_expired();
            match aggregation {
                Aggregation::Last => Some(cell.current),
                // A window the gauge was not set in is one it held its value throughout: a
                // level, not an event (a finite current value was the last one set, and so in
                // the history if set within the window). Read as no data, a gauge held at 500
                // but set only when it changed never met "average above 100", and a firing
                // alert on it resolved one window after the last change. A gauge never set
                // holds no measurement, only the 0 it starts at: no data, as before.
                _ => aggregate_series(&cell.history, aggregation, window)
                    .or_else(|| (cell.set && cell.current.is_finite()).then_some(cell.current)),
            }
        }
        Series::Histogram(histogram) => match aggregation {
            // Selected outside the histogram's lock: observers wait for the copy only.
            Aggregation::Percentile(p) => percentile_of(histogram.window_values(window), p),
            Aggregation::Last | Aggregation::Average => {
                let mut cell = histogram.0.lock();
                cell.series.prune_expired();
                aggregate_series(&cell.series, aggregation, window)
            }
        },
        // Totals since creation keep no history, as a counter's.
        Series::Total(histogram, total) => match aggregation {
            Aggregation::Last => {
                let cell = histogram.0.lock();
                Some(match total {
                    Total::Sum => cell.sum,
                    Total::Count => cell.count as f64,
                })
            }
            Aggregation::Average | Aggregation::Percentile(_) => None,
        },
    };
    // NaN is "no data" (a gauge set to NaN, or finite values whose aggregate overflows): one
    // filter here, for every kind and aggregation, so that `aggregate` keeps its promise of
    // `None` and a notification never carries `Some(NaN)`.
    value.filter(|v| !v.is_nan())
}

/// Whether a series with `labels` (which hold no empty value) is one `selector` selects: it
/// has each of the selector's labels, and none of those the selector gives an empty value.
fn selects(selector: &Tags, labels: &Tags) -> bool {
    selector.iter().all(|(name, value)| match labels.get(name) {
        Some(found) => found == value,
        None => value.is_empty(),
    })
}

fn aggregate_series(
    series: &MetricSeries,
    aggregation: Aggregation,
    window: Duration,
) -> Option<f64> {
    // Each arm reads the clock once: a length checked first and the window aggregated after
    // are two readings, and a sample expiring between them gave the empty window's 0.0.
    match aggregation {
        // The newest sample is in the window whenever the window holds any.
        Aggregation::Last if series.window_len(window) > 0 => {
            series.last().map(|s| s.value.value())
        }
        Aggregation::Last => None,
        Aggregation::Average => {
            let stats = series.window_stats(window);
            (stats.count > 0).then_some(stats.mean)
        }
        Aggregation::Percentile(p) => percentile_of(series.window_values(window), p),
    }
}

/// The percentile `p` of `window`'s values; `None` for an empty window.
fn percentile_of(window: Vec<f64>, p: Percentile) -> Option<f64> {
    percentiles_of(window, &[p])?.first().copied()
}

/// The `percentiles` of `window`'s values, in the order asked; `None` for an empty window.
fn percentiles_of(mut window: Vec<f64>, percentiles: &[Percentile]) -> Option<Vec<f64>> {
    (!window.is_empty()).then(|| linear_percentiles(&mut window, percentiles))
}

fn render_family(out: &mut String, name: &str, family: &Family, window: Duration) -> fmt::Result {
    let kind = match family.metrics {
        Metrics::Counter(_) => "counter",
        Metrics::Gauge(_) => "gauge",
        Metrics::Histogram(_) => "summary",
    };
    // No help is no HELP line, as the Prometheus clients write it: `# HELP name ` says
    // nothing, and ends in the whitespace the text format ignores.
    if !family.help.is_empty() {
        writeln!(out, "# HELP {name} {}", escape_help(&family.help))?;
    }
    writeln!(out, "# TYPE {name} {kind}")?;
    match &family.metrics {
        Metrics::Counter(map) => {
            for (labels, counter) in map {
                writeln!(out, "{name}{} {}", LabelSet(labels, None), counter.get())?;
            }
        }
        Metrics::Gauge(map) => {
            for (labels, gauge) in map {
                let current = {
                    let mut cell = gauge.0.lock();
                    cell.history.prune_expired();
                    cell.current
                };
                writeln!(
                    out,
                    "{name}{} {}",
                    LabelSet(labels, None),
                    PromFloat(current)
                )?;
            }
        }
        Metrics::Histogram(map) => {
            for (labels, histogram) in map {
                let (mut data, sum, count) = {
                    let mut cell = histogram.0.lock();
                    cell.series.prune_expired();
                    (cell.series.window_values(window), cell.sum, cell.count)
                };
                // Selected after releasing the histogram's lock: observers wait for the copy only.
                let values = if data.is_empty() {
                    [f64::NAN; SUMMARY_QUANTILES.len()].to_vec()
                } else {
                    linear_percentiles(&mut data, &SUMMARY_QUANTILES)
                };
                for (p, v) in SUMMARY_QUANTILES.iter().zip(values) {
                    let quantile = p.quantile().to_string();
                    let set = LabelSet(labels, Some(("quantile", &quantile)));
                    writeln!(out, "{name}{set} {}", PromFloat(v))?;
                }
                let set = LabelSet(labels, None);
                writeln!(out, "{name}_sum{set} {}", PromFloat(sum))?;
                writeln!(out, "{name}_count{set} {}", count)?;
            }
        }
    }
    Ok(())
}

/// `{a="x",b="y"}` (or nothing for no labels), values escaped; `extra` goes last.
struct LabelSet<'a>(&'a Tags, Option<(&'a str, &'a str)>);

impl fmt::Display for LabelSet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pairs = self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(self.1)
            .peekable();
        if pairs.peek().is_none() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (k, v)) in pairs.enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}=\"")?;
            for c in v.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => f.write_char(c)?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

/// A float as the exposition format spells it: `NaN`, `+Inf`, `-Inf`, or the shortest decimal
/// that round-trips.
struct PromFloat(f64);

impl fmt::Display for PromFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v == f64::INFINITY {
            f.write_str("+Inf")
        } else if v == f64::NEG_INFINITY {
            f.write_str("-Inf")
        } else {
            write!(f, "{v}")
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Refuses a metric name outside Prometheus' grammar; alert rules are checked with it too.
pub(super) fn validate_metric_name(name: &str) -> Result<(), MetricError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(MetricError::InvalidMetricName(name.to_owned()))
    }
}

/// Refuses a label name outside Prometheus' grammar or reserved (see the [module docs](self));
/// alert rules are checked with it too.
pub(super) fn validate_label_name(name: &str) -> Result<(), MetricError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
        // Reserved by summaries and histograms for their own series.
        && name != "quantile"
        && name != "le";
    if ok {
        Ok(())
    } else {
        Err(MetricError::InvalidLabelName(name.to_owned()))
    }
}

/// The label set `labels` names, checked; empty values are dropped (see [`without_empty`]).
fn to_tags(labels: &[(&str, &str)]) -> Result<Tags, MetricError> {
    let mut tags = Tags::new();
    for &(k, v) in labels {
        validate_label_name(k)?;
        if tags.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(MetricError::DuplicateLabel(k.to_owned()));
        }
    }
    // Dropped after the checks, so that a repeated or invalid name is an error either way.
    tags.retain(|_, v| !v.is_empty());
    Ok(tags)
}

/// `labels` without the labels whose value is empty, borrowed when there are none.
///
/// Prometheus ingests a label with an empty value as no label at all (prometheus/docs#548),
/// so `x{a=""}` and `x` are one series to a scraper: kept apart here, they rendered as two
/// samples of that one series. Registration and lookups both drop empty values, so they name
/// the same series.
fn without_empty(labels: &Tags) -> Cow<'_, Tags> {
    if labels.values().any(String::is_empty) {
        let mut owned = labels.clone();
        owned.retain(|_, v| !v.is_empty());
        Cow::Owned(owned)
    } else {
        Cow::Borrowed(labels)
    }
}

/// A monotonically increasing count; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`, saturating at `u64::MAX`: a counter never goes backwards, and a wrap to 0
    /// would read as a counter reset to a scraper.
    pub fn inc_by(&self, n: u64) {
        // Relaxed: a counter orders nothing else; readers only need an eventually exact total.
        // A compare-and-swap loop rather than `fetch_add`, which wraps; uncontended it is one
        // locked instruction as well.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| {
                Some(count.saturating_add(n))
            });
    }

    /// Raises the count to `total` if it is below it; for mirroring a cumulative count kept
    /// elsewhere (the cache's statistics). Taking the maximum keeps the counter monotonic even
    /// when two threads publish snapshots out of order.
    pub fn advance_to(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct GaugeCell {
    current: f64,
    /// Whether it was ever set (or added to): the 0 it starts at (or NaN: see
    /// [`Gauge::new`]) is no measurement, so a window of a gauge never set has no data rather
    /// than that 0 (see `aggregate_one`).
    set: bool,
    history: MetricSeries,
}

impl GaugeCell {
    /// Makes `value` the gauge's, adding it to the history if it is finite (see
    /// [`Gauge::set`]).
    fn store(&mut self, value: f64) {
        self.current = value;
        self.set = true;
        // The only possible error is the non-finite value `Gauge::set` documents skipping.
        let _ = self
            .history
            .add_value(MetricValue::gauge(value), Tags::new());
    }
}

/// A value that goes up and down, with a history for windowed aggregation; clones share it.
#[derive(Clone)]
pub struct Gauge(Arc<Mutex<GaugeCell>>);

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Gauge").field(&self.get()).finish()
    }
}

impl Gauge {
    /// A gauge at `start` (0, or NaN for "no data"), never set.
    fn new(history: MetricSeries, start: f64) -> Gauge {
        Gauge(Arc::new(Mutex::new(GaugeCell {
            current: start,
            set: false,
            history,
        })))
    }

    /// Sets the value. A non-finite value is exposed as such (`NaN`, `+Inf`) but is not added
    /// to the history that windowed aggregations read.
    ///
    /// NaN means "no data": [`MetricsRegistry::aggregate`] gives `None` for the gauge's
    /// [`Aggregation::Last`] until it is set to a number again, so alert rules see no data (a
    /// condition that is false), and its windows hold only the numbers it was set to. ±∞ is a
    /// value for `Last` (+∞ meets a "greater than" threshold) but, as a [`MetricSeries`] holds
    /// finite values only, is left out of the windows too.
    pub fn set(&self, value: f64) {
        self.0.lock().store(value);
    }

    /// Adds `delta` (negative to subtract). A gauge at NaN (no data) stays NaN, as does one
    /// whose sum is NaN (+∞ plus −∞): see [`Gauge::set`].
    pub fn add(&self, delta: f64) {
        let mut cell = self.0.lock();
        let value = cell.current + delta;
        cell.store(value);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.lock().current
    }
}

struct HistogramCell {
    count: u64,
    sum: f64,
    series: MetricSeries,
}

/// A distribution of observations with exact windowed percentiles; clones share it.
#[derive(Clone)]
pub struct Histogram(Arc<Mutex<HistogramCell>>);

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cell = self.0.lock();
        f.debug_struct("Histogram")
            .field("count", &cell.count)
            .field("sum", &cell.sum)
            .finish()
    }
}

impl Histogram {
    fn new(series: MetricSeries) -> Histogram {
        Histogram(Arc::new(Mutex::new(HistogramCell {
            count: 0,
            sum: 0.0,
            series,
        })))
    }

    /// Records one observation; NaN and ±∞ are rejected with [`MetricError::NonFinite`] and
    /// change nothing.
    pub fn observe(&self, value: f64) -> Result<(), MetricError> {
        let mut cell = self.0.lock();
        cell.series
            .add_value(MetricValue::histogram(value), Tags::new())?;
        cell.count += 1;
        cell.sum += value;
        Ok(())
    }

    /// Observations since creation.
    pub fn count(&self) -> u64 {
        self.0.lock().count
    }

    /// Sum of the observations since creation.
    pub fn sum(&self) -> f64 {
        self.0.lock().sum
    }

    /// Percentiles of the observations in the `window` ending now (numpy's `linear` method);
    /// each `0.0` for an empty window, as [`MetricSeries::calculate_percentiles`].
    pub fn percentiles(&self, percentiles: &[Percentile], window: Duration) -> Vec<f64> {
        linear_percentiles(&mut self.window_values(window), percentiles)
    }

    /// [`percentiles`](Self::percentiles), but `None` for an empty window. One copy of the
    /// window answers both questions: asking first whether the window is empty reads the
    /// clock a second time, and an observation expiring in between gave the empty window's
    /// 0.0, a latency of zero.
    pub(crate) fn percentiles_if_any(
        &self,
        percentiles: &[Percentile],
        window: Duration,
    ) -> Option<Vec<f64>> {
        percentiles_of(self.window_values(window), percentiles)
    }

    /// A copy of the window's observations, taken under the lock; selection happens after.
    fn window_values(&self, window: Duration) -> Vec<f64> {
        let mut cell = self.0.lock();
        cell.series.prune_expired();
        cell.series.window_values(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_grammar() {
        for good in ["a", "_a", ":a", "memocache_cache_hits_total", "a:b_c9"] {
            assert!(validate_metric_name(good).is_ok(), "{good}");
        }
        for bad in ["", "9a", "a-b", "a b", "é"] {
            assert!(validate_metric_name(bad).is_err(), "{bad}");
        }
        for good in ["a", "_a", "cause", "status_2"] {
            assert!(validate_label_name(good).is_ok(), "{good}");
        }
        for bad in ["", "9a", "a:b", "__name__", "quantile", "le"] {
            assert!(validate_label_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn floats_as_prometheus_spells_them() {
        assert_eq!(PromFloat(f64::NAN).to_string(), "NaN");
        assert_eq!(PromFloat(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(PromFloat(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(PromFloat(0.25).to_string(), "0.25");
        assert_eq!(PromFloat(3.0).to_string(), "3");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }
}
