//! `memocache replay TRACE --capacity N[%] [--format NAME] [--curve OUT.svg]`: how well would
//! memocache serve this access pattern, next to an exact LRU and the offline optimum?
//!
//! The trace is loaded whole ([`memocache::trace`] reads every format of
//! `../shared/traces/SOURCES.md`), because Bélády's OPT needs the future. Each policy then
//! replays it, one request at a time, on this thread, OPT first (its plan is the memory that
//! may still be refused, so a run that cannot finish fails before it prints anything):
//! memocache through [`CachePolicy`] (an entry-bounded [`Cache`](memocache::Cache), trace ids
//! mapped to keys by [`trace_key`](memocache::trace::trace_key), exactly as the `hit_ratio`
//! benchmark does), and the exact [`Lru`] and [`Opt`] simulators. The table gives each one's
//! request hit ratio and its replay throughput; OPT's time includes its planning pass (finding
//! every request's next use), since it cannot run without it.
//!
//! Design choices:
//!
//! * **Capacity in entries or percent.** `--capacity 5000` is absolute; `--capacity 10%` is
//!   `floor(10 % × unique keys)`, the libCacheSim convention `SOURCES.md` uses, so `10%` of a
//!   shared trace lands exactly on a column of its reference table. Both are numbers of the
//!   command's one grammar ([`super::number`]: `1e3`, `0.5%`), checked as the arguments are
//!   parsed, so a typo fails at once, not after a long load.
//! * **One error line.** `--format` is taken as text and checked here rather than by clap,
//!   whose errors span several lines; every error ends up as the single `memocache: error: …`
//!   line `main` prints (clap's own folded into it).
//! * **The curve is computed in parallel, the table is not.** The throughput column must not
//!   share the CPU with other replays, so the requested capacity is replayed alone. The
//!   `--curve` points (12 capacities log-spaced from 0.1 % to 80 % of the unique keys, plus the
//!   requested one) only need hit ratios, so they are spread over the available cores.
//! * **The SVG is rendered to memory, then written.** plotters' SVG backend needs no system
//!   fonts (it writes `<text>` elements and the viewer picks the font); rendering to a string
//!   first means a failed write is reported as one clear I/O error, and writing it to a
//!   temporary file renamed over the target means a failed write never leaves a half-drawn
//!   file nor costs the previous curve. The output path is checked before any replay (a
//!   folder that exists, and a file the curve can be written to, tried as the write will
//!   be) so a wrong path fails fast.
//! * **memocache's ratio is not bit-for-bit repeatable**: the engine seeds its key hash per
//!   cache (against hash flooding), which changes how keys spread over shards, so its hit
//!   ratio moves by a few hundredths of a percent between runs. LRU and OPT are exact.
//! * **The trace must fit.** It is held whole, about 25 bytes a request with OPT's plan, and a
//!   file of a few KiB (zstd of repeated lines) can stand for billions of requests; so a
//!   trace of more requests than the memory available at the start holds (or than
//!   `--max-requests`) is refused while it is read, before the system has to end the process.
//!   The memory available is the smaller of `MemAvailable` and the least room the memory
//!   limits of this process's cgroup and of its parents leave ([`MemoryFiles::read`]).
//! * **`-` is standard input, read as a stream** ([`TraceReader::from_stream`]), not opened
//!   as `/dev/stdin`: that path, which the user never typed, was in every error about it, and
//!   a socket's cannot be opened. `--format` is then required (no name tells it); the
//!   compression is told from the first bytes, or given with `--compression`.
//! * **Progress** is shown on stderr only when it is a terminal, so logs and tests see
//!   nothing but the result (or the error line).

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::number::{self, Decimal, NumberError};
use super::{file_name, shown};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use memocache::trace::{
    CachePolicy, Compression, Lru, Opt, Policy, ReplayStats, Trace, TraceError, TraceFormat,
    TraceReader, replay,
};

/// Arguments of `memocache replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The trace file; `-` reads standard input (with --format). Its compression (gzip, xz,
    /// zstd) is told from its first bytes, else from its name (.gz, .xz, .zst), or see
    /// --compression; its record format from the name, or see --format.
    trace: PathBuf,
    /// Cache capacity: a whole number of entries (5000, 1e6) or a percent of the trace's
    /// unique keys above 0 and up to 100 (10%, 0.5%, 1e-3%).
    // Hyphen values are let through to the parser, which says a negative number is one
    // (`-1e3`, `-.5`), where clap took some for unknown options.
    #[arg(
        long,
        value_name = "N[%]",
        value_parser = parse_capacity,
        allow_hyphen_values = true
    )]
    capacity: Capacity,
    /// The record format, when the file name does not tell it: arc, i64be, i32be,
    /// oracle-general or lirs.
    #[arg(long, value_name = "NAME")]
    format: Option<String>,
    /// How the trace is compressed: auto tells it from the first bytes (magic numbers), else
    /// from the name; none reads the bytes as they are (an uncompressed binary trace that
    /// happens to start like a compressed file); gzip, xz or zstd refuse a trace that does
    /// not start as one.
    #[arg(long, value_name = "NAME", default_value = "auto", ignore_case = true)]
    compression: CompressionArg,
    /// Also draw hit ratio against capacity for the three policies, as SVG, to this file.
    #[arg(long, value_name = "OUT.svg")]
    curve: Option<PathBuf>,
    /// Refuse a trace of more requests than this, a whole number (a replay holds the whole
    /// trace, about 25 bytes a request); default: as many as the available memory holds
    /// (Linux), else 100,000,000 (about 2.5 GB). The available memory is the smaller of
    /// MemAvailable (/proc/meminfo) and what the memory limits of this process's cgroup and
    /// its parents leave (in a container, the former is the host's); a refusal says which it
    /// was.
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_max_requests,
        allow_hyphen_values = true
    )]
    max_requests: Option<usize>,
}

/// `--compression`: told from the trace ([`TraceReader::open_format`]'s rule), or given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CompressionArg {
    Auto,
    #[value(name = "none")]
    Uncompressed,
    Gzip,
    Xz,
    Zstd,
}

impl CompressionArg {
    /// The compression given, `None` for `auto`.
    fn given(self) -> Option<Compression> {
        match self {
            CompressionArg::Auto => None,
            CompressionArg::Uncompressed => Some(Compression::None),
            CompressionArg::Gzip => Some(Compression::Gzip),
            CompressionArg::Xz => Some(Compression::Xz),
            CompressionArg::Zstd => Some(Compression::Zstd),
        }
    }
}

/// `--max-requests`: a whole number from 1 up to `usize::MAX` ([`number::whole`]). One past
/// it was taken as no limit, a figure nobody gave.
fn parse_max_requests(text: &str) -> Result<usize, String> {
    number::whole(text, 1, usize::MAX as u64)
        // At most `usize::MAX`, so the cast keeps the value.
        .map(|n| n as usize)
        .map_err(|e| format!("{e} (expected a whole number of requests from 1 up, such as 1e8)"))
}

/// Bytes a replay holds for each request: its key (8), OPT's plan (9), and the key list's
/// spare room while it grows by doubling (up to 8 more).
const BYTES_PER_REQUEST: u64 = 25;

/// The default `--max-requests` where the memory available is not known (no
/// `/proc/meminfo`: a system other than Linux, or a sandbox that hides it): about 2.5 GB of
/// replay, more than any trace of `SOURCES.md` needs.
const FALLBACK_MAX_REQUESTS: usize = 100_000_000;

