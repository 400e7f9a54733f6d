//! Failure paths that need the crate's internals: a write that fails midway (a full disk)
//! must leave the previous snapshot intact and no temporary file behind.

use std::fs::File;
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
        let result = replace_atomically(&path, file::sync_dir, |file| {
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
        // The save asked for is named, not only the temporary file.
        let named = format!(
            "saving a snapshot to {}: writing its temporary file ",
            path.display()
        );
        assert!(err.to_string().starts_with(&named), "{err}");
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
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "saving a snapshot to {}: its directory {} does not exist",
            path.display(),
            dir.path().join("missing").display()
        )),
        "{message}"
    );
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

/// Bug: a save renamed its temporary file over whatever held the name. A FIFO (or, for a
/// root process, a device such as `/dev/full`) was replaced by a regular file and the save
/// reported success; a directory was refused only by the rename, after the whole snapshot
/// had been written. Now anything but a regular file is refused before a byte is written,
/// and the node is left as it was (a link to a FIFO too: the save follows links).
#[cfg(unix)]
#[test]
fn a_save_refuses_a_target_that_is_not_a_regular_file() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().expect("creates a temp dir");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    for i in 0..10u32 {
        let key = CacheKey::from_content(&i.to_le_bytes(), "t").expect("key");
        cache.insert(key, vec![i as u8; 100]).expect("inserts");
    }
    let fifo = dir.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("runs mkfifo");
    assert!(status.success());
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&fifo, &link).expect("links");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("creates a directory");
    std::fs::write(sub.join("inner"), b"kept").expect("writes");

    for (target, named, why) in [
        (&fifo, &fifo, "it is not a regular file"),
        (&link, &fifo, "it is not a regular file"),
        (&sub, &sub, "it is a directory"),
    ] {
        let err = cache.save_snapshot(target).expect_err("refused");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("saving a snapshot to {}: {why}", named.display())),
            "{message}"
        );
    }
    let kind = |path: &Path| std::fs::symlink_metadata(path).expect("exists").file_type();
    assert!(kind(&fifo).is_fifo(), "the FIFO is still a FIFO");
    assert!(kind(&link).is_symlink(), "the link is still a link");
    assert!(kind(&sub).is_dir());
    assert_eq!(std::fs::read(sub.join("inner")).expect("reads"), b"kept");
    assert_eq!(
        files_in(dir.path()),
        ["link", "pipe", "sub"],
        "no temporary file"
    );
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
/// behind, named after the process id and a per-process sequence number. The next save to
/// that target removes such leftovers — including ones named with this very process id (a
/// container's PID 1 restarting, or ids wrapping) — but not a temporary file a live save
/// holds, nor anything that is not a temporary name of this target.
#[test]
fn a_save_removes_stale_temp_files_of_its_target_but_not_a_live_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let pid = std::process::id();
    // Every name this process could use for its next saves, as a crashed predecessor with
    // the same id would have left them, and one of another process.
    let mut stale: Vec<String> = (0..64)
        .map(|seq| format!(".cache.snap.{pid}.{seq}.tmp"))
        .collect();
    stale.push(".cache.snap.1.0.tmp".into());
    for name in &stale {
        std::fs::write(dir.path().join(name), b"half a snapshot").expect("writes");
    }
    // Not this target's temporary names: never touched.
    let unrelated = [
        ".other.snap.1.0.tmp",
        "cache.snap.1.0.tmp",
        ".cache.snap.1.x.tmp",
        ".cache.snap.1.0.1.tmp",
        ".cache.snap.1.0.tmp.bak",
    ];
    for name in unrelated {
        std::fs::write(dir.path().join(name), b"someone's").expect("writes");
    }
    // A save in progress elsewhere (another thread or process) holds its file's lock.
    let live_name = ".cache.snap.4242.7.tmp";
    let live = File::create(dir.path().join(live_name)).expect("creates");
    live.lock().expect("locks");

    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(audit_key(1), "one").expect("inserts");
    let report = cache.save_snapshot(&path).expect("saves");
    assert_eq!(report.entries, 1);
    assert_eq!(read_snapshot_file(&path).expect("reads").entries.len(), 1);

    let mut expected: Vec<String> = unrelated.iter().map(|n| n.to_string()).collect();
    expected.push(live_name.into());
    expected.push("cache.snap".into());
    expected.sort();
    assert_eq!(
        files_in(dir.path()),
        expected,
        "stale temps removed, the rest kept"
    );

    // Once its saver is gone (the lock dies with it), it is a leftover like the others.
    drop(live);
    cache.save_snapshot(&path).expect("saves");
    expected.retain(|name| name != live_name);
    assert_eq!(files_in(dir.path()), expected);
}

