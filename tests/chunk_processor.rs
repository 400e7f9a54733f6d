//! The processor: ordering, retries, failure and resume, cancellation, memo hits, progress.

use std::collections::HashSet;
use std::io::{Cursor, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use memocache::chunk::{
    AudioChunk, CancelToken, ChunkPlan, ChunkResult, ChunkedProcessor, ProcessError, ProcessOutput,
    Progress, RunOptions, Segment, SplitError,
};
use memocache::{
    Cache, CacheKey, Clock, ConcurrencyLimit, ManualClock, RetryConfig, SharedClock, Timestamp,
};
use parking_lot::{Condvar, Mutex};

mod clock_support;
use clock_support::cache_on;

mod noise_support;
use noise_support::noise;

const CHUNK: u64 = 64;

fn cache() -> Cache {
    Cache::builder().max_bytes(64 << 20).build().unwrap()
}

fn processor(cache: &Cache, concurrency: usize, retry: RetryConfig) -> ChunkedProcessor {
    ChunkedProcessor::builder(cache.clone(), "test-model/1")
        .plan(ChunkPlan::with_chunk_bytes(CHUNK).unwrap())
        .concurrency(ConcurrencyLimit::new(concurrency).unwrap())
        .retry(retry)
        .language("en")
        .build()
        .unwrap()
}

/// A WAV of 300 ms: 300 mono 16-bit samples at 1 kHz (600 bytes of audio).
fn wav_300ms() -> Vec<u8> {
    mono_wav(1000, (0..300).map(|i| i as i16))
}

/// A mono integer-PCM WAV of `samples` at `sample_rate`, its sample width that of `S`.
fn mono_wav<S: hound::Sample>(sample_rate: u32, samples: impl IntoIterator<Item = S>) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 8 * std::mem::size_of::<S>() as u16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut wav, spec).unwrap();
    for sample in samples {
        writer.write_sample(sample).unwrap();
    }
    writer.finalize().unwrap();
    wav.into_inner()
}

fn no_retry() -> RetryConfig {
    RetryConfig::fixed(0, Duration::ZERO)
}

/// `chunks` chunks of pseudo-random bytes (no two chunks alike).
fn input(chunks: usize) -> Vec<u8> {
    noise(chunks * CHUNK as usize, 0x9e37_79b9_7f4a_7c15)
}

/// The chunk function under test. Like any memoizable function it depends on the chunk's
/// bytes only: identical chunks share one cache entry, whatever their index.
fn describe(chunk: &AudioChunk) -> ChunkResult {
    ChunkResult::from_text(hex(chunk.data()))
}

/// A processor for `identity` over a new cache, whose chunks of `chunk_bytes` overlap by
/// `overlap`.
fn overlapping(identity: &str, chunk_bytes: u64, overlap: Duration) -> ChunkedProcessor {
    ChunkedProcessor::builder(cache(), identity)
        .plan(
            ChunkPlan::with_chunk_bytes(chunk_bytes)
                .unwrap()
                .overlap(overlap),
        )
        .build()
        .unwrap()
}

/// Runs `p` with `f` and `options` over `data`, read from memory.
fn run_on<F, E>(
    p: &ChunkedProcessor,
    data: &[u8],
    f: &F,
    options: RunOptions<'_>,
) -> Result<ProcessOutput, ProcessError<E>>
where
    F: Fn(&AudioChunk) -> Result<ChunkResult, E> + Sync,
    E: std::fmt::Display + Send,
{
    p.process_reader(Cursor::new(data), f, options)
}

fn hex(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn expected(data: &[u8]) -> Vec<String> {
    data.chunks(CHUNK as usize).map(hex).collect()
}

fn texts(out: &ProcessOutput) -> Vec<String> {
    out.chunks.iter().map(|c| c.result.text.clone()).collect()
}

/// Records which chunk indices the function was called for.
#[derive(Default)]
struct Calls(Mutex<Vec<usize>>);

impl Calls {
    fn record(&self, chunk: &AudioChunk) {
        self.0.lock().push(chunk.index());
    }
    fn take(&self) -> Vec<usize> {
        let mut calls = std::mem::take(&mut *self.0.lock());
        calls.sort_unstable();
        calls
    }
}

#[test]
fn results_are_in_chunk_order_when_chunks_finish_out_of_order() {
    let data = input(12);
    let cache = cache();
    // Each even chunk waits until its odd neighbour has finished, so with two workers every
    // pair completes in reverse order.
    let finished = Mutex::new(HashSet::new());
    let cv = Condvar::new();
    let order = Mutex::new(Vec::new());
    let f = |chunk: &AudioChunk| {
        let i = chunk.index();
        let mut done = finished.lock();
        if i.is_multiple_of(2) {
            cv.wait_while(&mut done, |d| !d.contains(&(i + 1)));
        }
        done.insert(i);
        order.lock().push(i);
        cv.notify_all();
        Ok::<_, String>(describe(chunk))
    };
    let out = run_on(
        &processor(&cache, 2, no_retry()),
        &data,
        &f,
        RunOptions::new(),
    )
    .unwrap();
    assert_eq!(texts(&out), expected(&data));
    let order = order.into_inner();
    assert_eq!(order[..4], [1, 0, 3, 2]);
    assert_eq!(out.result.text, expected(&data).join(" "));
    assert_eq!(
        (out.computed, out.cached, out.whole_file_hit),
        (12, 0, false)
    );
}

#[test]
fn failing_chunks_are_retried() {
    let data = input(4);
    let attempts = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        if chunk.index() == 1 && attempts.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err("flaky upload".to_owned());
        }
        Ok(describe(chunk))
    };
    let out = run_on(
        &processor(&cache(), 2, RetryConfig::fixed(2, Duration::from_millis(1))),
        &data,
        &f,
        RunOptions::new(),
    )
    .unwrap();
    assert_eq!(texts(&out), expected(&data));
    assert_eq!(out.retries, 2);
    assert_eq!(out.chunks[1].attempts, 3);
    assert_eq!(out.chunks[0].attempts, 1);
}

