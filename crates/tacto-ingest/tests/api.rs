//! The HTTP API against a real embedded log, through the router (no network).
#![allow(missing_docs)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tacto_ingest::twilio;
use tacto_ingest::webhook;
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{EventLog, events};
use tacto_model::Channel;
use tower::ServiceExt;

mod common;
use common::{Api, fixed_now, full_config};

const TWILIO_TOKEN: &str = "twilio-token";

fn api() -> Api {
    Api::new(full_config(4096), &["A", "B"], 2)
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, String, serde_json::Value) {
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, ctype, json)
}

fn post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("authorization", "Bearer k1")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn events_written(log: &EmbeddedLog) -> u64 {
    (0..2)
        .map(|p| log.end_offset(events::EVENTS.name(), p).unwrap_or(0))
        .sum()
}

const PAYMENT: &str =
    r#"{"account_id": "A-1", "payment_id": "bank-9", "amount_minor": 1000, "currency": "USD"}"#;

#[tokio::test]
async fn a_payment_is_accepted_once() {
    let a = api();
    let (status, _, ack) = call(&a.app, post("/v1/payments", PAYMENT)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    assert_eq!(ack["status"], "accepted");
    let (status, _, ack) = call(&a.app, post("/v1/payments", PAYMENT)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack["status"], "duplicate");
    assert_eq!(events_written(&a.log), 1);
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_the_field_and_writes_nothing() {
    let a = api();
    let cases = [
        (
            r#"{"account_id": "A-1", "payment_id": "p", "amount_minor": 0, "currency": "USD"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("body.payment_received.amount_minor"),
        ),
        (
            r#"{"account_id": "A-1", "payment_id": "p", "amount_minor": 5, "currency": "usd"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("body.payment_received.currency"),
        ),
        (
            r#"{"account_id": "A-1", "payment_id": "p", "amount_minor": "5", "currency": "USD"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("amount_minor"),
        ),
        (
            r#"{"account_id": "A-1", "payment_id": "p", "currency": "USD"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            r#"{"account_id": "A-1", "payment_id": "p", "amount_minor": 5, "currency": "USD", "extra": 1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (r#"{"account_id": "#, StatusCode::BAD_REQUEST, None),
    ];
    for (body, want, field) in cases {
        let (status, ctype, problem) = call(&a.app, post("/v1/payments", body)).await;
        assert_eq!(status, want, "{body}: {problem}");
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(problem["status"], want.as_u16());
        if let Some(f) = field {
            assert_eq!(problem["field"], f, "{problem}");
        }
    }
    let big = format!(r#"{{"account_id": "{}"}}"#, "x".repeat(10_000));
    let (status, ctype, _) = call(&a.app, post("/v1/payments", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(events_written(&a.log), 0);
}

#[tokio::test]
async fn requests_without_a_known_key_are_refused() {
    let a = api();
    let mut req = post("/v1/payments", PAYMENT);
    req.headers_mut().remove("authorization");
    assert_eq!(call(&a.app, req).await.0, StatusCode::UNAUTHORIZED);
    let mut req = post("/v1/payments", PAYMENT);
    req.headers_mut()
        .insert("authorization", "Bearer nope".parse().expect("header"));
    assert_eq!(call(&a.app, req).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(events_written(&a.log), 0);
}

fn signed(body: &str, ts: i64, secret: &[u8]) -> Request<Body> {
    Request::post("/v1/webhooks/payments")
        .header("content-type", "application/json")
        .header("X-Tacto-Timestamp", ts.to_string())
        .header(
            "X-Tacto-Signature",
            webhook::sign(secret, ts, body.as_bytes()),
        )
        .body(Body::from(body.to_owned()))
        .expect("request")
}

#[tokio::test]
async fn signed_webhooks_are_verified_and_replays_change_nothing() {
    let a = api();
    let now = fixed_now().as_micros() / 1_000_000;
    let (status, _, p) = call(&a.app, signed(PAYMENT, now, b"wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
    let (status, _, _) = call(&a.app, signed(PAYMENT, now - 3_600, b"whsec")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an hour-old delivery is a replay"
    );
    assert_eq!(events_written(&a.log), 0);
    let (status, _, _) = call(&a.app, signed(PAYMENT, now, b"whsec")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, ack) = call(&a.app, signed(PAYMENT, now + 5, b"whsec")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack["status"], "duplicate");
    assert_eq!(events_written(&a.log), 1);
}

#[tokio::test]
async fn an_account_upsert_is_idempotent_and_decisions_are_refused() {
    let a = api();
    let body = r#"{"person_id": "p", "currency": "USD",
        "debts": [{"debt_id": "d", "balance_minor": 100, "due_date": "2026-11-01"}],
        "jurisdiction": {"country": "US", "subdivision": "US-NY"},
        "contact_points": [{"id": "m", "channel": "sms", "address": "+12125550100", "consent": true}]}"#;
    let put = || {
        Request::put("/v1/accounts/A-1")
            .header("authorization", "Bearer k1")
            .body(Body::from(body))
            .expect("request")
    };
    assert_eq!(call(&a.app, put()).await.0, StatusCode::ACCEPTED);
    assert_eq!(call(&a.app, put()).await.0, StatusCode::OK);
    let decision = serde_json::json!({
        "id": "x", "occurred_at": "2026-11-16T15:00:00Z", "account_id": "A-1",
        "body": {"promise_kept": {"promise_id": "p", "decision": {"policy_version": "v", "reasons": []}}}
    });
    let (status, _, p) = call(&a.app, post("/v1/events", &decision.to_string())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["field"], "body");
    assert_eq!(events_written(&a.log), 1);
}

/// A Twilio webhook as Twilio sends it: form-encoded, signed over the public URL.
fn twilio_post(path_and_query: &str, params: &[(&str, &str)], token: &str) -> Request<Body> {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let url = format!("https://tacto.example{path_and_query}");
    let body = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&");
    Request::post(path_and_query)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", twilio::signature(token, &url, &owned))
        .body(Body::from(body))
        .expect("request")
}

fn kinds_written(log: &EmbeddedLog) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..2 {
        for d in log.read(events::EVENTS.name(), p, 0, 100).expect("read") {
            out.push(d.record.header("ce_type").unwrap_or_default().to_owned());
        }
    }
    out
}

#[tokio::test]
async fn twilio_callbacks_are_verified_and_become_events() {
    let a = api();
    let path = "/v1/callbacks/twilio?job=A%3Ac0%3Ad0.0%3Aa0&account=A";
    let delivered = [
        ("MessageSid", "SM1"),
        ("MessageStatus", "delivered"),
        ("To", "+12125550100"),
    ];
    // Wrongly signed: refused, nothing written.
    let (status, ctype, _) = call(&a.app, twilio_post(path, &delivered, "wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(events_written(&a.log), 0);
    // An intermediate status adds nothing.
    let sent = [("MessageSid", "SM1"), ("MessageStatus", "sent")];
    assert_eq!(
        call(&a.app, twilio_post(path, &sent, TWILIO_TOKEN)).await.0,
        StatusCode::OK
    );
    assert_eq!(events_written(&a.log), 0);
    // Delivered: one outcome, once however often Twilio retries the callback.
    for _ in 0..2 {
        let (status, ctype, _) = call(&a.app, twilio_post(path, &delivered, TWILIO_TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "text/xml");
    }
    assert_eq!(kinds_written(&a.log), vec!["dev.tacto.contact_outcome"]);
    // Changing the job in the URL breaks the signature.
    let tampered = twilio_post(path, &delivered, TWILIO_TOKEN);
    let (parts, body) = tampered.into_parts();
    let mut req = Request::post("/v1/callbacks/twilio?job=B%3Ac0%3Ad0.0%3Aa0&account=B")
        .body(body)
        .expect("request");
    *req.headers_mut() = parts.headers;
    assert_eq!(call(&a.app, req).await.0, StatusCode::UNAUTHORIZED);
    // An inbound STOP opts out every account with that number, of SMS only.
    let stop = [
        ("MessageSid", "SM9"),
        ("From", "+12125550100"),
        ("Body", " Stop "),
    ];
    assert_eq!(
        call(
            &a.app,
            twilio_post("/v1/callbacks/twilio", &stop, TWILIO_TOKEN)
        )
        .await
        .0,
        StatusCode::OK
    );
    let kinds = kinds_written(&a.log);
    assert_eq!(
        kinds.iter().filter(|k| *k == "dev.tacto.opted_out").count(),
        2
    );
    // Anything else inbound is acknowledged and changes nothing.
    let hello = [
        ("MessageSid", "SM10"),
        ("From", "+12125550100"),
        ("Body", "hola"),
    ];
    call(
        &a.app,
        twilio_post("/v1/callbacks/twilio", &hello, TWILIO_TOKEN),
    )
    .await;
    assert_eq!(kinds_written(&a.log).len(), 3);
}

#[tokio::test]
async fn one_click_unsubscribe_needs_a_signed_link_and_opts_out_once() {
    let a = api();
    let url = tacto_ingest::links::unsubscribe_url("", b"links", "A", Channel::Email);
    // A GET shows the page and changes nothing (mail scanners follow links).
    let (status, ctype, _) =
        call(&a.app, Request::get(&url).body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/html"));
    assert_eq!(events_written(&a.log), 0);
    let one_click = |u: &str| {
        Request::post(u)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("List-Unsubscribe=One-Click"))
            .expect("req")
    };
    for _ in 0..2 {
        assert_eq!(call(&a.app, one_click(&url)).await.0, StatusCode::OK);
    }
    assert_eq!(kinds_written(&a.log), vec!["dev.tacto.opted_out"]);
    // Moved to another account, or forged: refused.
    let moved = url.replace("account=A", "account=B");
    assert_eq!(
        call(&a.app, one_click(&moved)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(events_written(&a.log), 1);
}

#[tokio::test]
async fn dialer_dispositions_become_outcomes_promises_and_opt_outs() {
    let a = api();
    let promise = r#"{"account_id": "A", "job_id": "A:c0:d5.0:a0", "call_id": "c-1",
        "disposition": "promise_taken",
        "promise": {"promise_id": "p-1", "amount_minor": 20000, "due_date": "2026-11-30"}}"#;
    for _ in 0..2 {
        let (status, _, _) = call(&a.app, post("/v1/callbacks/dialer", promise)).await;
        assert!(status.is_success(), "{status}");
    }
    assert_eq!(
        kinds_written(&a.log),
        vec!["dev.tacto.contact_outcome", "dev.tacto.promise_made"],
        "once, however often the dialer reports the call"
    );
    // A promise without its terms is refused and writes nothing.
    let bad = r#"{"account_id": "A", "call_id": "c-2", "disposition": "promise_taken"}"#;
    let (status, _, p) = call(&a.app, post("/v1/callbacks/dialer", bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["field"], "promise");
    assert_eq!(events_written(&a.log), 2);
    // Vicidial's dispo URL: DNC opts the account out of calls.
    let dispo = |token: &str, status: &str| {
        Request::get(format!(
            "/v1/callbacks/vicidial?token={token}&account=A&job=&call=v-9&status={status}"
        ))
        .body(Body::empty())
        .expect("req")
    };
    assert_eq!(
        call(&a.app, dispo("wrong", "DNC")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&a.app, dispo("dial-token", "ZZZ")).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, _, p) = call(&a.app, dispo("dial-token", "DNC")).await;
    assert!(status.is_success(), "{status} {p}");
    let kinds = kinds_written(&a.log);
    assert!(
        kinds.contains(&"dev.tacto.opted_out".to_owned()),
        "{kinds:?}"
    );
    assert_eq!(kinds.len(), 3);
}
