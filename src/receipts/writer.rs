//! The ReceiptWriter actor: the single writer of the ledger backend, with group commit.
//!
//! Callers hand over drafts through a [`LedgerHandle`]; the writer gives each its place in its
//! tenant's chain, commits many callers' receipts in one transaction (at most `max_batch`
//! receipts, after at most `linger`), and answers every caller only once its batch is durable.
//! While a commit runs (detached from the actor, so a writer crash cannot strand its callers),
//! new drafts gather for the next one; with `linger` 0 (the default) that is the whole batching,
//! so a lone receipt never waits for a timer (whose tick is 1 ms). The queue is bounded: beyond
//! `queue_capacity` receipts waiting, callers get [`LedgerError::Busy`] at once. A failed batch
//! fails every caller in it and writes nothing (the backend commits all-or-nothing). The one
//! exception is a commit to a store shared with other instances (Firestore) that lost a race
//! to one of them: it is sealed once more from the store as it stands, each caller checked
//! again, so that one tenant's race does not fail the other tenants' callers beside it.
//!
//! Drafts are sealed as they arrive, while the commit before theirs is still under way, so a
//! commit never waits for its batch to be hashed: the writer's chain heads run ahead of the
//! store by what is sealed and not yet durable. A draft is sealed at its commit instead when its
//! tenant's head is not known yet (a look-up in the store), when the writer's heads would refuse
//! it (the commit confirms a refusal from the store: another instance may have moved the chain
//! on), or when a caller before it waits for one; while such a commit is under way nothing is
//! sealed ahead. When a commit fails, every head is forgotten (reloaded from the store on demand)
//! and the callers sealed ahead are sealed again at theirs.
//!
//! Pub/Sub message ids make exactly one receipt each. A caller with message ids claims them on
//! arrival (`Claim`) until it is answered: while one delivery of a message is in the writer's
//! hands, another gets [`LedgerError::InFlight`] at once (it is retried, and then finds the
//! first one's receipt). The ids of callers that arrive together are looked up in the store in
//! one read; a caller with an id that has a receipt is answered with that receipt, and none of
//! its drafts is appended. The others go on like any caller, sealed ahead when they may be. So
//! one id never reaches a commit twice, and the store's unique key on it never fails a batch.
//!
//! On SQLite (with `linger` 0) a commit that ends takes the callers sealed meanwhile and commits
//! them next on the same blocking thread (`Chain`), answering the callers of the one before on
//! the writer's thread; the writer hears only when no sealed caller is left, or a commit failed.
//! Commits are still one at a time and in arrival order: a chain is just the writer's next
//! flushes without the round trip through its mailbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::Value;
use supervisors::ChildRef;
use tokio::sync::oneshot;

use super::receipt::{nesting, Receipt, ReceiptDraft, MAX_METADATA_NESTING};
use super::store::{records_state, AppendItem, Head, LedgerStore, StoreError};
use super::AnyStore;
use crate::telemetry::budget::LogBudget;
use crate::telemetry::events;

/// Chain heads kept in memory before the cache starts over (each is reloaded on demand).
const HEAD_CACHE_LIMIT: usize = 200_000;

/// Why an append did not become durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Too many receipts are waiting; retry shortly.
    #[error("the ledger queue is full")]
    Busy,
    /// The backend failed or the writer is restarting; nothing was written.
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
    /// Another instance appended to the same chain first; nothing was written.
    #[error("the chain moved on concurrently: {0}")]
    Conflict(String),
    /// Another delivery of the same Pub/Sub message is on its way to the store; nothing was
    /// written. Retried, it gets that delivery's receipt.
    #[error("{0}")]
    InFlight(String),
    /// A receipt no backend may hold (its metadata nests too deep); nothing was written, and
    /// no other caller's receipt was held up by it.
    #[error("the ledger refused the receipt: {0}")]
    Rejected(String),
    /// The tenant's entitlement record is no longer the one the caller decided on (see
    /// [`NewReceipt::expects`]); nothing of the caller's was written. The caller learns the new
    /// record and decides again.
    #[error("the tenant's entitlement changed before the decision was recorded: {0}")]
    Superseded(String),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => LedgerError::Conflict(m),
            other => LedgerError::Unavailable(other.to_string()),
        }
    }
}

/// One receipt to append.
#[derive(Debug, Clone)]
pub struct NewReceipt {
    pub draft: ReceiptDraft,
    /// A Pub/Sub message id, stored with the receipt in the same commit: if a receipt exists
    /// for it already, that one receipt is the whole answer to the append and none of the
    /// caller's drafts is appended (callers tell by the receipt id).
    pub message_id: Option<String>,
    /// The tenant's entitlement record after this receipt, committed with it.
    pub entitlement: Option<Value>,
    /// The [`record_fingerprint`] of the entitlement record the draft was decided on. The draft
    /// is sealed only if that is still the tenant's latest record at its place in the chain
    /// (records carried by the caller's own drafts do not count); otherwise the caller gets
    /// [`LedgerError::Superseded`] and none of its drafts is appended. So no decision made on a
    /// record follows a change of that record in the chain, however close the two come.
    pub expects: Option<u64>,
    /// Set on a governor's drafts (each records a governor state): the seq of the chain's last
    /// receipt that records one, as the governor knows it (0: none yet). The caller's first
    /// such draft is sealed only if that is still so at its place in the chain; otherwise the
    /// caller gets [`LedgerError::Conflict`] and none of its drafts is appended. A governor
    /// that another one overtook (on another instance sharing the store, or an incarnation
    /// before it whose commit landed after its rebuild) so reloads its state before it decides,
    /// and every governor decision in a chain starts where the one before it left.
    pub follows: Option<u64>,
}

impl NewReceipt {
    pub fn new(draft: ReceiptDraft) -> Self {
        NewReceipt {
            draft,
            message_id: None,
            entitlement: None,
            expects: None,
            follows: None,
        }
    }
}