#[test]
fn a_chunk_that_exhausts_its_retries_fails_the_run_by_name_and_the_next_run_resumes() {
    let data = input(10);
    let cache = cache();
    let calls = Calls::default();
    let failing = |chunk: &AudioChunk| {
        calls.record(chunk);
        if chunk.index() == 6 {
            return Err(format!("HTTP 500 on chunk of {} bytes", chunk.data().len()));
        }
        Ok(describe(chunk))
    };
    let p = processor(&cache, 2, RetryConfig::fixed(1, Duration::from_millis(1)));
    let err = run_on(&p, &data, &failing, RunOptions::new()).unwrap_err();
    match &err {
        ProcessError::Chunk {
            index,
            attempts,
            cause,
        } => {
            assert_eq!((*index, *attempts), (6, 2));
            assert_eq!(cause, "HTTP 500 on chunk of 64 bytes");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "chunk 6 failed after 2 attempt(s): HTTP 500 on chunk of 64 bytes"
    );
    let first: HashSet<usize> = calls.take().into_iter().filter(|&i| i != 6).collect();
    assert!(
        (0..6).all(|i| first.contains(&i)),
        "chunks before 6 ran: {first:?}"
    );

    // The resumed run computes exactly what the failed run did not finish.
    let ok = |chunk: &AudioChunk| {
        calls.record(chunk);
        Ok::<_, String>(describe(chunk))
    };
    let out = run_on(&p, &data, &ok, RunOptions::new()).unwrap();
    let second = calls.take();
    let missing: Vec<usize> = (0..10).filter(|i| !first.contains(i)).collect();
    assert_eq!(second, missing);
    assert_eq!((out.computed, out.cached), (missing.len(), first.len()));
    assert_eq!(texts(&out), expected(&data));
}

#[test]
fn editing_one_chunk_recomputes_exactly_that_chunk() {
    let mut data = input(10);
    let cache = cache();
    let calls = Calls::default();
    let f = |chunk: &AudioChunk| {
        calls.record(chunk);
        Ok::<_, String>(describe(chunk))
    };
    let p = processor(&cache, 3, no_retry());
    let out = run_on(&p, &data, &f, RunOptions::new()).unwrap();
    assert_eq!((calls.take().len(), out.computed), (10, 10));

    data[4 * CHUNK as usize + 17] ^= 0xff;
    let out = run_on(&p, &data, &f, RunOptions::new()).unwrap();
    assert_eq!(calls.take(), [4]);
    assert_eq!(
        (out.computed, out.cached, out.whole_file_hit),
        (1, 9, false)
    );
    assert_eq!(texts(&out), expected(&data));

    // Unchanged input: the whole-file result, no chunk touched.
    let again = run_on(&p, &data, &f, RunOptions::new()).unwrap();
    assert!(again.whole_file_hit);
    assert!(calls.take().is_empty());
    assert_eq!(again.result, out.result);
    assert_eq!(again.file_key, out.file_key);

    // Another model version shares nothing, not even the whole-file key's record.
    let v2 = ChunkedProcessor::builder(cache.clone(), "test-model/2")
        .plan(ChunkPlan::with_chunk_bytes(CHUNK).unwrap())
        .language("en")
        .build()
        .unwrap();
    let out = run_on(&v2, &data, &f, RunOptions::new()).unwrap();
    assert_eq!((out.whole_file_hit, out.computed), (false, 10));
    assert_eq!(calls.take().len(), 10);
    // Another language: same.
    let fr = ChunkedProcessor::builder(cache.clone(), "test-model/1")
        .plan(ChunkPlan::with_chunk_bytes(CHUNK).unwrap())
        .language("fr")
        .build()
        .unwrap();
    assert_eq!(
        run_on(&fr, &data, &f, RunOptions::new()).unwrap().computed,
        10
    );
    assert_ne!(
        fr.chunk_key(&chunk0(&data)).unwrap(),
        p.chunk_key(&chunk0(&data)).unwrap()
    );
}

fn chunk0(data: &[u8]) -> AudioChunk {
    memocache::chunk::split(data, &ChunkPlan::with_chunk_bytes(CHUNK).unwrap(), None)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// A WAV chunk's key is its content digest, the identity and the language (its header
/// carries its rate); a byte range's adds its duration, which the plan's byte rate gave it,
/// or an empty part for none.
#[test]
fn chunk_keys_are_built_from_the_content_digest_and_identity() {
    let p = processor(&cache(), 1, no_retry());
    let key = |chunk: &AudioChunk| {
        let content = memocache::CacheKey::from_content(chunk.data(), "chunk").unwrap();
        memocache::CacheKey::builder("chunk")
            .unwrap()
            .part(content.digest())
            .part("test-model/1")
            .part("en")
    };
    let wav = chunk0(&wav_300ms());
    assert_eq!(p.chunk_key(&wav).unwrap(), key(&wav).finish());

    let bytes = chunk0(&input(2));
    let untimed = key(&bytes).part("bytes").part(b"").finish();
    assert_eq!(p.chunk_key(&bytes).unwrap(), untimed);
    let plan = ChunkPlan::with_chunk_bytes(CHUNK).unwrap().byte_rate(32);
    let timed = memocache::chunk::split(&input(2)[..], &plan, None)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    // 64 bytes at 32 bytes a second.
    let two_seconds = Duration::from_secs(2).as_nanos().to_le_bytes();
    let expected = key(&timed).part("bytes").part(two_seconds).finish();
    assert_eq!(p.chunk_key(&timed).unwrap(), expected);
}

/// A processor over `cache` whose plan cuts chunks of `CHUNK` bytes at `byte_rate`.
fn at_rate(cache: &Cache, byte_rate: Option<u64>) -> ChunkedProcessor {
    let plan = ChunkPlan::with_chunk_bytes(CHUNK).unwrap();
    ChunkedProcessor::builder(cache.clone(), "test-model/1")
        .plan(byte_rate.map_or(plan, |rate| plan.byte_rate(rate)))
        .concurrency(ConcurrencyLimit::new(1).unwrap())
        .retry(no_retry())
        .language("en")
        .build()
        .unwrap()
}

/// A chunk function that, like the crate's own transcribers, gives one segment spanning the
/// chunk when its duration is known.
fn spanning(chunk: &AudioChunk) -> ChunkResult {
    let mut result = describe(chunk);
    if let Some(end) = chunk.info().duration {
        result.segments.push(Segment {
            start: Duration::ZERO,
            end,
            text: result.text.clone(),
        });
    }
    result
}

/// The segments' times, in milliseconds.
fn times(result: &ChunkResult) -> Vec<(u128, u128)> {
    result
        .segments
        .iter()
        .map(|s| (s.start.as_millis(), s.end.as_millis()))
        .collect()
}

/// Bug: a byte range's duration comes from the plan's byte rate, not from its bytes, but its
/// chunk key (bytes, identity, language) and the whole-file record did not say which rate:
/// the same bytes run at 100 B/s, then at 50 B/s over one cache, were served the 100 B/s
/// segments (0–640 ms instead of 0–1280 ms), and a run without a rate segments it cannot
/// time. Each run now gets its own rate's times, and each rate's chunks stay cached.
#[test]
fn byte_split_chunks_are_timed_by_each_runs_own_byte_rate() {
    let data = input(2);
    let cache = cache();
    let calls = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(spanning(chunk))
    };
    // Chunk entries alone: the whole-file memo is off.
    let chunks_only = |rate| {
        let options = RunOptions::new().skip_whole_file_memo();
        let out = run_on(&at_rate(&cache, rate), &data, &f, options).unwrap();
        (times(&out.result), out.cached)
    };
    // 64 bytes a chunk: 640 ms at 100 B/s, 1280 ms at 50 B/s.
    assert_eq!(chunks_only(Some(100)), (vec![(0, 640), (640, 1280)], 0));
    assert_eq!(chunks_only(Some(50)), (vec![(0, 1280), (1280, 2560)], 0));
    assert_eq!(chunks_only(None), (vec![], 0));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    // Every rate's entries are kept: each run again is served from the cache.
    assert_eq!(chunks_only(Some(100)), (vec![(0, 640), (640, 1280)], 2));
    assert_eq!(chunks_only(Some(50)), (vec![(0, 1280), (1280, 2560)], 2));
    assert_eq!(chunks_only(None), (vec![], 2));
    assert_eq!(calls.load(Ordering::SeqCst), 6);

    // The whole-file record: a run at another rate is not served it, but merges again from
    // its own rate's chunks; one at the record's rate is.
    let whole = |rate| {
        let out = run_on(&at_rate(&cache, rate), &data, &f, RunOptions::new()).unwrap();
        (times(&out.result), out.whole_file_hit)
    };
    assert_eq!(whole(Some(100)), (vec![(0, 640), (640, 1280)], false));
    assert_eq!(whole(Some(50)), (vec![(0, 1280), (1280, 2560)], false));
    assert_eq!(whole(Some(50)), (vec![(0, 1280), (1280, 2560)], true));
    assert_eq!(whole(None), (vec![], false));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

/// A WAV chunk's header gives its rate, whatever the plan's byte rate says: runs with other
/// byte rates share its chunk entries and its whole-file record, as before.
#[test]
fn wav_chunks_are_shared_by_runs_with_any_byte_rate() {
    let wav = wav_300ms();
    let cache = cache();
    let calls = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(spanning(chunk))
    };
    let first = run_on(
        &at_rate(&cache, Some(100)),
        &wav,
        &f,
        RunOptions::new().skip_whole_file_memo(),
    )
    .unwrap();
    let computed = calls.load(Ordering::SeqCst);
    assert_eq!((first.computed, first.cached), (computed, 0));
    let second = run_on(&at_rate(&cache, None), &wav, &f, RunOptions::new()).unwrap();
    assert_eq!((second.computed, second.cached), (0, computed));
    assert_eq!(second.result, first.result);
    // 300 frames at 1 kHz.
    assert_eq!(times(&second.result).last().map(|t| t.1), Some(300));
    let third = run_on(&at_rate(&cache, Some(50)), &wav, &f, RunOptions::new()).unwrap();
    assert!(third.whole_file_hit);
    assert_eq!(third.result, first.result);
    assert_eq!(calls.load(Ordering::SeqCst), computed);
}

#[test]
fn cancellation_stops_scheduling() {
    let data = input(50);
    let token = CancelToken::new();
    let calls = Calls::default();
    let f = |chunk: &AudioChunk| {
        calls.record(chunk);
        if chunk.index() == 0 {
            token.cancel();
        }
        Ok::<_, String>(describe(chunk))
    };
    let err = run_on(
        &processor(&cache(), 2, no_retry()),
        &data,
        &f,
        RunOptions::new().cancel_token(token.clone()),
    )
    .unwrap_err();
    assert!(
        matches!(err, ProcessError::Cancelled { completed, total: 50 } if completed <= 2),
        "{err:?}"
    );
    // Only the chunks already running when the token was cancelled were called.
    assert!(calls.take().len() <= 2);
}

/// A long input never held in memory: `len` zero bytes made as they are read. It cancels
/// `token` once `cancel_at` bytes were read, and counts the bytes read.
struct LongInput {
    pos: u64,
    len: u64,
    cancel_at: u64,
    token: CancelToken,
    read: u64,
}

impl std::io::Read for LongInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.cancel_at {
            self.token.cancel();
        }
        let n = buf
            .len()
            .min(usize::try_from(self.len - self.pos).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.pos += n as u64;
        self.read += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for LongInput {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = match pos {
            std::io::SeekFrom::Start(at) => at,
            std::io::SeekFrom::End(back) => self.len.saturating_add_signed(back),
            std::io::SeekFrom::Current(by) => self.pos.saturating_add_signed(by),
        };
        Ok(self.pos)
    }
}

/// Bug: the whole-file hashing pass did not look at the cancel token, so a run cancelled while
/// it hashed a long recording read and hashed all of it (256 MiB here; seconds a GiB without
/// SHA-NI) before it returned `Cancelled`. The pass now stops at the next read.
#[test]
fn cancellation_interrupts_the_hashing_pass() {
    let token = CancelToken::new();
    let mut input = LongInput {
        pos: 0,
        len: 256 << 20,
        cancel_at: 1 << 20,
        token: token.clone(),
        read: 0,
    };
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let err = processor(&cache(), 2, no_retry())
        .process_reader(&mut input, &f, RunOptions::new().cancel_token(token))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessError::Cancelled {
                completed: 0,
                total: 0
            }
        ),
        "{err:?}"
    );
    // The read that cancelled, and no other: from_reader reads 64 KiB at a time.
    assert!(
        input.read <= (1 << 20) + (64 << 10),
        "read {} bytes",
        input.read
    );
}

