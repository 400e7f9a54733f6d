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
