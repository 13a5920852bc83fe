//! OTLP points as Prometheus samples: gauges and sums as one series, histograms and summaries as their classic
//! `_bucket`/`_sum`/`_count` series, exponential histograms as classic buckets, `NO_RECORDED_VALUE` as a staleness
//! marker.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint, Metric, NumberDataPoint,
};
use tailgate_proto::prometheus::{Label, Sample, STALE_NAN};

use super::labels::{point_labels, series};
use super::naming::{metric_name, Kind};
use super::state::DeltaTotals;
use crate::attributes::format_float;
use crate::backend::Batch;

/// Series → samples, labels sorted by name (`__name__` among them).
pub type Series = BTreeMap<Vec<Label>, Vec<Sample>>;

/// One record's translation: the batch's series it adds to, and the backend's running totals of delta sums.
pub struct Out<'a> {
    pub items: &'a mut Series,
    pub batch: Batch,
    pub totals: &'a mut DeltaTotals,
    /// The record's partition, which its delta totals belong to.
    pub partition: i32,
}

impl Out<'_> {
    /// Translates one metric; returns the latest point time seen (Unix nanoseconds).
    pub fn metric(&mut self, metric: &Metric, base: &BTreeMap<String, String>) -> u64 {
        let Some(data) = &metric.data else { return 0 };
        let mut latest = 0;
        match data {
            metric::Data::Gauge(gauge) => {
                let Some(name) = self.name(metric, Kind::Gauge, gauge.data_points.len()) else { return 0 };
                for point in &gauge.data_points {
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
                    latest = latest.max(point.time_unix_nano);
                    let labels = series(&point_labels(base, &point.attributes), &name, None);
                    let mut value = number(point);
                    if kind == Kind::Counter && value.is_nan() && !is_stale(value) {
                        self.drop("nan_counter", 1);
                        continue;
                    }
                    if delta && !is_stale(value) {
                        match self.totals.add(self.partition, &labels, value) {
                            Some(total) => value = total,
                            None => {
                                self.drop("delta_series_limit", 1);
                                continue;
                            }
                        }
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
                    );
                }
            }
            metric::Data::ExponentialHistogram(histogram) => {
                let points = histogram.data_points.len();
                let Some(name) = self.histogram_name(metric, histogram.aggregation_temporality, points) else {
                    return 0;
                };
                for point in &histogram.data_points {
                    latest = latest.max(point.time_unix_nano);
                    let buckets = exponential_buckets(point);
                    self.histogram(
                        &point_labels(base, &point.attributes),
                        &name,
                        point.time_unix_nano,
                        point.flags,
                        buckets.into_iter(),
                        point.count,
                        point.sum,
                    );
                }
            }
            metric::Data::Summary(summary) => {
                let Some(name) = self.name(metric, Kind::Summary, summary.data_points.len()) else { return 0 };
                for point in &summary.data_points {
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
    ) {
        let t = ms(time_unix_nano);
        let stale = flags & 1 != 0;
        let v = |value: f64| if stale { f64::from_bits(STALE_NAN) } else { value };
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, n) in buckets {
            cumulative += n;
            self.push(series(point, &bucket, Some(("le", format_float(bound)))), t, v(cumulative as f64));
        }
        self.push(series(point, &bucket, Some(("le", "+Inf".into()))), t, v(count as f64));
        if let Some(sum) = sum {
            self.push(series(point, &format!("{name}_sum"), None), t, v(sum));
        }
        self.push(series(point, &format!("{name}_count"), None), t, v(count as f64));
    }

    fn name(&mut self, metric: &Metric, kind: Kind, points: usize) -> Option<String> {
        let name = metric_name(&metric.name, &metric.unit, kind);
        if name.is_none() {
            self.drop("invalid_name", points as u64);
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

    fn push(&mut self, labels: Vec<Label>, timestamp: i64, value: f64) {
        self.items.entry(labels).or_default().push(Sample { value, timestamp });
        self.batch.items += 1;
    }

    fn drop(&mut self, reason: &'static str, count: u64) {
        self.batch.dropped.push((reason, count));
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

/// An exponential histogram's buckets as classic `(upper bound, count)` pairs in increasing bound order: negative
/// buckets (most negative first), the zero bucket, then positive buckets. Bucket `i` of scale `s` covers
/// `(base^i, base^(i+1)]` with `base = 2^(2^-s)`.
fn exponential_buckets(point: &ExponentialHistogramDataPoint) -> Vec<(f64, u64)> {
    let base = 2f64.powf(2f64.powi(-point.scale));
    let mut buckets = Vec::new();
    if let Some(negative) = &point.negative {
        for (i, count) in negative.bucket_counts.iter().enumerate().rev() {
            let index = negative.offset as f64 + i as f64;
            buckets.push((-base.powf(index), *count));
        }
    }
    if point.zero_count > 0 || !buckets.is_empty() {
        buckets.push((point.zero_threshold.max(0.0), point.zero_count));
    }
    if let Some(positive) = &point.positive {
        for (i, count) in positive.bucket_counts.iter().enumerate() {
            let index = positive.offset as f64 + i as f64;
            buckets.push((base.powf(index + 1.0), *count));
        }
    }
    buckets
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
        assert_eq!(exponential_buckets(&point), vec![(-2.0, 4), (0.0, 1), (2.0, 2), (4.0, 3)]);
    }
}
