//! Warm restarts: save a cache to a file and restore it, crash-safe.
//!
//! ```
//! use memocache::{Cache, CacheKey, Ttl};
//!
//! let dir = std::env::temp_dir().join(format!("memocache-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("cache.snapshot");
//!
//! let cache = Cache::builder().max_bytes(1 << 20).build()?;
//! let file_hash = CacheKey::from_content(b"some audio", "file")?.digest_hex();
//! let key = CacheKey::transcript(&file_hash, "en")?;
//! cache.insert_with_ttl(key, "hello world", Ttl::hours(24)?)?;
//! let saved = cache.save_snapshot(&path)?;
//! assert_eq!(saved.entries, 1);
//!
//! // After a restart:
//! let cache = Cache::builder().max_bytes(1 << 20).restore_from(&path).build()?;
//! assert_eq!(cache.get(&key).as_deref(), Some(&b"hello world"[..]));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! * **Saving streams, shard by shard, while the cache serves.** [`Cache::save_snapshot`]
//!   takes one shard's read lock at a time, just long enough to collect handles to its live
//!   entries (values are reference-counted [`Bytes`], so nothing is copied), releases it, and
//!   writes those entries. Readers and writers of the other shards never wait, and writers of
//!   that shard wait only for the handle collection. Each entry is written whole from the
//!   immutable value it had when its shard was visited; the file is therefore a consistent
//!   image *per shard*, not one instant of the whole cache — an entry inserted into an
//!   already-visited shard during a save is simply not in the file. Memory beyond the cache is
//!   one shard's list of handles and a write buffer.
//! * **Atomic replacement.** The file is written under a temporary name in the same
//!   directory, fsynced, renamed over the target, and the directory is fsynced. A crash or a
//!   full disk at any point leaves the previous snapshot as it was. The new file gets the
//!   old one's permission bits and, where the saver may give them (root may; others only
//!   a group they belong to), its owner and group (unix); it is never an error if not. A
//!   path that is a symbolic link is saved through it: the linked file is replaced and the
//!   link stays. Only a regular file is replaced: a directory, FIFO, socket or device at
//!   the path (or where its link leads) is refused before anything is written, since the
//!   rename would put a regular file in that node's place. If only the final directory
//!   fsync fails, the new file is already in place: the save returns
//!   [`SnapshotError::NotDurable`] (with its report), not an error that claims nothing
//!   changed. Each save first removes the temporary files that crashed saves to the same
//!   target left, never one a live save holds (savers lock their temporary file). Before
//!   writing, a save drops the old file's cached pages (Linux; they are freed at the rename
//!   anyway), so it needs page cache for one snapshot at a time, not two. Details in
//!   `file.rs`.
//! * **Loading checks everything before it changes anything, in memory bounded by what it
//!   keeps.** [`Cache::load_snapshot`] reads the file in a streaming pass that checks its
//!   structure and hashes every byte. While every live entry read so far fits the room left
//!   in the cache (that of expired entries counted as free, as the choice below counts it),
//!   it keeps their values (they become the cache's values: not a second copy); when
//!   everything fits — a restart with the same budget — that one pass is the whole load. Once something does not fit, it drops the values kept so far (at most the
//!   room) and goes on hashing the rest through a bounded buffer, keeping of each record
//!   only what the choice needs: its rank, TTL, length and the charge its key already
//!   holds in the cache, if any and live (40 bytes, not the 110 or so of a full head with
//!   its key and offset; the choice counts an expired entry as purged, so its key will hold
//!   nothing). With the whole file checked, it chooses from
//!   those what the policy's ranking keeps (the same choice the insertion makes), drops
//!   them, and reads the *same open file* again from its start, keeping only the chosen
//!   values and checking every byte again — this time including the checks that need the
//!   keys (valid prefixes, no key twice), which the first pass could no longer make.
//!   Only if the second read checks out too and has the same stored checksum as the first
//!   (so it read the same bytes) are the entries inserted. A file rewritten in place between
//!   the reads is refused: with [`SnapshotError::ChangedWhileLoading`] if the second read is
//!   itself a valid snapshot, else with what is wrong with it. (One replaced by a rename is
//!   not seen: the open file is still the old one, read whole.) Peak memory is
//!   thus the kept values, one set of record heads and bounded buffers (a read buffer, a 1 MiB
//!   chunk, and the blocks queued for the hash workers), not the file's size; the price is
//!   reading and hashing the file twice when the cache is smaller than the snapshot. A pipe
//!   (a FIFO, `/dev/stdin`) cannot be read twice: it is loaded in one pass holding every
//!   live value, as before. On any error the cache is untouched: its entries, its
//!   counters and what its eviction listener hears. (The second pass's choice counts on the
//!   room of expired entries without purging them; they are purged when the entries are
//!   stored, after the second read checked out. Until session 29 the choice purged them,
//!   and a load whose second read then failed had removed them and told the listener.) The
//!   file is opened read-only.
//! * **Except values the cache can never hold.** A value whose charge exceeds the loading
//!   cache's whole byte budget cannot be stored however the choice goes, so its bytes cannot
//!   change what a load restores. Where they fill whole blocks of a version-2 file, the load
//!   passes over those blocks without reading or hashing them (a seek), in both passes; the
//!   bytes from the value's start and to its end that share a block with other records are
//!   read and checked as ever, so every record head, the end marker and the trailer (whose
//!   root covers the listed digest of every block, passed over or not) are. Until session
//!   15 such values were read and hashed, twice: a sparse file whose value claims a terabyte
//!   on no disk took a terabyte of reading per pass, for a value left out anyway (4 GiB
//!   took 49 s and 8.6 GB of reads; now 2.4 MB, see `tests/decode_allocations.rs`). The
//!   price is that damage inside such a value is not noticed: the load succeeds, without
//!   it. A version-1 file (one SHA-256 over all of it) and a pipe must still be read
//!   through, and [`read_snapshot_file`], which keeps every value, checks every byte. Nor
//!   is such a value measured against the room: it is left out as an expired one is, so it
//!   sends no file to a second pass, and a pipe's one pass does not hold it. (Until session
//!   30 it did both: a file otherwise restored whole was read twice, and a 32 MiB value
//!   from a pipe into a cache of 1 MiB was held in a 64 MiB allocation, then refused.)
//! * **Hashing on every core, off the critical path.** One SHA-256 over the whole file is a
//!   single thread's work. Without SHA CPU instructions it runs at a few hundred MB/s
//!   (282.8 MiB/s on the machine of session 2): slower than writing the file, and far slower
//!   than reading it from the page cache. With them (SHA-NI) it runs at 1,256–1,298 MiB/s, still
//!   slower than reading from the page cache. Since version 2 the record stream is cut into
//!   blocks of 1 MiB, each hashed separately on a pool of worker threads (one per core but
//!   one, at most 8) while the caller's thread goes on encoding and writing, or reading and
//!   decoding, and hashes a block itself when the workers are behind; a final SHA-256 over the
//!   header and the list of block digests binds them (a hash list: every byte is still covered by
//!   SHA-256). The workers hash the same buffers that are written or read — values are shared
//!   by reference count, not copied — and at most two blocks per worker wait, so memory stays
//!   bounded. Small snapshots (under 1 MiB) are hashed on the caller's thread. See `hash.rs`
//!   for the details.
//! * **Untrusted input.** Every length in the file is bounded: record heads by a fixed
//!   maximum, values by the bytes left in the file (or, for a reader of unknown length, by
//!   the bytes that actually arrive), so a corrupt length is an error, not a huge allocation.
//!   (A sparse file can be terabytes long on no disk: a value the allocator refuses is an
//!   error too, never an abort.)
//!   The block size has a minimum, so the list of block digests a reader computes is at most
//!   half the size of the record stream it read; blocks passed over take no room in it, and
//!   the stored list is compared as it is read, not held, once its length matched the
//!   computed count. (Until session 20 each block passed over had a slot, and the stored list
//!   was collected: with the file's block size at its minimum, a hole of 1 TiB made a load
//!   ask for 567 GB at once and abort, see `tests/decode_allocations.rs`.) Prefixes are
//!   collected as strings while reading and
//!   interned only after the whole file checked out — checksums, structure, every prefix a
//!   valid key prefix, no key twice — so neither garbage nor a crafted file that fails late
//!   adds to the process-wide prefix table. (Validity is checked with `crate::key`'s own
//!   rule, which it exposes to the crate without interning.) The file's prefixes are then
//!   interned all at once or not at all: if the ones not yet in the table do not all fit
//!   ([`crate::KeyError::TooManyPrefixes`]), the load fails having interned none of them,
//!   even while other threads intern prefixes. That refusal does not wait for the end of
//!   the file: the format lists no prefixes up front, but the decoder counts each new valid
//!   prefix that the table does not hold as it first meets it, and stops at the record whose
//!   prefix makes them outnumber the table's free cells. The table never frees a cell, so such
//!   a file could not be loaded later in the read either (a prefix another thread interns
//!   meanwhile stops needing a cell but takes one); reading on would only read, hash and
//!   hold values in vain. A file damaged further on is then reported for its prefixes, not
//!   for the damage. No input makes the decoder panic (see the `snapshot_decode` fuzz
//!   target).
//! * **Time.** The cache's clock is monotonic and its epoch dies with the process, so TTLs
//!   cannot be stored as deadlines. Each entry stores its remaining TTL counted from the
//!   header's save time, a wall-clock (Unix) timestamp; on restore the wall-clock time since
//!   then is subtracted, entries whose TTL ran out before then are dropped as expired, and
//!   the others get their new deadline on the restoring cache's clock. An entry with exactly
//!   nothing left is live, as the cache serves an entry at its deadline (until session 32 it
//!   was dropped). An entry saved without a TTL gets
//!   the restoring cache's [default TTL](crate::CacheBuilder::default_ttl), if it has one,
//!   as an insert without a TTL does (until session 20 it never expired there, and each
//!   save and restore carried that on). A wall clock that went backwards
//!   counts as no time passed. (Remaining TTLs are measured when each shard is visited and
//!   shifted back to the save time, under-estimating by at most the wait for one shard lock.)
//! * **Budget and ranking.** Restored entries must fit the restoring cache's room, which may
//!   be smaller than the saved cache. The snapshot keeps each entry's standing with the
//!   eviction policy (S3-FIFO queue and frequency) and its access count; when not everything
//!   fits, the most valuable entries by that ranking are kept, and they are inserted least
//!   valuable first so that the policy's queues come back in their old order. Existing
//!   entries are never evicted to make room: restoring into a non-empty cache adds what fits.
//!   Expired ones are not counted as existing: when not everything fits, the choice counts
//!   their room as free, and storing the chosen entries purges them (reported
//!   [`RemovalCause::Expired`](crate::RemovalCause)) if it needs that room, as an insert
//!   that must evict purges them. (Until session 20 they held their room, and a
//!   cache whose entries had all expired restored nothing, every entry "left out".)
//!   An entry whose key the cache holds replaces its value, as an insert does (an update:
//!   the old value is reported [`RemovalCause::Replaced`](crate::RemovalCause)), and needs
//!   only the bytes by which it outgrows the old value, not a new entry: a snapshot reloaded
//!   into the full cache it was saved from is restored whole. (Until session 15 each was
//!   charged in full, and such a reload left every entry out.) A value smaller than the one
//!   it replaces frees room that the choice does not count on (see `Room::take`). Presence
//!   is looked up as the file is read, for keys whose prefix is interned (no other key can
//!   be in a cache), and again when the entries are stored.
//!
//! # File format, version 2
//!
//! All fixed-width integers are little-endian. Offsets are from the start of the file. SHA-256
//! is FIPS 180-4 SHA-256.
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic: `89 4D 43 53 4E 41 50 0A` (`\x89MCSNAP\n`) |
//! | 8..12 | format version, `u32` = 2 |
//! | 12..16 | flags, `u32`, reserved = 0 (a reader refuses anything else) |
//! | 16..24 | save time, `u64` nanoseconds since the Unix epoch |
//! | 24..28 | block size *B*, `u32`, 64 ≤ *B* ≤ 2³⁰ (this crate writes 2²⁰) |
//! | 28.. | the **record stream**: zero or more entry records, then the end marker |
//! | after it | the **trailer**: block count, block digests, root |
//!
//! An **entry record** is
//!
//! | size | field |
//! |---|---|
//! | 1 | tag `0x01` |
//! | 4 | head length *h*, `u32`, 1 ≤ *h* ≤ 1024 |
//! | *h* | head: the bincode 2 encoding of the struct below (see [`crate::codec`]) |
//! | `value_len` | the value's bytes, raw |
//!
//! where the head, in bincode's standard configuration (varint integers, little-endian), has
//! these fields, in order:
//!
//! | field | bincode type | meaning |
//! |---|---|---|
//! | `prefix` | `str` (varint length + UTF-8) | key prefix, 1–64 bytes of `[A-Za-z0-9._-]` |
//! | `digest` | `[u8; 32]` (32 raw bytes) | key digest (SHA-256 of the content) |
//! | `ttl_nanos` | `Option<u64>` (see below) | time left to live at the save time, nanoseconds |
//! | `access_count` | `u64` varint | reads recorded so far |
//! | `freq` | `u8` | eviction policy's frequency counter, 0–3 |
//! | `main` | `bool` (byte 0 or 1) | whether the entry was in the policy's main queue |
//! | `value_len` | `u64` varint | number of value bytes after the head |
//!
//! `ttl_nanos` is byte 0 for none (the entry never expires), or byte 1 and a varint.
//!
//! Because `value_len` is the last field and bincode encodes a byte string as a varint length
//! and the raw bytes, head + value is exactly the bincode encoding of the same struct with a
//! byte-string `value` in place of `value_len`. Records appear shard by shard, each shard's
//! entries least valuable first; a key appears at most once. The **end marker** is the tag
//! `0x00` and the number of entry records as `u64`; it ends the record stream, whose length
//! *S* (at least 9) a reader thus learns by parsing it.
//!
//! The record stream is cut into *n* = ⌈*S* / *B*⌉ **blocks**: block *i* is stream bytes
//! *iB* up to (*i*+1)*B*, the last block possibly shorter; records cross block boundaries
//! freely. The **trailer** is
//!
//! | size | field |
//! |---|---|
//! | 8 | block count *n*, `u64` |
//! | 32 × *n* | SHA-256 of each block, in order |
//! | 32 | root: SHA-256 over the header (bytes 0..28) then the trailer's first 8 + 32*n* bytes |
//!
//! with which the file ends. A reader must see the end marker, a matching record count, the
//! block count *n*, a matching root and every block's digest matching its content, and nothing
//! after the root, before it may trust any record. (A reader may leave unchecked a block that
//! lies wholly inside the value of a record it does not keep: the record's head and the root
//! are still checked. This crate's load does so for values too large for the cache.)
//! A damaged block is reported by number and
//! byte range ([`SnapshotError::BlockChecksumMismatch`]); a damaged header, digest list or
//! root as [`SnapshotError::ChecksumMismatch`].
//!
//! # File format, version 1
//!
//! Version 1 (written by earlier builds) is **still read**, so that a cache saved by them
//! survives the upgrade; it is no longer written. Its header is bytes 0..24 as above with
//! version 1 and no block size, then the record stream from byte 24, and then, instead of
//! the trailer, the SHA-256 of every byte of the file before it (header and record stream):
//! 32 bytes, with which the file ends. Reading it hashes on one thread.

