//! Fault injection on `tacto run` (the embedded log): the real binary is killed with SIGKILL at
//! random moments (ingest, decide and dispatch die together, mid-request, mid-step, mid-send)
//! while clients push a stream of accounts, payments, promises, disputes and opt-outs over
//! HTTP, and the SMS provider behind the JSON webhook is slow, answers 500 and 429, or hangs
//! past the client's timeout. Afterwards the log and the provider's record must show:
//! - no acknowledged event lost (each acknowledgement's position holds that event);
//! - no duplicate send (no delivery of a job after the provider accepted it);
//! - no contact after a payment in full, a promise, a dispute or an opt-out was acknowledged;
//! - every job decided has an outcome, and a job reported not sent never reached the provider.
//!
//! `TACTO_CHAOS_EVENTS` (default 3,000) and `TACTO_CHAOS_KILLS` (default 5) size it; `make
//! chaos` runs 100,000 events and 25 kills and prints the figures.
#![allow(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{EventLog, events};
use tacto_model::{EventBody, OutcomeStatus};

mod common;
use common::POLICY;

/// A delivery after a stop-event this much later is a violation (a fold takes milliseconds;
/// after a crash decide folds the tail before dispatch starts).
const GRACE: Duration = Duration::from_secs(3);
const BALANCE: i64 = 50_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

// ---- the SMS provider ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    SlowOk,
    ServerError,
    Throttled,
    /// Took it, then answered after the client's 10 s timeout (the send is ambiguous).
    Hung,
}

impl Answer {
    fn accepted(self) -> bool {
        matches!(self, Answer::Ok | Answer::SlowOk)
    }
}

struct Delivery {
    key: String,
    account: String,
    answer: Answer,
    at: Instant,
}

type Deliveries = Arc<Mutex<Vec<Delivery>>>;

fn provider(seed: u64) -> (String, Deliveries) {
    use axum::http::{HeaderMap, StatusCode};
    let seen: Deliveries = Default::default();
    let store = seen.clone();
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/sms",
                axum::routing::post(
                    move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
                        let (store, rng) = (store.clone(), rng.clone());
                        async move {
                            let roll = rng.lock().expect("rng").u32(0..100);
                            let answer = match roll {
                                0..70 => Answer::Ok,
                                70..78 => Answer::SlowOk,
                                78..86 => Answer::ServerError,
                                86..95 => Answer::Throttled,
                                95..97 => Answer::Hung,
                                _ => Answer::Ok,
                            };
                            let key = headers
                                .get("Idempotency-Key")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let account = body.0["account_id"].as_str().unwrap_or("").to_owned();
                            store.lock().expect("lock").push(Delivery {
                                key,
                                account,
                                answer,
                                at: Instant::now(),
                            });
                            match answer {
                                Answer::Ok => StatusCode::OK,
                                Answer::SlowOk => {
                                    tokio::time::sleep(Duration::from_millis(300)).await;
                                    StatusCode::OK
                                }
                                Answer::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
                                Answer::Throttled => StatusCode::TOO_MANY_REQUESTS,
                                Answer::Hung => {
                                    tokio::time::sleep(Duration::from_secs(11)).await;
                                    StatusCode::OK
                                }
                            }
                        }
                    },
                ),
            );
            let l = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(l, app).await;
        });
    });
    (format!("http://{addr}/sms"), seen)
}

// ---- the process ---------------------------------------------------------------------------

struct Proc {
    child: Child,
    base: String,
}

