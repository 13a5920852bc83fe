//! Certificates made by `openssl` at test time: CAs, and server and client certificates they sign.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A directory of PEM files.
pub struct Pki {
    pub dir: PathBuf,
}

/// A certificate and its key.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

impl Pki {
    pub fn new(what: &str) -> Pki {
        Pki { dir: super::temp_dir(what) }
    }

    fn openssl(&self, args: &[&str]) {
        let status = Command::new("openssl").current_dir(&self.dir).args(args).stderr(Stdio::null()).status().unwrap();
        assert!(status.success(), "openssl {args:?}");
    }

    /// A self-signed CA: `<name>.pem`, `<name>.key`.
    pub fn ca(&self, name: &str) -> Issued {
        let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
        self.openssl(
            &[
                &["req", "-x509"],
                &EC[..],
                &["-keyout", &key, "-out", &cert, "-subj", &format!("/CN={name}"), "-days", "1"],
            ]
            .concat(),
        );
        Issued { cert: self.dir.join(cert), key: self.dir.join(key) }
    }

    /// A certificate for `localhost` and 127.0.0.1 signed by `ca`, usable by a server and a client.
    pub fn leaf(&self, ca: &Issued, name: &str) -> Issued {
        self.leaf_for(ca, name, "DNS:localhost,IP:127.0.0.1")
    }

    /// A certificate for the subject alternative names `san` (`DNS:loki.internal`) signed by `ca`.
    pub fn leaf_for(&self, ca: &Issued, name: &str, san: &str) -> Issued {
        let (cert, key, csr, ext) =
            (format!("{name}.pem"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
        self.openssl(&[&["req"], &EC[..], &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
        std::fs::write(
            self.dir.join(&ext),
            format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .unwrap();
        let (ca_cert, ca_key) = (path(&ca.cert), path(&ca.key));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "1",
            "-extfile",
            &ext,
        ]);
        Issued { cert: self.dir.join(cert), key: self.dir.join(key) }
    }
}

fn path(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// A rustls server config serving `issued`, for a test backend; with `client_ca`, clients must present a
/// certificate it signed.
pub fn server_config(issued: &Issued, client_ca: Option<&Issued>) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_file_iter(&issued.cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_file(&ca.cert).unwrap()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

/// A rustls client config trusting the CAs in `ca`, presenting `identity`'s certificate when given (HTTP/1.1).
pub fn client_config(ca: &std::path::Path, identity: Option<&Issued>) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(issued) => {
            let chain = CertificateDer::pem_file_iter(&issued.cert).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&issued.key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}
