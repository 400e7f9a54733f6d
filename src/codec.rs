//! The one place values are encoded: bincode 2 through serde.
//!
//! Every typed value ([`crate::Cache::insert_typed`]) and every snapshot record goes through
//! [`encode`] / [`decode`], so the wire format is chosen here once: bincode 2's `standard`
//! configuration (little-endian, variable-length integers). bincode 3.0.0 is a stub that does
//! not build, hence the pin to 2. The encoding does not say what it holds, so serde attributes
//! that need a self-describing format (`flatten`, `tag`, `untagged`, `skip_serializing_if`)
//! do not round-trip: see [`crate::Cache::insert_typed`]. bincode's errors print as their
//! `Debug` text; a [`CodecError`] says the common ones in words.
//!
//! A corrupt length prefix must produce an error, not a huge allocation. bincode allocates a
//! string or byte buffer of the claimed length *before* reading its bytes, with only its decode
//! limit in the way: with a fixed 4 GiB limit six corrupt bytes made it ask for gigabytes
//! (harmless where the kernel hands out untouched memory lazily, an abort where it does not,
//! and a crash under a fuzzer's malloc limit), and a limit sized to the input still let a
//! `String` in 4,097 bytes allocate 1 MB. So the decoders never let bincode allocate an owned
//! string or byte buffer: they read it as a borrowed one, whose claimed length bincode checks
//! against the input left before it allocates anything, and the visitor copies what is there
//! (the `bounded` submodule does it). A corrupt string length allocates nothing, and a claim
//! past the end of the input is a truncation (`DecodeError::UnexpectedEnd`), however large.
//! [`decode`] therefore gives bincode no limit: nothing it decodes allocates by a claimed
//! length, and a limit only misreported a claim past the end that was also over the limit, as
//! `LimitExceeded`. [`decode_from`] cannot know how much its reader holds, and its reader
//! decoder reads both kinds by allocating first, so it keeps the fixed limit [`DECODE_LIMIT`]:
//! a claim beyond it is refused with `LimitExceeded` before anything is read, whether or not
//! its bytes follow, and one within it allocates up to the claim; use it only on trusted input.
//!
//! Sequences and maps are not counted by bincode, and a sequence of values that decode from no
//! bytes (`Vec<()>`, `Vec<[u8; 0]>`, `PhantomData`, unit structs) takes neither input nor
//! memory per element, so nine bytes claiming 2^40 units made the decoder loop 2^40 times. Both
//! decoders therefore charge every element of every sequence and map in a value, nested ones
//! included, to one *element budget* (the `bounded` submodule has the adapter that counts
//! them): a claim beyond what is left is refused with [`CodecError::TooManyElements`] before
//! its first element is decoded. [`decode`]'s budget is sized to the input: the first of 64 Ki,
//! 1 Mi, 16 Mi, 256 Mi and 4 Gi elements at or above 16 times the input's length, so up to 256
//! times it; [`decode_from`]'s is [`DECODE_LIMIT`]. A value whose elements each encode to at
//! least one byte can never hit it, since its element count is at most its encoded length. The
//! consequences: a sequence of zero-byte values longer than the budget (64 Ki elements for
//! inputs up to 4 KiB) cannot be decoded, whatever its encoding's length; and since a claim is
//! judged before any element is read, and the adapter cannot tell whether an element takes
//! bytes before decoding it, a short input whose sequence claims more elements than the budget
//! is refused with `TooManyElements` even where the elements would each have needed a byte (it
//! is then truncated too). The refusal comes before serde preallocates for the sequence too,
//! and serde preallocates at most 1 MiB for one, so a claimed count reserves at most
//! `min(budget, 1 MiB / size)` elements of `size` bytes (five bytes decoded as a `Vec<u64>` may
//! still reserve 512 KiB: bounded, but more than 16 times the input).
//!
//! Recursion is bounded too. A recursive type (`enum Tree { Leaf, Node(Box<Tree>) }`, a linked
//! list) nests as deep as its bytes say, one byte a level, and serde decodes each level in a
//! nested call: 3,001 bytes decoded as such a tree overflowed a 2 MiB thread stack (a debug
//! build; about 1 KB of stack a level), which aborts the whole process, so no error could be
//! returned. Both decoders therefore refuse a value whose compound parts (options, newtypes,
//! sequences, maps, tuples, structs, enum values) nest more than [`MAX_DEPTH`] deep, with
//! [`CodecError::TooDeep`]. A value that deep cannot be decoded whatever its encoding; no
//! non-recursive type comes near the limit.
//!
//! Decoding untrusted bytes never panics: a value that does not decode is a [`CodecError`].

