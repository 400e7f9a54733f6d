//! Content-addressed keys: [`CacheKey`].
//!
//! # Design
//!
//! A key is a *prefix* (a namespace such as `transcript` or `chunk`) and the 32-byte SHA-256
//! digest of whatever the cached value was computed from. The digest is kept as bytes, not as
//! the seed's 64-character hex string: it halves the memory, and comparing or hashing it is a
//! couple of word operations.
//!
//! Keys are cloned on hot paths and stored once per cache entry, so they must be small and
//! must not allocate. Prefixes are therefore *interned*: every distinct prefix string is stored
//! once for the life of the process and a key holds only its 16-bit number in the interner's
//! table, which makes a key 34 bytes and `Copy`. Equality compares the numbers. The interner
//! keeps at most [`MAX_PREFIXES`] (2^16) distinct prefixes, which is also what lets a number
//! fit in 16 bits, and means keys parsed from untrusted text cannot grow it without bound; past
//! that, new prefixes are refused with [`KeyError::TooManyPrefixes`]. Since a cell is never
//! given back, every constructor checks all its other inputs (and reads its input, for
//! [`CacheKey::from_reader`]) before it interns: a call that fails leaves the table as it
//! was. Reading a prefix's name back takes no lock: the table's cells are written once,
//! before their number is handed out. A snapshot load interns all of a file's prefixes at
//! once, all or none (`intern_all`): a file whose new prefixes do not all fit leaves the table
//! as it was. Because the table only grows, a prefix that does not fit now never will: a
//! reader refuses it before it reads anything ([`CacheKey::from_reader`]), and a snapshot
//! load as soon as the file's new prefixes outnumber the free cells (`prefix_demand`), not
//! after reading the whole input.
//!
//! SHA-256 is computed with `ring`, whose assembly picks SHA-NI, AVX or SSSE3 at run time (and
//! ARMv8 crypto instructions on aarch64). Hashing is the whole cost of deriving a key from
//! content, and on x86-64 CPUs without SHA-NI the pure-Rust `sha2` crate hashes at about half
//! the rate (see the `keys` bench and the README); with SHA-NI both run at the hardware's rate.
//!
//! # Derivations
//!
//! * [`CacheKey::from_content`] / [`CacheKey::from_reader`]: SHA-256 of the bytes (the reader is
//!   streamed through a fixed 64 KiB buffer, so multi-gigabyte files hash in constant memory).
//! * [`CacheKey::from_parts`]: byte-for-byte the seed's `sha256(f"{file_hash}:{language}")`
//!   for a lower-case hash and a tag in its canonical case, made unambiguous by validating
//!   both parts; other spellings give the canonical one's key (see the method).
//! * [`CacheKey::builder`]: several inputs, each *length-framed* so that no two different
//!   lists of parts hash the same bytes. The digest is SHA-256 over
//!   `b"memocache.parts.v1" || for each part: u64_le(len) || part`. Because every part carries
//!   its length, the encoding is prefix-free: `["ab", "c"]` and `["a", "bc"]` differ in their
//!   first length field, and `[]` and `[""]` differ in length.
//!
//! The derivations are separate from one another only through their inputs, since all are
//! SHA-256 of a byte string. A builder's bytes start with the tag `memocache.parts.v1` and a
//! `from_parts` string with a hex digit, so those two never meet. But `from_content` hashes
//! whatever it is given, so under the same prefix it meets both: content that is itself a
//! builder encoding (the tag, then framed parts) has that builder's key, and content that is
//! a `from_parts` string (`"<64 hex digits>:en"`, by the seed's design) has that key. Where
//! the content comes from someone else (uploaded files), keep content keys under prefixes of
//! their own, apart from `from_parts` and built keys, as the crate's own layers do (`file`
//! for content, `transcript` from `from_parts`, `chunk` and the job types' prefixes from
//! builders): a file keyed under `transcript` whose bytes are another file's `from_parts`
//! string would have, and could overwrite, that file's transcript.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::str::FromStr;
use std::sync::OnceLock;

use parking_lot::RwLock;
use ring::digest::{Context, SHA256};

/// The number of bytes in a digest.
pub const DIGEST_LEN: usize = 32;

/// The most distinct prefixes the process will intern.
pub const MAX_PREFIXES: usize = 65_536;

/// The longest prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// The longest `language` accepted by [`CacheKey::from_parts`].
pub const MAX_LANGUAGE_LEN: usize = 35;

/// The domain tag that starts every [`KeyBuilder`] encoding.
const PARTS_DOMAIN: &[u8] = b"memocache.parts.v1";

/// A content-addressed cache key: a prefix and a SHA-256 digest.
///
/// ```
/// use memocache::CacheKey;
///
/// let key = CacheKey::from_content(b"", "file")?;
/// assert_eq!(
///     key.to_string(),
///     "file:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// assert_eq!(key.to_string().parse::<CacheKey>()?, key);
/// # Ok::<(), memocache::KeyError>(())
/// ```
#[derive(Clone, Copy)]
pub struct CacheKey {
    digest: [u8; DIGEST_LEN],
    prefix: Prefix,
}

/// An interned prefix: its number in the process-wide table of prefixes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Prefix(u16);

/// Cells of the prefix table, in pages of 256 so that an unused page costs one pointer.
type NamePage = [OnceLock<&'static str>; 256];

/// The names of interned prefixes by number. A cell is set once, by [`intern`] under its lock
/// and before the number is used in any key, and is read without a lock.
static NAMES: [OnceLock<Box<NamePage>>; 256] = [const { OnceLock::new() }; 256];

impl Prefix {
    fn name(self) -> &'static str {
        let [page, cell] = self.0.to_be_bytes();
        match NAMES[usize::from(page)]
            .get()
            .and_then(|page| page[usize::from(cell)].get())
        {
            Some(name) => name,
            // A `Prefix` is only made by `intern`, after it has set the cell.
            None => unreachable!("prefix number {} was never interned", self.0),
        }
    }
}

