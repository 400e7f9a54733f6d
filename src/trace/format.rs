//! Trace formats and compressions, and how they are told apart from a file name.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::TraceError;

/// How the bytes of a trace file are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is.
    None,
    /// gzip (`.gz`), decoded by `flate2` (pure-Rust miniz_oxide backend): every member of a
    /// concatenation, and zero bytes after a member skipped, as gzip(1) skips them.
    Gzip,
    /// xz (`.xz`), decoded by `lzma-rust2` (pure Rust); the stream's integrity check is verified.
    Xz,
    /// Zstandard (`.zst`, `.zstd`), decoded by `ruzstd` (pure Rust); frame checksums, where the
    /// encoder wrote them, are verified.
    Zstd,
}

impl Compression {
    /// The compression named by the last extension of `path` (`.gz`, `.xz`, `.zst`/`.zstd`,
    /// in any case: a file copied from a system that upper-cases names is still gzip); any
    /// other name is [`Compression::None`].
    pub fn from_path(path: &Path) -> Compression {
        let extension = path.extension().and_then(|e| e.to_str());
        match extension.map(str::to_ascii_lowercase).as_deref() {
            Some("gz") => Compression::Gzip,
            Some("xz") => Compression::Xz,
            Some("zst" | "zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// The compression whose magic number `head`, a file's first bytes (6 are enough), starts
    /// with; [`Compression::None`] when it starts with none of them. This is what
    /// [`TraceReader::open`](super::TraceReader::open) and
    /// [`open_format`](super::TraceReader::open_format) go by before the name.
    ///
    /// * gzip: `1f 8b`, then `08` (deflate, the only method defined) and a flag byte whose
    ///   three reserved bits are clear. The two bytes alone would take one uncompressed
    ///   binary trace of random keys in 65,536 for gzip; with the method and flags it is one
    ///   in 2^27.
    /// * xz: `fd 37 7a 58 5a 00`.
    /// * zstd: a data frame's `28 b5 2f fd`, or a skippable frame's `5? 2a 4d 18` (`pzstd`
    ///   starts every file with one).
    ///
    /// No text trace can start with any of these (they are not digits), and a wrong guess on
    /// a binary one fails loudly, since the decoders verify their streams.
    pub fn from_magic(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, 0x08, flags, ..] if flags & 0xe0 == 0 => Compression::Gzip,
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] | [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// What `head`, a file's first bytes, starts as if it is a compressed stream or an archive
/// that [`Compression`] has no decoder for: bzip2 (`BZh` and the block size, `1` to `9`), an
/// lz4 frame (`04 22 4d 18`, or the legacy frame's `02 21 4c 18` that `lz4 -l` writes),
/// compress's `.Z` (`1f 9d` and a flag byte: two reserved bits clear, a largest code width of
/// 9 to 16 bits) or a zip archive (`PK 03 04`), for [`TraceError::UnsupportedCompression`].
/// Read as a binary trace, such a file gave keys of garbage and no error.
pub(super) fn unsupported_compression(head: &[u8]) -> Option<&'static str> {
    match head {
        [b'B', b'Z', b'h', b'1'..=b'9', ..] => Some("bzip2-compressed"),
        [0x04, 0x22, 0x4d, 0x18, ..] | [0x02, 0x21, 0x4c, 0x18, ..] => Some("lz4-compressed"),
        [0x1f, 0x9d, flags, ..] if flags & 0x60 == 0 && (9..=16).contains(&(flags & 0x1f)) => {
            Some("LZW-compressed by compress")
        }
        [b'P', b'K', 0x03, 0x04, ..] => Some("a zip archive"),
        _ => None,
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        })
    }
}

/// The record layout of a (decompressed) trace: how its bytes become keys.
///
/// Every format yields one `u64` key per request. Signed keys are reinterpreted bit for bit
/// (`-1` becomes `u64::MAX`), which keeps distinct keys distinct, so hit ratios are unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceFormat {
    /// ARC traces (Megiddo & Modha, FAST'03), text: each line `start count ignore reqno` stands
    /// for the `count` consecutive blocks `start, start+1, …, start+count-1`, as Caffeine's
    /// `ArcTraceReader` and mokabench read them. Only the first two fields are used. A UTF-8
    /// byte-order mark at the start of the file is skipped, as for
    /// [`LirsText`](TraceFormat::LirsText).
    ArcLis,
    /// A sequence of big-endian 64-bit integers, one key each (Java `DataInputStream.readLong`:
    /// scarab, corda).
    Int64Be,
    /// A sequence of big-endian 32-bit integers, one key each (Java `readInt`: cache2k traces,
    /// CloudPhysics `w106`).
    Int32Be,
    /// libCacheSim *oracleGeneral*: packed little-endian 24-byte records
    /// `{u32 timestamp; u64 obj_id; u32 obj_size; i64 next_access_vtime}`; the key is `obj_id`.
    OracleGeneral,
    /// LIRS text traces: one decimal key per line; empty lines and `*` lines (LIRS checkpoints)
    /// are skipped, CRLF line ends are accepted, and so is a UTF-8 byte-order mark at the start
    /// of the file.
    LirsText,
}

