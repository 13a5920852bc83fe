//! Who is writing: each receiver's `auth` checks the request's bearer token before its body is read, and names
//! the tenant the request writes as. Without `auth`, a receiver may be told to trust a tenant header (set by a
//! proxy that authenticated the client); with it, the header is never read, so a client of tenant A that sends
//! `X-Scope-OrgID: B` still writes as A.

mod config;
mod jwt;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::http::{header, HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

pub use self::config::{AuthConfig, BearerToken, JwtConfig};
use crate::error::ExportError;
use crate::tenant::Tenant;

/// Why a request's credentials were refused: the `reason` of `tailgate_ingest_auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <token>`, or a token that does not parse.
    Malformed,
    /// A static token that is not one of ours.
    UnknownToken,
    /// A JWT whose key is not in the JWKS.
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    /// A genuine JWT without a (valid) tenant claim.
    NoTenant,
}

impl Failure {
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::UnknownToken => "unknown_token",
            Failure::UnknownKey => "unknown_key",
            Failure::BadSignature => "bad_signature",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::WrongIssuer => "wrong_issuer",
            Failure::WrongAudience => "wrong_audience",
            Failure::MissingClaim => "missing_claim",
            Failure::NoTenant => "no_tenant",
        }
    }

    /// What the client is told (never the token).
    pub fn message(self) -> &'static str {
        match self {
            Failure::Missing => "missing credentials: send Authorization: Bearer <token>",
            Failure::Malformed => "the Authorization header is not a bearer token this gateway can read",
            Failure::UnknownToken | Failure::UnknownKey | Failure::BadSignature => "the bearer token is not valid",
            Failure::Expired => "the bearer token has expired",
            Failure::NotYetValid => "the bearer token is not valid yet",
            Failure::WrongIssuer => "the bearer token is from another issuer",
            Failure::WrongAudience => "the bearer token is meant for another audience",
            Failure::MissingClaim => "the bearer token lacks exp, iss or aud",
            Failure::NoTenant => "the bearer token names no valid tenant",
        }
    }
}

/// The credentials in use, read from their files.
struct Credentials {
    /// SHA-256 of each static token, and its tenant: compared in constant time, and of equal length whatever the
    /// token's.
    tokens: Vec<([u8; 32], Tenant)>,
    /// Each `bearer_tokens` entry's digest as last read, by entry: what a read that fails for a passing reason
    /// (no file descriptor left, an I/O error) keeps.
    read: Vec<Option<[u8; 32]>>,
    jwks: Option<Arc<jwt::Keys>>,
}

/// One reading of the credential files: what to use, and each entry that cannot be used, by its key in the `auth`
/// section (`bearer_tokens[1].token`, `jwt.jwks_file`) with why.
struct Reading {
    credentials: Credentials,
    refused: BTreeMap<String, String>,
}

impl Credentials {
    /// At start every entry must read, as `validate` checked.
    fn read(config: &AuthConfig) -> Result<Credentials, String> {
        let Reading { credentials, refused } = Credentials::reread(config, None);
        match refused.into_iter().next() {
            Some((key, message)) => Err(format!("{key}: {message}")),
            None => Ok(credentials),
        }
    }

    /// Each entry on its own, so that one bad file touches only its own entry: a token whose file is missing or
    /// empty is revoked (deleting or emptying a revoked token's file revokes it); a file that exists but cannot be
    /// read now (no file descriptor left under a connection flood, an I/O error) keeps the token read before, so
    /// a passing fault does not lock its clients out; a token that two entries hold names no tenant, so every
    /// entry holding it is refused. A JWKS that cannot be read keeps the keys of `before` (an issuer's keys are not
    /// revoked by a broken file).
    fn reread(config: &AuthConfig, before: Option<&Credentials>) -> Reading {
        let mut refused = BTreeMap::new();
        let mut read = Vec::with_capacity(config.bearer_tokens.len());
        let mut digests = Vec::with_capacity(config.bearer_tokens.len());
        for (i, entry) in config.bearer_tokens.iter().enumerate() {
            let key = format!("bearer_tokens[{i}].token");
            let tenant = match Tenant::new(&entry.tenant) {
                Ok(tenant) => tenant,
                Err(message) => {
                    refused.insert(key, message);
                    digests.push(None);
                    continue;
                }
            };
            match entry.token.read() {
                Ok(secret) => {
                    let token = digest(secret.expose());
                    digests.push(Some(token));
                    read.push((key, (token, tenant)));
                }
                Err(message) => {
                    // There and not empty, yet unreadable: a passing fault, not a revocation.
                    let passing = entry
                        .token
                        .file
                        .as_ref()
                        .is_some_and(|file| std::fs::metadata(file).is_ok_and(|meta| meta.len() > 0));
                    let kept = before.and_then(|before| before.read.get(i).copied().flatten()).filter(|_| passing);
                    digests.push(kept);
                    match kept {
                        Some(token) => {
                            tracing::warn!(entry = %key, error = %message, "token file unreadable for now; keeping its token");
                            read.push((key, (token, tenant)));
                        }
                        None => {
                            refused.insert(key, message);
                        }
                    }
                }
            }
        }
        let mut tokens = Vec::with_capacity(read.len());
        for (key, (digest, tenant)) in &read {
            if read.iter().filter(|(_, (other, _))| other == digest).count() > 1 {
                refused
                    .insert(key.clone(), "holds the same token as another entry: each token names one tenant".into());
            } else {
                tokens.push((*digest, tenant.clone()));
            }
        }
        let jwks = config.jwt.as_ref().and_then(|jwt| match jwt::Keys::read(&jwt.jwks_file) {
            Ok(keys) => Some(Arc::new(keys)),
            Err(message) => {
                refused.insert("jwt.jwks_file".to_owned(), message);
                before.and_then(|before| before.jwks.clone())
            }
        });
        Reading { credentials: Credentials { tokens, read: digests, jwks }, refused }
    }
}

