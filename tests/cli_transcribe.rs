//! `memocache transcribe` and `memocache demo` as a user runs them.

mod cli_support;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{memocache, one_error_line, path};

#[test]
fn demo_shows_the_second_pass_served_from_the_cache() {
    let output = memocache(&["demo"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("STAND-IN"), "{stdout}");
    let second = stdout
        .split("== pass 2")
        .nth(1)
        .and_then(|rest| rest.split("== pass 3").next())
        .expect("a second pass");
    assert_eq!(second.matches("from cache").count(), 3, "{second}");
    assert!(stdout.contains("1 of 7 chunks transcribed"), "{stdout}");
    assert!(stdout.contains("alert FIRING"), "{stdout}");
    assert!(stdout.contains("memocache_cache_hits_total"), "{stdout}");
    // The snapshot it reports saving is in a temporary directory: the user is told it is
    // gone and how to keep it.
    assert!(stdout.contains("`--dir DIR` keeps"), "{stdout}");
    assert!(
        stdout.contains("temporary directory is removed"),
        "{stdout}"
    );
}

#[test]
fn transcribe_persists_the_cache_between_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = dir.path().join("a.raw");
    std::fs::write(&audio, vec![3u8; 30_000]).expect("writable");
    let cache_dir = dir.path().join("cache");
    let args = [
        "transcribe",
        audio.to_str().expect("utf-8 path"),
        "--language",
        "en",
        "--cache-dir",
        cache_dir.to_str().expect("utf-8 path"),
    ];
    let first = memocache(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("computed"));
    let second = memocache(&args);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success());
    assert!(stdout.contains("from cache"), "{stdout}");
    assert!(stdout.contains("hits 1  misses 0"), "{stdout}");
}

#[test]
fn user_errors_are_one_line_and_a_failure_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache_dir = dir.path().join("cache");
    let cache_dir = cache_dir.to_str().expect("utf-8 path");
    let missing = memocache(&[
        "transcribe",
        "/no/such.wav",
        "--language",
        "en",
        "--cache-dir",
        cache_dir,
    ]);
    assert!(one_error_line(&missing).contains("/no/such.wav"));

    let audio = dir.path().join("a.raw");
    std::fs::write(&audio, b"abc").expect("writable");
    let audio = audio.to_str().expect("utf-8 path");
    let failing = memocache(&[
        "transcribe",
        audio,
        "--language",
        "en",
        "--cache-dir",
        cache_dir,
        "--engine-cmd",
        "sh -c 'echo engine broke >&2; exit 3' {chunk}",
    ]);
    assert!(one_error_line(&failing).contains("engine broke"));

    let no_placeholder = memocache(&[
        "transcribe",
        audio,
        "--language",
        "en",
        "--cache-dir",
        cache_dir,
        "--engine-cmd",
        "cat",
    ]);
    assert!(one_error_line(&no_placeholder).contains("{chunk}"));

    let bad_language = memocache(&[
        "transcribe",
        audio,
        "--language",
        "e n",
        "--cache-dir",
        cache_dir,
    ]);
    one_error_line(&bad_language);

    let missing_key_file = memocache(&["key", "/no/such/file"]);
    one_error_line(&missing_key_file);
}

/// `memocache transcribe FILES --language en --cache-dir CACHE_DIR EXTRA…`.
fn transcribe(files: &[&Path], cache_dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["transcribe"];
    args.extend(files.iter().map(|f| path(f)));
    args.extend(["--language", "en", "--cache-dir", path(cache_dir)]);
    args.extend(extra);
    memocache(&args)
}

