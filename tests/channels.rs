//! End-to-end tests of the channel adapters and provider callbacks through `tacto run`: SMS
//! through a local server that enforces the Twilio Messages API contract, Twilio's signed
//! status callbacks and inbound STOP replies into the API.
#![allow(missing_docs)]

use axum::extract::State;
use axum::routing::post;
use axum::{Form, Router};
use std::process::{Child, Command, Stdio};

mod common;
use common::twilio::{TOKEN, serve_in_thread, twilio_stub};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tacto_ingest::twilio;

const PUBLIC: &str = "https://tacto.example";

fn policy() -> String {
    common::zz_policy(
        "channels-e2e-1",
        &[
            r#"{ day = 0, channel = "sms", template = "reminder" }"#,
            r#"{ day = 0, channel = "email", template = "reminder" }"#,
        ],
    )
}

struct Tacto {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Tacto {
    fn start(twilio_url: &str) -> Self {
        Self::start_with(twilio_url, "0.02", &policy(), &[])
    }

    fn start_with_rate(twilio_url: &str, rate_sms: &str) -> Self {
        Self::start_with(twilio_url, rate_sms, &policy(), &[])
    }

    fn start_with(twilio_url: &str, rate_sms: &str, policy: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
        let (child, base) = common::spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_tacto"))
                .args(["run", "--listen", "127.0.0.1:0", "--api-keys", "k1"])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--policy")
                .arg(dir.path().join("policy.toml"))
                .args(common::twilio::flags(twilio_url))
                .args(["--public-url", PUBLIC, "--rate-sms", rate_sms])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        Self { child, base, dir }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn put_account(&self, id: &str, points: serde_json::Value) {
        let body = serde_json::json!({
            "person_id": id, "currency": "USD",
            "debts": [{"debt_id": "d1", "balance_minor": 50_000, "due_date": "2026-01-01"}],
            "jurisdiction": {"country": "ZZ"}, "contact_points": points, "language": "en"
        });
        let status = Self::agent()
            .put(format!("{}/v1/accounts/{id}", self.base))
            .header("Authorization", "Bearer k1")
            .send(body.to_string())
            .expect("PUT")
            .status();
        assert_eq!(status.as_u16(), 202);
    }

    /// POSTs a Twilio webhook, signed as Twilio signs it (over the public URL).
    fn twilio_callback(&self, path_and_query: &str, params: &[(&str, &str)]) -> u16 {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signature = twilio::signature(TOKEN, &format!("{PUBLIC}{path_and_query}"), &owned);
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        Self::agent()
            .post(format!("{}{path_and_query}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", signature)
            .send(body)
            .expect("callback")
            .status()
            .as_u16()
    }

    fn timeline(&self, account: &str) -> Vec<serde_json::Value> {
        let mut r = Self::agent()
            .get(format!("{}/v1/accounts/{account}/timeline", self.base))
            .header("Authorization", "Bearer k1")
            .call()
            .expect("timeline");
        serde_json::from_str::<serde_json::Value>(
            &r.body_mut().read_to_string().unwrap_or_default(),
        )
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
    }

    fn outbox(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("data/outbox.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
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
    while start.elapsed() < Duration::from_secs(30) {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}

fn kinds(t: &[serde_json::Value]) -> Vec<String> {
    t.iter()
        .filter_map(|i| i["kind"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn sms_go_through_twilio_callbacks_come_back_and_stop_stops_sms_but_not_email() {
    let (url, sent) = twilio_stub();
    let t = Tacto::start(&url);
    // A's SMS goes out through Twilio.
    t.put_account(
        "A",
        serde_json::json!([{"id": "m", "channel": "sms", "address": "+12125550100", "consent": true}]),
    );
    eventually("A's SMS reaches Twilio", || {
        sent.lock().map(|s| s.len()).unwrap_or(0) == 1
    });
    let form = sent.lock().expect("sent")[0].1.clone();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("To"), "+12125550100");
    assert!(
        get("Body").ends_with("Reply STOP to opt out."),
        "{}",
        get("Body")
    );
    let callback = get("StatusCallback");
    let path = callback
        .strip_prefix(PUBLIC)
        .expect("callback on the public URL");
    // Twilio reports delivery: a signed callback becomes the job's outcome.
    let delivered = [("MessageSid", "SM1"), ("MessageStatus", "delivered")];
    assert_eq!(t.twilio_callback(path, &delivered), 200);
    eventually("A's delivery is recorded", || {
        t.timeline("A").iter().any(|i| {
            i["kind"] == "contact_outcome"
                && i["event"]["body"]["contact_outcome"]["status"] == "delivered"
        })
    });
    // B's SMS waits for the sender's rate limit; B replies STOP meanwhile (B knows the sender
    // from an earlier campaign): the SMS is recalled and never sent, and the next step, an
    // email, still goes out.
    t.put_account(
        "B",
        serde_json::json!([
            {"id": "m", "channel": "sms", "address": "+12125550111", "consent": true},
            {"id": "e", "channel": "email", "address": "b@example.com", "consent": true}
        ]),
    );
    eventually("B's SMS job is queued", || {
        kinds(&t.timeline("B")).contains(&"contact_scheduled".to_owned())
    });
    let stop = [
        ("MessageSid", "SM9"),
        ("From", "+12125550111"),
        ("Body", "STOP"),
    ];
    assert_eq!(t.twilio_callback("/v1/callbacks/twilio", &stop), 200);
    eventually("B's email goes out", || {
        t.outbox()
            .iter()
            .any(|m| m["account_id"] == "B" && m["channel"] == "email")
    });
    let k = kinds(&t.timeline("B"));
    assert!(k.contains(&"opted_out".to_owned()), "{k:?}");
    assert!(k.contains(&"jobs_recalled".to_owned()), "{k:?}");
    std::thread::sleep(Duration::from_secs(1));
    let to_b = sent
        .lock()
        .map(|s| {
            s.iter()
                .filter(|(_, f)| f.iter().any(|(n, v)| n == "To" && v == "+12125550111"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(to_b, 0, "no SMS to B after STOP");
    // A forged callback changes nothing.
    let forged = [
        ("MessageSid", "SM9"),
        ("From", "+12125550100"),
        ("Body", "STOP"),
    ];
    let owned: Vec<(String, String)> = forged
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let status = Tacto::agent()
        .post(format!("{}/v1/callbacks/twilio", t.base))
        .header(
            "X-Twilio-Signature",
            twilio::signature("wrong", PUBLIC, &owned),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("MessageSid=SM9&From=%2B12125550100&Body=STOP")
        .expect("forged")
        .status()
        .as_u16();
    assert_eq!(status, 401);
    assert!(!kinds(&t.timeline("A")).contains(&"opted_out".to_owned()));
}

#[test]
fn a_burst_of_jobs_never_exceeds_the_sender_rate() {
    let (url, sent) = twilio_stub();
    let t = Tacto::start_with_rate(&url, "5");
    let n = 15;
    for i in 0..n {
        t.put_account(
            &format!("R{i}"),
            serde_json::json!([{"id": "m", "channel": "sms", "address": format!("+1212555{i:04}"), "consent": true}]),
        );
    }
    eventually("every SMS reaches Twilio", || {
        sent.lock().map(|s| s.len()).unwrap_or(0) == n
    });
    let times: Vec<Instant> = sent.lock().expect("sent").iter().map(|(t, _)| *t).collect();
    // In any one-second window, at most 5 requests (+1 for network jitter at the window edge).
    let most = times
        .iter()
        .map(|a| {
            times
                .iter()
                .filter(|b| **b >= *a && b.duration_since(*a) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(most <= 6, "{most} requests within one second at 5/s");
    let span = times
        .iter()
        .max()
        .expect("last")
        .duration_since(*times.iter().min().expect("first"));
    // 15 sends at 5/s take at least 14 intervals of 200 ms.
    assert!(span >= Duration::from_millis(2_600), "{span:?}");
}

/// Leads at a stand-in Vicidial: (vendor lead code, status, in hopper).
type Leads = Arc<Mutex<Vec<(String, String, bool)>>>;

async fn vicidial_api(
    State(leads): State<Leads>,
    Form(form): Form<Vec<(String, String)>>,
) -> String {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if get("user") != "api" || get("pass") != "secret" {
        return "ERROR: Invalid Username/Password".into();
    }
    let mut l = leads.lock().expect("leads");
    match get("function").as_str() {
        "add_lead" => {
            l.push((
                get("vendor_lead_code"),
                "NEW".into(),
                get("add_to_hopper") == "Y",
            ));
            "SUCCESS: add_lead LEAD HAS BEEN ADDED".into()
        }
        "update_lead" => {
            let code = get("vendor_lead_code");
            match l.iter_mut().find(|x| x.0 == code) {
                Some(lead) => {
                    lead.1 = get("status");
                    lead.2 = get("remove_from_hopper") != "Y";
                    "SUCCESS: update_lead LEAD HAS BEEN UPDATED".into()
                }
                None => "NOTICE: update_lead NO MATCHES FOUND IN THE SYSTEM".into(),
            }
        }
        _ => "ERROR: INVALID FUNCTION".into(),
    }
}

/// A Vicidial non-agent API stand-in (add_lead, update_lead by vendor lead code).
fn vicidial_stub() -> (String, Leads) {
    let leads: Leads = Arc::default();
    let app = Router::new()
        .route("/vicidial/non_agent_api.php", post(vicidial_api))
        .with_state(leads.clone());
    (
        format!("{}/vicidial/non_agent_api.php", serve_in_thread(app)),
        leads,
    )
}

fn voice_policy() -> String {
    common::zz_policy(
        "channels-e2e-voice",
        &[r#"{ day = 0, channel = "voice", template = "agent_call", fallback = ["sms"] }"#],
    )
}

#[test]
fn a_payment_recalls_work_at_both_the_dialer_and_the_sms_provider() {
    let (twilio_url, sent) = twilio_stub();
    let (vicidial_url, leads) = vicidial_stub();
    let t = Tacto::start_with(
        &twilio_url,
        "0.02",
        &voice_policy(),
        &[
            "--vicidial-url",
            &vicidial_url,
            "--vicidial-user",
            "api",
            "--vicidial-pass",
            "secret",
            "--vicidial-list-id",
            "101",
        ],
    );
    // V has a phone for calls: a lead at the dialer. S1 and S2 only take SMS (the step's
    // fallback): S1's goes out, S2's waits for the sender's rate limit.
    t.put_account(
        "V",
        serde_json::json!([{"id": "p", "channel": "voice", "address": "+12125550150", "consent": true}]),
    );
    eventually("V's lead is at the dialer", || {
        leads
            .lock()
            .is_ok_and(|l| l.iter().any(|x| x.0 == "V" && x.2))
    });
    for id in ["S1", "S2"] {
        t.put_account(
            id,
            serde_json::json!([{"id": "m", "channel": "sms", "address": format!("+1212555{}", if id == "S1" { "0161" } else { "0162" }), "consent": true}]),
        );
    }
    eventually("S1's SMS is sent", || {
        sent.lock().is_ok_and(|s| s.len() == 1)
    });
    eventually("S2's SMS is queued", || {
        kinds(&t.timeline("S2")).contains(&"contact_scheduled".to_owned())
    });
    // Both pay.
    for id in ["V", "S2"] {
        let pay = serde_json::json!({"account_id": id, "payment_id": format!("pay-{id}"), "amount_minor": 50_000, "currency": "USD"});
        let status = Tacto::agent()
            .post(format!("{}/v1/payments", t.base))
            .header("Authorization", "Bearer k1")
            .send(pay.to_string())
            .expect("payment")
            .status();
        assert_eq!(status.as_u16(), 202);
    }
    let recalled = |id: &str| {
        t.timeline(id).iter().any(|i| {
            i["kind"] == "contact_outcome"
                && i["event"]["body"]["contact_outcome"]["status"] == "not_sent"
        })
    };
    eventually("both recalls are confirmed", || {
        recalled("V") && recalled("S2")
    });
    // The dialer took V's lead out of the hopper with the recall status.
    let v = leads
        .lock()
        .expect("leads")
        .iter()
        .find(|x| x.0 == "V")
        .cloned()
        .expect("lead");
    assert_eq!((v.1.as_str(), v.2), ("TACREC", false), "{v:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sent.lock().map(|s| s.len()).unwrap_or(0),
        1,
        "S2's SMS never went out"
    );
}
