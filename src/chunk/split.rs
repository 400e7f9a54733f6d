//! The streaming splitter: [`split`] turns a reader into a [`ChunkStream`] of [`AudioChunk`]s.
//!
//! # Design
//!
//! * **Streaming.** The stream reads one chunk's worth of new bytes per step and keeps only the
//!   overlap tail of the previous chunk, so memory is one chunk (and the spare buffers
//!   below), whatever the input's size.
//! * **Buffers are reused.** A chunk's bytes are a [`Bytes`] over a buffer the stream hands
//!   out, and when the last handle to them is dropped the buffer goes back to the stream,
//!   which reads a later chunk into it: a chunk can be 25 MB, and a fresh buffer per chunk
//!   was memory the allocator (glibc's) handed back to the system on free and that had to be
//!   mapped and faulted in anew, page by page, for the next chunk. Bytes someone still holds
//!   are never read over: their buffer is not back until they are dropped. They hold all of
//!   it, so a chunk goes into a spare buffer only if that is at most twice the size the
//!   chunk needs; a short chunk (a file's last, a small file's only one) gets a buffer of
//!   its own size rather than one of a full chunk's, up to 25 MB, for a few bytes a caller
//!   may keep. The stream keeps at most [`ChunkStream::keep_buffers`] spare buffers (default
//!   [`DEFAULT_SPARE_BUFFERS`]), the largest given back; a buffer given back
//!   beyond that, or after the stream is gone, is freed. A
//!   [`ChunkedProcessor`](super::ChunkedProcessor) keeps its buffers across runs.
//! * **WAV on frame boundaries.** Input that starts with a `RIFF`/`WAVE` header — or its
//!   64-bit `RF64`/`BW64` form, whose `data` size is read from the `ds64` chunk — (or is
//!   declared headerless PCM by [`InputFormat::RawPcm`]) is cut between sample frames, and
//!   every chunk is a complete (RIFF) WAV file: a header written by `hound` for the input's
//!   format (container size included), the frames, and a pad byte when the data length is
//!   odd, as RIFF requires.
//!   A `WAVE_FORMAT_EXTENSIBLE` input whose valid bits are narrower than its container, where
//!   `hound` cannot write them (20 bits in 24) or would write them in a plain PCM header that
//!   readers misread (16 bits in 32, mono or stereo), gets chunks that declare the container's
//!   width: the same bytes, read as the same left-justified values; so do chunks of one whose
//!   valid bits claim more than its container holds. Float samples in a container other than
//!   32 bits are refused, and so is a block align that is not whole samples per channel.
//!   The header is written once per stream as a template and only its two size fields are
//!   patched per chunk; the samples are copied as raw bytes, never decoded. Chunks after the
//!   WAV `data` chunk (for example `LIST` metadata) are not part of any chunk. A `data` size of
//!   0 or 0xFFFFFFFF, which streaming writers leave when they cannot seek back, means "to the
//!   end of the input", as in common readers; the cost is that an empty WAV with metadata
//!   after its `data` header would have that metadata read as samples. A WAV that
//!   `hound` cannot parse (compressed WAV codecs, for instance) is an error rather than being
//!   byte-split, so a broken header is never uploaded as audio; force
//!   [`InputFormat::Bytes`] to byte-split it anyway.
//! * **Other formats on byte boundaries.** Anything else (MP3, FLAC, M4A, …) is cut into byte
//!   ranges. Such a chunk is *not* a well-formed file of its format: a frame can be cut in two,
//!   and only the first chunk has the container's header. Frame-synchronised formats such as
//!   MP3 survive this in tolerant decoders; containers such as M4A do not. Transcode to WAV
//!   first when that matters.
//! * **Sizes.** Every chunk — header, overlap and padding included — is at most
//!   [`ChunkPlan::chunk_bytes_for`] bytes, which never exceeds the 25 MB API limit.
//! * **Determinism.** Boundaries depend only on the input's bytes (and its length, for the
//!   automatic chunk size) and on the [`ChunkPlan`]: chunk `i` starts at unit `i * stride`,
//!   where a unit is a frame (or a byte), `stride = chunk_units - overlap_units`, and the last
//!   chunk is the one that reaches the end. Re-running over the same bytes gives the same
//!   chunks, and so the same cache keys.
//! * **Overlap.** `overlap` seconds are rounded down to whole frames at the WAV's rate; for
//!   byte-split input they need the plan's [`ChunkPlan::byte_rate`].
//! * **Errors.** An empty input (no byte, or a WAV with no frame) is [`SplitError::Empty`]. When
//!   the length is known in advance (WAV header, or the length the caller passes), an input
//!   that ends early is [`SplitError::Truncated`], never a silently short run. A WAV header
//!   that declares more audio than an input of known length holds is `Truncated` at once, by
//!   [`split`] itself: a header is untrusted input, and its size must not decide how many
//!   chunks a run plans for (a 100-byte file declaring 4 GiB of 1-byte frames would otherwise
//!   have a [`ChunkedProcessor`](super::ChunkedProcessor) allocate a slot per promised chunk).
//!   Nor is an input that goes on past the length the caller gave cut short there: where that
//!   length ends the audio (byte-split input, raw PCM, a streamed WAV), the stream reads one
//!   byte more before it yields its last chunk, and a byte there is
//!   [`SplitError::LongerThanGiven`] instead of that chunk. The audio past the length would
//!   otherwise be dropped without a word, and a transcript of part of a file pass for the
//!   whole. (A WAV whose header gives the `data` size ends its audio there itself: what
//!   follows is other chunks, which are not read. Its header must still fit in the length.)
//! * **Totals.** [`ChunkStream::total_chunks`] and [`ChunkStream::total_bytes`] are known only
//!   when [`split`] was given the input's length, against which a WAV's declared size has
//!   been checked. Without it they are `None`, even for a WAV whose header declares its size:
//!   that size is a claim until the input bears it out (an RF64 `ds64` chunk can declare up
//!   to 2^64 - 1 bytes: one declaring 2^62 over 600 bytes of audio announced 2.3 × 10^16
//!   chunks of 100 frames), and a caller sizing anything by a count must not be handed one
//!   that a file made up.
//!   The stream still stops at the declared size, and fails as `Truncated` if the input ends
//!   first. Refusing such a header up front would need a limit, and no size is too large for
//!   a recording; a caller who wants the totals passes the length (a file's metadata has it).

