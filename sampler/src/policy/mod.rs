//! Tail-sampling policies in the OpenTelemetry Collector's `tail_sampling` schema, with its semantics.
//!
//! A policy looks at a whole trace and returns a [`Decision`]; [`Policies::decide`] combines them as the Collector
//! does: any `Dropped` drops the trace; otherwise any `InvertNotSampled` (an inverted match that matched) drops it;
//! otherwise any `Sampled` or `InvertSampled` keeps it; otherwise it is dropped.
//!
//! Time is event time: the rate-limiting policies take the trace's decision time in milliseconds from the caller
//! (Kafka record time), never the wall clock, so a replay makes the same decisions as the original run.

mod attributes;
mod config;
mod probabilistic;
mod rate;
pub(crate) mod trace;

use std::collections::HashSet;

pub use config::{PolicyConfig, PolicyType};
pub use probabilistic::{probabilistic_threshold, tracestate_threshold};
pub use trace::TraceView;

use tailgate_config::Problems;

use attributes::Matcher;
use rate::{Composite, TokenBucket};

/// One policy's verdict on a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Sampled,
    NotSampled,
    /// An inverted match that did not match: keep.
    InvertSampled,
    /// An inverted match that matched: drop, whatever other policies say (except `Dropped`, which also drops).
    InvertNotSampled,
    /// A `drop` policy matched: drop, whatever other policies say.
    Dropped,
}

impl Decision {
    fn keeps(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }
}

/// The verdict of all policies on a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub keep: bool,
    /// The first policy that kept the trace, by name.
    pub policy: Option<String>,
    /// Whether the keeping policy was probabilistic (its threshold then goes into `tracestate`).
    pub probabilistic: Option<f64>,
}

/// A compiled policy.
#[derive(Debug)]
enum Policy {
    AlwaysSample,
    Latency { lower_ns: u64, upper_ns: Option<u64> },
    StatusCode(HashSet<i32>),
    Probabilistic { salt: String, threshold: u64, percentage: f64 },
    Attribute { key: String, matcher: Matcher, invert: bool },
    SpanCount { min: usize, max: Option<usize> },
    TraceState { key: String, values: HashSet<String> },
    RateLimiting(TokenBucket),
    And(Vec<Policy>),
    Not(Box<Policy>),
    Drop(Vec<Policy>),
    Composite(Composite),
}

/// The configured policies, ready to decide.
#[derive(Debug)]
pub struct Policies {
    policies: Vec<(String, Policy)>,
}

impl Policies {
    /// Compiles validated configs. `validate_all` must have passed.
    pub fn build(configs: &[PolicyConfig]) -> Result<Policies, Problems> {
        let mut problems = Problems::default();
        validate_all(configs, "sampler.policies", &mut problems);
        problems.into_result()?;
        Ok(Policies { policies: configs.iter().map(|c| (c.name.clone(), build(c))).collect() })
    }

    /// Sets this worker's share of the cluster-wide rate budgets: the fraction of the spans topic's partitions it
    /// owns, so N workers together keep what the configuration says rather than N times as much.
    pub fn set_rate_share(&mut self, share: f64) {
        for (_, policy) in &mut self.policies {
            policy.set_rate_share(share);
        }
    }

    /// Decides `trace` at event time `now_ms`.
    pub fn decide(&mut self, trace: &TraceView<'_>, now_ms: i64) -> Verdict {
        let mut keeper: Option<(&str, Option<f64>)> = None;
        let mut inverted_drop = false;
        for (name, policy) in &mut self.policies {
            match policy.evaluate(trace, now_ms) {
                Decision::Dropped => return Verdict { keep: false, policy: None, probabilistic: None },
                Decision::InvertNotSampled => inverted_drop = true,
                decision if decision.keeps() && keeper.is_none() => {
                    let probabilistic = match policy {
                        Policy::Probabilistic { percentage, .. } => Some(*percentage),
                        _ => None,
                    };
                    keeper = Some((name.as_str(), probabilistic));
                }
                _ => {}
            }
        }
        match keeper {
            Some((name, probabilistic)) if !inverted_drop => {
                Verdict { keep: true, policy: Some(name.to_owned()), probabilistic }
            }
            _ => Verdict { keep: false, policy: None, probabilistic: None },
        }
    }
}

impl Policy {
    fn set_rate_share(&mut self, share: f64) {
        match self {
            Policy::RateLimiting(bucket) => bucket.set_share(share),
            Policy::Composite(composite) => composite.set_share(share),
            Policy::And(subs) | Policy::Drop(subs) => subs.iter_mut().for_each(|p| p.set_rate_share(share)),
            Policy::Not(sub) => sub.set_rate_share(share),
            _ => {}
        }
    }

