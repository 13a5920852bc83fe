//! A record to write, owned by the task that writes it, and the write that retries until Kafka has it.

use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// How long one attempt waits for room in the producer's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct OutgoingRecord {
    pub topic: String,
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: OwnedHeaders,
}

impl OutgoingRecord {
    pub fn as_future_record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let record = FutureRecord::to(&self.topic)
            .partition(self.partition)
            .payload(self.value.as_slice())
            .headers(self.headers.clone());
        match &self.key {
            Some(key) => record.key(key.as_slice()),
            None => record,
        }
    }
}

/// Writes every record, retrying with growing back-off until Kafka acknowledged all of them: `true`, or `false`
/// if `shutdown` came first. A record that landed before a retry is written again: a duplicate, which downstream
/// stages count.
pub async fn send_all(
    producer: &FutureProducer,
    records: &[OutgoingRecord],
    what: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let sends =
            futures::future::join_all(records.iter().map(|r| producer.send(r.as_future_record(), QUEUE_TIMEOUT)));
        let results = tokio::select! {
            _ = shutdown.cancelled() => return false,
            results = sends => results,
        };
        let Some((index, Err((error, _)))) = results.into_iter().enumerate().find(|(_, r)| r.is_err()) else {
            return true;
        };
        if is_refused_permission(&error) {
            // Retrying loses nothing and recovers by itself once the ACL is granted, but it must be heard.
            tracing::error!(%error, topic = %records[index].topic, ?backoff,
                "{what} refused by Kafka: the principal needs Write on the topic (SECURITY.md, \"Kafka ACLs each \
                 role needs\"); retrying");
        } else {
            tracing::warn!(%error, ?backoff, "{what} not acknowledged by Kafka; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether Kafka refused the write for want of a permission, which no retry fixes until someone grants it.
fn is_refused_permission(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{ClusterAuthorizationFailed, TopicAuthorizationFailed};
    matches!(error.rdkafka_error_code(), Some(TopicAuthorizationFailed | ClusterAuthorizationFailed))
}
