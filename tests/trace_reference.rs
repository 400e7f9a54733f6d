//! The readers and simulators against the reference numbers of `../shared/traces/SOURCES.md`.
//!
//! The expected values are parsed from SOURCES.md itself, so they cannot drift from the file
//! the traces came with. Where the traces are absent (a checkout without `shared/` beside it)
//! the tests print why and pass; `MEMOCACHE_TRACES=<dir>` points them elsewhere.

#![cfg(feature = "trace")]

use std::path::{Path, PathBuf};

use memocache::trace::{Lru, Opt, Trace, replay};
use trace_support::{trace_files, traces_dir};

mod trace_support;

/// One `#### <file> (requests=…, unique=…, …)` section of SOURCES.md.
#[derive(Debug)]
struct Reference {
    file: String,
    requests: usize,
    unique: usize,
    sizes: Vec<usize>,
    lru: Vec<String>,
    opt: Vec<String>,
}

fn number(text: &str) -> usize {
    text.trim()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("bad number {text:?} in SOURCES.md: {e}"))
}

fn cells(row: &str) -> Vec<String> {
    row.trim()
        .trim_matches('|')
        .split('|')
        .skip(1)
        .map(|c| c.trim().to_owned())
        .collect()
}

fn parse_sources(dir: &Path) -> Vec<Reference> {
    let text = std::fs::read_to_string(dir.join("SOURCES.md")).expect("read SOURCES.md");
    let mut refs = Vec::new();
    for section in text.split("\n#### ").skip(1) {
        let header = section.lines().next().expect("section header");
        let file = header
            .split_whitespace()
            .next()
            .expect("file name")
            .to_owned();
        // `(requests=914,145, unique=186,880, …)`: the numbers have thousands separators,
        // the fields are separated by ", ".
        let counts = header.split('(').nth(1).expect("counts");
        let count = |name: &str| {
            counts
                .split(", ")
                .find_map(|f| f.strip_prefix(name))
                .map(number)
                .unwrap_or_else(|| panic!("{file}: no {name} in {header:?}"))
        };
        let row = |label: &str| {
            section
                .lines()
                .find(|l| l.starts_with(&format!("| {label}")))
                .map(cells)
                .unwrap_or_else(|| panic!("{file}: no `{label}` row"))
        };
        refs.push(Reference {
            requests: count("requests="),
            unique: count("unique="),
            sizes: row("cache size").iter().map(|c| number(c)).collect(),
            lru: row("LRU hit %"),
            opt: row("OPT (Belady"),
            file,
        });
    }
    refs
}

fn find_trace(dir: &Path, file: &str) -> PathBuf {
    trace_files(dir)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == file))
        .unwrap_or_else(|| panic!("{file} not found under {}", dir.display()))
}

fn percent(hits: u64, requests: usize) -> String {
    format!("{:.2}", 100.0 * hits as f64 / requests as f64)
}

/// Loads `file`, checks its counts, and replays LRU and OPT at every reference size.
fn check(dir: &Path, refs: &[Reference], file: &str) {
    let reference = refs
        .iter()
        .find(|r| r.file == file)
        .unwrap_or_else(|| panic!("{file} is not in SOURCES.md"));
    let trace = Trace::load(find_trace(dir, file)).expect("load trace");
    assert_eq!(trace.requests(), reference.requests, "{file}: requests");
    assert_eq!(trace.unique(), reference.unique, "{file}: unique keys");
    for (i, &size) in reference.sizes.iter().enumerate() {
        let lru = replay(&mut Lru::new(size), trace.keys());
        let mut opt_policy = Opt::new(trace.keys(), size);
        let opt = replay(&mut opt_policy, trace.keys());
        assert_eq!(opt_policy.off_script(), 0);
        assert_eq!(
            percent(lru.hits, trace.requests()),
            reference.lru[i],
            "{file}: LRU at {size}"
        );
        assert_eq!(
            percent(opt.hits, trace.requests()),
            reference.opt[i],
            "{file}: OPT at {size}"
        );
    }
}

#[test]
fn small_traces_reproduce_reference_lru_and_opt() {
    let Some(dir) = traces_dir() else { return };
    let refs = parse_sources(&dir);
    for file in [
        "gli.trace.gz",
        "cs.trace.gz",
        "ps.trace.gz",
        "multi1.trace.gz",
        "web07.trace.xz",
    ] {
        check(&dir, &refs, file);
    }
}

#[test]
fn small_traces_of_every_format_have_the_reference_counts() {
    let Some(dir) = traces_dir() else { return };
    let refs = parse_sources(&dir);
    // One or more per format and compression: LIRS text (gz), i32 BE (xz), i64 BE (gz),
    // oracleGeneral (uncompressed).
    for file in [
        "sprite.trace.gz",
        "2_pools.trace.gz",
        "web12.trace.xz",
        "trace_vaultservice.gz",
        "cloudPhysicsIO.oracleGeneral.bin",
    ] {
        let reference = refs.iter().find(|r| r.file == file).expect("in SOURCES.md");
        let trace = Trace::load(find_trace(&dir, file)).expect("load trace");
        assert_eq!(trace.requests(), reference.requests, "{file}: requests");
        assert_eq!(trace.unique(), reference.unique, "{file}: unique keys");
    }
}

/// Every trace, every reference size (LRU and OPT at 6–19 sizes over ~45 M requests): minutes
/// in release mode (700 s on the shared 2-core machine under load).
#[test]
#[ignore = "slow: run with `cargo test --release --test trace_reference -- --ignored`"]
fn every_trace_reproduces_reference_lru_and_opt() {
    let Some(dir) = traces_dir() else { return };
    let refs = parse_sources(&dir);
    assert_eq!(
        refs.len(),
        trace_files(&dir).len(),
        "one SOURCES.md section per trace"
    );
    for reference in &refs {
        check(&dir, &refs, &reference.file);
    }
}