/// Why a key could not be derived or parsed.
///
/// An error about an input keeps a bounded [`Rejected`] account of it, not the input: a key
/// string or a part read from an untrusted source may be megabytes long.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The prefix is empty, too long, or has a byte outside `[A-Za-z0-9._-]`.
    #[error("invalid key prefix {prefix}: {reason}{}", prefix.found())]
    InvalidPrefix {
        /// The prefix as given (lossily decoded), bounded.
        prefix: Rejected,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The interner already holds [`MAX_PREFIXES`] prefixes and this is a new one (for a
    /// snapshot load: the file's new prefixes do not all fit, and none was interned).
    #[error("too many distinct key prefixes: at most {MAX_PREFIXES} per process")]
    TooManyPrefixes,
    /// `file_hash` is not exactly 64 hexadecimal digits.
    #[error(
        "invalid file hash {file_hash}: expected exactly 64 hexadecimal digits{}",
        file_hash.found()
    )]
    InvalidFileHash {
        /// The hash as given, bounded.
        file_hash: Rejected,
    },
    /// `language` is empty, longer than 35 characters, or not `[A-Za-z0-9_-]`.
    #[error(
        "invalid language {language}: expected 1 to {MAX_LANGUAGE_LEN} ASCII letters, digits, \
         '-' or '_'{}",
        language.found()
    )]
    InvalidLanguage {
        /// The language as given, bounded.
        language: Rejected,
    },
    /// A key string had no `:` between prefix and digest.
    #[error("invalid key {input}: expected \"prefix:<64 hex digits>\", found no ':'")]
    MissingSeparator {
        /// The text that was parsed, bounded.
        input: Rejected,
    },
    /// The digest part of a key string is not 64 hexadecimal digits.
    #[error(
        "invalid key digest {digest}: expected exactly 64 hexadecimal digits{}",
        digest.found()
    )]
    InvalidDigest {
        /// The digest text, bounded.
        digest: Rejected,
    },
    /// Reading the content failed.
    #[error("reading content to hash failed: {0}")]
    Io(#[from] io::Error),
}

/// The most bytes of a refused input a [`Rejected`] keeps: twice a digest's 64 hex digits, so
/// that any prefix, hash, digest or language that is wrong by its characters is shown whole.
pub const MAX_EXCERPT_LEN: usize = 128;

/// A refused input, as a [`KeyError`] keeps it: its length, the first character that is not
/// allowed in it (if one is not), and an excerpt of at most [`MAX_EXCERPT_LEN`] bytes — the
/// whole input if it fits, else a window around that character, or its start. An error about
/// a multi-megabyte input is thus a few hundred bytes, and still says what is wrong.
///
/// Displayed as the excerpt, quoted and escaped, then its place in the input when it is not
/// all of it (`"aaa…" (bytes 0..128 of 5000000)`), or the length when no character is at
/// fault (`"abc" (3 bytes)`).
///
/// ```
/// use memocache::{CacheKey, KeyError};
///
/// let huge = format!("{}:{}", "p".repeat(5_000_000), "0".repeat(64));
/// let err = huge.parse::<CacheKey>().unwrap_err();
/// let KeyError::InvalidPrefix { prefix, .. } = &err else { panic!("{err}") };
/// assert_eq!((prefix.len(), prefix.excerpt().len()), (5_000_000, 128));
/// assert!(err.to_string().len() < 300, "{err}");
///
/// let err = CacheKey::from_parts(&"ab".repeat(32), "en US", "transcript").unwrap_err();
/// assert!(err.to_string().ends_with("; found ' ' at byte 2"), "{err}");
/// # Ok::<(), KeyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    excerpt: Box<str>,
    start: usize,
    len: usize,
    bad: Option<(usize, char)>,
}

impl Rejected {
    /// `input`, bounded, with its first character that `allowed` refuses.
    fn new(input: &str, allowed: impl Fn(char) -> bool) -> Rejected {
        let bad = input.char_indices().find(|&(_, c)| !allowed(c));
        let (start, end) = if input.len() <= MAX_EXCERPT_LEN {
            (0, input.len())
        } else {
            // A window centred on the bad character, or the start; moved in to whole
            // characters, so it may be up to three bytes short at either end.
            let centre = bad.map_or(0, |(at, _)| at.saturating_sub(MAX_EXCERPT_LEN / 2));
            let start = centre.min(input.len() - MAX_EXCERPT_LEN);
            let start = input.ceil_char_boundary(start);
            (start, input.floor_char_boundary(start + MAX_EXCERPT_LEN))
        };
        Rejected {
            excerpt: input[start..end].into(),
            start,
            len: input.len(),
            bad,
        }
    }

    /// At most [`MAX_EXCERPT_LEN`] bytes of the input, from byte [`start`](Self::start).
    pub fn excerpt(&self) -> &str {
        &self.excerpt
    }

    /// Where the excerpt starts in the input, in bytes.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The length of the whole input, in bytes.
    #[allow(clippy::len_without_is_empty)] // Of the input, not of this account of it.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the excerpt is the whole input.
    pub fn is_whole(&self) -> bool {
        self.excerpt.len() == self.len
    }

    /// The first character that is not allowed and its offset in the input, in bytes; `None`
    /// when every character is allowed and the length is what is wrong.
    pub fn bad_char(&self) -> Option<(usize, char)> {
        self.bad
    }

    /// `"; found {char} at byte {n}"` when a character is at fault, else nothing.
    fn found(&self) -> impl fmt::Display + '_ {
        fmt::from_fn(move |f| match self.bad {
            Some((at, c)) => write!(f, "; found {c:?} at byte {at}"),
            None => Ok(()),
        })
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.excerpt)?;
        if !self.is_whole() {
            let end = self.start + self.excerpt.len();
            write!(f, " (bytes {}..{end} of {})", self.start, self.len)
        } else if self.bad.is_none() {
            write!(f, " ({} bytes)", self.len)
        } else {
            Ok(())
        }
    }
}

