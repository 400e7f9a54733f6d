//! Alert rules and the evaluator: pending → firing → resolved on a manual clock, one
//! notification per firing, aggregations, disabled rules, failing and unknown channels.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memocache::metrics::wiring::QueueMetrics;
use memocache::metrics::{
    AlertRuleId, AlertState, AlertTransition, Gauge, Notification, NotifyError,
};
use memocache::{
    Aggregation, AlertEvaluator, AlertRule, Clock, ManualClock, MemoryNotifier, MetricError,
    MetricsRegistry, Notifier, Percentile, Severity, Threshold, Timestamp,
};

mod clock_support;
use clock_support::{paged_alerts, registry_on};

mod log_support;
use log_support::EventSink;

const SECOND: Duration = Duration::from_secs(1);

struct Setup {
    clock: ManualClock,
    registry: MetricsRegistry,
    alerts: AlertEvaluator,
    pager: MemoryNotifier,
}

fn setup() -> Setup {
    let clock = ManualClock::new();
    let registry = registry_on(&clock);
    let (alerts, pager) = paged_alerts(&registry);
    Setup {
        clock,
        registry,
        alerts,
        pager,
    }
}

impl Setup {
    /// The gauge `name{labels}`, registered with `help` if new.
    fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        self.registry.gauge(name, help, labels).unwrap()
    }

    /// The `queue_depth` gauge, with no help text and no labels.
    fn depth(&self) -> Gauge {
        self.gauge("queue_depth", "", &[])
    }

    /// Adds a channel `name` that records what it is told, and returns the recorder.
    fn add_memory_channel(&mut self, name: &str) -> MemoryNotifier {
        let notifier = MemoryNotifier::new();
        self.alerts.add_channel(name, Arc::new(notifier.clone()));
        notifier
    }

    /// Adds a channel `name` that is `notifier` over a call counter, and returns the counter.
    fn add_counted_channel<N: Notifier + 'static>(
        &mut self,
        name: &str,
        notifier: fn(Arc<AtomicUsize>) -> N,
    ) -> Arc<AtomicUsize> {
        let calls = Arc::new(AtomicUsize::new(0));
        self.alerts
            .add_channel(name, Arc::new(notifier(calls.clone())));
        calls
    }

    /// Adds `rule`, which the test expects the evaluator to take.
    fn add(&mut self, rule: AlertRule) -> AlertRuleId {
        self.alerts.add_rule(rule).unwrap()
    }
}

/// The rule `name`: `metric` above `limit` over a minute's window.
fn rule_above(name: &str, metric: &str, limit: f64, severity: Severity) -> AlertRule {
    AlertRule::new(
        name,
        metric,
        Threshold::greater_than(limit).unwrap(),
        severity,
        60 * SECOND,
    )
}

fn depth_rule() -> AlertRule {
    rule_above("queue backed up", "queue_depth", 100.0, Severity::Critical)
        .with_aggregation(Aggregation::Last)
        .with_channel("pager")
}

#[test]
fn pending_then_firing_then_resolved() {
    let mut t = setup();
    let depth = t.gauge("queue_depth", "Jobs waiting.", &[]);
    let id = t.add(
        depth_rule()
            .with_pending_for(30 * SECOND)
            .with_keep_firing_for(20 * SECOND),
    );
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));

    depth.set(50.0);
    assert!(t.alerts.evaluate().is_empty());
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));

    t.clock.advance(SECOND); // t = 1
    depth.set(500.0);
    assert!(t.alerts.evaluate().is_empty());
    let active_since = Timestamp::from_nanos(1_000_000_000);
    assert_eq!(
        t.alerts.state(id),
        Some(AlertState::Pending {
            since: active_since
        })
    );

    t.clock.advance(30 * SECOND - Duration::from_nanos(1)); // held 1 ns short of 30 s
    assert!(t.alerts.evaluate().is_empty());
    assert!(matches!(
        t.alerts.state(id),
        Some(AlertState::Pending { .. })
    ));
    assert!(t.pager.notifications().is_empty());

    t.clock.advance(Duration::from_nanos(1)); // held exactly 30 s: fires
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    let n = &fired[0];
    assert_eq!(n.transition, AlertTransition::Firing);
    assert_eq!(n.rule_id, id);
    assert_eq!(n.rule_name, "queue backed up");
    assert_eq!(n.metric_name, "queue_depth");
    assert_eq!(n.severity, Severity::Critical);
    assert_eq!(n.value, Some(500.0));
    assert_eq!(n.active_since, active_since);
    assert_eq!(n.at, t.clock.now());
    assert_eq!(t.pager.notifications(), fired);
    assert_eq!(
        t.alerts.rule(id).unwrap().last_triggered(),
        Some(t.clock.now())
    );

    // Still true: stays firing, no second notification however often it is evaluated.
    for _ in 0..5 {
        t.clock.advance(10 * SECOND);
        assert!(t.alerts.evaluate().is_empty());
    }
    assert_eq!(t.pager.notifications().len(), 1);

    // False for less than keep_firing_for, then true again: no flap, no notification.
    depth.set(10.0);
    t.alerts.evaluate();
    t.clock.advance(19 * SECOND);
    assert!(t.alerts.evaluate().is_empty());
    assert!(matches!(
        t.alerts.state(id),
        Some(AlertState::Firing {
            clear_since: Some(_),
            ..
        })
    ));
    depth.set(200.0);
    assert!(t.alerts.evaluate().is_empty());
    assert!(matches!(
        t.alerts.state(id),
        Some(AlertState::Firing {
            clear_since: None,
            ..
        })
    ));

    // False for keep_firing_for: resolves, once.
    depth.set(10.0);
    assert!(t.alerts.evaluate().is_empty());
    t.clock.advance(20 * SECOND);
    let resolved = t.alerts.evaluate();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].transition, AlertTransition::Resolved);
    assert_eq!(resolved[0].value, Some(10.0));
    assert_eq!(resolved[0].active_since, active_since);
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));
    t.clock.advance(60 * SECOND);
    assert!(t.alerts.evaluate().is_empty());
    let all = t.pager.take();
    assert_eq!(
        all.iter().map(|n| n.transition).collect::<Vec<_>>(),
        [AlertTransition::Firing, AlertTransition::Resolved]
    );
}

#[test]
fn a_spike_shorter_than_pending_for_never_fires() {
    let mut t = setup();
    let depth = t.depth();
    let id = t.add(depth_rule().with_pending_for(30 * SECOND));
    depth.set(500.0);
    t.alerts.evaluate();
    t.clock.advance(20 * SECOND);
    depth.set(5.0);
    t.alerts.evaluate();
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));
    // A new spike restarts the pending period from its own start.
    depth.set(500.0);
    t.alerts.evaluate();
    t.clock.advance(20 * SECOND);
    t.alerts.evaluate();
    assert!(t.pager.notifications().is_empty());
    t.clock.advance(10 * SECOND);
    assert_eq!(t.alerts.evaluate().len(), 1);
}

#[test]
fn zero_durations_fire_and_resolve_immediately_and_refire_notifies_again() {
    let mut t = setup();
    let depth = t.depth();
    t.add(depth_rule());
    for (value, expect) in [
        (500.0, Some(AlertTransition::Firing)),
        (500.0, None),
        (5.0, Some(AlertTransition::Resolved)),
        (5.0, None),
        (500.0, Some(AlertTransition::Firing)),
    ] {
        depth.set(value);
        t.clock.advance(SECOND);
        let got = t.alerts.evaluate();
        assert_eq!(got.first().map(|n| n.transition), expect, "at {value}");
        assert!(got.len() <= 1);
    }
    assert_eq!(t.pager.notifications().len(), 3);
}

#[test]
fn no_data_is_false_not_zero() {
    let mut t = setup();
    // LessThan on a metric that does not exist, then on an empty window: never fires (the seed's
    // 0.0 for an empty window would have).
    let rule = AlertRule::new(
        "hit ratio low",
        "hit_ratio",
        Threshold::less_than(0.5).unwrap(),
        Severity::Warning,
        60 * SECOND,
    )
    .with_channel("pager");
    let id = t.add(rule);
    t.alerts.evaluate();
    let ratio = t.gauge("hit_ratio", "", &[]);
    t.alerts.evaluate();
    assert!(t.pager.notifications().is_empty());
    // With data: the average of the window.
    ratio.set(0.2);
    t.clock.advance(SECOND);
    ratio.set(0.4);
    assert_eq!(t.alerts.evaluate()[0].value, Some(0.30000000000000004));
    // The values age out of the window, but the gauge has stood at 0.4 throughout: firing
    // still. NaN is no data, which resolves the alert.
    t.clock.advance(61 * SECOND);
    assert!(t.alerts.evaluate().is_empty());
    ratio.set(f64::NAN);
    let resolved = t.alerts.evaluate();
    assert_eq!(resolved[0].transition, AlertTransition::Resolved);
    assert_eq!(resolved[0].value, None);
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));
}

