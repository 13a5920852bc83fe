//! The sampler worker: a member of consumer group `tailgate-sampler` on the spans topic.
//!
//! Per assigned partition it buffers spans by trace, decides each trace `decision_wait` after its first span in
//! event time, writes kept traces to the sampled topic (same contract, same partition), and commits only offsets
//! below which every span's fate is settled: dropped, or kept and acknowledged by Kafka ([`crate::offsets`]).
//!
//! Rebalances: on revoke, the revoked partitions' safe offsets are committed and their buffers dropped; their
//! undecided traces are re-read by the next owner. On a lost assignment nothing is committed. Acknowledgements that
//! arrive for a partition's earlier ownership are ignored (each ownership has its own epoch).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tailgate_kafka::{client_config, create_producer, ensure_topics, KafkaConfig, ProducerSettings, TopicError};
use tailgate_proto::decisions::Decision;
use tailgate_proto::{headers, partition_for_key, split, Record};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::{PartitionBuffer, PendingTrace, TraceId, TraceLimits};
use crate::policy::{tracestate_threshold, Policies, TraceView};
use crate::red::RedMetrics;
use crate::SamplerConfig;

/// How many recent decisions are kept in memory for late spans.
const DECISION_CACHE: usize = 200_000;
/// A partition with no record for this long is caught up: its clock follows the wall clock.
const IDLE_AFTER: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(100);
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Decisions at least this recent are loaded when a partition is assigned (or ten decision waits, if longer).
const DECISION_LOOKBACK: Duration = Duration::from_secs(600);

pub const TRACES: &str = "tailgate_sampler_traces_total";
pub const SPANS: &str = "tailgate_sampler_spans_total";
pub const LATE_SPANS: &str = "tailgate_sampler_late_spans_total";
pub const UNDECODABLE: &str = "tailgate_sampler_undecodable_records_total";
pub const EARLY_DECISIONS: &str = "tailgate_sampler_early_decisions_total";
pub const BUFFERED_BYTES: &str = "tailgate_sampler_buffered_bytes";
pub const REVOCATIONS: &str = "tailgate_sampler_revocations_total";
pub const PAUSES: &str = "tailgate_sampler_fetch_pauses_total";
pub const BUFFERED_TRACES: &str = "tailgate_sampler_buffered_traces";
/// Event-time seconds from a trace's first span to its decision.
pub const DECISION_DELAY: &str = "tailgate_sampler_decision_delay_duration_seconds";
/// Records behind the partition's end, by `partition`, as librdkafka's statistics report it.
pub const CONSUMER_LAG: &str = "tailgate_sampler_consumer_lag_records";

/// Every metric name above, for checks that dashboards and alerts query real series.
pub const METRICS: &[&str] = &[
    TRACES,
    SPANS,
    LATE_SPANS,
    UNDECODABLE,
    EARLY_DECISIONS,
    BUFFERED_BYTES,
    REVOCATIONS,
    PAUSES,
    BUFFERED_TRACES,
    DECISION_DELAY,
    CONSUMER_LAG,
];

/// Registers descriptions, so `/metrics` explains every series.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(TRACES, "Traces decided, by decision and keeping policy.");
    describe_counter!(SPANS, "Spans of decided traces, by decision.");
    describe_counter!(LATE_SPANS, "Spans that arrived after their trace was decided, by decision.");
    describe_counter!(UNDECODABLE, "Records of the spans topic that were not OTLP, sent to the dead-letter topic.");
    describe_counter!(EARLY_DECISIONS, "Traces decided before decision_wait, by reason (trace_limit, memory).");
    describe_gauge!(BUFFERED_BYTES, Unit::Bytes, "Encoded span bytes awaiting a decision.");
    describe_gauge!(BUFFERED_TRACES, "Traces awaiting a decision.");
    describe_counter!(REVOCATIONS, "Rebalances that took partitions from this worker.");
    describe_counter!(PAUSES, "Times fetching paused because output was not acknowledged.");
    describe_histogram!(DECISION_DELAY, Unit::Seconds, "Event time from a trace's first span to its decision.");
    describe_gauge!(CONSUMER_LAG, "Records behind the end of each partition of the spans topic.");
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("Kafka client error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid sampler policies:\n{0}")]
    Policies(tailgate_config::Problems),
}