use std::fmt;
use std::io::{self, Chain, Cursor, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::size::{ChunkPlan, InputFormat, PcmSpec};
use super::task::{AudioChunk, ChunkInfo, ChunkKind};

/// Why an input could not be split.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The input has no audio: no byte at all, or a WAV with no sample frame.
    #[error("the input has no audio to split: it is empty, or a WAV with no sample frame")]
    Empty,
    /// Reading the input failed.
    #[error("reading the input failed: {0}")]
    Io(#[from] io::Error),
    /// The input looks like WAV but its header could not be parsed or re-written.
    #[error("invalid or unsupported WAV input: {0}")]
    Wav(#[from] hound::Error),
    /// A [`PcmSpec`] or WAV format that cannot be split on frames.
    #[error("unsupported PCM layout: {reason}")]
    InvalidPcm {
        /// What is wrong.
        reason: &'static str,
    },
    /// A chunk of `chunk_bytes` cannot hold the WAV header and one frame.
    #[error(
        "chunks of {chunk_bytes} bytes cannot hold a WAV header and one sample frame (need at least {min_bytes})"
    )]
    ChunkTooSmall {
        /// The plan's chunk size.
        chunk_bytes: u64,
        /// The smallest chunk that would work.
        min_bytes: u64,
    },
    /// The overlap is as long as a whole chunk, so splitting would never advance.
    #[error(
        "an overlap of {overlap:?} does not fit chunks of {chunk_units} units ({overlap_units} units of overlap)"
    )]
    OverlapTooLarge {
        /// The plan's overlap.
        overlap: Duration,
        /// The overlap in frames (or bytes).
        overlap_units: u64,
        /// A chunk's size in frames (or bytes).
        chunk_units: u64,
    },
    /// Overlap was asked for on byte-split input without a (non-zero) byte rate to convert it.
    #[error(
        "an overlap on byte-split input needs a non-zero ChunkPlan::byte_rate to convert seconds to bytes"
    )]
    OverlapNeedsByteRate,
    /// The input ended before its declared length.
    #[error(
        "the input ended after {got} of {expected} audio bytes (truncated, or changed while being read)"
    )]
    Truncated {
        /// Audio bytes the header (or the caller) announced.
        expected: u64,
        /// Audio bytes actually read.
        got: u64,
    },
    /// The input goes on past the length [`split`] was given, where that length ends its
    /// audio (or its WAV header runs past it): splitting to the given length would drop the
    /// rest without a word. The length is wrong, or the input grew while it was read.
    #[error(
        "the input holds at least {at_least} bytes, more than the {given} it was said to hold (the length is wrong, or the input grew while it was read)"
    )]
    LongerThanGiven {
        /// The input length passed to [`split`].
        given: u64,
        /// Bytes the input was found to hold: a lower bound, since the rest is not read.
        at_least: u64,
    },
    /// Headerless PCM of unknown length ended inside a frame.
    #[error("the PCM input ends inside a sample frame ({extra} stray bytes)")]
    PartialFrame {
        /// Bytes after the last whole frame.
        extra: u64,
    },
}

/// Splits `reader` by `plan`. `input_len` is the input's length in bytes, when known: it picks
/// the automatic chunk size, makes [`ChunkStream::total_chunks`] and
/// [`ChunkStream::total_bytes`] known, and turns an early end into [`SplitError::Truncated`] —
/// at once for a WAV whose header declares more audio than `input_len` leaves room for — and
/// input past it, where it ends the audio, into [`SplitError::LongerThanGiven`] (see the
/// module docs).
///
/// ```
/// use memocache::chunk::{split, ChunkPlan};
/// let input = vec![7u8; 10];
/// let plan = ChunkPlan::with_chunk_bytes(4)?;
/// let stream = split(&input[..], &plan, Some(10))?;
/// assert_eq!(stream.total_chunks(), Some(3));
/// let sizes: Vec<usize> = stream.map(|c| c.map(|c| c.data().len())).collect::<Result<_, _>>()?;
/// assert_eq!(sizes, [4, 4, 2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn split<R: Read>(
    reader: R,
    plan: &ChunkPlan,
    input_len: Option<u64>,
) -> Result<ChunkStream<R>, SplitError> {
    let buffers = Arc::new(ChunkBuffers::new(DEFAULT_SPARE_BUFFERS));
    split_into(reader, plan, input_len, buffers)
}

