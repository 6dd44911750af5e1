//! The root supervision tree (SPEC §2): which actors run, in which order, under which rules.
//!
//! `root` is `one_for_one` with intensity `supervision.root_intensity` in
//! `supervision.root_period_secs` (5 in 60 s). Children start in the order listed and stop in
//! reverse. Every supervision event is counted and logged (`telemetry::events`) and remembered by
//! the Observer.

use std::sync::Arc;
use std::time::Duration;

use supervisors::{
    ChildRef, ChildSpec, EventSink, Intensity, Shutdown, Strategy, Supervisor, SupervisorEvent,
    SupervisorRef,
};

use crate::config::Settings;
use crate::telemetry::events;
use crate::telemetry::observer::{EventRecord, Observer, Remember};

/// Handles to the running tree.
#[derive(Clone)]
pub struct Tree {
    pub root: SupervisorRef,
    pub observer: ChildRef<Observer>,
}

/// Starts the root supervisor and its children; resolves when they all run.
pub async fn start(settings: &Settings) -> anyhow::Result<Tree> {
    let (observer_spec, observer) = ChildSpec::worker("observer", Observer::default);
    let remember = observer.clone();
    let sink: EventSink = Arc::new(move |e: &SupervisorEvent| {
        events::supervision(e);
        // Best effort: the ring is a convenience view, metrics above are the record.
        let _ = remember.try_tell(Remember(EventRecord::from_event(e)));
    });
    let root = Supervisor::new("root")
        .strategy(Strategy::OneForOne)
        .intensity(Intensity::new(
            settings.supervision.root_intensity,
            Duration::from_secs(settings.supervision.root_period_secs),
        ))
        .events(sink)
        .child(
            observer_spec
                .shutdown(Shutdown::Timeout(Duration::from_secs(1)))
                .mailbox(1024),
        )
        .start()
        .await;
    if let Some(reason) = root.exit_reason() {
        anyhow::bail!("the supervision tree failed to start: {reason}");
    }
    Ok(Tree { root, observer })
}
