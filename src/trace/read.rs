//! Streaming trace readers: a file (or any reader) in, an iterator of `u64` keys out.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use super::format::unsupported_compression;
use super::sim::KeyHashBuilder;
use super::{Compression, TraceFormat};

/// Buffer size for both the compressed file and the decompressed stream: large enough that the
/// per-record `dyn` calls hit memory, not the kernel or the decoder, almost every time.
const BUF_SIZE: usize = 1 << 16;

/// The longest line a text trace may have, in bytes, its line end (`\n`, `\r\n`) not counted.
/// Real lines are under 100 bytes; the bound keeps a binary file read as text from being
/// slurped whole in search of a newline.
const MAX_LINE: usize = 4096;

/// How many decompressed bytes past an error in a compressed trace's content are decoded to
/// check whether the stream is corrupt ([`TraceReader::corruption_behind`]): 64 MiB, three
/// times the largest trace of `SOURCES.md` decompressed (21 MB), so that the check reaches
/// the end of any of those traces, where gzip's CRC (xz's check, zstd's checksum) is, and
/// many times the span in which a corrupt block fails on its own (a zstd block holds at most
/// 128 KiB, an LZMA2 chunk 2 MiB). It was 1 GiB: a bad line near the start of a large trace,
/// or of an endless stream, was reported only after decoding a gigabyte, half a minute of a
/// debug build's decoding, for a distinction the first few MiB of the check already draw.
/// For gzip and zstd the check ends sooner, where the member or frame ends.
const CORRUPTION_CHECK: u64 = 64 << 20;

/// The UTF-8 encoding of U+FEFF, which some editors write at the start of a text file.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Why a trace could not be read. Every variant names the file (or the label given to
/// [`TraceReader::from_reader`]) and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be opened.
    #[error("{}: cannot open trace: {source}", path.display())]
    Open {
        /// The trace file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// No rule of [`TraceFormat::detect`] matches the file name.
    #[error(
        "{}: cannot tell the trace format from the file name (expected *.lis, *oracleGeneral*, \
         scarab*, trace_vaultservice*, w<N>*, web<N>*, orm-*, *.trace or *.txt, optionally \
         followed by .gz, .xz or .zst); name the format explicitly",
        path.display()
    )]
    UnknownFormat {
        /// The trace file.
        path: PathBuf,
    },
    /// A format name that [`TraceFormat`]'s `FromStr` does not know.
    #[error(
        "unknown trace format {name:?}; expected one of: arc, i64be, i32be, oracle-general, lirs"
    )]
    UnknownFormatName {
        /// The name given.
        name: String,
    },
    /// The compression (told by the file name, or given) is gzip, xz or zstd, but the file
    /// does not start with that format's magic number: it is not such a file, or is empty.
    /// The message names the compression the file is of where its first bytes tell it, and
    /// says so of a file that ends inside the magic number.
    #[error(
        "{}: the {} is not {compression}: {}",
        path.display(),
        input(*stream),
        describe_head(*compression, head)
    )]
    NotCompressed {
        /// The trace file.
        path: PathBuf,
        /// Whether it was read as a stream ([`TraceReader::from_stream`], standard input),
        /// which the message calls so: "the file" named a file of a stream that has none.
        stream: bool,
        /// The compression the file was to be decoded with.
        compression: Compression,
        /// The file's first bytes (at most 6).
        head: Vec<u8>,
    },
    /// The file starts as a bzip2, lz4 or compress (`.Z`) stream or a zip archive, which the
    /// trace readers do not decode ([`TraceReader::open_format`] tells it by the first bytes, whatever the
    /// name).
    #[error(
        "{}: the {} is {found} (it starts with the bytes {}), which memocache cannot read: \
         decompress it first, or recompress it with gzip, xz or zstd",
        path.display(),
        input(*stream),
        hex(head)
    )]
    UnsupportedCompression {
        /// The trace file.
        path: PathBuf,
        /// Whether it was read as a stream, as for [`TraceError::NotCompressed`].
        stream: bool,
        /// What the file is: `bzip2-compressed`, `lz4-compressed`, `LZW-compressed by compress`
        /// or `a zip archive`.
        found: &'static str,
        /// The file's first bytes (at most 6).
        head: Vec<u8>,
    },
    /// The file or stream itself could not be read: an I/O error reading its first bytes,
    /// which tell its compression, before anything was decoded, or reading an uncompressed
    /// trace later on. The first was reported as a failure to read the stream of the
    /// compression the name gives (`x.zst: reading the zstd stream failed: Is a directory`),
    /// which reads as a corrupt zstd file; the second as "reading the uncompressed stream
    /// failed", as if something had been decoded.
    #[error("{}: cannot read trace: {source}", path.display())]
    Unreadable {
        /// The trace file.
        path: PathBuf,
        /// The error reported by the file or stream.
        source: io::Error,
    },
    /// Reading or decompressing a compressed stream failed: an I/O error, or a corrupt or
    /// truncated compressed stream (bad header, bad block, checksum mismatch, unexpected
    /// end), which the message says in a sentence with the gzip member or zstd frame (where
    /// there is one) and the compressed byte offset at which the decoder found it. A corrupt
    /// stream is reported so even where its garbage made a bad line (or record) first: after
    /// such an error the stream is decoded on, to the end of the gzip member or zstd frame
    /// and at most 64 MiB, to find its own.
    #[error("{}: reading the {compression} stream failed: {source}", path.display())]
    Read {
        /// The trace file.
        path: PathBuf,
        /// The compression being decoded.
        compression: Compression,
        /// The error reported by the file or the decoder.
        source: io::Error,
    },
    /// A binary trace ends inside a record.
    #[error(
        "{}: truncated {format} trace: the record at decompressed byte {offset} has {got} of \
         {expected} bytes",
        path.display()
    )]
    Truncated {
        /// The trace file.
        path: PathBuf,
        /// The record format.
        format: TraceFormat,
        /// Offset of the incomplete record in the decompressed stream.
        offset: u64,
        /// Bytes present.
        got: usize,
        /// Bytes a record has.
        expected: usize,
    },
    /// A trace read whole ([`Trace::load`], [`Trace::read`]) has more requests than the memory
    /// can hold.
    #[error(
        "{}: the trace does not fit in memory: it ran out after {requests} requests",
        path.display()
    )]
    TooLarge {
        /// The trace file.
        path: PathBuf,
        /// Requests read before the memory ran out.
        requests: u64,
    },
    /// A trace read with a limit ([`Trace::read_at_most`]) has more requests than it.
    #[error("{}: the trace has more than {limit} requests", path.display())]
    TooManyRequests {
        /// The trace file.
        path: PathBuf,
        /// The most requests the read would take.
        limit: u64,
    },
    /// A line of a text trace is not what its format says it should be.
    #[error("{}:{line}: bad {format} line: {reason}", path.display())]
    Parse {
        /// The trace file.
        path: PathBuf,
        /// The record format.
        format: TraceFormat,
        /// 1-based line number in the decompressed text.
        line: u64,
        /// What is wrong with the line.
        reason: String,
    },
    /// An ARC line stands for more requests than [`TraceReader::MAX_ARC_RUN`].
    #[error(
        "{}:{line}: bad arc line: a run of {count} blocks, more than the {} a line may have",
        path.display(),
        TraceReader::MAX_ARC_RUN
    )]
    ArcRunTooLong {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number in the decompressed text.
        line: u64,
        /// The block count the line gives.
        count: u64,
    },
}

