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

use memocache::chunk::{ChunkInfo, ChunkKind, InputFormat};
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
    #[cfg(feature = "trace")]
    ("trace_parse", trace_parse),
    ("codec_decode", codec_decode),
    ("chunk_split", chunk_split),
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
    // and then the key is SHA-256 of "{lower-case file_hash}:{language in canonical case}"
    // (RFC 5646 section 2.1.1), whatever case either was given in.
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
            let canonical = canonical_case(language);
            let seed = format!("{}:{canonical}", file_hash.to_ascii_lowercase());
            let expected = CacheKey::from_content(seed.as_bytes(), prefix).expect("prefix ok");
            assert_eq!(key, expected, "from_parts must be the seed's derivation");
            let shouted = CacheKey::from_parts(
                &file_hash.to_ascii_uppercase(),
                &language.to_ascii_uppercase(),
                prefix,
            );
            assert_eq!(
                shouted.ok(),
                Some(key),
                "case must not matter: {language:?}"
            );
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

/// A valid (ASCII) language tag in the case RFC 5646 section 2.1.1 recommends, written from
/// the RFC rather than from `memocache`'s code: the first subtag and everything from a
/// one-character subtag on in lower case, later two-letter subtags in upper case, later
/// four-letter ones in title case, the rest in lower case; `-` and `_` both separate.
fn canonical_case(language: &str) -> String {
    let mut canonical = String::with_capacity(language.len());
    let mut private_or_extension = false;
    for (n, piece) in language.split_inclusive(['-', '_']).enumerate() {
        let subtag = piece.trim_end_matches(['-', '_']);
        private_or_extension |= subtag.len() == 1;
        let lower = subtag.to_ascii_lowercase();
        canonical += &match subtag.len() {
            _ if n == 0 || private_or_extension => lower,
            2 => subtag.to_ascii_uppercase(),
            4 => subtag[..1].to_ascii_uppercase() + &lower[1..],
            _ => lower,
        };
        canonical += &piece[subtag.len()..];
    }
    canonical
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

/// A reader that hands out the bytes of `data` (borrowed, or owned where the reader must be
/// `'static`) in small, varying pieces (1, 2, 3, 5, 8 or 13 bytes).
struct Trickle<D> {
    data: D,
    at: usize,
    step: usize,
}

impl<D: AsRef<[u8]>> Trickle<D> {
    fn new(data: D) -> Trickle<D> {
        Trickle {
            data,
            at: 0,
            step: 0,
        }
    }
}

impl<D: AsRef<[u8]>> Read for Trickle<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const SIZES: [usize; 6] = [1, 2, 3, 5, 8, 13];
        let rest = &self.data.as_ref()[self.at..];
        let n = SIZES[self.step % SIZES.len()]
            .min(buf.len())
            .min(rest.len());
        self.step += 1;
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
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
    let trickled = read_snapshot(Trickle::new(data));
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

    let new_cache = || {
        Cache::builder()
            .max_bytes(64 * 1024)
            .max_entries(8)
            .build()
            .expect("a valid configuration")
    };
    let cache = new_cache();
    let saved_at = snapshot.saved_at;
    let entries = snapshot.entries.len() as u64;
    // Every entry twice (the entries are public: two copies of one snapshot merged) restores
    // the same as once, the first copies left out: each key is stored once, from its last
    // entry. The copies used to take room of their own and be counted as restored.
    let mut doubled = snapshot.clone();
    doubled.entries.extend(snapshot.entries.iter().cloned());
    let report = cache.restore_snapshot(snapshot, saved_at);
    assert_eq!(report.entries, entries);
    assert_eq!(report.restored + report.expired + report.left_out, entries);
    assert_eq!(report.restored, cache.len() as u64);
    assert!(cache.size_bytes() <= cache.max_bytes());

    let twice = new_cache();
    let twice_report = twice.restore_snapshot(doubled, saved_at);
    assert_eq!(
        (twice_report.restored, twice_report.restored_bytes),
        (report.restored, report.restored_bytes),
        "entries given twice restored differently"
    );
    assert_eq!(twice_report.left_out, report.left_out + entries);
    assert_eq!(
        (twice.len(), twice.size_bytes()),
        (cache.len(), cache.size_bytes())
    );
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
    // Restored with no time passed, every entry the saving cache served comes back, one at
    // its deadline (0 ns left) too: the cache serves an entry until strictly after it. Such
    // an entry was dropped as expired.
    let snapshot = decoded.expect("a saved snapshot decodes, as asserted above");
    let saved_at = snapshot.saved_at;
    let restored = Cache::builder()
        .max_bytes(1 << 20)
        .clock(ManualClock::new())
        .build()
        .expect("a valid configuration");
    let report = restored.restore_snapshot(snapshot, saved_at);
    assert_eq!(
        (report.restored, report.expired),
        (report.entries, 0),
        "a restore with no time passed lost entries the saving cache served"
    );
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

/// How many keys [`trace_parse`] reads of one trace at most: one ARC line may stand for 2^32
/// keys, which is a valid trace but not one a fuzzer can wait for.
#[cfg(feature = "trace")]
const MAX_TRACE_KEYS: usize = 1 << 16;

/// Any file, read as a trace of every format through the entry point `memocache replay` uses
/// ([`TraceReader::open_format`]: the compression told by the file's first bytes, else by its
/// name, then iterating), gives keys and then either a clean end or one typed error naming
/// the file, never a panic, and the iteration ends after the error. The first input byte picks
/// the name (`….trace`, `.trace.gz`, `.trace.xz` or `.trace.zst`), the rest is the file. Only
/// up to [`MAX_TRACE_KEYS`] keys are read.
///
/// The compression it decodes is the one [`opened_as`] predicts from the documented magic
/// numbers, and the read is then exactly [`TraceReader::open_as`]'s with that compression;
/// what it refuses, it refuses with the error predicted. Every file read as it is
/// (`open_as` with [`Compression::None`], whatever its name or first bytes, and what
/// `open_format` reads uncompressed) is also checked against [`expected_trace`], the formats
/// as their documentation describes them: the same keys, and the error at the same line
/// (text) or byte offset (binary). And it reads the same from [`TraceReader::from_reader`]
/// delivering it a few bytes at a time: how the bytes arrive must not matter. And
/// [`TraceReader::from_stream`] (what `memocache replay -` reads standard input with), fed
/// the bytes from memory and labelled with the path, reads what the file does, the
/// compression told or given alike. Fed a few bytes at a time, as a slow pipe feeds it, it
/// ends as the file does: a decoder fed so hands out the text of a corrupt stream before it
/// finds the corruption, which a whole buffer may show it at once, but the reader decodes on
/// past a bad line or record to report the corruption instead. Only the keys may differ
/// then, and either read may lead (see [`check_trickled_stream`]).
///
/// Memory is left to the fuzzer's limits. A zstd frame reserves the window its header
/// declares, up to 128 MiB, when it starts (`seed-zstd-64mib-window` declares 64 MiB in 155
/// bytes), so `-malloc_limit_mb` below 160 reports that bounded reservation as a crash.
#[cfg(feature = "trace")]
pub fn trace_parse(data: &[u8]) {
    use memocache::trace::{Compression, TraceError, TraceFormat, TraceReader};

    let (&mode, content) = data.split_first().unwrap_or((&0, &[]));
    let extension = ["trace", "trace.gz", "trace.xz", "trace.zst"][usize::from(mode % 4)];
    let named = [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
    ][usize::from(mode % 4)];
    let path = load_path().with_extension(extension);
    std::fs::write(&path, content).expect("writing the input to a temporary file");
    let shown = path.display().to_string();
    let head = &content[..content.len().min(6)];
    let opened = opened_as(named, content);
    let opened_read = |reader: Result<TraceReader, TraceError>| match reader {
        Ok(reader) => drain_trace(reader),
        Err(e) => (Vec::new(), TraceEnd::Error(e)),
    };
    let streamed = |format, compression| {
        let bytes = io::Cursor::new(content.to_vec());
        opened_read(TraceReader::from_stream(bytes, format, &path, compression))
    };
    let open = |format, compression: Option<Compression>| {
        let reader = match compression {
            Some(compression) => TraceReader::open_as(&path, format, compression),
            None => TraceReader::open_format(&path, format),
        };
        let read = match reader {
            Ok(reader) => {
                if compression.is_none() {
                    let decoded = match opened {
                        Opened::Decoded(compression) => Some(compression),
                        _ => None,
                    };
                    assert_eq!(Some(reader.compression()), decoded, "{format}: decoded as");
                }
                drain_trace(reader)
            }
            Err(e) => (Vec::new(), TraceEnd::Error(e)),
        };
        assert_eq!(
            as_file(&streamed(format, compression)),
            format!("{read:?}"),
            "{format}, {compression:?}: streamed vs opened"
        );
        let trickle = Trickle::new(content.to_vec());
        let trickled = opened_read(TraceReader::from_stream(
            trickle,
            format,
            &path,
            compression,
        ));
        check_trickled_stream(&read, &trickled, &format!("{format}, {compression:?}"));
        read
    };
    for format in TraceFormat::ALL {
        let read = open(format, None);
        if let TraceEnd::Error(e) = &read.1 {
            let message = e.to_string();
            assert!(
                message.contains(&shown),
                "{format}: {message:?} does not name the file"
            );
            match e {
                TraceError::NotCompressed {
                    compression,
                    head: got,
                    ..
                } => {
                    assert_eq!(opened, Opened::NotCompressed, "{message}");
                    assert_eq!(*compression, named, "{message}");
                    assert_eq!(got[..], head[..], "{message}");
                }
                TraceError::UnsupportedCompression { head: got, .. } => {
                    assert_eq!(opened, Opened::Unsupported, "{message}");
                    assert_eq!(got[..], head[..], "{message}");
                }
                TraceError::Parse { line, reason, .. } => {
                    assert!(*line >= 1 && !reason.is_empty(), "{message}");
                }
                TraceError::ArcRunTooLong { line, count, .. } => {
                    assert!(*line >= 1 && *count > TraceReader::MAX_ARC_RUN, "{message}");
                }
                TraceError::Truncated {
                    offset,
                    got,
                    expected,
                    ..
                } => {
                    assert!(0 < *got && got < expected, "{message}");
                    assert_eq!(*offset, (read.0.len() * expected) as u64, "{message}");
                }
                TraceError::Read { compression, .. } => {
                    assert_ne!(
                        *compression,
                        Compression::None,
                        "{message}: a file read fails"
                    );
                    // Only a file decoded fails so: one refused is refused as predicted.
                    assert_eq!(opened, Opened::Decoded(*compression), "{message}");
                    // A decoder's error is a sentence (with where it is), never its Debug text.
                    assert!(!message.contains(['{', '}']), "{message}");
                }
                _ => panic!("{format}: unexpected error for an existing file: {message}"),
            }
        }
        // Read as it is, explicitly: what the documentation says, whatever the name and the
        // first bytes.
        let raw = open(format, Some(Compression::None));
        check_expected_trace(content, format, &raw);
        match opened {
            Opened::Decoded(Compression::None) => {
                assert_eq!(format!("{read:?}"), format!("{raw:?}"), "{format}: plain");
            }
            // The same as naming the compression the first bytes announce.
            Opened::Decoded(compression) => {
                let given = open(format, Some(compression));
                assert_eq!(
                    format!("{read:?}"),
                    format!("{given:?}"),
                    "{format}: sniffed {compression} vs given"
                );
            }
            Opened::NotCompressed | Opened::Unsupported => {
                assert!(read.0.is_empty(), "{format}: refused, yet keys were read");
                assert!(
                    matches!(read.1, TraceEnd::Error(_)),
                    "{format}: not refused"
                );
            }
        }
        // Owned: `from_reader` takes a `'static` reader.
        let owned = content.to_vec();
        let trickled = drain_trace(TraceReader::from_reader(Trickle::new(owned), format, &path));
        assert_eq!(
            format!("{trickled:?}"),
            format!("{raw:?}"),
            "{format}: reading depends on read sizes"
        );
    }
    std::fs::remove_file(&path).expect("removing the temporary file");
}

/// Checks a stream's read fed a few bytes at a time (`trickled`) against the file's (`read`):
/// the same keys and end. Only where the file's read ends in a
/// [`TraceError::Read`](memocache::trace::TraceError::Read), the corrupt stream found by
/// the decoder, may the keys differ, and then one read's keys start the other's: both
/// decode the same stream, and each loses what its decoder produced in the call that found
/// the corruption (`flate2` returns the error, not those bytes). The trickled read usually
/// has more, from garbage decoded a few bytes a call (so many that it stopped at
/// [`MAX_TRACE_KEYS`], even); but the file's leads where its decoder filled a whole buffer
/// just before the corruption, and the trickled one's last call decoded a few long matches
/// (`regress-gzip-file-read-leads-trickled`: 8,192 keys to 8,160, which failed this check
/// when it wanted the file's first).
#[cfg(feature = "trace")]
fn check_trickled_stream(read: &(Vec<u64>, TraceEnd), trickled: &(Vec<u64>, TraceEnd), what: &str) {
    use memocache::trace::TraceError;

    if !matches!(read.1, TraceEnd::Error(TraceError::Read { .. })) {
        assert_eq!(as_file(trickled), format!("{read:?}"), "{what}: trickled");
        return;
    }
    let (fewer, more) = if trickled.0.len() < read.0.len() {
        (&trickled.0, &read.0)
    } else {
        (&read.0, &trickled.0)
    };
    assert!(more.starts_with(fewer), "{what}: trickled keys");
    if !matches!(trickled.1, TraceEnd::Capped) {
        assert_eq!(
            as_file(&trickled.1),
            format!("{:?}", read.1),
            "{what}: trickled end"
        );
    }
}

/// `read`, of a stream, as [`Debug`] shows it, but as if of the file: a refusal of a stream
/// says it is one (`stream: true`), and is otherwise the file's.
fn as_file(read: &impl std::fmt::Debug) -> String {
    format!("{read:?}").replace("stream: true", "stream: false")
}

/// Checks a read of `content` as an uncompressed trace of `format` against
/// [`expected_trace`].
#[cfg(feature = "trace")]
fn check_expected_trace(
    content: &[u8],
    format: memocache::trace::TraceFormat,
    read: &(Vec<u64>, TraceEnd),
) {
    use memocache::trace::TraceError;

    let expected = expected_trace(content, format);
    assert_eq!(read.0, expected.0, "{format}: keys");
    match (&read.1, &expected.1) {
        (TraceEnd::Clean, TraceEnd::Clean) | (TraceEnd::Capped, TraceEnd::Capped) => {}
        (TraceEnd::Error(TraceError::Parse { line, .. }), TraceEnd::BadLine(want)) => {
            assert_eq!(line, want, "{format}: the bad line");
        }
        (TraceEnd::Error(TraceError::ArcRunTooLong { line, .. }), TraceEnd::RunTooLong(want)) => {
            assert_eq!(line, want, "{format}: the line of the long run")
        }
        (
            TraceEnd::Error(TraceError::Truncated {
                offset,
                got,
                expected,
                ..
            }),
            TraceEnd::Truncated(want),
        ) => assert_eq!((*offset, *got, *expected), *want, "{format}: truncation"),
        (got, want) => panic!("{format}: read {got:?}, expected {want:?}"),
    }
}

/// What [`TraceReader::open_format`](memocache::trace::TraceReader::open_format) makes of a
/// file named as of the compression `named` holding `content`.
#[cfg(feature = "trace")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opened {
    /// Decoded with this compression (`None`: read as it is).
    Decoded(memocache::trace::Compression),
    /// Refused as not of the compression its name gives.
    NotCompressed,
    /// Refused as a bzip2, lz4 or compress stream or a zip archive.
    Unsupported,
}

