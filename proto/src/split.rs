//! Turning one OTLP export request into Kafka records.
//!
//! Each item (span, log record, metric) is routed by its key (see [`Signal::route`]) to the partition
//! [`partition_for_key`] names. Items for the same partition are gathered, in their original order, into as few
//! records as fit the record size limit; each record is a complete `Export*ServiceRequest` holding only the
//! resources and scopes its items came from. A record's key is the key of its first item, so it hashes to the
//! record's partition and a key-based partitioner would agree.
//!
//! The limit is on the whole record ([`RecordLimit`]): key, value, headers and Kafka's framing. Keys are not small:
//! a log record without trace context, and every metric, is keyed by its resource, which is 1–2 KB on Kubernetes.
//!
//! Invariants, checked by the property tests below: every valid item ends up in exactly one record, on the
//! partition of its key, under a copy of its own resource and scope; no record is larger than the limit as a
//! whole; an item that cannot fit a record on its own, or whose IDs are invalid, is rejected and counted, never
//! written.
//!
//! Counts and sizes add with saturation: they come from the client, and a wrapped sum would misreport what was
//! accepted.

use std::borrow::Cow;

use prost::Message;

use crate::partition::partition_for_key;
use crate::record_size::RecordLimit;

/// Bytes a length-delimited field may add around a message: a one-byte tag (every field Tailgate splits on has a
/// number below 16) and a length varint of at most five bytes.
pub(crate) const FIELD_FRAMING: usize = 6;

/// One OTLP signal's three-level shape: request → resources → scopes → items.
/// What the sampler may add to a kept span when it writes it to the sampled topic, and to its record: the
/// `tailgate.tenant` header (at most 150 bytes of name), the sampling threshold in `tracestate`, and the keeping
/// policy's name in an attribute — twice in a dry run (`tailgate.sampler.would_keep_policy`), policy names being at
/// most [`MAX_POLICY_NAME`] bytes. A span that fit the gateway's record always fits the sampler's, marks and all.
pub const SAMPLER_ROOM: usize = 1024;

/// The longest policy name the sampler takes: its marks must fit [`SAMPLER_ROOM`].
pub const MAX_POLICY_NAME: usize = 256;

pub trait Signal: Message + Default + Sized {
    /// `ResourceSpans`, `ResourceLogs`, `ResourceMetrics`.
    type Resource: Message + Clone;
    /// `ScopeSpans`, `ScopeLogs`, `ScopeMetrics`.
    type Scope: Message + Clone;
    /// `Span`, `LogRecord`, `Metric`.
    type Item: Message;

    /// What the items are called in messages and metrics: `spans`, `log_records`, `data_points`.
    const ITEMS: &'static str;
    /// Whether [`Signal::route`] reads the resource key; spares computing it for traces.
    const ROUTES_BY_RESOURCE: bool;
    /// How [`crate::wire`] splits the signal's encoded requests, if it does (traces and logs; metrics are decoded).
    const WIRE: Option<crate::wire::WireSignal>;
    /// Bytes a record of this signal leaves free for what a later stage adds to its items when it writes them
    /// again: the gateway's records are this much smaller than the limit (see [`SAMPLER_ROOM`]).
    const DOWNSTREAM_ROOM: usize = 0;

    fn resources_mut(&mut self) -> &mut Vec<Self::Resource>;
    fn scopes_mut(resource: &mut Self::Resource) -> &mut Vec<Self::Scope>;
    fn items_mut(scope: &mut Self::Scope) -> &mut Vec<Self::Item>;
    fn resource_attributes(resource: &Self::Resource) -> Option<&opentelemetry_proto::tonic::resource::v1::Resource>;
    fn resource_mut(resource: &mut Self::Resource) -> &mut Option<opentelemetry_proto::tonic::resource::v1::Resource>;

    /// How many items the OTLP response counts for this one (data points, for a metric).
    fn count(_item: &Self::Item) -> usize {
        1
    }
    /// Why the item must not be written, if it must not.
    fn invalid(_item: &Self::Item) -> Option<Rejection> {
        None
    }
    /// The partitioning key of an item. `resource_key` is [`resource_key`] of its resource when
    /// [`Signal::ROUTES_BY_RESOURCE`], else empty.
    fn route<'a>(item: &'a Self::Item, scope: &Self::Scope, resource_key: &'a [u8]) -> Cow<'a, [u8]>;
}

/// Why an item was not written to Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// A trace ID that is not 16 bytes or is all zero, or a span ID that is not 8 bytes or is all zero.
    InvalidId,
    /// The item alone, with its resource, scope, key, headers and framing, is larger than a Kafka record may be.
    TooLarge,
}

impl Rejection {
    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::InvalidId => "invalid_id",
            Rejection::TooLarge => "too_large",
        }
    }
}

/// One Kafka record to produce.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub partition: u32,
    pub key: Vec<u8>,
    /// The encoded `Export*ServiceRequest`.
    pub value: Vec<u8>,
    /// Items inside, counted as the OTLP response counts them.
    pub items: usize,
}

