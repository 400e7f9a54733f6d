//! Checkpoints: `transcribe` saves its cache while it works, so a run that is killed keeps
//! what it finished.
//!
//! * **A thread of its own, on a timer.** A checkpoint thread wakes every interval
//!   (`--checkpoint-secs`) and, if the cache stored anything since its last save, saves the
//!   snapshot. The files are transcribed on the run's thread meanwhile: a save streams the
//!   cache shard by shard while it serves (see [`memocache::snapshot`]), so the workers wait
//!   at most for one shard's handle collection, never for the file to be written. Saving
//!   between files on the run's thread instead would stop the run for every save, and would
//!   keep nothing of a long file until it ends; the thread also keeps the chunks a file has
//!   finished so far, since they are cached entries like the transcripts.
//! * **"Stored anything" is the cache's insert and update counters**, read just before a
//!   save, so what is stored during a save is saved by the next one, and a run served from
//!   the cache does not rewrite an unchanged snapshot every interval.
//! * **The interval runs from the end of the last save** (or check), so at most one save
//!   runs at a time and saves take at most `save / (save + interval)` of the time, however
//!   large the cache. A file stored just after a check waits up to two intervals.
//! * **Atomic.** Each save writes a temporary file and renames it over the snapshot
//!   ([`memocache::Cache::save_snapshot`]): a run killed during a checkpoint leaves the
//!   previous snapshot whole, and the next save removes the temporary file it left.
//! * **A failed checkpoint does not stop the run.** Its work is still in memory and the run
//!   saves at its end, where a failure is the run's error. The first failure is printed as
//!   one warning (later ones are not, so a full disk does not flood the terminal); the
//!   changes stay pending, so the next tick tries again.
//! * **Stopping waits for a save in progress**, so the run's final save never races a
//!   checkpoint (the later rename must be the newer snapshot).
//! * **Ctrl-C saves too** ([`Checkpoints::save_on_interrupt`]), and so do SIGTERM and SIGHUP
//!   (`kill`, `timeout`, `systemctl stop`, a closed terminal; not under `nohup`), which used
//!   to end the run at once, losing what it had finished since the last checkpoint and
//!   leaving its chunk files (see [`on_interrupt`]). The first one saves what the cache holds
//!   and ends the process with status 130 (143 for SIGTERM, 129 for SIGHUP), so a run
//!   loses nothing it finished, not even what it stored since the last checkpoint; a second
//!   one quits at once without saving (the snapshot on disk is then the last checkpoint's,
//!   whole). The save takes the same lock as a checkpoint, so a checkpoint in progress
//!   finishes first and none starts after it: its rename is the last. An engine still
//!   working on a chunk is not waited for, but its chunk file does not outlive the run: a
//!   run's chunk files are in a directory of its own, which Ctrl-C removes (SIGKILL still
//!   leaves it, in the temporary directory).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use memocache::{Cache, SnapshotError, SnapshotReport};

use super::shown;
use parking_lot::Mutex;

/// The exit status of a run ended by Ctrl-C: 128 + SIGINT, as shells report it.
pub const INTERRUPTED: i32 = 130;

/// Prints one line to the user (above the progress bars).
type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// The checkpoint thread of a run; stopped (after any save in progress) when dropped.
pub struct Checkpoints {
    /// Dropping it wakes the thread and tells it to stop.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Shared with the thread and the Ctrl-C handler: one save at a time.
    saver: Arc<Mutex<Saver>>,
    say: Say,
}

