//! [`ConcurrencyLimit`]: how many tasks may run at once (1 to 10), the seed's value object.
//!
//! The worker pool uses it for its thread count; the chunk layer uses it for its parallelism.

use std::fmt;

/// A number of concurrent tasks between [`ConcurrencyLimit::MIN`] and
/// [`ConcurrencyLimit::MAX`].
///
/// The bounds are constants. In the seed `MIN` and `MAX` were dataclass fields (no
/// `ClassVar`), so its constructor also took other bounds, and they took part in equality.
///
/// ```
/// use memocache::ConcurrencyLimit;
/// assert_eq!(ConcurrencyLimit::default().get(), 4);
/// assert_eq!(ConcurrencyLimit::new(7)?.get(), 7);
/// assert!(ConcurrencyLimit::new(0).is_err());
/// assert_eq!(ConcurrencyLimit::from_api_limit(60).get(), 10); // half, clamped
/// assert_eq!(ConcurrencyLimit::from_api_limit(1).get(), 1);
/// # Ok::<(), memocache::InvalidConcurrency>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConcurrencyLimit(usize);

/// A concurrency outside `1..=10` was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("concurrency must be between 1 and 10, got {0}")]
pub struct InvalidConcurrency(pub usize);

impl ConcurrencyLimit {
    /// The smallest limit.
    pub const MIN: usize = 1;
    /// The largest limit.
    pub const MAX: usize = 10;

    /// A limit of `n`; outside `1..=10` is an error.
    pub fn new(n: usize) -> Result<ConcurrencyLimit, InvalidConcurrency> {
        if (Self::MIN..=Self::MAX).contains(&n) {
            Ok(ConcurrencyLimit(n))
        } else {
            Err(InvalidConcurrency(n))
        }
    }

    /// A safe concurrency for an API that allows `api_limit` concurrent requests: half of it,
    /// clamped to `1..=10` (the seed's `max(1, min(api_limit // 2, MAX))`).
    pub fn from_api_limit(api_limit: usize) -> ConcurrencyLimit {
        ConcurrencyLimit((api_limit / 2).clamp(Self::MIN, Self::MAX))
    }

    /// The limit.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for ConcurrencyLimit {
    /// 4, as in the seed.
    fn default() -> ConcurrencyLimit {
        ConcurrencyLimit(4)
    }
}

impl fmt::Display for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl TryFrom<usize> for ConcurrencyLimit {
    type Error = InvalidConcurrency;
    fn try_from(n: usize) -> Result<ConcurrencyLimit, InvalidConcurrency> {
        ConcurrencyLimit::new(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_enforced() {
        for n in 0..=12 {
            assert_eq!(
                ConcurrencyLimit::new(n).is_ok(),
                (1..=10).contains(&n),
                "{n}"
            );
        }
        assert_eq!(ConcurrencyLimit::new(11), Err(InvalidConcurrency(11)));
        // The conversion enforces the same range.
        assert_eq!(ConcurrencyLimit::try_from(0), Err(InvalidConcurrency(0)));
        assert_eq!(ConcurrencyLimit::try_from(11), Err(InvalidConcurrency(11)));
        assert_eq!(
            ConcurrencyLimit::try_from(7).map(ConcurrencyLimit::get),
            Ok(7)
        );
    }

    #[test]
    fn displays_as_the_number() {
        assert_eq!(ConcurrencyLimit::default().to_string(), "4");
        assert_eq!(ConcurrencyLimit::from_api_limit(40).to_string(), "10");
    }

    #[test]
    fn from_api_limit_is_half_clamped() {
        let cases = [
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 2),
            (9, 4),
            (20, 10),
            (21, 10),
        ];
        for (api, want) in cases {
            assert_eq!(ConcurrencyLimit::from_api_limit(api).get(), want, "{api}");
        }
        assert_eq!(ConcurrencyLimit::from_api_limit(usize::MAX).get(), 10);
    }
}
