//! The Twilio adapter against a local server that enforces the Messages API contract: Basic
//! auth, form fields and their limits, and Twilio's error replies (21211, 21610, 21611, 21614,
//! 20429 with HTTP 429), and calls that got no answer (ambiguous, never retried).
#![allow(missing_docs)]

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::Engine;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tacto_dispatch::sink::{Message, SendError};
use tacto_dispatch::templates::{SelfServiceLinks, Templates};
use tacto_dispatch::twilio::{Sender, TwilioConfig, TwilioSms};
use tacto_model::{Channel, Timestamp};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "auth-token";

#[derive(Default)]
struct Stub {
    accepted: Vec<Vec<(String, String)>>,
    queue_full_once: bool,
}

fn error(status: StatusCode, code: u32, message: &str) -> axum::response::Response {
    (
        status,
        Json(serde_json::json!({"code": code, "message": message, "status": status.as_u16()})),
    )
        .into_response()
}

async fn messages(
    State(stub): State<Arc<Mutex<Stub>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> axum::response::Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
    );
    if account != SID
        || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected)
    {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let to = get("To").unwrap_or_default();
    if !to.starts_with('+') || to.len() < 8 || !to[1..].chars().all(|c| c.is_ascii_digit()) {
        return error(StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number");
    }
    if get("From").is_some() == get("MessagingServiceSid").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' or 'MessagingServiceSid' parameter is required",
        );
    }
    match get("Body") {
        Some(b) if !b.is_empty() && b.chars().count() <= 1600 => {}
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                21617,
                "The concatenated message body exceeds the 1600 character limit",
            );
        }
    }
    if let Some(v) = get("ValidityPeriod")
        && !v.parse::<u32>().is_ok_and(|s| (1..=36_000).contains(&s))
    {
        return error(StatusCode::BAD_REQUEST, 21623, "Invalid ValidityPeriod");
    }
    if let Some(cb) = get("StatusCallback")
        && !cb.starts_with("https://")
    {
        return error(StatusCode::BAD_REQUEST, 21609, "Invalid StatusCallback");
    }
    match to.as_str() {
        // Takes the message, then answers after the client gave up.
        "+15005550408" => {
            stub.lock().expect("stub").accepted.push(form);
            tokio::time::sleep(Duration::from_secs(3)).await;
            return (StatusCode::CREATED, "{}").into_response();
        }
        // Takes the message and answers something that is not Twilio's JSON.
        "+15005550201" => {
            stub.lock().expect("stub").accepted.push(form);
            return (StatusCode::CREATED, "<html>accepted</html>").into_response();
        }
        _ => {}
    }
    let mut stub = stub.lock().expect("stub");
    match to.as_str() {
        "+15005550009" => {
            return error(
                StatusCode::BAD_REQUEST,
                21614,
                "'To' number is not a valid mobile number",
            );
        }
        "+15005550666" => {
            return error(
                StatusCode::BAD_REQUEST,
                21610,
                "Attempt to send to unsubscribed recipient",
            );
        }
        "+15005550429" => return error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
        "+15005550301" => return error(StatusCode::SERVICE_UNAVAILABLE, 30001, "Queue overflow"),
        "+15005550777" if !stub.queue_full_once => {
            stub.queue_full_once = true;
            return error(
                StatusCode::BAD_REQUEST,
                21611,
                "This 'From' number has exceeded the maximum number of queued messages",
            );
        }
        _ => {}
    }
    stub.accepted.push(form);
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"sid": format!("SM{:032}", stub.accepted.len()), "status": "queued"})),
    )
        .into_response()
}

async fn start() -> (String, Arc<Mutex<Stub>>) {
    let stub = Arc::new(Mutex::new(Stub::default()));
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(messages),
        )
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, stub)
}

fn adapter(base_url: String, token: &str) -> TwilioSms {
    adapter_with_timeout(base_url, token, Duration::from_secs(5))
}

fn adapter_with_timeout(base_url: String, token: &str, timeout: Duration) -> TwilioSms {
    TwilioSms::new(
        TwilioConfig {
            base_url,
            account_sid: SID.into(),
            auth_token: token.into(),
            sender: Sender::Number("+15005550006".into()),
            callback_base: Some("https://tacto.example".into()),
            timeout,
        },
        Arc::new(Templates::builtin(Some(SelfServiceLinks {
            base_url: "https://pay.example".into(),
            secret: "links".into(),
            valid_days: 14,
        }))),
    )
    .expect("adapter")
}

