//! Exporter workers: each configured backend is its own consumer group (`tailgate-exporter-<name>`) reading its
//! topic, batching, and committing an offset only when every record below it was accepted by the backend or written
//! to the dead-letter topic. A backend outage of any length becomes consumer lag, never loss: retryable failures
//! are retried forever with back-off, and one exporter's outage never slows another.
//!
//! | exporter                  | topic           | protocol                                   |
//! |---------------------------|-----------------|--------------------------------------------|
//! | `jaeger`                  | sampled spans   | OTLP/gRPC ([`jaeger`])                     |
//! | `prometheus_remote_write` | metrics         | remote-write 1.0 ([`prometheus`])          |
//! | `loki`                    | logs            | push API, protobuf + snappy ([`loki`])     |

#![forbid(unsafe_code)]

mod batch;
pub mod config;
pub mod delivery;
pub mod http;
pub mod jaeger;
pub mod loki;
pub mod metrics;
mod outcome;
pub mod prometheus;
pub mod replay;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tailgate_kafka::{KafkaConfig, TopicError};
use tokio_util::sync::CancellationToken;

pub use config::ExportersConfig;
pub use delivery::Health;
pub use outcome::ExporterStats;
pub use worker::Source;

pub const JAEGER: &str = "jaeger";
pub const PROMETHEUS: &str = "prometheus_remote_write";
pub const LOKI: &str = "loki";

/// The consumer group of an exporter.
pub fn group_id(name: &str) -> String {
    format!("tailgate-exporter-{name}")
}

/// Turns Kafka records into backend requests. Runs on the worker's task; translation state (running totals of
/// delta sums) lives here.
pub trait Backend: Send + 'static {
    /// What one request accumulates.
    type Items: Default + Send + 'static;

    /// Decodes a record and adds its items. `Err` is a record that can't be decoded: it goes to the dead-letter
    /// topic with that reason.
    fn add(&mut self, items: &mut Self::Items, payload: &[u8]) -> Result<Batch, String>;

    /// The request body of a batch.
    fn encode(&mut self, items: Self::Items) -> Bytes;
}

/// What adding one record did.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Items added (spans, samples, log lines).
    pub items: u64,
    /// Items that can't be expressed for the backend, by reason; the rest of the record is delivered.
    pub dropped: Vec<(&'static str, u64)>,
    /// Log lines shortened to the backend's limit.
    pub truncated: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("Kafka client error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("exporter `{0}`: {1}")]
    Setup(&'static str, String),
    #[error("no exporter named `{0}` is configured (configured: {1})")]
    NotConfigured(String, String),
}

/// A built exporter, ready to run.
pub struct Exporter {
    pub name: &'static str,
    pub stats: Arc<ExporterStats>,
    pub health: Arc<Health>,
    run: Box<dyn FnOnce(CancellationToken, Duration) -> RunFuture + Send>,
}

type RunFuture = BoxFuture<'static, Result<(), ExporterError>>;

impl Exporter {
    /// Runs until `shutdown` (group mode) or until the range is delivered (replay); after `shutdown`, commits what
    /// was delivered and leaves the group within `grace`.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) -> Result<(), ExporterError> {
        (self.run)(shutdown, grace).await
    }
}

/// Builds exporter `name` from the configuration, reading from `source`.
pub async fn build(
    config: &ExportersConfig,
    kafka: &KafkaConfig,
    name: &str,
    source: Source,
) -> Result<Exporter, ExporterError> {
    metrics::describe();
    let not_configured = || ExporterError::NotConfigured(name.to_owned(), config.configured().join(", "));
    match name {
        JAEGER => {
            let jaeger = config.jaeger.as_ref().ok_or_else(not_configured)?;
            let transport = jaeger::GrpcTransport::new(jaeger).map_err(|e| ExporterError::Setup(JAEGER, e))?;
            let topic = kafka.topics.sampled_spans.clone();
            worker::build(JAEGER, jaeger::Jaeger, Arc::new(transport), &jaeger.delivery(), kafka, topic, source).await
        }
        PROMETHEUS => {
            let prometheus = config.prometheus_remote_write.as_ref().ok_or_else(not_configured)?;
            let transport = http::HttpTransport::new(
                &prometheus.endpoint,
                prometheus.headers.clone(),
                prometheus.timeout.get(),
                classify_prometheus,
            )
            .map_err(|e| ExporterError::Setup(PROMETHEUS, e))?;
            let backend = prometheus::Prometheus::new(prometheus.clone());
            let topic = kafka.topics.metrics.clone();
            worker::build(PROMETHEUS, backend, Arc::new(transport), &prometheus.delivery(), kafka, topic, source).await
        }
        LOKI => {
            let loki = config.loki.as_ref().ok_or_else(not_configured)?;
            let mut headers = loki.headers.clone();
            if let Some(tenant) = &loki.tenant_id {
                headers.insert("X-Scope-OrgID".into(), tenant.clone());
            }
            let transport = http::HttpTransport::new(&loki.endpoint, headers, loki.timeout.get(), classify_loki)
                .map_err(|e| ExporterError::Setup(LOKI, e))?;
            let topic = kafka.topics.logs.clone();
            worker::build(
                LOKI,
                loki::Loki::new(loki.clone()),
                Arc::new(transport),
                &loki.delivery(),
                kafka,
                topic,
                source,
            )
            .await
        }
        _ => Err(not_configured()),
    }
}

/// Builds every configured exporter in group mode. Logs which ones are not configured.
pub async fn build_all(config: &ExportersConfig, kafka: &KafkaConfig) -> Result<Vec<Exporter>, ExporterError> {
    let configured = config.configured();
    for name in [JAEGER, PROMETHEUS, LOKI] {
        if !configured.contains(&name) {
            tracing::info!(exporter = name, "not configured; not running");
        }
    }
    let mut exporters = Vec::new();
    for name in configured {
        exporters.push(build(config, kafka, name, Source::Group).await?);
    }
    Ok(exporters)
}

/// Prometheus answers 400 to samples it will never take — out of order, out of bounds (older than the head block),
/// a duplicate timestamp with another value — after appending every other sample of the request. Those count as
/// rejected samples (at least one per request) of the request that was otherwise stored. Any other 4xx refuses the
/// whole request.
fn classify_prometheus(_: hyper::StatusCode, body: &str) -> http::Refusal {
    let body = body.to_ascii_lowercase();
    if body.contains("out of bounds") || body.contains("too old") {
        http::Refusal::Some("too_old")
    } else if body.contains("out of order") || body.contains("duplicate sample") {
        http::Refusal::Some("out_of_order")
    } else {
        http::Refusal::Whole("bad_request")
    }
}

/// Loki, like Prometheus, stores the valid entries of a push and answers 400 for the rest: entries too old
/// (`reject_old_samples`), too far behind their stream, or over `max_line_size`. Those are counted refusals of a
/// request that was otherwise stored. Any other 4xx (unparsable labels, say) refuses the whole request.
fn classify_loki(_: hyper::StatusCode, body: &str) -> http::Refusal {
    let body = body.to_ascii_lowercase();
    if body.contains("too old") || body.contains("too far behind") || body.contains("greater than") {
        http::Refusal::Some("too_old")
    } else if body.contains("max entry size") || body.contains("line too long") {
        http::Refusal::Some("line_too_long")
    } else if body.contains("limit") {
        http::Refusal::Whole("limits")
    } else {
        http::Refusal::Whole("bad_request")
    }
}
