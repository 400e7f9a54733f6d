//! Time: the [`Ttl`] value object and the [`Clock`] every time-dependent part of the crate reads.
//!
//! # Design
//!
//! Expiry is arithmetic on a **monotonic** clock. A [`Timestamp`] is nanoseconds since an
//! arbitrary, per-clock epoch; it never goes backwards, so a wall-clock jump (NTP step, a user
//! changing the date) neither expires nor revives entries. Timestamps from different clocks are
//! not comparable, which is why the cache keeps the one clock it was built with.
//!
//! Tests use [`ManualClock`], which only moves when told to, so no test sleeps to observe expiry.
//!
//! Two real clocks trade resolution for the cost of a read. [`CoarseClock`] (the kernel's
//! last tick: steps of 1–10 ms, 4 ms at the common `HZ` of 250) is the default of the cache
//! and of the job queue, which read the clock on every hit, insert, submit, take and
//! completion, for times counted in seconds and up: TTLs, leases, retry delays, aging steps.
//! [`SystemClock`] (the CPU's time-stamp counter, nanoseconds) is there for a cache whose TTLs
//! need sub-millisecond precision: pass it to [`CacheBuilder::clock`](crate::CacheBuilder::clock).
//! With the coarse clock an entry's deadline is checked against the last tick, so by real time
//! an entry may be served up to one tick past it, never more, and never after the cache's own
//! clock has passed it.
//!
//! The seed's `TTL` rejected non-positive durations at construction; [`Ttl`] does the same and
//! its constructors return a [`TtlError`] instead of raising. Its range differs: the seed's
//! `timedelta` counted microseconds up to 999,999,999 days, a [`Ttl`] counts nanoseconds up to
//! [`Ttl::MAX`] (about 584 years), the span of the cache's 64-bit timestamps.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A positive time-to-live.
///
/// ```
/// use memocache::Ttl;
/// use std::time::Duration;
///
/// let ttl = Ttl::hours(24)?;
/// assert_eq!(ttl.to_seconds(), 86_400);
/// assert_eq!(ttl.as_duration(), Duration::from_secs(86_400));
/// assert!(Ttl::new(Duration::ZERO).is_err());
/// # Ok::<(), memocache::TtlError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

/// Why a [`Ttl`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// The duration was zero; a TTL must be positive.
    #[error("a TTL must be positive, got a zero duration")]
    Zero,
    /// The duration does not fit the 584-year range of a nanosecond `u64` timestamp.
    #[error("a TTL of {0:?} is too long: at most u64::MAX nanoseconds (about 584 years)")]
    TooLong(Duration),
}

impl Ttl {
    /// The longest TTL: `u64::MAX` nanoseconds (about 584 years).
    ///
    /// A [`crate::Cache`] stores an entry with it — or with any TTL whose deadline passes the
    /// end of its clock's range — with the deadline one nanosecond before that end: the entry
    /// keeps a TTL (see [`crate::CacheEntry::ttl`]) and expires then. Stored at that end itself
    /// (a [`ManualClock`] at `u64::MAX`), where nothing comes after, any entry gets no deadline.
    pub const MAX: Ttl = Ttl(Duration::from_nanos(u64::MAX));

    /// A TTL of `duration`; zero, and anything longer than [`Ttl::MAX`], are errors.
    pub fn new(duration: Duration) -> Result<Ttl, TtlError> {
        if duration.is_zero() {
            Err(TtlError::Zero)
        } else if duration > Self::MAX.0 {
            Err(TtlError::TooLong(duration))
        } else {
            Ok(Ttl(duration))
        }
    }

    /// A TTL of `seconds` seconds; zero is [`TtlError::Zero`], and more than [`Ttl::MAX`]
    /// (about 584 years) is [`TtlError::TooLong`], never an overflow.
    pub fn seconds(seconds: u64) -> Result<Ttl, TtlError> {
        Ttl::new(Duration::from_secs(seconds))
    }

    /// A TTL of `minutes` minutes; zero is [`TtlError::Zero`], and more than [`Ttl::MAX`]
    /// (about 584 years) is [`TtlError::TooLong`], never an overflow.
    pub fn minutes(minutes: u64) -> Result<Ttl, TtlError> {
        Ttl::new(Duration::from_secs(minutes.saturating_mul(60)))
    }

