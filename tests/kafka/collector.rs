//! Interop with the real OpenTelemetry Collector (contrib `kafka` receiver and exporter, `otlp_proto`) on Apache
//! Kafka, both directions: the Collector reads Tailgate's topics and exports every item unchanged; Tailgate's
//! sampler and exporters read the topics the Collector's Kafka exporter writes.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

use crate::harness::collector::{Collector, OtlpHttpSink};
use crate::harness::otlp::{kv, service_resource, trace_id};
use crate::harness::{self, sampling};

const PARTITIONS: u32 = 3;
const TRACES: u64 = 40;

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope { name: name.into(), version: "1.4.2".into(), ..Default::default() })
}

/// Spans of every trace from `service`, the `nth` of the trace: its root from the gateway, a child from the others;
/// traces 0..5 fail in the payments service, in a later request than their root.
fn spans(service: &str, nth: u8) -> ExportTraceServiceRequest {
    let child = nth > 0;
    let start = harness::otlp::now_ns();
    let spans = (0..TRACES)
        .map(|t| Span {
            trace_id: trace_id(t),
            span_id: [&t.to_be_bytes()[4..], &[nth, 1, 2, 3]].concat(),
            parent_span_id: if child { [&t.to_be_bytes()[4..], &[0, 1, 2, 3][..]].concat() } else { Vec::new() },
            name: format!("{service} handle"),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 5_000_000,
            attributes: vec![kv("http.route", "/checkout"), kv("order.id", &format!("o-{t}"))],
            status: Some(Status {
                code: if t < 5 && service == "payments" { status::StatusCode::Error } else { status::StatusCode::Ok }
                    as i32,
                message: String::new(),
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: service_resource(service),
            scope_spans: vec![ScopeSpans {
                scope: scope(&format!("{service}-instrumentation")),
                spans,
                ..Default::default()
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
    }
}

/// One trace whose single span carries `bytes` of attribute: a record near the size limit.
fn large_span(bytes: usize) -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: trace_id(1_000),
        span_id: vec![7; 8],
        name: "bulk import".into(),
        attributes: vec![kv("payload", &"x".repeat(bytes))],
        ..Default::default()
    };
    harness::otlp::trace_request_with(service_resource("inventory"), vec![span])
}

fn metrics() -> ExportMetricsServiceRequest {
    let now = harness::otlp::now_ns();
    let point = |value: f64, route: &str| NumberDataPoint {
        attributes: vec![kv("route", route)],
        time_unix_nano: now,
        start_time_unix_nano: now - 60_000_000_000,
        value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    let metrics = vec![
        Metric {
            name: "checkout.orders".into(),
            unit: "{order}".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![point(42.0, "/checkout"), point(3.0, "/cart")],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "inventory.stock".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: vec![point(17.0, "/stock")] })),
            ..Default::default()
        },
        Metric {
            name: "payments.duration".into(),
            unit: "ms".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: now,
                    start_time_unix_nano: now - 60_000_000_000,
                    count: 6,
                    sum: Some(930.0),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![100.0, 250.0],
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: service_resource("checkout"),
            scope_metrics: vec![ScopeMetrics { scope: scope("checkout-metrics"), metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    let now = harness::otlp::now_ns();
    let records = (0..20u64)
        .map(|i| LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: if i % 5 == 0 { 17 } else { 9 },
            severity_text: if i % 5 == 0 { "ERROR" } else { "INFO" }.into(),
            body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(format!(
                    "payment {i} processed"
                ))),
            }),
            attributes: vec![kv("order.id", &format!("o-{i}"))],
            trace_id: if i % 2 == 0 { trace_id(i) } else { Vec::new() },
            span_id: if i % 2 == 0 { vec![1; 8] } else { Vec::new() },
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: service_resource("payments"),
            scope_logs: vec![ScopeLogs { scope: scope("payments-logger"), log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A resource, scope or span status left out and an empty one are the same thing; the Collector's pdata writes the
/// empty one.
fn present<T: Default + Clone>(part: &Option<T>) -> Option<T> {
    Some(part.clone().unwrap_or_default())
}

/// Each span with its resource and scope, encoded alone: requests compared item by item, however batched.
fn span_items(requests: &[ExportTraceServiceRequest]) -> Vec<Vec<u8>> {
    let mut items: Vec<Vec<u8>> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map(move |span| {
                    let span = Span { status: present(&span.status), ..span.clone() };
                    let scope = ScopeSpans { spans: vec![span], scope: present(&ss.scope), ..ss.clone() };
                    ResourceSpans { scope_spans: vec![scope], resource: present(&rs.resource), ..rs.clone() }
                        .encode_to_vec()
                })
            })
        })
        .collect();
    items.sort();
    items
}

fn metric_items(requests: &[ExportMetricsServiceRequest]) -> Vec<Vec<u8>> {
    let mut items: Vec<Vec<u8>> = requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| {
            rm.scope_metrics.iter().flat_map(move |sm| {
                sm.metrics.iter().map(move |m| {
                    let scope = ScopeMetrics { metrics: vec![m.clone()], scope: present(&sm.scope), ..sm.clone() };
                    ResourceMetrics { scope_metrics: vec![scope], resource: present(&rm.resource), ..rm.clone() }
                        .encode_to_vec()
                })
            })
        })
        .collect();
    items.sort();
    items
}

fn log_items(requests: &[ExportLogsServiceRequest]) -> Vec<Vec<u8>> {
    let mut items: Vec<Vec<u8>> = requests
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| {
            rl.scope_logs.iter().flat_map(move |sl| {
                sl.log_records.iter().map(move |l| {
                    let scope = ScopeLogs { log_records: vec![l.clone()], scope: present(&sl.scope), ..sl.clone() };
                    ResourceLogs { scope_logs: vec![scope], resource: present(&rl.resource), ..rl.clone() }
                        .encode_to_vec()
                })
            })
        })
        .collect();
    items.sort();
    items
}

