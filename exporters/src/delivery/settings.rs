//! The keys every exporter's section shares — endpoint, batching, request timeout, retries, headers — and their
//! checks. Each backend's config declares them itself (serde's `flatten` would hide misspelt keys from the
//! unknown-key check) and gathers them into a [`Delivery`] for the worker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{ByteSize, Duration, Problems};

use super::retry::Retry;

/// Time allowed for one request, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How an exporter batches: a request is sent when it holds `max_items` items (spans, samples, log lines) or
/// `max_bytes` of input records, or when its oldest record waited `timeout`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Batching {
    pub max_items: usize,
    pub max_bytes: ByteSize,
    pub timeout: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { max_items: 8192, max_bytes: ByteSize::mib(2), timeout: Duration::from_millis(200) }
    }
}

/// The keys every exporter shares, gathered for the worker.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    pub batch: Batching,
    /// Time allowed for one request.
    pub timeout: Duration,
    pub retry_on_failure: Retry,
    /// Extra request headers (gRPC metadata for Jaeger).
    pub headers: BTreeMap<String, String>,
    /// TLS to an `https://` endpoint (HTTP backends).
    pub tls: tailgate_tls::ClientTlsConfig,
    /// Credentials (HTTP backends).
    pub auth: Option<super::credentials::BackendAuth>,
}

impl Delivery {
    /// `path` is the exporter's section; `endpoint` its URL.
    pub fn validate(&self, endpoint: &str, path: &str, problems: &mut Problems) {
        if self.batch.max_items == 0 {
            problems.push(format!("{path}.batch.max_items"), "must be above 0");
        }
        if self.batch.max_bytes.get() < 1024 {
            problems.push(format!("{path}.batch.max_bytes"), "must be at least 1KiB");
        }
        if self.timeout.get().is_zero() {
            problems.push(format!("{path}.timeout"), "must be above 0");
        }
        self.retry_on_failure.validate(path, problems);
        self.tls.validate(&format!("{path}.tls"), problems);
        if let Some(auth) = &self.auth {
            auth.validate(&format!("{path}.auth"), problems);
            // Both would be sent, and a backend reads the first: the static one, not the rotated file.
            if let Some(name) = self.headers.keys().find(|name| name.eq_ignore_ascii_case("authorization")) {
                problems.push(format!("{path}.headers.{name}"), "is set together with auth; give one of them");
            }
        }
        // Credentials over plaintext can be read by anyone on the path: only where the config says so.
        if endpoint.starts_with("http://") && !self.tls.insecure {
            let message = "would be sent in cleartext to an http:// endpoint; use https://, or set tls.insecure: true";
            if self.auth.is_some() {
                problems.push(format!("{path}.auth"), message);
            }
            if let Some(name) = self.headers.keys().find(|name| name.eq_ignore_ascii_case("authorization")) {
                problems.push(format!("{path}.headers.{name}"), message);
            }
        }
        if self.tls.insecure && endpoint.starts_with("https://") {
            problems.push(format!("{path}.tls.insecure"), "is true but the endpoint is https://; remove one");
        }
        // A header the client can't send would be dropped when it is built, and a mistyped `Authorization` would
        // become a stream of 401s; the value itself may be a secret and is never repeated.
        for (name, value) in &self.headers {
            if name.parse::<hyper::header::HeaderName>().is_err() {
                problems.push(format!("{path}.headers.{name}"), "is not a valid header name");
            } else if !is_header_value(value) {
                problems.push(format!("{path}.headers.{name}"), "not a valid HTTP header value");
            }
        }
    }
}

/// Whether `value` can be sent as an HTTP header value and as ASCII gRPC metadata: visible ASCII, spaces and tabs.
/// (HTTP tolerates other bytes as obsolete text; gRPC metadata and most proxies don't.)
pub fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Checks a backend's `endpoint`: required, an `http://` or `https://` URL, and `https://` where `tls` says how to
/// connect (TLS settings on a plaintext endpoint would be silently unused).
pub fn check_endpoint(
    endpoint: &str,
    tls: &tailgate_tls::ClientTlsConfig,
    path: &str,
    example: &str,
    problems: &mut Problems,
) {
    let tls_set = tls.ca_file.is_some()
        || tls.cert_file.is_some()
        || tls.key_file.is_some()
        || tls.server_name_override.is_some();
    if endpoint.is_empty() {
        problems.push(path, format!("is required, e.g. {example}"));
    } else if tls_set && endpoint.starts_with("http://") {
        problems.push(path, "is http:// but `tls` is set; use https:// to connect with TLS");
    } else if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        || endpoint.parse::<hyper::Uri>().is_err()
    {
        problems.push(path, format!("`{endpoint}` is not a URL like {example}"));
    }
}
