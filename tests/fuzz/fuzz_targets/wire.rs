//! The wire scanner against prost on arbitrary bytes: it accepts a trace or logs request exactly when prost
//! decodes it, and its records decode to the records of the decoded split. Run (see BENCHMARKS.md):
//! `tests/fuzz/run.sh wire 60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tailgate_proto::wire::{self, WireSignal};
use tailgate_proto::{split, Signal};

/// Big enough that each partition gets one record: records of either split then decode to the same request.
const LIMIT: usize = 1 << 24;
const PARTITIONS: u32 = 3;

fn check<S: Signal + PartialEq + std::fmt::Debug>(data: &[u8], signal: WireSignal) {
    let decoded = S::decode(data);
    let scanned = signal.scan(data);
    assert_eq!(scanned.is_ok(), decoded.is_ok(), "scan {:?}", scanned.as_ref().err());
    assert_eq!(signal.validate(data).is_ok(), decoded.is_ok());
    let (Ok(decoded), Ok(scanned)) = (decoded, scanned) else { return };
    let items: usize = scanned.resources.iter().flat_map(|r| &r.scopes).map(|s| s.items.len()).sum();
    assert_eq!(wire::count_items(data), Ok(items));
    let got = wire::split(&scanned, signal, PARTITIONS, LIMIT);
    let expected = split(decoded, PARTITIONS, LIMIT);
    assert_eq!(
        (got.accepted, got.rejected_invalid_id, got.rejected_too_large),
        (expected.accepted, expected.rejected_invalid_id, expected.rejected_too_large)
    );
    assert_eq!(got.records.len(), expected.records.len());
    for (got, expected) in got.records.iter().zip(&expected.records) {
        assert_eq!((got.partition, &got.key, got.items), (expected.partition, &expected.key, expected.items));
        // Compared as re-encoded bytes: a double attribute of NaN is the same value on both sides, but NaN != NaN.
        let (got, expected) = (S::decode(got.value.as_slice()).unwrap(), S::decode(expected.value.as_slice()).unwrap());
        assert_eq!(prost::Message::encode_to_vec(&got), prost::Message::encode_to_vec(&expected));
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ExportTraceServiceRequest>(data, WireSignal::Traces);
    check::<ExportLogsServiceRequest>(data, WireSignal::Logs);
});
