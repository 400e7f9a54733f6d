//! An adversarial audit of the `memocache` command (issue #8): every error a user can cause is
//! one `memocache: error:` line on stderr and status 1 — missing and garbled arguments, a trace
//! cut inside a record, a cache directory that cannot be one, a corrupt snapshot in it, and
//! audio the splitter refuses — and switching engines over one cache directory never serves
//! the previous engine's words. Output and interruption (session 15): a curve that cannot be
//! written whole leaves the previous one, Ctrl-C during `demo` leaves no temporary files, and
//! a trace too large for memory is an error line, not an allocation abort; results go to
//! stdout while the progress bars are drawn on a terminal. Session 20: a standard output on a
//! full disk, a missing or directory trace, and negative or oversized sizes are each one line
//! that names the problem. Session 30: every numeric option reads one grammar, and a value it
//! does not take (past its largest, a fraction, not a number) is refused, never clamped.

#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Command, Stdio};

mod cli_support;

use cli_support::{
    dev_full, file_in, memocache, memocache_with, one_error_line, path, succeeded, transcribe,
    transcribe_args,
};

/// clap reported usage errors on several lines with status 2; the README and the issue promise
/// one line and status 1 for every error a user can cause.
#[test]
fn missing_or_garbled_arguments_are_one_line_and_status_1() {
    for (args, says) in [
        (&["replay", "t.trace"][..], "--capacity"),
        (&["replay", "t.trace", "--capacity"], "--capacity"),
        (&["replay", "--capacity", "5"], "<TRACE>"),
        (&["transcribe", "a.wav"], "--language"),
        (
            &["transcribe", "a.wav", "--language", "en", "--chunk-mb", "x"],
            "'x'",
        ),
        (&["key"], "<FILE>"),
        (&["frobnicate"], "frobnicate"),
        (&[], "no command given"),
    ] {
        let line = one_error_line(&memocache(args));
        assert!(line.contains(says), "{args:?}: {line}");
        assert!(!line.contains("Usage:"), "{args:?}: {line}");
    }
    // Help and version are not errors.
    for flag in ["--help", "--version"] {
        let output = memocache(&[flag]);
        assert_eq!(output.status.code(), Some(0), "{flag}");
        assert!(!output.stdout.is_empty(), "{flag}");
    }
}

#[test]
fn a_binary_trace_cut_inside_a_record_is_one_error_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("keys.bin");
    // Two 8-byte big-endian ids and 3 bytes of a third.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(&2u64.to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0]);
    std::fs::write(&trace, bytes).expect("writable");
    let line = one_error_line(&memocache(&[
        "replay",
        path(&trace),
        "--capacity",
        "2",
        "--format",
        "i64be",
    ]));
    assert!(line.contains("truncated"), "{line}");
}

#[test]
fn unusable_cache_dirs_and_refused_audio_are_one_error_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![5u8; 3000]);
    let transcribe = |cache_dir: &Path, file: &Path, extra: &[&str]| {
        let mut args = transcribe_args(path(file), cache_dir);
        args.extend_from_slice(extra);
        one_error_line(&memocache(&args))
    };

    // A cache directory that is a file, or lies under one. The first said "File exists",
    // as if the directory were there and refused; so did `demo --dir` of a file.
    let line = transcribe(&audio, &audio, &[]);
    assert!(
        line.contains("cannot create the cache directory")
            && line.ends_with("a.raw: it exists and is not a directory"),
        "{line}"
    );
    transcribe(&audio.join("sub"), &audio, &[]);
    let line = one_error_line(&memocache(&["demo", "--dir", path(&audio)]));
    assert!(
        line.ends_with("a.raw: it exists and is not a directory"),
        "{line}"
    );

    // A corrupt snapshot, and a snapshot path that is a folder: the cache is not silently
    // started empty over them (a later save would destroy what the user has).
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).expect("writable");
    std::fs::write(corrupt.join("cache.snapshot"), b"not a snapshot at all").expect("writable");
    let line = transcribe(&corrupt, &audio, &[]);
    assert!(line.contains("snapshot"), "{line}");
    assert_eq!(
        std::fs::read(corrupt.join("cache.snapshot")).expect("still there"),
        b"not a snapshot at all"
    );
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join("cache.snapshot")).expect("writable");
    transcribe(&folder, &audio, &[]);

    // Out-of-range sizes.
    let fresh = dir.path().join("fresh");
    let line = transcribe(&fresh, &audio, &["--chunk-mb", "5"]);
    assert!(line.contains("less than 10"), "{line}");
    assert!(line.contains("10..=25"), "{line}");
    let line = transcribe(&fresh, &audio, &["--cache-mb", "0"]);
    assert!(line.contains("--cache-mb"), "{line}");

    // A WAV header with no data chunk, a WAV whose header promises more audio than the file
    // holds, and an empty file.
    let no_data = file_in(dir.path(), "no-data.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ");
    let line = transcribe(&fresh, &no_data, &[]);
    assert!(
        line.contains("no-data.wav") && line.contains("WAV"),
        "{line}"
    );
    let mut lying = Vec::new();
    lying.extend_from_slice(b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00");
    // PCM, mono, 8 kHz, 16 kB/s, block align 2, 16 bits.
    lying.extend_from_slice(&[1, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x80, 0x3e, 0, 0, 2, 0, 16, 0]);
    lying.extend_from_slice(b"data\x00\x10\x00\x00"); // 4096 bytes promised
    lying.extend_from_slice(&[0u8; 100]);
    let liar = file_in(dir.path(), "liar.wav", lying);
    let line = transcribe(&fresh, &liar, &[]);
    assert!(line.contains("ended after 100 of 4096"), "{line}");
    let empty = file_in(dir.path(), "empty.wav", b"");
    let line = transcribe(&fresh, &empty, &[]);
    assert!(line.contains("empty"), "{line}");
}

