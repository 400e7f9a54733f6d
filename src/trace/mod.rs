//! Access traces and exact reference policies, for measuring hit ratios.
//!
//! A cache's eviction policy is judged by its *request hit ratio* on real access streams, next
//! to an exact LRU (what most caches approximate) and Bélády's OPT (what no online policy can
//! beat). This module reads the public traces described in `../shared/traces/SOURCES.md` and
//! replays them through such policies; the `hit_ratio` benchmark and `memocache replay` are
//! built on it. It sits behind the `trace` cargo feature (on by default) so that users who only
//! embed the cache can drop the decompression dependencies.
//!
//! ## Reading traces
//!
//! [`TraceReader`] streams one trace as an iterator of `u64` keys; [`Trace`] loads a whole one
//! (OPT needs the future). The compression is told by the file's first bytes, then by its
//! extension ([`TraceReader::open_format`] gives the rules and why the content comes first),
//! or is given ([`TraceReader::open_as`]); [`TraceReader::from_stream`] does either for a stream
//! with no file to open (standard input); the record format is told by the file's name
//! ([`TraceFormat::detect`]) or given ([`TraceReader::open_format`], `open_as`):
//!
//! * [`TraceFormat::ArcLis`] — ARC `OLTP`, `P2`, `P3`, `P6` (`.lis.zst`): text
//!   `start count _ _`, the keys `start..start+count`.
//! * [`TraceFormat::Int64Be`] — `scarab-recs` (`.xz`), corda `trace_vaultservice` (`.gz`):
//!   big-endian `i64`.
//! * [`TraceFormat::Int32Be`] — cache2k `web07`, `web12`, `orm-night`, CloudPhysics `w106`
//!   (`.xz`): big-endian `i32`.
//! * [`TraceFormat::OracleGeneral`] — libCacheSim `*.oracleGeneral.bin`: 24-byte little-endian
//!   records, key = `obj_id`.
//! * [`TraceFormat::LirsText`] — LIRS `loop`, `gli`, `sprite`, … (`.trace.gz`): one decimal key
//!   per line, `*` lines skipped.
//!
//! Design choices:
//!
//! * **Pure-Rust decoders** — `flate2` on miniz_oxide, `lzma-rust2`, `ruzstd` — so the crate
//!   builds with no C toolchain and fast. They are slower than zlib/liblzma/libzstd, but
//!   decoding is a small part of a replay (P2's 12.7 M requests decode in about a second).
//! * **Streaming, in constant memory**: a reader never holds more than its buffers and the
//!   decoder's window, so `memocache replay` can count a trace larger than memory. A zstd
//!   frame's window is the size its header declares, up to 128 MiB (`ruzstd`'s limit, which
//!   is libzstd's default too), and is reserved when the frame starts, so a file of a few
//!   bytes can reserve that much; the pages cost nothing until output fills them. The shared
//!   traces' frames declare 2 MiB.
//! * **Errors, never panics**: a missing file, a name no rule matches, a file that is not of
//!   its compression (its magic number is checked at open, so a `.gz` file of text says it is
//!   not gzip rather than what the decoder makes of it), a file of a compression no decoder
//!   here reads (bzip2, lz4, compress, zip: told by its first bytes), a corrupt or truncated compressed
//!   stream (the xz check, gzip CRC and zstd frame checksum are verified), a binary
//!   trace ending mid-record, an unparsable line, an ARC line standing for more than
//!   [`TraceReader::MAX_ARC_RUN`] requests, or a trace read whole ([`Trace::load`],
//!   [`Trace::read`]) that does not fit in memory all give a [`TraceError`] naming the file
//!   and, where it applies, the line or byte offset.
//!
//! ## Simulating
//!
//! [`Lru`] (O(1) per request) and [`Opt`] (O(log capacity)) implement [`Policy`], the one-call
//! interface (`access(key) -> hit`) every contender of a replay is driven through. [`Opt`]
//! borrows the trace it was planned for rather than copying it; both reproduce the reference
//! numbers of `SOURCES.md` exactly (see `tests/trace_reference.rs`).
//! [`CachePolicy`] drives memocache's own [`Cache`](crate::Cache) the same way, with trace ids
//! mapped to keys by [`trace_key`].
//!
//! ```
//! use memocache::trace::{replay, Lru, Opt, Trace};
//!
//! // A loop over 4 keys: LRU with 3 slots always evicts the key needed next.
//! let trace = Trace::from_keys([1, 2, 3, 4].repeat(25));
//! let lru = replay(&mut Lru::new(3), trace.keys());
//! let opt = replay(&mut Opt::new(trace.keys(), 3), trace.keys());
//! assert_eq!(lru.hits, 0);
//! assert!(opt.hit_ratio() > 0.6);
//! ```

mod engine;
mod format;
mod read;
mod sim;

pub use engine::{CachePolicy, TRACE_KEY_PREFIX, trace_key};
pub use format::{Compression, TraceFormat};
pub use read::{Trace, TraceError, TraceReader};
pub use sim::{Lru, Opt, Policy, ReplayStats, replay};
