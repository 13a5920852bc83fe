//! Sampler workers under membership changes and crashes, on Apache Kafka with the default `cooperative-sticky`
//! strategy (`tests/kafka/membership.rs` has the static-membership and three-worker cases), and under floods and
//! output outages.
//!
//! The promise, checked exactly once the sampler group has committed everything ([`check`]): every trace the
//! policies keep is in the sampled topic whole, no span of a trace they drop is there, nothing else is (lost = 0,
//! unexpected = 0); and duplicates stay within what the README allows — after a crash or a rebalance, spans of a kept
//! trace "can be emitted again when their records are re-read": one more copy of a span each time its partition
//! changes hands after the span was read, none of a span first read after the last change.
//!
//! The traces: four spans sent in two requests, the root and a child first, two children later. A failing trace's
//! ERROR span and a slow trace's 3 s span are in the later request, so a worker that decides a trace on its first
//! half (too early, or after losing what it had buffered) drops it, or keeps its late half alone. The others are
//! fast and successful: the probabilistic policy's hash keeps about one in ten ([`probabilistic_keeps`]), and the
//! rest must stay out.
//!
//! Memory is measured as the kernel counts it — the peak RSS (`VmHWM`) of a sampler process — not by the sampler's
//! own gauges.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use tailgate_kafka::KafkaConfig;
use tailgate_sampler::{SamplerConfig, SamplerStats};
use tonic::transport::Channel;

use crate::harness::otlp::{kv, trace_id};
use crate::harness::processes::{self, Process, Ready, RssSampler};
use crate::harness::sampling::probabilistic_keeps;
use crate::harness::{self, http, lag, topic, wait};

const PARTITIONS: u32 = 4;
const SPANS: u32 = 4;
/// The two requests a trace is sent in.
const FIRST_HALF: Range<u32> = 0..2;
const LATE_HALF: Range<u32> = 2..4;
/// The span that makes a failing trace fail (ERROR) and a slow one slow (3 s): in the late half.
const DECIDING_SPAN: u32 = 3;
/// `sample-rest` of the default policies: the probabilistic policy's percentage.
const PERCENTAGE: f64 = 10.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Failing,
    Slow,
    Normal,
}

/// One trace in five fails, one in five is slow, three are fast and successful.
fn kind(t: u32) -> Kind {
    match t % 5 {
        0 => Kind::Failing,
        1 => Kind::Slow,
        _ => Kind::Normal,
    }
}

/// Whether the default policies — every error, every trace of 2 s or more, 10% of the rest by hash — keep trace
/// `t` decided whole.
fn kept_whole(t: u32) -> bool {
    kind(t) != Kind::Normal || probabilistic_keeps(&trace_id(t.into()), PERCENTAGE)
}

/// Whether they keep trace `t` decided on its first half alone (fast and successful so far), as they must a trace
/// whose late half arrives after its decision: the late half follows the decision.
fn kept_on_first_half(t: u32) -> bool {
    probabilistic_keeps(&trace_id(t.into()), PERCENTAGE)
}

fn span_id(t: u32, s: u32) -> Vec<u8> {
    (u64::from(t) * 10 + u64::from(s) + 1).to_be_bytes().to_vec()
}

