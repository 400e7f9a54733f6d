//! Length fields in untrusted bytes must not turn into allocations: a field claiming 2^60
//! bytes (or merely 3 GiB) is refused with a typed error before anything of that size is
//! requested from the allocator.
//!
//! "Not allocated" cannot be observed from outside: on Linux a multi-gigabyte `calloc` of
//! which nothing is touched succeeds and costs nothing, so a decoder that asks for it passes a
//! plain `is_err()` test and then aborts the process on a machine (or under a fuzzer's malloc
//! limit) where the request is refused. This test binary therefore installs a global
//! allocator that records the largest single request made by the current thread, and checks
//! it against a bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, SystemTime};

use memocache::snapshot::{FORMAT_VERSION, MAGIC, SnapshotError, read_snapshot};
use memocache::{Cache, CodecError, codec};

/// The system allocator, recording the largest request of each thread.
struct Recording;

thread_local! {
    // Const-initialised and without a destructor: using it never allocates.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to `System`; recording a size touches only a
// thread-local `Cell`.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
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

    let (result, largest) = largest_allocation(|| codec::decode::<String>(&claim));
    assert!(
        matches!(result, Err(CodecError::Decode { .. })),
        "{result:?}"
    );
    assert!(largest <= BOUND, "String: allocated {largest} bytes");

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Transcript {
        language: String,
        segments: Vec<(u32, String)>,
    }
    let mut nested = vec![2, b'e', b'n', 1, 0];
    nested.extend_from_slice(&claim);
    let (result, largest) = largest_allocation(|| codec::decode::<Transcript>(&nested));
    assert!(
        matches!(result, Err(CodecError::Decode { .. })),
        "{result:?}"
    );
    assert!(largest <= BOUND, "nested String: allocated {largest} bytes");

    // In a larger input, a claim beyond what the input could hold is still refused.
    let mut padded = claim.clone();
    padded.resize(200_000, 0);
    let (result, largest) = largest_allocation(|| codec::decode::<String>(&padded));
    assert!(
        matches!(result, Err(CodecError::Decode { .. })),
        "{result:?}"
    );
    assert!(
        largest <= 16 * padded.len(),
        "padded: allocated {largest} bytes"
    );
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