impl TraceFormat {
    /// Every format, in the order [`TraceFormat::name`] documents them.
    pub const ALL: [TraceFormat; 5] = [
        TraceFormat::ArcLis,
        TraceFormat::Int64Be,
        TraceFormat::Int32Be,
        TraceFormat::OracleGeneral,
        TraceFormat::LirsText,
    ];

    /// The short name used by [`FromStr`] and [`fmt::Display`]: `arc`, `i64be`, `i32be`,
    /// `oracle-general`, `lirs`.
    pub fn name(self) -> &'static str {
        match self {
            TraceFormat::ArcLis => "arc",
            TraceFormat::Int64Be => "i64be",
            TraceFormat::Int32Be => "i32be",
            TraceFormat::OracleGeneral => "oracle-general",
            TraceFormat::LirsText => "lirs",
        }
    }

    /// Tells the format from the file name (and, for the binary families, its parent folder),
    /// after the compression extension is stripped. The rules, first match wins:
    ///
    /// 1. `*.lis`: [`ArcLis`](TraceFormat::ArcLis);
    /// 2. contains `oracleGeneral`: [`OracleGeneral`](TraceFormat::OracleGeneral);
    /// 3. starts with `scarab` or `trace_vaultservice`, or in a folder `scarab` / `corda`:
    ///    [`Int64Be`](TraceFormat::Int64Be);
    /// 4. `w<digits>*`, `web<digits>*`, `orm-*`, or in a folder `cache2k` / `cloud_physics`:
    ///    [`Int32Be`](TraceFormat::Int32Be);
    /// 5. any other `*.trace` or `*.txt`: [`LirsText`](TraceFormat::LirsText).
    ///
    /// The extensions `.lis`, `.trace` and `.txt` match in any case, as the compression's do;
    /// the names and folders of rules 2 to 4 only in the case shown.
    ///
    /// Binary traces have no header, so a name is all there is to go on; the fallback to text is
    /// the safe one, because binary bytes fail to parse as decimal lines (a loud error) whereas
    /// text read as binary would give silent garbage. Returns `None` when no rule matches.
    pub fn detect(path: &Path) -> Option<TraceFormat> {
        // Lossily: every rule is about ASCII text, which a byte that is not UTF-8 (a Latin-1
        // name on Linux) cannot be part of, so replacing such bytes changes no match. With
        // `to_str`, `caf\xe9.trace` was "cannot tell the trace format".
        let name = path.file_name()?.to_string_lossy();
        let inner = match Compression::from_path(path) {
            Compression::None => name,
            // The extension is ASCII and present, so the stem is `name` minus ".ext".
            _ => path.file_stem()?.to_string_lossy(),
        };
        let inner = inner.as_ref();
        let folder = path
            .parent()
            .and_then(Path::file_name)
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        let folder = folder.as_ref();
        // The extensions in any case, as the compression's are (`OLTP.LIS.ZST` from a system
        // that upper-cases names was not told). The names of the binary rules keep theirs:
        // `W1.trace` is not a cache2k trace by its name, and text read as binary gives
        // silent garbage where a wrong guess of text fails loudly.
        let ends_with = |suffix: &str| {
            inner.len() >= suffix.len()
                && inner.as_bytes()[inner.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        };
        if ends_with(".lis") {
            Some(TraceFormat::ArcLis)
        } else if inner.contains("oracleGeneral") {
            Some(TraceFormat::OracleGeneral)
        } else if inner.starts_with("scarab")
            || inner.starts_with("trace_vaultservice")
            || matches!(folder, "scarab" | "corda")
        {
            Some(TraceFormat::Int64Be)
        } else if starts_with_digits_after(inner, "w")
            || starts_with_digits_after(inner, "web")
            || inner.starts_with("orm-")
            || matches!(folder, "cache2k" | "cloud_physics")
        {
            Some(TraceFormat::Int32Be)
        } else if ends_with(".trace") || ends_with(".txt") {
            Some(TraceFormat::LirsText)
        } else {
            None
        }
    }
}

/// `name` is `prefix` followed by at least one ASCII digit (`w106`, `web07`, but not `web`).
fn starts_with_digits_after(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.bytes().next())
        .is_some_and(|b| b.is_ascii_digit())
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TraceFormat {
    type Err = TraceError;

    /// Parses a [`TraceFormat::name`], case-insensitively.
    fn from_str(s: &str) -> Result<TraceFormat, TraceError> {
        TraceFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| TraceError::UnknownFormatName { name: s.to_owned() })
    }
}
