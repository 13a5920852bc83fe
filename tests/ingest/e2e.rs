//! End to end through Apache Kafka, with clients we didn't write.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality};
use prost::Message;
use tailgate_proto::{headers, partition_for_key};

use crate::harness::{self, http, topic, Record};

const PARTITIONS: u32 = 6;

/// Every (trace ID, span ID) in `records`, hex, with the partition of the record it was in.
fn spans_in(records: &[Record]) -> Vec<(String, String, i32)> {
    topic::spans(records).into_iter().map(|(p, s)| (hex::encode(&s.trace_id), hex::encode(&s.span_id), p)).collect()
}

fn assert_each_span_once_on_its_partition(expected: &[(String, String)], records: &[Record]) {
    let found = spans_in(records);
    let mut count: HashMap<(&str, &str), usize> = HashMap::new();
    for (trace, span, partition) in &found {
        let trace_bytes = hex::decode(trace).unwrap();
        assert_eq!(
            partition_for_key(&trace_bytes, PARTITIONS) as i32,
            *partition,
            "span {span} of trace {trace} is on the wrong partition"
        );
        *count.entry((trace, span)).or_default() += 1;
    }
    for (trace, span) in expected {
        assert_eq!(count.get(&(trace.as_str(), span.as_str())), Some(&1), "span {span} of trace {trace}");
    }
    assert_eq!(found.len(), expected.len(), "no span that the SDK did not send");
}

async fn python_sdk_round_trip(protocol: &str) {
    let gateway =
        harness::start_gateway(harness::ingest_config(), harness::kafka_config(&harness::apache_kafka(), PARTITIONS))
            .await;
    let endpoint = match protocol {
        "grpc" => format!("http://{}", gateway.grpc),
        _ => format!("http://{}", gateway.http),
    };
    let protocol = protocol.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        harness::python().args([&harness::python_script("send_otlp.py"), &protocol, &endpoint, "20", "5"]).output()
    })
    .await
    .unwrap()
    .expect("python runs; tests/run.sh installs the OpenTelemetry SDK");
    assert!(output.status.success(), "SDK export failed: {}", String::from_utf8_lossy(&output.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected: Vec<(String, String)> = sent["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_str().unwrap().to_owned(), pair[1].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(expected.len(), 100);

    let kafka = &gateway.kafka;
    let spans = harness::read_topic(&kafka.brokers, &kafka.topics.spans, PARTITIONS, Duration::from_secs(20), |r| {
        spans_in(r).len() >= expected.len()
    });
    assert_each_span_once_on_its_partition(&expected, &spans);

    // Logs carry their trace: each lands on its trace's partition.
    let logs = harness::read_topic(&kafka.brokers, &kafka.topics.logs, PARTITIONS, Duration::from_secs(20), |r| {
        topic::count_logs(r) >= 20
    });
    let logs = topic::logs(&logs);
    for (partition, log) in &logs {
        assert_eq!(log.trace_id.len(), 16, "the SDK correlates logs with the active span");
        assert_eq!(partition_for_key(&log.trace_id, PARTITIONS) as i32, *partition);
    }
    assert_eq!(logs.len(), 20);

    // Metrics: send_otlp.py's one counter, `checkout.completed`, added 1 per trace with outcome "error" on the even
    // traces and "ok" on the odd ones: 10 of each, cumulative (the SDK's default). The SDK exports it twice, at
    // `force_flush` and in the periodic reader's last collection at shutdown, each export one request of the one
    // metric, so one record (one partition) each, both holding the same two points.
    let metrics =
        harness::read_topic(&kafka.brokers, &kafka.topics.metrics, PARTITIONS, Duration::from_secs(20), |r| {
            r.len() >= 2
        });
    let names = topic::metric_names(&metrics);
    assert_eq!(names, BTreeSet::from(["checkout.completed".to_owned()]), "metrics: {names:?}");
    assert_eq!(metrics.len(), 2, "one record per SDK export: force_flush, then shutdown");
    for record in &metrics {
        assert_eq!(
            checkout_points(record),
            [("error".to_owned(), 10), ("ok".to_owned(), 10)],
            "each export holds both outcomes' cumulative counts"
        );
    }
    gateway.stop().await;
}

/// The (outcome, value) of every data point in a record of send_otlp.py's metrics, sorted. Each metric must be what
/// the SDK makes of a counter: a monotonic cumulative sum of integers.
fn checkout_points(record: &Record) -> Vec<(String, i64)> {
    let request = ExportMetricsServiceRequest::decode(record.value.as_slice()).expect("OTLP metrics");
    let mut points = Vec::new();
    for each in request.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics) {
        let Some(metric::Data::Sum(sum)) = &each.data else { panic!("a counter is a sum: {each:?}") };
        assert!(sum.is_monotonic, "a counter is monotonic: {each:?}");
        assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32, "{each:?}");
        for point in &sum.data_points {
            let outcome = point.attributes.iter().find(|kv| kv.key == "outcome").and_then(|kv| kv.value.as_ref());
            let Some(Value::StringValue(outcome)) = outcome.and_then(|v| v.value.as_ref()) else {
                panic!("every point has its outcome: {point:?}")
            };
            let Some(number_data_point::Value::AsInt(value)) = &point.value else {
                panic!("a counter of integers: {point:?}")
            };
            points.push((outcome.clone(), *value));
        }
    }
    points.sort();
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc_every_span_once_on_its_partition() {
    python_sdk_round_trip("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_http_every_span_once_on_its_partition() {
    python_sdk_round_trip("http").await;
}

/// Bytes encoded by Python's `opentelemetry-proto` go in; what we write to Kafka comes out readable by it, with the
/// resource enrichment applied and the contract's headers set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_the_collectors_otlp_proto_encoding() {
    let mut ingest = harness::ingest_config();
    ingest.resource =
        vec![serde_yaml::from_str("{ key: deployment.environment, value: production, action: upsert }").unwrap()];
    let gateway = harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), PARTITIONS)).await;

    let encoded = harness::python().args([&harness::python_script("otlp_proto.py"), "encode", "50"]).output().unwrap();
    assert!(encoded.status.success(), "{}", String::from_utf8_lossy(&encoded.stderr));
    let body = hex::decode(String::from_utf8(encoded.stdout).unwrap().trim()).unwrap();
    let response = http::post(gateway.http, "/v1/traces", "application/x-protobuf", &body).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(ExportTraceServiceResponse::decode(response.body.as_slice()).unwrap().partial_success, None);

    let kafka = &gateway.kafka;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, PARTITIONS, Duration::from_secs(20), |r| {
        spans_in(r).len() >= 50
    });
    for record in &records {
        assert_eq!(record.header(headers::ENCODING).as_deref(), Some("otlp_proto"));
        assert_eq!(record.header(headers::CONTRACT_VERSION).as_deref(), Some("1"));
        assert!(record.header(headers::RECEIVED_AT).unwrap().parse::<u128>().unwrap() > 1_600_000_000_000_000_000);
        assert_eq!(
            partition_for_key(&record.key, PARTITIONS) as i32,
            record.partition,
            "the key hashes to the partition"
        );
        let request = ExportTraceServiceRequest::decode(record.value.as_slice()).unwrap();
        let attributes = &request.resource_spans[0].resource.as_ref().unwrap().attributes;
        let environment = attributes.iter().find(|kv| kv.key == "deployment.environment").unwrap();
        assert_eq!(environment.value.as_ref().unwrap().value, Some(Value::StringValue("production".into())));
    }

    let decoded = otlp_proto(&["decode"], records.iter().map(|r| &r.value));
    let mut spans: Vec<(String, String, String)> = serde_json::from_slice(&decoded).unwrap();
    spans.sort();
    let mut expected: Vec<_> = (0..50u128)
        .map(|i| (hex::encode((i + 1).to_be_bytes()), hex::encode(((i + 1) as u64).to_be_bytes()), format!("py-{i}")))
        .collect();
    expected.sort();
    assert_eq!(spans, expected);
    gateway.stop().await;
}

