//! Damaged files: every flipped byte and every truncation is a clean, named error, and the
//! cache is left exactly as it was.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;
use memocache::snapshot::{SnapshotError, read_snapshot};
use memocache::{Cache, CacheKey, Ttl};

fn key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "chunk").expect("valid key")
}

/// A small but varied snapshot: several shards, TTLs and none, empty and larger values.
fn small_snapshot(path: &Path) -> Vec<u8> {
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .shards(4)
        .build()
        .expect("builds");
    for i in 0..12u32 {
        // Never empty: `errors_name_the_problem` flips the last value byte of the file, and
        // records are saved in an order that depends on the per-process shard hash, so the
        // last record may be any of these (an empty value there made it flip the value's
        // length instead: a parse error, not a checksum mismatch, in about one run in 30).
        let value = vec![i as u8; 1 + (i as usize * 37) % 200];
        if i % 3 == 0 {
            cache.insert(key(i), value).expect("inserts");
        } else {
            let ttl = Ttl::seconds(3_600 + u64::from(i)).expect("positive");
            cache.insert_with_ttl(key(i), value, ttl).expect("inserts");
        }
        for _ in 0..i % 4 {
            cache.get(&key(i));
        }
    }
    cache.save_snapshot(path).expect("saves");
    std::fs::read(path).expect("reads")
}

/// Everything observable about a cache's contents and counters.
#[derive(Debug, PartialEq)]
struct State {
    len: usize,
    size: u64,
    inserts: u64,
    updates: u64,
    values: Vec<Option<Bytes>>,
}

fn state(cache: &Cache) -> State {
    let stats = cache.stats();
    State {
        len: cache.len(),
        size: cache.size_bytes(),
        inserts: stats.inserts,
        updates: stats.updates,
        // Keys 0..12 are in the snapshot; 1000.. are the cache's own.
        values: (0..12)
            .chain(1000..1005)
            .map(|i| cache.peek(&key(i)))
            .collect(),
    }
}

/// Writes `good` to `path` and returns a function that overwrites one byte of it in place
/// (rewriting the file whole for every damage would make the filesystem flush it each time).
fn damage_in_place(path: &Path, good: &[u8]) -> impl FnMut(usize, u8) {
    std::fs::write(path, good).expect("writes");
    let mut file = File::options().write(true).open(path).expect("opens");
    move |offset: usize, byte: u8| {
        file.seek(SeekFrom::Start(offset as u64)).expect("seeks");
        file.write_all(&[byte]).expect("writes");
    }
}

fn resident_cache() -> Cache {
    resident_cache_with_room(u64::MAX)
}

/// The resident cache with room for `entries` more: too few for the whole snapshot, a load
/// keeps record heads only after the first few and needs a second pass.
fn resident_cache_with_room(entries: u64) -> Cache {
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(entries.saturating_add(6))
        .build()
        .expect("builds");
    for i in 1000..1005 {
        cache.insert(key(i), vec![1u8; 50]).expect("inserts");
    }
    // One key the snapshot also has, with another value: a partial restore would replace it.
    cache.insert(key(4), "resident value").expect("inserts");
    cache
}

#[test]
fn every_flipped_byte_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good_path = dir.path().join("good.snap");
    let good = small_snapshot(&good_path);
    assert!(good.len() > 1_000, "covers records, not just the header");
    let roomy = resident_cache();
    let roomy_before = state(&roomy);
    // Every third damage goes to a cache too small for the snapshot (its load hashes most
    // values without keeping them), the others to one with room for all of it.
    let small = resident_cache_with_room(3);
    let small_before = state(&small);
    let path = dir.path().join("bad.snap");
    let mut put = damage_in_place(&path, &good);
    for offset in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let (cache, before) = match flip {
                0x80 => (&small, &small_before),
                _ => (&roomy, &roomy_before),
            };
            let mut bad = good.clone();
            bad[offset] ^= flip;
            put(offset, bad[offset]);
            let err = cache
                .load_snapshot(&path)
                .expect_err("a damaged file is refused");
            assert!(!err.to_string().is_empty());
            assert!(read_snapshot(&bad[..]).is_err(), "offset {offset}");
            assert_eq!(
                &state(cache),
                before,
                "offset {offset} flip {flip:#x}: {err}"
            );
        }
        put(offset, good[offset]);
    }
    assert_eq!(
        std::fs::read(&path).expect("reads"),
        good,
        "load never wrote"
    );
    // The undamaged file still loads, whole or the three that fit and key 4, whose value
    // replaces the resident one and so needs no room of its own.
    assert_eq!(roomy.load_snapshot(&good_path).expect("loads").restored, 12);
    let report = small.load_snapshot(&good_path).expect("loads");
    assert_eq!((report.restored, report.left_out), (4, 8));
    assert_eq!(
        small.peek(&key(4)),
        Some(Bytes::from(vec![4u8; 1 + 4 * 37]))
    );
}

#[test]
fn every_truncation_is_refused_with_its_length() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = small_snapshot(&dir.path().join("good.snap"));
    let cache = resident_cache();
    let before = state(&cache);
    let path = dir.path().join("cut.snap");
    std::fs::write(&path, &good).expect("writes");
    let file = File::options().write(true).open(&path).expect("opens");
    for len in (0..good.len()).rev() {
        let cut = &good[..len];
        file.set_len(len as u64).expect("truncates");
        let err = cache.load_snapshot(&path).expect_err("truncated");
        assert!(
            matches!(err, SnapshotError::Truncated { at } if at == len as u64),
            "length {len}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!("snapshot is truncated at byte {len}")
        );
        let streamed = read_snapshot(cut).expect_err("truncated");
        assert!(
            matches!(streamed, SnapshotError::Truncated { at } if at == len as u64),
            "length {len}: {streamed}"
        );
        assert_eq!(state(&cache), before, "length {len}");
    }
}

