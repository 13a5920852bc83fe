//! The delivery loop shared by every exporter.
//!
//! Records are read in order per partition and added to an open batch; a batch is sealed (encoded) when full or
//! old enough, and sealed batches go to the backend one request at a time, so a series' or stream's samples reach
//! it in order. Each record holds one unit of work in its partition's [`OffsetTracker`] until its batch was
//! accepted, or refused and copied to the dead-letter topic; commits never pass a record still holding work. While
//! the backend is down the request is retried forever, sealed batches pile up to a bound, and fetching pauses:
//! memory stays bounded and the backlog waits in Kafka.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tailgate_kafka::{client_config, create_producer, ensure_topics, KafkaConfig, OffsetTracker, ProducerSettings};
use tailgate_proto::headers;
use tokio_util::sync::CancellationToken;

use crate::config::{Delivery, Retry};
use crate::delivery::{deliver, Delivered, Health, Transport};
use crate::metrics as m;
use crate::{Backend, Exporter, ExporterError};

const TICK: Duration = Duration::from_millis(50);
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Sealed batches waiting behind the one in flight before fetching pauses.
const MAX_SEALED: usize = 2;

/// Where an exporter's records come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Its consumer group, from the committed offsets: the normal mode.
    Group,
    /// A time range (Unix milliseconds of record time), read through a throw-away consumer group and never
    /// committed: `tailgate replay`. Each partition ends at its first record after `to_ms`, or at its end.
    Range { from_ms: i64, to_ms: Option<i64> },
}

/// Counters a test, an operator or the replay progress line can read while the exporter runs.
#[derive(Debug, Default)]
pub struct ExporterStats {
    pub records_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub records_delivered: AtomicU64,
    pub records_dead_lettered: AtomicU64,
    pub items_delivered: AtomicU64,
    pub items_rejected: AtomicU64,
    /// Records of the range, estimated at start from the partitions' offsets (replay only).
    pub records_expected: AtomicU64,
    pub pauses: AtomicU64,
}

impl ExporterStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// One owned partition.
struct Owned {
    epoch: u64,
    tracker: OffsetTracker,
    /// Record time (ms) of every record still holding work, for the lag in seconds.
    times: BTreeMap<i64, i64>,
    committed: Option<i64>,
}

#[derive(Default)]
struct State {
    owned: HashMap<i32, Owned>,
    /// Partitions this worker owns now; records of others (fetched before a revoke) are skipped.
    assigned: HashSet<i32>,
}

static EPOCH: AtomicU64 = AtomicU64::new(1);

impl State {
    fn owned(&mut self, partition: i32) -> &mut Owned {
        self.owned.entry(partition).or_insert_with(|| Owned {
            epoch: EPOCH.fetch_add(1, Ordering::SeqCst),
            tracker: OffsetTracker::new(),
            times: BTreeMap::new(),
            committed: None,
        })
    }
}

struct Context {
    exporter: &'static str,
    topic: String,
    state: Arc<Mutex<State>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                metrics::gauge!(m::LAG_RECORDS, "exporter" => self.exporter, "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.assigned.extend(assigned.elements().iter().map(|e| e.partition()));
            tracing::info!(exporter = self.exporter, partitions = assigned.count(), "partitions assigned");
        }
    }

    /// Commits what is settled of the revoked partitions and forgets them; their unsettled records are delivered
    /// again by the next owner (counted duplicates, never loss). Nothing is committed for a lost assignment.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else { return };
        let lost = consumer.assignment_lost();
        let mut commit = TopicPartitionList::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for element in revoked.elements() {
                state.assigned.remove(&element.partition());
                let Some(owned) = state.owned.remove(&element.partition()) else { continue };
                if let (false, Some(offset)) = (lost, owned.tracker.safe_offset()) {
                    let _ = commit.add_partition_offset(&self.topic, element.partition(), Offset::Offset(offset));
                }
            }
        }
        if commit.count() > 0 {
            if let Err(error) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(exporter = self.exporter, %error, "commit on revoke failed; the next owner re-reads more");
            }
        }
        tracing::info!(exporter = self.exporter, partitions = revoked.count(), lost, "partitions revoked");
    }
}

/// A record waiting on its batch.
struct Held {
    partition: i32,
    epoch: u64,
    offset: i64,
}

