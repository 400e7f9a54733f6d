//! The splitter: boundaries, WAV validity, errors.

use std::io::Cursor;
use std::time::Duration;

use memocache::chunk::{AudioChunk, ChunkKind, ChunkPlan, InputFormat, PcmSpec, SplitError, split};
use proptest::prelude::*;

mod noise_support;
use noise_support::noise;

fn chunks(input: &[u8], plan: &ChunkPlan, len: Option<u64>) -> Result<Vec<AudioChunk>, SplitError> {
    split(input, plan, len)?.collect()
}

fn plan(bytes: u64) -> ChunkPlan {
    ChunkPlan::with_chunk_bytes(bytes).unwrap()
}

/// Bug: the overlap in units was `rate × overlap nanoseconds` in u128 unchecked, and both are
/// the caller's: 2^40 bytes/s for 2^88 ns overflowed, a panic in a debug build and, in a
/// release one, a product wrapped to 0, so the stream split with no overlap at all. An
/// overlap past any count of units is too large for any chunk.
#[test]
fn an_overlap_whose_unit_count_overflows_is_too_large_not_a_panic() {
    // 2^88 ns.
    let overlap = Duration::new(309_485_009_821_345_068, 724_781_056);
    assert_eq!(overlap.as_nanos(), 1 << 88);
    let plan = plan(64).byte_rate(1 << 40).overlap(overlap);
    let result = split(&noise(100, 3)[..], &plan, Some(100)).map(|_| ());
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err(SplitError::OverlapTooLarge {
            overlap,
            overlap_units: u64::MAX,
            chunk_units: 64,
        }
        .to_string())
    );
}

#[test]
fn byte_boundaries_exact_partial_and_tiny() {
    let input = noise(12, 1);
    for len in [Some(12), None] {
        let got = chunks(&input, &plan(4), len).unwrap();
        assert_eq!(got.len(), 3);
        assert!(
            got.iter()
                .all(|c| c.data().len() == 4 && c.info().kind == ChunkKind::Bytes)
        );
        assert_eq!(got[2].info().source_offset, 8);
    }
    let got = chunks(&input[..10], &plan(4), Some(10)).unwrap();
    let sizes: Vec<_> = got.iter().map(|c| c.data().len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(&got[2].data()[..], &input[8..10]);
    let tiny = chunks(&input[..1], &plan(4), None).unwrap();
    assert_eq!((tiny.len(), &tiny[0].data()[..]), (1, &input[..1]));
    // Chunk size exactly the input.
    assert_eq!(chunks(&input, &plan(12), Some(12)).unwrap().len(), 1);
    assert_eq!(
        split(&input[..], &plan(4), Some(12))
            .unwrap()
            .total_chunks(),
        Some(3)
    );
}

#[test]
fn empty_input_is_an_error() {
    for len in [Some(0), None] {
        assert!(matches!(
            split(&[][..], &plan(4), len),
            Err(SplitError::Empty)
        ));
    }
    let empty_wav = wav(spec(1, 16), &[]);
    assert!(matches!(
        split(&empty_wav[..], &plan(1000), None),
        Err(SplitError::Empty)
    ));
}

#[test]
fn byte_overlap_needs_a_rate_and_must_be_shorter_than_a_chunk() {
    let input = noise(100, 2);
    let with_overlap = plan(10).overlap(Duration::from_millis(500));
    assert!(matches!(
        split(&input[..], &with_overlap, None),
        Err(SplitError::OverlapNeedsByteRate)
    ));
    // Bug: a zero byte rate passed the check and the chunks silently had no overlap.
    assert!(matches!(
        split(&input[..], &with_overlap.byte_rate(0), Some(100)),
        Err(SplitError::OverlapNeedsByteRate)
    ));
    // 500 ms at 20 B/s = 10 bytes = the whole chunk.
    assert!(matches!(
        split(&input[..], &with_overlap.byte_rate(20), None),
        Err(SplitError::OverlapTooLarge {
            overlap_units: 10,
            chunk_units: 10,
            ..
        })
    ));
    // 500 ms at 8 B/s = 4 bytes of overlap, stride 6.
    let got = chunks(&input, &with_overlap.byte_rate(8), Some(100)).unwrap();
    assert_eq!(got.len(), 1 + (100 - 10usize).div_ceil(6));
    assert_eq!(&got[1].data()[..4], &got[0].data()[6..]);
    assert_eq!(got[1].info().start_time, Some(Duration::from_millis(750)));
    assert_eq!(got[1].info().overlap, Some(Duration::from_millis(500)));
    assert_eq!(got[0].info().overlap, Some(Duration::ZERO));
}

#[test]
fn a_stream_shorter_than_its_declared_length_is_truncated() {
    let input = noise(10, 3);
    let result = chunks(&input, &plan(4), Some(12));
    assert!(
        matches!(
            result,
            Err(SplitError::Truncated {
                expected: 12,
                got: 10
            })
        ),
        "{result:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Chunks tile the input: each is the input's bytes at its offset, none is over the size,
    /// new bytes add up to the input, offsets follow the stride, and the count is announced.
    #[test]
    fn byte_chunks_tile_the_input(
        len in 1usize..3000,
        size in 1u64..400,
        overlap_ms in 0u64..2000,
        known in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let input = noise(len, seed);
        // 100 B/s: overlap_ms / 10 bytes.
        let overlap_units = overlap_ms / 10;
        let plan = plan(size).overlap(Duration::from_millis(overlap_ms)).byte_rate(100);
        let stream = split(&input[..], &plan, known.then_some(len as u64));
        if overlap_units >= size {
            let too_large = matches!(stream, Err(SplitError::OverlapTooLarge { .. }));
            prop_assert!(too_large);
            return Ok(());
        }
        let stream = stream.unwrap();
        let announced = stream.total_chunks();
        let got: Vec<AudioChunk> = stream.collect::<Result<_, _>>().unwrap();
        if known {
            prop_assert_eq!(announced, Some(got.len()));
        }
        let stride = size - overlap_units;
        let mut rebuilt = Vec::new();
        for (i, c) in got.iter().enumerate() {
            let info = c.info();
            prop_assert_eq!(info.index, i);
            prop_assert_eq!(info.source_offset, i as u64 * stride);
            prop_assert!(c.data().len() as u64 <= size);
            let at = info.source_offset as usize;
            prop_assert_eq!(&c.data()[..], &input[at..at + c.data().len()]);
            let new = info.new_bytes as usize;
            rebuilt.extend_from_slice(&c.data()[c.data().len() - new..]);
        }
        prop_assert_eq!(rebuilt, input.clone());
        // The last chunk reaches the end and the one before does not.
        let last = got.last().unwrap().info();
        prop_assert_eq!(last.source_offset + last.source_len, len as u64);
        if got.len() > 1 {
            let prev = got[got.len() - 2].info();
            prop_assert!(prev.source_offset + prev.source_len < len as u64);
        }
        // Deterministic.
        let again: Vec<AudioChunk> = split(&input[..], &plan, None).unwrap().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(again, got);
    }
}

fn spec(channels: u16, bits: u16) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: 8000,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    }
}

