//! The `sampler:` section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{ByteSize, Duration, Problems};

use crate::policy::PolicyConfig;
use crate::red::RedMetricsConfig;
use crate::service_graph::ServiceGraphConfig;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// How long after a trace's first span (in Kafka record time) it is decided.
    pub decision_wait: Duration,
    /// Decide this long after the root span arrived, when that is sooner than `decision_wait`. Unset: wait the
    /// full `decision_wait` (the Collector's `decision_wait_after_root_received`).
    pub decision_wait_after_root: Option<Duration>,
    /// Add `tailsampling.policy` (the name of the policy that kept the trace) to every kept span.
    pub record_policy: bool,
    /// Keep every trace, and mark each span with what the policies would have decided
    /// (`tailgate.sampler.would_keep`, `tailgate.sampler.would_keep_policy`), counted in
    /// `tailgate_sampler_dry_run_traces_total`: to try policies before they drop data. Reloadable.
    pub dry_run: bool,
    /// Policies, in the OpenTelemetry Collector's `tail_sampling` schema: for every tenant without its own.
    pub policies: Vec<PolicyConfig>,
    /// Policies of their own for some tenants, by tenant ID: `{ payments: { policies: [...] } }`.
    pub tenants: BTreeMap<String, TenantPolicies>,
    /// Encoded span bytes a worker buffers across its partitions. At the bound, the oldest traces are decided
    /// early (counted with reason `memory`).
    pub max_buffered_bytes: ByteSize,
    /// A trace reaching this many spans is decided at once (reason `trace_spans`); later spans follow the decision.
    pub max_spans_per_trace: usize,
    /// A trace reaching this many encoded bytes is decided at once (reason `trace_bytes`).
    pub max_trace_bytes: ByteSize,
    /// Bytes of kept output (and dead letters) sent to Kafka and not yet acknowledged. Over it, the worker pauses
    /// fetching its partitions until half of it is acknowledged, so an unavailable output topic becomes consumer
    /// lag, not memory.
    pub max_output_bytes_in_flight: ByteSize,
    /// Memory for decisions already made, so late spans follow them (about 64 B each: 64MiB hold ~1M decisions).
    /// To cover the decision lookback (max(600 s, 10 × decision_wait)) it needs traces/s × lookback × 64 B; past it
    /// the oldest decisions are forgotten first (`tailgate_sampler_decision_cache_evictions_total`) and a late span
    /// of a forgotten trace is decided afresh.
    pub decision_cache_bytes: ByteSize,
    /// RED metrics from every span, before sampling.
    pub red_metrics: RedMetricsConfig,
    /// Service-to-service calls from every whole trace, before sampling.
    pub service_graph: ServiceGraphConfig,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            decision_wait: Duration::from_secs(10),
            decision_wait_after_root: None,
            record_policy: false,
            dry_run: false,
            policies: default_policies(),
            tenants: BTreeMap::new(),
            max_buffered_bytes: ByteSize::mib(512),
            max_spans_per_trace: 10_000,
            max_trace_bytes: ByteSize::mib(16),
            max_output_bytes_in_flight: ByteSize::mib(64),
            decision_cache_bytes: ByteSize::mib(64),
            red_metrics: RedMetricsConfig::default(),
            service_graph: ServiceGraphConfig::default(),
        }
    }
}

/// Every error and every slow (≥ 2 s) trace, and 10% of the rest: the seed configuration.
fn default_policies() -> Vec<PolicyConfig> {
    let yaml = "
- { name: errors-always, type: status_code, status_code: { status_codes: [ERROR] } }
- { name: slow-requests, type: latency, latency: { threshold_ms: 2000 } }
- { name: sample-rest, type: probabilistic, probabilistic: { sampling_percentage: 10 } }
";
    serde_yaml::from_str(yaml).expect("the built-in policies parse")
}

impl SamplerConfig {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.decision_wait.get().is_zero() {
            problems.push(format!("{path}.decision_wait"), "must be longer than 0s");
        }
        if self.decision_wait_after_root.is_some_and(|d| d > self.decision_wait) {
            problems.push(format!("{path}.decision_wait_after_root"), "must not be longer than decision_wait");
        }
        if self.max_buffered_bytes.get() < 1 << 20 {
            problems.push(format!("{path}.max_buffered_bytes"), "must be at least 1MiB");
        }
        if self.decision_cache_bytes.get() < 64 * 1024 {
            problems.push(format!("{path}.decision_cache_bytes"), "must be at least 64KiB");
        }
        if self.max_output_bytes_in_flight.get() == 0 {
            problems.push(format!("{path}.max_output_bytes_in_flight"), "must be at least 1");
        }
        if self.max_spans_per_trace == 0 {
            problems.push(format!("{path}.max_spans_per_trace"), "must be at least 1");
        }
        if self.max_trace_bytes.get() == 0 || self.max_trace_bytes > self.max_buffered_bytes {
            problems.push(format!("{path}.max_trace_bytes"), "must be between 1 and max_buffered_bytes");
        }
        self.red_metrics.validate(&format!("{path}.red_metrics"), problems);
        self.service_graph.validate(&format!("{path}.service_graph"), problems);
        if self.policies.is_empty() {
            problems.push(format!("{path}.policies"), "must list at least one policy (leave it out for the defaults)");
        }
        crate::policy::validate_all(&self.policies, &format!("{path}.policies"), problems);
        for (tenant, own) in &self.tenants {
            let at = format!("{path}.tenants.{tenant}.policies");
            if own.policies.is_empty() {
                problems.push(&at, "must list at least one policy (leave the tenant out for the default ones)");
            }
            crate::policy::validate_all(&own.policies, &at, problems);
        }
    }
}

/// One tenant's own policies.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicies {
    pub policies: Vec<PolicyConfig>,
}
