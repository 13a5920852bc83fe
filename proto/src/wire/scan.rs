//! Scanning an OTLP trace or logs request in its wire format: the resources, scopes and items it holds, as slices
//! of the request's bytes, with each item's trace and span ID — validated as prost would decode the request, but
//! without building a message per span.

use super::reader::{Field, Fields, WireError, WireType};
use super::schema::{check_field, Levels, Schema};

/// An OTLP request of one signal, as slices of its bytes. Unknown fields of the request itself are dropped (as
/// prost drops them); below it, every field is kept as written.
#[derive(Debug, Default)]
pub struct Scanned<'a> {
    pub resources: Vec<ScannedResource<'a>>,
}

/// A `ResourceSpans` / `ResourceLogs`.
#[derive(Debug, Default)]
pub struct ScannedResource<'a> {
    /// The payloads of its `resource` field, in order: several occurrences of a message field merge.
    pub resource: Vec<&'a [u8]>,
    /// The resource re-encoded by enrichment; written instead of `resource` when set.
    pub enriched: Option<Vec<u8>>,
    /// Its other fields (`schema_url`, unknown ones) but the scopes, whole and as written, with their numbers.
    pub rest: Vec<(u32, &'a [u8])>,
    pub scopes: Vec<ScannedScope<'a>>,
}

/// A `ScopeSpans` / `ScopeLogs`.
#[derive(Debug, Default)]
pub struct ScannedScope<'a> {
    /// Its fields but the items, whole and as written, with their numbers.
    pub shell: Vec<(u32, &'a [u8])>,
    pub items: Vec<Item<'a>>,
}

/// A span or log record: its encoded bytes (the payload of its field), and its IDs (the last occurrence of each
/// field wins, as in prost; empty when absent).
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub bytes: &'a [u8],
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
}

/// Where a signal's items keep their IDs.
#[derive(Debug)]
pub struct Ids {
    pub trace_id: u32,
    pub span_id: u32,
}

/// Span: `trace_id` = 1, `span_id` = 2.
pub const SPAN_IDS: Ids = Ids { trace_id: 1, span_id: 2 };
/// LogRecord: `trace_id` = 9, `span_id` = 10.
pub const LOG_IDS: Ids = Ids { trace_id: 9, span_id: 10 };

/// The field number of the children at each of the two levels (`scope_spans` in `ResourceSpans`, `spans` in
/// `ScopeSpans`, and the same for logs).
const CHILDREN: u32 = 2;
/// The field of `resource_spans` / `resource_logs` in the request, and of `resource` in a `ResourceSpans`.
const RESOURCES: u32 = 1;

/// The request around the resources, for the unknown fields it may hold.
static REQUEST: Schema = Schema { name: "request", fields: &[] };

fn expect_message(schema: &Schema, name: &str, field: &Field<'_>) -> Result<(), WireError> {
    if field.wire_type == WireType::LengthDelimited {
        return Ok(());
    }
    Err(WireError::new(
        field.offset,
        format!("{}.{name}: invalid wire type: {} (expected length-delimited)", schema.name, field.wire_type.name()),
    ))
}

/// What a scan keeps per item, and a split per item it writes: its [`Item`] and a slice in a record's content.
pub const SCAN_BYTES_PER_ITEM: usize = std::mem::size_of::<Item<'static>>() + std::mem::size_of::<&[u8]>();

/// What scanning a request will hold, known before it runs: its items, and the bytes of everything the scan keeps
/// per item, per resource, per scope and per field it copies as written — twice that, as a `Vec` may double.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanCost {
    pub items: usize,
    pub bytes: usize,
}