/// A WAV file of `samples` (interleaved), written by hound.
fn wav(spec: hound::WavSpec, samples: &[i32]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    for &s in samples {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
    out.into_inner()
}

fn samples(count: usize, bits: u16) -> Vec<i32> {
    let half = 1i64 << (bits - 1);
    noise(count * 4, u64::from(bits))
        .chunks(4)
        .map(|b| (i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) % half) as i32)
        .collect()
}

/// Re-parses a chunk as WAV; returns its spec and samples.
fn parse(chunk: &AudioChunk) -> (hound::WavSpec, Vec<i32>) {
    let mut reader = hound::WavReader::new(Cursor::new(chunk.data().to_vec())).unwrap();
    let samples = reader.samples::<i32>().collect::<Result<_, _>>().unwrap();
    (reader.spec(), samples)
}

#[test]
fn wav_chunks_are_valid_wavs_on_frame_boundaries() {
    for (channels, bits, frames) in [
        (2u16, 16u16, 2_000usize),
        (1, 8, 3_001),
        (3, 24, 777),
        (1, 32, 500),
    ] {
        let spec = spec(channels, bits);
        let all = samples(frames * usize::from(channels), bits);
        let input = wav(spec, &all);
        let max = 1_000u64;
        let overlap = Duration::from_millis(5); // 40 frames at 8 kHz
        let plan = plan(max).overlap(overlap);
        let stream = split(&input[..], &plan, Some(input.len() as u64)).unwrap();
        assert_eq!(stream.kind(), ChunkKind::Wav);
        let block = usize::from(channels) * usize::from(bits.div_ceil(8));
        assert_eq!(stream.total_bytes(), Some((frames * block) as u64));
        let total = stream.total_chunks();
        let got: Vec<AudioChunk> = stream.collect::<Result<_, _>>().unwrap();
        assert_eq!(total, Some(got.len()));
        // Without the length: the same chunks, and no totals (the header's are unchecked).
        let no_length = split(&input[..], &plan, None).unwrap();
        assert_eq!(
            (no_length.total_bytes(), no_length.total_chunks()),
            (None, None)
        );
        assert_eq!(no_length.collect::<Result<Vec<_>, _>>().unwrap(), got);
        assert!(
            got.len() > 2,
            "{channels}ch {bits}bit gave {} chunks",
            got.len()
        );
        let mut next_new_frame = 0;
        for chunk in &got {
            assert!(
                chunk.data().len() as u64 <= max,
                "chunk of {} bytes",
                chunk.data().len()
            );
            let (chunk_spec, chunk_samples) = parse(chunk);
            assert_eq!(chunk_spec, spec);
            let info = chunk.info();
            let start_frame = (info.start_time.unwrap().as_nanos() * 8000 / 1_000_000_000) as usize;
            let n_frames = chunk_samples.len() / usize::from(channels);
            assert_eq!(info.source_len as usize, n_frames * block);
            let from = start_frame * usize::from(channels);
            assert_eq!(
                chunk_samples,
                all[from..from + chunk_samples.len()],
                "chunk {}",
                info.index
            );
            let overlap_frames = if info.index == 0 { 0 } else { 40 };
            assert_eq!(start_frame + overlap_frames, next_new_frame);
            assert_eq!(info.new_bytes as usize, (n_frames - overlap_frames) * block);
            next_new_frame = start_frame + n_frames;
            assert_eq!(chunk.data().len() % 2, 0, "RIFF data is padded to even");
        }
        assert_eq!(next_new_frame, frames);
    }
}

