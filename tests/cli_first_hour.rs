//! What tripped a new user in a first hour with the `memocache` command (session 9): typos
//! that created or rewrote a cache directory, a garbled engine-command error, failures of a
//! multi-file run that were never named, a curve written over a directory or as a `.png`
//! only after the whole replay, and a demo that overwrote files in a directory it was given.

#![cfg(feature = "cli")]

use std::path::Path;

mod cli_support;

use cli_support::{file_in, memocache, memocache_with, one_error_line, path, transcribe_args};

fn transcribe(files: &[&Path], cache_dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["transcribe"];
    args.extend(files.iter().map(|f| path(f)));
    if !extra.contains(&"--language") {
        args.extend_from_slice(&["--language", "en"]);
    }
    args.extend_from_slice(&["--cache-dir", path(cache_dir)]);
    args.extend_from_slice(extra);
    memocache(&args)
}

/// Each of these is a typo: one error line naming it, and the cache directory is neither
/// created nor (when it exists) its snapshot rewritten.
#[test]
fn a_typo_in_transcribe_touches_no_cache_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![7u8; 3000]);
    let missing = dir.path().join("missing.wav");
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).expect("writable");
    let cache_dir = dir.path().join("cache");

    let cases: [(&[&Path], &[&str], &str); 8] = [
        (&[&audio, &missing], &[], "missing.wav"),
        (&[&folder], &[], "is a directory"),
        (&[Path::new("/dev/null")], &[], "not a regular file"),
        (&[&audio], &["--language", "e n"], "invalid language"),
        (
            &[&audio],
            &["--chunk-mb", "5"],
            "less than 10 (expected a whole number of MB in 10..=25",
        ),
        (&[&audio], &["--cache-mb", "0"], "--cache-mb"),
        (
            &[&audio],
            &["--engine-cmd", "cat"],
            "no {chunk} placeholder",
        ),
        (&[&audio], &["--engine-cmd", ""], "no {chunk} placeholder"),
    ];
    for (files, extra, says) in cases {
        let output = transcribe(files, &cache_dir, extra);
        let line = one_error_line(&output);
        assert!(line.contains(says), "{extra:?}: {line}");
        assert!(!line.contains("exited with"), "{extra:?}: {line}");
        // Checked before anything else: not even the stand-in engine's note is printed.
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("note:"),
            "{extra:?}"
        );
        assert!(
            !cache_dir.exists(),
            "{extra:?}: the cache directory was created"
        );
    }

    // A cache directory the snapshot cannot be written in is refused before any file is
    // transcribed (the work would be lost at the end). `/proc` refuses new files even to root.
    if Path::new("/proc/self").exists() {
        let output = transcribe(&[&audio], Path::new("/proc"), &[]);
        let line = one_error_line(&output);
        assert!(
            line.contains("cannot write in the cache directory"),
            "{line}"
        );
        assert!(output.stdout.is_empty(), "{line}");
    }

    // With a cache in place, a typo leaves its snapshot byte for byte as it was.
    assert!(transcribe(&[&audio], &cache_dir, &[]).status.success());
    let snapshot = cache_dir.join("cache.snapshot");
    let before = std::fs::read(&snapshot).expect("saved");
    one_error_line(&transcribe(&[&missing], &cache_dir, &[]));
    assert_eq!(std::fs::read(&snapshot).expect("still there"), before);
}

/// Only the first unusable input was named, so `transcribe dir/*` over a directory with a few
/// unreadable or missing files found them one run at a time. All are named (the first with
/// its cause, five more by name, then a count), still before anything is touched.
#[test]
fn every_unusable_input_is_named_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![7u8; 3000]);
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).expect("writable");
    let missing: Vec<_> = (1..=7)
        .map(|i| dir.path().join(format!("gone{i}.wav")))
        .collect();
    let mut files: Vec<&Path> = vec![&audio, &folder];
    files.extend(missing.iter().map(|m| m.as_path()));
    let cache_dir = dir.path().join("cache");
    let line = one_error_line(&transcribe(&files, &cache_dir, &[]));
    assert!(line.contains("folder is a directory"), "{line}");
    assert!(
        line.contains("; 7 more inputs cannot be used either: "),
        "{line}"
    );
    assert!(line.ends_with("gone5.wav, and 2 more"), "{line}");
    for named in 1..=5 {
        assert!(line.contains(&format!("gone{named}.wav")), "{line}");
    }
    assert!(!line.contains("gone6.wav"), "{line}");
    assert!(!cache_dir.exists());
}

/// A run of several files goes on past a failing one; every failure is named with the
/// results and the one error line counts them.
#[test]
fn every_failed_file_of_a_run_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = file_in(dir.path(), "good.raw", vec![1u8; 3000]);
    let empty1 = file_in(dir.path(), "empty1.wav", b"");
    let empty2 = file_in(dir.path(), "empty2.wav", b"");
    let output = transcribe(&[&empty1, &good, &empty2], &dir.path().join("cache"), &[]);
    let line = one_error_line(&output);
    assert!(line.contains("2 of 3 files failed"), "{line}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("empty1.wav: FAILED"), "{stdout}");
    assert!(stdout.contains("empty2.wav: FAILED"), "{stdout}");
    assert!(stdout.contains("good.raw: computed"), "{stdout}");
    // The summary counts the failures as the error line does; it gave only the hits and
    // misses of the files served.
    assert!(stdout.contains("\nfiles 3  done 1  failed 2\n"), "{stdout}");

    // One failure of several is counted too, not given as if it were the run's only file.
    let output = transcribe(&[&good, &empty1], &dir.path().join("cache"), &[]);
    let line = one_error_line(&output);
    assert!(line.contains("1 of 2 files failed"), "{line}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\nfiles 2  done 1  failed 1\n"), "{stdout}");
}

