//! Exporter benchmark: CPU-seconds per million spans, samples and log lines for the work an exporter worker does
//! per record — decode the OTLP record, translate it for the backend (Prometheus names, labels and buckets; Loki
//! streams and structured metadata), batch, and encode the request body (snappy for Prometheus and Loki) — against
//! the raw floor of the same records in the same run: decode, re-encode as is (and snappy where the protocol needs
//! it). Kafka and the network are left out on both sides. Prints figures; asserts nothing.
//!
//! Usage: cargo bench --bench exporters [-- ITEMS]   (default 1,000,000 items per case)

use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tailgate_exporters::loki::LokiConfig;
use tailgate_exporters::prometheus::PrometheusConfig;
use tailgate_exporters::{jaeger, loki::Loki, prometheus::Prometheus, Backend};

mod cpu;
// Shared with the integration tests; this bench builds only some of its requests.
#[allow(dead_code)]
#[path = "../harness/otlp.rs"]
mod otlp;

use otlp::kv;

/// A production resource: more attributes than the tests' `otlp::service_resource`, as the backends see them.
fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.namespace", "shop"),
            kv("service.instance.id", &format!("{service}-7d9f")),
            kv("deployment.environment", "production"),
            kv("host.name", "node-14"),
        ],
        ..Default::default()
    })
}

/// Records of 500 spans of ~300 B.
fn span_records(items: usize) -> (Vec<Vec<u8>>, usize) {
    let per = 500;
    let records = (0..items / per)
        .map(|r| {
            let spans = (0..per)
                .map(|s| {
                    let n = (r * per + s) as u64;
                    Span {
                        trace_id: (n / 5).to_be_bytes().repeat(2),
                        span_id: n.to_be_bytes().to_vec(),
                        name: "POST /checkout".into(),
                        start_time_unix_nano: 1_700_000_000_000_000_000 + n,
                        end_time_unix_nano: 1_700_000_000_050_000_000 + n,
                        attributes: vec![
                            kv("http.route", "/checkout"),
                            kv("http.request.method", "POST"),
                            kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"),
                            kv("order.id", &format!("order-{n:012}")),
                        ],
                        ..Default::default()
                    }
                })
                .collect();
            otlp::trace_request_with(resource("checkout"), spans).encode_to_vec()
        })
        .collect();
    (records, items / per * per)
}

/// Records of one resource's metrics: 20 counters × 5 attribute sets, and 4 histograms × 5 sets with 10 bounds
/// (13 samples each), as an SDK exports them every interval.
fn metric_records(target_samples: usize) -> (Vec<Vec<u8>>, usize) {
    let per_record = 20 * 5 + 4 * 5 * 13;
    let records = (0..target_samples / per_record)
        .map(|r| {
            let time = 1_700_000_000_000_000_000 + r as u64 * 1_000_000_000;
            let sets =
                |m: usize| (0..5).map(move |a| vec![kv("http.route", &format!("/r{a}")), kv("m", &m.to_string())]);
            let mut metrics: Vec<Metric> = (0..20)
                .map(|m| Metric {
                    name: format!("shop.requests.{m}"),
                    unit: "{request}".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: sets(m)
                            .map(|attributes| NumberDataPoint {
                                attributes,
                                time_unix_nano: time,
                                value: Some(number_data_point::Value::AsInt(r as i64)),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                })
                .collect();
            metrics.extend((0..4).map(|m| {
                Metric {
                    name: format!("shop.latency.{m}"),
                    unit: "ms".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: sets(m)
                            .map(|attributes| HistogramDataPoint {
                                attributes,
                                time_unix_nano: time,
                                count: 100,
                                sum: Some(1234.0),
                                bucket_counts: vec![10; 11],
                                explicit_bounds: vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                }
            }));
            otlp::metrics_request_with(resource("checkout"), None, metrics).encode_to_vec()
        })
        .collect();
    (records, target_samples / per_record * per_record)
}

/// Records of 200 log lines of ~120 B with trace context and two attributes.
fn log_records(items: usize) -> (Vec<Vec<u8>>, usize) {
    let per = 200;
    let records = (0..items / per)
        .map(|r| {
            let log_records = (0..per)
                .map(|l| {
                    let n = (r * per + l) as u64;
                    LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + n * 1000,
                        severity_number: if n % 50 == 0 { 17 } else { 9 },
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "reserved stock for order order-{n:012}: 3 items from warehouse eu-west-1 in 12 ms"
                            ))),
                        }),
                        attributes: vec![kv("order.id", &format!("order-{n:012}")), kv("code.function", "reserve")],
                        trace_id: (n / 5).to_be_bytes().repeat(2),
                        span_id: n.to_be_bytes().to_vec(),
                        ..Default::default()
                    }
                })
                .collect();
            otlp::logs_request_with(resource("inventory"), log_records).encode_to_vec()
        })
        .collect();
    (records, items / per * per)
}

