//! The `memocache` command: content keys, memoized transcription, trace replay and a demo.
//!
//! Every error a user can cause is printed as one line on stderr (control characters in it,
//! such as a newline in a file name, escaped) and exits with status 1 — usage errors too:
//! clap's own report (several lines and status 2) is folded into that one line. `--help` and
//! `--version` print to stdout with status 0 (unless the write fails, as below). Nothing
//! panics on bad input.
//!
//! Standard output closed early (`memocache replay … | head`) makes Rust's `println!` panic,
//! since the runtime ignores SIGPIPE. Rather than route every line through error handling,
//! that one panic is recognised: its message is not printed, the run unwinds (temporary files
//! are removed) and the command exits with status 1 and nothing on stderr, as a tool killed
//! by SIGPIPE prints nothing. Any other failure to write standard output (a full disk under
//! `> out.txt`) is the same panic with another cause: it unwinds the same way and is then
//! reported as the one error line `cannot write to standard output: <cause>`, not as a panic
//! with a backtrace and status 101. The help, the version and whatever a run leaves in the
//! buffer are written with errors checked, and fail in the same two ways.

use std::any::Any;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Write as _};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser, Subcommand};
use memocache::CacheKey;

/// `eprintln!` without its panic. A standard error that cannot be written (`2> /dev/full`, a
/// terminal that has gone) made `eprintln!` panic: an error's status 1 became 101, and the
/// stand-in engine's note ended a run that would have succeeded. A line that cannot be
/// written is dropped, as there is nowhere left to report it.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;

#[derive(Parser)]
#[command(
    name = "memocache",
    version,
    about = "A content-addressed cache engine for memoizing expensive results"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the content key of a file (streamed; works on files of any size).
    Key {
        /// The file to hash; `-` reads standard input.
        file: PathBuf,
        /// With a language, print the transcript key of the file in that language.
        #[arg(long)]
        language: Option<String>,
        /// The key prefix (namespace); `content`, or `transcript` with `--language`.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Replay an access trace; print hit ratio and throughput for memocache, LRU and OPT.
    Replay(cli::replay::ReplayArgs),
    /// Transcribe audio files through the memoized pipeline; the cache persists in a directory.
    Transcribe(cli::transcribe::Options),
    /// The main job, with no setup: generated audio transcribed twice by a stand-in engine,
    /// the second pass served from the cache, with metrics and an alert.
    Demo {
        /// Keep the generated files and the snapshot in this directory, which must be new or
        /// empty (default: a temporary directory, removed afterwards). Ctrl-C removes what
        /// the demo wrote there.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(e) = cli::missing_value(&mut Cli::command(), &args) {
        errln!("memocache: error: {}", cli::printable(&usage_error(&e)));
        return ExitCode::FAILURE;
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // `--help` and `--version` go to stdout, with status 0. Not by `clap::Error::exit`,
        // which ignores a failed write: `--help > /dev/full` exited 0 having written nothing.
        Err(e) if !e.use_stderr() => {
            return match e.print().and_then(|()| std::io::stdout().flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(cause) => stdout_failed(&cause.to_string()),
            };
        }
        Err(e) => {
            errln!("memocache: error: {}", cli::printable(&usage_error(&e)));
            return ExitCode::FAILURE;
        }
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if stdout_failure(info.payload()).is_none() {
            default_hook(info);
        }
    }));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(cli.command)));
    // Once Ctrl-C's handler has begun ending the process, the run's outcome (often an error
    // its cleanup caused) is not reported: this waits, and the handler ends the process.
    cli::checkpoint::claim_exit();
    match outcome {
        // What is still buffered is written now, where a failure can be reported: the
        // runtime's flush at exit ignores errors.
        Ok(Ok(())) => match std::io::stdout().flush() {
            Ok(()) => ExitCode::SUCCESS,
            Err(cause) => stdout_failed(&cause.to_string()),
        },
        Ok(Err(message)) => {
            errln!("memocache: error: {}", cli::printable(&message));
            ExitCode::FAILURE
        }
        Err(payload) => match stdout_failure(&*payload) {
            Some(cause) => stdout_failed(cause),
            None => std::panic::resume_unwind(payload),
        },
    }
}

