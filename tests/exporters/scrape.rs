//! The Prometheus scrape endpoint (`exporters.prometheus`) end to end: gateway → Apache Kafka → scrape exporters →
//! a real Prometheus scraping them with the seed's `prometheus.yml` (job `otel-collector`, no `honor_labels`, so the
//! data's `job` and `instance` become `exported_job` and `exported_instance`, as with the Collector), queried back
//! over its HTTP API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint, Sum,
};
use tailgate_exporters::scrape::ScrapeConfig;
use tailgate_exporters::{ExportersConfig, PROMETHEUS_SCRAPE};

use super::delivery::checkout_metrics;
use crate::harness::backends::Prometheus;
use crate::harness::otlp::{self, now_ns, service_resource};
use crate::harness::wait::until;
use crate::harness::{self, http};

fn scrape_config(port: u16) -> ExportersConfig {
    ExportersConfig {
        prometheus: Some(ScrapeConfig { endpoint: format!("127.0.0.1:{port}"), ..Default::default() }),
        ..Default::default()
    }
}

/// What the endpoint serves in the text format: each series (`name{labels}`) and its value.
async fn served(port: u16) -> BTreeMap<String, f64> {
    http::metrics(format!("127.0.0.1:{port}").parse().unwrap()).await
}

/// The inventory series `port` serves, by metric name (each name is one series).
async fn inventory_served(port: u16) -> BTreeMap<String, f64> {
    served(port)
        .await
        .into_iter()
        .filter(|(s, _)| s.starts_with("stock_level_") || s.starts_with("orders_placed_"))
        .map(|(s, v)| (s.split('{').next().unwrap().to_owned(), v))
        .collect()
}

fn gauge(name: &str, value: i64, time: u64) -> Metric {
    let point = NumberDataPoint {
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    };
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
        ..Default::default()
    }
}

fn delta(name: &str, value: i64, time: u64) -> Metric {
    let point = NumberDataPoint {
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    };
    let sum = Sum {
        data_points: vec![point],
        aggregation_temporality: AggregationTemporality::Delta as i32,
        is_monotonic: true,
    };
    Metric { name: name.into(), data: Some(metric::Data::Sum(sum)), ..Default::default() }
}

/// 20 gauges `stock.level.N` at `base + N` and 20 delta counters `orders.placed.N` of `increment` each: 40 series
/// on 40 metric names, so spread over every partition (the topic is keyed by resource, scope and name).
fn inventory(base: i64, increment: i64) -> ExportMetricsServiceRequest {
    let time = now_ns();
    let metrics = (0..20)
        .flat_map(|n| {
            [gauge(&format!("stock.level.{n}"), base + n, time), delta(&format!("orders.placed.{n}"), increment, time)]
        })
        .collect();
    otlp::metrics_request_with(service_resource("inventory"), None, metrics)
}

