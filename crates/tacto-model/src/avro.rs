//! Avro encoding of [`Event`]s with the schema in `schemas/event.avsc` (the wire contract).
//!
//! [`encode`] and [`decode`] write and read a bare Avro datum with the current schema. Records
//! written with an older version of the schema are read with [`decode_from_writer_schema`], which
//! resolves them against the current schema (new fields take their defaults). Framing (Confluent
//! wire format or Avro single-object encoding) belongs to the log layer.

use crate::event::Event;
use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use std::sync::OnceLock;

/// The Avro schema of [`Event`], as JSON text.
pub const EVENT_SCHEMA_JSON: &str = include_str!("../../../schemas/event.avsc");

/// Encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The bytes are not an `Event` datum of the given schema.
    #[error("cannot decode Avro event: {0}")]
    Decode(String),
    /// The event does not fit the schema (a bug: the schema and the types disagree).
    #[error("cannot encode event as Avro: {0}")]
    Encode(String),
    /// A writer schema could not be parsed or resolved.
    #[error("invalid Avro schema: {0}")]
    Schema(String),
}

struct Codec {
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // The schema is compiled into the binary and checked by the tests below.
        Schema::parse_str(EVENT_SCHEMA_JSON)
            .unwrap_or_else(|e| panic!("schemas/event.avsc is not a valid Avro schema: {e}"))
    })
}

fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let schema = schema();
        // `human_readable(false)`: timestamps as longs and dates as ints (see `time`).
        let writer = GenericDatumWriter::builder(schema)
            .human_readable(false)
            .build()
            .unwrap_or_else(|e| panic!("event schema does not resolve: {e}"));
        let reader = GenericDatumReader::builder(schema)
            .human_readable(false)
            .build()
            .unwrap_or_else(|e| panic!("event schema does not resolve: {e}"));
        Codec { writer, reader }
    })
}

/// The parsed current event schema.
pub fn event_schema() -> &'static Schema {
    schema()
}

/// Encodes an event as one Avro datum (no framing).
pub fn encode(event: &Event) -> Result<Vec<u8>, AvroError> {
    let mut out = Vec::with_capacity(256);
    encode_into(event, &mut out)?;
    Ok(out)
}

/// Appends the Avro datum of `event` to `out`.
pub fn encode_into(event: &Event, out: &mut Vec<u8>) -> Result<(), AvroError> {
    codec()
        .writer
        .write_ser(out, event)
        .map(|_| ())
        .map_err(|e| AvroError::Encode(e.to_string()))
}

/// Decodes one Avro datum written with the current schema.
pub fn decode(mut bytes: &[u8]) -> Result<Event, AvroError> {
    codec()
        .reader
        .read_deser(&mut bytes)
        .map_err(|e| AvroError::Decode(e.to_string()))
}

/// Decodes a datum written with an older (or newer) `writer_schema`, resolving it against the
/// current schema by Avro's rules: fields the writer did not know take their defaults.
pub fn decode_from_writer_schema(
    mut bytes: &[u8],
    writer_schema: &Schema,
) -> Result<Event, AvroError> {
    apache_avro::util::set_serde_human_readable(false);
    let reader = GenericDatumReader::builder(writer_schema)
        .reader_schema(schema())
        .human_readable(false)
        .build()
        .map_err(|e| AvroError::Schema(e.to_string()))?;
    let value = reader
        .read_value(&mut bytes)
        .map_err(|e| AvroError::Decode(e.to_string()))?;
    apache_avro::from_value(&value).map_err(|e| AvroError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::sample_events;

    #[test]
    fn every_event_kind_round_trips_through_avro() {
        let events = sample_events();
        let mut kinds = std::collections::BTreeSet::new();
        for e in &events {
            let bytes = encode(e).expect("encode");
            let back = decode(&bytes).expect("decode");
            assert_eq!(&back, e, "round trip of {}", e.body.type_name());
            kinds.insert(e.body.type_name());
        }
        assert_eq!(
            kinds.len(),
            22,
            "samples must cover every event kind: {kinds:?}"
        );
    }

    #[test]
    fn every_event_kind_round_trips_through_json() {
        for e in sample_events() {
            let json = serde_json::to_string(&e).expect("serialize");
            let back: crate::Event = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let bytes = encode(&sample_events()[0]).expect("encode");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn old_writer_schema_without_a_new_field_resolves_to_its_default() {
        // An earlier schema whose payment_received had no `method` field.
        let old_json = EVENT_SCHEMA_JSON.replace(
            r#",
        {"name": "method", "type": "string", "default": ""}"#,
            "",
        );
        assert_ne!(old_json, EVENT_SCHEMA_JSON, "the test must remove a field");
        let old = Schema::parse_str(&old_json).expect("old schema parses");
        let event = sample_events()
            .into_iter()
            .find(|e| e.body.type_name() == "payment_received")
            .expect("sample payment");
        let mut as_old = event.clone();
        if let crate::EventBody::PaymentReceived { method, .. } = &mut as_old.body {
            method.clear();
        }
        // Write with the old schema: serialise to a Value, drop the field, encode.
        let writer = GenericDatumWriter::builder(&old)
            .human_readable(false)
            .build()
            .expect("writer");
        let bytes = writer.write_ser_to_vec(&OldPayment(&as_old));
        let bytes = bytes.expect("encode with old schema");
        let back = decode_from_writer_schema(&bytes, &old).expect("resolve");
        assert_eq!(back, as_old);
    }

    /// Serialises an event as the old schema saw it (no `method` in payments).
    struct OldPayment<'a>(&'a crate::Event);

    impl serde::Serialize for OldPayment<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{SerializeStruct, SerializeStructVariant};
            struct Body<'a>(&'a crate::EventBody);
            impl serde::Serialize for Body<'_> {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    match self.0 {
                        crate::EventBody::PaymentReceived {
                            payment_id,
                            debt_id,
                            amount_minor,
                            currency,
                            ..
                        } => {
                            let mut v =
                                s.serialize_struct_variant("EventBody", 1, "payment_received", 4)?;
                            v.serialize_field("payment_id", payment_id)?;
                            v.serialize_field("debt_id", debt_id)?;
                            v.serialize_field("amount_minor", amount_minor)?;
                            v.serialize_field("currency", currency)?;
                            v.end()
                        }
                        other => other.serialize(s),
                    }
                }
            }
            let e = self.0;
            let mut st = s.serialize_struct("Event", 5)?;
            st.serialize_field("id", &e.id)?;
            st.serialize_field("occurred_at", &e.occurred_at)?;
            st.serialize_field("account_id", &e.account_id)?;
            st.serialize_field("source", &e.source)?;
            st.serialize_field("body", &Body(&e.body))?;
            st.end()
        }
    }
}
