//! `tacto demo`: a synthetic portfolio through a simulated month, then a summary and an
//! independent compliance audit of every contact.

use anyhow::Context;
use std::sync::Barrier;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;
use tacto_model::Timestamp;
use tacto_policy::Policy;
use tacto_policy::audit::{Violation, audit};
use tacto_policy::sim::{Simulator, Stats, default_shards, synthetic_inputs_of};

/// Options of `tacto demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Number of accounts in the portfolio.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Days to simulate.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Seed of the synthetic portfolio.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// First simulated day (RFC 3339).
    #[arg(long, default_value = "2026-11-02T00:00:00Z")]
    start: String,
    /// Threads, each simulating its share of the accounts (default: one per core). The
    /// summary is the same for any number.
    #[arg(long)]
    threads: Option<usize>,
}

/// What one thread simulated: its share of the accounts.
struct Shard {
    events: usize,
    stats: Stats,
    /// When every share's inputs were ready and the simulation began.
    began: Instant,
    simulated: Instant,
    violations: Vec<Violation>,
}

/// The inputs of accounts `k`, `k + n`, `k + 2n`… of the portfolio, simulated on their own;
/// `last` and `ready` make every share's clock run to the portfolio's last input.
fn shard(
    args: &Args,
    start: Timestamp,
    policy: &Policy,
    (k, n): (u64, u64),
    last: &AtomicI64,
    ready: &Barrier,
) -> Shard {
    let inputs = synthetic_inputs_of(
        args.seed,
        (k..args.accounts).step_by(n as usize),
        start,
        args.days,
    );
    if let Some(e) = inputs.last() {
        last.fetch_max(e.occurred_at.as_micros(), Ordering::Relaxed);
    }
    ready.wait();
    let began = Instant::now();
    let until = start
        .plus(chrono::TimeDelta::days(i64::from(args.days)))
        .max(Timestamp::from_micros(last.load(Ordering::Relaxed)));
    let mut sim = Simulator::new(policy, true, true);
    sim.reserve_log(inputs.len().saturating_mul(LOG_PER_INPUT));
    for e in inputs {
        sim.push(e);
    }
    sim.advance_to(until);
    let simulated = Instant::now();
    Shard {
        events: sim.log.len(),
        violations: audit(&sim.log, policy),
        stats: sim.stats,
        began,
        simulated,
    }
}

/// Events recorded per input event, at most, in a simulated month of the synthetic portfolio
/// (about 4.6: the decisions and the provider's answers they cause), rounded up.
const LOG_PER_INPUT: usize = 6;

/// Runs the demo and prints its summary.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let start = Timestamp::parse(&args.start).context("--start must be an RFC 3339 instant")?;
    let policy = Policy::example();
    let threads = args.threads.unwrap_or_else(default_shards).clamp(1, 1024);
    // Each thread has its own copy of the policy: no thread waits on another's caches.
    let policies = (0..threads)
        .map(|_| policy.copy_for_thread())
        .collect::<Result<Vec<_>, _>>()?;
    let (last, ready) = (AtomicI64::new(i64::MIN), Barrier::new(threads));
    let began = Instant::now();
    let shards: Vec<Shard> = std::thread::scope(|s| {
        let handles: Vec<_> = policies
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let (last, ready) = (&last, &ready);
                s.spawn(move || shard(args, start, p, (k as u64, threads as u64), last, ready))
            })
            .collect();
        handles
            .into_iter()
            // A panic in a thread is a defect of the core: carry it on here.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let ended = shards.iter().map(|x| x.simulated).max().unwrap_or(began);
    let simulating = shards.iter().map(|x| x.began).min().unwrap_or(began);
    let (elapsed, generating) = (ended - began, simulating - began);
    let simulation = ended - simulating;
    let mut stats = Stats::default();
    for x in &shards {
        stats.merge(&x.stats);
    }
    let events: usize = shards.iter().map(|x| x.events).sum();
    let violations: Vec<&Violation> = shards.iter().flat_map(|x| &x.violations).collect();
    let s = &stats;
    let count = |k: &str| s.by_type.get(k).copied().unwrap_or(0);

    println!(
        "Tacto demo: {} accounts, {} simulated days, policy {}",
        args.accounts,
        args.days,
        policy.version()
    );
    println!("  events processed        {events:>10}");
    println!(
        "  wall time               {:>10.2} s ({:.0} events/s on {threads} threads)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "    generating inputs     {:>10.2} s",
        generating.as_secs_f64()
    );
    println!(
        "    simulating            {:>10.2} s ({:.0} events/s)",
        simulation.as_secs_f64(),
        events as f64 / simulation.as_secs_f64()
    );
    println!("contacts scheduled by channel");
    for (c, n) in &s.contacts {
        println!("  {:<24}{n:>10}", c.as_str());
    }
    println!("deferrals by reason (a deferred contact is sent later, never dropped)");
    for (r, n) in &s.deferrals {
        println!("  {r:<24}{n:>10}");
    }
    println!("suppressions by reason");
    for (r, n) in &s.suppressions {
        println!("  {r:<24}{n:>10}");
    }
    println!("recalled jobs by reason");
    for (r, n) in &s.recalls {
        println!("  {r:<24}{n:>10}");
    }
    println!("promises");
    println!("  {:<24}{:>10}", "made", count("promise_made"));
    println!("  {:<24}{:>10}", "kept", count("promise_kept"));
    println!("  {:<24}{:>10}", "broken", count("promise_broken"));
    println!(
        "  {:<24}{:>10}",
        "customer-service tasks",
        count("task_created")
    );
    println!("compliance audit of every contact");
    println!("  {:<24}{:>10}", "violations found", violations.len());
    for v in violations.iter().take(10) {
        println!("  {}: {}", v.account_id, v.what);
    }
    if violations.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} compliance violations", violations.len())
    }
}
