//! The fault scheduler: during the load, at seeded intervals (3–8 s apart; 30–50 s in a run of 20 minutes or
//! more), faults dealt from a seeded shuffle of
//! the kinds, each healed before the next (a role's two processes down together is one fault), every one logged with
//! its offset from the start of the load and **the effect it had**: the counter, the leadership or the exit status
//! the fault must move. A fault that moved nothing proves nothing, and the run fails on it. The same seed gives the
//! same faults at the same offsets.
//!
//! The kinds, on the workers: one SIGKILLed and restarted, SIGSTOPped then SIGCONTed, SIGTERMed under load (the
//! drain) and restarted; both gateways or both samplers SIGKILLed together. On the backends: Jaeger answering
//! `UNAVAILABLE`, hanging (takes requests, answers nothing), or refusing some spans of a request it stores (partial
//! success); Loki answering 503s, 429 with `Retry-After`, or 400 for some lines of a push it stores; Prometheus
//! SIGKILLed and restarted on its data, and out of the exporter's reach longer than its head's window while it goes
//! on (the backlog then refused as out of bounds). On the brokers (Apache Kafka): a node SIGKILLed and restarted on
//! its log directory, the leader of a spans, decisions or sampled partition SIGSTOPped past its session, a
//! controlled leader change (the leader's SIGTERM: Kafka's controlled shutdown). On the network between every role
//! and the brokers (a proxy per node, `harness::proxy`): added latency, one node's path stalled, every connection
//! reset, and a blackhole longer than the consumers' session (they lose their assignment). In the data: foreign
//! records stamped an hour ahead and an hour ago, and records that are not OTLP, written straight to the topics; a
//! request naming a tenant that is no tenant ID; the samplers' policies reloaded from a valid file, an invalid one,
//! and the original.
//!
//! After each heal, a task of its own measures the recovery (see [`Recovery`]) while the schedule goes on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Gauge, Metric, NumberDataPoint};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::pipeline::{Broker, Pipeline, DECISION_WAIT_S, PARTITIONS, SESSION_S};
use crate::harness::backends::{Answer, SHORT_HEAD_WINDOW};
use crate::harness::http;
use crate::harness::otlp::{logs_request, metrics_request_with, now_ns, service_resource, trace_request};
use crate::harness::proxy::{Counts, Path as ProxyPath, Proxy};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    KillWorker,
    PauseWorker,
    TermWorker,
    KillRole,
    JaegerDown,
    JaegerHangs,
    JaegerPartialSuccess,
    LokiDown,
    Loki429,
    LokiRefusesLines,
    PrometheusDown,
    PrometheusTooOld,
    KillBroker,
    PauseLeader,
    LeaderChange,
    NetworkDelay,
    NetworkStall,
    NetworkReset,
    Blackhole,
    FutureRecord,
    PastRecord,
    NotOtlp,
    InvalidTenant,
    PolicyReload,
}

impl Kind {
    pub const ALL: [Kind; 24] = [
        Kind::KillWorker,
        Kind::PauseWorker,
        Kind::TermWorker,
        Kind::KillRole,
        Kind::JaegerDown,
        Kind::JaegerHangs,
        Kind::JaegerPartialSuccess,
        Kind::LokiDown,
        Kind::Loki429,
        Kind::LokiRefusesLines,
        Kind::PrometheusDown,
        Kind::PrometheusTooOld,
        Kind::KillBroker,
        Kind::PauseLeader,
        Kind::LeaderChange,
        Kind::NetworkDelay,
        Kind::NetworkStall,
        Kind::NetworkReset,
        Kind::Blackhole,
        Kind::FutureRecord,
        Kind::PastRecord,
        Kind::NotOtlp,
        Kind::InvalidTenant,
        Kind::PolicyReload,
    ];

    /// Whether only Apache Kafka's cluster has what the kind needs: a leader to pause, a leadership to hand over,
    /// a proxy between each node and its clients.
    fn needs_cluster(self) -> bool {
        matches!(
            self,
            Kind::PauseLeader
                | Kind::LeaderChange
                | Kind::NetworkDelay
                | Kind::NetworkStall
                | Kind::NetworkReset
                | Kind::Blackhole
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::KillWorker => "kill_worker",
            Kind::PauseWorker => "pause_worker",
            Kind::TermWorker => "term_worker",
            Kind::KillRole => "kill_role",
            Kind::JaegerDown => "jaeger_down",
            Kind::JaegerHangs => "jaeger_hangs",
            Kind::JaegerPartialSuccess => "jaeger_partial_success",
            Kind::LokiDown => "loki_down",
            Kind::Loki429 => "loki_429",
            Kind::LokiRefusesLines => "loki_refuses_lines",
            Kind::PrometheusDown => "prometheus_down",
            Kind::PrometheusTooOld => "prometheus_too_old",
            Kind::KillBroker => "kill_broker",
            Kind::PauseLeader => "pause_leader",
            Kind::LeaderChange => "leader_change",
            Kind::NetworkDelay => "network_delay",
            Kind::NetworkStall => "network_stall",
            Kind::NetworkReset => "network_reset",
            Kind::Blackhole => "blackhole",
            Kind::FutureRecord => "future_record",
            Kind::PastRecord => "past_record",
            Kind::NotOtlp => "not_otlp",
            Kind::InvalidTenant => "invalid_tenant",
            Kind::PolicyReload => "policy_reload",
        }
    }

