//! The bytes of a snapshot file (layout in the [module docs](super)): an encoder that writes
//! version 2 and a decoder that reads and checks versions 1 and 2, both hashing every byte
//! they pass (version 2's record stream on the worker threads of [`super::hash`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ring::digest::{Context, SHA256};

use super::hash::{BlockHasher, Digest};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Snapshot, SnapshotEntry, SnapshotError};
use crate::codec;
use crate::key::{
    self, CacheKey, DIGEST_LEN, KeyError, MAX_PREFIX_LEN, intern_all, prefix_demand, prefix_problem,
};

/// The first eight bytes of every snapshot. The high first byte catches 7-bit channels and the
/// final newline catches text-mode newline translation, as in PNG's signature.
pub const MAGIC: [u8; 8] = *b"\x89MCSNAP\n";

/// The format version this crate writes. It also reads [`FORMAT_VERSION_1`].
pub const FORMAT_VERSION: u32 = 2;

/// The first format version (one SHA-256 over the whole file), still read, no longer written.
pub const FORMAT_VERSION_1: u32 = 1;

/// Length of a version-2 header: magic, version, flags, save time, block size.
const HEADER_LEN: usize = 28;

/// The block size this crate writes: large enough that handing a block to a hash worker costs
/// nothing next to hashing it (milliseconds), small enough that a few blocks per core in
/// flight is little memory.
pub(super) const BLOCK_SIZE: u32 = 1 << 20;

/// Smallest block size a reader accepts: bounds the list of block digests to half the record
/// stream's size whatever the file says.
const MIN_BLOCK_SIZE: u32 = 64;

/// Largest block size a reader accepts.
const MAX_BLOCK_SIZE: u32 = 1 << 30;

/// Tag byte of an entry record.
const TAG_ENTRY: u8 = 0x01;

/// Tag byte of the end marker.
const TAG_END: u8 = 0x00;

/// Longest record head a reader accepts. A head is a prefix of at most 64 bytes, a 32-byte
/// digest and a few varints: under 150 bytes.
const MAX_HEAD_LEN: u32 = 1024;

/// The policy's largest frequency value.
const MAX_FREQ: u8 = 3;

/// Capacity reserved up front for a value of unknown trustworthiness when the reader cannot
/// check its length against the remaining input; larger values grow as bytes actually arrive.
const UNCHECKED_RESERVE: u64 = 64 * 1024;

/// Buffer size for a value that is hashed but not kept: large enough that a chunk is a
/// worthwhile piece for the hash workers, small next to any cache.
const SKIP_CHUNK: usize = 1 << 20;

/// The structured part of one record, encoded with [`crate::codec`] (bincode 2, standard
/// configuration). The value's bytes follow it raw; `value_len` is their count, and it is the
/// last field, so head + value is exactly the bincode encoding of the same struct with the
/// value as a byte string in `value_len`'s place.
///
/// `P` is `&str` when writing and [`Prefix`] when reading.
#[derive(Serialize, Deserialize)]
struct RecordHead<P> {
    prefix: P,
    digest: [u8; DIGEST_LEN],
    /// Time left to live, in nanoseconds, counted from the header's save time.
    ttl_nanos: Option<u64>,
    access_count: u64,
    freq: u8,
    main: bool,
    value_len: u64,
}

/// A key prefix as read from a file.
///
/// Decoded through `deserialize_str`, for which bincode borrows from the head buffer and so
/// checks the claimed length against the bytes actually there; a `String` field would make
/// bincode allocate the claimed length (up to its 4 GiB limit) before reading.
pub(super) struct Prefix(String);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Prefix, D::Error> {
        struct PrefixVisitor;
        impl serde::de::Visitor<'_> for PrefixVisitor {
            type Value = Prefix;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a key prefix of at most {MAX_PREFIX_LEN} bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Prefix, E> {
                if v.len() > MAX_PREFIX_LEN {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(Prefix(v.to_owned()))
            }
        }
        deserializer.deserialize_str(PrefixVisitor)
    }
}

/// Writes a version-2 snapshot: the header, the record stream through a [`BlockHasher`],
/// then the trailer of block digests and their root.
pub(super) struct Encoder<W> {
    out: W,
    header: [u8; HEADER_LEN],
    blocks: BlockHasher,
    records: u64,
}

