//! An OTLP/HTTP or gRPC protobuf body, after decompression, as the gateway turns it into Kafka records
//! (`tailgate_ingest::records`: the scan's cost paid first, the scan or decode, resource actions, the split), for
//! each signal. Whatever the bytes: no panic, and every record fits the limit it was split for.
//! `tests/fuzz/run.sh otlp_protobuf 60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tailgate_ingest::{Action, Payload, ResourceAction, ResourceProcessor};
use tailgate_proto::{RecordLimit, Signal};

const PARTITIONS: u32 = 4;
const MAX_RECORD: usize = 64 * 1024;

fn check<S: Signal>(data: &[u8], resource: &ResourceProcessor) {
    let limit = RecordLimit::from(MAX_RECORD);
    let Ok(split) = tailgate_ingest::records::<S>(
        Payload::Encoded(data.to_vec()),
        PARTITIONS,
        resource,
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

fuzz_target!(|data: &[u8]| {
    let resource = ResourceProcessor::new(&[
        ResourceAction { key: "deployment.environment".into(), value: Some("prod".into()), action: Action::Upsert },
        ResourceAction { key: "host.name".into(), value: None, action: Action::Delete },
    ]);
    check::<ExportTraceServiceRequest>(data, &resource);
    check::<ExportLogsServiceRequest>(data, &resource);
    check::<ExportMetricsServiceRequest>(data, &resource);
});