    /// `TAILGATE_CAMPAIGN_FAULTS` (names, comma-separated; `none` for a run without faults), else every kind the
    /// run's broker has (on Tansu and MockCluster, the cluster-only kinds are left out).
    pub fn from_env(on_kafka: bool) -> Vec<Kind> {
        match std::env::var("TAILGATE_CAMPAIGN_FAULTS") {
            Err(_) => Kind::ALL.into_iter().filter(|k| on_kafka || !k.needs_cluster()).collect(),
            Ok(text) if text.trim() == "none" => Vec::new(),
            Ok(text) => text
                .split(',')
                .map(|name| {
                    let kind = *Kind::ALL
                        .iter()
                        .find(|k| k.name() == name.trim())
                        .unwrap_or_else(|| panic!("TAILGATE_CAMPAIGN_FAULTS: no fault kind `{name}`"));
                    assert!(on_kafka || !kind.needs_cluster(), "{name} needs the Apache Kafka cluster");
                    kind
                })
                .collect(),
        }
    }
}

/// SplitMix64: a seeded generator small enough to write out, so a seed means the same schedule everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How long the pipeline took to get over a fault, from its heal: until every sampler had consumed a record again
/// (its spans counter rose between two polls, 250 ms apart), and until the samplers' lag was back under one decision
/// wait's worth of records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recovery {
    pub consuming: Option<Duration>,
    pub caught_up: Option<Duration>,
}

/// One fault as it happened.
pub struct Fault {
    pub kind: Kind,
    /// From the start of the load to the fault, and to its heal.
    pub at: Duration,
    pub healed: Duration,
    pub what: String,
    /// What the fault moved (`Ok`), or why it is not known to have had any effect (`Err`).
    pub effect: Result<String, String>,
    pub recovery: Arc<Mutex<Recovery>>,
}

/// What the faults left behind: the faults, and the records that are not the client's.
#[derive(Default)]
pub struct Injected {
    pub faults: Vec<Fault>,
    /// Trace IDs (hex) written straight to the spans topic, to be kept: in every stage, and nobody's
    /// acknowledgement.
    pub foreign_traces: Vec<String>,
    /// Trace IDs (hex) written straight to the spans topic with a tenant that is none: in the topic, and in no stage
    /// after it.
    pub no_tenant_traces: Vec<String>,
    /// Records no worker may read written to each of the spans, logs and metrics topics: not OTLP, or of a tenant
    /// that is no tenant ID. Each must end in its topic's dead-letter topic.
    pub unreadable: u64,
}

impl Injected {
    /// How often each kind was injected.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for fault in &self.faults {
            *counts.entry(fault.kind).or_default() += 1;
        }
        counts
    }

    /// The time windows, from the load's start, in which a fault was on or the pipeline still recovering from it:
    /// from `before` ahead of each fault (records read before it may be read again after it) to `after` past its heal.
    pub fn windows(&self, before: Duration, after: Duration) -> Vec<(Duration, Duration)> {
        self.faults.iter().map(|f| (f.at.saturating_sub(before), f.healed + after)).collect()
    }
}

/// The samplers' records per decision wait at the campaign's rate: two spans a trace.
const CAUGHT_UP_RECORDS: f64 = 2.0 * super::RATE * DECISION_WAIT_S as f64;

/// Injects faults from `kinds` until `until` after `started` (the load's start), then returns with every fault
/// healed.
pub async fn run(pipeline: &mut Pipeline, seed: u64, kinds: &[Kind], started: Instant, until: Duration) -> Injected {
    let mut rng = Rng::new(seed);
    let mut injected = Injected::default();
    if kinds.is_empty() {
        return injected;
    }
    // The first fault after the pipeline has settled into the load, the last one healed before the load ends.
    let mut next = started + rng.millis(10_000, 15_000);
    // Dealt from a shuffled deck of the kinds, so a short run still meets every kind once.
    let mut deck: Vec<Kind> = Vec::new();
    loop {
        tokio::time::sleep_until(next.into()).await;
        if started.elapsed() + Duration::from_secs(20) > until {
            return injected;
        }
        if deck.is_empty() {
            deck = kinds.to_vec();
            for i in (1..deck.len()).rev() {
                deck.swap(i, rng.below(i + 1));
            }
        }
        let kind = deck.pop().unwrap();
        let at = started.elapsed();
        let (what, effect) = inject(pipeline, kind, &mut rng, &mut injected).await;
        let healed = started.elapsed();
        eprintln!(
            "fault at {:>6.1}s: {what} (healed at {:.1}s) — {}",
            at.as_secs_f64(),
            healed.as_secs_f64(),
            match &effect {
                Ok(effect) => format!("effect: {effect}"),
                Err(why) => format!("NO EFFECT SEEN: {why}"),
            }
        );
        let recovery = Arc::new(Mutex::new(Recovery::default()));
        tokio::spawn(measure_recovery(sampler_telemetry(pipeline), Arc::clone(&recovery)));
        injected.faults.push(Fault { kind, at, healed, what, effect, recovery });
        // Close together in a short run, so that every kind fits; apart in a long one, so that the windows the
        // ledger explains duplicates and late traces by (see `mod.rs`) leave most of the load outside them.
        next = Instant::now()
            + if until >= Duration::from_secs(20 * 60) { rng.millis(30_000, 50_000) } else { rng.millis(3_000, 8_000) };
    }
}

fn sampler_telemetry(pipeline: &Pipeline) -> Vec<SocketAddr> {
    pipeline.samplers.iter().filter_map(|s| s.telemetry()).collect()
}

