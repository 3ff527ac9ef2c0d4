//! Fault injection on Kafka: `tacto ingest`, `tacto decide` and `tacto dispatch` as separate
//! processes on the test broker (Tansu). While clients push accounts, payments, promises,
//! disputes and opt-outs over HTTP, decide and dispatch are killed with SIGKILL at random
//! moments (one of the two each time, then restarted), the broker itself is down once for
//! `TACTO_CHAOS_BROKER_DOWN_SECS`, and the SMS provider behind the JSON webhook is slow, answers
//! 500 and 429, or hangs past the client's timeout. Afterwards the topics and the provider's
//! record must show what `tests/chaos.rs` checks on the embedded log:
//! - no acknowledged event lost (each acknowledgement's position holds that event);
//! - no duplicate send (no delivery of a job after the provider accepted it);
//! - no contact later than [`GRACE`] after a stop-event took effect;
//! - every job decided has an outcome, and a job reported not sent never reached the provider.
//!
//! When a stop-event takes effect differs from the embedded log: dispatch's last look reads
//! decide's state, so a payment acknowledged while decide is down (or while the broker is)
//! stops contact only once decide is back and holds the partitions again. The run records
//! these outages and checks each stop from the end of the outage it fell in.
//!
//! `TACTO_CHAOS_EVENTS` (default 2,000), `TACTO_CHAOS_KILLS` (default 4) and
//! `TACTO_CHAOS_BROKER_DOWN_SECS` (default 5) size it; `make chaos` runs 100,000 events, 25
//! kills and a 30 s broker outage and prints the figures.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tacto_log::events;

mod common;
use common::chaos::{
    Outcomes, env, kill_points, median_max, provider, run_clients, verify, wait_for_acks,
    wait_quiet,
};
use common::kafka::{Cluster, Service, eventually};

/// A delivery after a stop-event took effect this much later is a violation: decide restores
/// the partitions it takes over and folds their backlog, and dispatch catches up with decide's
/// state before its next batch.
const GRACE: Duration = Duration::from_secs(10);

/// The consumer-group session of decide (set by the cluster) and dispatch: a killed member's
/// partitions stay assigned to it this long.
const SESSION: Duration = Duration::from_secs(4);
const SESSION_MS: &str = "4000";

/// A stop acknowledged this long before a kill may not have been folded yet: the outage is
/// counted from then.
const LEAD: Duration = Duration::from_secs(2);

/// A time during which a stop-event acknowledged could not take effect.
#[derive(Clone, Copy, Debug)]
struct Outage {
    from: Instant,
    to: Instant,
}

/// When a stop acknowledged at `at` takes effect: the end of the latest outage it fell in.
fn effective(outages: &[Outage], at: Instant) -> Instant {
    outages
        .iter()
        .filter(|o| at >= o.from && at <= o.to)
        .map(|o| o.to)
        .max()
        .unwrap_or(at)
}

/// The decide and dispatch processes, replaced at every restart.
struct Services {
    decide: Service,
    dispatch: Service,
}

fn decide(c: &Cluster) -> Service {
    c.decide_with("decide", &[])
}

fn dispatch(c: &Cluster, provider: &str) -> Service {
    c.dispatch_with(&[
        "--sms-webhook",
        provider,
        "--rate-sms",
        "2000",
        "--session-timeout-ms",
        SESSION_MS,
    ])
}

/// Waits until a service answers `/readyz` with 200.
fn ready(s: &Service) {
    eventually("the service is ready", Duration::from_secs(120), || {
        s.request("GET", "/readyz", None).0 == 200
    });
}

/// What the killer did.
#[derive(Default)]
struct Faults {
    decide_kills: usize,
    dispatch_kills: usize,
    /// SIGKILL to listening again.
    restarts: Vec<Duration>,
    /// Decide outages and the broker outage.
    outages: Vec<Outage>,
    /// The broker outage, stop to the first acknowledgement after the restart.
    broker_down: Option<Duration>,
}