/// [`split`], reading the chunks into buffers from `buffers` (and giving them back there):
/// for a caller that keeps buffers across streams, as the processor does across runs.
pub(crate) fn split_into<R: Read>(
    mut reader: R,
    plan: &ChunkPlan,
    input_len: Option<u64>,
    buffers: Arc<ChunkBuffers>,
) -> Result<ChunkStream<R>, SplitError> {
    // Sniff the first 12 bytes, then put them back in front of the rest.
    let mut prefix = Vec::with_capacity(12);
    (&mut reader).take(12).read_to_end(&mut prefix)?;
    if prefix.is_empty() {
        return Err(SplitError::Empty);
    }
    let looks_like_wav =
        prefix.len() == 12 && RIFF_MAGICS.contains(&&prefix[..4]) && &prefix[8..] == b"WAVE";
    let mut reader = Cursor::new(prefix).chain(reader);
    let chunk_bytes = plan.chunk_bytes_for(input_len);
    // The length given, where it is also where the audio ends.
    let mut audio_ends_input = None;

    let layout = match plan.input_format() {
        InputFormat::Auto if looks_like_wav => {
            let (spec_ex, data_start, data_len) = read_wav_header(&mut reader)?;
            // The header has been read: an input said to be shorter than it is longer.
            let available = match input_len {
                Some(given) => Some(given.checked_sub(data_start).ok_or(
                    SplitError::LongerThanGiven {
                        given,
                        at_least: data_start,
                    },
                )?),
                None => None,
            };
            // A header that declares more audio than the input holds is truncated or lying:
            // say so now, before the declared size sizes anything (the chunk count a run
            // allocates its bookkeeping by, its progress) or any chunk is processed.
            if let (Some(declared), Some(available)) = (data_len, available)
                && declared > available
            {
                return Err(SplitError::Truncated {
                    expected: declared,
                    got: available,
                });
            }
            // A streamed WAV's data runs to the end of the input: known from its length, if
            // the caller gave it (which must then be the end), else found by reading.
            if data_len.is_none() {
                audio_ends_input = input_len;
            }
            let data_len = data_len.or(available);
            if data_len.is_none() {
                // Nothing tells its length: look for a first byte of audio now, so that a
                // streamed WAV with none is `Empty` here, as a finished one is.
                let (audio, rest) = peek_byte(reader)?;
                reader = rest;
                if !audio {
                    return Err(SplitError::Empty);
                }
            }
            Layout::frames(spec_ex, data_start, data_len, chunk_bytes, plan)?
        }
        InputFormat::RawPcm(spec) => {
            audio_ends_input = input_len;
            Layout::frames(pcm_spec_ex(spec)?, 0, input_len, chunk_bytes, plan)?
        }
        _ => {
            audio_ends_input = input_len;
            Layout::bytes(input_len, chunk_bytes, plan)?
        }
    };
    if layout.total_units == Some(0) {
        // No audio by the length given; unless the input goes on past it.
        if let Some(given) = audio_ends_input {
            let (more, _) = peek_byte(reader)?;
            if more {
                return Err(SplitError::LongerThanGiven {
                    given,
                    at_least: given.saturating_add(1),
                });
            }
        }
        return Err(SplitError::Empty);
    }
    Ok(ChunkStream {
        reader,
        layout,
        length_given: input_len.is_some(),
        audio_ends_input,
        read_units: 0,
        next_start: 0,
        next_index: 0,
        carry: Vec::new(),
        buffers,
        done: false,
    })
}

/// How many times the size a chunk needs a spare buffer it is read into may be (see
/// [`ChunkBuffers::take`]): a chunk's bytes that someone keeps hold at most twice the memory
/// a buffer of their own would. A 15 MB chunk, the seed's size for a small file, still goes
/// into a 25 MB buffer a large file's run left.
const MAX_SLACK: usize = 2;

/// Spare chunk buffers: where a [`ChunkStream`] takes the buffer it reads a chunk into, and
/// where that buffer comes back when the chunk's last [`Bytes`] is dropped. It keeps at most
/// `limit` of them, the largest; one given back beyond that is freed, or one smaller in its
/// place.
pub(crate) struct ChunkBuffers {
    spare: Mutex<Vec<Vec<u8>>>,
    limit: AtomicUsize,
    /// The runs reading into these buffers now (see [`ChunkBuffers::run`]).
    runs: AtomicUsize,
}

/// A run counted in the [`ChunkBuffers`] it reads into, until it is dropped.
pub(crate) struct RunSeat<'a>(&'a ChunkBuffers);

