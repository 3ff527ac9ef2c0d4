//! `tacto demo`: a synthetic portfolio through a simulated month, then a summary and an
//! independent compliance audit of every contact.

use anyhow::Context;
use std::time::Instant;
use tacto_model::Timestamp;
use tacto_policy::Policy;
use tacto_policy::audit::audit;
use tacto_policy::sim::{Simulator, synthetic_inputs};

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
}

/// Events recorded per input event, at most, in a simulated month of the synthetic portfolio
/// (about 4.6: the decisions and the provider's answers they cause), rounded up.
const LOG_PER_INPUT: usize = 6;

/// Runs the demo and prints its summary.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let start = Timestamp::parse(&args.start).context("--start must be an RFC 3339 instant")?;
    let policy = Policy::example();
    let began = Instant::now();
    let inputs = synthetic_inputs(args.seed, args.accounts, start, args.days);
    let mut sim = Simulator::new(&policy, true, true);
    sim.reserve_log(inputs.len().saturating_mul(LOG_PER_INPUT));
    for e in inputs {
        sim.push(e);
    }
    sim.advance_to(start.plus(chrono::TimeDelta::days(i64::from(args.days))));
    let elapsed = began.elapsed();
    let violations = audit(&sim.log, &policy);
    let s = &sim.stats;
    let count = |k: &str| s.by_type.get(k).copied().unwrap_or(0);

    println!(
        "Tacto demo: {} accounts, {} simulated days, policy {}",
        args.accounts,
        args.days,
        policy.version()
    );
    println!("  events processed        {:>10}", sim.log.len());
    println!(
        "  wall time               {:>10.2} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        sim.log.len() as f64 / elapsed.as_secs_f64()
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