/// Recent decisions, oldest forgotten first.
#[derive(Default)]
struct Decisions {
    kept: HashMap<TraceId, bool>,
    order: VecDeque<TraceId>,
}

impl Decisions {
    fn get(&self, id: &TraceId) -> Option<bool> {
        self.kept.get(id).copied()
    }

    fn insert(&mut self, id: TraceId, keep: bool) {
        if self.kept.insert(id, keep).is_none() {
            self.order.push_back(id);
            if self.order.len() > DECISION_CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.kept.remove(&old);
                }
            }
        }
    }
}

struct Owned {
    epoch: u64,
    red: RedMetrics,
    buffer: PartitionBuffer,
    committed: Option<i64>,
}

#[derive(Default)]
struct State {
    partitions: HashMap<i32, Owned>,
    decisions: Decisions,
    /// The partitions this worker owns now. A record of any other partition (fetched before a revoke) is ignored,
    /// so no state, and no commit, is ever made for a partition another worker owns.
    assigned: std::collections::HashSet<i32>,
}

struct Context {
    state: Arc<Mutex<State>>,
    topic: String,
    stats: Arc<SamplerStats>,
    kafka: KafkaConfig,
    /// How far back (in record time) decisions are loaded when a partition is assigned.
    lookback: Duration,
}

/// Counters a test or an operator can read while the worker runs.
#[derive(Debug, Default)]
pub struct SamplerStats {
    /// Rebalances that took partitions away from this worker.
    pub revocations: AtomicU64,
    /// The most encoded span bytes buffered at once, after the memory bound was enforced.
    pub max_buffered_bytes: AtomicU64,
    /// Output bytes sent to Kafka and not yet acknowledged.
    pub output_bytes_in_flight: AtomicU64,
    /// Times fetching was paused because output was not being acknowledged.
    pub pauses: AtomicU64,
}

impl ClientContext for Context {
    /// librdkafka's periodic statistics carry each partition's consumer lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                metrics::gauge!(CONSUMER_LAG, "partition" => partition.to_string()).set(stats.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for Context {
    /// Before consuming a newly assigned partition, load its recent decisions, so late spans of traces another
    /// worker decided keep their decision and kept traces are not emitted again.
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else { return };
        let partitions: Vec<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
        if partitions.is_empty() {
            return;
        }
        // Incremental under cooperative rebalancing, the whole assignment under eager: either way, an addition.
        self.state.lock().unwrap_or_else(|e| e.into_inner()).assigned.extend(partitions.iter().copied());
        let since = now_ms() - self.lookback.as_millis() as i64;
        match load_decisions(&self.kafka, &partitions, since) {
            Ok(loaded) => {
                let count = loaded.len();
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                for (trace_id, keep) in loaded {
                    state.decisions.insert(trace_id, keep);
                }
                tracing::info!(partitions = ?partitions, decisions = count, "partitions assigned; decisions loaded");
            }
            Err(error) => tracing::warn!(%error, "cannot load recent decisions; late spans will be decided afresh"),
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else { return };
        let lost = consumer.assignment_lost();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut commit = TopicPartitionList::new();
        for element in revoked.elements() {
            state.assigned.remove(&element.partition());
            let Some(owned) = state.partitions.remove(&element.partition()) else { continue };
            if let (false, Some(offset)) = (lost, owned.buffer.tracker.safe_offset()) {
                let _ = commit.add_partition_offset(&self.topic, element.partition(), Offset::Offset(offset));
            }
        }
        drop(state);
        if lost {
            tracing::warn!("assignment lost: dropping partition state without committing");
        } else if commit.count() > 0 {
            if let Err(error) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(%error, "commit on revoke failed; the next owner re-reads from the last commit");
            }
        }
        self.stats.revocations.fetch_add(1, Ordering::SeqCst);
        metrics::counter!(REVOCATIONS, "lost" => if lost { "true" } else { "false" }).increment(1);
        tracing::info!(partitions = revoked.count(), lost, "partitions revoked");
    }
}

/// An acknowledgement of kept output, or its final failure.
struct Settled {
    partition: i32,
    epoch: u64,
    offsets: Vec<i64>,
}

