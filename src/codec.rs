//! The one place values are encoded: bincode 2 through serde.
//!
//! Every typed value ([`crate::Cache::insert_typed`]) and every snapshot record goes through
//! [`encode`] / [`decode`], so the wire format is chosen here once: bincode 2's `standard`
//! configuration (little-endian, variable-length integers) with a decode limit, so that a
//! corrupt length prefix produces an error instead of a huge allocation. bincode 3.0.0 is a
//! stub that does not build, hence the pin to 2.
//!
//! Decoding untrusted bytes never panics: a value that does not decode is a [`CodecError`].

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    #[error("decoding a value failed: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes decoded, but not all of them were used.
    #[error("decoding a value left {trailing} trailing bytes of {total}")]
    TrailingBytes {
        /// Bytes left over.
        trailing: usize,
        /// Bytes given.
        total: usize,
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
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, CONFIG)?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            trailing: bytes.len() - used,
            total: bytes.len(),
        });
    }
    Ok(value)
}

/// Decodes one `T` from a reader, leaving the reader just after it.
pub fn decode_from<T: DeserializeOwned>(reader: &mut impl std::io::Read) -> Result<T, CodecError> {
    Ok(bincode::serde::decode_from_std_read(reader, CONFIG)?)
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
                trailing: 1,
                total: 2
            })
        ));
    }
}
