//! Alert rules and their evaluation: [`AlertRule`], [`AlertEvaluator`], [`Notifier`].
//!
//! # Series, as a Prometheus selector picks them
//!
//! A rule names a metric and, optionally, labels ([`AlertRule::with_label`]), and watches every
//! series of the metric that has those labels, whatever other labels the series carries; a
//! label with an empty value asks for the series without that label. So a rule with no labels
//! watches every series of its metric: on `memocache_jobs`, which has only `status` series,
//! it watches all three, where looking for an unlabelled series would find none and never
//! fire. Each series alerts on its own, as Prometheus' alerts do: it has its own state, fires
//! and resolves with a [`Notification`] carrying its labels, and a series that appears later
//! is watched from then on. [`AlertEvaluator::series_states`] gives each series' state and
//! [`AlertEvaluator::state`] the rule's, the most advanced of them.
//!
//! A rule names a metric as the exposition shows it: for a histogram `h` (rendered as a
//! summary), `h` reads its observations and `h_sum` and `h_count` its running sum and count,
//! so `h_count > 100` fires as it would in Prometheus (it used to read nothing, and never
//! fire). A rule that could never read a value of its metric is refused, if the metric is
//! registered when the rule is added ([`AlertEvaluator::add_rule`]) or is one of the
//! crate's own families (or derived from one), which the registry knows before the crate
//! registers them, and reported if it is registered later
//! ([`AlertEvaluator::rule_health`], and a warning in the log): an average
//! or a percentile of a running total (a counter, `h_sum`, `h_count`), which keeps no
//! history, a histogram read over a window of zero, `h_bucket` (a summary has no buckets:
//! a quantile is read with [`Aggregation::Percentile`], which a rule selecting `quantile` or
//! `le` is told), or a label the metric never carries. Taken, such rules never fired and said
//! nothing. A metric's label names are known only for the families the crate registers for
//! its own figures ([`wiring`](super::wiring), a pipeline's), which have a fixed set (so
//! `memocache_jobs{state="failed"}` is refused, whether a queue registered its metrics yet
//! or not: the label is `status`), and for those the host declares
//! ([`MetricsRegistry::declare`]); another family the host registers may gain a series
//! with new labels at any time. A label *value* no series has is
//! never refused: a series may take it later, as a metric may be registered later.
//!
//! # States, as Prometheus has them
//!
//! Each series a rule watches is in one [`AlertState`]. On every
//! [`AlertEvaluator::evaluate`] the series is aggregated over the rule's window
//! ([`Aggregation`]: average, a percentile or the last value) and compared with its rule's
//! [`Threshold`]:
//!
//! ```text
//!            condition true                 held for `pending_for`
//! Inactive ─────────────────▶ Pending ──────────────────────────────▶ Firing  (notify once)
//!    ▲                          │ condition false                       │
//!    └──────────────────────────┘                                       │ false for
//!    └──────────────────────────────────────────────────────────────────┘ `keep_firing_for`
//!                                                                         (notify "resolved")
//! ```
//!
//! A short spike shorter than `pending_for` never fires, a firing rule notifies once rather than
//! on every evaluation, and a value hovering around the threshold does not resolve and re-fire
//! repeatedly because resolution waits for `keep_firing_for` of continuous "false". With both
//! durations zero a rule fires on the first evaluation that sees the condition and resolves on
//! the first that does not. "No data" (a missing metric, a histogram's empty window, a gauge
//! never set, a NaN: see [`MetricsRegistry::aggregate`]) counts as false, as in Prometheus,
//! rather than as the `0.0` the seed returned for an empty window, which would trigger every
//! `LessThan` rule on a quiet system. A gauge's window it was not set in is not empty: it
//! holds the value the gauge kept throughout.
//!
//! Removing a rule ([`AlertEvaluator::remove_rule`]) ends its alerts at once: each firing
//! series resolves, with its notification, and a pending one goes silently. Removed silently, a
//! firing alert stayed open on the pagers it had paged.
//!
//! Durations are measured on the registry's [`Clock`](crate::Clock) at evaluation times, so the
//! granularity is the evaluation interval the host chooses, and tests drive it with a
//! [`ManualClock`](crate::ManualClock).
//!
//! # Notifications
//!
//! A rule names its channels; the evaluator maps channel names to [`Notifier`]s. Every transition
//! to firing and to resolved produces one [`Notification`], delivered to each of the rule's
//! channels in their order and returned from `evaluate` (a removal's are delivered by
//! `remove_rule`, the same way). Delivery comes once every rule is stepped, so what a notifier does
//! (it may use the registry: no lock of it is held) does not change what the other rules of that
//! evaluation see; delivered rule by rule, a notifier that reset a gauge kept a later rule on it
//! from firing, and the outcome depended on the rules' order. A failing or unknown channel is
//! logged through `tracing` and does not stop delivery to the others or the evaluation of other
//! rules (nor does a subscriber that panics logging it). Nor does a notifier that panics: a
//! notifier is the host's code, so as with the crate's other callbacks every rule is evaluated and
//! every channel served, and then `evaluate` (or `remove_rule`) re-raises the first panic. Let out
//! at once, it skipped the rule's later channels for good (the rule had already moved to firing,
//! which notifies once) and the rules after it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;