/// The items of `received` and `sent` are the same, as multisets; otherwise what is missing and what is extra.
fn assert_same_items<M: prost::Message + Default + std::fmt::Debug>(
    what: &str,
    received: &[Vec<u8>],
    sent: &[Vec<u8>],
) {
    if received == sent {
        return;
    }
    let (mut missing, mut extra) = (sent.to_vec(), Vec::new());
    for item in received {
        match missing.iter().position(|m| m == item) {
            Some(at) => {
                missing.swap_remove(at);
            }
            None => extra.push(item.clone()),
        }
    }
    // Long runs of one character (a large attribute) shortened.
    let shorten = |text: String| text.replace(&"x".repeat(1000), "").replace(&"x".repeat(100), "");
    let show =
        |items: &[Vec<u8>]| items.first().map(|item| shorten(format!("{:?}", M::decode(item.as_slice()).unwrap())));
    panic!(
        "{what}: {} received, {} sent; {} missing, first {:?}; {} extra, first {:?}",
        received.len(),
        sent.len(),
        missing.len(),
        show(&missing),
        extra.len(),
        show(&extra)
    );
}

/// `message` as a request of `tenant` (the `X-Scope-OrgID` header the gateway trusts here), or of the default one.
fn tenant<T>(message: T, tenant: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(tenant) = tenant {
        request.metadata_mut().insert("x-scope-orgid", tenant.parse().unwrap());
    }
    request
}