mod bounded;

use std::fmt;
use std::io::ErrorKind;
use std::marker::PhantomData;

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::key::CacheKey;
use bounded::{Bounded, Budget, Seed};

/// [`decode_from`]'s decode limit, beyond which bincode refuses a claimed length before
/// allocating it, and its element budget; also the largest element budget of [`decode`]: 4 GiB.
pub const DECODE_LIMIT: usize = 1 << 32;

/// How deep the compound parts of a decoded value may nest (see the module docs): as deep as
/// the default recursion limit of serde_json (128) for a linked list, whose nodes take two
/// levels (a struct and an `Option`). A value at the limit fits any thread's stack: 256
/// levels of a recursive enum took under 330 KB of stack in a debug build (about 1.2 KB a
/// level), a sixth of the 2 MiB a spawned thread gets by default.
pub const MAX_DEPTH: usize = 256;

type Config = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

const CONFIG: Config = config::standard().with_limit::<DECODE_LIMIT>();

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Serialising the value failed.
    #[error("encoding a value failed: {}", Reason(.0))]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the requested type.
    ///
    /// A string or byte buffer whose length prefix claims more bytes than are left is a
    /// truncation, `source` being `DecodeError::UnexpectedEnd`, however large the claim, from
    /// [`decode`]. Only [`decode_from`] gives `DecodeError::LimitExceeded`: its reader's length
    /// is unknown, so a claim beyond [`DECODE_LIMIT`] is refused before it is read, whether or
    /// not its bytes follow (see the module docs).
    #[error("decoding a value as {type_name} failed: {}", Reason(.source))]
    Decode {
        /// The type asked for (`std::any::type_name`), so that a value stored as one type
        /// and read as another says so.
        type_name: &'static str,
        /// What the decoder found wrong.
        source: bincode::error::DecodeError,
    },
    /// The bytes' sequences and maps claim more elements in all than the decode's element
    /// budget (see the module docs): refused before they were decoded. A claim is judged
    /// before its elements are read, so this is the error also when the input is too short to
    /// hold them (nine bytes claiming 2^40 `u64`s), not a truncation: whether an element takes
    /// any bytes is only known once it is decoded.
    #[error(
        "decoding a value as {type_name} failed: its sequences and maps claim at least \
         {claimed} elements, more than its element budget of {budget}"
    )]
    TooManyElements {
        /// The type asked for.
        type_name: &'static str,
        /// Elements claimed when the budget ran out (the decode stopped there).
        claimed: usize,
        /// The element budget (see the module docs).
        budget: usize,
    },
    /// The bytes' values nest deeper than [`MAX_DEPTH`] (see the module docs): refused at
    /// that depth, before the decoder's recursion could overflow the stack.
    #[error(
        "decoding a value as {type_name} failed: its values nest more than {limit} levels deep"
    )]
    TooDeep {
        /// The type asked for.
        type_name: &'static str,
        /// The deepest nesting allowed: [`MAX_DEPTH`].
        limit: usize,
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
        /// Why it did not decode ([`CodecError::Decode`], [`CodecError::TooManyElements`],
        /// [`CodecError::TooDeep`] or [`CodecError::TrailingBytes`]).
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
/// A string's or byte buffer's length prefix is checked against the bytes left before
/// anything is allocated (one claiming more is a truncation, however large), and the value's
/// sequences and maps may claim as many elements in all as the element budget (the first step
/// of 16 at or above 16 times `bytes.len()`, at least 64 Ki), with serde preallocating at most
/// 1 MiB for one; see the module docs.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let budget = Budget::new(element_budget(bytes.len()));
    // No limit: nothing here allocates by a claimed length, and a limit would report a
    // claim past the end of `bytes` as too large rather than as a truncation.
    let decoded = bincode::serde::seed_decode_from_slice(
        Seed::new(PhantomData::<T>, &budget),
        bytes,
        config::standard(),
    );
    let (value, used) = within_budget::<T, _>(decoded, &budget)?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            type_name: std::any::type_name::<T>(),
            trailing: bytes.len() - used,
            total: bytes.len(),
        });
    }
    Ok(value)
}

