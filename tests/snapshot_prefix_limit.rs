//! Loads that meet the process-wide prefix table's limit ([`MAX_PREFIXES`]) intern all of a
//! file's new prefixes or none of them, even while other threads intern prefixes.
//!
//! A test binary of its own with a single test: it fills the table, which lasts as long as
//! the process, so no other test could run beside it. The files are written by hand (as
//! another tool would) so that writing them interns nothing.

mod snapshot_files;

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::SystemTime;

use memocache::key::MAX_PREFIXES;
use memocache::snapshot::SnapshotError;
use memocache::{Cache, CacheKey, KeyError};
use snapshot_files::{record, write_file};

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

    // Nothing else in this process interns: the table holds exactly what this test puts in.
    for i in 0..MAX_PREFIXES - ROOM {
        key(&format!("fill-{i}"), 0).expect("the table has room");
    }

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
}
