//! Integration tests: real brokers (Apache Kafka for every promise about Kafka, Tansu for the embedded default,
//! librdkafka's MockCluster for injected protocol errors), real clients (the OpenTelemetry Python SDK, tonic, plain
//! HTTP), the real `tailgate` binary.
//!
//! One folder per role, each with its end-to-end tests and its fault tests, and `kafka` for what only Apache Kafka
//! can show; the binary's own behaviour (`cli`, `loadgen`) and the shipped deployment files (`deploy`) beside them;
//! what they all share in `harness/`.

mod harness;

mod campaign;
mod exporters;
mod ingest;
mod kafka;
mod sampler;

mod cli;
mod deploy;
mod embedded;
mod loadgen;
mod seed;
