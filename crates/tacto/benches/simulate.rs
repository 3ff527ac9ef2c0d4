//! `tacto simulate` over a file, as a user runs it: a synthetic portfolio's inputs written as
//! JSON lines (the API's event format), then the real binary reads them, runs a simulated
//! month with the simulated provider answering every job, and writes every decision as a JSON
//! line. Timed from start to exit, `TACTO_BENCH_RUNS` times (default 3).
//!
//! `TACTO_BENCH_ACCOUNTS` accounts (default 100,000), 30 days from 2026-11-02, seed 2026 (the
//! portfolio of `tacto demo`). Events per second count every event of the simulated log: the
//! inputs read from the file, the provider's answers and the decisions written.
//!
//! Run: `cargo bench -p tacto --bench simulate` (`TACTO_BENCH_BIN`: time other builds of
//! `tacto`, or other arguments, on the same file, alternating: comma-separated, each a binary
//! and its extra arguments). BENCHMARKS.md records the figures.
#![allow(missing_docs)]

use std::io::{BufWriter, Write};
use std::process::Command;
use std::time::Instant;
use tacto_model::Timestamp;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `"{inputs} events in, {decisions} decisions written to …"`, from simulate's stderr.
fn counts(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr.lines().find(|l| l.contains(" events in, "))?;
    let (inputs, rest) = line.split_once(" events in, ")?;
    let decisions = rest.split_once(' ')?.0;
    Some((inputs.trim().parse().ok()?, decisions.parse().ok()?))
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(()); // `cargo test` runs benches once without --bench: nothing to check here
    }
    let accounts = env_or("TACTO_BENCH_ACCOUNTS", 100_000);
    let runs = env_or("TACTO_BENCH_RUNS", 3).max(1);
    let start = Timestamp::parse("2026-11-02T00:00:00Z")?;
    let dir = tempfile::tempdir()?;
    let events = dir.path().join("events.jsonl");
    let out = dir.path().join("decisions.jsonl");

    let inputs = tacto_policy::sim::synthetic_inputs(2026, accounts, start, 30);
    let mut w = BufWriter::new(std::fs::File::create(&events)?);
    for e in &inputs {
        serde_json::to_writer(&mut w, e)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    drop(w);
    let bytes = std::fs::metadata(&events)?.len();
    println!(
        "simulate: {accounts} accounts, {} input events ({:.1} MiB of JSON lines), {runs} runs",
        inputs.len(),
        bytes as f64 / (1024.0 * 1024.0)
    );
    drop(inputs);

    // Other builds of tacto (an earlier commit, say), or other arguments, can be timed on the
    // same file, alternating run by run: `TACTO_BENCH_BIN="/tmp/a,/tmp/b --threads 1"`.
    let variants: Vec<Vec<String>> = std::env::var("TACTO_BENCH_BIN")
        .unwrap_or(env!("CARGO_BIN_EXE_tacto").into())
        .split(',')
        .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .collect();
    let mut rates = vec![Vec::new(); variants.len()];
    let mut secs = vec![Vec::new(); variants.len()];
    for run in 1..=runs {
        for (i, variant) in variants.iter().enumerate() {
            let Some((binary, extra)) = variant.split_first() else {
                continue;
            };
            let began = Instant::now();
            let output = Command::new(binary)
                .arg("simulate")
                .arg("--events")
                .arg(&events)
                .arg("--out")
                .arg(&out)
                .args(["--simulated-provider", "--tail-days", "1"])
                .args(extra)
                .output()?;
            let elapsed = began.elapsed().as_secs_f64();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !output.status.success() {
                anyhow::bail!("tacto simulate failed: {stderr}");
            }
            let Some((inputs, decisions)) = counts(&stderr) else {
                anyhow::bail!("tacto simulate printed no counts: {stderr}");
            };
            let rate = (inputs + decisions) as f64 / elapsed;
            println!(
                "  run {run} of {}: {elapsed:.2} s, {inputs} events in, {decisions} decisions out: {rate:.0} events/s",
                variant.join(" ")
            );
            rates[i].push(rate);
            secs[i].push(elapsed);
        }
    }
    for ((variant, rates), secs) in variants.iter().zip(rates).zip(secs) {
        println!(
            "simulate ({}): median {:.2} s, {:.0} events/s (min {:.0}, max {:.0})",
            variant.join(" "),
            median(secs),
            median(rates.clone()),
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
    }
    Ok(())
}
