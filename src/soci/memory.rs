//! The indexer's memory budget: layers are admitted by the memory their zTOC build needs,
//! not only by `LAYER_CONCURRENCY`, so that any concurrency fits the function's memory.
//!
//! The budget is a semaphore of KiB. A layer reserves an estimate from its compressed
//! size before it starts ([`initial_estimate`]) and, as its bytes and tar entries come
//! in, grows its reservation to what the builder reports it needs
//! ([`crate::ztoc::ZtocBuilder::memory_needed`]: a layer of many tiny entries makes a
//! zTOC many times its own size). Growing never waits: a layer that outgrows its
//! reservation while other layers hold the rest of the budget stops, gives its
//! reservation back, and starts again once the budget has room for what it has learnt
//! it needs (waiting while holding memory could leave every layer waiting for the
//! others). A layer that needs more than the whole budget fails, naming what it needs.

use std::sync::Arc;
use tokio::sync::Semaphore;

/// Memory a layer needs beyond its builder's: the chunks in flight between the download
/// and the builder (a channel of 4, at most 1 MiB each, one being fed, one being read).
pub const IN_FLIGHT_CHUNKS: u64 = 6 << 20;

/// What the process needs beside the layers (runtime, clients, TLS, the image's
/// manifests and the allocator's slack): subtracted from the function's memory for the
/// default budget.
pub const PROCESS_HEADROOM: u64 = 96 << 20;

/// The reservation a layer starts with: the fixed working set plus an eighth of its
/// compressed size (zTOCs of ordinary layers are a few percent of it; the reservation
/// then grows with what the build reports).
pub fn initial_estimate(compressed_size: u64) -> u64 {
    crate::ztoc::BUILD_WORKING_SET + IN_FLIGHT_CHUNKS + compressed_size / 8
}

/// The default budget inside Lambda: the function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`,
/// in MiB as Lambda counts it) less [`PROCESS_HEADROOM`]; `None` for a value that is not
/// a number or leaves no room.
pub fn budget_from_function_memory(memory_size_mb: &str) -> Option<u64> {
    let mib: u64 = memory_size_mb.trim().parse().ok()?;
    mib.checked_mul(1 << 20)?
        .checked_sub(PROCESS_HEADROOM)
        .filter(|b| *b > 0)
}

fn to_kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u64::from(u32::MAX)) as u32
}

/// A memory budget shared by the layers of one image.
#[derive(Debug)]
pub struct MemoryBudget {
    permits: Semaphore,
    total_kib: u32,
}

impl MemoryBudget {
    /// A budget of `bytes` (rounded up to whole KiB).
    pub fn new(bytes: u64) -> Self {
        let total_kib = to_kib(bytes).max(1);
        MemoryBudget {
            permits: Semaphore::new(total_kib as usize),
            total_kib,
        }
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> u64 {
        u64::from(self.total_kib) * 1024
    }

    /// Waits until `bytes` (at most the whole budget: larger asks are capped) are free
    /// and reserves them.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let kib = to_kib(bytes).min(self.total_kib);
        match self.permits.acquire_many(kib).await {
            Ok(permit) => permit.forget(),
            Err(_) => unreachable!("the budget's semaphore is never closed"),
        }
        Reservation {
            budget: Arc::clone(self),
            kib,
        }
    }
}

/// Memory reserved for one layer, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    kib: u32,
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        u64::from(self.kib) * 1024
    }

    /// The whole budget this reservation is part of.
    pub fn budget(&self) -> u64 {
        self.budget.total()
    }

    /// Grows the reservation to at least `bytes` if the budget has that much free now;
    /// false (and no change) otherwise. Never waits.
    pub fn try_grow_to(&mut self, bytes: u64) -> bool {
        let want = to_kib(bytes);
        if want <= self.kib {
            return true;
        }
        match self.budget.permits.try_acquire_many(want - self.kib) {
            Ok(permit) => {
                permit.forget();
                self.kib = want;
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back what is above `bytes` (a finished build that needs less than it had).
    pub fn shrink_to(&mut self, bytes: u64) {
        let keep = to_kib(bytes);
        if keep < self.kib {
            self.budget.permits.add_permits((self.kib - keep) as usize);
            self.kib = keep;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.permits.add_permits(self.kib as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_grow_and_give_back() {
        let budget = Arc::new(MemoryBudget::new(10 << 20));
        assert_eq!(budget.total(), 10 << 20);
        let mut a = budget.reserve(4 << 20).await;
        let mut b = budget.reserve(5 << 20).await;
        assert!(!a.try_grow_to(6 << 20), "only 1 MiB is free");
        assert_eq!(a.bytes(), 4 << 20);
        assert!(a.try_grow_to(5 << 20));
        b.shrink_to(3 << 20);
        assert!(a.try_grow_to(7 << 20));
        // The whole budget is taken: a third reservation waits until one is dropped.
        let waiting = tokio::time::timeout(std::time::Duration::ZERO, budget.reserve(1)).await;
        assert!(waiting.is_err());
        drop(b);
        let c = budget.reserve(3 << 20).await;
        assert_eq!(c.bytes(), 3 << 20);
        drop((a, c));
        // Asks above the budget are capped to it.
        assert_eq!(budget.reserve(u64::MAX).await.bytes(), 10 << 20);
    }

    #[test]
    fn default_budget_is_the_function_memory_less_headroom() {
        assert_eq!(
            budget_from_function_memory("2048"),
            Some((2048 << 20) - PROCESS_HEADROOM)
        );
        assert_eq!(budget_from_function_memory("64"), None);
        assert_eq!(budget_from_function_memory("lots"), None);
    }
}