/// Savers that clean up each other's leftovers while they save: the moment between a saver
/// creating its temporary file and locking it is open to another saver's cleanup, which must
/// never cost a save. Many small saves to one path from several threads all succeed, and the
/// path always holds one whole snapshot.
#[test]
fn savers_cleaning_up_concurrently_never_fail_each_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("busy.snap");
    const SAVERS: u8 = 6;
    const SAVES: usize = 40;
    let caches: Vec<Cache> = (0..SAVERS)
        .map(|s| {
            let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
            cache.insert(audit_key(0), vec![s; 64]).expect("inserts");
            cache
        })
        .collect();
    std::thread::scope(|scope| {
        for cache in &caches {
            let path = &path;
            scope.spawn(move || {
                for _ in 0..SAVES {
                    cache.save_snapshot(path).expect("every save succeeds");
                }
            });
        }
    });
    let snapshot = read_snapshot_file(&path).expect("a whole snapshot");
    assert_eq!(snapshot.entries.len(), 1);
    assert_eq!(files_in(dir.path()), ["busy.snap"]);
}

/// The directory sync comes after the rename: when it fails, the new snapshot is already in
/// place. The save says so — [`SnapshotError::NotDurable`], with the save's report — instead
/// of reporting a failed save, and the file there is the new, complete snapshot.
#[test]
fn a_failed_directory_sync_is_reported_as_saved_but_not_durable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(audit_key(1), "old").expect("inserts");
    cache.save_snapshot(&path).expect("saves");
    cache.insert(audit_key(2), "new").expect("inserts");

    fn failing_sync(_dir: &Path) -> io::Result<()> {
        Err(io::Error::other("injected: fsync of the directory failed"))
    }
    let err = cache
        .save_snapshot_with(&path, failing_sync)
        .expect_err("the directory sync failed");
    let SnapshotError::NotDurable {
        dir: synced,
        source,
        report,
    } = &err
    else {
        panic!("expected NotDurable, got {err}");
    };
    assert_eq!(synced, dir.path());
    assert!(source.to_string().contains("injected"), "{source}");
    assert_eq!(report.entries, 2);
    assert_eq!(
        report.file_bytes,
        std::fs::metadata(&path).expect("stat").len()
    );
    let message = err.to_string();
    assert!(
        message.starts_with("snapshot saved, but syncing directory"),
        "{message}"
    );
    // The new snapshot is in place, whole, and nothing else is left.
    assert_eq!(read_snapshot_file(&path).expect("reads").entries.len(), 2);
    assert_eq!(files_in(dir.path()), ["cache.snap"]);
}

/// A correctly checksummed file whose first record has a prefix never seen before and whose
/// later record is refused (a duplicate key, or a prefix no key may have): the load fails and
/// the new prefix was not interned (interning is process-wide and permanent).
#[test]
fn a_snapshot_refused_late_interns_none_of_its_prefixes() {
    /// Writes the records after the first.
    type Rest = fn(&mut format::Encoder<&mut Vec<u8>>) -> io::Result<()>;
    let cases: [(&str, &str, Rest); 2] = [
        ("fresh-d2-dup", "appears twice", |out| {
            let known = audit_key(1);
            out.entry(&known, &Bytes::from_static(b"a"), None, 0, 0, false)?;
            out.entry(&known, &Bytes::from_static(b"b"), None, 0, 0, false)
        }),
        ("fresh-d2-bad", "invalid key prefix", |out| {
            let value = Bytes::from_static(b"x");
            out.record("no spaces", &[2; 32], &value, None, 0, 0, false)
        }),
    ];
    for (fresh, problem, rest) in cases {
        let mut bytes = Vec::new();
        let mut out =
            format::Encoder::new(&mut bytes, SystemTime::now(), 64).expect("writes a header");
        out.record(
            fresh,
            &[1; 32],
            &Bytes::from_static(b"v"),
            None,
            0,
            0,
            false,
        )
        .expect("writes");
        rest(&mut out).expect("writes");
        out.finish().expect("writes");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("crafted.snap");
        std::fs::write(&path, &bytes).expect("writes");

        let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
        let err = cache.load_snapshot(&path).expect_err("refused");
        assert!(err.to_string().contains(problem), "{err}");
        assert!(cache.is_empty());
        let err = read_snapshot(&bytes[..]).expect_err("refused");
        assert!(err.to_string().contains(problem), "{err}");

        // Numbers are handed out in order: had the load interned `fresh`, it would have a
        // lower number than a prefix interned only now.
        let probe = CacheKey::from_digest([0; 32], &format!("{fresh}-probe")).expect("key");
        let fresh = CacheKey::from_digest([0; 32], fresh).expect("key");
        assert!(
            fresh.prefix_number() > probe.prefix_number(),
            "the refused file's prefix was interned"
        );
    }
}

