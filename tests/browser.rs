//! The self-service page and the operator console in a real browser: headless Chromium
//! (Debian's `chromium`) driven by `playwright-core` (`tests/browser/journey.cjs`), against
//! `tacto run` with SMS through the Twilio contract stub.
//!
//! A customer opens the link of the SMS Tacto sent, fails and then passes the identity check,
//! sees what is owed and promises to pay; the promise is on the log and the call that was
//! queued behind the dialer's rate limit is recalled and never placed. A tampered and an
//! expired link are refused. An operator signs in to the console and sees the account's
//! timeline (the promise, the recall and its reason), the ledger and the portfolio's charts,
//! and compares two policies. Every page is captured at phone and desktop sizes in
//! `target/screenshots/`.
#![allow(missing_docs)]

mod common;

use common::twilio::{TOKEN, twilio_stub};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LINK_SECRET: &str = "browser-test-link-secret";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}

fn get_json(url: &str) -> serde_json::Value {
    let mut r = agent()
        .get(url)
        .header("Authorization", "Bearer k1")
        .call()
        .expect("GET");
    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or(serde_json::Value::Null)
}

fn put_account(base: &str, id: &str, points: serde_json::Value) {
    let body = serde_json::json!({
        "person_id": id, "currency": "USD",
        "debts": [{"debt_id": "d1", "balance_minor": 50_000, "due_date": "2026-01-01"}],
        "jurisdiction": {"country": "ZZ"}, "contact_points": points, "language": "en",
        "identity": {"birth_date": "1984-05-17"}
    });
    let status = agent()
        .put(format!("{base}/v1/accounts/{id}"))
        .header("Authorization", "Bearer k1")
        .send(body.to_string())
        .expect("PUT")
        .status();
    assert_eq!(status.as_u16(), 202);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn chromium() -> Option<String> {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    std::path::Path::new(&path).exists().then_some(path)
}

#[test]
fn a_customer_promises_from_the_sms_link_and_the_console_shows_why() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let modules = root.join("tools/node/node_modules");
    assert!(
        chromium().is_some() && modules.join("playwright-core").exists(),
        "Chromium (/usr/bin/chromium) and playwright-core (tools/node) are needed: `make test` installs them"
    );
    let shots = root.join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    let (twilio_url, sent) = twilio_stub();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = common::zz_policy(
        "browser-e2e-1",
        &[
            r#"{ day = 0, channel = "sms", template = "reminder" }"#,
            r#"{ day = 0, channel = "voice", template = "agent_call" }"#,
        ],
    );
    std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let (child, base) = common::spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_tacto"))
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--api-keys",
                "k1",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .args(common::twilio::flags(&twilio_url))
            .args(["--public-url", &public, "--link-secret", LINK_SECRET])
            // One call an hour: the first account's call takes it, the next one waits.
            .args(["--rate-voice", "0.0003"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    );
    let _tacto = Killed(child);
    let outbox = dir.path().join("data/outbox.jsonl");
    let calls = |account: &str| {
        std::fs::read_to_string(&outbox)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["account_id"] == account && m["channel"] == "voice")
            .count()
    };

    // B-0's call takes the dialer's one token of the hour.
    put_account(
        &base,
        "B-0",
        serde_json::json!([
            {"id": "home", "channel": "voice", "address": "+12125550101", "consent": true}
        ]),
    );
    eventually("B-0's call is placed", || calls("B-0") == 1);

    // A-1 gets an SMS with the self-service link; once it is delivered, the call step follows
    // and waits behind the rate limit.
    put_account(
        &base,
        "A-1",
        serde_json::json!([
            {"id": "mobile", "channel": "sms", "address": "+12125550100", "consent": true, "preference": 1},
            {"id": "mobile", "channel": "voice", "address": "+12125550100", "consent": true, "preference": 2}
        ]),
    );
    let mut sms = Vec::new();
    eventually("A-1's SMS reaches the provider", || {
        sms = sent
            .lock()
            .expect("stub")
            .iter()
            .map(|(_, f)| f.clone())
            .collect();
        !sms.is_empty()
    });
    let field = |k: &str| {
        sms[0]
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body = field("Body");
    let link = body
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{public}/s/")))
        .unwrap_or_else(|| panic!("no self-service link in the SMS: {body}"))
        .to_owned();
    let callback = field("StatusCallback");
    let path = callback
        .strip_prefix(&public)
        .expect("callback on the public URL");
    let delivered = vec![
        ("MessageSid".to_owned(), "SM1".to_owned()),
        ("MessageStatus".to_owned(), "delivered".to_owned()),
    ];
    let signature = tacto_ingest::twilio::signature(TOKEN, &callback, &delivered);
    let status = agent()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .send(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&delivered)
                .finish(),
        )
        .expect("callback")
        .status();
    assert_eq!(status.as_u16(), 200);
    let mut call_job = String::new();
    eventually("A-1's call is queued", || {
        let a = get_json(&format!("{base}/v1/accounts/A-1"));
        call_job = a["queued_jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j.as_str())
            .find(|j| j.contains(":d0.1:"))
            .unwrap_or_default()
            .to_owned();
        !call_job.is_empty()
    });

    // The browser.
    let token = link.rsplit('/').next().unwrap_or_default();
    let job = tacto_ingest::links::verify_self_service(LINK_SECRET.as_bytes(), token, 0)
        .expect("the SMS link is signed")
        .job_id;
    let mut tampered = token.to_owned().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let expired = tacto_ingest::links::sign_self_service(LINK_SECRET.as_bytes(), &job, now - 1);
    let promise_date = (chrono::Utc::now().date_naive() + chrono::Days::new(10)).to_string();
    let cfg = serde_json::json!({
        "link": link,
        "tampered": format!("{public}/s/{}", String::from_utf8_lossy(&tampered)),
        "expired": format!("{public}/s/{expired}"),
        "base": public,
        "apiKey": "k1",
        "account": "A-1",
        "birthDate": "1984-05-17",
        "promiseDate": promise_date,
        "total": "USD 500.00",
        "shots": shots,
    });
    let out = Command::new("node")
        .arg(root.join("tests/browser/journey.cjs"))
        .arg(cfg.to_string())
        .env("NODE_PATH", &modules)
        .envs(chromium().map(|c| ("CHROMIUM", c)))
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser journey failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The promise is on the log, from the self-service page, and the queued call was recalled
    // and never placed.
    let timeline = get_json(&format!("{base}/v1/accounts/A-1/timeline"));
    let items = timeline.as_array().cloned().unwrap_or_default();
    let promise = items
        .iter()
        .find(|i| i["kind"] == "promise_made")
        .unwrap_or_else(|| panic!("no promise in {timeline}"));
    assert_eq!(promise["source"], "self_service");
    assert_eq!(
        promise["event"]["body"]["promise_made"]["amount_minor"],
        20_000
    );
    assert_eq!(
        promise["event"]["body"]["promise_made"]["due_date"],
        promise_date
    );
    let recalled = items.iter().any(|i| {
        i["kind"] == "jobs_recalled"
            && i["event"]["body"]["jobs_recalled"]["job_ids"]
                .as_array()
                .is_some_and(|j| j.iter().any(|x| x == call_job.as_str()))
    });
    assert!(
        recalled,
        "the queued call {call_job} was not recalled: {timeline}"
    );
    eventually("dispatch confirms the call was not placed", || {
        get_json(&format!("{base}/v1/accounts/A-1/timeline"))
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| {
                i["kind"] == "contact_outcome"
                    && i["event"]["body"]["contact_outcome"]["job_id"] == call_job.as_str()
                    && i["event"]["body"]["contact_outcome"]["status"] == "not_sent"
            })
    });
    assert_eq!(calls("A-1"), 0, "the recalled call was never placed");
    let pngs = std::fs::read_dir(&shots)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
                .count()
        })
        .unwrap_or(0);
    assert!(pngs >= 28, "{pngs} screenshots in {}", shots.display());
    eprintln!("browser journey: {stdout}");
}