#[test]
fn cancellation_interrupts_a_retry_wait() {
    let data = input(3);
    let token = CancelToken::new();
    let (failed_tx, failed_rx) = mpsc::channel();
    let failed_tx = Mutex::new(failed_tx);
    let f = |_: &AudioChunk| {
        let _ = failed_tx.lock().send(());
        Err::<ChunkResult, _>("always down")
    };
    // A 60 s wait before each retry: returning promptly is only possible if the wait is cut.
    let p = processor(&cache(), 1, RetryConfig::fixed(3, Duration::from_secs(60)));
    let started = Instant::now();
    std::thread::scope(|s| {
        let canceller = token.clone();
        s.spawn(move || {
            // Bounded: if the run ends before any attempt (a split error), the scope would
            // otherwise wait here forever and the test hang instead of failing.
            let _ = failed_rx.recv_timeout(Duration::from_secs(30));
            canceller.cancel();
        });
        let err = run_on(&p, &data, &f, RunOptions::new().cancel_token(token.clone())).unwrap_err();
        assert!(
            matches!(
                err,
                ProcessError::Cancelled {
                    completed: 0,
                    total: 3
                }
            ),
            "{err:?}"
        );
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn retry_backoff_follows_the_cache_clock() {
    let data = input(2);
    let clock = ManualClock::new();
    let cache = cache_on(&clock);
    let failed_once = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        if chunk.index() == 0 && failed_once.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("rate limited".to_owned());
        }
        Ok(describe(chunk))
    };
    // An hour of backoff passes when the test moves the clock, not in real time. The wait's
    // deadline is taken after the failure, so the clock keeps moving until the run is over.
    let p = processor(&cache, 2, RetryConfig::fixed(1, Duration::from_secs(3600)));
    let done = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if failed_once.load(Ordering::SeqCst) > 0 {
                    clock.advance(Duration::from_secs(600));
                }
                std::thread::yield_now();
            }
        });
        let out = run_on(&p, &data, &f, RunOptions::new());
        done.store(true, Ordering::SeqCst);
        out.unwrap()
    });
    assert_eq!((out.retries, out.chunks[0].attempts), (1, 2));
    assert_eq!(texts(&out), expected(&data));
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A reader whose reads fail once it reaches `limit` (a disk or a network share going away).
struct FailingAt {
    inner: Cursor<Vec<u8>>,
    limit: u64,
}

impl std::io::Read for FailingAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.limit.saturating_sub(self.inner.position());
        if left == 0 {
            return Err(std::io::Error::other("the disk went away"));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        self.inner.read(&mut buf[..n])
    }
}

impl std::io::Seek for FailingAt {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn a_split_error_interrupts_a_retry_wait() {
    // Reading fails inside the last chunk while chunk 0 sits in a 60 s retry wait, which the
    // failure must cut short.
    let wav = wav_300ms();
    let limit = wav.len() as u64 - 10;
    let f = |_: &AudioChunk| Err::<ChunkResult, _>("down");
    let p = ChunkedProcessor::builder(cache(), "m/1")
        .plan(ChunkPlan::with_chunk_bytes(244).unwrap())
        .concurrency(ConcurrencyLimit::new(1).unwrap())
        .retry(RetryConfig::fixed(3, Duration::from_secs(60)))
        .build()
        .unwrap();
    let started = Instant::now();
    let reader = FailingAt {
        inner: Cursor::new(wav),
        limit,
    };
    let err = p
        .process_reader(reader, &f, RunOptions::new().skip_whole_file_memo())
        .unwrap_err();
    assert!(
        matches!(err, ProcessError::Split(SplitError::Io(_))),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Bug: a WAV header is untrusted input, and the processor sized its run by it. A 144-byte file
/// whose `data` chunk declared 4 GiB of 1-byte frames made the run allocate a slot for each of
/// the ~4 billion chunks promised — the process aborted — and a smaller lie had every real
/// chunk processed (and progress report a chunk count that was never there) before the run
/// failed as truncated. The run now fails at once, before any chunk runs or is reported.
#[test]
fn a_wav_header_declaring_more_audio_than_the_file_holds_fails_before_any_chunk() {
    let mut wav = mono_wav(8000, (0..300).map(|i| (i % 100) as i8));
    // 30,000 frames declared where 300 are: some 300 chunks of 99 frames (4 GiB aborted).
    wav[40..44].copy_from_slice(&30_000u32.to_le_bytes());
    let calls = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        calls.fetch_add(1, Ordering::Relaxed);
        Ok::<_, String>(describe(chunk))
    };
    let reports = Mutex::new(Vec::new());
    let p = ChunkedProcessor::builder(cache(), "m/1")
        .plan(ChunkPlan::with_chunk_bytes(144).unwrap())
        .concurrency(ConcurrencyLimit::new(1).unwrap())
        .retry(no_retry())
        .build()
        .unwrap();
    let err = run_on(
        &p,
        &wav,
        &f,
        RunOptions::new().on_progress(|p: &Progress| reports.lock().push(*p)),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessError::Split(SplitError::Truncated {
                expected: 30_000,
                got: 300
            })
        ),
        "{err:?}"
    );
    assert_eq!(calls.into_inner(), 0, "no chunk runs on a lying header");
    assert_eq!(
        reports.into_inner(),
        Vec::new(),
        "no progress for chunks that are not there"
    );
}

/// A reader that says (through `seek`) it is `len` bytes long whatever `data` holds: a reader
/// over a file whose size is wrong, a sparse file of mostly nothing, or a character device
/// (`/dev/zero` says 0). It reads on from where it is: the runs here read it once, or read
/// bytes all alike.
struct Claims<R> {
    data: R,
    len: u64,
}

impl<R: std::io::Read> std::io::Read for Claims<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.data.read(buf)
    }
}

impl<R> std::io::Seek for Claims<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        Ok(match pos {
            std::io::SeekFrom::End(0) => self.len,
            _ => 0,
        })
    }
}

/// Bug: the run allocated an outcome slot for every chunk the input's length promised before
/// reading any, and that length is the reader's word: 2^62 bytes in 64-byte chunks panicked
/// with a capacity overflow (a smaller claim aborted the process when the allocation failed)
/// where the split would have found the input truncated. Slots now grow as chunks finish.
#[test]
fn an_input_length_claiming_far_more_than_it_holds_fails_as_truncated_not_on_allocation() {
    let data = input(2);
    let claims = Claims {
        data: Cursor::new(data.clone()),
        len: 1 << 62,
    };
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let err = processor(&cache(), 2, no_retry())
        .process_reader(claims, &f, RunOptions::new().skip_whole_file_memo())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessError::Split(SplitError::Truncated { expected, got })
                if expected == 1 << 62 && got == data.len() as u64
        ),
        "{err:?}"
    );
}

/// Bug: the hashing pass read the input to its end whatever its length said, so a run over an
/// input that yields more than its length (`/dev/zero` through `process_path`, whose length is
/// 0) hashed for ever before the split could refuse it. The pass now hashes the length and
/// the split finds the input longer than it. (`process_path` now refuses `/dev/zero` before
/// reading it, as a device: see the test after this one.)
#[test]
fn an_input_yielding_more_than_its_length_is_refused_without_reading_it_to_its_end() {
    // 1 MiB of zeros stands for an endless input: the run must not read them all.
    let mut endless = Claims {
        data: std::io::Read::take(std::io::repeat(0), 1 << 20),
        len: 100,
    };
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let err = processor(&cache(), 2, no_retry())
        .process_reader(&mut endless, &f, RunOptions::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessError::Split(SplitError::LongerThanGiven {
                given: 100,
                at_least: 101
            })
        ),
        "{err:?}"
    );
    let read = (1 << 20) - endless.data.limit();
    assert!(read < 1 << 20, "read {read} bytes");
}

