//! Differential tests: the wire scanner and split against prost and the split of decoded requests. For generated
//! requests, encoded by prost, re-encoded as other encoders may write them (descending field order, unknown fields
//! and groups at every level, a singular field written twice), and mutated byte by byte, both agree on what is
//! accepted, and the records hold the same items under the same resources and scopes on the same partitions.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;

use super::reader::{put_len_prefix, put_varint, Fields, WireType};
use super::schema::{
    Kind, Schema, EXPORT_LOGS_SERVICE_REQUEST as LOGS_REQUEST, EXPORT_TRACE_SERVICE_REQUEST as TRACE_REQUEST,
};
use super::{split as wire_split, WireSignal};
use crate::split::{split, Signal};

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        "[a-z\u{e9}\u{4e2d}]{0,12}".prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()).prop_map(any_value::Value::DoubleValue),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(any_value::Value::BytesValue),
    ];
    let leaf = leaf.prop_map(|value| AnyValue { value: Some(value) });
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|values| AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values })) }),
            prop::collection::vec(("[a-c]{1,3}", inner), 0..3).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs.into_iter().map(|(key, value)| KeyValue { key, value: Some(value) }).collect(),
                })),
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(("[a-e.]{1,8}", prop::option::weighted(0.9, any_value())), 0..3)
        .prop_map(|kvs| kvs.into_iter().map(|(key, value)| KeyValue { key, value }).collect())
}

/// Mostly one of a few valid trace IDs (so traces share partitions and records), sometimes an invalid one.
fn trace_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => (1..7u8).prop_map(|t| [t; 16].to_vec()),
        1 => Just(Vec::new()),
        1 => Just(vec![0; 16]),
        1 => Just(vec![1; 15]),
    ]
}

fn span_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![12 => any::<[u8; 8]>().prop_map(|mut id| { id[0] |= 1; id.to_vec() }), 1 => Just(Vec::new())]
}

fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    prop::option::weighted(0.8, ("[a-z]{0,6}", "[0-9.]{0,4}", attributes(), 0..3u32)).prop_map(|scope| {
        scope.map(|(name, version, attributes, dropped)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count: dropped,
        })
    })
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    prop::option::weighted(0.9, (attributes(), 0..2u32)).prop_map(|r| {
        r.map(|(attributes, dropped)| Resource { attributes, dropped_attributes_count: dropped, ..Default::default() })
    })
}

fn a_span() -> impl Strategy<Value = Span> {
    (
        (trace_id(), span_id(), "[a-z=,]{0,6}", prop::collection::vec(any::<u8>(), 0..9)),
        ("[a-zA-Z /\u{e9}]{0,20}", 0..6i32, any::<u64>(), any::<u64>(), any::<u32>()),
        (attributes(), prop::collection::vec(("[a-z]{0,5}", attributes(), any::<u64>()), 0..2)),
        (
            prop::collection::vec((trace_id(), span_id(), attributes()), 0..2),
            prop::option::of(("[a-z ]{0,8}", 0..3i32)),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, trace_state, parent),
                (name, kind, start, end, flags),
                (attributes, events),
                (links, status),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id: parent,
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count: 0,
                events: events
                    .into_iter()
                    .map(|(name, attributes, time)| span::Event {
                        time_unix_nano: time,
                        name,
                        attributes,
                        dropped_attributes_count: 1,
                    })
                    .collect(),
                dropped_events_count: 0,
                links: links
                    .into_iter()
                    .map(|(trace_id, span_id, attributes)| span::Link {
                        trace_id,
                        span_id,
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                dropped_links_count: 2,
                status: status.map(|(message, code)| Status { message, code }),
            },
        )
}

fn traces() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (scope(), prop::collection::vec(a_span(), 0..6), "[a-z:/]{0,6}")
        .prop_map(|(scope, spans, schema_url)| ScopeSpans { scope, spans, schema_url });
    let resource_spans = (resource(), prop::collection::vec(scope_spans, 0..3), "[a-z:/]{0,6}")
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans { resource, scope_spans, schema_url });
    prop::collection::vec(resource_spans, 0..4).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn logs() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let log = (
        (any::<u64>(), any::<u64>(), 0..25i32, "[A-Z]{0,5}", prop::option::of(any_value())),
        (
            attributes(),
            any::<u32>(),
            prop_oneof![3 => trace_id(), 2 => Just(Vec::new())],
            prop_oneof![2 => span_id(), 1 => Just(vec![1; 3])],
        ),
        "[a-z.]{0,6}",
    )
        .prop_map(
            |((time, observed, severity, text, body), (attributes, flags, trace_id, span_id), event_name)| LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: observed,
                severity_number: severity,
                severity_text: text,
                body,
                attributes,
                dropped_attributes_count: 0,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        );
    let scope_logs = (scope(), prop::collection::vec(log, 0..6), "[a-z]{0,4}")
        .prop_map(|(scope, log_records, schema_url)| ScopeLogs { scope, log_records, schema_url });
    let resource_logs = (resource(), prop::collection::vec(scope_logs, 0..3), "[a-z]{0,4}")
        .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs { resource, scope_logs, schema_url });
    prop::collection::vec(resource_logs, 0..4).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

