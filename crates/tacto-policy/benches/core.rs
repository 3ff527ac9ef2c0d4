//! Core throughput: fold + decide per event on one core, against Avro-decoding the same events,
//! and a whole simulation (timers, simulated provider, recording) per event.
//!
//! Run with `cargo bench -p tacto-policy --bench core`. The workload is a simulated month of
//! 2,000 synthetic accounts across every jurisdiction pack (see `workload.rs`).
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tacto_model::avro;
use tacto_policy::store::AccountStore;
use tacto_policy::{Policy, decide};

#[path = "workload.rs"]
mod workload;

fn bench(c: &mut Criterion) {
    let policy = Policy::example();
    let (log, _) = workload::month(&policy, 2_000, true);
    let encoded: Vec<Vec<u8>> = log
        .iter()
        .map(|e| avro::encode(e).unwrap_or_default())
        .collect();
    eprintln!(
        "workload: {} events, {} bytes of Avro",
        log.len(),
        encoded.iter().map(Vec::len).sum::<usize>()
    );
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(log.len() as u64));
    g.sample_size(20);
    // The map a decide instance keeps: one entry per account, sized for the portfolio.
    let fresh = || AccountStore::with_capacity(4_096);
    g.bench_function("fold_and_decide", |b| {
        b.iter_batched(
            fresh,
            |mut accounts| {
                for e in &log {
                    let (_, a) = accounts.apply_then(e);
                    black_box(decide(a, e.occurred_at, &policy));
                }
                accounts
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("fold_only", |b| {
        b.iter_batched(
            fresh,
            |mut accounts| {
                for e in &log {
                    accounts.apply(e);
                }
                accounts
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("avro_decode", |b| {
        b.iter(|| {
            for bytes in &encoded {
                let _ = black_box(avro::decode(bytes));
            }
        })
    });
    g.finish();

    // A whole simulation: the simulated clock, timers, the simulated provider's answers and
    // every output recorded, as `tacto demo` and `tacto simulate` run it.
    let inputs = workload::inputs(SIMULATED_ACCOUNTS);
    let events = workload::simulate(&policy, inputs.clone(), true).log.len();
    eprintln!("simulation: {SIMULATED_ACCOUNTS} accounts, {events} events");
    let mut g = c.benchmark_group("simulate");
    g.throughput(Throughput::Elements(events as u64));
    g.sample_size(10);
    for (name, record) in [("month_recorded", true), ("month_counted", false)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || inputs.clone(),
                |inputs| workload::simulate(&policy, inputs, record),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Accounts in the simulation benchmark.
const SIMULATED_ACCOUNTS: u64 = 20_000;

criterion_group!(benches, bench);
criterion_main!(benches);
