//! One supervised child at run time: its stable handle, its current incarnation and the runner
//! that contains its panics.
//!
//! Owns: [`ChildRef`] (the handle callers keep across restarts), `Incarnation` (the shared cell
//! through which a supervisor asks an incarnation to stop and learns how it ended, as do
//! [`Monitor`]s) and `Runner` (the task that polls an actix `ContextFut` under `catch_unwind`).
//!
//! Invariant: every incarnation reports exactly one exit, whether it stopped, was killed or
//! panicked, and its handle stops routing messages to it before that report is sent.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context as TaskContext, Poll, Waker};

use actix::dev::{channel, ContextFut, ToEnvelope};
use actix::prelude::*;

use crate::reason::panic_message;
use crate::ExitReason;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static NEXT_INCARNATION: AtomicU64 = AtomicU64::new(1);

/// Number of supervised actors (children and supervisors) alive in this process right now.
pub fn live_actors() -> usize {
    LIVE.load(Ordering::Relaxed)
}

thread_local! {
    /// An exit reason requested by the actor being polled on this thread (see [`exit`]).
    static REQUESTED_EXIT: RefCell<Option<ExitReason>> = const { RefCell::new(None) };
    /// Set while an ended or killed actor's context is dropped (see [`being_dropped`]).
    static DROPPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `true` inside an actor's `stopping`/`stopped` hooks when they run because the actor is being
/// dropped (it was killed, it panicked, or its arbiter or runtime is going away) rather than
/// stopping normally. Such hooks must not start timers or wait for anything: there may be no
/// runtime left to drive them.
pub fn being_dropped() -> bool {
    DROPPING.with(|d| d.get())
}

/// Stops the calling actor with `reason`, OTP's `exit(self(), Reason)`: its supervisor sees that
/// reason instead of `normal`. Call it from a handler or hook of a supervised actor.
pub fn exit<A>(ctx: &mut A::Context, reason: ExitReason)
where
    A: Actor,
    A::Context: ActorContext,
{
    REQUESTED_EXIT.with(|r| *r.borrow_mut() = Some(reason));
    ctx.stop();
}

/// Why a call through a [`ChildRef`] did not get an answer. Every variant is returned promptly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The child is down and its supervisor is restarting it (or deciding to).
    Restarting,
    /// The child is stopped for good (or was never started).
    Stopped,
    /// The incarnation that held the message exited abnormally before it answered (it
    /// crashed, reported an error or was killed): the message may have been handled in part.
    Exited,
    /// The incarnation that held the message stopped in an orderly way (a normal exit or a
    /// shutdown) before it answered. Unless its handler had left work pending in the actor's
    /// context, the message was never handled: it was still in the mailbox. A dynamic child
    /// that stopped normally is started afresh by [`crate::DynamicRef::get_or_start`].
    StoppedBeforeAnswer,
    /// No answer within the caller's timeout.
    Timeout,
    /// The child's mailbox is full ([`ChildRef::call`] refuses at once instead of queueing).
    Full,
}

// Written by hand rather than with `thiserror` to keep the crate on actix + tracing only.
impl std::error::Error for CallError {}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallError::Restarting => "child is restarting",
            CallError::Stopped => "child is stopped",
            CallError::Exited => "child exited before answering",
            CallError::StoppedBeforeAnswer => "child stopped before answering",
            CallError::Timeout => "child did not answer in time",
            CallError::Full => "child's mailbox is full",
        })
    }
}

/// Run-time state of a child as seen through its handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// An incarnation is running and receives messages.
    Running,
    /// Down; the supervisor restarts it (possibly after a backoff delay).
    Restarting,
    /// Down and not coming back unless started again.
    Stopped,
}

impl ChildState {
    /// `running`, `restarting` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Running => "running",
            ChildState::Restarting => "restarting",
            ChildState::Stopped => "stopped",
        }
    }
}