/// Re-encodes a message as another encoder may: fields in descending number order (repeated ones keeping their
/// order), unknown fields and a group around them, and each singular scalar written twice, the first a decoy that
/// the second overrides. prost decodes the result to the same message.
fn reencode(bytes: &[u8], schema: &Schema) -> Vec<u8> {
    let mut fields: Vec<(u32, Vec<u8>)> = Vec::new();
    for field in Fields::new(bytes) {
        let field = field.unwrap();
        let kind = schema.fields.iter().find(|(n, _, _)| *n == field.number).map(|(_, _, k)| *k);
        let mut out = Vec::new();
        match kind {
            Some(Kind::Message(inner)) => {
                let value = reencode(field.value, inner);
                put_len_prefix(&mut out, field.number, value.len());
                out.extend_from_slice(&value);
            }
            Some(Kind::Varint) => {
                put_varint(&mut out, u64::from(field.number) << 3);
                put_varint(&mut out, 12_345);
                out.extend_from_slice(field.whole);
            }
            Some(Kind::Bytes) => {
                put_len_prefix(&mut out, field.number, 3);
                out.extend_from_slice(b"dec");
                out.extend_from_slice(field.whole);
            }
            _ => out.extend_from_slice(field.whole),
        }
        fields.push((field.number, out));
    }
    fields.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out = Vec::new();
    unknown_fields(&mut out);
    for (_, field) in fields {
        out.extend_from_slice(&field);
    }
    unknown_fields(&mut out);
    out
}

/// Unknown fields of every wire type, a group holding two of them among them.
fn unknown_fields(out: &mut Vec<u8>) {
    put_varint(out, 1000 << 3);
    put_varint(out, 7);
    put_len_prefix(out, 1001, 2);
    out.extend_from_slice(b"zz");
    put_varint(out, 1002 << 3 | 5);
    out.extend_from_slice(&[1, 2, 3, 4]);
    put_varint(out, 1003 << 3 | 3);
    put_varint(out, 1 << 3 | 1);
    out.extend_from_slice(&[0; 8]);
    put_varint(out, 2 << 3 | 3);
    put_varint(out, 2 << 3 | 4);
    put_varint(out, 1003 << 3 | 4);
}

/// A record's items, each with its resource and scope, decoded, per partition in order.
fn contents<S: Signal + PartialEq>(records: &[crate::Record], partitions: u32) -> Vec<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new(); partitions as usize];
    for record in records {
        let mut request = S::decode(record.value.as_slice()).expect("a record decodes");
        for mut resource in std::mem::take(request.resources_mut()) {
            for mut scope in std::mem::take(S::scopes_mut(&mut resource)) {
                for item in std::mem::take(S::items_mut(&mut scope)) {
                    // One flattened, canonical encoding per item: the item under its own resource and scope.
                    let mut one = S::default();
                    let mut r = resource.clone();
                    let mut s = scope.clone();
                    S::items_mut(&mut s).push(item);
                    S::scopes_mut(&mut r).push(s);
                    one.resources_mut().push(r);
                    out[record.partition as usize].push(one.encode_to_vec());
                }
            }
        }
    }
    out
}