use super::registry::{Reads, Source, validate_label_name, validate_metric_name};
use super::{MetricError, MetricType, MetricsRegistry, Percentile, Severity, Tags, Threshold};
use crate::callback::FirstPanic;
use crate::time::Timestamp;

/// Identity of an [`AlertRule`] (a random UUID, as in the seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertRuleId(Uuid);

impl AlertRuleId {
    /// A new random id.
    pub fn generate() -> AlertRuleId {
        AlertRuleId(Uuid::new_v4())
    }

    /// The UUID.
    pub const fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl fmt::Display for AlertRuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a rule reduces its metric's window to one number (in detail:
/// [`MetricsRegistry::aggregate`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Aggregation {
    /// The latest value (a counter's total, a gauge's current value, a histogram's newest
    /// observation in the window, the running total of a histogram's `_sum` or `_count`).
    Last,
    /// The mean of the values in the window (a gauge's window it was not set in holds its
    /// current value). Not for a counter or a histogram's `_sum` or `_count`, which keep no
    /// history: [`AlertEvaluator::add_rule`] refuses such a rule.
    Average,
    /// A percentile of the values in the window; as [`Aggregation::Average`].
    Percentile(Percentile),
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregation::Last => f.write_str("last"),
            Aggregation::Average => f.write_str("avg"),
            Aggregation::Percentile(p) => p.fmt(f),
        }
    }
}

/// An alert rule: which metric, how aggregated over which window, compared with which
/// threshold, how urgent, and whom to tell.
///
/// Built with [`AlertRule::new`] and the `with_*` methods. The defaults are
/// [`Aggregation::Average`], no labels, `pending_for` and `keep_firing_for` zero, enabled, no
/// channels.
///
/// The metric and label names are checked against the registry's grammar when the rule is
/// added to an evaluator: [`AlertEvaluator::add_rule`] refuses a rule no series could ever
/// match, which would otherwise never fire, and say nothing.
#[derive(Clone, Debug)]
pub struct AlertRule {
    id: AlertRuleId,
    name: String,
    metric_name: String,
    labels: Tags,
    /// The first label [`AlertRule::with_label`] was given two values of: what
    /// [`AlertEvaluator::add_rule`] refuses the rule for.
    conflicting_label: Option<String>,
    threshold: Threshold,
    severity: Severity,
    window: Duration,
    aggregation: Aggregation,
    pending_for: Duration,
    keep_firing_for: Duration,
    enabled: bool,
    last_triggered: Option<Timestamp>,
    notification_channels: Vec<String>,
}

impl AlertRule {
    /// A rule on every series of `metric_name` (no labels), averaging over `window`. The name
    /// need not be registered yet, but must be a valid one: see [`AlertEvaluator::add_rule`].
    pub fn new(
        name: impl Into<String>,
        metric_name: impl Into<String>,
        threshold: Threshold,
        severity: Severity,
        window: Duration,
    ) -> AlertRule {
        AlertRule {
            id: AlertRuleId::generate(),
            name: name.into(),
            metric_name: metric_name.into(),
            labels: Tags::new(),
            conflicting_label: None,
            threshold,
            severity,
            window,
            aggregation: Aggregation::Average,
            pending_for: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            enabled: true,
            last_triggered: None,
            notification_channels: Vec::new(),
        }
    }

    /// Aggregates the window with `aggregation`.
    pub fn with_aggregation(mut self, aggregation: Aggregation) -> AlertRule {
        self.aggregation = aggregation;
        self
    }

    /// Selects only the series of the metric that have this label with this value (call again
    /// for more labels); an empty value selects the series that do not have the label. See
    /// [the module docs](self) on how a rule selects series. `name` must be a label name the
    /// registry accepts: see [`AlertEvaluator::add_rule`].
    ///
    /// A label named again with the same value changes nothing. Named again with another
    /// value, it is a mistake [`AlertEvaluator::add_rule`] refuses
    /// ([`MetricError::DuplicateLabel`]): no series has two values of one label, and a rule
    /// watches one selection, not either of two. (It used to keep the last value silently,
    /// and so watch series other than the ones the first call named.)
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> AlertRule {
        let (name, value) = (name.into(), value.into());
        if self.conflicting_label.is_none()
            && self.labels.get(&name).is_some_and(|given| *given != value)
        {
            self.conflicting_label = Some(name.clone());
        }
        self.labels.insert(name, value);
        self
    }

    /// How long the condition must hold before the rule fires (Prometheus' `for`).
    pub fn with_pending_for(mut self, pending_for: Duration) -> AlertRule {
        self.pending_for = pending_for;
        self
    }

    /// How long the condition must stay false before a firing rule resolves.
    pub fn with_keep_firing_for(mut self, keep_firing_for: Duration) -> AlertRule {
        self.keep_firing_for = keep_firing_for;
        self
    }

    /// Adds a notification channel; one the rule names already is not added again (it would
    /// be notified twice for each firing).
    pub fn with_channel(mut self, channel: impl Into<String>) -> AlertRule {
        let channel = channel.into();
        if !self.notification_channels.contains(&channel) {
            self.notification_channels.push(channel);
        }
        self
    }

