//! Channel adapters: what dispatch hands a job to. Today the file sink (one JSON line per
//! message, for local runs and tests); provider adapters (SMS, email, dialer) plug in here.

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
}

impl Message {
    /// The message for a job.
    pub fn new(account: &AccountId, job: &ContactJob, address: String, now: Timestamp) -> Self {
        Self {
            job_id: job.job_id.0.clone(),
            account_id: account.0.clone(),
            channel: job.channel,
            address,
            template: job.template.clone(),
            language: job.language.clone(),
            balance_minor: job.balance_minor,
            currency: job.currency.clone(),
            sent_at: now,
        }
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (throttled, unavailable, timed out).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Not worth retrying (invalid number, refused).
    #[error("permanent: {0}")]
    Permanent(String),
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

/// The adapter a channel uses.
pub enum Adapter {
    /// A JSON-lines file.
    File(FileSink),
}

impl Adapter {
    /// Hands a message to the provider.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        match self {
            Adapter::File(f) => tokio::task::block_in_place(|| f.write(m)),
        }
    }
}
