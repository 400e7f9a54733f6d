//! Adversarial probes of what reads outside input that the other tests do not cover: trace
//! encodings that are valid but unusual, a snapshot read through a pipe, and values nested
//! past the codec's depth limit. (The probes of crashed and racing saves are in
//! `src/snapshot/tests.rs`.)

use std::path::Path;

use memocache::{Cache, CacheKey};

#[cfg(target_os = "linux")]
mod spawn_support;

fn key(i: u32) -> CacheKey {
    CacheKey::from_content(&i.to_le_bytes(), "audit").expect("valid key")
}

/// Reads a whole trace file named `name` (its format and compression told from the name).
#[cfg(feature = "trace")]
fn trace_keys(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<u64>, memocache::trace::TraceError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writes");
    memocache::trace::TraceReader::open(&path)?.collect()
}

/// Zstandard skippable frames (magic `0x184D2A5?`, a length, opaque bytes) are part of a
/// valid stream and carry no data: `pzstd` starts every file with one. They are skipped,
/// wherever they are; a skippable frame cut short is still an error.
#[cfg(feature = "trace")]
#[test]
fn zstd_skippable_frames_are_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let frame = |text: &[u8]| {
        ruzstd::encoding::compress_to_vec(text, ruzstd::encoding::CompressionLevel::Fastest)
    };
    let skippable = |nibble: u8, payload: &[u8]| {
        let mut out = vec![0x50 | nibble, 0x2A, 0x4D, 0x18];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        out
    };
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "pzstd",
            [skippable(0, &[0x13, 0, 0, 0]), frame(b"1\n2\n3\n")].concat(),
        ),
        (
            "between",
            [frame(b"1\n2\n"), skippable(0xF, b"metadata"), frame(b"3\n")].concat(),
        ),
        (
            "empty",
            [skippable(7, b""), frame(b"1\n2\n3\n"), skippable(1, b"end")].concat(),
        ),
        (
            "only skippable before data",
            [
                skippable(2, b"a"),
                skippable(3, b"bc"),
                frame(b"1\n"),
                frame(b"2\n3\n"),
            ]
            .concat(),
        ),
    ];
    for (case, bytes) in cases {
        assert_eq!(
            trace_keys(dir.path(), "skip.trace.zst", &bytes)
                .unwrap_or_else(|e| panic!("{case}: {e}")),
            [1, 2, 3],
            "{case}"
        );
    }
    // Nothing but skippable frames is an empty trace, as `zstd -d` reads it; an empty file
    // and a skippable frame cut short are errors.
    let only = [skippable(0, b"x"), skippable(1, b"")].concat();
    assert_eq!(
        trace_keys(dir.path(), "only.trace.zst", &only).expect("reads"),
        Vec::<u64>::new()
    );
    assert!(trace_keys(dir.path(), "nothing.trace.zst", b"").is_err());
    let cut = [frame(b"1\n"), skippable(0, b"metadata")].concat();
    assert!(trace_keys(dir.path(), "cut.trace.zst", &cut[..cut.len() - 1]).is_err());
}

/// xz streams may be concatenated, with stream padding (a multiple of four zero bytes)
/// between or after them, as `xz` itself reads them.
#[cfg(feature = "trace")]
#[test]
fn concatenated_and_padded_xz_streams_are_read_whole() {
    // `printf '1\n2\n3\n' | xz` and `printf '4\n5\n' | xz`.
    const A: &[u8] = &[
        0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00, 0x21,
        0x01, 0x16, 0x00, 0x00, 0x00, 0x74, 0x2f, 0xe5, 0xa3, 0x01, 0x00, 0x05, 0x31, 0x0a, 0x32,
        0x0a, 0x33, 0x0a, 0x00, 0x00, 0x00, 0xe3, 0xc1, 0xb1, 0x7e, 0x5b, 0xb8, 0x57, 0x4e, 0x00,
        0x01, 0x1e, 0x06, 0xc1, 0x2f, 0xa4, 0x1d, 0x1f, 0xb6, 0xf3, 0x7d, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x04, 0x59, 0x5a,
    ];
    const B: &[u8] = &[
        0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00, 0x21,
        0x01, 0x16, 0x00, 0x00, 0x00, 0x74, 0x2f, 0xe5, 0xa3, 0x01, 0x00, 0x03, 0x34, 0x0a, 0x35,
        0x0a, 0x00, 0x6c, 0x79, 0xd2, 0xa0, 0x37, 0xda, 0xa2, 0xb5, 0x00, 0x01, 0x1c, 0x04, 0x6f,
        0x2c, 0x9c, 0xc1, 0x1f, 0xb6, 0xf3, 0x7d, 0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 0x59, 0x5a,
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let pad = [0u8; 8];
    for (case, bytes) in [
        ("concatenated", [A, B].concat()),
        ("padded between", [A, &pad, B].concat()),
        ("padded after", [A, B, &pad[..4]].concat()),
    ] {
        assert_eq!(
            trace_keys(dir.path(), "two.trace.xz", &bytes)
                .unwrap_or_else(|e| panic!("{case}: {e}")),
            [1, 2, 3, 4, 5],
            "{case}"
        );
    }
    // Padding that is not a multiple of four bytes is invalid.
    assert!(trace_keys(dir.path(), "bad.trace.xz", &[A, &pad[..3], B].concat()).is_err());
}

/// A snapshot read through a named pipe (`load_snapshot("/dev/stdin")`, a FIFO): the "file"
/// has no size, so lengths in it cannot be checked against one, but it is still a snapshot.
/// A pipe cannot be read twice, so a load into a cache too small for all of it reads it in
/// one pass (holding its live values) and still keeps the highest ranked entries.
#[cfg(unix)]
#[test]
fn a_snapshot_streamed_through_a_fifo_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.snap");
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("builds");
    for i in 0..10 {
        cache.insert(key(i), vec![i as u8; 100]).expect("inserts");
    }
    // Entries 6..10 are read, so they rank above the others.
    for i in 6..10 {
        assert!(cache.get(&key(i)).is_some());
    }
    cache.save_snapshot(&path).expect("saves");
    let bytes = std::fs::read(&path).expect("reads");

    // A FIFO for each load: one made once and reused hung a load for ever under load. A
    // child process that another test of this binary forked while the first load held the
    // pipe open kept a copy of its reading end until it exec'd; the second writer's open
    // paired with that copy, wrote into the pipe and returned, the copy closed (taking the
    // unread bytes with it), and the second load's open waited for a writer that had gone.
    for (n, (max_entries, kept)) in [(100, 0..10), (4, 6..10)].into_iter().enumerate() {
        let fifo = dir.path().join(format!("pipe{n}"));
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("runs mkfifo");
        assert!(status.success());
        let writer = {
            let (fifo, bytes) = (fifo.clone(), bytes.clone());
            std::thread::spawn(move || std::fs::write(fifo, bytes).expect("writes the pipe"))
        };
        let restored = Cache::builder()
            .max_bytes(1 << 20)
            .max_entries(max_entries)
            .build()
            .expect("builds");
        let report = restored.load_snapshot(&fifo).expect("loads from the pipe");
        writer.join().expect("writer");
        assert_eq!(report.restored, kept.len() as u64);
        assert_eq!(report.left_out, 10 - kept.len() as u64);
        for i in kept {
            assert_eq!(
                restored.get(&key(i)).as_deref(),
                Some(&[i as u8; 100][..]),
                "entry {i}"
            );
        }
    }
}

