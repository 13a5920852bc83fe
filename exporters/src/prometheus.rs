//! Prometheus remote-write 1.0, from the metrics topic (business metrics and the sampler's RED metrics).
//!
//! OTLP is translated as the OpenTelemetry–Prometheus compatibility specification says:
//! * names: characters outside `[a-zA-Z0-9:]` separate words joined by `_`; the unit is appended (`s` → `seconds`,
//!   `By` → `bytes`, `{...}` annotations dropped, `x/y` → `x_per_y`), `_ratio` for gauges of unit `1`, `_total` for
//!   monotonic sums;
//! * monotonic cumulative sums → counters, non-monotonic sums and gauges → gauges; delta sums are accumulated into
//!   cumulative series here (the metrics topic is partitioned by resource, scope and name, so one exporter owns every
//!   point of a series); delta histograms are dropped and counted (`delta_histogram`);
//! * histograms → `_bucket{le}` (cumulative, ending in `+Inf`), `_sum`, `_count`; summaries → `{quantile}`, `_sum`,
//!   `_count`; exponential histograms → the same classic buckets, one per exponential bucket, with the bucket's upper
//!   bound as `le` (negative buckets and the zero bucket first), so any Prometheus reads them without native
//!   histograms;
//! * `job` = `service.namespace/service.name`, `instance` = `service.instance.id`, the other resource attributes on a
//!   `target_info` series, and on every series too with `resource_to_telemetry_conversion`; the scope as
//!   `otel_scope_name`/`otel_scope_version`; `external_labels` on every series;
//! * label names sanitized (invalid characters → `_`, a leading digit gets `key_`), values of colliding names joined
//!   with `;`, empty values dropped, labels sorted; samples of a series in timestamp order;
//! * a point flagged `NO_RECORDED_VALUE` becomes a staleness marker.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality, NumberDataPoint};
use prost::Message as _;
use tailgate_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest, STALE_NAN};

use crate::config::PrometheusConfig;
use crate::{Backend, Batch};

/// Series → samples, labels sorted by name (`__name__` among them).
pub type Series = BTreeMap<Vec<Label>, Vec<Sample>>;

pub struct Prometheus {
    config: PrometheusConfig,
    /// Running totals of delta sums, by series.
    totals: HashMap<Vec<Label>, f64>,
    /// The latest `target_info` sample sent per resource. A resource's metrics are spread over partitions (the
    /// topic is keyed by metric name), so its records arrive out of time order; `target_info` only moves forward.
    target_info: HashMap<Vec<Label>, i64>,
}

impl Prometheus {
    pub fn new(config: PrometheusConfig) -> Prometheus {
        Prometheus { config, totals: HashMap::new(), target_info: HashMap::new() }
    }
}

impl Backend for Prometheus {
    type Items = Series;

    fn add(&mut self, items: &mut Series, payload: &[u8]) -> Result<Batch, String> {
        let request = ExportMetricsServiceRequest::decode(payload).map_err(|e| format!("not OTLP metric data: {e}"))?;
        let mut out = Out { items, batch: Batch::default(), totals: &mut self.totals, config: &self.config };
        for resource_metrics in &request.resource_metrics {
            let attributes = resource_metrics.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
            let resource = ResourceLabels::new(attributes, &self.config);
            let mut latest = 0u64;
            for scope_metrics in &resource_metrics.scope_metrics {
                let mut base = resource.base.clone();
                if let Some(scope) = &scope_metrics.scope {
                    insert(&mut base, "otel_scope_name", &scope.name);
                    insert(&mut base, "otel_scope_version", &scope.version);
                }
                for metric in &scope_metrics.metrics {
                    latest = latest.max(out.metric(metric, &base));
                }
            }
            if let Some(mut info) = resource.target_info {
                info.insert("__name__".into(), "target_info".into());
                let labels = label_vec(info);
                let time = ms(latest);
                let newer = self.target_info.get(&labels).is_none_or(|last| *last < time);
                let room = self.target_info.len() < self.config.max_delta_series.max(1);
                if latest > 0 && newer && (room || self.target_info.contains_key(&labels)) {
                    self.target_info.insert(labels.clone(), time);
                    out.items.entry(labels).or_default().push(Sample { value: 1.0, timestamp: time });
                    out.batch.items += 1;
                }
            }
        }
        Ok(out.batch)
    }

    fn encode(&mut self, items: Series) -> Bytes {
        let timeseries = items
            .into_iter()
            .map(|(labels, mut samples)| {
                // One series' samples go out in timestamp order; a repeated timestamp keeps its last value.
                samples.sort_by_key(|s| s.timestamp);
                samples.dedup_by(|later, earlier| {
                    let same = later.timestamp == earlier.timestamp;
                    if same {
                        earlier.value = later.value;
                    }
                    same
                });
                TimeSeries { labels, samples }
            })
            .collect();
        crate::http::snappy(&WriteRequest { timeseries }.encode_to_vec())
    }
}

