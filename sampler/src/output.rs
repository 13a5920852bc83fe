//! What a sampler worker writes: kept traces to the sampled topic, decisions to the decisions topic, records it
//! cannot read to the dead-letter topic, and RED metrics to the metrics topic.
//!
//! Kept output and dead letters are written until Kafka acknowledged them, and only then reported [`Settled`]:
//! the records they came from hold their offsets until then. RED metrics are best effort: the series are
//! cumulative, so the next interval supersedes a lost write.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use rdkafka::producer::FutureProducer;
use tailgate_kafka::{send_all, DeadLetters, KafkaConfig, OutgoingRecord};
use tailgate_proto::decisions::Decision;
use tailgate_proto::wire::WireSignal;
use tailgate_proto::{headers, split, wire, Record, RecordLimit, Split};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::TraceId;
use crate::metrics::{SamplerStats, INVALID_SPANS};
use crate::tenant::Tenant;

/// Splits kept spans (an encoded `ExportTraceServiceRequest` the sampler wrote from scanned spans) into records of
/// the sampled topic, on their wire format.
pub fn split_kept(request: &[u8], partitions: u32, limit: RecordLimit) -> Split {
    match WireSignal::Traces.scan(request) {
        Ok(scanned) => wire::split(&scanned, WireSignal::Traces, partitions, limit),
        Err(error) => {
            // Written from spans the scan accepted and marks of valid fields: a bug if it happens.
            tracing::error!(%error, "kept spans the sampler wrote do not scan; not written");
            debug_assert!(false, "kept spans do not scan: {error}");
            Split::default()
        }
    }
}

/// The `tailgate.encoding` of decision records (`tailgate_proto::decisions`).
const DECISION_ENCODING: &str = "tailgate_decision_v2";

/// What a decision tick decided on one partition for one tenant, or the late spans of kept traces one record
/// brought: written together.
#[derive(Debug)]
pub(crate) struct Decided {
    /// The offsets of every trace in it.
    pub settled: Settled,
    pub tenant: Tenant,
    pub kept: Vec<Kept>,
    /// The decisions made (none in a resample, or for late spans).
    pub decisions: Vec<(TraceId, Decision)>,
}

/// A kept trace's spans, or the late spans of kept traces one record brought.
#[derive(Debug)]
pub(crate) struct Kept {
    /// An encoded `ExportTraceServiceRequest`.
    pub spans: Vec<u8>,
    /// For a dead letter: the trace (when one), and the first record its spans came from.
    pub trace_id: Option<TraceId>,
    pub offset: i64,
}

/// Output of a partition's ownership `epoch` that Kafka acknowledged: each of `offsets` is released once.
#[derive(Debug)]
pub(crate) struct Settled {
    pub partition: i32,
    pub epoch: u64,
    pub offsets: Vec<i64>,
}

pub(crate) struct Output {
    producer: FutureProducer,
    kafka: KafkaConfig,
    dead_letters: DeadLetters,
    /// The whole-record limit of OTLP records with the contract's headers, worked out once.
    limit: RecordLimit,
    /// The same for decision records.
    decision_limit: RecordLimit,
    settled: mpsc::UnboundedSender<Settled>,
    stats: Arc<SamplerStats>,
    /// Cancelled when the worker stops waiting for its output: writes still retrying give up.
    abandon: CancellationToken,
}

impl Output {
    pub fn new(
        producer: FutureProducer,
        kafka: &KafkaConfig,
        settled: mpsc::UnboundedSender<Settled>,
        stats: Arc<SamplerStats>,
    ) -> Self {
        let max = kafka.producer.max_message_bytes.get() as usize;
        Output {
            producer,
            kafka: kafka.clone(),
            dead_letters: DeadLetters::new(&kafka.topics.spans, "sampler", max),
            limit: record_limit(max, headers::ENCODING_OTLP_PROTO),
            decision_limit: record_limit(max, DECISION_ENCODING),
            settled,
            stats,
            abandon: CancellationToken::new(),
        }
    }

