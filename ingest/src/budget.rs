//! The in-flight byte budget: what the Collector's `memory_limiter` tries to do by watching the heap, done by
//! admission instead. A request takes its share as its work grows — the bytes of its body as they arrive, the bytes
//! they inflate to, what decoding them will allocate (see `admission`) — and holds it until Kafka acknowledged (or
//! refused) all of its records. When the budget is spent, the request is turned away at once with a retryable
//! error instead of queueing, so memory stays bounded whatever the load.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const IN_FLIGHT_BYTES: &str = "tailgate_ingest_in_flight_bytes";

#[derive(Clone, Debug)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    total: u32,
}

/// A request's share of the budget, which may grow; all of it is returned on drop.
#[derive(Debug)]
pub struct Permit {
    budget: Budget,
    permit: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new(total_bytes: u64) -> Self {
        let total = total_bytes.min(u64::from(u32::MAX)) as u32;
        Budget { semaphore: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// A share of nothing yet, to [`Permit::grow`].
    pub fn empty(&self) -> Permit {
        let permit =
            Arc::clone(&self.semaphore).try_acquire_many_owned(0).expect("the budget's semaphore is never closed");
        Permit { budget: self.clone(), permit }
    }

    /// Takes `bytes` of the budget, or `None` when that much is not free right now. A request larger than the
    /// whole budget takes all of it. Requests grow an [`Budget::empty`] share as they work (see `admission`).
    #[cfg(test)]
    pub fn try_acquire(&self, bytes: usize) -> Option<Permit> {
        let mut permit = self.empty();
        permit.grow(bytes.max(1)).then_some(permit)
    }

    /// Bytes currently held.
    pub fn in_use(&self) -> u64 {
        u64::from(self.total) - self.semaphore.available_permits() as u64
    }
}

impl Permit {
    /// Takes `bytes` more, or returns `false` (taking nothing) when that much is not free right now. A share never
    /// grows past the whole budget: a request that needs more than all of it may go on once it holds all of it, so
    /// that no request the size limits allow is refused for ever.
    #[must_use]
    pub fn grow(&mut self, bytes: usize) -> bool {
        let held = self.permit.num_permits();
        let wanted = bytes.min((self.budget.total as usize).saturating_sub(held));
        if wanted == 0 {
            return true;
        }
        let Ok(more) = Arc::clone(&self.budget.semaphore).try_acquire_many_owned(wanted as u32) else {
            return false;
        };
        self.permit.merge(more);
        metrics::gauge!(IN_FLIGHT_BYTES).increment(wanted as f64);
        true
    }

    /// Returns all but `bytes` of this share, once the work that needed more is done.
    pub fn shrink_to(&mut self, bytes: usize) {
        if let Some(returned) = self.permit.split(self.permit.num_permits().saturating_sub(bytes)) {
            metrics::gauge!(IN_FLIGHT_BYTES).decrement(returned.num_permits() as f64);
        }
    }

    /// Bytes this share holds.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT_BYTES).decrement(self.permit.num_permits() as f64);
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

    #[test]
    fn a_share_grows_until_the_budget_is_spent_and_returns_everything() {
        let budget = Budget::new(100);
        let mut a = budget.empty();
        assert!(a.grow(30) && a.grow(30));
        let mut b = budget.try_acquire(30).unwrap();
        assert!(!a.grow(20), "only 10 are free");
        assert_eq!((a.bytes(), budget.in_use()), (60, 90), "a refused growth takes nothing");
        assert!(b.grow(10));
        drop(b);
        assert!(a.grow(40));
        assert!(a.grow(1_000), "holding the whole budget, a share may go on");
        assert_eq!(a.bytes(), 100);
        a.shrink_to(30);
        assert_eq!((a.bytes(), budget.in_use()), (30, 30));
        a.shrink_to(50);
        assert_eq!(a.bytes(), 30, "shrinking never grows");
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }
}
