//! OTLP trace and log requests handled in their wire format: scanned for the resources, scopes and items they
//! hold, validated as prost would decode them, and split into Kafka records assembled from their bytes — so a
//! gateway routes spans by trace ID without building a message per span and encoding it again.
//!
//! * [`reader`]: protobuf fields read by prost's rules;
//! * [`schema`]: the OTLP messages' fields, for validation;
//! * [`scan`]: a request as slices of its bytes;
//! * [`span`]: the fields of a span routing and RED metrics read;
//! * [`split`](mod@split): the records made from those slices.
//!
//! The scanner accepts exactly what prost accepts: fields in any order, unknown fields and groups at every level,
//! a singular field written more than once (the last wins; a message field merges), empty messages. The property
//! tests in `tests.rs` hold it to that against prost.

pub mod reader;
pub mod scan;
pub mod schema;
pub mod span;
pub mod split;

pub use reader::WireError;
pub use scan::{count_items, scan_cost, Item, ScanCost, Scanned, ScannedResource, ScannedScope, SCAN_BYTES_PER_ITEM};
pub use span::SpanFields;
pub use split::{split, WireSignal};

#[cfg(test)]
mod tests;
