//! Adapters publishing the cache's and the job queue's statistics into a [`MetricsRegistry`].
//!
//! # Design
//!
//! The cache counts with its own striped atomics ([`CacheStats`]) and the queue under its own
//! lock ([`QueueStats`]); neither knows anything of metrics. An adapter copies a snapshot into
//! registry metrics when the host asks, typically right before rendering `/metrics` and before
//! each alert evaluation. Publishing is pull-based, so the hot paths pay nothing for metrics.
//!
//! Cumulative counts are mirrored with [`Counter::advance_to`], which keeps each exposed counter
//! monotonic even if two threads publish snapshots out of order. Levels (entries, bytes, hit
//! ratio, queue depth) are gauges, and each publish adds a sample to the gauge's history, so
//! alert rules can average them over a window (the hit ratio over five minutes).
//!
//! So one [`CacheMetrics`] mirrors one cache, and one [`QueueMetrics`] one queue, for the life
//! of the registry: the names carry no label that tells two caches apart, and a counter keeps
//! the largest total it was given. Statistics of a second cache published into the same
//! registry (two pipelines given one registry), or of a queue that replaced a dropped one
//! (its counts start again at 0), show for each counter the larger of the two totals, which
//! is neither's and not their sum, and in each gauge whichever was published last. Give each
//! cache and each queue a registry of its own; [`PipelineBuilder::build`] refuses a registry
//! that already carries them ([`PipelineError::RegistryInUse`]).
//!
//! [`PipelineBuilder::build`]: crate::pipeline::PipelineBuilder::build
//! [`PipelineError::RegistryInUse`]: crate::pipeline::PipelineError::RegistryInUse
//!
//! Job latency is the one thing a snapshot cannot carry: percentiles need every job's latency,
//! not a total. It is pushed instead, through the queue's completion hook
//! ([`JobQueueBuilder::on_complete`](crate::JobQueueBuilder::on_complete)), which calls
//! [`QueueMetrics::observe`] once per completed job outside the queue's lock.
//!
//! # Names
//!
//! Prometheus conventions: a `memocache_` prefix, `_total` on counters, base units (`_bytes`,
//! `_seconds`), and labels with a small fixed set of values (`cause`, `status`) — never keys,
//! job ids or content hashes. A family these adapters create carries the labels the tables
//! below give it and no other: the registry refuses a series of it with another label
//! ([`MetricError::UndeclaredLabel`]), and so an alert rule selecting by one, which would
//! never fire ([`MetricError::NoSuchLabel`]: `memocache_jobs{state="failed"}`). A host may
//! declare one of these families ([`MetricsRegistry::declare`]) only as it is given here,
//! before the adapters register it as after ([`MetricError::CrateFamilyConflict`]).
//!
//! ## Cache ([`CacheMetrics`])
//!
//! | metric | type | from |
//! |---|---|---|
//! | `memocache_cache_hits_total` | counter | `hits` |
//! | `memocache_cache_misses_total` | counter | `misses` |
//! | `memocache_cache_inserts_total` | counter | `inserts` |
//! | `memocache_cache_updates_total` | counter | `updates` (= `replaced`: live values replaced) |
//! | `memocache_cache_evictions_total{cause="size"}` | counter | `evictions_size` |
//! | `memocache_cache_evictions_total{cause="expired"}` | counter | `evictions_expired` |
//! | `memocache_cache_removals_total` | counter | `removals_explicit` (`remove`, `clear`) |
//! | `memocache_cache_loads_total` | counter | `loads` |
//! | `memocache_cache_load_failures_total` | counter | `load_failures` |
//! | `memocache_cache_entries` | gauge | `entries` |
//! | `memocache_cache_size_bytes` | gauge | `bytes` |
//! | `memocache_cache_hit_ratio` | gauge | `hit_ratio()`, since the cache was built (see below) |
//!
//! The hit ratio of a cache that has not been read is 0/0, published as `NaN` rather than the
//! 0.0 of [`CacheStats::hit_ratio`]: like an empty window, it is "no data" to an alert rule
//! (no threshold meets NaN), where a 0 would fire every "hit ratio below X" rule on an idle
//! system. The gauge is registered as `NaN` too, so it reads "no data" before the first
//! publish as well, whether the crate or the host registered it first; a registration never
//! writes a gauge it finds, so a value a host sets through its own handle stays until the
//! first publish.
//!
//! Explicit removals and replacements are not evictions (the cache did not choose them), so
//! they are separate families; `sum(memocache_cache_evictions_total)` is what the policy and the
//! TTLs removed.
//!
//! ## Job queue ([`QueueMetrics`])
//!
//! | metric | type | from |
//! |---|---|---|
//! | `memocache_jobs{status="queued"}` | gauge | `queued` (ready, delayed and coalesced) |
//! | `memocache_jobs{status="processing"}` | gauge | `processing` |
//! | `memocache_jobs{status="failed"}` | gauge | `dead_letters` (failed jobs in the dead letter) |
//! | `memocache_jobs_delayed` | gauge | `delayed` (of the queued, waiting out a retry delay) |
//! | `memocache_jobs_coalesced_waiting` | gauge | `coalesced_waiting` (of the queued, followers) |
//! | `memocache_job_waiters` | gauge | `waiters` (callers blocked in [`crate::JobQueue::wait`]) |
//! | `memocache_jobs_submitted_total` | counter | `submitted` |
//! | `memocache_jobs_rejected_total` | counter | `rejected_full` (backpressure) |
//! | `memocache_jobs_finished_total{status="completed"}` | counter | `completed` |
//! | `memocache_jobs_finished_total{status="failed"}` | counter | `failed` |
//! | `memocache_jobs_finished_total{status="cancelled"}` | counter | `cancelled` |
//! | `memocache_job_retries_total` | counter | `retries` |
//! | `memocache_job_dead_letters_total` | counter | `failed` (each failed job is dead-lettered) |
//! | `memocache_job_dead_letters_evicted_total` | counter | `dead_letters_evicted` |
//! | `memocache_job_lease_expirations_total` | counter | `lease_expirations` |
//! | `memocache_job_memo_hits_total` | counter | `memo_hits` |
//! | `memocache_job_coalesced_total` | counter | `coalesced` |
//! | `memocache_job_memo_store_failures_total` | counter | `memo_store_failures` |
//! | `memocache_job_memo_lookup_failures_total` | counter | `memo_lookup_failures` |
//! | `memocache_job_latency_seconds` | summary | submit → completion, per job, from the hook |
//!
//! The depth gauge's statuses are disjoint, so `sum(memocache_jobs)` is every job the queue
//! holds that has not completed or been cancelled; the two `of the queued` gauges are separate
//! families so that they are not counted twice. The latency summary exposes p50, p95 and p99
//! over the registry's retention window, computed exactly (see
//! [`MetricsRegistry`]). It covers jobs completed by a worker and the
//! followers completed with them (their wait is real); memo hits complete at submit with no
//! wait and are left out, so that a high hit ratio does not pull the percentiles to zero — they
//! are counted by `memocache_job_memo_hits_total`. A re-submitted dead letter is measured from
//! its first submit.

