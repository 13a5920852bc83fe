//! JWT bearer tokens checked against a JWKS file: signature (asymmetric algorithms only), `iss`, `aud`, `exp`
//! and `nbf`, then the tenant claim.

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::config::JwtConfig;
use super::Failure;

/// The keys of one JWKS document.
pub(crate) struct Keys(Vec<(Jwk, DecodingKey)>);

impl Keys {
    /// Reads and parses the JWKS at `path`; every key must be usable.
    pub(crate) fn read(path: &Path) -> Result<Keys, String> {
        let text = std::fs::read(path).map_err(|error| format!("cannot read `{}`: {error}", path.display()))?;
        let set: JwkSet = serde_json::from_slice(&text)
            .map_err(|error| format!("`{}` is not a JWKS document: {error}", path.display()))?;
        if set.keys.is_empty() {
            return Err(format!("`{}` holds no keys", path.display()));
        }
        let mut keys = Vec::with_capacity(set.keys.len());
        for (i, jwk) in set.keys.into_iter().enumerate() {
            let key = DecodingKey::from_jwk(&jwk)
                .map_err(|error| format!("`{}`: key {i} cannot verify signatures: {error}", path.display()))?;
            keys.push((jwk, key));
        }
        Ok(Keys(keys))
    }

    /// The key a token's header asks for: by `kid`, or the only one when it names none.
    fn find(&self, kid: Option<&str>) -> Option<&(Jwk, DecodingKey)> {
        match kid {
            Some(kid) => self.0.iter().find(|(jwk, _)| jwk.common.key_id.as_deref() == Some(kid)),
            None if self.0.len() == 1 => self.0.first(),
            None => None,
        }
    }
}

/// The tenant `token` names, once it is shown genuine and meant for us.
pub(crate) fn verify(token: &str, keys: &Keys, config: &JwtConfig) -> Result<String, Failure> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Failure::Malformed)?;
    // A symmetric algorithm would make the public key a shared secret (the classic confusion attack).
    if matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(Failure::BadSignature);
    }
    let (jwk, key) = keys.find(header.kid.as_deref()).ok_or(Failure::UnknownKey)?;
    if let Some(alg) = jwk.common.key_algorithm {
        if format!("{alg:?}") != format!("{:?}", header.alg) {
            return Err(Failure::BadSignature);
        }
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&[config.audience.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = config.leeway.get().as_secs();
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation).map_err(
        |error| match error.kind() {
            ErrorKind::ExpiredSignature => Failure::Expired,
            ErrorKind::ImmatureSignature => Failure::NotYetValid,
            ErrorKind::InvalidAudience => Failure::WrongAudience,
            ErrorKind::InvalidIssuer => Failure::WrongIssuer,
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => Failure::BadSignature,
            ErrorKind::MissingRequiredClaim(_) => Failure::MissingClaim,
            _ => Failure::Malformed,
        },
    )?;
    match data.claims.get(&config.tenant_claim) {
        Some(serde_json::Value::String(tenant)) => Ok(tenant.clone()),
        _ => Err(Failure::NoTenant),
    }
}