/// [`Opened`] for a file named as of `named` holding `content`, from the magic numbers as
/// `Compression::from_magic` documents them, decided without the library: the name's own
/// compression where the file starts with its magic number (gzip's two bytes, xz's six,
/// zstd's data or skippable frame), else the compression whose magic number it starts with
/// (gzip's then needs method 8 and no reserved flag), else a refusal of bzip2 (`BZh1` to
/// `BZh9`), lz4 (`04 22 4d 18`, legacy `02 21 4c 18`), compress (`1f 9d`, then a byte with
/// bits 5 and 6 clear and 9 to 16 in its low five) and zip (`PK 03 04`), else a refusal
/// where the name gives a compression, else plain. A file taken for zstd whose skippable
/// frames (lz4 has them too) are followed by one of those refused magic numbers is refused.
#[cfg(feature = "trace")]
fn opened_as(named: memocache::trace::Compression, content: &[u8]) -> Opened {
    let opened = opened_by_head(named, content);
    if opened == Opened::Decoded(memocache::trace::Compression::Zstd)
        && after_skippable_frames(content).is_some_and(|rest| rest.len() >= 4 && refused(rest))
    {
        return Opened::Unsupported;
    }
    opened
}

/// What follows the skippable frames `content` starts with (magic `5X 2a 4d 18`, a 32-bit
/// little-endian length, that many bytes); `None` if it starts with none, or one is cut.
#[cfg(feature = "trace")]
fn after_skippable_frames(mut content: &[u8]) -> Option<&[u8]> {
    let mut skipped = false;
    while content.len() >= 8 && content[0] >> 4 == 5 && content[1..4] == [0x2a, 0x4d, 0x18] {
        let length = u32::from_le_bytes([content[4], content[5], content[6], content[7]]);
        content = content.get(8 + usize::try_from(length).ok()?..)?;
        skipped = true;
    }
    skipped.then_some(content)
}