    /// The identity.
    pub fn id(&self) -> AlertRuleId {
        self.id
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metric it watches.
    pub fn metric_name(&self) -> &str {
        &self.metric_name
    }

    /// The labels selecting the metric's series; none selects them all.
    pub fn labels(&self) -> &Tags {
        &self.labels
    }

    /// The threshold (and its comparison).
    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// The severity.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// The window the metric is aggregated over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How the window is aggregated.
    pub fn aggregation(&self) -> Aggregation {
        self.aggregation
    }

    /// How long the condition must hold before firing.
    pub fn pending_for(&self) -> Duration {
        self.pending_for
    }

    /// How long the condition must stay false before resolving.
    pub fn keep_firing_for(&self) -> Duration {
        self.keep_firing_for
    }

    /// Whether the rule is evaluated; a disabled rule's condition is always false.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Enables or disables the rule.
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    /// When the rule last fired, on the evaluator's clock.
    pub fn last_triggered(&self) -> Option<Timestamp> {
        self.last_triggered
    }

    /// The channels notified when the rule fires or resolves.
    pub fn notification_channels(&self) -> &[String] {
        &self.notification_channels
    }

    /// Whether `current` meets the threshold; always false for a disabled rule.
    pub fn is_triggered(&self, current: f64) -> bool {
        self.enabled && self.threshold.check(current)
    }

    /// Records that the rule fired at `at`.
    pub fn trigger(&mut self, at: Timestamp) {
        self.last_triggered = Some(at);
    }

    /// Forgets when the rule last fired.
    pub fn reset(&mut self) {
        self.last_triggered = None;
    }
}

/// Where a rule is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// The condition is false (or there is no data).
    Inactive,
    /// The condition has held since `since`, for less than `pending_for`.
    Pending {
        /// When the condition was first seen true.
        since: Timestamp,
    },
    /// The rule fired and has not resolved.
    Firing {
        /// When the condition was first seen true (before the pending period).
        active_since: Timestamp,
        /// When it fired.
        fired_at: Timestamp,
        /// When the condition was first seen false again, if it is false now.
        clear_since: Option<Timestamp>,
    },
}

/// The two transitions that notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertTransition {
    /// Pending → firing (or inactive → firing with no pending period).
    Firing,
    /// Firing → inactive, after `keep_firing_for` of false, or because the rule was removed.
    Resolved,
}

impl fmt::Display for AlertTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlertTransition::Firing => "firing",
            AlertTransition::Resolved => "resolved",
        })
    }
}

/// What a [`Notifier`] is told when a rule fires or resolves.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The rule.
    pub rule_id: AlertRuleId,
    /// The rule's name.
    pub rule_name: String,
    /// The metric it watches.
    pub metric_name: String,
    /// The labels of the series that fired or resolved: the rule's labels and any others
    /// that series has, as a Prometheus alert's labels are.
    pub labels: Tags,
    /// The rule's severity.
    pub severity: Severity,
    /// Fired or resolved.
    pub transition: AlertTransition,
    /// The aggregated value at this evaluation; `None` when there was no data (NaN included:
    /// it is never `Some(NaN)`), or when the rule was removed ([`AlertEvaluator::remove_rule`]).
    pub value: Option<f64>,
    /// The rule's threshold.
    pub threshold: Threshold,
    /// How the value was aggregated.
    pub aggregation: Aggregation,
    /// When the condition was first seen true.
    pub active_since: Timestamp,
    /// When this evaluation ran, or the rule was removed.
    pub at: Timestamp,
}

/// A notifier failed to deliver.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("notification failed: {reason}")]
pub struct NotifyError {
    /// What went wrong.
    pub reason: String,
}

impl NotifyError {
    /// An error with this reason.
    pub fn new(reason: impl Into<String>) -> NotifyError {
        NotifyError {
            reason: reason.into(),
        }
    }
}

/// Delivers notifications to one channel (a pager, a chat room, a log).
pub trait Notifier: Send + Sync {
    /// Delivers one notification.
    fn notify(&self, notification: &Notification) -> Result<(), NotifyError>;
}

/// Logs notifications through `tracing`: firing critical alerts at `ERROR`, other firing alerts
/// at `WARN`, resolutions at `INFO`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingNotifier;

impl Notifier for TracingNotifier {
    fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let value = n.value.unwrap_or(f64::NAN);
        match (n.transition, n.severity) {
            (AlertTransition::Firing, Severity::Critical) => tracing::error!(
                rule = %n.rule_name, metric = %n.metric_name, severity = %n.severity,
                value, threshold = %n.threshold, aggregation = %n.aggregation, "alert firing"
            ),
            (AlertTransition::Firing, _) => tracing::warn!(
                rule = %n.rule_name, metric = %n.metric_name, severity = %n.severity,
                value, threshold = %n.threshold, aggregation = %n.aggregation, "alert firing"
            ),
            (AlertTransition::Resolved, _) => tracing::info!(
                rule = %n.rule_name, metric = %n.metric_name, severity = %n.severity,
                value, threshold = %n.threshold, aggregation = %n.aggregation, "alert resolved"
            ),
        }
        Ok(())
    }
}

