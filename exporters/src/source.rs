//! Where an exporter's records come from: its consumer group, or a time range for `tailgate replay`.

use rdkafka::TopicPartitionList;
use tailgate_kafka::KafkaConfig;

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

/// Every partition of `topic` from its first record at or after `from_ms`, and how many records lie up to `to_ms`
/// (or the partitions' ends), for progress.
pub(crate) async fn range_start(
    kafka: &KafkaConfig,
    topic: &str,
    from_ms: i64,
    to_ms: Option<i64>,
) -> Result<(TopicPartitionList, u64), ExporterError> {
    let range = tailgate_kafka::time_range(kafka, topic, from_ms, to_ms).await?;
    Ok((range.assignment, range.records))
}
