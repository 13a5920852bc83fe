//! Policy configuration: the OpenTelemetry Collector's `tail_sampling` schema, field for field.

use serde::{Deserialize, Serialize};
use tailgate_config::Problems;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    AlwaysSample,
    Latency,
    StatusCode,
    Probabilistic,
    StringAttribute,
    NumericAttribute,
    BooleanAttribute,
    SpanCount,
    TraceState,
    RateLimiting,
    And,
    Not,
    Drop,
    Composite,
}

/// One policy: `{ name, type, <type>: { … } }`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<PolicyType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<StatusCodeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilistic: Option<ProbabilisticConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_attribute: Option<StringAttributeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_count: Option<SpanCountConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<TraceStateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<RateLimitingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub and: Option<AndConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not: Option<NotConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub composite: Option<CompositeConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyConfig {
    /// Keep traces lasting at least this long.
    pub threshold_ms: u64,
    /// And at most this long; 0 means no upper bound.
    pub upper_threshold_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusCodeConfig {
    /// `OK`, `ERROR`, `UNSET`.
    pub status_codes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbabilisticConfig {
    pub sampling_percentage: f64,
    pub hash_salt: String,
}

impl Default for ProbabilisticConfig {
    fn default() -> Self {
        ProbabilisticConfig { sampling_percentage: 0.0, hash_salt: super::probabilistic::DEFAULT_SALT.to_owned() }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StringAttributeConfig {
    pub key: String,
    pub values: Vec<String>,
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility; regexes are compiled once, so there is nothing to cache.
    pub cache_max_size: usize,
    pub invert_match: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct NumericAttributeConfig {
    pub key: String,
    pub min_value: i64,
    pub max_value: i64,
    pub invert_match: bool,
}

impl Default for NumericAttributeConfig {
    fn default() -> Self {
        NumericAttributeConfig { key: String::new(), min_value: i64::MIN, max_value: i64::MAX, invert_match: false }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BooleanAttributeConfig {
    pub key: String,
    pub value: bool,
    pub invert_match: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SpanCountConfig {
    pub min_spans: usize,
    /// 0 means no upper bound.
    pub max_spans: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceStateConfig {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitingConfig {
    /// Spans kept per second across all sampler workers.
    pub spans_per_second: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AndConfig {
    pub and_sub_policy: Vec<PolicyConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NotConfig {
    pub not_sub_policy: Box<PolicyConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DropConfig {
    pub drop_sub_policy: Vec<PolicyConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CompositeConfig {
    pub max_total_spans_per_second: u64,
    pub policy_order: Vec<String>,
    pub composite_sub_policy: Vec<PolicyConfig>,
    pub rate_allocation: Vec<RateAllocation>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RateAllocation {
    pub policy: String,
    pub percent: f64,
}

/// The OTLP status code for a name the Collector accepts.
pub fn status_code(name: &str) -> Option<i32> {
    match name {
        "UNSET" => Some(0),
        "OK" => Some(1),
        "ERROR" => Some(2),
        _ => None,
    }
}

impl PolicyConfig {
    /// The option blocks that are set, by their key.
    fn blocks(&self) -> Vec<(&'static str, PolicyType)> {
        let mut set = Vec::new();
        let mut add = |present: bool, key, kind| {
            if present {
                set.push((key, kind));
            }
        };
        add(self.latency.is_some(), "latency", PolicyType::Latency);
        add(self.status_code.is_some(), "status_code", PolicyType::StatusCode);
        add(self.probabilistic.is_some(), "probabilistic", PolicyType::Probabilistic);
        add(self.string_attribute.is_some(), "string_attribute", PolicyType::StringAttribute);
        add(self.numeric_attribute.is_some(), "numeric_attribute", PolicyType::NumericAttribute);
        add(self.boolean_attribute.is_some(), "boolean_attribute", PolicyType::BooleanAttribute);
        add(self.span_count.is_some(), "span_count", PolicyType::SpanCount);
        add(self.trace_state.is_some(), "trace_state", PolicyType::TraceState);
        add(self.rate_limiting.is_some(), "rate_limiting", PolicyType::RateLimiting);
        add(self.and.is_some(), "and", PolicyType::And);
        add(self.not.is_some(), "not", PolicyType::Not);
        add(self.drop.is_some(), "drop", PolicyType::Drop);
        add(self.composite.is_some(), "composite", PolicyType::Composite);
        set
    }

    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.name.is_empty() {
            problems.push(format!("{path}.name"), "every policy needs a name");
        }
        let Some(kind) = self.kind else {
            problems.push(format!("{path}.type"), "is required");
            return;
        };
        for (key, block) in self.blocks() {
            if block != kind {
                problems
                    .push(format!("{path}.{key}"), format!("does not belong to a policy of type {}", type_name(kind)));
            }
        }
        let missing = |problems: &mut Problems, key: &str| {
            problems.push(format!("{path}.{key}"), format!("is required for type {key}"));
        };
        match kind {
            PolicyType::AlwaysSample => {}
            PolicyType::Latency => match &self.latency {
                None => missing(problems, "latency"),
                Some(c) if c.upper_threshold_ms > 0 && c.upper_threshold_ms < c.threshold_ms => problems.push(
                    format!("{path}.latency.upper_threshold_ms"),
                    "must be 0 (no upper bound) or at least threshold_ms",
                ),
                Some(_) => {}
            },
            PolicyType::StatusCode => match &self.status_code {
                None => missing(problems, "status_code"),
                Some(c) => {
                    if c.status_codes.is_empty() {
                        problems.push(format!("{path}.status_code.status_codes"), "must list at least one code");
                    }
                    for (i, code) in c.status_codes.iter().enumerate() {
                        if status_code(code).is_none() {
                            problems.push(
                                format!("{path}.status_code.status_codes[{i}]"),
                                format!("`{code}` is not one of OK, ERROR, UNSET"),
                            );
                        }
                    }
                }
            },
            PolicyType::Probabilistic => match &self.probabilistic {
                None => missing(problems, "probabilistic"),
                Some(c) if !(0.0..=100.0).contains(&c.sampling_percentage) => {
                    problems.push(format!("{path}.probabilistic.sampling_percentage"), "must be between 0 and 100")
                }
                Some(_) => {}
            },
            PolicyType::StringAttribute => match &self.string_attribute {
                None => missing(problems, "string_attribute"),
                Some(c) => {
                    key_required(&c.key, &format!("{path}.string_attribute.key"), problems);
                    if c.values.is_empty() {
                        problems.push(format!("{path}.string_attribute.values"), "must list at least one value");
                    }
                    if c.enabled_regex_matching {
                        for (i, v) in c.values.iter().enumerate() {
                            if let Err(e) = regex::Regex::new(v) {
                                problems.push(
                                    format!("{path}.string_attribute.values[{i}]"),
                                    format!("invalid regex: {e}"),
                                );
                            }
                        }
                    }
                }
            },
            PolicyType::NumericAttribute => match &self.numeric_attribute {
                None => missing(problems, "numeric_attribute"),
                Some(c) => {
                    key_required(&c.key, &format!("{path}.numeric_attribute.key"), problems);
                    if c.min_value > c.max_value {
                        problems.push(format!("{path}.numeric_attribute.max_value"), "must be at least min_value");
                    }
                }
            },
            PolicyType::BooleanAttribute => match &self.boolean_attribute {
                None => missing(problems, "boolean_attribute"),
                Some(c) => key_required(&c.key, &format!("{path}.boolean_attribute.key"), problems),
            },
            PolicyType::SpanCount => match &self.span_count {
                None => missing(problems, "span_count"),
                Some(c) if c.max_spans > 0 && c.max_spans < c.min_spans => {
                    problems.push(format!("{path}.span_count.max_spans"), "must be 0 (no bound) or at least min_spans")
                }
                Some(_) => {}
            },
            PolicyType::TraceState => match &self.trace_state {
                None => missing(problems, "trace_state"),
                Some(c) => key_required(&c.key, &format!("{path}.trace_state.key"), problems),
            },
            PolicyType::RateLimiting => match &self.rate_limiting {
                None => missing(problems, "rate_limiting"),
                Some(c) if c.spans_per_second == 0 => {
                    problems.push(format!("{path}.rate_limiting.spans_per_second"), "must be at least 1")
                }
                Some(_) => {}
            },
            PolicyType::And => match &self.and {
                None => missing(problems, "and"),
                Some(c) => sub_policies(&c.and_sub_policy, &format!("{path}.and.and_sub_policy"), problems),
            },
            PolicyType::Not => match &self.not {
                None => missing(problems, "not"),
                Some(c) => c.not_sub_policy.validate(&format!("{path}.not.not_sub_policy"), problems),
            },
            PolicyType::Drop => match &self.drop {
                None => missing(problems, "drop"),
                Some(c) => sub_policies(&c.drop_sub_policy, &format!("{path}.drop.drop_sub_policy"), problems),
            },
            PolicyType::Composite => match &self.composite {
                None => missing(problems, "composite"),
                Some(c) => {
                    let at = format!("{path}.composite");
                    if c.max_total_spans_per_second == 0 {
                        problems.push(format!("{at}.max_total_spans_per_second"), "must be at least 1");
                    }
                    sub_policies(&c.composite_sub_policy, &format!("{at}.composite_sub_policy"), problems);
                    let names: Vec<&str> = c.composite_sub_policy.iter().map(|p| p.name.as_str()).collect();
                    for (i, name) in c.policy_order.iter().enumerate() {
                        if !names.contains(&name.as_str()) {
                            problems
                                .push(format!("{at}.policy_order[{i}]"), format!("no sub-policy is named `{name}`"));
                        }
                    }
                    let mut total = 0.0;
                    for (i, allocation) in c.rate_allocation.iter().enumerate() {
                        total += allocation.percent;
                        if !names.contains(&allocation.policy.as_str()) {
                            problems.push(
                                format!("{at}.rate_allocation[{i}].policy"),
                                format!("no sub-policy is named `{}`", allocation.policy),
                            );
                        }
                    }
                    if total > 100.0 {
                        problems
                            .push(format!("{at}.rate_allocation"), format!("percentages add up to {total}, over 100"));
                    }
                }
            },
        }
    }
}

fn key_required(key: &str, path: &str, problems: &mut Problems) {
    if key.is_empty() {
        problems.push(path, "must name an attribute");
    }
}

fn sub_policies(policies: &[PolicyConfig], path: &str, problems: &mut Problems) {
    if policies.is_empty() {
        problems.push(path, "must list at least one policy");
    }
    for (i, policy) in policies.iter().enumerate() {
        policy.validate(&format!("{path}[{i}]"), problems);
    }
}

/// The name a policy type has in YAML: `StringAttribute` → `string_attribute`.
fn type_name(kind: PolicyType) -> String {
    format!("{kind:?}").chars().fold(String::new(), |mut out, c| {
        if c.is_uppercase() && !out.is_empty() {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
        out
    })
}
