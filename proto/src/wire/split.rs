//! Splitting a scanned trace or logs request into Kafka records without decoding it: each record is assembled
//! from the bytes of its items and of their resources and scopes, by the same packing as [`crate::split()`].
//!
//! A record is a valid `Export*ServiceRequest` that prost decodes to exactly the items, resources and scopes that
//! decoding the request and splitting it gives; its bytes differ only in what prost does not keep (unknown fields
//! are kept here, fields stay in the order they were written).

use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::reader::{len_field_size, put_len_prefix, Fields};
use super::scan::{count_items, scan, Ids, Item, Scanned, ScannedResource, ScannedScope, LOG_IDS, SPAN_IDS};
use super::schema::{validate, Levels, EXPORT_LOGS_SERVICE_REQUEST, EXPORT_TRACE_SERVICE_REQUEST, LOGS, TRACES};
use super::WireError;
use crate::record_size::RecordLimit;
use crate::signals::{invalid_log_ids, invalid_span_ids, log_key};
use crate::split::{resource_key, Open, Packer, Rejection, Split, FIELD_FRAMING};

/// The signals split on their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireSignal {
    Traces,
    Logs,
}

impl WireSignal {
    /// What its items are, in messages: `trace`, `log`.
    pub fn name(self) -> &'static str {
        match self {
            WireSignal::Traces => "trace",
            WireSignal::Logs => "log",
        }
    }

    fn levels(self) -> &'static Levels {
        match self {
            WireSignal::Traces => &TRACES,
            WireSignal::Logs => &LOGS,
        }
    }

    fn ids(self) -> &'static Ids {
        match self {
            WireSignal::Traces => &SPAN_IDS,
            WireSignal::Logs => &LOG_IDS,
        }
    }

    /// Scans an encoded `ExportTraceServiceRequest` or `ExportLogsServiceRequest`; refuses it where prost would.
    pub fn scan(self, request: &[u8]) -> Result<Scanned<'_>, WireError> {
        scan(request, self.levels(), self.ids())
    }

    /// Checks `request` as prost would decode it, keeping nothing, and counts its items.
    pub fn validate(self, request: &[u8]) -> Result<usize, WireError> {
        let schema = match self {
            WireSignal::Traces => &EXPORT_TRACE_SERVICE_REQUEST,
            WireSignal::Logs => &EXPORT_LOGS_SERVICE_REQUEST,
        };
        validate(schema, Fields::new(request))?;
        count_items(request)
    }

    fn invalid(self, item: &Item<'_>) -> Option<Rejection> {
        match self {
            WireSignal::Traces => invalid_span_ids(item.trace_id, item.span_id),
            WireSignal::Logs => invalid_log_ids(item.trace_id, item.span_id),
        }
    }
}

impl ScannedResource<'_> {
    /// The resource as prost decodes it (occurrences merged), or the enriched one.
    pub fn decode_resource(&self) -> Option<Resource> {
        if let Some(enriched) = &self.enriched {
            return Resource::decode(enriched.as_slice()).ok();
        }
        if self.resource.is_empty() {
            return None;
        }
        let mut resource = Resource::default();
        for payload in &self.resource {
            // Validated by the scan; merging is what prost does with a message field written more than once.
            let _ = resource.merge(*payload);
        }
        Some(resource)
    }

    /// Replaces the resource with `resource` (removes it for `None`), as enrichment changed it.
    pub fn set_resource(&mut self, resource: Option<&Resource>) {
        self.resource.clear();
        self.enriched = resource.map(Message::encode_to_vec);
    }

    fn resource_fields(&self) -> impl Iterator<Item = &[u8]> {
        let enriched = self.enriched.as_deref();
        let raw = if enriched.is_some() { &self.resource[..0] } else { &self.resource[..] };
        enriched.into_iter().chain(raw.iter().copied())
    }

    /// Its fields but the scopes, encoded: decoded as a `ResourceSpans` / `ResourceLogs`, its resource and
    /// `schema_url` without the scopes.
    pub fn shell(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.shell_len());
        for payload in self.resource_fields() {
            put_len_prefix(&mut out, 1, payload.len());
            out.extend_from_slice(payload);
        }
        write_fields(&mut out, &self.rest, |_| true);
        out
    }

    /// The bytes of its fields but the scopes.
    fn shell_len(&self) -> usize {
        let resource: usize = self.resource_fields().map(|p| len_field_size(1, p.len())).sum();
        resource + self.rest.iter().map(|(_, f)| f.len()).sum::<usize>()
    }
}

impl ScannedScope<'_> {
    /// Its fields but the items, encoded: decoded as a `ScopeSpans` / `ScopeLogs`, its scope and `schema_url`.
    pub fn shell(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_fields(&mut out, &self.shell, |_| true);
        out
    }
}