    /// A TTL of `hours` hours; zero is [`TtlError::Zero`], and more than [`Ttl::MAX`]
    /// (about 584 years) is [`TtlError::TooLong`], never an overflow.
    pub fn hours(hours: u64) -> Result<Ttl, TtlError> {
        Ttl::new(Duration::from_secs(hours.saturating_mul(3_600)))
    }

    /// A TTL of `days` days; zero is [`TtlError::Zero`], and more than [`Ttl::MAX`]
    /// (about 584 years) is [`TtlError::TooLong`], never an overflow.
    pub fn days(days: u64) -> Result<Ttl, TtlError> {
        Ttl::new(Duration::from_secs(days.saturating_mul(86_400)))
    }

    /// Whole seconds, rounded down (as the seed's `to_seconds`).
    ///
    /// Exact for every TTL. The seed's `int(total_seconds())` went through a float, which
    /// from 2^34 s (about 544 years) on rounds a TTL 1 µs short of a whole second up to it:
    /// 2^34 s + 999,999 µs gave 2^34 + 1, where this gives 2^34.
    pub fn to_seconds(self) -> u64 {
        self.0.as_secs()
    }

    /// The TTL as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        self.0
    }

    /// The TTL in nanoseconds; always fits by construction.
    pub fn as_nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = TtlError;
    fn try_from(duration: Duration) -> Result<Ttl, TtlError> {
        Ttl::new(duration)
    }
}

impl From<Ttl> for Duration {
    fn from(ttl: Ttl) -> Duration {
        ttl.0
    }
}

/// A point on a [`Clock`]'s monotonic timeline: nanoseconds since that clock's epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating at the end of time rather than wrapping.
    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    /// The time since the clock's epoch, written as a duration (`1.5s`, `250ms`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", Duration::from_nanos(self.0))
    }
}

/// A monotonic time source.
///
/// Implementations must never return a timestamp earlier than one they returned before. The
/// job queue survives one that does (its lease list and ready deques stay sorted), but a job
/// made ready after a step back waits, for aging, from the stamp of the job ahead of it in its
/// deque, so it ages up to that step late.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// A finer clock to time work with, if this one is too coarse for it; `None` (the
    /// default) if this one will do.
    ///
    /// [`CoarseClock`] returns a [`SystemClock`]: its ticks of a few milliseconds would round
    /// the duration of short work to zero or to whole ticks. The crate's layers that time
    /// work (the chunk processor, the transcription pipeline's latency and compute time) use
    /// the cache's clock for that unless it names a finer one here, so that a
    /// [`ManualClock`] still drives them in tests. A duration is the difference of two
    /// readings of one clock; timestamps of different clocks are not comparable.
    fn for_timing(&self) -> Option<SharedClock> {
        None
    }

    /// The step in which the clock moves on its own (zero, the default, for a clock of
    /// nanoseconds or one that moves only when told to): a reading may lag real time by up to
    /// this much.
    ///
    /// A blocked [`JobQueue::next`](crate::JobQueue::next) waiting for a retry or a lease
    /// deadline sleeps at least this long, since a shorter sleep could not see the clock move:
    /// before it did, a wait for a time a few microseconds into the next tick of
    /// [`CoarseClock`] woke every few microseconds until that tick, for up to a whole tick.
    fn resolution(&self) -> Duration {
        Duration::ZERO
    }
}

/// A shared clock is a clock: an `Arc` of one, a [`SharedClock`] among them, reads the clock it
/// holds, so that [`CacheBuilder::clock`](crate::CacheBuilder::clock) and
/// [`JobQueueBuilder::clock`](crate::JobQueueBuilder::clock) take one handle of a clock a host
/// gives to both (a [`ManualClock`] is also shared by cloning it).
impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> Timestamp {
        (**self).now()
    }

    fn for_timing(&self) -> Option<SharedClock> {
        (**self).for_timing()
    }

    fn resolution(&self) -> Duration {
        (**self).resolution()
    }
}

/// The clock to time work with where `clock` keeps time (see [`Clock::for_timing`]).
pub(crate) fn timing_clock(clock: &SharedClock) -> SharedClock {
    clock.for_timing().unwrap_or_else(|| Arc::clone(clock))
}

