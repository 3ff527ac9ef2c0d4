//! Channel adapters: what dispatch hands a job to. The file sink (one JSON line per message,
//! for local runs) and a generic JSON webhook (any HTTP endpoint: a provider bridge, a dialer
//! feed). Every adapter, these and the providers' (SMS, email, dialer), is a [`ChannelAdapter`].

use crate::vicidial::RecallResult;
use futures::future::BoxFuture;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tacto_model::{AccountId, ContactJob, Timestamp};

/// A rendered contact, as an adapter receives it.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    /// The job.
    pub job_id: String,
    /// The account.
    pub account_id: String,
    /// Channel.
    pub channel: tacto_model::Channel,
    /// Phone or email (personal data: never logged).
    pub address: String,
    /// Template name.
    pub template: String,
    /// Template language.
    pub language: String,
    /// Balance at decision time, minor units.
    pub balance_minor: i64,
    /// Currency.
    pub currency: String,
    /// When dispatch handed it over.
    pub sent_at: Timestamp,
    /// The latest instant it may reach the customer (a provider must drop it after this).
    pub not_after: Timestamp,
    /// The earliest missed due date of the debts still owed, for the template.
    pub due_date: Option<tacto_model::Date>,
}

impl Message {
    /// The message for a job.
    pub fn new(account: &AccountId, job: &ContactJob, address: String, now: Timestamp) -> Self {
        Self {
            job_id: job.job_id.0.to_string(),
            account_id: account.0.to_string(),
            channel: job.channel,
            address,
            template: job.template.clone(),
            language: job.language.clone(),
            balance_minor: job.balance_minor,
            currency: job.currency.clone(),
            sent_at: now,
            not_after: job.not_after,
            due_date: job.due_date,
        }
    }
}

/// An HTTP client for a provider, with a per-request timeout.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, SendError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| SendError::Permanent(format!("cannot build the HTTP client: {e}")))
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: the provider did not take the message (throttled, unavailable,
    /// unreachable before the request went out).
    #[error("retryable: {0}")]
    Retryable(String),
    /// The request went out and no answer came back (timed out, connection lost): the
    /// provider may have taken it. Never retried, because a provider without idempotency keys
    /// would send it twice; dispatch records the job as ambiguous, counted as sent.
    #[error("ambiguous: {0}")]
    Ambiguous(String),
    /// The request went out and no answer came back, from a receiver that recognises a repeat
    /// by its `Idempotency-Key` (or its own duplicate check): retried like [`Retryable`], and
    /// the job is ambiguous if no later try gets an answer.
    ///
    /// [`Retryable`]: SendError::Retryable
    #[error("no answer: {0}")]
    Unanswered(String),
    /// Not worth retrying (invalid number, refused).
    #[error("permanent: {0}")]
    Permanent(String),
    /// The provider refuses because the customer opted out with it (e.g. replied STOP to the
    /// sender): dispatch records an opt-out on the channel.
    #[error("the recipient opted out: {0}")]
    OptedOut(String),
}

impl SendError {
    /// Classifies an HTTP call that got no answer: a connection never made is retryable
    /// (nothing reached the provider), a request that could not be built is permanent, and
    /// anything after the request went out (a timeout, a connection reset) may have been
    /// taken: [`Unanswered`] if the receiver recognises a repeat (`idempotent`), else
    /// [`Ambiguous`].
    ///
    /// [`Unanswered`]: SendError::Unanswered
    /// [`Ambiguous`]: SendError::Ambiguous
    pub fn without_answer(provider: &str, e: &reqwest::Error, idempotent: bool) -> Self {
        if e.is_builder() {
            SendError::Permanent(format!("{provider} request: {e}"))
        } else if e.is_connect() {
            SendError::Retryable(format!("{provider} unreachable: {e}"))
        } else if idempotent {
            SendError::Unanswered(format!("{provider} did not answer: {e}"))
        } else {
            SendError::Ambiguous(format!("{provider} did not answer: {e}"))
        }
    }
}