    /// Writes what one decision tick decided on one partition for one tenant — the kept traces' spans to the
    /// sampled topic and the decisions to the decisions topic, each in as few records as the record limit allows —
    /// then settles its offsets.
    pub fn emit(&self, decided: Decided) {
        let Decided { settled, tenant, kept, decisions } = decided;
        let tenant = crate::tenant::name(tenant);
        let mut records = self.kept_records(settled.partition, tenant.as_deref(), kept);
        // On the partition the traces' spans came from: the one whose new owner loads them.
        let partition = settled.partition as u32;
        let key_bytes = 16 + tenant.as_deref().map_or(0, str::len);
        let max_value = self.decision_limit.key_and_value().saturating_sub(key_bytes);
        let entries = decisions.iter().map(|(trace_id, decision)| (&trace_id.id, decision));
        for (first, value) in tailgate_proto::decisions::encode_batches(entries, max_value) {
            let key = tailgate_proto::decisions::key(&first, tenant.as_deref());
            let record = Record { partition, key, value, items: 1 };
            let topic = &self.kafka.topics.decisions;
            records.push(contract_record(topic, record, DECISION_ENCODING, tenant.as_deref()));
        }
        self.send_then_settle(records, settled, "sampler output");
    }

    /// The records of kept traces' spans (each an encoded `ExportTraceServiceRequest`): written together, split
    /// on the trace's partition into records as large as the limit allows. Should the split refuse spans (another
    /// producer's invalid IDs, or the sampler's marks pushing a span over the limit), each trace is split on its
    /// own so that the trace that holds them is the one sent to the dead-letter topic.
    fn kept_records(&self, partition: i32, tenant: Option<&str>, kept: Vec<Kept>) -> Vec<OutgoingRecord> {
        let partitions = self.kafka.partitions;
        let sampled = &self.kafka.topics.sampled_spans;
        let to_records = |split: Split| {
            split.records.into_iter().map(|r| contract_record(sampled, r, headers::ENCODING_OTLP_PROTO, tenant))
        };
        if kept.len() > 1 {
            // Concatenated encodings of one message are the message holding all their repeated fields.
            let mut together = Vec::with_capacity(kept.iter().map(|k| k.spans.len()).sum());
            for k in &kept {
                together.extend_from_slice(&k.spans);
            }
            let split = split_kept(&together, partitions, self.limit);
            if split.rejected() == 0 {
                return to_records(split).collect();
            }
        }
        let mut records = Vec::new();
        for kept in kept {
            let split = split_kept(&kept.spans, partitions, self.limit);
            if split.rejected() > 0 {
                records.push(self.dead_letter_kept(partition, kept, &split));
            }
            records.extend(to_records(split));
        }
        records
    }

    /// The dead letter of a kept trace whose spans the sampled topic cannot carry: counted by reason, and the kept
    /// trace as the sampler would have written it goes to the dead-letter topic, so that its offsets settle only
    /// once it is somewhere — the sampled topic or the dead letters, never neither.
    fn dead_letter_kept(&self, partition: i32, kept: Kept, split: &Split) -> OutgoingRecord {
        tracing::warn!(
            partition,
            invalid_id = split.rejected_invalid_id,
            too_large = split.rejected_too_large,
            topic = self.dead_letters.topic(),
            "kept spans the sampled topic cannot carry; the kept trace goes to the dead-letter topic"
        );
        for (reason, count) in [("invalid_id", split.rejected_invalid_id), ("too_large", split.rejected_too_large)] {
            if count > 0 {
                metrics::counter!(INVALID_SPANS, "reason" => reason).increment(count as u64);
                self.stats.invalid_spans.fetch_add(count as u64, Ordering::Relaxed);
            }
        }
        let reason = if split.rejected_too_large > 0 { "too_large" } else { "invalid_id" };
        let message = format!(
            "a kept trace with {} span(s) too large for a record with the sampler's marks and {} with invalid IDs",
            split.rejected_too_large, split.rejected_invalid_id
        );
        let key = kept.trace_id.map(|trace_id| trace_id.to_vec());
        self.dead_letters.record(partition, kept.offset, key, kept.spans, reason, &message)
    }

