//! The workload and the checks of the chaos runs (`tests/chaos.rs` on the embedded log,
//! `tests/kafka_chaos.rs` on Kafka): a faulty SMS provider, clients pushing accounts and
//! stop-events over HTTP, and what the log and the provider's record must show afterwards.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tacto_log::{Record, events};
use tacto_model::{EventBody, OutcomeStatus};

use super::{BALANCE, account_body};

/// A size of the run from the environment (`_` allowed as a digit separator).
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

// ---- the SMS provider ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
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

pub struct Delivery {
    pub key: String,
    pub account: String,
    pub answer: Answer,
    pub at: Instant,
}

pub type Deliveries = Arc<Mutex<Vec<Delivery>>>;

pub fn provider(seed: u64) -> (String, Deliveries) {
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

// ---- the clients ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
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

pub struct Ack {
    pub kind: Kind,
    pub account: String,
    pub event_id: String,
    pub new: bool,
    pub partition: u32,
    pub offset: u64,
    pub at: Instant,
}

/// Sends until the API acknowledges (a killed process refuses connections or drops them).
pub fn send(base: &RwLock<String>, method: &str, path: &str, body: &str) -> serde_json::Value {
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
        let url = format!("{}{path}", base.read().expect("base"));
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

/// One client: its own accounts, each upserted, then followed by random events, one every
/// `pace` at most.
pub fn client(
    base: &RwLock<String>,
    acked: &AtomicUsize,
    worker: usize,
    events: usize,
    seed: u64,
    pace: Duration,
) -> Vec<Ack> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acks = Vec::with_capacity(events);
    // Open accounts and their remaining balance (those still contactable).
    let mut open: Vec<(String, i64)> = Vec::new();
    let mut n = 0;
    let started = Instant::now();
    for i in 0..events {
        if let Some(wait) = (started + pace * i as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if i % 4 == 0 || open.is_empty() {
            let id = format!("w{worker}-a{n}");
            n += 1;
            let ack = send(base, "PUT", &format!("/v1/accounts/{id}"), &account_body());
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
        let ack = send(base, "POST", path, &body.to_string());
        acks.push(ack_of(kind, &id, &ack));
        acked.fetch_add(1, Ordering::SeqCst);
    }
    acks
}

pub fn ack_of(kind: Kind, account: &str, ack: &serde_json::Value) -> Ack {
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

/// What decide scheduled and dispatch reported, read from the decisions and events topics.
#[derive(Default)]
pub struct Outcomes {
    /// Job id → account, for every job decide scheduled.
    pub scheduled: HashMap<String, String>,
    /// Job id → the status dispatch reported.
    pub reported: HashMap<String, OutcomeStatus>,
    /// Jobs dispatch recorded as ambiguous (attempted, the provider's answer unknown).
    pub ambiguous: HashSet<String>,
}

impl Outcomes {
    /// From every record of the decisions topic and of the events topic.
    pub fn read<'a>(
        decisions: impl IntoIterator<Item = &'a Record>,
        events: impl IntoIterator<Item = &'a Record>,
    ) -> Self {
        let mut o = Self::default();
        for r in decisions {
            if let Ok(e) = events::from_record(r)
                && let EventBody::ContactScheduled(job) = &e.body
            {
                o.scheduled
                    .insert(job.job_id.to_string(), e.account_id.to_string());
            }
        }
        for r in events {
            if let Ok(e) = events::from_record(r)
                && let EventBody::ContactOutcome {
                    job_id: Some(job),
                    status,
                    ..
                } = &e.body
            {
                o.reported.insert(job.to_string(), *status);
            }
        }
        o
    }

    /// Jobs decided that have no outcome yet.
    pub fn pending(&self) -> usize {
        self.unreported().count()
    }

    /// Keeps the jobs whose last recorded state at dispatch (`(job id, state)` in the order
    /// they were written) is `ambiguous`.
    pub fn with_states(mut self, states: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        let mut last: HashMap<String, Vec<u8>> = HashMap::new();
        for (job, state) in states {
            last.insert(job, state);
        }
        self.ambiguous = last
            .into_iter()
            .filter(|(_, s)| s == b"ambiguous")
            .map(|(j, _)| j)
            .collect();
        self
    }

    /// The ids of jobs decided that have no outcome yet.
    fn unreported(&self) -> impl Iterator<Item = &String> {
        self.scheduled
            .keys()
            .filter(|j| !self.reported.contains_key(*j))
    }
}

/// What a chaos run broke, if anything, and its figures.
pub struct Verdict {
    lost: Vec<String>,
    duplicates: Vec<String>,
    violations: Vec<String>,
    pending: usize,
    /// Some of the jobs without an outcome (the first in id order), to look for in the logs.
    pending_sample: Vec<String>,
    leaked: Vec<String>,
    misreported: Vec<String>,
    phantom: Vec<String>,
    /// Reported sent, neither accepted by the provider nor recorded as ambiguous.
    unexplained: Vec<String>,
    /// The last try got no answer (the provider took it), yet not reported sent.
    uncounted: Vec<String>,
    /// The latest delivery after a stop-event took effect.
    pub closest: Duration,
    /// A summary of the outcomes and of the provider's answers.
    pub summary: String,
    /// Jobs the provider accepted.
    pub accepted: usize,
    /// Jobs decided.
    pub decided: usize,
}

/// Checks a run:
/// - no acknowledged event lost (`at(partition, offset)` is the event at that position);
/// - no duplicate send (no delivery of a job after the provider accepted it);
/// - no contact later than `grace` after a stop-event took effect (`effective` maps the
///   acknowledgement's instant to the instant decide could fold it: the same on the embedded
///   log, the end of a decide outage on Kafka);
/// - every job decided has an outcome; a job reported not sent never reached the provider; a
///   job the provider accepted is reported sent; no delivery of a job never decided;
/// - a job reported sent was accepted by the provider or recorded as ambiguous (attempted
///   when dispatch was killed, or no answer to its last try); a job whose last try got no
///   answer (the provider took it) is reported sent, so caps count it.
pub fn verify(
    acks: &[Ack],
    deliveries: &[Delivery],
    o: &Outcomes,
    at: impl Fn(u32, u64) -> Option<Record>,
    effective: impl Fn(Instant) -> Instant,
    grace: Duration,
) -> Verdict {
    let mut lost = Vec::new();
    for a in acks {
        let ok = at(a.partition, a.offset).is_some_and(|r| {
            (!a.new || r.header("ce_id") == Some(a.event_id.as_str())) && r.key == a.account
        });
        if !ok {
            lost.push(format!(
                "{:?} {} at {}:{}",
                a.kind, a.event_id, a.partition, a.offset
            ));
        }
    }

    let mut accepted: HashSet<&str> = HashSet::new();
    let mut duplicates = Vec::new();
    for d in deliveries {
        if accepted.contains(d.key.as_str()) {
            duplicates.push(d.key.clone());
        }
        if d.answer.accepted() {
            accepted.insert(&d.key);
        }
    }

    let mut stopped: HashMap<&str, Instant> = HashMap::new();
    for a in acks.iter().filter(|a| a.kind.stops_contact()) {
        let at = stopped.entry(&a.account).or_insert(effective(a.at));
        *at = (*at).min(effective(a.at));
    }
    let mut violations = Vec::new();
    let mut closest = Duration::ZERO;
    for d in deliveries {
        if let Some(stop) = stopped.get(d.account.as_str())
            && d.at > *stop
        {
            let late = d.at - *stop;
            closest = closest.max(late);
            if late > grace {
                violations.push(format!("{} {} ms after the stop", d.key, late.as_millis()));
            }
        }
    }

    let delivered: HashSet<&str> = deliveries.iter().map(|d| d.key.as_str()).collect();
    let leaked = o
        .reported
        .iter()
        .filter(|(j, s)| **s == OutcomeStatus::NotSent && delivered.contains(j.as_str()))
        .map(|(j, _)| j.clone())
        .collect();
    let misreported = accepted
        .iter()
        .filter(|j| o.reported.get(**j) != Some(&OutcomeStatus::Sent))
        .map(|j| j.to_string())
        .collect();
    let phantom = delivered
        .iter()
        .filter(|j| !o.scheduled.contains_key(**j))
        .map(|j| j.to_string())
        .collect();
    let mut unexplained: Vec<String> = o
        .reported
        .iter()
        .filter(|(j, s)| {
            **s == OutcomeStatus::Sent
                && !accepted.contains(j.as_str())
                && !o.ambiguous.contains(j.as_str())
        })
        .map(|(j, _)| j.clone())
        .collect();
    unexplained.sort();
    let mut last_answer: HashMap<&str, Answer> = HashMap::new();
    for d in deliveries {
        last_answer.insert(&d.key, d.answer);
    }
    let mut uncounted: Vec<String> = last_answer
        .iter()
        .filter(|(j, a)| {
            **a == Answer::Hung
                && o.reported
                    .get(**j)
                    .is_some_and(|s| *s != OutcomeStatus::Sent)
        })
        .map(|(j, _)| j.to_string())
        .collect();
    uncounted.sort();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for s in o.reported.values() {
        *by_status.entry(format!("{s:?}")).or_default() += 1;
    }
    let mut answers: HashMap<String, usize> = HashMap::new();
    for d in deliveries {
        *answers.entry(format!("{:?}", d.answer)).or_default() += 1;
    }
    Verdict {
        lost,
        duplicates,
        violations,
        pending: o.pending(),
        pending_sample: {
            let mut ids: Vec<String> = o.unreported().cloned().collect();
            ids.sort();
            ids.truncate(10);
            ids
        },
        leaked,
        misreported,
        phantom,
        unexplained,
        uncounted,
        closest,
        summary: format!(
            "{} jobs decided, outcomes {by_status:?}; {} provider calls {answers:?}; {} jobs \
             accepted by the provider; {} jobs ambiguous, of them {} accepted",
            o.scheduled.len(),
            deliveries.len(),
            accepted.len(),
            o.ambiguous.len(),
            o.ambiguous
                .iter()
                .filter(|j| accepted.contains(j.as_str()))
                .count(),
        ),
        accepted: accepted.len(),
        decided: o.scheduled.len(),
    }
}

impl Verdict {
    /// Panics with what broke, if anything did.
    pub fn assert_held(&self) {
        assert!(
            self.lost.is_empty(),
            "acknowledged but lost: {:?}",
            self.lost
        );
        assert!(
            self.duplicates.is_empty(),
            "sent twice: {:?}",
            self.duplicates
        );
        assert!(
            self.violations.is_empty(),
            "contact after a stop: {:?}",
            self.violations
        );
        assert_eq!(
            self.pending, 0,
            "jobs without an outcome, among them {:?}",
            self.pending_sample
        );
        assert!(
            self.leaked.is_empty(),
            "reported not sent, yet delivered: {:?}",
            self.leaked
        );
        assert!(
            self.misreported.is_empty(),
            "accepted, not reported sent: {:?}",
            self.misreported
        );
        assert!(
            self.phantom.is_empty(),
            "delivered, never decided: {:?}",
            self.phantom
        );
        assert!(
            self.unexplained.is_empty(),
            "reported sent, neither accepted nor ambiguous: {:?}",
            self.unexplained
        );
        assert!(
            self.uncounted.is_empty(),
            "no answer to the last try, yet not reported sent: {:?}",
            self.uncounted
        );
        assert!(self.accepted > 0, "nothing was sent");
    }
}

/// The median and the largest of some durations, in seconds.
pub fn median_max(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (
        v.get(v.len() / 2).map_or(0.0, Duration::as_secs_f64),
        v.last().map_or(0.0, Duration::as_secs_f64),
    )
}

/// Waits until the provider has heard nothing for 12 s (a hung call times out after 10 s).
pub fn wait_quiet(deliveries: &Deliveries) {
    let mut last = (usize::MAX, Instant::now());
    while last.1.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(500));
        let n = deliveries.lock().expect("lock").len();
        if n != last.0 {
            last = (n, Instant::now());
        }
    }
}

/// Runs `workers` clients of `events / workers` events each against the API at `base`,
/// offering at most `rate` events per second in all (0: as fast as acknowledged); `acked`
/// counts acknowledgements as they come.
pub fn run_clients(
    base: &Arc<RwLock<String>>,
    acked: &Arc<AtomicUsize>,
    workers: usize,
    events: usize,
    seed: u64,
    rate: usize,
) -> Vec<Ack> {
    let pace = if rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(workers as f64 / rate as f64)
    };
    let clients: Vec<_> = (0..workers)
        .map(|w| {
            let (base, acked) = (base.clone(), acked.clone());
            std::thread::spawn(move || {
                client(&base, &acked, w, events / workers, seed + w as u64, pace)
            })
        })
        .collect();
    clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect()
}

/// Random points of the run (counts of acknowledgements), sorted.
pub fn kill_points(seed: u64, kills: usize, events: usize) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut points: Vec<usize> = (0..kills).map(|_| rng.usize(0..events)).collect();
    points.sort_unstable();
    points
}

/// Waits until `acked` reaches `point`.
pub fn wait_for_acks(acked: &AtomicUsize, point: usize) {
    while acked.load(Ordering::SeqCst) < point {
        std::thread::sleep(Duration::from_millis(5));
    }
}
