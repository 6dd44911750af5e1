//! The ledger audit: every tenant's chain verified again in the background, at a bounded pace,
//! so that a receipt changed in the store, or a page of it damaged on disk, is found and
//! reported without anyone asking for that chain.
//!
//! A chain is tamper-evident only when someone verifies it. The HTTP and MCP verify calls and
//! `verify --all` do so on request; the [`Auditor`] does it on its own every
//! `ledger.audit_interval_secs`, reading at most `ledger.audit_receipts_per_sec`, and reports
//! what it finds as the operator watches the service: an ERROR line naming the tenant, the seq
//! and why, `tai_ledger_chains_broken` (chains found broken and not since found whole; an alert
//! policy pages on it), a line when a broken chain verifies again (a restored ledger) or is no
//! longer in the ledger, and the list `GET /v1/ledger/audit` serves ([`Standing::view`]).
//!
//! Pure parts ([`Pacer`], [`Standing`], [`next_pass_in`]) are apart from the actor glue. What the
//! audit knows of broken chains lives in a [`Standing`] held outside the actor, so a restarted
//! Auditor does not forget them (the gauge would drop until the next pass found them again).
//! The audit only reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use futures_util::FutureExt as _;

use super::{verify_chain_paced, AnyStore, LedgerStore, StoreError, VerifyReport};
use crate::telemetry::events;

/// Receipts read and verified in one page.
const PAGE: usize = 1000;

/// What reading one chain costs besides its receipts (its head, and a look past it), in
/// receipts of the pace: a ledger of many short chains is paced too.
const CHAIN_COST: u64 = 16;

/// Pauses shorter than this are carried into the next one (the timer's tick is 1 ms).
const MIN_PAUSE: Duration = Duration::from_millis(5);

/// The first pass starts this long after the service (or sooner, with a shorter interval).
const FIRST_PASS: Duration = Duration::from_secs(10);

/// A pass the ledger stopped (unavailable) starts again after this long at most.
const RETRY: Duration = Duration::from_secs(60);

/// How the audit runs (`ledger.audit_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// From the start of one pass to the start of the next.
    pub interval: Duration,
    /// Receipts verified per second, at most.
    pub receipts_per_sec: u32,
}

impl AuditConfig {
    /// The audit as configured, or `None` when it is off (`audit_interval_secs = 0`).
    pub fn from_settings(ledger: &crate::config::LedgerSettings) -> Option<AuditConfig> {
        (ledger.audit_interval_secs > 0).then(|| AuditConfig {
            interval: Duration::from_secs(ledger.audit_interval_secs),
            receipts_per_sec: ledger.audit_receipts_per_sec.max(1),
        })
    }
}

/// Keeps reading to a rate: after each piece of work, how long to wait before the next.
///
/// The time the work itself took is not counted against the rate, so the rate is a bound: at
/// 20,000 receipts per second and a page of 1,000 read in 7 ms, the reader waits 50 ms and is
/// busy an eighth of the time. Waits shorter than 5 ms are owed, not slept, and added to
/// the next.
#[derive(Debug, Clone)]
pub struct Pacer {
    per_unit: f64,
    until: Option<Instant>,
}

impl Pacer {
    /// A pacer of `rate` units per second (at least 1).
    pub fn new(rate: u32) -> Pacer {
        Pacer {
            per_unit: 1.0 / f64::from(rate.max(1)),
            until: None,
        }
    }

    /// `units` of work just ended at `now`: the pause before the next (zero while the owed
    /// time is below 5 ms).
    pub fn after(&mut self, units: u64, now: Instant) -> Duration {
        let from = self.until.map_or(now, |u| u.max(now));
        let until = from + Duration::from_secs_f64(units as f64 * self.per_unit);
        self.until = Some(until);
        let wait = until - now;
        if wait >= MIN_PAUSE {
            wait
        } else {
            Duration::ZERO
        }
    }
}

/// Where a chain breaks, as the audit found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The first receipt that does not verify; `None` when the chain's head cannot be read.
    pub seq: Option<u64>,
    pub reason: String,
}

