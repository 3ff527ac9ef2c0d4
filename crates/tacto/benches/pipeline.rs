//! The embedded pipeline at portfolio scale, through its public interfaces: the real `tacto run`
//! binary (ingest, decide and dispatch in one process on the embedded log), driven over HTTP.
//!
//! 1. Load: `TACTO_BENCH_ACCOUNTS` accounts (default 1,000,000) imported as CSV; timed until
//!    decide has folded every one and dispatch has taken every job (each account gets an SMS
//!    job at once). SMS are rate limited to `TACTO_BENCH_RATE_SMS` per second (default 100, a
//!    provider's usual rate), so the jobs stay queued at dispatch, as in a morning batch.
//! 2. Flood: `TACTO_BENCH_PAYMENTS` full payments (default 200,000) from 8 closed-loop clients
//!    as fast as the API takes them; timed until decide and dispatch have consumed the
//!    payments and their recalls. Meanwhile a probe pays one more account every 20 ms and
//!    polls its state until its queued job is gone: the payment-to-recall latency under load.
//! 3. Steady: the same probe under a fixed, lower load (`TACTO_BENCH_STEADY_RATE` payments/s,
//!    default half of the flood's rate) for 20 s.
//!
//! "Recalled" is what the API shows: decide has folded the payment and withdrawn the job, so
//! dispatch's last look refuses it (the recall record on the log follows in the same step).
//! Figures are printed; BENCHMARKS.md records them. Run: `cargo bench -p tacto --bench pipeline`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../../../tests/common/mod.rs"]
mod common;

const POLICY: &str = r#"
version = "bench-1"
jitter_minutes = 0
[[segments]]
name = "all"
cadence = "main"
[cadences.main]
steps = [{ day = 0, channel = "sms", template = "reminder" }]
[[pack_overrides]]
id = "ZZ"
name = "Bench territory without hour restrictions"
zones = ["UTC"]
"#;

const BALANCE: i64 = 50_000;
const KEY: &str = "Bearer bench";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// `tacto run`, killed when dropped.
struct Tacto {
    child: Child,
    base: String,
}

impl Tacto {
    fn start(dir: &Path, rate_sms: usize) -> Self {
        let (child, base) = common::spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_tacto"))
                .args(["run", "--listen", "127.0.0.1:0", "--api-keys", "bench"])
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--policy")
                .arg(dir.join("policy.toml"))
                .args(["--rate-sms", &rate_sms.to_string()])
                .env("RUST_LOG", "warn")
                .stderr(Stdio::inherit()),
        );
        Self { child, base }
    }

    /// Resident memory of the process, from /proc.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Tacto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// POSTs until the API takes it (503 while the log is busy is retried).
fn post(agent: &ureq::Agent, url: &str, content_type: &str, body: &[u8]) -> serde_json::Value {
    loop {
        let mut r = agent
            .post(url)
            .header("Authorization", KEY)
            .header("Content-Type", content_type)
            .send(body)
            .expect("request");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        match status {
            200..=299 => return serde_json::from_str(&text).expect("JSON answer"),
            503 => std::thread::sleep(Duration::from_millis(5)),
            _ => panic!("POST {url}: {status} {text}"),
        }
    }
}

/// The counters of `/metrics` this bench waits on.
#[derive(Debug, Default)]
struct Counters {
    decide_consumed: u64,
    decide_lag: u64,
    dispatch_consumed: u64,
}

