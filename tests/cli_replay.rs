//! `memocache replay`, run as a user runs it: the built binary, its stdout, stderr and status.
//!
//! The reference numbers come from `../shared/traces/SOURCES.md` itself; where the shared traces
//! are absent those tests print why and pass (`MEMOCACHE_TRACES=<dir>` points them elsewhere).
//! The error-path tests and the `--format` test make their own files and always run.

#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Output;

mod cli_support;
mod trace_support;

use cli_support::{file_in, memocache, one_error_line, path};
use trace_support::{XZ_LOOP, gzip, zstd};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A shared trace by file name, or `None` (with the reason printed) where there are none.
fn shared_trace(name: &str) -> Option<PathBuf> {
    let dir = trace_support::traces_dir()?;
    let found = trace_support::trace_files(&dir)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == name));
    if found.is_none() {
        eprintln!("skipped: no {name} in {}", dir.display());
    }
    found
}

/// The LRU and OPT hit ratios (as printed, two decimals) SOURCES.md lists for `file` at
/// `size` entries.
fn reference(file: &str, size: usize) -> (String, String) {
    let dir = trace_support::traces_dir().expect("traces present");
    let text = std::fs::read_to_string(dir.join("SOURCES.md")).expect("read SOURCES.md");
    let section = text
        .split("\n#### ")
        .find(|s| s.starts_with(file))
        .unwrap_or_else(|| panic!("no section for {file} in SOURCES.md"));
    let row = |label: &str| -> Vec<String> {
        let line = section
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("{file}: no `{label}` row"));
        line.trim_matches('|')
            .split('|')
            .skip(1)
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let column = row("cache size")
        .iter()
        .position(|c| c.parse() == Ok(size))
        .unwrap_or_else(|| panic!("{file}: no column for {size} entries"));
    (
        row("LRU hit %")[column].clone(),
        row("OPT (Belady")[column].clone(),
    )
}

/// The hit ratio (the text before ` %`) and requests/s printed in `policy`'s table row.
fn table_row(out: &str, policy: &str) -> (String, u64) {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(policy))
        .unwrap_or_else(|| panic!("no {policy} row in:\n{out}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "row {line:?}");
    assert_eq!(fields[2], "%", "row {line:?}");
    let per_second = fields[3]
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("requests/s in {line:?}: {e}"));
    (fields[1].to_owned(), per_second)
}

/// The replay succeeded and printed the three rows; returns (memocache, LRU, OPT) hit ratios.
fn replay_table(args: &[&str]) -> (String, [String; 3]) {
    let output = memocache(args);
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        stderr(&output)
    );
    let ratios = ["memocache", "LRU", "OPT"].map(|policy| {
        let (ratio, per_second) = table_row(&out, policy);
        let value: f64 = ratio.parse().expect("a hit ratio");
        assert!((0.0..=100.0).contains(&value), "{policy}: {ratio}");
        assert!(per_second > 0, "{policy}: no throughput in:\n{out}");
        ratio
    });
    (out, ratios)
}

#[test]
fn sprite_matches_the_reference_lru_and_opt_at_absolute_and_percent_capacities() {
    let Some(sprite) = shared_trace("sprite.trace.gz") else {
        return;
    };
    let sprite = sprite.to_str().expect("a UTF-8 path");
    // 10 % and 0.3 % of sprite's 7,075 unique keys are 707 and 21 entries (floor), both
    // columns of SOURCES.md's table.
    for (capacity, entries) in [("707", 707), ("10%", 707), ("0.3%", 21)] {
        let (out, [_, lru, opt]) = replay_table(&["replay", sprite, "--capacity", capacity]);
        assert!(
            out.contains("sprite.trace.gz: 133,996 requests, 7,075 unique keys (lirs, gzip)"),
            "{out}"
        );
        assert!(
            out.contains(&format!("capacity  {entries} entries")),
            "--capacity {capacity}: {out}"
        );
        let (want_lru, want_opt) = reference("sprite.trace.gz", entries);
        assert_eq!((lru, opt), (want_lru, want_opt), "--capacity {capacity}");
    }
}