/// A short fingerprint of an entitlement record (`None`: the tenant has none): the first eight
/// bytes of the SHA-256 of its canonical JSON, so equal records have equal fingerprints
/// however their maps were ordered.
pub fn record_fingerprint(record: Option<&Value>) -> u64 {
    use sha2::{Digest, Sha256};
    let Some(record) = record else {
        return 0;
    };
    let digest = Sha256::digest(super::jcs::canonical(record).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A tenant's chain as the writer sees it: its last sealed receipt (seq 0: none yet) and, once
/// the writer has needed them, the fingerprint of the tenant's entitlement record and the seq
/// of the last receipt that records a governor state (0: none), both as of that receipt.
#[derive(Debug, Clone)]
struct Tip {
    seq: u64,
    hash: String,
    record: Option<u64>,
    governed: Option<u64>,
}

impl Tip {
    fn of(head: Option<Head>) -> Tip {
        let (seq, hash) = head.map_or((0, String::new()), |h| (h.seq, h.hash));
        Tip {
            seq,
            hash,
            record: None,
            governed: None,
        }
    }

    /// What the next receipt is sealed after (`None`: the genesis).
    fn prev(&self) -> Option<(u64, &str)> {
        (self.seq > 0).then_some((self.seq, self.hash.as_str()))
    }

    /// Moves the tip to `receipt`, which carried `record` (if any) with it; `states` are the
    /// governor's.
    fn advance(&mut self, receipt: &Receipt, record: Option<&Value>, states: &[&str]) {
        self.seq = receipt.seq;
        self.hash.clone_from(&receipt.receipt_hash);
        if record.is_some() {
            self.record = Some(record_fingerprint(record));
        }
        if records_state(receipt, states) {
            self.governed = Some(receipt.seq);
        }
    }
}

/// Why a caller's drafts may not be sealed at `tips` as they stand: decided on a record that
/// has changed since ([`NewReceipt::expects`]), or after a governor state the chain has moved
/// past ([`NewReceipt::follows`]). `Some(None)`: they may; `None`: what they name is not known
/// to `tips` yet.
fn refusal(items: &[NewReceipt], tips: &HashMap<String, Tip>) -> Option<Option<LedgerError>> {
    for it in items {
        if let Some(expected) = it.expects {
            if tips.get(&it.draft.tenant_id)?.record? != expected {
                return Some(Some(superseded_error()));
            }
        }
    }
    if let Some(it) = items.iter().find(|i| i.follows.is_some()) {
        let governed = tips.get(&it.draft.tenant_id)?.governed?;
        if Some(governed) != it.follows {
            return Some(Some(overtaken(governed, it.follows.unwrap_or_default())));
        }
    }
    Some(None)
}

/// The conflict of a governor that left the chain's last governor decision at seq `left_at`,
/// which is at `at` now ([`NewReceipt::follows`]).
pub fn overtaken(at: u64, left_at: u64) -> LedgerError {
    LedgerError::Conflict(format!(
        "the chain's last governor decision is at seq {at}, not at {left_at} where the governor \
         left it; nothing was written"
    ))
}

fn superseded_error() -> LedgerError {
    LedgerError::Superseded(
        "a newer entitlement record of the tenant is in the chain; nothing was written".into(),
    )
}

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub node: String,
    pub max_batch: usize,
    pub linger: Duration,
    pub queue_capacity: usize,
    /// Injected failures (chaos hooks); inert unless switched on.
    pub chaos: Arc<LedgerChaos>,
    /// The names of the governor's states: a receipt (not of the entitlement kind) whose
    /// `state_to` is one of them records a governor state (see [`NewReceipt::follows`]).
    pub governor_states: &'static [&'static str],
}

/// Chaos switches of the ledger: make every commit fail, or stall, until a deadline.
#[derive(Debug, Default)]
pub struct LedgerChaos {
    fail_until_ms: std::sync::atomic::AtomicU64,
    stall_until_ms: std::sync::atomic::AtomicU64,
}

impl LedgerChaos {
    /// Every commit fails for `d` (nothing is written).
    pub fn fail_for(&self, d: Duration) {
        self.fail_until_ms.store(
            crate::clock::now_ms() + d.as_millis() as u64,
            Ordering::Release,
        );
    }

    /// Every commit waits until `d` has passed.
    pub fn stall_for(&self, d: Duration) {
        self.stall_until_ms.store(
            crate::clock::now_ms() + d.as_millis() as u64,
            Ordering::Release,
        );
    }

    fn failing(&self) -> bool {
        crate::clock::now_ms() < self.fail_until_ms.load(Ordering::Acquire)
    }

    fn stall_left(&self) -> Option<Duration> {
        let left = self
            .stall_until_ms
            .load(Ordering::Acquire)
            .saturating_sub(crate::clock::now_ms());
        (left > 0).then(|| Duration::from_millis(left))
    }
}

/// Where a caller's answer goes, and the Pub/Sub message ids the caller holds while the
/// writer has it.
struct Reply {
    tx: oneshot::Sender<Result<Vec<Receipt>, LedgerError>>,
    claim: Option<Claim>,
}

impl Reply {
    /// Answers the caller. Its message ids are released first: the caller may send the same
    /// id again as soon as it hears, and by then its receipt is in the store for the look-up.
    fn send(self, answer: Result<Vec<Receipt>, LedgerError>) {
        let Reply { tx, claim } = self;
        drop(claim);
        let _ = tx.send(answer);
    }
}

/// The Pub/Sub message ids in the writer's hands (looked up, queued or committing), so that
/// one id is never on its way to the store twice at once.
type Claimed = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// A caller's hold on its message ids, from its arrival at the writer until it is answered
/// (or dropped: a writer that crashes drops what it held).
struct Claim {
    claimed: Claimed,
    ids: Vec<String>,
}