pub(crate) struct SlotInner<A: Actor> {
    pub(crate) state: ChildState,
    /// The one sender of the running incarnation, shared by every path into it: it parks once
    /// the mailbox is full, and while parked [`ChildRef::call`] and [`ChildRef::try_tell`]
    /// refuse. An `Addr` is made from it only when one is asked for (each sender costs two
    /// small shared allocations, and a million children each paid for a second one).
    pub(crate) sender: Option<channel::AddressSender<A>>,
    pub(crate) incarnation: u64,
    pub(crate) restarts: u32,
    /// Boxed: most children never exit, and every live child's slot carries the field.
    pub(crate) last_exit: Option<Box<ExitReason>>,
    /// The latest incarnation, for monitors, and the dynamic supervisor's only record of it
    /// (which clears it once it has read that incarnation's exit).
    pub(crate) inc: Option<Arc<Incarnation>>,
    /// Consecutive restarts, for the backoff delay.
    pub(crate) attempt: u32,
    pub(crate) started_at: Option<std::time::Instant>,
}

impl<A: Actor> SlotInner<A> {
    /// Its incarnation ended with `reason`: down, and `restarting` until the supervisor has
    /// read the exit, unless the supervisor has already settled it as stopped. A supervisor
    /// that settles an orderly exit before the incarnation has finished its hooks (a dynamic
    /// child whose key is started again meanwhile) must not see its handle turn back to
    /// `restarting` when the incarnation does finish: nothing would ever settle it again.
    fn down(&mut self, reason: &ExitReason) {
        if self.state != ChildState::Stopped {
            self.state = ChildState::Restarting;
        }
        self.last_exit = Some(Box::new(reason.clone()));
    }
}

/// A stable handle to a supervised actor: after a restart the same handle reaches the new
/// incarnation, built fresh by its factory. While the child is down, calls fail at once with
/// [`CallError::Restarting`] or [`CallError::Stopped`], never hang.
pub struct ChildRef<A: Actor> {
    pub(crate) slot: Arc<RwLock<SlotInner<A>>>,
}

impl<A: Actor> Clone for ChildRef<A> {
    fn clone(&self) -> Self {
        ChildRef {
            slot: self.slot.clone(),
        }
    }
}

impl<A: Actor> std::fmt::Debug for ChildRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildRef")
            .field("state", &self.state())
            .finish()
    }
}