fn check_same<S: Signal + PartialEq + Clone>(
    request: &S,
    bytes: &[u8],
    signal: WireSignal,
    partitions: u32,
    limit: usize,
) {
    let expected = split(request.clone(), partitions, limit);
    let scanned = signal.scan(bytes).expect("prost accepted it");
    let items: usize = scanned.resources.iter().flat_map(|r| &r.scopes).map(|s| s.items.len()).sum();
    assert_eq!(super::count_items(bytes), Ok(items), "the count is the scan's");
    let got = wire_split(&scanned, signal, partitions, limit);
    assert_eq!(got.accepted, expected.accepted);
    assert_eq!(got.rejected_invalid_id, expected.rejected_invalid_id);
    assert_eq!(got.rejected_too_large, expected.rejected_too_large);
    assert_eq!(contents::<S>(&got.records, partitions), contents::<S>(&expected.records, partitions));
    for record in &got.records {
        assert!(record.key.len() + record.value.len() <= limit, "the limit holds");
    }
}

/// The wire split of `request` as prost encodes it is the decoded split, record for record.
fn same_records<S: Signal>(request: S, signal: WireSignal, partitions: u32, limit: usize) {
    let bytes = request.encode_to_vec();
    let scanned = signal.scan(&bytes).unwrap();
    let got = wire_split(&scanned, signal, partitions, limit);
    let expected = split(request, partitions, limit);
    assert_eq!(got.records, expected.records);
    assert_eq!(
        (got.accepted, got.rejected_invalid_id, got.rejected_too_large),
        (expected.accepted, expected.rejected_invalid_id, expected.rejected_too_large)
    );
}

/// The scanner and prost agree on `bytes`; what both accept splits the same.
fn agree<S: Signal + PartialEq + Clone>(bytes: &[u8], signal: WireSignal) {
    let decoded = S::decode(bytes);
    assert_eq!(signal.scan(bytes).is_ok(), decoded.is_ok(), "{:?}", signal.scan(bytes).err());
    assert_eq!(signal.validate(bytes).is_ok(), decoded.is_ok());
    assert!(decoded.is_err() || super::count_items(bytes).is_ok(), "the count refuses only what prost refuses");
    if let Ok(decoded) = decoded {
        check_same(&decoded, bytes, signal, 3, 1 << 20);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A request as prost encodes it gives the same records, byte for byte, as decoding and splitting it.
    #[test]
    fn canonical_requests_split_byte_for_byte_as_decoded(traces in traces(), logs in logs(), partitions in 1..5u32, limit in prop_oneof![200..2_000usize, Just(1 << 20)]) {
        same_records(traces, WireSignal::Traces, partitions, limit);
        same_records(logs, WireSignal::Logs, partitions, limit);
    }

    /// Descending field order, unknown fields and groups everywhere, decoy values overridden: prost reads the same
    /// request, and the wire split holds the same items where the decoded split does.
    #[test]
    fn reencoded_requests_split_as_decoded(traces in traces(), logs in logs(), partitions in 1..5u32) {
        let bytes = reencode(&traces.encode_to_vec(), &TRACE_REQUEST);
        prop_assert_eq!(&ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap(), &traces);
        check_same(&traces, &bytes, WireSignal::Traces, partitions, 1 << 20);
        let bytes = reencode(&logs.encode_to_vec(), &LOGS_REQUEST);
        prop_assert_eq!(&ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap(), &logs);
        check_same(&logs, &bytes, WireSignal::Logs, partitions, 1 << 20);
    }

    /// Bytes changed, inserted, removed or cut: the scanner refuses exactly what prost refuses, and what both
    /// accept splits the same.
    #[test]
    fn mutated_requests_are_refused_exactly_when_prost_refuses(request in traces(), logs in logs(), edits in prop::collection::vec((0..4u8, any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        for (signal, mut bytes) in [(WireSignal::Traces, reencode(&request.encode_to_vec(), &TRACE_REQUEST)), (WireSignal::Logs, logs.encode_to_vec())] {
            for (edit, at, byte) in &edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match edit {
                    0 => bytes[i] = *byte,
                    1 => bytes.insert(i, *byte),
                    2 => { bytes.remove(i); }
                    _ => bytes.truncate(i),
                }
            }
            match signal {
                WireSignal::Traces => agree::<ExportTraceServiceRequest>(&bytes, signal),
                WireSignal::Logs => agree::<ExportLogsServiceRequest>(&bytes, signal),
            }
        }
    }
}

/// A span whose one attribute is `levels` arrays nested in each other.
fn nested_request(levels: usize) -> Vec<u8> {
    let mut value = AnyValue { value: Some(any_value::Value::IntValue(1)) };
    for _ in 0..levels {
        value = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![value] })) };
    }
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![1; 8],
        attributes: vec![KeyValue { key: "deep".into(), value: Some(value) }],
        ..Default::default()
    };
    let scope_spans = ScopeSpans { spans: vec![span], ..Default::default() };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { scope_spans: vec![scope_spans], ..Default::default() }],
    }
    .encode_to_vec()
}