/// Runs `otlp_proto.py` with `args`, each of `inputs` a line of hex on its standard input; its standard output.
fn otlp_proto<'a>(args: &[&str], inputs: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<u8> {
    let mut child = harness::python()
        .arg(harness::python_script("otlp_proto.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for input in inputs {
            writeln!(stdin, "{}", hex::encode(input)).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "otlp_proto.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The differential check of the gateway's wire path against a protobuf implementation we did not write: a request
/// with every kind of span field, encoded by Python's `opentelemetry-proto`, goes in over OTLP/HTTP and over gRPC;
/// the Kafka records, decoded by that package, hold exactly the spans sent, each once, each under its own resource
/// and scope, field for field (compared as that package serializes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_decode_in_python_to_exactly_the_spans_sent() {
    let gateway =
        harness::start_gateway(harness::ingest_config(), harness::kafka_config(&harness::apache_kafka(), PARTITIONS))
            .await;
    let encoded = harness::python().args([&harness::python_script("otlp_proto.py"), "rich", "600"]).output().unwrap();
    assert!(encoded.status.success(), "{}", String::from_utf8_lossy(&encoded.stderr));
    let body = hex::decode(String::from_utf8(encoded.stdout).unwrap().trim()).unwrap();
    let sent: Vec<[String; 3]> = serde_json::from_slice(&otlp_proto(&["spans"], [&body])).unwrap();
    assert_eq!(sent.len(), 600);

    let response = http::post(gateway.http, "/v1/traces", "application/x-protobuf", &body).await;
    assert_eq!(response.status, 200);
    assert_eq!(ExportTraceServiceResponse::decode(response.body.as_slice()).unwrap().partial_success, None);
    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
    let mut client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            gateway.grpc_url(),
        )
        .await
        .unwrap();
    assert_eq!(client.export(request).await.unwrap().into_inner().partial_success, None);

    let kafka = &gateway.kafka;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, PARTITIONS, Duration::from_secs(30), |r| {
        spans_in(r).len() >= 2 * sent.len()
    });
    let got: Vec<[String; 3]> =
        serde_json::from_slice(&otlp_proto(&["spans"], records.iter().map(|r| &r.value))).unwrap();
    let mut expected: Vec<[String; 3]> = sent.iter().flat_map(|s| [s.clone(), s.clone()]).collect();
    expected.sort();
    assert_eq!(got.len(), expected.len(), "every span of both requests, once each");
    assert_eq!(got, expected);
    gateway.stop().await;
}

