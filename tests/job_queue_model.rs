//! A model test of JobQueue: random operation sequences against a model of which leases are
//! current, with the invariants checked after every step.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use memocache::{
    Cache, Clock, Job, JobId, JobPriority, JobQueue, JobStatus, JobType, Lease, ManualClock,
    RetryConfig, WorkerId,
};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Clone, Debug)]
enum Op {
    Submit { priority: u8, group: Option<u8> },
    Take { worker: u8 },
    Complete(Index),
    Fail(Index),
    Heartbeat(Index),
    Release(Index),
    Cancel(Index),
    Resubmit(Index),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..=3, prop::option::of(0u8..3))
            .prop_map(|(priority, group)| Op::Submit { priority, group }),
        3 => (0u8..3).prop_map(|worker| Op::Take { worker }),
        2 => any::<Index>().prop_map(Op::Complete),
        2 => any::<Index>().prop_map(Op::Fail),
        1 => any::<Index>().prop_map(Op::Heartbeat),
        1 => any::<Index>().prop_map(Op::Release),
        1 => any::<Index>().prop_map(Op::Cancel),
        1 => any::<Index>().prop_map(Op::Resubmit),
        2 => (0u64..4_000).prop_map(Op::Advance),
    ]
}

/// What the model knows.
#[derive(Default)]
struct Model {
    submitted: Vec<(JobId, Option<u8>)>,
    /// Every lease handed out, with its current deadline.
    leases: Vec<(Lease, memocache::Timestamp)>,
    /// The index in `leases` of each job's current lease, until it is completed, failed,
    /// released, cancelled or superseded.
    current: HashMap<JobId, usize>,
}

impl Model {
    fn valid(&self, i: usize, now: memocache::Timestamp) -> bool {
        let (lease, deadline) = &self.leases[i];
        self.current.get(&lease.job_id()) == Some(&i) && *deadline > now
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_the_lease_model(ops in prop::collection::vec(op(), 1..120)) {
        let clock = ManualClock::new();
        let queue = JobQueue::builder()
            .clock(Arc::new(clock.clone()))
            .retry(RetryConfig::fixed(2, Duration::from_secs(1)))
            .lease(Duration::from_secs(5))
            .cache(Cache::builder().max_bytes(1 << 20).build().expect("valid"))
            .build()
            .expect("valid");
        let mut m = Model::default();
        let group_of = |m: &Model, id: JobId| {
            m.submitted.iter().find(|(j, _)| *j == id).and_then(|(_, g)| *g)
        };

        for op in ops {
            let now = clock.now();
            match op {
                Op::Submit { priority, group } => {
                    let p = JobPriority::try_from(priority).expect("1..=3");
                    let job = match group {
                        Some(g) => Job::transcription(&format!("{g:02x}").repeat(32), "en", &b""[..])
                            .expect("valid"),
                        None => Job::new(JobType::Indexing, &b""[..]),
                    };
                    let id = queue.submit(job.with_priority(p)).expect("capacity is ample");
                    m.submitted.push((id, group));
                }
                Op::Take { worker } => {
                    let worker = WorkerId::new(format!("w{worker}"));
                    if let Some(lease) = queue.try_next(&worker) {
                        let id = lease.job_id();
                        // Never leased twice: the previous lease (if any) must be dead.
                        if let Some(&prev) = m.current.get(&id) {
                            prop_assert!(!m.valid(prev, now), "{} leased while its lease is live", id);
                        }
                        // One execution per content key.
                        if let Some(g) = group_of(&m, id) {
                            for (&other, &i) in &m.current {
                                prop_assert!(
                                    other == id || group_of(&m, other) != Some(g) || !m.valid(i, now),
                                    "group {} leased twice at once", g
                                );
                            }
                        }
                        prop_assert_eq!(queue.status(id), Some(JobStatus::Processing));
                        prop_assert_eq!(lease.worker(), &worker);
                        let deadline = lease.deadline();
                        m.leases.push((lease, deadline));
                        m.current.insert(id, m.leases.len() - 1);
                    }
                }
                Op::Complete(i) | Op::Fail(i) | Op::Heartbeat(i) | Op::Release(i)
                    if !m.leases.is_empty() =>
                {
                    let i = i.index(m.leases.len());
                    let expect_ok = m.valid(i, now);
                    let lease = m.leases[i].0.clone();
                    let id = lease.job_id();
                    let ok = match op {
                        Op::Complete(_) => queue.complete(&lease, vec![1].into()).is_ok(),
                        Op::Fail(_) => queue.fail(&lease, "x").is_ok(),
                        Op::Release(_) => queue.release(&lease).is_ok(),
                        _ => match queue.heartbeat(&lease) {
                            Ok(deadline) => {
                                m.leases[i].1 = deadline;
                                true
                            }
                            Err(_) => false,
                        },
                    };
                    prop_assert_eq!(ok, expect_ok, "{:?} on lease {} of {}", op, i, id);
                    let status = queue.status(id);
                    if ok && !matches!(op, Op::Heartbeat(_)) {
                        m.current.remove(&id);
                        let want: &[JobStatus] = match op {
                            Op::Complete(_) => &[JobStatus::Completed],
                            Op::Fail(_) => &[JobStatus::Queued, JobStatus::Failed],
                            _ => &[JobStatus::Queued],
                        };
                        prop_assert!(status.is_some_and(|s| want.contains(&s)), "{:?}", status);
                    }
                }
                Op::Cancel(i) if !m.submitted.is_empty() => {
                    let (id, _) = m.submitted[i.index(m.submitted.len())];
                    let before = queue.status(id).expect("known");
                    let ok = queue.cancel(id).is_ok();
                    prop_assert_eq!(ok, !before.is_terminal());
                    if ok {
                        m.current.remove(&id);
                        prop_assert_eq!(queue.status(id), Some(JobStatus::Cancelled));
                    }
                }
                Op::Resubmit(i) if !m.submitted.is_empty() => {
                    let (id, _) = m.submitted[i.index(m.submitted.len())];
                    let before = queue.status(id).expect("known");
                    let ok = queue.resubmit_dead_letter(id).is_ok();
                    prop_assert_eq!(ok, before == JobStatus::Failed);
                }
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                _ => {}
            }

            // Invariants: gauges match the statuses; nothing is lost; failed == dead letters.
            let now = clock.now();
            let stats = queue.stats();
            let mut by_status: HashMap<JobStatus, usize> = HashMap::new();
            for &(id, _) in &m.submitted {
                let status = queue.status(id);
                prop_assert!(status.is_some(), "{} was lost", id);
                if let Some(s) = status {
                    *by_status.entry(s).or_default() += 1;
                }
            }
            let count = |s| by_status.get(&s).copied().unwrap_or(0);
            let live = m.current.keys().filter(|id| m.valid(m.current[*id], now)).count();
            prop_assert_eq!(stats.processing, count(JobStatus::Processing));
            prop_assert_eq!(stats.processing, live);
            prop_assert_eq!(stats.queued, count(JobStatus::Queued));
            let dead: HashSet<JobId> = queue.dead_letters().iter().map(Job::id).collect();
            prop_assert_eq!(dead.len(), count(JobStatus::Failed));
            prop_assert_eq!(stats.dead_letters, dead.len());
        }
    }
}
