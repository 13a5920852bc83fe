//! Where an exporter's records come from: its consumer group, or a time range for `tailgate replay`.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tailgate_kafka::{client_config, KafkaConfig, ReaderContext};

use crate::exporter::ExporterError;

/// Where an exporter's records come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Its consumer group, from the committed offsets: the normal mode.
    Group,
    /// A time range (Unix milliseconds of record time), read through a throw-away consumer group and never
    /// committed: `tailgate replay`. Each partition ends at its first record after `to_ms`, or at its end.
    Range { from_ms: i64, to_ms: Option<i64> },
}

/// Every partition of `topic` from its first record at or after `from_ms`, and how many records that leaves
/// (an estimate from the high watermarks, for progress).
pub(crate) async fn range_start(
    kafka: &KafkaConfig,
    topic: &str,
    from_ms: i64,
) -> Result<(TopicPartitionList, u64), ExporterError> {
    let config = client_config(kafka)?;
    let topic = topic.to_owned();
    let lookup = tokio::task::spawn_blocking(move || -> Result<(TopicPartitionList, u64), KafkaError> {
        let consumer: BaseConsumer<ReaderContext> =
            config.clone().set("group.id", "tailgate-replay-lookup").create_with_context(ReaderContext)?;
        let timeout = Duration::from_secs(30);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        let mut query = TopicPartitionList::new();
        for partition in &partitions {
            query.add_partition_offset(&topic, *partition, Offset::Offset(from_ms))?;
        }
        let found = consumer.offsets_for_times(query, timeout)?;
        let mut expected = 0u64;
        let mut assignment = TopicPartitionList::new();
        for element in found.elements() {
            let (low, high) = consumer.fetch_watermarks(&topic, element.partition(), timeout)?;
            let start = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => high,
            };
            expected += (high - start.max(low)).max(0) as u64;
            assignment.add_partition_offset(&topic, element.partition(), Offset::Offset(start))?;
        }
        Ok((assignment, expected))
    });
    match lookup.await {
        Ok(result) => Ok(result?),
        Err(error) => Err(ExporterError::Setup("replay", error.to_string())),
    }
}