impl<A: Actor> Default for ChildRef<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Actor> ChildRef<A> {
    /// A handle with no incarnation yet (state `stopped`).
    pub fn new() -> Self {
        ChildRef {
            slot: Arc::new(RwLock::new(SlotInner {
                state: ChildState::Stopped,
                sender: None,
                incarnation: 0,
                restarts: 0,
                last_exit: None,
                inc: None,
                attempt: 0,
                started_at: None,
            })),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SlotInner<A>> {
        // A poisoned lock only means a panic happened while it was held; the data is plain
        // values that stay consistent, so keep going.
        self.slot.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, SlotInner<A>> {
        self.slot.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The child's current state.
    pub fn state(&self) -> ChildState {
        self.read().state
    }

    /// How often the child has been restarted.
    pub fn restarts(&self) -> u32 {
        self.read().restarts
    }

    /// Why the latest incarnation exited, if one has.
    pub fn last_exit(&self) -> Option<ExitReason> {
        self.read().last_exit.as_deref().cloned()
    }

    /// The address of the current incarnation, if one is running. Prefer [`ChildRef::send`]: an
    /// `Addr` kept across a restart reaches nothing.
    pub fn addr(&self) -> Option<Addr<A>> {
        self.read().sender.clone().map(Addr::new)
    }

    /// OTP's `erlang:monitor(process, …)` on the incarnation running now: the [`Monitor`]
    /// resolves with [`Down::Exited`] and the exit reason once that incarnation has ended, and
    /// at once with [`Down::NoProc`] if none is running. Any number of monitors may watch one
    /// incarnation; each costs nothing until it is awaited.
    ///
    /// ```
    /// use actix::prelude::*;
    /// use supervisors::{ChildSpec, Down, ExitReason, Restart, Supervisor};
    ///
    /// struct Job;
    /// impl Actor for Job { type Context = Context<Self>; }
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let (spec, job) = ChildSpec::worker("job", || Job);
    ///     let root = Supervisor::new("root")
    ///         .child(spec.restart(Restart::Transient))
    ///         .start()
    ///         .await;
    ///     let down = job.monitor();
    ///     root.terminate_child("job").await.unwrap();
    ///     assert_eq!(down.await, Down::Exited(ExitReason::Shutdown(None)));
    ///     assert_eq!(job.monitor().await, Down::NoProc);
    ///     root.shutdown().await;
    /// }
    /// ```
    pub fn monitor(&self) -> Monitor {
        let g = self.read();
        match &g.inc {
            Some(inc) if g.state == ChildState::Running && inc.id == g.incarnation => {
                Monitor(Some(inc.exited()))
            }
            _ => Monitor(None),
        }
    }

    fn down_error(state: ChildState) -> CallError {
        match state {
            ChildState::Stopped => CallError::Stopped,
            _ => CallError::Restarting,
        }
    }

    /// Runs `f` with the running incarnation's sender and id, or fails at once if the child
    /// is down.
    fn with_sender<R>(
        &self,
        f: impl FnOnce(&channel::AddressSender<A>, u64) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let guard = self.read();
        match &guard.sender {
            Some(tx) if guard.state == ChildState::Running => f(tx, guard.incarnation),
            _ => Err(Self::down_error(guard.state)),
        }
    }

    /// Why `incarnation` dropped a message unanswered. Its exit is marked on the handle before
    /// its mailbox is dropped, so the reason is known here unless a newer incarnation has
    /// already replaced it (then the caller cannot tell, and hears [`CallError::Exited`]).
    fn unanswered(&self, incarnation: u64) -> CallError {
        let g = self.read();
        match &g.last_exit {
            Some(r) if g.incarnation == incarnation && !r.is_abnormal() => {
                CallError::StoppedBeforeAnswer
            }
            _ => CallError::Exited,
        }
    }

    /// Whether the child is down after an orderly exit (normal or shutdown) of its latest
    /// incarnation: not crashed, so no restart of it is owed to its callers.
    pub fn ended_in_order(&self) -> bool {
        let g = self.read();
        g.state != ChildState::Running && g.last_exit.as_ref().is_some_and(|r| !r.is_abnormal())
    }

    /// Sends `msg` to the current incarnation and waits for its answer.
    pub fn send<M>(&self, msg: M) -> impl Future<Output = Result<M::Result, CallError>> + 'static
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let mut inc = 0;
        let request = self.with_sender(|tx, i| {
            inc = i;
            match tx.send(msg) {
                Ok(rx) => Ok(Sent::Queued(rx)),
                // Parked because the mailbox is full: this caller waits for room, as `Addr::send`
                // does, instead of being refused.
                Err(SendError::Full(msg)) => Ok(Sent::Waiting(Addr::new(tx.clone()).send(msg))),
                Err(SendError::Closed(_)) => Err(CallError::Exited),
            }
        });
        let handle = self.clone();
        async move {
            match request? {
                Sent::Queued(rx) => rx.await.map_err(|_| handle.unanswered(inc)),
                Sent::Waiting(req) => match req.await {
                    Ok(v) => Ok(v),
                    Err(MailboxError::Closed) => Err(handle.unanswered(inc)),
                    Err(MailboxError::Timeout) => Err(CallError::Timeout),
                },
            }
        }
    }

    /// Like [`ChildRef::send`], but refuses at once with [`CallError::Full`] when the child's
    /// mailbox is at capacity, so callers never queue without bound behind a busy child.
    pub fn call<M>(&self, msg: M) -> impl Future<Output = Result<M::Result, CallError>> + 'static
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let mut inc = 0;
        let receiver = self.with_sender(|tx, i| {
            inc = i;
            tx.send(msg).map_err(|e| match e {
                SendError::Full(_) => CallError::Full,
                SendError::Closed(_) => CallError::Exited,
            })
        });
        let handle = self.clone();
        async move { receiver?.await.map_err(|_| handle.unanswered(inc)) }
    }

    /// Sends `msg` without waiting for an answer. Fails at once if the child is down or its
    /// mailbox is full; a message accepted here is lost if the incarnation crashes before it.
    pub fn try_tell<M>(&self, msg: M) -> Result<(), CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.with_sender(|tx, _| {
            tx.try_send(msg, true).map_err(|e| match e {
                SendError::Full(_) => CallError::Timeout,
                SendError::Closed(_) => CallError::Exited,
            })
        })
    }

    /// Sends `msg` without waiting and past a full mailbox: for the few control messages that
    /// must not be refused because callers keep the child busy (a bounded [`ChildRef::call`] or
    /// [`ChildRef::try_tell`] is refused then). Fails only if the child is down; a message
    /// accepted here is lost if the incarnation crashes before it.
    pub fn tell<M>(&self, msg: M) -> Result<(), CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.with_sender(|tx, _| tx.do_send(msg).map_err(|_| CallError::Exited))
    }

