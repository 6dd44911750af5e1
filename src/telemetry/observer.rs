//! The Observer actor: the tree's memory of recent supervision events.
//!
//! Owns a bounded ring of the latest events (what restarted, when, why) that operators read at
//! `GET /v1/supervision/events`, the Erlang observer's "what just happened" view. Metrics do not
//! depend on it: they are counted where the event is emitted, so a crashed Observer loses only
//! its ring, which restarts empty.

use std::collections::VecDeque;

use actix::prelude::*;
use serde::Serialize;
use supervisors::SupervisorEvent;

/// Events kept.
pub const CAPACITY: usize = 256;

/// One remembered event, as served over HTTP.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    pub time: String,
    pub supervisor: String,
    pub child: Option<String>,
    pub event: &'static str,
    pub reason: Option<String>,
}

impl EventRecord {
    pub fn from_event(e: &SupervisorEvent) -> Self {
        let (event, child, reason) = match e {
            SupervisorEvent::ChildStarted { child, .. } => {
                ("child_started", Some(child.clone()), None)
            }
            SupervisorEvent::ChildExited { child, reason, .. } => (
                "child_exited",
                Some(child.clone()),
                Some(reason.to_string()),
            ),
            SupervisorEvent::ChildRestarted {
                child, restarts, ..
            } => (
                "child_restarted",
                Some(child.clone()),
                Some(format!("restart #{restarts}")),
            ),
            SupervisorEvent::ChildStartFailed { child, error, .. } => (
                "child_start_failed",
                Some(child.clone()),
                Some(error.clone()),
            ),
            SupervisorEvent::IntensityExceeded {
                max_restarts,
                period_ms,
                ..
            } => (
                "intensity_exceeded",
                None,
                Some(format!(
                    "more than {max_restarts} restarts in {period_ms} ms"
                )),
            ),
        };
        EventRecord {
            time: crate::clock::now_rfc3339(),
            supervisor: e.supervisor().to_owned(),
            child,
            event,
            reason,
        }
    }
}

/// Keeps the latest [`CAPACITY`] supervision events.
#[derive(Default)]
pub struct Observer {
    events: VecDeque<EventRecord>,
}

impl Actor for Observer {
    type Context = Context<Self>;
}

/// Remember an event.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remember(pub EventRecord);

impl Handler<Remember> for Observer {
    type Result = ();
    fn handle(&mut self, msg: Remember, _: &mut Context<Self>) {
        if self.events.len() == CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(msg.0);
    }
}

/// The remembered events, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<EventRecord>")]
pub struct RecentEvents;

impl Handler<RecentEvents> for Observer {
    type Result = MessageResult<RecentEvents>;
    fn handle(&mut self, _: RecentEvents, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.events.iter().cloned().collect())
    }
}

/// Chaos hook: panic inside a handler (only reachable with chaos enabled, see `http::chaos`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for Observer {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("chaos: observer crash requested");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn the_ring_keeps_the_latest_events_only() {
        let addr = Observer::default().start();
        for i in 0..(CAPACITY + 10) {
            addr.send(Remember(EventRecord {
                time: String::new(),
                supervisor: "s".into(),
                child: Some(i.to_string()),
                event: "child_started",
                reason: None,
            }))
            .await
            .unwrap();
        }
        let got = addr.send(RecentEvents).await.unwrap();
        assert_eq!(got.len(), CAPACITY);
        assert_eq!(got[0].child.as_deref(), Some("10"));
    }
}
