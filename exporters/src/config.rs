//! The `exporters:` section: one optional section per backend. An exporter that is absent does not run.

use serde::{Deserialize, Serialize};
use tailgate_config::Problems;

use crate::{jaeger, loki, prometheus, scrape};

// The section's types, where readers of `exporters:` look for them; each is defined with its backend (or, for the
// keys every exporter shares, with delivery).
pub use crate::delivery::{Batching, Delivery, Retry};
pub use crate::jaeger::{Compression, JaegerConfig};
pub use crate::loki::{LineTooLong, LokiConfig};
pub use crate::prometheus::PrometheusConfig;
pub use crate::scrape::ScrapeConfig;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ExportersConfig {
    pub jaeger: Option<JaegerConfig>,
    pub prometheus_remote_write: Option<PrometheusConfig>,
    pub loki: Option<LokiConfig>,
    /// A Prometheus scrape endpoint (the Collector's `prometheus` exporter).
    pub prometheus: Option<ScrapeConfig>,
}

impl ExportersConfig {
    /// Names of the configured exporters, in a fixed order.
    pub fn configured(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.jaeger.is_some() {
            names.push(jaeger::NAME);
        }
        if self.prometheus_remote_write.is_some() {
            names.push(prometheus::NAME);
        }
        if self.loki.is_some() {
            names.push(loki::NAME);
        }
        if self.prometheus.is_some() {
            names.push(scrape::NAME);
        }
        names
    }

