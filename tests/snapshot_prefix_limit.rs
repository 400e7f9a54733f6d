//! Loads that meet the process-wide prefix table's limit ([`MAX_PREFIXES`]) intern all of a
//! file's new prefixes or none of them, even while other threads intern prefixes.
//!
//! A test binary of its own with a single test: it fills the table, which lasts as long as
//! the process, so no other test could run beside it. The files are written by hand (as
//! another tool would) so that writing them interns nothing.

mod snapshot_files;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::SystemTime;

use memocache::key::MAX_PREFIXES;
use memocache::snapshot::SnapshotError;
use memocache::{Cache, CacheKey, KeyError};
use snapshot_files::{header, record, stream, write_file};

/// Free cells left in the table once it is filled.
const ROOM: usize = 40;
/// Threads racing for the last cells.
const THREADS: usize = 4;
/// Files each thread loads, each needing [`PER_FILE`] new prefixes.
const FILES: usize = 6;
const PER_FILE: usize = 3;

fn key(prefix: &str, digest: u8) -> Result<CacheKey, KeyError> {
    CacheKey::from_digest([digest; 32], prefix)
}

/// Writes a snapshot with one record under each of `prefixes`.
fn write(dir: &Path, name: &str, prefixes: &[String]) -> PathBuf {
    let records: Vec<_> = prefixes
        .iter()
        .map(|prefix| record(prefix, 7, b"value"))
        .collect();
    let path = dir.join(name);
    std::fs::write(
        &path,
        write_file(SystemTime::now(), 1 << 20, &records, None),
    )
    .expect("writes");
    path
}

/// Serves `bytes` up to `limit` and fails any read past it: a decoder that reads on shows
/// as an I/O error.
struct Limited<'a> {
    bytes: &'a [u8],
    pos: usize,
    limit: usize,
}

