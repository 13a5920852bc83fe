//! Kafka's promises proven on Apache Kafka, the broker users run (`harness::apache_kafka`): group membership
//! (`membership`), an earlier version's compacted, expiring decisions topic still loaded (`decisions`), broker restarts, leader failover and
//! the idempotent producer under the running pipeline (`durability`), SASL/SCRAM, TLS and ACLs enforced by the broker (`security`), and topic-level limits and
//! timestamp types (`topics`). `pom.xml` beside this file names the broker's jars.
//!
//! The traces here are the kind a fault shows on: a root that succeeds, then, in a later request, its failed
//! child. A worker that decides a trace on its root alone drops it; one that loses the child's record loses it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use tonic::transport::Channel;

use crate::harness::otlp::{now_ns, trace_id};
use crate::harness::{self, eventually, topic};

mod collector;
mod decisions;
mod durability;
mod membership;
mod security;
mod topics;

/// A span as the ledgers know it: (trace ID, span ID).
type SpanKey = (Vec<u8>, Vec<u8>);

/// Spans per trace: the root (span 1) and its failed child (span 2).
const SPANS: usize = 2;

/// Sends the roots of `traces`, then their failed children in a second request: the seed's error policy keeps
/// every one of them whole.
async fn send_traces(client: &mut TraceServiceClient<Channel>, traces: std::ops::Range<u64>) {
    send_roots(client, traces.clone()).await;
    send_children(client, traces).await;
}

/// The roots of `traces`, which succeed.
async fn send_roots(client: &mut TraceServiceClient<Channel>, traces: std::ops::Range<u64>) {
    send_part(client, traces, 1).await;
}

/// The failed children of `traces`.
async fn send_children(client: &mut TraceServiceClient<Channel>, traces: std::ops::Range<u64>) {
    send_part(client, traces, 2).await;
}

async fn send_part(client: &mut TraceServiceClient<Channel>, traces: std::ops::Range<u64>, part: u8) {
    client.export(request(traces, part)).await.expect("the gateway acknowledges");
}

/// Span `part` (1: the root, 2: the failed child) of each of `traces`, in one request.
fn request(traces: std::ops::Range<u64>, part: u8) -> ExportTraceServiceRequest {
    let now = now_ns();
    let spans = traces
        .map(|t| Span {
            trace_id: trace_id(t),
            span_id: span_id(t, part),
            parent_span_id: if part == 1 { Vec::new() } else { span_id(t, 1) },
            name: format!("span-{part}"),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            status: (part == 2).then(|| Status { code: status::StatusCode::Error as i32, message: "declined".into() }),
            ..Default::default()
        })
        .collect();
    harness::trace_request(spans)
}

fn span_id(trace: u64, part: u8) -> Vec<u8> {
    let mut id = (trace * 16 + u64::from(part)).to_be_bytes();
    id[0] |= 0x80; // never all zeros
    id.to_vec()
}

/// (trace ID, span ID) of every span of traces `traces`.
fn expected(traces: std::ops::Range<u64>) -> HashSet<SpanKey> {
    traces.flat_map(|t| (1..=SPANS as u8).map(move |part| (trace_id(t), span_id(t, part)))).collect()
}

/// Reads `topic` until every span in `want` is in it (or `timeout`); returns the distinct spans found and how many
/// copies there were in all.
fn spans_in(
    kafka: &tailgate_kafka::KafkaConfig,
    topic: &str,
    want: &HashSet<SpanKey>,
    timeout: Duration,
) -> (HashSet<SpanKey>, usize) {
    let ids = |records: &[harness::Record]| -> Vec<SpanKey> {
        topic::spans(records).into_iter().map(|(_, s)| (s.trace_id, s.span_id)).collect()
    };
    let records = harness::read_topic(&kafka.brokers, topic, kafka.partitions, timeout, |records| {
        let found: HashSet<_> = ids(records).into_iter().collect();
        want.is_subset(&found)
    });
    let all = ids(&records);
    (all.iter().cloned().collect(), all.len())
}

