//! The action sweeper: starts the governor of each tenant whose chain ends with an action in
//! flight and that no governor here runs, so that the action's state timeout runs (and the
//! eval executor completes it) although the process that started it is gone.
//!
//! A running governor keeps its action's timer and does not hibernate with an action in flight,
//! so only a process that ended (a crash, a deploy, Cloud Run scaling in) leaves an action
//! that nothing times out. With the SQLite ledger one process owns the file: the sweeper takes
//! every open action as the process starts, and again whenever the governance supervisor is
//! restarted (past its restart intensity it stops every governor, timers and all). With a
//! ledger several instances share
//! (Firestore), an action whose governor runs on another instance is that instance's, and
//! starting a second governor for it would hold an action slot here for nothing: the sweeper
//! takes only overdue actions (started more than `overdue` ago), at start and every `period`.

use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use supervisors::DynamicRef;

use super::actor::Governor;
use crate::receipts::{AnyStore, LedgerStore};
use crate::telemetry::events;

/// Open actions taken in one sweep.
const SWEEP_LIMIT: usize = 10_000;

/// Which open actions a sweep takes, and when sweeps run (besides [`Sweep`]).
#[derive(Debug, Clone, Copy)]
pub enum SweepPolicy {
    /// Every open action, at start (the ledger is this process's alone).
    AtStart,
    /// Actions started more than `overdue` ago, at start and every `period` (a ledger that
    /// several instances share).
    Overdue { period: Duration, overdue: Duration },
}

/// Starts governors for actions left in flight (see the module's header).
pub struct ActionSweeper {
    governors: DynamicRef<String, Governor>,
    store: AnyStore,
    policy: SweepPolicy,
    sweeping: bool,
}

impl ActionSweeper {
    pub fn new(
        governors: DynamicRef<String, Governor>,
        store: AnyStore,
        policy: SweepPolicy,
    ) -> Self {
        ActionSweeper {
            governors,
            store,
            policy,
            sweeping: false,
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.sweeping, true) {
            return;
        }
        let (store, pool) = (self.store.clone(), self.governors.clone());
        let overdue = match self.policy {
            SweepPolicy::AtStart => None,
            SweepPolicy::Overdue { overdue, .. } => Some(overdue),
        };
        let run = async move {
            let open = store.open_actions(SWEEP_LIMIT).await?;
            let now = crate::clock::now_ms();
            let mut started = 0usize;
            for o in open {
                let since = crate::clock::millis_of(&o.started_at).map_or(Duration::MAX, |at| {
                    Duration::from_millis(now.saturating_sub(at))
                });
                if overdue.is_some_and(|o| since < o)
                    || pool.get(&o.tenant_id).is_some_and(|g| !g.ended_in_order())
                {
                    continue;
                }
                match pool.get_or_start(o.tenant_id.clone()).await {
                    Ok(_) => started += 1,
                    Err(e) => {
                        tracing::warn!(tenant = %o.tenant_id, error = %e, "no governor started for an action left in flight")
                    }
                }
            }
            Ok::<_, crate::receipts::StoreError>(started)
        };
        ctx.spawn(wrap_future::<_, Self>(run).map(|res, act, ctx| {
            act.sweeping = false;
            match res {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(governors = n, "started the governors of actions left in flight");
                    events::governors_swept(n);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "open actions could not be read; trying again in 5 s");
                    if matches!(act.policy, SweepPolicy::AtStart) {
                        ctx.run_later(Duration::from_secs(5), |act, ctx| act.sweep(ctx));
                    }
                }
            }
        }));
    }
}

/// Sweep now: the governance supervisor was restarted, and the governors it stopped held
/// their actions' timers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sweep;

impl Handler<Sweep> for ActionSweeper {
    type Result = ();
    fn handle(&mut self, _: Sweep, ctx: &mut Context<Self>) {
        self.sweep(ctx);
    }
}

impl Actor for ActionSweeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sweep(ctx);
        if let SweepPolicy::Overdue { period, .. } = self.policy {
            ctx.run_interval(period, |act, ctx| act.sweep(ctx));
        }
    }
}
