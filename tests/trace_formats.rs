//! Trace readers: format detection, every record layout, and errors (never panics) on corrupt
//! or truncated input, compressed or not.

#![cfg(feature = "trace")]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use memocache::trace::{Compression, TraceError, TraceFormat, TraceReader};
use proptest::prelude::*;

mod trace_support;

use trace_support::{XZ_LOOP, gzip, zstd};

fn keys_of(bytes: &[u8], format: TraceFormat) -> Result<Vec<u64>, TraceError> {
    TraceReader::from_reader(Cursor::new(bytes.to_vec()), format, "mem.trace").collect()
}

/// Writes `bytes` to a fresh file named `name` in the test scratch folder.
fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trace_formats");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

/// Reads a whole file; returns the keys read before the first error and that error.
fn read_file(path: &Path) -> (Vec<u64>, Option<TraceError>) {
    let mut reader = match TraceReader::open(path) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut keys = Vec::new();
    for item in reader.by_ref() {
        match item {
            Ok(k) => keys.push(k),
            Err(e) => {
                // The error ends the iteration.
                assert!(reader.next().is_none(), "iteration goes on after an error");
                return (keys, Some(e));
            }
        }
    }
    (keys, None)
}

/// `n` LIRS lines with a pseudo-random spread of keys, so compressed data is not all repeats.
fn lirs_text(n: u64) -> (Vec<u8>, Vec<u64>) {
    let keys: Vec<u64> = (0..n).map(|i| (i * 7919) % 1013).collect();
    let text = keys.iter().map(|k| format!("{k}\n")).collect::<String>();
    (text.into_bytes(), keys)
}

#[test]
fn detects_the_format_of_every_shared_trace_from_its_name() {
    use TraceFormat::*;
    let cases = [
        ("arc/OLTP.lis.zst", ArcLis, Compression::Zstd),
        ("arc/P2.lis.zst", ArcLis, Compression::Zstd),
        ("misc/scarab-recs.trace.xz", Int64Be, Compression::Xz),
        ("misc/w106.trace.xz", Int32Be, Compression::Xz),
        ("misc/trace_vaultservice.gz", Int64Be, Compression::Gzip),
        ("cache2k/web07.trace.xz", Int32Be, Compression::Xz),
        ("cache2k/orm-night.trace.xz", Int32Be, Compression::Xz),
        ("somewhere/orm-busy.trace.xz", Int32Be, Compression::Xz),
        (
            "misc/cloudPhysicsIO.oracleGeneral.bin",
            OracleGeneral,
            Compression::None,
        ),
        (
            "x/w44.oracleGeneral.bin.zst",
            OracleGeneral,
            Compression::Zstd,
        ),
        ("lirs/loop.trace.gz", LirsText, Compression::Gzip),
        ("lirs/2_pools.trace.gz", LirsText, Compression::Gzip),
        ("lirs/multi1.trace.gz", LirsText, Compression::Gzip),
        ("mine/keys.txt", LirsText, Compression::None),
        ("cache2k/newtrace.bin", Int32Be, Compression::None),
        ("corda/other.gz", Int64Be, Compression::Gzip),
        // Extensions in any case (a file copied from a system that upper-cases names).
        ("corda/OTHER.GZ", Int64Be, Compression::Gzip),
        (
            "x/w44.oracleGeneral.bin.Zst",
            OracleGeneral,
            Compression::Zstd,
        ),
        ("lirs/loop.trace.XZ", LirsText, Compression::Xz),
        // So are the format's (`OLTP.LIS.ZST` was "cannot tell the trace format", its zstd
        // told): the suffix rules, whose fallback is text.
        ("arc/OLTP.LIS.ZST", ArcLis, Compression::Zstd),
        ("ARC/P2.Lis", ArcLis, Compression::None),
        ("LIRS/LOOP.TRACE.GZ", LirsText, Compression::Gzip),
        ("mine/KEYS.TXT", LirsText, Compression::None),
        // The name rules of the binary formats keep their case: `W1.trace` is a text trace
        // for all the name says, and text read as binary gives silent garbage.
        ("mine/W1.trace", LirsText, Compression::None),
    ];
    for (name, format, compression) in cases {
        let path = Path::new(name);
        assert_eq!(TraceFormat::detect(path), Some(format), "{name}");
        assert_eq!(Compression::from_path(path), compression, "{name}");
    }
    for name in ["data.bin", "web.trace.zst.bak", "noext", "lirs/"] {
        assert_eq!(TraceFormat::detect(Path::new(name)), None, "{name}");
    }
}

/// Linux file names are bytes: a name or folder that is not UTF-8 (`café` in Latin-1) was
/// not detected at all, though every rule is about its ASCII parts.
#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_are_detected_by_their_ascii_parts() {
    use TraceFormat::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    for (name, format) in [
        (&b"caf\xe9.trace"[..], LirsText),
        (b"caf\xe9.lis.gz", ArcLis),
        (b"w106-caf\xe9.trace.xz", Int32Be),
        (b"corda/\xe9t\xe9.gz", Int64Be),
    ] {
        let path = Path::new(OsStr::from_bytes(name));
        assert_eq!(TraceFormat::detect(path), Some(format), "{path:?}");
    }
    let folder = Path::new(OsStr::from_bytes(b"caf\xe9")).join("data.bin");
    assert_eq!(TraceFormat::detect(&folder), None);
}

#[test]
fn every_shared_trace_is_detected() {
    let Some(dir) = trace_support::traces_dir() else {
        return;
    };
    let files = trace_support::trace_files(&dir);
    assert!(files.len() >= 24, "found {} traces", files.len());
    for file in files {
        assert!(
            TraceFormat::detect(&file).is_some(),
            "{}: no format",
            file.display()
        );
    }
}

#[test]
fn format_names_round_trip_and_unknown_names_are_errors() {
    for format in TraceFormat::ALL {
        assert_eq!(format.name().parse::<TraceFormat>().unwrap(), format);
        assert_eq!(
            format
                .to_string()
                .to_uppercase()
                .parse::<TraceFormat>()
                .unwrap(),
            format
        );
    }
    let err = "csv".parse::<TraceFormat>().unwrap_err();
    assert!(matches!(&err, TraceError::UnknownFormatName { name } if name == "csv"));
    assert!(err.to_string().contains("oracle-general"), "{err}");
}

