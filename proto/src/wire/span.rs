//! The few fields of a span that routing and RED metrics need, read from its bytes without decoding the rest.

use super::reader::{decode_varint, Fields, WireType};

/// A span's top-level fields as prost would decode them (the last occurrence of a field wins; the `status`
/// messages of several occurrences merge, so its code is the last one written). Strings that are not UTF-8 read
/// as empty: the span was validated before ([`super::scan`]), so that does not happen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanFields<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    /// The bytes of `trace_state` and `name`: checked as UTF-8 only when read as text ([`Self::trace_state`],
    /// [`Self::name`]), so reading a span's times or status costs no text check.
    pub trace_state_bytes: &'a [u8],
    pub name_bytes: &'a [u8],
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    /// `status.code`.
    pub status_code: i32,
}

fn fixed64(value: &[u8]) -> u64 {
    value.try_into().map_or(0, u64::from_le_bytes)
}

fn varint(value: &[u8]) -> u64 {
    decode_varint(value).map_or(0, |(v, _)| v)
}

impl<'a> SpanFields<'a> {
    pub fn trace_state(&self) -> &'a str {
        std::str::from_utf8(self.trace_state_bytes).unwrap_or_default()
    }

    pub fn name(&self) -> &'a str {
        std::str::from_utf8(self.name_bytes).unwrap_or_default()
    }

    /// Reads `span`, the bytes of one `Span` message.
    pub fn read(span: &'a [u8]) -> Self {
        let mut out = SpanFields::default();
        for field in Fields::new(span).map_while(Result::ok) {
            match (field.number, field.wire_type) {
                (1, WireType::LengthDelimited) => out.trace_id = field.value,
                (2, WireType::LengthDelimited) => out.span_id = field.value,
                (3, WireType::LengthDelimited) => out.trace_state_bytes = field.value,
                (4, WireType::LengthDelimited) => out.parent_span_id = field.value,
                (5, WireType::LengthDelimited) => out.name_bytes = field.value,
                (6, WireType::Varint) => out.kind = varint(field.value) as i32,
                (7, WireType::SixtyFourBit) => out.start_time_unix_nano = fixed64(field.value),
                (8, WireType::SixtyFourBit) => out.end_time_unix_nano = fixed64(field.value),
                (15, WireType::LengthDelimited) => {
                    for status in Fields::new(field.value).map_while(Result::ok) {
                        if (status.number, status.wire_type) == (3, WireType::Varint) {
                            out.status_code = varint(status.value) as i32;
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    proptest! {
        #[test]
        fn fields_read_as_prost_decodes_them(
            trace_id in prop::collection::vec(any::<u8>(), 0..17),
            parent in prop::collection::vec(any::<u8>(), 0..9),
            name in "[a-zA-Z /\u{e9}]{0,20}",
            trace_state in "[a-z=,]{0,12}",
            kind in 0..6i32,
            times in any::<(u64, u64)>(),
            status in prop::option::of(0..3i32),
            other_status in prop::option::of(0..3i32),
        ) {
            let span = Span {
                trace_id: trace_id.clone(),
                span_id: vec![7; 8],
                parent_span_id: parent.clone(),
                name: name.clone(),
                trace_state: trace_state.clone(),
                kind,
                start_time_unix_nano: times.0,
                end_time_unix_nano: times.1,
                status: status.map(|code| Status { code, message: "m".into() }),
                ..Default::default()
            };
            let mut bytes = span.encode_to_vec();
            // A second status message merges into the first: its code, when set, wins.
            if let Some(code) = other_status {
                Span { status: Some(Status { code, message: String::new() }), ..Default::default() }.encode(&mut bytes).unwrap();
            }
            let decoded = Span::decode(bytes.as_slice()).unwrap();
            let read = SpanFields::read(&bytes);
            prop_assert_eq!(read.trace_id, decoded.trace_id.as_slice());
            prop_assert_eq!(read.parent_span_id, decoded.parent_span_id.as_slice());
            prop_assert_eq!(read.name(), decoded.name.as_str());
            prop_assert_eq!(read.trace_state(), decoded.trace_state.as_str());
            prop_assert_eq!(read.kind, decoded.kind);
            prop_assert_eq!((read.start_time_unix_nano, read.end_time_unix_nano), (decoded.start_time_unix_nano, decoded.end_time_unix_nano));
            prop_assert_eq!(read.status_code, decoded.status.map_or(0, |s| s.code));
        }
    }
}
