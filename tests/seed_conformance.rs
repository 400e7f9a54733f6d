//! The seed's computed values, table by table, against the crate.
//!
//! The seed is `../shared/seed/entities-and-value-objects.md`; each table names the lines of
//! its Python sketch it comes from. The expected values are what that Python returns, not
//! hand-derived: `tests/data/seed_reference.py` runs the sketch's own code blocks (Python 3.11,
//! numpy 2.4) and prints every table here. Where the crate deliberately differs (a seed bug
//! fixed, an issue's requirement), the case says so and the Rust item documents it.
//!
//! Only what no other test pins is here: the unit tests of `src/job/retry.rs`,
//! `src/job/concurrency.rs`, `src/chunk/size.rs`, `src/time.rs` and `tests/job_model.rs`
//! already pin the seed's headline numbers (`exponential(3, 1 s)` at attempts 0..8,
//! `from_api_limit`, the 50/100 MB thresholds, `minutes(3)`, the job state machine), and
//! `tests/metrics_numpy.rs` pins `calculate_percentile` against numpy.

use std::time::Duration;

use bytes::Bytes;
use memocache::chunk::{ChunkKind, ChunkPlan};
use memocache::{
    AlertRule, AudioChunk, Backoff, Cache, CacheEntry, CacheKey, ChunkInfo, ChunkResult, ChunkSize,
    Clock, Comparison, JobPriority, ManualClock, MetricSeries, MetricValue, Percentile,
    ProcessingId, ProcessingTask, RetryConfig, Severity, Tags, Threshold, Timestamp, Ttl,
};

const MS: Duration = Duration::from_millis(1);

/// The attempts every retry table is computed at.
const ATTEMPTS: [u32; 29] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 31, 32, 33, 63, 64,
    65, 100, 1000,
];

/// `RetryConfig.calculate_delay` (seed lines 718–728) for the seed's factories (`exponential`,
/// lines 692–703, max 60 000 ms; `fixed`, lines 705–716) and its `LINEAR` strategy, which the
/// seed reaches only through the constructor. Delays in ms at each of [`ATTEMPTS`].
#[test]
fn retry_delays_match_the_seed_at_every_attempt() {
    let exp = |base: u32| RetryConfig::exponential(3, base * MS).expect("base under a minute");
    let new = |backoff, base: u32, max: u32| {
        RetryConfig::new(3, backoff, base * MS, max * MS).expect("ok")
    };
    let cases: [(&str, RetryConfig, [u32; 29]); 9] = [
        (
            "exponential()",
            RetryConfig::default(),
            [
                1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000, 60000, 60000, 60000,
                60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000,
                60000, 60000, 60000, 60000, 60000,
            ],
        ),
        (
            "exponential(base_delay_ms=250)",
            exp(250),
            [
                250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000, 60000, 60000,
                60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000,
                60000, 60000, 60000, 60000,
            ],
        ),
        // 0 * 2**attempt is 0 at any attempt, in Python's big integers and here.
        ("exponential(base_delay_ms=0)", exp(0), [0; 29]),
        // The largest base `exponential` accepts: the cap itself from the first attempt.
        (
            "exponential(base_delay_ms=60000)",
            exp(60_000),
            [60_000; 29],
        ),
        (
            "RetryConfig(3, 'EXPONENTIAL', 1, 60000)",
            new(Backoff::Exponential, 1, 60_000),
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 60000,
                60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000,
            ],
        ),
        ("fixed()", RetryConfig::fixed(3, 5_000 * MS), [5_000; 29]),
        (
            "fixed(delay_ms=0)",
            RetryConfig::fixed(3, Duration::ZERO),
            [0; 29],
        ),
        (
            "RetryConfig(3, 'LINEAR', 1000, 60000)",
            new(Backoff::Linear, 1_000, 60_000),
            [
                1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000, 13000,
                14000, 15000, 16000, 17000, 18000, 19000, 20000, 21000, 32000, 33000, 34000, 60000,
                60000, 60000, 60000, 60000,
            ],
        ),
        (
            "RetryConfig(3, 'LINEAR', 7, 100)",
            new(Backoff::Linear, 7, 100),
            [
                7, 14, 21, 28, 35, 42, 49, 56, 63, 70, 77, 84, 91, 98, 100, 100, 100, 100, 100,
                100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
            ],
        ),
    ];
    for (seed, retry, want) in cases {
        let got = ATTEMPTS.map(|attempt| retry.calculate_delay(attempt));
        assert_eq!(got, want.map(|ms| ms * MS), "{seed}");
        // Full jitter is off unless asked for, so what the queue waits is the seed's number.
        assert_eq!(
            ATTEMPTS.map(|attempt| retry.retry_delay(attempt)),
            got,
            "{seed}"
        );
    }
    // The seed's defaults: `exponential()` and `fixed()` retry 3 times.
    assert_eq!(RetryConfig::default().max_retries(), 3);
    assert_eq!(RetryConfig::default().max_delay(), 60_000 * MS);
    // Differs (documented at `RetryConfig::exponential`): the seed's `exponential(base_delay_ms
    // =61000)` capped every delay at 60 000 ms, below its own base; here that base is refused.
    assert!(RetryConfig::exponential(3, 61_000 * MS).is_err());
}

