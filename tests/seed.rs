//! The seed's pipeline side by side: its own Collector YAML (`tests/collector/seed.yaml`: the seed's Step 1, only
//! its endpoints changed) run by the real Collector, and `deploy/seed.yaml` run by Tailgate (`all-in-one` on Apache
//! Kafka), fed the same spans, metric points and log records by one OpenTelemetry SDK client. Compared as a team
//! migrating would: the traces each Jaeger holds, the series each `:8889` serves, the lines each Loki receives.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::harness::backends::LokiReceiver;
use crate::harness::collector::Collector;
use crate::harness::jaeger::Jaeger;
use crate::harness::processes::{Process, Ready};
use crate::harness::{self, free_port, http, python, python_script, sampling, temp_dir};

const CHECKOUTS: usize = 60;

/// The series of the metric families named that `127.0.0.1:{port}/metrics` serves, with their values.
async fn series(port: u16, families: &[&str]) -> BTreeMap<String, f64> {
    let mut all = http::metrics(format!("127.0.0.1:{port}").parse().unwrap()).await;
    all.retain(|series, _| families.iter().any(|family| series.starts_with(family)));
    all
}

/// Label names and values of one series, sorted; a label with an empty value is no label (as Prometheus stores it).
fn labels(series: &str) -> (String, BTreeSet<String>) {
    let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
    let labels = rest.trim_end_matches('}');
    let mut set = BTreeSet::new();
    // Values here hold no `,` or `"` escapes.
    for pair in labels.split("\",") {
        let pair = pair.trim_end_matches('"').replace('"', "");
        if !pair.is_empty() && !pair.ends_with('=') {
            set.insert(pair);
        }
    }
    (name.to_owned(), set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_pipeline_side_by_side() {
    let (jaeger_collector, jaeger_tailgate) = (Jaeger::start().await, Jaeger::start().await);
    let (loki_collector, loki_tailgate) = (LokiReceiver::start().await, LokiReceiver::start().await);

    // The Collector, with the seed's own configuration.
    let (collector_grpc, collector_scrape) = (free_port(), free_port());
    let _collector = Collector::start(
        "seed.yaml",
        &[
            ("OTLP_GRPC", format!("127.0.0.1:{collector_grpc}")),
            ("OTLP_HTTP", format!("127.0.0.1:{}", free_port())),
            ("JAEGER_OTLP_GRPC_ENDPOINT", jaeger_collector.otlp_grpc.to_string()),
            ("PROMETHEUS_SCRAPE_ENDPOINT", format!("127.0.0.1:{collector_scrape}")),
            ("LOKI_OTLP_ENDPOINT", format!("http://{}/otlp", loki_collector.addr)),
        ],
    )
    .await;

    // Tailgate, with deploy/seed.yaml: every role in one process, on Apache Kafka.
    let kafka = harness::kafka_config(&harness::apache_kafka(), 3);
    let (tailgate_grpc, tailgate_scrape, telemetry) = (free_port(), free_port(), free_port());
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/seed.yaml")).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&seed).unwrap();
    let kafka_section: serde_yaml::Value = serde_yaml::from_str(&harness::kafka::kafka_yaml(&kafka)).unwrap();
    config["kafka"] = kafka_section["kafka"].clone();
    config["embedded_broker"] = serde_yaml::from_str("{ enabled: false }").unwrap();
    config["ingest"]["grpc"]["endpoint"] = format!("127.0.0.1:{tailgate_grpc}").into();
    config["ingest"]["http"]["endpoint"] = format!("127.0.0.1:{}", free_port()).into();
    config["exporters"]["jaeger"]["endpoint"] = format!("http://{}", jaeger_tailgate.otlp_grpc).into();
    config["exporters"]["prometheus"]["endpoint"] = format!("127.0.0.1:{tailgate_scrape}").into();
    config["exporters"]["loki"]["endpoint"] = loki_tailgate.endpoint().into();
    config["telemetry"]["metrics"]["endpoint"] = format!("127.0.0.1:{telemetry}").into();
    let telemetry = format!("127.0.0.1:{telemetry}").parse().unwrap();
    let config = serde_yaml::to_string(&config).unwrap();
    let mut tailgate = Process::new(&temp_dir("seed"), "seed", "all-in-one", &config, Ready::Health(telemetry));
    tailgate.start().await;

    // One SDK client, every item to both.
    let output = python()
        .arg(python_script("side_by_side.py"))
        .arg(format!("http://127.0.0.1:{collector_grpc}"))
        .arg(format!("http://127.0.0.1:{tailgate_grpc}"))
        .arg(CHECKOUTS.to_string())
        .output()
        .unwrap();
    assert!(output.status.success(), "the SDK client failed: {}", String::from_utf8_lossy(&output.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids = |key: &str| -> Vec<Vec<u8>> {
        sent[key].as_array().unwrap().iter().map(|id| hex::decode(id.as_str().unwrap()).unwrap()).collect()
    };
    let (errors, slow, rest) = (ids("errors"), ids("slow"), ids("rest"));

    // Traces: both keep every error and every slow trace, whole.
    let deadline = Instant::now() + Duration::from_secs(90);
    for (name, jaeger) in [("Collector", &jaeger_collector), ("Tailgate", &jaeger_tailgate)] {
        for id in errors.iter().chain(&slow) {
            loop {
                let trace = jaeger.trace(id).await;
                if trace.as_ref().is_some_and(|t| t.spans.len() == 6) {
                    break;
                }
                let services = jaeger.services().await;
                assert!(
                    Instant::now() < deadline,
                    "{name}: {} not whole within 90 s: {trace:?}; {services:?}",
                    hex::encode(id)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    // Of the rest, both keep exactly those the probabilistic policy's hash of the trace ID keeps (the Collector's
    // hash), whole, and no other.
    let hashed: BTreeSet<&Vec<u8>> = rest.iter().filter(|id| sampling::probabilistic_keeps(id, 10.0)).collect();
    for (name, jaeger) in [("Collector", &jaeger_collector), ("Tailgate", &jaeger_tailgate)] {
        for id in &hashed {
            loop {
                let trace = jaeger.trace(id).await;
                if trace.as_ref().is_some_and(|t| t.spans.len() == 6) {
                    break;
                }
                assert!(Instant::now() < deadline, "{name}: {} (hashed) not whole within 90 s", hex::encode(id));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        // A moment more: a trace kept wrongly would have been exported with the others.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut kept = BTreeSet::new();
        for id in &rest {
            if jaeger.trace(id).await.is_some() {
                kept.insert(id);
            }
        }
        assert_eq!(kept, hashed, "{name}: of the {} other traces, those the hash keeps", rest.len());
    }
    eprintln!("of {} other traces, both kept the {} the hash keeps", rest.len(), hashed.len());

    // Metrics: what each `:8889` serves for the SDK's two instruments.
    let families = ["checkout_orders", "payment_amount"];
    let deadline = Instant::now() + Duration::from_secs(60);
    let (from_collector, from_tailgate) = loop {
        let (c, t) = (series(collector_scrape, &families).await, series(tailgate_scrape, &families).await);
        if !c.is_empty() && c.len() == t.len() {
            break (c, t);
        }
        assert!(Instant::now() < deadline, "series: Collector {c:#?}, Tailgate {t:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let shapes = |series: &BTreeMap<String, f64>| -> BTreeMap<(String, BTreeSet<String>), String> {
        series.iter().map(|(s, v)| (labels(s), v.to_string())).collect()
    };
    let (tailgate_shapes, collector_shapes) = (shapes(&from_tailgate), shapes(&from_collector));
    let only = |a: &BTreeMap<(String, BTreeSet<String>), String>, b: &BTreeMap<(String, BTreeSet<String>), String>| {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| format!("{} {:?} = {v}", k.0, k.1))
            .collect::<Vec<_>>()
    };
    assert!(
        tailgate_shapes == collector_shapes,
        "series only Tailgate serves:\n{}\nseries only the Collector serves:\n{}",
        only(&tailgate_shapes, &collector_shapes).join("\n"),
        only(&collector_shapes, &tailgate_shapes).join("\n")
    );

    // Logs: the same lines.
    let mut lines_sent: Vec<String> =
        sent["logs"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().into()).collect();
    lines_sent.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let collector_lines: usize = loki_collector
            .state
            .lock()
            .unwrap()
            .otlp
            .iter()
            .flat_map(|p| &p.request.resource_logs)
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        if collector_lines >= CHECKOUTS && loki_tailgate.entries().len() >= CHECKOUTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log lines: Collector {collector_lines}, Tailgate {}",
            loki_tailgate.entries().len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut tailgate_lines: Vec<String> = loki_tailgate.entries().into_iter().map(|(_, line, _)| line).collect();
    tailgate_lines.sort();
    assert_eq!(tailgate_lines, lines_sent, "Tailgate's Loki lines");
    let mut collector_lines: Vec<String> = loki_collector
        .state
        .lock()
        .unwrap()
        .otlp
        .iter()
        .flat_map(|p| &p.request.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .map(|l| match l.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(line)) => line.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    collector_lines.sort();
    assert_eq!(collector_lines, lines_sent, "the Collector's Loki lines");
    // Streams: Tailgate pushes with labels of its own choosing (README, "Loki"); the Collector sends OTLP and Loki
    // picks the labels (its default `otlp_config`). Listed for the README's migration section.
    let streams: BTreeSet<String> = loki_tailgate.entries().into_iter().map(|(labels, ..)| labels).collect();
    eprintln!("Tailgate's Loki streams: {streams:?}");

    tailgate.stop();
}