#[test]
fn wav_chunks_around_other_riff_chunks() {
    let spec = spec(1, 16);
    let all = samples(300, 16);
    let plain = wav(spec, &all);
    // RIFF preamble, a JUNK chunk of odd length (padded), fmt, data, then a trailing LIST.
    let mut input = plain[..12].to_vec();
    input.extend_from_slice(b"JUNK\x03\x00\x00\x00abc\x00");
    input.extend_from_slice(&plain[12..]);
    input.extend_from_slice(b"LIST\x04\x00\x00\x00info");
    let riff = (input.len() - 8) as u32;
    input[4..8].copy_from_slice(&riff.to_le_bytes());
    let got = chunks(&input, &plan(244), None).unwrap(); // (244 - 44) / 2 = 100 frames
    assert_eq!(got.len(), 3);
    let rebuilt: Vec<i32> = got.iter().flat_map(|c| parse(c).1).collect();
    assert_eq!(rebuilt, all);
    // Preamble 12, JUNK 8 + 3 + pad 1, fmt 8 + 16, data header 8.
    assert_eq!(got[0].info().source_offset, 12 + 12 + 24 + 8);
}

#[test]
fn wav_errors() {
    let input = wav(spec(2, 16), &samples(200, 16));
    assert!(matches!(
        split(&input[..], &plan(47), None),
        Err(SplitError::ChunkTooSmall {
            chunk_bytes: 47,
            min_bytes: 48
        })
    ));
    assert!(split(&input[..], &plan(48), None).is_ok());
    // The header promises more frames than there are.
    let cut = &input[..input.len() - 6];
    let result = chunks(cut, &plan(100), None);
    assert!(
        matches!(result, Err(SplitError::Truncated { .. })),
        "{result:?}"
    );
    // ADPCM (format tag 2) is refused as WAV, and byte-split when forced.
    let mut adpcm = input.clone();
    adpcm[20] = 2;
    assert!(matches!(
        split(&adpcm[..], &plan(100), None),
        Err(SplitError::Wav(_))
    ));
    let forced = chunks(&adpcm, &plan(100).format(InputFormat::Bytes), None).unwrap();
    assert_eq!(forced[0].info().kind, ChunkKind::Bytes);
    assert_eq!(forced.len(), adpcm.len().div_ceil(100));
}

/// Bug: a WAV header declaring more audio than an input of known length holds was believed
/// until the reading ran out: `total_chunks` reported the chunks of the declared size (4 GiB
/// here, billions of chunks), which a processor allocates bookkeeping for. It is `Truncated`
/// at once now, naming both sizes; without a known length the early end is still caught.
#[test]
fn a_wav_declaring_more_audio_than_the_input_holds_is_truncated_at_once() {
    let mut input = wav(spec(1, 8), &samples(100, 8));
    input[40..44].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let len = Some(input.len() as u64);
    assert!(matches!(
        split(&input[..], &plan(46), len),
        Err(SplitError::Truncated {
            expected: 0xFFFF_FFF0,
            got: 100
        })
    ));
    // The header may declare less than the input holds: what follows `data` is other chunks.
    input[40..44].copy_from_slice(&60u32.to_le_bytes());
    let stream = split(&input[..], &plan(46), len).unwrap();
    assert_eq!(stream.total_bytes(), Some(60));
    // Without the length, the lie shows when the input ends.
    input[40..44].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    assert!(matches!(
        chunks(&input, &plan(1000), None),
        Err(SplitError::Truncated { .. })
    ));
}

/// Bug: streaming WAV writers (and `ffmpeg` writing to a pipe) cannot seek back to fill in
/// the data size, and leave it 0 or 0xFFFFFFFF; such a WAV holding audio failed as "the input
/// is empty" (or, for 0xFFFFFFFF, as truncated). Both values now mean "to the end of the
/// input", as in common readers, whether or not the input's length is known.
#[test]
fn a_streamed_wav_with_an_unknown_data_size_is_split_to_the_end() {
    let all = samples(300, 16);
    let finished = wav(spec(1, 16), &all);
    for unknown in [0u32, u32::MAX] {
        let mut streamed = finished.clone();
        // The RIFF size is unknown too; 44 is the header hound writes.
        streamed[4..8].copy_from_slice(&unknown.to_le_bytes());
        streamed[40..44].copy_from_slice(&unknown.to_le_bytes());
        for len in [None, Some(streamed.len() as u64)] {
            let stream = split(&streamed[..], &plan(244), len).expect("a WAV");
            let known = len.map(|_| 600);
            assert_eq!(stream.total_bytes(), known, "{unknown:#x}, {len:?}");
            let got: Vec<AudioChunk> = stream.collect::<Result<_, _>>().expect("splits");
            assert_eq!(got.len(), 3, "{unknown:#x}, {len:?}");
            let rebuilt: Vec<i32> = got.iter().flat_map(|c| parse(c).1).collect();
            assert_eq!(rebuilt, all, "{unknown:#x}, {len:?}");
        }
        // A streamed WAV with no sample at all is still empty.
        for len in [None, Some(44)] {
            assert!(matches!(
                split(&streamed[..44], &plan(244), len),
                Err(SplitError::Empty)
            ));
        }
    }
}

