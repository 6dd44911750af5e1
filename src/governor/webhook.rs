//! The webhook executor's side of the wire (SPEC §6): an action is POSTed as
//! `{action_id, tenant_id, type, params}`, a cancellation as `{…, event: "cancelled", reason}`.
//!
//! With `actions.webhook_secret` set, every POST is signed so the receiver can tell it came
//! from this service and when: `X-Tai-Timestamp` (milliseconds since the epoch) and
//! `X-Tai-Signature: sha256=<hex>`, the HMAC-SHA256 (RFC 2104) under the secret of the
//! timestamp, a `.`, and the body's exact bytes. A receiver recomputes it and refuses a stale
//! timestamp.
//!
//! [`Exchanges`] counts the action POSTs whose outcome is not yet recorded, so that a shutdown
//! can let them finish (SPEC §13: in-flight actions drain) before the governors stop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::outbound::{within, Tls};

/// Where and how the executor POSTs.
#[derive(Clone)]
pub struct Webhook {
    /// Without userinfo: its credentials are in `basic` ([`crate::outbound::basic_credentials`]).
    pub url: String,
    /// HTTP Basic credentials from the configured URL's userinfo.
    pub basic: Option<(String, String)>,
    pub timeout: Duration,
    /// The signing secret (`None`: unsigned).
    pub secret: Option<Arc<[u8]>>,
    /// The roots an `https` URL's certificate must chain to.
    pub tls: Tls,
    /// The exchanges running, for the shutdown to wait on.
    pub exchanges: Arc<Exchanges>,
}

/// Action exchanges whose outcome is not recorded yet: each holds an [`ExchangeGuard`] from
/// the POST until the governor has made the outcome's receipt durable (or the exchange was
/// dropped with its governor).
#[derive(Default)]
pub struct Exchanges {
    running: AtomicUsize,
    settled: tokio::sync::Notify,
}

/// One exchange of [`Exchanges`]; dropping it ends it.
pub struct ExchangeGuard(Arc<Exchanges>);

impl Exchanges {
    /// An exchange begins.
    pub fn begin(self: &Arc<Self>) -> ExchangeGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        ExchangeGuard(self.clone())
    }

    /// Exchanges running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until none runs, for up to `patience`; whether none does.
    pub async fn settled(&self, patience: Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let notified = self.settled.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.running() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if within(left, notified).await.is_none() {
                return self.running() == 0;
            }
        }
    }
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// How the webhook answered an action.
pub enum Outcome {
    Completed(Value),
    /// 202: the executor calls back later.
    Accepted,
    Failed(String),
}

/// HMAC-SHA256 of `message` under `key` (RFC 2104, with SHA-256's 64-byte blocks).
pub fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let mut inner = Sha256::new().chain_update(pad(0x36));
    for part in message {
        inner.update(part);
    }
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner.finalize())
        .finalize()
        .into()
}

/// The `X-Tai-Signature` value for a body sent at `timestamp_ms`.
pub fn signature(secret: &[u8], timestamp_ms: u64, body: &[u8]) -> String {
    let ts = timestamp_ms.to_string();
    let mac = hmac_sha256(secret, &[ts.as_bytes(), b".", body]);
    format!("sha256={}", crate::receipts::receipt::hex(&mac))
}

impl Webhook {
    /// The POST of `body` (signed when a secret is set), to be awaited.
    fn request(&self, body: &Value) -> Result<awc::SendClientRequest, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let client = self.tls.client(self.timeout);
        let mut req = client
            .post(&self.url)
            .insert_header(("content-type", "application/json"));
        if let Some((user, password)) = &self.basic {
            req = req.basic_auth(user, password);
        }
        if let Some(secret) = &self.secret {
            let now = crate::clock::now_ms();
            req = req
                .insert_header(("x-tai-timestamp", now.to_string()))
                .insert_header(("x-tai-signature", signature(secret, now, &bytes)));
        }
        Ok(req.send_body(bytes))
    }

    /// Starts an action: how the webhook answered, within the webhook timeout from the
    /// connection to the answer's last byte (awc's own timeout ends at the answer's head, so
    /// a body that stopped arriving held the action until the state timeout).
    pub async fn start(&self, body: &Value) -> Outcome {
        match within(self.timeout, self.exchange(body)).await {
            Some(outcome) => outcome,
            None => Outcome::Failed(format!(
                "webhook timed out: no complete answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    async fn exchange(&self, body: &Value) -> Outcome {
        let sent = match self.request(body) {
            Ok(request) => request.await,
            Err(e) => return Outcome::Failed(e),
        };
        let mut res = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("webhook unreachable: {e}")),
        };
        // The answer is recorded in the action's receipt: bounded like client JSON, so a
        // webhook cannot make a receipt that fails the ledger's commit for every caller in it.
        let read = res.json::<Value>().limit(crate::intake::MAX_RECORDED_BYTES);
        match res.status().as_u16() {
            202 => Outcome::Accepted,
            s if (200..300).contains(&s) => match read.await {
                Ok(v) => match crate::intake::check_recorded_json("its answer", &v) {
                    Err(m) => Outcome::Failed(format!("webhook answered {s}, but {m}")),
                    Ok(()) if v["status"] == "completed" => Outcome::Completed(v),
                    Ok(()) => Outcome::Failed(format!(
                        "webhook answered {s} without status completed: {}",
                        v.to_string().chars().take(256).collect::<String>()
                    )),
                },
                Err(e) => {
                    Outcome::Failed(format!("webhook answered {s} with an unreadable body: {e}"))
                }
            },
            s => Outcome::Failed(format!("webhook answered {s}")),
        }
    }

    /// Sends a notice (a cancellation); any 2xx is taken.
    pub async fn notify(&self, body: &Value) -> Result<(), String> {
        match self.request(body)?.await {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Err(format!("webhook answered {}", res.status().as_u16())),
            Err(e) => Err(format!("webhook unreachable: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_settle_when_the_last_guard_goes_and_a_waiter_is_woken_by_it() {
        actix_web::rt::System::new().block_on(async {
            let exchanges: Arc<Exchanges> = Default::default();
            assert!(exchanges.settled(Duration::ZERO).await, "none running");
            let (a, b) = (exchanges.begin(), exchanges.begin());
            assert!(!exchanges.settled(Duration::from_millis(20)).await);
            drop(a);
            assert_eq!(exchanges.running(), 1);
            let waiter = {
                let exchanges = exchanges.clone();
                actix_web::rt::spawn(
                    async move { exchanges.settled(Duration::from_secs(10)).await },
                )
            };
            // On this one thread, the waiter runs up to its wait before the yield returns.
            actix_web::rt::task::yield_now().await;
            assert!(!waiter.is_finished(), "waiting while one runs");
            drop(b);
            let started = std::time::Instant::now();
            assert!(waiter.await.unwrap());
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "woken, not timed out"
            );
        });
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 2 and 6 (a key longer than the block).
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            crate::receipts::receipt::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mac = hmac_sha256(
            &[0xaa; 131],
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            crate::receipts::receipt::hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let s = signature(b"k", 1_700_000_000_000, b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_ne!(s, signature(b"k", 1_700_000_000_001, b"{}"));
        assert_ne!(s, signature(b"k", 1_700_000_000_000, b"{ }"));
        assert_ne!(s, signature(b"j", 1_700_000_000_000, b"{}"));
    }
}
