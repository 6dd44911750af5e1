//! Authentication of push deliveries: the Google-signed OIDC token Pub/Sub sends as
//! `Authorization: Bearer` (RS256 only, issuer, audience, the push service account's email,
//! expiry). Keys come from a JWKS file, or from the JWKS URL, fetched on first use, kept for an
//! hour and fetched again (at most once a minute) when a token names a key not yet seen. One
//! push fetches at a time and the others take its result; after a failed fetch, pushes are
//! checked with the keys held, however old, and the fetch is tried again seconds later.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::RwLock;

use crate::config::PushSettings;
use crate::entitlements::signature::{verify, Expectations, Keys};
use crate::outbound::{within, Tls};

const KEYS_FRESH_FOR: Duration = Duration::from_secs(3600);
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// After a failed fetch, pushes are answered from what is cached (or 503) for this long
/// before one of them tries again.
const RETRY_FAILED_FETCH_AFTER: Duration = Duration::from_secs(5);

/// Checks push tokens.
pub struct PushAuth {
    cfg: PushSettings,
    source: Source,
    tls: Tls,
}

enum Source {
    File(Keys),
    Url(RwLock<Fetched>),
}

/// What the JWKS URL gave: the keys and when, and the last failure since.
#[derive(Default)]
struct Fetched {
    keys: Option<(Keys, Instant)>,
    failed: Option<(Instant, String)>,
}

impl Fetched {
    /// The cached keys, if they may serve: fresh, and for a token naming a key they lack
    /// (`refetch`), fetched within the last minute (Google rotates its keys).
    fn usable(&self, refetch: bool) -> Option<Keys> {
        let (keys, at) = self.keys.as_ref()?;
        let age = at.elapsed();
        (age <= KEYS_FRESH_FOR && !(refetch && age > REFETCH_AT_MOST_EVERY)).then(|| keys.clone())
    }

    /// After a failed fetch: stale keys still check a token whose key they hold, so only a
    /// token naming a key they lack, or no keys at all, is 503.
    fn fallback(&self, refetch: bool, error: &str) -> Result<Keys, Refused> {
        match &self.keys {
            Some((keys, _)) if !refetch => Ok(keys.clone()),
            _ => Err(Refused::Unavailable(format!(
                "the token cannot be checked now: {error}"
            ))),
        }
    }
}

/// Why a push request was refused (safe to show: never contains the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The token is missing or does not prove what it must (401).
    #[error("{0}")]
    Invalid(String),
    /// The keys could not be fetched; Pub/Sub should retry (503).
    #[error("{0}")]
    Unavailable(String),
}

impl PushAuth {
    /// `None` when `pubsub.push.verify` is off; an error when the JWKS file is unusable.
    pub fn new(cfg: &PushSettings) -> anyhow::Result<Option<PushAuth>> {
        if !cfg.verify {
            return Ok(None);
        }
        let source = if cfg.jwks_file.is_empty() {
            Source::Url(RwLock::default())
        } else {
            Source::File(
                Keys::from_jwks_file(Path::new(&cfg.jwks_file))
                    .map_err(|e| anyhow::anyhow!("pubsub.push.jwks_file: {e}"))?,
            )
        };
        Ok(Some(PushAuth {
            cfg: cfg.clone(),
            source,
            tls: Tls::new(None).map_err(anyhow::Error::msg)?,
        }))
    }

    /// Verifies the `Authorization` header's token; returns its claims.
    ///
    /// Google's ID tokens name their issuer `https://accounts.google.com` or
    /// `accounts.google.com` (its own libraries accept either), so configuring one of the two
    /// accepts both; any other issuer is taken as written.
    pub async fn check(&self, authorization: Option<&str>) -> Result<Value, Refused> {
        let token = authorization
            .and_then(crate::auth::bearer_token)
            .ok_or_else(|| {
                Refused::Invalid("an Authorization: Bearer OIDC token is required".into())
            })?;
        let expect = Expectations {
            issuers: issuers(&self.cfg.issuer),
            audience: Some(self.cfg.audience.clone()),
            leeway_secs: self.cfg.leeway_secs,
            rs256_only: true,
        };
        let claims = match &self.source {
            Source::File(keys) => verify(token, keys, &expect),
            Source::Url(cache) => {
                let keys = self.url_keys(cache, false).await?;
                match verify(token, &keys, &expect) {
                    // Google rotates its keys: a new kid means fetch again.
                    Err(e) if e.no_key => {
                        let keys = self.url_keys(cache, true).await?;
                        verify(token, &keys, &expect)
                    }
                    other => other,
                }
            }
        }
        .map_err(|e| Refused::Invalid(e.message))?;
        let want = &self.cfg.service_account_email;
        if !want.is_empty() {
            if claims.get("email").and_then(Value::as_str) != Some(want.as_str()) {
                return Err(Refused::Invalid(
                    "the token's email is not the push service account".into(),
                ));
            }
            if claims.get("email_verified").and_then(Value::as_bool) != Some(true) {
                return Err(Refused::Invalid("the token's email is not verified".into()));
            }
        }
        Ok(claims)
    }

