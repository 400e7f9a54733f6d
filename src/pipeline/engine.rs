//! Speech engines: the [`Transcriber`] trait, an engine run as a command, and a stand-in.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::chunk::{AudioChunk, ChunkKind, ChunkResult, Segment};
use crate::key::CacheKey;

/// One chunk of audio in, text (and optionally timed segments) out.
///
/// Implementations must be deterministic for a given [`Transcriber::identity`]: results are
/// memoized per chunk under a key that includes the identity, so change the identity whenever
/// the engine, its model or its settings change. A transcriber is shared by the pipeline's
/// workers (`Send + Sync`) and called for up to
/// [`chunk_concurrency`](super::PipelineBuilder::chunk_concurrency) chunks of a file at once.
///
/// An engine run in process:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use memocache::{Cache, RetryConfig};
/// use memocache::chunk::{AudioChunk, ChunkPlan, ChunkResult};
/// use memocache::pipeline::{Pipeline, PipelineError, TranscribeError, Transcriber};
///
/// struct ByteCounter {
///     calls: AtomicUsize,
/// }
///
/// impl Transcriber for ByteCounter {
///     fn identity(&self) -> &str {
///         "byte-counter/1"
///     }
///
///     fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
///         self.calls.fetch_add(1, Ordering::Relaxed);
///         if chunk.data().iter().all(|&b| b == 0) {
///             return Err(TranscribeError::Engine("nothing but silence".into()));
///         }
///         Ok(ChunkResult::from_text(format!("{} bytes", chunk.data().len())))
///     }
/// }
///
/// let dir = std::env::temp_dir().join(format!("memocache-doc-engine-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let (audio, silence) = (dir.join("talk.raw"), dir.join("silence.raw"));
/// std::fs::write(&audio, vec![7u8; 10_000])?;
/// std::fs::write(&silence, vec![0u8; 100])?;
///
/// let engine = Arc::new(ByteCounter { calls: AtomicUsize::new(0) });
/// let cache = Cache::builder().max_bytes(64 * 1024 * 1024).build()?;
/// let pipeline = Pipeline::builder(cache, engine.clone())
///     .plan(ChunkPlan::with_chunk_bytes(4096)?) // small chunks, for the example
///     // No retries: the default retries a failing chunk after 1, 2 and 4 seconds.
///     .retry(RetryConfig::exponential(0, Duration::from_millis(10))?)
///     .build()?;
///
/// let first = pipeline.transcribe(&audio, "en")?;
/// assert_eq!(first.transcript.text, "4096 bytes 4096 bytes 1808 bytes");
/// assert_eq!(first.transcript.engine, "byte-counter/1");
/// // The two identical chunks share one memoized result, even when two workers take them at
/// // once (one waits for the other's): the engine ran twice, not three times.
/// assert_eq!(engine.calls.load(Ordering::Relaxed), 2);
///
/// let second = pipeline.transcribe(&audio, "en")?;
/// assert!(second.from_cache);
/// assert_eq!(engine.calls.load(Ordering::Relaxed), 2);
///
/// // An engine error fails the file, with a message that names the file, the chunk and the
/// // engine's error; nothing is cached for it.
/// let err = pipeline.transcribe(&silence, "en").unwrap_err();
/// assert!(matches!(err, PipelineError::Failed { .. }));
/// assert!(err.to_string().contains("chunk 0 failed after 1 attempt(s)"), "{err}");
/// assert!(err.to_string().ends_with("nothing but silence"), "{err}");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Transcriber: Send + Sync {
    /// The engine, model and settings, as part of every chunk's cache key.
    fn identity(&self) -> &str;

    /// Transcribes one chunk. For WAV input the chunk is a complete WAV file. An engine run
    /// in process returns its own errors as [`TranscribeError::Engine`].
    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError>;

    /// Whether a result with no text ([`ChunkResult::has_text`]) is a transcript for this
    /// engine (by default it is). The identity does not say, so a cache may hold such results
    /// stored by the same engine set to take them; one that does not take them is served
    /// none: the [pipeline](super::Pipeline) asks it again for a chunk stored without text
    /// and does not serve a file's transcript with such a chunk in it.
    fn allows_empty_text(&self) -> bool {
        true
    }
}

