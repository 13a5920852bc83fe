//! OTLP attributes as Prometheus and Loki want them: keys as label names, values as label text, structured values
//! as JSON. Both backends render attributes the same way, so a service's labels read alike in metrics and logs.
//!
//! A leaf: this module imports nothing else from the crate.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use serde_json::Value;

/// A valid Prometheus label name for an attribute key: invalid characters become `_`, a leading digit gets `key_`.
/// Loki's label and structured-metadata names follow the same rule.
pub fn sanitize_label(key: &str) -> String {
    let mut name: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "key_");
    }
    name
}

/// An attribute value as a label value: strings as is, other scalars in their usual form, the rest as JSON.
pub fn value_string(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format_float(*d),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(other) => any_json(other).to_string(),
    }
}

/// How Prometheus writes a float in a label (`0.5`, `1`, `+Inf`).
pub fn format_float(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// An OTLP value as JSON: maps as objects, arrays as arrays, bytes as hex.
pub fn any_json(value: &any_value::Value) -> Value {
    match value {
        any_value::Value::StringValue(s) => Value::String(s.clone()),
        any_value::Value::BoolValue(b) => Value::Bool(*b),
        any_value::Value::IntValue(i) => Value::from(*i),
        any_value::Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map(Value::Number).unwrap_or(Value::Null),
        any_value::Value::BytesValue(b) => Value::String(hex::encode(b)),
        any_value::Value::ArrayValue(array) => {
            Value::Array(array.values.iter().map(|v| v.value.as_ref().map(any_json).unwrap_or(Value::Null)).collect())
        }
        any_value::Value::KvlistValue(list) => Value::Object(
            list.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().and_then(|v| v.value.as_ref()).map(any_json).unwrap_or(Value::Null),
                    )
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(sanitize_label("http.route"), "http_route");
        assert_eq!(sanitize_label("0day"), "key_0day");
        assert_eq!(sanitize_label("k8s.pod-name"), "k8s_pod_name");
    }
}
