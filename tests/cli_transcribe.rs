//! `memocache transcribe` and `memocache demo` as a user runs them.

mod cli_support;

use cli_support::{memocache, one_error_line};

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
