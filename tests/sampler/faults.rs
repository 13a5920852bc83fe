//! Sampler workers under membership changes and crashes, on Apache Kafka with the default `cooperative-sticky`
//! strategy (`tests/kafka/membership.rs` has the static-membership and three-worker cases), and
//! under floods and output outages. The promise: lost = 0; duplicates are allowed and reported.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use tailgate_sampler::SamplerConfig;
use tonic::transport::Channel;

use crate::harness::otlp::trace_id;
use crate::harness::processes::{Process, Ready};
use crate::harness::{self, http, topic, wait};

const PARTITIONS: u32 = 4;
const SPANS: u32 = 4;

/// The one failed span of each trace: the second, so that the tests' first half of a trace (spans 0 and 1) holds
/// it and the second half (2 and 3) does not. A worker that decides on the second half alone — a late half whose
/// trace's decision it lost — drops it, and the trace is found incomplete.
const FAILED_SPAN: u32 = 1;

/// Spans `spans` of traces `traces`; span [`FAILED_SPAN`] failed, so the default policies keep every trace whole.
async fn send(client: &mut TraceServiceClient<Channel>, traces: std::ops::Range<u32>, spans: std::ops::Range<u32>) {
    for s in spans {
        let spans = traces
            .clone()
            .map(|t| Span {
                trace_id: trace_id(t.into()),
                span_id: ((t * 10 + s + 1) as u64).to_be_bytes().to_vec(),
                name: format!("{s}"),
                status: (s == FAILED_SPAN)
                    .then(|| Status { code: status::StatusCode::Error as i32, message: String::new() }),
                ..Default::default()
            })
            .collect();
        let request = harness::trace_request(spans);
        // As an SDK does: a request Kafka did not acknowledge in time (UNAVAILABLE) is sent again.
        let mut attempts = 0;
        while let Err(status) = client.export(request.clone()).await {
            attempts += 1;
            assert!(status.code() == tonic::Code::Unavailable && attempts < 5, "{status:?}");
        }
    }
}

/// Trace ID → the distinct span names seen, and trace ID → span copies seen.
type Seen = (HashMap<Vec<u8>, HashSet<String>>, HashMap<Vec<u8>, usize>);

/// Span names seen per trace, and how many span copies there were of each trace.
fn spans_by_trace(records: &[harness::Record]) -> Seen {
    let mut by_trace: HashMap<Vec<u8>, HashSet<String>> = HashMap::new();
    let mut copies: HashMap<Vec<u8>, usize> = HashMap::new();
    for (_, span) in topic::spans(records) {
        *copies.entry(span.trace_id.clone()).or_default() += 1;
        by_trace.entry(span.trace_id).or_default().insert(span.name);
    }
    (by_trace, copies)
}

/// Reads the sampled topic until every trace in `0..traces` is there whole; asserts lost = 0 and returns the number
/// of duplicate span copies.
fn assert_nothing_lost(kafka: &tailgate_kafka::KafkaConfig, traces: u32) -> usize {
    let complete = |records: &[harness::Record]| {
        let (by_trace, _) = spans_by_trace(records);
        (0..traces).all(|t| by_trace.get(&trace_id(t.into())).is_some_and(|s| s.len() == SPANS as usize))
    };
    let records =
        harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, PARTITIONS, Duration::from_secs(90), complete);
    let (by_trace, copies) = spans_by_trace(&records);
    let lost: Vec<u32> =
        (0..traces).filter(|t| by_trace.get(&trace_id((*t).into())).is_none_or(|s| s.len() < SPANS as usize)).collect();
    assert!(lost.is_empty(), "traces lost or incomplete: {lost:?}");
    (0..traces).map(|t| copies[&trace_id(t.into())]).sum::<usize>() - (traces * SPANS) as usize
}

/// [`assert_nothing_lost`] off the async runtime.
async fn nothing_lost(kafka: &tailgate_kafka::KafkaConfig, traces: u32) -> usize {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || assert_nothing_lost(&kafka, traces)).await.unwrap()
}

