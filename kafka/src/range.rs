//! Where a time range of a topic starts and ends: the offsets a replay or a resample assigns its throw-away consumer,
//! and how many records lie between (for progress).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::{client_config, KafkaConfig, ReaderContext};

/// The records of a topic in a time range, per partition.
#[derive(Debug)]
pub struct Range {
    /// Every partition at its first record at or after the start (its end if none is).
    pub assignment: TopicPartitionList,
    /// Records from there to the first record after the end (or the partition's end): an estimate for progress.
    pub records: u64,
}

/// The range `[from_ms, to_ms]` (record time, Unix milliseconds; no `to_ms`: up to each partition's end) of every
/// partition of `topic`. Blocks on the broker off the runtime's workers.
pub async fn time_range(
    kafka: &KafkaConfig,
    topic: &str,
    from_ms: i64,
    to_ms: Option<i64>,
) -> Result<Range, KafkaError> {
    let config = client_config(kafka)?;
    let (topic, topic_name) = (topic.to_owned(), topic.to_owned());
    let lookup = tokio::task::spawn_blocking(move || -> Result<Range, KafkaError> {
        let consumer: BaseConsumer<ReaderContext> =
            config.clone().set("group.id", "tailgate-range-lookup").create_with_context(ReaderContext)?;
        let timeout = Duration::from_secs(30);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        let offsets_at = |ms: i64| -> Result<TopicPartitionList, KafkaError> {
            let mut query = TopicPartitionList::new();
            for partition in &partitions {
                query.add_partition_offset(&topic, *partition, Offset::Offset(ms))?;
            }
            consumer.offsets_for_times(query, timeout)
        };
        let starts = offsets_at(from_ms)?;
        // Only the estimate depends on the end (readers stop at the first record after it themselves). A range
        // ending in the last minute is estimated to the partitions' ends: asked for the offset of a time after its
        // last record, Kafka answers with the end, but Tansu 0.6 with the start.
        let recent = |to: &i64| *to > crate::now_ms() - 60_000;
        let ends = to_ms.filter(|to| !recent(to)).map(|to| offsets_at(to.saturating_add(1))).transpose()?;
        let mut records = 0u64;
        let mut assignment = TopicPartitionList::new();
        for element in starts.elements() {
            let partition = element.partition();
            let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            let start = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => high,
            };
            let end = match ends.as_ref().and_then(|ends| ends.find_partition(&topic, partition)).map(|e| e.offset()) {
                Some(Offset::Offset(offset)) => offset,
                _ => high,
            };
            records += (end - start.max(low)).max(0) as u64;
            assignment.add_partition_offset(&topic, partition, Offset::Offset(start))?;
        }
        Ok(Range { assignment, records })
    });
    match lookup.await {
        Ok(range) => range,
        Err(error) => {
            tracing::error!(%error, topic = %topic_name, "the range lookup stopped");
            Err(KafkaError::Canceled)
        }
    }
}
