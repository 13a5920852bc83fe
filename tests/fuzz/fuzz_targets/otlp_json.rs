//! An OTLP/HTTP JSON body as the gateway reads it (`tailgate_ingest::decode_json`, with OTLP/JSON's hex IDs,
//! string-encoded 64-bit integers and enum names), then split into records like a protobuf one. No panic.
//! `tests/fuzz/run.sh otlp_json 60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tailgate_ingest::{Changes, Payload};
use tailgate_proto::{RecordLimit, Signal};

fn check<S: Signal + serde::de::DeserializeOwned + 'static>(data: &[u8]) {
    let Ok(request) = tailgate_ingest::decode_json::<S>(data) else { return };
    let records = tailgate_ingest::records(
        Payload::Decoded(request),
        4,
        &Changes::default(),
        RecordLimit::from(64 * 1024),
        |_| Ok(()),
        |_| Ok(()),
    );
    assert!(records.is_ok(), "a decoded request always splits");
}

fuzz_target!(|data: &[u8]| {
    check::<ExportTraceServiceRequest>(data);
    check::<ExportLogsServiceRequest>(data);
    check::<ExportMetricsServiceRequest>(data);
});
