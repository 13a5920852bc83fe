//! One partition's traces awaiting a decision, and its event-time clock.
//!
//! Every (trace, record) pair is one unit of unfinished work on that record's offset, held in the partition's
//! offset tracker (`tailgate_kafka::ownership`): released when the trace is dropped, or when its kept spans were
//! acknowledged by Kafka. So the safe offset never passes a span whose fate is not settled.
//!
//! Spans wait in their encoded form: each trace keeps, per record it appeared in, one buffer of length-delimited
//! span bytes and a shared pointer to that record's resource and scope. A buffered span costs its encoded size plus a
//! few bytes; it is never decoded: policies read the fields they need from the bytes, and a kept trace is written
//! from them ([`PendingTrace::encode`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::resource::v1::Resource;
use tailgate_proto::wire::reader::{put_len_prefix, put_varint, varint_len};
use tailgate_proto::wire::{Scanned, SpanFields};

use crate::tenant::Tenant;

/// A trace: its tenant and its trace ID. It reads as the trace ID's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId {
    pub tenant: Tenant,
    pub id: [u8; 16],
}

impl TraceId {
    /// `None` for an ID that is not 16 bytes.
    pub fn new(tenant: Tenant, id: &[u8]) -> Option<TraceId> {
        Some(TraceId { tenant, id: id.try_into().ok()? })
    }
}

/// A trace of the default tenant.
impl From<[u8; 16]> for TraceId {
    fn from(id: [u8; 16]) -> TraceId {
        TraceId { tenant: crate::tenant::DEFAULT, id }
    }
}

impl std::ops::Deref for TraceId {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.id
    }
}

/// Spans of one trace awaiting its decision.
#[derive(Debug, Default)]
pub struct PendingTrace {
    /// Event time (ms) of the record that brought its first span.
    pub first_seen_ms: i64,
    /// Encoded spans, grouped by the resource and scope they came with.
    groups: Vec<SpanGroup>,
    /// Records holding its spans, each once.
    pub offsets: Vec<i64>,
    /// Spans and their encoded bytes (a trace is decided early at 2 GiB, whatever the configured limit, so the
    /// byte count never saturates).
    pub spans: u32,
    pub bytes: u32,
    /// What the latency and status policies ask of every span, gathered as spans arrive so that deciding does not
    /// read each span again: the earliest start, the latest end, and the status codes seen.
    pub summary: SpanSummary,
}

/// A trace's spans summed up for the policies that look at every span's times or status.
#[derive(Debug, Clone, Copy)]
pub struct SpanSummary {
    pub earliest_start_ns: u64,
    pub latest_end_ns: u64,
    /// Bit `c` for status code `c` (0 unset, 1 ok, 2 error); bit 7 for any other value.
    status_codes: u8,
    /// A span without a parent has arrived.
    pub root_seen: bool,
}

impl Default for SpanSummary {
    fn default() -> Self {
        SpanSummary { earliest_start_ns: u64::MAX, latest_end_ns: 0, status_codes: 0, root_seen: false }
    }
}

impl SpanSummary {
    fn status_bit(code: i32) -> u8 {
        1 << u32::try_from(code).ok().filter(|c| *c < 7).unwrap_or(7)
    }

    fn add(&mut self, span: &SpanFields<'_>) {
        self.earliest_start_ns = self.earliest_start_ns.min(span.start_time_unix_nano);
        self.latest_end_ns = self.latest_end_ns.max(span.end_time_unix_nano);
        self.status_codes |= Self::status_bit(span.status_code);
    }

    /// Whether a span with status code `code` is in the trace.
    pub fn has_status(&self, code: i32) -> bool {
        u32::try_from(code).is_ok_and(|c| c < 7) && self.status_codes & Self::status_bit(code) != 0
    }
}

/// A record's resource, decoded once and shared by every scope of it and every trace with spans from it: a record
/// of one large resource and thousands of one-span scopes holds it once, not once per scope.
#[derive(Debug)]
struct ResourceContext {
    /// Decoded for the policies that read resource attributes.
    resource: Option<Resource>,
    /// The `ResourceSpans` fields but its scopes, as the record had them.
    shell: Vec<u8>,
    _held: Held,
}

/// The resource and scope a record's spans came with, shared by every trace that has spans from it.
#[derive(Debug)]
struct Context {
    resource: Arc<ResourceContext>,
    /// The `ScopeSpans` fields but its spans.
    scope_shell: Vec<u8>,
    _held: Held,
}