/// Saves ten entries of 1,000 bytes of `marker` to `path` (a snapshot that needs a second
/// pass to load into a cache of a few entries), and returns the file's bytes.
fn save_ten(marker: u8, path: &Path) -> Vec<u8> {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    for i in 0..10 {
        cache
            .insert(audit_key(i), vec![marker; 1000])
            .expect("inserts");
    }
    cache.save_snapshot(path).expect("saves");
    std::fs::read(path).expect("reads")
}

/// A load that needs a second pass (not everything fits) and finds the file rewritten in
/// place between the passes — a different, itself valid snapshot — refuses it and leaves the
/// cache untouched. A file *replaced* by a rename in between is another file: the load goes
/// on reading the one it opened, whole.
#[test]
fn a_snapshot_changed_between_the_two_passes_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    save_ten(1, &path);
    let other = dir.path().join("other.snap");
    save_ten(2, &other);
    let small = || {
        let cache = Cache::builder()
            .max_bytes(1 << 20)
            .max_entries(3)
            .build()
            .expect("builds");
        cache.insert(audit_key(100), "resident").expect("inserts");
        cache
    };

    let cache = small();
    let mut rewritten = false;
    let err = cache
        .load_snapshot_with(&path, || {
            // In place: same file, new content.
            let content = std::fs::read(&other).expect("reads");
            std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .and_then(|mut file| file.write_all(&content))
                .expect("rewrites");
            rewritten = true;
        })
        .expect_err("the file changed");
    assert!(rewritten, "the load made a second pass");
    assert!(
        matches!(err, SnapshotError::ChangedWhileLoading { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was restored"), "{err}");
    assert_eq!(cache.len(), 1, "the cache is untouched");

    // Replaced by a rename: the open file is still the one of the first pass.
    save_ten(1, &path);
    let cache = small();
    let report = cache
        .load_snapshot_with(&path, || {
            std::fs::rename(&other, &path).expect("renames");
        })
        .expect("reads the file it opened");
    assert_eq!((report.restored, report.left_out), (2, 8));
    for i in 0..10 {
        if let Some(value) = cache.get(&audit_key(i)) {
            assert!(value.iter().all(|&b| b == 1), "a value of the first file");
        }
    }
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

/// The new file replaces the old one under its name and keeps its permission bits: a
/// snapshot locked down to `0600` (or opened up to `0644`) stays so after a save. A first
/// save gets the default of any new file (`0666` less the umask).
#[cfg(unix)]
#[test]
fn a_save_keeps_the_permissions_of_the_file_it_replaces() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let mode = |path: &Path| std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777;
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(audit_key(1), "one").expect("inserts");

    let path = dir.path().join("cache.snap");
    cache.save_snapshot(&path).expect("saves");
    let default = dir.path().join("plain");
    File::create(&default).expect("creates");
    assert_eq!(
        mode(&path),
        mode(&default),
        "a new snapshot has the default mode"
    );

    for kept in [0o600, 0o640, 0o604, 0o400] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(kept)).expect("chmod");
        cache.save_snapshot(&path).expect("saves");
        assert_eq!(mode(&path), kept, "mode {kept:o} kept");
        assert_eq!(read_snapshot_file(&path).expect("reads").entries.len(), 1);
    }
}

