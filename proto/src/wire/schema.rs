//! The OTLP trace and log messages as the wire reader needs them: each field's number and kind, from the
//! `opentelemetry-proto` definitions prost decodes with. Validating a message against its schema accepts exactly
//! what prost's decoding accepts: known fields of the right wire type, UTF-8 strings, nested messages within the
//! recursion limit; unknown fields (and groups) skipped.

use super::reader::{Field, Fields, WireError, WireType};

/// What a field holds.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `int32`, `int64`, `uint32`, `uint64`, `bool`, enums.
    Varint,
    /// `fixed32`.
    Fixed32,
    /// `fixed64`, `double`.
    Fixed64,
    Bytes,
    /// UTF-8 text.
    String,
    Message(&'static Schema),
}

impl Kind {
    fn wire_type(self) -> WireType {
        match self {
            Kind::Varint => WireType::Varint,
            Kind::Fixed32 => WireType::ThirtyTwoBit,
            Kind::Fixed64 => WireType::SixtyFourBit,
            Kind::Bytes | Kind::String | Kind::Message(_) => WireType::LengthDelimited,
        }
    }
}

/// A message type: its name (for errors) and its fields (repeated or not: OTLP's repeated fields here are all
/// messages or strings, which are never packed).
#[derive(Debug)]
pub struct Schema {
    pub name: &'static str,
    pub fields: &'static [(u32, &'static str, Kind)],
}

impl Schema {
    fn field(&self, number: u32) -> Option<(&'static str, Kind)> {
        self.fields.iter().find(|(n, _, _)| *n == number).map(|(_, name, kind)| (*name, *kind))
    }
}

/// Checks one field of a message of `schema` read from `fields`, as prost's `merge_field` would.
pub fn check_field(schema: &Schema, fields: &Fields<'_>, field: &Field<'_>) -> Result<(), WireError> {
    let Some((name, kind)) = schema.field(field.number) else {
        // Unknown: prost skips it, but only while the recursion limit allows (groups were checked by the reader).
        if fields.depth() == 0 {
            return Err(WireError::new(field.offset, "messages are nested deeper than the recursion limit of 100"));
        }
        return Ok(());
    };
    if field.wire_type != kind.wire_type() {
        return Err(WireError::new(
            field.offset,
            format!(
                "{}.{name}: invalid wire type: {} (expected {})",
                schema.name,
                field.wire_type.name(),
                kind.wire_type().name()
            ),
        ));
    }
    match kind {
        Kind::String => {
            if std::str::from_utf8(field.value).is_err() {
                return Err(WireError::new(
                    field.offset,
                    format!("{}.{name}: invalid string value: not UTF-8", schema.name),
                ));
            }
        }
        Kind::Message(inner) => validate(inner, fields.nested(field)?)?,
        Kind::Varint | Kind::Fixed32 | Kind::Fixed64 | Kind::Bytes => {}
    }
    Ok(())
}

/// Checks every field of a message of `schema`, recursively.
pub fn validate(schema: &Schema, mut fields: Fields<'_>) -> Result<(), WireError> {
    while let Some(field) = fields.next() {
        check_field(schema, &fields, &field?)?;
    }
    Ok(())
}

pub static ANY_VALUE: Schema = Schema {
    name: "AnyValue",
    fields: &[
        (1, "string_value", Kind::String),
        (2, "bool_value", Kind::Varint),
        (3, "int_value", Kind::Varint),
        (4, "double_value", Kind::Fixed64),
        (5, "array_value", Kind::Message(&ARRAY_VALUE)),
        (6, "kvlist_value", Kind::Message(&KEY_VALUE_LIST)),
        (7, "bytes_value", Kind::Bytes),
    ],
};

pub static ARRAY_VALUE: Schema = Schema { name: "ArrayValue", fields: &[(1, "values", Kind::Message(&ANY_VALUE))] };

pub static KEY_VALUE_LIST: Schema =
    Schema { name: "KeyValueList", fields: &[(1, "values", Kind::Message(&KEY_VALUE))] };

pub static KEY_VALUE: Schema =
    Schema { name: "KeyValue", fields: &[(1, "key", Kind::String), (2, "value", Kind::Message(&ANY_VALUE))] };

pub static INSTRUMENTATION_SCOPE: Schema = Schema {
    name: "InstrumentationScope",
    fields: &[
        (1, "name", Kind::String),
        (2, "version", Kind::String),
        (3, "attributes", Kind::Message(&KEY_VALUE)),
        (4, "dropped_attributes_count", Kind::Varint),
    ],
};

pub static ENTITY_REF: Schema = Schema {
    name: "EntityRef",
    fields: &[
        (1, "schema_url", Kind::String),
        (2, "type", Kind::String),
        (3, "id_keys", Kind::String),
        (4, "description_keys", Kind::String),
    ],
};

pub static RESOURCE: Schema = Schema {
    name: "Resource",
    fields: &[
        (1, "attributes", Kind::Message(&KEY_VALUE)),
        (2, "dropped_attributes_count", Kind::Varint),
        (3, "entity_refs", Kind::Message(&ENTITY_REF)),
    ],
};

