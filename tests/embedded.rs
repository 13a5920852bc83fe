//! The embedded default — `tailgate all-in-one` with its Tansu broker — as a small team runs it for months: its
//! disk bounded by `embedded_broker.retention`, and a crashed process sampling again within seconds of its restart.

use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::harness;
use crate::harness::binary::AllInOne;
use crate::harness::processes::{Process, Ready};

/// Bytes under `dir`.
fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// Low and high watermark of each partition of `topic`.
fn watermarks(brokers: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    (0..partitions).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap()).collect()
}

fn span(trace: u64, child: bool, error: bool) -> Span {
    Span {
        trace_id: harness::otlp::trace_id(trace),
        span_id: [trace.to_be_bytes()[7], u8::from(child), 1, 2, 3, 4, 5, 6].to_vec(),
        parent_span_id: if child { [trace.to_be_bytes()[7], 0, 1, 2, 3, 4, 5, 6].to_vec() } else { Vec::new() },
        name: if child { "charge".into() } else { "checkout".into() },
        status: Some(Status {
            code: if error { status::StatusCode::Error } else { status::StatusCode::Ok } as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// Steady load for `seconds`: one 50-span trace per request, about 25 requests a second. Returns the data
/// directory's size every 25 requests (with when) and when each trace was acknowledged.
async fn steady_load(aio: &AllInOne, seconds: u64) -> (Vec<(Duration, u64)>, Vec<(Instant, u64)>) {
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", aio.grpc)).await.unwrap();
    let data = aio.dir.join("data");
    let mut sizes = Vec::new();
    let mut acknowledged: Vec<(Instant, u64)> = Vec::new();
    let started = Instant::now();
    let mut trace = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        // One trace per request, 50 spans: the decisions topic (kept for its own 20-minute look-back, whatever
        // the broker's retention) grows by one small record per request, not fifty.
        let spans: Vec<Span> =
            (0..50u8).map(|i| Span { span_id: vec![i + 1; 8], ..span(trace, i > 0, false) }).collect();
        client.export(harness::trace_request(spans)).await.expect("acknowledged");
        acknowledged.push((Instant::now(), trace));
        trace += 1;
        if trace % 25 == 0 {
            sizes.push((started.elapsed(), size(&data)));
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    (sizes, acknowledged)
}

/// Nothing acknowledged in the last `window` (younger than the retention in force) is missing from the spans topic.
fn recent_spans_are_all_present(brokers: &str, acknowledged: &[(Instant, u64)], window: Duration) {
    let recent: std::collections::HashSet<Vec<u8>> =
        acknowledged.iter().filter(|(at, _)| at.elapsed() < window).map(|(_, t)| harness::otlp::trace_id(*t)).collect();
    let records = tokio::task::block_in_place(|| {
        harness::read_topic(brokers, "otlp_spans", 2, Duration::from_secs(20), |r| {
            harness::topic::trace_ids(r).is_superset(&recent)
        })
    });
    let present = harness::topic::trace_ids(&records);
    let lost = recent.iter().filter(|id| !present.contains(*id)).count();
    assert_eq!(lost, 0, "acknowledged spans younger than the retention lost: {lost} of {}", recent.len());
}

/// The size at the first measure at or after `seconds`.
fn size_at(sizes: &[(Duration, u64)], seconds: u64) -> u64 {
    sizes.iter().find(|(t, _)| *t >= Duration::from_secs(seconds)).map(|(_, s)| *s).unwrap()
}

/// With `embedded_broker.retention: 10s` under steady load, the oldest offsets move and the data directory stops
/// growing; everything acknowledged within the retention is still there. Before, Tansu deleted nothing: topics
/// were created without `cleanup.policy`/`retention.ms` and its maintenance ran every 10 minutes, so the low
/// watermark stayed 0 and the file grew with every span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_keeps_its_retention_and_its_disk_stops_growing() {
    let dir = harness::temp_dir("aio-retention");
    let mut aio = AllInOne::start_with(dir.clone(), AllInOne::ports(), "retention: 10s, ", "").await;
    let brokers = aio.brokers();
    let (sizes, acknowledged) = steady_load(&aio, 50).await;
    let marks = tokio::task::block_in_place(|| watermarks(&brokers, "otlp_spans", 2));
    eprintln!("retention 10s, 50 s of load ({} requests): watermarks {marks:?}, sizes {sizes:?}", acknowledged.len());
    assert!(marks.iter().all(|(low, _)| *low > 0), "the oldest offsets never moved: {marks:?}");
    recent_spans_are_all_present(&brokers, &acknowledged, Duration::from_secs(5));

    // The disk: after the first deletions (from about the 11th second) the database reuses the pages they freed.
    // Without them it grew by the same amount in every interval.
    let (early, middle, end) = (size_at(&sizes, 5), size_at(&sizes, 25), sizes.last().unwrap().1);
    assert!(
        end.saturating_sub(middle) < middle.saturating_sub(early) / 4,
        "the data directory kept growing: {early} B at 5 s, {middle} B at 25 s, {end} B at 50 s"
    );
    aio.child.kill().unwrap();
    aio.child.wait().unwrap();
}

/// The retentions the size bound set, from the WARN lines that announce them (`records are kept for 5.105s`).
fn retentions_set(log: &str) -> Vec<Duration> {
    log.lines()
        .filter_map(|line| line.split("records are kept for ").nth(1))
        .filter_map(|rest| rest.split('s').next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect()
}

/// With `embedded_broker.retention_bytes: 2MiB` and a retention (60 s) longer than the test's 50 s, the size bound
/// alone deletes: it shortens the topics' retention (announced in a WARN), the oldest offsets move, the directory
/// stops growing, and nothing younger than the retention in force is lost. Before the bound existed, nothing was
/// deleted before the retention and the directory grew with every span (about 25 MB in 50 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_size_bound_the_embedded_broker_deletes_the_oldest_records() {
    let dir = harness::temp_dir("aio-retention-bytes");
    let mut aio =
        AllInOne::start_with(dir.clone(), AllInOne::ports(), "retention: 60s, retention_bytes: 2MiB, ", "").await;
    let brokers = aio.brokers();
    let (sizes, acknowledged) = steady_load(&aio, 50).await;
    let marks = tokio::task::block_in_place(|| watermarks(&brokers, "otlp_spans", 2));
    let retentions = retentions_set(&aio.log());
    eprintln!(
        "retention_bytes 2MiB, 50 s of load ({} requests): retentions set {retentions:?}, watermarks {marks:?}, \
         sizes {sizes:?}",
        acknowledged.len()
    );
    let in_force = *retentions.last().expect("the size bound never shortened the retention");
    assert!(in_force < Duration::from_secs(60), "{retentions:?}");
    assert!(marks.iter().all(|(low, _)| *low > 0), "nothing was deleted under the size bound: {marks:?}");
    recent_spans_are_all_present(&brokers, &acknowledged, in_force.min(Duration::from_secs(5)));
    let (middle, end) = (size_at(&sizes, 30), sizes.last().unwrap().1);
    assert!(
        end.saturating_sub(middle) < 4 << 20,
        "the data directory kept growing: {middle} B at 30 s, {end} B at 50 s"
    );
    aio.child.kill().unwrap();
    aio.child.wait().unwrap();
}

/// `all-in-one` SIGKILLed and restarted on its data: traces whose roots were read before the crash and whose error
/// children arrive after the restart are kept whole within seconds. Before, the dead process's group members held
/// their partitions for Kafka's 45 s session timeout, and nothing was sampled meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_all_in_one_samples_again_within_seconds_of_its_restart() {
    const TRACES: u64 = 40;
    let dir = harness::temp_dir("aio-restart");
    let ports = AllInOne::ports();
    let policies = "sampler:\n  decision_wait: 2s\n  policies: [{ name: errors, type: status_code, status_code: { \
                    status_codes: [ERROR] } }]\n";
    let mut aio = AllInOne::start_with(dir.clone(), ports, "", policies).await;
    let brokers = format!("127.0.0.1:{}", aio.kafka);
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", aio.grpc)).await.unwrap();
    client.export(harness::trace_request((0..TRACES).map(|t| span(t, false, false)).collect())).await.unwrap();
    aio.child.kill().unwrap();
    aio.child.wait().unwrap();

    let mut aio = AllInOne::start_with(dir.clone(), ports, "", policies).await;
    let restarted = Instant::now();
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", aio.grpc)).await.unwrap();
    client.export(harness::trace_request((0..TRACES).map(|t| span(t, true, true)).collect())).await.unwrap();
    let whole = |records: &[harness::Record]| {
        let spans = harness::topic::spans_by_trace(records);
        (0..TRACES).filter(|t| spans.get(&harness::otlp::trace_id(*t)).is_some_and(|s| s.len() == 2)).count()
    };
    let records = tokio::task::block_in_place(|| {
        harness::read_topic(&brokers, "sampled_spans", 2, Duration::from_secs(60), |r| whole(r) == TRACES as usize)
    });
    let took = restarted.elapsed();
    eprintln!("all-in-one restarted: {} of {TRACES} error traces kept whole after {took:.1?}", whole(&records));
    assert_eq!(whole(&records), TRACES as usize, "error traces kept whole after the restart");
    assert!(took < Duration::from_secs(12), "sampling again took {took:?} (decision_wait 2 s of it)");
    aio.child.kill().unwrap();
    aio.child.wait().unwrap();
}

/// `tailgate broker` with two roles starting together: both create the pipeline's topics, and the second creation
/// of each is refused as `TopicAlreadyExists` — which Tansu logs as an ERROR. An operator reads ERROR as broken;
/// the broker's log must not say it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_twice_is_no_error_in_the_brokers_log() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let dir = harness::temp_dir("broker-noise");
    let port = harness::free_port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = format!("embedded_broker: {{ listen: {listen}, data_dir: '{}' }}\n", dir.join("data").display());
    let mut broker = Process::new(&dir, "broker", "broker", &config, Ready::Listening(listen));
    broker.start().await;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", listen.to_string()).create().unwrap();
    let topic = NewTopic::new("created_twice", 2, TopicReplication::Fixed(1));
    let first = admin.create_topics([&topic], &AdminOptions::new()).await.unwrap();
    assert!(first[0].is_ok(), "{first:?}");
    let second = admin.create_topics([&topic], &AdminOptions::new()).await.unwrap();
    assert_eq!(
        second[0],
        Err(("created_twice".to_owned(), RDKafkaErrorCode::TopicAlreadyExists)),
        "refused as existing"
    );
    broker.stop();
    let log = std::fs::read_to_string(broker.log()).unwrap();
    assert!(!log.contains("ERROR"), "the broker logged an ERROR: {log}");
}