/// What a resource contributes to its series.
struct ResourceLabels {
    /// Labels every series of the resource carries: job, instance, external labels, and with
    /// `resource_to_telemetry_conversion` every resource attribute.
    base: BTreeMap<String, String>,
    /// `target_info`'s labels, when the resource has attributes beyond job and instance.
    target_info: Option<BTreeMap<String, String>>,
}

impl ResourceLabels {
    fn new(attributes: &[KeyValue], config: &PrometheusConfig) -> ResourceLabels {
        let get = |key: &str| attributes.iter().find(|kv| kv.key == key).map(|kv| value_string(kv.value.as_ref()));
        let name = get("service.name").unwrap_or_default();
        let job = match get("service.namespace") {
            Some(namespace) if !namespace.is_empty() && !name.is_empty() => format!("{namespace}/{name}"),
            _ => name,
        };
        let instance = get("service.instance.id").unwrap_or_default();
        let identity = ["service.name", "service.namespace", "service.instance.id"];
        let mut base = BTreeMap::new();
        if config.resource_to_telemetry_conversion {
            add_attributes(&mut base, attributes.iter().filter(|kv| !identity.contains(&kv.key.as_str())));
        }
        insert_over(&mut base, "job", &job);
        insert_over(&mut base, "instance", &instance);
        for (name, value) in &config.external_labels {
            base.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let others: Vec<&KeyValue> = attributes.iter().filter(|kv| !identity.contains(&kv.key.as_str())).collect();
        let target_info = (!others.is_empty()).then(|| {
            let mut labels = BTreeMap::new();
            add_attributes(&mut labels, others.into_iter());
            insert_over(&mut labels, "job", &job);
            insert_over(&mut labels, "instance", &instance);
            labels
        });
        ResourceLabels { base, target_info }
    }
}

struct Out<'a> {
    items: &'a mut Series,
    batch: Batch,
    totals: &'a mut HashMap<Vec<Label>, f64>,
    config: &'a PrometheusConfig,
}

impl Out<'_> {
    /// Translates one metric; returns the latest point time seen (Unix nanoseconds).
    fn metric(
        &mut self,
        metric: &opentelemetry_proto::tonic::metrics::v1::Metric,
        base: &BTreeMap<String, String>,
    ) -> u64 {
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
                        let key = labels.clone();
                        let full = self.totals.len() >= self.config.max_delta_series.max(1);
                        match self.totals.get_mut(&key) {
                            Some(total) => {
                                *total += value;
                                value = *total;
                            }
                            None if full => {
                                self.drop("delta_series_limit", 1);
                                continue;
                            }
                            None => {
                                self.totals.insert(key, value);
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

    fn name(
        &mut self,
        metric: &opentelemetry_proto::tonic::metrics::v1::Metric,
        kind: Kind,
        points: usize,
    ) -> Option<String> {
        let name = metric_name(&metric.name, &metric.unit, kind);
        if name.is_none() {
            self.drop("invalid_name", points as u64);
        }
        name
    }

    /// A histogram's name, unless its points must be dropped: delta histograms are not accumulated (counted as
    /// `delta_histogram`).
    fn histogram_name(
        &mut self,
        metric: &opentelemetry_proto::tonic::metrics::v1::Metric,
        temporality: i32,
        points: usize,
    ) -> Option<String> {
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

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

/// The Prometheus name of an OTLP metric, or `None` when nothing valid is left.
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> Option<String> {
    let mut words: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    if words.is_empty() {
        return None;
    }
    let unit = strip_annotations(unit);
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), Some(per.trim())),
        None => (unit.trim(), None),
    };
    let main = main_unit(main);
    for word in main.split('_').filter(|w| !w.is_empty()) {
        if !words.iter().any(|w| w == word) {
            words.push(word.to_owned());
        }
    }
    if let Some(per) = per.map(per_unit).filter(|p| !p.is_empty()) {
        if !words.contains(&per) {
            words.push("per".into());
            words.push(per);
        }
    }
    if kind == Kind::Gauge && unit.trim() == "1" && words.last().map(String::as_str) != Some("ratio") {
        words.push("ratio".into());
    }
    if kind == Kind::Counter {
        words.retain(|w| w != "total");
        words.push("total".into());
    }
    let mut name = words.join("_");
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    Some(name)
}

fn strip_annotations(unit: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn main_unit(unit: &str) -> String {
    let known = match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "1" | "" => "",
        other => return sanitize_words(other),
    };
    known.to_owned()
}

fn per_unit(unit: &str) -> String {
    let known = match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => return sanitize_words(other),
    };
    known.to_owned()
}

fn sanitize_words(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("_")
}

/// A valid Prometheus label name for an attribute key: invalid characters become `_`, a leading digit gets `key_`.
pub fn sanitize_label(key: &str) -> String {
    let mut name: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "key_");
    }
    name
}