/// Span `s` of trace `t`, with an attribute of `padding` bytes if that is not 0.
fn span(t: u32, s: u32, padding: usize) -> Span {
    // Times fixed per trace, whenever each half is sent: only the slow span makes a trace last 2 s or more.
    let start = 1_700_000_000_000_000_000 + u64::from(t) * 1_000_000_000 + u64::from(s) * 1_000_000;
    let deciding = s == DECIDING_SPAN;
    let duration = if deciding && kind(t) == Kind::Slow { 3_000_000_000 } else { 1_000_000 };
    Span {
        trace_id: trace_id(t.into()),
        span_id: span_id(t, s),
        parent_span_id: if s == 0 { Vec::new() } else { span_id(t, 0) },
        name: format!("{s}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        status: (deciding && kind(t) == Kind::Failing)
            .then(|| Status { code: status::StatusCode::Error as i32, message: String::new() }),
        attributes: if padding == 0 { Vec::new() } else { vec![kv("padding", &"x".repeat(padding))] },
        ..Default::default()
    }
}

/// Spans `spans` of `traces`, in one request, each padded with `padding` bytes. As an SDK does, a request Kafka did
/// not acknowledge in time (UNAVAILABLE) is sent again.
async fn send_padded(client: &mut TraceServiceClient<Channel>, traces: &[u32], spans: Range<u32>, padding: usize) {
    let spans = traces.iter().flat_map(|t| spans.clone().map(move |s| span(*t, s, padding))).collect();
    let request = harness::trace_request(spans);
    let mut attempts = 0;
    while let Err(status) = client.export(request.clone()).await {
        attempts += 1;
        assert!(status.code() == tonic::Code::Unavailable && attempts < 5, "{status:?}");
    }
}

async fn send(client: &mut TraceServiceClient<Channel>, traces: Range<u32>, spans: Range<u32>) {
    send_padded(client, &traces.collect::<Vec<_>>(), spans, 0).await;
}

/// A span as the ledger counts it: (trace ID, span ID).
type SpanKey = (Vec<u8>, Vec<u8>);

fn key(t: u32, s: u32) -> SpanKey {
    (trace_id(t.into()), span_id(t, s))
}

/// How many copies of each span `records` hold.
fn copies(records: &[harness::Record]) -> HashMap<SpanKey, usize> {
    let mut copies = HashMap::new();
    for (_, span) in topic::spans(records) {
        *copies.entry((span.trace_id, span.span_id)).or_insert(0) += 1;
    }
    copies
}

/// What [`check`] found.
struct Ledger {
    /// Traces checked, and of them those the policies keep.
    traces: usize,
    kept: usize,
    /// Span copies in the sampled topic beyond the first, and the most the bound allowed.
    duplicated: usize,
    allowed: usize,
}

impl std::fmt::Display for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} traces, {} kept whole and {} dropped as the policies say; lost 0, unexpected 0, duplicated {} (at \
             most {})",
            self.traces,
            self.kept,
            self.traces - self.kept,
            self.duplicated,
            self.allowed
        )
    }
}

/// Waits until the sampler group has committed the whole spans topic — every trace decided and what was kept
/// acknowledged by Kafka, since no offset passes a record before that — then reads the spans and sampled topics and
/// asserts, for the traces `sent`: each one `kept` says is in the sampled topic whole, no span of the others is there,
/// nothing else is; and no span has more copies than `allowed(trace, span, its copies in the spans topic)` (a span
/// the gateway wrote twice, answering UNAVAILABLE to the first attempt, is buffered and kept twice).
async fn check(
    kafka: &KafkaConfig,
    sent: &[u32],
    kept: impl Fn(u32) -> bool,
    allowed: impl Fn(u32, u32, usize) -> usize,
) -> Ledger {
    let (brokers, group, spans_topic) =
        (kafka.brokers.clone(), kafka.consumer.sampler_group(), kafka.topics.spans.clone());
    wait::until("the sampler group committed every record of the spans topic", Duration::from_secs(120), || {
        let (brokers, group, topic) = (brokers.clone(), group.clone(), spans_topic.clone());
        async move {
            tokio::task::spawn_blocking(move || lag::lag(&brokers, &group, &topic, PARTITIONS) == Some(0))
                .await
                .unwrap()
        }
    })
    .await;
    let kafka = kafka.clone();
    let (spans, sampled) = tokio::task::spawn_blocking(move || {
        let read = |topic: &str| {
            copies(&harness::read_topic(&kafka.brokers, topic, PARTITIONS, Duration::from_secs(60), |_| true))
        };
        (read(&kafka.topics.spans), read(&kafka.topics.sampled_spans))
    })
    .await
    .unwrap();

    let (mut lost, mut dropped_present, mut beyond) = (Vec::new(), Vec::new(), Vec::new());
    let mut ledger = Ledger { traces: sent.len(), kept: 0, duplicated: 0, allowed: 0 };
    let mut checked = HashSet::new();
    for &t in sent {
        let present: Vec<u32> = (0..SPANS).filter(|s| sampled.contains_key(&key(t, *s))).collect();
        if kept(t) {
            ledger.kept += 1;
            if present.len() != SPANS as usize {
                lost.push((t, present));
            }
        } else if !present.is_empty() {
            dropped_present.push((t, present));
        }
        for s in 0..SPANS {
            let read = spans.get(&key(t, s)).copied().unwrap_or(0);
            assert!(read > 0, "span {s} of trace {t} is not in the spans topic");
            let copies = sampled.get(&key(t, s)).copied().unwrap_or(0);
            let most = allowed(t, s, read);
            if copies > 0 {
                ledger.duplicated += copies - 1;
                ledger.allowed += most - 1;
            }
            if copies > most {
                beyond.push((t, s, copies, most));
            }
            checked.insert(key(t, s));
        }
    }
    let unexpected = sampled.keys().filter(|k| !checked.contains(*k)).count();
    let first = |list: &[(u32, Vec<u32>)]| list.iter().take(10).cloned().collect::<Vec<_>>();
    assert!(
        lost.is_empty(),
        "{} kept traces lost or incomplete, e.g. (trace, spans present): {:?}",
        lost.len(),
        first(&lost)
    );
    assert!(
        dropped_present.is_empty(),
        "{} traces the policies drop are in the sampled topic, e.g. (trace, spans present): {:?}",
        dropped_present.len(),
        first(&dropped_present)
    );
    assert_eq!(unexpected, 0, "spans in the sampled topic of no trace the test sent");
    assert!(beyond.is_empty(), "copies beyond the bound, (trace, span, copies, at most): {beyond:?}");
    ledger
}