impl Checkpoints {
    /// Saves `cache` to `snapshot` every `interval` while it has changed, printing warnings
    /// and notes with `say`. A zero interval saves nothing (the run saves only at its end).
    pub fn start(
        cache: Cache,
        snapshot: PathBuf,
        interval: Duration,
        say: impl Fn(&str) + Send + Sync + 'static,
    ) -> Result<Checkpoints, String> {
        let say: Say = Arc::new(say);
        let saver = Arc::new(Mutex::new(Saver::new(cache, snapshot)));
        if interval.is_zero() {
            return Ok(Checkpoints {
                stop: None,
                thread: None,
                saver,
                say,
            });
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let saver = Arc::clone(&saver);
            let say = Arc::clone(&say);
            std::thread::Builder::new()
                .name("checkpoint".into())
                .spawn(move || {
                    // Nothing is ever sent: the sender's drop ends the wait (`Disconnected`).
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                        if let Tick::FirstFailure(message) = saver.lock().tick() {
                            say(&message);
                        }
                    }
                })
                .map_err(|e| format!("cannot start the checkpoint thread: {e}"))?
        };
        Ok(Checkpoints {
            stop: Some(stop),
            thread: Some(thread),
            saver,
            say,
        })
    }

    /// Makes Ctrl-C (SIGINT), and SIGTERM and SIGHUP (see [`on_interrupt`]), save the cache
    /// and end the process with the signal's status; a second one during that save ends it
    /// at once, without saving. Either way `scratch`, if given, is removed before the process
    /// ends: the run's chunk files, which an engine still running would otherwise leave
    /// behind. Can be called once per process.
    pub fn save_on_interrupt(&self, scratch: Option<PathBuf>) -> Result<(), String> {
        let saver = Arc::clone(&self.saver);
        let say = Arc::clone(&self.say);
        let mut interrupted = false;
        let scratch = Arc::new(scratch);
        on_interrupt(move |status| {
            if interrupted {
                say(
                    "interrupted again: quitting without saving (the snapshot on disk is the \
                     last checkpoint's)",
                );
                end_interrupted(scratch.as_deref(), status);
            }
            interrupted = true;
            // The save runs on a thread of its own: the handler must return to hear a second
            // Ctrl-C.
            let saver = Arc::clone(&saver);
            let say_there = Arc::clone(&say);
            let scratch_there = Arc::clone(&scratch);
            let saving = std::thread::Builder::new()
                .name("interrupt-save".into())
                .spawn(move || {
                    let say = say_there;
                    say("interrupted: saving what is finished (Ctrl-C again to quit without saving)");
                    // Held until the process ends, so no checkpoint starts after this save.
                    let mut saver = saver.lock();
                    say(&saver.save_on_interrupt());
                    end_interrupted(scratch_there.as_deref(), status);
                });
            if saving.is_err() {
                say(
                    "interrupted: cannot start a thread to save the cache; quitting without saving",
                );
                end_interrupted(scratch.as_deref(), status);
            }
        })
    }
}

/// Calls `handler` on each Ctrl-C (SIGINT) with [`INTERRUPTED`], and on unix on each SIGTERM
/// (`kill`, `timeout`, `systemctl stop`) and SIGHUP (a closed terminal) with 128 + its number,
/// the status a shell reports for a process that signal ended. Left to their default, those
/// two end a run at once: what it finished since the last checkpoint is lost, and its chunk
/// files are left behind. A SIGTERM or SIGHUP that is ignored when this is called is
/// left ignored: `nohup` ignores SIGHUP so that a run outlives its terminal (on Linux, where
/// `/proc` tells; elsewhere it is caught). Can be called once per process.
pub fn on_interrupt(handler: impl FnMut(i32) + Send + 'static) -> Result<(), String> {
    let handler = Arc::new(Mutex::new(handler));
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGTERM};
        let caught: Vec<i32> = [SIGTERM, SIGHUP]
            .into_iter()
            .filter(|&signal| !ignored(signal))
            .collect();
        let mut signals = signal_hook::iterator::Signals::new(&caught)
            .map_err(|e| format!("cannot catch SIGTERM and SIGHUP: {e}"))?;
        let handler = Arc::clone(&handler);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    (handler.lock())(128 + signal);
                }
            })
            .map_err(|e| format!("cannot start the thread that catches SIGTERM: {e}"))?;
    }
    ctrlc::set_handler(move || (handler.lock())(INTERRUPTED))
        .map_err(|e| format!("cannot catch Ctrl-C: {e}"))
}