/// Appends every message as one JSON line to a file, flushed to disk before it returns.
pub struct FileSink {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl FileSink {
    /// Opens (or creates) the file for appending.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, m: &Message) -> Result<(), SendError> {
        let mut line = serde_json::to_vec(m).map_err(|e| SendError::Permanent(e.to_string()))?;
        line.push(b'\n');
        let mut f = self
            .file
            .lock()
            .map_err(|_| SendError::Retryable("sink lock poisoned".into()))?;
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .map_err(|e| SendError::Retryable(e.to_string()))
    }
}

/// POSTs every message as JSON to an HTTP endpoint, with `Idempotency-Key: <job id>` so the
/// receiver can drop a duplicate. 2xx is sent; 408, 429 and 5xx (and network errors) are worth
/// retrying; any other status is a refusal.
pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl WebhookSink {
    /// A webhook to `url`, authenticated with a bearer `token` when given.
    pub fn new(
        url: impl Into<String>,
        token: Option<String>,
        timeout: std::time::Duration,
    ) -> Result<Self, SendError> {
        let client = http_client(timeout)?;
        Ok(Self {
            client,
            url: url.into(),
            token,
        })
    }

    async fn post(&self, m: &Message) -> Result<(), SendError> {
        let mut req = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &m.job_id)
            .json(m);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SendError::without_answer("webhook", &e, true))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Retryable(format!("webhook answered {status}")))
        } else {
            Err(SendError::Permanent(format!("webhook answered {status}")))
        }
    }
}

/// A channel adapter: hands a message to a provider, and cancels what the provider still holds
/// of a job it accepted. Dispatch picks one per channel (see [`Adapters`]).
pub trait ChannelAdapter: Send + Sync {
    /// Hands a message to the provider.
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>>;

    /// Cancels what the provider still holds of an accepted job: `None` when it holds nothing
    /// back (a written line, a webhook call, an SMS or email handed over are gone).
    fn recall<'a>(
        &'a self,
        _account: &'a str,
        _job: &'a str,
    ) -> BoxFuture<'a, Option<RecallResult>> {
        Box::pin(async { None })
    }
}

impl ChannelAdapter for FileSink {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move { tokio::task::block_in_place(|| self.write(m)) })
    }
}

impl ChannelAdapter for WebhookSink {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(self.post(m))
    }
}

impl ChannelAdapter for crate::twilio::TwilioSms {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move { crate::twilio::TwilioSms::send(self, m).await.map(|_| ()) })
    }
}

impl ChannelAdapter for crate::email::SmtpEmail {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(crate::email::SmtpEmail::send(self, m))
    }
}

impl ChannelAdapter for crate::sendgrid::Sendgrid {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(crate::sendgrid::Sendgrid::send(self, m))
    }
}

impl ChannelAdapter for crate::vicidial::Vicidial {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(crate::vicidial::Vicidial::send(self, m))
    }

    fn recall<'a>(
        &'a self,
        account: &'a str,
        _job: &'a str,
    ) -> BoxFuture<'a, Option<RecallResult>> {
        Box::pin(async move { Some(crate::vicidial::Vicidial::recall(self, account).await) })
    }
}

impl ChannelAdapter for crate::dialer_feed::DialerFeed {
    fn send<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(crate::dialer_feed::DialerFeed::send(self, m))
    }

    fn recall<'a>(&'a self, account: &'a str, job: &'a str) -> BoxFuture<'a, Option<RecallResult>> {
        Box::pin(async move { Some(crate::dialer_feed::DialerFeed::recall(self, account, job)) })
    }
}

/// The adapter of each channel, with a default for the others.
pub struct Adapters {
    by_channel: std::collections::BTreeMap<tacto_model::Channel, Box<dyn ChannelAdapter>>,
    default: Box<dyn ChannelAdapter>,
}

impl Adapters {
    /// Every channel to `default`, except those given.
    pub fn new(default: impl ChannelAdapter + 'static) -> Self {
        Self {
            by_channel: Default::default(),
            default: Box::new(default),
        }
    }

    /// Routes one channel to its own adapter.
    pub fn with(
        mut self,
        channel: tacto_model::Channel,
        adapter: impl ChannelAdapter + 'static,
    ) -> Self {
        self.by_channel.insert(channel, Box::new(adapter));
        self
    }

    /// The adapter of a channel.
    pub fn for_channel(&self, c: tacto_model::Channel) -> &dyn ChannelAdapter {
        self.by_channel.get(&c).unwrap_or(&self.default).as_ref()
    }
}