    /// Each configured backend checks its own section.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(config) = &self.jaeger {
            config.validate(&format!("{path}.jaeger"), problems);
        }
        if let Some(config) = &self.prometheus_remote_write {
            config.validate(&format!("{path}.prometheus_remote_write"), problems);
        }
        if let Some(config) = &self.loki {
            config.validate(&format!("{path}.loki"), problems);
        }
        if let Some(config) = &self.prometheus {
            config.validate(&format!("{path}.prometheus"), problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> String {
        let config: ExportersConfig = tailgate_config::from_yaml(yaml).unwrap();
        let mut problems = Problems::default();
        config.validate("exporters", &mut problems);
        problems.to_string()
    }

    /// A header the client could not send was dropped silently when it was built, so a mistyped `Authorization`
    /// became a stream of 401s; it is a config mistake, reported with its path (and without the secret).
    #[test]
    fn invalid_header_values_are_reported_with_their_path() {
        let yaml = r#"
loki:
  endpoint: http://loki:3100/loki/api/v1/push
  headers: { Authorization: "Bearer tökén" }
  tenant_id: "team\u0001"
prometheus_remote_write:
  endpoint: http://prometheus:9090/api/v1/write
  headers: { X-Token: "ok", "Bad Name": "x" }
jaeger:
  endpoint: http://jaeger:4317
  headers: { authorization: "Bearer\u0007", x-trace-bin: "abc" }
"#;
        assert_eq!(
            problems(yaml),
            [
                "exporters.jaeger.headers.x-trace-bin: gRPC metadata keys ending in -bin take binary values; not \
                 supported",
                "exporters.jaeger.headers.authorization: would be sent in cleartext to an http:// endpoint; use \
                 https://, or set tls.insecure: true",
                "exporters.jaeger.headers.authorization: not a valid HTTP header value",
                "exporters.prometheus_remote_write.headers.Bad Name: is not a valid header name",
                "exporters.loki.tenant_id: not a valid HTTP header value (X-Scope-OrgID)",
                "exporters.loki.headers.Authorization: would be sent in cleartext to an http:// endpoint; use \
                 https://, or set tls.insecure: true",
                "exporters.loki.headers.Authorization: not a valid HTTP header value",
            ]
            .join("\n")
        );
    }

    /// TLS settings on an `http://` endpoint would be unused, and credentials would travel in plaintext: a
    /// mistake, reported with its path; so are `auth` sections that name no credentials or two, and an
    /// unreadable token file (named, never shown).
    #[test]
    fn tls_and_auth_mistakes_are_reported_with_their_paths() {
        let yaml = r#"
loki:
  endpoint: http://loki:3100/loki/api/v1/push
  tls: { server_name_override: loki.internal }
prometheus_remote_write:
  endpoint: https://mimir:9009/api/v1/push
  auth: { bearer_token: { file: /nonexistent/token } }
jaeger:
  endpoint: https://jaeger:4317
  auth: {}
"#;
        assert_eq!(
            problems(yaml),
            [
                "exporters.jaeger.auth: give bearer_token or basic (or remove auth)",
                "exporters.prometheus_remote_write.auth.bearer_token: cannot read `/nonexistent/token`: No such \
                 file or directory (os error 2)",
                "exporters.loki.endpoint: is http:// but `tls` is set; use https:// to connect with TLS",
            ]
            .join("\n")
        );
    }

    /// A token or password sent to an `http://` endpoint can be read by anyone on the path: refused unless
    /// `tls.insecure` says the cleartext is meant (the Collector's convention), which an `https://` endpoint
    /// contradicts.
    #[test]
    fn credentials_in_cleartext_need_tls_insecure() {
        let yaml = r#"
loki:
  endpoint: http://loki:3100/loki/api/v1/push
  auth: { basic: { username: tailgate, password: { env: PATH } } }
prometheus_remote_write:
  endpoint: http://mimir:9009/api/v1/push
  auth: { bearer_token: { env: PATH } }
  tls: { insecure: true }
jaeger:
  endpoint: https://jaeger:4317
  headers: { Authorization: "Bearer x" }
  tls: { insecure: true }
"#;
        assert_eq!(
            problems(yaml),
            [
                "exporters.jaeger.tls.insecure: is true but the endpoint is https://; remove one",
                "exporters.loki.auth: would be sent in cleartext to an http:// endpoint; use https://, or set \
                 tls.insecure: true",
            ]
            .join("\n")
        );
    }

    /// Each Loki protocol has its own path; the other one's is a mistake that would answer 404 on every push.
    #[test]
    fn a_loki_endpoint_of_the_other_protocol_is_reported() {
        assert_eq!(
            problems("loki: { protocol: otlp, endpoint: 'http://loki:3100/loki/api/v1/push' }"),
            "exporters.loki.endpoint: is Loki's push endpoint; set `protocol: push`, or use http://loki:3100/otlp/v1/logs"
        );
        assert_eq!(
            problems("loki: { endpoint: 'http://loki:3100/otlp/v1/logs' }"),
            "exporters.loki.endpoint: is Loki's otlp endpoint; set `protocol: otlp`, or use \
             http://loki:3100/loki/api/v1/push"
        );
        assert_eq!(problems("loki: { protocol: otlp, endpoint: 'http://loki:3100/otlp/v1/logs' }"), "");
    }

    /// `resource_to_telemetry_conversion` takes the Collector's form too, so the seed's config carries over.
    #[test]
    fn resource_to_telemetry_conversion_takes_the_collectors_form() {
        for (yaml, on) in [("true", true), ("{ enabled: true }", true), ("{ enabled: false }", false)] {
            let config: ExportersConfig = tailgate_config::from_yaml(&format!(
                "prometheus_remote_write: {{ endpoint: 'http://p:9090/api/v1/write', \
                 resource_to_telemetry_conversion: {yaml} }}"
            ))
            .unwrap();
            assert_eq!(config.prometheus_remote_write.unwrap().resource_to_telemetry_conversion, on, "{yaml}");
        }
        let refused = tailgate_config::from_yaml::<ExportersConfig>(
            "prometheus_remote_write: { resource_to_telemetry_conversion: { enable: true } }",
        );
        assert!(refused.is_err());
    }

    /// Both would be sent and a backend reads the first, the static header, so a rotated token file went unused.
    #[test]
    fn an_authorization_header_beside_auth_is_reported() {
        assert_eq!(
            problems(
                "loki: { endpoint: 'https://loki:3100/loki/api/v1/push', auth: { bearer_token: { env: PATH } }, \
                 headers: { Authorization: Bearer static } }"
            ),
            "exporters.loki.headers.Authorization: is set together with auth; give one of them"
        );
    }
}