/// Whether `c` may be in a key prefix. (A byte of UTF-8 above ASCII, as a `char`, may not.)
fn prefix_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Puts a language tag (checked: ASCII letters, digits, `-` and `_`) in the case RFC 5646
/// section 2.1.1 recommends; see [`CacheKey::from_parts`].
fn canonical_tag_case(tag: &mut [u8]) {
    let mut in_extension = false;
    for (i, subtag) in tag.split_mut(|&b| b == b'-' || b == b'_').enumerate() {
        subtag.make_ascii_lowercase();
        // A singleton starts an extension or private use even as the first subtag
        // (`x-ab`, `i-klingon`): what follows it stays lower case.
        match subtag.len() {
            _ if in_extension => {}
            1 => in_extension = true,
            _ if i == 0 => {}
            2 => subtag.make_ascii_uppercase(),
            4 => subtag[0].make_ascii_uppercase(),
            _ => {}
        }
    }
}

/// Whether `c` may be in a `from_parts` language.
fn language_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
}

impl KeyError {
    /// [`KeyError::InvalidPrefix`] for `prefix`, failing for `reason`.
    pub(crate) fn invalid_prefix(prefix: &str, reason: &'static str) -> KeyError {
        KeyError::InvalidPrefix {
            prefix: Rejected::new(prefix, prefix_char),
            reason,
        }
    }
}

impl CacheKey {
    /// The key of `content` under `prefix`: SHA-256 of the bytes.
    ///
    /// The prefix must be 1–64 bytes of ASCII letters, digits, `.`, `_` or `-`
    /// ([`KeyError::InvalidPrefix`] otherwise). The seed took any string, so a `:` in a prefix
    /// made its `prefix:hash` form ambiguous; here that form always parses back
    /// ([`FromStr`]).
    pub fn from_content(content: &[u8], prefix: &str) -> Result<CacheKey, KeyError> {
        let prefix = intern(prefix)?;
        Ok(CacheKey {
            digest: digest_bytes(ring::digest::digest(&SHA256, content)),
            prefix,
        })
    }

    /// The key of everything `reader` yields, streamed in constant memory.
    ///
    /// Gives the same key as [`CacheKey::from_content`] over the same bytes. Reads interrupted
    /// by a signal are retried; any other read error is returned, and so is a read that
    /// claims more bytes than it was given room for (an [`io::ErrorKind::InvalidData`] error).
    pub fn from_reader(mut reader: impl Read, prefix: &str) -> Result<CacheKey, KeyError> {
        // Checked before the read, interned after it: a failed read must not take a cell of
        // the process-wide table. A new prefix meeting a full table is refused before the
        // read, not after hashing a file in vain: the table never frees a cell.
        check_prefix(prefix)?;
        let (missing, free) = prefix_demand(&[prefix]);
        if missing > free {
            return Err(KeyError::TooManyPrefixes);
        }
        let mut hasher = Context::new(&SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                // `Read` promises `n <= buf.len()`, but the reader is the caller's code: one
                // that claims more is an error, not a slice out of range.
                Ok(n) => match buf.get(..n) {
                    Some(read) => hasher.update(read),
                    None => {
                        return Err(KeyError::Io(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "the reader said {n} bytes read into a buffer of {}",
                                buf.len()
                            ),
                        )));
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(KeyError::Io(e)),
            }
        }
        Ok(CacheKey {
            digest: digest_bytes(hasher.finish()),
            prefix: intern(prefix)?,
        })
    }

    /// The seed's key for a file and a language: SHA-256 of `"{file_hash}:{language}"`.
    ///
    /// `file_hash` must be exactly 64 hex digits. `language` must be 1–35 ASCII letters,
    /// digits, `-` or `_`. With both parts constrained like this the `:` cannot be confused
    /// with either part, so the combined string is unambiguous.
    ///
    /// Spellings that differ only in case give one key. The hash is lower-cased (a hex
    /// digest's case means nothing). Language tags are case-insensitive (BCP 47, RFC 5646
    /// section 2.1.1), so the tag is put in the case that section recommends before hashing:
    /// the first subtag in lower case, a later two-letter subtag (a region) in upper case, a
    /// later four-letter one (a script) in title case, and everything else, and everything
    /// after a one-character subtag (an extension, or private use: `x-ab` as a whole tag
    /// too), in lower case; `_` separates subtags as
    /// `-` does, and is kept. So `"en"` and `"EN"` name one transcript, as do `"pt-br"` and
    /// `"pt-BR"`, and a tag written in that case, as the seed's callers write them, hashes
    /// exactly as the seed hashes it. Other spellings of a tag stay apart: `"en_US"` is not
    /// `"en-US"`.
    ///
    /// Differences from the seed, which took any strings and hashed them as given: parts it
    /// accepted that fail these checks are errors here, and a part in another case gives the
    /// key of its canonical spelling, where the seed gave the same file or language a second
    /// key. (Earlier versions hashed the language as given: a key derived by one from a
    /// tag in another case, and kept in a snapshot, is not found by the same call now — a
    /// miss, never a wrong value.)
    ///
    /// ```
    /// use memocache::CacheKey;
    /// let hash = "AB".repeat(32);
    /// let key = CacheKey::from_parts(&hash, "PT-br", "transcript")?;
    /// let seed = format!("{}:pt-BR", "ab".repeat(32));
    /// assert_eq!(key, CacheKey::from_content(seed.as_bytes(), "transcript")?);
    /// assert!(CacheKey::from_parts("abc", "en", "transcript").is_err());
    /// # Ok::<(), memocache::KeyError>(())
    /// ```
    pub fn from_parts(file_hash: &str, language: &str, prefix: &str) -> Result<CacheKey, KeyError> {
        // Both parts are checked before the prefix is interned, so that a refused call does
        // not take a cell of the process-wide table.
        if file_hash.len() != 2 * DIGEST_LEN || !file_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::InvalidFileHash {
                file_hash: Rejected::new(file_hash, |c| c.is_ascii_hexdigit()),
            });
        }
        let language_ok = (1..=MAX_LANGUAGE_LEN).contains(&language.len())
            && language.bytes().all(|b| language_char(char::from(b)));
        if !language_ok {
            return Err(KeyError::InvalidLanguage {
                language: Rejected::new(language, language_char),
            });
        }
        // `"{file_hash}:{language}"` in canonical case, in one buffer on the stack: the checks
        // above bound both lengths, so deriving a key allocates nothing.
        const HASH_LEN: usize = 2 * DIGEST_LEN;
        let mut seed = [0u8; HASH_LEN + 1 + MAX_LANGUAGE_LEN];
        let len = HASH_LEN + 1 + language.len();
        seed[..HASH_LEN].copy_from_slice(file_hash.as_bytes());
        seed[..HASH_LEN].make_ascii_lowercase();
        seed[HASH_LEN] = b':';
        seed[HASH_LEN + 1..len].copy_from_slice(language.as_bytes());
        canonical_tag_case(&mut seed[HASH_LEN + 1..len]);
        let mut hasher = Context::new(&SHA256);
        hasher.update(&seed[..len]);
        Ok(CacheKey {
            digest: digest_bytes(hasher.finish()),
            prefix: intern(prefix)?,
        })
    }

    /// [`CacheKey::from_parts`] with the prefix `"transcript"`.
    pub fn transcript(file_hash: &str, language: &str) -> Result<CacheKey, KeyError> {
        CacheKey::from_parts(file_hash, language, "transcript")
    }

    /// A builder for a key over several length-framed parts (see the module docs).
    ///
    /// ```
    /// use memocache::CacheKey;
    /// let a = CacheKey::builder("summary")?.part("ab").part("c").finish();
    /// let b = CacheKey::builder("summary")?.part("a").part("bc").finish();
    /// assert_ne!(a, b);
    /// # Ok::<(), memocache::KeyError>(())
    /// ```
    pub fn builder(prefix: &str) -> Result<KeyBuilder, KeyError> {
        let prefix = intern(prefix)?;
        let mut hasher = Context::new(&SHA256);
        hasher.update(PARTS_DOMAIN);
        Ok(KeyBuilder { hasher, prefix })
    }

    /// A key from an already computed digest.
    pub fn from_digest(digest: [u8; DIGEST_LEN], prefix: &str) -> Result<CacheKey, KeyError> {
        Ok(CacheKey {
            digest,
            prefix: intern(prefix)?,
        })
    }

    /// A key from a digest and a prefix [`intern_all`] returned.
    pub(crate) fn from_interned(digest: [u8; DIGEST_LEN], prefix: Prefix) -> CacheKey {
        CacheKey { digest, prefix }
    }

    /// The prefix (namespace) of the key.
    pub fn prefix(&self) -> &'static str {
        self.prefix.name()
    }

    /// The prefix's number in this process's interner: equal numbers mean equal prefixes.
    /// Not stable across processes; for hashing.
    pub(crate) fn prefix_number(&self) -> u16 {
        self.prefix.0
    }

    /// The 32-byte SHA-256 digest.
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    /// The digest as 64 lower-case hex digits.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

