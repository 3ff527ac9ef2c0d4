//! The pipeline at portfolio scale, through its public interfaces, driven over HTTP: the real
//! `tacto run` binary (ingest, decide and dispatch in one process on the embedded log), or with
//! `TACTO_BENCH_BACKEND=kafka` the three services `tacto ingest`, `tacto decide` and `tacto
//! dispatch` as separate processes on the test broker (Tansu, 4 partitions).
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
//! On Kafka, the same run then measures the raw broker through the same client library
//! (rdkafka), as ceilings for the load's rate: the load's account events alone (Avro-encoded,
//! one record per account) produced to a fresh 4-partition topic while a consumer reads them
//! back; and every record the load wrote (the events, decisions, contacts and both
//! changelogs, about four per account) copied to fresh topics and read back by as many
//! readers as Tacto's services read each topic with.
//!
//! Figures are printed; BENCHMARKS.md records them. Run: `cargo bench -p tacto --bench pipeline`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../../../tests/common/mod.rs"]
mod common;
use common::chaos::env;
use common::kafka::{Cluster, Service};
use common::{BALANCE, POLICY};

const KEY: &str = "Bearer k1";

/// Resident memory of a process, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes the files directly in `dir` take on disk (allocated blocks: the store's file is sparse).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
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
                .args(["run", "--listen", "127.0.0.1:0", "--api-keys", "k1"])
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--policy")
                .arg(dir.join("policy.toml"))
                .args(["--rate-sms", &rate_sms.to_string()])
                // `TACTO_BENCH_RUST_LOG` to see more (decide's snapshots, say) on stderr.
                .env(
                    "RUST_LOG",
                    std::env::var("TACTO_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stderr(Stdio::inherit()),
        );
        Self { child, base }
    }
}

impl Drop for Tacto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three Kafka services on the test broker.
struct KafkaServices {
    // Dropped first: the services stop before the broker.
    ingest: Service,
    decide: Service,
    dispatch: Service,
    cluster: Cluster,
}

/// `fetch.wait.max.ms=N` for every Kafka consumer when `TACTO_BENCH_FETCH_WAIT_MS` is set
/// (librdkafka's default is 500 ms). The stock test broker answered a fetch only when that wait
/// was over; as `make test-broker` builds it, it answers as soon as a record is there, as Kafka
/// does, and the default is what the bench uses.
fn fetch_wait() -> Option<String> {
    std::env::var("TACTO_BENCH_FETCH_WAIT_MS")
        .ok()
        .map(|ms| format!("fetch.wait.max.ms={ms}"))
}

/// A client of the test broker with the bench's consumer settings.
fn raw_log(cluster: &Cluster) -> tacto_log::kafka::KafkaLog {
    let mut settings = tacto_log::kafka::KafkaSettings::new(cluster.broker.addr());
    if let Some((k, v)) = fetch_wait().as_deref().and_then(|p| p.split_once('=')) {
        settings.properties.insert(k.into(), v.into());
    }
    tacto_log::kafka::KafkaLog::connect(settings).expect("kafka client")
}

/// The system under test.
enum Backend {
    Embedded(Tacto),
    Kafka(Box<KafkaServices>),
}

impl Backend {
    fn start(kafka: bool, dir: &Path, rate_sms: usize) -> Self {
        if !kafka {
            std::fs::write(dir.join("policy.toml"), POLICY).expect("policy");
            return Self::Embedded(Tacto::start(dir, rate_sms));
        }
        let mut cluster = Cluster::new(4);
        // Per-event info lines would be what the bench measures.
        cluster.env.push(("RUST_LOG".into(), "warn".into()));
        let fetch = fetch_wait();
        let props: Vec<&str> = fetch.iter().flat_map(|p| ["-X", p.as_str()]).collect();
        let decide = cluster.decide_with("decide", &props);
        let rate = rate_sms.to_string();
        let mut dispatch_args = vec!["--rate-sms", &rate];
        dispatch_args.extend_from_slice(&props);
        let dispatch = cluster.dispatch_with(&dispatch_args);
        let ingest = cluster.ingest_with(&props);
        Self::Kafka(Box::new(KafkaServices {
            ingest,
            decide,
            dispatch,
            cluster,
        }))
    }

    /// The URL of the HTTP API.
    fn api(&self) -> &str {
        match self {
            Self::Embedded(t) => &t.base,
            Self::Kafka(k) => &k.ingest.base,
        }
    }

