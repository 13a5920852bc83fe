//! The sampler: spans topic in, whole kept traces, decisions and RED metrics out.

mod clock;
mod decisions_topic;
mod e2e;
mod faults;
mod invalid;
mod policy_changes;
mod rebalance;
mod resample;
mod service_graph;
