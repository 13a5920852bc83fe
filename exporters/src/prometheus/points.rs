//! OTLP points as Prometheus samples: gauges and sums as one series, histograms and summaries as their classic
//! `_bucket`/`_sum`/`_count` series, exponential histograms as classic buckets, `NO_RECORDED_VALUE` as a staleness
//! marker.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use opentelemetry_proto::tonic::metrics::v1 as otlp;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint, Metric, NumberDataPoint,
};
use tailgate_proto::prometheus::{Exemplar, Label, Sample, STALE_NAN};

use super::labels::{point_labels, series};
use super::naming::{metric_name, Kind};
use super::state::{DeltaTotals, Refused, Scales};
use crate::attributes::format_float;
use crate::backend::Batch;
use crate::delivery::Tenant;

/// Series → samples, labels sorted by name (`__name__` among them).
pub type Series = BTreeMap<Vec<Label>, Vec<Sample>>;

/// Exemplars by series: a counter's own, a histogram's on the `_bucket` series whose bound holds the value.
pub type Exemplars = BTreeMap<Vec<Label>, Vec<Exemplar>>;

/// What records translate into: series with their samples, and the exemplars of some of them.
#[derive(Debug, Default)]
pub struct Translated {
    pub series: Series,
    pub exemplars: Exemplars,
}

/// One record's translation: the batch's series it adds to, and the backend's running totals of delta sums.
pub struct Out<'a> {
    pub items: &'a mut Translated,
    pub batch: Batch,
    pub totals: &'a mut DeltaTotals,
    /// Each exponential histogram series' fixed scale.
    pub scales: &'a mut Scales,
    /// When the record is translated: what the delta totals' expiration is measured against.
    pub now: std::time::Instant,
    /// See [`super::Translation::rebuilds_store`].
    pub rebuilds_store: bool,
    /// The record's partition and tenant, which its delta totals belong to.
    pub partition: i32,
    pub tenant: &'a Tenant,
    /// Request bytes one record may become; the points past it are dropped (`translation_limit`).
    pub limit: usize,
    /// Where each metric family's kind and description are noted, for an exposition that types its series (the
    /// scrape endpoint); remote-write 1.0 sends none.
    pub families: Option<&'a mut Families>,
}

/// A metric family as the text exposition declares it: its `# TYPE` and `# HELP`.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub kind: Kind,
    pub help: String,
}

/// Families by their Prometheus name (without `_total`, `_bucket`, `_sum`, `_count`).
pub type Families = std::collections::HashMap<String, Family>;

/// Buckets an exponential histogram point may become: OpenTelemetry SDKs' default `max_size`, and Prometheus's
/// native-histogram bucket limit. A point with more is downscaled (adjacent buckets merged) until it fits, so one
/// small record can't become a series per byte.
pub const MAX_EXPONENTIAL_BUCKETS: usize = 160;

/// What a sample adds to a remote-write body: a double, a varint timestamp, their tags and length.
const SAMPLE_BYTES: usize = 20;
/// What an exemplar adds: two labels of hex IDs, a value and a timestamp.
const EXEMPLAR_BYTES: usize = 96;