pub struct Sampler {
    consumer: StreamConsumer<Context>,
    producer: FutureProducer,
    state: Arc<Mutex<State>>,
    policies: Policies,
    config: SamplerConfig,
    kafka: KafkaConfig,
    stats: Arc<SamplerStats>,
    /// Identifies this worker's RED series.
    instance: String,
}

static EPOCH: AtomicU64 = AtomicU64::new(1);

impl Sampler {
    pub async fn build(config: &SamplerConfig, kafka: &KafkaConfig, group_id: &str) -> Result<Sampler, SamplerError> {
        let policies = Policies::build(&config.policies).map_err(SamplerError::Policies)?;
        describe();
        let none: &[(&str, &str)] = &[];
        let dlq = headers::dead_letter_topic(&kafka.topics.spans);
        let compacted: &[(&str, &str)] = &[("cleanup.policy", "compact")];
        ensure_topics(
            kafka,
            &[
                (&kafka.topics.spans, none),
                (&kafka.topics.metrics, none),
                (&kafka.topics.sampled_spans, none),
                (&kafka.topics.decisions, compacted),
                (&dlq, none),
            ],
            Duration::from_secs(30),
        )
        .await?;
        let state = Arc::new(Mutex::new(State::default()));
        let stats = Arc::new(SamplerStats::default());
        let context = Context {
            state: Arc::clone(&state),
            topic: kafka.topics.spans.clone(),
            stats: Arc::clone(&stats),
            kafka: kafka.clone(),
            lookback: DECISION_LOOKBACK.max(config.decision_wait.get() * 10),
        };
        let consumer: StreamConsumer<Context> = client_config(kafka)
            .set("group.id", group_id)
            .set("client.id", "tailgate-sampler")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            .create_with_context(context)?;
        consumer.subscribe(&[&kafka.topics.spans])?;
        let producer = create_producer(
            kafka,
            &ProducerSettings { queue_max_bytes: None, client_id: "tailgate-sampler".to_owned() },
        )?;
        let instance = format!("{}-{}", std::process::id(), now_ms());
        Ok(Sampler {
            consumer,
            producer,
            state,
            policies,
            config: config.clone(),
            kafka: kafka.clone(),
            stats,
            instance,
        })
    }

