//! The consumer shell every Kafka-consuming role runs on: the sampler workers and the exporters.
//!
//! A [`Consumer`] owns a librdkafka consumer polled on a thread of its own, never on a tokio worker. Rebalance
//! callbacks run on that thread, so the blocking work a rebalance needs — the commit of a revoked partition's safe
//! offsets, which must reach the broker before the partition is given up, and the loading of what a newly
//! assigned partition needs (the sampler's recent decisions) — stalls neither the role's own task nor, in
//! `all-in-one`, the gateway sharing the runtime. A newly assigned partition is owned, and its records handed out,
//! only once [`Partitions::open`] returned its state.
//!
//! Records reach the role through a bounded channel, each stamped with the epoch of the ownership it was fetched
//! under ([`crate::ownership`]); the role drops records whose epoch is no longer current.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::ownership::{Fetch, Ownership};
use crate::{client_config, KafkaConfig};

/// Records fetched and not yet taken by the role. With librdkafka's own prefetch bound this caps what a consumer
/// holds in memory.
const CHANNEL_RECORDS: usize = 256;
const POLL: Duration = Duration::from_millis(100);
/// Lookups of a look-back start before reading from the end instead.
const LOOK_BACK_ATTEMPTS: u32 = 3;
/// How often librdkafka reports its statistics.
const STATISTICS_INTERVAL_MS: u64 = 1000;
/// Patience for the offset lookup and seek of [`Start::LookBack`], on the consumer's thread during a rebalance.
const POSITION_TIMEOUT: Duration = Duration::from_secs(10);

/// What a role sets on its consumer; everything else (no auto-commit, no auto offset store, start from the earliest
/// record) is the same for every role, because the delivery guarantee depends on it.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub group_id: String,
    pub client_id: String,
    /// Report each partition's end as [`Event::End`]: a replay reads up to the end, the sampler's clock follows
    /// the wall clock only while it is caught up.
    pub partition_eof: bool,
    /// Bound, in KiB, on what librdkafka prefetches per partition (`queued.max.messages.kbytes`).
    pub prefetch_kbytes: Option<u32>,
    /// The gauge each partition's consumer lag (records) is reported in, from librdkafka's statistics, with
    /// `lag_labels` besides `partition`.
    pub lag_metric: &'static str,
    pub lag_labels: Vec<(&'static str, String)>,
    /// Where reading a newly assigned partition starts.
    pub start: Start,
}

/// Where a consumer starts reading a partition it was just assigned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// At the group's committed offset (the earliest record if none): every role that delivers.
    #[default]
    Committed,
    /// At the first record written within this look-back of now, whatever the group committed: a role that keeps
    /// state rebuilt from recent records rather than deliveries to resume (the Prometheus scrape endpoint).
    LookBack(Duration),
}

/// A role's per-partition state, made when partitions are assigned and dropped when they are revoked.
pub trait Partitions: Send + Sync + 'static {
    type State: Send + 'static;

    /// The state of newly assigned `partitions`, one per partition in order, made before any of their records is
    /// handed out. Runs on the consumer's own thread, never on a tokio worker: it may block, e.g. to read what the
    /// partitions need from another topic.
    fn open(&self, partitions: &[i32]) -> Vec<Self::State>;

    /// `partitions` were taken away — after their safe offsets were committed, or, if `lost`, without a commit.
    fn closed(&self, _partitions: Vec<(i32, Self::State)>, _lost: bool) {}
}

/// What the consumer hands the role.
#[derive(Debug)]
pub enum Event {
    /// A record of a partition owned under `epoch` when it was fetched.
    Record { epoch: u64, message: OwnedMessage },
    /// Everything of `partition` (owned under `epoch`) up to its high watermark has been handed out: the consumer is
    /// caught up with it, until its next record (only with [`ConsumerSettings::partition_eof`]).
    End { partition: i32, epoch: u64 },
    /// `partitions` were revoked: their records still queued were of an ownership that has ended, and any record of
    /// theirs after this event belongs to a new one. Sent in order with the records, from the rebalance itself.
    Revoked { partitions: Vec<i32> },
    /// The consumer cannot go on, and waiting will not change that: the brokers refused its principal a permission
    /// (`Read` on the topic or the group), or librdkafka raised a fatal error (a static member fenced by another
    /// with its `group_instance_id`). The last event: the role stops with this error, non-zero, for its
    /// orchestrator to restart it once the cause is fixed, rather than idle as if healthy.
    Fatal { error: String },
}

