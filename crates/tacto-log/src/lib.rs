//! Tacto's event-log port.
//!
//! Topics split into partitions; records are keyed (by account id), and a key always lands in
//! the same partition, so one account's history is ordered. Consumers read from an offset and
//! commit the next offset to read per consumer group. [`EventLog`] is the port; [`embedded`] is
//! the zero-setup durable backend on one machine (the Kafka backend implements the same trait).

pub mod embedded;
pub mod events;
pub mod framing;
pub mod kafka;

use serde::{Deserialize, Serialize};

/// One record on a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Partitioning key (the account id).
    pub key: String,
    /// Payload (an Avro-encoded event). Serialized as one byte string, not a sequence of
    /// bytes: the same postcard encoding, copied in one piece instead of byte by byte.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Headers (event id, type, source, time, `traceparent`). Stored as strings; the usual
    /// names and constant values are static text, read back as such (see [`HeaderText`]).
    #[serde(deserialize_with = "header_text::deserialize")]
    pub headers: Vec<(HeaderText, HeaderText)>,
}

/// A header's name or value. The CloudEvents names and constant values are static text: a
/// record costs no allocation for them, written or read (every record carries six headers;
/// allocating each name took a share of a load's CPU: BENCHMARKS.md).
pub type HeaderText = std::borrow::Cow<'static, str>;

/// `s` as header text: static for the known names and constant values, else a copy.
pub fn header_text(s: &str) -> HeaderText {
    header_text::known(s).map_or_else(|| HeaderText::Owned(s.to_owned()), HeaderText::Borrowed)
}

/// Header text read back: the known names and constant values as static text.
mod header_text {
    use super::HeaderText;
    use serde::{Deserialize, Deserializer, de};
    use std::borrow::Cow;

    /// The texts read back without an allocation.
    const KNOWN: [&str; 11] = [
        "ce_specversion",
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_time",
        "content-type",
        "traceparent",
        "tracestate",
        "tacto_error",
        "1.0",
        "application/avro",
    ];

    pub(super) fn known(s: &str) -> Option<&'static str> {
        KNOWN.iter().copied().find(|k| *k == s)
    }

    /// One header text.
    struct Text(HeaderText);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl de::Visitor<'_> for Visitor {
                type Value = Text;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a header name or value")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                    Ok(Text(super::header_text(v)))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                    Ok(Text(known(&v).map_or(Cow::Owned(v), Cow::Borrowed)))
                }
            }
            d.deserialize_str(Visitor)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(HeaderText, HeaderText)>, D::Error> {
        let texts = Vec::<(Text, Text)>::deserialize(d)?;
        Ok(texts.into_iter().map(|(k, v)| (k.0, v.0)).collect())
    }
}

impl Record {
    /// A record with no headers.
    pub fn new(key: impl Into<String>, value: Vec<u8>) -> Self {
        Self {
            key: key.into(),
            value,
            headers: Vec::new(),
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Where a record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// A record read back, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Where it is.
    pub position: Position,
    /// The record.
    pub record: Record,
}

/// Result of an append guarded by a unique key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written now.
    New(Position),
    /// A record with the same unique key was written before, here.
    Duplicate(Position),
}

/// Log failures.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The topic exists with another partition count.
    #[error("topic {topic:?} exists with {existing} partitions, not {requested}")]
    PartitionMismatch {
        /// Topic.
        topic: String,
        /// Its partitions.
        existing: u32,
        /// Requested.
        requested: u32,
    },
    /// A partition outside the topic.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// The storage failed (disk full, corruption, IO, an unreachable broker).
    #[error("log storage: {0}")]
    Storage(String),
    /// The backend does not offer this operation.
    #[error("not supported by this backend: {0}")]
    Unsupported(String),
}

/// The partition of `key` among `partitions` (stable across processes and versions).
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// What [`EventLog::scan_blobs`] calls with each blob's name and value.
pub type BlobVisitor<'a> = dyn FnMut(&str, &[u8]) -> Result<(), LogError> + 'a;

/// How soon a write must be on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk when the call returns: acknowledged input, and what must survive a crash
    /// before anything else happens (a provider attempt).
    Immediate,
    /// Atomic and visible to readers at once, but it may reach the disk only with a later
    /// write (the embedded log writes it with the next immediate one, and makes one
    /// immediate itself at least every [`embedded::MAX_DEFERRAL`]). For a consumer's outputs
    /// and progress that a replay of durable input makes again: a crash loses them together
    /// and the consumer starts again from the offsets that did reach the disk. A later
    /// immediate write of the same log carries every deferred write before it, so nothing
    /// acted upon durably can rest on a lost one.
    Deferred,
}

