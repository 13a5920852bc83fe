//! The sampler worker: a member of consumer group `tailgate-sampler` on the spans topic.
//!
//! Per assigned partition it buffers spans by trace, decides each trace `decision_wait` after its first span in
//! event time, writes kept traces to the sampled topic (same contract, same partition), and commits only offsets
//! below which every span's fate is settled: dropped, or kept and acknowledged by Kafka.
//!
//! Partitions come and go through the consumer shell (`tailgate_kafka::consumer`): a newly assigned partition is
//! consumed only once its recent decisions are loaded; a revoked one has its safe offset committed and its buffer
//! dropped, its undecided traces re-read by the next owner. Acknowledgements that arrive for a partition's earlier
//! ownership are ignored (each ownership has its own epoch).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tailgate_kafka::{
    config_drift, create_producer, ensure_topics, fit_to_topics, now_ms, Consumer, ConsumerSettings, Event,
    KafkaConfig, Partitions, ProducerSettings, TopicError,
};
use tailgate_proto::decisions::Decision;
use tailgate_proto::headers;
use tailgate_proto::wire::{Scanned, WireSignal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::annotate::Marks;
use crate::buffer::{EarlyDecision, EventTime, PartitionBuffer, PendingTrace, TraceId, TraceLimits};
use crate::decisions::{self, Decisions};
use crate::metrics::*;
use crate::output::{Decided, Kept, Output, Settled};
use crate::policy::{Policies, TraceView};
use crate::red::RedMetrics;
use crate::series_limit::SeriesLimit;
use crate::service_graph::ServiceGraph;
use crate::tenant::Tenant;
use crate::SamplerConfig;

/// How far ahead of this worker's wall clock a record's timestamp may be (clock differences between hosts). A
/// timestamp further ahead — another producer's clock, a client-set CreateTime — is taken as the partition's event
/// time as it stands, and counted: one record must not move a partition's event time, or every trace in it would be
/// due at once.
const MAX_CLOCK_AHEAD_MS: i64 = 1_000;
const TICK: Duration = Duration::from_millis(100);
/// A gap between ticks that means the process did not run.
const STALL: Duration = Duration::from_secs(2);
/// After a stall, how long until fetch statistics speak of fetches sent after it: two long-polls of an idle fetch
/// (`fetch.wait.max.ms`, 500 ms) and a statistics interval (1 s), with room.
const FETCH_ROUND: Duration = Duration::from_millis(2500);
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Decisions at least this recent are loaded when a partition is assigned (or ten decision waits, if longer).
const DECISION_LOOKBACK: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("Kafka client error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid sampler policies:\n{0}")]
    Policies(tailgate_config::Problems),
    /// The consumer cannot go on (see `Event::Fatal`).
    #[error("{0}")]
    Consumer(String),
}

/// What a worker keeps per owned partition.
pub(crate) struct PartitionState {
    /// Each tenant's RED series: written as that tenant's records.
    red: HashMap<Tenant, RedMetrics>,
    /// Each tenant's service graph edges.
    graph: HashMap<Tenant, ServiceGraph>,
    /// The partition's bounds on RED series and on edges, shared by its tenants (made on first use).
    red_limit: Option<SeriesLimit>,
    graph_limit: Option<SeriesLimit>,
    /// When this ownership began: the start of its cumulative RED series.
    red_start_ns: u64,
    buffer: PartitionBuffer,
}

/// Makes the state of newly assigned partitions — after loading their recent decisions, so late spans of traces
/// another worker decided keep their decision and kept traces are not emitted again.
struct Assigner {
    kafka: KafkaConfig,
    load: Load,
    /// Where the loaded decisions go: the worker's own cache, or in a resample the normal sampler's kept traces.
    decisions: Arc<Mutex<Decisions>>,
    stats: Arc<SamplerStats>,
}

/// Loaded decisions inserted into the cache per taking of its lock.
const INSERT_CHUNK: usize = 4096;

/// Which decisions a newly assigned partition loads.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// Every decision of the lookback before now: a group member taking over live traffic.
    Recent(Duration),
    /// The traces kept by decisions in `[since_ms, until_ms]`: a resample skips them, they were delivered.
    KeptIn { since_ms: i64, until_ms: i64 },
}

impl Partitions for Assigner {
    type State = PartitionState;

