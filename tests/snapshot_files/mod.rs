//! Snapshot files written by hand from the format in `memocache::snapshot`'s docs, as another
//! tool would write them; shared by the snapshot test binaries (`mod snapshot_files;`).

use std::time::SystemTime;

use memocache::codec;
use memocache::snapshot::{FORMAT_VERSION, MAGIC};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The documented record head.
#[derive(Serialize)]
pub struct Head<'a> {
    pub prefix: &'a str,
    pub digest: [u8; 32],
    pub ttl_nanos: Option<u64>,
    pub access_count: u64,
    pub freq: u8,
    pub main: bool,
    pub value_len: u64,
}

/// A record: its head and its value.
pub struct Record<'a> {
    pub head: Head<'a>,
    pub value: &'a [u8],
}

/// A record of `value` under `prefix:` and 32 `digest` bytes, never expiring, never read.
pub fn record<'a>(prefix: &'a str, digest: u8, value: &'a [u8]) -> Record<'a> {
    Record {
        head: Head {
            prefix,
            digest: [digest; 32],
            ttl_nanos: None,
            access_count: 0,
            freq: 0,
            main: false,
            value_len: value.len() as u64,
        },
        value,
    }
}

/// The record stream per the module docs: records, then the end marker; `count` overrides
/// the record count.
pub fn stream(records: &[Record], count: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let head = codec::encode(&record.head).expect("encodes");
        out.push(0x01);
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(record.value);
    }
    out.push(0x00);
    let count = count.unwrap_or(records.len() as u64);
    out.extend_from_slice(&count.to_le_bytes());
    out
}

pub fn nanos(saved_at: SystemTime) -> u64 {
    saved_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as u64
}

/// A version-2 header: magic, version, flags, save time, block size.
pub fn header(saved_at: SystemTime, flags: u32, block_size: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&nanos(saved_at).to_le_bytes());
    out.extend_from_slice(&block_size.to_le_bytes());
    out
}

/// A version-2 file: `header`, the stream, then the trailer (block count, block digests,
/// root over the header and the trailer so far). `blocks` overrides the block count.
pub fn v2_file(header: &[u8], block_size: usize, stream: &[u8], blocks: Option<u64>) -> Vec<u8> {
    let digests: Vec<[u8; 32]> = stream
        .chunks(block_size)
        .map(|block| Sha256::digest(block).into())
        .collect();
    let mut trailer = Vec::new();
    trailer.extend_from_slice(&blocks.unwrap_or(digests.len() as u64).to_le_bytes());
    for digest in &digests {
        trailer.extend_from_slice(digest);
    }
    let root = Sha256::new()
        .chain_update(header)
        .chain_update(&trailer)
        .finalize();
    [header, stream, &trailer, &root].concat()
}

/// A version-2 file of `records`, in blocks of `block_size` bytes.
pub fn write_file(
    saved_at: SystemTime,
    block_size: u32,
    records: &[Record],
    count: Option<u64>,
) -> Vec<u8> {
    v2_file(
        &header(saved_at, 0, block_size),
        block_size as usize,
        &stream(records, count),
        None,
    )
}
