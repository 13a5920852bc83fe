//! Gateway throughput benchmark: CPU-seconds per million spans, OTLP/gRPC in → Kafka acknowledged, against the raw
//! path (decode, compress, produce) on the same bytes, in the same run. Prints figures; asserts nothing.
//!
//! `tailgate all-in-one` runs as a child process (gateway plus embedded Tansu); the gateway's CPU is that
//! process's CPU minus the broker's threads, read from /proc. The load generator runs here and is not counted.
//! The raw path runs in this process: decode each request (as any receiver must), then produce its bytes as one
//! record with the same producer settings (lz4, idempotent, acks=all) and wait for the acks.
//!
//! Usage: cargo bench --bench ingest [-- SPANS]   (default 200000 spans per size)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const SPANS_PER_REQUEST: usize = 500;
const CONCURRENCY: usize = 8;

mod cpu;
#[path = "../harness/local.rs"]
mod local;
// Shared with the integration tests; this bench builds only some of its requests.
#[allow(dead_code)]
#[path = "../harness/otlp.rs"]
mod otlp;

use cpu::cpu_seconds;
use otlp::kv;

/// Requests of `SPANS_PER_REQUEST` spans of about `span_bytes` each, 5 spans per trace.
fn requests(total_spans: usize, span_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut n: u64 = 0;
    while out.len() * SPANS_PER_REQUEST < total_spans {
        let spans: Vec<Span> = (0..SPANS_PER_REQUEST)
            .map(|_| {
                n += 1;
                let trace = ((n / 5) as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) + 1;
                let mut span = Span {
                    trace_id: trace.to_be_bytes().to_vec(),
                    span_id: n.to_be_bytes().to_vec(),
                    parent_span_id: (n - 1).to_be_bytes().to_vec(),
                    name: "SELECT inventory.stock".to_owned(),
                    kind: 3,
                    start_time_unix_nano: 1_700_000_000_000_000_000 + n,
                    end_time_unix_nano: 1_700_000_000_020_000_000 + n,
                    attributes: vec![kv("db.system", "postgresql"), kv("http.route", "/checkout")],
                    ..Default::default()
                };
                let pad = span_bytes.saturating_sub(span.encoded_len() + 20);
                span.attributes.push(kv("db.statement", &"x".repeat(pad)));
                span
            })
            .collect();
        let resource = Resource {
            attributes: vec![kv("service.name", "inventory"), kv("service.namespace", "shop")],
            ..Default::default()
        };
        out.push(otlp::trace_request_with(Some(resource), spans).encode_to_vec());
    }
    out
}

struct AllInOne {
    child: Child,
    grpc: String,
    kafka: String,
}

fn start_all_in_one(dir: &std::path::Path) -> AllInOne {
    let (kafka, grpc, http, metrics) = (local::free_port(), local::free_port(), local::free_port(), local::free_port());
    let config = dir.join("bench.yaml");
    std::fs::write(
        &config,
        format!(
            "embedded_broker: {{ listen: 127.0.0.1:{kafka}, data_dir: {} }}\nkafka: {{ partitions: 12 }}\n\
             ingest: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http} }} }}\n\
             telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }}, logs: {{ level: warn }} }}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let binary = std::env::var("TAILGATE_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("tailgate").display().to_string()
    });
    let child = Command::new(&binary)
        .args(["all-in-one", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}; build it with cargo build --release"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(Instant::now() < deadline, "all-in-one did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    AllInOne { child, grpc: format!("http://127.0.0.1:{grpc}"), kafka: format!("127.0.0.1:{kafka}") }
}

async fn tailgate_path(aio: &AllInOne, bodies: &[Vec<u8>]) -> (f64, f64) {
    let decoded: Vec<ExportTraceServiceRequest> =
        bodies.iter().map(|b| ExportTraceServiceRequest::decode(b.as_slice()).unwrap()).collect();
    let client = TraceServiceClient::connect(aio.grpc.clone()).await.unwrap();
    let pid = aio.child.id();
    let broker = ["tansu-broker", "embedded-broke"];
    let cpu_before = cpu_seconds(pid, &broker);
    let started = Instant::now();
    let chunks: Vec<Vec<ExportTraceServiceRequest>> =
        decoded.chunks(decoded.len().div_ceil(CONCURRENCY)).map(|c| c.to_vec()).collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for request in chunk {
                    loop {
                        match client.export(request.clone()).await {
                            Ok(_) => break,
                            Err(status) => {
                                eprintln!("retrying after {:?}: {}", status.code(), status.message());
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (started.elapsed().as_secs_f64(), cpu_seconds(pid, &broker) - cpu_before)
}

async fn raw_path(aio: &AllInOne, bodies: &[Vec<u8>]) -> (f64, f64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &aio.kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    // Warm up the connection outside the measurement.
    producer
        .send(FutureRecord::<(), _>::to("otlp_spans").partition(0).payload(&bodies[0][..10]), Duration::from_secs(5))
        .await
        .unwrap();
    let cpu_before = cpu::this_process();
    let started = Instant::now();
    let mut deliveries = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        // The receiver's unavoidable work: decode to validate.
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        std::hint::black_box(&request);
        let record = FutureRecord::<(), _>::to("otlp_spans").partition((i % 12) as i32).payload(body.as_slice());
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if deliveries.len() >= 64 {
            for d in deliveries.drain(..) {
                d.await.unwrap().unwrap();
            }
        }
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
    (started.elapsed().as_secs_f64(), cpu::this_process() - cpu_before)
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = local::temp_dir("bench");
    let mut aio = start_all_in_one(&dir);
    println!("ingest benchmark: {total} spans per size, {SPANS_PER_REQUEST} spans per request, {CONCURRENCY} concurrent gRPC streams");
    println!(
        "{:<8} {:>12} {:>14} {:>14} {:>16} {:>8}",
        "span", "path", "spans/s wall", "CPU-s / 1M", "spans / CPU-s", "ratio"
    );
    for span_bytes in [300, 800] {
        let bodies = requests(total, span_bytes);
        let spans = (bodies.len() * SPANS_PER_REQUEST) as f64;
        let measured = bodies.iter().map(Vec::len).sum::<usize>() as f64 / spans;
        let (raw_wall, raw_cpu) = raw_path(&aio, &bodies).await;
        let (tg_wall, tg_cpu) = tailgate_path(&aio, &bodies).await;
        let label = format!("~{measured:.0} B");
        println!(
            "{label:<8} {:>12} {:>14.0} {:>14.2} {:>16.0} {:>8}",
            "raw",
            spans / raw_wall,
            raw_cpu / spans * 1e6,
            spans / raw_cpu,
            "1.00"
        );
        println!(
            "{label:<8} {:>12} {:>14.0} {:>14.2} {:>16.0} {:>8.2}",
            "tailgate",
            spans / tg_wall,
            tg_cpu / spans * 1e6,
            spans / tg_cpu,
            tg_cpu / raw_cpu
        );
    }
    let _ = aio.child.kill();
    let _ = aio.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