fn start(dir: &Path, provider: &str) -> Proc {
    let (child, base) = common::spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_tacto"))
            .args(["run", "--listen", "127.0.0.1:0", "--api-keys", "k1"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--policy")
            .arg(dir.join("policy.toml"))
            .args(["--sms-webhook", provider, "--rate-sms", "2000"])
            // Snapshots often, so that kills land before, during and after them.
            .args(["--snapshot-every-events", "2000"])
            .env("RUST_LOG", "error")
            .stderr(Stdio::null()),
    );
    Proc { child, base }
}

impl Proc {
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the graceful stop (a last snapshot).
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The running process, replaced at every restart.
struct Running {
    proc: Mutex<Proc>,
    base: RwLock<String>,
}

// ---- the clients ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Upsert,
    PartialPayment,
    FullPayment,
    Promise,
    Dispute,
    OptOut,
}

impl Kind {
    /// After it is acknowledged, no SMS may reach the account.
    fn stops_contact(self) -> bool {
        matches!(
            self,
            Kind::FullPayment | Kind::Promise | Kind::Dispute | Kind::OptOut
        )
    }
}

struct Ack {
    kind: Kind,
    account: String,
    event_id: String,
    new: bool,
    partition: u32,
    offset: u64,
    at: Instant,
}

fn account_body() -> String {
    serde_json::json!({
        "person_id": "p", "currency": "USD",
        "debts": [{"debt_id": "d1", "balance_minor": BALANCE, "due_date": "2026-01-01"}],
        "jurisdiction": {"country": "ZZ"},
        "contact_points": [{"id": "mobile", "channel": "sms", "address": "+12125550100", "consent": true}],
        "language": "en"
    })
    .to_string()
}

/// Sends until the API acknowledges (a killed process refuses connections or drops them).
fn send(running: &Running, method: &str, path: &str, body: &str) -> serde_json::Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{method} {path}: never acknowledged"
        );
        let url = format!("{}{path}", running.base.read().expect("base"));
        let resp = match method {
            "PUT" => agent
                .put(&url)
                .header("Authorization", "Bearer k1")
                .send(body),
            _ => agent
                .post(&url)
                .header("Authorization", "Bearer k1")
                .send(body),
        };
        match resp {
            Ok(mut r) if r.status().is_success() => {
                let text = r.body_mut().read_to_string().unwrap_or_default();
                return serde_json::from_str(&text).expect("ack is JSON");
            }
            Ok(r) if r.status().as_u16() == 503 => {}
            Ok(mut r) => panic!(
                "{method} {path}: {} {}",
                r.status(),
                r.body_mut().read_to_string().unwrap_or_default()
            ),
            Err(_) => {} // killed mid-request: send it again (every request is idempotent)
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// One client: its own accounts, each upserted, then followed by random events.
fn client(
    running: &Running,
    acked: &AtomicUsize,
    worker: usize,
    events: usize,
    seed: u64,
) -> Vec<Ack> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acks = Vec::with_capacity(events);
    // Open accounts and their remaining balance (those still contactable).
    let mut open: Vec<(String, i64)> = Vec::new();
    let mut n = 0;
    for i in 0..events {
        if i % 4 == 0 || open.is_empty() {
            let id = format!("w{worker}-a{n}");
            n += 1;
            let ack = send(
                running,
                "PUT",
                &format!("/v1/accounts/{id}"),
                &account_body(),
            );
            acks.push(ack_of(Kind::Upsert, &id, &ack));
            acked.fetch_add(1, Ordering::SeqCst);
            open.push((id, BALANCE));
            continue;
        }
        // Mostly recent accounts: their jobs are still queued or in flight.
        let j = open.len() - 1 - rng.usize(0..open.len().min(64));
        let (id, left) = open[j].clone();
        let mut kind = match rng.u32(0..100) {
            0..40 => Kind::PartialPayment,
            40..65 => Kind::FullPayment,
            65..80 => Kind::Promise,
            80..88 => Kind::Dispute,
            _ => Kind::OptOut,
        };
        if kind == Kind::PartialPayment && left <= 1_000 {
            kind = Kind::FullPayment;
        }
        let (path, body) = match kind {
            Kind::PartialPayment => {
                open[j].1 -= 1_000;
                (
                    "/v1/payments",
                    serde_json::json!({"account_id": id, "payment_id": format!("{id}-p{i}"),
                        "amount_minor": 1_000, "currency": "USD"}),
                )
            }
            Kind::FullPayment => (
                "/v1/payments",
                serde_json::json!({"account_id": id, "payment_id": format!("{id}-p{i}"),
                    "amount_minor": left, "currency": "USD"}),
            ),
            Kind::Promise => (
                "/v1/promises",
                serde_json::json!({"account_id": id, "promise_id": format!("{id}-pr{i}"),
                    "amount_minor": left, "due_date": "2027-06-30"}),
            ),
            Kind::Dispute => (
                "/v1/disputes",
                serde_json::json!({"account_id": id, "dispute_id": format!("{id}-d{i}"),
                    "reason": "fraud"}),
            ),
            Kind::OptOut | Kind::Upsert => (
                "/v1/opt-outs",
                serde_json::json!({"account_id": id, "channel": "sms", "via": "chaos"}),
            ),
        };
        if kind.stops_contact() {
            open.swap_remove(j);
        }
        let ack = send(running, "POST", path, &body.to_string());
        acks.push(ack_of(kind, &id, &ack));
        acked.fetch_add(1, Ordering::SeqCst);
    }
    acks
}

fn ack_of(kind: Kind, account: &str, ack: &serde_json::Value) -> Ack {
    Ack {
        kind,
        account: account.to_owned(),
        event_id: ack["event_id"].as_str().expect("event_id").to_owned(),
        new: ack["status"] == "accepted",
        partition: ack["partition"].as_u64().expect("partition") as u32,
        offset: ack["offset"].as_u64().expect("offset"),
        at: Instant::now(),
    }
}