    pub fn stats(&self) -> Arc<SamplerStats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `shutdown`, then commits what is settled and returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SamplerError> {
        let (settled_tx, mut settled_rx) = mpsc::unbounded_channel::<Settled>();
        let wait_ms = self.config.decision_wait.get().as_millis() as i64;
        let mut tick = tokio::time::interval(TICK);
        let mut last_commit = Instant::now();
        let mut last_red = Instant::now();
        let mut paused = false;
        tracing::info!(topic = %self.kafka.topics.spans, output = %self.kafka.topics.sampled_spans, "sampler consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::warn!(%error, "consumer error");
                            continue;
                        }
                    };
                    let (partition, offset) = (message.partition(), message.offset());
                    if !self.owns(partition) {
                        continue;
                    }
                    let timestamp = message.timestamp().to_millis().unwrap_or_else(now_ms);
                    let payload = message.payload().unwrap_or_default();
                    let request = match ExportTraceServiceRequest::decode(payload) {
                        Ok(request) => request.resource_spans,
                        Err(error) => {
                            tracing::warn!(partition, offset, %error, "undecodable record sent to the dead-letter topic");
                            metrics::counter!(UNDECODABLE).increment(1);
                            let key = message.key().map(<[u8]>::to_vec);
                            self.dead_letter(partition, offset, key, payload.to_vec(), error.to_string(), &settled_tx);
                            continue;
                        }
                    };
                    self.on_record(partition, offset, timestamp, request, &settled_tx);
                    self.decide_due(Some(partition), wait_ms, &settled_tx);
                    paused = self.apply_backpressure(paused);
                }
                Some(settled) = settled_rx.recv() => self.on_settled(settled),
                _ = tick.tick() => {
                    paused = self.apply_backpressure(paused);
                    self.advance_idle_clocks();
                    self.decide_due(None, wait_ms, &settled_tx);
                    if last_commit.elapsed() >= COMMIT_INTERVAL {
                        self.commit(CommitMode::Async);
                        last_commit = Instant::now();
                    }
                    if self.config.red_metrics.enabled && last_red.elapsed() >= self.config.red_metrics.interval.get() {
                        self.export_red_metrics();
                        last_red = Instant::now();
                    }
                }
            }
        }
        // Let in-flight output finish, then commit what is settled. Undecided traces stay uncommitted: the next
        // owner re-reads them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.has_unsettled_output() {
            match tokio::time::timeout_at(deadline, settled_rx.recv()).await {
                Ok(Some(settled)) => self.on_settled(settled),
                _ => break,
            }
        }
        self.commit(CommitMode::Sync);
        tracing::info!("sampler stopped");
        Ok(())
    }

    /// Sends an undecodable record to `<spans topic>.dlq` with the error in a header. Its offset is held until
    /// Kafka has the copy, so it is never skipped silently, and the partition moves on meanwhile.
    fn dead_letter(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        error: String,
        settled_tx: &mpsc::UnboundedSender<Settled>,
    ) {
        let epoch = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let owned = owned(&mut state.partitions, partition, &self.config.red_metrics.histogram_buckets_ms);
            owned.buffer.tracker.read(offset, 1);
            owned.buffer.unsettled_output += 1;
            owned.epoch
        };
        let headers = OwnedHeaders::new()
            .insert(Header { key: headers::DLQ_ERROR, value: Some(error.as_str()) })
            .insert(Header { key: headers::DLQ_SOURCE, value: Some(&format!("{partition}:{offset}")) });
        let record = Outgoing {
            topic: headers::dead_letter_topic(&self.kafka.topics.spans),
            partition,
            key,
            value: payload,
            headers,
        };
        self.send_then_settle(vec![record], Settled { partition, epoch, offsets: vec![offset] }, settled_tx);
    }

    fn on_record(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp: i64,
        request: Vec<ResourceSpans>,
        settled_tx: &mpsc::UnboundedSender<Settled>,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { partitions, decisions, .. } = &mut *state;
        let owned = owned(partitions, partition, &self.config.red_metrics.histogram_buckets_ms);
        if self.config.red_metrics.enabled {
            owned.red.record(&request);
        }
        let limits = TraceLimits {
            max_spans: self.config.max_spans_per_trace,
            max_bytes: self.config.max_trace_bytes.get() as usize,
        };
        let (late_kept, late_dropped) =
            owned.buffer.add_record(offset, timestamp, request, limits, |id| decisions.get(id));
        if late_dropped > 0 {
            metrics::counter!(LATE_SPANS, "decision" => "dropped").increment(late_dropped as u64);
        }
        if !late_kept.is_empty() {
            metrics::counter!(LATE_SPANS, "decision" => "kept").increment(1);
            let epoch = owned.epoch;
            drop(state);
            self.emit(partition, epoch, Some(late_kept), None, vec![offset], settled_tx);
        }
    }

    /// Decides the traces that are due (`decision_wait` passed in event time, for `only` or every partition), that
    /// reached a per-trace limit, or — oldest first — that must go to bring the buffer under `max_buffered_bytes`.
    fn decide_due(&mut self, only: Option<i32>, wait_ms: i64, settled_tx: &mpsc::UnboundedSender<Settled>) {
        let max_buffered = self.config.max_buffered_bytes.get() as usize;
        let mut to_emit = Vec::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let State { partitions, decisions, .. } = &mut *state;
            let mut ready: Vec<(i32, TraceId, PendingTrace, &'static str)> = Vec::new();
            for (partition, owned) in partitions.iter_mut() {
                ready.extend(
                    owned.buffer.take_over_limit().into_iter().map(|(id, t)| (*partition, id, t, "trace_limit")),
                );
                if only.is_none_or(|p| p == *partition) {
                    let after_root = self.config.decision_wait_after_root.map(|d| d.get().as_millis() as i64);
                    let due = owned.buffer.due(wait_ms, after_root);
                    ready.extend(due.into_iter().map(|(id, t)| (*partition, id, t, "decision_wait")));
                }
            }
            let mut total: usize = partitions.values().map(|o| o.buffer.buffered_bytes).sum();
            while total > max_buffered {
                let Some((partition, owned)) = partitions.iter_mut().max_by_key(|(_, o)| o.buffer.buffered_bytes)
                else {
                    break;
                };
                let Some((id, trace)) = owned.buffer.take_oldest() else { break };
                total -= trace.bytes;
                ready.push((*partition, id, trace, "memory"));
            }
            metrics::gauge!(BUFFERED_BYTES).set(total as f64);
            metrics::gauge!(BUFFERED_TRACES)
                .set(partitions.values().map(|o| o.buffer.traces.len()).sum::<usize>() as f64);
            self.stats.max_buffered_bytes.fetch_max(total as u64, Ordering::SeqCst);

            for (partition, trace_id, trace, reason) in ready {
                let Some(owned) = partitions.get_mut(&partition) else { continue };
                if reason != "decision_wait" {
                    metrics::counter!(EARLY_DECISIONS, "reason" => reason).increment(1);
                }
                let clock = owned.buffer.clock_ms;
                metrics::histogram!(DECISION_DELAY).record((clock - trace.first_seen_ms).max(0) as f64 / 1000.0);
                let mut batches = trace.decode();
                let verdict = self.policies.decide(&TraceView { trace_id: &trace_id, batches: &batches }, clock);
                decisions.insert(trace_id, verdict.keep);
                let outcome = if verdict.keep { "kept" } else { "dropped" };
                let policy = verdict.policy.clone().unwrap_or_default();
                metrics::counter!(TRACES, "decision" => outcome, "policy" => policy).increment(1);
                metrics::counter!(SPANS, "decision" => outcome).increment(trace.spans as u64);
                if verdict.keep {
                    if let Some(percentage) = verdict.probabilistic {
                        mark_threshold(&mut batches, percentage);
                    }
                    if self.config.record_policy {
                        mark_policy(&mut batches, verdict.policy.as_deref().unwrap_or_default());
                    }
                }
                let decision = (trace_id, Decision { keep: verdict.keep, policy: verdict.policy.unwrap_or_default() });
                let output = verdict.keep.then_some(batches);
                to_emit.push((partition, owned.epoch, output, Some(decision), trace.offsets));
            }
        }
        for (partition, epoch, output, decision, offsets) in to_emit {
            self.emit(partition, epoch, output, decision, offsets, settled_tx);
        }
    }

    /// Writes kept spans to the sampled topic and the decision to the decisions topic, retrying until Kafka
    /// acknowledged both, then reports `offsets` settled.
    fn emit(
        &self,
        partition: i32,
        epoch: u64,
        output: Option<Vec<ResourceSpans>>,
        decision: Option<(TraceId, Decision)>,
        offsets: Vec<i64>,
        settled_tx: &mpsc::UnboundedSender<Settled>,
    ) {
        let max = (self.kafka.producer.max_message_bytes.get() as usize).saturating_sub(1024);
        let partitions = self.kafka.partitions;
        let mut records: Vec<Outgoing> = output
            .map(|batches| split(ExportTraceServiceRequest { resource_spans: batches }, partitions, max).records)
            .unwrap_or_default()
            .into_iter()
            .map(|r| Outgoing::contract(&self.kafka.topics.sampled_spans, r, headers::ENCODING_OTLP_PROTO))
            .collect();
        if let Some((trace_id, decision)) = decision {
            let record = Record {
                partition: partition_for_key(&trace_id, partitions),
                key: trace_id.to_vec(),
                value: decision.encode(),
                items: 1,
            };
            records.push(Outgoing::contract(&self.kafka.topics.decisions, record, DECISION_ENCODING));
        }
        self.send_then_settle(records, Settled { partition, epoch, offsets }, settled_tx);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owned) = state.partitions.get_mut(&partition) {
            owned.buffer.unsettled_output += 1;
        }
    }

    /// Writes `records`, retrying until Kafka acknowledged all of them, then reports `settled`. Records that did
    /// land before a retry are written again: duplicates, which downstream stages count.
    fn send_then_settle(&self, records: Vec<Outgoing>, settled: Settled, settled_tx: &mpsc::UnboundedSender<Settled>) {
        let producer = self.producer.clone();
        let settled_tx = settled_tx.clone();
        let bytes = records.iter().map(|r| r.value.len() as u64).sum::<u64>();
        let stats = Arc::clone(&self.stats);
        stats.output_bytes_in_flight.fetch_add(bytes, Ordering::SeqCst);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let results = join_all(records.iter().map(|r| producer.send(r.record(), Duration::from_secs(5)))).await;
                if let Some(Err((error, _))) = results.into_iter().find(Result::is_err) {
                    tracing::warn!(%error, ?backoff, "sampler output not acknowledged; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                break;
            }
            stats.output_bytes_in_flight.fetch_sub(bytes, Ordering::SeqCst);
            let _ = settled_tx.send(settled);
        });
    }

    /// Pauses fetching while more than `max_output_bytes_in_flight` of output awaits Kafka's acknowledgement, and
    /// resumes once half of it is acknowledged. Returns whether fetching is now paused.
    fn apply_backpressure(&self, paused: bool) -> bool {
        let in_flight = self.stats.output_bytes_in_flight.load(Ordering::SeqCst);
        let bound = self.config.max_output_bytes_in_flight.get();
        let pause = if paused { in_flight > bound / 2 } else { in_flight > bound };
        let Ok(assignment) = self.consumer.assignment() else { return paused };
        if pause {
            // Also on every later call: partitions assigned while paused must be paused too.
            if let Err(error) = self.consumer.pause(&assignment) {
                tracing::warn!(%error, "cannot pause fetching");
            }
            if !paused {
                self.stats.pauses.fetch_add(1, Ordering::SeqCst);
                metrics::counter!(PAUSES).increment(1);
                tracing::warn!(in_flight, bound, "output not acknowledged; fetching paused");
            }
        } else if paused {
            if let Err(error) = self.consumer.resume(&assignment) {
                tracing::warn!(%error, "cannot resume fetching");
            }
            tracing::info!("output acknowledged again; fetching resumed");
        }
        pause
    }

    /// Writes every owned partition's cumulative RED series to the metrics topic. Best effort: a lost write is
    /// superseded by the next one, since the series are cumulative.
    fn export_red_metrics(&self) {
        let now_ns = now_ms() as u64 * 1_000_000;
        let requests: Vec<ExportMetricsServiceRequest> = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state
                .partitions
                .iter()
                .filter(|(_, owned)| !owned.red.is_empty())
                .map(|(partition, owned)| owned.red.export(&self.instance, *partition, now_ns))
                .collect()
        };
        let max = (self.kafka.producer.max_message_bytes.get() as usize).saturating_sub(1024);
        for request in requests {
            for record in split(request, self.kafka.partitions, max).records {
                let record = Outgoing::contract(&self.kafka.topics.metrics, record, headers::ENCODING_OTLP_PROTO);
                let producer = self.producer.clone();
                tokio::spawn(async move {
                    if let Err((error, _)) = producer.send(record.record(), Duration::from_secs(5)).await {
                        tracing::warn!(%error, "RED metrics not written; the next interval supersedes them");
                    }
                });
            }
        }
    }

    fn on_settled(&mut self, settled: Settled) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owned) = state.partitions.get_mut(&settled.partition) {
            if owned.epoch == settled.epoch {
                owned.buffer.settle(&settled.offsets);
                owned.buffer.unsettled_output -= 1;
            }
        }
    }

    fn owns(&self, partition: i32) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).assigned.contains(&partition)
    }

    fn has_unsettled_output(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.partitions.values().any(|o| o.buffer.unsettled_output > 0)
    }

    fn advance_idle_clocks(&mut self) {
        let now = now_ms();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let owned_count = state.partitions.len();
        for owned in state.partitions.values_mut() {
            owned.buffer.follow_wall_clock(IDLE_AFTER, now);
        }
        drop(state);
        let share = owned_count as f64 / f64::from(self.kafka.partitions.max(1));
        self.policies.set_rate_share(share.clamp(0.0, 1.0));
    }

    fn commit(&self, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for (partition, owned) in state.partitions.iter_mut() {
                if let Some(offset) = owned.buffer.tracker.safe_offset() {
                    if owned.committed != Some(offset) {
                        let _ = tpl.add_partition_offset(&self.kafka.topics.spans, *partition, Offset::Offset(offset));
                        owned.committed = Some(offset);
                    }
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(error) = self.consumer.commit(&tpl, mode) {
                tracing::warn!(%error, "offset commit failed; will retry");
            }
        }
    }
}