/// The event-log port. Appends are durable when they return (but see [`Durability`]).
pub trait EventLog: Send + Sync {
    /// Creates a topic (idempotent for the same partition count).
    fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError>;
    /// Partition count of a topic.
    fn partitions(&self, topic: &str) -> Result<u32, LogError>;
    /// Appends records (each to its key's partition) atomically and durably.
    fn append(&self, topic: &str, records: &[Record]) -> Result<Vec<Position>, LogError>;
    /// Appends one record unless a record with the same `unique` key was appended before to
    /// this topic; atomically with the check. (A backend that cannot check, Kafka, appends and
    /// reports it new: consumers must be idempotent anyway.)
    fn append_unique(
        &self,
        topic: &str,
        unique: &str,
        record: &Record,
    ) -> Result<Appended, LogError> {
        let mut v = self.append_unique_many(topic, &[(unique.to_owned(), record.clone())])?;
        v.pop()
            .ok_or_else(|| LogError::Storage("append returned nothing".into()))
    }
    /// [`EventLog::append_unique`] for many records, in one atomic, durable write.
    fn append_unique_many(
        &self,
        topic: &str,
        items: &[(String, Record)],
    ) -> Result<Vec<Appended>, LogError>;
    /// Appends to several topics, each as [`EventLog::append`] (not atomically together, in no
    /// promised order between the topics); returns each topic's result, in the order given.
    /// Where the backend can, the appends are in flight together (Kafka: one broker round trip
    /// for all of them); the default makes them one after the other.
    fn append_each(&self, appends: &[(&str, &[Record])]) -> Vec<Result<Vec<Position>, LogError>> {
        appends
            .iter()
            .map(|(topic, records)| self.append(topic, records))
            .collect()
    }
    /// Appends records to several topics, then commits `group`'s next offsets, as one atomic
    /// write where the backend can (the embedded log: a consumer's outputs and its progress
    /// land together or not at all), durable as `durability` says. The default does the
    /// appends in order, then the commits, each durable: a crash in between replays the input,
    /// which consumers must tolerate anyway.
    fn append_and_commit(
        &self,
        appends: Vec<(&str, Vec<Record>)>,
        group: &str,
        commits: &[(&str, u32, u64)],
        durability: Durability,
    ) -> Result<(), LogError> {
        let _ = durability;
        for (topic, records) in &appends {
            self.append(topic, records)?;
        }
        for (topic, partition, next) in commits {
            self.commit(group, topic, *partition, *next)?;
        }
        Ok(())
    }
    /// Up to `max` records of a partition from `from` on.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Delivered>, LogError>;
    /// The offset the next record of the partition will get.
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError>;
    /// Commits `next` as the next offset `group` will read.
    fn commit(&self, group: &str, topic: &str, partition: u32, next: u64) -> Result<(), LogError>;
    /// The next offset `group` will read (0 when nothing was committed).
    fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, LogError>;
    /// A receiver that changes whenever anything is appended (to wake consumers).
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Stores a named blob (a service's snapshot, a dispatch attempt record), durably.
    fn put_blob(&self, name: &str, value: &[u8]) -> Result<(), LogError>;
    /// A named blob.
    fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>, LogError>;
    /// Stores several named blobs, durably; one atomic write where the backend can (the
    /// embedded log). The default stores them one by one, in order.
    fn put_blobs(&self, items: &[(&str, &[u8])]) -> Result<(), LogError> {
        for (name, value) in items {
            self.put_blob(name, value)?;
        }
        Ok(())
    }
    /// Stores named blobs and appends records to `topic` under unique keys (as
    /// [`EventLog::append_unique_many`]) in one atomic write, durable as `durability` says
    /// where the backend can defer (the embedded log): a service's record of what it did and
    /// its report of it land together. The default stores the blobs, then appends, each durably.
    fn put_blobs_and_append_unique(
        &self,
        blobs: &[(&str, &[u8])],
        topic: &str,
        items: &[(String, Record)],
        durability: Durability,
    ) -> Result<Vec<Appended>, LogError> {
        let _ = durability;
        self.put_blobs(blobs)?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.append_unique_many(topic, items)
    }
    /// Calls `visit` with every blob whose name starts with `prefix`, in name order, from one
    /// consistent view of the store; returns how many. Backends without a blob store refuse.
    fn scan_blobs(&self, prefix: &str, visit: &mut BlobVisitor<'_>) -> Result<u64, LogError> {
        let _ = visit;
        Err(LogError::Unsupported(format!(
            "scanning blobs {prefix:?}: this backend keeps no blobs"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::Record;
    use serde::{Deserialize, Serialize};

    /// [`Record`] as it was serialized before its value became a byte string.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct RecordAsSequence {
        key: String,
        value: Vec<u8>,
        headers: Vec<(String, String)>,
    }

    #[test]
    fn a_record_is_stored_exactly_as_before_its_value_became_a_byte_string() {
        let value: Vec<u8> = (0..=255).chain(0..40).collect();
        let headers = vec![
            ("traceparent".to_owned(), "00-ab-cd-01".to_owned()),
            ("content-type".to_owned(), "application/avro".to_owned()),
            ("x-custom".to_owned(), "1.0".to_owned()),
        ];
        let record = Record {
            key: "acct-1".into(),
            value: value.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone().into()))
                .collect(),
        };
        let before = RecordAsSequence {
            key: "acct-1".into(),
            value,
            headers,
        };
        let bytes = postcard::to_allocvec(&record).expect("encode");
        let old_bytes = postcard::to_allocvec(&before).expect("encode");
        assert_eq!(bytes, old_bytes);
        assert_eq!(
            postcard::from_bytes::<Record>(&old_bytes).expect("decode"),
            record
        );
    }

    #[test]
    fn known_header_texts_are_read_back_without_a_copy() {
        let mut record =
            crate::events::to_record(&tacto_model::samples::sample_events()[0]).expect("a record");
        record
            .headers
            .push(("x-custom".into(), "x".to_owned().into()));
        let back: Record =
            postcard::from_bytes(&postcard::to_allocvec(&record).expect("encode")).expect("decode");
        assert_eq!(back, record);
        let static_text = |t: &super::HeaderText| matches!(t, std::borrow::Cow::Borrowed(_));
        let names: Vec<bool> = back.headers.iter().map(|(k, _)| static_text(k)).collect();
        assert_eq!(names, [true, true, true, true, true, true, false]);
        assert_eq!(back.header("ce_specversion"), Some("1.0"));
        assert!(static_text(&back.headers[0].1), "1.0 is static text");
        assert!(
            static_text(&back.headers[5].1),
            "application/avro is static text"
        );
        assert!(!static_text(&back.headers[1].1), "an event id is not");
    }
}
