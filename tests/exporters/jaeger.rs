//! Tailgate's Jaeger exporter against real Jaeger v2 (in-memory storage), checked through Jaeger's own query API —
//! what a user opens after a customer's complaint. The stand-in receiver stays for the tests that need a backend to
//! fail on command.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};

use crate::harness::jaeger::Jaeger;
use crate::harness::otlp::{service_resource, trace_id, trace_request_with};
use crate::harness::{self, sampling};

const TRACES: u64 = 60;
/// Span `s` of every trace comes from `SERVICES[s]`, in its own request.
const SERVICES: [&str; 3] = ["gateway", "cart", "payments"];
const ERRORS: std::ops::Range<u64> = 0..10;
const SLOW: std::ops::Range<u64> = 10..20;

fn span_id(t: u64, s: usize) -> Vec<u8> {
    (t * 10 + s as u64 + 1).to_be_bytes().to_vec()
}

/// The spans of `SERVICES[s]`: the gateway's root (3 s long for the slow traces), then children; the error of a
/// failing trace is in the last request, after its root was read.
fn request(s: usize) -> ExportTraceServiceRequest {
    let start = 1_700_000_000_000_000_000u64;
    let spans = (0..TRACES)
        .map(|t| Span {
            trace_id: trace_id(t),
            span_id: span_id(t, s),
            parent_span_id: if s == 0 { Vec::new() } else { span_id(t, 0) },
            name: format!("{}-op", SERVICES[s]),
            start_time_unix_nano: start,
            end_time_unix_nano: start + if SLOW.contains(&t) && s == 0 { 3_000_000_000 } else { 1_000_000 },
            status: (ERRORS.contains(&t) && s == SERVICES.len() - 1)
                .then(|| Status { code: status::StatusCode::Error as i32, message: "card declined".into() }),
            ..Default::default()
        })
        .collect();
    trace_request_with(service_resource(SERVICES[s]), spans)
}

/// The policy that keeps trace `t` under the seed's policies (the first that matches), if any.
fn keeping_policy(t: u64) -> Option<&'static str> {
    if ERRORS.contains(&t) {
        Some("errors-always")
    } else if SLOW.contains(&t) {
        Some("slow-requests")
    } else if sampling::probabilistic_keeps(&trace_id(t), 10.0) {
        Some("sample-rest")
    } else {
        None
    }
}

/// Gateway → Apache Kafka → sampler (the seed's policies, recording the keeping policy) → Jaeger exporter → Jaeger
/// v2. Every kept trace is in Jaeger whole — its three spans, its three services, each span tagged with the policy
/// that kept it — and every dropped trace is absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_traces_are_whole_in_real_jaeger_and_dropped_ones_absent() {
    let jaeger = Jaeger::start().await;
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let sampler_config = tailgate_sampler::SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(5),
        record_policy: true,
        ..Default::default()
    };
    let sampler = harness::start_sampler(&sampler_config, &kafka, "tailgate-sampler").await;
    let exporter = harness::roles::start_jaeger_exporter(format!("http://{}", jaeger.otlp_grpc), &kafka).await;

    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    for s in 0..SERVICES.len() {
        client.export(request(s)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let kept: Vec<u64> = (0..TRACES).filter(|t| keeping_policy(*t).is_some()).collect();
    // Pinned as well as computed: 10 errors, 10 slow, and of the 40 others those the hash keeps.
    assert_eq!(kept.len(), 25, "kept: {kept:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for t in &kept {
        loop {
            let trace = jaeger.trace(&trace_id(*t)).await;
            if trace.as_ref().is_some_and(|trace| trace.spans.len() >= SERVICES.len()) {
                break;
            }
            assert!(Instant::now() < deadline, "trace {t} not whole in Jaeger within 60 s: {trace:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A moment more, for anything sent wrongly at the same time to land too.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let services: BTreeSet<&str> = SERVICES.into_iter().collect();
    for t in 0..TRACES {
        let trace = jaeger.trace(&trace_id(t)).await;
        let Some(policy) = keeping_policy(t) else {
            assert!(trace.is_none(), "dropped trace {t} is in Jaeger: {trace:?}");
            continue;
        };
        let trace = trace.unwrap();
        let ids: BTreeSet<String> = trace.spans.iter().map(|span| span.span_id.clone()).collect();
        let expected: BTreeSet<String> = (0..SERVICES.len()).map(|s| hex::encode(span_id(t, s))).collect();
        assert_eq!(ids, expected, "trace {t}: its spans");
        assert_eq!(trace.spans.len(), SERVICES.len(), "trace {t}: each span once");
        assert_eq!(trace.services(), services, "trace {t}: its services");
        for span in &trace.spans {
            assert_eq!(span.operation, format!("{}-op", span.service), "trace {t}: a span under its own service");
            assert_eq!(span.tags.get("tailsampling.policy"), Some(&serde_json::json!(policy)), "trace {t}: {span:?}");
            let failed = ERRORS.contains(&t) && span.service == "payments";
            assert_eq!(span.tags.get("error"), failed.then_some(&serde_json::json!(true)), "trace {t}: {span:?}");
        }
    }
    exporter.stop().await;
    sampler.stop().await;
    gateway.stop().await;
}
