//! What a host embedding the crate meets in its first hour: the common traits of the public
//! types it holds, prints and passes around.

use std::sync::Arc;

use memocache::chunk::{ChunkPlan, split};
use memocache::{Cache, CacheError, CacheKey, JobQueue, JobQueueBuilder, LoadError};

/// Bug: `CacheBuilder` had `Default` and `JobQueueBuilder`, whose `JobQueue::builder` gives
/// "a builder with the defaults", did not, so a host's config struct holding one could not
/// derive `Default`.
#[test]
fn a_job_queue_builder_by_default_is_the_queues_builder() {
    let by_default = JobQueueBuilder::default();
    assert_eq!(
        format!("{by_default:?}"),
        format!("{:?}", JobQueue::builder())
    );
    let queue = by_default.build().expect("the defaults build");
    assert_eq!(queue.stats().submitted, 0);
}

/// Bug: `ChunkStream` had no `Debug`, so a host's struct holding one could not derive it and
/// a stream could not be printed. It shows where the stream stands, not the reader's bytes.
#[test]
fn a_chunk_stream_prints_where_it_stands() {
    let input = [7u8; 10];
    let plan = ChunkPlan::with_chunk_bytes(4).expect("a plan");
    let mut stream = split(&input[..], &plan, Some(10)).expect("splits");
    stream.next().expect("a chunk").expect("read");
    let printed = format!("{stream:?}");
    assert!(
        printed.starts_with("ChunkStream { kind: Bytes, "),
        "{printed}"
    );
    assert!(printed.contains("next_index: 1, "), "{printed}");
    assert!(printed.contains("total_chunks: Some(3), "), "{printed}");
    assert!(printed.ends_with(", done: false, .. }"), "{printed}");
}

/// A loader error type that is neither `Clone` nor `Error`.
#[derive(Debug)]
struct EngineDown;

/// Bug: `LoadError` was not `Clone`, though both its variants hold cheap clones (`Arc<E>`, a
/// `CacheError`, which is `Clone`): a host handing one load's error to several waiters had to
/// rebuild it. A clone shares the loader's error, whatever `E` is.
#[test]
fn a_load_error_clones_sharing_the_loaders_error() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("built");
    let key = CacheKey::from_content(b"audio", "file").expect("key");
    let err = cache
        .try_get_or_insert_with(key, || Err::<&str, _>(EngineDown))
        .expect_err("the loader fails");
    match (&err, &err.clone()) {
        (LoadError::Loader(a), LoadError::Loader(b)) => assert!(Arc::ptr_eq(a, b)),
        other => panic!("{other:?}"),
    }
    let refused = LoadError::<EngineDown>::Cache(CacheError::TooLarge {
        size: 10,
        max_bytes: 5,
    });
    assert!(matches!(
        refused.clone(),
        LoadError::Cache(CacheError::TooLarge {
            size: 10,
            max_bytes: 5
        })
    ));
}

/// A field the cache's codec cannot encode: `flatten` makes a map of unknown length.
#[derive(serde::Serialize, serde::Deserialize)]
struct Flattened {
    text: String,
    #[serde(flatten)]
    meta: Meta,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    model: String,
}

/// An enum the codec stores but cannot read back: it needs a self-describing format.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Untagged {
    Words(u32),
    Text(String),
}

/// Raw `bytes` read as a `T`: the message the decode error gives.
fn misread<T: serde::de::DeserializeOwned + std::fmt::Debug>(bytes: &[u8]) -> String {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("built");
    let key = CacheKey::from_content(bytes, "raw").expect("key");
    cache.insert(key, bytes.to_vec()).expect("stored");
    let read = cache.get_typed::<T>(&key);
    read.expect_err("does not decode").to_string()
}

