//! Invocation deadlines, and the [`Clock`] that time checks read (the ECR token cache's
//! too). Lambda ends an invocation at its deadline wherever it is; the
//! handlers instead stop starting work a margin before it, so that what they did is
//! recorded (zTOCs in the cache, the janitor's report) and a later run continues.
//!
//! The time comes from a [`Clock`], the system clock except in tests, which step it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What time it is: the system clock, or one a test controls.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// `AFTERPUSH_DEADLINE_MARGIN`: how long before the invocation deadline the handlers stop
/// starting work (a duration: `30s`, `2m`).
pub const ENV_DEADLINE_MARGIN: &str = "AFTERPUSH_DEADLINE_MARGIN";

/// The default margin: time to push a SOCI index or write a report after the last
/// layer or delete, with the retries of a slow call.
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_secs(30);

/// The margin from the environment, or the default; an unreadable value is an error
/// naming the variable.
pub fn margin_from_env() -> Result<Duration, String> {
    margin_from(std::env::var(ENV_DEADLINE_MARGIN).ok().as_deref())
}

fn margin_from(value: Option<&str>) -> Result<Duration, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_DEADLINE_MARGIN),
        Some(v) => {
            crate::settings::parse_duration(ENV_DEADLINE_MARGIN, v).map_err(|e| e.to_string())
        }
    }
}

/// The time work must be finished by: the invocation deadline minus the margin.
#[derive(Clone)]
pub struct Deadline {
    stop_at: SystemTime,
    clock: Clock,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("stop_at", &humantime::format_rfc3339_millis(self.stop_at))
            .finish_non_exhaustive()
    }
}

impl Deadline {
    /// Work stops `margin` before `deadline`, by the system clock.
    pub fn new(deadline: SystemTime, margin: Duration) -> Self {
        Self::with_clock(deadline, margin, system_clock())
    }

    /// The same by `clock` (tests step it to decide exactly which check passes).
    pub fn with_clock(deadline: SystemTime, margin: Duration, clock: Clock) -> Self {
        Self {
            stop_at: deadline
                .checked_sub(margin)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            clock,
        }
    }

    /// The time work must be finished by.
    pub fn stop_at(&self) -> SystemTime {
        self.stop_at
    }

    /// The clock's time now.
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// The time left before [`Self::stop_at`] (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.stop_at
            .duration_since(self.now())
            .unwrap_or(Duration::ZERO)
    }

    /// True once the time to stop has come.
    pub fn has_passed(&self) -> bool {
        self.remaining() == Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves `step` forward each time it is read, from `start`: with it, the
    /// n-th time check of a run sees `start + n × step`, whatever the machine's speed.
    fn stepping_clock(start: SystemTime, step: Duration) -> Clock {
        let reads = std::sync::atomic::AtomicU32::new(0);
        Arc::new(move || start + step * reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
    }

    #[test]
    fn the_margin_is_taken_off_and_time_runs_out() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let d = Deadline::with_clock(
            start + Duration::from_secs(40),
            Duration::from_secs(30),
            stepping_clock(start, Duration::from_secs(4)),
        );
        assert_eq!(d.stop_at(), start + Duration::from_secs(10));
        assert_eq!(d.remaining(), Duration::from_secs(10));
        assert_eq!(d.remaining(), Duration::from_secs(6));
        assert!(!d.has_passed());
        assert!(d.has_passed());
        // A margin longer than the time since the epoch cannot underflow.
        assert!(Deadline::new(SystemTime::UNIX_EPOCH, Duration::from_secs(60)).has_passed());
    }

    #[test]
    fn margins_are_durations_named_in_errors() {
        assert_eq!(margin_from(None), Ok(DEFAULT_DEADLINE_MARGIN));
        assert_eq!(margin_from(Some(" ")), Ok(DEFAULT_DEADLINE_MARGIN));
        assert_eq!(margin_from(Some("2m")), Ok(Duration::from_secs(120)));
        let err = margin_from(Some("soon")).unwrap_err();
        assert!(
            err.contains(ENV_DEADLINE_MARGIN) && err.contains("soon"),
            "{err}"
        );
    }
}