/// `--curve` is refused before the trace is replayed when it names a directory or a
/// non-SVG file; the replay's table is not printed first.
#[test]
fn a_curve_path_that_cannot_be_the_svg_fails_before_the_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = file_in(dir.path(), "t.trace", "1\n2\n1\n3\n");
    let png = dir.path().join("curve.png");
    let curve_to = |out| memocache(&["replay", path(&trace), "--capacity", "2", "--curve", out]);
    for (out, says) in [(dir.path(), "is a directory"), (png.as_path(), "*.svg")] {
        let output = curve_to(path(out));
        let line = one_error_line(&output);
        assert!(line.contains(says), "{line}");
        assert!(output.stdout.is_empty(), "{line}");
    }
    assert!(!png.exists());
    // A folder the curve cannot be written in was found only when the curve was written,
    // after the replay and the curve's own replays. `/proc` refuses new files even to root.
    if Path::new("/proc/self").exists() {
        let output = curve_to("/proc/curve.svg");
        let line = one_error_line(&output);
        assert!(
            line.contains("cannot write the curve to /proc/curve.svg"),
            "{line}"
        );
        assert!(output.stdout.is_empty(), "{line}");
    }
    // `.SVG` and a name with no extension are fine.
    for name in ["curve.SVG", "curve"] {
        let out = dir.path().join(name);
        let output = memocache(&[
            "replay",
            path(&trace),
            "--capacity",
            "2",
            "--curve",
            path(&out),
        ]);
        assert!(output.status.success(), "{name}");
        assert!(
            std::fs::read_to_string(&out)
                .expect("written")
                .starts_with("<svg")
        );
    }
}

/// The trace given again as `--curve` (a name with no extension, or `*.svg` with
/// `--format`, reached by another spelling of its path) was replaced by the SVG once the
/// replay ended: the input trace, perhaps hours of recording, was lost. It is refused
/// before the replay, and the trace is left as it was.
#[test]
fn the_trace_given_again_as_the_curve_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = file_in(dir.path(), "requests", "1\n2\n1\n3\n");
    let again = dir.path().join(".").join("requests");
    let output = memocache(&[
        "replay",
        path(&trace),
        "--format",
        "lirs",
        "--capacity",
        "2",
        "--curve",
        path(&again),
    ]);
    let line = one_error_line(&output);
    assert!(line.contains("it is the trace"), "{line}");
    assert!(output.stdout.is_empty(), "{line}");
    assert_eq!(
        std::fs::read_to_string(&trace).expect("still there"),
        "1\n2\n1\n3\n"
    );
}

/// `demo --dir` writes and edits files with fixed names: a directory that already holds
/// anything is refused, and what it holds is left alone.
#[test]
fn demo_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mine = file_in(dir.path(), "interview.wav", b"my own recording");
    let line = one_error_line(&memocache(&["demo", "--dir", path(dir.path())]));
    assert!(line.contains("not empty"), "{line}");
    assert_eq!(
        std::fs::read(&mine).expect("still there"),
        b"my own recording"
    );
    // Not even the lock file is left in the user's directory.
    assert!(!dir.path().join("cache.lock").exists());
    // And `--help` says so before the user finds out (it did not, until session 15).
    let help = String::from_utf8_lossy(&memocache(&["demo", "--help"]).stdout).into_owned();
    assert!(help.contains("must be new or empty"), "{help}");
}

/// `key`: a bad prefix is reported as a bad prefix, not as a failure to hash the file, and a
/// directory is named as one.
#[test]
fn key_names_a_bad_prefix_and_a_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = file_in(dir.path(), "a.raw", b"abc");
    let line = one_error_line(&memocache(&["key", path(&file), "--prefix", "a:b"]));
    assert!(line.contains("invalid key prefix"), "{line}");
    assert!(!line.contains("cannot hash"), "{line}");
    let line = one_error_line(&memocache(&["key", path(dir.path())]));
    assert!(line.contains("is a directory"), "{line}");
}

/// Output piped into a reader that stops early (`memocache replay … | head`): no panic, no
/// backtrace, nothing on stderr, a failure status. The pipe's read end is closed before the
/// command starts, so its first line already meets a broken pipe.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = file_in(dir.path(), "t.trace", "1\n2\n1\n3\n");
    let audio = file_in(dir.path(), "a.raw", vec![2u8; 3000]);
    let cache_dir = dir.path().join("cache");
    for args in [
        vec!["replay", path(&trace), "--capacity", "2"],
        vec!["key", path(&audio)],
        transcribe_args(path(&audio), &cache_dir),
        // Quiet too since `--help` and `--version` report a failed write.
        vec!["--help"],
        vec!["--version"],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = memocache_with(&args, |command| command.stdout(writer));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("note:")).collect();
        assert!(lines.is_empty(), "{args:?}: {stderr}");
    }
}