/// A streaming reader of one trace: an iterator of keys, one per request.
///
/// The file is decompressed and parsed as it is iterated, in constant memory (a 64 KiB buffer
/// plus the decoder's window). Iteration yields `Err` at most once — for an unreadable,
/// corrupt or truncated stream — and then ends; it never panics on bad input.
///
/// ```no_run
/// use memocache::trace::TraceReader;
///
/// let mut requests = 0u64;
/// for key in TraceReader::open("../shared/traces/lirs/gli.trace.gz")? {
///     let _key: u64 = key?;
///     requests += 1;
/// }
/// println!("{requests} requests");
/// # Ok::<(), memocache::trace::TraceError>(())
/// ```
pub struct TraceReader {
    path: PathBuf,
    format: TraceFormat,
    layout: Layout,
    compression: Compression,
    source: Box<dyn BufRead + Send>,
    /// Bytes of the decompressed stream consumed so far (for truncation reports).
    offset: u64,
    /// Lines consumed so far (text formats).
    line: u64,
    line_buf: Vec<u8>,
    /// The rest of the current ARC run: keys `next..end` are still to be yielded.
    run: std::ops::Range<u64>,
    done: bool,
    /// How far the decoder's own checks have got, where it tells (gzip, zstd).
    units: Option<Arc<Units>>,
}