impl Claim {
    /// Claims `ids`, or `None` if any of them is claimed already.
    fn take(claimed: &Claimed, ids: Vec<String>) -> Option<Claim> {
        let mut set = claimed.lock().unwrap_or_else(|e| e.into_inner());
        if ids.iter().any(|id| set.contains(id)) {
            return None;
        }
        set.extend(ids.iter().cloned());
        drop(set);
        Some(Claim {
            claimed: claimed.clone(),
            ids,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            set.remove(id);
        }
    }
}

/// A caller whose drafts are sealed at their commit.
struct Pending {
    items: Vec<NewReceipt>,
    reply: Reply,
    enqueued: Instant,
    /// Its message ids were looked up in the store on arrival, none has a receipt, and no two
    /// of its drafts share one: it may be sealed ahead.
    checked: bool,
}

/// A caller whose drafts were sealed on arrival.
struct Sealed {
    items: Vec<AppendItem>,
    reply: Reply,
    enqueued: Instant,
    /// The caller's [`NewReceipt::expects`] and [`NewReceipt::follows`], checked again if it
    /// is sealed again.
    expects: Option<u64>,
    follows: Option<u64>,
}

impl Sealed {
    /// Back to drafts, to be sealed again at their commit.
    fn unseal(self) -> Pending {
        let (expects, follows) = (self.expects, self.follows);
        Pending {
            items: (self.items.into_iter().enumerate())
                .map(|(n, i)| drafted_again(i, n, expects, follows))
                .collect(),
            reply: self.reply,
            enqueued: self.enqueued,
            checked: true,
        }
    }
}

/// The `n`th receipt of a caller, back to its draft, with the caller's [`NewReceipt::expects`]
/// and [`NewReceipt::follows`] on its first one: they are checked again there (the check reads
/// the tips before the caller's drafts). On one instance that passes again, resealed in the
/// same order after the same receipts; another instance sharing the store may have written
/// meanwhile.
fn drafted_again(
    item: AppendItem,
    n: usize,
    expects: Option<u64>,
    follows: Option<u64>,
) -> NewReceipt {
    NewReceipt {
        draft: item.receipt.unseal(),
        message_id: item.message_id,
        entitlement: item.entitlement,
        expects: expects.filter(|_| n == 0),
        follows: follows.filter(|_| n == 0),
    }
}

/// Callers sealed on arrival and not yet in a commit, in arrival order. Shared with the commit
/// under way: on SQLite, a commit that ends takes the next callers from here itself and commits
/// them on the same thread (see [`Chain`]).
#[derive(Default)]
struct SealedQueue {
    callers: Vec<Sealed>,
    receipts: usize,
}

impl SealedQueue {
    /// Takes the first `n` callers.
    fn take(&mut self, n: usize) -> Vec<Sealed> {
        let taken: Vec<Sealed> = self.callers.drain(..n).collect();
        self.receipts -= taken.iter().map(|s| s.items.len()).sum::<usize>();
        taken
    }

    /// Takes whole callers from the front, up to `max` receipts (at least one caller if any).
    fn take_batch(&mut self, max: usize) -> Vec<Sealed> {
        let n = whole_callers(self.callers.iter().map(|s| s.items.len()), max);
        self.take(n)
    }
}

/// How many of the callers (given by their receipt counts, in order) fit into `max` receipts,
/// never fewer than one if there is any: a caller's receipts are never split.
fn whole_callers(sizes: impl Iterator<Item = usize>, max: usize) -> usize {
    let (mut callers, mut count) = (0, 0);
    for n in sizes {
        if callers > 0 && count + n > max {
            break;
        }
        count += n;
        callers += 1;
    }
    callers
}

fn lock(queue: &std::sync::Mutex<SealedQueue>) -> std::sync::MutexGuard<'_, SealedQueue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// A caller whose message ids were looked up in the store (`recorded`: those found): answered
/// with the receipt if one of its ids has one, or else handed back, marked `checked` unless
/// two of its drafts share an id (its commit sorts that out).
fn unrecorded(mut p: Pending, recorded: &HashMap<String, Receipt>) -> Option<Pending> {
    let existing = (p.items.iter())
        .filter_map(|i| i.message_id.as_deref())
        .find_map(|mid| recorded.get(mid));
    if let Some(r) = existing {
        p.reply.send(Ok(vec![r.clone()]));
        return None;
    }
    let mut ids: Vec<&str> = (p.items.iter())
        .filter_map(|i| i.message_id.as_deref())
        .collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    p.checked = ids.len() == n;
    Some(p)
}

/// The single writer of the ledger backend.
pub struct ReceiptWriter {
    store: AnyStore,
    cfg: WriterConfig,
    /// Each known tenant's last sealed receipt: committed, in the commit under way, or sealed
    /// ahead for the next one.
    heads: HashMap<String, Tip>,
    /// Callers sealed on arrival, in arrival order; all of them arrived before any in `pending`.
    sealed: Arc<std::sync::Mutex<SealedQueue>>,
    /// Callers to be sealed at their commit, in arrival order.
    pending: Vec<Pending>,
    /// Receipts in `pending`.
    pending_receipts: usize,
    flushing: bool,
    /// The commit under way seals drafts itself, so `heads` misses their tenants' new heads
    /// until it ends: nothing is sealed ahead meanwhile.
    blind: bool,
    linger_scheduled: bool,
    /// The timestamp of receipts sealed ahead, formatted once per millisecond.
    stamp: (u64, String),
    /// Message ids held by callers in this writer's hands (see [`Claim`]).
    claimed: Claimed,
    /// Callers with message ids that arrived while a look-up was under way: the next one.
    to_check: Vec<Pending>,
    checking: bool,
}

impl ReceiptWriter {
    pub fn new(store: AnyStore, cfg: WriterConfig) -> Self {
        ReceiptWriter {
            store,
            cfg,
            heads: HashMap::new(),
            sealed: Default::default(),
            pending: Vec::new(),
            pending_receipts: 0,
            flushing: false,
            blind: false,
            linger_scheduled: false,
            stamp: (0, String::new()),
            claimed: Default::default(),
            to_check: Vec::new(),
            checking: false,
        }
    }

    /// Takes in a caller: sealed ahead if it may be, else queued to be sealed at its commit.
    fn admit(&mut self, p: Pending, ctx: &mut Context<Self>) {
        let n = p.items.len();
        match self.seal_ahead(p) {
            Ok(sealed) => {
                let mut queue = lock(&self.sealed);
                queue.receipts += n;
                queue.callers.push(sealed);
            }
            Err(pending) => {
                self.pending_receipts += n;
                self.pending.push(pending);
            }
        }
        self.schedule(ctx);
    }

