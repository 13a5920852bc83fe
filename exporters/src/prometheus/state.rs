//! What the Prometheus backend remembers between records, each bounded by `max_delta_series`.

use std::collections::HashMap;

use tailgate_proto::prometheus::Label;

/// Running totals of delta sums, by source partition and series: Prometheus only takes cumulative counters. The
/// metrics topic is partitioned by resource, scope and name, so one exporter owns every point of a series — until
/// the partition is revoked: then its totals are dropped ([`DeltaTotals::revoke`]), because the next owner reads
/// its records again from the last commit and would otherwise add the same deltas twice. `limit` bounds the series
/// of every partition together.
pub struct DeltaTotals {
    totals: HashMap<i32, HashMap<Vec<Label>, f64>>,
    series: usize,
    limit: usize,
}

impl DeltaTotals {
    pub fn new(limit: usize) -> DeltaTotals {
        DeltaTotals { totals: HashMap::new(), series: 0, limit: limit.max(1) }
    }

    /// Adds a delta read from `partition` to its series' total and returns the new total; `None` when the series is
    /// new and `limit` series are remembered already.
    pub fn add(&mut self, partition: i32, series: &[Label], delta: f64) -> Option<f64> {
        let totals = self.totals.entry(partition).or_default();
        if let Some(total) = totals.get_mut(series) {
            *total += delta;
            return Some(*total);
        }
        if self.series >= self.limit {
            return None;
        }
        totals.insert(series.to_vec(), delta);
        self.series += 1;
        Some(delta)
    }

    /// Forgets the totals of `partitions`.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for partition in partitions {
            if let Some(totals) = self.totals.remove(partition) {
                self.series -= totals.len();
            }
        }
    }
}

/// The latest `target_info` sample sent per resource. A resource's metrics are spread over partitions (the topic is
/// keyed by metric name), so its records arrive out of time order; `target_info` only moves forward.
pub struct TargetInfo {
    latest: HashMap<Vec<Label>, i64>,
    limit: usize,
}

impl TargetInfo {
    pub fn new(limit: usize) -> TargetInfo {
        TargetInfo { latest: HashMap::new(), limit: limit.max(1) }
    }

    /// Whether to send the resource's `target_info` at `time` (milliseconds): only if it is later than the last one
    /// sent, and the resource is remembered or there is room to remember it.
    pub fn advance(&mut self, labels: &[Label], time: i64) -> bool {
        let newer = self.latest.get(labels).is_none_or(|last| *last < time);
        let room = self.latest.len() < self.limit;
        if newer && (room || self.latest.contains_key(labels)) {
            self.latest.insert(labels.to_vec(), time);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str) -> Vec<Label> {
        vec![Label { name: "__name__".into(), value: name.into() }]
    }

    #[test]
    fn delta_totals_accumulate_up_to_the_series_limit() {
        let mut totals = DeltaTotals::new(1);
        assert_eq!(totals.add(0, &series("a"), 2.0), Some(2.0));
        assert_eq!(totals.add(0, &series("a"), 3.0), Some(5.0));
        assert_eq!(totals.add(1, &series("b"), 1.0), None, "no room for a second series");
        totals.revoke(&[0]);
        assert_eq!(totals.add(1, &series("b"), 1.0), Some(1.0), "room again once partition 0 is gone");
    }

    #[test]
    fn target_info_only_moves_forward() {
        let mut info = TargetInfo::new(1);
        assert!(info.advance(&series("r"), 10));
        assert!(!info.advance(&series("r"), 10));
        assert!(!info.advance(&series("r"), 5));
        assert!(info.advance(&series("r"), 11));
        assert!(!info.advance(&series("other"), 20), "no room for a second resource");
    }
}
