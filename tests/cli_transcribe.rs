//! `memocache transcribe` and `memocache demo` as a user runs them.

mod cli_support;

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{
    file_in, memocache, one_error_line, path, succeeded, transcribe, transcribe_args,
};

#[test]
fn demo_shows_the_second_pass_served_from_the_cache() {
    let output = memocache(&["demo"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    succeeded(&output);
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
    let audio = file_in(dir.path(), "a.raw", vec![3u8; 30_000]);
    let cache_dir = dir.path().join("cache");
    let args = transcribe_args(path(&audio), &cache_dir);
    let first = memocache(&args);
    succeeded(&first);
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
    let missing = transcribe(&[Path::new("/no/such.wav")], &cache_dir, &[]);
    assert!(one_error_line(&missing).contains("/no/such.wav"));

    let audio = file_in(dir.path(), "a.raw", b"abc");
    let failing = transcribe(
        &[&audio],
        &cache_dir,
        &[
            "--engine-cmd",
            "sh -c 'echo engine broke >&2; exit 3' {chunk}",
        ],
    );
    assert!(one_error_line(&failing).contains("engine broke"));

    let no_placeholder = transcribe(&[&audio], &cache_dir, &["--engine-cmd", "cat"]);
    assert!(one_error_line(&no_placeholder).contains("{chunk}"));

    let mut args = transcribe_args(path(&audio), &cache_dir);
    args[3] = "e n"; // The language, mistyped.
    let bad_language = memocache(&args);
    one_error_line(&bad_language);

    let bad_interval = transcribe(&[&audio], &cache_dir, &["--checkpoint-secs", "-1"]);
    assert!(one_error_line(&bad_interval).contains("--checkpoint-secs"));

    let missing_key_file = memocache(&["key", "/no/such/file"]);
    one_error_line(&missing_key_file);
}

/// [`transcribe`], which must succeed: its standard output.
fn transcribe_ok(files: &[&Path], cache_dir: &Path, extra: &[&str]) -> String {
    succeeded(&transcribe(files, cache_dir, extra))
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
    let stdout = transcribe_ok(&[&b], &cache_dir, &[]);
    // The refused run stored nothing: `b` is transcribed now.
    assert!(stdout.contains("b.raw: computed"), "{stdout}");
    // And this run kept the first run's transcript along with its own.
    let stdout = transcribe_ok(&[&a, &b], &cache_dir, &[]);
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
    let audio = file_in(dir.path(), "a.raw", vec![5u8; 30_000]);
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
        // A killed run cannot remove its chunk directory: it goes in the test's own.
        .env("TMPDIR", dir.path())
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
    let stdout = transcribe_ok(&[&audio], &cache_dir, &[]);
    // The killed run had finished nothing, so it saved nothing.
    assert!(stdout.contains("a.raw: computed"), "{stdout}");
}

/// The transcript key of a file in English, as the pipeline stores it.
fn transcript_key(file: &Path) -> memocache::CacheKey {
    let hash = memocache::CacheKey::from_reader(File::open(file).expect("readable"), "file")
        .expect("hashed")
        .digest_hex();
    memocache::CacheKey::transcript(&hash, "en").expect("valid")
}

/// Waits (for another process, not to measure time) until `done` holds; the deadline only
/// turns a hang into a failure, and the run ending first is one too.
#[cfg(unix)]
fn wait_for(run: &mut std::process::Child, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if let Some(status) = run.try_wait().expect("wait") {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An engine that prints a checksum of its chunk, except for the chunk that equals `hang_on`
/// while the file `hang_flag` exists: then it writes its pid to `pid` and hangs until killed.
/// Its command line is the same either way, so its transcripts count on the next run.
#[cfg(unix)]
fn engine_hanging_on(hang_on: &Path, hang_flag: &Path, pid: &Path) -> String {
    format!(
        "if [ -e {flag} ] && cmp -s {{chunk}} {hang}; then echo {{chunk}} > {pid}.chunk && \
         echo $$ > {pid}.tmp && mv {pid}.tmp {pid}; exec sleep 600; fi; cksum < {{chunk}}",
        flag = path(hang_flag),
        hang = path(hang_on),
        pid = path(pid)
    )
}

/// Three files of a run, and an engine that hangs on the third while `hang_flag` exists.
#[cfg(unix)]
struct HangingOnThird {
    /// a.raw, b.raw and c.raw, 30,000 bytes each.
    files: Vec<std::path::PathBuf>,
    /// The run's `--cache-dir`, not yet created, and the snapshot in it.
    cache_dir: std::path::PathBuf,
    snapshot: std::path::PathBuf,
    /// Created: remove it for the engine to stop hanging.
    hang_flag: std::path::PathBuf,
    /// Where the engine writes its pid once it hangs.
    engine_pid: std::path::PathBuf,
    /// The `--engine-cmd`.
    engine: String,
}

#[cfg(unix)]
impl HangingOnThird {
    fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.as_path()).collect()
    }

    /// The chunk file the engine hangs on, as the engine recorded it once it hung.
    fn hanging_chunk(&self) -> std::path::PathBuf {
        let record = format!("{}.chunk", self.engine_pid.display());
        let said = std::fs::read_to_string(&record).expect("the hanging engine says its chunk");
        std::path::PathBuf::from(said.trim_end())
    }

    /// Starts a run of the three files with `options` (which give the engine), its stderr
    /// going to `stderr`, and waits until the engine hangs on c.raw: a.raw and b.raw are then
    /// done and stored.
    fn start_until_hanging(&self, options: &[&str], stderr: Stdio) -> KillOnDrop {
        let mut run = KillOnDrop {
            run: spawn_transcribe_to(&self.files(), &self.cache_dir, options, stderr),
            engine_pid: self.engine_pid.clone(),
        };
        wait_for(&mut run.run, "the engine started on c.raw", || {
            self.engine_pid.exists()
        });
        run
    }

    /// Lets the engine stop hanging and runs again with `options`: a.raw and b.raw come
    /// from the cache, c.raw is computed.
    fn next_run_computes_only_the_third(&self, options: &[&str]) {
        std::fs::remove_file(&self.hang_flag).expect("removable");
        let stdout = transcribe_ok(&self.files(), &self.cache_dir, options);
        assert!(stdout.contains("a.raw: from cache"), "{stdout}");
        assert!(stdout.contains("b.raw: from cache"), "{stdout}");
        assert!(stdout.contains("c.raw: computed"), "{stdout}");
        assert!(stdout.contains("hits 2  misses 1"), "{stdout}");
    }
}

/// [`HangingOnThird`], in `dir`.
#[cfg(unix)]
fn hanging_on_third(dir: &Path) -> HangingOnThird {
    let files: Vec<_> = ["a.raw", "b.raw", "c.raw"]
        .iter()
        .zip(1u8..)
        .map(|(name, byte)| file_in(dir, name, vec![byte; 30_000]))
        .collect();
    let hang_flag = file_in(dir, "hang", b"");
    let engine_pid = dir.join("engine.pid");
    let engine = engine_hanging_on(&files[2], &hang_flag, &engine_pid);
    let cache_dir = dir.join("cache");
    HangingOnThird {
        files,
        snapshot: cache_dir.join("cache.snapshot"),
        cache_dir,
        hang_flag,
        engine_pid,
        engine,
    }
}

/// `memocache transcribe FILES --language en --cache-dir CACHE_DIR EXTRA…`, started.
#[cfg(unix)]
fn spawn_transcribe(files: &[&Path], cache_dir: &Path, extra: &[&str]) -> std::process::Child {
    spawn_transcribe_to(files, cache_dir, extra, Stdio::null())
}

/// [`spawn_transcribe`], its stderr going to `stderr`. The run's temporary directory is
/// `cache_dir`'s parent (the test's own directory): a run the test kills cannot remove its
/// chunk directory, which would otherwise be left in the system's.
#[cfg(unix)]
fn spawn_transcribe_to(
    files: &[&Path],
    cache_dir: &Path,
    extra: &[&str],
    stderr: Stdio,
) -> std::process::Child {
    let test_dir = cache_dir
        .parent()
        .expect("the cache directory is in the test's");
    Command::new(env!("CARGO_BIN_EXE_memocache"))
        .arg("transcribe")
        .args(files.iter().map(|f| path(f)))
        .args(["--language", "en", "--cache-dir", path(cache_dir)])
        .args(extra)
        .env("TMPDIR", test_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("run the memocache binary")
}

/// A run killed in the middle of its third file has saved checkpoints of the two it
/// finished: the snapshot it leaves is whole and holds their transcripts, and the next run
/// serves them from the cache and computes only the third.
#[cfg(unix)]
#[test]
fn a_killed_run_keeps_the_files_it_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    let setup = hanging_on_third(dir.path());
    let (files, snapshot) = (setup.files(), &setup.snapshot);
    let checkpoint = ["--checkpoint-secs", "0.005", "--engine-cmd", &setup.engine];
    let mut run = setup.start_until_hanging(&checkpoint, Stdio::null());
    let finished = [transcript_key(files[0]), transcript_key(files[1])];
    let holds_finished = || {
        // A checkpoint replaces the file by a rename: what is read is one whole snapshot.
        std::fs::File::open(snapshot).is_ok_and(|file| {
            let saved = memocache::snapshot::read_snapshot(file).expect("a whole snapshot");
            finished
                .iter()
                .all(|key| saved.entries.iter().any(|e| &e.key == key))
        })
    };
    wait_for(
        &mut run.run,
        "a checkpoint held a.raw and b.raw",
        holds_finished,
    );
    // Killed (SIGKILL) in the middle of c.raw.
    drop(run);
    memocache::snapshot::read_snapshot_file(snapshot).expect("whole after the kill");
    // The run's chunk files went in the temporary directory it was given (the test's),
    // so the kill leaves nothing in the system's.
    let chunk = setup.hanging_chunk();
    assert!(chunk.starts_with(dir.path()), "{chunk:?}");

    setup.next_run_computes_only_the_third(&checkpoint);
}

/// Ctrl-C (SIGINT) in the middle of a run's third file saves the two it finished, though no
/// checkpoint was taken, and ends the run with status 130, leaving no chunk file behind
/// though the engine still runs on one; the next run serves them from the cache and computes
/// only the third.
#[cfg(unix)]
#[test]
fn ctrl_c_saves_the_files_a_run_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    let setup = hanging_on_third(dir.path());
    let (files, snapshot) = (setup.files(), &setup.snapshot);
    let options = ["--checkpoint-secs", "0", "--engine-cmd", &setup.engine];
    let run = setup.start_until_hanging(&options, Stdio::piped());
    assert!(!snapshot.exists(), "no checkpoints: only Ctrl-C saves");
    let chunk = setup.hanging_chunk();
    assert!(chunk.exists(), "{chunk:?}");
    interrupt(&run.run);
    let said = exits_interrupted(run, 130);
    assert!(!chunk.exists(), "left behind: {chunk:?}");
    let chunk_dir = chunk.parent().expect("in a directory");
    assert!(!chunk_dir.exists(), "left behind: {chunk_dir:?}");
    assert!(
        said.contains("interrupted: saving what is finished"),
        "{said}"
    );
    assert!(said.contains("saved "), "{said}");

    let saved = memocache::snapshot::read_snapshot_file(snapshot).expect("whole");
    for file in &files[..2] {
        let key = transcript_key(file);
        assert!(saved.entries.iter().any(|e| e.key == key), "{file:?}");
    }
    setup.next_run_computes_only_the_third(&options);
}

/// A run killed while a checkpoint is being written leaves the previous snapshot as it was,
/// byte for byte, and the temporary file of the interrupted save is removed by the next
/// run's save. The snapshot is made large so that the test sees the save in progress.
#[cfg(unix)]
#[test]
fn a_kill_during_a_checkpoint_leaves_the_previous_snapshot_whole() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let cache_dir = dir.path().join("cache");
    let snapshot = cache_dir.join("cache.snapshot");
    let (before, inode) = large_snapshot(&snapshot);

    let (a, b) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    std::fs::write(&a, vec![1u8; 30_000]).expect("writable");
    std::fs::write(&b, vec![2u8; 30_000]).expect("writable");
    let hang_flag = file_in(dir.path(), "hang", b"");
    let engine_pid = dir.path().join("engine.pid");
    let engine = engine_hanging_on(&b, &hang_flag, &engine_pid);
    let checkpoint = ["--checkpoint-secs", "0.001", "--engine-cmd", &engine];
    let temp_files = || temp_files(&cache_dir);

    let mut run = KillOnDrop {
        run: spawn_transcribe(&[&a, &b], &cache_dir, &checkpoint),
        engine_pid: engine_pid.clone(),
    };
    // a.raw is stored (the engine hangs on b.raw), so a checkpoint starts: kill the run
    // while its temporary file is being written.
    wait_for(&mut run.run, "a checkpoint started after a.raw", || {
        let replaced = std::fs::metadata(&snapshot).expect("there").ino() != inode;
        assert!(!replaced, "the checkpoint ended before the test saw it");
        engine_pid.exists() && !temp_files().is_empty()
    });
    drop(run);

    assert_eq!(
        std::fs::metadata(&snapshot).expect("there").ino(),
        inode,
        "the kill came after the checkpoint's rename"
    );
    assert_eq!(temp_files().len(), 1, "the interrupted save's file is left");
    assert!(
        std::fs::read(&snapshot).expect("there") == before,
        "changed"
    );

    std::fs::remove_file(&hang_flag).expect("removable");
    let stdout = transcribe_ok(&[&a, &b], &cache_dir, &checkpoint);
    // The killed checkpoint saved nothing; the previous entries are all there.
    assert!(stdout.contains("a.raw: computed"), "{stdout}");
    let saved = memocache::snapshot::read_snapshot_file(&snapshot).expect("whole");
    assert!(saved.entries.len() > 2_000, "{}", saved.entries.len());
    assert!(temp_files().is_empty(), "{:?}", temp_files());
}

