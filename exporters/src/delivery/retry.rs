//! Retry until the backend answers: exponential back-off with jitter, never giving up while the worker runs.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tailgate_config::Problems;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::transport::{Attempt, Tenant, Transport};
use crate::metrics as m;

/// Exponential back-off with jitter, as the Collector's `retry_on_failure` — except that there is no
/// `max_elapsed_time`: a retryable failure is retried until it succeeds, and the Kafka lag grows meanwhile.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Retry {
    pub initial_interval: tailgate_config::Duration,
    pub max_interval: tailgate_config::Duration,
    pub multiplier: f64,
    /// Each wait is the back-off times a random factor in `[1 - r, 1 + r]`.
    pub randomization_factor: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial_interval: tailgate_config::Duration::from_secs(1),
            max_interval: tailgate_config::Duration::from_secs(30),
            multiplier: 2.0,
            randomization_factor: 0.5,
        }
    }
}

impl Retry {
    /// `path` is the exporter's section; the keys are under its `retry_on_failure`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.initial_interval.get().is_zero() {
            problems.push(format!("{path}.retry_on_failure.initial_interval"), "must be above 0");
        }
        if self.max_interval < self.initial_interval {
            problems.push(format!("{path}.retry_on_failure.max_interval"), "must be at least initial_interval");
        }
        if !(1.0..=10.0).contains(&self.multiplier) {
            problems.push(format!("{path}.retry_on_failure.multiplier"), "must be between 1 and 10");
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            problems.push(format!("{path}.retry_on_failure.randomization_factor"), "must be between 0 and 1");
        }
    }
}

