//! The block hash list of format version 2: the record stream is cut into blocks of a fixed
//! size and each block's SHA-256 is computed on a pool of worker threads, pipelined with the
//! encoding and writing (save) or reading and decoding (load) that the caller's thread does.
//!
//! # Why blocks
//!
//! SHA-256 is inherently sequential over one message, and on a CPU without SHA extensions it
//! runs at a few hundred MB/s: slower than writing a file and far slower than reading one from
//! the page cache. Hashing fixed-size blocks independently lets every core hash at once, and a
//! final SHA-256 over the list of block digests (a one-level hash list, see the
//! [format docs](super)) still makes every byte of the file part of one SHA-256 check.
//!
//! # No copies of values
//!
//! A block is not a contiguous buffer. It is a list of [`Bytes`] pieces: values of
//! [`SHARE_AT_LEAST`] bytes or more are shared by reference count (on save they are the
//! cache's own values, on load the buffers the values were just read into, which become the
//! cache's values), and everything else — record heads, small values — is copied into a small
//! staging buffer. So the hash workers read the very bytes that were written or read, and the
//! only extra memory is the bounded queue of blocks in flight.
//!
//! # Threads
//!
//! Workers are started only once [`POOL_AFTER`] bytes have gone by, so a small snapshot is
//! hashed on the caller's thread and costs no thread start; this keeps decoding of small
//! inputs (tests, the fuzzer, whatever block size they claim) cheap. There is one worker per
//! core but one (at least one, at most [`MAX_WORKERS`]): the caller's thread, which encodes and
//! writes or reads and decodes, is the critical path and keeps a core of its own. At most `2 × workers` blocks
//! wait in the queue, which bounds memory; when it is full, the hashing has fallen behind
//! and the caller hashes the block itself instead of waiting, so on a CPU whose hashing is
//! the slower part every core still hashes. (With a worker per core and a blocking queue,
//! three threads shared two cores here and the caller, the one that matters, got two thirds
//! of one; the change lifted cold loads from 63–86 % to 80–129 % of a plain read in paired
//! runs of `cargo bench --bench snapshot`.) If a worker cannot
//! be started, or has gone, blocks are hashed on the caller's thread instead: slower, never
//! wrong. Dropping a [`BlockHasher`] (an error path) closes the queue and joins the workers.

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use ring::digest::{Context, SHA256};

/// A SHA-256 digest.
pub(super) type Digest = [u8; 32];

/// Pieces at least this long are shared by reference count instead of copied into the
/// staging buffer: below it, the copy is cheaper than one more piece to track and hash.
const SHARE_AT_LEAST: usize = 4096;

/// Record streams shorter than this are hashed on the caller's thread: starting workers costs
/// more than hashing a few blocks.
const POOL_AFTER: u64 = 1 << 20;

/// Most hash workers started for one save or load.
const MAX_WORKERS: usize = 8;

/// One complete block handed to a worker.
struct Job {
    index: usize,
    pieces: Vec<Bytes>,
}