#[test]
fn sigkills_a_broker_outage_and_a_faulty_provider_lose_nothing_and_break_no_rule() {
    let events = env("TACTO_CHAOS_EVENTS", 2_000);
    let kills = env("TACTO_CHAOS_KILLS", 4);
    let down = Duration::from_secs(env("TACTO_CHAOS_BROKER_DOWN_SECS", 5) as u64);
    let seed = env("TACTO_CHAOS_SEED", 20261202) as u64;
    let workers = 8;
    let (url, deliveries) = provider(seed);
    let cluster = Arc::new(Mutex::new(Cluster::new(4)));
    let (services, ingest) = {
        let c = cluster.lock().expect("cluster");
        let decide = decide(&c);
        ready(&decide);
        let dispatch = dispatch(&c, &url);
        (
            Arc::new(Mutex::new(Services { decide, dispatch })),
            c.ingest(),
        )
    };
    let base = Arc::new(RwLock::new(ingest.base.clone()));
    let started = Instant::now();

    // The killer: SIGKILLs of decide or dispatch at random points (counts of acknowledgements
    // spread over the whole stream), each followed by a restart, and the broker down once, in
    // the middle of the run.
    let acked = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (cluster, services, acked, url) = (
            cluster.clone(),
            services.clone(),
            acked.clone(),
            url.clone(),
        );
        std::thread::spawn(move || {
            let mut faults = Faults::default();
            let mut rng = fastrand::Rng::with_seed(seed ^ 0xdead);
            let mut points = kill_points(seed, kills, events);
            let broker_at = events / 2;
            let at = points.partition_point(|p| *p < broker_at);
            points.insert(at, usize::MAX); // the broker outage
            let mut outage_done = false;
            for point in points {
                if point == usize::MAX {
                    wait_for_acks(&acked, broker_at);
                    let from = Instant::now();
                    cluster.lock().expect("cluster").broker.stop();
                    std::thread::sleep(down);
                    cluster.lock().expect("cluster").broker.spawn();
                    let before = acked.load(Ordering::SeqCst);
                    wait_for_acks(&acked, before + 1);
                    let to = Instant::now();
                    faults.broker_down = Some(to - from);
                    faults.outages.push(Outage {
                        from: from - LEAD,
                        to,
                    });
                    outage_done = true;
                    continue;
                }
                wait_for_acks(&acked, point);
                let c = cluster.lock().expect("cluster");
                let mut s = services.lock().expect("services");
                let t = Instant::now();
                if rng.bool() {
                    s.decide.kill9();
                    s.decide = decide(&c);
                    faults.restarts.push(t.elapsed());
                    ready(&s.decide);
                    // The dead member keeps its partitions until its session expires.
                    let to = Instant::now() + SESSION;
                    faults.outages.push(Outage { from: t - LEAD, to });
                    faults.decide_kills += 1;
                } else {
                    s.dispatch.kill9();
                    s.dispatch = dispatch(&c, &url);
                    faults.restarts.push(t.elapsed());
                    faults.dispatch_kills += 1;
                }
            }
            assert!(outage_done, "the broker outage did not happen");
            faults
        })
    };
    let acks = run_clients(&base, &acked, workers, events, seed);
    let pushed = started.elapsed();
    let faults = killer.join().expect("killer");

    // Settle: wait until the provider is quiet and every decided job has an outcome.
    let c = cluster.lock().expect("cluster");
    let settle = Instant::now();
    let mut o = Outcomes::default();
    while settle.elapsed() < Duration::from_secs(120) {
        wait_quiet(&deliveries);
        o = Outcomes::read(
            c.topic(events::DECISIONS).iter(),
            c.topic(events::EVENTS).iter(),
        );
        if o.pending() == 0 {
            break;
        }
    }
    let settled = settle.elapsed();
    let events_at = c.records_at(events::EVENTS);
    let deliveries = deliveries.lock().expect("lock");
    let verdict = verify(
        &acks,
        &deliveries,
        &o,
        |p, offset| events_at.get(&(p, offset)).cloned(),
        |at| effective(&faults.outages, at),
        GRACE,
    );
    let (median, max) = median_max(faults.restarts.clone());
    println!(
        "kafka chaos: {} events acknowledged in {:.1} s ({} new, {} duplicates of retried \
         requests) through {} SIGKILLs of decide and {} of dispatch; restart to listening: \
         median {median:.2} s, max {max:.2} s; broker down {:.1} s (stop to the next \
         acknowledgement)",
        acks.len(),
        pushed.as_secs_f64(),
        acks.iter().filter(|a| a.new).count(),
        acks.iter().filter(|a| !a.new).count(),
        faults.decide_kills,
        faults.dispatch_kills,
        faults.broker_down.unwrap_or_default().as_secs_f64(),
    );
    println!(
        "kafka chaos: {}; latest delivery after a stop-event took effect: {} ms; settled in \
         {:.1} s",
        verdict.summary,
        verdict.closest.as_millis(),
        settled.as_secs_f64(),
    );
    verdict.assert_held();
    assert_eq!(faults.decide_kills + faults.dispatch_kills, kills);
    drop(services);
    drop(ingest);
}