/// The default engine is the stand-in; a user who then plugs in a real engine over the same
/// cache directory must get the real engine's words, not the stand-in's from the snapshot.
#[test]
fn switching_engines_over_one_cache_dir_transcribes_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![9u8; 3000]);
    let cache_dir = dir.path().join("cache");
    let base = transcribe_args(path(&audio), &cache_dir);
    let stand_in = memocache(&base);
    assert!(stand_in.status.success());
    assert!(String::from_utf8_lossy(&stand_in.stdout).contains("[stand-in]"));

    let mut with_engine = base.to_vec();
    with_engine.extend_from_slice(&["--engine-cmd", "test -s {chunk} && echo real words"]);
    for run in ["computed", "from cache"] {
        let output = memocache(&with_engine);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains(run), "{run}: {stdout}");
        assert!(stdout.contains("real words"), "{stdout}");
        assert!(!stdout.contains("[stand-in]"), "{stdout}");
    }
}

/// `memocache key FILE --language L` prints the key the pipeline stores the file's transcript
/// under, so a user can look a transcript up (or evict it) from a script.
#[test]
fn the_printed_transcript_key_is_the_pipelines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", b"some audio");
    let output = memocache(&["key", path(&audio), "--language", "en"]);
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let file = std::fs::File::open(&audio).expect("readable");
    let hash = memocache::CacheKey::from_reader(file, "file")
        .expect("hashed")
        .digest_hex();
    let key = memocache::CacheKey::transcript(&hash, "en").expect("valid");
    assert_eq!(printed, key.to_string());
    // Without a language: the content key, whose digest is the same SHA-256.
    let output = memocache(&["key", path(&audio)]);
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(printed, format!("content:{hash}"));
}

/// `memocache key -` hashes standard input, as `-` means for most commands; it used to look
/// for a file named `-` and fail.
#[test]
fn key_of_dash_hashes_standard_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", b"some audio");
    let of_file = memocache(&["key", path(&audio), "--language", "pt-BR"]);
    assert!(of_file.status.success());
    let run = Command::new(env!("CARGO_BIN_EXE_memocache"))
        .args(["key", "-", "--language", "pt-BR"])
        .stdin(std::fs::File::open(&audio).expect("readable"))
        .output()
        .expect("run the memocache binary");
    succeeded(&run);
    assert_eq!(run.stdout, of_file.stdout);
    assert!(!run.stdout.is_empty());
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("a readable dir")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The curve was written in place: a write that failed part-way (a full disk) had already
/// truncated the file, so the previous curve was lost and the first 2 KiB of the new one left
/// in its place, behind an error line.
#[cfg(unix)]
#[test]
fn a_curve_that_cannot_be_written_whole_leaves_the_previous_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = file_in(dir.path(), "loop.trace", "1\n2\n3\n".repeat(10));
    let out = dir.path().join("curve.svg");
    let previous = "<svg>the previous curve</svg>";
    std::fs::write(&out, previous).expect("writable");
    // `ulimit -f 4` caps a file the command writes at 2 KiB (a curve is over 10 KiB); with
    // SIGXFSZ ignored (which `exec` keeps), a write past it fails with EFBIG, as one on a
    // full disk fails with ENOSPC.
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 4; exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_memocache"))
        .args(["replay", path(&trace), "--capacity", "2", "--curve"])
        .arg(&out)
        .output()
        .expect("run sh");
    let line = one_error_line(&output);
    assert!(line.contains("cannot write the curve"), "{line}");
    assert_eq!(
        std::fs::read_to_string(&out).expect("still there"),
        previous
    );
    // The temporary file is gone with the failed write.
    assert_eq!(names(dir.path()), ["curve.svg", "loop.trace"]);

    // Without the limit, the new curve replaces the old one, with a new file's permissions.
    let line = memocache(&[
        "replay",
        path(&trace),
        "--capacity",
        "2",
        "--curve",
        path(&out),
    ]);
    assert!(line.status.success());
    assert!(
        std::fs::read_to_string(&out)
            .expect("written")
            .contains("</svg>")
    );
    assert_eq!(names(dir.path()), ["curve.svg", "loop.trace"]);
}

