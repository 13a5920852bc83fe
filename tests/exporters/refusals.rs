//! What the exporters do when a backend refuses part of what they send, or refuses them: only what the backend
//! would never take is dropped (and counted exactly), and refused credentials are an outage, not bad data.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use tailgate_exporters::loki::LokiConfig;
use tailgate_exporters::prometheus::PrometheusConfig;
use tailgate_exporters::ExportersConfig;

use crate::harness::backends::{LokiReceiver, Prometheus};
use crate::harness::otlp::now_ns;
use crate::harness::otlp::{kv, logs_request, service_resource as resource};
use crate::harness::{self, eventually};

/// Gauge `queue.depth` with one point per `(series, value, time)`; `series` is the `queue` attribute.
fn gauges(points: &[(&str, i64, u64)]) -> ExportMetricsServiceRequest {
    let data_points = points
        .iter()
        .map(|(queue, value, time)| NumberDataPoint {
            attributes: vec![kv("queue", queue)],
            time_unix_nano: *time,
            value: Some(number_data_point::Value::AsInt(*value)),
            ..Default::default()
        })
        .collect();
    let metric = Metric {
        name: "queue.depth".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("worker"),
            scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// Prometheus rolls back a whole remote-write request for one out-of-order sample and answers 400; the exporter
/// cuts the request down until only that sample is left out, so a fresh series sent beside it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_out_of_order_sample_does_not_cost_prometheus_the_rest_of_the_request() {
    let prometheus = Prometheus::start().await;
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let exporters = ExportersConfig {
        prometheus_remote_write: Some(PrometheusConfig {
            endpoint: prometheus.endpoint(),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::PROMETHEUS).await;
    let mut client = MetricsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let t = now_ns() - 10_000_000_000;

    // Series A is stored at t.
    client.export(gauges(&[("a", 1, t)])).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || exporter.delivered() == 1).await, "{:?}", exporter.stats);
    assert_eq!(prometheus.query("queue_depth{queue=\"a\"}").await.len(), 1);

    // One record, so one request: A 5 s before what Prometheus has (out of order), and B, new.
    client.export(gauges(&[("a", 2, t - 5_000_000_000), ("b", 3, t)])).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || exporter.delivered() == 2).await, "{:?}", exporter.stats);
    let b = prometheus.query("queue_depth{queue=\"b\"}").await;
    assert_eq!(b.len(), 1, "B is stored: {b:?}");
    assert_eq!(Prometheus::value(&b[0]), 3.0);
    assert_eq!(exporter.stats.items_rejected.load(Ordering::SeqCst), 1, "exactly A's old sample refused");
    assert_eq!(exporter.stats.items_delivered.load(Ordering::SeqCst), 3, "A and target_info at t, then B");
    assert_eq!(exporter.stats.records_dead_lettered.load(Ordering::SeqCst), 0);
    assert_eq!(
        Prometheus::value(&prometheus.query("queue_depth{queue=\"a\"}").await[0]),
        1.0,
        "A keeps its stored sample"
    );

    exporter.stop().await;
    gateway.stop().await;
}

/// A 401 (or 403) says the backend refuses our credentials, not that the data is bad: it is an outage — retried
/// with back-off, `backend_up` 0 — and once the credentials are accepted everything is delivered, nothing
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_an_outage_not_bad_data() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let loki = LokiReceiver::start().await;
    let exporters = ExportersConfig {
        loki: Some(LokiConfig {
            endpoint: loki.endpoint(),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    loki.script([(401, None, "no org id"), (403, None, "forbidden"), (401, None, "bad token")]);
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    let mut client = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let lines: Vec<LogRecord> = (0..5).map(log_line).collect();
    client.export(logs_request("cart", lines)).await.unwrap();

    assert!(eventually(Duration::from_secs(30), || exporter.delivered() == 1).await, "{:?}", exporter.stats);
    let stored: BTreeSet<String> = loki.entries().into_iter().map(|e| e.1).collect();
    assert_eq!(stored, (0..5).map(|n| format!("line {n}")).collect::<BTreeSet<_>>(), "every line delivered");
    assert_eq!(exporter.stats.records_dead_lettered.load(Ordering::SeqCst), 0, "nothing dead-lettered");
    assert_eq!(exporter.stats.items_rejected.load(Ordering::SeqCst), 0);
    assert_eq!(loki.state.lock().unwrap().attempts.len(), 4, "three refusals, then accepted");
    assert_eq!(exporter.health.retries.load(Ordering::SeqCst), 3, "each refusal was retried");
    let failure = exporter.health.last_failure().unwrap_or_default();
    assert!(failure.contains("credentials refused"), "the outage says why: {failure}");
    assert!(exporter.health.down_since().is_none(), "up again once accepted");

    exporter.stop().await;
    gateway.stop().await;
}

fn log_line(n: u32) -> LogRecord {
    LogRecord {
        time_unix_nano: now_ns(),
        severity_number: 9,
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(format!("line {n}"))) }),
        ..Default::default()
    }
}