#[test]
fn binary_layouts_decode_their_keys() {
    let mut i64be = Vec::new();
    for k in [1i64, -1, i64::MAX, 0x0102_0304_0506_0708] {
        i64be.extend_from_slice(&k.to_be_bytes());
    }
    assert_eq!(
        keys_of(&i64be, TraceFormat::Int64Be).unwrap(),
        vec![1, u64::MAX, i64::MAX as u64, 0x0102_0304_0506_0708]
    );

    let mut i32be = Vec::new();
    for k in [7u32, 0xdead_beef, 0] {
        i32be.extend_from_slice(&k.to_be_bytes());
    }
    assert_eq!(
        keys_of(&i32be, TraceFormat::Int32Be).unwrap(),
        vec![7, 0xdead_beef, 0]
    );

    let mut oracle = Vec::new();
    for (ts, id, size, next) in [(1u32, 42u64, 512u32, 3i64), (2, u64::MAX - 1, 0, -1)] {
        oracle.extend_from_slice(&ts.to_le_bytes());
        oracle.extend_from_slice(&id.to_le_bytes());
        oracle.extend_from_slice(&size.to_le_bytes());
        oracle.extend_from_slice(&next.to_le_bytes());
    }
    assert_eq!(
        keys_of(&oracle, TraceFormat::OracleGeneral).unwrap(),
        vec![42, u64::MAX - 1]
    );
    assert_eq!(keys_of(&[], TraceFormat::OracleGeneral).unwrap(), vec![]);
}

#[test]
fn lirs_text_skips_blank_and_star_lines_and_accepts_crlf() {
    let text = b"5\r\n\r\n*\n  17 \n-2\n\n*\r\n18446744073709551615\n9";
    assert_eq!(
        keys_of(text, TraceFormat::LirsText).unwrap(),
        vec![5, 17, (-2i64) as u64, u64::MAX, 9]
    );
}

/// A text trace saved by an editor that starts files with a UTF-8 byte-order mark (Windows
/// Notepad did by default) failed on its first line: `"\u{feff}5" is not a decimal integer
/// key`, about a character no editor shows. The mark is skipped at the start of the file,
/// and only there.
#[test]
fn a_byte_order_mark_at_the_start_of_a_text_trace_is_skipped() {
    const BOM: &[u8] = b"\xef\xbb\xbf";
    let lirs = [BOM, b"5\r\n6\r\n5\r\n"].concat();
    assert_eq!(keys_of(&lirs, TraceFormat::LirsText).unwrap(), [5, 6, 5]);
    let arc = [BOM, b"100 2 0 1\n7 1 0 2\n"].concat();
    assert_eq!(keys_of(&arc, TraceFormat::ArcLis).unwrap(), [100, 101, 7]);
    // A first line holding only the mark is blank.
    let blank = [BOM, b"\n5\n"].concat();
    assert_eq!(keys_of(&blank, TraceFormat::LirsText).unwrap(), [5]);
    // The mark counts in the line's length: a line it makes too long is refused whole, not
    // read in two parts.
    let long = [BOM, format!("{:>4096}\n6\n", 5).as_bytes()].concat();
    let err = keys_of(&long, TraceFormat::LirsText).unwrap_err();
    assert!(
        err.to_string().contains(":1: bad lirs line: longer than"),
        "{err}"
    );
    // Elsewhere it is not part of a key.
    let later = [b"5\n".as_slice(), BOM, b"6\n"].concat();
    let err = keys_of(&later, TraceFormat::LirsText).unwrap_err();
    assert!(matches!(err, TraceError::Parse { line: 2, .. }), "{err:?}");
}

#[test]
fn arc_lines_expand_to_block_runs() {
    let text = b"100 3 0 1\n7 1 0 2\r\n\n50 0 0 3\n9 2\n";
    assert_eq!(
        keys_of(text, TraceFormat::ArcLis).unwrap(),
        vec![100, 101, 102, 7, 9, 10]
    );
}

