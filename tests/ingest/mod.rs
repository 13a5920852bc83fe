//! The ingest gateway: OTLP in over gRPC and HTTP, Kafka records out.

mod admission;
mod bounds;
mod connections;
mod e2e;
mod faults;
mod h2;
mod redaction;
mod security;
mod status;
