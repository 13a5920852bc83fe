use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tailgate_config::{ByteSize, Duration, Problems};

use tailgate_tls::ServerTlsConfig;

use crate::auth::AuthConfig;
use crate::rate_limit::RateLimitConfig;
use crate::redaction::RedactionConfig;
use crate::resource::ResourceAction;

/// The `ingest:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// OTLP/gRPC receiver.
    pub grpc: GrpcConfig,
    /// OTLP/HTTP receiver.
    pub http: HttpConfig,
    /// Largest request accepted, measured after decompression. Larger ones get `RESOURCE_EXHAUSTED` / 413.
    pub max_request_bytes: ByteSize,
    /// Memory the gateway's requests may hold at once, from their first byte until Kafka acknowledged them: each
    /// request pays, before doing the work, for its body as it arrives, for what it inflates to, and for what the
    /// work allocates (traces and logs, split on the wire: 3 bytes per byte and 64 per item; metrics, decoded: 10
    /// per protobuf byte; JSON: 24 per byte; measured). A request that does not fit is turned away at once with a
    /// retryable `RESOURCE_EXHAUSTED` / 429 and a retry delay.
    pub max_in_flight_bytes: ByteSize,
    /// How long a request body may take to arrive whole; a slower one is refused (gRPC `DEADLINE_EXCEEDED`,
    /// HTTP 408) and its share of the budget returned.
    pub read_timeout: Duration,
    /// How long a throttled client is asked to wait (`RetryInfo`, `Retry-After`).
    pub throttle_retry_after: Duration,
    /// Connections each listener holds open at most; more wait to be accepted until one closes. With HTTP/2's
    /// per-connection flow-control window this also bounds what clients can have sent and not yet been read.
    pub max_connections: usize,
    /// Connections one source address may hold open on each listener; past it, its new connections are closed at
    /// once (`tailgate_connections_refused_total{reason="per_source"}`). 0, the default: no bound per host — behind
    /// a load balancer every connection comes from its few addresses. Set it where clients connect directly.
    pub max_connections_per_source: usize,
    /// A new connection that sends nothing for this long is closed and its slot given back: connections opened
    /// and left silent, by a broken client or on purpose, cannot hold every slot (before TLS or authentication,
    /// which need the client to speak).
    pub first_byte_timeout: Duration,
    /// A connection over which nothing passes either way for this long is closed and its slot given back. Longer
    /// than a request can be waiting on Kafka (`read_timeout` plus `kafka.producer.delivery_timeout`).
    pub idle_timeout: Duration,
    /// Changes applied to every resource before it is written to Kafka, in order.
    pub resource: Vec<ResourceAction>,
    /// Per-tenant limits on what the gateway accepts; none by default.
    pub rate_limit: Option<RateLimitConfig>,
    /// Attributes removed or masked before anything reaches Kafka (the Collector's `redaction` processor); none
    /// by default.
    pub redaction: Option<RedactionConfig>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            grpc: GrpcConfig::default(),
            http: HttpConfig::default(),
            max_request_bytes: ByteSize::mib(16),
            max_in_flight_bytes: ByteSize::mib(256),
            read_timeout: Duration::from_secs(30),
            throttle_retry_after: Duration::from_secs(1),
            max_connections: 1024,
            max_connections_per_source: 0,
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            resource: Vec::new(),
            rate_limit: None,
            redaction: None,
        }
    }
}

/// The `ingest.grpc:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcConfig {
    /// HTTP/2 streams (requests) one connection may have open at once; more wait for one to finish.
    pub max_concurrent_streams: u32,
    /// Address to listen on. Loopback by default, as the OpenTelemetry Collector since its 2024 hardening
    /// (CVE-2024-36129): listening on every interface (`0.0.0.0:4317`) is a choice the config makes.
    pub endpoint: String,
    /// TLS (and with `client_ca_file`, mutual TLS) on this listener; plaintext without it.
    pub tls: Option<ServerTlsConfig>,
    /// Who may write, and as which tenant; anyone who can connect, as the default tenant, without it.
    pub auth: Option<AuthConfig>,
    /// A header naming the tenant (`X-Scope-OrgID`), trusted as set by a proxy in front: only without `auth`.
    pub tenant_header: Option<String>,
    /// HTTP/2 pings and connection age, in the Collector's keys.
    pub keepalive: Keepalive,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "127.0.0.1:4317".to_owned(),
            max_concurrent_streams: 100,
            tls: None,
            auth: None,
            tenant_header: None,
            keepalive: Keepalive::default(),
        }
    }
}

