//! Writing export requests to Kafka, and answering only once Kafka has them.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tailgate_proto::{count_items, headers, split, wire, RecordLimit, Rejection, Signal, Split};

use crate::budget::Permit;
use crate::error::ExportError;
use crate::metrics as m;
use crate::redaction::Redactor;
use crate::resource::ResourceProcessor;
use crate::tenant::Tenant;

/// What happened to the items of an accepted request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub accepted: usize,
    pub rejected: usize,
    /// Set when `rejected > 0`: the OTLP partial-success message.
    pub error_message: Option<String>,
}

/// A request as the gateway received it: its protobuf bytes (split on the wire for traces and logs), or decoded
/// from JSON.
pub enum Payload<S> {
    Encoded(Vec<u8>),
    Decoded(S),
}

/// The gateway's writer: resource enrichment, splitting, producing, waiting for acknowledgements.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    partitions: u32,
    /// The producer's `message.max.bytes`: what every record must fit as a whole (see [`RecordLimit`]).
    max_message_bytes: usize,
    changes: Arc<Changes>,
    throttle_retry_after: Duration,
    shutting_down: Arc<AtomicBool>,
}

impl KafkaSink {
    pub fn new(
        producer: FutureProducer,
        partitions: u32,
        max_message_bytes: usize,
        changes: Changes,
        throttle_retry_after: Duration,
    ) -> Self {
        KafkaSink {
            producer,
            partitions,
            max_message_bytes,
            changes: Arc::new(changes),
            throttle_retry_after,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Turns away new requests from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Writes `request` to `topic` and returns once Kafka acknowledged every record made from it. Items rejected
    /// for invalid IDs or size are counted, not written. `permit`, the request's share of the in-flight budget
    /// taken at admission, is held until then.
    pub async fn export<S: Signal + 'static>(
        &self,
        topic: &str,
        signal: &'static str,
        transport: &'static str,
        tenant: &Tenant,
        request: Payload<S>,
        mut permit: Permit,
    ) -> Result<Accepted, ExportError> {
        // The headers first: every record carries them, so they count against its size. A request is one tenant's,
        // so each of its records is too.
        let received_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp_ms = i64::try_from(received_at.as_millis()).unwrap_or(i64::MAX);
        let received_at = received_at.as_nanos().to_string();
        let mut record_headers = tailgate_kafka::contract_headers(headers::ENCODING_OTLP_PROTO)
            .insert(Header { key: headers::RECEIVED_AT, value: Some(received_at.as_str()) });
        if let Some(id) = tenant.id() {
            record_headers = record_headers.insert(Header { key: headers::TENANT, value: Some(id) });
        }
        // Spans leave room for the sampler's marks: a span accepted here must fit the sampled topic too.
        let max_record_bytes = self.max_message_bytes.saturating_sub(S::DOWNSTREAM_ROOM);
        let limit = RecordLimit::new(
            max_record_bytes,
            record_headers.iter().map(|header| (header.key, header.value.unwrap_or_default())),
        );

        let split = records(
            request,
            self.partitions,
            &self.changes,
            limit,
            |cost| {
                if permit.grow(cost) {
                    Ok(())
                } else {
                    Err(ExportError::Throttled { retry_after: self.throttle_retry_after })
                }
            },
            |items| self.admit(signal, transport, items),
        )?;
        // The request is gone; until Kafka acknowledged, what is held is the records and librdkafka's copy. Records
        // can outweigh their request (each carries a copy of its resource): then the difference is paid before
        // librdkafka copies them, or the request is throttled.
        let records: usize = split.records.iter().map(|r| r.key.len() + r.value.len()).sum();
        let held = records.saturating_mul(2);
        if held > permit.bytes() && !permit.grow(held - permit.bytes()) {
            return Err(self.fail(signal, ExportError::Throttled { retry_after: self.throttle_retry_after }, &split));
        }
        permit.shrink_to(held);
        for (reason, count) in
            [(Rejection::InvalidId, split.rejected_invalid_id), (Rejection::TooLarge, split.rejected_too_large)]
        {
            if count > 0 {
                metrics::counter!(m::ITEMS_REJECTED, "signal" => signal, "reason" => reason.as_str())
                    .increment(count as u64);
            }
        }

        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(split.records.len());
        for record in &split.records {
            let kafka_record = FutureRecord::to(topic)
                .partition(record.partition as i32)
                .key(record.key.as_slice())
                .payload(record.value.as_slice())
                .timestamp(timestamp_ms)
                .headers(record_headers.clone());
            match self.producer.send_result(kafka_record) {
                Ok(delivery) => deliveries.push(delivery),
                // Records already queued may still land; the client's retry then duplicates them, which OTLP allows.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(self.fail(
                        signal,
                        ExportError::KafkaBusy { retry_after: self.throttle_retry_after },
                        &split,
                    ))
                }
                Err((error, _)) => {
                    return Err(self.fail(signal, ExportError::KafkaUnavailable(error.to_string()), &split))
                }
            }
        }

        for outcome in join_all(deliveries).await {
            let error = match outcome {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => error.to_string(),
                Err(_canceled) => "the producer shut down before Kafka answered".to_owned(),
            };
            return Err(self.fail(signal, ExportError::KafkaUnavailable(error), &split));
        }
        metrics::histogram!(m::PRODUCE_DURATION, "signal" => signal).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::RECORDS_PRODUCED, "signal" => signal).increment(split.records.len() as u64);
        metrics::counter!(m::ITEMS_ACCEPTED, "signal" => signal).increment(split.accepted as u64);

        Ok(Accepted {
            accepted: split.accepted,
            rejected: split.rejected(),
            error_message: split.error_message::<S>(max_record_bytes),
        })
    }

    /// Counts a request's `items` as received, and refuses them once shutting down.
    fn admit(&self, signal: &'static str, transport: &'static str, items: usize) -> Result<(), ExportError> {
        metrics::counter!(m::ITEMS_RECEIVED, "signal" => signal, "transport" => transport).increment(items as u64);
        if self.shutting_down.load(Ordering::SeqCst) {
            metrics::counter!(m::ITEMS_REJECTED, "signal" => signal, "reason" => ExportError::ShuttingDown.reason())
                .increment(items as u64);
            return Err(ExportError::ShuttingDown);
        }
        Ok(())
    }

    fn fail(&self, signal: &'static str, error: ExportError, split: &Split) -> ExportError {
        metrics::counter!(m::ITEMS_REJECTED, "signal" => signal, "reason" => error.reason())
            .increment(split.accepted as u64);
        tracing::warn!(signal, %error, "export failed; the client will retry");
        error
    }

    /// Waits up to `timeout` for every queued record to be acknowledged.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout)).await.unwrap_or(Err(KafkaError::Canceled))
    }
}