/// Why an engine produced no text for a chunk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscribeError {
    /// The chunk could not be handed to the engine (temporary file, spawn).
    #[error("running the engine failed: {0}")]
    Io(#[from] std::io::Error),
    /// The engine exited unsuccessfully.
    #[error(
        "the engine command `{command}` exited with {status}{}",
        after_status(stderr)
    )]
    EngineFailed {
        /// The command as run.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of what it wrote to stderr (empty if it wrote nothing there).
        stderr: String,
    },
    /// The engine command has no `{chunk}` placeholder, so the engine would never be given
    /// the chunk: refused by [`CommandTranscriber::new`] before anything runs.
    #[error(
        "the engine command `{command}` has no {{chunk}} placeholder for the chunk file's path"
    )]
    NoChunkPlaceholder {
        /// The command as given.
        command: String,
    },
    /// The engine wrote something that is not UTF-8 text.
    #[error("the engine command `{command}` wrote output that is not UTF-8")]
    NotText {
        /// The command as run.
        command: String,
    },
    /// The engine exited successfully but wrote no text (nothing, or only whitespace) on
    /// stdout, and [`CommandTranscriber::allow_empty`] was not set. An engine that is
    /// misconfigured (a missing model, output sent to a file) often exits 0 this way: taken as
    /// the chunk's text, the empty transcript was cached and served on every later run. Nor
    /// is an engine without `allow_empty` served empty text that a run with it cached: the
    /// pipeline asks the engine again for such a chunk, so it fails this way again if the
    /// engine still writes nothing.
    #[error(
        "the engine command `{command}` exited successfully but wrote no text; nothing is \
         cached for the chunk, so a later run asks the engine again (if the chunk is silence \
         and the engine prints nothing for it, allow empty text: `--allow-empty-text`, or \
         `CommandTranscriber::allow_empty`)"
    )]
    NoText {
        /// The command as run.
        command: String,
    },
    /// The engine's own error, for a [`Transcriber`] that runs an engine in process: wrap it
    /// with `TranscribeError::Engine(Box::new(e))` (or `e.into()` for a `String`).
    #[error("the engine failed: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What follows the exit status in [`TranscribeError::EngineFailed`]'s message: the end of
/// the engine's stderr, or that it wrote nothing there (a message ending in a bare `: `
/// reads as if its cause had been lost).
fn after_status(stderr: &str) -> String {
    if stderr.is_empty() {
        " and wrote nothing on stderr".to_owned()
    } else {
        format!(": {stderr}")
    }
}

/// Any command-line speech engine, run once per chunk through `sh -c`.
///
/// `{chunk}` in the template stands for the path of a temporary file holding the chunk, as
/// one word, whether it is written bare or in quotes (see [`CommandTranscriber::new`]); the
/// command's standard output is the chunk's text, its whitespace runs made single spaces. An
/// exit status other than 0 fails the chunk, and so does no text at all, unless
/// [`allowed`](CommandTranscriber::allow_empty). So a user plugs in the engine they
/// already have, e.g. `pocketsphinx_continuous -infile {chunk} -logfn /dev/null`. The file is
/// named for what it holds: `*.wav` for a chunk of WAV (or declared raw PCM) input, which is a
/// complete WAV file, and `*.bin` for a byte range of any other input (see
/// [`ChunkKind::Bytes`]: not a well-formed file of the input's format, so it does not take the
/// input's extension either).
#[derive(Clone, Debug)]
pub struct CommandTranscriber {
    template: String,
    identity: String,
    /// Where chunk files go; the system's temporary directory if `None`.
    chunk_dir: Option<PathBuf>,
    /// Whether no text is a chunk's transcript (see [`CommandTranscriber::allow_empty`]).
    allow_empty: bool,
}

impl CommandTranscriber {
    /// An engine run as `template` (which must contain `{chunk}`). The chunk file's path is
    /// handed to `sh` as a positional parameter and each `{chunk}` becomes its expansion,
    /// quoted to fit where it stands: bare (`-infile {chunk}`), in double quotes
    /// (`"{chunk}"`), in single quotes or in a command substitution (`"$(realpath {chunk})"`),
    /// the path's exact bytes make one word of the command. (A command that hands a
    /// single-quoted string to another shell, as `sh -c 'engine {chunk}'`, has that shell
    /// parse the path again.)
    pub fn new(template: impl Into<String>) -> Result<CommandTranscriber, TranscribeError> {
        let template = template.into();
        if !template.contains("{chunk}") {
            return Err(TranscribeError::NoChunkPlaceholder { command: template });
        }
        let identity = format!("cmd:{template}");
        Ok(CommandTranscriber {
            template,
            identity,
            chunk_dir: None,
            allow_empty: false,
        })
    }

