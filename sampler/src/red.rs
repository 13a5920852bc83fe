//! RED metrics (rate, errors, duration) from 100% of spans, counted before sampling.
//!
//! The names and attributes follow the OpenTelemetry Collector's `spanmetrics` connector, so dashboards built for
//! it work: `traces.span.metrics.calls` (a cumulative, monotonic sum) and `traces.span.metrics.duration` (a
//! cumulative histogram in milliseconds), by `service.name`, `span.name`, `span.kind` and `status.code`; errors are
//! the calls with `status.code="STATUS_CODE_ERROR"`. Each partition's counts are their own series, identified by
//! the resource's `service.instance.id` (`<worker>/<partition>`, Prometheus's `instance`), with the worker and
//! partition also as `tailgate.sampler.instance` and `tailgate.sampler.partition`, so the series of all workers add
//! up to the whole and never overwrite each other, including while a rebalance moves a partition.
//!
//! Counted at least once: spans a new owner re-reads after a crash or rebalance are counted again.
//!
//! Bounded: span names and service names are chosen by clients, so a partition keeps at most
//! `max_series_per_partition` series; spans of any further combination are counted in one overflow series with the
//! single attribute `otel.metric.overflow=true`, as the Collector's `spanmetrics` does at its cardinality limit.

use std::collections::HashMap;

use crate::series_limit::{bounded, SeriesLimit};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status};
use serde::{Deserialize, Serialize};
use tailgate_config::{Duration, Problems};
use tailgate_proto::wire::{Scanned, SpanFields};

use crate::buffer::PendingTrace;

pub const CALLS: &str = "traces.span.metrics.calls";
pub const DURATION: &str = "traces.span.metrics.duration";

/// The `sampler.red_metrics:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RedMetricsConfig {
    pub enabled: bool,
    /// How often each partition's cumulative series are written to the metrics topic.
    pub interval: Duration,
    /// Upper bounds of the duration histogram's buckets, in milliseconds.
    pub histogram_buckets_ms: Vec<f64>,
    /// Series a partition keeps (a worker: this times its partitions); spans of new combinations beyond it go to
    /// the overflow series.
    pub max_series_per_partition: usize,
}

impl Default for RedMetricsConfig {
    fn default() -> Self {
        RedMetricsConfig {
            enabled: true,
            interval: Duration::from_secs(15),
            histogram_buckets_ms: vec![
                2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
            ],
            max_series_per_partition: 1000,
        }
    }
}

impl RedMetricsConfig {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.interval.get() < std::time::Duration::from_secs(1) {
            problems.push(format!("{path}.interval"), "must be at least 1s");
        }
        if self.histogram_buckets_ms.is_empty() || self.histogram_buckets_ms.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(format!("{path}.histogram_buckets_ms"), "must be a non-empty, strictly increasing list");
        }
        if self.max_series_per_partition == 0 {
            problems.push(format!("{path}.max_series_per_partition"), "must be at least 1");
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    service: String,
    span: String,
    kind: i32,
    status: i32,
    /// The overflow series: every span past the series limit, whatever its service, name, kind and status.
    overflow: bool,
}

/// The resource service name of the overflow series.
const OVERFLOW_SERVICE: &str = "unknown_service";
/// The attribute marking the overflow series, as the Collector's spanmetrics names it.
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

#[derive(Clone, Debug, Default)]
struct Series {
    calls: u64,
    bucket_counts: Vec<u64>,
    sum_ms: f64,
    /// Per bucket, the newest span of a kept trace that fell in it, not yet written out.
    exemplars: Vec<Option<Exemplar>>,
    /// The newest span of a kept trace of the series, for the call counter.
    calls_exemplar: Option<Exemplar>,
}

/// Distinct (name, kind, status) summed locally per resource of a record before reaching the series map.
const LOCAL_SERIES: usize = 32;

impl Series {
    /// Empty, for histogram bounds of `buckets` entries (plus the +Inf bucket).
    fn new(buckets: usize) -> Self {
        Series { bucket_counts: vec![0; buckets + 1], exemplars: vec![None; buckets + 1], ..Default::default() }
    }

    fn observe(&mut self, duration_ms: f64, bounds_ms: &[f64]) {
        self.calls += 1;
        self.sum_ms += duration_ms;
        let bucket = bounds_ms.iter().position(|bound| duration_ms <= *bound).unwrap_or(bounds_ms.len());
        self.bucket_counts[bucket] += 1;
    }
}