/// `plain` (a 44-byte-header WAV from hound) in the 64-bit RF64 form a recorder or `ffmpeg
/// -rf64 auto` writes past 4 GiB: `RF64` tag, a `ds64` chunk holding the sizes (a `data` size
/// of `ds64_data`), 0xFFFFFFFF in both 32-bit size fields, then `trailer` after the data.
fn rf64(plain: &[u8], ds64_data: u64, trailer: &[u8]) -> Vec<u8> {
    let mut out = b"RF64\xff\xff\xff\xffWAVE".to_vec();
    out.extend_from_slice(b"ds64");
    out.extend_from_slice(&28u32.to_le_bytes()); // 24 bytes of sizes, a table of 0 entries
    let riff = (plain.len() - 8 + 36 + trailer.len()) as u64;
    out.extend_from_slice(&riff.to_le_bytes());
    out.extend_from_slice(&ds64_data.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // sample count: only needed for compressed audio
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&plain[12..40]); // fmt, then the data tag
    out.extend_from_slice(&u32::MAX.to_le_bytes());
    out.extend_from_slice(&plain[44..]);
    out.extend_from_slice(trailer);
    out
}

/// Bug: a WAV past 4 GiB — the long recording chunking exists for — is written as RF64 (or
/// BW64), and the splitter took only `RIFF` for WAV. Such a file was byte-split: its first
/// chunk carried a header whose sizes all say "see ds64" and the others none at all, so no
/// chunk was a WAV an API accepts, against the "every chunk its own valid WAV header".
/// It is now split on frames, its data size read from `ds64`, with a RIFF header per chunk.
#[test]
fn an_rf64_wav_is_split_on_frames_by_its_ds64_data_size() {
    let all = samples(300, 16);
    let plain = wav(spec(1, 16), &all);
    // A LIST chunk after the data: the ds64 size, not the end of the input, bounds the audio.
    let input = rf64(&plain, 600, b"LIST\x04\x00\x00\x00info");
    for len in [None, Some(input.len() as u64)] {
        let stream = split(&input[..], &plan(244), len).expect("a WAV");
        assert_eq!(stream.kind(), ChunkKind::Wav, "{len:?}");
        // Known once checked against the input's length (see
        // `a_header_alone_gives_no_totals_and_an_input_past_its_given_length_is_refused`).
        assert_eq!(stream.total_bytes(), len.map(|_| 600), "{len:?}");
        assert_eq!(stream.total_chunks(), len.map(|_| 3), "{len:?}");
        let got: Vec<AudioChunk> = stream.collect::<Result<_, _>>().expect("splits");
        assert_eq!(got.len(), 3, "{len:?}");
        let rebuilt: Vec<i32> = got.iter().flat_map(|c| parse(c).1).collect();
        assert_eq!(rebuilt, all, "{len:?}");
        assert!(got.iter().all(|c| &c.data()[..4] == b"RIFF"));
        // Preamble 12, ds64 8 + 28, fmt 8 + 16, data header 8.
        assert_eq!(got[0].info().source_offset, 12 + 36 + 24 + 8);
    }
    // A ds64 size beyond the input is a truncation, as a 32-bit one is.
    let lying = rf64(&plain, 1 << 40, b"");
    assert!(matches!(
        split(&lying[..], &plan(244), Some(lying.len() as u64)),
        Err(SplitError::Truncated {
            expected: 0x100_0000_0000,
            got: 600
        })
    ));
    // A ds64 size of 0 is a streaming writer's: to the end, like a 32-bit 0.
    let streamed = rf64(&plain, 0, b"");
    let got = chunks(&streamed, &plan(244), None).unwrap();
    assert_eq!(got.iter().flat_map(|c| parse(c).1).collect::<Vec<_>>(), all);
    // BW64 is the same layout under another tag.
    let mut bw64 = input.clone();
    bw64[..4].copy_from_slice(b"BW64");
    assert_eq!(chunks(&bw64, &plan(244), None).unwrap().len(), 3);
}

/// Bug: without the input's length, `total_chunks` and `total_bytes` took a WAV header at its
/// word. An RF64 header declaring 2^62 bytes of data over 600 real ones announced 2.3 × 10^16
/// chunks of 100 frames (a caller sizing its bookkeeping by the count would abort), and the
/// lie showed only as `Truncated` once the input ran out. The totals are now known only when
/// the length was given, against which the header is checked at once; the stream itself
/// still stops at the declared size, and still fails as `Truncated` at the input's end.
#[test]
fn a_wav_header_alone_gives_no_totals() {
    let all = samples(300, 16);
    let lying = rf64(&wav(spec(1, 16), &all), 1 << 62, b"");
    let stream = split(&lying[..], &plan(244), None).expect("a WAV");
    assert_eq!((stream.total_chunks(), stream.total_bytes()), (None, None));
    let got: Vec<Result<AudioChunk, SplitError>> = stream.collect();
    assert_eq!(got.len(), 4, "three chunks, then the error");
    assert!(got[..3].iter().all(Result::is_ok));
    assert!(matches!(
        got[3],
        Err(SplitError::Truncated {
            expected: 0x4000_0000_0000_0000,
            got: 600
        })
    ));
    // An honest plain WAV, too: its totals come with its length.
    let honest = wav(spec(1, 16), &all);
    let stream = split(&honest[..], &plan(244), None).expect("a WAV");
    assert_eq!((stream.total_chunks(), stream.total_bytes()), (None, None));
    let stream = split(&honest[..], &plan(244), Some(honest.len() as u64)).expect("a WAV");
    assert_eq!(
        (stream.total_chunks(), stream.total_bytes()),
        (Some(3), Some(600))
    );
}

