//! Running the built `memocache` binary as a user runs it, for the command's test files.

#![allow(dead_code)] // each test crate uses part of this module

use std::path::Path;
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

/// A test path as a command-line argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
