//! Decide on the embedded log at portfolio scale: how fast it folds a loaded portfolio (every
//! account's upsert read from the log, decided, its decisions appended), how long the first
//! snapshot (every account) takes and how big it is, how long the next one takes after a
//! tenth of the accounts (at most 50,000) got a payment (only they are written), and how long
//! a restart takes (snapshot read and decoded, timers rebuilt), as medians with min–max over
//! several restarts.
//!
//! `cargo bench -p tacto-decide --bench restore` (`TACTO_BENCH_ACCOUNTS`, default 1,000,000;
//! `TACTO_BENCH_RESTARTS`, default 5; `TACTO_BENCH_LOG_CACHE_MIB`, the log's page cache, default
//! that of `EmbeddedLog::open`). A harness, not criterion: one run is minutes long.
#![allow(missing_docs)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};
use tacto_decide::{Decide, DecideConfig};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{EventLog, events};
use tacto_model::{Timestamp, synthetic};
use tacto_policy::Policy;

const PARTITIONS: u32 = 4;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn median_min_max(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let accounts = env("TACTO_BENCH_ACCOUNTS", 1_000_000);
    let restarts = env("TACTO_BENCH_RESTARTS", 5).max(1);
    let cache = env(
        "TACTO_BENCH_LOG_CACHE_MIB",
        (tacto_log::embedded::DEFAULT_CACHE_BYTES >> 20) as u64,
    ) as usize
        * (1 << 20);
    let at = Timestamp::parse("2026-11-16T15:00:00Z")?;
    let policy = Arc::new(Policy::example());
    let config = DecideConfig {
        snapshot_every_events: u64::MAX,
        snapshot_interval: Duration::from_secs(24 * 3600),
        ..DecideConfig::default()
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tacto.redb");

    let started = Instant::now();
    {
        let log = EmbeddedLog::open_with_cache(&path, cache)?;
        events::create_topics(&log, PARTITIONS)?;
        let mut batch = Vec::with_capacity(50_000);
        for i in 0..accounts {
            batch.push(events::to_record(&synthetic::account(7, i, at))?);
            if batch.len() == batch.capacity() || i + 1 == accounts {
                log.append(events::EVENTS.name(), &batch)?;
                batch.clear();
            }
        }
    }
    let loaded = started.elapsed();
    println!(
        "loaded {accounts} account upserts into the log in {:.1} s",
        loaded.as_secs_f64()
    );

    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open_with_cache(&path, cache)?);
    let mut decide = Decide::restore(log.clone(), policy.clone(), config.clone())?;
    let started = Instant::now();
    let mut consumed = 0u64;
    loop {
        let n = decide.step(at)?;
        if n == 0 {
            break;
        }
        consumed += n as u64;
    }
    let folded = started.elapsed();
    let decisions: u64 = (0..PARTITIONS)
        .map(|p| log.end_offset(events::DECISIONS.name(), p).unwrap_or(0))
        .sum();
    println!(
        "decide folded {consumed} events in {:.1} s: {:.0} events/s, {decisions} decisions appended",
        folded.as_secs_f64(),
        consumed as f64 / folded.as_secs_f64()
    );

    let started = Instant::now();
    let written = decide.snapshot()?;
    let snapshotted = started.elapsed();
    let mut size = log.get_blob("decide/snapshot")?.map_or(0, |b| b.len());
    log.scan_blobs("decide/account/", &mut |_, v| {
        size += v.len();
        Ok(())
    })?;
    println!(
        "first snapshot: {written} accounts in {:.2} s, {} bytes ({:.0} B/account)",
        snapshotted.as_secs_f64(),
        size,
        size as f64 / accounts.max(1) as f64
    );

    // Activity: a payment on a tenth of the accounts (at most 50,000), then the next snapshot.
    let paying = (accounts / 10).clamp(1, 50_000);
    let mut payments = Vec::with_capacity(paying as usize);
    for i in 0..paying {
        let open = synthetic::account(7, i, at);
        let currency = match &open.body {
            tacto_model::EventBody::AccountUpserted(d) => d.currency.clone(),
            _ => "USD".into(),
        };
        let e = tacto_model::Event {
            id: tacto_model::EventId(format!("bench-pay-{i}").into()),
            occurred_at: at,
            account_id: open.account_id.clone(),
            source: "bench".into(),
            body: tacto_model::EventBody::PaymentReceived {
                payment_id: format!("bench-pay-{i}"),
                debt_id: None,
                amount_minor: 100,
                currency,
                method: String::new(),
            },
        };
        payments.push(events::to_record(&e)?);
    }
    log.append(events::EVENTS.name(), &payments)?;
    while decide.step(at)? > 0 {}
    let started = Instant::now();
    let written = decide.snapshot()?;
    println!(
        "next snapshot after {paying} payments: {written} accounts written in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    drop(decide);

    let mut times = Vec::new();
    for _ in 0..restarts {
        let started = Instant::now();
        let d = Decide::restore(log.clone(), policy.clone(), config.clone())?;
        times.push(started.elapsed());
        let n = d.state.engine.read().map(|e| e.store.len()).unwrap_or(0);
        assert_eq!(n as u64, accounts, "every account restored");
    }
    let (median, min, max) = median_min_max(times);
    println!(
        "restart with {accounts} accounts ({restarts} runs): median {:.2} s (min {:.2}, max {:.2})",
        median.as_secs_f64(),
        min.as_secs_f64(),
        max.as_secs_f64()
    );
    Ok(())
}