impl std::fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceReader")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("compression", &self.compression)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl TraceReader {
    /// The most blocks one ARC line (`start count ignore reqno`) may stand for, 65,536. A line
    /// of a few bytes stood for up to 2^32 requests, so a file of a few hundred bytes read
    /// whole ([`Trace::read`]) filled tens of GiB of keys, or was ended by the system when
    /// it had promised more memory than it had. Real traces' runs are far shorter (OLTP's are
    /// 1 block, P2's, P3's and P6's at most 128: one disk request), and this bound keeps a
    /// line's expansion (to 512 KiB of keys) near what a compressed stream's can be anyway.
    pub const MAX_ARC_RUN: u64 = 1 << 16;

    /// Opens a trace, telling its format from the file name ([`TraceFormat::detect`]) and its
    /// compression as [`TraceReader::open_format`] does: by the file's first bytes, then by
    /// its name.
    pub fn open(path: impl AsRef<Path>) -> Result<TraceReader, TraceError> {
        let path = path.as_ref();
        let format = TraceFormat::detect(path).ok_or_else(|| TraceError::UnknownFormat {
            path: path.to_owned(),
        })?;
        TraceReader::open_format(path, format)
    }

    /// Opens a trace of a known format whatever its name, telling its compression by what the
    /// file holds rather than what it is called:
    ///
    /// 1. a file that starts with the magic number of the compression its name gives
    ///    ([`Compression::from_path`]) is of that compression;
    /// 2. else one that starts with another's ([`Compression::from_magic`]) is of that one: a
    ///    trace read from a pipe (`/dev/stdin`) has no name to go by, and a gzip file named
    ///    `.trace` (or a zstd one named `.gz`) was read as a trace of garbage, which an
    ///    `i32be` or `i64be` trace takes without an error;
    /// 3. else one that starts as a bzip2, lz4 or compress stream or a zip archive, which no
    ///    decoder here reads, is refused ([`TraceError::UnsupportedCompression`]);
    /// 4. else one whose name gives a compression is refused
    ///    ([`TraceError::NotCompressed`]): its first bytes are of no known format, and read
    ///    as they are they may be garbage;
    /// 5. else the file is not compressed.
    ///
    /// The content goes first because a magic number is evidence and a name only a
    /// convention, and because a wrong guess cannot go unnoticed: the decoders verify their
    /// streams (gzip's CRC, xz's check, zstd's frame checksum where written), whereas bytes
    /// read as they are were never checked. [`TraceReader::open_as`] names the compression
    /// instead, for the rare uncompressed binary trace that starts like a compressed file.
    pub fn open_format(
        path: impl AsRef<Path>,
        format: TraceFormat,
    ) -> Result<TraceReader, TraceError> {
        let path = path.as_ref();
        let named = Compression::from_path(path);
        TraceReader::open_with(
            path,
            open_file(path)?,
            false,
            format,
            told(path, false, named),
        )
    }

    /// Opens a trace of a known format and compression, whatever its name and content: a
    /// file that does not start with the magic number of `compression` is refused
    /// ([`TraceError::NotCompressed`]), and one opened as [`Compression::None`] is read as
    /// it is, whatever it starts with.
    pub fn open_as(
        path: impl AsRef<Path>,
        format: TraceFormat,
        compression: Compression,
    ) -> Result<TraceReader, TraceError> {
        let path = path.as_ref();
        let file = open_file(path)?;
        TraceReader::open_with(path, file, false, format, given(path, false, compression))
    }

    /// Reads a trace from a stream that may be compressed, such as standard input, which a
    /// command cannot always open by a path (`/dev/stdin` of a socket cannot be opened, and
    /// its errors named a path the user never gave); `label` names it in errors. With
    /// `compression` `None`, the compression is told as [`TraceReader::open_format`] tells a
    /// file's, `label` standing for its name; with `Some`, as [`TraceReader::open_as`] is
    /// given it. [`TraceReader::from_reader`] reads a stream already decompressed.
    pub fn from_stream(
        reader: impl Read + Send + 'static,
        format: TraceFormat,
        label: impl Into<PathBuf>,
        compression: Option<Compression>,
    ) -> Result<TraceReader, TraceError> {
        let label = label.into();
        match compression {
            None => {
                let named = Compression::from_path(&label);
                TraceReader::open_with(&label, reader, true, format, told(&label, true, named))
            }
            Some(c) => TraceReader::open_with(&label, reader, true, format, given(&label, true, c)),
        }
    }

    /// Decodes `file` (read from `path`, or the stream it labels) with the compression
    /// `choose` picks from its first bytes (at most [`MAGIC_LEN`], fewer only in a shorter
    /// file); `stream` tells whether it is a stream, for a refusal.
    fn open_with(
        path: &Path,
        mut file: impl Read + Send + 'static,
        stream: bool,
        format: TraceFormat,
        choose: impl FnOnce(&[u8]) -> Result<Compression, TraceError>,
    ) -> Result<TraceReader, TraceError> {
        let read_err = |compression, source| TraceError::Read {
            path: path.to_owned(),
            compression,
            source,
        };
        // The magic number is checked up front: a decoder fed another format fails with its
        // own words ("unexpected end of file"), which do not say the file is of another kind.
        let mut head = [0u8; MAGIC_LEN];
        let head_len =
            read_head(&mut file, &mut head).map_err(|source| TraceError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
        let compression = choose(&head[..head_len])?;
        // The bytes read are put back in front of the rest: a pipe cannot seek back.
        let file = BufReader::with_capacity(
            BUF_SIZE,
            io::Cursor::new(head).take(head_len as u64).chain(file),
        );
        // gzip and zstd say when a member or frame has ended, verified, so that the check after
        // a bad line can stop there; xz's decoder does not tell where its blocks end.
        let units = Arc::new(Units::default());
        let (source, units): (Box<dyn BufRead + Send>, _) = match compression {
            Compression::None => (Box::new(file), None),
            Compression::Gzip => {
                let gzip = GzipReader::new(file, Arc::clone(&units));
                (
                    Box::new(BufReader::with_capacity(BUF_SIZE, gzip)),
                    Some(units),
                )
            }
            Compression::Xz => {
                let xz = XzReader::new(file);
                (Box::new(BufReader::with_capacity(BUF_SIZE, xz)), None)
            }
            Compression::Zstd => {
                // A file that starts with skippable frames is sniffed as zstd, but lz4 defines
                // the same frames: what follows them tells. An lz4 file whose first frame is
                // skippable was reported as a zstd stream that fails to read.
                let zstd = ZstdReader::new(file, Arc::clone(&units)).map_err(|e| {
                    match e.get_ref().and_then(|e| e.downcast_ref::<ForeignFrame>()) {
                        Some(foreign) => TraceError::UnsupportedCompression {
                            path: path.to_owned(),
                            stream,
                            found: foreign.found,
                            head: head[..head_len].to_vec(),
                        },
                        None => read_err(compression, e),
                    }
                })?;
                (
                    Box::new(BufReader::with_capacity(BUF_SIZE, zstd)),
                    Some(units),
                )
            }
        };
        let mut reader = TraceReader::new(path.to_owned(), format, compression, source);
        reader.units = units;
        Ok(reader)
    }

    /// Reads an already decompressed trace from any reader; `label` names it in errors.
    pub fn from_reader(
        reader: impl Read + Send + 'static,
        format: TraceFormat,
        label: impl Into<PathBuf>,
    ) -> TraceReader {
        let source = Box::new(BufReader::with_capacity(BUF_SIZE, reader));
        TraceReader::new(label.into(), format, Compression::None, source)
    }

    fn new(
        path: PathBuf,
        format: TraceFormat,
        compression: Compression,
        source: Box<dyn BufRead + Send>,
    ) -> TraceReader {
        TraceReader {
            path,
            format,
            layout: Layout::of(format),
            compression,
            source,
            offset: 0,
            line: 0,
            line_buf: Vec::new(),
            run: 0..0,
            done: false,
            units: None,
        }
    }

    /// The file (or label) being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record format being parsed.
    pub fn format(&self) -> TraceFormat {
        self.format
    }

    /// The compression being decoded: the one given to [`TraceReader::open_as`] (or
    /// [`TraceReader::from_stream`]), or the one [`TraceReader::open_format`] (or
    /// `from_stream`) found; [`Compression::None`] for [`TraceReader::from_reader`].
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// A failed read of the content: of a compressed trace, the decoder's (or the file's)
    /// error; of an uncompressed one, which has no decoder, an I/O error of the file or
    /// stream, as one of its first bytes is ("reading the uncompressed stream failed" read as
    /// if a decoder had found the bytes bad).
    fn read_error(&self, source: io::Error) -> TraceError {
        if self.compression == Compression::None {
            return TraceError::Unreadable {
                path: self.path.clone(),
                source,
            };
        }
        TraceError::Read {
            path: self.path.clone(),
            compression: self.compression,
            source,
        }
    }

    fn parse_error(&self, reason: String) -> TraceError {
        TraceError::Parse {
            path: self.path.clone(),
            format: self.format,
            line: self.line,
            reason,
        }
    }

    /// `found`, an error in a compressed trace's decompressed content (a bad line, an ARC run
    /// too long, a record cut short), or the decoder's own error ([`TraceError::Read`]) if the
    /// compressed stream turns out corrupt before the gzip member or zstd frame the content
    /// came from has ended, verified, and within the next [`CORRUPTION_CHECK`] bytes of
    /// content (xz, whose decoder does not say where its blocks end, is checked that far).
    ///
    /// A corrupt deflate (or LZMA) stream often decodes to garbage for a while, and gzip's
    /// CRC (xz's check, zstd's checksum) is verified only at the end of the member, block or
    /// frame: the garbage reached the parser first, and the corrupt file was reported as a
    /// bad trace line. Which came first also depended on how the bytes arrived (a slow pipe
    /// handed the decoder a few at a time, and the parser the text decoded so far), while a
    /// file read in large buffers could hit the decoder's error first. The stream is read
    /// on, and its own failure, the cause, is reported. The check is bounded so that a bad
    /// line in an endless stream (a generator piped through `gzip`) is still reported, and
    /// stops at the end of the member or frame: past it, the content was what the file
    /// holds, and the check decoded on through members (`bgzip` writes one every 64 KiB) or
    /// frames that could not change the verdict.
    fn corruption_behind(&mut self, found: TraceError) -> TraceError {
        let content_error = matches!(
            found,
            TraceError::Parse { .. }
                | TraceError::ArcRunTooLong { .. }
                | TraceError::Truncated { .. }
        );
        if !content_error || self.compression == Compression::None {
            return found;
        }
        // The error's content came from the member or frame being decoded when it was found
        // (a read hands out one member's or frame's bytes); once that has ended, verified,
        // the content was what the file holds, and an error after it is another unit's.
        let units = self.units.clone();
        let started = units
            .as_ref()
            .map(|units| units.started.load(Ordering::Relaxed));
        let verified = || {
            units
                .as_ref()
                .zip(started)
                .is_some_and(|(units, started)| units.ended.load(Ordering::Relaxed) >= started)
        };
        let mut left = CORRUPTION_CHECK;
        while left > 0 && !verified() {
            match self.source.fill_buf() {
                Ok([]) => break,
                Ok(decoded) => {
                    let take = decoded
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.source.consume(take);
                    left -= take as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if verified() => break,
                Err(e) => return self.read_error(e),
            }
        }
        found
    }

    /// The next key, `Ok(None)` at a clean end of the stream.
    fn next_key(&mut self) -> Result<Option<u64>, TraceError> {
        match self.layout {
            Layout::Binary { len, decode } => self.next_record(len, decode),
            Layout::Lirs | Layout::Arc => self.next_text_key(),
        }
    }

    fn next_record(
        &mut self,
        len: usize,
        decode: fn(&[u8]) -> u64,
    ) -> Result<Option<u64>, TraceError> {
        let mut record = [0u8; 24];
        let record = &mut record[..len];
        let mut got = 0;
        while got < len {
            match self.source.read(&mut record[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
        if got == 0 {
            return Ok(None);
        }
        if got < len {
            return Err(TraceError::Truncated {
                path: self.path.clone(),
                format: self.format,
                offset: self.offset,
                got,
                expected: len,
            });
        }
        self.offset += len as u64;
        Ok(Some(decode(record)))
    }

    fn next_text_key(&mut self) -> Result<Option<u64>, TraceError> {
        loop {
            if let Some(key) = self.run.next() {
                return Ok(Some(key));
            }
            self.line_buf.clear();
            // Room for the longest line and its line end, so that the end is not counted in
            // the line: a line of exactly `MAX_LINE` bytes was refused as longer.
            let n = (&mut self.source)
                .take(MAX_LINE as u64 + 2)
                .read_until(b'\n', &mut self.line_buf)
                .map_err(|e| self.read_error(e))?;
            if n == 0 {
                return Ok(None);
            }
            self.offset += n as u64;
            self.line += 1;
            let mut content = match self.line_buf.strip_suffix(b"\n") {
                Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
                None => &self.line_buf,
            };
            // Before the mark below is taken off: a line of more bytes was cut by the `take`.
            if content.len() > MAX_LINE {
                return Err(self.parse_error(format!("longer than {MAX_LINE} bytes")));
            }
            // A UTF-8 byte-order mark (Windows Notepad started files with one) marks the
            // encoding, not a key: it failed the first line as "\u{feff}5" is not a key.
            if self.line == 1 {
                content = content.strip_prefix(UTF8_BOM).unwrap_or(content);
            }
            let line = content.trim_ascii();
            if line.is_empty() {
                continue;
            }
            if matches!(self.layout, Layout::Arc) {
                let run = parse_arc_line(line).map_err(|reason| self.parse_error(reason))?;
                let count = run.end - run.start;
                if count > Self::MAX_ARC_RUN {
                    return Err(TraceError::ArcRunTooLong {
                        path: self.path.clone(),
                        line: self.line,
                        count,
                    });
                }
                self.run = run;
            } else if line != b"*" {
                return parse_key(line)
                    .map(Some)
                    .map_err(|reason| self.parse_error(reason));
            }
        }
    }
}

/// The longest magic number checked: xz's.
const MAGIC_LEN: usize = 6;

/// Opens the trace file at `path`.
fn open_file(path: &Path) -> Result<File, TraceError> {
    File::open(path).map_err(|source| TraceError::Open {
        path: path.to_owned(),
        source,
    })
}

/// The choice of [`TraceReader::open_format`]: the compression a file's first bytes tell,
/// that of its name (`named`) first; `path` names it in a refusal, `stream` tells whether it
/// is a stream.
fn told(
    path: &Path,
    stream: bool,
    named: Compression,
) -> impl FnOnce(&[u8]) -> Result<Compression, TraceError> + '_ {
    move |head| {
        let found = Compression::from_magic(head);
        if named != Compression::None && has_magic(named, head) {
            Ok(named)
        } else if found != Compression::None {
            Ok(found)
        } else if let Some(found) = unsupported_compression(head) {
            Err(TraceError::UnsupportedCompression {
                path: path.to_owned(),
                stream,
                found,
                head: head.to_vec(),
            })
        } else if named != Compression::None {
            Err(TraceError::NotCompressed {
                path: path.to_owned(),
                stream,
                compression: named,
                head: head.to_vec(),
            })
        } else {
            Ok(Compression::None)
        }
    }
}

/// The choice of [`TraceReader::open_as`]: `compression`, if the first bytes start as its
/// files do; `path` names the file in a refusal, `stream` tells whether it is a stream.
fn given(
    path: &Path,
    stream: bool,
    compression: Compression,
) -> impl FnOnce(&[u8]) -> Result<Compression, TraceError> + '_ {
    move |head| {
        if has_magic(compression, head) {
            Ok(compression)
        } else {
            Err(TraceError::NotCompressed {
                path: path.to_owned(),
                stream,
                compression,
                head: head.to_vec(),
            })
        }
    }
}

/// Reads up to `head.len()` bytes, fewer only at the end of the file; returns how many.
fn read_head(file: &mut impl Read, head: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The magic number a file of `compression` starts with (for zstd, that of a data frame);
/// empty for an uncompressed file.
fn magic(compression: Compression) -> &'static [u8] {
    match compression {
        Compression::None => &[],
        Compression::Gzip => &[0x1f, 0x8b],
        Compression::Xz => &[0xfd, b'7', b'z', b'X', b'Z', 0],
        Compression::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
    }
}

/// Whether `head`, a file's first bytes, starts as a file of `compression` must. Looser than
/// [`Compression::from_magic`] for gzip (any method and flags: a file named or opened as
/// gzip that has the two bytes is gzip, and the decoder says what is wrong with the rest).
fn has_magic(compression: Compression, head: &[u8]) -> bool {
    head.starts_with(magic(compression))
        // A zstd file may also start with a skippable frame, as every file `pzstd` writes
        // does.
        || (compression == Compression::Zstd && Compression::from_magic(head) == compression)
}

/// What a trace read is called in a message about its content: a stream read from standard
/// input (or any reader) is not a file.
fn input(stream: bool) -> &'static str {
    if stream { "stream" } else { "file" }
}

/// Bytes as lower-case hex pairs, space-separated.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What is wrong with a file's first bytes, for [`TraceError::NotCompressed`]: what they are
/// where they tell it (another compression, or one not decoded here), else that they are not
/// `compression`'s magic number.
fn describe_head(compression: Compression, head: &[u8]) -> String {
    if head.is_empty() {
        return "it is empty".to_owned();
    }
    // Fewer bytes than the magic number only at the end of the file: one cut inside it is
    // truncated, and "starts with 28 b5 2f, not with zstd's magic number 28 b5 2f fd" denied
    // what it does start with.
    let magic = magic(compression);
    if head.len() < magic.len() && magic.starts_with(head) {
        let bytes = if head.len() == 1 { "byte" } else { "bytes" };
        return format!(
            "it ends after {} {bytes} ({}), inside {compression}'s magic number {}",
            head.len(),
            hex(head),
            hex(magic)
        );
    }
    let found = match Compression::from_magic(head) {
        Compression::None => unsupported_compression(head).map(str::to_owned),
        found => Some(found.to_string()),
    };
    match found {
        Some(found) => format!("it is {found} (it starts with the bytes {})", hex(head)),
        None => format!(
            "it starts with the bytes {}, not with {compression}'s magic number {}",
            hex(head),
            hex(magic)
        ),
    }
}

/// How a format's bytes are cut into keys, fixed when the reader is made so that the per-key
/// path does not re-dispatch on the format.
#[derive(Clone, Copy)]
enum Layout {
    /// Fixed-size records; `decode` gets exactly `len` bytes.
    Binary {
        len: usize,
        decode: fn(&[u8]) -> u64,
    },
    /// One decimal key per line; `*` lines skipped.
    Lirs,
    /// `start count ...` lines, each a run of keys.
    Arc,
}

impl Layout {
    fn of(format: TraceFormat) -> Layout {
        match format {
            TraceFormat::Int64Be => Layout::Binary {
                len: 8,
                decode: |r| u64::from_be_bytes(field::<8>(r, 0)),
            },
            // Zero-extended: injective, so hit ratios equal those of Java's sign extension.
            TraceFormat::Int32Be => Layout::Binary {
                len: 4,
                decode: |r| u64::from(u32::from_be_bytes(field::<4>(r, 0))),
            },
            TraceFormat::OracleGeneral => Layout::Binary {
                len: 24,
                decode: |r| u64::from_le_bytes(field::<8>(r, 4)),
            },
            TraceFormat::LirsText => Layout::Lirs,
            TraceFormat::ArcLis => Layout::Arc,
        }
    }
}

/// The `N` bytes of `record` at `at`; `record` is always a full record of its layout, which
/// covers the field, so the copy cannot fail.
fn field<const N: usize>(record: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&record[at..at + N]);
    out
}

