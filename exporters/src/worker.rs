//! The delivery loop shared by every exporter.
//!
//! Records are read in order per partition and added to an open batch; a batch is sealed (encoded) when full or
//! old enough, and sealed batches go to the backend one request at a time, so a series' or stream's samples reach
//! it in order. Each record holds one unit of work in its partition's offset tracker (`tailgate_kafka::ownership`)
//! until its batch was accepted, or refused and copied to the dead-letter topic; commits never pass a record still
//! holding work. While the backend is down the request is retried forever, sealed batches pile up to a bound, and
//! fetching pauses: memory stays bounded and the backlog waits in Kafka.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tailgate_kafka::{
    create_producer, ensure_topics, fit_to_topics, now_ms, send_all, Consumer, ConsumerSettings, DeadLetters, Event,
    KafkaConfig, Partitions, ProducerSettings,
};
use tailgate_proto::headers;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::batch::{Held, Open, Raw, Sealed};
use crate::delivery::{deliver, Delivered, Delivery, Health, Transport};
use crate::exporter::{group_id, Exporter, ExporterError};
use crate::metrics as m;
use crate::outcome::{Done, ExporterStats};
use crate::source::Source;

const TICK: Duration = Duration::from_millis(50);

/// What arrived while the sealed queue was full, kept in order until there is room.
enum Arrived {
    Record(u64, OwnedMessage),
    /// A partition's end, after the records before it.
    End(i32),
}
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Tenants with a batch open at once; a record of one more seals the oldest batch.
const MAX_OPEN_BATCHES: usize = 64;
/// Sealed batches waiting behind the one in flight before fetching pauses and records are no longer translated.
const MAX_SEALED: usize = 2;
/// What the open batches may hold together, records and their translation, in `batch.max_bytes`; past it the
/// oldest is sealed.
const MAX_OPEN_BYTES: usize = 2;
/// What librdkafka may prefetch per partition while fetching is paused or slow.
const PREFETCH_KBYTES: u32 = 16 * 1024;

/// Per owned partition: the record time (ms) of every record still holding work, for the lag in seconds.
#[derive(Default)]
pub(crate) struct Waiting {
    times: BTreeMap<i64, i64>,
}

struct Assigner;

impl Partitions for Assigner {
    type State = Waiting;

    fn open(&self, partitions: &[i32]) -> Vec<Waiting> {
        partitions.iter().map(|_| Waiting::default()).collect()
    }
}

pub(crate) struct Worker<B: Backend> {
    name: &'static str,
    backend: B,
    consumer: Consumer<Assigner>,
    producer: FutureProducer,
    dead_letters: DeadLetters,
    transport: Arc<dyn Transport>,
    delivery: Delivery,
    health: Arc<Health>,
    stats: Arc<ExporterStats>,
    source: Source,
    /// Range mode: partitions still being read.
    reading: HashSet<i32>,
    /// Range mode: where each partition's range ends.
    range_ends: tailgate_kafka::Ends,
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
    let group_id = match &source {
        Source::Group => group_id(kafka, name),
        Source::Range { .. } => format!("tailgate-replay-{name}-{}", now_ms()),
    };
    let settings = ConsumerSettings {
        group_id,
        client_id: format!("tailgate-exporter-{name}"),
        partition_eof: matches!(source, Source::Range { .. }),
        prefetch_kbytes: Some(PREFETCH_KBYTES),
        lag_metric: m::LAG_RECORDS,
        lag_labels: vec![("exporter", name.to_owned())],
        start: tailgate_kafka::Start::Committed,
    };
    let stats = Arc::new(ExporterStats::default());
    let mut reading = HashSet::new();
    let mut range_ends = tailgate_kafka::Ends::default();
    let consumer = match &source {
        Source::Group => Consumer::subscribe(kafka, &settings, &topic, Assigner)?,
        Source::Range { from_ms, to_ms } => {
            let range = crate::source::range_start(kafka, &topic, *from_ms, *to_ms).await?;
            let assignment = range.assignment;
            range_ends = range.ends;
            stats.records_expected.store(range.records, Ordering::SeqCst);
            reading.extend(assignment.elements().iter().map(|e| e.partition()));
            Consumer::assign(kafka, &settings, &topic, &assignment, Assigner)?
        }
    };
    let writer = fit_to_topics(kafka, &[&dlq], Duration::from_secs(10)).await;
    let producer = create_producer(
        &writer,
        &ProducerSettings { queue_max_bytes: None, client_id: format!("tailgate-exporter-{name}") },
    )?;
    let max_record_bytes = writer.producer.max_message_bytes.get() as usize;
    let worker = Worker {
        name,
        backend,
        consumer,
        producer,
        dead_letters: DeadLetters::new(&topic, format!("exporter.{name}"), max_record_bytes),
        transport,
        delivery: delivery.clone(),
        health: Health::new(name),
        stats: Arc::clone(&stats),
        source,
        reading,
        range_ends,
    };
    let health = Arc::clone(&worker.health);
    Ok(Exporter { name, stats, health, run: Box::new(move |shutdown, grace| Box::pin(worker.run(shutdown, grace))) })
}