/// A record's bytes, kept until its batch is accepted in case they must go to the dead-letter topic.
struct Raw {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

struct Open<I> {
    items: I,
    count: u64,
    bytes: usize,
    held: Vec<Held>,
    raw: Vec<Raw>,
    opened: Instant,
}

struct Sealed {
    body: Bytes,
    count: u64,
    held: Vec<Held>,
    raw: Vec<Raw>,
}

/// A request or dead-letter write that finished.
struct Done {
    held: Vec<Held>,
    records: u64,
    /// `None`: delivered; `Some(reason)`: dead-lettered with that reason.
    dead_lettered: Option<&'static str>,
    items: u64,
    rejected_items: u64,
    /// Why items of a delivered request were refused.
    rejected_reason: &'static str,
    cancelled: bool,
    request: bool,
}

pub(crate) struct Worker<B: Backend> {
    name: &'static str,
    backend: B,
    consumer: Arc<StreamConsumer<Context>>,
    producer: FutureProducer,
    transport: Arc<dyn Transport>,
    delivery: Delivery,
    topic: String,
    dlq: String,
    state: Arc<Mutex<State>>,
    health: Arc<Health>,
    stats: Arc<ExporterStats>,
    source: Source,
    /// Range mode: partitions still being read.
    reading: HashSet<i32>,
}

pub(crate) async fn build<B: Backend>(
    name: &'static str,
    backend: B,
    transport: Arc<dyn Transport>,
    delivery: &Delivery,
    kafka: &KafkaConfig,
    topic: String,
    source: Source,
) -> Result<Exporter, ExporterError> {
    let dlq = headers::dead_letter_topic(&topic);
    let none: &[(&str, &str)] = &[];
    ensure_topics(kafka, &[(&topic, none), (&dlq, none)], Duration::from_secs(30)).await?;
    let state = Arc::new(Mutex::new(State::default()));
    let context = Context { exporter: name, topic: topic.clone(), state: Arc::clone(&state) };
    let group = match &source {
        Source::Group => crate::group_id(name),
        Source::Range { .. } => format!("tailgate-replay-{name}-{}", now_ms()),
    };
    let consumer: StreamConsumer<Context> = client_config(kafka)
        .set("group.id", &group)
        .set("client.id", format!("tailgate-exporter-{name}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", matches!(source, Source::Range { .. }).to_string())
        // Bounds what librdkafka prefetches while fetching is paused or slow.
        .set("queued.max.messages.kbytes", "16384")
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)?;
    let stats = Arc::new(ExporterStats::default());
    let mut reading = HashSet::new();
    match &source {
        Source::Group => consumer.subscribe(&[&topic])?,
        Source::Range { from_ms, .. } => {
            let (assignment, expected) = range_start(kafka, &topic, *from_ms).await?;
            stats.records_expected.store(expected, Ordering::SeqCst);
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            for element in assignment.elements() {
                state.assigned.insert(element.partition());
                reading.insert(element.partition());
            }
            drop(state);
            consumer.assign(&assignment)?;
        }
    }
    let producer = create_producer(
        kafka,
        &ProducerSettings { queue_max_bytes: None, client_id: format!("tailgate-exporter-{name}") },
    )?;
    let worker = Worker {
        name,
        backend,
        consumer: Arc::new(consumer),
        producer,
        transport,
        delivery: delivery.clone(),
        topic,
        dlq,
        state,
        health: Health::new(name),
        stats: Arc::clone(&stats),
        source,
        reading,
    };
    let health = Arc::clone(&worker.health);
    Ok(Exporter { name, stats, health, run: Box::new(move |shutdown| Box::pin(worker.run(shutdown))) })
}

/// Every partition of `topic` from its first record at or after `from_ms`, and how many records that leaves
/// (an estimate from the high watermarks, for progress).
async fn range_start(
    kafka: &KafkaConfig,
    topic: &str,
    from_ms: i64,
) -> Result<(TopicPartitionList, u64), ExporterError> {
    let config = client_config(kafka);
    let topic = topic.to_owned();
    let lookup = tokio::task::spawn_blocking(move || -> Result<(TopicPartitionList, u64), KafkaError> {
        let consumer: BaseConsumer = config.clone().set("group.id", "tailgate-replay-lookup").create()?;
        let timeout = Duration::from_secs(30);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        let mut query = TopicPartitionList::new();
        for partition in &partitions {
            query.add_partition_offset(&topic, *partition, Offset::Offset(from_ms))?;
        }
        let found = consumer.offsets_for_times(query, timeout)?;
        let mut expected = 0u64;
        let mut assignment = TopicPartitionList::new();
        for element in found.elements() {
            let (low, high) = consumer.fetch_watermarks(&topic, element.partition(), timeout)?;
            let start = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => high,
            };
            expected += (high - start.max(low)).max(0) as u64;
            assignment.add_partition_offset(&topic, element.partition(), Offset::Offset(start))?;
        }
        Ok((assignment, expected))
    });
    match lookup.await {
        Ok(result) => Ok(result?),
        Err(error) => Err(ExporterError::Setup("replay", error.to_string())),
    }
}

