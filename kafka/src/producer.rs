use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;

use crate::{client_config, KafkaConfig};

/// What a role adds to the shared producer settings.
#[derive(Clone, Debug, Default)]
pub struct ProducerSettings {
    /// Bound on the bytes librdkafka may hold unacknowledged (`queue.buffering.max.kbytes`). A role's own
    /// in-flight budget should keep it from being reached; this is the backstop that keeps memory bounded.
    pub queue_max_bytes: Option<u64>,
    /// `client.id`, shown in broker logs and metrics.
    pub client_id: String,
}

/// An `acks=all` producer, idempotent unless `kafka.producer.idempotence` is false. A successful delivery report
/// means the record is durable on every in-sync replica; failures are retried inside librdkafka until
/// `delivery_timeout`, without reordering, and without duplicates when idempotent.
pub fn create_producer(config: &KafkaConfig, settings: &ProducerSettings) -> KafkaResult<FutureProducer> {
    let producer = &config.producer;
    let mut client = client_config(config)?;
    client
        .set("client.id", &settings.client_id)
        .set("acks", "all")
        .set("compression.type", producer.compression.as_str())
        .set("linger.ms", producer.linger.get().as_millis().to_string())
        .set("message.timeout.ms", producer.delivery_timeout.get().as_millis().max(1).to_string())
        .set("message.max.bytes", producer.max_message_bytes.get().to_string())
        // The broker measures a batch of records against the topic's max.message.bytes, not each record: a batch
        // is never larger than one record may be.
        .set("batch.size", producer.max_message_bytes.get().min(i32::MAX as u64).to_string())
        // Records carry explicit partitions; for keyed records without one, agree with the Java client.
        .set("partitioner", "murmur2_random");
    if producer.idempotence.unwrap_or(true) {
        client.set("enable.idempotence", "true");
    } else {
        // Without idempotence, only one request in flight keeps a retry from overtaking the batch behind it.
        client.set("enable.idempotence", "false").set("max.in.flight.requests.per.connection", "1");
    }
    if let Some(bytes) = settings.queue_max_bytes {
        client.set("queue.buffering.max.kbytes", (bytes / 1024).max(1).to_string());
    }
    client.create()
}
