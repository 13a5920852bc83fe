//! The sampler: spans topic in, whole kept traces, decisions and RED metrics out.

mod e2e;
mod faults;