/// `ChunkSize.from_file_size` (seed lines 512–520) and `to_bytes` (lines 522–523): the chunk
/// size in MB and bytes for a file of so many MB.
#[test]
fn chunk_sizes_by_file_size_match_the_seed() {
    let cases: [(u64, u32, u64); 14] = [
        (0, 15, 15_728_640),
        (1, 15, 15_728_640),
        (10, 15, 15_728_640),
        (25, 15, 15_728_640),
        (49, 15, 15_728_640),
        (50, 20, 20_971_520),
        (51, 20, 20_971_520),
        (75, 20, 20_971_520),
        (99, 20, 20_971_520),
        (100, 25, 26_214_400),
        (101, 25, 26_214_400),
        (500, 25, 26_214_400),
        (1000, 25, 26_214_400),
        (1_000_000, 25, 26_214_400),
    ];
    for (file_mb, mb, bytes) in cases {
        let size = ChunkSize::from_file_size(file_mb);
        assert_eq!(
            (size.value_mb(), size.to_bytes()),
            (mb, bytes),
            "{file_mb} MB"
        );
    }
    // `ChunkSize(value_mb=v).to_bytes()` for every valid size (lines 505–510, 522–523).
    let to_bytes: [u64; 16] = [
        10_485_760, 11_534_336, 12_582_912, 13_631_488, 14_680_064, 15_728_640, 16_777_216,
        17_825_792, 18_874_368, 19_922_944, 20_971_520, 22_020_096, 23_068_672, 24_117_248,
        25_165_824, 26_214_400,
    ];
    for (mb, want) in (10..=25).zip(to_bytes) {
        assert_eq!(
            ChunkSize::new(mb).map(ChunkSize::to_bytes),
            Ok(want),
            "{mb} MB"
        );
    }
    // Ours (documented at `ChunkPlan::chunk_bytes_for`): a length in bytes is rounded down to
    // whole MB before the seed's thresholds.
    const MIB: u64 = 1024 * 1024;
    let auto = ChunkPlan::default();
    for (len, want) in [(50 * MIB - 1, 15), (50 * MIB, 20), (100 * MIB, 25)] {
        assert_eq!(auto.chunk_bytes_for(Some(len)), want * MIB, "{len} bytes");
    }
}

