//! `tailgate resample` end to end, as a process against Apache Kafka: a window the live sampler thinned is re-decided and
//! every trace of it that the sampler did not keep arrives at Jaeger whole and once; traces that began before or
//! after the window do not, nor do the ones the sampler kept (they were delivered already).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use tailgate_sampler::SamplerConfig;
use tonic::transport::Channel;

use crate::harness::backends::TraceReceiver;
use crate::harness::otlp::{service_resource, trace_id, trace_request_with};
use crate::harness::{self, binary, topic};

/// Window traces: 40, numbered from 100; every fifth has an error in a child span that arrives after its root;
/// every third calls inventory.
const WINDOW: std::ops::Range<u64> = 100..140;

fn span(trace: u64, n: u64, parent: Option<u64>, error: bool) -> Span {
    let now = harness::otlp::now_ns();
    Span {
        trace_id: trace_id(trace),
        span_id: (trace * 10 + n + 1).to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| (trace * 10 + p + 1).to_be_bytes().to_vec()).unwrap_or_default(),
        name: format!("t{trace}-s{n}"),
        kind: if parent.is_some() { span::SpanKind::Server } else { span::SpanKind::Client } as i32,
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        status: error.then(|| Status { code: status::StatusCode::Error as i32, message: "out of stock".into() }),
        ..Default::default()
    }
}

/// The root spans of `traces`, from the gateway.
async fn roots(client: &mut TraceServiceClient<Channel>, traces: impl Iterator<Item = u64>) {
    let spans = traces.map(|t| span(t, 0, None, false)).collect();
    client.export(trace_request_with(service_resource("gateway"), spans)).await.unwrap();
}

