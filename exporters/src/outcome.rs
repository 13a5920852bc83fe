//! How a request or a dead-letter write ended, and the counting of it: every record settles exactly once, as
//! delivered or dead-lettered, and every item as sent or rejected with a reason.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::Held;
use crate::metrics as m;

/// Counters a test, an operator or the replay progress line can read while the exporter runs.
#[derive(Debug, Default)]
pub struct ExporterStats {
    pub records_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub records_delivered: AtomicU64,
    pub records_dead_lettered: AtomicU64,
    pub items_delivered: AtomicU64,
    pub items_rejected: AtomicU64,
    /// Records of the range, estimated at start from the partitions' offsets (replay only).
    pub records_expected: AtomicU64,
    pub pauses: AtomicU64,
}

impl ExporterStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// A request or dead-letter write that finished.
pub(crate) struct Done {
    pub held: Vec<Held>,
    pub records: u64,
    /// `None`: delivered; `Some(reason)`: dead-lettered with that reason.
    pub dead_lettered: Option<&'static str>,
    pub items: u64,
    /// Items refused, by reason: of a delivered request, those the backend refused on their own; of a
    /// dead-lettered one, all of them under the dead-letter reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// The worker stopped first: nothing is settled, the records are read again by the next owner.
    pub cancelled: bool,
    /// A backend request (one is in flight at a time), not a dead-letter write of an undecodable record.
    pub request: bool,
}

impl Done {
    pub fn new(held: Vec<Held>, request: bool) -> Self {
        let records = held.len() as u64;
        Done { held, records, dead_lettered: None, items: 0, rejected: Vec::new(), cancelled: false, request }
    }

    /// Counts what this outcome settled.
    pub fn count(&self, exporter: &'static str, stats: &ExporterStats) {
        if self.cancelled {
            return;
        }
        match self.dead_lettered {
            None => {
                metrics::counter!(m::RECORDS, "exporter" => exporter, "outcome" => "delivered").increment(self.records);
                stats.records_delivered.fetch_add(self.records, Ordering::SeqCst);
            }
            Some(reason) => {
                metrics::counter!(m::RECORDS, "exporter" => exporter, "outcome" => "dead_lettered")
                    .increment(self.records);
                metrics::counter!(m::DEAD_LETTERS, "exporter" => exporter, "reason" => reason).increment(self.records);
                stats.records_dead_lettered.fetch_add(self.records, Ordering::SeqCst);
            }
        }
        metrics::counter!(m::ITEMS, "exporter" => exporter).increment(self.items);
        stats.items_delivered.fetch_add(self.items, Ordering::SeqCst);
        for &(reason, count) in &self.rejected {
            metrics::counter!(m::REJECTED_ITEMS, "exporter" => exporter, "reason" => reason).increment(count);
            stats.items_rejected.fetch_add(count, Ordering::SeqCst);
        }
    }
}