/// A second Ctrl-C while the first one's save is being written quits at once: the run ends
/// with status 130 and the snapshot on disk is the previous one, byte for byte.
#[cfg(unix)]
#[test]
fn a_second_ctrl_c_quits_without_saving() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let setup = hanging_on_third(dir.path());
    let (snapshot, cache_dir) = (&setup.snapshot, &setup.cache_dir);
    let (before, inode) = large_snapshot(snapshot);
    let options = ["--checkpoint-secs", "0", "--engine-cmd", &setup.engine];
    let mut run = setup.start_until_hanging(&options, Stdio::piped());
    interrupt(&run.run);
    wait_for(&mut run.run, "the Ctrl-C save started", || {
        let replaced = std::fs::metadata(snapshot).expect("there").ino() != inode;
        assert!(!replaced, "the save ended before the test saw it");
        !temp_files(cache_dir).is_empty()
    });
    let chunk = setup.hanging_chunk();
    interrupt(&run.run);
    let said = exits_interrupted(run, 130);
    assert!(!chunk.exists(), "left behind: {chunk:?}");
    assert!(
        said.contains("interrupted again: quitting without saving"),
        "{said}"
    );
    assert!(!said.contains("saved "), "{said}");
    assert!(std::fs::read(snapshot).expect("there") == before, "changed");
}

