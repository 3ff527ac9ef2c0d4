//! Bad input never hurts: at least 10,000 generated requests against every endpoint of the API
//! (malformed, truncated, bit-flipped, type-confused, oversized and deeply nested bodies; missing,
//! wrong and non-ASCII keys; webhook deliveries wrongly signed, stale, from the future or signed
//! over another body; replays of accepted requests), through the router against a real embedded
//! log. For every request: no 5xx and no panic; every refusal is an RFC 9457 problem and writes
//! nothing; a replay of an accepted request writes nothing either.
#![allow(missing_docs)]

use axum::body::Body;
use axum::http::{HeaderValue, Request};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tacto_ingest::{links, twilio, webhook};
use tacto_log::embedded::EmbeddedLog;
use tacto_log::{EventLog, events};
use tacto_model::Channel;
use tower::ServiceExt;

mod common;
use common::{Api, fixed_now, full_config};

const SECRET: &[u8] = b"whsec";
const TWILIO_TOKEN: &str = "twilio-token";
const MAX_BODY: usize = 4096;

/// How an endpoint authenticates.
#[derive(Clone, Copy, Debug)]
enum Auth {
    /// `Authorization: Bearer` API key.
    Key,
    /// `X-Tacto-Timestamp` + `X-Tacto-Signature` (payment webhooks).
    Signed,
    /// `X-Twilio-Signature` over the public URL and the form.
    Twilio,
    /// A signed unsubscribe link (the signature in the query).
    Link,
    /// Its own token in the query, or nothing.
    Open,
}

/// An endpoint and a body it accepts.
struct Endpoint {
    method: &'static str,
    path: &'static str,
    auth: Auth,
    body: &'static str,
}

const ACCOUNT: &str = r#"{"person_id": "p", "currency": "USD",
 "debts": [{"debt_id": "d", "balance_minor": 100, "due_date": "2026-11-01"}],
 "jurisdiction": {"country": "US", "subdivision": "US-NY"},
 "contact_points": [{"id": "m", "channel": "sms", "address": "+12125550100", "consent": true}]}"#;
const PAYMENT: &str =
    r#"{"account_id": "A-1", "payment_id": "bank-9", "amount_minor": 1000, "currency": "USD"}"#;
const EVENT: &str = r#"{"id": "ev-1", "occurred_at": "2026-11-16T15:00:00Z", "account_id": "A-1",
 "body": {"promise_made": {"promise_id": "pm-1", "amount_minor": 500, "due_date": "2026-11-20", "promise_source": "agent"}}}"#;