/// Two children of each of `traces`: one from cart (or inventory, every third trace), one from payments (an
/// error every fifth trace).
async fn children(client: &mut TraceServiceClient<Channel>, traces: impl Iterator<Item = u64> + Clone) {
    for (service, n) in [("cart", 1), ("inventory", 1), ("payments", 2)] {
        let spans: Vec<Span> = traces
            .clone()
            .filter(|t| n == 2 || (service == "inventory") == (t % 3 == 0))
            .map(|t| span(t, n, Some(0), n == 2 && t % 5 == 0))
            .collect();
        client.export(trace_request_with(service_resource(service), spans)).await.unwrap();
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// Runs `tailgate resample` with `args`; its exit code and stderr.
async fn resample(config: String, args: Vec<String>) -> (Option<i32>, String) {
    let path = harness::temp_dir("resample").join("tailgate.yaml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        binary::tailgate().args(["resample", "--config"]).arg(&path).args(args).output().unwrap()
    })
    .await
    .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Span IDs the receiver got, by trace number.
fn received(jaeger: &TraceReceiver) -> BTreeMap<u64, Vec<Vec<u8>>> {
    let mut by_trace: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (trace, span) in &jaeger.traces.lock().unwrap().spans {
        let n = WINDOW.clone().chain(0..100).chain(200..300).find(|n| trace_id(*n) == *trace).expect("a trace sent");
        by_trace.entry(n).or_default().push(span.clone());
    }
    by_trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resample_delivers_every_trace_of_a_thinned_window_whole_and_once() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    // The seed's policies: errors, slow traces, 10% of the rest.
    let live = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(1), ..Default::default() };
    let sampler = harness::start_sampler(&live, &kafka, "sampler").await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    // Record time is the subject here: traces before the window, one straddling its start, the window's, and
    // after it. The window is [from, to]; a resample reads from `from - decision_wait` to `to + decision_wait`.
    let t0 = Instant::now();
    let at = |ms: u64| tokio::time::sleep_until((t0 + Duration::from_millis(ms)).into());
    roots(&mut client, 0..10).await;
    children(&mut client, 0..10).await;
    at(2_500).await;
    roots(&mut client, 10..20).await; // straddling: begun 0.5 s before the window
    let from = now_ms() + 500;
    at(3_300).await;
    children(&mut client, 10..20).await;
    at(3_500).await;
    roots(&mut client, WINDOW).await;
    at(3_800).await;
    children(&mut client, WINDOW).await; // the error spans arrive after their roots
    let to = now_ms() + 200;
    at(6_500).await;
    roots(&mut client, 200..210).await;
    children(&mut client, 200..210).await;

    // What the live sampler decided, from the decisions topic: every trace once.
    let decisions = harness::read_topic(&kafka.brokers, &kafka.topics.decisions, 4, Duration::from_secs(30), |r| {
        topic::decisions(r).len() >= 70
    });
    let decisions = topic::decisions(&decisions);
    let kept_live: BTreeSet<u64> = decisions
        .iter()
        .filter(|d| d.keep)
        .filter_map(|d| WINDOW.clone().find(|n| trace_id(*n) == d.trace_id))
        .collect();
    let errors: BTreeSet<u64> = WINDOW.filter(|t| t % 5 == 0).collect();
    assert!(kept_live.is_superset(&errors), "the live sampler keeps every error trace: {kept_live:?}");
    let expected: BTreeSet<u64> = WINDOW.filter(|t| !kept_live.contains(t)).collect();
    assert!(!expected.is_empty(), "the live sampler thinned the window: it kept {kept_live:?}");

    let config = |jaeger: &TraceReceiver| {
        format!(
            "{}sampler: {{ decision_wait: 1s }}\nexporters:\n  jaeger: {{ endpoint: '{}' }}\n",
            harness::kafka::kafka_yaml(&kafka),
            jaeger.endpoint()
        )
    };
    let jaeger = TraceReceiver::start().await;
    let (code, stderr) =
        resample(config(&jaeger), vec!["--from".into(), rfc3339(from), "--to".into(), rfc3339(to)]).await;
    assert_eq!(code, Some(0), "{stderr}");

    // Every trace of the window the sampler did not keep, whole (3 spans), none twice, nothing else.
    let received = received(&jaeger);
    assert_eq!(received.keys().copied().collect::<BTreeSet<u64>>(), expected, "{stderr}");
    for (trace, spans) in &received {
        let distinct: BTreeSet<&Vec<u8>> = spans.iter().collect();
        assert_eq!((spans.len(), distinct.len()), (3, 3), "trace {trace}: whole and once");
    }
    // Left out as kept already: every span read of a trace the live sampler kept — the window's, and the
    // straddling traces' (10..20), whose spans all lie in the range read (`from - decision_wait` on). (On Tansu, whose
    // time lookup started later, the straddling traces were not read; Apache Kafka's lookup is exact.)
    let kept_read = decisions
        .iter()
        .filter(|d| d.keep)
        .filter(|d| (10..20).chain(WINDOW).any(|n| trace_id(n) == d.trace_id))
        .count();
    let (n, k) = (expected.len(), kept_read);
    assert!(stderr.contains("resample: "), "a progress line: {stderr}");
    assert!(
        stderr.contains(&format!("{n} traces decided, {n} kept ({} spans)", 3 * n))
            && stderr.contains(&format!("{} spans of traces the sampler had kept left out", 3 * k)),
        "a summary with the exact counts: {stderr}"
    );
    assert!(stderr.contains(&format!("{} items delivered, 0 rejected", 3 * n)), "the delivery's summary: {stderr}");
    // The throw-away topic (and its dead-letter topic) went once delivered.
    let consumer: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().unwrap();
    let metadata = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10)).unwrap();
    let left: Vec<&str> = metadata.topics().iter().map(|t| t.name()).filter(|t| t.contains(".resample.")).collect();
    assert!(left.is_empty(), "{left:?}");

    // The incident story: only the traces that touched inventory (every third), with a policies file.
    let jaeger = TraceReceiver::start().await;
    let policies = harness::temp_dir("resample-policies").join("inventory.yaml");
    std::fs::write(
        &policies,
        "policies:\n  - name: inventory\n    type: string_attribute\n    string_attribute: { key: service.name, values: [inventory] }\n",
    )
    .unwrap();
    let (code, stderr) = resample(
        config(&jaeger),
        vec![
            "--from".into(),
            rfc3339(from),
            "--to".into(),
            rfc3339(to),
            "--policies".into(),
            policies.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let inventory: BTreeSet<u64> = expected.iter().copied().filter(|t| t % 3 == 0).collect();
    assert_eq!(received_traces(&jaeger), inventory, "{stderr}");

    sampler.stop().await;
    gateway.stop().await;
}

fn received_traces(jaeger: &TraceReceiver) -> BTreeSet<u64> {
    received(jaeger).keys().copied().collect()
}