/// The `ingest.grpc.keepalive:` and `ingest.http.keepalive:` sections (the Collector's
/// `keepalive.server_parameters`). None of it is on by default, as in the Collector: `ingest.idle_timeout` already
/// closes a connection nothing passes over.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Keepalive {
    pub server_parameters: ServerParameters,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerParameters {
    /// Ping a connection this long after the last frame received; a peer that vanished (a half-open TCP
    /// connection) is found within `time + timeout` instead of `idle_timeout`. A ping and its answer are
    /// traffic: with `time` below `idle_timeout`, an idle connection is kept open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    pub timeout: Duration,
    /// A connection this old is told to go away (HTTP/2 GOAWAY): clients reconnect, and a load balancer in front
    /// spreads them again over the gateways; requests in flight finish. Unset: connections live on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_age: Option<Duration>,
    /// How long requests in flight on a connection past its age may take before it is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_age_grace: Option<Duration>,
}

impl ServerParameters {
    fn validate(&self, path: &str, problems: &mut Problems) {
        for (key, value) in [
            ("time", self.time),
            ("timeout", Some(self.timeout)),
            ("max_connection_age", self.max_connection_age),
            ("max_connection_age_grace", self.max_connection_age_grace),
        ] {
            if value.is_some_and(|value| value.get().is_zero()) {
                problems.push(format!("{path}.{key}"), "must be more than 0s (leave it out for never)");
            }
        }
        if self.max_connection_age_grace.is_some() && self.max_connection_age.is_none() {
            problems.push(format!("{path}.max_connection_age_grace"), "is set without max_connection_age");
        }
    }

    /// The timers of an HTTP port with these parameters; a request's headers must arrive within `header_read`, and
    /// a stop closes what is still open after `drain`.
    pub fn http_timers(
        &self,
        header_read: std::time::Duration,
        drain: std::time::Duration,
    ) -> tailgate_tls::HttpTimers {
        tailgate_tls::HttpTimers {
            header_read_timeout: header_read,
            drain,
            keepalive_interval: self.time.map(|time| time.get()),
            keepalive_timeout: self.timeout.get(),
            max_connection_age: self.max_connection_age.map(|age| age.get()),
            max_connection_age_grace: self.max_connection_age_grace.map(|grace| grace.get()),
        }
    }
}

impl Default for ServerParameters {
    fn default() -> Self {
        ServerParameters {
            time: None,
            timeout: Duration::from_secs(20),
            max_connection_age: None,
            max_connection_age_grace: None,
        }
    }
}

/// The `ingest.http:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Address to listen on; loopback by default, like `grpc.endpoint`.
    pub endpoint: String,
    /// Browser origins allowed to send telemetry (CORS). Empty: CORS is off. `*` allows any origin.
    pub cors_allowed_origins: Vec<String>,
    /// As `grpc.tls`.
    pub tls: Option<ServerTlsConfig>,
    /// As `grpc.auth`.
    pub auth: Option<AuthConfig>,
    /// As `grpc.tenant_header`.
    pub tenant_header: Option<String>,
    /// The keys of `grpc.keepalive` (the Collector has them on its gRPC server only), here for OTLP/HTTP: pings
    /// apply to HTTP/2 connections; the maximum age to both versions (HTTP/1.1 gets `Connection: close` on its next
    /// response).
    pub keepalive: Keepalive,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "127.0.0.1:4318".to_owned(),
            cors_allowed_origins: Vec::new(),
            tls: None,
            auth: None,
            tenant_header: None,
            keepalive: Keepalive::default(),
        }
    }
}