/// Bug: `process_path` took any path, though a run reads its input twice (to hash it, then to
/// split it). A FIFO's open waited for a writer, for ever with none; a directory opened and
/// failed as "deriving a cache key failed: reading content to hash failed: Is a directory",
/// naming no path. (The pipeline and the command refused such paths; this call, under them,
/// did not.) What is not a regular file is now refused at once as `Open`, naming the path; a
/// link to a FIFO too, and `/dev/zero`, which the hash pass now never reaches.
#[cfg(unix)]
#[test]
fn a_path_that_is_not_a_regular_file_is_refused_at_once_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("talk.wav");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("runs mkfifo");
    assert!(made.success());
    let link = dir.path().join("link.wav");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let mut paths = vec![dir.path().to_owned(), fifo, link];
    if cfg!(target_os = "linux") {
        paths.push("/dev/zero".into());
    }
    let count = paths.len();
    let (done, outcome) = mpsc::channel();
    // On its own thread: on the old code the FIFO's open never returns.
    std::thread::spawn(move || {
        let processor = processor(&cache(), 2, no_retry());
        let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
        for path in paths {
            let err = processor
                .process_path(&path, &f, RunOptions::new())
                .expect_err("refused");
            let _ = done.send((
                path,
                err.to_string(),
                matches!(err, ProcessError::Open { .. }),
            ));
        }
    });
    for _ in 0..count {
        let (path, message, is_open) = outcome
            .recv_timeout(Duration::from_secs(30))
            .expect("refused within 30 s");
        assert!(is_open, "{message}");
        assert!(
            message.starts_with(&format!("opening {} failed: ", path.display())),
            "{message}"
        );
        assert!(message.contains("not a regular file"), "{message}");
    }
}

#[test]
fn progress_is_ordered_timed_by_the_clock_and_ends_at_exactly_one() {
    let data = input(5);
    let clock = ManualClock::new();
    let cache = cache_on(&clock);
    let reports = Mutex::new(Vec::<Progress>::new());
    let f = |chunk: &AudioChunk| {
        clock.advance(Duration::from_secs(2));
        Ok::<_, String>(describe(chunk))
    };
    let p = processor(&cache, 1, no_retry());
    let options = RunOptions::new().on_progress(|p: &Progress| reports.lock().push(*p));
    run_on(&p, &data, &f, options).unwrap();
    let reports = reports.into_inner();
    assert_eq!(reports.len(), 6);
    assert_eq!(
        (
            reports[0].chunks_done,
            reports[0].fraction(),
            reports[0].eta
        ),
        (0, 0.0, None)
    );
    for (k, r) in reports.iter().enumerate() {
        assert_eq!(
            (r.chunks_done, r.chunks_total, r.bytes_total),
            (k, 5, 5 * CHUNK)
        );
        assert_eq!(r.bytes_done, k as u64 * CHUNK);
        assert_eq!(r.elapsed, Duration::from_secs(2 * k as u64));
        if k > 0 {
            // 2 s per chunk so far: the rest takes 2 s per remaining chunk.
            assert_eq!(r.eta, Some(Duration::from_secs(2 * (5 - k as u64))));
        }
    }
    let last = reports.last().unwrap();
    assert_eq!(last.fraction(), 1.0);
    assert_eq!(last.eta, Some(Duration::ZERO));

    // A whole-file hit reports completion at once.
    let reports = Mutex::new(Vec::<Progress>::new());
    let options = RunOptions::new().on_progress(|p: &Progress| reports.lock().push(*p));
    assert!(run_on(&p, &data, &f, options).unwrap().whole_file_hit);
    let reports = reports.into_inner();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].fraction(), reports[0].chunks_cached), (1.0, 5));
}

thread_local! {
    /// How far ahead of the manual clock a [`Skewed`] clock reads on this thread.
    static AHEAD: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// A manual clock read with the calling thread's [`AHEAD`] added: two cores' counters, as
/// `SystemClock` reads them, where a reading may lag one just taken on another core.
#[derive(Debug)]
struct Skewed(ManualClock);

impl Clock for Skewed {
    fn now(&self) -> Timestamp {
        self.0
            .now()
            .saturating_add(AHEAD.with(std::cell::Cell::get))
    }
}

/// A cache on `clock` (which never steps back) that times work on a [`Skewed`] view of it,
/// as a default cache times work on `SystemClock`.
#[derive(Debug)]
struct TimedBySkewed(ManualClock);

impl Clock for TimedBySkewed {
    fn now(&self) -> Timestamp {
        self.0.now()
    }

    fn for_timing(&self) -> Option<SharedClock> {
        Some(Arc::new(Skewed(self.0.clone())))
    }
}

/// Bug: a report's elapsed time was the timing clock's reading less the start, taken under
/// the lock that orders the reports, but readings on two workers' cores need not come in
/// order (`SystemClock` reads each core's counter). Here chunk 0 finishes on a worker whose
/// clock reads 1 s ahead, then chunk 1 on another, after the clock moved 0.5 s: the reports
/// went 0 s, 1 s, 0.5 s. They are now 0 s, 1 s, 1 s.
#[test]
fn elapsed_time_never_steps_back_between_reports() {
    let clock = ManualClock::new();
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .clock(TimedBySkewed(clock.clone()))
        .build()
        .unwrap();
    let reports = Mutex::new(Vec::<Progress>::new());
    let reported = Condvar::new();
    let (started_1, chunk_1_started) = mpsc::channel::<()>();
    let chunk_1_started = Mutex::new(chunk_1_started);
    let f = |chunk: &AudioChunk| {
        if chunk.index() == 0 {
            // Held until chunk 1 runs, so that chunk 1 is on the other worker.
            let started = chunk_1_started.lock().recv_timeout(Duration::from_secs(60));
            assert!(started.is_ok(), "chunk 1 never started");
            AHEAD.with(|ahead| ahead.set(Duration::from_secs(1)));
        } else {
            started_1.send(()).unwrap();
            let mut reports = reports.lock();
            let waited = reported.wait_while_for(
                &mut reports,
                |r| !r.iter().any(|p| p.chunks_done == 1),
                Duration::from_secs(60),
            );
            assert!(!waited.timed_out(), "chunk 0 was never reported");
            drop(reports);
            clock.advance(Duration::from_millis(500));
        }
        Ok::<_, String>(describe(chunk))
    };
    let options = RunOptions::new().on_progress(|p: &Progress| {
        reports.lock().push(*p);
        reported.notify_all();
    });
    processor(&cache, 2, no_retry())
        .process_reader(Cursor::new(input(2)), &f, options)
        .unwrap();
    let seen: Vec<(usize, Duration)> = reports
        .into_inner()
        .iter()
        .map(|p| (p.chunks_done, p.elapsed))
        .collect();
    let second = Duration::from_secs(1);
    assert_eq!(seen, [(0, Duration::ZERO), (1, second), (2, second)]);
}

/// On a default cache, whose clock ticks every few milliseconds, the run is timed on a
/// finer clock (`Clock::for_timing`): a chunk that takes 1 ms shows as at least 1 ms and not
/// as a whole number of milliseconds. Timed on the coarse clock, it failed 3 tries of 3 with
/// timings like `[0ns, 0ns, 4ms, 8ms, 0ns]`: 0 or whole ticks, so the second check cannot
/// pass there.
#[test]
fn a_run_on_a_default_cache_is_timed_finer_than_its_clock_ticks() {
    let cache = cache();
    let p = processor(&cache, 1, no_retry());
    let mut timings = Vec::new();
    for run in 0..5u8 {
        let data = input(1).into_iter().map(|b| b ^ run).collect::<Vec<u8>>();
        let reports = Mutex::new(Vec::<Progress>::new());
        let f = |chunk: &AudioChunk| {
            std::thread::sleep(Duration::from_millis(1));
            Ok::<_, String>(describe(chunk))
        };
        let options = RunOptions::new().on_progress(|p: &Progress| reports.lock().push(*p));
        run_on(&p, &data, &f, options).unwrap();
        let last = *reports.lock().last().expect("a final report");
        assert_eq!(last.chunks_done, 1, "run {run} computed its chunk");
        timings.push(last.elapsed);
    }
    assert!(
        timings.iter().all(|t| *t >= Duration::from_millis(1)),
        "1 ms chunks timed as {timings:?}"
    );
    assert!(
        timings.iter().any(|t| t.as_nanos() % 1_000_000 != 0),
        "every timing is whole milliseconds: {timings:?}"
    );
}

#[test]
fn concurrency_is_bounded_and_concurrent_runs_agree() {
    let data = input(40);
    let cache = cache();
    let in_flight = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        // A little work so that calls overlap.
        let mut x = 0u64;
        for b in chunk.data().iter().cycle().take(20_000) {
            x = x.wrapping_mul(31).wrapping_add(u64::from(*b));
        }
        std::hint::black_box(x);
        in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok::<_, String>(describe(chunk))
    };
    let p = processor(&cache, 3, no_retry());
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| run_on(&p, &data, &f, RunOptions::new())))
            .collect();
        for run in runs {
            let out = run.join().unwrap().unwrap();
            if !out.whole_file_hit {
                assert_eq!(texts(&out), expected(&data));
            }
            assert_eq!(out.result.text, expected(&data).join(" "));
        }
    });
    // Four runs of at most three workers each.
    assert!(peak.load(Ordering::SeqCst) <= 12);
    peak.store(0, Ordering::SeqCst);
    cache.clear();
    run_on(&p, &data, &f, RunOptions::new()).unwrap();
    assert!(peak.load(Ordering::SeqCst) <= 3);
}