    /// The keys to check a token with. One push fetches while the others wait for its result
    /// (they look again once they hold the lock), and a failure is not tried again by every
    /// push behind it: for a few seconds they get what is cached, or 503.
    async fn url_keys(&self, cache: &RwLock<Fetched>, refetch: bool) -> Result<Keys, Refused> {
        if let Some(keys) = cache.read().await.usable(refetch) {
            return Ok(keys);
        }
        let mut slot = cache.write().await;
        if let Some(keys) = slot.usable(refetch) {
            return Ok(keys);
        }
        if let Some((at, error)) = &slot.failed {
            if at.elapsed() < RETRY_FAILED_FETCH_AFTER {
                return slot.fallback(refetch, error);
            }
        }
        match fetch_jwks(&self.tls, &self.cfg.jwks_url).await {
            Ok(keys) => {
                *slot = Fetched {
                    keys: Some((keys.clone(), Instant::now())),
                    failed: None,
                };
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(url = %crate::outbound::shown_url(&self.cfg.jwks_url), error = %e, "could not fetch the push JWKS");
                let answer = slot.fallback(refetch, &e);
                slot.failed = Some((Instant::now(), e));
                answer
            }
        }
    }
}

/// How long a JWKS fetch may take, from the connection to the answer's last byte. Pushes
/// wait on it (the key cache is locked while it runs), so it must end.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

async fn fetch_jwks(tls: &Tls, url: &str) -> Result<Keys, String> {
    let (sent, basic) = crate::outbound::basic_credentials(url);
    let shown = crate::outbound::shown_url(url);
    let fetch = async {
        let client = tls.client(JWKS_FETCH_TIMEOUT);
        let mut req = client.get(&sent);
        if let Some((user, password)) = &basic {
            req = req.basic_auth(user, password);
        }
        let mut res = req.send().await.map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("{shown} answered {}", res.status()));
        }
        let body = res.body().limit(1 << 20).await.map_err(|e| e.to_string())?;
        Keys::from_jwks_json(&String::from_utf8_lossy(&body))
    };
    within(JWKS_FETCH_TIMEOUT, fetch).await.unwrap_or_else(|| {
        Err(format!(
            "{shown} gave no complete answer within {} s",
            JWKS_FETCH_TIMEOUT.as_secs()
        ))
    })
}

/// The issuers a push token may name for the configured `issuer` (empty: any).
fn issuers(issuer: &str) -> Vec<String> {
    const GOOGLE: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
    if GOOGLE.contains(&issuer) {
        GOOGLE.map(str::to_owned).to_vec()
    } else {
        Some(issuer.to_owned())
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/jwks.json");
        Keys::from_jwks_file(Path::new(path)).unwrap()
    }

    fn fetched_ago(secs: u64) -> Fetched {
        let at = Instant::now()
            .checked_sub(Duration::from_secs(secs))
            .unwrap();
        Fetched {
            keys: Some((keys(), at)),
            failed: None,
        }
    }

    #[test]
    fn keys_are_used_while_fresh_and_refetched_for_an_unknown_key_after_a_minute() {
        assert!(Fetched::default().usable(false).is_none());
        assert!(fetched_ago(10).usable(false).is_some());
        assert!(
            fetched_ago(10).usable(true).is_some(),
            "just fetched: no refetch"
        );
        assert!(fetched_ago(120).usable(true).is_none());
        assert!(fetched_ago(120).usable(false).is_some());
        assert!(
            fetched_ago(7200).usable(false).is_none(),
            "stale after an hour"
        );
    }

    #[test]
    fn after_a_failed_fetch_stale_keys_still_check_tokens_whose_key_they_hold() {
        assert!(fetched_ago(7200).fallback(false, "down").is_ok());
        assert!(matches!(
            fetched_ago(7200).fallback(true, "down"),
            Err(Refused::Unavailable(m)) if m == "the token cannot be checked now: down"
        ));
        assert!(matches!(
            Fetched::default().fallback(false, "down"),
            Err(Refused::Unavailable(_))
        ));
    }
}