/// What the 40 inventory series should read: gauges at `base + N`, counters at `total`.
fn inventory_values(base: i64, total: i64) -> BTreeMap<String, f64> {
    (0..20)
        .flat_map(|n| {
            [(format!("stock_level_{n}"), (base + n) as f64), (format!("orders_placed_{n}_total"), total as f64)]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_kind_of_metric_with_the_seeds_config() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let port = harness::free_port();
    let mut exporters = scrape_config(port);
    let scrape = exporters.prometheus.as_mut().unwrap();
    // The seed's exporter section, and OpenMetrics, which Prometheus asks for first and parses strictly.
    scrape.resource_to_telemetry_conversion = true;
    scrape.enable_open_metrics = true;
    let exporter = harness::start_exporter(&exporters, &kafka, PROMETHEUS_SCRAPE).await;
    let prometheus = Prometheus::start_scraping(&[format!("127.0.0.1:{port}")]).await;

    let mut client = MetricsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let t0 = now_ns() - 20_000_000_000;
    client.export(checkout_metrics(t0, 3)).await.unwrap();
    client.export(checkout_metrics(t0 + 10_000_000_000, 2)).await.unwrap();

    // Delta sums accumulated: 3 then 3 + 2.
    until("Prometheus scraped cart_abandoned_total = 5", Duration::from_secs(60), || async {
        prometheus.query("cart_abandoned_total").await.first().map(Prometheus::value) == Some(5.0)
    })
    .await;
    let up = prometheus.query("up{job=\"otel-collector\"}").await;
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(Prometheus::value(&up[0]), 1.0, "the scrape succeeds: OpenMetrics parsed");

    // The target's job and instance, the data's as exported_*, every resource attribute as a label.
    let completed = prometheus.query("checkout_completed_total").await;
    assert_eq!(completed.len(), 1, "{completed:?}");
    let labels = &completed[0]["metric"];
    assert_eq!(labels["job"], "otel-collector");
    assert_eq!(labels["exported_job"], "shop/checkout");
    assert_eq!(labels["exported_instance"], "checkout-1");
    assert_eq!(labels["service_name"], "checkout");
    assert_eq!(labels["deployment_environment"], "test");
    assert_eq!(labels["payment_method"], "card");
    assert_eq!(labels["otel_scope_name"], "shop.checkout");
    assert_eq!(Prometheus::value(&completed[0]), 42.0);
    assert_eq!(Prometheus::value(&prometheus.query("cart_items").await[0]), 7.0);
    let info = prometheus.query("target_info").await;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0]["metric"]["deployment_environment"], "test");

    // Histogram buckets cumulative with +Inf = count; exponential histograms as classic buckets; summaries.
    let by_le = |results: Vec<serde_json::Value>| -> HashMap<String, f64> {
        results.iter().map(|b| (b["metric"]["le"].as_str().unwrap().to_owned(), Prometheus::value(b))).collect()
    };
    assert_eq!(
        by_le(prometheus.query("checkout_value_bucket").await),
        HashMap::from([("1000".into(), 1.0), ("5000".into(), 3.0), ("+Inf".into(), 6.0)])
    );
    assert_eq!(Prometheus::value(&prometheus.query("checkout_value_sum").await[0]), 27_000.0);
    assert_eq!(Prometheus::value(&prometheus.query("checkout_value_count").await[0]), 6.0);
    assert_eq!(
        by_le(prometheus.query("db_query_duration_seconds_bucket").await),
        HashMap::from([("0".into(), 1.0), ("2".into(), 3.0), ("4".into(), 6.0), ("+Inf".into(), 6.0)])
    );
    let quantiles = prometheus.query("payment_latency_milliseconds").await;
    assert_eq!(quantiles[0]["metric"]["quantile"], "0.99");
    assert_eq!(Prometheus::value(&quantiles[0]), 250.0);
    assert_eq!(Prometheus::value(&prometheus.query("payment_latency_milliseconds_count").await[0]), 10.0);

    // The families' types reached Prometheus (its metadata API), so Grafana knows a histogram from a gauge.
    let metadata = http::request(prometheus.addr, "GET", "/api/v1/metadata", &[], b"").await.json();
    let kind = |family: &str| metadata["data"][family][0]["type"].as_str().map(str::to_owned);
    assert_eq!(kind("checkout_value").as_deref(), Some("histogram"), "{metadata}");
    assert_eq!(kind("checkout_completed").as_deref(), Some("counter"), "{metadata}");
    assert_eq!(kind("payment_latency_milliseconds").as_deref(), Some("summary"), "{metadata}");
    assert_eq!(kind("cart_items").as_deref(), Some("gauge"), "{metadata}");

    // Without an Accept naming OpenMetrics, the text format 0.0.4.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let text = http::request(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(text.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let body = String::from_utf8(text.body).unwrap();
    assert!(body.contains("# TYPE checkout_completed_total counter\n"), "{body}");
    assert!(!body.contains("# EOF"), "{body}");

    exporter.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_serve_every_series_once_and_a_moved_partition_moves_its_series() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = MetricsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let (port_a, port_b) = (harness::free_port(), harness::free_port());
    let a = harness::start_exporter(&scrape_config(port_a), &kafka, PROMETHEUS_SCRAPE).await;
    client.export(inventory(0, 1)).await.unwrap();
    until("worker A serves all 40 series alone", Duration::from_secs(30), || async {
        inventory_served(port_a).await == inventory_values(0, 1)
    })
    .await;

    // B joins: the group splits the 4 partitions; each worker rebuilds its share from the look-back.
    let b = harness::start_exporter(&scrape_config(port_b), &kafka, PROMETHEUS_SCRAPE).await;
    let prometheus = Prometheus::start_scraping(&[format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}")]).await;
    until("A and B each serve a share, together every series once", Duration::from_secs(60), || async {
        let (a, b) = (inventory_served(port_a).await, inventory_served(port_b).await);
        let disjoint = a.keys().all(|k| !b.contains_key(k));
        let both_serve = !a.is_empty() && !b.is_empty();
        let union: BTreeMap<String, f64> = a.into_iter().chain(b).collect();
        both_serve && disjoint && union == inventory_values(0, 1)
    })
    .await;
    let expected = inventory_values(100, 2);
    client.export(inventory(100, 1)).await.unwrap();
    until("Prometheus holds each series once, from one of the two targets", Duration::from_secs(60), || async {
        let results = prometheus.query("{__name__=~\"stock_level_[0-9]+|orders_placed_[0-9]+_total\"}").await;
        let mut seen: BTreeMap<String, f64> = BTreeMap::new();
        let mut instances = BTreeSet::new();
        for result in &results {
            let name = result["metric"]["__name__"].as_str().unwrap().to_owned();
            instances.insert(result["metric"]["instance"].as_str().unwrap().to_owned());
            assert!(seen.insert(name.clone(), Prometheus::value(result)).is_none(), "{name} twice: {results:?}");
        }
        seen == expected && instances.len() == 2
    })
    .await;

    // B leaves: its partitions move to A, which rebuilds their series (delta sums included) from the look-back.
    b.stop().await;
    until("A serves every series again, with the totals of both rounds", Duration::from_secs(60), || async {
        inventory_served(port_a).await == expected
    })
    .await;
    client.export(inventory(200, 1)).await.unwrap();
    let expected = inventory_values(200, 3);
    until("A accumulates the next deltas onto the rebuilt totals", Duration::from_secs(30), || async {
        inventory_served(port_a).await == expected
    })
    .await;

    a.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_that_stop_updating_expire_and_are_not_rebuilt() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = MetricsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let port = harness::free_port();
    let mut exporters = scrape_config(port);
    exporters.prometheus.as_mut().unwrap().metric_expiration = tailgate_config::Duration::from_secs(3);
    let exporter = harness::start_exporter(&exporters, &kafka, PROMETHEUS_SCRAPE).await;
    let prometheus = Prometheus::start_scraping(&[format!("127.0.0.1:{port}")]).await;
    let request = |metrics| otlp::metrics_request_with(service_resource("inventory"), None, metrics);

    // Both sent until scraped: with a 3 s expiration, a point may expire while the worker is still joining.
    until("both gauges scraped", Duration::from_secs(30), || {
        let (mut client, prometheus) = (client.clone(), &prometheus);
        async move {
            client.export(request(vec![gauge("departed", 1, now_ns()), gauge("steady", 1, now_ns())])).await.unwrap();
            prometheus.query("departed").await.len() == 1 && prometheus.query("steady").await.len() == 1
        }
    })
    .await;
    // `steady` keeps updating, `departed` does not.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client.export(request(vec![gauge("steady", 2, now_ns())])).await.unwrap();
        let series = served(port).await;
        if !series.keys().any(|s| s.starts_with("departed")) {
            assert!(series.keys().any(|s| s.starts_with("steady")), "the updated series stays: {series:?}");
            break;
        }
        assert!(Instant::now() < deadline, "`departed` never expired: {series:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Prometheus sees it go (a staleness marker at the next scrape), while `steady` stays.
    until("Prometheus no longer returns the expired series", Duration::from_secs(30), || async {
        prometheus.query("departed").await.is_empty()
    })
    .await;
    assert_eq!(prometheus.query("steady").await.len(), 1);

    // A worker starting now reads only the look-back (metric_expiration): the expired series does not come back.
    exporter.stop().await;
    client.export(request(vec![gauge("steady", 3, now_ns())])).await.unwrap();
    let exporter = harness::start_exporter(&exporters, &kafka, PROMETHEUS_SCRAPE).await;
    until("the restarted worker serves `steady` again", Duration::from_secs(30), || async {
        served(port).await.keys().any(|s| s.starts_with("steady"))
    })
    .await;
    let series = served(port).await;
    assert!(!series.keys().any(|s| s.starts_with("departed")), "{series:?}");

    exporter.stop().await;
    gateway.stop().await;
}

/// A worker rebuilds from the look-back only, not from the group's position or the topic's start: a record older
/// than `look_back` is not read, even when its point would not have expired yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_reads_only_the_look_back() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = MetricsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let request = |metrics| otlp::metrics_request_with(service_resource("inventory"), None, metrics);
    let sent = Instant::now();
    client.export(request(vec![gauge("before_look_back", 1, now_ns())])).await.unwrap();
    // The record's age is the subject here: it must be older than the 10 s look-back when the worker starts, and
    // the next one younger when its partition is assigned (a 2 s look-back was shorter than a loaded machine's
    // group join, and the younger record was not read either).
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(sent.elapsed())).await;
    client.export(request(vec![gauge("within_look_back", 1, now_ns())])).await.unwrap();

    let port = harness::free_port();
    let mut exporters = scrape_config(port);
    let scrape = exporters.prometheus.as_mut().unwrap();
    scrape.look_back = Some(tailgate_config::Duration::from_secs(10));
    scrape.metric_expiration = tailgate_config::Duration::from_secs(600);
    let exporter = harness::start_exporter(&exporters, &kafka, PROMETHEUS_SCRAPE).await;
    until("the worker serves the record within the look-back", Duration::from_secs(30), || async {
        served(port).await.keys().any(|s| s.starts_with("within_look_back"))
    })
    .await;
    let series = served(port).await;
    assert!(!series.keys().any(|s| s.starts_with("before_look_back")), "read from before the look-back: {series:?}");

    exporter.stop().await;
    gateway.stop().await;
}

