//! The crate's own metric families, in one table: the cache's and the job queue's (registered
//! by [`wiring`](super::wiring)) and a pipeline's.
//!
//! Each family's name, type, label names and help are written here once, and registration
//! reads them from here: [`CacheMetrics`](super::wiring::CacheMetrics),
//! [`QueueMetrics`](super::wiring::QueueMetrics) and the pipeline name a family by its entry,
//! never by a string of their own. The registry consults the same table wherever a host
//! names one of these families, so that it is checked against what the crate will register,
//! whether or not the crate has registered it yet: a declaration
//! ([`MetricsRegistry::declare`](super::MetricsRegistry::declare)), a plain registration
//! ([`MetricsRegistry::counter`](super::MetricsRegistry::counter) and the others: a family
//! created under one of these names gets the table's type, help and label names, whoever
//! creates it, and the table is read only then, not on each lookup of a registered family),
//! a plain registration or declaration of the `_sum` or `_count` one of its histograms
//! writes, refused ([`MetricError::NameCollision`](super::MetricError::NameCollision)) so
//! that the crate's registration of the histogram never fails on it later, and an alert rule
//! on one, or on the `_sum`, `_count` or `_bucket` of one of its histograms
//! ([`AlertEvaluator::add_rule`](super::AlertEvaluator::add_rule)). The metrics
//! module knows the pipeline's families without depending on the pipeline.

use std::collections::BTreeSet;

use super::MetricError;
use super::MetricType::{self, Counter, Gauge, Histogram};

/// One of the crate's own metric families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CrateFamily {
    /// The metric name.
    pub(crate) name: &'static str,
    /// Its type.
    pub(crate) kind: MetricType,
    /// The label names its series carry, sorted: its series may carry these and no other.
    pub(crate) labels: &'static [&'static str],
    /// The help text rendered for it.
    pub(crate) help: &'static str,
    /// Whether a series of it (a gauge's) starts as NaN, "no data", rather than 0: one whose
    /// 0 would be read as a measurement (a hit ratio of 0 fires a "below X" rule) before the
    /// crate first publishes it. Whoever creates the series, the crate or a host registering
    /// the family first: the crate's registration never writes a series it finds.
    pub(crate) starts_as_no_data: bool,
}

impl CrateFamily {
    /// This gauge family, its series starting as NaN ("no data") rather than 0.
    const fn starting_as_no_data(self) -> CrateFamily {
        CrateFamily {
            starts_as_no_data: true,
            ..self
        }
    }

    /// Its label names, as a registry family holds them when fixed.
    pub(crate) fn label_set(&self) -> BTreeSet<String> {
        self.labels.iter().map(|&label| label.to_owned()).collect()
    }

    /// The error refusing it as a `kind` whose series carry `labels`: declared so, or
    /// registered as a series with them.
    pub(crate) fn conflict(
        &self,
        kind: MetricType,
        labels: impl IntoIterator<Item = String>,
    ) -> MetricError {
        MetricError::CrateFamilyConflict {
            metric: self.name.to_owned(),
            kind: self.kind,
            labels: self.label_set().into_iter().collect(),
            declared_kind: kind,
            declared: labels.into_iter().collect(),
        }
    }
}

