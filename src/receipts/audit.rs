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
//! A chain sealed again after a change (every hash after it recomputed) verifies by itself, and
//! so does a chain cut short or deleted whole. So the audit remembers each chain's head as it
//! last found it whole, and the next pass checks the chain against it as an anchor
//! ([`Anchor`]): the chain must still reach that seq, with that hash there. This catches such
//! a rewrite made while the service runs; what the audit remembers is in memory only, about
//! 75 bytes a chain, and starts empty with the process.
//!
//! Pure parts ([`Pacer`], [`Standing`], [`next_pass_in`]) are apart from the actor glue. What the
//! audit knows of chains lives in a [`Standing`] held outside the actor, so a restarted
//! Auditor does not forget it (the gauge would drop until the next pass found them again, and
//! the heads would be gone). The audit only reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use futures_util::FutureExt as _;

use super::receipt::{digest_from_hex, hex};
use super::{verify_chain_paced, Anchor, AnyStore, LedgerStore, StoreError, VerifyReport};
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

/// A chain's head as the audit last found the chain whole.
#[derive(Debug, Clone, Copy, Default)]
struct HeldHead {
    seq: u64,
    hash: [u8; 32],
}

/// The heads of the chains the audit found whole, and which of them the pass running now has
/// listed.
///
/// Kept in one vector in tenant order (56 bytes a chain besides its name, found by binary
/// search) rather than a hash map, whose table would take up to twice as much at a million
/// chains. The heads of chains found whole for the first time wait in `fresh` until the pass
/// ends, and are then merged in.
#[derive(Debug, Default)]
struct Heads {
    held: Vec<(Box<str>, HeldHead)>,
    /// Per entry of `held`: listed in this pass.
    listed: Vec<bool>,
    fresh: Vec<(Box<str>, HeldHead)>,
}

impl Heads {
    fn find(&self, tenant: &str) -> Result<usize, usize> {
        self.held.binary_search_by(|(t, _)| (**t).cmp(tenant))
    }

    fn get(&self, tenant: &str) -> Option<HeldHead> {
        self.find(tenant).ok().map(|i| self.held[i].1)
    }

    fn set(&mut self, tenant: &str, head: HeldHead) {
        match self.find(tenant) {
            Ok(i) => self.held[i].1 = head,
            Err(_) => self.fresh.push((tenant.into(), head)),
        }
    }

    fn mark(&mut self, tenant: &str) {
        if let Ok(i) = self.find(tenant) {
            if let Some(l) = self.listed.get_mut(i) {
                *l = true;
            }
        }
    }

    fn unlisted(&self) -> Vec<String> {
        (self.held.iter().zip(&self.listed))
            .filter(|(_, listed)| !**listed)
            .map(|((t, _), _)| t.to_string())
            .collect()
    }

    /// Merges the fresh heads in, and starts a pass's listing afresh.
    fn settle(&mut self) {
        let mut fresh = std::mem::take(&mut self.fresh);
        // Sorted already when the store lists tenants in order, as SQLite does (a stable sort
        // takes such a run in one look). Of a tenant found twice, the later head counts.
        fresh.reverse();
        fresh.sort_by(|a, b| a.0.cmp(&b.0));
        fresh.dedup_by(|later, first| later.0 == first.0);
        let held = &mut self.held;
        held.reserve_exact(fresh.len());
        // From the back: each fresh head, largest first, goes after the held ones above it.
        let (mut i, mut k) = (held.len(), held.len() + fresh.len());
        held.resize_with(k, Default::default);
        while let Some(next) = fresh.pop() {
            while i > 0 && held[i - 1].0 > next.0 {
                i -= 1;
                k -= 1;
                held.swap(i, k);
            }
            k -= 1;
            held[k] = next;
        }
        self.listed.clear();
        self.listed.resize(held.len(), false);
    }

    fn len(&self) -> usize {
        self.held.len() + self.fresh.len()
    }
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
    heads: Heads,
    pass: u64,
    running: bool,
    complete: u64,
    stopped: u64,
    last: Option<LastPass>,
}