/// The new file keeps the owner and group of the file it replaces: a root process saving
/// over a snapshot owned by a service's user leaves it that user's (and its mode as it was).
/// Needs the privilege to give files away, which the test run has as root; without it
/// there is nothing to check here (the unprivileged path is `file.rs`'s test).
#[cfg(unix)]
#[test]
fn a_save_keeps_the_owner_and_group_of_the_file_it_replaces() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    cache.insert(audit_key(1), "one").expect("inserts");
    cache.save_snapshot(&path).expect("saves");
    let (service_uid, service_gid) = (4242, 4343);
    if std::os::unix::fs::chown(&path, Some(service_uid), Some(service_gid)).is_err() {
        eprintln!("skipped: this process may not give files away (not root)");
        return;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");

    cache.insert(audit_key(2), "two").expect("inserts");
    cache.save_snapshot(&path).expect("saves over it");
    let saved = std::fs::metadata(&path).expect("stat");
    assert_eq!((saved.uid(), saved.gid()), (service_uid, service_gid));
    assert_eq!(saved.permissions().mode() & 0o7777, 0o640);
    assert_eq!(read_snapshot_file(&path).expect("reads").entries.len(), 2);
}

/// A clock on the wall clock's scale (nanoseconds since the Unix epoch) whose readings take
/// `lag`, as on a preempted thread, so that what a save or load does between reading the
/// wall clock and reading the cache's clock takes real time: with `every_reading`, every
/// reading lags before and after it is sampled; otherwise only the first reading after
/// `armed` is set lags, after it is sampled.
#[derive(Debug)]
struct LaggingWallClock {
    lag: Duration,
    every_reading: bool,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl crate::time::Clock for LaggingWallClock {
    fn now(&self) -> crate::time::Timestamp {
        let around = if self.every_reading {
            self.lag
        } else {
            Duration::ZERO
        };
        let after = if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.lag
        } else {
            around
        };
        std::thread::sleep(around);
        let nanos = since(SystemTime::UNIX_EPOCH, SystemTime::now()).as_nanos();
        std::thread::sleep(after);
        crate::time::Timestamp::from_nanos(u64::try_from(nanos).expect("before 2554"))
    }
}

/// A restored entry must expire no later than the snapshot says (saved_at + TTL left), or
/// a get could return it after its TTL ran out. The import used to read the cache's clock
/// after the wall clock that the elapsed time was measured with, so every restored
/// deadline was late by the time in between (here at least `lag`, with a real clock the
/// time to collect and sort the entries).
#[test]
fn a_restored_deadline_is_never_later_than_the_saved_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let key = CacheKey::from_content(b"lagging", "ttl").expect("key");
    let saver = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    saver
        .insert_with_ttl(key, "v", crate::Ttl::seconds(60).expect("ttl"))
        .expect("inserts");
    saver.save_snapshot(&path).expect("saves");
    let file = read_snapshot_file(&path).expect("reads");
    let saved = &file.entries[0];
    let saved_deadline =
        since(SystemTime::UNIX_EPOCH, file.saved_at) + saved.ttl_remaining.expect("has a TTL");

    let lag = Duration::from_millis(50);
    let loader = Cache::builder()
        .max_bytes(1 << 20)
        .clock(LaggingWallClock {
            lag,
            every_reading: true,
            armed: Default::default(),
        })
        .build()
        .expect("builds");
    let report = loader.load_snapshot(&path).expect("loads");
    assert_eq!(report.restored, 1);
    let entry = loader.entry(&key).expect("restored and live");
    let deadline = entry.expires_at().expect("has a TTL").as_nanos();
    let saved_deadline = u64::try_from(saved_deadline.as_nanos()).expect("fits");
    assert!(
        deadline <= saved_deadline,
        "restored deadline is {} ns past the saved one",
        deadline - saved_deadline
    );
}

