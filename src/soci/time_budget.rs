//! Which layers an invocation still has time for. A layer is started only when its
//! estimated indexing time fits before the [`Deadline`]: its size over the throughput
//! measured on the layers this invocation indexed so far, or, before any, over a
//! conservative default (`AFTERPUSH_LAYER_THROUGHPUT`). A layer not started is left for
//! the retry, which finds the finished ones in the zTOC cache.

use crate::deadline::Deadline;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The admission check for layers under one invocation's deadline.
#[derive(Debug)]
pub struct LayerTimeBudget {
    deadline: Deadline,
    /// Bytes per second assumed until a layer has been measured.
    default_throughput: u64,
    /// Bytes read and time spent by the layers indexed so far.
    measured: Mutex<(u64, Duration)>,
}

impl LayerTimeBudget {
    /// A budget up to `deadline`, assuming `default_throughput` bytes per second until a
    /// layer has been measured.
    pub fn new(deadline: Deadline, default_throughput: u64) -> Self {
        Self {
            deadline,
            default_throughput: default_throughput.max(1),
            measured: Mutex::new((0, Duration::ZERO)),
        }
    }

    /// Bytes per second: measured when there is a measurement, else the default.
    pub fn throughput(&self) -> f64 {
        let (bytes, spent) = *self.measured.lock().unwrap_or_else(|e| e.into_inner());
        if bytes > 0 && !spent.is_zero() {
            bytes as f64 / spent.as_secs_f64()
        } else {
            self.default_throughput as f64
        }
    }

    /// The estimated time to index `size` bytes.
    pub fn estimate(&self, size: u64) -> Duration {
        Duration::from_secs_f64(size as f64 / self.throughput())
    }

    /// Whether a layer of `size` bytes can be indexed before the deadline.
    pub fn admits(&self, size: u64) -> bool {
        let remaining = self.deadline.remaining();
        !remaining.is_zero() && self.estimate(size) <= remaining
    }

    /// The deadline's clock, for timing a layer.
    pub fn now(&self) -> SystemTime {
        self.deadline.now()
    }

    /// Records a layer of `bytes` read from `started` until now. Layers running at once
    /// each record their own time, so the rate is what one layer gets under the current
    /// concurrency, which is what the next layer will get too.
    pub fn record(&self, bytes: u64, started: SystemTime) {
        let spent = self
            .deadline
            .now()
            .duration_since(started)
            .unwrap_or(Duration::ZERO);
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        measured.0 += bytes;
        measured.1 += spent;
    }

    /// The deadline this budget checks against.
    pub fn deadline(&self) -> &Deadline {
        &self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_default_holds_until_a_layer_is_measured() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now = Arc::new(Mutex::new(start));
        let clock = {
            let now = now.clone();
            Arc::new(move || *now.lock().unwrap())
        };
        // 100 s left; 1 MB/s assumed.
        let budget = LayerTimeBudget::new(
            Deadline::with_clock(
                start + Duration::from_secs(130),
                Duration::from_secs(30),
                clock,
            ),
            1_000_000,
        );
        assert!(budget.admits(100_000_000));
        assert!(!budget.admits(100_000_001));
        // A layer of 50 MB took 10 s: 5 MB/s from now on, and 90 s are left.
        let started = budget.now();
        *now.lock().unwrap() = start + Duration::from_secs(10);
        budget.record(50_000_000, started);
        assert_eq!(budget.throughput(), 5_000_000.0);
        assert!(budget.admits(450_000_000));
        assert!(!budget.admits(450_000_001));
        // Past the margin no layer is admitted, however small.
        *now.lock().unwrap() = start + Duration::from_secs(101);
        assert!(!budget.admits(0));
    }
}
