//! Consumer-group lag, read from the broker as an operator's `kafka-consumer-groups --describe` would: how many
//! records of a topic a group has not committed yet. The campaign waits for it to reach 0, not for a guessed time.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Records of `topic` that `group` has not committed; `None` while the broker does not answer.
pub fn lag(brokers: &str, group: &str, topic: &str, partitions: u32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(5)).ok()?;
    let mut lag = 0;
    for p in 0..partitions as i32 {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).ok()?;
        let done = match committed.find_partition(topic, p)?.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        lag += (high - done).max(0);
    }
    Some(lag)
}

/// The number of records in `topic` (the sum of its partitions' high watermarks minus low).
pub fn records(brokers: &str, topic: &str, partitions: u32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().ok()?;
    let mut total = 0;
    for p in 0..partitions as i32 {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).ok()?;
        total += high - low;
    }
    Some(total)
}
