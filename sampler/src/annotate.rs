//! What the sampler writes into the spans of a kept trace: the policy that kept it, and the sampling threshold.
//!
//! Written on the span's bytes, without decoding it: a protobuf reader takes the last occurrence of a singular
//! field, so a new `trace_state` is appended after the span's own, and the policy attribute is one more entry of the
//! repeated `attributes`, after the span's.

use tailgate_proto::wire::reader::put_len_prefix;
use tailgate_proto::wire::SpanFields;

use crate::policy::tracestate_threshold;

/// The attribute naming the policy that kept a span's trace, as the Collector's `recordpolicy` gate writes it.
pub const POLICY_ATTRIBUTE: &str = "tailsampling.policy";
/// In a dry run (`sampler.dry_run`): whether the policies would have kept the trace.
pub const WOULD_KEEP_ATTRIBUTE: &str = "tailgate.sampler.would_keep";
/// In a dry run: the policy that would have kept the trace (absent if it would have been dropped).
pub const WOULD_POLICY_ATTRIBUTE: &str = "tailgate.sampler.would_keep_policy";

/// Field numbers in `Span`, `KeyValue` and `AnyValue`.
const SPAN_TRACE_STATE: u32 = 3;
const SPAN_ATTRIBUTES: u32 = 9;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_VALUE_STRING: u32 = 1;
const ANY_VALUE_BOOL: u32 = 2;

/// The marks of one kept trace, worked out once and written into each of its spans.
#[derive(Debug, Default)]
pub struct Marks {
    /// Attributes added to every span ([`POLICY_ATTRIBUTE`], the dry run's), as encoded `attributes` fields.
    policy: Option<Vec<u8>>,
    /// The `ot` entry of a probabilistic keep (`ot=th:…`).
    threshold: Option<String>,
}

impl Marks {
    /// `policy`: the policy to record, if policies are recorded; `percentage`: the sampling percentage of a
    /// probabilistic keep.
    pub fn new(policy: Option<&str>, percentage: Option<f64>) -> Self {
        let policy = policy.map(|policy| attribute(POLICY_ATTRIBUTE, ANY_VALUE_STRING, policy.as_bytes()));
        let threshold = percentage.map(|p| format!("ot=th:{}", tracestate_threshold(p)));
        Marks { policy, threshold }
    }

    /// The marks of a dry run: the trace is kept whatever the policies say, and every span says what they said —
    /// [`WOULD_KEEP_ATTRIBUTE`] and, if they would have kept it, [`WOULD_POLICY_ATTRIBUTE`]. No sampling threshold
    /// goes into `tracestate`: nothing was sampled away.
    pub fn dry_run(would_keep: bool, policy: Option<&str>) -> Self {
        let mut fields = attribute(WOULD_KEEP_ATTRIBUTE, ANY_VALUE_BOOL, &[u8::from(would_keep)]);
        if let (true, Some(policy)) = (would_keep, policy) {
            fields.extend(attribute(WOULD_POLICY_ATTRIBUTE, ANY_VALUE_STRING, policy.as_bytes()));
        }
        Marks { policy: Some(fields), threshold: None }
    }

    /// Appends `span` (one `Span` message) with the marks to `out`. A span whose `tracestate` already has an `ot`
    /// entry keeps it; otherwise the threshold goes first, before the other vendors' entries.
    pub fn write_span(&self, span: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(span);
        if let Some(entry) = &self.threshold {
            let current = SpanFields::read(span).trace_state();
            let trace_state = if current.is_empty() {
                Some(entry.clone())
            } else if !current.split(',').any(|member| member.trim().starts_with("ot=")) {
                Some(format!("{entry},{current}"))
            } else {
                None
            };
            if let Some(trace_state) = trace_state {
                put_len_prefix(out, SPAN_TRACE_STATE, trace_state.len());
                out.extend_from_slice(trace_state.as_bytes());
            }
        }
        if let Some(field) = &self.policy {
            out.extend_from_slice(field);
        }
    }
}

/// One encoded `attributes` field: `key` with a value of `AnyValue` field `value_field` holding `value` (a string's
/// bytes, or a bool's varint).
fn attribute(key: &str, value_field: u32, value: &[u8]) -> Vec<u8> {
    let mut any = Vec::new();
    if value_field == ANY_VALUE_BOOL {
        any.push((ANY_VALUE_BOOL << 3) as u8);
        any.extend_from_slice(value);
    } else {
        put_len_prefix(&mut any, value_field, value.len());
        any.extend_from_slice(value);
    }
    let mut key_value = Vec::new();
    put_len_prefix(&mut key_value, KEY_VALUE_KEY, key.len());
    key_value.extend_from_slice(key.as_bytes());
    put_len_prefix(&mut key_value, KEY_VALUE_VALUE, any.len());
    key_value.extend_from_slice(&any);
    let mut field = Vec::new();
    put_len_prefix(&mut field, SPAN_ATTRIBUTES, key_value.len());
    field.extend_from_slice(&key_value);
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
    }

    fn marked(marks: &Marks, span: &Span) -> Span {
        let mut out = Vec::new();
        marks.write_span(&span.encode_to_vec(), &mut out);
        Span::decode(out.as_slice()).expect("a valid span")
    }

    fn span(trace_state: &str) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: trace_state.into(),
            name: "GET /cart".into(),
            attributes: vec![string("http.route", "/cart")],
            ..Default::default()
        }
    }

    #[test]
    fn the_policy_is_one_more_attribute_and_nothing_else_changes() {
        let original = span("vendor=x");
        let got = marked(&Marks::new(Some("errors"), None), &original);
        let mut expected = original;
        expected.attributes.push(string(POLICY_ATTRIBUTE, "errors"));
        assert_eq!(got, expected);
    }

    #[test]
    fn the_threshold_goes_first_unless_an_ot_entry_is_there() {
        let marks = Marks::new(None, Some(25.0));
        for (before, after) in [
            ("", "ot=th:c"),
            ("vendor=x,other=y", "ot=th:c,vendor=x,other=y"),
            ("vendor=x, ot=th:8", "vendor=x, ot=th:8"),
            ("ot=rv:abc", "ot=rv:abc"),
        ] {
            let got = marked(&marks, &span(before));
            let mut expected = span(before);
            expected.trace_state = after.into();
            assert_eq!(got, expected, "tracestate {before:?}");
        }
    }

    #[test]
    fn a_dry_run_says_what_the_policies_would_have_done() {
        let flag = |on: bool| KeyValue {
            key: WOULD_KEEP_ATTRIBUTE.into(),
            value: Some(AnyValue { value: Some(any_value::Value::BoolValue(on)) }),
        };
        let original = span("vendor=x");
        let mut kept = original.clone();
        kept.attributes.extend([flag(true), string(WOULD_POLICY_ATTRIBUTE, "errors")]);
        assert_eq!(marked(&Marks::dry_run(true, Some("errors")), &original), kept);
        let mut dropped = original.clone();
        dropped.attributes.push(flag(false));
        assert_eq!(marked(&Marks::dry_run(false, None), &original), dropped);
    }

    #[test]
    fn without_marks_the_bytes_are_copied() {
        let bytes = span("vendor=x").encode_to_vec();
        let mut out = Vec::new();
        Marks::default().write_span(&bytes, &mut out);
        assert_eq!(out, bytes);
    }
}
