//! A model test of JobQueue: random operation sequences against a model of which leases are
//! current, with the invariants checked after every step.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use memocache::{
    Cache, CacheKey, Clock, Job, JobId, JobPriority, JobQueue, JobStatus, JobType, Lease,
    ManualClock, MemoStore, RetryConfig, WorkerId,
};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Clone, Debug)]
enum Op {
    Submit {
        priority: u8,
        group: Option<u8>,
    },
    Take {
        worker: u8,
    },
    /// A take of some job types only: bit 0 Indexing, bit 1 Transcription.
    TakeFor {
        worker: u8,
        types: u8,
    },
    Complete(Index),
    /// `complete_and_next`: the completion, then a take by the same worker, in one call.
    CompleteAndNext(Index),
    Fail(Index),
    Heartbeat(Index),
    Release(Index),
    Cancel(Index),
    Resubmit(Index),
    Advance(u64),
    /// The transcript of file `g` is stored in the memo cache some other way (not by the
    /// queue), as a host inserting it directly would.
    Store(u8),
    /// From now on the memo store's calls panic as these bits say (see [`Faults`]).
    Faults(u8),
}

/// A new job: a transcription of file `g` (identical ones coalesce) or an indexing job.
fn job_of(group: Option<u8>) -> Job {
    match group {
        Some(g) => Job::transcription(&file_hash(g), "en", &b""[..]).expect("valid"),
        None => Job::new(JobType::Indexing, &b""[..]),
    }
}

/// The content hash of file `g`.
fn file_hash(g: u8) -> String {
    format!("{g:02x}").repeat(32)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..=3, prop::option::of(0u8..3))
            .prop_map(|(priority, group)| Op::Submit { priority, group }),
        3 => (0u8..3).prop_map(|worker| Op::Take { worker }),
        1 => (0u8..3, 1u8..=3).prop_map(|(worker, types)| Op::TakeFor { worker, types }),
        2 => any::<Index>().prop_map(Op::Complete),
        1 => any::<Index>().prop_map(Op::CompleteAndNext),
        2 => any::<Index>().prop_map(Op::Fail),
        1 => any::<Index>().prop_map(Op::Heartbeat),
        1 => any::<Index>().prop_map(Op::Release),
        1 => any::<Index>().prop_map(Op::Cancel),
        1 => any::<Index>().prop_map(Op::Resubmit),
        2 => (0u64..4_000).prop_map(Op::Advance),
        1 => (0u8..3).prop_map(Op::Store),
        1 => (0u8..8).prop_map(Op::Faults),
    ]
}

/// Which calls of the memo store panic: bit 0 lookups, bit 1 peeks, bit 2 stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Faults(u8);

impl Faults {
    fn lookup(self) -> bool {
        self.0 & 1 != 0
    }

    fn peek(self) -> bool {
        self.0 & 2 != 0
    }

    fn store(self) -> bool {
        self.0 & 4 != 0
    }
}

/// The memo cache as a host with a buggy store would wrap it: a call panics (before it
/// reaches the cache, so the cache counts nothing) while its fault is set. The queue must
/// treat a panicking lookup or peek as "not there" and a panicking store as a failed one,
/// and lose nothing (see *A store that panics* in `memocache::job::memo`).
#[derive(Debug)]
struct FaultyStore {
    cache: Cache,
    faults: AtomicU8,
}

impl FaultyStore {
    fn faults(&self) -> Faults {
        Faults(self.faults.load(Ordering::Relaxed))
    }

    fn fail(&self, call: &str) -> ! {
        // Unwinds without the panic hook, so that thousands of cases print nothing.
        std::panic::resume_unwind(Box::new(format!("the memo store's {call} panicked")))
    }
}

impl MemoStore for FaultyStore {
    fn lookup(&self, key: &CacheKey) -> Option<Bytes> {
        if self.faults().lookup() {
            self.fail("lookup");
        }
        self.cache.get(key)
    }

