//! The ingest gateway: OTLP over gRPC and HTTP in, Kafka out.
//!
//! # Guarantees
//! * **Acknowledged means durable.** An export request succeeds only after Kafka acknowledged, with `acks=all` on an
//!   idempotent producer, every record made from it. If any record fails, the request gets a retryable error; the
//!   client's retry may duplicate the records that did land, which OTLP allows and downstream stages count.
//! * **Trace affinity.** Every span goes to partition `murmur2(trace_id) mod partitions` of the spans topic,
//!   whichever gateway received it (see `tailgate_proto`).
//! * **Bounded memory.** Requests are limited in size after decompression, and what all requests hold, from their
//!   first byte until Kafka acknowledged them, is limited by an in-flight budget that each request pays into before
//!   it reads, inflates or decodes (see `admission`); past it, clients are told to retry later instead of being
//!   queued.
//! * **Invalid items never reach Kafka.** Spans with malformed IDs are rejected through OTLP partial success.

#![forbid(unsafe_code)]

mod admission;
mod auth;
mod budget;
mod config;
mod error;
mod grpc;
mod http;
mod json;
pub mod metrics;
mod otlp;
mod rate_limit;
mod redaction;
mod resource;
mod sink;
mod tenant;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::Producer;
use tailgate_kafka::{create_producer, ensure_topics, fit_to_topics, KafkaConfig, ProducerSettings, TopicError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use tailgate_tls::ServerTls;

pub use crate::admission::{Admission, Compression};
use crate::auth::Identify;
pub use crate::auth::{AuthConfig, BearerToken, Failure as AuthFailure, JwtConfig};
pub use crate::budget::{Budget, Permit};
pub use crate::config::{GrpcConfig, HttpConfig, IngestConfig};
pub use crate::error::ExportError;
pub use crate::json::decode as decode_json;
pub use crate::rate_limit::{RateLimitConfig, TenantLimit};
pub use crate::redaction::{DbSanitizer, RedactionConfig, Redactor, SqlSanitizer, Summary};
pub use crate::resource::{Action, ResourceAction, ResourceProcessor};
pub use crate::sink::{records, Accepted, Changes, KafkaSink, Payload};
pub use crate::tenant::Tenant;
use tailgate_tls::{Limits, Listener};

/// How often the gateway checks that Kafka answers, for `/ready`.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("cannot create the Kafka producer: {0}")]
    Producer(rdkafka::error::KafkaError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("OTLP/gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("OTLP/HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("ingest.{listener}.tls.{}: {error}", error.key)]
    Tls { listener: &'static str, error: tailgate_tls::TlsError },
    #[error("ingest.{listener}: {message}")]
    Auth { listener: &'static str, message: String },
    #[error("ingest.redaction: {0}")]
    Redaction(String),
}

/// Whether the gateway should receive traffic: Kafka answers and it is not shutting down.
#[derive(Debug, Default)]
pub struct Health {
    kafka_up: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.kafka_up.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }
}

/// A gateway whose topics are checked and whose listeners are bound, ready to [`Gateway::run`].
pub struct Gateway {
    grpc: TcpListener,
    http: TcpListener,
    grpc_tls: Option<ServerTls>,
    http_tls: Option<ServerTls>,
    grpc_identify: Identify,
    http_identify: Identify,
    sink: KafkaSink,
    admission: Admission,
    kafka: KafkaConfig,
    config: IngestConfig,
    health: Arc<Health>,
}

impl Gateway {
    /// Checks (and if allowed creates) the topics, creates the producer and binds both listeners, so that every
    /// start-up problem is reported before anything is served.
    pub async fn build(config: &IngestConfig, kafka: &KafkaConfig) -> Result<Gateway, IngestError> {
        let no_settings: &[(&str, &str)] = &[];
        ensure_topics(
            kafka,
            &[
                (&kafka.topics.spans, no_settings),
                (&kafka.topics.metrics, no_settings),
                (&kafka.topics.logs, no_settings),
            ],
            Duration::from_secs(30),
        )
        .await?;
        // And the sampled topic: a span the gateway takes must fit there too, with the sampler's marks.
        let written = [&kafka.topics.spans, &kafka.topics.metrics, &kafka.topics.logs, &kafka.topics.sampled_spans];
        let kafka = &fit_to_topics(kafka, &written.map(String::as_str), Duration::from_secs(10)).await;
        let producer = create_producer(
            kafka,
            &ProducerSettings {
                queue_max_bytes: Some(config.max_in_flight_bytes.get()),
                client_id: "tailgate-ingest".to_owned(),
            },
        )
        .map_err(IngestError::Producer)?;
        let redaction = config.redaction.as_ref().map(Redactor::new).transpose().map_err(IngestError::Redaction)?;
        let sink = KafkaSink::new(
            producer,
            kafka.partitions,
            kafka.producer.max_message_bytes.get() as usize,
            Changes { resource: ResourceProcessor::new(&config.resource), redaction },
            config.throttle_retry_after.get(),
        );
        let admission = Admission::new(
            Budget::new(config.max_in_flight_bytes.get()),
            config.max_request_bytes.get() as usize,
            config.read_timeout.get(),
            config.throttle_retry_after.get(),
            config.rate_limit.clone(),
        );
        let admission = if config.redaction.is_some() { admission.decoding_everything() } else { admission };
        // gRPC speaks HTTP/2 only; OTLP/HTTP either.
        let tls = |listener: &'static str, tls: &Option<tailgate_tls::ServerTlsConfig>, alpn| {
            tls.as_ref()
                .map(|tls| ServerTls::new(tls, alpn, listener))
                .transpose()
                .map_err(|error| IngestError::Tls { listener, error })
        };
        let grpc_tls = tls("grpc", &config.grpc.tls, &[b"h2"])?;
        let http_tls = tls("http", &config.http.tls, &[b"h2", b"http/1.1"])?;
        let identify = |listener: &'static str, auth: &Option<AuthConfig>, header: &Option<String>| {
            Identify::new(auth.as_ref(), header.as_deref(), listener)
                .map_err(|message| IngestError::Auth { listener, message })
        };
        let grpc_identify = identify("grpc", &config.grpc.auth, &config.grpc.tenant_header)?;
        let http_identify = identify("http", &config.http.auth, &config.http.tenant_header)?;
        let bind = |addr: String| async move {
            TcpListener::bind(&addr).await.map_err(|source| IngestError::Bind { addr, source })
        };
        let grpc = bind(config.grpc.endpoint.clone()).await?;
        let http = bind(config.http.endpoint.clone()).await?;
        crate::metrics::describe();
        Ok(Gateway {
            grpc,
            http,
            grpc_tls,
            http_tls,
            grpc_identify,
            http_identify,
            sink,
            admission,
            kafka: kafka.clone(),
            config: config.clone(),
            health: Arc::new(Health { kafka_up: AtomicBool::new(true), shutting_down: AtomicBool::new(false) }),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("a bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("a bound listener has an address")
    }

    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// The in-flight byte budget, to observe what is held.
    pub fn budget(&self) -> Budget {
        self.admission.budget().clone()
    }

    /// Serves until `shutdown` is cancelled, then: reports not ready, stops accepting, finishes in-flight requests
    /// and flushes the producer, all within `grace`.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) -> Result<(), IngestError> {
        let Gateway {
            grpc,
            http,
            grpc_tls,
            http_tls,
            grpc_identify,
            http_identify,
            sink,
            admission,
            kafka,
            config,
            health,
        } = self;
        for (path, why) in config.warnings("ingest") {
            tracing::warn!("{path}: {why}");
        }
        tracing::info!(grpc = %grpc.local_addr().map_err(IngestError::Http)?, http = %http.local_addr().map_err(IngestError::Http)?, "ingest gateway receiving OTLP");

        let stop_serving = CancellationToken::new();
        let probe = tokio::spawn(probe_kafka(sink.clone(), Arc::clone(&health), stop_serving.clone()));
        let limits = Limits {
            max_connections: config.max_connections,
            max_connections_per_source: config.max_connections_per_source,
            first_byte_timeout: config.first_byte_timeout.get(),
            idle_timeout: config.idle_timeout.get(),
        };
        let grpc = Listener::new(grpc, "grpc", grpc_tls, limits);
        let http = Listener::new(http, "http", http_tls, limits);
        let mut grpc_server = tokio::spawn(grpc::serve(
            grpc,
            config.grpc.clone(),
            sink.clone(),
            admission.clone(),
            grpc_identify,
            kafka.topics.clone(),
            stop_serving.clone(),
        ));
        let router = http::router(
            sink.clone(),
            admission,
            kafka.topics.clone(),
            http_identify,
            &config.http.cors_allowed_origins,
        );
        // A request's headers, like its first byte, must arrive within `first_byte_timeout`.
        let timers = config.http.keepalive.server_parameters.http_timers(config.first_byte_timeout.get(), grace);
        let mut http_server =
            tokio::spawn(tailgate_tls::serve(http, router, timers, stop_serving.clone().cancelled_owned()));

        // Either a server fails, or we are told to stop.
        let failure = tokio::select! {
            _ = shutdown.cancelled() => None,
            result = &mut grpc_server => Some(flatten(result, IngestError::Grpc)),
            result = &mut http_server => Some(flatten(result, IngestError::Http)),
        };

        let deadline = tokio::time::Instant::now() + grace;
        health.shutting_down.store(true, Ordering::SeqCst);
        sink.begin_shutdown();
        stop_serving.cancel();
        let drained = tokio::time::timeout_at(deadline, async {
            let _ = (&mut grpc_server).await;
            let _ = (&mut http_server).await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(?grace, "in-flight requests did not finish within the shutdown grace period");
            grpc_server.abort();
            http_server.abort();
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sink.flush(remaining.max(Duration::from_millis(100))).await {
            Ok(()) => tracing::info!("producer flushed; ingest gateway stopped"),
            Err(error) => tracing::warn!(%error, "producer not fully flushed at shutdown"),
        }
        probe.abort();
        match failure {
            Some(Err(error)) => Err(error),
            _ => Ok(()),
        }
    }
}

fn flatten<E>(
    result: Result<Result<(), E>, tokio::task::JoinError>,
    wrap: impl FnOnce(E) -> IngestError,
) -> Result<(), IngestError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(wrap(error)),
        Err(join) => Err(IngestError::Http(std::io::Error::other(join.to_string()))),
    }
}

/// Asks Kafka for metadata every [`PROBE_INTERVAL`], for `/ready` and `tailgate_kafka_up`.
async fn probe_kafka(sink: KafkaSink, health: Arc<Health>, stop: CancellationToken) {
    loop {
        let producer = sink.producer().clone();
        let up = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, PROBE_INTERVAL).is_ok())
            .await
            .unwrap_or(false);
        if up != health.kafka_up.swap(up, Ordering::SeqCst) {
            if up {
                tracing::info!("Kafka is reachable again");
            } else {
                tracing::warn!("Kafka is unreachable; /ready reports not ready");
            }
        }
        ::metrics::gauge!(crate::metrics::KAFKA_UP).set(if up { 1.0 } else { 0.0 });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}
