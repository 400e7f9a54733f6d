//! [`RetryConfig`]: how many times a failed job is retried and how long it waits in between.
//!
//! # Differences from the seed
//!
//! * Delays are [`Duration`]s, not integer milliseconds.
//! * [`RetryConfig::new`] refuses a `max_delay` below `base_delay`; the seed would silently
//!   cap every delay at the smaller maximum.
//! * [`RetryConfig::calculate_delay`] computes exactly the seed's `min(delay, max_delay)` but in
//!   128-bit nanoseconds with checked arithmetic, so `2^attempt` overflowing for a large
//!   attempt number saturates to `max_delay` instead of overflowing or panicking.
//! * Optional *full jitter* ([`RetryConfig::with_full_jitter`]): the actual wait is uniform in
//!   `[0, calculate_delay(attempt)]`, which spreads out retries of jobs that failed together
//!   (for example when a rate-limited API came back). It is off by default so the seed's
//!   numbers are reproducible; [`RetryConfig::calculate_delay`] never jitters, and
//!   [`RetryConfig::retry_delay`] is what the queue waits.

use std::time::Duration;

/// How the delay grows with the attempt number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backoff {
    /// `base * 2^attempt`.
    Exponential,
    /// `base * (attempt + 1)`.
    Linear,
    /// `base`.
    Fixed,
}

/// Why a [`RetryConfig`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryConfigError {
    /// The cap is below the base delay.
    #[error("max_delay {max_delay:?} is below base_delay {base_delay:?}")]
    MaxBelowBase {
        /// The base delay given.
        base_delay: Duration,
        /// The cap given.
        max_delay: Duration,
    },
}

/// Retry policy: the seed's `RetryConfig` value object.
///
/// ```
/// use memocache::{Backoff, RetryConfig};
/// use std::time::Duration;
///
/// let retry = RetryConfig::exponential(3, Duration::from_secs(1))?;
/// assert_eq!(retry.calculate_delay(0), Duration::from_secs(1));
/// assert_eq!(retry.calculate_delay(3), Duration::from_secs(8));
/// assert_eq!(retry.calculate_delay(10), Duration::from_secs(60)); // capped
/// assert_eq!(retry.calculate_delay(u32::MAX), Duration::from_secs(60)); // no overflow
/// # Ok::<(), memocache::RetryConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RetryConfig {
    max_retries: u32,
    backoff: Backoff,
    base_delay: Duration,
    max_delay: Duration,
    full_jitter: bool,
}

impl RetryConfig {
    /// The cap used by [`RetryConfig::exponential`] and [`RetryConfig::linear`]: one minute.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);

    /// A policy; `max_delay` must not be below `base_delay`.
    pub fn new(
        max_retries: u32,
        backoff: Backoff,
        base_delay: Duration,
        max_delay: Duration,
    ) -> Result<RetryConfig, RetryConfigError> {
        if max_delay < base_delay {
            return Err(RetryConfigError::MaxBelowBase {
                base_delay,
                max_delay,
            });
        }
        Ok(RetryConfig {
            max_retries,
            backoff,
            base_delay,
            max_delay,
            full_jitter: false,
        })
    }

    /// Exponential backoff from `base_delay`, capped at one minute (the seed's defaults are
    /// `exponential(3, 1 s)`, which is also [`RetryConfig::default`]). Fails if `base_delay`
    /// is over a minute.
    pub fn exponential(
        max_retries: u32,
        base_delay: Duration,
    ) -> Result<RetryConfig, RetryConfigError> {
        RetryConfig::new(
            max_retries,
            Backoff::Exponential,
            base_delay,
            Self::DEFAULT_MAX_DELAY,
        )
    }

    /// Linear backoff from `base_delay`, capped at one minute. Fails if `base_delay` is over a
    /// minute.
    pub fn linear(max_retries: u32, base_delay: Duration) -> Result<RetryConfig, RetryConfigError> {
        RetryConfig::new(
            max_retries,
            Backoff::Linear,
            base_delay,
            Self::DEFAULT_MAX_DELAY,
        )
    }

    /// The same `delay` before every retry (the seed's default is `fixed(3, 5 s)`).
    pub fn fixed(max_retries: u32, delay: Duration) -> RetryConfig {
        RetryConfig {
            max_retries,
            backoff: Backoff::Fixed,
            base_delay: delay,
            max_delay: delay,
            full_jitter: false,
        }
    }

    /// Turns full jitter on or off (see the module docs).
    #[must_use]
    pub fn with_full_jitter(mut self, on: bool) -> RetryConfig {
        self.full_jitter = on;
        self
    }

    /// How many retries a job gets.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff strategy.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The first delay.
    pub fn base_delay(&self) -> Duration {
        self.base_delay
    }

    /// The cap on any delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Whether full jitter is on.
    pub fn full_jitter(&self) -> bool {
        self.full_jitter
    }

