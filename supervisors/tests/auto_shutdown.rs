//! OTP 24's significant children and `auto_shutdown`: a supervisor that ends by itself, with
//! reason `shutdown` and its other children stopped in reverse order, once any or all of its
//! significant children have ended on their own; ends it caused do not count; and the specs
//! OTP refuses are refused.

mod common;

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use supervisors::Supervisor;
use supervisors::*;

const T: Duration = Duration::from_secs(5);

/// A worker named `name` with its own start counter, and its handle.
fn worker(name: &str, log: &Log) -> (ChildSpec, ChildRef<Probe>, Arc<AtomicU32>) {
    let (c, l, n) = (counter(), log.clone(), name.to_owned());
    let starts_ = c.clone();
    let (spec, r) = ChildSpec::worker(name, move || Probe::new(&n, &c, &l));
    (spec, r, starts_)
}

async fn joined(sup: &SupervisorRef) -> Option<ExitReason> {
    actix::clock::timeout(T, sup.join())
        .await
        .expect("the supervisor ends")
}

#[actix_rt::test]
async fn any_significant_child_that_ends_for_good_ends_the_supervisor_in_order() {
    quiet_panics();
    let log = Log::default();
    let (a, _, _) = worker("a", &log);
    let (s, s_ref, s_starts) = worker("s", &log);
    let (c, c_ref, _) = worker("c", &log);
    let sup = Supervisor::new("job")
        .auto_shutdown(AutoShutdown::AnySignificant)
        .intensity(Intensity::new(5, Duration::from_secs(5)))
        .child(a)
        .child(s.restart(Restart::Transient).significant(true))
        .child(c)
        .start()
        .await;
    // A crash is restarted (transient): the child has not ended for good.
    let _ = s_ref.send(Die(Exit::Panic)).await;
    wait_until("s restarted", T, || starts(&s_starts) == 2).await;
    wait_until("s running", T, || s_ref.state() == ChildState::Running).await;
    assert_eq!(c_ref.send(Ping).await, Ok(1), "the supervisor carries on");
    assert_eq!(sup.state(), ChildState::Running);
    // A normal end is not restarted: the supervisor ends, the others stop in reverse order.
    let _ = s_ref.send(Die(Exit::Normal)).await;
    assert_eq!(joined(&sup).await, Some(ExitReason::Shutdown(None)));
    let stops: Vec<String> = log.matching("stop");
    assert_eq!(stops, ["stop s", "stop s", "stop c", "stop a"]);
}

#[actix_rt::test]
async fn all_significant_waits_for_every_significant_child() {
    let log = Log::default();
    let (s1, s1_ref, _) = worker("s1", &log);
    let (s2, s2_ref, _) = worker("s2", &log);
    let (w, w_ref, _) = worker("w", &log);
    let sup = Supervisor::new("job")
        .auto_shutdown(AutoShutdown::AllSignificant)
        .child(w)
        .child(s1.restart(Restart::Transient).significant(true))
        .child(s2.restart(Restart::Temporary).significant(true))
        .start()
        .await;
    let _ = s1_ref.send(Die(Exit::Shutdown)).await;
    wait_until("s1 stopped", T, || s1_ref.state() == ChildState::Stopped).await;
    assert_eq!(w_ref.send(Ping).await, Ok(1), "one of two has ended");
    assert_eq!(sup.count_children().await.unwrap().active, 2);
    // A temporary child ends for good whatever the reason, even an error.
    let _ = s2_ref.send(Die(Exit::Error)).await;
    assert_eq!(joined(&sup).await, Some(ExitReason::Shutdown(None)));
    assert_eq!(w_ref.state(), ChildState::Stopped);
}

#[actix_rt::test]
async fn ends_the_supervisor_causes_itself_do_not_count() {
    quiet_panics();
    let log = Log::default();
    let (s, s_ref, s_starts) = worker("s", &log);
    let (b, b_ref, _) = worker("b", &log);
    let sup = Supervisor::new("job")
        .strategy(Strategy::OneForAll)
        .auto_shutdown(AutoShutdown::AnySignificant)
        .intensity(Intensity::new(5, Duration::from_secs(5)))
        .child(s.restart(Restart::Transient).significant(true))
        .child(b)
        .start()
        .await;
    // b's crash makes the supervisor stop s (one_for_all) and start both again.
    let _ = b_ref.send(Die(Exit::Panic)).await;
    wait_until("s started again", T, || starts(&s_starts) == 2).await;
    wait_until("b running", T, || b_ref.state() == ChildState::Running).await;
    assert_eq!(sup.state(), ChildState::Running);
    // Nor does terminate_child.
    assert!(sup.terminate_child("s").await.unwrap());
    assert_eq!(s_ref.state(), ChildState::Stopped);
    assert_eq!(sup.count_children().await.unwrap().active, 1);
    assert_eq!(b_ref.send(Ping).await, Ok(2));
    assert_eq!(sup.shutdown().await, Some(ExitReason::Shutdown(None)));
}

#[actix_rt::test]
async fn significant_children_are_refused_where_otp_refuses_them() {
    let log = Log::default();
    let (p, _, p_starts) = worker("p", &log);
    let sup = Supervisor::new("s")
        .auto_shutdown(AutoShutdown::AnySignificant)
        .child(p.significant(true))
        .start()
        .await;
    assert_eq!(
        joined(&sup).await,
        Some(ExitReason::Shutdown(Some(
            "bad_significant(p: a permanent child)".into()
        )))
    );
    let (t, _, t_starts) = worker("t", &log);
    let sup = Supervisor::new("s")
        .child(t.restart(Restart::Transient).significant(true))
        .start()
        .await;
    assert_eq!(
        joined(&sup).await,
        Some(ExitReason::Shutdown(Some(
            "bad_significant(t: auto_shutdown is never)".into()
        )))
    );
    assert_eq!(starts(&p_starts) + starts(&t_starts), 0, "nothing started");
}
