//! The static supervisor: an ordered list of child specs under one strategy and one intensity.
//!
//! Owns start order, restart decisions (restart type × strategy), the restart-intensity window,
//! escalation to the parent, auto shutdown on significant children, and ordered shutdown. The decisions run inside one actix actor; every
//! wait on a child (shutdown timeouts) is asynchronous, so a restart storm never blocks a thread.
//!
//! Invariant: children start in spec order and stop in reverse spec order, one at a time.

use std::sync::Arc;
use std::time::Instant;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::child::{spawn_local, ChildRef, ChildState, Incarnation};
use crate::event::{emit, EventSink, SupervisorEvent};
use crate::intensity::RestartWindow;
use crate::snapshot::{ChildCounts, ChildInfo, NodeSnapshot, TreeSnapshot};
use crate::spec::{terminate, ChildKind, ChildSpec, Inspector, Restart, Shutdown, StartEnv};
use crate::{exit, CallError, ExitReason, Intensity};

/// Which children are restarted when one exits and is to be restarted.
///
/// | Strategy     | restarted                                                     |
/// |--------------|---------------------------------------------------------------|
/// | `OneForOne`  | only the child that exited                                    |
/// | `OneForAll`  | every child: the others are stopped (reverse order) first     |
/// | `RestForOne` | the child and every child started after it                    |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only the exited child.
    OneForOne,
    /// Stop all other children, then restart all.
    OneForAll,
    /// Stop the children after the exited one, then restart it and them.
    RestForOne,
}

impl Strategy {
    /// OTP's spelling: `one_for_one`, `one_for_all`, `rest_for_one`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}

/// OTP 24's `auto_shutdown`: whether a supervisor ends by itself (reason `shutdown`, its
/// other children stopped in reverse order) once [significant](ChildSpec::significant)
/// children have ended on their own. Ends the supervisor caused (a sibling's restart under
/// `one_for_all` or `rest_for_one`, `terminate_child`, shutdown) do not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoShutdown {
    /// Never (OTP's default); no child may be significant.
    #[default]
    Never,
    /// When any significant child has ended.
    AnySignificant,
    /// When every significant child has ended.
    AllSignificant,
}

struct Record {
    spec: ChildSpec,
    inc: Option<Arc<Incarnation>>,
    state: ChildState,
    restarts: u32,
    last_exit: Option<ExitReason>,
    /// Consecutive restarts, for the backoff delay.
    attempt: u32,
    started_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Busy stopping children for a strategy or escalation; exits arriving now are expected.
    Terminating,
    /// Every child is stopped; the next `stopping` may let the actor go.
    Done,
}

/// A static supervisor, built with a name, a strategy, an intensity and its children, then
/// started with [`Supervisor::start`] (top level) or [`ChildSpec::supervisor`] (nested).
///
/// ```
/// use actix::prelude::*;
/// use supervisors::{ChildSpec, Intensity, Strategy, Supervisor};
/// use std::time::Duration;
///
/// struct Cache;
/// impl Actor for Cache { type Context = Context<Self>; }
///
/// #[actix::main]
/// async fn main() {
///     let (cache, cache_ref) = ChildSpec::worker("cache", || Cache);
///     let (inner, _inner_ref) = ChildSpec::supervisor("inner", || Supervisor::new("inner"));
///     let root = Supervisor::new("root")
///         .strategy(Strategy::RestForOne)
///         .intensity(Intensity::new(5, Duration::from_secs(60)))
///         .child(cache)
///         .child(inner)
///         .start()
///         .await;
///     assert_eq!(root.count_children().await.unwrap().active, 2);
///     let _ = cache_ref;
///     root.shutdown().await;
/// }
/// ```
pub struct Supervisor {
    name: Arc<str>,
    strategy: Strategy,
    intensity: Intensity,
    children: Vec<Record>,
    window: RestartWindow,
    sink: Option<EventSink>,
    phase: Phase,
    auto_shutdown: AutoShutdown,
}

impl Supervisor {
    /// A `one_for_one` supervisor with OTP's default intensity (1 restart in 5 s) and no children.
    pub fn new(name: impl AsRef<str>) -> Self {
        Supervisor {
            name: Arc::from(name.as_ref()),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            children: Vec::new(),
            window: RestartWindow::default(),
            sink: None,
            phase: Phase::Running,
            auto_shutdown: AutoShutdown::Never,
        }
    }