/// Ctrl-C ended the demo without running destructors: its temporary directory, with the
/// megabytes of WAV files it had generated so far, was left behind on every interrupted run.
#[cfg(unix)]
#[test]
fn ctrl_c_during_the_demo_leaves_no_temporary_files() {
    // The demo's own temporary folder, so that what it leaves can be seen.
    let tmp = tempfile::tempdir().expect("temp dir");
    let status = interrupt_demo(&[], |command| command.env("TMPDIR", tmp.path()));
    assert_eq!(names(tmp.path()), Vec::<String>::new(), "{status}");
    assert_eq!(status.code(), Some(130), "{status}");
}

/// Starts `memocache demo ARGS…`, sends it Ctrl-C once it has printed its first line, and
/// waits for it to end.
#[cfg(unix)]
fn interrupt_demo(
    args: &[&str],
    configure: impl FnOnce(&mut Command) -> &mut Command,
) -> std::process::ExitStatus {
    use std::io::BufRead as _;

    let mut command = Command::new(env!("CARGO_BIN_EXE_memocache"));
    command.arg("demo").args(args);
    let mut demo = configure(&mut command)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    // Its first line comes before any audio is generated, and the rest of the demo takes
    // far longer than the signal takes to arrive.
    // The pipe stays open to the end: a closed one would end the demo by another path.
    let mut stdout = std::io::BufReader::new(demo.stdout.take().expect("piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("a first line");
    assert!(first.contains("working in"), "{first}");
    let sent = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    std::io::copy(&mut stdout, &mut std::io::sink()).expect("read to the end");
    demo.wait().expect("wait")
}

/// Ctrl-C during `demo --dir DIR` left its part-written WAV files in DIR, and the same
/// command was then refused: "DIR is not empty". What the demo wrote is removed — the
/// directory too if the demo made it — and the command runs again there.
#[cfg(unix)]
#[test]
fn ctrl_c_during_demo_dir_leaves_the_directory_usable_again() {
    let parent = tempfile::tempdir().expect("temp dir");
    let made = parent.path().join("made");
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).expect("writable");
    for (dir, left) in [(&made, None), (&empty, Some(vec!["cache.lock".to_owned()]))] {
        let status = interrupt_demo(&["--dir", path(dir)], |command| command);
        assert_eq!(status.code(), Some(130), "{status}");
        match &left {
            None => assert!(!dir.exists(), "{:?}", names(dir)),
            Some(left) => assert_eq!(&names(dir), left),
        }
        let again = memocache(&["demo", "--dir", path(dir)]);
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert!(again.status.success(), "{stderr}");
    }
}

/// `replay TRACE --capacity 5` in 200 MB of address space (enough for the command, not for
/// a trace of tens of millions of requests), which must fail: its one error line.
#[cfg(unix)]
fn replay_in_200_mb(trace: &Path) -> String {
    one_error_line(&replay_in(200_000, trace))
}

/// `replay TRACE --capacity 5` in `kib` KiB of address space.
#[cfg(unix)]
fn replay_in(kib: u32, trace: &Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(r#"ulimit -v {kib}; exec "$0" "$@""#))
        .arg(env!("CARGO_BIN_EXE_memocache"))
        .args(["replay", path(trace), "--capacity", "5"])
        .output()
        .expect("run sh")
}

/// A trace that fits in memory while OPT's plan of it does not (8 M distinct keys in 400 MB
/// of address space: 64 MiB of keys, then 72 MiB of plan and a map of every key) failed
/// only after memocache's and LRU's replays, below the header of a table that never came.
/// OPT is set up and replayed first: the run fails before it prints anything.
#[cfg(unix)]
#[test]
fn a_plan_for_opt_that_does_not_fit_fails_before_anything_is_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("distinct.lis");
    let lines: String = (0..128u64)
        .map(|i| format!("{} 65536 0 0\n", i * 65536))
        .collect();
    std::fs::write(&trace, lines).expect("writable");
    let output = replay_in(400_000, &trace);
    let line = one_error_line(&output);
    assert!(
        line.contains("OPT's plan of the trace does not fit"),
        "{line}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
}

/// A few ARC lines stand for many requests (1,000 lines of the longest run, 65 M), and
/// `replay` holds the whole trace: the key list grew with `push` until an allocation failed,
/// which aborted the process ("memory allocation of 268435456 bytes failed", a backtrace,
/// SIGABRT).
#[cfg(unix)]
#[test]
fn a_trace_too_large_for_memory_is_one_error_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = file_in(dir.path(), "huge.lis", "0 65536 0 0\n".repeat(1000));
    let line = replay_in_200_mb(&trace);
    assert!(
        line.contains("huge.lis: the trace does not fit in memory"),
        "{line}"
    );
}

/// One 17-byte ARC line stood for 2^32 requests: `replay` read 32 GiB of keys from it (or ran
/// out of memory; on a system that overcommits, the process was killed). The line is refused
/// by number before any of its keys is read. The address space is limited as above, so that
/// without the bound the test fails on the memory, not the machine.
#[cfg(unix)]
#[test]
fn an_arc_line_standing_for_billions_of_requests_is_refused_by_its_number() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = file_in(dir.path(), "tiny.lis", "3 1 0 0\n0 4294967295 0 0\n");
    let line = replay_in_200_mb(&trace);
    assert!(
        line.ends_with(
            "tiny.lis:2: bad arc line: a run of 4294967295 blocks, more than the 65536 a line \
             may have"
        ),
        "{line}"
    );
}