/// [`decode`]'s element budget for `len` bytes: the first of 64 Ki, 1 Mi, 16 Mi, 256 Mi and
/// [`DECODE_LIMIT`] elements at or above 16 times `len`. (Steps of 16 because these were
/// bincode's limit, instantiated once per step; the budgets have stayed what they were.)
fn element_budget(len: usize) -> usize {
    let claimable = len.saturating_mul(16);
    [1 << 16, 1 << 20, 1 << 24, 1 << 28]
        .into_iter()
        .find(|&step| claimable <= step)
        .unwrap_or(DECODE_LIMIT)
}

/// Decodes one `T` from a reader, leaving the reader just after it.
///
/// The reader's length is unknown, so a length prefix is trusted up to [`DECODE_LIMIT`]: a
/// corrupt one can make this allocate that much before the read fails, and loop that many
/// times over zero-sized elements. Use [`decode`] for untrusted bytes.
pub fn decode_from<T: DeserializeOwned>(reader: &mut impl std::io::Read) -> Result<T, CodecError> {
    let budget = Budget::new(DECODE_LIMIT);
    let mut decoder = bincode::serde::OwnedSerdeDecoder::from_reader(StdReader(reader), CONFIG);
    let decoded = T::deserialize(Bounded::new(decoder.as_deserializer(), &budget));
    within_budget::<T, _>(decoded, &budget)
}

/// A `std::io::Read` as a bincode reader. bincode's own adapter (the one behind its
/// `decode_from_std_read`) is private to it, and the decoder has to be built here to wrap
/// its `Deserializer`; this one reports a short read the same way (`DecodeError::Io`).
struct StdReader<'r, R>(&'r mut R);

impl<R: std::io::Read> bincode::de::read::Reader for StdReader<'_, R> {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        self.0
            .read_exact(bytes)
            .map_err(|inner| bincode::error::DecodeError::Io {
                inner,
                additional: bytes.len(),
            })
    }
}

/// A decoder's result, its error naming the type that was asked for. An exceeded budget or
/// depth is reported as such whatever the decoder made of the refusal (bincode passes it up
/// as a string).
fn within_budget<T, V>(
    decoded: Result<V, bincode::error::DecodeError>,
    budget: &Budget,
) -> Result<V, CodecError> {
    let type_name = std::any::type_name::<T>();
    match (decoded, budget.exceeded()) {
        (_, Some(claimed)) => Err(CodecError::TooManyElements {
            type_name,
            claimed,
            budget: budget.limit(),
        }),
        (_, None) if budget.too_deep() => Err(CodecError::TooDeep {
            type_name,
            limit: MAX_DEPTH,
        }),
        (Err(source), None) => Err(CodecError::Decode { type_name, source }),
        (Ok(value), None) => Ok(value),
    }
}

/// bincode's error, in words. bincode prints its errors as their `Debug` text
/// (`Serde(AnyNotSupported)`, `OtherString("invalid value: …")`), which says what is wrong
/// only to a reader of bincode's source; the cases a host's own types run into are said here,
/// the rest still as bincode names them.
struct Reason<'a, E>(&'a E);

/// What a type asks of a format that bincode's is not: self-describing.
const NOT_SELF_DESCRIBING: &str = "the type reads its fields by what the bytes say they are \
    (`deserialize_any`: a `#[serde(tag = ..)]` or `#[serde(untagged)]` enum, a \
    `#[serde(flatten)]` field, a `serde_json::Value`), and bincode's encoding does not say \
    what it holds: such a type can be stored but never read back";

impl fmt::Display for Reason<'_, bincode::error::EncodeError> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use bincode::error::EncodeError;
        match self.0 {
            EncodeError::Serde(bincode::serde::EncodeError::SequenceMustHaveLength) => f.write_str(
                "a sequence or map of unknown length (a `#[serde(flatten)]` field makes one) \
                 cannot be encoded: bincode writes the length before the elements",
            ),
            EncodeError::Other(message) => f.write_str(message),
            EncodeError::OtherString(message) => f.write_str(message),
            other => write!(f, "{other:?}"),
        }
    }
}