fn counters(agent: &ureq::Agent, base: &str) -> Counters {
    let text = agent
        .get(format!("{base}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v = value.parse::<f64>().unwrap_or(0.0) as u64;
        if name.starts_with("tacto_events_consumed_total") {
            if name.contains("service=\"decide\"") {
                c.decide_consumed += v;
            } else if name.contains("service=\"dispatch\"") {
                c.dispatch_consumed += v;
            }
        } else if name.starts_with("tacto_consumer_lag") && name.contains("service=\"decide\"") {
            c.decide_lag += v;
        }
    }
    c
}

/// Waits until decide has consumed `decide` events with no lag and dispatch `dispatch`
/// records; returns when that was first seen.
fn wait_for(agent: &ureq::Agent, base: &str, decide: u64, dispatch: u64) -> Instant {
    let limit = Instant::now() + Duration::from_secs(3600);
    loop {
        let c = counters(agent, base);
        if c.decide_consumed >= decide && c.decide_lag == 0 && c.dispatch_consumed >= dispatch {
            return Instant::now();
        }
        assert!(
            Instant::now() < limit,
            "the pipeline never caught up: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn account_id(i: usize) -> String {
    format!("acc-{i:08}")
}

fn csv_chunk(from: usize, to: usize) -> Vec<u8> {
    let mut s = String::with_capacity((to - from) * 96 + 128);
    s.push_str(
        "account_id,person_id,currency,debt_id,balance_minor,due_date,country,phone,phone_consent,language\n",
    );
    for i in from..to {
        s.push_str(&format!(
            "{},p{i},USD,d1,{BALANCE},2026-01-01,ZZ,+1212555{:04},true,en\n",
            account_id(i),
            i % 10_000
        ));
    }
    s.into_bytes()
}

fn payment(agent: &ureq::Agent, base: &str, account: &str) -> serde_json::Value {
    let body = serde_json::json!({"account_id": account, "payment_id": format!("{account}-full"),
        "amount_minor": BALANCE, "currency": "USD"});
    post(
        agent,
        &format!("{base}/v1/payments"),
        "application/json",
        body.to_string().as_bytes(),
    )
}

/// Whether the API shows `account` with no queued job.
fn nothing_queued(agent: &ureq::Agent, base: &str, account: &str) -> bool {
    agent
        .get(format!("{base}/v1/accounts/{account}"))
        .header("Authorization", KEY)
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["queued_jobs"].as_array().map(Vec::is_empty))
        .unwrap_or(false)
}

/// Hands out accounts no one has paid yet (each paid once).
struct Unpaid(AtomicUsize, usize);

impl Unpaid {
    fn next(&self) -> Option<String> {
        let i = self.0.fetch_add(1, Ordering::Relaxed);
        // Spread over the portfolio: a stride coprime with any portfolio size we use.
        (i < self.1).then(|| account_id((i * 7_919) % self.1))
    }
}

/// Pays one account every `every` until `stop`; returns each payment's recall latency (from
/// the acknowledgement to the job being gone), in microseconds.
fn probe(base: &str, unpaid: &Unpaid, every: Duration, stop: &AtomicBool) -> Vec<u64> {
    let agent = agent();
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let Some(account) = unpaid.next() else { break };
        assert!(
            !nothing_queued(&agent, base, &account),
            "{account} had no queued job"
        );
        payment(&agent, base, &account);
        let acked = Instant::now();
        while !nothing_queued(&agent, base, &account) {
            assert!(
                acked.elapsed() < Duration::from_secs(120),
                "{account}: never recalled"
            );
        }
        latencies.push(acked.elapsed().as_micros() as u64);
        if let Some(left) = every.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    }
    latencies
}

fn percentiles(name: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    if v.is_empty() {
        println!("{name}: no samples");
        return;
    }
    println!(
        "{name}: {} samples; payment-to-recall p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        v.len(),
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

/// Closed-loop clients paying accounts as fast as the API acknowledges; returns how many.
fn flood(base: &str, unpaid: &Unpaid, clients: usize, payments: usize) -> usize {
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let agent = agent();
                while done.fetch_add(1, Ordering::Relaxed) < payments {
                    let Some(account) = unpaid.next() else { break };
                    payment(&agent, base, &account);
                }
            });
        }
    });
    done.load(Ordering::Relaxed).min(payments)
}

