//! Email over SMTP (`lettre`). Every message carries `List-Unsubscribe` with a signed one-click
//! link (RFC 8058, with `List-Unsubscribe-Post`) when a public URL and a link secret are
//! configured, and a `mailto:` address when one is; the body ends with opt-out instructions
//! (see `templates`). The `Message-ID` is derived from the job id, so a receiving system can
//! recognise a duplicate.
//!
//! Each email goes over a connection of its own, and what a failure means depends on when it
//! came (a server queues a message only once it has read the message's final dot): up to the
//! `DATA` command's go-ahead nothing was handed over, so a connection failure or a 4xx reply
//! is retried and a 5xx reply refuses the job; after the message, a 4xx reply is retried and a
//! 5xx refuses it, but no answer (a timeout, a dropped connection) is **ambiguous**: the
//! server may have queued the email, and SMTP servers do not drop a repeat (the `Message-ID`
//! lets a mail client group one, no more), so it is never sent again.

use crate::sink::{Message, SendError};
use crate::templates::Templates;
use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
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
    /// How long each of a delivery's two halves may take: connecting up to the server's
    /// go-ahead for the message, and the message up to its answer.
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
    /// TLS settings, for implicit TLS or STARTTLS.
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello_name: ClientId,
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
        let tls = match config.security {
            SmtpSecurity::None => None,
            SmtpSecurity::StartTls | SmtpSecurity::Tls => Some(tls(&config.host)?),
        };
        Ok(Self {
            tls,
            credentials: config
                .credentials
                .as_ref()
                .map(|(user, pass)| Credentials::new(user.clone(), pass.clone())),
            hello_name: ClientId::default(),
            from,
            config,
            templates,
        })
    }

    /// A connection to the server, secured and logged in as configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let implicit_tls = match self.config.security {
            SmtpSecurity::Tls => self.tls.clone(),
            SmtpSecurity::None | SmtpSecurity::StartTls => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.config.host.as_str(), self.config.port),
            Some(self.config.timeout),
            &self.hello_name,
            implicit_tls,
            None,
        )
        .await?;
        if let (SmtpSecurity::StartTls, Some(tls)) = (self.config.security, &self.tls) {
            conn.starttls(tls.clone(), &self.hello_name).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
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
        let envelope = email.envelope().clone();
        let bytes = email.formatted();
        // lettre times the TCP connection only: every exchange after it is timed here.
        let limit = self.config.timeout;
        // Nothing is handed over before the server's go-ahead for the message.
        let mut conn = tokio::time::timeout(limit, async {
            let mut conn = self.connect().await.map_err(not_handed_over)?;
            ask_to_send(&mut conn, &envelope, &bytes).await?;
            Ok::<_, SendError>(conn)
        })
        .await
        .map_err(|_| SendError::Retryable(format!("SMTP: no go-ahead within {limit:?}")))??;
        match tokio::time::timeout(limit, conn.message(&bytes)).await {
            Ok(Ok(_)) => {
                // Queued by the server; how the goodbye goes changes nothing.
                let _ = tokio::time::timeout(limit, conn.quit()).await;
                Ok(())
            }
            Ok(Err(e)) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP: {e}"))),
            Ok(Err(e)) if e.is_transient() => Err(SendError::Retryable(format!("SMTP: {e}"))),
            Ok(Err(e)) => Err(SendError::Ambiguous(format!(
                "SMTP: no answer after the message: {e}"
            ))),
            Err(_) => Err(SendError::Ambiguous(format!(
                "SMTP: no answer within {limit:?} after the message"
            ))),
        }
    }
}

/// What a failure before the message was handed over means: refused on a 5xx reply or when the
/// server cannot take this email (a client error), otherwise worth another try.
fn not_handed_over(e: SmtpError) -> SendError {
    if e.is_permanent() || e.is_client() {
        SendError::Permanent(format!("SMTP: {e}"))
    } else {
        SendError::Retryable(format!("SMTP: {e}"))
    }
}

/// `MAIL FROM`, `RCPT TO` and `DATA`, up to the server's go-ahead for the message itself; the
/// message's options as lettre's own transport sets them (SMTPUTF8 for non-ASCII addresses,
/// 8BITMIME for a non-ASCII body), refused when the server lacks the extension.
async fn ask_to_send(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    bytes: &[u8],
) -> Result<(), SendError> {
    let mut options = Vec::new();
    let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
    if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(SendError::Permanent(
                "SMTP: the address is not ASCII and the server lacks SMTPUTF8".into(),
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(SendError::Permanent(
                "SMTP: the email is not ASCII and the server lacks 8BITMIME".into(),
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await
        .map_err(not_handed_over)?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), Vec::new()))
            .await
            .map_err(not_handed_over)?;
    }
    conn.command(Data).await.map_err(not_handed_over)?;
    Ok(())
}