impl Finding {
    /// What one chain's verification says: `None` when it verifies; `Err` when the ledger
    /// could not be read at all (the pass stops and starts again later).
    pub fn of(result: Result<VerifyReport, StoreError>) -> Result<Option<Finding>, StoreError> {
        match result {
            Ok(report) if report.valid => Ok(None),
            Ok(report) => Ok(Some(match report.first_broken {
                Some(b) => Finding {
                    seq: Some(b.seq),
                    reason: b.reason,
                },
                None => Finding {
                    seq: None,
                    reason: "the chain does not verify".into(),
                },
            })),
            Err(StoreError::Corrupt(e)) => Ok(Some(Finding {
                seq: None,
                reason: format!("the chain cannot be read: {e}"),
            })),
            Err(e) => Err(e),
        }
    }
}

/// What a chain's latest verification changed in the [`Standing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing to report: whole as before, or broken where and as it was.
    Same,
    /// Broken, and it was not (or it broke elsewhere, or for another reason).
    Broken(Finding),
    /// Whole again, and it was broken.
    Mended(Finding),
    /// No longer in the ledger (a restored backup older than the tenant), and it was broken.
    Gone(Finding),
}

/// A chain standing broken.
#[derive(Debug, Clone)]
struct Broken {
    finding: Finding,
    /// When the audit first found it broken so (RFC 3339).
    found_at: String,
    /// The pass that last found it.
    seen: u64,
}

/// How the last complete pass went.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastPass {
    pub ended_at: String,
    #[serde(flatten)]
    pub summary: PassSummary,
    pub seconds: f64,
}

/// The chains the audit found broken and has not since found whole or missing, and how its
/// passes went (what `GET /v1/ledger/audit` shows).
#[derive(Debug, Default)]
pub struct Standing {
    broken: BTreeMap<String, Broken>,
    pass: u64,
    running: bool,
    complete: u64,
    stopped: u64,
    last: Option<LastPass>,
}

impl Standing {
    /// A pass begins: what it does not find again is gone at [`Standing::end_pass`].
    pub fn begin_pass(&mut self) {
        self.pass += 1;
        self.running = true;
    }

    /// Takes in `tenant`'s latest verification (`None`: it verifies), made `at` (RFC 3339).
    pub fn record(&mut self, tenant: &str, finding: Option<Finding>, at: &str) -> Change {
        match finding {
            None => self
                .broken
                .remove(tenant)
                .map_or(Change::Same, |b| Change::Mended(b.finding)),
            Some(f) => {
                let pass = self.pass;
                match self.broken.get_mut(tenant) {
                    Some(b) if b.finding == f => {
                        b.seen = pass;
                        Change::Same
                    }
                    _ => {
                        let found_at = at.to_owned();
                        let b = Broken {
                            finding: f.clone(),
                            found_at,
                            seen: pass,
                        };
                        self.broken.insert(tenant.to_owned(), b);
                        Change::Broken(f)
                    }
                }
            }
        }
    }

    /// `tenant` could not be verified in this pass: what was known of it stands.
    pub fn keep(&mut self, tenant: &str) {
        let pass = self.pass;
        if let Some(b) = self.broken.get_mut(tenant) {
            b.seen = pass;
        }
    }

    /// A pass went over every chain: the broken chains it did not list are gone.
    pub fn end_pass(&mut self) -> Vec<(String, Change)> {
        let pass = self.pass;
        let gone: Vec<String> = (self.broken.iter())
            .filter(|(_, b)| b.seen != pass)
            .map(|(t, _)| t.clone())
            .collect();
        gone.into_iter()
            .filter_map(|t| self.broken.remove(&t).map(|b| (t, Change::Gone(b.finding))))
            .collect()
    }

    /// The pass that began last went over every chain.
    pub fn completed(&mut self, last: LastPass) {
        self.running = false;
        self.complete += 1;
        self.last = Some(last);
    }

    /// The pass that began last was stopped (the ledger could not be read).
    pub fn stopped(&mut self) {
        self.running = false;
        self.stopped += 1;
    }

    /// How many chains stand broken.
    pub fn broken(&self) -> usize {
        self.broken.len()
    }

    /// What an operator sees: the audit's settings (`None`: it does not run), its passes, and
    /// the first `limit` chains standing broken in tenant order.
    pub fn view(&self, cfg: Option<AuditConfig>, limit: usize) -> serde_json::Value {
        let broken: Vec<serde_json::Value> = (self.broken.iter().take(limit))
            .map(|(tenant, b)| {
                serde_json::json!({
                    "tenant_id": tenant,
                    "seq": b.finding.seq,
                    "reason": b.finding.reason,
                    "found_at": b.found_at,
                })
            })
            .collect();
        serde_json::json!({
            "enabled": cfg.is_some(),
            "interval_secs": cfg.map(|c| c.interval.as_secs()),
            "receipts_per_sec": cfg.map(|c| c.receipts_per_sec),
            "running": self.running,
            "passes": {"complete": self.complete, "stopped": self.stopped},
            "last_pass": self.last,
            "broken_total": self.broken.len(),
            "broken": broken,
        })
    }
}

