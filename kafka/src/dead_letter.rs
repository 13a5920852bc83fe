//! Dead-letter records: a record a stage cannot process goes to `<topic>.dlq`, with why, where from and who refused
//! it in headers, so it is never skipped silently and an operator can inspect or re-inject it.
//!
//! A dead-letter record must always fit, or the stage that writes it retries for ever and stops moving: the error
//! text is bounded, and a record that would still exceed the producer's record limit is dead-lettered as a
//! reference (its source partition and offset in the headers, an empty value) instead of a copy.

use rdkafka::message::{Header, OwnedHeaders};
use tailgate_proto::headers;

use crate::record::OutgoingRecord;

/// Longest error text kept in the `tailgate.error` header.
pub const MAX_ERROR_BYTES: usize = 1024;
/// Room left for headers and framing when deciding whether a copy fits.
const OVERHEAD: usize = 2048;

/// Writes dead-letter records for one source topic and stage.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    topic: String,
    stage: String,
    max_record_bytes: usize,
}

impl DeadLetters {
    /// Dead letters of `source_topic` refused by `stage` (`sampler`, `exporter.jaeger`, ...), in records of at most
    /// `max_record_bytes` (the producer's `message.max.bytes`).
    pub fn new(source_topic: &str, stage: impl Into<String>, max_record_bytes: usize) -> Self {
        DeadLetters { topic: headers::dead_letter_topic(source_topic), stage: stage.into(), max_record_bytes }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead-letter record of the record at `partition`/`offset`, refused for `reason` (a short token such as
    /// `undecodable`) with `message` saying more.
    pub fn record(
        &self,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        reason: &str,
        message: &str,
    ) -> OutgoingRecord {
        let error = bounded(&format!("{reason}: {message}"), MAX_ERROR_BYTES);
        let source = format!("{partition}:{offset}");
        let fits = key.as_ref().map_or(0, Vec::len) + payload.len() + OVERHEAD <= self.max_record_bytes;
        let mut headers: OwnedHeaders = crate::contract_headers(headers::ENCODING_OTLP_PROTO)
            .insert(Header { key: headers::DLQ_ERROR, value: Some(error.as_str()) })
            .insert(Header { key: headers::DLQ_SOURCE, value: Some(source.as_str()) })
            .insert(Header { key: headers::DLQ_STAGE, value: Some(self.stage.as_str()) });
        let (key, value) = if fits {
            (key, payload)
        } else {
            let omitted = format!("{} bytes omitted: too large to copy; read the source record", payload.len());
            headers = headers.insert(Header { key: headers::DLQ_OMITTED, value: Some(omitted.as_str()) });
            (None, Vec::new())
        };
        OutgoingRecord { topic: self.topic.clone(), partition, key, value, headers }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers as _;

    use super::*;

    fn header(record: &OutgoingRecord, key: &str) -> Option<String> {
        record
            .headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
    }

    #[test]
    fn carries_the_full_header_set() {
        let dead = DeadLetters::new("otlp_spans", "sampler", 1_000_000);
        let record = dead.record(3, 42, Some(b"k".to_vec()), b"payload".to_vec(), "undecodable", "bad wire type");
        assert_eq!(record.topic, "otlp_spans.dlq");
        assert_eq!(record.partition, 3);
        assert_eq!(record.value, b"payload");
        assert_eq!(header(&record, headers::DLQ_ERROR).as_deref(), Some("undecodable: bad wire type"));
        assert_eq!(header(&record, headers::DLQ_SOURCE).as_deref(), Some("3:42"));
        assert_eq!(header(&record, headers::DLQ_STAGE).as_deref(), Some("sampler"));
        assert_eq!(header(&record, headers::CONTRACT_VERSION).as_deref(), Some(headers::CONTRACT_VERSION_CURRENT));
        assert_eq!(header(&record, headers::DLQ_OMITTED), None);
    }

    #[test]
    fn an_unbounded_error_is_cut() {
        let dead = DeadLetters::new("t", "exporter.jaeger", 1_000_000);
        let message = "é".repeat(10_000);
        let record = dead.record(0, 0, None, Vec::new(), "rejected", &message);
        let error = header(&record, headers::DLQ_ERROR).unwrap();
        assert!(error.len() <= MAX_ERROR_BYTES, "{} bytes", error.len());
        assert!(error.starts_with("rejected: é") && error.ends_with("..."));
    }

    #[test]
    fn a_record_at_the_limit_becomes_a_reference() {
        let dead = DeadLetters::new("t", "sampler", 100_000);
        let record = dead.record(1, 7, Some(vec![0; 16]), vec![0; 99_000], "undecodable", "x");
        assert!(record.value.is_empty() && record.key.is_none());
        assert_eq!(header(&record, headers::DLQ_SOURCE).as_deref(), Some("1:7"));
        assert!(header(&record, headers::DLQ_OMITTED).unwrap().starts_with("99000 bytes omitted"));
        assert!(record.value.len() + header(&record, headers::DLQ_OMITTED).unwrap().len() < 100_000);
    }
}
