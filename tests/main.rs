//! Integration tests: real brokers (Tansu in-process, librdkafka's MockCluster for faults), real clients (the
//! OpenTelemetry Python SDK, tonic, plain HTTP), the real `tailgate` binary.
//!
//! One folder per role, each with its end-to-end tests and its fault tests; the binary's own behaviour (`cli`,
//! `loadgen`) and the shipped deployment files (`deploy`) beside them; what they all share in `harness/`.

mod harness;

mod campaign;
mod exporters;
mod ingest;
mod sampler;

mod cli;
mod deploy;
mod kafka_tls;
mod loadgen;
