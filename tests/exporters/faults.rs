//! What the exporters promise when backends fail: an outage becomes lag, not loss; other exporters are not slowed;
//! back-off honours the backend; refusals and garbage go to the dead-letter topic; replay restores a lost range, and
//! exits non-zero when the backend refuses what it replays.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tailgate_exporters::jaeger::JaegerConfig;
use tailgate_exporters::loki::LokiConfig;
use tailgate_exporters::ExportersConfig;
use tailgate_proto::headers;

use crate::harness::backends::{Answer, LokiReceiver, TraceReceiver, TraceRequest};
use crate::harness::otlp::{self, logs_request};
use crate::harness::processes::{self, Process, Ready};
use crate::harness::{self, binary, eventually, wait};

fn line(n: u32) -> LogRecord {
    LogRecord {
        time_unix_nano: otlp::now_ns(),
        severity_number: 9,
        body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(any_value::Value::StringValue(format!("line {n}"))),
        }),
        trace_id: (n as u128 + 1).to_be_bytes().to_vec(),
        ..Default::default()
    }
}

fn loki_config(loki: &LokiReceiver) -> LokiConfig {
    LokiConfig { endpoint: loki.endpoint(), retry_on_failure: harness::fast_retry(), ..Default::default() }
}

fn lines(loki: &LokiReceiver) -> BTreeSet<String> {
    loki.entries().into_iter().map(|e| e.1).collect()
}

/// The span IDs Jaeger holds, as numbers, and how many copies of each.
fn span_copies(jaeger: &TraceReceiver) -> BTreeMap<u64, usize> {
    let mut copies = BTreeMap::new();
    for (_, span) in &jaeger.traces.lock().unwrap().spans {
        *copies.entry(u64::from_be_bytes(span.as_slice().try_into().unwrap())).or_insert(0) += 1;
    }
    copies
}

/// A Jaeger outage from the first record becomes lag, not loss, and does not slow Loki: while Jaeger refuses, its
/// group commits nothing (its lag is every record); once Jaeger accepts, every span arrives, once. (A crash with
/// offsets committed and a batch in flight: `an_exporter_killed_mid_batch_resumes_from_its_committed_offset`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jaeger_outage_becomes_lag_not_loss_and_does_not_slow_loki() {
    let mut kafka = harness::kafka_config(&harness::apache_kafka(), 3);
    // The Jaeger exporter reads what the gateway writes, so the test controls exactly what it must deliver.
    kafka.topics.sampled_spans = kafka.topics.spans.clone();
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let jaeger = TraceReceiver::start().await;
    let loki = LokiReceiver::start().await;
    jaeger.answer(Answer::Unavailable);
    let exporters = ExportersConfig {
        jaeger: Some(JaegerConfig {
            endpoint: jaeger.endpoint(),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        loki: Some(loki_config(&loki)),
        ..Default::default()
    };
    let traces_exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::JAEGER).await;
    let logs = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;

    // Load while Jaeger is down: 40 requests of 50 spans, and a log line with each.
    let mut traces = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let mut log_client = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let mut sent = BTreeSet::new();
    for request in 0..40u32 {
        let spans: Vec<Span> = (0..50u32)
            .map(|s| {
                let id = request * 50 + s;
                sent.insert(u64::from(id) + 1);
                Span {
                    trace_id: (id as u128 + 1).to_be_bytes().to_vec(),
                    span_id: (id as u64 + 1).to_be_bytes().to_vec(),
                    name: "checkout".into(),
                    ..Default::default()
                }
            })
            .collect();
        traces.export(harness::trace_request(spans)).await.unwrap();
        log_client.export(logs_request("cart", vec![line(request)])).await.unwrap();
    }

    // Loki gets everything while Jaeger is still refusing.
    assert!(eventually(Duration::from_secs(20), || lines(&loki).len() == 40).await, "Loki is not held up by Jaeger");
    assert_eq!(jaeger.span_count(), 0);
    // Each exporter joins its own group: Jaeger's may still be joining when Loki has everything.
    let down = eventually(Duration::from_secs(20), || traces_exporter.health.down_since().is_some()).await;
    assert!(down, "the outage is visible");
    // Lag, not loss: nothing it could not deliver is committed.
    let group = kafka.consumer.exporter_group(tailgate_exporters::JAEGER);
    let (brokers, topic) = (kafka.brokers.clone(), kafka.topics.spans.clone());
    let records = harness::lag::records(&brokers, &topic, 3).expect("the broker answers");
    assert_eq!(harness::lag::lag(&brokers, &group, &topic, 3), Some(records), "every record of the outage is lag");

    jaeger.answer(Answer::Accept);
    let caught_up = eventually(Duration::from_secs(30), || harness::lag::lag(&brokers, &group, &topic, 3) == Some(0));
    assert!(caught_up.await, "Jaeger's group committed every record");
    let copies = span_copies(&jaeger);
    let present: BTreeSet<u64> = copies.keys().copied().collect();
    assert_eq!(present, sent, "lost = 0, unexpected = 0");
    // Nothing reached Jaeger before the outage ended, and nothing was read twice: each span once.
    let duplicated: usize = copies.values().map(|c| c - 1).sum();
    eprintln!("outage: {} spans acknowledged, {} present, lost 0, duplicated {duplicated}", sent.len(), present.len());
    assert_eq!(duplicated, 0, "duplicated");
    assert!(eventually(Duration::from_secs(5), || traces_exporter.health.down_since().is_none()).await);

    traces_exporter.stop().await;
    logs.stop().await;
    gateway.stop().await;
}

