//! Gateway throughput benchmark, side by side with a peer: CPU-seconds per million spans, OTLP/gRPC in → Kafka
//! acknowledged, in the same run against the same broker. Prints figures; asserts nothing.
//!
//! * **tailgate**: `tailgate ingest` as a child process (12 partitions, every span on its trace's partition);
//! * **rotel**: Rotel's collector from PyPI (`rotel/rotel-agent`, installed into `target/venv` when missing) with
//!   its Kafka exporter, `acks=all`, lz4. It does not partition by trace ID (its records are not usable by a tail
//!   sampler), and it answers clients before Kafka acknowledged, so its CPU is read once it has gone idle, and the
//!   spans in its topic are counted and printed;
//! * **collector**: the OpenTelemetry Collector (the distribution in `tests/collector`, built by its `build.sh`
//!   into `target/collector` when missing), `otlp` receiver → `kafka` exporter, twice: with Tailgate's guarantees
//!   (`partition_traces_by_id`, all replicas acknowledging, lz4, no sending queue: it answers after Kafka) and with
//!   its defaults (sending queue on: it answers before Kafka, so its CPU is read once idle);
//! * **sampler**, afterwards and on librdkafka's MockCluster (see [`sampler_backlog`]): `tailgate sampler` on a
//!   backlog `tailgate ingest` wrote, its CPU per span from its start until every span is decided;
//! * **raw**: the floor of the same work in this process: check each request on its wire format (as any receiver
//!   must) and produce its bytes as one record with the same producer settings, waiting for the acks.
//!
//! The broker is `tailgate broker` (Tansu), its own process, not counted. Both producers run without idempotence,
//! as Tailgate does on Tansu (see `kafka.producer.idempotence`). CPU of each process from `/proc`.
//!
//! Usage: cargo build --release && cargo bench --bench ingest [-- SPANS]   (default 200000 spans per size);
//! `TAILGATE_BENCH=sampler` runs the sampler's part alone; `TAILGATE_BENCH=resample` measures `tailgate resample`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tailgate_proto::wire::WireSignal;

const SPANS_PER_REQUEST: usize = 600;
const CONCURRENCY: usize = 8;
const PARTITIONS: i32 = 12;
const TAILGATE_TOPIC: &str = "bench_spans";
const ROTEL_TOPIC: &str = "rotel_spans";
const RAW_TOPIC: &str = "raw_spans";
const COLLECTOR_TOPIC: &str = "collector_spans";
const COLLECTOR_DEFAULTS_TOPIC: &str = "collector_defaults_spans";

mod child;
mod cpu;
#[path = "../harness/local.rs"]
mod local;
// Shared with the integration tests; this bench builds only some of its requests.
#[allow(dead_code)]
#[path = "../harness/otlp.rs"]
mod otlp;
// Shared with the integration tests; this bench counts spans only.
#[allow(dead_code)]
#[path = "../harness/topic.rs"]
mod topic;
// Shared with the integration tests; this bench scrapes a metrics endpoint.
#[allow(dead_code)]
#[path = "../harness/http.rs"]
mod http;

use child::{tailgate_binary, Process};
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

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_tailgate(dir: &Path, subcommand: &str, config: String, port: u16) -> Process {
    let path = dir.join(format!("{subcommand}.yaml"));
    std::fs::write(&path, config).unwrap();
    let binary = tailgate_binary();
    let child = Command::new(&binary)
        .args([subcommand, "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}; build it with cargo build --release"));
    wait_listening(port, subcommand);
    Process(child)
}