/// How a request ended.
#[derive(Debug)]
pub enum Delivered {
    /// Stored, but for `rejected` items, by reason.
    Accepted {
        rejected: Vec<(&'static str, u64)>,
    },
    Rejected {
        reason: &'static str,
        message: String,
    },
    /// The worker is stopping; the request's records stay uncommitted and are sent again by the next owner.
    Cancelled,
}

/// Sends `body` (of `count` items) until the backend accepts or refuses it for good. Retryable failures are retried
/// forever with exponential back-off and jitter (never shorter than the backend's hint): the only way out without
/// an answer is `shutdown`.
///
/// A request refused as a whole for some of its items ([`Attempt::Split`]) is cut in two and each part delivered
/// the same way, in order, down to single items: only the items the backend refuses on their own are left out,
/// and counted. If a part is refused for good after others were stored, the whole request counts as refused (its
/// records go to the dead-letter topic, so the stored parts are there as duplicates, never lost).
pub async fn deliver(
    transport: &dyn Transport,
    tenant: Tenant,
    body: Bytes,
    count: u64,
    retry: &Retry,
    health: &Health,
    shutdown: &CancellationToken,
) -> Delivered {
    let exporter = health.exporter;
    let mut parts = vec![(body, count)];
    let mut rejected: Vec<(&'static str, u64)> = Vec::new();
    let mut refusal = None;
    while let Some((body, count)) = parts.pop() {
        match until_answered(transport, &tenant, body.clone(), retry, health, shutdown).await {
            Answer::Done(Delivered::Accepted { rejected: refused }) => {
                refused.into_iter().for_each(|(reason, n)| add(&mut rejected, reason, n));
            }
            Answer::Done(other) => return other,
            Answer::Split { reason, message } => match transport.split(&body) {
                Some([first, second]) => {
                    // Depth first, first part first: a series' samples still reach the backend in time order.
                    parts.push(second);
                    parts.push(first);
                }
                None => {
                    add(&mut rejected, reason, count);
                    refusal = Some(message);
                }
            },
        }
    }
    if let Some(message) = refusal {
        let refused: u64 = rejected.iter().map(|(_, n)| n).sum();
        tracing::warn!(exporter, refused, ?rejected, last = %message,
            "backend refused items of a request; the request was resent without them and the rest is stored");
    }
    Delivered::Accepted { rejected }
}

/// What one body's attempts came to.
enum Answer {
    Done(Delivered),
    Split { reason: &'static str, message: String },
}

fn add(rejected: &mut Vec<(&'static str, u64)>, reason: &'static str, count: u64) {
    if count == 0 {
        return;
    }
    match rejected.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, n)) => *n += count,
        None => rejected.push((reason, count)),
    }
}

/// Sends one body until the backend answers something other than "try again later".
async fn until_answered(
    transport: &dyn Transport,
    tenant: &Tenant,
    body: Bytes,
    retry: &Retry,
    health: &Health,
    shutdown: &CancellationToken,
) -> Answer {
    let exporter = health.exporter;
    let mut backoff = retry.initial_interval.get();
    loop {
        let started = Instant::now();
        health.attempts.fetch_add(1, Ordering::SeqCst);
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Answer::Done(Delivered::Cancelled),
            attempt = transport.send(body.clone(), tenant.clone()) => attempt,
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
                let rejected = if rejected > 0 { vec![(reason, rejected)] } else { Vec::new() };
                return Answer::Done(Delivered::Accepted { rejected });
            }
            Attempt::Rejected { reason, message } => {
                metrics::histogram!(m::REQUEST_DURATION, "exporter" => exporter, "outcome" => "rejected")
                    .record(seconds);
                // A backend that answers is up, even when it refuses this request.
                health.up();
                return Answer::Done(Delivered::Rejected { reason, message });
            }
            Attempt::Split { reason, message } => {
                metrics::histogram!(m::REQUEST_DURATION, "exporter" => exporter, "outcome" => "split").record(seconds);
                health.up();
                tracing::debug!(exporter, reason, %message, "backend refused a request for some of its items");
                return Answer::Split { reason, message };
            }
            Attempt::Retry { reason, after } => {
                health.down(&reason);
                next_wait(&mut backoff, retry, health, &reason, after, seconds)
            }
            Attempt::Unauthorized { message } => {
                let reason = format!("credentials refused: {message}");
                health.unauthorized(&reason);
                next_wait(&mut backoff, retry, health, &reason, None, seconds)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Answer::Done(Delivered::Cancelled),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long to wait after a failed attempt: the back-off with jitter, at least the backend's hint — which is
/// honoured up to `max_interval`, so a `Retry-After: 99999999` can't park the exporter for years. Grows `backoff`.
fn next_wait(
    backoff: &mut Duration,
    retry: &Retry,
    health: &Health,
    reason: &str,
    after: Option<Duration>,
    seconds: f64,
) -> Duration {
    let exporter = health.exporter;
    metrics::histogram!(m::REQUEST_DURATION, "exporter" => exporter, "outcome" => "retry").record(seconds);
    health.retries.fetch_add(1, Ordering::SeqCst);
    metrics::counter!(m::RETRIES, "exporter" => exporter).increment(1);
    let hint = after.unwrap_or_default().min(retry.max_interval.get());
    let wait = jittered(*backoff, retry.randomization_factor).max(hint);
    tracing::debug!(exporter, %reason, wait_ms = wait.as_millis() as u64, "retrying");
    *backoff = backoff.mul_f64(retry.multiplier).min(retry.max_interval.get());
    wait
}

/// `interval` times a random factor in `[1 - r, 1 + r]`, so that many workers retrying at once spread out.
fn jittered(interval: Duration, randomization: f64) -> Duration {
    let factor = 1.0 + randomization * (2.0 * fastrand::f64() - 1.0);
    interval.mul_f64(factor.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use std::sync::Mutex;

    struct Script(Mutex<Vec<Attempt>>, Mutex<Vec<tokio::time::Instant>>);

    impl Transport for Script {
        fn send(&self, _: Bytes, _: Tenant) -> BoxFuture<'_, Attempt> {
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
        let done = deliver(&script, None, Bytes::new(), 1, &retry(), &health, &CancellationToken::new()).await;
        assert!(matches!(done, Delivered::Accepted { ref rejected } if rejected.is_empty()));
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
    async fn the_backend_hint_is_a_floor_up_to_max_interval() {
        let accepted = || Attempt::Accepted { rejected: 0, reason: "", message: None };
        let script = Script(Mutex::new(vec![again(Some(5)), accepted()]), Mutex::default());
        deliver(&script, None, Bytes::new(), 1, &retry(), &Health::new("test"), &CancellationToken::new()).await;
        let times = script.1.lock().unwrap().clone();
        assert!(times[1] - times[0] >= Duration::from_secs(5), "a hint above the back-off is honoured");

        // `Retry-After: 99999999` (or a gRPC RetryInfo as long) waits max_interval (8 s), not three years.
        let script = Script(Mutex::new(vec![again(Some(99_999_999)), accepted()]), Mutex::default());
        let done =
            deliver(&script, None, Bytes::new(), 1, &retry(), &Health::new("test"), &CancellationToken::new()).await;
        assert!(matches!(done, Delivered::Accepted { .. }));
        let times = script.1.lock().unwrap().clone();
        assert_eq!(times.len(), 2, "the second attempt came");
        assert_eq!(times[1] - times[0], Duration::from_secs(8), "capped at max_interval");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_refusal_is_not_retried_and_shutdown_cancels_retries() {
        let script = Script(
            Mutex::new(vec![Attempt::Rejected { reason: "bad_request", message: "no".into() }]),
            Mutex::default(),
        );
        let done =
            deliver(&script, None, Bytes::new(), 1, &retry(), &Health::new("test"), &CancellationToken::new()).await;
        assert!(matches!(done, Delivered::Rejected { reason: "bad_request", .. }));

        let forever = Script(Mutex::new((0..1000).map(|_| again(None)).collect()), Mutex::default());
        let health = Health::new("test");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            stop.cancel();
        });
        let done = deliver(&forever, None, Bytes::new(), 1, &retry(), &health, &shutdown).await;
        assert!(matches!(done, Delivered::Cancelled));
        assert!(health.down_since().is_some());
        // An hour at ≤ 12 s per retry: it never gave up.
        assert!(health.retries.load(Ordering::SeqCst) > 300);
    }
}
