//! The proof of "nothing acknowledged is ever lost": the whole pipeline, every role its own process of the real
//! binary, on a three-node Apache Kafka cluster, under steady load from the OpenTelemetry Python SDK, while a seeded
//! scheduler injects faults; at the end, a ledger per signal and stage of what the client saw acknowledged against
//! what each stage holds.
//!
//! * `faults`: the seeded fault scheduler, and the effect each fault had;
//! * `harness::processes`: each role as a process (start, SIGKILL, SIGSTOP/SIGCONT, SIGTERM), and its peak RSS;
//! * `pipeline`: the brokers (Apache Kafka; or Tansu, or MockCluster), two gateways, two samplers, the exporter,
//!   and the backends they deliver to;
//! * `load`: the Python SDK client and its ledger file (`tests/python/campaign_client.py`);
//! * `ledger`: the client's ledger read back, compared with a stage in the Jepsen vocabulary;
//! * `expectation`: which traces the sampling policies must keep;
//! * `stages`: what the topics and the backends hold at the end;
//! * `harness::lag`: consumer-group lag, waited on until it is 0.
//!
//! The run fails unless: nothing acknowledged is lost at any stage (spans compared by what they say, not only by
//! their IDs); nothing is there that was never sent; duplicates stay within what the faults explain (see
//! [`ledger::unexplained_copies`]); at least [`ACKNOWLEDGED_FLOOR`] of the client's export calls outside the fault
//! windows were acknowledged (gateways that refuse everything lose nothing, and prove nothing); every trace decided
//! without its late error or slow span lies in a fault's window; every fault kind was injected and had its effect;
//! every dead-letter topic holds exactly the records that are not OTLP; and every process's peak RSS (`VmHWM`) stays
//! within its configured bounds plus [`pipeline::OVERHEAD_MIB`].
//!
//! A fault's windows: for duplicates, from [`WINDOW_BEFORE`] ahead of it (what may be re-read after it) to
//! [`CALLS_RECOVER`] past its heal; for the acknowledged share and late decisions, from the fault to
//! [`CALLS_RECOVER`] past its heal. The short run deals its faults close together, so these windows cover most of
//! its load and those checks bind little there; the long run spaces faults 30–50 s apart, and there they bind.
//!
//! The short run (360 s of load, every fault kind once) is part of the normal suite. A long one:
//!
//! ```text
//! TAILGATE_CAMPAIGN_DURATION=30m TAILGATE_CAMPAIGN_SEED=7 TAILGATE_PYTHON=$PWD/target/venv/bin/python \
//!   cargo test --test integration campaign -- --nocapture
//! ```
//!
//! `TAILGATE_CAMPAIGN_FAULTS=kill_worker,jaeger_hangs,...` picks the kinds (`none`: no faults);
//! `TAILGATE_CAMPAIGN_BROKER=tansu` or `mock` runs on Tansu or MockCluster instead of Apache Kafka (see
//! `pipeline.rs` for what they did under the schedule).
//!
//! The seed is printed at the start; the same seed gives the same faults at the same offsets and the same traces
//! (IDs, kinds) from the client.

mod expectation;
mod faults;
mod ledger;
mod load;
mod pipeline;
mod stages;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::lag;
use ledger::{compare, Row, Sent};
use pipeline::{Pipeline, DECISION_WAIT_S, PARTITIONS};

/// Seconds of load: `TAILGATE_CAMPAIGN_DURATION` (`360s`, `30m`, `2h`, or plain seconds), else 360 — long enough for
/// a deck of every fault kind.
fn duration() -> Duration {
    let Ok(text) = std::env::var("TAILGATE_CAMPAIGN_DURATION") else { return Duration::from_secs(360) };
    let (number, unit) = text.trim().split_at(text.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().unwrap_or_else(|_| panic!("TAILGATE_CAMPAIGN_DURATION `{text}`: like 300s or 30m"));
    Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => panic!("TAILGATE_CAMPAIGN_DURATION: unknown unit `{other}` (s, m, h)"),
    })
}

fn seed() -> u64 {
    std::env::var("TAILGATE_CAMPAIGN_SEED").map_or(20_261_201, |s| s.parse().expect("TAILGATE_CAMPAIGN_SEED: a number"))
}

/// Traces a second the client starts.
const RATE: f64 = 20.0;

