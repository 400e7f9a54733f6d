//! Key derivation throughput.
//!
//! * `from_content/{1KiB,1MiB,64MiB}`: [`CacheKey::from_content`] over an in-memory buffer.
//! * `ring_sha256/{...}`: `ring`'s SHA-256 over the same buffers, the floor the key derivation
//!   stands on; the difference is the cost of the key itself (prefix interning).
//! * `sha2_sha256/{...}`: the pure-Rust `sha2` crate over the same buffers, the alternative
//!   `ring` was chosen over (it has no AVX code path for CPUs without SHA-NI).
//! * `from_reader_file/{1MiB,64MiB}`: [`CacheKey::from_reader`] over a temporary file (read
//!   through the page cache, so this measures the streaming path, not the disk).
//!
//! The external baseline is `openssl speed -evp sha256` on the same machine; the README has
//! both figures. Like `openssl speed`, this bench measures the CPU time of the measuring thread
//! ([`ThreadCpuTime`]), not wall time: on a shared machine wall time mostly measures the other
//! tenants, while CPU time measures the code and stays comparable with openssl's figure.
//! Measurement times are short because the machine has two shared cores.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use memocache::CacheKey;
use sha2::{Digest, Sha256};

#[path = "../tests/noise_support/mod.rs"]
mod noise_support;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Deterministic, incompressible-looking input (the hash does not care, but it keeps the
/// buffer from being all zeros, which some allocators hand out lazily): the tests' noise, from
/// the state this bench has always used (it is odd, so `noise` keeps it as it is).
fn input(len: usize) -> Vec<u8> {
    noise_support::noise(len, 0x9e37_79b9_7f4a_7c15)
}

fn label(len: usize) -> String {
    if len >= MIB {
        format!("{}MiB", len / MIB)
    } else {
        format!("{}KiB", len / KIB)
    }
}

/// CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`), as a criterion
/// measurement; values are durations and are displayed like wall time.
struct ThreadCpuTime;

impl ThreadCpuTime {
    fn now() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant that
        // clock_gettime supports on every Unix this bench targets.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        ThreadCpuTime::now()
    }
    fn end(&self, start: Duration) -> Duration {
        ThreadCpuTime::now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, exactly what the wall-time formatter expects.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// Large inputs take a quarter second per hash: one iteration per sample keeps the run short.
fn configure(group: &mut criterion::BenchmarkGroup<'_, ThreadCpuTime>, len: usize) {
    group.throughput(Throughput::Bytes(len as u64));
    if len >= 16 * MIB {
        group.sampling_mode(SamplingMode::Flat);
    } else {
        group.sampling_mode(SamplingMode::Auto);
    }
}

fn in_memory(c: &mut Criterion<ThreadCpuTime>) {
    for len in [KIB, MIB, 64 * MIB] {
        let data = input(len);
        let mut group = c.benchmark_group("key_derivation");
        configure(&mut group, len);
        group.bench_with_input(
            BenchmarkId::new("from_content", label(len)),
            &data,
            |b, data| b.iter(|| CacheKey::from_content(black_box(data), "transcript")),
        );
        group.bench_with_input(
            BenchmarkId::new("ring_sha256", label(len)),
            &data,
            |b, data| b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(data))),
        );
        group.bench_with_input(
            BenchmarkId::new("sha2_sha256", label(len)),
            &data,
            |b, data| b.iter(|| Sha256::digest(black_box(data))),
        );
        group.finish();
    }
}

fn from_file(c: &mut Criterion<ThreadCpuTime>) {
    for len in [MIB, 64 * MIB] {
        let mut file = tempfile::NamedTempFile::new().expect("create a temporary file");
        file.write_all(&input(len))
            .expect("write the temporary file");
        file.flush().expect("flush the temporary file");
        let path = file.path().to_owned();
        let mut group = c.benchmark_group("key_derivation");
        configure(&mut group, len);
        group.bench_function(BenchmarkId::new("from_reader_file", label(len)), |b| {
            b.iter(|| {
                let file = std::fs::File::open(&path).expect("open the temporary file");
                CacheKey::from_reader(file, "transcript")
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = in_memory, from_file
}
criterion_main!(benches);