/// Why a consumer error ends the consumer, in words that say what to fix; `None` for an error to wait out.
fn fatal_reason(error: &KafkaError, group: &str, topic: &str, fatal: Option<String>) -> Option<String> {
    let code = error.rdkafka_error_code()?;
    let fix = match code {
        RDKafkaErrorCode::TopicAuthorizationFailed => format!(
            "the brokers refused to let this principal read topic `{topic}`: grant it Read and Describe on the \
             topic (SECURITY.md, \"Kafka ACLs each role needs\")"
        ),
        RDKafkaErrorCode::GroupAuthorizationFailed => format!(
            "the brokers refused this principal consumer group `{group}`: grant it Read on the group (SECURITY.md, \
             \"Kafka ACLs each role needs\")"
        ),
        RDKafkaErrorCode::ClusterAuthorizationFailed => {
            "the brokers refused this principal an operation on the cluster (SECURITY.md, \"Kafka ACLs each role \
             needs\")"
                .to_owned()
        }
        _ if fatal.is_some() || matches!(code, RDKafkaErrorCode::Fatal | RDKafkaErrorCode::FencedInstanceId) => {
            format!(
                "librdkafka raised a fatal error{}; a static member fenced by another is given up: check that each \
             worker has its own kafka.consumer.group_instance_id",
                fatal.map(|f| format!(" ({f})")).unwrap_or_default()
            )
        }
        _ => return None,
    };
    Some(format!("consumer of `{topic}` in group `{group}` stopped: {error}: {fix}"))
}

/// The librdkafka context of a shell consumer: lag statistics, rebalances, commit results.
pub struct ShellContext<P: Partitions> {
    ownership: Arc<Mutex<Ownership<P::State>>>,
    partitions: P,
    events: mpsc::Sender<Event>,
    lag_metric: &'static str,
    lag_labels: Vec<(&'static str, String)>,
    start: Start,
}

impl<P: Partitions> ShellContext<P> {
    fn ownership(&self) -> MutexGuard<'_, Ownership<P::State>> {
        self.ownership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes ownership of the partitions of `assigned` not owned yet, once their state is ready; returns them.
    fn open(&self, assigned: &TopicPartitionList) -> Vec<i32> {
        let new: Vec<i32> = {
            let ownership = self.ownership();
            assigned.elements().iter().map(|e| e.partition()).filter(|p| !ownership.owns(*p)).collect()
        };
        if new.is_empty() {
            return new;
        }
        let states = self.partitions.open(&new);
        let mut ownership = self.ownership();
        for (partition, state) in new.iter().zip(states) {
            ownership.assign(*partition, state);
        }
        tracing::info!(topic = ownership.topic(), partitions = ?new, "partitions assigned");
        drop(ownership);
        new
    }

