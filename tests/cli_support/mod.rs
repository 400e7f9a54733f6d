//! Running the built `memocache` binary as a user runs it, for the command's test files.

#![allow(dead_code)] // each test crate uses part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `memocache` with `args` and collects its status, stdout and stderr.
pub fn memocache(args: &[&str]) -> Output {
    memocache_with(args, |command| command)
}

/// [`memocache`], with `configure` applied to the command first (to send its standard output
/// or error somewhere else, say).
pub fn memocache_with(
    args: &[&str],
    configure: impl FnOnce(&mut Command) -> &mut Command,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memocache"));
    command.args(args).env("RUST_BACKTRACE", "1");
    configure(&mut command)
        .output()
        .expect("run the memocache binary")
}

/// Asserts that the command failed as every error a user can cause must: status 1, exactly
/// one `memocache: error:` line on stderr (the stand-in engine's `note:` lines aside) and no
/// panic. Returns that line.
pub fn one_error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("note:")).collect();
    assert_eq!(lines.len(), 1, "{stderr:?}");
    assert!(lines[0].starts_with("memocache: error: "), "{stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
    lines[0].to_owned()
}

/// Asserts that the command succeeded (its stderr is the failure's message) and returns its
/// stdout.
pub fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The arguments `transcribe FILE --language en --cache-dir CACHE_DIR`.
pub fn transcribe_args<'a>(file: &'a str, cache_dir: &'a Path) -> Vec<&'a str> {
    vec![
        "transcribe",
        file,
        "--language",
        "en",
        "--cache-dir",
        path(cache_dir),
    ]
}

/// `memocache transcribe FILES --language en --cache-dir CACHE_DIR EXTRA…`.
pub fn transcribe(files: &[&Path], cache_dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["transcribe"];
    args.extend(files.iter().map(|f| path(f)));
    args.extend(["--language", "en", "--cache-dir", path(cache_dir)]);
    args.extend(extra);
    memocache(&args)
}

/// The file `name` in `dir`, written with `contents`: a trace or audio for a command to read.
pub fn file_in(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, contents).expect("writable");
    file
}

/// `/dev/full` opened for writing: a standard stream on a full disk.
pub fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full")
}

/// A test path as a command-line argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