impl Out<'_> {
    /// Translates one metric; returns the latest point time seen (Unix nanoseconds).
    pub fn metric(&mut self, metric: &Metric, base: &BTreeMap<String, String>) -> u64 {
        let Some(data) = &metric.data else { return 0 };
        let mut latest = 0;
        match data {
            metric::Data::Gauge(gauge) => {
                let Some(name) = self.name(metric, Kind::Gauge, gauge.data_points.len()) else { return 0 };
                for point in &gauge.data_points {
                    if !self.room() {
                        continue;
                    }
                    latest = latest.max(point.time_unix_nano);
                    let labels = series(&point_labels(base, &point.attributes), &name, None);
                    self.push(labels, ms(point.time_unix_nano), number(point));
                }
            }
            metric::Data::Sum(sum) => {
                let kind = if sum.is_monotonic { Kind::Counter } else { Kind::Gauge };
                let Some(name) = self.name(metric, kind, sum.data_points.len()) else { return 0 };
                let delta = sum.aggregation_temporality == AggregationTemporality::Delta as i32;
                for point in &sum.data_points {
                    if !self.room() {
                        continue;
                    }
                    latest = latest.max(point.time_unix_nano);
                    let labels = series(&point_labels(base, &point.attributes), &name, None);
                    let mut value = number(point);
                    if kind == Kind::Counter && value.is_nan() && !is_stale(value) {
                        self.drop("nan_counter", 1);
                        continue;
                    }
                    if delta && !is_stale(value) {
                        let span = (point.start_time_unix_nano, point.time_unix_nano);
                        match self.totals.add(self.partition, self.tenant, &labels, span, value, self.now) {
                            Ok(total) => value = total,
                            Err(Refused::Limit) => {
                                self.drop("delta_series_limit", 1);
                                continue;
                            }
                            // Read again into a store being rebuilt: the total as it stands, counted once.
                            Err(Refused::OutOfOrder { total }) if self.rebuilds_store => value = total,
                            Err(Refused::OutOfOrder { .. }) => {
                                self.drop("delta_out_of_order", 1);
                                continue;
                            }
                        }
                    }
                    if kind == Kind::Counter {
                        self.exemplars(&labels, &point.exemplars);
                    }
                    self.push(labels, ms(point.time_unix_nano), value);
                }
            }
            metric::Data::Histogram(histogram) => {
                let points = histogram.data_points.len();
                let Some(name) = self.histogram_name(metric, histogram.aggregation_temporality, points) else {
                    return 0;
                };
                for point in &histogram.data_points {
                    if !self.room() {
                        continue;
                    }
                    if point.bucket_counts.len() != point.explicit_bounds.len() + 1 && !point.bucket_counts.is_empty() {
                        self.drop("invalid_histogram", 1);
                        continue;
                    }
                    latest = latest.max(point.time_unix_nano);
                    let buckets = point.explicit_bounds.iter().copied().zip(point.bucket_counts.iter().copied());
                    self.histogram(
                        &point_labels(base, &point.attributes),
                        &name,
                        point.time_unix_nano,
                        point.flags,
                        buckets,
                        point.count,
                        point.sum,
                        &point.exemplars,
                    );
                }
            }
            metric::Data::ExponentialHistogram(histogram) => {
                let points = histogram.data_points.len();
                let Some(name) = self.histogram_name(metric, histogram.aggregation_temporality, points) else {
                    return 0;
                };
                for point in &histogram.data_points {
                    if !self.room() {
                        continue;
                    }
                    let labels = point_labels(base, &point.attributes);
                    let own = own_scale(point);
                    let scale = self.scales.fix(self.tenant, &name, &labels, own, self.now);
                    let Some(buckets) = exponential_buckets(point, scale) else {
                        self.drop("invalid_histogram", 1);
                        continue;
                    };
                    latest = latest.max(point.time_unix_nano);
                    self.histogram(
                        &labels,
                        &name,
                        point.time_unix_nano,
                        point.flags,
                        buckets.into_iter(),
                        point.count,
                        point.sum,
                        &point.exemplars,
                    );
                }
            }
            metric::Data::Summary(summary) => {
                let Some(name) = self.name(metric, Kind::Summary, summary.data_points.len()) else { return 0 };
                for point in &summary.data_points {
                    if !self.room() {
                        continue;
                    }
                    latest = latest.max(point.time_unix_nano);
                    let t = ms(point.time_unix_nano);
                    let stale = point.flags & 1 != 0;
                    let v = |value: f64| if stale { f64::from_bits(STALE_NAN) } else { value };
                    let labels_of_point = point_labels(base, &point.attributes);
                    for quantile in &point.quantile_values {
                        let labels =
                            series(&labels_of_point, &name, Some(("quantile", format_float(quantile.quantile))));
                        self.push(labels, t, v(quantile.value));
                    }
                    self.push(series(&labels_of_point, &format!("{name}_sum"), None), t, v(point.sum));
                    self.push(series(&labels_of_point, &format!("{name}_count"), None), t, v(point.count as f64));
                }
            }
        }
        latest
    }

    #[allow(clippy::too_many_arguments)]
    fn histogram(
        &mut self,
        point: &[Label],
        name: &str,
        time_unix_nano: u64,
        flags: u32,
        buckets: impl Iterator<Item = (f64, u64)>,
        count: u64,
        sum: Option<f64>,
        exemplars: &[otlp::Exemplar],
    ) {
        let t = ms(time_unix_nano);
        let stale = flags & 1 != 0;
        let v = |value: f64| if stale { f64::from_bits(STALE_NAN) } else { value };
        let bucket = format!("{name}_bucket");
        // Each exemplar goes on the first bucket whose bound holds its value.
        let mut waiting: Vec<&otlp::Exemplar> = exemplars.iter().collect();
        waiting.sort_by(|a, b| exemplar_value(a).total_cmp(&exemplar_value(b)));
        let mut waiting = waiting.as_slice();
        let mut cumulative = 0u64;
        for (bound, n) in buckets {
            cumulative = cumulative.saturating_add(n);
            let labels = series(point, &bucket, Some(("le", format_float(bound))));
            let held = waiting.iter().take_while(|e| exemplar_value(e) <= bound).count();
            if held > 0 {
                let (these, rest) = waiting.split_at(held);
                self.exemplar_list(&labels, these);
                waiting = rest;
            }
            self.push(labels, t, v(cumulative as f64));
        }
        let labels = series(point, &bucket, Some(("le", "+Inf".into())));
        self.exemplar_list(&labels, waiting);
        self.push(labels, t, v(count as f64));
        if let Some(sum) = sum {
            self.push(series(point, &format!("{name}_sum"), None), t, v(sum));
        }
        self.push(series(point, &format!("{name}_count"), None), t, v(count as f64));
    }

    fn name(&mut self, metric: &Metric, kind: Kind, points: usize) -> Option<String> {
        let name = metric_name(&metric.name, &metric.unit, kind);
        match (&name, self.families.as_deref_mut()) {
            (None, _) => self.drop("invalid_name", points as u64),
            (Some(name), Some(families)) => {
                let family = Family { kind, help: metric.description.clone() };
                if families.get(name) != Some(&family) {
                    families.insert(name.clone(), family);
                }
            }
            (Some(_), None) => {}
        }
        name
    }

    /// A histogram's name, unless its points must be dropped: delta histograms are not accumulated (counted as
    /// `delta_histogram`).
    fn histogram_name(&mut self, metric: &Metric, temporality: i32, points: usize) -> Option<String> {
        if temporality == AggregationTemporality::Delta as i32 {
            self.drop("delta_histogram", points as u64);
            return None;
        }
        self.name(metric, Kind::Histogram, points)
    }

    /// Whether the record's translation has room for another point; if not the point is dropped and counted. A
    /// point's own output is bounded (see [`MAX_EXPONENTIAL_BUCKETS`]), so a record never becomes much more than
    /// `limit`.
    fn room(&mut self) -> bool {
        let room = self.batch.bytes < self.limit;
        if !room {
            self.drop("translation_limit", 1);
        }
        room
    }

    fn push(&mut self, labels: Vec<Label>, timestamp: i64, value: f64) {
        let sample = Sample { value, timestamp };
        match self.items.series.entry(labels) {
            Entry::Occupied(mut series) => series.get_mut().push(sample),
            Entry::Vacant(series) => {
                self.batch.bytes += series_bytes(series.key());
                series.insert(vec![sample]);
            }
        }
        self.batch.bytes += SAMPLE_BYTES;
        self.batch.items += 1;
    }

    /// Adds a point's exemplars to `labels`' series.
    fn exemplars(&mut self, labels: &[Label], exemplars: &[otlp::Exemplar]) {
        let all: Vec<&otlp::Exemplar> = exemplars.iter().collect();
        self.exemplar_list(labels, &all);
    }

    fn exemplar_list(&mut self, labels: &[Label], exemplars: &[&otlp::Exemplar]) {
        if exemplars.is_empty() {
            return;
        }
        let translated = exemplars.iter().map(|e| {
            let mut labels = Vec::with_capacity(2);
            if !e.span_id.is_empty() {
                labels.push(Label { name: "span_id".into(), value: hex::encode(&e.span_id) });
            }
            if !e.trace_id.is_empty() {
                labels.push(Label { name: "trace_id".into(), value: hex::encode(&e.trace_id) });
            }
            Exemplar { labels, value: exemplar_value(e), timestamp: ms(e.time_unix_nano) }
        });
        let held = self.items.exemplars.entry(labels.to_vec()).or_default();
        let before = held.len();
        held.extend(translated);
        self.batch.bytes += (held.len() - before) * EXEMPLAR_BYTES;
    }

    fn drop(&mut self, reason: &'static str, count: u64) {
        self.batch.dropped.push((reason, count));
    }
}

