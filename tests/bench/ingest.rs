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
//! * **sampler**, afterwards (see [`sampler_backlog`]): `tailgate sampler` and the Collector's `kafka` receiver →
//!   `tail_sampling` → `kafka` exporter, each on the spans topic Tailgate's gateway wrote, with the seed's policies:
//!   CPU per span until every span is decided, and resident memory per buffered span;
//! * **raw**: the floor of the same work in this process: check each request on its wire format (as any receiver
//!   must) and produce its bytes as one record with the same producer settings, waiting for the acks.
//!
//! The broker is `tailgate broker` (Tansu), or Apache Kafka with `TAILGATE_BENCH_BROKER=kafka`: its own process,
//! not counted. Tailgate's producers and the raw floor's are idempotent on Apache Kafka and not on Tansu, which
//! has no idempotent producer (see `kafka.producer.idempotence`). CPU and memory of each process from `/proc`.
//!
//! Usage: cargo build --release && cargo bench --bench ingest [-- SPANS]   (default 200000 spans per size);
//! `TAILGATE_BENCH=sampler` runs the sampler's part alone; `TAILGATE_BENCH=resample` measures `tailgate resample`.

use std::net::SocketAddr;
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

// Shared with the integration tests; this bench starts one node.
#[allow(dead_code)]
#[path = "../harness/apache_kafka.rs"]
mod apache_kafka;
mod broker;
mod child;
mod collector;
mod cpu;
#[path = "../harness/local.rs"]
mod local;
// Shared with the integration tests; this bench builds only some of its requests.
#[allow(dead_code)]
#[path = "../harness/otlp.rs"]
mod otlp;
// Shared with the integration tests (Apache Kafka's nodes can be proxied); unused here, its own test too.
#[allow(dead_code, unused_imports)]
#[path = "../harness/proxy.rs"]
mod proxy;
// Shared with the integration tests; this bench counts spans only.
#[allow(dead_code)]
#[path = "../harness/topic.rs"]
mod topic;
// Shared with the integration tests: what the probabilistic policy keeps, from its specification.
#[allow(dead_code)]
#[path = "../harness/sampling.rs"]
mod sampling;
// Shared with the integration tests; this bench scrapes a metrics endpoint.
#[allow(dead_code)]
#[path = "../harness/http.rs"]
mod http;

use broker::Broker;
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