impl Context {
    fn same_resource(&self, other: &Context) -> bool {
        Arc::ptr_eq(&self.resource, &other.resource) || self.resource.shell == other.resource.shell
    }
}

/// Bytes a shared context holds, counted in its partition's buffered bytes from its creation until the last trace
/// using it is gone.
#[derive(Debug)]
struct Held {
    bytes: usize,
    counter: Arc<AtomicUsize>,
}

impl Held {
    fn new(bytes: usize, counter: &Arc<AtomicUsize>) -> Held {
        counter.fetch_add(bytes, Ordering::Relaxed);
        Held { bytes, counter: Arc::clone(counter) }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What a decoded resource holds, estimated from its encoding: its strings, and the `KeyValue`/`AnyValue` structs
/// around them (about as much again), plus the shell kept beside it.
fn resource_bytes(shell: usize) -> usize {
    3 * shell + 64
}

/// An `ExportTraceServiceRequest` written field by field: resources of scopes of spans, each message
/// length-delimited into its parent once it is complete.
#[derive(Default)]
struct RequestWriter {
    out: Vec<u8>,
    resource: Vec<u8>,
    scope: Vec<u8>,
}

/// The field number of `resource_spans` in the request, `scope_spans` in a resource and `spans` in a scope.
const CHILDREN_REQUEST: u32 = 1;
const CHILDREN: u32 = 2;

impl RequestWriter {
    fn open_resource(&mut self, shell: &[u8]) {
        self.resource.clear();
        self.resource.extend_from_slice(shell);
    }

    fn open_scope(&mut self, shell: &[u8]) {
        self.scope.clear();
        self.scope.extend_from_slice(shell);
    }

    fn span(&mut self, span: &[u8]) {
        put_len_prefix(&mut self.scope, CHILDREN, span.len());
        self.scope.extend_from_slice(span);
    }

    fn close_scope(&mut self) {
        put_len_prefix(&mut self.resource, CHILDREN, self.scope.len());
        self.resource.extend_from_slice(&self.scope);
    }

    fn close_resource(&mut self) {
        put_len_prefix(&mut self.out, CHILDREN_REQUEST, self.resource.len());
        self.out.extend_from_slice(&self.resource);
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// The messages of a buffer of length-delimited ones, as `add_record` writes them.
struct LengthDelimited<'a>(&'a [u8]);

impl<'a> Iterator for LengthDelimited<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, prefix) = tailgate_proto::wire::reader::decode_varint(self.0)?;
        let end = prefix.checked_add(usize::try_from(len).ok()?)?;
        let message = self.0.get(prefix..end)?;
        self.0 = &self.0[end..];
        Some(message)
    }
}

/// Spans of one trace that share a context, each length-delimited.
#[derive(Debug)]
struct SpanGroup {
    context: Arc<Context>,
    encoded: Vec<u8>,
}

impl PendingTrace {
    /// The trace's spans as their bytes, each with its resource.
    pub fn encoded_spans(&self) -> impl Iterator<Item = (Option<&Resource>, &[u8])> + '_ {
        self.groups.iter().flat_map(|group| {
            let resource = group.context.resource.resource.as_ref();
            LengthDelimited(group.encoded.as_slice()).map(move |span| (resource, span))
        })
    }

    /// The resources of the trace's spans, once per group of spans that arrived together.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> + '_ {
        self.groups.iter().filter_map(|group| group.context.resource.resource.as_ref())
    }

    /// The trace as an encoded `ExportTraceServiceRequest`, written from the buffered bytes without decoding a
    /// span: its spans grouped by resource and scope as they arrived (consecutive groups with the same resource or
    /// scope share one message), each span's bytes passed through `write_span`, which appends them to its output,
    /// changed or not.
    pub fn encode(&self, mut write_span: impl FnMut(&[u8], &mut Vec<u8>)) -> Vec<u8> {
        let mut writer = RequestWriter { out: Vec::with_capacity(self.bytes as usize + 64), ..Default::default() };
        let mut span = Vec::new();
        let mut i = 0;
        while i < self.groups.len() {
            let resource = &self.groups[i].context;
            writer.open_resource(&resource.resource.shell);
            while i < self.groups.len() && self.groups[i].context.same_resource(resource) {
                let scope = &self.groups[i].context;
                writer.open_scope(&scope.scope_shell);
                while i < self.groups.len()
                    && self.groups[i].context.same_resource(resource)
                    && self.groups[i].context.scope_shell == scope.scope_shell
                {
                    for bytes in LengthDelimited(&self.groups[i].encoded) {
                        span.clear();
                        write_span(bytes, &mut span);
                        writer.span(&span);
                    }
                    i += 1;
                }
                writer.close_scope();
            }
            writer.close_resource();
        }
        writer.finish()
    }

    /// The trace's spans, decoded and grouped by resource and scope as they arrived.
    #[cfg(test)]
    pub fn decode(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let request = self.encode(|span, out| out.extend_from_slice(span));
        ExportTraceServiceRequest::decode(request.as_slice()).expect("written from scanned bytes").resource_spans
    }
}