impl Drop for RunSeat<'_> {
    fn drop(&mut self) {
        self.0.runs.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ChunkBuffers {
    /// No spare buffer yet; keeps up to `limit`.
    pub(crate) fn new(limit: usize) -> ChunkBuffers {
        ChunkBuffers {
            spare: Mutex::new(Vec::new()),
            limit: AtomicUsize::new(limit),
            runs: AtomicUsize::new(0),
        }
    }

    /// Counts a run that holds up to `per_run` buffers at once until the seat is dropped,
    /// and keeps as many spare buffers as the most runs counted at once hold: the runs of a
    /// processor's clones read into its buffers together. With room for one run's, each run
    /// beyond the first had its buffers mapped and faulted in anew, and freed at its end (two
    /// clones at concurrency 2 over 2 MiB chunks: about 2,500 page faults a round of runs
    /// after the first, 0 with one). The room is never taken back: runs that came together
    /// once may again, and those buffers were the memory they held then.
    pub(crate) fn run(&self, per_run: usize) -> RunSeat<'_> {
        let runs = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        self.limit
            .fetch_max(per_run.saturating_mul(runs), Ordering::Relaxed);
        RunSeat(self)
    }

    /// How many spare buffers are held now.
    pub(crate) fn spare(&self) -> usize {
        self.spare.lock().len()
    }

    /// Keeps up to `limit` spare buffers from now on, freeing any beyond it.
    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        // Freed outside the lock: giving 25 MB back to the system is not instant.
        let freed = {
            let mut spare = self.spare.lock();
            let keep = limit.min(spare.len());
            spare.split_off(keep)
        };
        drop(freed);
    }

    /// An empty buffer of at least `capacity` bytes: a spare one if one fits. That is the
    /// smallest spare holding `capacity` if it is at most [`MAX_SLACK`] times that, else the
    /// largest spare smaller than `capacity`, grown; else (every spare is far larger) a new
    /// buffer of `capacity`. Bytes someone keeps hold their whole buffer: a short chunk (a
    /// file's last, a small file's only one) read into a spare sized for a full chunk had a
    /// host that kept its few bytes (in a cache, say, charged for their length) hold a whole
    /// chunk buffer, up to 25 MB, for each.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let most = capacity.saturating_mul(MAX_SLACK);
        let spare = {
            let mut spare = self.spare.lock();
            let capacities = spare.iter().map(Vec::capacity).enumerate();
            let fitting = capacities
                .clone()
                .filter(|&(_, have)| (capacity..=most).contains(&have))
                .min_by_key(|&(_, have)| have);
            let growable = capacities
                .filter(|&(_, have)| have < capacity)
                .max_by_key(|&(_, have)| have);
            fitting.or(growable).map(|(at, _)| spare.swap_remove(at))
        };
        let mut buffer = spare.unwrap_or_default();
        buffer.clear();
        // Exact: grown the usual way, a buffer sized for one chunk would double.
        buffer.reserve_exact(capacity);
        buffer
    }

    /// Keeps `buffer` for a later chunk, in place of the smallest spare one if enough are kept
    /// already and that one is smaller; frees whichever is not kept. The largest are kept
    /// because a full chunk fits only them, and a short chunk is not read into them anyway
    /// (see [`ChunkBuffers::take`]): a short chunk's buffer taking the last place would have
    /// the next full buffer freed, and mapped anew for the next run.
    fn give_back(&self, buffer: Vec<u8>) {
        let mut spare = self.spare.lock();
        let freed = if spare.len() < self.limit.load(Ordering::Relaxed) {
            spare.push(buffer);
            None
        } else {
            match spare.iter_mut().min_by_key(|kept| kept.capacity()) {
                Some(smallest) if smallest.capacity() < buffer.capacity() => {
                    Some(std::mem::replace(smallest, buffer))
                }
                _ => Some(buffer),
            }
        };
        // Freed outside the lock: giving 25 MB back to the system is not instant.
        drop(spare);
        drop(freed);
    }
}

impl fmt::Debug for ChunkBuffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkBuffers")
            .field("spare", &self.spare())
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .finish()
    }
}

/// A chunk's bytes, owned by its [`Bytes`] (made with [`Bytes::from_owner`]): dropped with
/// the last of them, it gives the buffer back to the stream's [`ChunkBuffers`], so no buffer
/// is read into while anyone can still read it. The pool is held weakly: a buffer that
/// outlives its pool (the stream and any processor keeping it) is freed with it.
struct PooledBuffer {
    data: Vec<u8>,
    home: Weak<ChunkBuffers>,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            home.give_back(std::mem::take(&mut self.data));
        }
    }
}

/// The input with the bytes already read to sniff it put back in front.
type Sniffed<R> = Chain<Cursor<Vec<u8>>, R>;

/// Whether `reader` has another byte; the reader is given back with that byte still ahead.
fn peek_byte<R: Read>(reader: Sniffed<R>) -> io::Result<(bool, Sniffed<R>)> {
    let (head, mut rest) = reader.into_inner();
    let consumed = usize::try_from(head.position()).unwrap_or(usize::MAX);
    let mut ahead = head.into_inner();
    // The sniffed bytes not read yet: none after a WAV header, which is longer.
    ahead.drain(..consumed.min(ahead.len()));
    if ahead.is_empty() {
        (&mut rest).take(1).read_to_end(&mut ahead)?;
    }
    Ok((!ahead.is_empty(), Cursor::new(ahead).chain(rest)))
}

/// A lazy sequence of chunks read from an input; see [`split`].
///
/// After the first error the stream ends.
pub struct ChunkStream<R> {
    reader: Sniffed<R>,
    layout: Layout,
    /// Whether [`split`] was given the input's length: only then are the totals known.
    length_given: bool,
    /// The length [`split`] was given, where it ends the audio: the input must end there.
    audio_ends_input: Option<u64>,
    /// Units read from the input so far.
    read_units: u64,
    /// First unit of the next chunk.
    next_start: u64,
    next_index: usize,
    /// The previous chunk's overlap tail: the first units of the next chunk.
    carry: Vec<u8>,
    /// Where chunk buffers come from and go back to.
    buffers: Arc<ChunkBuffers>,
    done: bool,
}

/// How an input is cut into units (frames or bytes) and chunks.
struct Layout {
    kind: ChunkKind,
    /// Bytes per unit: the WAV block align, or 1.
    unit_bytes: u64,
    /// Units per second, when known.
    rate: Option<u64>,
    /// Input offset of unit 0.
    payload_start: u64,
    /// A WAV header for zero frames, patched per chunk.
    header: Option<Vec<u8>>,
    chunk_units: u64,
    overlap_units: u64,
    total_units: Option<u64>,
}

impl Layout {
    fn frames(
        spec_ex: hound::WavSpecEx,
        payload_start: u64,
        total_bytes: Option<u64>,
        chunk_bytes: u64,
        plan: &ChunkPlan,
    ) -> Result<Layout, SplitError> {
        let unit_bytes = u64::from(spec_ex.spec.channels) * u64::from(spec_ex.bytes_per_sample);
        if unit_bytes == 0 || spec_ex.spec.sample_rate == 0 {
            return Err(SplitError::InvalidPcm {
                reason: "zero channels, sample size or sample rate",
            });
        }
        let mut header = Cursor::new(Vec::new());
        hound::WavWriter::new_with_spec_ex(&mut header, spec_ex)?.finalize()?;
        let header = header.into_inner();
        // An odd block align can give an odd data length, which needs a pad byte.
        let reserved = header.len() as u64 + unit_bytes % 2;
        let chunk_units = chunk_bytes.saturating_sub(reserved) / unit_bytes;
        if chunk_units == 0 {
            return Err(SplitError::ChunkTooSmall {
                chunk_bytes,
                min_bytes: reserved + unit_bytes,
            });
        }
        let total_units = match total_bytes {
            Some(bytes) if !bytes.is_multiple_of(unit_bytes) => {
                return Err(SplitError::PartialFrame {
                    extra: bytes % unit_bytes,
                });
            }
            bytes => bytes.map(|b| b / unit_bytes),
        };
        let rate = u64::from(spec_ex.spec.sample_rate);
        Layout {
            kind: ChunkKind::Wav,
            unit_bytes,
            rate: Some(rate),
            payload_start,
            header: Some(header),
            chunk_units,
            overlap_units: 0,
            total_units,
        }
        .with_overlap(plan)
    }