/// An entry of the table.
const fn family(
    kind: MetricType,
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> CrateFamily {
    CrateFamily {
        name,
        kind,
        labels,
        help,
        starts_as_no_data: false,
    }
}

// --- the cache (`CacheMetrics`) ---------------------------------------------------------------

pub(crate) const CACHE_HITS: CrateFamily = family(
    Counter,
    "memocache_cache_hits_total",
    &[],
    "Cache reads that found a live value.",
);
pub(crate) const CACHE_MISSES: CrateFamily = family(
    Counter,
    "memocache_cache_misses_total",
    &[],
    "Cache reads that found no live value.",
);
pub(crate) const CACHE_INSERTS: CrateFamily = family(
    Counter,
    "memocache_cache_inserts_total",
    &[],
    "Inserts of a key that was absent.",
);
pub(crate) const CACHE_UPDATES: CrateFamily = family(
    Counter,
    "memocache_cache_updates_total",
    &[],
    "Inserts that replaced a live value.",
);
pub(crate) const CACHE_EVICTIONS: CrateFamily = family(
    Counter,
    "memocache_cache_evictions_total",
    &["cause"],
    "Entries the cache evicted, by cause (size: over budget, expired: TTL ran out).",
);
pub(crate) const CACHE_REMOVALS: CrateFamily = family(
    Counter,
    "memocache_cache_removals_total",
    &[],
    "Entries removed explicitly (remove, clear).",
);
pub(crate) const CACHE_LOADS: CrateFamily = family(
    Counter,
    "memocache_cache_loads_total",
    &[],
    "Loader runs that produced a value.",
);
pub(crate) const CACHE_LOAD_FAILURES: CrateFamily = family(
    Counter,
    "memocache_cache_load_failures_total",
    &[],
    "Loader runs that failed or panicked.",
);
pub(crate) const CACHE_ENTRIES: CrateFamily =
    family(Gauge, "memocache_cache_entries", &[], "Live entries.");
pub(crate) const CACHE_BYTES: CrateFamily = family(
    Gauge,
    "memocache_cache_size_bytes",
    &[],
    "Bytes charged against the cache's budget.",
);
pub(crate) const CACHE_HIT_RATIO: CrateFamily = family(
    Gauge,
    "memocache_cache_hit_ratio",
    &[],
    "Hits / (hits + misses) since the cache was built; NaN before the first read.",
)
.starting_as_no_data();

// --- the job queue (`QueueMetrics`) -----------------------------------------------------------

pub(crate) const JOBS: CrateFamily = family(
    Gauge,
    "memocache_jobs",
    &["status"],
    "Jobs the queue holds, by status (queued: waiting, including delayed retries and \
     coalesced followers; processing: leased to a worker; failed: in the dead letter list).",
);
pub(crate) const JOBS_DELAYED: CrateFamily = family(
    Gauge,
    "memocache_jobs_delayed",
    &[],
    "Of the queued jobs, those waiting out a retry delay.",
);
pub(crate) const JOBS_COALESCED_WAITING: CrateFamily = family(
    Gauge,
    "memocache_jobs_coalesced_waiting",
    &[],
    "Of the queued jobs, those coalesced onto an identical job.",
);
pub(crate) const JOB_WAITERS: CrateFamily = family(
    Gauge,
    "memocache_job_waiters",
    &[],
    "Callers blocked in JobQueue::wait until a job ends.",
);
pub(crate) const JOBS_SUBMITTED: CrateFamily = family(
    Counter,
    "memocache_jobs_submitted_total",
    &[],
    "Jobs the queue accepted.",
);
pub(crate) const JOBS_REJECTED: CrateFamily = family(
    Counter,
    "memocache_jobs_rejected_total",
    &[],
    "Submits refused because the queue was full (backpressure).",
);
pub(crate) const JOBS_FINISHED: CrateFamily = family(
    Counter,
    "memocache_jobs_finished_total",
    &["status"],
    "Jobs that reached a terminal status, by status.",
);
pub(crate) const JOB_RETRIES: CrateFamily = family(
    Counter,
    "memocache_job_retries_total",
    &[],
    "Retries scheduled after a failed attempt or an expired lease.",
);
pub(crate) const JOB_DEAD_LETTERS: CrateFamily = family(
    Counter,
    "memocache_job_dead_letters_total",
    &[],
    "Jobs moved to the dead letter list after exhausting their retries.",
);
pub(crate) const JOB_DEAD_LETTERS_EVICTED: CrateFamily = family(
    Counter,
    "memocache_job_dead_letters_evicted_total",
    &[],
    "Dead letters dropped because the list was full.",
);
pub(crate) const JOB_LEASE_EXPIRATIONS: CrateFamily = family(
    Counter,
    "memocache_job_lease_expirations_total",
    &[],
    "Leases that expired (a worker died or hung).",
);
pub(crate) const JOB_MEMO_HITS: CrateFamily = family(
    Counter,
    "memocache_job_memo_hits_total",
    &[],
    "Jobs completed at submit from the memo store, without a worker.",
);
pub(crate) const JOB_COALESCED: CrateFamily = family(
    Counter,
    "memocache_job_coalesced_total",
    &[],
    "Jobs coalesced onto an identical queued or running job.",
);
pub(crate) const JOB_MEMO_STORE_FAILURES: CrateFamily = family(
    Counter,
    "memocache_job_memo_store_failures_total",
    &[],
    "Results the memo store refused to store, or panicked on.",
);
pub(crate) const JOB_MEMO_LOOKUP_FAILURES: CrateFamily = family(
    Counter,
    "memocache_job_memo_lookup_failures_total",
    &[],
    "Memo store lookups that panicked (the job ran as if nothing was stored).",
);
pub(crate) const JOB_LATENCY: CrateFamily = family(
    Histogram,
    "memocache_job_latency_seconds",
    &[],
    "Seconds from submit to completion of jobs run by a worker or coalesced onto one (memo \
     hits excluded).",
);

// --- a pipeline -------------------------------------------------------------------------------

pub(crate) const TRANSCRIPTIONS: CrateFamily = family(
    Counter,
    "memocache_transcriptions_total",
    &["source"],
    "Transcripts served, by where they came from.",
);
pub(crate) const TRANSCRIPTION_DURATION: CrateFamily = family(
    Histogram,
    "memocache_transcription_duration_seconds",
    &[],
    "Time to serve one file's transcript, cache hits included.",
);
pub(crate) const TRANSCRIPTION_SAVED: CrateFamily = family(
    Gauge,
    "memocache_transcription_saved_seconds",
    &[],
    "Compute time that cache hits saved since the pipeline started.",
);

/// Every family of the table, which [`crate_family`] looks names up in. One left out would
/// be declarable or registrable otherwise than the crate registers it: `tests/pipeline.rs`
/// declares every family a pipeline renders, and expects each refused with another label.
static CRATE_FAMILIES: [CrateFamily; 30] = [
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_INSERTS,
    CACHE_UPDATES,
    CACHE_EVICTIONS,
    CACHE_REMOVALS,
    CACHE_LOADS,
    CACHE_LOAD_FAILURES,
    CACHE_ENTRIES,
    CACHE_BYTES,
    CACHE_HIT_RATIO,
    JOBS,
    JOBS_DELAYED,
    JOBS_COALESCED_WAITING,
    JOB_WAITERS,
    JOBS_SUBMITTED,
    JOBS_REJECTED,
    JOBS_FINISHED,
    JOB_RETRIES,
    JOB_DEAD_LETTERS,
    JOB_DEAD_LETTERS_EVICTED,
    JOB_LEASE_EXPIRATIONS,
    JOB_MEMO_HITS,
    JOB_COALESCED,
    JOB_MEMO_STORE_FAILURES,
    JOB_MEMO_LOOKUP_FAILURES,
    JOB_LATENCY,
    TRANSCRIPTIONS,
    TRANSCRIPTION_DURATION,
    TRANSCRIPTION_SAVED,
];

/// The crate's family named `name`, if it is one.
pub(crate) fn crate_family(name: &str) -> Option<&'static CrateFamily> {
    CRATE_FAMILIES.iter().find(|family| family.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `declare` compares a declaration's sorted label names with the table's, and looks
    /// names up in it: each name once, its labels sorted and each once.
    #[test]
    fn names_are_unique_and_labels_sorted() {
        for (i, family) in CRATE_FAMILIES.iter().enumerate() {
            assert!(
                CRATE_FAMILIES[i + 1..]
                    .iter()
                    .all(|f| f.name != family.name),
                "{} twice",
                family.name
            );
            assert!(
                family.labels.windows(2).all(|w| w[0] < w[1]),
                "{}",
                family.name
            );
            assert_eq!(crate_family(family.name), Some(family));
            // A host's histogram `h` writes `h_sum` and `h_count`, and is checked only
            // against the families registered: one of the table's named so would have the
            // crate's registration fail on the host's histogram later.
            assert!(
                !family.name.ends_with("_sum") && !family.name.ends_with("_count"),
                "{}",
                family.name
            );
        }
        assert_eq!(crate_family("memocache_jobs_total"), None);
    }
}
