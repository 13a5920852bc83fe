//! Loki's push API messages (`pkg/push/push.proto`, package `logproto`). Field numbers follow the official
//! definitions; the body of `POST /loki/api/v1/push` is snappy block-compressed protobuf with
//! `Content-Type: application/x-protobuf`.

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one stream, named by its labels in Prometheus text form (`{a="x", b="y"}`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: a line, its time, and structured metadata (indexed-free key/values such as `trace_id`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    pub fn from_unix_nanos(nanos: u64) -> Timestamp {
        Timestamp { seconds: (nanos / 1_000_000_000) as i64, nanos: (nanos % 1_000_000_000) as i32 }
    }

    /// Saturates: a timestamp from a foreign writer may be negative or past 2554, and must not wrap (or panic).
    pub fn as_unix_nanos(&self) -> u64 {
        let seconds = u64::try_from(self.seconds).unwrap_or(0);
        let nanos = u64::try_from(self.nanos).unwrap_or(0);
        seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_saturate_at_the_extremes() {
        assert_eq!(Timestamp::from_unix_nanos(1_700_000_000_123).as_unix_nanos(), 1_700_000_000_123);
        assert_eq!(Timestamp::from_unix_nanos(u64::MAX).as_unix_nanos(), u64::MAX);
        assert_eq!(Timestamp { seconds: i64::MAX, nanos: i32::MAX }.as_unix_nanos(), u64::MAX);
        assert_eq!(Timestamp { seconds: -1, nanos: -1 }.as_unix_nanos(), 0);
    }
}