    /// Looks up the message ids of the callers waiting for it, all in one read, and admits
    /// the callers none of whose ids has a receipt; the others are answered with the receipt.
    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.checking || self.to_check.is_empty() {
            return;
        }
        self.checking = true;
        let batch = std::mem::take(&mut self.to_check);
        let ids: Vec<String> = (batch.iter().flat_map(|p| &p.items))
            .filter_map(|i| i.message_id.clone())
            .collect();
        let store = self.store.clone();
        let lookup = async move { store.by_message_ids(&ids).await };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(lookup).map(move |found, act, ctx| {
                act.checking = false;
                match found {
                    Ok(recorded) => {
                        for p in batch {
                            if let Some(p) = unrecorded(p, &recorded) {
                                act.admit(p, ctx);
                            }
                        }
                    }
                    Err(e) => {
                        let e = LedgerError::from(e);
                        for p in batch {
                            p.reply.send(Err(e.clone()));
                        }
                    }
                }
                act.check(ctx);
            }),
        );
    }

    /// Seals a caller's drafts now if that keeps every chain in arrival order (see the module
    /// header), or hands the caller back: also when the writer's tips refuse it, because a
    /// refusal is confirmed from the store at its commit (see [`Sealing::seal`]).
    fn seal_ahead(&mut self, p: Pending) -> Result<Sealed, Pending> {
        let ready = !self.blind
            && self.pending.is_empty()
            && p.items.iter().all(|i| {
                (i.message_id.is_none() || p.checked) && self.heads.contains_key(&i.draft.tenant_id)
            });
        if !ready {
            return Err(p);
        }
        if !matches!(refusal(&p.items, &self.heads), Some(None)) {
            return Err(p);
        }
        let ms = crate::clock::receipt_ms();
        if self.stamp.0 != ms {
            self.stamp = (ms, crate::clock::rfc3339_millis(ms));
        }
        let (heads, node, timestamp) = (&mut self.heads, &self.cfg.node, &self.stamp.1);
        let states = self.cfg.governor_states;
        let expects = p.items.iter().find_map(|i| i.expects);
        let follows = p.items.iter().find_map(|i| i.follows);
        let items = p
            .items
            .into_iter()
            .map(|it| {
                let head = heads
                    .get_mut(&it.draft.tenant_id)
                    .expect("every tenant's head is known (checked above)");
                let receipt = it.draft.seal(head.prev(), node, timestamp.clone());
                head.advance(&receipt, it.entitlement.as_ref(), states);
                AppendItem::sealed(receipt, it.message_id, it.entitlement)
            })
            .collect();
        Ok(Sealed {
            items,
            reply: p.reply,
            enqueued: p.enqueued,
            expects,
            follows,
        })
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let sealed = lock(&self.sealed).receipts;
        if self.flushing || (sealed == 0 && self.pending.is_empty()) {
            return;
        }
        if sealed + self.pending_receipts >= self.cfg.max_batch || self.cfg.linger.is_zero() {
            self.flush(ctx);
        } else if !self.linger_scheduled {
            self.linger_scheduled = true;
            ctx.run_later(self.cfg.linger, |act, ctx| {
                act.linger_scheduled = false;
                if !act.flushing {
                    act.flush(ctx);
                }
            });
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        // Take whole callers in arrival order (the sealed ones first), up to max_batch receipts.
        let mut queue = lock(&self.sealed);
        let sizes = (queue.callers.iter().map(|s| s.items.len()))
            .chain(self.pending.iter().map(|p| p.items.len()));
        let callers = whole_callers(sizes, self.cfg.max_batch);
        if callers == 0 {
            return;
        }
        let ahead = callers.min(queue.callers.len());
        let sealed = queue.take(ahead);
        drop(queue);
        let batch: Vec<Pending> = self.pending.drain(..callers - ahead).collect();
        self.pending_receipts -= batch.iter().map(|p| p.items.len()).sum::<usize>();
        self.flushing = true;
        self.blind = !batch.is_empty();
        let known: HashMap<String, Tip> = batch
            .iter()
            .flat_map(|p| &p.items)
            .filter_map(|i| {
                let t = &i.draft.tenant_id;
                self.heads.get(t).map(|h| (t.clone(), h.clone()))
            })
            .collect();
        let store = self.store.clone();
        let node = self.cfg.node.clone();
        // Detached from this incarnation: a commit under way on the blocking pool finishes, and
        // answers its callers, even if the writer crashes meanwhile (otherwise they would hear
        // "nothing was written" about receipts that were). A restarted writer reloads the heads
        // it needs from the store; one that raced the old commit gets a clean conflict.
        let chain = Chain {
            writer: ctx.address(),
            queue: self.sealed.clone(),
            max_batch: self.cfg.max_batch,
            // A linger asks for batches gathered by the clock: the writer forms every one.
            follow: self.cfg.linger.is_zero(),
            chaos: self.cfg.chaos.clone(),
            backend: store.backend(),
            callers: Vec::new(),
            receipts: 0,
            started: Instant::now(),
            heads: HashMap::new(),
            resealed: false,
            told: false,
        };
        let states = self.cfg.governor_states;
        actix::spawn(commit(store, node, states, sealed, batch, known, chain));
    }
}

/// A commit ended: the heads of the drafts it sealed itself, or `None` if it failed or was
/// sealed again after losing a race (every tip the writer holds is stale then).
#[derive(Message)]
#[rtype(result = "()")]
struct Committed(Option<HashMap<String, Tip>>);

impl Handler<Committed> for ReceiptWriter {
    type Result = ();
    fn handle(&mut self, msg: Committed, ctx: &mut Context<Self>) {
        self.flushing = false;
        let blind = std::mem::take(&mut self.blind);
        match msg.0 {
            Some(new_heads) => {
                // Only a blind commit's heads are news: nothing was sealed ahead of them.
                if blind {
                    self.heads.extend(new_heads);
                }
                if self.heads.len() > HEAD_CACHE_LIMIT {
                    // Nothing is in flight now: every head but those of the receipts sealed
                    // ahead is in the store, and is reloaded from there on demand.
                    let queue = lock(&self.sealed);
                    let ahead: std::collections::HashSet<&str> = (queue.callers.iter())
                        .flat_map(|s| &s.items)
                        .map(|i| i.receipt.tenant_id.as_str())
                        .collect();
                    self.heads.retain(|t, _| ahead.contains(t.as_str()));
                }
            }
            None => {
                // What was sealed ahead follows a batch that was not written as sealed: seal it
                // again at its commit, from heads reloaded from the store.
                self.heads.clear();
                let mut queue = lock(&self.sealed);
                let all = queue.callers.len();
                let again: Vec<Pending> = queue.take(all).into_iter().map(Sealed::unseal).collect();
                drop(queue);
                self.pending_receipts += again.iter().map(|p| p.items.len()).sum::<usize>();
                self.pending.splice(0..0, again);
            }
        }
        self.schedule(ctx);
    }
}