#[derive(Debug, Default)]
pub struct PartitionBuffer {
    pub traces: HashMap<TraceId, PendingTrace>,
    /// Trace IDs with the event time of their first span, in arrival order: decisions are due in this order.
    order: VecDeque<(i64, TraceId)>,
    /// Trace IDs with the event time their root span arrived, in arrival order, for `decision_wait_after_root`.
    roots: VecDeque<(i64, TraceId)>,
    /// Event time: the newest record timestamp, or the wall clock once caught up.
    pub clock_ms: i64,
    /// The offset after the newest record handled: with the fetch's high watermark, whether the partition is read
    /// to its end. `None` until a record was handled (nothing buffered, nothing to decide).
    pub next_offset: Option<i64>,
    /// Bytes of the buffered spans; see [`PartitionBuffer::buffered_bytes`] for everything held.
    span_bytes: usize,
    /// Bytes of the resources and scopes the buffered spans share, while any trace holds them.
    context_bytes: Arc<AtomicUsize>,
    /// Kept output sent to Kafka and not yet acknowledged.
    pub unsettled_output: usize,
    /// Traces that reached a per-trace limit and must be decided now.
    pub over_limit: Vec<(TraceId, EarlyDecision)>,
    /// Every record up to the partition's high watermark has been read, and none since: the consumer reported
    /// the partition's end after its last record.
    caught_up: bool,
    /// Per trace, the bytes one scope of the record being added brings it: each trace's new group is allocated
    /// once at its size, not grown span by span (growing was a third of the sampler's CPU, mostly in faulting in
    /// the pages of reallocated buffers).
    scope_bytes: HashMap<TraceId, usize>,
}

/// Why a trace was decided before its `decision_wait`: the `reason` of `tailgate_sampler_early_decisions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyDecision {
    /// It reached `max_spans_per_trace`.
    TraceSpans,
    /// It reached `max_trace_bytes`.
    TraceBytes,
    /// The worker's buffer reached `max_buffered_bytes`; the oldest traces went first.
    Memory,
}

impl EarlyDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            EarlyDecision::TraceSpans => "trace_spans",
            EarlyDecision::TraceBytes => "trace_bytes",
            EarlyDecision::Memory => "memory",
        }
    }
}

/// When a record's spans arrived, in event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTime {
    pub ms: i64,
    /// False for a record whose own timestamp was implausible: its spans are stamped `ms`, but the partition's
    /// clock does not move.
    pub moves_clock: bool,
}

/// A record's timestamp, which moves the clock.
impl From<i64> for EventTime {
    fn from(ms: i64) -> Self {
        EventTime { ms, moves_clock: true }
    }
}

/// Per-trace bounds: a trace that reaches either is decided at once.
#[derive(Clone, Copy, Debug)]
pub struct TraceLimits {
    pub max_spans: usize,
    pub max_bytes: usize,
}

/// What adding one record did.
#[derive(Debug, Default)]
pub struct Added {
    /// Late spans of kept traces, grouped as received, to be forwarded at once: an encoded
    /// `ExportTraceServiceRequest`, empty if there are none.
    pub late_kept: Vec<u8>,
    /// Late spans of dropped traces.
    pub late_dropped: usize,
    /// Spans in `late_kept`.
    pub late_kept_spans: usize,
    /// Units of unfinished work the record now holds: one per trace it added spans to, plus one for the forwarded
    /// late spans (settled once Kafka has them).
    pub units: u32,
    /// Spans whose trace ID is not 16 bytes (another producer's records): they belong to no trace, so they are
    /// counted and left out.
    pub invalid_trace_id: usize,
}

