//! The exporters: Kafka topics in, Jaeger, Prometheus remote-write and Loki out.

mod delivery;
mod exemplars;
mod faults;
mod identity;
mod jaeger;
mod refusals;
mod scrape;
