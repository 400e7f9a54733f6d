//! The library example from `README.md`, compiled and run, plus a check that the README still
//! shows exactly this code (so the two cannot drift apart).

use std::error::Error;

#[test]
fn readme_example_runs() -> Result<(), Box<dyn Error>> {
    // README-BEGIN
    use memocache::{Cache, CacheKey, RemovalCause, Ttl};
    use std::time::Duration;

    // A cache of at most 64 MiB whose entries live a day unless evicted first.
    let cache = Cache::builder()
        .max_bytes(64 * 1024 * 1024)
        .default_ttl(Ttl::hours(24)?)
        .eviction_listener(|key, _value, cause| {
            if cause == RemovalCause::Size {
                eprintln!("evicted {key}");
            }
        })
        .build()?;

    // An audio file's key is the SHA-256 of its bytes (streamed), and its transcript is keyed by
    // that hash and the language, exactly as the seed derives it.
    let audio: &[u8] = b"RIFF\x24\x00\x00\x00WAVEfmt ";
    let file_hash = CacheKey::from_reader(audio, "audio")?.digest_hex();
    let key = CacheKey::transcript(&file_hash, "en")?;

    // Concurrent callers for one key run the loader once; the others wait for its value.
    let text = cache.get_or_insert_with(key, || "hello world")?;
    assert_eq!(&text[..], b"hello world");
    assert_eq!(cache.get(&key).as_deref(), Some(&b"hello world"[..]));

    // Keys print as `prefix:<64 hex digits>` and parse back; several inputs are length-framed.
    assert_eq!(key.to_string().parse::<CacheKey>()?, key);
    let summary = CacheKey::builder("summary")?
        .part(key.digest())
        .part("model=small")
        .finish();
    assert_ne!(summary, key);

    // Typed values go through one codec (bincode 2); entries carry their metadata.
    cache.insert_typed(summary, &vec!["a summary".to_string()])?;
    assert_eq!(
        cache.get_typed::<Vec<String>>(&summary)?,
        Some(vec!["a summary".to_string()])
    );
    let entry = cache.entry(&key).expect("live");
    assert_eq!(
        entry.ttl().map(Ttl::as_duration),
        Some(Duration::from_secs(86_400))
    );
    assert_eq!(cache.stats().hits, 2);
    // README-END
    Ok(())
}

/// The README's first `rust` code block is the code between the markers above.
#[test]
fn readme_shows_this_example() {
    let source = include_str!("readme_example.rs");
    let readme = include_str!("../README.md");
    let begin = source.find("// README-BEGIN\n").expect("begin marker") + 16;
    let end = source.find("    // README-END").expect("end marker");
    let example: Vec<&str> = source[begin..end]
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect();
    let block_start = readme
        .find("```rust\n")
        .expect("a rust block in the README")
        + 8;
    let block_len = readme[block_start..].find("```").expect("closing fence");
    let block: Vec<&str> = readme[block_start..block_start + block_len]
        .lines()
        .collect();
    assert_eq!(
        block, example,
        "README example differs from tests/readme_example.rs"
    );
}
