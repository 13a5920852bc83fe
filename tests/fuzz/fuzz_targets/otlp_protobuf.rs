//! An OTLP/HTTP or gRPC protobuf body, after decompression, as the gateway turns it into Kafka records
//! (`tailgate_ingest::records`: the scan's cost paid first, the scan or decode, redaction, resource actions, the
//! split), for each signal, with and without redaction. Whatever the bytes: no panic, and every record fits the limit it was split for.
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
const MAX_RECORD: usize = 64 * 1024;

fn check<S: Signal + 'static>(data: &[u8], changes: &Changes) {
    let limit = RecordLimit::from(MAX_RECORD);
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
        assert!(record.key.len() + record.value.len() <= MAX_RECORD, "a record over its limit");
        if changes.redaction.is_some() {
            no_blocked_value_left(&record.value);
        }
    }
}

/// With redaction, no span attribute of a record still holds a card number or an e-mail address (masking with
/// `****` cannot make a new match of these patterns).
fn no_blocked_value_left(record: &[u8]) {
    use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
    use prost::Message as _;
    let Ok(request) = ExportTraceServiceRequest::decode(record) else { return };
    let blocked = [Regex::new(CARD).unwrap(), Regex::new(EMAIL).unwrap()];
    let check = |attributes: &[KeyValue]| {
        for attribute in attributes {
            if let Some(any_value::Value::StringValue(value)) = attribute.value.as_ref().and_then(|v| v.value.as_ref())
            {
                assert!(!blocked.iter().any(|b| b.is_match(value)), "`{}` = `{value}` left unmasked", attribute.key);
            }
        }
    };
    for resource_spans in &request.resource_spans {
        check(resource_spans.resource.as_ref().map_or(&[][..], |r| &r.attributes));
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            check(&span.attributes);
            span.events.iter().for_each(|e| check(&e.attributes));
            span.links.iter().for_each(|l| check(&l.attributes));
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
