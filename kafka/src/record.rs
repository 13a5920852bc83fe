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

/// What a record costs in memory besides its bytes while its write is in flight: the struct, its topic and header
/// allocations, the spawned task and librdkafka's copy of the message head. An estimate, so that records of two
/// bytes (a decision) are not counted as free.
pub const RECORD_OVERHEAD: u64 = 512;

impl OutgoingRecord {
    /// Bytes this record holds while its write is in flight: key, value, topic, headers and
    /// [`RECORD_OVERHEAD`].
    pub fn held_bytes(&self) -> u64 {
        use rdkafka::message::Headers as _;
        let headers: usize = self.headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum();
        let key = self.key.as_ref().map_or(0, Vec::len);
        (self.value.len() + key + self.topic.len() + headers) as u64 + RECORD_OVERHEAD
    }

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
/// if `shutdown` came first. Only the records not yet acknowledged are sent again: a batch whose one record cannot
/// be written (its topic's leader is gone) does not rewrite the others for as long as that lasts. A record that
/// landed although its acknowledgement was lost is written again: a duplicate, which downstream stages count.
pub async fn send_all(
    producer: &FutureProducer,
    records: &[OutgoingRecord],
    what: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = FIRST_BACKOFF;
    let mut pending: Vec<&OutgoingRecord> = records.iter().collect();
    loop {
        let sends =
            futures::future::join_all(pending.iter().map(|r| producer.send(r.as_future_record(), QUEUE_TIMEOUT)));
        let results = tokio::select! {
            _ = shutdown.cancelled() => return false,
            results = sends => results,
        };
        let mut failed = None;
        let mut unacknowledged = Vec::new();
        for (record, result) in pending.iter().zip(results) {
            if let Err((error, _)) = result {
                failed.get_or_insert((error, &record.topic));
                unacknowledged.push(*record);
            }
        }
        let Some((error, topic)) = failed else { return true };
        if is_refused_permission(&error) {
            // Retrying loses nothing and recovers by itself once the ACL is granted, but it must be heard.
            tracing::error!(%error, %topic, ?backoff,
                "{what} refused by Kafka: the principal needs Write on the topic (SECURITY.md, \"Kafka ACLs each \
                 role needs\"); retrying");
        } else {
            let (left, of) = (unacknowledged.len(), pending.len());
            tracing::warn!(%error, %topic, ?backoff, "{what}: {left} of {of} records not acknowledged by Kafka; retrying them");
        }
        pending = unacknowledged;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A decision is 2 bytes of value; in flight it holds far more, and back-pressure must count that, or millions
    /// of them fit under the bound.
    #[test]
    fn a_record_in_flight_holds_more_than_its_value() {
        let record = OutgoingRecord {
            topic: "tailgate.decisions".into(),
            partition: 0,
            key: Some(vec![0; 16]),
            value: vec![1, 0],
            headers: OwnedHeaders::new()
                .insert(rdkafka::message::Header { key: "tailgate.contract", value: Some("1") }),
        };
        assert_eq!(record.held_bytes(), 2 + 16 + 18 + 17 + 1 + RECORD_OVERHEAD);
    }
}
