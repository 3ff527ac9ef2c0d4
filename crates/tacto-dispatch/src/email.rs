//! Email over SMTP (`lettre`). Every message carries `List-Unsubscribe` with a signed one-click
//! link (RFC 8058, with `List-Unsubscribe-Post`) when a public URL and a link secret are
//! configured, and a `mailto:` address when one is; the body ends with opt-out instructions
//! (see `templates`). The `Message-ID` is derived from the job id, so a receiving system can
//! recognise a duplicate.
//!
//! SMTP replies: 4xx (and connection failures) are retried with backoff; 5xx is a refusal.

use crate::sink::{Message, SendError};
use crate::templates::Templates;
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
use tacto_model::Channel;

/// How to secure the SMTP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text (a local relay or a test server only).
    None,
    /// STARTTLS, required.
    StartTls,
    /// Implicit TLS (port 465).
    Tls,
}

/// Settings of the SMTP adapter.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Connection security.
    pub security: SmtpSecurity,
    /// Login, when the server wants one.
    pub credentials: Option<(String, String)>,
    /// The sender, e.g. `Collections <collections@example.com>`.
    pub from: String,
    /// What goes in `List-Unsubscribe`.
    pub unsubscribe: UnsubscribeLinks,
    /// Timeout of one delivery.
    pub timeout: Duration,
}

/// A job id as the left part of a `Message-ID` (RFC 5322 `dot-atom-text`: other characters
/// become dots).
fn message_id_part(job: &str) -> String {
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect()
}

/// What an email's `List-Unsubscribe` offers (shared by the SMTP and SendGrid adapters).
#[derive(Clone, Debug, Default)]
pub struct UnsubscribeLinks {
    /// Public base URL of the API, for the signed one-click link.
    pub public_url: Option<String>,
    /// Secret the one-click links are signed with.
    pub link_secret: Option<String>,
    /// `mailto:` address for unsubscribe requests.
    pub mailto: Option<String>,
}

impl UnsubscribeLinks {
    /// The `List-Unsubscribe` value of an account's email, and whether it has the one-click
    /// link (then `List-Unsubscribe-Post` goes too).
    pub fn header(&self, account: &str) -> (Option<String>, bool) {
        let url = match (&self.public_url, &self.link_secret) {
            (Some(public), Some(secret)) => Some(tacto_ingest::links::unsubscribe_url(
                public,
                secret.as_bytes(),
                account,
                Channel::Email,
            )),
            _ => None,
        };
        let one_click = url.is_some();
        let parts: Vec<String> = url
            .into_iter()
            .chain(
                self.mailto
                    .iter()
                    .map(|a| format!("mailto:{a}?subject=unsubscribe")),
            )
            .map(|u| format!("<{u}>"))
            .collect();
        ((!parts.is_empty()).then(|| parts.join(", ")), one_click)
    }
}

/// The SMTP email adapter.
pub struct SmtpEmail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    config: SmtpConfig,
    templates: Arc<Templates>,
}

fn tls(host: &str) -> Result<TlsParameters, SendError> {
    TlsParameters::new(host.to_owned())
        .map_err(|e| SendError::Permanent(format!("SMTP TLS settings: {e}")))
}

impl SmtpEmail {
    /// An adapter with these settings, rendering with `templates`.
    pub fn new(config: SmtpConfig, templates: Arc<Templates>) -> Result<Self, SendError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| SendError::Permanent(format!("invalid sender {:?}: {e}", config.from)))?;
        let security = match config.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls(&config.host)?),
            SmtpSecurity::Tls => Tls::Wrapper(tls(&config.host)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(security)
            .timeout(Some(config.timeout));
        if let Some((user, pass)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            config,
            templates,
        })
    }

    /// Sends one email.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let rendered = self.templates.render(m)?;
        let to: Mailbox = m
            .address
            .parse()
            .map_err(|_| SendError::Permanent("invalid email address".into()))?;
        let domain = self.from.email.domain().to_owned();
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject.unwrap_or_default())
            .message_id(Some(format!("<{}@{domain}>", message_id_part(&m.job_id))))
            .header(ContentType::TEXT_PLAIN);
        let (list, one_click) = self.config.unsubscribe.header(&m.account_id);
        if let Some(list) = list {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                list,
            ));
            if one_click {
                builder = builder.raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
            }
        }
        let email = builder
            .body(rendered.body)
            .map_err(|e| SendError::Permanent(format!("cannot build the email: {e}")))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP: {e}"))),
            Err(e) => Err(SendError::Retryable(format!("SMTP: {e}"))),
        }
    }
}
