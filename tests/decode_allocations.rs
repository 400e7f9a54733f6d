//! Length fields in untrusted bytes must not turn into allocations: a field claiming 2^60
//! bytes (or merely 3 GiB) is refused with a typed error before anything of that size is
//! requested from the allocator.
//!
//! "Not allocated" cannot be observed from outside: on Linux a multi-gigabyte `calloc` of
//! which nothing is touched succeeds and costs nothing, so a decoder that asks for it passes a
//! plain `is_err()` test and then aborts the process on a machine (or under a fuzzer's malloc
//! limit) where the request is refused. This test binary therefore installs a global
//! allocator that records the largest single request made by the current thread, and checks
//! it against a bound; it can also refuse requests above a size, as a machine out of memory
//! does, to show that a refusal is an error rather than an abort.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, SystemTime};

use memocache::snapshot::{FORMAT_VERSION, MAGIC, SnapshotError, read_snapshot};
use memocache::{Cache, CodecError, codec};

/// The system allocator, recording the largest request of each thread and refusing those
/// above the thread's [`REFUSE_ABOVE`].
struct Recording;

thread_local! {
    // Const-initialised and without a destructor: using it never allocates.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static REFUSE_ABOVE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Records a request; `false` if it is to be refused.
fn record(size: usize) -> bool {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    size <= REFUSE_ABOVE.try_with(Cell::get).unwrap_or(usize::MAX)
}

// SAFETY: every call is forwarded unchanged to `System`; recording a size touches only a
// thread-local `Cell`.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !record(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !record(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A refused `realloc` leaves the block as it was, as its contract requires.
        if !record(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Runs `f` and returns its result with the largest single allocation it requested on this
/// thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// Runs `f` on this thread with every allocation request above `limit` bytes refused.
#[cfg(feature = "trace")]
fn refusing_above<T>(limit: usize, f: impl FnOnce() -> T) -> T {
    REFUSE_ABOVE.with(|refuse| refuse.set(limit));
    let out = f();
    REFUSE_ABOVE.with(|refuse| refuse.set(usize::MAX));
    out
}

/// Generous for a few tiny inputs (the file reader's 1 MiB buffer is the largest legitimate
/// request), tiny next to the claims below.
const BOUND: usize = 4 << 20;

/// A version-2 snapshot that is well formed up to one entry record whose head claims
/// `value_len` value bytes, followed by only `present` bytes.
fn snapshot_claiming(value_len: u64, present: usize) -> Vec<u8> {
    let saved = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let nanos = saved.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    out.extend_from_slice(&(nanos.as_nanos() as u64).to_le_bytes());
    out.extend_from_slice(&(1u32 << 20).to_le_bytes());
    // The documented head: prefix "t", digest, no TTL, access count, freq, main, value_len.
    let mut head = vec![1, b't'];
    head.extend_from_slice(&[7; 32]);
    head.extend_from_slice(&[0, 0, 0, 0]);
    head.push(0xFD); // bincode varint: a u64 follows
    head.extend_from_slice(&value_len.to_le_bytes());
    out.push(0x01);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend(std::iter::repeat_n(0xAB, present));
    out
}

/// Asserts that a read of a snapshot claiming a `claim`-byte value was refused as truncated,
/// having allocated at most [`BOUND`] bytes at once.
fn refused_within_bound<T: std::fmt::Debug>(
    claim: u64,
    (result, largest): (Result<T, SnapshotError>, usize),
) {
    assert!(
        matches!(result, Err(SnapshotError::Truncated { .. })),
        "{claim}: {result:?}"
    );
    assert!(largest <= BOUND, "claim {claim}: allocated {largest} bytes");
}

/// Decodes `bytes` as a `T`, which must be refused as a decode error: the largest
/// allocation the attempt made.
fn decode_refused<T: serde::de::DeserializeOwned + std::fmt::Debug>(bytes: &[u8]) -> usize {
    let (result, largest) = largest_allocation(|| codec::decode::<T>(bytes));
    assert!(
        matches!(result, Err(CodecError::Decode { .. })),
        "{result:?}"
    );
    largest
}

#[test]
fn huge_length_claims_are_refused_without_a_huge_allocation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("claims.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");

    for value_len in [1 << 60, u64::MAX, 3 << 30, 1 << 31] {
        let bytes = snapshot_claiming(value_len, 100);
        // Through a reader of unknown length: the value is read as it arrives.
        refused_within_bound(value_len, largest_allocation(|| read_snapshot(&bytes[..])));
        // From a file: the claim is checked against the file's size.
        std::fs::write(&path, &bytes).expect("writes");
        refused_within_bound(value_len, largest_allocation(|| cache.load_snapshot(&path)));
    }
    assert!(cache.is_empty());
}

/// `codec`'s promise: "a corrupt length prefix produces an error instead of a huge
/// allocation". A `String` or byte buffer whose varint length claims 3 GiB, in 6 bytes.
#[test]
fn a_corrupt_length_prefix_in_a_typed_value_is_not_allocated() {
    // bincode varint: 0xFC = a u32 follows.
    let mut claim = vec![0xFC];
    claim.extend_from_slice(&(3u32 << 30).to_le_bytes());
    claim.push(b'x');

    let largest = decode_refused::<String>(&claim);
    assert!(largest <= BOUND, "String: allocated {largest} bytes");

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Transcript {
        language: String,
        segments: Vec<(u32, String)>,
    }
    let mut nested = vec![2, b'e', b'n', 1, 0];
    nested.extend_from_slice(&claim);
    let largest = decode_refused::<Transcript>(&nested);
    assert!(largest <= BOUND, "nested String: allocated {largest} bytes");

    // In a larger input, a claim beyond what the input could hold is still refused.
    let mut padded = claim.clone();
    padded.resize(200_000, 0);
    let largest = decode_refused::<String>(&padded);
    assert!(
        largest <= 16 * padded.len(),
        "padded: allocated {largest} bytes"
    );
}

/// The decode limit grows with the input in steps of 16 (64 KiB, 1 MiB, 16 MiB, 256 MiB,
/// 4 GiB), so it is up to 256 times the input, not 16: a `String` claiming less than the
/// limit but more than the input holds was allocated in full before its bytes were read
/// (1,000,000 bytes for a 4,097-byte input; 1 GiB for a 16 MiB one, whose limit is 4 GiB).
/// Owned strings and byte buffers are now read the way borrowed ones are, with the claim
/// checked against the bytes left first: the claim allocates nothing.
#[test]
fn a_length_claim_under_the_limit_but_past_the_input_is_not_allocated() {
    for (input_len, claim) in [
        (4_097, 1_000_000u32),
        (65_537, 16_000_000),
        ((16 << 20) + 1, 1 << 30),
    ] {
        // bincode varint: 0xFC = a u32 follows.
        let mut bytes = vec![0xFC];
        bytes.extend_from_slice(&claim.to_le_bytes());
        bytes.resize(input_len, b'x');
        let largest = decode_refused::<String>(&bytes);
        assert!(
            largest < input_len,
            "String in {input_len} bytes: allocated {largest} bytes"
        );
        let largest = decode_refused::<std::ffi::CString>(&bytes);
        assert!(
            largest < input_len,
            "byte buffer in {input_len} bytes: allocated {largest} bytes"
        );
    }
    // What is there is decoded: strings and byte buffers of every size still round-trip.
    for len in [0, 1, 250, 251, 70_000] {
        let text = "é".repeat(len);
        let bytes = codec::encode(&text).expect("encodes");
        assert_eq!(codec::decode::<String>(&bytes).expect("decodes"), text);
        let buffer = std::ffi::CString::new(vec![b'z'; len]).expect("no NUL");
        let bytes = codec::encode(&buffer).expect("encodes");
        assert_eq!(
            codec::decode::<std::ffi::CString>(&bytes).expect("decodes"),
            buffer
        );
    }
}

/// A sequence's claimed length is checked against the codec's element budget (64 Ki
/// elements for a short input) before serde reserves room for it: nine bytes claiming 2^40
/// `u64`s used to reserve serde's 1 MiB maximum, 100,000 times the input.
#[test]
fn a_huge_sequence_claim_reserves_nothing() {
    // bincode varint: 0xFD = a u64 follows.
    let mut claim = vec![0xFD];
    claim.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let (result, largest) = largest_allocation(|| codec::decode::<Vec<u64>>(&claim));
    assert!(
        matches!(result, Err(CodecError::TooManyElements { .. })),
        "{result:?}"
    );
    // The refusal's message is all that is allocated.
    assert!(largest <= 16 * claim.len(), "allocated {largest} bytes");
}

/// A sparse file can really be terabytes long while taking no disk, so checking a value's
/// length against the bytes left in the file does not make its allocation feasible: the
/// reader reserved the whole value up front and the process aborted ("memory allocation of
/// 8796093022208 bytes failed") when the allocator refused. A refused reservation is an
/// error instead.
#[test]
fn a_value_too_large_to_allocate_in_a_sparse_file_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sparse.snap");
    // 8 TiB: within ext4's 16 TiB file size limit, beyond any machine's memory here.
    let claim: u64 = 1 << 43;
    let bytes = snapshot_claiming(claim, 0);
    let file = std::fs::File::create(&path).expect("creates");
    std::io::Write::write_all(&mut &file, &bytes).expect("writes");
    if file.set_len(bytes.len() as u64 + claim).is_err() {
        eprintln!("skipped: this file system does not hold an 8 TiB sparse file");
        return;
    }
    drop(file);
    let result = memocache::snapshot::read_snapshot_file(&path);
    assert!(
        matches!(&result, Err(SnapshotError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::OutOfMemory),
        "{result:?}"
    );
    // A cache whose byte budget holds the value keeps it, so it reads it the same way.
    let unbounded = Cache::builder().max_bytes(1 << 50).build().expect("builds");
    let result = unbounded.load_snapshot(&path);
    assert!(
        matches!(&result, Err(SnapshotError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::OutOfMemory),
        "{result:?}"
    );
    assert!(unbounded.is_empty());
}

/// The bytes of a version-2 entry record's head and tag under prefix "t": no TTL, access
/// count 0, frequency 0, not in main, `value_len` as a bincode varint.
fn record_head(digest: u8, value_len: u64) -> Vec<u8> {
    let mut head = vec![1, b't'];
    head.extend_from_slice(&[digest; 32]);
    head.extend_from_slice(&[0, 0, 0, 0]);
    match value_len {
        0..=250 => head.push(value_len as u8),
        251..=0xFFFF_FFFF => {
            head.push(0xFC);
            head.extend_from_slice(&(value_len as u32).to_le_bytes());
        }
        _ => {
            head.push(0xFD);
            head.extend_from_slice(&value_len.to_le_bytes());
        }
    }
    let mut record = vec![0x01];
    record.extend_from_slice(&(head.len() as u32).to_le_bytes());
    record.extend_from_slice(&head);
    record
}

/// Writes at `path` a valid version-2 snapshot (blocks of 1 MiB, every digest right) of two
/// entries: a 100-byte value under digest `[8; 32]`, then `claim` zero bytes under `[7; 32]`,
/// which are not written (a hole in a sparse file). Returns the file's length, or `None` if
/// the file system cannot hold it.
fn write_sparse_snapshot(path: &std::path::Path, claim: u64) -> Option<u64> {
    use ring::digest::{Context, SHA256, digest};
    use std::io::{Seek, SeekFrom, Write};
    const BLOCK: u64 = 1 << 20;
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&1_700_000_000_000_000_000u64.to_le_bytes());
    header.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    let mut before = record_head(8, 100);
    before.extend_from_slice(&[0xAB; 100]);
    before.extend_from_slice(&record_head(7, claim));
    let mut after = vec![0x00];
    after.extend_from_slice(&2u64.to_le_bytes());
    let (p, stream) = (before.len() as u64, before.len() as u64 + claim + 9);
    // The stream's bytes in `range`, which must not be long.
    let bytes = |range: std::ops::Range<u64>| -> Vec<u8> {
        range
            .map(|x| match x {
                x if x < p => before[x as usize],
                x if x < p + claim => 0,
                x => after[(x - p - claim) as usize],
            })
            .collect()
    };
    let zero_block = digest(&SHA256, &vec![0u8; BLOCK as usize]);
    let count = stream.div_ceil(BLOCK);
    let mut trailer = count.to_le_bytes().to_vec();
    for block in 0..count {
        let range = block * BLOCK..((block + 1) * BLOCK).min(stream);
        if range.start >= p && range.end <= p + claim && range.end - range.start == BLOCK {
            trailer.extend_from_slice(zero_block.as_ref());
        } else {
            trailer.extend_from_slice(digest(&SHA256, &bytes(range)).as_ref());
        }
    }
    let mut root = Context::new(&SHA256);
    root.update(&header);
    root.update(&trailer);
    trailer.extend_from_slice(root.finish().as_ref());

    let mut file = std::fs::File::create(path).expect("creates");
    file.write_all(&header).expect("writes");
    file.write_all(&before).expect("writes");
    file.seek(SeekFrom::Current(claim as i64)).ok()?;
    file.write_all(&after).ok()?;
    file.write_all(&trailer).ok()?;
    file.metadata().ok().map(|m| m.len())
}

/// Bytes this process has read through `read` calls so far (Linux), if it can tell.
fn bytes_read() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let line = io.lines().find(|line| line.starts_with("rchar:"))?;
    line["rchar:".len()..].trim().parse().ok()
}

