//! The `exporters.jaeger` section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{Duration, Problems};

use crate::delivery::credentials::BackendAuth;
use crate::delivery::settings::{check_endpoint, DEFAULT_TIMEOUT};
use crate::delivery::{Batching, Delivery, Retry};

/// OTLP/gRPC to Jaeger (or Grafana Tempo, or any OTLP receiver), from the sampled-spans topic.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct JaegerConfig {
    /// `http://` for plaintext, `https://` for TLS.
    pub endpoint: String,
    pub compression: Compression,
    /// With an `https://` endpoint: the CA to trust (else the system's), a client certificate, the server name.
    pub tls: tailgate_tls::ClientTlsConfig,
    /// A bearer token or basic auth, from files, sent as `authorization` metadata.
    pub auth: Option<BackendAuth>,
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
            tls: Default::default(),
            auth: None,
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

impl JaegerConfig {
    /// `path` is this section's (`exporters.jaeger`).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        check_endpoint(&self.endpoint, &self.tls, &format!("{path}.endpoint"), "http://jaeger:4317", problems);
        if self.tls.min_version != tailgate_tls::TlsVersion::default() {
            // tonic's TLS connector offers no way to narrow the versions; refuse rather than ignore it.
            problems.push(
                format!("{path}.tls.min_version"),
                "is not supported for the gRPC exporter (1.2 and 1.3 are offered)",
            );
        }
        for name in self.headers.keys().filter(|name| name.to_ascii_lowercase().ends_with("-bin")) {
            problems.push(
                format!("{path}.headers.{name}"),
                "gRPC metadata keys ending in -bin take binary values; not supported",
            );
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