impl<B: Backend> Worker<B> {
    async fn run(mut self, shutdown: CancellationToken) -> Result<(), ExporterError> {
        let mut open: Option<Open<B::Items>> = None;
        let mut sealed: VecDeque<Sealed> = VecDeque::new();
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
        let mut requests_in_flight = 0usize;
        let mut paused = false;
        let mut tick = tokio::time::interval(TICK);
        let mut last_commit = Instant::now();
        let range = matches!(self.source, Source::Range { .. });
        let consumer = Arc::clone(&self.consumer);
        tracing::info!(exporter = self.name, topic = %self.topic, ?self.source, "exporter consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    if done.request {
                        requests_in_flight -= 1;
                    }
                    self.settle(done);
                }
                message = consumer.recv() => match message {
                    Ok(message) => {
                        if let Some(raw) = self.accept(&message) {
                            let open = open.get_or_insert_with(|| Open {
                                items: B::Items::default(),
                                count: 0,
                                bytes: 0,
                                held: Vec::new(),
                                raw: Vec::new(),
                                opened: Instant::now(),
                            });
                            self.add(open, raw, &mut in_flight);
                        }
                    }
                    Err(KafkaError::PartitionEOF(partition)) => {
                        if self.reading.remove(&partition) {
                            tracing::debug!(exporter = self.name, partition, "end of partition");
                        }
                    }
                    Err(error) => tracing::warn!(exporter = self.name, %error, "consumer error"),
                },
                _ = tick.tick() => {}
            }
            // Seal an open batch that waited long enough, or that holds the last records of a replay.
            if let Some(batch) = &open {
                if batch.count > 0 || !batch.held.is_empty() {
                    let old = batch.opened.elapsed() >= self.delivery.batch.timeout.get();
                    if old || (range && self.reading.is_empty()) {
                        if let Some(batch) = open.take() {
                            self.seal_batch(batch, &mut sealed);
                        }
                    }
                }
            }
            if open.as_ref().is_some_and(|b| {
                b.count >= self.delivery.batch.max_items as u64
                    || b.bytes >= self.delivery.batch.max_bytes.get() as usize
            }) {
                if let Some(batch) = open.take() {
                    self.seal_batch(batch, &mut sealed);
                }
            }
            while requests_in_flight == 0 {
                let Some(batch) = sealed.pop_front() else { break };
                requests_in_flight += 1;
                in_flight.push(self.request(batch, &shutdown));
            }
            paused = self.backpressure(paused, sealed.len());
            if !range && last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit(CommitMode::Async);
                self.report_lag();
                last_commit = Instant::now();
            }
            let nothing_open = open.as_ref().is_none_or(|b| b.held.is_empty());
            if range && self.reading.is_empty() && nothing_open && sealed.is_empty() && in_flight.is_empty() {
                break;
            }
        }
        if !range {
            // Requests in flight are abandoned: their records stay uncommitted and are delivered again.
            self.commit(CommitMode::Sync);
        }
        tracing::info!(exporter = self.name, "exporter stopped");
        Ok(())
    }

    /// Whether to process a fetched record: one of a partition this worker owns and, in a replay, inside the range.
    fn accept(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Raw> {
        let partition = message.partition();
        let owned = self.state.lock().unwrap_or_else(|e| e.into_inner()).assigned.contains(&partition);
        if !owned {
            return None;
        }
        if let Source::Range { to_ms, .. } = self.source {
            if !self.reading.contains(&partition) {
                return None;
            }
            let time = message.timestamp().to_millis().unwrap_or(0);
            if to_ms.is_some_and(|to| time > to) {
                self.reading.remove(&partition);
                let _ = self.pause_partition(partition);
                return None;
            }
        }
        let payload = message.payload().unwrap_or_default();
        self.stats.records_read.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_read.fetch_add(payload.len() as u64, Ordering::Relaxed);
        Some(Raw {
            partition,
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        })
    }

    fn pause_partition(&self, partition: i32) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        self.consumer.pause(&tpl)
    }

    /// Adds a record to the open batch, or sends it straight to the dead-letter topic if it can't be decoded.
    fn add(&mut self, open: &mut Open<B::Items>, raw: Raw, in_flight: &mut FuturesUnordered<BoxFuture<'static, Done>>) {
        let held = self.hold(raw.partition, raw.offset);
        match self.backend.add(&mut open.items, &raw.payload) {
            Ok(batch) => {
                open.count += batch.items;
                open.bytes += raw.payload.len();
                for (reason, count) in batch.dropped {
                    metrics::counter!(m::REJECTED_ITEMS, "exporter" => self.name, "reason" => reason).increment(count);
                    self.stats.items_rejected.fetch_add(count, Ordering::Relaxed);
                }
                if batch.truncated > 0 {
                    metrics::counter!(m::TRUNCATED, "exporter" => self.name).increment(batch.truncated);
                }
                open.held.push(held);
                open.raw.push(raw);
            }
            Err(error) => {
                tracing::warn!(exporter = self.name, partition = raw.partition, offset = raw.offset, %error,
                    "undecodable record sent to the dead-letter topic");
                let dead_letter = self.dead_letter(vec![raw], "undecodable", error);
                in_flight.push(Box::pin(async move {
                    let cancelled = !dead_letter.await;
                    Done {
                        held: vec![held],
                        records: 1,
                        dead_lettered: Some("undecodable"),
                        items: 0,
                        rejected_items: 0,
                        rejected_reason: "",
                        cancelled,
                        request: false,
                    }
                }));
            }
        }
    }

    /// One unit of work on the record until it is settled.
    fn hold(&self, partition: i32, offset: i64) -> Held {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let owned = state.owned(partition);
        owned.tracker.read(offset, 1);
        owned.times.insert(offset, now_ms());
        Held { partition, epoch: owned.epoch, offset }
    }

    fn seal_batch(&mut self, open: Open<B::Items>, sealed: &mut VecDeque<Sealed>) {
        let body = self.backend.encode(open.items);
        sealed.push_back(Sealed { body, count: open.count, held: open.held, raw: open.raw });
    }

    /// Sends a sealed batch until the backend accepts it; if it refuses it for good, its records go to the
    /// dead-letter topic.
    fn request(&self, batch: Sealed, shutdown: &CancellationToken) -> BoxFuture<'static, Done> {
        let transport = Arc::clone(&self.transport);
        let retry: Retry = self.delivery.retry_on_failure.clone();
        let health = Arc::clone(&self.health);
        let shutdown = shutdown.clone();
        let records = batch.held.len() as u64;
        let Sealed { body, count, held, raw } = batch;
        let dead_letter = DeadLetter {
            producer: self.producer.clone(),
            topic: self.dlq.clone(),
            exporter: self.name,
            shutdown: shutdown.clone(),
        };
        Box::pin(async move {
            let mut done = Done {
                held,
                records,
                dead_lettered: None,
                items: 0,
                rejected_items: 0,
                rejected_reason: "",
                cancelled: false,
                request: true,
            };
            if count == 0 {
                // Nothing the backend can take (every item was dropped in translation): settled as is.
                return done;
            }
            match deliver(transport.as_ref(), body, &retry, &health, &shutdown).await {
                Delivered::Accepted { rejected, reason } => {
                    done.items = count.saturating_sub(rejected);
                    done.rejected_items = rejected;
                    done.rejected_reason = reason;
                }
                Delivered::Rejected { reason, message } => {
                    tracing::warn!(exporter = dead_letter.exporter, reason, %message, records,
                        "backend refused a request; its records go to the dead-letter topic");
                    done.rejected_items = count;
                    done.dead_lettered = Some(reason);
                    done.cancelled = !dead_letter.write(raw, reason, message).await;
                }
                Delivered::Cancelled => done.cancelled = true,
            }
            done
        })
    }

    fn dead_letter(&self, raw: Vec<Raw>, reason: &'static str, message: String) -> BoxFuture<'static, bool> {
        let dead_letter = DeadLetter {
            producer: self.producer.clone(),
            topic: self.dlq.clone(),
            exporter: self.name,
            shutdown: CancellationToken::new(),
        };
        Box::pin(async move { dead_letter.write(raw, reason, message).await })
    }

    /// Releases a finished request's records, so their offsets can be committed.
    fn settle(&mut self, done: Done) {
        if done.cancelled {
            return;
        }
        if done.request || done.dead_lettered.is_some() {
            match done.dead_lettered {
                None => {
                    metrics::counter!(m::RECORDS, "exporter" => self.name, "outcome" => "delivered")
                        .increment(done.records);
                    self.stats.records_delivered.fetch_add(done.records, Ordering::SeqCst);
                }
                Some(reason) => {
                    metrics::counter!(m::RECORDS, "exporter" => self.name, "outcome" => "dead_lettered")
                        .increment(done.records);
                    metrics::counter!(m::DEAD_LETTERS, "exporter" => self.name, "reason" => reason)
                        .increment(done.records);
                    self.stats.records_dead_lettered.fetch_add(done.records, Ordering::SeqCst);
                }
            }
            metrics::counter!(m::ITEMS, "exporter" => self.name).increment(done.items);
            self.stats.items_delivered.fetch_add(done.items, Ordering::SeqCst);
            if done.rejected_items > 0 {
                let reason = done.dead_lettered.unwrap_or(done.rejected_reason);
                metrics::counter!(m::REJECTED_ITEMS, "exporter" => self.name, "reason" => reason)
                    .increment(done.rejected_items);
                self.stats.items_rejected.fetch_add(done.rejected_items, Ordering::SeqCst);
            }
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for held in done.held {
            // A partition revoked meanwhile (or revoked and assigned again) is not ours to settle.
            let Some(owned) = state.owned.get_mut(&held.partition).filter(|o| o.epoch == held.epoch) else { continue };
            owned.tracker.release(held.offset);
            owned.times.remove(&held.offset);
        }
    }

    /// Pauses fetching while sealed batches pile up behind an unaccepted request, resumes when they are gone.
    fn backpressure(&self, paused: bool, sealed: usize) -> bool {
        let pause = if paused { sealed > 0 } else { sealed >= MAX_SEALED };
        let Ok(assignment) = self.consumer.assignment() else { return paused };
        if pause {
            if !paused {
                self.stats.pauses.fetch_add(1, Ordering::SeqCst);
                metrics::counter!(m::PAUSES, "exporter" => self.name).increment(1);
                tracing::debug!(exporter = self.name, sealed, "backend not keeping up; fetching paused");
            }
            // Also on later calls: partitions assigned while paused must be paused too.
            if let Err(error) = self.consumer.pause(&assignment) {
                tracing::warn!(exporter = self.name, %error, "cannot pause fetching");
            }
        } else if paused {
            let reading: TopicPartitionList = {
                let mut tpl = TopicPartitionList::new();
                for element in assignment.elements() {
                    if !matches!(self.source, Source::Range { .. }) || self.reading.contains(&element.partition()) {
                        tpl.add_partition(&self.topic, element.partition());
                    }
                }
                tpl
            };
            if let Err(error) = self.consumer.resume(&reading) {
                tracing::warn!(exporter = self.name, %error, "cannot resume fetching");
            }
        }
        pause
    }

    fn commit(&self, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for (partition, owned) in state.owned.iter_mut() {
                if let Some(offset) = owned.tracker.safe_offset() {
                    if owned.committed != Some(offset) {
                        let _ = tpl.add_partition_offset(&self.topic, *partition, Offset::Offset(offset));
                        owned.committed = Some(offset);
                    }
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(error) = self.consumer.commit(&tpl, mode) {
                tracing::warn!(exporter = self.name, %error, "offset commit failed; will retry");
            }
        }
    }

    /// The age of each partition's oldest undelivered record: how far behind the backend is, in time.
    fn report_lag(&self) {
        let now = now_ms();
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (partition, owned) in &state.owned {
            let age = owned.times.values().next().map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            metrics::gauge!(m::LAG_SECONDS, "exporter" => self.name, "partition" => partition.to_string()).set(age);
        }
    }
}

/// Writes refused records to the dead-letter topic, retrying until Kafka has them (or the worker stops).
struct DeadLetter {
    producer: FutureProducer,
    topic: String,
    exporter: &'static str,
    shutdown: CancellationToken,
}

impl DeadLetter {
    /// `true` once every record is in the dead-letter topic.
    async fn write(&self, raw: Vec<Raw>, reason: &str, message: String) -> bool {
        let stage = format!("exporter.{}", self.exporter);
        for record in raw {
            let source = format!("{}:{}", record.partition, record.offset);
            let error = format!("{reason}: {message}");
            loop {
                let headers = tailgate_kafka::contract_headers(headers::ENCODING_OTLP_PROTO)
                    .insert(Header { key: headers::DLQ_ERROR, value: Some(error.as_str()) })
                    .insert(Header { key: headers::DLQ_SOURCE, value: Some(source.as_str()) })
                    .insert(Header { key: headers::DLQ_STAGE, value: Some(stage.as_str()) });
                let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                    .partition(record.partition)
                    .payload(record.payload.as_slice())
                    .headers(headers);
                if let Some(key) = &record.key {
                    out = out.key(key.as_slice());
                }
                let sent = tokio::select! {
                    _ = self.shutdown.cancelled() => return false,
                    sent = self.producer.send(out, Duration::from_secs(5)) => sent,
                };
                match sent {
                    Ok(_) => break,
                    Err((error, _)) => {
                        tracing::warn!(exporter = self.exporter, %error, "cannot write to the dead-letter topic; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        true
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
