//! End-to-end tests of `tacto run`: the real binary, its HTTP API, its data directory and its
//! outbox, including a `kill -9` in the middle of a run.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{POLICY, account_owing};

struct Tacto {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Tacto {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        std::fs::write(dir.join("policy.toml"), POLICY).expect("policy");
        let (child, base) = common::spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_tacto"))
                .args([
                    "run",
                    "--listen",
                    "127.0.0.1:0",
                    "--api-keys",
                    "k1",
                    "--data-dir",
                ])
                .arg(dir.join("data"))
                .arg("--policy")
                .arg(dir.join("policy.toml"))
                .args(extra)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        Self {
            child,
            base,
            dir: dir.join("data"),
        }
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let call = || match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", "Bearer k1").call(),
            ("PUT", Some(b)) => agent.put(&url).header("Authorization", "Bearer k1").send(b),
            (_, b) => agent
                .post(&url)
                .header("Authorization", "Bearer k1")
                .send(b.unwrap_or("")),
        };
        // Every API call is idempotent: one retry covers a connection the loaded test machine
        // reset before any answer (a crashed server still fails the second try).
        let mut resp = call()
            .or_else(|_| {
                std::thread::sleep(Duration::from_millis(100));
                call()
            })
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// POSTs `length` bytes of body while reading the answer (the server may answer and close
    /// before it has read everything); returns the status.
    fn oversized_status(&self, path: &str, length: usize) -> u16 {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_owned();
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut w = s.try_clone().expect("clone");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer k1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        std::thread::spawn(move || {
            // Write errors are expected once the server has refused the request.
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(&vec![b' '; length]);
        });
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    fn outbox(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("outbox.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("outbox line"))
            .collect()
    }

    fn timeline_kinds(&self, account: &str) -> Vec<String> {
        let (_, t) = self.request("GET", &format!("/v1/accounts/{account}/timeline"), None);
        t.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["kind"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Tacto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

#[test]
fn a_payment_in_full_recalls_the_queued_job_and_nothing_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One SMS per 100 s: the first account's job goes out, the second one's waits.
    let t = Tacto::start(dir.path(), &["--rate-sms", "0.01"]);
    assert_eq!(
        t.request("PUT", "/v1/accounts/A", Some(&account_owing(50_000)))
            .0,
        202
    );
    eventually("A's reminder is sent", || t.outbox().len() == 1);
    assert_eq!(
        t.request("PUT", "/v1/accounts/B", Some(&account_owing(50_000)))
            .0,
        202
    );
    eventually("B's job is scheduled", || {
        t.timeline_kinds("B")
            .contains(&"contact_scheduled".to_owned())
    });
    let pay =
        r#"{"account_id": "B", "payment_id": "bank-1", "amount_minor": 50000, "currency": "USD"}"#;
    let (status, ack) = t.request("POST", "/v1/payments", Some(pay));
    assert_eq!(status, 202, "{ack}");
    eventually("B's job is recalled and the recall confirmed", || {
        let k = t.timeline_kinds("B");
        k.contains(&"jobs_recalled".to_owned())
            && k.iter().filter(|x| *x == "contact_outcome").count() == 1
    });
    let (_, timeline) = t.request("GET", "/v1/accounts/B/timeline", None);
    let recall = timeline
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == "jobs_recalled"))
        .expect("recall");
    assert_eq!(
        recall["event"]["body"]["jobs_recalled"]["decision"]["reasons"][0]["code"],
        "paid_in_full"
    );
    let outcome = timeline
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == "contact_outcome"))
        .expect("outcome");
    assert_eq!(
        outcome["event"]["body"]["contact_outcome"]["status"],
        "not_sent"
    );
    let (_, state) = t.request("GET", "/v1/accounts/B", None);
    assert_eq!(state["balance_minor"], 0);
    // A duplicate delivery of the payment changes nothing.
    assert_eq!(t.request("POST", "/v1/payments", Some(pay)).0, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.outbox().iter().all(|m| m["account_id"] != "B"));
}