    fn open(&self, partitions: &[i32]) -> Vec<PartitionState> {
        let (since, until, only_kept) = match self.load {
            Load::Recent(lookback) => (now_ms() - lookback.as_millis() as i64, None, false),
            Load::KeptIn { since_ms, until_ms } => (since_ms, Some(until_ms), true),
        };
        tracing::info!(partitions = ?partitions, "loading recent decisions before consuming");
        // The new partitions' share of the cache: loading a whole cache's worth would evict the live decisions of
        // the partitions already owned, whose late spans would then be decided afresh.
        let cache = self.decisions.lock().unwrap_or_else(|e| e.into_inner()).capacity();
        let owned = self.stats.owned_partitions.load(Ordering::SeqCst) as usize;
        let capacity = cache * partitions.len() / (owned + partitions.len()).max(1);
        let window = decisions::Window { since_ms: since, until_ms: until, only_kept, capacity };
        let loaded = decisions::load(&self.kafka, partitions, window);
        let count = loaded.len();
        self.stats.decisions_loaded.fetch_add(count as u64, Ordering::SeqCst);
        // In chunks, the lock given back between them: records of the partitions already owned are handled
        // meanwhile, not stalled behind a million inserts.
        for chunk in loaded.chunks(INSERT_CHUNK) {
            let mut decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
            for (trace_id, keep) in chunk {
                decisions.insert(*trace_id, *keep);
            }
        }
        tracing::info!(partitions = ?partitions, decisions = count, "recent decisions loaded");
        let start_ns = now_ms() as u64 * 1_000_000;
        self.stats.owned_partitions.fetch_add(partitions.len() as u64, Ordering::SeqCst);
        partitions
            .iter()
            .map(|_| PartitionState {
                red: HashMap::new(),
                graph: HashMap::new(),
                red_limit: None,
                graph_limit: None,
                buffer: PartitionBuffer::default(),
                red_start_ns: start_ns,
            })
            .collect()
    }

    fn closed(&self, partitions: Vec<(i32, PartitionState)>, lost: bool) {
        self.stats.owned_partitions.fetch_sub(partitions.len() as u64, Ordering::SeqCst);
        self.stats.revocations.fetch_add(1, Ordering::SeqCst);
        metrics::counter!(REVOCATIONS, "lost" => if lost { "true" } else { "false" }).increment(1);
    }
}

/// How far back (record time) decisions are loaded when a partition is assigned: at least ten decision waits.
pub(crate) fn decision_lookback(config: &SamplerConfig) -> Duration {
    DECISION_LOOKBACK.max(config.decision_wait.get() * 10)
}

/// A time range of the spans topic re-decided by `tailgate resample` (record time, Unix milliseconds), instead of
/// the group's live traffic: read through a throw-away consumer from `from_ms - decision_wait` to
/// `to_ms + decision_wait`, so the traces that began in the range are read whole and those that began before it are
/// recognised and left out; decided in event time like the live sampler; nothing committed, no decision recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The keeping policy recorded for a trace a dry run kept though its policies would have dropped it.
const DRY_RUN_POLICY: &str = "dry_run";

/// The next configuration sent on `updates`; never, if there is no sender (any more).
async fn next_update(updates: &mut Option<tokio::sync::watch::Receiver<SamplerConfig>>) -> SamplerConfig {
    if let Some(receiver) = updates {
        if receiver.changed().await.is_ok() {
            return receiver.borrow_and_update().clone();
        }
    }
    std::future::pending().await
}

/// Why a trace is decided now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Its `decision_wait` (or `decision_wait_after_root`) passed in event time.
    Wait,
    Early(EarlyDecision),
}

pub struct Sampler {
    consumer: Consumer<Assigner>,
    output: Output,
    settled_rx: mpsc::UnboundedReceiver<Settled>,
    decisions: Arc<Mutex<Decisions>>,
    policies: Policies,
    /// Tenants with policies of their own.
    tenant_policies: HashMap<Tenant, Policies>,
    config: SamplerConfig,
    kafka: KafkaConfig,
    stats: Arc<SamplerStats>,
    /// Identifies this worker's RED series.
    instance: String,
    /// When the last tick ran, and from when fetch statistics are trusted again (after a stall).
    last_tick: Instant,
    trust_fetch_from: Instant,
    /// Resampling this range instead of following the group.
    window: Option<Window>,
    /// In a resample: the traces the normal sampler kept (and delivered) in the range, skipped.
    prior: Arc<Mutex<Decisions>>,
    /// In a resample: the partitions still being read.
    reading: std::collections::HashSet<i32>,
    /// Resample: where each partition's range ends.
    range_ends: tailgate_kafka::Ends,
    /// New policies, from a configuration reload.
    updates: Option<tokio::sync::watch::Receiver<SamplerConfig>>,
    /// The running policies' generation: 1, and one more per reload taken.
    generation: u64,
}

impl Sampler {
    /// A member of consumer group `group_id`, sampling live traffic.
    pub async fn build(config: &SamplerConfig, kafka: &KafkaConfig, group_id: &str) -> Result<Sampler, SamplerError> {
        Sampler::build_with(config, kafka, Err(group_id)).await
    }

    /// A resampler of `window` (see [`Window`]), writing what its policies keep to `kafka.topics.sampled_spans`.
    /// RED metrics are not computed again; the stats count records, traces and spans for progress.
    pub async fn resample(
        config: &SamplerConfig,
        kafka: &KafkaConfig,
        window: Window,
    ) -> Result<Sampler, SamplerError> {
        let mut config = config.clone();
        config.red_metrics.enabled = false;
        config.service_graph.enabled = false;
        Sampler::build_with(&config, kafka, Ok(window)).await
    }