/// A request far larger than `message.max.bytes` is split into records that each fit, on the right partitions,
/// losing nothing; a single span too large for any record is rejected through partial success before the ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_are_split_to_fit_kafka_records() {
    let mut kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    kafka.producer.max_message_bytes = tailgate_config::ByteSize::b(64 * 1024);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka).await;

    // ~1.2 MB: one trace of 300 spans (so one partition must hold many records) and 300 single-span traces.
    let span = |trace: u128, id: u64, pad: usize| opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        name: "x".repeat(pad),
        ..Default::default()
    };
    let mut spans: Vec<_> = (1..=300).map(|i| span(u128::MAX / 3, i, 2000)).collect();
    spans.extend((1..=300).map(|i| span(i as u128, 1000 + i as u64, 2000)));
    spans.push(span(7, 99_999, 100 * 1024));
    let request = harness::trace_request(spans);
    let response = http::post(gateway.http, "/v1/traces", "application/x-protobuf", &request.encode_to_vec()).await;
    assert_eq!(response.status, 200);
    let partial = ExportTraceServiceResponse::decode(response.body.as_slice()).unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("larger than the Kafka record limit"), "{}", partial.error_message);

    let kafka = &gateway.kafka;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, PARTITIONS, Duration::from_secs(30), |r| {
        spans_in(r).len() >= 600
    });
    assert!(records.iter().all(|r| r.value.len() <= 64 * 1024), "every record fits");
    // As few records as fit, bounded from the spans' sizes alone: on each partition at least its spans' bytes over
    // 64 KiB, and at most over 60 KiB, since every record but a partition's last was closed only because the next
    // span (2 KiB) did not fit beside the sampler's 1 KiB room, the headers and the framing. The exact split depends
    // on those allowances; 21 to 22 here (342 spans on the big trace's partition, 45 to 58 on each other).
    let mut bytes_per_partition = [0usize; PARTITIONS as usize];
    for s in &request.resource_spans[0].scope_spans[0].spans[..600] {
        bytes_per_partition[partition_for_key(&s.trace_id, PARTITIONS) as usize] += s.encoded_len();
    }
    let records_of = |size: usize| bytes_per_partition.iter().map(|bytes| bytes.div_ceil(size)).sum::<usize>();
    let (fewest, most) = (records_of(64 * 1024), records_of(60 * 1024));
    assert_eq!((fewest, most), (21, 22), "bytes per partition: {bytes_per_partition:?}");
    assert!((fewest..=most).contains(&records.len()), "{} records, not {fewest} to {most}", records.len());
    let expected: Vec<(String, String)> = request.resource_spans[0].scope_spans[0].spans[..600]
        .iter()
        .map(|s| (hex::encode(&s.trace_id), hex::encode(&s.span_id)))
        .collect();
    assert_each_span_once_on_its_partition(&expected, &records);
    gateway.stop().await;
}

/// OTLP/JSON with both forms of 64-bit integers and the contract's hex IDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_requests_reach_kafka() {
    let gateway =
        harness::start_gateway(harness::ingest_config(), harness::kafka_config(&harness::apache_kafka(), PARTITIONS))
            .await;
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
        "scopeSpans":[{"spans":[
          {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000500000000,"kind":2},
          {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b","status":{"code":2},"futureField":[1,2]}
        ]}]}]}"#;
    let response = http::post(gateway.http, "/v1/traces", "application/json", body.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json(), serde_json::json!({}));
    let kafka = &gateway.kafka;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, PARTITIONS, Duration::from_secs(20), |r| {
        spans_in(r).len() >= 2
    });
    let expected = [
        ("5b8efff798038103d269b633813fc60c".to_owned(), "eee19b7ec3c1b174".to_owned()),
        ("5b8efff798038103d269b633813fc60c".to_owned(), "eee19b7ec3c1b175".to_owned()),
    ];
    assert_each_span_once_on_its_partition(&expected, &records);
    let span = &ExportTraceServiceRequest::decode(records[0].value.as_slice()).unwrap().resource_spans[0].scope_spans
        [0]
    .spans[0];
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_500_000_000);
    gateway.stop().await;
}
