//! Redaction at the gateway, before anything reaches Kafka: attributes removed or masked as the OpenTelemetry
//! Collector's `redaction` processor does, in span attributes, span event attributes, log record attributes and
//! string log bodies, and SQL literals masked in `db.statement` / `db.query.text`. Counted per rule
//! (`tailgate_ingest_redactions_total{signal, rule}`, the rule named by its config path).
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

    /// Redacts every span and span event of `request`.
    pub fn traces(&self, request: &mut ExportTraceServiceRequest) {
        for span in request.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
            self.attributes("traces", &mut span.attributes);
            for event in &mut span.events {
                self.attributes("traces", &mut event.attributes);
            }
        }
    }

    /// Redacts every log record of `request`: its attributes and a string body.
    pub fn logs(&self, request: &mut ExportLogsServiceRequest) {
        for record in request.resource_logs.iter_mut().flat_map(|r| &mut r.scope_logs).flat_map(|s| &mut s.log_records)
        {
            let body_masked = match &mut record.body {
                Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }) => self.mask_values("logs", body),
                _ => false,
            };
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
            let Some(any_value::Value::StringValue(value)) = attribute.value.as_mut().and_then(|v| v.value.as_mut())
            else {
                return true;
            };
            let mut masked = false;
            if self.sql_attributes.contains(&attribute.key) {
                let (sanitized, literals) = mask_literals(value);
                if literals > 0 {
                    count(signal, "db_sanitizer.sql");
                    *value = sanitized;
                    masked = true;
                }
            }
            if let Some(i) = self.blocked_keys.matches(&attribute.key).iter().next() {
                count_rule(signal, "blocked_key_patterns", i);
                *value = MASK.to_owned();
                masked = true;
            } else if self.mask_values(signal, value) {
                masked = true;
            }
            if masked {
                outcome.masked.push(attribute.key.clone());
            }
            true
        });
        outcome
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

    /// The Collector's diagnostic attributes, for what was redacted (keys sorted, joined by `,`).
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
                attributes.push(string(names.0, keys.join(",")));
            }
            attributes.push(int(names.1, keys.len() as i64));
        }
        if outcome.ignored > 0 {
            attributes.push(int("redaction.ignored.count", outcome.ignored as i64));
        }
    }
}

fn count(signal: &'static str, rule: &'static str) {
    metrics::counter!(REDACTIONS, "signal" => signal, "rule" => rule).increment(1);
}

fn count_rule(signal: &'static str, list: &'static str, index: usize) {
    metrics::counter!(REDACTIONS, "signal" => signal, "rule" => format!("{list}[{index}]")).increment(1);
}

fn string(key: &str, value: String) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

#[cfg(test)]
mod tests;