/// Where a replay's limit on requests came from, for the error that cites it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Limit {
    /// `--max-requests`.
    Given,
    /// The memory available at the start (`MemAvailable`), in bytes.
    Available(u64),
    /// What the cgroups' memory limits left at the start, in bytes: less than `MemAvailable`,
    /// or `MemAvailable` was not known.
    Cgroup(u64),
    /// [`FALLBACK_MAX_REQUESTS`].
    Fallback,
}

impl Limit {
    /// Where the limit came from, as the refusal of a trace over it says (after the count).
    fn why(self) -> String {
        let gib = |bytes: u64| bytes as f64 / f64::from(1 << 30);
        match self {
            Limit::Available(bytes) => format!(
                ", as many as the available memory ({:.1} GiB) holds for a replay; \
                 --max-requests N sets another limit",
                gib(bytes)
            ),
            // The binding limit may be a parent cgroup's (see `default_max_requests`), and
            // `MemAvailable` may be unknown.
            Limit::Cgroup(bytes) => format!(
                ", as many as the memory the cgroup limits leave ({:.1} GiB, less than the \
                 system's MemAvailable where that is known) holds for a replay; \
                 --max-requests N sets another limit",
                gib(bytes)
            ),
            Limit::Fallback => ", the default where the available memory is not known; \
                                --max-requests N sets another limit"
                .to_owned(),
            Limit::Given => " (--max-requests)".to_owned(),
        }
    }
}

/// The files the default `--max-requests` is read from, as text (`None`: not readable).
#[derive(Debug, Default)]
struct MemoryFiles {
    /// `/proc/meminfo`.
    meminfo: Option<String>,
    /// cgroup v2: `memory.max`, `memory.current` and `memory.stat`, of each cgroup whose
    /// limit binds this process ([`cgroup_dirs`]).
    v2: Vec<CgroupFiles>,
    /// cgroup v1: `memory.limit_in_bytes`, `memory.usage_in_bytes` and `memory.stat`, the
    /// same way.
    v1: Vec<CgroupFiles>,
}

/// A cgroup's memory limit, usage and statistics, as text.
#[derive(Debug, Default)]
struct CgroupFiles {
    limit: Option<String>,
    usage: Option<String>,
    stat: Option<String>,
}

/// The cgroup hierarchy a line of `/proc/self/cgroup` is looked for in.
#[derive(Clone, Copy, Debug)]
enum CgroupVersion {
    /// The unified hierarchy, mounted at `/sys/fs/cgroup`.
    V2,
    /// The v1 hierarchy of the `memory` controller, mounted at `/sys/fs/cgroup/memory`.
    V1,
}

impl MemoryFiles {
    /// This process's view: the cgroup `/proc/self/cgroup` names, and each of its parents
    /// (see [`cgroup_dirs`]). Only the root of `/sys/fs/cgroup` was read: that is the
    /// process's own cgroup only in a container with a cgroup namespace, and on a host (a
    /// systemd service, a user's slice) it is the root cgroup, which has no limit, so the
    /// service's own limit was ignored.
    fn read() -> MemoryFiles {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok();
        let own = |version| own.as_deref().and_then(|text| own_cgroup(text, version));
        MemoryFiles {
            meminfo: std::fs::read_to_string("/proc/meminfo").ok(),
            v2: cgroup_levels(
                Path::new("/sys/fs/cgroup"),
                own(CgroupVersion::V2),
                "memory.max",
                "memory.current",
            ),
            v1: cgroup_levels(
                Path::new("/sys/fs/cgroup/memory"),
                own(CgroupVersion::V1),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            ),
        }
    }
}

/// This process's cgroup in `version`'s hierarchy, from the text of `/proc/self/cgroup`:
/// the path of the `0::/path` line (v2) or of the line whose controllers include `memory`
/// (v1). `None` where there is no such line or its path is not a plain absolute one: a
/// process outside its cgroup namespace's root sees `/../…`, which would lead out of the
/// mount.
fn own_cgroup(text: &str, version: CgroupVersion) -> Option<&str> {
    text.lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let ours = match version {
                CgroupVersion::V2 => id == "0" && controllers.is_empty(),
                CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
            };
            ours.then_some(path)
        })
        .filter(|path| path.starts_with('/') && !path.split('/').any(|c| c == ".." || c == "."))
}

/// The directories, under a hierarchy's `mount`, of the cgroups whose limits bind a process
/// in the cgroup `own` (a path of `/proc/self/cgroup`): its own, then each parent's up to
/// the mount's root, since a parent's limit counts its children's memory. The root alone
/// where `own` is not known, as before this was read. The root is always there because it
/// is the process's own cgroup where the mount shows only that (a container without a
/// cgroup namespace on v1, whose `/proc/self/cgroup` still gives the host's path, which
/// the mount does not have).
fn cgroup_dirs(mount: &Path, own: Option<&str>) -> Vec<PathBuf> {
    let mut dir = mount.to_path_buf();
    let mut dirs = vec![dir.clone()];
    for name in own
        .unwrap_or("/")
        .split('/')
        .filter(|name| !name.is_empty())
    {
        dir.push(name);
        dirs.push(dir.clone());
    }
    dirs.reverse();
    dirs
}

/// The files of each of [`cgroup_dirs`], read; a directory that is not there reads as
/// nothing (no limit).
fn cgroup_levels(mount: &Path, own: Option<&str>, limit: &str, usage: &str) -> Vec<CgroupFiles> {
    let read = |path: PathBuf| std::fs::read_to_string(path).ok();
    cgroup_dirs(mount, own)
        .into_iter()
        .map(|dir| CgroupFiles {
            limit: read(dir.join(limit)),
            usage: read(dir.join(usage)),
            stat: read(dir.join("memory.stat")),
        })
        .collect()
}

/// A cgroup limit at or above this is no limit: v1 writes "none" as the largest multiple of
/// the page size below 2^63 (9223372036854771712 with 4 KiB pages), and no machine has 4 EiB.
const NO_CGROUP_LIMIT: u64 = 1 << 62;

/// What a cgroup's memory limit leaves, in bytes, from the text of its files: the limit less
/// the usage, not counting the inactive file cache (`inactive_file` in `memory.stat`; v1's
/// hierarchical `total_inactive_file`), which the kernel reclaims before it refuses memory:
/// the usage counts the page cache, so a container that had read a few large files looked
/// full. `None` where there is no limit (`max`, or a huge number) or it does not parse; a
/// usage or statistics file that does not parse counts as nothing used.
fn cgroup_room(files: &CgroupFiles, inactive_key: &str) -> Option<u64> {
    let number = |text: &Option<String>| text.as_deref()?.trim().parse::<u64>().ok();
    let limit = number(&files.limit).filter(|&limit| limit < NO_CGROUP_LIMIT)?;
    let inactive = files.stat.as_deref().and_then(|stat| {
        stat.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            if key == inactive_key {
                value.trim().parse::<u64>().ok()
            } else {
                None
            }
        })
    });
    let used = number(&files.usage)
        .unwrap_or(0)
        .saturating_sub(inactive.unwrap_or(0));
    Some(limit.saturating_sub(used))
}