/// What a caller's draft needs known of its tenant's chain besides the tip.
struct Needs {
    /// The fingerprint of the entitlement record ([`NewReceipt::expects`]).
    record: bool,
    /// The seq of the last receipt that records one of these governor states
    /// ([`NewReceipt::follows`]).
    governed: Option<&'static [&'static str]>,
}

/// Loads `tenant`'s tip into `tips` if it is not there, and what `needs` asks for that the tip
/// does not have. No receipt of the tenant is in flight when the tip is not known; when the
/// tip is known and what it lacks is read from the store, only receipts that change neither
/// (the writer's tips learn both from every receipt it seals) may be.
async fn know(
    store: &AnyStore,
    tips: &mut HashMap<String, Tip>,
    tenant: &str,
    needs: Needs,
) -> Result<(), StoreError> {
    let governed_seq =
        |snap: &super::store::GovernorSnapshot| Some(snap.last_state.as_ref().map_or(0, |r| r.seq));
    if !tips.contains_key(tenant) {
        let tip = match needs.governed {
            // A governor's decision: everything in one read.
            Some(states) => {
                let snap = store.governor_snapshot(tenant, states).await?;
                let record = Some(record_fingerprint(snap.entitlement.as_ref()));
                let governed = governed_seq(&snap);
                Tip {
                    record,
                    governed,
                    ..Tip::of(snap.head)
                }
            }
            None if needs.record => {
                let (head, entitlement) = store.head_and_entitlement(tenant).await?;
                Tip {
                    record: Some(record_fingerprint(entitlement.as_ref())),
                    ..Tip::of(head)
                }
            }
            None => Tip::of(store.head(tenant).await?),
        };
        tips.insert(tenant.to_owned(), tip);
    }
    let tip = tips.get_mut(tenant).expect("inserted above");
    if needs.record && tip.record.is_none() {
        tip.record = Some(record_fingerprint(
            store.entitlement(tenant).await?.as_ref(),
        ));
    }
    if let (Some(states), None) = (needs.governed, tip.governed) {
        tip.governed = governed_seq(&store.governor_snapshot(tenant, states).await?);
    }
    Ok(())
}

/// What a caller gets back for one of its drafts.
enum Answer {
    /// A receipt that exists already (same Pub/Sub message id).
    Existing(Box<Receipt>),
    /// The appended receipt at this index of the batch.
    New(usize),
}

/// A caller of a commit, with where each of its receipts is found.
struct Caller {
    reply: Reply,
    enqueued: Instant,
    mine: Vec<Answer>,
    /// Its [`NewReceipt::expects`] and [`NewReceipt::follows`], checked again if it is sealed
    /// again after a conflict.
    expects: Option<u64>,
    follows: Option<u64>,
}

impl Caller {
    /// Back to drafts after its commit lost a race, to be sealed again; `Err` (the caller
    /// untouched) if one of its drafts was answered with another's receipt (the same message
    /// id twice), which a second sealing would not reproduce.
    fn unseal(self, items: &mut [Option<AppendItem>]) -> Result<Pending, Caller> {
        let appended: Option<Vec<usize>> = (self.mine.iter())
            .map(|a| match a {
                Answer::New(idx) => Some(*idx),
                Answer::Existing(_) => None,
            })
            .collect();
        let Some(appended) = appended else {
            return Err(self);
        };
        let (expects, follows) = (self.expects, self.follows);
        let drafts = (appended.into_iter().enumerate())
            .map(|(n, idx)| {
                let item = items[idx]
                    .take()
                    .expect("each appended receipt belongs to one caller");
                drafted_again(item, n, expects, follows)
            })
            .collect();
        Ok(Pending {
            items: drafts,
            reply: self.reply,
            enqueued: self.enqueued,
            checked: false,
        })
    }
}

/// Seals the drafts of `batch` (after the receipts of `sealed`), commits them all, and settles
/// the commit through `chain`: the writer hears how it ended (the heads of the drafts sealed
/// here, or that the batch failed), then every caller is answered. The writer hears first: the
/// callers it answers send their next drafts at once, and the next commit should not wait
/// behind them in the writer's mailbox. On SQLite the next commit does not wait for the writer
/// at all: the chain takes the callers sealed meanwhile and commits them on the same thread.
///
/// A commit to a store that other instances share (Firestore) that loses a race fails whole,
/// whichever of its receipts or message ids the other instance took, so it is sealed once more
/// from the store as it stands: each caller is checked again against the tips read back (a
/// governor that was overtaken gets its conflict, a decision on a replaced record its
/// supersession), a message id another instance recorded meanwhile answers with that receipt,
/// and the rest is committed. A second lost race fails every caller in it.
async fn commit(
    store: AnyStore,
    node: String,
    states: &'static [&'static str],
    sealed: Vec<Sealed>,
    batch: Vec<Pending>,
    mut heads: HashMap<String, Tip>,
    mut chain: Chain,
) {
    if let Some(left) = chain.chaos.stall_left() {
        actix::clock::sleep(left).await;
    }
    let sealing = Sealing {
        store: &store,
        node: &node,
        states,
    };
    let mut items: Vec<AppendItem> = Vec::new();
    chain.add(sealed, &mut items);
    let mut touched = std::collections::HashSet::new();
    let failure = sealing
        .seal(
            batch,
            &mut heads,
            &mut touched,
            &mut items,
            &mut chain.callers,
        )
        .await;
    chain.receipts = items.len();
    chain.heads = heads
        .into_iter()
        .filter(|(t, _)| touched.contains(t))
        .collect();
    let outcome = match failure {
        Some(e) => Err(e),
        None if items.is_empty() => Ok(items),
        None if chain.chaos.failing() => Err(LedgerError::Unavailable(
            "chaos: ledger failure injected; nothing was written".into(),
        )),
        None => {
            if let AnyStore::Sqlite(sqlite) = &store {
                // The callers of each commit are answered on the writer's thread, while the
                // next commit runs here (answering some 120 callers takes about 0.2 ms).
                let arbiter = actix::Arbiter::current();
                let chained = sqlite.append_chained(items, move |outcome| {
                    let (next, answers) = chain.settle(outcome.map_err(LedgerError::from), true);
                    answers.send_on(&arbiter);
                    next
                });
                // A failed hand-off drops the chain, which tells the writer.
                if let Err(e) = chained.await {
                    tracing::warn!(error = %e, "ledger commit thread failed");
                }
                return;
            }
            match store.append(items.clone()).await {
                Err(StoreError::Conflict(e)) => sealing.again(items, e, &mut chain).await,
                outcome => outcome.map_err(LedgerError::from),
            }
        }
    };
    let (_, answers) = chain.settle(outcome, false);
    // The writer starts its next commit before these callers are answered.
    actix_web::rt::task::yield_now().await;
    answers.send();
}