/// The share of the client's export calls, outside every fault's window, that must have been acknowledged.
pub const ACKNOWLEDGED_FLOOR: f64 = 0.99;

/// A fault's window for duplicates: records first sent this long before it may be re-read after it (a sampler
/// holds a trace's records uncommitted for its decision wait, and commits every few seconds) ...
const WINDOW_BEFORE: Duration = Duration::from_secs(DECISION_WAIT_S + 10);
/// ... and up to this long after its heal: how long the client's calls may still fail or be retried (its 4 s
/// timeout and backoff, a producer's metadata refresh). Also the end of a fault's window for the acknowledged share
/// and for late decisions.
const CALLS_RECOVER: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_under_faults() {
    let (seed, load_for) = (seed(), duration());
    eprintln!("campaign: seed {seed} (TAILGATE_CAMPAIGN_SEED), {load_for:?} of load at {RATE} traces/s");
    let mut pipeline = Pipeline::new().await;
    eprintln!("campaign: run directory {} (configs, every process's log, the ledger)", pipeline.dir.display());
    pipeline.start().await;
    let rss = crate::harness::processes::RssSampler::start(&pipeline.all());
    let run_started = Instant::now();

    let started = Instant::now();
    let started_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let load = load::Load::start(&pipeline.dir, &pipeline.gateway_addrs, load_for.as_secs_f64(), RATE, seed);
    let kinds = faults::Kind::from_env(matches!(pipeline.broker, pipeline::Broker::Kafka(_)));
    eprintln!("campaign: faults {kinds:?} (TAILGATE_CAMPAIGN_FAULTS)");
    let injected = faults::run(&mut pipeline, seed, &kinds, started, load_for).await;
    let (ledger, traces) = load.wait(load_for + Duration::from_secs(120)).await;
    eprintln!("campaign: load done after {:?}", started.elapsed());

    for process in pipeline.workers_mut() {
        assert_eq!(process.exited(), None, "{} exited on its own; see {}", process.name, process.log().display());
    }
    wait_for_zero_lag(&pipeline).await;
    drop(rss);

    let sent = Sent::read(&ledger);
    eprintln!("campaign: export calls (signal, acknowledged) → count: {:?}", sent.calls);
    // The ledger is about the load that was meant: a root and a child per trace, and a log line.
    assert_eq!(sent.spans.len(), 2 * traces, "every span the client made went into an export call");
    assert_eq!(sent.logs.len(), traces, "every log line the client made went into an export call");
    let unix = |d: Duration| started_unix + d.as_secs_f64();
    // Where duplicates may come from (records re-read after a fault), and where a fault was on or just healed.
    let windows: Vec<(f64, f64)> =
        injected.windows(WINDOW_BEFORE, CALLS_RECOVER).into_iter().map(|(a, b)| (unix(a), unix(b))).collect();
    let faulted: Vec<(f64, f64)> =
        injected.windows(Duration::ZERO, CALLS_RECOVER).into_iter().map(|(a, b)| (unix(a), unix(b))).collect();
    let (rows, problems) = check(&pipeline, &sent, &injected, &windows, &faulted, run_started.elapsed()).await;
    ledger::print(&rows);

    // The faults: each one's effect and how long the pipeline took to get over it.
    let mut no_effect = Vec::new();
    for fault in &injected.faults {
        let r = *fault.recovery.lock().unwrap();
        let secs = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
        eprintln!(
            "fault {:>6.1}s–{:>6.1}s {:<15} consuming again {:>6}, lag under one decision wait {:>6}: {}",
            fault.at.as_secs_f64(),
            fault.healed.as_secs_f64(),
            fault.kind.name(),
            secs(r.consuming),
            secs(r.caught_up),
            fault.what
        );
        match &fault.effect {
            Ok(effect) => eprintln!("    effect: {effect}"),
            Err(why) => no_effect.push(format!("{} at {:.1}s: {why}", fault.kind.name(), fault.at.as_secs_f64())),
        }
    }
    let counts = injected.counts();
    let missing: Vec<&str> = kinds.iter().filter(|k| !counts.contains_key(k)).map(|k| k.name()).collect();

    // After the stop, which reads each process's VmHWM once more before its SIGTERM.
    pipeline.stop();
    let peaks = crate::harness::processes::peaks(&pipeline.all());
    for (name, mib) in &peaks {
        eprintln!("peak RSS (VmHWM) {name:<10} {mib:>7.1} MiB (bound {} MiB)", pipeline::rss_bound_mib(name));
    }

    for row in &rows {
        assert_eq!(row.lost, 0, "lost at {} {}: {row:?}", row.signal, row.stage);
        assert_eq!(row.unexpected, 0, "never sent as found, yet at {} {}: {row:?}", row.signal, row.stage);
    }
    assert!(problems.is_empty(), "the ledger:\n  {}", problems.join("\n  "));
    assert!(missing.is_empty(), "fault kinds never injected (a longer run deals them all): {missing:?}");
    assert!(no_effect.is_empty(), "faults with no effect seen:\n  {}", no_effect.join("\n  "));
    for (name, mib) in &peaks {
        assert!(*mib <= pipeline::rss_bound_mib(name) as f64, "{name} peaked at {mib:.1} MiB");
    }
}