/// The default `--max-requests` from the text of the memory files: the smaller of
/// `MemAvailable` and what the cgroups' limits leave (the least [`cgroup_room`] of the
/// process's cgroup and its parents, v2's or else v1's) over [`BYTES_PER_REQUEST`], else
/// [`FALLBACK_MAX_REQUESTS`]. Without a limit a file of a few KiB (zstd of repeated lines)
/// read on until the allocator refused, and a system that overcommits memory may kill the
/// process before it refuses; where the file was missing there was no limit at all.
/// `MemAvailable` alone is the host's in a container: in one limited to 2 GiB on a host with
/// 64 GiB free, it allowed some 2.7 billion requests, and the container's OOM killer, not
/// the refusal, would end a replay of too large a trace.
fn default_max_requests(files: &MemoryFiles) -> (usize, Limit) {
    let available = files.meminfo.as_deref().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    });
    let least_room = |levels: &[CgroupFiles], inactive_key| {
        levels
            .iter()
            .filter_map(|files| cgroup_room(files, inactive_key))
            .min()
    };
    let cgroup = least_room(&files.v2, "inactive_file")
        .or_else(|| least_room(&files.v1, "total_inactive_file"));
    let (bytes, limit) = match (available, cgroup) {
        (Some(available), Some(room)) if room < available => (room, Limit::Cgroup(room)),
        (Some(available), _) => (available, Limit::Available(available)),
        (None, Some(room)) => (room, Limit::Cgroup(room)),
        (None, None) => return (FALLBACK_MAX_REQUESTS, Limit::Fallback),
    };
    let requests = usize::try_from(bytes / BYTES_PER_REQUEST).unwrap_or(usize::MAX);
    (requests.max(1), limit)
}

/// Runs `memocache replay`; the error is the one line to print.
pub fn run(args: ReplayArgs) -> Result<(), String> {
    // `-` is standard input, as for `memocache key`: it was "-: cannot open trace: No such
    // file or directory", while `/dev/stdin` worked.
    let stdin = args.trace.as_os_str() == "-";
    let capacity = args.capacity;
    let format = args
        .format
        .as_deref()
        .map(TraceFormat::from_str)
        .transpose()
        .map_err(|e| e.to_string())?;
    // Without `--format` it was "/dev/stdin: cannot tell the trace format from the file name
    // (expected *.lis, …)", about a name the user never gave.
    let input = match (stdin, format) {
        (true, Some(format)) => Input::Stdin(format),
        (true, None) => {
            return Err(format!(
                "{STDIN} has no file name to tell the trace format by: give it with \
                 --format NAME (arc, i64be, i32be, oracle-general or lirs)"
            ));
        }
        (false, _) => Input::File(&args.trace),
    };
    if let Some(out) = &args.curve {
        // Standard input may be a file the curve must not replace, and `/dev/stdin` is that
        // file where there is one.
        let trace = if stdin {
            Path::new("/dev/stdin")
        } else {
            &args.trace
        };
        check_output_folder(out, trace)?;
    }

    let given = args.compression.given();
    let (trace, format, compression) = load(input, format, given, args.max_requests)?;
    let name = match input {
        Input::Stdin(_) => STDIN.to_owned(),
        Input::File(path) => file_name(path),
    };
    if trace.requests() == 0 {
        return Err(format!("{}: the trace has no requests", input.shown()));
    }
    let entries = capacity.resolve(trace.unique())?;
    let bar = progress(
        Some(Contender::ALL.len() as u64 * trace.requests() as u64),
        format!("replaying at {}", count_of_entries(entries)),
    );
    // OPT replays first, before anything is printed: its plan is the one allocation that can
    // still fail once the trace is loaded, and last it failed only after the other replays
    // (minutes on a large trace), below a header for a table that never came. Run apart, each
    // replay still has the memory and the CPU to itself.
    let opt = Contender::Opt.run(trace.keys(), entries, &bar)?;
    bar.suspend(|| {
        println!(
            "trace     {name}: {} ({format}, {})",
            trace_size(&trace),
            compression,
        );
        match &capacity {
            Capacity::Entries(_) => println!("capacity  {}", count_of_entries(entries)),
            Capacity::Percent(p) => println!(
                "capacity  {} ({}% of the unique keys)",
                count_of_entries(entries),
                p.shown()
            ),
        }
    });
    // In the table's order, `Contender::ALL`.
    let runs = vec![
        (
            Contender::Memocache,
            Contender::Memocache.run(trace.keys(), entries, &bar)?,
        ),
        (
            Contender::Lru,
            Contender::Lru.run(trace.keys(), entries, &bar)?,
        ),
        (Contender::Opt, opt),
    ];
    bar.finish_and_clear();

    println!();
    println!("{:<10} {:>10} {:>14}", "policy", "hit ratio", "requests/s");
    for (contender, run) in &runs {
        let per_second = run.stats.requests as f64 / run.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<10} {:>8.2} % {:>14}",
            contender.to_string(),
            100.0 * run.stats.hit_ratio(),
            grouped(per_second as u64),
        );
    }
    println!(
        "\nOne thread each; OPT's time includes its planning pass over the trace.\n\
         memocache seeds its key hash per cache: its ratio varies slightly between runs."
    );
    let rejected: u64 = runs.iter().map(|(_, run)| run.rejected).sum();
    if rejected > 0 {
        println!("note: memocache refused {rejected} inserts; they count as misses.");
    }

    if let Some(out) = &args.curve {
        let points = curve(&trace, entries, &runs)?;
        let title = format!("{name}: {}", trace_size(&trace));
        draw_curve(out, &title, &points, entries)?;
        println!("\ncurve written to {}", shown(out));
    }
    Ok(())
}

/// What errors and the table call standard input (`-`). It was read as `/dev/stdin`, and
/// its errors named that path, which the user never typed; nor could a socket's be opened.
const STDIN: &str = "standard input";

/// Whether standard input is a directory (`< /`), which reads as the error "Is a directory".
fn stdin_is_dir() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        let stdin = std::io::stdin().as_fd().try_clone_to_owned();
        stdin
            .and_then(|fd| std::fs::File::from(fd).metadata())
            .is_ok_and(|m| m.is_dir())
    }
    #[cfg(not(unix))]
    false
}

/// Where the trace is read from.
#[derive(Clone, Copy, Debug)]
enum Input<'a> {
    /// `-`, of the format given (no name tells it).
    Stdin(TraceFormat),
    File(&'a Path),
}

impl Input<'_> {
    /// The name errors about the trace give it: the path [`shown`], or [`STDIN`].
    fn shown(self) -> String {
        match self {
            Input::Stdin(_) => STDIN.to_owned(),
            Input::File(path) => shown(path),
        }
    }
}

/// A `--capacity` as given: entries, or a percent of the unique keys still to be resolved.
#[derive(Clone, Debug, PartialEq)]
enum Capacity {
    Entries(usize),
    /// More than 0 and at most 100, exactly as written.
    Percent(Decimal),
}

/// What `--capacity` takes, for its errors.
const CAPACITY: &str = "a whole number of entries from 1 up (5000, 1e6) or a percent of the \
                        unique keys above 0 and up to 100 (10%, 0.5%)";

/// `--capacity`, in the command's grammar ([`number`]), a `%` after a percent. A number too
/// large for a count of entries was taken as `usize::MAX` and printed as such; it is refused.
fn parse_capacity(text: &str) -> Result<Capacity, String> {
    let refused = |e: NumberError| format!("{e} (expected {CAPACITY})");
    let text = text.trim();
    let Some(percent) = text.strip_suffix('%') else {
        return number::whole(text, 1, usize::MAX as u64)
            // At most `usize::MAX`, so the cast keeps the value.
            .map(|n| Capacity::Entries(n as usize))
            .map_err(refused);
    };
    let p: Decimal = percent.parse().map_err(refused)?;
    if p.is_negative() {
        return Err(refused(NumberError::Negative));
    }
    if p.is_zero() {
        return Err(refused(NumberError::Zero));
    }
    match p.scaled(1, 0) {
        (Some(whole), fraction) if whole < 100 || (whole == 100 && !fraction) => {
            Ok(Capacity::Percent(p))
        }
        _ => Err(refused(NumberError::Above("100%".to_owned()))),
    }
}