/// Waits until `done` holds of what `sink` received, or 60 s.
async fn until_received(sink: &OtlpHttpSink, what: &str, done: impl Fn(&harness::collector::Received) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&sink.received.lock().unwrap()) {
        assert!(Instant::now() < deadline, "the Collector did not export {what} within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Collector's `kafka` receiver (`otlp_proto`) reads `otlp_spans`, `otlp_metrics` and `otlp_logs` as Tailgate's
/// gateway wrote them — records of several tenants (the `tailgate.tenant` header) and one near the size limit
/// included — and exports every item unchanged, resource and scope included; then reads `sampled_spans` as the
/// sampler wrote it: exactly the kept traces, each span as sent but for the probabilistic keeps' `tracestate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_reads_tailgates_topics_item_for_item() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    let mut ingest = harness::ingest_config();
    ingest.grpc.tenant_header = Some("X-Scope-OrgID".to_owned());
    let gateway = harness::start_gateway(ingest, kafka.clone()).await;
    let channel = tonic::transport::Channel::from_shared(gateway.grpc_url()).unwrap().connect().await.unwrap();
    let traces = [spans("gateway", 0), spans("cart", 1), spans("payments", 2), large_span(900_000)];
    let mut client = TraceServiceClient::new(channel.clone()).max_encoding_message_size(4 << 20);
    for (i, request) in traces.iter().enumerate() {
        // The large trace as tenant `checkout` (a tenant's spans are a trace apart from the default tenant's).
        client.export(tenant(request.clone(), (i == 3).then_some("checkout"))).await.unwrap();
    }
    let (metrics, logs) = (metrics(), logs());
    MetricsServiceClient::new(channel.clone()).export(tenant(metrics.clone(), Some("checkout"))).await.unwrap();
    LogsServiceClient::new(channel.clone()).export(tenant(logs.clone(), None)).await.unwrap();

    let sink = OtlpHttpSink::start().await;
    let env = |traces_topic: &str, group: &str| {
        vec![
            ("KAFKA_BROKERS", kafka.brokers.clone()),
            ("GROUP_ID", format!("{}-{group}", kafka.consumer.group_prefix)),
            ("TRACES_TOPIC", traces_topic.to_owned()),
            ("METRICS_TOPIC", kafka.topics.metrics.clone()),
            ("LOGS_TOPIC", kafka.topics.logs.clone()),
            ("OTLP_HTTP_ENDPOINT", sink.endpoint()),
        ]
    };
    let collector = Collector::start("kafka-to-otlp.yaml", &env(&kafka.topics.spans, "otelcol")).await;
    let (sent_spans, sent_metrics, sent_logs) = (span_items(&traces), metric_items(&[metrics]), log_items(&[logs]));
    until_received(&sink, "every item", |r| {
        span_items(&r.traces).len() >= sent_spans.len()
            && metric_items(&r.metrics).len() >= sent_metrics.len()
            && log_items(&r.logs).len() >= sent_logs.len()
    })
    .await;
    // A moment more: a duplicate would have arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let received = sink.received.lock().unwrap();
        assert_same_items::<ResourceSpans>("spans", &span_items(&received.traces), &sent_spans);
        assert_same_items::<ResourceMetrics>("metrics", &metric_items(&received.metrics), &sent_metrics);
        assert_same_items::<ResourceLogs>("logs", &log_items(&received.logs), &sent_logs);
    }
    drop(collector);

    // The sampler's output: the seed's policies keep the 5 failing traces and those the hash keeps.
    let sampler = harness::start_sampler(
        &tailgate_sampler::SamplerConfig {
            decision_wait: tailgate_config::Duration::from_secs(1),
            ..Default::default()
        },
        &kafka,
        "tailgate-sampler",
    )
    .await;
    let hashed: Vec<u64> = (5..TRACES).filter(|t| sampling::probabilistic_keeps(&trace_id(*t), 10.0)).collect();
    let large_kept = sampling::probabilistic_keeps(&trace_id(1_000), 10.0);
    let kept = |id: &[u8]| {
        (0..5).chain(hashed.iter().copied()).any(|t| trace_id(t) == id) || (large_kept && trace_id(1_000) == id)
    };
    let mut expected: Vec<ExportTraceServiceRequest> = traces.to_vec();
    for request in &mut expected {
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|span| kept(&span.trace_id));
                for span in &mut ss.spans {
                    if !(0..5).any(|t| trace_id(t) == span.trace_id) {
                        span.trace_state = "ot=th:e6666666666666".into();
                    }
                }
            }
        }
    }
    let expected = span_items(&expected);
    let sampled =
        harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, PARTITIONS, Duration::from_secs(60), |r| {
            harness::topic::count_spans(r) >= expected.len()
        });
    assert_eq!(harness::topic::count_spans(&sampled), expected.len(), "the sampler kept what the policies keep");
    eprintln!(
        "kept: 5 errors, {} by the hash ({hashed:?}), large {large_kept}: {} spans",
        hashed.len(),
        expected.len()
    );
    let sink = OtlpHttpSink::start().await;
    let env: Vec<(&str, String)> = env(&kafka.topics.sampled_spans, "otelcol-sampled")
        .into_iter()
        .map(|(k, v)| if k == "OTLP_HTTP_ENDPOINT" { (k, sink.endpoint()) } else { (k, v) })
        .collect();
    let _collector = Collector::start("kafka-to-otlp.yaml", &env).await;
    until_received(&sink, "the kept spans", |r| span_items(&r.traces).len() >= expected.len()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_same_items::<ResourceSpans>("kept spans", &span_items(&sink.received.lock().unwrap().traces), &expected);
    sampler.stop().await;
    gateway.stop().await;
}