    fn bytes(total: Option<u64>, chunk_bytes: u64, plan: &ChunkPlan) -> Result<Layout, SplitError> {
        // A zero rate converts no overlap to bytes: refused like a missing one, rather than
        // splitting silently without the overlap asked for.
        let rate = plan.byte_rate_hint().filter(|&r| r > 0);
        if plan.overlap_duration() > Duration::ZERO && rate.is_none() {
            return Err(SplitError::OverlapNeedsByteRate);
        }
        Layout {
            kind: ChunkKind::Bytes,
            unit_bytes: 1,
            rate,
            payload_start: 0,
            header: None,
            chunk_units: chunk_bytes,
            overlap_units: 0,
            total_units: total,
        }
        .with_overlap(plan)
    }

    fn with_overlap(mut self, plan: &ChunkPlan) -> Result<Layout, SplitError> {
        let overlap = plan.overlap_duration();
        // Checked: a byte rate and an overlap are the caller's, and their product can pass
        // u128 (2^40 bytes/s for 2^88 ns). Unchecked it panicked in a debug build and, in a
        // release one, wrapped to a small overlap (2^128 to none at all) that was accepted.
        let units = u128::from(self.rate.unwrap_or(0))
            .checked_mul(overlap.as_nanos())
            .map_or(u64::MAX, |nanos| {
                u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX)
            });
        if units >= self.chunk_units {
            return Err(SplitError::OverlapTooLarge {
                overlap,
                overlap_units: units,
                chunk_units: self.chunk_units,
            });
        }
        self.overlap_units = units;
        Ok(self)
    }

    fn duration(&self, units: u64) -> Option<Duration> {
        self.rate.map(|rate| {
            let nanos = u128::from(units) * 1_000_000_000 / u128::from(rate);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        })
    }
}

fn pcm_spec_ex(spec: PcmSpec) -> Result<hound::WavSpecEx, SplitError> {
    if spec.float && spec.bits_per_sample != 32 {
        return Err(SplitError::InvalidPcm {
            reason: "float PCM must have 32 bits per sample",
        });
    }
    let bytes_per_sample = spec.bits_per_sample.div_ceil(8);
    // The header stores the frame size (block align) in 16 bits and the byte rate in 32; a
    // layout beyond them has no valid header, and `hound` would overflow computing it. (A
    // parsed WAV always fits: its header held both.)
    let byte_rate = spec
        .channels
        .checked_mul(bytes_per_sample)
        .and_then(|block_align| u32::from(block_align).checked_mul(spec.sample_rate));
    if byte_rate.is_none() {
        return Err(SplitError::InvalidPcm {
            reason: "frame size or byte rate too large for a WAV header",
        });
    }
    Ok(hound::WavSpecEx {
        spec: hound::WavSpec {
            channels: spec.channels,
            sample_rate: spec.sample_rate,
            bits_per_sample: spec.bits_per_sample,
            sample_format: if spec.float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        },
        bytes_per_sample,
    })
}

/// How many spare chunk buffers a stream from [`split`] keeps unless told otherwise
/// ([`ChunkStream::keep_buffers`]): one, enough for a caller that drops each chunk before it
/// asks for the next, or while the stream reads it.
///
/// A constant of the module rather than of [`ChunkStream`]: an associated constant of a
/// generic type cannot be named without its reader type (`ChunkStream::<&[u8]>::...`).
///
/// ```
/// use memocache::chunk::DEFAULT_SPARE_BUFFERS;
/// assert_eq!(DEFAULT_SPARE_BUFFERS, 1);
/// ```
pub const DEFAULT_SPARE_BUFFERS: usize = 1;

