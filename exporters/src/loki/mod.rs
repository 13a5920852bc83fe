//! Loki's push API (protobuf + snappy), from the logs topic.
//!
//! * Stream labels: the configured resource attributes (dots become `_`), plus `level` from the severity. Keep the
//!   list short: each distinct combination is a stream, and Loki's index is its streams.
//! * Structured metadata: `trace_id` and `span_id` (hex), the log record's attributes, the other resource attributes
//!   and the scope — so Grafana can jump from a trace to its logs and back without high-cardinality labels.
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

pub use config::{LineTooLong, LokiConfig};
pub use transport::transport;

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

    fn add(&mut self, streams: &mut Streams, _partition: i32, payload: &[u8]) -> Result<Batch, String> {
        let request = ExportLogsServiceRequest::decode(payload).map_err(|e| format!("not OTLP log data: {e}"))?;
        let mut batch = Batch::default();
        let max_line = self.config.max_line_bytes.get() as usize;
        for resource_logs in request.resource_logs {
            let attributes = resource_logs.resource.map(|r| r.attributes).unwrap_or_default();
            let mut stream_labels = BTreeMap::new();
            let mut resource_metadata = Vec::new();
            for kv in &attributes {
                if self.config.labels.contains(&kv.key) {
                    let value = value_string(kv.value.as_ref());
                    if !value.is_empty() {
                        stream_labels.insert(sanitize_label(&kv.key), value);
                    }
                } else {
                    resource_metadata.push(pair(&kv.key, kv.value.as_ref()));
                }
            }
            for scope_logs in resource_logs.scope_logs {
                let scope = scope_logs.scope.map(|s| s.name).filter(|n| !n.is_empty());
                for record in scope_logs.log_records {
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
                    streams.entry(render(&labels)).or_default().push(EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(nanos)),
                        line,
                        structured_metadata: metadata,
                    });
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
}
