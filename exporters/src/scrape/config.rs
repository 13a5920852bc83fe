//! The `exporters.prometheus` section, in the Collector's `prometheus` exporter's keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{Duration, Problems};

use crate::attributes::sanitize_label;

/// A Prometheus scrape endpoint serving the metrics topic's current values.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ScrapeConfig {
    /// `host:port` to serve `/metrics` on. The Collector's examples use `0.0.0.0:8889`; the default listens on
    /// this host only (see SECURITY.md).
    pub endpoint: String,
    /// TLS on the endpoint (the Collector's `tls`); with `client_ca_file`, mutual TLS: only a scraper with a
    /// certificate of that CA (Prometheus's `tls_config.cert_file`) is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<tailgate_tls::ServerTlsConfig>,
    /// Credentials a scraper must send (Prometheus's `authorization: { credentials_file }` or `basic_auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<tailgate_tls::ScrapeAuth>,
    /// Prefix of every metric name, joined with `_` (not `target_info`).
    pub namespace: String,
    /// Labels on every series.
    pub const_labels: BTreeMap<String, String>,
    /// Every resource attribute as a label on every series (besides `target_info`); `true` or `{ enabled: true }`.
    #[serde(deserialize_with = "crate::prometheus::config::enabled")]
    pub resource_to_telemetry_conversion: bool,
    /// A series not updated for this long (by its points' time) is no longer served.
    pub metric_expiration: Duration,
    /// Serve OpenMetrics to scrapers that ask for it (Prometheus does), else the text format 0.0.4 only.
    pub enable_open_metrics: bool,
    /// Give each sample its point's time, instead of letting Prometheus stamp it with the scrape's.
    pub send_timestamps: bool,
    /// How far back a newly owned partition is read to rebuild its current values; `metric_expiration` unless set
    /// (older values would be expired anyway).
    pub look_back: Option<Duration>,
    /// Series served at most (memory bound); more are dropped and counted (`reason="series_limit"`). Also bounds
    /// the delta sums accumulated and the resources' `target_info`.
    pub max_series: usize,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            endpoint: "127.0.0.1:8889".to_owned(),
            tls: None,
            auth: None,
            namespace: String::new(),
            const_labels: BTreeMap::new(),
            resource_to_telemetry_conversion: false,
            metric_expiration: Duration::from_secs(5 * 60),
            enable_open_metrics: false,
            send_timestamps: false,
            look_back: None,
            max_series: 100_000,
        }
    }
}

impl ScrapeConfig {
    /// The look-back a newly owned partition is read from.
    pub fn look_back(&self) -> std::time::Duration {
        self.look_back.unwrap_or(self.metric_expiration).get()
    }

    /// `path` is this section's (`exporters.prometheus`).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(tls) = &self.tls {
            tls.validate(&format!("{path}.tls"), problems);
        }
        if let Some(auth) = &self.auth {
            auth.validate(&format!("{path}.auth"), problems);
        }
        let port = self.endpoint.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
            problems.push(
                format!("{path}.endpoint"),
                format!("`{}` is not host:port (for example 0.0.0.0:8889)", self.endpoint),
            );
        }
        let name_ok = |name: &str| {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        if !self.namespace.is_empty() && !name_ok(&self.namespace) {
            problems.push(
                format!("{path}.namespace"),
                format!("`{}` is not a valid start of a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", self.namespace),
            );
        }
        for name in self.const_labels.keys() {
            if sanitize_label(name) != *name || name.starts_with("__") {
                problems.push(
                    format!("{path}.const_labels.{name}"),
                    "is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
                );
            }
        }
        if self.metric_expiration.get().is_zero() {
            problems.push(format!("{path}.metric_expiration"), "must be above 0");
        }
        if self.look_back.is_some_and(|d| d.get().is_zero()) {
            problems.push(format!("{path}.look_back"), "must be above 0 (or left out: metric_expiration)");
        }
        if self.max_series == 0 {
            problems.push(format!("{path}.max_series"), "must be above 0");
        }
    }
}