/// What the two listeners share: TLS, auth and the tenant header, validated alike.
fn validate_listener(
    path: &str,
    tls: Option<&ServerTlsConfig>,
    auth: Option<&AuthConfig>,
    tenant_header: Option<&str>,
    problems: &mut Problems,
) {
    if let Some(tls) = tls {
        tls.validate(&format!("{path}.tls"), problems);
    }
    if let Some(auth) = auth {
        auth.validate(&format!("{path}.auth"), problems);
    }
    if let Some(name) = tenant_header {
        if axum::http::HeaderName::try_from(name).is_err() {
            problems.push(format!("{path}.tenant_header"), format!("`{name}` is not an HTTP header name"));
        } else if auth.is_some() {
            problems.push(
                format!("{path}.tenant_header"),
                "is only read without auth: an authenticated client writes as the tenant of its credentials",
            );
        }
    }
}

impl IngestConfig {
    /// What is valid but likely a mistake, each `(path, why)`: one receiver authenticates while the other, open
    /// beyond this host, does not — a client refused on one port writes through the other, as any tenant it likes
    /// (with `tenant_header`) or as the default tenant.
    pub fn warnings(&self, path: &str) -> Vec<(String, String)> {
        let open = |endpoint: &str| endpoint.parse::<SocketAddr>().is_ok_and(|addr| !addr.ip().is_loopback());
        let mut warnings = Vec::new();
        for (name, endpoint, auth, other, other_auth) in [
            ("grpc", &self.grpc.endpoint, self.grpc.auth.is_some(), "http", self.http.auth.is_some()),
            ("http", &self.http.endpoint, self.http.auth.is_some(), "grpc", self.grpc.auth.is_some()),
        ] {
            if !auth && other_auth && open(endpoint) {
                warnings.push((
                    format!("{path}.{name}.auth"),
                    format!(
                        "is not set while {path}.{other} has auth, and {endpoint} is reachable beyond this host: \
                         whoever {other} refuses can write here unauthenticated"
                    ),
                ));
            }
        }
        warnings
    }