/// A value too large for the cache's whole budget can never be restored, so a load passes
/// over the blocks inside it without reading them. It read and hashed all of them (twice:
/// the value also sent the load to its second pass): a sparse file claiming a terabyte took
/// a terabyte of reading and hashing per pass for a value it then left out. The file here is
/// valid, and the value lies in a hole; the load restores the small value, leaves out the
/// huge one, and reads about the file's bytes around the hole, not the hole, and once (until
/// session 30 the value still sent the load to a second pass, which read them again).
#[test]
fn a_value_larger_than_the_cache_is_passed_over_unread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sparse.snap");
    // 4 GiB first: on code that reads the hole, it fails in seconds rather than hours.
    for claim in [4u64 << 30, 1 << 40] {
        let Some(file_len) = write_sparse_snapshot(&path, claim) else {
            eprintln!("skipped {claim}: this file system does not hold the sparse file");
            continue;
        };
        let around = file_len - claim;
        let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
        let read_before = bytes_read();
        let (report, largest) = largest_allocation(|| cache.load_snapshot(&path));
        let report = report.expect("a valid snapshot loads");
        assert_eq!(
            (report.entries, report.restored, report.left_out),
            (2, 1, 1)
        );
        assert_eq!(
            report.left_out_bytes,
            memocache::CacheEntry::charged_size(claim as usize) as u64
        );
        let small = memocache::CacheKey::from_digest([8; 32], "t").expect("valid");
        assert_eq!(cache.get(&small).as_deref(), Some(&[0xAB; 100][..]));
        // The digest lists (of the trailer, and computed) are the largest allocations:
        // bounded by the file's bytes around the hole, not by the value.
        assert!(
            (largest as u64) < 2 * around + (4 << 20),
            "claim {claim}: allocated {largest} bytes at once"
        );
        if let (Some(before), Some(after)) = (read_before, bytes_read()) {
            let read = after - before;
            eprintln!(
                "claim {claim}: read {read} bytes, largest allocation {largest} bytes, file of \
                 {around} bytes around the hole"
            );
            assert!(
                read < around + (8 << 20),
                "claim {claim}: read {read} bytes of a file of {around} bytes around the hole"
            );
        }
    }

    // What is passed over is not checked: a byte changed in the hole, in a block the load
    // never reads, goes unnoticed (the value is left out either way). One changed in the
    // part of the value that shares a block with its head is refused, as ever.
    let claim = 4u64 << 30;
    write_sparse_snapshot(&path, claim).expect("held above");
    let put = |offset: u64, byte: u8| {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("opens");
        file.seek(SeekFrom::Start(offset)).expect("seeks");
        file.write_all(&[byte]).expect("writes");
    };
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let hole_start = 28 + (record_head(8, 100).len() + 100 + record_head(7, claim).len()) as u64;
    put(hole_start + claim / 2, 0xFF);
    let report = cache
        .load_snapshot(&path)
        .expect("the passed-over bytes are not checked");
    assert_eq!((report.restored, report.left_out), (1, 1));
    put(hole_start + 10, 0xFF);
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let err = cache
        .load_snapshot(&path)
        .expect_err("the value's first block is checked");
    assert!(
        matches!(err, SnapshotError::BlockChecksumMismatch { block: 0, .. }),
        "{err}"
    );
    assert!(cache.is_empty());
}