// ---- what the log says ---------------------------------------------------------------------

#[derive(Default)]
struct Outcomes {
    /// Job id → account, for every job decide scheduled.
    scheduled: HashMap<String, String>,
    /// Job id → the status dispatch reported.
    reported: HashMap<String, OutcomeStatus>,
}

fn read_all(log: &EmbeddedLog, topic: &str, mut each: impl FnMut(u32, u64, &tacto_log::Record)) {
    for p in 0..log.partitions(topic).expect("partitions") {
        let mut from = 0;
        loop {
            let batch = log.read(topic, p, from, 4096).expect("read");
            let Some(last) = batch.last() else { break };
            from = last.position.offset + 1;
            for d in &batch {
                each(p, d.position.offset, &d.record);
            }
        }
    }
}

fn outcomes(log: &EmbeddedLog) -> Outcomes {
    let mut o = Outcomes::default();
    read_all(log, events::DECISIONS.name(), |_, _, r| {
        if let Ok(e) = events::from_record(r)
            && let EventBody::ContactScheduled(job) = &e.body
        {
            o.scheduled
                .insert(job.job_id.to_string(), e.account_id.to_string());
        }
    });
    read_all(log, events::EVENTS.name(), |_, _, r| {
        if let Ok(e) = events::from_record(r)
            && let EventBody::ContactOutcome {
                job_id: Some(job),
                status,
                ..
            } = &e.body
        {
            o.reported.insert(job.to_string(), *status);
        }
    });
    o
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("data").join("tacto.redb")
}

