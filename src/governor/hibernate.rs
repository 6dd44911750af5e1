//! The Hibernator: one supervised actor that asks every running governor, every half
//! `idle_hibernate`, to hibernate if it is idle.
//!
//! One timer for the whole service instead of one per governor keeps a live governor small
//! (a per-governor interval cost about 190 bytes and a fifth of a governor's start). The
//! governor decides for itself (see [`Hibernate`]); a governor whose mailbox is full is busy
//! and is skipped until the next round.

use std::time::Duration;

use actix::prelude::*;
use supervisors::DynamicRef;

use super::actor::{Governor, Hibernate};

/// Asks the governors of `governors` to hibernate when idle.
pub struct Hibernator {
    governors: DynamicRef<String, Governor>,
    period: Duration,
}

impl Hibernator {
    /// Checks every `idle_hibernate / 2` (at least every 50 ms), so a governor hibernates
    /// between one and one and a half `idle_hibernate` after its last input.
    pub fn new(governors: DynamicRef<String, Governor>, idle_hibernate: Duration) -> Self {
        Hibernator {
            governors,
            period: (idle_hibernate / 2).max(Duration::from_millis(50)),
        }
    }
}

impl Actor for Hibernator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.period, |act, _| {
            act.governors.for_each(|_, g| {
                let _ = g.try_tell(Hibernate);
            });
        });
    }
}