/// The saved TTL is counted from the cache-clock reading a save starts with but labelled
/// with the wall-clock save time: that time must not be later than the reading, or every
/// saved deadline is late by the gap. The save read the cache's clock first, so a thread
/// preempted between the two readings saved deadlines that late (here `lag`).
#[test]
fn a_saved_deadline_is_never_later_than_the_entrys_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let key = CacheKey::from_content(b"lagging", "ttl").expect("key");
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(LaggingWallClock {
            lag: Duration::from_millis(50),
            every_reading: false,
            armed: std::sync::Arc::clone(&armed),
        })
        .build()
        .expect("builds");
    cache
        .insert_with_ttl(key, "v", crate::Ttl::seconds(60).expect("ttl"))
        .expect("inserts");
    let deadline = cache
        .entry(&key)
        .and_then(|entry| entry.expires_at())
        .expect("has a TTL")
        .as_nanos();
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    cache.save_snapshot(&path).expect("saves");
    assert!(
        !armed.load(std::sync::atomic::Ordering::SeqCst),
        "the save read the clock"
    );
    let file = read_snapshot_file(&path).expect("reads");
    let saved = since(SystemTime::UNIX_EPOCH, file.saved_at)
        + file.entries[0].ttl_remaining.expect("has a TTL");
    let saved = u64::try_from(saved.as_nanos()).expect("fits");
    assert!(
        saved <= deadline,
        "saved deadline is {} ns past the entry's",
        saved - deadline
    );
}

/// The sizes the module docs give: what a load into a smaller cache keeps of each record on
/// its first pass, against the record head it would otherwise hold.
#[cfg(target_pointer_width = "64")]
#[test]
fn a_rank_is_40_bytes_and_a_record_head_about_110() {
    assert_eq!(std::mem::size_of::<format::Rank>(), 40);
    let head = std::mem::size_of::<format::Record>();
    assert!((100..=120).contains(&head), "{head} bytes");
}

/// A load into a live cache that needs its second pass, and whose file goes bad between the
/// passes (truncated, a body byte flipped, rewritten as another valid snapshot, or as no
/// snapshot), fails and leaves the cache exactly as it was: its entries, its counters and
/// what its eviction listener heard. The second pass's choice used to purge the cache's
/// expired entries (telling the listener and counting them) before the second read, so the
/// failed load had already removed them.
#[test]
fn a_load_failing_in_its_second_read_purges_nothing() {
    use crate::cache::RemovalCause;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let other = save_ten(2, &dir.path().join("other.snap"));
    type Damage = fn(&Path, &[u8], &[u8]);
    let damages: [(&str, Damage); 4] = [
        ("truncated", |path, good, _| {
            std::fs::write(path, &good[..good.len() / 2]).expect("writes")
        }),
        ("a body byte flipped", |path, good, _| {
            let mut bad = good.to_vec();
            bad[good.len() / 2] ^= 0x40;
            std::fs::write(path, bad).expect("writes")
        }),
        ("another snapshot", |path, _, other| {
            std::fs::write(path, other).expect("writes")
        }),
        ("no snapshot", |path, _, _| {
            std::fs::write(path, b"GIF89a, not a snapshot").expect("writes")
        }),
    ];
    for (damage, write_bad) in damages {
        let good = save_ten(1, &path);
        // Room for 4 more entries beside 3 expired and 2 live ones: the 10 of the file do not
        // fit, so the load reads it twice, and its choice counts on the expired entries' room.
        let clock = crate::time::ManualClock::new();
        let (cache, heard) = recording_removals(
            Cache::builder()
                .max_bytes(1 << 20)
                .max_entries(9)
                .clock(clock.clone()),
        );
        insert_expired(&cache, &clock, 100..103);
        for i in 200..202 {
            cache.insert(audit_key(i), "live").expect("inserts");
        }
        let before = (cache.stats(), heard.lock().expect("not poisoned").clone());
        let values = |cache: &Cache| -> Vec<_> {
            (0..10)
                .chain(200..202)
                .map(|i| cache.peek(&audit_key(i)))
                .collect()
        };
        let values_before = values(&cache);

        let mut second_pass = false;
        let err = cache
            .load_snapshot_with(&path, || {
                write_bad(&path, &good, &other);
                second_pass = true;
            })
            .expect_err("the file went bad");
        assert!(second_pass, "{damage}: the load made a second pass");
        let after = (cache.stats(), heard.lock().expect("not poisoned").clone());
        assert_eq!(after, before, "{damage}: {err}");
        assert_eq!(values(&cache), values_before, "{damage}");

        // The good file loads into the same cache: the expired entries make room for it.
        std::fs::write(&path, &good).expect("writes");
        let report = cache.load_snapshot(&path).expect("loads");
        assert_eq!((report.restored, report.left_out), (7, 3), "{damage}");
        let heard = heard.lock().expect("not poisoned");
        assert_eq!(heard.len(), 3, "{damage}");
        assert!(
            heard
                .iter()
                .all(|&(_, cause)| cause == RemovalCause::Expired)
        );
    }
}