/// The `tailgate.encoding` of decision records (`tailgate_proto::decisions`).
const DECISION_ENCODING: &str = "tailgate_decision_v1";

/// A record to write, owned by the task that writes it.
struct Outgoing {
    topic: String,
    partition: i32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: OwnedHeaders,
}

impl Outgoing {
    /// A record of the Kafka contract in `encoding`, with the contract's headers.
    fn contract(topic: &str, record: Record, encoding: &str) -> Outgoing {
        let headers = tailgate_kafka::contract_headers(encoding);
        Outgoing {
            topic: topic.to_owned(),
            partition: record.partition as i32,
            key: Some(record.key),
            value: record.value,
            headers,
        }
    }

    fn record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let record = FutureRecord::to(&self.topic)
            .partition(self.partition)
            .payload(self.value.as_slice())
            .headers(self.headers.clone());
        match &self.key {
            Some(key) => record.key(key.as_slice()),
            None => record,
        }
    }
}

/// The state of `partition`, created on its first record after an assignment.
fn owned<'a>(partitions: &'a mut HashMap<i32, Owned>, partition: i32, buckets_ms: &[f64]) -> &'a mut Owned {
    let owned = partitions.entry(partition).or_insert_with(|| Owned {
        epoch: EPOCH.fetch_add(1, Ordering::SeqCst),
        red: RedMetrics::new(buckets_ms, now_ms() as u64 * 1_000_000),
        buffer: PartitionBuffer::default(),
        committed: None,
    });
    owned.buffer.touch();
    owned
}