    /// Copies a record the sampler cannot read to the dead-letter topic, then settles its offset.
    pub fn dead_letter(&self, settled: Settled, key: Option<Vec<u8>>, payload: Vec<u8>, reason: &str, error: &str) {
        let offset = settled.offsets.first().copied().unwrap_or_default();
        let record = self.dead_letters.record(settled.partition, offset, key, payload, reason, error);
        self.send_then_settle(vec![record], settled, "dead letter");
    }

    fn send_then_settle(&self, records: Vec<OutgoingRecord>, settled: Settled, what: &'static str) {
        let producer = self.producer.clone();
        let settled_tx = self.settled.clone();
        // What the write holds until acknowledged, not just the values: a dropped trace's output is a 2-byte
        // decision, and millions of them in flight (the decisions topic's leader down) are not free.
        let bytes = records.iter().map(OutgoingRecord::held_bytes).sum::<u64>() + settled_bytes(&settled);
        let stats = Arc::clone(&self.stats);
        let abandon = self.abandon.clone();
        stats.output_bytes_in_flight.fetch_add(bytes, Ordering::SeqCst);
        tokio::spawn(async move {
            let sent = send_all(&producer, &records, what, &abandon).await;
            stats.output_bytes_in_flight.fetch_sub(bytes, Ordering::SeqCst);
            if sent {
                let _ = settled_tx.send(settled);
            }
        });
    }

    /// Writes RED series, best effort.
    /// Writes each tenant's RED series as that tenant's records.
    pub fn red_metrics(&self, requests: Vec<(Tenant, ExportMetricsServiceRequest)>) {
        for (tenant, request) in requests {
            let tenant = crate::tenant::name(tenant);
            for record in split(request, self.kafka.partitions, self.limit).records {
                let topic = &self.kafka.topics.metrics;
                let record = contract_record(topic, record, headers::ENCODING_OTLP_PROTO, tenant.as_deref());
                let producer = self.producer.clone();
                tokio::spawn(async move {
                    if let Err((error, _)) = producer.send(record.as_future_record(), Duration::from_secs(5)).await {
                        tracing::warn!(%error, "RED metrics not written; the next interval supersedes them");
                    }
                });
            }
        }
    }

    /// Stops retrying writes still in flight: their records stay uncommitted and are read again by the next owner.
    pub fn abandon(&self) {
        self.abandon.cancel();
    }
}

/// What a write's `Settled` holds: its offsets and the struct.
fn settled_bytes(settled: &Settled) -> u64 {
    (std::mem::size_of::<Settled>() + settled.offsets.len() * std::mem::size_of::<i64>()) as u64
}

/// The whole-record limit (key, value, the contract's headers, framing) of records in `encoding`, with room for
/// the longest tenant header.
fn record_limit(max_message_bytes: usize, encoding: &str) -> RecordLimit {
    const LONGEST_TENANT: [u8; headers::MAX_TENANT_LENGTH] = [b'x'; headers::MAX_TENANT_LENGTH];
    let headers = [
        (headers::ENCODING, encoding.as_bytes()),
        (headers::CONTRACT_VERSION, headers::CONTRACT_VERSION_CURRENT.as_bytes()),
        (headers::TENANT, &LONGEST_TENANT[..]),
    ];
    RecordLimit::new(max_message_bytes, headers)
}

/// A record of `topic` with the contract's headers and, for a named tenant, `tailgate.tenant`.
fn contract_record(topic: &str, record: Record, encoding: &str, tenant: Option<&str>) -> OutgoingRecord {
    let mut headers = tailgate_kafka::contract_headers(encoding);
    if let Some(tenant) = tenant {
        headers = headers.insert(rdkafka::message::Header { key: headers::TENANT, value: Some(tenant) });
    }
    OutgoingRecord {
        topic: topic.to_owned(),
        partition: record.partition as i32,
        key: Some(record.key),
        value: record.value,
        headers,
    }
}