/// The end of a run whose standard output could not be written, for `cause`: silent for a
/// reader that has gone, as a tool killed by SIGPIPE; otherwise the one error line.
fn stdout_failed(cause: &str) -> ExitCode {
    if !cause.contains("os error 32") {
        errln!(
            "memocache: error: {}",
            cli::printable(&format!("cannot write to standard output: {cause}"))
        );
    }
    ExitCode::FAILURE
}

/// The cause (`Broken pipe (os error 32)`, `No space left on device (os error 28)`) if a
/// panic is `println!`'s failing to write standard output.
fn stdout_failure(payload: &(dyn Any + Send)) -> Option<&str> {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())?;
    message.strip_prefix("failed printing to stdout: ")
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Key {
            file,
            language,
            prefix,
        } => {
            let key = match language {
                None => file_key(&file, prefix.as_deref().unwrap_or("content"))?,
                Some(language) => {
                    let prefix = prefix.as_deref().unwrap_or("transcript");
                    // Before the file is hashed: a typo in the language was reported only
                    // after hashing gigabytes, and never for an endless input.
                    CacheKey::from_parts(&"0".repeat(64), &language, prefix)
                        .map_err(|e| e.to_string())?;
                    let content = file_key(&file, prefix)?;
                    CacheKey::from_parts(&content.digest_hex(), &language, prefix)
                        .map_err(|e| e.to_string())?
                }
            };
            println!("{key}");
            Ok(())
        }
        Command::Replay(args) => cli::replay::run(args),
        Command::Transcribe(options) => cli::transcribe::run(options),
        Command::Demo { dir } => cli::demo::run(dir),
    }
}

/// clap's report of a usage error on one line: its message without the `error:` label, the
/// usage block and the closing hint, and a pointer to `--help` instead.
fn usage_error(error: &clap::Error) -> String {
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap's "message" for this kind is the whole help text.
        return "no command given; `memocache --help` lists the commands".to_owned();
    }
    let report = error.render().to_string();
    let message: Vec<&str> = report
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:"))
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message} (see `{} --help`)", usage_command(&report))
}

/// The command whose usage clap's `report` shows: `memocache replay` for an error in
/// `replay`'s arguments, whose help says what they are (the top-level help only lists the
/// subcommands), and `memocache` for one in the top-level arguments or command name.
fn usage_command(report: &str) -> String {
    let usage = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Usage:"))
        .unwrap_or_default();
    // `memocache [OPTIONS] <COMMAND>` at the top; `memocache replay [OPTIONS] <TRACE>` in one.
    let command: Vec<&str> = usage
        .split_whitespace()
        .take_while(|word| !word.starts_with(['[', '<', '-']))
        .collect();
    if command.len() > 1 {
        command.join(" ")
    } else {
        "memocache".to_owned()
    }
}

/// The content key of a file (standard input for `-`), streamed. The prefix is checked
/// first, so that a bad one is not reported as a failure to hash the file.
fn file_key(path: &PathBuf, prefix: &str) -> Result<CacheKey, String> {
    CacheKey::from_digest([0; 32], prefix).map_err(|e| e.to_string())?;
    if path.as_os_str() == "-" {
        return CacheKey::from_reader(std::io::stdin().lock(), prefix)
            .map_err(|e| format!("cannot hash standard input: {e}"));
    }
    if path.is_dir() {
        return Err(format!("{} is a directory, not a file", cli::shown(path)));
    }
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", cli::shown(path)))?;
    CacheKey::from_reader(BufReader::new(file), prefix)
        .map_err(|e| format!("cannot hash {}: {e}", cli::shown(path)))
}