impl Capacity {
    /// The capacity in entries for a trace of `unique` distinct keys: `floor(p % × unique)`
    /// for a percent, exactly, with `p` the decimal written. In binary floating point
    /// `0.7 × 11000 / 100` is 76.999…, so `--capacity 0.7%` of 11,000 unique keys was 76
    /// entries, not 77.
    fn resolve(&self, unique: usize) -> Result<usize, String> {
        match self {
            Capacity::Entries(n) => Ok(*n),
            Capacity::Percent(p) => {
                // At most `unique` (p ≤ 100), so the cast keeps the value.
                let entries = p.scaled(unique as u64, -2).0.map_or(unique, |n| n as usize);
                if entries == 0 {
                    Err(format!(
                        "capacity {}% of {} is less than one entry",
                        p.shown(),
                        counted(unique, "unique key", "unique keys")
                    ))
                } else {
                    Ok(entries)
                }
            }
        }
    }
}

/// The policies every replay compares, in table and legend order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Memocache,
    Lru,
    Opt,
}

/// One policy's replay at one capacity.
struct Run {
    stats: ReplayStats,
    elapsed: Duration,
    /// Requests memocache could not insert (always 0 for the simulators).
    rejected: u64,
}

impl Contender {
    const ALL: [Contender; 3] = [Contender::Memocache, Contender::Lru, Contender::Opt];

    /// Replays `keys` through a fresh policy of `capacity` entries, advancing `bar`.
    fn run(self, keys: &[u64], capacity: usize, bar: &ProgressBar) -> Result<Run, String> {
        let started = Instant::now();
        let (stats, rejected) = match self {
            Contender::Memocache => {
                let mut cache = CachePolicy::with_capacity(capacity).map_err(|e| e.to_string())?;
                let stats = replay_with_progress(&mut cache, keys, bar);
                (stats, cache.rejected())
            }
            Contender::Lru => (replay_with_progress(&mut Lru::new(capacity), keys, bar), 0),
            Contender::Opt => {
                let mut opt = Opt::try_new(keys, capacity).map_err(|_| {
                    format!(
                        "OPT's plan of the trace does not fit in memory ({} requests, 9 bytes \
                         each, besides the trace)",
                        grouped(keys.len() as u64)
                    )
                })?;
                (replay_with_progress(&mut opt, keys, bar), 0)
            }
        };
        Ok(Run {
            stats,
            elapsed: started.elapsed(),
            rejected,
        })
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Contender::Memocache => "memocache",
            Contender::Lru => "LRU",
            Contender::Opt => "OPT",
        })
    }
}

/// Requests between progress updates: rare enough to cost nothing next to the replay.
const PROGRESS_CHUNK: usize = 1 << 16;

/// [`replay`] in chunks, so the bar moves; the policy sees the same requests in the same order.
fn replay_with_progress<P: Policy>(policy: &mut P, keys: &[u64], bar: &ProgressBar) -> ReplayStats {
    let mut total = ReplayStats::default();
    for chunk in keys.chunks(PROGRESS_CHUNK) {
        let stats = replay(policy, chunk);
        total.requests += stats.requests;
        total.hits += stats.hits;
        bar.inc(chunk.len() as u64);
    }
    total
}

/// Reads the whole trace, with the given format or the one its name tells, up to
/// `max_requests` (default: [`default_max_requests`]), decoding the `given` compression or
/// else the one its first bytes tell ([`TraceReader::open_format`]), which is also returned.
fn load(
    input: Input,
    format: Option<TraceFormat>,
    given: Option<Compression>,
    max_requests: Option<usize>,
) -> Result<(Trace, TraceFormat, Compression), String> {
    let error = |e: &TraceError| {
        let message = match input {
            Input::Stdin(_) => e.to_string(),
            Input::File(path) => trace_error(path, e),
        };
        match (e, given) {
            // A refusal of the compression given says where it came from.
            (TraceError::NotCompressed { .. }, Some(given)) => {
                format!("{message} (--compression {given}; auto tells it from the content)")
            }
            // Told by the name: the refusal said what the file is not, not how to read it.
            (TraceError::NotCompressed { compression, .. }, None) => {
                format!(
                    "{message} (its name says {compression}; --compression none reads it as it is)"
                )
            }
            (TraceError::UnknownFormat { .. }, _) => format!("{message} with --format NAME"),
            _ => message,
        }
    };
    let reader = match input {
        Input::Stdin(_) if stdin_is_dir() => {
            return Err(format!("{STDIN} is a directory, not a trace file"));
        }
        Input::Stdin(format) => TraceReader::from_stream(std::io::stdin(), format, STDIN, given),
        Input::File(path) => {
            // The path is looked at before the format is told from its name: a mistyped path
            // with no trace extension, or a directory, was "cannot tell the trace format …
            // name the format explicitly with --format", and a directory given a format
            // failed as "reading the uncompressed stream". A pipe or device is let through:
            // `--format` reads those.
            match std::fs::metadata(path) {
                Err(e) => return Err(format!("{}: cannot open trace: {e}", shown(path))),
                Ok(m) if m.is_dir() => {
                    return Err(format!("{} is a directory, not a trace file", shown(path)));
                }
                Ok(_) => open_file(path, format, given),
            }
        }
    }
    .map_err(|e| error(&e))?;
    let (format, compression) = (reader.format(), reader.compression());
    let bar = progress(None, format!("loading {}", input.shown()));
    let (limit, source) = match max_requests {
        Some(limit) => (limit, Limit::Given),
        None => default_max_requests(&MemoryFiles::read()),
    };
    let read = Trace::read_at_most(reader, limit, |keys| bar.set_position(keys as u64));
    let trace = read.map_err(|e| match e {
        TraceError::TooManyRequests { limit, .. } => format!(
            "{}: the trace has more than {} requests{}",
            input.shown(),
            grouped(limit),
            source.why()
        ),
        // The count grouped, as every count this command prints.
        TraceError::TooLarge { requests, .. } => format!(
            "{}: the trace does not fit in memory: it ran out after {} requests (a replay \
             holds the whole trace)",
            input.shown(),
            grouped(requests)
        ),
        e => error(&e),
    })?;
    bar.finish_and_clear();
    Ok((trace, format, compression))
}

/// Opens the trace file at `path`, of the given format or the one its name tells, with the
/// `given` compression or the one told from it.
fn open_file(
    path: &Path,
    format: Option<TraceFormat>,
    given: Option<Compression>,
) -> Result<TraceReader, TraceError> {
    let format = match format {
        Some(format) => format,
        None => TraceFormat::detect(path).ok_or_else(|| TraceError::UnknownFormat {
            path: path.to_owned(),
        })?,
    };
    match given {
        Some(compression) => TraceReader::open_as(path, format, compression),
        None => TraceReader::open_format(path, format),
    }
}

/// The message of an error about the trace at `path`, the path [`shown`]: the library's
/// messages start with it displayed lossily, so a name that is not UTF-8 (`caf\xe9.trace`)
/// read `caf\u{fffd}.trace` there, unlike in this command's other errors.
fn trace_error(path: &Path, error: &TraceError) -> String {
    let message = error.to_string();
    match message.strip_prefix(&*path.to_string_lossy()) {
        Some(rest) => format!("{}{rest}", shown(path)),
        None => message,
    }
}

