//! The `exporters:` section. An exporter that is absent does not run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{ByteSize, Duration, Problems};

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
            names.push(crate::JAEGER);
        }
        if self.prometheus_remote_write.is_some() {
            names.push(crate::PROMETHEUS);
        }
        if self.loki.is_some() {
            names.push(crate::LOKI);
        }
        names
    }

    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(jaeger) = &self.jaeger {
            let path = format!("{path}.jaeger");
            check_endpoint(&jaeger.endpoint, &format!("{path}.endpoint"), "http://jaeger:4317", true, problems);
            if let Some(ca) = &jaeger.tls.ca_file {
                if !jaeger.endpoint.starts_with("https://") {
                    problems.push(format!("{path}.tls.ca_file"), "is set but the endpoint is not https://");
                } else if let Err(error) = std::fs::metadata(ca) {
                    problems.push(format!("{path}.tls.ca_file"), format!("cannot read {}: {error}", ca.display()));
                }
            }
            jaeger.delivery().validate(&path, problems);
        }
        if let Some(prometheus) = &self.prometheus_remote_write {
            let path = format!("{path}.prometheus_remote_write");
            check_endpoint(
                &prometheus.endpoint,
                &format!("{path}.endpoint"),
                "http://prometheus:9090/api/v1/write",
                false,
                problems,
            );
            for name in prometheus.external_labels.keys() {
                if crate::prometheus::sanitize_label(name) != *name || name.starts_with("__") {
                    problems.push(
                        format!("{path}.external_labels.{name}"),
                        "is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
                    );
                }
            }
            prometheus.delivery().validate(&path, problems);
        }
        if let Some(loki) = &self.loki {
            let path = format!("{path}.loki");
            check_endpoint(
                &loki.endpoint,
                &format!("{path}.endpoint"),
                "http://loki:3100/loki/api/v1/push",
                false,
                problems,
            );
            if loki.labels.len() > 15 {
                problems.push(
                    format!("{path}.labels"),
                    "more than 15 stream labels; Loki refuses streams with more (limits_config.max_label_names_per_series)",
                );
            }
            if loki.max_line_bytes.get() == 0 {
                problems.push(format!("{path}.max_line_bytes"), "must be above 0");
            }
            loki.delivery().validate(&path, problems);
        }
    }
}

fn check_endpoint(endpoint: &str, path: &str, example: &str, tls: bool, problems: &mut Problems) {
    if endpoint.is_empty() {
        problems.push(path, format!("is required, e.g. {example}"));
    } else if endpoint.starts_with("https://") && !tls {
        problems.push(
            path,
            "TLS to this backend is not supported yet; use http:// (through a TLS-terminating sidecar if needed)",
        );
    } else if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        || endpoint.parse::<hyper::Uri>().is_err()
    {
        problems.push(path, format!("`{endpoint}` is not a URL like {example}"));
    }
}

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
}

impl Delivery {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.batch.max_items == 0 {
            problems.push(format!("{path}.batch.max_items"), "must be above 0");
        }
        if self.batch.max_bytes.get() < 1024 {
            problems.push(format!("{path}.batch.max_bytes"), "must be at least 1KiB");
        }
        if self.timeout.get().is_zero() {
            problems.push(format!("{path}.timeout"), "must be above 0");
        }
        let retry = &self.retry_on_failure;
        if retry.initial_interval.get().is_zero() {
            problems.push(format!("{path}.retry_on_failure.initial_interval"), "must be above 0");
        }
        if retry.max_interval < retry.initial_interval {
            problems.push(format!("{path}.retry_on_failure.max_interval"), "must be at least initial_interval");
        }
        if !(1.0..=10.0).contains(&retry.multiplier) {
            problems.push(format!("{path}.retry_on_failure.multiplier"), "must be between 1 and 10");
        }
        if !(0.0..=1.0).contains(&retry.randomization_factor) {
            problems.push(format!("{path}.retry_on_failure.randomization_factor"), "must be between 0 and 1");
        }
        for name in self.headers.keys() {
            if name.parse::<hyper::header::HeaderName>().is_err() {
                problems.push(format!("{path}.headers.{name}"), "is not a valid header name");
            }
        }
    }
}

/// The shared keys, declared in each exporter's section (serde's `flatten` would hide misspelt keys from the
/// unknown-key check).
macro_rules! delivery_keys {
    ($config:ident) => {
        impl $config {
            pub fn delivery(&self) -> Delivery {
                Delivery {
                    batch: self.batch.clone(),
                    timeout: self.timeout,
                    retry_on_failure: self.retry_on_failure.clone(),
                    headers: self.headers.clone(),
                }
            }
        }
    };
}

/// Exponential back-off with jitter, as the Collector's `retry_on_failure` — except that there is no
/// `max_elapsed_time`: a retryable failure is retried until it succeeds, and the Kafka lag grows meanwhile.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Retry {
    pub initial_interval: Duration,
    pub max_interval: Duration,
    pub multiplier: f64,
    /// Each wait is the back-off times a random factor in `[1 - r, 1 + r]`.
    pub randomization_factor: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            multiplier: 2.0,
            randomization_factor: 0.5,
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

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// TLS settings for an `https://` endpoint, named as in the Collector's `configtls`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry, when it differs from the endpoint's host.
    pub server_name_override: Option<String>,
}

/// Prometheus remote-write 1.0, from the metrics topic.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct PrometheusConfig {
    pub endpoint: String,
    /// Copy every resource attribute onto every series as a label (besides `target_info`).
    pub resource_to_telemetry_conversion: bool,
    /// Labels added to every series.
    pub external_labels: BTreeMap<String, String>,
    /// Delta sums are turned into cumulative counters per series; at most this many series are remembered.
    pub max_delta_series: usize,
    pub batch: Batching,
    /// Time allowed for one request.
    pub timeout: Duration,
    pub retry_on_failure: Retry,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
}

/// Loki's push API, from the logs topic.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LokiConfig {
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
}

impl Default for LokiConfig {
    fn default() -> Self {
        LokiConfig {
            endpoint: String::new(),
            labels: vec!["service.name".into(), "service.namespace".into(), "deployment.environment".into()],
            tenant_id: None,
            max_line_bytes: ByteSize::b(256 * 1024),
            line_too_long: LineTooLong::Truncate,
            batch: Batching::default(),
            timeout: DEFAULT_TIMEOUT,
            retry_on_failure: Retry::default(),
            headers: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LineTooLong {
    #[default]
    Truncate,
    Reject,
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

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            endpoint: String::new(),
            resource_to_telemetry_conversion: false,
            external_labels: BTreeMap::new(),
            max_delta_series: 100_000,
            batch: Batching::default(),
            timeout: DEFAULT_TIMEOUT,
            retry_on_failure: Retry::default(),
            headers: BTreeMap::new(),
        }
    }
}

delivery_keys!(JaegerConfig);
delivery_keys!(PrometheusConfig);
delivery_keys!(LokiConfig);
