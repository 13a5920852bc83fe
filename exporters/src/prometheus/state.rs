//! What the Prometheus translation remembers between records — running totals of delta sums, the last
//! `target_info` per resource — each bounded in count and forgotten when not updated for `expiration`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tailgate_proto::prometheus::Label;

use crate::delivery::Tenant;

/// How often, at most, a full map is swept for stale entries when it is at its limit.
const SWEEP_AT_LIMIT: Duration = Duration::from_secs(1);

/// Why a delta point was not added.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Refused {
    /// The series is new and `limit` series are remembered, none stale (`delta_series_limit`).
    Limit,
    /// The point starts before the last one added ended: read twice (Kafka delivers at least once) or out of order
    /// (`delta_out_of_order`). Adding it would count twice, or make the counter go down (a reset to `rate()`).
    /// `total` is the series' total as it stands.
    OutOfOrder { total: f64 },
}

struct Total {
    value: f64,
    /// The end (`time_unix_nano`) of the last point added.
    end: u64,
    updated: Instant,
}

/// Running totals of delta sums, by source partition and series: Prometheus only takes cumulative counters. The
/// metrics topic is partitioned by resource, scope and name, so one exporter owns every point of a series — until
/// the partition is revoked: then its totals are dropped ([`DeltaTotals::revoke`]), because the next owner reads
/// its records again from the last commit and would otherwise add the same deltas twice. Tenants' series are
/// apart: the same labels of two tenants are two series. As the Collector's `deltatocumulative` processor: a point
/// that starts before the last one ended is dropped, and a series not updated for `expiration` is forgotten (its
/// next point starts a new total, which `rate()` reads as a counter reset). `limit` bounds the series of every
/// partition together.
pub struct DeltaTotals {
    totals: HashMap<(i32, Tenant), HashMap<Vec<Label>, Total>>,
    series: usize,
    limit: usize,
    expiration: Duration,
    swept: Instant,
}

impl DeltaTotals {
    pub fn new(limit: usize, expiration: Duration) -> DeltaTotals {
        DeltaTotals { totals: HashMap::new(), series: 0, limit: limit.max(1), expiration, swept: Instant::now() }
    }

    /// Adds a delta point (`start` to `end`, nanoseconds; `start` 0 when unknown) read from `partition` to its
    /// series' total and returns the new total.
    pub fn add(
        &mut self,
        partition: i32,
        tenant: &Tenant,
        series: &[Label],
        (start, end): (u64, u64),
        delta: f64,
        now: Instant,
    ) -> Result<f64, Refused> {
        if now.duration_since(self.swept) >= self.expiration
            || (self.series >= self.limit && now.duration_since(self.swept) >= SWEEP_AT_LIMIT)
        {
            self.expire(now);
        }
        let totals = self.totals.entry((partition, tenant.clone())).or_default();
        if let Some(total) = totals.get_mut(series) {
            // Without a start, a point is the instant it ends: the same end twice is the same point.
            let overlaps = if start == 0 { end <= total.end } else { start < total.end };
            if overlaps {
                return Err(Refused::OutOfOrder { total: total.value });
            }
            total.value += delta;
            total.end = end;
            total.updated = now;
            return Ok(total.value);
        }
        if self.series >= self.limit {
            return Err(Refused::Limit);
        }
        totals.insert(series.to_vec(), Total { value: delta, end, updated: now });
        self.series += 1;
        Ok(delta)
    }

    /// Forgets the series not updated for `expiration`.
    fn expire(&mut self, now: Instant) {
        let expiration = self.expiration;
        let series = &mut self.series;
        self.totals.retain(|_, totals| {
            let before = totals.len();
            totals.retain(|_, total| now.duration_since(total.updated) < expiration);
            *series -= before - totals.len();
            !totals.is_empty()
        });
        self.swept = now;
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

/// A number remembered per key — bounded to `limit` keys, a key not touched for `expiration` forgotten — for what
/// the translation must keep from one point to the next of a series or resource.
struct Remembered<K> {
    values: HashMap<K, (i64, Instant)>,
    limit: usize,
    expiration: Duration,
    swept: Instant,
}

impl<K: std::hash::Hash + Eq> Remembered<K> {
    fn new(limit: usize, expiration: Duration) -> Self {
        Remembered { values: HashMap::new(), limit: limit.max(1), expiration, swept: Instant::now() }
    }

    /// The value remembered for `key` (touched, so kept) and whether it was remembered before; a new key is
    /// remembered with `initial`. `None` when it is new and `limit` keys are remembered, none stale.
    fn entry(&mut self, key: K, now: Instant, initial: i64) -> Option<(&mut i64, bool)> {
        if now.duration_since(self.swept) >= self.expiration
            || (self.values.len() >= self.limit && now.duration_since(self.swept) >= SWEEP_AT_LIMIT)
        {
            let expiration = self.expiration;
            self.values.retain(|_, (_, seen)| now.duration_since(*seen) < expiration);
            self.swept = now;
        }
        let full = self.values.len() >= self.limit;
        match self.values.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => {
                let (value, seen) = entry.into_mut();
                *seen = now;
                Some((value, true))
            }
            std::collections::hash_map::Entry::Vacant(_) if full => None,
            std::collections::hash_map::Entry::Vacant(entry) => Some((&mut entry.insert((initial, now)).0, false)),
        }
    }
}

/// Whether to send a resource's `target_info` now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advance {
    Send,
    /// Not later than the last one sent.
    Old,
    /// A new resource, and `limit` resources are remembered, none stale (`target_info_limit`).
    Limit,
}