/// `JobPriority` (seed lines 333–358): `__post_init__` accepts exactly 1, 2 and 3; `low`,
/// `medium`, `high` are 1, 2, 3; `__gt__` compares the numbers (and Python's reflected `<`).
#[test]
fn job_priority_values_validation_and_order_match_the_seed() {
    for v in 0..=u8::MAX {
        let seed_accepts = [1, 2, 3].contains(&v);
        let got = JobPriority::try_from(v);
        assert_eq!(got.is_ok(), seed_accepts, "{v}");
        if let Ok(priority) = got {
            assert_eq!(priority.value(), v);
        }
    }
    let values = [JobPriority::Low, JobPriority::Medium, JobPriority::High].map(JobPriority::value);
    assert_eq!(values, [1, 2, 3]);
    // (a, b, a > b, a < b) from the seed.
    let pairs = [
        (1, 1, false, false),
        (1, 2, false, true),
        (1, 3, false, true),
        (2, 1, true, false),
        (2, 2, false, false),
        (2, 3, false, true),
        (3, 1, true, false),
        (3, 2, true, false),
        (3, 3, false, false),
    ];
    for (a, b, gt, lt) in pairs {
        let (pa, pb) = (JobPriority::try_from(a), JobPriority::try_from(b));
        let (pa, pb) = (pa.expect("valid"), pb.expect("valid"));
        assert_eq!((pa > pb, pa < pb), (gt, lt), "{a} vs {b}");
    }
}

/// `CacheKey.from_parts` (seed lines 439–447, default prefix `"transcript"`) and `__str__`
/// (lines 424–425): the seed's own strings.
#[test]
fn content_keys_display_as_the_seed_derives_them() {
    let audio = "6ed8919ce20490a5e3ad8630a4fab69475297abd07db73918dd5f36fcfaeb11b";
    let cases = [
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "en",
            "transcript",
            "transcript:a215d210c2b2a9a1b100d0fb56da50167e85c247ab51fc0e666ea0d61c7b8b12",
        ),
        (
            audio,
            "en",
            "transcript",
            "transcript:0290b6c5c69b0174f3f60ea12eb4e9a044c1ab6c7ef46b4719fefabada31129a",
        ),
        (
            audio,
            "pt-BR",
            "transcript",
            "transcript:39e2cce9c8a57770bdc8dd5df04b22121465437df7fa005a4cd2b36c1a3801c0",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "zh_Hant",
            "embeddings",
            "embeddings:76b40eb4680e50ba2fbf20505cce85a219c8d50557af31f5d4932ee821d2e57c",
        ),
    ];
    for (file_hash, language, prefix, want) in cases {
        let key = CacheKey::from_parts(file_hash, language, prefix).expect("valid parts");
        assert_eq!(key.to_string(), want);
        if prefix == "transcript" {
            let key = CacheKey::transcript(file_hash, language).expect("valid parts");
            assert_eq!(key.to_string(), want, "the seed's default prefix");
        }
    }
    // `from_content` (lines 428–436).
    let abc = CacheKey::from_content(b"abc", "embeddings").expect("valid prefix");
    assert_eq!(
        abc.to_string(),
        "embeddings:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Differs (issue 2, documented at `CacheKey::from_parts`): the seed hashed an upper-case
    // file hash as given, giving another key for the same file; here it is lower-cased first.
    let upper = CacheKey::transcript(&audio.to_uppercase(), "en").expect("valid parts");
    assert_eq!(
        upper.to_string(),
        "transcript:0290b6c5c69b0174f3f60ea12eb4e9a044c1ab6c7ef46b4719fefabada31129a"
    );
    let seed_upper = "transcript:4b7706da19c71fe8298ef51eaf38c3fee045269154132f1da40f62980c92b620";
    assert_ne!(upper.to_string(), seed_upper);
}

