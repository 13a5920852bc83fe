//! Matching attribute values: `string_attribute`, `numeric_attribute`, `boolean_attribute`.

use std::collections::HashSet;

use opentelemetry_proto::tonic::common::v1::any_value::Value;

#[derive(Debug)]
pub enum Matcher {
    /// Exact string values.
    Strings(HashSet<String>),
    /// Anchored regular expressions (`enabled_regex_matching`).
    Regex(Vec<regex::Regex>),
    /// An integer within `[min, max]`, inclusive.
    Range(i64, i64),
    Bool(bool),
}

impl Matcher {
    pub fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Matcher::Strings(values), Value::StringValue(s)) => values.contains(s),
            (Matcher::Regex(patterns), Value::StringValue(s)) => patterns.iter().any(|p| p.is_match(s)),
            (Matcher::Range(min, max), Value::IntValue(i)) => min <= i && i <= max,
            (Matcher::Bool(expected), Value::BoolValue(b)) => expected == b,
            _ => false,
        }
    }
}
