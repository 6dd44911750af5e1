//! Restart semantics, following the applicable cases of OTP's own supervisor test suite:
//! every strategy × restart type × exit reason, intensity and escalation, shutdown order and
//! timeouts, start failures, backoff, and panic containment.

mod common;

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::*;
use supervisors::Supervisor;
use supervisors::*;

const T: Duration = Duration::from_secs(5);

struct Tree {
    sup: SupervisorRef,
    refs: Vec<ChildRef<Probe>>,
    starts: Vec<Arc<AtomicU32>>,
}

/// Children a, b, c; b has `restart`, the others are permanent.
async fn three(strategy: Strategy, restart: Restart, log: &Log) -> Tree {
    let names = ["a", "b", "c"];
    let starts: Vec<_> = names.iter().map(|_| counter()).collect();
    let mut sup = Supervisor::new("sup")
        .strategy(strategy)
        .intensity(Intensity::new(10, Duration::from_secs(5)));
    let mut refs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let (c, l, name) = (starts[i].clone(), log.clone(), n.to_string());
        let (spec, r) = ChildSpec::worker(name.clone(), move || Probe::new(&name, &c, &l));
        let spec = if *n == "b" {
            spec.restart(restart)
        } else {
            spec
        };
        sup = sup.child(spec);
        refs.push(r);
    }
    Tree {
        sup: sup.start().await,
        refs,
        starts,
    }
}

async fn info_of(sup: &SupervisorRef, id: &str) -> Option<ChildInfo> {
    sup.which_children()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
}

async fn settle(sup: &SupervisorRef, id: &str, reason: &ExitReason) {
    let deadline = Instant::now() + T;
    loop {
        let info = info_of(sup, id).await;
        let done = match &info {
            None => true, // temporary child removed
            Some(i) => i.last_exit.as_ref() == Some(reason) && i.state != ChildState::Restarting,
        };
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "child {id} never settled after {reason}: {info:?}"
        );
        actix::clock::sleep(Duration::from_millis(2)).await;
    }
}

#[actix_rt::test]
async fn every_strategy_restart_type_and_exit_reason_behaves_as_otp() {
    quiet_panics();
    for strategy in [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ] {
        for restart in [Restart::Permanent, Restart::Transient, Restart::Temporary] {
            for exit in [Exit::Normal, Exit::Shutdown, Exit::Error, Exit::Panic] {
                let case = format!("{strategy:?}/{restart:?}/{exit:?}");
                let log = Log::default();
                let t = three(strategy, restart, &log).await;
                assert_eq!(t.refs[1].send(Ping).await, Ok(1), "{case}");
                let reason = exit.reason();
                let _ = t.refs[1].send(Die(exit.clone())).await;
                settle(&t.sup, "b", &reason).await;

                let restarted = restart.restarts_after(&reason);
                let b = info_of(&t.sup, "b").await;
                if restarted {
                    let b = b.unwrap_or_else(|| panic!("{case}: b missing"));
                    assert_eq!((b.state, b.restarts), (ChildState::Running, 1), "{case}");
                    assert_eq!(
                        t.refs[1].send(Ping).await,
                        Ok(2),
                        "{case}: same handle reaches the new incarnation"
                    );
                    let (a, c) = (starts(&t.starts[0]), starts(&t.starts[2]));
                    let expect = match strategy {
                        Strategy::OneForOne => (1, 1),
                        Strategy::OneForAll => (2, 2),
                        Strategy::RestForOne => (1, 2),
                    };
                    assert_eq!((a, c), expect, "{case}: siblings restarted per strategy");
                } else {
                    match restart {
                        Restart::Temporary => {
                            assert!(b.is_none(), "{case}: temporary spec removed")
                        }
                        _ => assert_eq!(b.unwrap().state, ChildState::Stopped, "{case}"),
                    }
                    assert_eq!(
                        t.refs[1].send(Ping).await,
                        Err(CallError::Stopped),
                        "{case}"
                    );
                    assert_eq!(
                        (starts(&t.starts[0]), starts(&t.starts[2])),
                        (1, 1),
                        "{case}: siblings untouched"
                    );
                }
                t.sup.shutdown().await;
            }
        }
    }
}

