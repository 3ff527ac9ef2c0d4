//! Bytes of account state per account at 100,000 and 1,000,000 accounts.
//!
//! States come from a simulated month of 10,000 synthetic accounts (see `workload.rs`), each
//! cloned under new ids up to the target count, held in the `HashMap` a decide instance uses.
//! Bytes are counted by an instrumented global allocator (heap) plus the map's inline slots.
//! Run with `cargo bench -p tacto-policy --bench state_size`.
#![allow(missing_docs)]

use compact_str::CompactString;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::collections::HashMap;
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
    for n in [100_000usize, 1_000_000] {
        let region = Region::new(GLOBAL);
        let mut map: HashMap<CompactString, Account> = HashMap::with_capacity(n);
        for i in 0..n {
            let mut a = templates[i % templates.len()].clone();
            let id = CompactString::from(format!("acct-{i:07}"));
            a.id = id.clone();
            map.insert(id, a);
        }
        let s = region.change();
        let live =
            s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64;
        println!(
            "state_size: {n} accounts: {:.1} MiB live heap, {:.0} bytes/account",
            live as f64 / 1048576.0,
            live as f64 / n as f64
        );
        drop(map);
    }
}
