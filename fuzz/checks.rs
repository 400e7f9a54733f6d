//! The fuzzing properties, shared by the cargo-fuzz targets in `fuzz_targets/` and by the
//! stable-toolchain test `tests/fuzz_corpus.rs`, which replays every file under
//! `fuzz/corpus/<target>/` through the same function. There is one copy of each check.
//!
//! Each check takes the raw fuzzer input, decodes what it needs from it with the small,
//! total decoders below (every byte string is a valid input), and panics when a property is
//! violated. A panic is what libFuzzer reports as a crash and what fails the corpus test.
//!
//! To add a target: write `pub fn name(data: &[u8])` here, add it to [`TARGETS`], add
//! `fuzz_targets/name.rs` (a three-line `fuzz_target!` calling it) with its `[[bin]]` entry in
//! `fuzz/Cargo.toml`, and commit seeds under `fuzz/corpus/name/`. The corpus test fails if a
//! target file, a `TARGETS` entry or a corpus directory is missing.

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use memocache::snapshot::{Snapshot, read_snapshot};
use memocache::{Cache, CacheEntry, CacheKey, KeyError, ManualClock, Ttl};

/// A property check over one fuzzer input; panics when the property is violated.
pub type Check = fn(&[u8]);

/// Every check by target name; the corpus test replays `fuzz/corpus/<name>/` through each.
pub const TARGETS: &[(&str, Check)] = &[
    ("key_parse", key_parse),
    ("key_parts", key_parts),
    ("key_stream", key_stream),
    ("snapshot_decode", snapshot_decode),
    ("snapshot_load", snapshot_load),
];

/// `FromStr` never panics; whatever parses displays back as the input with its digest
/// lower-cased (the prefix keeps its case), re-parses to the same key, and every well-formed
/// input parses.
pub fn key_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = text.parse::<CacheKey>();
    let expected = well_formed_key(&text);
    match (parsed, expected) {
        (Ok(key), Some(display)) => {
            assert_eq!(key.to_string(), display, "display of a parsed key");
            assert_eq!(display.parse::<CacheKey>().ok(), Some(key), "re-parse");
            assert_eq!(key.prefix(), display.split_once(':').map_or("", |p| p.0));
        }
        (Ok(key), None) => panic!("{text:?} is malformed but parsed as {key}"),
        // The interner is bounded: a process that has seen too many prefixes refuses new ones.
        (Err(KeyError::TooManyPrefixes), Some(_)) => {}
        (Err(e), Some(_)) => panic!("{text:?} is well formed but was rejected: {e}"),
        (Err(e), None) => assert!(!e.to_string().is_empty()),
    }
}