/// Collects notifications in memory, for tests; clones share the collection.
#[derive(Clone, Debug, Default)]
pub struct MemoryNotifier {
    received: Arc<Mutex<Vec<Notification>>>,
}

impl MemoryNotifier {
    /// An empty collector.
    pub fn new() -> MemoryNotifier {
        MemoryNotifier::default()
    }

    /// Everything received so far, oldest first.
    pub fn notifications(&self) -> Vec<Notification> {
        self.received.lock().clone()
    }

    /// Everything received so far, leaving the collector empty.
    pub fn take(&self) -> Vec<Notification> {
        std::mem::take(&mut *self.received.lock())
    }
}

impl Notifier for MemoryNotifier {
    fn notify(&self, notification: &Notification) -> Result<(), NotifyError> {
        self.received.lock().push(notification.clone());
        Ok(())
    }
}

/// Evaluates alert rules against a [`MetricsRegistry`] and notifies their channels.
///
/// The host calls [`AlertEvaluator::evaluate`] periodically (every 15 s, say); the evaluator
/// spawns nothing itself.
pub struct AlertEvaluator {
    registry: MetricsRegistry,
    /// The rules, in the order they were added.
    rules: Vec<Watched>,
    channels: HashMap<String, Arc<dyn Notifier>>,
}

/// A rule and what the evaluator knows of it.
#[derive(Debug)]
struct Watched {
    rule: AlertRule,
    /// The states of its series that are not inactive: a series the rule selects and that
    /// has no entry here is inactive.
    states: BTreeMap<Tags, AlertState>,
    /// Why the last evaluation could not evaluate the rule ([`AlertEvaluator::rule_health`]).
    error: Option<MetricError>,
}

impl Watched {
    /// [`AlertEvaluator::rule_health`].
    fn health(&self) -> Result<(), &MetricError> {
        self.error.as_ref().map_or(Ok(()), Err)
    }
}