/// The capacities of the curve: [`CURVE_POINTS`] log-spaced from 0.1 % to 80 % of the unique
/// keys (`floor`, as for `--capacity N%`), plus `requested`; sorted, distinct, at least 1.
fn curve_capacities(unique: usize, requested: usize) -> Vec<usize> {
    const LOW: f64 = 0.001;
    const HIGH: f64 = 0.8;
    let mut capacities: Vec<usize> = (0..CURVE_POINTS)
        .map(|i| {
            let fraction = LOW * (HIGH / LOW).powf(i as f64 / (CURVE_POINTS - 1) as f64);
            (fraction * unique as f64).floor() as usize
        })
        .filter(|&c| c > 0)
        .chain([requested])
        .collect();
    capacities.sort_unstable();
    capacities.dedup();
    capacities
}

/// Number of log-spaced capacities on a curve (before the requested one is added).
const CURVE_POINTS: usize = 12;

/// Hit ratio (percent) against capacity, one series per [`Contender::ALL`] entry.
type Curve = Vec<(Contender, Vec<(usize, f64)>)>;

/// Replays every (capacity, policy) pair of the curve, spread over the available cores. The
/// requested capacity's `runs` are reused, so the curve and the table agree at that point
/// (memocache's ratio varies slightly from one cache to the next; see the module docs).
fn curve(trace: &Trace, requested: usize, runs: &[(Contender, Run)]) -> Result<Curve, String> {
    let capacities = curve_capacities(trace.unique(), requested);
    // OPT's jobs first, as in the table: their plans are what may not fit in memory.
    let jobs: Vec<(Contender, usize)> = [Contender::Opt, Contender::Memocache, Contender::Lru]
        .into_iter()
        .flat_map(|c| capacities.iter().map(move |&capacity| (c, capacity)))
        .filter(|&(_, capacity)| capacity != requested)
        .collect();
    let bar = progress(
        Some(jobs.len() as u64 * trace.requests() as u64),
        format!("curve: {} capacities", capacities.len()),
    );
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    let next = AtomicUsize::new(0);
    // Each worker takes the next job until none is left, so a slow job (a large memocache)
    // does not hold up a fixed share of the others.
    let worker = || -> Result<Vec<(Contender, usize, f64)>, String> {
        let mut done = Vec::new();
        while let Some(&(contender, capacity)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            // A failure takes the jobs left, so the others stop too rather than replay on
            // for a curve that will not be drawn.
            let run = contender
                .run(trace.keys(), capacity, &bar)
                .inspect_err(|_| next.store(jobs.len(), Ordering::Relaxed))?;
            done.push((contender, capacity, 100.0 * run.stats.hit_ratio()));
        }
        Ok(done)
    };
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a replay thread panicked".to_owned()))
            })
            .collect::<Result<Vec<_>, String>>()
    })?;
    bar.finish_and_clear();
    let table = runs
        .iter()
        .map(|(contender, run)| (*contender, requested, 100.0 * run.stats.hit_ratio()));
    Ok(Contender::ALL
        .into_iter()
        .map(|contender| {
            let mut points: Vec<(usize, f64)> = results
                .iter()
                .flatten()
                .copied()
                .chain(table.clone())
                .filter(|(c, _, _)| *c == contender)
                .map(|(_, capacity, ratio)| (capacity, ratio))
                .collect();
            points.sort_by_key(|&(capacity, _)| capacity);
            (contender, points)
        })
        .collect())
}

/// Fails, before any replay, unless `out` can name the SVG file: not a directory, not the
/// trace, an `.svg` (or no) extension, in a folder that exists.
fn check_output_folder(out: &Path, trace: &Path) -> Result<(), String> {
    let cannot = |why: &str| Err(format!("cannot write the curve to {}: {why}", shown(out)));
    // `-` is standard input as the trace, but as the curve it made a file named `-` in the
    // working directory, where standard output was meant; that holds the table.
    if out.as_os_str() == "-" {
        return cannot(
            "the table goes to standard output, the curve to a file: name one *.svg \
             (./- for a file named -)",
        );
    }
    if out.is_dir() {
        return cannot("it is a directory");
    }
    // The curve replaces its file once the replay is done: given the trace's own path (a
    // name with no extension, or `*.svg` read with `--format`), it replaced the input trace
    // with the SVG. Compared as resolved paths, so `./t` or a symlink to the trace count.
    if let (Ok(out), Ok(trace)) = (std::fs::canonicalize(out), std::fs::canonicalize(trace))
        && out == trace
    {
        return cannot("it is the trace being replayed; name another file");
    }
    // The curve is always SVG: a name like `curve.png` would hold SVG text no image viewer
    // opens as a PNG. A name with no extension is taken as given.
    if out
        .extension()
        .is_some_and(|ext| !ext.eq_ignore_ascii_case("svg"))
    {
        return cannot("the curve is drawn as SVG; name the file *.svg");
    }
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(format!(
            "cannot write the curve to {}: no folder {}",
            shown(out),
            shown(folder)
        ));
    }
    // A name the folder cannot hold (a component over the file system's 255 bytes) passed
    // the write tried below, whose temporary file has a name of its own, and failed only at
    // the rename, after every replay. Looking the name up finds it, as it finds any error
    // other than the file's not being there yet.
    if let Err(e) = std::fs::symlink_metadata(out)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return cannot(&e.to_string());
    }
    // A folder the file cannot be written in (read-only, another user's, `/proc`) was found
    // only by the write, after the replay and the curve's own replays. So the write is tried
    // now as `replace_file` will make it: a temporary file in the target's folder (removed
    // at once), or, where that is refused, the existing file opened for writing (not
    // truncated). A target that is not a regular file (`/dev/stdout`) is written directly.
    if std::fs::metadata(out).is_ok_and(|m| !m.is_file()) {
        return Ok(());
    }
    match temp_beside(out) {
        Ok(_) => Ok(()),
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && std::fs::OpenOptions::new().write(true).open(out).is_ok() =>
        {
            Ok(())
        }
        Err(e) => cannot(&e.to_string()),
    }
}

/// Draws the curve as SVG and writes it to `out`.
fn draw_curve(out: &Path, title: &str, curve: &Curve, requested: usize) -> Result<(), String> {
    let svg =
        render_svg(title, curve, requested).map_err(|e| format!("cannot draw the curve: {e}"))?;
    replace_file(out, svg.as_bytes())
        .map_err(|e| format!("cannot write the curve to {}: {e}", shown(out)))
}

/// Writes `bytes` to `out` through a temporary file in its folder, renamed over it once
/// whole. Written in place, a write that fails part-way (a full disk, a file size limit) had
/// already truncated `out`: the previous curve was lost and the first part of the new one
/// left under its name. Now `out` is the old file or the new one, never a part.
///
/// The new file gets the old one's permission bits, or those a new file gets (`0666` less
/// the umask), not the temporary file's private `0600`; its owner is the writer. A symbolic
/// link stays a link to the replaced file. A target that is not a regular file
/// (`/dev/stdout`, a pipe) is written to directly, as is a file in a folder the user cannot
/// create files in: a rename would replace the device, and cannot be done in that folder.
fn replace_file(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;

    let existing = std::fs::metadata(out).ok();
    if existing.as_ref().is_some_and(|m| !m.is_file()) {
        return std::fs::write(out, bytes);
    }
    let (target, mut temp) = match temp_beside(out) {
        Ok(made) => made,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && existing.is_some() => {
            return std::fs::write(out, bytes);
        }
        Err(e) => return Err(e),
    };
    if let Some(old) = existing {
        temp.as_file().set_permissions(old.permissions())?;
    }
    temp.write_all(bytes)?;
    temp.persist(&target).map_err(|e| e.error)?;
    Ok(())
}