    /// Where the services' `/metrics` are.
    fn metrics(&self) -> Vec<&str> {
        match self {
            Self::Embedded(t) => vec![&t.base],
            Self::Kafka(k) => vec![&k.decide.base, &k.dispatch.base],
        }
    }

    /// Resident memory of Tacto's processes (the broker's apart).
    fn rss(&self) -> String {
        match self {
            Self::Embedded(t) => format!("resident {:.0} MiB", rss_mib(t.child.id())),
            Self::Kafka(k) => {
                let broker = k
                    .cluster
                    .broker
                    .child
                    .as_ref()
                    .map_or(0.0, |c| rss_mib(c.id()));
                format!(
                    "resident: ingest {:.0}, decide {:.0}, dispatch {:.0}, broker {broker:.0} MiB",
                    rss_mib(k.ingest.child.id()),
                    rss_mib(k.decide.child.id()),
                    rss_mib(k.dispatch.child.id()),
                )
            }
        }
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
    /// Messages handed to a provider (`tacto_jobs_total{status="sent"}`).
    sent: u64,
}

/// The counters, summed over the services whose `/metrics` are at `bases`.
fn counters(agent: &ureq::Agent, bases: &[&str]) -> Counters {
    let mut text = String::new();
    for base in bases {
        text += &agent
            .get(format!("{base}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
    }
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
        } else if name.starts_with("tacto_jobs_total") && name.contains("status=\"sent\"") {
            c.sent += v;
        } else if name.starts_with("tacto_consumer_lag") && name.contains("service=\"decide\"") {
            // The embedded log's lag (on Kafka librdkafka samples it every 5 s, labelled with
            // the group: the consumed counts alone tell there).
            c.decide_lag += v;
        }
    }
    c
}

/// Waits until decide has consumed `decide` events with no lag and dispatch `dispatch`
/// records; returns when that was first seen.
fn wait_for(agent: &ureq::Agent, bases: &[&str], decide: u64, dispatch: u64) -> Instant {
    let limit = Instant::now() + Duration::from_secs(3600);
    loop {
        let c = counters(agent, bases);
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

/// A payment-to-recall latency printed on its own, with its time.
const SLOW_RECALL: Duration = Duration::from_millis(100);

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
        let acked_at = chrono::Utc::now();
        while !nothing_queued(&agent, base, &account) {
            assert!(
                acked.elapsed() < Duration::from_secs(120),
                "{account}: never recalled"
            );
        }
        let latency = acked.elapsed();
        if latency >= SLOW_RECALL {
            // With its times, to set beside the service's log (`TACTO_BENCH_RUST_LOG`).
            eprintln!(
                "slow recall: {account}, {} ms, acknowledged at {}",
                latency.as_millis(),
                acked_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            );
        }
        latencies.push(latency.as_micros() as u64);
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
        "{name}: {} samples; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
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

/// The raw broker as a ceiling: `n` account events, Avro-encoded as ingest writes them, produced
/// to a fresh 4-partition topic by two threads in batches of 1,000 (each batch acknowledged by
/// the broker, as ingest's are) while a consumer follows the topic; returns the produce rate
/// and the rate until the consumer has read every record, per second.
fn raw_broker(cluster: &Cluster, n: usize) -> (f64, f64) {
    use tacto_log::kafka::PartitionFollower;
    use tacto_log::{EventLog, events};
    let log = raw_log(cluster);
    let topic = "bench.raw";
    log.create_topic(topic, 4).expect("create the raw topic");
    let at = tacto_model::Timestamp::parse("2026-12-01T12:00:00Z").expect("time");
    let records: Vec<tacto_log::Record> = (0..n as u64)
        .map(|i| events::to_record(&tacto_model::synthetic::account(7, i, at)).expect("record"))
        .collect();
    let started = Instant::now();
    let (produced, consumed) = std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut f = PartitionFollower::new(log.settings(), topic).expect("follower");
            f.follow(&[0, 1, 2, 3]).expect("follow");
            let mut got = 0;
            while got < n {
                got += f
                    .receive(Duration::from_millis(100), usize::MAX, |_| ())
                    .expect("consume");
            }
            started.elapsed()
        });
        let producers: Vec<_> = records
            .chunks(n.div_ceil(2).max(1))
            .map(|part| {
                let log = &log;
                s.spawn(move || {
                    for batch in part.chunks(1_000) {
                        log.append(topic, batch).expect("produce");
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().expect("producer");
        }
        let produced = started.elapsed();
        (produced, consumer.join().expect("consumer"))
    });
    (
        n as f64 / produced.as_secs_f64(),
        n as f64 / consumed.as_secs_f64(),
    )
}

/// The topics a load writes on Kafka, with how many of Tacto's services read each one back
/// (decide reads the events; dispatch the contacts; ingest's view and dispatch's last look
/// decide's changelog; the decisions are for the audit trail and dispatch's job changelog for
/// its restart).
const LOAD_TOPICS: [(tacto_log::events::Topic, usize); 5] = {
    use tacto_log::events::*;
    [
        (EVENTS, 1),
        (DECISIONS, 0),
        (CONTACTS, 1),
        (DECIDE_STATE, 2),
        (DISPATCH_JOBS, 0),
    ]
};

/// Every partition's end offset of the topics a load writes, when it is through the pipeline.
fn load_ends(cluster: &Cluster) -> Vec<Vec<u64>> {
    use tacto_log::EventLog;
    let log = raw_log(cluster);
    LOAD_TOPICS
        .iter()
        .map(|(t, _)| {
            let n = log.partitions(t.name()).expect("partitions");
            (0..n)
                .map(|p| log.end_offset(t.name(), p).expect("end offset"))
                .collect()
        })
        .collect()
}

/// The raw broker moving the same records as the load: every record Tacto's services wrote
/// until the load was through (below `ends`, as [`load_ends`] took them), read back, then
/// produced again to fresh topics of the same partition counts, one thread per topic in
/// acknowledged batches of 1,000, while each copy is followed by as many readers as Tacto's
/// services read its topic with. Returns the records copied and the time until every reader
/// had every record.
fn raw_same_records(cluster: &Cluster, ends: &[Vec<u64>]) -> (usize, Duration) {
    use tacto_log::EventLog;
    use tacto_log::kafka::{PartitionFollower, read_partition_to_end};
    let log = raw_log(cluster);
    let copies: Vec<(String, usize, Vec<tacto_log::Record>)> = LOAD_TOPICS
        .iter()
        .zip(ends)
        .map(|((t, readers), ends)| {
            let mut records = Vec::new();
            for (p, end) in ends.iter().enumerate() {
                read_partition_to_end(log.settings(), t.name(), p as u32, |d| {
                    if d.position.offset < *end {
                        records.push(d.record);
                    }
                })
                .expect("read the load's records");
            }
            let copy = format!("bench.same.{}", t.name());
            log.create_topic(&copy, ends.len() as u32)
                .expect("create a copy topic");
            (copy, *readers, records)
        })
        .collect();
    let total = copies.iter().map(|(_, _, r)| r.len()).sum();
    let started = Instant::now();
    let read_by_all = std::thread::scope(|s| {
        let mut readers = Vec::new();
        for (copy, count, records) in &copies {
            let partitions: Vec<u32> = (0..log.partitions(copy).expect("partitions")).collect();
            for _ in 0..*count {
                let (settings, partitions, n) = (log.settings(), partitions.clone(), records.len());
                readers.push(s.spawn(move || {
                    let mut f = PartitionFollower::new(settings, copy).expect("follower");
                    f.follow(&partitions).expect("follow");
                    let mut got = 0;
                    while got < n {
                        got += f
                            .receive(Duration::from_millis(100), usize::MAX, |_| ())
                            .expect("consume");
                    }
                }));
            }
            let log = &log;
            s.spawn(move || {
                for batch in records.chunks(1_000) {
                    log.append(copy, batch).expect("produce");
                }
            });
        }
        for r in readers {
            r.join().expect("reader");
        }
        started.elapsed()
    });
    (total, read_by_all)
}

/// The raw broker's latency for one hop: `n` records produced one at a time to a fresh
/// topic, each timed from the produce call until a follower has read it, in microseconds.
fn raw_hop(cluster: &Cluster, n: usize) -> Vec<u64> {
    use tacto_log::kafka::PartitionFollower;
    use tacto_log::{EventLog, events};
    let log = raw_log(cluster);
    let topic = "bench.hop";
    log.create_topic(topic, 1).expect("create the hop topic");
    let at = tacto_model::Timestamp::parse("2026-12-01T12:00:00Z").expect("time");
    let mut f = PartitionFollower::new(log.settings(), topic).expect("follower");
    f.follow(&[0]).expect("follow");
    let mut seen = 0;
    (0..n as u64)
        .map(|i| {
            let record =
                events::to_record(&tacto_model::synthetic::account(9, i, at)).expect("record");
            let started = Instant::now();
            log.append(topic, &[record]).expect("produce");
            while seen <= i {
                seen += f
                    .receive(Duration::from_millis(100), 10, |_| ())
                    .expect("consume") as u64;
            }
            let took = started.elapsed();
            if took > Duration::from_millis(100) {
                println!("slow hop: record {i}, {} ms", took.as_millis());
            }
            took.as_micros() as u64
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that is not ours means "not this bench".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"pipeline".contains(a.as_str()))
    {
        return;
    }
    let kafka = std::env::var("TACTO_BENCH_BACKEND").is_ok_and(|b| b == "kafka");
    let accounts = env("TACTO_BENCH_ACCOUNTS", 1_000_000);
    let payments = env("TACTO_BENCH_PAYMENTS", 200_000).min(accounts / 2);
    let rate_sms = env("TACTO_BENCH_RATE_SMS", 100);
    let chunk = 50_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let system = Backend::start(kafka, dir.path(), rate_sms);
    let base = system.api().to_owned();
    let metrics = system.metrics();
    let http = agent();
    println!(
        "{} pipeline: {accounts} accounts, SMS at {rate_sms}/s",
        if kafka { "Kafka" } else { "embedded" }
    );

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
    let folded = wait_for(&http, &metrics, accounts as u64, accounts as u64) - started;
    println!(
        "load: {accounts} accounts acknowledged in {:.1} s ({:.0}/s); folded by decide and every \
         job taken by dispatch after {:.1} s: {:.0} accounts/s through the pipeline; {}",
        imported.as_secs_f64(),
        accounts as f64 / imported.as_secs_f64(),
        folded.as_secs_f64(),
        accounts as f64 / folded.as_secs_f64(),
        system.rss()
    );
    let load_ends = match &system {
        Backend::Kafka(k) => load_ends(&k.cluster),
        Backend::Embedded(_) => Vec::new(),
    };
    if !kafka {
        let bytes = disk_bytes(&dir.path().join("data"));
        println!(
            "store on disk after the load: {:.0} MiB ({:.0} B/account)",
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / accounts as f64
        );
    }
    let base_counts = counters(&http, &metrics);

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
            &metrics,
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
         folded and recalled after {:.1} s: {:.0} payments/s through the pipeline; {}",
        acked.as_secs_f64(),
        paid as f64 / acked.as_secs_f64(),
        caught_up.as_secs_f64(),
        flood_rate,
        system.rss()
    );
    percentiles("payment-to-recall under the flood", under_flood);

    // 3. Steady load at a fixed rate below the flood's.
    let rate = env("TACTO_BENCH_STEADY_RATE", (flood_rate / 2.0) as usize).max(1);
    let before_steady = (Instant::now(), counters(&http, &metrics).sent);
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
    let messages = counters(&http, &metrics).sent - before_steady.1;
    println!(
        "steady: {sent} payments in 20 s ({:.0}/s offered, target {rate}/s); meanwhile {messages} \
         SMS sent ({:.0}/s, limit {rate_sms}/s)",
        sent as f64 / 20.0,
        messages as f64 / before_steady.0.elapsed().as_secs_f64()
    );
    percentiles(
        &format!("payment-to-recall at {rate} payments/s"),
        latencies.into_inner().unwrap_or_default(),
    );

    // 4. On Kafka, the raw broker for the load's records.
    if let Backend::Kafka(k) = &system {
        let (produce, through) = raw_broker(&k.cluster, accounts);
        let load_rate = accounts as f64 / folded.as_secs_f64();
        println!(
            "raw broker: {accounts} account records produced at {produce:.0}/s, produced and \
             consumed at {through:.0}/s; the pipeline's load reached {:.0}% of it",
            100.0 * load_rate / through
        );
        let (records, took) = raw_same_records(&k.cluster, &load_ends);
        let same_rate = accounts as f64 / took.as_secs_f64();
        println!(
            "raw broker, the load's own records: {records} records ({:.1} per account) produced \
             and read by as many readers as Tacto's in {:.1} s: {same_rate:.0} accounts/s \
             ({:.0} records/s); the pipeline's load reached {:.0}% of it",
            records as f64 / accounts as f64,
            took.as_secs_f64(),
            records as f64 / took.as_secs_f64(),
            100.0 * load_rate / same_rate
        );
        percentiles(
            "raw broker, one hop (produce, then read)",
            raw_hop(&k.cluster, 200),
        );
    }
}