/// `exporters.prometheus.tls` with `client_ca_file`: the endpoint serves `/metrics` only to a scraper with a
/// certificate of that CA; without one, or in plaintext, nothing is served. (Before, the endpoint had no TLS: the
/// key did not exist and the plaintext request was answered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_only_scrapers_with_a_certificate_of_its_client_ca() {
    use crate::harness::certs::{self, Pki};
    let pki = Pki::new("scrape-mtls");
    let (ca, other_ca) = (pki.ca("ca"), pki.ca("other-ca"));
    let (server, scraper, stranger) = (pki.leaf(&ca, "server"), pki.leaf(&ca, "prometheus"), pki.leaf(&other_ca, "x"));
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let port = harness::free_port();
    let mut exporters = scrape_config(port);
    exporters.prometheus.as_mut().unwrap().tls = Some(tailgate_tls::ServerTlsConfig {
        cert_file: server.cert.clone(),
        key_file: server.key.clone(),
        client_ca_file: Some(ca.cert.clone()),
        min_version: Default::default(),
        reload_interval: tailgate_config::Duration::from_secs(10),
    });
    let exporter = harness::start_exporter(&exporters, &kafka, PROMETHEUS_SCRAPE).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = |tls| http::tls_request(addr, tls, "GET", "/metrics", &[], b"");

    let served = get(certs::client_config(&ca.cert, Some(&scraper))).await.expect("a scraper of the CA is served");
    assert_eq!(served.status, 200);
    assert!(get(certs::client_config(&ca.cert, None)).await.is_err(), "served without a client certificate");
    assert!(get(certs::client_config(&ca.cert, Some(&stranger))).await.is_err(), "served a stranger's certificate");
    let plaintext = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.map(|_| answer)
    };
    let plaintext: std::io::Result<Vec<u8>> = plaintext.await;
    assert!(!plaintext.is_ok_and(|answer| answer.starts_with(b"HTTP/")), "plaintext HTTP was answered");
    exporter.stop().await;
}