/// What a client sent and what the gateway acknowledged: the left side of the ledger.
#[derive(Default)]
struct Sent {
    /// Every span sent, acknowledged or not.
    sent: HashSet<SpanKey>,
    /// Spans whose request the gateway acknowledged.
    acknowledged: HashSet<SpanKey>,
    /// Traces both of whose requests were acknowledged: the ones the sampler must keep whole.
    complete: HashSet<Vec<u8>>,
    /// Each request: when it was sent, when it was answered, whether it was acknowledged.
    requests: Vec<(Instant, Instant, bool)>,
}

impl Sent {
    /// The acknowledged spans of the complete traces.
    fn of_complete_traces(&self) -> HashSet<SpanKey> {
        self.acknowledged.iter().filter(|(trace, _)| self.complete.contains(trace)).cloned().collect()
    }
}

/// A client sending traces without pause — ten a request, each trace's root and then its failed child — until it
/// is stopped, as an instrumented service does through an outage: a refused request is not sent again.
struct Load {
    stop: Arc<AtomicBool>,
    /// Requests acknowledged so far.
    acknowledged: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Sent>,
}

impl Load {
    fn start(grpc_url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acknowledged));
            async move {
                let mut client = TraceServiceClient::connect(grpc_url).await.unwrap();
                let mut sent = Sent::default();
                let mut next = 1_000_000u64;
                while !stop.load(Ordering::SeqCst) {
                    let traces = next..next + 10;
                    next += 10;
                    let mut whole = true;
                    for part in 1..=SPANS as u8 {
                        let request = request(traces.clone(), part);
                        let ids: Vec<_> = traces.clone().map(|t| (trace_id(t), span_id(t, part))).collect();
                        sent.sent.extend(ids.iter().cloned());
                        let mut request = tonic::Request::new(request);
                        request.set_timeout(Duration::from_secs(15));
                        let began = Instant::now();
                        let ok = client.export(request).await.is_ok();
                        sent.requests.push((began, Instant::now(), ok));
                        if ok {
                            sent.acknowledged.extend(ids);
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        whole &= ok;
                    }
                    if whole {
                        sent.complete.extend(traces.map(trace_id));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                sent
            }
        });
        Load { stop, acknowledged, task }
    }

    /// Waits until `more` requests beyond those acknowledged now are acknowledged; false after `timeout`.
    async fn progresses(&self, more: u64, timeout: Duration) -> bool {
        let target = self.acknowledged.load(Ordering::SeqCst) + more;
        eventually(timeout, || self.acknowledged.load(Ordering::SeqCst) >= target).await
    }

    async fn stop(self) -> Sent {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// The ledger of one place the spans should be: acknowledged, present, lost, duplicated, unexpected.
struct Ledger {
    acknowledged: usize,
    present: usize,
    lost: usize,
    duplicated: usize,
    unexpected: usize,
}

impl Ledger {
    /// `found`: every copy of every span found there, as (trace ID, span ID).
    fn of(sent: &Sent, expected: &HashSet<SpanKey>, found: &[SpanKey]) -> Ledger {
        let distinct: HashSet<_> = found.iter().cloned().collect();
        Ledger {
            acknowledged: expected.len(),
            present: expected.intersection(&distinct).count(),
            lost: expected.difference(&distinct).count(),
            duplicated: found.len() - distinct.len(),
            unexpected: distinct.iter().filter(|id| !sent.sent.contains(*id)).count(),
        }
    }
}

impl std::fmt::Display for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acknowledged {}, present {}, lost {}, duplicated {}, unexpected {}",
            self.acknowledged, self.present, self.lost, self.duplicated, self.unexpected
        )
    }
}

/// Every copy of every span in `topic`, read until every span of `want` is there (or `timeout`).
fn all_copies(
    kafka: &tailgate_kafka::KafkaConfig,
    topic: &str,
    want: &HashSet<SpanKey>,
    timeout: Duration,
) -> Vec<SpanKey> {
    let ids = |records: &[harness::Record]| -> Vec<SpanKey> {
        topic::spans(records).into_iter().map(|(_, s)| (s.trace_id, s.span_id)).collect()
    };
    let records = harness::read_topic(&kafka.brokers, topic, kafka.partitions, timeout, |records| {
        let found: HashSet<_> = ids(records).into_iter().collect();
        want.is_subset(&found)
    });
    ids(&records)
}