/// With the progress bars drawn (stderr a terminal), result lines went through indicatif's
/// `MultiProgress::println`, which writes to the bars' stderr: `transcribe … > out.txt` in a
/// terminal put the transcripts on the screen and only the summary in the file.
#[cfg(unix)]
#[test]
fn transcripts_go_to_stdout_while_the_bars_are_drawn() {
    // `script` (util-linux) runs the command on a pseudo-terminal, as a user's shell does.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command to give the run a terminal");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![5u8; 3000]);
    let out = dir.path().join("out.txt");
    let command = format!(
        "'{}' transcribe '{}' --language en --cache-dir '{}' > '{}'",
        env!("CARGO_BIN_EXE_memocache"),
        path(&audio),
        path(&dir.path().join("cache")),
        path(&out),
    );
    let status = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run script");
    assert!(status.success(), "{status}");
    let printed = std::fs::read_to_string(&out).expect("written");
    assert!(printed.contains("a.raw: computed"), "{printed:?}");
    assert!(printed.contains("[stand-in]"), "{printed:?}");
    assert!(printed.contains("hits 0  misses 1"), "{printed:?}");
}

/// The XDG Base Directory specification makes a relative `$XDG_CACHE_HOME` invalid, to be
/// ignored: it was joined as given, so each run put its cache under whatever directory it
/// was started in (and a second run elsewhere found none of it). The fallback is
/// `$HOME/.cache`, as when the variable is unset.
#[test]
fn a_relative_xdg_cache_home_is_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![5u8; 3000]);
    let home = dir.path().join("home");
    let started_in = dir.path().join("cwd");
    std::fs::create_dir(&started_in).expect("writable");
    let output = Command::new(env!("CARGO_BIN_EXE_memocache"))
        .args(["transcribe", path(&audio), "--language", "en"])
        .current_dir(&started_in)
        .env("XDG_CACHE_HOME", "relative/cache")
        .env("HOME", &home)
        .output()
        .expect("run the memocache binary");
    succeeded(&output);
    let printed = String::from_utf8_lossy(&output.stdout);
    let snapshot = home.join(".cache/memocache/cache.snapshot");
    assert!(snapshot.is_file(), "{printed}");
    assert!(
        printed.contains(&format!("cache saved to {}", snapshot.display())),
        "{printed}"
    );
    assert_eq!(
        std::fs::read_dir(&started_in).expect("lists").count(),
        0,
        "nothing is created where the run started"
    );
}

/// Error lines quote paths as given, and a Linux file name may hold a newline (or a
/// terminal escape): the one error line became two, with the second not starting with
/// `memocache: error:`. Control characters in the line are now escaped.
#[test]
fn a_path_with_a_newline_is_still_one_error_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no\nsuch\u{1b}[2J.wav");
    let line = one_error_line(&memocache(&["key", path(&missing)]));
    assert!(line.contains(r"no\nsuch\u{1b}[2J.wav"), "{line}");
    let line = one_error_line(&transcribe(&[&missing], &dir.path().join("cache"), &[]));
    assert!(line.contains(r"no\nsuch"), "{line}");
}

/// A standard output that fails for another reason than a closed pipe — a full disk under
/// `memocache … > out.txt`, here `/dev/full` — made `println!` panic with its message and a
/// backtrace and exit with status 101. It is one error line naming the cause, status 1.
/// `--help` and `--version` (clap's `exit` ignores a failed write) exited 0 having written
/// nothing; they fail the same way.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_under_stdout_is_one_error_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![3u8; 3000]);
    let trace = file_in(dir.path(), "t.trace", "1\n2\n1\n3\n");
    for args in [
        vec!["key", path(&audio)],
        vec!["replay", path(&trace), "--capacity", "2"],
        vec!["--help"],
        vec!["--version"],
        vec!["replay", "--help"],
        vec!["help", "transcribe"],
    ] {
        let full = dev_full();
        let output = memocache_with(&args, |command| command.stdout(full));
        let line = one_error_line(&output);
        assert!(
            line.contains("cannot write to standard output")
                && line.contains("No space left on device"),
            "{args:?}: {line}"
        );
    }
}

