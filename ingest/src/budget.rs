//! The in-flight byte budget: what the Collector's `memory_limiter` tries to do by watching the heap, done by
//! admission instead. A request holds a share of the budget from the moment it is decoded until Kafka
//! acknowledged (or refused) all of its records; when the budget is spent, new requests are turned away at once
//! with a retryable error instead of queueing, so memory stays bounded whatever the load.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const IN_FLIGHT_BYTES: &str = "tailgate_ingest_in_flight_bytes";

#[derive(Clone, Debug)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    total: u32,
}

/// A share of the budget, returned on drop.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    bytes: u32,
}

impl Budget {
    pub fn new(total_bytes: u64) -> Self {
        let total = total_bytes.min(u64::from(u32::MAX)) as u32;
        Budget { semaphore: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// Takes `bytes` of the budget, or `None` when that much is not free right now. A request larger than the
    /// whole budget takes all of it.
    pub fn try_acquire(&self, bytes: usize) -> Option<Permit> {
        let bytes = (bytes.min(self.total as usize) as u32).max(1);
        let permit = Arc::clone(&self.semaphore).try_acquire_many_owned(bytes).ok()?;
        metrics::gauge!(IN_FLIGHT_BYTES).increment(f64::from(bytes));
        Some(Permit { _permit: permit, bytes })
    }

    /// Bytes currently held.
    pub fn in_use(&self) -> u64 {
        u64::from(self.total) - self.semaphore.available_permits() as u64
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT_BYTES).decrement(f64::from(self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_budget_and_recovers() {
        let budget = Budget::new(100);
        let a = budget.try_acquire(60).unwrap();
        assert!(budget.try_acquire(60).is_none());
        let b = budget.try_acquire(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        drop(a);
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.try_acquire(1_000).is_some(), "an over-size request takes the whole budget");
    }
}
