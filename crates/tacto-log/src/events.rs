//! Tacto's topics and the framing of events on them: the framed Avro datum as the value (see
//! [`crate::framing`]), the account id as the key, and the CloudEvents Kafka binding's headers
//! (`ce_specversion`, `ce_id`, `ce_type`, `ce_source`, `ce_time`, `content-type`, plus the W3C
//! `traceparent` when the event is part of a trace).

use crate::framing::{self, FrameError};
use crate::{EventLog, LogError, Record};
use tacto_model::{Event, avro};

/// One of Tacto's topics. Its full name is the process's topic prefix (default `tacto.`, set
/// once with [`set_topic_prefix`]) followed by the topic's own name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topic(usize);

const SUFFIXES: [&str; 7] = [
    "events",
    "contacts",
    "decisions",
    "dead-letters",
    "decide-state",
    "dispatch-jobs",
    "dialer",
];

/// Every input fact (ingest, provider outcomes: decide folds them in order with the account's
/// other facts).
pub const EVENTS: Topic = Topic(0);
/// Contact jobs and recalls, for dispatch.
pub const CONTACTS: Topic = Topic(1);
/// Every decision, for the audit trail and timelines.
pub const DECISIONS: Topic = Topic(2);
/// Records that could not be decoded or applied, with the error.
pub const DEAD_LETTERS: Topic = Topic(3);
/// Decide's state per account (compacted changelog; Kafka backend).
pub const DECIDE_STATE: Topic = Topic(4);
/// Dispatch's job states (compacted changelog; Kafka backend).
pub const DISPATCH_JOBS: Topic = Topic(5);
/// The dialer feed: lead adds and recalls for any dialer (`schemas/dialer.avsc`).
pub const DIALER: Topic = Topic(6);

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "tacto.";

static NAMES: std::sync::OnceLock<[String; 7]> = std::sync::OnceLock::new();

/// Sets the topic prefix of this process (e.g. `prod.collections.`); the first call wins, before
/// any topic name is used. Returns the prefix in force.
pub fn set_topic_prefix(prefix: &str) -> &'static str {
    let names = NAMES.get_or_init(|| SUFFIXES.map(|s| format!("{prefix}{s}")));
    names[0].strip_suffix(SUFFIXES[0]).unwrap_or_default()
}

impl Topic {
    /// The topic's full name.
    pub fn name(self) -> &'static str {
        let names = NAMES.get_or_init(|| SUFFIXES.map(|s| format!("{DEFAULT_PREFIX}{s}")));
        names[self.0].as_str()
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Creates Tacto's topics with `partitions` partitions each.
pub fn create_topics(log: &dyn EventLog, partitions: u32) -> Result<(), LogError> {
    for t in [EVENTS, CONTACTS, DECISIONS, DEAD_LETTERS, DIALER] {
        log.create_topic(t.name(), partitions)?;
    }
    Ok(())
}

/// Frames an event as a record.
pub fn to_record(e: &Event) -> Result<Record, avro::AvroError> {
    Ok(Record {
        key: e.account_id.0.to_string(),
        value: framing::encode(e)?,
        headers: vec![
            ("ce_specversion".into(), "1.0".into()),
            ("ce_id".into(), e.id.0.clone().into()),
            (
                "ce_type".into(),
                format!("dev.tacto.{}", e.body.type_name()).into(),
            ),
            ("ce_source".into(), e.source.clone().into()),
            ("ce_time".into(), e.occurred_at.to_string().into()),
            ("content-type".into(), "application/avro".into()),
        ],
    })
}

/// Reads an event back from a record.
pub fn from_record(r: &Record) -> Result<Event, FrameError> {
    framing::decode(&r.value)
}

/// A dead letter: the original record with the error in a header.
pub fn dead_letter(r: &Record, error: &str) -> Record {
    let mut d = r.clone();
    d.headers
        .push(("tacto_error".into(), error.to_owned().into()));
    d
}