/// A decimal key. Signed values (Java `Long.parseLong` accepts them) are reinterpreted as u64.
fn parse_key(field: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(field).map_err(|_| "not UTF-8 text".to_owned())?;
    text.parse::<u64>()
        .or_else(|_| text.parse::<i64>().map(|k| k as u64))
        .map_err(|_| format!("{:?} is not a decimal integer key", truncate(text)))
}

/// `start count ignore reqno` → the keys `start..start+count`. The count must fit 32 bits (Caffeine
/// parses it as a Java `int`), so a corrupt line cannot demand 2^64 keys.
fn parse_arc_line(line: &[u8]) -> Result<std::ops::Range<u64>, String> {
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let (Some(start), Some(count)) = (fields.next(), fields.next()) else {
        return Err("expected `start count ignore reqno`".to_owned());
    };
    let start = parse_key(start)?;
    let count = parse_key(count)?;
    if count > u64::from(u32::MAX) {
        return Err(format!("block count {count} is not a 32-bit count"));
    }
    let end = start
        .checked_add(count)
        .ok_or_else(|| format!("block run {start} + {count} overflows u64"))?;
    Ok(start..end)
}

/// At most 40 characters of a bad field, so an error about a binary file read as text stays
/// one readable line.
fn truncate(text: &str) -> &str {
    text.char_indices()
        .nth(40)
        .map_or(text, |(i, _)| &text[..i])
}