impl PartitionBuffer {
    /// Adds the spans of one record of `tenant`, scanned on its wire format: each span is buffered as its bytes,
    /// never decoded. `decided` answers for traces already decided (true = kept).
    #[allow(clippy::too_many_arguments)]
    pub fn add_record(
        &mut self,
        offset: i64,
        time: impl Into<EventTime>,
        tenant: Tenant,
        request: &Scanned<'_>,
        limits: TraceLimits,
        decided: impl Fn(&TraceId) -> Option<bool>,
    ) -> Added {
        let time = time.into();
        let timestamp_ms = time.ms;
        if time.moves_clock {
            self.clock_ms = self.clock_ms.max(timestamp_ms);
        }
        // Spans of traces already kept, forwarded as they came: an encoded `ExportTraceServiceRequest`.
        let mut late_kept = RequestWriter::default();
        let mut late_dropped = 0;
        let mut late_kept_spans = 0;
        let mut invalid_trace_id = 0;
        let mut new_units = 0u32;
        for resource in &request.resources {
            // Whether `late_kept` has this resource (and below, this scope) open: opened by its first late span.
            let mut late_resource = false;
            // Decoded once per resource of the record, only if a span of it is buffered.
            let mut resource_context: Option<Arc<ResourceContext>> = None;
            for scope in &resource.scopes {
                let mut late_scope = false;
                // Built once per scope, only if a span of it is buffered.
                let mut context: Option<Arc<Context>> = None;
                self.scope_bytes.clear();
                for item in &scope.items {
                    if let Some(trace_id) = TraceId::new(tenant, item.trace_id) {
                        let len = item.bytes.len();
                        *self.scope_bytes.entry(trace_id).or_default() += varint_len(len as u64) + len;
                    }
                }
                for item in &scope.items {
                    let Some(trace_id) = TraceId::new(tenant, item.trace_id) else {
                        invalid_trace_id += 1;
                        continue;
                    };
                    match decided(&trace_id) {
                        Some(true) => {
                            if !late_resource {
                                late_kept.open_resource(&resource.shell());
                                late_resource = true;
                            }
                            if !late_scope {
                                late_kept.open_scope(&scope.shell());
                                late_scope = true;
                            }
                            late_kept.span(item.bytes);
                            late_kept_spans += 1;
                            continue;
                        }
                        Some(false) => {
                            late_dropped += 1;
                            continue;
                        }
                        None => {}
                    }
                    let bytes = item.bytes.len();
                    let trace = self.traces.entry(trace_id).or_insert_with(|| {
                        self.order.push_back((timestamp_ms, trace_id));
                        PendingTrace { first_seen_ms: timestamp_ms, ..Default::default() }
                    });
                    if trace.offsets.last() != Some(&offset) {
                        trace.offsets.push(offset);
                        new_units += 1;
                    }
                    let fields = SpanFields::read(item.bytes);
                    trace.summary.add(&fields);
                    if !trace.summary.root_seen && fields.parent_span_id.is_empty() {
                        trace.summary.root_seen = true;
                        self.roots.push_back((timestamp_ms, trace_id));
                    }
                    trace.spans = trace.spans.saturating_add(1);
                    trace.bytes = trace.bytes.saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
                    self.span_bytes += bytes;
                    let reached = if trace.spans as usize >= limits.max_spans {
                        Some(EarlyDecision::TraceSpans)
                    } else if trace.bytes as usize >= limits.max_bytes.min(u32::MAX as usize / 2) {
                        Some(EarlyDecision::TraceBytes)
                    } else {
                        None
                    };
                    let context = context.get_or_insert_with(|| {
                        let shared = resource_context.get_or_insert_with(|| {
                            let shell = resource.shell();
                            let held = Held::new(resource_bytes(shell.len()), &self.context_bytes);
                            Arc::new(ResourceContext { resource: resource.decode_resource(), shell, _held: held })
                        });
                        let scope_shell = scope.shell();
                        let held = Held::new(scope_shell.len() + 64, &self.context_bytes);
                        Arc::new(Context { resource: Arc::clone(shared), scope_shell, _held: held })
                    });
                    let group = match trace.groups.last_mut() {
                        Some(group) if Arc::ptr_eq(&group.context, context) => group,
                        _ => {
                            let capacity = self.scope_bytes.get(&trace_id).copied().unwrap_or_default();
                            let encoded = Vec::with_capacity(capacity);
                            trace.groups.push(SpanGroup { context: Arc::clone(context), encoded });
                            trace.groups.last_mut().expect("pushed above")
                        }
                    };
                    // Length-delimited, as `PendingTrace::encode` reads it back.
                    put_varint(&mut group.encoded, bytes as u64);
                    group.encoded.extend_from_slice(item.bytes);
                    if let Some(reason) = reached {
                        if !self.over_limit.iter().any(|(id, _)| *id == trace_id) {
                            self.over_limit.push((trace_id, reason));
                        }
                    }
                }
                if late_scope {
                    late_kept.close_scope();
                }
            }
            if late_resource {
                late_kept.close_resource();
            }
        }
        // Late spans of kept traces hold their record too, until the caller's forwarded copy is acknowledged.
        let late_kept = late_kept.finish();
        let units = new_units + u32::from(!late_kept.is_empty());
        Added { late_kept, late_dropped, late_kept_spans, units, invalid_trace_id }
    }

