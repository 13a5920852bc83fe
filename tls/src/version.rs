use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The oldest TLS version accepted: `"1.2"` (the default, as the OpenTelemetry Collector's) or `"1.3"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub(crate) fn protocols(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static FROM_1_2: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
        static FROM_1_3: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::V1_2 => &FROM_1_2,
            TlsVersion::V1_3 => &FROM_1_3,
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

impl Serialize for TlsVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Accepts `"1.2"` and, as YAML users write it unquoted, the number `1.2`. TLS 1.0 and 1.1 are refused: rustls
/// does not speak them, and neither should a pipeline that carries credentials.
impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Version;
        impl Visitor<'_> for Version {
            type Value = TlsVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TLS version, \"1.2\" or \"1.3\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<TlsVersion, E> {
                match text {
                    "1.2" => Ok(TlsVersion::V1_2),
                    "1.3" => Ok(TlsVersion::V1_3),
                    "1.0" | "1.1" => Err(E::custom(format!("TLS {text} is not supported; use \"1.2\" or \"1.3\""))),
                    _ => Err(E::custom(format!("`{text}` is not a TLS version; use \"1.2\" or \"1.3\""))),
                }
            }
            fn visit_f64<E: de::Error>(self, number: f64) -> Result<TlsVersion, E> {
                self.visit_str(&format!("{number:.1}"))
            }
        }
        deserializer.deserialize_any(Version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quoted_and_unquoted_versions_and_refuses_old_ones() {
        let parse = |text: &str| serde_yaml::from_str::<TlsVersion>(text).map_err(|e| e.to_string());
        assert_eq!(parse("\"1.3\""), Ok(TlsVersion::V1_3));
        assert_eq!(parse("1.2"), Ok(TlsVersion::V1_2));
        assert!(parse("1.1").unwrap_err().contains("TLS 1.1 is not supported"));
        assert!(parse("tls13").unwrap_err().contains("is not a TLS version"));
    }
}