#[test]
fn bad_requests_get_problems_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Tacto::start(dir.path(), &["--webhook-secret", "whsec"]);
    let (status, p) = t.request("POST", "/v1/payments", Some("{not json"));
    assert_eq!(status, 400);
    assert_eq!(p["status"], 400);
    let (status, p) = t.request(
        "POST",
        "/v1/payments",
        Some(r#"{"account_id": "Z", "payment_id": "x", "amount_minor": -5, "currency": "USD"}"#),
    );
    assert_eq!(status, 422);
    assert_eq!(p["field"], "body.payment_received.amount_minor");
    // Oversized.
    assert_eq!(t.oversized_status("/v1/payments", 2 << 20), 413);
    // Unsigned, wrongly signed, and stale webhook deliveries.
    let body = r#"{"account_id": "Z", "payment_id": "w1", "amount_minor": 5, "currency": "USD"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let hook = |ts: i64, secret: &[u8]| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(&format!("{}/v1/webhooks/payments", t.base))
            .header("X-Tacto-Timestamp", &ts.to_string())
            .header(
                "X-Tacto-Signature",
                &tacto_ingest::webhook::sign(secret, ts, body.as_bytes()),
            )
            .send(body)
            .expect("call")
            .status()
            .as_u16()
    };
    let unsigned = t.request("POST", "/v1/webhooks/payments", Some(body)).0;
    assert_eq!(unsigned, 401);
    assert_eq!(hook(now, b"not-the-secret"), 401);
    assert_eq!(
        hook(now - 3_600, b"whsec"),
        401,
        "an old delivery is refused"
    );
    assert_eq!(
        t.request("GET", "/v1/accounts/Z/timeline", None).0,
        404,
        "nothing was written"
    );
    // A good delivery, then its replay.
    assert_eq!(hook(now, b"whsec"), 202);
    assert_eq!(hook(now, b"whsec"), 200);
    let (_, timeline) = t.request("GET", "/v1/accounts/Z/timeline", None);
    assert_eq!(
        timeline.as_array().map(Vec::len),
        Some(1),
        "applied once: {timeline}"
    );
}

#[test]
fn kill_9_loses_no_acknowledged_event_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Frequent snapshots: the restart restores a snapshot plus the tail of the log.
    let snapshots = ["--snapshot-every-events", "15"];
    let t = Tacto::start(dir.path(), &snapshots);
    for i in 0..20 {
        let (status, _) = t.request(
            "PUT",
            &format!("/v1/accounts/K{i}"),
            Some(&account_owing(10_000)),
        );
        assert_eq!(status, 202);
    }
    eventually("the first 20 reminders", || t.outbox().len() == 20);
    // Acknowledged, then killed at once: some of these are not yet decided or sent.
    for i in 20..60 {
        let (status, _) = t.request(
            "PUT",
            &format!("/v1/accounts/K{i}"),
            Some(&account_owing(10_000)),
        );
        assert_eq!(status, 202);
    }
    t.kill9();
    let t = Tacto::start(dir.path(), &snapshots);
    eventually(
        "every acknowledged account is known after the restart",
        || (0..60).all(|i| t.request("GET", &format!("/v1/accounts/K{i}"), None).0 == 200),
    );
    eventually("dispatch settles", || {
        (0..60).all(|i| {
            t.timeline_kinds(&format!("K{i}"))
                .iter()
                .any(|k| k == "contact_outcome")
        })
    });
    let sent = t.outbox();
    let mut ids: Vec<&str> = sent.iter().filter_map(|m| m["job_id"].as_str()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a job was sent twice");
    assert!(n >= 20, "the reminders sent before the kill stay sent");
    // Decisions continue after the restart: a payment recalls nothing and closes the account.
    let pay =
        r#"{"account_id": "K59", "payment_id": "p-59", "amount_minor": 10000, "currency": "USD"}"#;
    assert_eq!(t.request("POST", "/v1/payments", Some(pay)).0, 202);
    eventually("K59 is paid", || {
        t.request("GET", "/v1/accounts/K59", None).1["balance_minor"] == 0
    });
}