/// A 17-byte ARC line stood for 2^32 requests, 32 GiB of keys (a line may now stand for
/// `MAX_ARC_RUN`: here 200 of them make 13 M requests). `Trace::load` gathered them with
/// `collect`, which aborts the process when an allocation is refused ("memory allocation of
/// 134217728 bytes failed" here, then SIGABRT); only `memocache replay` grew its list
/// fallibly. Both now read through `Trace::read`, which makes the refusal an error.
#[cfg(feature = "trace")]
#[test]
fn a_trace_larger_than_the_memory_is_an_error_not_an_abort() {
    use memocache::trace::{Trace, TraceError, TraceReader};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.lis");
    let line = format!("0 {} 0 0\n", TraceReader::MAX_ARC_RUN);
    std::fs::write(&path, line.repeat(200)).expect("writes");
    // Room for 2^23 keys in one block, and not for the doubling after that.
    let result = refusing_above(64 << 20, || Trace::load(&path));
    let Err(e @ TraceError::TooLarge { requests, .. }) = &result else {
        panic!("{result:?}");
    };
    assert_eq!(*requests, 1 << 23);
    assert!(
        e.to_string().ends_with(
            "huge.lis: the trace does not fit in memory: it ran out after 8388608 requests"
        ),
        "{e}"
    );
}

