//! Thread spawns that fail, for tests of what a failed start leaves behind (Linux only).
//!
//! The OS refuses a thread when it cannot map the thread's stack: [`with_room_for_threads`]
//! caps the process's address space (`RLIMIT_AS`) just above what it maps, leaving room for
//! a given number of 2 MiB stacks (std's default) and a little heap. The cap is the whole
//! process's, so the test runs in a child process of its own ([`in_child`]), where no other
//! test's threads allocate meanwhile. [`in_child`] also serves a test whose failure would
//! abort the whole process (a stack overflow), so that it fails as a test instead.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Set in the child process's environment.
const CHILD: &str = "MEMOCACHE_SPAWN_SUPPORT_CHILD";

/// A thread's stack with its guard page and glibc's thread descriptor, rounded up.
const STACK: u64 = (2 << 20) + (64 << 10);

/// Room for the heap to grow and for a started thread's signal stack: less than a stack.
const HEAP: u64 = 1 << 20;

/// Whether this process is a child that runs the test. In the parent it runs the test `name`
/// (its path within the test crate) again in `runs` child processes, one after the other (a
/// test of a race runs more than once), asserts that it passed in each, and returns false: the
/// caller then returns.
pub fn in_child(name: &str, runs: usize) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    for _ in 0..runs {
        let child = std::process::Command::new(&exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            // Stacks of the default size, which the room is counted in.
            .env_remove("RUST_MIN_STACK")
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && stdout.contains("1 passed"),
            "{}\n{stdout}\n{}",
            child.status,
            String::from_utf8_lossy(&child.stderr)
        );
    }
    false
}

/// Runs `f` with room in the address space for `threads` more thread stacks and no more, then
/// lifts the cap again. Call it only in the child ([`in_child`]).
#[allow(dead_code)] // Not every includer caps the address space.
pub fn with_room_for_threads<T>(threads: u64, f: impl FnOnce() -> T) -> T {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "only in the child process"
    );
    let before = getrlimit(Resource::As);
    let cap = mapped_bytes() + threads * STACK + HEAP;
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(cap),
            maximum: before.maximum,
        },
    )
    .expect("caps the address space");
    let result = f();
    setrlimit(Resource::As, before).expect("lifts the cap");
    result
}

/// The process's address space now (`VmSize`), in bytes.
fn mapped_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("readable");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|size| size.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .expect("a VmSize line");
    kib << 10
}
