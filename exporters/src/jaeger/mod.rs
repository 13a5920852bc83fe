//! Jaeger (or any OTLP receiver) over OTLP/gRPC, from the sampled-spans topic.
//!
//! Records already are `ExportTraceServiceRequest`s, and concatenated encodings of that message are one valid
//! request of them all (its only field is repeated): a batch is the records' bytes joined, each validated and
//! counted on its wire format first, none decoded. Status
//! handling follows the OTLP specification: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`, `ABORTED`,
//! `OUT_OF_RANGE`, `DATA_LOSS`, and `RESOURCE_EXHAUSTED` with `RetryInfo` are retried; anything else is a refusal;
//! a partial success is recorded, not retried.

mod config;
mod transport;

use bytes::Bytes;
use tailgate_proto::wire::WireSignal;

use crate::backend::{Backend, Batch};
use crate::delivery::Tenant;

pub use config::{Compression, JaegerConfig};
pub use transport::{install_tls_provider, GrpcTransport};

/// The exporter's name, in config and on its metrics.
pub const NAME: &str = "jaeger";

pub struct Jaeger;

impl Backend for Jaeger {
    /// Encoded `ExportTraceServiceRequest`s, joined.
    type Items = Vec<u8>;

    fn add(&mut self, items: &mut Self::Items, _partition: i32, _: &Tenant, payload: &[u8]) -> Result<Batch, String> {
        let spans = WireSignal::Traces.validate(payload).map_err(|e| format!("not OTLP trace data: {e}"))?;
        items.extend_from_slice(payload);
        Ok(Batch { items: spans as u64, bytes: payload.len(), ..Batch::default() })
    }

    fn encode(&mut self, items: Self::Items) -> Bytes {
        Bytes::from(items)
    }
}
