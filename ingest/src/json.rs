//! OTLP/JSON decoding.
//!
//! `opentelemetry-proto`'s serde derives follow most of the OTLP JSON rules (lowerCamelCase keys, hex trace and span
//! IDs, enums as integers, unknown keys ignored), but each 64-bit integer field accepts only one of the two forms
//! the specification allows (most timestamps only strings; counts, `asInt` and a few message types' timestamps only
//! numbers), and some message types require fields a sender may omit at their default. We rewrite the JSON to what
//! the derives expect before deserializing, so every form the specification allows is accepted.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// 64-bit fields the derive reads as strings: the timestamps of spans, events, log records and number and
/// histogram points.
fn wants_string(kind: Kind, key: &str) -> bool {
    key.ends_with("UnixNano") && !kind.plain_timestamps()
}

/// 64-bit fields the derive reads as numbers, including the timestamps of the messages whose derive has no
/// string form for them.
fn wants_number(kind: Kind, key: &str) -> bool {
    matches!(key, "count" | "bucketCounts" | "asInt" | "zeroCount")
        || (key.ends_with("UnixNano") && kind.plain_timestamps())
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
    normalize(&mut value, Kind::Any);
    serde_json::from_value(value).map_err(|e| format!("invalid OTLP/JSON: {e}"))
}

/// Where an object sits, for the message types whose derives lack `serde(default)` and so require fields that
/// OTLP/JSON senders may omit (proto3 defaults).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    ExponentialHistogram,
    Summary,
    ExponentialPoint,
    SummaryPoint,
    Quantile,
    Exemplar,
    Buckets,
}

impl Kind {
    /// Messages whose `*UnixNano` fields the derive reads as numbers only.
    fn plain_timestamps(self) -> bool {
        matches!(self, Kind::ExponentialPoint | Kind::SummaryPoint | Kind::Exemplar)
    }

    fn child(self, key: &str) -> Kind {
        match (self, key) {
            (_, "exponentialHistogram") => Kind::ExponentialHistogram,
            (Kind::Any, "summary") => Kind::Summary,
            (Kind::ExponentialHistogram, "dataPoints") => Kind::ExponentialPoint,
            (Kind::Summary, "dataPoints") => Kind::SummaryPoint,
            (_, "exemplars") => Kind::Exemplar,
            (Kind::ExponentialPoint, "positive" | "negative") => Kind::Buckets,
            (Kind::SummaryPoint, "quantileValues") => Kind::Quantile,
            _ => Kind::Any,
        }
    }

    /// The proto3 default of every field the derive requires.
    fn defaults(self) -> Vec<(&'static str, Value)> {
        let zero_time = || Value::from(0);
        let empty = || Value::Array(Vec::new());
        match self {
            Kind::ExponentialPoint => vec![
                ("attributes", empty()),
                ("startTimeUnixNano", zero_time()),
                ("timeUnixNano", zero_time()),
                ("count", Value::from(0)),
                ("scale", Value::from(0)),
                ("zeroCount", Value::from(0)),
                ("flags", Value::from(0)),
                ("exemplars", empty()),
                ("zeroThreshold", Value::from(0.0)),
            ],
            Kind::SummaryPoint => vec![
                ("attributes", empty()),
                ("startTimeUnixNano", zero_time()),
                ("timeUnixNano", zero_time()),
                ("count", Value::from(0)),
                ("sum", Value::from(0.0)),
                ("quantileValues", empty()),
                ("flags", Value::from(0)),
            ],
            Kind::Quantile => vec![("quantile", Value::from(0.0)), ("value", Value::from(0.0))],
            Kind::Exemplar => vec![
                ("filteredAttributes", empty()),
                ("timeUnixNano", zero_time()),
                ("spanId", Value::String(String::new())),
                ("traceId", Value::String(String::new())),
            ],
            Kind::Buckets => vec![("offset", Value::from(0)), ("bucketCounts", empty())],
            Kind::Any | Kind::ExponentialHistogram | Kind::Summary => Vec::new(),
        }
    }
}

fn normalize(value: &mut Value, kind: Kind) {
    match value {
        Value::Object(map) => {
            for (key, default) in kind.defaults() {
                map.entry(key).or_insert(default);
            }
            for (key, field) in map.iter_mut() {
                if wants_string(kind, key) {
                    for_each_scalar(field, &|v| {
                        if let Value::Number(n) = v {
                            *v = Value::String(n.to_string());
                        }
                    });
                } else if wants_number(kind, key) {
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
                    normalize(field, kind.child(key));
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| normalize(item, kind)),
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

    /// Senders may leave out any field at its default; the derives of these message types require them.
    #[test]
    fn fields_left_at_their_default_may_be_omitted() {
        let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"checkout.latency","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[
                {"count":"3","timeUnixNano":"1700000000000000000","positive":{"bucketCounts":["1","2"]},
                 "exemplars":[{"asDouble":1.5,"timeUnixNano":"5"}]}]}},
            {"name":"rpc.duration","summary":{"dataPoints":[{"count":2,"quantileValues":[{"quantile":0.5}]}]}},
            {"name":"checkout.value","histogram":{"dataPoints":[{"count":1}]}}
        ]}]}]}"#;
        let request: ExportMetricsServiceRequest = decode(body.as_bytes()).unwrap();
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::ExponentialHistogram(h)) = &metrics[0].data else { panic!("an exponential histogram") };
        assert_eq!(h.data_points[0].count, 3);
        assert_eq!(h.data_points[0].positive.as_ref().unwrap().bucket_counts, [1, 2]);
        assert_eq!(h.data_points[0].sum, None, "absent optional fields stay absent");
        assert_eq!(h.data_points[0].time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(h.data_points[0].exemplars[0].time_unix_nano, 5);
        let Some(Data::Summary(s)) = &metrics[1].data else { panic!("a summary") };
        assert_eq!(s.data_points[0].quantile_values[0].quantile, 0.5);
        let Some(Data::Histogram(h)) = &metrics[2].data else { panic!("a histogram") };
        assert_eq!(h.data_points[0].sum, None, "no default is invented where the derive already has one");
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