/// Whether `content` starts as a bzip2, lz4 or compress stream or a zip archive.
#[cfg(feature = "trace")]
fn refused(content: &[u8]) -> bool {
    let compress = content.starts_with(&[0x1f, 0x9d])
        && content.len() >= 3
        && content[2] & 0x60 == 0
        && (9..=16).contains(&(content[2] & 0x1f));
    (content.starts_with(b"BZh") && content.len() >= 4 && (b'1'..=b'9').contains(&content[3]))
        || content.starts_with(&[0x04, 0x22, 0x4d, 0x18])
        || content.starts_with(&[0x02, 0x21, 0x4c, 0x18])
        || compress
        || content.starts_with(b"PK\x03\x04")
}

/// [`opened_as`] by the first bytes alone.
#[cfg(feature = "trace")]
fn opened_by_head(named: memocache::trace::Compression, content: &[u8]) -> Opened {
    use memocache::trace::Compression;

    let zstd = content.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (content.len() >= 4 && content[0] >> 4 == 5 && content[1..4] == [0x2a, 0x4d, 0x18]);
    let xz = content.starts_with(b"\xfd7zXZ\0");
    let gzip = content.starts_with(&[0x1f, 0x8b]);
    let strict_gzip = gzip && content.len() >= 4 && content[2] == 8 && content[3] < 0x20;
    let named_matches = match named {
        Compression::Gzip => gzip,
        Compression::Xz => xz,
        Compression::Zstd => zstd,
        _ => false,
    };
    let unsupported = refused(content);
    if named_matches {
        Opened::Decoded(named)
    } else if strict_gzip {
        Opened::Decoded(Compression::Gzip)
    } else if xz {
        Opened::Decoded(Compression::Xz)
    } else if zstd {
        Opened::Decoded(Compression::Zstd)
    } else if unsupported {
        Opened::Unsupported
    } else if named != Compression::None {
        Opened::NotCompressed
    } else {
        Opened::Decoded(Compression::None)
    }
}