/// `TTL.minutes/hours/days` and `to_seconds` (seed lines 470–483): `int(total_seconds())`.
#[test]
fn ttl_conversions_match_the_seed() {
    type Unit = fn(u64) -> Result<Ttl, memocache::TtlError>;
    let cases: [(Unit, &str, u64, u64); 16] = [
        (Ttl::minutes, "minutes", 1, 60),
        (Ttl::minutes, "minutes", 5, 300),
        (Ttl::minutes, "minutes", 59, 3_540),
        (Ttl::minutes, "minutes", 90, 5_400),
        (Ttl::minutes, "minutes", 1_440, 86_400),
        (Ttl::hours, "hours", 1, 3_600),
        (Ttl::hours, "hours", 24, 86_400),
        (Ttl::hours, "hours", 48, 172_800),
        (Ttl::hours, "hours", 8_760, 31_536_000),
        (Ttl::days, "days", 7, 604_800),
        (Ttl::days, "days", 30, 2_592_000),
        (Ttl::days, "days", 365, 31_536_000),
        // The most days a TTL holds here (about 584 years; the seed's timedelta holds more).
        (Ttl::days, "days", 213_503, 18_446_659_200),
        (Ttl::seconds, "seconds", 1, 1),
        (Ttl::seconds, "seconds", 59, 59),
        (Ttl::seconds, "seconds", 86_400, 86_400),
    ];
    for (unit, name, n, seconds) in cases {
        assert_eq!(unit(n).map(Ttl::to_seconds), Ok(seconds), "{name}({n})");
    }
    // Sub-second TTLs are positive (valid) and round down to whole seconds, 0 included.
    let micros: [(u64, u64); 5] = [
        (1, 0),
        (999_999, 0),
        (1_000_000, 1),
        (1_500_000, 1),
        (59_999_999, 59),
    ];
    for (us, seconds) in micros {
        let ttl = Ttl::new(Duration::from_micros(us)).expect("positive");
        assert_eq!(ttl.to_seconds(), seconds, "{us} µs");
    }
    // Same up to 2^34 s: 2^33 s + 999 999 µs is still floored by the seed's float.
    let ttl = Ttl::new(Duration::new(1 << 33, 999_999_000)).expect("in range");
    assert_eq!(ttl.to_seconds(), 8_589_934_592);
    // Differs (documented at `Ttl::to_seconds`): from 2^34 s on, the seed's float
    // `total_seconds()` rounds a TTL within a microsecond of the next second up to it.
    for (secs, seed) in [
        (1u64 << 34, 17_179_869_185u64),
        (18_446_744_072, 18_446_744_073),
    ] {
        let ttl = Ttl::new(Duration::new(secs, 999_999_000)).expect("in range");
        assert_eq!(ttl.to_seconds(), secs, "exact floor");
        assert_eq!(seed, secs + 1, "the seed's rounded-up figure");
    }
}

/// `Percentile.__str__` (seed lines 629–630): `p{int(value)}`. Whole percentiles print as
/// the seed's; fractional ones keep their fraction (documented at `Percentile`).
#[test]
fn percentile_names_match_the_seed_for_whole_percentiles() {
    let same = [
        (0.0, "p0"),
        (-0.0, "p0"),
        (1.0, "p1"),
        (12.0, "p12"),
        (50.0, "p50"),
        (95.0, "p95"),
        (99.0, "p99"),
        (100.0, "p100"),
    ];
    for (p, name) in same {
        assert_eq!(
            Percentile::new(p).map(|p| p.to_string()),
            Ok(name.into()),
            "{p}"
        );
    }
    // The seed's names for these lose the fraction (it printed "p50", "p0").
    for (p, seed, ours) in [(50.5, "p50", "p50.5"), (0.1, "p0", "p0.1")] {
        let name = Percentile::new(p).map(|p| p.to_string());
        assert_eq!(name, Ok(ours.into()), "the seed printed {seed}");
    }
}

/// The actual values of the threshold grid, in the order of the seed's result strings.
const ACTUALS: [f64; 11] = [
    f64::NEG_INFINITY,
    -1.0,
    -0.0,
    0.0,
    0.1 + 0.2,
    0.3,
    1.0,
    1e12,
    1e12 + 100.0,
    f64::INFINITY,
    f64::NAN,
];