#[actix_rt::test]
async fn temporary_sibling_stopped_by_one_for_all_is_not_restarted() {
    quiet_panics();
    let log = Log::default();
    let (ca, cb) = (counter(), counter());
    let (la, lb) = (log.clone(), log.clone());
    let (ca2, cb2) = (ca.clone(), cb.clone());
    let (a, a_ref) = ChildSpec::worker("a", move || Probe::new("a", &ca2, &la));
    let (b, b_ref) = ChildSpec::worker("b", move || Probe::new("b", &cb2, &lb));
    let sup = Supervisor::new("s")
        .strategy(Strategy::OneForAll)
        .intensity(Intensity::new(5, T))
        .child(a.restart(Restart::Temporary))
        .child(b)
        .start()
        .await;
    assert_eq!(b_ref.send(Ping).await, Ok(1));
    let _ = b_ref.send(Die(Exit::Panic)).await;
    wait_until("b restarted", T, || starts(&cb) == 2).await;
    let kids = sup.which_children().await.unwrap();
    assert_eq!(
        kids.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
    assert_eq!(a_ref.send(Ping).await, Err(CallError::Stopped));
    assert_eq!(starts(&ca), 1);
    sup.shutdown().await;
}

#[actix_rt::test]
async fn exceeding_the_intensity_stops_children_in_reverse_order_and_exits_shutdown() {
    quiet_panics();
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let sink: EventSink = Arc::new(move |e: &SupervisorEvent| ev.lock().unwrap().push(e.clone()));
    let mut sup = Supervisor::new("sup").events(sink); // default intensity: 1 in 5 s
    let mut refs = Vec::new();
    for n in ["a", "b", "c"] {
        let (c, l) = (counter(), log.clone());
        let (spec, r) = ChildSpec::worker(n, move || Probe::new(n, &c, &l));
        sup = sup.child(spec);
        refs.push(r);
    }
    let sup = sup.start().await;
    let _ = refs[0].send(Die(Exit::Panic)).await;
    wait_until("a restarted once", T, || log.matching("start a").len() == 2).await;
    let _ = refs[0].send(Die(Exit::Panic)).await;
    assert_eq!(
        sup.join().await,
        Some(ExitReason::reached_max_restart_intensity())
    );
    // Each crashed incarnation of `a` logs its own stop; then the survivors stop in reverse.
    assert_eq!(
        log.matching("stop "),
        vec!["stop a", "stop a", "stop c", "stop b"]
    );
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        SupervisorEvent::IntensityExceeded {
            max_restarts: 1,
            ..
        }
    )));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, SupervisorEvent::ChildRestarted { .. }))
            .count(),
        1
    );
    for r in &refs {
        assert_eq!(r.state(), ChildState::Stopped);
    }
}

#[actix_rt::test]
async fn intensity_escalates_through_two_levels_of_supervisors() {
    quiet_panics();
    let log = Log::default();
    let leaf = Arc::new(Mutex::new(None::<ChildRef<Probe>>));
    let (leaf_slot, l) = (leaf.clone(), log.clone());
    // mid tolerates no restart at all; root tolerates one in a minute.
    let (mid, mid_ref) = ChildSpec::supervisor("mid", move || {
        let (c, l) = (counter(), l.clone());
        let (spec, r) = ChildSpec::worker("leaf", move || Probe::new("leaf", &c, &l));
        *leaf_slot.lock().unwrap() = Some(r);
        Supervisor::new("mid")
            .intensity(Intensity::new(0, Duration::from_secs(60)))
            .child(spec)
    });
    let (c, l2) = (counter(), log.clone());
    let (other, other_ref) = ChildSpec::worker("other", move || Probe::new("other", &c, &l2));
    let root = Supervisor::new("root")
        .intensity(Intensity::new(1, Duration::from_secs(60)))
        .child(other)
        .child(mid)
        .start()
        .await;

    let crash_leaf = || async {
        let r = leaf.lock().unwrap().clone().unwrap();
        wait_until("leaf running", T, || r.state() == ChildState::Running).await;
        let _ = r.send(Die(Exit::Panic)).await;
    };
    crash_leaf().await;
    wait_until("mid restarted by root", T, || {
        log.matching("start leaf").len() == 2
    })
    .await;
    let mid_info = info_of(&root, "mid").await.unwrap();
    assert_eq!(mid_info.restarts, 1);
    assert_eq!(
        mid_info.last_exit,
        Some(ExitReason::reached_max_restart_intensity())
    );
    assert_eq!(mid_ref.state(), ChildState::Running);

    crash_leaf().await;
    assert_eq!(
        root.join().await,
        Some(ExitReason::reached_max_restart_intensity()),
        "root gives up at its own limit"
    );
    assert_eq!(other_ref.state(), ChildState::Stopped);
    assert_eq!(log.matching("stop other").len(), 1);
}