    /// Takes an engine's empty output (nothing, or only whitespace, with exit status 0) as
    /// the chunk's transcript — what an engine that prints nothing for silence means — and
    /// caches it like any other. By default it is [`TranscribeError::NoText`]: the chunk
    /// fails and nothing is cached, so a misconfigured engine's silence is not served as
    /// the transcript on every later run. Not part of the
    /// [`identity`](Transcriber::identity), so that the chunks with text are shared by runs
    /// with and without it (a text is the same text either way); the empty ones are served
    /// only to an engine that allows them (see [`Transcriber::allows_empty_text`]), and one
    /// that does not is asked again for them.
    pub fn allow_empty(mut self, allow: bool) -> CommandTranscriber {
        self.allow_empty = allow;
        self
    }

    /// Writes the chunk files into `dir` (which must exist) instead of the system's temporary
    /// directory. Each file is removed once its engine run ends; a process that may end
    /// without that (`std::process::exit` on Ctrl-C, with an engine still running) gives its
    /// run a directory of its own and removes it as it ends, so no chunk file outlives it.
    /// Not part of the [`identity`](Transcriber::identity): where the file lies does not
    /// change the text.
    pub fn chunk_dir(mut self, dir: impl Into<PathBuf>) -> CommandTranscriber {
        self.chunk_dir = Some(dir.into());
        self
    }
}

impl Transcriber for CommandTranscriber {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn allows_empty_text(&self) -> bool {
        self.allow_empty
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        // Named for what it holds: an engine (or the decoder it calls) may pick a format by
        // extension, and a byte range of MP3, FLAC, ... input read as WAV is noise or an error.
        let suffix = match chunk.info().kind {
            ChunkKind::Wav => ".wav",
            ChunkKind::Bytes => ".bin",
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix("memocache-chunk-").suffix(suffix);
        let mut file = match &self.chunk_dir {
            Some(dir) => builder.tempfile_in(dir)?,
            None => builder.tempfile()?,
        };
        file.write_all(chunk.data())?;
        file.flush()?;
        // The path is `sh`'s first positional parameter (after `$0`), not text in the command.
        let output = Command::new("sh")
            .arg("-c")
            .arg(substitute_chunk(&self.template))
            .arg("sh")
            .arg(file.path())
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            return Err(TranscribeError::EngineFailed {
                command: self.template.clone(),
                status: output.status.to_string(),
                stderr: tail,
            });
        }
        let text = String::from_utf8(output.stdout).map_err(|_| TranscribeError::NotText {
            command: self.template.clone(),
        })?;
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() && !self.allow_empty {
            return Err(TranscribeError::NoText {
                command: self.template.clone(),
            });
        }
        Ok(chunk_result(chunk, text))
    }
}