/// The sum of every series of `family` the sampler at `telemetry` serves.
async fn served(telemetry: SocketAddr, family: &str) -> f64 {
    http::total(&http::metrics(telemetry).await, family, &[])
}

/// A sampler process on `kafka`, with `sampler` as its `sampler:` section; where it serves its telemetry.
fn sampler_process(name: &str, kafka: &KafkaConfig, sampler: &str) -> (Process, SocketAddr) {
    let telemetry = processes::local_addr();
    let config = format!(
        "{}sampler: {sampler}\ntelemetry: {{ metrics: {{ endpoint: '{telemetry}' }} }}\n",
        harness::kafka::kafka_yaml(kafka)
    );
    let process = Process::new(&harness::temp_dir(name), "sampler", "sampler", &config, Ready::Health(telemetry));
    (process, telemetry)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Each trace's late half is sent well within this of its first half (checked at every step), the rebalances between
/// included (a join took 6 s here), so that every trace is decided whole.
const REBALANCE_WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_joining_and_leaving_mid_window_lose_nothing() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let config = SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(REBALANCE_WAIT.as_secs()),
        ..SamplerConfig::default()
    };
    let owned = |stats: &SamplerStats| stats.owned_partitions.load(Ordering::SeqCst);
    let all = u64::from(PARTITIONS);
    // A margin for what happens between a late half's sending and its reading, so that no trace comes due first.
    let in_time = |since: Instant| since.elapsed() + Duration::from_secs(5) < REBALANCE_WAIT;

    let a = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let stats_a = a.stats.clone();
    assert!(harness::eventually(Duration::from_secs(30), || owned(&stats_a) == all).await, "A owns every partition");
    let first = Instant::now();
    send(&mut client, 0..100, FIRST_HALF).await;
    let read =
        harness::eventually(Duration::from_secs(20), || stats_a.max_buffered_bytes.load(Ordering::SeqCst) > 0).await;
    assert!(read, "A buffered the first halves");

    // B joins while A holds them undecided: the partitions that move are read again by B, first halves included.
    let b = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let stats_b = b.stats.clone();
    let joined = harness::eventually(Duration::from_secs(30), || owned(&stats_b) > 0 && owned(&stats_a) < all).await;
    assert!(joined, "B was given some of A's partitions");
    assert_eq!(stats_a.traces_decided.load(Ordering::SeqCst), 0, "the partitions moved before A decided anything");
    send(&mut client, 0..100, LATE_HALF).await;
    assert!(in_time(first), "the late halves of 0..100 were sent {:?} after the first", first.elapsed());

    send(&mut client, 100..200, FIRST_HALF).await;
    send(&mut client, 100..200, LATE_HALF).await;
    // A leaves holding first halves of 200..300 undecided; B reads them again.
    let leaving = Instant::now();
    send(&mut client, 200..300, FIRST_HALF).await;
    a.stop().await;
    assert!(harness::eventually(Duration::from_secs(30), || owned(&stats_b) == all).await, "B took every partition");
    // Read only by B, after the last change of hands.
    send(&mut client, 200..300, LATE_HALF).await;
    assert!(in_time(leaving), "the late halves of 200..300 were sent {:?} after the first", leaving.elapsed());

    // B never lost a partition, so each partition changed hands once, from A to B: one more copy at most of what
    // was read before, none of what B alone read.
    assert!(stats_a.revocations.load(Ordering::SeqCst) >= 1, "A's partitions were revoked");
    assert_eq!(stats_b.revocations.load(Ordering::SeqCst), 0, "B lost no partition");
    let sent: Vec<u32> = (0..300).collect();
    let ledger =
        check(&kafka, &sent, kept_whole, |t, s, read| if t >= 200 && LATE_HALF.contains(&s) { read } else { 2 * read })
            .await;
    eprintln!("rebalance (cooperative-sticky, Apache Kafka): {ledger}");

    b.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_window_loses_nothing() {
    let mut kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    // The dead member keeps its partitions until its session expires: 6 s here rather than librdkafka's 45 s, which
    // the restart would wait out (a_killed_worker_consumes_again_within_its_session_timeout).
    kafka.consumer.session_timeout = Some(tailgate_config::Duration::from_secs(6));
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let decision_wait = Duration::from_secs(5);
    let sampler = format!("{{ decision_wait: {}s }}", decision_wait.as_secs());
    let (mut worker, telemetry) = sampler_process("kill", &kafka, &sampler);

    worker.start().await;
    send(&mut client, 0..100, FIRST_HALF).await;
    // The first 100 traces decided on their first halves (their late halves will follow the decisions), ...
    wait::until("the first 100 traces decided", Duration::from_secs(30), || async {
        served(telemetry, "tailgate_sampler_traces_total").await >= 100.0
    })
    .await;
    let halves_sent = Instant::now();
    send(&mut client, 100..200, FIRST_HALF).await;
    // ... and the next 100 read and waiting for their late halves when the worker dies.
    wait::until("the next 100 traces buffered", Duration::from_secs(30), || async {
        served(telemetry, "tailgate_sampler_buffered_traces").await >= 100.0
    })
    .await;
    assert_eq!(served(telemetry, "tailgate_sampler_traces_total").await, 100.0, "the next 100 still undecided");
    worker.kill();

    // The late halves arrive while no worker runs: those of 0..100 must follow the decisions made before the crash
    // (a failing or slow one the hash dropped is dropped whole), those of 100..200 join their first halves.
    send(&mut client, 0..200, LATE_HALF).await;
    let gap = halves_sent.elapsed();
    assert!(gap < decision_wait / 2, "the late halves of 100..200 were sent {gap:?} after the first");
    let restarted = Instant::now();
    worker.start().await;
    // What the dead worker read may be read and kept again, once; the late halves only the new one reads.
    let sent: Vec<u32> = (0..200).collect();
    let kept = |t: u32| if t < 100 { kept_on_first_half(t) } else { kept_whole(t) };
    let ledger = check(&kafka, &sent, kept, |_, s, read| if LATE_HALF.contains(&s) { read } else { 2 * read }).await;
    eprintln!(
        "SIGKILL mid-window: {ledger}; every trace settled {:.1}s after the restart (a 6 s session and decision_wait \
         5s included)",
        restarted.elapsed().as_secs_f64()
    );
    worker.stop();
    gateway.stop().await;
}