mod file;
mod format;
mod hash;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use format::{FORMAT_VERSION, FORMAT_VERSION_1, MAGIC};

use crate::cache::{Cache, CacheBuilder, CacheError, EntryImage, Expired, Room};
use crate::callback::FirstPanic;
use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::time::Timestamp;
use format::Keep;

/// Buffer size for reading and writing snapshot files. Values larger than this bypass it:
/// they are written straight from the cache's own buffers and read straight into the
/// buffers that become the cache's values, so most bytes are copied once, by the kernel.
/// (It was 1 MiB, which sent every value under 1 MiB through the buffer, a second copy.)
const IO_BUFFER: usize = 1 << 16;

/// Why a snapshot could not be saved or loaded. Every variant names the problem; errors
/// about the file's content carry the byte offset where it was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// An I/O operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done, and to which path.
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The input does not start with [`MAGIC`]: it is not a snapshot.
    #[error("not a memocache snapshot: bad magic bytes {}", hex::encode(found))]
    BadMagic {
        /// The bytes found where the magic belongs (fewer than 8 if the input is shorter).
        found: Vec<u8>,
    },
    /// The file is a snapshot of a format version this build cannot read.
    #[error(
        "unsupported snapshot format version {version} (this build reads versions {FORMAT_VERSION_1} and {FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        version: u32,
    },
    /// The input ended before the end marker and checksum were complete.
    #[error("snapshot is truncated at byte {at}")]
    Truncated {
        /// The offset where more bytes were needed (the input's length).
        at: u64,
    },
    /// An entry record does not decode.
    #[error("corrupt record at byte {at}: {reason}")]
    CorruptRecord {
        /// Offset of the record's tag byte.
        at: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The host's wall clock reads before the Unix epoch, which the file's save time cannot
    /// say: it would be written as the epoch, and a restore on a right clock would count
    /// more than 50 years as passed and drop every TTL entry as expired. Refused before the
    /// file is touched (the format is unchanged, so existing files stay readable).
    #[error("the wall clock reads {before:?} before the Unix epoch: cannot date a snapshot")]
    ClockBeforeEpoch {
        /// How far before the epoch the clock reads.
        before: Duration,
    },
    /// The header or end marker is inconsistent, or bytes follow the checksum.
    #[error("malformed snapshot at byte {at}: {reason}")]
    Malformed {
        /// Offset of the offending field.
        at: u64,
        /// What is wrong.
        reason: String,
    },
    /// The content does not hash to the stored SHA-256: the file was damaged. In a
    /// version-1 file this is the checksum of the whole content; in a version-2 file it is the
    /// root over the header and the list of block digests (a damaged block is reported as
    /// [`SnapshotError::BlockChecksumMismatch`]).
    #[error("snapshot checksum mismatch: stored SHA-256 {stored}, content hashes to {computed}")]
    ChecksumMismatch {
        /// The checksum in the file, hex.
        stored: String,
        /// The checksum of the content, hex.
        computed: String,
    },
    /// One block of a version-2 file's record stream does not hash to its listed SHA-256: the
    /// file was damaged in that block.
    #[error(
        "snapshot checksum mismatch in block {block} (bytes {start}..{end}): stored SHA-256 \
         {stored}, content hashes to {computed}"
    )]
    BlockChecksumMismatch {
        /// The block's number, from 0.
        block: u64,
        /// File offset of the block's first byte.
        start: u64,
        /// File offset just past the block's last byte.
        end: u64,
        /// The digest listed in the trailer, hex.
        stored: String,
        /// The digest of the block's content, hex.
        computed: String,
    },
    /// A load that had to read the file twice (not everything fit the cache) read two
    /// different, each complete and valid, snapshots: the file was replaced or rewritten in
    /// place between the reads. Nothing was restored.
    #[error(
        "the snapshot changed while it was loaded: its checksum was {first} on the first read \
         and {second} on the second; nothing was restored"
    )]
    ChangedWhileLoading {
        /// The stored checksum (version 1) or root (version 2) of the first read, hex.
        first: String,
        /// The same of the second read, hex.
        second: String,
    },
    /// A save wrote the new snapshot and renamed it over the old one, but syncing the
    /// directory failed: the new file is in place and complete, yet after a crash the
    /// directory may still show the previous snapshot (or, if there was none, no file). Not
    /// a half-written file in any case; saving again may make it durable.
    #[error(
        "snapshot saved, but syncing directory {} failed, so a crash may bring back the \
         previous file: {source}",
        dir.display()
    )]
    NotDurable {
        /// The directory that could not be synced.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
        /// What the save wrote.
        report: SnapshotReport,
    },
}