impl fmt::Debug for AlertEvaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertEvaluator")
            .field("rules", &self.rules)
            .field("channels", &self.channels.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AlertEvaluator {
    /// An evaluator with no rules reading `registry` (and its clock).
    pub fn new(registry: MetricsRegistry) -> AlertEvaluator {
        AlertEvaluator {
            registry,
            rules: Vec::new(),
            channels: HashMap::new(),
        }
    }

    /// Routes the channel `name` to `notifier`, replacing any notifier it had.
    pub fn add_channel(&mut self, name: impl Into<String>, notifier: Arc<dyn Notifier>) {
        self.channels.insert(name.into(), notifier);
    }

    /// Adds a rule, inactive; returns its id, the one to pass to [`state`](Self::state),
    /// [`remove_rule`](Self::remove_rule) and the other lookups.
    ///
    /// A rule whose id is already here (a clone of a rule added before: `AlertRule` is `Clone`
    /// and a clone keeps the id) is given a fresh id first. Two rules sharing an id would make
    /// every lookup by id see only the first of them.
    ///
    /// Errors, adding nothing: [`MetricError::InvalidMetricName`] for a metric name outside
    /// Prometheus' grammar, and [`MetricError::InvalidLabelName`] for a label name outside it
    /// or reserved, each naming the bad name and the grammar it breaks (or, for `quantile`
    /// and `le`, saying to take an [`Aggregation::Percentile`] instead); the registry refuses
    /// such names (see [`MetricsRegistry::counter`]), so no series could match the rule and
    /// it would never fire. A valid name of a metric not registered yet is accepted: metrics are
    /// registered on first use, and the rule watches the metric's series once they appear.
    /// [`MetricError::DuplicateLabel`], naming the label, for a rule given two values of one
    /// label ([`AlertRule::with_label`]), as the registry refuses a label given twice.
    /// And, for a rule on a metric already registered, or on one of the crate's own
    /// families (or its `_sum`, `_count` or `_bucket`), registered yet or not, whose type and
    /// labels the registry knows from the crate's table, where the rule could never read a
    /// value of it: [`MetricError::NoHistory`] for an [`Aggregation::Average`] or
    /// [`Aggregation::Percentile`] (the default is `Average`) of a counter or of a
    /// histogram's `_sum` or `_count`, running totals that keep no history,
    /// [`MetricError::EmptyWindow`] for a histogram read over a window that, cut to the
    /// registry's retention, is zero, [`MetricError::NoBuckets`] for `h_bucket`, for a
    /// histogram `h`, which, exposed as a summary, has no buckets; and
    /// [`MetricError::NoSuchLabel`] for a label (with a value) the metric never carries, which
    /// only a family with fixed label names tells: the crate's own, or one the host declared
    /// (see the [module docs](self)). A rule on a name registered later is checked at
    /// each evaluation instead: see [`rule_health`](Self::rule_health). A label value no
    /// series has yet is no error: a series may take it later.
    ///
    /// A rule on `h_sum` or `h_count`, for a histogram `h`, reads the histogram's running
    /// sum or count (see [`MetricsRegistry::aggregate`]), as a rule on the series of those
    /// names in the exposition would in Prometheus.
    ///
    /// ```
    /// use memocache::{Aggregation, AlertEvaluator, AlertRule, MetricError, MetricsRegistry};
    /// use memocache::{Severity, Threshold};
    /// use std::time::Duration;
    ///
    /// let registry = MetricsRegistry::new();
    /// let mut alerts = AlertEvaluator::new(registry.clone());
    /// let rule = |metric: &str| {
    ///     let above = Threshold::greater_than(100.0)?;
    ///     let minute = Duration::from_secs(60);
    ///     Ok::<_, MetricError>(AlertRule::new("backlog", metric, above, Severity::Warning, minute))
    /// };
    /// let err = alerts.add_rule(rule("queue-depth")?).unwrap_err();
    /// assert_eq!(err, MetricError::InvalidMetricName("queue-depth".into()));
    /// assert!(matches!(
    ///     alerts.add_rule(rule("queue_depth")?.with_label("__name__", "x")),
    ///     Err(MetricError::InvalidLabelName(_))
    /// ));
    /// let either = rule("queue_depth")?.with_label("queue", "a").with_label("queue", "b");
    /// let err = alerts.add_rule(either).unwrap_err();
    /// assert_eq!(err, MetricError::DuplicateLabel("queue".into()));
    /// // Not registered yet, but valid: accepted.
    /// alerts.add_rule(rule("queue_depth")?)?;
    /// assert_eq!(alerts.rules().count(), 1);
    /// // A counter has a total, not a window of values to average.
    /// registry.counter("jobs_total", "Jobs run.", &[])?;
    /// assert!(matches!(alerts.add_rule(rule("jobs_total")?), Err(MetricError::NoHistory { .. })));
    /// alerts.add_rule(rule("jobs_total")?.with_aggregation(Aggregation::Last))?;
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn add_rule(&mut self, mut rule: AlertRule) -> Result<AlertRuleId, MetricError> {
        validate_metric_name(rule.metric_name())?;
        for name in rule.labels().keys() {
            validate_label_name(name)?;
        }
        if let Some(name) = &rule.conflicting_label {
            return Err(MetricError::DuplicateLabel(name.clone()));
        }
        let source = self.registry.source(rule.metric_name());
        check_source(&rule, source, self.registry.retention())?;
        while self.rule(rule.id()).is_some() {
            rule.id = AlertRuleId::generate();
        }
        let id = rule.id();
        self.rules.push(Watched {
            rule,
            states: BTreeMap::new(),
            error: None,
        });
        Ok(id)
    }

    /// Removes a rule and returns it; `None`, and nothing sent, if there is no such rule.
    ///
    /// Each series of the rule that is firing resolves: its channels are told as when a
    /// condition goes false in [`evaluate`](Self::evaluate), by a [`Notification`] with
    /// [`AlertTransition::Resolved`], `value` `None` (the rule is no longer evaluated) and
    /// `at` the clock's time now, delivered series by series in the order of their labels,
    /// each to the rule's channels in order (see the [module docs](self) on why). A pending
    /// series was never announced and goes silently, as one whose condition goes false does.
    /// No state outlives the rule: added again, it starts inactive (and fires, and notifies,
    /// anew).
    ///
    /// The notifications are delivered here, as `evaluate` delivers its own, and the rule is
    /// gone before the first channel is called. A holder that keeps the evaluator behind a
    /// lock should not call this with the lock held, as a notifier may call back in; the
    /// crate's one such holder, [`Pipeline`](crate::pipeline::Pipeline), delivers an
    /// evaluation's notifications after releasing its lock and offers no removal.
    ///
    /// # Panics
    ///
    /// Re-raises the first panic of a [`Notifier`], once every channel is served; the rule is
    /// removed by then.
    pub fn remove_rule(&mut self, id: AlertRuleId) -> Option<AlertRule> {
        let (rule, deliveries) = self.withdraw(id)?;
        let mut panics = FirstPanic::default();
        for delivery in &deliveries {
            delivery.send(&mut panics);
        }
        panics.resume();
        Some(rule)
    }

    /// [`remove_rule`](Self::remove_rule) without the delivery, as [`decide`](Self::decide) is
    /// `evaluate` without it: removes the rule and returns it with a resolved notification for
    /// each of its firing series, for a holder behind a lock to send once it is released.
    fn withdraw(&mut self, id: AlertRuleId) -> Option<(AlertRule, Vec<Delivery>)> {
        let index = self.rules.iter().position(|w| w.rule.id() == id)?;
        let Watched { rule, states, .. } = self.rules.remove(index);
        let now = self.registry.clock().now();
        let deliveries = states
            .into_iter()
            .filter_map(|(labels, state)| match state {
                AlertState::Firing { active_since, .. } => {
                    let resolved = (AlertTransition::Resolved, active_since);
                    let notification = notification(&rule, labels, resolved, None, now);
                    Some(Delivery::notify(notification, &rule, &self.channels))
                }
                AlertState::Inactive | AlertState::Pending { .. } => None,
            })
            .collect();
        Some((rule, deliveries))
    }

    /// The rule with this id.
    pub fn rule(&self, id: AlertRuleId) -> Option<&AlertRule> {
        self.watched(id).map(|w| &w.rule)
    }

    /// The rule with this id and what is known of it.
    fn watched(&self, id: AlertRuleId) -> Option<&Watched> {
        self.rules.iter().find(|w| w.rule.id() == id)
    }

    /// The rules, in the order they were added.
    pub fn rules(&self) -> impl Iterator<Item = &AlertRule> {
        self.rules.iter().map(|w| &w.rule)
    }

    /// Enables or disables a rule; false if there is no such rule. A disabled firing rule
    /// resolves like any rule whose condition went false.
    pub fn set_enabled(&mut self, id: AlertRuleId, enabled: bool) -> bool {
        match self.rules.iter_mut().find(|w| w.rule.id() == id) {
            Some(watched) => {
                watched.rule.set_enabled(enabled);
                true
            }
            None => false,
        }
    }

    /// The state of a rule: the most advanced state of its series (firing, else pending,
    /// else inactive), as Prometheus gives a rule's state; of several series in that state,
    /// the one whose labels sort first. [`series_states`](Self::series_states) has each.
    pub fn state(&self, id: AlertRuleId) -> Option<AlertState> {
        let series = &self.watched(id)?.states;
        let rank = |state: &AlertState| match state {
            AlertState::Inactive => 0,
            AlertState::Pending { .. } => 1,
            AlertState::Firing { .. } => 2,
        };
        // `max_by_key` keeps the last of equals; reversed, that is the first by labels.
        let state = series
            .values()
            .rev()
            .max_by_key(|state| rank(state))
            .copied();
        Some(state.unwrap_or(AlertState::Inactive))
    }

    /// Whether the last [`evaluate`](Self::evaluate) could evaluate the rule, as Prometheus
    /// reports a rule's health: `Ok` if it could (or the rule was not evaluated yet), and
    /// else why not; `None` if there is no such rule.
    ///
    /// [`add_rule`](Self::add_rule) refuses a rule that cannot read its metric, but a rule
    /// may name a metric the host registers (or declares) only later, as something it cannot
    /// read: a counter it averages, a histogram over a window of zero or its `_bucket`, or a
    /// family declared with labels the rule's are not (see [`MetricError::NoSuchLabel`]);
    /// the crate's own families are known before they are registered, and checked by
    /// `add_rule`. Each
    /// evaluation checks, and reads nothing for such a rule; the error is logged through
    /// `tracing` at `WARN` once, by the evaluation that first finds it (not at every
    /// evaluation), and given here. A [`Pipeline`](crate::pipeline::Pipeline) gives its
    /// rules' health through
    /// [`Pipeline::alert_rules`](crate::pipeline::Pipeline::alert_rules).
    ///
    /// ```
    /// use memocache::{AlertEvaluator, AlertRule, MetricError, MetricsRegistry};
    /// use memocache::{Severity, Threshold};
    /// use std::time::Duration;
    ///
    /// let registry = MetricsRegistry::new();
    /// let mut alerts = AlertEvaluator::new(registry.clone());
    /// let above = Threshold::greater_than(100.0)?;
    /// let rule = AlertRule::new("busy", "requests_total", above, Severity::Warning, Duration::MAX);
    /// let id = alerts.add_rule(rule)?; // not registered yet: taken
    /// registry.counter("requests_total", "Requests served.", &[])?.inc_by(500);
    /// alerts.evaluate();
    /// // The rule averages (the default aggregation) a counter, which keeps no history.
    /// assert!(matches!(alerts.rule_health(id), Some(Err(MetricError::NoHistory { .. }))));
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn rule_health(&self, id: AlertRuleId) -> Option<Result<(), &MetricError>> {
        self.watched(id).map(Watched::health)
    }

    /// Each rule with its [`rule_health`](Self::rule_health), in the order they were added.
    pub(crate) fn rules_with_health(
        &self,
    ) -> impl Iterator<Item = (&AlertRule, Result<(), &MetricError>)> {
        self.rules.iter().map(|w| (&w.rule, w.health()))
    }

    /// The labels and state of each series of the rule that is pending or firing, sorted by
    /// labels; every other series the rule selects is inactive.
    pub fn series_states(&self, id: AlertRuleId) -> Option<Vec<(Tags, AlertState)>> {
        let series = &self.watched(id)?.states;
        Some(
            series
                .iter()
                .map(|(labels, state)| (labels.clone(), *state))
                .collect(),
        )
    }

    /// Evaluates every rule once at the registry clock's current time, delivers the
    /// notifications of the rules that fired or resolved, and returns them.
    ///
    /// # Panics
    ///
    /// Re-raises the first panic of a [`Notifier`], once every rule is evaluated and every
    /// notification delivered (see the [module docs](self)).
    pub fn evaluate(&mut self) -> Vec<Notification> {
        let deliveries = self.decide();
        let mut panics = FirstPanic::default();
        for delivery in &deliveries {
            delivery.send(&mut panics);
        }
        panics.resume();
        deliveries
            .into_iter()
            .filter_map(Delivery::into_notification)
            .collect()
    }

    /// [`evaluate`](Self::evaluate) without the delivery: steps every rule and returns the
    /// notifications with their notifiers, for a holder that keeps the evaluator behind a
    /// lock to deliver after releasing it (a notifier is the host's code, and may call back).
    pub(crate) fn decide(&mut self) -> Vec<Delivery> {
        let now = self.registry.clock().now();
        let retention = self.registry.retention();
        let mut decided = Vec::new();
        for Watched {
            rule,
            states,
            error,
        } in &mut self.rules
        {
            // The metric may have been registered since the rule was added, as something the
            // rule cannot read: said once, in the log, and kept for `rule_health`.
            let health = check_source(rule, self.registry.source(rule.metric_name()), retention);
            if let Err(found) = &health
                && error.as_ref() != Some(found)
            {
                decided.push(Delivery::Unhealthy {
                    rule: rule.name().to_owned(),
                    error: found.clone(),
                });
            }
            *error = health.err();
            let mut values: BTreeMap<Tags, Option<f64>> = if rule.is_enabled() && error.is_none() {
                let selected = self.registry.aggregate_selected(
                    rule.metric_name(),
                    rule.labels(),
                    rule.aggregation(),
                    rule.window(),
                );
                selected.into_iter().collect()
            } else {
                BTreeMap::new()
            };
            // A series that is pending or firing is stepped even when it has no value now (the
            // rule was disabled, or cannot be evaluated): its condition is then false, and it
            // resolves.
            for labels in states.keys() {
                values.entry(labels.clone()).or_insert(None);
            }
            for (labels, value) in values {
                let condition = value.is_some_and(|v| rule.is_triggered(v));
                let state = states.get(&labels).copied().unwrap_or(AlertState::Inactive);
                let (next, transition) = step(state, condition, now, rule);
                if next == AlertState::Inactive {
                    states.remove(&labels);
                } else {
                    states.insert(labels.clone(), next);
                }
                let Some((transition, active_since)) = transition else {
                    continue;
                };
                if transition == AlertTransition::Firing {
                    rule.trigger(now);
                }
                let notification =
                    notification(rule, labels, (transition, active_since), value, now);
                decided.push(Delivery::notify(notification, rule, &self.channels));
            }
        }
        decided
    }

    /// Checks every rule against the metrics `source` says are registered (as
    /// [`add_rule`](Self::add_rule) checks a rule against the registry's), refusing the first
    /// that could never be evaluated: for a holder that registers metrics after adding its
    /// rules, and can check them before the metrics are in use.
    pub(crate) fn check_rules(
        &self,
        source: impl Fn(&str) -> Option<Source>,
    ) -> Result<(), MetricError> {
        let retention = self.registry.retention();
        self.rules.iter().try_for_each(|watched| {
            let rule = &watched.rule;
            check_source(rule, source(rule.metric_name()), retention)
        })
    }
}

/// Refuses `rule` where the series its metric name reads (`source`, `None` for a name nothing
/// is registered under that is not the crate's either) could never give it a value, in a registry keeping `retention`: a
/// histogram's `_bucket`, which a summary does not have ([`MetricError::NoBuckets`]), a
/// windowed aggregation of a running total ([`MetricError::NoHistory`]), a histogram read
/// over a window of zero ([`MetricError::EmptyWindow`]), or a selection by a label the
/// series never carry ([`MetricError::NoSuchLabel`]). A gauge once set has a value for any
/// window (see [`MetricsRegistry::aggregate`]), and a name not registered may yet be
/// anything. Nor is a label value no series has refused: a series with it may come at any
/// time (a job status first reached later), and until then the rule has no data, as one on
/// a metric not registered yet; Prometheus does not flag an empty selection either.
fn check_source(
    rule: &AlertRule,
    source: Option<Source>,
    retention: Duration,
) -> Result<(), MetricError> {
    let Some(Source { reads, labels }) = source else {
        return Ok(());
    };
    let (rule_name, metric) = (|| rule.name().to_owned(), || rule.metric_name().to_owned());
    match (reads, rule.aggregation()) {
        (Reads::NoBuckets(histogram), _) => {
            return Err(MetricError::NoBuckets {
                rule: rule_name(),
                metric: metric(),
                histogram,
            });
        }
        (
            Reads::Family(MetricType::Counter) | Reads::HistogramTotal,
            aggregation @ (Aggregation::Average | Aggregation::Percentile(_)),
        ) => {
            return Err(MetricError::NoHistory {
                rule: rule_name(),
                metric: metric(),
                aggregation,
            });
        }
        (Reads::Family(MetricType::Histogram), _) if rule.window().min(retention).is_zero() => {
            return Err(MetricError::EmptyWindow {
                rule: rule_name(),
                metric: metric(),
                window: rule.window(),
                retention,
            });
        }
        (Reads::Family(_) | Reads::HistogramTotal, _) => {}
    }
    let Some(fixed) = labels else {
        return Ok(());
    };
    // A label given an empty value selects the series without it: for a label no series
    // carries, every series, which is no mistake.
    let never_carried = rule
        .labels()
        .iter()
        .find(|(label, value)| !value.is_empty() && !fixed.contains(*label));
    match never_carried {
        Some((label, _)) => Err(MetricError::NoSuchLabel {
            rule: rule_name(),
            metric: metric(),
            label: label.clone(),
            labels: fixed.iter().cloned().collect(),
        }),
        None => Ok(()),
    }
}

/// The notification of `rule`'s series `labels` making `transition` (with the alert's start
/// time) at `at`, with `value` the aggregate seen then.
fn notification(
    rule: &AlertRule,
    labels: Tags,
    (transition, active_since): (AlertTransition, Timestamp),
    value: Option<f64>,
    at: Timestamp,
) -> Notification {
    Notification {
        rule_id: rule.id(),
        rule_name: rule.name().to_owned(),
        metric_name: rule.metric_name().to_owned(),
        labels,
        severity: rule.severity(),
        transition,
        value,
        threshold: rule.threshold(),
        aggregation: rule.aggregation(),
        active_since,
        at,
    }
}

/// What an evaluation decided to tell: a notification, for its rule's channels, or, for the
/// log, that a rule cannot be evaluated.
pub(crate) enum Delivery {
    /// A notification, with the notifier of each of its rule's channels.
    Notify {
        /// What is delivered.
        notification: Notification,
        /// Each channel the rule names, with its notifier; `None` for a channel the
        /// evaluator does not know.
        channels: Vec<(String, Option<Arc<dyn Notifier>>)>,
    },
    /// A rule the evaluation found it cannot evaluate, where the one before could (or found
    /// another reason): logged once, at `WARN`, rather than at every evaluation.
    Unhealthy {
        /// The rule's name.
        rule: String,
        /// Why (see [`AlertEvaluator::rule_health`]).
        error: MetricError,
    },
}

impl Delivery {
    /// `notification`, for each channel `rule` names, with its notifier in `channels`.
    fn notify(
        notification: Notification,
        rule: &AlertRule,
        channels: &HashMap<String, Arc<dyn Notifier>>,
    ) -> Delivery {
        let channels = rule
            .notification_channels()
            .iter()
            .map(|channel| (channel.clone(), channels.get(channel).cloned()))
            .collect();
        Delivery::Notify {
            notification,
            channels,
        }
    }

    /// The notification delivered, if this is one.
    pub(crate) fn notification(&self) -> Option<&Notification> {
        match self {
            Delivery::Notify { notification, .. } => Some(notification),
            Delivery::Unhealthy { .. } => None,
        }
    }

    /// [`notification`](Self::notification), taken.
    fn into_notification(self) -> Option<Notification> {
        match self {
            Delivery::Notify { notification, .. } => Some(notification),
            Delivery::Unhealthy { .. } => None,
        }
    }

    /// Sends the notification to each channel, or logs the rule's error; a panic is kept in
    /// `panics` and the next channel is served. The logging is caught too: a `tracing`
    /// subscriber is the host's code as well, and a panic let out here would leave a
    /// pipeline's delivery half done.
    pub(crate) fn send(&self, panics: &mut FirstPanic) {
        let (notification, channels) = match self {
            Delivery::Notify {
                notification,
                channels,
            } => (notification, channels),
            Delivery::Unhealthy { rule, error } => {
                panics.catch(|| tracing::warn!(%rule, %error, "alert rule cannot be evaluated"));
                return;
            }
        };
        let rule = &notification.rule_name;
        for (channel, notifier) in channels {
            panics.catch(|| match notifier {
                Some(notifier) => {
                    if let Err(error) = notifier.notify(notification) {
                        tracing::warn!(%channel, %rule, %error, "alert notification failed");
                    }
                }
                None => tracing::warn!(%channel, %rule, "alert names an unknown channel"),
            });
        }
    }
}

/// One evaluation of the state machine; the transition, if any, with the alert's start time.
fn step(
    state: AlertState,
    condition: bool,
    now: Timestamp,
    rule: &AlertRule,
) -> (AlertState, Option<(AlertTransition, Timestamp)>) {
    let held = |since: Timestamp| now.saturating_duration_since(since);
    let fire = |active_since: Timestamp| {
        let firing = AlertState::Firing {
            active_since,
            fired_at: now,
            clear_since: None,
        };
        (firing, Some((AlertTransition::Firing, active_since)))
    };
    match state {
        AlertState::Inactive if condition => {
            if rule.pending_for().is_zero() {
                fire(now)
            } else {
                (AlertState::Pending { since: now }, None)
            }
        }
        AlertState::Inactive => (AlertState::Inactive, None),
        AlertState::Pending { since } if condition => {
            if held(since) >= rule.pending_for() {
                fire(since)
            } else {
                (state, None)
            }
        }
        // A pending alert that goes false was never announced: back to inactive silently.
        AlertState::Pending { .. } => (AlertState::Inactive, None),
        AlertState::Firing {
            active_since,
            fired_at,
            clear_since,
        } => {
            if condition {
                let firing = AlertState::Firing {
                    active_since,
                    fired_at,
                    clear_since: None,
                };
                return (firing, None);
            }
            let clear_since = clear_since.unwrap_or(now);
            if held(clear_since) >= rule.keep_firing_for() {
                let resolved = Some((AlertTransition::Resolved, active_since));
                (AlertState::Inactive, resolved)
            } else {
                let firing = AlertState::Firing {
                    active_since,
                    fired_at,
                    clear_since: Some(clear_since),
                };
                (firing, None)
            }
        }
    }
}