/// How a commit seals the drafts of callers that were not sealed on arrival.
struct Sealing<'a> {
    store: &'a AnyStore,
    node: &'a str,
    states: &'static [&'static str],
}

impl Sealing<'_> {
    /// Seals the callers of `batch` after `heads` (loading from the store the tips it lacks,
    /// and `touched` gets each tenant sealed for), each receipt appended to `items` and each
    /// caller to `callers`; a caller the tips refuse is answered at once. The error that stops
    /// it if the store cannot be read (every caller not yet sealed is answered with it, and the
    /// batch must fail).
    async fn seal(
        &self,
        batch: Vec<Pending>,
        heads: &mut HashMap<String, Tip>,
        touched: &mut std::collections::HashSet<String>,
        items: &mut Vec<AppendItem>,
        callers: &mut Vec<Caller>,
    ) -> Option<LedgerError> {
        let mut seen_messages: HashMap<String, usize> = HashMap::new();
        // Tenants whose tips this commit read from the store.
        let mut fresh: std::collections::HashSet<String> = std::collections::HashSet::new();
        let timestamp = crate::clock::rfc3339_millis(crate::clock::receipt_ms());
        let mut rest = batch.into_iter();
        for p in rest.by_ref() {
            let Pending {
                items: drafts,
                reply,
                enqueued,
                ..
            } = p;
            let expects = drafts.iter().find_map(|i| i.expects);
            let follows = drafts.iter().find_map(|i| i.follows);
            let caller = |reply, mine| Caller {
                reply,
                enqueued,
                mine,
                expects,
                follows,
            };
            // The tips its drafts are sealed after, and the records they were decided on, from
            // the store where the writer does not know them (nothing of such a tenant is in
            // flight).
            let mut verdict = self.know_all(&drafts, heads, &mut fresh).await;
            // A refusal read from a tip the writer held may rest on a tip that another instance
            // sharing the store has moved past (a governor started since knows more of the
            // chain than this writer): it is confirmed from the store, unless this batch seals
            // receipts of the tenant already (the store cannot show them yet; a tip that is
            // stale then fails the commit, which is sealed again from the store).
            if !matches!(verdict, Ok(Some(None))) {
                let mut stale: Vec<&str> = (drafts.iter())
                    .map(|d| d.draft.tenant_id.as_str())
                    .filter(|t| !fresh.contains(*t))
                    .filter(|t| !items.iter().any(|i| i.receipt.tenant_id == *t))
                    .collect();
                stale.dedup();
                if verdict.is_ok() && !stale.is_empty() {
                    for t in stale {
                        heads.remove(t);
                        touched.insert(t.to_owned());
                    }
                    verdict = self.know_all(&drafts, heads, &mut fresh).await;
                }
            }
            match verdict {
                Ok(Some(None)) => {}
                Err(e) => {
                    callers.push(caller(reply, Vec::new()));
                    for p in rest {
                        p.reply.send(Err(e.clone()));
                    }
                    return Some(e);
                }
                Ok(refused) => {
                    reply.send(Err(refused.flatten().unwrap_or_else(superseded_error)));
                    continue;
                }
            }
            // Its message ids were looked up on arrival and are held by it alone (see `Claim`),
            // so none has a receipt in the store or elsewhere in this batch; only its own drafts
            // may share one.
            let mut mine = Vec::with_capacity(drafts.len());
            for it in drafts {
                // The same message id twice in one caller's drafts: the first one's receipt.
                if let Some(&idx) = it.message_id.as_ref().and_then(|m| seen_messages.get(m)) {
                    mine.push(Answer::Existing(Box::new(items[idx].receipt.clone())));
                    continue;
                }
                let tenant = it.draft.tenant_id.clone();
                let tip = heads
                    .get_mut(&tenant)
                    .expect("every tenant's tip is known (loaded above)");
                let receipt = it.draft.seal(tip.prev(), self.node, timestamp.clone());
                tip.advance(&receipt, it.entitlement.as_ref(), self.states);
                touched.insert(tenant);
                if let Some(mid) = &it.message_id {
                    seen_messages.insert(mid.clone(), items.len());
                }
                mine.push(Answer::New(items.len()));
                items.push(AppendItem::sealed(receipt, it.message_id, it.entitlement));
            }
            callers.push(caller(reply, mine));
        }
        None
    }

    /// Loads what `drafts` need of their tenants' chains into `heads` (see [`know`]), noting in
    /// `fresh` the tenants whose tips were read from the store; then whether the drafts may be
    /// sealed there (see [`refusal`]).
    async fn know_all(
        &self,
        drafts: &[NewReceipt],
        heads: &mut HashMap<String, Tip>,
        fresh: &mut std::collections::HashSet<String>,
    ) -> Result<Option<Option<LedgerError>>, LedgerError> {
        for it in drafts {
            let tenant = &it.draft.tenant_id;
            if !heads.contains_key(tenant) {
                fresh.insert(tenant.clone());
            }
            let needs = Needs {
                record: it.expects.is_some(),
                governed: it.follows.is_some().then_some(self.states),
            };
            know(self.store, heads, tenant, needs).await?;
        }
        Ok(refusal(drafts, heads))
    }

    /// After the commit of `items` lost a race (`lost`, the store's conflict): the callers of
    /// `chain` are sealed once more from the store as it stands, and committed. The writer is
    /// told to reload every tip, as after a failed commit: what it sealed ahead followed the
    /// receipts that were not written.
    async fn again(
        &self,
        items: Vec<AppendItem>,
        lost: String,
        chain: &mut Chain,
    ) -> Result<Vec<AppendItem>, LedgerError> {
        let conflict = LedgerError::Conflict(lost);
        events::ledger_batch_failed(chain.backend, items.len(), &conflict);
        tracing::info!(error = %conflict, receipts = items.len(), "ledger commit lost a race; sealing its callers again from the store");
        chain.resealed = true;
        let mut items: Vec<Option<AppendItem>> = items.into_iter().map(Some).collect();
        let mut again = Vec::new();
        for c in std::mem::take(&mut chain.callers) {
            match c.unseal(&mut items) {
                Ok(p) => again.push(p),
                Err(c) => c.reply.send(Err(conflict.clone())),
            }
        }
        // A message id another instance recorded meanwhile: that receipt is the answer.
        let ids: Vec<String> = (again.iter().flat_map(|p| &p.items))
            .filter_map(|i| i.message_id.clone())
            .collect();
        if !ids.is_empty() {
            match self.store.by_message_ids(&ids).await {
                Ok(recorded) => {
                    again = (again.into_iter())
                        .filter_map(|p| unrecorded(p, &recorded))
                        .collect();
                }
                Err(e) => {
                    let e = LedgerError::from(e);
                    for p in again {
                        p.reply.send(Err(e.clone()));
                    }
                    return Err(e);
                }
            }
        }
        let (mut heads, mut touched) = (HashMap::new(), std::collections::HashSet::new());
        let mut items = Vec::new();
        if let Some(e) = (self.seal(
            again,
            &mut heads,
            &mut touched,
            &mut items,
            &mut chain.callers,
        ))
        .await
        {
            return Err(e);
        }
        chain.receipts = items.len();
        if items.is_empty() {
            return Ok(items);
        }
        self.store.append(items).await.map_err(LedgerError::from)
    }
}

