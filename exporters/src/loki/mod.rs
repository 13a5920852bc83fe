//! Loki's push API (protobuf + snappy), from the logs topic; or, with `protocol: otlp`, Loki 3's OTLP endpoint,
//! where the records go as they are ([`otlp_backend`]) and Loki picks the labels. What follows is the push API's.
//!
//! * Stream labels: the configured resource attributes (dots become `_`), plus `level` from the severity. Keep the
//!   list short: each distinct combination is a stream, and Loki's index is its streams.
//! * Structured metadata: `trace_id` and `span_id` (hex), the log record's attributes, the other resource attributes
//!   (the first [`MAX_RESOURCE_METADATA_BYTES`] of them: they are copied onto every line) and the scope — so Grafana
//!   can jump from a trace to its logs and back without high-cardinality labels.
//! * What a record becomes is bounded (`MAX_RECORD_EXPANSION` × `batch.max_bytes`); lines past it are dropped and
//!   counted (`translation_limit`).
//! * The line: a string body as is, any other body as JSON. Lines over `max_line_bytes` are truncated (at a
//!   character boundary) or dropped, as configured, and counted.
//! * Entries of a stream are sent in timestamp order.

mod config;
mod transport;

use std::collections::BTreeMap;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use tailgate_proto::loki::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

use crate::attributes::{any_json, sanitize_label, value_string};
use crate::backend::{Backend, Batch};
use crate::delivery::http::snappy;
use crate::delivery::Tenant;

pub use config::{LineTooLong, LokiConfig, Protocol};
pub use transport::transport;

/// With `protocol: otlp`: the records, already OTLP log requests, joined and gzipped for Loki's `/otlp/v1/logs`.
pub fn otlp_backend() -> crate::Joined {
    crate::Joined::new(tailgate_proto::wire::WireSignal::Logs, crate::delivery::http::gzip)
}

/// The exporter's name, in config and on its metrics.
pub const NAME: &str = "loki";

/// Stream labels (rendered) → entries.
pub type Streams = BTreeMap<String, Vec<EntryAdapter>>;

pub struct Loki {
    config: LokiConfig,
}

impl Loki {
    pub fn new(config: LokiConfig) -> Loki {
        Loki { config }
    }
}

impl Backend for Loki {
    type Items = Streams;

    fn add(&mut self, streams: &mut Streams, _partition: i32, _: &Tenant, payload: &[u8]) -> Result<Batch, String> {
        let request = ExportLogsServiceRequest::decode(payload).map_err(|e| format!("not OTLP log data: {e}"))?;
        let mut batch = Batch::default();
        let max_line = self.config.max_line_bytes.get() as usize;
        let limit = (self.config.batch.max_bytes.get() as usize).saturating_mul(crate::backend::MAX_RECORD_EXPANSION);
        for resource_logs in request.resource_logs {
            let attributes = resource_logs.resource.map(|r| r.attributes).unwrap_or_default();
            let mut stream_labels = BTreeMap::new();
            let mut resource_metadata = Vec::new();
            let mut resource_bytes = 0;
            for kv in &attributes {
                if self.config.labels.contains(&kv.key) {
                    let value = value_string(kv.value.as_ref());
                    if !value.is_empty() {
                        stream_labels.insert(sanitize_label(&kv.key), value);
                    }
                } else {
                    let pair = pair(&kv.key, kv.value.as_ref());
                    let bytes = pair_bytes(&pair);
                    if resource_bytes + bytes <= MAX_RESOURCE_METADATA_BYTES {
                        resource_bytes += bytes;
                        resource_metadata.push(pair);
                    }
                }
            }
            for scope_logs in resource_logs.scope_logs {
                let scope = scope_logs.scope.map(|s| s.name).filter(|n| !n.is_empty());
                for record in scope_logs.log_records {
                    if batch.bytes >= limit {
                        batch.dropped.push(("translation_limit", 1));
                        continue;
                    }
                    let mut labels = stream_labels.clone();
                    labels.insert("level".into(), level(&record).into());
                    let Some(line) = line(record.body.as_ref(), max_line, self.config.line_too_long, &mut batch) else {
                        continue;
                    };
                    let mut metadata = Vec::with_capacity(record.attributes.len() + resource_metadata.len() + 3);
                    if !record.trace_id.is_empty() {
                        metadata
                            .push(LabelPairAdapter { name: "trace_id".into(), value: hex::encode(&record.trace_id) });
                    }
                    if !record.span_id.is_empty() {
                        metadata.push(LabelPairAdapter { name: "span_id".into(), value: hex::encode(&record.span_id) });
                    }
                    if !record.severity_text.is_empty() {
                        metadata.push(LabelPairAdapter {
                            name: "severity_text".into(),
                            value: record.severity_text.clone(),
                        });
                    }
                    if let Some(scope) = &scope {
                        metadata.push(LabelPairAdapter { name: "scope_name".into(), value: scope.clone() });
                    }
                    metadata.extend(record.attributes.iter().map(|kv: &KeyValue| pair(&kv.key, kv.value.as_ref())));
                    metadata.extend(resource_metadata.iter().cloned());
                    let nanos =
                        if record.time_unix_nano != 0 { record.time_unix_nano } else { record.observed_time_unix_nano };
                    batch.bytes += ENTRY_BYTES + line.len() + metadata.iter().map(pair_bytes).sum::<usize>();
                    let entry = EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(nanos)),
                        line,
                        structured_metadata: metadata,
                    };
                    match streams.entry(render(&labels)) {
                        std::collections::btree_map::Entry::Occupied(mut stream) => stream.get_mut().push(entry),
                        std::collections::btree_map::Entry::Vacant(stream) => {
                            batch.bytes += stream.key().len() + 8;
                            stream.insert(vec![entry]);
                        }
                    }
                    batch.items += 1;
                }
            }
        }
        Ok(batch)
    }

    fn encode(&mut self, streams: Streams) -> Bytes {
        let streams = streams
            .into_iter()
            .map(|(labels, mut entries)| {
                entries.sort_by_key(|e| e.timestamp.map(|t| t.as_unix_nanos()).unwrap_or_default());
                StreamAdapter { labels, entries, hash: 0 }
            })
            .collect();
        snappy(&PushRequest { streams }.encode_to_vec())
    }
}