/// Runs `records` through `backend` in batches of ~8192 items, as the worker does. Returns CPU-seconds.
fn tailgate<B: Backend>(mut backend: B, records: &[Vec<u8>]) -> (f64, f64, usize) {
    let (cpu, wall) = (cpu::this_process(), Instant::now());
    let mut items = B::Items::default();
    let (mut count, mut bytes) = (0u64, 0usize);
    for record in records {
        count += backend.add(&mut items, 0, &None, record).expect("valid record").items;
        if count >= 8192 {
            bytes += backend.encode(std::mem::take(&mut items)).len();
            count = 0;
        }
    }
    bytes += backend.encode(items).len();
    (cpu::this_process() - cpu, wall.elapsed().as_secs_f64(), bytes)
}

/// The floor: decode each record, encode it again, and snappy it where the protocol needs it.
fn raw<M: Message + Default>(records: &[Vec<u8>], snappy: bool) -> (f64, f64) {
    let (cpu, wall) = (cpu::this_process(), Instant::now());
    let mut total = 0usize;
    for record in records {
        let decoded = M::decode(record.as_slice()).unwrap();
        let encoded = decoded.encode_to_vec();
        total += if snappy { snap::raw::Encoder::new().compress_vec(&encoded).unwrap().len() } else { encoded.len() };
    }
    std::hint::black_box(total);
    (cpu::this_process() - cpu, wall.elapsed().as_secs_f64())
}

fn report(what: &str, unit: &str, items: usize, raw: (f64, f64), ours: (f64, f64, usize)) {
    let per_million = |cpu: f64| cpu * 1e6 / items as f64;
    println!(
        "| {what} | {items} {unit} | {:.2} | {:.2} | {:.0} | {:.2} | {:.1} MiB |",
        per_million(raw.0),
        per_million(ours.0),
        items as f64 / ours.0.max(1e-9),
        ours.0 / raw.0.max(1e-9),
        ours.2 as f64 / (1 << 20) as f64,
    );
}

fn main() {
    let items: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    println!("| exporter | items | raw CPU-s per 1M | tailgate CPU-s per 1M | items per CPU-second | ratio to raw | request bytes |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");

    let (records, n) = span_records(items);
    let floor = raw::<ExportTraceServiceRequest>(&records, false);
    report("jaeger (OTLP/gRPC)", "spans", n, floor, tailgate(jaeger::backend(), &records));

    let (records, n) = metric_records(items);
    let floor = raw::<ExportMetricsServiceRequest>(&records, true);
    let prometheus = Prometheus::new(PrometheusConfig { endpoint: "http://x".into(), ..Default::default() });
    report("prometheus remote-write", "samples", n, floor, tailgate(prometheus, &records));

    let (records, n) = log_records(items);
    let floor = raw::<ExportLogsServiceRequest>(&records, true);
    let loki = Loki::new(LokiConfig { endpoint: "http://x".into(), ..Default::default() });
    report("loki push", "lines", n, floor, tailgate(loki, &records));
}
