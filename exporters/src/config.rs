//! The `exporters:` section: one optional section per backend. An exporter that is absent does not run.

use serde::{Deserialize, Serialize};
use tailgate_config::Problems;

use crate::{jaeger, loki, prometheus};

// The section's types, where readers of `exporters:` look for them; each is defined with its backend (or, for the
// keys every exporter shares, with delivery).
pub use crate::delivery::{Batching, Delivery, Retry};
pub use crate::jaeger::{Compression, JaegerConfig, TlsConfig};
pub use crate::loki::{LineTooLong, LokiConfig};
pub use crate::prometheus::PrometheusConfig;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ExportersConfig {
    pub jaeger: Option<JaegerConfig>,
    pub prometheus_remote_write: Option<PrometheusConfig>,
    pub loki: Option<LokiConfig>,
}

impl ExportersConfig {
    /// Names of the configured exporters, in a fixed order.
    pub fn configured(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.jaeger.is_some() {
            names.push(jaeger::NAME);
        }
        if self.prometheus_remote_write.is_some() {
            names.push(prometheus::NAME);
        }
        if self.loki.is_some() {
            names.push(loki::NAME);
        }
        names
    }

    /// Each configured backend checks its own section.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(config) = &self.jaeger {
            config.validate(&format!("{path}.jaeger"), problems);
        }
        if let Some(config) = &self.prometheus_remote_write {
            config.validate(&format!("{path}.prometheus_remote_write"), problems);
        }
        if let Some(config) = &self.loki {
            config.validate(&format!("{path}.loki"), problems);
        }
    }
}
