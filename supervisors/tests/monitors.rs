//! Monitors, OTP's `erlang:monitor/2`: a `Down` with the exit reason once the watched
//! incarnation ends, `NoProc` when none runs, one incarnation per monitor (a restarted child
//! needs a new one), and monitors on supervisors and on dynamic children.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use common::*;
use supervisors::Supervisor;
use supervisors::*;

const T: Duration = Duration::from_secs(5);

/// Whether `monitor` has resolved, without waiting for it.
fn resolved(monitor: &mut Monitor) -> Option<Down> {
    match Pin::new(monitor).poll(&mut TaskContext::from_waker(Waker::noop())) {
        Poll::Ready(down) => Some(down),
        Poll::Pending => None,
    }
}

async fn down(monitor: Monitor) -> Down {
    actix::clock::timeout(T, monitor)
        .await
        .expect("the monitor resolves")
}

#[actix_rt::test]
async fn every_watcher_of_an_incarnation_learns_its_exit_reason_and_a_restart_needs_a_new_monitor()
{
    quiet_panics();
    let (starts_, log) = (counter(), Log::default());
    let (c, l) = (starts_.clone(), log.clone());
    let (spec, a) = ChildSpec::worker("a", move || Probe::new("a", &c, &l));
    let sup = Supervisor::new("s")
        .intensity(Intensity::new(10, Duration::from_secs(5)))
        .child(spec)
        .start()
        .await;
    for (round, exit) in [Exit::Normal, Exit::Shutdown, Exit::Error, Exit::Panic]
        .into_iter()
        .enumerate()
    {
        wait_until("a running", T, || a.state() == ChildState::Running).await;
        let mut early = a.monitor();
        assert_eq!(resolved(&mut early), None, "{exit:?}: still running");
        // Two tasks wait on the incarnation at once (spawned on this arbiter, they wait
        // before the child reads the message that ends it), and each is woken.
        let (first, second) = (actix::spawn(a.monitor()), actix::spawn(a.monitor()));
        // A monitor dropped before the end (demonitor) leaves the others as they were.
        let mut dropped = a.monitor();
        assert_eq!(resolved(&mut dropped), None);
        drop(dropped);
        let _ = a.send(Die(exit.clone())).await;
        for task in [first, second] {
            let got = actix::clock::timeout(T, task).await;
            assert_eq!(got.expect("woken").unwrap(), Down::Exited(exit.reason()));
        }
        assert_eq!(down(early).await, Down::Exited(exit.reason()));
        // The permanent child comes back as a new incarnation, which an earlier monitor
        // never watched: a new one waits for the new incarnation.
        wait_until("a restarted", T, || starts(&starts_) == round as u32 + 2).await;
        wait_until("a running", T, || a.state() == ChildState::Running).await;
        let mut next = a.monitor();
        assert_eq!(
            resolved(&mut next),
            None,
            "{exit:?}: the new incarnation runs"
        );
    }
    let last = a.monitor();
    assert_eq!(sup.shutdown().await, Some(ExitReason::Shutdown(None)));
    assert_eq!(down(last).await, Down::Exited(ExitReason::Shutdown(None)));
    assert_eq!(
        down(a.monitor()).await,
        Down::NoProc,
        "stopped with the tree"
    );
}

#[actix_rt::test]
async fn a_child_that_is_not_running_is_noproc_at_once() {
    assert_eq!(
        resolved(&mut ChildRef::<Probe>::new().monitor()),
        Some(Down::NoProc),
        "never started"
    );
    let (c, l) = (counter(), Log::default());
    let (spec, t) = ChildSpec::worker("t", move || Probe::new("t", &c, &l));
    let sup = Supervisor::new("s")
        .child(spec.restart(Restart::Temporary))
        .start()
        .await;
    let watching = t.monitor();
    let _ = t.send(Die(Exit::Normal)).await;
    assert_eq!(down(watching).await, Down::Exited(ExitReason::Normal));
    wait_until("t stopped", T, || t.state() == ChildState::Stopped).await;
    assert_eq!(resolved(&mut t.monitor()), Some(Down::NoProc));
    sup.shutdown().await;
}

#[actix_rt::test]
async fn monitors_on_supervisors_report_why_they_gave_up() {
    quiet_panics();
    let leaf = std::sync::Arc::new(std::sync::Mutex::new(None::<ChildRef<Probe>>));
    let (slot, log) = (leaf.clone(), Log::default());
    // mid tolerates no restart of its child; root restarts mid.
    let (mid, mid_ref) = ChildSpec::supervisor("mid", move || {
        let (c, l) = (counter(), log.clone());
        let (spec, r) = ChildSpec::worker("leaf", move || Probe::new("leaf", &c, &l));
        *slot.lock().unwrap() = Some(r);
        Supervisor::new("mid")
            .intensity(Intensity::new(0, Duration::from_secs(60)))
            .child(spec)
    });
    let root = Supervisor::new("root").child(mid).start().await;
    let (mid_watch, root_watch) = (mid_ref.monitor(), root.monitor());
    let r = leaf.lock().unwrap().clone().unwrap();
    let _ = r.send(Die(Exit::Panic)).await;
    assert_eq!(
        down(mid_watch).await,
        Down::Exited(ExitReason::reached_max_restart_intensity())
    );
    wait_until("mid restarted", T, || {
        mid_ref.state() == ChildState::Running
    })
    .await;
    let mut root_watch = root_watch;
    assert_eq!(resolved(&mut root_watch), None, "root lives on");
    root.shutdown().await;
    assert_eq!(
        down(root_watch).await,
        Down::Exited(ExitReason::Shutdown(None))
    );
}

#[actix_rt::test]
async fn a_dynamic_childs_monitor_reports_its_termination() {
    let (c, l) = (counter(), Log::default());
    let pool = DynamicSupervisor::new("pool", move |k: &String| {
        Ok::<_, String>(Probe::new(k, &c, &l))
    })
    .start();
    let child = pool.get_or_start("k".to_owned()).await.unwrap();
    let (watching, pool_watch) = (child.monitor(), pool.monitor());
    assert!(pool.terminate_child("k".to_owned()).await.unwrap());
    assert_eq!(
        down(watching).await,
        Down::Exited(ExitReason::Shutdown(None))
    );
    assert_eq!(pool.shutdown().await, Some(ExitReason::Shutdown(None)));
    assert_eq!(
        down(pool_watch).await,
        Down::Exited(ExitReason::Shutdown(None))
    );
}
