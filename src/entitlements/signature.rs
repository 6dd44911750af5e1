//! JWT verification with pinned algorithms, used for marketplace signatures and Pub/Sub push
//! OIDC tokens. Only RS256 and ES256 are accepted (RS256 alone where Google signs); `none` and
//! every HS* algorithm are refused before any key is tried, so a public key can never be used
//! as an HMAC secret.

use std::path::Path;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Why a token was refused (the text is safe to show; it never contains the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SignatureError {
    pub message: String,
    /// No configured key could be chosen for the token (its `kid` is unknown, or no key fits
    /// its algorithm): keys fetched from a URL may have rotated since, so fetch them again.
    pub no_key: bool,
}

impl SignatureError {
    fn new(message: impl Into<String>) -> Self {
        SignatureError {
            message: message.into(),
            no_key: false,
        }
    }
}

/// The keys a token may be signed with.
#[derive(Clone)]
pub enum Keys {
    /// One PEM public key (RSA or EC P-256).
    Pem {
        rsa: Option<DecodingKey>,
        ec: Option<DecodingKey>,
    },
    /// A JWKS document; the token's `kid` picks the key (without one, every key fit for the
    /// token's algorithm is tried).
    Jwks(JwkSet),
}

impl Keys {
    /// Reads a PEM public key file.
    pub fn from_pem_file(path: &Path) -> Result<Keys, String> {
        let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let rsa = DecodingKey::from_rsa_pem(&pem).ok();
        let ec = DecodingKey::from_ec_pem(&pem).ok();
        if rsa.is_none() && ec.is_none() {
            return Err(format!(
                "{} is not an RSA or EC public key in PEM",
                path.display()
            ));
        }
        Ok(Keys::Pem { rsa, ec })
    }

    /// Reads a JWKS file.
    pub fn from_jwks_file(path: &Path) -> Result<Keys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::from_jwks_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a JWKS document.
    pub fn from_jwks_json(text: &str) -> Result<Keys, String> {
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        if set.keys.is_empty() {
            return Err("the JWKS has no keys".into());
        }
        Ok(Keys::Jwks(set))
    }

    /// The keys that may have signed a token of `alg`: the PEM key of that type; in a JWKS,
    /// the key the token's `kid` names, or, for a token without one (RFC 7515 makes `kid`
    /// optional), every key fit for `alg` (an RSA key for RS256, a P-256 key for ES256, not
    /// one marked for encryption or for another algorithm), tried in turn.
    fn keys_for(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<DecodingKey>, SignatureError> {
        match self {
            Keys::Pem { rsa, ec } => match alg {
                Algorithm::RS256 => rsa.clone(),
                _ => ec.clone(),
            }
            .map(|k| vec![k])
            .ok_or_else(|| SignatureError::new(format!("no {alg:?} key is configured"))),
            Keys::Jwks(set) => {
                let chosen: Vec<&Jwk> = match kid {
                    Some(k) => set.find(k).into_iter().collect(),
                    None => set.keys.iter().filter(|k| fits(k, alg)).collect(),
                };
                if chosen.is_empty() {
                    return Err(SignatureError {
                        message: match kid {
                            Some(k) => format!("no key in the JWKS has the token's kid {k:?}"),
                            None => {
                                format!("the token names no kid and the JWKS has no {alg:?} key")
                            }
                        },
                        no_key: true,
                    });
                }
                chosen
                    .into_iter()
                    .map(|jwk| {
                        DecodingKey::from_jwk(jwk)
                            .map_err(|e| SignatureError::new(format!("unusable JWKS key: {e}")))
                    })
                    .collect()
            }
        }
    }
}

/// Whether `jwk` can verify a token of `alg` (RS256 or ES256).
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let kind = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        _ => false,
    };
    let named = (jwk.common.key_algorithm).is_none_or(|a| {
        matches!(
            (a, alg),
            (KeyAlgorithm::RS256, Algorithm::RS256) | (KeyAlgorithm::ES256, Algorithm::ES256)
        )
    });
    let for_signing = !matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    );
    kind && named && for_signing
}

/// The `alg` a token's header names, read by hand for a header the JWT library refused: it
/// takes only the algorithms it knows (`none` would be refused as a malformed header).
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// What a token must prove besides its signature.
#[derive(Clone)]
pub struct Expectations {
    /// The issuers a token may name (`iss`); none: not checked.
    pub issuers: Vec<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    /// Accept RS256 only (Google's OIDC tokens), not ES256.
    pub rs256_only: bool,
}

