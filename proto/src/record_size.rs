//! How much of Kafka's record size limit a record uses: key, value, headers and framing, not the value alone.
//!
//! librdkafka refuses a record with `MSG_SIZE_TOO_LARGE` when `key + value + serialized headers + 36` exceeds
//! `message.max.bytes` (`rd_kafka_msg_max_wire_size`), and that refusal is permanent: a client told to retry would
//! retry for ever. A record whose key is a 2 KB resource (log records without trace context, every metric) is
//! therefore bounded as a whole, and an item that cannot fit even alone is rejected before anything is produced.

/// The most bytes Kafka's framing adds to one record beyond its key, value and headers:
/// * 36, librdkafka's `RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD` — the record's length, attributes, timestamp and offset
///   deltas, key and value lengths and header count, each varint at its widest — which librdkafka adds itself
///   before comparing with `message.max.bytes`;
/// * 61, the v2 record batch header, which a batch of one record adds and a broker's `max.message.bytes` (which
///   bounds whole batches) counts.
pub const RECORD_FRAMING: usize = 36 + 61;

/// Bytes of a Kafka varint holding `n` as the protocol writes lengths in records: zigzag, 7 bits a byte.
fn varint_len(n: usize) -> usize {
    let mut zigzag = (n as u64).saturating_mul(2);
    let mut bytes = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        bytes += 1;
    }
    bytes
}

/// Bytes one record header takes inside a record: its name and value, each after its length.
pub fn header_len(name: &str, value: &[u8]) -> usize {
    varint_len(name.len())
        .saturating_add(name.len())
        .saturating_add(varint_len(value.len()))
        .saturating_add(value.len())
}

/// The limit every record of one request must fit, as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLimit {
    max_message_bytes: usize,
    /// Serialized headers plus [`RECORD_FRAMING`]: what every record of the request carries besides key and value.
    per_record: usize,
}

impl RecordLimit {
    /// The limit for records of at most `max_message_bytes` (the producer's `message.max.bytes`) that each carry
    /// `headers`.
    pub fn new<'a>(max_message_bytes: usize, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let headers =
            headers.into_iter().fold(0usize, |sum, (name, value)| sum.saturating_add(header_len(name, value)));
        RecordLimit { max_message_bytes, per_record: headers.saturating_add(RECORD_FRAMING) }
    }

    /// The producer's `message.max.bytes`, as the user configured it.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Bytes a record's key and value may take together.
    pub fn key_and_value(&self) -> usize {
        self.max_message_bytes.saturating_sub(self.per_record)
    }

    /// What a record of this key and value weighs against `message.max.bytes`.
    pub fn record_size(&self, key: usize, value: usize) -> usize {
        key.saturating_add(value).saturating_add(self.per_record)
    }
}

/// A limit on key and value together, for callers that keep their own allowance for headers and framing under
/// `message.max.bytes` (the sampler keeps 1 KiB).
impl From<usize> for RecordLimit {
    fn from(max_key_and_value: usize) -> Self {
        RecordLimit { max_message_bytes: max_key_and_value, per_record: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_as_kafka_writes_them() {
        // Zigzag doubles the length: 63 still fits one byte, 64 needs two.
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
        assert_eq!(varint_len(8191), 2);
        assert_eq!(varint_len(8192), 3);
        assert_eq!(varint_len(usize::MAX), 10);
        assert_eq!(header_len("tailgate.contract", b"1"), 1 + 17 + 1 + 1);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let limit = RecordLimit::new(100, [("a", b"x".as_slice())]);
        assert_eq!(limit.key_and_value(), 0, "headers and framing alone exceed the limit");
        assert_eq!(limit.record_size(usize::MAX, usize::MAX), usize::MAX);
        let huge = RecordLimit::new(usize::MAX, [("a", b"x".as_slice())]);
        assert_eq!(huge.key_and_value(), usize::MAX - 4 - RECORD_FRAMING);
    }
}