/// The [`ScanCost`] of a trace or logs request, counted from the levels above the items (items are not read), so
/// that a gateway pays for a scan's memory before it runs: a request of a million empty resources costs what it
/// makes, like one of a million spans. Refuses only what prost refuses too; [`scan`] checks the rest.
pub fn scan_cost(request: &[u8]) -> Result<ScanCost, WireError> {
    const FIELD: usize = std::mem::size_of::<(u32, &[u8])>();
    let (mut items, mut bytes) = (0usize, 0usize);
    let mut top = Fields::new(request);
    while let Some(field) = top.next() {
        let field = field?;
        if field.number != RESOURCES || field.wire_type != WireType::LengthDelimited {
            continue;
        }
        bytes = bytes.saturating_add(std::mem::size_of::<ScannedResource<'static>>());
        let mut resource = top.nested(&field)?;
        while let Some(field) = resource.next() {
            let field = field?;
            if field.number != CHILDREN || field.wire_type != WireType::LengthDelimited {
                bytes = bytes.saturating_add(FIELD);
                continue;
            }
            bytes = bytes.saturating_add(std::mem::size_of::<ScannedScope<'static>>());
            for field in resource.nested(&field)? {
                if field?.number == CHILDREN {
                    items = items.saturating_add(1);
                    bytes = bytes.saturating_add(SCAN_BYTES_PER_ITEM);
                } else {
                    bytes = bytes.saturating_add(FIELD);
                }
            }
        }
    }
    Ok(ScanCost { items, bytes: bytes.saturating_mul(2) })
}

/// The items in a trace or logs request, counted as [`scan_cost`] counts them.
pub fn count_items(request: &[u8]) -> Result<usize, WireError> {
    scan_cost(request).map(|cost| cost.items)
}

/// Scans `request`, an `ExportTraceServiceRequest` (with [`super::schema::TRACES`] and [`SPAN_IDS`]) or an
/// `ExportLogsServiceRequest` (with [`super::schema::LOGS`] and [`LOG_IDS`]); refuses it where prost would.
pub fn scan<'a>(request: &'a [u8], levels: &Levels, ids: &Ids) -> Result<Scanned<'a>, WireError> {
    let mut scanned = Scanned::default();
    let mut top = Fields::new(request);
    while let Some(field) = top.next() {
        let field = field?;
        if field.number != RESOURCES {
            // The request's only field; anything else is unknown and skipped, within the recursion limit.
            check_field(&REQUEST, &top, &field)?;
            continue;
        }
        expect_message(levels.resource, "resource", &field)?;
        scanned.resources.push(scan_resource(top.nested(&field)?, levels, ids)?);
    }
    Ok(scanned)
}

fn scan_resource<'a>(mut fields: Fields<'a>, levels: &Levels, ids: &Ids) -> Result<ScannedResource<'a>, WireError> {
    let mut resource = ScannedResource::default();
    while let Some(field) = fields.next() {
        let field = field?;
        match field.number {
            RESOURCES => {
                check_field(levels.resource, &fields, &field)?;
                resource.resource.push(field.value);
            }
            CHILDREN => {
                expect_message(levels.resource, "scopes", &field)?;
                resource.scopes.push(scan_scope(fields.nested(&field)?, levels, ids)?);
            }
            _ => {
                check_field(levels.resource, &fields, &field)?;
                resource.rest.push((field.number, field.whole));
            }
        }
    }
    Ok(resource)
}

fn scan_scope<'a>(mut fields: Fields<'a>, levels: &Levels, ids: &Ids) -> Result<ScannedScope<'a>, WireError> {
    let mut scope = ScannedScope::default();
    while let Some(field) = fields.next() {
        let field = field?;
        if field.number != CHILDREN {
            check_field(levels.scope, &fields, &field)?;
            scope.shell.push((field.number, field.whole));
            continue;
        }
        expect_message(levels.scope, "items", &field)?;
        let mut item = Item { bytes: field.value, trace_id: &[], span_id: &[] };
        let mut inner = fields.nested(&field)?;
        while let Some(part) = inner.next() {
            let part = part?;
            check_field(levels.item, &inner, &part)?;
            if part.number == ids.trace_id {
                item.trace_id = part.value;
            } else if part.number == ids.span_id {
                item.span_id = part.value;
            }
        }
        scope.items.push(item);
    }
    Ok(scope)
}