#[actix_rt::test]
async fn children_start_in_order_and_stop_in_reverse_order() {
    let log = Log::default();
    let mut sup = Supervisor::new("s");
    for n in ["a", "b", "c", "d"] {
        let (c, l) = (counter(), log.clone());
        sup = sup.child(ChildSpec::worker(n, move || Probe::new(n, &c, &l)).0);
    }
    let sup = sup.start().await;
    wait_until("all started", T, || log.matching("start").len() == 4).await;
    assert_eq!(sup.shutdown().await, Some(ExitReason::Shutdown(None)));
    assert_eq!(
        log.entries(),
        vec!["start a", "start b", "start c", "start d", "stop d", "stop c", "stop b", "stop a"]
    );
}

#[actix_rt::test]
async fn a_child_that_outlives_its_shutdown_timeout_is_killed() {
    let log = Log::default();
    let (c, l) = (counter(), log.clone());
    let (stubborn, s_ref) = ChildSpec::worker("stubborn", move || {
        let mut p = Probe::new("stubborn", &c, &l);
        p.stubborn = true;
        p
    });
    let (c2, l2) = (counter(), log.clone());
    let (polite, _) = ChildSpec::worker("polite", move || Probe::new("polite", &c2, &l2));
    let sup = Supervisor::new("s")
        .child(polite)
        .child(stubborn.shutdown(Shutdown::Timeout(Duration::from_millis(50))))
        .start()
        .await;
    assert_eq!(s_ref.send(Ping).await, Ok(1));
    let began = Instant::now();
    sup.shutdown().await;
    assert!(
        began.elapsed() >= Duration::from_millis(50),
        "waited for the timeout"
    );
    assert!(began.elapsed() < Duration::from_secs(2));
    assert_eq!(s_ref.last_exit(), Some(ExitReason::Killed));
    assert_eq!(
        log.matching("stop polite").len(),
        1,
        "the next child is still stopped after the kill"
    );
}

#[actix_rt::test]
async fn brutal_kill_does_not_wait_for_a_child_that_refuses_to_stop() {
    let (c, l) = (counter(), Log::default());
    let (spec, r) = ChildSpec::worker("x", move || {
        let mut p = Probe::new("x", &c, &l);
        p.stubborn = true;
        p
    });
    let sup = Supervisor::new("s")
        .child(spec.shutdown(Shutdown::BrutalKill))
        .start()
        .await;
    assert_eq!(r.send(Ping).await, Ok(1));
    actix::clock::timeout(Duration::from_millis(500), sup.shutdown())
        .await
        .expect("brutal kill is immediate");
    assert_eq!(r.last_exit(), Some(ExitReason::Killed));
}

#[actix_rt::test]
async fn a_failed_restart_counts_against_the_intensity() {
    quiet_panics();
    let attempts = counter();
    let (a2, c, l) = (attempts.clone(), counter(), Log::default());
    let (spec, r) = ChildSpec::try_worker("flaky", move || {
        let n = a2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            Ok(Probe::new("flaky", &c, &l))
        } else {
            Err("cannot start")
        }
    });
    let sup = Supervisor::new("s")
        .intensity(Intensity::new(3, Duration::from_secs(60)))
        .child(spec)
        .start()
        .await;
    assert_eq!(r.send(Ping).await, Ok(1));
    let _ = r.send(Die(Exit::Panic)).await;
    assert_eq!(
        sup.join().await,
        Some(ExitReason::reached_max_restart_intensity())
    );
    assert_eq!(
        starts(&attempts),
        4,
        "first start plus three failed restarts within the intensity"
    );
}

#[actix_rt::test]
async fn a_start_error_at_boot_stops_the_started_children_and_the_supervisor() {
    let log = Log::default();
    let (c, l) = (counter(), log.clone());
    let (ok, _) = ChildSpec::worker("ok", move || Probe::new("ok", &c, &l));
    let (bad, _) = ChildSpec::try_worker("bad", || Err::<Probe, _>("no config"));
    let sup = Supervisor::new("s").child(ok).child(bad).start().await;
    let reason = sup.join().await.unwrap();
    assert!(
        reason.to_string().contains("start_error(bad: no config)"),
        "{reason}"
    );
    assert_eq!(log.entries(), vec!["start ok", "stop ok"]);
}