/// A monotonic clock of nanosecond resolution, measured from the first time any
/// `SystemClock` is read.
///
/// It reads the CPU's time-stamp counter through [`quanta`] where that counter is invariant,
/// and falls back to the operating system's monotonic clock elsewhere. It reads the counter
/// of the core it runs on, unserialized (`quanta::Clock::raw`, which quanta does not promise
/// to be monotonic): reads on two cores may come out of order by the cores' skew, which the
/// job queue tolerates (see [`Clock`]). The cache and the job
/// queue default to the cheaper [`CoarseClock`]; this one is for TTLs (or timings) that need
/// better than a few milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Timestamp {
        static EPOCH: OnceLock<(quanta::Clock, u64)> = OnceLock::new();
        let (clock, start) = EPOCH.get_or_init(|| {
            let clock = quanta::Clock::new();
            let start = clock.raw();
            (clock, start)
        });
        Timestamp(clock.delta_as_nanos(*start, clock.raw()))
    }
}

/// A monotonic clock that is cheap to read but moves in steps of a few milliseconds: the
/// default of the [`Cache`](crate::Cache) and the [`JobQueue`](crate::JobQueue).
///
/// On Linux it reads `CLOCK_MONOTONIC_COARSE`: the time of the kernel's last scheduler tick,
/// so it moves in steps of 1–10 ms (the kernel's `HZ`; 4 ms on this project's machines),
/// read through the vDSO with no system call and no time-stamp counter. Elsewhere it is
/// [`SystemClock`].
///
/// Why it is the default: every cache hit reads the clock (to check the deadline and stamp
/// `accessed_at`), and so does every queue operation, under the queue's lock. On this
/// project's 2-core VM a read took about 4 ns where [`SystemClock`]'s took about 15 (20
/// million reads, one pinned core), and in one paired run each (`cargo bench --bench paired`,
/// 10 rounds) the coarse clock took memocache's hits from 0.60 to 0.78 of quick_cache's rate
/// on one thread (0.65 to 0.83 on two) and its get-or-inserts from 0.47 to 0.76 (0.58 to
/// 0.63); the queue's one-thread loop, with this session's other changes, ran at 0.87–0.91 of
/// the `Mutex<BinaryHeap>` baseline's rate where it had run at 0.66–0.68. The price is resolution:
/// by real time an entry may be served up to one tick past its deadline (see the
/// [module docs](self)). As their default (or given by type to
/// [`CacheBuilder::clock`](crate::CacheBuilder::clock) or
/// [`JobQueueBuilder::clock`](crate::JobQueueBuilder::clock)), the cache and the queue call it
/// directly, inlined, not through a [`SharedClock`]'s vtable; given to them as a
/// [`SharedClock`], it is read through the vtable, which costs a few instructions a read.
///
/// Its epoch is the first time any `CoarseClock` is read; its timestamps are not comparable
/// with [`SystemClock`]'s. It works under valgrind, where it falls back to the system call
/// (`tests/under_valgrind.rs`; rustix is built to find the vDSO through libc, see
/// `Cargo.toml`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> Timestamp {
        #[cfg(target_os = "linux")]
        {
            static EPOCH: OnceLock<u64> = OnceLock::new();
            let now = coarse_monotonic_nanos();
            // A thread that read before another set the epoch gets 0, not a time before it.
            Timestamp(now.saturating_sub(*EPOCH.get_or_init(|| now)))
        }
        #[cfg(not(target_os = "linux"))]
        {
            SystemClock.now()
        }
    }

    fn for_timing(&self) -> Option<SharedClock> {
        Some(system_clock())
    }

    /// The kernel's tick, as `clock_getres` gives it for `CLOCK_MONOTONIC_COARSE` (4 ms at
    /// `HZ` = 250); zero elsewhere, where this clock is [`SystemClock`].
    fn resolution(&self) -> Duration {
        #[cfg(target_os = "linux")]
        {
            let res = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
            // A resolution is never negative; were it, zero keeps the old, finer waits.
            let secs = u64::try_from(res.tv_sec).unwrap_or(0);
            let nanos = u64::try_from(res.tv_nsec).unwrap_or(0);
            Duration::from_secs(secs).saturating_add(Duration::from_nanos(nanos))
        }
        #[cfg(not(target_os = "linux"))]
        {
            Duration::ZERO
        }
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds.
#[cfg(target_os = "linux")]
#[inline]
fn coarse_monotonic_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // A monotonic clock counts from boot: its fields are never negative, and its seconds stay
    // far below the 584 years at which their nanoseconds would overflow a `u64`, so the sum
    // is taken as it is. Saturated, it cost ten instructions a read more (callgrind), and the
    // job queue reads this at every submit, take and completion.
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.wrapping_mul(1_000_000_000).wrapping_add(nanos)
}

