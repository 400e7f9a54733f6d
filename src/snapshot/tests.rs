//! Failure paths that need the crate's internals: a write that fails midway (a full disk)
//! must leave the previous snapshot intact and no temporary file behind.

use std::io::{self, Write};

use super::file::replace_atomically;
use super::*;
use crate::codec;
use crate::key::CacheKey;

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("lists the directory")
        .map(|entry| {
            entry
                .expect("reads an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A writer over the temp file that fails like a full disk after `room` bytes.
struct FullDisk<'a, 'f> {
    file: &'a mut file::Output<'f>,
    room: usize,
}

impl Write for FullDisk<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device",
            ));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        self.file.write(&buf[..n])
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[test]
fn a_full_disk_mid_save_keeps_the_previous_snapshot() {
    let dir = tempfile::tempdir().expect("creates a temp dir");
    let path = dir.path().join("cache.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    for i in 0..20u32 {
        let key = CacheKey::from_content(&i.to_le_bytes(), "t").expect("key");
        cache.insert(key, vec![i as u8; 1000]).expect("inserts");
    }
    cache.save_snapshot(&path).expect("first save");
    let before = std::fs::read(&path).expect("reads the snapshot");
    cache.clear();
    cache
        .insert(CacheKey::from_content(b"new", "t").expect("key"), "new")
        .expect("inserts");

    for room in [0, 1, 100, 5_000, 19_999] {
        let result = replace_atomically(&path, |file| {
            let out = FullDisk { file, room };
            let mut out = format::Encoder::new(out, SystemTime::now(), format::BLOCK_SIZE)?;
            for image in cache.export_shard(0) {
                out.entry(&image.key, &image.value, None, 0, 0, false)?;
            }
            out.entry(
                &CacheKey::from_content(b"big", "t").expect("key"),
                &Bytes::from(vec![7u8; 20_000]),
                None,
                0,
                0,
                false,
            )?;
            out.finish()
        });
        let err = result.expect_err("the disk is full");
        assert!(
            matches!(&err, SnapshotError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull),
            "{err}"
        );
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(std::fs::read(&path).expect("still there"), before);
        assert_eq!(files_in(dir.path()), ["cache.snap"], "temp file removed");
    }
    // And the intact file still loads.
    let restored = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    assert_eq!(restored.load_snapshot(&path).expect("loads").restored, 20);
}

#[test]
fn a_save_into_a_missing_directory_is_a_clean_error() {
    let dir = tempfile::tempdir().expect("creates a temp dir");
    let path = dir.path().join("missing").join("cache.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let err = cache.save_snapshot(&path).expect_err("no such directory");
    assert!(err.to_string().starts_with("creating "), "{err}");
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn a_prefix_longer_than_keys_allow_does_not_decode() {
    use serde::Serialize;
    #[derive(Serialize)]
    struct Head<'a> {
        prefix: &'a str,
        digest: [u8; 32],
    }
    let long = "p".repeat(crate::key::MAX_PREFIX_LEN + 1);
    let bytes = codec::encode(&Head {
        prefix: &long,
        digest: [0; 32],
    })
    .expect("encodes");
    #[derive(serde::Deserialize)]
    struct Decoded {
        _prefix: format::Prefix,
        _digest: [u8; 32],
    }
    assert!(codec::decode::<Decoded>(&bytes).is_err());
    let ok = codec::encode(&Head {
        prefix: "transcript",
        digest: [0; 32],
    })
    .expect("encodes");
    assert!(codec::decode::<Decoded>(&ok).is_ok());
}

/// Times at the edges of what the file can say: a TTL of `u64::MAX` nanoseconds (what a
/// longer one is saved as), a save time at the Unix epoch (more than 50 years of elapsed
/// wall-clock time on restore) and one at the end of the `u64` range (in the future, so no
/// time has passed). Nothing overflows; only what ran out is dropped as expired.
#[test]
fn extreme_ttls_and_save_times_restore_without_overflow() {
    let entries: [(u32, Option<Duration>); 4] = [
        (0, None),
        (1, Some(Duration::MAX)),
        (2, Some(Duration::from_secs(100 * 365 * 24 * 3600))),
        (3, Some(Duration::from_secs(3600))),
    ];
    let write = |saved_at: SystemTime| {
        let mut bytes = Vec::new();
        let mut out = format::Encoder::new(&mut bytes, saved_at, format::BLOCK_SIZE)?;
        for (i, ttl) in entries {
            let key = CacheKey::from_content(&i.to_le_bytes(), "t").expect("key");
            out.entry(&key, &Bytes::from_static(b"v"), ttl, 0, 0, false)?;
        }
        out.finish()?;
        io::Result::Ok(bytes)
    };
    let far_future = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::MAX);
    for (saved_at, live) in [
        (SystemTime::UNIX_EPOCH, 3),
        (SystemTime::UNIX_EPOCH - Duration::from_secs(1), 3),
        (far_future, 4),
    ] {
        let bytes = write(saved_at).expect("encodes");
        let snapshot = read_snapshot(&bytes[..]).expect("decodes");
        let cache = Cache::builder()
            .max_bytes(1 << 20)
            .clock(crate::ManualClock::new())
            .build()
            .expect("builds");
        let report = cache.restore_snapshot(snapshot, SystemTime::now());
        assert_eq!(report.restored, live, "saved at {saved_at:?}");
        assert_eq!(report.expired, 4 - live, "saved at {saved_at:?}");
        let forever = CacheKey::from_content(&1u32.to_le_bytes(), "t").expect("key");
        assert!(cache.get(&forever).is_some());
    }
}

fn audit_key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "audit").expect("valid key")
}