/// What a save or a load did.
///
/// Byte counts are charged bytes ([`CacheEntry::charged_size`]), the unit of the cache's
/// budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotReport {
    /// Entries in the file: written by a save, read by a load.
    pub entries: u64,
    /// Charged bytes of those entries.
    pub bytes: u64,
    /// Size of the file (0 for [`Cache::restore_snapshot`], which sees no file).
    pub file_bytes: u64,
    /// The save time recorded in the file.
    pub saved_at: SystemTime,
    /// Entries a load stored in the cache.
    pub restored: u64,
    /// Charged bytes of the restored entries.
    pub restored_bytes: u64,
    /// Entries a load dropped because their TTL ran out since the save.
    pub expired: u64,
    /// Charged bytes of the expired entries.
    pub expired_bytes: u64,
    /// Live entries a load left out because the cache had no room for them (the least
    /// valuable by the eviction policy's ranking).
    pub left_out: u64,
    /// Charged bytes of the entries left out.
    pub left_out_bytes: u64,
}

impl SnapshotReport {
    fn new(saved_at: SystemTime) -> SnapshotReport {
        SnapshotReport {
            entries: 0,
            bytes: 0,
            file_bytes: 0,
            saved_at,
            restored: 0,
            restored_bytes: 0,
            expired: 0,
            expired_bytes: 0,
            left_out: 0,
            left_out_bytes: 0,
        }
    }
}