/// How reading a trace ended, for [`trace_parse`]; `BadLine`, `RunTooLong` and `Truncated` are
/// [`expected_trace`]'s predictions of the reader's errors.
#[cfg(feature = "trace")]
#[derive(Debug)]
enum TraceEnd {
    Clean,
    /// [`MAX_TRACE_KEYS`] keys were read; the rest was not looked at.
    Capped,
    Error(memocache::trace::TraceError),
    /// A `Parse` error at this 1-based line.
    BadLine(u64),
    /// An `ArcRunTooLong` error at this 1-based line.
    RunTooLong(u64),
    /// A `Truncated` error: the record's offset, bytes present, bytes a record has.
    Truncated((u64, usize, usize)),
}

/// Up to [`MAX_TRACE_KEYS`] keys of `reader` and how it ended; after an error the reader must
/// yield nothing more.
#[cfg(feature = "trace")]
fn drain_trace(mut reader: memocache::trace::TraceReader) -> (Vec<u64>, TraceEnd) {
    let mut keys = Vec::new();
    while keys.len() < MAX_TRACE_KEYS {
        match reader.next() {
            None => return (keys, TraceEnd::Clean),
            Some(Ok(key)) => keys.push(key),
            Some(Err(e)) => {
                assert!(reader.next().is_none(), "the reader goes on after {e}");
                return (keys, TraceEnd::Error(e));
            }
        }
    }
    (keys, TraceEnd::Capped)
}