#[test]
fn curve_writes_an_svg_with_the_three_series() {
    let Some(gli) = shared_trace("gli.trace.gz") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let svg_path = dir.path().join("gli.svg");
    let (out, _) = replay_table(&[
        "replay",
        gli.to_str().expect("a UTF-8 path"),
        "--capacity",
        "10%",
        "--curve",
        svg_path.to_str().expect("a UTF-8 path"),
    ]);
    assert!(
        out.contains(&format!("curve written to {}", svg_path.display())),
        "{out}"
    );
    let svg = std::fs::read_to_string(&svg_path).expect("the curve was written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    // The three curves are the polylines with more than the two points of a legend sample or
    // the capacity marker: 12 log-spaced capacities plus the requested one, for gli 13.
    let curves: Vec<usize> = svg
        .split("<polyline")
        .skip(1)
        .map(|p| {
            let points = p.split("points=\"").nth(1).expect("points attribute");
            points[..points.find('"').expect("closing quote")]
                .split_whitespace()
                .count()
        })
        .filter(|&n| n > 2)
        .collect();
    assert_eq!(curves, vec![13, 13, 13], "series point counts");
    // plotters writes each `<text>` element's text on a line of its own.
    for label in [
        "memocache",
        "LRU",
        "OPT",
        "cache capacity (entries, log scale)",
        "hit ratio (%)",
        "--capacity 252",
    ] {
        assert!(
            svg.lines().any(|l| l.trim() == label),
            "no {label:?} text in the SVG"
        );
    }
}

/// Writes `name` in a fresh temp dir; returns the dir (kept alive by the caller) and the path.
fn temp_file(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = file_in(dir.path(), name, contents);
    (dir, path)
}

/// A loop over 3 keys, 30 requests: every policy with 3 slots hits all but the first 3.
/// Ten loops of the keys `first`, 2, 3 as a big-endian `i32` trace.
fn i32be_loop(first: u32) -> Vec<u8> {
    [first, 2, 3]
        .repeat(10)
        .iter()
        .flat_map(|k| k.to_be_bytes())
        .collect()
}

fn loop_trace() -> Vec<u8> {
    "1\n2\n3\n".repeat(10).into_bytes()
}

#[test]
fn format_overrides_the_file_name() {
    let (_dir, path) = temp_file("keys.dat", &loop_trace());
    let path = path.to_str().expect("a UTF-8 path");
    let (out, ratios) = replay_table(&["replay", path, "--capacity", "3", "--format", "LIRS"]);
    assert_eq!(
        ratios,
        ["90.00", "90.00", "90.00"].map(String::from),
        "{out}"
    );
    assert!(out.contains("keys.dat: 30 requests, 3 unique keys (lirs, uncompressed)"));
    // Without --format the name tells nothing, and the error says what to do.
    let (_, message) = fails(&["replay", path, "--capacity", "3"]);
    assert!(message.contains("--format NAME"), "{message}");
}

/// The command failed cleanly: nothing on stdout, and the one error line [`one_error_line`]
/// asks for. Returns that line too.
fn fails(args: &[&str]) -> (Output, String) {
    let output = memocache(args);
    assert_eq!(stdout(&output), "", "{args:?}");
    let line = one_error_line(&output);
    (output, line)
}

/// [`fails`] for `replay TRACE --capacity 3 OPTION VALUE`: the error line.
fn fails_with_capacity_3(trace: &Path, option: &str, value: &str) -> String {
    fails(&["replay", path(trace), "--capacity", "3", option, value]).1
}

#[test]
fn a_missing_unreadable_or_corrupt_trace_is_one_error_line() {
    let (_dir, loop_path) = temp_file("loop.trace", &loop_trace());
    let missing = loop_path.with_file_name("missing.trace");
    let (_, message) = fails(&["replay", path(&missing), "--capacity", "5"]);
    assert!(message.contains("cannot open trace"), "{message}");

    // Not gzip at all, and gzip cut short: both are decoding errors, not panics.
    let (_d1, garbage) = temp_file("garbage.trace.gz", b"this is not gzip data at all");
    fails(&["replay", path(&garbage), "--capacity", "5"]);
    let (_d2, truncated) = temp_file("cut.trace.gz", &gzip_prefix());
    let (_, message) = fails(&["replay", path(&truncated), "--capacity", "5"]);
    assert!(
        message.contains(
            "cut.trace.gz: reading the gzip stream failed: the stream ends early in gzip member \
             1 at compressed byte "
        ),
        "{message}"
    );

    // A text trace with a line that is not a key names the line.
    let (_d3, bad_line) = temp_file("bad.trace", b"1\n2\nthree\n");
    let (_, message) = fails(&["replay", path(&bad_line), "--capacity", "5"]);
    assert!(message.contains("bad.trace:3: bad lirs line"), "{message}");

    // A folder is not a trace.
    fails(&[
        "replay",
        path(loop_path.parent().expect("dir")),
        "--capacity",
        "5",
    ]);

    let (_d4, empty) = temp_file("empty.trace", b"");
    let (_, message) = fails(&["replay", path(&empty), "--capacity", "5"]);
    assert!(message.contains("no requests"), "{message}");
}

/// The first half of a real gzip stream (the shared gli trace if present, else a stored
/// header that promises more than it has).
fn gzip_prefix() -> Vec<u8> {
    match trace_support::traces_dir().map(|d| d.join("lirs/gli.trace.gz")) {
        Some(gli) if gli.is_file() => {
            let bytes = std::fs::read(gli).expect("read gli");
            bytes[..bytes.len() / 2].to_vec()
        }
        // gzip magic, deflate, no flags, then a deflate block that is never finished.
        _ => vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0x4b, 0x4c],
    }
}