/// `Trace::read` counted the distinct keys with a `collect` into a set, which sized it for
/// every request: 65 M requests of 65,536 keys asked for 1.2 GB at once, and the refusal
/// aborted `memocache replay` once the trace was read. The set now grows with the keys found.
/// OPT's plan (9 bytes a request) was infallible too, and aborted the replay of a trace that
/// fit in memory but not with its plan: `Opt::try_new` makes the refusal an error.
#[cfg(feature = "trace")]
#[test]
fn counting_the_keys_and_planning_opt_ask_for_what_they_need() {
    use memocache::trace::{Opt, Trace};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("repeats.lis");
    // 2^20 requests (8 MiB of keys) of 1,024 distinct keys.
    std::fs::write(&path, "0 1024 0 0\n".repeat(1024)).expect("writes");
    let trace = refusing_above(12 << 20, || Trace::load(&path)).expect("fits");
    assert_eq!((trace.requests(), trace.unique()), (1 << 20, 1024));
    let refused = refusing_above(4 << 20, || Opt::try_new(trace.keys(), 5).map(|_| ()));
    assert!(refused.is_err());
    let planned = refusing_above(12 << 20, || Opt::try_new(trace.keys(), 5).map(|_| ()));
    assert!(planned.is_ok());
}

/// A value passed over unread (too large for the cache) still counts its blocks, and the
/// reader kept a digest slot for every one of them — 33 bytes a block, allocated at the end
/// marker — and then a list of as many stored digests. The block size is the file's to say
/// (64 bytes at least), so a file of a few hundred bytes around a hole claiming 1 GiB made
/// the load allocate 550 MB at once, and one claiming 1 TiB made it ask for 567 GB, which
/// aborted the process. Blocks passed over now take no memory, and the stored digests are
/// compared as they are read. Here the file ends after the end marker: its trailer is
/// missing, which the load reports as truncation.
#[test]
fn blocks_passed_over_take_no_memory_whatever_the_block_size() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("small-blocks.snap");
    for claim in [1u64 << 30, 1 << 40] {
        let mut file = std::fs::File::create(&path).expect("creates");
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&1_700_000_000_000_000_000u64.to_le_bytes());
        header.extend_from_slice(&64u32.to_le_bytes());
        file.write_all(&header).expect("writes");
        file.write_all(&record_head(7, claim)).expect("writes");
        if file.seek(SeekFrom::Current(claim as i64)).is_err() {
            eprintln!("skipped {claim}: this file system does not hold the sparse file");
            continue;
        }
        let mut end = vec![0x00];
        end.extend_from_slice(&1u64.to_le_bytes());
        if file.write_all(&end).is_err() {
            eprintln!("skipped {claim}: this file system does not hold the sparse file");
            continue;
        }
        drop(file);
        let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
        let (result, largest) = largest_allocation(|| cache.load_snapshot(&path));
        assert!(
            matches!(result, Err(SnapshotError::Truncated { .. })),
            "{claim}: {result:?}"
        );
        assert!(
            largest <= BOUND,
            "claim {claim}: allocated {largest} bytes at once"
        );
        assert!(cache.is_empty());
    }
}

