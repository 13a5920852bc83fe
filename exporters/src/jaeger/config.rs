//! The `exporters.jaeger` section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{Duration, Problems};

use crate::delivery::settings::{check_endpoint, DEFAULT_TIMEOUT};
use crate::delivery::{Batching, Delivery, Retry};

/// OTLP/gRPC to Jaeger (or Grafana Tempo, or any OTLP receiver), from the sampled-spans topic.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct JaegerConfig {
    /// `http://` for plaintext, `https://` for TLS.
    pub endpoint: String,
    pub compression: Compression,
    /// With an `https://` endpoint: trust this CA (PEM) besides the system's roots, and check this server name.
    pub tls: TlsConfig,
    pub batch: Batching,
    /// Time allowed for one request.
    pub timeout: Duration,
    pub retry_on_failure: Retry,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
}

impl Default for JaegerConfig {
    fn default() -> Self {
        JaegerConfig {
            endpoint: String::new(),
            compression: Compression::Gzip,
            tls: TlsConfig::default(),
            batch: Batching::default(),
            timeout: DEFAULT_TIMEOUT,
            retry_on_failure: Retry::default(),
            headers: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    #[default]
    Gzip,
}

/// TLS settings for an `https://` endpoint, named as in the Collector's `configtls`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry, when it differs from the endpoint's host.
    pub server_name_override: Option<String>,
}

impl JaegerConfig {
    /// `path` is this section's (`exporters.jaeger`).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        check_endpoint(&self.endpoint, &format!("{path}.endpoint"), "http://jaeger:4317", true, problems);
        if let Some(ca) = &self.tls.ca_file {
            if !self.endpoint.starts_with("https://") {
                problems.push(format!("{path}.tls.ca_file"), "is set but the endpoint is not https://");
            } else if let Err(error) = std::fs::metadata(ca) {
                problems.push(format!("{path}.tls.ca_file"), format!("cannot read {}: {error}", ca.display()));
            }
        }
        for name in self.headers.keys().filter(|name| name.to_ascii_lowercase().ends_with("-bin")) {
            problems.push(
                format!("{path}.headers.{name}"),
                "gRPC metadata keys ending in -bin take binary values; not supported",
            );
        }
        self.delivery().validate(path, problems);
    }

    /// The shared keys, for the worker.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            batch: self.batch.clone(),
            timeout: self.timeout,
            retry_on_failure: self.retry_on_failure.clone(),
            headers: self.headers.clone(),
        }
    }
}
