//! What every integration test needs: brokers on free ports, unique topics, a running gateway, a Kafka reader,
//! the Python SDK, and a tiny HTTP client that shows exactly what the server said.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tailgate::embedded_broker::{EmbeddedBroker, Storage};
use tailgate_ingest::{Gateway, IngestConfig};
use tailgate_kafka::{KafkaConfig, Topics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub mod backends;
pub mod http;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh Tansu broker (in memory) on a free port. It lives until the test process exits.
pub fn tansu() -> String {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    EmbeddedBroker::start(addr, Storage::Memory).expect("Tansu starts").addr.to_string()
}

/// librdkafka's mock cluster, for fault injection.
pub fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(1).expect("mock cluster starts")
}

/// Topic names no other test uses.
pub fn unique_topics() -> Topics {
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    );
    Topics {
        spans: format!("spans-{id}"),
        metrics: format!("metrics-{id}"),
        logs: format!("logs-{id}"),
        sampled_spans: format!("sampled-{id}"),
        decisions: format!("decisions-{id}"),
    }
}

pub fn kafka_config(brokers: &str, partitions: u32) -> KafkaConfig {
    KafkaConfig { brokers: brokers.to_owned(), topics: unique_topics(), partitions, ..KafkaConfig::default() }
}

/// An ingest config on free local ports.
pub fn ingest_config() -> IngestConfig {
    let mut config = IngestConfig::default();
    config.grpc.endpoint = "127.0.0.1:0".to_owned();
    config.http.endpoint = "127.0.0.1:0".to_owned();
    config
}

pub struct RunningGateway {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub kafka: KafkaConfig,
    pub health: std::sync::Arc<tailgate_ingest::Health>,
    pub budget: tailgate_ingest::Budget,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), tailgate_ingest::IngestError>>,
}

impl RunningGateway {
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn start_gateway(ingest: IngestConfig, kafka: KafkaConfig) -> RunningGateway {
    let gateway = Gateway::build(&ingest, &kafka).await.expect("gateway starts");
    let shutdown = CancellationToken::new();
    let (grpc, http, health, budget) = (gateway.grpc_addr(), gateway.http_addr(), gateway.health(), gateway.budget());
    let task = tokio::spawn(gateway.run(shutdown.clone(), Duration::from_secs(10)));
    RunningGateway { grpc, http, kafka, health, budget, shutdown, task }
}

/// An export request holding `spans` under one resource and scope, both empty.
pub fn trace_request(
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A sampler worker running in this process.
pub struct RunningSampler {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub stats: std::sync::Arc<tailgate_sampler::SamplerStats>,
}

impl RunningSampler {
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

pub async fn start_sampler(
    config: &tailgate_sampler::SamplerConfig,
    kafka: &KafkaConfig,
    group: &str,
) -> RunningSampler {
    let sampler = tailgate_sampler::Sampler::build(config, kafka, group).await.expect("sampler starts");
    let stats = sampler.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { sampler.run(stop, Duration::from_secs(5)).await.expect("sampler runs") }
    });
    RunningSampler { stop, task, stats }
}

/// One record as a test sees it.
#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads `topic` from the beginning with a separate consumer until `done(records)` holds (then half a second more,
/// to catch duplicates) or `timeout` passes.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: u32,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline && settle.is_none_or(|s| Instant::now() < s) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => records.push(Record {
                partition: message.partition(),
                key: message.key().unwrap_or_default().to_vec(),
                value: message.payload().unwrap_or_default().to_vec(),
                headers: message
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default(),
            }),
            Some(Err(error)) => panic!("consumer error: {error}"),
            None => {}
        }
        if settle.is_none() && done(&records) {
            settle = Some(Instant::now() + Duration::from_millis(500));
        }
    }
    records
}

/// The Python with the OpenTelemetry SDK that `tests/run.sh` installs: `TAILGATE_PYTHON`, else its venv under
/// `target/`, else `python3`.
pub fn python() -> Command {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/venv/bin/python");
    let python = std::env::var("TAILGATE_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new(venv).exists() {
            venv.to_owned()
        } else {
            "python3".to_owned()
        }
    });
    Command::new(python)
}

pub fn python_script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// Reads a whole HTTP/1.1 response from a raw socket (the request must say `Connection: close`).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    out
}

/// An exporter running in this process.
pub struct RunningExporter {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub stats: std::sync::Arc<tailgate_exporters::ExporterStats>,
    pub health: std::sync::Arc<tailgate_exporters::Health>,
}

impl RunningExporter {
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    pub fn delivered(&self) -> u64 {
        self.stats.records_delivered.load(Ordering::SeqCst)
    }
}

pub async fn start_exporter(
    config: &tailgate_exporters::ExportersConfig,
    kafka: &KafkaConfig,
    name: &str,
) -> RunningExporter {
    let exporter = tailgate_exporters::build(config, kafka, name, tailgate_exporters::Source::Group)
        .await
        .expect("exporter starts");
    let (stats, health) = (std::sync::Arc::clone(&exporter.stats), std::sync::Arc::clone(&exporter.health));
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { exporter.run(stop, Duration::from_secs(5)).await.expect("exporter runs") }
    });
    RunningExporter { stop, task, stats, health }
}

/// Fast retries for tests: 100 ms doubling to 1 s.
pub fn fast_retry() -> tailgate_exporters::delivery::Retry {
    tailgate_exporters::delivery::Retry {
        initial_interval: tailgate_config::Duration::from_millis(100),
        max_interval: tailgate_config::Duration::from_secs(1),
        ..Default::default()
    }
}

/// `tailgate all-in-one` (the real binary) on free ports, with its broker's data in a temporary directory.
pub struct AllInOne {
    pub child: std::process::Child,
    pub kafka: u16,
    pub grpc: u16,
    pub http: u16,
    pub telemetry: SocketAddr,
    pub dir: std::path::PathBuf,
}

impl AllInOne {
    /// Starts it with `extra` appended to the config, and waits until `/ready`.
    pub async fn start(extra: &str) -> AllInOne {
        let dir = std::env::temp_dir().join(format!("tailgate-aio-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let (kafka, grpc, http_port, metrics) = (free_port(), free_port(), free_port(), free_port());
        let config = dir.join("tailgate.yaml");
        std::fs::write(
            &config,
            format!(
                "embedded_broker: {{ listen: 127.0.0.1:{kafka}, data_dir: {} }}\nkafka: {{ partitions: 2 }}\n\
                 ingest: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http_port} }} }}\n\
                 telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }} }}\n{extra}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tailgate"))
            .args(["all-in-one", "--config"])
            .arg(&config)
            .env_remove("TAILGATE_KAFKA_BROKERS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let telemetry: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(telemetry).is_ok()
                && http::request(telemetry, "GET", "/ready", &[], b"").await.status == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "all-in-one never became ready");
            assert!(child.try_wait().unwrap().is_none(), "all-in-one exited early");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        AllInOne { child, kafka, grpc, http: http_port, telemetry, dir }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka)
    }
}