#[actix_rt::test]
async fn calls_during_a_backoff_fail_promptly_and_the_same_handle_works_after() {
    quiet_panics();
    let (c, l) = (counter(), Log::default());
    let backoff = Backoff {
        min: Duration::from_millis(150),
        max: Duration::from_secs(1),
        factor: 2.0,
        jitter: 0.0,
        reset_after: Duration::from_secs(10),
    };
    let (spec, r) = ChildSpec::worker("slow", move || Probe::new("slow", &c, &l));
    let sup = Supervisor::new("s")
        .child(spec.backoff(backoff))
        .start()
        .await;
    assert_eq!(r.send(Ping).await, Ok(1));
    let crashed = Instant::now();
    assert_eq!(
        r.send(Die(Exit::Panic)).await,
        Err(CallError::Exited),
        "the crashing call learns at once"
    );
    let t0 = Instant::now();
    assert_eq!(r.send(Ping).await, Err(CallError::Restarting));
    assert!(
        t0.elapsed() < Duration::from_millis(50),
        "no waiting on a down child"
    );
    wait_until("restarted", T, || r.state() == ChildState::Running).await;
    assert!(
        crashed.elapsed() >= Duration::from_millis(150),
        "restart waited for the backoff"
    );
    assert_eq!(r.send(Ping).await, Ok(2));
    sup.shutdown().await;
}

#[actix_rt::test]
async fn a_panic_is_contained_and_siblings_and_the_arbiter_live_on() {
    quiet_panics();
    let arbiter = Arbiter::new();
    let (ca, cb, log) = (counter(), counter(), Log::default());
    let (la, lb) = (log.clone(), log.clone());
    let (a, a_ref) = ChildSpec::worker("a", move || Probe::new("a", &ca, &la));
    let (b, b_ref) = ChildSpec::worker("b", move || Probe::new("b", &cb, &lb));
    let sup = Supervisor::new("s")
        .child(a.arbiter(arbiter.handle()))
        .child(b.arbiter(arbiter.handle()))
        .start()
        .await;
    assert_eq!(b_ref.send(Ping).await, Ok(1));
    // A call in flight on the crashing child gets an error, not a hang.
    let hung = a_ref.send(Hang(Duration::from_secs(30)));
    let crash = a_ref.send(Die(Exit::Panic));
    assert_eq!(
        actix::clock::timeout(T, hung).await.unwrap(),
        Err(CallError::Exited)
    );
    let _ = crash.await;
    assert_eq!(
        b_ref.send(Ping).await,
        Ok(1),
        "sibling on the same arbiter still answers"
    );
    assert!(arbiter.handle().spawn(async {}), "arbiter alive");
    wait_until("a restarted", T, || a_ref.state() == ChildState::Running).await;
    assert_eq!(a_ref.send(Ping).await, Ok(2));
    assert_eq!(
        a_ref.last_exit(),
        Some(ExitReason::Panic("boom panic".into()))
    );
    sup.shutdown().await;
    arbiter.stop();
}

#[actix_rt::test]
async fn events_report_start_exit_and_restart_with_reasons() {
    quiet_panics();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let (c, l) = (counter(), Log::default());
    let (spec, r) = ChildSpec::worker("w", move || Probe::new("w", &c, &l));
    let sup = Supervisor::new("s")
        .events(Arc::new(move |e: &SupervisorEvent| {
            ev.lock().unwrap().push(e.clone())
        }))
        .child(spec)
        .start()
        .await;
    let _ = r.send(Die(Exit::Error)).await;
    wait_until("restart event", T, || events.lock().unwrap().len() >= 4).await;
    let got = events.lock().unwrap().clone();
    let s: Arc<str> = Arc::from("s");
    assert_eq!(
        got[..4],
        [
            SupervisorEvent::ChildStarted {
                supervisor: s.clone(),
                child: "w".into()
            },
            SupervisorEvent::ChildExited {
                supervisor: s.clone(),
                child: "w".into(),
                reason: ExitReason::Error("boom error".into())
            },
            SupervisorEvent::ChildStarted {
                supervisor: s.clone(),
                child: "w".into()
            },
            SupervisorEvent::ChildRestarted {
                supervisor: s.clone(),
                child: "w".into(),
                restarts: 1
            },
        ]
    );
    sup.shutdown().await;
}