/// One partition's cumulative RED series.
#[derive(Debug)]
pub struct RedMetrics {
    buckets_ms: Vec<f64>,
    start_ns: u64,
    limit: SeriesLimit,
    series: HashMap<Key, Series>,
    /// The overflow series is among `series`.
    overflowing: bool,
}

impl RedMetrics {
    /// Series with these histogram bounds, cumulative from `start_ns`, at most `max_series` of them (plus the
    /// overflow series).
    pub fn new(buckets_ms: &[f64], start_ns: u64, max_series: usize) -> Self {
        Self::sharing(buckets_ms, start_ns, SeriesLimit::new(max_series))
    }

    /// Series counted against `limit`, which the partition's other tenants share.
    pub fn sharing(buckets_ms: &[f64], start_ns: u64, limit: SeriesLimit) -> Self {
        RedMetrics { buckets_ms: buckets_ms.to_vec(), start_ns, limit, series: HashMap::new(), overflowing: false }
    }

    /// Counts every span of a request as read from the spans topic. Returns how many went to the overflow series.
    /// Counts every span of a record, scanned on its wire format: the fields RED needs are read from each span's
    /// bytes, the service name from its resource, decoded once per resource.
    pub fn record(&mut self, request: &Scanned<'_>) -> u64 {
        let mut overflowed = 0;
        for rs in &request.resources {
            let resource = rs.decode_resource();
            let service = service_name(resource.as_ref());
            // Summed per (name, kind, status) within the resource first: a record's spans share few names, and
            // a series key (two strings) is then built once per name, not once per span.
            let mut local: Vec<(&str, i32, i32, Series)> = Vec::new();
            for item in rs.scopes.iter().flat_map(|ss| &ss.items) {
                let span = SpanFields::read(item.bytes);
                let (name, kind, status) = (span.name(), span.kind, span.status_code);
                let duration_ms = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e6;
                let at = match local.iter().position(|(n, k, s, _)| *n == name && *k == kind && *s == status) {
                    Some(at) => at,
                    None if local.len() < LOCAL_SERIES => {
                        local.push((name, kind, status, Series::new(self.buckets_ms.len())));
                        local.len() - 1
                    }
                    // Many names in one resource: each span straight into its series.
                    None => {
                        let mut one = Series::new(self.buckets_ms.len());
                        one.observe(duration_ms, &self.buckets_ms);
                        overflowed += self.add(service, name, kind, status, one);
                        continue;
                    }
                };
                local[at].3.observe(duration_ms, &self.buckets_ms);
            }
            for (name, kind, status, observed) in local {
                overflowed += self.add(service, name, kind, status, observed);
            }
        }
        overflowed
    }

