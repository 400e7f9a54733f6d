//! Memory a series holds after its samples expire: a burst of values must not stay allocated
//! once it is older than the retention period, whether the series keeps being recorded or
//! goes quiet and is only read.
//!
//! Memory held cannot be observed through the API, so this test binary installs a global
//! allocator that counts the bytes live on the current thread (allocated minus freed), and
//! checks what a burst leaves behind.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use memocache::{ManualClock, MetricSeries, MetricValue, MetricsRegistry, Tags};

/// The system allocator, counting each thread's live bytes.
struct Counting;

thread_local! {
    // Const-initialised and without a destructor: using it never allocates.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

fn size(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only a
// thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(size(layout.size()));
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(size(layout.size()));
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-size(layout.size()));
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(size(new_size) - size(layout.size()));
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

const BURST: usize = 200_000;
/// What a burst of `BURST` samples occupies at the least: an 8-byte value and a 16-byte stamp.
const BURST_BYTES: isize = 24 * BURST as isize;
/// What may stay allocated after the burst expired: small change, not the burst.
const LEFT_OVER: isize = 64 * 1024;

/// Bug: `VecDeque` never shrinks, so a series that took a burst of values kept the burst's
/// peak capacity for as long as it lived, whatever its retention.
#[test]
fn a_series_gives_back_the_memory_of_an_expired_burst() {
    let clock = ManualClock::new();
    let before = live();
    let mut series = MetricSeries::with_clock("burst", Duration::from_secs(10), clock.clone());
    for i in 0..BURST {
        series
            .add_value(MetricValue::histogram(i as f64), Tags::new())
            .unwrap();
    }
    assert!(live() - before >= BURST_BYTES);
    // The burst expires; the series goes on at one value a second.
    for i in 0..20 {
        clock.advance(Duration::from_secs(1));
        series
            .add_value(MetricValue::histogram(f64::from(i)), Tags::new())
            .unwrap();
    }
    let kept: Vec<f64> = series.samples().map(|x| x.value.value()).collect();
    assert_eq!(kept, (10..20).map(f64::from).collect::<Vec<_>>());
    let held = live() - before;
    assert!(held < LEFT_OVER, "{held} bytes held for 10 samples");
    drop(series);
}

/// Bug: only an add pruned a series, so a registry histogram (or gauge) that stopped being
/// recorded kept its last retention period of values — a burst of any size — for as long as
/// the registry lived, though rendering and alerts read it all the time. Reads prune now.
#[test]
fn a_registry_metric_that_goes_quiet_frees_its_expired_values_when_read() {
    let clock = ManualClock::new();
    let registry = MetricsRegistry::with_clock(clock.clone(), Duration::from_secs(10));
    let latency = registry
        .histogram("latency_seconds", "Latency.", &[])
        .unwrap();
    let depth = registry.gauge("depth", "Depth.", &[]).unwrap();
    let _ = registry.render_prometheus(); // the first render's own allocations, out of the way
    let before = live();
    for i in 0..BURST {
        latency.observe(i as f64).unwrap();
        depth.set(i as f64);
    }
    assert!(live() - before >= 2 * BURST_BYTES);
    clock.advance(Duration::from_secs(11));
    let text = registry.render_prometheus();
    assert!(
        text.contains("latency_seconds{quantile=\"0.5\"} NaN\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("latency_seconds_count {BURST}\n")),
        "{text}"
    );
    assert!(text.contains(&format!("depth {}\n", BURST - 1)), "{text}");
    drop(text);
    let held = live() - before;
    assert!(
        held < LEFT_OVER,
        "{held} bytes held after the values expired"
    );
}