    /// Installs a new incarnation's address (the supervisor does this before the actor runs).
    pub(crate) fn install(
        &self,
        inc: &Arc<Incarnation>,
        tx: channel::AddressSender<A>,
        restarted: bool,
    ) {
        let mut g = self.write();
        g.incarnation = inc.id;
        g.inc = Some(inc.clone());
        g.sender = Some(tx);
        g.state = ChildState::Running;
        if restarted {
            g.restarts += 1;
        }
    }

    /// Marks `incarnation` as down with `reason` (unless a newer one has been installed), while
    /// its sender stays: actix runs the `stopping`/`stopped` hooks of a dropped context only
    /// while its mailbox has a sender.
    pub(crate) fn mark_exiting(&self, incarnation: u64, reason: &ExitReason) {
        let mut g = self.write();
        if g.incarnation == incarnation {
            g.down(reason);
        }
    }

    /// Marks `incarnation` as exited unless a newer one has been installed meanwhile.
    pub(crate) fn mark_exited(&self, incarnation: u64, reason: &ExitReason) {
        let mut g = self.write();
        if g.incarnation == incarnation {
            g.sender = None;
            g.down(reason);
        }
    }

    pub(crate) fn set_state(&self, state: ChildState) {
        let mut g = self.write();
        g.state = state;
        if state != ChildState::Running {
            g.sender = None;
        }
    }
}

/// A message on its way through [`ChildRef::send`].
enum Sent<A, M>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    Queued(tokio::sync::oneshot::Receiver<M::Result>),
    Waiting(actix::dev::Request<A, M>),
}

const CMD_NONE: u8 = 0;
const CMD_SHUTDOWN: u8 = 1;
const CMD_KILL: u8 = 2;

#[derive(Default)]
struct ExitCell {
    /// Boxed: set once at the end, and every live child's incarnation carries the cell.
    reason: Option<Box<ExitReason>>,
    /// The tasks awaiting the end (a supervisor stopping the child, and monitors), one slot
    /// each; a waiter that goes away frees its slot for the next one.
    waiters: Vec<Option<Waker>>,
}

/// The shared cell of one incarnation: commands in, exit reason out.
pub(crate) struct Incarnation {
    pub(crate) id: u64,
    cmd: AtomicU8,
    runner: OnceLock<Waker>,
    exit: Mutex<ExitCell>,
}

