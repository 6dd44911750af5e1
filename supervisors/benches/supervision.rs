//! Supervision benchmarks: request/reply round trip to a supervised child, starting 100k dynamic
//! children (time, and resident memory per child), and crash → restarted → answering latency.
//!
//! Run with `cargo bench -p supervisors --bench supervision`. Besides criterion's figures, the
//! memory per child and the crash-latency median/p99 are printed as `figure:` lines.

use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use supervisors::{ChildSpec, ChildState, DynamicSupervisor, Intensity, Restart, Supervisor};

struct Echo(u64);

impl Actor for Echo {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Ping;

impl Handler<Ping> for Echo {
    type Result = u64;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u64 {
        self.0 += 1;
        self.0
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

impl Handler<Crash> for Echo {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("bench crash");
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn round_trip(c: &mut Criterion) {
    let sys = System::new();
    let (spec, echo) = ChildSpec::worker("echo", || Echo(0));
    let root = sys.block_on(Supervisor::new("root").child(spec).start());
    c.bench_function("round_trip_supervised_child", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(echo.send(Ping).await.unwrap());
                }
                t0.elapsed()
            })
        })
    });
    // The same round trip to a plain, unsupervised actix actor: the framework's own floor.
    let plain = sys.block_on(async { Echo(0).start() });
    c.bench_function("round_trip_plain_actix_baseline", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(plain.send(Ping).await.unwrap());
                }
                t0.elapsed()
            })
        })
    });
    sys.block_on(root.shutdown());
}

const CHILDREN: u64 = 100_000;

fn start_children(c: &mut Criterion) {
    let sys = System::new();
    let mut group = c.benchmark_group("dynamic");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(CHILDREN));
    let mut printed = false;
    group.bench_function("start_100k_children", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += sys.block_on(async {
                    let pool = DynamicSupervisor::new("pool", |k: &u64| Ok::<_, String>(Echo(*k))).restart(Restart::Transient).start();
                    let before = resident_bytes();
                    let t0 = Instant::now();
                    for k in 0..CHILDREN {
                        pool.start_child(k).await.unwrap();
                    }
                    let elapsed = t0.elapsed();
                    // Every child really runs: one answer from the last one started.
                    assert_eq!(pool.get(&(CHILDREN - 1)).unwrap().send(Ping).await, Ok(CHILDREN));
                    if !printed {
                        printed = true;
                        let per = resident_bytes().saturating_sub(before) / CHILDREN;
                        println!("figure: resident memory per supervised dynamic child: {per} bytes ({CHILDREN} children)");
                    }
                    pool.shutdown().await;
                    elapsed
                });
            }
            total
        })
    });
    group.finish();
}

fn crash_to_answer(c: &mut Criterion) {
    // The service logs panics through its own hook; here the hook stays silent so that what is
    // measured is containment + restart, not writing to stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let sys = System::new();
    let (spec, echo) = ChildSpec::worker("echo", || Echo(0));
    let root = sys.block_on(
        Supervisor::new("root")
            .intensity(Intensity::new(u32::MAX, Duration::from_secs(1)))
            .child(spec)
            .start(),
    );
    let mut samples: Vec<Duration> = Vec::new();
    c.bench_function("crash_restart_answer", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let _ = echo.send(Crash).await;
                    loop {
                        if echo.state() == ChildState::Running {
                            if let Ok(v) = echo.send(Ping).await {
                                std::hint::black_box(v);
                                break;
                            }
                        }
                        actix_rt::task::yield_now().await;
                    }
                    let d = t0.elapsed();
                    samples.push(d);
                    total += d;
                }
                total
            })
        })
    });
    samples.sort_unstable();
    if !samples.is_empty() {
        let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "figure: crash -> restarted -> answering: median {:?}, p99 {:?} over {} crashes",
            pick(0.5),
            pick(0.99),
            samples.len()
        );
    }
    sys.block_on(root.shutdown());
    let _ = std::panic::take_hook();
}

criterion_group!(benches, round_trip, start_children, crash_to_answer);
criterion_main!(benches);