/// A clock that moves only when told to; for tests.
///
/// Cloning gives another handle to the same time, so a test can keep one handle and give the
/// other to the cache.
///
/// ```
/// use memocache::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now().saturating_duration_since(t0), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at its epoch.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by` (saturating at the end of time).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails here: the closure always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::Acquire))
    }
}

/// The clock handle the crate passes around.
pub type SharedClock = Arc<dyn Clock>;

/// `clock` as a [`SharedClock`], for the types that take any clock by value. A `SharedClock`
/// is kept as it is: wrapped in another `Arc`, each read would go through two vtables, and the
/// accessors would hand out a clock other than the one given.
pub(crate) fn share<C: Clock + 'static>(clock: C) -> SharedClock {
    match (&clock as &dyn Any).downcast_ref::<SharedClock>() {
        Some(shared) => Arc::clone(shared),
        None => Arc::new(clock),
    }
}

/// The clock as the cache and the job queue hold it: the [`SharedClock`] their accessors
/// return, and whether it is their default [`CoarseClock`], which [`ClockHandle::now`] then
/// reads by a direct, inlined call instead of through the trait object's vtable.
///
/// Both read the clock on every hit, insert, submit, take and completion; through the vtable a
/// read cost its call and its frame (callgrind, one thread: 10 to 14 instructions a read, 21 to
/// 42 a job of the queue's bench loop; a `get` of a present key took 279 instructions with the
/// cache's read through the vtable, 274 with it direct). Any other clock (a [`ManualClock`], a
/// [`SystemClock`], a host's own) is read through the vtable.
///
/// A host that passes the coarse clock itself: [`CacheBuilder::clock`](crate::CacheBuilder::clock)
/// and [`JobQueueBuilder::clock`](crate::JobQueueBuilder::clock) know the clock's type, so
/// `clock(CoarseClock)` (or an `Arc<CoarseClock>`) is recognised and read directly, as the
/// default is. A [`SharedClock`] (given to either, or to their `shared_clock`), even one made
/// from an `Arc::new(CoarseClock)`, is read through the vtable: the trait object does not say
/// what it holds (`Clock` has no `Any` bound), and the readings are the same either way, only
/// a few instructions dearer.
#[derive(Clone)]
pub(crate) struct ClockHandle {
    clock: SharedClock,
    /// `clock` is a [`CoarseClock`]: [`ClockHandle::now`] calls it directly.
    coarse: bool,
}

impl ClockHandle {
    /// The default clock, a [`CoarseClock`].
    pub(crate) fn coarse() -> ClockHandle {
        ClockHandle {
            clock: Arc::new(CoarseClock),
            coarse: true,
        }
    }

    /// `clock`, read through its vtable.
    pub(crate) fn shared(clock: SharedClock) -> ClockHandle {
        ClockHandle {
            clock,
            coarse: false,
        }
    }

    /// `clock`, whose type is known here: a [`CoarseClock`], or an `Arc` of one, is read
    /// directly, as the default; any other is [`share`]d.
    pub(crate) fn of<C: Clock + 'static>(clock: C) -> ClockHandle {
        let any: &dyn Any = &clock;
        if any.is::<CoarseClock>() {
            ClockHandle::coarse()
        } else if let Some(coarse) = any.downcast_ref::<Arc<CoarseClock>>() {
            ClockHandle {
                clock: Arc::clone(coarse) as SharedClock,
                coarse: true,
            }
        } else {
            ClockHandle::shared(share(clock))
        }
    }

    /// The current time on the clock.
    #[inline(always)]
    pub(crate) fn now(&self) -> Timestamp {
        if self.coarse {
            CoarseClock.now()
        } else {
            self.clock.now()
        }
    }

    /// The clock, as the crate's accessors hand it out.
    pub(crate) fn get(&self) -> &SharedClock {
        &self.clock
    }
}

impl fmt::Debug for ClockHandle {
    /// The clock itself, as it was printed before the handle held it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.clock.fmt(f)
    }
}