    /// Sets OTP's `auto_shutdown` (default [`AutoShutdown::Never`]).
    pub fn auto_shutdown(mut self, auto_shutdown: AutoShutdown) -> Self {
        self.auto_shutdown = auto_shutdown;
        self
    }

    /// Sets the restart strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Appends a child; children start in the order they are added.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(Record {
            spec,
            inc: None,
            state: ChildState::Stopped,
            restarts: 0,
            last_exit: None,
            attempt: 0,
            started_at: None,
        });
        self
    }

    /// Subscribes `sink` to this supervisor's events and, unless they have their own, to those of
    /// the supervisors below it.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Starts the supervisor on the current arbiter as a top-level tree and resolves once its
    /// children have been started, in order (like OTP's `start_link`, which returns after
    /// `init`). A panic inside the supervisor itself is contained like any child's; if a child
    /// fails to start, the returned handle's [`SupervisorRef::join`] says why.
    pub async fn start(self) -> SupervisorRef {
        let handle = ChildRef::new();
        let inc = spawn_local(self, &handle, 64, false, Box::new(|_, _| {}));
        // The first message is handled only after `started` has started every child.
        let _ = handle.send(CountChildren).await;
        SupervisorRef {
            handle,
            top: Some(inc),
        }
    }

    fn position(&self, inc_id: u64) -> Option<usize> {
        self.children
            .iter()
            .position(|r| r.inc.as_ref().is_some_and(|i| i.id == inc_id))
    }

    /// Starts child `idx`; returns the start error if its factory failed.
    fn start_child(
        &mut self,
        idx: usize,
        restarted: bool,
        ctx: &mut Context<Self>,
    ) -> Result<(), String> {
        let addr = ctx.address();
        let sink = self.sink.clone();
        let rec = &mut self.children[idx];
        let env = StartEnv {
            restarted,
            on_exit: Box::new(move |inc_id, reason| addr.do_send(ChildExited { inc_id, reason })),
            sink,
        };
        let arbiter = rec.spec.arbiter.clone();
        let mailbox = rec.spec.mailbox;
        match (rec.spec.start)(env, arbiter.as_ref(), mailbox) {
            Ok(inc) => {
                rec.inc = Some(inc);
                rec.state = ChildState::Running;
                rec.started_at = Some(Instant::now());
                if restarted {
                    rec.restarts += 1;
                }
                let child = rec.spec.id.clone();
                let restarts = rec.restarts;
                emit(
                    &self.sink,
                    SupervisorEvent::ChildStarted {
                        supervisor: self.name.clone(),
                        child: child.clone(),
                    },
                );
                if restarted {
                    emit(
                        &self.sink,
                        SupervisorEvent::ChildRestarted {
                            supervisor: self.name.clone(),
                            child,
                            restarts,
                        },
                    );
                }
                Ok(())
            }
            Err(error) => {
                rec.state = if restarted {
                    ChildState::Restarting
                } else {
                    ChildState::Stopped
                };
                rec.spec.handle.set_state(rec.state);
                emit(
                    &self.sink,
                    SupervisorEvent::ChildStartFailed {
                        supervisor: self.name.clone(),
                        child: rec.spec.id.clone(),
                        error: error.clone(),
                    },
                );
                Err(error)
            }
        }
    }

    /// Stops the running children among `indices`, one at a time in the given order, then runs
    /// `then`. The mailbox waits meanwhile, as an OTP supervisor is busy while it terminates.
    fn terminate_then<F>(&mut self, indices: Vec<usize>, ctx: &mut Context<Self>, then: F)
    where
        F: FnOnce(&mut Self, &mut Context<Self>) + 'static,
    {
        let mut jobs = Vec::new();
        for idx in indices {
            let rec = &mut self.children[idx];
            if let Some(inc) = rec.inc.take() {
                jobs.push((idx, inc, rec.spec.shutdown));
            }
        }
        let prev = self.phase;
        self.phase = Phase::Terminating;
        let work = async move {
            let mut ended = Vec::with_capacity(jobs.len());
            for (idx, inc, shutdown) in jobs {
                ended.push((idx, terminate(inc, shutdown).await));
            }
            ended
        };
        ctx.wait(wrap_future::<_, Self>(work).map(move |ended, act, ctx| {
            for (idx, reason) in ended {
                let rec = &mut act.children[idx];
                rec.last_exit = Some(reason.clone());
                rec.state = ChildState::Stopped;
                rec.spec.handle.set_state(ChildState::Stopped);
                emit(
                    &act.sink,
                    SupervisorEvent::ChildExited {
                        supervisor: act.name.clone(),
                        child: rec.spec.id.clone(),
                        reason,
                    },
                );
            }
            if act.phase == Phase::Terminating {
                act.phase = prev;
            }
            then(act, ctx);
        }));
    }

    fn running_in_reverse(&self) -> Vec<usize> {
        (0..self.children.len())
            .rev()
            .filter(|&i| self.children[i].inc.is_some())
            .collect()
    }

    /// Intensity exceeded: stop everything in reverse order and exit `shutdown(reached_max_restart_intensity)`.
    fn escalate(&mut self, ctx: &mut Context<Self>) {
        tracing::error!(supervisor = %self.name, max_restarts = self.intensity.max_restarts, period_ms = self.intensity.period.as_millis() as u64, "reached max restart intensity, shutting down");
        emit(
            &self.sink,
            SupervisorEvent::IntensityExceeded {
                supervisor: self.name.clone(),
                max_restarts: self.intensity.max_restarts,
                period_ms: self.intensity.period.as_millis() as u64,
            },
        );
        let order = self.running_in_reverse();
        self.terminate_then(order, ctx, |act, ctx| {
            act.finish();
            exit::<Self>(ctx, ExitReason::reached_max_restart_intensity());
        });
    }

    /// Counts one restart; escalates and returns `false` if that exceeds the intensity.
    fn count_restart(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.window.add(self.intensity, Instant::now()) {
            true
        } else {
            self.escalate(ctx);
            false
        }
    }

    /// Restarts the stopped children among `group` (in start order) after the backoff delay of
    /// child `lead`, the one whose exit caused the restart.
    fn schedule_restart(&mut self, mut group: Vec<usize>, lead: usize, ctx: &mut Context<Self>) {
        group.sort_unstable();
        for &i in &group {
            if self.children[i].inc.is_none() {
                self.children[i].state = ChildState::Restarting;
                self.children[i]
                    .spec
                    .handle
                    .set_state(ChildState::Restarting);
            }
        }
        let rec = &mut self.children[lead];
        let delay = rec.spec.backoff.map(|b| {
            if rec.started_at.is_some_and(|t| t.elapsed() >= b.reset_after) {
                rec.attempt = 0;
            }
            let d = b.jittered(rec.attempt);
            rec.attempt = rec.attempt.saturating_add(1);
            d
        });
        match delay {
            Some(d) if !d.is_zero() => {
                ctx.run_later(d, move |act, ctx| act.restart_group(group, ctx));
            }
            _ => self.restart_group(group, ctx),
        }
    }

    fn restart_group(&mut self, group: Vec<usize>, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running {
            return;
        }
        for (pos, &idx) in group.iter().enumerate() {
            let rec = &self.children[idx];
            if rec.inc.is_some() || rec.state == ChildState::Stopped {
                continue;
            }
            if self.start_child(idx, true, ctx).is_err() {
                // OTP's try_again_restart: every retry is another restart, so a child whose
                // start keeps failing exhausts the intensity instead of looping.
                if self.count_restart(ctx) {
                    let rest = group[pos..].to_vec();
                    self.schedule_restart(rest, idx, ctx);
                }
                return;
            }
        }
    }

    fn on_exit(&mut self, idx: usize, reason: ExitReason, ctx: &mut Context<Self>) {
        let rec = &mut self.children[idx];
        rec.inc = None;
        rec.last_exit = Some(reason.clone());
        emit(
            &self.sink,
            SupervisorEvent::ChildExited {
                supervisor: self.name.clone(),
                child: rec.spec.id.clone(),
                reason: reason.clone(),
            },
        );
        if reason.is_abnormal() {
            tracing::warn!(supervisor = %self.name, child = %rec.spec.id, %reason, "child terminated");
        }
        if !rec.spec.restart.restarts_after(&reason) {
            rec.state = ChildState::Stopped;
            rec.spec.handle.set_state(ChildState::Stopped);
            let significant = rec.spec.significant.then(|| rec.spec.id.clone());
            if rec.spec.restart == Restart::Temporary {
                self.children.remove(idx);
            }
            if let Some(child) = significant.filter(|_| self.significant_ended()) {
                tracing::info!(supervisor = %self.name, %child, auto_shutdown = ?self.auto_shutdown, "significant child ended, shutting down");
                let order = self.running_in_reverse();
                self.terminate_then(order, ctx, |act, ctx| {
                    act.finish();
                    exit::<Self>(ctx, ExitReason::Shutdown(None));
                });
            }
            return;
        }
        rec.state = ChildState::Restarting;
        rec.spec.handle.set_state(ChildState::Restarting);
        if !self.count_restart(ctx) {
            return;
        }
        let n = self.children.len();
        match self.strategy {
            Strategy::OneForOne => self.schedule_restart(vec![idx], idx, ctx),
            Strategy::OneForAll | Strategy::RestForOne => {
                let siblings: Vec<usize> = match self.strategy {
                    Strategy::OneForAll => (0..n).rev().filter(|&i| i != idx).collect(),
                    _ => (idx + 1..n).rev().collect(),
                };
                let id = self.children[idx].spec.id.clone();
                let strategy = self.strategy;
                self.terminate_then(siblings, ctx, move |act, ctx| {
                    act.drop_stopped_temporaries();
                    let Some(lead) = act.children.iter().position(|r| r.spec.id == id) else {
                        return;
                    };
                    let from = if strategy == Strategy::OneForAll {
                        0
                    } else {
                        lead
                    };
                    act.schedule_restart((from..act.children.len()).collect(), lead, ctx);
                });
            }
        }
    }

    /// Whether the end of a significant child (just recorded) ends this supervisor.
    fn significant_ended(&self) -> bool {
        match self.auto_shutdown {
            AutoShutdown::Never => false,
            AutoShutdown::AnySignificant => true,
            // An ended temporary child's record is gone; the others must all be down.
            AutoShutdown::AllSignificant => self
                .children
                .iter()
                .filter(|r| r.spec.significant)
                .all(|r| r.inc.is_none() && r.state == ChildState::Stopped),
        }
    }

    /// OTP's `validSignificant`: why the child specs cannot run under this supervisor.
    fn invalid_significant(&self) -> Option<String> {
        let rec = self.children.iter().find(|r| r.spec.significant)?;
        if self.auto_shutdown == AutoShutdown::Never {
            Some(format!(
                "bad_significant({}: auto_shutdown is never)",
                rec.spec.id
            ))
        } else {
            let permanent = self
                .children
                .iter()
                .find(|r| r.spec.significant && r.spec.restart == Restart::Permanent)?;
            Some(format!(
                "bad_significant({}: a permanent child)",
                permanent.spec.id
            ))
        }
    }

    /// Temporary children stopped by a sibling's failure are never restarted: drop their specs.
    fn drop_stopped_temporaries(&mut self) {
        self.children
            .retain(|r| !(r.spec.restart == Restart::Temporary && r.inc.is_none()));
    }

    /// Every child is down for good: the supervisor is about to exit.
    fn finish(&mut self) {
        self.phase = Phase::Done;
        for rec in &mut self.children {
            rec.state = ChildState::Stopped;
            rec.spec.handle.set_state(ChildState::Stopped);
        }
    }

    fn info(rec: &Record) -> ChildInfo {
        ChildInfo {
            id: rec.spec.id.clone(),
            kind: rec.spec.kind,
            state: rec.state,
            restarts: rec.restarts,
            last_exit: rec.last_exit.clone(),
        }
    }

    fn counts(&self) -> ChildCounts {
        let mut c = ChildCounts {
            specs: self.children.len(),
            ..ChildCounts::default()
        };
        for r in &self.children {
            if r.inc.is_some() {
                c.active += 1;
            }
            match r.spec.kind {
                ChildKind::Worker => c.workers += 1,
                ChildKind::Supervisor => c.supervisors += 1,
            }
        }
        c
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Like an OTP link: children do not outlive their supervisor, even when it was killed.
        for rec in &self.children {
            if let Some(inc) = &rec.inc {
                inc.kill();
            }
            rec.spec.handle.set_state(ChildState::Stopped);
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        if let Some(error) = self.invalid_significant() {
            tracing::error!(supervisor = %self.name, %error, "invalid child specs");
            self.finish();
            exit::<Self>(ctx, ExitReason::Shutdown(Some(error)));
            return;
        }
        for idx in 0..self.children.len() {
            if let Err(error) = self.start_child(idx, false, ctx) {
                let id = self.children[idx].spec.id.clone();
                tracing::error!(supervisor = %self.name, child = %id, %error, "child failed to start");
                let order = self.running_in_reverse();
                self.terminate_then(order, ctx, move |act, ctx| {
                    act.finish();
                    exit::<Self>(
                        ctx,
                        ExitReason::Shutdown(Some(format!("start_error({id}: {error})"))),
                    );
                });
                return;
            }
        }
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        if crate::being_dropped() {
            // No runtime to wait on: kill the children outright (Drop does) and go.
            return Running::Stop;
        }
        match self.phase {
            Phase::Done => Running::Stop,
            Phase::Terminating => Running::Continue,
            Phase::Running => {
                let order = self.running_in_reverse();
                self.terminate_then(order, ctx, |act, ctx| {
                    act.finish();
                    ctx.stop();
                });
                Running::Continue
            }
        }
    }
}