/// Writes a snapshot of `entries` (key, value length, access count; no TTL, in the small
/// queue) to `path`, in the given order: a file whose ranking a test sets.
fn save_ranked(path: &Path, entries: &[(CacheKey, usize, u64)]) {
    let file = File::create(path).expect("creates the file");
    let mut out =
        format::Encoder::new(file, SystemTime::now(), format::BLOCK_SIZE).expect("header");
    for &(key, len, access_count) in entries {
        out.entry(
            &key,
            &Bytes::from(vec![7u8; len]),
            None,
            access_count,
            0,
            false,
        )
        .expect("writes");
    }
    out.finish().expect("finishes");
}

/// The value length of an entry charged `charge` bytes.
fn len_charged(charge: u64) -> usize {
    usize::try_from(charge).expect("small") - CacheEntry::charged_size(0)
}

/// What an eviction listener was told, in order.
type Heard = Arc<std::sync::Mutex<Vec<(CacheKey, crate::cache::RemovalCause)>>>;

/// `builder`'s cache, with an eviction listener that records what it is told.
fn recording_removals(builder: CacheBuilder) -> (Cache, Heard) {
    let heard = Heard::default();
    let cache = builder
        .eviction_listener({
            let heard = Arc::clone(&heard);
            move |key, _, cause| heard.lock().expect("not poisoned").push((*key, cause))
        })
        .build()
        .expect("builds");
    (cache, heard)
}

/// Stores `keys` (as [`audit_key`]s) with a TTL of 1 s and lets it pass: entries that have
/// expired but are still held, their room not yet free.
fn insert_expired(cache: &Cache, clock: &crate::time::ManualClock, keys: std::ops::Range<u32>) {
    let ttl = crate::Ttl::seconds(1).expect("positive");
    for i in keys {
        cache
            .insert_with_ttl(audit_key(i), "old", ttl)
            .expect("inserts");
    }
    clock.advance(Duration::from_secs(2));
}

/// A resident key that expires between a two-pass load's first pass (which notes the charge
/// it holds: its entry in the file needs only what it outgrows that by) and the second
/// pass's choice (which counts the room of what has expired by then as free) was counted
/// twice: its room as free, and its entry as replacing it. The choice took values that did
/// not fit together, and the import, choosing again among those alone, stored the big one it
/// had preferred no more and had no value for the small one the ranking keeps instead: one
/// entry restored of the two that fit. The choice now counts the room of what had expired
/// when the charges were noted.
#[test]
fn a_key_expiring_between_the_passes_is_not_counted_as_free_twice() {
    use crate::cache::RemovalCause;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let budget = 20_000;
    // Ranked in this order: the resident key's entry, a big one, two small ones. The resident
    // key's entry and one small one fit; the big one fits only beside the resident key's
    // entry counted as free.
    let (held, big, small) = (10_000, 14_000, 7_000);
    save_ranked(
        &path,
        &[
            (audit_key(1), len_charged(held), 3),
            (audit_key(2), len_charged(big), 2),
            (audit_key(3), len_charged(small), 1),
            (audit_key(4), len_charged(small), 0),
        ],
    );
    let clock = crate::time::ManualClock::new();
    let (cache, heard) =
        recording_removals(Cache::builder().max_bytes(budget).clock(clock.clone()));
    cache
        .insert_with_ttl(
            audit_key(1),
            vec![1u8; len_charged(held)],
            crate::Ttl::seconds(1).expect("positive"),
        )
        .expect("inserts");

    let mut second_pass = false;
    let report = cache
        .load_snapshot_with(&path, || {
            clock.advance(Duration::from_secs(2));
            second_pass = true;
        })
        .expect("loads");
    assert!(second_pass, "the load made a second pass");
    assert_eq!((report.restored, report.left_out), (2, 2));
    assert!(cache.peek(&audit_key(1)).is_some_and(|v| v[0] == 7));
    assert!(cache.peek(&audit_key(3)).is_some());
    assert_eq!(
        *heard.lock().expect("not poisoned"),
        [(audit_key(1), RemovalCause::Expired)]
    );
}

