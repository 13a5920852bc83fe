//! The exact service graph from the loadgen's checkout flow, against Apache Kafka: every call of every trace counted once,
//! with one sampler worker and with two, read back from the metrics topic as a backend would add it up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use tailgate_exporters::prometheus::{metric_name, Kind};
use tailgate_sampler::service_graph::{FAILED, REQUESTS, SERVER_SECONDS};
use tailgate_sampler::SamplerConfig;

use crate::harness::{self, binary, eventually, topic};

type Edge = (String, String, String);

/// The latest cumulative value of each series of `name`, added up by edge (client, server, connection type), as
/// `sum by (client, server)` does over the series of every worker and partition.
fn edges(records: &[harness::Record], name: &str) -> BTreeMap<Edge, i64> {
    let mut latest: HashMap<(String, Edge), i64> = HashMap::new();
    for record in records {
        let Ok(request) = ExportMetricsServiceRequest::decode(record.value.as_slice()) else { continue };
        for rm in request.resource_metrics {
            let instance = format!("{:?}", rm.resource);
            for metric in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                let (true, Some(metric::Data::Sum(sum))) = (metric.name == name, metric.data) else { continue };
                for point in sum.data_points {
                    let get = |key: &str| {
                        point
                            .attributes
                            .iter()
                            .find(|kv| kv.key == key)
                            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                any_value::Value::StringValue(s) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default()
                    };
                    let edge = (get("client"), get("server"), get("connection_type"));
                    let Some(number_data_point::Value::AsInt(value)) = point.value else { continue };
                    let entry = latest.entry((instance.clone(), edge)).or_insert(0);
                    *entry = (*entry).max(value);
                }
            }
        }
    }
    let mut summed = BTreeMap::new();
    for ((_, edge), value) in latest {
        *summed.entry(edge).or_insert(0) += value;
    }
    summed
}

fn edge(client: &str, server: &str, connection_type: &str) -> Edge {
    (client.to_owned(), server.to_owned(), connection_type.to_owned())
}

/// Runs 200 checkouts (seed 7, a fifth failing in payments) through `workers` samplers; the graph's requests and
/// failed calls by edge, and the number of failed checkouts.
async fn graph_with(workers: usize) -> (BTreeMap<Edge, i64>, BTreeMap<Edge, i64>, i64) {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let config = SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(1),
        red_metrics: tailgate_sampler::red::RedMetricsConfig {
            interval: tailgate_config::Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut samplers = Vec::new();
    for _ in 0..workers {
        samplers.push(harness::start_sampler(&config, &kafka, "sampler").await);
    }
    // Traffic only once the group has settled: a partition moving mid-run is read again by its next owner, and
    // what is re-read is counted again (at least once, as the RED metrics).
    let settled = eventually(Duration::from_secs(60), || {
        let owned: Vec<u64> = samplers.iter().map(|s| s.stats.owned_partitions.load(Ordering::SeqCst)).collect();
        owned.iter().sum::<u64>() == 4 && owned.iter().all(|o| *o > 0)
    })
    .await;
    assert!(settled, "the {workers} workers share the 4 partitions");

    let endpoint = gateway.grpc_url().trim_start_matches("http://").to_owned();
    let output = tokio::task::spawn_blocking(move || {
        binary::tailgate()
            .args(["loadgen", "--endpoint", &endpoint, "--rate", "100", "--duration", "2s", "--error-rate", "0.2"])
            .args(["--slow-rate", "0", "--seed", "7"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(stdout.contains("loadgen done: 200 checkouts"), "{stdout}");

    // The failed checkouts, from the spans themselves.
    let spans = harness::read_topic(&kafka.brokers, &kafka.topics.spans, 4, Duration::from_secs(30), |r| {
        topic::count_spans(r) >= 200 * tailgate::loadgen::SPANS_PER_TRACE as usize
    });
    let failed: BTreeSet<Vec<u8>> = topic::spans(&spans)
        .into_iter()
        .filter(|(_, s)| s.status.as_ref().is_some_and(|s| s.code == 2))
        .map(|(_, s)| s.trace_id)
        .collect();
    let failed = failed.len() as i64;
    // The loadgen's own count of failed checkouts (`(N errors, …)`) is what the spans show.
    let reported: i64 = stdout
        .lines()
        .find(|line| line.starts_with("loadgen done:"))
        .and_then(|done| done.split(" errors").next())
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("the loadgen reports its errors");
    assert_eq!(failed, reported, "{stdout}");

    let mut result = (BTreeMap::new(), BTreeMap::new());
    let complete = eventually(Duration::from_secs(60), || {
        let records = harness::read_topic(&kafka.brokers, &kafka.topics.metrics, 4, Duration::from_secs(2), |_| false);
        result = (edges(&records, REQUESTS), edges(&records, FAILED));
        result.0.values().all(|n| *n >= 200) && result.0.len() >= 6
    })
    .await;
    assert!(complete, "{workers} worker(s): {result:?}");
    for sampler in samplers {
        sampler.stop().await;
    }
    gateway.stop().await;
    (result.0, result.1, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_flows_graph_is_exact_with_one_worker_and_with_two() {
    let (requests, failed, failed_checkouts) = graph_with(1).await;
    assert!(failed_checkouts > 0, "seed 7 at a 20% error rate draws failed checkouts");
    // The gateway calls five services; inventory queries PostgreSQL: 200 calls on each edge, the payments calls of
    // the failed checkouts failed, no other.
    let expected: BTreeMap<Edge, i64> = [
        edge("gateway", "cart", ""),
        edge("gateway", "inventory", ""),
        edge("gateway", "payments", ""),
        edge("gateway", "notifications", ""),
        edge("gateway", "shipping", ""),
        edge("inventory", "postgresql", "database"),
    ]
    .into_iter()
    .map(|e| (e, 200))
    .collect();
    assert_eq!(requests, expected);
    let expected_failed: BTreeMap<Edge, i64> =
        expected.keys().map(|e| (e.clone(), if e.1 == "payments" { failed_checkouts } else { 0 })).collect();
    assert_eq!(failed, expected_failed);

    // Two workers add up to the same graph, call for call.
    let (requests_2, failed_2, failed_checkouts_2) = graph_with(2).await;
    assert_eq!(failed_checkouts_2, failed_checkouts, "the same seed draws the same checkouts");
    assert_eq!((requests_2, failed_2), (requests, failed));

    // In the names Grafana's service graph reads.
    assert_eq!(metric_name(REQUESTS, "", Kind::Counter).unwrap(), "traces_service_graph_request_total");
    assert_eq!(metric_name(FAILED, "", Kind::Counter).unwrap(), "traces_service_graph_request_failed_total");
    assert_eq!(
        metric_name(SERVER_SECONDS, "s", Kind::Histogram).unwrap(),
        "traces_service_graph_request_server_seconds"
    );
}