#[test]
fn percentile_aggregation_over_a_histogram_window() {
    let mut t = setup();
    let latency = t
        .registry
        .histogram("job_duration_seconds", "", &[("queue", "audio")])
        .unwrap();
    let rule = rule_above("slow jobs", "job_duration_seconds", 2.0, Severity::Warning)
        .with_label("queue", "audio")
        .with_aggregation(Aggregation::Percentile(Percentile::p99()))
        .with_channel("pager");
    t.add(rule);
    for i in 0..100 {
        latency.observe(f64::from(i) / 100.0).unwrap();
    }
    assert!(t.alerts.evaluate().is_empty()); // p99 = 0.9801
    latency.observe(50.0).unwrap(); // one outlier among 101: p99 = 0.99 + 0.01·49.01 ≈ 1.48
    assert!(t.alerts.evaluate().is_empty());
    latency.observe(50.0).unwrap(); // two among 102: p99 ≈ 49.0
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert!(fired[0].value.unwrap() > 40.0);
    // A rule on other labels sees no data.
    let other = rule_above("other", "job_duration_seconds", 0.0, Severity::Info)
        .with_label("queue", "video")
        .with_aggregation(Aggregation::Last);
    t.add(other);
    assert!(t.alerts.evaluate().is_empty());
}

#[test]
fn counters_use_their_total() {
    let mut t = setup();
    let dead = t.registry.counter("dead_letters_total", "", &[]).unwrap();
    let rule = rule_above(
        "dead letters",
        "dead_letters_total",
        0.0,
        Severity::Critical,
    )
    .with_aggregation(Aggregation::Last)
    .with_channel("pager");
    t.add(rule.clone());
    // A windowed aggregation of a counter is refused (counters keep no history).
    let average = AlertRule::new(
        "avg",
        "dead_letters_total",
        rule.threshold(),
        Severity::Info,
        SECOND,
    );
    assert!(matches!(
        t.alerts.add_rule(average),
        Err(MetricError::NoHistory { .. })
    ));
    assert!(t.alerts.evaluate().is_empty());
    dead.inc();
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].value, Some(1.0));
}

#[test]
fn disabled_rules_do_not_fire_and_a_disabled_firing_rule_resolves() {
    let mut t = setup();
    let depth = t.depth();
    let id = t.add(depth_rule());
    assert!(t.alerts.rule(id).unwrap().is_enabled());
    depth.set(500.0);
    assert!(t.alerts.set_enabled(id, false));
    assert!(!t.alerts.rule(id).unwrap().is_enabled());
    assert!(t.alerts.evaluate().is_empty());
    assert!(!t.alerts.rule(id).unwrap().is_triggered(500.0));
    assert!(t.alerts.set_enabled(id, true));
    assert_eq!(t.alerts.evaluate()[0].transition, AlertTransition::Firing);
    t.alerts.set_enabled(id, false);
    assert_eq!(t.alerts.evaluate()[0].transition, AlertTransition::Resolved);
    let removed = t.alerts.remove_rule(id).unwrap();
    assert_eq!(removed.id(), id);
    assert!(t.alerts.rule(id).is_none());
    assert!(!t.alerts.set_enabled(id, true));
}

#[test]
fn rule_domain_methods() {
    let mut rule = depth_rule();
    assert!(rule.is_triggered(101.0));
    assert!(!rule.is_triggered(100.0));
    assert_eq!(rule.last_triggered(), None);
    rule.trigger(Timestamp::from_nanos(5));
    assert_eq!(rule.last_triggered(), Some(Timestamp::from_nanos(5)));
    rule.reset();
    assert_eq!(rule.last_triggered(), None);
    assert_eq!(rule.notification_channels(), ["pager"]);
    assert_eq!(rule.window(), 60 * SECOND);
    assert_eq!(
        Aggregation::Percentile(Percentile::p95()).to_string(),
        "p95"
    );
    assert_eq!(
        [AlertTransition::Firing, AlertTransition::Resolved].map(|t| t.to_string()),
        ["firing", "resolved"]
    );
}

/// Rule ids are random UUIDs and print as one; the evaluator lists its rules in the order
/// they were added.
#[test]
fn rule_ids_and_the_rule_list() {
    let mut t = setup();
    let first = t.add(depth_rule());
    let second = t.add(depth_rule());
    assert_ne!(first, second);
    assert_eq!(first.as_uuid().get_version_num(), 4);
    assert_eq!(first.to_string(), first.as_uuid().to_string());
    let listed: Vec<_> = t.alerts.rules().map(AlertRule::id).collect();
    assert_eq!(listed, [first, second]);
}

/// Counts calls and fails every one.
struct Broken(Arc<AtomicUsize>);

impl Notifier for Broken {
    fn notify(&self, _: &Notification) -> Result<(), NotifyError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(NotifyError::new("pager service down"))
    }
}

#[test]
fn every_channel_is_notified_even_when_one_fails_or_is_unknown() {
    let mut t = setup();
    let calls = t.add_counted_channel("broken", Broken);
    let log = t.add_memory_channel("log");
    let depth = t.depth();
    t.add(
        depth_rule()
            .with_channel("broken")
            .with_channel("nowhere")
            .with_channel("log"),
    );
    depth.set(500.0);
    assert_eq!(t.alerts.evaluate().len(), 1);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(t.pager.notifications().len(), 1);
    assert_eq!(log.notifications().len(), 1);
}

/// Bug: a rule that named a channel twice (`depth_rule()` names "pager", and a host adding
/// "pager" again for a rule built from it) notified that channel twice per firing: the pager
/// went off twice for one alert. A channel is named once, however often it is added.
#[test]
fn a_channel_named_twice_is_notified_once() {
    let mut t = setup();
    let depth = t.depth();
    let rule = depth_rule().with_channel("pager");
    assert_eq!(rule.notification_channels(), ["pager"]);
    t.add(rule);
    depth.set(500.0);
    assert_eq!(t.alerts.evaluate().len(), 1);
    assert_eq!(t.pager.notifications().len(), 1);
}

/// Counts calls and panics in every one: a host's notifier with a bug.
struct Panicking(Arc<AtomicUsize>);

/// The rule "first": `queue_depth` above 100, telling the channels "buggy" (a [`Panicking`]
/// one) and "pager".
fn paging_through_a_panicking_channel() -> AlertRule {
    rule_above("first", "queue_depth", 100.0, Severity::Critical)
        .with_aggregation(Aggregation::Last)
        .with_channel("buggy")
        .with_channel("pager")
}

impl Notifier for Panicking {
    fn notify(&self, _: &Notification) -> Result<(), NotifyError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        panic!("pager client bug");
    }
}

/// Bug: a notifier that panicked unwound straight out of `evaluate`, after the rule had
/// already moved to firing: the rule's later channels never heard of it (and never would: a
/// firing rule notifies once), and the rules after it were not evaluated. As with the
/// crate's other host callbacks (`src/callback.rs`), every channel of every rule is served
/// now, and then the first panic goes on.
#[test]
fn a_panicking_notifier_neither_silences_the_other_channels_nor_skips_rules() {
    let mut t = setup();
    let calls = t.add_counted_channel("buggy", Panicking);
    let depth = t.depth();
    let first = t.add(paging_through_a_panicking_channel());
    // Channels "pager", then "buggy".
    let second = t.add(depth_rule().with_channel("buggy"));
    depth.set(500.0);
    let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.alerts.evaluate()));
    let payload = evaluated.expect_err("the notifier's panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"pager client bug"));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2,
        "both rules reached the buggy channel"
    );
    let paged: Vec<_> = t.pager.notifications().iter().map(|n| n.rule_id).collect();
    assert_eq!(paged, [first, second], "the pager heard of both firings");
    for id in [first, second] {
        assert!(matches!(
            t.alerts.state(id),
            Some(AlertState::Firing { .. })
        ));
    }
    // Firing notifies once: nothing more is sent, and nothing panics.
    assert!(t.alerts.evaluate().is_empty());
}

/// The events logged on the thread its [`Events::sink`] is the default subscriber of: level,
/// message and the fields as `name=value`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl Events {
    /// The subscriber that records into these events.
    fn sink(&self) -> EventSink<impl Fn(&tracing::Event<'_>) + Send + Sync + 'static> {
        let events = self.clone();
        EventSink(move |event: &tracing::Event<'_>| {
            let mut text = String::new();
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn fmt::Debug| {
                    text.push_str(&format!(" {}={value:?}", field.name()));
                },
            );
            events
                .0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), text));
        })
    }
}