/// The cache directory's lock file, opened as a run opens it (created if missing).
fn open_lock_file(cache_dir: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(cache_dir.join("cache.lock"))
        .expect("open the lock file")
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Two runs over one cache directory would each save what they loaded plus their own work,
/// and the last to finish would drop the other's: a run holds the directory's lock, and a run
/// that finds it held is refused at once and changes nothing. Once the lock is released, a
/// run works and keeps what was there.
#[test]
fn a_run_on_a_cache_directory_in_use_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    std::fs::write(&a, vec![3u8; 30_000]).expect("writable");
    std::fs::write(&b, vec![4u8; 30_000]).expect("writable");
    let cache_dir = dir.path().join("cache");
    assert!(transcribe(&[&a], &cache_dir, &[]).status.success());
    let snapshot = cache_dir.join("cache.snapshot");
    let before = std::fs::read(&snapshot).expect("saved");
    let names_before = names(&cache_dir);

    // The test holds the lock, as a first run in progress would.
    let held = open_lock_file(&cache_dir);
    held.try_lock().expect("no run holds the lock");
    let refused = transcribe(&[&b], &cache_dir, &[]);
    let line = one_error_line(&refused);
    assert!(line.contains(path(&cache_dir)), "{line}");
    assert!(line.contains("another `memocache transcribe`"), "{line}");
    assert!(refused.stdout.is_empty(), "{line}");
    assert_eq!(std::fs::read(&snapshot).expect("still there"), before);
    let mut names_with_lock = names_before.clone();
    if !names_with_lock.iter().any(|n| n == "cache.lock") {
        names_with_lock.push("cache.lock".into());
        names_with_lock.sort();
    }
    assert_eq!(names(&cache_dir), names_with_lock);

    held.unlock().expect("unlock");
    let after = transcribe(&[&b], &cache_dir, &[]);
    let stdout = String::from_utf8_lossy(&after.stdout);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    // The refused run stored nothing: `b` is transcribed now.
    assert!(stdout.contains("b.raw: computed"), "{stdout}");
    // And this run kept the first run's transcript along with its own.
    let both = transcribe(&[&a, &b], &cache_dir, &[]);
    let stdout = String::from_utf8_lossy(&both.stdout);
    assert!(both.status.success());
    assert!(stdout.contains("hits 2  misses 0"), "{stdout}");
    // The lock file is left in place, and does not block the next run (its lock does).
    assert!(cache_dir.join("cache.lock").exists());
}

/// A run killed in the middle leaves the lock file behind, but its lock dies with it: while
/// it runs, a second run is refused; once it is killed, the next run works.
#[cfg(unix)]
#[test]
fn a_killed_run_does_not_block_the_next_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = dir.path().join("a.raw");
    std::fs::write(&audio, vec![5u8; 30_000]).expect("writable");
    let cache_dir = dir.path().join("cache");
    // The engine says it has started (so the run holds the lock) by writing its pid, then
    // hangs until it is killed.
    let engine_pid = dir.path().join("engine.pid");
    let engine = format!(
        ": {{chunk}}; echo $$ > {}.tmp && mv {0}.tmp {0}; exec sleep 600",
        path(&engine_pid)
    );
    let first = Command::new(env!("CARGO_BIN_EXE_memocache"))
        .args(["transcribe", path(&audio), "--language", "en"])
        .args(["--cache-dir", path(&cache_dir), "--engine-cmd", &engine])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the memocache binary");
    let mut first = KillOnDrop {
        run: first,
        engine_pid,
    };
    // Waiting on another process, not measuring time: the deadline only turns a hang into a
    // failure.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !first.engine_pid.exists() {
        if let Some(status) = first.run.try_wait().expect("wait") {
            panic!("the first run ended ({status}) before its engine started");
        }
        assert!(Instant::now() < deadline, "the engine never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    let line = one_error_line(&transcribe(&[&audio], &cache_dir, &[]));
    assert!(line.contains("another `memocache transcribe`"), "{line}");
    assert!(matches!(
        open_lock_file(&cache_dir).try_lock(),
        Err(TryLockError::WouldBlock)
    ));

    // Killed (SIGKILL) in the middle of its work, with the lock held.
    drop(first);
    assert!(cache_dir.join("cache.lock").exists(), "left in place");
    let next = transcribe(&[&audio], &cache_dir, &[]);
    let stdout = String::from_utf8_lossy(&next.stdout);
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    // The killed run saved nothing.
    assert!(stdout.contains("a.raw: computed"), "{stdout}");
}

/// A run started by a test and the engine it started, both killed when the test is done with
/// them, or fails: the engine outlives the run it was started by.
#[cfg(unix)]
struct KillOnDrop {
    run: std::process::Child,
    /// Where the engine wrote its pid.
    engine_pid: std::path::PathBuf,
}

#[cfg(unix)]
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SIGKILL: the run gets no chance to release anything itself.
        let _ = self.run.kill();
        let _ = self.run.wait();
        if let Ok(pid) = std::fs::read_to_string(&self.engine_pid) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
}