    /// The record at `offset` is being handled (buffered or not: the worker calls this for every record it reads).
    pub fn handled(&mut self, offset: i64) {
        self.next_offset = Some(self.next_offset.map_or(offset + 1, |next| next.max(offset + 1)));
    }

    /// The consumer reached the partition's end (its position is the high watermark): nothing older is waiting.
    pub fn reached_end(&mut self) {
        self.caught_up = true;
    }

    /// A record arrived, or fetching paused with records maybe waiting: the partition is not known to be caught
    /// up until the consumer reports its end again.
    pub fn behind(&mut self) {
        self.caught_up = false;
    }

    /// While the partition is caught up its event time follows the wall clock (`wall_ms`), so quiet partitions
    /// still decide on time. While records wait — a backlog being read or replayed, fetching paused by
    /// back-pressure — only their timestamps move the clock, however long that takes. Caught up takes both the
    /// consumer's end of partition since the last record, and `fetching_at_end`: the fetcher stood at the end
    /// recently with the partition's leader answering. A fetch that stalled (the leader gone or unreachable, this
    /// process frozen) keeps the clock where it is, so traces whose later spans sit unread in Kafka are not decided
    /// without them. Returns whether the wall clock was followed.
    pub fn follow_wall_clock(&mut self, wall_ms: i64, fetching_at_end: bool) -> bool {
        let caught_up = self.caught_up && fetching_at_end;
        if caught_up {
            self.clock_ms = self.clock_ms.max(wall_ms);
        }
        caught_up
    }

    /// Removes and returns the traces whose decision is due at the current clock: `decision_wait_ms` after their
    /// first span, or `after_root_ms` after their root span when that is set and comes sooner.
    pub fn due(&mut self, decision_wait_ms: i64, after_root_ms: Option<i64>) -> Vec<(TraceId, PendingTrace)> {
        let mut due = Vec::new();
        match after_root_ms {
            Some(after_root) => {
                // Every entry leaves once its time is up, decided by it or earlier: at most after_root's worth.
                while self.roots.front().is_some_and(|(seen, _)| seen + after_root <= self.clock_ms) {
                    let (_, trace_id) = self.roots.pop_front().expect("front exists");
                    if let Some(trace) = self.remove(&trace_id) {
                        due.push((trace_id, trace));
                    }
                }
            }
            // Without decision_wait_after_root nothing reads the roots: kept, they would grow by a trace ID for
            // every trace for the life of the partition.
            None => self.roots.clear(),
        }
        while let Some((first_seen, _)) = self.order.front() {
            if first_seen + decision_wait_ms > self.clock_ms {
                break;
            }
            let (_, trace_id) = self.order.pop_front().expect("front exists");
            if let Some(trace) = self.remove(&trace_id) {
                due.push((trace_id, trace));
            }
        }
        due
    }

    /// Removes the traces that reached a per-trace limit, to be decided early, with the limit each reached.
    pub fn take_over_limit(&mut self) -> Vec<(TraceId, PendingTrace, EarlyDecision)> {
        let ids = std::mem::take(&mut self.over_limit);
        ids.into_iter().filter_map(|(id, reason)| self.remove(&id).map(|t| (id, t, reason))).collect()
    }

    /// Everything the buffered traces hold: their spans' bytes, and the resources and scopes they share.
    pub fn buffered_bytes(&self) -> usize {
        self.span_bytes + self.context_bytes.load(Ordering::Relaxed)
    }

    /// Removes the trace that arrived first, to be decided early when memory runs short.
    pub fn take_oldest(&mut self) -> Option<(TraceId, PendingTrace)> {
        while let Some((_, id)) = self.order.pop_front() {
            if let Some(trace) = self.remove(&id) {
                return Some((id, trace));
            }
        }
        None
    }

    fn remove(&mut self, id: &TraceId) -> Option<PendingTrace> {
        let trace = self.traces.remove(id)?;
        self.span_bytes -= trace.bytes as usize;
        Some(trace)
    }
}