/// The engine command with each `{chunk}` turned into an expansion of `$1`, the chunk file's
/// path, fitting the quotes the placeholder stands in: `"$1"` outside quotes, `$1` inside
/// double quotes, `'"$1"'` (close, expand, reopen) inside single quotes. So the shell gives
/// the engine the exact bytes of the path as one word, wherever the user put `{chunk}`.
///
/// The path used to be pasted into the command in single quotes, as text: a path that is not
/// UTF-8 (from a `TMPDIR` of any bytes) reached the engine with U+FFFD in place of its bytes,
/// and a placeholder the user had double-quoted (`"{chunk}"`) handed the engine a name with
/// the quotes in it; either way the engine found no such file.
///
/// The quotes are tracked as a stack because a command substitution (`$(...)` or backquotes)
/// starts a new, unquoted context even inside double quotes: in `"$(realpath {chunk})"` the
/// placeholder stands unquoted, and a bare `$1` there was split into words and globbed (a
/// `TMPDIR` of `a  b*` reached the engine as `a b*`). Parentheses are counted within `$(`
/// so that a subshell's `)` does not end it. Comments, here-documents and `$'...'` are not
/// parsed: a quote in them is taken as a real one.
fn substitute_chunk(template: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Context {
        /// Unquoted, at the top or in a backquoted substitution.
        Bare,
        Single,
        Double,
        /// Unquoted, in `$(`, with this many `(` open inside it.
        Substitution(usize),
        /// Unquoted, in `` ` ``.
        Backquote,
    }
    let mut out = String::with_capacity(template.len() + 8);
    let mut stack = vec![Context::Bare];
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        let context = *stack.last().unwrap_or(&Context::Bare);
        if let Some(after) = rest.strip_prefix("{chunk}") {
            out.push_str(match context {
                Context::Double => "$1",
                Context::Single => "'\"$1\"'",
                Context::Bare | Context::Substitution(_) | Context::Backquote => "\"$1\"",
            });
            rest = after;
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
        match (context, c) {
            (Context::Single, '\'') => {
                stack.pop();
            }
            (Context::Single, _) => {}
            // A backslash outside single quotes keeps the next character from opening or
            // closing anything (`\"`, `\'`, `\\`, `\$`); it is copied as is.
            (_, '\\') => {
                if let Some(next) = rest.chars().next() {
                    out.push(next);
                    rest = &rest[next.len_utf8()..];
                }
            }
            (Context::Double, '"') => {
                stack.pop();
            }
            (_, '$') if rest.starts_with('(') => {
                out.push('(');
                rest = &rest[1..];
                stack.push(Context::Substitution(0));
            }
            (Context::Backquote, '`') => {
                stack.pop();
            }
            (_, '`') => stack.push(Context::Backquote),
            (Context::Double, _) => {}
            (_, '\'') => stack.push(Context::Single),
            (_, '"') => stack.push(Context::Double),
            (Context::Substitution(open), '(') => {
                stack.pop();
                stack.push(Context::Substitution(open + 1));
            }
            (Context::Substitution(open), ')') => {
                stack.pop();
                if open > 0 {
                    stack.push(Context::Substitution(open - 1));
                }
            }
            _ => {}
        }
    }
    out
}

/// A deterministic, CPU-bound stand-in for a speech engine, for demos and benchmarks.
///
/// It does not recognise speech: it hashes the chunk `rounds` times and turns the digest into
/// words from a fixed vocabulary, and says so in every text it returns (`[stand-in] ...`).
#[derive(Clone, Debug)]
pub struct StandInTranscriber {
    rounds: u32,
    identity: String,
}

impl StandInTranscriber {
    /// A stand-in hashing each chunk `rounds` times (the CPU cost knob).
    pub fn new(rounds: u32) -> StandInTranscriber {
        StandInTranscriber {
            rounds: rounds.max(1),
            identity: format!("stand-in/v1/rounds={}", rounds.max(1)),
        }
    }
}

const VOCABULARY: [&str; 32] = [
    "the", "cache", "keeps", "what", "was", "heard", "before", "so", "nothing", "is", "computed",
    "twice", "audio", "chunk", "words", "quiet", "signal", "river", "morning", "light", "green",
    "stone", "window", "paper", "seven", "blue", "music", "open", "field", "north", "slow",
    "bright",
];

impl Transcriber for StandInTranscriber {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn transcribe(&self, chunk: &AudioChunk) -> Result<ChunkResult, TranscribeError> {
        // `rounds` full passes of SHA-256 over the chunk, each seeded by the last digest.
        let mut digest = [0u8; 32];
        for _ in 0..self.rounds {
            let key = CacheKey::builder("stand-in")
                .map_err(|e| TranscribeError::Engine(Box::new(e)))?
                .part(digest)
                .part(chunk.data())
                .finish();
            digest = *key.digest();
        }
        let words: Vec<&str> = digest
            .iter()
            .take(8)
            .map(|b| VOCABULARY[usize::from(*b) % VOCABULARY.len()])
            .collect();
        Ok(chunk_result(
            chunk,
            format!("[stand-in] {}", words.join(" ")),
        ))
    }
}

/// A result with one segment spanning the chunk, when its duration is known.
fn chunk_result(chunk: &AudioChunk, text: String) -> ChunkResult {
    let segments = match chunk.info().duration {
        Some(duration) if !text.is_empty() => vec![Segment {
            start: Duration::ZERO,
            end: duration,
            text: text.clone(),
        }],
        _ => Vec::new(),
    };
    ChunkResult { text, segments }
}