#[test]
fn wav_input_merges_segments_on_the_input_timeline() {
    let wav = mono_wav(1000, (0..1000).map(|i| (i % 300) as i16));
    // (244 - 44) / 2 = 100 frames = 100 ms per chunk, 20 ms overlap: stride 80 ms.
    let p = overlapping("segmenter/1", 244, Duration::from_millis(20));
    // One segment per 10 ms of each chunk.
    let f = |chunk: &AudioChunk| {
        let reader =
            hound::WavReader::new(Cursor::new(chunk.data().to_vec())).map_err(|e| e.to_string())?;
        let ms = u64::from(reader.duration());
        let segments = (0..ms / 10)
            .map(|k| Segment {
                start: Duration::from_millis(10 * k),
                end: Duration::from_millis(10 * (k + 1)),
                text: format!("c{}", chunk.index()),
            })
            .collect();
        Ok::<_, String>(ChunkResult {
            text: format!("c{}", chunk.index()),
            segments,
        })
    };
    let out = run_on(&p, &wav, &f, RunOptions::new()).unwrap();
    assert_eq!(out.chunks.len(), 1 + (1000 - 100usize).div_ceil(80));
    // Segments tile 0..1000 ms once each: overlap segments of later chunks are dropped.
    let starts: Vec<u64> = out
        .result
        .segments
        .iter()
        .map(|s| s.start.as_millis() as u64)
        .collect();
    assert_eq!(starts, (0..100).map(|k| 10 * k).collect::<Vec<_>>());
    assert_eq!(out.result.segments[10].text, "c1"); // 100 ms: the first segment chunk 1 adds
}

/// Bug: the merge shifted segment times with `+`, which panics past `Duration::MAX`. The times
/// come from the chunk function, or from a result stored in the cache (a restored snapshot is
/// a file), so a bogus segment time crashed the run. Shifted times now saturate.
#[test]
fn merging_a_segment_time_past_the_duration_range_saturates_instead_of_panicking() {
    let wav = wav_300ms();
    let p = ChunkedProcessor::builder(cache(), "bogus-times/1")
        .plan(ChunkPlan::with_chunk_bytes(244).unwrap()) // 100 ms chunks
        .build()
        .unwrap();
    let f = |chunk: &AudioChunk| {
        Ok::<_, String>(ChunkResult {
            text: format!("c{}", chunk.index()),
            segments: vec![Segment {
                start: Duration::from_millis(5),
                end: Duration::MAX,
                text: format!("c{}", chunk.index()),
            }],
        })
    };
    let out = run_on(&p, &wav, &f, RunOptions::new()).unwrap();
    let times: Vec<(Duration, Duration)> = out
        .result
        .segments
        .iter()
        .map(|s| (s.start, s.end))
        .collect();
    assert_eq!(
        times,
        [0u64, 100, 200].map(|ms| (Duration::from_millis(ms + 5), Duration::MAX))
    );
}

#[test]
fn paths_and_empty_inputs() {
    let data = input(3);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&data).unwrap();
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let p = processor(&cache(), 2, no_retry());
    let out = p.process_path(file.path(), &f, RunOptions::new()).unwrap();
    assert_eq!(texts(&out), expected(&data));

    let err = p
        .process_reader(Cursor::new(Vec::new()), &f, RunOptions::new())
        .unwrap_err();
    assert!(
        matches!(err, ProcessError::Split(SplitError::Empty)),
        "{err:?}"
    );
    let err = p
        .process_path("/nonexistent/audio.wav", &f, RunOptions::new())
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("opening /nonexistent/audio.wav failed"),
        "{err}"
    );
}

/// Overwrites the file at `path` with `bytes` in place, never shortening it on the way (the
/// run reads it meanwhile; a file cut short is the case of
/// `a_file_cut_short_during_a_run_is_reported_as_changed`).
fn overwrite_in_place(path: &std::path::Path, bytes: &[u8]) -> std::fs::File {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
    file
}

/// A file cut short while `process_path` splits it fails the split as truncated, which is
/// how the splitter sees it; the run now reports what happened instead, the file's change,
/// naming the file (`ProcessError::Changed`), as it does for a file that grows (which the
/// splitter now refuses as longer than its length). It reported `Split(Truncated)`.
#[test]
fn a_file_cut_short_during_a_run_is_reported_as_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinking.raw");
    std::fs::write(&path, input(4)).unwrap();
    let cache = cache();
    let p = processor(&cache, 1, no_retry());
    let cut = AtomicBool::new(false);
    let f = |chunk: &AudioChunk| {
        if !cut.swap(true, Ordering::SeqCst) {
            // One worker, a channel of one: the splitter has read at most chunks 0 to 2, so
            // chunk 3 is read after the cut, and short.
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(3 * CHUNK + CHUNK / 2).unwrap();
        }
        Ok::<_, String>(describe(chunk))
    };
    let error = p
        .process_path(&path, &f, RunOptions::new())
        .expect_err("the file changed during the run");
    assert!(
        matches!(&error, ProcessError::Changed { path: at } if at == &path),
        "{error:?}"
    );
}

/// Bug: `process_path` hashed the file for the whole-file key, then read it again to split
/// it. A file rewritten in place in between had the result of its new bytes stored under the
/// key of its old bytes, and the next run on the old bytes was served it. The run now fails
/// naming the file and stores no whole-file record; the chunks it finished stay, keyed by
/// their own bytes. The same holds for a rewrite during a run given the file's hash.
#[test]
fn a_file_rewritten_during_a_run_stores_no_whole_file_record_under_its_old_key() {
    for (same_length, known_hash) in [(true, false), (false, false), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edited.raw");
        let original = input(4);
        std::fs::write(&path, &original).unwrap();
        let original_hash = CacheKey::from_content(&original, "file")
            .unwrap()
            .digest_hex();
        let old_key = CacheKey::transcript(&original_hash, "en").unwrap();
        // Other bytes: the same length, or longer (the run reads the length it saw first).
        let edited: Vec<u8> = if same_length {
            original.iter().map(|b| !b).collect()
        } else {
            input(6).iter().map(|b| !b).collect()
        };
        let cache = cache();
        let p = processor(&cache, 1, no_retry());
        let rewritten = AtomicBool::new(false);
        let f = |chunk: &AudioChunk| {
            if !rewritten.swap(true, Ordering::SeqCst) {
                let file = overwrite_in_place(&path, &edited);
                if same_length {
                    // Only the modification time can tell, and two writes within the file
                    // system's timestamp granularity (a clock tick) may share one: move it
                    // on as a later write would.
                    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
                    file.set_modified(before + Duration::from_secs(1)).unwrap();
                }
            }
            Ok::<_, String>(describe(chunk))
        };
        let options = if known_hash {
            RunOptions::new().file_hash(original_hash)
        } else {
            RunOptions::new()
        };
        let error = p
            .process_path(&path, &f, options)
            .expect_err("the file changed during the run");
        assert!(
            matches!(&error, ProcessError::Changed { path: at } if at == &path),
            "same length {same_length}, known hash {known_hash}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("edited.raw") && message.contains("changed"),
            "{message}"
        );
        assert!(
            !cache.contains_key(&old_key),
            "same length {same_length}, known hash {known_hash}: a whole-file record under \
             the old bytes' key"
        );
        assert!(!cache.is_empty(), "the chunks the run finished stay cached");

        // The original bytes again: their own result, computed, not the edited file's.
        std::fs::write(&path, &original).unwrap();
        let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
        let out = p.process_path(&path, &f, RunOptions::new()).unwrap();
        assert!(!out.whole_file_hit);
        assert_eq!(out.result.text, expected(&original).join(" "));
        assert_eq!(out.file_key, Some(old_key));
        assert!(cache.contains_key(&old_key));
        let hit = p.process_path(&path, &f, RunOptions::new()).unwrap();
        assert!(hit.whole_file_hit);
    }
}