/// A decoded, fully verified snapshot: what [`read_snapshot`] returns and
/// [`Cache::restore_snapshot`] applies.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// When it was saved (wall clock); remaining TTLs count from here.
    pub saved_at: SystemTime,
    /// The entries, in file order (shard by shard, least valuable first).
    pub entries: Vec<SnapshotEntry>,
}

/// One entry of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotEntry {
    /// The key.
    pub key: CacheKey,
    /// The value.
    pub value: Bytes,
    /// Time left to live at [`Snapshot::saved_at`]; `None` if it never expires.
    pub ttl_remaining: Option<Duration>,
    /// Reads recorded so far.
    pub access_count: u64,
    /// The eviction policy's frequency counter (0–3).
    pub freq: u8,
    /// Whether the entry was in the eviction policy's main queue.
    pub main: bool,
}

/// Reads and verifies a whole snapshot from `reader`.
///
/// Returns entries only if the entire input is a valid snapshot: magic, version, every
/// record, the end marker, the record count and the SHA-256 all checked, and nothing after
/// the checksum. Never panics; a length field is never trusted for more memory than the input
/// actually supplies. Reading a regular file, [`read_snapshot_file`] can also check lengths
/// against the file size up front. Holds every value: to restore into a cache, prefer
/// [`Cache::load_snapshot`], whose memory is bounded by what the cache keeps.
///
/// ```
/// use memocache::snapshot::{read_snapshot, SnapshotError};
///
/// let err = read_snapshot(&b"GIF89a..."[..]).unwrap_err();
/// assert!(matches!(err, SnapshotError::BadMagic { .. }));
/// ```
pub fn read_snapshot(reader: impl Read) -> Result<Snapshot, SnapshotError> {
    format::Decoder::new(format::Stream(reader), None, "the snapshot".into()).decode()
}