    /// Adds `observed` to its series, or to the overflow series if it is new and the limit is reached. Returns the
    /// spans that went to the overflow series.
    fn add(&mut self, service: &str, name: &str, kind: i32, status: i32, observed: Series) -> u64 {
        let (service, name) = (bounded(service), bounded(name));
        let mut key = Key { service: service.to_owned(), span: name.to_owned(), kind, status, overflow: false };
        let mut overflowed = 0;
        if !self.series.contains_key(&key) && !self.limit.take() {
            overflowed = observed.calls;
            if !self.overflowing && !self.limit.take_overflow() {
                // No room even for an overflow series: counted only.
                return overflowed;
            }
            self.overflowing = true;
            key = Key { service: OVERFLOW_SERVICE.to_owned(), span: String::new(), kind: 0, status: 0, overflow: true };
        }
        let buckets = self.buckets_ms.len();
        let series = self.series.entry(key).or_insert_with(|| Series::new(buckets));
        series.calls += observed.calls;
        series.sum_ms += observed.sum_ms;
        for (total, n) in series.bucket_counts.iter_mut().zip(&observed.bucket_counts) {
            *total += n;
        }
        overflowed
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Makes the spans of a kept trace the exemplars of their series: each span becomes the newest exemplar of its
    /// duration bucket and of its call counter, so an exemplar always opens a trace that was kept. Returns the spans
    /// that found their series (one past the series limit counted only in the overflow series finds none).
    pub fn exemplify(&mut self, trace: &PendingTrace) -> u64 {
        let mut set = 0;
        for (resource, bytes) in trace.encoded_spans() {
            let span = SpanFields::read(bytes);
            let key = Key {
                service: bounded(service_name(resource)).to_owned(),
                span: bounded(span.name()).to_owned(),
                kind: span.kind,
                status: span.status_code,
                overflow: false,
            };
            let Some(series) = self.series.get_mut(&key) else { continue };
            let duration_ms = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e6;
            let exemplar = Exemplar {
                time_unix_nano: span.end_time_unix_nano,
                span_id: span.span_id.to_vec(),
                trace_id: span.trace_id.to_vec(),
                value: Some(exemplar::Value::AsDouble(duration_ms)),
                ..Default::default()
            };
            let bucket =
                self.buckets_ms.iter().position(|bound| duration_ms <= *bound).unwrap_or(self.buckets_ms.len());
            series.exemplars[bucket] = Some(exemplar.clone());
            series.calls_exemplar = Some(exemplar);
            set += 1;
        }
        set
    }

    /// The cumulative series as an OTLP request, one resource per service, with the exemplars set since the last
    /// export (each written once).
    pub fn export(&mut self, instance: &str, partition: i32, now_ns: u64) -> ExportMetricsServiceRequest {
        let request = self.request(instance, partition, now_ns);
        for series in self.series.values_mut() {
            series.exemplars.iter_mut().for_each(|e| *e = None);
            series.calls_exemplar = None;
        }
        request
    }

    fn request(&self, instance: &str, partition: i32, now_ns: u64) -> ExportMetricsServiceRequest {
        let mut by_service: HashMap<&str, Vec<(&Key, &Series)>> = HashMap::new();
        for (key, series) in &self.series {
            by_service.entry(key.service.as_str()).or_default().push((key, series));
        }
        let text = |s: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(s.to_owned())) });
        let attribute = |k: &str, v: &str| KeyValue { key: k.to_owned(), value: text(v) };
        let resource_metrics = by_service
            .into_iter()
            .map(|(service, series)| {
                let attributes_of = |key: &Key| {
                    if key.overflow {
                        return vec![KeyValue {
                            key: OVERFLOW_ATTRIBUTE.to_owned(),
                            value: Some(AnyValue { value: Some(any_value::Value::BoolValue(true)) }),
                        }];
                    }
                    vec![
                        attribute("span.name", &key.span),
                        attribute("span.kind", kind_name(key.kind)),
                        attribute("status.code", status_name(key.status)),
                    ]
                };
                let calls = series
                    .iter()
                    .map(|(key, s)| NumberDataPoint {
                        attributes: attributes_of(key),
                        start_time_unix_nano: self.start_ns,
                        time_unix_nano: now_ns,
                        value: Some(number_data_point::Value::AsInt(s.calls as i64)),
                        exemplars: s.calls_exemplar.iter().cloned().collect(),
                        ..Default::default()
                    })
                    .collect();
                let durations = series
                    .iter()
                    .map(|(key, s)| HistogramDataPoint {
                        attributes: attributes_of(key),
                        start_time_unix_nano: self.start_ns,
                        time_unix_nano: now_ns,
                        count: s.calls,
                        sum: Some(s.sum_ms),
                        bucket_counts: s.bucket_counts.clone(),
                        explicit_bounds: self.buckets_ms.clone(),
                        exemplars: s.exemplars.iter().flatten().cloned().collect(),
                        ..Default::default()
                    })
                    .collect();
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![
                            attribute("service.name", service),
                            // What makes each partition's cumulative series its own in Prometheus (`instance`).
                            attribute("service.instance.id", &series_instance(instance, partition)),
                            attribute("tailgate.sampler.instance", instance),
                            attribute("tailgate.sampler.partition", &partition.to_string()),
                        ],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope { name: "tailgate.sampler".to_owned(), ..Default::default() }),
                        metrics: vec![
                            Metric {
                                name: CALLS.to_owned(),
                                description: "Spans, counted before sampling.".to_owned(),
                                unit: "{call}".to_owned(),
                                data: Some(metric::Data::Sum(Sum {
                                    data_points: calls,
                                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                    is_monotonic: true,
                                })),
                                ..Default::default()
                            },
                            Metric {
                                name: DURATION.to_owned(),
                                description: "Span durations, before sampling.".to_owned(),
                                unit: "ms".to_owned(),
                                data: Some(metric::Data::Histogram(Histogram {
                                    data_points: durations,
                                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                })),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }
}

/// The `service.instance.id` of a worker's series of one partition: Prometheus's `instance` label, so the series
/// of every partition and worker are apart and add up (`sum by (job)`), as the producer of a cumulative series
/// must be identified. Only `tailgate.sampler.*` attributes would reach `target_info`, not the series.
pub fn series_instance(instance: &str, partition: i32) -> String {
    format!("{instance}/{partition}")
}

/// A resource's `service.name`, as RED series, their exemplars and the service graph key it.
pub(crate) fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("unknown_service")
}

