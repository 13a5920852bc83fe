//! A record of the spans topic as a sampler reads it, from another producer as much as from a gateway: its
//! contract and tenant headers checked, its payload scanned, its spans counted for RED and buffered by trace,
//! every trace decided by the seed's policies, kept ones written from their bytes and split into records.
//! The first input byte chooses the headers; the rest is the payload. No panic; every span is either buffered,
//! refused for its trace ID, or the record is refused whole.
//! `tests/fuzz/run.sh sampler_record 60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
use tailgate_proto::wire::WireSignal;
use tailgate_proto::RecordLimit;
use tailgate_sampler::buffer::{PartitionBuffer, TraceLimits};
use tailgate_sampler::policy::{Policies, TraceView};
use tailgate_sampler::red::RedMetrics;
use tailgate_sampler::{split_kept, Marks, SamplerConfig};

/// Header values a record may carry, the first byte of the input choosing among them.
const TENANTS: [&str; 4] = ["payments", "../x", "", "a b"];
const CONTRACTS: [&str; 3] = ["1", "1.7", "2"];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, payload)) = data.split_first() else { return };
    let mut headers = OwnedHeaders::new();
    if choice & 1 != 0 {
        let value = CONTRACTS[(choice as usize >> 1) % CONTRACTS.len()];
        headers = headers.insert(Header { key: tailgate_proto::headers::CONTRACT_VERSION, value: Some(value) });
    }
    if choice & 8 != 0 {
        let value = TENANTS[(choice as usize >> 4) % TENANTS.len()];
        headers = headers.insert(Header { key: tailgate_proto::headers::TENANT, value: Some(value) });
    }
    let message =
        OwnedMessage::new(Some(payload.to_vec()), None, "spans".into(), Timestamp::NotAvailable, 0, 0, Some(headers));

    if tailgate_kafka::contract::readable(&message).is_err() {
        return;
    }
    let Ok(tenant) = tailgate_sampler::tenant::of(&message) else { return };
    let Ok(request) = WireSignal::Traces.scan(payload) else { return };

    let mut red = RedMetrics::new(&[5.0, 50.0, 500.0], 0, 64);
    red.record(&request);
    let _ = red.export("fuzz", 0, 1);

    let config = SamplerConfig::default();
    let mut policies = Policies::build(&config.policies).expect("the seed's policies build");
    let mut buffer = PartitionBuffer::default();
    let limits = TraceLimits { max_spans: 64, max_bytes: 1 << 20 };
    buffer.add_record(0, 1_000, tenant, &request, limits, |_| None);
    let over_limit = buffer.take_over_limit().into_iter().map(|(trace_id, trace, _)| (trace_id, trace));
    let due: Vec<_> = over_limit.chain(buffer.due(0, None)).collect();
    for (trace_id, trace) in due {
        let verdict = policies.decide(&TraceView::new(&trace_id, &trace), buffer.clock_ms);
        if verdict.keep {
            let marks = Marks::new(Some(verdict.policy.as_deref().unwrap_or_default()), verdict.probabilistic);
            let kept = trace.encode(|span, out| marks.write_span(span, out));
            let records = split_kept(&kept, 4, RecordLimit::from(64 * 1024));
            assert_eq!(
                records.rejected_invalid_id + records.rejected_too_large + records.accepted,
                trace.spans as usize
            );
        }
    }
});