    pub fn validate(&self, path: &str, problems: &mut Problems) {
        for (key, endpoint) in [("grpc.endpoint", &self.grpc.endpoint), ("http.endpoint", &self.http.endpoint)] {
            if endpoint.parse::<SocketAddr>().is_err() {
                problems.push(format!("{path}.{key}"), format!("`{endpoint}` is not an address like 0.0.0.0:4317"));
            }
        }
        if self.grpc.endpoint == self.http.endpoint {
            problems.push(format!("{path}.http.endpoint"), "must differ from ingest.grpc.endpoint");
        }
        if self.max_connections == 0 {
            problems.push(format!("{path}.max_connections"), "must be at least 1");
        }
        if self.max_connections_per_source > self.max_connections {
            problems.push(
                format!("{path}.max_connections_per_source"),
                format!("must be at most max_connections ({}); 0 for no bound per host", self.max_connections),
            );
        }
        self.grpc.keepalive.server_parameters.validate(&format!("{path}.grpc.keepalive.server_parameters"), problems);
        self.http.keepalive.server_parameters.validate(&format!("{path}.http.keepalive.server_parameters"), problems);
        if self.grpc.max_concurrent_streams == 0 {
            problems.push(format!("{path}.grpc.max_concurrent_streams"), "must be at least 1");
        }
        let request = self.max_request_bytes.get();
        if request < 1024 {
            problems.push(format!("{path}.max_request_bytes"), "must be at least 1KiB");
        }
        let in_flight = self.max_in_flight_bytes.get();
        if in_flight < request {
            problems.push(
                format!("{path}.max_in_flight_bytes"),
                format!(
                    "must be at least max_request_bytes ({}), or no request of that size could ever pass",
                    self.max_request_bytes
                ),
            );
        }
        if self.read_timeout.get().is_zero() {
            problems.push(format!("{path}.read_timeout"), "must be more than 0s");
        }
        if self.first_byte_timeout.get().is_zero() {
            problems.push(format!("{path}.first_byte_timeout"), "must be more than 0s");
        }
        if self.idle_timeout.get() <= self.read_timeout.get() {
            problems.push(
                format!("{path}.idle_timeout"),
                format!(
                    "must be longer than read_timeout ({}): a request still arriving or waiting on Kafka would be cut",
                    self.read_timeout
                ),
            );
        }
        if in_flight > u64::from(u32::MAX) {
            problems.push(format!("{path}.max_in_flight_bytes"), "must be below 4GiB");
        }
        for origin in &self.http.cors_allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                problems.push(
                    format!("{path}.http.cors_allowed_origins"),
                    format!("`{origin}` is not an origin like https://shop.example.com or *"),
                );
            }
        }
        validate_listener(
            &format!("{path}.grpc"),
            self.grpc.tls.as_ref(),
            self.grpc.auth.as_ref(),
            self.grpc.tenant_header.as_deref(),
            problems,
        );
        validate_listener(
            &format!("{path}.http"),
            self.http.tls.as_ref(),
            self.http.auth.as_ref(),
            self.http.tenant_header.as_deref(),
            problems,
        );
        if let Some(limit) = &self.rate_limit {
            limit.validate(&format!("{path}.rate_limit"), self.max_request_bytes, problems);
        }
        for (i, action) in self.resource.iter().enumerate() {
            action.validate(&format!("{path}.resource[{i}]"), problems);
        }
        if let Some(redaction) = &self.redaction {
            redaction.validate(&format!("{path}.redaction"), problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One receiver with auth and the other open to the network without it: valid, but the second is a way
    /// around the first, and `validate` and the gateway say so. Loopback, or auth on both, is not warned about.
    #[test]
    fn a_receiver_without_auth_beside_one_with_it_is_warned_about() {
        let mut config = IngestConfig::default();
        config.grpc.auth = Some(AuthConfig::default());
        assert_eq!(config.warnings("ingest"), [], "the HTTP receiver is on loopback");
        config.http.endpoint = "0.0.0.0:4318".to_owned();
        let warnings = config.warnings("ingest");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].0, "ingest.http.auth");
        assert!(warnings[0].1.contains("0.0.0.0:4318 is reachable beyond this host"), "{warnings:?}");
        config.http.auth = Some(AuthConfig::default());
        assert_eq!(config.warnings("ingest"), []);
    }

    /// A tenant header beside auth would never be read (the credentials name the tenant): a config that says both
    /// is refused, at the header's path, as is a header name HTTP does not allow.
    #[test]
    fn a_tenant_header_with_auth_or_not_a_header_name_is_refused_at_its_path() {
        let problems = |config: &IngestConfig| {
            let mut problems = Problems::default();
            config.validate("ingest", &mut problems);
            problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>()
        };
        let mut config = IngestConfig::default();
        config.http.tenant_header = Some("X-Scope-OrgID".to_owned());
        assert_eq!(problems(&config), Vec::<String>::new(), "a trusted header alone is valid");
        let file = std::env::temp_dir().join(format!("tailgate-tenant-header-{}", std::process::id()));
        std::fs::write(&file, "a-token").unwrap();
        let token = tailgate_config::SecretSource { file: Some(file.clone()), env: None };
        let auth = AuthConfig {
            bearer_tokens: vec![crate::auth::BearerToken { tenant: "checkout".to_owned(), token }],
            ..AuthConfig::default()
        };
        config.http.auth = Some(auth);
        let found = problems(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("ingest.http.tenant_header"), "{found:?}");
        assert!(found[0].contains("only read without auth"), "{found:?}");
        std::fs::remove_file(file).unwrap();
        config.http.auth = None;
        config.grpc.tenant_header = Some("X Scope".to_owned());
        let found = problems(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("ingest.grpc.tenant_header") && found[0].contains("not an HTTP header name"));
    }
}
