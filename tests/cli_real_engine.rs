//! A real offline speech engine through `memocache transcribe`.
//!
//! espeak-ng synthesises two sentences, sox resamples them to the 16 kHz that pocketsphinx's
//! US-English model expects, and `memocache transcribe --engine-cmd` runs pocketsphinx on each
//! chunk. The test checks that most words come back, and that a second run is served from the
//! cache without invoking the engine at all. `.ci/run` installs the Debian packages
//! (espeak-ng, sox, pocketsphinx, pocketsphinx-en-us); where they are missing the test prints
//! why and passes without checking anything.

use std::path::Path;
use std::process::Command;

const SENTENCE: &str = "i would like to order a pizza we are going to the park";

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> std::process::Output {
    let output = cmd.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn memocache(args: &[&str]) -> std::process::Output {
    run(Command::new(env!("CARGO_BIN_EXE_memocache")).args(args))
}

#[test]
fn pocketsphinx_transcribes_and_the_second_run_never_calls_it() {
    let missing: Vec<&str> = ["espeak-ng", "sox", "pocketsphinx_continuous"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {} not installed (apt-get install espeak-ng sox pocketsphinx pocketsphinx-en-us)",
            missing.join(", ")
        );
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let raw = dir.path().join("speech-22k.wav");
    let audio = dir.path().join("speech.wav");
    run(Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&raw)
        .arg(SENTENCE));
    run(Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&audio));

    // Each engine call appends a line to `calls`, so the test can count them.
    let calls = dir.path().join("calls");
    let engine = format!(
        "echo call >> '{}'; pocketsphinx_continuous -infile {{chunk}} -logfn /dev/null",
        calls.display()
    );
    let cache_dir = dir.path().join("cache");
    let args = |audio: &Path| -> Vec<String> {
        vec![
            "transcribe".into(),
            audio.display().to_string(),
            "--language".into(),
            "en".into(),
            "--engine-cmd".into(),
            engine.clone(),
            "--cache-dir".into(),
            cache_dir.display().to_string(),
        ]
    };
    let first_args = args(&audio);
    let first = memocache(&first_args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&first.stdout).to_lowercase();
    let words: Vec<&str> = SENTENCE.split(' ').collect();
    let heard = words
        .iter()
        .filter(|w| text.split_whitespace().any(|t| t == **w))
        .count();
    assert!(
        heard * 10 >= words.len() * 7,
        "only {heard} of {} words came back: {text}",
        words.len()
    );
    let calls_after_first = std::fs::read_to_string(&calls).map_or(0, |s| s.lines().count());
    assert!(calls_after_first >= 1, "the engine never ran");

    let second = memocache(&first_args.iter().map(String::as_str).collect::<Vec<_>>());
    let second_text = String::from_utf8_lossy(&second.stdout);
    assert!(
        second_text.contains("from cache"),
        "second run: {second_text}"
    );
    let calls_after_second = std::fs::read_to_string(&calls).map_or(0, |s| s.lines().count());
    assert_eq!(
        calls_after_second, calls_after_first,
        "the second run invoked the engine"
    );
}
