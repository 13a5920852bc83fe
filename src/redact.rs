//! What `tailgate validate` prints: the effective configuration with its secrets replaced by `[REDACTED]`, as the
//! OpenTelemetry Collector prints its opaque values. A secret is any value of a request header (exporters send
//! `Authorization`, API keys, tenant IDs there), a tenant ID, and any Kafka client property whose name says it holds
//! a credential (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`, …).

use serde_yaml::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Parts of a key that mark its value as a credential.
const SECRET_WORDS: [&str; 5] = ["password", "secret", "token", "credential", "pem"];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("tenant") || SECRET_WORDS.iter().any(|word| key.contains(word))
}

/// `config` with every secret redacted.
pub fn redacted(mut config: Value) -> Value {
    redact(&mut config, false);
    config
}

/// Redacts in place; under `headers`, every value is a secret.
fn redact(value: &mut Value, all: bool) {
    match value {
        Value::Mapping(mapping) => {
            for (key, value) in mapping.iter_mut() {
                let key = key.as_str().unwrap_or_default();
                if all || (is_secret_key(key) && !value.is_null() && !value.is_mapping()) {
                    if !value.is_null() {
                        *value = Value::String(REDACTED.to_owned());
                    }
                } else {
                    redact(value, key == "headers");
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|item| redact(item, all)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_headers_and_tenants_are_redacted_and_nothing_else() {
        let config: Value = serde_yaml::from_str(
            "kafka: { brokers: 'k:9092', client: { sasl.password: hunter2, ssl.key.password: p, \
             sasl.username: alice, ssl.key.location: /etc/key.pem } }\n\
             exporters: { loki: { endpoint: 'http://loki', tenant_id: shop, headers: { Authorization: Bearer abc } }, \
             jaeger: { headers: {} } }\n",
        )
        .unwrap();
        let printed = serde_yaml::to_string(&redacted(config)).unwrap();
        for secret in ["hunter2", "ssl.key.password: p\n", "shop", "Bearer abc"] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        for kept in ["alice", "k:9092", "http://loki", "/etc/key.pem", "Authorization: '[REDACTED]'"] {
            assert!(printed.contains(kept), "{kept} missing:\n{printed}");
        }
    }
}
