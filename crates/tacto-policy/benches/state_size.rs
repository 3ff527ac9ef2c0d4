//! Bytes of account state per account at 100,000, 1,000,000 and 10,000,000 accounts.
//!
//! States come from a simulated month of 10,000 synthetic accounts (see `workload.rs`), each
//! cloned under new ids up to the target count, held in the `AccountStore` a decide instance uses.
//! Bytes are counted by an instrumented global allocator (heap) plus the map's inline slots.
//! Run with `cargo bench -p tacto-policy --bench state_size`.
#![allow(missing_docs)]

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use tacto_model::AccountId;
use tacto_policy::store::AccountStore;
use tacto_policy::{Account, Policy};

#[path = "workload.rs"]
mod workload;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    let policy = Policy::example();
    let (_, sim) = workload::month(&policy, 10_000, false);
    let templates: Vec<Account> = sim.accounts().cloned().collect();
    drop(sim);
    println!(
        "state_size: Account is {} bytes inline",
        std::mem::size_of::<Account>()
    );
    for n in [100_000usize, 1_000_000, 10_000_000] {
        let region = Region::new(GLOBAL);
        let mut map = AccountStore::with_capacity(n);
        for i in 0..n {
            let mut a = templates[i % templates.len()].clone();
            a.id = AccountId(format!("acct-{i:07}").into()).as_str().into();
            map.insert(a);
        }
        let s = region.change();
        let rss = resident_bytes();
        let live =
            s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64;
        println!(
            "state_size: {n} accounts: {:.1} MiB live heap, {:.0} bytes/account (process resident: {:.1} MiB)",
            live as f64 / 1048576.0,
            live as f64 / n as f64,
            rss as f64 / 1048576.0
        );
        drop(map);
    }
}

/// Resident set size of this process (Linux), for comparison with the counted heap bytes.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
