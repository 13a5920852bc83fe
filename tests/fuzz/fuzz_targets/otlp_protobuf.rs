//! An OTLP/HTTP or gRPC protobuf body, after decompression, as the gateway turns it into Kafka records
//! (`tailgate_ingest::records`: the scan's cost paid first, the scan or decode, redaction, resource actions, the
//! split), for each signal, with and without redaction. Whatever the bytes: no panic, and every record fits the limit it was split for.
//! `tests/fuzz/run.sh otlp_protobuf 60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
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
    }
}

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
            blocked_values: vec!["4[0-9]{12}(?:[0-9]{3})?".into(), "[a-z]+@[a-z.]+".into()],
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
