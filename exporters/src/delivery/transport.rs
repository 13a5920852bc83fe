//! The one thing a backend's transport does: send an encoded request and say what the backend answered.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

/// What the backend said to one attempt.
#[derive(Debug)]
pub enum Attempt {
    /// Accepted; `rejected` items of it were refused inside an accepted request (OTLP partial success, or a
    /// Prometheus 400 for some samples after it stored the others), which is recorded with `reason` and not
    /// retried.
    Accepted { rejected: u64, reason: &'static str, message: Option<String> },
    /// Try again later: the backend is down, overloaded or timed out. `after` is the backend's own hint
    /// (`Retry-After`, gRPC `RetryInfo`).
    Retry { reason: String, after: Option<Duration> },
    /// Refused for good (`reason` is a short label for metrics, `message` the backend's words): the records go to
    /// the dead-letter topic.
    Rejected { reason: &'static str, message: String },
}

/// Sends an encoded request body to a backend. Implementations keep no state between calls.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Attempt>;
}