fn digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// One receiver's authentication, and the tenant it assigns.
#[derive(Clone)]
pub(crate) struct Identify {
    auth: Option<Arc<Authenticator>>,
    tenant_header: Option<HeaderName>,
    transport: &'static str,
}

struct Authenticator {
    config: AuthConfig,
    credentials: RwLock<Arc<Credentials>>,
}

impl Identify {
    /// Reads the credentials and, with a `reload_interval`, re-reads them for as long as the receiver lives.
    pub(crate) fn new(
        auth: Option<&AuthConfig>,
        tenant_header: Option<&str>,
        transport: &'static str,
    ) -> Result<Identify, String> {
        let auth = match auth {
            Some(config) => {
                let credentials = RwLock::new(Arc::new(Credentials::read(config)?));
                let authenticator = Arc::new(Authenticator { config: config.clone(), credentials });
                let interval = config.reload_interval.get();
                if !interval.is_zero() {
                    tokio::spawn(reload(Arc::downgrade(&authenticator), interval, transport));
                }
                Some(authenticator)
            }
            None => None,
        };
        let tenant_header = tenant_header
            .map(|name| HeaderName::try_from(name).map_err(|_| format!("`{name}` is not an HTTP header name")))
            .transpose()?;
        Ok(Identify { auth, tenant_header, transport })
    }

    /// The tenant of a request with these headers, or why it is refused. Counts refusals by reason.
    pub(crate) fn tenant(&self, headers: &HeaderMap) -> Result<Tenant, ExportError> {
        let result = match (&self.auth, &self.tenant_header) {
            (Some(auth), _) => auth.authenticate(headers).map_err(|failure| {
                metrics::counter!(crate::metrics::AUTH_FAILURES, "transport" => self.transport, "reason" => failure.reason())
                    .increment(1);
                ExportError::Unauthenticated(failure)
            }),
            (None, Some(name)) => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => Ok(Tenant::DEFAULT),
                    // Behind a proxy that appends its own value, the client's would come first: neither is taken.
                    (Some(_), Some(_)) => Err(ExportError::InvalidTenant(format!(
                        "{name}: sent more than once; a request is one tenant's"
                    ))),
                    (Some(value), None) => value
                        .to_str()
                        .map_err(|_| "not ASCII".to_owned())
                        .and_then(Tenant::new)
                        .map_err(|message| ExportError::InvalidTenant(format!("{name}: {message}"))),
                }
            }
            (None, None) => Ok(Tenant::DEFAULT),
        };
        result
    }
}

impl Authenticator {
    fn authenticate(&self, headers: &HeaderMap) -> Result<Tenant, Failure> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next().ok_or(Failure::Missing)?;
        if values.next().is_some() {
            return Err(Failure::Malformed);
        }
        let value = value.to_str().map_err(|_| Failure::Malformed)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(Failure::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Failure::Malformed);
        }
        let credentials = Arc::clone(&self.credentials.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let digest = digest(token);
        // Every token is compared, so the time taken says nothing about which one (nearly) matched.
        let mut matched = None;
        for (candidate, tenant) in &credentials.tokens {
            if bool::from(candidate.ct_eq(&digest)) {
                matched = Some(tenant.clone());
            }
        }
        if let Some(tenant) = matched {
            return Ok(tenant);
        }
        match (&self.config.jwt, &credentials.jwks) {
            (Some(config), Some(keys)) if token.split('.').count() == 3 => {
                let tenant = jwt::verify(token, keys, config)?;
                Tenant::new(&tenant).map_err(|_| Failure::NoTenant)
            }
            _ => Err(Failure::UnknownToken),
        }
    }
}

