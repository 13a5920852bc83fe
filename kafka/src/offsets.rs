//! The commit rule that makes tail sampling lossless.
//!
//! A sampler reads a partition in order but finishes work out of order: a record's spans belong to traces decided
//! seconds later, and a kept trace's output is acknowledged by Kafka later still. The committed offset must never
//! pass a record that still holds unfinished work — a span of an undecided trace, or kept output Kafka has not yet
//! acknowledged — or a crash at that instant would lose it. [`OffsetTracker`] counts the unfinished work each record
//! holds and reports the highest offset below which everything is done.

use std::collections::BTreeMap;

/// Unfinished work per record of one partition.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    /// Offset → units of unfinished work it holds. Records with none are not kept.
    pending: BTreeMap<i64, u32>,
    /// One past the highest offset read.
    next: Option<i64>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        OffsetTracker::default()
    }

    /// A record was read at `offset`, holding `units` of unfinished work (0 if it needs nothing more).
    /// Offsets are read in increasing order.
    pub fn read(&mut self, offset: i64, units: u32) {
        debug_assert!(self.next.is_none_or(|next| offset >= next), "offsets are read in order");
        if units > 0 {
            *self.pending.entry(offset).or_default() += units;
        }
        self.next = Some(self.next.map_or(offset + 1, |next| next.max(offset + 1)));
    }

    /// One more unit of work now depends on the record at `offset` (e.g. output produced for a trace in it).
    /// The record must have been read and still hold work.
    pub fn hold(&mut self, offset: i64) {
        if let Some(units) = self.pending.get_mut(&offset) {
            *units += 1;
        } else {
            debug_assert!(false, "hold on a record with no pending work: its offset may already be committed");
        }
    }

    /// One unit of work on the record at `offset` is done.
    pub fn release(&mut self, offset: i64) {
        if let Some(units) = self.pending.get_mut(&offset) {
            *units -= 1;
            if *units == 0 {
                self.pending.remove(&offset);
            }
        }
    }

    /// The offset to commit (Kafka's convention: the next record to read): everything below it is done.
    /// `None` before anything was read.
    pub fn safe_offset(&self) -> Option<i64> {
        self.pending.keys().next().copied().or(self.next)
    }

    /// Records still holding work.
    pub fn pending_records(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Read the next record with this many units.
        Read(u32),
        /// Release a unit of the n-th (mod count) record that still has one.
        Release(usize),
        /// Hold one more unit on the n-th record that still has one.
        Hold(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4u32).prop_map(Op::Read),
            any::<usize>().prop_map(Op::Release),
            any::<usize>().prop_map(Op::Hold)
        ]
    }

    proptest! {
        /// Against a model that remembers every record's unfinished work: the safe offset never passes a record
        /// with work left, never goes backwards, and reaches the end once all work is done.
        #[test]
        fn never_commits_past_unfinished_work(ops in prop::collection::vec(op(), 0..300), start in 0..1000i64) {
            let mut tracker = OffsetTracker::new();
            let mut model: Vec<(i64, u32)> = Vec::new();
            let mut last_safe: Option<i64> = None;
            for op in ops {
                match op {
                    Op::Read(units) => {
                        let offset = start + model.len() as i64;
                        tracker.read(offset, units);
                        model.push((offset, units));
                    }
                    Op::Release(n) | Op::Hold(n) => {
                        let open: Vec<usize> = (0..model.len()).filter(|i| model[*i].1 > 0).collect();
                        if open.is_empty() { continue; }
                        let i = open[n % open.len()];
                        if matches!(op, Op::Release(_)) {
                            tracker.release(model[i].0);
                            model[i].1 -= 1;
                        } else {
                            tracker.hold(model[i].0);
                            model[i].1 += 1;
                        }
                    }
                }
                let safe = tracker.safe_offset();
                let expected = model.iter().find(|(_, u)| *u > 0).map(|(o, _)| *o)
                    .or_else(|| model.last().map(|(o, _)| o + 1));
                prop_assert_eq!(safe, expected);
                if let (Some(before), Some(now)) = (last_safe, safe) {
                    prop_assert!(now >= before, "safe offset went back from {} to {}", before, now);
                }
                last_safe = safe;
            }
            for (offset, units) in model.iter_mut() {
                for _ in 0..*units { tracker.release(*offset); }
                *units = 0;
            }
            prop_assert_eq!(tracker.safe_offset(), model.last().map(|(o, _)| o + 1));
            prop_assert_eq!(tracker.pending_records(), 0);
        }
    }
}