/// Reads and verifies the snapshot file at `path`; see [`read_snapshot`]. The file is opened
/// read-only.
pub fn read_snapshot_file(path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
    let path = path.as_ref();
    let (file, len) = open(path)?;
    decoder(path, &file, len).decode()
}

/// Opens the snapshot at `path` read-only; returns it and, if it is a regular file, its
/// length.
fn open(path: &Path) -> Result<(File, Option<u64>), SnapshotError> {
    let file = File::open(path).map_err(|e| io_error("opening", path, e))?;
    let len = regular_len(path, &file)?;
    Ok((file, len))
}

/// The length of `file` if it is a regular file.
fn regular_len(path: &Path, file: &File) -> Result<Option<u64>, SnapshotError> {
    let metadata = file
        .metadata()
        .map_err(|e| io_error("reading the metadata of", path, e))?;
    // Only a regular file's size is its content's length: a pipe or a device reports 0 (or
    // anything), and trusting that refused every value of a snapshot streamed through a FIFO
    // as truncated. Those are read like any reader, as bytes arrive.
    Ok(metadata.is_file().then_some(metadata.len()))
}

/// A decoder over `file` (read from its current position) through a buffer.
fn decoder<'f>(
    path: &Path,
    file: &'f File,
    len: Option<u64>,
) -> format::Decoder<BufReader<&'f File>> {
    let input = BufReader::with_capacity(IO_BUFFER, file);
    format::Decoder::new(input, len, path.display().to_string())
}

fn io_error(action: &str, path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        action: format!("{action} {}", path.display()),
        source,
    }
}

/// Charged bytes of a value of `len` bytes (saturating for lengths no value can have).
fn charge_of(len: u64) -> u64 {
    usize::try_from(len).map_or(u64::MAX, |len| CacheEntry::charged_size(len) as u64)
}

/// What is left of `ttl` (counted from the save time) after `elapsed`: `None` inside means
/// the entry never expires, `None` outside that it has expired.
///
/// Nothing left is not expired: the cache serves an entry up to and including its deadline
/// (expired means strictly after it, see [`CacheEntry::is_expired`]), so an entry with 0 ns
/// left is restored with its deadline at the restoring cache's now. (It was dropped as
/// expired, so an entry saved at its deadline, which the saving cache still served, was
/// gone after a restore.)
fn ttl_left(ttl: Option<Duration>, elapsed: Duration) -> Option<Option<Duration>> {
    match ttl {
        None => Some(None),
        Some(left) => left.checked_sub(elapsed).map(Some),
    }
}

/// `saved_at` if the file can say it: a time before the Unix epoch is refused, since the
/// header would store it as the epoch and a restore would expire TTLs by the difference.
fn dated(saved_at: SystemTime) -> Result<SystemTime, SnapshotError> {
    match SystemTime::UNIX_EPOCH.duration_since(saved_at) {
        Ok(before) if !before.is_zero() => Err(SnapshotError::ClockBeforeEpoch { before }),
        _ => Ok(saved_at),
    }
}

/// Wall-clock time from the save to `now`; a clock that went backwards counts as none.
fn since(saved_at: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(saved_at).unwrap_or(Duration::ZERO)
}

/// One entry on its way into the cache: its value if it was read (a load reads only what it
/// may keep), its value's length either way.
struct Restorable {
    key: CacheKey,
    value: Option<Bytes>,
    value_len: u64,
    ttl_remaining: Option<Duration>,
    access_count: u64,
    freq: u8,
    main: bool,
}

impl Cache {
    /// Writes every live entry to a snapshot file at `path`, atomically replacing any file
    /// there, while the cache keeps serving. See the [module docs](crate::snapshot) for the
    /// guarantees and the format.
    ///
    /// On error the previous file at `path`, if any, is left intact — except for
    /// [`SnapshotError::NotDurable`], which says the new file did replace it but the
    /// replacement may not survive a crash. The cache itself is only read, success or not:
    /// no entry, access, counter or listener call changes.
    pub fn save_snapshot(&self, path: impl AsRef<Path>) -> Result<SnapshotReport, SnapshotError> {
        self.save_snapshot_with(path.as_ref(), file::sync_dir)
    }

