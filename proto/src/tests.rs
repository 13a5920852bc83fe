//! Property tests of the Kafka contract: splitting loses nothing, duplicates nothing, respects the size limit (on
//! the whole record: key, value, headers and framing) and puts every item on the partition its key names.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;

use crate::signals::is_valid_trace_id;
use crate::split::resource_key;
use crate::{partition_for_key, split, RecordLimit, Signal};

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
    }
}

fn resource(service: usize) -> Resource {
    Resource { attributes: vec![attr("service.name", &format!("svc-{service}"))], ..Default::default() }
}

/// A resource whose attributes (and so its resource key) are about `pad` bytes longer: a Kubernetes pod's.
fn padded_resource(service: usize, pad: usize) -> Resource {
    let mut resource = resource(service);
    resource.attributes.push(attr("k8s.pod.labels", &"k".repeat(pad)));
    resource
}

/// Headers of the given value lengths, as every record of a request carries them.
fn limit(max: usize, header_values: &[usize]) -> RecordLimit {
    let values: Vec<(String, Vec<u8>)> =
        header_values.iter().enumerate().map(|(i, len)| (format!("tailgate.h{i}"), vec![b'v'; *len])).collect();
    RecordLimit::new(max, values.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

fn scope(n: usize) -> InstrumentationScope {
    InstrumentationScope { name: format!("scope-{n}"), ..Default::default() }
}

/// (service, resource padding, scope, [(trace, valid, padding)]) — a compact description of a request.
type Shape = Vec<(usize, usize, usize, Vec<(u8, bool, usize)>)>;

fn shape() -> impl Strategy<Value = Shape> {
    prop::collection::vec(
        (
            0..4usize,
            prop_oneof![Just(0usize), 0..3000usize],
            0..3usize,
            prop::collection::vec((0..12u8, prop::bool::weighted(0.9), 0..1500usize), 0..25),
        ),
        0..5,
    )
}

fn headers() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..200usize, 0..4)
}

