//! Test actors and helpers shared by the supervision test files.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use actix::prelude::*;
use supervisors::{exit, ExitReason};

/// Silences the default panic hook for the deliberate panics of these tests ("boom …").
pub fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(|s| s.as_str()));
            if !msg.is_some_and(|m| m.starts_with("boom")) {
                default(info);
            }
        }));
    });
}

/// Polls `check` until it holds or `within` passes; panics with `what` on timeout.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, within: Duration, mut check: F) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        actix::clock::sleep(Duration::from_millis(2)).await;
    }
}

/// Shared log of lifecycle events ("start a", "stop b", …).
#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn matching(&self, prefix: &str) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|e| e.starts_with(prefix))
            .collect()
    }
}

/// How a [`Probe`] should exit when told to.
#[derive(Debug, Clone)]
pub enum Exit {
    Normal,
    Shutdown,
    Error,
    Panic,
}

impl Exit {
    pub fn reason(&self) -> ExitReason {
        match self {
            Exit::Normal => ExitReason::Normal,
            Exit::Shutdown => ExitReason::Shutdown(None),
            Exit::Error => ExitReason::Error("boom error".into()),
            Exit::Panic => ExitReason::Panic("boom panic".into()),
        }
    }
}

/// A test child: counts its starts, logs its lifecycle, answers pings, exits on demand.
pub struct Probe {
    pub name: String,
    pub starts: Arc<AtomicU32>,
    pub log: Log,
    /// When set, `stopping` refuses to stop (to test shutdown timeouts).
    pub stubborn: bool,
    pub pings: u32,
}

impl Probe {
    pub fn new(name: &str, starts: &Arc<AtomicU32>, log: &Log) -> Self {
        Probe {
            name: name.into(),
            starts: starts.clone(),
            log: log.clone(),
            stubborn: false,
            pings: 0,
        }
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.log.push(format!("start {}", self.name));
    }
    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        if self.stubborn {
            return Running::Continue;
        }
        Running::Stop
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log.push(format!("stop {}", self.name));
    }
}

#[derive(Message)]
#[rtype(result = "u32")]
pub struct Ping;

impl Handler<Ping> for Probe {
    type Result = u32;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u32 {
        self.pings += 1;
        self.starts.load(Ordering::SeqCst)
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Die(pub Exit);

impl Handler<Die> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Die, ctx: &mut Context<Self>) {
        match msg.0 {
            Exit::Normal => ctx.stop(),
            Exit::Shutdown => exit::<Self>(ctx, ExitReason::Shutdown(None)),
            Exit::Error => exit::<Self>(ctx, ExitReason::Error("boom error".into())),
            Exit::Panic => panic!("boom panic"),
        }
    }
}

/// A handler that never answers quickly: sleeps on the actor (for in-flight crash tests).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hang(pub Duration);

impl Handler<Hang> for Probe {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, msg: Hang, _: &mut Context<Self>) -> Self::Result {
        Box::pin(actix::fut::wrap_future(actix::clock::sleep(msg.0)))
    }
}

pub fn counter() -> Arc<AtomicU32> {
    Arc::new(AtomicU32::new(0))
}

pub fn starts(c: &Arc<AtomicU32>) -> u32 {
    c.load(Ordering::SeqCst)
}

/// Blocks the actor's mailbox for a while (nothing else is handled meanwhile).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Block(pub Duration);

impl Handler<Block> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Block, ctx: &mut Context<Self>) {
        ctx.wait(actix::fut::wrap_future(actix::clock::sleep(msg.0)));
    }
}
