//! [`ChunkSize`] (the seed's 10–25 MB value object) and [`ChunkPlan`] (everything that decides
//! where chunk boundaries fall).

use std::time::Duration;

/// One mebibyte; the seed's "MB" is `1024 * 1024` bytes.
const MIB: u64 = 1024 * 1024;

/// Why a chunk size or a plan was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkSizeError {
    /// [`ChunkSize::new`] was given a size outside 10–25 MB.
    #[error(
        "chunk size must be between {min} and {max} MB, got {mb} MB",
        min = ChunkSize::MIN_MB,
        max = ChunkSize::MAX_MB
    )]
    OutOfRange {
        /// The size asked for, in MB.
        mb: u32,
    },
    /// [`ChunkPlan::with_chunk_bytes`] was given zero or more than 25 MB.
    #[error(
        "a chunk byte size must be between 1 and {max} bytes (25 MB), got {bytes}",
        max = ChunkSize::MAX.to_bytes()
    )]
    InvalidBytes {
        /// The size asked for, in bytes.
        bytes: u64,
    },
}

/// The size of a chunk in MB: the seed's `ChunkSize`, 10 to 25 MB.
///
/// The 25 MB ceiling is the upload limit of speech-to-text APIs: every chunk file the splitter
/// produces — header and overlap included — is at most this many bytes.
///
/// The bounds are constants. In the seed `MIN_MB` and `MAX_MB` were dataclass fields (no
/// `ClassVar`), so its constructor also took other bounds, and they took part in equality.
///
/// ```
/// use memocache::ChunkSize;
/// assert_eq!(ChunkSize::new(12)?.to_bytes(), 12 * 1024 * 1024);
/// assert!(ChunkSize::new(9).is_err() && ChunkSize::new(26).is_err());
/// assert_eq!(ChunkSize::from_file_size(49).value_mb(), 15);
/// assert_eq!(ChunkSize::from_file_size(50).value_mb(), 20);
/// assert_eq!(ChunkSize::from_file_size(100).value_mb(), 25);
/// # Ok::<(), memocache::chunk::ChunkSizeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkSize(u32);

impl ChunkSize {
    /// The smallest size, in MB.
    pub const MIN_MB: u32 = 10;
    /// The largest size, in MB: the speech-to-text upload limit.
    pub const MAX_MB: u32 = 25;
    /// The largest chunk size.
    pub const MAX: ChunkSize = ChunkSize(Self::MAX_MB);

    /// A size of `mb` MB; outside 10–25 is an error.
    pub fn new(mb: u32) -> Result<ChunkSize, ChunkSizeError> {
        if (Self::MIN_MB..=Self::MAX_MB).contains(&mb) {
            Ok(ChunkSize(mb))
        } else {
            Err(ChunkSizeError::OutOfRange { mb })
        }
    }

    /// The seed's choice for a file of `file_size_mb` MB: 15 MB below 50 MB, 20 MB below
    /// 100 MB, 25 MB from 100 MB on (larger files get larger chunks, so fewer uploads).
    pub fn from_file_size(file_size_mb: u64) -> ChunkSize {
        match file_size_mb {
            0..50 => ChunkSize(15),
            50..100 => ChunkSize(20),
            _ => ChunkSize(25),
        }
    }

    /// The size in MB.
    pub fn value_mb(self) -> u32 {
        self.0
    }

    /// The size in bytes (`MB * 1024 * 1024`).
    pub fn to_bytes(self) -> u64 {
        u64::from(self.0) * MIB
    }
}

/// How an input is recognised, and so how it is split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputFormat {
    /// A `RIFF`/`WAVE` header selects WAV splitting; anything else is split on byte boundaries.
    #[default]
    Auto,
    /// Always split on byte boundaries, even a WAV file.
    Bytes,
    /// Headerless PCM with this layout: split on sample-frame boundaries, and every chunk gets
    /// a WAV header.
    RawPcm(PcmSpec),
}

