//! The one place values are encoded: bincode 2 through serde.
//!
//! Every typed value ([`crate::Cache::insert_typed`]) and every snapshot record goes through
//! [`encode`] / [`decode`], so the wire format is chosen here once: bincode 2's `standard`
//! configuration (little-endian, variable-length integers) with a decode limit, so that a
//! corrupt length prefix produces an error instead of a huge allocation. bincode 3.0.0 is a
//! stub that does not build, hence the pin to 2.
//!
//! The limit must be sized to the input. bincode allocates a string or byte buffer of the
//! claimed length *before* reading its bytes, and only the limit stands in the way, so with a
//! fixed 4 GiB limit six corrupt bytes made it ask for gigabytes (harmless where the kernel
//! hands out untouched memory lazily, an abort where it does not, and a crash under a
//! fuzzer's malloc limit). [`decode`] therefore picks the limit from the input's length: the
//! limit counts the in-memory size of what is decoded, at most 16 bytes per input byte (a
//! `u128` from a one-byte varint), so a limit of at least 16 times the input never refuses a
//! valid encoding, and a corrupt length can claim at most that much (and at least 64 KiB).
//! Sequences are the exception: bincode does not count them against the limit, and serde
//! preallocates up to 1 MiB for one whatever its claimed length (nine bytes decoded as a
//! `Vec<u64>` or `Vec<u8>` request 1 MiB), bounded but more than the limit. Nor is the
//! count of a sequence of zero-sized values (`Vec<()>`) bounded: decoding loops as many
//! times as it claims (a known defect, see the ignored test in this module).
//! [`decode_from`] cannot know how much its reader holds and keeps the fixed limit: use it
//! only on trusted input.
//!
//! Decoding untrusted bytes never panics: a value that does not decode is a [`CodecError`].

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::key::CacheKey;

/// Largest value [`decode`] will materialise: 4 GiB.
pub const DECODE_LIMIT: usize = 1 << 32;

type Config = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

const CONFIG: Config = config::standard().with_limit::<DECODE_LIMIT>();

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Serialising the value failed.
    #[error("encoding a value failed: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the requested type.
    #[error("decoding a value as {type_name} failed: {source}")]
    Decode {
        /// The type asked for (`std::any::type_name`), so that a value stored as one type
        /// and read as another says so.
        type_name: &'static str,
        /// What the decoder found wrong.
        source: bincode::error::DecodeError,
    },
    /// The bytes decoded, but not all of them were used.
    #[error("decoding a value as {type_name} left {trailing} trailing bytes of {total}")]
    TrailingBytes {
        /// The type asked for.
        type_name: &'static str,
        /// Bytes left over.
        trailing: usize,
        /// Bytes given.
        total: usize,
    },
    /// A value read from a cache did not decode: which key it was stored under, and why.
    #[error("the value under {key}: {source}")]
    AtKey {
        /// The key the value was read from.
        key: CacheKey,
        /// Why it did not decode ([`CodecError::Decode`] or [`CodecError::TrailingBytes`]).
        source: Box<CodecError>,
    },
}

/// Encodes `value` to bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, CONFIG)?)
}

/// Encodes `value` into a writer.
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    writer: &mut impl std::io::Write,
) -> Result<usize, CodecError> {
    Ok(bincode::serde::encode_into_std_write(
        value, writer, CONFIG,
    )?)
}

/// Decodes a whole `T` from `bytes`; trailing bytes are an error.
///
/// A length prefix is trusted for at most 16 times `bytes.len()` (at least 64 KiB) of
/// allocation; see the module docs.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    // Limits in steps of 16, so that few copies of the decoder are instantiated per type.
    fn with_limit<T: DeserializeOwned, const LIMIT: usize>(
        bytes: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, config::standard().with_limit::<LIMIT>())
    }
    let claimable = bytes.len().saturating_mul(16);
    let (value, used) = if claimable <= 1 << 16 {
        with_limit::<T, { 1 << 16 }>(bytes)
    } else if claimable <= 1 << 20 {
        with_limit::<T, { 1 << 20 }>(bytes)
    } else if claimable <= 1 << 24 {
        with_limit::<T, { 1 << 24 }>(bytes)
    } else if claimable <= 1 << 28 {
        with_limit::<T, { 1 << 28 }>(bytes)
    } else {
        with_limit::<T, DECODE_LIMIT>(bytes)
    }
    .map_err(decode_error::<T>)?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            type_name: std::any::type_name::<T>(),
            trailing: bytes.len() - used,
            total: bytes.len(),
        });
    }
    Ok(value)
}