#[test]
fn nesting_is_refused_exactly_where_prost_stops() {
    let mut outcomes = Vec::new();
    for levels in 40..52 {
        let bytes = nested_request(levels);
        let prost = ExportTraceServiceRequest::decode(bytes.as_slice()).is_ok();
        assert_eq!(WireSignal::Traces.scan(&bytes).is_ok(), prost, "{levels} nested arrays");
        outcomes.push(prost);
    }
    assert!(outcomes.contains(&true) && outcomes.contains(&false), "the limit was crossed: {outcomes:?}");
}

/// A request of empty resources or scopes, or of fields copied as written, costs what the scan keeps for them, not
/// only its items: 16 MiB of `0a 00` would otherwise make 8 million resources for free.
#[test]
fn the_scan_cost_counts_what_the_scan_keeps() {
    let empty_resources = [0x0a, 0x00].repeat(1000);
    let cost = super::scan_cost(&empty_resources).unwrap();
    assert_eq!(cost.items, 0);
    assert!(cost.bytes >= 1000 * std::mem::size_of::<super::ScannedResource<'static>>(), "{cost:?}");
    let scanned = WireSignal::Traces.scan(&empty_resources).unwrap();
    assert_eq!(scanned.resources.len(), 1000);
    // A resource of empty scopes, and scopes of schema_url fields.
    let mut scopes = vec![0x0a];
    let body: Vec<u8> = [0x12, 0x04, 0x1a, 0x02, b'a', b'b'].repeat(100);
    put_varint(&mut scopes, body.len() as u64);
    scopes.extend_from_slice(&body);
    let cost = super::scan_cost(&scopes).unwrap();
    let kept = std::mem::size_of::<super::ScannedScope<'static>>() + std::mem::size_of::<(u32, &[u8])>();
    assert!(cost.bytes >= 100 * kept, "{cost:?}");
}

#[test]
fn refusals_say_what_and_where() {
    // A span name that is not UTF-8.
    let mut bytes = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![1; 8],
                    name: "ab".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let at = bytes.windows(2).position(|w| w == b"ab").unwrap();
    bytes[at] = 0xff;
    let error = WireSignal::Traces.scan(&bytes).unwrap_err();
    assert_eq!(error.reason, "Span.name: invalid string value: not UTF-8");
    assert_eq!(error.offset, at);
    // A known field of the wrong wire type.
    let error = WireSignal::Traces.scan(&[0x08, 1]).unwrap_err();
    assert!(error.reason.contains("resource: invalid wire type: varint"), "{error}");
    assert_eq!(WireType::Varint.name(), "varint");
}