fn exemplar_value(exemplar: &otlp::Exemplar) -> f64 {
    match exemplar.value {
        Some(otlp::exemplar::Value::AsDouble(value)) => value,
        Some(otlp::exemplar::Value::AsInt(value)) => value as f64,
        None => 0.0,
    }
}

fn number(point: &NumberDataPoint) -> f64 {
    if point.flags & 1 != 0 {
        return f64::from_bits(STALE_NAN);
    }
    match point.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => 0.0,
    }
}

fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE_NAN
}

/// OTLP's Unix nanoseconds as remote-write's Unix milliseconds.
pub fn ms(time_unix_nano: u64) -> i64 {
    (time_unix_nano / 1_000_000) as i64
}

/// What a series' labels add to a remote-write body: each label's strings with their tags and lengths.
pub fn series_bytes(labels: &[Label]) -> usize {
    labels.iter().map(|l| l.name.len() + l.value.len() + 6).sum::<usize>() + 4
}

/// The scale a point can be translated at on its own: its scale, lowered until it has at most
/// [`MAX_EXPONENTIAL_BUCKETS`] buckets.
fn own_scale(point: &ExponentialHistogramDataPoint) -> i64 {
    let (negative_offset, negative) = buckets_of(point.negative.as_ref());
    let (positive_offset, positive) = buckets_of(point.positive.as_ref());
    let shift = (0..64u32)
        .find(|shift| {
            span(negative_offset, negative.len(), *shift) + span(positive_offset, positive.len(), *shift)
                <= MAX_EXPONENTIAL_BUCKETS as u64
        })
        .unwrap_or(63);
    point.scale as i64 - shift as i64
}