/// Adds attributes as labels; values of keys that sanitize to the same name are joined with `;` in key order.
fn add_attributes<'a>(labels: &mut BTreeMap<String, String>, attributes: impl Iterator<Item = &'a KeyValue>) {
    let mut sorted: Vec<&KeyValue> = attributes.collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for kv in sorted {
        let value = value_string(kv.value.as_ref());
        if value.is_empty() || kv.key.is_empty() {
            continue;
        }
        let name = sanitize_label(&kv.key);
        if name.starts_with("__") {
            continue;
        }
        labels
            .entry(name)
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
}

fn insert(labels: &mut BTreeMap<String, String>, name: &str, value: &str) {
    if !value.is_empty() {
        labels.entry(name.to_owned()).or_insert_with(|| value.to_owned());
    }
}

fn insert_over(labels: &mut BTreeMap<String, String>, name: &str, value: &str) {
    if !value.is_empty() {
        labels.insert(name.to_owned(), value.to_owned());
    }
}

/// A point's labels, sorted: the resource's and scope's, then the point's attributes (which don't override job,
/// instance or the scope). Built once per point and shared by its series (buckets, sum, count, quantiles).
fn point_labels(base: &BTreeMap<String, String>, attributes: &[KeyValue]) -> Vec<Label> {
    if attributes.is_empty() {
        return base.iter().map(|(name, value)| Label { name: name.clone(), value: value.clone() }).collect();
    }
    let mut point = BTreeMap::new();
    add_attributes(&mut point, attributes.iter());
    let mut labels = base.clone();
    for (key, value) in point {
        labels.entry(key).or_insert(value);
    }
    label_vec(labels)
}

/// One series of a point: its labels plus `__name__` and an extra label (`le`, `quantile`), kept sorted.
fn series(point: &[Label], name: &str, extra: Option<(&str, String)>) -> Vec<Label> {
    let mut labels = Vec::with_capacity(point.len() + 2);
    labels.extend_from_slice(point);
    insert_sorted(&mut labels, "__name__", name.to_owned());
    if let Some((key, value)) = extra {
        insert_sorted(&mut labels, key, value);
    }
    labels
}

fn insert_sorted(labels: &mut Vec<Label>, name: &str, value: String) {
    match labels.binary_search_by(|label| label.name.as_str().cmp(name)) {
        Ok(at) => labels[at].value = value,
        Err(at) => labels.insert(at, Label { name: name.to_owned(), value }),
    }
}

fn label_vec(labels: BTreeMap<String, String>) -> Vec<Label> {
    labels.into_iter().map(|(name, value)| Label { name, value }).collect()
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

fn ms(time_unix_nano: u64) -> i64 {
    (time_unix_nano / 1_000_000) as i64
}

/// How Prometheus writes a float in a label (`0.5`, `1`, `+Inf`).
pub fn format_float(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// An exponential histogram's buckets as classic `(upper bound, count)` pairs in increasing bound order: negative
/// buckets (most negative first), the zero bucket, then positive buckets. Bucket `i` of scale `s` covers
/// `(base^i, base^(i+1)]` with `base = 2^(2^-s)`.
fn exponential_buckets(
    point: &opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint,
) -> Vec<(f64, u64)> {
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

/// An attribute value as a label value: strings as is, other scalars in their usual form, the rest as JSON.
pub fn value_string(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format_float(*d),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(other) => crate::loki::any_json(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_specification() {
        let cases = [
            ("http.server.request.duration", "s", Kind::Histogram, "http_server_request_duration_seconds"),
            ("checkout.completed", "{checkout}", Kind::Counter, "checkout_completed_total"),
            ("checkout.value", "{cent}", Kind::Histogram, "checkout_value"),
            ("requests_total", "", Kind::Counter, "requests_total"),
            ("system.memory.usage", "By", Kind::Gauge, "system_memory_usage_bytes"),
            ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
            ("throughput", "By/s", Kind::Gauge, "throughput_bytes_per_second"),
            ("latency_seconds", "s", Kind::Histogram, "latency_seconds"),
            ("2xx.responses", "", Kind::Counter, "_2xx_responses_total"),
            ("traces.span.metrics.calls", "", Kind::Counter, "traces_span_metrics_calls_total"),
        ];
        for (name, unit, kind, expected) in cases {
            assert_eq!(metric_name(name, unit, kind).as_deref(), Some(expected), "{name} [{unit}]");
        }
        assert_eq!(metric_name("...", "s", Kind::Gauge), None);
    }

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(sanitize_label("http.route"), "http_route");
        assert_eq!(sanitize_label("0day"), "key_0day");
        assert_eq!(sanitize_label("k8s.pod-name"), "k8s_pod_name");
    }

    #[test]
    fn exponential_buckets_are_cumulative_bounds_in_order() {
        use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
        use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint;
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