/// A shared [`SystemClock`]: the metrics' default clock (the cache and the job queue default
/// to [`CoarseClock`]).
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work is timed on the clock itself unless it is the coarse one: a manual clock still
    /// drives the layers that time work, the coarse clock hands them a fine one.
    #[test]
    fn timing_clock_is_the_clock_itself_except_for_the_coarse_one() {
        let manual = ManualClock::new();
        let shared: SharedClock = Arc::new(manual.clone());
        let timer = timing_clock(&shared);
        manual.advance(Duration::from_secs(7));
        assert_eq!(timer.now(), Timestamp::from_nanos(7_000_000_000));

        let coarse: SharedClock = Arc::new(CoarseClock);
        let timer = timing_clock(&coarse);
        let start = timer.now();
        std::thread::sleep(Duration::from_micros(300));
        let elapsed = timer.now().saturating_duration_since(start);
        // Under a tick, yet seen: the coarse clock would show 0 or a whole tick.
        assert!(elapsed >= Duration::from_micros(300), "{elapsed:?}");
        assert_ne!(elapsed.as_nanos() % 1_000_000, 0, "{elapsed:?}");
    }

    /// Never backwards, on any thread, and it follows real time to within its steps.
    #[test]
    fn the_coarse_clock_is_monotonic_and_follows_real_time() {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut last = CoarseClock.now();
                    for _ in 0..200_000 {
                        let now = CoarseClock.now();
                        assert!(now >= last, "{now:?} after {last:?}");
                        last = now;
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.join().expect("monotonic");
        }
        // The real interval between the two coarse reads is at least the sleep and at most
        // `real`, which brackets them; the coarse clock may lag each read by one kernel tick
        // (at most 10 ms, at HZ = 100).
        let real_start = std::time::Instant::now();
        let start = CoarseClock.now();
        std::thread::sleep(Duration::from_millis(100));
        let moved = CoarseClock.now().saturating_duration_since(start);
        let real = real_start.elapsed();
        let tick = Duration::from_millis(10);
        assert!(
            moved + tick >= Duration::from_millis(100) && moved <= real + tick,
            "moved {moved:?} in {real:?}"
        );
    }

    /// The handle reads the coarse clock directly only when it knows the clock is one: the
    /// default, or one whose type it was given; any other clock, or a shared one, through its
    /// vtable, and it hands out the very clock it was given.
    #[test]
    fn a_clock_handle_calls_the_coarse_clock_directly_only_when_it_knows_it_is_one() {
        assert!(ClockHandle::coarse().coarse);
        assert!(ClockHandle::of(CoarseClock).coarse);
        assert!(!ClockHandle::of(SystemClock).coarse);
        let shared: SharedClock = Arc::new(CoarseClock);
        let handle = ClockHandle::shared(Arc::clone(&shared));
        assert!(!handle.coarse);
        assert!(Arc::ptr_eq(handle.get(), &shared));
        // Read through the vtable or directly, the coarse clock gives the same timeline.
        let (direct, through) = (ClockHandle::coarse(), handle);
        let first = direct.now();
        let second = through.now();
        assert!(second >= first && direct.now() >= second);
        assert_eq!(format!("{direct:?}"), "CoarseClock");

        let manual = ManualClock::new();
        let handle = ClockHandle::of(manual.clone());
        assert!(!handle.coarse);
        manual.advance(Duration::from_secs(3));
        assert_eq!(handle.now(), Timestamp::from_nanos(3_000_000_000));
        assert_eq!(handle.get().now(), Timestamp::from_nanos(3_000_000_000));
    }

    /// Given by type, an `Arc` of the coarse clock is read directly and handed out as given;
    /// a [`SharedClock`] is kept as it is, not wrapped in another `Arc` (so read through one
    /// vtable, and handed out as the very handle given); an `Arc` of any other clock reads it.
    #[test]
    fn a_clock_handle_keeps_a_shared_clock_and_knows_an_arc_of_the_coarse_one() {
        let coarse = Arc::new(CoarseClock);
        let handle = ClockHandle::of(Arc::clone(&coarse));
        assert!(handle.coarse);
        let given: SharedClock = coarse;
        assert!(Arc::ptr_eq(handle.get(), &given));

        let shared: SharedClock = Arc::new(ManualClock::new());
        let handle = ClockHandle::of(Arc::clone(&shared));
        assert!(!handle.coarse);
        assert!(Arc::ptr_eq(handle.get(), &shared));

        let manual = Arc::new(ManualClock::new());
        let handle = ClockHandle::of(Arc::clone(&manual));
        manual.advance(Duration::from_secs(4));
        assert_eq!(handle.now(), Timestamp::from_nanos(4_000_000_000));
    }

    /// An `Arc` of a clock answers for the clock it holds, not with the trait's defaults: a
    /// shared coarse clock keeps its tick (a blocked take's shortest sleep) and its finer clock
    /// to time work with.
    #[test]
    fn an_arc_of_a_clock_answers_as_the_clock_it_holds() {
        let coarse: SharedClock = Arc::new(CoarseClock);
        assert_eq!(coarse.resolution(), CoarseClock.resolution());
        assert!(coarse.for_timing().is_some());
        let nested = Arc::new(Arc::clone(&coarse));
        assert_eq!(nested.resolution(), CoarseClock.resolution());
        assert!(nested.for_timing().is_some());
        assert!(Arc::new(ManualClock::new()).for_timing().is_none());
    }

    #[test]
    fn ttl_rejects_zero_and_overlong() {
        assert_eq!(Ttl::new(Duration::ZERO), Err(TtlError::Zero));
        assert_eq!(Ttl::minutes(0), Err(TtlError::Zero));
        assert!(matches!(Ttl::new(Duration::MAX), Err(TtlError::TooLong(_))));
        // The bound is inclusive: `Ttl::MAX` itself is a valid TTL, one nanosecond more is not.
        let max = Ttl::MAX.as_duration();
        assert_eq!(Ttl::new(max), Ok(Ttl::MAX));
        let over = max + Duration::from_nanos(1);
        assert_eq!(Ttl::new(over), Err(TtlError::TooLong(over)));
        assert_eq!(Ttl::new(Duration::from_nanos(1)).map(Ttl::as_nanos), Ok(1));
    }

    #[test]
    fn ttl_constructors_match_the_seed() {
        assert_eq!(Ttl::minutes(3).map(Ttl::to_seconds), Ok(180));
        assert_eq!(Ttl::hours(2).map(Ttl::to_seconds), Ok(7_200));
        assert_eq!(Ttl::days(1).map(Ttl::to_seconds), Ok(86_400));
        // Rounds down like the seed's int(total_seconds()).
        let ttl = Ttl::new(Duration::from_millis(1_999)).map(Ttl::to_seconds);
        assert_eq!(ttl, Ok(1));
        // Saturating multiplication, then a range error instead of an overflow panic.
        assert!(matches!(Ttl::days(u64::MAX), Err(TtlError::TooLong(_))));
    }

    /// Each unit's constructor accepts its largest count within [`Ttl::MAX`] and refuses the
    /// next, whose product overflows neither `u64` seconds nor the nanosecond range.
    #[test]
    fn ttl_constructors_accept_up_to_the_max_and_refuse_beyond() {
        type Unit = fn(u64) -> Result<Ttl, TtlError>;
        let units: [(Unit, u64, u64); 4] = [
            (Ttl::seconds, 18_446_744_073, 1),
            (Ttl::minutes, 307_445_734, 60),
            (Ttl::hours, 5_124_095, 3_600),
            (Ttl::days, 213_503, 86_400),
        ];
        for (unit, largest, seconds) in units {
            assert_eq!(unit(largest).map(Ttl::to_seconds), Ok(largest * seconds));
            let over = Duration::from_secs((largest + 1) * seconds);
            assert_eq!(unit(largest + 1), Err(TtlError::TooLong(over)));
            assert!(matches!(unit(u64::MAX), Err(TtlError::TooLong(_))));
            assert_eq!(unit(0), Err(TtlError::Zero));
        }
        assert_eq!(Ttl::MAX.to_seconds(), 18_446_744_073);
    }

    #[test]
    fn manual_clock_is_shared_between_clones_and_saturates() {
        let clock = ManualClock::new();
        let other = clock.clone();
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(other.now(), Timestamp::from_nanos(1_500_000_000));
        other.advance(Duration::MAX);
        assert_eq!(clock.now(), Timestamp::from_nanos(u64::MAX));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock;
        let mut last = clock.now();
        for _ in 0..1_000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn conversions_and_display_keep_the_value() {
        let ttl = Ttl::new(Duration::from_millis(1_500)).expect("positive");
        assert_eq!(Duration::from(ttl), Duration::from_millis(1_500));
        assert_eq!(Timestamp::from_nanos(1_500_000_000).to_string(), "1.5s");
        assert_eq!(Timestamp::from_nanos(250_000_000).to_string(), "250ms");
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_nanos(u64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)).as_nanos(),
            u64::MAX
        );
        assert_eq!(Timestamp::ZERO.saturating_duration_since(t), Duration::ZERO);
    }
}