/// What an uncompressed trace of `format` holding `content` reads as, per the formats' docs
/// (`memocache::trace::TraceFormat`), decided without the reader: binary records of 8 (`i64be`,
/// big-endian), 4 (`i32be`, big-endian, zero-extended) or 24 bytes (`oracle-general`, the
/// little-endian `u64` at byte 4), a partial last record being a truncation; text lines of at
/// most 4,096 bytes without their line end (`\n`, `\r\n`), a UTF-8 byte-order mark opening
/// the file not counted as text, blank ones skipped, `lirs` a decimal key (signed ones
/// reinterpreted) or `*`, `arc` `start count …` with a count that fits 32 bits standing for
/// the keys `start..start + count`, a count above `MAX_ARC_RUN` refused. At most
/// [`MAX_TRACE_KEYS`] keys.
#[cfg(feature = "trace")]
fn expected_trace(content: &[u8], format: memocache::trace::TraceFormat) -> (Vec<u64>, TraceEnd) {
    use memocache::trace::TraceFormat;

    fn decimal(field: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(field).ok()?;
        (text.parse::<u64>().ok()).or_else(|| text.parse::<i64>().ok().map(|k| k as u64))
    }
    // Pushes a key; `true` once the cap is reached.
    let mut keys = Vec::new();
    let mut push = |key: u64| {
        keys.push(key);
        keys.len() == MAX_TRACE_KEYS
    };
    let record = match format {
        TraceFormat::Int64Be => 8,
        TraceFormat::Int32Be => 4,
        TraceFormat::OracleGeneral => 24,
        TraceFormat::LirsText | TraceFormat::ArcLis => 0,
    };
    if record > 0 {
        let records = content.chunks_exact(record);
        let rest = records.remainder().len();
        for r in records {
            let key = match format {
                TraceFormat::Int64Be => u64::from_be_bytes(r.try_into().expect("8 bytes")),
                TraceFormat::Int32Be => {
                    u64::from(u32::from_be_bytes(r.try_into().expect("4 bytes")))
                }
                _ => u64::from_le_bytes(r[4..12].try_into().expect("8 bytes")),
            };
            if push(key) {
                return (keys, TraceEnd::Capped);
            }
        }
        if rest > 0 {
            let offset = (content.len() - rest) as u64;
            return (keys, TraceEnd::Truncated((offset, rest, record)));
        }
        return (keys, TraceEnd::Clean);
    }
    for (index, line) in content.split_inclusive(|&b| b == b'\n').enumerate() {
        let bad = TraceEnd::BadLine(index as u64 + 1);
        // At most 4,096 bytes, the line end (`\n` or `\r\n`) not counted.
        let line = match line.strip_suffix(b"\n") {
            Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
            None => line,
        };
        if line.len() > 4096 {
            return (keys, bad);
        }
        // A UTF-8 byte-order mark opening the file is not part of the first line.
        let line = match index {
            0 => line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line),
            _ => line,
        };
        let line = line.trim_ascii();
        if line.is_empty() || (format == TraceFormat::LirsText && line == b"*") {
            continue;
        }
        // A run of `count` keys from `start`.
        let run = if format == TraceFormat::LirsText {
            decimal(line).map(|key| (key, 1))
        } else {
            let mut fields = line
                .split(u8::is_ascii_whitespace)
                .filter(|f| !f.is_empty());
            let start = fields.next().and_then(decimal);
            let count = fields.next().and_then(decimal);
            start.zip(count).filter(|&(start, count)| {
                count <= u64::from(u32::MAX) && start.checked_add(count).is_some()
            })
        };
        let Some((start, count)) = run else {
            return (keys, bad);
        };
        if count > memocache::trace::TraceReader::MAX_ARC_RUN {
            return (keys, TraceEnd::RunTooLong(index as u64 + 1));
        }
        for i in 0..count {
            if push(start + i) {
                return (keys, TraceEnd::Capped);
            }
        }
    }
    (keys, TraceEnd::Clean)
}

/// A recursive type for [`codec_decode`]: every kind of nesting the depth bound must stop
/// (newtype, tuple and struct variants, boxes, options, sequences and maps of itself), with
/// string and byte fields whose lengths come from the input.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
    Pair(Box<Tree>, Box<Tree>),
    Named {
        label: String,
        child: Option<Box<Tree>>,
    },
    Bytes(Vec<u8>),
    List(Vec<Tree>),
    Map(std::collections::BTreeMap<String, Tree>),
    Units(Vec<()>),
    Scalars(bool, char, f64, i128),
}

impl Tree {
    /// Levels of `Tree` on the deepest path: 1 for a leaf.
    fn depth(&self) -> usize {
        1 + match self {
            Tree::Node(t) | Tree::Named { child: Some(t), .. } => t.depth(),
            Tree::Pair(a, b) => a.depth().max(b.depth()),
            Tree::List(list) => list.iter().map(Tree::depth).max().unwrap_or(0),
            Tree::Map(map) => map.values().map(Tree::depth).max().unwrap_or(0),
            _ => 0,
        }
    }
}