/// What a decoded span or log record holds before its fields, twice (a `Vec` may double).
const DECODED_ITEM_BYTES: usize = 2 * {
    let (span, log) = (std::mem::size_of::<Span>(), std::mem::size_of::<LogRecord>());
    if span > log {
        span
    } else {
        log
    }
};

/// What the gateway changes in a request before it is written: the resource actions, and redaction.
#[derive(Debug, Default)]
pub struct Changes {
    pub resource: ResourceProcessor,
    pub redaction: Option<Redactor>,
}

/// The records a request becomes, the part of [`KafkaSink::export`] that reads a client's bytes (and so what
/// `tests/fuzz` runs): traces and logs scanned on their wire format, after `pay` accepted what the scan allocates;
/// metrics, JSON requests and, when redaction is configured, every request decoded; `admit` told the item count
/// once it is known; redaction and the resource actions applied; split by trace or resource into records of at
/// most `limit`.
pub fn records<S: Signal + 'static>(
    request: Payload<S>,
    partitions: u32,
    changes: &Changes,
    limit: RecordLimit,
    pay: impl FnOnce(usize) -> Result<(), ExportError>,
    admit: impl FnOnce(usize) -> Result<(), ExportError>,
) -> Result<Split, ExportError> {
    let resource = &changes.resource;
    // Redaction changes spans and log records, which the wire path copies as bytes: it needs them decoded.
    let wire = S::WIRE.filter(|_| changes.redaction.is_none());
    let decoded = match (request, wire) {
        (Payload::Encoded(bytes), Some(wire)) => {
            // What the scan allocates, per item, resource, scope and field: counted first (a walk of the levels above
            // the items, nothing kept) and paid for before scanning.
            let cost = wire::scan_cost(&bytes).map_err(|e| ExportError::Decode(e.to_string()))?;
            pay(cost.bytes)?;
            let mut scanned = wire.scan(&bytes).map_err(|e| ExportError::Decode(e.to_string()))?;
            admit(scanned.resources.iter().flat_map(|r| &r.scopes).map(|s| s.items.len()).sum())?;
            if !resource.is_empty() {
                for scanned in &mut scanned.resources {
                    let mut decoded = scanned.decode_resource();
                    resource.apply(&mut decoded);
                    scanned.set_resource(decoded.as_ref());
                }
            }
            return Ok(wire::split(&scanned, wire, partitions, limit));
        }
        (Payload::Encoded(bytes), None) => {
            if changes.redaction.is_some() && S::WIRE.is_some() {
                // Decoded for redaction: a nearly empty span or log record decodes to its whole struct, more than
                // the per-byte cost admission charged, so each item pays for its struct first.
                let cost = wire::scan_cost(&bytes).map_err(|e| ExportError::Decode(e.to_string()))?;
                pay(cost.items.saturating_mul(DECODED_ITEM_BYTES))?;
            }
            S::decode(bytes.as_slice()).map_err(|e| ExportError::Decode(e.to_string()))?
        }
        (Payload::Decoded(request), _) => request,
    };
    let mut request = decoded;
    admit(count_items(&mut request))?;
    if let Some(redactor) = &changes.redaction {
        let request: &mut dyn Any = &mut request;
        if let Some(traces) = request.downcast_mut::<ExportTraceServiceRequest>() {
            redactor.traces(traces);
        } else if let Some(logs) = request.downcast_mut::<ExportLogsServiceRequest>() {
            redactor.logs(logs);
        }
    }
    if !resource.is_empty() {
        for each in request.resources_mut() {
            resource.apply(S::resource_mut(each));
        }
    }
    Ok(split(request, partitions, limit))
}