pub static STATUS: Schema =
    Schema { name: "Status", fields: &[(2, "message", Kind::String), (3, "code", Kind::Varint)] };

pub static EVENT: Schema = Schema {
    name: "Span.Event",
    fields: &[
        (1, "time_unix_nano", Kind::Fixed64),
        (2, "name", Kind::String),
        (3, "attributes", Kind::Message(&KEY_VALUE)),
        (4, "dropped_attributes_count", Kind::Varint),
    ],
};

pub static LINK: Schema = Schema {
    name: "Span.Link",
    fields: &[
        (1, "trace_id", Kind::Bytes),
        (2, "span_id", Kind::Bytes),
        (3, "trace_state", Kind::String),
        (4, "attributes", Kind::Message(&KEY_VALUE)),
        (5, "dropped_attributes_count", Kind::Varint),
        (6, "flags", Kind::Fixed32),
    ],
};

pub static SPAN: Schema = Schema {
    name: "Span",
    fields: &[
        (1, "trace_id", Kind::Bytes),
        (2, "span_id", Kind::Bytes),
        (3, "trace_state", Kind::String),
        (4, "parent_span_id", Kind::Bytes),
        (16, "flags", Kind::Fixed32),
        (5, "name", Kind::String),
        (6, "kind", Kind::Varint),
        (7, "start_time_unix_nano", Kind::Fixed64),
        (8, "end_time_unix_nano", Kind::Fixed64),
        (9, "attributes", Kind::Message(&KEY_VALUE)),
        (10, "dropped_attributes_count", Kind::Varint),
        (11, "events", Kind::Message(&EVENT)),
        (12, "dropped_events_count", Kind::Varint),
        (13, "links", Kind::Message(&LINK)),
        (14, "dropped_links_count", Kind::Varint),
        (15, "status", Kind::Message(&STATUS)),
    ],
};

pub static LOG_RECORD: Schema = Schema {
    name: "LogRecord",
    fields: &[
        (1, "time_unix_nano", Kind::Fixed64),
        (11, "observed_time_unix_nano", Kind::Fixed64),
        (2, "severity_number", Kind::Varint),
        (3, "severity_text", Kind::String),
        (5, "body", Kind::Message(&ANY_VALUE)),
        (6, "attributes", Kind::Message(&KEY_VALUE)),
        (7, "dropped_attributes_count", Kind::Varint),
        (8, "flags", Kind::Fixed32),
        (9, "trace_id", Kind::Bytes),
        (10, "span_id", Kind::Bytes),
        (12, "event_name", Kind::String),
    ],
};

/// The shape of a three-level OTLP request around its items: `resource_*` (1) → `scope_*` (2) → items (2).
#[derive(Debug)]
pub struct Levels {
    /// `ResourceSpans` / `ResourceLogs`: 1 `resource`, 2 scopes, 3 `schema_url`.
    pub resource: &'static Schema,
    /// `ScopeSpans` / `ScopeLogs`: 1 `scope`, 2 items, 3 `schema_url`.
    pub scope: &'static Schema,
    pub item: &'static Schema,
}

pub static RESOURCE_SPANS: Schema = Schema {
    name: "ResourceSpans",
    fields: &[
        (1, "resource", Kind::Message(&RESOURCE)),
        (2, "scope_spans", Kind::Message(&SCOPE_SPANS)),
        (3, "schema_url", Kind::String),
    ],
};

pub static SCOPE_SPANS: Schema = Schema {
    name: "ScopeSpans",
    fields: &[
        (1, "scope", Kind::Message(&INSTRUMENTATION_SCOPE)),
        (2, "spans", Kind::Message(&SPAN)),
        (3, "schema_url", Kind::String),
    ],
};

pub static RESOURCE_LOGS: Schema = Schema {
    name: "ResourceLogs",
    fields: &[
        (1, "resource", Kind::Message(&RESOURCE)),
        (2, "scope_logs", Kind::Message(&SCOPE_LOGS)),
        (3, "schema_url", Kind::String),
    ],
};

pub static SCOPE_LOGS: Schema = Schema {
    name: "ScopeLogs",
    fields: &[
        (1, "scope", Kind::Message(&INSTRUMENTATION_SCOPE)),
        (2, "log_records", Kind::Message(&LOG_RECORD)),
        (3, "schema_url", Kind::String),
    ],
};

/// `ExportTraceServiceRequest`, and `ExportLogsServiceRequest`: what a record, or records joined, hold.
pub static EXPORT_TRACE_SERVICE_REQUEST: Schema =
    Schema { name: "ExportTraceServiceRequest", fields: &[(1, "resource_spans", Kind::Message(&RESOURCE_SPANS))] };
pub static EXPORT_LOGS_SERVICE_REQUEST: Schema =
    Schema { name: "ExportLogsServiceRequest", fields: &[(1, "resource_logs", Kind::Message(&RESOURCE_LOGS))] };

pub static TRACES: Levels = Levels { resource: &RESOURCE_SPANS, scope: &SCOPE_SPANS, item: &SPAN };
pub static LOGS: Levels = Levels { resource: &RESOURCE_LOGS, scope: &SCOPE_LOGS, item: &LOG_RECORD };