const CSV: &str = "account_id,person_id,currency,debt_id,balance_minor,due_date,country,phone\n\
A-2,p-2,USD,d-1,5000,2026-10-01,US,+12125550100\n";

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "PUT",
        path: "/v1/accounts/A-1",
        auth: Auth::Key,
        body: ACCOUNT,
    },
    Endpoint {
        method: "GET",
        path: "/v1/accounts/A-1",
        auth: Auth::Key,
        body: "",
    },
    Endpoint {
        method: "GET",
        path: "/v1/accounts/A-1/timeline",
        auth: Auth::Key,
        body: "",
    },
    Endpoint {
        method: "POST",
        path: "/v1/payments",
        auth: Auth::Key,
        body: PAYMENT,
    },
    Endpoint {
        method: "POST",
        path: "/v1/promises",
        auth: Auth::Key,
        body: r#"{"account_id": "A-1", "promise_id": "pr-1", "amount_minor": 500, "due_date": "2026-11-20", "source": "agent"}"#,
    },
    Endpoint {
        method: "POST",
        path: "/v1/disputes",
        auth: Auth::Key,
        body: r#"{"account_id": "A-1", "dispute_id": "dp-1", "reason": "fraud", "note": "not me"}"#,
    },
    Endpoint {
        method: "POST",
        path: "/v1/opt-outs",
        auth: Auth::Key,
        body: r#"{"account_id": "A-1", "channel": "sms", "via": "agent"}"#,
    },
    Endpoint {
        method: "POST",
        path: "/v1/outcomes",
        auth: Auth::Key,
        body: r#"{"account_id": "A-1", "job_id": "A-1:c0:d0.0:a0", "channel": "sms", "status": "delivered"}"#,
    },
    Endpoint {
        method: "POST",
        path: "/v1/events",
        auth: Auth::Key,
        body: EVENT,
    },
    Endpoint {
        method: "POST",
        path: "/v1/callbacks/dialer",
        auth: Auth::Key,
        body: r#"{"account_id": "A-1", "call_id": "c-1", "disposition": "promise_taken",
          "promise": {"promise_id": "dp-1", "amount_minor": 700, "due_date": "2026-11-25"}}"#,
    },
    Endpoint {
        method: "POST",
        path: "/v1/imports",
        auth: Auth::Key,
        body: CSV,
    },
    Endpoint {
        method: "POST",
        path: "/v1/webhooks/payments",
        auth: Auth::Signed,
        body: PAYMENT,
    },
    Endpoint {
        method: "POST",
        path: "/v1/callbacks/twilio",
        auth: Auth::Twilio,
        body: "MessageSid=SM1&MessageStatus=delivered&From=%2B12125550100&To=%2B15005550006",
    },
    Endpoint {
        method: "POST",
        path: "/v1/callbacks/sendgrid",
        auth: Auth::Open,
        body: "[]",
    },
    Endpoint {
        method: "GET",
        path: "/v1/callbacks/vicidial?token=dial-token&account=A-1&call=v-1&status=NA",
        auth: Auth::Open,
        body: "",
    },
    Endpoint {
        method: "POST",
        path: "/v1/unsubscribe",
        auth: Auth::Link,
        body: "",
    },
    Endpoint {
        method: "PUT",
        path: "/v1/accounts/%FF%00x",
        auth: Auth::Key,
        body: ACCOUNT,
    },
    Endpoint {
        method: "GET",
        path: "/v1/accounts/%C3%28/timeline",
        auth: Auth::Key,
        body: "",
    },
    Endpoint {
        method: "DELETE",
        path: "/v1/payments",
        auth: Auth::Key,
        body: PAYMENT,
    },
    Endpoint {
        method: "POST",
        path: "/v1/nothing-here",
        auth: Auth::Key,
        body: PAYMENT,
    },
];

/// What is done to the endpoint's body.
#[derive(Clone, Debug)]
enum Mutation {
    Valid,
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    Random(Vec<u8>),
    Oversized(usize),
    Nested(usize),
    /// Replaces (or, with `None`, removes) the value of the n-th key of the JSON object.
    Swap(usize, Option<serde_json::Value>),
    UnknownField,
}