use super::families;
use super::registry::Batch;
use super::{Counter, Gauge, Histogram, MetricError, MetricsRegistry};
use crate::cache::CacheStats;
use crate::job::{JobCompletion, QueueStats};

/// Registry handles for a cache's statistics; [`CacheMetrics::publish`] copies a snapshot in.
///
/// ```
/// use memocache::metrics::wiring::CacheMetrics;
/// use memocache::{Cache, CacheKey, MetricsRegistry};
///
/// let cache = Cache::builder().max_bytes(1 << 20).build()?;
/// let registry = MetricsRegistry::new();
/// let metrics = CacheMetrics::register(&registry)?;
///
/// // Before the first read the hit ratio is "no data": NaN, which no alert threshold meets.
/// metrics.publish(&cache.stats());
/// assert!(registry.render_prometheus().contains("memocache_cache_hit_ratio NaN\n"));
///
/// let key = CacheKey::from_content(b"some text", "example")?;
/// cache.insert(key, "hello")?;
/// cache.get(&key);
/// metrics.publish(&cache.stats());
///
/// let text = registry.render_prometheus();
/// assert!(text.contains("memocache_cache_hits_total 1\n"));
/// assert!(text.contains("memocache_cache_hit_ratio 1\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    inserts: Counter,
    updates: Counter,
    evictions_size: Counter,
    evictions_expired: Counter,
    removals: Counter,
    loads: Counter,
    load_failures: Counter,
    entries: Gauge,
    bytes: Gauge,
    hit_ratio: Gauge,
}

