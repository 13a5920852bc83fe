//! A built exporter, what running it can fail with, and its consumer group.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tailgate_kafka::TopicError;
use tokio_util::sync::CancellationToken;

use crate::delivery::Health;
use crate::outcome::ExporterStats;

/// The consumer group of an exporter.
pub fn group_id(kafka: &tailgate_kafka::KafkaConfig, name: &str) -> String {
    kafka.consumer.exporter_group(name)
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
    /// The consumer cannot go on (see `Event::Fatal`).
    #[error("exporter `{0}`: {1}")]
    Consumer(&'static str, String),
}

pub(crate) type RunFuture = BoxFuture<'static, Result<(), ExporterError>>;

/// A built exporter, ready to run.
pub struct Exporter {
    pub name: &'static str,
    pub stats: Arc<ExporterStats>,
    pub health: Arc<Health>,
    pub(crate) run: Box<dyn FnOnce(CancellationToken, Duration) -> RunFuture + Send>,
}

impl Exporter {
    /// Runs until `shutdown` (group mode) or until the range is delivered (replay); after `shutdown`, commits what
    /// was delivered and leaves the group within `grace`.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) -> Result<(), ExporterError> {
        (self.run)(shutdown, grace).await
    }
}