fn buckets_of(buckets: Option<&otlp::exponential_histogram_data_point::Buckets>) -> (i32, &[u64]) {
    buckets.map_or((0, &[][..]), |b| (b.offset, b.bucket_counts.as_slice()))
}

/// An exponential histogram's buckets as classic `(upper bound, count)` pairs in increasing bound order: negative
/// buckets (most negative first), the zero bucket, then positive buckets. Bucket `i` of scale `s` covers
/// `(base^i, base^(i+1)]` with `base = 2^(2^-s)`. The point is translated at `scale` (at most its own: adjacent
/// buckets merged), the series' fixed scale, so that its `le` set does not change with each point's scale
/// ([`super::state::Scales`]). `None` when the scale and offsets give bounds that are infinite, NaN or not
/// increasing (equal bounds would be one series twice): the point can't be expressed as classic buckets.
fn exponential_buckets(point: &ExponentialHistogramDataPoint, scale: i64) -> Option<Vec<(f64, u64)>> {
    let (negative_offset, negative) = buckets_of(point.negative.as_ref());
    let (positive_offset, positive) = buckets_of(point.positive.as_ref());
    let scale = scale.min(point.scale as i64);
    let shift = (point.scale as i64 - scale).clamp(0, 63) as u32;
    let (negative_offset, negative) = downscale(negative_offset, negative, shift);
    let (positive_offset, positive) = downscale(positive_offset, positive, shift);
    let scale = point.scale as i64 - shift as i64;
    // 2^(index * 2^-scale), computed in one exponent so that no intermediate power overflows first.
    let power = |index: i64| (index as f64 * 2f64.powi(-(scale.clamp(-1100, 1100) as i32))).exp2();
    let mut buckets = Vec::with_capacity(negative.len() + positive.len() + 1);
    for (i, count) in negative.iter().enumerate().rev() {
        buckets.push((-power(negative_offset + i as i64), *count));
    }
    if point.zero_count > 0 || !buckets.is_empty() {
        buckets.push((point.zero_threshold.max(0.0), point.zero_count));
    }
    for (i, count) in positive.iter().enumerate() {
        buckets.push((power(positive_offset + i as i64 + 1), *count));
    }
    let valid = buckets.iter().all(|(bound, _)| bound.is_finite()) && buckets.windows(2).all(|w| w[0].0 < w[1].0);
    valid.then_some(buckets)
}

/// How many buckets `len` buckets from `offset` become at `shift` scales lower.
fn span(offset: i32, len: usize, shift: u32) -> u64 {
    if len == 0 {
        return 0;
    }
    let first = offset as i64 >> shift;
    let last = (offset as i64 + len as i64 - 1) >> shift;
    (last - first + 1) as u64
}

/// Buckets at `shift` scales lower: bucket `i` joins bucket `i >> shift`. Returns the new offset and counts.
fn downscale(offset: i32, counts: &[u64], shift: u32) -> (i64, Vec<u64>) {
    let first = offset as i64 >> shift;
    if shift == 0 || counts.is_empty() {
        return (first, counts.to_vec());
    }
    let mut merged = vec![0u64; span(offset, counts.len(), shift) as usize];
    for (i, count) in counts.iter().enumerate() {
        let at = ((offset as i64 + i as i64) >> shift) - first;
        merged[at as usize] = merged[at as usize].saturating_add(*count);
    }
    (first, merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_buckets_are_cumulative_bounds_in_order() {
        use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
        let point = ExponentialHistogramDataPoint {
            scale: 0,
            zero_count: 1,
            positive: Some(Buckets { offset: 0, bucket_counts: vec![2, 3] }),
            negative: Some(Buckets { offset: 1, bucket_counts: vec![4] }),
            ..Default::default()
        };
        assert_eq!(exponential_buckets(&point, own_scale(&point)), Some(vec![(-2.0, 4), (0.0, 1), (2.0, 2), (4.0, 3)]));
    }
}