/// The file `out` names (a symbolic link resolved) and a new temporary file in its folder,
/// to be renamed over it.
fn temp_beside(out: &Path) -> std::io::Result<(PathBuf, tempfile::NamedTempFile)> {
    let target = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_owned());
    let folder = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".memocache-curve-").suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let temp = builder.tempfile_in(folder)?;
    Ok((target, temp))
}

/// The colour of each contender's curve (colour-blind-safe blue, orange, green).
fn color(contender: Contender) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    match contender {
        Contender::Memocache => RGBColor(0x1f, 0x77, 0xb4),
        Contender::Lru => RGBColor(0xe6, 0x7e, 0x22),
        Contender::Opt => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

/// The chart on the left, the legend in a panel on the right: curves fill every corner of the
/// plot on one trace or another, so a legend inside it always hides some of them.
fn render_svg(
    title: &str,
    curve: &Curve,
    requested: usize,
) -> Result<String, Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    const WIDTH: u32 = 900;
    const PANEL: u32 = 220;
    let (low, high) = curve
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(c, _)| c as f64))
        .fold((f64::MAX, f64::MIN), |(lo, hi), c| (lo.min(c), hi.max(c)));
    // A little room either side on the log axis; the `max` keeps a one-point curve's range
    // non-empty.
    let x_range = (low / 1.2)..(high * 1.2).max(low * 1.5);
    let marker = BLACK.mix(0.35).stroke_width(1);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.margin(10, 0, 0, 0).titled(title, ("sans-serif", 22))?;
        let (plot, panel) = root.split_horizontally(WIDTH - PANEL);

        let mut chart = ChartBuilder::on(&plot)
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range.log_scale(), 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("cache capacity (entries, log scale)")
            .y_desc("hit ratio (%)")
            .axis_desc_style(("sans-serif", 17))
            .label_style(("sans-serif", 14))
            .x_label_formatter(&|c| grouped(c.round() as u64))
            .y_label_formatter(&|r| format!("{r:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(requested as f64, 0.0), (requested as f64, 100.0)],
            marker,
        )))?;
        for (contender, points) in curve {
            chart.draw_series(
                LineSeries::new(
                    points.iter().map(|&(c, r)| (c as f64, r)),
                    color(*contender).stroke_width(2),
                )
                .point_size(3),
            )?;
        }

        // Legend: a line sample and the contender's hit ratio at the requested capacity.
        let text =
            TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        let small =
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        let mut y = 40;
        panel.draw(&Text::new(
            format!("hit ratio at {} entries", grouped(requested as u64)),
            (8, y),
            text.clone(),
        ))?;
        for (contender, points) in curve {
            y += 28;
            let at_requested = points
                .iter()
                .find(|&&(c, _)| c == requested)
                .map_or_else(String::new, |&(_, r)| format!("{r:.2} %"));
            panel.draw(&PathElement::new(
                vec![(8, y), (36, y)],
                color(*contender).stroke_width(2),
            ))?;
            panel.draw(&Text::new(contender.to_string(), (44, y), text.clone()))?;
            panel.draw(&Text::new(at_requested, (140, y), text.clone()))?;
        }
        y += 28;
        panel.draw(&PathElement::new(vec![(8, y), (36, y)], marker))?;
        panel.draw(&Text::new(
            format!("--capacity {}", grouped(requested as u64)),
            (44, y),
            text.clone(),
        ))?;
        y += 40;
        for line in [
            "OPT: Bélády's optimum, which",
            "knows the future; no cache",
            "can beat it.",
        ] {
            panel.draw(&Text::new(line, (8, y), small.clone()))?;
            y += 17;
        }
        root.present()?;
    }
    Ok(svg)
}

/// A spinner (`len` unknown) or bar on stderr, or a hidden one when stderr is not a terminal.
fn progress(len: Option<u64>, message: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (
            ProgressBar::new(len),
            "{msg} [{bar:30}] {percent}% {human_pos}/{human_len} requests, {rate}/s, eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {msg}: {human_pos} requests [{elapsed}]",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
            // Whole requests per second, grouped like the table (indicatif's own `per_sec`
            // prints fractions of a request).
            let _ = w.write_str(&grouped(state.per_sec() as u64));
        })
        .progress_chars("=> ");
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.with_style(style).with_message(message)
}

/// `1` → `1 entry`, `1234` → `1,234 entries`.
fn count_of_entries(n: usize) -> String {
    counted(n, "entry", "entries")
}

/// `n` with its noun, grouped, singular for one: a one-key trace read `1 unique keys`.
fn counted(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{} {many}", grouped(n as u64)),
    }
}