/// The latest `target_info` sample sent per resource. A resource's metrics are spread over partitions (the topic is
/// keyed by metric name), so its records arrive out of time order; `target_info` only moves forward. A resource
/// not seen for `expiration` is forgotten, so that pods that come and go do not fill the map for good.
pub struct TargetInfo {
    latest: Remembered<(Tenant, Vec<Label>)>,
}

impl TargetInfo {
    pub fn new(limit: usize, expiration: Duration) -> TargetInfo {
        TargetInfo { latest: Remembered::new(limit, expiration) }
    }

    /// Whether to send the resource's `target_info` at `time` (milliseconds): only if it is later than the last one
    /// sent, and the resource is remembered or there is room to remember it.
    pub fn advance(&mut self, tenant: &Tenant, labels: &[Label], time: i64, now: Instant) -> Advance {
        match self.latest.entry((tenant.clone(), labels.to_vec()), now, time) {
            None => Advance::Limit,
            Some((_, false)) => Advance::Send,
            Some((last, true)) if *last >= time => Advance::Old,
            Some((last, true)) => {
                *last = time;
                Advance::Send
            }
        }
    }
}

/// Per exponential-histogram series, the scale its points are translated at: the lowest seen. An SDK lowers a
/// series' scale as its values spread (and a point of too many buckets is lowered here); translating each point at
/// its own scale would give its `_bucket` series another `le` set every time — half the buckets stopping without a
/// staleness marker, `histogram_quantile` over the window wrong. At the series' lowest scale the `le` set only
/// changes when the scale goes down, and then for good. A series not seen for `expiration` is forgotten; past
/// `limit` series, a new one is translated at its points' own scales.
pub struct Scales {
    lowest: Remembered<(Tenant, String, Vec<Label>)>,
}

impl Scales {
    pub fn new(limit: usize, expiration: Duration) -> Scales {
        Scales { lowest: Remembered::new(limit, expiration) }
    }

