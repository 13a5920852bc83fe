//! Credentials in an `Authorization` header — a bearer token, or basic auth — each secret read from its file (or
//! the environment) for every request, so a rotated file holds from the next request on. One type for both ends:
//! what a scraper must send to a port that serves `/metrics` (the telemetry port, the Prometheus scrape endpoint;
//! Prometheus's `authorization: { credentials_file }` or `basic_auth`), checked in constant time; and what an
//! exporter sends its backend (the exporters' `auth`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tailgate_config::{Problems, SecretSource};

/// An `auth:` section: `{ bearer_token: { file: … } }` or `{ basic: { username: …, password: { file: … } } }`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrapeAuth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicCredentials>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicCredentials {
    pub username: String,
    pub password: SecretSource,
}

impl ScrapeAuth {
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
        let text = self.expected()?;
        let mut value = HeaderValue::from_str(&text).map_err(|_| "holds characters a header cannot".to_owned())?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The `Authorization` value, read now.
    fn expected(&self) -> Result<String, String> {
        use base64::Engine as _;
        match (&self.bearer_token, &self.basic) {
            (Some(token), _) => Ok(format!("Bearer {}", token.read()?.expose())),
            (None, Some(basic)) => {
                let pair = format!("{}:{}", basic.username, basic.password.read()?.expose());
                Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
            }
            (None, None) => Err("no credentials".to_owned()),
        }
    }

    /// Whether `sent` (the request's `Authorization`) carries the credentials. A secret that cannot be read now
    /// lets nobody in.
    pub fn accepts(&self, sent: Option<&HeaderValue>) -> bool {
        let (Some(sent), Ok(expected)) = (sent, self.expected()) else { return false };
        let (sent, expected) = (sent.as_bytes(), expected.as_bytes());
        // Every byte compared, whatever the first difference: the time says nothing about how close a guess was.
        sent.len() == expected.len() && sent.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

/// Middleware answering 401 (with `WWW-Authenticate`) to a request without the credentials.
pub async fn require(State(auth): State<Arc<ScrapeAuth>>, request: Request, next: Next) -> Response {
    if auth.accepts(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    let scheme = if auth.basic.is_some() { "Basic realm=\"metrics\"" } else { "Bearer" };
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, scheme)], "credentials required\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_credentials_are_accepted_and_a_rotated_file_holds_at_once() {
        let dir = std::env::temp_dir().join(format!("tailgate-scrape-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let auth = ScrapeAuth { bearer_token: Some(SecretSource { file: Some(file.clone()), env: None }), basic: None };
        let header = |value: &str| HeaderValue::from_str(value).unwrap();
        assert!(auth.accepts(Some(&header("Bearer s3cret"))));
        assert!(!auth.accepts(Some(&header("Bearer s3cres"))));
        assert!(!auth.accepts(Some(&header("Bearer s3cret2"))));
        assert!(!auth.accepts(None));
        std::fs::write(&file, "next").unwrap();
        assert!(!auth.accepts(Some(&header("Bearer s3cret"))), "the rotated token holds from the next request");
        assert!(auth.accepts(Some(&header("Bearer next"))));
        std::fs::remove_file(&file).unwrap();
        assert!(!auth.accepts(Some(&header("Bearer next"))), "an unreadable secret lets nobody in");
    }
}