impl Read for Limited<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.limit && !buf.is_empty() {
            return Err(io::Error::other(format!("read past byte {}", self.limit)));
        }
        let n = buf.len().min(self.limit - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn new_cache() -> Cache {
    Cache::builder().max_bytes(1 << 20).build().expect("builds")
}

/// Whether a load failed on the full table, naming it and that nothing was interned.
fn refused_for_room(result: &Result<memocache::SnapshotReport, SnapshotError>) -> bool {
    matches!(result, Err(SnapshotError::CorruptRecord { reason, .. })
        if reason.contains("too many distinct key prefixes")
            && reason.contains("none of the file's key prefixes was interned"))
}

#[test]
fn a_load_that_does_not_fit_the_prefix_table_interns_none_of_its_prefixes() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Needs one prefix that will be interned and ROOM + 1 new ones: one too many.
    let mut too_many = vec!["fill-0".to_owned()];
    too_many.extend((0..=ROOM).map(|i| format!("many-{i}")));
    let too_many = write(dir.path(), "too-many.snap", &too_many);
    let three: Vec<String> = (0..PER_FILE).map(|i| format!("fits-{i}")).collect();
    let fits = write(dir.path(), "fits.snap", &three);

    // More distinct prefixes than there is room for, all interned by the time they are
    // read (they need no room), then ROOM + 1 new ones, then more records.
    let interned: Vec<String> = (1..=ROOM + 10).map(|i| format!("fill-{i}")).collect();
    let new: Vec<String> = (0..=ROOM).map(|i| format!("early-{i}")).collect();
    let value = [5u8; 4096];
    let mut records: Vec<_> = interned
        .iter()
        .chain(&new)
        .map(|prefix| record(prefix, 7, b"value"))
        .collect();
    let before_tail = records.len();
    // (Digests other than 7, so that no key appears twice: the file is valid throughout.)
    records.extend((100..164u8).map(|i| record("fill-1", i, &value)));
    let (refusing, last_new) = (&records[..before_tail], &records[..before_tail - 1]);
    let early = write_file(SystemTime::now(), 1 << 20, &records, None);
    // Where the tail starts (the stream of the records before it, less its end marker), and
    // where the record of the last new prefix starts.
    let header_len = header(SystemTime::now(), 0, 1 << 20).len();
    let tail_at = header_len + stream(refusing, None).len() - 9;
    let last_new_at = header_len + stream(last_new, None).len() - 9;
    // The same records, then garbage: a load that read on would report the garbage.
    let mut garbage = header(SystemTime::now(), 0, 1 << 20);
    garbage.extend_from_slice(&stream(refusing, None)[..tail_at - header_len]);
    garbage.extend_from_slice(&[0x07; 4096]);
    let garbage_path = dir.path().join("garbage.snap");
    std::fs::write(&garbage_path, &garbage).expect("writes");
    let only_interned = write(dir.path(), "only-interned.snap", &interned);

    // Nothing else in this process interns: the table holds exactly what this test puts in.
    for i in 0..MAX_PREFIXES - ROOM {
        key(&format!("fill-{i}"), 0).expect("the table has room");
    }

    // Bug: the refusal came only after the whole input was read, hashed and checked. It now
    // comes at the record whose prefix is one more than the table has room for — not
    // earlier: the interned prefixes before it needed none — and nothing after it is read.
    let refused = memocache::snapshot::read_snapshot(Limited {
        bytes: &early,
        pos: 0,
        limit: tail_at,
    });
    assert!(
        matches!(&refused, Err(SnapshotError::CorruptRecord { at, reason })
            if *at == last_new_at as u64 && reason.contains("too many distinct key prefixes")),
        "{refused:?}"
    );
    let cache = new_cache();
    assert!(refused_for_room(&cache.load_snapshot(&garbage_path)));
    assert!(cache.is_empty());
    let refused = memocache::snapshot::read_snapshot_file(&garbage_path).map(|_| ());
    assert!(
        matches!(&refused, Err(SnapshotError::CorruptRecord { reason, .. }) if reason.contains("too many distinct key prefixes")),
        "{refused:?}"
    );
    // Interned prefixes need no room, however many.
    let report = cache
        .load_snapshot(&only_interned)
        .expect("nothing new to intern");
    assert_eq!(report.restored, (ROOM + 10) as u64);
    cache.clear();

    let cache = new_cache();
    let refused = cache.load_snapshot(&too_many);
    assert!(refused_for_room(&refused), "{refused:?}");
    assert!(cache.is_empty());
    let refused = memocache::snapshot::read_snapshot_file(&too_many).map(|_| ());
    assert!(
        matches!(&refused, Err(SnapshotError::CorruptRecord { reason, .. }) if reason.contains("too many distinct key prefixes")),
        "{refused:?}"
    );
    // Nothing was interned: the room is all still there for a file that fits it.
    let report = cache.load_snapshot(&fits).expect("three new prefixes fit");
    assert_eq!(report.restored, PER_FILE as u64);
    let mut used = PER_FILE;

    // Threads race for the rest: each loads files of PER_FILE new prefixes and interns
    // single new prefixes in between, until the table is full.
    let files: Vec<Vec<(PathBuf, Vec<String>)>> = (0..THREADS)
        .map(|t| {
            (0..FILES)
                .map(|f| {
                    let prefixes: Vec<String> =
                        (0..PER_FILE).map(|i| format!("race-{t}-{f}-{i}")).collect();
                    (
                        write(dir.path(), &format!("race-{t}-{f}.snap"), &prefixes),
                        prefixes,
                    )
                })
                .collect()
        })
        .collect();
    let start = Barrier::new(THREADS);
    let (loaded, singles): (Vec<usize>, Vec<usize>) = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(t, files)| {
                let start = &start;
                scope.spawn(move || {
                    let cache = new_cache();
                    start.wait();
                    let (mut loaded, mut singles) = (0, 0);
                    for (f, (path, prefixes)) in files.iter().enumerate() {
                        match cache.load_snapshot(path) {
                            Ok(report) => {
                                assert_eq!(report.restored, PER_FILE as u64);
                                for prefix in prefixes {
                                    assert!(cache.contains_key(&key(prefix, 7).expect("interned")));
                                }
                                loaded += 1;
                            }
                            Err(e) => assert!(refused_for_room(&Err(e))),
                        }
                        match key(&format!("single-{t}-{f}"), 0) {
                            Ok(_) => singles += 1,
                            Err(e) => assert!(matches!(e, KeyError::TooManyPrefixes), "{e}"),
                        }
                    }
                    (loaded, singles)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("no panic"))
            .unzip()
    });
    used += PER_FILE * loaded.iter().sum::<usize>() + singles.iter().sum::<usize>();
    // What is left is exactly the room the successful loads and interns did not take: no
    // failed load took any.
    let mut left = 0;
    while key(&format!("left-{left}"), 0).is_ok() {
        left += 1;
    }
    assert_eq!(used + left, ROOM, "loaded {loaded:?}, singles {singles:?}");
    assert!(
        loaded.iter().sum::<usize>() < THREADS * FILES,
        "the race reached the limit"
    );

    // Full: a file of interned prefixes still loads, one with a new prefix does not.
    assert_eq!(new_cache().load_snapshot(&fits).expect("loads").restored, 3);
    assert!(refused_for_room(&new_cache().load_snapshot(&too_many)));
    // A new prefix is refused before anything is read: the table never frees a cell.
    let mut nothing = Limited {
        bytes: &[],
        pos: 0,
        limit: 0,
    };
    let refused = CacheKey::from_reader(&mut nothing, "after-full");
    assert!(
        matches!(refused, Err(KeyError::TooManyPrefixes)),
        "{refused:?}"
    );
    let interned = CacheKey::from_reader(&b"abc"[..], "fits-0").expect("interned");
    assert_eq!(
        interned,
        CacheKey::from_content(b"abc", "fits-0").expect("interned")
    );
}