fn message(to: &str) -> Message {
    Message {
        job_id: "A-1:c0:d0.0:a0".into(),
        account_id: "A-1".into(),
        channel: Channel::Sms,
        address: to.into(),
        template: "reminder".into(),
        language: "es".into(),
        balance_minor: 50_000,
        currency: "MXN".into(),
        sent_at: Timestamp::from_micros(1_000_000_000_000),
        not_after: Timestamp::from_micros(1_000_000_000_000 + 5_400_000_000),
        due_date: None,
    }
}

#[tokio::test]
async fn a_message_goes_out_with_the_contract_fields() {
    let (url, stub) = start().await;
    let twilio = adapter(url, TOKEN);
    let accepted = twilio.send(&message("+5215512345678")).await.expect("sent");
    assert!(accepted.sid.starts_with("SM"));
    assert_eq!(accepted.status, "queued");
    let form = stub.lock().expect("stub").accepted[0].clone();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("To").as_deref(), Some("+5215512345678"));
    assert_eq!(get("From").as_deref(), Some("+15005550006"));
    // The window left: 90 minutes.
    assert_eq!(get("ValidityPeriod").as_deref(), Some("5400"));
    assert_eq!(
        get("StatusCallback").as_deref(),
        Some("https://tacto.example/v1/callbacks/twilio?job=A-1%3Ac0%3Ad0.0%3Aa0&account=A-1")
    );
    let body = get("Body").expect("body");
    assert!(body.contains("MXN 500.00"), "{body}");
    assert!(
        body.ends_with("Responda BAJA para no recibir más SMS."),
        "{body}"
    );
}

#[tokio::test]
async fn twilio_errors_map_to_retry_refusal_or_opt_out() {
    let (url, _stub) = start().await;
    let twilio = adapter(url.clone(), TOKEN);
    assert!(matches!(
        twilio.send(&message("+15005550666")).await,
        Err(SendError::OptedOut(why)) if why.contains("21610")
    ));
    assert!(matches!(
        twilio.send(&message("+15005550009")).await,
        Err(SendError::Permanent(why)) if why.contains("21614")
    ));
    assert!(matches!(
        twilio.send(&message("12345")).await,
        Err(SendError::Permanent(why)) if why.contains("21211")
    ));
    assert!(matches!(
        twilio.send(&message("+15005550429")).await,
        Err(SendError::Retryable(why)) if why.contains("20429")
    ));
    assert!(matches!(
        twilio.send(&message("+15005550301")).await,
        Err(SendError::Retryable(why)) if why.contains("30001")
    ));
    // Queue full: retryable, and the retry goes through.
    assert!(matches!(
        twilio.send(&message("+15005550777")).await,
        Err(SendError::Retryable(why)) if why.contains("21611")
    ));
    assert!(twilio.send(&message("+15005550777")).await.is_ok());
    // Wrong credentials: a refusal, not a retry loop.
    let wrong = adapter(url, "not-the-token");
    assert!(matches!(
        wrong.send(&message("+5215512345678")).await,
        Err(SendError::Permanent(why)) if why.contains("20003")
    ));
}

/// A request that went out and got no answer may have been sent: ambiguous, never retried (no
/// idempotency key in Twilio's API); a connection never made sent nothing: retryable.
#[tokio::test]
async fn no_answer_is_ambiguous_and_no_connection_is_retryable() {
    let (url, stub) = start().await;
    let twilio = adapter_with_timeout(url, TOKEN, Duration::from_millis(300));
    assert!(matches!(
        twilio.send(&message("+15005550408")).await,
        Err(SendError::Ambiguous(why)) if why.contains("did not answer")
    ));
    assert!(matches!(
        twilio.send(&message("+15005550201")).await,
        Err(SendError::Ambiguous(why)) if why.contains("unreadable")
    ));
    assert_eq!(stub.lock().expect("stub").accepted.len(), 2);

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let twilio = adapter_with_timeout(url, TOKEN, Duration::from_millis(300));
    assert!(matches!(
        twilio.send(&message("+5215512345678")).await,
        Err(SendError::Retryable(why)) if why.contains("unreachable")
    ));
}
