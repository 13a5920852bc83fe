//! Tail sampling for Tailgate: the pieces a sampler worker is built from.
//!
//! * [`policy`]: the OpenTelemetry Collector's `tail_sampling` policies, with its config schema and semantics, so
//!   users paste the configuration they run today.
//! * [`offsets`]: the commit rule that makes sampling lossless across crashes, rebalances and replays.
//!
//! The worker that consumes the spans topic and wires these together is not built yet.

#![forbid(unsafe_code)]

pub mod config;
pub mod offsets;
pub mod policy;

pub use config::SamplerConfig;