impl<B: Backend> Worker<B> {
    async fn run(mut self, shutdown: CancellationToken, grace: Duration) -> Result<(), ExporterError> {
        // One open batch per tenant of the records read, oldest first.
        let mut opens: Vec<Open<B::Items>> = Vec::new();
        let mut sealed: VecDeque<Sealed> = VecDeque::new();
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
        let mut requests_in_flight = 0usize;
        let mut paused = false;
        let mut tick = tokio::time::interval(TICK);
        let mut last_commit = Instant::now();
        let range = matches!(self.source, Source::Range { .. });
        let mut fatal = None;
        // Records read while the sealed queue was full, in order.
        let mut waiting: VecDeque<Arrived> = VecDeque::new();
        tracing::info!(exporter = self.name, topic = %self.consumer.topic(), ?self.source, "exporter consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    if done.request {
                        requests_in_flight -= 1;
                    }
                    self.settle(done);
                }
                event = self.consumer.recv() => match event {
                    // While the sealed queue is full, records are kept as read, not translated: the consumer's
                    // thread must go on polling (or the member leaves the group), fetching is paused, so what
                    // arrives is what librdkafka had prefetched.
                    Some(Event::Record { epoch, message }) if sealed.len() >= MAX_SEALED || !waiting.is_empty() => {
                        waiting.push_back(Arrived::Record(epoch, message));
                    }
                    Some(Event::Record { epoch, message }) => {
                        self.take(epoch, message, &mut opens, &mut sealed, &mut in_flight);
                    }
                    // After the records before it: a replay's partition ends once they are taken, not before.
                    Some(Event::End { partition, .. }) if !waiting.is_empty() => {
                        waiting.push_back(Arrived::End(partition));
                    }
                    Some(Event::End { partition, .. }) => self.end_of(partition),
                    Some(Event::Revoked { partitions }) => {
                        tracing::debug!(exporter = self.name, partitions = ?partitions, "partitions revoked; their state dropped");
                        self.backend.revoked(&partitions);
                    }
                    Some(Event::Fatal { error }) => {
                        fatal = Some(ExporterError::Consumer(self.name, error));
                        break;
                    }
                    None => break,
                },
                _ = tick.tick() => {}
            }
            // Seal each open batch that is full, waited long enough, or holds the last records of a replay.
            let mut index = 0;
            while index < opens.len() {
                let batch = &opens[index];
                let seal = batch.is_empty()
                    || batch.is_full(&self.delivery)
                    || batch.is_old(&self.delivery)
                    || (range && self.reading.is_empty());
                if seal {
                    let batch = opens.remove(index);
                    if !batch.is_empty() {
                        sealed.push_back(self.seal(batch));
                    }
                } else {
                    index += 1;
                }
            }
            while requests_in_flight == 0 {
                let Some(batch) = sealed.pop_front() else { break };
                requests_in_flight += 1;
                in_flight.push(self.request(batch, &shutdown));
            }
            while sealed.len() < MAX_SEALED {
                match waiting.pop_front() {
                    Some(Arrived::Record(epoch, message)) => {
                        self.take(epoch, message, &mut opens, &mut sealed, &mut in_flight)
                    }
                    Some(Arrived::End(partition)) => self.end_of(partition),
                    None => break,
                }
            }
            paused = self.backpressure(paused, sealed.len());
            if !range && last_commit.elapsed() >= COMMIT_INTERVAL {
                self.consumer.commit();
                self.report_lag();
                last_commit = Instant::now();
            }
            let nothing_open = opens.iter().all(Open::is_empty);
            let idle = nothing_open && sealed.is_empty() && in_flight.is_empty() && waiting.is_empty();
            if range && self.reading.is_empty() && idle {
                break;
            }
        }
        // Requests in flight are abandoned: their records stay uncommitted and are delivered again. A replay
        // commits nothing: its group is thrown away.
        if range {
            drop(self.consumer);
        } else {
            self.consumer.close(grace).await;
        }
        tracing::info!(exporter = self.name, "exporter stopped");
        fatal.map_or(Ok(()), Err)
    }

    /// A partition read to its end: a replay's is done.
    fn end_of(&mut self, partition: i32) {
        if self.reading.remove(&partition) {
            tracing::debug!(exporter = self.name, partition, "end of partition");
        }
    }

    /// Translates a record into its tenant's open batch. Past [`MAX_OPEN_BATCHES`] tenants, or when the open
    /// batches hold more than [`MAX_OPEN_BYTES`] batches' worth, the oldest open batch is sealed.
    fn take(
        &mut self,
        epoch: u64,
        message: OwnedMessage,
        opens: &mut Vec<Open<B::Items>>,
        sealed: &mut VecDeque<Sealed>,
        in_flight: &mut FuturesUnordered<BoxFuture<'static, Done>>,
    ) {
        let readable =
            tailgate_kafka::contract::readable(&message).map_err(|error| ("unknown_contract", error)).and_then(|()| {
                tailgate_kafka::contract::tenant(&message).map(drop).map_err(|error| ("invalid_tenant", error))
            });
        let Some(raw) = self.accept(epoch, message) else { return };
        let index = match opens.iter().position(|open| open.tenant == raw.tenant) {
            Some(index) => index,
            None => {
                if opens.len() >= MAX_OPEN_BATCHES {
                    let oldest = opens.remove(0);
                    sealed.push_back(self.seal(oldest));
                }
                opens.push(Open::new(raw.tenant.clone()));
                opens.len() - 1
            }
        };
        self.add(&mut opens[index], epoch, raw, readable, in_flight);
        let max_bytes = self.delivery.batch.max_bytes.get() as usize;
        let held = |opens: &[Open<B::Items>]| opens.iter().map(|o| o.bytes + o.translated).sum::<usize>();
        while opens.len() > 1 && held(opens) > MAX_OPEN_BYTES * max_bytes {
            let oldest = opens.remove(0);
            if !oldest.is_empty() {
                sealed.push_back(self.seal(oldest));
            }
        }
    }

    /// The record as bytes to batch, if it is to be processed: of a partition still owned under the epoch it was
    /// fetched in and, in a replay, inside the range.
    fn accept(&mut self, epoch: u64, message: OwnedMessage) -> Option<Raw> {
        let partition = message.partition();
        self.consumer.ownership().get_mut(partition, epoch)?;
        if let Source::Range { to_ms, .. } = self.source {
            if !self.reading.contains(&partition) {
                return None;
            }
            let time = message.timestamp().to_millis().unwrap_or(0);
            let place = to_ms.map(|to| self.range_ends.place(to, partition, message.offset(), time));
            match place {
                Some(tailgate_kafka::Place::End) => {
                    self.reading.remove(&partition);
                    self.consumer.pause(Some(&[partition]));
                    return None;
                }
                // Stamped after the end (a clock ahead, or past it on the way to the end): skipped.
                Some(tailgate_kafka::Place::After) => return None,
                _ => {}
            }
        }
        let offset = message.offset();
        let key = message.key().map(<[u8]>::to_vec);
        let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
        // A record whose tenant header is no tenant ID is dead-lettered (`readable`), never sent as the default.
        let tenant = tailgate_kafka::contract::tenant(&message).ok().flatten().map(std::sync::Arc::from);
        self.stats.records_read.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_read.fetch_add(payload.len() as u64, Ordering::Relaxed);
        Some(Raw { partition, offset, key, payload, tenant })
    }

    fn seal(&mut self, batch: Open<B::Items>) -> Sealed {
        let body = self.backend.encode(batch.items);
        Sealed { tenant: batch.tenant, body, count: batch.count, held: batch.held, raw: batch.raw }
    }

    /// Adds a record to the open batch, or sends it straight to the dead-letter topic if it can't be decoded.
    fn add(
        &mut self,
        open: &mut Open<B::Items>,
        epoch: u64,
        raw: Raw,
        readable: Result<(), (&'static str, String)>,
        in_flight: &mut FuturesUnordered<BoxFuture<'static, Done>>,
    ) {
        let Some(held) = self.hold(raw.partition, epoch, raw.offset) else { return };
        let added = readable.and_then(|()| {
            self.backend.add(&mut open.items, raw.partition, &raw.tenant, &raw.payload).map_err(|e| ("undecodable", e))
        });
        match added {
            Ok(batch) => {
                open.count += batch.items;
                open.bytes += raw.payload.len();
                open.translated += batch.bytes;
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
            Err((reason, error)) => {
                tracing::warn!(exporter = self.name, partition = raw.partition, offset = raw.offset, %error, reason,
                    "unreadable record sent to the dead-letter topic");
                let write = self.dead_letter(vec![raw], reason, error, CancellationToken::new());
                in_flight.push(Box::pin(async move {
                    let mut done = Done::new(vec![held], false);
                    done.dead_lettered = Some(reason);
                    done.cancelled = !write.await;
                    done
                }));
            }
        }
    }

    /// One unit of work on the record until it is settled.
    fn hold(&self, partition: i32, epoch: u64, offset: i64) -> Option<Held> {
        let mut ownership = self.consumer.ownership();
        let owned = ownership.get_mut(partition, epoch)?;
        owned.tracker.read(offset, 1);
        owned.state.times.insert(offset, now_ms());
        Some(Held { partition, epoch, offset })
    }

    /// Sends a sealed batch until the backend accepts it; if it refuses it for good, its records go to the
    /// dead-letter topic.
    fn request(&self, batch: Sealed, shutdown: &CancellationToken) -> BoxFuture<'static, Done> {
        let transport = Arc::clone(&self.transport);
        let retry = self.delivery.retry_on_failure.clone();
        let health = Arc::clone(&self.health);
        let shutdown = shutdown.clone();
        let Sealed { tenant, body, count, held, raw } = batch;
        let exporter = self.name;
        let dead_letter = self.dead_letters.clone();
        let producer = self.producer.clone();
        Box::pin(async move {
            let mut done = Done::new(held, true);
            if count == 0 {
                // Nothing the backend can take (every item was dropped in translation): settled as is.
                return done;
            }
            match deliver(transport.as_ref(), tenant, body, count, &retry, &health, &shutdown).await {
                Delivered::Accepted { rejected } => {
                    done.items = count.saturating_sub(rejected.iter().map(|(_, n)| n).sum());
                    done.rejected = rejected;
                }
                Delivered::Rejected { reason, message } => {
                    tracing::warn!(exporter, reason, %message, records = done.records,
                        "backend refused a request; its records go to the dead-letter topic");
                    done.rejected = vec![(reason, count)];
                    done.dead_lettered = Some(reason);
                    let records: Vec<_> = raw
                        .into_iter()
                        .map(|r| dead_letter.record(r.partition, r.offset, r.key, r.payload, reason, &message))
                        .collect();
                    done.cancelled = !send_all(&producer, &records, "dead letter", &shutdown).await;
                }
                Delivered::Cancelled => done.cancelled = true,
            }
            done
        })
    }

    fn dead_letter(
        &self,
        raw: Vec<Raw>,
        reason: &'static str,
        message: String,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, bool> {
        let records: Vec<_> = raw
            .into_iter()
            .map(|r| self.dead_letters.record(r.partition, r.offset, r.key, r.payload, reason, &message))
            .collect();
        let producer = self.producer.clone();
        Box::pin(async move { send_all(&producer, &records, "dead letter", &shutdown).await })
    }

    /// Counts a finished request and releases its records, so their offsets can be committed.
    fn settle(&mut self, done: Done) {
        if done.cancelled {
            return;
        }
        done.count(self.name, &self.stats);
        let mut ownership = self.consumer.ownership();
        for held in done.held {
            // A partition revoked meanwhile (or revoked and assigned again) is not ours to settle.
            let Some(owned) = ownership.get_mut(held.partition, held.epoch) else { continue };
            owned.tracker.release(held.offset);
            owned.state.times.remove(&held.offset);
        }
    }

    /// Pauses fetching while sealed batches pile up behind an unaccepted request, resumes when they are gone.
    fn backpressure(&self, paused: bool, sealed: usize) -> bool {
        let pause = if paused { sealed > 0 } else { sealed >= MAX_SEALED };
        if pause {
            if !paused {
                self.stats.pauses.fetch_add(1, Ordering::SeqCst);
                metrics::counter!(m::PAUSES, "exporter" => self.name).increment(1);
                tracing::debug!(exporter = self.name, sealed, "backend not keeping up; fetching paused");
            }
            // Also on later calls: partitions assigned while paused must be paused too.
            self.consumer.pause(None);
        } else if paused {
            match self.source {
                Source::Group => self.consumer.resume(None),
                // A replay's finished partitions stay paused.
                Source::Range { .. } => {
                    let reading: Vec<i32> = self.reading.iter().copied().collect();
                    self.consumer.resume(Some(&reading));
                }
            }
        }
        pause
    }

    /// The age of each partition's oldest undelivered record: how far behind the backend is, in time.
    fn report_lag(&self) {
        let now = now_ms();
        let ownership = self.consumer.ownership();
        for (partition, owned) in ownership.iter() {
            let age = owned.state.times.values().next().map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            metrics::gauge!(m::LAG_SECONDS, "exporter" => self.name, "partition" => partition.to_string()).set(age);
        }
    }
}
