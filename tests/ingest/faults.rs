//! Kafka faults, on librdkafka's MockCluster: the gateway answers retryable errors and never success while Kafka
//! cannot take the data, stays within its budget, and recovers without a restart.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tailgate_proto::status::Status;
use tonic::Code;

use crate::harness::{self, http, topic};

const PARTITIONS: u32 = 3;

fn spans(first: u64, n: u64, pad: usize) -> ExportTraceServiceRequest {
    let spans = (first..first + n)
        .map(|i| Span {
            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "x".repeat(pad),
            ..Default::default()
        })
        .collect();
    harness::trace_request(spans)
}

fn mock_kafka(
    mock: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> tailgate_kafka::KafkaConfig {
    let mut kafka = harness::mock_kafka(mock, PARTITIONS);
    kafka.producer.delivery_timeout = tailgate_config::Duration::from_millis(1500);
    kafka
}

/// Retries `request` like an SDK would, for up to ten seconds; whether it was finally accepted.
async fn accepted_within_10s(
    client: &mut TraceServiceClient<tonic::transport::Channel>,
    request: ExportTraceServiceRequest,
) -> bool {
    for _ in 0..40 {
        if client.export(request.clone()).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn span_ids(records: &[harness::Record]) -> Vec<Vec<u8>> {
    topic::spans(records).into_iter().map(|(_, s)| s.span_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_retryable_errors_never_success_then_recovery() {
    let mock = harness::mock_cluster();
    let gateway = harness::start_gateway(harness::ingest_config(), mock_kafka(&mock)).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    client.export(spans(0, 10, 10)).await.expect("healthy Kafka acknowledges");

    assert!(gateway.health.ready());
    mock.broker_down(1).unwrap();
    for round in 0..3 {
        let status = client.export(spans(100 + round * 10, 10, 10)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("Kafka"), "{}", status.message());
        let response =
            http::post(gateway.http, "/v1/traces", "application/x-protobuf", &spans(500, 5, 10).encode_to_vec()).await;
        assert_eq!(response.status, 503, "HTTP clients retry 503");
    }

    let health = gateway.health.clone();
    assert!(
        harness::eventually(Duration::from_secs(10), || !health.ready()).await,
        "/ready turns false while Kafka is down"
    );
    assert_eq!(gateway.budget.in_use(), 0, "failed requests return their share of the budget");

    mock.broker_up(1).unwrap();
    assert!(harness::eventually(Duration::from_secs(15), || health.ready()).await, "/ready recovers");
    assert!(accepted_within_10s(&mut client, spans(1000, 10, 10)).await, "the gateway recovers without a restart");

    // Everything acknowledged is in Kafka: the first batch and the batch after recovery.
    let kafka = &gateway.kafka;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, PARTITIONS, Duration::from_secs(20), |r| {
        let ids = span_ids(r);
        (1..=10u64).chain(1001..=1010).all(|i| ids.contains(&i.to_be_bytes().to_vec()))
    });
    let ids = span_ids(&records);
    for i in (1..=10u64).chain(1001..=1010) {
        assert!(ids.contains(&i.to_be_bytes().to_vec()), "acknowledged span {i} is missing");
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_are_never_acknowledged() {
    let mock = harness::mock_cluster();
    let gateway = harness::start_gateway(harness::ingest_config(), mock_kafka(&mock)).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    // Every Produce answered NOT_ENOUGH_REPLICAS (retriable inside librdkafka) until the delivery timeout.
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500]);
    let status = client.export(spans(0, 10, 10)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    mock.clear_request_errors(RDKafkaApiKey::Produce);

    assert!(accepted_within_10s(&mut client, spans(20, 10, 10)).await, "the gateway recovers");
    gateway.stop().await;
}

/// Requests held up by a slow Kafka hold their share of the in-flight budget; past it, new requests are turned
/// away at once with RESOURCE_EXHAUSTED + RetryInfo (gRPC) or 429 + Retry-After (HTTP), and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_throttles_with_a_retry_delay() {
    let mock = harness::mock_cluster();
    // A held request of these spans is p ≈ 12 KB. While admitted it pays at most ~6p (its body at up to twice its
    // size, 3p for splitting it on the wire, a little per item); once split it keeps ~2p, its records, until Kafka
    // answers. A budget of 20p admits three of them one after the other and then has ~14p free: far less than the
    // ≥ 40p a request ten times as large needs (its body, then 3 bytes per byte).
    let payload = spans(0, 10, 1_200).encoded_len() as u64;
    let budget_bytes = 20 * payload;
    let mut ingest = harness::ingest_config();
    ingest.max_in_flight_bytes = tailgate_config::ByteSize::b(budget_bytes);
    let mut kafka = mock_kafka(&mock);
    // Long enough that the first request still waits on Kafka when the last is admitted on a loaded machine.
    kafka.producer.delivery_timeout = tailgate_config::Duration::from_secs(8);
    let gateway = harness::start_gateway(ingest, kafka).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    mock.broker_down(1).unwrap();
    // Fill the budget with requests that wait on Kafka, one after the other: at once, each needing ~12p free, they
    // would throttle each other. Each is waited for until the share is down to its records.
    let mut held = Vec::new();
    let budget = gateway.budget.clone();
    for i in 0..3u64 {
        let mut client = client.clone();
        held.push(tokio::spawn(async move { client.export(spans(i * 100, 10, 1_200)).await }));
        let records = (i + 1) * 2 * payload;
        let settled = harness::eventually(Duration::from_secs(5), || {
            let in_use = budget.in_use();
            in_use >= records && in_use < records + payload
        })
        .await;
        assert!(settled, "request {i} holds its records: {} bytes in use", budget.in_use());
    }
    let held_bytes = gateway.budget.in_use();
    let free = budget_bytes - held_bytes;
    assert!(
        free < 33 * payload,
        "held {held_bytes} of a {budget_bytes}-byte budget by three requests of {payload} bytes"
    );

    let status = client.export(spans(900, 10, 12_000)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = Status::decode(status.details()).unwrap().retry_delay();
    assert_eq!(retry, Some(Duration::from_secs(1)), "RetryInfo makes RESOURCE_EXHAUSTED retryable");
    let response =
        http::post(gateway.http, "/v1/traces", "application/x-protobuf", &spans(950, 10, 12_000).encode_to_vec()).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(held.iter().all(|request| !request.is_finished()), "the held requests were still waiting on Kafka");

    for request in held {
        assert_eq!(request.await.unwrap().unwrap_err().code(), Code::Unavailable, "never success while Kafka is down");
    }
    assert_eq!(gateway.budget.in_use(), 0);
    mock.broker_up(1).unwrap();
    assert!(
        accepted_within_10s(&mut client, spans(2000, 10, 1_200)).await,
        "the budget is returned when requests finish"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_another_partition_count_fails_start_up() {
    let brokers = harness::apache_kafka();
    let kafka = harness::kafka_config(&brokers, 3);
    tailgate_kafka::ensure_topics(&kafka, &[(&kafka.topics.spans, &[])], Duration::from_secs(10)).await.unwrap();
    let mut other = kafka.clone();
    other.partitions = 6;
    let error = tailgate_ingest::Gateway::build(&harness::ingest_config(), &other).await.err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("has 3 partitions but kafka.partitions is 6"), "{message}");
    assert!(message.contains("trace"), "the error explains why: {message}");

    let mut no_create = harness::kafka_config(&brokers, 3);
    no_create.create_topics = false;
    let error = tailgate_ingest::Gateway::build(&harness::ingest_config(), &no_create).await.err().expect("refused");
    assert!(error.to_string().contains("does not exist and kafka.create_topics is false"), "{error}");
}

/// Kafka's producer queue full (`queue.buffering.max.messages`, here one record, while Kafka does not answer): a
/// request whose record finds no room is answered at once, retryably and saying when to come back — gRPC
/// `UNAVAILABLE` with `RetryInfo`, HTTP 503 with `Retry-After` (README, "What clients get") — while the request
/// holding the queue still waits; never success while Kafka is down, nothing refused is written, and the gateway
/// recovers once Kafka answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_is_answered_at_once_with_a_retry_delay() {
    let mock = harness::mock_cluster();
    let mut kafka = mock_kafka(&mock);
    kafka.client.insert("queue.buffering.max.messages".to_owned(), "1".to_owned());
    kafka.producer.delivery_timeout = tailgate_config::Duration::from_secs(5);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    // One span: one record, the most the queue holds.
    client.export(spans(0, 1, 10)).await.expect("a record fits a queue Kafka empties");

    mock.broker_down(1).unwrap();
    // Two requests at once: whichever record reaches the queue second finds it full.
    let export = |first: u64| {
        let mut client = client.clone();
        tokio::spawn(async move { (first, client.export(spans(first, 1, 10)).await) })
    };
    let (answered, holder) = match futures::future::select(export(10), export(20)).await {
        futures::future::Either::Left((answered, holder)) | futures::future::Either::Right((answered, holder)) => {
            (answered.unwrap(), holder)
        }
    };
    let (busy, status) = answered;
    let status = status.expect_err("a request was acknowledged while Kafka was down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not keeping up"), "{}", status.message());
    let retry = Status::decode(status.details()).unwrap().retry_delay();
    assert_eq!(retry, Some(Duration::from_secs(1)), "RetryInfo says when to come back");
    let response =
        http::post(gateway.http, "/v1/traces", "application/x-protobuf", &spans(30, 1, 10).encode_to_vec()).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    // The state both answers are about: the other request's record still fills the queue, waiting on Kafka.
    assert!(!holder.is_finished(), "the request holding the queue was answered before the full queue was");

    let (held, answer) = holder.await.unwrap();
    let status = answer.expect_err("a request was acknowledged while Kafka was down");
    assert_eq!(status.code(), Code::Unavailable, "after the delivery timeout: {status:?}");
    assert_eq!(gateway.budget.in_use(), 0, "failed requests return their share of the budget");
    mock.broker_up(1).unwrap();
    assert!(accepted_within_10s(&mut client, spans(40, 1, 10)).await, "the gateway recovers without a restart");

    let kafka = &gateway.kafka;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, PARTITIONS, Duration::from_secs(20), |r| {
        span_ids(r).contains(&41u64.to_be_bytes().to_vec())
    });
    let mut ids: Vec<u64> =
        span_ids(&records).iter().map(|id| u64::from_be_bytes(id[..].try_into().unwrap())).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids,
        [1, 41],
        "only acknowledged requests are in Kafka: not the one refused for a full queue (span {}), nor over HTTP \
         (31), nor the one that held the queue until its delivery timeout ({})",
        busy + 1,
        held + 1
    );
    gateway.stop().await;
}