impl Standing {
    /// A standing that holds `anchors` as the heads of chains found whole, so that the first
    /// pass checks every chain against them (`ledger.audit_anchors_file`).
    pub fn with_anchors(anchors: impl IntoIterator<Item = (String, Anchor)>) -> Standing {
        let mut s = Standing::default();
        for (tenant, a) in anchors {
            s.whole_to(&tenant, a.seq, &a.hash);
        }
        s.heads.settle();
        s
    }

    /// A pass begins: what it does not find again is gone at [`Standing::end_pass`].
    pub fn begin_pass(&mut self) {
        self.pass += 1;
        self.heads.settle();
        self.running = true;
    }

    /// The head `tenant`'s chain had when the audit last found it whole, as the anchor to check
    /// the chain against now.
    pub fn anchor(&self, tenant: &str) -> Option<Anchor> {
        let h = self.heads.get(tenant)?;
        Anchor::new(h.seq, &hex(&h.hash)).ok()
    }

    /// `tenant`'s chain verified whole (against its anchor, if it had one) up to `seq`, whose
    /// `receipt_hash` is `hash`: the anchor of the next pass.
    pub fn whole_to(&mut self, tenant: &str, seq: u64, hash: &str) {
        if let Some(hash) = digest_from_hex(hash).filter(|_| seq > 0) {
            self.heads.set(tenant, HeldHead { seq, hash });
        }
    }

    /// The chains found whole before that this pass has not listed (in tenant order): each is
    /// to be verified against its anchor all the same, since a chain does not leave the
    /// ledger.
    pub fn unlisted(&self) -> Vec<String> {
        self.heads.unlisted()
    }

    /// How many chains the audit holds a head for.
    pub fn anchored(&self) -> usize {
        self.heads.len()
    }

    /// Takes in `tenant`'s latest verification (`None`: it verifies), made `at` (RFC 3339).
    pub fn record(&mut self, tenant: &str, finding: Option<Finding>, at: &str) -> Change {
        self.heads.mark(tenant);
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
        self.heads.mark(tenant);
        let pass = self.pass;
        if let Some(b) = self.broken.get_mut(tenant) {
            b.seen = pass;
        }
    }