/// Bug: an input that went on past the length given to `split` was cut off there without a
/// word wherever that length ends the audio (byte-split input, raw PCM, a streamed WAV): the
/// chunks covered the first `given` bytes and the stream ended cleanly, so a transcript of
/// part of the input passed for the whole. The stream now reads one byte past the length
/// before it yields its last chunk, and a byte there fails it, naming both lengths. A length
/// shorter than the WAV header already read is refused at once; for a WAV whose header
/// gives the data size, the header ends the audio, and only the header must fit.
#[test]
fn an_input_longer_than_its_given_length_is_refused() {
    let longer = |stream: Result<Vec<AudioChunk>, SplitError>| match stream {
        Err(SplitError::LongerThanGiven { given, at_least }) => (given, at_least),
        other => panic!("not LongerThanGiven: {other:?}"),
    };
    // Bytes: the chunks of the first 10 of 12 bytes, then the error in place of the last.
    let input = noise(12, 3);
    let stream = split(&input[..], &plan(4), Some(10)).unwrap();
    let got: Vec<Result<AudioChunk, SplitError>> = stream.collect();
    assert_eq!(got.len(), 3);
    assert!(got[..2].iter().all(Result::is_ok));
    let error = got[2]
        .as_ref()
        .expect_err("the input goes on past 10 bytes");
    assert!(matches!(
        error,
        SplitError::LongerThanGiven {
            given: 10,
            at_least: 11
        }
    ));
    let message = error.to_string();
    assert!(
        message.contains("10") && message.contains("11"),
        "{message}"
    );
    // Said to be empty, it is not.
    assert_eq!(longer(chunks(&input, &plan(4), Some(0))), (0, 1));
    // Raw PCM: 500 frames given, 501 there.
    let pcm = plan(244).format(InputFormat::RawPcm(PcmSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        float: false,
    }));
    let frames = noise(1002, 4);
    assert_eq!(longer(chunks(&frames, &pcm, Some(1000))), (1000, 1001));
    // A streamed WAV, whose data runs to the end of the input, one frame past the length.
    let mut streamed = wav(spec(1, 16), &samples(300, 16));
    streamed[40..44].copy_from_slice(&0u32.to_le_bytes());
    let len = streamed.len() as u64;
    assert_eq!(
        longer(chunks(&streamed, &plan(244), Some(len - 2))),
        (len - 2, len - 1)
    );
    // A length that does not even cover the header just read.
    assert_eq!(longer(chunks(&streamed, &plan(244), Some(40))), (40, 44));
    // The right lengths split as before.
    assert_eq!(chunks(&input, &plan(4), Some(12)).unwrap().len(), 3);
    assert_eq!(chunks(&frames, &pcm, Some(1002)).unwrap().len(), 6);
    assert_eq!(chunks(&streamed, &plan(244), Some(len)).unwrap().len(), 3);
    // A WAV whose header gives its data size ends its audio there: a length that leaves out
    // only what follows the data (here a LIST chunk) loses no audio, and is not checked.
    let mut tagged = wav(spec(1, 16), &samples(300, 16));
    tagged.extend_from_slice(b"LIST\x04\x00\x00\x00info");
    let got = chunks(&tagged, &plan(244), Some(644)).unwrap();
    assert_eq!(got.iter().map(|c| c.info().new_bytes).sum::<u64>(), 600);
}

/// Bug: a `WAVE_FORMAT_EXTENSIBLE` WAV whose valid bits are narrower than its container (20
/// bits in 24, as some recorders write) parses in `hound`, which reports the valid bits, but
/// `hound` writes only 8, 16, 24 or 32 bits, so the splitter failed it as an unsupported WAV.
/// Its chunks now declare the container's 24 bits: the same bytes, the same sample values.
#[test]
fn an_extensible_wav_with_fewer_valid_bits_than_its_container_is_split() {
    let all = samples(2 * 300, 24);
    let mut input = wav(spec(2, 24), &all);
    // hound wrote WAVE_FORMAT_EXTENSIBLE (24 bits); its valid-bits field is at offset 38.
    assert_eq!(&input[20..22], &0xFFFEu16.to_le_bytes());
    input[38..40].copy_from_slice(&20u16.to_le_bytes());
    assert_eq!(
        hound::WavReader::new(&input[..])
            .unwrap()
            .spec()
            .bits_per_sample,
        20
    );
    let got = chunks(&input, &plan(668), None).expect("splits"); // (668 - 68) / 6 = 100 frames
    assert_eq!(got.len(), 3);
    let mut rebuilt = Vec::new();
    for chunk in &got {
        let (chunk_spec, chunk_samples) = parse(chunk);
        assert_eq!(chunk_spec, spec(2, 24));
        rebuilt.extend(chunk_samples);
    }
    assert_eq!(rebuilt, all);
}