/// A record's content: per resource (by index in the request) its scopes (by index) and their items' bytes.
type Groups<'a> = Vec<(usize, Vec<(usize, Vec<&'a [u8]>)>)>;

/// Splits `scanned` (a request of `signal`) into records for a topic of `partitions` partitions, none larger than
/// `limit` as a whole. Items with invalid IDs, or too large for a record, are counted, not written.
pub fn split(scanned: &Scanned<'_>, signal: WireSignal, partitions: u32, limit: impl Into<RecordLimit>) -> Split {
    let mut packer = Packer::new(partitions, limit.into());
    let mut out = Split::default();
    let mut open: Vec<Open<Groups<'_>>> = (0..packer.partitions()).map(|_| Open::default()).collect();
    let encode = |groups: Groups<'_>| encode(scanned, groups);

    for (ri, resource) in scanned.resources.iter().enumerate() {
        let resource_shell_len = resource.shell_len().saturating_add(FIELD_FRAMING);
        let resource_key = match signal {
            WireSignal::Logs => resource_key(resource.decode_resource().as_ref()),
            WireSignal::Traces => Vec::new(),
        };
        for (si, scope) in resource.scopes.iter().enumerate() {
            let scope_shell_len = scope.shell.iter().map(|(_, f)| f.len()).sum::<usize>().saturating_add(FIELD_FRAMING);
            for item in &scope.items {
                if let Some(reason) = signal.invalid(item) {
                    out.reject(reason, 1);
                    continue;
                }
                let key = match signal {
                    WireSignal::Traces => item.trace_id,
                    WireSignal::Logs => log_key(item.trace_id, &resource_key),
                };
                let item_len = item.bytes.len().saturating_add(FIELD_FRAMING);
                let placed = match packer.place((ri, si), resource_shell_len, scope_shell_len, item_len, key) {
                    Ok(placed) => placed,
                    Err(reason) => {
                        out.reject(reason, 1);
                        continue;
                    }
                };
                let slot = &mut open[placed.partition];
                if placed.flush_first {
                    out.push(slot.flush(placed.partition, encode));
                }
                slot.add(key, 1);
                if placed.new_resource {
                    slot.content.push((ri, Vec::new()));
                }
                let scopes = &mut slot.content.last_mut().expect("a resource was pushed above").1;
                if placed.new_scope {
                    scopes.push((si, Vec::new()));
                }
                scopes.last_mut().expect("a scope was pushed above").1.push(item.bytes);
            }
        }
    }
    out.finish(open, encode);
    out
}

/// The field number of scopes in a resource and of items in a scope.
const CHILDREN: u32 = 2;

fn write_fields(out: &mut Vec<u8>, fields: &[(u32, &[u8])], which: impl Fn(u32) -> bool) {
    for (_, field) in fields.iter().filter(|(n, _)| which(*n)) {
        out.extend_from_slice(field);
    }
}

/// Writes `groups` as an `Export*ServiceRequest`: every level is field 1 (resources) or 2 (scopes, items) of the
/// level above, so one writer serves traces and logs. Fields go in number order around the children, as prost
/// writes them: a request prost encoded gives records byte for byte like [`crate::split()`]'s.
fn encode(scanned: &Scanned<'_>, groups: Groups<'_>) -> Vec<u8> {
    let scope_len = |ri: usize, si: usize, items: &[&[u8]]| -> usize {
        let shell: usize = scanned.resources[ri].scopes[si].shell.iter().map(|(_, f)| f.len()).sum();
        shell + items.iter().map(|item| len_field_size(2, item.len())).sum::<usize>()
    };
    let resource_len = |ri: usize, scopes: &[(usize, Vec<&[u8]>)]| -> usize {
        let scopes: usize = scopes.iter().map(|(si, items)| len_field_size(2, scope_len(ri, *si, items))).sum();
        scanned.resources[ri].shell_len() + scopes
    };
    let total: usize = groups.iter().map(|(ri, scopes)| len_field_size(1, resource_len(*ri, scopes))).sum();
    let mut out = Vec::with_capacity(total);
    for (ri, scopes) in &groups {
        let resource = &scanned.resources[*ri];
        put_len_prefix(&mut out, 1, resource_len(*ri, scopes));
        for payload in resource.resource_fields() {
            put_len_prefix(&mut out, 1, payload.len());
            out.extend_from_slice(payload);
        }
        for (si, items) in scopes {
            let shell = &resource.scopes[*si].shell;
            put_len_prefix(&mut out, 2, scope_len(*ri, *si, items));
            write_fields(&mut out, shell, |n| n < CHILDREN);
            for item in items {
                put_len_prefix(&mut out, 2, item.len());
                out.extend_from_slice(item);
            }
            write_fields(&mut out, shell, |n| n > CHILDREN);
        }
        write_fields(&mut out, &resource.rest, |_| true);
    }
    debug_assert_eq!(out.len(), total, "lengths are computed as written");
    out
}
