//! Supervision events and the subscriber they are delivered to.
//!
//! The crate emits no metrics and writes no logs beyond `tracing` debug lines; whoever starts the
//! tree subscribes with an [`EventSink`] and turns events into counters, gauges and log lines.

use std::sync::Arc;

use crate::ExitReason;

/// Something that happened in a supervision tree, named as a past-tense fact.
#[derive(Debug, Clone, PartialEq)]
pub enum SupervisorEvent {
    /// A child started (first start or restart).
    ChildStarted { supervisor: Arc<str>, child: String },
    /// A child exited; `reason` says why.
    ChildExited {
        supervisor: Arc<str>,
        child: String,
        reason: ExitReason,
    },
    /// A child was started again after an exit; `restarts` is its total restart count.
    ChildRestarted {
        supervisor: Arc<str>,
        child: String,
        restarts: u32,
    },
    /// A child's start factory failed (OTP `start_error`); a failed restart counts as a restart.
    ChildStartFailed {
        supervisor: Arc<str>,
        child: String,
        error: String,
    },
    /// The supervisor exceeded its restart intensity and is shutting down its children and itself.
    IntensityExceeded {
        supervisor: Arc<str>,
        max_restarts: u32,
        period_ms: u64,
    },
}

impl SupervisorEvent {
    /// The supervisor that reported the event.
    pub fn supervisor(&self) -> &str {
        match self {
            SupervisorEvent::ChildStarted { supervisor, .. }
            | SupervisorEvent::ChildExited { supervisor, .. }
            | SupervisorEvent::ChildRestarted { supervisor, .. }
            | SupervisorEvent::ChildStartFailed { supervisor, .. }
            | SupervisorEvent::IntensityExceeded { supervisor, .. } => supervisor,
        }
    }
}

/// The subscriber: called synchronously on the supervisor's thread for every event, so it must be
/// cheap (increment a counter, write a log line) and must not block.
pub type EventSink = Arc<dyn Fn(&SupervisorEvent) + Send + Sync>;

pub(crate) fn emit(sink: &Option<EventSink>, event: SupervisorEvent) {
    tracing::debug!(?event, "supervision event");
    if let Some(sink) = sink {
        sink(&event);
    }
}