#[test]
fn a_custom_merge_step_is_used_and_memoized() {
    let data = input(3);
    let cache = cache();
    let p = processor(&cache, 2, no_retry());
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let merge = |chunks: &[memocache::chunk::ChunkOutcome]| {
        ChunkResult::from_text(format!("{} chunks", chunks.len()))
    };
    let out = run_on(&p, &data, &f, RunOptions::new().merge(merge)).unwrap();
    assert_eq!(out.result.text, "3 chunks");
    let hit = run_on(&p, &data, &f, RunOptions::new()).unwrap();
    assert_eq!(
        (hit.whole_file_hit, hit.result.text.as_str()),
        (true, "3 chunks")
    );
}

#[test]
fn progress_stays_ordered_under_concurrency() {
    let data = input(120);
    let cache = cache();
    let p = processor(&cache, 4, no_retry());
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    // Half of the chunks cached beforehand, so cached and computed chunks interleave.
    for chunk in memocache::chunk::split(&data[..], p.plan(), Some(data.len() as u64)).unwrap() {
        let chunk = chunk.unwrap();
        if chunk.index() % 2 == 1 {
            cache
                .insert_typed(p.chunk_key(&chunk).unwrap(), &describe(&chunk))
                .unwrap();
        }
    }
    let reports = Mutex::new(Vec::<Progress>::new());
    let out = run_on(
        &p,
        &data,
        &f,
        RunOptions::new().on_progress(|p: &Progress| reports.lock().push(*p)),
    )
    .unwrap();
    assert_eq!((out.computed, out.cached), (60, 60));
    let reports = reports.into_inner();
    assert_eq!(reports.len(), 121);
    for (k, pair) in reports.windows(2).enumerate() {
        assert_eq!((pair[0].chunks_done, pair[1].chunks_done), (k, k + 1));
        assert!(pair[1].bytes_done == pair[0].bytes_done + CHUNK);
        assert!(pair[1].chunks_cached >= pair[0].chunks_cached);
        assert!(pair[1].fraction() > pair[0].fraction());
    }
    let last = reports[120];
    assert_eq!(
        (last.fraction(), last.chunks_cached, last.bytes_done),
        (1.0, 60, 120 * CHUNK)
    );
}

/// A reader that counts the bytes read through it, to tell one pass from two.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<usize>>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for Counting<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

fn counting(data: &[u8]) -> (Counting<Cursor<&[u8]>>, std::rc::Rc<std::cell::Cell<usize>>) {
    let read = std::rc::Rc::default();
    let reader = Counting {
        inner: Cursor::new(data),
        read: std::rc::Rc::clone(&read),
    };
    (reader, read)
}

#[test]
fn a_known_file_hash_skips_the_hashing_pass_and_finds_the_same_key() {
    let data = input(6);
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let cache = cache();
    let p = processor(&cache, 2, no_retry());

    let (reader, read) = counting(&data);
    let hashed = p.process_reader(reader, &f, RunOptions::new()).unwrap();
    assert_eq!(read.get(), 2 * data.len(), "hash pass + split pass");

    // Same key from the hash the caller knows: a whole-file hit, read nowhere.
    let file_hash = memocache::CacheKey::from_content(&data, "file")
        .unwrap()
        .digest_hex();
    let (reader, read) = counting(&data);
    let known = p
        .process_reader(reader, &f, RunOptions::new().file_hash(&file_hash))
        .unwrap();
    assert!(known.whole_file_hit);
    assert_eq!(known.file_key, hashed.file_key);
    assert_eq!(known.result, hashed.result);
    assert_eq!(read.get(), 0);

    // On an empty cache the known hash costs one pass, and stores under that same key.
    let empty = self::cache();
    let p = processor(&empty, 2, no_retry());
    let (reader, read) = counting(&data);
    let out = p
        .process_reader(reader, &f, RunOptions::new().file_hash(&file_hash))
        .unwrap();
    assert_eq!((out.computed, out.whole_file_hit), (6, false));
    assert_eq!(read.get(), data.len());
    assert_eq!(out.file_key, hashed.file_key);
    assert!(empty.contains_key(&out.file_key.unwrap()));
}

#[test]
fn a_file_hash_that_is_not_a_sha256_is_a_key_error_before_any_work() {
    let data = input(3);
    let calls = Calls::default();
    let f = |chunk: &AudioChunk| {
        calls.record(chunk);
        Ok::<_, String>(describe(chunk))
    };
    let p = processor(&cache(), 1, no_retry());
    let err = run_on(&p, &data, &f, RunOptions::new().file_hash("not-a-hash")).unwrap_err();
    assert!(matches!(err, ProcessError::Key(_)), "{err}");
    assert!(err.to_string().contains("not-a-hash"), "{err}");
    assert!(calls.take().is_empty());
}

#[test]
fn skipping_the_whole_file_memo_reads_once_stores_chunks_only() {
    let data = input(5);
    let calls = Calls::default();
    let f = |chunk: &AudioChunk| {
        calls.record(chunk);
        Ok::<_, String>(describe(chunk))
    };
    let cache = cache();
    let p = processor(&cache, 2, no_retry());
    let (reader, read) = counting(&data);
    let out = p
        .process_reader(reader, &f, RunOptions::new().skip_whole_file_memo())
        .unwrap();
    assert_eq!(read.get(), data.len());
    assert_eq!((out.file_key, out.computed), (None, 5));
    assert_eq!(texts(&out), expected(&data));
    assert_eq!(
        cache.len(),
        5,
        "five chunk results and no whole-file record"
    );
    assert_eq!(calls.take(), [0, 1, 2, 3, 4]);

    // The next run is not a whole-file hit, but every chunk comes from the cache.
    let again = run_on(&p, &data, &f, RunOptions::new().skip_whole_file_memo()).unwrap();
    assert_eq!((again.whole_file_hit, again.cached), (false, 5));
    assert!(calls.take().is_empty());
    assert_eq!(again.result, out.result);
}

/// A chunk function that panics stops the run like a failure: the caller gets the original
/// payload, later chunks are never started, the chunks finished before it stay memoized, and
/// the same processor runs again (no worker was lost) computing only what is missing.
#[test]
fn a_panicking_chunk_function_fails_the_run_with_its_payload_and_keeps_finished_chunks() {
    let data = input(4);
    let cache = cache();
    // One worker: the order of calls, and so what was finished before the panic, is fixed.
    let p = processor(&cache, 1, no_retry());
    let calls = Calls::default();
    let panicking = |chunk: &AudioChunk| {
        calls.record(chunk);
        if chunk.index() == 2 {
            panic!("boom in chunk 2");
        }
        Ok::<_, String>(describe(chunk))
    };
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_on(&p, &data, &panicking, RunOptions::new())
    }))
    .expect_err("the panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in chunk 2"));
    assert_eq!(calls.take(), [0, 1, 2], "no chunk starts after the panic");

    let f = |chunk: &AudioChunk| {
        calls.record(chunk);
        Ok::<_, String>(describe(chunk))
    };
    let out = run_on(&p, &data, &f, RunOptions::new()).unwrap();
    assert_eq!(texts(&out), expected(&data));
    assert_eq!((out.computed, out.cached), (2, 2));
    assert_eq!(calls.take(), [2, 3]);
}

/// A progress callback that panics stops the run the same way, with its own payload; the chunk
/// it was reporting was already memoized.
#[test]
fn a_panicking_progress_callback_fails_the_run_with_its_payload() {
    let data = input(3);
    let cache = cache();
    let p = processor(&cache, 2, no_retry());
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let options = RunOptions::new().on_progress(|progress: &Progress| {
            if progress.chunks_done == 1 {
                panic!("progress callback broke");
            }
        });
        run_on(&p, &data, &f, options)
    }))
    .expect_err("the panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"progress callback broke")
    );
    let out = run_on(&p, &data, &f, RunOptions::new()).unwrap();
    assert_eq!(texts(&out), expected(&data));
    assert!(out.cached >= 1, "the reported chunk was memoized: {out:?}");
}