impl Incarnation {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Incarnation {
            id: NEXT_INCARNATION.fetch_add(1, Ordering::Relaxed),
            cmd: AtomicU8::new(CMD_NONE),
            runner: OnceLock::new(),
            exit: Mutex::new(ExitCell::default()),
        })
    }

    fn command(&self, cmd: u8) {
        self.cmd.fetch_max(cmd, Ordering::AcqRel);
        if let Some(w) = self.runner.get() {
            w.wake_by_ref();
        }
    }

    /// Asks the incarnation to stop gracefully (its `stopping`/`stopped` hooks run).
    pub(crate) fn shutdown(&self) {
        self.command(CMD_SHUTDOWN);
    }

    /// Drops the incarnation at its next poll, without waiting for it to finish.
    pub(crate) fn kill(&self) {
        self.command(CMD_KILL);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExitCell> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn exit_reason(&self) -> Option<ExitReason> {
        self.lock().reason.as_deref().cloned()
    }

    fn finish(&self, reason: ExitReason) {
        let waiters = {
            let mut cell = self.lock();
            cell.reason = Some(Box::new(reason));
            std::mem::take(&mut cell.waiters)
        };
        waiters.into_iter().flatten().for_each(Waker::wake);
    }

    /// Resolves with the exit reason once the incarnation has exited.
    pub(crate) fn exited(self: &Arc<Self>) -> Exited {
        Exited {
            inc: self.clone(),
            slot: None,
        }
    }
}

/// Awaits one incarnation's end. Any number may wait on the same incarnation.
pub(crate) struct Exited {
    inc: Arc<Incarnation>,
    /// This waiter's place in the incarnation's list, once it has waited.
    slot: Option<usize>,
}

impl Future for Exited {
    type Output = ExitReason;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<ExitReason> {
        let this = self.get_mut();
        let mut cell = this.inc.lock();
        if let Some(r) = &cell.reason {
            return Poll::Ready(ExitReason::clone(r));
        }
        let waker = Some(cx.waker().clone());
        match this.slot {
            Some(i) => cell.waiters[i] = waker,
            None => {
                let free = cell.waiters.iter().position(Option::is_none);
                let i = free.unwrap_or(cell.waiters.len());
                if i == cell.waiters.len() {
                    cell.waiters.push(waker);
                } else {
                    cell.waiters[i] = waker;
                }
                this.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Exited {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut cell = self.inc.lock();
            // After the end the list has been handed out; a waiter gone before it leaves a
            // free slot, so a child watched by callers that come and go keeps a short list.
            if let Some(w) = cell.waiters.get_mut(i) {
                *w = None;
            }
        }
    }
}

/// How the incarnation a [`Monitor`] watched ended: OTP's `'DOWN'` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// It exited, for this reason.
    Exited(ExitReason),
    /// None was running when the monitor was set up (OTP's `noproc`).
    NoProc,
}

/// OTP's monitor on one incarnation of a child, from [`ChildRef::monitor`]: a future that
/// resolves with [`Down`] once that incarnation has ended. Dropping it is `demonitor`.
///
/// A monitor watches an incarnation, not the handle: as in OTP, where a restarted child is a
/// new process, it resolves when the incarnation it was set on ends, and a caller that wants
/// to follow the restarted child sets a new one.
#[must_use = "a monitor does nothing unless awaited"]
pub struct Monitor(Option<Exited>);

impl Future for Monitor {
    type Output = Down;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Down> {
        match &mut self.get_mut().0 {
            Some(exited) => Pin::new(exited).poll(cx).map(Down::Exited),
            None => Poll::Ready(Down::NoProc),
        }
    }
}

/// Called once with the exit reason when an incarnation ends (it tells the supervisor).
pub(crate) type OnExit = Box<dyn FnOnce(u64, ExitReason) + Send>;

/// Reports an incarnation's end exactly once: to its handle, to whoever awaits it and to its
/// supervisor. If it is dropped unfired (the task or the arbiter went away), the end is `killed`.
struct ExitNotice<A: Actor> {
    inc: Arc<Incarnation>,
    handle: ChildRef<A>,
    on_exit: Option<OnExit>,
}

impl<A: Actor> ExitNotice<A> {
    fn fire(&mut self, reason: ExitReason) {
        if let Some(f) = self.on_exit.take() {
            self.handle.mark_exited(self.inc.id, &reason);
            self.inc.finish(reason.clone());
            f(self.inc.id, reason);
        }
    }
}

impl<A: Actor> Drop for ExitNotice<A> {
    fn drop(&mut self) {
        self.fire(ExitReason::Killed);
    }
}

/// Polls one actor's `ContextFut`, containing its panics and obeying its supervisor's commands.
struct Runner<A>
where
    A: Actor<Context = Context<A>>,
{
    fut: Option<ContextFut<A, Context<A>>>,
    notice: ExitNotice<A>,
    shutdown_applied: bool,
    /// Boxed: it is set once, at the end, and every supervised actor's task carries the field.
    requested: Option<Box<ExitReason>>,
}

impl<A> Runner<A>
where
    A: Actor<Context = Context<A>>,
{
    fn end(&mut self, reason: ExitReason) {
        // The handle learns first, so that a caller whose message the dropped mailbox held
        // finds out how the incarnation ended (see `ChildRef::unanswered`).
        if self.notice.on_exit.is_some() {
            self.notice.handle.mark_exiting(self.notice.inc.id, &reason);
        }
        if let Some(fut) = self.fut.take() {
            // Dropping a live ContextFut runs the actor's stopping/stopped hooks once; a panic
            // there must not escape into the arbiter.
            DROPPING.with(|d| d.set(true));
            if let Err(p) = catch_unwind(AssertUnwindSafe(move || drop(fut))) {
                tracing::debug!(panic = %panic_message(&*p), "panic while dropping an exited actor");
            }
            DROPPING.with(|d| d.set(false));
        }
        self.notice.fire(reason);
    }
}

impl<A> Drop for Runner<A>
where
    A: Actor<Context = Context<A>>,
{
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // The arbiter went away with the task still pending: the actor is gone, report `killed`.
        self.end(ExitReason::Killed);
    }
}

