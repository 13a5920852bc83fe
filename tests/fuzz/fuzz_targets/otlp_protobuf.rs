//! An OTLP/HTTP or gRPC protobuf body, after decompression, as the gateway turns it into Kafka records
//! (`tailgate_ingest::records`: the scan's cost paid first, the scan or decode, redaction, resource actions, the
//! split), for each signal, with and without redaction. Whatever the bytes: no panic; every record, with the headers
//! the gateway gives it and Kafka's framing, fits the `message.max.bytes` it was split for (sized here as the
//! protocol writes a record, not by the code under test); with redaction, no blocked value is left in any string of
//! a span's or a log record's attributes or a log record's body, however deeply nested.
//! `tests/fuzz/run.sh otlp_protobuf 60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use regex::Regex;
use tailgate_ingest::{Action, Changes, Payload, RedactionConfig, Redactor, ResourceAction, ResourceProcessor};
use tailgate_proto::{RecordLimit, Signal};

const PARTITIONS: u32 = 4;
/// The producer's `message.max.bytes`: small, so that records split up to it are common in fuzzed inputs.
const MAX_RECORD: usize = 4 * 1024;
/// What the gateway attaches to every record: its contract, the receive time, a tenant.
const HEADERS: [(&str, &[u8]); 4] = [
    ("tailgate.encoding", b"otlp_proto"),
    ("tailgate.contract", b"1"),
    ("tailgate.received_at", b"1700000000123456789"),
    ("tailgate.tenant", b"acme-eu"),
];

/// Bytes of a zigzag varint holding `n`, as Kafka's record format writes lengths.
fn varint(n: usize) -> usize {
    let mut value = (n as u64) << 1;
    let mut bytes = 1;
    while value > 0x7f {
        value >>= 7;
        bytes += 1;
    }
    bytes
}

/// Whether a record of this key and value with [`HEADERS`] fits `MAX_RECORD` both where it is checked: by
/// librdkafka before it is produced (key + value + serialized headers + 36, `rd_kafka_msg_max_wire_size`) and by the
/// broker, as a batch of one (the 61-byte batch header, then the record with its length, attributes, timestamp
/// and offset deltas (0 in a batch of one), key, value, header count and headers).
fn fits(key: usize, value: usize) -> bool {
    let headers: usize = HEADERS.iter().map(|(k, v)| varint(k.len()) + k.len() + varint(v.len()) + v.len()).sum();
    let librdkafka = key + value + headers + 36;
    let body = 1 + varint(0) + varint(0) + varint(key) + key + varint(value) + value + varint(HEADERS.len()) + headers;
    let batch = 61 + varint(body) + body;
    librdkafka <= MAX_RECORD && batch <= MAX_RECORD
}

fn check<S: Signal + 'static>(data: &[u8], changes: &Changes) {
    let limit = RecordLimit::new(MAX_RECORD, HEADERS);
    let Ok(split) = tailgate_ingest::records::<S>(
        Payload::Encoded(data.to_vec()),
        PARTITIONS,
        changes,
        limit,
        |_| Ok(()),
        |_| Ok(()),
    ) else {
        return;
    };
    for record in &split.records {
        assert!(record.partition < PARTITIONS);
        assert!(fits(record.key.len(), record.value.len()), "a record over message.max.bytes");
        if changes.redaction.is_some() {
            no_blocked_value_left::<S>(&record.value);
        }
    }
}

/// With redaction, no string in the attributes of a resource, span, event, link or log record, nor in a log
/// record's body, holds a card number or an e-mail address, at any depth of arrays and key-value lists (masking
/// with `****` cannot make a new match of these patterns). A record is decoded as the signal it was split as.
fn no_blocked_value_left<S: 'static>(record: &[u8]) {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use prost::Message as _;
    fn value_clean(value: &AnyValue, blocked: &[Regex], what: &str) {
        match &value.value {
            Some(any_value::Value::StringValue(text)) => {
                assert!(!blocked.iter().any(|b| b.is_match(text)), "{what} = `{text}` left unmasked")
            }
            Some(any_value::Value::ArrayValue(array)) => {
                array.values.iter().for_each(|v| value_clean(v, blocked, what))
            }
            Some(any_value::Value::KvlistValue(list)) => attributes_clean(&list.values, blocked, what),
            _ => {}
        }
    }
    fn attributes_clean(attributes: &[KeyValue], blocked: &[Regex], what: &str) {
        for attribute in attributes {
            if let Some(value) = &attribute.value {
                value_clean(value, blocked, &format!("{what} `{}`", attribute.key));
            }
        }
    }
    let blocked = [Regex::new(CARD).unwrap(), Regex::new(EMAIL).unwrap()];
    let resource = |r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>| {
        attributes_clean(r.as_ref().map_or(&[][..], |r| &r.attributes), &blocked, "resource attribute");
    };
    let any = std::any::TypeId::of::<S>();
    if any == std::any::TypeId::of::<ExportTraceServiceRequest>() {
        let request = ExportTraceServiceRequest::decode(record).expect("a record the gateway wrote decodes");
        for resource_spans in &request.resource_spans {
            resource(&resource_spans.resource);
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                attributes_clean(&span.attributes, &blocked, "span attribute");
                span.events.iter().for_each(|e| attributes_clean(&e.attributes, &blocked, "event attribute"));
                span.links.iter().for_each(|l| attributes_clean(&l.attributes, &blocked, "link attribute"));
            }
        }
    } else if any == std::any::TypeId::of::<ExportLogsServiceRequest>() {
        let request = ExportLogsServiceRequest::decode(record).expect("a record the gateway wrote decodes");
        for resource_logs in &request.resource_logs {
            resource(&resource_logs.resource);
            for log in resource_logs.scope_logs.iter().flat_map(|s| &s.log_records) {
                attributes_clean(&log.attributes, &blocked, "log attribute");
                if let Some(body) = &log.body {
                    value_clean(body, &blocked, "log body");
                }
            }
        }
    }
}

const CARD: &str = "4[0-9]{12}(?:[0-9]{3})?";
const EMAIL: &str = "[a-z]+@[a-z.]+";

/// The wire path, and the decoded path redaction takes: built once, the patterns compiled once.
fn changes() -> &'static [Changes; 2] {
    static CHANGES: std::sync::OnceLock<[Changes; 2]> = std::sync::OnceLock::new();
    CHANGES.get_or_init(|| {
        let resource = ResourceProcessor::new(&[
            ResourceAction { key: "deployment.environment".into(), value: Some("prod".into()), action: Action::Upsert },
            ResourceAction { key: "host.name".into(), value: None, action: Action::Delete },
        ]);
        let redaction = RedactionConfig {
            allow_all_keys: true,
            blocked_key_patterns: vec![".*token.*".into()],
            blocked_values: vec![CARD.into(), EMAIL.into()],
            summary: tailgate_ingest::Summary::Debug,
            db_sanitizer: tailgate_ingest::DbSanitizer {
                sql: tailgate_ingest::SqlSanitizer { enabled: true, ..Default::default() },
            },
            ..Default::default()
        };
        [
            Changes { resource: resource.clone(), redaction: None },
            Changes { resource, redaction: Some(Redactor::new(&redaction).expect("the patterns compile")) },
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    for changes in changes() {
        check::<ExportTraceServiceRequest>(data, changes);
        check::<ExportLogsServiceRequest>(data, changes);
        check::<ExportMetricsServiceRequest>(data, changes);
    }
});
