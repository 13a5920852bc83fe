//! Exporters end to end: gateway → Apache Kafka → exporter → backend. Prometheus is the real server; Jaeger and
//! Loki are receivers built on their official protocol definitions (`harness::backends`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point, metric, number_data_point, summary_data_point, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use tailgate_exporters::jaeger::JaegerConfig;
use tailgate_exporters::loki::LokiConfig;
use tailgate_exporters::prometheus::PrometheusConfig;
use tailgate_exporters::ExportersConfig;

use crate::harness::backends::{LokiReceiver, Prometheus, TraceReceiver};
use crate::harness::otlp::{self, kv, logs_request, now_ns, service_resource};
use crate::harness::{self, eventually, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_receives_every_kept_trace_whole() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let sampler_config = tailgate_sampler::SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(1),
        ..Default::default()
    };
    let sampler = harness::start_sampler(&sampler_config, &kafka, "sampler").await;
    let jaeger = TraceReceiver::start().await;
    let exporters = ExportersConfig {
        jaeger: Some(JaegerConfig { endpoint: jaeger.endpoint(), ..Default::default() }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::JAEGER).await;

    // 100 traces of 6 spans (one per checkout service); every 5th fails.
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let start = now_ns();
    for service in 0..6u64 {
        let spans = (0..100u64)
            .map(|t| Span {
                trace_id: checkout_trace_id(t),
                span_id: (t * 10 + service + 1).to_be_bytes().to_vec(),
                name: format!("service-{service}"),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000_000,
                status: (t % 5 == 0 && service == 3)
                    .then(|| Status { code: status::StatusCode::Error as i32, message: "card declined".into() }),
                ..Default::default()
            })
            .collect();
        client.export(harness::trace_request(spans)).await.unwrap();
    }

    // What the seed's policies keep, known from the spans alone: the 20 failing traces, none for being slow (each
    // takes 1 ms of the 2 s), and of the other 80 exactly those whose trace ID the probabilistic policy's hash keeps
    // (10%, default salt): 26 traces, each whole. Pinned, so that a change to the IDs or to the seed's policies
    // shows here first, not as an exporter failure.
    let expected_kept: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = (0..100u64)
        .filter(|t| t % 5 == 0 || harness::sampling::probabilistic_keeps(&checkout_trace_id(*t), 10.0))
        .map(|t| {
            let spans: BTreeSet<Vec<u8>> =
                (0..6u64).map(|service| (t * 10 + service + 1).to_be_bytes().to_vec()).collect();
            (checkout_trace_id(t), spans)
        })
        .collect();
    assert_eq!(expected_kept.len(), 26, "the seed's policies keep 26 of these 100 traces");

    // What the sampler kept, read back from Kafka, is exactly that, and exactly what Jaeger received.
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 4, Duration::from_secs(30), |r| {
        topic::count_spans(r) >= 6 * expected_kept.len()
    });
    let mut kept: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (_, span) in topic::spans(&records) {
        kept.entry(span.trace_id).or_default().insert(span.span_id);
    }
    assert_eq!(kept, expected_kept, "the sampled topic holds exactly the traces the seed's policies keep, whole");
    let expected: usize = kept.values().map(BTreeSet::len).sum();
    assert!(eventually(Duration::from_secs(30), || jaeger.span_count() >= expected).await, "all kept spans arrive");
    let mut received: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (trace, span) in jaeger.traces.lock().unwrap().spans.iter() {
        received.entry(trace.clone()).or_default().insert(span.clone());
    }
    assert_eq!(received, kept, "every kept trace arrives whole, and nothing else");
    assert!(eventually(Duration::from_secs(10), || exporter.delivered() == records.len() as u64).await);

    exporter.stop().await;
    sampler.stop().await;
    gateway.stop().await;
}

/// The ID of trace `t` of `jaeger_receives_every_kept_trace_whole`.
fn checkout_trace_id(t: u64) -> Vec<u8> {
    (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes().repeat(2)
}

fn metric_of(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric { name: name.into(), unit: unit.into(), data: Some(data), ..Default::default() }
}

fn int_point(value: i64, time: u64, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    }
}

