//! What the Prometheus backend remembers between records, each bounded by `max_delta_series`.

use std::collections::HashMap;

use tailgate_proto::prometheus::Label;

use crate::delivery::Tenant;

/// Running totals of delta sums, by source partition and series: Prometheus only takes cumulative counters. The
/// metrics topic is partitioned by resource, scope and name, so one exporter owns every point of a series — until
/// the partition is revoked: then its totals are dropped ([`DeltaTotals::revoke`]), because the next owner reads
/// its records again from the last commit and would otherwise add the same deltas twice. Tenants' series are
/// apart: the same labels of two tenants are two series. `limit` bounds the series of every partition together.
pub struct DeltaTotals {
    totals: HashMap<(i32, Tenant), HashMap<Vec<Label>, f64>>,
    series: usize,
    limit: usize,
}

impl DeltaTotals {
    pub fn new(limit: usize) -> DeltaTotals {
        DeltaTotals { totals: HashMap::new(), series: 0, limit: limit.max(1) }
    }

    /// Adds a delta read from `partition` to its series' total and returns the new total; `None` when the series is
    /// new and `limit` series are remembered already.
    pub fn add(&mut self, partition: i32, tenant: &Tenant, series: &[Label], delta: f64) -> Option<f64> {
        let totals = self.totals.entry((partition, tenant.clone())).or_default();
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
        let series = &mut self.series;
        self.totals.retain(|(partition, _), totals| {
            let keep = !partitions.contains(partition);
            if !keep {
                *series -= totals.len();
            }
            keep
        });
    }
}

/// The latest `target_info` sample sent per resource. A resource's metrics are spread over partitions (the topic is
/// keyed by metric name), so its records arrive out of time order; `target_info` only moves forward.
pub struct TargetInfo {
    latest: HashMap<(Tenant, Vec<Label>), i64>,
    limit: usize,
}

impl TargetInfo {
    pub fn new(limit: usize) -> TargetInfo {
        TargetInfo { latest: HashMap::new(), limit: limit.max(1) }
    }

    /// Whether to send the resource's `target_info` at `time` (milliseconds): only if it is later than the last one
    /// sent, and the resource is remembered or there is room to remember it.
    pub fn advance(&mut self, tenant: &Tenant, labels: &[Label], time: i64) -> bool {
        let key = (tenant.clone(), labels.to_vec());
        let newer = self.latest.get(&key).is_none_or(|last| *last < time);
        let room = self.latest.len() < self.limit;
        if newer && (room || self.latest.contains_key(&key)) {
            self.latest.insert(key, time);
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
        assert_eq!(totals.add(0, &None, &series("a"), 2.0), Some(2.0));
        assert_eq!(totals.add(0, &None, &series("a"), 3.0), Some(5.0));
        assert_eq!(totals.add(1, &None, &series("b"), 1.0), None, "no room for a second series");
        totals.revoke(&[0]);
        assert_eq!(totals.add(1, &None, &series("b"), 1.0), Some(1.0), "room again once partition 0 is gone");
    }

    #[test]
    fn the_same_series_of_two_tenants_are_two_totals() {
        let mut totals = DeltaTotals::new(10);
        let (a, b): (Tenant, Tenant) = (Some("a".into()), Some("b".into()));
        assert_eq!(totals.add(0, &a, &series("x"), 2.0), Some(2.0));
        assert_eq!(totals.add(0, &b, &series("x"), 5.0), Some(5.0));
        assert_eq!(totals.add(0, &a, &series("x"), 1.0), Some(3.0));
        totals.revoke(&[0]);
        assert_eq!(totals.add(0, &a, &series("x"), 1.0), Some(1.0), "both tenants' totals went with the partition");
    }

    #[test]
    fn target_info_only_moves_forward() {
        let mut info = TargetInfo::new(1);
        assert!(info.advance(&None, &series("r"), 10));
        assert!(!info.advance(&None, &series("r"), 10));
        assert!(!info.advance(&None, &series("r"), 5));
        assert!(info.advance(&None, &series("r"), 11));
        assert!(!info.advance(&None, &series("other"), 20), "no room for a second resource");
    }
}