/// The display form of `text` if it is a well-formed key (`prefix:<64 hex digits>`), decided
/// independently of the parser under test.
fn well_formed_key(text: &str) -> Option<String> {
    let (prefix, digest) = text.split_once(':')?;
    let prefix_ok = (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let digest_ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    (prefix_ok && digest_ok).then(|| format!("{prefix}:{}", digest.to_ascii_lowercase()))
}

/// Distinct part lists never give equal keys through `CacheKey::builder` (in particular,
/// re-splitting the same concatenated bytes at other boundaries changes the key), equal lists
/// give equal keys, and `from_parts` never panics and agrees with the seed's derivation.
pub fn key_parts(data: &[u8]) {
    let mut input = Bytes(data);
    let parts = input.parts();
    // The same bytes as `parts`, cut at other places: the classic ["ab", "c"] / ["a", "bc"].
    let concat = parts.concat();
    let resplit = Bytes(&concat).resplit(&mut input);
    let other = input.parts();

    let key = |list: &[Vec<u8>]| -> CacheKey {
        let builder = CacheKey::builder("fuzz").expect("a valid prefix");
        list.iter().fold(builder, |b, part| b.part(part)).finish()
    };
    let base = key(&parts);
    for list in [&resplit, &other] {
        assert_eq!(
            *list == parts,
            key(list) == base,
            "parts {parts:?} vs {list:?}: equal lists must give equal keys and only they"
        );
    }
    let again = CacheKey::builder("fuzz").expect("a valid prefix");
    assert_eq!(parts.iter().fold(again, |b, p| b.part(p)).finish(), base);

    // from_parts over arbitrary text: never panics; Ok exactly when the inputs are valid,
    // and then the key is SHA-256 of "{lower-case file_hash}:{language}".
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(3, '\n');
    let file_hash = fields.next().unwrap_or("");
    let language = fields.next().unwrap_or("");
    let prefix = fields.next().unwrap_or("");
    let valid = file_hash.len() == 64
        && file_hash.bytes().all(|b| b.is_ascii_hexdigit())
        && (1..=35).contains(&language.len())
        && language
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match CacheKey::from_parts(file_hash, language, prefix) {
        Ok(key) => {
            assert!(valid, "from_parts accepted {file_hash:?} / {language:?}");
            let seed = format!("{}:{language}", file_hash.to_ascii_lowercase());
            let expected = CacheKey::from_content(seed.as_bytes(), prefix).expect("prefix ok");
            assert_eq!(key, expected, "from_parts must be the seed's derivation");
        }
        Err(KeyError::InvalidPrefix { .. } | KeyError::TooManyPrefixes) => {}
        Err(e) => assert!(!valid, "from_parts rejected valid input: {e}"),
    }
    // The same through `transcript`, whose prefix is always valid.
    let transcript = CacheKey::transcript(file_hash, language);
    assert_eq!(
        transcript.is_ok(),
        valid,
        "transcript({file_hash:?}, {language:?})"
    );
}

/// `from_reader` over any split of the input (short reads, interrupted reads, reads that
/// straddle its internal buffer) gives the same key as `from_content`.
pub fn key_stream(data: &[u8]) {
    let mut input = Bytes(data);
    let schedule_len = usize::from(input.byte() % 16);
    let schedule: Vec<Option<usize>> = input
        .take(schedule_len)
        .iter()
        .map(|&b| {
            // 0 stands for an interrupted read; the high bit scales up to cross buffer edges.
            let n = usize::from(b & 0x7f);
            let n = if b & 0x80 != 0 { n * 1021 } else { n };
            (n != 0).then_some(n)
        })
        .collect();
    // Repeating the rest lets short fuzz inputs produce content longer than the 64 KiB buffer.
    let repeat = usize::from(input.byte() % 64) + 1;
    let content = input.0.repeat(repeat);

    let expected = CacheKey::from_content(&content, "stream").expect("a valid prefix");
    let reader = SplitReader {
        data: &content,
        schedule: &schedule,
        step: 0,
    };
    let streamed = CacheKey::from_reader(reader, "stream").expect("a valid prefix");
    assert_eq!(
        streamed,
        expected,
        "schedule {schedule:?}, {} bytes",
        content.len()
    );
}

/// A reader that hands out `data` in the sizes `schedule` gives, cycling; `None` is an
/// `Interrupted` error, which `from_reader` must retry. An empty schedule reads all at once.
struct SplitReader<'a> {
    data: &'a [u8],
    schedule: &'a [Option<usize>],
    step: usize,
}

