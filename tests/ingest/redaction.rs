//! Redaction at the gateway (`ingest.redaction`): card numbers, e-mail addresses and bearer tokens sent in span
//! attributes, span event attributes, log bodies and log attributes, and literals in SQL statements, are masked
//! before anything reaches Kafka — sent over OTLP/gRPC and OTLP/HTTP JSON, read back from the topics, compared
//! field for field with what was sent: only the masked values and the summary attributes differ.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::harness::otlp::{kv, logs_request, trace_id};
use crate::harness::{self, topic};

/// The seed's case: a card number, an e-mail address, a bearer token and SQL with customer data.
const REDACTION: &str = r#"
allow_all_keys: true
blocked_key_patterns: [".*token.*", ".*password.*"]
blocked_values:
  - '\b(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14})\b'
  - '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}'
  - 'Bearer [A-Za-z0-9._~+/=-]+'
summary: debug
db_sanitizer: { sql: { enabled: true } }
"#;

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

fn span(n: u8) -> Span {
    Span {
        trace_id: trace_id(n.into()),
        span_id: vec![n; 8],
        name: "POST /checkout".into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: vec![
            kv("http.route", "/checkout"),
            kv("payment.note", "paid with 4111111111111111, thanks"),
            kv("auth.token", "s3cr3t"),
            kv("db.statement", "SELECT * FROM orders WHERE email = 'ann@example.com' AND total > 120.50"),
            int("cart.items", 3),
        ],
        events: vec![Event {
            name: "retry".into(),
            attributes: vec![kv("message", "notify ann@example.com failed"), kv("attempt", "2")],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What `span(n)` must be in Kafka.
fn redacted_span(n: u8) -> Span {
    let mut span = span(n);
    span.attributes = vec![
        kv("http.route", "/checkout"),
        kv("payment.note", "paid with ****, thanks"),
        kv("auth.token", "****"),
        kv("db.statement", "SELECT * FROM orders WHERE email = ? AND total > ?"),
        int("cart.items", 3),
        kv("redaction.masked.keys", "auth.token,db.statement,payment.note"),
        int("redaction.masked.count", 3),
    ];
    span.events[0].attributes = vec![
        kv("message", "notify **** failed"),
        kv("attempt", "2"),
        kv("redaction.masked.keys", "message"),
        int("redaction.masked.count", 1),
    ];
    span
}

fn log() -> LogRecord {
    LogRecord {
        time_unix_nano: 1,
        severity_number: 17,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("card 5500000000000004 declined for ann@example.com".into())),
        }),
        attributes: vec![
            kv("http.request.header.authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.x.y"),
            kv("order.id", "o-17"),
        ],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_values_are_masked_before_kafka_and_nothing_else_changes() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let mut ingest = harness::ingest_config();
    ingest.redaction = Some(tailgate_config::from_yaml(REDACTION).unwrap());
    let gateway = harness::start_gateway(ingest, kafka.clone()).await;

    // Over gRPC (protobuf), and a second span over OTLP/HTTP JSON.
    let mut traces = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    traces.export(harness::trace_request(vec![span(1)])).await.unwrap();
    let json = serde_json::json!({ "resourceSpans": [{ "scopeSpans": [{ "spans": [{
        "traceId": hex::encode(trace_id(2)), "spanId": "0202020202020202", "name": "POST /checkout",
        "startTimeUnixNano": "1", "endTimeUnixNano": "2",
        "attributes": [
            { "key": "http.route", "value": { "stringValue": "/checkout" } },
            { "key": "payment.note", "value": { "stringValue": "paid with 4111111111111111, thanks" } },
            { "key": "auth.token", "value": { "stringValue": "s3cr3t" } },
            { "key": "db.statement", "value": { "stringValue":
                "SELECT * FROM orders WHERE email = 'ann@example.com' AND total > 120.50" } },
            { "key": "cart.items", "value": { "intValue": "3" } }
        ],
        "events": [{ "name": "retry", "attributes": [
            { "key": "message", "value": { "stringValue": "notify ann@example.com failed" } },
            { "key": "attempt", "value": { "stringValue": "2" } }
        ] }]
    }] }] }] });
    let headers = [("Content-Type", "application/json")];
    let answer =
        harness::http::request(gateway.http, "POST", "/v1/traces", &headers, json.to_string().as_bytes()).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let mut logs = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    logs.export(logs_request("payments", vec![log()])).await.unwrap();

    let spans = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || {
            harness::read_topic(&kafka.brokers, &kafka.topics.spans, 1, Duration::from_secs(20), |r| {
                topic::count_spans(r) >= 2
            })
        })
        .await
        .unwrap()
    };
    let mut spans: Vec<Span> = topic::spans(&spans).into_iter().map(|(_, span)| span).collect();
    spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    assert_eq!(spans, [redacted_span(1), redacted_span(2)]);

    let records = tokio::task::spawn_blocking(move || {
        harness::read_topic(&kafka.brokers, &kafka.topics.logs, 1, Duration::from_secs(20), |r| {
            topic::count_logs(r) >= 1
        })
    })
    .await
    .unwrap();
    let logs: Vec<LogRecord> = topic::logs(&records).into_iter().map(|(_, record)| record).collect();
    let mut expected = log();
    expected.body = Some(AnyValue { value: Some(any_value::Value::StringValue("card **** declined for ****".into())) });
    expected.attributes = vec![
        kv("http.request.header.authorization", "****"),
        kv("order.id", "o-17"),
        kv("redaction.masked.keys", "body,http.request.header.authorization"),
        int("redaction.masked.count", 2),
    ];
    assert_eq!(logs, [expected]);
    gateway.stop().await;
}