/// The Collector distribution of `tests/collector`, built by its `build.sh` (cached under `target/collector`).
fn collector_binary() -> Option<PathBuf> {
    if let Some(binary) = std::env::var_os("TAILGATE_OTELCOL") {
        return Some(PathBuf::from(binary));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/collector/build.sh");
    let output = Command::new("bash").arg(script).stderr(Stdio::inherit()).output().ok()?;
    let path = String::from_utf8(output.stdout).ok()?.lines().last()?.trim().to_owned();
    (output.status.success() && Path::new(&path).exists()).then(|| PathBuf::from(path))
}

/// The Collector with `tests/collector/{config}` writing to `topic`; its OTLP/gRPC port.
fn start_collector(binary: &Path, dir: &Path, config: &str, brokers: &str, topic: &str) -> (Process, u16) {
    let (grpc, http) = (local::free_port(), local::free_port());
    let child = Command::new(binary)
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/collector").join(config))
        .env("OTLP_GRPC", format!("127.0.0.1:{grpc}"))
        .env("OTLP_HTTP", format!("127.0.0.1:{http}"))
        .env("KAFKA_BROKERS", brokers)
        .env("TRACES_TOPIC", topic)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{topic}.log"))).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    wait_listening(grpc, "the Collector");
    (Process(child), grpc)
}

/// Rotel's binary from its PyPI package in `target/venv`, installed there first when missing.
fn rotel_binary() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv");
    let python = root.join("bin/python");
    let find = || {
        let out = Command::new(&python)
            .args(["-c", "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))"])
            .output()
            .ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let path = find().or_else(|| {
        if !python.exists() {
            Command::new("python3").arg("-m").arg("venv").arg(&root).status().ok()?;
        }
        eprintln!("installing rotel into {}", root.display());
        Command::new(root.join("bin/pip")).args(["install", "--quiet", "rotel"]).status().ok()?;
        find()
    })?;
    let _ = Command::new("chmod").arg("+x").arg(&path).status();
    path.exists().then_some(path)
}

async fn create_topics(brokers: &str) {
    let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let topics: Vec<NewTopic> = [TAILGATE_TOPIC, ROTEL_TOPIC, RAW_TOPIC, COLLECTOR_TOPIC, COLLECTOR_DEFAULTS_TOPIC]
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await.unwrap() {
        if let Err((topic, error)) = result {
            eprintln!("creating {topic}: {error}");
        }
    }
}

/// Sends every request over `CONCURRENCY` gRPC streams, retrying refusals; the wall time.
async fn send_all(endpoint: &str, bodies: &[Vec<u8>]) -> f64 {
    let decoded: Vec<ExportTraceServiceRequest> =
        bodies.iter().map(|b| ExportTraceServiceRequest::decode(b.as_slice()).unwrap()).collect();
    let client = TraceServiceClient::connect(endpoint.to_owned()).await.unwrap().max_encoding_message_size(64 << 20);
    let started = Instant::now();
    let chunks: Vec<Vec<ExportTraceServiceRequest>> =
        decoded.chunks(decoded.len().div_ceil(CONCURRENCY)).map(|c| c.to_vec()).collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for request in chunk {
                    while let Err(status) = client.export(request.clone()).await {
                        eprintln!("retrying after {:?}: {}", status.code(), status.message());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// The CPU seconds of `pid` once it has used none for half a second: a process that acknowledges before Kafka
/// did is still producing when the client is done.
async fn cpu_when_idle(pid: u32) -> f64 {
    let mut last = cpu_seconds(pid, &[]);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_seconds(pid, &[]);
        if now - last < 0.005 {
            return now;
        }
        last = now;
    }
}

/// The spans in `topic`, read until `expected` are there or two minutes passed.
fn spans_in(brokers: &str, topic: &str, expected: usize) -> usize {
    // Counted as records arrive: recounting every record read so far on each poll was quadratic, and ran out of
    // time before the topic was read.
    let counted = std::cell::Cell::new((0, 0));
    let records = topic::read_topic(brokers, topic, PARTITIONS as u32, Duration::from_secs(120), |records| {
        let (read, spans) = counted.get();
        let spans = spans + topic::count_spans(&records[read..]);
        counted.set((records.len(), spans));
        spans >= expected
    });
    topic::count_spans(&records)
}

/// The sum of every series of counter `name` on a Prometheus endpoint.
async fn counter(addr: std::net::SocketAddr, name: &str) -> f64 {
    let Ok(response) = http::try_request(addr, "GET", "/metrics", &[], b"").await else { return 0.0 };
    let body = String::from_utf8_lossy(&response.body);
    body.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `tailgate ingest` on the brokers and topics of `kafka` (a config's `kafka:` line) writes `bodies` and stops: the
/// backlog the sampler and resample benchmarks read.
async fn write_backlog(dir: &Path, kafka: &str, bodies: &[Vec<u8>]) {
    let (grpc, http, metrics) = (local::free_port(), local::free_port(), local::free_port());
    let gateway = start_tailgate(
        dir,
        "ingest",
        format!(
            "{kafka}ingest: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http} }} }}\n\
             telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }}, logs: {{ level: warn }} }}\n"
        ),
        grpc,
    );
    send_all(&format!("http://127.0.0.1:{grpc}"), bodies).await;
    drop(gateway);
}

/// The sampler end to end, Kafka in the loop: `tailgate sampler` with the seed's policies at a 1 s wait reads a
/// backlog that `tailgate ingest` wrote from `bodies`, and its CPU is counted from its start until it has decided
/// every span: consume, decide, write decisions and kept spans, commit. The broker is librdkafka's MockCluster in
/// this process (not counted): Tansu, serving a sampler that reads as fast as it can while it writes a decision per
/// trace, lets requests time out and stalls, which would measure Tansu. The CPU the sampler uses when idle
/// (polling, timers) is measured afterwards and shown subtracted as well.
async fn sampler_backlog(dir: &Path, bodies: &[Vec<u8>]) {
    const SPANS: &str = "bench_spans";
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster starts");
    let topics = [SPANS, "bench_sampled", "bench_decisions", "bench_metrics", "bench_logs", "bench_spans.dlq"];
    for topic in topics {
        mock.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    let kafka = format!(
        "kafka: {{ brokers: '{}', partitions: {PARTITIONS}, topics: {{ spans: {SPANS}, sampled_spans: bench_sampled, \
         decisions: bench_decisions, metrics: bench_metrics, logs: bench_logs }}, producer: {{ idempotence: false }} }}\n",
        mock.bootstrap_servers()
    );
    write_backlog(dir, &kafka, bodies).await;
    let metrics = local::free_port();
    let spans = bodies.len() * SPANS_PER_REQUEST;

    let started = Instant::now();
    let sampler = start_tailgate(
        dir,
        "sampler",
        format!(
            "{kafka}sampler: {{ decision_wait: 1s }}\n\
             telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }}, logs: {{ level: warn }} }}\n"
        ),
        metrics,
    );
    let pid = sampler.0.id();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], metrics));
    let cpu = sampler_cpu_when_decided(pid, metrics, spans).await;
    let wall = started.elapsed().as_secs_f64();
    let idle_from = cpu_seconds(pid, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_per_second = (cpu_seconds(pid, &[]) - idle_from) / 3.0;
    let busy = cpu - idle_per_second * wall;
    let label = format!("~{:.0} B", bodies.iter().map(Vec::len).sum::<usize>() as f64 / spans as f64);
    println!(
        "sampler end to end (MockCluster), {spans} spans of both sizes ({label} on average), seed policies, 1 s wait"
    );
    println!(
        "  {:.2} CPU-s / 1M, {:.0} spans / CPU-s, {:.0} spans/s over {wall:.1} s; idle use ({idle_per_second:.3} \
         CPU-s/s) subtracted: {:.2} CPU-s / 1M, {:.0} spans / CPU-s",
        cpu / spans as f64 * 1e6,
        spans as f64 / cpu,
        spans as f64 / wall,
        busy / spans as f64 * 1e6,
        spans as f64 / busy,
    );
}

/// `tailgate resample` of a backlog, keeping every trace (`--to-sampled-topic`): read the range through a
/// throw-away consumer, buffer by trace, decide in event time, write every span again. On Tansu (`tailgate
/// broker`): librdkafka's MockCluster does not answer offset-for-time lookups, which a resample starts with. Its
/// CPU is read from `/proc` once it has exited and before it is reaped. The raw floor is the same bytes' unavoidable
/// work in this process: read every record of the range and produce it again to another topic (lz4, `acks=all`),
/// waiting for the acks; no scan, no buffering by trace.
async fn resample_backlog(dir: &Path, bodies: &[Vec<u8>]) {
    let port = local::free_port();
    let brokers = format!("127.0.0.1:{port}");
    let _broker = start_tailgate(
        dir,
        "broker",
        format!("embedded_broker: {{ listen: '{brokers}', data_dir: '{}' }}\n", dir.join("resample-data").display()),
        port,
    );
    let kafka = format!(
        "kafka: {{ brokers: '{brokers}', partitions: {PARTITIONS}, topics: {{ spans: rs_spans, sampled_spans: \
         rs_sampled, decisions: rs_decisions, metrics: rs_metrics, logs: rs_logs }}, producer: {{ idempotence: false }} }}\n"
    );
    write_backlog(dir, &kafka, bodies).await;
    let spans = (bodies.len() * SPANS_PER_REQUEST) as f64;

    // The raw floor: read the range, produce it again.
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let copy = NewTopic::new("rs_raw_copy", PARTITIONS, TopicReplication::Fixed(1));
    admin.create_topics([&copy], &AdminOptions::new()).await.unwrap();
    let cpu_before = cpu::this_process();
    let started = Instant::now();
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "rs-raw")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset("rs_spans", partition, rdkafka::Offset::Beginning).unwrap();
    }
    rdkafka::consumer::Consumer::assign(&consumer, &assignment).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let (mut ended, mut deliveries) = (0, Vec::new());
    while ended < PARTITIONS {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                use rdkafka::message::Message as _;
                let record = FutureRecord::<(), _>::to("rs_raw_copy")
                    .partition(message.partition())
                    .payload(message.payload().unwrap_or_default());
                deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
                if deliveries.len() >= 64 {
                    for d in deliveries.drain(..) {
                        d.await.unwrap().unwrap();
                    }
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
            _ => {}
        }
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
    let (raw_wall, raw_cpu) = (started.elapsed().as_secs_f64(), cpu::this_process() - cpu_before);

    let path = dir.join("resample.yaml");
    std::fs::write(
        &path,
        format!("{kafka}sampler: {{ decision_wait: 1s }}\ntelemetry: {{ logs: {{ level: warn }} }}\n"),
    )
    .unwrap();
    let started = Instant::now();
    let resample = Command::new(tailgate_binary())
        .args(["resample", "--config"])
        .arg(&path)
        .args(["--from", "-30m", "--to", "now", "--to-sampled-topic"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("resample.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = resample.id();
    let exited = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rfind(')').map(|close| stat[close + 2..].starts_with('Z')))
            .unwrap_or(true)
    };
    while !exited(pid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid, &[]);
    let mut resample = resample;
    resample.wait().unwrap();
    let stderr = std::fs::read_to_string(dir.join("resample.log")).unwrap_or_default();
    let summary = stderr.lines().find(|l| l.starts_with("resample finished")).unwrap_or("no summary");
    let label = format!("~{:.0} B", bodies.iter().map(Vec::len).sum::<usize>() as f64 / spans);
    println!("resample (Tansu), {spans} spans of both sizes ({label} on average), keep everything, --to-sampled-topic");
    println!("{:<10} {:>14} {:>12} {:>15} {:>8}", "path", "spans/s wall", "CPU-s / 1M", "spans / CPU-s", "vs raw");
    for (path, wall, cpu) in [("raw", raw_wall, raw_cpu), ("resample", wall, cpu)] {
        println!(
            "{path:<10} {:>14.0} {:>12.2} {:>15.0} {:>8.2}",
            spans / wall,
            cpu / spans * 1e6,
            spans / cpu,
            cpu / raw_cpu
        );
    }
    println!("  (resample's wall time includes its start-up and the decision lookups) {summary}");
}

/// The sampler's CPU seconds once it has decided `spans` spans in all (or two minutes passed).
async fn sampler_cpu_when_decided(pid: u32, metrics: std::net::SocketAddr, spans: usize) -> f64 {
    // A trace whose spans straddle two clients' chunks has its later spans arrive after its decision: late.
    let decided = || async {
        counter(metrics, "tailgate_sampler_spans_total").await
            + counter(metrics, "tailgate_sampler_late_spans_total").await
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while (decided().await as usize) < spans {
        if Instant::now() > deadline {
            println!("sampler: decided only {} of {spans} spans", decided().await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cpu_seconds(pid, &[])
}

async fn raw_path(brokers: &str, bodies: &[Vec<u8>]) -> (f64, f64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    // Warm up the connection outside the measurement.
    producer
        .send(FutureRecord::<(), _>::to(RAW_TOPIC).partition(0).payload(&bodies[0][..10]), Duration::from_secs(5))
        .await
        .unwrap();
    let cpu_before = cpu::this_process();
    let started = Instant::now();
    let mut deliveries = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        // The receiver's unavoidable work: check the request.
        std::hint::black_box(WireSignal::Traces.validate(body).unwrap());
        let record = FutureRecord::<(), _>::to(RAW_TOPIC).partition(i as i32 % PARTITIONS).payload(body.as_slice());
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

fn row(label: &str, path: &str, spans: f64, wall: f64, cpu: f64, raw_cpu: f64, note: &str) {
    println!(
        "{label:<8} {path:>10} {:>14.0} {:>12.2} {:>15.0} {:>8.2}  {note}",
        spans / wall,
        cpu / spans * 1e6,
        spans / cpu,
        cpu / raw_cpu
    );
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = local::temp_dir("bench");
    if std::env::var("TAILGATE_BENCH").as_deref() == Ok("resample") {
        let bodies: Vec<Vec<u8>> = [225, 660].into_iter().flat_map(|size| requests(total, size)).collect();
        resample_backlog(&dir, &bodies).await;
        return;
    }
    if std::env::var("TAILGATE_BENCH").as_deref() == Ok("sampler") {
        // Only the sampler's part, e.g. to profile it.
        let bodies: Vec<Vec<u8>> = [225, 660].into_iter().flat_map(|size| requests(total, size)).collect();
        sampler_backlog(&dir, &bodies).await;
        return;
    }
    let (kafka, grpc, http, metrics) = (local::free_port(), local::free_port(), local::free_port(), local::free_port());
    let brokers = format!("127.0.0.1:{kafka}");
    let _broker = start_tailgate(
        &dir,
        "broker",
        format!("embedded_broker: {{ listen: '{brokers}', data_dir: '{}' }}\n", dir.join("data").display()),
        kafka,
    );
    create_topics(&brokers).await;
    let gateway = start_tailgate(
        &dir,
        "ingest",
        format!(
            "kafka: {{ brokers: '{brokers}', partitions: {PARTITIONS}, topics: {{ spans: {TAILGATE_TOPIC} }}, \
             producer: {{ idempotence: false }} }}\n\
             ingest: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http} }} }}\n\
             telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }}, logs: {{ level: warn }} }}\n"
        ),
        grpc,
    );
    let rotel_port = local::free_port();
    let rotel = rotel_binary().map(|binary| {
        let child = Command::new(&binary)
            .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{rotel_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{}", local::free_port())])
            .args(["--exporter", "kafka", "--kafka-exporter-brokers", &brokers])
            .args(["--kafka-exporter-traces-topic", ROTEL_TOPIC, "--kafka-exporter-compression", "lz4"])
            .args(["--kafka-exporter-acks", "all", "--otlp-grpc-max-recv-msg-size-mib", "64"])
            // Its default batch (8192 spans) makes records past the 1 MB `message.max.bytes`, which it drops
            // after answering success; 1000 spans of ~660 B stay under it, as Tailgate's records do.
            .args(["--traces-batch-max-size", "1000"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rotel.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        wait_listening(rotel_port, "rotel");
        Process(child)
    });
    if rotel.is_none() {
        println!("rotel: not installed and could not be installed (pip install rotel); its rows are left out");
    }
    let collectors: Vec<(&str, Process, u16, &str, bool)> = match collector_binary() {
        Some(binary) => [
            ("collector", "bench-otlp-to-kafka.yaml", COLLECTOR_TOPIC, false),
            ("otelcol-default", "bench-otlp-to-kafka-defaults.yaml", COLLECTOR_DEFAULTS_TOPIC, true),
        ]
        .into_iter()
        .map(|(name, config, topic, queued)| {
            let (process, port) = start_collector(&binary, &dir, config, &brokers, topic);
            (name, process, port, topic, queued)
        })
        .collect(),
        None => {
            println!(
                "collector: tests/collector/build.sh failed (Go and the module proxy needed); its rows are left out"
            );
            Vec::new()
        }
    };
    let mut collector_sent = vec![0usize; collectors.len()];

    println!(
        "ingest benchmark: {total} spans per size, {SPANS_PER_REQUEST} spans per request, {CONCURRENCY} concurrent \
         gRPC streams, {PARTITIONS} partitions"
    );
    println!(
        "{:<8} {:>10} {:>14} {:>12} {:>15} {:>8}",
        "span", "path", "spans/s wall", "CPU-s / 1M", "spans / CPU-s", "vs raw"
    );
    let (mut tailgate_sent, mut rotel_sent) = (0usize, 0usize);
    let mut all_bodies = Vec::new();
    for span_bytes in [225, 660] {
        let bodies = requests(total, span_bytes);
        let spans = (bodies.len() * SPANS_PER_REQUEST) as f64;
        let label = format!("~{:.0} B", bodies.iter().map(Vec::len).sum::<usize>() as f64 / spans);
        let (raw_wall, raw_cpu) = raw_path(&brokers, &bodies).await;
        row(&label, "raw", spans, raw_wall, raw_cpu, raw_cpu, "");

        let pid = gateway.0.id();
        let before = cpu_seconds(pid, &[]);
        let wall = send_all(&format!("http://127.0.0.1:{grpc}"), &bodies).await;
        let tailgate_cpu = cpu_seconds(pid, &[]) - before;
        tailgate_sent += spans as usize;
        row(&label, "tailgate", spans, wall, tailgate_cpu, raw_cpu, "");

        if let Some(rotel) = &rotel {
            let pid = rotel.0.id();
            let before = cpu_seconds(pid, &[]);
            let wall = send_all(&format!("http://127.0.0.1:{rotel_port}"), &bodies).await;
            let rotel_cpu = cpu_when_idle(pid).await - before;
            rotel_sent += spans as usize;
            let note = format!("tailgate is {:.2}x rotel in spans per CPU-second", rotel_cpu / tailgate_cpu);
            row(&label, "rotel", spans, wall, rotel_cpu, raw_cpu, &note);
        }
        for ((name, process, port, _, queued), sent) in collectors.iter().zip(&mut collector_sent) {
            let pid = process.0.id();
            let before = cpu_seconds(pid, &[]);
            let wall = send_all(&format!("http://127.0.0.1:{port}"), &bodies).await;
            let after = if *queued { cpu_when_idle(pid).await } else { cpu_seconds(pid, &[]) };
            *sent += spans as usize;
            let note = format!("tailgate is {:.2}x it in spans per CPU-second", (after - before) / tailgate_cpu);
            row(&label, name, spans, wall, after - before, raw_cpu, &note);
        }
        all_bodies.extend(bodies);
    }
    println!(
        "spans in Kafka: tailgate {} of {tailgate_sent} acknowledged",
        spans_in(&brokers, TAILGATE_TOPIC, tailgate_sent)
    );
    if rotel.is_some() {
        println!("spans in Kafka: rotel {} of {rotel_sent} acknowledged", spans_in(&brokers, ROTEL_TOPIC, rotel_sent));
        let log = std::fs::read_to_string(dir.join("rotel.log")).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("ERROR")).take(3) {
            println!("rotel: {line}");
        }
    }
    for ((name, _, _, topic, _), sent) in collectors.iter().zip(&collector_sent) {
        println!("spans in Kafka: {name} {} of {sent} acknowledged", spans_in(&brokers, topic, *sent));
        let log = std::fs::read_to_string(dir.join(format!("{topic}.log"))).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("error")).take(3) {
            println!("{name}: {line}");
        }
    }
    drop((gateway, rotel, collectors));
    sampler_backlog(&dir, &all_bodies).await;
    let _ = std::fs::remove_dir_all(&dir);
}