/// `TracingNotifier` logs a firing critical alert at ERROR, another firing alert at WARN and a
/// resolution at INFO, each with the rule, metric and value.
#[test]
fn the_tracing_notifier_logs_at_the_documented_levels() {
    let events = Events::default();
    tracing::subscriber::with_default(events.sink(), || {
        let mut t = setup();
        t.alerts
            .add_channel("log", Arc::new(memocache::TracingNotifier));
        let depth = t.depth();
        t.add(depth_rule().with_channel("log"));
        let warning = rule_above("queue growing", "queue_depth", 100.0, Severity::Warning)
            .with_aggregation(Aggregation::Last)
            .with_channel("log");
        t.add(warning);
        depth.set(500.0);
        assert_eq!(t.alerts.evaluate().len(), 2);
        depth.set(0.0);
        assert_eq!(t.alerts.evaluate().len(), 2);
    });
    let logged = events.0.lock().unwrap().clone();
    let alerts: Vec<_> = logged
        .iter()
        .filter(|(_, text)| text.starts_with(" message=alert "))
        .collect();
    let expected = [
        (tracing::Level::ERROR, "firing", "queue backed up", 500),
        (tracing::Level::WARN, "firing", "queue growing", 500),
        (tracing::Level::INFO, "resolved", "queue backed up", 0),
        (tracing::Level::INFO, "resolved", "queue growing", 0),
    ];
    assert_eq!(alerts.len(), expected.len(), "{logged:?}");
    for ((level, text), (want_level, transition, rule, value)) in alerts.iter().zip(expected) {
        assert_eq!(*level, want_level, "{text}");
        for part in [
            format!("message=alert {transition}"),
            format!("rule={rule}"),
            "metric=queue_depth".to_owned(),
            format!("value={value}"),
        ] {
            assert!(text.contains(&part), "{part:?} not in {text}");
        }
    }
}

mod model {
    use super::*;
    use proptest::prelude::*;

    /// The transitions a reference model of Prometheus' `for` / `keep_firing_for` produces for
    /// evaluations `(time, condition)`.
    fn reference(steps: &[(u64, bool)], pending: u64, keep: u64) -> Vec<(AlertTransition, u64)> {
        let (mut firing, mut true_since, mut false_since) = (false, None, None);
        let mut out = Vec::new();
        for &(t, c) in steps {
            if !firing {
                if c {
                    let since = *true_since.get_or_insert(t);
                    if t - since >= pending {
                        out.push((AlertTransition::Firing, t));
                        (firing, false_since) = (true, None);
                    }
                } else {
                    true_since = None;
                }
            } else if c {
                false_since = None;
            } else {
                let since = *false_since.get_or_insert(t);
                if t - since >= keep {
                    out.push((AlertTransition::Resolved, t));
                    (firing, true_since) = (false, None);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn transitions_match_the_reference_model(
            pending in 0u64..20,
            keep in 0u64..20,
            steps in prop::collection::vec((0u64..8, any::<bool>()), 1..120),
        ) {
            let mut t = setup();
            let depth = t.depth();
            t.add(depth_rule()
                    .with_pending_for(SECOND * u32::try_from(pending).unwrap())
                    .with_keep_firing_for(SECOND * u32::try_from(keep).unwrap()),);
            let (mut now, mut timeline, mut got) = (0, Vec::new(), Vec::new());
            for (dt, condition) in steps {
                t.clock.advance(SECOND * u32::try_from(dt).unwrap());
                now += dt;
                depth.set(if condition { 500.0 } else { 5.0 });
                timeline.push((now, condition));
                for n in t.alerts.evaluate() {
                    got.push((n.transition, n.at.as_nanos() / 1_000_000_000));
                }
            }
            prop_assert_eq!(&got, &reference(&timeline, pending, keep));
            // Delivered once per transition, to the rule's one channel.
            prop_assert_eq!(t.pager.notifications().len(), got.len());
        }
    }
}

/// Edge cases of the rule's inputs: a window longer than the registry's retention reads what
/// is retained (no more, no panic); a label set matches whatever order its pairs were given in;
/// NaN never meets a threshold and +∞ meets `GreaterThan`.
#[test]
fn long_windows_label_order_and_non_finite_gauges() {
    let mut t = setup();
    // Retention is 600 s; the window a day.
    let load = t.gauge("load", "", &[("host", "a"), ("dc", "x")]);
    let rule = AlertRule::new(
        "load high",
        "load",
        Threshold::greater_than(10.0).unwrap(),
        Severity::Warning,
        86_400 * SECOND,
    )
    .with_aggregation(Aggregation::Average)
    .with_label("dc", "x")
    .with_label("host", "a")
    .with_channel("pager");
    let id = t.add(rule);
    load.set(100.0);
    t.clock.advance(700 * SECOND); // the 100 leaves the retention
    load.set(1.0);
    assert!(
        t.alerts.evaluate().is_empty(),
        "only the retained 1.0 counts"
    );
    load.set(40.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].value, Some(20.5));

    // Last: NaN is no threshold's, and resolves; +∞ fires again, once. (Removing the firing
    // rule to change its aggregation resolves it first.)
    let mut rule = t.alerts.remove_rule(id).unwrap();
    rule = rule.with_aggregation(Aggregation::Last);
    let id = t.add(rule);
    load.set(f64::NAN);
    assert!(t.alerts.evaluate().is_empty());
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));
    load.set(f64::INFINITY);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].transition, AlertTransition::Firing);
    assert!(t.alerts.evaluate().is_empty());
    load.set(f64::NAN);
    let resolved = t.alerts.evaluate();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].transition, AlertTransition::Resolved);
    assert_eq!(t.pager.notifications().len(), 4);
}

/// Bug: a gauge set to NaN ("no data", as the wiring publishes an unknown hit ratio) made
/// `Aggregation::Last` give `Some(NaN)`, so the rule that resolved on it told its channels
/// the value was `Some(NaN)`, where no data is `None`. It reports `None`, and the rule stays
/// inactive while the gauge is NaN.
#[test]
fn a_gauge_gone_nan_resolves_its_rule_with_no_value() {
    let mut t = setup();
    let depth = t.depth();
    let id = t.add(depth_rule());
    depth.set(500.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].value, Some(500.0));
    depth.set(f64::NAN);
    let resolved = t.alerts.evaluate();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].transition, AlertTransition::Resolved);
    assert_eq!(resolved[0].value, None);
    assert!(t.alerts.evaluate().is_empty());
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));
    let told: Vec<_> = t.pager.take().into_iter().map(|n| n.value).collect();
    assert_eq!(told, [Some(500.0), None]);
}

