//! Whether an OTLP client should retry a failed export: the client side of the OTLP specification's "Failures"
//! tables, for gRPC and for HTTP, in one place for every Tailgate client (the loadgen, the exporters).
//!
//! gRPC codes are taken as numbers (`google.rpc.Code`, what `tonic::Code as i32` and
//! [`Status::code`](crate::status::Status::code) give), so this crate needs no gRPC library.

/// `google.rpc.Code` values that appear in the specification's table.
const CANCELLED: i32 = 1;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
const ABORTED: i32 = 10;
const OUT_OF_RANGE: i32 = 11;
const UNAVAILABLE: i32 = 14;
const DATA_LOSS: i32 = 15;

/// Whether a gRPC export that failed with `code` may be retried. `RESOURCE_EXHAUSTED` is retryable only when the
/// server said when to retry (`has_retry_info`: a `google.rpc.RetryInfo` in the status details); every other code
/// is retryable or not whatever the details say.
pub fn grpc_is_retryable(code: i32, has_retry_info: bool) -> bool {
    match code {
        CANCELLED | DEADLINE_EXCEEDED | ABORTED | OUT_OF_RANGE | UNAVAILABLE | DATA_LOSS => true,
        RESOURCE_EXHAUSTED => has_retry_info,
        _ => false,
    }
}

/// Whether an HTTP export answered with `status` may be retried: 429, 502, 503 and 504 only. (Success is not a
/// failure; callers check for 200 first.)
pub fn http_is_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `google.rpc.Code`, against the specification's table.
    #[test]
    fn grpc_follows_the_specification() {
        let codes = [
            (0, "OK", false),
            (1, "CANCELLED", true),
            (2, "UNKNOWN", false),
            (3, "INVALID_ARGUMENT", false),
            (4, "DEADLINE_EXCEEDED", true),
            (5, "NOT_FOUND", false),
            (6, "ALREADY_EXISTS", false),
            (7, "PERMISSION_DENIED", false),
            (8, "RESOURCE_EXHAUSTED", false),
            (9, "FAILED_PRECONDITION", false),
            (10, "ABORTED", true),
            (11, "OUT_OF_RANGE", true),
            (12, "UNIMPLEMENTED", false),
            (13, "INTERNAL", false),
            (14, "UNAVAILABLE", true),
            (15, "DATA_LOSS", true),
            (16, "UNAUTHENTICATED", false),
        ];
        for (code, name, retryable) in codes {
            assert_eq!(grpc_is_retryable(code, false), retryable, "{name} without RetryInfo");
            assert_eq!(grpc_is_retryable(code, true), retryable || code == 8, "{name} with RetryInfo");
        }
        assert!(!grpc_is_retryable(-1, true) && !grpc_is_retryable(17, true), "unknown codes are permanent");
    }

    #[test]
    fn http_follows_the_specification() {
        let retryable: Vec<u16> = (100..600).filter(|s| http_is_retryable(*s)).collect();
        assert_eq!(retryable, [429, 502, 503, 504]);
    }
}