fn config() -> SamplerConfig {
    SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(2), ..SamplerConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_joining_and_leaving_mid_window_lose_nothing() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let a = harness::start_sampler(&config(), &kafka, "tailgate-sampler").await;
    let stats_a = a.stats.clone();
    send(&mut client, 0..100, 0..2).await;
    let read =
        harness::eventually(Duration::from_secs(20), || stats_a.max_buffered_bytes.load(Ordering::SeqCst) > 0).await;
    assert!(read, "A buffered the first halves");
    assert_eq!(stats_a.traces_decided.load(Ordering::SeqCst), 0, "A holds them undecided when B joins");

    // B joins while A holds half-buffered traces.
    let b = harness::start_sampler(&config(), &kafka, "tailgate-sampler").await;
    send(&mut client, 0..100, 2..4).await;
    send(&mut client, 100..200, 0..2).await;
    let stats_b = b.stats.clone();
    // The rebalance moved partitions from A to B mid-window.
    let joined = harness::eventually(Duration::from_secs(30), || {
        stats_b.owned_partitions.load(Ordering::SeqCst) > 0
            && stats_a.owned_partitions.load(Ordering::SeqCst) < u64::from(PARTITIONS)
    })
    .await;
    assert!(joined, "B was given some of A's partitions");

    // A leaves while B holds half-buffered traces (the second halves of 100..200 are not sent yet).
    send(&mut client, 100..200, 2..4).await;
    send(&mut client, 200..300, 0..2).await;
    a.stop().await;
    send(&mut client, 200..300, 2..4).await;

    let duplicates = nothing_lost(&kafka, 300).await;
    let revocations = stats_a.revocations.load(Ordering::SeqCst) + b.stats.revocations.load(Ordering::SeqCst);
    eprintln!("rebalance (cooperative-sticky, Apache Kafka): revocations = {revocations}, duplicate spans = {duplicates}, lost = 0");
    assert!(revocations > 0, "a revoke actually happened");

    b.stop().await;
    gateway.stop().await;
}

/// The sum of every series of `family` the sampler at `telemetry` serves.
async fn served(telemetry: std::net::SocketAddr, family: &str) -> f64 {
    http::metrics(telemetry).await.iter().filter(|(series, _)| http::in_family(series, family)).map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_window_loses_nothing() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    let dir = harness::temp_dir("kill");
    let telemetry: std::net::SocketAddr = format!("127.0.0.1:{}", harness::free_port()).parse().unwrap();
    let sampler =
        format!("sampler: {{ decision_wait: 3s }}\ntelemetry: {{ metrics: {{ endpoint: '{telemetry}' }} }}\n");
    let config = format!("{}{sampler}", harness::kafka::kafka_yaml(&kafka));
    let mut worker = Process::new(&dir, "sampler", "sampler", &config, Ready::Health(telemetry));

    worker.start().await;
    send(&mut client, 0..100, 0..2).await;
    // The first 100 traces decided (their late halves will follow the decisions), ...
    wait::until("the first 100 traces decided", Duration::from_secs(30), || async {
        served(telemetry, "tailgate_sampler_traces_total").await >= 100.0
    })
    .await;
    send(&mut client, 100..200, 0..2).await;
    // ... and the next 100 read and waiting for their decision when the worker dies.
    wait::until("the next 100 traces buffered", Duration::from_secs(30), || async {
        served(telemetry, "tailgate_sampler_buffered_traces").await >= 100.0
    })
    .await;
    assert_eq!(served(telemetry, "tailgate_sampler_traces_total").await, 100.0, "the next 100 still undecided");
    worker.kill();

    // Late spans of decided traces, and the rest of the undecided ones, arrive while no worker runs.
    send(&mut client, 0..200, 2..4).await;
    let restarted = Instant::now();
    worker.start().await;
    let duplicates = nothing_lost(&kafka, 200).await;
    // Only what the dead worker had read and not committed is read again: at most the 400 spans sent before it died.
    assert!(duplicates <= 400, "{duplicates} duplicate spans: more than the worker had read when it died");
    eprintln!(
        "SIGKILL mid-window: duplicate spans = {duplicates}, lost = 0; every trace complete {:.1}s after the restart \
         (decision_wait 3s included)",
        restarted.elapsed().as_secs_f64()
    );
    worker.stop();
    gateway.stop().await;
}

/// Recovery time where static membership is not available (MockCluster, like Tansu, has none): a SIGKILLed worker
/// cannot leave its group, so its partitions stay with the dead member until its session expires. With
/// `kafka.consumer.session_timeout: 6s` the restarted worker consumes again, and the traces sent meanwhile are out
/// whole, within the session plus the decision wait; with librdkafka's default session (45 s), which this test
/// would fail, they took 47 s (measured on Tansu, a_worker_killed_mid_window_loses_nothing). On Apache Kafka,
/// `group_instance_id` gives the partitions back at once: `tests/kafka/membership.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_consumes_again_within_its_session_timeout() {
    let mock = harness::mock_cluster();
    let mut kafka = harness::mock_kafka(&mock, PARTITIONS);
    kafka.consumer.session_timeout = Some(tailgate_config::Duration::from_secs(6));
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    let dir = harness::temp_dir("session");
    let telemetry: std::net::SocketAddr = format!("127.0.0.1:{}", harness::free_port()).parse().unwrap();
    let sampler =
        format!("sampler: {{ decision_wait: 1s }}\ntelemetry: {{ metrics: {{ endpoint: '{telemetry}' }} }}\n");
    let config = format!("{}{sampler}", harness::kafka::kafka_yaml(&kafka));
    let mut worker = Process::new(&dir, "sampler", "sampler", &config, Ready::Health(telemetry));

    worker.start().await;
    send(&mut client, 0..50, 0..SPANS).await;
    nothing_lost(&kafka, 50).await; // the worker owns every partition and has decided
    worker.kill();

    let restarted = Instant::now();
    worker.start().await;
    send(&mut client, 50..100, 0..SPANS).await;
    nothing_lost(&kafka, 100).await;
    let resumed = restarted.elapsed();
    eprintln!(
        "SIGKILL and restart with a 6 s session (MockCluster): the traces sent after the restart were out whole \
         {:.1}s later (decision_wait 1s included)",
        resumed.as_secs_f64()
    );
    assert!(
        resumed < Duration::from_secs(30),
        "the restarted worker took {resumed:?}: kafka.consumer.session_timeout did not reach the consumer"
    );
    worker.stop();
    gateway.stop().await;
}