/// Bug: a rule on a metric name outside Prometheus' grammar (a typo such as `queue-depth`), or
/// selecting a label name the registry refuses, was added and then never fired, saying
/// nothing: the registry refuses such names, so no series can match the rule. `add_rule`
/// refuses it, naming the name and the grammar, and adds nothing. A valid name of a metric
/// not registered yet is still accepted (metrics appear on first use): the rule fires once
/// the metric appears.
#[test]
fn rules_on_names_no_series_can_have_are_refused() {
    let mut t = setup();
    let above = Threshold::greater_than(100.0).unwrap();
    for bad in [
        "",
        "queue-depth",
        "queue depth",
        "9queue",
        "queue.depth",
        "dépth",
    ] {
        // The registry refuses the name too: no series can ever have it.
        assert_eq!(
            t.registry.gauge(bad, "", &[]).unwrap_err(),
            MetricError::InvalidMetricName(bad.to_owned())
        );
        let rule = AlertRule::new("typo", bad, above, Severity::Warning, 60 * SECOND);
        let err = t.alerts.add_rule(rule).unwrap_err();
        assert_eq!(err, MetricError::InvalidMetricName(bad.to_owned()));
        let message = err.to_string();
        assert!(
            message.contains(&format!("`{bad}`")) && message.contains("[a-zA-Z_:]"),
            "{message}"
        );
    }
    // Also with an empty value (the series without the label), as registration refuses the
    // name whatever its value.
    for (bad, value) in [
        ("host-name", "a"),
        ("9dc", "x"),
        ("dc:x", "x"),
        ("__name__", "queue_depth"),
        ("quantile", "0.5"),
        ("le", "1"),
        ("", "x"),
        ("host-name", ""),
    ] {
        let rule = depth_rule().with_label("dc", "x").with_label(bad, value);
        let err = t.alerts.add_rule(rule).unwrap_err();
        assert_eq!(err, MetricError::InvalidLabelName(bad.to_owned()));
        assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
    }
    assert_eq!(t.alerts.rules().count(), 0);
    assert_eq!(t.registry.render_prometheus(), "");

    let id = t.add(depth_rule());
    assert!(t.alerts.evaluate().is_empty());
    t.depth().set(500.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(
        (fired[0].rule_id, fired[0].transition),
        (id, AlertTransition::Firing)
    );
}

/// A rule given two values of one label (`with_label("dc", "x")`, then `"y"`) watched the
/// series of the last value only, silently: written to watch `dc="x"` as well, it never
/// fired for it. `add_rule` refuses it, naming the label, as the registry refuses a label
/// given twice, and adds nothing; a label given again with the same value changes nothing.
#[test]
fn a_rule_given_two_values_of_one_label_is_refused() {
    let mut t = setup();
    for (first, second) in [("x", "y"), ("x", ""), ("", "x")] {
        let rule = depth_rule()
            .with_label("dc", first)
            .with_label("host", "a")
            .with_label("dc", second);
        let err = t.alerts.add_rule(rule).unwrap_err();
        assert_eq!(err, MetricError::DuplicateLabel("dc".to_owned()));
        assert!(err.to_string().contains("`dc`"), "{err}");
    }
    assert_eq!(t.alerts.rules().count(), 0);

    let rule = depth_rule().with_label("dc", "x").with_label("dc", "x");
    let id = t.add(rule);
    t.gauge("queue_depth", "", &[("dc", "x")]).set(500.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(
        (fired[0].rule_id, fired[0].labels["dc"].as_str()),
        (id, "x")
    );
}

/// A clock that can be set anywhere, backwards too: a host's custom [`Clock`] that breaks the
/// monotonic promise (a wall clock stepped back by NTP).
#[derive(Clone, Debug, Default)]
struct Settable(Arc<std::sync::atomic::AtomicU64>);

impl Settable {
    fn set(&self, at: Duration) {
        let nanos = u64::try_from(at.as_nanos()).unwrap();
        self.0.store(nanos, Ordering::SeqCst);
    }
}

impl Clock for Settable {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// A clock that stands still never lets a pending rule fire, and one that jumps back neither
/// fires a rule early nor unsorts a series: a sample taken after the jump is stamped with the
/// newest time already held, so windows and retention still cut a sorted series.
#[test]
fn a_clock_that_stands_still_or_jumps_back_fires_nothing_early_and_keeps_windows_sorted() {
    let clock = Settable::default();
    clock.set(100 * SECOND);
    let registry = registry_on(&clock);
    let latency = registry.histogram("latency_seconds", "", &[]).unwrap();
    let tags = memocache::Tags::new();
    let average =
        |window| registry.aggregate("latency_seconds", &tags, Aggregation::Average, window);
    latency.observe(1.0).unwrap();
    clock.set(50 * SECOND);
    latency.observe(3.0).unwrap(); // stamped 100 s, not 50 s
    assert_eq!(average(10 * SECOND), Some(2.0));
    clock.set(105 * SECOND);
    assert_eq!(average(10 * SECOND), Some(2.0));
    clock.set(111 * SECOND); // both samples are 11 s old: out of a 10 s window together
    assert_eq!(average(10 * SECOND), None);

    let depth = registry.gauge("queue_depth", "", &[]).unwrap();
    let (mut alerts, pager) = paged_alerts(&registry);
    let id = alerts
        .add_rule(depth_rule().with_pending_for(30 * SECOND))
        .unwrap();
    clock.set(200 * SECOND);
    depth.set(500.0);
    let pending = Some(AlertState::Pending {
        since: Timestamp::from_nanos(200_000_000_000),
    });
    for at in [200, 200, 200, 150, 229] {
        clock.set(at * SECOND);
        assert!(alerts.evaluate().is_empty(), "fired at {at} s");
        assert_eq!(alerts.state(id), pending, "at {at} s");
    }
    clock.set(230 * SECOND);
    assert_eq!(alerts.evaluate().len(), 1);
    clock.set(10 * SECOND);
    assert!(alerts.evaluate().is_empty(), "a firing rule notifies once");
    assert_eq!(pager.notifications().len(), 1);
}

/// A clock that moves on by `step` each time it is read, as a real clock moves between two
/// reads of it.
#[derive(Clone, Debug, Default)]
struct Ticking {
    at: Arc<std::sync::atomic::AtomicU64>,
    step: Arc<std::sync::atomic::AtomicU64>,
}

impl Ticking {
    fn set(&self, at: Duration, step: Duration) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap();
        self.at.store(nanos(at), Ordering::SeqCst);
        self.step.store(nanos(step), Ordering::SeqCst);
    }
}

impl Clock for Ticking {
    fn now(&self) -> Timestamp {
        let step = self.step.load(Ordering::SeqCst);
        Timestamp::from_nanos(self.at.fetch_add(step, Ordering::SeqCst))
    }
}

/// Bug: aggregating a gauge's or a histogram's window read the clock once to see that the
/// window had data and again to aggregate it, so a sample that expired between the two reads
/// gave the empty window's 0.0 instead of no data, and a "below 1" rule fired on a gauge that
/// had stood at 5 all along. The clock here moves 1 s a read, so that some start has the
/// 5 expire mid-aggregation; the answer must be the 5 or no data, whichever read it sees.
#[test]
fn a_sample_expiring_during_an_aggregation_is_no_data_not_zero() {
    let clock = Ticking::default();
    let registry = registry_on(&clock);
    let gauge = registry.gauge("level", "", &[]).unwrap();
    let histogram = registry.histogram("level_seconds", "", &[]).unwrap();
    clock.set(100 * SECOND, Duration::ZERO);
    gauge.set(5.0);
    histogram.observe(5.0).unwrap();
    let window = 10 * SECOND;
    let tags = memocache::Tags::new();
    let p50 = Aggregation::Percentile(Percentile::P50);
    for name in ["level", "level_seconds"] {
        for aggregation in [Aggregation::Average, p50] {
            // The 5, stamped at 100 s, leaves a 10 s window at 110 s.
            for start in 104..=111 {
                clock.set(start * SECOND, SECOND);
                let got = registry.aggregate(name, &tags, aggregation, window);
                assert!(
                    got.is_none() || got == Some(5.0),
                    "{name} {aggregation} from {start} s: {got:?}"
                );
            }
        }
    }
    for start in 104..=111 {
        let (mut alerts, _pager) = paged_alerts(&registry);
        let below = Threshold::less_than(1.0).unwrap();
        alerts
            .add_rule(
                AlertRule::new("level low", "level", below, Severity::Warning, window)
                    .with_channel("pager"),
            )
            .unwrap();
        clock.set(start * SECOND, SECOND);
        assert_eq!(alerts.evaluate(), [], "from {start} s");
    }
}

/// A value exactly at the threshold, as an evaluated aggregate (the average of 99 and 101):
/// `GreaterThan` and `LessThan` are strict, as in the seed, and `Equal` is met.
#[test]
fn an_aggregate_exactly_at_the_threshold_meets_only_equal() {
    let mut t = setup();
    let depth = t.depth();
    let rule = |name: &str, threshold| {
        AlertRule::new(name, "queue_depth", threshold, Severity::Info, 60 * SECOND)
            .with_channel("pager")
    };
    t.add(rule("gt", Threshold::greater_than(100.0).unwrap()));
    t.add(rule("lt", Threshold::less_than(100.0).unwrap()));
    let eq = t.add(rule("eq", Threshold::equal(100.0).unwrap()));
    depth.set(99.0);
    t.clock.advance(SECOND);
    depth.set(101.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!((fired[0].rule_id, fired[0].value), (eq, Some(100.0)));
}

/// A rule whose metric is registered and set by another thread while the evaluator runs:
/// no data until then (no panic, no firing on a missing series), then one firing.
#[test]
fn a_rule_on_a_metric_another_thread_registers_meanwhile_fires_once() {
    let mut t = setup();
    t.add(depth_rule());
    let registry = t.registry.clone();
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            for name in ["a", "b", "c", "d"] {
                registry
                    .counter(&format!("other_{name}_total"), "", &[])
                    .unwrap();
            }
            registry.gauge("queue_depth", "", &[]).unwrap().set(500.0);
        });
        let mut notified = 0;
        while !writer.is_finished() {
            notified += t.alerts.evaluate().len();
        }
        writer.join().unwrap();
        notified += t.alerts.evaluate().len();
        notified += t.alerts.evaluate().len();
        assert_eq!(notified, 1);
    });
    assert_eq!(t.pager.notifications().len(), 1);
}

/// The clock jumping to the end of its range: a pending rule fires on the next evaluation,
/// timed from when its condition was first seen, and a rule whose condition goes false there
/// resolves once `keep_firing_for` (zero here) has passed; nothing overflows.
#[test]
fn pending_for_across_a_jump_to_the_end_of_time() {
    let mut t = setup();
    let depth = t.depth();
    let id = t.add(depth_rule().with_pending_for(3_600 * SECOND));
    depth.set(500.0);
    assert!(t.alerts.evaluate().is_empty());
    t.clock.advance(Duration::MAX);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].active_since, Timestamp::ZERO);
    assert_eq!(fired[0].at, Timestamp::from_nanos(u64::MAX));
    assert!(t.alerts.evaluate().is_empty(), "notifies once");
    depth.set(5.0);
    let resolved = t.alerts.evaluate();
    assert_eq!(resolved[0].transition, AlertTransition::Resolved);
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));
}