/// What is done to the credentials.
#[derive(Clone, Debug)]
enum Credentials {
    Valid,
    Missing,
    WrongSecret,
    /// A signature valid for this many seconds away from now (stale or from the future).
    Skewed(i64),
    /// A valid signature over the endpoint's unmutated body.
    OverAnotherBody,
    Garbage(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Case {
    endpoint: usize,
    mutation: Mutation,
    credentials: Credentials,
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        Just(serde_json::from_str::<Value>("99999999999999999999999").unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::String),
        "[\\x00-\\x1f\u{202e}\u{fffd}]{1,8}".prop_map(Value::String),
        (1usize..3000).prop_map(|n| Value::String("9".repeat(n))),
        Just(json!([])),
        Just(json!({"a": {"b": [1, 2, {"c": null}]}})),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => Just(Mutation::Valid),
        2 => (0usize..400).prop_map(Mutation::Truncate),
        3 => prop::collection::vec((0usize..400, any::<u8>()), 1..6).prop_map(Mutation::Flip),
        2 => prop::collection::vec(any::<u8>(), 0..600).prop_map(Mutation::Random),
        1 => (MAX_BODY..4 * MAX_BODY).prop_map(Mutation::Oversized),
        1 => (100usize..2000).prop_map(Mutation::Nested),
        4 => (0usize..8, prop::option::weighted(0.9, json_value()))
            .prop_map(|(k, v)| Mutation::Swap(k, v)),
        1 => Just(Mutation::UnknownField),
    ]
}

fn credentials() -> impl Strategy<Value = Credentials> {
    prop_oneof![
        4 => Just(Credentials::Valid),
        1 => Just(Credentials::Missing),
        1 => Just(Credentials::WrongSecret),
        1 => prop_oneof![Just(-3_600i64), Just(-301), Just(301), Just(86_400)]
            .prop_map(Credentials::Skewed),
        1 => Just(Credentials::OverAnotherBody),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Credentials::Garbage),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (0..ENDPOINTS.len(), mutation(), credentials()).prop_map(|(endpoint, mutation, credentials)| {
        Case {
            endpoint,
            mutation,
            credentials,
        }
    })
}

fn mutate(base: &str, m: &Mutation) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    match m {
        Mutation::Valid => {}
        Mutation::Truncate(n) => b.truncate(*n % (b.len() + 1)),
        Mutation::Flip(flips) => {
            for (at, byte) in flips {
                if !b.is_empty() {
                    let i = at % b.len();
                    b[i] = *byte;
                }
            }
        }
        Mutation::Random(bytes) => b = bytes.clone(),
        Mutation::Oversized(n) => b.resize(*n, b' '),
        Mutation::Nested(depth) => {
            b = format!("{}{}", "[".repeat(*depth), "]".repeat(*depth)).into_bytes();
        }
        Mutation::Swap(k, v) => {
            if let Ok(serde_json::Value::Object(mut o)) = serde_json::from_str(base) {
                if let Some(key) = o.keys().nth(k % o.len().max(1)).cloned() {
                    match v {
                        Some(v) => o.insert(key, v.clone()),
                        None => o.remove(&key),
                    };
                }
                b = serde_json::to_vec(&o).unwrap_or_default();
            }
        }
        Mutation::UnknownField => {
            if let Ok(serde_json::Value::Object(mut o)) = serde_json::from_str(base) {
                o.insert("surprise".into(), serde_json::json!(1));
                b = serde_json::to_vec(&o).unwrap_or_default();
            }
        }
    }
    b
}

fn garbage_header(bytes: &[u8]) -> HeaderValue {
    // Bytes a header cannot carry at all (CR, LF, NUL) are not sent by any client either.
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static("garbage"))
}

fn request(c: &Case) -> Request<Body> {
    let e = &ENDPOINTS[c.endpoint];
    let body = mutate(e.body, &c.mutation);
    let now = fixed_now().as_micros() / 1_000_000;
    let creds = &c.credentials;
    let uri = match (e.auth, creds) {
        (Auth::Link, Credentials::Missing) => format!("{}?account=A-1&channel=sms", e.path),
        (Auth::Link, Credentials::Valid) => format!(
            "{}?account=A-1&channel=sms&sig={}",
            e.path,
            links::sign_unsubscribe(b"links", "A-1", Channel::Sms)
        ),
        (Auth::Link, _) => format!(
            "{}?account=A-1&channel=sms&sig={}",
            e.path,
            links::sign_unsubscribe(b"wrong", "A-1", Channel::Sms)
        ),
        _ => e.path.to_owned(),
    };
    let mut r = Request::builder().method(e.method).uri(uri);
    match e.auth {
        Auth::Key => {
            r = match creds {
                Credentials::Missing => r,
                Credentials::WrongSecret => r.header("authorization", "Bearer nope"),
                Credentials::Garbage(g) => {
                    let mut v = b"Bearer ".to_vec();
                    v.extend_from_slice(g);
                    r.header("authorization", garbage_header(&v))
                }
                _ => r.header("authorization", "Bearer k1"),
            };
        }
        Auth::Signed => {
            let (secret, ts, signed_body): (&[u8], i64, &[u8]) = match creds {
                Credentials::WrongSecret => (b"wrong", now, &body),
                Credentials::Skewed(s) => (SECRET, now + s, &body),
                Credentials::OverAnotherBody => (SECRET, now, e.body.as_bytes()),
                _ => (SECRET, now, &body),
            };
            r = match creds {
                Credentials::Missing => r,
                Credentials::Garbage(g) => r
                    .header("X-Tacto-Timestamp", now.to_string())
                    .header("X-Tacto-Signature", garbage_header(g)),
                _ => r
                    .header("X-Tacto-Timestamp", ts.to_string())
                    .header("X-Tacto-Signature", webhook::sign(secret, ts, signed_body)),
            };
        }
        Auth::Twilio => {
            let params: Vec<(String, String)> = form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let url = format!("https://tacto.example{}", e.path);
            r = r.header("content-type", "application/x-www-form-urlencoded");
            r = match creds {
                Credentials::Missing => r,
                Credentials::Garbage(g) => r.header("X-Twilio-Signature", garbage_header(g)),
                Credentials::WrongSecret => r.header(
                    "X-Twilio-Signature",
                    twilio::signature("nope", &url, &params),
                ),
                _ => r.header(
                    "X-Twilio-Signature",
                    twilio::signature(TWILIO_TOKEN, &url, &params),
                ),
            };
        }
        Auth::Link | Auth::Open => {}
    }
    r.body(Body::from(body)).unwrap_or_default()
}

