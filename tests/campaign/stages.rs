//! What each stage of the pipeline holds at the end, read the way an operator would check it: the Kafka topics with
//! a consumer of our own, the backends through what they stored (Prometheus through its query API). Records that are
//! not OTLP (the campaign writes some on purpose) are skipped, not fatal.

use std::collections::HashSet;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message as _;

use super::ledger::{level, log_key, span_content, SpanKey};
use crate::harness::backends::{Entry, LokiReceiver, Prometheus, TraceReceiver};
use crate::harness::lag;
use crate::harness::{read_topic, Record};

/// Every record of `topic`, read until as many as its watermarks say it holds.
pub async fn topic(brokers: &str, topic: &str, partitions: u32) -> Vec<Record> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let total = lag::records(&brokers, &topic, partitions).expect("the broker answers") as usize;
        read_topic(&brokers, &topic, partitions, Duration::from_secs(120), |r| r.len() >= total)
    })
    .await
    .unwrap()
}

pub fn span_keys(records: &[Record]) -> Vec<SpanKey> {
    records
        .iter()
        .filter_map(|r| ExportTraceServiceRequest::decode(r.value.as_slice()).ok())
        .flat_map(|request| request.resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .map(|span| key(&span))
        .collect()
}

fn key(span: &opentelemetry_proto::tonic::trace::v1::Span) -> SpanKey {
    (hex::encode(&span.trace_id), hex::encode(&span.span_id), span_content(span))
}

pub fn jaeger_keys(jaeger: &TraceReceiver) -> Vec<SpanKey> {
    jaeger.traces.lock().unwrap().received.iter().map(key).collect()
}

/// The spans Jaeger refused in partial successes.
pub fn jaeger_refused(jaeger: &TraceReceiver) -> HashSet<SpanKey> {
    jaeger.traces.lock().unwrap().refused.iter().map(key).collect()
}

/// The log records in `records`, as [`log_key`]s (the tenant from the record's header).
pub fn log_keys(records: &[Record]) -> Vec<String> {
    let mut keys = Vec::new();
    for record in records {
        let Ok(request) = ExportLogsServiceRequest::decode(record.value.as_slice()) else { continue };
        let tenant = record.header(tailgate_proto::headers::TENANT);
        for resource in request.resource_logs {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| string(kv.value.as_ref()?))
                .unwrap_or_default();
            for log in resource.scope_logs.into_iter().flat_map(|sl| sl.log_records) {
                let Some(body) = log.body.as_ref().and_then(string) else { continue };
                keys.push(log_key(
                    &body,
                    level(log.severity_number),
                    &hex::encode(&log.trace_id),
                    &hex::encode(&log.span_id),
                    &service,
                    tenant.as_deref(),
                ));
            }
        }
    }
    keys
}

fn string(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// Every line Loki stored, as a [`log_key`]: the line, its `level` and `service_name` stream labels, its `trace_id`
/// and `span_id` structured metadata, the push's tenant.
pub fn loki_lines(loki: &LokiReceiver) -> Vec<String> {
    let state = loki.state.lock().unwrap();
    let stored = state.pushes.iter().flat_map(|push| {
        push.request.streams.iter().flat_map(move |stream| {
            stream.entries.iter().map(move |entry| {
                let metadata = entry.structured_metadata.iter().map(|m| (m.name.clone(), m.value.clone())).collect();
                loki_key(push.tenant.as_deref(), &(stream.labels.clone(), entry.line.clone(), metadata))
            })
        })
    });
    stored.collect()
}

/// The lines Loki refused, as [`log_key`]s.
pub fn loki_refused(loki: &LokiReceiver) -> HashSet<String> {
    loki.state.lock().unwrap().refused.iter().map(|(tenant, entry)| loki_key(tenant.as_deref(), entry)).collect()
}

fn loki_key(tenant: Option<&str>, (labels, line, metadata): &Entry) -> String {
    // `{level="info", service_name="campaign"}`: whole names; the campaign's values hold no `"` or `, `.
    let pairs: Vec<(&str, &str)> = labels
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(", ")
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.trim(), value.trim_matches('"')))
        .collect();
    let label = |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
    let meta = |name: &str| metadata.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    log_key(
        line,
        &label("level").unwrap_or_default(),
        &meta("trace_id"),
        &meta("span_id"),
        &label("service_name").unwrap_or_default(),
        tenant,
    )
}

/// What the metrics topic holds of the client's: the sum of the `campaign.orders` delta points, each point once
/// (by its time: the SDK exports one point per interval), the times (Unix seconds) of the points found again beyond
/// their first copy (duplicates, counted, not hidden), and the largest `campaign.latency` count.
pub struct MetricTotals {
    pub orders: f64,
    pub repeated_points: Vec<f64>,
    pub latency_count: u64,
}

pub fn metric_totals(records: &[Record]) -> MetricTotals {
    let mut totals = MetricTotals { orders: 0.0, repeated_points: Vec::new(), latency_count: 0 };
    let mut seen = std::collections::HashSet::new();
    let metrics = records
        .iter()
        .filter_map(|r| ExportMetricsServiceRequest::decode(r.value.as_slice()).ok())
        .flat_map(|request| request.resource_metrics)
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics);
    for m in metrics {
        match (m.name.as_str(), m.data) {
            ("campaign.orders", Some(metric::Data::Sum(sum))) => {
                for point in sum.data_points {
                    if !seen.insert(point.time_unix_nano) {
                        totals.repeated_points.push(point.time_unix_nano as f64 / 1e9);
                        continue;
                    }
                    totals.orders += match point.value {
                        Some(number_data_point::Value::AsInt(v)) => v as f64,
                        Some(number_data_point::Value::AsDouble(v)) => v,
                        None => 0.0,
                    };
                }
            }
            ("campaign.latency", Some(metric::Data::Histogram(h))) => {
                totals.latency_count = h.data_points.iter().map(|p| p.count).fold(totals.latency_count, u64::max);
            }
            _ => {}
        }
    }
    totals
}

/// The latest value of the single series `name` in Prometheus (`None` if there is none), and every raw sample of it
/// over the last `window` (the whole run), in time order.
pub async fn prometheus_series(prometheus: &Prometheus, name: &str, window: Duration) -> (Option<f64>, Vec<f64>) {
    let latest = prometheus.query(name).await;
    assert!(latest.len() <= 1, "one series of {name}: {latest:?}");
    let value = latest.first().map(|s| s["value"][1].as_str().unwrap().parse().unwrap());
    let range = prometheus.query(&format!("{name}[{}s]", window.as_secs() + 60)).await;
    let samples = range
        .first()
        .map(|s| s["values"].as_array().unwrap().iter().map(|v| v[1].as_str().unwrap().parse().unwrap()).collect())
        .unwrap_or_default();
    (value, samples)
}

/// What a counter's samples add up to across resets, as Prometheus' `increase` counts them from zero: every drop
/// starts a new run from 0.
pub fn reset_adjusted(samples: &[f64]) -> f64 {
    let mut total = 0.0;
    let mut last = 0.0;
    for &v in samples {
        total += if v < last { v } else { v - last };
        last = v;
    }
    total
}