/// Bug: bincode prints its errors as their `Debug` text, and a typed value's error passed
/// it on: `encoding the value failed: encoding a value failed: Serde(SequenceMustHaveLength)`
/// for a `#[serde(flatten)]` field, `… failed: Serde(AnyNotSupported)` for an untagged enum,
/// `InvalidIntegerType { expected: U64, found: Reserved }` for bytes that are no integer. Each
/// now says what is wrong, once.
#[test]
fn a_typed_values_errors_say_what_is_wrong_in_words() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("built");
    let key = |name: &[u8]| CacheKey::from_content(name, "typed").expect("key");
    let debug_text = ["Serde(", "{ expected", "OtherString", "UnexpectedVariant"];
    let flattened = Flattened {
        text: "hello".into(),
        meta: Meta {
            model: "small".into(),
        },
    };
    let refused = cache
        .insert_typed(key(b"flat"), &flattened)
        .expect_err("flatten cannot be encoded")
        .to_string();
    assert_eq!(
        refused,
        "the value was not stored: encoding a value failed: a sequence or map of unknown length \
         (a `#[serde(flatten)]` field makes one) cannot be encoded: bincode writes the length \
         before the elements"
    );
    cache
        .insert_typed(key(b"untagged"), &Untagged::Words(3))
        .expect("stored");
    let untagged = cache
        .get_typed::<Untagged>(&key(b"untagged"))
        .expect_err("never read back")
        .to_string();
    assert!(
        untagged.ends_with(
            "failed: the type reads its fields by what the bytes say they are \
             (`deserialize_any`: a `#[serde(tag = ..)]` or `#[serde(untagged)]` enum, a \
             `#[serde(flatten)]` field, a `serde_json::Value`), and bincode's encoding does not \
             say what it holds: such a type can be stored but never read back"
        ),
        "{untagged}"
    );
    let reserved = misread::<u64>(&[0xff; 9]);
    let wide = misread::<u32>(&[253; 9]);
    let variant = misread::<Option<u8>>(&[7]);
    for (message, ending) in [
        (
            &reserved,
            "as u64 failed: an integer starts with a reserved marker byte (255)",
        ),
        (
            &wide,
            "failed: an integer is encoded as u64, too wide for the u32 it is read as",
        ),
        (
            &variant,
            "failed: Option<T> has no variant 7 (its variants are numbered 0 to 1)",
        ),
    ] {
        assert!(message.ends_with(ending), "{message}");
    }
    for message in [refused, untagged, reserved, wide, variant] {
        for debug in debug_text {
            assert!(!message.contains(debug), "{message}");
        }
    }
}

/// A listener written as a function, as a host whose listener grows past a closure writes it.
fn count_size_evictions(_key: &CacheKey, value: &memocache::Bytes, cause: memocache::RemovalCause) {
    if cause == memocache::RemovalCause::Size {
        assert!(!value.is_empty());
    }
}

/// Bug: every value the cache gives is a `bytes::Bytes`, which the crate did not re-export, so
/// a host could not name the type of `Cache::get`, or write its listener as a function,
/// without adding the `bytes` crate itself (at a version that must match). It is
/// `memocache::Bytes` now.
#[test]
fn a_host_names_the_value_type_through_the_crate() {
    let cache = Cache::builder()
        .max_bytes(1 << 20)
        .eviction_listener(count_size_evictions)
        .build()
        .expect("built");
    let key = CacheKey::from_content(b"audio", "file").expect("key");
    cache.insert(key, "hello").expect("stored");
    let value: Option<memocache::Bytes> = cache.get(&key);
    assert_eq!(value, Some(memocache::Bytes::from_static(b"hello")));
}

/// Bug: the codec's words left out a `char` that is no UTF-8, which still said
/// `InvalidCharEncoding([255, 0, 0, 0])`, and the two errors of `codec::decode_from` that only
/// a reader gives: one that ends early said `Io { inner: Error { kind: UnexpectedEof, message:
/// "failed to fill whole buffer" }, additional: 8 }`, and a length past the decode limit
/// `LimitExceeded`.
#[test]
fn a_char_that_is_no_utf8_and_a_reader_that_ends_early_are_said_in_words() {
    let char_message = misread::<char>(&[0xff]);
    assert!(
        char_message.ends_with("as char failed: a char is not UTF-8"),
        "{char_message}"
    );
    let short = memocache::codec::decode_from::<u64>(&mut &[0xfd, 1, 2][..])
        .expect_err("too short")
        .to_string();
    assert_eq!(
        short,
        "decoding a value as u64 failed: the input ends at least 8 byte(s) short of a whole \
         value"
    );
    let claim = [&[0xfd][..], &(1u64 << 33).to_le_bytes()].concat();
    let past = memocache::codec::decode_from::<String>(&mut &claim[..])
        .expect_err("past the limit")
        .to_string();
    assert_eq!(
        past,
        "decoding a value as alloc::string::String failed: a length claims more than the \
         decode limit of 4294967296 bytes"
    );
}
