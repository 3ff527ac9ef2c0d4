//! Tacto's topics and the framing of events on them: the framed Avro datum as the value (see
//! [`crate::framing`]), the account id as the key, and the CloudEvents Kafka binding's headers
//! (`ce_specversion`, `ce_id`, `ce_type`, `ce_source`, `ce_time`, `content-type`, plus the W3C
//! `traceparent` when the event is part of a trace).

use crate::framing::{self, FrameError};
use crate::{EventLog, LogError, Record};
use tacto_model::{Event, avro};

/// Every input fact (ingest, provider outcomes).
pub const EVENTS: &str = "tacto.events";
/// Contact jobs and recalls, for dispatch.
pub const CONTACTS: &str = "tacto.contacts";
/// Every decision, for the audit trail and timelines.
pub const DECISIONS: &str = "tacto.decisions";
/// Records that could not be decoded or applied, with the error.
pub const DEAD_LETTERS: &str = "tacto.dead-letters";
/// Decide's state per account (compacted changelog; Kafka backend).
pub const DECIDE_STATE: &str = "tacto.decide-state";
/// Dispatch's job states (compacted changelog; Kafka backend).
pub const DISPATCH_JOBS: &str = "tacto.dispatch-jobs";

/// Creates Tacto's topics with `partitions` partitions each.
pub fn create_topics(log: &dyn EventLog, partitions: u32) -> Result<(), LogError> {
    for t in [EVENTS, CONTACTS, DECISIONS, DEAD_LETTERS] {
        log.create_topic(t, partitions)?;
    }
    Ok(())
}

/// Frames an event as a record.
pub fn to_record(e: &Event) -> Result<Record, avro::AvroError> {
    Ok(Record {
        key: e.account_id.0.clone(),
        value: framing::encode(e)?,
        headers: vec![
            ("ce_specversion".into(), "1.0".into()),
            ("ce_id".into(), e.id.0.clone()),
            (
                "ce_type".into(),
                format!("dev.tacto.{}", e.body.type_name()),
            ),
            ("ce_source".into(), e.source.clone()),
            ("ce_time".into(), e.occurred_at.to_string()),
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
    d.headers.push(("tacto_error".into(), error.to_owned()));
    d
}