/// Internal: an incarnation of one of this supervisor's children ended.
#[derive(Message)]
#[rtype(result = "()")]
struct ChildExited {
    inc_id: u64,
    reason: ExitReason,
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        // Exits of incarnations we stopped ourselves were handled where we stopped them.
        if let Some(idx) = self.position(msg.inc_id) {
            if self.phase == Phase::Running {
                self.on_exit(idx, msg.reason, ctx);
            }
        }
    }
}

/// Lists the children (OTP `which_children`).
#[derive(Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct WhichChildren;

impl Handler<WhichChildren> for Supervisor {
    type Result = MessageResult<WhichChildren>;
    fn handle(&mut self, _: WhichChildren, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.children.iter().map(Self::info).collect())
    }
}

/// Counts the children (OTP `count_children`).
#[derive(Message)]
#[rtype(result = "ChildCounts")]
pub struct CountChildren;

impl Handler<CountChildren> for Supervisor {
    type Result = MessageResult<CountChildren>;
    fn handle(&mut self, _: CountChildren, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counts())
    }
}

/// Asks for a snapshot of the whole tree below a supervisor; dynamic supervisors list at most
/// `limit` children each.
#[derive(Message)]
#[rtype(result = "TreeSnapshot")]
pub struct Snapshot {
    /// Most children listed per dynamic supervisor.
    pub limit: usize,
}