/// `Threshold.check` (seed lines 662–671) and the `AlertRule.is_triggered` it mirrors (lines
/// 268–280): for each comparison and threshold, the seed's verdict on each of [`ACTUALS`].
#[test]
fn threshold_checks_match_the_seed() {
    let seed: [(Comparison, f64, &str); 12] = [
        (Comparison::GreaterThan, -1.0, "FFTTTTTTTTF"),
        (Comparison::GreaterThan, 0.0, "FFFFTTTTTTF"),
        (Comparison::GreaterThan, 0.3, "FFFFTFTTTTF"),
        (Comparison::GreaterThan, 1e12, "FFFFFFFFTTF"),
        (Comparison::LessThan, -1.0, "TFFFFFFFFFF"),
        (Comparison::LessThan, 0.0, "TTFFFFFFFFF"),
        (Comparison::LessThan, 0.3, "TTTTFFFFFFF"),
        (Comparison::LessThan, 1e12, "TTTTTTTFFFF"),
        (Comparison::Equal, -1.0, "FTFFFFFFFFF"),
        (Comparison::Equal, 0.0, "FFTTFFFFFFF"),
        (Comparison::Equal, 0.3, "FFFFFTFFFFF"),
        (Comparison::Equal, 1e12, "FFFFFFFTFFF"),
    ];
    // Differs (documented at `Threshold`): `Equal` allows a relative error of 1e-9 where the
    // seed compared with `==`, so these (threshold, actual) pairs are met here and not there.
    let tolerated = [(0.3, 0.1 + 0.2), (1e12, 1e12 + 100.0)];
    for (comparison, value, verdicts) in seed {
        let threshold = Threshold::new(value, comparison).expect("finite");
        let mut rule = AlertRule::new("r", "m", threshold, Severity::Info, 60 * MS);
        for (actual, verdict) in ACTUALS.into_iter().zip(verdicts.chars()) {
            let mut want = verdict == 'T';
            if comparison == Comparison::Equal && tolerated.contains(&(value, actual)) {
                assert!(!want, "the seed's == is false for {actual} vs {value}");
                want = true;
            }
            let case = format!("{actual} {comparison} {value}");
            assert_eq!(threshold.check(actual), want, "{case}");
            rule.set_enabled(true);
            assert_eq!(rule.is_triggered(actual), want, "enabled rule: {case}");
            rule.set_enabled(false);
            assert!(
                !rule.is_triggered(actual),
                "a disabled rule never triggers: {case}"
            );
        }
    }
}

fn task(index: usize, total: usize) -> ProcessingTask {
    let info = ChunkInfo {
        index,
        kind: ChunkKind::Bytes,
        source_offset: 0,
        source_len: 1,
        new_bytes: 1,
        start_time: None,
        duration: None,
        overlap: None,
    };
    let chunk = AudioChunk::new(info, Bytes::from_static(b"x"));
    ProcessingTask::new(ProcessingId::generate(), chunk, total)
}