#[test]
fn a_binary_trace_ending_mid_record_is_a_truncation_error() {
    let mut bytes = [0u8; 8 + 5].to_vec();
    bytes[7] = 3;
    let mut reader =
        TraceReader::from_reader(Cursor::new(bytes), TraceFormat::Int64Be, "cut.trace");
    assert_eq!(reader.next().unwrap().unwrap(), 3);
    let err = reader.next().unwrap().unwrap_err();
    assert_eq!(truncation(&err), Some((8, 5, 8)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cut.trace:") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(reader.next().is_none());

    let err = keys_of(&[0u8; 24 * 2 + 23], TraceFormat::OracleGeneral).unwrap_err();
    assert_eq!(truncation(&err), Some((48, 23, 24)), "{err:?}");
    let err = keys_of(&[1, 2, 3], TraceFormat::Int32Be).unwrap_err();
    assert!(matches!(truncation(&err), Some((0, 3, _))), "{err:?}");
}

/// The offset, bytes present and bytes expected of a [`TraceError::Truncated`].
fn truncation(err: &TraceError) -> Option<(u64, usize, usize)> {
    match err {
        TraceError::Truncated {
            offset,
            got,
            expected,
            ..
        } => Some((*offset, *got, *expected)),
        _ => None,
    }
}

/// One ARC line of a few bytes stood for up to 2^32 requests: a tiny file read whole made
/// `Trace::read` fill (or, on a system that overcommits, be promised and then killed for)
/// tens of GiB of keys. A run longer than `MAX_ARC_RUN` blocks is an error naming the line.
#[test]
fn an_arc_line_may_not_stand_for_more_than_max_arc_run_blocks() {
    let max = TraceReader::MAX_ARC_RUN;
    let keys = keys_of(format!("7 {max} 0 0\n").as_bytes(), TraceFormat::ArcLis).expect("a run");
    assert_eq!(keys.len() as u64, max);
    assert_eq!(keys.last(), Some(&(7 + max - 1)));
    for count in [max + 1, u64::from(u32::MAX)] {
        let text = format!("1 2 0 0\n5 {count} 0 0\n");
        let err = keys_of(text.as_bytes(), TraceFormat::ArcLis).unwrap_err();
        assert!(
            matches!(err, TraceError::ArcRunTooLong { line: 2, count: c, .. } if c == count),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "mem.trace:2: bad arc line: a run of {count} blocks, more than the 65536 a \
                 line may have"
            )
        );
    }
}

/// `Trace::read_at_most` takes a trace of up to its limit and refuses one more request.
#[test]
fn a_trace_read_at_most_n_requests_refuses_the_next() {
    use memocache::trace::Trace;
    let reader = || {
        TraceReader::from_reader(
            Cursor::new(b"1 5 0 0\n".to_vec()),
            TraceFormat::ArcLis,
            "m.lis",
        )
    };
    let trace = Trace::read_at_most(reader(), 5, |_| {}).expect("5 requests");
    assert_eq!((trace.requests(), trace.unique()), (5, 5));
    let err = Trace::read_at_most(reader(), 4, |_| {}).unwrap_err();
    assert!(
        matches!(err, TraceError::TooManyRequests { limit: 4, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "m.lis: the trace has more than 4 requests");
}

#[test]
fn bad_text_lines_are_parse_errors_with_line_numbers() {
    let err = keys_of(b"1\n2\n\nabc\n3\n", TraceFormat::LirsText).unwrap_err();
    assert!(matches!(err, TraceError::Parse { line: 4, .. }), "{err:?}");
    assert!(err.to_string().starts_with("mem.trace:4:"), "{err}");

    let err = keys_of(b"1 2 0 0\n42\n", TraceFormat::ArcLis).unwrap_err();
    assert!(matches!(err, TraceError::Parse { line: 2, .. }), "{err:?}");

    let err = keys_of(b"18446744073709551615 2 0 0\n", TraceFormat::ArcLis).unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
    let err = keys_of(b"1 4294967296 0 0\n", TraceFormat::ArcLis).unwrap_err();
    assert!(err.to_string().contains("32-bit"), "{err}");
    assert_eq!(
        keys_of(b"5 -1 0 0\n", TraceFormat::ArcLis)
            .unwrap_err()
            .to_string(),
        "mem.trace:1: bad arc line: block count 18446744073709551615 is not a 32-bit count"
    );

    // A binary file read as text is not slurped whole looking for a newline.
    let mut long = vec![b'7'; 10_000];
    long.push(b'\n');
    let err = keys_of(&long, TraceFormat::LirsText).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");

    let err = keys_of(b"x 2 0 0\n", TraceFormat::ArcLis).unwrap_err();
    assert!(matches!(err, TraceError::Parse { line: 1, .. }), "{err:?}");

    // Binary read as text: a loud error with a short, printable reason.
    let err = keys_of(&[0, 0, 0, 7, 0xff, 0xfe, b'\n'], TraceFormat::LirsText).unwrap_err();
    assert!(matches!(err, TraceError::Parse { line: 1, .. }), "{err:?}");
}

/// A line of exactly 4,096 bytes, the longest a text trace may have, was refused as "longer
/// than 4096 bytes": its newline was counted in the line. It is read, with either line end,
/// and one byte more is still refused.
#[test]
fn a_line_of_the_longest_length_allowed_is_read() {
    const MAX_LINE: usize = 4096;
    let padded = |len: usize, key: &str| format!("{key:>len$}").into_bytes();
    for end in ["\n", "\r\n", ""] {
        let mut text = b"1\n".to_vec();
        text.extend(padded(MAX_LINE, "2"));
        text.extend(end.as_bytes());
        assert_eq!(
            keys_of(&text, TraceFormat::LirsText).expect("a line of 4096 bytes"),
            [1, 2],
            "{end:?}"
        );
        let mut arc = padded(MAX_LINE, "5 2 0 1");
        arc.extend(end.as_bytes());
        assert_eq!(keys_of(&arc, TraceFormat::ArcLis).expect("arc"), [5, 6]);

        let mut text = b"1\n".to_vec();
        text.extend(padded(MAX_LINE + 1, "2"));
        text.extend(end.as_bytes());
        let err = keys_of(&text, TraceFormat::LirsText).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mem.trace:2: bad lirs line: longer than 4096 bytes",
            "{end:?}"
        );
    }
}

#[test]
fn open_errors_name_the_file() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such.trace.gz");
    let err = TraceReader::open(&missing).unwrap_err();
    assert!(matches!(err, TraceError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such.trace.gz"), "{err}");

    let err = TraceReader::open("data.bin").unwrap_err();
    assert!(matches!(err, TraceError::UnknownFormat { .. }), "{err:?}");
    assert!(err.to_string().contains("data.bin"), "{err}");
}

#[test]
fn multi_member_gzip_and_multi_frame_zstd_are_read_whole() {
    let (first, mut keys) = lirs_text(3000);
    let (second, more) = lirs_text(500);
    keys.extend(more);

    let mut gz = gzip(&first);
    gz.extend(gzip(&second));
    let (read, err) = read_file(&scratch_file("two-members.trace.gz", &gz));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(read, keys);

    let mut zst = zstd(&first);
    zst.extend(zstd(&second));
    let (read, err) = read_file(&scratch_file("two-frames.trace.zst", &zst));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(read, keys);

    // Uncompressed, opened explicitly under a name no rule matches.
    let path = scratch_file("plain.data", &first);
    let read: Vec<u64> = TraceReader::open_as(&path, TraceFormat::LirsText, Compression::None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read.len(), 3000);
}

/// Truncated and bit-flipped copies of `compressed`, named `<stem>-<damage>.<ext>` (so that
/// format detection sees the same name), must end in an error.
fn assert_damage_is_detected(stem: &str, ext: &str, compressed: &[u8], intact: &[u64]) {
    let name = format!("{stem}.{ext}");
    let (read, err) = read_file(&scratch_file(&name, compressed));
    assert!(err.is_none(), "{name}: intact copy failed: {err:?}");
    assert_eq!(read, intact, "{name}: intact copy");

    for cut in [compressed.len() / 3, compressed.len() - 1] {
        let damaged = format!("{stem}-cut{cut}.{ext}");
        let (_, err) = read_file(&scratch_file(&damaged, &compressed[..cut]));
        let err = err.unwrap_or_else(|| panic!("{damaged}: truncation not detected"));
        assert!(matches!(err, TraceError::Read { .. }), "{damaged}: {err:?}");
        assert!(err.to_string().contains(&damaged), "{err}");
    }
    // Flips in the payload (not in headers, where e.g. gzip's mtime is unchecked).
    for at in [compressed.len() / 2, compressed.len() * 3 / 4] {
        let mut bytes = compressed.to_vec();
        bytes[at] ^= 0x5a;
        let damaged = format!("{stem}-flip{at}.{ext}");
        let (read, err) = read_file(&scratch_file(&damaged, &bytes));
        assert!(
            err.is_some(),
            "{damaged}: corruption not detected ({} keys read)",
            read.len()
        );
    }
    let (_, err) = read_file(&scratch_file(
        &format!("{stem}-garbage.{ext}"),
        b"not compressed",
    ));
    assert!(
        matches!(err, Some(TraceError::NotCompressed { .. })),
        "{err:?}"
    );
}

/// Review: a `.gz` file that was not gzip said "reading the gzip stream failed: unexpected
/// end of file". A file whose first bytes are no compression's magic number (text, or
/// nothing) is now refused at open, saying it is not such a file; opened as a compression
/// it is not of, it says which it is (session 29).
#[test]
fn a_file_not_of_its_compression_is_refused_as_not_that_format() {
    let (text, _) = lirs_text(100);
    let cases: [(&str, &str, &[u8]); 5] = [
        ("plain.trace.gz", "the file is not gzip", &text),
        ("plain.trace.xz", "the file is not xz", &text),
        ("plain.trace.zst", "the file is not zstd", &text),
        ("one-byte.trace.gz", "the file is not gzip", &[0x1f]),
        ("empty.trace.xz", "the file is not xz: it is empty", &[]),
    ];
    for (name, says, bytes) in cases {
        let err = TraceReader::open(scratch_file(name, bytes)).expect_err(name);
        assert!(matches!(err, TraceError::NotCompressed { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(name) && message.contains(says),
            "{name}: {message}"
        );
    }
    let err = TraceReader::open(scratch_file("text.trace.gz", b"12\n13\n")).unwrap_err();
    assert!(
        err.to_string().ends_with(
            "the file is not gzip: it starts with the bytes 31 32 0a 31 33 0a, \
             not with gzip's magic number 1f 8b"
        ),
        "{err}"
    );
    // Given a compression explicitly, a file of another is refused, named for what it is.
    let path = scratch_file("given.trace", &zstd(&text));
    let err = TraceReader::open_as(&path, TraceFormat::LirsText, Compression::Gzip).unwrap_err();
    assert!(matches!(err, TraceError::NotCompressed { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the file is not gzip: it is zstd (it starts with the bytes 28 b5 2f fd "),
        "{err}"
    );
}

/// A trace's compression was told from its name alone: a gzip file read from a pipe
/// (`/dev/stdin`) or named without `.gz`, or a zstd file named `.gz`, was read as garbage
/// (text: "bad lirs line: not UTF-8 text"; binary: keys of garbage and no error). Its first
/// bytes tell it now, whatever the name; `open_as` with `Compression::None` still reads the
/// bytes as they are.
#[test]
fn the_compression_is_told_by_the_first_bytes_before_the_name() {
    let (text, keys) = lirs_text(2000);
    for (name, bytes, compression, want) in [
        (
            "gzip-unnamed.trace",
            gzip(&text),
            Compression::Gzip,
            &keys[..],
        ),
        (
            "zstd-named-gz.trace.gz",
            zstd(&text),
            Compression::Zstd,
            &keys,
        ),
        (
            "gzip-named-zst.trace.zst",
            gzip(&text),
            Compression::Gzip,
            &keys,
        ),
        (
            "xz-unnamed.trace",
            XZ_LOOP.to_vec(),
            Compression::Xz,
            &[1, 2, 3].repeat(10)[..],
        ),
        ("plain.trace", text.clone(), Compression::None, &keys),
    ] {
        let path = scratch_file(name, &bytes);
        let reader = TraceReader::open(&path).expect(name);
        assert_eq!(reader.compression(), compression, "{name}");
        let read: Vec<u64> = reader.collect::<Result<_, _>>().expect(name);
        assert_eq!(read, want, "{name}");
        let reader = TraceReader::open_format(&path, TraceFormat::LirsText).expect(name);
        assert_eq!(reader.compression(), compression, "{name}");
    }

    // Binary keys: zstd of big-endian 32-bit keys read from a name that tells nothing.
    let ids: Vec<u64> = (0..500).map(|i| (i * 31) % 97).collect();
    let binary: Vec<u8> = ids.iter().flat_map(|&k| (k as u32).to_be_bytes()).collect();
    let path = scratch_file("ids.bin", &zstd(&binary));
    let read: Vec<u64> = TraceReader::open_format(&path, TraceFormat::Int32Be)
        .expect("zstd")
        .collect::<Result<_, _>>()
        .expect("zstd");
    assert_eq!(read, ids);
    // Named explicitly as uncompressed, the bytes are read as they are.
    let raw = TraceReader::open_as(&path, TraceFormat::Int32Be, Compression::None).expect("raw");
    assert_eq!(raw.compression(), Compression::None);
    assert_ne!(raw.collect::<Result<Vec<u64>, _>>().ok(), Some(ids));
}

/// The magic numbers `Compression::from_magic` documents, and near misses: gzip needs the
/// deflate method and no reserved flag (two bytes alone would take one binary trace in
/// 65,536 for gzip), zstd's skippable frames count.
#[test]
fn compressions_are_told_by_their_magic_numbers() {
    for (head, compression) in [
        (&[0x1f, 0x8b, 0x08, 0x00][..], Compression::Gzip),
        (&[0x1f, 0x8b, 0x08, 0x1f, 0, 0], Compression::Gzip),
        (&[0x1f, 0x8b, 0x08, 0x20], Compression::None),
        (&[0x1f, 0x8b, 0x09, 0x00], Compression::None),
        (&[0x1f, 0x8b], Compression::None),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
        (&[0xfd, b'7', b'z', b'X', b'Z'], Compression::None),
        (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
        (&[0x50, 0x2a, 0x4d, 0x18], Compression::Zstd),
        (&[0x5f, 0x2a, 0x4d, 0x18], Compression::Zstd),
        (&[0x60, 0x2a, 0x4d, 0x18], Compression::None),
        (b"BZh91A", Compression::None),
        (b"12\n13\n", Compression::None),
        (b"", Compression::None),
    ] {
        assert_eq!(Compression::from_magic(head), compression, "{head:02x?}");
    }
}

/// bzip2, lz4 and zip have no decoder here: read as they are, an `i32be` trace of them was
/// keys of garbage with no error. They are refused, by what they are, whatever the name.
#[test]
fn a_compression_without_a_decoder_is_refused_by_name() {
    for (name, bytes, found) in [
        ("keys.bz2.trace", &b"BZh91AY&SY"[..], "bzip2-compressed"),
        (
            "keys.trace.gz",
            &[0x04, 0x22, 0x4d, 0x18, 0x64, 0x40][..],
            "lz4-compressed",
        ),
        ("keys.zip", &b"PK\x03\x04\x14\x00"[..], "a zip archive"),
    ] {
        let message = refused_as(name, bytes, found);
        assert!(
            message.contains(name)
                && message.contains(&format!("the file is {found} (it starts with the bytes "))
                && message.ends_with(
                    "which memocache cannot read: decompress it first, or recompress it \
                     with gzip, xz or zstd"
                ),
            "{message}"
        );
    }
}

/// Opens `bytes`, written as the file `name`, as an `i32be` trace, which must be refused as
/// `found`: the refusal's message.
fn refused_as(name: &str, bytes: &[u8], found: &str) -> String {
    let path = scratch_file(name, bytes);
    let err = TraceReader::open_format(&path, TraceFormat::Int32Be).unwrap_err();
    assert!(
        matches!(&err, TraceError::UnsupportedCompression { found: f, .. } if *f == found),
        "{err:?}"
    );
    err.to_string()
}

/// `pzstd` starts a file with a skippable frame, not a data frame: both magic numbers pass.
#[test]
fn a_zstd_file_starting_with_a_skippable_frame_is_read() {
    let (text, keys) = lirs_text(500);
    let mut bytes = vec![0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'a', b'b', b'c'];
    bytes.extend(zstd(&text));
    let (read, err) = read_file(&scratch_file("skippable.trace.zst", &bytes));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(read, keys);
}

#[test]
fn damaged_gzip_and_zstd_streams_are_errors() {
    let (text, keys) = lirs_text(20_000);
    assert_damage_is_detected("damaged", "trace.gz", &gzip(&text), &keys);
    assert_damage_is_detected("damaged", "trace.zst", &zstd(&text), &keys);
}

#[test]
fn damaged_xz_streams_are_errors() {
    // No xz encoder in the dependency tree: damage a real (small) xz trace instead.
    let Some(dir) = trace_support::traces_dir() else {
        return;
    };
    let original = dir.join("cache2k/web12.trace.xz");
    let compressed = std::fs::read(&original).expect("read web12");
    let (intact, err) = read_file(&original);
    assert!(err.is_none(), "{err:?}");
    assert_damage_is_detected("web12", "trace.xz", &compressed, &intact);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes through every decoder and format: keys or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        format in proptest::sample::select(TraceFormat::ALL.to_vec()),
        ext in proptest::sample::select(vec!["", ".gz", ".xz", ".zst"]),
        header in proptest::sample::select(vec![
            &[][..], &[0x1f, 0x8b, 8, 0][..], &[0xfd, b'7', b'z', b'X', b'Z', 0][..],
            &[0x28, 0xb5, 0x2f, 0xfd][..],
        ]),
    ) {
        let mut data = header.to_vec();
        data.extend(bytes);
        let path = scratch_file(&format!("fuzz-{}{ext}", format.name()), &data);
        let reader = TraceReader::open_as(&path, format, Compression::from_path(&path));
        if let Ok(reader) = reader {
            // Bounded: garbage can only expand to so many keys, but an ARC line may claim a
            // huge run, so stop early.
            for item in reader.take(100_000) {
                if item.is_err() {
                    break;
                }
            }
        }
    }
}

/// What follows a compressed stream's last member or frame. gzip pads with zero bytes
/// (tape blocks, `dd`), which gzip(1) and Python's `gzip` skip: here they failed the read as
/// "unexpected end of file", as did any bytes that are not a gzip member, which the message
/// now says. Bytes after a zstd frame that are not a frame were "BadMagicNumber(1651663207)",
/// a debugging print of their first four bytes as a decimal number.
#[test]
fn what_follows_the_last_gzip_member_or_zstd_frame_is_told() {
    let (text, keys) = lirs_text(1000);
    let (more, more_keys) = lirs_text(10);
    let mut padded = gzip(&text);
    padded.extend([0; 512]);
    let mut padded_between = gzip(&text);
    padded_between.extend([0; 4]);
    padded_between.extend(gzip(&more));
    for (name, bytes, want) in [
        ("padded.trace.gz", padded, keys.clone()),
        (
            "padded-between.trace.gz",
            padded_between,
            [&keys[..], &more_keys].concat(),
        ),
    ] {
        let (read, err) = read_file(&scratch_file(name, &bytes));
        assert!(err.is_none(), "{name}: {err:?}");
        assert_eq!(read, want, "{name}");
    }

    let mut garbage = gzip(&text);
    garbage.extend(b"garbage");
    let mut zeros_then_garbage = gzip(&text);
    zeros_then_garbage.extend(b"\0\0garbage");
    let mut zstd_garbage = zstd(&text);
    zstd_garbage.extend(b"garbage!");
    for (name, bytes, says) in [
        (
            "garbage.trace.gz",
            garbage,
            "reading the gzip stream failed: bytes that are not a gzip member follow its \
             member 1 (they start with 67 61 72 62 61 67)",
        ),
        (
            "zeros-garbage.trace.gz",
            zeros_then_garbage,
            "reading the gzip stream failed: bytes that are not a gzip member follow its \
             member 1 (they start with 67 61 72 62 61 67)",
        ),
        (
            "garbage.trace.zst",
            zstd_garbage,
            "reading the zstd stream failed: bytes that are not a zstd frame follow its \
             frame 1 (they start with 67 61 72 62)",
        ),
    ] {
        let (read, err) = read_file(&scratch_file(name, &bytes));
        assert_eq!(read, keys, "{name}: the keys before");
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.ends_with(says), "{name}: {message}");
    }
}

/// A file that ends inside the magic number of the compression its name (or the caller)
/// gives is a truncated file of that compression. It was said to start "with the bytes
/// 28 b5 2f, not with zstd's magic number 28 b5 2f fd", which it does start with.
#[test]
fn a_file_ending_inside_its_magic_number_is_said_to() {
    for (name, bytes, says) in [
        (
            "cut.trace.zst",
            &[0x28, 0xb5, 0x2f][..],
            "the file is not zstd: it ends after 3 bytes (28 b5 2f), inside zstd's magic \
             number 28 b5 2f fd",
        ),
        (
            "cut.trace.xz",
            &[0xfd, b'7', b'z', b'X', b'Z'][..],
            "the file is not xz: it ends after 5 bytes (fd 37 7a 58 5a), inside xz's magic \
             number fd 37 7a 58 5a 00",
        ),
        (
            "cut.trace.gz",
            &[0x1f][..],
            "the file is not gzip: it ends after 1 byte (1f), inside gzip's magic number 1f 8b",
        ),
    ] {
        let err = TraceReader::open(scratch_file(name, bytes)).expect_err(name);
        assert!(matches!(err, TraceError::NotCompressed { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.ends_with(says), "{name}: {message}");
    }
}

/// lz4's legacy frame (`lz4 -l`, what the Linux kernel's images use) and compress's `.Z`
/// have no decoder here either, but were not told by their first bytes: read as they are,
/// an `i32be` trace of them was keys of garbage with no error, though a "lz4 file is
/// refused as such".
#[test]
fn lz4_legacy_and_compress_files_are_refused_by_name() {
    for (bytes, found) in [
        (&[0x02, 0x21, 0x4c, 0x18, 0x10, 0x00][..], "lz4-compressed"),
        (
            &[0x1f, 0x9d, 0x90, 0x31, 0x0a, 0x00][..],
            "LZW-compressed by compress",
        ),
    ] {
        let message = refused_as("keys.bin", bytes, found);
        assert!(
            message.contains(&format!("the file is {found} (it starts with the bytes ")),
            "{message}"
        );
    }
    // compress's third byte holds the largest code width, 9 to 16 bits, and two bits that
    // are always clear: other bytes after `1f 9d` are read as they are.
    for third in [0x88, 0x91, 0xb0] {
        let path = scratch_file("keys.bin", &[0x1f, 0x9d, third, 0]);
        let reader = TraceReader::open_format(&path, TraceFormat::Int32Be).expect("plain");
        assert_eq!(reader.compression(), Compression::None);
    }
}

/// Session 31: a trace read as a stream (standard input) was refused as "the file": it is not
/// one. A file is still called a file.
#[test]
fn a_stream_not_of_its_compression_is_called_a_stream() {
    let stream = |bytes: &'static [u8], compression| {
        TraceReader::from_stream(
            Cursor::new(bytes),
            TraceFormat::LirsText,
            "standard input",
            compression,
        )
        .expect_err("refused")
        .to_string()
    };
    assert_eq!(
        stream(b"", Some(Compression::Zstd)),
        "standard input: the stream is not zstd: it is empty"
    );
    assert_eq!(
        stream(b"1\n2\n3\n", Some(Compression::Gzip)),
        "standard input: the stream is not gzip: it starts with the bytes 31 0a 32 0a 33 0a, \
         not with gzip's magic number 1f 8b"
    );
    assert!(
        stream(b"BZh91AY&SY", None).starts_with("standard input: the stream is bzip2-compressed"),
    );
    let file = scratch_file("empty-s31.trace.zst", b"");
    let err = TraceReader::open(&file).expect_err("refused").to_string();
    assert!(err.ends_with("the file is not zstd: it is empty"), "{err}");
}

/// Session 31: an error reading a trace's first bytes, before anything is decoded, was
/// reported under the compression its name gives ("x.trace.zst: reading the zstd stream
/// failed: Is a directory"), as if the file were a corrupt zstd stream. It is an I/O error
/// reading the file, with the system's words.
#[test]
fn an_error_reading_the_first_bytes_is_an_io_error_not_a_corrupt_stream() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trace_formats/dir-s31.trace.zst");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    // Opening a directory succeeds on Linux; reading it fails with EISDIR.
    if let Ok(reader) = std::fs::File::open(&dir) {
        let err = TraceReader::open_format(&dir, TraceFormat::LirsText).expect_err("refused");
        let message = err.to_string();
        assert!(
            message.contains("dir-s31.trace.zst: cannot read trace: "),
            "{message}"
        );
        assert!(message.contains("os error 21"), "{message}");
        assert!(!message.contains("zstd stream"), "{message}");
        drop(reader);
    }
    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(5))
        }
    }
    for compression in [None, Some(Compression::Gzip)] {
        let err =
            TraceReader::from_stream(Failing, TraceFormat::LirsText, "t.trace.gz", compression)
                .expect_err("refused")
                .to_string();
        assert!(err.starts_with("t.trace.gz: cannot read trace: "), "{err}");
        assert!(err.contains("os error 5"), "{err}");
        assert!(!err.contains("gzip stream"), "{err}");
    }
}

/// Session 31: `ruzstd`'s errors reached the user as debugging output (`Failed to parse block
/// header: DecodeSequenceError(ExtraBits { bits_remaining: 3 })`), and `flate2`'s and
/// `lzma-rust2`'s as their internals' words, placed nowhere ("corrupt deflate stream", "dist
/// overflow", "rc not finished or lz has pending", "failed to fill whole buffer" for an xz
/// file cut short). Every decoder error, of every byte flipped and every length cut, is a
/// sentence that names the source, the member or frame where there is one, and the
/// compressed byte offset.
#[test]
fn every_decoder_error_is_a_sentence_with_its_offset() {
    let text: String = (0..300u64)
        .map(|i| format!("{}\n", (i * 7919) % 100))
        .collect();
    // A word such as `DecodeSequenceError`: a capital, a lower-case letter, then a capital.
    let type_name = |word: &str| {
        let mut chars = word.chars().filter(|c| c.is_ascii_alphabetic());
        chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars
                .skip_while(|c| !c.is_ascii_lowercase())
                .any(|c| c.is_ascii_uppercase())
    };
    for (label, intact, place) in [
        ("t.trace.gz", gzip(text.as_bytes()), "gzip member 1"),
        ("t.trace.xz", XZ_LOOP.to_vec(), "xz "),
        ("t.trace.zst", zstd(text.as_bytes()), "zstd frame 1"),
    ] {
        let mut damaged: Vec<Vec<u8>> = (0..intact.len())
            .map(|len| intact[..len].to_vec())
            .collect();
        for at in 0..intact.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bytes = intact.clone();
                bytes[at] ^= flip;
                damaged.push(bytes);
            }
        }
        let mut decoder_errors = 0;
        for bytes in damaged {
            let shown = hex_of(&bytes);
            let reader =
                TraceReader::from_stream(Cursor::new(bytes), TraceFormat::LirsText, label, None);
            let err = match reader {
                Ok(reader) => reader.filter_map(Result::err).next(),
                Err(e) => Some(e),
            };
            let Some(err @ TraceError::Read { .. }) = err else {
                continue;
            };
            let message = err.to_string();
            assert!(message.starts_with(label), "{shown}: {message}");
            assert!(
                !message.contains(['{', '}']) && !message.split(' ').any(type_name),
                "{shown}: {message}"
            );
            assert!(message.contains(place), "{shown}: {message}");
            assert!(
                message.contains(" at compressed byte "),
                "{shown}: {message}"
            );
            decoder_errors += 1;
        }
        assert!(decoder_errors > 0, "{label}: no damage reached the decoder");
    }
}

/// `bytes` as hex, to name a damaged stream in a failure.
fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Session 31: a read that failed after the first bytes of an uncompressed trace was
/// "reading the uncompressed stream failed: …", as if a decoder had found the bytes bad. It
/// is an I/O error of the named source, as one reading the first bytes is.
#[test]
fn a_later_failed_read_of_an_uncompressed_trace_is_an_io_error() {
    /// `1\n2\n3\n` (more than the 6 bytes read to tell the compression), then EIO.
    struct FailsLater(bool);
    impl std::io::Read for FailsLater {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if std::mem::replace(&mut self.0, true) {
                return Err(std::io::Error::from_raw_os_error(5));
            }
            let data = b"1\n2\n3\n";
            buf[..data.len()].copy_from_slice(data);
            Ok(data.len())
        }
    }
    let from_stream = TraceReader::from_stream(
        FailsLater(false),
        TraceFormat::LirsText,
        "standard input",
        None,
    )
    .expect("uncompressed");
    let from_reader =
        TraceReader::from_reader(FailsLater(false), TraceFormat::LirsText, "standard input");
    for reader in [from_stream, from_reader] {
        let (keys, errors): (Vec<_>, Vec<_>) = reader.partition(Result::is_ok);
        assert_eq!(keys.len(), 3);
        let err = errors.into_iter().find_map(Result::err).expect("an error");
        let message = err.to_string();
        assert!(matches!(err, TraceError::Unreadable { .. }), "{message}");
        assert!(
            message.starts_with("standard input: cannot read trace: "),
            "{message}"
        );
        assert!(message.contains("os error 5"), "{message}");
        assert!(!message.contains("uncompressed"), "{message}");
    }
}

/// An I/O error of a compressed stream's source, mid-stream, is the system's error as it is,
/// not made a sentence about corrupt gzip or xz data as the decoders' own errors are.
#[test]
fn a_failed_read_inside_a_compressed_stream_keeps_the_system_error() {
    /// `bytes`, then EIO.
    struct FailsAfter(Cursor<Vec<u8>>);
    impl std::io::Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(std::io::Error::from_raw_os_error(5)),
                n => Ok(n),
            }
        }
    }
    let (text, _) = lirs_text(1000);
    let gzipped = gzip(&text);
    for (label, bytes) in [
        ("t.trace.gz", gzipped[..gzipped.len() / 2].to_vec()),
        ("t.trace.xz", XZ_LOOP[..XZ_LOOP.len() / 2].to_vec()),
    ] {
        let reader = FailsAfter(Cursor::new(bytes));
        let err = TraceReader::from_stream(reader, TraceFormat::LirsText, label, None)
            .expect("compressed")
            .find_map(Result::err)
            .expect("an error")
            .to_string();
        assert!(err.starts_with(&format!("{label}: reading the ")), "{err}");
        assert!(
            err.ends_with("stream failed: Input/output error (os error 5)"),
            "{err}"
        );
    }
}