/// Any bytes decoded by [`memocache::codec::decode`] — as the transcripts the pipeline
/// memoizes, as a recursive [`Tree`], as a cache key and as a list of units — give a value or
/// a `CodecError` naming the type, never a panic, a stack overflow (the `Tree` nests at most
/// [`memocache::codec::MAX_DEPTH`] levels) or an allocation the fuzzer's malloc limit
/// catches, and no decode error is a limit's (a length claimed past the end of the input is
/// a truncation, however large). A decoded value re-encodes to at most as many bytes (bincode's varints may be
/// longer than needed, never shorter), and that encoding decodes to a value that re-encodes
/// to it again. [`Cache::get_typed`] of the same bytes stored under a key gives the same value
/// or the same error, wrapped with the key.
pub fn codec_decode(data: &[u8]) {
    codec_case::<memocache::pipeline::Transcript>(data);
    codec_case::<CacheKey>(data);
    codec_case::<Vec<()>>(data);
    if let Some(tree) = codec_case::<Tree>(data) {
        assert!(tree.depth() <= memocache::codec::MAX_DEPTH, "{tree:?}");
    }

    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .build()
        .expect("a valid configuration");
    let key = CacheKey::from_content(data, "fuzz").expect("a valid prefix");
    if cache.insert(key, data.to_vec()).is_ok() {
        let direct = memocache::codec::decode::<Tree>(data).map(|t| format!("{t:?}"));
        match (cache.get_typed::<Tree>(&key), direct) {
            (Ok(Some(got)), Ok(want)) => assert_eq!(format!("{got:?}"), want),
            (Err(memocache::CodecError::AtKey { key: at, source }), Err(want)) => {
                assert_eq!(at, key);
                assert_eq!(source.to_string(), want.to_string());
            }
            (got, want) => panic!("get_typed gave {got:?}, decode {want:?}"),
        }
    }
}

/// [`codec_decode`]'s checks for one type; the decoded value, if any.
fn codec_case<T>(data: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use memocache::{CodecError, codec};

    let type_name = std::any::type_name::<T>();
    let value = match codec::decode::<T>(data) {
        Ok(value) => value,
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains(type_name), "{message}");
            match e {
                CodecError::TooDeep { limit, .. } => assert_eq!(limit, codec::MAX_DEPTH),
                CodecError::TooManyElements {
                    claimed, budget, ..
                } => assert!(claimed > budget, "{message}"),
                CodecError::TrailingBytes {
                    trailing, total, ..
                } => assert!(0 < trailing && trailing <= total && total == data.len()),
                // `decode` gives bincode no limit: a length claimed past the end of the
                // input, however large, is a truncation (`UnexpectedEnd`).
                CodecError::Decode { .. } => {
                    assert!(!message.contains("LimitExceeded"), "{message}")
                }
                e => panic!("{type_name}: unexpected error {e}"),
            }
            return None;
        }
    };
    let encoded = codec::encode(&value).expect("a decoded value encodes");
    assert!(
        encoded.len() <= data.len(),
        "{type_name}: {value:?} re-encodes to {} bytes from {}",
        encoded.len(),
        data.len()
    );
    let again = codec::decode::<T>(&encoded).expect("a re-encoded value decodes");
    assert_eq!(
        codec::encode(&again).expect("encodes"),
        encoded,
        "{type_name}: {value:?} does not round-trip"
    );
    Some(value)
}