/// `ProcessingTask.get_progress` (seed lines 167–172) for every index of runs of 1 to 7
/// chunks: `(pending or processing or failed, completed)`, compared bit for bit.
#[test]
fn task_progress_matches_the_seed_for_every_position() {
    #[rustfmt::skip]
    let seed: [(usize, usize, f64, f64); 28] = [
        (0, 1, 0.0, 1.0),
        (0, 2, 0.0, 0.5), (1, 2, 0.5, 1.0),
        (0, 3, 0.0, 0.3333333333333333), (1, 3, 0.3333333333333333, 0.6666666666666666),
        (2, 3, 0.6666666666666666, 1.0),
        (0, 4, 0.0, 0.25), (1, 4, 0.25, 0.5), (2, 4, 0.5, 0.75), (3, 4, 0.75, 1.0),
        (0, 5, 0.0, 0.2), (1, 5, 0.2, 0.4), (2, 5, 0.4, 0.6), (3, 5, 0.6, 0.8), (4, 5, 0.8, 1.0),
        (0, 6, 0.0, 0.16666666666666666), (1, 6, 0.16666666666666666, 0.3333333333333333),
        (2, 6, 0.3333333333333333, 0.5), (3, 6, 0.5, 0.6666666666666666),
        (4, 6, 0.6666666666666666, 0.8333333333333334), (5, 6, 0.8333333333333334, 1.0),
        (0, 7, 0.0, 0.14285714285714285), (1, 7, 0.14285714285714285, 0.2857142857142857),
        (2, 7, 0.2857142857142857, 0.42857142857142855),
        (3, 7, 0.42857142857142855, 0.5714285714285714),
        (4, 7, 0.5714285714285714, 0.7142857142857143),
        (5, 7, 0.7142857142857143, 0.8571428571428571), (6, 7, 0.8571428571428571, 1.0),
    ];
    let t = Timestamp::from_nanos(1);
    for (index, total, before, completed) in seed {
        let case = format!("chunk {index} of {total}");
        let mut pending = task(index, total);
        assert_eq!(pending.get_progress().to_bits(), before.to_bits(), "{case}");
        let mut failed = task(index, total);
        failed.fail("boom", t).expect("pending can fail");
        assert_eq!(
            failed.get_progress().to_bits(),
            before.to_bits(),
            "failed {case}"
        );
        pending.start(t).expect("pending starts");
        assert_eq!(
            pending.get_progress().to_bits(),
            before.to_bits(),
            "processing {case}"
        );
        pending
            .complete(ChunkResult::default(), t)
            .expect("processing completes");
        assert_eq!(
            pending.get_progress().to_bits(),
            completed.to_bits(),
            "done {case}"
        );
    }
    // Differs (documented at `ProcessingTask::get_progress`): the seed does not check
    // `index < total_chunks` and gives 1.5 for index 5 of 4, completed; here a chunk at or past
    // the total counts as the last, so progress never passes 1.0.
    let mut beyond = task(5, 4);
    assert_eq!(beyond.get_progress(), 1.0);
    beyond.start(t).expect("pending starts");
    beyond
        .complete(ChunkResult::default(), t)
        .expect("processing completes");
    assert_eq!(beyond.get_progress(), 1.0);
    assert_eq!(task(4, 4).get_progress(), 1.0);
    // Differs (documented at `ProcessingTask::get_progress`): zero chunks raised
    // ZeroDivisionError in the seed; here they count as done.
    assert_eq!(task(0, 0).get_progress(), 1.0);
}