impl Read for SplitReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = match self.schedule {
            [] => Some(self.data.len()),
            s => s[self.step % s.len()],
        };
        self.step += 1;
        // Bound the interruptions so that a schedule of only `None` still terminates.
        let size = match size {
            None if self.step < 1_000 => {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "fuzz"));
            }
            None => self.data.len(),
            Some(n) => n,
        };
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A reader that hands out its bytes in small, varying pieces (1, 2, 3, 5, 8 or 13 bytes).
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const SIZES: [usize; 6] = [1, 2, 3, 5, 8, 13];
        let n = SIZES[self.step % SIZES.len()]
            .min(buf.len())
            .min(self.data.len());
        self.step += 1;
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A total decoder over the fuzzer's bytes: running out of input yields zeros and empties.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A list of up to 7 parts, each a length byte and that many bytes.
    fn parts(&mut self) -> Vec<Vec<u8>> {
        let count = usize::from(self.byte() % 8);
        (0..count)
            .map(|_| {
                let len = usize::from(self.byte());
                self.take(len).to_vec()
            })
            .collect()
    }

    /// All of `self` cut into parts at offsets read from `cuts` (empty parts included).
    fn resplit(mut self, cuts: &mut Bytes<'_>) -> Vec<Vec<u8>> {
        let count = usize::from(cuts.byte() % 8);
        let mut out: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                let len = usize::from(cuts.byte());
                self.take(len % (self.0.len() + 1)).to_vec()
            })
            .collect();
        if !self.0.is_empty() || count == 0 && cuts.byte() % 2 == 1 {
            out.push(self.0.to_vec());
        }
        out
    }
}

/// Decoding arbitrary bytes as a snapshot never panics and fails with a message, the same
/// whatever the sizes of the reads that deliver the input; whatever decodes is exactly a
/// whole snapshot (one byte less or one byte more is refused), holds unique keys and in-range
/// policy state, and restores into a small cache within its bounds, with every entry
/// accounted for.
///
/// The same bytes go through [`Cache::load_snapshot`] too, into a cache too small for most
/// snapshots (see [`check_file_load`]): from a file, whose two-pass load parses it on its
/// own, and from a pipe, which takes the one-pass path.
///
/// Both format versions are covered: the corpus holds version-1 files and version-2 files
/// with 1 MiB blocks and with 64-byte blocks (so records cross block boundaries).
pub fn snapshot_decode(data: &[u8]) {
    let result = read_snapshot(data);
    check_file_load(data, &result);
    // How the input arrives must not matter: read a few bytes at a time, the same snapshot
    // or the same error (with the same offset) comes out.
    let trickled = read_snapshot(Trickle { data, step: 0 });
    assert_eq!(
        format!("{trickled:?}"),
        format!("{result:?}"),
        "decoding depends on read sizes"
    );
    let snapshot = match result {
        Ok(snapshot) => snapshot,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(
        read_snapshot(&data[..data.len() - 1]).is_err(),
        "a snapshot missing its last byte decoded"
    );
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(
        read_snapshot(&longer[..]).is_err(),
        "a trailing byte was accepted"
    );
    let keys: std::collections::HashSet<CacheKey> =
        snapshot.entries.iter().map(|e| e.key).collect();
    assert_eq!(keys.len(), snapshot.entries.len(), "duplicate keys");
    assert!(
        snapshot.entries.iter().all(|e| e.freq <= 3),
        "frequency out of range"
    );

    let cache = Cache::builder()
        .max_bytes(64 * 1024)
        .max_entries(8)
        .build()
        .expect("a valid configuration");
    let saved_at = snapshot.saved_at;
    let entries = snapshot.entries.len() as u64;
    let report = cache.restore_snapshot(snapshot, saved_at);
    assert_eq!(report.entries, entries);
    assert_eq!(report.restored + report.expired + report.left_out, entries);
    assert_eq!(report.restored, cache.len() as u64);
    assert!(cache.size_bytes() <= cache.max_bytes());
}

/// A valid snapshot shaped by the input — up to 15 entries of up to 255 bytes, with or
/// without TTLs (some run out before the save), and with read counts that move them through
/// the policy's queues — saved by [`Cache::save_snapshot`], passes [`check_file_load`]. Hostile
/// bytes rarely get past the checksums, so this is how the fuzzer reaches the two-pass load's
/// choice of what to keep with inputs it can vary.
pub fn snapshot_load(data: &[u8]) {
    let mut input = Bytes(data);
    let clock = ManualClock::new();
    let source = Cache::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .expect("a valid configuration");
    for i in 0..input.byte() % 16 {
        let spec = input.byte();
        let prefix = ["transcript", "other", "fuzz"][usize::from(spec % 3)];
        let key = CacheKey::from_content(&[i], prefix).expect("a valid prefix");
        let value = vec![spec; usize::from(input.byte())];
        let ttl = input.byte();
        let inserted = match ttl % 4 {
            0 => source.insert(key, value),
            _ => {
                let ttl = Ttl::new(Duration::from_secs(u64::from(ttl) + 1)).expect("a valid TTL");
                source.insert_with_ttl(key, value, ttl)
            }
        };
        inserted.expect("the source cache has room");
        for _ in 0..input.byte() % 8 {
            source.get(&key);
        }
    }
    clock.advance(Duration::from_secs(u64::from(input.byte())));
    let path = load_path().with_extension("saved");
    source
        .save_snapshot(&path)
        .expect("saving the source cache");
    let data = std::fs::read(&path).expect("reading the saved snapshot");
    std::fs::remove_file(&path).expect("removing the saved snapshot");
    let decoded = read_snapshot(&data[..]);
    assert!(
        decoded.is_ok(),
        "a saved snapshot does not decode: {decoded:?}"
    );
    check_file_load(&data, &decoded);
}

/// The entry every [`check_file_load`] cache holds before the load: a load must leave it alone
/// (a failed one must leave the cache exactly as it was).
const PREFILL: &[u8] = b"the entry that was there before the load";

/// A cache with room for two more small entries after [`PREFILL`]: most snapshots do not fit,
/// so a load goes through its two-pass path (one that fits stays one pass). Both caches of a
/// check share one `ManualClock`, so that their entries' times can be compared.
fn small_cache(clock: &ManualClock, prefill: CacheKey) -> Cache {
    let charge = |len: usize| CacheEntry::charged_size(len) as u64;
    let cache = Cache::builder()
        .max_entries(3)
        .max_bytes(charge(PREFILL.len()) + 2 * charge(48))
        .clock(clock.clone())
        .build()
        .expect("a valid configuration");
    cache.insert(prefill, PREFILL).expect("the prefill fits");
    cache
}

/// A path for this process and thread to write the input to; reused for every input (the
/// fuzz loop runs millions), and the file is removed after each load.
fn load_path() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    std::env::temp_dir().join(format!(
        "memocache-fuzz-{}-{thread}.snapshot",
        std::process::id()
    ))
}