    /// The scale to translate a point of `series` at, when its own (after the bucket limit) is `scale`: the lowest
    /// either has seen, remembered.
    pub fn fix(&mut self, tenant: &Tenant, name: &str, labels: &[Label], scale: i64, now: Instant) -> i64 {
        match self.lowest.entry((tenant.clone(), name.to_owned(), labels.to_vec()), now, scale) {
            None => scale,
            Some((lowest, _)) => {
                *lowest = (*lowest).min(scale);
                *lowest
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn series(name: &str) -> Vec<Label> {
        vec![Label { name: "__name__".into(), value: name.into() }]
    }

    /// Points of one series, `(start, end)` in seconds.
    fn at(start: u64, end: u64) -> (u64, u64) {
        (start * 1_000_000_000, end * 1_000_000_000)
    }

    #[test]
    fn delta_totals_accumulate_up_to_the_series_limit() {
        let (mut totals, now) = (DeltaTotals::new(1, MINUTE), Instant::now());
        assert_eq!(totals.add(0, &None, &series("a"), at(0, 1), 2.0, now), Ok(2.0));
        assert_eq!(totals.add(0, &None, &series("a"), at(1, 2), 3.0, now), Ok(5.0));
        assert_eq!(totals.add(1, &None, &series("b"), at(0, 1), 1.0, now), Err(Refused::Limit));
        totals.revoke(&[0]);
        assert_eq!(totals.add(1, &None, &series("b"), at(0, 1), 1.0, now), Ok(1.0), "room once partition 0 is gone");
    }

    #[test]
    fn the_same_series_of_two_tenants_are_two_totals() {
        let (mut totals, now) = (DeltaTotals::new(10, MINUTE), Instant::now());
        let (a, b): (Tenant, Tenant) = (Some("a".into()), Some("b".into()));
        assert_eq!(totals.add(0, &a, &series("x"), at(0, 1), 2.0, now), Ok(2.0));
        assert_eq!(totals.add(0, &b, &series("x"), at(0, 1), 5.0, now), Ok(5.0));
        assert_eq!(totals.add(0, &a, &series("x"), at(1, 2), 1.0, now), Ok(3.0));
        totals.revoke(&[0]);
        assert_eq!(totals.add(0, &a, &series("x"), at(2, 3), 1.0, now), Ok(1.0), "both tenants' totals went");
    }

    /// A delta record read twice (Kafka delivers at least once) left the counter too high for good, and t2 read
    /// before t1 made it go down by... nothing: it went up by t1 again after t2, and a later t1 looked like a reset.
    /// As the Collector's deltatocumulative: a point that starts before the last one ended is dropped.
    #[test]
    fn a_delta_read_twice_or_out_of_order_is_dropped() {
        let (mut totals, now) = (DeltaTotals::new(10, MINUTE), Instant::now());
        let a = series("a");
        assert_eq!(totals.add(0, &None, &a, at(0, 10), 2.0, now), Ok(2.0));
        assert_eq!(
            totals.add(0, &None, &a, at(0, 10), 2.0, now),
            Err(Refused::OutOfOrder { total: 2.0 }),
            "the same point again"
        );
        assert_eq!(totals.add(0, &None, &a, at(20, 30), 5.0, now), Ok(7.0), "a gap is fine");
        assert_eq!(
            totals.add(0, &None, &a, at(10, 20), 3.0, now),
            Err(Refused::OutOfOrder { total: 7.0 }),
            "t2 before t1"
        );
        assert_eq!(totals.add(0, &None, &a, at(30, 40), 1.0, now), Ok(8.0));
        // Without a start time, a point is its end: the same end twice is the same point.
        let b = series("b");
        assert_eq!(totals.add(0, &None, &b, (0, 5), 1.0, now), Ok(1.0));
        assert_eq!(totals.add(0, &None, &b, (0, 5), 1.0, now), Err(Refused::OutOfOrder { total: 1.0 }));
        assert_eq!(totals.add(0, &None, &b, (0, 6), 1.0, now), Ok(2.0));
    }

    /// After `limit` distinct series every new delta series was dropped for the life of the process, and every
    /// new resource got no `target_info` — with pod churn, every new pod. Series not updated for `expiration`
    /// now make room.
    #[test]
    fn stale_series_and_resources_make_room() {
        let start = Instant::now();
        let mut totals = DeltaTotals::new(1, MINUTE);
        assert_eq!(totals.add(0, &None, &series("old-pod"), at(0, 1), 1.0, start), Ok(1.0));
        let soon = start + Duration::from_secs(30);
        assert_eq!(totals.add(0, &None, &series("new-pod"), at(0, 1), 1.0, soon), Err(Refused::Limit));
        let later = start + Duration::from_secs(61);
        assert_eq!(totals.add(0, &None, &series("new-pod"), at(0, 1), 1.0, later), Ok(1.0), "the stale one went");

        let mut info = TargetInfo::new(1, MINUTE);
        assert_eq!(info.advance(&None, &series("old-pod"), 10, start), Advance::Send);
        assert_eq!(info.advance(&None, &series("new-pod"), 10, soon), Advance::Limit);
        assert_eq!(info.advance(&None, &series("new-pod"), 10, later), Advance::Send, "the stale one went");
    }

    /// An SDK lowering a series' scale from 3 to 1 and back up: translated at 3, then at 1 for good.
    #[test]
    fn a_series_keeps_its_lowest_scale() {
        let (mut scales, now) = (Scales::new(10, MINUTE), Instant::now());
        let labels = series("latency");
        assert_eq!(scales.fix(&None, "h", &labels, 3, now), 3);
        assert_eq!(scales.fix(&None, "h", &labels, 1, now), 1);
        assert_eq!(scales.fix(&None, "h", &labels, 3, now), 1, "a finer point joins the series' scale");
        assert_eq!(scales.fix(&None, "other", &labels, 3, now), 3, "another series keeps its own");
    }

    #[test]
    fn target_info_only_moves_forward() {
        let (mut info, now) = (TargetInfo::new(1, MINUTE), Instant::now());
        assert_eq!(info.advance(&None, &series("r"), 10, now), Advance::Send);
        assert_eq!(info.advance(&None, &series("r"), 10, now), Advance::Old);
        assert_eq!(info.advance(&None, &series("r"), 5, now), Advance::Old);
        assert_eq!(info.advance(&None, &series("r"), 11, now), Advance::Send);
        assert_eq!(info.advance(&None, &series("other"), 20, now), Advance::Limit, "no room for a second resource");
    }
}
