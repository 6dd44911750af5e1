//! The dynamic (`simple_one_for_one`) supervisor: children by key, lookups, restarts,
//! hibernation-style normal exits, intensity, and placement on several arbiters.

mod common;

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use supervisors::Supervisor;
use supervisors::*;

const T: Duration = Duration::from_secs(5);

fn pool(restart: Restart, log: &Log, starts: &Arc<AtomicU32>) -> DynamicSupervisor<String, Probe> {
    let (l, c) = (log.clone(), starts.clone());
    DynamicSupervisor::new("pool", move |k: &String| {
        Ok::<_, String>(Probe::new(k, &c, &l))
    })
    .restart(restart)
    .intensity(Intensity::new(100, T))
}

#[actix_rt::test]
async fn children_are_started_looked_up_and_terminated_by_key() {
    let (log, starts_) = (Log::default(), counter());
    let d = pool(Restart::Transient, &log, &starts_).start();
    assert!(d.get(&"a".to_owned()).is_none());
    let a = d.get_or_start("a".to_owned()).await.unwrap();
    let again = d.start_child("a".to_owned()).await.unwrap();
    assert_eq!(again.send(Ping).await, Ok(1), "already started: same child");
    d.get_or_start("b".to_owned()).await.unwrap();
    assert_eq!(d.len(), 2);
    let mut seen = Vec::new();
    d.for_each(|k, c| seen.push((k.clone(), c.state())));
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        seen,
        [
            ("a".to_owned(), ChildState::Running),
            ("b".to_owned(), ChildState::Running)
        ]
    );
    assert_eq!(d.count_children().await.unwrap().active, 2);
    assert!(d.terminate_child("a".to_owned()).await.unwrap());
    wait_until("a gone", T, || {
        d.get(&"a".to_owned()).is_none() && a.state() == ChildState::Stopped
    })
    .await;
    assert_eq!(log.matching("stop a").len(), 1);
    assert_eq!(d.which_children().await.unwrap().len(), 1);
    assert_eq!(d.shutdown().await, Some(ExitReason::Shutdown(None)));
    assert_eq!(log.matching("stop b").len(), 1);
}

#[actix_rt::test]
async fn a_panicking_child_is_restarted_behind_the_same_handle() {
    quiet_panics();
    let (log, starts_) = (Log::default(), counter());
    let d = pool(Restart::Transient, &log, &starts_).start();
    let a = d.get_or_start("a".to_owned()).await.unwrap();
    assert_eq!(a.send(Die(Exit::Panic)).await, Err(CallError::Exited));
    wait_until("restarted", T, || {
        a.state() == ChildState::Running && a.restarts() == 1
    })
    .await;
    assert_eq!(a.send(Ping).await, Ok(2));
    d.shutdown().await;
}

#[actix_rt::test]
async fn a_transient_child_that_exits_normally_is_forgotten_and_can_come_back() {
    let (log, starts_) = (Log::default(), counter());
    let d = pool(Restart::Transient, &log, &starts_).start();
    let a = d.get_or_start("a".to_owned()).await.unwrap();
    let _ = a.send(Die(Exit::Normal)).await;
    wait_until("forgotten", T, || d.get(&"a".to_owned()).is_none()).await;
    assert_eq!(a.send(Ping).await, Err(CallError::Stopped));
    let back = d.get_or_start("a".to_owned()).await.unwrap();
    assert_eq!(back.send(Ping).await, Ok(2), "started again on demand");
    d.shutdown().await;
}