/// One of each kind of OTLP metric, from the checkout service, at `time`.
pub(super) fn checkout_metrics(time: u64, delta: i64) -> ExportMetricsServiceRequest {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let metrics = vec![
        metric_of(
            "checkout.completed",
            "{checkout}",
            metric::Data::Sum(Sum {
                data_points: vec![int_point(42, time, vec![kv("payment.method", "card")])],
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        metric_of(
            "cart.items",
            "{item}",
            metric::Data::Gauge(Gauge { data_points: vec![int_point(7, time, vec![kv("http.route", "/cart")])] }),
        ),
        metric_of(
            "checkout.value",
            "{cent}",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: time,
                    count: 6,
                    sum: Some(27_000.0),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![1000.0, 5000.0],
                    ..Default::default()
                }],
                aggregation_temporality: cumulative,
            }),
        ),
        metric_of(
            "db.query.duration",
            "s",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: time,
                    count: 6,
                    sum: Some(9.0),
                    scale: 0,
                    zero_count: 1,
                    positive: Some(exponential_histogram_data_point::Buckets { offset: 0, bucket_counts: vec![2, 3] }),
                    ..Default::default()
                }],
                aggregation_temporality: cumulative,
            }),
        ),
        metric_of(
            "payment.latency",
            "ms",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: time,
                    count: 10,
                    sum: 1234.0,
                    quantile_values: vec![summary_data_point::ValueAtQuantile { quantile: 0.99, value: 250.0 }],
                    ..Default::default()
                }],
            }),
        ),
        metric_of(
            "cart.abandoned",
            "{cart}",
            metric::Data::Sum(Sum {
                data_points: vec![int_point(delta, time, vec![])],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
        ),
    ];
    let scope = InstrumentationScope { name: "shop.checkout".into(), ..Default::default() };
    otlp::metrics_request_with(service_resource("checkout"), Some(scope), metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_every_kind_of_metric_as_the_compatibility_spec_says() {
    let prometheus = Prometheus::start().await;
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let exporters = ExportersConfig {
        prometheus_remote_write: Some(PrometheusConfig {
            endpoint: prometheus.endpoint(),
            external_labels: BTreeMap::from([("cluster".to_owned(), "eu-1".to_owned())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::PROMETHEUS).await;

    let mut client = MetricsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let t0 = now_ns() - 20_000_000_000;
    client.export(checkout_metrics(t0, 3)).await.unwrap();
    client.export(checkout_metrics(t0 + 10_000_000_000, 2)).await.unwrap();
    // Each request becomes a record per partition its metrics map to (keyed by resource, scope and name): the six
    // metrics fall on both partitions (checkout.completed, db.query.duration and payment.latency on 0, the rest on
    // 1), so the two requests make 4 records. Pinned, so that a change to the routing shows here first.
    let resource = tailgate_proto::split::resource_key(service_resource("checkout").as_ref());
    let metric_partitions: BTreeSet<u32> = checkout_metrics(t0, 3).resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| {
            let mut key = resource.clone();
            key.push(0xff);
            key.extend_from_slice(b"shop.checkout");
            key.push(0xff);
            key.extend_from_slice(m.name.as_bytes());
            tailgate_proto::partition_for_key(&key, 2)
        })
        .collect();
    let expected_records = 2 * metric_partitions.len();
    assert_eq!(expected_records, 4, "two requests, each on both partitions");
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.metrics, 2, Duration::from_secs(10), |r| {
        r.len() >= expected_records
    });
    assert_eq!(records.len(), expected_records, "one record per request and partition, no more");
    let delivered = eventually(Duration::from_secs(30), || exporter.delivered() == records.len() as u64).await;
    assert!(delivered, "every record delivered: {:?}", exporter.stats);
    assert_eq!(exporter.stats.records_dead_lettered.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(exporter.stats.items_rejected.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Counters get `_total`, and job/instance come from the resource, scope and external labels on every series.
    let completed = prometheus.query("checkout_completed_total").await;
    assert_eq!(completed.len(), 1, "{completed:?}");
    let labels = &completed[0]["metric"];
    assert_eq!(labels["job"], "shop/checkout");
    assert_eq!(labels["instance"], "checkout-1");
    assert_eq!(labels["payment_method"], "card");
    assert_eq!(labels["otel_scope_name"], "shop.checkout");
    assert_eq!(labels["cluster"], "eu-1");
    assert!(labels.get("deployment_environment").is_none(), "resource attributes only on target_info by default");
    assert_eq!(Prometheus::value(&completed[0]), 42.0);

    let info = prometheus.query("target_info").await;
    assert_eq!(info[0]["metric"]["deployment_environment"], "test");
    assert_eq!(Prometheus::value(&prometheus.query("cart_items").await[0]), 7.0);

    // Histogram buckets are cumulative, with +Inf = count.
    let buckets = prometheus.query("checkout_value_bucket").await;
    let by_le: HashMap<String, f64> =
        buckets.iter().map(|b| (b["metric"]["le"].as_str().unwrap().to_owned(), Prometheus::value(b))).collect();
    assert_eq!(by_le, HashMap::from([("1000".into(), 1.0), ("5000".into(), 3.0), ("+Inf".into(), 6.0)]));
    assert_eq!(Prometheus::value(&prometheus.query("checkout_value_sum").await[0]), 27_000.0);
    assert_eq!(Prometheus::value(&prometheus.query("checkout_value_count").await[0]), 6.0);

    // Exponential histogram (scale 0): zero bucket at le=0, then upper bounds 2 and 4.
    let buckets = prometheus.query("db_query_duration_seconds_bucket").await;
    let by_le: HashMap<String, f64> =
        buckets.iter().map(|b| (b["metric"]["le"].as_str().unwrap().to_owned(), Prometheus::value(b))).collect();
    assert_eq!(by_le, HashMap::from([("0".into(), 1.0), ("2".into(), 3.0), ("4".into(), 6.0), ("+Inf".into(), 6.0)]));

    // Summary quantiles, and the unit suffix.
    let quantiles = prometheus.query("payment_latency_milliseconds").await;
    assert_eq!(quantiles[0]["metric"]["quantile"], "0.99");
    assert_eq!(Prometheus::value(&quantiles[0]), 250.0);
    assert_eq!(Prometheus::value(&prometheus.query("payment_latency_milliseconds_count").await[0]), 10.0);

    // Delta sums become a cumulative counter: 3 then 3 + 2.
    assert_eq!(Prometheus::value(&prometheus.query("cart_abandoned_total").await[0]), 5.0);

    exporter.stop().await;
    gateway.stop().await;
}

fn log(trace: u8, body: any_value::Value, severity: i32) -> LogRecord {
    LogRecord {
        time_unix_nano: now_ns(),
        severity_number: severity,
        body: Some(AnyValue { value: Some(body) }),
        attributes: vec![kv("order.id", &format!("o-{trace}"))],
        trace_id: vec![trace; 16],
        span_id: vec![trace; 8],
        ..Default::default()
    }
}

/// Loki over HTTPS with a private CA and a client certificate (the receiver refuses clients without one),
/// authenticated with a bearer token from a file: every push carries the token the file held when it was sent, so
/// a rotated token is used from the next push on, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_over_mtls_with_a_private_ca_and_a_rotated_bearer_token() {
    let pki = harness::certs::Pki::new("loki-tls");
    let ca = pki.ca("ca");
    let server = pki.leaf(&ca, "loki");
    let client = pki.leaf(&ca, "tailgate");
    let loki = LokiReceiver::start_with(Some(harness::certs::server_config(&server, Some(&ca)))).await;
    let token = pki.dir.join("loki.token");
    std::fs::write(&token, "loki-token-1\n").unwrap();
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let exporters = ExportersConfig {
        loki: Some(LokiConfig {
            endpoint: format!("https://localhost:{}/loki/api/v1/push", loki.addr.port()),
            tls: tailgate_tls::ClientTlsConfig {
                ca_file: Some(ca.cert.clone()),
                cert_file: Some(client.cert.clone()),
                key_file: Some(client.key.clone()),
                ..Default::default()
            },
            auth: Some(tailgate_exporters::delivery::credentials::BackendAuth {
                bearer_token: Some(tailgate_config::SecretSource { file: Some(token.clone()), env: None }),
                basic: None,
            }),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    let mut client = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    client
        .export(logs_request("payments", vec![log(1, any_value::Value::StringValue("one".into()), 9)]))
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || loki.entries().len() == 1).await, "delivered over TLS");
    std::fs::write(&token, "loki-token-2\n").unwrap();
    client
        .export(logs_request("payments", vec![log(2, any_value::Value::StringValue("two".into()), 9)]))
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || loki.entries().len() == 2).await, "delivered after rotation");
    let pushes: Vec<(String, Option<String>)> = loki
        .state
        .lock()
        .unwrap()
        .pushes
        .iter()
        .map(|p| (p.request.streams[0].entries[0].line.clone(), p.authorization.clone()))
        .collect();
    assert_eq!(
        pushes,
        [
            ("one".to_owned(), Some("Bearer loki-token-1".to_owned())),
            ("two".to_owned(), Some("Bearer loki-token-2".to_owned()))
        ]
    );
    exporter.stop().await;
    gateway.stop().await;
}

/// Two tenants' logs, and the default tenant's, read from the same partitions: each push to Loki holds one
/// tenant's lines and carries that tenant as `X-Scope-OrgID`; the default tenant's go as the configured
/// `tenant_id`. Exactly each line, once, under its own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenants_logs_reach_loki_as_that_tenant() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let mut ingest = harness::ingest_config();
    ingest.http.tenant_header = Some("X-Scope-OrgID".into());
    let gateway = harness::start_gateway(ingest, kafka.clone()).await;
    let loki = LokiReceiver::start().await;
    let exporters = ExportersConfig {
        loki: Some(LokiConfig { endpoint: loki.endpoint(), tenant_id: Some("shop".into()), ..Default::default() }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    let sends = [(Some("cart"), 3), (Some("payments"), 2), (None, 1), (Some("cart"), 1)];
    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, (tenant, lines)) in sends.into_iter().enumerate() {
        let records: Vec<LogRecord> =
            (0..lines).map(|j| log(1, any_value::Value::StringValue(format!("line {i}.{j}")), 9)).collect();
        for j in 0..lines {
            *expected.entry((tenant.unwrap_or("shop").to_owned(), format!("line {i}.{j}"))).or_default() += 1;
        }
        let body = prost::Message::encode_to_vec(&logs_request("checkout", records));
        let mut headers = vec![("Content-Type", "application/x-protobuf")];
        headers.extend(tenant.map(|t| ("X-Scope-OrgID", t)));
        assert_eq!(harness::http::request(gateway.http, "POST", "/v1/logs", &headers, &body).await.status, 200);
    }
    assert!(eventually(Duration::from_secs(30), || loki.entries().len() >= 7).await, "all lines arrive");
    let mut found: BTreeMap<(String, String), usize> = BTreeMap::new();
    for push in loki.state.lock().unwrap().pushes.iter() {
        let tenant = push.tenant.clone().expect("every push names its tenant");
        for stream in &push.request.streams {
            for entry in &stream.entries {
                *found.entry((tenant.clone(), entry.line.clone())).or_default() += 1;
            }
        }
    }
    assert_eq!(found, expected);
    exporter.stop().await;
    gateway.stop().await;
}

/// Loki 3's OTLP endpoint (`protocol: otlp`): the records go as they are, joined and gzipped, to `/otlp/v1/logs`,
/// each request one tenant's with that tenant as `X-Scope-OrgID` (the default tenant's as `tenant_id`), and
/// nothing to the push API. Every log record arrives exactly once, unchanged, under its resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_otlp_mode_sends_each_tenants_records_unchanged() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let mut ingest = harness::ingest_config();
    ingest.http.tenant_header = Some("X-Scope-OrgID".into());
    let gateway = harness::start_gateway(ingest, kafka.clone()).await;
    let loki = LokiReceiver::start().await;
    let config = LokiConfig {
        protocol: tailgate_exporters::loki::Protocol::Otlp,
        endpoint: loki.otlp_endpoint(),
        tenant_id: Some("shop".into()),
        ..Default::default()
    };
    let exporters = ExportersConfig { loki: Some(config), ..Default::default() };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    let sends = [(Some("cart"), 3), (Some("payments"), 2), (None, 1), (Some("cart"), 1)];
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, (tenant, lines)) in sends.into_iter().enumerate() {
        let records: Vec<LogRecord> =
            (0..lines).map(|j| log(j as u8 + 1, any_value::Value::StringValue(format!("line {i}.{j}")), 9)).collect();
        for record in &records {
            expected.push((tenant.unwrap_or("shop").to_owned(), prost::Message::encode_to_vec(record)));
        }
        let body = prost::Message::encode_to_vec(&logs_request("checkout", records));
        let mut headers = vec![("Content-Type", "application/x-protobuf")];
        headers.extend(tenant.map(|t| ("X-Scope-OrgID", t)));
        assert_eq!(harness::http::request(gateway.http, "POST", "/v1/logs", &headers, &body).await.status, 200);
    }
    let received = || {
        let state = loki.state.lock().unwrap();
        state
            .otlp
            .iter()
            .flat_map(|p| &p.request.resource_logs)
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum::<usize>()
    };
    assert!(eventually(Duration::from_secs(30), || received() >= 7).await, "{} of 7 records arrived", received());
    let (pushed, mut found) = {
        let state = loki.state.lock().unwrap();
        let mut found = Vec::new();
        for push in &state.otlp {
            assert_eq!(push.content_encoding.as_deref(), Some("gzip"));
            let tenant = push.tenant.clone().expect("every request names its tenant");
            for resource_logs in &push.request.resource_logs {
                assert_eq!(resource_logs.resource, service_resource("checkout"));
                for record in resource_logs.scope_logs.iter().flat_map(|s| &s.log_records) {
                    found.push((tenant.clone(), prost::Message::encode_to_vec(record)));
                }
            }
        }
        (state.pushes.len(), found)
    };
    assert_eq!(pushed, 0, "nothing to the push API");
    expected.sort();
    found.sort();
    assert_eq!(found, expected);
    exporter.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_gets_low_cardinality_streams_with_trace_ids_as_structured_metadata() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let loki = LokiReceiver::start().await;
    let exporters = ExportersConfig {
        loki: Some(LokiConfig { endpoint: loki.endpoint(), tenant_id: Some("shop".into()), ..Default::default() }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;

    let mut client = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let structured = any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
        values: vec![KeyValue {
            key: "sku".into(),
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(17)) }),
        }],
    });
    let records = vec![
        log(1, any_value::Value::StringValue("payment declined".into()), 17),
        log(2, any_value::Value::StringValue("reserved stock".into()), 9),
        log(3, structured, 9),
    ];
    client.export(logs_request("payments", records)).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || loki.entries().len() >= 3).await, "all lines arrive");

    let entries = loki.entries();
    let find = |line: &str| entries.iter().find(|e| e.1 == line).unwrap_or_else(|| panic!("{line} in {entries:?}"));
    let (labels, _, metadata) = find("payment declined");
    assert_eq!(
        labels,
        r#"{deployment_environment="test", level="error", service_name="payments", service_namespace="shop"}"#
    );
    let metadata: HashMap<&str, &str> = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(metadata["trace_id"], "01".repeat(16));
    assert_eq!(metadata["span_id"], "01".repeat(8));
    assert_eq!(metadata["order_id"], "o-1");
    assert_eq!(metadata["service_instance_id"], "payments-1", "resource attributes that aren't labels are metadata");
    assert!(find("reserved stock").0.contains(r#"level="info""#));
    find(r#"{"sku":17}"#);
    assert!(loki.state.lock().unwrap().pushes.iter().all(|p| p.tenant.as_deref() == Some("shop")));

    exporter.stop().await;
    gateway.stop().await;
}

/// The sampler's RED series are cumulative per worker and partition and must add up in Prometheus. They carried
/// the worker and partition only as `tailgate.sampler.*` resource attributes, which become labels only on
/// `target_info`: every partition's `calls` of one service and span name were one Prometheus series, each
/// partition's count overwriting the others', so `sum()` showed about a partition's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_metrics_of_every_partition_add_up_in_prometheus() {
    let prometheus = Prometheus::start().await;
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let red_metrics = tailgate_sampler::red::RedMetricsConfig {
        interval: tailgate_config::Duration::from_secs(1),
        ..Default::default()
    };
    let sampler_config = tailgate_sampler::SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(1),
        red_metrics,
        ..Default::default()
    };
    let sampler = harness::start_sampler(&sampler_config, &kafka, "sampler").await;
    let exporters = ExportersConfig {
        prometheus_remote_write: Some(PrometheusConfig { endpoint: prometheus.endpoint(), ..Default::default() }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::PROMETHEUS).await;

    // 100 spans of one service and name, on 100 traces: spread over the 4 partitions.
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let start = now_ns();
    let spans = (0..100u64)
        .map(|t| Span {
            trace_id: otlp::trace_id(t),
            span_id: (t + 1).to_be_bytes().to_vec(),
            name: "GET /cart".into(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000,
            ..Default::default()
        })
        .collect();
    client.export(otlp::trace_request_with(service_resource("cart"), spans)).await.unwrap();
    let partitions: BTreeSet<u32> =
        (0..100u64).map(|t| tailgate_proto::partition_for_key(&otlp::trace_id(t), 4)).collect();
    assert_eq!(partitions.len(), 4, "the spans are on every partition");

    let mut total = 0.0;
    for _ in 0..300 {
        let sum = prometheus.query("sum(traces_span_metrics_calls_total{job=\"cart\"})").await;
        total = sum.first().map(Prometheus::value).unwrap_or(0.0);
        if total == 100.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(total, 100.0, "every partition's calls, added up");
    let series = prometheus.query("traces_span_metrics_calls_total{job=\"cart\"}").await;
    assert_eq!(series.len(), 4, "one series per partition: {series:?}");

    exporter.stop().await;
    sampler.stop().await;
    gateway.stop().await;
}
