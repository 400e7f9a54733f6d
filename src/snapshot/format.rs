//! The bytes of a snapshot file (layout in the [module docs](super)): an encoder that writes
//! them and a decoder that reads and checks them, both hashing every byte they pass.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Snapshot, SnapshotEntry, SnapshotError};
use crate::codec;
use crate::key::{CacheKey, DIGEST_LEN, MAX_PREFIX_LEN};

/// The first eight bytes of every snapshot. The high first byte catches 7-bit channels and the
/// final newline catches text-mode newline translation, as in PNG's signature.
pub const MAGIC: [u8; 8] = *b"\x89MCSNAP\n";

/// The format version this crate writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

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

/// Writes a snapshot: every byte goes through the hash.
pub(super) struct Encoder<W> {
    out: W,
    hasher: Context,
    written: u64,
    records: u64,
}

impl<W: Write> Encoder<W> {
    /// Writes the header.
    pub(super) fn new(out: W, saved_at: SystemTime) -> io::Result<Encoder<W>> {
        let mut encoder = Encoder {
            out,
            hasher: Context::new(&SHA256),
            written: 0,
            records: 0,
        };
        let saved_at = saved_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        encoder.put(&MAGIC)?;
        encoder.put(&FORMAT_VERSION.to_le_bytes())?;
        encoder.put(&0u32.to_le_bytes())?;
        encoder.put(&saved_at.to_le_bytes())?;
        Ok(encoder)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes one entry record; `ttl` counts from the header's save time.
    pub(super) fn entry(
        &mut self,
        key: &CacheKey,
        value: &[u8],
        ttl: Option<Duration>,
        access_count: u64,
        freq: u8,
        main: bool,
    ) -> io::Result<()> {
        let head = codec::encode(&RecordHead {
            prefix: key.prefix(),
            digest: *key.digest(),
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
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker and the checksum, flushes, and returns the bytes written.
    pub(super) fn finish(mut self) -> io::Result<u64> {
        self.put(&[TAG_END])?;
        let records = self.records;
        self.put(&records.to_le_bytes())?;
        let checksum = self.hasher.finish();
        self.out.write_all(checksum.as_ref())?;
        self.out.flush()?;
        Ok(self.written + checksum.as_ref().len() as u64)
    }
}

/// A record read from a file whose checksum has not been checked yet: its key stays
/// uninterned until then (interning is process-wide and bounded, so garbage must not reach it).
struct RawEntry {
    at: u64,
    head: RecordHead<Prefix>,
    value: Bytes,
}

/// Reads a snapshot, hashing every byte before the checksum and tracking the offset for
/// error messages.
pub(super) struct Decoder<R> {
    input: R,
    hasher: Context,
    pos: u64,
    /// The input's total length, when known (a file): lengths in the file are checked against
    /// it before anything is allocated.
    len: Option<u64>,
    /// Names the input in I/O errors.
    name: String,
}

impl<R: Read> Decoder<R> {
    pub(super) fn new(input: R, len: Option<u64>, name: String) -> Decoder<R> {
        Decoder {
            input,
            hasher: Context::new(&SHA256),
            pos: 0,
            len,
            name,
        }
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
        self.hasher.update(&*buf);
        Ok(())
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut buf = [0; N];
        self.take(&mut buf)?;
        Ok(buf)
    }

    /// Reads, checks and returns a whole snapshot. Nothing is returned unless every byte
    /// checked out.
    pub(super) fn decode(mut self) -> Result<Snapshot, SnapshotError> {
        let saved_at = self.header()?;
        let mut raw = Vec::new();
        loop {
            let at = self.pos;
            match self.take_array::<1>()? {
                [TAG_ENTRY] => raw.push(self.entry(at)?),
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
        let count = u64::from_le_bytes(self.take_array()?);
        let mut stored = [0u8; 32];
        self.take_unhashed(&mut stored)?;
        let computed = self.hasher.clone().finish();
        if stored[..] != *computed.as_ref() {
            return Err(SnapshotError::ChecksumMismatch {
                stored: hex::encode(stored),
                computed: hex::encode(computed),
            });
        }
        if count != raw.len() as u64 {
            return Err(SnapshotError::Malformed {
                at: count_at,
                reason: format!(
                    "the end marker counts {count} records but {} precede it",
                    raw.len()
                ),
            });
        }
        self.expect_end()?;
        let mut seen = HashSet::with_capacity(raw.len());
        let entries = raw
            .into_iter()
            .map(|raw| {
                let corrupt = |reason: String| SnapshotError::CorruptRecord { at: raw.at, reason };
                let key = CacheKey::from_digest(raw.head.digest, &raw.head.prefix.0)
                    .map_err(|e| corrupt(e.to_string()))?;
                if !seen.insert(key) {
                    return Err(corrupt(format!("key {key} appears twice")));
                }
                Ok(SnapshotEntry {
                    key,
                    value: raw.value,
                    ttl_remaining: raw.head.ttl_nanos.map(Duration::from_nanos),
                    access_count: raw.head.access_count,
                    freq: raw.head.freq,
                    main: raw.head.main,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot { saved_at, entries })
    }

    fn header(&mut self) -> Result<SystemTime, SnapshotError> {
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
        if version != FORMAT_VERSION {
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
        Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    /// Reads the record whose tag byte was at `at`.
    fn entry(&mut self, at: u64) -> Result<RawEntry, SnapshotError> {
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
        let value = self.value(head.value_len)?;
        Ok(RawEntry { at, head, value })
    }

    /// Reads `len` value bytes, allocating no more than the input can actually supply.
    fn value(&mut self, len: u64) -> Result<Bytes, SnapshotError> {
        let reserve = match self.len {
            Some(total) => {
                if len > total.saturating_sub(self.pos) {
                    return Err(SnapshotError::Truncated { at: total });
                }
                len
            }
            None => len.min(UNCHECKED_RESERVE),
        };
        let reserve =
            usize::try_from(reserve).map_err(|_| SnapshotError::Truncated { at: self.pos })?;
        let mut value = Vec::with_capacity(reserve);
        let read = (&mut self.input).take(len).read_to_end(&mut value);
        self.pos += value.len() as u64;
        read.map_err(|e| self.io_error(e))?;
        if (value.len() as u64) < len {
            return Err(SnapshotError::Truncated { at: self.pos });
        }
        self.hasher.update(&value);
        Ok(Bytes::from(value))
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
