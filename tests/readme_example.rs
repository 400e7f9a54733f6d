//! The library example from `README.md`, compiled and run, plus a check that the README still
//! shows exactly this code (so the two cannot drift apart).

use std::error::Error;

#[test]
fn readme_example_runs() -> Result<(), Box<dyn Error>> {
    // README-BEGIN
    use memocache::{CacheKey, Ttl};
    use std::time::Duration;

    // An audio file's key is the SHA-256 of its bytes, streamed in constant memory.
    let audio: &[u8] = b"RIFF\x24\x00\x00\x00WAVEfmt ";
    let file_key = CacheKey::from_reader(audio, "audio")?;
    assert_eq!(file_key, CacheKey::from_content(audio, "audio")?);

    // Its transcript is keyed by the file hash and the language, as the seed derives it.
    let transcript = CacheKey::transcript(&file_key.digest_hex(), "en")?;
    assert_eq!(transcript.prefix(), "transcript");

    // Several inputs: length-framed parts, so ["ab", "c"] and ["a", "bc"] never collide.
    let summary = CacheKey::builder("summary")?
        .part(transcript.digest())
        .part("model=small")
        .part("temperature=0.2")
        .finish();

    // Keys print as `prefix:<64 hex digits>` and parse back.
    let text = summary.to_string();
    assert!(text.starts_with("summary:") && text.len() == "summary:".len() + 64);
    assert_eq!(text.parse::<CacheKey>()?, summary);

    // Time-to-live values are positive durations.
    let ttl = Ttl::hours(24)?;
    assert_eq!(ttl.as_duration(), Duration::from_secs(86_400));
    assert!(Ttl::new(Duration::ZERO).is_err());
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