/// Session 31: a foreign frame after a zstd data frame was "bytes that are not a zstd frame
/// follow its frame 1: they start with 04 22 4d 18, as lz4-compressed data does", worded
/// otherwise than the refusal of the same frame at the start ("the file is lz4-compressed
/// (it starts with the bytes …), which memocache cannot read"). It says what the data is,
/// where it starts, and that memocache cannot read it, as that refusal does.
#[test]
fn a_foreign_frame_after_a_zstd_frame_is_named_as_at_the_start() {
    let first = zstd(b"1\n2\n");
    let mut bytes = first.clone();
    bytes.extend_from_slice(&[0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7, 0, 0, 0, 0]);
    let (keys, err) = read_file(&scratch_file("lz4-after-s31.trace.zst", &bytes));
    assert_eq!(keys, [1, 2]);
    let message = err.expect("an error").to_string();
    assert!(
        message.ends_with(&format!(
            "lz4-after-s31.trace.zst: reading the zstd stream failed: the data after its zstd \
             frame 1, from compressed byte {}, is lz4-compressed (it starts with the bytes 04 \
             22 4d 18), which memocache cannot read",
            first.len()
        )),
        "{message}"
    );
}

/// Session 31: lz4 defines skippable frames with the magic numbers zstd's have (50..5f 2a 4d
/// 18), so an lz4 file that starts with one was taken for zstd and reported as a zstd stream
/// that fails to read. What follows the skippable frames tells; the lz4 frame is refused as
/// lz4, as one at the start of the file is.
#[test]
fn an_lz4_file_that_starts_with_a_skippable_frame_is_refused_as_lz4() {
    let mut lz4 = vec![0x5a, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, b'm', b'e', b't', b'a'];
    lz4.extend_from_slice(&[0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7, 0, 0, 0, 0]);
    for name in ["skip-s31.trace", "skip-s31.trace.zst"] {
        let file = scratch_file(name, &lz4);
        let err = TraceReader::open_format(&file, TraceFormat::LirsText).expect_err(name);
        let message = err.to_string();
        assert!(
            matches!(
                err,
                TraceError::UnsupportedCompression {
                    found: "lz4-compressed",
                    ..
                }
            ),
            "{name}: {message}"
        );
        assert!(
            message.contains(
                "the file is lz4-compressed (it starts with the bytes 5a 2a 4d 18 04 00), which \
                 memocache cannot read"
            ),
            "{name}: {message}"
        );
    }
    // Given as zstd, likewise; a zstd frame after a skippable one is still read.
    let err = TraceReader::from_stream(
        Cursor::new(lz4.clone()),
        TraceFormat::LirsText,
        "standard input",
        Some(Compression::Zstd),
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("the stream is lz4-compressed"), "{err}");
    let mut pzstd = lz4[..12].to_vec();
    pzstd.extend_from_slice(&zstd(b"1\n2\n"));
    let keys: Vec<u64> = TraceReader::from_stream(
        Cursor::new(pzstd),
        TraceFormat::LirsText,
        "standard input",
        None,
    )
    .expect("zstd")
    .collect::<Result<_, _>>()
    .expect("read");
    assert_eq!(keys, [1, 2]);
}