#[actix_rt::test]
async fn a_call_queued_behind_a_normal_exit_says_so_and_the_key_starts_afresh_at_once() {
    quiet_panics();
    let (log, starts_) = (Log::default(), counter());
    let d = pool(Restart::Transient, &log, &starts_).start();
    let a = d.get_or_start("a".to_owned()).await.unwrap();
    // Both are in the mailbox before the child runs again: the second is never handled.
    let (stop, queued) = (a.send(Die(Exit::Normal)), a.send(Ping));
    assert_eq!(stop.await, Ok(()));
    assert_eq!(queued.await, Err(CallError::StoppedBeforeAnswer));
    assert!(a.ended_in_order());
    // No waiting for the supervisor to read the exit report: a fresh child answers now.
    let back = d.get_or_start("a".to_owned()).await.unwrap();
    assert_eq!(back.send(Ping).await, Ok(2));
    assert_eq!(back.restarts(), 0);
    wait_until("the old handle stopped", T, || {
        a.state() == ChildState::Stopped
    })
    .await;
    assert_eq!(d.len(), 1);
    assert_eq!(d.get(&"a".to_owned()).unwrap().send(Ping).await, Ok(2));

    // After a crash the caller cannot know how far its message got, and the key is restarting.
    let b = d.get_or_start("b".to_owned()).await.unwrap();
    let (crash, queued) = (b.send(Die(Exit::Panic)), b.send(Ping));
    assert_eq!(crash.await, Err(CallError::Exited));
    assert_eq!(queued.await, Err(CallError::Exited));
    assert!(!b.ended_in_order());
    wait_until("b restarted", T, || b.state() == ChildState::Running).await;
    assert_eq!(b.restarts(), 1);
    d.shutdown().await;
}

#[actix_rt::test]
async fn the_dynamic_supervisor_gives_up_when_its_intensity_is_exceeded() {
    quiet_panics();
    let (log, starts_) = (Log::default(), counter());
    let d = pool(Restart::Permanent, &log, &starts_)
        .intensity(Intensity::new(2, Duration::from_secs(60)))
        .start();
    let keys: Vec<String> = (0..3).map(|i| format!("k{i}")).collect();
    for k in &keys {
        d.get_or_start(k.clone()).await.unwrap();
    }
    for k in &keys {
        let c = d.get(k).unwrap();
        wait_until("running", T, || c.state() == ChildState::Running).await;
        let _ = c.send(Die(Exit::Panic)).await;
    }
    assert_eq!(
        d.shutdown().await,
        Some(ExitReason::reached_max_restart_intensity())
    );
    assert!(d.is_empty());
}

#[actix_rt::test]
async fn children_spread_over_arbiters_are_contained_and_shut_down() {
    quiet_panics();
    let arbiters: Vec<Arbiter> = (0..2).map(|_| Arbiter::new()).collect();
    let (log, starts_) = (Log::default(), counter());
    let d = pool(Restart::Transient, &log, &starts_)
        .arbiters(arbiters.iter().map(|a| a.handle()).collect())
        .start();
    let mut refs = Vec::new();
    for i in 0..50 {
        refs.push(d.get_or_start(format!("t{i}")).await.unwrap());
    }
    for r in &refs {
        assert!(r.send(Ping).await.is_ok());
    }
    let _ = refs[7].send(Die(Exit::Panic)).await;
    wait_until("restarted", T, || {
        refs[7].restarts() == 1 && refs[7].state() == ChildState::Running
    })
    .await;
    assert!(refs[7].send(Ping).await.is_ok());
    assert_eq!(d.shutdown().await, Some(ExitReason::Shutdown(None)));
    wait_until("all stopped", T, || log.matching("stop").len() == 51).await;
    for a in arbiters {
        a.stop();
    }
}

#[actix_rt::test]
async fn a_nested_dynamic_supervisor_restarted_by_its_parent_keeps_its_handle() {
    quiet_panics();
    let (log, starts_) = (Log::default(), counter());
    let (l, s) = (log.clone(), starts_.clone());
    let (spec, d) = ChildSpec::dynamic("pool", move || {
        pool(Restart::Permanent, &l, &s).intensity(Intensity::new(0, T))
    });
    let root = Supervisor::new("root")
        .intensity(Intensity::new(5, T))
        .child(spec)
        .start()
        .await;
    let a = d.get_or_start("a".to_owned()).await.unwrap();
    let _ = a.send(Die(Exit::Panic)).await; // exceeds the pool's intensity of 0
    wait_until("pool restarted", T, || {
        d.state() == ChildState::Running && d.is_empty()
    })
    .await;
    let a2 = d.get_or_start("a".to_owned()).await.unwrap();
    assert_eq!(a2.send(Ping).await, Ok(2));
    root.shutdown().await;
}