/// A standard error that cannot be written (`2> /dev/full`) made `eprintln!` panic: a user
/// error exited 101 instead of 1, and the stand-in engine's note, printed before anything is
/// transcribed, ended a run that would have succeeded with 101. Lines that cannot be written
/// are dropped; the status is the run's.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_under_stderr_leaves_the_status_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![3u8; 3000]);
    let cache_dir = dir.path().join("cache");
    for (args, status) in [
        (vec!["key", "no-such-file"], 1),
        (vec!["frobnicate"], 1),
        (transcribe_args(path(&audio), &cache_dir), 0),
    ] {
        let full = dev_full();
        let output = memocache_with(&args, |command| command.stderr(full));
        assert_eq!(output.status.code(), Some(status), "{args:?}");
    }
    assert!(cache_dir.join("cache.snapshot").is_file());
}

/// `replay` told the format from the name before it looked at the file, so a mistyped path
/// without a trace extension, or a directory, was "cannot tell the trace format from the file
/// name … name the format explicitly with --format NAME" — and with `--format`, a directory
/// was "reading the uncompressed stream failed". The error names the real problem.
#[test]
fn replay_of_a_missing_file_or_a_directory_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("sprite");
    let line = one_error_line(&memocache(&["replay", path(&missing), "--capacity", "5"]));
    assert!(line.contains("No such file"), "{line}");
    assert!(!line.contains("--format"), "{line}");
    for args in [
        vec!["replay", path(dir.path()), "--capacity", "5"],
        vec![
            "replay",
            path(dir.path()),
            "--capacity",
            "5",
            "--format",
            "lirs",
        ],
    ] {
        let line = one_error_line(&memocache(&args));
        assert!(
            line.contains("is a directory, not a trace file"),
            "{args:?}: {line}"
        );
    }
}

/// `-` is standard input to `key` and `replay`, but `transcribe -` said "cannot read -: No
/// such file or directory", as if a file had gone missing. It says standard input cannot be
/// transcribed and what to do; a file named `-` is still read.
#[test]
fn transcribe_of_a_dash_says_standard_input_cannot_be_transcribed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let args = transcribe_args("-", &cache);
    let run = |args: &[&str]| {
        memocache_with(args, |command| {
            command.current_dir(dir.path()).stdin(Stdio::null())
        })
    };
    let line = one_error_line(&run(&args));
    assert!(
        line.ends_with(
            "- (standard input) cannot be transcribed: the pipeline seeks in its inputs, so \
             save the stream to a file first"
        ),
        "{line}"
    );
    std::fs::write(dir.path().join("-"), vec![7u8; 4096]).expect("writable");
    let output = run(&args);
    succeeded(&output);
}

/// A negative `--cache-mb` or `--chunk-mb` was taken for an unknown option, with clap's tip
/// "to pass '-5' as a value, use '-- -5'", which makes it an input file instead; and a
/// `--chunk-mb` too large for its integer was "not in 0..=4294967295", which is not the
/// range the option takes. Each error now names the option and its range.
#[test]
fn out_of_range_sizes_name_the_option_and_its_range() {
    for (option, value, range) in [
        ("--cache-mb", "-1", "from 1 up"),
        ("--cache-mb", "0", "from 1 up"),
        ("--chunk-mb", "-5", "10..=25"),
        ("--chunk-mb", "99999999999", "10..=25"),
        ("--chunk-mb", "9", "10..=25"),
        // A number that is not whole was "invalid digit found in string", with no range.
        ("--chunk-mb", "25.5", "whole number of MB in 10..=25"),
        ("--chunk-mb", "16MB", "whole number of MB in 10..=25"),
    ] {
        let line = one_error_line(&memocache(&[
            "transcribe",
            "a.wav",
            "--language",
            "en",
            option,
            value,
        ]));
        assert!(
            line.contains(option) && line.contains(range),
            "{option} {value}: {line}"
        );
        assert!(!line.contains("tip"), "{option} {value}: {line}");
    }
}

/// `memocache OPTION VALUE` for a numeric option, with the other arguments its command needs:
/// a missing trace or audio file, never reached when the value is refused.
fn with_number(option: &str, value: &str) -> std::process::Output {
    let mut args = match option {
        "--capacity" => vec!["replay", "missing.trace"],
        "--max-requests" => vec!["replay", "missing.trace", "--capacity", "5"],
        _ => vec!["transcribe", "missing.wav", "--language", "en"],
    };
    args.extend([option, value]);
    memocache(&args)
}