/// Where the stream stands: how it cuts, how far it has read and what it knows of the totals.
/// Not the reader, which need not be `Debug`, nor any audio.
impl<R: Read> fmt::Debug for ChunkStream<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkStream")
            .field("kind", &self.kind())
            .field("unit_bytes", &self.layout.unit_bytes)
            .field("chunk_units", &self.layout.chunk_units)
            .field("overlap_units", &self.layout.overlap_units)
            .field("next_index", &self.next_index)
            .field("read_units", &self.read_units)
            .field("total_chunks", &self.total_chunks())
            .field("total_bytes", &self.total_bytes())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> ChunkStream<R> {
    /// Keeps up to `n` spare chunk buffers (default [`DEFAULT_SPARE_BUFFERS`]): a
    /// chunk's buffer comes back when the last [`Bytes`] of it is dropped, and a later chunk
    /// is read into it if the stream kept it and it is at most twice the size that chunk needs
    /// (a short last chunk gets a buffer of its own size: see the module docs). It keeps up
    /// to `n` spare, the largest, and frees the others. `n` is at most how many chunks the
    /// caller lets go of between two reads; each spare buffer holds up to a chunk's size
    /// ([`ChunkPlan::chunk_bytes_for`]) while the stream lives. 0 frees every buffer: a new
    /// one per chunk.
    ///
    /// ```
    /// use memocache::chunk::{split, ChunkPlan};
    /// let input = vec![7u8; 12];
    /// let mut stream = split(&input[..], &ChunkPlan::with_chunk_bytes(4)?, Some(12))?
    ///     .keep_buffers(2);
    /// let first = stream.next().transpose()?.expect("a chunk");
    /// let at = first.data().as_ptr();
    /// drop(first);
    /// // The first chunk's buffer is free again: the second is read into it.
    /// let second = stream.next().transpose()?.expect("a chunk");
    /// assert_eq!(second.data().as_ptr(), at);
    /// // Held bytes are never read over: the third chunk gets another buffer.
    /// let third = stream.next().transpose()?.expect("a chunk");
    /// assert_ne!(third.data().as_ptr(), at);
    /// assert_eq!(&second.data()[..], &[7; 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn keep_buffers(self, n: usize) -> Self {
        self.buffers.set_limit(n);
        self
    }

    /// How many chunks the stream will yield if the input is what its length says, when
    /// [`split`] was given that length. Without it `None`, for WAV too: a header's declared
    /// size is not checked against anything until the input ends, and a count made from it
    /// (2.3 × 10^16 chunks for an RF64 header's 2^62 bytes) must not size a caller's
    /// bookkeeping.
    /// See *Totals* in the module docs.
    pub fn total_chunks(&self) -> Option<usize> {
        let l = &self.layout;
        let total = l.total_units.filter(|_| self.length_given)?;
        let count = if total <= l.chunk_units {
            1
        } else {
            1 + (total - l.chunk_units).div_ceil(l.chunk_units - l.overlap_units)
        };
        usize::try_from(count).ok()
    }

    /// The input's audio bytes (for WAV, the `data` chunk's length), when [`split`] was given
    /// the input's length (as for [`ChunkStream::total_chunks`]). The chunks'
    /// [`ChunkInfo::new_bytes`] add up to this, unless the stream fails.
    pub fn total_bytes(&self) -> Option<u64> {
        let units = self.layout.total_units.filter(|_| self.length_given)?;
        Some(units * self.layout.unit_bytes)
    }

    /// How the chunks are cut.
    pub fn kind(&self) -> ChunkKind {
        self.layout.kind
    }

    fn read_chunk(&mut self) -> Result<Option<AudioChunk>, SplitError> {
        let l = &self.layout;
        let header_len = l.header.as_ref().map_or(0, Vec::len);
        let carry_units = self.carry.len() as u64 / l.unit_bytes;
        let mut want = l.chunk_units - carry_units;
        if let Some(total) = l.total_units {
            want = want.min(total - self.read_units);
        }
        let want_bytes = want * l.unit_bytes;
        // One more byte: a WAV chunk's pad byte, or `read_to_end` finding the end without
        // growing the buffer.
        let capacity = header_len + self.carry.len() + usize::try_from(want_bytes).unwrap_or(0) + 1;
        // Owned from here, so that a chunk that fails gives its buffer back too.
        let mut buffer = PooledBuffer {
            data: self.buffers.take(capacity),
            home: Arc::downgrade(&self.buffers),
        };
        let data = &mut buffer.data;
        data.extend_from_slice(l.header.as_deref().unwrap_or_default());
        data.extend_from_slice(&self.carry);
        let before = data.len();
        (&mut self.reader).take(want_bytes).read_to_end(data)?;
        let got_bytes = (data.len() - before) as u64;
        if got_bytes < want_bytes {
            if let Some(total) = l.total_units {
                return Err(SplitError::Truncated {
                    expected: total * l.unit_bytes,
                    got: self.read_units * l.unit_bytes + got_bytes,
                });
            }
            if !got_bytes.is_multiple_of(l.unit_bytes) {
                return Err(SplitError::PartialFrame {
                    extra: got_bytes % l.unit_bytes,
                });
            }
        }
        let got_units = got_bytes / l.unit_bytes;
        if got_units == 0 {
            self.done = true;
            return if self.next_index == 0 {
                Err(SplitError::Empty)
            } else {
                Ok(None)
            };
        }
        let last = match l.total_units {
            Some(total) => self.read_units + got_units == total,
            None => got_units < want,
        };
        // Where the caller's length ends the audio, the input must end there too: a byte
        // past it fails the stream in place of its last chunk, which would pass a part of
        // the input's audio for the whole.
        if last
            && let Some(given) = self.audio_ends_input
            && io::copy(&mut (&mut self.reader).take(1), &mut io::sink())? > 0
        {
            return Err(SplitError::LongerThanGiven {
                given,
                at_least: given.saturating_add(1),
            });
        }
        let start = self.next_start;
        let units = carry_units + got_units;
        let payload_bytes = units * l.unit_bytes;
        let info = ChunkInfo {
            index: self.next_index,
            kind: l.kind,
            source_offset: l.payload_start + start * l.unit_bytes,
            source_len: payload_bytes,
            new_bytes: got_bytes,
            start_time: l.duration(start),
            duration: l.duration(units),
            overlap: l.duration(if self.next_index == 0 { 0 } else { carry_units }),
        };
        self.carry.clear();
        if !last {
            // Not last, so the chunk is full and its tail is the next chunk's head.
            self.carry
                .extend_from_slice(&data[data.len() - (l.overlap_units * l.unit_bytes) as usize..]);
        }
        if header_len > 0 {
            patch_wav_sizes(data, header_len, payload_bytes)?;
        }
        self.read_units += got_units;
        self.next_start = start + l.chunk_units - l.overlap_units;
        self.next_index += 1;
        self.done = last;
        Ok(Some(AudioChunk::new(info, Bytes::from_owner(buffer))))
    }
}