    /// [`Cache::save_snapshot`], making the rename durable with `sync_dir` (tests inject a
    /// failure here).
    fn save_snapshot_with(
        &self,
        path: &Path,
        sync_dir: fn(&Path) -> io::Result<()>,
    ) -> Result<SnapshotReport, SnapshotError> {
        // The wall clock first: TTLs are counted from `start` but stored as counting from
        // `saved_at`, so `saved_at` must not be later than `start` or every saved deadline
        // is late by the time between the readings.
        let saved_at = dated(SystemTime::now())?;
        let clock = self.clock();
        let start = clock.now();
        let mut report = SnapshotReport::new(saved_at);
        let replaced = file::replace_atomically(path, sync_dir, |file| {
            let out = BufWriter::with_capacity(IO_BUFFER, file);
            let mut out = format::Encoder::new(out, saved_at, format::BLOCK_SIZE)?;
            for shard in 0..self.shard_count() {
                // Read before the export, so the shift is never more than the time that
                // really passed: remaining TTLs err on the short side.
                let since_start = clock.now().saturating_duration_since(start);
                for image in self.export_shard(shard) {
                    let ttl = image
                        .ttl_remaining
                        .map(|left| left.saturating_add(since_start));
                    out.entry(
                        &image.key,
                        &image.value,
                        ttl,
                        image.access_count,
                        image.freq,
                        image.main,
                    )?;
                    report.entries += 1;
                    report.bytes += CacheEntry::charged_size(image.value.len()) as u64;
                }
            }
            out.finish()
        })?;
        report.file_bytes = replaced.value;
        match replaced.dir_sync {
            Ok(()) => Ok(report),
            Err((dir, source)) => Err(SnapshotError::NotDurable {
                dir,
                source,
                report,
            }),
        }
    }

    /// Restores the snapshot file at `path` into this cache: all of it that is live and fits,
    /// or — on any error — nothing. See [`Cache::restore_snapshot`] for what is kept.
    ///
    /// A failed load leaves the cache as it was: no entry stored, replaced or purged, no
    /// counter moved and nothing told to the eviction listener (expired entries are purged,
    /// if their room is needed, only once the file has checked out).
    ///
    /// The file is verified completely before the cache is touched and is never modified
    /// (but for values too large for this cache's whole budget, which are passed over: see
    /// the [module docs](crate::snapshot)).
    /// Memory is bounded by what the cache can keep, not by the file's size: see the
    /// [module docs](crate::snapshot) (a pipe is the exception: it is read once, whole).
    pub fn load_snapshot(&self, path: impl AsRef<Path>) -> Result<SnapshotReport, SnapshotError> {
        self.load_snapshot_with(path.as_ref(), || {})
    }

    /// [`Cache::load_snapshot`], calling `between_passes` before a second pass (tests change
    /// the file there).
    fn load_snapshot_with(
        &self,
        path: &Path,
        between_passes: impl FnOnce(),
    ) -> Result<SnapshotReport, SnapshotError> {
        let (file, len) = open(path)?;
        let started = SystemTime::now();
        // A pipe cannot be read twice: it is read in one pass holding every live value, as
        // before the two-pass load existed.
        let rereadable = len.is_some();
        let mut room = self.room();
        let mut expired_counted = false;
        // Whether each key is present already, and its charge: a reload into the cache the
        // file was saved from replaces values, which needs no room beyond any growth. Not an
        // expired entry's: the second pass's choice counts those as purged, and the import
        // purges them if it needs their room; counted as held, a purged key's entry in the
        // file looked nearly free there, so the choice read values that did not fit together
        // and the import, choosing again among those alone, left out entries the ranking
        // keeps.
        let now = self.clock().now();
        let held = |key: &CacheKey| self.live_held_charge(key, now);
        let largest = self.largest_value();
        let first = decoder(path, &file, len).passing_values_over(largest);
        let mut first = first.scan(held, |_, saved_at, record, key| {
            let Some(_) = ttl_left(record.ttl_remaining, since(saved_at, started)) else {
                return Keep::Head;
            };
            // Left out whatever the choice, as the expired are. Measured against the room,
            // such a value sent a file to its second pass, to read again what the first had
            // kept; and a pipe's single pass kept it whole (a 32 MiB value loaded into a
            // cache of 1 MiB allocated 64 MiB at once), for the import to refuse.
            if record.value_len > largest {
                return Keep::Head;
            }
            if !rereadable {
                return Keep::Value;
            }
            // Values are kept while every live entry so far fits the room: the usual case,
            // a load into a cache as large as the saved one, stays one pass. At the first
            // that does not, the values kept so far (at most the room) are dropped and only
            // what the choice needs is kept of each record; a second pass reads the values
            // the ranking keeps. Presence is asked only of an entry that does not fit as a
            // new one. Asked of every record (and of every entry by the import), presence
            // cost a load of 100,000 entries of 16 bytes into an empty cache 2.7 % more
            // instructions than before it was asked at all (callgrind); asked only when it
            // can matter, 0.5 %. Charging a present key in full when it fits anyway can only
            // send the load to its second pass sooner, whose choice asks presence of every
            // entry.
            let charge = charge_of(record.value_len);
            let fits =
                |room: &mut Room| room.take(charge, None) || room.take(charge, key.and_then(held));
            if fits(&mut room) {
                return Keep::Value;
            }
            // The room of what has expired is free to the choice and the import (which purge
            // it if they need it), so to this pass too. Asked at the first entry that does
            // not fit without it, so a load that fits anyway reads no shard for it. Without
            // it, a file that fits once they are purged was read twice.
            if !expired_counted {
                expired_counted = true;
                room = room.plus(self.expired_room(now));
                if fits(&mut room) {
                    return Keep::Value;
                }
            }
            Keep::RanksOnly
        })?;
        let Some(ranks) = first.ranks.take() else {
            return self.apply_scan(first);
        };
        between_passes();
        self.load_second_pass(path, &file, first, ranks, now)
    }