/// Open-loop clients paying `rate` accounts per second for `secs` seconds; returns how many.
fn steady(base: &str, unpaid: &Unpaid, rate: usize, secs: u64) -> usize {
    let clients = 8;
    let sent = AtomicUsize::new(0);
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for c in 0..clients {
            let sent = &sent;
            s.spawn(move || {
                let agent = agent();
                let interval = Duration::from_secs_f64(clients as f64 / rate as f64);
                let mut next = started + interval.mul_f64(c as f64 / clients as f64);
                while next < end {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    let Some(account) = unpaid.next() else { break };
                    payment(&agent, base, &account);
                    sent.fetch_add(1, Ordering::Relaxed);
                    next += interval;
                }
            });
        }
    });
    sent.load(Ordering::Relaxed)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that is not ours means "not this bench".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"pipeline".contains(a.as_str()))
    {
        return;
    }
    let accounts = env("TACTO_BENCH_ACCOUNTS", 1_000_000);
    let payments = env("TACTO_BENCH_PAYMENTS", 200_000).min(accounts / 2);
    let rate_sms = env("TACTO_BENCH_RATE_SMS", 100);
    let chunk = 50_000;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("policy.toml"), POLICY).expect("policy");
    let tacto = Tacto::start(dir.path(), rate_sms);
    let base = tacto.base.clone();
    let http = agent();
    println!("embedded pipeline: {accounts} accounts, SMS at {rate_sms}/s");

    // 1. Load.
    let started = Instant::now();
    let mut from = 0;
    while from < accounts {
        let to = (from + chunk).min(accounts);
        let report = post(
            &http,
            &format!("{base}/v1/imports"),
            "text/csv",
            &csv_chunk(from, to),
        );
        assert_eq!(
            report["accepted"].as_u64(),
            Some((to - from) as u64),
            "{report}"
        );
        from = to;
    }
    let imported = started.elapsed();
    let folded = wait_for(&http, &base, accounts as u64, accounts as u64) - started;
    println!(
        "load: {accounts} accounts acknowledged in {:.1} s ({:.0}/s); folded by decide and every \
         job taken by dispatch after {:.1} s: {:.0} accounts/s through the pipeline; resident {:.0} MiB",
        imported.as_secs_f64(),
        accounts as f64 / imported.as_secs_f64(),
        folded.as_secs_f64(),
        accounts as f64 / folded.as_secs_f64(),
        tacto.rss_mib()
    );
    let base_counts = counters(&http, &base);

    // 2. Flood, with the probe.
    let unpaid = Unpaid(AtomicUsize::new(0), accounts);
    let stop = AtomicBool::new(false);
    let clients = 8;
    let (paid, flood_time, under_flood) = std::thread::scope(|s| {
        let probe = s.spawn(|| probe(&base, &unpaid, Duration::from_millis(20), &stop));
        let started = Instant::now();
        let paid = flood(&base, &unpaid, clients, payments);
        let acked = started.elapsed();
        // Each payment is one event for decide, and its recall one record for dispatch.
        let caught_up = wait_for(
            &http,
            &base,
            base_counts.decide_consumed + paid as u64,
            base_counts.dispatch_consumed + paid as u64,
        ) - started;
        stop.store(true, Ordering::Relaxed);
        (paid, (acked, caught_up), probe.join().expect("probe"))
    });
    let (acked, caught_up) = flood_time;
    let flood_rate = paid as f64 / caught_up.as_secs_f64();
    println!(
        "flood: {paid} payments from {clients} clients acknowledged in {:.1} s ({:.0}/s); \
         folded and recalled after {:.1} s: {:.0} payments/s through the pipeline; resident {:.0} MiB",
        acked.as_secs_f64(),
        paid as f64 / acked.as_secs_f64(),
        caught_up.as_secs_f64(),
        flood_rate,
        tacto.rss_mib()
    );
    percentiles("under the flood", under_flood);

    // 3. Steady load at a fixed rate below the flood's.
    let rate = env("TACTO_BENCH_STEADY_RATE", (flood_rate / 2.0) as usize).max(1);
    let stop = AtomicBool::new(false);
    let latencies = Mutex::new(Vec::new());
    let sent = std::thread::scope(|s| {
        s.spawn(|| {
            let l = probe(&base, &unpaid, Duration::from_millis(20), &stop);
            latencies.lock().expect("latencies").extend(l);
        });
        let sent = steady(&base, &unpaid, rate, 20);
        stop.store(true, Ordering::Relaxed);
        sent
    });
    println!(
        "steady: {sent} payments in 20 s ({:.0}/s offered, target {rate}/s)",
        sent as f64 / 20.0
    );
    percentiles(
        &format!("at {rate} payments/s"),
        latencies.into_inner().unwrap_or_default(),
    );
}
