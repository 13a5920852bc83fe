use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tailgate_config::{Duration, Problems, SecretSource};

/// The `auth:` section of a receiver: who may write, and as which tenant. A request must present
/// `Authorization: Bearer <token>` with one of the static tokens or a JWT the JWKS verifies (the OpenTelemetry
/// Collector's `bearertokenauth` and `oidc` extensions, without the network: keys come from a file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Static tokens, each naming the tenant whoever holds it writes as.
    pub bearer_tokens: Vec<BearerToken>,
    pub jwt: Option<JwtConfig>,
    /// How often token files and the JWKS are read again, so that rotating them needs no restart; `0s` never.
    pub reload_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { bearer_tokens: Vec::new(), jwt: None, reload_interval: Duration::from_secs(10) }
    }
}

/// One static token and its tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerToken {
    pub tenant: String,
    /// `{ file: … }` or `{ env: … }`.
    pub token: SecretSource,
}

/// JWT bearer tokens, verified offline.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The issuer's public keys, a JWKS document (`{"keys": [...]}`), as its `jwks_uri` serves it.
    pub jwks_file: PathBuf,
    /// The `iss` a token must carry.
    pub issuer: String,
    /// The `aud` a token must carry (one of, when it carries several).
    pub audience: String,
    /// The claim naming the tenant; a token without it is refused.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
}

fn default_tenant_claim() -> String {
    "tenant".to_owned()
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

impl AuthConfig {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.bearer_tokens.is_empty() && self.jwt.is_none() {
            problems.push(path, "names no credentials: give bearer_tokens, jwt or both (or remove auth)");
        }
        let mut read = Vec::new();
        for (i, token) in self.bearer_tokens.iter().enumerate() {
            if let Err(message) = crate::tenant::validate(&token.tenant) {
                problems.push(format!("{path}.bearer_tokens[{i}].tenant"), message);
            }
            match token.token.read() {
                Ok(secret) if read.contains(&secret) => problems.push(
                    format!("{path}.bearer_tokens[{i}].token"),
                    "is the same token as an earlier entry: each token names one tenant",
                ),
                Ok(secret) => read.push(secret),
                Err(message) => problems.push(format!("{path}.bearer_tokens[{i}].token"), message),
            }
        }
        if let Some(jwt) = &self.jwt {
            if let Err(message) = super::jwt::Keys::read(&jwt.jwks_file) {
                problems.push(format!("{path}.jwt.jwks_file"), message);
            }
            for (key, value) in
                [("issuer", &jwt.issuer), ("audience", &jwt.audience), ("tenant_claim", &jwt.tenant_claim)]
            {
                if value.is_empty() {
                    problems.push(format!("{path}.jwt.{key}"), "must not be empty");
                }
            }
        }
    }
}