/// The audio splitter over any input bytes and a plan drawn from the input's first 8 bytes
/// (see [`split_case`]): `split` and the stream never panic; each chunk is at most the plan's
/// chunk size (so a header's declared size never sizes a buffer); and the stream either
/// fails with a `SplitError`, after which it yields nothing, or yields chunks that tile the
/// input's audio:
///
/// * byte-split chunks are the input's bytes at their offsets, and their new bytes,
///   concatenated, are the input's bytes from the start (all of them when the length given
///   was right or none was given and the stream ended cleanly);
/// * WAV chunks (a WAV input, or raw PCM) are each a WAV file `hound` reads, whose sizes say
///   what it holds and whose frame size is the input's block align, holding whole input
///   frames that lie inside the input's `data` chunk (or its declared size), new frames
///   following on from the previous chunk's;
/// * `total_chunks` and `total_bytes` are known exactly when a length was given (a header's
///   declared size alone is no total), and then are what a cleanly ended stream yielded;
/// * a stream that ends cleanly has covered the audio to its end: the WAV header's declared
///   size, else the end of the input, whatever length was given (a wrong one fails the
///   stream; it never stops it short or lets it run on);
/// * reading the input a few bytes at a time gives the same chunks or the same error.
pub fn chunk_split(data: &[u8]) {
    use memocache::chunk::split;

    let mut input = Bytes(data);
    let case = split_case(&mut input);
    let content = input.0;
    let input_len = case.input_len(content.len() as u64);
    let chunk_max = case.plan.chunk_bytes_for(input_len);
    let looks_like_wav = content.len() >= 12
        && [&b"RIFF"[..], b"RF64", b"BW64"].contains(&&content[..4])
        && &content[8..12] == b"WAVE";

    let streamed = split(content, &case.plan, input_len);
    let trickled = split(Trickle::new(content), &case.plan, input_len);
    let (mut stream, mut trickled) = match (streamed, trickled) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), Err(t)) => {
            assert_eq!(
                format!("{e:?}"),
                format!("{t:?}"),
                "split depends on read sizes"
            );
            assert!(!e.to_string().is_empty());
            return;
        }
        (s, t) => panic!(
            "split depends on read sizes: {:?} vs {:?}",
            s.err(),
            t.err()
        ),
    };
    let kind = stream.kind();
    let expected_kind = match case.plan.input_format() {
        InputFormat::RawPcm(_) => ChunkKind::Wav,
        InputFormat::Auto if looks_like_wav => ChunkKind::Wav,
        _ => ChunkKind::Bytes,
    };
    assert_eq!(
        kind, expected_kind,
        "a WAV is split on frames, nothing else is"
    );
    // Where the audio is, decided independently of the splitter: the whole input for bytes.
    let audio = match (case.plan.input_format(), kind) {
        (_, ChunkKind::Bytes) => None,
        (InputFormat::RawPcm(spec), _) => Some(AudioRange {
            start: 0,
            declared: input_len,
            frame: u64::from(spec.channels) * u64::from(spec.bits_per_sample.div_ceil(8)),
        }),
        _ => Some(wav_audio_range(content).expect("split took this input for a WAV")),
    };
    let total_chunks = stream.total_chunks();
    let total_bytes = stream.total_bytes();
    assert_eq!(
        (total_chunks.is_some(), total_bytes.is_some()),
        (input_len.is_some(), input_len.is_some()),
        "totals known without a length, or unknown with one"
    );

    let mut count = 0usize;
    // The end, in the input, of the audio the chunks so far have covered.
    let mut covered = audio.as_ref().map_or(0, |a| a.start);
    let ended = loop {
        let (item, again) = (stream.next(), trickled.next());
        assert_eq!(
            format!("{item:?}"),
            format!("{again:?}"),
            "chunks depend on read sizes"
        );
        let chunk = match item {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(chunk)) => chunk,
        };
        let info = *chunk.info();
        let bytes = chunk.data();
        assert_eq!((info.index, info.kind), (count, kind));
        assert!(
            bytes.len() as u64 <= chunk_max,
            "a chunk of {} bytes, over the plan's {chunk_max}",
            bytes.len()
        );
        assert!(
            0 < info.new_bytes && info.new_bytes <= info.source_len,
            "{info:?}"
        );
        // The chunk's first new byte is the first byte no earlier chunk covered.
        assert_eq!(
            info.source_offset + info.source_len - info.new_bytes,
            covered,
            "{info:?}"
        );
        let end = info.source_offset + info.source_len;
        assert!(end <= content.len() as u64, "{info:?} past the input");
        let source = &content[info.source_offset as usize..end as usize];
        match &audio {
            None => assert_eq!(&bytes[..], source, "{info:?}"),
            Some(audio) => check_wav_chunk(bytes, &info, source, audio),
        }
        covered = end;
        count += 1;
    };
    assert!(
        stream.next().is_none() && trickled.next().is_none(),
        "a chunk after the end"
    );
    match ended {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(()) => {
            let start = audio.as_ref().map_or(0, |a| a.start);
            if let Some(total) = total_chunks {
                assert_eq!(count, total, "total_chunks");
            }
            if let Some(total) = total_bytes {
                assert_eq!(covered - start, total, "total_bytes");
            }
            // The audio ends where the WAV header says, else at the end of the input, whatever
            // length was given: a wrong one fails the stream (`Truncated` if too long,
            // `LongerThanGiven` if too short where it would end the audio).
            let header_says = match (&audio, case.plan.input_format()) {
                (_, InputFormat::RawPcm(_)) | (None, _) => None,
                (Some(audio), _) => audio.declared,
            };
            let end = header_says.map_or(content.len() as u64, |d| start.saturating_add(d));
            assert_eq!(
                covered, end,
                "the chunks do not end where the audio does ({:?})",
                case.length
            );
        }
    }
}

/// Where a WAV-split input's audio lies, found without the splitter.
struct AudioRange {
    /// Input offset of the first frame.
    start: u64,
    /// The audio's length in bytes, when the header (or the caller, for raw PCM) says.
    declared: Option<u64>,
    /// Bytes per frame: the input's block align.
    frame: u64,
}

/// Walks the RIFF chunks of a `RIFF`/`RF64`/`BW64` input to its first `data` chunk: where
/// its audio starts, the size its header (or `ds64`) declares (none for the streaming sizes
/// 0 and 0xFFFFFFFF), and the block align of its first `fmt ` chunk.
fn wav_audio_range(wav: &[u8]) -> Option<AudioRange> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(wav.get(at..at + 4)?.try_into().ok()?));
    let is_64 = &wav[..4] != b"RIFF";
    let (mut at, mut frame, mut ds64) = (12usize, None, None);
    loop {
        let (tag, len) = (wav.get(at..at + 4)?, u32_at(at + 4)?);
        let body = at + 8;
        match tag {
            b"data" => {
                let declared = match (len, ds64) {
                    (u32::MAX, Some(ds64)) if ds64 != 0 => Some(ds64),
                    (0 | u32::MAX, _) => None,
                    (len, _) => Some(u64::from(len)),
                };
                return Some(AudioRange {
                    start: body as u64,
                    declared,
                    frame: frame?,
                });
            }
            b"fmt " if frame.is_none() => {
                frame = Some(u64::from(u16::from_le_bytes(
                    wav.get(body + 12..body + 14)?.try_into().ok()?,
                )));
            }
            b"ds64" if is_64 && ds64.is_none() => {
                ds64 = Some(u64::from_le_bytes(
                    wav.get(body + 8..body + 16)?.try_into().ok()?,
                ));
            }
            _ => {}
        }
        at = body + len as usize + len as usize % 2;
    }
}