/// Every record on every topic ingest writes to.
fn written(log: &EmbeddedLog) -> u64 {
    [events::EVENTS, events::CONTACTS, events::DEAD_LETTERS]
        .iter()
        .flat_map(|t| (0..2).map(move |p| (t, p)))
        .map(|(t, p)| log.end_offset(t.name(), p).unwrap_or(0))
        .sum()
}

struct Seen {
    status: u16,
    problem: bool,
    detail: String,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Result<Seen, TestCaseError> {
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| TestCaseError::fail(format!("no response: {e}")))?;
    let status = resp.status().as_u16();
    let problem = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .map_err(|e| TestCaseError::fail(format!("unreadable body: {e}")))?;
    Ok(Seen {
        status,
        problem,
        detail: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
    })
}

#[test]
fn ten_thousand_bad_requests_get_problems_and_change_nothing() {
    let Api {
        app,
        log,
        dir: _dir,
    } = Api::new(full_config(MAX_BODY), &["A-1"], 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: 10_000,
        failure_persistence: None,
        ..Config::default()
    });
    let counts = std::cell::RefCell::new([0u32; 4]); // accepted, refused, replayed, 2xx other
    let result = runner.run(&case(), |c| {
        rt.block_on(async {
            let before = written(&log);
            let seen = send(&app, request(&c)).await?;
            let after = written(&log);
            prop_assert!(seen.status < 500, "{c:?}: {} {}", seen.status, seen.detail);
            if seen.status >= 400 {
                prop_assert!(
                    seen.problem,
                    "{c:?}: {} is not a problem: {}",
                    seen.status,
                    seen.detail
                );
                prop_assert_eq!(
                    before,
                    after,
                    "{:?}: refused ({}) but written",
                    c,
                    seen.status
                );
                counts.borrow_mut()[1] += 1;
            } else if after > before {
                counts.borrow_mut()[0] += 1;
                // A replay of an accepted request writes nothing.
                let again = send(&app, request(&c)).await?;
                prop_assert!(again.status < 500, "{c:?}: replay {}", again.status);
                prop_assert_eq!(after, written(&log), "{:?}: the replay was written", c);
                counts.borrow_mut()[2] += 1;
            } else {
                counts.borrow_mut()[3] += 1;
            }
            Ok(())
        })
    });
    let [accepted, refused, replayed, other] = *counts.borrow();
    eprintln!(
        "requests: {} generated ({accepted} accepted and replayed {replayed} times, {refused} refused, {other} other 2xx)",
        accepted + refused + other
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(accepted + refused + other >= 10_000);
    assert!(
        refused > 5_000,
        "most generated requests are bad: {refused}"
    );
}