/// A [`Standing`] that outlives any one Auditor.
pub type SharedStanding = Arc<Mutex<Standing>>;

/// How long after `now` the next pass starts: `interval` after the last one `started`, or at
/// once when that one took longer.
pub fn next_pass_in(started: Instant, now: Instant, interval: Duration) -> Duration {
    // An interval past what an `Instant` holds (`audit_interval_secs` near 2^64) is a wait the
    // timer takes as "never".
    started
        .checked_add(interval)
        .map_or(interval, |at| at.saturating_duration_since(now))
}

/// What one complete pass saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PassSummary {
    pub chains: u64,
    pub receipts: u64,
    /// Chains standing broken at the pass's end.
    pub broken: usize,
    /// Chains that could not be verified in this pass although the ledger answered.
    pub skipped: u64,
}

/// One pass over every chain, tenant page by tenant page, at `cfg`'s pace.
///
/// A chain whose verification panics (stored data the verifier cannot take, or a bug) is
/// reported broken, and the pass goes on: the Auditor would otherwise crash at that chain in
/// every pass, and its restarts spend the root supervisor's intensity, which the whole
/// service shares. A chain whose reading fails while the ledger still answers a ping is
/// skipped for this pass (a WARNING; it is not taken for broken, nor for gone), so that one
/// chain cannot stop every pass at itself; a ledger that does not answer stops the pass.
async fn pass<S: LedgerStore>(
    store: &S,
    cfg: AuditConfig,
    standing: &Mutex<Standing>,
) -> Result<PassSummary, StoreError> {
    let mut summary = PassSummary::default();
    let mut pacer = Pacer::new(cfg.receipts_per_sec);
    let mut after = String::new();
    standing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .begin_pass();
    loop {
        let tenants = store.tenants(&after, 1000).await?;
        let Some(last) = tenants.last() else {
            break;
        };
        after.clone_from(last);
        for tenant in &tenants {
            let mut seen = 0;
            let verified = verify_chain_paced(store, tenant, None, PAGE, |checked| {
                let fresh = checked.saturating_sub(seen);
                seen = checked;
                events::ledger_audited(fresh);
                let wait = pacer.after(fresh, Instant::now());
                async move {
                    if !wait.is_zero() {
                        actix::clock::sleep(wait).await;
                    }
                }
            });
            let result = match std::panic::AssertUnwindSafe(verified).catch_unwind().await {
                Ok(result) => Finding::of(result),
                Err(panic) => Ok(Some(Finding {
                    seq: None,
                    reason: format!("verifying the chain panicked: {}", panic_text(&*panic)),
                })),
            };
            summary.chains += 1;
            summary.receipts += seen;
            match result {
                Ok(finding) => {
                    let (change, broken) = {
                        let mut s = standing.lock().unwrap_or_else(|e| e.into_inner());
                        let at = crate::clock::now_rfc3339();
                        (s.record(tenant, finding, &at), s.broken())
                    };
                    events::chain_audited(tenant, &change, broken);
                }
                Err(e) => {
                    store.ping().await?;
                    summary.skipped += 1;
                    (standing.lock().unwrap_or_else(|e| e.into_inner())).keep(tenant);
                    events::chain_not_audited(tenant, &e);
                }
            }
            let wait = pacer.after(CHAIN_COST, Instant::now());
            if !wait.is_zero() {
                actix::clock::sleep(wait).await;
            }
        }
    }
    let (gone, broken) = {
        let mut s = standing.lock().unwrap_or_else(|e| e.into_inner());
        (s.end_pass(), s.broken())
    };
    for (tenant, change) in &gone {
        events::chain_audited(tenant, change, broken);
    }
    summary.broken = broken;
    Ok(summary)
}

/// What a panic said, when it said it in text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Verifies every chain again, every `interval` (see the module's header).
pub struct Auditor {
    store: AnyStore,
    cfg: AuditConfig,
    standing: SharedStanding,
}

