//! Decisions already made, so late spans follow their trace's decision: an in-memory cache of recent ones, and the
//! loader that fills it from the decisions topic when a partition is assigned — decisions another worker made.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tailgate_kafka::{client_config, KafkaConfig, ReaderContext};
use tailgate_proto::decisions;

use crate::buffer::TraceId;

/// Heap per cached decision, near enough: the trace ID and verdict in the map with its overhead, and the trace ID
/// again in the eviction order.
pub const BYTES_PER_DECISION: u64 = 64;
/// How often a long load says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Wait before trying a failed load again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long the first attempt waits for the decisions' start offsets; later attempts wait longer.
const LIST_OFFSETS_TIMEOUT: Duration = Duration::from_secs(10);

/// Recent decisions, oldest forgotten first once the byte bound is reached.
pub struct Decisions {
    kept: HashMap<TraceId, bool>,
    order: VecDeque<TraceId>,
    capacity: usize,
    /// Decisions forgotten to stay within the bound.
    pub evicted: u64,
}

impl Decisions {
    /// A cache of at most `bytes` (see [`BYTES_PER_DECISION`]).
    pub fn new(bytes: u64) -> Self {
        let capacity = (bytes / BYTES_PER_DECISION).max(1) as usize;
        Decisions { kept: HashMap::new(), order: VecDeque::new(), capacity, evicted: 0 }
    }

    /// How many decisions it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `Some(true)` if the trace was kept, `Some(false)` if dropped, `None` if not known.
    pub fn get(&self, id: &TraceId) -> Option<bool> {
        self.kept.get(id).copied()
    }

    pub fn insert(&mut self, id: TraceId, keep: bool) {
        if self.kept.insert(id, keep).is_none() {
            self.order.push_back(id);
            if self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.kept.remove(&old);
                    self.evicted += 1;
                    metrics::counter!(crate::metrics::DECISION_CACHE_EVICTIONS).increment(1);
                }
            }
        }
    }
}

/// What a load reads: the time range, and how many decisions to keep of it at most.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub since_ms: i64,
    /// Records after it are not read (a resample's range end).
    pub until_ms: Option<i64>,
    /// Only decisions to keep are wanted (a resample's skip-list).
    pub only_kept: bool,
    /// The most decisions kept, the newest: what the cache can hold anyway. Reading more would only hold them in
    /// memory to be evicted at once.
    pub capacity: usize,
}

/// Reads the decisions recorded in `window` on `partitions` of the decisions topic, up to the end of each —
/// all of them, or the partitions are not consumed yet: a late span whose decision was not loaded would be
/// decided afresh, so a kept trace could be emitted partly or an error trace dropped. Of what it reads it keeps the
/// newest `window.capacity` (older ones the cache would evict anyway; counted). A failed read is tried again
/// until it succeeds. Blocks: call it where that stalls nothing else (the consumer's own thread).
pub fn load(kafka: &KafkaConfig, partitions: &[i32], window: Window) -> Vec<(TraceId, bool)> {
    let mut attempt = 1u32;
    loop {
        // Each attempt waits longer for the offsets: a broker slower than the first wait must not fail for ever.
        let patience = LIST_OFFSETS_TIMEOUT * attempt.min(6);
        match try_load(kafka, partitions, window, patience) {
            Ok(loaded) => return loaded,
            Err(error) => {
                tracing::warn!(%error, attempt, partitions = ?partitions,
                    "cannot load recent decisions; the partitions wait until they are loaded");
                std::thread::sleep(RETRY_AFTER);
                attempt += 1;
            }
        }
    }
}

fn try_load(
    kafka: &KafkaConfig,
    partitions: &[i32],
    window: Window,
    patience: Duration,
) -> Result<Vec<(TraceId, bool)>, KafkaError> {
    let Window { since_ms, until_ms, only_kept, capacity } = window;
    let topic = &kafka.topics.decisions;
    let consumer: BaseConsumer<ReaderContext> = client_config(kafka)?
        .set("group.id", "tailgate-sampler-decision-loader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(ReaderContext)?;
    let mut query = TopicPartitionList::new();
    for partition in partitions {
        query.add_partition_offset(topic, *partition, Offset::Offset(since_ms))?;
    }
    let starts = consumer.offsets_for_times(query, patience)?;
    let mut assignment = TopicPartitionList::new();
    for element in starts.elements() {
        if let Offset::Offset(offset) = element.offset() {
            assignment.add_partition_offset(topic, element.partition(), Offset::Offset(offset))?;
        }
    }
    // The newest `capacity`, in the order read (each partition in time order).
    let mut loaded = VecDeque::new();
    let mut older_left_out = 0u64;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    consumer.assign(&assignment)?;
    let mut remaining = assignment.count();
    // Partitions read up to `until_ms`: their later records are not wanted.
    let mut done = std::collections::HashSet::new();
    let started = Instant::now();
    let mut next_progress = started + PROGRESS_EVERY;
    while remaining > 0 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if done.contains(&message.partition()) {
                    continue;
                }
                if until_ms.is_some_and(|until| message.timestamp().to_millis().is_some_and(|t| t > until)) {
                    done.insert(message.partition());
                    remaining -= 1;
                    continue;
                }
                let Ok(tenant) = crate::tenant::of(&message) else { continue };
                let name = crate::tenant::name(tenant);
                let value = message.payload().unwrap_or_default();
                let entries = decisions::entries(message.key(), value, name.as_deref()).unwrap_or_default();
                for (id, decision) in entries {
                    if decision.keep || !only_kept {
                        loaded.push_back((TraceId { tenant, id }, decision.keep));
                        if loaded.len() > capacity {
                            loaded.pop_front();
                            older_left_out += 1;
                        }
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) if done.insert(partition) => remaining -= 1,
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(error)) => return Err(error),
            None => {}
        }
        if Instant::now() >= next_progress {
            tracing::info!(loaded = loaded.len(), older_left_out, partitions_left = remaining, elapsed = ?started.elapsed(),
                "loading recent decisions");
            next_progress += PROGRESS_EVERY;
        }
    }
    if older_left_out > 0 {
        tracing::info!(older_left_out, capacity, "decisions older than the cache holds were not loaded");
        metrics::counter!(crate::metrics::DECISION_CACHE_EVICTIONS).increment(older_left_out);
    }
    Ok(loaded.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bound_forgets_the_oldest_first_and_counts_it() {
        let mut decisions = Decisions::new(3 * BYTES_PER_DECISION);
        for i in 0..5u8 {
            decisions.insert(TraceId::from([i; 16]), i % 2 == 0);
        }
        assert_eq!(decisions.evicted, 2);
        assert_eq!(decisions.get(&TraceId::from([0; 16])), None, "the oldest are forgotten");
        assert_eq!(decisions.get(&TraceId::from([1; 16])), None);
        assert_eq!(
            (
                decisions.get(&TraceId::from([2; 16])),
                decisions.get(&TraceId::from([3; 16])),
                decisions.get(&TraceId::from([4; 16]))
            ),
            (Some(true), Some(false), Some(true))
        );
        decisions.insert(TraceId::from([4; 16]), true);
        assert_eq!(decisions.evicted, 2, "a decision known already takes no more room");
        // Another tenant's trace of the same ID is another trace.
        let other = TraceId { tenant: crate::tenant::intern(Some("decisions-test")).unwrap(), id: [4; 16] };
        assert_eq!(decisions.get(&other), None);
    }
}