    async fn build_with(
        config: &SamplerConfig,
        kafka: &KafkaConfig,
        mode: Result<Window, &str>,
    ) -> Result<Sampler, SamplerError> {
        let policies = Policies::build(&config.policies).map_err(SamplerError::Policies)?;
        let mut tenant_policies = HashMap::new();
        for (tenant, own) in &config.tenants {
            let built = Policies::build(&own.policies).map_err(SamplerError::Policies)?;
            let tenant = crate::tenant::intern(Some(tenant)).map_err(|message| {
                let mut problems = tailgate_config::Problems::default();
                problems.push(format!("sampler.tenants.{tenant}"), message);
                SamplerError::Policies(problems)
            })?;
            tenant_policies.insert(tenant, built);
        }
        describe();
        let none: &[(&str, &str)] = &[];
        let dlq = headers::dead_letter_topic(&kafka.topics.spans);
        // Deleted after twice the lookback: only the lookback's decisions are ever loaded. Not compacted: a record
        // holds a tick's decisions of many traces, so there is no per-trace key to compact by.
        let lookback = decision_lookback(config);
        let retention_ms = (lookback * 2).as_millis().to_string();
        let decisions_config: &[(&str, &str)] =
            &[("cleanup.policy", "delete"), ("retention.ms", retention_ms.as_str())];
        ensure_topics(
            kafka,
            &[
                (&kafka.topics.spans, none),
                (&kafka.topics.metrics, none),
                (&kafka.topics.sampled_spans, none),
                (&kafka.topics.decisions, decisions_config),
                (&dlq, none),
            ],
            Duration::from_secs(30),
        )
        .await?;
        // A topic made by an earlier version (compacted) or by hand grows forever or loses decisions early.
        match config_drift(kafka, &kafka.topics.decisions, decisions_config, Duration::from_secs(10)).await {
            Ok(drift) => {
                for drift in drift {
                    tracing::warn!(
                        topic = %kafka.topics.decisions, %drift,
                        "decisions topic misconfigured; fix with: kafka-configs.sh --alter --entity-type topics \
                         --entity-name {} --add-config '{}=[{}]'",
                        kafka.topics.decisions, drift.key, drift.expected
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, topic = %kafka.topics.decisions, "cannot check the decisions topic's settings")
            }
        }
        let stats = Arc::new(SamplerStats::default());
        let decisions = Arc::new(Mutex::new(Decisions::new(config.decision_cache_bytes.get())));
        let prior = Arc::new(Mutex::new(Decisions::new(config.decision_cache_bytes.get())));
        let wait_ms = config.decision_wait.get().as_millis() as i64;
        let (load, into, group_id) = match mode {
            Err(group_id) => (Load::Recent(lookback), Arc::clone(&decisions), group_id.to_owned()),
            Ok(window) => (
                // The normal sampler decided the range's traces decision_wait after their first span, or later.
                Load::KeptIn {
                    since_ms: window.from_ms,
                    until_ms: window.to_ms.saturating_add(lookback.as_millis() as i64),
                },
                Arc::clone(&prior),
                format!("tailgate-resample-{}", now_ms()),
            ),
        };
        let assigner = Assigner { kafka: kafka.clone(), load, decisions: into, stats: Arc::clone(&stats) };
        let settings = ConsumerSettings {
            group_id,
            client_id: "tailgate-sampler".to_owned(),
            partition_eof: true,
            prefetch_kbytes: None,
            lag_metric: CONSUMER_LAG,
            lag_labels: Vec::new(),
            start: tailgate_kafka::Start::Committed,
        };
        let mut reading = std::collections::HashSet::new();
        let mut range_ends = tailgate_kafka::Ends::default();
        let consumer = match mode {
            Err(_) => Consumer::subscribe(kafka, &settings, &kafka.topics.spans, assigner)?,
            Ok(window) => {
                let range = tailgate_kafka::time_range(
                    kafka,
                    &kafka.topics.spans,
                    window.from_ms.saturating_sub(wait_ms),
                    Some(window.to_ms.saturating_add(wait_ms)),
                )
                .await?;
                stats.records_expected.store(range.records, Ordering::SeqCst);
                reading.extend(range.assignment.elements().iter().map(|e| e.partition()));
                range_ends = range.ends;
                Consumer::assign(kafka, &settings, &kafka.topics.spans, &range.assignment, assigner)?
            }
        };
        let written = [&kafka.topics.sampled_spans, &kafka.topics.decisions, &kafka.topics.metrics, &dlq];
        let writer = fit_to_topics(kafka, &written.map(String::as_str), Duration::from_secs(10)).await;
        let producer: FutureProducer = create_producer(
            &writer,
            &ProducerSettings { queue_max_bytes: None, client_id: "tailgate-sampler".to_owned() },
        )?;
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        let output = Output::new(producer, &writer, settled_tx, Arc::clone(&stats));
        let instance = format!("{}-{}", std::process::id(), now_ms());
        Ok(Sampler {
            consumer,
            output,
            settled_rx,
            decisions,
            policies,
            tenant_policies,
            config: config.clone(),
            kafka: kafka.clone(),
            stats,
            instance,
            last_tick: Instant::now(),
            trust_fetch_from: Instant::now(),
            window: mode.ok(),
            prior,
            reading,
            range_ends,
            updates: None,
            generation: 1,
        })
    }

    /// Takes new policies from `updates` while running: `policies`, `tenants`, `dry_run` and `record_policy`
    /// (validated by the sender). Traces decided stand; traces still buffered are decided by the new policies. The
    /// generation is `tailgate_sampler_config_generation`.
    pub fn reload_from(&mut self, updates: tokio::sync::watch::Receiver<SamplerConfig>) {
        self.updates = Some(updates);
    }

    fn reload(&mut self, new: SamplerConfig) {
        let built = Policies::build(&new.policies).and_then(|policies| {
            let mut tenants = HashMap::new();
            for (tenant, own) in &new.tenants {
                let Ok(id) = crate::tenant::intern(Some(tenant)) else { continue };
                tenants.insert(id, Policies::build(&own.policies)?);
            }
            Ok((policies, tenants))
        });
        match built {
            Ok((policies, tenants)) => {
                self.policies = policies;
                self.tenant_policies = tenants;
                self.config.policies = new.policies;
                self.config.tenants = new.tenants;
                self.config.dry_run = new.dry_run;
                self.config.record_policy = new.record_policy;
                self.generation += 1;
                metrics::gauge!(CONFIG_GENERATION).set(self.generation as f64);
                tracing::info!(generation = self.generation, dry_run = self.config.dry_run,
                    policies = ?self.config.policies.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
                    "sampler policies reloaded");
            }
            Err(problems) => {
                metrics::counter!(CONFIG_RELOAD_FAILURES).increment(1);
                tracing::error!(%problems, "new sampler policies refused; the running ones stay");
            }
        }
    }

    pub fn stats(&self) -> Arc<SamplerStats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `shutdown`, then, within `grace`, lets output in flight finish, commits what is settled and
    /// leaves the group. Undecided traces stay uncommitted: the next owner re-reads them.
    pub async fn run(mut self, shutdown: CancellationToken, grace: Duration) -> Result<(), SamplerError> {
        let mut updates = self.updates.take();
        metrics::gauge!(CONFIG_GENERATION).set(self.generation as f64);
        let mut tick = tokio::time::interval(TICK);
        let mut last_commit = Instant::now();
        let mut last_red = Instant::now();
        let mut paused = false;
        let mut fatal = None;
        tracing::info!(topic = %self.kafka.topics.spans, output = %self.kafka.topics.sampled_spans, "sampler consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.consumer.recv() => match event {
                    Some(Event::Record { epoch, message }) => {
                        self.on_message(epoch, message);
                        paused = self.apply_backpressure(paused);
                    }
                    // A revoked partition's state went with its ownership.
                    Some(Event::Revoked { .. }) => {}
                    Some(Event::Fatal { error }) => {
                        fatal = Some(SamplerError::Consumer(error));
                        break;
                    }
                    Some(Event::End { partition, epoch }) => {
                        if self.window.is_some() {
                            // A resample's range ends at the partition's end when it gets there.
                            self.finish(partition);
                        } else if let Some(owned) = self.partitions().get_mut(partition, epoch) {
                            owned.state.buffer.reached_end();
                        }
                    }
                    None => break,
                },
                Some(settled) = self.settled_rx.recv() => self.on_settled(settled),
                new = next_update(&mut updates) => self.reload(new),
                _ = tick.tick() => {
                    paused = self.apply_backpressure(paused);
                    if self.window.is_none() {
                        self.advance_idle_clocks();
                    }
                    self.decide_due(None);
                    if self.window.is_none() && last_commit.elapsed() >= COMMIT_INTERVAL {
                        self.consumer.commit();
                        last_commit = Instant::now();
                    }
                    let derived = self.config.red_metrics.enabled || self.config.service_graph.enabled;
                    if derived && last_red.elapsed() >= self.config.red_metrics.interval.get() {
                        self.export_red_metrics();
                        last_red = Instant::now();
                    }
                }
            }
            if self.window.is_some() && self.resampled() {
                self.stats.completed.store(true, Ordering::SeqCst);
                break;
            }
        }
        if self.window.is_some() {
            // A resample's group is thrown away: nothing to commit; its output was all acknowledged, or it was
            // stopped and says so (`completed` stays false).
            self.output.abandon();
            drop(self.consumer);
            tracing::info!("resample stopped");
            return fatal.map_or(Ok(()), Err);
        }
        // Half the grace for output in flight, the rest to commit and leave the group.
        let deadline = tokio::time::Instant::now() + grace / 2;
        while self.has_unsettled_output() {
            match tokio::time::timeout_at(deadline, self.settled_rx.recv()).await {
                Ok(Some(settled)) => self.on_settled(settled),
                _ => break,
            }
        }
        self.output.abandon();
        self.consumer.close(grace / 2).await;
        tracing::info!("sampler stopped");
        fatal.map_or(Ok(()), Err)
    }

    /// A resample's partition is read to the end of its range: stop fetching it and decide everything it buffered.
    fn finish(&mut self, partition: i32) {
        if !self.reading.remove(&partition) {
            return;
        }
        self.consumer.pause(Some(&[partition]));
        // Every trace it buffered is due now (decide_due), nothing later of the range is to come; its clock stays
        // the event time, which rate-limiting policies take as now.
        tracing::debug!(partition, "resample: partition read to the end of the range");
        self.decide_due(Some(partition));
    }

    /// Whether a resample is done: every partition read to the end of the range, every trace decided, every kept
    /// trace acknowledged by Kafka.
    fn resampled(&self) -> bool {
        self.reading.is_empty()
            && self
                .partitions()
                .iter()
                .all(|(_, o)| o.state.buffer.traces.is_empty() && o.state.buffer.unsettled_output == 0)
    }

    fn partitions(&self) -> MutexGuard<'_, tailgate_kafka::Ownership<PartitionState>> {
        self.consumer.ownership()
    }

    fn on_message(&mut self, epoch: u64, message: OwnedMessage) {
        let (partition, offset) = (message.partition(), message.offset());
        if let Some(window) = self.window {
            if !self.reading.contains(&partition) {
                return;
            }
            let wait_ms = self.config.decision_wait.get().as_millis() as i64;
            let to = window.to_ms.saturating_add(wait_ms);
            let time = message.timestamp().to_millis().unwrap_or(0);
            match self.range_ends.place(to, partition, offset, time) {
                tailgate_kafka::Place::End => {
                    self.finish(partition);
                    return;
                }
                // Stamped after the range (a clock ahead, or past it on the way to the end): skipped.
                tailgate_kafka::Place::After => return,
                tailgate_kafka::Place::In => {}
            }
            self.stats.records_read.fetch_add(1, Ordering::Relaxed);
        }
        let clock_ms = match self.partitions().get_mut(partition, epoch) {
            Some(owned) => {
                // Handled from here, whatever becomes of it (buffered, dead-lettered).
                owned.state.buffer.handled(offset);
                owned.state.buffer.clock_ms
            }
            None => return,
        };
        let timestamp = self.event_time(message.timestamp().to_millis(), clock_ms);
        let payload = message.payload().unwrap_or_default();
        // Scanned on its wire format, refused where prost would refuse it; its spans are never decoded to be
        // buffered.
        let scanned = tailgate_kafka::contract::readable(&message)
            .map_err(|e| ("unknown_contract", e))
            .and_then(|()| crate::tenant::of(&message).map_err(|e| ("invalid_tenant", e)))
            .and_then(|tenant| {
                let request = WireSignal::Traces.scan(payload).map_err(|e| ("undecodable", e.to_string()))?;
                Ok((tenant, request))
            });
        match scanned {
            Ok((tenant, request)) => {
                self.on_record(partition, epoch, offset, timestamp, tenant, &request);
                self.decide_due(Some(partition));
            }
            Err((reason, error)) => {
                metrics::counter!(UNDECODABLE, "reason" => reason).increment(1);
                if self.window.is_some() {
                    // The live sampler dead-lettered it already.
                    tracing::warn!(partition, offset, %error, reason, "unreadable record skipped");
                    return;
                }
                tracing::warn!(partition, offset, %error, reason, "unreadable record sent to the dead-letter topic");
                // Its offset is held until Kafka has the copy, so it is never skipped silently.
                if let Some(owned) = self.partitions().get_mut(partition, epoch) {
                    owned.tracker.read(offset, 1);
                    owned.state.buffer.unsettled_output += 1;
                }
                let settled = Settled { partition, epoch, offsets: vec![offset] };
                let key = message.key().map(<[u8]>::to_vec);
                self.output.dead_letter(settled, key, payload.to_vec(), reason, &error);
            }
        }
    }

    /// A record's event time: its timestamp, unless that is missing or implausibly far ahead of the wall clock;
    /// then its spans take the partition's event time as it stands (`clock_ms`), and the record does not move the
    /// clock. Not the wall clock: while a backlog is read the partition's event time is behind it, and jumping to it
    /// would make every trace read so far due at once, before its later spans are read. Before the partition's first
    /// record its event time is unknown: the spans take the wall clock (decided late, never early), the clock
    /// still does not move.
    fn event_time(&self, timestamp: Option<i64>, clock_ms: i64) -> EventTime {
        let now = now_ms();
        let current = if clock_ms > 0 { clock_ms } else { now };
        match timestamp {
            Some(timestamp) if timestamp > now + MAX_CLOCK_AHEAD_MS => {
                self.stats.clamped_timestamps.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(CLAMPED_TIMESTAMPS).increment(1);
                EventTime { ms: current, moves_clock: false }
            }
            Some(timestamp) if timestamp > 0 => EventTime::from(timestamp),
            _ => EventTime { ms: current, moves_clock: false },
        }
    }

    fn on_record(
        &mut self,
        partition: i32,
        epoch: u64,
        offset: i64,
        timestamp: EventTime,
        tenant: Tenant,
        request: &Scanned<'_>,
    ) {
        let limits = TraceLimits {
            max_spans: self.config.max_spans_per_trace,
            max_bytes: self.config.max_trace_bytes.get() as usize,
        };
        let late_kept = {
            let decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
            let mut partitions = self.consumer.ownership();
            let Some(owned) = partitions.get_mut(partition, epoch) else { return };
            owned.state.buffer.behind();
            if self.config.red_metrics.enabled {
                let red_config = &self.config.red_metrics;
                let start_ns = owned.state.red_start_ns;
                let limit = &mut owned.state.red_limit;
                let red = owned.state.red.entry(tenant).or_insert_with(|| {
                    let limit = limit.get_or_insert_with(|| SeriesLimit::new(red_config.max_series_per_partition));
                    RedMetrics::sharing(&red_config.histogram_buckets_ms, start_ns, limit.clone())
                });
                let overflowed = red.record(request);
                if overflowed > 0 {
                    metrics::counter!(RED_OVERFLOW_SPANS).increment(overflowed);
                }
            }
            // In a resample, a trace the normal sampler kept was delivered already: its spans are left out.
            let prior = self.prior.lock().unwrap_or_else(|e| e.into_inner());
            let already_kept = std::cell::Cell::new(0u64);
            let added = owned.state.buffer.add_record(offset, timestamp, tenant, request, limits, |id| {
                decisions.get(id).or_else(|| {
                    let kept = prior.get(id) == Some(true);
                    kept.then(|| already_kept.set(already_kept.get() + 1)).map(|()| false)
                })
            });
            self.stats.already_kept_spans.fetch_add(already_kept.get(), Ordering::Relaxed);
            owned.tracker.read(offset, added.units);
            if added.invalid_trace_id > 0 {
                tracing::warn!(
                    partition,
                    offset,
                    spans = added.invalid_trace_id,
                    "spans without a 16-byte trace ID left out"
                );
                metrics::counter!(INVALID_SPANS, "reason" => "invalid_trace_id")
                    .increment(added.invalid_trace_id as u64);
                self.stats.invalid_spans.fetch_add(added.invalid_trace_id as u64, Ordering::Relaxed);
            }
            if added.late_dropped > 0 {
                metrics::counter!(LATE_SPANS, "decision" => "dropped").increment(added.late_dropped as u64);
            }
            if added.late_kept.is_empty() {
                return;
            }
            metrics::counter!(LATE_SPANS, "decision" => "kept").increment(added.late_kept_spans as u64);
            self.stats.spans_kept.fetch_add(added.late_kept_spans as u64, Ordering::Relaxed);
            owned.state.buffer.unsettled_output += 1;
            added.late_kept
        };
        let settled = Settled { partition, epoch, offsets: vec![offset] };
        let kept = vec![Kept { spans: late_kept, trace_id: None, offset }];
        self.output.emit(Decided { settled, tenant, kept, decisions: Vec::new() });
    }

    /// Decides the traces that are due (`decision_wait` passed in event time, for `only` or every partition), that
    /// reached a per-trace limit, or — oldest first — that must go to bring the buffer under `max_buffered_bytes`.
    fn decide_due(&mut self, only: Option<i32>) {
        let wait_ms = self.config.decision_wait.get().as_millis() as i64;
        let after_root = self.config.decision_wait_after_root.map(|d| d.get().as_millis() as i64);
        let max_buffered = self.config.max_buffered_bytes.get() as usize;
        // What this tick decides, per partition and tenant: written together.
        let mut to_emit: BTreeMap<(i32, Tenant), Decided> = BTreeMap::new();
        {
            let mut decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
            let mut partitions = self.consumer.ownership();
            let mut ready: Vec<(i32, TraceId, PendingTrace, Due)> = Vec::new();
            for (partition, owned) in partitions.iter_mut() {
                let buffer = &mut owned.state.buffer;
                ready.extend(
                    buffer.take_over_limit().into_iter().map(|(id, t, why)| (partition, id, t, Due::Early(why))),
                );
                if only.is_none_or(|p| p == partition) {
                    let finished = self.window.is_some() && !self.reading.contains(&partition);
                    let due = match finished {
                        true => buffer.due(i64::MIN / 4, None),
                        false => buffer.due(wait_ms, after_root),
                    };
                    ready.extend(due.into_iter().map(|(id, t)| (partition, id, t, Due::Wait)));
                }
            }
            let mut total: usize = partitions.iter().map(|(_, o)| o.state.buffer.buffered_bytes()).sum();
            while total > max_buffered {
                let Some((partition, owned)) =
                    partitions.iter_mut().max_by_key(|(_, o)| o.state.buffer.buffered_bytes())
                else {
                    break;
                };
                let Some((id, trace)) = owned.state.buffer.take_oldest() else { break };
                // Its spans' bytes; the resources and scopes it shares go with the last trace holding them.
                total -= trace.bytes as usize;
                ready.push((partition, id, trace, Due::Early(EarlyDecision::Memory)));
            }
            metrics::gauge!(BUFFERED_BYTES).set(total as f64);
            metrics::gauge!(BUFFERED_TRACES)
                .set(partitions.iter().map(|(_, o)| o.state.buffer.traces.len()).sum::<usize>() as f64);
            self.stats.max_buffered_bytes.fetch_max(total as u64, Ordering::SeqCst);

            for (partition, trace_id, trace, due) in ready {
                let Some(owned) = partitions.current_mut(partition) else { continue };
                if let Due::Early(reason) = due {
                    metrics::counter!(EARLY_DECISIONS, "reason" => reason.as_str()).increment(1);
                }
                let clock = owned.state.buffer.clock_ms;
                metrics::histogram!(DECISION_DELAY).record((clock - trace.first_seen_ms).max(0) as f64 / 1000.0);
                // Decided on the buffered bytes; a kept trace is written from them, marked, never decoded.
                let policies = match self.tenant_policies.get_mut(&trace_id.tenant) {
                    Some(own) => own,
                    None => &mut self.policies,
                };
                if let Some(window) = self.window {
                    if trace.first_seen_ms < window.from_ms || trace.first_seen_ms > window.to_ms {
                        // Began outside the range (read only to tell it apart): not resampled, and its later spans
                        // are not either.
                        decisions.insert(trace_id, false);
                        batch(&mut to_emit, owned, partition, trace_id.tenant).settled.offsets.extend(trace.offsets);
                        continue;
                    }
                }
                if self.config.service_graph.enabled {
                    let (graph_config, start_ns) = (&self.config.service_graph, owned.state.red_start_ns);
                    let limit = &mut owned.state.graph_limit;
                    let graph = owned.state.graph.entry(trace_id.tenant).or_insert_with(|| {
                        let limit = limit.get_or_insert_with(|| SeriesLimit::new(graph_config.max_edges_per_partition));
                        ServiceGraph::sharing(graph_config, start_ns, limit.clone())
                    });
                    let overflowed = graph.record(&trace);
                    if overflowed > 0 {
                        metrics::counter!(SERVICE_GRAPH_OVERFLOW).increment(overflowed);
                    }
                }
                let verdict = policies.decide(&TraceView::new(&trace_id, &trace), clock);
                // A dry run keeps every trace and says what the policies would have done.
                let dry_run = self.config.dry_run;
                if dry_run {
                    let would = if verdict.keep { "keep" } else { "drop" };
                    let policy = verdict.policy.clone().unwrap_or_default();
                    metrics::counter!(DRY_RUN_TRACES, "would" => would, "policy" => policy).increment(1);
                }
                let keep = verdict.keep || dry_run;
                decisions.insert(trace_id, keep);
                if keep {
                    // Exemplars only ever open a trace that was kept.
                    if let Some(red) = owned.state.red.get_mut(&trace_id.tenant) {
                        red.exemplify(&trace);
                    }
                }
                self.stats.traces_decided.fetch_add(1, Ordering::Relaxed);
                if keep {
                    self.stats.traces_kept.fetch_add(1, Ordering::Relaxed);
                    self.stats.spans_kept.fetch_add(trace.spans as u64, Ordering::Relaxed);
                }
                let outcome = if keep { "kept" } else { "dropped" };
                let keeper = match (&verdict.policy, dry_run) {
                    (Some(policy), _) => policy.clone(),
                    (None, true) => DRY_RUN_POLICY.to_owned(),
                    (None, false) => String::new(),
                };
                metrics::counter!(TRACES, "decision" => outcome, "policy" => keeper.clone()).increment(1);
                metrics::counter!(SPANS, "decision" => outcome).increment(trace.spans as u64);
                let output = keep.then(|| {
                    let marks = if dry_run {
                        Marks::dry_run(verdict.keep, verdict.policy.as_deref())
                    } else {
                        Marks::new(self.config.record_policy.then_some(keeper.as_str()), verdict.probabilistic)
                    };
                    trace.encode(|span, out| marks.write_span(span, out))
                });
                let decided = batch(&mut to_emit, owned, partition, trace_id.tenant);
                let offset = trace.offsets.first().copied().unwrap_or_default();
                decided.kept.extend(output.map(|spans| Kept { spans, trace_id: Some(trace_id), offset }));
                decided.settled.offsets.extend(trace.offsets);
                // A resample records no decision: the live sampler's stand.
                if self.window.is_none() {
                    let policy = if keep { keeper } else { String::new() };
                    decided.decisions.push((trace_id, Decision { keep, policy }));
                }
            }
        }
        for decided in to_emit.into_values() {
            self.output.emit(decided);
        }
    }

    /// Pauses fetching while more than `max_output_bytes_in_flight` of output awaits Kafka's acknowledgement, and
    /// resumes once half of it is acknowledged. Returns whether fetching is now paused.
    fn apply_backpressure(&self, paused: bool) -> bool {
        let in_flight = self.stats.output_bytes_in_flight.load(Ordering::SeqCst);
        let bound = self.config.max_output_bytes_in_flight.get();
        let pause = if paused { in_flight > bound / 2 } else { in_flight > bound };
        if pause {
            // Also on every later call: partitions assigned while paused must be paused too. Records may wait
            // unfetched meanwhile, so no partition counts as caught up until it reports its end again.
            self.consumer.pause(None);
            for (_, owned) in self.partitions().iter_mut() {
                owned.state.buffer.behind();
            }
            if !paused {
                self.stats.pauses.fetch_add(1, Ordering::SeqCst);
                metrics::counter!(PAUSES).increment(1);
                tracing::warn!(in_flight, bound, "output not acknowledged; fetching paused");
            }
        } else if paused {
            // A resample's finished partitions stay paused.
            match self.window {
                None => self.consumer.resume(None),
                Some(_) => {
                    let reading: Vec<i32> = self.reading.iter().copied().collect();
                    self.consumer.resume(Some(&reading));
                }
            }
            tracing::info!("output acknowledged again; fetching resumed");
        }
        pause
    }

    /// Writes every owned partition's cumulative RED series and service graph edges to the metrics topic.
    fn export_red_metrics(&self) {
        let now_ns = now_ms() as u64 * 1_000_000;
        let requests = self
            .partitions()
            .iter_mut()
            .flat_map(|(partition, owned)| {
                let red = owned
                    .state
                    .red
                    .iter_mut()
                    .filter(|(_, red)| !red.is_empty())
                    .map(move |(tenant, red)| (*tenant, red.export(&self.instance, partition, now_ns)));
                let graph = owned
                    .state
                    .graph
                    .iter()
                    .filter(|(_, graph)| !graph.is_empty())
                    .map(move |(tenant, graph)| (*tenant, graph.export(&self.instance, partition, now_ns)));
                red.chain(graph).collect::<Vec<_>>()
            })
            .collect();
        self.output.red_metrics(requests);
    }

    fn on_settled(&mut self, settled: Settled) {
        let mut partitions = self.partitions();
        if let Some(owned) = partitions.get_mut(settled.partition, settled.epoch) {
            for offset in &settled.offsets {
                owned.tracker.release(*offset);
            }
            owned.state.buffer.unsettled_output -= 1;
        }
    }

    fn has_unsettled_output(&self) -> bool {
        self.partitions().iter().any(|(_, o)| o.state.buffer.unsettled_output > 0)
    }

    fn advance_idle_clocks(&mut self) {
        let now = now_ms();
        // Ticks come every 100 ms; a gap of two seconds means this process did not run (frozen, or starved). What
        // the fetcher said until a fetch round after that is stale: a response the broker gave during the freeze
        // is read only after it, and knows nothing of what was written meanwhile.
        let tick = Instant::now();
        if tick.duration_since(self.last_tick) > STALL {
            self.trust_fetch_from = tick + FETCH_ROUND;
        }
        self.last_tick = tick;
        let since = self.trust_fetch_from;
        let owned_count = {
            let mut partitions = self.partitions();
            for (_, owned) in partitions.iter_mut() {
                // At the end: every record below the high watermark the fetch last reported was handled here.
                // Per partition, so one busy partition does not hold up a quiet one.
                let handled = owned.state.buffer.next_offset;
                let fetching_at_end = self
                    .consumer
                    .fresh_high_watermark(owned, since)
                    .is_some_and(|end| handled.is_some_and(|next| next >= end));
                owned.state.buffer.follow_wall_clock(now, fetching_at_end);
            }
            partitions.len()
        };
        let share = owned_count as f64 / f64::from(self.kafka.partitions.max(1));
        self.policies.set_rate_share(share.clamp(0.0, 1.0));
        for policies in self.tenant_policies.values_mut() {
            policies.set_rate_share(share.clamp(0.0, 1.0));
        }
    }
}

/// The output of `partition` for `tenant` in this decision tick, begun (and counted as unsettled) on first use.
fn batch<'b>(
    to_emit: &'b mut BTreeMap<(i32, Tenant), Decided>,
    owned: &mut tailgate_kafka::ownership::Partition<PartitionState>,
    partition: i32,
    tenant: Tenant,
) -> &'b mut Decided {
    to_emit.entry((partition, tenant)).or_insert_with(|| {
        owned.state.buffer.unsettled_output += 1;
        let settled = Settled { partition, epoch: owned.epoch, offsets: Vec::new() };
        Decided { settled, tenant, kept: Vec::new(), decisions: Vec::new() }
    })
}