impl CacheMetrics {
    /// Registers (or finds) the cache metrics in `registry`. No metric a host registers or
    /// declares makes this fail: the names (see [`CacheMetrics`]) are the cache's families
    /// whoever registers them first (a host asking for one as another type, or with another
    /// label, is refused instead: see [`MetricsRegistry::counter`]), and none is a
    /// histogram's `_sum` or `_count`.
    ///
    /// A failed registration registers nothing.
    pub fn register(registry: &MetricsRegistry) -> Result<CacheMetrics, MetricError> {
        registry.register_all(CacheMetrics::register_in)
    }

    /// [`CacheMetrics::register`] as part of a larger batch.
    pub(crate) fn register_in(registry: &Batch<'_>) -> Result<CacheMetrics, MetricError> {
        let counter = |family| registry.counter(family, &[]);
        let eviction = |cause| registry.counter(&families::CACHE_EVICTIONS, &[("cause", cause)]);
        let gauge = |family| registry.gauge(family, &[]);
        Ok(CacheMetrics {
            hits: counter(&families::CACHE_HITS)?,
            misses: counter(&families::CACHE_MISSES)?,
            inserts: counter(&families::CACHE_INSERTS)?,
            updates: counter(&families::CACHE_UPDATES)?,
            evictions_size: eviction("size")?,
            evictions_expired: eviction("expired")?,
            removals: counter(&families::CACHE_REMOVALS)?,
            loads: counter(&families::CACHE_LOADS)?,
            load_failures: counter(&families::CACHE_LOAD_FAILURES)?,
            entries: gauge(&families::CACHE_ENTRIES)?,
            bytes: gauge(&families::CACHE_BYTES)?,
            // NaN until the first publish too (the family's series start so, whoever
            // registers them: see `CrateFamily::starts_as_no_data`): at 0, a render or a rule
            // on the last value read a cache not yet published as one that never hit.
            hit_ratio: gauge(&families::CACHE_HIT_RATIO)?,
        })
    }

    /// Copies a statistics snapshot into the registry.
    pub fn publish(&self, stats: &CacheStats) {
        for (counter, total) in [
            (&self.hits, stats.hits),
            (&self.misses, stats.misses),
            (&self.inserts, stats.inserts),
            (&self.updates, stats.updates),
            (&self.evictions_size, stats.evictions_size),
            (&self.evictions_expired, stats.evictions_expired),
            (&self.removals, stats.removals_explicit),
            (&self.loads, stats.loads),
            (&self.load_failures, stats.load_failures),
        ] {
            counter.advance_to(total);
        }
        self.entries.set(stats.entries as f64);
        self.bytes.set(stats.bytes as f64);
        // Before the first read the ratio is 0/0: NaN, which no threshold meets and which the
        // gauge's history skips, so alert rules see "no data". `CacheStats::hit_ratio`'s 0.0
        // would fire every "hit ratio below X" rule on a cache that has served nothing.
        let ratio = if stats.hits == 0 && stats.misses == 0 {
            f64::NAN
        } else {
            stats.hit_ratio()
        };
        self.hit_ratio.set(ratio);
    }
}

impl MetricsRegistry {
    /// Publishes a cache statistics snapshot (see [`CacheMetrics`] for the names). Each call
    /// looks the metrics up by name; a host publishing often can keep a [`CacheMetrics`].
    pub fn record_cache(&self, stats: &CacheStats) -> Result<(), MetricError> {
        CacheMetrics::register(self)?.publish(stats);
        Ok(())
    }
}