impl Iterator for TraceReader {
    type Item = Result<u64, TraceError>;

    fn next(&mut self) -> Option<Result<u64, TraceError>> {
        if self.done {
            return None;
        }
        match self.next_key() {
            Ok(Some(key)) => Some(Ok(key)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(self.corruption_behind(e)))
            }
        }
    }
}

impl std::iter::FusedIterator for TraceReader {}

/// A whole trace in memory, as the simulators need it (OPT looks into the future).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    keys: Vec<u64>,
    unique: usize,
}

impl Trace {
    /// Reads a whole trace ([`TraceReader::open`], then [`Trace::read`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Trace, TraceError> {
        Trace::read(TraceReader::open(path)?, |_| {})
    }

    /// Reads every key of `reader`, calling `progress` with the number read so far every
    /// 65,536 keys. When the allocator refuses to grow the key list, the result is
    /// [`TraceError::TooLarge`], not an abort (a system that overcommits memory may instead
    /// end the process once the pages it promised run out; `ulimit -v` makes it refuse, and
    /// [`Trace::read_at_most`] stops at a number of requests the caller chooses).
    pub fn read(reader: TraceReader, progress: impl FnMut(usize)) -> Result<Trace, TraceError> {
        Trace::read_at_most(reader, usize::MAX, progress)
    }

    /// [`Trace::read`], refusing a trace of more than `max_requests` requests with
    /// [`TraceError::TooManyRequests`] as soon as it has read one more. A compressed stream or
    /// ARC runs of a few bytes can stand for more requests than the memory holds; a limit
    /// sized to the memory ends the read before the system has to.
    pub fn read_at_most(
        reader: TraceReader,
        max_requests: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Trace, TraceError> {
        const STEP: usize = 1 << 16;
        let path = reader.path().to_owned();
        let mut keys: Vec<u64> = Vec::new();
        for key in reader {
            let key = key?;
            if keys.len() == max_requests {
                return Err(TraceError::TooManyRequests {
                    path,
                    limit: max_requests as u64,
                });
            }
            // A small file can still stand for more keys than fit (ARC lines of long runs, a
            // compressed stream of repeats), and `push` or `collect` aborts the process when an
            // allocation fails: a 17-byte file ended `Trace::load` in "memory allocation of …
            // bytes failed" and SIGABRT. Growing by a fallible reservation (doubling, as `push`
            // does) makes that an error.
            if keys.len() == keys.capacity() {
                keys.try_reserve(keys.len().max(STEP))
                    .map_err(|_| TraceError::TooLarge {
                        path: path.clone(),
                        requests: keys.len() as u64,
                    })?;
            }
            keys.push(key);
            if keys.len().is_multiple_of(STEP) {
                progress(keys.len());
            }
        }
        let unique = count_unique(&keys).map_err(|_| TraceError::TooLarge {
            path,
            requests: keys.len() as u64,
        })?;
        Ok(Trace { keys, unique })
    }

    /// A trace made of the given requests.
    pub fn from_keys(keys: Vec<u64>) -> Trace {
        let unique = match count_unique(&keys) {
            Ok(unique) => unique,
            // As a `collect` into the set would: the process ends.
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<u64>()),
        };
        Trace { keys, unique }
    }

    /// The requests, in order.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// The number of requests.
    pub fn requests(&self) -> usize {
        self.keys.len()
    }

    /// The number of distinct keys.
    pub fn unique(&self) -> usize {
        self.unique
    }
}

