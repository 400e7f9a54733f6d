//! The file format as documented in `memocache::snapshot`, written by hand here as another
//! tool would: such files load, and files that are well-formed and correctly checksummed but
//! say something invalid are refused without touching the cache.

use std::time::{Duration, SystemTime};

mod snapshot_files;

use memocache::snapshot::{FORMAT_VERSION_1, MAGIC, SnapshotError, read_snapshot};
use memocache::{Cache, CacheKey};
use sha2::{Digest, Sha256};
use snapshot_files::{Record, header, nanos, record, stream, v2_file, write_file};

/// A version-1 file: header, stream, SHA-256 of everything before it.
fn v1_file(saved_at: SystemTime, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION_1.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&nanos(saved_at).to_le_bytes());
    out.extend_from_slice(&stream(records, None));
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

fn key(prefix: &str, digest: u8) -> CacheKey {
    CacheKey::from_digest([digest; 32], prefix).expect("valid key")
}

#[test]
fn a_hand_written_file_loads() {
    let now = SystemTime::now();
    let mut hot = record("transcript", 1, b"hello");
    hot.head.access_count = 9;
    hot.head.freq = 3;
    hot.head.main = true;
    let mut stale = record("transcript", 2, b"stale");
    stale.head.ttl_nanos = Some(Duration::from_secs(1_800).as_nanos() as u64);
    let mut fresh = record("chunk", 3, b"fresh");
    fresh.head.ttl_nanos = Some(Duration::from_secs(7_200).as_nanos() as u64);
    // Saved an hour ago: the 30-minute entry has expired since, the 2-hour one has not.
    // 64-byte blocks: the records span several.
    let bytes = write_file(
        now - Duration::from_secs(3_600),
        64,
        &[stale, fresh, hot],
        None,
    );

    let snapshot = read_snapshot(&bytes[..]).expect("decodes");
    assert_eq!(snapshot.entries.len(), 3);
    assert_eq!(snapshot.entries[2].key, key("transcript", 1));
    assert_eq!(&snapshot.entries[2].value[..], b"hello");
    assert_eq!(
        (snapshot.entries[2].access_count, snapshot.entries[2].freq),
        (9, 3)
    );
    assert!(snapshot.entries[2].main);

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hand.snap");
    std::fs::write(&path, &bytes).expect("writes");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let report = cache.load_snapshot(&path).expect("loads");
    assert_eq!(
        (report.restored, report.expired, report.left_out),
        (2, 1, 0)
    );
    assert!(!cache.contains_key(&key("transcript", 2)));
    let fresh = cache.entry(&key("chunk", 3)).expect("restored");
    let left = fresh.ttl().expect("has a TTL").as_duration();
    assert!(
        left <= Duration::from_secs(3_600) && left > Duration::from_secs(3_500),
        "{left:?}"
    );
    assert_eq!(
        cache.entry(&key("transcript", 1)).map(|e| e.access_count()),
        Some(9)
    );
}

/// Each case is a well-formed, correctly checksummed file that says something invalid.
#[test]
fn checksummed_nonsense_is_refused_without_touching_the_cache() {
    let now = SystemTime::now();
    let mut bad_freq = record("t", 1, b"x");
    bad_freq.head.freq = 4;
    let mut huge = record("t", 1, b"");
    huge.head.value_len = 1 << 62;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid key prefix",
            write_file(now, 64, &[record("no spaces", 1, b"x")], None),
        ),
        ("frequency", write_file(now, 64, &[bad_freq], None)),
        (
            "appears twice",
            write_file(now, 64, &[record("t", 1, b"a"), record("t", 1, b"b")], None),
        ),
        (
            "end marker counts 3",
            write_file(now, 64, &[record("t", 1, b"a")], Some(3)),
        ),
        ("truncated at byte", write_file(now, 64, &[huge], None)),
        ("head length 0", {
            let mut stream = vec![0x01, 0, 0, 0, 0, 0x00];
            stream.extend_from_slice(&0u64.to_le_bytes());
            v2_file(&header(now, 0, 64), 64, &stream, None)
        }),
        (
            "reserved header flags",
            v2_file(&header(now, 1, 64), 64, &stream(&[], None), None),
        ),
        (
            "block size 63 is outside 64..=1073741824",
            v2_file(&header(now, 0, 63), 63, &stream(&[], None), None),
        ),
        (
            "trailer lists 2 block digests but the 9-byte record stream has 1 blocks",
            v2_file(&header(now, 0, 64), 64, &stream(&[], None), Some(2)),
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(key("t", 9), "resident").expect("inserts");
    // Room for one entry: a file of two live records is loaded in two passes, whose first
    // keeps ranks only and leaves the key checks to the second.
    let small = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(2)
        .build()
        .expect("builds");
    small.insert(key("t", 9), "resident").expect("inserts");
    for (problem, bytes) in cases {
        let err = read_snapshot(&bytes[..]).expect_err(problem);
        assert!(err.to_string().contains(problem), "{problem}: {err}");
        let path = dir.path().join("case.snap");
        std::fs::write(&path, &bytes).expect("writes");
        for cache in [&cache, &small] {
            let err = cache.load_snapshot(&path).expect_err(problem);
            assert!(err.to_string().contains(problem), "{problem}: {err}");
            assert_eq!(cache.len(), 1, "{problem}");
            assert!(!cache.contains_key(&key("t", 1)), "{problem}");
        }
    }
    // The huge claimed length is checked against the input, not allocated.
    let mut huge = record("t", 1, b"");
    huge.head.value_len = 1 << 62;
    let bytes = write_file(now, 64, &[huge], None);
    assert!(matches!(
        read_snapshot(&bytes[..]),
        Err(SnapshotError::Truncated { .. })
    ));
}

/// Version-1 files (one SHA-256 over everything) are still read.
#[test]
fn a_version_1_file_still_loads() {
    let now = SystemTime::now();
    let mut hot = record("transcript", 1, b"hello");
    hot.head.main = true;
    let bytes = v1_file(now, &[record("chunk", 2, b"x"), hot]);
    let snapshot = read_snapshot(&bytes[..]).expect("decodes");
    assert_eq!(snapshot.entries.len(), 2);
    assert_eq!(snapshot.entries[1].key, key("transcript", 1));
    assert!(snapshot.entries[1].main);

    let mut damaged = bytes.clone();
    let last = damaged.len() - 33;
    damaged[last] ^= 1;
    assert!(matches!(
        read_snapshot(&damaged[..]),
        Err(SnapshotError::ChecksumMismatch { .. })
    ));
}

/// The block size is the writer's choice: one file, many block sizes, same entries.
#[test]
fn any_block_size_in_range_reads_the_same() {
    let now = SystemTime::now();
    let value = vec![5u8; 5_000];
    let records = [
        record("t", 1, b"a"),
        record("t", 2, &value),
        record("t", 3, b""),
    ];
    let expected = read_snapshot(&write_file(now, 1 << 20, &records, None)[..]).expect("decodes");
    for block_size in [64, 65, 100, 4096, 5_000, 5_100, 1 << 30] {
        let bytes = write_file(now, block_size, &records, None);
        assert_eq!(
            read_snapshot(&bytes[..]).expect("decodes"),
            expected,
            "block size {block_size}"
        );
    }
}
