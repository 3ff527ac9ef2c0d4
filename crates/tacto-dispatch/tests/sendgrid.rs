//! The SendGrid adapter against a local server that enforces the v3 mail-send contract: bearer
//! key, personalizations with recipients, sender, subject, content; 202 on success, 429 and 400
//! errors as SendGrid answers them.
#![allow(missing_docs)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tacto_dispatch::email::UnsubscribeLinks;
use tacto_dispatch::sendgrid::{Sendgrid, SendgridConfig};
use tacto_dispatch::sink::{Message, SendError};
use tacto_dispatch::templates::Templates;
use tacto_model::{Channel, Timestamp};

type Mails = Arc<Mutex<Vec<serde_json::Value>>>;

async fn send(
    State(mails): State<Mails>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let error = |status: StatusCode, message: &str, field: &str| {
        (
            status,
            Json(serde_json::json!({"errors": [{"message": message, "field": field}]})),
        )
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer SG.key") {
        return error(
            StatusCode::UNAUTHORIZED,
            "The provided authorization grant is invalid",
            "",
        );
    }
    let to = &body["personalizations"][0]["to"][0]["email"];
    if !to.as_str().is_some_and(|e| e.contains('@')) {
        return error(
            StatusCode::BAD_REQUEST,
            "Does not contain a valid address.",
            "personalizations.0.to.0.email",
        );
    }
    if body["from"]["email"].as_str().is_none()
        || body["subject"].as_str().is_none_or(str::is_empty)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "The from and subject are required.",
            "from",
        );
    }
    if body["content"][0]["value"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return error(StatusCode::BAD_REQUEST, "Content is required.", "content");
    }
    if to == "busy@example.com" {
        return error(StatusCode::TOO_MANY_REQUESTS, "too many requests", "");
    }
    mails.lock().expect("mails").push(body);
    (StatusCode::ACCEPTED, Json(serde_json::Value::Null))
}

async fn start() -> (String, Mails) {
    let mails: Mails = Arc::default();
    let app = Router::new()
        .route("/v3/mail/send", post(send))
        .with_state(mails.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, mails)
}

fn adapter(base_url: String, key: &str) -> Sendgrid {
    Sendgrid::new(
        SendgridConfig {
            base_url,
            api_key: key.into(),
            from_email: "cobranzas@lender.example".into(),
            from_name: Some("Cobranzas".into()),
            unsubscribe: UnsubscribeLinks {
                public_url: Some("https://tacto.example".into()),
                link_secret: Some("links".into()),
                mailto: None,
            },
            timeout: Duration::from_secs(5),
        },
        Arc::new(Templates::builtin(None)),
    )
    .expect("adapter")
}

fn message(to: &str) -> Message {
    Message {
        job_id: "A-1:c0:d3.0:a0".into(),
        account_id: "A-1".into(),
        channel: Channel::Email,
        address: to.into(),
        template: "reminder_email".into(),
        language: "pt".into(),
        balance_minor: 9_990,
        currency: "BRL".into(),
        sent_at: Timestamp::from_micros(0),
        not_after: Timestamp::from_micros(3_600_000_000),
        due_date: None,
    }
}

#[tokio::test]
async fn an_email_is_accepted_with_its_custom_args_and_unsubscribe_headers() {
    let (url, mails) = start().await;
    adapter(url, "SG.key")
        .send(&message("cliente@example.com"))
        .await
        .expect("sent");
    let m = mails.lock().expect("mails")[0].clone();
    assert_eq!(
        m["personalizations"][0]["custom_args"]["job_id"],
        "A-1:c0:d3.0:a0"
    );
    assert_eq!(m["personalizations"][0]["custom_args"]["account_id"], "A-1");
    assert_eq!(m["from"]["name"], "Cobranzas");
    assert_eq!(m["subject"], "Sobre sua conta");
    let body = m["content"][0]["value"].as_str().unwrap_or_default();
    assert!(
        body.contains("BRL 99.90") && body.contains("descadastro"),
        "{body}"
    );
    assert_eq!(
        m["headers"]["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    assert!(m["headers"]["List-Unsubscribe"].as_str().is_some_and(|l| {
        l.starts_with("<https://tacto.example/v1/unsubscribe?account=A-1&channel=email&sig=")
    }));
}

#[tokio::test]
async fn sendgrid_errors_are_retried_or_refused() {
    let (url, _) = start().await;
    assert!(matches!(
        adapter(url.clone(), "SG.key").send(&message("busy@example.com")).await,
        Err(SendError::Retryable(why)) if why.contains("429")
    ));
    assert!(matches!(
        adapter(url.clone(), "SG.key").send(&message("not-an-address")).await,
        Err(SendError::Permanent(why)) if why.contains("valid address")
    ));
    assert!(matches!(
        adapter(url, "SG.wrong").send(&message("cliente@example.com")).await,
        Err(SendError::Permanent(why)) if why.contains("401")
    ));
}
