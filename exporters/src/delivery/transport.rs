//! The one thing a backend's transport does: send an encoded request and say what the backend answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

/// What the backend said to one attempt.
#[derive(Debug)]
pub enum Attempt {
    /// Accepted; `rejected` items of it were refused inside an accepted request (OTLP partial success, or a Loki
    /// 400 for some entries after it stored the others), which is recorded with `reason` and not retried.
    Accepted { rejected: u64, reason: &'static str, message: Option<String> },
    /// Try again later: the backend is down, overloaded or timed out. `after` is the backend's own hint
    /// (`Retry-After`, gRPC `RetryInfo`).
    Retry { reason: String, after: Option<Duration> },
    /// The backend refuses our credentials (HTTP 401/403, gRPC `UNAUTHENTICATED`/`PERMISSION_DENIED`). The data is
    /// fine and the fix is on the operator's side, so this is an outage — retried with back-off, `backend_up` 0,
    /// logged as an error once per outage — never a reason to dead-letter the stream.
    Unauthorized { message: String },
    /// Refused for good (`reason` is a short label for metrics, `message` the backend's words): the records go to
    /// the dead-letter topic.
    Rejected { reason: &'static str, message: String },
    /// Refused as a whole, nothing stored, because of some of its items (`reason`): Prometheus rolls back a whole
    /// remote-write request for one out-of-order sample. The request is cut with [`Transport::split`] and each part
    /// sent again, until only the refused items are left out.
    Split { reason: &'static str, message: String },
}

/// The tenant a batch belongs to (its records' `tailgate.tenant`); `None` is the default tenant, sent with the
/// exporter's configured identity only.
pub type Tenant = Option<Arc<str>>;

/// Sends an encoded request body to a backend, as `tenant`. Implementations keep no state between calls.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, body: Bytes, tenant: Tenant) -> BoxFuture<'_, Attempt>;

    /// A request body cut in two, in order, each part with its item count, for a backend that answers
    /// [`Attempt::Split`]; `None` when the body holds one item (or this transport can't cut its bodies), which
    /// then counts as refused.
    fn split(&self, _body: &Bytes) -> Option<[(Bytes, u64); 2]> {
        None
    }
}