impl Auditor {
    pub fn new(store: AnyStore, cfg: AuditConfig, standing: SharedStanding) -> Auditor {
        Auditor {
            store,
            cfg,
            standing,
        }
    }

    fn start_pass(&mut self, ctx: &mut Context<Self>) {
        let started = Instant::now();
        let (store, cfg, standing) = (self.store.clone(), self.cfg, self.standing.clone());
        let run = async move { pass(&store, cfg, &standing).await };
        ctx.spawn(wrap_future::<_, Self>(run).map(move |result, act, ctx| {
            let interval = act.cfg.interval;
            let mut standing = act.standing.lock().unwrap_or_else(|e| e.into_inner());
            let next = match result {
                Ok(summary) => {
                    let took = started.elapsed();
                    events::audit_pass_complete(&summary, took);
                    standing.completed(LastPass {
                        ended_at: crate::clock::now_rfc3339(),
                        summary,
                        seconds: took.as_secs_f64(),
                    });
                    next_pass_in(started, Instant::now(), interval)
                }
                Err(e) => {
                    let retry = RETRY.min(interval);
                    events::audit_pass_stopped(&e, retry);
                    standing.stopped();
                    retry
                }
            };
            drop(standing);
            ctx.run_later(next, |act, ctx| act.start_pass(ctx));
        }));
    }
}

