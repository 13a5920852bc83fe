//! OTLP/JSON decoding.
//!
//! `opentelemetry-proto`'s serde derives follow most of the OTLP JSON rules (lowerCamelCase keys, hex trace and span
//! IDs, enums as integers, unknown keys ignored), but each 64-bit integer field accepts only one of the two forms
//! the specification allows: the `*UnixNano` timestamps only strings, the counts and `asInt` only numbers. We
//! rewrite those fields to the form the derive expects before deserializing, so both forms are accepted.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// 64-bit fields the derive reads as strings.
fn wants_string(key: &str) -> bool {
    key.ends_with("UnixNano")
}

/// 64-bit fields the derive reads as numbers.
fn wants_number(key: &str) -> bool {
    matches!(key, "count" | "bucketCounts" | "asInt" | "zeroCount")
}

pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    // The request messages' derives lack `serde(default)`, but OTLP/JSON lets senders omit empty fields: `{}` is a
    // valid (empty) request. Unknown keys are ignored, so supplying all three roots is harmless.
    if let Value::Object(root) = &mut value {
        for key in ["resourceSpans", "resourceMetrics", "resourceLogs"] {
            root.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        }
    }
    normalize(&mut value);
    serde_json::from_value(value).map_err(|e| format!("invalid OTLP/JSON: {e}"))
}

fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if wants_string(key) {
                    for_each_scalar(field, &|v| {
                        if let Value::Number(n) = v {
                            *v = Value::String(n.to_string());
                        }
                    });
                } else if wants_number(key) {
                    for_each_scalar(field, &|v| {
                        if let Value::String(s) = v {
                            if let Ok(n) = s.parse::<u64>() {
                                *v = Value::from(n);
                            } else if let Ok(n) = s.parse::<i64>() {
                                *v = Value::from(n);
                            }
                        }
                    });
                } else {
                    normalize(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// Applies `f` to a scalar, or to each element of an array of scalars.
fn for_each_scalar(value: &mut Value, f: &dyn Fn(&mut Value)) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(f),
        other => f(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;

    #[test]
    fn accepts_both_forms_of_64_bit_integers() {
        for time in ["\"1700000000000000000\"", "1700000000000000000"] {
            let body = format!(
                r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{
                    "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
                    "name":"checkout","kind":2,"startTimeUnixNano":{time},"endTimeUnixNano":{time},
                    "attributes":[{{"key":"n","value":{{"intValue":"42"}}}}],
                    "somethingNew":{{"ignored":true}}
                }}]}}]}}]}}"#
            );
            let request: ExportTraceServiceRequest = decode(body.as_bytes()).unwrap();
            let span = &request.resource_spans[0].scope_spans[0].spans[0];
            assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
            assert_eq!(span.trace_id, hex::decode("5b8efff798038103d269b633813fc60c").unwrap());
            assert_eq!(span.kind, 2);
        }
        for count in ["\"3\"", "3"] {
            let body = format!(
                r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"checkout.value",
                    "histogram":{{"aggregationTemporality":2,"dataPoints":[{{"count":{count},"sum":12.5,
                    "bucketCounts":[{count},"0"],"explicitBounds":[10],"timeUnixNano":"1"}}]}}}}]}}]}}]}}"#
            );
            let request: ExportMetricsServiceRequest = decode(body.as_bytes()).unwrap();
            let Some(Data::Histogram(h)) = &request.resource_metrics[0].scope_metrics[0].metrics[0].data else {
                panic!("a histogram")
            };
            assert_eq!(h.data_points[0].count, 3);
            assert_eq!(h.data_points[0].bucket_counts, [3, 0]);
        }
    }

    #[test]
    fn rejects_what_the_specification_rejects() {
        // Base64 IDs, enum names, and plain garbage.
        let base64_id = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}"#;
        assert!(decode::<ExportTraceServiceRequest>(base64_id.as_bytes()).is_err());
        let enum_name = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_SERVER"}]}]}]}"#;
        assert!(decode::<ExportTraceServiceRequest>(enum_name.as_bytes()).is_err());
        assert!(decode::<ExportTraceServiceRequest>(b"{not json").is_err());
    }
}