impl<W: Write> Encoder<W> {
    /// Writes the header; the record stream will be hashed in blocks of `block_size` bytes
    /// (within the range a reader accepts).
    pub(super) fn new(mut out: W, saved_at: SystemTime, block_size: u32) -> io::Result<Encoder<W>> {
        let block_size = block_size.clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
        let saved_at = saved_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        let mut header = [0u8; HEADER_LEN];
        header[0..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&0u32.to_le_bytes());
        header[16..24].copy_from_slice(&saved_at.to_le_bytes());
        header[24..28].copy_from_slice(&block_size.to_le_bytes());
        out.write_all(&header)?;
        Ok(Encoder {
            out,
            header,
            blocks: BlockHasher::new(block_size as usize),
            records: 0,
        })
    }

    /// Writes bytes of the record stream that the hasher copies.
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.blocks.copy(bytes);
        Ok(())
    }

    /// Writes one entry record; `ttl` counts from the header's save time.
    pub(super) fn entry(
        &mut self,
        key: &CacheKey,
        value: &Bytes,
        ttl: Option<Duration>,
        access_count: u64,
        freq: u8,
        main: bool,
    ) -> io::Result<()> {
        self.record(
            key.prefix(),
            key.digest(),
            value,
            ttl,
            access_count,
            freq,
            main,
        )
    }

    /// Writes one entry record from a prefix string and digest, as [`Encoder::entry`] does
    /// for a key. Tests use it to write prefixes no key can have.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &mut self,
        prefix: &str,
        digest: &[u8; DIGEST_LEN],
        value: &Bytes,
        ttl: Option<Duration>,
        access_count: u64,
        freq: u8,
        main: bool,
    ) -> io::Result<()> {
        let head = codec::encode(&RecordHead {
            prefix,
            digest: *digest,
            ttl_nanos: ttl.map(|ttl| u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX)),
            access_count,
            freq,
            main,
            value_len: value.len() as u64,
        })
        // A struct of integers and a short string always encodes.
        .map_err(io::Error::other)?;
        let head_len = u32::try_from(head.len())
            .ok()
            .filter(|&len| len <= MAX_HEAD_LEN)
            .ok_or_else(|| io::Error::other("record head longer than the format allows"))?;
        self.put(&[TAG_ENTRY])?;
        self.put(&head_len.to_le_bytes())?;
        self.put(&head)?;
        // The value is written from the cache's own buffer and hashed from it by a worker.
        self.out.write_all(value)?;
        self.blocks.share(value);
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker and the trailer, flushes, and returns the bytes written.
    pub(super) fn finish(mut self) -> io::Result<u64> {
        self.put(&[TAG_END])?;
        let records = self.records;
        self.put(&records.to_le_bytes())?;
        let stream = self.blocks.len();
        let missing = |block: usize| {
            io::Error::other(format!(
                "a hash worker stopped before hashing block {block}"
            ))
        };
        let digests = self.blocks.finish().map_err(|m| missing(m.block))?;
        // The encoder passes over no block: every digest is there.
        let digests: Vec<Digest> = digests
            .iter()
            .enumerate()
            .map(|(block, digest)| digest.copied().ok_or_else(|| missing(block)))
            .collect::<io::Result<_>>()?;
        let mut root = Context::new(&SHA256);
        root.update(&self.header);
        let count = (digests.len() as u64).to_le_bytes();
        self.out.write_all(&count)?;
        root.update(&count);
        for digest in &digests {
            self.out.write_all(digest)?;
            root.update(digest);
        }
        self.out.write_all(root.finish().as_ref())?;
        self.out.flush()?;
        Ok(HEADER_LEN as u64 + stream + 8 + 32 * digests.len() as u64 + 32)
    }
}

/// One record as the decoder read it. Its prefix is a number in [`Scan::prefixes`], a table of
/// the file's distinct prefix strings: nothing is interned while reading (interning is
/// process-wide and permanent, so only a file that checked out completely may reach it, see
/// [`Scan::keys`]).
pub(super) struct Record {
    /// Offset of the record's tag byte.
    pub(super) at: u64,
    /// Number of the prefix in [`Scan::prefixes`].
    prefix: u32,
    digest: [u8; DIGEST_LEN],
    /// Time left to live at the save time; `None` if it never expires.
    pub(super) ttl_remaining: Option<Duration>,
    pub(super) access_count: u64,
    pub(super) freq: u8,
    pub(super) main: bool,
    pub(super) value_len: u64,
    /// The value, if the caller of [`Decoder::scan`] asked for it; otherwise its bytes were
    /// hashed and dropped.
    pub(super) value: Option<Bytes>,
}