/// `AlertRule` is `Clone` and a clone keeps its id; added twice, the two rules must still be
/// told apart: the second is given a fresh id, and each id reaches its own rule.
#[test]
fn a_clone_added_again_gets_its_own_id() {
    let mut t = setup();
    let depth = t.gauge("queue_depth", "Jobs waiting.", &[]);
    let rule = depth_rule();
    let first = t.add(rule.clone());
    let second = t.add(rule.clone().with_pending_for(30 * SECOND));
    assert_eq!(first, rule.id());
    assert_ne!(first, second, "one id for two rules");
    assert_eq!(t.alerts.rules().count(), 2);
    assert_eq!(
        t.alerts.rule(second).map(|r| r.pending_for()),
        Some(30 * SECOND)
    );

    depth.set(500.0);
    t.alerts.evaluate();
    assert!(matches!(
        t.alerts.state(first),
        Some(AlertState::Firing { .. })
    ));
    assert!(matches!(
        t.alerts.state(second),
        Some(AlertState::Pending { .. })
    ));

    let removed = t.alerts.remove_rule(second).expect("the clone is there");
    assert_eq!(removed.pending_for(), 30 * SECOND);
    assert!(matches!(
        t.alerts.state(first),
        Some(AlertState::Firing { .. })
    ));
    assert_eq!(t.alerts.state(second), None);
}

fn tags(pairs: &[(&str, &str)]) -> memocache::metrics::Tags {
    pairs
        .iter()
        .map(|&(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// A rule with no labels on a metric that has only labelled series (as `memocache_jobs` has
/// only `status="..."` series) selects every series of the metric, as the Prometheus
/// selector `jobs > 100` does, and each series fires and resolves on its own. It looked for
/// the unlabelled series, which does not exist, and so never fired, and nothing said so.
#[test]
fn a_rule_without_labels_selects_every_series_and_fires_per_series() {
    let mut t = setup();
    let queued = t.gauge("jobs", "", &[("status", "queued")]);
    let failed = t.gauge("jobs", "", &[("status", "failed")]);
    let rule = rule_above("too many jobs", "jobs", 100.0, Severity::Warning)
        .with_aggregation(Aggregation::Last)
        .with_channel("pager");
    let id = t.add(rule);

    queued.set(500.0);
    failed.set(1.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].transition, AlertTransition::Firing);
    assert_eq!(fired[0].labels, tags(&[("status", "queued")]));
    assert_eq!(fired[0].value, Some(500.0));
    assert!(matches!(
        t.alerts.state(id),
        Some(AlertState::Firing { .. })
    ));

    // The other series fires on its own, once; the first does not notify again.
    t.clock.advance(SECOND);
    failed.set(200.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].labels, tags(&[("status", "failed")]));
    assert!(t.alerts.evaluate().is_empty(), "both firing: no news");

    // One resolves; the rule still fires for the other.
    queued.set(0.0);
    let resolved = t.alerts.evaluate();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].transition, AlertTransition::Resolved);
    assert_eq!(resolved[0].labels, tags(&[("status", "queued")]));
    assert!(matches!(
        t.alerts.state(id),
        Some(AlertState::Firing { .. })
    ));
    let states = t.alerts.series_states(id).unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].0, tags(&[("status", "failed")]));

    failed.set(0.0);
    let resolved = t.alerts.evaluate();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].labels, tags(&[("status", "failed")]));
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));
    assert_eq!(t.alerts.series_states(id), Some(Vec::new()));

    // A series that appears later is watched from then on.
    let processing = t.registry.gauge("jobs", "", &[("status", "processing")]);
    processing.unwrap().set(300.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].labels, tags(&[("status", "processing")]));
    assert_eq!(t.pager.notifications().len(), 5);
}

/// A rule's labels select the series that have them, whatever other labels the series carry;
/// a label with an empty value selects the series without that label (Prometheus' matchers).
#[test]
fn a_rules_labels_select_the_series_that_have_them() {
    let mut t = setup();
    for (labels, value) in [
        (&[("dc", "x"), ("host", "a")][..], 50.0),
        (&[("dc", "x"), ("host", "b")][..], 5.0),
        (&[("dc", "y"), ("host", "a")][..], 50.0),
        (&[][..], 50.0),
    ] {
        t.registry.gauge("load", "", labels).unwrap().set(value);
    }
    let rule = |name: &str| {
        rule_above(name, "load", 10.0, Severity::Warning).with_aggregation(Aggregation::Last)
    };
    let dc_x = t.add(rule("dc x").with_label("dc", "x"));
    let no_dc = t.add(rule("no dc").with_label("dc", ""));
    let fired = t.alerts.evaluate();
    let fired: Vec<_> = fired
        .iter()
        .map(|n| (n.rule_id, n.labels.clone()))
        .collect();
    assert_eq!(
        fired,
        [
            (dc_x, tags(&[("dc", "x"), ("host", "a")])),
            (no_dc, tags(&[])),
        ]
    );
}

/// Uses the registry from inside `notify`: registers a metric (the registry's write lock),
/// renders, and sets the gauge a rule watches.
struct UsesTheRegistry(MetricsRegistry);

impl Notifier for UsesTheRegistry {
    fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let name = format!("seen_{}_total", n.transition);
        self.0.counter(&name, "", &[]).unwrap().inc();
        assert!(
            self.0
                .render_prometheus()
                .contains("# TYPE queue_depth gauge")
        );
        self.0.gauge("queue_depth", "", &[]).unwrap().set(0.0);
        Ok(())
    }
}

/// A notifier may register, render and record while `evaluate` runs (no registry lock is
/// held across it; no other test calls the registry from a notifier), and what it records
/// does not change what the other rules of that evaluation see: every rule is stepped, then
/// the notifications are delivered. Delivered rule by rule, as before, the notifier's reset
/// of the gauge kept the second rule on it from firing: an evaluation's outcome depended on
/// the order the rules were added in.
#[test]
fn a_notifier_may_use_the_registry_during_an_evaluation() {
    let mut t = setup();
    t.alerts
        .add_channel("recorder", Arc::new(UsesTheRegistry(t.registry.clone())));
    t.add(depth_rule().with_channel("recorder"));
    t.add(depth_rule());
    t.depth().set(500.0);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut alerts = t.alerts;
    std::thread::spawn(move || {
        let fired = alerts.evaluate();
        let _ = tx.send(fired.len());
    });
    let fired = rx
        .recv_timeout(60 * SECOND)
        .expect("evaluate returns (a deadlock guard, not a timing claim)");
    assert_eq!(fired, 2);
    let total = |name| {
        t.registry
            .aggregate(name, &Default::default(), Aggregation::Last, SECOND)
    };
    assert_eq!(total("seen_firing_total"), Some(1.0));
    assert_eq!(t.pager.notifications().len(), 2);
}

fn at_second(second: u64) -> Timestamp {
    Timestamp::from_nanos(second * 1_000_000_000)
}

/// The transition and labels of each notification, oldest first.
fn heard(notifier: &MemoryNotifier) -> Vec<(AlertTransition, memocache::metrics::Tags)> {
    let notifications = notifier.notifications();
    notifications
        .into_iter()
        .map(|n| (n.transition, n.labels))
        .collect()
}