/// When the look-back start cannot be looked up (the broker refuses ListOffsets), a newly owned partition is read
/// from its end: before, it was read from the group's position — the start of the retention, since this exporter
/// commits nothing — and every delta the topic held was summed into the counter (600 here, before the new 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_look_back_lookup_reads_from_the_end_not_the_whole_retention() {
    use prost::Message as _;
    use rdkafka::producer::FutureRecord;
    let mock = harness::mock_cluster();
    let kafka = harness::mock_kafka(&mock, 1);
    let producer = harness::kafka::producer(&kafka.brokers);
    let write = |value: i64, time_ns: u64| {
        let (producer, topic) = (producer.clone(), kafka.topics.metrics.clone());
        async move {
            let request =
                otlp::metrics_request_with(service_resource("orders"), None, vec![delta("orders", value, time_ns)]);
            let headers = tailgate_kafka::contract_headers(tailgate_proto::headers::ENCODING_OTLP_PROTO);
            let payload = request.encode_to_vec();
            let record = FutureRecord::<[u8], [u8]>::to(&topic).partition(0).payload(&payload).headers(headers);
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("written");
        }
    };
    let hour_ago = now_ns() - 3_600_000_000_000;
    for (n, value) in [100, 200, 300].into_iter().enumerate() {
        write(value, hour_ago + n as u64 * 1_000_000_000).await;
    }
    // Every lookup of the look-back start refused: the exporter tries three times.
    let refused = [rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 3];
    mock.request_errors(rdkafka::types::RDKafkaApiKey::ListOffsets, &refused);

    let port = harness::free_port();
    let exporter = harness::start_exporter(&scrape_config(port), &kafka, PROMETHEUS_SCRAPE).await;
    // The partition is assigned some time after start: a new delta is written until one is served. Each is 1, so
    // the total is at most the writes made, never the retention's 600.
    until("the exporter serves a delta written after it started", Duration::from_secs(30), || async {
        write(1, now_ns()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        served(port).await.keys().any(|s| s.starts_with("orders_total"))
    })
    .await;
    let series = served(port).await;
    let total = series.iter().find(|(s, _)| s.starts_with("orders_total")).map(|(_, v)| *v).unwrap();
    assert!(total < 100.0, "the retention's deltas were summed: orders_total = {total}");
    exporter.stop().await;
}

/// `exporters.prometheus.auth`: a scraper without the bearer token (or with another) is answered 401, one with it
/// is served. Before, the endpoint had no credentials of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_only_scrapers_with_its_bearer_token() {
    let dir = harness::temp_dir("scrape-auth");
    let token = dir.join("token");
    std::fs::write(&token, "scrape-T0KEN\n").unwrap();
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let port = harness::free_port();
    let mut exporters = scrape_config(port);
    exporters.prometheus.as_mut().unwrap().auth = Some(tailgate_tls::ScrapeAuth {
        bearer_token: Some(tailgate_config::SecretSource { file: Some(token), env: None }),
        basic: None,
    });
    let exporter = harness::start_exporter(&exporters, &kafka, PROMETHEUS_SCRAPE).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let status = |headers: &'static [(&'static str, &'static str)]| async move {
        http::request(addr, "GET", "/metrics", headers, b"").await.status
    };
    assert_eq!(status(&[]).await, 401);
    assert_eq!(status(&[("Authorization", "Bearer wrong")]).await, 401);
    assert_eq!(status(&[("Authorization", "Bearer scrape-T0KEN")]).await, 200);
    exporter.stop().await;
}