/// Loading `data` with [`Cache::load_snapshot`] into a small pre-filled cache agrees with
/// decoding it with [`read_snapshot`] (whose result is `decoded`), both from a regular file
/// (the two-pass load when the snapshot does not fit) and from a pipe (which cannot be read
/// twice: the one-pass load holding every live value): it never panics; it fails exactly
/// when the decoder does, with the same message (both read the same bytes with the same
/// checks, and name no path in content errors); on success the cache holds what
/// [`Cache::restore_snapshot`] of the decoded snapshot keeps in an identical cache (the same
/// entries with the same values, access counts and TTL presence) with the same report but
/// for the file size, within its budget; on failure it is exactly as before.
fn check_file_load(data: &[u8], decoded: &Result<Snapshot, memocache::SnapshotError>) {
    check_load(data, decoded, "file", |cache| {
        let path = load_path();
        std::fs::write(&path, data).expect("writing the input to a temporary file");
        let result = cache.load_snapshot(&path);
        std::fs::remove_file(&path).expect("removing the temporary file");
        result
    });
    #[cfg(target_os = "linux")]
    check_load(data, decoded, "pipe", |cache| load_from_pipe(cache, data));
}

/// [`Cache::load_snapshot`] of `data` written into a pipe by another thread, opened by its
/// `/dev/fd` path as a caller would open a FIFO or `/dev/stdin`.
#[cfg(target_os = "linux")]
fn load_from_pipe(
    cache: &Cache,
    data: &[u8],
) -> Result<memocache::SnapshotReport, memocache::SnapshotError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (mut reader, mut writer) = io::pipe().expect("creating a pipe");
    std::thread::scope(|scope| {
        // Write errors are ignored: the load may stop reading early, and what it read is
        // what is checked. This end of the reader stays open meanwhile, so a write never
        // meets a pipe without readers (SIGPIPE would end a fuzzer's process).
        let writer = scope.spawn(move || {
            let _ = writer.write_all(data);
        });
        let result = cache.load_snapshot(format!("/dev/fd/{}", reader.as_raw_fd()));
        // Whatever the load left unread: the writer finishes, and its end closes.
        io::copy(&mut reader, &mut io::sink()).expect("draining the pipe");
        // Joined, not left to the scope: the scope returns once the writer's closure is done,
        // possibly before its thread has run its thread-local destructors and exited, and
        // LeakSanitizer, checking between two inputs, then reported the thread-local
        // destructor list of the exiting thread as a 32-byte leak (seen once in a 180 s run).
        writer.join().expect("the writer does not panic");
        result
    })
}

