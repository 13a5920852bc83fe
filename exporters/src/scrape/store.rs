//! What the scrape endpoint serves: the newest sample of each series, by the partition its records came from, so a
//! revoked partition's series leave with it and a series never stays past its expiration.

use std::collections::{HashMap, HashSet};

use tailgate_proto::prometheus::{Exemplar, Label, STALE_NAN};

use crate::prometheus::{Families, Family, Kind, Translated};

/// A series' newest sample: its value and its point's time (Unix milliseconds), and its newest exemplar.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub value: f64,
    pub timestamp: i64,
    pub exemplar: Option<Exemplar>,
}

/// Series by owned partition, and the kind and description of each metric family seen.
pub struct Store {
    partitions: HashMap<i32, HashMap<Vec<Label>, Point>>,
    families: Families,
    series: usize,
    limit: usize,
}

impl Store {
    pub fn new(limit: usize) -> Store {
        Store { partitions: HashMap::new(), families: Families::new(), series: 0, limit: limit.max(1) }
    }

    /// Takes one record's series (read from `partition`), their exemplars and families. A sample older than the one
    /// held is ignored (the topic's records of one series are in order, but a resource's `target_info` comes from
    /// several); a staleness marker removes its series; a series keeps its newest exemplar. Returns how many new
    /// series found no room.
    pub fn update(&mut self, partition: i32, translated: Translated, families: &mut Families) -> u64 {
        let Translated { series, mut exemplars } = translated;
        for (name, family) in families.drain() {
            self.families.insert(name, family);
        }
        let values = self.partitions.entry(partition).or_default();
        let mut refused = 0;
        for (labels, samples) in series {
            // The last of the newest samples of the record: what a remote-write backend would end up with.
            let Some(newest) = samples.iter().reduce(|a, b| if b.timestamp >= a.timestamp { b } else { a }) else {
                continue;
            };
            let exemplar = exemplars.remove(&labels).and_then(|e| e.into_iter().max_by_key(|e| e.timestamp));
            let point = Point { value: newest.value, timestamp: newest.timestamp, exemplar };
            if point.value.to_bits() == STALE_NAN {
                if values.get(&labels).is_some_and(|held| held.timestamp <= point.timestamp) {
                    values.remove(&labels);
                    self.series -= 1;
                }
                continue;
            }
            match values.get_mut(&labels) {
                Some(held) if held.timestamp <= point.timestamp => {
                    // An exemplar stays until a newer one comes: one per sampled trace, not per point.
                    let exemplar = match (point.exemplar, held.exemplar.take()) {
                        (Some(new), Some(old)) if old.timestamp > new.timestamp => Some(old),
                        (new, old) => new.or(old),
                    };
                    *held = Point { exemplar, ..point };
                }
                Some(_) => {}
                None if self.series >= self.limit => refused += 1,
                None => {
                    values.insert(labels, point);
                    self.series += 1;
                }
            }
        }
        refused
    }

    /// Forgets the series of `partitions`: another exporter owns them now.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for partition in partitions {
            if let Some(values) = self.partitions.remove(partition) {
                self.series -= values.len();
            }
        }
    }

    /// Removes the series whose newest point is older than `before` (Unix milliseconds), and the families left
    /// without series; returns how many series went.
    pub fn expire(&mut self, before: i64) -> usize {
        let mut expired = 0;
        for values in self.partitions.values_mut() {
            let held = values.len();
            values.retain(|_, point| point.timestamp >= before);
            expired += held - values.len();
        }
        self.series -= expired;
        if expired > 0 {
            let present: HashSet<String> = self
                .iter()
                .filter_map(|(labels, _)| self.family(name(labels)).map(|(family, _)| family.to_owned()))
                .collect();
            self.families.retain(|family, _| present.contains(family));
        }
        expired
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.series
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// Each series once, with its newest point: a resource's `target_info` comes from every partition with its
    /// metrics, and one series in two partitions' stores must not be served twice in one scrape.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<Label>, &Point)> {
        let mut newest: HashMap<&Vec<Label>, &Point> = HashMap::with_capacity(self.series);
        for (labels, point) in self.partitions.values().flat_map(|values| values.iter()) {
            let held = newest.entry(labels).or_insert(point);
            if point.timestamp > held.timestamp {
                *held = point;
            }
        }
        newest.into_iter()
    }

    /// The family a series of metric `name` belongs to, by the families its records declared: the name itself
    /// (gauges, counters, a summary's quantiles), or a histogram's or summary's `_bucket`/`_sum`/`_count`.
    pub fn family(&self, name: &str) -> Option<(&str, &Family)> {
        if let Some((family, kind)) = self.families.get_key_value(name) {
            return Some((family, kind));
        }
        [("_bucket", false), ("_sum", true), ("_count", true)].into_iter().find_map(|(suffix, summary_too)| {
            let base = name.strip_suffix(suffix)?;
            let (family, kind) = self.families.get_key_value(base)?;
            let fits = kind.kind == Kind::Histogram || (summary_too && kind.kind == Kind::Summary);
            fits.then_some((family.as_str(), kind))
        })
    }
}