/// The import stores without evicting, and so left out an entry whose room another writer
/// took between its choice and its store, even where expired entries held room enough: it
/// purged them only when the chosen entries did not fit as it chose. (Since session 29 a
/// two-pass load no longer purges them before its second read, which made this the usual
/// case of a load into a cache holding expired entries.) A store that finds no room now
/// purges them and tries again. The other writer here is the eviction listener, told that
/// the first stored entry replaced a value.
#[test]
fn an_import_outrun_by_a_writer_purges_expired_entries_for_room() {
    use crate::cache::{RemovalCause, WeakCache};
    use std::sync::{Arc, Mutex, OnceLock};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    // Least valuable first: the resident key's entry is stored first.
    save_ranked(
        &path,
        &[
            (audit_key(1), 10, 0),
            (audit_key(2), 10, 1),
            (audit_key(3), 10, 2),
        ],
    );
    let clock = crate::time::ManualClock::new();
    let this: Arc<OnceLock<WeakCache>> = Arc::default();
    let heard = Arc::new(Mutex::new(Vec::new()));
    // Room for 2 expired entries, the resident one and 3 more.
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(6)
        .clock(clock.clone())
        .eviction_listener({
            let (this, heard) = (Arc::clone(&this), Arc::clone(&heard));
            move |key, _, cause: RemovalCause| {
                heard.lock().expect("not poisoned").push((*key, cause));
                if cause == RemovalCause::Replaced
                    && let Some(cache) = this.get().and_then(WeakCache::upgrade)
                {
                    for i in 300..303 {
                        cache.insert(audit_key(i), "writer").expect("inserts");
                    }
                }
            }
        })
        .build()
        .expect("builds");
    this.set(cache.downgrade()).expect("set once");
    insert_expired(&cache, &clock, 100..102);
    cache.insert(audit_key(1), "resident").expect("inserts");

    let report = cache.load_snapshot(&path).expect("loads");
    assert_eq!((report.restored, report.left_out), (3, 0));
    for i in (1..4).chain(300..303) {
        assert!(cache.peek(&audit_key(i)).is_some(), "{i}");
    }
    assert_eq!(cache.len(), 6);
    let mut expired: Vec<_> = heard
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|&&(_, cause)| cause == RemovalCause::Expired)
        .map(|&(key, _)| key)
        .collect();
    expired.sort();
    let mut want = [audit_key(100), audit_key(101)];
    want.sort();
    assert_eq!(expired, want);
}

/// A value larger than the cache's whole budget is left out whatever the choice, yet it did
/// not fit the room, so the first pass dropped the values it had kept and the load read and
/// hashed the file a second time, to restore what it had read already. It is now left out as
/// an expired entry is: the load stays one pass.
#[test]
fn a_value_larger_than_the_budget_needs_no_second_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let budget = 100_000;
    let mut entries: Vec<_> = (0..5).map(|i| (audit_key(i), 1_000, 1)).collect();
    entries.insert(2, (audit_key(9), budget as usize, 0));
    save_ranked(&path, &entries);
    let cache = Cache::builder().max_bytes(budget).build().expect("builds");
    let mut second_pass = false;
    let report = cache
        .load_snapshot_with(&path, || second_pass = true)
        .expect("loads");
    assert!(!second_pass, "the load read the file twice");
    assert_eq!((report.restored, report.left_out), (5, 1));
    assert_eq!(
        report.left_out_bytes,
        CacheEntry::charged_size(budget as usize) as u64
    );
    assert!(cache.peek(&audit_key(9)).is_none());
}

/// The first pass measured the file against the room as it is, expired entries holding
/// theirs, while the second pass's choice (and the import) count it free: a file that fits
/// once they are purged was read and hashed twice, its values kept by the first read
/// dropped and read again. The first pass now counts their room too, once an entry does not
/// fit without it.
#[test]
fn a_file_that_fits_once_expired_entries_are_purged_is_read_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let entries: Vec<_> = (0..4).map(|i| (audit_key(i), 100, 0)).collect();
    save_ranked(&path, &entries);
    let clock = crate::time::ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(5)
        .clock(clock.clone())
        .build()
        .expect("builds");
    insert_expired(&cache, &clock, 100..103);
    let mut second_pass = false;
    let report = cache
        .load_snapshot_with(&path, || second_pass = true)
        .expect("loads");
    assert!(!second_pass, "the load read the file twice");
    assert_eq!((report.restored, report.left_out), (4, 0));
    assert_eq!(cache.len(), 4);
    assert_eq!(cache.stats().evictions_expired, 3);
}