/// A snapshot read from a pipe is read in one pass that keeps every live value, since it
/// cannot be read again: so it kept a value larger than the cache's whole budget too (here
/// 32 MiB, for a cache of 1 MiB), which no choice can store, and dropped it only when the
/// import refused it. Such a value is now hashed through a bounded buffer and left out, as
/// from a file.
#[cfg(unix)]
#[test]
fn a_pipe_does_not_hold_a_value_larger_than_the_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("big.snap");
    let huge = 32 << 20;
    let saver = Cache::builder()
        .max_bytes(64 << 20)
        .build()
        .expect("builds");
    let small = memocache::CacheKey::from_content(b"small", "t").expect("valid");
    saver.insert(small, vec![1u8; 100]).expect("inserts");
    let big = memocache::CacheKey::from_content(b"big", "t").expect("valid");
    saver.insert(big, vec![2u8; huge]).expect("inserts");
    saver.save_snapshot(&file).expect("saves");
    drop(saver);

    let fifo = dir.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("runs mkfifo");
    assert!(status.success());
    let writer = {
        let (file, fifo) = (file.clone(), fifo.clone());
        std::thread::spawn(move || {
            let mut from = std::fs::File::open(file).expect("opens the snapshot");
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .open(fifo)
                .expect("opens the pipe");
            std::io::copy(&mut from, &mut to).expect("feeds the pipe");
        })
    };
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    let (report, largest) = largest_allocation(|| cache.load_snapshot(&fifo));
    writer.join().expect("the writer finished");
    let report = report.expect("loads");
    assert_eq!((report.restored, report.left_out), (1, 1));
    assert_eq!(cache.get(&small).as_deref(), Some(&[1u8; 100][..]));
    assert!(largest <= BOUND, "allocated {largest} bytes at once");
}