/// Bug: `remove_rule` dropped a firing rule and its state without a word, so every channel
/// that had been told "firing" was never told "resolved": a pager stayed open for good. Now
/// each firing series resolves on removal, on every channel of the rule, once: one firing with
/// the condition still true, one whose condition went false within `keep_firing_for`. A
/// pending series was never announced and goes silently.
#[test]
fn removing_a_firing_rule_resolves_each_firing_series_on_each_channel() {
    let mut t = setup();
    let log = t.add_memory_channel("log");
    let jobs = |status| t.gauge("jobs", "", &[("status", status)]);
    let (failed, queued, retrying) = (jobs("failed"), jobs("queued"), jobs("retrying"));
    let rule = rule_above("too many jobs", "jobs", 100.0, Severity::Warning)
        .with_aggregation(Aggregation::Last)
        .with_pending_for(10 * SECOND)
        .with_keep_firing_for(60 * SECOND)
        .with_channel("pager")
        .with_channel("log");
    let id = t.add(rule);

    failed.set(500.0);
    queued.set(500.0);
    assert!(t.alerts.evaluate().is_empty(), "both pending");
    t.clock.advance(10 * SECOND);
    retrying.set(500.0);
    assert_eq!(t.alerts.evaluate().len(), 2, "failed and queued fire");
    t.clock.advance(5 * SECOND);
    queued.set(0.0);
    assert!(t.alerts.evaluate().is_empty(), "queued keeps firing 60 s");
    let states = t.alerts.series_states(id).unwrap();
    assert!(matches!(
        states[..],
        [
            (_, AlertState::Firing { .. }),
            (
                _,
                AlertState::Firing {
                    clear_since: Some(_),
                    ..
                }
            ),
            (_, AlertState::Pending { .. }),
        ]
    ));

    t.clock.advance(5 * SECOND); // t = 20
    let removed = t.alerts.remove_rule(id).expect("the rule is there");
    assert_eq!(removed.id(), id);
    let failed_labels = tags(&[("status", "failed")]);
    let queued_labels = tags(&[("status", "queued")]);
    let expected = [
        (AlertTransition::Firing, failed_labels.clone()),
        (AlertTransition::Firing, queued_labels.clone()),
        (AlertTransition::Resolved, failed_labels.clone()),
        (AlertTransition::Resolved, queued_labels),
    ];
    assert_eq!(heard(&t.pager), expected);
    assert_eq!(
        heard(&log),
        expected,
        "each channel hears the same, in order"
    );
    let resolved = &t.pager.notifications()[2];
    assert_eq!(resolved.rule_id, id);
    assert_eq!(resolved.rule_name, "too many jobs");
    assert_eq!(resolved.value, None, "a removed rule is not evaluated");
    assert_eq!(resolved.active_since, at_second(0));
    assert_eq!(resolved.at, at_second(20));

    // Gone for good: nothing more is sent, and a second removal finds nothing.
    assert_eq!(t.alerts.state(id), None);
    assert!(t.alerts.evaluate().is_empty());
    assert!(t.alerts.remove_rule(id).is_none());
    assert_eq!(t.pager.notifications().len(), 4);
    assert_eq!(log.notifications().len(), 4);
}

/// A rule that is only pending was never announced: it goes without a notification, and the
/// other rules are left as they were.
#[test]
fn removing_a_pending_rule_sends_nothing() {
    let mut t = setup();
    let depth = t.depth();
    let pending = t.add(depth_rule().with_pending_for(30 * SECOND));
    let firing = t.add(depth_rule());
    depth.set(500.0);
    assert_eq!(t.alerts.evaluate().len(), 1);
    assert!(matches!(
        t.alerts.state(pending),
        Some(AlertState::Pending { .. })
    ));
    assert!(t.alerts.remove_rule(pending).is_some());
    assert_eq!(heard(&t.pager), [(AlertTransition::Firing, tags(&[]))]);
    assert!(matches!(
        t.alerts.state(firing),
        Some(AlertState::Firing { .. })
    ));
}

/// A removed rule keeps no state: added again, the same definition starts inactive, waits out
/// its `pending_for` from scratch, and fires (and notifies) anew after the removal resolved
/// the first firing. Before, the pager heard "firing" twice with no "resolved" between.
#[test]
fn a_removed_firing_rule_added_again_starts_inactive() {
    let mut t = setup();
    let depth = t.depth();
    let id = t.add(depth_rule().with_pending_for(30 * SECOND));
    depth.set(500.0);
    t.alerts.evaluate();
    t.clock.advance(30 * SECOND);
    assert_eq!(t.alerts.evaluate().len(), 1, "fires at t = 30");
    t.clock.advance(SECOND); // t = 31

    let rule = t.alerts.remove_rule(id).unwrap();
    let id = t.add(rule);
    assert_eq!(t.alerts.state(id), Some(AlertState::Inactive));
    assert!(t.alerts.evaluate().is_empty(), "pending again, from now");
    assert_eq!(
        t.alerts.state(id),
        Some(AlertState::Pending {
            since: at_second(31)
        })
    );
    t.clock.advance(30 * SECOND);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].active_since, at_second(31));
    let transitions: Vec<_> = heard(&t.pager).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        transitions,
        [
            AlertTransition::Firing,
            AlertTransition::Resolved,
            AlertTransition::Firing
        ]
    );
}

/// A notifier that panics on a removal's notification is treated as in `evaluate`: every
/// channel is served, the rule is gone, and then the panic goes on; the evaluator works on.
#[test]
fn a_panicking_notifier_on_removal_silences_no_channel_and_leaves_the_rule_removed() {
    let mut t = setup();
    let calls = t.add_counted_channel("buggy", Panicking);
    let depth = t.depth();
    let rule = paging_through_a_panicking_channel();
    let id = t.add(rule);
    let other = t.add(depth_rule());
    depth.set(500.0);
    let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.alerts.evaluate()));
    assert!(evaluated.is_err(), "the buggy channel panics on firing");
    assert_eq!(t.pager.take().len(), 2);

    let removed =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.alerts.remove_rule(id)));
    let payload = removed.expect_err("the notifier's panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"pager client bug"));
    assert_eq!(calls.load(Ordering::Relaxed), 2, "firing, then resolved");
    assert_eq!(heard(&t.pager), [(AlertTransition::Resolved, tags(&[]))]);
    assert!(t.alerts.rule(id).is_none());
    assert!(t.alerts.remove_rule(id).is_none());
    assert!(t.alerts.evaluate().is_empty(), "the other rule still fires");
    assert!(matches!(
        t.alerts.state(other),
        Some(AlertState::Firing { .. })
    ));
}

fn rule_on(metric: &str, aggregation: Aggregation, window: Duration) -> AlertRule {
    let above = Threshold::greater_than(2.0).unwrap();
    AlertRule::new("over two", metric, above, Severity::Warning, window)
        .with_aggregation(aggregation)
        .with_channel("pager")
}

/// Bug: a histogram `h` is exposed with `h_sum` and `h_count` series, and a rule written as
/// against that exposition (`latency_seconds_count > 2`, as in Prometheus) was taken and never
/// fired: nothing is registered under `h_count`, so the rule read no data. It reads the
/// histogram's count and sum, per series, whether the histogram was registered before the
/// rule or after.
#[test]
fn a_rule_on_a_histograms_count_or_sum_reads_its_totals() {
    let mut t = setup();
    let count = t.add(rule_on("latency_seconds_count", Aggregation::Last, SECOND));
    let latency = t
        .registry
        .histogram("latency_seconds", "", &[("queue", "audio")])
        .unwrap();
    let sum = t.add(rule_on("latency_seconds_sum", Aggregation::Last, SECOND));
    for seconds in [0.5, 1.0, 1.5] {
        latency.observe(seconds).unwrap();
    }
    t.clock.advance(3600 * SECOND); // the totals outlive the retention, as rendered
    let fired = t.alerts.evaluate();
    let heard: Vec<_> = fired.iter().map(|n| (n.rule_id, n.value)).collect();
    assert_eq!(heard, [(count, Some(3.0)), (sum, Some(3.0))]);
    assert_eq!(fired[0].labels, tags(&[("queue", "audio")]));
    assert_eq!(fired[0].metric_name, "latency_seconds_count");
    let text = t.registry.render_prometheus();
    assert!(
        text.contains("latency_seconds_count{queue=\"audio\"} 3\n"),
        "{text}"
    );
    assert_eq!(
        t.registry.aggregate(
            "latency_seconds_sum",
            &tags(&[("queue", "audio")]),
            Aggregation::Last,
            SECOND
        ),
        Some(3.0)
    );
}

/// Bug: an average or a percentile of a counter (`Aggregation::Average` is a rule's default),
/// or of a histogram's `_sum` or `_count`, was taken and never fired: a running total keeps
/// no history, so its window never holds a value. `add_rule` refuses it, naming the rule, the
/// metric and the aggregation, and adds nothing; `Last` is taken.
#[test]
fn a_windowed_aggregation_of_a_running_total_is_refused() {
    let mut t = setup();
    t.registry.counter("jobs_total", "", &[]).unwrap().inc_by(5);
    t.registry.histogram("latency_seconds", "", &[]).unwrap();
    let p99 = Aggregation::Percentile(Percentile::p99());
    for metric in ["jobs_total", "latency_seconds_count", "latency_seconds_sum"] {
        for aggregation in [Aggregation::Average, p99] {
            let err = t
                .alerts
                .add_rule(rule_on(metric, aggregation, 60 * SECOND))
                .unwrap_err();
            assert_eq!(
                err,
                MetricError::NoHistory {
                    rule: "over two".into(),
                    metric: metric.into(),
                    aggregation,
                }
            );
            let message = err.to_string();
            for part in [
                "`over two`",
                &format!("`{metric}`"),
                &aggregation.to_string(),
            ] {
                assert!(message.contains(part), "{part} not in {message}");
            }
        }
    }
    assert_eq!(t.alerts.rules().count(), 0);
    t.add(rule_on("jobs_total", Aggregation::Last, 60 * SECOND));
    assert_eq!(t.alerts.evaluate().len(), 1);
}

