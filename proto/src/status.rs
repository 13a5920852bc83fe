//! The `google.rpc` messages OTLP uses to describe errors: the body of an OTLP/HTTP error response, and the
//! `grpc-status-details-bin` of an OTLP/gRPC one (which carries `RetryInfo` when the server throttles).
//!
//! Written by hand rather than generated: they are three small, frozen messages.

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Status {
    /// A `google.rpc.Code` value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message, in English.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details, such as [`RetryInfo`].
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: how long the client should wait before retrying.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<Duration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The type URL of [`RetryInfo`] inside an [`Any`].
pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

impl Status {
    /// A status whose details hold a `RetryInfo` asking the client to wait `delay`.
    pub fn with_retry_delay(code: i32, message: impl Into<String>, delay: std::time::Duration) -> Self {
        let retry = RetryInfo {
            retry_delay: Some(Duration { seconds: delay.as_secs() as i64, nanos: delay.subsec_nanos() as i32 }),
        };
        Status {
            code,
            message: message.into(),
            details: vec![Any {
                type_url: RETRY_INFO_TYPE_URL.to_owned(),
                value: prost::Message::encode_to_vec(&retry),
            }],
        }
    }

    /// The retry delay carried in the details, if any.
    pub fn retry_delay(&self) -> Option<std::time::Duration> {
        self.details
            .iter()
            .filter(|any| any.type_url == RETRY_INFO_TYPE_URL)
            .find_map(|any| <RetryInfo as prost::Message>::decode(any.value.as_slice()).ok())
            .and_then(|info| info.retry_delay)
            .map(|d| std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn retry_delay_round_trips() {
        let status = Status::with_retry_delay(14, "busy", std::time::Duration::from_millis(1500));
        let decoded = Status::decode(status.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.retry_delay(), Some(std::time::Duration::from_millis(1500)));
        assert_eq!(decoded.message, "busy");
    }
}
