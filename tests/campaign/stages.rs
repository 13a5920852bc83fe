//! What each stage of the pipeline holds at the end, read the way an operator would check it: the Kafka topics with
//! a consumer of our own, the backends through what they stored (Prometheus through its query API). Records that are
//! not OTLP (the campaign writes some on purpose) are skipped, not fatal.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message as _;

use super::ledger::{span_content, SpanKey};
use crate::harness::backends::{LokiReceiver, Prometheus, TraceReceiver};
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

/// The string bodies of the log records in `records`.
pub fn log_bodies(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| ExportLogsServiceRequest::decode(r.value.as_slice()).ok())
        .flat_map(|request| request.resource_logs)
        .flat_map(|rl| rl.scope_logs)
        .flat_map(|sl| sl.log_records)
        .filter_map(|log| match log.body?.value? {
            any_value::Value::StringValue(body) => Some(body),
            _ => None,
        })
        .collect()
}

pub fn loki_lines(loki: &LokiReceiver) -> Vec<String> {
    loki.entries().into_iter().map(|(_, line, _)| line).collect()
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
