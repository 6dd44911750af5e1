//! Access control (SPEC §13): who may call what.
//!
//! `auth.mode = none` (local default; Cloud Run IAM stands in front) treats every caller as an
//! admin. `bearer` accepts only tokens whose SHA-256 digest is configured, each with a role:
//! `admin` reaches everything, `operator` reads everything (and may reset governors), `tenant`
//! reaches only its own tenant. Digests are compared in constant time against every configured
//! entry; tokens are never stored, logged or echoed. The same check serves HTTP, MCP and Pub/Sub.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tenant::TenantId;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Operator,
    Tenant(TenantId),
}

/// What a caller is refused for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or a token that matches no configured digest (401).
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// A valid token without the rights for this (403).
    #[error("{0}")]
    Forbidden(String),
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme's case does not
/// matter (RFC 9110 §11.1: `bearer`, `Bearer`, `BEARER`); spaces around the token do not count.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `none` or `bearer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
    Bearer,
}

/// One configured token: the hex SHA-256 of the token, its role, and for `tenant` its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenConfig {
    pub sha256: String,
    pub role: String,
    #[serde(default)]
    pub tenant: Option<String>,
}

struct Entry {
    digest: [u8; 32],
    caller: Caller,
}

/// Turns `Authorization` headers into callers.
pub struct Authenticator {
    mode: AuthMode,
    entries: Vec<Entry>,
}

/// The hex SHA-256 of a token, as it goes into the configuration.
pub fn token_digest(token: &str) -> String {
    crate::receipts::receipt::hex(&Sha256::digest(token.as_bytes()))
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in b.chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Equality that takes the same time whatever the inputs.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// Builds from configuration; every problem names the entry.
    pub fn new(mode: AuthMode, tokens: &[TokenConfig]) -> Result<Authenticator, String> {
        let mut entries = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let digest = unhex(&t.sha256.to_ascii_lowercase()).ok_or_else(|| format!("auth.tokens[{i}].sha256: expected 64 hex characters (the SHA-256 of the token)"))?;
            let caller = match (t.role.as_str(), &t.tenant) {
                ("admin", None) => Caller::Admin,
                ("operator", None) => Caller::Operator,
                ("tenant", Some(tenant)) => Caller::Tenant(
                    TenantId::parse(tenant).map_err(|e| format!("auth.tokens[{i}].tenant: {e}"))?,
                ),
                ("tenant", None) => {
                    return Err(format!("auth.tokens[{i}]: role tenant needs a tenant"))
                }
                (r, _) if !matches!(r, "admin" | "operator" | "tenant") => {
                    return Err(format!(
                        "auth.tokens[{i}].role: expected admin, operator or tenant, found {r:?}"
                    ))
                }
                _ => return Err(format!("auth.tokens[{i}]: only role tenant takes a tenant")),
            };
            // One token, one role: a digest listed twice would give its holder whichever
            // entry came first, which the operator who added the second did not mean.
            if let Some(j) = entries.iter().position(|e: &Entry| e.digest == digest) {
                return Err(format!(
                    "auth.tokens[{i}].sha256: the same token as auth.tokens[{j}]; give each token one entry"
                ));
            }
            entries.push(Entry { digest, caller });
        }
        if mode == AuthMode::Bearer && entries.is_empty() {
            return Err("auth.mode = bearer needs at least one entry in auth.tokens".into());
        }
        Ok(Authenticator { mode, entries })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The caller behind an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Caller::Admin);
        }
        let token = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::Unauthenticated)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every entry, with no early exit.
        let mut found: Option<&Caller> = None;
        for e in &self.entries {
            if ct_eq(&e.digest, &digest) && found.is_none() {
                found = Some(&e.caller);
            }
        }
        found.cloned().ok_or(AuthError::Unauthenticated)
    }
}

impl Caller {
    /// Admin only (marketplace, entitlement changes, chaos).
    pub fn require_admin(&self) -> Result<(), AuthError> {
        match self {
            Caller::Admin => Ok(()),
            _ => Err(AuthError::Forbidden("this needs an admin token".into())),
        }
    }

    /// Admin or operator (cluster-wide reads, governor resets).
    pub fn require_operator(&self) -> Result<(), AuthError> {
        match self {
            Caller::Admin | Caller::Operator => Ok(()),
            Caller::Tenant(_) => Err(AuthError::Forbidden(
                "this needs an admin or operator token".into(),
            )),
        }
    }

