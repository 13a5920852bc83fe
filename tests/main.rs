//! Integration tests: real brokers (Tansu in-process, librdkafka's MockCluster for faults), real clients (the
//! OpenTelemetry Python SDK, tonic, plain HTTP), the real `tailgate` binary.

mod harness;

mod cli;
mod deploy;
mod exporter_faults;
mod exporter_refusals;
mod exporters;
mod ingest_e2e;
mod ingest_faults;
mod ingest_status;
mod loadgen;
mod rebalance_while_ingesting;
mod sampler;
mod sampler_faults;
