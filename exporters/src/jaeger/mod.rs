//! Jaeger (or any OTLP receiver) over OTLP/gRPC, from the sampled-spans topic.
//!
//! Records already are `ExportTraceServiceRequest`s: a batch is the records' bytes joined (`crate::joined`). Status
//! handling follows the OTLP specification: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`, `ABORTED`,
//! `OUT_OF_RANGE`, `DATA_LOSS`, and `RESOURCE_EXHAUSTED` with `RetryInfo` are retried; anything else is a refusal;
//! a partial success is recorded, not retried.

mod config;
mod transport;

use bytes::Bytes;
use tailgate_proto::wire::WireSignal;

use crate::joined::Joined;

pub use config::{Compression, JaegerConfig};
pub use transport::{install_tls_provider, GrpcTransport};

/// The exporter's name, in config and on its metrics.
pub const NAME: &str = "jaeger";

/// Records joined as they are: tonic compresses the request.
pub fn backend() -> Joined {
    Joined::new(WireSignal::Traces, Bytes::from)
}