/// The cache serves an entry up to and including its deadline (expired means strictly
/// after it, see `CacheEntry::is_expired`), so a save at the deadline writes it with 0 ns
/// left, and a restore with no time passed must keep it as the cache would. The restore
/// dropped a TTL left of exactly zero as expired, so an entry the saving cache still
/// served was gone after the restart.
#[test]
fn an_entry_saved_at_its_deadline_is_restored_as_the_cache_serves_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let key = CacheKey::from_content(b"at the deadline", "ttl").expect("key");
    let clock = crate::time::ManualClock::new();
    let saver = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .expect("builds");
    saver
        .insert_with_ttl(key, "v", crate::Ttl::seconds(10).expect("ttl"))
        .expect("inserts");
    clock.advance(Duration::from_secs(10));
    assert!(
        saver.get(&key).is_some(),
        "the cache serves it at its deadline"
    );
    saver.save_snapshot(&path).expect("saves");
    let snapshot = read_snapshot_file(&path).expect("reads");
    assert_eq!(snapshot.entries[0].ttl_remaining, Some(Duration::ZERO));
    let saved_at = snapshot.saved_at;

    let clock = crate::time::ManualClock::new();
    let loader = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .expect("builds");
    let report = loader.restore_snapshot(snapshot, saved_at);
    assert_eq!((report.restored, report.expired), (1, 0));
    assert_eq!(
        loader.get(&key).as_deref(),
        Some(&b"v"[..]),
        "served at its deadline"
    );
    clock.advance(Duration::from_nanos(1));
    assert!(
        loader.get(&key).is_none(),
        "expired one nanosecond after it"
    );
}

/// A snapshot's entries are public, so one given to [`Cache::restore_snapshot`] may hold a
/// key twice (two merged, say). The key is stored once, with its last entry, as inserting
/// them in order would leave it; the earlier ones are left out. Each copy was chosen and
/// charged as a new entry, so the copies took the room of other keys (here two of the three
/// were left out of a cache with room for all three), and all were reported as restored
/// though they replaced one another.
#[test]
fn a_key_given_twice_to_a_restore_is_stored_once_and_takes_room_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let saver = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    for i in 0..3 {
        saver
            .insert(audit_key(i), vec![i as u8; 10])
            .expect("inserts");
    }
    saver.save_snapshot(&path).expect("saves");
    let mut snapshot = read_snapshot_file(&path).expect("reads");
    let others: Vec<_> = (snapshot.entries[1..].iter())
        .map(|entry| (entry.key, entry.value.clone()))
        .collect();
    let mut again = snapshot.entries[0].clone();
    // Ranked above the others, so the choice takes the copies first.
    again.access_count = 100;
    again.value = Bytes::from_static(b"last");
    snapshot.entries.push(again.clone());
    snapshot.entries.push(again.clone());
    let saved_at = snapshot.saved_at;

    let loader = Cache::builder()
        .max_bytes(1 << 20)
        .max_entries(3)
        .build()
        .expect("builds");
    let report = loader.restore_snapshot(snapshot, saved_at);
    assert_eq!(
        (report.entries, report.restored, report.left_out),
        (5, 3, 2),
        "{report:?}"
    );
    assert_eq!(report.restored_bytes, loader.size_bytes());
    assert_eq!(loader.len(), 3);
    assert_eq!(loader.get(&again.key).as_deref(), Some(&b"last"[..]));
    for (key, value) in others {
        assert_eq!(loader.get(&key), Some(value));
    }
}

/// A save on a host whose wall clock reads before 1970 is refused, naming the clock: the
/// header would say the epoch and a restore would drop every TTL entry as decades expired.
/// The save path reads `SystemTime::now()` itself (no wall clock can be injected), so the
/// check it calls is tested with such a time; the epoch itself and later are accepted.
#[test]
fn a_save_time_before_the_epoch_is_refused() {
    let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
    match dated(before) {
        Err(SnapshotError::ClockBeforeEpoch { before }) => {
            assert_eq!(before, Duration::from_secs(5));
        }
        other => panic!("expected ClockBeforeEpoch, got {other:?}"),
    }
    assert!(dated(SystemTime::UNIX_EPOCH).is_ok());
    assert!(dated(SystemTime::now()).is_ok());
}