#[test]
fn errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = small_snapshot(&dir.path().join("good.snap"));

    let png = b"\x89PNG\r\n\x1a\n0000000000000000";
    let err = read_snapshot(&png[..]).expect_err("foreign");
    assert!(matches!(err, SnapshotError::BadMagic { .. }));
    assert!(err.to_string().contains("bad magic"), "{err}");

    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&3u32.to_le_bytes());
    let err = read_snapshot(&newer[..]).expect_err("newer");
    assert!(matches!(
        err,
        SnapshotError::UnsupportedVersion { version: 3 }
    ));
    assert!(
        err.to_string()
            .contains("unsupported snapshot format version 3"),
        "{err}"
    );

    // One block: the trailer is its count, one digest and the root (72 bytes), after the end
    // marker (9 bytes).
    let mut damaged = good.clone();
    let last_value_byte = good.len() - 72 - 9 - 1;
    damaged[last_value_byte] ^= 1;
    let err = read_snapshot(&damaged[..]).expect_err("damaged");
    assert!(
        matches!(err, SnapshotError::BlockChecksumMismatch { block: 0, start: 28, end, .. }
            if end == good.len() as u64 - 72),
        "{err}"
    );
    assert!(
        err.to_string().contains("checksum mismatch in block 0"),
        "{err}"
    );

    // A damaged digest list or root fails the root check.
    for offset in [good.len() - 64, good.len() - 1] {
        let mut damaged = good.clone();
        damaged[offset] ^= 1;
        let err = read_snapshot(&damaged[..]).expect_err("damaged");
        assert!(
            matches!(err, SnapshotError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    let mut tag = good.clone();
    tag[28] = 0x07;
    let err = read_snapshot(&tag[..]).expect_err("bad tag");
    assert_eq!(
        err.to_string(),
        "corrupt record at byte 28: unknown record tag 0x07"
    );

    let mut trailing = good.clone();
    trailing.push(0);
    let err = read_snapshot(&trailing[..]).expect_err("trailing");
    assert!(matches!(err, SnapshotError::Malformed { .. }), "{err}");
    let path = dir.path().join("trailing.snap");
    std::fs::write(&path, &trailing).expect("writes");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let err = cache.load_snapshot(&path).expect_err("trailing");
    assert!(err.to_string().contains("after the checksum"), "{err}");
    assert!(cache.is_empty());

    let err = cache
        .load_snapshot(dir.path().join("missing.snap"))
        .expect_err("missing");
    assert!(err.to_string().starts_with("opening "), "{err}");
}

/// A snapshot of several blocks (the record stream is cut into 1 MiB blocks, hashed on
/// worker threads): damage in any block is refused naming that block, sampled damage and
/// truncations anywhere are refused, and the cache never changes.
#[test]
fn damage_in_a_multi_block_snapshot_names_its_block() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good_path = dir.path().join("big.snap");
    let cache = Cache::builder()
        .max_bytes(16 << 20)
        .build()
        .expect("builds");
    for i in 0..40u32 {
        // 40 values of 1–140 KiB: about 2.9 MiB, three blocks.
        let value: Vec<u8> = (0..(i as usize + 1) * 3_500)
            .map(|b| (b as u32 ^ i) as u8)
            .collect();
        cache.insert(key(i), value).expect("inserts");
    }
    cache.save_snapshot(&good_path).expect("saves");
    let good = std::fs::read(&good_path).expect("reads");
    let trailer = 8 + 32 * 3 + 32;
    assert_eq!(
        u64::from_le_bytes(
            good[good.len() - trailer..][..8]
                .try_into()
                .expect("8 bytes")
        ),
        3,
        "three blocks"
    );
    let restored = Cache::builder()
        .max_bytes(16 << 20)
        .build()
        .expect("builds");
    assert_eq!(
        restored.load_snapshot(&good_path).expect("loads").restored,
        40
    );
    assert_eq!(restored.get(&key(39)), cache.get(&key(39)));

    let resident = resident_cache();
    let before = state(&resident);
    let path = dir.path().join("bad.snap");
    let mut put = damage_in_place(&path, &good);
    let stream_end = good.len() - trailer;
    for offset in (0..good.len()).step_by(49_999).chain([
        28,
        (1 << 20) + 27,
        (1 << 20) + 28,
        stream_end - 1,
        stream_end,
        good.len() - 1,
    ]) {
        put(offset, good[offset] ^ 0x40);
        let err = resident.load_snapshot(&path).expect_err("damaged");
        assert_eq!(state(&resident), before, "offset {offset}: {err}");
        if let SnapshotError::BlockChecksumMismatch {
            block, start, end, ..
        } = err
        {
            let expected = (offset as u64 - 28) >> 20;
            assert_eq!(block, expected, "offset {offset}");
            assert!((start..end).contains(&(offset as u64)), "offset {offset}");
        }
        put(offset, good[offset]);
    }
    let file = File::options().write(true).open(&path).expect("opens");
    let mut lengths: Vec<usize> = (0..good.len())
        .step_by(39_989)
        .chain([stream_end, good.len() - 1])
        .collect();
    // Longest first: `set_len` to a longer length would pad the file with zeros.
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    for len in lengths {
        file.set_len(len as u64).expect("truncates");
        let err = resident.load_snapshot(&path).expect_err("truncated");
        assert!(
            matches!(err, SnapshotError::Truncated { at } if at == len as u64),
            "length {len}: {err}"
        );
        assert_eq!(state(&resident), before, "length {len}");
    }
}