impl<A> Future for Runner<A>
where
    A: Actor<Context = Context<A>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        let inc = &this.notice.inc;
        if inc.runner.get().is_none() {
            let _ = inc.runner.set(cx.waker().clone());
        }
        let cmd = inc.cmd.load(Ordering::Acquire);
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(());
        };
        match cmd {
            CMD_KILL => {
                this.end(ExitReason::Killed);
                return Poll::Ready(());
            }
            CMD_SHUTDOWN if !this.shutdown_applied => {
                this.shutdown_applied = true;
                fut.ctx().stop();
            }
            _ => {}
        }
        let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(cx)));
        if let Some(r) = REQUESTED_EXIT.with(|r| r.borrow_mut().take()) {
            this.requested = Some(Box::new(r));
        }
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                let reason =
                    this.requested
                        .take()
                        .map(|r| *r)
                        .unwrap_or(if this.shutdown_applied {
                            ExitReason::Shutdown(None)
                        } else {
                            ExitReason::Normal
                        });
                this.end(reason);
                Poll::Ready(())
            }
            Err(payload) => {
                let msg = panic_message(&*payload);
                this.end(ExitReason::Panic(msg));
                Poll::Ready(())
            }
        }
    }
}

fn prepare<A>(
    handle: &ChildRef<A>,
    mailbox: usize,
    restarted: bool,
    on_exit: OnExit,
) -> (Arc<Incarnation>, channel::AddressReceiver<A>, ExitNotice<A>)
where
    A: Actor<Context = Context<A>>,
{
    let inc = Incarnation::new();
    let (tx, rx) = channel::channel::<A>(mailbox);
    handle.install(&inc, tx, restarted);
    let notice = ExitNotice {
        inc: inc.clone(),
        handle: handle.clone(),
        on_exit: Some(on_exit),
    };
    (inc, rx, notice)
}

fn run<A>(actor: A, rx: channel::AddressReceiver<A>, notice: ExitNotice<A>)
where
    A: Actor<Context = Context<A>>,
{
    let fut = Context::with_receiver(rx).into_future(actor);
    LIVE.fetch_add(1, Ordering::Relaxed);
    actix::spawn(Runner {
        fut: Some(fut),
        notice,
        shutdown_applied: false,
        requested: None,
    });
}

