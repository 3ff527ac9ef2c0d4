//! Provider callbacks, each verified, each turned into events.
//!
//! `POST /v1/callbacks/twilio` takes both of Twilio's webhooks:
//! - message status callbacks (`MessageStatus`, for the `StatusCallback` dispatch set, whose
//!   query names the job and account): `delivered`/`read` become a `delivered` contact
//!   outcome, `undelivered`/`failed` a `failed` one, `canceled` a `not_sent` one; the
//!   intermediate statuses (`queued`, `sending`, `sent`, …) add nothing. Every callback is its
//!   own event (`{MessageSid}:{status}`), so a later callback never overwrites an earlier
//!   terminal error: both stay in the history.
//! - inbound messages (`Body`, `From`): STOP, UNSUBSCRIBE, CANCEL, END, QUIT, STOPALL, BAJA, ALTO
//!   and the Portuguese SAIR and PARAR (the word Tacto's Portuguese SMS ask for) (any case,
//!   surrounding spaces and punctuation ignored) become an SMS opt-out of every
//!   account with that phone number.
//!
//! The signature (`X-Twilio-Signature`) is checked over the public URL Twilio called
//! (`public_url` + path and query) and the form parameters; a request without a valid one is
//! refused with 401 and changes nothing.

use crate::problem::Problem;
use crate::{Shared, submit, twilio};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use tacto_model::{AccountId, Channel, Event, EventBody, EventId, JobId, OutcomeStatus};

/// Inbound words that opt the sender out of SMS.
pub const STOP_WORDS: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "BAJA",
    "ALTO",
];

/// Whether an inbound SMS body is an opt-out.
pub fn is_stop(body: &str) -> bool {
    let word = body
        .trim()
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_uppercase();
    STOP_WORDS.contains(&word.as_str())
}

/// The outcome a Twilio message status means, if any.
pub fn twilio_status(status: &str) -> Option<OutcomeStatus> {
    match status {
        "delivered" | "read" => Some(OutcomeStatus::Delivered),
        "undelivered" | "failed" => Some(OutcomeStatus::Failed),
        "canceled" => Some(OutcomeStatus::NotSent),
        _ => None,
    }
}

fn twiml() -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response()
}

pub(crate) async fn post_twilio(
    State(s): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (Some(token), Some(public)) = (
        s.config.twilio_auth_token.clone(),
        s.config.public_url.clone(),
    ) else {
        return Err(Problem::not_found("Twilio callbacks are not configured"));
    };
    let bytes = body.map_err(|e| Problem::malformed(e.body_text()))?;
    let params: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    let url = format!(
        "{}{}",
        public.trim_end_matches('/'),
        uri.path_and_query().map_or("", |p| p.as_str())
    );
    let given = headers
        .get("X-Twilio-Signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !twilio::verify(&token, &url, &params, given) {
        return Err(Problem::unauthorized("X-Twilio-Signature does not match"));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let from_query = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let sid = get("MessageSid").or(get("SmsSid")).unwrap_or_default();
    if let Some(status) = get("MessageStatus") {
        let Some(outcome) = twilio_status(status) else {
            return Ok(twiml());
        };
        let (Some(job), Some(account)) = (from_query("job"), from_query("account")) else {
            return Err(Problem::invalid(
                "query",
                "a status callback names its job and account (set by dispatch)",
            ));
        };
        let e = Event {
            id: EventId(format!("twilio:{sid}:{status}").into()),
            occurred_at: (s.now)(),
            account_id: AccountId(account.into()),
            source: "callback:twilio".into(),
            body: EventBody::ContactOutcome {
                job_id: Some(JobId(job.into())),
                channel: Channel::Sms,
                status: outcome,
                conversation: false,
                inbound: false,
            },
        };
        let unique = format!("event:{}", e.id);
        submit(&s, e, unique).await?;
        return Ok(twiml());
    }
    let (Some(text), Some(from)) = (get("Body"), get("From")) else {
        return Err(Problem::invalid(
            "body",
            "neither a status callback nor an inbound message",
        ));
    };
    if is_stop(text) {
        let accounts = s.view.accounts_with_address(Channel::Sms, from);
        tracing::info!(accounts = accounts.len(), "inbound SMS opt-out");
        for account in accounts {
            let e = Event {
                id: EventId(format!("twilio:{sid}:opt-out:{account}").into()),
                occurred_at: (s.now)(),
                account_id: AccountId(account.into()),
                source: "callback:twilio".into(),
                body: EventBody::OptedOut {
                    channel: Some(Channel::Sms),
                    via: "sms_stop".into(),
                },
            };
            let unique = format!("event:{}", e.id);
            submit(&s, e, unique).await?;
        }
    } else {
        tracing::info!("inbound SMS that is not an opt-out: nothing to record");
    }
    Ok(twiml())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_in_any_case_and_punctuation() {
        for w in [
            "STOP",
            " stop ",
            "Baja.",
            "alto!",
            "UNSUBSCRIBE",
            "quit",
            "End",
            "cancel",
        ] {
            assert!(is_stop(w), "{w}");
        }
        for w in ["stop calling at night", "hola", "", "STOPPED", "ok"] {
            assert!(!is_stop(w), "{w}");
        }
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(twilio_status("delivered"), Some(OutcomeStatus::Delivered));
        assert_eq!(twilio_status("undelivered"), Some(OutcomeStatus::Failed));
        assert_eq!(twilio_status("failed"), Some(OutcomeStatus::Failed));
        assert_eq!(twilio_status("sent"), None);
        assert_eq!(twilio_status("queued"), None);
    }
}

/// The query of an unsubscribe link.
#[derive(serde::Deserialize)]
pub(crate) struct UnsubscribeQuery {
    account: String,
    channel: String,
    sig: String,
}

fn unsubscribe_target(s: &Shared, q: &UnsubscribeQuery) -> Result<Channel, Problem> {
    let Some(secret) = s.config.link_secret.as_deref() else {
        return Err(Problem::not_found("unsubscribe links are not configured"));
    };
    let channel = Channel::ALL
        .into_iter()
        .find(|c| c.as_str() == q.channel)
        .ok_or_else(|| Problem::invalid("channel", "sms, email or voice"))?;
    if !crate::links::verify_unsubscribe(secret.as_bytes(), &q.account, channel, &q.sig) {
        return Err(Problem::unauthorized("the link's signature does not match"));
    }
    Ok(channel)
}

/// `GET /v1/unsubscribe`: a confirmation page (a GET never unsubscribes: mail scanners follow
/// links), whose button makes the one-click POST.
pub(crate) async fn get_unsubscribe(
    State(s): State<Shared>,
    crate::extract::ProblemQuery(q): crate::extract::ProblemQuery<UnsubscribeQuery>,
    uri: Uri,
) -> Result<Response, Problem> {
    unsubscribe_target(&s, &q)?;
    let action = uri
        .path_and_query()
        .map_or("", |p| p.as_str())
        .replace('"', "&quot;");
    let page = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Unsubscribe</title><main><h1>Stop these messages?</h1>\
         <form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form></main></html>"
    );
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

/// `POST /v1/unsubscribe` (RFC 8058 one-click, from the mail client or the page): an opt-out
/// of that channel, once.
pub(crate) async fn post_unsubscribe(
    State(s): State<Shared>,
    crate::extract::ProblemQuery(q): crate::extract::ProblemQuery<UnsubscribeQuery>,
) -> Result<Response, Problem> {
    let channel = unsubscribe_target(&s, &q)?;
    let e = Event {
        id: EventId(format!("unsubscribe:{}:{}", q.account, channel.as_str()).into()),
        occurred_at: (s.now)(),
        account_id: AccountId(q.account.clone().into()),
        source: "link:unsubscribe".into(),
        body: EventBody::OptedOut {
            channel: Some(channel),
            via: format!("{}_unsubscribe", channel.as_str()),
        },
    };
    let unique = format!("event:{}", e.id);
    submit(&s, e, unique).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Unsubscribed</title><main><h1>You are unsubscribed.</h1></main></html>",
    )
        .into_response())
}

