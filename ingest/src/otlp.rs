//! What differs between the three OTLP signals at the gateway: their topic and their response message.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::de::DeserializeOwned;
use tailgate_kafka::Topics;
use tailgate_proto::Signal;

use crate::sink::Accepted;

/// The rejected count as OTLP's `int64`: saturates rather than turning negative.
fn rejected(accepted: &Accepted) -> i64 {
    i64::try_from(accepted.rejected).unwrap_or(i64::MAX)
}

/// An OTLP export request the gateway receives.
pub trait Otlp: Signal + DeserializeOwned + Send + 'static {
    type Response: prost::Message + Default + Send + 'static;
    /// `traces`, `metrics` or `logs`: the metric label and the last segment of the HTTP path.
    const SIGNAL: &'static str;
    /// The JSON name of the partial-success counter.
    const REJECTED_JSON: &'static str;

    fn topic(topics: &Topics) -> &str;
    fn response(accepted: &Accepted) -> Self::Response;
}

impl Otlp for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const SIGNAL: &'static str = "traces";
    const REJECTED_JSON: &'static str = "rejectedSpans";

    fn topic(topics: &Topics) -> &str {
        &topics.spans
    }
    fn response(accepted: &Accepted) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: accepted
                .error_message
                .clone()
                .map(|error_message| ExportTracePartialSuccess { rejected_spans: rejected(accepted), error_message }),
        }
    }
}

impl Otlp for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;
    const SIGNAL: &'static str = "metrics";
    const REJECTED_JSON: &'static str = "rejectedDataPoints";

    fn topic(topics: &Topics) -> &str {
        &topics.metrics
    }
    fn response(accepted: &Accepted) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: accepted.error_message.clone().map(|error_message| ExportMetricsPartialSuccess {
                rejected_data_points: rejected(accepted),
                error_message,
            }),
        }
    }
}

impl Otlp for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const SIGNAL: &'static str = "logs";
    const REJECTED_JSON: &'static str = "rejectedLogRecords";

    fn topic(topics: &Topics) -> &str {
        &topics.logs
    }
    fn response(accepted: &Accepted) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: accepted.error_message.clone().map(|error_message| ExportLogsPartialSuccess {
                rejected_log_records: rejected(accepted),
                error_message,
            }),
        }
    }
}

/// The JSON response body: `{}` on full success, as OTLP asks that `partialSuccess` be unset.
pub fn response_json<S: Otlp>(accepted: &Accepted) -> serde_json::Value {
    match &accepted.error_message {
        None => serde_json::json!({}),
        Some(message) => serde_json::json!({
            "partialSuccess": { S::REJECTED_JSON: rejected(accepted).to_string(), "errorMessage": message }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_counts_saturate_instead_of_turning_negative() {
        let accepted = Accepted { accepted: 0, rejected: usize::MAX, error_message: Some("all of them".into()) };
        let response = <ExportTraceServiceRequest as Otlp>::response(&accepted);
        assert_eq!(response.partial_success.unwrap().rejected_spans, i64::MAX);
        let json = response_json::<ExportLogsServiceRequest>(&accepted);
        assert_eq!(json["partialSuccess"]["rejectedLogRecords"], i64::MAX.to_string());
    }
}