/// The outcome of [`split`].
#[derive(Debug, Default)]
pub struct Split {
    pub records: Vec<Record>,
    /// Items in `records`.
    pub accepted: usize,
    /// Items not written because their IDs were invalid.
    pub rejected_invalid_id: usize,
    /// Items not written because they cannot fit a record.
    pub rejected_too_large: usize,
}

impl Split {
    pub fn rejected(&self) -> usize {
        self.rejected_invalid_id.saturating_add(self.rejected_too_large)
    }

    /// The OTLP partial-success `error_message`, or `None` when nothing was rejected. `max_record_bytes` is the
    /// limit records were made to (`message.max.bytes`, less the room spans leave for the sampler).
    pub fn error_message<S: Signal>(&self, max_record_bytes: usize) -> Option<String> {
        if self.rejected() == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if self.rejected_invalid_id > 0 {
            parts.push(format!(
                "{} with an invalid trace or span ID (trace IDs are 16 bytes, span IDs 8, not all zero)",
                self.rejected_invalid_id
            ));
        }
        if self.rejected_too_large > 0 {
            parts.push(format!(
                "{} larger than the Kafka record limit of {max_record_bytes} bytes (with resource, scope, key and \
                 headers)",
                self.rejected_too_large
            ));
        }
        Some(format!("{} {} rejected: {}", self.rejected(), S::ITEMS, parts.join("; ")))
    }
}

/// Splits `request` into records for a topic of `partitions` partitions, none larger than `limit` as a whole.
pub fn split<S: Signal>(mut request: S, partitions: u32, limit: impl Into<RecordLimit>) -> Split {
    let mut packer = Packer::new(partitions, limit.into());
    let mut out = Split::default();
    let mut open: Vec<Open<Vec<S::Resource>>> = (0..packer.partitions()).map(|_| Open::default()).collect();

    for (ri, mut resource) in std::mem::take(request.resources_mut()).into_iter().enumerate() {
        let scopes = std::mem::take(S::scopes_mut(&mut resource));
        let resource_shell_len = resource.encoded_len().saturating_add(FIELD_FRAMING);
        let resource_key =
            if S::ROUTES_BY_RESOURCE { resource_key(S::resource_attributes(&resource)) } else { Vec::new() };

        for (si, mut scope) in scopes.into_iter().enumerate() {
            let items = std::mem::take(S::items_mut(&mut scope));
            let scope_shell_len = scope.encoded_len().saturating_add(FIELD_FRAMING);

            for item in items {
                if let Some(reason) = S::invalid(&item) {
                    out.reject(reason, S::count(&item));
                    continue;
                }
                let key = S::route(&item, &scope, &resource_key);
                let item_len = item.encoded_len().saturating_add(FIELD_FRAMING);
                let placed = match packer.place((ri, si), resource_shell_len, scope_shell_len, item_len, &key) {
                    Ok(placed) => placed,
                    Err(reason) => {
                        out.reject(reason, S::count(&item));
                        continue;
                    }
                };
                let slot = &mut open[placed.partition];
                if placed.flush_first {
                    out.push(slot.flush(placed.partition, encode_resources::<S>));
                }
                slot.add(&key, S::count(&item));
                if placed.new_resource {
                    slot.content.push(resource.clone());
                }
                let last_resource = slot.content.last_mut().expect("a resource was pushed above");
                if placed.new_scope {
                    S::scopes_mut(last_resource).push(scope.clone());
                }
                let last_scope = S::scopes_mut(last_resource).last_mut().expect("a scope was pushed above");
                S::items_mut(last_scope).push(item);
            }
        }
    }
    out.finish(open, encode_resources::<S>);
    out
}

fn encode_resources<S: Signal>(resources: Vec<S::Resource>) -> Vec<u8> {
    let mut request = S::default();
    *request.resources_mut() = resources;
    request.encode_to_vec()
}

impl Split {
    pub(crate) fn reject(&mut self, reason: Rejection, count: usize) {
        let total = match reason {
            Rejection::InvalidId => &mut self.rejected_invalid_id,
            Rejection::TooLarge => &mut self.rejected_too_large,
        };
        *total = total.saturating_add(count);
    }

    pub(crate) fn push(&mut self, record: Record) {
        self.accepted = self.accepted.saturating_add(record.items);
        self.records.push(record);
    }

    /// Writes out the records still open, in partition order.
    pub(crate) fn finish<C: Default>(&mut self, open: Vec<Open<C>>, encode: impl Fn(C) -> Vec<u8>) {
        for (partition, mut slot) in open.into_iter().enumerate() {
            if !slot.is_empty() {
                self.push(slot.flush(partition, &encode));
            }
        }
    }
}

/// Decides, from sizes alone, which record each item goes into: the one open for its key's partition, or, when
/// that one is full, a new one after it. The same for every representation of a request (decoded messages or
/// their wire bytes); what a record holds is kept by the caller, in an [`Open`] per partition.
pub(crate) struct Packer {
    slots: Vec<Slot>,
    max_key_and_value: usize,
    partitions: u32,
}

