//! The `sampler:` section.

use serde::{Deserialize, Serialize};
use tailgate_config::{Duration, Problems};

use crate::policy::PolicyConfig;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// How long after a trace's first span (in Kafka record time) it is decided.
    pub decision_wait: Duration,
    /// Policies, in the OpenTelemetry Collector's `tail_sampling` schema.
    pub policies: Vec<PolicyConfig>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { decision_wait: Duration::from_secs(10), policies: Vec::new() }
    }
}

impl SamplerConfig {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.decision_wait.get().is_zero() {
            problems.push(format!("{path}.decision_wait"), "must be longer than 0s");
        }
        crate::policy::validate_all(&self.policies, &format!("{path}.policies"), problems);
    }
}