/// The commits of one flush: the batch under way, its callers, and how the writer hears that
/// the flush ended. A SQLite commit that ends takes the next callers sealed meanwhile from the
/// shared queue and commits them on the same thread, until none is waiting; only then does the
/// writer hear (and, for a batch that sealed drafts itself, get their heads). Dropped without
/// having told the writer (a panic, a lost hand-off), it tells it the flush failed, so that the
/// writer reseals what is queued and commits again.
struct Chain {
    writer: Addr<ReceiptWriter>,
    queue: Arc<std::sync::Mutex<SealedQueue>>,
    max_batch: usize,
    /// Whether a commit that ends may take the next batch itself.
    follow: bool,
    chaos: Arc<LedgerChaos>,
    backend: &'static str,
    /// The callers of the batch under way.
    callers: Vec<Caller>,
    /// Receipts in the batch under way.
    receipts: usize,
    /// When the batch under way was handed over.
    started: Instant,
    /// The heads of the drafts the first batch sealed itself (sent once, when the flush ends).
    heads: HashMap<String, Tip>,
    /// The batch was sealed again after it lost a race: the writer's tips are all stale.
    resealed: bool,
    told: bool,
}

/// How the callers of a settled batch are answered (sent after the next commit was chosen).
enum Answers {
    Durable(Vec<Caller>, Vec<AppendItem>),
    Refused(Vec<Caller>, LedgerError),
}

impl Chain {
    /// Makes sealed callers the batch under way, their receipts appended to `items`.
    fn add(&mut self, sealed: Vec<Sealed>, items: &mut Vec<AppendItem>) {
        self.callers.reserve(sealed.len());
        for s in sealed {
            let mine = (items.len()..items.len() + s.items.len())
                .map(Answer::New)
                .collect();
            items.extend(s.items);
            self.callers.push(Caller {
                reply: s.reply,
                enqueued: s.enqueued,
                mine,
                expects: s.expects,
                follows: s.follows,
            });
        }
    }

    /// The batch under way ended with `outcome`. Chooses the next batch (only if `may_follow`
    /// and `follow`, the commit succeeded and no chaos switch is on), or else tells the writer
    /// the flush ended; returns it with the answers owed to the callers of the batch that ended.
    fn settle(
        &mut self,
        outcome: Result<Vec<AppendItem>, LedgerError>,
        may_follow: bool,
    ) -> (Option<Vec<AppendItem>>, Answers) {
        let callers = std::mem::take(&mut self.callers);
        match outcome {
            Ok(items) => {
                events::ledger_batch_committed(self.backend, &items, self.started.elapsed());
                let follow = may_follow && self.follow;
                let next = if follow && !self.chaos.failing() && self.chaos.stall_left().is_none() {
                    let sealed = lock(&self.queue).take_batch(self.max_batch);
                    let mut next = Vec::with_capacity(sealed.iter().map(|s| s.items.len()).sum());
                    self.add(sealed, &mut next);
                    self.receipts = next.len();
                    self.started = Instant::now();
                    Some(next).filter(|n| !n.is_empty())
                } else {
                    None
                };
                if next.is_none() {
                    let heads = std::mem::take(&mut self.heads);
                    self.tell((!self.resealed).then_some(heads));
                }
                (next, Answers::Durable(callers, items))
            }
            Err(e) => {
                self.tell(None);
                events::ledger_batch_failed(self.backend, self.receipts, &e);
                // A ledger that is away fails every batch, hundreds a second: one line a
                // second, with the batches left out since the last one.
                static FAILED: LogBudget = LogBudget::new();
                if let Some(suppressed) = FAILED.admit_now() {
                    tracing::warn!(error = %e, receipts = self.receipts, suppressed, "ledger batch failed; every caller in it is refused");
                }
                (None, Answers::Refused(callers, e))
            }
        }
    }

    fn tell(&mut self, heads: Option<HashMap<String, Tip>>) {
        self.told = true;
        self.writer.do_send(Committed(heads));
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        if !self.told {
            self.writer.do_send(Committed(None));
        }
    }
}

impl Answers {
    /// Sends the answers on `arbiter`'s thread, or here if that arbiter is gone.
    fn send_on(self, arbiter: &actix::ArbiterHandle) {
        let slot = Arc::new(std::sync::Mutex::new(Some(self)));
        let take = |s: &std::sync::Mutex<Option<Answers>>| {
            s.lock().unwrap_or_else(|e| e.into_inner()).take()
        };
        let there = slot.clone();
        if !arbiter.spawn_fn(move || take(&there).into_iter().for_each(Answers::send)) {
            take(&slot).into_iter().for_each(Answers::send);
        }
    }