/// The number of distinct keys in `keys`. The set grows with the keys it finds, fallibly: a
/// `collect` sized it for every request (the iterator's length), so 65 M requests of 65,536
/// keys asked for a 1.2 GB table at once, and a refusal aborted the process after the trace
/// had been read whole.
fn count_unique(keys: &[u64]) -> Result<usize, std::collections::TryReserveError> {
    let mut unique: HashSet<u64, KeyHashBuilder> = HashSet::default();
    for &key in keys {
        if unique.len() == unique.capacity() {
            unique.try_reserve(unique.len().max(1 << 10))?;
        }
        unique.insert(key);
    }
    Ok(unique.len())
}

/// How far a compressed stream's own checks have got: counted by its decoder, read by its
/// [`TraceReader`] after a bad line ([`TraceReader::corruption_behind`]). Shared (atomics in
/// an `Arc`) because the decoder sits behind a `Box<dyn BufRead + Send>`.
#[derive(Debug, Default)]
struct Units {
    /// gzip members or zstd data frames started.
    started: AtomicU64,
    /// Of those, the ones decoded to their end and verified: gzip's CRC-32 and length, zstd's
    /// blocks and checksum (where the frame has one).
    ended: AtomicU64,
}

/// gzip through `flate2`, member after member (`gzip a b > c` concatenations are valid gzip
/// files), skipping zero bytes after a member, as gzip(1) and Python's `gzip` do: tape blocks
/// and `dd` pad a file with them. `flate2`'s `MultiGzDecoder` took them for the header of
/// another member, failing the read with "invalid gzip header", and failed any other bytes
/// after the last member with "unexpected end of file" if there were fewer than a header's
/// ten; such bytes are now refused saying what they are.
struct GzipReader<R: BufRead> {
    /// The member being read; `None` once the input is done.
    member: Option<flate2::bufread::GzDecoder<Counted<R>>>,
    /// Members started so far, for errors.
    members: u64,
    /// Members started and ended, for [`TraceReader::corruption_behind`].
    units: Arc<Units>,
}

impl<R: BufRead> GzipReader<R> {
    /// `source` starts with a gzip magic number: [`TraceReader::open_with`] has checked it.
    fn new(source: R, units: Arc<Units>) -> GzipReader<R> {
        units.started.fetch_add(1, Ordering::Relaxed);
        let source = Counted::new(source);
        GzipReader {
            member: Some(flate2::bufread::GzDecoder::new(source)),
            members: 1,
            units,
        }
    }
}

impl<R: BufRead> Read for GzipReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(mut member) = self.member.take() else {
                return Ok(0);
            };
            match member.read(buf) {
                Ok(0) => {}
                Err(e) => {
                    // The file's own error (an I/O error) is passed on as it is; only the
                    // decoder's are made sentences.
                    let source = member.get_ref();
                    let e = if source.failed {
                        e
                    } else {
                        gzip_error(e, self.members, source.position)
                    };
                    self.member = Some(member);
                    return Err(e);
                }
                result => {
                    self.member = Some(member);
                    return result;
                }
            }
            // The member ended, its CRC and length checked; the decoder read nothing past it.
            self.units.ended.fetch_add(1, Ordering::Relaxed);
            let mut source = member.into_inner();
            let next = loop {
                let rest = source.fill_buf()?;
                let zeros = rest.iter().take_while(|&&b| b == 0).count();
                if zeros == 0 {
                    break rest;
                }
                source.consume(zeros);
            };
            if next.is_empty() {
                return Ok(0);
            }
            if next[0] != magic(Compression::Gzip)[0] {
                // Gathered up to a magic number's length, not just what the buffer holds, so
                // that the message does not depend on how the input arrived (a pipe may hand
                // over one byte at a time).
                let mut shown = Vec::with_capacity(MAGIC_LEN);
                while shown.len() < MAGIC_LEN {
                    let rest = source.fill_buf()?;
                    let take = rest.len().min(MAGIC_LEN - shown.len());
                    if take == 0 {
                        break;
                    }
                    shown.extend_from_slice(&rest[..take]);
                    source.consume(take);
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "bytes that are not a gzip member follow its member {} (they start \
                         with {})",
                        self.members,
                        hex(&shown)
                    ),
                ));
            }
            self.members += 1;
            self.units.started.fetch_add(1, Ordering::Relaxed);
            self.member = Some(flate2::bufread::GzDecoder::new(source));
        }
    }
}

