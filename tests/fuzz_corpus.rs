//! Replays the committed fuzz corpus through the fuzzing properties on the stable toolchain, so
//! plain `cargo test` checks every seed and every input a fuzz run kept (`fuzz/corpus/<target>/`).
//! The properties live in `fuzz/checks.rs`, shared with the cargo-fuzz targets.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::collections::BTreeSet;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn file_names(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Every fuzz target has a check, every check has a target, and each has a non-empty corpus.
#[test]
fn every_fuzz_target_has_a_check_and_a_corpus() {
    #[allow(unused_mut)] // Without the `trace` feature, one target has no check to compare.
    let mut targets: BTreeSet<String> = file_names(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    #[cfg(not(feature = "trace"))]
    targets.remove("trace_parse");
    let checks: BTreeSet<String> = checks::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(targets, checks, "fuzz/fuzz_targets/*.rs vs checks::TARGETS");
    for name in &checks {
        let corpus = fuzz_dir().join("corpus").join(name);
        assert!(
            !file_names(&corpus).is_empty(),
            "{} is empty",
            corpus.display()
        );
    }
}

/// Every corpus file passes its target's check; failures are collected, not stopped at.
#[test]
fn corpus_replays_clean() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, check) in checks::TARGETS {
        for path in file_names(&fuzz_dir().join("corpus").join(name)) {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(path.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no corpus files found");
    assert!(
        failures.is_empty(),
        "corpus inputs failing their check: {failures:#?}"
    );
}

/// The corpus's transcript seeds are encodings of the pipeline's `Transcript` as it is now, so
/// that a fuzz run starts from inputs that reach its last fields: `seed-transcript` decodes,
/// and `seed-transcript-duration-overflow` is refused for its compute time only (a second's
/// worth of nanoseconds or more on `u64::MAX` seconds). Both had been left behind as fields
/// were added (`empty_chunks`, then `timing`), and were refused as too short instead.
#[test]
fn the_transcript_seeds_are_current_transcripts() {
    use memocache::chunk::Timing;
    use memocache::pipeline::Transcript;
    use std::time::Duration;

    let seed = |name: &str| {
        let path = fuzz_dir().join("corpus").join("codec_decode").join(name);
        fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let transcript: Transcript =
        memocache::codec::decode(&seed("seed-transcript")).expect("a transcript");
    assert_eq!(transcript.text, "hello world");
    assert_eq!(transcript.segments.len(), 2);
    assert_eq!(
        (
            transcript.chunks,
            transcript.chunks_computed,
            transcript.empty_chunks
        ),
        (2, 1, 0)
    );
    assert_eq!(transcript.compute_time, Duration::new(2, 250));
    assert_eq!(transcript.timing, Timing::ByteRate(Some(16_000)));

    let overflow = seed("seed-transcript-duration-overflow");
    let error = memocache::codec::decode::<Transcript>(&overflow).expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains("overflow deserializing Duration"),
        "{message}"
    );
}