/// Reads the decisions recorded since `since_ms` on `partitions` of the decisions topic, up to its end.
fn load_decisions(
    kafka: &KafkaConfig,
    partitions: &[i32],
    since_ms: i64,
) -> Result<Vec<(TraceId, bool)>, rdkafka::error::KafkaError> {
    let topic = &kafka.topics.decisions;
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", "tailgate-sampler-decision-loader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut query = TopicPartitionList::new();
    for partition in partitions {
        query.add_partition_offset(topic, *partition, Offset::Offset(since_ms))?;
    }
    let starts = consumer.offsets_for_times(query, Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for element in starts.elements() {
        if let Offset::Offset(offset) = element.offset() {
            assignment.add_partition_offset(topic, element.partition(), Offset::Offset(offset))?;
        }
    }
    let mut loaded = Vec::new();
    if assignment.count() == 0 {
        return Ok(loaded);
    }
    consumer.assign(&assignment)?;
    let mut remaining = assignment.count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while remaining > 0 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let decision = message.payload().and_then(Decision::decode);
                let trace_id = message.key().and_then(|k| TraceId::try_from(k).ok());
                if let (Some(decision), Some(trace_id)) = (decision, trace_id) {
                    loaded.push((trace_id, decision.keep));
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => remaining -= 1,
            Some(Err(error)) => return Err(error),
            None => {}
        }
    }
    Ok(loaded)
}

/// The attribute naming the policy that kept a span's trace, as the Collector's `recordpolicy` gate writes it.
pub const POLICY_ATTRIBUTE: &str = "tailsampling.policy";

fn mark_policy(batches: &mut [ResourceSpans], policy: &str) {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    for span in batches.iter_mut().flat_map(|rs| &mut rs.scope_spans).flat_map(|ss| &mut ss.spans) {
        span.attributes.push(KeyValue {
            key: POLICY_ATTRIBUTE.to_owned(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(policy.to_owned())) }),
        });
    }
}

/// Records the consistent-probability threshold of a probabilistic keep in each span's `tracestate`.
fn mark_threshold(batches: &mut [ResourceSpans], percentage: f64) {
    let entry = format!("ot=th:{}", tracestate_threshold(percentage));
    for span in batches.iter_mut().flat_map(|rs| &mut rs.scope_spans).flat_map(|ss| &mut ss.spans) {
        if span.trace_state.is_empty() {
            span.trace_state = entry.clone();
        } else if !span.trace_state.split(',').any(|m| m.trim().starts_with("ot=")) {
            span.trace_state = format!("{entry},{}", span.trace_state);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