/// Zstandard through `ruzstd`, over every frame of the file (the `zstd` tool writes several
/// for large or concatenated inputs), verifying each frame's content checksum when present
/// (`ruzstd`'s own `StreamingDecoder` reads one frame and leaves the checksum to the caller).
/// Skippable frames, which carry no data (`pzstd` starts every file with one), are skipped.
struct ZstdReader<R: BufRead> {
    source: Counted<R>,
    frame: FrameDecoder,
    /// Whether a data frame has been started and not yet checked and finished.
    in_frame: bool,
    /// Frames (data or skippable) started so far, for errors.
    frames: u64,
    /// Data frames started and ended, for [`TraceReader::corruption_behind`].
    units: Arc<Units>,
}

impl<R: BufRead> ZstdReader<R> {
    /// `source` is not empty: [`TraceReader::open_with`] has checked its magic number.
    fn new(source: R, units: Arc<Units>) -> io::Result<ZstdReader<R>> {
        let mut reader = ZstdReader {
            source: Counted::new(source),
            frame: FrameDecoder::new(),
            in_frame: false,
            frames: 0,
            units,
        };
        reader.in_frame = reader.next_frame()?;
        Ok(reader)
    }

    /// Starts the next data frame, skipping skippable frames; `false` at the end of the
    /// input.
    fn next_frame(&mut self) -> io::Result<bool> {
        let started = next_zstd_frame(&mut self.frame, &mut self.source, &mut self.frames)?;
        if started {
            self.units.started.fetch_add(1, Ordering::Relaxed);
        }
        Ok(started)
    }
}

/// Starts the next data frame of `source`, skipping skippable frames; `false` at the end of
/// the input. `frames` counts the frames started.
fn next_zstd_frame(
    frame: &mut FrameDecoder,
    source: &mut Counted<impl BufRead>,
    frames: &mut u64,
) -> io::Result<bool> {
    loop {
        if source.fill_buf()?.is_empty() {
            return Ok(false);
        }
        *frames += 1;
        let at = source.position;
        match frame.reset(&mut *source) {
            Ok(()) => return Ok(true),
            // Not the first frame: the file's magic number was checked at open.
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::BadMagicNumber(
                magic,
            ))) => {
                let bytes = magic.to_le_bytes();
                if let Some(found) = unsupported_compression(&bytes) {
                    let after = *frames - 1;
                    let foreign = ForeignFrame {
                        found,
                        after,
                        at,
                        bytes,
                    };
                    return Err(io::Error::new(io::ErrorKind::InvalidData, foreign));
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "bytes that are not a zstd frame follow its frame {} (they start with \
                         {})",
                        *frames - 1,
                        hex(&magic.to_le_bytes())
                    ),
                ));
            }
            // The frame's magic and length are read; its content is `length` opaque bytes.
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                let length = u64::from(length);
                let skipped = io::copy(&mut (&mut *source).take(length), &mut io::sink())?;
                if skipped < length {
                    return Err(decoder_error(
                        &format!(
                            "the stream ends early in zstd frame {frames} (a skippable frame \
                             of {length} bytes, cut after {skipped})"
                        ),
                        source.position,
                        "",
                    ));
                }
            }
            Err(e) => return Err(zstd_error(&e, at, *frames)),
        }
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.frame.can_collect() > 0 {
                return self.frame.read(buf);
            }
            if self.in_frame {
                if !self.frame.is_finished() {
                    // A source that ends mid-frame makes this fail, so the loop always
                    // progresses.
                    let at = self.source.position;
                    self.frame
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(|e| zstd_error(&e, at, self.frames))?;
                    continue;
                }
                // The frame is decoded and drained, so the calculated checksum is final.
                if let (Some(stored), Some(computed)) = (
                    self.frame.get_checksum_from_data(),
                    self.frame.get_calculated_checksum(),
                ) && stored != computed
                {
                    return Err(decoder_error(
                        &format!(
                            "the checksum of zstd frame {} does not match its data",
                            self.frames
                        ),
                        self.source.position,
                        &format!(" (stored {stored:#010x}, computed {computed:#010x})"),
                    ));
                }
                self.in_frame = false;
                self.units.ended.fetch_add(1, Ordering::Relaxed);
            }
            if !self.next_frame()? {
                return Ok(0);
            }
            self.in_frame = true;
        }
    }
}

/// A frame of a format with no decoder here (lz4's, say) after zstd frames: after skippable
/// frames only, which lz4 defines too, the file is of that format, and
/// [`TraceReader::open_with`] refuses it as such.
#[derive(Debug, thiserror::Error)]
#[error(
    "the data after its zstd frame {after}, from compressed byte {at}, is {found} (it starts \
     with the bytes {}), which memocache cannot read",
    hex(bytes)
)]
struct ForeignFrame {
    /// What the frame is, as [`unsupported_compression`] names it.
    found: &'static str,
    /// The frames before it.
    after: u64,
    /// Its offset in the compressed stream.
    at: u64,
    /// Its magic number.
    bytes: [u8; 4],
}

/// A reader that counts the bytes taken from it, so that a decoder's error can say where in
/// the compressed stream it is, and notes whether it failed itself, so that its own error (an
/// I/O error of the file or stream) is told from the decoder's.
struct Counted<R> {
    inner: R,
    /// Bytes read or consumed so far.
    position: u64,
    /// Whether a read of `inner` has failed (other than by an interruption).
    failed: bool,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Counted<R> {
        Counted {
            inner,
            position: 0,
            failed: false,
        }
    }

    /// Notes `e`, an error of `inner`.
    fn note(&mut self, e: io::Error) -> io::Error {
        self.failed |= e.kind() != io::ErrorKind::Interrupted;
        e
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| self.note(e))?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // Twice where it fails: the borrow of a buffer returned cannot cover the noting.
        if let Err(e) = self.inner.fill_buf() {
            return Err(self.note(e));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
        self.position += amount as u64;
    }
}