/// Recovery time where static membership is not available (MockCluster, like Tansu, has none): a SIGKILLed worker
/// cannot leave its group, so its partitions stay with the dead member until its session expires. With
/// `kafka.consumer.session_timeout: 6s` the restarted worker consumes again, and the traces sent meanwhile are out
/// whole, within the session plus the decision wait; with librdkafka's default session (45 s), which this test
/// would fail, they took 47 s (measured on Tansu, a_worker_killed_mid_window_loses_nothing). On Apache Kafka,
/// `group_instance_id` gives the partitions back at once: `tests/kafka/membership.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_consumes_again_within_its_session_timeout() {
    let mock = harness::mock_cluster();
    let mut kafka = harness::mock_kafka(&mock, PARTITIONS);
    kafka.consumer.session_timeout = Some(tailgate_config::Duration::from_secs(6));
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let (mut worker, _) = sampler_process("session", &kafka, "{ decision_wait: 1s }");

    worker.start().await;
    send(&mut client, 0..50, FIRST_HALF).await;
    send(&mut client, 0..50, LATE_HALF).await;
    // Decided and committed: nothing of it is read again after the kill.
    let before: Vec<u32> = (0..50).collect();
    check(&kafka, &before, kept_whole, |_, _, read| read).await;
    worker.kill();

    let restarted = Instant::now();
    worker.start().await;
    send(&mut client, 50..100, FIRST_HALF).await;
    send(&mut client, 50..100, LATE_HALF).await;
    let whole = |records: &[harness::Record]| {
        let sampled = copies(records);
        (50..100).filter(|t| kept_whole(*t)).all(|t| (0..SPANS).all(|s| sampled.contains_key(&key(t, s))))
    };
    let brokers = kafka.brokers.clone();
    let sampled = kafka.topics.sampled_spans.clone();
    tokio::task::spawn_blocking(move || {
        harness::read_topic(&brokers, &sampled, PARTITIONS, Duration::from_secs(60), whole);
    })
    .await
    .unwrap();
    let resumed = restarted.elapsed();
    let sent: Vec<u32> = (0..100).collect();
    let ledger = check(&kafka, &sent, kept_whole, |_, _, read| read).await;
    eprintln!(
        "SIGKILL and restart with a 6 s session (MockCluster): the traces sent after the restart were out whole \
         {:.1}s later (decision_wait 1s included); {ledger}",
        resumed.as_secs_f64()
    );
    assert!(
        resumed < Duration::from_secs(30),
        "the restarted worker took {resumed:?}: kafka.consumer.session_timeout did not reach the consumer"
    );
    worker.stop();
    gateway.stop().await;
}