/// Re-reads token files and the JWKS every `interval`, each entry on its own ([`Credentials::reread`]). An entry
/// newly refused is logged and counted once; one accepted again is logged.
async fn reload(authenticator: std::sync::Weak<Authenticator>, interval: std::time::Duration, transport: &'static str) {
    let mut refused_before = BTreeMap::new();
    loop {
        tokio::time::sleep(interval).await;
        let Some(authenticator) = authenticator.upgrade() else { return };
        let current = Arc::clone(&authenticator.credentials.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let Reading { credentials, refused } = Credentials::reread(&authenticator.config, Some(&current));
        report(&refused_before, &refused, transport);
        refused_before = refused;
        *authenticator.credentials.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(credentials);
    }
}

fn report(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>, transport: &'static str) {
    for (key, message) in now {
        if before.get(key) != Some(message) {
            let consequence = if key.starts_with("jwt") { "keeping the keys read before" } else { "token revoked" };
            tracing::warn!(transport, entry = %key, error = %message, "receiver credentials: {consequence}");
            metrics::counter!(crate::metrics::CREDENTIALS_REFUSED, "transport" => transport).increment(1);
        }
    }
    for key in before.keys().filter(|key| !now.contains_key(*key)) {
        tracing::info!(transport, entry = %key, "receiver credentials: read again and in use");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, tokens: &[(&str, &str)]) -> AuthConfig {
        let bearer_tokens = tokens
            .iter()
            .map(|(tenant, file)| BearerToken {
                tenant: (*tenant).to_owned(),
                token: tailgate_config::SecretSource { file: Some(dir.join(file)), env: None },
            })
            .collect();
        AuthConfig { bearer_tokens, ..AuthConfig::default() }
    }

    fn tenant_of(credentials: &Credentials, token: &str) -> Option<String> {
        let digest = digest(token);
        let found = credentials.tokens.iter().find(|(candidate, _)| *candidate == digest);
        found.map(|(_, tenant)| tenant.id().unwrap_or("default").to_owned())
    }

    /// One bad file used to fail the whole reload, so every old token stayed valid: deleting a revoked token's file
    /// did not revoke it, and other tenants' rotations stopped. Each entry now stands alone.
    #[test]
    fn each_token_file_is_reloaded_on_its_own() {
        let dir = std::env::temp_dir().join(format!("tailgate-auth-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, token) in [("a", "token-a"), ("b", "token-b"), ("c", "token-c")] {
            std::fs::write(dir.join(file), token).unwrap();
        }
        let config = config(&dir, &[("checkout", "a"), ("billing", "b"), ("cart", "c")]);
        let start = Credentials::read(&config).unwrap();
        assert_eq!(tenant_of(&start, "token-a").as_deref(), Some("checkout"));

        // a's file deleted (revoked), b's emptied, c rotated.
        std::fs::remove_file(dir.join("a")).unwrap();
        std::fs::write(dir.join("b"), "").unwrap();
        std::fs::write(dir.join("c"), "token-c2").unwrap();
        let Reading { credentials, refused } = Credentials::reread(&config, Some(&start));
        assert_eq!(tenant_of(&credentials, "token-a"), None, "a deleted token file revokes its token");
        assert_eq!(tenant_of(&credentials, "token-b"), None, "an emptied token file revokes its token");
        assert_eq!(tenant_of(&credentials, "token-c"), None, "a rotated token is replaced");
        assert_eq!(tenant_of(&credentials, "token-c2").as_deref(), Some("cart"), "the rotation is picked up");
        assert_eq!(refused.keys().collect::<Vec<_>>(), ["bearer_tokens[0].token", "bearer_tokens[1].token"]);

        // c's path there but unreadable for now (here: a directory in its place, as root reads any file): the
        // token read before stays, where a missing file revoked it.
        let Reading { credentials: read_before, .. } = Credentials::reread(&config, Some(&start));
        std::fs::remove_file(dir.join("c")).unwrap();
        std::fs::create_dir(dir.join("c")).unwrap();
        let Reading { credentials, refused } = Credentials::reread(&config, Some(&read_before));
        assert_eq!(tenant_of(&credentials, "token-c2").as_deref(), Some("cart"), "a passing read error keeps it");
        assert!(!refused.contains_key("bearer_tokens[2].token"), "{refused:?}");
        std::fs::remove_dir(dir.join("c")).unwrap();
        std::fs::write(dir.join("c"), "token-c2").unwrap();

        // b's file now holds c's token: neither entry can say whose it is.
        std::fs::write(dir.join("b"), "token-c2").unwrap();
        let Reading { credentials, refused } = Credentials::reread(&config, Some(&start));
        assert_eq!(tenant_of(&credentials, "token-c2"), None, "a token two entries hold names no tenant");
        assert!(refused["bearer_tokens[2].token"].contains("same token"), "{refused:?}");
        assert!(Credentials::read(&config).is_err(), "at start, a bad entry is an error");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `X-Scope-OrgID` twice — a proxy appending its own after the client's — is refused, not read as the first.
    #[tokio::test]
    async fn a_tenant_header_sent_twice_is_refused() {
        let identify = Identify::new(None, Some("X-Scope-OrgID"), "http").unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-scope-orgid", "checkout".parse().unwrap());
        assert_eq!(identify.tenant(&headers).unwrap().id(), Some("checkout"));
        headers.append("x-scope-orgid", "billing".parse().unwrap());
        match identify.tenant(&headers) {
            Err(ExportError::InvalidTenant(message)) => assert!(message.contains("more than once"), "{message}"),
            other => panic!("two tenant values were taken: {other:?}"),
        }
        assert_eq!(identify.tenant(&HeaderMap::new()).unwrap().id(), None, "none: the default tenant");
    }
}
