//! What every Tailgate role needs of Kafka: the `kafka:` config section, client settings, the idempotent producer,
//! topic administration, and the consumer shell the sampler and the exporters run on — consumer, partition
//! ownership with the commit rule, dead letters.
//!
//! Guarantees made here:
//! * The producer is idempotent with `acks=all`: a delivery report of success means every in-sync replica has the
//!   record, and librdkafka's retries never duplicate or reorder it.
//! * Topics are checked at start-up. A topic with a partition count other than the configured one is an error,
//!   because the partition of a trace is `murmur2(trace_id) mod partitions`: changing the count sends new spans of
//!   a trace to a different sampler than its earlier spans.

#![forbid(unsafe_code)]

mod config;
pub mod consumer;
pub mod contract;
pub mod dead_letter;
mod offsets;
pub mod ownership;
mod producer;
mod range;
pub mod record;
mod security;
mod topics;

pub use config::{AssignmentStrategy, Compression, ConsumerConfig, KafkaConfig, ProducerConfig, Topics};
pub use consumer::{Consumer, ConsumerSettings, Event, Partitions, ReaderContext, Start};
pub use dead_letter::DeadLetters;
pub use offsets::OffsetTracker;
pub use ownership::Ownership;
pub use producer::{create_producer, ProducerSettings};
pub use range::{time_range, Ends, Place, Range};
pub use record::{send_all, OutgoingRecord};
pub use security::{KafkaTls, Mechanism, Protocol, Sasl, SecurityConfig};
pub use topics::{config_drift, delete_topic, ensure_topics, fit_to_topics, Drift, TopicError};

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::types::RDKafkaConfRes;
use rdkafka::ClientConfig;
use tailgate_proto::headers;

/// The settings every client (producer, consumer, admin) starts from: brokers, `kafka.security` and the user's
/// extra `kafka.client` properties. Fails only when the SASL password cannot be read now (it was readable when
/// the config was validated).
pub fn client_config(config: &KafkaConfig) -> KafkaResult<ClientConfig> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    config.security.apply(&mut client).map_err(|message| {
        KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_INVALID, message, "sasl.password".into(), String::new())
    })?;
    for (key, value) in &config.client {
        client.set(key, value);
    }
    Ok(client)
}

/// The headers every record of the Kafka contract carries: its encoding and the contract version. Add
/// [`headers::RECEIVED_AT`] or others with `insert`.
pub fn contract_headers(encoding: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(3)
        .insert(Header { key: headers::ENCODING, value: Some(encoding) })
        .insert(Header { key: headers::CONTRACT_VERSION, value: Some(headers::CONTRACT_VERSION_CURRENT) })
}

/// Now, in Kafka's unit of record time: Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
