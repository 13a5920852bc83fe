//! The `exporters.loki` section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{ByteSize, Duration, Problems};

use crate::delivery::credentials::BackendAuth;
use crate::delivery::settings::{check_endpoint, is_header_value, DEFAULT_TIMEOUT};
use crate::delivery::{Batching, Delivery, Retry};

/// Loki's push API, from the logs topic.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LokiConfig {
    /// `push`: `…/loki/api/v1/push`, streams labelled by Tailgate (`labels`). `otlp`: Loki 3's native OTLP endpoint,
    /// `…/otlp/v1/logs`, where Loki chooses the labels (its `otlp_config`) and `labels`, `max_line_bytes` and
    /// `line_too_long` do not apply.
    pub protocol: Protocol,
    pub endpoint: String,
    /// Resource attributes that become stream labels (dots become underscores). Keep this short: every distinct
    /// combination is a Loki stream. `level` is always added from the severity.
    pub labels: Vec<String>,
    /// `X-Scope-OrgID`, for a multi-tenant Loki.
    pub tenant_id: Option<String>,
    /// Loki's `max_line_size` (256KiB by default there).
    pub max_line_bytes: ByteSize,
    /// What to do with a longer line: `truncate` it, or `reject` it (dropped and counted).
    pub line_too_long: LineTooLong,
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
}

impl Default for LokiConfig {
    fn default() -> Self {
        LokiConfig {
            protocol: Protocol::Push,
            endpoint: String::new(),
            labels: vec!["service.name".into(), "service.namespace".into(), "deployment.environment".into()],
            tenant_id: None,
            max_line_bytes: ByteSize::b(256 * 1024),
            line_too_long: LineTooLong::Truncate,
            batch: Batching::default(),
            timeout: DEFAULT_TIMEOUT,
            retry_on_failure: Retry::default(),
            headers: BTreeMap::new(),
            tls: Default::default(),
            auth: None,
        }
    }
}

/// How logs are sent to Loki.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The push API, protobuf with snappy.
    #[default]
    Push,
    /// OTLP/HTTP to `/otlp/v1/logs`, protobuf with gzip: the records as they are, joined.
    Otlp,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LineTooLong {
    #[default]
    Truncate,
    Reject,
}

impl LokiConfig {
    /// `path` is this section's (`exporters.loki`).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        let (example, other, other_protocol) = match self.protocol {
            Protocol::Push => ("http://loki:3100/loki/api/v1/push", "/otlp/v1/logs", "otlp"),
            Protocol::Otlp => ("http://loki:3100/otlp/v1/logs", "/loki/api/v1/push", "push"),
        };
        check_endpoint(&self.endpoint, &self.tls, &format!("{path}.endpoint"), example, problems);
        if self.endpoint.trim_end_matches('/').ends_with(other) {
            problems.push(
                format!("{path}.endpoint"),
                format!("is Loki's {other_protocol} endpoint; set `protocol: {other_protocol}`, or use {example}"),
            );
        }
        if self.labels.len() > 15 {
            problems.push(
                format!("{path}.labels"),
                "more than 15 stream labels; Loki refuses streams with more (limits_config.max_label_names_per_series)",
            );
        }
        if self.max_line_bytes.get() == 0 {
            problems.push(format!("{path}.max_line_bytes"), "must be above 0");
        }
        if self.tenant_id.as_deref().is_some_and(|tenant| !is_header_value(tenant)) {
            problems.push(format!("{path}.tenant_id"), "not a valid HTTP header value (X-Scope-OrgID)");
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
