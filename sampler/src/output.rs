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
use tailgate_proto::{headers, partition_for_key, split, wire, Record, RecordLimit, Split};
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
const DECISION_ENCODING: &str = "tailgate_decision_v1";

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
            settled,
            stats,
            abandon: CancellationToken::new(),
        }
    }

    /// Writes a trace's kept spans (if any: an encoded `ExportTraceServiceRequest`) to the sampled topic and its
    /// decision (if any) to the decisions topic, then settles `offsets`.
    pub fn emit(
        &self,
        settled: Settled,
        tenant: Tenant,
        output: Option<Vec<u8>>,
        decision: Option<(TraceId, Decision)>,
    ) {
        let tenant = crate::tenant::name(tenant);
        let partitions = self.kafka.partitions;
        let sampled = &self.kafka.topics.sampled_spans;
        let split = output.as_ref().map(|request| split_kept(request, partitions, self.limit));
        let mut records: Vec<OutgoingRecord> = Vec::new();
        if let (Some(split), Some(request)) = (split.as_ref().filter(|s| s.rejected() > 0), output) {
            // Kept spans another producer wrote with invalid IDs, or that the sampler's marks (`ot=th`, the keeping
            // policy) pushed over the record limit: counted by reason, and the kept trace as the sampler would have
            // written it goes to the dead-letter topic with them, so that its offsets settle only once it is
            // somewhere — the sampled topic or the dead letters, never neither.
            tracing::warn!(
                partition = settled.partition,
                invalid_id = split.rejected_invalid_id,
                too_large = split.rejected_too_large,
                topic = self.dead_letters.topic(),
                "kept spans the sampled topic cannot carry; the kept trace goes to the dead-letter topic"
            );
            for (reason, count) in [("invalid_id", split.rejected_invalid_id), ("too_large", split.rejected_too_large)]
            {
                if count > 0 {
                    metrics::counter!(INVALID_SPANS, "reason" => reason).increment(count as u64);
                    self.stats.invalid_spans.fetch_add(count as u64, Ordering::Relaxed);
                }
            }
            let offset = settled.offsets.first().copied().unwrap_or_default();
            let reason = if split.rejected_too_large > 0 { "too_large" } else { "invalid_id" };
            let message = format!(
                "a kept trace with {} span(s) too large for a record with the sampler's marks and {} with invalid IDs",
                split.rejected_too_large, split.rejected_invalid_id
            );
            let key = decision.as_ref().map(|(trace_id, _)| trace_id.to_vec());
            records.push(self.dead_letters.record(settled.partition, offset, key, request, reason, &message));
        }
        records.extend(
            split
                .map(|split| split.records)
                .unwrap_or_default()
                .into_iter()
                .map(|r| contract_record(sampled, r, headers::ENCODING_OTLP_PROTO, tenant.as_deref())),
        );
        if let Some((trace_id, decision)) = decision {
            let record = Record {
                partition: partition_for_key(&trace_id, partitions),
                key: tailgate_proto::decisions::key(&trace_id, tenant.as_deref()),
                value: decision.encode(),
                items: 1,
            };
            records.push(contract_record(&self.kafka.topics.decisions, record, DECISION_ENCODING, tenant.as_deref()));
        }
        self.send_then_settle(records, settled, "sampler output");
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