/// A save that crashed between creating its temporary file and the rename leaves the file
/// behind, named after the process id and a per-process sequence number. A later process
/// with the same id (a container's PID 1 restarting, or ids wrapping) must still be able to
/// save: its temporary names run into the leftovers.
#[test]
fn a_temp_file_left_by_a_crashed_save_does_not_block_later_saves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let pid = std::process::id();
    // Every name this process could use for its next saves, as a crashed predecessor with
    // the same id would have left them.
    let stale: Vec<String> = (0..64)
        .map(|seq| format!(".cache.snap.{pid}.{seq}.tmp"))
        .collect();
    for name in &stale {
        std::fs::write(dir.path().join(name), b"half a snapshot").expect("writes");
    }

    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(audit_key(1), "one").expect("inserts");
    let report = cache
        .save_snapshot(&path)
        .expect("saves despite the leftovers");
    assert_eq!(report.entries, 1);
    assert_eq!(read_snapshot_file(&path).expect("reads").entries.len(), 1);

    // The leftovers are not the save's to judge (another process might own them); only the
    // snapshot was added.
    let mut expected = stale.clone();
    expected.push("cache.snap".into());
    expected.sort();
    assert_eq!(files_in(dir.path()), expected);
}

/// Threads saving different caches to one path at once: every save succeeds, the file left
/// is exactly one of the caches (never a mix), and no temporary file remains.
#[test]
fn concurrent_saves_to_one_path_leave_one_whole_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shared.snap");
    const SAVERS: u32 = 4;
    let caches: Vec<Cache> = (0..SAVERS)
        .map(|s| {
            let cache = Cache::builder().max_bytes(8 << 20).build().expect("builds");
            for i in 0..200 {
                // Each saver's values carry its number, so a mixed file would show.
                cache
                    .insert(audit_key(i), vec![s as u8; 1000 + i as usize])
                    .expect("inserts");
            }
            cache
        })
        .collect();
    for _round in 0..5 {
        std::thread::scope(|scope| {
            for cache in &caches {
                let path = &path;
                scope.spawn(move || cache.save_snapshot(path).expect("saves"));
            }
        });
        let snapshot = read_snapshot_file(&path).expect("a whole snapshot");
        assert_eq!(snapshot.entries.len(), 200);
        let saver = snapshot.entries[0].value[0];
        for entry in &snapshot.entries {
            assert!(
                entry.value.iter().all(|&b| b == saver),
                "entries of different saves in one file"
            );
        }
        assert_eq!(files_in(dir.path()), ["shared.snap"]);
    }
}
