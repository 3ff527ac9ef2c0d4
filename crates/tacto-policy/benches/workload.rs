//! The benchmark workload: a simulated month of a synthetic portfolio, recorded as the full
//! event log (inputs, provider outcomes and decisions) that the services would see.

use tacto_model::{Event, EventBody, Timestamp, synthetic};
use tacto_policy::Policy;
use tacto_policy::sim::Simulator;

/// Start of the simulated month.
pub fn start() -> Timestamp {
    Timestamp::parse("2026-11-02T00:00:00Z").unwrap_or(Timestamp::from_micros(0))
}

/// The inputs of `accounts` synthetic accounts over 30 days, in time order.
pub fn inputs(accounts: u64) -> Vec<Event> {
    let start = start();
    let mut inputs = Vec::new();
    for i in 0..accounts {
        let open = synthetic::account(11, i, start);
        if let EventBody::AccountUpserted(d) = &open.body {
            let bal = d.debts.iter().map(|x| x.balance_minor).sum();
            inputs.extend(synthetic::behaviour(11, i, start, 30, bal, &d.currency));
        }
        inputs.push(open);
    }
    inputs.sort_by_key(|e| e.occurred_at);
    inputs
}

/// Runs `inputs` through 30 simulated days with the simulated provider; returns the
/// simulator (its log when recording, its account states).
pub fn simulate(policy: &Policy, inputs: Vec<Event>, record: bool) -> Simulator<'_> {
    let mut sim = Simulator::new(policy, true, record);
    for e in inputs {
        sim.push(e);
    }
    sim.advance_to(start().plus(chrono::TimeDelta::days(30)));
    sim
}

/// Runs `accounts` synthetic accounts through 30 simulated days; returns the log and the
/// simulator (for its account states).
pub fn month(policy: &Policy, accounts: u64, record: bool) -> (Vec<Event>, Simulator<'_>) {
    let mut sim = simulate(policy, inputs(accounts), record);
    (std::mem::take(&mut sim.log), sim)
}
