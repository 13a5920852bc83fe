//! Redaction at the gateway, before anything reaches Kafka: attributes removed or masked as the OpenTelemetry
//! Collector's `redaction` processor does, in resource, scope, span, span event, span link and log record
//! attributes and log bodies, and SQL literals masked in `db.statement` / `db.query.text`. Values are walked
//! whole: array items, kvlist values (a nested key that `blocked_key_patterns` matches is masked) and UTF-8 bytes,
//! to [`MAX_DEPTH`] levels; anything nested deeper is masked whole, since it was not inspected. `allowed_keys`
//! applies to top-level attribute keys (a nested key is a field of an allowed attribute). Span names, status
//! messages and event names are not redacted, nor are metrics. Counted per rule
//! (`tailgate_ingest_redactions_total{signal, rule}`, the rule named by its config path; `max_depth` for values
//! masked for their depth).
//!
//! A request to redact is decoded (the wire-format fast path copies spans as bytes and cannot change them), so
//! redaction costs what decoding costs; without `ingest.redaction` nothing is decoded for it.

mod config;
mod sql;

use std::collections::HashSet;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use regex::{Regex, RegexSet};

use crate::metrics::REDACTIONS;

pub use config::{DbSanitizer, RedactionConfig, SqlSanitizer, Summary};
pub use sql::mask_literals;

/// What replaces a masked value, or a masked part of one (the Collector's).
pub const MASK: &str = "****";

/// How deep into arrays and kvlists values are inspected; a value nested deeper is masked whole.
pub const MAX_DEPTH: usize = 16;

fn masked() -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(MASK.to_owned())) }
}

/// A compiled [`RedactionConfig`].
#[derive(Debug)]
pub struct Redactor {
    allow_all_keys: bool,
    allowed_keys: HashSet<String>,
    ignored_keys: HashSet<String>,
    blocked_keys: RegexSet,
    blocked_values: Vec<Regex>,
    allowed_values: RegexSet,
    summary: Summary,
    sql_attributes: HashSet<String>,
}

/// What one set of attributes (a span's, an event's, a log record's) had done to it.
#[derive(Default)]
struct Outcome {
    redacted: Vec<String>,
    masked: Vec<String>,
    ignored: usize,
}

impl Redactor {
    /// Compiles `config`; its patterns were checked by [`RedactionConfig::validate`].
    pub fn new(config: &RedactionConfig) -> Result<Redactor, String> {
        let compile = |patterns: &[String]| RegexSet::new(patterns).map_err(|e| e.to_string());
        Ok(Redactor {
            allow_all_keys: config.allow_all_keys,
            allowed_keys: config.allowed_keys.iter().cloned().collect(),
            ignored_keys: config.ignored_keys.iter().cloned().collect(),
            blocked_keys: compile(&config.blocked_key_patterns)?,
            blocked_values: config
                .blocked_values
                .iter()
                .map(|p| Regex::new(p).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
            allowed_values: compile(&config.allowed_values)?,
            summary: config.summary,
            sql_attributes: if config.db_sanitizer.sql.enabled {
                config.db_sanitizer.sql.attributes.iter().cloned().collect()
            } else {
                HashSet::new()
            },
        })
    }

    /// Redacts the resources, spans, span events and span links of `request`.
    pub fn traces(&self, request: &mut ExportTraceServiceRequest) {
        for resource_spans in &mut request.resource_spans {
            if let Some(resource) = &mut resource_spans.resource {
                self.attributes("traces", &mut resource.attributes);
            }
            for scope in resource_spans.scope_spans.iter_mut().filter_map(|s| s.scope.as_mut()) {
                self.attributes("traces", &mut scope.attributes);
            }
        }
        for span in request.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
            self.attributes("traces", &mut span.attributes);
            for event in &mut span.events {
                self.attributes("traces", &mut event.attributes);
            }
            for link in &mut span.links {
                self.attributes("traces", &mut link.attributes);
            }
        }
    }

    /// Redacts the resources and log records of `request`: attributes, and a string body.
    pub fn logs(&self, request: &mut ExportLogsServiceRequest) {
        for resource_logs in &mut request.resource_logs {
            if let Some(resource) = &mut resource_logs.resource {
                self.attributes("logs", &mut resource.attributes);
            }
            for scope in resource_logs.scope_logs.iter_mut().filter_map(|s| s.scope.as_mut()) {
                self.attributes("logs", &mut scope.attributes);
            }
        }
        for record in request.resource_logs.iter_mut().flat_map(|r| &mut r.scope_logs).flat_map(|s| &mut s.log_records)
        {
            // A structured body (a kvlist, as structured logging sends) is walked like an attribute's value.
            let body_masked = record.body.as_mut().is_some_and(|body| self.mask_nested("logs", body, 0));
            let mut outcome = self.apply("logs", &mut record.attributes);
            if body_masked {
                outcome.masked.push("body".to_owned());
            }
            self.summarize(&mut record.attributes, outcome);
        }
    }

    fn attributes(&self, signal: &'static str, attributes: &mut Vec<KeyValue>) {
        let outcome = self.apply(signal, attributes);
        self.summarize(attributes, outcome);
    }