impl Actor for Auditor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A pass that the Auditor before this one was running when it crashed was stopped.
        let mut standing = self.standing.lock().unwrap_or_else(|e| e.into_inner());
        if standing.running {
            standing.stopped();
        }
        drop(standing);
        ctx.run_later(FIRST_PASS.min(self.cfg.interval), |act, ctx| {
            act.start_pass(ctx)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::sqlite::SqliteStore;
    use super::super::{AppendItem, Head, Receipt, ReceiptDraft, ReceiptType};
    use super::*;

    /// A SQLite store on disk whose head read panics for one tenant (a verifier that cannot
    /// take what it read), whose reads of another tenant's receipts fail, and whose ping
    /// fails when told to.
    struct Failing {
        inner: SqliteStore,
        panics: &'static str,
        unreadable: &'static str,
        ping_fails: bool,
    }

    impl LedgerStore for Failing {
        fn backend(&self) -> &'static str {
            "sqlite"
        }
        async fn append(&self, batch: Vec<AppendItem>) -> Result<Vec<AppendItem>, StoreError> {
            self.inner.append(batch).await
        }
        async fn head(&self, tenant: &str) -> Result<Option<Head>, StoreError> {
            assert_ne!(tenant, self.panics, "a verifier that panics");
            self.inner.head(tenant).await
        }
        async fn range(
            &self,
            tenant: &str,
            after_seq: u64,
            limit: usize,
        ) -> Result<Vec<Receipt>, StoreError> {
            if tenant == self.unreadable {
                return Err(StoreError::Unavailable(
                    "this chain's pages time out".into(),
                ));
            }
            self.inner.range(tenant, after_seq, limit).await
        }
        async fn get(&self, receipt_id: &str) -> Result<Option<Receipt>, StoreError> {
            self.inner.get(receipt_id).await
        }
        async fn by_message_id(&self, message_id: &str) -> Result<Option<Receipt>, StoreError> {
            self.inner.by_message_id(message_id).await
        }
        async fn tenants(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.tenants(after, limit).await
        }
        async fn entitlement(&self, tenant: &str) -> Result<Option<serde_json::Value>, StoreError> {
            self.inner.entitlement(tenant).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            if self.ping_fails {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.inner.ping().await
        }
    }

    #[actix_web::test]
    async fn a_chain_that_panics_is_broken_one_that_fails_is_skipped_and_the_pass_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("l.db")).unwrap();
        for tenant in ["a", "b", "c", "d"] {
            let mut prev: Option<Receipt> = None;
            for _ in 0..3 {
                let d = ReceiptDraft::new(tenant, ReceiptType::Transition, "signal_processed", "r");
                let r = d.seal(
                    prev.as_ref().map(|p| (p.seq, p.receipt_hash.as_str())),
                    "n",
                    crate::clock::now_rfc3339(),
                );
                inner
                    .append(vec![AppendItem::receipt(r.clone())])
                    .await
                    .unwrap();
                prev = Some(r);
            }
        }
        let mut store = Failing {
            inner,
            panics: "b",
            unreadable: "c",
            ping_fails: false,
        };
        let standing = Mutex::new(Standing::default());
        let cfg = AuditConfig {
            interval: Duration::from_secs(1),
            receipts_per_sec: 1_000_000,
        };

        let summary = pass(&store, cfg, &standing).await.unwrap();

        // `d`, after both, was verified.
        assert_eq!(
            summary,
            PassSummary {
                chains: 4,
                receipts: 6,
                broken: 1,
                skipped: 1
            }
        );
        // With the ledger not answering either, the pass stops at `c`.
        store.ping_fails = true;
        let stopped = pass(&store, cfg, &standing).await;
        assert!(
            matches!(stopped, Err(StoreError::Unavailable(_))),
            "{stopped:?}"
        );
        let s = standing.into_inner().unwrap();
        assert_eq!(s.broken(), 1);
        let finding = &s.broken["b"].finding;
        assert_eq!(finding.seq, None);
        assert!(
            finding.reason.contains("panicked: assertion")
                && finding.reason.contains("a verifier that panics"),
            "{finding:?}"
        );
    }

    fn finding(seq: u64, reason: &str) -> Finding {
        Finding {
            seq: Some(seq),
            reason: reason.into(),
        }
    }

    #[test]
    fn the_pacer_waits_out_the_rate_and_owes_short_waits() {
        let t0 = Instant::now();
        let mut p = Pacer::new(50_000);
        // A page of 1,000 at 50,000/s: 20 ms from the end of the page.
        assert_eq!(p.after(1000, t0), Duration::from_millis(20));
        // The next page, read after the wait in 3 ms: 20 ms again from its end.
        let t1 = t0 + Duration::from_millis(23);
        assert_eq!(p.after(1000, t1), Duration::from_millis(20));
        // Short chains: 16 units are 0.32 ms, owed until they add up to 5 ms.
        let t2 = t1 + Duration::from_millis(20);
        let mut p2 = p.clone();
        let waits: Vec<Duration> = (0..16).map(|_| p2.after(16, t2)).collect();
        assert!(waits[..15].iter().all(Duration::is_zero), "{waits:?}");
        let owed = waits[15].as_secs_f64();
        assert!((owed - 16.0 * 320e-6).abs() < 1e-6, "{waits:?}");
        // Idle time is not banked: after a long gap the rate holds from now.
        let later = t2 + Duration::from_secs(60);
        assert_eq!(p.after(1000, later), Duration::from_millis(20));
    }

    #[test]
    fn a_pacer_of_zero_is_one_a_second() {
        let t0 = Instant::now();
        assert_eq!(Pacer::new(0).after(1, t0), Duration::from_secs(1));
    }

    #[test]
    fn the_standing_reports_a_break_once_and_its_mending() {
        let mut s = Standing::default();
        assert_eq!(s.record("a", None, "t"), Change::Same);
        assert_eq!(
            s.record("a", Some(finding(7, "hash")), "t"),
            Change::Broken(finding(7, "hash"))
        );
        assert_eq!(s.record("a", Some(finding(7, "hash")), "t"), Change::Same);
        assert_eq!(s.broken(), 1);
        // Broken elsewhere (a second change, or the first one mended and another made).
        assert_eq!(
            s.record("a", Some(finding(3, "hash")), "t"),
            Change::Broken(finding(3, "hash"))
        );
        assert_eq!(
            s.record("b", Some(finding(1, "prev")), "t"),
            Change::Broken(finding(1, "prev"))
        );
        assert_eq!(s.broken(), 2);
        assert_eq!(s.record("a", None, "t"), Change::Mended(finding(3, "hash")));
        assert_eq!(s.record("a", None, "t"), Change::Same);
        assert_eq!(s.broken(), 1);
    }

    #[test]
    fn the_view_lists_broken_chains_in_tenant_order_and_how_the_passes_went() {
        let cfg = AuditConfig {
            interval: Duration::from_secs(60),
            receipts_per_sec: 100,
        };
        let mut s = Standing::default();
        s.begin_pass();
        s.record("b", Some(finding(4, "hash")), "2026-12-07T10:00:00.000Z");
        s.record("a", Some(finding(2, "prev")), "2026-12-07T10:00:01.000Z");
        s.record("c", None, "2026-12-07T10:00:02.000Z");
        let during = s.view(Some(cfg), 1);
        assert_eq!(during["running"], true);
        assert_eq!(during["last_pass"], serde_json::Value::Null);
        assert_eq!(
            (&during["broken_total"], &during["broken"]),
            (
                &serde_json::json!(2),
                &serde_json::json!([{"tenant_id": "a", "seq": 2, "reason": "prev",
                    "found_at": "2026-12-07T10:00:01.000Z"}])
            ),
            "{during}"
        );
        s.end_pass();
        let last = LastPass {
            ended_at: "2026-12-07T10:00:03.000Z".into(),
            summary: PassSummary {
                chains: 3,
                receipts: 30,
                broken: 2,
                skipped: 0,
            },
            seconds: 3.0,
        };
        s.completed(last);
        s.begin_pass();
        s.stopped();
        let after = s.view(Some(cfg), 1000);
        assert_eq!(after["running"], false);
        assert_eq!(
            after["passes"],
            serde_json::json!({"complete": 1, "stopped": 1})
        );
        assert_eq!(after["last_pass"]["chains"], 3);
        assert_eq!(
            (&after["interval_secs"], &after["receipts_per_sec"]),
            (&serde_json::json!(60), &serde_json::json!(100))
        );
        assert_eq!(after["broken"].as_array().unwrap().len(), 2);
        // A chain found broken again as it was keeps when it was first found.
        s.begin_pass();
        s.record("b", Some(finding(4, "hash")), "2026-12-07T11:00:00.000Z");
        assert_eq!(
            s.view(Some(cfg), 1000)["broken"][1]["found_at"],
            "2026-12-07T10:00:00.000Z"
        );
    }

    #[test]
    fn a_broken_chain_that_a_whole_pass_did_not_list_is_gone() {
        let mut s = Standing::default();
        s.begin_pass();
        s.record("a", Some(finding(2, "hash")), "t");
        s.record("b", Some(finding(5, "hash")), "t");
        assert_eq!(s.end_pass(), vec![]);
        // The next pass finds `a` as it was and no longer lists `b` (the ledger was restored
        // from a copy older than that tenant).
        s.begin_pass();
        assert_eq!(s.record("a", Some(finding(2, "hash")), "t"), Change::Same);
        assert_eq!(
            s.end_pass(),
            vec![("b".to_owned(), Change::Gone(finding(5, "hash")))]
        );
        assert_eq!(s.broken(), 1);
        // A chain that could not be verified in a pass is kept as it was.
        s.begin_pass();
        s.keep("a");
        assert_eq!(s.end_pass(), vec![]);
        assert_eq!(s.broken(), 1);
        // A pass the ledger stopped never ends: nothing is taken for gone.
        s.begin_pass();
        assert_eq!(s.broken(), 1);
    }

    #[test]
    fn a_verification_becomes_a_finding() {
        let report = |valid: bool, broken: Option<(u64, &str)>| VerifyReport {
            tenant_id: "t".into(),
            valid,
            receipts_checked: 3,
            head_seq: 3,
            head_hash: String::new(),
            first_broken: broken.map(|(seq, reason)| super::super::Break {
                seq,
                reason: reason.into(),
            }),
            anchor: None,
        };
        assert_eq!(Finding::of(Ok(report(true, None))), Ok(None));
        assert_eq!(
            Finding::of(Ok(report(false, Some((4, "receipt_hash mismatch"))))),
            Ok(Some(finding(4, "receipt_hash mismatch")))
        );
        let unreadable = Finding::of(Err(StoreError::Corrupt("a damaged page".into())));
        assert_eq!(
            unreadable.map(|f| f.map(|f| (f.seq, f.reason.contains("a damaged page")))),
            Ok(Some((None, true)))
        );
        let away = StoreError::Unavailable("down".into());
        assert_eq!(Finding::of(Err(away.clone())), Err(away));
    }

    #[test]
    fn passes_start_an_interval_apart_or_at_once_after_a_long_one() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(
            next_pass_in(t0, t0 + Duration::from_secs(100), hour),
            Duration::from_secs(3500)
        );
        assert_eq!(
            next_pass_in(t0, t0 + Duration::from_secs(4000), hour),
            Duration::ZERO
        );
        let never = Duration::from_secs(u64::MAX);
        assert_eq!(next_pass_in(t0, t0, never), never, "no overflow");
    }
}