/// Sends `run` a SIGINT, as Ctrl-C does.
#[cfg(unix)]
fn interrupt(run: &std::process::Child) {
    send(run, "-INT");
}

/// Waits for an interrupted run to end, checks that it ended with `expected` (130 after
/// Ctrl-C), kills its engine, and returns what the run printed on stderr (piped).
#[cfg(unix)]
fn exits_interrupted(mut run: KillOnDrop, expected: i32) -> String {
    // Waiting for the run, not timing it: the deadline turns a hang into a failure.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.run.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the run ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(status.code(), Some(expected), "{status}");
    let mut stderr = run.run.stderr.take().expect("piped");
    // Kills the engine, which may still hang; the pipe then has no writer left.
    drop(run);
    let mut said = String::new();
    stderr.read_to_string(&mut said).expect("utf-8");
    said
}

/// Writes a snapshot of 2,000 entries of 32 KiB (64 MiB) at `snapshot` (creating its
/// directory), large enough that a save of it takes a while even when saves get faster (with
/// 4 KiB entries, 8 MiB, a checkpoint once ended between two looks of a test on a loaded
/// machine); returns its bytes and its inode.
#[cfg(unix)]
fn large_snapshot(snapshot: &Path) -> (Vec<u8>, u64) {
    use std::os::unix::fs::MetadataExt;

    std::fs::create_dir_all(snapshot.parent().expect("in a directory")).expect("create");
    let previous = memocache::Cache::builder()
        .max_bytes(256 << 20)
        .build()
        .expect("cache");
    for i in 0u32..2_000 {
        let mut value = vec![(i % 251) as u8; 32 << 10];
        value[..4].copy_from_slice(&i.to_le_bytes());
        let key = memocache::CacheKey::from_content(&i.to_le_bytes(), "content").expect("key");
        previous.insert(key, value).expect("insert");
    }
    previous.save_snapshot(snapshot).expect("saved");
    let bytes = std::fs::read(snapshot).expect("saved");
    (bytes, std::fs::metadata(snapshot).expect("saved").ino())
}