/// Whether `signal` is ignored (its bit in `SigIgn` of `/proc/self/status`).
#[cfg(target_os = "linux")]
fn ignored(signal: i32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn ignored(_signal: i32) -> bool {
    false
}

/// Held by whoever decides how the process ends: the run's main thread or an interrupt
/// (see [`claim_exit`]).
static EXIT: Mutex<()> = Mutex::new(());

/// Claims the right to end the process, for good: the first caller returns and must then
/// end it; a later caller blocks until the process ends under it.
///
/// An interrupt ends the process from another thread while the run goes on, and its cleanup
/// can fail the run: `demo` writes its audio into the temporary directory that Ctrl-C
/// removes, and a write into the removed directory returned an error that made `main` exit
/// with status 1 ("cannot write ...") before the handler's `exit(130)` — in 24 of 185 runs
/// of the Ctrl-C test under load. Both ends claim first, so an interrupt that has begun
/// ends the process with its status and cleanup whatever the run does meanwhile, and a run
/// that has finished (its own cleanup done) is not cut short by a late Ctrl-C.
pub fn claim_exit() {
    std::mem::forget(EXIT.lock());
}

/// Ends an interrupted run: removes `scratch` (see [`Checkpoints::save_on_interrupt`]; `demo`
/// passes its temporary directory), then exits with [`INTERRUPTED`]. Unlinking a file an
/// engine still has open does not disturb it (unix), and its output is not waited for anyway.
/// Returns never, and never ends the process if the run has claimed its exit first.
pub fn end_interrupted(scratch: Option<&std::path::Path>, status: i32) -> ! {
    end_interrupted_with(
        || {
            if let Some(dir) = scratch {
                remove_dir_all(dir);
            }
        },
        status,
    )
}

/// [`end_interrupted`] with another clean-up than removing a directory, run once the exit is
/// claimed: a run that has finished is not undone by a late Ctrl-C.
pub fn end_interrupted_with(cleanup: impl FnOnce(), status: i32) -> ! {
    claim_exit();
    cleanup();
    std::process::exit(status);
}

/// Removes `dir` and what it holds, as far as it can.
pub fn remove_dir_all(dir: &std::path::Path) {
    // The run's other threads go on meanwhile: a file one of them creates between the
    // listing and the final `rmdir` fails the removal as "not empty"; another pass removes it.
    for _ in 0..3 {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {}
            _ => break,
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only saves and prints; if it panicked, the run's final save still
            // happens, so there is nothing to add to the panic's own report.
            let _ = thread.join();
        }
    }
}

/// What one wake of the checkpoint thread did.
#[derive(Debug, PartialEq)]
enum Tick {
    /// Nothing was stored since the last save.
    Unchanged,
    /// The snapshot was saved.
    Saved,
    /// The save failed, for the first time this run: the warning to print.
    FirstFailure(String),
    /// The save failed again (not printed).
    Failed,
}

/// Saves a cache when it has changed since its last save.
struct Saver {
    cache: Cache,
    snapshot: PathBuf,
    /// The cache's stores as of the last save (or the start).
    saved_stores: u64,
    warned: bool,
}

impl Saver {
    fn new(cache: Cache, snapshot: PathBuf) -> Saver {
        let saved_stores = stores(&cache);
        Saver {
            cache,
            snapshot,
            saved_stores,
            warned: false,
        }
    }

    /// Saves the snapshot if the cache stored anything since the last save: `Ok(None)` if
    /// it did not.
    fn save_if_changed(&mut self) -> Result<Option<SnapshotReport>, SnapshotError> {
        let now = stores(&self.cache);
        if now == self.saved_stores {
            return Ok(None);
        }
        match self.cache.save_snapshot(&self.snapshot) {
            Ok(report) => {
                self.saved_stores = now;
                Ok(Some(report))
            }
            // Not durable: the new file is in place, only the rename may not survive a power
            // cut; the next checkpoint or the final save syncs the directory again.
            Err(SnapshotError::NotDurable { report, .. }) => {
                self.saved_stores = now;
                Ok(Some(report))
            }
            Err(e) => Err(e),
        }
    }

    fn tick(&mut self) -> Tick {
        match self.save_if_changed() {
            Ok(None) => Tick::Unchanged,
            Ok(Some(_)) => Tick::Saved,
            Err(_) if self.warned => Tick::Failed,
            Err(e) => {
                self.warned = true;
                Tick::FirstFailure(format!(
                    "warning: cannot save a checkpoint of the cache to {}: {e}; the run goes on \
                     and saves again at the next checkpoint and at its end (later checkpoint \
                     failures are not shown)",
                    shown(&self.snapshot)
                ))
            }
        }
    }

    /// The save Ctrl-C asks for; what to tell the user.
    fn save_on_interrupt(&mut self) -> String {
        let saved = self.save_if_changed();
        let snapshot = shown(&self.snapshot);
        match saved {
            // A first run stopped before anything finished has no snapshot to point at.
            Ok(None) if !self.snapshot.exists() => {
                "nothing finished yet: no snapshot saved".to_owned()
            }
            Ok(None) => format!("nothing new to save: {snapshot} holds everything finished"),
            Ok(Some(report)) => format!(
                "saved {} entries to {snapshot}; the next run starts from them",
                report.entries
            ),
            Err(e) => format!(
                "cannot save the cache to {snapshot}: {e} (the snapshot there is the last \
                 checkpoint's)"
            ),
        }
    }
}