/// Session 31: after a bad line in a compressed trace the stream is decoded on, to report a
/// corrupt stream as such rather than the line its garbage made; that went on for 1 GiB of
/// content, so a bad line near the start of a large trace (or of an endless stream) was
/// reported only after a gigabyte of decoding. It is bounded to 64 MiB, and a corruption
/// within it is still what is reported.
#[test]
fn a_bad_line_near_the_start_of_a_large_compressed_trace_is_reported_promptly() {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const BLOCK: usize = 128 << 10;
    /// A zstd frame (128 KiB window, no checksum) of a raw block `x\n`, a bad LIRS line, then
    /// `blocks` raw blocks of 128 KiB of newlines (blank lines), made as it is read, and
    /// counting the bytes taken; with `corrupt`, a block of the reserved type 3 ends it.
    struct Frame {
        pending: Vec<u8>,
        at: usize,
        blocks: u32,
        corrupt: bool,
        taken: Arc<AtomicU64>,
    }
    impl Read for Frame {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.pending.len() {
                self.at = 0;
                self.pending.clear();
                if self.blocks > 0 {
                    self.blocks -= 1;
                    let last = u32::from(self.blocks == 0 && !self.corrupt);
                    let header = (BLOCK as u32) << 3 | last;
                    self.pending.extend_from_slice(&header.to_le_bytes()[..3]);
                    self.pending.resize(3 + BLOCK, b'\n');
                } else if std::mem::take(&mut self.corrupt) {
                    self.pending.extend_from_slice(&[0x07, 0, 0]);
                }
            }
            let n = buf.len().min(self.pending.len() - self.at);
            buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
            self.at += n;
            self.taken.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }
    let read = |blocks: u32, corrupt: bool| {
        let taken = Arc::new(AtomicU64::new(0));
        let mut pending = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
        pending.extend_from_slice(&[2 << 3, 0, 0, b'x', b'\n']);
        let frame = Frame {
            pending,
            at: 0,
            blocks,
            corrupt,
            taken: Arc::clone(&taken),
        };
        let err = TraceReader::from_stream(frame, TraceFormat::LirsText, "big.trace.zst", None)
            .expect("zstd")
            .find_map(Result::err)
            .expect("an error");
        (err, taken.load(Ordering::Relaxed))
    };
    // 256 MiB of content after the bad line: it was decoded whole.
    let (err, taken) = read(2048, false);
    assert!(matches!(err, TraceError::Parse { line: 1, .. }), "{err}");
    assert!(taken <= 65 << 20, "{taken} bytes decoded for a bad line 1");
    // Corruption 8 MiB after the bad line is still found, and reported.
    let (err, _) = read(64, true);
    assert!(matches!(err, TraceError::Read { .. }), "{err}");
}