/// `ruzstd`'s error `e`, met decoding from compressed byte `at` in frame `frame`, as a
/// sentence. `ruzstd`'s own `Display` prints most nested errors as debugging output
/// (`Failed to parse block header: DecodeSequenceError(ExtraBits { bits_remaining: 3 })`,
/// under the wrong one of header and body), which reached the user as it was. This says
/// which part of the stream is bad, where, and the innermost cause where that is a sentence.
fn zstd_error(e: &FrameDecoderError, at: u64, frame: u64) -> io::Error {
    let mut innermost: &dyn std::error::Error = e;
    let mut ends_early = false;
    while let Some(cause) = innermost.source() {
        innermost = cause;
        ends_early |= cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof);
    }
    let what = match e {
        FrameDecoderError::WindowSizeTooBig { requested, max } => format!(
            "the frame needs a window of {requested} bytes, more than the {max} the decoder \
             allows,"
        ),
        FrameDecoderError::DictNotProvided { dict_id } => {
            format!("the frame needs dictionary {dict_id:#x}, which memocache does not have,")
        }
        _ if ends_early => "the stream ends early".to_owned(),
        FrameDecoderError::ReadFrameHeaderError(_)
        | FrameDecoderError::FrameHeaderError(_)
        | FrameDecoderError::FailedToInitialize(_) => "the frame header is corrupt".to_owned(),
        FrameDecoderError::FailedToReadBlockHeader(_) => "a block header is corrupt".to_owned(),
        FrameDecoderError::FailedToReadBlockBody(_) => "a block is corrupt".to_owned(),
        FrameDecoderError::FailedToReadChecksum(_) => "the frame checksum is cut".to_owned(),
        _ => "the decoder failed".to_owned(),
    };
    // Only a cause that reads as words: some of `ruzstd`'s are a bare number or a type name.
    let cause = innermost.to_string();
    let detail =
        if !std::ptr::addr_eq(innermost, e) && cause.contains(' ') && !cause.contains(['{', '(']) {
            format!(" ({cause})")
        } else {
            String::new()
        };
    decoder_error(&format!("{what} in zstd frame {frame}"), at, &detail)
}

/// A decoder's error as the sentence every compression's is: what is wrong and where (`what`,
/// naming the member, frame or stream), the compressed byte offset `at` at which the decoder
/// found it, and any `detail` (a parenthesis, or empty). [`TraceError::Read`] puts the file
/// in front.
fn decoder_error(what: &str, at: u64, detail: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} at compressed byte {at}{detail}"),
    )
}

/// `flate2`'s error `e`, met in gzip member `member` when the decoder had taken `at` bytes of
/// the compressed stream, as a sentence. `flate2`'s words ("corrupt deflate stream",
/// "invalid gzip header", a bare "unexpected end of file") said neither where nor, for the
/// last, in what. `flate2` has no error type to match, only these messages; one it may add
/// later is still placed in its member.
fn gzip_error(e: io::Error, member: u64, at: u64) -> io::Error {
    let message = e.to_string();
    let what = if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("the stream ends early in gzip member {member}")
    } else if message.contains("header") {
        format!("the header of gzip member {member} is corrupt")
    } else if message.contains("checksum") {
        // flate2 says so of a CRC-32 or a length that does not match the data.
        format!("the CRC-32 or length of gzip member {member} does not match its data")
    } else if message.contains("deflate") {
        format!("the compressed data of gzip member {member} is corrupt")
    } else {
        format!("the decoder failed in gzip member {member}")
    };
    decoder_error(&what, at, "")
}

/// xz through `lzma-rust2`, whose errors are made sentences by [`xz_error`].
struct XzReader<R: Read> {
    inner: lzma_rust2::XzReader<Counted<R>>,
}

impl<R: Read> XzReader<R> {
    /// `source` starts with an xz magic number: [`TraceReader::open_with`] has checked it.
    fn new(source: R) -> XzReader<R> {
        let source = Counted::new(source);
        XzReader {
            // Concatenated streams are valid xz files, as `xz` reads them.
            inner: lzma_rust2::XzReader::new(source, true),
        }
    }
}

impl<R: Read> Read for XzReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // `inner()` reaches the source in every state the decoder is left in: it swaps its
        // block reader only where the swap cannot fail. As for gzip, the file's own error is
        // passed on as it is.
        self.inner.read(buf).map_err(|e| {
            let source = self.inner.inner();
            if source.failed {
                e
            } else {
                xz_error(e, source.position)
            }
        })
    }
}

/// `lzma-rust2`'s error `e`, met when the decoder had taken `at` bytes of the compressed
/// stream, as a sentence. Its words are the decoder's internals ("dist overflow", "rc not
/// finished or lz has pending", "first byte is 0", and "failed to fill whole buffer" for a
/// stream cut short), which say nothing to a user. Like `flate2` it has only messages to
/// match; one not matched here is still called corrupt data, with its offset.
fn xz_error(e: io::Error, at: u64) -> io::Error {
    let message = e.to_string();
    let has = |word: &str| message.contains(word);
    let what = if e.kind() == io::ErrorKind::UnexpectedEof
        || has("unexpected end")
        || has("truncated")
        || has("incomplete")
        || has("too short")
    {
        "the xz stream ends early"
    } else if e.kind() == io::ErrorKind::Unsupported || has("nsupported") {
        "the xz stream uses a filter or check the decoder does not support"
    } else if e.kind() == io::ErrorKind::OutOfMemory {
        "the xz stream needs more memory than the decoder may use"
    } else if has("stream header") || has("stream flags") || has("magic") {
        "an xz stream header is corrupt"
    } else if has("block header") || has("filter") || has("properties") {
        "an xz block header is corrupt"
    } else if has("block checksum") {
        "the check of an xz block does not match its data"
    } else if has("index") || has("number of records") {
        "an xz index is corrupt"
    } else if has("footer") {
        "an xz stream footer is corrupt"
    } else if has("padding") || has("after stream") {
        "the padding after an xz block or stream is corrupt"
    } else {
        "the xz compressed data is corrupt"
    };
    decoder_error(what, at, "")
}