/// The numeric options of every subcommand.
const NUMERIC_OPTIONS: [&str; 5] = [
    "--capacity",
    "--max-requests",
    "--cache-mb",
    "--chunk-mb",
    "--checkpoint-secs",
];

/// Each numeric option had a grammar of its own: `--capacity 1e2%` ran but `--capacity 1e3`
/// was "expected a number of entries", `--checkpoint-secs` took `5e-3` but `--cache-mb`,
/// `--chunk-mb` and `--max-requests` took no exponent, nor `16.0`. Every option now reads
/// one grammar (digits, a fraction, an exponent), whole-number options any spelling of a
/// whole number.
#[test]
fn every_numeric_option_takes_exponents_and_any_spelling_of_a_whole_number() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = file_in(dir.path(), "loop.trace", "1\n2\n3\n".repeat(10));
    let output = memocache(&[
        "replay",
        path(&trace),
        "--capacity",
        "1e3",
        "--max-requests",
        "3.0e1",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    succeeded(&output);
    assert!(stdout.contains("capacity  1,000 entries\n"), "{stdout}");

    let audio = file_in(dir.path(), "a.raw", vec![5u8; 3000]);
    let output = transcribe(
        &[&audio],
        &dir.path().join("cache"),
        &[
            "--cache-mb",
            "1e3",
            "--chunk-mb",
            "1.6e1",
            "--checkpoint-secs",
            "+5e-1",
        ],
    );
    succeeded(&output);
}

/// A number past an option's largest value was taken as that value: `--capacity
/// 18446744073709551616` printed "capacity 18,446,744,073,709,551,615 entries",
/// `--max-requests` one past `usize::MAX` was no limit, `--cache-mb` from 2^44 on gave a
/// budget of `u64::MAX` bytes, and `--checkpoint-secs 1e20` the longest `Duration`. Each is
/// refused, naming the largest value the option takes.
#[test]
fn numbers_past_an_options_largest_value_are_refused_not_clamped() {
    for (option, value, largest) in [
        ("--capacity", "18446744073709551616", "18446744073709551615"),
        ("--capacity", "1e30", "18446744073709551615"),
        (
            "--max-requests",
            "99999999999999999999",
            "18446744073709551615",
        ),
        ("--cache-mb", "17592186044416", "17592186044415"),
        ("--cache-mb", "99999999999999999999", "17592186044415"),
        ("--checkpoint-secs", "1e20", "18446744073709551615"),
    ] {
        let line = one_error_line(&with_number(option, value));
        assert!(
            line.contains(&format!("invalid value '{value}' for '{option} "))
                && line.contains(&format!(": more than {largest} (expected ")),
            "{option} {value}: {line}"
        );
    }
}

/// What is not a number was refused in each option's words, or by clap: `-1_0`, `-.5` or
/// `-inf` given to `--cache-mb` was an unknown option `-1` with the tip to write `-- -1`
/// (which makes it an input file); `0x10` was "expected a whole number …" with nothing said
/// of the `x`; `٥` was "not a number" though it is a digit of another script. Every option
/// now names the problem: the character that has no place in a number, no number, not
/// finite, negative, not whole.
#[test]
fn every_numeric_option_names_what_is_wrong_with_a_value() {
    for (value, problem) in [
        ("1_000", "'_' is not part of a number"),
        ("1,000", "',' is not part of a number"),
        ("0x10", "'x' is not part of a number"),
        ("16MB", "'M' is not part of a number"),
        ("\u{665}", "'\u{665}' is not part of a number"),
        ("-1_0", "'_' is not part of a number"),
        ("", "no number given"),
        (" ", "no number given"),
        ("1e", "no digits in the exponent"),
        ("inf", "not a finite number"),
        ("-inf", "not a finite number"),
        ("NaN", "not a finite number"),
        ("-.5", "a negative number"),
        ("-1e3", "a negative number"),
    ] {
        for option in NUMERIC_OPTIONS {
            let line = one_error_line(&with_number(option, value));
            assert!(
                line.contains(&format!("for '{option} "))
                    && line.contains(&format!(": {problem} (expected ")),
                "{option} {value:?}: {line}"
            );
            assert!(!line.contains("tip"), "{option} {value:?}: {line}");
        }
    }
    // Whole-number options refuse a fraction, rather than rounding it or taking 1e-400 as 0.
    for option in ["--capacity", "--max-requests", "--cache-mb", "--chunk-mb"] {
        for fraction in ["12.5", "1e-400"] {
            let line = one_error_line(&with_number(option, fraction));
            assert!(
                line.contains(": not a whole number (expected "),
                "{option} {fraction}: {line}"
            );
        }
    }
}

/// An engine's text and a file's name reached the terminal as they were: an ESC sequence in
/// either cleared the screen or recoloured it, and a newline in a name forged a line of
/// the command's own. They are printed escaped, and a name that is not UTF-8 shows its bytes
/// (`\xff`) rather than U+FFFD. Checked on the result lines, the chunk's failure line, the
/// summary's snapshot path and `replay`'s trace line.
#[cfg(unix)]
#[test]
fn engine_output_and_file_names_reach_the_terminal_escaped() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let odd = dir.path().join("in\u{1b}[31mred\nforged: ok.raw");
    std::fs::write(&odd, b"some audio bytes").expect("write the input");
    let not_utf8 = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"bytes\xff\xfe.raw"));
    std::fs::write(&not_utf8, b"other audio bytes").expect("write the input");
    let cache = dir.path().join("cache\u{7}dir");
    // Paths go to the command as they are (`path` takes only UTF-8 ones).
    let run = |engine: &str, inputs: &[&Path]| {
        memocache_with(&["transcribe", "--language", "en"], |command| {
            command
                .args(inputs)
                .args(["--engine-cmd", engine, "--cache-dir"])
                .arg(&cache)
        })
    };
    let output = run(
        r"printf '\033[2Jwiped\033]0;title\007'; : {chunk}",
        &[&odd, &not_utf8],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{:?}", output);
    assert!(!output.stdout.contains(&0x1b), "{stdout}");
    assert!(!output.stdout.contains(&0x07), "{stdout}");
    assert!(
        stdout.contains(r"in\u{1b}[31mred\nforged: ok.raw: computed"),
        "{stdout}"
    );
    assert!(stdout.contains(r"    \u{1b}[2Jwiped"), "{stdout}");
    assert!(stdout.contains(r"bytes\xff\xfe.raw: computed"), "{stdout}");
    assert!(stdout.contains(r"cache\u{7}dir"), "{stdout}");

    // A failing engine's stderr is quoted in the failure line.
    let output = run(r"printf '\033[2Jbroken' >&2; exit 3; {chunk}", &[&odd]);
    let line = one_error_line(&output);
    assert!(!output.stdout.contains(&0x1b), "{:?}", output);
    assert!(line.contains(r"\u{1b}[2Jbroken"), "{line}");

    // The library's error displays the path lossily; the failure line shows its bytes.
    let empty = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"empty\xff.raw"));
    std::fs::write(&empty, b"").expect("write the input");
    let output = run(r"printf words; : {chunk}", &[&empty]);
    let line = one_error_line(&output);
    assert!(line.contains(r"empty\xff.raw failed: "), "{line}");
    assert!(!line.contains('\u{fffd}'), "{line}");

    let trace = dir.path().join("t\u{1b}[2J.lis");
    std::fs::write(&trace, "1 1 0 0\n2 1 0 0\n").expect("write the trace");
    let output = memocache(&["replay", path(&trace), "--capacity", "1"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{:?}", output);
    assert!(!output.stdout.contains(&0x1b), "{stdout}");
    assert!(stdout.contains(r"t\u{1b}[2J.lis: 2 requests"), "{stdout}");
}

/// `memocache` run with `args` and a standard input it never ends, killed (and the test
/// failed) if it has not ended within 60 s: for a command that must fail at once, not hang.
fn within_a_minute(args: &[&str], hung: &str) -> std::process::Output {
    let mut run = Command::new(env!("CARGO_BIN_EXE_memocache"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the memocache binary");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while run.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = run.kill();
            let _ = run.wait();
            panic!("{hung}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run.wait_with_output().expect("its output")
}

/// Session 25: a `cache.snapshot` that is a FIFO (or a socket or device) made `transcribe`
/// wait forever for a writer as it restored the cache; had it read one, its final save would
/// still have refused that path, after the whole run. It is refused at once, as a file that
/// is not a snapshot, with the way out; so is a directory there.
#[cfg(unix)]
#[test]
fn a_snapshot_path_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", b"some audio");
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir(&cache_dir).expect("creatable");
    let snapshot = cache_dir.join("cache.snapshot");
    let made = Command::new("mkfifo")
        .arg(&snapshot)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let args = transcribe_args(path(&audio), &cache_dir);
    let output = within_a_minute(&args, "transcribe waited on a FIFO snapshot");
    let line = one_error_line(&output);
    assert!(line.contains(path(&snapshot)), "{line}");
    assert!(line.contains("not a regular file"), "{line}");
    assert!(line.contains("move it aside"), "{line}");

    std::fs::remove_file(&snapshot).expect("removable");
    std::fs::create_dir(&snapshot).expect("creatable");
    let line = one_error_line(&within_a_minute(&args, "hung on a directory"));
    assert!(line.contains("is a directory"), "{line}");
}

/// Session 25: `key FILE --language L` hashed the whole file (or standard input) before it
/// looked at the language, so a typo in it was reported only after hashing a recording of
/// gigabytes, and `key /dev/zero --language 'e n'` never ended. The language is checked
/// first, as `transcribe` does.
#[cfg(unix)]
#[test]
fn key_checks_the_language_before_hashing() {
    let output = within_a_minute(
        &["key", "/dev/zero", "--language", "e n"],
        "key hashed an endless input before checking the language",
    );
    let line = one_error_line(&output);
    assert!(line.contains("language"), "{line}");
    let output = within_a_minute(
        &["key", "-", "--language", "e n"],
        "key read an endless standard input before checking the language",
    );
    one_error_line(&output);
}

/// Session 25: a snapshot of a newer format version was refused with the advice for a
/// corrupt one, to move it aside or delete it: deleting it loses the cache the newer build
/// saved. The error says a newer memocache may have written it and that deleting it loses
/// that cache.
#[test]
fn a_snapshot_from_a_newer_format_is_not_advised_for_deletion() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", b"some audio");
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir(&cache_dir).expect("creatable");
    let snapshot = cache_dir.join("cache.snapshot");
    let cache = memocache::Cache::builder()
        .max_bytes(1 << 20)
        .build()
        .expect("cache");
    cache
        .insert(
            memocache::CacheKey::from_content(b"x", "content").expect("key"),
            &b"value"[..],
        )
        .expect("fits");
    cache.save_snapshot(&snapshot).expect("saved");
    // The format version: bytes 8..12, little-endian (see `memocache::snapshot`).
    let mut bytes = std::fs::read(&snapshot).expect("readable");
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&snapshot, &bytes).expect("writable");
    let output = transcribe(&[&audio], &cache_dir, &[]);
    let line = one_error_line(&output);
    assert!(line.contains("version 99"), "{line}");
    assert!(line.contains("newer"), "{line}");
    assert!(!line.contains("(or delete it)"), "{line}");
    assert_eq!(
        std::fs::read(&snapshot).expect("kept"),
        bytes,
        "the file was changed"
    );
}

/// Session 31: an option that lets its value start with a hyphen (each numeric one, so that
/// `-5` is refused as a negative number) took whatever followed it as that value: `--capacity
/// --format arc` reported `arc` as an unexpected argument, `--cache-mb --chunk-mb 16` a bad
/// number `--chunk-mb`. Given no value, each says so, as an option of any other kind does.
#[test]
fn a_numeric_option_without_its_value_says_so_and_takes_no_option_as_it() {
    let replay = ["replay", "t.trace", "--format", "arc"];
    let transcribe = ["transcribe", "a.wav", "--language", "en"];
    for (base, option, value_name) in [
        (&replay, "--capacity", "<N[%]>"),
        (&replay, "--max-requests", "<N>"),
        (&transcribe, "--cache-mb", "<MIB>"),
        (&transcribe, "--chunk-mb", "<CHUNK_MB>"),
        (&transcribe, "--checkpoint-secs", "<SECS>"),
    ] {
        for after in [
            &["--dry-run"][..],
            &["--format", "arc"],
            &["--chunk-mb", "16"],
            &["--"],
            &["-h"],
            &[],
        ] {
            let mut args = base.to_vec();
            args.push(option);
            args.extend_from_slice(after);
            let line = one_error_line(&memocache(&args));
            assert!(
                line.contains(&format!(
                    "a value is required for '{option} {value_name}' but none was supplied"
                )),
                "{args:?}: {line}"
            );
        }
        // A negative number is still a value, and refused as one.
        let mut args = base.to_vec();
        args.extend_from_slice(&[option, "-5"]);
        let line = one_error_line(&memocache(&args));
        assert!(line.contains("a negative number"), "{args:?}: {line}");
    }
    // An option of another kind reads as before.
    let line = one_error_line(&memocache(&[
        "replay",
        "t.trace",
        "--capacity",
        "5",
        "--format",
    ]));
    assert!(
        line.contains("a value is required for '--format <NAME>'"),
        "{line}"
    );
}

/// A usage error in a subcommand's arguments pointed at `memocache --help`, which only lists
/// the subcommands; it points at the subcommand's own help now. An error in the top-level
/// arguments or the command's name still points at `memocache --help`.
#[test]
fn a_usage_error_points_at_the_help_of_the_command_it_is_in() {
    for (args, help) in [
        (
            &["replay", "t.trace"][..],
            "(see `memocache replay --help`)",
        ),
        (
            &["replay", "t.trace", "--bogus"],
            "(see `memocache replay --help`)",
        ),
        (
            &["transcribe", "a.wav"],
            "(see `memocache transcribe --help`)",
        ),
        (&["key"], "(see `memocache key --help`)"),
        (&["demo", "--bogus"], "(see `memocache demo --help`)"),
        (&["frobnicate"], "(see `memocache --help`)"),
        (&["--bogus"], "(see `memocache --help`)"),
    ] {
        let line = one_error_line(&memocache(args));
        assert!(line.ends_with(help), "{args:?}: {line}");
    }
}