/// Writes the RIFF and `data` sizes into a chunk built from the zero-length header template,
/// padding odd data to an even length as RIFF requires.
fn patch_wav_sizes(data: &mut Vec<u8>, header_len: usize, payload: u64) -> Result<(), SplitError> {
    if !payload.is_multiple_of(2) {
        data.push(0);
    }
    // Chunks are at most 25 MB, so both sizes fit; the error is only for a broken invariant.
    let too_big = || SplitError::InvalidPcm {
        reason: "chunk larger than a WAV file can be",
    };
    let data_len = u32::try_from(payload).map_err(|_| too_big())?;
    let riff_len = u32::try_from(data.len() - 8).map_err(|_| too_big())?;
    data[4..8].copy_from_slice(&riff_len.to_le_bytes());
    data[header_len - 4..header_len].copy_from_slice(&data_len.to_le_bytes());
    Ok(())
}

impl<R: Read> Iterator for ChunkStream<R> {
    type Item = Result<AudioChunk, SplitError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.read_chunk();
        if next.is_err() {
            self.done = true;
        }
        next.transpose()
    }
}

impl<R: Read> std::iter::FusedIterator for ChunkStream<R> {}

/// `data` chunk sizes that mean "to the end of the input". A writer that streams (to a pipe,
/// or live) cannot seek back to fill in the size once it knows it, and leaves 0 or
/// 0xFFFFFFFF there (`ffmpeg` writing to a pipe does). Common readers, `ffmpeg`'s among them,
/// read both as "unknown: read to the end", and so does the splitter. (A WAV that really
/// holds no samples still has nothing after its header, and is still [`SplitError::Empty`].)
const STREAMED_SIZES: [u32; 2] = [0, u32::MAX];

/// The longest `fmt ` chunk accepted (real ones are 16, 18 or 40 bytes).
const MAX_FMT_LEN: u32 = 1024;

/// The container tags of a WAV file: `RIFF`, and the 64-bit `RF64` (EBU Tech 3306) and `BW64`
/// (ITU-R BS.2088) that recorders and `ffmpeg` write once a recording passes 4 GiB — the long
/// recordings chunking is for. The last two keep their sizes in a `ds64` chunk and put
/// 0xFFFFFFFF in the 32-bit fields; otherwise their chunks are RIFF's.
const RIFF_MAGICS: [&[u8]; 3] = [b"RIFF", b"RF64", b"BW64"];

/// The part of a `ds64` chunk read: RIFF size, `data` size and sample count, 64 bits each.
const DS64_LEN: u32 = 24;

/// Reads a WAV header (RIFF, RF64 or BW64) up to the first byte of its `data` chunk; returns
/// the format, the offset of the data and its length — `None` when the header does not say
/// (see [`STREAMED_SIZES`]).
///
/// `hound` parses and validates the format, but its reader keeps the container size (block
/// align) to itself, and the splitter needs it to cut frames. So this walks the RIFF chunks,
/// keeps the `fmt ` chunk, skips the others, and hands `hound` a minimal header made of the
/// RIFF preamble, that `fmt ` chunk and the `data` chunk header.
fn read_wav_header(
    reader: &mut impl Read,
) -> Result<(hound::WavSpecEx, u64, Option<u64>), SplitError> {
    let mut preamble = [0u8; 12];
    reader.read_exact(&mut preamble)?;
    let is_64 = &preamble[..4] != b"RIFF";
    let mut offset = 12u64;
    let mut fmt: Option<Vec<u8>> = None;
    // An RF64/BW64 file's `data` size, from its `ds64` chunk.
    let mut ds64_data_len: Option<u64> = None;
    loop {
        let mut chunk_header = [0u8; 8];
        reader
            .read_exact(&mut chunk_header)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    SplitError::Wav(hound::Error::FormatError("no data chunk found"))
                }
                _ => SplitError::Io(e),
            })?;
        offset += 8;
        let len = u32::from_le_bytes([
            chunk_header[4],
            chunk_header[5],
            chunk_header[6],
            chunk_header[7],
        ]);
        match &chunk_header[..4] {
            b"data" => {
                let fmt = fmt.ok_or(hound::Error::FormatError("missing fmt chunk"))?;
                let len32 = (!STREAMED_SIZES.contains(&len)).then_some(len);
                // An RF64 `data` size of 0xFFFFFFFF says "see ds64"; a ds64 size of 0 is a
                // streaming writer's, like a 32-bit 0.
                let len = match ds64_data_len {
                    Some(ds64) if len == u32::MAX => (ds64 != 0).then_some(ds64),
                    _ => len32.map(u64::from),
                };
                let mut minimal = Vec::with_capacity(28 + fmt.len());
                // hound reads RIFF only; past the tag, RF64's chunks are RIFF's.
                minimal.extend_from_slice(b"RIFF");
                minimal.extend_from_slice(&preamble[4..]);
                minimal.extend_from_slice(&fmt);
                minimal.extend_from_slice(b"data");
                // hound checks the size against the frame size; an unknown one (or one only
                // ds64 holds) is no size, and the splitter checks frames itself.
                minimal.extend_from_slice(&len32.unwrap_or(0).to_le_bytes());
                let spec = hound::WavReader::new(Cursor::new(minimal))?.spec();
                // fmt layout: tag u16, channels u16, rate u32, byte rate u32, block align u16.
                let block_align = u16::from_le_bytes([fmt[20], fmt[21]]);
                let channels = spec.channels.max(1);
                // hound takes `block_align / channels` bytes per sample and drops the rest: 3-byte
                // frames of 2 channels would be cut and declared as 2-byte frames, straddling the
                // input's. No header hound writes holds such frames, so they are refused.
                if block_align % channels != 0 {
                    return Err(SplitError::InvalidPcm {
                        reason: "the WAV's block align is not a whole number of bytes per channel",
                    });
                }
                let spec_ex = chunk_format(spec, block_align / channels)?;
                return Ok((spec_ex, offset, len));
            }
            b"ds64" if is_64 && ds64_data_len.is_none() => {
                if len < DS64_LEN {
                    return Err(hound::Error::FormatError("ds64 chunk too short").into());
                }
                let mut sizes = [0u8; DS64_LEN as usize];
                reader.read_exact(&mut sizes)?;
                let mut data_len = [0u8; 8];
                data_len.copy_from_slice(&sizes[8..16]);
                ds64_data_len = Some(u64::from_le_bytes(data_len));
                // The rest (a table of other chunks' sizes) is not needed.
                let skip = u64::from(len - DS64_LEN) + u64::from(len % 2);
                let skipped = io::copy(&mut reader.take(skip), &mut io::sink())?;
                if skipped < skip {
                    return Err(hound::Error::FormatError("no data chunk found").into());
                }
                offset += u64::from(len) + u64::from(len % 2);
            }
            b"fmt " if fmt.is_none() => {
                if len > MAX_FMT_LEN {
                    return Err(hound::Error::FormatError("fmt chunk too long").into());
                }
                let mut chunk = chunk_header.to_vec();
                reader.take(u64::from(len)).read_to_end(&mut chunk)?;
                if chunk.len() < 8 + 16 {
                    return Err(hound::Error::FormatError("invalid fmt chunk size").into());
                }
                fmt = Some(chunk);
                let pad = u64::from(len % 2);
                io::copy(&mut reader.take(pad), &mut io::sink())?;
                offset += u64::from(len) + pad;
            }
            _ => {
                // RIFF chunks are padded to an even length.
                let skip = u64::from(len) + u64::from(len % 2);
                let skipped = io::copy(&mut reader.take(skip), &mut io::sink())?;
                if skipped < skip {
                    return Err(hound::Error::FormatError("no data chunk found").into());
                }
                offset += skip;
            }
        }
    }
}