/// Inputs of exactly one chunk, one byte more, and one byte: chunk count, sizes, and progress
/// ending with every byte and chunk counted exactly once.
#[test]
fn inputs_at_the_chunk_boundary() {
    let data = input(2);
    for len in [
        1,
        CHUNK as usize - 1,
        CHUNK as usize,
        CHUNK as usize + 1,
        2 * CHUNK as usize,
    ] {
        let data = &data[..len];
        let last = Mutex::new(None::<Progress>);
        let sizes = |chunk: &AudioChunk| {
            Ok::<_, String>(ChunkResult::from_text(chunk.data().len().to_string()))
        };
        let options = RunOptions::new().on_progress(|progress: &Progress| {
            let mut last = last.lock();
            if let Some(before) = *last {
                assert!(progress.chunks_done >= before.chunks_done, "{len}");
                assert!(progress.bytes_done >= before.bytes_done, "{len}");
            }
            assert!(
                progress.chunks_done <= progress.chunks_total,
                "{len}: {progress:?}"
            );
            assert!(
                progress.bytes_done <= progress.bytes_total,
                "{len}: {progress:?}"
            );
            *last = Some(*progress);
        });
        let out = processor(&cache(), 2, no_retry())
            .process_reader(Cursor::new(data), &sizes, options)
            .unwrap();
        let want: Vec<String> = data
            .chunks(CHUNK as usize)
            .map(|c| c.len().to_string())
            .collect();
        assert_eq!(texts(&out), want, "{len}");
        let last = last.lock().expect("progress was reported");
        assert_eq!(
            (
                last.chunks_done,
                last.chunks_total,
                last.bytes_done,
                last.bytes_total
            ),
            (want.len(), want.len(), len as u64, len as u64),
            "{len}"
        );
        assert_eq!(last.fraction(), 1.0);
    }
}

/// Not a defect, pinned: boundaries and keys depend on the bytes and the plan only. A WAV with
/// overlap run through a path and then through a reader over the same bytes finds every chunk
/// (and the whole file) under the keys the first run stored, with the same boundaries.
#[test]
fn a_path_and_a_reader_over_the_same_bytes_give_the_same_chunks_and_keys() {
    let wav = mono_wav(1000, (0..3000).map(|i| (i * 7 % 501) as i16));
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&wav).unwrap();
    let p = overlapping("m/1", 1044, Duration::from_millis(100));
    let f = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let by_path = p
        .process_path(file.path(), &f, RunOptions::new().skip_whole_file_memo())
        .unwrap();
    let by_reader = run_on(&p, &wav, &f, RunOptions::new().skip_whole_file_memo()).unwrap();
    // 500 frames a chunk, 100 of them shared with the previous one: 1 + ceil(2500 / 400).
    assert_eq!((by_path.computed, by_path.cached), (8, 0));
    assert_eq!((by_reader.computed, by_reader.cached), (0, 8));
    let infos = |out: &memocache::chunk::ProcessOutput| {
        out.chunks.iter().map(|c| c.info).collect::<Vec<_>>()
    };
    assert_eq!(infos(&by_path), infos(&by_reader));
    assert_eq!(by_path.result, by_reader.result);
    // The whole-file key too: stored through the path, found through the reader.
    let stored = p.process_path(file.path(), &f, RunOptions::new()).unwrap();
    let found = run_on(&p, &wav, &f, RunOptions::new()).unwrap();
    assert!(!stored.whole_file_hit && found.whole_file_hit);
    assert_eq!(stored.file_key, found.file_key);
}

/// Waits up to ten seconds for `ready`; whether it came.
fn wait_for(ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// For a chunk function's first call: holds it until the cache has counted `misses` lookups
/// (every run's or worker's) or the function is called a second time (the old code, which
/// did not wait for a chunk being computed). `calls` counts the calls, this one included.
fn hold_first_call(calls: &AtomicUsize, cache: &Cache, misses: u64) {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        assert!(wait_for(|| {
            cache.stats().misses >= misses || calls.load(Ordering::SeqCst) >= 2
        }));
    }
}

/// Bug: two runs over the same audio at once (two requests for copies of one recording, or a
/// recording and its edited copy) each sent every shared chunk to the chunk function: a run
/// looked its chunk up, missed, and computed it, whether or not another run was computing it
/// at that moment. Now a chunk is loaded through the cache's coalescing loader, and the run
/// that arrives second waits for the first's result. The first call holds its chunk until
/// the other run has looked the chunk up (its miss) — or, on the old code, called the
/// function itself.
#[test]
fn two_runs_over_the_same_audio_at_once_compute_each_chunk_once() {
    let data = input(1);
    let cache = cache();
    let p = processor(&cache, 1, no_retry());
    let calls = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        hold_first_call(&calls, &cache, 2);
        Ok::<_, String>(describe(chunk))
    };
    let run = || run_on(&p, &data, &f, RunOptions::new().skip_whole_file_memo()).unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(run);
        let b = s.spawn(run);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one call for the shared chunk"
    );
    assert_eq!(a.result.text, b.result.text);
    assert_eq!(texts(&a), expected(&data));
    let mut computed = [a.computed, b.computed];
    computed.sort_unstable();
    assert_eq!(computed, [0, 1]);
    assert_eq!(a.cached + b.cached, 1);
}

/// Within one run too: identical chunks (stretches of digital silence) that two workers take
/// at once are computed once, the second counted as found in the cache.
#[test]
fn identical_chunks_taken_by_two_workers_at_once_are_computed_once() {
    let chunk = input(1);
    let data = [chunk.clone(), chunk].concat();
    let cache = cache();
    let p = processor(&cache, 2, no_retry());
    let calls = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        hold_first_call(&calls, &cache, 2);
        Ok::<_, String>(describe(chunk))
    };
    let out = run_on(&p, &data, &f, RunOptions::new().skip_whole_file_memo()).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!((out.computed, out.cached), (1, 1));
    assert_eq!(texts(&out), expected(&data));
}