/// The codec's depth limit: a decode that overflowed the stack aborted the whole process, so
/// the test runs in a child process of its own, which the thread-spawn tests' support starts
/// (Linux only, as it is).
#[cfg(target_os = "linux")]
mod nesting {
    use memocache::CodecError;
    use memocache::codec::{MAX_DEPTH, decode, decode_from};
    use serde::{Deserialize, Serialize};

    use super::spawn_support;

    /// Recursive types: each level is one byte, and one nested call of the decoder.
    #[derive(Debug, Serialize, Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    /// Two levels a node: the struct and the `Option`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct List {
        value: u8,
        next: Option<Box<List>>,
    }

    /// The encoding of a `Tree` of `levels` levels (`levels - 1` nodes and a leaf).
    fn tree(levels: usize) -> Vec<u8> {
        let mut bytes = vec![1; levels - 1];
        bytes.push(0);
        bytes
    }

    /// The encoding of a `List` of `nodes` nodes, each holding 7.
    fn list(nodes: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..nodes).flat_map(|_| [7, 1]).collect();
        bytes.pop();
        bytes.push(0);
        bytes
    }

    /// `err` is the depth refusal, naming `T`.
    fn assert_too_deep<T>(err: &CodecError) {
        let type_name = std::any::type_name::<T>();
        assert!(
            matches!(err, CodecError::TooDeep { type_name: t, limit: MAX_DEPTH } if *t == type_name),
            "{err:?}"
        );
    }

    /// A value nested deeper than [`MAX_DEPTH`] is an error. It was a stack overflow: 3,001
    /// bytes decoded as a `Tree` overflowed a 2 MiB thread stack, which aborts the process
    /// (SIGABRT), so the decodes run in a child process ([`spawn_support::in_child`]), and the
    /// test fails if that child does not exit cleanly. Up to the limit, values decode, on a thread
    /// stack of 512 KiB.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        if !spawn_support::in_child("nesting::deep_nesting_is_an_error_not_a_stack_overflow", 1) {
            return;
        }
        let deep = tree(1_000_000);
        assert_too_deep::<Tree>(&decode::<Tree>(&deep).expect_err("refused"));
        let err = decode_from::<Tree>(&mut &deep[..]).expect_err("refused");
        assert_too_deep::<Tree>(&err);
        let deep = list(1_000_000);
        assert_too_deep::<List>(&decode::<List>(&deep).expect_err("refused"));

        let at_the_limit = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(|| {
                assert!(decode::<Tree>(&tree(MAX_DEPTH)).is_ok());
                let err = decode::<Tree>(&tree(MAX_DEPTH + 1)).expect_err("refused");
                assert_too_deep::<Tree>(&err);
                let decoded = decode::<List>(&list(MAX_DEPTH / 2)).expect("decodes");
                assert_eq!(decoded.value, 7);
                let err = decode::<List>(&list(MAX_DEPTH / 2 + 1)).expect_err("refused");
                assert_too_deep::<List>(&err);
            })
            .expect("spawns");
        at_the_limit.join().expect("decodes at the limit");
    }
}