/// The temporary files of saves of `cache_dir`'s snapshot.
#[cfg(unix)]
fn temp_files(cache_dir: &Path) -> Vec<String> {
    names(cache_dir)
        .into_iter()
        .filter(|n| n.starts_with(".cache.snapshot.") && n.ends_with(".tmp"))
        .collect()
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

/// `demo --dir` holds the same lock as `transcribe`: a demo on a directory a run holds is
/// refused with the lock's error (also when the directory is a cache directory that is not
/// empty) and creates nothing there; while a demo runs, a `transcribe` or a second demo on
/// its directory is refused with that same error.
#[cfg(unix)]
#[test]
fn demo_and_transcribe_exclude_each_other_on_one_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let in_use = |output: &std::process::Output, flag: &str| {
        let line = one_error_line(output);
        assert!(
            line.contains("is in use by another `memocache transcribe` or `memocache demo`"),
            "{line}"
        );
        assert!(line.ends_with(&format!("give another {flag}")), "{line}");
    };

    // A run holds an empty directory (it has only created the lock file so far).
    let held_dir = dir.path().join("held");
    std::fs::create_dir(&held_dir).expect("create");
    let held = open_lock_file(&held_dir);
    held.try_lock().expect("free");
    in_use(&memocache(&["demo", "--dir", path(&held_dir)]), "--dir");
    assert_eq!(names(&held_dir), ["cache.lock"]);
    // The same for a cache directory with a snapshot: the lock's error, not "not empty".
    let audio = file_in(dir.path(), "a.raw", vec![3u8; 30_000]);
    held.unlock().expect("unlock");
    assert!(transcribe(&[&audio], &held_dir, &[]).status.success());
    held.try_lock().expect("free");
    in_use(&memocache(&["demo", "--dir", path(&held_dir)]), "--dir");
    drop(held);

    // A demo in progress: it holds the lock from before it writes its first file.
    let demo_dir = dir.path().join("demo");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_memocache"))
        .args(["demo", "--dir", path(&demo_dir)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the memocache binary");
    wait_for(&mut demo, "the demo wrote a file", || {
        demo_dir.join("interview.wav").exists()
    });
    // Stopped (SIGSTOP) so that it still holds the lock however slowly the checks below
    // run: these are refused while it is in progress.
    let demo_pid = demo.id().to_string();
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([name, &demo_pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {name} failed");
    };
    signal("-STOP");
    assert!(demo.try_wait().expect("wait").is_none(), "the demo ended");
    in_use(&transcribe(&[&audio], &demo_dir, &[]), "--cache-dir");
    in_use(&memocache(&["demo", "--dir", path(&demo_dir)]), "--dir");
    signal("-CONT");
    let status = demo.wait().expect("wait");
    assert!(status.success(), "the first demo failed");
    // Once it is done, the directory is free (and no longer empty).
    let line = one_error_line(&memocache(&["demo", "--dir", path(&demo_dir)]));
    assert!(line.contains("not empty"), "{line}");
}

/// A standard output that goes away (`transcribe … | head -1`) or fills up made the run's
/// first result line panic and unwind past the final save: everything computed since the
/// last checkpoint was lost, and the next run transcribed it all again. The run now stops
/// there, saves the files it finished and fails as before (silently for a closed pipe).
#[cfg(target_os = "linux")]
#[test]
fn a_run_whose_stdout_goes_away_saves_what_it_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    std::fs::write(&a, vec![1u8; 3000]).expect("writable");
    std::fs::write(&b, vec![2u8; 3000]).expect("writable");
    for (case, stdout) in [("closed", None), ("full", Some("/dev/full"))] {
        let cache_dir = dir.path().join(case);
        let mut run = Command::new(env!("CARGO_BIN_EXE_memocache"));
        run.arg("transcribe")
            .args([path(&a), path(&b)])
            .args(["--language", "en", "--cache-dir", path(&cache_dir)])
            .args(["--checkpoint-secs", "0"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        match stdout {
            // Closed before the run writes anything: its first line meets a broken pipe.
            None => run.stdout(Stdio::piped()),
            Some(device) => run.stdout(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(device)
                    .expect(device),
            ),
        };
        let mut child = run.spawn().expect("run the memocache binary");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait");
        assert_eq!(output.status.code(), Some(1), "{case}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!said.contains("panicked"), "{case}: {said}");
        let saved = memocache::snapshot::read_snapshot_file(cache_dir.join("cache.snapshot"))
            .unwrap_or_else(|e| panic!("{case}: no snapshot: {e}"));
        let key = transcript_key(&a);
        assert!(saved.entries.iter().any(|e| e.key == key), "{case}");
        // The run stopped at the failed line: b.raw was not transcribed.
        let key = transcript_key(&b);
        assert!(!saved.entries.iter().any(|e| e.key == key), "{case}");
    }
}

/// SIGTERM (`kill`, `timeout`, `systemctl stop`, `docker stop`) and SIGHUP (the terminal
/// closed) ended a run at once: the files it had finished since the last checkpoint were
/// lost, and its chunk files, up to 25 MB each, were left in the temporary directory. They
/// now end it as Ctrl-C does, with the status a shell reports for that signal: the finished
/// files are saved and the chunk directory is removed.
///
/// A test process started with SIGHUP ignored (under `nohup`) passes that on to the run,
/// which then keeps it ignored (see `a_run_under_nohup_ignores_sighup`): only SIGTERM is
/// checked there.
#[cfg(unix)]
#[test]
fn sigterm_and_sighup_save_and_clean_up_as_ctrl_c_does() {
    let mut signals = vec![("-TERM", 143)];
    if !sighup_ignored_here() {
        signals.push(("-HUP", 129));
    }
    for (signal, status) in signals {
        let dir = tempfile::tempdir().expect("temp dir");
        let setup = hanging_on_third(dir.path());
        let options = ["--checkpoint-secs", "0", "--engine-cmd", &setup.engine];
        let run = setup.start_until_hanging(&options, Stdio::piped());
        let chunk = setup.hanging_chunk();
        send(&run.run, signal);
        let said = exits_interrupted(run, status);
        assert!(!chunk.exists(), "{signal}: left behind: {chunk:?}");
        assert!(said.contains("saved "), "{signal}: {said}");
        let saved = memocache::snapshot::read_snapshot_file(&setup.snapshot).expect("whole");
        for file in &setup.files()[..2] {
            let key = transcript_key(file);
            assert!(
                saved.entries.iter().any(|e| e.key == key),
                "{signal}: {file:?}"
            );
        }
    }
}

/// A run started with SIGHUP ignored (`nohup`, so that it outlives its terminal) keeps it
/// ignored: a SIGHUP neither ends nor saves it. (A SIGTERM afterwards still does, once.)
#[cfg(target_os = "linux")]
#[test]
fn a_run_under_nohup_ignores_sighup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let setup = hanging_on_third(dir.path());
    let mut run = Command::new("sh");
    run.arg("-c")
        .arg(r#"trap '' HUP; exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_memocache"))
        .arg("transcribe")
        .args(setup.files().iter().map(|f| path(f)))
        .args(["--language", "en", "--cache-dir", path(&setup.cache_dir)])
        .args(["--checkpoint-secs", "0", "--engine-cmd", &setup.engine])
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut run = KillOnDrop {
        run: run.spawn().expect("run the memocache binary"),
        engine_pid: setup.engine_pid.clone(),
    };
    wait_for(&mut run.run, "the engine started on c.raw", || {
        setup.engine_pid.exists()
    });
    send(&run.run, "-HUP");
    send(&run.run, "-TERM");
    // Caught, the SIGHUP would have ended the run with 129, or made the SIGTERM a second
    // interrupt that quits without saving.
    let said = exits_interrupted(run, 143);
    assert_eq!(said.matches("interrupted: saving").count(), 1, "{said}");
    assert!(!said.contains("interrupted again"), "{said}");
}

/// Whether this process ignores SIGHUP (its bit in `SigIgn` of `/proc/self/status`), as a
/// child of `nohup` does; a run it starts inherits that.
#[cfg(unix)]
fn sighup_ignored_here() -> bool {
    const SIGHUP: u32 = 1;
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (SIGHUP - 1)) != 0)
}

/// Sends `run` the signal `signal` (`-TERM`).
#[cfg(unix)]
fn send(run: &std::process::Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &run.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {signal}");
}

/// A snapshot that cannot be read stops every run in its directory; the error named only the
/// directory ("cannot open the cache in DIR") and left the user to find the file and what to
/// do. It names the file and the way out, and the file is left as it was.
#[test]
fn a_corrupt_snapshot_is_named_with_the_way_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = file_in(dir.path(), "a.raw", vec![3u8; 3000]);
    let cache_dir = dir.path().join("cache");
    transcribe_ok(&[&audio], &cache_dir, &[]);
    let snapshot = cache_dir.join("cache.snapshot");
    let mut bytes = std::fs::read(&snapshot).expect("saved");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&snapshot, &bytes).expect("writable");

    let line = one_error_line(&transcribe(&[&audio], &cache_dir, &[]));
    assert!(line.contains(path(&snapshot)), "{line}");
    assert!(line.contains("truncated"), "{line}");
    assert!(
        line.contains("move the file aside (or delete it)"),
        "{line}"
    );
    assert_eq!(std::fs::read(&snapshot).expect("there"), bytes, "changed");
}

/// A `--cache-mb` smaller than the snapshot leaves entries out of the cache, and the run's
/// save then drops them from the file for good; that happened without a word. The run says
/// how many it keeps and that the others go.
#[cfg(unix)]
#[test]
fn a_budget_smaller_than_the_snapshot_says_what_it_drops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache_dir = dir.path().join("cache");
    large_snapshot(&cache_dir.join("cache.snapshot"));
    let audio = file_in(dir.path(), "a.raw", vec![3u8; 3000]);

    let output = transcribe(&[&audio], &cache_dir, &["--cache-mb", "1"]);
    assert!(output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    let note = said
        .lines()
        .find(|l| l.starts_with("note: --cache-mb 1 holds "))
        .unwrap_or_else(|| panic!("no note: {said}"));
    assert!(note.contains("of the 2000 live entries"), "{note}");
    assert!(
        note.contains("this run's save drops them from the file"),
        "{note}"
    );
    // The same budget as the snapshot's: nothing is left out, nothing said.
    let output = transcribe(&[&audio], &cache_dir, &["--cache-mb", "1"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!said.contains("note: --cache-mb"), "{said}");
}

/// Review of session 23: when one engine run fails, no result the run finished is lost. Of a
/// file that fails, the chunks that other engine runs finished (in flight when the run
/// stopped) are cached and saved; the other file's transcript is printed, cached and saved.
/// The engine logs each chunk it finished, so the check holds whatever the scheduling: the
/// next run asks the engine for exactly the chunks the first did not finish.
#[cfg(unix)]
#[test]
fn a_failing_engine_run_loses_no_finished_result() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = file_in(dir.path(), "good.raw", vec![b'G'; 3000]);
    // Three chunks of 10 MiB: one of A, one of B, one of C.
    let three = dir.path().join("three.raw");
    let mut bytes = Vec::new();
    for byte in [b'A', b'B', b'C'] {
        bytes.extend(std::iter::repeat_n(byte, 10 << 20));
    }
    std::fs::write(&three, bytes).expect("writable");
    let (calls, done, fail) = (
        dir.path().join("calls"),
        dir.path().join("done"),
        dir.path().join("fail"),
    );
    // Fails on the A chunk while `fail` exists; the same command line either way, so the
    // transcripts of the first run count on the second.
    let engine = format!(
        "c=$(head -c1 {{chunk}}); echo $c >> {calls}; if [ $c = A ] && [ -e {fail} ]; then \
         echo refused >&2; exit 3; fi; sleep 0.5; echo $c >> {done}; echo text-$c",
        calls = path(&calls),
        done = path(&done),
        fail = path(&fail),
    );
    let cache_dir = dir.path().join("cache");
    let args = ["--chunk-mb", "10", "--engine-cmd", &engine];
    std::fs::write(&fail, b"").expect("writable");
    let output = transcribe(&[&good, &three], &cache_dir, &args);
    let line = one_error_line(&output);
    assert!(line.contains("1 of 2 files failed"), "{line}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("good.raw: computed"), "{stdout}");
    assert!(stdout.contains("three.raw: FAILED"), "{stdout}");
    let lines = |file: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let finished = lines(&done);
    assert!(finished.contains(&"G".to_owned()), "{finished:?}");
    assert!(!finished.contains(&"A".to_owned()), "{finished:?}");

    std::fs::remove_file(&fail).expect("removable");
    std::fs::remove_file(&calls).expect("removable");
    let stdout = transcribe_ok(&[&good, &three], &cache_dir, &args);
    assert!(stdout.contains("good.raw: from cache"), "{stdout}");
    assert!(stdout.contains("text-A text-B text-C"), "{stdout}");
    let unfinished: Vec<String> = ["A", "B", "C"]
        .into_iter()
        .map(str::to_owned)
        .filter(|c| !finished.contains(c))
        .collect();
    assert_eq!(
        lines(&calls),
        unfinished,
        "finished in the first run: {finished:?}"
    );
}

/// An engine that exits 0 having written nothing (a missing model, output sent to a file) had
/// its empty text cached as the transcript and served on every later run. It fails the file
/// with a line naming the file, the chunk and the command; nothing is cached, so the next
/// run asks the engine again. `--allow-empty-text` takes it as the text (silence), cached.
#[test]
fn an_engine_that_writes_nothing_fails_and_is_asked_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = dir.path().join("quiet.raw");
    std::fs::write(&audio, vec![0u8; 4096]).expect("write the audio");
    let cache_dir = dir.path().join("cache");
    let calls = dir.path().join("calls");
    let engine = format!(
        "echo call >> '{}'; printf ' \\n\\t' ; : {{chunk}}",
        path(&calls)
    );
    let calls_so_far = || std::fs::read_to_string(&calls).map_or(0, |s| s.lines().count());

    let output = transcribe(&[&audio], &cache_dir, &["--engine-cmd", &engine]);
    let line = one_error_line(&output);
    assert!(line.contains("quiet.raw"), "{line}");
    assert!(line.contains("chunk 0"), "{line}");
    assert!(line.contains("wrote no text"), "{line}");
    assert!(line.contains(&engine), "{line}");
    assert!(line.contains("--allow-empty-text"), "{line}");
    let first = calls_so_far();
    assert!(first >= 1, "the engine never ran");

    let output = transcribe(&[&audio], &cache_dir, &["--engine-cmd", &engine]);
    one_error_line(&output);
    assert!(
        calls_so_far() > first,
        "the second run did not ask the engine again"
    );

    let allow = ["--engine-cmd", &engine, "--allow-empty-text"];
    let out = transcribe_ok(&[&audio], &cache_dir, &allow);
    assert!(out.contains("quiet.raw: computed"), "{out}");
    assert!(out.contains("    (no text)"), "{out}");
    let asked = calls_so_far();
    let out = transcribe_ok(&[&audio], &cache_dir, &allow);
    assert!(out.contains("quiet.raw: from cache"), "{out}");
    assert_eq!(calls_so_far(), asked, "silence allowed is cached");

    // Session 25: a run without the flag was then served the empty text from the snapshot,
    // "from cache", with status 0. It asks the engine again and fails as the first run did.
    let output = transcribe(&[&audio], &cache_dir, &["--engine-cmd", &engine]);
    let line = one_error_line(&output);
    assert!(line.contains("wrote no text"), "{line}");
    let strict = calls_so_far();
    assert!(strict > asked, "the engine was not asked again");
    // The run took nothing away from the flag's: its silence is still cached.
    let out = transcribe_ok(&[&audio], &cache_dir, &allow);
    assert!(out.contains("    (no text)"), "{out}");
    assert_eq!(calls_so_far(), strict, "silence allowed stays cached");
}

/// Sets the permission bits of `path`.
#[cfg(target_os = "linux")]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The directory `name`, created in `dir` with the permission bits `mode`.
#[cfg(target_os = "linux")]
fn dir_with_mode(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
    let made = dir.join(name);
    std::fs::create_dir(&made).expect("creatable");
    chmod(&made, mode);
    made
}

/// A temporary directory that another user can enter, if the tests run as root and
/// `setpriv` can run `memocache` as `nobody` (see [`as_nobody`]); `None` otherwise, as
/// permissions do not bind root.
#[cfg(target_os = "linux")]
fn shared_dir() -> Option<tempfile::TempDir> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let root = std::fs::metadata(dir.path()).expect("stat").uid() == 0;
    let setpriv = Command::new("setpriv").arg("--version").output();
    if !root || !setpriv.is_ok_and(|o| o.status.success()) {
        return None;
    }
    chmod(dir.path(), 0o755);
    Some(dir)
}