fn digest_of(pieces: &[Bytes]) -> Digest {
    let mut context = Context::new(&SHA256);
    for piece in pieces {
        context.update(piece);
    }
    let mut digest = [0; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// Worker threads hashing jobs from a shared queue.
struct Pool {
    /// `None` once closed.
    jobs: Option<SyncSender<Job>>,
    results: Receiver<(usize, Digest)>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts up to `count` workers; `None` if not even one could be started.
    fn start(count: usize) -> Option<Pool> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(2 * count);
        let queue = Arc::new(Mutex::new(queue));
        let (done, results) = mpsc::channel();
        let workers: Vec<JoinHandle<()>> = (0..count)
            .map_while(|i| {
                let queue = Arc::clone(&queue);
                let done: Sender<(usize, Digest)> = done.clone();
                thread::Builder::new()
                    .name(format!("memocache-snapshot-hash-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only to take a job, never while hashing.
                            let job = queue.lock().recv();
                            let Ok(job) = job else { break };
                            if done.send((job.index, digest_of(&job.pieces))).is_err() {
                                break;
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        (!workers.is_empty()).then_some(Pool {
            jobs: Some(jobs),
            results,
            workers,
        })
    }

    /// Closes the queue and waits for the workers to finish what is queued.
    fn close(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            // A worker that panicked has simply not reported its digests: the caller sees
            // them missing.
            let _ = worker.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

/// The bytes of a record stream in order, cut into blocks of `block_size` and hashed.
pub(super) struct BlockHasher {
    block_size: usize,
    /// Bytes in the current block so far.
    filled: usize,
    /// The current block's pieces before `staging`.
    pieces: Vec<Bytes>,
    /// Copied bytes not yet made a piece.
    staging: BytesMut,
    /// Blocks completed so far.
    blocks: usize,
    /// Digests computed on this thread, by block index.
    local: Vec<(usize, Digest)>,
    /// `None` until a block completes after [`POOL_AFTER`] bytes, and if no worker could be
    /// started.
    pool: Option<Pool>,
    /// Whether starting the pool was already tried.
    tried_pool: bool,
    /// Stream length from which a completed block starts the pool.
    pool_after: u64,
    /// Blocks passed over unhashed (see [`BlockHasher::pass_blocks`]), as index ranges.
    passed: Vec<Range<usize>>,
}

/// Every block's digest, in order, as [`BlockHasher::finish`] returns them. Blocks passed
/// over have none, and take no memory here: a slot each cost 33 bytes a block of a value never
/// read, and a file says its block size (64 bytes at least), so a few hundred bytes around a
/// sparse hole claiming 1 TiB made a load ask for 567 GB at once, which aborted the process.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Digests {
    /// The digests of the blocks not passed over, in block order.
    hashed: Vec<Digest>,
    /// The blocks passed over, ascending and disjoint.
    passed: Vec<Range<usize>>,
    /// Blocks in all.
    count: usize,
}

impl Digests {
    /// Blocks in all, passed over or not.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Each block's digest in block order, `None` for a block passed over.
    pub(super) fn iter(&self) -> impl Iterator<Item = Option<&Digest>> {
        let mut hashed = self.hashed.iter();
        let mut passed = self.passed.iter().peekable();
        (0..self.count).map(move |block| {
            while passed.next_if(|range| range.end <= block).is_some() {}
            match passed.peek() {
                Some(range) if range.contains(&block) => None,
                _ => hashed.next(),
            }
        })
    }
}

/// Some block's digest never arrived: a hash worker stopped (it panicked).
#[derive(Debug)]
pub(super) struct MissingDigest {
    /// The first block without a digest.
    pub(super) block: usize,
}

impl BlockHasher {
    /// `block_size` must be positive.
    pub(super) fn new(block_size: usize) -> BlockHasher {
        BlockHasher {
            block_size: block_size.max(1),
            filled: 0,
            pieces: Vec::new(),
            staging: BytesMut::new(),
            blocks: 0,
            local: Vec::new(),
            pool: None,
            tried_pool: false,
            pool_after: POOL_AFTER,
            passed: Vec::new(),
        }
    }

    /// The block size.
    pub(super) fn block_size(&self) -> usize {
        self.block_size
    }

    /// Bytes from here to the end of the current block; 0 at a block boundary.
    pub(super) fn to_boundary(&self) -> usize {
        (self.block_size - self.filled) % self.block_size
    }

    /// Counts the next `count` whole blocks as passed over: their bytes are not appended or
    /// hashed, and [`BlockHasher::finish`] reports no digest for them. Only at a block
    /// boundary; returns false, passing nothing, elsewhere.
    pub(super) fn pass_blocks(&mut self, count: usize) -> bool {
        if self.filled != 0 {
            return false;
        }
        let first = self.blocks;
        self.blocks += count;
        self.passed.push(first..self.blocks);
        true
    }

    /// Appends bytes by copying them.
    pub(super) fn copy(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = bytes.len().min(self.block_size - self.filled);
            self.staging.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.advance(take);
        }
    }

    /// Appends bytes, sharing them if they are long enough to be worth it.
    pub(super) fn share(&mut self, bytes: &Bytes) {
        if bytes.len() < SHARE_AT_LEAST {
            return self.copy(bytes);
        }
        let mut start = 0;
        while start < bytes.len() {
            let take = (bytes.len() - start).min(self.block_size - self.filled);
            self.flush_staging();
            self.pieces.push(bytes.slice(start..start + take));
            start += take;
            self.advance(take);
        }
    }

    fn flush_staging(&mut self) {
        if !self.staging.is_empty() {
            self.pieces.push(self.staging.split().freeze());
        }
    }

    fn advance(&mut self, bytes: usize) {
        self.filled += bytes;
        if self.filled == self.block_size {
            self.seal(false);
        }
    }

    /// Hands the current block to the pool (or hashes it here).
    fn seal(&mut self, last: bool) {
        self.flush_staging();
        let job = Job {
            index: self.blocks,
            pieces: std::mem::take(&mut self.pieces),
        };
        self.blocks += 1;
        self.filled = 0;
        if !last && !self.tried_pool && self.len() >= self.pool_after {
            self.tried_pool = true;
            // One core is this thread's: it encodes and writes, or reads and decodes, and
            // hashes what the workers cannot take.
            let workers = thread::available_parallelism()
                .map_or(1, |n| n.get())
                .saturating_sub(1)
                .clamp(1, MAX_WORKERS);
            self.pool = Pool::start(workers);
        }
        let unsent = match self.pool.as_ref().and_then(|pool| pool.jobs.as_ref()) {
            // A full queue means the workers are behind: this thread hashes the block itself
            // instead of waiting for room, so its core works either way.
            Some(jobs) => match jobs.try_send(job) {
                Ok(()) => None,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job),
            },
            None => Some(job),
        };
        if let Some(job) = unsent {
            self.local.push((job.index, digest_of(&job.pieces)));
        }
    }

    /// Bytes appended so far.
    pub(super) fn len(&self) -> u64 {
        self.blocks as u64 * self.block_size as u64 + self.filled as u64
    }

    /// Completes the last block and returns every block's digest, in order, none for the
    /// blocks passed over ([`BlockHasher::pass_blocks`]). A stream of `n` bytes has
    /// `ceil(n / block_size)` blocks, the last one possibly short. Memory and time are per
    /// block hashed, not per block passed over.
    pub(super) fn finish(mut self) -> Result<Digests, MissingDigest> {
        if self.filled > 0 {
            self.seal(true);
        }
        let mut arrived = std::mem::take(&mut self.local);
        if let Some(pool) = self.pool.as_mut() {
            pool.close();
            arrived.extend(pool.results.try_iter());
        }
        arrived.sort_unstable_by_key(|&(index, _)| index);
        let mut arrived = arrived.into_iter().peekable();
        // The blocks not passed over: those between the passed ranges, which are in order.
        let starts = std::iter::once(0).chain(self.passed.iter().map(|range| range.end));
        let ends = (self.passed.iter().map(|range| range.start)).chain([self.blocks]);
        let mut hashed = Vec::with_capacity(arrived.len());
        for block in starts.zip(ends).flat_map(|(start, end)| start..end) {
            match arrived.next_if(|&(index, _)| index == block) {
                Some((_, digest)) => hashed.push(digest),
                None => return Err(MissingDigest { block }),
            }
        }
        Ok(Digests {
            hashed,
            passed: std::mem::take(&mut self.passed),
            count: self.blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest as _, Sha256};

    /// What the block digests must be: SHA-256 of each `block_size` slice of the whole stream,
    /// computed with another implementation.
    fn expected(stream: &[u8], block_size: usize) -> Vec<Digest> {
        stream
            .chunks(block_size)
            .map(|block| Sha256::digest(block).into())
            .collect()
    }

    /// Feeds `pieces` (bytes, and whether to share or copy them) and returns the digests.
    fn hash(block_size: usize, pool_after: u64, pieces: &[(Vec<u8>, bool)]) -> Vec<Digest> {
        let mut hasher = BlockHasher::new(block_size);
        hasher.pool_after = pool_after;
        for (bytes, share) in pieces {
            if *share {
                hasher.share(&Bytes::from(bytes.clone()));
            } else {
                hasher.copy(bytes);
            }
        }
        let len: usize = pieces.iter().map(|(b, _)| b.len()).sum();
        assert_eq!(hasher.len(), len as u64);
        all_digests(hasher)
    }

    /// The digests of a hasher that passed over no block.
    fn all_digests(hasher: BlockHasher) -> Vec<Digest> {
        let digests = hasher.finish().expect("every digest arrives");
        digests
            .iter()
            .map(|d| *d.expect("none passed over"))
            .collect()
    }

    proptest! {
        // Few cases: each may start workers, and the reference hash is unoptimized in tests.
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// However the stream is cut into pieces, copied or shared, hashed here or on the
        /// workers (whose results arrive in any order), each block's digest is the SHA-256
        /// of exactly that block.
        #[test]
        fn block_digests_are_the_sha256_of_each_block(
            block_size in 64usize..9000,
            pool_after in prop_oneof![Just(0u64), Just(POOL_AFTER)],
            pieces in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..12_000), any::<bool>()),
                0..12,
            ),
        ) {
            let stream: Vec<u8> = pieces.iter().flat_map(|(b, _)| b.iter().copied()).collect();
            prop_assert_eq!(hash(block_size, pool_after, &pieces), expected(&stream, block_size));
        }
    }

    /// Many small blocks through the workers at once: every digest arrives, in its place.
    #[test]
    fn workers_under_load_report_every_block_in_order() {
        let stream: Vec<u8> = (0..1_200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let pieces: Vec<(Vec<u8>, bool)> = stream
            .chunks(70_001)
            .enumerate()
            .map(|(i, chunk)| (chunk.to_vec(), i % 3 != 0))
            .collect();
        for block_size in [64, 4096, 1 << 19] {
            assert_eq!(
                hash(block_size, 0, &pieces),
                expected(&stream, block_size),
                "block size {block_size}"
            );
        }
    }

    /// A hasher whose pool has no worker threads: the test plays the workers through the
    /// returned queue and result sender, so it decides when (and whether) blocks are taken.
    fn hasher_with_stalled_pool(
        block_size: usize,
        queue_len: usize,
    ) -> (BlockHasher, Receiver<Job>, Sender<(usize, Digest)>) {
        let (jobs, queue) = mpsc::sync_channel(queue_len);
        let (done, results) = mpsc::channel();
        let mut hasher = BlockHasher::new(block_size);
        hasher.tried_pool = true;
        hasher.pool = Some(Pool {
            jobs: Some(jobs),
            results,
            workers: Vec::new(),
        });
        (hasher, queue, done)
    }

    fn numbered_stream(len: u32) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    /// Workers that have fallen behind leave the queue full; the caller then hashes each
    /// further block itself instead of waiting for room, and the digests still come out in
    /// order once the workers catch up.
    #[test]
    fn a_full_queue_has_the_caller_hash_the_block_itself() {
        let (mut hasher, queue, done) = hasher_with_stalled_pool(64, 2);
        let stream = numbered_stream(64 * 5);
        // On another thread, so that a caller that waits for room fails the test instead of
        // hanging it.
        let (fed, hasher_back) = mpsc::channel();
        let feed = stream.clone();
        thread::spawn(move || {
            hasher.copy(&feed);
            let _ = fed.send(hasher);
        });
        let hasher = hasher_back
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the caller hashes instead of waiting for room in a full queue");
        let local: Vec<usize> = hasher.local.iter().map(|&(index, _)| index).collect();
        assert_eq!(local, [2, 3, 4], "blocks 0 and 1 filled the queue");
        // The stalled workers catch up.
        for job in queue.try_iter() {
            done.send((job.index, digest_of(&job.pieces)))
                .expect("the hasher holds the results");
        }
        assert_eq!(all_digests(hasher), expected(&stream, 64));
    }

    /// With every worker gone (the queue's receiving end dropped), blocks are hashed on the
    /// caller's thread; a block a worker took and never reported is named as missing.
    #[test]
    fn blocks_are_hashed_by_the_caller_once_the_workers_are_gone() {
        let (mut hasher, queue, done) = hasher_with_stalled_pool(64, 4);
        let stream = numbered_stream(64 * 3 + 10);
        hasher.copy(&stream[..64]);
        // A worker takes block 0, then every worker stops before reporting it.
        let taken = queue.try_recv().expect("block 0 was queued");
        assert_eq!(taken.index, 0);
        drop((queue, done));
        hasher.copy(&stream[64..]);
        let local: Vec<usize> = hasher.local.iter().map(|&(index, _)| index).collect();
        assert_eq!(local, [1, 2], "the short last block waits for finish");
        assert_eq!(hasher.finish().map_err(|missing| missing.block), Err(0));
    }

    /// Blocks passed over count in the stream's length and have no digest; the blocks
    /// around them are hashed as usual, on the workers too. Passing is refused off a block
    /// boundary.
    #[test]
    fn passed_blocks_have_no_digest_and_the_others_are_right() {
        let stream = numbered_stream(64 * 10 + 5);
        let want = expected(&stream, 64);
        for pool_after in [0, POOL_AFTER] {
            let mut hasher = BlockHasher::new(64);
            hasher.pool_after = pool_after;
            hasher.copy(&stream[..100]);
            assert_eq!(hasher.to_boundary(), 28);
            assert!(!hasher.pass_blocks(1), "not at a boundary");
            hasher.copy(&stream[100..128]);
            assert_eq!(hasher.to_boundary(), 0);
            assert!(hasher.pass_blocks(3));
            assert_eq!(hasher.len(), 64 * 5);
            hasher.share(&Bytes::copy_from_slice(&stream[64 * 5..]));
            let digests = hasher.finish().expect("every digest arrives");
            let mut with_gap: Vec<Option<Digest>> = want.iter().copied().map(Some).collect();
            with_gap[2..5].fill(None);
            let digests: Vec<Option<Digest>> = digests.iter().map(|d| d.copied()).collect();
            assert_eq!(digests, with_gap, "pool after {pool_after}");
        }
    }

    /// A hasher whose one worker starts taking blocks only after `delay`, and sets the flag
    /// when it has stopped: the test can tell whether the hasher waited for it.
    fn hasher_with_slow_worker(
        block_size: usize,
        delay: std::time::Duration,
    ) -> (BlockHasher, Arc<std::sync::atomic::AtomicBool>) {
        let (jobs, queue) = mpsc::sync_channel::<Job>(8);
        let (done, results) = mpsc::channel();
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        let worker = thread::spawn(move || {
            thread::sleep(delay);
            for job in queue {
                let _ = done.send((job.index, digest_of(&job.pieces)));
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut hasher = BlockHasher::new(block_size);
        hasher.tried_pool = true;
        hasher.pool = Some(Pool {
            jobs: Some(jobs),
            results,
            workers: vec![worker],
        });
        (hasher, stopped)
    }

    /// `finish` waits for the workers to hash every block still queued, however slow they
    /// are, rather than reporting those blocks missing.
    #[test]
    fn finish_waits_for_slow_workers() {
        let (mut hasher, _) = hasher_with_slow_worker(64, std::time::Duration::from_millis(200));
        let stream = numbered_stream(64 * 3 + 10);
        hasher.copy(&stream);
        assert!(hasher.local.is_empty(), "every full block was queued");
        assert_eq!(all_digests(hasher), expected(&stream, 64));
    }

    /// Dropping a hasher (an error path) closes the queue and joins its workers: none is
    /// left running.
    #[test]
    fn dropping_a_hasher_joins_its_workers() {
        let (mut hasher, stopped) =
            hasher_with_slow_worker(64, std::time::Duration::from_millis(200));
        hasher.copy(&numbered_stream(64 * 2));
        drop(hasher);
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
    }

    /// A hasher dropped midway (an error path) stops its workers.
    #[test]
    fn dropping_a_hasher_midway_joins_its_workers() {
        let mut hasher = BlockHasher::new(64);
        hasher.pool_after = 0;
        hasher.copy(&[1u8; 100_000]);
        assert!(hasher.pool.is_some(), "workers were started");
        drop(hasher);
    }
}