    /// Sets the newly assigned partitions `new` of `assigned` to start at the first record within `look_back` of
    /// now (or their end, if none is), in the assignment itself, before it is given to librdkafka: no fetch can
    /// start from the group's position first. The lookup is tried [`LOOK_BACK_ATTEMPTS`] times; if the broker
    /// still cannot say, reading starts at the partitions' end — a warning, not a stop. Not at the group's
    /// position: a look-back consumer commits nothing, so that would be the start of the retention, and a scrape
    /// endpoint would sum every delta it holds.
    fn start_at_look_back(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &mut TopicPartitionList,
        new: &[i32],
        look_back: Duration,
    ) {
        let topic = self.ownership().topic().to_owned();
        let since = crate::now_ms() - look_back.as_millis() as i64;
        let mut query = TopicPartitionList::new();
        for partition in new {
            let _ = query.add_partition_offset(&topic, *partition, Offset::Offset(since));
        }
        let mut attempt = 1;
        let found = loop {
            match consumer.offsets_for_times(query.clone(), POSITION_TIMEOUT) {
                Ok(found) => break Some(found),
                Err(error) if attempt < LOOK_BACK_ATTEMPTS => {
                    tracing::warn!(%error, topic, partitions = ?new, attempt, "cannot look up the look-back start; trying again");
                    attempt += 1;
                }
                Err(error) => {
                    tracing::warn!(%error, topic, partitions = ?new,
                        "cannot look up the look-back start; reading from the partitions' end, not the look-back");
                    break None;
                }
            }
        };
        let Some(found) = found else {
            for partition in new {
                let _ = assigned.set_partition_offset(&topic, *partition, Offset::End);
            }
            return;
        };
        for partition in new {
            let element = found.find_partition(&topic, *partition);
            if let Some(Err(error)) = element.as_ref().map(|e| e.error()) {
                // Answered for the others but not for this one (its leader moving): its end, said so.
                tracing::warn!(%error, topic, partition, "cannot look up the look-back start; reading from the end");
            }
            let start = match element.map(|e| e.offset()) {
                Some(Offset::Offset(offset)) => Offset::Offset(offset),
                _ => Offset::End,
            };
            if let Err(error) = assigned.set_partition_offset(&topic, *partition, start) {
                tracing::warn!(%error, topic, partition, "cannot start at the look-back; reading from the group's position");
            }
        }
        tracing::info!(topic, partitions = ?new, look_back = ?look_back, "reading from the look-back start");
    }
}

impl<P: Partitions> ClientContext for ShellContext<P> {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut ownership = self.ownership();
        let Some(topic) = statistics.topics.get(ownership.topic()) else { return };
        let now = std::time::Instant::now();
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                let mut labels: Vec<(&'static str, String)> = self.lag_labels.clone();
                labels.push(("partition", partition.to_string()));
                metrics::gauge!(self.lag_metric, &labels).set(stats.consumer_lag as f64);
            }
            if let Some(owned) = ownership.current_mut(*partition) {
                if fetching(&statistics, stats) {
                    owned.fetch = Some(Fetch { high_watermark: stats.hi_offset, at: now });
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_error(error, reason);
    }
}

/// How long the partition's leader may send nothing before its fetch counts as stalled: several times the
/// broker's long-poll of an idle fetch (`fetch.wait.max.ms`, 500 ms), which answers even when there is nothing new.
const FETCH_SILENCE_US: i64 = 2_000_000;

/// Whether `partition`'s fetch is working: the fetcher active, its leader up and heard from within
/// [`FETCH_SILENCE_US`]. A leader that is gone, unreachable or frozen is not.
fn fetching(statistics: &rdkafka::Statistics, partition: &rdkafka::statistics::Partition) -> bool {
    // The broker the partition is fetched from (its leader, or a follower with `client.rack`). Without one (-1,
    // a leader being elected) nothing is fetched: the bootstrap and coordinator entries, also -1, must not match.
    let from = if partition.broker >= 0 { partition.broker } else { partition.leader };
    let broker = statistics.brokers.values().find(|broker| broker.nodeid >= 0 && broker.nodeid == from);
    from >= 0
        && partition.fetch_state == "active"
        && broker.is_some_and(|broker| broker.state == "UP" && (0..FETCH_SILENCE_US).contains(&broker.rxidle))
}

/// Reaching a partition's end is not an error; everything else is logged as librdkafka reports it.
fn log_error(error: KafkaError, reason: &str) {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::PartitionEOF) => tracing::debug!(reason, "end of partition"),
        _ => tracing::error!(%error, reason, "Kafka client error"),
    }
}

/// The context of a plain consumer that reads up to a partition's end outside the shell (the sampler's decision
/// loader, a replay's offset lookup): librdkafka reports each partition's end as a "global error", which is logged
/// at debug here instead of as an ERROR that makes a new user think something broke.
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_error(error, reason);
    }
}

impl ConsumerContext for ReaderContext {}

