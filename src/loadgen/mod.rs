//! `tailgate loadgen`: the checkout flow of six services as real OTLP — traces, logs that carry their trace and
//! span IDs, and business metrics — at a steady rate, over gRPC or HTTP. It counts only what the gateway
//! acknowledged, retries like an SDK (with back-off, on what the OTLP specification calls retryable:
//! [`tailgate_proto::retry`]), and says clearly when the gateway is down.
//!
//! * `scenario`: what a checkout is, as spans, log lines and business metrics.
//! * `client`: one OTLP export, over gRPC or HTTP, retried like an SDK.
//! * `run`: the steady-rate loop and the counts it reports.

mod client;
mod run;
mod scenario;

use std::time::Duration;

pub use run::{run, Summary};
pub use scenario::{SERVICES, SLOW_QUERY, SPANS_PER_TRACE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(Clone, Debug, clap::Args)]
pub struct LoadgenArgs {
    /// The gateway: HOST:PORT (4317 for gRPC, 4318 for HTTP).
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// Checkout traces per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long to send, e.g. 30s, 5m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Share of checkouts whose payment fails (0..1).
    #[arg(long, default_value_t = 0.05)]
    pub error_rate: f64,
    /// Share of checkouts with a slow inventory database query (0..1).
    #[arg(long, default_value_t = 0.05)]
    pub slow_rate: f64,
    /// Approximate encoded size of each span, padded with an attribute.
    #[arg(long, default_value_t = 300)]
    pub span_bytes: usize,
    /// Seed for the error/slow choices and IDs: the same seed sends the same checkouts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}
