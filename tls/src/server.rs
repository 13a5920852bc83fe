//! A listener's TLS settings, and the rustls server config they make.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use tailgate_config::{Duration, Problems};

use crate::pem::{self, TlsError};
use crate::TlsVersion;

/// The `tls:` section of a listener, named as the OpenTelemetry Collector names them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerTlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// With it, mutual TLS: a client must present a certificate signed by a CA in this PEM file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// The oldest TLS version accepted.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// How often the files are read again, to pick up rotated certificates; `0s` never.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// What one load read: the files' bytes, to tell whether they changed since.
#[derive(PartialEq, Eq)]
pub(crate) struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl ServerTlsConfig {
    /// Reports at `path` (`ingest.grpc.tls`) every file that cannot be used.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Err(error) = self.read().and_then(|files| self.build(&files, &[])) {
            problems.push(format!("{path}.{}", error.key), error.message);
        }
    }

    pub(crate) fn read(&self) -> Result<Files, TlsError> {
        Ok(Files {
            cert: pem::read("cert_file", &self.cert_file)?,
            key: pem::read("key_file", &self.key_file)?,
            client_ca: self.client_ca_file.as_deref().map(|path| pem::read("client_ca_file", path)).transpose()?,
        })
    }

    /// The rustls config of `files`, offering `alpn` (`h2`, `http/1.1`) in that order of preference.
    pub(crate) fn build(&self, files: &Files, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = pem::certificates("cert_file", &self.cert_file, &files.cert)?;
        let key = pem::private_key("key_file", &self.key_file, &files.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(self.min_version.protocols())
            .map_err(|error| TlsError::new("min_version", error.to_string()))?;
        let builder = match (&self.client_ca_file, &files.client_ca) {
            (Some(path), Some(pem)) => {
                let roots = pem::roots("client_ca_file", path, pem)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider())
                    .build()
                    .map_err(|error| TlsError::new("client_ca_file", error.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|error| {
            TlsError::new("key_file", format!("`{}` cannot serve this certificate: {error}", self.key_file.display()))
        })?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
