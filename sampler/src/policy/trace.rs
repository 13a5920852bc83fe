//! A trace as the policies see it: every span received for one trace ID, with its resource — read from the spans'
//! buffered bytes, never decoded whole. A policy reads only what it needs: times and status from each span's
//! top-level fields ([`SpanFields`]), an attribute by decoding only the attributes of that key.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tailgate_proto::wire::reader::{Fields, WireType};
use tailgate_proto::wire::SpanFields;

use crate::buffer::PendingTrace;

/// `Span.attributes`, and `KeyValue.key`.
const ATTRIBUTES: u32 = 9;
const KEY: u32 = 1;

pub struct TraceView<'a> {
    pub trace_id: &'a [u8],
    trace: &'a PendingTrace,
}

impl<'a> TraceView<'a> {
    pub fn new(trace_id: &'a [u8], trace: &'a PendingTrace) -> Self {
        TraceView { trace_id, trace }
    }

    /// Whether any span's top-level fields satisfy `f`.
    pub fn any_span(&self, f: impl Fn(&SpanFields<'_>) -> bool) -> bool {
        self.trace.encoded_spans().any(|(_, span)| f(&SpanFields::read(span)))
    }

    pub fn span_count(&self) -> usize {
        self.trace.spans as usize
    }

    /// From the earliest start to the latest end of any span, as the Collector's latency policy measures it.
    pub fn duration_ns(&self) -> u64 {
        let summary = &self.trace.summary;
        summary.latest_end_ns.saturating_sub(summary.earliest_start_ns)
    }

    /// Whether any span has status code `code`.
    pub fn has_status(&self, code: i32) -> bool {
        self.trace.summary.has_status(code)
    }

    /// Whether any span, or the resource of any span, has attribute `key` with a value `matches` accepts.
    pub fn any_attribute(&self, key: &str, matches: impl Fn(&Value) -> bool) -> bool {
        let accepts =
            |kv: &KeyValue| kv.key == key && kv.value.as_ref().and_then(|v| v.value.as_ref()).is_some_and(&matches);
        let resource_match = self.trace.resources().any(|r: &Resource| r.attributes.iter().any(accepts));
        resource_match || self.trace.encoded_spans().any(|(_, span)| span_attributes(span, key).any(|kv| accepts(&kv)))
    }
}

/// The attributes of `span` whose key is `key`, each decoded; the others are only looked at.
pub(crate) fn span_attributes<'s>(span: &'s [u8], key: &'s str) -> impl Iterator<Item = KeyValue> + 's {
    Fields::new(span)
        .map_while(Result::ok)
        .filter(|f| f.number == ATTRIBUTES && f.wire_type == WireType::LengthDelimited)
        .filter(move |attribute| {
            // The last `key` written wins, as in prost.
            let written = Fields::new(attribute.value)
                .map_while(Result::ok)
                .filter(|f| f.number == KEY && f.wire_type == WireType::LengthDelimited)
                .last();
            written.is_some_and(|f| f.value == key.as_bytes())
        })
        // Validated when the record was scanned.
        .filter_map(|attribute| KeyValue::decode(attribute.value).ok())
}