impl Handler<Snapshot> for Supervisor {
    type Result = ResponseFuture<TreeSnapshot>;
    fn handle(&mut self, msg: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let rows: Vec<(ChildInfo, Option<Inspector>)> = self
            .children
            .iter()
            .map(|r| {
                (
                    Self::info(r),
                    if r.inc.is_some() {
                        r.spec.inspect.clone()
                    } else {
                        None
                    },
                )
            })
            .collect();
        let head = (
            self.name.to_string(),
            self.strategy.as_str(),
            self.intensity,
            self.counts(),
        );
        let limit = msg.limit;
        Box::pin(async move {
            let mut children = Vec::with_capacity(rows.len());
            for (info, inspect) in rows {
                let subtree = match inspect {
                    Some(f) => f(limit).await,
                    None => None,
                };
                children.push(NodeSnapshot { info, subtree });
            }
            TreeSnapshot {
                name: head.0,
                strategy: head.1,
                intensity: head.2,
                counts: head.3,
                children,
                truncated: false,
            }
        })
    }
}

/// Stops one child by id (OTP `terminate_child`); a `temporary` child's spec is removed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct TerminateChild(pub String);

impl Handler<TerminateChild> for Supervisor {
    type Result = ResponseActFuture<Self, bool>;
    fn handle(&mut self, msg: TerminateChild, ctx: &mut Context<Self>) -> Self::Result {
        let Some(idx) = self.children.iter().position(|r| r.spec.id == msg.0) else {
            return Box::pin(actix::fut::ready(false));
        };
        self.terminate_then(vec![idx], ctx, |act, _| act.drop_stopped_temporaries());
        Box::pin(actix::fut::ready(true))
    }
}