#[actix_rt::test]
async fn count_children_and_a_tree_snapshot_describe_nested_supervisors() {
    let (c, l) = (counter(), Log::default());
    let (w, _) = ChildSpec::worker("w", move || Probe::new("w", &c, &l));
    let (inner, _) = ChildSpec::supervisor("inner", || {
        let (c, l) = (counter(), Log::default());
        Supervisor::new("inner")
            .strategy(Strategy::OneForAll)
            .child(ChildSpec::worker("x", move || Probe::new("x", &c, &l)).0)
    });
    let (dynamic, dyn_ref) = ChildSpec::dynamic("pool", || {
        DynamicSupervisor::new("pool", |k: &String| {
            let (c, l) = (counter(), Log::default());
            Ok::<_, String>(Probe::new(k, &c, &l))
        })
    });
    let root = Supervisor::new("root")
        .child(w)
        .child(inner)
        .child(dynamic)
        .start()
        .await;
    dyn_ref.start_child("k1".to_owned()).await.unwrap();
    assert_eq!(
        root.count_children().await.unwrap(),
        ChildCounts {
            specs: 3,
            active: 3,
            supervisors: 2,
            workers: 1
        }
    );
    let snap = root.snapshot(10).await.unwrap();
    assert_eq!(snap.children.len(), 3);
    assert_eq!(
        snap.children[1].subtree.as_ref().unwrap().strategy,
        "one_for_all"
    );
    let pool = snap.children[2].subtree.as_ref().unwrap();
    assert_eq!(
        (pool.strategy, pool.children[0].info.id.as_str()),
        ("simple_one_for_one", "k1")
    );
    let json = snap.to_json();
    assert!(
        json.contains(r#""name":"inner""#) && json.contains(r#""id":"k1""#),
        "{json}"
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn terminate_and_restart_child_by_id() {
    let log = Log::default();
    let (c, l) = (counter(), log.clone());
    let (spec, r) = ChildSpec::worker("w", move || Probe::new("w", &c, &l));
    let sup = Supervisor::new("s").child(spec).start().await;
    assert!(sup.terminate_child("w").await.unwrap());
    assert_eq!(r.send(Ping).await, Err(CallError::Stopped));
    assert!(!sup.terminate_child("nope").await.unwrap());
    sup.restart_child("w").await.unwrap().unwrap();
    assert_eq!(r.send(Ping).await, Ok(2));
    sup.shutdown().await;
}

#[actix_rt::test]
async fn a_bounded_call_to_a_busy_child_is_refused_at_once_when_its_mailbox_is_full() {
    let (c, l) = (counter(), Log::default());
    let (spec, r) = ChildSpec::worker("busy", move || Probe::new("busy", &c, &l));
    let sup = Supervisor::new("s").child(spec.mailbox(2)).start().await;
    assert_eq!(r.call(Ping).await, Ok(1));
    r.try_tell(Block(Duration::from_millis(300))).unwrap();
    let t0 = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let call = r.call(Ping);
            actix_rt::spawn(async move { (call.await, t0.elapsed()) })
        })
        .collect();
    let mut full = 0;
    let mut answered = 0;
    for c in calls {
        match c.await.unwrap() {
            (Err(CallError::Full), took) => {
                full += 1;
                assert!(
                    took < Duration::from_millis(250),
                    "a full mailbox is refused at once"
                );
            }
            (Ok(_), took) => {
                answered += 1;
                assert!(
                    took >= Duration::from_millis(250),
                    "accepted calls waited for the busy child"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        full >= 1 && answered >= 1,
        "full {full}, answered {answered}"
    );
    assert_eq!(full + answered, 10);
    sup.shutdown().await;
}

#[actix_rt::test]
async fn while_a_full_mailbox_refuses_bounded_calls_a_waiting_send_is_answered_once_there_is_room()
{
    let (c, l) = (counter(), Log::default());
    let (spec, r) = ChildSpec::worker("busy", move || Probe::new("busy", &c, &l));
    let sup = Supervisor::new("s").child(spec.mailbox(2)).start().await;
    assert_eq!(r.call(Ping).await, Ok(1));
    // The child is busy for a while; two messages fill its mailbox (the handle's one sender
    // parks), and the next bounded call is refused at once.
    r.try_tell(Block(Duration::from_millis(200))).unwrap();
    let queued = actix_rt::spawn(r.call(Ping));
    assert_eq!(r.call(Ping).await, Err(CallError::Full));
    assert_eq!(r.try_tell(Ping), Err(CallError::Timeout));
    // A control message still gets through.
    r.tell(Ping).unwrap();
    // `send` is the waiting kind: it is neither refused nor lost.
    let t0 = Instant::now();
    let waited = r.send(Ping).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "it waited for the busy child"
    );
    // Answered by the same incarnation (a `Ping` answers with the number of starts).
    assert_eq!(waited, Ok(1));
    assert_eq!(queued.await.unwrap(), Ok(1));
    // Once there is room, bounded calls are accepted again.
    assert_eq!(r.call(Ping).await, Ok(1));
    sup.shutdown().await;
}