/// The layout of headerless PCM input ([`InputFormat::RawPcm`]).
///
/// Every chunk gets a WAV header for this layout, so it must fit one: a frame (channels ×
/// bytes per sample) of at most 65,535 bytes and a byte rate (frame × sample rate) below
/// 2³²; [`split`](super::split()) refuses others with
/// [`SplitError::InvalidPcm`](super::SplitError::InvalidPcm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcmSpec {
    /// Interleaved channels.
    pub channels: u16,
    /// Frames per second.
    pub sample_rate: u32,
    /// Bits per sample: 8, 16, 24 or 32, stored in the fewest whole bytes.
    pub bits_per_sample: u16,
    /// IEEE float samples (32 bits) rather than integers.
    pub float: bool,
}

/// How big chunks are: a [`ChunkSize`], the seed's choice by file size, or a raw byte count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlanSize {
    Auto,
    Size(ChunkSize),
    Bytes(u64),
}

/// Everything that decides where chunk boundaries fall: chunk size, overlap, input format.
///
/// Boundaries are a pure function of the input bytes and the plan, so the same input under the
/// same plan always gives the same chunks, and so the same per-chunk cache keys.
///
/// The normal way to size chunks is a [`ChunkSize`] ([`ChunkPlan::chunk_size`]) or, by default,
/// the seed's [`ChunkSize::from_file_size`] choice for the input's length.
/// [`ChunkPlan::with_chunk_bytes`] is the *advanced* escape hatch: any size from 1 byte up to
/// the 25 MB ceiling. It exists for tests and benchmarks (which would otherwise need inputs of
/// hundreds of MB to get several chunks) and for hosts whose API has a lower limit than 25 MB;
/// [`ChunkSize`] itself still enforces the seed's 10–25 MB.
///
/// ```
/// use memocache::chunk::{ChunkPlan, ChunkSize};
/// use std::time::Duration;
///
/// let plan = ChunkPlan::default().chunk_size(ChunkSize::new(10)?).overlap(Duration::from_secs(1));
/// assert_eq!(plan.chunk_bytes_for(Some(1 << 30)), 10 * 1024 * 1024);
/// // Auto: the seed's thresholds on the input length.
/// assert_eq!(ChunkPlan::default().chunk_bytes_for(Some(60 * 1024 * 1024)), 20 * 1024 * 1024);
/// assert_eq!(ChunkPlan::with_chunk_bytes(4096)?.chunk_bytes_for(None), 4096);
/// assert!(ChunkPlan::with_chunk_bytes(26 * 1024 * 1024).is_err());
/// # Ok::<(), memocache::chunk::ChunkSizeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    size: PlanSize,
    overlap: Duration,
    format: InputFormat,
    byte_rate: Option<u64>,
}

impl Default for ChunkPlan {
    /// Chunk size by [`ChunkSize::from_file_size`], no overlap, [`InputFormat::Auto`].
    fn default() -> ChunkPlan {
        ChunkPlan {
            size: PlanSize::Auto,
            overlap: Duration::ZERO,
            format: InputFormat::Auto,
            byte_rate: None,
        }
    }
}

impl ChunkPlan {
    /// A plan with chunks of `size`.
    pub fn new(size: ChunkSize) -> ChunkPlan {
        ChunkPlan::default().chunk_size(size)
    }

    /// Advanced: a plan with chunks of at most `bytes` bytes (1 byte to 25 MB). See the type
    /// docs for when this is appropriate.
    pub fn with_chunk_bytes(bytes: u64) -> Result<ChunkPlan, ChunkSizeError> {
        if bytes == 0 || bytes > ChunkSize::MAX.to_bytes() {
            return Err(ChunkSizeError::InvalidBytes { bytes });
        }
        Ok(ChunkPlan {
            size: PlanSize::Bytes(bytes),
            ..ChunkPlan::default()
        })
    }

