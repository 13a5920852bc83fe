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

#[cfg(test)]
mod tests {
    //! Tokens signed here with each kind of key an issuer publishes (ECDSA P-256 and Ed25519 made with `ring`, RSA-PSS
    //! with a key `openssl` makes), checked by `verify` against a JWKS written the way an issuer serves it.

    use std::time::{SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{encode, EncodingKey, Header};
    use ring::signature::KeyPair as _;
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://login.shop.example";
    const AUDIENCE: &str = "tailgate";

    fn base64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn config() -> JwtConfig {
        JwtConfig {
            jwks_file: std::path::PathBuf::new(),
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            tenant_claim: "tenant".to_owned(),
            leeway: tailgate_config::Duration::from_secs(60),
        }
    }

    /// An issuer's signing key and the JWK that publishes it.
    struct Signer {
        alg: Algorithm,
        key: EncodingKey,
        jwk: serde_json::Value,
    }

    fn ecdsa(kid: &str) -> Signer {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        // The public key is the uncompressed point: 0x04, then X and Y.
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": base64url(&point[1..33]), "y": base64url(&point[33..])});
        Signer { alg: Algorithm::ES256, key: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    fn ed25519(kid: &str) -> Signer {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": base64url(pair.public_key().as_ref())});
        Signer { alg: Algorithm::EdDSA, key: EncodingKey::from_ed_der(pkcs8.as_ref()), jwk }
    }

    /// RSA-PSS with a key `openssl` makes (ring makes no RSA keys).
    fn rsa_pss(kid: &str) -> Signer {
        let dir = std::env::temp_dir().join(format!("tailgate-jwt-{}-{kid}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("key.pem");
        let openssl = |args: &[&str]| {
            let output = std::process::Command::new("openssl").args(args).output().expect("openssl runs");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        };
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem.to_str().unwrap()]);
        let modulus = openssl(&["rsa", "-in", pem.to_str().unwrap(), "-noout", "-modulus"]);
        let modulus = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
        let key = EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let jwk = json!({"kty": "RSA", "kid": kid, "alg": "PS256", "n": base64url(&modulus), "e": "AQAB"});
        Signer { alg: Algorithm::PS256, key, jwk }
    }

    /// The JWKS publishing `jwks`, read as the gateway reads its file.
    fn keys(jwks: &[&serde_json::Value]) -> Keys {
        let path = std::env::temp_dir().join(format!("tailgate-jwks-{}-{}.json", std::process::id(), now()));
        let path = path.with_extension(format!("{}.json", jwks.len()));
        std::fs::write(&path, json!({ "keys": jwks }).to_string()).unwrap();
        let keys = Keys::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        keys
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "tenant": "checkout"})
    }

    fn sign(signer: &Signer, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(signer.alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &signer.key).unwrap()
    }

    #[test]
    fn tokens_of_every_asymmetric_key_kind_name_their_tenant() {
        let signers = [ecdsa("ec"), ed25519("ed"), rsa_pss("pss")];
        let keys = keys(&signers.iter().map(|s| &s.jwk).collect::<Vec<_>>());
        for (signer, kid) in signers.iter().zip(["ec", "ed", "pss"]) {
            let token = sign(signer, Some(kid), &claims());
            assert_eq!(verify(&token, &keys, &config()), Ok("checkout".to_owned()), "{:?}", signer.alg);
        }
        // Signed by one key, presented as another's: the signature does not verify.
        let token = sign(&signers[0], Some("ec"), &claims());
        let forged = format!(
            "{}.{}",
            token.rsplit_once('.').unwrap().0,
            sign(&signers[0], None, &claims()).rsplit_once('.').unwrap().1
        );
        assert_eq!(verify(&forged, &keys, &config()), Err(Failure::BadSignature));
        assert_eq!(verify(&sign(&signers[0], Some("gone"), &claims()), &keys, &config()), Err(Failure::UnknownKey));
        // Without a kid, only a JWKS of one key can say which key it is.
        assert_eq!(verify(&sign(&signers[0], None, &claims()), &keys, &config()), Err(Failure::UnknownKey));
        let one = keys_of(&signers[1]);
        assert_eq!(verify(&sign(&signers[1], None, &claims()), &one, &config()), Ok("checkout".to_owned()));
    }

    fn keys_of(signer: &Signer) -> Keys {
        keys(&[&signer.jwk])
    }

    /// HMAC with the public key as the secret is the classic confusion attack: refused before any key is tried.
    #[test]
    fn hmac_tokens_are_refused_even_signed_with_the_published_key() {
        let signer = ecdsa("ec");
        let keys = keys_of(&signer);
        let published = signer.jwk.to_string();
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("ec".to_owned());
            let token = encode(&header, &claims(), &EncodingKey::from_secret(published.as_bytes())).unwrap();
            assert_eq!(verify(&token, &keys, &config()), Err(Failure::BadSignature), "{alg:?}");
        }
    }

    /// A key published for one algorithm does not verify a token that names another, even of its family.
    #[test]
    fn a_token_whose_algorithm_is_not_its_keys_is_refused() {
        let mut signer = ecdsa("ec");
        signer.jwk["alg"] = json!("ES384");
        let keys = keys_of(&signer);
        assert_eq!(verify(&sign(&signer, Some("ec"), &claims()), &keys, &config()), Err(Failure::BadSignature));
    }

    #[test]
    fn each_claim_refused_for_its_own_reason() {
        let signer = ed25519("ed");
        let keys = keys_of(&signer);
        let check = |claims: serde_json::Value| verify(&sign(&signer, Some("ed"), &claims), &keys, &config());
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = claims();
            claims[key] = value;
            claims
        };
        let without = |key: &str| {
            let mut claims = claims();
            claims.as_object_mut().unwrap().remove(key);
            claims
        };
        // The leeway is 60 s: a minute and more past `exp`, or before `nbf`, is refused; within it, accepted.
        assert_eq!(check(with("exp", json!(now() - 120))), Err(Failure::Expired));
        assert_eq!(check(with("exp", json!(now() - 30))), Ok("checkout".to_owned()));
        assert_eq!(check(with("nbf", json!(now() + 120))), Err(Failure::NotYetValid));
        assert_eq!(check(with("nbf", json!(now() + 30))), Ok("checkout".to_owned()));
        assert_eq!(check(with("iss", json!("https://evil.example"))), Err(Failure::WrongIssuer));
        assert_eq!(check(with("aud", json!("another-service"))), Err(Failure::WrongAudience));
        assert_eq!(check(with("aud", json!(["another-service", AUDIENCE]))), Ok("checkout".to_owned()));
        for claim in ["exp", "iss", "aud"] {
            assert_eq!(check(without(claim)), Err(Failure::MissingClaim), "without {claim}");
        }
        assert_eq!(check(without("tenant")), Err(Failure::NoTenant));
        assert_eq!(check(with("tenant", json!(42))), Err(Failure::NoTenant));
        assert_eq!(verify("not.a.token", &keys, &config()), Err(Failure::Malformed));
    }
}