/// A flood: one trace ID carrying 1,000,000 spans amid ordinary traffic, with a 1 MiB buffer bound. Memory stays
/// under the bound, the huge trace is cut off by the per-trace limit again and again, and every ordinary failing trace
/// is still kept whole and decided on time, also through a burst of ten times the usual rate of new traces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_trace_stays_within_the_memory_bound() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let config = SamplerConfig {
        max_buffered_bytes: tailgate_config::ByteSize::mib(1),
        max_trace_bytes: tailgate_config::ByteSize::mib(1),
        // High enough that the byte bounds, not the span count, stop the flood.
        max_spans_per_trace: 1_000_000,
        policies: tailgate_config::from_yaml(
            "[{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]",
        )
        .unwrap(),
        ..config()
    };
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let stats = sampler.stats.clone();

    let started = Instant::now();
    let mut next = 0u32;
    for round in 0..20u32 {
        // 50,000 spans of the flooding trace (fast, successful: dropped) ...
        let flood = (0..50_000u64)
            .map(|i| Span {
                trace_id: vec![0xab; 16],
                span_id: (u64::from(round) * 50_000 + i + 1).to_be_bytes().to_vec(),
                name: "poll".into(),
                parent_span_id: vec![1; 8],
                ..Default::default()
            })
            .collect();
        client.export(harness::trace_request(flood)).await.unwrap();
        // ... and 15 ordinary failing traces, whole — 150 in round 10, ten times the usual rate of new traces.
        let new = if round == 10 { 150 } else { 15 };
        send(&mut client, next..next + new, 0..SPANS).await;
        next += new;
    }
    assert_eq!(next, 435);

    let duplicates = nothing_lost(&kafka, next).await;
    let elapsed = started.elapsed();
    let peak = stats.max_buffered_bytes.load(Ordering::SeqCst);
    eprintln!("flood: peak buffered = {peak} bytes (bound 1 MiB), all {next} ordinary traces kept in {elapsed:?}, duplicates = {duplicates}");
    assert!(peak <= 1 << 20, "buffer peaked at {peak} bytes, over its 1 MiB bound");
    assert!(elapsed < Duration::from_secs(45), "ordinary traces were decided on time");

    sampler.stop().await;
    gateway.stop().await;
}

/// When Kafka stops acknowledging the sampler's output (MockCluster answering every Produce with an error), the
/// worker pauses fetching instead of holding ever more output in memory; when Kafka recovers, it resumes and
/// nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_output_pauses_fetching_and_loses_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = harness::mock_cluster();
    let mut kafka = harness::mock_kafka(&mock, PARTITIONS);
    kafka.producer.delivery_timeout = tailgate_config::Duration::from_secs(1);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    send(&mut client, 0..400, 0..SPANS).await;

    // From now on Kafka refuses every write: the sampler's output cannot be acknowledged.
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 20_000]);
    let mut config = config();
    config.max_output_bytes_in_flight = tailgate_config::ByteSize::b(4 * 1024);
    config.red_metrics.enabled = false;
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let stats = sampler.stats.clone();
    let paused = harness::eventually(Duration::from_secs(30), || stats.pauses.load(Ordering::SeqCst) > 0).await;
    assert!(paused, "fetching pauses while output is not acknowledged");
    let held = stats.output_bytes_in_flight.load(Ordering::SeqCst);
    // The bound stops fetching; what was already decided when it tripped may still be on its way.
    assert!(held <= 4 * 1024 + config.max_buffered_bytes.get(), "{held} bytes of output held");

    mock.clear_request_errors(RDKafkaApiKey::Produce);
    let duplicates = nothing_lost(&kafka, 400).await;
    eprintln!("output outage: paused with {held} bytes in flight (bound 4096, plus the decisions already made when it tripped); duplicates = {duplicates}, lost = 0");
    sampler.stop().await;
    gateway.stop().await;
}