/// The size of the record open for one partition.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// Upper bound of the encoded size of the record's value, plus its key.
    bytes: usize,
    /// (resource index, scope index) in the input of the last item added; `None` while empty.
    at: Option<(usize, usize)>,
}

/// Where [`Packer::place`] put an item.
pub(crate) struct Placed {
    pub partition: usize,
    /// The partition's open record was full: write it out first, the item starts a new one.
    pub flush_first: bool,
    /// The item needs a copy of its resource (and then of its scope) in the record.
    pub new_resource: bool,
    pub new_scope: bool,
}

impl Packer {
    pub(crate) fn new(partitions: u32, limit: RecordLimit) -> Self {
        let partitions = partitions.max(1);
        // Key and value together; headers and framing are the same for every record and already taken off.
        Packer {
            slots: vec![Slot::default(); partitions as usize],
            max_key_and_value: limit.key_and_value(),
            partitions,
        }
    }

    pub(crate) fn partitions(&self) -> usize {
        self.slots.len()
    }

    /// Places an item of `key` and `item_len` encoded bytes (framing included) from the resource and scope `at`,
    /// whose shells (everything but their children, framing included) take the given bytes; or refuses it when it
    /// cannot fit a record even alone.
    pub(crate) fn place(
        &mut self,
        at: (usize, usize),
        resource_shell_len: usize,
        scope_shell_len: usize,
        item_len: usize,
        key: &[u8],
    ) -> Result<Placed, Rejection> {
        // The first item of a record gives the record its key.
        let alone =
            item_len.saturating_add(resource_shell_len).saturating_add(scope_shell_len).saturating_add(key.len());
        if alone > self.max_key_and_value {
            return Err(Rejection::TooLarge);
        }
        let partition = partition_for_key(key, self.partitions) as usize;
        let slot = &mut self.slots[partition];
        let new_resource = slot.at.map(|(r, _)| r) != Some(at.0);
        let new_scope = slot.at != Some(at);
        let need = item_len
            .saturating_add(if new_resource { resource_shell_len } else { 0 })
            .saturating_add(if new_scope { scope_shell_len } else { 0 });
        let placed = if slot.at.is_none() {
            slot.bytes = alone;
            Placed { partition, flush_first: false, new_resource: true, new_scope: true }
        } else if slot.bytes.saturating_add(need) <= self.max_key_and_value {
            slot.bytes = slot.bytes.saturating_add(need);
            Placed { partition, flush_first: false, new_resource, new_scope }
        } else {
            slot.bytes = alone;
            Placed { partition, flush_first: true, new_resource: true, new_scope: true }
        };
        slot.at = Some(at);
        Ok(placed)
    }
}

/// The record being filled for one partition: what it holds (`C`: decoded resources, or pieces of the request's
/// bytes), its key (the first item's) and its items as the OTLP response counts them.
pub(crate) struct Open<C> {
    pub content: C,
    key: Option<Vec<u8>>,
    items: usize,
}

impl<C: Default> Default for Open<C> {
    fn default() -> Self {
        Open { content: C::default(), key: None, items: 0 }
    }
}

impl<C: Default> Open<C> {
    /// Nothing added yet. Not `items == 0`: a metric without data points counts 0 but takes room.
    fn is_empty(&self) -> bool {
        self.key.is_none()
    }

    /// Counts an item of `key` in.
    pub(crate) fn add(&mut self, key: &[u8], count: usize) {
        if self.key.is_none() {
            self.key = Some(key.to_vec());
        }
        self.items = self.items.saturating_add(count);
    }

    /// The record made of what was added, `encode`d; the slot is empty again.
    pub(crate) fn flush(&mut self, partition: usize, encode: impl Fn(C) -> Vec<u8>) -> Record {
        let open = std::mem::take(self);
        Record {
            partition: partition as u32,
            key: open.key.unwrap_or_default(),
            value: encode(open.content),
            items: open.items,
        }
    }
}

/// A stable identity of a resource: its attributes sorted by key, so two SDKs that list the same attributes in a
/// different order still route to the same partition.
pub fn resource_key(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> Vec<u8> {
    let Some(resource) = resource else { return Vec::new() };
    let mut attributes: Vec<_> = resource.attributes.iter().collect();
    attributes.sort_by(|a, b| a.key.cmp(&b.key));
    let mut key = Vec::with_capacity(attributes.len() * 32);
    for attribute in attributes {
        key.extend_from_slice(attribute.key.as_bytes());
        key.push(0);
        if let Some(value) = &attribute.value {
            value.encode(&mut key).expect("a Vec grows as needed");
        }
        key.push(0);
    }
    key
}

/// Items in `request`, as the OTLP response counts them.
pub fn count_items<S: Signal>(request: &mut S) -> usize {
    request
        .resources_mut()
        .iter_mut()
        .flat_map(|r| S::scopes_mut(r).iter_mut())
        .flat_map(|s| S::items_mut(s).iter())
        .map(S::count)
        .fold(0, usize::saturating_add)
}
