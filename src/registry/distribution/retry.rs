//! Bounded exponential backoff with jitter for transient registry failures (429, 5xx,
//! connection resets, timeouts).

use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    /// The deadline of the work in progress (see [`with_deadline`]).
    static DEADLINE: Instant;
}

/// Runs `work` with every registry retry in it bounded by `deadline`: a retry, resume
/// or upload restart whose backoff would end past it is not started, and the failure
/// is returned instead. For an invocation's deadline less a margin. It applies to the
/// current task (what `work` awaits), not to tasks `work` spawns.
pub async fn with_deadline<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// False when a wait of `delay` before another attempt would end past the deadline of
/// [`with_deadline`] (always true outside it).
pub(crate) fn deadline_allows(delay: Duration) -> bool {
    DEADLINE
        .try_with(|deadline| Instant::now() + delay < *deadline)
        .unwrap_or(true)
}

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled for each later one.
    pub base_delay: Duration,
    /// No single delay exceeds this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Tiny delays, for tests that inject failures (`test-util` feature: not in the product).
    #[cfg(any(test, feature = "test-util"))]
    pub fn fast() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
        }
    }

    /// The delay before attempt number `attempt + 1` (`attempt` counts from 1): "full
    /// jitter", a uniform draw in `[ceiling/2, ceiling]` where the ceiling doubles per
    /// attempt up to `max_delay`. Half the ceiling is kept so that retries never pile up
    /// immediately after a 429.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling_after(attempt);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            rand::random_range(0..=spread)
        };
        half + Duration::from_nanos(jitter)
    }

    fn ceiling_after(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.base_delay
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// True while another attempt is allowed after `attempt` failed ones.
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.allows_another(1));
        assert!(p.allows_another(2));
        assert!(!p.allows_another(3));
        let none = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(!none.allows_another(1));
    }

    proptest! {
        #[test]
        fn delays_stay_within_half_ceiling_and_cap(
            base_ms in 0u64..5_000,
            cap_ms in 0u64..60_000,
            attempt in 1u32..100,
        ) {
            let p = RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(cap_ms),
            };
            let d = p.delay_after(attempt);
            let ceiling = p.ceiling_after(attempt);
            prop_assert!(d <= ceiling);
            prop_assert!(d >= ceiling / 2);
            prop_assert!(d <= Duration::from_millis(cap_ms));
        }

        #[test]
        fn ceilings_never_shrink(base_ms in 1u64..1_000, cap_ms in 1u64..60_000, attempt in 1u32..60) {
            let p = RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(cap_ms),
            };
            prop_assert!(p.ceiling_after(attempt + 1) >= p.ceiling_after(attempt));
        }
    }
}
