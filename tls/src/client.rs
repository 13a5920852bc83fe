//! TLS to a backend: which CAs to trust, an optional client certificate, the name to check.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tailgate_config::Problems;

use crate::pem::{self, TlsError};
use crate::TlsVersion;

/// The `tls:` section of an exporter, named as the OpenTelemetry Collector names them. Used when the endpoint is
/// `https://` (or `grpcs://`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientTlsConfig {
    /// CAs to trust, PEM; without it, the system's (`/etc/ssl/certs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate, PEM, for a backend that asks for one; with `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name the backend's certificate must carry, when it is not the endpoint's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name_override: Option<String>,
    pub min_version: TlsVersion,
    /// Allows credentials (`auth`, an `Authorization` header) to an `http://` endpoint, in cleartext; the
    /// Collector's `tls.insecure`. Without it, that is a config error.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// A client TLS config, ready to connect with.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name_override: Option<String>,
}

impl ClientTlsConfig {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(name) = &self.server_name_override {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                problems.push(format!("{path}.server_name_override"), format!("`{name}` is not a DNS name or IP"));
            }
        }
        if let Err(error) = self.load(&[]) {
            problems.push(format!("{path}.{}", error.key), error.message);
        }
    }

    /// Reads the files and builds the config, offering `alpn` (`h2` for gRPC).
    pub fn load(&self, alpn: &[&[u8]]) -> Result<ClientTls, TlsError> {
        let roots = match &self.ca_file {
            Some(path) => pem::roots("ca_file", path, &pem::read("ca_file", path)?)?,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                roots
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(self.min_version.protocols())
            .map_err(|error| TlsError::new("min_version", error.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let chain = pem::certificates("cert_file", cert_path, &pem::read("cert_file", cert_path)?)?;
                let key = pem::private_key("key_file", key_path, &pem::read("key_file", key_path)?)?;
                builder.with_client_auth_cert(chain, key).map_err(|error| {
                    TlsError::new(
                        "key_file",
                        format!("`{}` cannot serve this certificate: {error}", key_path.display()),
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(TlsError::new("key_file", "is required with cert_file")),
            (None, Some(_)) => return Err(TlsError::new("cert_file", "is required with key_file")),
        };
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(ClientTls { config: Arc::new(config), server_name_override: self.server_name_override.clone() })
    }
}