/// Bug: a mono (or stereo) `WAVE_FORMAT_EXTENSIBLE` WAV of 16 valid bits in 32-bit containers
/// got chunks whose header `hound` writes as plain PCM, 16 bits in 4-byte frames: a header
/// with no valid-bits field, whose block align contradicts its bits, and which `sox` reads as
/// two packed 16-bit samples per frame (twice the duration, a zero between every two
/// samples). The chunks now declare 32-bit samples, so every header says what its bytes hold.
#[test]
fn a_narrow_extensible_wav_gets_chunk_headers_that_say_what_their_frames_hold() {
    // 16-bit samples left-justified in 32 bits, as WAVE_FORMAT_EXTENSIBLE: hound writes that
    // header for 3 channels of 32 bits; made mono, with 16 valid bits, here.
    let left_justified: Vec<i32> = samples(300, 16).iter().map(|s| s << 16).collect();
    let mut input = wav(spec(3, 32), &left_justified);
    assert_eq!(&input[20..22], &0xFFFEu16.to_le_bytes());
    input[38..40].copy_from_slice(&16u16.to_le_bytes()); // valid bits
    input[22..24].copy_from_slice(&1u16.to_le_bytes()); // channels
    input[28..32].copy_from_slice(&(4u32 * 8000).to_le_bytes()); // byte rate
    input[32..34].copy_from_slice(&4u16.to_le_bytes()); // block align
    input[40..44].copy_from_slice(&1u32.to_le_bytes()); // channel mask
    assert_eq!(
        hound::WavReader::new(&input[..]).unwrap().spec(),
        spec(1, 16)
    );
    let got = chunks(&input, &plan(468), None).expect("splits"); // (468 - 68) / 4 = 100 frames
    assert_eq!(got.len(), 3);
    let mut rebuilt = Vec::new();
    for chunk in &got {
        let data = chunk.data();
        // The fmt chunk's block align and bits per sample (the container's): 4 bytes, 32 bits.
        let block_align = u16::from_le_bytes([data[32], data[33]]);
        let bits = u16::from_le_bytes([data[34], data[35]]);
        assert_eq!((block_align, bits), (4, 32), "chunk {}", chunk.index());
        let (chunk_spec, chunk_samples) = parse(chunk);
        assert_eq!(chunk_spec, spec(1, 32));
        rebuilt.extend(chunk_samples);
    }
    assert_eq!(rebuilt, left_justified);
}

/// Bug: `hound` reads a float `WAVE_FORMAT_EXTENSIBLE` header's valid bits (24 here), and its
/// writer panics on a float of any width but 32 — so 68 bytes of crafted header made `split`,
/// a library call on untrusted input, panic. A float whose container is 32 bits is now split
/// as 32-bit floats (the container's); one in another container is a `Wav` error.
#[test]
fn a_float_wav_with_odd_valid_bits_is_split_by_its_container_or_refused_without_a_panic() {
    let float = hound::WavSpec {
        sample_format: hound::SampleFormat::Float,
        ..spec(3, 32)
    };
    let all: Vec<f32> = (0..3 * 200).map(|i| i as f32 / 8.0).collect();
    let mut out = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, float).unwrap();
    for &sample in &all {
        writer.write_sample(sample).unwrap();
    }
    writer.finalize().unwrap();
    let mut input = out.into_inner();
    assert_eq!(&input[20..22], &0xFFFEu16.to_le_bytes()); // extensible: 3 channels
    input[38..40].copy_from_slice(&24u16.to_le_bytes()); // 24 valid bits in 32
    let got = chunks(&input, &plan(668), None).expect("splits"); // (668 - 68) / 12 = 50 frames
    assert_eq!(got.len(), 4);
    let mut rebuilt = Vec::new();
    for chunk in &got {
        let mut reader = hound::WavReader::new(&chunk.data()[..]).unwrap();
        assert_eq!(reader.spec(), float);
        rebuilt.extend(reader.samples::<f32>().map(Result::unwrap));
    }
    assert_eq!(rebuilt, all);
    // 16-bit float containers: 6-byte frames, 16 bits in the size field and the valid bits.
    input[28..32].copy_from_slice(&(6u32 * 8000).to_le_bytes());
    input[32..34].copy_from_slice(&6u16.to_le_bytes());
    input[34..36].copy_from_slice(&16u16.to_le_bytes());
    input[38..40].copy_from_slice(&16u16.to_le_bytes());
    let spec16 = hound::WavReader::new(&input[..]).unwrap().spec();
    assert_eq!(
        (spec16.bits_per_sample, spec16.sample_format),
        (16, hound::SampleFormat::Float)
    );
    assert!(matches!(
        split(&input[..], &plan(668), None),
        Err(SplitError::Wav(hound::Error::Unsupported))
    ));
}

/// Bug: a WAV whose block align is not a multiple of its channel count (3-byte frames of 2
/// channels of 8 bits) parses in `hound`, which takes `block_align / channels` bytes per
/// sample, so its chunks were cut in, and declared, 2-byte frames that straddle the input's
/// 3-byte ones. No WAV header holds such frames: it is `InvalidPcm` now.
#[test]
fn a_wav_whose_block_align_is_not_whole_samples_per_channel_is_refused() {
    let mut input = wav(spec(2, 8), &samples(2 * 30, 8)); // 60 bytes: 20 frames of 3 bytes
    input[28..32].copy_from_slice(&(3u32 * 8000).to_le_bytes()); // byte rate
    input[32..34].copy_from_slice(&3u16.to_le_bytes()); // block align
    assert_eq!(
        hound::WavReader::new(&input[..]).unwrap().spec(),
        spec(2, 8)
    );
    for len in [None, Some(input.len() as u64)] {
        let result = chunks(&input, &plan(100), len);
        assert!(
            matches!(result, Err(SplitError::InvalidPcm { .. })),
            "{len:?}: {result:?}"
        );
    }
}