    /// The seed's delay before retry number `attempt` (0 for the first retry):
    /// `min(base * factor(attempt), max_delay)`, saturating at `max_delay`. Never jittered.
    pub fn calculate_delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay.as_nanos();
        let max = self.max_delay.as_nanos();
        let delay = match self.backoff {
            // 0 * 2^attempt is 0 even where 2^attempt itself does not fit.
            Backoff::Exponential if base == 0 => Some(0),
            Backoff::Exponential => 1u128
                .checked_shl(attempt)
                .and_then(|factor| base.checked_mul(factor)),
            Backoff::Linear => base.checked_mul(u128::from(attempt) + 1),
            Backoff::Fixed => Some(base),
        };
        // `None` is an overflow, which is certainly above the cap.
        duration_from_nanos(delay.map_or(max, |d| d.min(max)))
    }

    /// What the queue actually waits before retry number `attempt`: the seed's delay, or with
    /// full jitter a uniformly random duration in `[0, calculate_delay(attempt)]`.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let delay = self.calculate_delay(attempt);
        if !self.full_jitter || delay.is_zero() {
            return delay;
        }
        // Nanosecond resolution up to ~584 years; longer caps jitter over that range.
        let cap = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(0..=cap))
    }
}

impl Default for RetryConfig {
    /// The seed's `exponential()`: 3 retries, 1 s base, 60 s cap.
    fn default() -> RetryConfig {
        RetryConfig {
            max_retries: 3,
            backoff: Backoff::Exponential,
            base_delay: Duration::from_secs(1),
            max_delay: Self::DEFAULT_MAX_DELAY,
            full_jitter: false,
        }
    }
}

/// A duration of `nanos` nanoseconds; callers pass at most a `Duration`'s own nanos.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it always fits a u32.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn seed_numbers() {
        let exp = RetryConfig::exponential(3, 1000 * MS).expect("valid");
        let delays: Vec<_> = (0..8).map(|a| exp.calculate_delay(a)).collect();
        let want: Vec<_> = [1, 2, 4, 8, 16, 32, 60, 60]
            .iter()
            .map(|&s| Duration::from_secs(s))
            .collect();
        assert_eq!(delays, want);

        let lin = RetryConfig::new(3, Backoff::Linear, 500 * MS, 1200 * MS).expect("valid");
        assert_eq!(lin.calculate_delay(0), 500 * MS);
        assert_eq!(lin.calculate_delay(1), 1000 * MS);
        assert_eq!(lin.calculate_delay(2), 1200 * MS);

        let fixed = RetryConfig::fixed(3, 5000 * MS);
        assert_eq!(fixed.calculate_delay(0), 5000 * MS);
        assert_eq!(fixed.calculate_delay(u32::MAX), 5000 * MS);
        assert_eq!(RetryConfig::default(), exp);
    }

    /// `linear` is `new(.., Backoff::Linear, base, 60 s)`: it grows by `base` per attempt up to
    /// the one-minute cap.
    #[test]
    fn linear_grows_by_the_base_up_to_a_minute() {
        let lin = RetryConfig::linear(2, Duration::from_secs(25)).expect("valid");
        assert_eq!(
            lin,
            RetryConfig::new(
                2,
                Backoff::Linear,
                Duration::from_secs(25),
                RetryConfig::DEFAULT_MAX_DELAY
            )
            .expect("valid")
        );
        let delays: Vec<_> = (0..4).map(|a| lin.calculate_delay(a).as_secs()).collect();
        assert_eq!(delays, [25, 50, 60, 60]);
    }

    #[test]
    fn accessors_report_the_policy_as_built() {
        let retry = RetryConfig::new(5, Backoff::Linear, 2 * MS, 30 * MS)
            .expect("valid")
            .with_full_jitter(true);
        assert_eq!(
            (
                retry.max_retries(),
                retry.backoff(),
                retry.base_delay(),
                retry.max_delay(),
                retry.full_jitter()
            ),
            (5, Backoff::Linear, 2 * MS, 30 * MS, true)
        );
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let huge =
            RetryConfig::new(1, Backoff::Exponential, Duration::MAX, Duration::MAX).expect("valid");
        for attempt in [0, 1, 63, 64, 127, 128, 129, u32::MAX] {
            assert_eq!(huge.calculate_delay(attempt), Duration::MAX);
        }
        let lin = RetryConfig::new(1, Backoff::Linear, Duration::MAX, Duration::MAX).expect("ok");
        assert_eq!(lin.calculate_delay(u32::MAX), Duration::MAX);
        let lin = RetryConfig::new(1, Backoff::Linear, MS, Duration::MAX).expect("valid");
        // Exact even at the top: (u32::MAX + 1) ms, not u32::MAX ms.
        assert_eq!(lin.calculate_delay(u32::MAX), MS * u32::MAX + MS);
        let zero = RetryConfig::exponential(1, Duration::ZERO).expect("valid");
        assert_eq!(zero.calculate_delay(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn max_below_base_is_an_error() {
        assert_eq!(
            RetryConfig::new(1, Backoff::Fixed, 2 * MS, MS),
            Err(RetryConfigError::MaxBelowBase {
                base_delay: 2 * MS,
                max_delay: MS
            })
        );
        assert!(RetryConfig::exponential(1, Duration::from_secs(61)).is_err());
        assert!(RetryConfig::linear(1, Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn jitter_stays_within_the_delay_and_is_off_by_default() {
        let plain = RetryConfig::exponential(3, 100 * MS).expect("valid");
        assert!(!plain.full_jitter());
        assert_eq!(plain.retry_delay(2), 400 * MS);
        let jittered = plain.with_full_jitter(true);
        let samples: Vec<_> = (0..200).map(|_| jittered.retry_delay(2)).collect();
        assert!(samples.iter().all(|d| *d <= 400 * MS));
        assert!(
            samples.iter().any(|d| *d != samples[0]),
            "200 draws were all equal"
        );
        assert_eq!(jittered.calculate_delay(2), 400 * MS, "never jittered");
    }
}