fn trace_request(shape: &Shape) -> (ExportTraceServiceRequest, usize) {
    let mut invalid = 0;
    let mut n = 0u64;
    let resource_spans = shape
        .iter()
        .map(|(service, pad, sc, spans)| ResourceSpans {
            resource: Some(padded_resource(*service, *pad)),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope(*sc)),
                spans: spans
                    .iter()
                    .map(|(trace, valid, padding)| {
                        n += 1;
                        let trace_id = if *valid {
                            vec![*trace + 1; 16]
                        } else {
                            invalid += 1;
                            vec![0; 16]
                        };
                        Span {
                            trace_id,
                            span_id: n.to_be_bytes().to_vec(),
                            name: format!("span-{n}"),
                            attributes: vec![attr("pad", &"x".repeat(*padding))],
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, invalid)
}

proptest! {
    #[test]
    fn spans_split_losslessly(shape in shape(), partitions in 1..16u32, max in 600..12_000usize, headers in headers()) {
        let limit = limit(max, &headers);
        let (request, invalid) = trace_request(&shape);
        // Where each valid span came from, and whether it can fit a record at all.
        let mut expected = HashMap::new();
        let mut too_large = 0;
        for rs in &request.resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    if !is_valid_trace_id(&span.trace_id) {
                        continue;
                    }
                    let alone = ExportTraceServiceRequest { resource_spans: vec![ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: vec![ScopeSpans { scope: ss.scope.clone(), spans: vec![span.clone()], ..Default::default() }],
                        ..Default::default()
                    }]};
                    let whole = limit.record_size(span.trace_id.len(), alone.encoded_len());
                    if whole + 18 > max {
                        // Might not fit: the bound is conservative by at most 18 bytes.
                        if whole > max { too_large += 1; }
                        continue;
                    }
                    expected.insert(span.name.clone(), (rs.resource.clone(), ss.scope.clone(), span.trace_id.clone()));
                }
            }
        }

        let out = split(request, partitions, limit);
        prop_assert_eq!(out.rejected_invalid_id, invalid);
        prop_assert!(out.rejected_too_large >= too_large);

        let mut seen = HashMap::new();
        for record in &out.records {
            let whole = limit.record_size(record.key.len(), record.value.len());
            prop_assert!(whole <= max, "record of {} bytes (key {}, value {}) over {}", whole, record.key.len(), record.value.len(), max);
            prop_assert_eq!(partition_for_key(&record.key, partitions), record.partition);
            let decoded = ExportTraceServiceRequest::decode(record.value.as_slice()).unwrap();
            let mut items = 0;
            for rs in decoded.resource_spans {
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        items += 1;
                        prop_assert_eq!(partition_for_key(&span.trace_id, partitions), record.partition);
                        let previous = seen.insert(span.name.clone(), (rs.resource.clone(), ss.scope.clone(), span.trace_id.clone()));
                        prop_assert!(previous.is_none(), "{} written twice", span.name);
                    }
                }
            }
            prop_assert_eq!(items, record.items);
        }
        for (name, origin) in &expected {
            prop_assert_eq!(seen.get(name), Some(origin), "{} lost or moved", name);
        }
        prop_assert_eq!(out.accepted, seen.len());
        prop_assert_eq!(out.accepted + out.rejected(), shape.iter().map(|s| s.3.len()).sum::<usize>());
    }

    /// Log records without trace context are keyed by their resource, so keys are as large as resources: the whole
    /// record, key included, stays within the limit, and nothing that fits is lost.
    #[test]
    fn resource_keyed_logs_fit_whole(shape in shape(), partitions in 1..16u32, max in 600..12_000usize, headers in headers()) {
        let limit = limit(max, &headers);
        let mut n = 0;
        let request = ExportLogsServiceRequest {
            resource_logs: shape.iter().map(|(service, pad, sc, logs)| ResourceLogs {
                resource: Some(padded_resource(*service, *pad)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope(*sc)),
                    log_records: logs.iter().map(|(trace, traced, padding)| {
                        n += 1;
                        LogRecord {
                            trace_id: if *traced { vec![*trace + 1; 16] } else { Vec::new() },
                            event_name: format!("log-{n}"),
                            body: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(*padding))) }),
                            ..Default::default()
                        }
                    }).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }).collect(),
        };
        let mut fits = Vec::new();
        for rl in &request.resource_logs {
            let key = resource_key(rl.resource.as_ref());
            for sl in &rl.scope_logs {
                for log in &sl.log_records {
                    let alone = ExportLogsServiceRequest { resource_logs: vec![ResourceLogs {
                        resource: rl.resource.clone(),
                        scope_logs: vec![ScopeLogs { scope: sl.scope.clone(), log_records: vec![log.clone()], ..Default::default() }],
                        ..Default::default()
                    }]};
                    let key_len = if log.trace_id.is_empty() { key.len() } else { 16 };
                    let whole = limit.record_size(key_len, alone.encoded_len());
                    if whole + 18 <= max { fits.push(log.event_name.clone()); }
                }
            }
        }

        // Unlike spans, an item too large alone may still be written: after an item with trace context its record's
        // key is a 16-byte trace ID, not its resource. So only what fits alone is known to be written.
        let out = split(request, partitions, limit);
        let mut seen = HashMap::new();
        for record in &out.records {
            let whole = limit.record_size(record.key.len(), record.value.len());
            prop_assert!(whole <= max, "record of {} bytes (key {}, value {}) over {}", whole, record.key.len(), record.value.len(), max);
            prop_assert_eq!(partition_for_key(&record.key, partitions), record.partition);
            let decoded = ExportLogsServiceRequest::decode(record.value.as_slice()).unwrap();
            for rl in &decoded.resource_logs {
                for log in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                    *seen.entry(log.event_name.clone()).or_insert(0) += 1;
                }
            }
        }
        for name in &fits {
            prop_assert_eq!(seen.get(name), Some(&1), "{} lost or duplicated", name);
        }
        prop_assert_eq!(out.accepted, seen.values().sum::<usize>());
        prop_assert_eq!(out.accepted + out.rejected(), n);
    }

    #[test]
    fn metric_series_share_a_partition(services in prop::collection::vec(0..3usize, 1..6), partitions in 1..16u32) {
        // The same series sent in two requests, with resource attributes in a different order, lands on one partition.
        let request = |reverse: bool| {
            let resource_metrics = services.iter().map(|s| {
                let mut attributes = vec![attr("service.name", &format!("svc-{s}")), attr("host", "a")];
                if reverse { attributes.reverse(); }
                ResourceMetrics {
                    resource: Some(Resource { attributes, ..Default::default() }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(scope(0)),
                        metrics: (0..3).map(|m| Metric {
                            name: format!("m{m}"),
                            data: Some(metric::Data::Gauge(Gauge { data_points: vec![NumberDataPoint::default(); 2] })),
                            ..Default::default()
                        }).collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            }).collect();
            ExportMetricsServiceRequest { resource_metrics }
        };
        let placement = |request: ExportMetricsServiceRequest| {
            let out = split(request, partitions, limit(1 << 20, &[]));
            let mut at = HashMap::new();
            for record in out.records {
                let decoded = ExportMetricsServiceRequest::decode(record.value.as_slice()).unwrap();
                for rm in decoded.resource_metrics {
                    let key = resource_key(rm.resource.as_ref());
                    let service = rm.resource.unwrap().attributes.into_iter().find(|a| a.key == "service.name").unwrap();
                    for sm in rm.scope_metrics {
                        for m in &sm.metrics {
                            let series = (format!("{:?}", service.value), m.name.clone());
                            let routed = <ExportMetricsServiceRequest as Signal>::route(m, &sm, &key);
                            assert_eq!(partition_for_key(&routed, partitions), record.partition);
                            at.insert(series, record.partition);
                        }
                    }
                }
            }
            at
        };
        prop_assert_eq!(placement(request(false)), placement(request(true)));
    }
}

#[test]
fn logs_follow_their_trace_or_their_resource() {
    let trace_id = vec![7u8; 16];
    let log = |trace_id: Vec<u8>| LogRecord { trace_id, ..Default::default() };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(1)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope(0)),
                log_records: vec![log(trace_id.clone()), log(vec![]), log(vec![0; 16]), log(vec![1, 2, 3])],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let out = split(request, 64, limit(1 << 20, &[]));
    assert_eq!(out.rejected_invalid_id, 1, "a 3-byte trace ID is malformed");
    assert_eq!(out.accepted, 3);
    let by_resource = partition_for_key(&resource_key(Some(&resource(1))), 64);
    let by_trace = partition_for_key(&trace_id, 64);
    let mut partitions: Vec<_> = out.records.iter().map(|r| (r.partition, r.items)).collect();
    partitions.sort();
    let mut expected = vec![(by_trace, 1), (by_resource, 2)];
    if by_trace == by_resource {
        expected = vec![(by_trace, 3)];
    }
    expected.sort();
    assert_eq!(partitions, expected);
}

#[test]
fn counts_saturate_near_the_maximum() {
    let out = crate::Split { rejected_invalid_id: usize::MAX - 1, rejected_too_large: 5, ..Default::default() };
    assert_eq!(out.rejected(), usize::MAX);
    assert!(out.error_message::<ExportTraceServiceRequest>(1 << 20).unwrap().starts_with(&usize::MAX.to_string()));
}

#[test]
fn an_empty_request_makes_no_records() {
    let out = split(ExportTraceServiceRequest::default(), 12, limit(1 << 20, &[]));
    assert!(out.records.is_empty());
    assert_eq!(out.accepted + out.rejected(), 0);
    assert_eq!(out.error_message::<ExportTraceServiceRequest>(1 << 20), None);
}
