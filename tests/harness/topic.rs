//! Reading a topic back with a consumer of its own, and counting what is in it: the tests' view of what a role
//! wrote to Kafka.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One record as a test sees it.
#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads `topic` from the beginning with a separate consumer until `done(records)` holds, then on to the end of
/// every partition as it stands then (its high watermark: whatever was written by that moment, duplicates
/// included, is read), or until `timeout` passes.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: u32,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    // The next offset to read of each partition, once known; and, once `done` held, the ends to read up to.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut ends: Option<HashMap<i32, i64>> = None;
    while Instant::now() < deadline {
        if let Some(ends) = &ends {
            if ends.iter().all(|(p, end)| next.get(p).is_some_and(|n| n >= end)) {
                break;
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                next.insert(message.partition(), message.offset() + 1);
                records.push(Record {
                    partition: message.partition(),
                    key: message.key().unwrap_or_default().to_vec(),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers: message
                        .headers()
                        .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
                        .unwrap_or_default(),
                })
            }
            Some(Err(error)) => panic!("consumer error: {error}"),
            None => {}
        }
        if ends.is_none() && done(&records) {
            let mut at_end = HashMap::new();
            for p in 0..partitions as i32 {
                let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
                // A partition with nothing left to read (empty, or its records deleted) is at its end.
                next.entry(p).or_insert(low);
                at_end.insert(p, high);
            }
            ends = Some(at_end);
        }
    }
    records
}

/// One decision read from the decisions topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub partition: i32,
    /// The record's `tailgate.tenant`; `None` for the default tenant.
    pub tenant: Option<String>,
    pub trace_id: Vec<u8>,
    pub keep: bool,
    pub policy: String,
}

/// Every decision in `records` of the decisions topic, in the order recorded (a record holds many).
pub fn decisions(records: &[Record]) -> Vec<Decided> {
    records
        .iter()
        .flat_map(|r| {
            let tenant = r.header(tailgate_proto::headers::TENANT);
            let entries = tailgate_proto::decisions::entries(Some(&r.key), &r.value, tenant.as_deref())
                .unwrap_or_else(|| panic!("a decision record: {r:?}"));
            entries.into_iter().map(move |(id, d)| Decided {
                partition: r.partition,
                tenant: tenant.clone(),
                trace_id: id.to_vec(),
                keep: d.keep,
                policy: d.policy,
            })
        })
        .collect()
}

/// Every span in `records` (OTLP trace records), with the partition of the record it was in.
pub fn spans(records: &[Record]) -> Vec<(i32, Span)> {
    records
        .iter()
        .flat_map(|r| {
            let request = ExportTraceServiceRequest::decode(r.value.as_slice()).expect("records are OTLP traces");
            let spans = request.resource_spans.into_iter().flat_map(|rs| rs.scope_spans).flat_map(|ss| ss.spans);
            spans.map(|span| (r.partition, span)).collect::<Vec<_>>()
        })
        .collect()
}

/// Every log record in `records` (OTLP log records), with the partition of the Kafka record it was in.
pub fn logs(records: &[Record]) -> Vec<(i32, LogRecord)> {
    records
        .iter()
        .flat_map(|r| {
            let request = ExportLogsServiceRequest::decode(r.value.as_slice()).expect("records are OTLP logs");
            let logs = request.resource_logs.into_iter().flat_map(|rl| rl.scope_logs).flat_map(|sl| sl.log_records);
            logs.map(|log| (r.partition, log)).collect::<Vec<_>>()
        })
        .collect()
}

/// The names of the metrics in `records` (OTLP metric records).
pub fn metric_names(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .flat_map(|r| ExportMetricsServiceRequest::decode(r.value.as_slice()).expect("OTLP metrics").resource_metrics)
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics)
        .map(|m| m.name)
        .collect()
}

/// How many spans `records` hold, counted as the Kafka contract counts them.
pub fn count_spans(records: &[Record]) -> usize {
    count::<ExportTraceServiceRequest>(records)
}

/// How many log records `records` hold.
pub fn count_logs(records: &[Record]) -> usize {
    count::<ExportLogsServiceRequest>(records)
}

fn count<S: tailgate_proto::Signal>(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| tailgate_proto::count_items(&mut S::decode(r.value.as_slice()).expect("records are OTLP")))
        .sum()
}

/// The span IDs of each trace ID in `records` (OTLP trace records).
pub fn spans_by_trace(records: &[Record]) -> std::collections::HashMap<Vec<u8>, std::collections::HashSet<Vec<u8>>> {
    let mut by_trace: std::collections::HashMap<Vec<u8>, std::collections::HashSet<Vec<u8>>> = Default::default();
    for record in records {
        let request = ExportTraceServiceRequest::decode(record.value.as_slice()).expect("OTLP traces");
        for span in request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans) {
            by_trace.entry(span.trace_id).or_default().insert(span.span_id);
        }
    }
    by_trace
}

/// The trace IDs in `records` (OTLP trace records).
pub fn trace_ids(records: &[Record]) -> std::collections::HashSet<Vec<u8>> {
    spans_by_trace(records).into_keys().collect()
}