    /// Reads of one tenant's data: admin, operator, or that tenant.
    pub fn may_read(&self, tenant: &TenantId) -> Result<(), AuthError> {
        match self {
            Caller::Tenant(t) if t != tenant => Err(AuthError::Forbidden(format!(
                "this token is for another tenant, not {tenant}"
            ))),
            _ => Ok(()),
        }
    }

    /// Governed input for one tenant (signals, tool calls): admin or that tenant.
    pub fn may_act_for(&self, tenant: &TenantId) -> Result<(), AuthError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(t) if t == tenant => Ok(()),
            Caller::Tenant(_) => Err(AuthError::Forbidden(format!(
                "this token is for another tenant, not {tenant}"
            ))),
            Caller::Operator => Err(AuthError::Forbidden(
                "operators may read and reset, not act for a tenant".into(),
            )),
        }
    }

    /// The tenant a tenant token is bound to.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Caller::Tenant(t) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(
            AuthMode::Bearer,
            &[
                TokenConfig {
                    sha256: token_digest("adm"),
                    role: "admin".into(),
                    tenant: None,
                },
                TokenConfig {
                    sha256: token_digest("ops"),
                    role: "operator".into(),
                    tenant: None,
                },
                TokenConfig {
                    sha256: token_digest("ta").to_ascii_uppercase(),
                    role: "tenant".into(),
                    tenant: Some("a".into()),
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn bearer_tokens_map_to_their_roles() {
        let a = auth();
        assert_eq!(a.authenticate(Some("Bearer adm")), Ok(Caller::Admin));
        // The scheme is case-insensitive (RFC 9110 §11.1).
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            assert_eq!(
                a.authenticate(Some(&format!("{scheme} adm"))),
                Ok(Caller::Admin),
                "{scheme}"
            );
        }
        assert_eq!(a.authenticate(Some("Bearer ops")), Ok(Caller::Operator));
        assert_eq!(
            a.authenticate(Some("Bearer ta")),
            Ok(Caller::Tenant(TenantId::parse("a").unwrap()))
        );
        for bad in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Bearer"),
            Some("Basic adm"),
            Some("Bearer nope"),
            Some("adm"),
        ] {
            assert_eq!(
                a.authenticate(bad),
                Err(AuthError::Unauthenticated),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mode_none_is_admin_and_bad_config_is_refused() {
        assert_eq!(
            Authenticator::new(AuthMode::None, &[])
                .unwrap()
                .authenticate(None),
            Ok(Caller::Admin)
        );
        assert!(Authenticator::new(AuthMode::Bearer, &[]).is_err());
        assert!(Authenticator::new(
            AuthMode::Bearer,
            &[TokenConfig {
                sha256: "xyz".into(),
                role: "admin".into(),
                tenant: None
            }]
        )
        .is_err());
        assert!(Authenticator::new(
            AuthMode::Bearer,
            &[TokenConfig {
                sha256: token_digest("t"),
                role: "tenant".into(),
                tenant: None
            }]
        )
        .is_err());
        assert!(Authenticator::new(
            AuthMode::Bearer,
            &[TokenConfig {
                sha256: token_digest("t"),
                role: "root".into(),
                tenant: None
            }]
        )
        .is_err());
        // The same token twice (here once as admin, once as a tenant's; upper-case hex too).
        let twice = Authenticator::new(
            AuthMode::Bearer,
            &[
                TokenConfig {
                    sha256: token_digest("t"),
                    role: "admin".into(),
                    tenant: None,
                },
                TokenConfig {
                    sha256: token_digest("t").to_ascii_uppercase(),
                    role: "tenant".into(),
                    tenant: Some("a".into()),
                },
            ],
        );
        assert_eq!(
            twice.err().as_deref(),
            Some("auth.tokens[1].sha256: the same token as auth.tokens[0]; give each token one entry")
        );
    }

    #[test]
    fn tenant_tokens_reach_only_their_tenant() {
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let ta = Caller::Tenant(a.clone());
        assert!(ta.may_read(&a).is_ok() && ta.may_read(&b).is_err());
        assert!(ta.may_act_for(&a).is_ok() && ta.may_act_for(&b).is_err());
        assert!(ta.require_operator().is_err() && ta.require_admin().is_err());
        assert!(Caller::Operator.may_read(&b).is_ok() && Caller::Operator.may_act_for(&b).is_err());
        assert!(Caller::Operator.require_admin().is_err() && Caller::Admin.require_admin().is_ok());
    }
}
