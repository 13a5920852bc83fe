//! Why an export request failed, and what each transport answers: the gateway's one status table ([`Kind::answer`]),
//! following the OTLP specification's retry rules. The gRPC handlers, the HTTP handlers and the rewrite of tonic's
//! own codec errors all read their codes from it.

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
    /// The body did not arrive whole within `ingest.read_timeout`. Retryable over gRPC; OTLP/HTTP has no
    /// retryable status for a client that was too slow, so 408 is final there.
    #[error("the request body did not arrive within {after:?}")]
    ReadTimeout { after: Duration },
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
    /// No credentials, or credentials the receiver's `auth` refuses. Not retryable; nothing was read.
    #[error("{}", .0.message())]
    Unauthenticated(crate::auth::Failure),
    /// The trusted tenant header names no valid tenant. Not retryable.
    #[error("invalid tenant: {0}")]
    InvalidTenant(String),
    /// The tenant is past its `ingest.rate_limit`. Retryable after `retry_after`, as Tempo's distributor answers.
    #[error("tenant {tenant} is over its ingest rate limit; retry later")]
    RateLimited { tenant: String, retry_after: Duration },
}

/// An [`ExportError`] without its details: the key of the status table. The codec rewrite in `grpc.rs` has no
/// `ExportError` to hand (tonic refused the request before a handler ran), only the kind of failure it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Decode,
    TooLarge,
    ReadTimeout,
    UnsupportedMediaType,
    Throttled,
    KafkaBusy,
    KafkaUnavailable,
    ShuttingDown,
    Unauthenticated,
    InvalidTenant,
    RateLimited,
}

/// What a client is told about one kind of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// OTLP/HTTP clients retry only 429, 502, 503 and 504.
    pub http: StatusCode,
    /// OTLP/gRPC clients retry `UNAVAILABLE`, and `RESOURCE_EXHAUSTED` only when it carries `RetryInfo` (which
    /// [`ExportError::rpc_status`] adds exactly when there is a [`ExportError::retry_after`]).
    pub grpc: Code,
    /// The `reason` label of the rejection metrics.
    pub reason: &'static str,
}

impl Kind {
    /// The status table.
    pub(crate) const fn answer(self) -> Answer {
        let (http, grpc, reason) = match self {
            Kind::Decode => (StatusCode::BAD_REQUEST, Code::InvalidArgument, "decode_error"),
            // RESOURCE_EXHAUSTED without RetryInfo: the client must not retry an over-size request.
            Kind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted, "request_too_large"),
            Kind::ReadTimeout => (StatusCode::REQUEST_TIMEOUT, Code::DeadlineExceeded, "read_timeout"),
            Kind::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::InvalidArgument, "unsupported_media_type")
            }
            // RESOURCE_EXHAUSTED with RetryInfo: retryable.
            Kind::Throttled => (StatusCode::TOO_MANY_REQUESTS, Code::ResourceExhausted, "throttled"),
            Kind::KafkaBusy => (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, "kafka_busy"),
            Kind::KafkaUnavailable => (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, "kafka_unavailable"),
            Kind::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, "shutting_down"),
            Kind::Unauthenticated => (StatusCode::UNAUTHORIZED, Code::Unauthenticated, "unauthenticated"),
            Kind::InvalidTenant => (StatusCode::BAD_REQUEST, Code::InvalidArgument, "invalid_tenant"),
            // RESOURCE_EXHAUSTED with RetryInfo, 429 with Retry-After: retryable.
            Kind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, Code::ResourceExhausted, "rate_limited"),
        };
        Answer { http, grpc, reason }
    }
}

impl ExportError {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            ExportError::Decode(_) => Kind::Decode,
            ExportError::TooLarge { .. } => Kind::TooLarge,
            ExportError::ReadTimeout { .. } => Kind::ReadTimeout,
            ExportError::UnsupportedMediaType(_) => Kind::UnsupportedMediaType,
            ExportError::Throttled { .. } => Kind::Throttled,
            ExportError::KafkaBusy { .. } => Kind::KafkaBusy,
            ExportError::KafkaUnavailable(_) => Kind::KafkaUnavailable,
            ExportError::ShuttingDown => Kind::ShuttingDown,
            ExportError::Unauthenticated(_) => Kind::Unauthenticated,
            ExportError::InvalidTenant(_) => Kind::InvalidTenant,
            ExportError::RateLimited { .. } => Kind::RateLimited,
        }
    }

    /// The gRPC code, from the status table.
    pub fn grpc_code(&self) -> Code {
        self.kind().answer().grpc
    }

    /// The HTTP status, from the status table.
    pub fn http_status(&self) -> StatusCode {
        self.kind().answer().http
    }

    /// The `reason` label of the rejection metrics, from the status table.
    pub fn reason(&self) -> &'static str {
        self.kind().answer().reason
    }

    /// How long the client should wait, when the server is throttling.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExportError::Throttled { retry_after }
            | ExportError::KafkaBusy { retry_after }
            | ExportError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
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

    /// The gRPC answer: code and message, with [`ExportError::rpc_status`] as `grpc-status-details-bin`.
    pub fn to_grpc(&self) -> tonic::Status {
        let details = prost::Message::encode_to_vec(&self.rpc_status());
        tonic::Status::with_details(self.grpc_code(), self.to_string(), details.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_proto::retry::{grpc_is_retryable, http_is_retryable};

    fn every_error() -> Vec<ExportError> {
        let retry_after = Duration::from_secs(1);
        vec![
            ExportError::Decode("x".into()),
            ExportError::TooLarge { limit: 1 },
            ExportError::ReadTimeout { after: retry_after },
            ExportError::UnsupportedMediaType("x".into()),
            ExportError::Throttled { retry_after },
            ExportError::KafkaBusy { retry_after },
            ExportError::KafkaUnavailable("x".into()),
            ExportError::ShuttingDown,
            ExportError::Unauthenticated(crate::auth::Failure::Expired),
            ExportError::InvalidTenant("x".into()),
            ExportError::RateLimited { tenant: "a".into(), retry_after },
        ]
    }

    /// Whether an OTLP client will retry is part of each answer: the gateway's retryable errors must look
    /// retryable on both transports, and its permanent ones permanent, by the specification's client-side table.
    #[test]
    fn both_transports_agree_with_the_client_side_retry_table() {
        for error in every_error() {
            let retryable = !matches!(
                error.kind(),
                Kind::Decode
                    | Kind::TooLarge
                    | Kind::UnsupportedMediaType
                    | Kind::Unauthenticated
                    | Kind::InvalidTenant
            );
            let status = error.rpc_status();
            let grpc = grpc_is_retryable(status.code, status.retry_delay().is_some());
            let http = http_is_retryable(error.http_status().as_u16());
            // The one deliberate difference: a body too slow to arrive (408 has no retryable twin in OTLP/HTTP).
            let http_retryable = retryable && error.kind() != Kind::ReadTimeout;
            assert_eq!((grpc, http), (retryable, http_retryable), "{error:?}");
        }
    }
}
