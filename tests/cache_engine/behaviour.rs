//! Single-threaded behaviour: listener causes, the budget, stats, typed values, configuration.

use std::time::Duration;

use bytes::Bytes;
use memocache::{
    Cache, CacheEntry, CacheError, CodecError, ConfigError, ManualClock, RemovalCause,
};
use serde::{Deserialize, Serialize};

use super::{key, of_cause, recorded, secs};

#[test]
fn listener_sees_each_cause_with_the_removed_value() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let cache = builder.max_entries(3).shards(1).build().expect("valid");

    cache.insert(key(1), "one").expect("fits");
    cache.insert(key(1), "uno").expect("fits");
    assert_eq!(
        of_cause(&events, RemovalCause::Replaced),
        vec![(key(1), "one".into())]
    );

    assert_eq!(cache.remove(&key(1)).as_deref(), Some(&b"uno"[..]));
    assert_eq!(cache.remove(&key(1)), None, "already gone");
    assert_eq!(
        of_cause(&events, RemovalCause::Removed),
        vec![(key(1), "uno".into())]
    );

    cache.insert_with_ttl(key(2), "two", secs(1)).expect("fits");
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.purge_expired(), 1);
    assert_eq!(
        of_cause(&events, RemovalCause::Expired),
        vec![(key(2), "two".into())]
    );
    // Removing an expired entry reports it as expired and returns nothing.
    cache
        .insert_with_ttl(key(3), "three", secs(1))
        .expect("fits");
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.remove(&key(3)), None);
    assert_eq!(of_cause(&events, RemovalCause::Expired).len(), 2);

    for i in 10..14 {
        cache
            .insert(key(i), Bytes::from(format!("v{i}")))
            .expect("fits");
    }
    let evicted = of_cause(&events, RemovalCause::Size);
    assert_eq!(evicted.len(), 1, "four inserts into three slots evict one");
    let (k, v) = &evicted[0];
    assert!(!cache.contains_key(k));
    assert_eq!(
        v,
        &Bytes::from(format!(
            "v{}",
            (10..14).find(|&i| key(i) == *k).expect("one of ours")
        ))
    );
    assert_eq!(cache.len(), 3);

    events.lock().clear();
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(cache.size_bytes(), 0);
    let cleared = of_cause(&events, RemovalCause::Removed);
    assert_eq!(cleared.len(), 3);
    assert_eq!(events.lock().len(), 3);
}