    fn peek(&self, key: &CacheKey) -> Option<Bytes> {
        if self.faults().peek() {
            self.fail("peek");
        }
        self.cache.peek(key)
    }

    fn store(&self, key: CacheKey, value: Bytes) -> Result<(), memocache::job::MemoStoreError> {
        if self.faults().store() {
            self.fail("store");
        }
        Ok(self.cache.insert(key, value)?)
    }
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
                    let job = job_of(group);
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

/// The job types bits `types` name (bit 0 Indexing, bit 1 Transcription), for a typed take.
fn types_of(types: u8) -> Vec<JobType> {
    [(1, JobType::Indexing), (2, JobType::Transcription)]
        .into_iter()
        .filter(|&(bit, _)| types & bit != 0)
        .map(|(_, t)| t)
        .collect()
}

/// Whether a taker of `types` (as in [`types_of`]) takes a job of `group` (see [`job_of`]).
fn accepts(types: u8, group: Option<u8>) -> bool {
    types & if group.is_some() { 2 } else { 1 } != 0
}

/// Checks a take by `worker` that got `got` against the model's pick `want`, and records the
/// lease in the model and in `leases`.
fn check_take(
    m: &mut reference::Model,
    leases: &mut Vec<Lease>,
    worker: &WorkerId,
    got: Option<Lease>,
    want: Option<usize>,
    now: u64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        got.as_ref().map(Lease::job_id),
        want.map(|j| m.jobs[j].id),
        "take"
    );
    if let (Some(lease), Some(j)) = (got, want) {
        prop_assert_eq!(lease.worker(), worker);
        prop_assert_eq!(lease.attempt(), m.jobs[j].retries);
        prop_assert_eq!(lease.priority(), m.effective(j), "taken at");
        let n = m.take(j, now);
        prop_assert_eq!(n, leases.len());
        leases.push(lease);
    }
    Ok(())
}

/// A reference model of the whole queue, one job at a time and as plainly as possible: where
/// each job is, in which order the next take must pick, what every bound drops, and every
/// count, the memo cache's hits and misses included. [`queue_matches_the_reference_model`] runs the same random operations as the lease
/// model above against it, on small bounds (capacity, finished records kept, dead letters
/// kept) so that every refusal and every drop is exercised.
mod reference {
    use std::collections::{HashMap, VecDeque};

    use memocache::{JobId, JobPriority, JobStatus, QueueStats};

    pub const LEASE: u64 = 5_000_000_000;
    /// The first retry's delay: the queue's backoff is exponential, so retry `n` (from 0)
    /// waits `DELAY << n`, `RetryConfig::calculate_delay(n)`.
    pub const DELAY: u64 = 1_000_000_000;
    pub const MAX_RETRIES: u32 = 2;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Place {
        /// Ready since this time, in turn `seq`.
        Ready { seq: u64, since: u64 },
        /// Waiting out a retry until `due`, filed `seq`-th.
        Delayed { due: u64, seq: u64 },
        /// Leased under the model's lease number `lease`, until `deadline`, linked `link`-th;
        /// taken from turn `seq`, ready since `since`, which a release gives back.
        Leased {
            lease: usize,
            deadline: u64,
            link: u64,
            seq: u64,
            since: u64,
        },
        /// Coalesced onto the job at this index at time `since`, in turn `seq` (which it keeps
        /// if it takes over as leader).
        Follower { leader: usize, seq: u64, since: u64 },
        /// In the dead-letter list.
        Dead,
        /// In the finished ring.
        Finished,
        /// Dropped by a bound (ring or dead-letter list): the queue no longer knows it.
        Gone,
    }

    pub struct MJob {
        pub id: JobId,
        pub group: Option<u8>,
        /// As submitted: what `get` reports. The job waits at [`Model::effective`].
        pub priority: JobPriority,
        pub status: JobStatus,
        pub retries: u32,
        pub place: Place,
        pub followers: Vec<usize>,
    }