impl<P: Partitions> ConsumerContext for ShellContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else { return };
        let lost = consumer.assignment_lost();
        let partitions: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
        let (states, commit) = self.ownership().revoke(&partitions, lost);
        // Synchronously, on this thread: once this callback returns the partition may belong to another member.
        if commit.count() > 0 {
            if let Err(error) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(%error, "commit on revoke failed; the next owner re-reads from the last commit");
            }
        }
        if lost {
            tracing::warn!(partitions = ?partitions, "assignment lost: partition state dropped without a commit");
        } else {
            tracing::info!(partitions = ?partitions, "partitions revoked");
        }
        self.partitions.closed(states, lost);
        // Fails only once the role stopped listening.
        let _ = self.events.blocking_send(Event::Revoked { partitions });
    }

    /// librdkafka's rebalance, as rust-rdkafka's default runs it, but a new assignment's partitions are opened —
    /// and, for [`Start::LookBack`], given their start offsets — before the assignment is handed to librdkafka.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, assigned: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Incremental under cooperative rebalancing, the whole assignment under eager: either way an
                // addition.
                let new = self.open(assigned);
                if let (Start::LookBack(look_back), false) = (self.start, new.is_empty()) {
                    self.start_at_look_back(consumer, assigned, &new, look_back);
                }
                if cooperative {
                    consumer.incremental_assign(assigned)
                } else {
                    consumer.assign(assigned)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(assigned));
                if cooperative {
                    consumer.incremental_unassign(assigned)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = %RDKafkaErrorCode::from(other), "rebalance error");
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "librdkafka refused the rebalance's assignment");
        }
    }

    /// A commit that failed is sent again with the next periodic commit. Only for commits whose result the client
    /// delivers: rust-rdkafka's asynchronous `commit` sets no callback, so those failures are mended by
    /// [`Ownership::recommit_all`] instead.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::warn!(%error, "offset commit failed; retrying with the next commit");
            self.ownership().recommit(offsets);
        }
    }
}

/// A consumer of one topic, polled on its own thread.
pub struct Consumer<P: Partitions> {
    client: Option<Arc<BaseConsumer<ShellContext<P>>>>,
    ownership: Arc<Mutex<Ownership<P::State>>>,
    events: Option<mpsc::Receiver<Event>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    topic: String,
    /// When every safe offset was last committed again, moved or not.
    refreshed: Mutex<std::time::Instant>,
}

/// How often [`Consumer::commit`] commits every safe offset again: a lost commit is mended within this.
const COMMIT_REFRESH: Duration = Duration::from_secs(5);

impl<P: Partitions> Consumer<P> {
    /// A member of `settings.group_id`, subscribed to `topic`: partitions come and go with rebalances.
    pub fn subscribe(
        kafka: &KafkaConfig,
        settings: &ConsumerSettings,
        topic: &str,
        partitions: P,
    ) -> KafkaResult<Self> {
        let (tx, rx) = mpsc::channel(CHANNEL_RECORDS);
        let client = create(kafka, settings, topic, partitions, true, tx.clone())?;
        client.subscribe(&[topic])?;
        Ok(Self::start(client, tx, rx, topic, &settings.group_id))
    }