/// `CacheEntry.is_expired`, `touch` and `update_value` (seed lines 104–117) replayed on a
/// clock that moves only when told. The seed added the `TTL` object itself to a datetime (a
/// `TypeError`); the reference run gives it the TTL's `timedelta`, as it evidently meant.
#[test]
fn cache_entry_expiry_touch_and_update_follow_the_seed() {
    let clock = ManualClock::new();
    let ttl = Ttl::seconds(10).expect("positive");
    let key = CacheKey::from_content(b"audio", "transcript").expect("valid prefix");
    let mut entry = CacheEntry::new(key, &b"old"[..], Some(ttl), &clock);
    let micros = |t: Timestamp| t.as_nanos() / 1_000;
    enum Op {
        Touch,
        Check,
        Update,
    }
    // (time in µs, op, is_expired, access_count, accessed_at µs, created_at µs) from the seed.
    let trace = [
        (3_000_000, Op::Touch, false, 1, 3_000_000, 0),
        (5_000_000, Op::Touch, false, 2, 5_000_000, 0),
        // Reads do not extend the TTL: it runs from `created_at`, and expiry is strictly after.
        (10_000_000, Op::Check, false, 2, 5_000_000, 0),
        (10_000_001, Op::Check, true, 2, 5_000_000, 0),
        // `update_value` restarts the TTL (reviving the entry) and keeps the reads.
        (12_000_000, Op::Update, false, 2, 5_000_000, 12_000_000),
        (19_000_000, Op::Touch, false, 3, 19_000_000, 12_000_000),
        (22_000_000, Op::Check, false, 3, 19_000_000, 12_000_000),
        (22_000_001, Op::Check, true, 3, 19_000_000, 12_000_000),
    ];
    for (at, op, expired, count, accessed, created) in trace {
        clock.advance(Duration::from_micros(at - micros(clock.now())));
        match op {
            Op::Touch => entry.touch(&clock),
            Op::Check => {}
            Op::Update => entry.update_value(&b"new"[..], Some(ttl), &clock),
        }
        let got = (
            entry.is_expired(&clock),
            entry.access_count(),
            micros(entry.accessed_at()),
            micros(entry.created_at()),
        );
        assert_eq!(got, (expired, count, accessed, created), "at {at} µs");
    }

    // A cache's replace is the seed's `update_value`: the TTL restarts and the reads are kept.
    // Differs (documented at `CacheEntry::accessed_at`): it also stamps `accessed_at`.
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .default_ttl(ttl)
        .clock(clock.clone())
        .build()
        .expect("valid");
    cache.insert(key, "old").expect("fits");
    clock.advance(Duration::from_secs(3));
    for _ in 0..2 {
        assert!(cache.get(&key).is_some());
    }
    clock.advance(Duration::from_secs(5));
    cache.insert(key, "new").expect("fits");
    let entry = cache.entry(&key).expect("live");
    let at_8_s = Timestamp::from_nanos(8_000_000_000);
    assert_eq!(
        (entry.access_count(), entry.created_at(), entry.expires_at()),
        (2, at_8_s, Some(Timestamp::from_nanos(18_000_000_000)))
    );
    assert_eq!(
        entry.accessed_at(),
        at_8_s,
        "the seed kept the last read, at 3 s"
    );
}

/// `MetricSeries.get_average` (seed lines 228–240): `sum(window) / len(window)`.
///
/// Up to 7 values Python's left-to-right `sum` and numpy's pairwise summation (which issue 7
/// asks for) add in the same order, so the averages are the seed's to the bit. From 8 values
/// on they may differ in the last bits (documented at `MetricSeries::get_average`).
#[test]
fn averages_match_the_seed_up_to_seven_values_and_numpy_beyond() {
    let clock = ManualClock::new();
    let average = |values: &[f64]| {
        let mut series = MetricSeries::with_clock("m", Duration::from_secs(3_600), clock.clone());
        for &v in values {
            series
                .add_value(MetricValue::histogram(v), Tags::default())
                .expect("finite");
        }
        series.get_average(Duration::from_secs(300))
    };
    // (values, the seed's sum/len, numpy.mean)
    let ramp: Vec<f64> = (1..=100).map(|i| f64::from(i) / 1000.0).collect();
    let cancel = [1e16, 1.0, -1e16, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    let cases: [(&[f64], f64, f64); 8] = [
        (&[1.0, 2.0, 3.0, 4.0], 2.5, 2.5),
        (&[0.1, 0.2, 0.3], 0.20000000000000004, 0.20000000000000004),
        (&[0.1; 7], 0.09999999999999999, 0.09999999999999999),
        (&[0.1; 8], 0.09999999999999999, 0.1),
        (&[0.1; 10], 0.09999999999999999, 0.1),
        (&[0.1; 100], 0.09999999999999981, 0.09999999999999998),
        (&ramp, 0.05050000000000001, 0.05050000000000001),
        (&cancel, 0.6666666666666666, 0.5555555555555556),
    ];
    for (values, seed, numpy) in cases {
        let got = average(values);
        assert_eq!(got.to_bits(), numpy.to_bits(), "{} values", values.len());
        if values.len() <= 7 {
            assert_eq!(got.to_bits(), seed.to_bits(), "{} values", values.len());
        }
    }
}
