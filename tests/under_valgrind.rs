//! The command-line tool runs under valgrind, which users reach for to profile or debug a host
//! process that embeds the cache.
//!
//! The cache's default clock reads the kernel's coarse clock through the vDSO. rustix, which
//! does that read, used to find the vDSO from the auxiliary vector it read itself; under
//! valgrind that pointed at a vDSO that is not mapped, and the first clock read crashed the
//! process with SIGSEGV (rustix issue #1559). The crate now has rustix ask libc
//! (`use-libc-auxv` in Cargo.toml). Where valgrind is not installed this test says so and
//! passes, except in CI (`CI` set), whose `.ci/run` installs it.

#![cfg(all(feature = "cli", target_os = "linux"))]

use std::process::Command;

#[test]
fn a_replay_runs_under_valgrind() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "valgrind is missing in CI; .ci/run installs it"
        );
        eprintln!("skipped: valgrind is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("tiny.lirs");
    std::fs::write(&trace, "1\n2\n3\n1\n2\n4\n1\n").expect("writable");
    let output = Command::new("valgrind")
        .args(["--tool=none", "--quiet"])
        .arg(env!("CARGO_BIN_EXE_memocache"))
        .args(["replay", "--capacity", "2", "--format", "lirs"])
        .arg(&trace)
        .output()
        .expect("valgrind runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stderr}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("memocache"), "{stdout}");
}