/// `133,996 requests, 7,075 unique keys`, for the first line and the curve's title.
fn trace_size(trace: &Trace) -> String {
    format!(
        "{}, {}",
        counted(trace.requests(), "request", "requests"),
        counted(trace.unique(), "unique key", "unique keys")
    )
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(text: &str) -> Capacity {
        parse_capacity(text).expect(text)
    }

    fn percent(text: &str) -> Capacity {
        Capacity::Percent(text.parse().expect(text))
    }

    #[test]
    fn capacities_parse_as_entries_or_percent() {
        assert_eq!(capacity("5000"), Capacity::Entries(5000));
        assert_eq!(capacity("1e3"), Capacity::Entries(1000));
        assert_eq!(capacity(" 10% "), percent("10"));
        assert_eq!(capacity("0.5%"), percent("0.5"));
        assert_eq!(capacity("100%"), percent("100"));
        assert_eq!(capacity("1e2%"), percent("100"));
        assert_eq!(
            capacity("18446744073709551615"),
            Capacity::Entries(usize::MAX)
        );
        for (bad, problem) in [
            ("", "no number given"),
            ("0", "less than 1"),
            ("-5", "a negative number"),
            ("abc", "'a' is not part of a number"),
            ("5k", "'k' is not part of a number"),
            ("1.5", "not a whole number"),
            ("0%", "zero"),
            ("-0%", "zero"),
            ("-1%", "a negative number"),
            ("100.5%", "more than 100%"),
            ("1e400%", "more than 100%"),
            ("nan%", "not a finite number"),
            ("inf%", "not a finite number"),
            ("%", "no number given"),
            ("5%%", "'%' is not part of a number"),
        ] {
            let err = parse_capacity(bad).expect_err(bad);
            assert_eq!(err, format!("{problem} (expected {CAPACITY})"), "{bad:?}");
        }
    }

    /// `--capacity 99999999999999999999` was taken as `usize::MAX` entries, and the run
    /// printed "capacity  18,446,744,073,709,551,615 entries", a figure nobody gave.
    #[test]
    fn a_capacity_past_the_largest_count_is_refused_not_clamped() {
        for huge in ["18446744073709551616", "99999999999999999999", "1e20"] {
            let err = parse_capacity(huge).expect_err(huge);
            assert!(
                err.starts_with("more than 18446744073709551615 ("),
                "{huge}: {err}"
            );
        }
    }

    #[test]
    fn percents_resolve_to_floor_of_the_unique_keys() {
        // The sizes SOURCES.md lists for sprite.trace.gz (7,075 unique keys).
        assert_eq!(percent("10").resolve(7075), Ok(707));
        assert_eq!(percent("0.3").resolve(7075), Ok(21));
        assert_eq!(percent("80").resolve(7075), Ok(5660));
        assert_eq!(Capacity::Entries(9).resolve(3), Ok(9));
        assert!(percent("0.001").resolve(7075).is_err());
    }

    /// `0.7%` of 11,000 unique keys is 77 entries, but `0.7 × 11000 / 100` in binary floating
    /// point is 76.999…, floored to 76: the run printed "76 entries (0.7% of the unique
    /// keys)". The percent is taken as the decimal it was written as.
    #[test]
    fn a_percent_resolves_exactly_as_the_decimal_written() {
        for (text, unique, entries) in [
            ("0.7%", 11_000, 77),
            ("2.3%", 11_000, 253),
            ("4.1%", 11_000, 451),
            ("0.57%", 10_000, 57),
            ("1e-1%", 7075, 7),
            (
                "99.99999999999999%",
                100_000_000_000_000_000,
                99_999_999_999_999_990,
            ),
            // More digits than an `f64` keeps, each counted.
            (
                "33.333333333333333333333333333333%",
                usize::MAX,
                6_148_914_691_236_517_204,
            ),
            ("100%", usize::MAX, usize::MAX),
        ] {
            assert_eq!(
                capacity(text).resolve(unique),
                Ok(entries),
                "{text} of {unique}"
            );
        }
        // Far below one entry of the largest trace, and not an overflow.
        assert!(percent("1e-30").resolve(usize::MAX).is_err());
        assert_eq!(percent("1e-17").resolve(usize::MAX), Ok(1));
    }

    #[test]
    fn a_negative_number_is_told_so_and_other_text_after_a_hyphen_is_no_number() {
        for negative in ["-5", "-99999999999999999999", "-1e3"] {
            let err = parse_capacity(negative).expect_err(negative);
            assert!(err.starts_with("a negative number ("), "{negative}: {err}");
        }
        assert!(
            parse_capacity("-0")
                .expect_err("-0")
                .starts_with("less than 1 (")
        );
        for not_a_number in ["-abc", "--", "-", "-5x", "--capacity"] {
            let err = parse_capacity(not_a_number).expect_err(not_a_number);
            assert!(
                err.contains("expected a whole number of entries"),
                "{not_a_number}: {err}"
            );
        }
    }

    #[test]
    fn counts_and_percents_read_as_written() {
        assert_eq!(count_of_entries(1), "1 entry");
        assert_eq!(count_of_entries(0), "0 entries");
        assert_eq!(count_of_entries(1234), "1,234 entries");
        // A one-key, one-request trace was `1 requests, 1 unique keys`.
        assert_eq!(counted(1, "unique key", "unique keys"), "1 unique key");
        assert_eq!(counted(1, "request", "requests"), "1 request");
        assert_eq!(
            percent("50").resolve(1),
            Err("capacity 50% of 1 unique key is less than one entry".to_owned())
        );
        let err = percent("1e-300").resolve(7075).expect_err("too small");
        assert_eq!(
            err,
            "capacity 1e-300% of 7,075 unique keys is less than one entry"
        );
    }

    #[test]
    fn curve_capacities_span_the_range_and_include_the_requested_one() {
        let caps = curve_capacities(7075, 707);
        assert_eq!(caps.first(), Some(&7));
        assert_eq!(caps.last(), Some(&5660));
        assert!(caps.contains(&707));
        assert!(caps.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(caps.len(), CURVE_POINTS + 1);
        // A tiny trace: the smallest fractions round to nothing and are dropped.
        let caps = curve_capacities(10, 3);
        assert!(caps.iter().all(|&c| (1..=8).contains(&c)));
        assert!(caps.contains(&3));
    }

    fn meminfo(text: Option<&str>) -> MemoryFiles {
        MemoryFiles {
            meminfo: text.map(str::to_owned),
            ..MemoryFiles::default()
        }
    }

    fn cgroup(limit: &str, usage: &str, stat: &str) -> CgroupFiles {
        let text = |t: &str| Some(t.to_owned()).filter(|t| t != "-");
        CgroupFiles {
            limit: text(limit),
            usage: text(usage),
            stat: text(stat),
        }
    }

    /// Where `/proc/meminfo` is missing, unreadable or has no `MemAvailable` line, the
    /// default is the fixed [`FALLBACK_MAX_REQUESTS`]: it was no limit at all.
    #[test]
    fn max_requests_default_to_a_fixed_limit_where_memory_is_not_known() {
        let info = "MemTotal:       8000000 kB\nMemAvailable:    2500000 kB\n";
        assert_eq!(
            default_max_requests(&meminfo(Some(info))),
            (102_400_000, Limit::Available(2_560_000_000))
        );
        for unknown in [
            None,
            Some(""),
            Some("MemTotal: 8000000 kB\n"),
            Some("MemAvailable: x"),
        ] {
            assert_eq!(
                default_max_requests(&meminfo(unknown)),
                (FALLBACK_MAX_REQUESTS, Limit::Fallback),
                "{unknown:?}"
            );
        }
        assert_eq!(
            FALLBACK_MAX_REQUESTS, 100_000_000,
            "as the --help text says"
        );
    }

    /// The refusal of a trace over a cgroup's figure said "the memory the cgroup's limit
    /// leaves (…, less than the system's MemAvailable)", though the binding limit may be a
    /// parent cgroup's (session 26) and `MemAvailable` may be unknown. It names the cgroup
    /// limits, and the comparison only where it holds.
    #[test]
    fn the_refusal_over_a_cgroup_figure_names_the_limits_of_the_cgroups() {
        assert_eq!(
            Limit::Cgroup(3 << 30).why(),
            ", as many as the memory the cgroup limits leave (3.0 GiB, less than the system's \
             MemAvailable where that is known) holds for a replay; --max-requests N sets \
             another limit"
        );
        assert_eq!(
            Limit::Available(1 << 29).why(),
            ", as many as the available memory (0.5 GiB) holds for a replay; --max-requests N \
             sets another limit"
        );
    }

    /// In a container `MemAvailable` is the host's: the default ignored the container's
    /// memory limit. What the cgroup limits leave (v2, else v1) counts where it is
    /// smaller, and is named as the figure used.
    #[test]
    fn max_requests_default_to_what_the_cgroup_limit_leaves_where_it_is_smaller() {
        let host = Some("MemAvailable:   62500000 kB\n");
        // 4 GiB, of which 1 GiB is used and 0.25 GiB of that inactive file cache.
        let v2 = cgroup(
            "4294967296\n",
            "1073741824\n",
            "anon 1\ninactive_file 268435456\n",
        );
        let room = 4_294_967_296 - 1_073_741_824 + 268_435_456;
        let files = MemoryFiles {
            v2: vec![v2],
            ..meminfo(host)
        };
        assert_eq!(
            default_max_requests(&files),
            ((room / BYTES_PER_REQUEST) as usize, Limit::Cgroup(room))
        );
        // v1, its "no limit" a page-rounded 2^63; the hierarchical inactive cache counts.
        let v1 = cgroup(
            "2147483648",
            "1000",
            "inactive_file 7\ntotal_inactive_file 500\n",
        );
        let files = MemoryFiles {
            v1: vec![v1],
            ..meminfo(host)
        };
        assert_eq!(
            default_max_requests(&files).1,
            Limit::Cgroup(2_147_483_648 - 500)
        );
        // No meminfo: the cgroup's figure still bounds the replay.
        let files = MemoryFiles {
            v2: vec![cgroup("1000000", "-", "-")],
            ..meminfo(None)
        };
        assert_eq!(
            default_max_requests(&files),
            (40_000, Limit::Cgroup(1_000_000))
        );
        // A usage over the limit leaves nothing: one request, never an underflow.
        let files = MemoryFiles {
            v2: vec![cgroup("1000", "5000", "-")],
            ..meminfo(host)
        };
        assert_eq!(default_max_requests(&files), (1, Limit::Cgroup(0)));
    }

    /// No limit (`max`, v1's huge number), a limit larger than `MemAvailable`, and files
    /// that do not parse leave `MemAvailable` as the figure; nothing panics.
    #[test]
    fn no_cgroup_limit_or_a_malformed_one_leaves_mem_available() {
        let host = Some("MemAvailable:   2500000 kB\n");
        let available = (102_400_000, Limit::Available(2_560_000_000));
        let v1_none = "9223372036854771712\n";
        for (v2, v1) in [
            (cgroup("max\n", "123456", "-"), cgroup("-", "-", "-")),
            (cgroup("-", "-", "-"), cgroup(v1_none, "1000", "-")),
            (
                cgroup("-", "-", "-"),
                cgroup("9223372036854710272", "1000", "-"),
            ),
            (cgroup("8589934592", "0", "-"), cgroup("-", "-", "-")),
            (cgroup("", "", ""), cgroup("-5", "1", "-")),
            (cgroup("4 GiB", "1", "-"), cgroup("0x1000", "-", "-")),
            (
                cgroup("99999999999999999999999", "1", "-"),
                cgroup("-", "-", "-"),
            ),
        ] {
            let files = MemoryFiles {
                v2: vec![v2],
                v1: vec![v1],
                ..meminfo(host)
            };
            assert_eq!(default_max_requests(&files), available, "{files:?}");
        }
        // A usage or statistics file that does not parse counts nothing used: the limit
        // alone bounds the room.
        let v2 = cgroup("1000000", "lots", "inactive_file many\ninactive_file\n\n");
        let files = MemoryFiles {
            v2: vec![v2],
            ..meminfo(host)
        };
        assert_eq!(default_max_requests(&files).1, Limit::Cgroup(1_000_000));
    }

    /// The process's own cgroup is read from `/proc/self/cgroup`: the `0::` line for v2, the
    /// line naming the `memory` controller for v1. A path that would leave the mount (`..`,
    /// seen outside a cgroup namespace's root), a relative one, or no such line gives none.
    #[test]
    fn the_own_cgroup_is_the_line_of_its_hierarchy() {
        use CgroupVersion::{V1, V2};
        let unified = "0::/system.slice/memocache.service\n";
        assert_eq!(
            own_cgroup(unified, V2),
            Some("/system.slice/memocache.service")
        );
        assert_eq!(own_cgroup(unified, V1), None);
        // A v1 host (the `memory` line among the others), with the v2 line of a hybrid setup.
        let v1 = "9:name=systemd:/\n5:cpu,cpuacct:/x\n4:memory:/process_api/ce8b\n0::/\n";
        assert_eq!(own_cgroup(v1, V1), Some("/process_api/ce8b"));
        assert_eq!(own_cgroup(v1, V2), Some("/"));
        assert_eq!(own_cgroup("7:hugetlb,memory:/a:b\n", V1), Some("/a:b"));
        for (text, version) in [
            ("", V2),
            ("", V1),
            ("garbage", V2),
            ("0::/../../host.slice\n", V2),
            ("0::/a/../b\n", V2),
            ("0::relative\n", V2),
            ("4:memory:/../x\n", V1),
            ("4:memoryless:/x\n", V1),
            ("1:name=memory:/x\n", V1),
        ] {
            assert_eq!(own_cgroup(text, version), None, "{text:?}");
        }
    }

    /// The cgroups whose limits bind: the process's own, then each parent up to the mount's
    /// root; the root alone (as before) where the own cgroup is not known or is the root.
    #[test]
    fn the_binding_cgroups_are_the_own_and_its_parents() {
        let mount = Path::new("/sys/fs/cgroup");
        let dirs: Vec<PathBuf> = [
            "/sys/fs/cgroup/user.slice/user-1000.slice",
            "/sys/fs/cgroup/user.slice",
            "/sys/fs/cgroup",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            cgroup_dirs(mount, Some("/user.slice/user-1000.slice")),
            dirs
        );
        assert_eq!(
            cgroup_dirs(mount, Some("/user.slice//user-1000.slice/")),
            dirs
        );
        for root_only in [None, Some("/")] {
            assert_eq!(cgroup_dirs(mount, root_only), vec![mount.to_path_buf()]);
        }
    }

    /// A parent's limit binds its children: the least room over the levels counts, and a
    /// level with no limit (`max`, or no files, as the host's root cgroup has none) none.
    #[test]
    fn the_least_room_of_a_cgroup_and_its_parents_counts() {
        let host = Some("MemAvailable:   62500000 kB\n");
        let levels = |v2| MemoryFiles {
            v2,
            ..meminfo(host)
        };
        // The service has no limit of its own; its slice has 1 GB, half of it used.
        let parent_binds = levels(vec![
            cgroup("max\n", "1000", "-"),
            cgroup("1000000000\n", "500000000\n", "inactive_file 0\n"),
            cgroup("-", "-", "-"),
        ]);
        assert_eq!(
            default_max_requests(&parent_binds).1,
            Limit::Cgroup(500_000_000)
        );
        // The child's own limit is the tighter one.
        let child_binds = levels(vec![
            cgroup("100000000\n", "1000", "-"),
            cgroup("1000000000\n", "500000000\n", "-"),
            cgroup("-", "-", "-"),
        ]);
        assert_eq!(
            default_max_requests(&child_binds).1,
            Limit::Cgroup(100_000_000 - 1000)
        );
    }

    /// The files are read from the process's cgroup and its parents under the mount: the
    /// limit of a slice above the process's cgroup, where only the root (no limit there)
    /// was read. A v1 mount that shows only the container's own cgroup, while
    /// `/proc/self/cgroup` gives the host's path, still finds the limit at the mount's root.
    #[test]
    fn cgroup_files_are_read_from_the_own_cgroup_and_its_parents() {
        let mount = tempfile::tempdir().expect("temp dir");
        let service = mount.path().join("system.slice").join("replay.service");
        std::fs::create_dir_all(&service).expect("cgroup dirs");
        std::fs::write(service.join("memory.max"), "max\n").expect("write");
        std::fs::write(service.join("memory.current"), "4096\n").expect("write");
        let slice = mount.path().join("system.slice");
        std::fs::write(slice.join("memory.max"), "2000000\n").expect("write");
        std::fs::write(slice.join("memory.current"), "1000\n").expect("write");
        let read = |own| MemoryFiles {
            v2: cgroup_levels(mount.path(), own, "memory.max", "memory.current"),
            ..meminfo(Some("MemAvailable:   62500000 kB\n"))
        };
        let files = read(Some("/system.slice/replay.service"));
        assert_eq!(files.v2.len(), 3);
        assert_eq!(
            default_max_requests(&files).1,
            Limit::Cgroup(2_000_000 - 1000)
        );
        // Not known: the root alone, which has no limit here.
        assert_eq!(
            default_max_requests(&read(None)).1,
            Limit::Available(64_000_000_000)
        );

        let container = tempfile::tempdir().expect("temp dir");
        std::fs::write(container.path().join("memory.limit_in_bytes"), "3000000").expect("write");
        let v1 = cgroup_levels(
            container.path(),
            Some("/docker/0123abcd"),
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
        );
        let files = MemoryFiles {
            v1,
            ..meminfo(None)
        };
        assert_eq!(default_max_requests(&files).1, Limit::Cgroup(3_000_000));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(133_996), "133,996");
        assert_eq!(grouped(12_729_495), "12,729,495");
    }
}
