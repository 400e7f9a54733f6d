//! **TEMPORARY STAND-INS — delete when `src/job` lands on main.**
//!
//! Minimal copies of the jobs layer's `RetryConfig` and `ConcurrencyLimit` (same names, same
//! methods the chunk layer calls), so this module compiles before that layer is merged. Once
//! `memocache::RetryConfig` and `memocache::ConcurrencyLimit` exist, this file goes and
//! `chunk` imports the real types.

use std::time::Duration;

/// Stand-in for the jobs layer's retry policy (fixed delay only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    max_retries: u32,
    delay: Duration,
}

impl RetryConfig {
    /// `max_retries` retries, waiting `delay` before each.
    pub fn fixed(max_retries: u32, delay: Duration) -> RetryConfig {
        RetryConfig { max_retries, delay }
    }

    /// How many retries a chunk gets.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait before retry number `attempt`.
    pub fn calculate_delay(&self, _attempt: u32) -> Duration {
        self.delay
    }
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig::fixed(3, Duration::from_secs(1))
    }
}

/// Stand-in for the jobs layer's concurrency limit (1 to 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencyLimit(usize);

impl ConcurrencyLimit {
    /// A limit of `n`, or `None` outside 1–10.
    pub fn new(n: usize) -> Option<ConcurrencyLimit> {
        (1..=10).contains(&n).then_some(ConcurrencyLimit(n))
    }

    /// The limit.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for ConcurrencyLimit {
    fn default() -> ConcurrencyLimit {
        ConcurrencyLimit(4)
    }
}
