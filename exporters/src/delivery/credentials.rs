//! How an exporter proves who it is to an HTTP backend: a bearer token or basic auth, each secret read from a file
//! (or the environment) for every request, so a rotated token is used from the next request on.

use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize};
use tailgate_config::{Problems, SecretSource};

/// The `auth:` section of an HTTP exporter: `{ bearer_token: { file: … } }` or
/// `{ basic: { username: …, password: { file: … } } }`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendAuth {
    pub bearer_token: Option<SecretSource>,
    pub basic: Option<BasicAuth>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: SecretSource,
}

impl BackendAuth {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        let key = match (&self.bearer_token, &self.basic) {
            (Some(_), Some(_)) => return problems.push(path, "give bearer_token or basic, not both"),
            (None, None) => return problems.push(path, "give bearer_token or basic (or remove auth)"),
            (Some(_), None) => "bearer_token",
            (None, Some(_)) => "basic.password",
        };
        if let Err(message) = self.authorization() {
            problems.push(format!("{path}.{key}"), message);
        }
    }

    /// The `Authorization` value, read now, marked sensitive (never logged by hyper, never in HPACK tables).
    pub fn authorization(&self) -> Result<HeaderValue, String> {
        use base64::Engine as _;
        let text = match (&self.bearer_token, &self.basic) {
            (Some(token), _) => format!("Bearer {}", token.read()?.expose()),
            (None, Some(basic)) => {
                let pair = format!("{}:{}", basic.username, basic.password.read()?.expose());
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
            }
            (None, None) => return Err("no credentials".to_owned()),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| "holds characters a header cannot".to_owned())?;
        value.set_sensitive(true);
        Ok(value)
    }
}