impl fmt::Display for Reason<'_, bincode::error::DecodeError> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use bincode::error::{AllowedEnumVariants, DecodeError, IntegerType};
        match self.0 {
            DecodeError::UnexpectedEnd { additional } => write!(
                f,
                "the bytes end at least {additional} byte(s) short of a whole value"
            ),
            // The reader path's ([`decode_from`]) two own errors.
            DecodeError::Io { inner, additional } if inner.kind() == ErrorKind::UnexpectedEof => {
                write!(
                    f,
                    "the input ends at least {additional} byte(s) short of a whole value"
                )
            }
            DecodeError::Io { inner, .. } => write!(f, "reading the input failed: {inner}"),
            DecodeError::LimitExceeded => write!(
                f,
                "a length claims more than the decode limit of {DECODE_LIMIT} bytes"
            ),
            // bincode's reading of some integers from a slice names the wrong type expected
            // when the marker is reserved (a `u32` for a `u64`), so that one names none.
            DecodeError::InvalidIntegerType {
                found: IntegerType::Reserved,
                ..
            } => f.write_str("an integer starts with a reserved marker byte (255)"),
            DecodeError::InvalidIntegerType { expected, found } => write!(
                f,
                "an integer is encoded as {}, too wide for the {} it is read as",
                Reason(found),
                Reason(expected)
            ),
            DecodeError::UnexpectedVariant {
                type_name,
                allowed: AllowedEnumVariants::Range { min, max },
                found,
            } => write!(
                f,
                "{type_name} has no variant {found} (its variants are numbered {min} to {max})"
            ),
            DecodeError::Utf8 { inner } => write!(f, "a string is not UTF-8: {inner}"),
            DecodeError::InvalidCharEncoding(_) => f.write_str("a char is not UTF-8"),
            DecodeError::InvalidBooleanValue(value) => {
                write!(f, "a bool is encoded as {value}, neither 0 nor 1")
            }
            DecodeError::Serde(bincode::serde::DecodeError::AnyNotSupported) => {
                f.write_str(NOT_SELF_DESCRIBING)
            }
            DecodeError::Other(message) => f.write_str(message),
            DecodeError::OtherString(message) => f.write_str(message),
            other => write!(f, "{other:?}"),
        }
    }
}