    /// Why the model expects a lease to be refused.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Refusal {
        Stale,
        NotFound,
    }

    pub struct Model {
        pub capacity: usize,
        pub retain: usize,
        pub dead_capacity: usize,
        pub aging: Option<u64>,
        pub jobs: Vec<MJob>,
        /// The job each lease number was handed out for.
        pub lease_jobs: Vec<usize>,
        pub leaders: HashMap<u8, usize>,
        pub memo: Vec<u8>,
        /// Which calls of the memo store panic (the test's `FaultyStore`): a lookup or a peek
        /// that panics answers "not there" and counts nothing in the cache; a store that
        /// panics stores nothing and counts a store failure.
        pub faults: super::Faults,
        pub ring: VecDeque<usize>,
        pub dead: VecDeque<usize>,
        pub counter: u64,
        pub resubmitted: u64,
        pub stats: QueueStats,
        /// The hits and misses the memo cache must count: one a submit (or re-submit) that
        /// the memo answers or that queues work, none for a follower or a refusal, however
        /// the queue checked for room (see *Counting* in `memocache::job::memo`).
        pub cache_hits: u64,
        pub cache_misses: u64,
    }

    impl Model {
        pub fn new(
            capacity: usize,
            retain: usize,
            dead_capacity: usize,
            aging: Option<u64>,
        ) -> Self {
            Model {
                capacity,
                retain,
                dead_capacity,
                aging,
                jobs: Vec::new(),
                lease_jobs: Vec::new(),
                leaders: HashMap::new(),
                memo: Vec::new(),
                faults: super::Faults::default(),
                ring: VecDeque::new(),
                dead: VecDeque::new(),
                counter: 0,
                resubmitted: 0,
                stats: QueueStats::default(),
                cache_hits: 0,
                cache_misses: 0,
            }
        }

        fn tick(&mut self) -> u64 {
            self.counter += 1;
            self.counter
        }

        pub fn live(&self) -> usize {
            self.jobs
                .iter()
                .filter(|j| {
                    matches!(
                        j.place,
                        Place::Ready { .. }
                            | Place::Delayed { .. }
                            | Place::Leased { .. }
                            | Place::Follower { .. }
                    )
                })
                .count()
        }

        fn enqueue(&mut self, j: usize, now: u64) {
            let seq = self.tick();
            self.jobs[j].place = Place::Ready { seq, since: now };
        }

        /// The priority job `j` waits at: the highest of its own and its waiting followers'
        /// (priority inheritance, for as long as the follower waits). Its turn and age are its
        /// own whatever its priority.
        pub fn effective(&self, j: usize) -> JobPriority {
            let job = &self.jobs[j];
            job.followers
                .iter()
                .map(|&f| self.jobs[f].priority)
                .fold(job.priority, JobPriority::max)
        }

        fn finish(&mut self, j: usize) {
            self.jobs[j].place = Place::Finished;
            self.ring.push_back(j);
            while self.ring.len() > self.retain {
                let old = self.ring.pop_front().expect("non-empty");
                self.jobs[old].place = Place::Gone;
            }
        }

        fn bury(&mut self, j: usize) {
            self.jobs[j].status = JobStatus::Failed;
            self.jobs[j].place = Place::Dead;
            self.stats.failed += 1;
            self.dead.push_back(j);
            while self.dead.len() > self.dead_capacity {
                let old = self.dead.pop_front().expect("non-empty");
                self.jobs[old].place = Place::Gone;
                self.stats.dead_letters_evicted += 1;
            }
        }

        /// A failed attempt of the leased job `j` (its lease already ended).
        fn retry_or_bury(&mut self, j: usize, now: u64) {
            if self.jobs[j].retries < MAX_RETRIES {
                // Retry number `retries` (0 for the first) waits `calculate_delay(retries)`.
                let due = now + (DELAY << self.jobs[j].retries);
                self.jobs[j].retries += 1;
                self.jobs[j].status = JobStatus::Queued;
                self.stats.retries += 1;
                let seq = self.tick();
                self.jobs[j].place = Place::Delayed { due, seq };
                return;
            }
            if let Some(g) = self.jobs[j].group {
                self.leaders.remove(&g);
            }
            let followers = std::mem::take(&mut self.jobs[j].followers);
            self.bury(j);
            for f in followers {
                self.bury(f);
            }
        }

        /// Due retries become ready and expired leases are failed attempts, each at its own
        /// time and in time order (a retry first on a tie): an expired lease's retry is due a
        /// backoff after its deadline, and may itself fall due by `now`.
        pub fn maintain(&mut self, now: u64) {
            loop {
                let retry = self
                    .jobs
                    .iter()
                    .enumerate()
                    .filter_map(|(j, job)| match job.place {
                        Place::Delayed { due, seq } if due <= now => Some((due, seq, j)),
                        _ => None,
                    })
                    .min();
                let expired = self
                    .jobs
                    .iter()
                    .enumerate()
                    .filter_map(|(j, job)| match job.place {
                        Place::Leased { deadline, link, .. } if deadline <= now => {
                            Some((deadline, link, j))
                        }
                        _ => None,
                    })
                    .min();
                match (retry, expired) {
                    (Some((due, _, j)), e) if e.is_none_or(|(deadline, _, _)| due <= deadline) => {
                        self.enqueue(j, due);
                    }
                    (_, Some((deadline, _, j))) => {
                        self.stats.lease_expirations += 1;
                        self.retry_or_bury(j, deadline);
                    }
                    _ => break,
                }
            }
        }

        /// Completes the queued job `j` from the memo: it takes no place.
        fn memo_hit(&mut self, j: usize) {
            self.jobs[j].status = JobStatus::Completed;
            self.stats.memo_hits += 1;
            self.stats.completed += 1;
            self.finish(j);
        }

        /// Whether a full queue still accepts job `j`: only if the memo answers it (a peek
        /// that panics does not, and is counted). Only a job with a key is peeked.
        fn answered_when_full(&mut self, j: usize) -> bool {
            let Some(g) = self.jobs[j].group else {
                return false;
            };
            if self.faults.peek() {
                self.stats.memo_lookup_failures += 1;
                return false;
            }
            self.memo.contains(&g)
        }

        /// The lookup after a peek that found the key: counts the hit unless it panics (the
        /// peeked result answers the job either way; the panic is counted).
        fn count_peeked_hit(&mut self) {
            if self.faults.lookup() {
                self.stats.memo_lookup_failures += 1;
            } else {
                self.cache_hits += 1;
            }
        }

        /// Places a queued job: follower, memo hit or ready.
        fn admit(&mut self, j: usize, now: u64) {
            if let Some(g) = self.jobs[j].group {
                if let Some(&leader) = self.leaders.get(&g) {
                    let seq = self.tick();
                    self.jobs[j].place = Place::Follower {
                        leader,
                        seq,
                        since: now,
                    };
                    self.jobs[leader].followers.push(j);
                    self.stats.coalesced += 1;
                    return;
                }
                // A lookup that panics is "not there", and the cache counts nothing; the
                // queue counts the panic.
                if self.faults.lookup() {
                    self.stats.memo_lookup_failures += 1;
                } else {
                    if self.memo.contains(&g) {
                        self.cache_hits += 1;
                        self.memo_hit(j);
                        return;
                    }
                    self.cache_misses += 1;
                }
                self.leaders.insert(g, j);
            }
            self.enqueue(j, now);
        }

        /// Whether a submit is accepted; if so the job is at index `jobs.len() - 1`.
        pub fn submit(
            &mut self,
            id: JobId,
            group: Option<u8>,
            priority: JobPriority,
            now: u64,
        ) -> bool {
            self.jobs.push(MJob {
                id,
                group,
                priority,
                status: JobStatus::Queued,
                retries: 0,
                place: Place::Gone,
                followers: Vec::new(),
            });
            let j = self.jobs.len() - 1;
            if self.live() >= self.capacity {
                if !self.answered_when_full(j) {
                    self.jobs.pop();
                    self.stats.rejected_full += 1;
                    return false;
                }
                self.stats.submitted += 1;
                self.count_peeked_hit();
                self.memo_hit(j);
                return true;
            }
            self.stats.submitted += 1;
            self.admit(j, now);
            true
        }

        /// The job the next take of the jobs whose group `accepts` must lease: highest
        /// effective priority, then oldest turn.
        pub fn pick(&self, now: u64, accepts: impl Fn(Option<u8>) -> bool) -> Option<usize> {
            self.jobs
                .iter()
                .enumerate()
                .filter_map(|(j, job)| match job.place {
                    Place::Ready { seq, since } if accepts(job.group) => {
                        let aged = self.aging.map_or(0, |step| {
                            let waited = now - since;
                            usize::from(waited >= step) + usize::from(waited >= 2 * step)
                        });
                        let p = usize::from(self.effective(j).value()) - 1;
                        Some(((p + aged).min(2), std::cmp::Reverse(seq), j))
                    }
                    _ => None,
                })
                .max()
                .map(|(_, _, j)| j)
        }

        /// Leases job `j` (the pick); returns the lease number.
        pub fn take(&mut self, j: usize, now: u64) -> usize {
            let Place::Ready { seq, since } = self.jobs[j].place else {
                unreachable!("only a ready job is picked");
            };
            let lease = self.lease_jobs.len();
            self.lease_jobs.push(j);
            self.jobs[j].status = JobStatus::Processing;
            self.lease_until(j, lease, seq, since, now + LEASE);
            lease
        }

        /// Puts job `j` under lease `lease` until `deadline`, linked last, keeping the turn
        /// `seq` and the wait `since` it was taken with.
        fn lease_until(&mut self, j: usize, lease: usize, seq: u64, since: u64, deadline: u64) {
            let link = self.tick();
            self.jobs[j].place = Place::Leased {
                lease,
                deadline,
                link,
                seq,
                since,
            };
        }

        /// Whether lease `lease` is current, else how it is refused.
        pub fn check(&self, lease: usize) -> Result<usize, Refusal> {
            let j = self.lease_jobs[lease];
            match self.jobs[j].place {
                Place::Leased { lease: l, .. } if l == lease => Ok(j),
                Place::Gone => Err(Refusal::NotFound),
                _ => Err(Refusal::Stale),
            }
        }

        pub fn complete(&mut self, j: usize) {
            self.jobs[j].status = JobStatus::Completed;
            self.stats.completed += 1;
            self.finish(j);
            if let Some(g) = self.jobs[j].group {
                if self.faults.store() {
                    self.stats.memo_store_failures += 1;
                } else if !self.memo.contains(&g) {
                    self.memo.push(g);
                }
                self.leaders.remove(&g);
            }
            for f in std::mem::take(&mut self.jobs[j].followers) {
                self.jobs[f].status = JobStatus::Completed;
                self.stats.completed += 1;
                self.finish(f);
            }
        }

        pub fn fail(&mut self, j: usize, now: u64) {
            self.retry_or_bury(j, now);
        }

        pub fn heartbeat(&mut self, j: usize, now: u64) -> u64 {
            let Place::Leased {
                lease, seq, since, ..
            } = self.jobs[j].place
            else {
                unreachable!("checked");
            };
            self.lease_until(j, lease, seq, since, now + LEASE);
            now + LEASE
        }

        /// Gives leased job `j` back unrun: it keeps the turn and the age it was taken with.
        pub fn release(&mut self, j: usize) {
            let Place::Leased { seq, since, .. } = self.jobs[j].place else {
                unreachable!("checked");
            };
            self.jobs[j].status = JobStatus::Queued;
            self.jobs[j].place = Place::Ready { seq, since };
        }

        /// `Ok` if job `j` is cancelled; `Err(true)` if it is unknown, `Err(false)` if it is
        /// terminal.
        pub fn cancel(&mut self, j: usize) -> Result<(), bool> {
            match self.jobs[j].place {
                Place::Gone => return Err(true),
                Place::Dead | Place::Finished => return Err(false),
                Place::Follower { leader, .. } => self.jobs[leader].followers.retain(|&f| f != j),
                _ => {}
            }
            self.jobs[j].status = JobStatus::Cancelled;
            self.stats.cancelled += 1;
            let followers = std::mem::take(&mut self.jobs[j].followers);
            let group = self.jobs[j].group;
            let leads = group.is_some_and(|g| self.leaders.get(&g) == Some(&j));
            self.finish(j);
            if let (true, Some(g)) = (leads, group) {
                self.leaders.remove(&g);
                // One lookup for all the followers, if any wait: a hit, or a miss for the
                // one that takes over and runs.
                // (A lookup that panics is "not there", counts nothing in the cache, and
                // is counted by the queue.)
                let asked = !followers.is_empty();
                if asked && self.faults.lookup() {
                    self.stats.memo_lookup_failures += 1;
                }
                let looked = asked && !self.faults.lookup();
                if looked && self.memo.contains(&g) {
                    // Stored meanwhile: the followers are answered, none runs.
                    self.cache_hits += 1;
                    for f in followers {
                        self.memo_hit(f);
                    }
                } else if let Some((&first, rest)) = followers.split_first() {
                    // The first follower takes over with its own turn and age, the others
                    // follow it.
                    if looked {
                        self.cache_misses += 1;
                    }
                    self.leaders.insert(g, first);
                    let Place::Follower { seq, since, .. } = self.jobs[first].place else {
                        unreachable!("a leader's followers follow it");
                    };
                    self.jobs[first].place = Place::Ready { seq, since };
                    for &f in rest {
                        if let Place::Follower { leader, .. } = &mut self.jobs[f].place {
                            *leader = first;
                        }
                    }
                    self.jobs[first].followers = rest.to_vec();
                }
            }
            Ok(())
        }

        /// `Ok` if dead letter `j` is queued again; `Err(true)` if it is not a dead letter,
        /// `Err(false)` if the queue is full.
        pub fn resubmit(&mut self, j: usize, now: u64) -> Result<(), bool> {
            if self.jobs[j].place != Place::Dead {
                return Err(true);
            }
            let full = self.live() >= self.capacity;
            if full && !self.answered_when_full(j) {
                self.stats.rejected_full += 1;
                return Err(false);
            }
            self.dead.retain(|&d| d != j);
            self.jobs[j].status = JobStatus::Queued;
            self.jobs[j].retries = 0;
            self.resubmitted += 1;
            if full {
                self.count_peeked_hit();
                self.memo_hit(j);
            } else {
                self.admit(j, now);
            }
            Ok(())
        }

        /// The gauges and totals the queue must report.
        pub fn expected_stats(&self) -> QueueStats {
            let count =
                |f: &dyn Fn(&Place) -> bool| self.jobs.iter().filter(|j| f(&j.place)).count();
            let mut stats = self.stats;
            stats.processing = count(&|p| matches!(p, Place::Leased { .. }));
            stats.queued = self.live() - stats.processing;
            stats.delayed = count(&|p| matches!(p, Place::Delayed { .. }));
            stats.coalesced_waiting = count(&|p| matches!(p, Place::Follower { .. }));
            stats.dead_letters = self.dead.len();
            stats
        }

        /// The status `status(id)` must report.
        pub fn status(&self, j: usize) -> Option<JobStatus> {
            (self.jobs[j].place != Place::Gone).then_some(self.jobs[j].status)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random operations on small bounds against [`reference::Model`]: every take picks the job
    /// the model picks, every refusal is the model's, every job's status and every count agree
    /// after each step, and no job is lost (each is live, finished, dead-lettered, or dropped
    /// by a bound and counted).
    #[test]
    fn queue_matches_the_reference_model(
        capacity in 1usize..=6,
        retain in 0usize..=4,
        dead_capacity in 0usize..=3,
        aging in prop::option::of(1u64..=4),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        use memocache::QueueError;
        use reference::{Model, Refusal};

        let aging = aging.map(|s| s * 1_000_000_000);
        let clock = ManualClock::new();
        let store = Cache::builder().max_bytes(1 << 20).build().expect("valid");
        let faulty = Arc::new(FaultyStore { cache: store.clone(), faults: AtomicU8::new(0) });
        let queue = JobQueue::builder()
            .clock(Arc::new(clock.clone()))
            .capacity(capacity)
            .retain_finished(retain)
            .dead_letter_capacity(dead_capacity)
            .aging(aging.map(Duration::from_nanos))
            .retry(
                RetryConfig::exponential(reference::MAX_RETRIES, Duration::from_nanos(reference::DELAY))
                    .expect("valid"),
            )
            .lease(Duration::from_nanos(reference::LEASE))
            .memo_store(faulty.clone())
            .build()
            .expect("valid");
        let mut m = Model::new(capacity, retain, dead_capacity, aging);
        let mut leases: Vec<Lease> = Vec::new();

        for op in ops {
            let now = clock.now().as_nanos();
            match op {
                Op::Submit { priority, group } => {
                    let p = JobPriority::try_from(priority).expect("1..=3");
                    let job = job_of(group);
                    let id = job.id();
                    let got = queue.submit(job.with_priority(p));
                    let accepted = m.submit(id, group, p, now);
                    prop_assert_eq!(got.is_ok(), accepted, "submit: {:?}", got);
                    if !accepted {
                        prop_assert!(matches!(got, Err(QueueError::Full { .. })), "{:?}", got);
                    }
                }
                Op::Take { worker } => {
                    let worker = WorkerId::new(format!("w{worker}"));
                    let got = queue.try_next(&worker);
                    let want = m.pick(now, |_| true);
                    check_take(&mut m, &mut leases, &worker, got, want, now)?;
                }
                Op::TakeFor { worker, types } => {
                    let worker = WorkerId::new(format!("w{worker}"));
                    let got = queue.try_next_for(&worker, &types_of(types));
                    let want = m.pick(now, |g| accepts(types, g));
                    check_take(&mut m, &mut leases, &worker, got, want, now)?;
                }
                Op::CompleteAndNext(i) if !leases.is_empty() => {
                    let lease = leases[i.index(leases.len())].clone();
                    let want = m.check(i.index(leases.len()));
                    let got = queue.complete_and_next(&lease, vec![1].into(), Duration::ZERO);
                    match (got, want) {
                        (Ok(next), Ok(j)) => {
                            m.complete(j);
                            let want = m.pick(now, |_| true);
                            check_take(&mut m, &mut leases, lease.worker(), next, want, now)?;
                        }
                        (Err(QueueError::StaleLease { .. }), Err(Refusal::Stale))
                        | (Err(QueueError::NotFound(_)), Err(Refusal::NotFound)) => {}
                        (got, want) => prop_assert!(
                            false,
                            "complete_and_next on lease {:?}: got {:?}, want {:?}",
                            i, got.map(|l| l.map(|l| l.job_id())), want
                        ),
                    }
                }
                Op::Complete(i) | Op::Fail(i) | Op::Heartbeat(i) | Op::Release(i)
                    if !leases.is_empty() =>
                {
                    let i = i.index(leases.len());
                    let lease = &leases[i];
                    let want = m.check(i);
                    let got = match op {
                        Op::Complete(_) => queue.complete(lease, vec![1].into()).map(drop),
                        Op::Fail(_) => queue.fail(lease, "x"),
                        Op::Release(_) => queue.release(lease),
                        _ => queue.heartbeat(lease).map(|deadline| {
                            if let Ok(j) = want {
                                assert_eq!(deadline.as_nanos(), m.heartbeat(j, now));
                            }
                        }),
                    };
                    match (&got, &want) {
                        (Ok(()), Ok(j)) => match op {
                            Op::Complete(_) => m.complete(*j),
                            Op::Fail(_) => m.fail(*j, now),
                            Op::Release(_) => m.release(*j),
                            _ => {}
                        },
                        (Err(QueueError::StaleLease { .. }), Err(Refusal::Stale))
                        | (Err(QueueError::NotFound(_)), Err(Refusal::NotFound)) => {}
                        _ => prop_assert!(false, "{:?} on lease {}: got {:?}, want {:?}", op, i, got, want),
                    }
                }
                Op::Cancel(i) if !m.jobs.is_empty() => {
                    let j = i.index(m.jobs.len());
                    let got = queue.cancel(m.jobs[j].id);
                    match (&got, m.cancel(j)) {
                        (Ok(()), Ok(()))
                        | (Err(QueueError::NotFound(_)), Err(true))
                        | (Err(QueueError::InvalidTransition(_)), Err(false)) => {}
                        (got, want) => prop_assert!(false, "cancel: got {:?}, want {:?}", got, want),
                    }
                }
                Op::Resubmit(i) if !m.jobs.is_empty() => {
                    let j = i.index(m.jobs.len());
                    let got = queue.resubmit_dead_letter(m.jobs[j].id);
                    match (&got, m.resubmit(j, now)) {
                        (Ok(()), Ok(()))
                        | (Err(QueueError::NotDeadLettered(_)), Err(true))
                        | (Err(QueueError::Full { .. }), Err(false)) => {}
                        (got, want) => prop_assert!(false, "resubmit: got {:?}, want {:?}", got, want),
                    }
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    m.maintain(clock.now().as_nanos());
                }
                Op::Faults(bits) => {
                    faulty.faults.store(bits, Ordering::Relaxed);
                    m.faults = Faults(bits);
                }
                Op::Store(g) => {
                    let key = CacheKey::transcript(&file_hash(g), "en").expect("valid");
                    store.insert(key, Bytes::from_static(b"stored")).expect("fits");
                    if !m.memo.contains(&g) {
                        m.memo.push(g);
                    }
                }
                _ => {}
            }

            // The dead letters first: like every call that reports jobs, `dead_letters` takes
            // back the leases that ran out (an `Advance` may have ended a last attempt), so
            // it must agree with the model before any other call has reaped them.
            let dead: Vec<JobId> = queue.dead_letters().iter().map(Job::id).collect();
            let want: Vec<JobId> = m.dead.iter().map(|&j| m.jobs[j].id).collect();
            prop_assert_eq!(dead, want);
            // Every job where the model says, every count as the model counts.
            prop_assert_eq!(queue.stats(), m.expected_stats());
            let cache = store.stats();
            prop_assert_eq!((cache.hits, cache.misses), (m.cache_hits, m.cache_misses), "cache");
            for (j, job) in m.jobs.iter().enumerate() {
                let got = queue.get(job.id);
                prop_assert_eq!(got.as_ref().map(Job::status), m.status(j), "job {}", j);
                // A raise is the queue's: the job keeps the priority it was submitted with.
                if let Some(got) = got {
                    prop_assert_eq!(got.priority(), job.priority, "job {}", j);
                }
            }
            // None lost: each accepted submit or re-submit is live or ended exactly once.
            let s = queue.stats();
            prop_assert_eq!(
                s.submitted + m.resubmitted,
                s.completed + s.failed + s.cancelled + (s.queued + s.processing) as u64
            );
        }
    }
}
