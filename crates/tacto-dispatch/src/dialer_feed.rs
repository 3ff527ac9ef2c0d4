//! The dialer feed: a topic of `add` and `recall` messages (Avro, `schemas/dialer.avsc`, single
//! object encoding, keyed by account id) that any dialer can consume. A voice job becomes an
//! `add` with the callable window as instants (`not_before`, `not_after`); a recall of a job
//! already published is a `recall` message. The recall is confirmed once the message is
//! durable on the log: the feed's contract obliges the dialer to honour it at once.

use crate::sink::{Message, SendError};
use crate::templates::Templates;
use apache_avro::Schema;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use std::sync::{Arc, OnceLock};
use tacto_log::{EventLog, Record, events};

/// The schema of the feed, as JSON text.
pub const DIALER_SCHEMA_JSON: &str = include_str!("../../../schemas/dialer.avsc");

/// One message of the feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DialerMessage {
    /// `add`, `update` or `recall`.
    pub action: Action,
    /// The lead's vendor key.
    pub account_id: String,
    /// The job.
    pub job_id: String,
    /// Number to call.
    pub phone: Option<String>,
    /// Earliest allowed instant (µs since the epoch).
    pub not_before: Option<i64>,
    /// Latest allowed instant (µs since the epoch).
    pub not_after: Option<i64>,
    /// Higher first.
    pub priority: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Language.
    pub language: Option<String>,
    /// What to say.
    pub script: Option<String>,
    /// Balance, minor units.
    pub balance_minor: Option<i64>,
    /// Currency.
    pub currency: Option<String>,
}

/// What a dialer message asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Add a lead.
    Add,
    /// Update a lead.
    Update,
    /// Remove the lead for this job.
    Recall,
}

struct Codec {
    writer: GenericDatumWriter<'static>,
    header: Vec<u8>,
}

fn codec() -> Result<&'static Codec, SendError> {
    static SCHEMA: OnceLock<Option<Schema>> = OnceLock::new();
    static CODEC: OnceLock<Option<Codec>> = OnceLock::new();
    let schema = SCHEMA
        .get_or_init(|| Schema::parse_str(DIALER_SCHEMA_JSON).ok())
        .as_ref()
        .ok_or_else(|| SendError::Permanent("schemas/dialer.avsc does not parse".into()))?;
    CODEC
        .get_or_init(|| {
            let writer = GenericDatumWriter::builder(schema)
                .human_readable(false)
                .build()
                .ok()?;
            // The specification's canonical form (the test checks the fingerprint with fastavro).
            let header = tacto_log::framing::single_object_header_of(schema);
            Some(Codec { writer, header })
        })
        .as_ref()
        .ok_or_else(|| SendError::Permanent("schemas/dialer.avsc does not resolve".into()))
}

/// Encodes a message: single-object encoding (`C3 01` + fingerprint + datum).
pub fn encode(m: &DialerMessage) -> Result<Vec<u8>, SendError> {
    let c = codec()?;
    let mut out = c.header.clone();
    c.writer
        .write_ser(&mut out, m)
        .map_err(|e| SendError::Permanent(format!("dialer message: {e}")))?;
    Ok(out)
}

/// The dialer-feed adapter.
pub struct DialerFeed {
    log: Arc<dyn EventLog>,
    templates: Arc<Templates>,
}

impl DialerFeed {
    /// A feed on `log`'s dialer topic.
    pub fn new(log: Arc<dyn EventLog>, templates: Arc<Templates>) -> Self {
        Self { log, templates }
    }

    fn publish(&self, m: &DialerMessage) -> Result<(), SendError> {
        let record = Record {
            key: m.account_id.clone(),
            value: encode(m)?,
            headers: vec![
                (
                    "ce_type".into(),
                    format!("dev.tacto.dialer.{:?}", m.action)
                        .to_lowercase()
                        .into(),
                ),
                (
                    "ce_id".into(),
                    format!("{}:{:?}", m.job_id, m.action).to_lowercase().into(),
                ),
                ("content-type".into(), "application/avro".into()),
            ],
        };
        tokio::task::block_in_place(|| self.log.append(events::DIALER.name(), &[record]))
            .map(|_| ())
            .map_err(|e| SendError::Retryable(format!("dialer topic: {e}")))
    }

    /// Publishes the job as a lead.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let script = self.templates.render(m)?.body;
        self.publish(&DialerMessage {
            action: Action::Add,
            account_id: m.account_id.clone(),
            job_id: m.job_id.clone(),
            phone: Some(m.address.clone()),
            not_before: Some(m.sent_at.as_micros()),
            not_after: Some(m.not_after.as_micros()),
            priority: 0,
            max_attempts: 1,
            language: Some(m.language.clone()),
            script: Some(script),
            balance_minor: Some(m.balance_minor),
            currency: Some(m.currency.clone()),
        })
    }

    /// Publishes a recall of the job.
    pub fn recall(&self, account: &str, job: &str) -> crate::vicidial::RecallResult {
        let m = DialerMessage {
            action: Action::Recall,
            account_id: account.to_owned(),
            job_id: job.to_owned(),
            phone: None,
            not_before: None,
            not_after: None,
            priority: 0,
            max_attempts: 0,
            language: None,
            script: None,
            balance_minor: None,
            currency: None,
        };
        match self.publish(&m) {
            Ok(()) => crate::vicidial::RecallResult::Cancelled,
            Err(e) => crate::vicidial::RecallResult::Failed(e.to_string()),
        }
    }
}