/// `memocache transcribe FILE --language en --cache-dir DIR` run as `nobody`.
#[cfg(target_os = "linux")]
fn transcribe_as_nobody(file: &Path, cache_dir: &Path) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_memocache"))
        .args(["transcribe", path(file), "--language", "en", "--cache-dir"])
        .arg(cache_dir)
        .output()
        .expect("run setpriv")
}

/// Session 25: in a cache directory shared by a group, the lock file one member's run had
/// created (mode 0644) refused every run of another member ("cannot open the lock file …:
/// Permission denied"), though the lock needs no write access and the snapshot could be
/// written there. It is opened read-only then, and still excludes a second run. Another user
/// is needed: this checks nothing unless the tests run as root (see [`shared_dir`]).
#[cfg(target_os = "linux")]
#[test]
fn a_lock_file_the_user_may_not_write_still_locks() {
    let Some(dir) = shared_dir() else { return };
    let audio = file_in(dir.path(), "a.raw", vec![5u8; 3000]);
    chmod(&audio, 0o644);
    let cache_dir = dir_with_mode(dir.path(), "cache", 0o777);
    let lock = file_in(&cache_dir, "cache.lock", b"");
    chmod(&lock, 0o644);
    let output = transcribe_as_nobody(&audio, &cache_dir);
    succeeded(&output);
    // The read-only lock excludes as the other does: with the lock held here, the run is
    // refused as in use.
    let held = File::open(&lock).expect("readable");
    held.try_lock().expect("free");
    let line = one_error_line(&transcribe_as_nobody(&audio, &cache_dir));
    assert!(line.contains("in use by another"), "{line}");
}