/// What choosing which records to keep needs of one: its ranking inputs, its TTL, its
/// value's length and the charge its key already holds. 40 bytes, where a [`Record`] is over
/// 100: a load's first pass, which holds one per record of a file larger than the cache, keeps
/// only this (see [`Keep::RanksOnly`]).
pub(super) struct Rank {
    pub(super) access_count: u64,
    pub(super) value_len: u64,
    /// The charge the record's key held in the cache being loaded when it was read (as the
    /// `held` function given to [`Decoder::scan`] answers), 0 for none: every entry is
    /// charged more than 0 bytes.
    held: u64,
    /// Time left to live at the save time, in nanoseconds; `u64::MAX` for none. The same
    /// for deciding whether an entry is live: no wall clock is 584 years past a save time
    /// after 1970.
    ttl_nanos: u64,
    pub(super) freq: u8,
    pub(super) main: bool,
}

impl Rank {
    fn of(record: &Record, held: Option<u64>) -> Rank {
        Rank {
            access_count: record.access_count,
            value_len: record.value_len,
            held: held.unwrap_or(0),
            ttl_nanos: record.ttl_remaining.map_or(u64::MAX, |ttl| {
                u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX)
            }),
            freq: record.freq,
            main: record.main,
        }
    }

    /// Time left to live at the save time; `None` if it never expires.
    pub(super) fn ttl_remaining(&self) -> Option<Duration> {
        (self.ttl_nanos != u64::MAX).then(|| Duration::from_nanos(self.ttl_nanos))
    }

    /// The charge the record's key held in the cache when it was read, if it was there.
    pub(super) fn held(&self) -> Option<u64> {
        (self.held != 0).then_some(self.held)
    }
}

/// What [`Decoder::scan`] keeps of a record, as its caller decides.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// The whole record, value included.
    Value,
    /// The record without its value (hashed and dropped).
    Head,
    /// From this record on, only each record's [`Rank`]: the records kept so far are cut down
    /// to theirs too (their values dropped), and the caller is not asked again. The scan
    /// then still checks every byte but not the keys (it no longer has them): a caller that
    /// goes on to use the records must read them again with a full scan, which does.
    RanksOnly,
}

/// A completely checked snapshot as [`Decoder::scan`] returns it: every record's head, and the
/// values that were asked for.
pub(super) struct Scan {
    pub(super) saved_at: SystemTime,
    /// In file order; empty if the scan kept ranks only.
    pub(super) records: Vec<Record>,
    /// Every record's rank, in file order, if the caller asked for ranks only
    /// ([`Keep::RanksOnly`]).
    pub(super) ranks: Option<Vec<Rank>>,
    /// The distinct prefixes, by number, checked against the key rules but not interned.
    prefixes: Vec<String>,
    /// The stored whole-content checksum (version 1) or root (version 2): equal values mean
    /// equal files, which is how a second read of the same file is matched with the first.
    pub(super) checksum: Digest,
    /// Bytes read.
    pub(super) len: u64,
}

impl Scan {
    /// Interns the prefixes and returns every record's key, in order. The only step that
    /// touches the process-wide prefix table, so call it only with everything else decided.
    /// All or nothing: if the file's new prefixes do not all fit the table, none is interned
    /// (see `crate::key::intern_all`).
    pub(super) fn keys(&self) -> Result<Vec<CacheKey>, SnapshotError> {
        let numbers = intern_all(&self.prefixes).map_err(|(prefix, e)| {
            // Every prefix in the table came from a record: report the first one using it.
            let at = self
                .records
                .iter()
                .find(|record| record.prefix as usize == prefix)
                .map_or(0, |record| record.at);
            not_interned(at, &e)
        })?;
        Ok(self
            .records
            .iter()
            .map(|record| CacheKey::from_interned(record.digest, numbers[record.prefix as usize]))
            .collect())
    }