/// Builds a [`CacheKey`] over several inputs; see [`CacheKey::builder`].
#[derive(Clone)]
pub struct KeyBuilder {
    hasher: Context,
    prefix: Prefix,
}

impl KeyBuilder {
    /// Appends one part, framed by its length.
    #[must_use]
    pub fn part(mut self, part: impl AsRef<[u8]>) -> KeyBuilder {
        let part = part.as_ref();
        self.hasher.update(&(part.len() as u64).to_le_bytes());
        self.hasher.update(part);
        self
    }

    /// The key of the parts appended so far.
    pub fn finish(self) -> CacheKey {
        CacheKey {
            digest: digest_bytes(self.hasher.finish()),
            prefix: self.prefix,
        }
    }
}

impl fmt::Debug for KeyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyBuilder")
            .field("prefix", &self.prefix.name())
            .finish_non_exhaustive()
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &CacheKey) -> bool {
        // Interned: equal prefixes have the same number.
        self.digest == other.digest && self.prefix == other.prefix
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
        self.prefix.hash(state);
    }
}

impl PartialOrd for CacheKey {
    fn partial_cmp(&self, other: &CacheKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CacheKey {
    fn cmp(&self, other: &CacheKey) -> std::cmp::Ordering {
        self.prefix
            .name()
            .cmp(other.prefix.name())
            .then_with(|| self.digest.cmp(&other.digest))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = [0u8; 2 * DIGEST_LEN];
        // Cannot fail: the buffer is exactly twice the digest length.
        hex::encode_to_slice(self.digest, &mut hex).map_err(|_| fmt::Error)?;
        f.write_str(self.prefix.name())?;
        f.write_str(":")?;
        // Hex digits are ASCII, so this is always valid UTF-8.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

impl FromStr for CacheKey {
    type Err = KeyError;

    /// Parses `prefix:<64 hex digits>`; hex in either case.
    fn from_str(s: &str) -> Result<CacheKey, KeyError> {
        let Some((prefix, digest_hex)) = s.split_once(':') else {
            return Err(KeyError::MissingSeparator {
                input: Rejected::new(s, |_| true),
            });
        };
        let mut digest = [0u8; DIGEST_LEN];
        if digest_hex.len() != 2 * DIGEST_LEN
            || hex::decode_to_slice(digest_hex, &mut digest).is_err()
        {
            return Err(KeyError::InvalidDigest {
                digest: Rejected::new(digest_hex, |c| c.is_ascii_hexdigit()),
            });
        }
        CacheKey::from_digest(digest, prefix)
    }
}

impl serde::Serialize for CacheKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CacheKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CacheKey, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = CacheKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cache key \"prefix:<64 hex digits>\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CacheKey, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The 32 bytes of a SHA-256 digest.
fn digest_bytes(digest: ring::digest::Digest) -> [u8; DIGEST_LEN] {
    let mut bytes = [0u8; DIGEST_LEN];
    // Cannot panic: a digest made with `SHA256` is always exactly 32 bytes long.
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// Why `prefix` cannot be a key prefix, or `None` if it can. The one statement of the rule:
/// interning applies it, and a snapshot load applies it to every prefix of a file before it
/// interns any of them.
pub(crate) fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        Some("it is empty")
    } else if prefix.len() > MAX_PREFIX_LEN {
        Some("it is longer than 64 bytes")
    } else if !prefix.bytes().all(|b| prefix_char(char::from(b))) {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    }
}

/// The process-wide map from interned prefix to number. Numbers are handed out in order under
/// its write lock, so the map's length is the next number.
fn table() -> &'static RwLock<HashMap<&'static str, Prefix>> {
    static INTERNED: OnceLock<RwLock<HashMap<&'static str, Prefix>>> = OnceLock::new();
    INTERNED.get_or_init(Default::default)
}

/// Returns `prefix`'s number, interning it if it is new; `map` is the table, write-locked.
/// The caller has checked the prefix.
fn get_or_add(map: &mut HashMap<&'static str, Prefix>, prefix: &str) -> Result<Prefix, KeyError> {
    if let Some(&found) = map.get(prefix) {
        return Ok(found);
    }
    let number = u16::try_from(map.len()).map_err(|_| KeyError::TooManyPrefixes)?;
    // Deliberate, bounded leak: interned prefixes live for the whole process.
    let name: &'static str = Box::leak(prefix.to_owned().into_boxed_str());
    let [page, cell] = number.to_be_bytes();
    let page =
        NAMES[usize::from(page)].get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
    // Numbers are handed out in order under the write lock: the cell is unset.
    let _ = page[usize::from(cell)].set(name);
    map.insert(name, Prefix(number));
    Ok(Prefix(number))
}

/// [`prefix_problem`] as an error.
fn check_prefix(prefix: &str) -> Result<(), KeyError> {
    match prefix_problem(prefix) {
        Some(reason) => Err(KeyError::invalid_prefix(prefix, reason)),
        None => Ok(()),
    }
}

/// Checks a prefix and returns its number in the process-wide table.
///
/// A constructor calls it only once nothing else can fail, so that a refused call leaves
/// the table as it was: the table is bounded ([`MAX_PREFIXES`]) and never shrinks.
fn intern(prefix: &str) -> Result<Prefix, KeyError> {
    check_prefix(prefix)?;

    thread_local! {
        // Most threads derive keys under one or two prefixes: skip the shared lock for them.
        static LAST: std::cell::Cell<Option<(&'static str, Prefix)>> = const { std::cell::Cell::new(None) };
    }
    if let Some((_, last)) = LAST.get().filter(|(name, _)| *name == prefix) {
        return Ok(last);
    }
    let interned = table();
    let found = interned.read().get(prefix).copied();
    let found = match found {
        Some(found) => found,
        None => get_or_add(&mut interned.write(), prefix)?,
    };
    LAST.set(Some((found.name(), found)));
    Ok(found)
}

/// `prefix`'s number in the process-wide table, interning it if need be: for a caller that
/// compares keys' prefixes with a fixed one by number ([`CacheKey::prefix_number`]).
pub(crate) fn prefix_number_of(prefix: &str) -> Result<u16, KeyError> {
    intern(prefix).map(|found| found.0)
}

/// `prefix`'s number if it is interned, interning nothing. No key can have a prefix that is
/// not interned, so a snapshot load asks this to find which of a file's keys a cache may
/// already hold while it reads the file, before the file has checked out and may intern.
pub(crate) fn interned(prefix: &str) -> Option<Prefix> {
    table().read().get(prefix).copied()
}

/// Of `prefixes` (distinct), how many the table does not hold, and how many free cells it has,
/// read under one hold of its lock.
///
/// The table only grows, so once more are missing than are free, interning them all
/// ([`intern_all`]) fails whenever it is tried: another thread can intern some of them, but
/// each one it interns takes a free cell too. A caller that learns prefixes as it reads (a
/// snapshot load) thus refuses its input as soon as this says so, with no chance of refusing
/// one that would have fit.
pub(crate) fn prefix_demand<S: AsRef<str>>(prefixes: &[S]) -> (usize, usize) {
    let map = table().read();
    let missing = prefixes
        .iter()
        .filter(|prefix| !map.contains_key(prefix.as_ref()))
        .count();
    (missing, MAX_PREFIXES.saturating_sub(map.len()))
}

/// Interns every one of `prefixes` or none of them, and returns their numbers in order.
///
/// For a snapshot load, which needs all of a file's prefixes: interning them one by one
/// could intern some and then meet a full table, leaving the ones before it in the table for
/// the life of the process although the load failed. Here the prefixes not yet interned are
/// counted and, only if they all fit, added, all under one hold of the write lock, so another
/// thread interning meanwhile cannot take the room between the count and the additions.
///
/// On error, the index in `prefixes` of the prefix at fault (the first invalid one, or the
/// first new one when they do not all fit) and why; nothing was interned.
pub(crate) fn intern_all<S: AsRef<str>>(prefixes: &[S]) -> Result<Vec<Prefix>, (usize, KeyError)> {
    for (index, prefix) in prefixes.iter().enumerate() {
        let prefix = prefix.as_ref();
        if let Some(reason) = prefix_problem(prefix) {
            return Err((index, KeyError::invalid_prefix(prefix, reason)));
        }
    }
    let interned = table();
    let known: Option<Vec<Prefix>> = {
        let map = interned.read();
        prefixes
            .iter()
            .map(|p| map.get(p.as_ref()).copied())
            .collect()
    };
    if let Some(known) = known {
        return Ok(known);
    }
    let mut map = interned.write();
    // Distinct new prefixes: a name listed twice takes one number.
    let mut new = std::collections::HashSet::new();
    let mut first_new = None;
    for (index, prefix) in prefixes.iter().enumerate() {
        let prefix = prefix.as_ref();
        if !map.contains_key(prefix) && new.insert(prefix) {
            first_new.get_or_insert(index);
        }
    }
    if map.len() + new.len() > MAX_PREFIXES {
        return Err((first_new.unwrap_or(0), KeyError::TooManyPrefixes));
    }
    // Cannot fail: every new prefix fits, checked under this same lock.
    prefixes
        .iter()
        .enumerate()
        .map(|(index, p)| get_or_add(&mut map, p.as_ref()).map_err(|e| (index, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `prefix` holds a cell of the process-wide table. Each test uses prefixes of
    /// its own, so tests running in parallel do not disturb the answer.
    fn interned(prefix: &str) -> bool {
        table().read().contains_key(prefix)
    }

    #[test]
    fn a_refused_from_parts_call_interns_nothing() {
        let hash = "ab".repeat(32);
        let prefix = "key-test.from-parts";
        let err = CacheKey::from_parts("not a hash", "en", prefix).unwrap_err();
        assert!(matches!(err, KeyError::InvalidFileHash { .. }), "{err:?}");
        let err = CacheKey::from_parts(&hash, "no spaces", prefix).unwrap_err();
        assert!(matches!(err, KeyError::InvalidLanguage { .. }), "{err:?}");
        assert!(!interned(prefix), "a refused call took a cell");

        let key = CacheKey::from_parts(&hash, "en", prefix).expect("valid");
        assert_eq!(key.prefix(), prefix);
        assert!(interned(prefix));
    }

    /// A reader that fails, counting how often it was asked.
    struct Failing(usize);

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            self.0 += 1;
            Err(io::Error::other("disk gone"))
        }
    }

    #[test]
    fn a_failed_from_reader_call_interns_nothing_and_a_bad_prefix_reads_nothing() {
        let prefix = "key-test.from-reader";
        let err = CacheKey::from_reader(Failing(0), prefix).unwrap_err();
        assert!(matches!(err, KeyError::Io(_)), "{err:?}");
        assert!(!interned(prefix), "a failed read took a cell");

        let mut reader = Failing(0);
        let err = CacheKey::from_reader(&mut reader, "bad prefix").unwrap_err();
        assert!(matches!(err, KeyError::InvalidPrefix { .. }), "{err:?}");
        assert_eq!(reader.0, 0, "the prefix is checked before anything is read");

        let key = CacheKey::from_reader(&b"abc"[..], prefix).expect("valid");
        assert_eq!(key, CacheKey::from_content(b"abc", prefix).expect("valid"));
        assert!(interned(prefix));
    }

    #[test]
    fn a_refused_key_string_interns_nothing() {
        let prefix = "key-test.from-str";
        let err = format!("{prefix}:xyz").parse::<CacheKey>().unwrap_err();
        assert!(matches!(err, KeyError::InvalidDigest { .. }), "{err:?}");
        assert!(!interned(prefix));
    }

    /// Key strings: either case of hex parses to one key, written back in lower case, through
    /// `Display`/`FromStr` and serde alike; every malformed string is the error that names
    /// its fault, never a panic.
    #[test]
    fn key_strings_round_trip_and_malformed_ones_are_errors() {
        let lower = "0123456789abcdef".repeat(4);
        let key: CacheKey = format!("key-test.parse:{lower}").parse().expect("valid");
        let upper: CacheKey = format!("key-test.parse:{}", lower.to_ascii_uppercase())
            .parse()
            .expect("upper-case hex is accepted");
        assert_eq!(upper, key);
        assert_eq!(upper.to_string(), format!("key-test.parse:{lower}"));
        assert_eq!(key.digest_hex(), lower);

        let json = serde_json::to_string(&key).expect("serializes");
        assert_eq!(json, format!("\"key-test.parse:{lower}\""));
        assert_eq!(
            serde_json::from_str::<CacheKey>(&json).expect("parses"),
            key
        );
        let bytes = crate::codec::encode(&key).expect("encodes");
        assert_eq!(
            crate::codec::decode::<CacheKey>(&bytes).expect("decodes"),
            key
        );
        assert!(serde_json::from_str::<CacheKey>("42").is_err());
        assert!(serde_json::from_str::<CacheKey>("\"key-test.parse:00\"").is_err());

        let digest = |s: &str| matches!(s.parse::<CacheKey>(), Err(KeyError::InvalidDigest { .. }));
        let prefix = |s: &str| matches!(s.parse::<CacheKey>(), Err(KeyError::InvalidPrefix { .. }));
        assert!(digest(&format!("p:{}", &lower[1..])), "63 digits");
        assert!(digest(&format!("p:{lower}0")), "65 digits");
        assert!(digest(&format!("p:0x{}", &lower[2..])), "a 0x prefix");
        assert!(digest(&format!("p:{}g", &lower[1..])), "a non-hex digit");
        assert!(digest(&format!("p:{lower}\n")), "trailing whitespace");
        assert!(
            digest(&format!("p:{}", "é".repeat(32))),
            "64 bytes, not digits"
        );
        assert!(digest(&format!("a:b:{lower}")), "a second ':'");
        assert!(digest("p:"), "no digest");
        assert!(prefix(&format!(":{lower}")), "no prefix");
        assert!(prefix(&format!(" p:{lower}")), "leading whitespace");
        assert!(prefix(&format!(
            "{}:{lower}",
            "p".repeat(MAX_PREFIX_LEN + 1)
        )));
        assert!(matches!(
            lower.parse::<CacheKey>(),
            Err(KeyError::MissingSeparator { .. })
        ));
        assert!(matches!(
            "".parse::<CacheKey>(),
            Err(KeyError::MissingSeparator { .. })
        ));
    }

    /// An error about a huge input stays small and still names the fault: each input a
    /// constructor or the parser refuses was copied whole into the error, so a bad
    /// multi-megabyte key string made a multi-megabyte error.
    #[test]
    fn errors_about_huge_inputs_are_small_and_name_the_fault() {
        const HUGE: usize = 4 << 20;
        let hex = "0".repeat(64);
        let mut language = "e".repeat(HUGE);
        language.replace_range(3_000_000..3_000_001, " ");
        let cases: [(KeyError, String); 7] = [
            (
                format!("{}:{hex}", "p".repeat(HUGE))
                    .parse::<CacheKey>()
                    .unwrap_err(),
                format!("(bytes 0..128 of {HUGE}): it is longer than 64 bytes"),
            ),
            (
                "p".repeat(HUGE).parse::<CacheKey>().unwrap_err(),
                format!("(bytes 0..128 of {HUGE}): expected"),
            ),
            (
                format!("p:{}", "0".repeat(HUGE))
                    .parse::<CacheKey>()
                    .unwrap_err(),
                format!("(bytes 0..128 of {HUGE}): expected exactly 64"),
            ),
            (
                format!("p:{}g", "0".repeat(HUGE))
                    .parse::<CacheKey>()
                    .unwrap_err(),
                format!("found 'g' at byte {HUGE}"),
            ),
            (
                CacheKey::from_parts(&"a".repeat(HUGE), "en", "p").unwrap_err(),
                "invalid file hash \"aaaa".to_owned(),
            ),
            (
                CacheKey::from_parts(&hex, &language, "p").unwrap_err(),
                "eeee eeee".to_owned(),
            ),
            (
                CacheKey::from_content(b"", &"\u{e9}".repeat(HUGE / 2)).unwrap_err(),
                format!("of {HUGE}): it is longer than 64 bytes; found '\u{e9}' at byte 0"),
            ),
        ];
        for (err, names) in cases {
            let shown = err.to_string();
            let start: String = shown.chars().take(200).collect();
            assert!(shown.len() < 1_000, "{} bytes: {start}", shown.len());
            assert!(format!("{err:?}").len() < 1_000, "{start}");
            assert!(shown.contains(&names), "{start} does not contain {names}");
        }
    }

    /// The bounded account of an input: whole when it fits, with its length when no character
    /// is at fault; else a window of at most 128 bytes on whole characters, around the first
    /// bad character, or at the start.
    #[test]
    fn a_rejected_input_is_shown_whole_when_short_and_around_its_fault_when_long() {
        let err = CacheKey::from_parts("abc", "en", "p").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid file hash \"abc\" (3 bytes): expected exactly 64 hexadecimal digits"
        );
        let err = CacheKey::from_content(b"", "ab c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid key prefix \"ab c\": only ASCII letters, digits, '.', '_' and '-' are \
             allowed; found ' ' at byte 2"
        );

        // 'é' is two bytes: the window ends on a whole character, one byte short here.
        let text = format!("a{}", "é".repeat(1_000));
        let KeyError::MissingSeparator { input } = text.parse::<CacheKey>().unwrap_err() else {
            panic!("not a separator error");
        };
        assert_eq!(
            (input.start(), input.len(), input.bad_char()),
            (0, text.len(), None)
        );
        assert_eq!(input.excerpt(), &text[..MAX_EXCERPT_LEN - 1]);
        assert!(!input.is_whole());

        // Around the first bad character, half the window before it.
        let language = format!("{}!{}", "e".repeat(5_000), "é".repeat(3_000));
        let KeyError::InvalidLanguage { language: rejected } =
            CacheKey::from_parts(&"0".repeat(64), &language, "p").unwrap_err()
        else {
            panic!("not a language error");
        };
        assert_eq!(rejected.bad_char(), Some((5_000, '!')));
        assert_eq!(rejected.start(), 5_000 - MAX_EXCERPT_LEN / 2);
        assert_eq!(rejected.excerpt().find('!'), Some(MAX_EXCERPT_LEN / 2));
        assert_eq!(rejected.excerpt().len(), MAX_EXCERPT_LEN - 1);
        // Near the end, the window keeps its full length.
        let language = format!("{}!{}", "e".repeat(9_990), "e".repeat(9));
        let KeyError::InvalidLanguage { language: rejected } =
            CacheKey::from_parts(&"0".repeat(64), &language, "p").unwrap_err()
        else {
            panic!("not a language error");
        };
        assert_eq!(rejected.start(), 10_000 - MAX_EXCERPT_LEN);
        assert_eq!(rejected.excerpt().len(), MAX_EXCERPT_LEN);
    }

    /// Fails every other read with `Interrupted`, as a read cut short by a signal does.
    struct Interrupting<'a> {
        bytes: &'a [u8],
        interrupt: bool,
    }

    impl Read for Interrupting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.bytes.len()).min(2);
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Reads interrupted by a signal are retried: the key is that of all the bytes.
    #[test]
    fn from_reader_retries_interrupted_reads() {
        let prefix = "key-test.interrupted";
        let reader = Interrupting {
            bytes: b"hello world",
            interrupt: false,
        };
        let key = CacheKey::from_reader(reader, prefix).expect("interruptions are retried");
        assert_eq!(
            key,
            CacheKey::from_content(b"hello world", prefix).expect("valid")
        );
    }

    /// A reader that says it read more than the buffer holds.
    struct Overstating;

    impl Read for Overstating {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
    }

    /// Bug: a reader that broke `Read`'s contract by claiming more bytes than the buffer
    /// holds panicked `from_reader` (a slice out of range); it is an error that says so.
    #[test]
    fn a_reader_overstating_its_read_is_an_error_not_a_panic() {
        let err = CacheKey::from_reader(Overstating, "key-test.overstating").unwrap_err();
        let KeyError::Io(io) = &err else {
            panic!("not an I/O error: {err}");
        };
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string()
                .contains("65537 bytes read into a buffer of 65536"),
            "{err}"
        );
        assert!(
            !interned("key-test.overstating"),
            "a failed read interns nothing"
        );
    }

    /// The length limits are inclusive: a prefix of [`MAX_PREFIX_LEN`] bytes is a prefix.
    #[test]
    fn a_prefix_of_the_longest_length_is_accepted() {
        let longest = format!("key-test.{}", "p".repeat(MAX_PREFIX_LEN - 9));
        let key = CacheKey::from_digest([7; DIGEST_LEN], &longest).expect("64 bytes is allowed");
        assert_eq!(key.prefix(), longest);
        let parsed: CacheKey = key.to_string().parse().expect("parses back");
        assert_eq!(parsed, key);
    }

    /// The builder's digest is the documented encoding, checked with another SHA-256
    /// implementation: `b"memocache.parts.v1"`, then each part's `u64` little-endian length
    /// and bytes. Empty and large parts are framed the same way.
    #[test]
    fn the_builder_hashes_its_documented_encoding() {
        use sha2::{Digest as _, Sha256};
        let big = vec![0x5Au8; (1 << 20) + 3];
        let parts: [&[u8]; 4] = [b"ab", b"", &big, b"c"];
        let mut expected = Sha256::new();
        expected.update(b"memocache.parts.v1");
        for part in parts {
            expected.update((part.len() as u64).to_le_bytes());
            expected.update(part);
        }
        let expected: [u8; DIGEST_LEN] = expected.finalize().into();
        let builder = CacheKey::builder("key-test.builder").expect("valid");
        let key = parts.iter().fold(builder, |b, part| b.part(part)).finish();
        assert_eq!(key.digest(), &expected);
        assert_eq!(key.prefix(), "key-test.builder");
    }

    /// The caveat of the module docs: content that is a builder encoding has the builder's
    /// key under the same prefix, and only a different prefix tells them apart.
    #[test]
    fn content_that_is_a_builder_encoding_has_the_builders_key() {
        let prefix = "key-test.caveat";
        let built = CacheKey::builder(prefix).expect("valid").part("a").finish();
        let content = [PARTS_DOMAIN, &1u64.to_le_bytes(), b"a"].concat();
        let from_content = CacheKey::from_content(&content, prefix).expect("valid");
        assert_eq!(from_content, built);
        let elsewhere = CacheKey::from_content(&content, "key-test.caveat-content");
        assert_ne!(elsewhere.expect("valid"), built);
    }

    /// The other caveat of the module docs: content that is a `from_parts` string has that
    /// key under the same prefix (the seed's derivation), and only a different prefix for
    /// content keys tells them apart.
    #[test]
    fn content_that_is_a_from_parts_string_has_its_key() {
        let hash = "ab".repeat(32);
        let transcript = CacheKey::transcript(&hash, "en").expect("valid");
        let content = format!("{hash}:en");
        let same = CacheKey::from_content(content.as_bytes(), "transcript").expect("valid");
        assert_eq!(same, transcript);
        let file = CacheKey::from_content(content.as_bytes(), "file").expect("valid");
        assert_ne!(file, transcript);
    }

    /// A language tag in any case gives the key of its canonical spelling, which is hashed as
    /// the seed hashes it; other spellings stay apart.
    #[test]
    fn language_tags_are_compared_without_regard_to_case() {
        let hash = "0f".repeat(32);
        let key = |language: &str| CacheKey::transcript(&hash, language).expect("valid");
        let seed = |language: &str| {
            let content = format!("{hash}:{language}");
            CacheKey::from_content(content.as_bytes(), "transcript").expect("valid")
        };
        let spellings: [(&str, &[&str]); 9] = [
            ("en", &["EN", "En", "eN"]),
            ("pt-BR", &["pt-br", "PT-BR", "Pt-bR"]),
            ("zh-Hant-TW", &["ZH-HANT-TW", "zh-hant-tw"]),
            ("zh_Hant", &["zh_hant", "ZH_HANT"]),
            ("es-419", &["ES-419"]),
            ("en-US-x-ab-cdef", &["EN-us-X-AB-CDEF", "en-US-x-AB-Cdef"]),
            ("de-CH-1996", &["DE-ch-1996"]),
            // A tag that is all private use starts with its singleton: all lower case.
            ("x-ab-cdef", &["X-AB-CDEF", "x-Ab-Cdef"]),
            ("i-klingon", &["I-KLINGON"]),
        ];
        for (canonical, others) in spellings {
            assert_eq!(
                key(canonical),
                seed(canonical),
                "{canonical} hashes as given"
            );
            for other in others {
                assert_eq!(key(other), key(canonical), "{other} is {canonical}");
            }
        }
        assert_ne!(key("en_US"), key("en-US"));
        assert_ne!(key("en"), key("eng"));
        let mut tag = *b"sgn-BE-FR-u-CA-gregory-X-Private";
        canonical_tag_case(&mut tag);
        assert_eq!(&tag, b"sgn-BE-FR-u-ca-gregory-x-private");
    }

    /// `Ord` orders by prefix name, then digest, whatever order the prefixes were interned
    /// in, and agrees with `Eq`; equal keys made on different threads hash alike; keys serve
    /// as JSON map keys in their string form.
    #[test]
    fn ord_hash_and_map_keys_agree_with_eq() {
        use std::collections::HashMap;
        use std::hash::BuildHasher;
        // Interned z first, so that its number is the smaller one.
        let z = CacheKey::from_digest([1; DIGEST_LEN], "key-test.ord-z").expect("valid");
        let a = CacheKey::from_digest([2; DIGEST_LEN], "key-test.ord-a").expect("valid");
        assert!(z.prefix_number() < a.prefix_number());
        assert!(a < z, "by name, not by interning order");
        let a1 = CacheKey::from_digest([1; DIGEST_LEN], "key-test.ord-a").expect("valid");
        assert!(a1 < a && a1 != a);
        let same = std::thread::spawn(|| {
            CacheKey::from_digest([2; DIGEST_LEN], "key-test.ord-a").expect("valid")
        })
        .join()
        .expect("derives");
        assert_eq!(same.cmp(&a), std::cmp::Ordering::Equal);
        assert_eq!(same, a);
        let hasher = std::collections::hash_map::RandomState::new();
        assert_eq!(hasher.hash_one(same), hasher.hash_one(a));

        let map: HashMap<CacheKey, u8> = [(a, 1), (z, 2), (a1, 3)].into_iter().collect();
        let json = serde_json::to_string(&map).expect("serializes");
        let back: HashMap<CacheKey, u8> = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, map);
        let sorted: std::collections::BTreeSet<CacheKey> = map.into_keys().collect();
        assert!(sorted.into_iter().eq([a1, a, z]));
    }
}
