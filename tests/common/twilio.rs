//! A Twilio Messages API stand-in for the end-to-end tests: it enforces the contract (account
//! SID, auth, required fields) and records every message.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Form, Json, Router};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The account SID the stub accepts.
pub const SID: &str = "AC00000000000000000000000000000001";
/// The auth token Tacto is started with.
pub const TOKEN: &str = "twilio-auth-token";

/// Every message the stub took: when, and its form fields.
pub type Sent = Arc<Mutex<Vec<(Instant, Vec<(String, String)>)>>>;

/// Serves `app` on a loopback port from a thread of its own; returns its base URL.
pub fn serve_in_thread(app: Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = tx.send(format!("http://{}", listener.local_addr().expect("addr")));
            let _ = axum::serve(listener, app).await;
        });
    });
    rx.recv().expect("stub url")
}

async fn twilio_messages(
    State(sent): State<Sent>,
    Path(account): Path<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let has = |k: &str| form.iter().any(|(n, v)| n == k && !v.is_empty());
    if account != SID || auth.is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"code": 20003})),
        );
    }
    if !has("To") || !has("Body") || !has("From") {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"code": 21604})),
        );
    }
    let mut s = sent.lock().expect("stub");
    s.push((Instant::now(), form));
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"sid": format!("SM{:032}", s.len()), "status": "queued"})),
    )
}

/// A Twilio Messages API stand-in (auth and required fields enforced).
pub fn twilio_stub() -> (String, Sent) {
    let sent: Sent = Arc::default();
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(twilio_messages),
        )
        .with_state(sent.clone());
    (serve_in_thread(app), sent)
}

/// The `tacto run` flags that send SMS through the stub at `url` with [`SID`] and [`TOKEN`].
pub fn flags(url: &str) -> Vec<String> {
    [
        "--twilio-account-sid",
        SID,
        "--twilio-auth-token",
        TOKEN,
        "--twilio-from",
        "+15005550006",
        "--twilio-base-url",
        url,
    ]
    .map(str::to_owned)
    .to_vec()
}
