//! Tailgate's own telemetry: Prometheus `/metrics`, `/health` and `/ready` on one port, and logs.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tailgate_config::Problems;
use tailgate_tls::{Limits, Listener, ServerTls, ServerTlsConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The `telemetry:` section.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    pub metrics: MetricsConfig,
    pub logs: LogsConfig,
}

/// The `telemetry.metrics:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/health` and `/ready`; loopback by default, like the receivers.
    pub endpoint: String,
    /// TLS (and with `client_ca_file`, mutual TLS: Prometheus scrapes with `tls_config.cert_file`) on this port.
    pub tls: Option<ServerTlsConfig>,
    /// Credentials a scraper must send for `/metrics` (Prometheus's `authorization: { credentials_file }` or
    /// `basic_auth`); `/health` and `/ready` stay open to probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<tailgate_tls::ScrapeAuth>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { endpoint: "127.0.0.1:8888".to_owned(), tls: None, auth: None }
    }
}

/// The `telemetry.logs:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct LogsConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it with a full filter.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig { level: "info".to_owned(), format: LogFormat::Text }
    }
}

impl TelemetryConfig {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.metrics.endpoint.parse::<std::net::SocketAddr>().is_err() {
            problems.push(
                format!("{path}.metrics.endpoint"),
                format!("`{}` is not an address like 0.0.0.0:8888", self.metrics.endpoint),
            );
        }
        if let Some(tls) = &self.metrics.tls {
            tls.validate(&format!("{path}.metrics.tls"), problems);
        }
        if let Some(auth) = &self.metrics.auth {
            auth.validate(&format!("{path}.metrics.auth"), problems);
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.logs.level.as_str()) {
            problems.push(
                format!("{path}.logs.level"),
                format!("`{}` is not one of error, warn, info, debug, trace", self.logs.level),
            );
        }
    }
}

pub fn init_logs(config: &LogsConfig) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // librdkafka and the embedded broker are chatty below warn.
        tracing_subscriber::EnvFilter::new(format!(
            "warn,tailgate={0},tailgate_ingest={0},tailgate_kafka={0}",
            config.level
        ))
    });
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match config.format {
        LogFormat::Json => layer.json().boxed(),
        LogFormat::Text => layer.boxed(),
    };
    use tracing_subscriber::filter::FilterExt as _;
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter.and(NotBrokerNoise))).try_init();
}

/// Leaves out what the embedded broker logs as an ERROR but is none: a topic created that exists already (two
/// roles starting together both create it; the client is told, and the topic is there).
struct NotBrokerNoise;

impl<S> tracing_subscriber::layer::Filter<S> for NotBrokerNoise {
    fn enabled(&self, _: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        true
    }

    /// No bound of its own: the level filter beside it keeps its own (the broker logs much at debug, with whole
    /// requests as fields; they must not be built only to be left out).
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() != tracing::Level::ERROR || !metadata.target().starts_with("tansu") {
            return true;
        }
        struct Finds(bool);
        impl tracing::field::Visit for Finds {
            fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0 |= format!("{value:?}").contains("TopicAlreadyExists");
            }
        }
        let mut finds = Finds(false);
        event.record(&mut finds);
        !finds.0
    }
}

/// Installs the global Prometheus recorder, once per process.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".to_owned()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                )
                .expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (tests); ours still renders what it records.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Something that can say whether this process should receive traffic.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Binds `config.endpoint`, loading its TLS files (and watching them) when it has some. The port answers a
/// scraper and probes: [`Limits::SCRAPED`] bounds its connections and their silence.
pub async fn bind(config: &MetricsConfig) -> anyhow::Result<Listener> {
    use anyhow::Context as _;
    let tcp = TcpListener::bind(&config.endpoint)
        .await
        .with_context(|| format!("cannot listen on telemetry.metrics.endpoint {}", config.endpoint))?;
    let tls = match &config.tls {
        Some(tls) => Some(
            ServerTls::new(tls, &[b"http/1.1"], "telemetry")
                .map_err(|error| anyhow::anyhow!("telemetry.metrics.tls.{}: {error}", error.key))?,
        ),
        None => None,
    };
    Ok(Listener::new(tcp, "telemetry", tls, Limits::SCRAPED))
}

/// Serves `/metrics`, `/health` (alive) and `/ready` until `shutdown`.
pub async fn serve(
    listener: Listener,
    handle: PrometheusHandle,
    auth: Option<tailgate_tls::ScrapeAuth>,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut metrics = Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    if let Some(auth) = auth {
        metrics =
            metrics.layer(axum::middleware::from_fn_with_state(Arc::new(auth), tailgate_tls::scrape_auth::require));
    }
    let router = metrics.route("/health", get(|| async { "ok\n" })).route(
        "/ready",
        get(move || {
            let ready = ready();
            async move {
                if ready {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
        }),
    );
    tailgate_tls::serve(listener, router, tailgate_tls::HttpTimers::SCRAPED, shutdown.cancelled_owned()).await
}
