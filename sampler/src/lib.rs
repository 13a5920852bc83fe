//! Tail sampling for Tailgate: the pieces a sampler worker is built from.
//!
//! * [`policy`]: the OpenTelemetry Collector's `tail_sampling` policies, with its config schema and semantics, so
//!   users paste the configuration they run today.
//! * [`buffer`]: one partition's traces awaiting their decision, in event time.
//! * [`red`]: RED metrics from every span, before sampling.
//! * [`service_graph`]: service-to-service calls from every whole trace, at its decision.
//! * [`Sampler`]: the worker that consumes the spans topic and wires these together; the commit rule that makes
//!   sampling lossless lives in the consumer shell it runs on (`tailgate_kafka::ownership`).

#![forbid(unsafe_code)]

mod annotate;
pub mod buffer;
pub mod config;
mod decisions;
pub mod metrics;
mod output;
pub mod policy;
pub mod red;
pub mod series_limit;
pub mod service_graph;
pub mod tenant;
mod worker;

pub use annotate::{Marks, POLICY_ATTRIBUTE, WOULD_KEEP_ATTRIBUTE, WOULD_POLICY_ATTRIBUTE};
pub use config::SamplerConfig;
pub use metrics::{SamplerStats, METRICS};
pub use output::split_kept;
pub use worker::{Sampler, SamplerError, Window};