    fn evaluate(&mut self, trace: &TraceView<'_>, now_ms: i64) -> Decision {
        let sampled = |yes: bool| if yes { Decision::Sampled } else { Decision::NotSampled };
        match self {
            Policy::AlwaysSample => Decision::Sampled,
            Policy::Latency { lower_ns, upper_ns } => {
                let duration = trace.duration_ns();
                sampled(duration >= *lower_ns && upper_ns.is_none_or(|upper| duration <= upper))
            }
            Policy::StatusCode(codes) => sampled(codes.iter().any(|code| trace.has_status(*code))),
            Policy::Probabilistic { salt, threshold, .. } => {
                sampled(probabilistic::hash(salt, trace.trace_id) <= *threshold)
            }
            Policy::Attribute { key, matcher, invert } => {
                let matched = trace.any_attribute(key, |value| matcher.matches(value));
                match (*invert, matched) {
                    (false, matched) => sampled(matched),
                    (true, true) => Decision::InvertNotSampled,
                    (true, false) => Decision::InvertSampled,
                }
            }
            Policy::SpanCount { min, max } => {
                let count = trace.span_count();
                sampled(count >= *min && max.is_none_or(|max| count <= max))
            }
            Policy::TraceState { key, values } => sampled(trace.any_span(|span| {
                span.trace_state()
                    .split(',')
                    .filter_map(|member| member.trim().split_once('='))
                    .any(|(k, v)| k == key && values.contains(v))
            })),
            Policy::RateLimiting(bucket) => sampled(bucket.try_take(trace.span_count() as f64, now_ms)),
            Policy::And(subs) => sampled(subs.iter_mut().all(|p| p.evaluate(trace, now_ms).keeps())),
            Policy::Not(sub) => match sub.evaluate(trace, now_ms) {
                d if d.keeps() => Decision::NotSampled,
                _ => Decision::Sampled,
            },
            Policy::Drop(subs) => {
                if subs.iter_mut().all(|p| p.evaluate(trace, now_ms).keeps()) {
                    Decision::Dropped
                } else {
                    Decision::NotSampled
                }
            }
            Policy::Composite(composite) => composite.evaluate(trace, now_ms),
        }
    }
}

fn build(config: &PolicyConfig) -> Policy {
    use PolicyType as T;
    match config.kind {
        Some(T::AlwaysSample) | None => Policy::AlwaysSample,
        Some(T::Latency) => {
            let c = config.latency.clone().unwrap_or_default();
            Policy::Latency {
                lower_ns: c.threshold_ms * 1_000_000,
                upper_ns: (c.upper_threshold_ms > 0).then(|| c.upper_threshold_ms * 1_000_000),
            }
        }
        Some(T::StatusCode) => Policy::StatusCode(
            config.status_code.iter().flat_map(|c| &c.status_codes).filter_map(|s| config::status_code(s)).collect(),
        ),
        Some(T::Probabilistic) => {
            let c = config.probabilistic.clone().unwrap_or_default();
            Policy::Probabilistic {
                salt: c.hash_salt,
                threshold: probabilistic_threshold(c.sampling_percentage),
                percentage: c.sampling_percentage,
            }
        }
        Some(T::StringAttribute) => {
            let c = config.string_attribute.clone().unwrap_or_default();
            let matcher = if c.enabled_regex_matching {
                Matcher::Regex(c.values.iter().filter_map(|v| regex::Regex::new(&format!("^(?:{v})$")).ok()).collect())
            } else {
                Matcher::Strings(c.values.iter().cloned().collect())
            };
            Policy::Attribute { key: c.key, matcher, invert: c.invert_match }
        }
        Some(T::NumericAttribute) => {
            let c = config.numeric_attribute.clone().unwrap_or_default();
            Policy::Attribute { key: c.key, matcher: Matcher::Range(c.min_value, c.max_value), invert: c.invert_match }
        }
        Some(T::BooleanAttribute) => {
            let c = config.boolean_attribute.clone().unwrap_or_default();
            Policy::Attribute { key: c.key, matcher: Matcher::Bool(c.value), invert: c.invert_match }
        }
        Some(T::SpanCount) => {
            let c = config.span_count.clone().unwrap_or_default();
            Policy::SpanCount { min: c.min_spans, max: (c.max_spans > 0).then_some(c.max_spans) }
        }
        Some(T::TraceState) => {
            let c = config.trace_state.clone().unwrap_or_default();
            Policy::TraceState { key: c.key, values: c.values.into_iter().collect() }
        }
        Some(T::RateLimiting) => {
            let c = config.rate_limiting.clone().unwrap_or_default();
            Policy::RateLimiting(TokenBucket::new(c.spans_per_second as f64))
        }
        Some(T::And) => Policy::And(config.and.iter().flat_map(|c| &c.and_sub_policy).map(build).collect()),
        Some(T::Not) => {
            Policy::Not(Box::new(config.not.as_ref().map(|c| build(&c.not_sub_policy)).unwrap_or(Policy::AlwaysSample)))
        }
        Some(T::Drop) => Policy::Drop(config.drop.iter().flat_map(|c| &c.drop_sub_policy).map(build).collect()),
        Some(T::Composite) => {
            let c = config.composite.clone().unwrap_or_default();
            let subs = c.composite_sub_policy.iter().map(|p| (p.name.clone(), build(p))).collect();
            Policy::Composite(Composite::new(c, subs))
        }
    }
}

/// Validates every policy, reporting each problem with its path.
pub fn validate_all(configs: &[PolicyConfig], path: &str, problems: &mut Problems) {
    let mut names = HashSet::new();
    for (i, config) in configs.iter().enumerate() {
        let at = format!("{path}[{i}]");
        config.validate(&at, problems);
        if config.name.len() > tailgate_proto::split::MAX_POLICY_NAME {
            problems.push(
                format!("{at}.name"),
                format!(
                    "is {} bytes; at most {} (it is written into every span the policy keeps)",
                    config.name.len(),
                    tailgate_proto::split::MAX_POLICY_NAME
                ),
            );
        }
        if !config.name.is_empty() && !names.insert(config.name.as_str()) {
            problems.push(format!("{at}.name"), format!("`{}` is used by another policy", config.name));
        }
    }
}

#[cfg(test)]
mod tests;
