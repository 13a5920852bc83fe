//! Tail sampling for Tailgate: the pieces a sampler worker is built from.
//!
//! * [`policy`]: the OpenTelemetry Collector's `tail_sampling` policies, with its config schema and semantics, so
//!   users paste the configuration they run today.
//! * [`offsets`]: the commit rule that makes sampling lossless across crashes, rebalances and replays.
//!
//! * [`Sampler`]: the worker that consumes the spans topic and wires these together.

#![forbid(unsafe_code)]

pub mod buffer;
pub mod config;
pub mod policy;
pub mod red;
mod worker;

pub use config::SamplerConfig;
pub use worker::{Sampler, SamplerError, SamplerStats, METRICS, POLICY_ATTRIBUTE};