/// Waits until the samplers and every exporter have committed everything in their topics.
async fn wait_for_zero_lag(pipeline: &Pipeline) {
    let (t, consumer) = (&pipeline.kafka.topics, &pipeline.kafka.consumer);
    let groups = [
        (consumer.sampler_group(), t.spans.clone()),
        (consumer.exporter_group("jaeger"), t.sampled_spans.clone()),
        (consumer.exporter_group("prometheus_remote_write"), t.metrics.clone()),
        (consumer.exporter_group("loki"), t.logs.clone()),
    ];
    let brokers = pipeline.kafka.brokers.clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let lags: Vec<Option<i64>> = {
            let (brokers, groups) = (brokers.clone(), groups.clone());
            tokio::task::spawn_blocking(move || {
                groups.iter().map(|(g, topic)| lag::lag(&brokers, g, topic, PARTITIONS)).collect()
            })
            .await
            .unwrap()
        };
        if lags.iter().all(|l| *l == Some(0)) {
            return;
        }
        if Instant::now() > deadline {
            // What the workers said of themselves when the wait gave up, for whoever reads the failure.
            for process in pipeline.samplers.iter().chain(std::iter::once(&pipeline.exporter)) {
                if let Some(addr) = process.telemetry() {
                    let page = crate::harness::http::request(addr, "GET", "/metrics", &[], b"").await;
                    let path = pipeline.dir.join(format!("{}.metrics", process.name));
                    std::fs::write(&path, &page.body).unwrap();
                }
            }
            panic!(
                "lag never reached 0: {groups:?} → {lags:?} (each worker's /metrics then: {}/*.metrics)",
                pipeline.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A stage that is sent an item again at most once per fault: the gateways' topics (a client retries a call the
/// fault failed).
fn once_per_fault<K>(_: &K, faults: &[usize]) -> u64 {
    faults.len() as u64
}

/// Every stage against the ledger: the rows, and what else the ledger shows wrong (duplicates beyond their bound,
/// too few calls acknowledged, late decisions no fault explains, dead letters that are not the injected ones).
async fn check(
    pipeline: &Pipeline,
    sent: &Sent,
    injected: &faults::Injected,
    windows: &[(f64, f64)],
    faulted: &[(f64, f64)],
    run: Duration,
) -> (Vec<Row>, Vec<String>) {
    let (brokers, t) = (&pipeline.kafka.brokers, &pipeline.kafka.topics);
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let in_window = |at: f64| windows.iter().any(|(from, to)| (*from..=*to).contains(&at));

    // The client's calls outside every fault: acknowledged, but for a stated share.
    for signal in ["spans", "logs", "metrics"] {
        let outside: Vec<bool> = sent
            .call_times
            .iter()
            .filter(|(s, _, start, end)| {
                s == signal && !faulted.iter().any(|(from, to)| *start <= *to && *end >= *from)
            })
            .map(|(_, ok, _, _)| *ok)
            .collect();
        let share = outside.iter().filter(|ok| **ok).count() as f64 / outside.len().max(1) as f64;
        eprintln!("{signal} calls outside the faults: {} of which {:.2}% acknowledged", outside.len(), share * 100.0);
        if outside.is_empty() || share < ACKNOWLEDGED_FLOOR {
            problems.push(format!(
                "{signal}: {:.2}% of {} calls outside the faults acknowledged, under the floor of {:.0}%",
                share * 100.0,
                outside.len(),
                ACKNOWLEDGED_FLOOR * 100.0
            ));
        }
    }
    fn bounded(problems: &mut Vec<String>, stage: &str, (duplicated, beyond, examples): (u64, u64, Vec<String>)) {
        eprintln!("{stage}: {duplicated} duplicates, {beyond} beyond what the faults explain");
        if beyond > 0 {
            problems.push(format!("{stage}: {beyond} copies beyond the faults' bound, e.g. {examples:?}"));
        }
    }
    let span_sent = |k: &ledger::SpanKey| sent.spans.get(k).map(|s| s.first_sent);

    // Traces.
    let sent_spans: HashSet<_> = sent.spans.keys().cloned().collect();
    let acked = sent.acked_spans();
    // The foreign trace the scheduler wrote is kept (its span failed) but is nobody's acknowledgement.
    let foreign = |spans: Vec<ledger::SpanKey>| -> Vec<ledger::SpanKey> {
        spans.into_iter().filter(|(t, _, _)| !injected.foreign_traces.contains(t)).collect()
    };
    // The records of a tenant that is none are in the spans topic (the readers dead-letter them), nowhere after it.
    let spans_topic: Vec<_> = foreign(stages::span_keys(&stages::topic(brokers, &t.spans, PARTITIONS).await))
        .into_iter()
        .filter(|(t, _, _)| !injected.no_tenant_traces.contains(t))
        .collect();
    rows.push(compare("traces", "kafka spans", &acked, &sent_spans, &spans_topic).0);
    // Duplicates, stage by stage, bounded by what the design re-reads or re-sends per fault.
    bounded(&mut problems, "kafka spans", ledger::unexplained_copies(&spans_topic, span_sent, windows, once_per_fault));

    let kept = expectation::kept(sent, DECISION_WAIT_S as f64);
    let sampled = foreign(stages::span_keys(&stages::topic(brokers, &t.sampled_spans, PARTITIONS).await));
    let (row, lost) = compare("traces", "kafka sampled_spans", &kept.must, &sent_spans, &sampled);
    rows.push(row);
    // A sampler may decide a trace again after a fault (it re-reads what it had not committed), and sends again an
    // output batch whose delivery timed out — once per delivery timeout while the fault lasts: a leader waiting for
    // a paused replica appends every attempt and commits them all once the replica is fenced (a 10 s pause gave 4
    // copies). So per fault: one re-decision, and one re-send per started delivery timeout of its duration; of each
    // copy the spans topic holds (the sampler keeps no span IDs to tell a copy from a retry).
    let spans_copies = ledger::copies(&spans_topic);
    let delivery_timeout = pipeline.kafka.producer.delivery_timeout.get().as_secs_f64();
    let per_fault = |n: &usize| {
        let fault = &injected.faults[*n];
        2 + ((fault.healed - fault.at).as_secs_f64() / delivery_timeout) as u64
    };
    let resent_per_fault = |k: &ledger::SpanKey, faults: &[usize]| {
        spans_copies.get(k).copied().unwrap_or(1) * (1 + faults.iter().map(per_fault).sum::<u64>()) - 1
    };
    bounded(
        &mut problems,
        "kafka sampled_spans",
        ledger::unexplained_copies(&sampled, span_sent, windows, resent_per_fault),
    );
    let sampled_copies = ledger::copies(&sampled);
    let jaeger = foreign(stages::jaeger_keys(&pipeline.jaeger));
    // Spans Jaeger refused in a partial success were counted by the exporter (the fault checked the count) and are
    // not to be sent again: not there, and not lost by the pipeline.
    let refused = stages::jaeger_refused(&pipeline.jaeger);
    eprintln!("jaeger: {} spans refused by partial successes", refused.len());
    let must: HashSet<_> = kept.must.difference(&refused).cloned().collect();
    let (row, lost_in_jaeger) = compare("traces", "jaeger", &must, &sent_spans, &jaeger);
    rows.push(row);
    // The exporter delivers each copy the sampled topic holds, and again after each fault (it re-reads what it had
    // not committed): copies there times one more per fault.
    let per_topic_copy = |k: &ledger::SpanKey, faults: &[usize]| {
        sampled_copies.get(k).copied().unwrap_or(1) * (1 + faults.len() as u64) - 1
    };
    bounded(&mut problems, "jaeger", ledger::unexplained_copies(&jaeger, span_sent, windows, per_topic_copy));
    for (reason, traces) in &kept.traces {
        eprintln!("traces kept for {reason}: {}", traces.len());
    }
    eprintln!(
        "traces dropped by the hash: {}, indeterminate (deciding span sent unacknowledged): {}, late (deciding span \
         acknowledged more than {DECISION_WAIT_S}s after the root was sent): {}",
        kept.dropped.len(),
        kept.indeterminate.len(),
        kept.late.len()
    );
    // A late deciding span is one a fault held up: each late trace's deciding span was acknowledged while a fault
    // was on or just healed.
    let deciding_acked = |trace: &String| {
        sent.spans.iter().filter(|((t, _, _), s)| t == trace && !s.root).filter_map(|(_, s)| s.acked_at).next()
    };
    let mut late_by_fault = vec![0; injected.faults.len()];
    let mut unexplained_late = Vec::new();
    for trace in &kept.late {
        let at = deciding_acked(trace).unwrap_or_default();
        match faulted.iter().position(|(from, to)| (*from..=*to).contains(&at)) {
            Some(n) => late_by_fault[n] += 1,
            None => unexplained_late.push(trace.clone()),
        }
    }
    for (fault, late) in injected.faults.iter().zip(&late_by_fault).filter(|(_, n)| **n > 0) {
        eprintln!("  {late} late traces in the window of {} at {:.1}s", fault.kind.name(), fault.at.as_secs_f64());
    }
    if !unexplained_late.is_empty() {
        problems
            .push(format!("{} late traces outside every fault's window: {unexplained_late:?}", unexplained_late.len()));
    }
    let lost_traces: HashSet<&String> = lost.iter().chain(&lost_in_jaeger).map(|(t, _, _)| t).collect();
    for trace in lost_traces.iter().take(10) {
        let spans: Vec<_> = sent.spans.iter().filter(|((t, _, _), _)| t == *trace).collect();
        eprintln!("  incomplete trace {trace}: sent {spans:?}");
        let held: Vec<_> = jaeger.iter().filter(|(t, _, _)| t == *trace).collect();
        eprintln!("    Jaeger holds {held:?}");
    }
    // Ordinary traces the hash drops must not be there: the count kept is exactly the policy's.
    let wrongly_kept: HashSet<&String> =
        jaeger.iter().map(|(t, _, _)| t).filter(|t| kept.dropped.contains(*t)).collect();
    assert!(wrongly_kept.is_empty(), "{} traces the policies drop are in Jaeger", wrongly_kept.len());

    // Logs.
    let sent_logs: HashSet<String> = sent.logs.keys().cloned().collect();
    let acked_logs = sent.acked_logs();
    let log_sent = |k: &String| sent.log_first_sent.get(k).copied();
    let logs_topic: Vec<String> = stages::log_keys(&stages::topic(brokers, &t.logs, PARTITIONS).await)
        .into_iter()
        .filter(|key| !key.starts_with(&format!("{}|", faults::NO_TENANT_LOG)))
        .collect();
    rows.push(compare("logs", "kafka logs", &acked_logs, &sent_logs, &logs_topic).0);
    bounded(&mut problems, "kafka logs", ledger::unexplained_copies(&logs_topic, log_sent, windows, once_per_fault));
    let loki = stages::loki_lines(&pipeline.loki);
    // Lines Loki refused (too old, its 400 saying how many) were counted by the exporter, as the fault checked.
    let refused = stages::loki_refused(&pipeline.loki);
    eprintln!("loki: {} lines refused", refused.len());
    let must: HashSet<_> = acked_logs.difference(&refused).cloned().collect();
    rows.push(compare("logs", "loki", &must, &sent_logs, &loki).0);
    // The exporter delivers each copy the logs topic holds, and again after each fault.
    let logs_copies = ledger::copies(&logs_topic);
    let per_log_copy =
        |k: &String, faults: &[usize]| logs_copies.get(k).copied().unwrap_or(1) * (1 + faults.len() as u64) - 1;
    bounded(&mut problems, "loki", ledger::unexplained_copies(&loki, log_sent, windows, per_log_copy));

    // Metrics: the delta sum and the cumulative histogram's count.
    let totals = stages::metric_totals(&stages::topic(brokers, &t.metrics, PARTITIONS).await);
    let (orders_now, orders_samples) =
        stages::prometheus_series(&pipeline.prometheus, "campaign_orders_total", run).await;
    let (count_now, _) =
        stages::prometheus_series(&pipeline.prometheus, "campaign_latency_milliseconds_count", run).await;
    eprintln!(
        "campaign.orders (delta sum): acknowledged {} (+{} sent unacknowledged), kafka {} (+{} repeated points), \
         prometheus now {orders_now:?}, across resets {}",
        sent.orders_acked,
        sent.orders_unacked,
        totals.orders,
        totals.repeated_points.len(),
        stages::reset_adjusted(&orders_samples)
    );
    eprintln!(
        "campaign.latency (cumulative histogram) count: acknowledged {} (sent {}), kafka {}, prometheus {count_now:?}",
        sent.latency_count_acked, sent.latency_count_sent, totals.latency_count
    );
    let mut orders_row = metric_row("orders", "kafka metrics", sent.orders_acked, sent.orders_unacked, totals.orders);
    // A point the topic holds twice is a duplicate, whatever the totals say; each must be of a fault's window.
    orders_row.duplicated += totals.repeated_points.len() as u64;
    let unexplained_points = totals.repeated_points.iter().filter(|at| !in_window(**at)).count();
    if unexplained_points > 0 {
        problems.push(format!("kafka metrics: {unexplained_points} repeated points outside every fault's window"));
    }
    rows.push(orders_row);
    // The exporter keeps delta totals in memory: after its restart the counter starts again from the deltas re-read
    // since the last commit, a reset Prometheus' increase() counts across. So the total is the reset-adjusted sum of
    // the raw samples, not the value now (which only counts since the last restart).
    let orders_total = stages::reset_adjusted(&orders_samples);
    let prometheus_row = metric_row("orders", "prometheus", sent.orders_acked, sent.orders_unacked, orders_total);
    // Deltas applied twice come from re-reading after a fault: at most the deltas sent within the faults' windows.
    let in_windows: f64 = sent.orders_sent.iter().filter(|(at, _)| in_window(*at)).map(|(_, v)| v).sum();
    if prometheus_row.duplicated as f64 > in_windows {
        problems.push(format!(
            "prometheus: {} orders applied twice, more than the {in_windows} sent within the faults' windows",
            prometheus_row.duplicated
        ));
    }
    rows.push(prometheus_row);
    let unacked_count = (sent.latency_count_sent - sent.latency_count_acked) as f64;
    let acked_count = sent.latency_count_acked as f64;
    rows.push(metric_row("latency", "kafka metrics", acked_count, unacked_count, totals.latency_count as f64));
    rows.push(metric_row("latency", "prometheus", acked_count, unacked_count, count_now.unwrap_or(0.0)));

    // Dead letters: exactly the records no worker may read (not OTLP, or of no tenant), one per topic per injection.
    for topic in [&t.spans, &t.logs, &t.metrics] {
        let dlq = tailgate_proto::headers::dead_letter_topic(topic);
        let brokers = brokers.clone();
        let held = tokio::task::spawn_blocking(move || lag::records(&brokers, &dlq, PARTITIONS)).await.unwrap();
        eprintln!("dead letters of {topic}: {held:?} (injected {})", injected.unreadable);
        // A worker that restarts re-reads what it had not committed, a dead-lettered record too: at most once more
        // per fault.
        let (held, written) = (held.unwrap_or(0), injected.unreadable as i64);
        if held < written || held > written + injected.faults.len() as i64 {
            problems.push(format!(
                "dead letters of {topic}: {held}, but {written} unreadable records were written ({} faults)",
                injected.faults.len()
            ));
        }
    }
    (rows, problems)
}
/// A metric's row: what was acknowledged must be in the total; anything above it, up to what was sent
/// unacknowledged, is `indeterminate`, beyond that `duplicated` (a total cannot tell a duplicate from a stranger).
fn metric_row(signal: &str, stage: &str, acked: f64, unacked: f64, found: f64) -> Row {
    let excess = (found - acked).max(0.0);
    Row {
        signal: signal.to_owned(),
        stage: stage.to_owned(),
        acknowledged: acked as u64,
        present: found.min(acked) as u64,
        lost: (acked - found).max(0.0) as u64,
        // Above what may have arrived unacknowledged: a delta applied twice (at-least-once redelivery).
        duplicated: (excess - unacked).max(0.0) as u64,
        unexpected: 0,
        indeterminate: excess.min(unacked) as u64,
    }
}
