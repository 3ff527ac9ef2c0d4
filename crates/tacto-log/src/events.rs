//! Tacto's topics and the framing of events on them: the Avro datum as the value, the account id
//! as the key, and CloudEvents-style headers (`ce_id`, `ce_type`, `ce_source`, `ce_time`).

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
        value: avro::encode(e)?,
        headers: vec![
            ("ce_id".into(), e.id.0.clone()),
            (
                "ce_type".into(),
                format!("dev.tacto.{}", e.body.type_name()),
            ),
            ("ce_source".into(), e.source.clone()),
            ("ce_time".into(), e.occurred_at.to_string()),
        ],
    })
}

/// Reads an event back from a record.
pub fn from_record(r: &Record) -> Result<Event, avro::AvroError> {
    avro::decode(&r.value)
}

/// A dead letter: the original record with the error in a header.
pub fn dead_letter(r: &Record, error: &str) -> Record {
    let mut d = r.clone();
    d.headers.push(("tacto_error".into(), error.to_owned()));
    d
}
