//! Topic settings that only a real broker enforces: a topic-level `max.message.bytes` smaller than the
//! producer's, and `message.timestamp.type=LogAppendTime`, where the broker stamps every record itself.

use std::collections::HashSet;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use super::{expected, send_traces};
use crate::harness::backends::TraceReceiver;
use crate::harness::otlp::{now_ms, now_ns, rfc3339, trace_id};
use crate::harness::{self, binary, topic};

async fn create_topic(brokers: &str, topic: &str, partitions: i32, settings: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in settings {
        new = new.set(key, value);
    }
    for result in admin.create_topics([&new], &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }
}

/// The spans topic accepts record batches of at most 100 KiB; the producer is configured for 1 MB. A 600 KB
/// request must still be acknowledged — split into records the topic takes — and every span be in the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_taking_smaller_records_than_the_producer_still_takes_every_request() {
    const TOPIC_LIMIT: usize = 102_400;
    let brokers = harness::apache_kafka();
    let kafka = harness::kafka_config(&brokers, 2);
    assert_eq!(kafka.producer.max_message_bytes.get(), 1_000_000);
    create_topic(&brokers, &kafka.topics.spans, 2, &[("max.message.bytes", &TOPIC_LIMIT.to_string())]).await;
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    // 300 spans of ~2 KB in 30 traces: ~600 KB in one request. Names that do not compress, so that no codec
    // brings a batch under the topic's limit by luck.
    let now = now_ns();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = move || {
        (0..250)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:08x}", x as u32)
            })
            .collect::<String>()
    };
    let spans: Vec<Span> = (0..300u64)
        .map(|n| Span {
            trace_id: trace_id(n / 10),
            span_id: (n + 1).to_be_bytes().to_vec(),
            name: format!("span-{n}-{}", noise()),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000,
            ..Default::default()
        })
        .collect();
    let answer = client.export(harness::trace_request(spans)).await;
    assert!(answer.is_ok(), "a request the topic can take in smaller records was refused: {answer:?}");

    let records = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        move || {
            harness::read_topic(&kafka.brokers, &kafka.topics.spans, 2, Duration::from_secs(30), |r| {
                topic::count_spans(r) >= 300
            })
        }
    })
    .await
    .unwrap();
    let ids: HashSet<Vec<u8>> = topic::spans(&records).into_iter().map(|(_, s)| s.span_id).collect();
    assert_eq!((topic::count_spans(&records), ids.len()), (300, 300), "every span, once");
    let largest = records.iter().map(|r| r.value.len()).max().unwrap();
    assert!(largest < TOPIC_LIMIT, "a record of {largest} bytes in a topic that takes {TOPIC_LIMIT}");
    gateway.stop().await;
}

/// `tailgate <args…> --config <yaml>`; its exit code and stderr.
async fn run(subcommand: &'static str, config: String, args: Vec<String>) -> (Option<i32>, String) {
    let path = harness::temp_dir(subcommand).join("tailgate.yaml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        binary::tailgate().args([subcommand, "--config"]).arg(&path).args(args).output().unwrap()
    })
    .await
    .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The spans topic stamped by the broker (`LogAppendTime`): `replay --from/--to` (Jaeger reading the spans topic
/// here) and `resample` both select exactly the traces appended within the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_resample_select_by_log_append_time() {
    let brokers = harness::apache_kafka();
    let kafka = harness::kafka_config(&brokers, 2);
    create_topic(&brokers, &kafka.topics.spans, 2, &[("message.timestamp.type", "LogAppendTime")]).await;
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    send_traces(&mut client, 0..10).await; // before the range
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let from = now_ms();
    send_traces(&mut client, 10..30).await;
    let to = now_ms() + 300;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    send_traces(&mut client, 30..40).await; // after it
    let range = vec!["--from".to_owned(), rfc3339(from), "--to".to_owned(), rfc3339(to)];
    let distinct = |jaeger: &TraceReceiver| -> (HashSet<super::SpanKey>, usize) {
        let spans = jaeger.traces.lock().unwrap().spans.clone();
        (spans.iter().cloned().collect(), spans.len())
    };
    let want = expected(10..30);

    let jaeger = TraceReceiver::start().await;
    let mut replayed = kafka.clone();
    replayed.topics.sampled_spans = kafka.topics.spans.clone();
    let config = format!(
        "{}exporters:\n  jaeger: {{ endpoint: '{}' }}\n",
        harness::kafka::kafka_yaml(&replayed),
        jaeger.endpoint()
    );
    let mut args = vec!["--exporter".to_owned(), "jaeger".to_owned()];
    args.extend(range.clone());
    let (code, stderr) = run("replay", config, args).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(distinct(&jaeger), (want.clone(), want.len()), "replay: exactly the range, once: {stderr}");

    let jaeger = TraceReceiver::start().await;
    let config = format!(
        "{}sampler: {{ decision_wait: 1s }}\nexporters:\n  jaeger: {{ endpoint: '{}' }}\n",
        harness::kafka::kafka_yaml(&kafka),
        jaeger.endpoint()
    );
    let (code, stderr) = run("resample", config, range).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(distinct(&jaeger), (want.clone(), want.len()), "resample: exactly the range, once: {stderr}");
    gateway.stop().await;
}

/// A batch of writes whose one record cannot be written (here: to a partition the topic does not have, as a
/// record bound for a partition without a leader would fail) is retried for that record only. Before, every retry
/// rewrote the whole batch: kept spans written again each back-off for as long as the other record failed (5
/// copies of the good record in this test's 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retries_only_the_records_kafka_did_not_acknowledge() {
    use rdkafka::message::OwnedHeaders;
    use tailgate_kafka::{send_all, OutgoingRecord};
    use tokio_util::sync::CancellationToken;

    let brokers = harness::apache_kafka();
    let kafka = harness::kafka_config(&brokers, 1);
    create_topic(&brokers, &kafka.topics.spans, 1, &[]).await;
    let producer = harness::kafka::producer(&brokers);
    let record = |partition: i32, value: &[u8]| OutgoingRecord {
        topic: kafka.topics.spans.clone(),
        partition,
        key: None,
        value: value.to_vec(),
        headers: OwnedHeaders::new(),
    };
    let records = [record(0, b"acknowledged"), record(5, b"never")];
    // The fault lasts 2 s: the writer retries for that long, then is told to stop.
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
    });
    assert!(!send_all(&producer, &records, "test write", &shutdown).await, "the record to partition 5 was written");

    let written = harness::read_topic(&brokers, &kafka.topics.spans, 1, Duration::from_secs(5), |r| !r.is_empty());
    let copies = written.iter().filter(|r| r.value == b"acknowledged").count();
    assert_eq!(copies, 1, "the acknowledged record was written again with the failing one");
}
