//! What the sampler writes into the spans of a kept trace: the policy that kept it, and the sampling threshold.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::policy::tracestate_threshold;

/// The attribute naming the policy that kept a span's trace, as the Collector's `recordpolicy` gate writes it.
pub const POLICY_ATTRIBUTE: &str = "tailsampling.policy";

/// Adds [`POLICY_ATTRIBUTE`] = `policy` to every span.
pub fn mark_policy(batches: &mut [ResourceSpans], policy: &str) {
    for span in batches.iter_mut().flat_map(|rs| &mut rs.scope_spans).flat_map(|ss| &mut ss.spans) {
        span.attributes.push(KeyValue {
            key: POLICY_ATTRIBUTE.to_owned(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(policy.to_owned())) }),
        });
    }
}

/// Records the threshold of a probabilistic keep in each span's `tracestate` (`ot=th:…`), unless the span already
/// carries an `ot` entry.
pub fn mark_threshold(batches: &mut [ResourceSpans], percentage: f64) {
    let entry = format!("ot=th:{}", tracestate_threshold(percentage));
    for span in batches.iter_mut().flat_map(|rs| &mut rs.scope_spans).flat_map(|ss| &mut ss.spans) {
        if span.trace_state.is_empty() {
            span.trace_state = entry.clone();
        } else if !span.trace_state.split(',').any(|m| m.trim().starts_with("ot=")) {
            span.trace_state = format!("{entry},{}", span.trace_state);
        }
    }
}