/// The Collector with `tests/collector/{config}` writing to `topic`; its OTLP/gRPC port.
fn start_collector(binary: &Path, dir: &Path, config: &str, broker: &Broker, topic: &str) -> (Process, u16) {
    let (grpc, http) = (local::free_port(), local::free_port());
    let env = [
        ("OTLP_GRPC", format!("127.0.0.1:{grpc}")),
        ("OTLP_HTTP", format!("127.0.0.1:{http}")),
        ("KAFKA_BROKERS", broker.brokers()),
        ("TRACES_TOPIC", topic.to_owned()),
    ];
    let process = collector::start(binary, dir, config, &env, topic);
    wait_listening(grpc, "the Collector");
    (process, grpc)
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
        .chain(&SAMPLER_TOPICS)
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

/// The spans in `topic` up to its end now: what a stopped writer wrote.
fn spans_written(brokers: &str, topic: &str) -> usize {
    topic::count_spans(&topic::read_topic(brokers, topic, PARTITIONS as u32, Duration::from_secs(120), |_| true))
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

/// The sampler's topics beside the spans topic: Tailgate's (`bench_*` for the throughput run, `mem_*` for the
/// memory run, whose decisions must not be the first run's) and the Collector's kept traces; `empty_spans` is what
/// a sampler with nothing to read is started on.
const SAMPLER_TOPICS: [&str; 11] = [
    "bench_sampled",
    "bench_decisions",
    "bench_metrics",
    "bench_logs",
    "mem_sampled",
    "mem_decisions",
    "collector_sampled",
    "collector_mem_sampled",
    "empty_spans",
    "bench_spans.dlq",
    "empty_spans.dlq",
];

/// A `kafka:` section for `tailgate` on `broker`: `spans` read, the run's own `prefix`ed output topics and group.
fn sampler_kafka(broker: &Broker, spans: &str, prefix: &str) -> String {
    format!(
        "kafka: {{ brokers: '{}', partitions: {PARTITIONS}, topics: {{ spans: {spans}, sampled_spans: {prefix}_sampled, \
         decisions: {prefix}_decisions, metrics: bench_metrics, logs: bench_logs }}, {}, \
         consumer: {{ group_prefix: {prefix}-{spans} }} }}\n",
        broker.brokers(),
        broker.producer_yaml()
    )
}

/// `tailgate sampler` reading `spans` at `wait`; its process and metrics address.
fn start_sampler(dir: &Path, broker: &Broker, spans: &str, prefix: &str, wait: &str) -> (Process, SocketAddr) {
    let port = local::free_port();
    let config = format!(
        "{}sampler: {{ decision_wait: {wait} }}\n\
         telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{port} }}, logs: {{ level: warn }} }}\n",
        sampler_kafka(broker, spans, prefix)
    );
    let process = start_tailgate(dir, "sampler", config, port);
    (process, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The Collector's `kafka` → `tail_sampling` → `kafka` pipeline reading `spans` as group `group` at `wait`.
fn start_collector_sampler(
    binary: &Path,
    dir: &Path,
    broker: &Broker,
    spans: &str,
    group: &str,
    wait: &str,
) -> Process {
    let env = [
        ("KAFKA_BROKERS", broker.brokers()),
        ("GROUP_ID", group.to_owned()),
        ("SPANS_TOPIC", spans.to_owned()),
        (
            "SAMPLED_TOPIC",
            if spans == "empty_spans" { "collector_mem_sampled" } else { "collector_sampled" }.to_owned(),
        ),
        ("DECISION_WAIT", wait.to_owned()),
    ];
    collector::start(binary, dir, "bench-kafka-tail-sampling.yaml", &env, group)
}

/// The CPU seconds of `pid` once a whole second passes in which it used less than `share` of a core (or a minute
/// passed), and how much it used per second in that quiet second.
async fn cpu_when_quiet(pid: u32, share: f64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = cpu_seconds(pid, &[]);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_seconds(pid, &[]);
        if now - last < share || Instant::now() > deadline {
            return (now, now - last);
        }
        last = now;
    }
}

/// The sampler end to end, Kafka in the loop, side by side with the Collector's tail sampling on the same input:
/// the spans topic `tailgate ingest` wrote (`spans` spans, `bytes` bytes of requests), the seed's policies at a 1 s
/// `decision_wait` on both.
///
/// * Throughput: each reads the whole topic as a new consumer group, from its start until it has decided every span
///   (Tailgate: its `spans_total` + `late_spans_total` counters; the Collector: its group has committed the end of
///   every partition, then its CPU goes quiet: every decision taken and every kept trace written). The CPU either
///   uses when idle (polls, timers) is measured for 3 s afterwards and shown subtracted as well.
/// * Memory per buffered span: each started with a 600 s `decision_wait`, once on an empty topic and once on the
///   whole backlog; once it has read everything and gone quiet, every span is buffered: the difference of the two
///   resident sizes (`VmRSS`) over the spans.
async fn sampler_backlog(dir: &Path, broker: &Broker, bodies: &[Vec<u8>], otelcol: Option<&Path>) {
    let brokers = broker.brokers();
    let spans = bodies.len() * SPANS_PER_REQUEST;
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let label = format!("~{:.0} B", bytes as f64 / spans as f64);
    println!(
        "sampler end to end ({}), {spans} spans of both sizes ({label} per span in requests), seed policies, 1 s wait",
        broker.name()
    );
    println!(
        "  the seed's policies keep {} of them (none failed or slow; the probabilistic hash, computed here)",
        kept(bodies)
    );
    println!(
        "{:<10} {:>14} {:>12} {:>15} {:>16} {:>15}  kept spans",
        "path", "spans/s wall", "CPU-s / 1M", "spans / CPU-s", "idle subtracted", "B RSS per span"
    );

    // Tailgate, throughput.
    let started = Instant::now();
    let (sampler, metrics) = start_sampler(dir, broker, TAILGATE_TOPIC, "bench", "1s");
    let pid = sampler.0.id();
    let cpu = sampler_cpu_when_decided(pid, metrics, spans).await;
    let wall = started.elapsed().as_secs_f64();
    let idle_from = cpu_seconds(pid, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = (cpu_seconds(pid, &[]) - idle_from) / 3.0;
    drop(sampler);
    let kept = spans_written(&brokers, "bench_sampled");
    let tailgate_memory = memory_per_span(dir, broker, spans, None).await;
    sampler_row("tailgate", spans, wall, cpu, idle, tailgate_memory, kept);

    let Some(otelcol) = otelcol else { return };
    if let Broker::Tansu { .. } = broker {
        println!("otelcol: not run on Tansu, which refuses its producing connections");
        return;
    }
    let started = Instant::now();
    let collector = start_collector_sampler(otelcol, dir, broker, TAILGATE_TOPIC, "otelcol-throughput", "1s");
    let pid = collector.0.id();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !collector::group_caught_up(&brokers, "otelcol-throughput", TAILGATE_TOPIC, PARTITIONS) {
        if Instant::now() > deadline {
            println!("otelcol: its group did not reach the end of {TAILGATE_TOPIC} in 300 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its decisions come decision_wait after the last span, and its kept traces are written after that.
    let (cpu, _) = cpu_when_quiet(pid, 0.02).await;
    let wall = started.elapsed().as_secs_f64() - 1.0;
    let idle_from = cpu_seconds(pid, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = (cpu_seconds(pid, &[]) - idle_from) / 3.0;
    drop(collector);
    let kept = spans_written(&brokers, "collector_sampled");
    let log = std::fs::read_to_string(dir.join("otelcol-throughput.log")).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("error")).take(3) {
        println!("otelcol: {line}");
    }
    let collector_memory = memory_per_span(dir, broker, spans, Some(otelcol)).await;
    sampler_row("otelcol", spans, wall, cpu, idle, collector_memory, kept);
}

/// The spans of `bodies` whose trace the probabilistic policy at 10% keeps.
fn kept(bodies: &[Vec<u8>]) -> usize {
    bodies
        .iter()
        .flat_map(|body| ExportTraceServiceRequest::decode(body.as_slice()).unwrap().resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .filter(|span| sampling::probabilistic_keeps(&span.trace_id, 10.0))
        .count()
}

fn sampler_row(path: &str, spans: usize, wall: f64, cpu: f64, idle: f64, memory: Option<f64>, kept: usize) {
    let spans = spans as f64;
    let busy = cpu - idle * wall;
    let memory = memory.map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"));
    println!(
        "{path:<10} {:>14.0} {:>12.2} {:>15.0} {:>16.0} {memory:>15}  {kept}",
        spans / wall,
        cpu / spans * 1e6,
        spans / cpu,
        spans / busy
    );
}

/// Resident bytes per buffered span of Tailgate's sampler (`otelcol` `None`) or the Collector's: see
/// [`sampler_backlog`]. `None` when the full run did not read everything.
async fn memory_per_span(dir: &Path, broker: &Broker, spans: usize, otelcol: Option<&Path>) -> Option<f64> {
    let brokers = broker.brokers();
    let mut resident = Vec::new();
    for topic in ["empty_spans", TAILGATE_TOPIC] {
        let pid;
        let mut gauge = None;
        let _process = match otelcol {
            None => {
                let (process, metrics) = start_sampler(dir, broker, topic, "mem", "600s");
                pid = process.0.id();
                // Everything read: the group's lag is 0 and the spans sit in the buffer.
                let deadline = Instant::now() + Duration::from_secs(300);
                while topic != "empty_spans"
                    && !(counter(metrics, "tailgate_sampler_buffered_bytes").await > 0.0
                        && counter(metrics, "tailgate_sampler_consumer_lag_records").await == 0.0)
                {
                    if Instant::now() > deadline {
                        println!("tailgate: did not read all of {topic} in 300 s");
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                gauge = Some(metrics);
                process
            }
            Some(binary) => {
                let group = format!("otelcol-memory-{topic}");
                let process = start_collector_sampler(binary, dir, broker, topic, &group, "600s");
                pid = process.0.id();
                let deadline = Instant::now() + Duration::from_secs(300);
                while topic != "empty_spans" && !collector::group_caught_up(&brokers, &group, topic, PARTITIONS) {
                    if Instant::now() > deadline {
                        println!("otelcol: did not read all of {topic} in 300 s");
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                process
            }
        };
        // Started (an empty topic: joined its group and idle) or done reading: quiet.
        tokio::time::sleep(Duration::from_secs(2)).await;
        cpu_when_quiet(pid, 0.02).await;
        resident.push(cpu::resident_bytes(pid) as f64);
        if let (Some(metrics), TAILGATE_TOPIC) = (gauge, topic) {
            let held = counter(metrics, "tailgate_sampler_buffered_bytes").await;
            let traces = counter(metrics, "tailgate_sampler_buffered_traces").await;
            println!("  tailgate holds {held:.0} B of encoded spans in {traces:.0} traces (its own gauges)");
        }
    }
    Some((resident[1] - resident[0]) / spans as f64)
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

async fn raw_path(broker: &Broker, bodies: &[Vec<u8>]) -> (f64, f64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("enable.idempotence", broker.idempotent().to_string())
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
    let broker = Broker::start(&dir);
    let brokers = broker.brokers();
    create_topics(&brokers).await;
    let otelcol = collector::binary();
    if otelcol.is_none() {
        println!("collector: tests/collector/build.sh failed (Go and the module proxy needed); its rows are left out");
    }
    if std::env::var("TAILGATE_BENCH").as_deref() == Ok("sampler") {
        // Only the sampler's part, e.g. to profile it.
        let bodies: Vec<Vec<u8>> = [225, 660].into_iter().flat_map(|size| requests(total, size)).collect();
        let kafka = format!(
            "kafka: {{ brokers: '{brokers}', partitions: {PARTITIONS}, topics: {{ spans: {TAILGATE_TOPIC} }}, {} }}\n",
            broker.producer_yaml()
        );
        write_backlog(&dir, &kafka, &bodies).await;
        sampler_backlog(&dir, &broker, &bodies, otelcol.as_deref()).await;
        return;
    }
    let (grpc, http, metrics) = (local::free_port(), local::free_port(), local::free_port());
    let gateway = start_tailgate(
        &dir,
        "ingest",
        format!(
            "kafka: {{ brokers: '{brokers}', partitions: {PARTITIONS}, topics: {{ spans: {TAILGATE_TOPIC} }}, {} }}\n\
             ingest: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http} }} }}\n\
             telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }}, logs: {{ level: warn }} }}\n",
            broker.producer_yaml()
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
    // Not on Tansu: it closes the producing connections of the Collector's client (franz-go) during API version
    // negotiation for as long as it runs; with its defaults the Collector answered success and wrote nothing.
    let collectors: Vec<(&str, Process, u16, &str, bool)> = match &otelcol {
        Some(_) if matches!(broker, Broker::Tansu { .. }) => {
            println!(
                "collector: not run on Tansu, which refuses its producing connections (README, Tansu's differences)"
            );
            Vec::new()
        }
        Some(binary) => [
            ("collector", "bench-otlp-to-kafka.yaml", COLLECTOR_TOPIC, false),
            ("otelcol-default", "bench-otlp-to-kafka-defaults.yaml", COLLECTOR_DEFAULTS_TOPIC, true),
        ]
        .into_iter()
        .map(|(name, config, topic, queued)| {
            let (process, port) = start_collector(binary, &dir, config, &broker, topic);
            (name, process, port, topic, queued)
        })
        .collect(),
        None => Vec::new(),
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
        let (raw_wall, raw_cpu) = raw_path(&broker, &bodies).await;
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
    sampler_backlog(&dir, &broker, &all_bodies, otelcol.as_deref()).await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
