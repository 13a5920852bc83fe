//! The three OTLP signals as Kafka sees them: how each is split and routed.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::split::{Rejection, Signal};
use crate::wire::WireSignal;

/// A trace ID OTLP accepts: 16 bytes, not all zero.
pub fn is_valid_trace_id(id: &[u8]) -> bool {
    id.len() == 16 && id.iter().any(|b| *b != 0)
}

/// A span ID OTLP accepts: 8 bytes, not all zero.
pub fn is_valid_span_id(id: &[u8]) -> bool {
    id.len() == 8 && id.iter().any(|b| *b != 0)
}

/// Why a span of these IDs must not be written: both are required and must be well formed.
pub fn invalid_span_ids(trace_id: &[u8], span_id: &[u8]) -> Option<Rejection> {
    (!is_valid_trace_id(trace_id) || !is_valid_span_id(span_id)).then_some(Rejection::InvalidId)
}

/// Why a log record of these IDs must not be written. Trace context on a log is optional, but when present it must
/// be well formed. An all-zero ID means "none".
pub fn invalid_log_ids(trace_id: &[u8], span_id: &[u8]) -> Option<Rejection> {
    let bad_trace = !trace_id.is_empty() && trace_id.len() != 16;
    let bad_span = !span_id.is_empty() && span_id.len() != 8;
    (bad_trace || bad_span).then_some(Rejection::InvalidId)
}

/// A log record's key: its trace ID when it has one, else its resource's key.
pub fn log_key<'a>(trace_id: &'a [u8], resource_key: &'a [u8]) -> &'a [u8] {
    if is_valid_trace_id(trace_id) {
        trace_id
    } else {
        resource_key
    }
}

/// Spans are keyed by the 16 raw bytes of their trace ID, so every span of a trace shares a partition.
impl Signal for ExportTraceServiceRequest {
    type Resource = ResourceSpans;
    type Scope = ScopeSpans;
    type Item = Span;
    const ITEMS: &'static str = "spans";
    const ROUTES_BY_RESOURCE: bool = false;
    const WIRE: Option<WireSignal> = Some(WireSignal::Traces);
    const DOWNSTREAM_ROOM: usize = crate::split::SAMPLER_ROOM;

    fn resources_mut(&mut self) -> &mut Vec<ResourceSpans> {
        &mut self.resource_spans
    }
    fn scopes_mut(resource: &mut ResourceSpans) -> &mut Vec<ScopeSpans> {
        &mut resource.scope_spans
    }
    fn items_mut(scope: &mut ScopeSpans) -> &mut Vec<Span> {
        &mut scope.spans
    }
    fn resource_attributes(resource: &ResourceSpans) -> Option<&Resource> {
        resource.resource.as_ref()
    }
    fn resource_mut(resource: &mut ResourceSpans) -> &mut Option<Resource> {
        &mut resource.resource
    }
    fn invalid(span: &Span) -> Option<Rejection> {
        invalid_span_ids(&span.trace_id, &span.span_id)
    }
    fn route<'a>(span: &'a Span, _: &ScopeSpans, _: &'a [u8]) -> Cow<'a, [u8]> {
        Cow::Borrowed(&span.trace_id)
    }
}

/// Log records with a trace ID follow their trace; the others are keyed by their resource.
impl Signal for ExportLogsServiceRequest {
    type Resource = ResourceLogs;
    type Scope = ScopeLogs;
    type Item = LogRecord;
    const ITEMS: &'static str = "log_records";
    const ROUTES_BY_RESOURCE: bool = true;
    const WIRE: Option<WireSignal> = Some(WireSignal::Logs);

    fn resources_mut(&mut self) -> &mut Vec<ResourceLogs> {
        &mut self.resource_logs
    }
    fn scopes_mut(resource: &mut ResourceLogs) -> &mut Vec<ScopeLogs> {
        &mut resource.scope_logs
    }
    fn items_mut(scope: &mut ScopeLogs) -> &mut Vec<LogRecord> {
        &mut scope.log_records
    }
    fn resource_attributes(resource: &ResourceLogs) -> Option<&Resource> {
        resource.resource.as_ref()
    }
    fn resource_mut(resource: &mut ResourceLogs) -> &mut Option<Resource> {
        &mut resource.resource
    }
    fn invalid(log: &LogRecord) -> Option<Rejection> {
        invalid_log_ids(&log.trace_id, &log.span_id)
    }
    fn route<'a>(log: &'a LogRecord, _: &ScopeLogs, resource_key: &'a [u8]) -> Cow<'a, [u8]> {
        Cow::Borrowed(log_key(&log.trace_id, resource_key))
    }
}

/// Metrics are keyed by resource, scope name and metric name: every point of a series (and of its metric) shares a
/// partition, so an exporter that owns the partition sees the series in order.
impl Signal for ExportMetricsServiceRequest {
    type Resource = ResourceMetrics;
    type Scope = ScopeMetrics;
    type Item = Metric;
    const ITEMS: &'static str = "data_points";
    const ROUTES_BY_RESOURCE: bool = true;
    const WIRE: Option<WireSignal> = None;

    fn resources_mut(&mut self) -> &mut Vec<ResourceMetrics> {
        &mut self.resource_metrics
    }
    fn scopes_mut(resource: &mut ResourceMetrics) -> &mut Vec<ScopeMetrics> {
        &mut resource.scope_metrics
    }
    fn items_mut(scope: &mut ScopeMetrics) -> &mut Vec<Metric> {
        &mut scope.metrics
    }
    fn resource_attributes(resource: &ResourceMetrics) -> Option<&Resource> {
        resource.resource.as_ref()
    }
    fn resource_mut(resource: &mut ResourceMetrics) -> &mut Option<Resource> {
        &mut resource.resource
    }
    fn count(metric: &Metric) -> usize {
        data_points(metric)
    }
    fn route<'a>(metric: &'a Metric, scope: &ScopeMetrics, resource_key: &'a [u8]) -> Cow<'a, [u8]> {
        let scope_name = scope.scope.as_ref().map_or("", |s| s.name.as_str());
        let mut key = Vec::with_capacity(resource_key.len() + scope_name.len() + metric.name.len() + 2);
        key.extend_from_slice(resource_key);
        key.push(0xff);
        key.extend_from_slice(scope_name.as_bytes());
        key.push(0xff);
        key.extend_from_slice(metric.name.as_bytes());
        Cow::Owned(key)
    }
}

/// Data points in a metric, as OTLP's `rejected_data_points` counts them.
pub fn data_points(metric: &Metric) -> usize {
    match &metric.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}