/// Session 25: a `cache.snapshot` that is a symbolic link is saved where it leads, but the
/// check that the snapshot can be written looked only at the cache directory: with the
/// link's target in a directory the user may not write, the run transcribed everything and
/// then failed to save any of it. That directory is checked before anything is done.
#[cfg(target_os = "linux")]
#[test]
fn a_snapshot_linked_into_an_unwritable_directory_fails_before_any_work() {
    let Some(dir) = shared_dir() else { return };
    let audio = file_in(dir.path(), "a.raw", vec![6u8; 3000]);
    chmod(&audio, 0o644);
    let elsewhere = dir_with_mode(dir.path(), "elsewhere", 0o755);
    let empty = memocache::Cache::builder().max_bytes(1 << 20).build();
    let target = elsewhere.join("cache.snapshot");
    empty
        .expect("a cache")
        .save_snapshot(&target)
        .expect("saved");
    chmod(&target, 0o644);
    let cache_dir = dir_with_mode(dir.path(), "cache", 0o777);
    std::os::unix::fs::symlink(&target, cache_dir.join("cache.snapshot")).expect("a link");
    let output = transcribe_as_nobody(&audio, &cache_dir);
    let line = one_error_line(&output);
    assert!(line.contains(path(&elsewhere)), "{line}");
    assert!(line.contains("cannot write in"), "{line}");
    assert!(output.stdout.is_empty(), "transcribed first");
}
