//! One request's way to a backend: send, classify the answer, back off and retry until it is accepted, refused for
//! good, or the worker stops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::Retry;
use crate::metrics as m;

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

/// How a request ended.
#[derive(Debug)]
pub enum Delivered {
    Accepted {
        rejected: u64,
        reason: &'static str,
    },
    Rejected {
        reason: &'static str,
        message: String,
    },
    /// The worker is stopping; the request's records stay uncommitted and are sent again by the next owner.
    Cancelled,
}

/// Whether a backend answers, shared by every request of one exporter, so that metrics and logs say which backend
/// is down and since when.
pub struct Health {
    exporter: &'static str,
    /// Unix seconds of the first failure of the current outage; 0 while up.
    down_since: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
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
            last_failure: std::sync::Mutex::new(None),
        })
    }

    fn up(&self) {
        let since = self.down_since.swap(0, Ordering::SeqCst);
        if since != 0 {
            let down_for = unix_seconds().saturating_sub(since);
            tracing::info!(exporter = self.exporter, down_for_seconds = down_for, "backend accepts requests again");
            metrics::gauge!(m::BACKEND_UP, "exporter" => self.exporter).set(1.0);
            metrics::gauge!(m::BACKEND_DOWN_SINCE, "exporter" => self.exporter).set(0.0);
        }
    }

    fn down(&self, reason: &str) {
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

    /// Why the last retried attempt failed, if any did.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Unix seconds since the backend has been failing, if it is.
    pub fn down_since(&self) -> Option<u64> {
        Some(self.down_since.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }
}

/// Sends `body` until the backend accepts or refuses it for good. Retryable failures are retried forever with
/// exponential back-off and jitter (never shorter than the backend's hint): the only way out without an answer is
/// `shutdown`.
pub async fn deliver(
    transport: &dyn Transport,
    body: Bytes,
    retry: &Retry,
    health: &Health,
    shutdown: &CancellationToken,
) -> Delivered {
    let exporter = health.exporter;
    let mut backoff = retry.initial_interval.get();
    loop {
        let started = Instant::now();
        health.attempts.fetch_add(1, Ordering::SeqCst);
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Delivered::Cancelled,
            attempt = transport.send(body.clone()) => attempt,
        };
        let seconds = started.elapsed().as_secs_f64();
        let wait = match attempt {
            Attempt::Accepted { rejected, reason, message } => {
                metrics::histogram!(m::REQUEST_DURATION, "exporter" => exporter, "outcome" => "accepted")
                    .record(seconds);
                health.up();
                if rejected > 0 {
                    tracing::warn!(
                        exporter,
                        rejected,
                        reason,
                        message = message.as_deref().unwrap_or(""),
                        "backend refused part of a request"
                    );
                }
                return Delivered::Accepted { rejected, reason };
            }
            Attempt::Rejected { reason, message } => {
                metrics::histogram!(m::REQUEST_DURATION, "exporter" => exporter, "outcome" => "rejected")
                    .record(seconds);
                // A backend that answers is up, even when it refuses this request.
                health.up();
                return Delivered::Rejected { reason, message };
            }
            Attempt::Retry { reason, after } => {
                metrics::histogram!(m::REQUEST_DURATION, "exporter" => exporter, "outcome" => "retry").record(seconds);
                health.down(&reason);
                health.retries.fetch_add(1, Ordering::SeqCst);
                metrics::counter!(m::RETRIES, "exporter" => exporter).increment(1);
                let wait = jittered(backoff, retry.randomization_factor).max(after.unwrap_or_default());
                tracing::debug!(exporter, %reason, wait_ms = wait.as_millis() as u64, "retrying");
                backoff = backoff.mul_f64(retry.multiplier).min(retry.max_interval.get());
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Delivered::Cancelled,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// `interval` times a random factor in `[1 - r, 1 + r]`, so that many workers retrying at once spread out.
fn jittered(interval: Duration, randomization: f64) -> Duration {
    let factor = 1.0 + randomization * (2.0 * fastrand::f64() - 1.0);
    interval.mul_f64(factor.max(0.0))
}

pub fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Script(Mutex<Vec<Attempt>>, Mutex<Vec<tokio::time::Instant>>);

    impl Transport for Script {
        fn send(&self, _: Bytes) -> BoxFuture<'_, Attempt> {
            self.1.lock().unwrap().push(tokio::time::Instant::now());
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    fn retry() -> Retry {
        Retry {
            initial_interval: tailgate_config::Duration::from_secs(1),
            max_interval: tailgate_config::Duration::from_secs(8),
            multiplier: 2.0,
            randomization_factor: 0.5,
        }
    }

    fn again(after: Option<u64>) -> Attempt {
        Attempt::Retry { reason: "503".into(), after: after.map(Duration::from_secs) }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_growing_jittered_backoff_until_accepted() {
        let attempts =
            (0..6).map(|_| again(None)).chain([Attempt::Accepted { rejected: 0, reason: "", message: None }]);
        let script = Script(Mutex::new(attempts.collect()), Mutex::default());
        let health = Health::new("test");
        let done = deliver(&script, Bytes::new(), &retry(), &health, &CancellationToken::new()).await;
        assert!(matches!(done, Delivered::Accepted { rejected: 0, .. }));
        let times = script.1.lock().unwrap().clone();
        let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        // Back-off 1, 2, 4, 8, 8, 8 seconds, each within ±50%.
        for (gap, base) in gaps.iter().zip([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]) {
            assert!(*gap >= base * 0.5 - 1e-3 && *gap <= base * 1.5 + 1e-3, "gap {gap} for base {base}: {gaps:?}");
        }
        assert!(health.down_since().is_none(), "accepted again: up");
        assert_eq!(health.retries.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_backend_hint_is_a_floor() {
        let script = Script(
            Mutex::new(vec![again(Some(20)), Attempt::Accepted { rejected: 0, reason: "", message: None }]),
            Mutex::default(),
        );
        deliver(&script, Bytes::new(), &retry(), &Health::new("test"), &CancellationToken::new()).await;
        let times = script.1.lock().unwrap().clone();
        assert!(times[1] - times[0] >= Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_refusal_is_not_retried_and_shutdown_cancels_retries() {
        let script = Script(
            Mutex::new(vec![Attempt::Rejected { reason: "bad_request", message: "no".into() }]),
            Mutex::default(),
        );
        let done = deliver(&script, Bytes::new(), &retry(), &Health::new("test"), &CancellationToken::new()).await;
        assert!(matches!(done, Delivered::Rejected { reason: "bad_request", .. }));

        let forever = Script(Mutex::new((0..1000).map(|_| again(None)).collect()), Mutex::default());
        let health = Health::new("test");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            stop.cancel();
        });
        let done = deliver(&forever, Bytes::new(), &retry(), &health, &shutdown).await;
        assert!(matches!(done, Delivered::Cancelled));
        assert!(health.down_since().is_some());
        // An hour at ≤ 12 s per retry: it never gave up.
        assert!(health.retries.load(Ordering::SeqCst) > 300);
    }
}