/// Starts a stopped child again by id (OTP `restart_child`).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct RestartChild(pub String);

impl Handler<RestartChild> for Supervisor {
    type Result = Result<(), String>;
    fn handle(&mut self, msg: RestartChild, ctx: &mut Context<Self>) -> Result<(), String> {
        let idx = self
            .children
            .iter()
            .position(|r| r.spec.id == msg.0)
            .ok_or_else(|| format!("no child {}", msg.0))?;
        if self.children[idx].inc.is_some() {
            return Err(format!("child {} is running", msg.0));
        }
        self.start_child(idx, true, ctx)
    }
}

/// Asks the supervisor to stop its children in reverse order and exit `shutdown`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        let order = self.running_in_reverse();
        self.terminate_then(order, ctx, |act, ctx| {
            act.finish();
            exit::<Self>(ctx, ExitReason::Shutdown(None));
        });
    }
}

/// A handle to a running static supervisor.
#[derive(Clone)]
pub struct SupervisorRef {
    pub(crate) handle: ChildRef<Supervisor>,
    /// The incarnation of a top-level supervisor, for [`SupervisorRef::join`].
    top: Option<Arc<Incarnation>>,
}

impl SupervisorRef {
    /// OTP `which_children`.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, CallError> {
        self.handle.send(WhichChildren).await
    }

    /// OTP `count_children`.
    pub async fn count_children(&self) -> Result<ChildCounts, CallError> {
        self.handle.send(CountChildren).await
    }

    /// A snapshot of the whole tree below this supervisor.
    pub async fn snapshot(&self, limit: usize) -> Result<TreeSnapshot, CallError> {
        self.handle.send(Snapshot { limit }).await
    }

    /// OTP `terminate_child`: `Ok(false)` if there is no such child.
    pub async fn terminate_child(&self, id: impl Into<String>) -> Result<bool, CallError> {
        self.handle.send(TerminateChild(id.into())).await
    }

    /// OTP `restart_child` for a stopped child.
    pub async fn restart_child(
        &self,
        id: impl Into<String>,
    ) -> Result<Result<(), String>, CallError> {
        self.handle.send(RestartChild(id.into())).await
    }

    /// The supervisor's own run-time state.
    pub fn state(&self) -> ChildState {
        self.handle.state()
    }

    /// A monitor on the supervisor's running incarnation (see [`ChildRef::monitor`]).
    pub fn monitor(&self) -> crate::Monitor {
        self.handle.monitor()
    }

    /// Stops every child in reverse start order (honouring each shutdown) and then the
    /// supervisor; resolves when it has exited.
    pub async fn shutdown(&self) -> Option<ExitReason> {
        let _ = self.handle.send(Stop).await;
        self.join().await
    }

    /// Waits for a top-level supervisor to exit and returns why (`None` for a nested one).
    pub async fn join(&self) -> Option<ExitReason> {
        match &self.top {
            Some(inc) => Some(inc.exited().await),
            None => None,
        }
    }

    /// Why a top-level supervisor exited, if it has.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.top.as_ref().and_then(|i| i.exit_reason())
    }
}

