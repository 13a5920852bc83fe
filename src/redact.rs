//! What `tailgate validate` prints: the effective configuration with its secrets replaced by `[REDACTED]`, as the
//! OpenTelemetry Collector prints its opaque values. A secret is any value of a request header (exporters send
//! `Authorization` and API keys there), any Kafka client property whose name says it holds
//! a credential (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`, `….passphrase`,
//! `sasl.oauthbearer.config`, …), and the `user:password@` part of any URL. A tenant ID is not a secret: it is an
//! identifier, as in Loki, Mimir and Tempo, sent in a header and served as the `tenant` label of metrics, so
//! `validate` prints it (`tenant_id: shop`, `sampler.tenants.shop`) as `/metrics` does.

use serde_yaml::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Parts of a key that mark its value as a credential.
const SECRET_WORDS: [&str; 7] =
    ["password", "passphrase", "secret", "token", "credential", "pem", "oauthbearer.config"];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| key.contains(word))
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
                if let (false, true, Value::Sequence(items)) = (all, is_secret_key(key), &mut *value) {
                    // A list under a secret's name (`bearer_tokens`): its values are secrets, its entries' fields
                    // (a token's `file`) are judged by their own names.
                    for item in items {
                        if item.is_mapping() {
                            redact(item, false);
                        } else if !item.is_null() {
                            *item = Value::String(REDACTED.to_owned());
                        }
                    }
                } else if all || (is_secret_key(key) && !value.is_null() && !value.is_mapping()) {
                    if !value.is_null() {
                        *value = Value::String(REDACTED.to_owned());
                    }
                } else {
                    redact(value, key == "headers");
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|item| redact(item, all)),
        Value::String(text) => {
            if let Some(masked) = mask_userinfo(text) {
                *text = masked;
            }
        }
        _ => {}
    }
}

/// `scheme://user:password@host…` with the credentials redacted; `None` for anything else.
fn mask_userinfo(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://{REDACTED}@{}", &rest[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_headers_are_redacted_and_nothing_else() {
        let config: Value = serde_yaml::from_str(
            "kafka: { brokers: 'k:9092', client: { sasl.password: hunter2, ssl.key.password: p, \
             sasl.username: alice, ssl.key.location: /etc/key.pem, sasl.oauthbearer.assertion.private.key.passphrase: pp1 } }\n\
             exporters: { loki: { endpoint: 'http://loki', tenant_id: shop, headers: { Authorization: Bearer abc } }, \
             prometheus: { endpoint: 'https://bob:t0k3n@prom:9090/api/v1/write' }, jaeger: { headers: {} } }\n\
             ingest: { grpc: { auth: { bearer_tokens: [ { tenant: team-x, token: { file: /run/t } } ] } } }\n",
        )
        .unwrap();
        let printed = serde_yaml::to_string(&redacted(config)).unwrap();
        for secret in ["hunter2", "ssl.key.password: p\n", "Bearer abc", "t0k3n", "bob", "pp1"] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        for kept in [
            "alice",
            "k:9092",
            "http://loki",
            "/etc/key.pem",
            "Authorization: '[REDACTED]'",
            "prom:9090/api/v1/write",
            "/run/t",
            "tenant_id: shop",
            "tenant: team-x",
        ] {
            assert!(printed.contains(kept), "{kept} missing:\n{printed}");
        }
    }
}