/// Registry handles for a job queue's statistics and latencies.
///
/// Counts and depths are pulled: [`QueueMetrics::publish`] copies a [`QueueStats`] snapshot in.
/// Latency cannot be pulled from totals, so it is pushed: [`QueueMetrics::observe`] records one
/// completion, and [`QueueMetrics::completion_hook`] returns a closure for
/// [`JobQueueBuilder::on_complete`](crate::JobQueueBuilder::on_complete) that does so for every
/// job the queue completes.
///
/// ```
/// use memocache::metrics::wiring::QueueMetrics;
/// use memocache::{Job, JobQueue, JobType, MetricsRegistry, WorkerId};
///
/// let registry = MetricsRegistry::new();
/// let metrics = QueueMetrics::register(&registry)?;
/// let queue = JobQueue::builder().on_complete(metrics.completion_hook()).build()?;
///
/// queue.submit(Job::new(JobType::Indexing, &b"doc"[..]))?;
/// let lease = queue.try_next(&WorkerId::new("w1")).expect("a job is ready");
/// queue.complete(&lease, b"done".to_vec().into())?;
/// metrics.publish(&queue.stats());
///
/// let text = registry.render_prometheus();
/// assert!(text.contains("memocache_jobs_finished_total{status=\"completed\"} 1\n"));
/// assert!(text.contains("memocache_job_latency_seconds_count 1\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    queued: Gauge,
    processing: Gauge,
    dead_lettered: Gauge,
    delayed: Gauge,
    coalesced_waiting: Gauge,
    waiters: Gauge,
    submitted: Counter,
    rejected: Counter,
    completed: Counter,
    failed: Counter,
    cancelled: Counter,
    retries: Counter,
    dead_letters: Counter,
    dead_letters_evicted: Counter,
    lease_expirations: Counter,
    memo_hits: Counter,
    coalesced: Counter,
    memo_store_failures: Counter,
    memo_lookup_failures: Counter,
    latency: Histogram,
}

impl QueueMetrics {
    /// Registers (or finds) the queue metrics in `registry`. No metric a host registers or
    /// declares makes this fail: the names (see [`QueueMetrics`]) are the queue's families
    /// whoever registers them first (a host asking for one as another type, or with another
    /// label, is refused instead: see [`MetricsRegistry::counter`]), and the series its
    /// latency summary writes, `memocache_job_latency_seconds_sum` and `_count`, are refused
    /// to a host whether or not the queue registered the summary yet
    /// ([`MetricError::NameCollision`], at the host's call).
    ///
    /// A failed registration registers nothing.
    ///
    /// ```
    /// use memocache::metrics::wiring::QueueMetrics;
    /// use memocache::{MetricError, MetricsRegistry};
    ///
    /// let registry = MetricsRegistry::new();
    /// // The latency summary's `_count` is the queue's before the queue registers it.
    /// let taken = registry.counter("memocache_job_latency_seconds_count", "Mine.", &[]);
    /// assert!(matches!(
    ///     taken,
    ///     Err(MetricError::NameCollision { histogram, .. })
    ///         if histogram == "memocache_job_latency_seconds"
    /// ));
    /// QueueMetrics::register(&registry)?;
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn register(registry: &MetricsRegistry) -> Result<QueueMetrics, MetricError> {
        registry.register_all(QueueMetrics::register_in)
    }

    /// [`QueueMetrics::register`] as part of a larger batch.
    pub(crate) fn register_in(registry: &Batch<'_>) -> Result<QueueMetrics, MetricError> {
        let counter = |family| registry.counter(family, &[]);
        let depth = |status| registry.gauge(&families::JOBS, &[("status", status)]);
        let finished = |status| registry.counter(&families::JOBS_FINISHED, &[("status", status)]);
        let gauge = |family| registry.gauge(family, &[]);
        Ok(QueueMetrics {
            queued: depth("queued")?,
            processing: depth("processing")?,
            dead_lettered: depth("failed")?,
            delayed: gauge(&families::JOBS_DELAYED)?,
            coalesced_waiting: gauge(&families::JOBS_COALESCED_WAITING)?,
            waiters: gauge(&families::JOB_WAITERS)?,
            submitted: counter(&families::JOBS_SUBMITTED)?,
            rejected: counter(&families::JOBS_REJECTED)?,
            completed: finished("completed")?,
            failed: finished("failed")?,
            cancelled: finished("cancelled")?,
            retries: counter(&families::JOB_RETRIES)?,
            dead_letters: counter(&families::JOB_DEAD_LETTERS)?,
            dead_letters_evicted: counter(&families::JOB_DEAD_LETTERS_EVICTED)?,
            lease_expirations: counter(&families::JOB_LEASE_EXPIRATIONS)?,
            memo_hits: counter(&families::JOB_MEMO_HITS)?,
            coalesced: counter(&families::JOB_COALESCED)?,
            memo_store_failures: counter(&families::JOB_MEMO_STORE_FAILURES)?,
            memo_lookup_failures: counter(&families::JOB_MEMO_LOOKUP_FAILURES)?,
            latency: registry.histogram(&families::JOB_LATENCY, &[])?,
        })
    }