/// One source of [`check_file_load`]: `load` loads `data` into the cache it is given.
fn check_load(
    data: &[u8],
    decoded: &Result<Snapshot, memocache::SnapshotError>,
    source: &str,
    load: impl FnOnce(&Cache) -> Result<memocache::SnapshotReport, memocache::SnapshotError>,
) {
    let prefill = CacheKey::from_content(b"prefill", "fuzz").expect("a valid prefix");
    let clock = ManualClock::new();
    let loaded = small_cache(&clock, prefill);
    let result = load(&loaded);

    let snapshot = match (result, decoded) {
        (Ok(report), Ok(snapshot)) => (report, snapshot),
        (Err(load), Err(decode)) => {
            assert_eq!(
                load.to_string(),
                decode.to_string(),
                "load from a {source} vs decode error"
            );
            assert_eq!(loaded.len(), 1, "a failed load changed the cache");
            assert_eq!(
                loaded.size_bytes(),
                CacheEntry::charged_size(PREFILL.len()) as u64
            );
            assert_eq!(loaded.peek(&prefill).as_deref(), Some(PREFILL));
            return;
        }
        (Ok(report), Err(e)) => {
            panic!("the decoder refused ({e}) what the load from a {source} took: {report:?}")
        }
        (Err(e), Ok(_)) => panic!("the load from a {source} refused ({e}) what the decoder took"),
    };
    let (report, snapshot) = snapshot;
    let restored = small_cache(&clock, prefill);
    // After the load: an entry that expires in between is dropped here and kept there, which
    // a fuzzer cannot aim at (it would need a save time and TTL ending within microseconds).
    let mut expected = restored.restore_snapshot(snapshot.clone(), SystemTime::now());
    expected.file_bytes = data.len() as u64;
    assert_eq!(
        report, expected,
        "load from a {source} vs restore_snapshot report"
    );
    assert_eq!(loaded.len(), restored.len());
    assert_eq!(loaded.size_bytes(), restored.size_bytes());
    assert!(loaded.len() as u64 <= loaded.max_entries());
    assert!(loaded.size_bytes() <= loaded.max_bytes());
    // With equal lengths, equal entries under the prefill's key and every key in the file
    // mean equal key sets: nothing else can be in either cache.
    for key in std::iter::once(&prefill).chain(snapshot.entries.iter().map(|e| &e.key)) {
        let (got, want) = (loaded.entry(key), restored.entry(key));
        assert_eq!(got.is_some(), want.is_some(), "{key} kept by one only");
        if let (Some(got), Some(want)) = (got, want) {
            assert_eq!(got.value(), want.value(), "{key}");
            assert_eq!(got.access_count(), want.access_count(), "{key}");
            assert_eq!(got.ttl().is_some(), want.ttl().is_some(), "{key}");
        }
    }
}