fn kind_name(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind).unwrap_or(span::SpanKind::Unspecified) {
        span::SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
        span::SpanKind::Internal => "SPAN_KIND_INTERNAL",
        span::SpanKind::Server => "SPAN_KIND_SERVER",
        span::SpanKind::Client => "SPAN_KIND_CLIENT",
        span::SpanKind::Producer => "SPAN_KIND_PRODUCER",
        span::SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

fn status_name(code: i32) -> &'static str {
    match status::StatusCode::try_from(code).unwrap_or(status::StatusCode::Unset) {
        status::StatusCode::Unset => "STATUS_CODE_UNSET",
        status::StatusCode::Ok => "STATUS_CODE_OK",
        status::StatusCode::Error => "STATUS_CODE_ERROR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;
    use tailgate_proto::wire::WireSignal;

    /// Records `request` as the worker does: encoded as a record and scanned.
    fn record(red: &mut RedMetrics, request: &[ResourceSpans]) -> u64 {
        let bytes = ExportTraceServiceRequest { resource_spans: request.to_vec() }.encode_to_vec();
        red.record(&WireSignal::Traces.scan(&bytes).unwrap())
    }

    /// A kept trace's spans become the exemplars of their series, written once.
    #[test]
    fn kept_spans_become_exemplars_written_once() {
        let span = |id: u8, ms: u64| Span {
            trace_id: vec![9; 16],
            span_id: vec![id; 8],
            name: "charge".to_owned(),
            kind: 2,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            ..Default::default()
        };
        let request = vec![ResourceSpans {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("payments".into())) }),
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans: vec![span(1, 3), span(2, 30)], ..Default::default() }],
            ..Default::default()
        }];
        let mut red = RedMetrics::new(&[10.0, 100.0], 1, 1000);
        record(&mut red, &request);
        assert_eq!(red.exemplify(&crate::buffer::pending(&request)), 2);
        let exported = red.export("w1", 0, 2);
        let metrics = &exported.resource_metrics[0].scope_metrics[0].metrics;
        let Some(metric::Data::Histogram(durations)) = &metrics[1].data else { panic!("a histogram") };
        let values: Vec<f64> = durations.data_points[0]
            .exemplars
            .iter()
            .map(|e| match e.value {
                Some(exemplar::Value::AsDouble(v)) => v,
                _ => f64::NAN,
            })
            .collect();
        assert_eq!(values, [3.0, 30.0], "one per bucket");
        let Some(metric::Data::Sum(calls)) = &metrics[0].data else { panic!("a sum") };
        assert_eq!(calls.data_points[0].exemplars[0].span_id, vec![2; 8], "the newest on the counter");
        let again = red.export("w1", 0, 3);
        let Some(metric::Data::Histogram(durations)) = &again.resource_metrics[0].scope_metrics[0].metrics[1].data
        else {
            panic!("a histogram")
        };
        assert!(durations.data_points[0].exemplars.is_empty(), "written once");
    }

    #[test]
    fn counts_calls_errors_and_durations_per_series() {
        let span = |name: &str, ms: u64, error: bool| Span {
            name: name.to_owned(),
            kind: 2,
            start_time_unix_nano: 0,
            end_time_unix_nano: ms * 1_000_000,
            status: error.then(|| Status { code: 2, message: String::new() }),
            ..Default::default()
        };
        let request = vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("payments".into())) }),
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span("charge", 3, false), span("charge", 30, false), span("charge", 3000, true)],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let mut red = RedMetrics::new(&[10.0, 100.0], 1, 1000);
        assert_eq!(record(&mut red, &request), 0);
        let exported = red.export("w1", 3, 2);
        let rm = &exported.resource_metrics[0];
        let attrs: Vec<_> = rm.resource.as_ref().unwrap().attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            attrs,
            ["service.name", "service.instance.id", "tailgate.sampler.instance", "tailgate.sampler.partition"]
        );
        let metrics = &rm.scope_metrics[0].metrics;
        let Some(metric::Data::Sum(calls)) = &metrics[0].data else { panic!("calls is a sum") };
        let mut counts: Vec<(String, i64)> = calls
            .data_points
            .iter()
            .map(|p| {
                let status = p.attributes.iter().find(|kv| kv.key == "status.code").unwrap();
                let Some(any_value::Value::StringValue(status)) = status.value.as_ref().unwrap().value.clone() else {
                    panic!()
                };
                let Some(number_data_point::Value::AsInt(n)) = p.value else { panic!() };
                (status, n)
            })
            .collect();
        counts.sort();
        assert_eq!(counts, [("STATUS_CODE_ERROR".to_owned(), 1), ("STATUS_CODE_UNSET".to_owned(), 2)]);
        let Some(metric::Data::Histogram(durations)) = &metrics[1].data else { panic!("duration is a histogram") };
        let ok = durations.data_points.iter().find(|p| p.count == 2).unwrap();
        assert_eq!(ok.bucket_counts, [1, 1, 0]);
        assert_eq!(ok.sum, Some(33.0));
    }

    /// A million distinct span names cost at most the limit's series: the rest is counted, not kept apart.
    #[test]
    fn client_chosen_names_beyond_the_limit_go_to_one_overflow_series() {
        let spans = (0..10).map(|i| Span { name: format!("GET /item/{i}"), ..Default::default() }).collect();
        let request =
            vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }];
        let mut red = RedMetrics::new(&[10.0], 1, 3);
        assert_eq!(record(&mut red, &request), 7, "7 of 10 names are past the limit");
        assert_eq!(record(&mut red, &request), 7, "the 3 kept names keep their series; the rest overflow again");
        assert_eq!(red.series.len(), 4, "3 series and the overflow series");
        let exported = red.export("w", 0, 2);
        let points: Vec<(Vec<String>, i64)> = exported
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics[0].metrics)
            .filter_map(|m| match &m.data {
                Some(metric::Data::Sum(sum)) => Some(sum.data_points.clone()),
                _ => None,
            })
            .flatten()
            .map(|p| {
                let keys = p.attributes.iter().map(|kv| kv.key.clone()).collect();
                let Some(number_data_point::Value::AsInt(n)) = p.value else { panic!() };
                (keys, n)
            })
            .collect();
        let overflow: Vec<_> = points.iter().filter(|(keys, _)| keys == &[OVERFLOW_ATTRIBUTE.to_owned()]).collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].1, 14, "every span past the limit, both times");
        assert_eq!(points.iter().map(|(_, n)| n).sum::<i64>(), 20, "every span counted once");
    }

    /// The limit is the partition's, whatever its tenants: T tenants used to get T × the limit, each its own.
    /// And a span name of 100 KB no longer makes a key of 100 KB.
    #[test]
    fn tenants_of_a_partition_share_its_series_limit_and_names_are_cut() {
        let spans = (0..10).map(|i| Span { name: format!("GET /item/{i}"), ..Default::default() }).collect();
        let request =
            vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }];
        let limit = SeriesLimit::new(3);
        let (mut a, mut b) =
            (RedMetrics::sharing(&[10.0], 1, limit.clone()), RedMetrics::sharing(&[10.0], 1, limit.clone()));
        assert_eq!(record(&mut a, &request), 7, "tenant a takes the partition's 3 series");
        assert_eq!(record(&mut b, &request), 10, "tenant b finds none left: all 10 overflow");
        assert_eq!((a.series.len(), b.series.len()), (4, 1), "a: 3 and its overflow; b: its overflow only");

        let long = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span { name: "x".repeat(100_000), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let mut red = RedMetrics::new(&[10.0], 1, 10);
        record(&mut red, &long);
        let key = red.series.keys().next().unwrap();
        assert_eq!(key.span.len(), crate::series_limit::MAX_NAME_BYTES);
    }

    /// More names in one resource than are summed locally: every span still counted once, the limit kept exactly.
    #[test]
    fn a_record_of_many_names_counts_each_span_once() {
        // 100 names, each twice, in one resource; 50 series allowed.
        let spans = (0..200).map(|i| Span { name: format!("op-{}", i % 100), ..Default::default() }).collect();
        let request =
            vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }];
        let mut red = RedMetrics::new(&[10.0], 1, 50);
        assert_eq!(record(&mut red, &request), 100, "the 50 names past the limit, twice each");
        let kept: Vec<&Series> = red.series.iter().filter(|(k, _)| !k.overflow).map(|(_, s)| s).collect();
        assert_eq!(kept.len(), 50);
        assert!(kept.iter().all(|s| s.calls == 2 && s.bucket_counts == [2, 0]), "each kept name's two spans");
        assert_eq!(red.series.values().map(|s| s.calls).sum::<u64>(), 200);
    }
}