/// `U64` as `u64`, `Usize` as `usize`.
impl fmt::Display for Reason<'_, bincode::error::IntegerType> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format!("{:?}", self.0).to_lowercase())
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

    /// Values whose in-memory size is 16 times their encoding (a `u128` per one-byte varint),
    /// at every size around the element budget's steps, decode.
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

    /// bincode's varint encoding of a sequence or map length: that of a `u64`.
    fn length(len: u64) -> Vec<u8> {
        encode(&len).expect("encodes")
    }

    /// `decode`'s answer, from another thread; the test fails if none comes within 5 s (an
    /// unbounded decode of 2^40 zero-sized elements runs for hours).
    fn promptly<R: Send + 'static>(decode: impl FnOnce() -> R + Send + 'static) -> R {
        let (done, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(decode());
        });
        answer
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("no answer within 5 s")
    }

    /// `err` is a refusal of `claimed` elements against `budget`, naming `T`.
    fn assert_too_many<T>(err: &CodecError, claimed: u64, budget: usize) {
        let type_name = std::any::type_name::<T>();
        assert!(
            matches!(err, CodecError::TooManyElements { type_name: t, claimed: c, budget: b }
                if *t == type_name && *c as u64 == claimed && *b == budget),
            "{type_name}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("decoding a value as {type_name} failed")),
            "{message}"
        );
    }

    /// Decoding `bytes` as `T` is refused promptly, for claiming `claimed` elements against
    /// the budget of a short input (64 Ki elements).
    fn refused<T: DeserializeOwned + std::fmt::Debug + Send + 'static>(
        bytes: Vec<u8>,
        claimed: u64,
    ) {
        let err = promptly(move || decode::<T>(&bytes)).expect_err("refused");
        assert_too_many::<T>(&err, claimed, 1 << 16);
    }

    /// A sequence of zero-sized elements takes no input bytes per element and no memory, so
    /// neither the input's length nor the decode limit bounds its claimed length: nine bytes
    /// claiming 2^40 units made the decoder loop 2^40 times (no answer within 5 s). The
    /// element budget refuses the claim before the first element.
    #[test]
    fn a_huge_count_of_zero_sized_values_is_refused_promptly() {
        refused::<Vec<()>>(length(1 << 40), 1 << 40);
    }

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    struct Unit;

    /// Not zero-sized, but encoded as nothing: its one field is skipped.
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Skipped {
        #[serde(skip)]
        cached: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Newtype(Vec<()>);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shapes {
        Unit,
        Newtype(Vec<()>),
        Tuple(u8, Vec<Unit>),
        Struct { units: Vec<[u8; 0]> },
    }

    /// Every way of reaching a sequence of values that decode from no bytes is counted:
    /// element types, containers, and the paths by which serde hands a nested deserializer
    /// back (`Some`, newtype structs, tuple and struct fields, each kind of enum variant).
    #[test]
    fn every_path_to_a_zero_byte_sequence_is_bounded() {
        let huge = 1u64 << 40;
        let claim = length(huge);
        let after = |prefix: &[u8]| [prefix, &claim].concat();
        refused::<Vec<[u8; 0]>>(claim.clone(), huge);
        refused::<Vec<PhantomData<u64>>>(claim.clone(), huge);
        refused::<Vec<Unit>>(claim.clone(), huge);
        refused::<Vec<Skipped>>(claim.clone(), huge);
        refused::<Box<[()]>>(claim.clone(), huge);
        refused::<std::collections::VecDeque<()>>(claim.clone(), huge);
        refused::<std::collections::HashSet<()>>(claim.clone(), huge);
        refused::<std::collections::BTreeSet<Unit>>(claim.clone(), huge);
        refused::<Option<Vec<()>>>(after(&[1]), huge);
        refused::<Newtype>(claim.clone(), huge);
        refused::<(u8, Vec<()>)>(after(&[7]), huge);
        refused::<Transcript>(after(&[0]), huge);
        // Variant indices: 1 Newtype, 2 Tuple, 3 Struct.
        refused::<Shapes>(after(&[1]), huge);
        refused::<Shapes>(after(&[2, 7]), huge);
        refused::<Shapes>(after(&[3]), huge);
    }

    /// Nested sequences share one budget: two inner claims that each fit are refused
    /// together, counted with the outer sequence's own two elements.
    #[test]
    fn nested_zero_sized_sequences_share_one_budget() {
        let inner = length(40_000);
        let one = [&[1][..], &inner].concat();
        assert_eq!(
            decode::<Vec<Vec<()>>>(&one).expect("fits"),
            vec![vec![(); 40_000]]
        );
        let two = [&[2][..], &inner, &inner].concat();
        refused::<Vec<Vec<()>>>(two, 2 + 80_000);
        refused::<Vec<Vec<()>>>(length(1 << 40), 1 << 40);
        refused::<Vec<Vec<Vec<()>>>>([&[1, 1][..], &length(1 << 40)].concat(), 2 + (1 << 40));
    }

    #[test]
    fn maps_of_unit_keys_and_values_are_bounded() {
        use std::collections::{BTreeMap, HashMap};
        refused::<HashMap<(), ()>>(length(1 << 40), 1 << 40);
        refused::<BTreeMap<Unit, PhantomData<u8>>>(length(1 << 40), 1 << 40);
        // Through a map's value: one entry whose value claims 2^40 units.
        refused::<HashMap<u8, Vec<()>>>([&[1, 7][..], &length(1 << 40)].concat(), 1 + (1 << 40));
        // A map's entries count as one element each.
        let map: HashMap<u16, ()> = (0..1000).map(|k| (k, ())).collect();
        let bytes = encode(&map).expect("encodes");
        assert_eq!(decode::<HashMap<u16, ()>>(&bytes).expect("decodes"), map);
    }

    /// The reader path has the same bound, with the fixed limit as its budget.
    #[test]
    fn the_reader_path_is_bounded_too() {
        let claim = length(1 << 40);
        let err = promptly(move || decode_from::<Vec<()>>(&mut &claim[..])).expect_err("refused");
        assert_too_many::<Vec<()>>(&err, 1 << 40, DECODE_LIMIT);
        let nested = [&[1, 1][..], &length(1 << 40)].concat();
        let err = promptly(move || decode_from::<Option<Vec<Newtype>>>(&mut &nested[..]))
            .expect_err("refused");
        assert_too_many::<Option<Vec<Newtype>>>(&err, 1 + (1 << 40), DECODE_LIMIT);
    }

    /// The reader path decodes one value and leaves the reader after it; a short read is
    /// still bincode's I/O error.
    #[test]
    fn the_reader_path_reads_one_value_at_a_time() {
        let first = Transcript {
            language: "en".into(),
            segments: vec![(0, "hello".into())],
        };
        let mut bytes = encode(&first).expect("encodes");
        bytes.extend(encode(&vec![(); 3]).expect("encodes"));
        let mut reader = &bytes[..];
        assert_eq!(
            decode_from::<Transcript>(&mut reader).expect("decodes"),
            first
        );
        assert_eq!(
            decode_from::<Vec<()>>(&mut reader).expect("decodes"),
            vec![(); 3]
        );
        assert!(reader.is_empty());
        let truncated = &bytes[..4];
        let err = decode_from::<Transcript>(&mut &truncated[..]).expect_err("short");
        assert!(
            matches!(
                &err,
                CodecError::Decode {
                    source: bincode::error::DecodeError::Io { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// A string or byte buffer whose length prefix claims more bytes than the input holds is
    /// a truncation (bincode's `UnexpectedEnd`, with the bytes missing), however large the
    /// claim: beyond the decode limit it was `LimitExceeded`, which blamed the claim's size
    /// though a limit of 16 times the input refuses no claim the input could hold.
    #[test]
    fn a_byte_claim_past_the_end_is_a_truncation_even_over_the_limit() {
        for claim in [100u64, 1 << 20, 1 << 40] {
            let prefix = length(claim);
            for present in [&b""[..], b"abc"] {
                let bytes = [&prefix[..], present].concat();
                let missing = claim as usize - present.len();
                let errors = [
                    decode::<String>(&bytes).expect_err("short"),
                    decode::<std::ffi::CString>(&bytes).expect_err("short"),
                ];
                for err in errors {
                    assert!(
                        matches!(
                            err,
                            CodecError::Decode {
                                source: bincode::error::DecodeError::UnexpectedEnd { additional },
                                ..
                            } if additional == missing
                        ),
                        "{claim}: {err:?}"
                    );
                }
            }
        }
    }

    /// The reader path cannot know whether a claim's bytes follow, so a claim over its limit
    /// is refused before anything is read or allocated, as `LimitExceeded`, even when the
    /// bytes are there (an endless reader).
    #[test]
    fn the_reader_path_refuses_a_byte_claim_over_its_limit_before_reading() {
        use std::io::Read;
        let claim = length(DECODE_LIMIT as u64 + 1);
        let mut endless = (&claim[..]).chain(std::io::repeat(b'a'));
        let err = decode_from::<String>(&mut endless).expect_err("over the limit");
        assert!(
            matches!(
                err,
                CodecError::Decode {
                    source: bincode::error::DecodeError::LimitExceeded,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// Up to the budget, a sequence of zero-sized values decodes, and the budget grows with
    /// the input like the decode limit.
    #[test]
    fn zero_sized_sequences_within_the_budget_decode() {
        let units = decode::<Vec<()>>(&length(1 << 16)).expect("at the budget");
        assert_eq!(units.len(), 1 << 16);
        refused::<Vec<()>>(length((1 << 16) + 1), (1 << 16) + 1);

        // 8 KiB of bytes make a 1 Mi-element budget (limit 2^20).
        let value = (vec![7u8; 8192], vec![(); 1_000_000]);
        let bytes = encode(&value).expect("encodes");
        assert_eq!(
            decode::<(Vec<u8>, Vec<()>)>(&bytes).expect("decodes"),
            value
        );
    }

    /// Tuple, array and struct lengths come from the type, not the input, and are not
    /// charged: 65,000 pairs of a byte and 32 units are 65,000 elements against a budget of
    /// 2^20, where charging the tuples too would count 35 per pair, 2,275,000.
    #[test]
    fn static_lengths_are_not_charged() {
        let pairs = vec![(9u8, [(); 32]); 65_000];
        let bytes = encode(&pairs).expect("encodes");
        assert!(bytes.len() * 16 <= 1 << 20, "{}", bytes.len());
        assert_eq!(
            decode::<Vec<(u8, [(); 32])>>(&bytes).expect("decodes"),
            pairs
        );
    }

    /// A value using every shape the adapter forwards decodes unchanged, by both paths.
    #[test]
    fn a_rich_value_round_trips_unchanged() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Rich {
            name: String,
            bytes: Vec<u8>,
            digest: [u8; 32],
            ttl: Option<u64>,
            none: Option<i16>,
            numbers: (i8, i32, i64, i128, u16, u128, f32, f64, bool, char),
            shapes: Vec<Shapes>,
            by_name: std::collections::BTreeMap<String, Vec<u32>>,
            units: Vec<()>,
            unit: Unit,
            skipped: Skipped,
            newtype: Newtype,
            marker: PhantomData<String>,
        }
        let rich = Rich {
            name: "näme".into(),
            bytes: vec![0, 1, 255],
            digest: [3; 32],
            ttl: Some(1 << 40),
            none: None,
            numbers: (
                -1,
                -70_000,
                i64::MIN,
                i128::MAX,
                65_535,
                u128::MAX,
                1.5,
                -0.25,
                true,
                'ß',
            ),
            shapes: vec![
                Shapes::Unit,
                Shapes::Newtype(vec![(); 2]),
                Shapes::Tuple(4, vec![Unit]),
                Shapes::Struct { units: vec![[]; 5] },
            ],
            by_name: [("a".to_string(), vec![1, 2]), ("b".to_string(), vec![])]
                .into_iter()
                .collect(),
            units: vec![(); 100],
            unit: Unit,
            skipped: Skipped::default(),
            newtype: Newtype(vec![()]),
            marker: PhantomData,
        };
        let bytes = encode(&rich).expect("encodes");
        assert_eq!(decode::<Rich>(&bytes).expect("decodes"), rich);
        assert_eq!(decode_from::<Rich>(&mut &bytes[..]).expect("decodes"), rich);
    }

    /// Bytes no value of the type encodes to are decode errors, never a panic or a wrong
    /// value: a `bool` other than 0 or 1, an `Option` tag other than 0 or 1, a `char` that is
    /// a surrogate or past U+10FFFF, a `String` of invalid UTF-8, an enum variant the type
    /// does not have, a varint too wide for its integer. A NaN keeps its exact bits.
    #[test]
    fn malformed_scalars_are_decode_errors() {
        let decode_error = |err: CodecError| matches!(err, CodecError::Decode { .. });
        assert!(decode_error(decode::<bool>(&[2]).expect_err("not a bool")));
        assert!(decode_error(
            decode::<Option<u8>>(&[2, 0]).expect_err("tag 2")
        ));
        for bad in [&[0xED, 0xA0, 0x80][..], &[0xF4, 0x90, 0x80, 0x80], &[0xFF]] {
            assert!(
                decode_error(decode::<char>(bad).expect_err("not a char")),
                "{bad:?}"
            );
        }
        assert!(decode_error(
            decode::<String>(&[2, 0xC3, 0x28]).expect_err("not UTF-8")
        ));
        assert!(decode_error(
            decode::<Shapes>(&[4]).expect_err("no variant 4")
        ));
        // 252 announces a u32, which does not fit a u16.
        let wide = [252, 0, 0, 1, 0];
        assert!(decode_error(decode::<u16>(&wide).expect_err("too wide")));

        let nan = f64::from_bits(0x7FF8_0000_DEAD_BEEF);
        let bytes = encode(&nan).expect("encodes");
        let decoded = decode::<f64>(&bytes).expect("decodes");
        assert_eq!(decoded.to_bits(), nan.to_bits());
    }
}