    fn apply(&self, signal: &'static str, attributes: &mut Vec<KeyValue>) -> Outcome {
        let mut outcome = Outcome::default();
        attributes.retain_mut(|attribute| {
            if self.ignored_keys.contains(&attribute.key) {
                outcome.ignored += 1;
                return true;
            }
            if !self.allow_all_keys && !self.allowed_keys.contains(&attribute.key) {
                count(signal, "allowed_keys");
                outcome.redacted.push(attribute.key.clone());
                return false;
            }
            // A blocked key's value is masked whatever its type, as the Collector does.
            if let Some(i) = self.blocked_keys.matches(&attribute.key).iter().next() {
                count_rule(signal, "blocked_key_patterns", i);
                attribute.value = Some(masked());
                outcome.masked.push(attribute.key.clone());
                return true;
            }
            let Some(value) = attribute.value.as_mut() else { return true };
            let mut masked = false;
            if let (true, Some(any_value::Value::StringValue(text))) =
                (self.sql_attributes.contains(&attribute.key), value.value.as_mut())
            {
                let (sanitized, literals) = mask_literals(text);
                if literals > 0 {
                    count(signal, "db_sanitizer.sql");
                    *text = sanitized;
                    masked = true;
                }
            }
            if self.mask_nested(signal, value, 0) {
                masked = true;
            }
            if masked {
                outcome.masked.push(attribute.key.clone());
            }
            true
        });
        outcome
    }

    /// Masks what `blocked_values` matches in `value` and in everything nested in it (array items, kvlist values,
    /// bytes that are UTF-8); a nested kvlist key that `blocked_key_patterns` matches has its value masked whole;
    /// an array or kvlist at `depth` [`MAX_DEPTH`] is masked whole. Whether anything changed.
    fn mask_nested(&self, signal: &'static str, value: &mut AnyValue, depth: usize) -> bool {
        use any_value::Value;
        if depth >= MAX_DEPTH && matches!(value.value, Some(Value::ArrayValue(_) | Value::KvlistValue(_))) {
            count(signal, "max_depth");
            *value = masked();
            return true;
        }
        match &mut value.value {
            Some(Value::StringValue(text)) => self.mask_values(signal, text),
            Some(Value::BytesValue(bytes)) => {
                let Ok(text) = std::str::from_utf8(bytes) else { return false };
                let mut text = text.to_owned();
                let changed = self.mask_values(signal, &mut text);
                if changed {
                    *bytes = text.into_bytes();
                }
                changed
            }
            Some(Value::ArrayValue(array)) => {
                let mut changed = false;
                for item in &mut array.values {
                    changed |= self.mask_nested(signal, item, depth + 1);
                }
                changed
            }
            Some(Value::KvlistValue(list)) => {
                let mut changed = false;
                for entry in &mut list.values {
                    if let Some(i) = self.blocked_keys.matches(&entry.key).iter().next() {
                        count_rule(signal, "blocked_key_patterns", i);
                        entry.value = Some(masked());
                        changed = true;
                    } else if let Some(nested) = entry.value.as_mut() {
                        changed |= self.mask_nested(signal, nested, depth + 1);
                    }
                }
                changed
            }
            _ => false,
        }
    }

    /// Masks every match of `blocked_values` in `value`, unless `allowed_values` lets it through. Whether it did.
    fn mask_values(&self, signal: &'static str, value: &mut String) -> bool {
        if self.blocked_values.is_empty() || self.allowed_values.is_match(value) {
            return false;
        }
        let mut changed = false;
        for (i, pattern) in self.blocked_values.iter().enumerate() {
            if let std::borrow::Cow::Owned(masked) = pattern.replace_all(value, MASK) {
                count_rule(signal, "blocked_values", i);
                *value = masked;
                changed = true;
            }
        }
        changed
    }

    /// The Collector's diagnostic attributes, for what was redacted (keys sorted, joined by `,`). Added to what an
    /// earlier redaction (an upstream Collector's) left, never beside it.
    fn summarize(&self, attributes: &mut Vec<KeyValue>, mut outcome: Outcome) {
        if self.summary == Summary::Silent {
            return;
        }
        let debug = self.summary == Summary::Debug;
        for (keys, names) in [
            (&mut outcome.redacted, ("redaction.redacted.keys", "redaction.redacted.count")),
            (&mut outcome.masked, ("redaction.masked.keys", "redaction.masked.count")),
        ] {
            if keys.is_empty() {
                continue;
            }
            keys.sort();
            if debug {
                merge(attributes, names.0, any_value::Value::StringValue(keys.join(",")));
            }
            merge(attributes, names.1, any_value::Value::IntValue(keys.len() as i64));
        }
        if outcome.ignored > 0 {
            merge(attributes, "redaction.ignored.count", any_value::Value::IntValue(outcome.ignored as i64));
        }
    }
}

/// Sets `key` to `value`, or adds it to the value already there: counts are summed, key lists joined.
fn merge(attributes: &mut Vec<KeyValue>, key: &str, value: any_value::Value) {
    let existing = attributes.iter_mut().find(|a| a.key == key).and_then(|a| a.value.as_mut()?.value.as_mut());
    match (existing, value) {
        (Some(any_value::Value::IntValue(total)), any_value::Value::IntValue(more)) => {
            *total = total.saturating_add(more);
        }
        (Some(any_value::Value::StringValue(keys)), any_value::Value::StringValue(more)) => {
            keys.push(',');
            keys.push_str(&more);
        }
        (_, value) => {
            attributes.retain(|a| a.key != key);
            attributes.push(KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) });
        }
    }
}

fn count(signal: &'static str, rule: &'static str) {
    metrics::counter!(REDACTIONS, "signal" => signal, "rule" => rule).increment(1);
}

fn count_rule(signal: &'static str, list: &'static str, index: usize) {
    metrics::counter!(REDACTIONS, "signal" => signal, "rule" => format!("{list}[{index}]")).increment(1);
}

#[cfg(test)]
fn string(key: &str, value: String) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) }
}

#[cfg(test)]
fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

#[cfg(test)]
mod tests;
