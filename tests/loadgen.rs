//! `tailgate loadgen` against `tailgate all-in-one`, both the real binary: what it says it sent is what Kafka has.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tailgate::loadgen::{SERVICES, SPANS_PER_TRACE};

use crate::harness::{self, binary, topic};

fn loadgen(args: &[&str]) -> std::process::Output {
    binary::tailgate().arg("loadgen").args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_sends_the_checkout_flow_and_counts_only_what_was_acknowledged() {
    let aio = binary::AllInOne::start().await;
    let endpoint = format!("127.0.0.1:{}", aio.grpc);
    let args =
        ["--endpoint", &endpoint, "--rate", "50", "--duration", "2s", "--error-rate", "0.2", "--slow-rate", "0.1"];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || loadgen(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("loadgen done: 100 checkouts"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "acknowledged {} spans, {} log records",
            100 * SPANS_PER_TRACE,
            100 * SPANS_PER_TRACE
        )),
        "{stdout}"
    );

    // Every span of every trace is in Kafka, on the trace's partition, from all six services.
    let brokers = aio.brokers();
    let spans_expected = (100 * SPANS_PER_TRACE) as usize;
    let records = harness::read_topic(&brokers, "otlp_spans", 2, Duration::from_secs(30), |r| {
        topic::count_spans(r) >= spans_expected
    });
    let mut traces: BTreeMap<Vec<u8>, Vec<(String, bool, u64)>> = BTreeMap::new();
    for record in &records {
        let request = ExportTraceServiceRequest::decode(record.value.as_slice()).unwrap();
        for resource in request.resource_spans {
            let service = format!("{:?}", resource.resource);
            let service = SERVICES.iter().find(|s| service.contains(&format!("\"{s}\""))).unwrap().to_string();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                let error = span.status.as_ref().is_some_and(|s| s.code == 2);
                traces.entry(span.trace_id).or_default().push((
                    service.clone(),
                    error,
                    span.end_time_unix_nano - span.start_time_unix_nano,
                ));
            }
        }
    }
    assert_eq!(traces.len(), 100);
    assert!(traces.values().all(|t| t.len() == SPANS_PER_TRACE as usize));
    assert!(traces.values().all(|t| t.iter().map(|s| s.0.as_str()).collect::<BTreeSet<_>>().len() == 6));
    // Error and slow traces at the configured rates (a fixed seed: exact counts vary by seed, not by run).
    let errors = traces.values().filter(|t| t.iter().any(|s| s.1)).count();
    let slow = traces.values().filter(|t| t.iter().any(|s| s.2 >= 2_500_000_000)).count();
    assert!((8..=35).contains(&errors), "~20% errors: {errors}");
    assert!((2..=22).contains(&slow), "~10% slow: {slow}");
    assert!(stdout.contains(&format!("({errors} errors, {slow} slow)")), "{stdout}");

    // Logs: one per span, carrying its trace ID. Metrics: the business series.
    let logs = harness::read_topic(&brokers, "otlp_logs", 2, Duration::from_secs(30), |r| {
        topic::count_logs(r) >= spans_expected
    });
    assert_eq!(topic::count_logs(&logs), spans_expected);
    let with_trace = topic::logs(&logs).iter().filter(|(_, l)| traces.contains_key(&l.trace_id)).count();
    assert_eq!(with_trace, spans_expected);
    let metrics = harness::read_topic(&brokers, "otlp_metrics", 2, Duration::from_secs(30), |r| !r.is_empty());
    let names = topic::metric_names(&metrics);
    assert_eq!(names, BTreeSet::from(["cart.abandoned".into(), "checkout.completed".into(), "checkout.value".into()]));

    // The same over OTLP/HTTP.
    let endpoint = format!("127.0.0.1:{}", aio.http);
    let output = tokio::task::spawn_blocking(move || {
        loadgen(&["--endpoint", &endpoint, "--protocol", "http", "--rate", "10", "--duration", "1s", "--seed", "2"])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("acknowledged {} spans, {} log records", 10 * SPANS_PER_TRACE, 10 * SPANS_PER_TRACE)),
        "{stdout}"
    );

    drop(aio);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_against_a_gateway_that_is_down_says_so_and_reports_nothing_as_sent() {
    let port = harness::free_port().to_string();
    let endpoint = format!("127.0.0.1:{port}");
    let output = tokio::task::spawn_blocking(move || {
        loadgen(&["--endpoint", &endpoint, "--rate", "5", "--duration", "1s", "--protocol", "http"])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("unreachable"), "{stdout}");
    assert!(stdout.contains("retry 1/5"), "retries like an SDK: {stdout}");
    assert!(stdout.contains("acknowledged 0 spans, 0 log records, 0 metric points"), "{stdout}");
}