impl ChildSpec {
    /// A nested supervisor (kind `supervisor`, `permanent`, shutdown `infinity`), built by
    /// `factory` on every (re)start. It inherits the parent's event subscriber unless its own
    /// builder sets one.
    pub fn supervisor<F>(id: impl Into<String>, mut factory: F) -> (ChildSpec, SupervisorRef)
    where
        F: FnMut() -> Supervisor + 'static,
    {
        let handle = ChildRef::<Supervisor>::new();
        let h = handle.clone();
        let start = Box::new(
            move |env: StartEnv, _arbiter: Option<&ArbiterHandle>, mailbox: usize| {
                let mut sup = factory();
                if sup.sink.is_none() {
                    sup.sink = env.sink;
                }
                Ok(spawn_local(
                    sup,
                    &h,
                    mailbox.max(64),
                    env.restarted,
                    env.on_exit,
                ))
            },
        );
        let ih = handle.clone();
        let inspect: Inspector = Arc::new(move |limit| {
            let call = ih.send(Snapshot { limit });
            Box::pin(async move { call.await.ok() })
        });
        let spec = ChildSpec::supervisor_spec(id.into(), start, Box::new(handle.clone()), inspect);
        (spec, SupervisorRef { handle, top: None })
    }
}

impl Shutdown {
    /// OTP's default for a child of `kind`: 5 s for workers, `infinity` for supervisors.
    pub fn default_for(kind: ChildKind) -> Shutdown {
        match kind {
            ChildKind::Worker => Shutdown::Timeout(std::time::Duration::from_secs(5)),
            ChildKind::Supervisor => Shutdown::Infinity,
        }
    }
}
