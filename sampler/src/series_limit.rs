//! A partition's bound on the series it derives — RED series, service-graph edges — shared by all its tenants, as
//! the README states it: per partition, however many tenants write to it. A tenant past the bound counts in its own
//! overflow series, and overflow series have a small room of their own; past that, spans are only counted.
//! Names in series keys are cut to [`MAX_NAME_BYTES`], so one span name of a megabyte cannot make a key of one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of a service or span name kept in a series key (cut on a character boundary).
pub const MAX_NAME_BYTES: usize = 256;

/// Overflow series allowed past the limit: one each for that many tenants.
pub const OVERFLOW_ROOM: usize = 64;

/// The series one partition may still make, shared by its tenants' series maps. Cloning shares it.
#[derive(Clone, Debug)]
pub struct SeriesLimit {
    used: Arc<AtomicUsize>,
    max: usize,
}

impl SeriesLimit {
    pub fn new(max: usize) -> Self {
        SeriesLimit { used: Arc::new(AtomicUsize::new(0)), max }
    }

    /// Takes room for one new series; `false` at the limit.
    pub fn take(&self) -> bool {
        self.take_below(self.max)
    }

    /// Takes room for a tenant's overflow series: past the limit, up to [`OVERFLOW_ROOM`] of them.
    pub fn take_overflow(&self) -> bool {
        self.take_below(self.max + OVERFLOW_ROOM)
    }

    fn take_below(&self, bound: usize) -> bool {
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| (used < bound).then_some(used + 1)).is_ok()
    }
}

/// `name` cut to [`MAX_NAME_BYTES`] on a character boundary.
pub fn bounded(name: &str) -> &str {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_shared_and_overflow_has_its_own_room() {
        let limit = SeriesLimit::new(2);
        let other_tenant = limit.clone();
        assert!(limit.take());
        assert!(other_tenant.take());
        assert!(!limit.take() && !other_tenant.take(), "two series in all, whichever tenant made them");
        let overflows = (0..100).filter(|_| limit.take_overflow()).count();
        assert_eq!(overflows, OVERFLOW_ROOM);
        assert_eq!(bounded(&"é".repeat(200)).len(), 256);
        assert_eq!(bounded(&format!("a{}", "é".repeat(200))).len(), 255, "cut on a character boundary");
    }
}