/// Records `records` of the topic's one partition, each a request of five spans (IDs `5r + 1 ..= 5r + 5`), as
/// Kafka acknowledged them: the offset of each, and its span IDs.
async fn produce_spans(producer: &FutureProducer, topic: &str, records: Range<u64>) -> Vec<(i64, Vec<u64>)> {
    let mut acknowledged = Vec::new();
    for r in records {
        let ids: Vec<u64> = (r * 5 + 1..=r * 5 + 5).collect();
        let spans = ids
            .iter()
            .map(|id| Span {
                trace_id: u128::from(*id).to_be_bytes().to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                name: "checkout".into(),
                ..Default::default()
            })
            .collect();
        let value = prost::Message::encode_to_vec(&harness::trace_request(spans));
        let record = FutureRecord::<(), _>::to(topic).partition(0).payload(&value);
        let delivery = producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("acknowledged");
        acknowledged.push((delivery.offset, ids));
    }
    acknowledged
}

/// The offset `group` has committed on `topic`'s one partition (its high watermark less its lag; nothing of the
/// topic was deleted), `None` while the broker does not answer.
fn committed_offset(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    Some(harness::lag::records(brokers, topic, 1)? - harness::lag::lag(brokers, group, topic, 1)?)
}

/// The sum of every series of `family` served at `telemetry`.
async fn served(telemetry: std::net::SocketAddr, family: &str) -> f64 {
    harness::http::total(&harness::http::metrics(telemetry).await, family, &[])
}

