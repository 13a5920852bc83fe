//! Each role of the pipeline running in this process, on free ports, until its cancellation token says stop: the
//! ingest gateway, a sampler worker, an exporter worker.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tailgate_ingest::{Gateway, IngestConfig};
use tailgate_kafka::KafkaConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
    pub health: Arc<tailgate_ingest::Health>,
    pub budget: tailgate_ingest::Budget,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), tailgate_ingest::IngestError>>,
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

pub struct RunningSampler {
    pub stop: CancellationToken,
    pub task: JoinHandle<()>,
    pub stats: Arc<tailgate_sampler::SamplerStats>,
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
    // Within the test's own groups (see `kafka_config`); `tailgate-sampler` is the one the binary would join.
    let group = match group {
        "tailgate-sampler" => kafka.consumer.sampler_group(),
        other => format!("{}-{other}", kafka.consumer.group_prefix),
    };
    let sampler = tailgate_sampler::Sampler::build(config, kafka, &group).await.expect("sampler starts");
    let stats = sampler.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { sampler.run(stop, Duration::from_secs(5)).await.expect("sampler runs") }
    });
    RunningSampler { stop, task, stats }
}

pub struct RunningExporter {
    pub stop: CancellationToken,
    pub task: JoinHandle<()>,
    pub stats: Arc<tailgate_exporters::ExporterStats>,
    pub health: Arc<tailgate_exporters::Health>,
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

/// Exporter `name` of `config`, reading in its consumer group.
pub async fn start_exporter(
    config: &tailgate_exporters::ExportersConfig,
    kafka: &KafkaConfig,
    name: &str,
) -> RunningExporter {
    let exporter = tailgate_exporters::build(config, kafka, name, tailgate_exporters::Source::Group)
        .await
        .expect("exporter starts");
    let (stats, health) = (Arc::clone(&exporter.stats), Arc::clone(&exporter.health));
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { exporter.run(stop, Duration::from_secs(5)).await.expect("exporter runs") }
    });
    RunningExporter { stop, task, stats, health }
}

/// Fast retries for tests: 100 ms doubling to 1 s.
pub fn fast_retry() -> tailgate_exporters::config::Retry {
    tailgate_exporters::config::Retry {
        initial_interval: tailgate_config::Duration::from_millis(100),
        max_interval: tailgate_config::Duration::from_secs(1),
        ..Default::default()
    }
}

/// The Jaeger exporter, delivering to `endpoint` with [`fast_retry`], started in this process on `kafka`.
pub async fn start_jaeger_exporter(endpoint: String, kafka: &KafkaConfig) -> RunningExporter {
    let exporters = tailgate_exporters::ExportersConfig {
        jaeger: Some(tailgate_exporters::jaeger::JaegerConfig {
            endpoint,
            retry_on_failure: fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    start_exporter(&exporters, kafka, tailgate_exporters::JAEGER).await
}