#[test]
fn import_reports_refused_rows_and_explain_shows_the_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Tacto::start(dir.path(), &[]);
    let csv = dir.path().join("accounts.csv");
    std::fs::write(
        &csv,
        "account_id,person_id,currency,debt_id,balance_minor,due_date,country,phone,phone_consent\n\
         R1,P1,USD,D1,5000,2026-01-01,ZZ,+12125550100,yes\n\
         R2,P2,USD,D2,7000,2026-01-01,ZZ,+12125550101,yes\n\
         R3,P3,USD,D3,9000,2026-01-01,ZZ,+12125550102,yes\n\
         R4,P4,USD,D4,-1,2026-01-01,ZZ,+12125550103,yes\n",
    )
    .expect("csv");
    let tacto = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tacto"))
            .args(args)
            .args(["--url", &t.base, "--api-key", "k1"])
            .output()
            .expect("run tacto")
    };
    let out = tacto(&["import", csv.to_str().expect("path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a refused row fails the command");
    assert!(
        stdout.contains("4 rows: 3 imported, 0 already imported, 1 refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("row 4: body.account_upserted.debts[0].balance_minor"),
        "{stdout}"
    );
    // Importing again changes nothing.
    let again = tacto(&["import", csv.to_str().expect("path")]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 imported, 3 already imported"));
    eventually("R1 is contacted", || {
        t.timeline_kinds("R1")
            .contains(&"contact_scheduled".to_owned())
    });
    let out = tacto(&["explain", "R1"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("account_upserted"), "{text}");
    assert!(text.contains("contact_scheduled"), "{text}");
    assert!(text.contains("- step_due:"), "{text}");
}

/// What the test webhook received: (idempotency key, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// A provider bridge on loopback: refuses the first delivery with 429, accepts the rest, and
/// records what it received.
fn flaky_webhook() -> (String, Received) {
    use axum::http::{HeaderMap, StatusCode};
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>> =
        Default::default();
    let store = seen.clone();
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
                        let store = store.clone();
                        async move {
                            let key = headers
                                .get("Idempotency-Key")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let mut s = store.lock().expect("lock");
                            s.push((key, body.0));
                            if s.len() == 1 {
                                StatusCode::TOO_MANY_REQUESTS
                            } else {
                                StatusCode::OK
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

#[test]
fn the_json_webhook_adapter_retries_a_throttled_delivery_once() {
    let (url, seen) = flaky_webhook();
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Tacto::start(dir.path(), &["--sms-webhook", &url]);
    assert_eq!(
        t.request("PUT", "/v1/accounts/W", Some(&account_owing(50_000)))
            .0,
        202
    );
    eventually("the job is reported sent", || {
        let (_, tl) = t.request("GET", "/v1/accounts/W/timeline", None);
        tl.as_array().is_some_and(|a| {
            a.iter()
                .any(|i| i["event"]["body"]["contact_outcome"]["status"] == "sent")
        })
    });
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "one 429, one retry: {got:?}");
    assert_eq!(got[0].0, "W:c0:d0.0:a0");
    assert_eq!(
        got[1].0, got[0].0,
        "the retry carries the same idempotency key"
    );
    assert_eq!(got[1].1["address"], "+12125550100");
    assert_eq!(got[1].1["template"], "reminder");
    assert!(
        t.outbox().is_empty(),
        "SMS went to the webhook, not the file"
    );
}

/// A provider bridge that answers 503 to every delivery, the first one only once `release`
/// is notified.
fn unavailable_webhook() -> (String, Received, std::sync::Arc<tokio::sync::Notify>) {
    use axum::http::{HeaderMap, StatusCode};
    let seen: Received = Default::default();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (store, gate) = (seen.clone(), release.clone());
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
                        let (store, gate) = (store.clone(), gate.clone());
                        async move {
                            let key = headers
                                .get("Idempotency-Key")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let first = {
                                let mut s = store.lock().expect("lock");
                                s.push((key, body.0));
                                s.len() == 1
                            };
                            if first {
                                gate.notified().await;
                            }
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                    },
                ),
            );
            let l = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(l, app).await;
        });
    });
    (format!("http://{addr}/sms"), seen, release)
}

#[test]
fn a_payment_during_the_retry_backoff_stops_the_retry() {
    let (url, seen, release) = unavailable_webhook();
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Tacto::start(dir.path(), &["--sms-webhook", &url]);
    assert_eq!(
        t.request("PUT", "/v1/accounts/R", Some(&account_owing(50_000)))
            .0,
        202
    );
    eventually("the first delivery reaches the provider", || {
        seen.lock().expect("lock").len() == 1
    });
    // While that delivery is in flight, the customer pays in full.
    let pay =
        r#"{"account_id": "R", "payment_id": "bank-r", "amount_minor": 50000, "currency": "USD"}"#;
    assert_eq!(t.request("POST", "/v1/payments", Some(pay)).0, 202);
    eventually("the payment is folded", || {
        t.request("GET", "/v1/accounts/R", None).1["balance_minor"] == 0
    });
    release.notify_one();
    eventually("the job is reported failed", || {
        let (_, tl) = t.request("GET", "/v1/accounts/R/timeline", None);
        tl.as_array().is_some_and(|a| {
            a.iter()
                .any(|i| i["event"]["body"]["contact_outcome"]["status"] == "failed")
        })
    });
    // The backoff was 200 ms: give a retry that should not happen time to arrive.
    std::thread::sleep(Duration::from_millis(600));
    let got = seen.lock().expect("lock").len();
    assert_eq!(got, 1, "no retry after the payment: {got} deliveries");
}