    /// Chunks of `size`.
    #[must_use]
    pub fn chunk_size(mut self, size: ChunkSize) -> ChunkPlan {
        self.size = PlanSize::Size(size);
        self
    }

    /// Neighbouring chunks share `overlap` of audio, so a word at a boundary is whole in at
    /// least one of them. For byte-split input this needs [`ChunkPlan::byte_rate`].
    #[must_use]
    pub fn overlap(mut self, overlap: Duration) -> ChunkPlan {
        self.overlap = overlap;
        self
    }

    /// How the input is recognised.
    #[must_use]
    pub fn format(mut self, format: InputFormat) -> ChunkPlan {
        self.format = format;
        self
    }

    /// The average bytes per second of a byte-split input (for example a constant-bitrate
    /// MP3's `bitrate / 8`). Byte-split chunks use it to turn the overlap into bytes and to
    /// report time offsets; WAV input ignores it (its header has the exact rate). A rate of 0
    /// counts as no rate: no time offsets, and an overlap is refused.
    #[must_use]
    pub fn byte_rate(mut self, bytes_per_second: u64) -> ChunkPlan {
        self.byte_rate = Some(bytes_per_second);
        self
    }

    /// The overlap.
    pub fn overlap_duration(&self) -> Duration {
        self.overlap
    }

    /// The input format setting.
    pub fn input_format(&self) -> InputFormat {
        self.format
    }

    /// The byte rate for byte-split input, if set.
    pub fn byte_rate_hint(&self) -> Option<u64> {
        self.byte_rate
    }

    /// The largest chunk, in bytes, for an input of `input_len` bytes. Without a length the
    /// automatic choice is that of a small file (15 MB).
    ///
    /// The automatic choice is [`ChunkSize::from_file_size`] of the length in whole MB
    /// (MiB), rounded down: the seed took a number of MB without saying how to get it from a
    /// length, so here 50 MB less one byte counts as 49 MB and gets 15 MB chunks.
    pub fn chunk_bytes_for(&self, input_len: Option<u64>) -> u64 {
        match self.size {
            PlanSize::Auto => ChunkSize::from_file_size(input_len.unwrap_or(0) / MIB).to_bytes(),
            PlanSize::Size(size) => size.to_bytes(),
            PlanSize::Bytes(bytes) => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_thresholds_follow_the_seed() {
        for mb in 0..40 {
            assert_eq!(ChunkSize::new(mb).is_ok(), (10..=25).contains(&mb), "{mb}");
        }
        let err = ChunkSize::new(26).map(ChunkSize::value_mb);
        assert_eq!(err, Err(ChunkSizeError::OutOfRange { mb: 26 }));
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("chunk size must be between 10 and 25 MB, got 26 MB".to_owned())
        );
        let pick = |mb| ChunkSize::from_file_size(mb).value_mb();
        assert_eq!((pick(0), pick(49), pick(50), pick(99)), (15, 15, 20, 20));
        assert_eq!((pick(100), pick(u64::MAX)), (25, 25));
        assert_eq!(ChunkSize::MAX.to_bytes(), 26_214_400);
    }

    #[test]
    fn plan_byte_sizes_are_bounded_by_the_ceiling() {
        assert_eq!(
            ChunkPlan::with_chunk_bytes(0),
            Err(ChunkSizeError::InvalidBytes { bytes: 0 })
        );
        assert!(ChunkPlan::with_chunk_bytes(ChunkSize::MAX.to_bytes()).is_ok());
        assert!(ChunkPlan::with_chunk_bytes(ChunkSize::MAX.to_bytes() + 1).is_err());
        let auto = ChunkPlan::default();
        assert_eq!(auto.chunk_bytes_for(None), 15 * MIB);
        assert_eq!(auto.chunk_bytes_for(Some(100 * MIB)), 25 * MIB);
        assert_eq!(auto.chunk_bytes_for(Some(100 * MIB - 1)), 20 * MIB);
    }
}
