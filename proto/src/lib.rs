//! Tailgate's wire contracts: what a record on a Tailgate Kafka topic is.
//!
//! # The Kafka contract (version 1)
//!
//! * **Value**: an OTLP protobuf `ExportTraceServiceRequest`, `ExportMetricsServiceRequest` or
//!   `ExportLogsServiceRequest` — byte for byte what the OpenTelemetry Collector's Kafka exporter writes with
//!   `encoding: otlp_proto`, so the Collector's Kafka receiver reads our topics and its exporter can feed them.
//! * **Partition**: `murmur2(key) mod partitions` with the Java client's default partitioner ([`partition`]).
//!   Spans are keyed by the 16 raw bytes of their trace ID; log records by their trace ID when they have one, else
//!   by their resource; metrics by resource, scope name and metric name ([`signals`]).
//! * **Grouping**: one record holds every item of one export request that maps to its partition, split further
//!   only to stay under the record size limit, which bounds key, value, headers and framing together
//!   ([`record_size`]). Its key is the key of its first item. Consumers must therefore
//!   expect several traces in one record, and a trace spread across records of the same partition.
//! * **Headers** ([`headers`]): encoding, contract version, receive time, and (later) tenant.
//! * **Timestamp**: the record's Kafka timestamp is the gateway's receive time (`CreateTime`).

#![forbid(unsafe_code)]

pub mod decisions;
pub mod headers;
pub mod loki;
pub mod partition;
pub mod prometheus;
pub mod record_size;
pub mod retry;
pub mod signals;
pub mod split;
pub mod status;
pub mod wire;

pub use opentelemetry_proto::tonic as otlp;
pub use partition::{murmur2, partition_for_key};
pub use record_size::RecordLimit;
pub use split::{count_items, split, Record, Rejection, Signal, Split};

#[cfg(test)]
mod tests;
