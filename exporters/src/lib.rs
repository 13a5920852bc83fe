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
//! | `prometheus`              | metrics         | a scrape endpoint ([`scrape`]): a state store, no delivery |

#![forbid(unsafe_code)]

mod attributes;
mod backend;
mod batch;
pub mod config;
pub mod delivery;
mod exporter;
pub mod jaeger;
mod joined;
pub mod loki;
pub mod metrics;
mod outcome;
pub mod prometheus;
pub mod replay;
pub mod scrape;
mod source;
mod worker;

use std::sync::Arc;

use tailgate_kafka::KafkaConfig;

pub use backend::{Backend, Batch};
pub use config::ExportersConfig;
pub use delivery::Health;
pub use exporter::{group_id, Exporter, ExporterError};
pub use joined::Joined;
pub use outcome::ExporterStats;
pub use source::Source;

pub const JAEGER: &str = jaeger::NAME;
pub const PROMETHEUS: &str = prometheus::NAME;
pub const LOKI: &str = loki::NAME;
pub const PROMETHEUS_SCRAPE: &str = scrape::NAME;

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
            worker::build(JAEGER, jaeger::backend(), Arc::new(transport), &jaeger.delivery(), kafka, topic, source)
                .await
        }
        PROMETHEUS => {
            let prometheus = config.prometheus_remote_write.as_ref().ok_or_else(not_configured)?;
            let transport = prometheus::transport(prometheus).map_err(|e| ExporterError::Setup(PROMETHEUS, e))?;
            let backend = prometheus::Prometheus::new(prometheus.clone());
            let topic = kafka.topics.metrics.clone();
            worker::build(PROMETHEUS, backend, Arc::new(transport), &prometheus.delivery(), kafka, topic, source).await
        }
        LOKI => {
            let loki = config.loki.as_ref().ok_or_else(not_configured)?;
            let transport = loki::transport(loki).map_err(|e| ExporterError::Setup(LOKI, e))?;
            let (topic, transport, delivery) = (kafka.topics.logs.clone(), Arc::new(transport), loki.delivery());
            match loki.protocol {
                loki::Protocol::Push => {
                    let backend = loki::Loki::new(loki.clone());
                    worker::build(LOKI, backend, transport, &delivery, kafka, topic, source).await
                }
                loki::Protocol::Otlp => {
                    worker::build(LOKI, loki::otlp_backend(), transport, &delivery, kafka, topic, source).await
                }
            }
        }
        PROMETHEUS_SCRAPE => {
            let scrape = config.prometheus.as_ref().ok_or_else(not_configured)?;
            match source {
                Source::Group => scrape::build(scrape, kafka).await,
                Source::Range { .. } => Err(ExporterError::Setup(
                    PROMETHEUS_SCRAPE,
                    "a scrape endpoint serves current values and has nothing to re-deliver; replay to \
                     prometheus_remote_write instead"
                        .to_owned(),
                )),
            }
        }
        _ => Err(not_configured()),
    }
}

/// Builds every configured exporter in group mode. Logs which ones are not configured.
pub async fn build_all(config: &ExportersConfig, kafka: &KafkaConfig) -> Result<Vec<Exporter>, ExporterError> {
    let configured = config.configured();
    for name in [JAEGER, PROMETHEUS, LOKI, PROMETHEUS_SCRAPE] {
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
