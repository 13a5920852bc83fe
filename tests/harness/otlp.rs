//! OTLP requests as the tests and the benches build them. Shared with the benches (`tests/bench/*.rs`), so it uses
//! nothing but `opentelemetry-proto`.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

/// The resource of instance 1 of `service` in the shop, in the test environment.
pub fn service_resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.namespace", "shop"),
            kv("service.instance.id", &format!("{service}-1")),
            kv("deployment.environment", "test"),
        ],
        ..Default::default()
    })
}

/// The `n`th trace ID: spread over the whole ID space (so over every partition), never all zeros.
pub fn trace_id(n: u64) -> Vec<u8> {
    (u128::from(n) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835).to_be_bytes().to_vec()
}

/// Now, in milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A Kafka timestamp (ms) as `replay --from`/`--to` take it.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64)).to_string()
}

/// Now, in nanoseconds since the Unix epoch, as OTLP timestamps are.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// An export request holding `spans` under one resource and scope, both empty.
pub fn trace_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    trace_request_with(None, spans)
}

/// An export request holding `spans` under `resource` and one empty scope.
pub fn trace_request_with(resource: Option<Resource>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// An export request holding `records` from `service` (see [`service_resource`]), under one empty scope.
pub fn logs_request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    logs_request_with(service_resource(service), records)
}

/// An export request holding `records` under `resource` and one empty scope.
pub fn logs_request_with(resource: Option<Resource>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// An export request holding `metrics` under `resource` and `scope`.
pub fn metrics_request_with(
    resource: Option<Resource>,
    scope: Option<InstrumentationScope>,
    metrics: Vec<Metric>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource,
            scope_metrics: vec![ScopeMetrics { scope, metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}
