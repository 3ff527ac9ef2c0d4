//! Email through the SendGrid v3 API: `POST {base}/v3/mail/send` with a bearer API key. The
//! job and account go in `custom_args`, so SendGrid's event webhook brings them back to
//! `/v1/callbacks/sendgrid`; `List-Unsubscribe` as for SMTP. 202 is accepted; 429 and 5xx are
//! retried with backoff; other errors refuse the job.

use crate::email::UnsubscribeLinks;
use crate::sink::{Message, SendError};
use crate::templates::Templates;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the SendGrid adapter.
#[derive(Clone, Debug)]
pub struct SendgridConfig {
    /// API base, `https://api.sendgrid.com`.
    pub base_url: String,
    /// API key (bearer).
    pub api_key: String,
    /// Sender address.
    pub from_email: String,
    /// Sender name.
    pub from_name: Option<String>,
    /// What goes in `List-Unsubscribe`.
    pub unsubscribe: UnsubscribeLinks,
    /// Request timeout.
    pub timeout: Duration,
}

/// The SendGrid adapter.
pub struct Sendgrid {
    client: reqwest::Client,
    config: SendgridConfig,
    templates: Arc<Templates>,
}

impl Sendgrid {
    /// An adapter with these settings, rendering with `templates`.
    pub fn new(config: SendgridConfig, templates: Arc<Templates>) -> Result<Self, SendError> {
        let client = crate::sink::http_client(config.timeout)?;
        Ok(Self {
            client,
            config,
            templates,
        })
    }

    /// Sends one email.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let rendered = self.templates.render(m)?;
        let mut headers = serde_json::Map::new();
        let (list, one_click) = self.config.unsubscribe.header(&m.account_id);
        if let Some(list) = list {
            headers.insert("List-Unsubscribe".into(), list.into());
            if one_click {
                headers.insert(
                    "List-Unsubscribe-Post".into(),
                    "List-Unsubscribe=One-Click".into(),
                );
            }
        }
        let mut from = serde_json::json!({ "email": self.config.from_email });
        if let Some(name) = &self.config.from_name {
            from["name"] = name.clone().into();
        }
        let body = serde_json::json!({
            "personalizations": [{
                "to": [{ "email": m.address }],
                "custom_args": { "job_id": m.job_id, "account_id": m.account_id },
            }],
            "from": from,
            "subject": rendered.subject.unwrap_or_default(),
            "content": [{ "type": "text/plain", "value": rendered.body }],
            "headers": headers,
        });
        let resp = self
            .client
            .post(format!(
                "{}/v3/mail/send",
                self.config.base_url.trim_end_matches('/')
            ))
            .bearer_auth(&self.config.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::without_answer("sendgrid", &e, false))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let why = format!("sendgrid {status}: {text}");
        if status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Retryable(why))
        } else {
            Err(SendError::Permanent(why))
        }
    }
}