/// Values the cache has stored so far (new keys and replaced values).
fn stores(cache: &Cache) -> u64 {
    let stats = cache.stats();
    stats.inserts.wrapping_add(stats.updates)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use memocache::CacheKey;
    use memocache::snapshot::read_snapshot_file;

    use super::*;

    fn cache() -> Cache {
        Cache::builder().max_bytes(1 << 20).build().expect("cache")
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::from_content(&[n], "transcript").expect("key")
    }

    /// Ctrl-C's message names the snapshot as holding what finished only if there is one:
    /// a first run stopped before anything finished said so of a file that did not exist.
    #[test]
    fn an_interrupt_with_nothing_finished_names_no_snapshot_that_is_not_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let snapshot = dir.path().join("cache.snapshot");
        let mut saver = Saver::new(cache(), snapshot.clone());
        assert_eq!(
            saver.save_on_interrupt(),
            "nothing finished yet: no snapshot saved"
        );
        assert!(!snapshot.exists());

        std::fs::write(&snapshot, b"from an earlier run").expect("write");
        let message = saver.save_on_interrupt();
        assert!(message.starts_with("nothing new to save: "), "{message}");
    }

    /// A save only when something was stored since the last one; a failed save is warned
    /// about once and retried at the next tick, which then saves what is pending.
    #[test]
    fn a_tick_saves_only_changes_and_warns_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = cache();
        cache.insert(key(0), "restored").expect("insert");
        // Not yet there: saves fail until it is created.
        let snapshot = dir.path().join("sub").join("cache.snapshot");
        let mut saver = Saver::new(cache.clone(), snapshot.clone());
        assert_eq!(
            saver.tick(),
            Tick::Unchanged,
            "nothing stored since the start"
        );
        assert!(!snapshot.exists());

        cache.insert(key(1), "one").expect("insert");
        let Tick::FirstFailure(warning) = saver.tick() else {
            panic!("the first failed save is warned about")
        };
        assert!(
            warning.contains(&super::super::shown(&snapshot)),
            "{warning}"
        );
        assert!(!warning.contains('\n'), "{warning}");
        assert_eq!(saver.tick(), Tick::Failed, "warned once");

        std::fs::create_dir(dir.path().join("sub")).expect("create");
        assert_eq!(saver.tick(), Tick::Saved, "the pending change is retried");
        assert_eq!(
            read_snapshot_file(&snapshot).expect("whole").entries.len(),
            2
        );
        assert_eq!(saver.tick(), Tick::Unchanged);

        cache.insert(key(1), "one, replaced").expect("update");
        assert_eq!(saver.tick(), Tick::Saved, "an update is a change");
    }

    /// The thread saves what is stored while the run goes on, without being stopped.
    #[test]
    fn the_thread_saves_while_the_run_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let snapshot = dir.path().join("cache.snapshot");
        let cache = cache();
        let checkpoints = Checkpoints::start(
            cache.clone(),
            snapshot.clone(),
            Duration::from_millis(1),
            |w| panic!("{w}"),
        )
        .expect("started");
        cache.insert(key(7), "seven").expect("insert");
        // Waiting on the other thread, not measuring time: the deadline turns a hang into a
        // failure.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !snapshot.exists() {
            assert!(Instant::now() < deadline, "no checkpoint was saved");
            std::thread::yield_now();
        }
        let saved = read_snapshot_file(&snapshot).expect("a whole snapshot");
        assert_eq!(saved.entries.len(), 1);
        assert_eq!(saved.entries[0].key, key(7));
        drop(checkpoints);
    }

    /// The first claim on the exit holds for good: a later one (the run's `main` after an
    /// interrupt began to end the process, or an interrupt after `main` claimed) never
    /// returns. The only test in this binary that claims the exit.
    #[test]
    fn the_first_claim_on_the_exit_holds_off_every_later_one() {
        claim_exit();
        let (claimed, second) = mpsc::channel();
        std::thread::spawn(move || {
            claim_exit();
            let _ = claimed.send(());
        });
        // A claim that wrongly returns does so at once; one that waits, as it must, never
        // sends.
        assert_eq!(
            second.recv_timeout(Duration::from_millis(300)),
            Err(RecvTimeoutError::Timeout),
            "a second claim returned"
        );
    }

    /// Interval 0: no thread, nothing saved before the run's own save at its end.
    #[test]
    fn a_zero_interval_saves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let snapshot = dir.path().join("cache.snapshot");
        let cache = cache();
        let checkpoints =
            Checkpoints::start(cache.clone(), snapshot.clone(), Duration::ZERO, |w| {
                panic!("{w}")
            })
            .expect("started");
        assert!(checkpoints.thread.is_none());
        cache.insert(key(1), "one").expect("insert");
        drop(checkpoints);
        assert!(!snapshot.exists());
    }
}