    /// The second pass of [`Cache::load_snapshot`] when not everything fits: chooses from the
    /// first pass's `ranks` (one per record, the charges held by present keys noted as of
    /// the cache's time `noted`) what the ranking keeps, re-reads the file (the same open
    /// file, from its start) keeping only those values, and applies them if the second read
    /// checked out in full and is the same file as the first.
    fn load_second_pass(
        &self,
        path: &Path,
        file: &File,
        first: format::Scan,
        ranks: Vec<format::Rank>,
        noted: Timestamp,
    ) -> Result<SnapshotReport, SnapshotError> {
        let elapsed = since(first.saved_at, SystemTime::now());
        let live = ranks
            .iter()
            .enumerate()
            .filter(|(_, rank)| ttl_left(rank.ttl_remaining(), elapsed).is_some())
            .collect();
        // Expired entries are counted as purged, not purged: the second read may still fail,
        // and a failed load changes nothing. The import purges them if it needs their room.
        // Those expired by `noted`, when the ranks' held charges were noted, not by now: a
        // key that expired in between holds a charge in its rank, and would be counted twice.
        let chosen = self.choose_for_import(
            live,
            |(_, r)| EntryImage::rank_of(r.main, r.freq, r.access_count),
            |(_, r)| charge_of(r.value_len),
            |(_, r)| r.held(),
            &mut Default::default(),
            Expired::CountAsFree(noted),
        );
        let mut wanted = vec![false; ranks.len()];
        for (index, _) in chosen {
            wanted[index] = true;
        }
        // Chosen: the ranks go before the second read, whose full heads are then the only
        // per-record memory held.
        drop(ranks);
        self.reread_chosen(path, file, &first.checksum, &wanted)
    }