/// A run that waited for another run's chunk does not inherit that run's failure: the error
/// belongs to the other run's chunk function (another engine, a cancelled request), so the
/// waiting run calls its own function.
#[test]
fn a_run_waiting_for_a_chunk_another_run_fails_computes_it_itself() {
    let data = input(1);
    let cache = cache();
    let p = processor(&cache, 1, no_retry());
    let failing = |_: &AudioChunk| {
        // Until the other run has looked the chunk up.
        assert!(wait_for(|| cache.stats().misses >= 2));
        Err::<ChunkResult, _>("engine down".to_owned())
    };
    let working = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            run_on(
                &p,
                &data,
                &failing,
                RunOptions::new().skip_whole_file_memo(),
            )
        });
        // The failing run leads: the other starts once the failing function runs, and so it
        // is the one that waits.
        assert!(wait_for(|| cache.stats().misses >= 1));
        let b = s.spawn(|| {
            run_on(
                &p,
                &data,
                &working,
                RunOptions::new().skip_whole_file_memo(),
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        matches!(a, Err(ProcessError::Chunk { index: 0, .. })),
        "{a:?}"
    );
    let b = b.unwrap();
    assert_eq!((b.computed, b.cached), (1, 0));
    assert_eq!(texts(&b), expected(&data));
}

/// A cache too small for any chunk result: every result is still returned, in order, and
/// counted as not memoized (no test looked at `not_memoized` before). Two identical chunks
/// are taken at once, so one worker waits for the other's load, whose store the cache
/// refuses: the waiting worker then computes the chunk itself rather than waiting again.
#[test]
fn a_cache_too_small_for_chunk_results_still_gives_every_result() {
    let two = input(2);
    let data = [&two[..CHUNK as usize], &two].concat();
    let cache = Cache::builder().max_bytes(114).build().unwrap();
    let p = processor(&cache, 2, no_retry());
    let calls = AtomicUsize::new(0);
    let f = |chunk: &AudioChunk| {
        hold_first_call(&calls, &cache, 3);
        // Longer than the cache's whole budget.
        Ok::<_, String>(ChunkResult::from_text(format!(
            "{}{}",
            hex(chunk.data()),
            "-".repeat(100)
        )))
    };
    let out = run_on(&p, &data, &f, RunOptions::new()).unwrap();
    let want: Vec<String> = expected(&data)
        .iter()
        .map(|t| format!("{t}{}", "-".repeat(100)))
        .collect();
    assert_eq!(texts(&out), want);
    assert_eq!(out.result.text, want.join(" "));
    assert_eq!((out.computed, out.cached), (3, 0));
    // Three chunk results and the whole-file record.
    assert_eq!(out.not_memoized, 4);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(cache.is_empty());
}

/// A chunk that another run stores while this run waits to retry it is taken from the cache
/// at the retry, not computed again; its outcome counts the call that failed.
#[test]
fn a_retry_finds_the_result_another_run_stored_meanwhile() {
    let data = input(1);
    let clock = ManualClock::new();
    let cache = cache_on(&clock);
    let p = processor(&cache, 1, RetryConfig::fixed(1, Duration::from_secs(3600)));
    let failed = AtomicBool::new(false);
    let failing_once = |_: &AudioChunk| {
        assert!(!failed.swap(true, Ordering::SeqCst), "called again");
        Err::<ChunkResult, _>("rate limited".to_owned())
    };
    let working = |chunk: &AudioChunk| Ok::<_, String>(describe(chunk));
    let options = || RunOptions::new().skip_whole_file_memo();
    let out = std::thread::scope(|s| {
        let waiting = s.spawn(|| run_on(&p, &data, &failing_once, options()));
        assert!(wait_for(|| failed.load(Ordering::SeqCst)));
        let other = run_on(&p, &data, &working, options());
        assert_eq!(other.unwrap().computed, 1);
        // The hour of backoff passes (again and again: the wait's deadline is taken after
        // the failure, perhaps after a first advance).
        while !waiting.is_finished() {
            clock.advance(Duration::from_secs(600));
            std::thread::yield_now();
        }
        waiting.join().unwrap().unwrap()
    });
    assert_eq!((out.computed, out.cached, out.retries), (0, 1, 1));
    assert!(out.chunks[0].from_cache);
    assert_eq!(out.chunks[0].attempts, 1);
    assert_eq!(texts(&out), expected(&data));
}

/// Chunks of this size are read into buffers of `BUFFER` bytes (a chunk and a spare byte):
/// more than the allocator's per-thread caches hold, less than it maps alone.
const POOLED: usize = 64 * 1024;
const BUFFER: usize = POOLED + 1;

/// A processor of `POOLED`-byte chunks, at concurrency 2.
fn pooling(cache: &Cache, keep_chunk_buffers: bool) -> ChunkedProcessor {
    ChunkedProcessor::builder(cache.clone(), "test-model/1")
        .plan(ChunkPlan::with_chunk_bytes(POOLED as u64).unwrap())
        .concurrency(ConcurrencyLimit::new(2).unwrap())
        .retry(no_retry())
        .keep_chunk_buffers(keep_chunk_buffers)
        .build()
        .unwrap()
}

/// 8 chunks of noise from `seed`, unlike other seeds' chunks.
fn pooled_input(seed: u64) -> Vec<u8> {
    noise(8 * POOLED, seed << 1)
}

/// Runs `processor` over `data` (every chunk computed); returns where the chunks' bytes lay,
/// and chunk 0's bytes, kept by the chunk function.
fn run_keeping_chunk_0(
    processor: &ChunkedProcessor,
    data: &[u8],
) -> (HashSet<usize>, bytes::Bytes) {
    let at = Mutex::new(HashSet::new());
    let kept = Mutex::new(None);
    let f = |chunk: &AudioChunk| {
        at.lock().insert(chunk.data().as_ptr() as usize);
        if chunk.index() == 0 {
            *kept.lock() = Some(chunk.data().clone());
        }
        Ok::<_, String>(describe(chunk))
    };
    let out = processor
        .process_reader(Cursor::new(data), &f, RunOptions::new())
        .unwrap();
    assert_eq!(out.computed, 8);
    (at.into_inner(), kept.into_inner().expect("chunk 0 ran"))
}

/// Allocations of a chunk buffer's size, enough to take the memory of every buffer a run can
/// have freed: a chunk read after them lands where an earlier one was only if its buffer was
/// kept.
fn occupy() -> Vec<Vec<u8>> {
    (0..8).map(|_| Vec::with_capacity(BUFFER)).collect()
}

#[test]
fn a_processors_next_run_reads_into_its_last_runs_chunk_buffers() {
    let processor = pooling(&cache(), true);
    assert_eq!(processor.spare_chunk_buffers(), 0);
    let (first, _) = run_keeping_chunk_0(&processor, &pooled_input(1));
    // Up to as many as the run held at once, 2 × 2 + 1; clones share them.
    let spare = processor.spare_chunk_buffers();
    assert!((1..=5).contains(&spare), "{spare} spare buffers");
    assert_eq!(processor.clone().spare_chunk_buffers(), spare);
    let occupied = occupy();
    let (second, _) = run_keeping_chunk_0(&processor.clone(), &pooled_input(2));
    assert!(
        !first.is_disjoint(&second),
        "the second run read into none of the first run's buffers"
    );
    drop(occupied);

    // Without keeping them, a run frees its buffers when it ends.
    let processor = pooling(&cache(), false);
    run_keeping_chunk_0(&processor, &pooled_input(3));
    assert_eq!(processor.spare_chunk_buffers(), 0);
}

#[test]
fn chunk_bytes_a_chunk_function_keeps_stay_intact_while_other_buffers_are_reused() {
    let processor = pooling(&cache(), true);
    let data = pooled_input(4);
    let (first, kept) = run_keeping_chunk_0(&processor, &data);
    let occupied = occupy();
    let (second, kept_too) = run_keeping_chunk_0(&processor, &pooled_input(5));
    // Buffers were reused, but not the one whose bytes the first run's function kept.
    assert!(!first.is_disjoint(&second));
    assert!(!second.contains(&(kept.as_ptr() as usize)));
    assert_eq!(&kept[..], &data[..POOLED]);
    assert_eq!(&kept_too[..], &pooled_input(5)[..POOLED]);
    drop(occupied);
}

/// Session 28 first kept `concurrency + 1` buffers, half of what a run holds when its chunk
/// function is slower than reading a chunk (as any speech engine is): the queue of chunks
/// fills, and each run had up to `concurrency` buffers mapped and faulted in anew.
#[test]
fn a_processor_keeps_every_buffer_a_run_with_a_slow_chunk_function_held() {
    let processor = pooling(&cache(), true);
    // 8 chunks, 2 workers: while the first two are slow, the splitter reads 2 more into the
    // queue and a fifth, waiting to be queued.
    let slow = |chunk: &AudioChunk| {
        std::thread::sleep(Duration::from_millis(if chunk.index() < 2 {
            300
        } else {
            1
        }));
        Ok::<_, String>(describe(chunk))
    };
    let out = processor
        .process_reader(Cursor::new(pooled_input(6)), &slow, RunOptions::new())
        .unwrap();
    assert_eq!(out.computed, 8);
    assert_eq!(processor.spare_chunk_buffers(), 2 * 2 + 1);
}

/// Until session 29 a chunk was read into any spare buffer: a small file's only chunk into a
/// buffer of a full chunk that an earlier run left, which the bytes a chunk function kept
/// held whole (here 64 KiB for 100 bytes; up to 25 MB in use), and which the processor no
/// longer had for its next full run.
#[test]
fn bytes_kept_of_short_chunks_do_not_hold_the_buffers_of_full_ones() {
    let processor = pooling(&cache(), true);
    // Chunk 0's bytes held to the end, as the other buffers are by the processor: none of
    // these addresses is free for a short chunk's buffer of its own.
    let (full, _chunk_0) = run_keeping_chunk_0(&processor, &pooled_input(7));
    let spare = processor.spare_chunk_buffers();
    let kept = Mutex::new(Vec::new());
    let keep = |chunk: &AudioChunk| {
        kept.lock().push(chunk.data().clone());
        Ok::<_, String>(describe(chunk))
    };
    for seed in 0..8 {
        let small = noise(100, 0x5eed + 2 * seed);
        let out = run_on(&processor, &small, &keep, RunOptions::new()).unwrap();
        assert_eq!(out.computed, 1);
    }
    for bytes in kept.lock().iter() {
        assert_eq!(bytes.len(), 100);
        assert!(
            !full.contains(&(bytes.as_ptr() as usize)),
            "100 kept bytes hold a 64 KiB chunk buffer"
        );
    }
    assert_eq!(processor.spare_chunk_buffers(), spare);
}

/// A reader that counts the bytes read from it.
struct Counted<'a> {
    inner: Cursor<&'a [u8]>,
    read: &'a AtomicUsize,
}

impl std::io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
}

impl std::io::Seek for Counted<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Two runs at once on clones of a processor keep every buffer they held together: the
/// clones share one set of spare buffers, which had room for one run's (2 × 2 + 1 at
/// concurrency 2), so the other run's were freed at its end and a next pair of runs had them
/// mapped and faulted in anew. Here each run's first two chunks (one a worker) wait until
/// both runs' splitters have read five chunks, as many as a run holds at once (two being
/// processed, two queued, one waiting to be queued): ten buffers in use together, of which
/// the old code kept five.
#[test]
fn runs_at_once_on_clones_keep_every_buffer_they_held() {
    let processor = pooling(&cache(), true);
    let read = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let inputs = [pooled_input(8), pooled_input(9)];
    let held = 5 * POOLED;
    std::thread::scope(|scope| {
        for run in 0..2 {
            let (processor, read, input) = (processor.clone(), &read, &inputs[run]);
            scope.spawn(move || {
                let gate = |chunk: &AudioChunk| {
                    let began = Instant::now();
                    while chunk.index() < 2 && read.iter().any(|r| r.load(Ordering::SeqCst) < held)
                    {
                        assert!(
                            began.elapsed() < Duration::from_secs(30),
                            "the runs stalled"
                        );
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok::<_, String>(describe(chunk))
                };
                let reader = Counted {
                    inner: Cursor::new(&input[..]),
                    read: &read[run],
                };
                let options = RunOptions::new().skip_whole_file_memo();
                let out = processor.process_reader(reader, &gate, options).unwrap();
                assert_eq!(out.computed, 8);
            });
        }
    });
    assert_eq!(processor.spare_chunk_buffers(), 2 * (2 * 2 + 1));
}
