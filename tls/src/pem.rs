//! Reading PEM files: certificates, a private key, a CA bundle; each failure names the config key it is about.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that cannot be used, and the config key (`cert_file`, `key_file`, `client_ca_file`, …) naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl TlsError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> Self {
        TlsError { key, message: message.into() }
    }
}

pub(crate) fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::new(key, format!("cannot read `{}`: {error}", path.display())))
}

pub(crate) fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::new(key, format!("`{}` is not a PEM certificate file: {error}", path.display())))?;
    if certificates.is_empty() {
        return Err(TlsError::new(key, format!("`{}` holds no PEM certificate", path.display())));
    }
    Ok(certificates)
}

pub(crate) fn private_key(key: &'static str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| {
        TlsError::new(key, format!("`{}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {error}", path.display()))
    })
}

pub(crate) fn roots(key: &'static str, path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(key, path, pem)? {
        roots.add(certificate).map_err(|error| {
            TlsError::new(key, format!("`{}` holds a CA certificate that cannot be used: {error}", path.display()))
        })?;
    }
    Ok(roots)
}
