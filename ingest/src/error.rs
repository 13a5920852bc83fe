//! Why an export request failed, and what each transport answers. This file is the one place that maps errors to
//! HTTP statuses and gRPC codes, following the OTLP specification's retry rules.

use std::time::Duration;

use axum::http::StatusCode;
use tonic::Code;

/// A request that was not (wholly) accepted.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The body is not valid OTLP in the declared encoding. Not retryable.
    #[error("cannot decode the request: {0}")]
    Decode(String),
    /// The body, before or after decompression, is larger than `ingest.max_request_bytes`. Not retryable.
    #[error("request is larger than the limit of {limit} bytes (after decompression)")]
    TooLarge { limit: u64 },
    /// An HTTP `Content-Type` or `Content-Encoding` the gateway does not speak. Not retryable.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The in-flight byte budget is spent. Retryable after `retry_after`.
    #[error("the gateway is at its in-flight limit; retry later")]
    Throttled { retry_after: Duration },
    /// Kafka's producer queue is full. Retryable after `retry_after`.
    #[error("Kafka is not keeping up; retry later")]
    KafkaBusy { retry_after: Duration },
    /// Kafka did not acknowledge every record. Retryable; a retry may duplicate the records that did land.
    #[error("Kafka did not acknowledge the data: {0}")]
    KafkaUnavailable(String),
    /// The gateway is shutting down. Retryable, on another gateway.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl ExportError {
    /// The gRPC code the OTLP specification asks for.
    pub fn grpc_code(&self) -> Code {
        match self {
            ExportError::Decode(_) => Code::InvalidArgument,
            // RESOURCE_EXHAUSTED without RetryInfo: the client must not retry an over-size request.
            ExportError::TooLarge { .. } => Code::ResourceExhausted,
            ExportError::UnsupportedMediaType(_) => Code::InvalidArgument,
            // RESOURCE_EXHAUSTED with RetryInfo: retryable.
            ExportError::Throttled { .. } => Code::ResourceExhausted,
            ExportError::KafkaBusy { .. } | ExportError::KafkaUnavailable(_) | ExportError::ShuttingDown => {
                Code::Unavailable
            }
        }
    }

    /// The HTTP status the OTLP specification asks for. Only 429, 502, 503 and 504 are retried by clients.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ExportError::Decode(_) => StatusCode::BAD_REQUEST,
            ExportError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ExportError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ExportError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ExportError::KafkaBusy { .. } | ExportError::KafkaUnavailable(_) | ExportError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// How long the client should wait, when the server is throttling.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExportError::Throttled { retry_after } | ExportError::KafkaBusy { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The `reason` label of the rejection metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ExportError::Decode(_) => "decode_error",
            ExportError::TooLarge { .. } => "request_too_large",
            ExportError::UnsupportedMediaType(_) => "unsupported_media_type",
            ExportError::Throttled { .. } => "throttled",
            ExportError::KafkaBusy { .. } => "kafka_busy",
            ExportError::KafkaUnavailable(_) => "kafka_unavailable",
            ExportError::ShuttingDown => "shutting_down",
        }
    }

    /// The `google.rpc.Status` describing this error, with `RetryInfo` when throttling.
    pub fn rpc_status(&self) -> tailgate_proto::status::Status {
        let code = self.grpc_code() as i32;
        match self.retry_after() {
            Some(delay) => tailgate_proto::status::Status::with_retry_delay(code, self.to_string(), delay),
            None => tailgate_proto::status::Status { code, message: self.to_string(), details: Vec::new() },
        }
    }

    pub fn to_grpc(&self) -> tonic::Status {
        let details = prost::Message::encode_to_vec(&self.rpc_status());
        tonic::Status::with_details(self.grpc_code(), self.to_string(), details.into())
    }
}
