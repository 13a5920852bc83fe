//! `kafka.security`: how every client a role creates protects its connections to the brokers and proves who it is.
//! Typed and validated with paths, turned into librdkafka's properties in one place ([`SecurityConfig::apply`]),
//! so the producer, the consumers and the admin client of every role are configured alike.

use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use tailgate_config::{Problems, SecretSource};

/// The `kafka.security:` section, in Kafka's own terms:
///
/// ```yaml
/// kafka:
///   security:
///     protocol: SASL_SSL
///     sasl: { mechanism: SCRAM-SHA-512, username: tailgate, password: { file: /run/secrets/kafka } }
///     tls: { ca_file: /etc/tailgate/kafka-ca.pem }
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    pub protocol: Protocol,
    /// Credentials, with `SASL_PLAINTEXT` or `SASL_SSL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl: Option<Sasl>,
    /// Which CAs to trust and the client certificate, with `SSL` or `SASL_SSL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
}

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "PLAINTEXT", alias = "plaintext")]
    Plaintext,
    #[serde(rename = "SSL", alias = "ssl")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT", alias = "sasl_plaintext")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL", alias = "sasl_ssl")]
    SaslSsl,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }
}

/// SASL credentials. The password is read from a file or the environment, never written in the YAML.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: SecretSource,
}

/// The SASL mechanisms this build of librdkafka speaks without a Kerberos library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS to the brokers: PEM files. The brokers' names are checked against their certificates
/// (`ssl.endpoint.identification.algorithm=https`, librdkafka's default).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaTls {
    /// CAs to trust; without it, the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate, for brokers that require one (`ssl.client.auth=required`); with `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Its private key, unencrypted PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The `kafka.client` properties `kafka.security` owns: setting them there would bypass its checks (and put a
/// password in the YAML).
pub(crate) const OWNED: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.key.location",
    "ssl.key.pem",
    "ssl.key.password",
    // Either would quietly turn off the check of the brokers' certificates that `kafka.security` promises.
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
];

/// Whether `key` is a librdkafka property that carries a credential or says where one is — every one
/// `kafka.security` owns, and every `*.password`, `*.secret`, keystore, truststore, CRL or SASL credential property,
/// whether or not Tailgate has a key for it: none may sit in plain YAML or bypass `kafka.security`'s checks.
pub(crate) fn is_security_property(key: &str) -> bool {
    OWNED.contains(&key)
        || key.ends_with(".password")
        || key.ends_with(".secret")
        || key.contains("keystore")
        || key.contains("truststore")
        || key.contains(".crl.")
        || key.starts_with("sasl.oauthbearer.")
        || key.starts_with("sasl.kerberos.keytab")
}

impl SecurityConfig {
    /// `path` is this section's (`kafka.security`).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        let protocol = self.protocol.as_str();
        match (&self.sasl, self.protocol.sasl()) {
            (None, true) => {
                problems.push(format!("{path}.sasl"), format!("is required with protocol {protocol}"));
            }
            (Some(_), false) => problems.push(
                format!("{path}.sasl"),
                format!("is set but protocol is {protocol}; use SASL_SSL (or SASL_PLAINTEXT) to send it"),
            ),
            (Some(sasl), true) => {
                if sasl.username.is_empty() {
                    problems.push(format!("{path}.sasl.username"), "must not be empty");
                }
                if let Err(message) = sasl.password.read() {
                    problems.push(format!("{path}.sasl.password"), message);
                }
            }
            (None, false) => {}
        }
        if let Some(tls) = &self.tls {
            if !self.protocol.tls() {
                problems.push(
                    format!("{path}.tls"),
                    format!("is set but protocol is {protocol}; use SSL (or SASL_SSL) to connect with TLS"),
                );
            }
            // The same checks as every other TLS client of Tailgate: each file reads, holds PEM of the right kind,
            // and the key belongs to the certificate.
            let files = tailgate_tls::ClientTlsConfig {
                ca_file: tls.ca_file.clone(),
                cert_file: tls.cert_file.clone(),
                key_file: tls.key_file.clone(),
                ..Default::default()
            };
            files.validate(&format!("{path}.tls"), problems);
        }
    }

    /// Sets librdkafka's properties for this section on `client`, reading the password now.
    pub fn apply(&self, client: &mut ClientConfig) -> Result<(), String> {
        client.set("security.protocol", self.protocol.as_str());
        if let (Some(sasl), true) = (&self.sasl, self.protocol.sasl()) {
            let password =
                sasl.password.read().map_err(|message| format!("kafka.security.sasl.password: {message}"))?;
            client
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", password.expose());
        }
        if let (Some(tls), true) = (&self.tls, self.protocol.tls()) {
            for (key, file) in [
                ("ssl.ca.location", &tls.ca_file),
                ("ssl.certificate.location", &tls.cert_file),
                ("ssl.key.location", &tls.key_file),
            ] {
                if let Some(file) = file {
                    client.set(key, file.to_string_lossy());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let config: SecurityConfig = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        config.validate("kafka.security", &mut problems);
        problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
    }

    #[test]
    fn mismatched_sections_are_reported_with_their_paths() {
        assert_eq!(problems("protocol: SASL_SSL"), ["kafka.security.sasl: is required with protocol SASL_SSL"]);
        let sasl = "sasl: { mechanism: PLAIN, username: u, password: { env: TAILGATE_TEST_UNSET_PASSWORD } }";
        assert_eq!(
            problems(&format!("protocol: SSL\n{sasl}")),
            [
                "kafka.security.sasl: is set but protocol is SSL; use SASL_SSL (or SASL_PLAINTEXT) to send it",
                // The password is checked only where it would be sent.
            ]
        );
        assert_eq!(
            problems(&format!("protocol: SASL_PLAINTEXT\n{sasl}")),
            ["kafka.security.sasl.password: environment variable `TAILGATE_TEST_UNSET_PASSWORD` is not set (or not UTF-8)"]
        );
        assert_eq!(
            problems("protocol: PLAINTEXT\ntls: { ca_file: /nonexistent/ca.pem }"),
            [
                "kafka.security.tls: is set but protocol is PLAINTEXT; use SSL (or SASL_SSL) to connect with TLS",
                "kafka.security.tls.ca_file: cannot read `/nonexistent/ca.pem`: No such file or directory (os error 2)",
            ]
        );
    }

    #[test]
    fn applies_kafka_property_names() {
        let dir = std::env::temp_dir().join(format!("tailgate-security-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let config = SecurityConfig {
            protocol: Protocol::SaslSsl,
            sasl: Some(Sasl {
                mechanism: Mechanism::ScramSha512,
                username: "tailgate".into(),
                password: SecretSource { file: Some(password), env: None },
            }),
            tls: Some(KafkaTls { ca_file: Some("/etc/ca.pem".into()), cert_file: None, key_file: None }),
        };
        let mut client = ClientConfig::new();
        config.apply(&mut client).unwrap();
        let get = |key: &str| client.get(key).map(str::to_owned);
        assert_eq!(get("security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get("sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username").as_deref(), Some("tailgate"));
        assert_eq!(get("sasl.password").as_deref(), Some("s3cret"));
        assert_eq!(get("ssl.ca.location").as_deref(), Some("/etc/ca.pem"));
        assert_eq!(get("ssl.certificate.location"), None);
    }
}