    /// The second read of [`Cache::load_snapshot`]'s second pass: re-reads the file from its
    /// start keeping the values of the records `wanted` says (one flag a record of the first
    /// read, whose checksum was `checksum`), and applies them if the read checked out in full
    /// and is the same file as the first.
    fn reread_chosen(
        &self,
        path: &Path,
        mut file: &File,
        checksum: &hash::Digest,
        wanted: &[bool],
    ) -> Result<SnapshotReport, SnapshotError> {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_error("rewinding", path, e))?;
        // The length again: a file that grew or shrank in between is read as it is now, and
        // then fails the check below or the second read's own checks.
        let len = regular_len(path, file)?;
        // Presence was asked in the first pass, for the choice; the import asks again.
        let second = decoder(path, file, len).passing_values_over(self.largest_value());
        let second = second.scan(
            |_| None,
            |index, _, _, _| {
                if wanted.get(index) == Some(&true) {
                    Keep::Value
                } else {
                    Keep::Head
                }
            },
        )?;
        // Both reads checked out; equal checksums (SHA-256) mean they read the same bytes, so
        // the choice made from the first read's heads is a choice among these records.
        if second.checksum != *checksum || second.records.len() != wanted.len() {
            return Err(SnapshotError::ChangedWhileLoading {
                first: hex::encode(checksum),
                second: hex::encode(second.checksum),
            });
        }
        self.apply_scan(second)
    }

    /// The longest value this cache's whole byte budget holds: a load passes over the bytes
    /// of longer ones, which it can never store (see `format::Decoder::passing_values_over`).
    fn largest_value(&self) -> u64 {
        self.max_bytes()
            .saturating_sub(CacheEntry::charged_size(0) as u64)
    }

    /// Applies a completely checked scan: interns its keys (only now, so a failed load
    /// interns nothing) and restores what was read.
    fn apply_scan(&self, scan: format::Scan) -> Result<SnapshotReport, SnapshotError> {
        let keys = scan.keys()?;
        let file_bytes = scan.len;
        let entries = scan
            .records
            .into_iter()
            .zip(keys)
            .map(|(record, key)| Restorable {
                key,
                value: record.value,
                value_len: record.value_len,
                ttl_remaining: record.ttl_remaining,
                access_count: record.access_count,
                freq: record.freq,
                main: record.main,
            });
        // The cache's clock first, then the wall clock: see `restore`.
        let clock_now = self.clock().now();
        let mut panicked = FirstPanic::default();
        let mut report = self.restore(
            scan.saved_at,
            entries,
            SystemTime::now(),
            clock_now,
            &mut panicked,
        );
        panicked.resume();
        report.file_bytes = file_bytes;
        Ok(report)
    }

    /// Stores the entries of a verified snapshot, as of wall-clock time `now`.
    ///
    /// Entries whose remaining TTL ran out between [`Snapshot::saved_at`] and `now` are
    /// dropped; the others expire after what is left of their TTL, on this cache's clock
    /// (entries without a TTL after this cache's default TTL, if it has one). Of
    /// the live entries, the most valuable by the eviction policy's ranking (main queue
    /// first, then frequency, then access count) that fit the room left in the byte budget
    /// and entry bound are stored; the rest are left out. Existing entries are not evicted to
    /// make room, but expired ones are purged (reported as expired) if not everything fits.
    /// An entry whose key is already present replaces it, as an insert does (an update), and
    /// so needs only the bytes by which its value outgrows the present one, and no entry of
    /// the room. What is left counts from this cache's clock as read during the call, so pass
    /// the wall-clock time of just before it: a `now` taken earlier makes every restored
    /// entry live that much longer.
    ///
    /// A key that `snapshot` holds more than once (a file never does, but its entries are
    /// public: two snapshots merged, say) is decided by its last entry, as inserting them in
    /// order would leave it (an insert replaces): the earlier ones are reported as left out,
    /// and if the last has expired the key is not restored, even when an earlier copy would
    /// still be live (it is counted expired).
    ///
    /// A value's drop is the host's code (a `Bytes::from_owner` runs its owner's): values
    /// not restored are dropped one by one, and if one of those drops, or the eviction
    /// listener, panics, everything restorable is still restored and the first panic is
    /// re-raised once it is.
    pub fn restore_snapshot(&self, snapshot: Snapshot, now: SystemTime) -> SnapshotReport {
        // Each copy of a key was chosen and charged as an entry of its own, so copies took
        // the room of other keys, and all were reported restored though each replaced the
        // one before (until session 32).
        let mut seen = HashSet::with_capacity(snapshot.entries.len());
        let last: Vec<bool> = (snapshot.entries.iter().rev())
            .map(|entry| seen.insert(entry.key))
            .collect();
        let (entries, superseded): (Vec<_>, Vec<_>) = (snapshot.entries.into_iter())
            .zip(last.into_iter().rev())
            .partition(|&(_, last)| last);
        let entries = entries.into_iter().map(|(entry, _)| Restorable {
            key: entry.key,
            value_len: entry.value.len() as u64,
            value: Some(entry.value),
            ttl_remaining: entry.ttl_remaining,
            access_count: entry.access_count,
            freq: entry.freq,
            main: entry.main,
        });
        let clock_now = self.clock().now();
        let mut panicked = FirstPanic::default();
        let mut report = self.restore(snapshot.saved_at, entries, now, clock_now, &mut panicked);
        for (entry, _) in superseded {
            let charge = charge_of(entry.value.len() as u64);
            report.entries += 1;
            report.bytes += charge;
            report.left_out += 1;
            report.left_out_bytes += charge;
            panicked.catch(move || drop(entry));
        }
        panicked.resume();
        report
    }

    /// [`Cache::restore_snapshot`] over entries whose values may be missing: a live entry
    /// without its value was left out by a load's first pass.
    ///
    /// `clock_now` is the cache's clock read no later than the wall-clock `now`: deadlines are
    /// `clock_now` plus what is left at `now`, so they err on the short side by the time
    /// between the two readings. (The import read its own clock after collecting and
    /// sorting every entry, which made each restored entry live that much longer than its
    /// TTL — an expired entry could be returned.)
    ///
    /// The values not restored are dropped one by one, the first panic of a drop or of the
    /// listener kept in `panicked` for the caller to re-raise (see [`Cache::import`]).
    fn restore(
        &self,
        saved_at: SystemTime,
        entries: impl Iterator<Item = Restorable>,
        now: SystemTime,
        clock_now: Timestamp,
        panicked: &mut FirstPanic,
    ) -> SnapshotReport {
        let elapsed = since(saved_at, now);
        let mut report = SnapshotReport::new(saved_at);
        let mut images = Vec::new();
        for entry in entries {
            let charge = charge_of(entry.value_len);
            report.entries += 1;
            report.bytes += charge;
            let Some(ttl) = ttl_left(entry.ttl_remaining, elapsed) else {
                report.expired += 1;
                report.expired_bytes += charge;
                panicked.catch(move || drop(entry));
                continue;
            };
            let Some(value) = entry.value else {
                report.left_out += 1;
                report.left_out_bytes += charge;
                continue;
            };
            images.push(EntryImage {
                key: entry.key,
                value,
                ttl_remaining: ttl,
                access_count: entry.access_count,
                freq: entry.freq,
                main: entry.main,
            });
        }
        let outcome = self.import(images, clock_now, panicked);
        report.restored = outcome.restored as u64;
        report.restored_bytes = outcome.restored_bytes;
        report.left_out += outcome.left_out as u64;
        report.left_out_bytes += outcome.left_out_bytes;
        report
    }
}

impl CacheBuilder {
    /// Restores the snapshot file at `path` into the cache when it is built (see
    /// [`Cache::load_snapshot`]).
    ///
    /// A missing file is a first start: the cache is built empty. Any other problem with the
    /// file fails [`CacheBuilder::build`] with [`CacheError::Snapshot`], so that a damaged
    /// snapshot is noticed; to start empty anyway, build without this option. For the
    /// counts of what was restored, call [`Cache::load_snapshot`] on the built cache instead.
    pub fn restore_from(mut self, path: impl Into<PathBuf>) -> CacheBuilder {
        self.restore_from = Some(path.into());
        self
    }
}

/// The restore step of [`CacheBuilder::build`].
pub(crate) fn restore_on_build(cache: &Cache, path: &Path) -> Result<(), CacheError> {
    match cache.load_snapshot(path) {
        Ok(_) => Ok(()),
        Err(SnapshotError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CacheError::Snapshot(Arc::new(e))),
    }
}

#[cfg(test)]
mod tests;