/// A corrupt gzip stream decodes to garbage until the decoder finds the fault (here only at
/// the CRC, at the end of the member): a byte flipped in a stored block turns a key into
/// `x`. The garbage line reached the parser first, so the corrupt file was reported as
/// "bad lirs line", as was the same file piped slowly to `replay -`, where the decoder gets
/// a few bytes at a time and hands on the text decoded so far. Both now name the stream.
#[test]
fn a_corrupt_gzip_trace_is_reported_as_a_corrupt_stream_not_a_bad_line() {
    use std::io::Write as _;
    let text = "1\n2\n3\n".repeat(1000);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    encoder.write_all(text.as_bytes()).expect("gzip");
    let mut corrupt = encoder.finish().expect("gzip");
    // Stored blocks hold the text as it is: flip a digit in the middle.
    let flipped = (corrupt.len() / 2..)
        .find(|&i| corrupt[i].is_ascii_digit())
        .expect("a digit");
    corrupt[flipped] = b'x';
    // Where the decoder found it: the CRC-32, read with the length, ends the file.
    let says = format!(
        "reading the gzip stream failed: the CRC-32 or length of gzip member 1 does not match \
         its data at compressed byte {}",
        corrupt.len()
    );

    let (_dir, file) = temp_file("corrupt.trace.gz", &corrupt);
    let (_, message) = fails(&["replay", path(&file), "--capacity", "3"]);
    assert!(
        message.ends_with(&format!("corrupt.trace.gz: {says}")),
        "{message}"
    );

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_memocache"))
        .args(["replay", "-", "--capacity", "3", "--format", "lirs"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run memocache");
    let mut stdin = child.stdin.take().expect("a pipe");
    let writer = std::thread::spawn(move || {
        for piece in corrupt.chunks(64) {
            // The old command stopped reading at the bad line: a broken pipe ends this.
            if stdin.write_all(piece).and_then(|()| stdin.flush()).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    let output = child.wait_with_output().expect("memocache ran");
    writer.join().expect("the writer");
    assert_eq!(stdout(&output), "");
    let message = one_error_line(&output);
    assert!(
        message.ends_with(&format!("standard input: {says}")),
        "{message}"
    );
}

#[test]
fn a_bad_capacity_is_one_error_line_before_the_trace_is_read() {
    let (_dir, loop_path) = temp_file("loop.trace", &loop_trace());
    let missing = loop_path.with_file_name("missing.trace");
    for capacity in [
        "0", "-5", "abc", "5k", "1.5", "101%", "0%", "-1%", "nan%", "",
    ] {
        // Validated first: the missing trace is never reached.
        let (_, message) = fails(&["replay", path(&missing), "--capacity", capacity]);
        assert!(
            message.contains(&format!(
                "invalid value '{capacity}' for '--capacity <N[%]>'"
            )),
            "{capacity:?}: {message}"
        );
    }
    // A percent is resolved against the trace: 1 % of 3 unique keys is no entry at all.
    let (_, message) = fails(&["replay", path(&loop_path), "--capacity", "1%"]);
    assert!(message.contains("less than one entry"), "{message}");
}

#[test]
fn an_unknown_format_or_curve_folder_is_one_error_line() {
    let (_dir, loop_path) = temp_file("loop.trace", &loop_trace());
    let message = fails_with_capacity_3(&loop_path, "--format", "csv");
    assert!(
        message.contains("unknown trace format \"csv\""),
        "{message}"
    );

    let nowhere = loop_path.with_file_name("no/such/folder/out.svg");
    let message = fails_with_capacity_3(&loop_path, "--curve", path(&nowhere));
    assert!(message.contains("cannot write the curve"), "{message}");
}

/// A curve name longer than the file system allows (255 bytes) passed the check made before
/// the replay, whose trial file has a name of its own: the replays ran and printed their table,
/// and only the final rename failed. It is refused before anything is replayed.
#[test]
fn a_curve_name_too_long_for_the_file_system_is_refused_before_the_replay() {
    let (_dir, loop_path) = temp_file("loop.trace", &loop_trace());
    let long = loop_path.with_file_name(format!("{}.svg", "c".repeat(300)));
    let message = fails_with_capacity_3(&loop_path, "--curve", path(&long));
    assert!(
        message.contains("cannot write the curve to") && message.contains("name too long"),
        "{message}"
    );
}

/// `--curve -` wrote the SVG to a file named `-` in the working directory and said "curve
/// written to -", where standard output (which has the table) was meant. It is refused
/// before the replay; `./-` still names such a file.
#[test]
fn a_curve_to_a_dash_is_refused() {
    let (dir, loop_path) = temp_file("loop.trace", &loop_trace());
    // The replay, run in `dir`, with its curve to `to`.
    let curve_to = |to| {
        let args = ["replay", path(&loop_path), "--capacity", "3", "--curve", to];
        cli_support::memocache_with(&args, |command| command.current_dir(dir.path()))
    };
    let output = curve_to("-");
    assert_eq!(stdout(&output), "");
    let line = one_error_line(&output);
    assert!(
        line.ends_with(
            "cannot write the curve to -: the table goes to standard output, the curve to a \
             file: name one *.svg (./- for a file named -)"
        ),
        "{line}"
    );
    assert!(!dir.path().join("-").exists());
    let output = curve_to("./-");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(dir.path().join("-").is_file());
}

/// A replay holds the whole trace, and a file of a few KiB (zstd of repeated lines) stands for
/// billions of requests: it read on until the allocator refused, or a system that overcommits
/// memory killed it. `--max-requests` (by default what the available memory holds) stops it.
#[test]
fn a_trace_of_more_requests_than_max_requests_is_refused() {
    let (_dir, loop_path) = temp_file("loop.trace", &loop_trace());
    let args = |max: &'static str| {
        [
            "replay",
            path(&loop_path),
            "--capacity",
            "3",
            "--max-requests",
            max,
        ]
    };
    let (_, message) = fails(&args("29"));
    assert!(
        message.ends_with("loop.trace: the trace has more than 29 requests (--max-requests)"),
        "{message}"
    );
    let (out, ratios) = replay_table(&args("30"));
    assert_eq!(
        ratios,
        ["90.00", "90.00", "90.00"].map(String::from),
        "{out}"
    );
    for bad in ["0", "-5", "many"] {
        let (_, message) = fails(&args(bad));
        assert!(message.contains("from 1 up"), "{bad}: {message}");
    }
}

/// The default `--max-requests` came from Linux's `/proc/meminfo`; elsewhere there was no
/// limit and `--help` did not say so. It falls back to a fixed 100,000,000 requests, and the
/// help gives both (the fallback itself: `default_max_requests`'s unit test).
#[test]
fn the_help_gives_the_default_max_requests_where_memory_is_not_known() {
    let output = memocache(&["replay", "--help"]);
    assert!(output.status.success());
    let help = stdout(&output)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("as many as the available memory holds (Linux), else 100,000,000"),
        "{help}"
    );
    // In a container MemAvailable is the host's; the cgroup's limit counts too (session 25),
    // and its parents' (session 26).
    assert!(
        help.contains(
            "the smaller of MemAvailable (/proc/meminfo) and what the memory limits of this \
             process's cgroup and its parents leave"
        ),
        "{help}"
    );
}

/// `key -` hashes standard input, but `replay -` was "-: cannot open trace: No such file or
/// directory". It reads standard input, named as such, with `--format`.
#[cfg(unix)]
#[test]
fn a_dash_replays_standard_input() {
    let (_dir, loop_path) = temp_file("loop.trace", &loop_trace());
    let output = cli_support::memocache_with(
        &["replay", "-", "--capacity", "3", "--format", "lirs"],
        |command| command.stdin(std::fs::File::open(&loop_path).expect("the trace")),
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        out.contains("trace     standard input: 30 requests, 3 unique keys (lirs"),
        "{out}"
    );
}

/// `replay -` without `--format` said "/dev/stdin: cannot tell the trace format from the
/// file name (expected *.lis, …)", about a name the user never gave.
#[cfg(unix)]
#[test]
fn a_dash_without_a_format_is_asked_for_one() {
    let output = cli_support::memocache_with(&["replay", "-", "--capacity", "3"], |command| {
        command.stdin(std::process::Stdio::null())
    });
    assert_eq!(stdout(&output), "");
    let line = one_error_line(&output);
    assert!(
        line.ends_with(
            "standard input has no file name to tell the trace format by: give it with \
             --format NAME (arc, i64be, i32be, oracle-general or lirs)"
        ),
        "{line}"
    );
}

/// `replay -` told the compression from the name `/dev/stdin`, which tells none: gzip on
/// standard input failed as "bad lirs line: not UTF-8 text", and xz or zstd of a binary trace
/// was replayed as keys of garbage with status 0 (`cat web07.trace.xz | memocache replay -
/// --format i32be` printed 0.00 % for every policy). Its first bytes tell it now, as they do
/// for a file whose name gives no compression, or another.
#[cfg(unix)]
#[test]
fn a_compressed_trace_is_decoded_by_its_magic_number_whatever_its_name() {
    let loop_i32be = i32be_loop(1);
    for (format, bytes, compression) in [
        ("lirs", gzip(&loop_trace()), "gzip"),
        ("lirs", XZ_LOOP.to_vec(), "xz"),
        ("i32be", zstd(&loop_i32be), "zstd"),
    ] {
        let (_dir, piped) = temp_file("piped", &bytes);
        let args = ["replay", "-", "--capacity", "3", "--format", format];
        let output = cli_support::memocache_with(&args, |command| {
            command.stdin(std::fs::File::open(&piped).expect("the trace"))
        });
        let out = stdout(&output);
        assert!(
            output.status.success(),
            "{compression}: {}",
            stderr(&output)
        );
        assert!(
            out.contains(&format!(
                "standard input: 30 requests, 3 unique keys ({format}, {compression})"
            )),
            "{out}"
        );
        for policy in ["memocache", "LRU", "OPT"] {
            assert_eq!(table_row(&out, policy).0, "90.00", "{compression}: {out}");
        }
    }
    for (name, bytes, shown) in [
        ("loop.trace", gzip(&loop_trace()), "(lirs, gzip)"),
        ("loop.trace.gz", zstd(&loop_trace()), "(lirs, zstd)"),
    ] {
        let (_dir, trace) = temp_file(name, &bytes);
        let (out, ratios) = replay_table(&["replay", path(&trace), "--capacity", "3"]);
        assert_eq!(ratios, ["90.00", "90.00", "90.00"].map(String::from));
        assert!(
            out.contains(&format!("{name}: 30 requests, 3 unique keys {shown}")),
            "{out}"
        );
    }
    // A compression with no decoder here is refused for what it is, not read as keys.
    let (_dir, bzip2) = temp_file("keys.bin", b"BZh91AY&SY\x00\x01");
    let output = cli_support::memocache_with(
        &["replay", "-", "--capacity", "3", "--format", "i32be"],
        |command| command.stdin(std::fs::File::open(&bzip2).expect("the trace")),
    );
    assert_eq!(stdout(&output), "");
    let line = one_error_line(&output);
    assert!(
        line.contains("standard input: the stream is bzip2-compressed")
            && line.contains("decompress it first"),
        "{line}"
    );
}

/// The library's trace errors display the path lossily: a trace named `caf\xe9.trace` (a
/// Latin-1 name) with a bad line was reported as `caf\u{fffd}.trace:2: …`, while the same
/// command's own errors (a missing file) showed `caf\xe9.trace`, as every path the command
/// prints does. Each of its errors about a trace names the file by its bytes.
#[cfg(unix)]
#[test]
fn a_trace_error_names_a_file_that_is_not_utf8_by_its_bytes() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let named = |name: &[u8], contents: &[u8]| {
        let path = dir.path().join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(&path, contents).expect("write the trace");
        path
    };
    for (trace, format, expected) in [
        (
            named(b"caf\xe9.trace", b"1\nx\n"),
            None,
            r"caf\xe9.trace:2: bad lirs line",
        ),
        (
            named(b"odd\xff.trace.gz", b"1\n"),
            None,
            r"odd\xff.trace.gz: the file is not gzip",
        ),
        (
            named(b"keys\xfe", b"1\n"),
            None,
            r"keys\xfe: cannot tell the trace format",
        ),
        (
            named(b"cut\xff.dat", b"\0\0\0"),
            Some("i32be"),
            r"cut\xff.dat: truncated i32be trace",
        ),
    ] {
        let output = cli_support::memocache_with(&["replay", "--capacity", "1"], |command| {
            command
                .arg(&trace)
                .args(format.map(|f| ["--format", f]).iter().flatten())
        });
        let line = one_error_line(&output);
        assert!(line.contains(expected), "{line}");
        assert!(!line.contains('\u{fffd}'), "{line}");
    }
}

/// Runs `replay` on standard input fed from `stdin`, with `args` after `-`.
#[cfg(unix)]
fn replay_stdin(args: &[&str], stdin: impl Into<std::process::Stdio>) -> Output {
    let all: Vec<&str> = ["replay", "-"].iter().chain(args).copied().collect();
    cli_support::memocache_with(&all, |command| command.stdin(stdin))
}

/// Errors about a trace read from `-` named `/dev/stdin`, a path the user never typed: a bad
/// line, an empty input, too many requests, standard input that is a directory. They say
/// "standard input".
#[cfg(unix)]
#[test]
fn errors_about_standard_input_say_standard_input() {
    let (dir, bad) = temp_file("bad.trace", b"1\nx\n");
    let (_d, loop_path) = temp_file("loop.trace", &loop_trace());
    let file = |path: &std::path::Path| std::fs::File::open(path).expect("the input");
    let lirs = ["--capacity", "3", "--format", "lirs"];
    let cases: Vec<(Output, &str)> = vec![
        (
            replay_stdin(&lirs, file(&bad)),
            "standard input:2: bad lirs line",
        ),
        (
            replay_stdin(&lirs, std::process::Stdio::null()),
            "standard input: the trace has no requests",
        ),
        (
            replay_stdin(
                &["--capacity", "3", "--format", "lirs", "--max-requests", "1"],
                file(&loop_path),
            ),
            "standard input: the trace has more than 1 requests (--max-requests)",
        ),
        (
            replay_stdin(&lirs, file(dir.path())),
            "standard input is a directory, not a trace file",
        ),
    ];
    for (output, expected) in cases {
        assert_eq!(stdout(&output), "");
        let line = one_error_line(&output);
        assert!(line.contains(expected), "{line}");
        assert!(!line.contains("/dev/stdin"), "{line}");
    }
}

/// `replay -` opened `/dev/stdin`, which cannot be opened for a socket (a service's standard
/// input, `socat`): "/dev/stdin: cannot open trace: No such device or address", where `key -`
/// read it. Standard input is read as it is.
#[cfg(unix)]
#[test]
fn a_socket_on_standard_input_is_replayed() {
    use std::io::Write as _;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let writer = std::thread::spawn(move || {
        let mut ours = ours;
        ours.write_all(&loop_trace()).expect("write the trace");
    });
    let output = replay_stdin(
        &["--capacity", "3", "--format", "lirs"],
        std::os::fd::OwnedFd::from(theirs),
    );
    writer.join().expect("the writer");
    assert!(output.status.success(), "{}", stderr(&output));
    for policy in ["memocache", "LRU", "OPT"] {
        assert_eq!(table_row(&stdout(&output), policy).0, "90.00");
    }
}

/// The options of a replay of [`i32be_loop`] with 3 entries, read as `compression`.
fn i32be_options(compression: &str) -> [&str; 6] {
    [
        "--capacity",
        "3",
        "--format",
        "i32be",
        "--compression",
        compression,
    ]
}

/// An uncompressed binary trace whose first bytes are a compression's magic number (an i32be
/// key 0x1f8b0800 first) was decoded as gzip, and refused as a corrupt stream, with no way
/// to read it as it is but the library's `open_as`. `--compression none` reads it raw;
/// `--compression gzip` (xz, zstd) refuses bytes that are not of it, saying what they are.
#[test]
fn compression_can_be_given() {
    let keys = i32be_loop(0x1f8b_0800);
    let (_dir, trace) = temp_file("keys.bin", &keys);
    let args = |compression| [&["replay", path(&trace)][..], &i32be_options(compression)].concat();
    fails(&args("auto"));
    let (out, ratios) = replay_table(&args("none"));
    assert_eq!(ratios, ["90.00", "90.00", "90.00"].map(String::from));
    assert!(
        out.contains("keys.bin: 30 requests, 3 unique keys (i32be, uncompressed)"),
        "{out}"
    );
    // Any case, as --format.
    replay_table(&args("NONE"));

    // Given, a compression is checked against the content, which is named.
    let (_d1, text) = temp_file("loop.trace", &loop_trace());
    let line = fails_with_capacity_3(&text, "--compression", "gzip");
    assert!(
        line.ends_with(
            "loop.trace: the file is not gzip: it starts with the bytes 31 0a 32 0a 33 0a, not \
             with gzip's magic number 1f 8b (--compression gzip; auto tells it from the content)"
        ),
        "{line}"
    );
    let (_d2, gz) = temp_file("loop.trace.gz", &gzip(&loop_trace()));
    let line = fails_with_capacity_3(&gz, "--compression", "xz");
    assert!(line.contains("the file is not xz: it is gzip"), "{line}");
    let (_, ratios) = replay_table(&[
        "replay",
        path(&gz),
        "--capacity",
        "3",
        "--compression",
        "gzip",
    ]);
    assert_eq!(ratios, ["90.00", "90.00", "90.00"].map(String::from));
    // zstd given for a file named .gz: the content is what counts.
    let (_d3, zst) = temp_file("loop.trace.gz", &zstd(&loop_trace()));
    let (out, _) = replay_table(&[
        "replay",
        path(&zst),
        "--capacity",
        "3",
        "--compression",
        "zstd",
    ]);
    assert!(out.contains("(lirs, zstd)"), "{out}");

    for bad in ["bz2", ""] {
        let (_, line) = fails(&["replay", path(&gz), "--capacity", "3", "--compression", bad]);
        assert!(
            line.contains("possible values: auto, none, gzip, xz, zstd"),
            "{line}"
        );
    }
    // The help names the option and its values.
    let help = stdout(&memocache(&["replay", "--help"]));
    assert!(help.contains("--compression <NAME>"), "{help}");
    assert!(
        help.contains("[possible values: auto, none, gzip, xz, zstd]"),
        "{help}"
    );
}

/// On standard input too: `--compression none` reads a gzip-looking binary trace raw, and a
/// compression given that the bytes are not of is refused for standard input.
#[cfg(unix)]
#[test]
fn compression_can_be_given_for_standard_input() {
    let keys = i32be_loop(0x1f8b_0800);
    let (_dir, trace) = temp_file("keys.bin", &keys);
    let file = || std::fs::File::open(&trace).expect("the trace");
    let output = replay_stdin(&i32be_options("none"), file());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(table_row(&stdout(&output), "OPT").0, "90.00");
    let line = one_error_line(&replay_stdin(&i32be_options("xz"), file()));
    assert!(
        line.ends_with(
            "standard input: the stream is not xz: it is gzip (it starts with the bytes 1f 8b 08 \
             00 00 00) (--compression xz; auto tells it from the content)"
        ),
        "{line}"
    );
}

/// A trace named as compressed whose content is not (a text trace named `.gz`) is refused
/// under `--compression auto`, as it may be garbage read as it is; the refusal did not say
/// how to read it anyway, which `--compression none` does.
#[test]
fn a_trace_named_compressed_but_not_says_how_to_read_it_as_it_is() {
    let (_dir, trace) = temp_file("loop.trace.gz", &loop_trace());
    let (_, line) = fails(&["replay", path(&trace), "--capacity", "3"]);
    assert!(
        line.ends_with(
            "loop.trace.gz: the file is not gzip: it starts with the bytes 31 0a 32 0a 33 0a, \
             not with gzip's magic number 1f 8b (its name says gzip; --compression none reads \
             it as it is)"
        ),
        "{line}"
    );
    let (_, ratios) = replay_table(&[
        "replay",
        path(&trace),
        "--capacity",
        "3",
        "--compression",
        "none",
    ]);
    assert_eq!(ratios, ["90.00", "90.00", "90.00"].map(String::from));
}