    fn send(self) {
        match self {
            Answers::Durable(callers, items) => {
                let mut appended: Vec<Option<Receipt>> =
                    items.into_iter().map(|i| Some(i.receipt)).collect();
                for Caller {
                    reply,
                    enqueued,
                    mine,
                    ..
                } in callers
                {
                    let receipts: Vec<Receipt> = mine
                        .into_iter()
                        .map(|a| match a {
                            Answer::Existing(r) => *r,
                            Answer::New(idx) => appended[idx]
                                .take()
                                .expect("each appended receipt answers one caller"),
                        })
                        .collect();
                    events::receipts_durable(enqueued.elapsed());
                    reply.send(Ok(receipts));
                }
            }
            Answers::Refused(callers, e) => {
                for c in callers {
                    c.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Actor for ReceiptWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.cfg.queue_capacity.max(16));
        tracing::info!(
            backend = self.store.backend(),
            max_batch = self.cfg.max_batch,
            linger_us = self.cfg.linger.as_micros() as u64,
            "receipt writer started"
        );
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        // Flush what is queued before stopping: the supervisor waits (shutdown timeout). When
        // the writer is being dropped there is nothing to wait with: callers get an error.
        let idle = lock(&self.sealed).callers.is_empty()
            && self.pending.is_empty()
            && !self.flushing
            && !self.checking
            && self.to_check.is_empty();
        if idle || supervisors::being_dropped() {
            return Running::Stop;
        }
        if !self.flushing {
            self.flush(ctx);
        }
        ctx.run_later(Duration::from_millis(1), |_, ctx| ctx.stop());
        Running::Continue
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Enqueue(Pending);

impl Handler<Enqueue> for ReceiptWriter {
    type Result = ();
    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        let mut p = msg.0;
        let ids: Vec<String> = (p.items.iter())
            .filter_map(|i| i.message_id.clone())
            .collect();
        if ids.is_empty() {
            return self.admit(p, ctx);
        }
        // A message id already in the writer's hands (a redelivery racing its first delivery):
        // that one decides it; this one may come again once it has.
        match Claim::take(&self.claimed, ids) {
            Some(claim) => p.reply.claim = Some(claim),
            None => {
                return p.reply.send(Err(LedgerError::InFlight(
                    "a receipt for this Pub/Sub message id or idempotency key is being committed; retry"
                        .into(),
                )))
            }
        }
        self.to_check.push(p);
        self.check(ctx);
    }
}

/// Chaos hook: panic inside a handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for ReceiptWriter {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("chaos: receipt writer crash requested");
    }
}

/// How callers reach the writer (appends) and the store (reads).
#[derive(Clone)]
pub struct LedgerHandle {
    writer: ChildRef<ReceiptWriter>,
    /// The writer's chaos switches (shared with its config).
    pub chaos: Arc<LedgerChaos>,
    store: AnyStore,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    writes: Arc<WriteHealth>,
}

/// How long a failed append keeps the ledger reported as failing when nothing has been
/// committed since (an idle instance is then judged by its store's answer alone again).
pub const WRITE_FAILURE_WINDOW: Duration = Duration::from_secs(10);

/// Whether appends fail lately: the time of the last failed append (the store or the writer
/// unavailable) since the last one that became durable. A backend that answers reads but
/// refuses writes (a full disk, a revoked write permission) is then no longer reported healthy
/// while every governed input gets 503.
struct WriteHealth {
    origin: Instant,
    /// Milliseconds after `origin`, plus one, of the last failure; 0 after a success.
    failed_at: AtomicU64,
}

impl WriteHealth {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    fn record(&self, outcome: &Result<Vec<Receipt>, LedgerError>) {
        match outcome {
            // Read first: on the hot path nothing is written to the shared line.
            Ok(_) => {
                if self.failed_at.load(Ordering::Relaxed) != 0 {
                    self.failed_at.store(0, Ordering::Relaxed);
                }
            }
            Err(LedgerError::Unavailable(_)) => self.failed_at.store(self.now(), Ordering::Relaxed),
            // A full queue, a lost race, a duplicate delivery or a refused receipt says
            // nothing about whether the backend takes writes.
            Err(_) => {}
        }
    }

    fn failing(&self) -> bool {
        let at = self.failed_at.load(Ordering::Relaxed);
        at != 0 && self.now().saturating_sub(at) < WRITE_FAILURE_WINDOW.as_millis() as u64
    }
}

impl LedgerHandle {
    pub fn new(
        writer: ChildRef<ReceiptWriter>,
        store: AnyStore,
        capacity: usize,
        chaos: Arc<LedgerChaos>,
    ) -> Self {
        LedgerHandle {
            writer,
            chaos,
            store,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity,
            writes: Arc::new(WriteHealth {
                origin: Instant::now(),
                failed_at: AtomicU64::new(0),
            }),
        }
    }

    /// Whether the last append that ended did so because the ledger was unavailable, less
    /// than [`WRITE_FAILURE_WINDOW`] ago (health checks report the ledger as failing then).
    pub fn writes_failing(&self) -> bool {
        self.writes.failing()
    }

    /// The store, for reads (never for appends).
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The writer's supervised handle (chaos hooks, health).
    pub fn writer(&self) -> &ChildRef<ReceiptWriter> {
        &self.writer
    }

    /// Receipts waiting for a commit right now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Appends `items` (in order) and resolves once they are durable.
    pub async fn append(&self, items: Vec<NewReceipt>) -> Result<Vec<Receipt>, LedgerError> {
        let n = items.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if let Some(levels) = (items.iter())
            .map(|i| nesting(&i.draft.metadata))
            .find(|&l| l > MAX_METADATA_NESTING)
        {
            return Err(LedgerError::Rejected(format!(
                "its metadata nests {levels} levels of objects and arrays; at most {MAX_METADATA_NESTING} are stored"
            )));
        }
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(LedgerError::Busy);
        }
        let (tx, rx) = oneshot::channel();
        let sent = self.writer.try_tell(Enqueue(Pending {
            items,
            reply: Reply { tx, claim: None },
            enqueued: Instant::now(),
            checked: false,
        }));
        let outcome = match sent {
            Ok(()) => rx.await.unwrap_or_else(|_| {
                Err(LedgerError::Unavailable(
                    "the receipt writer stopped before committing; nothing was written".into(),
                ))
            }),
            Err(e) => Err(LedgerError::Unavailable(format!(
                "the receipt writer is down ({e})"
            ))),
        };
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.writes.record(&outcome);
        outcome
    }

    /// Appends one receipt.
    pub async fn append_one(&self, item: NewReceipt) -> Result<Receipt, LedgerError> {
        let mut v = self.append(vec![item]).await?;
        v.pop()
            .ok_or_else(|| LedgerError::Unavailable("no receipt returned".into()))
    }
}
