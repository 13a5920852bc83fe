//! Property tests of the Kafka contract: splitting loses nothing, duplicates nothing, respects the size limit and
//! puts every item on the partition its key names.

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
use crate::{partition_for_key, split, Signal};

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
    }
}

fn resource(service: usize) -> Resource {
    Resource { attributes: vec![attr("service.name", &format!("svc-{service}"))], ..Default::default() }
}

fn scope(n: usize) -> InstrumentationScope {
    InstrumentationScope { name: format!("scope-{n}"), ..Default::default() }
}

/// (service, scope, [(trace, valid, padding)]) — a compact description of a request.
type Shape = Vec<(usize, usize, Vec<(u8, bool, usize)>)>;

fn shape() -> impl Strategy<Value = Shape> {
    prop::collection::vec(
        (0..4usize, 0..3usize, prop::collection::vec((0..12u8, prop::bool::weighted(0.9), 0..1500usize), 0..25)),
        0..5,
    )
}

fn trace_request(shape: &Shape) -> (ExportTraceServiceRequest, usize) {
    let mut invalid = 0;
    let mut n = 0u64;
    let resource_spans = shape
        .iter()
        .map(|(service, sc, spans)| ResourceSpans {
            resource: Some(resource(*service)),
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
    fn spans_split_losslessly(shape in shape(), partitions in 1..16u32, max in 600..12_000usize) {
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
                    if alone.encoded_len() + 18 > max {
                        // Might not fit: the bound is conservative by at most 18 bytes.
                        if alone.encoded_len() > max { too_large += 1; }
                        continue;
                    }
                    expected.insert(span.name.clone(), (rs.resource.clone(), ss.scope.clone(), span.trace_id.clone()));
                }
            }
        }

        let out = split(request, partitions, max);
        prop_assert_eq!(out.rejected_invalid_id, invalid);
        prop_assert!(out.rejected_too_large >= too_large);

        let mut seen = HashMap::new();
        for record in &out.records {
            prop_assert!(record.value.len() <= max, "record of {} bytes over {}", record.value.len(), max);
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
        prop_assert_eq!(out.accepted + out.rejected(), shape.iter().map(|s| s.2.len()).sum::<usize>());
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
            let out = split(request, partitions, 1 << 20);
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
    let out = split(request, 64, 1 << 20);
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
fn an_empty_request_makes_no_records() {
    let out = split(ExportTraceServiceRequest::default(), 12, 1 << 20);
    assert!(out.records.is_empty());
    assert_eq!(out.accepted + out.rejected(), 0);
    assert_eq!(out.error_message::<ExportTraceServiceRequest>(1 << 20), None);
}