/// A series' metric name.
pub fn name(labels: &[Label]) -> &str {
    labels.iter().find(|l| l.name == "__name__").map_or("", |l| l.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_proto::prometheus::Sample;

    fn series(name: &str, pod: &str) -> Vec<Label> {
        vec![Label { name: "__name__".into(), value: name.into() }, Label { name: "pod".into(), value: pod.into() }]
    }

    fn one(labels: Vec<Label>, value: f64, timestamp: i64) -> Translated {
        Translated { series: [(labels, vec![Sample { value, timestamp }])].into(), exemplars: Default::default() }
    }

    fn value(store: &Store, labels: &[Label]) -> Option<f64> {
        store.iter().find(|(l, _)| l.as_slice() == labels).map(|(_, p)| p.value)
    }

    #[test]
    fn the_newest_sample_is_held_and_an_older_one_ignored() {
        let mut store = Store::new(10);
        let a = series("carts", "a");
        store.update(0, one(a.clone(), 5.0, 2_000), &mut Families::new());
        store.update(0, one(a.clone(), 3.0, 1_000), &mut Families::new());
        assert_eq!(value(&store, &a), Some(5.0));
        store.update(0, one(a.clone(), 7.0, 2_000), &mut Families::new());
        assert_eq!(value(&store, &a), Some(7.0), "a repeated timestamp keeps the later value");
    }

    #[test]
    fn a_staleness_marker_removes_its_series() {
        let mut store = Store::new(10);
        let a = series("carts", "a");
        store.update(0, one(a.clone(), 5.0, 1_000), &mut Families::new());
        store.update(0, one(a.clone(), f64::from_bits(STALE_NAN), 2_000), &mut Families::new());
        assert_eq!(value(&store, &a), None);
        assert!(store.is_empty());
    }

    #[test]
    fn series_beyond_the_limit_are_refused_until_room_is_made() {
        let mut store = Store::new(2);
        assert_eq!(store.update(0, one(series("x", "a"), 1.0, 1), &mut Families::new()), 0);
        assert_eq!(store.update(1, one(series("x", "b"), 1.0, 1), &mut Families::new()), 0);
        assert_eq!(store.update(1, one(series("x", "c"), 1.0, 1), &mut Families::new()), 1);
        store.revoke(&[0]);
        assert_eq!(store.len(), 1);
        assert_eq!(store.update(1, one(series("x", "c"), 1.0, 1), &mut Families::new()), 0);
        assert_eq!(store.len(), 2);
    }

    /// A resource with metrics on two partitions of one worker has its `target_info` in both partitions' stores;
    /// a scrape served both lines, the same series twice. Once, with the newest point.
    #[test]
    fn a_series_held_by_two_partitions_is_served_once() {
        let mut store = Store::new(10);
        let info = series("target_info", "a");
        store.update(0, one(info.clone(), 1.0, 1_000), &mut Families::new());
        store.update(1, one(info.clone(), 1.0, 2_000), &mut Families::new());
        let served: Vec<_> = store.iter().filter(|(labels, _)| **labels == info).collect();
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].1.timestamp, 2_000);
    }

    #[test]
    fn expired_series_and_their_families_go() {
        let mut store = Store::new(10);
        let mut families = Families::from([
            ("latency".to_owned(), Family { kind: Kind::Histogram, help: String::new() }),
            ("carts".to_owned(), Family { kind: Kind::Gauge, help: String::new() }),
        ]);
        store.update(0, one(series("latency_bucket", "a"), 1.0, 1_000), &mut families);
        store.update(0, one(series("carts", "a"), 1.0, 5_000), &mut Families::new());
        assert_eq!(store.family("latency_count").map(|(f, _)| f), Some("latency"));
        assert_eq!(store.family("carts_count").map(|(f, _)| f), None, "a gauge has no _count");
        assert_eq!(store.expire(2_000), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.family("latency_bucket"), None, "the family went with its last series");
        assert!(store.family("carts").is_some());
    }
}