/// Bug: a `WAVE_FORMAT_EXTENSIBLE` header whose valid bits exceed its container (32 valid bits
/// in 16-bit samples) is read by `hound` at its word, and the chunks declared the same: 32-bit
/// samples in 2-byte containers, a header no reader can take literally (`hound` itself cannot
/// read its samples). The chunks now declare the container's 16 bits, which the bytes hold.
#[test]
fn an_extensible_wav_with_more_valid_bits_than_its_container_declares_the_container() {
    let all = samples(3 * 100, 16);
    let mut input = wav(spec(3, 16), &all); // WAVE_FORMAT_EXTENSIBLE: 3 channels
    assert_eq!(&input[20..22], &0xFFFEu16.to_le_bytes());
    input[38..40].copy_from_slice(&32u16.to_le_bytes()); // valid bits
    assert_eq!(
        hound::WavReader::new(&input[..]).unwrap().spec(),
        spec(3, 32)
    );
    let got = chunks(&input, &plan(368), None).expect("splits"); // (368 - 68) / 6 = 50 frames
    assert_eq!(got.len(), 2);
    let mut rebuilt = Vec::new();
    for chunk in &got {
        let (chunk_spec, chunk_samples) = parse(chunk);
        assert_eq!(chunk_spec, spec(3, 16));
        rebuilt.extend(chunk_samples);
    }
    assert_eq!(rebuilt, all);
}

#[test]
fn raw_pcm_chunks_get_wav_headers() {
    let pcm = noise(2 * 500, 9); // 500 frames of 16-bit mono
    let format = InputFormat::RawPcm(PcmSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        float: false,
    });
    let got = chunks(&pcm, &plan(244).format(format), Some(1000)).unwrap();
    assert_eq!(got.len(), 5);
    for chunk in &got {
        let (spec, samples) = parse(chunk);
        assert_eq!(
            (spec.channels, spec.sample_rate, samples.len()),
            (1, 8000, 100)
        );
        assert_eq!(
            &chunk.data()[44..],
            &pcm[chunk.info().source_offset as usize..][..200]
        );
    }
    assert!(matches!(
        split(&pcm[..999], &plan(244).format(format), Some(999)),
        Err(SplitError::PartialFrame { extra: 1 })
    ));
}

/// Bug: a raw PCM layout whose frame size does not fit the WAV header's 16 bits, or whose byte
/// rate does not fit its 32, reached `hound`'s header writer, which overflowed computing the
/// byte rate (a panic in debug builds, a header with a wrapped rate and block align in
/// release). Such a layout has no valid WAV header: it is `InvalidPcm` now.
#[test]
fn raw_pcm_layouts_too_large_for_a_wav_header_are_refused() {
    let pcm = noise(64, 3);
    let layout = |channels, sample_rate, bits_per_sample| {
        plan(1 << 20).format(InputFormat::RawPcm(PcmSpec {
            channels,
            sample_rate,
            bits_per_sample,
            float: false,
        }))
    };
    for plan in [
        layout(2, u32::MAX, 16),     // byte rate 4 × (2^32 − 1)
        layout(1, 1 << 30, 32),      // byte rate 2^32
        layout(u16::MAX, 8_000, 16), // block align 131,070
    ] {
        let result = split(&pcm[..], &plan, Some(64));
        assert!(
            matches!(result, Err(SplitError::InvalidPcm { .. })),
            "{plan:?}: {:?}",
            result.map(|s| s.total_bytes())
        );
    }
    // The largest layouts that fit still split.
    assert!(split(&pcm[..], &layout(1, u32::MAX / 4, 32), Some(64)).is_ok());
    assert!(split(&pcm[..], &layout(32_767, 1, 16), Some(65_534)).is_ok());
}

#[test]
fn raw_pcm_layouts_with_a_zero_field_are_refused() {
    let pcm = noise(64, 4);
    for (channels, sample_rate, bits_per_sample) in [(0, 8_000, 16), (1, 0, 16), (1, 8_000, 0)] {
        let format = InputFormat::RawPcm(PcmSpec {
            channels,
            sample_rate,
            bits_per_sample,
            float: false,
        });
        let result = split(&pcm[..], &plan(1 << 20).format(format), Some(64));
        assert!(
            matches!(result, Err(SplitError::InvalidPcm { .. })),
            "{format:?}: {:?}",
            result.map(|s| s.total_bytes())
        );
    }
}