#[test]
fn too_large_is_refused_and_evicts_nothing() {
    let clock = ManualClock::new();
    let (builder, events) = recorded(&clock);
    let max_bytes = 10 * CacheEntry::charged_size(100) as u64;
    let cache = builder.max_bytes(max_bytes).build().expect("valid");
    for i in 0..10 {
        cache.insert(key(i), vec![1u8; 100]).expect("fits");
    }
    assert_eq!(cache.size_bytes(), max_bytes);
    let before = (cache.len(), cache.size_bytes(), cache.stats());

    let too_big = max_bytes as usize - CacheEntry::charged_size(0) + 1;
    match cache.insert(key(100), vec![0u8; too_big]) {
        Err(CacheError::TooLarge { size, max_bytes: m }) => {
            assert_eq!(size, max_bytes + 1);
            assert_eq!(m, max_bytes);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let refused = cache.get_or_insert_with(key(101), || vec![0u8; too_big]);
    assert!(matches!(refused, Err(CacheError::TooLarge { .. })));
    assert_eq!(cache.len(), before.0);
    assert_eq!(cache.size_bytes(), before.1);
    assert!(events.lock().is_empty(), "nothing was evicted");
    assert!((0..10).all(|i| cache.contains_key(&key(i))));
    assert!(!cache.contains_key(&key(100)) && !cache.contains_key(&key(101)));

    // An entry of exactly the budget fits, by evicting everything else.
    cache
        .insert(key(100), vec![0u8; too_big - 1])
        .expect("exactly the budget");
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.size_bytes(), max_bytes);
    assert_eq!(of_cause(&events, RemovalCause::Size).len(), 10);
}

#[test]
fn stats_count_every_kind_of_operation() {
    let clock = ManualClock::new();
    let (builder, _) = recorded(&clock);
    let cache = builder.max_entries(4).shards(1).build().expect("valid");
    assert_eq!(cache.stats().hit_ratio(), 0.0);

    cache.insert(key(1), "a").expect("fits");
    cache.insert(key(1), "b").expect("fits"); // update
    cache.insert(key(2), "c").expect("fits");
    assert!(cache.get(&key(1)).is_some()); // hit
    assert!(cache.get(&key(2)).is_some()); // hit
    assert!(cache.get(&key(9)).is_none()); // miss
    assert!(cache.peek(&key(1)).is_some()); // not counted
    assert!(cache.peek(&key(9)).is_none()); // not counted
    assert!(cache.entry(&key(1)).is_some()); // not counted
    cache.remove(&key(2)); // explicit removal
    cache.get_or_insert_with(key(3), || "loaded").expect("fits"); // miss + load
    let failed = cache.try_get_or_insert_with(key(4), || Err::<Bytes, _>("no"));
    assert!(failed.is_err()); // miss + load failure
    for i in 10..14 {
        cache.insert(key(i), "e").expect("fits");
    }
    cache.insert_with_ttl(key(20), "t", secs(1)).expect("fits");
    clock.advance(Duration::from_secs(2));
    cache.purge_expired();

    let stats = cache.stats();
    let counted = [
        ("hits", stats.hits, 2),
        ("misses", stats.misses, 3),
        ("inserts", stats.inserts, 8),
        ("updates", stats.updates, 1),
        ("evictions_size", stats.evictions_size, 3),
        ("evictions_expired", stats.evictions_expired, 1),
        ("removals_explicit", stats.removals_explicit, 1),
        ("replaced", stats.replaced, 1),
        ("loads", stats.loads, 1),
        ("load_failures", stats.load_failures, 1),
        ("entries", stats.entries, 3),
        ("bytes", stats.bytes, cache.size_bytes()),
    ];
    for (name, got, want) in counted {
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(stats.entries, cache.len() as u64);
    assert!((stats.hit_ratio() - 0.4).abs() < 1e-12);
    // Every stored value left by exactly one cause or is still there.
    let removals: u64 = RemovalCause::ALL
        .into_iter()
        .map(|c| stats.removals(c))
        .sum();
    assert_eq!(stats.inserts + stats.updates, removals + stats.entries);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Transcript {
    language: String,
    words: Vec<(String, f32)>,
}

#[test]
fn typed_values_round_trip_and_bad_bytes_are_an_error() {
    let cache = Cache::builder().max_bytes(1 << 20).build().expect("valid");
    let value = Transcript {
        language: "en".into(),
        words: vec![("hello".into(), 0.5), ("world".into(), 1.25)],
    };
    cache.insert_typed(key(1), &value).expect("fits");
    assert_eq!(
        cache.get_typed::<Transcript>(&key(1)).expect("decodes"),
        Some(value)
    );
    assert_eq!(
        cache.get_typed::<Transcript>(&key(2)).expect("absent"),
        None
    );

    // Bytes that are not a Transcript: a truncated length prefix, and garbage.
    cache.insert(key(3), vec![0xFFu8]).expect("fits");
    let err: CodecError = cache
        .get_typed::<Transcript>(&key(3))
        .expect_err("does not decode");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("the value under {}: decoding a value as ", key(3)))
            && message.contains("Transcript"),
        "names the key and the type: {message}"
    );
    assert!(matches!(&err, CodecError::AtKey { key: at, .. } if *at == key(3)));
    cache
        .insert(key(4), "not bincode at all, \u{1F600}")
        .expect("fits");
    assert!(cache.get_typed::<Vec<Transcript>>(&key(4)).is_err());
    // 7u64 is one byte in bincode's varint encoding: extra bytes after it are an error.
    cache.insert_typed(key(5), &7u64).expect("fits");
    assert_eq!(cache.get_typed::<u64>(&key(5)).expect("decodes"), Some(7));
    cache.insert(key(6), vec![7u8, 0, 0]).expect("fits");
    assert!(cache.get_typed::<u64>(&key(6)).is_err(), "trailing bytes");
    // The encoding carries no type, as `get_typed` says: another type's bytes that decode
    // are taken for a `T`.
    cache.insert_typed(key(7), &7u32).expect("fits");
    assert_eq!(cache.get_typed::<u64>(&key(7)).expect("decodes"), Some(7));
}

#[test]
fn bad_configurations_are_errors_that_say_what_is_wrong() {
    let config_error = |result: Result<Cache, CacheError>| match result {
        Err(CacheError::InvalidConfig(e)) => e,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    let min = CacheEntry::charged_size(0) as u64;
    let cases = [
        (
            Cache::builder().build(),
            ConfigError::MissingMaxBytes,
            "max_bytes",
        ),
        (
            Cache::builder().max_bytes(10).build(),
            ConfigError::MaxBytesTooSmall { max_bytes: 10, min },
            "max_bytes is 10",
        ),
        (
            Cache::builder().max_bytes(min - 1).build(),
            ConfigError::MaxBytesTooSmall {
                max_bytes: min - 1,
                min,
            },
            "max_bytes",
        ),
        (
            Cache::builder().max_bytes(1 << 20).max_entries(0).build(),
            ConfigError::ZeroMaxEntries,
            "max_entries",
        ),
        (
            Cache::builder()
                .max_bytes(1 << 20)
                .sweep_interval(Duration::ZERO)
                .build(),
            ConfigError::ZeroSweepInterval,
            "sweep_interval",
        ),
    ];
    for (result, expected, named) in cases {
        let e = config_error(result);
        assert_eq!(e, expected);
        // The message names the setting, after the cache's own prefix.
        let message = CacheError::InvalidConfig(e).to_string();
        assert!(
            message.starts_with("invalid cache configuration: ") && message.contains(named),
            "{message}"
        );
    }
    for shards in [0, 3, 12, 2048] {
        let e = config_error(Cache::builder().max_bytes(1 << 20).shards(shards).build());
        assert_eq!(e, ConfigError::Shards(shards));
        let why = e.to_string();
        assert!(
            why.contains("shards") && why.contains(&shards.to_string()),
            "{why}"
        );
    }

    // The edges that are valid.
    let smallest = CacheEntry::charged_size(0) as u64;
    let cache = Cache::builder()
        .max_bytes(smallest)
        .max_entries(1)
        .shards(memocache::cache::MAX_SHARDS)
        .build()
        .expect("one empty entry fits");
    cache.insert(key(1), Bytes::new()).expect("fits");
    cache
        .insert(key(2), Bytes::new())
        .expect("fits, evicting key 1");
    assert_eq!(cache.len(), 1);
    assert!(cache.contains_key(&key(2)));
}
