//! Jaeger (or any OTLP receiver) over OTLP/gRPC, from the sampled-spans topic.
//!
//! Records already are `ExportTraceServiceRequest`s; a batch merges their resource spans into one request. Status
//! handling follows the OTLP specification: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`, `ABORTED`,
//! `OUT_OF_RANGE`, `DATA_LOSS`, and `RESOURCE_EXHAUSTED` with `RetryInfo` are retried; anything else is a refusal;
//! a partial success is recorded, not retried.

mod config;
mod transport;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::backend::{Backend, Batch};

pub use config::{Compression, JaegerConfig, TlsConfig};
pub use transport::{install_tls_provider, GrpcTransport};

/// The exporter's name, in config and on its metrics.
pub const NAME: &str = "jaeger";

pub struct Jaeger;

impl Backend for Jaeger {
    type Items = ExportTraceServiceRequest;

    fn add(&mut self, items: &mut Self::Items, _partition: i32, payload: &[u8]) -> Result<Batch, String> {
        let mut request =
            ExportTraceServiceRequest::decode(payload).map_err(|e| format!("not OTLP trace data: {e}"))?;
        let spans = tailgate_proto::count_items(&mut request) as u64;
        items.resource_spans.extend(request.resource_spans);
        Ok(Batch { items: spans, ..Batch::default() })
    }

    fn encode(&mut self, items: Self::Items) -> Bytes {
        Bytes::from(items.encode_to_vec())
    }
}