/// Session 31: after a bad line the check for a corrupt stream decoded on for up to 64 MiB
/// of content, through gzip members and zstd frames after the one holding the line, which
/// had ended, verified, and could not change the verdict. It stops at that member's or
/// frame's end: of a trace of 400 members (frames) of 256 KiB of content, about 125 KB
/// compressed, a bad line 1 took 32.7 MB of the 51 MB (33.4 of 52.2 for zstd), 64 MiB of
/// content; now 131 KB (262 KB), the first member and what the buffers read ahead. A
/// corruption in that member or frame is still what is reported; one in a later member is
/// not the bad line's, which is reported.
#[test]
fn the_check_after_a_bad_line_ends_with_its_member_or_frame() {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A reader of `bytes` that counts what is taken from it.
    struct Counting {
        bytes: Cursor<Vec<u8>>,
        taken: Arc<AtomicU64>,
    }
    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.bytes.read(buf)?;
            self.taken.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }
    let read = |bytes: Vec<u8>, label: &str| {
        let taken = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            bytes: Cursor::new(bytes),
            taken: Arc::clone(&taken),
        };
        let err = TraceReader::from_stream(counting, TraceFormat::LirsText, label, None)
            .expect("compressed")
            .find_map(Result::err)
            .expect("an error");
        (err, taken.load(Ordering::Relaxed))
    };
    // Keys of a xorshift generator, so that a member compresses to more than the buffers
    // read ahead (about 120 KiB of 256 KiB).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let text: Vec<u8> = std::iter::repeat_with(|| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        format!("{}\n", state % 1_000_000_000)
    })
    .take(26_000)
    .collect::<String>()
    .into_bytes();
    let bad: Vec<u8> = [&b"x\n"[..], &text].concat();
    for (label, compress) in [
        ("big.trace.gz", gzip as fn(&[u8]) -> Vec<u8>),
        ("big.trace.zst", zstd),
    ] {
        let (first, rest) = (compress(&bad), compress(&text));
        let mut bytes = first.clone();
        for _ in 0..(100 << 20) / text.len() {
            bytes.extend_from_slice(&rest);
        }
        let (err, taken) = read(bytes.clone(), label);
        assert!(matches!(err, TraceError::Parse { line: 1, .. }), "{err}");
        let read_ahead = 128 << 10;
        assert!(
            taken <= (first.len() + rest.len() + read_ahead) as u64,
            "{label}: {taken} compressed bytes taken for a bad line 1 in a member of {}",
            first.len()
        );
        // A corruption of the first member or frame's last bytes is still found; one of the
        // second's is not the bad line's.
        let mut corrupt = bytes.clone();
        corrupt[first.len() - 2] ^= 0x55;
        let (err, _) = read(corrupt, label);
        assert!(matches!(err, TraceError::Read { .. }), "{label}: {err}");
        let mut later = bytes;
        later[first.len() + rest.len() - 2] ^= 0x55;
        let (err, _) = read(later, label);
        assert!(
            matches!(err, TraceError::Parse { line: 1, .. }),
            "{label}: {err}"
        );
    }
}
