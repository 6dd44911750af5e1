//! The dynamic supervisor (OTP's `simple_one_for_one`): children of one spec, started, looked up
//! and terminated by key at run time, spread over several arbiters.
//!
//! Owns the keyed registry (sharded, read without going through the supervisor's mailbox, so
//! callers on many threads find children concurrently), per-child restart with backoff, the
//! supervisor-wide intensity window, and parallel shutdown of all children.
//!
//! Invariant: the supervisor actor is the only writer of the registry; at most one incarnation
//! per key runs at a time.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::child::{spawn_incarnation, spawn_local, ChildRef, ChildState, Incarnation};
use crate::event::{emit, EventSink, SupervisorEvent};
use crate::intensity::RestartWindow;
use crate::snapshot::{ChildCounts, ChildInfo, NodeSnapshot, TreeSnapshot};
use crate::spec::{ChildKind, ChildSpec, Inspector, Restart, Shutdown, StartEnv, DEFAULT_MAILBOX};
use crate::supervisor::{CountChildren, Snapshot, Stop, WhichChildren};
use crate::{exit, Backoff, CallError, ExitReason, Intensity};

/// Keys of a dynamic supervisor.
pub trait Key: Hash + Eq + Clone + Display + Send + Sync + 'static {}
impl<T: Hash + Eq + Clone + Display + Send + Sync + 'static> Key for T {}

const SHARDS: usize = 32;

/// The keyed table of live children, shared by the supervisor (the only writer) and every
/// [`DynamicRef`] (readers).
pub(crate) struct Registry<K, A: Actor> {
    shards: Vec<RwLock<HashMap<K, ChildRef<A>>>>,
    hasher: std::hash::RandomState,
}