/// Polls the samplers' pages for up to two minutes after a heal (see [`Recovery`]).
async fn measure_recovery(samplers: Vec<SocketAddr>, recovery: Arc<Mutex<Recovery>>) {
    let healed = Instant::now();
    let mut consumed: Vec<Option<f64>> = vec![None; samplers.len()];
    let mut rose = vec![false; samplers.len()];
    while healed.elapsed() < Duration::from_secs(120) {
        let mut lag = 0.0;
        let mut answered = 0;
        for (n, addr) in samplers.iter().enumerate() {
            let page = http::metrics(*addr).await;
            if page.is_empty() {
                continue;
            }
            answered += 1;
            let spans = family_sum(&page, "tailgate_sampler_spans_total", "");
            lag += family_sum(&page, "tailgate_sampler_consumer_lag_records", "");
            // A sampler restarted since the last poll starts its counter again from 0: a rise from where it is.
            rose[n] |= consumed[n].is_some_and(|before| spans > before);
            consumed[n] = Some(spans);
            if rose.iter().all(|r| *r) {
                recovery.lock().unwrap().consuming.get_or_insert(healed.elapsed());
            }
        }
        {
            let mut r = recovery.lock().unwrap();
            if answered == samplers.len() && r.consuming.is_some() && lag <= CAUGHT_UP_RECORDS {
                r.caught_up.get_or_insert(healed.elapsed());
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The sum of the series of `family` whose labels contain `labels` (`""`: every series).
pub fn family_sum(page: &BTreeMap<String, f64>, family: &str, labels: &str) -> f64 {
    http::total(page, family, &[labels])
}

/// `family_sum` over the pages of `addrs` now.
async fn sum_over(addrs: &[SocketAddr], family: &str, labels: &str) -> f64 {
    let mut total = 0.0;
    for addr in addrs {
        total += family_sum(&http::metrics(*addr).await, family, labels);
    }
    total
}

/// Waits up to `timeout` for the sum of `family{labels}` over `addrs` to rise above `before`.
async fn rises(
    addrs: &[SocketAddr],
    family: &str,
    labels: &str,
    before: f64,
    timeout: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = sum_over(addrs, family, labels).await;
        if now > before {
            return Ok(format!("{family}{{{labels}}} {before} → {now}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{family}{{{labels}}} stayed at {now} (was {before}) for {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits up to 20 s for the sum of `family{labels}` over `addrs` to reach `before + by`, then says whether it rose
/// by exactly that.
async fn rises_by(addrs: &[SocketAddr], family: &str, labels: &str, before: f64, by: f64) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = sum_over(addrs, family, labels).await;
        if now >= before + by || Instant::now() > deadline {
            return match now == before + by {
                true => Ok(format!("{family}{{{labels}}} {before} → {now}")),
                false => Err(format!("{family}{{{labels}}} {before} → {now}, not +{by}")),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`rises_by`] one on each of `addrs` (from its own `before`), so that one process counting twice and another not at
/// all does not pass as both counting once.
async fn each_rises_by_one(addrs: &[SocketAddr], family: &str, before: &[f64]) -> Result<String, String> {
    let mut said = Vec::new();
    for (addr, before) in addrs.iter().zip(before) {
        said.push(rises_by(&[*addr], family, "", *before, 1.0).await?);
    }
    Ok(said.join(", "))
}

/// A tenant that is no tenant ID: Loki, Mimir and Tempo take neither a space nor a slash.
const NO_TENANT: &str = "acme corp/eu";

/// The body of the log record written with [`NO_TENANT`].
pub const NO_TENANT_LOG: &str = "of a tenant that is none";

/// Items an exporter counted as refused by its backend.
const REJECTED: &str = "tailgate_exporter_rejected_items_total";

async fn inject(
    pipeline: &mut Pipeline,
    kind: Kind,
    rng: &mut Rng,
    injected: &mut Injected,
) -> (String, Result<String, String>) {
    let exporter = pipeline.exporter.telemetry().into_iter().collect::<Vec<_>>();
    match kind {
        Kind::KillWorker => {
            let n = rng.below(pipeline.workers_mut().count());
            let down = rng.millis(500, 3_000);
            let worker = pipeline.workers_mut().nth(n).unwrap();
            worker.kill();
            tokio::time::sleep(down).await;
            // Its telemetry port refuses while it is down: the process, not just a task of it, is gone.
            let gone = std::net::TcpStream::connect(worker.telemetry().unwrap()).is_err();
            let restarting = Instant::now();
            worker.start().await;
            let effect = match gone {
                true => assigned_again(worker.name.as_str(), worker.telemetry().unwrap(), restarting).await,
                false => Err("its port still took connections after the SIGKILL".to_owned()),
            };
            (format!("SIGKILL {}, restarted after {down:?}", worker.name), effect)
        }
        Kind::PauseWorker => {
            let n = rng.below(pipeline.workers_mut().count());
            let paused = rng.millis(2_000, 6_000);
            let worker = pipeline.workers_mut().nth(n).unwrap();
            worker.signal("-STOP");
            let stopped = crate::harness::eventually(Duration::from_secs(2), || worker.stopped()).await;
            let probe = tokio::time::timeout(
                Duration::from_secs(1),
                http::try_request(worker.telemetry().unwrap(), "GET", "/health", &[], b""),
            )
            .await;
            tokio::time::sleep(paused.saturating_sub(Duration::from_secs(1))).await;
            worker.signal("-CONT");
            let effect = match probe {
                _ if !stopped => Err("its threads were not all stopped within 2 s of SIGSTOP".to_owned()),
                Err(_) => Ok("its /health did not answer while it was stopped".to_owned()),
                Ok(answer) => Err(format!("its /health answered while stopped: {:?}", answer.map(|r| r.status))),
            };
            (format!("SIGSTOP {} for {paused:?}, then SIGCONT", worker.name), effect)
        }
        Kind::TermWorker => {
            let n = rng.below(pipeline.workers_mut().count());
            let worker = pipeline.workers_mut().nth(n).unwrap();
            let draining = Instant::now();
            let status = tokio::task::block_in_place(|| worker.stop());
            let drained = draining.elapsed();
            worker.start().await;
            let effect = match status {
                Some(status) if status.success() => Ok(format!("drained and exited 0 in {drained:.1?}")),
                other => Err(format!("exited {other:?} after {drained:.1?}")),
            };
            (format!("SIGTERM {} under load (the drain), restarted", worker.name), effect)
        }
        Kind::KillRole => {
            let gateways = rng.below(2) == 0;
            let down = rng.millis(2_000, 5_000);
            let role = if gateways { &mut pipeline.gateways } else { &mut pipeline.samplers };
            for process in role.iter_mut() {
                process.kill();
            }
            let sampler_lag = || {
                let (brokers, group, topic) = (
                    pipeline.kafka.brokers.clone(),
                    pipeline.kafka.consumer.sampler_group(),
                    pipeline.kafka.topics.spans.clone(),
                );
                tokio::task::spawn_blocking(move || crate::harness::lag::lag(&brokers, &group, &topic, PARTITIONS))
            };
            let lag_at_kill = if gateways { None } else { sampler_lag().await.unwrap() };
            tokio::time::sleep(down).await;
            let effect = if gateways {
                let refused = pipeline.gateway_addrs.iter().all(|a| std::net::TcpStream::connect(a).is_err());
                match refused {
                    true => Ok("neither gateway took a connection while both were down".to_owned()),
                    false => Err("a gateway took a connection while both were killed".to_owned()),
                }
            } else {
                // Under load the lag is never 0 (a sampler commits a trace's records only once it is decided): with
                // nobody consuming, it must grow.
                match (lag_at_kill, sampler_lag().await.unwrap()) {
                    (Some(then), Some(now)) if now > then => {
                        Ok(format!("the sampler group's lag grew from {then} to {now} with both down"))
                    }
                    (then, now) => Err(format!("the sampler group's lag with both down: {then:?} → {now:?}")),
                }
            };
            let role = if gateways { &mut pipeline.gateways } else { &mut pipeline.samplers };
            for process in role.iter_mut() {
                process.start().await;
            }
            (
                format!("SIGKILL both {}, restarted after {down:?}", if gateways { "gateways" } else { "samplers" }),
                effect,
            )
        }
        Kind::JaegerDown | Kind::JaegerHangs => {
            let before = sum_over(&exporter, "tailgate_exporter_retries_total", "exporter=\"jaeger\"").await;
            let (answer, low, high) = match kind {
                Kind::JaegerDown => (Answer::Unavailable, 3_000, 10_000),
                // Longer than the exporter's 5 s timeout: the request must time out.
                _ => (Answer::Hang, 7_000, 12_000),
            };
            let down = rng.millis(low, high);
            pipeline.jaeger.answer(answer);
            tokio::time::sleep(down).await;
            // Before the heal: a hung request is answered UNAVAILABLE the moment Jaeger accepts again, so only a
            // retry counted while it still hung shows the exporter's own timeout fired.
            let effect =
                rises(&exporter, "tailgate_exporter_retries_total", "exporter=\"jaeger\"", before, Duration::ZERO)
                    .await;
            pipeline.jaeger.answer(Answer::Accept);
            let what = match answer {
                Answer::Hang => format!("Jaeger takes requests and answers nothing for {down:?}"),
                _ => format!("Jaeger answers UNAVAILABLE for {down:?}"),
            };
            (what, effect)
        }
        Kind::LokiDown | Kind::Loki429 => {
            let before = sum_over(&exporter, "tailgate_exporter_retries_total", "exporter=\"loki\"").await;
            let what = if kind == Kind::LokiDown {
                let answers = 3 + rng.below(8);
                pipeline.loki.script(std::iter::repeat_n((503, None, "Loki is restarting"), answers));
                format!("Loki answers 503 to the next {answers} pushes")
            } else {
                let retry_after = 1 + rng.below(3) as u64;
                pipeline.loki.script([(429, Some(retry_after), "ingestion rate limit exceeded")]);
                format!("Loki answers 429 with Retry-After: {retry_after}")
            };
            let loki = pipeline.loki.clone();
            let answered =
                crate::harness::eventually(Duration::from_secs(60), || loki.state.lock().unwrap().script.is_empty())
                    .await;
            let effect = match answered {
                true => {
                    rises(
                        &exporter,
                        "tailgate_exporter_retries_total",
                        "exporter=\"loki\"",
                        before,
                        Duration::from_secs(5),
                    )
                    .await
                }
                false => {
                    loki.state.lock().unwrap().script.clear();
                    Err("Loki was never asked within 60 s".to_owned())
                }
            };
            (what, effect)
        }
        Kind::JaegerPartialSuccess => {
            let labels = "exporter=\"jaeger\",reason=\"partial_success\"";
            let before = sum_over(&exporter, REJECTED, labels).await;
            let refused_before = pipeline.jaeger.traces.lock().unwrap().refused.len();
            let n = 1 + rng.below(3);
            pipeline.jaeger.answer(Answer::PartialSuccess(n));
            let jaeger = pipeline.jaeger.clone();
            let answered = crate::harness::eventually(Duration::from_secs(60), || {
                jaeger.traces.lock().unwrap().refused.len() > refused_before
            })
            .await;
            pipeline.jaeger.answer(Answer::Accept);
            let refused = pipeline.jaeger.traces.lock().unwrap().refused.len() - refused_before;
            let effect = match answered {
                true => rises_by(&exporter, REJECTED, labels, before, refused as f64).await,
                false => Err("Jaeger was never asked within 60 s".to_owned()),
            };
            (format!("Jaeger refuses {refused} spans of a request it otherwise stores (partial success)"), effect)
        }
        Kind::LokiRefusesLines => {
            let labels = "exporter=\"loki\",reason=\"too_old\"";
            let before = sum_over(&exporter, REJECTED, labels).await;
            let refused_before = pipeline.loki.state.lock().unwrap().refused.len();
            pipeline.loki.state.lock().unwrap().refuse_entries = 2 + rng.below(3);
            let loki = pipeline.loki.clone();
            let answered = crate::harness::eventually(Duration::from_secs(60), || {
                loki.state.lock().unwrap().refused.len() > refused_before
            })
            .await;
            let refused = {
                let mut state = pipeline.loki.state.lock().unwrap();
                state.refuse_entries = 0;
                state.refused.len() - refused_before
            };
            let effect = match answered {
                true => rises_by(&exporter, REJECTED, labels, before, refused as f64).await,
                false => Err("Loki was never asked within 60 s".to_owned()),
            };
            (format!("Loki stores a push but {refused} lines, refused as too old (400, total ignored)"), effect)
        }
        Kind::PrometheusTooOld => {
            // Prometheus goes on (scraping itself, so its newest sample is now) while the exporter cannot reach it
            // for longer than the window its head takes: the exporter's backlog is then refused as out of bounds,
            // and it must leave those samples out in a few requests and catch up, not send them one by one.
            let labels = "exporter=\"prometheus_remote_write\",reason=\"too_old\"";
            let before = sum_over(&exporter, REJECTED, labels).await;
            let lasting = SHORT_HEAD_WINDOW + rng.millis(5_000, 10_000);
            pipeline.prometheus_path.set(ProxyPath::Stalled);
            tokio::time::sleep(lasting).await;
            pipeline.prometheus_path.set(ProxyPath::Open);
            let effect = rises(&exporter, REJECTED, labels, before, Duration::from_secs(20)).await;
            (
                format!(
                    "the exporter's path to Prometheus stalled for {lasting:?}, past the {SHORT_HEAD_WINDOW:?} its head \
                     takes, while Prometheus went on"
                ),
                effect,
            )
        }
        Kind::PrometheusDown => {
            let labels = "exporter=\"prometheus_remote_write\"";
            let before = sum_over(&exporter, "tailgate_exporter_retries_total", labels).await;
            let down = rng.millis(2_000, 8_000);
            pipeline.prometheus.kill();
            tokio::time::sleep(down).await;
            pipeline.prometheus.restart().await;
            // The metrics come every few seconds: the retry may be the first request after the restart.
            let effect =
                rises(&exporter, "tailgate_exporter_retries_total", labels, before, Duration::from_secs(10)).await;
            (format!("SIGKILL Prometheus, restarted on its data directory after {down:?}"), effect)
        }
        Kind::KillBroker => {
            let down = rng.millis(1_000, 5_000);
            let spans = pipeline.kafka.topics.spans.clone();
            match &mut pipeline.broker {
                Broker::Kafka(cluster) => {
                    // The leader of a spans partition: its leadership must move while it is gone.
                    let partition = rng.below(PARTITIONS as usize) as i32;
                    let Some(node) = leader(cluster, &spans, partition) else {
                        return (format!("kill the leader of spans {partition}"), Err("it had no leader".to_owned()));
                    };
                    let killed = Instant::now();
                    tokio::task::block_in_place(|| cluster.node(node).kill());
                    let effect = moved(cluster, &spans, partition, node, killed, Duration::from_secs(20)).await;
                    tokio::time::sleep(down.saturating_sub(killed.elapsed())).await;
                    tokio::task::block_in_place(|| cluster.node(node).restart());
                    (
                        format!(
                            "SIGKILL Kafka node {node} (leading spans {partition}), restarted on its log directory"
                        ),
                        effect,
                    )
                }
                Broker::Tansu(broker) => {
                    broker.kill();
                    tokio::time::sleep(down).await;
                    broker.start().await;
                    let effect = Ok("the broker answered again after its restart".to_owned());
                    (format!("SIGKILL the broker, restarted on the same data directory after {down:?}"), effect)
                }
                Broker::Mock(mock) => {
                    mock.broker_down(1).unwrap();
                    tokio::time::sleep(down).await;
                    mock.broker_up(1).unwrap();
                    (format!("the broker down for {down:?}, then up with its log (MockCluster)"), Ok("down".to_owned()))
                }
            }
        }
        Kind::PauseLeader | Kind::LeaderChange => {
            let Broker::Kafka(cluster) = &pipeline.broker else { unreachable!("cluster-only kinds need the cluster") };
            let t = &pipeline.kafka.topics;
            let topic = [&t.spans, &t.decisions, &t.sampled_spans][rng.below(3)].clone();
            let partition = rng.below(PARTITIONS as usize) as i32;
            let Some(node) = leader(cluster, &topic, partition) else {
                return (format!("{} on {topic} {partition}", kind.name()), Err("it had no leader".to_owned()));
            };
            let since = Instant::now();
            if kind == Kind::PauseLeader {
                // Past `broker.session.timeout.ms` (6 s here): the controller fences it and moves its leaderships.
                let paused = rng.millis(9_000, 13_000);
                cluster.node(node).signal("-STOP");
                let effect = moved(cluster, &topic, partition, node, since, paused).await;
                tokio::time::sleep(paused.saturating_sub(since.elapsed())).await;
                cluster.node(node).signal("-CONT");
                (format!("SIGSTOP Kafka node {node}, leader of {topic} {partition}, for {paused:?}"), effect)
            } else {
                tokio::task::block_in_place(|| cluster.node(node).terminate());
                let effect = moved(cluster, &topic, partition, node, Instant::now(), Duration::from_secs(10)).await;
                let effect = effect.map(|e| format!("{e} (shut down in {:.1?})", since.elapsed()));
                tokio::task::block_in_place(|| cluster.node(node).restart());
                (
                    format!(
                        "SIGTERM Kafka node {node}, leader of {topic} {partition} (controlled shutdown), restarted"
                    ),
                    effect,
                )
            }
        }
        Kind::NetworkDelay | Kind::NetworkStall | Kind::NetworkReset | Kind::Blackhole => {
            let Broker::Kafka(cluster) = &pipeline.broker else { unreachable!("cluster-only kinds need the cluster") };
            let proxies: Vec<&Proxy> = cluster.nodes().iter().filter_map(|n| n.proxy.as_ref()).collect();
            let count = |f: fn(&Counts) -> &AtomicU64| proxies.iter().map(|p| f(p.counts()).load(SeqCst)).sum::<u64>();
            let rose = |what: &str, before: u64, after: u64| match after > before {
                true => Ok(format!("{what} {before} → {after}")),
                false => Err(format!("{what} stayed at {before}")),
            };
            match kind {
                Kind::NetworkDelay => {
                    let (delay, lasting) = (rng.millis(200, 800), rng.millis(5_000, 10_000));
                    let before = count(|c| &c.delayed_chunks);
                    proxies.iter().for_each(|p| p.set(ProxyPath::Delayed(delay)));
                    tokio::time::sleep(lasting).await;
                    proxies.iter().for_each(|p| p.set(ProxyPath::Open));
                    let effect = rose("chunks delayed", before, count(|c| &c.delayed_chunks));
                    (format!("{delay:?} added to every packet between the roles and Kafka for {lasting:?}"), effect)
                }
                Kind::NetworkStall => {
                    // A node with traffic: the leader of a spans partition (the gateways produce to it, the samplers
                    // fetch from it). A node that leads nothing in use may see no packet in a few seconds.
                    let partition = rng.below(PARTITIONS as usize) as i32;
                    let spans = pipeline.kafka.topics.spans.clone();
                    let id = leader(cluster, &spans, partition).unwrap_or(cluster.nodes()[0].id);
                    let node = cluster.nodes().iter().find(|n| n.id == id).expect("the leader is a node");
                    let proxy = node.proxy.as_ref().expect("a proxied cluster");
                    let lasting = rng.millis(3_000, 8_000);
                    let before = proxy.counts().stalled_chunks.load(SeqCst);
                    proxy.set(ProxyPath::Stalled);
                    tokio::time::sleep(lasting).await;
                    proxy.set(ProxyPath::Open);
                    let effect = rose("chunks held", before, proxy.counts().stalled_chunks.load(SeqCst));
                    (
                        format!("the path to Kafka node {} stalled (open, nothing forwarded) for {lasting:?}", node.id),
                        effect,
                    )
                }
                Kind::NetworkReset => {
                    let before = count(|c| &c.reset_connections);
                    proxies.iter().for_each(|p| p.reset());
                    // The proxies close their connections on their own thread: give them a moment; `rose` says
                    // whether they did.
                    crate::harness::eventually(Duration::from_secs(5), || count(|c| &c.reset_connections) > before)
                        .await;
                    let effect = rose("connections reset", before, count(|c| &c.reset_connections));
                    ("every connection between the roles and Kafka reset (RST)".to_owned(), effect)
                }
                _ => {
                    // Longer than the consumers' session: the coordinator hears no heartbeat and gives their
                    // partitions away, and they find out only when the network is back.
                    let lasting = rng.millis(SESSION_S * 1000 + 2_000, SESSION_S * 1000 + 6_000);
                    let samplers = sampler_telemetry(pipeline);
                    let lost = "lost=\"true\"";
                    let before = sum_over(&samplers, "tailgate_sampler_revocations_total", lost).await;
                    proxies.iter().for_each(|p| p.set(ProxyPath::Stalled));
                    tokio::time::sleep(lasting).await;
                    proxies.iter().for_each(|p| p.set(ProxyPath::Open));
                    let effect =
                        rises(&samplers, "tailgate_sampler_revocations_total", lost, before, Duration::from_secs(30))
                            .await;
                    (format!("every path between the roles and Kafka blackholed for {lasting:?}"), effect)
                }
            }
        }
        Kind::FutureRecord => {
            let samplers = sampler_telemetry(pipeline);
            let before = sum_over(&samplers, "tailgate_sampler_clamped_timestamps_total", "").await;
            let trace_id: Vec<u8> = (0..16).map(|_| rng.next() as u8).collect();
            let span = opentelemetry_proto::tonic::trace::v1::Span {
                trace_id: trace_id.clone(),
                span_id: rng.next().to_be_bytes().to_vec(),
                name: "from the future".into(),
                start_time_unix_nano: now_ns() + 3_600_000_000_000,
                end_time_unix_nano: now_ns() + 3_600_001_000_000,
                status: Some(opentelemetry_proto::tonic::trace::v1::Status { code: 2, message: String::new() }),
                ..Default::default()
            };
            let hour_ahead = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                as i64
                + 3_600_000;
            let value = trace_request(vec![span]).encode_to_vec();
            let partition = rng.below(PARTITIONS as usize) as i32;
            produce(pipeline, &pipeline.kafka.topics.spans.clone(), partition, &trace_id, &value, Some(hour_ahead))
                .await;
            injected.foreign_traces.push(hex::encode(&trace_id));
            let effect =
                rises(&samplers, "tailgate_sampler_clamped_timestamps_total", "", before, Duration::from_secs(30))
                    .await;
            (format!("a foreign ERROR span stamped an hour ahead, straight to spans partition {partition}"), effect)
        }
        Kind::PastRecord => {
            // An hour behind every partition's event time: its trace is due at once, and must still be decided as
            // its spans say (kept: its span failed), without moving the partition's clock back.
            let trace_id: Vec<u8> = (0..16).map(|_| rng.next() as u8).collect();
            let hour_ago = now_ns() - 3_600_000_000_000;
            let span = opentelemetry_proto::tonic::trace::v1::Span {
                trace_id: trace_id.clone(),
                span_id: rng.next().to_be_bytes().to_vec(),
                name: "from the past".into(),
                start_time_unix_nano: hour_ago,
                end_time_unix_nano: hour_ago + 1_000_000,
                status: Some(opentelemetry_proto::tonic::trace::v1::Status { code: 2, message: String::new() }),
                ..Default::default()
            };
            let value = trace_request(vec![span]).encode_to_vec();
            let partition = rng.below(PARTITIONS as usize) as i32;
            let stamp = (hour_ago / 1_000_000) as i64;
            produce(pipeline, &pipeline.kafka.topics.spans.clone(), partition, &trace_id, &value, Some(stamp)).await;
            injected.foreign_traces.push(hex::encode(&trace_id));
            let written = Instant::now();
            let jaeger = pipeline.jaeger.clone();
            let arrived = crate::harness::eventually(Duration::from_secs(30), || {
                jaeger.traces.lock().unwrap().spans.iter().any(|(t, _)| *t == trace_id)
            })
            .await;
            let effect = match arrived {
                true => Ok(format!("decided, kept and in Jaeger {:.1?} after it was written", written.elapsed())),
                false => Err("not in Jaeger 30 s after it was written".to_owned()),
            };
            (format!("a foreign ERROR span stamped an hour ago, straight to spans partition {partition}"), effect)
        }
        Kind::InvalidTenant => {
            // A tenant no backend would take (a space, a slash): a request naming it is refused before its body is
            // read and counted; records carrying it (another producer's) are dead-lettered by every reader. None
            // of it may reach a backend (its spans were never the client's: the ledger would find them
            // `unexpected`).
            let n = rng.below(pipeline.gateways.len());
            let telemetry: Vec<SocketAddr> = pipeline.gateways[n].telemetry().into_iter().collect();
            let refusals = "outcome=\"invalid_tenant\"";
            let before = sum_over(&telemetry, "tailgate_ingest_requests_total", refusals).await;
            let samplers = sampler_telemetry(pipeline);
            let reason = "reason=\"invalid_tenant\"";
            let unreadable = sum_over(&samplers, "tailgate_sampler_undecodable_records_total", reason).await;
            let dead_letters = sum_over(&exporter, "tailgate_exporter_dead_letter_records_total", reason).await;
            let trace_id: Vec<u8> = (0..16).map(|_| rng.next() as u8).collect();
            let span = opentelemetry_proto::tonic::trace::v1::Span {
                trace_id: trace_id.clone(),
                span_id: rng.next().to_be_bytes().to_vec(),
                name: "of a tenant that is none".into(),
                start_time_unix_nano: now_ns(),
                end_time_unix_nano: now_ns() + 1_000_000,
                status: Some(opentelemetry_proto::tonic::trace::v1::Status { code: 2, message: String::new() }),
                ..Default::default()
            };
            let spans = trace_request(vec![span]);
            let mut request = tonic::Request::new(spans.clone());
            request.metadata_mut().insert(super::pipeline::TENANT_HEADER, NO_TENANT.parse().unwrap());
            let answer = match TraceServiceClient::connect(format!("http://{}", pipeline.gateway_addrs[n])).await {
                Ok(mut client) => client.export(request).await.map(|_| ()),
                Err(error) => Err(tonic::Status::unavailable(error.to_string())),
            };
            let log = opentelemetry_proto::tonic::logs::v1::LogRecord {
                time_unix_nano: now_ns(),
                body: Some(AnyValue { value: Some(any_value::Value::StringValue(NO_TENANT_LOG.into())) }),
                ..Default::default()
            };
            let logs = logs_request("campaign", vec![log]);
            let point = NumberDataPoint {
                time_unix_nano: now_ns(),
                value: Some(number_data_point::Value::AsDouble(1.0)),
                ..Default::default()
            };
            let gauge = Metric {
                name: "tenant_that_is_none".into(),
                data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
                ..Default::default()
            };
            let metrics = metrics_request_with(service_resource("campaign"), None, vec![gauge]);
            let t = pipeline.kafka.topics.clone();
            let header = [(tailgate_proto::headers::TENANT, NO_TENANT)];
            for (topic, value) in [
                (&t.spans, spans.encode_to_vec()),
                (&t.logs, logs.encode_to_vec()),
                (&t.metrics, metrics.encode_to_vec()),
            ] {
                let partition = rng.below(PARTITIONS as usize) as i32;
                produce_with(pipeline, topic, partition, &trace_id, &value, None, &header).await;
            }
            injected.unreadable += 1;
            injected.no_tenant_traces.push(hex::encode(&trace_id));
            let timeout = Duration::from_secs(30);
            let refused = match answer {
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    rises_by(&telemetry, "tailgate_ingest_requests_total", refusals, before, 1.0)
                        .await
                        .map(|counted| format!("INVALID_ARGUMENT ({}); {counted}", status.message()))
                }
                other => Err(format!("answered {other:?}, not INVALID_ARGUMENT")),
            };
            let effect = match (
                refused,
                rises(&samplers, "tailgate_sampler_undecodable_records_total", reason, unreadable, timeout).await,
                rises(&exporter, "tailgate_exporter_dead_letter_records_total", reason, dead_letters, timeout).await,
            ) {
                (Ok(a), Ok(b), Ok(c)) => Ok(format!("{a}; {b}; {c}")),
                (a, b, c) => Err(format!("{a:?}; {b:?}; {c:?}")),
            };
            (
                format!(
                    "the tenant `{NO_TENANT}`: named in a request to gateway-{n}, and in the header of a record \
                     straight to each of the spans, logs and metrics topics"
                ),
                effect,
            )
        }
        Kind::PolicyReload => {
            // A valid change (the probabilistic policy renamed: the same decisions), an invalid one (an unknown
            // policy type: refused, the running policies stay), then the original back: three generations.
            let samplers = sampler_telemetry(pipeline);
            let mut generation = Vec::new();
            let mut failures = Vec::new();
            for sampler in &samplers {
                generation.push(sum_over(&[*sampler], "tailgate_sampler_config_generation", "").await);
                failures.push(sum_over(&[*sampler], "tailgate_sampler_config_reload_failures_total", "").await);
            }
            let files: Vec<std::path::PathBuf> = pipeline.samplers.iter().map(|s| s.config().to_owned()).collect();
            let originals: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
            let write = |change: &dyn Fn(&str) -> String| {
                for (file, original) in files.iter().zip(&originals) {
                    let changed = change(original);
                    assert_ne!(&changed, original, "the reload changes {}", file.display());
                    std::fs::write(file, changed).unwrap();
                }
            };
            write(&|text| text.replace("name: sample-rest,", "name: sample-rest-reloaded,"));
            let valid = each_rises_by_one(&samplers, "tailgate_sampler_config_generation", &generation).await;
            write(&|text| text.replace("type: probabilistic,", "type: probabilistik,"));
            let invalid =
                each_rises_by_one(&samplers, "tailgate_sampler_config_reload_failures_total", &failures).await;
            write(&|text| text.to_owned() + "\n");
            let renamed: Vec<f64> = generation.iter().map(|g| g + 1.0).collect();
            let back = each_rises_by_one(&samplers, "tailgate_sampler_config_generation", &renamed).await;
            let effect = match (valid, invalid, back) {
                (Ok(a), Ok(b), Ok(c)) => Ok(format!("renamed: {a}; invalid: {b}; back: {c}")),
                (a, b, c) => Err(format!("renamed: {a:?}; invalid: {b:?}; back: {c:?}")),
            };
            ("the samplers' policies reloaded: renamed, an invalid file, the original back".to_owned(), effect)
        }
        Kind::NotOtlp => {
            let samplers = sampler_telemetry(pipeline);
            let undecodable = sum_over(&samplers, "tailgate_sampler_undecodable_records_total", "").await;
            let dead_letters = sum_over(&exporter, "tailgate_exporter_dead_letter_records_total", "").await;
            let t = pipeline.kafka.topics.clone();
            for topic in [&t.spans, &t.logs, &t.metrics] {
                let partition = rng.below(PARTITIONS as usize) as i32;
                produce(pipeline, topic, partition, b"garbage", b"\xff\xfe this is not OTLP", None).await;
            }
            injected.unreadable += 1;
            let timeout = Duration::from_secs(30);
            let effect = match (
                rises(&samplers, "tailgate_sampler_undecodable_records_total", "", undecodable, timeout).await,
                rises(&exporter, "tailgate_exporter_dead_letter_records_total", "", dead_letters, timeout).await,
            ) {
                (Ok(a), Ok(b)) => Ok(format!("{a}; {b}")),
                (a, b) => Err(format!("{a:?}; {b:?}")),
            };
            ("a record that is not OTLP, straight to each of the spans, logs and metrics topics".to_owned(), effect)
        }
    }
}

/// A sampler or exporter restarted is consuming again when its page shows a lag per partition it was given; a
/// gateway, when it answers (which `start` waited for).
async fn assigned_again(name: &str, telemetry: SocketAddr, restarting: Instant) -> Result<String, String> {
    let family = match name {
        n if n.starts_with("sampler") => "tailgate_sampler_consumer_lag_records",
        "exporter" => "tailgate_exporter_consumer_lag_records",
        _ => return Ok(format!("serving again {:.1?} after the restart began", restarting.elapsed())),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http::metrics(telemetry).await.keys().any(|series| http::in_family(series, family)) {
            return Ok(format!("assigned partitions again {:.1?} after the restart began", restarting.elapsed()));
        }
        if Instant::now() > deadline {
            return Err(format!("no partition assigned 60 s after its restart (no {family})"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn leader(cluster: &crate::harness::apache_kafka::Cluster, topic: &str, partition: i32) -> Option<u32> {
    leader_except(cluster, topic, partition, None)
}

/// As the nodes but `except` see it.
fn leader_except(
    cluster: &crate::harness::apache_kafka::Cluster,
    topic: &str,
    partition: i32,
    except: Option<u32>,
) -> Option<u32> {
    tokio::task::block_in_place(|| cluster.leaders(topic, except).get(partition as usize).copied().flatten())
}

/// Waits up to `timeout` (from `since`) for `topic`'s `partition` to be led by a node other than `from`.
async fn moved(
    cluster: &crate::harness::apache_kafka::Cluster,
    topic: &str,
    partition: i32,
    from: u32,
    since: Instant,
    timeout: Duration,
) -> Result<String, String> {
    loop {
        // Not asked of `from`: paused, it would take the request and never answer.
        match leader_except(cluster, topic, partition, Some(from)) {
            Some(now) if now != from => {
                return Ok(format!("{topic} {partition} led by node {now} {:.1?} later", since.elapsed()))
            }
            other if since.elapsed() > timeout => {
                return Err(format!("{topic} {partition} still led by {other:?} after {timeout:?}"))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn produce(pipeline: &Pipeline, topic: &str, partition: i32, key: &[u8], value: &[u8], timestamp: Option<i64>) {
    produce_with(pipeline, topic, partition, key, value, timestamp, &[]).await
}

async fn produce_with(
    pipeline: &Pipeline,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: &[u8],
    timestamp: Option<i64>,
    headers: &[(&str, &str)],
) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &pipeline.kafka.brokers).create().unwrap();
    let mut record = FutureRecord::to(topic).partition(partition).key(key).payload(value);
    if let Some(ms) = timestamp {
        record = record.timestamp(ms);
    }
    let mut owned = rdkafka::message::OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(rdkafka::message::Header { key: name, value: Some(*value) });
    }
    record = record.headers(owned);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("the broker takes the record");
}