    /// A pass went over every chain: the broken chains it did not list are gone.
    pub fn end_pass(&mut self) -> Vec<(String, Change)> {
        self.heads.settle();
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
            "anchored_chains": self.heads.len(),
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

/// One pass over every chain, tenant page by tenant page, at `cfg`'s pace; then the chains
/// found whole before that the listing no longer gave, each against its anchor.
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
    let lock = || standing.lock().unwrap_or_else(|e| e.into_inner());
    lock().begin_pass();
    loop {
        let tenants = store.tenants(&after, 1000).await?;
        let Some(last) = tenants.last() else {
            break;
        };
        after.clone_from(last);
        for tenant in &tenants {
            audit_chain(store, tenant, standing, &mut pacer, &mut summary).await?;
        }
    }
    let unlisted = lock().unlisted();
    for tenant in &unlisted {
        audit_chain(store, tenant, standing, &mut pacer, &mut summary).await?;
    }
    let (gone, broken) = {
        let mut s = lock();
        (s.end_pass(), s.broken())
    };
    for (tenant, change) in &gone {
        events::chain_audited(tenant, change, broken);
    }
    summary.broken = broken;
    Ok(summary)
}

/// Verifies `tenant`'s chain against the head the audit last found it whole at, and takes the
/// outcome into the standing.
async fn audit_chain<S: LedgerStore>(
    store: &S,
    tenant: &str,
    standing: &Mutex<Standing>,
    pacer: &mut Pacer,
    summary: &mut PassSummary,
) -> Result<(), StoreError> {
    let lock = || standing.lock().unwrap_or_else(|e| e.into_inner());
    let anchor = lock().anchor(tenant);
    let mut seen = 0;
    let verified = verify_chain_paced(store, tenant, anchor, PAGE, |checked| {
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
    // What it found, and the head it reached when it found the chain whole.
    let result = match std::panic::AssertUnwindSafe(verified).catch_unwind().await {
        Ok(verified) => {
            let head = (verified.as_ref().ok())
                .filter(|r| r.valid)
                .map(|r| (r.head_seq, r.head_hash.clone()));
            Finding::of(verified).map(|finding| (finding, head))
        }
        Err(panic) => Ok((
            Some(Finding {
                seq: None,
                reason: format!("verifying the chain panicked: {}", panic_text(&*panic)),
            }),
            None,
        )),
    };
    summary.chains += 1;
    summary.receipts += seen;
    match result {
        Ok((finding, head)) => {
            let (change, broken) = {
                let mut s = lock();
                if let Some((seq, hash)) = head {
                    s.whole_to(tenant, seq, &hash);
                }
                (
                    s.record(tenant, finding, &crate::clock::now_rfc3339()),
                    s.broken(),
                )
            };
            events::chain_audited(tenant, &change, broken);
        }
        Err(e) => {
            store.ping().await?;
            summary.skipped += 1;
            lock().keep(tenant);
            events::chain_not_audited(tenant, &e);
        }
    }
    let wait = pacer.after(CHAIN_COST, Instant::now());
    if !wait.is_zero() {
        actix::clock::sleep(wait).await;
    }
    Ok(())
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

    /// Appends `n` receipts with `reason` to `tenant`'s chain after `prev`; the last one.
    async fn extend(
        store: &SqliteStore,
        tenant: &str,
        mut prev: Option<Receipt>,
        n: usize,
        reason: &str,
    ) -> Option<Receipt> {
        for _ in 0..n {
            let d = ReceiptDraft::new(tenant, ReceiptType::Transition, "signal_processed", reason);
            let r = d.seal(
                prev.as_ref().map(|p| (p.seq, p.receipt_hash.as_str())),
                "n",
                crate::clock::now_rfc3339(),
            );
            store
                .append(vec![AppendItem::receipt(r.clone())])
                .await
                .unwrap();
            prev = Some(r);
        }
        prev
    }

    #[actix_web::test]
    async fn a_chain_that_panics_is_broken_one_that_fails_is_skipped_and_the_pass_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("l.db")).unwrap();
        for tenant in ["a", "b", "c", "d"] {
            extend(&inner, tenant, None, 3, "r").await;
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

    #[actix_web::test]
    async fn a_chain_sealed_again_cut_short_or_deleted_after_a_whole_pass_is_broken_at_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let store = SqliteStore::open(&path).unwrap();
        let mut heads = BTreeMap::new();
        for tenant in ["a", "b", "c", "d"] {
            heads.insert(tenant, extend(&store, tenant, None, 3, "r").await.unwrap());
        }
        let standing = Mutex::new(Standing::default());
        let cfg = AuditConfig {
            interval: Duration::from_secs(1),
            receipts_per_sec: 1_000_000,
        };
        let first = pass(&store, cfg, &standing).await.unwrap();
        assert_eq!((first.chains, first.broken), (4, 0));
        assert_eq!(standing.lock().unwrap().anchored(), 4);

        // Someone with the file drops the append-only triggers, and: seals `a` again from seq 2
        // with another reason; cuts `b` short by one; deletes `c`. Each chain verifies alone.
        let c_chain = store.range("c", 0, 10).await.unwrap();
        assert_eq!(c_chain.len(), 3);
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(
            "DROP TRIGGER receipts_are_append_only_delete;
             DELETE FROM receipts WHERE tenant_id = 'a' AND seq >= 2;
             DELETE FROM receipts WHERE tenant_id = 'b' AND seq = 3;
             DELETE FROM receipts WHERE tenant_id = 'c';",
        )
        .unwrap();
        let a1 = store.range("a", 0, 1).await.unwrap().pop();
        extend(&store, "a", a1, 2, "rewritten").await;
        // `d` goes on growing, as a live tenant's chain does.
        let d = heads.remove("d");
        extend(&store, "d", d, 2, "r").await;
        for t in ["a", "b", "c"] {
            let alone = super::super::verify_chain(&store, t, None, 1000, |_| {})
                .await
                .unwrap();
            assert!(alone.valid, "{alone:?}");
        }

        let second = pass(&store, cfg, &standing).await.unwrap();
        // `c` is no longer listed, and is verified all the same.
        assert_eq!((second.chains, second.broken), (4, 3), "{second:?}");
        let found = |t: &str| {
            let s = standing.lock().unwrap();
            let f = &s.broken[t].finding;
            (f.seq, f.reason.clone())
        };
        let (a, b, c) = (found("a"), found("b"), found("c"));
        assert!(a.0 == Some(3) && a.1.contains("rewritten"), "{a:?}");
        assert!(
            b.0 == Some(3) && b.1.contains("before the anchor's seq 3"),
            "{b:?}"
        );
        assert!(
            c.0 == Some(1) && c.1.contains("before the anchor's seq 3"),
            "{c:?}"
        );
        let anchored = |t: &str| standing.lock().unwrap().anchor(t).map(|a| a.seq);
        assert!(!standing.lock().unwrap().broken.contains_key("d"));
        // `d`'s anchor moved on with it; the others keep the head they were found whole at.
        assert_eq!((anchored("d"), anchored("c")), (Some(5), Some(3)));

        // The deleted chain stays broken (it is not taken for gone) until it is put back.
        let third = pass(&store, cfg, &standing).await.unwrap();
        assert_eq!(third.broken, 3);
        for r in c_chain {
            store.append(vec![AppendItem::receipt(r)]).await.unwrap();
        }
        let fourth = pass(&store, cfg, &standing).await.unwrap();
        assert_eq!(fourth.broken, 2);
        assert!(!standing.lock().unwrap().broken.contains_key("c"));
    }

    #[test]
    fn the_standing_holds_the_head_of_each_whole_chain_and_names_those_a_pass_did_not_list() {
        let (ha, hb) = (hex(&[0xa1; 32]), hex(&[0xb2; 32]));
        let mut s = Standing::default();
        s.begin_pass();
        s.whole_to("b", 3, &hb);
        s.record("b", None, "t");
        s.whole_to("a", 5, &ha);
        s.record("a", None, "t");
        // An empty chain, and a hash that is not one, give no anchor.
        s.whole_to("c", 0, &ha);
        s.whole_to("d", 2, "not a hash");
        assert_eq!(s.anchored(), 2);
        // The pass stops before its end: what it found is kept.
        s.stopped();
        s.begin_pass();
        assert_eq!(s.anchor("a"), Some(Anchor::new(5, &ha).unwrap()));
        assert_eq!(s.anchor("c"), None);
        // This pass lists `b` only, which has grown.
        s.whole_to("b", 4, &ha);
        s.record("b", None, "t");
        assert_eq!(s.unlisted(), ["a"]);
        s.keep("a");
        assert!(s.unlisted().is_empty());
        assert_eq!(s.end_pass(), vec![]);
        assert_eq!(s.anchor("b"), Some(Anchor::new(4, &ha).unwrap()));
        // Chains found whole for the first time go in among the held ones, in order.
        s.begin_pass();
        for t in ["e", "aa", "c", "0"] {
            s.whole_to(t, 1, &hb);
        }
        s.whole_to("c", 2, &hb);
        s.end_pass();
        assert_eq!(s.anchor("c").map(|a| a.seq), Some(2));
        let held: Vec<&str> = s.heads.held.iter().map(|(t, _)| &**t).collect();
        assert_eq!(held, ["0", "a", "aa", "b", "c", "e"]);
        assert_eq!(s.anchor("a"), Some(Anchor::new(5, &ha).unwrap()));
        // Many, in passes of a few each, in no order: held sorted, none lost.
        let mut x: u64 = 7;
        let mut all: std::collections::BTreeSet<String> =
            held.iter().map(|t| t.to_string()).collect();
        for _ in 0..20 {
            s.begin_pass();
            for _ in 0..15 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let t = format!("t{}", x >> 54);
                s.whole_to(&t, 1, &hb);
                all.insert(t);
            }
            s.end_pass();
        }
        let held: Vec<String> = s.heads.held.iter().map(|(t, _)| t.to_string()).collect();
        assert_eq!(held, all.into_iter().collect::<Vec<_>>());
        // A head costs 56 bytes besides the tenant's name.
        assert_eq!(std::mem::size_of::<(Box<str>, HeldHead)>(), 56);
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
