//! Child specifications: what a supervisor knows about each child before it runs.
//!
//! Owns [`ChildSpec`] with OTP's fields (`id`, a `start` factory called again on every restart,
//! `restart`, `shutdown`, kind), the optional [`Backoff`], and the type-erased start closure that
//! turns a factory into a running incarnation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::child::{spawn_incarnation, ChildRef, ChildState, Incarnation, OnExit};
use crate::event::EventSink;
use crate::snapshot::TreeSnapshot;
use crate::{Backoff, ExitReason};

/// When a child is restarted after it exits.
///
/// | Restart     | abnormal exit (error, panic, killed) | `normal` / `shutdown` exit |
/// |-------------|--------------------------------------|----------------------------|
/// | `Permanent` | restart                              | restart                    |
/// | `Transient` | restart                              | stay down                  |
/// | `Temporary` | stay down (spec removed)             | stay down (spec removed)   |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted (OTP's default).
    Permanent,
    /// Restarted only after an abnormal exit.
    Transient,
    /// Never restarted, even when a sibling's failure terminates it.
    Temporary,
}

impl Restart {
    /// Whether a child of this type is restarted after exiting with `reason`.
    pub fn restarts_after(self, reason: &ExitReason) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => reason.is_abnormal(),
            Restart::Temporary => false,
        }
    }

    /// `permanent`, `transient` or `temporary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }
}

/// How a child is stopped by its supervisor.
///
/// | Shutdown      | behaviour                                                              |
/// |---------------|------------------------------------------------------------------------|
/// | `BrutalKill`  | dropped at once, no waiting                                            |
/// | `Timeout(d)`  | asked to stop (its `stopping`/`stopped` hooks run); killed after `d`   |
/// | `Infinity`    | asked to stop and waited for, however long (the default for supervisors) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Kill without asking.
    BrutalKill,
    /// Ask, then kill after this long.
    Timeout(Duration),
    /// Ask and wait.
    Infinity,
}

/// Whether a child is a worker or a supervisor of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// A plain actor.
    Worker,
    /// A supervisor (static or dynamic).
    Supervisor,
}

impl ChildKind {
    /// `worker` or `supervisor`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::Worker => "worker",
            ChildKind::Supervisor => "supervisor",
        }
    }
}

/// Asks a running supervisor child for its snapshot.
pub(crate) type Inspector =
    Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Option<TreeSnapshot>>>> + Send + Sync>;

/// What a supervisor hands to a child's start closure.
pub(crate) struct StartEnv {
    pub(crate) restarted: bool,
    pub(crate) on_exit: OnExit,
    pub(crate) sink: Option<EventSink>,
}

/// The type-erased handle operations a supervisor needs.
pub(crate) trait ErasedHandle {
    fn set_state(&self, state: ChildState);
}

impl<A: Actor> ErasedHandle for ChildRef<A> {
    fn set_state(&self, state: ChildState) {
        ChildRef::set_state(self, state)
    }
}

type StartFn =
    Box<dyn FnMut(StartEnv, Option<&ArbiterHandle>, usize) -> Result<Arc<Incarnation>, String>>;

/// A child specification: OTP's `#{id, start, restart, shutdown, type}` plus optional backoff,
/// arbiter placement and mailbox size.
///
/// ```no_run
/// use actix::prelude::*;
/// use supervisors::{ChildSpec, Restart, Shutdown};
/// use std::time::Duration;
///
/// struct Worker;
/// impl Actor for Worker { type Context = Context<Self>; }
///
/// let (spec, handle) = ChildSpec::worker("worker", || Worker);
/// let spec = spec.restart(Restart::Transient).shutdown(Shutdown::Timeout(Duration::from_secs(1)));
/// # let _ = (spec, handle);
/// ```
pub struct ChildSpec {
    pub(crate) id: String,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) kind: ChildKind,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) arbiter: Option<ArbiterHandle>,
    pub(crate) mailbox: usize,
    /// OTP's `significant` flag (see [`crate::AutoShutdown`]).
    pub(crate) significant: bool,
    pub(crate) start: StartFn,
    pub(crate) handle: Box<dyn ErasedHandle>,
    pub(crate) inspect: Option<Inspector>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Default mailbox capacity of a child (actix's own default).
pub const DEFAULT_MAILBOX: usize = 16;

impl ChildSpec {
    /// A `permanent` worker with a 5 s shutdown timeout (OTP's defaults), built by `factory` on
    /// every (re)start. Returns the spec and the stable handle that reaches every incarnation.
    pub fn worker<A, F>(id: impl Into<String>, mut factory: F) -> (ChildSpec, ChildRef<A>)
    where
        A: Actor<Context = Context<A>> + Send,
        F: FnMut() -> A + 'static,
    {
        Self::try_worker(id, move || Ok::<A, String>(factory()))
    }

    /// Like [`ChildSpec::worker`] with a fallible factory: an `Err` is OTP's `start_error` and a
    /// failed restart counts against the restart intensity.
    pub fn try_worker<A, F, E>(id: impl Into<String>, mut factory: F) -> (ChildSpec, ChildRef<A>)
    where
        A: Actor<Context = Context<A>> + Send,
        F: FnMut() -> Result<A, E> + 'static,
        E: std::fmt::Display,
    {
        let handle = ChildRef::<A>::new();
        let h = handle.clone();
        let start: StartFn = Box::new(move |env, arbiter, mailbox| {
            let actor = factory().map_err(|e| e.to_string())?;
            Ok(spawn_incarnation(
                actor,
                &h,
                arbiter,
                mailbox,
                env.restarted,
                env.on_exit,
            ))
        });
        let spec = ChildSpec {
            id: id.into(),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            kind: ChildKind::Worker,
            backoff: None,
            arbiter: None,
            mailbox: DEFAULT_MAILBOX,
            significant: false,
            start,
            handle: Box::new(handle.clone()),
            inspect: None,
        };
        (spec, handle)
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown behaviour.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Delays restarts of this child with exponential backoff and jitter (off by default).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Runs the child on `arbiter` instead of the supervisor's own.
    pub fn arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    /// Marks the child significant (OTP 24's `significant => true`): when it ends on its own
    /// and is not restarted, a supervisor with [`crate::AutoShutdown`] other than `Never` may
    /// shut itself down. Only `transient` and `temporary` children can be significant; a
    /// supervisor refuses to start with a significant `permanent` child, or with one while its
    /// auto shutdown is `Never`, as OTP does.
    pub fn significant(mut self, significant: bool) -> Self {
        self.significant = significant;
        self
    }

    /// Sets the child's mailbox capacity.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn supervisor_spec(
        id: String,
        start: StartFn,
        handle: Box<dyn ErasedHandle>,
        inspect: Inspector,
    ) -> ChildSpec {
        ChildSpec {
            id,
            restart: Restart::Permanent,
            shutdown: Shutdown::Infinity,
            kind: ChildKind::Supervisor,
            backoff: None,
            arbiter: None,
            mailbox: DEFAULT_MAILBOX,
            significant: false,
            start,
            handle,
            inspect: Some(inspect),
        }
    }
}

/// Ends one incarnation according to `shutdown` and returns how it ended.
pub(crate) async fn terminate(inc: Arc<Incarnation>, shutdown: Shutdown) -> ExitReason {
    match shutdown {
        Shutdown::BrutalKill => inc.kill(),
        Shutdown::Infinity => inc.shutdown(),
        Shutdown::Timeout(d) => {
            inc.shutdown();
            match actix::clock::timeout(d, inc.exited()).await {
                Ok(reason) => return reason,
                Err(_) => inc.kill(),
            }
        }
    }
    inc.exited().await
}