/// Verifies `token` and returns its claims: algorithm pinned to RS256/ES256, signature, `exp`
/// (required), and `iss`/`aud` when expected.
pub fn verify(token: &str, keys: &Keys, expect: &Expectations) -> Result<Value, SignatureError> {
    let allowed = if expect.rs256_only {
        "RS256 only"
    } else {
        "RS256 or ES256 only"
    };
    let header = decode_header(token).map_err(|e| {
        // The library takes only the algorithms it knows: `none` reads as a malformed header.
        SignatureError::new(match header_alg(token) {
            Some(other) if other != "RS256" && other != "ES256" => {
                format!("algorithm {other} is not allowed ({allowed})")
            }
            _ => format!("malformed token: {e}"),
        })
    })?;
    let alg = header.alg;
    if !(alg == Algorithm::RS256 || (alg == Algorithm::ES256 && !expect.rs256_only)) {
        return Err(SignatureError::new(format!(
            "algorithm {alg:?} is not allowed ({allowed})"
        )));
    }
    let keys = keys.keys_for(alg, header.kid.as_deref())?;
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = expect.leeway_secs;
    v.set_required_spec_claims(&["exp"]);
    // RFC 7519 §4.1.5: a token is not accepted before its `nbf` (jsonwebtoken skips it by
    // default).
    v.validate_nbf = true;
    if expect.issuers.is_empty() {
        v.iss = None;
    } else {
        v.set_issuer(&expect.issuers);
    }
    match &expect.audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    // A key that does not verify the signature gives way to the next; any other refusal
    // (expired, wrong audience, …) comes after the signature verified, and is the answer.
    let mut refused = None;
    for key in &keys {
        match decode::<Value>(token, key, &v) {
            Ok(d) => return Ok(d.claims),
            Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                refused = Some(e)
            }
            Err(e) => return Err(SignatureError::new(format!("token refused: {e}"))),
        }
    }
    Err(SignatureError::new(match refused {
        Some(e) => format!("token refused: {e}"),
        None => "token refused: no key to try".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn key(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/keys")
                .join(name),
        )
        .unwrap()
    }

    fn pem_keys() -> Keys {
        let rsa = DecodingKey::from_rsa_pem(&key("rsa_public.pem")).ok();
        let ec = DecodingKey::from_ec_pem(&key("ec_public.pem")).ok();
        Keys::Pem { rsa, ec }
    }

    fn expect() -> Expectations {
        Expectations {
            issuers: vec!["marketplace".into()],
            audience: Some("tai".into()),
            leeway_secs: 0,
            rs256_only: false,
        }
    }

    fn claims(exp_offset: i64) -> Value {
        let now = (crate::clock::now_ms() / 1000) as i64;
        json!({"iss": "marketplace", "aud": "tai", "exp": now + exp_offset, "tenant_id": "acme"})
    }

    fn rs256(c: &Value, private: &str) -> String {
        encode(
            &Header::new(Algorithm::RS256),
            c,
            &EncodingKey::from_rsa_pem(&key(private)).unwrap(),
        )
        .unwrap()
    }

    /// A valid RS256 token of `rsa_private.pem` whose header names `kid`.
    fn rs256_kid(kid: &str) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        let key = EncodingKey::from_rsa_pem(&key("rsa_private.pem")).unwrap();
        encode(&h, &claims(60), &key).unwrap()
    }

    #[test]
    fn valid_rs256_and_es256_tokens_pass() {
        assert_eq!(
            verify(
                &rs256(&claims(60), "rsa_private.pem"),
                &pem_keys(),
                &expect()
            )
            .unwrap()["tenant_id"],
            "acme"
        );
        let es = encode(
            &Header::new(Algorithm::ES256),
            &claims(60),
            &EncodingKey::from_ec_pem(&key("ec_private.pem")).unwrap(),
        )
        .unwrap();
        assert!(verify(&es, &pem_keys(), &expect()).is_ok());
        let jwks = Keys::from_jwks_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/jwks.json"),
        )
        .unwrap();
        assert!(verify(&rs256_kid("test-rsa"), &jwks, &expect()).is_ok());
    }

    #[test]
    fn expired_wrong_audience_wrong_issuer_wrong_signer_are_refused() {
        assert!(
            verify(
                &rs256(&claims(-120), "rsa_private.pem"),
                &pem_keys(),
                &expect()
            )
            .is_err(),
            "expired"
        );
        let mut c = claims(60);
        c["aud"] = json!("someone-else");
        assert!(
            verify(&rs256(&c, "rsa_private.pem"), &pem_keys(), &expect()).is_err(),
            "audience"
        );
        let mut c = claims(60);
        c["iss"] = json!("mallory");
        assert!(
            verify(&rs256(&c, "rsa_private.pem"), &pem_keys(), &expect()).is_err(),
            "issuer"
        );
        assert!(
            verify(
                &rs256(&claims(60), "other_rsa_private.pem"),
                &pem_keys(),
                &expect()
            )
            .is_err(),
            "signer"
        );
        let mut c = claims(60);
        c.as_object_mut().unwrap().remove("exp");
        assert!(
            verify(&rs256(&c, "rsa_private.pem"), &pem_keys(), &expect()).is_err(),
            "exp is required"
        );
        // Not valid before its `nbf`; valid from it on.
        let now = (crate::clock::now_ms() / 1000) as i64;
        let mut c = claims(600);
        c["nbf"] = json!(now + 300);
        let e = verify(&rs256(&c, "rsa_private.pem"), &pem_keys(), &expect()).unwrap_err();
        assert!(e.message.contains("ImmatureSignature"), "{}", e.message);
        c["nbf"] = json!(now - 5);
        assert!(verify(&rs256(&c, "rsa_private.pem"), &pem_keys(), &expect()).is_ok());
    }

    #[test]
    fn an_rsa_public_key_is_read_in_spki_and_in_pkcs1_form() {
        let t = rs256(&claims(60), "rsa_private.pem");
        for file in ["rsa_public.pem", "rsa_public_pkcs1.pem"] {
            let keys = Keys::from_pem_file(
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/keys")
                    .join(file),
            )
            .unwrap();
            assert!(verify(&t, &keys, &expect()).is_ok(), "{file}");
        }
    }

    #[test]
    fn a_token_without_kid_is_tried_against_every_jwks_key_fit_for_its_algorithm() {
        let jwks = Keys::from_jwks_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/jwks_rotating.json"),
        )
        .unwrap();
        // Signed by the JWKS's second RSA key, no kid: the first RSA key gives way to it.
        let t = rs256(&claims(60), "rsa_private.pem");
        assert_eq!(verify(&t, &jwks, &expect()).unwrap()["tenant_id"], "acme");
        let es = encode(
            &Header::new(Algorithm::ES256),
            &claims(60),
            &EncodingKey::from_ec_pem(&key("ec_private.pem")).unwrap(),
        )
        .unwrap();
        assert!(verify(&es, &jwks, &expect()).is_ok());
        // Expired but signed by a key of the set: the expiry is the answer, not the signature.
        let err = verify(&rs256(&claims(-120), "rsa_private.pem"), &jwks, &expect()).unwrap_err();
        assert!(err.message.contains("Expired"), "{err}");
        // A kid the set lacks is refused by name, even when a key of the set would verify.
        let err = verify(&rs256_kid("retired"), &jwks, &expect()).unwrap_err();
        assert!(err.message.contains("\"retired\"") && err.no_key, "{err}");
        // A signer the set does not hold is refused after every RSA key was tried.
        let single = Keys::from_jwks_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/jwks.json"),
        )
        .unwrap();
        let err = verify(&es, &single, &expect()).unwrap_err();
        assert!(
            err.message.contains("has no ES256 key") && err.no_key,
            "{err}"
        );
        let mut wrong = claims(60);
        wrong["tenant_id"] = json!("x");
        let t = rs256(&wrong, "other_rsa_private.pem");
        let err = verify(&t, &single, &expect()).unwrap_err();
        assert!(
            err.message.contains("InvalidSignature") && !err.no_key,
            "{err}"
        );
    }

    #[test]
    fn none_and_hmac_with_the_public_key_as_secret_are_refused() {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims(60))
        );
        let err = verify(&none, &pem_keys(), &expect()).unwrap_err();
        assert_eq!(
            err.message,
            "algorithm none is not allowed (RS256 or ES256 only)"
        );
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &claims(60),
            &EncodingKey::from_secret(&key("rsa_public.pem")),
        )
        .unwrap();
        let err = verify(&hs, &pem_keys(), &expect()).unwrap_err();
        assert!(err.message.contains("not allowed"), "{err}");
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        use base64::Engine as _;
        let t = rs256(&claims(60), "rsa_private.pem");
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut c = claims(60);
        c["tenant_id"] = json!("mallory");
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
        assert!(verify(&parts.join("."), &pem_keys(), &expect()).is_err());
    }
}
