//! The Observer actor: the tree's memory of recent supervision events.
//!
//! Serves a bounded ring of the latest events (what restarted, when, why) that operators read at
//! `GET /v1/supervision/events`, the Erlang observer's "what just happened" view. The ring
//! ([`EventLog`]) lives outside the actor, the way an ETS table outlives the process that reads
//! it: the tree's event sink writes into it directly, so no event waits in (or is dropped by) a
//! mailbox, and a crashed Observer comes back to the same ring, its own exit included. Metrics
//! do not depend on it: they are counted where the event is emitted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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

/// The latest [`CAPACITY`] supervision events, shared by the sink that writes them and every
/// incarnation of the [`Observer`] that reads them.
#[derive(Clone, Default)]
pub struct EventLog(Arc<Mutex<VecDeque<EventRecord>>>);

impl EventLog {
    /// Remembers `event`, forgetting the oldest past [`CAPACITY`].
    pub fn push(&self, event: EventRecord) {
        // Nothing panics while the lock is held; a poisoned lock still holds a whole ring.
        let mut ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The remembered events, oldest first.
    pub fn recent(&self) -> Vec<EventRecord> {
        let ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }
}

/// Serves the [`EventLog`] it is given (the same one after every restart).
pub struct Observer {
    log: EventLog,
}

impl Observer {
    pub fn new(log: EventLog) -> Self {
        Observer { log }
    }
}

impl Actor for Observer {
    type Context = Context<Self>;
}

/// The remembered events, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<EventRecord>")]
pub struct RecentEvents;

impl Handler<RecentEvents> for Observer {
    type Result = MessageResult<RecentEvents>;
    fn handle(&mut self, _: RecentEvents, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.log.recent())
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

    fn started(i: usize) -> EventRecord {
        EventRecord {
            time: String::new(),
            supervisor: "s".into(),
            child: Some(i.to_string()),
            event: "child_started",
            reason: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_latest_events_only() {
        let log = EventLog::default();
        for i in 0..(CAPACITY + 10) {
            log.push(started(i));
        }
        let got = log.recent();
        assert_eq!(got.len(), CAPACITY);
        assert_eq!(got[0].child.as_deref(), Some("10"));
        assert_eq!(got[CAPACITY - 1].child.as_deref(), Some("265"));
    }

    #[actix::test]
    async fn a_new_observer_on_the_same_log_serves_what_the_last_one_saw() {
        let log = EventLog::default();
        log.push(started(1));
        let first = Observer::new(log.clone()).start();
        assert_eq!(first.send(RecentEvents).await.unwrap().len(), 1);
        drop(first);
        log.push(started(2));
        let second = Observer::new(log).start();
        let got = second.send(RecentEvents).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.child.as_deref()).collect::<Vec<_>>(),
            [Some("1"), Some("2")]
        );
    }
}