/// One event of SendGrid's event webhook (Tacto's `custom_args` come back as fields).
#[derive(serde::Deserialize)]
struct SendgridEvent {
    event: String,
    #[serde(default)]
    sg_event_id: String,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
}

/// What a SendGrid event means: an outcome of the job, or an email opt-out.
fn sendgrid_meaning(event: &str) -> Option<Result<OutcomeStatus, &'static str>> {
    match event {
        "delivered" => Some(Ok(OutcomeStatus::Delivered)),
        "bounce" | "dropped" => Some(Ok(OutcomeStatus::Failed)),
        "spamreport" => Some(Err("email_spam_report")),
        "unsubscribe" | "group_unsubscribe" => Some(Err("email_unsubscribe")),
        _ => None,
    }
}

/// `POST /v1/callbacks/sendgrid`: SendGrid's signed event webhook. `delivered` becomes a
/// `delivered` outcome, `bounce` and `dropped` a `failed` one, `spamreport` and `unsubscribe`
/// an email opt-out; other events (processed, deferred, open, click) add nothing. The
/// signature (ECDSA) and the timestamp's age are checked first.
pub(crate) async fn post_sendgrid(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let Some(key) = s.sendgrid_key.clone() else {
        return Err(Problem::not_found("SendGrid callbacks are not configured"));
    };
    let bytes = body.map_err(|e| Problem::malformed(e.body_text()))?;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let timestamp = h("X-Twilio-Email-Event-Webhook-Timestamp");
    let fresh = timestamp.parse::<i64>().is_ok_and(|t| {
        ((s.now)().as_micros() / 1_000_000 - t).abs() <= s.config.webhook_tolerance_secs
    });
    if !fresh
        || !key.verify(
            timestamp,
            &bytes,
            h("X-Twilio-Email-Event-Webhook-Signature"),
        )
    {
        return Err(Problem::unauthorized(
            "SendGrid signature does not match or its timestamp is stale",
        ));
    }
    let events: Vec<SendgridEvent> = crate::parse(Ok(bytes))?;
    for e in events {
        let (Some(meaning), Some(account)) = (sendgrid_meaning(&e.event), e.account_id) else {
            continue;
        };
        let body = match meaning {
            Ok(status) => {
                let Some(job) = e.job_id else { continue };
                EventBody::ContactOutcome {
                    job_id: Some(JobId(job.into())),
                    channel: Channel::Email,
                    status,
                    conversation: false,
                    inbound: false,
                }
            }
            Err(via) => EventBody::OptedOut {
                channel: Some(Channel::Email),
                via: via.into(),
            },
        };
        let event = Event {
            id: EventId(format!("sendgrid:{}:{}", e.sg_event_id, e.event).into()),
            occurred_at: (s.now)(),
            account_id: AccountId(account.into()),
            source: "callback:sendgrid".into(),
            body,
        };
        let unique = format!("event:{}", event.id);
        submit(&s, event, unique).await?;
    }
    Ok(axum::http::StatusCode::OK.into_response())
}