/// What a line's structured metadata may take from its resource. A resource's attributes are in the record once but
/// copied onto every line, so a large resource over many short lines would multiply; attributes past this bound (in
/// the resource's order) are left out of the lines' metadata. The line's own attributes, trace and span IDs are
/// always kept.
pub const MAX_RESOURCE_METADATA_BYTES: usize = 1024;

/// What an entry adds to a push body besides its line and metadata: timestamp, tags and lengths.
const ENTRY_BYTES: usize = 24;

fn pair_bytes(pair: &LabelPairAdapter) -> usize {
    pair.name.len() + pair.value.len() + 6
}

fn pair(key: &str, value: Option<&AnyValue>) -> LabelPairAdapter {
    LabelPairAdapter { name: sanitize_label(key), value: value_string(value) }
}

/// `level` as Grafana reads it, from the severity number (ranges of the OpenTelemetry log data model), else the
/// severity text, else `unknown`.
fn level(record: &LogRecord) -> &'static str {
    match record.severity_number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => match record.severity_text.to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "info" | "information" => "info",
            "warn" | "warning" => "warn",
            "error" | "err" => "error",
            "fatal" | "critical" => "fatal",
            _ => "unknown",
        },
    }
}

fn line(body: Option<&AnyValue>, max: usize, too_long: LineTooLong, batch: &mut Batch) -> Option<String> {
    let mut line = match body.and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        None => String::new(),
        Some(other) => any_json(other).to_string(),
    };
    if line.len() > max {
        match too_long {
            LineTooLong::Reject => {
                batch.dropped.push(("line_too_long", 1));
                return None;
            }
            LineTooLong::Truncate => {
                let mut end = max;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
                batch.truncated += 1;
            }
        }
    }
    Some(line)
}

/// Prometheus text form of stream labels: `{level="info", service_name="cart"}`, values escaped.
fn render(labels: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_render_escaped_and_sorted() {
        let labels =
            BTreeMap::from([("service_name".to_owned(), "ca\"rt".to_owned()), ("level".to_owned(), "info".to_owned())]);
        assert_eq!(render(&labels), r#"{level="info", service_name="ca\"rt"}"#);
    }

    #[test]
    fn long_lines_are_truncated_at_a_character_boundary_or_dropped() {
        let body = AnyValue { value: Some(any_value::Value::StringValue("ééé".into())) };
        let mut batch = Batch::default();
        assert_eq!(line(Some(&body), 3, LineTooLong::Truncate, &mut batch).as_deref(), Some("é"));
        assert_eq!(line(Some(&body), 3, LineTooLong::Reject, &mut batch), None);
        assert_eq!((batch.truncated, batch.dropped), (1, vec![("line_too_long", 1)]));
    }

    fn kv(key: &str, value: String) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) }
    }

    /// 50 resource attributes of 100 bytes and 500 short lines: copied onto every line that would be 3 MB from a
    /// 10 KB record; each line carries at most 1 KiB of them.
    #[test]
    fn a_large_resource_is_not_copied_whole_onto_every_line() {
        use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
        let attributes = (0..50).map(|n| kv(&format!("attribute.{n:02}"), "x".repeat(100))).collect();
        let records = (0..500)
            .map(|n| LogRecord {
                body: Some(AnyValue { value: Some(any_value::Value::StringValue(format!("line {n}"))) }),
                ..Default::default()
            })
            .collect();
        let record = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource { attributes, ..Default::default() }),
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let mut loki = Loki::new(LokiConfig::default());
        let mut streams = Streams::new();
        let batch = loki.add(&mut streams, 0, &None, &record).unwrap();
        assert_eq!(batch.items, 500);
        let body = loki.encode(streams);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert!(raw.len() <= 500 * (1024 + 64), "{} bytes from a record of {}", raw.len(), record.len());
        let request = PushRequest::decode(raw.as_slice()).unwrap();
        for entry in request.streams.iter().flat_map(|s| &s.entries) {
            let metadata: usize = entry.structured_metadata.iter().map(pair_bytes).sum();
            assert!(metadata <= 1024, "{metadata} bytes of metadata on one line");
        }
        assert!(batch.bytes.abs_diff(raw.len()) <= raw.len() / 10, "estimate {} for {}", batch.bytes, raw.len());
    }
}
