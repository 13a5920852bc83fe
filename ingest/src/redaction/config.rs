//! The `ingest.redaction:` section, in the OpenTelemetry Collector `redaction` processor's terms.

use serde::{Deserialize, Serialize};
use tailgate_config::Problems;

/// What the gateway removes or masks before anything reaches Kafka. Absent: nothing is changed.
///
/// As in the Collector: an attribute in `ignored_keys` passes untouched; without `allow_all_keys`, one not in
/// `allowed_keys` is removed; the value of one whose key matches `blocked_key_patterns` is masked whole; in
/// every other value, each match of `blocked_values` is masked unless the value matches `allowed_values`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    /// Keep every attribute key (values are still checked). Off: only `allowed_keys` (and `ignored_keys`) stay.
    pub allow_all_keys: bool,
    pub allowed_keys: Vec<String>,
    /// Never removed nor masked.
    pub ignored_keys: Vec<String>,
    /// Regular expressions; a value whose key matches one is masked whole.
    pub blocked_key_patterns: Vec<String>,
    /// Regular expressions; every match in a string value (and a string log body) is masked.
    pub blocked_values: Vec<String>,
    /// Regular expressions; a value matching one is not masked by `blocked_values`.
    pub allowed_values: Vec<String>,
    /// The `redaction.*` attributes added where something was redacted: `debug` (counts and keys), `info`
    /// (counts), `silent` (none, the default, as the Collector's).
    pub summary: Summary,
    /// Literal masking in SQL statements.
    pub db_sanitizer: DbSanitizer,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    Debug,
    Info,
    #[default]
    Silent,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbSanitizer {
    pub sql: SqlSanitizer,
}

/// String and number literals in these attributes become `?`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlSanitizer {
    pub enabled: bool,
    pub attributes: Vec<String>,
}

impl Default for SqlSanitizer {
    fn default() -> Self {
        SqlSanitizer { enabled: false, attributes: vec!["db.statement".into(), "db.query.text".into()] }
    }
}

impl RedactionConfig {
    /// `path` is this section's (`ingest.redaction`). Each regular expression must compile.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        for (key, patterns) in [
            ("blocked_key_patterns", &self.blocked_key_patterns),
            ("blocked_values", &self.blocked_values),
            ("allowed_values", &self.allowed_values),
        ] {
            for (i, pattern) in patterns.iter().enumerate() {
                match regex::Regex::new(pattern) {
                    Err(error) => {
                        problems.push(format!("{path}.{key}[{i}]"), format!("not a regular expression: {error}"))
                    }
                    // `\d*` would put a mask between every two characters of every value.
                    Ok(regex) if key == "blocked_values" && regex.is_match("") => problems.push(
                        format!("{path}.{key}[{i}]"),
                        "matches the empty string, so it would mask between every two characters; use + for *",
                    ),
                    Ok(_) => {}
                }
            }
        }
        if !self.allow_all_keys && self.allowed_keys.is_empty() && self.ignored_keys.is_empty() {
            problems.push(
                format!("{path}.allowed_keys"),
                "is empty and allow_all_keys is false, so every attribute would be removed; list the keys to keep, \
                 or set allow_all_keys: true to only mask values",
            );
        }
    }
}
