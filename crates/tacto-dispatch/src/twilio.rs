//! SMS through the Twilio Messages API: `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded, HTTP Basic auth (account SID and auth token). The base URL is configurable, so
//! any Twilio-compatible provider works.
//!
//! Each message carries a `StatusCallback` to ingest's `/v1/callbacks/twilio` (with the job and
//! account in the query, covered by Twilio's signature), and a `ValidityPeriod` that ends at the
//! job's `not_after`: a message the provider could not deliver in its allowed window is dropped
//! by the provider rather than delivered late.
//!
//! Errors: 21610 (the recipient replied STOP to this sender) is an opt-out; 21211 and 21614
//! (invalid or not SMS-capable number) are permanent; 21611 (queue full), 20429 and HTTP 429,
//! and 5xx are retried with backoff.

use crate::sink::{Message, SendError};
use crate::templates::Templates;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Who the message comes from.
#[derive(Clone, Debug)]
pub enum Sender {
    /// A phone number or short code (`From`).
    Number(String),
    /// A Messaging Service (`MessagingServiceSid`): Twilio picks the number.
    MessagingService(String),
}

/// Settings of the Twilio adapter.
#[derive(Clone, Debug)]
pub struct TwilioConfig {
    /// API base, `https://api.twilio.com` for Twilio.
    pub base_url: String,
    /// Account SID (Basic auth user).
    pub account_sid: String,
    /// Auth token (Basic auth password; also signs the callbacks).
    pub auth_token: String,
    /// The sender.
    pub sender: Sender,
    /// Public base URL of ingest, for status callbacks (none: no callbacks).
    pub callback_base: Option<String>,
    /// Request timeout.
    pub timeout: Duration,
}

/// What Twilio answered for an accepted message.
#[derive(Clone, Debug, Deserialize)]
pub struct Accepted {
    /// The message SID.
    pub sid: String,
    /// Its first status (`queued`, `accepted`, …).
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: Option<u32>,
    #[serde(default)]
    message: String,
}

/// The Twilio SMS adapter.
pub struct TwilioSms {
    client: reqwest::Client,
    config: TwilioConfig,
    templates: Arc<Templates>,
}

impl TwilioSms {
    /// An adapter with these settings, rendering with `templates`.
    pub fn new(config: TwilioConfig, templates: Arc<Templates>) -> Result<Self, SendError> {
        let client = crate::sink::http_client(config.timeout)?;
        Ok(Self {
            client,
            config,
            templates,
        })
    }

    fn callback_url(&self, m: &Message) -> Option<String> {
        let base = self.config.callback_base.as_ref()?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("job", &m.job_id)
            .append_pair("account", &m.account_id)
            .finish();
        Some(format!(
            "{}/v1/callbacks/twilio?{query}",
            base.trim_end_matches('/')
        ))
    }

    /// Sends one SMS.
    pub async fn send(&self, m: &Message) -> Result<Accepted, SendError> {
        let rendered = self.templates.render(m)?;
        let validity = m
            .not_after
            .since(m.sent_at)
            .num_seconds()
            .clamp(1, 36_000)
            .to_string();
        let mut form: Vec<(&str, String)> = vec![
            ("To", m.address.clone()),
            ("Body", rendered.body),
            ("ValidityPeriod", validity),
        ];
        match &self.config.sender {
            Sender::Number(n) => form.push(("From", n.clone())),
            Sender::MessagingService(s) => form.push(("MessagingServiceSid", s.clone())),
        }
        if let Some(cb) = self.callback_url(m) {
            form.push(("StatusCallback", cb));
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid
        );
        let resp = self
            .client
            .post(&url)
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|e| SendError::without_answer("twilio", &e, false))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            // Twilio took the message: an answer we cannot read must not send it again.
            return serde_json::from_str(&text)
                .map_err(|e| SendError::Ambiguous(format!("unreadable twilio answer: {e}")));
        }
        let err: ApiError = serde_json::from_str(&text).unwrap_or(ApiError {
            code: None,
            message: text.chars().take(200).collect(),
        });
        let why = format!(
            "twilio {status} code {}: {}",
            err.code.map_or_else(|| "-".into(), |c| c.to_string()),
            err.message
        );
        Err(match err.code {
            Some(21610) => SendError::OptedOut(why),
            Some(21611 | 20429 | 30001) => SendError::Retryable(why),
            _ if status.as_u16() == 429 || status.is_server_error() => SendError::Retryable(why),
            _ => SendError::Permanent(why),
        })
    }
}