/// Appends `span` under a copy of its resource and scope, reusing the last ones when they match.
/// The one trace of `batches` buffered as the worker buffers it (encoded as a record and scanned): what policy
/// tests decide on.
#[cfg(test)]
pub(crate) fn pending(batches: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans]) -> PendingTrace {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let bytes = ExportTraceServiceRequest { resource_spans: batches.to_vec() }.encode_to_vec();
    let scanned = tailgate_proto::wire::WireSignal::Traces.scan(&bytes).expect("a valid request");
    let mut buffer = PartitionBuffer::default();
    let limits = TraceLimits { max_spans: usize::MAX, max_bytes: usize::MAX };
    buffer.add_record(0, 0, crate::tenant::DEFAULT, &scanned, limits, |_| None);
    assert_eq!(buffer.traces.len(), 1, "the spans of one trace");
    let id = *buffer.traces.keys().next().expect("one trace");
    buffer.traces.remove(&id).expect("one trace")
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    use tailgate_proto::wire::WireSignal;

    /// Adds `request` as the worker does: encoded as a record and scanned.
    fn add_record(
        buffer: &mut PartitionBuffer,
        offset: i64,
        time: i64,
        request: Vec<ResourceSpans>,
        limits: TraceLimits,
        decided: impl Fn(&TraceId) -> Option<bool>,
    ) -> Added {
        let bytes = ExportTraceServiceRequest { resource_spans: request }.encode_to_vec();
        buffer.add_record(
            offset,
            time,
            crate::tenant::DEFAULT,
            &WireSignal::Traces.scan(&bytes).unwrap(),
            limits,
            decided,
        )
    }

    const NO_LIMITS: TraceLimits = TraceLimits { max_spans: usize::MAX, max_bytes: usize::MAX };

    fn record(traces: &[u8]) -> Vec<ResourceSpans> {
        vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: traces
                    .iter()
                    .map(|t| Span { trace_id: vec![*t; 16], span_id: vec![1; 8], ..Default::default() })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    /// The buffer and the tracker of its partition, as the worker holds them.
    fn add(
        buffer: &mut PartitionBuffer,
        tracker: &mut tailgate_kafka::OffsetTracker,
        offset: i64,
        time: i64,
        traces: &[u8],
    ) {
        let added = add_record(buffer, offset, time, record(traces), NO_LIMITS, |_| None);
        tracker.read(offset, added.units);
    }

    fn settle(tracker: &mut tailgate_kafka::OffsetTracker, offsets: &[i64]) {
        offsets.iter().for_each(|o| tracker.release(*o));
    }

    #[test]
    fn decisions_come_due_in_event_time_and_hold_the_offsets() {
        let mut buffer = PartitionBuffer::default();
        let mut tracker = tailgate_kafka::OffsetTracker::new();
        add(&mut buffer, &mut tracker, 10, 1_000, &[1, 2]);
        add(&mut buffer, &mut tracker, 11, 3_000, &[2, 3]);
        assert_eq!(tracker.safe_offset(), Some(10));
        assert!(buffer.due(10_000, None).is_empty(), "nothing due before decision_wait of event time");

        add(&mut buffer, &mut tracker, 12, 11_000, &[]);
        let due = buffer.due(10_000, None);
        let ids: Vec<u8> = due.iter().map(|(id, _)| id[0]).collect();
        assert_eq!(ids, [1, 2], "traces first seen at 1000 ms are due at 11000 ms");
        assert_eq!(due[1].1.offsets, [10, 11]);
        assert_eq!(due[1].1.spans, 2);

        settle(&mut tracker, &due[0].1.offsets);
        assert_eq!(tracker.safe_offset(), Some(10), "trace 2 still holds offset 10");
        settle(&mut tracker, &due[1].1.offsets);
        assert_eq!(tracker.safe_offset(), Some(11), "trace 3 holds offset 11");
        buffer.clock_ms = 13_000;
        let (_, trace3) = buffer.due(10_000, None).pop().unwrap();
        settle(&mut tracker, &trace3.offsets);
        assert_eq!(tracker.safe_offset(), Some(13));
        // The decided traces hold their resources and scopes until they are gone.
        drop((due, trace3));
        assert_eq!(buffer.buffered_bytes(), 0);
    }

    #[test]
    fn buffered_spans_decode_to_what_arrived_under_their_resource_and_scope() {
        let mut buffer = PartitionBuffer::default();
        let mut first = record(&[1, 2, 1]);
        first[0].resource = Some(Resource { dropped_attributes_count: 7, ..Default::default() });
        first[0].scope_spans[0].scope = Some(InstrumentationScope { name: "cart".into(), ..Default::default() });
        first[0].scope_spans[0].spans[2].name = "second".into();
        add_record(&mut buffer, 0, 0, first.clone(), NO_LIMITS, |_| None);
        add_record(&mut buffer, 1, 0, record(&[1]), NO_LIMITS, |_| None);
        let trace = &buffer.traces[&TraceId::from([1; 16])];
        let batches = trace.decode();
        assert_eq!(batches.len(), 2, "two resources: the first record's and the second's (empty)");
        assert_eq!(batches[0].resource, first[0].resource);
        assert_eq!(batches[0].scope_spans[0].scope, first[0].scope_spans[0].scope);
        let names: Vec<&str> = batches[0].scope_spans[0].spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["", "second"]);
        assert_eq!(batches[0].scope_spans[0].spans[0], first[0].scope_spans[0].spans[0]);
        assert_eq!(batches[1].scope_spans[0].spans.len(), 1);
        assert_eq!(trace.spans, 3);
    }

    /// Only a caught-up partition follows the wall clock: not one reading a backlog, however slowly, nor one
    /// whose fetching is paused.
    #[test]
    fn only_a_caught_up_partition_follows_the_wall_clock() {
        let wall_ms = 50_000;
        let mut buffer = PartitionBuffer::default();
        assert!(!buffer.follow_wall_clock(wall_ms, true), "before the consumer reports the end: behind");
        add_record(&mut buffer, 0, 1_000, record(&[1]), NO_LIMITS, |_| None);
        buffer.behind();
        for _ in 0..10 {
            assert!(!buffer.follow_wall_clock(wall_ms, true));
        }
        assert_eq!(buffer.clock_ms, 1_000);
        assert!(buffer.due(10_000, None).is_empty(), "decision_wait has not passed in event time");

        buffer.reached_end();
        assert!(buffer.follow_wall_clock(wall_ms, true), "at the end: caught up");
        assert_eq!(buffer.clock_ms, wall_ms);
        assert_eq!(buffer.due(10_000, None).len(), 1, "the quiet partition decides on time");

        buffer.behind();
        assert!(!buffer.follow_wall_clock(wall_ms + 60_000, true), "paused: records may be waiting");
        assert_eq!(buffer.clock_ms, wall_ms);
    }

    /// A record of one 100 KB resource and 1,000 one-span scopes: the resource was decoded and copied once per
    /// scope (100 MB for a 100 KB record) and not counted in the buffer's bytes at all. It is held once now, shared
    /// by every scope and trace, and counted until the last trace holding it is gone.
    #[test]
    fn a_resource_is_held_once_per_record_and_counted() {
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let big = KeyValue {
            key: "k8s.pod.annotations".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(100_000))) }),
        };
        let scopes = (0..1000u32)
            .map(|n| ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![(n % 200) as u8 + 1; 16],
                    span_id: vec![1; 8],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        let request = vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![big], ..Default::default() }),
            scope_spans: scopes,
            ..Default::default()
        }];
        let mut buffer = PartitionBuffer::default();
        add_record(&mut buffer, 0, 1_000, request, NO_LIMITS, |_| None);
        let resources: Vec<&Arc<ResourceContext>> =
            buffer.traces.values().flat_map(|t| &t.groups).map(|g| &g.context.resource).collect();
        assert_eq!(resources.len(), 1000);
        assert!(resources.iter().all(|r| Arc::ptr_eq(r, resources[0])), "one resource for the whole record");
        let held = buffer.buffered_bytes();
        assert!((300_000..400_000 + 1000 * 200).contains(&held), "the resource is counted once: {held} bytes");
        let decided: Vec<_> = buffer.traces.keys().copied().collect();
        for id in decided {
            drop(buffer.remove(&id));
        }
        assert_eq!(buffer.buffered_bytes(), 0, "given back with the last trace");
    }

    /// At the end of the partition, but the fetch has stalled — the leader gone, the network cut, this process
    /// frozen: the clock stays, so buffered traces wait for their later spans. Before, the end of partition alone
    /// let the clock follow the wall and decide them without those spans.
    #[test]
    fn a_stalled_fetch_keeps_the_event_time() {
        let mut buffer = PartitionBuffer::default();
        add_record(&mut buffer, 0, 1_000, record(&[1]), NO_LIMITS, |_| None);
        buffer.reached_end();
        assert!(!buffer.follow_wall_clock(60_000, false), "stalled: not caught up");
        assert_eq!(buffer.clock_ms, 1_000);
        assert!(buffer.due(10_000, None).is_empty(), "the trace waits for its later spans");
        assert!(buffer.follow_wall_clock(60_000, true), "fetching again, at the end");
        assert_eq!(buffer.due(10_000, None).len(), 1);
    }

    #[test]
    fn late_spans_follow_the_decision() {
        let mut buffer = PartitionBuffer::default();
        let added = add_record(&mut buffer, 5, 0, record(&[1, 2, 1, 3]), NO_LIMITS, |id| match id[0] {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        });
        let late_kept = ExportTraceServiceRequest::decode(added.late_kept.as_slice()).unwrap().resource_spans;
        assert_eq!(late_kept.len(), 1);
        assert_eq!(late_kept[0].scope_spans[0].spans.len(), 2);
        assert!(late_kept[0].scope_spans[0].spans.iter().all(|s| s.trace_id == [1; 16]));
        assert_eq!(added.late_kept_spans, 2, "counted per span, not per record");
        assert_eq!(added.late_dropped, 1);
        assert_eq!(added.units, 2, "trace 3 and the forwarded late spans hold the record");
        assert_eq!(added.invalid_trace_id, 0);
    }

    #[test]
    fn spans_without_a_16_byte_trace_id_are_counted_not_buffered() {
        let mut buffer = PartitionBuffer::default();
        let mut request = record(&[1, 2]);
        request[0].scope_spans[0].spans[1].trace_id = vec![2; 8];
        let added = add_record(&mut buffer, 0, 0, request, NO_LIMITS, |_| None);
        assert_eq!((added.invalid_trace_id, added.units, buffer.traces.len()), (1, 1, 1));
        assert_eq!(buffer.traces.len(), 1);
    }

    #[test]
    fn limits_pick_traces_for_early_decisions() {
        let mut buffer = PartitionBuffer::default();
        let limits = TraceLimits { max_spans: 3, max_bytes: usize::MAX };
        add_record(&mut buffer, 0, 0, record(&[1, 1, 2]), limits, |_| None);
        assert!(buffer.take_over_limit().is_empty());
        add_record(&mut buffer, 1, 0, record(&[1, 2]), limits, |_| None);
        let early: Vec<(u8, EarlyDecision)> = buffer.take_over_limit().iter().map(|(id, _, r)| (id[0], *r)).collect();
        assert_eq!(early, [(1, EarlyDecision::TraceSpans)], "trace 1 reached 3 spans");
        let (oldest, _) = buffer.take_oldest().unwrap();
        assert_eq!(oldest[0], 2, "trace 1 is gone; trace 2 is the oldest left");
        assert_eq!(buffer.buffered_bytes(), 0);
        assert!(buffer.take_oldest().is_none());
    }

    #[test]
    fn a_root_span_can_bring_the_decision_forward() {
        let mut buffer = PartitionBuffer::default();
        let mut with_root = record(&[1]);
        with_root[0].scope_spans[0].spans[0].parent_span_id.clear();
        let mut child = record(&[2]);
        child[0].scope_spans[0].spans[0].parent_span_id = vec![5; 8];
        add_record(&mut buffer, 0, 1_000, with_root, NO_LIMITS, |_| None);
        add_record(&mut buffer, 1, 1_000, child, NO_LIMITS, |_| None);
        buffer.clock_ms = 3_000;
        let due: Vec<u8> = buffer.due(10_000, Some(2_000)).iter().map(|(id, _)| id[0]).collect();
        assert_eq!(due, [1], "2 s after its root, trace 1 is due; trace 2 has no root and waits the full 10 s");
        buffer.clock_ms = 11_000;
        let due: Vec<u8> = buffer.due(10_000, Some(2_000)).iter().map(|(id, _)| id[0]).collect();
        assert_eq!(due, [2]);
    }

    /// With the default config (no `decision_wait_after_root`), the roots of decided traces are not kept: 10,000
    /// traces with roots, all decided, leave nothing behind. (Before: 10,000 entries, one per trace for ever.)
    #[test]
    fn decided_traces_leave_no_root_behind() {
        let mut buffer = PartitionBuffer::default();
        for n in 0..10_000u32 {
            let mut trace = record(&[0]);
            let span = &mut trace[0].scope_spans[0].spans[0];
            span.trace_id[..4].copy_from_slice(&n.to_be_bytes());
            span.parent_span_id.clear();
            add_record(&mut buffer, i64::from(n), 1_000, trace, NO_LIMITS, |_| None);
        }
        buffer.clock_ms = 20_000;
        assert_eq!(buffer.due(10_000, None).len(), 10_000);
        assert_eq!((buffer.traces.len(), buffer.order.len(), buffer.roots.len()), (0, 0, 0));
    }
}
