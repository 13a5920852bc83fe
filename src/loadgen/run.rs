//! The steady-rate loop: due checkouts every 100 ms, business metrics every second, progress every second, and
//! the counts of what the gateway acknowledged.

use std::io::Write;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{Client, Outcome};
use super::scenario::{build, BusinessTotals, Checkout};
use super::LoadgenArgs;

/// What was acknowledged, and what wasn't.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub traces: u64,
    pub error_traces: u64,
    pub slow_traces: u64,
    /// Spans, log records and metric points the gateway acknowledged.
    pub spans_acked: u64,
    pub logs_acked: u64,
    pub points_acked: u64,
    /// Items the gateway refused (partial success, or a permanent error).
    pub rejected: u64,
    /// Requests given up after the SDK-like retries.
    pub failed_requests: u64,
    pub retries: u64,
}

impl Summary {
    /// Counts one request's outcome; returns the items acknowledged, for the caller's signal.
    fn count(&mut self, outcome: Outcome) -> u64 {
        self.rejected += outcome.rejected;
        self.retries += outcome.retries;
        self.failed_requests += u64::from(outcome.failed);
        outcome.acked
    }
}

/// Sends checkouts at `args.rate` for `args.duration` (or until `stop`), writing progress to `progress`.
pub async fn run(
    args: &LoadgenArgs,
    progress: &mut (dyn Write + Send),
    stop: CancellationToken,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!((0.0..=1.0).contains(&args.error_rate), "--error-rate must be between 0 and 1");
    anyhow::ensure!((0.0..=1.0).contains(&args.slow_rate), "--slow-rate must be between 0 and 1");
    let mut client = Client::new(args)?;
    // Two streams of one seed: the checkouts drawn depend only on how many came before, not on how the ticks
    // batched them (building a batch draws IDs per request, so one stream would shift with the timing).
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut ids = fastrand::Rng::with_seed(args.seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut summary = Summary::default();
    let mut totals = BusinessTotals::default();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last_metrics = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    writeln!(
        progress,
        "loadgen: {:.1} checkouts/s for {:?} to {} over {:?}",
        args.rate, args.duration, args.endpoint, args.protocol
    )?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = started.elapsed().min(args.duration);
        let due = (elapsed.as_secs_f64() * args.rate).floor() as u64;
        if due > summary.traces {
            let checkouts: Vec<Checkout> =
                (summary.traces..due).map(|_| Checkout::draw(&mut rng, args.error_rate, args.slow_rate)).collect();
            summary.traces = due;
            for c in &checkouts {
                summary.error_traces += c.error as u64;
                summary.slow_traces += c.slow as u64;
                totals.add(c);
            }
            let (traces, logs) = build(&checkouts, args.span_bytes, &mut ids);
            let outcome = client.send(traces, progress, &stop).await;
            summary.spans_acked += summary.count(outcome);
            let outcome = client.send(logs, progress, &stop).await;
            summary.logs_acked += summary.count(outcome);
        }
        let finished = started.elapsed() >= args.duration;
        if last_metrics.elapsed() >= Duration::from_secs(1) || finished {
            let outcome = client.send(totals.request(), progress, &stop).await;
            summary.points_acked += summary.count(outcome);
            last_metrics = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let rate = summary.traces as f64 / started.elapsed().as_secs_f64().max(0.001);
            writeln!(
                progress,
                "sent {} checkouts ({} errors, {} slow), acked {} spans {} logs {} points, rejected {}, failed requests {}, {rate:.1} checkouts/s",
                summary.traces, summary.error_traces, summary.slow_traces, summary.spans_acked, summary.logs_acked,
                summary.points_acked, summary.rejected, summary.failed_requests
            )?;
            last_report = Instant::now();
        }
        if finished {
            break;
        }
    }
    writeln!(
        progress,
        "loadgen done: {} checkouts ({} errors, {} slow); acknowledged {} spans, {} log records, {} metric points; rejected {}; {} requests failed after retries; {} retries",
        summary.traces, summary.error_traces, summary.slow_traces, summary.spans_acked, summary.logs_acked,
        summary.points_acked, summary.rejected, summary.failed_requests, summary.retries
    )?;
    Ok(summary)
}