/// The Collector's `kafka` exporter (`otlp_proto`, `partition_traces_by_id`, all replicas acknowledging) writes the
/// spans, metrics and logs topics; Tailgate reads them as its own: the sampler keeps exactly the traces the seed's
/// policies keep, whole (the Collector's partitioner is not Tailgate's, but it too puts a trace on one
/// partition), the Prometheus exporter delivers the metrics to a real Prometheus and the Loki exporter every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailgate_reads_the_topics_the_collectors_kafka_exporter_writes() {
    use tailgate_exporters::loki::LokiConfig;
    use tailgate_exporters::prometheus::PrometheusConfig;
    use tailgate_exporters::ExportersConfig;

    use crate::harness::backends::{LokiReceiver, Prometheus};

    let prometheus = Prometheus::start().await;
    let loki = LokiReceiver::start().await;
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    // The roles create their topics; the Collector writes into them.
    let sampler_config = tailgate_sampler::SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(5),
        ..Default::default()
    };
    let sampler = harness::start_sampler(&sampler_config, &kafka, "tailgate-sampler").await;
    let exporters = ExportersConfig {
        prometheus_remote_write: Some(PrometheusConfig { endpoint: prometheus.endpoint(), ..Default::default() }),
        loki: Some(LokiConfig { endpoint: loki.endpoint(), ..Default::default() }),
        ..Default::default()
    };
    let to_prometheus = harness::start_exporter(&exporters, &kafka, tailgate_exporters::PROMETHEUS).await;
    let to_loki = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;

    let (grpc, http) = (harness::free_port(), harness::free_port());
    let collector = Collector::start(
        "otlp-to-kafka.yaml",
        &[
            ("OTLP_GRPC", format!("127.0.0.1:{grpc}")),
            ("OTLP_HTTP", format!("127.0.0.1:{http}")),
            ("KAFKA_BROKERS", kafka.brokers.clone()),
            ("TRACES_TOPIC", kafka.topics.spans.clone()),
            ("METRICS_TOPIC", kafka.topics.metrics.clone()),
            ("LOGS_TOPIC", kafka.topics.logs.clone()),
        ],
    )
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}")).unwrap().connect().await;
    let channel = channel.unwrap();
    let mut client = TraceServiceClient::new(channel.clone());
    for (nth, service) in ["gateway", "cart", "payments"].into_iter().enumerate() {
        client.export(spans(service, nth as u8)).await.unwrap_or_else(|e| panic!("{e}\n{}", collector.said()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    MetricsServiceClient::new(channel.clone()).export(metrics()).await.unwrap();
    LogsServiceClient::new(channel).export(logs()).await.unwrap();

    // Every trace is on one partition of the Collector's choosing.
    let written = harness::read_topic(&kafka.brokers, &kafka.topics.spans, PARTITIONS, Duration::from_secs(30), |r| {
        harness::topic::count_spans(r) >= 3 * TRACES as usize
    });
    let mut partitions: std::collections::HashMap<Vec<u8>, std::collections::BTreeSet<i32>> = Default::default();
    for (partition, span) in harness::topic::spans(&written) {
        partitions.entry(span.trace_id).or_default().insert(partition);
    }
    assert_eq!(partitions.len(), TRACES as usize);
    assert!(partitions.values().all(|p| p.len() == 1), "a trace split over partitions: {partitions:?}");

    let expected: std::collections::BTreeSet<Vec<u8>> =
        (0..TRACES).filter(|t| *t < 5 || sampling::probabilistic_keeps(&trace_id(*t), 10.0)).map(trace_id).collect();
    let whole = |records: &[harness::Record]| {
        let by_trace = harness::topic::spans_by_trace(records);
        expected.iter().all(|t| by_trace.get(t).is_some_and(|spans| spans.len() == 3))
    };
    let sampled =
        harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, PARTITIONS, Duration::from_secs(60), whole);
    let by_trace = harness::topic::spans_by_trace(&sampled);
    let counts: Vec<(usize, usize)> =
        expected.iter().map(|t| by_trace.get(t).map_or(0, |s| s.len())).enumerate().collect();
    assert!(
        whole(&sampled),
        "the kept traces did not all arrive whole: spans of each {counts:?}, {} traces kept in all",
        by_trace.len()
    );
    let kept: std::collections::BTreeSet<Vec<u8>> = harness::topic::trace_ids(&sampled).into_iter().collect();
    assert_eq!(kept, expected, "exactly the traces the seed's policies keep");
    assert_eq!(harness::topic::count_spans(&sampled), 3 * expected.len(), "each kept span once");

    // Metrics in Prometheus, as sent.
    let deadline = Instant::now() + Duration::from_secs(60);
    let orders = loop {
        let orders = prometheus.query("checkout_orders_total").await;
        if orders.len() == 2 && !prometheus.query("inventory_stock").await.is_empty() {
            break orders;
        }
        assert!(Instant::now() < deadline, "metrics not in Prometheus within 60 s: {orders:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let value = |route: &str| {
        orders.iter().find(|s| s["metric"]["route"] == route).map(|s| s["value"][1].as_str().unwrap().to_owned())
    };
    assert_eq!((value("/checkout").as_deref(), value("/cart").as_deref()), (Some("42"), Some("3")), "{orders:?}");
    assert_eq!(prometheus.query("inventory_stock").await[0]["value"][1], "17");

    // Every log line in Loki, once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while loki.entries().len() < 20 {
        assert!(Instant::now() < deadline, "log lines not in Loki within 30 s: {}", loki.entries().len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lines: Vec<String> = loki.entries().into_iter().map(|(_, line, _)| line).collect();
    lines.sort();
    let mut sent: Vec<String> = (0..20).map(|i| format!("payment {i} processed")).collect();
    sent.sort();
    assert_eq!(lines, sent);

    drop(collector);
    to_loki.stop().await;
    to_prometheus.stop().await;
    sampler.stop().await;
}
