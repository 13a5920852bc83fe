//! The `exporters.prometheus_remote_write` section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{Duration, Problems};

use crate::attributes::sanitize_label;
use crate::delivery::credentials::BackendAuth;
use crate::delivery::settings::{check_endpoint, DEFAULT_TIMEOUT};
use crate::delivery::{Batching, Delivery, Retry};

/// Prometheus remote-write 1.0, from the metrics topic.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct PrometheusConfig {
    pub endpoint: String,
    /// Copy every resource attribute onto every series as a label (besides `target_info`). Written `true`, or as
    /// the Collector writes it, `{ enabled: true }`.
    #[serde(deserialize_with = "enabled")]
    pub resource_to_telemetry_conversion: bool,
    /// Labels added to every series.
    pub external_labels: BTreeMap<String, String>,
    /// Delta sums are turned into cumulative counters per series; at most this many series are remembered (and
    /// as many resources' `target_info`).
    pub max_delta_series: usize,
    /// A delta series not updated for this long is forgotten (its next point starts a new total, a counter reset
    /// to `rate()`), and so is a resource's `target_info`: series of pods that are gone make room for new ones.
    pub delta_expiration: Duration,
    pub batch: Batching,
    /// Time allowed for one request.
    pub timeout: Duration,
    pub retry_on_failure: Retry,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// TLS to an `https://` endpoint: CA, client certificate, server name.
    pub tls: tailgate_tls::ClientTlsConfig,
    /// A bearer token or basic auth, from files.
    pub auth: Option<BackendAuth>,
    /// The header each batch's tenant is sent in (Mimir's and Cortex's `X-Scope-OrgID`); the default tenant's
    /// batches carry only `headers`.
    pub tenant_header: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            endpoint: String::new(),
            resource_to_telemetry_conversion: false,
            external_labels: BTreeMap::new(),
            max_delta_series: 100_000,
            delta_expiration: Duration::from_secs(5 * 60),
            batch: Batching::default(),
            timeout: DEFAULT_TIMEOUT,
            retry_on_failure: Retry::default(),
            headers: BTreeMap::new(),
            tls: Default::default(),
            auth: None,
            tenant_header: "X-Scope-OrgID".to_owned(),
        }
    }
}

/// A switch written as a boolean, or as the Collector's `{ enabled: <bool> }`.
pub(crate) fn enabled<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Enabled {
        enabled: bool,
    }
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "true, false or { enabled: <bool> }")]
    enum Switch {
        Bool(bool),
        Collector(Enabled),
    }
    Ok(match Switch::deserialize(deserializer)? {
        Switch::Bool(on) => on,
        Switch::Collector(Enabled { enabled }) => enabled,
    })
}

impl PrometheusConfig {
    /// `path` is this section's (`exporters.prometheus_remote_write`).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        check_endpoint(
            &self.endpoint,
            &self.tls,
            &format!("{path}.endpoint"),
            "http://prometheus:9090/api/v1/write",
            problems,
        );
        for name in self.external_labels.keys() {
            if sanitize_label(name) != *name || name.starts_with("__") {
                problems.push(
                    format!("{path}.external_labels.{name}"),
                    "is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
                );
            }
        }
        if hyper::header::HeaderName::try_from(self.tenant_header.as_str()).is_err() {
            problems
                .push(format!("{path}.tenant_header"), format!("`{}` is not an HTTP header name", self.tenant_header));
        }
        self.delivery().validate(&self.endpoint, path, problems);
    }

    /// The shared keys, for the worker.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            batch: self.batch.clone(),
            timeout: self.timeout,
            retry_on_failure: self.retry_on_failure.clone(),
            headers: self.headers.clone(),
            tls: self.tls.clone(),
            auth: self.auth.clone(),
        }
    }
}