/// A WAV chunk is a RIFF file whose sizes say what it holds and that `hound` reads, holding
/// `source` (whole frames of the input, inside its audio) after its header.
fn check_wav_chunk(bytes: &[u8], info: &ChunkInfo, source: &[u8], audio: &AudioRange) {
    let payload = source.len();
    let pad = payload % 2;
    assert!(
        bytes.len() >= 44 + payload + pad,
        "{info:?}: {} bytes",
        bytes.len()
    );
    let header = bytes.len() - payload - pad;
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()));
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(u32_at(4), bytes.len() as u64 - 8, "RIFF size");
    assert_eq!(&bytes[header - 8..header - 4], b"data");
    assert_eq!(u32_at(header - 4), payload as u64, "data size");
    assert_eq!(&bytes[header..header + payload], source, "{info:?}");
    let frame = u64::from(u16::from_le_bytes([bytes[32], bytes[33]]));
    assert_eq!(frame, audio.frame, "the chunk's frames are not the input's");
    assert!(
        info.source_offset >= audio.start,
        "{info:?} before the audio"
    );
    assert_eq!(
        (info.source_offset - audio.start) % frame,
        0,
        "{info:?} not on a frame"
    );
    assert_eq!(info.source_len % frame, 0, "{info:?} not whole frames");
    if let Some(declared) = audio.declared {
        // A header may declare up to 2^64 - 1 bytes (ds64): saturate rather than overflow.
        assert!(
            info.source_offset + info.source_len <= audio.start.saturating_add(declared),
            "{info:?} past the declared {declared} bytes of audio"
        );
    }
    let reader = hound::WavReader::new(io::Cursor::new(bytes)).expect("a chunk is a WAV file");
    let sample_bytes = frame / u64::from(reader.spec().channels);
    assert!(
        u64::from(reader.spec().bits_per_sample) <= 8 * sample_bytes,
        "{:?} in {sample_bytes}-byte samples",
        reader.spec()
    );
    assert_eq!(
        u64::from(reader.len()) * sample_bytes,
        payload as u64,
        "hound's sample count"
    );
}

/// How [`chunk_split`] passes the input's length to `split`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Length {
    Unknown,
    Right,
    Longer(u64),
    Shorter(u64),
}

/// A plan and a length mode drawn from the fuzzer's bytes.
struct SplitCase {
    plan: memocache::chunk::ChunkPlan,
    length: Length,
}

impl SplitCase {
    fn input_len(&self, real: u64) -> Option<u64> {
        match self.length {
            Length::Unknown => None,
            Length::Right => Some(real),
            Length::Longer(by) => Some(real.saturating_add(by)),
            Length::Shorter(by) => Some(real.saturating_sub(by)),
        }
    }
}

/// Decodes 8 bytes into a [`SplitCase`]: format (auto, bytes, raw PCM), length (none, right,
/// too long or too short by 1 to 15 bytes or by 2^60), overlap, byte rate, chunk size (1 byte
/// to 64 KiB, a `ChunkSize`, or the automatic one), and a raw PCM layout that may be invalid.
fn split_case(input: &mut Bytes<'_>) -> SplitCase {
    use memocache::chunk::{ChunkPlan, ChunkSize, PcmSpec};

    let flags = input.byte();
    let size = u64::from(u16::from_le_bytes([input.byte(), input.byte()]));
    let overlap = input.byte();
    let rate = input.byte();
    let (channels, bits, sample_rate) = (input.byte(), input.byte(), input.byte());
    let mut plan = match flags >> 6 {
        3 if size % 2 == 0 => ChunkPlan::default(),
        3 => ChunkPlan::new(ChunkSize::new(10 + (size % 16) as u32).expect("10 to 25 MB")),
        _ => ChunkPlan::with_chunk_bytes(size + 1).expect("1 byte to 64 KiB"),
    };
    plan = plan.format(match flags & 3 {
        2 => InputFormat::Bytes,
        3 => InputFormat::RawPcm(PcmSpec {
            channels: u16::from(channels % 8),
            sample_rate: match sample_rate % 4 {
                0 => 8000,
                1 => 1,
                2 => 0,
                _ => u32::MAX / (u32::from(sample_rate) + 1),
            },
            bits_per_sample: u16::from(bits % 41),
            float: bits & 0x80 != 0,
        }),
        _ => InputFormat::Auto,
    });
    if flags & 0x10 != 0 {
        // Up to 127.5 ms: a few frames at 8 kHz, many bytes at a high byte rate.
        plan = plan.overlap(Duration::from_micros(u64::from(overlap) * 500));
    }
    if flags & 0x20 != 0 {
        plan = plan.byte_rate(u64::from(rate) * 16);
    }
    // 1 to 15 bytes off, or wildly: a length no input has must not size anything either.
    let by = match rate % 16 {
        15 => 1 << 60,
        off => u64::from(off) + 1,
    };
    let length = match (flags >> 2) & 3 {
        0 => Length::Unknown,
        1 => Length::Right,
        2 => Length::Longer(by),
        _ => Length::Shorter(by),
    };
    SplitCase { plan, length }
}
