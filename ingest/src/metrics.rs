//! The metrics the gateway emits. Counts are of items (spans, log records, data points), not requests or
//! batches, so that `received = accepted + rejected` holds per signal.

/// Items in requests that were decoded, by `signal` and `transport`.
pub const ITEMS_RECEIVED: &str = "tailgate_ingest_items_received_total";
/// Items Kafka acknowledged, by `signal`.
pub const ITEMS_ACCEPTED: &str = "tailgate_ingest_items_accepted_total";
/// Items not written, by `signal` and `reason` (`invalid_id`, `too_large`, `throttled`, `kafka_busy`,
/// `kafka_unavailable`, `shutting_down`).
pub const ITEMS_REJECTED: &str = "tailgate_ingest_items_rejected_total";
/// Requests answered, by `signal`, `transport` and `outcome` (`success`, `partial_success`, or an error reason).
pub const REQUESTS: &str = "tailgate_ingest_requests_total";
/// Request body bytes as received (before decompression), by `signal` and `transport`.
pub const REQUEST_BYTES: &str = "tailgate_ingest_request_bytes_total";
/// Seconds from the first record queued to the last acknowledged, per request, by `signal`.
pub const PRODUCE_DURATION: &str = "tailgate_kafka_produce_duration_seconds";
/// Kafka records acknowledged, by `signal`.
pub const RECORDS_PRODUCED: &str = "tailgate_kafka_records_produced_total";
/// Whether Kafka answered the last metadata probe (1) or not (0).
pub const KAFKA_UP: &str = "tailgate_kafka_up";
/// Requests refused for their credentials, by `transport` and `reason` (`missing`, `unknown_token`, `expired`,
/// `wrong_audience`, …).
pub const AUTH_FAILURES: &str = "tailgate_ingest_auth_failures_total";
/// Credential entries (a token file, the JWKS) refused at a reload, by `transport`; counted once per refusal.
pub const CREDENTIALS_REFUSED: &str = "tailgate_ingest_credentials_refused_total";
/// Requests refused because their tenant was over its rate limit, by `tenant`.
pub const RATE_LIMITED_REQUESTS: &str = "tailgate_ingest_rate_limited_requests_total";
/// Bytes (after decompression) of those requests, by `tenant`.
pub const RATE_LIMITED_BYTES: &str = "tailgate_ingest_rate_limited_bytes_total";
/// Attributes removed or values masked by `ingest.redaction`, by signal and rule (its config path).
pub const REDACTIONS: &str = "tailgate_ingest_redactions_total";
pub use crate::budget::IN_FLIGHT_BYTES;

/// Registers descriptions, so `/metrics` explains every series.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(ITEMS_RECEIVED, "Items (spans, log records, data points) in decoded export requests.");
    describe_counter!(ITEMS_ACCEPTED, "Items written to Kafka and acknowledged.");
    describe_counter!(ITEMS_REJECTED, "Items not written to Kafka, by reason.");
    describe_counter!(REDACTIONS, "Attributes removed or values masked before Kafka, by signal and rule.");
    describe_counter!(REQUESTS, "Export requests answered, by outcome.");
    describe_counter!(REQUEST_BYTES, Unit::Bytes, "Request body bytes as received.");
    describe_histogram!(
        PRODUCE_DURATION,
        Unit::Seconds,
        "Time from queueing a request's records to their acknowledgement."
    );
    describe_counter!(RECORDS_PRODUCED, "Kafka records acknowledged.");
    describe_gauge!(IN_FLIGHT_BYTES, Unit::Bytes, "Request bytes held until Kafka acknowledges them.");
    describe_gauge!(KAFKA_UP, "1 when Kafka answered the last metadata probe.");
    describe_counter!(AUTH_FAILURES, "Requests refused for their credentials, by reason.");
    describe_counter!(CREDENTIALS_REFUSED, "Credential entries refused at a reload (a token revoked, the JWKS kept).");
    describe_counter!(RATE_LIMITED_REQUESTS, "Requests refused because their tenant was over its rate limit.");
    describe_counter!(RATE_LIMITED_BYTES, Unit::Bytes, "Bytes of requests refused for their tenant's rate limit.");
    tailgate_tls::describe_metrics();
}

/// Every metric name the gateway registers, for checks that dashboards only query real series.
pub const ALL: &[&str] = &[
    ITEMS_RECEIVED,
    ITEMS_ACCEPTED,
    ITEMS_REJECTED,
    REQUESTS,
    REQUEST_BYTES,
    PRODUCE_DURATION,
    RECORDS_PRODUCED,
    IN_FLIGHT_BYTES,
    KAFKA_UP,
    AUTH_FAILURES,
    RATE_LIMITED_REQUESTS,
    RATE_LIMITED_BYTES,
];