/// Bug: a rule on a histogram over a window of zero (or in a registry that keeps nothing)
/// never fired: no observation is ever in a window `(now − 0, now]`. It is refused; a gauge's
/// zero window is its current value, and a counter's `Last` reads no window, so those are
/// taken and fire.
#[test]
fn a_histogram_read_over_a_zero_window_is_refused() {
    let mut t = setup();
    t.registry
        .histogram("latency_seconds", "", &[])
        .unwrap()
        .observe(5.0)
        .unwrap();
    for aggregation in [Aggregation::Last, Aggregation::Average] {
        let err = t
            .alerts
            .add_rule(rule_on("latency_seconds", aggregation, Duration::ZERO))
            .unwrap_err();
        assert_eq!(
            err,
            MetricError::EmptyWindow {
                rule: "over two".into(),
                metric: "latency_seconds".into(),
                window: Duration::ZERO,
                retention: 600 * SECOND,
            }
        );
    }
    t.gauge("depth", "", &[]).set(5.0);
    t.registry.counter("jobs_total", "", &[]).unwrap().inc_by(5);
    for (metric, aggregation) in [
        ("depth", Aggregation::Average),
        ("depth", Aggregation::Last),
        ("jobs_total", Aggregation::Last),
    ] {
        t.add(rule_on(metric, aggregation, Duration::ZERO));
    }
    assert_eq!(t.alerts.evaluate().len(), 3);

    let keeps_nothing = MetricsRegistry::with_clock(t.clock.clone(), Duration::ZERO);
    keeps_nothing.histogram("latency_seconds", "", &[]).unwrap();
    let err = AlertEvaluator::new(keeps_nothing)
        .add_rule(rule_on("latency_seconds", Aggregation::Last, 60 * SECOND))
        .unwrap_err();
    assert!(matches!(err, MetricError::EmptyWindow { .. }), "{err}");
}

/// A rule may name a metric before it is registered; one registered later as something the
/// rule cannot read (here the default `Average` of a counter) left the rule silently never
/// firing. Each evaluation checks: `rule_health` gives the error (as Prometheus gives a rule's
/// health) and the log says so once, not at every evaluation.
#[test]
fn a_rule_whose_metric_is_registered_later_as_unreadable_reports_it() {
    let events = Events::default();
    let mut t = setup();
    let above = Threshold::greater_than(2.0).unwrap();
    let average = AlertRule::new("busy", "jobs_total", above, Severity::Warning, 60 * SECOND);
    let id = t.add(average);
    assert_eq!(t.alerts.rule_health(id), Some(Ok(())));
    assert!(t.alerts.evaluate().is_empty());
    assert_eq!(t.alerts.rule_health(id), Some(Ok(())));
    t.registry.counter("jobs_total", "", &[]).unwrap().inc_by(5);
    tracing::subscriber::with_default(events.sink(), || {
        for _ in 0..3 {
            assert!(t.alerts.evaluate().is_empty());
        }
    });
    let expected = MetricError::NoHistory {
        rule: "busy".into(),
        metric: "jobs_total".into(),
        aggregation: Aggregation::Average,
    };
    assert_eq!(t.alerts.rule_health(id), Some(Err(&expected)));
    let logged = events.0.lock().unwrap().clone();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].0, tracing::Level::WARN);
    assert!(
        logged[0].1.contains("rule=busy") && logged[0].1.contains("keeps no history"),
        "{logged:?}"
    );
    assert_eq!(t.alerts.rule_health(AlertRuleId::generate()), None);
}

/// Bug: a gauge's windowed aggregations read only the values it was set to within the window,
/// so a gauge set when it changes (a queue stuck at 500) had "no data" once its last change
/// left the window: an "average above 100" rule added later never fired, and a firing one
/// resolved one window after the last change, though the gauge still read 500. A window the
/// gauge was not set in holds the value it kept throughout.
#[test]
fn a_gauge_set_only_when_it_changes_keeps_its_window_rule_firing() {
    let mut t = setup();
    let depth = t.depth();
    let average = depth_rule().with_aggregation(Aggregation::Average);
    let id = t.add(average.clone());
    depth.set(500.0);
    assert_eq!(t.alerts.evaluate().len(), 1);
    for _ in 0..5 {
        t.clock.advance(60 * SECOND);
        assert_eq!(t.alerts.evaluate(), [], "resolved while the gauge read 500");
    }
    assert!(matches!(
        t.alerts.state(id),
        Some(AlertState::Firing { .. })
    ));
    let p50 = Aggregation::Percentile(Percentile::p50());
    t.add(average.with_aggregation(p50));
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].value, Some(500.0));
    // Set within the window, the values set are what counts.
    depth.set(20.0);
    assert_eq!(t.alerts.evaluate().len(), 2);
    assert_eq!(t.pager.notifications().len(), 4);
}

/// `rule_on`, on the crate's queue-depth family, selecting one label.
fn jobs_rule(label: &str, value: &str) -> AlertRule {
    rule_on("memocache_jobs", Aggregation::Last, 60 * SECOND).with_label(label, value)
}

/// Bug: a rule selecting series by a label its metric never carries was taken and never
/// fired, silently: `memocache_jobs{state="failed"}`, where the label is `status`. A family
/// the crate registers for its own figures has a fixed set of label names, which the registry
/// keeps (and holds a series to) from the crate's table: such a rule is refused, naming the
/// label and the ones there are, before the crate registers the family as after (see
/// `a_rule_on_a_crate_family_is_checked_before_the_crate_registers_it`). A label value no
/// series has yet (a status first reached later) and an empty value (the series without the
/// label) are taken, as is any label of a family the host registers, whose label names are
/// its own to add to.
#[test]
fn a_rule_on_a_label_a_crate_metric_never_carries_is_refused() {
    let mut t = setup();
    let expected = MetricError::NoSuchLabel {
        rule: "over two".into(),
        metric: "memocache_jobs".into(),
        label: "state".into(),
        labels: vec!["status".into()],
    };
    let early = t.alerts.add_rule(jobs_rule("state", "failed")).unwrap_err();
    assert_eq!(early, expected);
    QueueMetrics::register(&t.registry).unwrap();
    let err = t.alerts.add_rule(jobs_rule("state", "failed")).unwrap_err();
    assert_eq!(err, expected);
    let message = err.to_string();
    for part in ["`over two`", "`memocache_jobs`", "`state`", "`status`"] {
        assert!(message.contains(part), "{part} not in {message}");
    }
    // What makes "never" true: the registry keeps the family to its label names.
    assert_eq!(
        t.registry
            .gauge("memocache_jobs", "", &[("state", "failed")])
            .unwrap_err(),
        MetricError::UndeclaredLabel {
            metric: "memocache_jobs".into(),
            label: "state".into(),
            labels: vec!["status".into()],
        }
    );
    let stuck = t.add(jobs_rule("status", "stuck"));
    let unlabelled = t.add(jobs_rule("state", ""));
    t.gauge("app_jobs", "", &[("status", "queued")]);
    let app = rule_on("app_jobs", Aggregation::Last, 60 * SECOND).with_label("state", "failed");
    t.add(app);

    t.gauge("memocache_jobs", "", &[("status", "failed")])
        .set(5.0);
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].rule_id, unlabelled);
    assert!(t.alerts.evaluate().is_empty());
    assert_eq!(t.alerts.rule_health(stuck), Some(Ok(())));
}

/// Bug: a rule on one of the crate's own families, added before the crate registers it, was
/// checked against nothing (the name was not registered yet) and taken: one selecting a label
/// the family never carries, averaging a counter, or reading a summary's buckets, none of
/// which can ever fire, was reported only once the crate registered the family, if ever (a
/// pipeline's families exist only once a pipeline is built). The registry knows the crate's
/// families from its table, so such a rule is refused at once, as it is once the crate has
/// registered the family; and the check registers nothing.
#[test]
fn a_rule_on_a_crate_family_is_checked_before_the_crate_registers_it() {
    let mut t = setup();
    let last = |metric: &str| rule_on(metric, Aggregation::Last, 60 * SECOND);
    let no_such_label = |metric: &str, label: &str, labels: &[&str]| MetricError::NoSuchLabel {
        rule: "over two".into(),
        metric: metric.into(),
        label: label.into(),
        labels: labels.iter().map(|&l| l.to_owned()).collect(),
    };
    let served = "memocache_transcriptions_total";
    assert_eq!(
        t.alerts
            .add_rule(last(served).with_label("route", "cache"))
            .unwrap_err(),
        no_such_label(served, "route", &["source"])
    );
    let count = "memocache_job_latency_seconds_count";
    assert_eq!(
        t.alerts
            .add_rule(last(count).with_label("status", "completed"))
            .unwrap_err(),
        no_such_label(count, "status", &[])
    );
    let hits = "memocache_cache_hits_total";
    assert_eq!(
        t.alerts
            .add_rule(rule_on(hits, Aggregation::Average, 60 * SECOND))
            .unwrap_err(),
        MetricError::NoHistory {
            rule: "over two".into(),
            metric: hits.into(),
            aggregation: Aggregation::Average,
        }
    );
    let buckets = "memocache_job_latency_seconds_bucket";
    assert_eq!(
        t.alerts.add_rule(last(buckets)).unwrap_err(),
        MetricError::NoBuckets {
            rule: "over two".into(),
            metric: buckets.into(),
            histogram: "memocache_job_latency_seconds".into(),
        }
    );
    // What the crate's families can give is taken, as is any label of a name of the host's.
    t.add(last(served).with_label("source", "cache"));
    t.add(last(count));
    t.add(last(hits));
    t.add(jobs_rule("status", "failed"));
    t.add(last("memocache_jobs_total").with_label("state", "failed"));
    assert_eq!(t.alerts.rules().count(), 5);
    assert_eq!(t.registry.render_prometheus(), "", "nothing registered");
}

