//! Where a time range of a topic starts and ends: the offsets a replay or a resample assigns its throw-away consumer,
//! and how many records lie between (for progress).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::{client_config, KafkaConfig, ReaderContext};

/// Records stamped after the end of a range, one after another, that end a partition's range before its end
/// offset: so many in a row are past the range, not one gateway's clock running ahead.
pub const PAST_IN_A_ROW: u32 = 10_000;

/// How long after the end of a range it may still be being written: a range ending later than this before now is
/// read to each partition's end as reached, not to an end fixed at the start.
const SETTLING_MS: i64 = 5 * 60_000;

/// The records of a topic in a time range, per partition.
#[derive(Debug)]
pub struct Range {
    /// Every partition at its first record at or after the start (its end if none is).
    pub assignment: TopicPartitionList,
    /// Where each partition's range ends.
    pub ends: Ends,
    /// Records from there to the first record after the end (or the partition's end): an estimate for progress.
    pub records: u64,
}

/// Where each partition of a range ends. Not at the first record stamped after the end: a record from a clock that
/// ran ahead would end it there, and Kafka's time index, which answers with the first offset whose timestamp
/// reaches the one asked for, is misled by such a record the same way. A partition ends at its high watermark when
/// the range was looked up (records stamped after the end on the way are skipped), or after [`PAST_IN_A_ROW`]
/// records in a row stamped after the end; a range that ended in the last minutes has no fixed end.
#[derive(Debug, Default, Clone)]
pub struct Ends {
    offsets: HashMap<i32, i64>,
    past: HashMap<i32, u32>,
}

/// What a record of a range's partition is to its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In the range: read it.
    In,
    /// Stamped after the range's end: skip it and read on.
    After,
    /// The partition's range is over: stop reading it.
    End,
}

impl Ends {
    /// Where the record at `offset` of `partition`, stamped `timestamp_ms`, lies in a range ending at `to_ms`.
    pub fn place(&mut self, to_ms: i64, partition: i32, offset: i64, timestamp_ms: i64) -> Place {
        if self.offsets.get(&partition).is_some_and(|end| offset >= *end) {
            return Place::End;
        }
        if timestamp_ms <= to_ms {
            self.past.remove(&partition);
            return Place::In;
        }
        let past = self.past.entry(partition).or_default();
        *past += 1;
        if *past >= PAST_IN_A_ROW {
            Place::End
        } else {
            Place::After
        }
    }
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
        // The estimate is to the first record after the end (readers end as `Ends` says). A range
        // ending in the last minute is estimated to the partitions' ends: asked for the offset of a time after its
        // last record, Kafka answers with the end, but Tansu 0.6 with the start.
        let recent = |to: &i64| *to > crate::now_ms() - 60_000;
        let ends = to_ms.filter(|to| !recent(to)).map(|to| offsets_at(to.saturating_add(1))).transpose()?;
        // A range over for a while ends at the high watermarks of now; a recent one where its readers get to.
        let settled = to_ms.is_some_and(|to| to < crate::now_ms() - SETTLING_MS);
        let mut records = 0u64;
        let mut assignment = TopicPartitionList::new();
        let mut range_ends = Ends::default();
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
            if settled {
                range_ends.offsets.insert(partition, high);
            }
        }
        Ok(Range { assignment, ends: range_ends, records })
    });
    match lookup.await {
        Ok(range) => range,
        Err(error) => {
            tracing::error!(%error, topic = %topic_name, "the range lookup stopped");
            Err(KafkaError::Canceled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stamped_ahead_is_skipped_and_a_long_run_past_the_end_ends_the_range() {
        let mut ends = Ends { offsets: HashMap::from([(0, 100)]), past: HashMap::new() };
        assert_eq!(ends.place(1_000, 0, 5, 900), Place::In);
        assert_eq!(ends.place(1_000, 0, 6, 3_600_000), Place::After, "one record from a clock ahead");
        assert_eq!(ends.place(1_000, 0, 7, 950), Place::In, "the range goes on after it");
        assert_eq!(ends.place(1_000, 0, 100, 990), Place::End, "at the end offset");
        let mut open = Ends::default();
        let places: Vec<Place> = (0..PAST_IN_A_ROW).map(|n| open.place(1_000, 1, i64::from(n), 2_000)).collect();
        assert_eq!(places.last(), Some(&Place::End), "so many in a row are past the range");
        assert!(places[..places.len() - 1].iter().all(|p| *p == Place::After));
    }
}