#[test]
fn sigkills_and_a_faulty_provider_lose_nothing_send_nothing_twice_and_break_no_rule() {
    let events = env("TACTO_CHAOS_EVENTS", 3_000);
    let kills = env("TACTO_CHAOS_KILLS", 5);
    let seed = env("TACTO_CHAOS_SEED", 20261201) as u64;
    let workers = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("policy.toml"), POLICY).expect("policy");
    let (url, deliveries) = provider(seed);
    let first = start(dir.path(), &url);
    let running = Arc::new(Running {
        base: RwLock::new(first.base.clone()),
        proc: Mutex::new(first),
    });
    let started = Instant::now();

    // The killer: SIGKILLs at random points of the run (after a random number of
    // acknowledgements, spread over the whole stream), each followed by a restart.
    let acked = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (running, acked, killed, url) =
            (running.clone(), acked.clone(), killed.clone(), url.clone());
        let dir = dir.path().to_owned();
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
            let mut points: Vec<usize> = (0..kills).map(|_| rng.usize(0..events)).collect();
            points.sort_unstable();
            let mut restarts = Vec::new();
            for point in points {
                while acked.load(Ordering::SeqCst) < point {
                    std::thread::sleep(Duration::from_millis(rng.u64(1..20)));
                }
                let mut p = running.proc.lock().expect("proc");
                p.kill9();
                killed.fetch_add(1, Ordering::SeqCst);
                let t = Instant::now();
                *p = start(&dir, &url);
                restarts.push(t.elapsed());
                *running.base.write().expect("base") = p.base.clone();
            }
            restarts
        })
    };
    let clients: Vec<_> = (0..workers)
        .map(|w| {
            let (running, acked) = (running.clone(), acked.clone());
            std::thread::spawn(move || {
                client(&running, &acked, w, events / workers, seed + w as u64)
            })
        })
        .collect();
    let acks: Vec<Ack> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    let pushed = started.elapsed();
    let restarts = killer.join().expect("killer");

    // Settle: wait until the provider hears nothing for 12 s (a hung call times out after
    // 10 s), stop gracefully, and check that every decided job has an outcome.
    let mut rounds = 0;
    let o = loop {
        rounds += 1;
        let mut last = (usize::MAX, Instant::now());
        while last.1.elapsed() < Duration::from_secs(12) {
            std::thread::sleep(Duration::from_millis(500));
            let n = deliveries.lock().expect("lock").len();
            if n != last.0 {
                last = (n, Instant::now());
            }
        }
        running.proc.lock().expect("proc").stop();
        let log = EmbeddedLog::open(log_path(dir.path())).expect("open the log");
        let o = outcomes(&log);
        let pending = o
            .scheduled
            .keys()
            .filter(|j| !o.reported.contains_key(*j))
            .count();
        if pending == 0 || rounds == 3 {
            break o;
        }
        drop(log);
        *running.proc.lock().expect("proc") = start(dir.path(), &url);
    };
    let log = EmbeddedLog::open(log_path(dir.path())).expect("open the log");

    // 1. No acknowledged event lost: each acknowledgement's position holds its event.
    let mut lost = Vec::new();
    for a in &acks {
        let got = log
            .read(events::EVENTS.name(), a.partition, a.offset, 1)
            .expect("read");
        let ok = got.first().is_some_and(|d| {
            d.position.offset == a.offset
                && (!a.new || d.record.header("ce_id") == Some(a.event_id.as_str()))
                && d.record.key == a.account
        });
        if !ok {
            lost.push(format!(
                "{:?} {} at {}:{}",
                a.kind, a.event_id, a.partition, a.offset
            ));
        }
    }

    // 2. No duplicate send: no delivery of a job after the provider accepted it.
    let deliveries = deliveries.lock().expect("lock");
    let mut accepted: HashSet<&str> = HashSet::new();
    let mut duplicates = Vec::new();
    for d in deliveries.iter() {
        if accepted.contains(d.key.as_str()) {
            duplicates.push(d.key.clone());
        }
        if d.answer.accepted() {
            accepted.insert(&d.key);
        }
    }

    // 3. No contact after a stop-event was acknowledged.
    let mut stopped: HashMap<&str, Instant> = HashMap::new();
    for a in acks.iter().filter(|a| a.kind.stops_contact()) {
        let at = stopped.entry(&a.account).or_insert(a.at);
        *at = (*at).min(a.at);
    }
    let mut violations = Vec::new();
    let mut closest = Duration::ZERO;
    for d in deliveries.iter() {
        if let Some(stop) = stopped.get(d.account.as_str())
            && d.at > *stop
        {
            let late = d.at - *stop;
            closest = closest.max(late);
            if late > GRACE {
                violations.push(format!("{} {} ms after the stop", d.key, late.as_millis()));
            }
        }
    }

    // 4. Every decided job has an outcome; a job reported not sent never reached the
    //    provider; a job the provider accepted is reported sent; no delivery of an unknown job.
    let pending: Vec<&String> = o
        .scheduled
        .keys()
        .filter(|j| !o.reported.contains_key(*j))
        .collect();
    let delivered: HashSet<&str> = deliveries.iter().map(|d| d.key.as_str()).collect();
    let leaked: Vec<&String> = o
        .reported
        .iter()
        .filter(|(j, s)| **s == OutcomeStatus::NotSent && delivered.contains(j.as_str()))
        .map(|(j, _)| j)
        .collect();
    let misreported: Vec<&&str> = accepted
        .iter()
        .filter(|j| o.reported.get(**j) != Some(&OutcomeStatus::Sent))
        .collect();
    let phantom: Vec<&&str> = delivered
        .iter()
        .filter(|j| !o.scheduled.contains_key(**j))
        .collect();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for s in o.reported.values() {
        *by_status.entry(format!("{s:?}")).or_default() += 1;
    }
    let mut answers: HashMap<String, usize> = HashMap::new();
    for d in deliveries.iter() {
        *answers.entry(format!("{:?}", d.answer)).or_default() += 1;
    }
    let mut restarts = restarts;
    restarts.sort();
    println!(
        "chaos: {} events acknowledged in {:.1} s ({} new, {} duplicates of retried requests) \
         through {} SIGKILLs; restart to listening: median {:.2} s, max {:.2} s",
        acks.len(),
        pushed.as_secs_f64(),
        acks.iter().filter(|a| a.new).count(),
        acks.iter().filter(|a| !a.new).count(),
        killed.load(Ordering::SeqCst),
        restarts
            .get(restarts.len() / 2)
            .map_or(0.0, Duration::as_secs_f64),
        restarts.last().map_or(0.0, Duration::as_secs_f64),
    );
    println!(
        "chaos: {} jobs decided, outcomes {by_status:?}; {} provider calls {answers:?}; \
         {} jobs accepted by the provider; latest delivery after a stop-event: {} ms; \
         settle rounds {rounds}",
        o.scheduled.len(),
        deliveries.len(),
        accepted.len(),
        closest.as_millis(),
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(duplicates.is_empty(), "sent twice: {duplicates:?}");
    assert!(
        violations.is_empty(),
        "contact after a stop: {violations:?}"
    );
    assert!(
        pending.is_empty(),
        "jobs without an outcome: {}",
        pending.len()
    );
    assert!(
        leaked.is_empty(),
        "reported not sent, yet delivered: {leaked:?}"
    );
    assert!(
        misreported.is_empty(),
        "accepted, not reported sent: {misreported:?}"
    );
    assert!(phantom.is_empty(), "delivered, never decided: {phantom:?}");
    assert!(killed.load(Ordering::SeqCst) >= kills);
    assert!(
        !o.scheduled.is_empty() && !accepted.is_empty(),
        "nothing was sent"
    );
}