    /// A consumer of exactly `assignment` (partitions with start offsets), outside any rebalance: a replay.
    pub fn assign(
        kafka: &KafkaConfig,
        settings: &ConsumerSettings,
        topic: &str,
        assignment: &TopicPartitionList,
        partitions: P,
    ) -> KafkaResult<Self> {
        let (tx, rx) = mpsc::channel(CHANNEL_RECORDS);
        let client = create(kafka, settings, topic, partitions, false, tx.clone())?;
        // Opening may load state for a long while (a sampler's decisions): not on a runtime thread as if it were
        // quick, where it would stall every task scheduled there.
        match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| client.context().open(assignment));
            }
            _ => {
                client.context().open(assignment);
            }
        }
        client.assign(assignment)?;
        Ok(Self::start(client, tx, rx, topic, &settings.group_id))
    }

    fn start(
        client: BaseConsumer<ShellContext<P>>,
        tx: mpsc::Sender<Event>,
        rx: mpsc::Receiver<Event>,
        topic: &str,
        group: &str,
    ) -> Self {
        // The owned partitions are shared by this thread (rebalances) and the role's task (records, commits).
        let ownership = Arc::clone(&client.context().ownership);
        let client = Arc::new(client);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (client, ownership, stop) = (Arc::clone(&client), Arc::clone(&ownership), Arc::clone(&stop));
            let names = (group.to_owned(), topic.to_owned());
            std::thread::Builder::new()
                .name(format!("consumer-{topic}"))
                .spawn(move || poll_loop(client, ownership, tx, stop, names))
                .expect("the consumer thread starts")
        };
        Consumer {
            client: Some(client),
            ownership,
            events: Some(rx),
            stop,
            thread: Some(thread),
            topic: topic.to_owned(),
            refreshed: Mutex::new(std::time::Instant::now()),
        }
    }

    /// The next record or partition end; `None` once the consumer is closing.
    pub async fn recv(&mut self) -> Option<Event> {
        match &mut self.events {
            Some(events) => events.recv().await,
            None => None,
        }
    }

    /// The partition's high watermark, if its fetch was working within the last few statistics intervals (the
    /// broker it fetches from answering): the caller is at the end once it has handled every record below it. A
    /// fetch that stalled (the broker gone or unreachable, this process frozen) gives `None`, however long ago it
    /// last worked.
    ///
    /// Statistics from before `since` are not taken: a caller that was itself frozen passes when it thawed (plus a
    /// fetch round), since a fetch answered during the freeze is read only after it and speaks of the partition
    /// as it was then.
    pub fn fresh_high_watermark(
        &self,
        owned: &crate::ownership::Partition<P::State>,
        since: std::time::Instant,
    ) -> Option<i64> {
        let max_age = Duration::from_millis(3 * STATISTICS_INTERVAL_MS);
        owned.fetch.filter(|fetch| fetch.at >= since && fetch.fresh(max_age)).map(|fetch| fetch.high_watermark)
    }

    /// The owned partitions and their state. Held briefly: the consumer thread takes it on every rebalance.
    pub fn ownership(&self) -> MutexGuard<'_, Ownership<P::State>> {
        self.ownership.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn client(&self) -> &BaseConsumer<ShellContext<P>> {
        self.client.as_ref().expect("the client lives until close")
    }

    /// Commits every owned partition's safe offset that moved, without waiting, and every [`COMMIT_REFRESH`] every
    /// safe offset whether it moved or not: a failed asynchronous commit is not reported back (see
    /// [`Ownership::recommit_all`]), and a partition gone quiet would otherwise keep its failed commit for good.
    pub fn commit(&self) {
        let refresh = {
            let mut refreshed = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            let due = refreshed.elapsed() >= COMMIT_REFRESH;
            if due {
                *refreshed = std::time::Instant::now();
            }
            due
        };
        if refresh {
            self.ownership().recommit_all();
        }
        let tpl = self.ownership().commit_due();
        if tpl.count() > 0 {
            if let Err(error) = self.client().commit(&tpl, CommitMode::Async) {
                tracing::warn!(%error, "offset commit failed; retrying with the next commit");
                self.ownership().recommit(&tpl);
            }
        }
    }

    /// Stops fetching `partitions` (all owned ones if `None`). Records already fetched still arrive.
    pub fn pause(&self, partitions: Option<&[i32]>) {
        if let Err(error) = self.client().pause(&self.list(partitions)) {
            tracing::warn!(%error, topic = self.topic, "cannot pause fetching");
        }
    }

    /// Fetches `partitions` again (all owned ones if `None`).
    pub fn resume(&self, partitions: Option<&[i32]>) {
        if let Err(error) = self.client().resume(&self.list(partitions)) {
            tracing::warn!(%error, topic = self.topic, "cannot resume fetching");
        }
    }

    fn list(&self, partitions: Option<&[i32]>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        match partitions {
            Some(partitions) => {
                for partition in partitions {
                    tpl.add_partition(&self.topic, *partition);
                }
            }
            None => {
                for partition in self.ownership().partitions() {
                    tpl.add_partition(&self.topic, partition);
                }
            }
        }
        tpl
    }

    /// Commits what is settled, waits for it, then leaves the group (which commits once more on the final revoke)
    /// and stops the consumer thread, all within `within`. Whatever is not done by then is left to the group:
    /// uncommitted records are read again by the next owner.
    pub async fn close(mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        // Every safe offset, moved or not: an earlier asynchronous commit may have failed unreported.
        self.ownership().recommit_all();
        let tpl = self.ownership().commit_due();
        let client = self.client.take().expect("closed once");
        if tpl.count() > 0 {
            let committing = Arc::clone(&client);
            let commit = tokio::task::spawn_blocking(move || committing.commit(&tpl, CommitMode::Sync));
            match tokio::time::timeout_at(deadline, commit).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(%error, "final commit failed; the next owner re-reads more"),
                _ => tracing::warn!("final commit did not finish in time; the next owner re-reads more"),
            }
        }
        // The thread holds the last reference: dropping the client there leaves the group, off the runtime.
        drop(client);
        self.events = None;
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout_at(deadline, joined).await.is_err() {
                tracing::warn!(topic = self.topic, "consumer did not leave the group in time");
            }
        }
    }
}