/// What a sampler process may hold beyond its idle baseline and its configured bounds: librdkafka's prefetch — the
/// sampler leaves `queued.max.messages.kbytes` at librdkafka's default, 64 MiB, read ahead of the worker — and
/// 8 MiB of allocator slack and librdkafka buffers (the peaks measured here were 6 to 16 MiB over the baseline, the
/// prefetch included).
const PREFETCH_MIB: f64 = 64.0;
const SLACK_MIB: f64 = 8.0;

/// A flood: one trace ID carrying 1,000,000 spans of ~140 bytes (~134 MiB encoded) amid ordinary traffic, against a
/// 1 MiB buffer and a 1 MiB per-trace bound, in a sampler process. The flood has no root, so without the bounds it
/// would be held for the whole 30 s `decision_wait` (with them disabled, the process peaked at 331 MiB); with them it
/// is decided (dropped) once it reaches 1 MiB, and its later spans follow that decision. The process's peak RSS stays
/// within its idle baseline plus its configured bounds plus [`PREFETCH_MIB`] and [`SLACK_MIB`], and every ordinary
/// trace is decided as the policies say, 2 s after its root, also through a burst of ten times the usual rate of new
/// traces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_trace_stays_within_the_memory_bound() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let (mut sampler, telemetry) = sampler_process(
        "flood",
        &kafka,
        // The span count is high enough that the byte bounds stop the flood; the decision cache (1 MiB, 16,000
        // decisions) is part of what the process may hold.
        "{ decision_wait: 30s, decision_wait_after_root: 2s, max_buffered_bytes: 1MiB, max_trace_bytes: 1MiB, \
         max_spans_per_trace: 1000000, max_output_bytes_in_flight: 1MiB, decision_cache_bytes: 1MiB }",
    );
    // max_buffered_bytes, max_output_bytes_in_flight and decision_cache_bytes.
    let configured_mib = 3.0;
    sampler.start().await;
    let rss = RssSampler::start(&[&sampler]);

    // Idle, after deciding its first traces: the baseline.
    let warm: Vec<u32> = (100_000..100_010).collect();
    send_padded(&mut client, &warm, FIRST_HALF, 0).await;
    send_padded(&mut client, &warm, LATE_HALF, 0).await;
    wait::until("the first traces decided", Duration::from_secs(30), || async {
        served(telemetry, "tailgate_sampler_traces_total").await >= warm.len() as f64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // two reads of VmHWM
    let baseline = mib(sampler.peak_rss_kib.load(Ordering::SeqCst));

    let flood_id = (1_000_000u64..).map(trace_id).find(|id| !probabilistic_keeps(id, PERCENTAGE)).unwrap();
    let name = "poll".repeat(25);
    let started = Instant::now();
    let mut next = 0u32;
    for round in 0..20u32 {
        // 50,000 spans of the flooding trace (fast, successful, and not kept by the hash: dropped) ...
        let flood = (0..50_000u64)
            .map(|i| Span {
                trace_id: flood_id.clone(),
                span_id: (u64::from(round) * 50_000 + i + 1).to_be_bytes().to_vec(),
                name: name.clone(),
                parent_span_id: vec![1; 8],
                ..Default::default()
            })
            .collect();
        client.export(harness::trace_request(flood)).await.unwrap();
        // ... and 15 ordinary traces, whole — 150 in round 10, ten times the usual rate of new traces.
        let new: Vec<u32> = (next..next + if round == 10 { 150 } else { 15 }).collect();
        send_padded(&mut client, &new, FIRST_HALF, 0).await;
        send_padded(&mut client, &new, LATE_HALF, 0).await;
        next += new.len() as u32;
    }
    assert_eq!(next, 435);
    let flooded = started.elapsed();

    // No faults: one copy of each span the gateway wrote once.
    let sent: Vec<u32> = (0..next).chain(warm.iter().copied()).collect();
    let ledger = check(&kafka, &sent, kept_whole, |_, _, read| read).await;
    let settled = started.elapsed();
    drop(rss);
    sampler.stop();
    let peak = mib(sampler.peak_rss_kib.load(Ordering::SeqCst));
    let bound = baseline + configured_mib + PREFETCH_MIB + SLACK_MIB;
    eprintln!(
        "flood: peak RSS {peak:.1} MiB (idle {baseline:.1} MiB; bound {bound:.1} MiB: {configured_mib} MiB configured, \
         {PREFETCH_MIB} prefetch, {SLACK_MIB} slack); flood sent in {flooded:.1?}, everything settled after \
         {settled:.1?}; {ledger}"
    );
    assert!(peak <= bound, "peak RSS {peak:.1} MiB over {bound:.1} MiB: the flood was held");
    assert!(settled < Duration::from_secs(60), "ordinary traces were decided on time: settled after {settled:?}");
    gateway.stop().await;
}

/// Traces of four 8 KiB spans, sent 16 at a time.
const PADDING: usize = 8 * 1024;
const PER_REQUEST: usize = 16;

async fn send_heavy(client: &mut TraceServiceClient<Channel>, traces: &[u32]) {
    for chunk in traces.chunks(PER_REQUEST) {
        send_padded(client, chunk, FIRST_HALF, PADDING).await;
        send_padded(client, chunk, LATE_HALF, PADDING).await;
    }
}

/// When Kafka stops acknowledging the sampler's output — the sampled topic's partitions without a leader
/// (MockCluster), so every write waits and times out — the worker pauses fetching instead of holding ever more
/// output: 32 MiB of traces the policies keep, sent during the outage, stay in Kafka (none is decided), and the
/// process's peak RSS stays within its idle baseline, its configured bounds, what was sent before the pause (4 MiB,
/// which librdkafka may have prefetched) and [`SLACK_MIB`]. When the partitions have a leader again, fetching
/// resumes and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_output_pauses_fetching_and_loses_nothing() {
    let mock = harness::mock_cluster();
    let kafka = harness::mock_kafka(&mock, PARTITIONS);
    let leader = |broker: Option<i32>| {
        for p in 0..PARTITIONS as i32 {
            mock.partition_leader(&kafka.topics.sampled_spans, p, broker).unwrap();
        }
    };
    let (mut sampler, telemetry) = sampler_process(
        "outage",
        &kafka,
        "{ decision_wait: 2s, max_buffered_bytes: 1MiB, max_trace_bytes: 1MiB, max_output_bytes_in_flight: 1MiB, \
         decision_cache_bytes: 1MiB, red_metrics: { enabled: false } }",
    );
    // Started first: both roles' start-ups wait out admin requests MockCluster does not answer, so they overlap.
    sampler.start().await;
    let rss = RssSampler::start(&[&sampler]);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let decided = || served(telemetry, "tailgate_sampler_traces_total");

    // Idle, after deciding its first traces (dropped ones: their decisions are written, to a topic that takes them):
    // the baseline.
    let warm: Vec<u32> = (100_000..).filter(|t| !kept_whole(*t)).take(10).collect();
    send_padded(&mut client, &warm, FIRST_HALF, 0).await;
    send_padded(&mut client, &warm, LATE_HALF, 0).await;
    wait::until("the first traces decided", Duration::from_secs(30), || async { decided().await >= warm.len() as f64 })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // two reads of VmHWM
    let baseline = mib(sampler.peak_rss_kib.load(Ordering::SeqCst));

    // The sampled topic loses its leader; then 4 MiB of traces of every kind: more kept output than the 1 MiB the
    // sampler lets wait for Kafka.
    leader(None);
    let outage = Instant::now();
    let before: Vec<u32> = (0..128).collect();
    send_heavy(&mut client, &before).await;
    wait::until("fetching paused", Duration::from_secs(30), || async {
        served(telemetry, "tailgate_sampler_fetch_pauses_total").await >= 1.0
    })
    .await;
    let decided_at_pause = decided().await;
    let read_before = (warm.len() + before.len()) as f64;
    // 32 MiB of traces the policies keep, while the output stays unacknowledged.
    let during: Vec<u32> = (128..).filter(|t| kind(*t) != Kind::Normal).take(1024).collect();
    send_heavy(&mut client, &during).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // 2.5 decision waits: a sampler that did not pause decides
    let decided_in_outage = decided().await;
    tokio::time::sleep(Duration::from_millis(300)).await; // two reads of VmHWM
    let peak = mib(sampler.peak_rss_kib.load(Ordering::SeqCst));
    // Held while paused: the buffer; the output in flight, and what the buffer decided after the pause tripped; the
    // decision cache; and librdkafka's prefetch of what had been sent before it, 4 MiB.
    let bound = baseline + 1.0 + 1.0 + 1.0 + 1.0 + 4.0 + SLACK_MIB;
    assert!(
        peak <= bound,
        "peak RSS {peak:.1} MiB (idle {baseline:.1} MiB) over {bound:.1} MiB while the output was not acknowledged"
    );
    // Records fetched before the pause may still arrive and be decided; nothing sent after it.
    assert!(
        decided_in_outage <= read_before,
        "{decided_in_outage} traces decided by the end of the outage: fetching went on"
    );

    leader(Some(1));
    let (paused_for, recovered) = (outage.elapsed(), Instant::now());
    // The output of what was read before the pause may be written twice (a write that timed out is sent again);
    // what was sent during the outage is read only after it.
    let sent: Vec<u32> = warm.iter().chain(&before).chain(&during).copied().collect();
    let ledger = check(&kafka, &sent, kept_whole, |t, _, read| if t < 128 { 2 * read } else { read }).await;
    let recovery = recovered.elapsed();
    drop(rss);
    sampler.stop();

    eprintln!(
        "output outage: peak RSS {peak:.1} MiB while paused (idle {baseline:.1} MiB; bound {bound:.1} MiB); \
         {decided_at_pause} traces decided when fetching paused, {decided_in_outage} by the end of the outage (of \
         {read_before} sent before it); outage {paused_for:.1?}, everything settled {recovery:.1?} after it; {ledger}"
    );
    gateway.stop().await;
}
