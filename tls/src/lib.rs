//! TLS for Tailgate's listeners (the OTLP receivers, the telemetry port, the scrape endpoint) and for its clients
//! (the exporters' backends); and the listener itself, with its bounds on connections ([`Listener`]).
//!
//! * **Files, checked with their paths.** Certificates, keys and CAs are PEM files named in the config;
//!   `validate` loads them, so a missing file, a key that does not match its certificate or a CA file without a
//!   certificate is reported as `ingest.grpc.tls.key_file: …` before anything starts.
//! * **Rotation without restart.** A listener's files are read again every `reload_interval`; when they changed and
//!   load, new handshakes use them (connections already open keep theirs); when they do not load, the old ones stay
//!   and the failure is logged once and counted (`tailgate_tls_reloads_total{outcome="failure"}`).
//! * **mTLS.** With `client_ca_file`, a client must present a certificate signed by that CA; any other client is
//!   refused in the handshake (`tailgate_tls_handshake_failures_total`).
//! * **Handshakes off the accept loop.** Each runs in its own task, bounded in time, so a client that opens a
//!   connection and says nothing holds up nobody else.
//!
//! The crypto provider is aws-lc-rs, named explicitly wherever a config is built, so no process-wide default has
//! to be installed.

#![forbid(unsafe_code)]

mod client;
mod handshake;
mod listener;
mod pem;
mod reload;
pub mod scrape_auth;
mod serve;
mod server;
mod version;

pub use client::{ClientTls, ClientTlsConfig};
pub use handshake::{Handshakes, Stream};
pub use listener::{Connection, Limits, Listener};
pub use pem::TlsError;
pub use reload::ServerTls;
pub use scrape_auth::ScrapeAuth;
pub use serve::{serve, HttpTimers};
pub use server::ServerTlsConfig;
pub use version::TlsVersion;

/// Handshakes that failed, by listener and reason (`timeout`, `error`).
pub const HANDSHAKE_FAILURES: &str = "tailgate_tls_handshake_failures_total";
/// Certificate reloads, by listener and outcome (`success`, `failure`).
pub const RELOADS: &str = "tailgate_tls_reloads_total";

/// Connections open, by listener.
pub const CONNECTIONS: &str = "tailgate_connections";
/// Connections closed for silence or age, by listener and reason (`first_byte`, `idle`, `max_age`).
pub const CONNECTIONS_TIMED_OUT: &str = "tailgate_connections_timed_out_total";
/// Connections closed at accept, by listener and reason (`per_source`).
pub const CONNECTIONS_REFUSED: &str = "tailgate_connections_refused_total";

/// Describes this crate's metrics to the installed recorder.
pub fn describe_metrics() {
    metrics::describe_gauge!(CONNECTIONS, "Connections open, by listener (at most its max_connections).");
    metrics::describe_counter!(
        CONNECTIONS_TIMED_OUT,
        "Connections closed because they sent no first byte in time, nothing passed for the idle timeout, or they reached their maximum age."
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed at accept because their host already had max_connections_per_source open."
    );
    metrics::describe_counter!(HANDSHAKE_FAILURES, "TLS handshakes that failed, by listener and reason.");
    metrics::describe_counter!(RELOADS, "TLS certificate reloads after their files changed, by listener and outcome.");
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
