//! Whether a backend answers: the state behind `tailgate_exporter_backend_up` and the outage logs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics as m;

/// Whether a backend answers, shared by every request of one exporter, so that metrics and logs say which backend
/// is down and since when.
pub struct Health {
    pub(super) exporter: &'static str,
    /// Unix seconds of the first failure of the current outage; 0 while up.
    down_since: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    /// Whether this outage's refused credentials were logged already.
    unauthorized_logged: AtomicBool,
    /// Why the last retried attempt failed.
    last_failure: std::sync::Mutex<Option<String>>,
}

impl Health {
    pub fn new(exporter: &'static str) -> Arc<Health> {
        metrics::gauge!(m::BACKEND_UP, "exporter" => exporter).set(1.0);
        metrics::gauge!(m::BACKEND_DOWN_SINCE, "exporter" => exporter).set(0.0);
        Arc::new(Health {
            exporter,
            down_since: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            unauthorized_logged: AtomicBool::new(false),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    pub(super) fn up(&self) {
        self.unauthorized_logged.store(false, Ordering::SeqCst);
        let since = self.down_since.swap(0, Ordering::SeqCst);
        if since != 0 {
            let down_for = unix_seconds().saturating_sub(since);
            tracing::info!(exporter = self.exporter, down_for_seconds = down_for, "backend accepts requests again");
            metrics::gauge!(m::BACKEND_UP, "exporter" => self.exporter).set(1.0);
            metrics::gauge!(m::BACKEND_DOWN_SINCE, "exporter" => self.exporter).set(0.0);
        }
    }

    pub(super) fn down(&self, reason: &str) {
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        let now = unix_seconds();
        if self.down_since.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            tracing::error!(
                exporter = self.exporter,
                %reason,
                "backend down; retrying until it is back — records wait in Kafka and the consumer lag grows"
            );
            metrics::gauge!(m::BACKEND_UP, "exporter" => self.exporter).set(0.0);
            metrics::gauge!(m::BACKEND_DOWN_SINCE, "exporter" => self.exporter).set(now as f64);
        }
    }

    /// The backend refuses our credentials: an outage like any other (the records wait in Kafka), but one only the
    /// operator can end, so it is logged as an error of its own once per outage, even one that began otherwise.
    pub(super) fn unauthorized(&self, reason: &str) {
        self.down(reason);
        if !self.unauthorized_logged.swap(true, Ordering::SeqCst) {
            tracing::error!(
                exporter = self.exporter,
                %reason,
                "backend refuses our credentials; check the exporter's `headers` (and Loki's `tenant_id`) — retrying \
                 with back-off, records wait in Kafka and nothing is dead-lettered"
            );
        }
    }

    /// Why the last retried attempt failed, if any did.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Unix seconds since the backend has been failing, if it is.
    pub fn down_since(&self) -> Option<u64> {
        Some(self.down_since.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
