//! A trace as the policies see it: every span received for one trace ID, with its resource.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

pub struct TraceView<'a> {
    pub trace_id: &'a [u8],
    /// The trace's spans, grouped by the resource and scope they arrived with.
    pub batches: &'a [ResourceSpans],
}

impl<'a> TraceView<'a> {
    pub fn spans(&self) -> impl Iterator<Item = (Option<&'a Resource>, &'a Span)> + 'a {
        self.batches.iter().flat_map(|rs| {
            let resource = rs.resource.as_ref();
            rs.scope_spans.iter().flat_map(|ss| &ss.spans).map(move |span| (resource, span))
        })
    }

    pub fn span_count(&self) -> usize {
        self.batches.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
    }

    /// From the earliest start to the latest end of any span, as the Collector's latency policy measures it.
    pub fn duration_ns(&self) -> u64 {
        let (start, end) = self.spans().fold((u64::MAX, 0u64), |(start, end), (_, span)| {
            (start.min(span.start_time_unix_nano), end.max(span.end_time_unix_nano))
        });
        end.saturating_sub(start)
    }

    /// Whether any span, or the resource of any span, has attribute `key` with a value `matches` accepts.
    pub fn any_attribute(&self, key: &str, matches: impl Fn(&Value) -> bool) -> bool {
        let resource_match = self.batches.iter().filter_map(|rs| rs.resource.as_ref()).any(|r| {
            r.attributes
                .iter()
                .any(|kv| kv.key == key && kv.value.as_ref().and_then(|v| v.value.as_ref()).is_some_and(&matches))
        });
        resource_match
            || self.spans().any(|(_, span)| {
                span.attributes
                    .iter()
                    .any(|kv| kv.key == key && kv.value.as_ref().and_then(|v| v.value.as_ref()).is_some_and(&matches))
            })
    }
}
