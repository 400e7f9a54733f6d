//! The file format as documented in `memocache::snapshot`, written by hand here as another
//! tool would: such files load, and files that are well-formed and correctly checksummed but
//! say something invalid are refused without touching the cache.

use std::time::{Duration, SystemTime};

use memocache::snapshot::{FORMAT_VERSION, MAGIC, SnapshotError, read_snapshot};
use memocache::{Cache, CacheKey, codec};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The documented record head.
#[derive(Serialize)]
struct Head<'a> {
    prefix: &'a str,
    digest: [u8; 32],
    ttl_nanos: Option<u64>,
    access_count: u64,
    freq: u8,
    main: bool,
    value_len: u64,
}

struct Record<'a> {
    head: Head<'a>,
    value: &'a [u8],
}

fn record<'a>(prefix: &'a str, digest: u8, value: &'a [u8]) -> Record<'a> {
    Record {
        head: Head {
            prefix,
            digest: [digest; 32],
            ttl_nanos: None,
            access_count: 0,
            freq: 0,
            main: false,
            value_len: value.len() as u64,
        },
        value,
    }
}

/// Header, records and end marker per the module docs; `count` overrides the record count.
fn write_file(saved_at: SystemTime, records: &[Record], count: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let nanos = saved_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as u64;
    out.extend_from_slice(&nanos.to_le_bytes());
    for record in records {
        let head = codec::encode(&record.head).expect("encodes");
        out.push(0x01);
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(record.value);
    }
    out.push(0x00);
    let count = count.unwrap_or(records.len() as u64);
    out.extend_from_slice(&count.to_le_bytes());
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
    let bytes = write_file(now - Duration::from_secs(3_600), &[stale, fresh, hot], None);

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
            write_file(now, &[record("no spaces", 1, b"x")], None),
        ),
        ("frequency", write_file(now, &[bad_freq], None)),
        (
            "appears twice",
            write_file(now, &[record("t", 1, b"a"), record("t", 1, b"b")], None),
        ),
        (
            "end marker counts 3",
            write_file(now, &[record("t", 1, b"a")], Some(3)),
        ),
        ("truncated at byte", write_file(now, &[huge], None)),
        ("head length 0", {
            let mut bytes = write_file(now, &[], None);
            bytes.truncate(24);
            bytes.extend_from_slice(&[0x01, 0, 0, 0, 0, 0x00]);
            bytes.extend_from_slice(&0u64.to_le_bytes());
            let checksum = Sha256::digest(&bytes);
            bytes.extend_from_slice(&checksum);
            bytes
        }),
        ("reserved header flags", {
            let mut bytes = write_file(now, &[], None);
            bytes.truncate(bytes.len() - 32);
            bytes[12] = 1;
            let checksum = Sha256::digest(&bytes);
            bytes.extend_from_slice(&checksum);
            bytes
        }),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(key("t", 9), "resident").expect("inserts");
    for (problem, bytes) in cases {
        let err = read_snapshot(&bytes[..]).expect_err(problem);
        assert!(err.to_string().contains(problem), "{problem}: {err}");
        let path = dir.path().join("case.snap");
        std::fs::write(&path, &bytes).expect("writes");
        let err = cache.load_snapshot(&path).expect_err(problem);
        assert!(err.to_string().contains(problem), "{problem}: {err}");
        assert_eq!(cache.len(), 1, "{problem}");
        assert!(!cache.contains_key(&key("t", 1)), "{problem}");
    }
    // The huge claimed length is checked against the input, not allocated.
    let mut huge = record("t", 1, b"");
    huge.head.value_len = 1 << 62;
    let bytes = write_file(now, &[huge], None);
    assert!(matches!(
        read_snapshot(&bytes[..]),
        Err(SnapshotError::Truncated { .. })
    ));
}