/// Starts `actor` as a new incarnation behind `handle` on the current arbiter. The address is
/// installed before this returns, so messages sent right after queue up for the new incarnation.
pub(crate) fn spawn_local<A>(
    actor: A,
    handle: &ChildRef<A>,
    mailbox: usize,
    restarted: bool,
    on_exit: OnExit,
) -> Arc<Incarnation>
where
    A: Actor<Context = Context<A>>,
{
    let (inc, rx, notice) = prepare(handle, mailbox, restarted, on_exit);
    run(actor, rx, notice);
    inc
}

/// Like [`spawn_local`], on `arbiter` when one is given.
pub(crate) fn spawn_incarnation<A>(
    actor: A,
    handle: &ChildRef<A>,
    arbiter: Option<&ArbiterHandle>,
    mailbox: usize,
    restarted: bool,
    on_exit: OnExit,
) -> Arc<Incarnation>
where
    A: Actor<Context = Context<A>> + Send,
{
    let Some(arbiter) = arbiter else {
        return spawn_local(actor, handle, mailbox, restarted, on_exit);
    };
    let (inc, rx, notice) = prepare(handle, mailbox, restarted, on_exit);
    // If the arbiter is gone the closure is dropped unrun, and with it the notice, which then
    // reports the incarnation as killed.
    arbiter.spawn_fn(move || run(actor, rx, notice));
    inc
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Probe;
    impl Actor for Probe {
        type Context = Context<Self>;
    }

    fn noop() -> TaskContext<'static> {
        TaskContext::from_waker(Waker::noop())
    }

    #[test]
    fn waiters_that_go_away_free_their_places_and_every_waiter_gets_the_end() {
        let inc = Incarnation::new();
        // Callers that come and go (each waits, then gives up) keep the list short.
        for _ in 0..1_000 {
            let mut gone = inc.exited();
            assert!(Pin::new(&mut gone).poll(&mut noop()).is_pending());
        }
        assert_eq!(inc.lock().waiters.len(), 1);
        let mut staying: Vec<Exited> = (0..3).map(|_| inc.exited()).collect();
        for w in &mut staying {
            assert!(Pin::new(w).poll(&mut noop()).is_pending());
        }
        assert_eq!(inc.lock().waiters.len(), 3);
        inc.finish(ExitReason::Killed);
        for w in &mut staying {
            assert_eq!(
                Pin::new(w).poll(&mut noop()),
                Poll::Ready(ExitReason::Killed)
            );
        }
        assert!(inc.lock().waiters.is_empty());
    }

    #[test]
    fn a_child_settled_as_stopped_stays_stopped_when_its_incarnation_finishes() {
        let h = ChildRef::<Probe>::new();
        {
            let mut g = h.write();
            g.incarnation = 7;
            g.state = ChildState::Running;
        }
        // The incarnation begins to end; its supervisor settles the orderly exit (a new child
        // takes the key) before the incarnation has finished and reported.
        h.mark_exiting(7, &ExitReason::Normal);
        assert_eq!(h.state(), ChildState::Restarting);
        h.set_state(ChildState::Stopped);
        h.mark_exited(7, &ExitReason::Normal);
        assert_eq!(h.state(), ChildState::Stopped);
        assert!(h.ended_in_order());
        // A running incarnation's end is still `restarting` until its supervisor decides.
        let h = ChildRef::<Probe>::new();
        {
            let mut g = h.write();
            g.incarnation = 3;
            g.state = ChildState::Running;
        }
        h.mark_exited(3, &ExitReason::Panic("boom".into()));
        assert_eq!(h.state(), ChildState::Restarting);
    }

    // Every live child holds one slot and one incarnation, each a shared allocation of its own
    // (an `Arc`'s two counters, 16 bytes, come on top). The allocator serves them from size
    // classes of 96 and 112 bytes; a field more and a million children take the next class.
    #[test]
    fn a_childs_shared_cells_fit_their_size_classes() {
        let slot = std::mem::size_of::<RwLock<SlotInner<Probe>>>() + 16;
        assert!(slot <= 112, "a slot is {slot} bytes");
        let inc = std::mem::size_of::<Incarnation>() + 16;
        assert!(inc <= 96, "an incarnation is {inc} bytes");
    }
}