/// A rule selecting `quantile="0.99"`, as against a summary's exposition, or `le`, as against
/// a Prometheus histogram's, is refused (the labels are reserved, and no series carries them),
/// but the error gave only the label grammar, not how to alert on a quantile here. It says to
/// read the histogram with a percentile aggregation; another invalid name gets the grammar.
#[test]
fn a_rule_on_a_quantile_label_is_told_to_take_a_percentile() {
    let mut t = setup();
    t.registry.histogram("latency_seconds", "", &[]).unwrap();
    for (label, value) in [("quantile", "0.99"), ("le", "0.5")] {
        let rule = rule_on("latency_seconds", Aggregation::Last, 60 * SECOND);
        let err = t
            .alerts
            .add_rule(rule.with_label(label, value))
            .unwrap_err();
        assert_eq!(err, MetricError::InvalidLabelName(label.into()));
        let message = err.to_string();
        assert!(
            message.contains(&format!("`{label}`"))
                && message.contains("percentile aggregation (`Aggregation::Percentile`"),
            "{message}"
        );
    }
    let err = t.registry.gauge("depth", "", &[("dc-1", "x")]).unwrap_err();
    assert!(err.to_string().contains("[a-zA-Z_][a-zA-Z0-9_]*"), "{err}");
    assert_eq!(t.alerts.rules().count(), 0);
}

/// Bug: a rule on `h_bucket`, as against a Prometheus histogram's exposition, was taken and
/// read nothing, never to fire: the registry exposes a histogram as a summary, which has no
/// `_bucket` series (and the `le` label is refused). It is refused, naming the histogram and
/// what to read instead, whatever its aggregation; one added before the histogram is
/// registered is reported by `rule_health`. A family registered under such a name is read as
/// any family.
#[test]
fn a_rule_on_a_histograms_buckets_is_refused_or_reported() {
    let mut t = setup();
    let early = t.add(rule_on(
        "latency_seconds_bucket",
        Aggregation::Last,
        60 * SECOND,
    ));
    let latency = t.registry.histogram("latency_seconds", "", &[]).unwrap();
    latency.observe(5.0).unwrap();
    let expected = MetricError::NoBuckets {
        rule: "over two".into(),
        metric: "latency_seconds_bucket".into(),
        histogram: "latency_seconds".into(),
    };
    let p99 = Aggregation::Percentile(Percentile::p99());
    for aggregation in [Aggregation::Last, Aggregation::Average, p99] {
        let rule = rule_on("latency_seconds_bucket", aggregation, 60 * SECOND);
        assert_eq!(t.alerts.add_rule(rule).unwrap_err(), expected);
    }
    let message = expected.to_string();
    for part in ["`latency_seconds`", "`Aggregation::Percentile`", "_count"] {
        assert!(message.contains(part), "{part} not in {message}");
    }
    assert!(t.alerts.evaluate().is_empty());
    assert_eq!(t.alerts.rule_health(early), Some(Err(&expected)));

    t.registry
        .counter("requests_bucket", "", &[])
        .unwrap()
        .inc_by(5);
    let own = t.add(rule_on("requests_bucket", Aggregation::Last, 60 * SECOND));
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].rule_id, fired[0].value), (own, Some(5.0)));
}

/// A host can declare the label names of a family it registers, as the crate's own families
/// have theirs: a series with another label is then refused, and so is an alert rule
/// selecting by a label the family never carries (one added before the declaration is
/// reported by `rule_health`). Before the fix a host's family took any label, so a typo'd
/// label (`sorce`) made a new series, and a rule selecting by it was taken and never fired:
/// there was no way to declare. A family not declared keeps taking any label.
#[test]
fn a_host_family_declared_with_its_labels_refuses_others_and_rules_on_them() {
    let mut t = setup();
    let early = t
        .alerts
        .add_rule(rule_on("uploads", Aggregation::Last, 60 * SECOND).with_label("sorce", "x"))
        .unwrap();
    // Registered with series first, then declared: the series' labels are among the names.
    t.registry
        .gauge("uploads", "Uploads.", &[("source", "cache")])
        .unwrap();
    t.registry
        .declare(
            "uploads",
            "",
            memocache::MetricType::Gauge,
            &["source", "region"],
        )
        .unwrap();
    let labels = vec!["region".to_owned(), "source".to_owned()];
    assert_eq!(
        t.registry
            .gauge("uploads", "", &[("sorce", "disk")])
            .unwrap_err(),
        MetricError::UndeclaredLabel {
            metric: "uploads".into(),
            label: "sorce".into(),
            labels: labels.clone(),
        }
    );
    let rule = rule_on("uploads", Aggregation::Last, 60 * SECOND).with_label("sorce", "disk");
    assert_eq!(
        t.alerts.add_rule(rule).unwrap_err(),
        MetricError::NoSuchLabel {
            rule: "over two".into(),
            metric: "uploads".into(),
            label: "sorce".into(),
            labels: labels.clone(),
        }
    );
    t.alerts.evaluate();
    assert!(matches!(
        t.alerts.rule_health(early),
        Some(Err(MetricError::NoSuchLabel { .. }))
    ));
    // Declared labels, or fewer, are taken, and a rule on them fires.
    let rule = rule_on("uploads", Aggregation::Last, 60 * SECOND).with_label("region", "eu");
    let regional = t.alerts.add_rule(rule).unwrap();
    t.registry
        .gauge("uploads", "", &[("source", "disk"), ("region", "eu")])
        .unwrap()
        .set(5.0);
    t.registry.gauge("uploads", "", &[]).unwrap();
    let fired = t.alerts.evaluate();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].rule_id, regional);

    // Declared before any series: registered, with no series, and held to its names.
    t.registry
        .declare(
            "served_total",
            "Served.",
            memocache::MetricType::Counter,
            &["route"],
        )
        .unwrap();
    assert!(
        t.registry
            .render_prometheus()
            .contains("# TYPE served_total counter")
    );
    assert!(matches!(
        t.registry.counter("served_total", "", &[("path", "/")]),
        Err(MetricError::UndeclaredLabel { .. })
    ));
    t.registry
        .counter("served_total", "", &[("route", "/")])
        .unwrap()
        .inc();
    // The same declaration again changes nothing; another is refused, as is a wrong type.
    t.registry
        .declare(
            "served_total",
            "",
            memocache::MetricType::Counter,
            &["route"],
        )
        .unwrap();
    assert_eq!(
        t.registry
            .declare(
                "served_total",
                "",
                memocache::MetricType::Counter,
                &["path"]
            )
            .unwrap_err(),
        MetricError::LabelsConflict {
            metric: "served_total".into(),
            labels: vec!["route".into()],
            declared: vec!["path".into()],
        }
    );
    assert!(matches!(
        t.registry
            .declare("served_total", "", memocache::MetricType::Gauge, &["route"]),
        Err(MetricError::TypeConflict { .. })
    ));
    // A family whose series carry a label not declared is not declared, and changes nothing.
    t.registry
        .counter("hits_total", "", &[("tier", "l1")])
        .unwrap();
    assert_eq!(
        t.registry
            .declare("hits_total", "", memocache::MetricType::Counter, &["route"])
            .unwrap_err(),
        MetricError::UndeclaredLabel {
            metric: "hits_total".into(),
            label: "tier".into(),
            labels: vec!["route".into()],
        }
    );
    t.registry
        .counter("hits_total", "", &[("any", "thing")])
        .unwrap();
    // The crate's own families keep their names.
    QueueMetrics::register(&t.registry).unwrap();
    assert!(matches!(
        t.registry.declare(
            "memocache_jobs",
            "",
            memocache::MetricType::Gauge,
            &["state"]
        ),
        Err(MetricError::CrateFamilyConflict { .. })
    ));
}