/// Decodes one `T` from a reader, leaving the reader just after it.
///
/// The reader's length is unknown, so a length prefix is trusted up to [`DECODE_LIMIT`]: a
/// corrupt one can make this allocate that much before the read fails. Use [`decode`] for
/// untrusted bytes.
pub fn decode_from<T: DeserializeOwned>(reader: &mut impl std::io::Read) -> Result<T, CodecError> {
    bincode::serde::decode_from_std_read(reader, CONFIG).map_err(decode_error::<T>)
}

/// A decoder's error, naming the type that was asked for.
fn decode_error<T>(source: bincode::error::DecodeError) -> CodecError {
    CodecError::Decode {
        type_name: std::any::type_name::<T>(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Transcript {
        language: String,
        segments: Vec<(u32, String)>,
    }

    #[test]
    fn round_trips() {
        let t = Transcript {
            language: "en".into(),
            segments: vec![(0, "hello".into()), (1500, "world".into())],
        };
        let bytes = encode(&t).expect("encodes");
        assert_eq!(decode::<Transcript>(&bytes).expect("decodes"), t);
    }

    /// The decode limit follows the input's size (see the module docs): values whose
    /// in-memory size is 16 times their encoding (a `u128` per one-byte varint), at every
    /// size around the limit's steps, still decode.
    #[test]
    fn dense_values_decode_at_every_limit_step() {
        for encoded in [1usize << 12, 1 << 16, 1 << 20] {
            for delta in [-1i64, 0, 1] {
                let len = (encoded as i64 + delta) as usize;
                let zeros = vec![0u128; len];
                let bytes = encode(&zeros).expect("encodes");
                assert_eq!(
                    decode::<Vec<u128>>(&bytes).expect("decodes"),
                    zeros,
                    "{len}"
                );
            }
        }
    }

    #[test]
    fn a_decode_error_names_the_type_asked_for() {
        let stored = encode(&Transcript {
            language: "en".into(),
            segments: vec![],
        })
        .expect("encodes");
        let err = decode::<Vec<String>>(&stored).expect_err("a transcript is not a list");
        let message = err.to_string();
        assert!(
            message.starts_with("decoding a value as alloc::vec::Vec<alloc::string::String>"),
            "{message}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // A varint length prefix claiming u64::MAX elements.
        let bytes = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(decode::<Transcript>(&bytes).is_err());
        assert!(decode::<Transcript>(&[]).is_err());
        let mut good = encode(&7u32).expect("encodes");
        good.push(0);
        assert!(matches!(
            decode::<u32>(&good),
            Err(CodecError::TrailingBytes {
                type_name: "u32",
                trailing: 1,
                total: 2
            })
        ));
    }

    /// A sequence of zero-sized elements takes no input bytes per element and no memory, so
    /// neither the input's length nor the decode limit bounds its claimed length: nine bytes
    /// claiming 2^40 units make the decoder loop 2^40 times (no answer within 5 s here)
    /// before it answers. Fixing it needs a deserializer wrapper that counts sequence
    /// elements (bincode has no hook for it): not done yet.
    #[test]
    #[ignore = "defect: a length prefix on a sequence of zero-sized values is not bounded"]
    fn a_huge_count_of_zero_sized_values_is_refused_promptly() {
        // bincode varint: 0xFD = a u64 follows.
        let mut claim = vec![0xFD];
        claim.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(decode::<Vec<()>>(&claim).map(|units| units.len()));
        });
        let answer = result.recv_timeout(std::time::Duration::from_secs(5));
        assert!(
            matches!(answer, Ok(Err(CodecError::Decode { .. }))),
            "{answer:?}"
        );
    }
}