impl<P: Partitions> Drop for Consumer<P> {
    fn drop(&mut self) {
        // Not closed: let the thread finish on its own (it drops the client, leaving the group).
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn create<P: Partitions>(
    kafka: &KafkaConfig,
    settings: &ConsumerSettings,
    topic: &str,
    partitions: P,
    member: bool,
    events: mpsc::Sender<Event>,
) -> KafkaResult<BaseConsumer<ShellContext<P>>> {
    let ownership = Arc::new(Mutex::new(Ownership::new(topic)));
    let context = ShellContext {
        ownership: Arc::clone(&ownership),
        partitions,
        events,
        lag_metric: settings.lag_metric,
        lag_labels: settings.lag_labels.clone(),
        start: settings.start,
    };
    let mut config = client_config(kafka)?;
    config
        .set("group.id", &settings.group_id)
        .set("client.id", &settings.client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", settings.partition_eof.to_string())
        // Every second: lag gauges, and the fetch freshness a sampler's event time depends on (`Fetch`).
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string());
    if member {
        if let Some(session) = kafka.consumer.session_timeout {
            let session = session.get().as_millis().max(1);
            config
                .set("session.timeout.ms", session.to_string())
                .set("heartbeat.interval.ms", (session / 3).to_string());
        }
        if let Some(id) = &kafka.consumer.group_instance_id {
            config.set("group.instance.id", id);
        }
        let strategy = kafka.consumer.assignment_strategy.unwrap_or_default();
        config.set("partition.assignment.strategy", strategy.as_str());
    }
    if let Some(kbytes) = settings.prefetch_kbytes {
        config.set("queued.max.messages.kbytes", kbytes.to_string());
    }
    config.create_with_context(context)
}

/// Polls until stopped or the role stops listening, stamping each record with its partition's current epoch.
fn poll_loop<P: Partitions>(
    client: Arc<BaseConsumer<ShellContext<P>>>,
    ownership: Arc<Mutex<Ownership<P::State>>>,
    events: mpsc::Sender<Event>,
    stop: Arc<AtomicBool>,
    (group, topic): (String, String),
) {
    while !stop.load(Ordering::SeqCst) {
        let event = match client.poll(POLL) {
            None => continue,
            Some(Ok(message)) => {
                let epoch = ownership.lock().unwrap_or_else(|e| e.into_inner()).epoch(message.partition());
                // A record of a partition no longer owned was fetched before its revoke: not ours to process.
                let Some(epoch) = epoch else { continue };
                Event::Record { epoch, message: message.detach() }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                let epoch = ownership.lock().unwrap_or_else(|e| e.into_inner()).epoch(partition);
                let Some(epoch) = epoch else { continue };
                Event::End { partition, epoch }
            }
            Some(Err(error)) => {
                let fatal = client.client().fatal_error().map(|(_, reason)| reason);
                match fatal_reason(&error, &group, &topic, fatal) {
                    Some(reason) => {
                        tracing::error!("{reason}");
                        let _ = events.blocking_send(Event::Fatal { error: reason });
                        break;
                    }
                    None => {
                        tracing::warn!(%error, "consumer error");
                        continue;
                    }
                }
            }
        };
        if events.blocking_send(event).is_err() {
            break;
        }
    }
}