/// The Jaeger exporter as a process, SIGKILLed with a batch in flight, after Jaeger had accepted the batches before
/// it and the exporter had committed them. Restarted, it resumes from its committed offset: every span Kafka
/// acknowledged reaches Jaeger (lost = 0, unexpected = 0), and only what lay above that offset can arrive twice —
/// once more at most, and only if Jaeger had taken it before the kill: the README's "a crash re-delivers at most the
/// unacknowledged batches".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_killed_mid_batch_resumes_from_its_committed_offset() {
    let mut kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    // The dead member keeps the partition until its session expires: 6 s, not librdkafka's 45 s.
    kafka.consumer.session_timeout = Some(tailgate_config::Duration::from_secs(6));
    let topic = kafka.topics.sampled_spans.clone();
    tailgate_kafka::ensure_topics(&kafka, &[(topic.as_str(), &[])], Duration::from_secs(30)).await.unwrap();
    let jaeger = TraceReceiver::start().await;
    let telemetry = processes::local_addr();
    // Batches of two records; a request Jaeger does not answer times out after 1 s and is sent again.
    let config = format!(
        "{}exporters:\n  jaeger: {{ endpoint: '{}', timeout: 1s, batch: {{ max_items: 10, timeout: 100ms }}, \
         retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms }} }}\n\
         telemetry: {{ metrics: {{ endpoint: '{telemetry}' }} }}\n",
        harness::kafka::kafka_yaml(&kafka),
        jaeger.endpoint()
    );
    let dir = harness::temp_dir("exporter-kill");
    let mut exporter = Process::new(&dir, "exporter", "exporter", &config, Ready::Health(telemetry));
    exporter.start().await;
    let producer = harness::kafka::producer(&kafka.brokers);
    let group = kafka.consumer.exporter_group(tailgate_exporters::JAEGER);
    let committed = || committed_offset(&kafka.brokers, &group, &topic);

    // Jaeger accepts the first 20 records, and the exporter commits them.
    let mut acknowledged = produce_spans(&producer, &topic, 0..20).await;
    let done = eventually(Duration::from_secs(30), || jaeger.span_count() == 100 && committed() == Some(20)).await;
    assert!(
        done,
        "the first 20 records delivered and committed: {} spans, offset {:?}",
        jaeger.span_count(),
        committed()
    );

    // Then Jaeger takes requests and answers none: the next batch is sent, times out, and is sent again.
    jaeger.answer(Answer::Hang);
    acknowledged.extend(produce_spans(&producer, &topic, 20..40).await);
    wait::until("a batch in flight to the hanging Jaeger", Duration::from_secs(30), || async {
        served(telemetry, "tailgate_exporter_retries_total").await >= 1.0
    })
    .await;
    exporter.kill();
    let at_kill = committed().expect("the broker answers");
    assert_eq!(at_kill, 20, "the committed offset passed a record Jaeger had not accepted");
    let before_restart = span_copies(&jaeger);

    jaeger.answer(Answer::Accept);
    exporter.start().await;
    let done = eventually(Duration::from_secs(30), || span_copies(&jaeger).len() == 200 && committed() == Some(40));
    assert!(
        done.await,
        "every record delivered and committed: {} spans, offset {:?}",
        jaeger.span_count(),
        committed()
    );
    exporter.stop();

    // The ledger: what Kafka acknowledged against what Jaeger holds.
    let copies = span_copies(&jaeger);
    let sent: BTreeSet<u64> = acknowledged.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
    let present: BTreeSet<u64> = copies.keys().copied().collect();
    let lost: Vec<u64> = sent.difference(&present).copied().collect();
    let unexpected: Vec<u64> = present.difference(&sent).copied().collect();
    let duplicated: usize = copies.values().map(|c| c - 1).sum();
    // Re-read after the restart: the records at or above the committed offset; a span of them Jaeger had taken
    // before the kill is there twice, any other once.
    let mut beyond = Vec::new();
    let mut expected_duplicates = 0;
    for (offset, ids) in &acknowledged {
        for id in ids {
            let redelivered = *offset >= at_kill && before_restart.contains_key(id);
            expected_duplicates += usize::from(redelivered);
            if copies.get(id).copied().unwrap_or(0) > 1 + usize::from(redelivered) {
                beyond.push((*offset, *id, copies[id]));
            }
        }
    }
    eprintln!(
        "exporter SIGKILLed mid-batch: {} spans acknowledged, {} present, lost {}, duplicated {duplicated} (at most \
         the {} spans above the committed offset {at_kill}), unexpected {}",
        sent.len(),
        present.len(),
        lost.len(),
        acknowledged.iter().filter(|(o, _)| *o >= at_kill).map(|(_, ids)| ids.len()).sum::<usize>(),
        unexpected.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(unexpected.is_empty(), "unexpected: {unexpected:?}");
    assert!(beyond.is_empty(), "copies beyond the re-read records', (offset, span, copies): {beyond:?}");
    assert_eq!(duplicated, expected_duplicates, "duplicates other than the re-read spans Jaeger had taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_5xx_backs_off_growing_and_400_goes_to_the_dead_letter_topic() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let loki = LokiReceiver::start().await;
    // A hint is honoured up to max_interval: 3 s here, above the 2 s hint below.
    let mut config = loki_config(&loki);
    config.retry_on_failure.max_interval = tailgate_config::Duration::from_secs(3);
    let exporters = ExportersConfig { loki: Some(config), ..Default::default() };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    let mut client = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();

    // 429 with Retry-After: 2 → the next attempt waits at least 2 s (the back-off alone would be 0.1 s).
    loki.script([(429, Some(2), "ingestion rate limit exceeded")]);
    client.export(logs_request("cart", vec![line(1)])).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || lines(&loki).contains("line 1")).await);
    let attempts = loki.state.lock().unwrap().attempts.clone();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[1] - attempts[0] >= Duration::from_secs(2),
        "Retry-After honoured: {:?}",
        attempts[1] - attempts[0]
    );

    // Four 503s: waits of 0.1, 0.2, 0.4, 0.8 s, each ±50%.
    loki.state.lock().unwrap().attempts.clear();
    loki.script([(503, None, "down"), (503, None, "down"), (503, None, "down"), (503, None, "down")]);
    client.export(logs_request("cart", vec![line(2)])).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || lines(&loki).contains("line 2")).await);
    let attempts = loki.state.lock().unwrap().attempts.clone();
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), 4, "{gaps:?}");
    for (gap, base) in gaps.iter().zip([100u64, 200, 400, 800]) {
        assert!(*gap >= Duration::from_millis(base / 2), "gap {gap:?} below half of {base} ms: {gaps:?}");
    }
    assert!(gaps[3] > gaps[0], "back-off grows: {gaps:?}");

    // 400 → the request's records go to the dead-letter topic with the reason; the partition moves on.
    loki.script([(400, None, "error parsing labels: unexpected character")]);
    client.export(logs_request("cart", vec![line(3)])).await.unwrap();
    let stats = &exporter.stats;
    assert!(eventually(Duration::from_secs(20), || stats.records_dead_lettered.load(Ordering::SeqCst) == 1).await);
    client.export(logs_request("cart", vec![line(4)])).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || lines(&loki).contains("line 4")).await, "the partition moves on");
    assert!(!lines(&loki).contains("line 3"));
    let dlq = headers::dead_letter_topic(&kafka.topics.logs);
    let records = harness::read_topic(&kafka.brokers, &dlq, 1, Duration::from_secs(10), |r| !r.is_empty());
    assert_eq!(records.len(), 1);
    let error = records[0].header(headers::DLQ_ERROR).unwrap();
    assert!(error.starts_with("bad_request: HTTP 400"), "{error:?}");
    assert_eq!(exporter.stats.records_dead_lettered.load(Ordering::SeqCst), 1);

    exporter.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_otlp_goes_to_the_dead_letter_topic_and_the_rest_is_delivered() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let loki = LokiReceiver::start().await;
    let exporters = ExportersConfig { loki: Some(loki_config(&loki)), ..Default::default() };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    let producer = harness::kafka::producer(&kafka.brokers);
    let good = prost::Message::encode_to_vec(&logs_request("cart", vec![line(7)]));
    for payload in [b"\xff\xff not protobuf".to_vec(), good] {
        producer
            .send(FutureRecord::<(), _>::to(&kafka.topics.logs).partition(0).payload(&payload), Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert!(eventually(Duration::from_secs(20), || lines(&loki).contains("line 7")).await);
    let dlq = headers::dead_letter_topic(&kafka.topics.logs);
    let records = harness::read_topic(&kafka.brokers, &dlq, 1, Duration::from_secs(10), |r| !r.is_empty());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, b"\xff\xff not protobuf");
    assert!(records[0].header(headers::DLQ_ERROR).unwrap().starts_with("undecodable: not OTLP log data"));
    // Where it came from (partition 0, the topic's first record) and who refused it.
    assert_eq!(records[0].header(headers::DLQ_SOURCE).as_deref(), Some("0:0"));
    assert_eq!(records[0].header(headers::DLQ_STAGE).as_deref(), Some("exporter.loki"));
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_restores_a_range_a_backend_lost_with_progress_and_a_summary() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let lost = LokiReceiver::start().await;
    let exporters = ExportersConfig { loki: Some(loki_config(&lost)), ..Default::default() };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    let mut client = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    for n in 0..30 {
        client.export(logs_request(&format!("service-{}", n % 3), vec![line(n)])).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(20), || lines(&lost).len() == 30).await);
    exporter.stop().await;

    // Loki lost its data. A new, empty Loki; it answers 503 for the first ~2 s of the replay, so progress shows.
    let restored = LokiReceiver::start().await;
    restored.script((0..6).map(|_| (503, None, "starting")));
    let exporter = format!(
        "exporters:\n  loki:\n    endpoint: {}\n    retry_on_failure: {{ initial_interval: 300ms, max_interval: 1s }}\n",
        restored.endpoint()
    );
    let path = harness::temp_dir("replay").join("tailgate.yaml");
    std::fs::write(&path, format!("{}{exporter}", harness::kafka::kafka_yaml(&kafka))).unwrap();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        binary::tailgate()
            .args(["replay", "--config"])
            .arg(&path)
            .args(["--exporter", "loki", "--from", "-10m"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(lines(&restored), lines(&lost), "the replay restores every line");
    assert!(stderr.contains("replay loki: "), "a progress line: {stderr}");
    assert!(stderr.contains("backend down, retrying"), "progress says the backend is down: {stderr}");
    assert!(stderr.contains("30 items delivered, 0 rejected"), "a summary: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));

    gateway.stop().await;
}

/// Jaeger (OTLP/gRPC) over TLS with a private CA and a client certificate the receiver requires, authenticated
/// with a bearer token from a file sent as `authorization` metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_over_mtls_with_a_private_ca_and_a_bearer_token() {
    let pki = harness::certs::Pki::new("jaeger-tls");
    let ca = pki.ca("ca");
    let (server, client_cert) = (pki.leaf(&ca, "jaeger"), pki.leaf(&ca, "tailgate"));
    let jaeger = TraceReceiver::start_with(Some((&server, Some(&ca)))).await;
    let token = pki.dir.join("jaeger.token");
    std::fs::write(&token, "jaeger-token\n").unwrap();

    let mut kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    kafka.topics.sampled_spans = kafka.topics.spans.clone();
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let exporters = ExportersConfig {
        jaeger: Some(JaegerConfig {
            endpoint: format!("https://localhost:{}", jaeger.addr.port()),
            tls: tailgate_tls::ClientTlsConfig {
                ca_file: Some(ca.cert.clone()),
                cert_file: Some(client_cert.cert.clone()),
                key_file: Some(client_cert.key.clone()),
                ..Default::default()
            },
            auth: Some(tailgate_exporters::delivery::credentials::BackendAuth {
                bearer_token: Some(tailgate_config::SecretSource { file: Some(token), env: None }),
                basic: None,
            }),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::JAEGER).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let span = Span { trace_id: vec![7; 16], span_id: vec![7; 8], name: "tls".into(), ..Default::default() };
    client.export(harness::trace_request(vec![span])).await.unwrap();
    let delivered = eventually(Duration::from_secs(20), || jaeger.span_count() == 1).await;
    assert!(delivered, "not delivered over TLS: {:?}", exporter.health.last_failure());
    let requests = jaeger.traces.lock().unwrap().requests.clone();
    assert_eq!(
        requests,
        [TraceRequest { tenant: None, authorization: Some("Bearer jaeger-token".to_owned()), spans: 1 }]
    );
    exporter.stop().await;
    gateway.stop().await;
}

/// Two exporter workers in one group, joining and leaving while records flow: every line arrives (rebalances
/// re-deliver at most unacknowledged batches, counted as duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_joining_and_leaving_the_group_lose_nothing() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let loki = LokiReceiver::start().await;
    let exporters = ExportersConfig { loki: Some(loki_config(&loki)), ..Default::default() };
    let client = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let send = |range: std::ops::Range<u32>| {
        let records: Vec<LogRecord> = range.map(line).collect();
        let request = logs_request("cart", records);
        let mut client = client.clone();
        async move { client.export(request).await.unwrap() }
    };

    let first = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    for batch in 0..10 {
        send(batch * 10..batch * 10 + 10).await;
    }
    let second = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    for batch in 10..20 {
        send(batch * 10..batch * 10 + 10).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.stop().await;
    for batch in 20..30 {
        send(batch * 10..batch * 10 + 10).await;
    }
    let all: BTreeSet<String> = (0..300).map(|n| format!("line {n}")).collect();
    assert!(eventually(Duration::from_secs(60), || lines(&loki) == all).await, "lost = 0");
    let received = loki.entries().len();
    eprintln!("group churn: 300 lines, {} duplicates", received - 300);
    assert!(second.delivered() > 0, "the second worker took partitions over");
    second.stop().await;
    gateway.stop().await;
}

/// `tailgate replay --exporter loki` of the records stamped `from_ms..to_ms`, to `loki`, as an operator runs it.
async fn replay_to_loki(
    kafka: &tailgate_kafka::KafkaConfig,
    loki: &LokiReceiver,
    name: &str,
    from_ms: i64,
    to_ms: i64,
) -> std::process::Output {
    let path = harness::temp_dir(name).join("tailgate.yaml");
    let config =
        format!("{}exporters:\n  loki: {{ endpoint: '{}' }}\n", harness::kafka::kafka_yaml(kafka), loki.endpoint());
    std::fs::write(&path, config).unwrap();
    let (from, to) = (otlp::rfc3339(from_ms), otlp::rfc3339(to_ms));
    tokio::task::spawn_blocking(move || {
        binary::tailgate()
            .args(["replay", "--config"])
            .arg(&path)
            .args(["--exporter", "loki", "--from", &from, "--to", &to])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A record stamped an hour ahead (a gateway whose clock ran ahead) in the middle of a replay's range: the replay
/// skips it and goes on to the range's end, instead of ending the partition there and exiting 0 with the rest of
/// the range undelivered (as before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stamped_ahead_does_not_end_a_replay_early() {
    use prost::Message as _;
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    tailgate_kafka::ensure_topics(&kafka, &[(&kafka.topics.logs, &[])], Duration::from_secs(30)).await.unwrap();
    let producer = harness::kafka::producer(&kafka.brokers);
    // Ten minutes ago: a range well in the past, the skewed record 50 minutes ahead of now.
    let base = tailgate_kafka::now_ms() - 600_000;
    let stamped = [
        (0..10).map(|i| base + i * 100).collect::<Vec<_>>(),
        vec![base + 3_600_000],
        (0..10).map(|i| base + 2_000 + i * 100).collect(),
    ]
    .concat();
    for (n, timestamp) in stamped.iter().enumerate() {
        let value = logs_request("checkout", vec![line(n as u32)]).encode_to_vec();
        let record = FutureRecord::to(&kafka.topics.logs)
            .partition(0)
            .key(b"k".as_slice())
            .payload(&value)
            .timestamp(*timestamp);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("written");
    }
    let loki = LokiReceiver::start().await;
    let output = replay_to_loki(&kafka, &loki, "replay-skew", base - 1_000, base + 5_000).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let expected: BTreeSet<String> = (0..10).chain(11..21).map(|n| format!("line {n}")).collect();
    assert_eq!(lines(&loki), expected, "every line of the range, and not the one stamped ahead: {stderr}");
}

/// A replay whose records the backend refuses for good (Loki's 400 for a request it cannot parse) does not report
/// success: the README promises an exit code of 0 only if every record was delivered and nothing was rejected. The
/// refused records go to the dead-letter topic, as the live exporter's would, and the summary says how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_records_the_backend_refuses_exits_non_zero() {
    use prost::Message as _;
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    tailgate_kafka::ensure_topics(&kafka, &[(&kafka.topics.logs, &[])], Duration::from_secs(30)).await.unwrap();
    let producer = harness::kafka::producer(&kafka.brokers);
    // Ten minutes ago, as above: a range that ended, so each partition ends where it stood when the replay started.
    let base = tailgate_kafka::now_ms() - 600_000;
    let values: Vec<Vec<u8>> = (0..5).map(|n| logs_request("checkout", vec![line(n)]).encode_to_vec()).collect();
    for (n, value) in values.iter().enumerate() {
        let record = FutureRecord::to(&kafka.topics.logs)
            .partition(0)
            .key(b"k".as_slice())
            .payload(value)
            .timestamp(base + n as i64 * 100);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("written");
    }
    // Loki refuses every request the replay makes: each carries at least one record and a refusal is not retried,
    // so one 400 per record covers them however they are batched. The body says neither "too old" nor "limit", so
    // the whole request is refused (`bad_request`), not some of its entries counted and the rest stored.
    let loki = LokiReceiver::start().await;
    let refusal = "error parsing labels: unexpected character";
    loki.script(std::iter::repeat_n((400, None, refusal), values.len()));
    let output = replay_to_loki(&kafka, &loki, "replay-refused", base - 1_000, base + 5_000).await;
    let stderr = String::from_utf8_lossy(&output.stderr);

    // `replay` (src/lib.rs) returns an error unless the summary is complete; `main` exits 1 on any error.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(lines(&loki).is_empty(), "Loki stored nothing: {stderr}");
    // The replay's summary (exporters/src/replay.rs), then the error `main` prints.
    assert!(
        stderr.contains(
            "5 records (0.0 MiB) read, 0 delivered, 5 dead-lettered; 0 items delivered, 5 rejected — INCOMPLETE: see \
             the dead-letter topic and tailgate_exporter_rejected_items_total"
        ),
        "a summary naming the refusal: {stderr}"
    );
    assert!(
        stderr.contains("error: replay incomplete: 0 of 5 records delivered, 5 dead-lettered, 5 items rejected"),
        "the error: {stderr}"
    );

    // Every refused record, once, copied to `<logs topic>.dlq` with where it came from, who refused it and why
    // (the reason, then the backend's answer).
    let dlq = headers::dead_letter_topic(&kafka.topics.logs);
    let records = harness::read_topic(&kafka.brokers, &dlq, 1, Duration::from_secs(10), |r| r.len() >= values.len());
    let mut copies: Vec<_> = records
        .iter()
        .map(|r| {
            let source = r.header(headers::DLQ_SOURCE);
            (source, r.key.clone(), r.value.clone(), r.header(headers::DLQ_STAGE), r.header(headers::DLQ_ERROR))
        })
        .collect();
    copies.sort();
    let expected: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(n, value)| {
            let error = format!("bad_request: HTTP 400 Bad Request: {refusal}");
            (Some(format!("0:{n}")), b"k".to_vec(), value.clone(), Some("exporter.loki".to_owned()), Some(error))
        })
        .collect();
    assert_eq!(copies, expected, "the dead-letter topic holds each refused record once");
}

/// While the backend is down, the exporter stops translating once its sealed queue is full: one batch in flight,
/// two sealed, the rest kept as read (and fetching paused). Before, every record fetched — the channel and
/// librdkafka's prefetch — was translated into ever more sealed batches, far above the memory the README states:
/// here all 200 records were read and translated within the outage's first second. Then the backend returns
/// and every line arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outage_stops_translation_at_the_sealed_queue() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    for n in 0..200 {
        client.export(logs_request("cart", vec![line(n)])).await.unwrap();
    }
    let loki = LokiReceiver::start().await;
    loki.script(std::iter::repeat_n((503, None, "down"), 12));
    let mut config = loki_config(&loki);
    config.batch.max_items = 10;
    config.batch.timeout = tailgate_config::Duration::from_secs(60);
    let exporters = ExportersConfig { loki: Some(config), ..Default::default() };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;

    // Ten refused attempts (about two seconds of back-off): the exporter has had every chance to read on.
    let attempts = || loki.state.lock().unwrap().attempts.len();
    assert!(eventually(Duration::from_secs(30), || attempts() >= 10).await, "the exporter never tried Loki");
    let read = exporter.stats.records_read.load(Ordering::SeqCst);
    assert_eq!(read, 30, "records translated during the outage: one batch in flight and two sealed, of 10 each");
    assert!(exporter.stats.pauses.load(Ordering::SeqCst) >= 1, "fetching was paused");

    // The outage ends (the script runs out): every line is delivered, each once.
    assert!(eventually(Duration::from_secs(60), || lines(&loki).len() == 200).await, "{} lines", lines(&loki).len());
    assert_eq!(loki.entries().len(), 200, "no line delivered twice");
    assert_eq!(exporter.stats.records_read.load(Ordering::SeqCst), 200);
    exporter.stop().await;
    gateway.stop().await;
}

/// An offset commit that fails when nothing comes after it — the last commit before a quiet spell, refused by a
/// coordinator moving or loading — is sent again: the group's lag reaches 0 without another record. (rust-rdkafka's
/// asynchronous commit reports no failure; before the exporter committed its offsets again every few seconds, the
/// campaign on Apache Kafka ended with 40 records of a sampler's partition uncommitted for good, read again by
/// whoever owned the partition next.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_of_a_quiet_partition_is_sent_again() {
    let mock = harness::mock_cluster();
    let kafka = harness::mock_kafka(&mock, 1);
    let loki = LokiReceiver::start().await;
    let exporters = ExportersConfig { loki: Some(loki_config(&loki)), ..Default::default() };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    let producer = harness::kafka::producer(&kafka.brokers);
    let group = kafka.consumer.exporter_group(tailgate_exporters::LOKI);
    let lag = |kafka: &tailgate_kafka::KafkaConfig| {
        let (brokers, group, topic) = (kafka.brokers.clone(), group.clone(), kafka.topics.logs.clone());
        move || harness::lag::lag(&brokers, &group, &topic, 1)
    };
    let send = |n: u32| {
        let value = prost::Message::encode_to_vec(&logs_request("shop", vec![line(n)]));
        let producer = producer.clone();
        let topic = kafka.topics.logs.clone();
        async move {
            producer.send(FutureRecord::<(), _>::to(&topic).partition(0).payload(&value), Duration::from_secs(10)).await
        }
    };

    send(0).await.unwrap();
    let committed = lag(&kafka);
    assert!(
        eventually(Duration::from_secs(30), || lines(&loki).len() == 1 && committed() == Some(0)).await,
        "the first record delivered and committed"
    );
    // The next commit fails, with an error librdkafka does not retry; then nothing more is written.
    mock.request_errors(
        rdkafka::types::RDKafkaApiKey::OffsetCommit,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE],
    );
    send(1).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || lines(&loki).len() == 2).await, "the second record delivered");
    let committed = lag(&kafka);
    let mended = eventually(Duration::from_secs(20), || committed() == Some(0)).await;
    assert!(mended, "the group's lag stayed at {:?}: the failed commit was never sent again", lag(&kafka)());
    exporter.stop().await;
}