    /// Copies a statistics snapshot into the registry.
    pub fn publish(&self, stats: &QueueStats) {
        for (counter, total) in [
            (&self.submitted, stats.submitted),
            (&self.rejected, stats.rejected_full),
            (&self.completed, stats.completed),
            (&self.failed, stats.failed),
            (&self.cancelled, stats.cancelled),
            (&self.retries, stats.retries),
            // Every job that fails for good is dead-lettered, so this equals `failed`; it is
            // kept as its own family because alert rules are written against it by name.
            (&self.dead_letters, stats.failed),
            (&self.dead_letters_evicted, stats.dead_letters_evicted),
            (&self.lease_expirations, stats.lease_expirations),
            (&self.memo_hits, stats.memo_hits),
            (&self.coalesced, stats.coalesced),
            (&self.memo_store_failures, stats.memo_store_failures),
            (&self.memo_lookup_failures, stats.memo_lookup_failures),
        ] {
            counter.advance_to(total);
        }
        for (gauge, level) in [
            (&self.queued, stats.queued),
            (&self.processing, stats.processing),
            (&self.dead_lettered, stats.dead_letters),
            (&self.delayed, stats.delayed),
            (&self.coalesced_waiting, stats.coalesced_waiting),
            (&self.waiters, stats.waiters),
        ] {
            gauge.set(level as f64);
        }
    }

    /// Records one completion's latency in `memocache_job_latency_seconds`; memo hits
    /// (completed at submit, with no wait and no worker) are skipped so that they do not drag
    /// the percentiles towards zero.
    pub fn observe(&self, completion: &JobCompletion) {
        observe_latency(&self.latency, completion);
    }

    /// A hook for [`JobQueueBuilder::on_complete`](crate::JobQueueBuilder::on_complete) that
    /// calls [`QueueMetrics::observe`].
    pub fn completion_hook(&self) -> impl Fn(&JobCompletion) + Send + Sync + 'static {
        let latency = self.latency.clone();
        move |completion| observe_latency(&latency, completion)
    }
}

fn observe_latency(latency: &Histogram, completion: &JobCompletion) {
    if completion.memo_hit {
        return;
    }
    // A Duration always converts to a finite f64, the only kind `observe` accepts.
    let _ = latency.observe(completion.latency().as_secs_f64());
}

impl MetricsRegistry {
    /// Publishes a queue statistics snapshot (see [`QueueMetrics`] for the names). Latencies
    /// are not in the snapshot: build the queue with [`QueueMetrics::completion_hook`].
    pub fn record_queue(&self, stats: &QueueStats) -> Result<(), MetricError> {
        QueueMetrics::register(self)?.publish(stats);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricType;

    /// Registration is all or nothing: a batch that fails after registering the queue's and
    /// the cache's metrics (as a pipeline's does when a worker thread cannot start) leaves the
    /// registry as it was: no family it created, no series it added to a family that was
    /// there, and the series that were there in place, with their values. No name a host can
    /// take makes `QueueMetrics::register` itself fail (the series its latency summary writes
    /// are refused to the host), so the batch's failure is provoked here, by its caller.
    #[test]
    fn a_failed_batch_takes_back_what_it_registered() {
        let registry = MetricsRegistry::new();
        let queued = [("status", "queued")];
        registry
            .gauge("memocache_jobs", "", &queued)
            .unwrap()
            .set(7.0);
        registry.counter("host_total", "", &[]).unwrap().inc();
        let before = registry.render_prometheus();
        let failed: Result<(), String> = registry.register_all(|batch| {
            QueueMetrics::register_in(batch).map_err(|e| e.to_string())?;
            CacheMetrics::register_in(batch).map_err(|e| e.to_string())?;
            Err("a later step failed".to_owned())
        });
        assert_eq!(failed, Err("a later step failed".to_owned()));
        assert_eq!(registry.render_prometheus(), before);
        assert_eq!(registry.metric_type("memocache_jobs_submitted_total"), None);
        assert_eq!(registry.metric_type("memocache_job_latency_seconds"), None);
        assert_eq!(
            registry.gauge("memocache_jobs", "", &queued).unwrap().get(),
            7.0
        );

        // The same registration, not failing, registers everything.
        QueueMetrics::register(&registry).unwrap();
        CacheMetrics::register(&registry).unwrap();
        assert_eq!(
            registry.metric_type("memocache_job_latency_seconds"),
            Some(MetricType::Histogram)
        );
        assert_eq!(
            registry.gauge("memocache_jobs", "", &queued).unwrap().get(),
            7.0
        );
    }
}