impl<K: Key, A: Actor> Registry<K, A> {
    fn new() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> &RwLock<HashMap<K, ChildRef<A>>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn get(&self, key: &K) -> Option<ChildRef<A>> {
        self.shard(key)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn insert(&self, key: K, child: ChildRef<A>) {
        self.shard(&key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, child);
    }

    fn remove(&self, key: &K) -> Option<ChildRef<A>> {
        self.shard(key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    fn drain(&self) -> Vec<(K, ChildRef<A>)> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.write()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn for_each(&self, mut f: impl FnMut(&K, &ChildRef<A>)) {
        for s in &self.shards {
            for (k, v) in s.read().unwrap_or_else(|e| e.into_inner()).iter() {
                f(k, v);
            }
        }
    }

    fn collect(&self, limit: usize) -> Vec<(K, ChildRef<A>)> {
        let mut out = Vec::new();
        for s in &self.shards {
            for (k, v) in s.read().unwrap_or_else(|e| e.into_inner()).iter() {
                if out.len() >= limit {
                    return out;
                }
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }
}

type Factory<K, A> = Box<dyn FnMut(&K) -> Result<A, String>>;

/// A dynamic supervisor of actors of type `A` keyed by `K`.
///
/// ```
/// use actix::prelude::*;
/// use supervisors::{DynamicSupervisor, Restart};
///
/// struct Governor { tenant: String }
/// impl Actor for Governor { type Context = Context<Self>; }
///
/// #[actix::main]
/// async fn main() {
///     let governors = DynamicSupervisor::new("governance", |tenant: &String| Ok::<_, String>(Governor { tenant: tenant.clone() }))
///         .restart(Restart::Transient)
///         .start();
///     let child = governors.get_or_start("acme".to_owned()).await.unwrap();
///     assert!(governors.get(&"acme".to_owned()).is_some());
///     let _ = child;
/// }
/// ```
pub struct DynamicSupervisor<K: Key, A: Actor<Context = Context<A>> + Send> {
    name: Arc<str>,
    intensity: Intensity,
    restart: Restart,
    shutdown: Shutdown,
    backoff: Option<Backoff>,
    mailbox: usize,
    arbiters: Vec<ArbiterHandle>,
    factory: Factory<K, A>,
    registry: Arc<Registry<K, A>>,
    window: RestartWindow,
    sink: Option<EventSink>,
    stopping: bool,
    /// The address every child's exit notice reaches this supervisor by: one, shared by the
    /// children (each holds it strongly, as each held an address of its own before, so the
    /// supervisor's mailbox stays open while a child runs); a clone per child cost two small
    /// shared allocations of actix's.
    exit_addr: std::sync::Weak<Addr<Self>>,
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> DynamicSupervisor<K, A> {
    /// A dynamic supervisor whose children are built by `factory(key)` on every (re)start;
    /// children are `permanent` with a 5 s shutdown unless set otherwise, intensity 1 in 5 s.
    pub fn new<F, E>(name: impl AsRef<str>, mut factory: F) -> Self
    where
        F: FnMut(&K) -> Result<A, E> + 'static,
        E: Display,
    {
        DynamicSupervisor {
            name: Arc::from(name.as_ref()),
            intensity: Intensity::default(),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(std::time::Duration::from_secs(5)),
            backoff: None,
            mailbox: DEFAULT_MAILBOX,
            arbiters: Vec::new(),
            factory: Box::new(move |k| factory(k).map_err(|e| e.to_string())),
            registry: Arc::new(Registry::new()),
            window: RestartWindow::default(),
            sink: None,
            stopping: false,
            exit_addr: std::sync::Weak::new(),
        }
    }

    /// Sets the restart intensity of the whole supervisor.
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Sets the children's restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the children's shutdown.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Delays restarts with exponential backoff and jitter.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Sets the children's mailbox capacity.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Spreads children over `arbiters` by hash of their key (default: the supervisor's arbiter).
    pub fn arbiters(mut self, arbiters: Vec<ArbiterHandle>) -> Self {
        self.arbiters = arbiters;
        self
    }

    /// Subscribes `sink` to this supervisor's events.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Starts it on the current arbiter as a top-level supervisor.
    pub fn start(self) -> DynamicRef<K, A> {
        let registry = self.registry.clone();
        let handle = ChildRef::new();
        let inc = spawn_local(self, &handle, 1024, false, Box::new(|_, _| {}));
        DynamicRef {
            handle,
            registry,
            top: Some(inc),
        }
    }

    fn arbiter_for(&self, key: &K) -> Option<ArbiterHandle> {
        if self.arbiters.is_empty() {
            return None;
        }
        let h = self.registry.hasher.hash_one(key) as usize;
        Some(self.arbiters[(h / SHARDS) % self.arbiters.len()].clone())
    }

    fn spawn(
        &mut self,
        key: &K,
        handle: &ChildRef<A>,
        restarted: bool,
        ctx: &mut Context<Self>,
    ) -> Result<(), String> {
        let actor = match (self.factory)(key) {
            Ok(a) => a,
            Err(error) => {
                emit(
                    &self.sink,
                    SupervisorEvent::ChildStartFailed {
                        supervisor: self.name.clone(),
                        child: key.to_string(),
                        error: error.clone(),
                    },
                );
                return Err(error);
            }
        };
        let addr = match self.exit_addr.upgrade() {
            Some(a) => a,
            None => {
                let a = Arc::new(ctx.address());
                self.exit_addr = Arc::downgrade(&a);
                a
            }
        };
        let k = key.clone();
        let on_exit = Box::new(move |inc_id, reason| {
            addr.do_send(DynExited {
                key: k,
                inc_id,
                reason,
            })
        });
        let arbiter = self.arbiter_for(key);
        // The handle keeps the new incarnation (installed before the actor runs).
        spawn_incarnation(
            actor,
            handle,
            arbiter.as_ref(),
            self.mailbox,
            restarted,
            on_exit,
        );
        let restarts = {
            let mut g = handle.write();
            g.started_at = Some(Instant::now());
            g.restarts
        };
        emit(
            &self.sink,
            SupervisorEvent::ChildStarted {
                supervisor: self.name.clone(),
                child: key.to_string(),
            },
        );
        if restarted {
            emit(
                &self.sink,
                SupervisorEvent::ChildRestarted {
                    supervisor: self.name.clone(),
                    child: key.to_string(),
                    restarts,
                },
            );
        }
        Ok(())
    }

    fn count_restart(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.window.add(self.intensity, Instant::now()) {
            return true;
        }
        tracing::error!(supervisor = %self.name, "reached max restart intensity, shutting down");
        emit(
            &self.sink,
            SupervisorEvent::IntensityExceeded {
                supervisor: self.name.clone(),
                max_restarts: self.intensity.max_restarts,
                period_ms: self.intensity.period.as_millis() as u64,
            },
        );
        self.terminate_all(ctx, ExitReason::reached_max_restart_intensity());
        false
    }

    fn schedule_restart(&mut self, key: K, handle: &ChildRef<A>, ctx: &mut Context<Self>) {
        handle.set_state(ChildState::Restarting);
        let delay = self.backoff.map(|b| {
            let mut g = handle.write();
            if g.started_at.is_some_and(|t| t.elapsed() >= b.reset_after) {
                g.attempt = 0;
            }
            let d = b.jittered(g.attempt);
            g.attempt = g.attempt.saturating_add(1);
            d
        });
        match delay {
            Some(d) if !d.is_zero() => {
                ctx.run_later(d, move |act, ctx| act.restart_key(key, ctx));
            }
            _ => self.restart_key(key, ctx),
        }
    }

    fn restart_key(&mut self, key: K, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let Some(handle) = self.registry.get(&key) else {
            return;
        };
        if handle.write().inc.is_some() {
            return;
        }
        if self.spawn(&key, &handle, true, ctx).is_err() && self.count_restart(ctx) {
            self.schedule_restart(key, &handle, ctx);
        }
    }

    /// Stops every child in parallel (OTP: dynamic children stop in no particular order), then
    /// exits with `reason`.
    fn terminate_all(&mut self, ctx: &mut Context<Self>, reason: ExitReason) {
        self.stopping = true;
        let children = self.registry.drain();
        let shutdown = self.shutdown;
        let mut incs: Vec<Arc<Incarnation>> = Vec::with_capacity(children.len());
        for (_, h) in &children {
            if let Some(inc) = h.write().inc.take() {
                match shutdown {
                    Shutdown::BrutalKill => inc.kill(),
                    _ => inc.shutdown(),
                }
                incs.push(inc);
            }
        }
        let deadline = match shutdown {
            Shutdown::Timeout(d) => Some(actix::clock::Instant::now() + d),
            _ => None,
        };
        let work = async move {
            for inc in incs {
                if let Some(deadline) = deadline {
                    let left = deadline.saturating_duration_since(actix::clock::Instant::now());
                    if actix::clock::timeout(left, inc.exited()).await.is_ok() {
                        continue;
                    }
                    inc.kill();
                }
                inc.exited().await;
            }
        };
        ctx.wait(wrap_future::<_, Self>(work).map(move |_, act, ctx| {
            for (key, h) in children {
                h.set_state(ChildState::Stopped);
                emit(
                    &act.sink,
                    SupervisorEvent::ChildExited {
                        supervisor: act.name.clone(),
                        child: key.to_string(),
                        reason: h.last_exit().unwrap_or(ExitReason::Shutdown(None)),
                    },
                );
            }
            exit::<Self>(ctx, reason);
        }));
    }

    fn counts(&self) -> ChildCounts {
        let n = self.registry.len();
        let active = self
            .registry
            .shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .filter(|c| c.state() == ChildState::Running)
                    .count()
            })
            .sum();
        ChildCounts {
            specs: n,
            active,
            supervisors: 0,
            workers: n,
        }
    }

    fn infos(&self, limit: usize) -> Vec<ChildInfo> {
        self.registry
            .collect(limit)
            .into_iter()
            .map(|(k, c)| ChildInfo {
                id: k.to_string(),
                kind: ChildKind::Worker,
                state: c.state(),
                restarts: c.restarts(),
                last_exit: c.last_exit(),
            })
            .collect()
    }
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Drop for DynamicSupervisor<K, A> {
    fn drop(&mut self) {
        // Children never outlive their supervisor, even when it was killed.
        for (_, h) in self.registry.drain() {
            if let Some(inc) = h.write().inc.take() {
                inc.kill();
            }
            h.set_state(ChildState::Stopped);
        }
    }
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Actor for DynamicSupervisor<K, A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        if self.stopping || crate::being_dropped() {
            return Running::Stop;
        }
        self.terminate_all(ctx, ExitReason::Shutdown(None));
        Running::Continue
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct DynExited<K> {
    key: K,
    inc_id: u64,
    reason: ExitReason,
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Handler<DynExited<K>>
    for DynamicSupervisor<K, A>
{
    type Result = ();
    fn handle(&mut self, msg: DynExited<K>, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let Some(handle) = self.registry.get(&msg.key) else {
            return;
        };
        {
            let mut g = handle.write();
            if g.inc.as_ref().is_none_or(|i| i.id != msg.inc_id) {
                return;
            }
            g.inc = None;
        }
        emit(
            &self.sink,
            SupervisorEvent::ChildExited {
                supervisor: self.name.clone(),
                child: msg.key.to_string(),
                reason: msg.reason.clone(),
            },
        );
        if msg.reason.is_abnormal() {
            tracing::warn!(supervisor = %self.name, child = %msg.key, reason = %msg.reason, "child terminated");
        }
        if !self.restart.restarts_after(&msg.reason) {
            self.registry.remove(&msg.key);
            handle.set_state(ChildState::Stopped);
            return;
        }
        if self.count_restart(ctx) {
            self.schedule_restart(msg.key, &handle, ctx);
        }
    }
}

/// Why a dynamic child could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The factory failed (OTP `start_error`).
    Failed(String),
    /// The supervisor itself is down, restarting or shutting down.
    Unavailable(CallError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Failed(e) => write!(f, "child failed to start: {e}"),
            StartError::Unavailable(e) => write!(f, "supervisor unavailable: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

struct StartChild<K, A: Actor>(K, std::marker::PhantomData<A>);

impl<K: 'static, A: Actor> Message for StartChild<K, A> {
    type Result = Result<ChildRef<A>, StartError>;
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Handler<StartChild<K, A>>
    for DynamicSupervisor<K, A>
{
    type Result = Result<ChildRef<A>, StartError>;
    fn handle(&mut self, msg: StartChild<K, A>, ctx: &mut Context<Self>) -> Self::Result {
        if self.stopping {
            return Err(StartError::Unavailable(CallError::Stopped));
        }
        if let Some(existing) = self.registry.get(&msg.0) {
            let ended = existing
                .ended_in_order()
                .then(|| existing.last_exit())
                .flatten();
            match ended {
                Some(reason) if !self.restart.restarts_after(&reason) => {
                    // It stopped in order and its exit report is still on its way here: that
                    // report is settled now (and then ignored), and a fresh child takes the key.
                    existing.write().inc = None;
                    existing.set_state(ChildState::Stopped);
                    emit(
                        &self.sink,
                        SupervisorEvent::ChildExited {
                            supervisor: self.name.clone(),
                            child: msg.0.to_string(),
                            reason,
                        },
                    );
                }
                _ => return Ok(existing),
            }
        }
        let handle = ChildRef::new();
        self.spawn(&msg.0, &handle, false, ctx)
            .map_err(StartError::Failed)?;
        self.registry.insert(msg.0, handle.clone());
        Ok(handle)
    }
}

#[derive(Message)]
#[rtype(result = "bool")]
struct TerminateKey<K>(K);

impl<K: Key, A: Actor<Context = Context<A>> + Send> Handler<TerminateKey<K>>
    for DynamicSupervisor<K, A>
{
    type Result = ResponseActFuture<Self, bool>;
    fn handle(&mut self, msg: TerminateKey<K>, ctx: &mut Context<Self>) -> Self::Result {
        let Some(handle) = self.registry.remove(&msg.0) else {
            return Box::pin(actix::fut::ready(false));
        };
        let inc = handle.write().inc.take();
        let shutdown = self.shutdown;
        let work = async move {
            match inc {
                Some(inc) => Some(crate::spec::terminate(inc, shutdown).await),
                None => None,
            }
        };
        // Wait (mailbox paused) so no new incarnation of this key can start before the old ends.
        ctx.wait(wrap_future::<_, Self>(work).map(move |reason, act, _| {
            handle.set_state(ChildState::Stopped);
            if let Some(reason) = reason {
                emit(
                    &act.sink,
                    SupervisorEvent::ChildExited {
                        supervisor: act.name.clone(),
                        child: msg.0.to_string(),
                        reason,
                    },
                );
            }
        }));
        Box::pin(actix::fut::ready(true))
    }
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Handler<WhichChildren>
    for DynamicSupervisor<K, A>
{
    type Result = MessageResult<WhichChildren>;
    fn handle(&mut self, _: WhichChildren, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.infos(usize::MAX))
    }
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Handler<CountChildren>
    for DynamicSupervisor<K, A>
{
    type Result = MessageResult<CountChildren>;
    fn handle(&mut self, _: CountChildren, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counts())
    }
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Handler<Snapshot> for DynamicSupervisor<K, A> {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, msg: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let counts = self.counts();
        let children: Vec<NodeSnapshot> = self
            .infos(msg.limit)
            .into_iter()
            .map(|info| NodeSnapshot {
                info,
                subtree: None,
            })
            .collect();
        MessageResult(TreeSnapshot {
            name: self.name.to_string(),
            strategy: "simple_one_for_one",
            intensity: self.intensity,
            truncated: children.len() < counts.specs,
            counts,
            children,
        })
    }
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Handler<Stop> for DynamicSupervisor<K, A> {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if !self.stopping {
            self.terminate_all(ctx, ExitReason::Shutdown(None));
        }
    }
}

/// A handle to a dynamic supervisor: look children up (no message to the supervisor), start,
/// terminate and inspect them.
pub struct DynamicRef<K: Key, A: Actor<Context = Context<A>> + Send> {
    handle: ChildRef<DynamicSupervisor<K, A>>,
    registry: Arc<Registry<K, A>>,
    top: Option<Arc<Incarnation>>,
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> Clone for DynamicRef<K, A> {
    fn clone(&self) -> Self {
        DynamicRef {
            handle: self.handle.clone(),
            registry: self.registry.clone(),
            top: self.top.clone(),
        }
    }
}

impl<K: Key, A: Actor<Context = Context<A>> + Send> DynamicRef<K, A> {
    /// The child under `key`, if one is known (running or restarting). Never blocks on the
    /// supervisor.
    pub fn get(&self, key: &K) -> Option<ChildRef<A>> {
        self.registry.get(key)
    }

    /// Starts a child under `key`; if one exists already, returns it (OTP's `already_started`),
    /// unless it has just stopped in order and its restart policy does not bring it back: then
    /// a fresh child replaces it.
    pub async fn start_child(&self, key: K) -> Result<ChildRef<A>, StartError> {
        match self
            .handle
            .send(StartChild(key, std::marker::PhantomData))
            .await
        {
            Ok(r) => r,
            Err(e) => Err(StartError::Unavailable(e)),
        }
    }

    /// The child under `key`, started on demand. A child that has just stopped in order (a
    /// normal exit or a shutdown) and that its restart policy does not bring back is replaced
    /// by a fresh one at once, even before the supervisor has read its exit report; one that
    /// crashed is returned as it is (restarting).
    pub async fn get_or_start(&self, key: K) -> Result<ChildRef<A>, StartError> {
        match self.registry.get(&key) {
            Some(c) if !c.ended_in_order() => Ok(c),
            _ => self.start_child(key).await,
        }
    }

    /// Stops the child under `key` (honouring the shutdown) and forgets it.
    pub async fn terminate_child(&self, key: K) -> Result<bool, CallError> {
        self.handle.send(TerminateKey(key)).await
    }

    /// A monitor on the supervisor's running incarnation (see [`ChildRef::monitor`]); each
    /// child has its own, from the handle [`DynamicRef::get`] gives.
    pub fn monitor(&self) -> crate::Monitor {
        self.handle.monitor()
    }

    /// Number of known children.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// `true` when there are no children.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every known key and handle, one registry shard at a time (each shard is
    /// read-locked while `f` runs on its entries, so `f` must not start or stop children; a
    /// `try_tell` is fine). Nothing is collected, whatever the number of children.
    pub fn for_each(&self, f: impl FnMut(&K, &ChildRef<A>)) {
        self.registry.for_each(f)
    }

    /// Up to `limit` keys with their handles, in no particular order.
    pub fn list(&self, limit: usize) -> Vec<(K, ChildRef<A>)> {
        self.registry.collect(limit)
    }

    /// OTP `which_children`.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, CallError> {
        self.handle.send(WhichChildren).await
    }

    /// OTP `count_children`.
    pub async fn count_children(&self) -> Result<ChildCounts, CallError> {
        self.handle.send(CountChildren).await
    }

    /// A snapshot listing at most `limit` children.
    pub async fn snapshot(&self, limit: usize) -> Result<TreeSnapshot, CallError> {
        self.handle.send(Snapshot { limit }).await
    }

    /// The supervisor's own run-time state.
    pub fn state(&self) -> ChildState {
        self.handle.state()
    }

    /// Stops all children and the supervisor; resolves when a top-level one has exited.
    pub async fn shutdown(&self) -> Option<ExitReason> {
        let _ = self.handle.send(Stop).await;
        match &self.top {
            Some(inc) => Some(inc.exited().await),
            None => None,
        }
    }
}

impl ChildSpec {
    /// A nested dynamic supervisor (kind `supervisor`, `permanent`, shutdown `infinity`). The
    /// returned handle stays valid across its restarts; each restart begins with no children.
    pub fn dynamic<K, A, F>(id: impl Into<String>, mut factory: F) -> (ChildSpec, DynamicRef<K, A>)
    where
        K: Key,
        A: Actor<Context = Context<A>> + Send,
        F: FnMut() -> DynamicSupervisor<K, A> + 'static,
    {
        let handle = ChildRef::<DynamicSupervisor<K, A>>::new();
        let registry: Arc<Registry<K, A>> = Arc::new(Registry::new());
        let (h, reg) = (handle.clone(), registry.clone());
        let start = Box::new(
            move |env: StartEnv, _arbiter: Option<&ArbiterHandle>, _mailbox: usize| {
                let mut sup = factory();
                if sup.sink.is_none() {
                    sup.sink = env.sink;
                }
                sup.registry = reg.clone();
                Ok(spawn_local(sup, &h, 4096, env.restarted, env.on_exit))
            },
        );
        let ih = handle.clone();
        let inspect: Inspector = Arc::new(move |limit| {
            let call = ih.send(Snapshot { limit });
            Box::pin(async move { call.await.ok() })
        });
        let spec = ChildSpec::supervisor_spec(id.into(), start, Box::new(handle.clone()), inspect);
        (
            spec,
            DynamicRef {
                handle,
                registry,
                top: None,
            },
        )
    }
}