/// The format the chunks of a WAV input declare: the input's, but with its container's width
/// as the bits per sample where `hound` cannot write the input's own, or would write them in a
/// header that misleads.
///
/// `hound` reads a `WAVE_FORMAT_EXTENSIBLE` header's *valid* bits (20 in a 24-bit container,
/// 16 in 32), but it writes integers of 8, 16, 24 or 32 bits and floats of 32 only (its writer
/// panics on another float width), and for up to 2 channels of up to 16 bits it writes a plain
/// PCM header, which has no valid-bits field: 16 bits in a 4-byte frame there reads, to `sox`
/// among others, as two packed samples per frame. So such chunks declare the container's
/// width: integer samples are left-justified in their containers, so the same bytes read as
/// the same values (the unused low bits zero), and float samples are the container's floats.
/// A float container of other than 32 bits is refused, as `hound` refuses a plain one.
fn chunk_format(
    mut spec: hound::WavSpec,
    bytes_per_sample: u16,
) -> Result<hound::WavSpecEx, SplitError> {
    let bits = spec.bits_per_sample;
    let container_bits = bytes_per_sample.saturating_mul(8);
    let plain_pcm_header = spec.channels <= 2 && bits <= 16;
    let keeps_its_bits = match spec.sample_format {
        // Valid bits wider than the container (32 in 2-byte samples) are a broken header that
        // hound takes at its word; the container's width is what the bytes hold.
        hound::SampleFormat::Int => {
            matches!(bits, 8 | 16 | 24 | 32)
                && (bits == container_bits || (bits < container_bits && !plain_pcm_header))
        }
        hound::SampleFormat::Float => bits == 32 && container_bits == 32,
    };
    if !keeps_its_bits {
        spec.bits_per_sample = container_bits;
    }
    if spec.sample_format == hound::SampleFormat::Float && spec.bits_per_sample != 32 {
        return Err(hound::Error::Unsupported.into());
    }
    Ok(hound::WavSpecEx {
        spec,
        bytes_per_sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capacities of `buffers`' spare buffers, in order.
    fn spares(buffers: &ChunkBuffers) -> Vec<usize> {
        let mut capacities: Vec<usize> = buffers.spare.lock().iter().map(Vec::capacity).collect();
        capacities.sort_unstable();
        capacities
    }

    #[test]
    fn a_spare_buffer_far_larger_than_a_chunk_is_left_for_a_full_one() {
        let buffers = ChunkBuffers::new(3);
        buffers.give_back(Vec::with_capacity(10_000));
        // A short chunk: a buffer of its own, not the full-sized spare.
        let short = buffers.take(100);
        assert!(short.capacity() < 10_000, "{}", short.capacity());
        assert_eq!(spares(&buffers), [10_000]);
        // Up to twice its size is taken, the smallest that holds it.
        buffers.give_back(Vec::with_capacity(7_000));
        buffers.give_back(Vec::with_capacity(9_000));
        assert_eq!(buffers.take(5_000).capacity(), 7_000);
        assert_eq!(spares(&buffers), [9_000, 10_000]);
        // Nothing holds it: the largest smaller spare is grown.
        assert!(buffers.take(20_000).capacity() >= 20_000);
        assert_eq!(spares(&buffers), [9_000]);
    }

    #[test]
    fn a_full_pool_keeps_its_largest_buffers() {
        let buffers = ChunkBuffers::new(2);
        buffers.give_back(Vec::with_capacity(100));
        buffers.give_back(Vec::with_capacity(10_000));
        buffers.give_back(Vec::with_capacity(10_000));
        assert_eq!(spares(&buffers), [10_000, 10_000]);
        buffers.give_back(Vec::with_capacity(50));
        assert_eq!(spares(&buffers), [10_000, 10_000]);
    }
}