#[test]
fn float_pcm_is_32_bit_and_its_chunks_say_float() {
    let pcm = noise(8 * 20, 5); // 20 frames of 32-bit float stereo
    let layout = |bits_per_sample| {
        plan(1 << 20).format(InputFormat::RawPcm(PcmSpec {
            channels: 2,
            sample_rate: 8_000,
            bits_per_sample,
            float: true,
        }))
    };
    let got = chunks(&pcm, &layout(32), Some(160)).unwrap();
    let reader = hound::WavReader::new(Cursor::new(got[0].data().to_vec())).unwrap();
    assert_eq!(
        (reader.spec().sample_format, reader.spec().bits_per_sample),
        (hound::SampleFormat::Float, 32)
    );
    assert_eq!(&got[0].data()[got[0].data().len() - 160..], &pcm[..]);
    for bits in [16, 24] {
        assert!(matches!(
            split(&pcm[..], &layout(bits), Some(160)),
            Err(SplitError::InvalidPcm { .. })
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    /// WAV chunks of any layout, size and overlap: each is a valid WAV of at most the chunk
    /// size whose samples are the input's at its start time, and the new frames of all chunks
    /// are the input's frames exactly once.
    #[test]
    fn wav_chunks_tile_the_frames(
        channels in 1u16..=3,
        bits in prop::sample::select(vec![8u16, 16, 24, 32]),
        frames in 1usize..700,
        max in 120u64..900,
        overlap_ms in 0u64..30,
    ) {
        let spec = spec(channels, bits);
        let all = samples(frames * usize::from(channels), bits);
        let input = wav(spec, &all);
        let plan = plan(max).overlap(Duration::from_millis(overlap_ms));
        let got: Result<Vec<AudioChunk>, _> = chunks(&input, &plan, None);
        let got = match got {
            Err(SplitError::OverlapTooLarge { .. } | SplitError::ChunkTooSmall { .. }) => return Ok(()),
            other => other.unwrap(),
        };
        let ch = usize::from(channels);
        let mut rebuilt = Vec::new();
        for chunk in &got {
            prop_assert!(chunk.data().len() as u64 <= max);
            let (chunk_spec, chunk_samples) = parse(chunk);
            prop_assert_eq!(chunk_spec, spec);
            let info = chunk.info();
            let start = (info.start_time.unwrap().as_nanos() * 8000).div_ceil(1_000_000_000) as usize;
            prop_assert_eq!(&chunk_samples[..], &all[start * ch..start * ch + chunk_samples.len()]);
            let overlap = (info.overlap.unwrap().as_nanos() * 8000).div_ceil(1_000_000_000) as usize;
            rebuilt.extend_from_slice(&chunk_samples[overlap * ch..]);
        }
        prop_assert_eq!(rebuilt, all);
    }
}

/// Chunks of this size are read into buffers of `BUFFER` bytes (a chunk, and a byte for a
/// WAV pad byte): more than the allocator's per-thread caches hold, less than it maps alone.
const POOLED: u64 = 64 * 1024;
const BUFFER: usize = POOLED as usize + 1;

/// A stream's next chunk.
fn next_chunk<R: std::io::Read>(stream: &mut memocache::chunk::ChunkStream<R>) -> AudioChunk {
    stream.next().expect("a chunk").expect("no error")
}

#[test]
fn a_dropped_chunks_buffer_is_read_into_again() {
    let input = noise(4 * POOLED as usize, 5);
    let mut stream = split(&input[..], &plan(POOLED), Some(input.len() as u64)).unwrap();
    let first = next_chunk(&mut stream);
    let at = first.data().as_ptr();
    drop(first);
    // Freed memory of a buffer's size goes to the next allocation of that size: this one,
    // not the next chunk, which can then be where the first was only if its buffer was kept.
    let occupied: Vec<u8> = Vec::with_capacity(BUFFER);
    let second = next_chunk(&mut stream);
    assert_eq!(
        second.data().as_ptr(),
        at,
        "the second chunk is read into the first's buffer"
    );
    assert_eq!(
        &second.data()[..],
        &input[POOLED as usize..2 * POOLED as usize]
    );
    drop(occupied);
}

#[test]
fn bytes_still_held_are_not_read_over_while_the_stream_goes_on() {
    // 8-bit mono WAV with an overlap, cut into chunks of 64 KiB, the last of odd length (and
    // over half a chunk, so that a spare buffer fits it): the header patched, the overlap
    // carried and the pad byte added in reused buffers.
    let frames = 5 * POOLED as usize + 40_000;
    let input = wav(spec(1, 8), &samples(frames, 8));
    let plan = plan(POOLED).overlap(Duration::from_millis(100));
    let mut stream = split(&input[..], &plan, Some(input.len() as u64)).unwrap();
    // The payload of `chunk` must be the input's bytes where it lies, behind a header hound
    // reads with as many frames.
    let check = |chunk: &AudioChunk| {
        let info = chunk.info();
        let len = info.source_len as usize;
        let header = chunk.data().len() - len - len % 2;
        let from = info.source_offset as usize;
        assert_eq!(
            &chunk.data()[header..header + len],
            &input[from..from + len],
            "chunk {}",
            info.index
        );
        assert_eq!(parse(chunk).1.len(), len, "chunk {}", info.index);
    };
    let held = next_chunk(&mut stream);
    let held_at = held.data().as_ptr();
    let mut last_at = None;
    let mut reused = 0;
    // Blocks that take the memory of any buffer the stream frees (see the test above).
    let mut occupied = Vec::new();
    for chunk in stream {
        let chunk = chunk.unwrap();
        let at = chunk.data().as_ptr();
        assert_ne!(
            at,
            held_at,
            "chunk {} read over held bytes",
            chunk.info().index
        );
        reused += usize::from(last_at == Some(at));
        last_at = Some(at);
        check(&chunk);
        drop(chunk);
        occupied.push(Vec::<u8>::with_capacity(BUFFER));
    }
    // Every chunk after the second went into the buffer of the one before it.
    assert_eq!(reused, 4);
    check(&held);
    assert_eq!(held.info().index, 0);
}

/// Until session 29 a chunk was read into any spare buffer: a short one (a file's last, a
/// small file's only one) into a buffer sized for a full chunk, which bytes a caller kept of
/// it held whole — up to 25 MB for a few bytes a cache charged for their length.
#[test]
fn a_short_chunk_is_not_read_into_a_spare_buffer_far_larger_than_it() {
    let input = noise(POOLED as usize + 100, 6);
    let mut stream = split(&input[..], &plan(POOLED), Some(input.len() as u64)).unwrap();
    let first = next_chunk(&mut stream);
    let at = first.data().as_ptr();
    // Back to the stream, which keeps it (so no allocation can be where it is).
    drop(first);
    let last = next_chunk(&mut stream);
    assert_eq!(&last.data()[..], &input[POOLED as usize..]);
    assert_ne!(
        last.data().as_ptr(),
        at,
        "the last 100 bytes were read into the first chunk's 64 KiB buffer"
    );
}
