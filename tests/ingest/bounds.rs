//! Hostile and unlucky input at the gateway, through Apache Kafka: records that must fit Kafka's limit as a
//! whole (key, value, headers and framing), items that can never fit, and memory under gigantic requests.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::harness::{self, http, Record};

const PARTITIONS: u32 = 4;
/// The producer's `message.max.bytes` in these tests.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

fn string(value: String) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(value)) })
}

/// A resource like a Kubernetes pod's, of about `bytes` encoded bytes: its resource key (which keys every log record
/// without trace context) is about as long.
fn big_resource(service: &str, bytes: usize) -> Resource {
    let mut resource = Resource {
        attributes: vec![KeyValue { key: "service.name".into(), value: string(service.into()) }],
        ..Default::default()
    };
    let mut i = 0;
    while resource.encoded_len() < bytes {
        resource.attributes.push(KeyValue {
            key: format!("k8s.pod.label.app.kubernetes.io/component-{i}"),
            value: string(format!("checkout-frontend-{i:04}-{}", "x".repeat(20))),
        });
        i += 1;
    }
    resource
}

/// A log record without trace context whose body names it.
fn log(name: &str, pad: usize) -> LogRecord {
    LogRecord { body: string(format!("{name}:{}", "x".repeat(pad))), ..Default::default() }
}

fn logs_request(groups: Vec<(Resource, Vec<LogRecord>)>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: groups
            .into_iter()
            .map(|(resource, log_records)| ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Kafka's varint of a length, zigzag-encoded as record headers' lengths are.
fn varint_len(n: usize) -> usize {
    let mut zigzag = (n as u64) << 1;
    let mut bytes = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        bytes += 1;
    }
    bytes
}

/// What the record weighs against `message.max.bytes`: key, value, serialized headers, and the widest framing
/// (librdkafka's per-record maximum of 36 bytes plus a record batch header of 61).
fn whole_size(record: &Record) -> usize {
    let headers: usize =
        record.headers.iter().map(|(k, v)| varint_len(k.len()) + k.len() + varint_len(v.len()) + v.len()).sum();
    record.key.len() + record.value.len() + headers + 36 + 61
}

/// The name of every log record in `records`, with how often it was seen.
fn logs_in(records: &[Record]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for record in records {
        let request = ExportLogsServiceRequest::decode(record.value.as_slice()).expect("records are OTLP protobuf");
        for log in request.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records) {
            let Some(any_value::Value::StringValue(body)) = log.body.as_ref().and_then(|b| b.value.as_ref()) else {
                panic!("every log record has a string body")
            };
            let name = body.split(':').next().unwrap().to_owned();
            *seen.entry(name).or_default() += 1;
        }
    }
    seen
}

async fn gateway() -> harness::RunningGateway {
    let mut kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    kafka.producer.max_message_bytes = tailgate_config::ByteSize::b(MAX_MESSAGE_BYTES as u64);
    harness::start_gateway(harness::ingest_config(), kafka).await
}

/// Log records without trace context are keyed by their resource: with a 4 KB resource the key alone is 4 KB, and a
/// record filled to the limit by its value alone would be refused by Kafka (and the client told to retry for ever).
/// Every record written must fit as a whole, and every log record must arrive once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_a_large_resource_key_fit_kafka_whole() {
    let gateway = gateway().await;
    let resource = big_resource("checkout", 4096);
    let key = tailgate_proto::split::resource_key(Some(&resource));
    assert!(key.len() > 3500, "a large key: {} bytes", key.len());
    let logs: Vec<LogRecord> = (0..300).map(|i| log(&format!("log-{i}"), 900)).collect();
    let request = logs_request(vec![(resource, logs)]);
    assert!(request.encoded_len() > 4 * MAX_MESSAGE_BYTES, "the request needs several records");

    let response = http::post(gateway.http, "/v1/logs", "application/x-protobuf", &request.encode_to_vec()).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(ExportLogsServiceResponse::decode(response.body.as_slice()).unwrap().partial_success, None);

    let kafka = &gateway.kafka;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.logs, PARTITIONS, Duration::from_secs(30), |r| {
        logs_in(r).values().sum::<usize>() >= 300
    });
    let seen = logs_in(&records);
    assert_eq!(seen.len(), 300);
    assert!(seen.values().all(|n| *n == 1), "every log record once: {seen:?}");
    let sizes: Vec<usize> = records.iter().map(whole_size).collect();
    assert!(sizes.iter().all(|s| *s <= MAX_MESSAGE_BYTES), "a record over {MAX_MESSAGE_BYTES}: {sizes:?}");
    assert!(records.iter().all(|r| r.key == key), "the records are keyed by the large resource");
    // The state this test is about: records filled close to the limit, where the key decides whether they fit.
    let largest = sizes.iter().max().copied().unwrap();
    assert!(largest > MAX_MESSAGE_BYTES - 2048, "records filled to near the limit: {sizes:?}");
    gateway.stop().await;
}

/// A log record that cannot fit a record even alone is refused for good, through partial success, over both
/// transports; the other log records of the request are written. The first one fits by its value alone and fails
/// only with its 4 KB key; the second is larger than the limit by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_record_that_can_never_fit_is_refused_for_good() {
    let gateway = gateway().await;
    let big = big_resource("checkout", 4096);
    // Value ~62 KB (under the limit), key ~4 KB: over the limit only as a whole.
    let fits_only_without_its_key = log("huge-0", MAX_MESSAGE_BYTES - 4096 - 4096 + 2048);
    let larger_than_the_limit = log("huge-1", MAX_MESSAGE_BYTES + 10);
    let request = |tag: &str| {
        logs_request(vec![
            (big.clone(), vec![fits_only_without_its_key.clone()]),
            (big_resource("cart", 0), (0..3).map(|i| log(&format!("{tag}-small-{i}"), 10)).collect()),
            (big.clone(), vec![larger_than_the_limit.clone()]),
        ])
    };
    {
        let only = logs_request(vec![(big.clone(), vec![fits_only_without_its_key.clone()])]);
        assert!(only.encoded_len() < MAX_MESSAGE_BYTES - 1024, "the value alone fits, with room for headers");
    }

    let mut client =
        LogsServiceClient::connect(gateway.grpc_url()).await.unwrap().max_encoding_message_size(usize::MAX);
    let response = client.export(request("grpc")).await.expect("OK with partial success, not UNAVAILABLE");
    let partial = response.into_inner().partial_success.expect("partial success");
    assert_eq!(partial.rejected_log_records, 2);
    assert!(partial.error_message.contains("larger than the Kafka record limit"), "{}", partial.error_message);

    let response =
        http::post(gateway.http, "/v1/logs", "application/x-protobuf", &request("http").encode_to_vec()).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let partial = ExportLogsServiceResponse::decode(response.body.as_slice()).unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 2);

    let kafka = &gateway.kafka;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.logs, PARTITIONS, Duration::from_secs(20), |r| {
        logs_in(r).values().sum::<usize>() >= 6
    });
    let mut seen: Vec<(String, usize)> = logs_in(&records).into_iter().collect();
    seen.sort();
    let expected: Vec<(String, usize)> =
        ["grpc", "http"].iter().flat_map(|tag| (0..3).map(move |i| (format!("{tag}-small-{i}"), 1))).collect();
    assert_eq!(seen, expected, "the small log records once each, the huge ones never");
    gateway.stop().await;
}