    /// The whole snapshot, values and interned keys; every value must have been asked for.
    pub(super) fn into_snapshot(self) -> Result<Snapshot, SnapshotError> {
        let keys = self.keys()?;
        let entries = self
            .records
            .into_iter()
            .zip(keys)
            .map(|(record, key)| SnapshotEntry {
                key,
                value: record.value.unwrap_or_default(),
                ttl_remaining: record.ttl_remaining,
                access_count: record.access_count,
                freq: record.freq,
                main: record.main,
            })
            .collect();
        Ok(Snapshot {
            saved_at: self.saved_at,
            entries,
        })
    }
}

/// What a [`Decoder`] reads from: bytes in order, and for a file, a way past bytes it need
/// not read.
pub(super) trait Input: Read {
    /// Moves `bytes` on without reading them, if this input can; returns whether it did.
    fn pass(&mut self, bytes: u64) -> io::Result<bool>;
}

/// A regular file (the loader's input; a pipe opened as a file is never asked to pass).
impl Input for BufReader<&File> {
    fn pass(&mut self, bytes: u64) -> io::Result<bool> {
        let Ok(offset) = i64::try_from(bytes) else {
            return Ok(false);
        };
        self.seek_relative(offset)?;
        Ok(true)
    }
}

/// Any reader, read through: what [`super::read_snapshot`] decodes.
pub(super) struct Stream<R>(pub(super) R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Input for Stream<R> {
    fn pass(&mut self, _bytes: u64) -> io::Result<bool> {
        Ok(false)
    }
}

/// Reads a snapshot, hashing every byte before the checksum and tracking the offset for
/// error messages.
pub(super) struct Decoder<R> {
    input: R,
    /// Version 1: every byte before the checksum. Version 2: the header and the trailer
    /// before the root (the root's input).
    hasher: Context,
    /// Version 2, until the end marker: the record stream's block hasher, which takes the
    /// bytes `hasher` does not.
    blocks: Option<BlockHasher>,
    pos: u64,
    /// The input's total length, when known (a file): lengths in the file are checked against
    /// it before anything is allocated.
    len: Option<u64>,
    /// Names the input in I/O errors.
    name: String,
    /// The distinct prefixes read so far and their numbers.
    prefixes: Vec<String>,
    prefix_numbers: HashMap<String, u32>,
    /// Of those, by number, the ones that were already interned when first read, with their
    /// table numbers: only their keys can be in a cache (see [`Decoder::scan`]). One interned
    /// by another thread later is taken as absent; its keys are then charged in full, which
    /// can only leave out what would have fit, never overfill (the store checks again).
    interned: Vec<Option<key::Prefix>>,
    /// Of those, the valid ones the prefix table did not hold when they were first read (an
    /// upper bound on the cells interning them will take: another thread may intern some).
    prefixes_missing: usize,
    /// Values longer than this that the caller does not keep are passed over unread where
    /// they cover whole blocks (see [`Decoder::passing_values_over`]).
    pass_values_over: Option<u64>,
}

/// What the header says.
struct Header {
    saved_at: SystemTime,
    /// Version 2 only.
    block_size: u32,
}

impl<R: Input> Decoder<R> {
    pub(super) fn new(input: R, len: Option<u64>, name: String) -> Decoder<R> {
        Decoder {
            input,
            hasher: Context::new(&SHA256),
            blocks: None,
            pos: 0,
            len,
            name,
            prefixes: Vec::new(),
            prefix_numbers: HashMap::new(),
            interned: Vec::new(),
            prefixes_missing: 0,
            pass_values_over: None,
        }
    }

    /// Passes over, without reading or hashing, the whole blocks inside any value longer
    /// than `len` bytes that the scan does not keep, in a version-2 file of known length. For
    /// a load, `len` is the longest value the cache's whole budget can hold: a longer one can
    /// never be stored, so its bytes cannot matter to what the load restores, and reading
    /// them only took time — a sparse file's terabyte of value was read and hashed twice.
    /// What is passed over is not checked: damage inside such a value is not noticed (see
    /// the [module docs](super)). The bytes around it, to the nearest block boundaries, are
    /// read and checked as usual, so every record head, the end marker and the trailer are.
    pub(super) fn passing_values_over(mut self, len: u64) -> Decoder<R> {
        self.pass_values_over = Some(len);
        self
    }

    fn io_error(&self, source: io::Error) -> SnapshotError {
        SnapshotError::Io {
            action: format!("reading {} at byte {}", self.name, self.pos),
            source,
        }
    }

    /// Fills `buf` as far as the input allows; returns how many bytes were read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, SnapshotError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        self.pos += filled as u64;
        Ok(filled)
    }

    /// Reads exactly `buf.len()` bytes without hashing them.
    fn take_unhashed(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        if self.fill(buf)? < buf.len() {
            return Err(SnapshotError::Truncated { at: self.pos });
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes and hashes them.
    fn take(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        self.take_unhashed(buf)?;
        match self.blocks.as_mut() {
            Some(blocks) => blocks.copy(buf),
            None => self.hasher.update(buf),
        }
        Ok(())
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut buf = [0; N];
        self.take(&mut buf)?;
        Ok(buf)
    }

    /// Reads, checks and returns a whole snapshot with every value. Nothing is returned unless
    /// every byte checked out.
    pub(super) fn decode(self) -> Result<Snapshot, SnapshotError> {
        self.scan(|_| None, |_, _, _, _| Keep::Value)?
            .into_snapshot()
    }

    /// Reads and checks a whole snapshot, keeping of each record what
    /// `keep(index, saved_at, record, key)` says (the record's `value` is still `None` then;
    /// `key` is its key if the key can be in a cache now, its prefix being interned, so that
    /// the caller can look it up). Of each record kept as a [`Rank`], the charge its key
    /// holds is what `held` answers for the key (asked only if the key can be there); values
    /// not kept are hashed through a bounded buffer and dropped, so memory is the kept values,
    /// one small head per record and a bounded buffer, whatever the file's size. Nothing is
    /// returned unless every byte checked out, every prefix is a valid key prefix and no key
    /// appears twice (these two checked only if the scan kept the records, see
    /// [`Keep::RanksOnly`]); nothing is interned.
    pub(super) fn scan(
        mut self,
        held: impl Fn(&CacheKey) -> Option<u64>,
        mut keep: impl FnMut(usize, SystemTime, &Record, Option<&CacheKey>) -> Keep,
    ) -> Result<Scan, SnapshotError> {
        let header = self.header()?;
        let mut records = Vec::new();
        let mut ranks: Option<Vec<Rank>> = None;
        let mut count = 0usize;
        loop {
            let at = self.pos;
            match self.take_array::<1>()? {
                [TAG_ENTRY] => {
                    let mut record = self.entry(at)?;
                    let key = self.key_of(&record);
                    let keep = match ranks {
                        Some(_) => Keep::RanksOnly,
                        None => keep(count, header.saved_at, &record, key.as_ref()),
                    };
                    if keep == Keep::Value {
                        record.value = Some(self.value(record.value_len)?);
                    } else {
                        self.skip_value(record.value_len)?;
                    }
                    if keep == Keep::RanksOnly {
                        // The records so far go now, values and all: from here on a third
                        // of the memory per record, and no values held while reading on.
                        let ranks = ranks.get_or_insert_with(|| {
                            let records = std::mem::take(&mut records);
                            let held_by = |r: &Record| self.key_of(r).and_then(|k| held(&k));
                            records.iter().map(|r| Rank::of(r, held_by(r))).collect()
                        });
                        ranks.push(Rank::of(&record, key.and_then(|k| held(&k))));
                    } else {
                        records.push(record);
                    }
                    count += 1;
                }
                [TAG_END] => break,
                [tag] => {
                    return Err(SnapshotError::CorruptRecord {
                        at,
                        reason: format!("unknown record tag {tag:#04x}"),
                    });
                }
            }
        }
        let count_at = self.pos;
        let stored_count = u64::from_le_bytes(self.take_array()?);
        let checksum = match self.blocks.take() {
            Some(blocks) => self.check_blocks(blocks, header.block_size)?,
            None => {
                let mut stored = [0u8; 32];
                self.take_unhashed(&mut stored)?;
                check_digest(&stored, self.hasher.clone().finish().as_ref())?;
                stored
            }
        };
        if stored_count != count as u64 {
            return Err(SnapshotError::Malformed {
                at: count_at,
                reason: format!(
                    "the end marker counts {stored_count} records but {count} precede it"
                ),
            });
        }
        self.expect_end()?;
        // Checked, record by record in file order, before any prefix is interned. (With ranks
        // only there are no records here to check: the full read that must follow does.)
        let bad_prefix: Vec<Option<&'static str>> =
            self.prefixes.iter().map(|p| prefix_problem(p)).collect();
        let mut seen = HashSet::with_capacity(records.len());
        for record in &records {
            let prefix = &self.prefixes[record.prefix as usize];
            let reason = if let Some(reason) = bad_prefix[record.prefix as usize] {
                KeyError::invalid_prefix(prefix, reason).to_string()
            } else if !seen.insert((record.prefix, record.digest)) {
                format!("key {prefix}:{} appears twice", hex::encode(record.digest))
            } else {
                continue;
            };
            return Err(SnapshotError::CorruptRecord {
                at: record.at,
                reason,
            });
        }
        Ok(Scan {
            saved_at: header.saved_at,
            records,
            ranks,
            prefixes: self.prefixes,
            checksum,
            len: self.pos,
        })
    }

    /// Version 2, after the end marker: reads the trailer and checks the root over the header
    /// and the listed block digests, then each block's digest against its content; returns the
    /// root.
    fn check_blocks(
        &mut self,
        blocks: BlockHasher,
        block_size: u32,
    ) -> Result<Digest, SnapshotError> {
        let stream = blocks.len();
        let computed = blocks.finish().map_err(|missing| SnapshotError::Io {
            action: format!("hashing block {} of {}", missing.block, self.name),
            source: io::Error::other("a hash worker stopped"),
        })?;
        let count_at = self.pos;
        let count = u64::from_le_bytes(self.take_array()?);
        if count != computed.len() as u64 {
            return Err(SnapshotError::Malformed {
                at: count_at,
                reason: format!(
                    "the trailer lists {count} block digests but the {stream}-byte record \
                     stream has {} blocks of {block_size} bytes",
                    computed.len()
                ),
            });
        }
        // Compared as they are read, not collected first: `count` includes the blocks
        // passed over, which were never read, so a list of them was memory per block of a
        // value the load never holds. The first mismatch is reported after the root checked
        // out, as before.
        let mut mismatch = None;
        for (block, computed) in computed.iter().enumerate() {
            let stored: Digest = self.take_array()?;
            // A block passed over has no digest to compare: it lay inside a value the caller
            // can never keep (see `Decoder::passing_values_over`).
            if let Some(computed) = computed
                && mismatch.is_none()
                && stored != *computed
            {
                mismatch = Some((block, stored, *computed));
            }
        }
        let mut root = [0u8; 32];
        self.take_unhashed(&mut root)?;
        check_digest(&root, self.hasher.clone().finish().as_ref())?;
        if let Some((block, stored, computed)) = mismatch {
            let start = HEADER_LEN as u64 + block as u64 * u64::from(block_size);
            return Err(SnapshotError::BlockChecksumMismatch {
                block: block as u64,
                start,
                end: (start + u64::from(block_size)).min(HEADER_LEN as u64 + stream),
                stored: hex::encode(stored),
                computed: hex::encode(computed),
            });
        }
        Ok(root)
    }

    fn header(&mut self) -> Result<Header, SnapshotError> {
        let mut magic = [0u8; 8];
        let got = self.fill(&mut magic)?;
        self.hasher.update(&magic[..got]);
        if magic[..got] != MAGIC[..got] {
            return Err(SnapshotError::BadMagic {
                found: magic[..got].to_vec(),
            });
        }
        if got < magic.len() {
            return Err(SnapshotError::Truncated { at: self.pos });
        }
        let version = u32::from_le_bytes(self.take_array()?);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
            return Err(SnapshotError::UnsupportedVersion { version });
        }
        let flags_at = self.pos;
        let flags = u32::from_le_bytes(self.take_array()?);
        if flags != 0 {
            return Err(SnapshotError::Malformed {
                at: flags_at,
                reason: format!("reserved header flags are {flags:#010x}, must be 0"),
            });
        }
        let nanos = u64::from_le_bytes(self.take_array()?);
        let saved_at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
        if version == FORMAT_VERSION_1 {
            return Ok(Header {
                saved_at,
                block_size: 0,
            });
        }
        let size_at = self.pos;
        let block_size = u32::from_le_bytes(self.take_array()?);
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(SnapshotError::Malformed {
                at: size_at,
                reason: format!(
                    "block size {block_size} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"
                ),
            });
        }
        // From here to the end marker, bytes go to the block hasher.
        self.blocks = Some(BlockHasher::new(block_size as usize));
        Ok(Header {
            saved_at,
            block_size,
        })
    }

    /// Reads the head of the record whose tag byte was at `at`; its value comes next.
    fn entry(&mut self, at: u64) -> Result<Record, SnapshotError> {
        let corrupt = |reason: String| SnapshotError::CorruptRecord { at, reason };
        let head_len = u32::from_le_bytes(self.take_array()?);
        if head_len == 0 || head_len > MAX_HEAD_LEN {
            return Err(corrupt(format!(
                "record head length {head_len} is outside 1..={MAX_HEAD_LEN}"
            )));
        }
        let mut head = [0u8; MAX_HEAD_LEN as usize];
        let head = &mut head[..head_len as usize];
        self.take(head)?;
        let head: RecordHead<Prefix> =
            codec::decode(head).map_err(|e| corrupt(format!("record head: {e}")))?;
        if head.freq > MAX_FREQ {
            return Err(corrupt(format!(
                "frequency {} is above {MAX_FREQ}",
                head.freq
            )));
        }
        let Prefix(name) = head.prefix;
        let prefix = match self.prefix_numbers.get(&name) {
            Some(&number) => number,
            None => {
                // At most one new prefix per record, so the count fits: a record is more
                // than one byte.
                let number = u32::try_from(self.prefixes.len())
                    .map_err(|_| corrupt("too many distinct prefixes".into()))?;
                self.check_prefix_room(&name, at)?;
                self.interned.push(key::interned(&name));
                self.prefixes.push(name.clone());
                self.prefix_numbers.insert(name, number);
                number
            }
        };
        Ok(Record {
            at,
            prefix,
            digest: head.digest,
            ttl_remaining: head.ttl_nanos.map(Duration::from_nanos),
            access_count: head.access_count,
            freq: head.freq,
            main: head.main,
            value_len: head.value_len,
            value: None,
        })
    }

    /// The key of `record` if it can be in a cache now: its prefix was interned when first
    /// read. Interns nothing.
    fn key_of(&self, record: &Record) -> Option<CacheKey> {
        let prefix = self
            .interned
            .get(record.prefix as usize)
            .copied()
            .flatten()?;
        Some(CacheKey::from_interned(record.digest, prefix))
    }

    /// Fails as soon as the file's new prefixes, with `name` (first read in the record at
    /// `at`), cannot all fit the process-wide prefix table: they never will (see
    /// `crate::key::prefix_demand`), so reading on would only delay the refusal. Interns
    /// nothing; an invalid prefix is left to the checks after the read.
    fn check_prefix_room(&mut self, name: &str, at: u64) -> Result<(), SnapshotError> {
        if prefix_problem(name).is_some() {
            return Ok(());
        }
        let (missing, free) = prefix_demand(&[name]);
        self.prefixes_missing += missing;
        if self.prefixes_missing <= free {
            return Ok(());
        }
        // The count may be stale (another thread may have interned some of the file's
        // prefixes since): count again, with the free cells, under one lock.
        let valid: Vec<&str> = self
            .prefixes
            .iter()
            .map(String::as_str)
            .chain([name])
            .filter(|prefix| prefix_problem(prefix).is_none())
            .collect();
        let (missing, free) = prefix_demand(&valid);
        self.prefixes_missing = missing;
        if missing > free {
            return Err(not_interned(at, &KeyError::TooManyPrefixes));
        }
        Ok(())
    }

    /// Fails early if the input's known length leaves no room for `len` more bytes.
    fn check_room(&self, len: u64) -> Result<(), SnapshotError> {
        match self.len {
            Some(total) if len > total.saturating_sub(self.pos) => {
                Err(SnapshotError::Truncated { at: total })
            }
            _ => Ok(()),
        }
    }

    /// Reads and hashes `len` value bytes without keeping them, or passes over the whole
    /// blocks inside them (see [`Decoder::passing_values_over`]).
    fn skip_value(&mut self, len: u64) -> Result<(), SnapshotError> {
        self.check_room(len)?;
        let passable = self.len.is_some() && self.pass_values_over.is_some_and(|max| len > max);
        let (before, blocks) = match &self.blocks {
            Some(hasher) if passable => {
                let before = (hasher.to_boundary() as u64).min(len);
                (before, (len - before) / hasher.block_size() as u64)
            }
            _ => (len, 0),
        };
        self.hash_unkept(before)?;
        let passed = self.pass_blocks(blocks)?;
        self.hash_unkept(len - before - passed)
    }

    /// Passes over `count` whole blocks from a block boundary, if the input can; returns the
    /// bytes passed over (0 if it could not: they are then read as usual).
    fn pass_blocks(&mut self, count: u64) -> Result<u64, SnapshotError> {
        let (Some(hasher), Ok(blocks)) = (self.blocks.as_ref(), usize::try_from(count)) else {
            return Ok(0);
        };
        if blocks == 0 || hasher.to_boundary() != 0 {
            return Ok(0);
        }
        let bytes = count.saturating_mul(hasher.block_size() as u64);
        if !self.input.pass(bytes).map_err(|e| self.io_error(e))? {
            return Ok(0);
        }
        // At a block boundary, checked above: the hasher takes the gap.
        if let Some(hasher) = self.blocks.as_mut() {
            hasher.pass_blocks(blocks);
        }
        self.pos += bytes;
        Ok(bytes)
    }

    /// Reads and hashes `len` bytes without keeping them, [`SKIP_CHUNK`] bytes at a time.
    fn hash_unkept(&mut self, len: u64) -> Result<(), SnapshotError> {
        let mut left = len;
        while left > 0 {
            // Each chunk is a fresh buffer that the hash workers share and free once hashed:
            // no copy, and no more than the workers' bounded queue in memory.
            let chunk = left.min(SKIP_CHUNK as u64) as usize;
            let mut buf = vec![0u8; chunk];
            if self.fill(&mut buf)? < chunk {
                return Err(SnapshotError::Truncated { at: self.pos });
            }
            let buf = Bytes::from(buf);
            match self.blocks.as_mut() {
                Some(blocks) => blocks.share(&buf),
                None => self.hasher.update(&buf),
            }
            left -= chunk as u64;
        }
        Ok(())
    }

    /// Reads `len` value bytes, allocating no more than the input can actually supply.
    fn value(&mut self, len: u64) -> Result<Bytes, SnapshotError> {
        self.check_room(len)?;
        let reserve = match self.len {
            Some(_) => len,
            None => len.min(UNCHECKED_RESERVE),
        };
        let reserve =
            usize::try_from(reserve).map_err(|_| SnapshotError::Truncated { at: self.pos })?;
        // Fallible: a length within the file's size can still be more than memory holds (a
        // sparse file is terabytes long on no disk), and `with_capacity` aborts the process
        // when the allocator refuses.
        let mut value = Vec::new();
        value
            .try_reserve_exact(reserve)
            .map_err(|_| SnapshotError::Io {
                action: format!(
                    "allocating {reserve} bytes for the value at byte {} of {}",
                    self.pos, self.name
                ),
                source: io::ErrorKind::OutOfMemory.into(),
            })?;
        let read = (&mut self.input).take(len).read_to_end(&mut value);
        self.pos += value.len() as u64;
        read.map_err(|e| self.io_error(e))?;
        if (value.len() as u64) < len {
            return Err(SnapshotError::Truncated { at: self.pos });
        }
        let value = Bytes::from(value);
        match self.blocks.as_mut() {
            // Shared with the hash workers, not copied: these bytes become the cache's value.
            Some(blocks) => blocks.share(&value),
            None => self.hasher.update(&value),
        }
        Ok(value)
    }

    /// Checks that the checksum was the last thing in the input.
    fn expect_end(&mut self) -> Result<(), SnapshotError> {
        let at = self.pos;
        let extra = match self.len {
            Some(total) => total.saturating_sub(at),
            None => self.fill(&mut [0u8; 1])? as u64,
        };
        if extra > 0 {
            return Err(SnapshotError::Malformed {
                at,
                reason: "unexpected bytes after the checksum".into(),
            });
        }
        Ok(())
    }
}

/// A file refused for its prefixes (the record at `at` has the one at fault), having interned
/// none.
fn not_interned(at: u64, e: &KeyError) -> SnapshotError {
    SnapshotError::CorruptRecord {
        at,
        reason: format!("{e}; none of the file's key prefixes was interned"),
    }
}

/// Compares a stored whole-content (version 1) or root (version 2) checksum with the computed
/// one.
fn check_digest(stored: &[u8; 32], computed: &[u8]) -> Result<(), SnapshotError> {
    if stored[..] != *computed {
        return Err(SnapshotError::ChecksumMismatch {
            stored: hex::encode(stored),
            computed: hex::encode(computed),
        });
    }
    Ok(())
}
