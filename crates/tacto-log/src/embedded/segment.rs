//! Segments: the records one transaction appends to one partition, stored together as one
//! value of the store, keyed by the first one's offset. One entry per record cost a B-tree key
//! (topic, partition, offset) and an insert per record, and left the leaves about half full
//! (pages split in the middle while the log grows at its end); a segment is one insert. A
//! segment holds records at consecutive offsets, each as a 4-byte little-endian length and then
//! its stored form (postcard).
//!
//! A segment is stored sealed: a format byte, then the segment as it is ([`RAW`]) or compressed
//! with LZ4 ([`LZ4`]: the raw length as a 4-byte little-endian number, then the LZ4 block).
//! Records of a topic repeat most of their bytes (header names, event types, key prefixes), so
//! a segment shrinks to a fraction; one that would not shrink is stored raw.

use crate::{LogError, Record};
use std::borrow::Cow;

/// Format byte of a segment stored as it is.
const RAW: u8 = 0;
/// Format byte of a segment compressed with LZ4.
const LZ4: u8 = 1;

/// A segment is closed before it would grow past this many bytes before compression (a record
/// larger than that gets a segment of its own): small enough that reading a few records from
/// the middle of one stays cheap (the whole segment is decompressed), large enough that it
/// compresses well and its page holds records rather than keys.
pub(super) const SEGMENT_BYTES: usize = 16 * 1024 - 256;

/// Appends `record`'s length and stored form to `segment`.
pub(super) fn push(segment: &mut Vec<u8>, record: &Record) -> Result<(), LogError> {
    let at = segment.len();
    segment.extend_from_slice(&[0; 4]);
    let segment_len = postcard::to_io(record, &mut *segment)
        .map_err(|e| LogError::Storage(e.to_string()))?
        .len();
    let len = u32::try_from(segment_len - at - 4)
        .map_err(|_| LogError::Storage("a record of 4 GiB or more".into()))?;
    segment[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The stored form of `segment`: compressed unless that does not make it smaller.
pub(super) fn seal(segment: &[u8]) -> Result<Vec<u8>, LogError> {
    let raw_len = u32::try_from(segment.len())
        .map_err(|_| LogError::Storage("a segment of 4 GiB or more".into()))?;
    let mut sealed = vec![0; 5 + lz4_flex::block::get_maximum_output_size(segment.len())];
    let compressed = lz4_flex::block::compress_into(segment, &mut sealed[5..])
        .map_err(|e| LogError::Storage(format!("compressing a segment: {e}")))?;
    if compressed >= segment.len() {
        sealed.clear();
        sealed.push(RAW);
        sealed.extend_from_slice(segment);
        return Ok(sealed);
    }
    sealed[0] = LZ4;
    sealed[1..5].copy_from_slice(&raw_len.to_le_bytes());
    sealed.truncate(5 + compressed);
    Ok(sealed)
}

/// The segment a sealed one holds.
pub(super) fn unseal(sealed: &[u8]) -> Result<Cow<'_, [u8]>, LogError> {
    let corrupt = |why: &str| LogError::Storage(format!("corrupt segment: {why}"));
    match sealed.split_first() {
        Some((&RAW, segment)) => Ok(Cow::Borrowed(segment)),
        Some((&LZ4, rest)) => {
            let (len, block) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("no length"))?;
            let len = u32::from_le_bytes(*len) as usize;
            // LZ4 expands a block at most about 255 times: a longer length is damage, and
            // must not become an allocation.
            if len > block.len().saturating_mul(255).saturating_add(16) {
                return Err(corrupt("impossible length"));
            }
            let mut segment = vec![0; len];
            let n = lz4_flex::block::decompress_into(block, &mut segment)
                .map_err(|e| corrupt(&e.to_string()))?;
            if n != len {
                return Err(corrupt("shorter than its length"));
            }
            Ok(Cow::Owned(segment))
        }
        Some((format, _)) => Err(corrupt(&format!("unknown format {format}"))),
        None => Err(corrupt("empty")),
    }
}

/// The stored records of a segment, in order (undecoded).
pub(super) struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    /// Walks `segment`.
    pub(super) fn of(segment: &'a [u8]) -> Self {
        Self { rest: segment }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let corrupt = || Some(Err(LogError::Storage("corrupt segment".into())));
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            self.rest = &[];
            return corrupt();
        };
        let Some((record, rest)) = rest.split_at_checked(u32::from_le_bytes(*len) as usize) else {
            self.rest = &[];
            return corrupt();
        };
        self.rest = rest;
        Some(Ok(record))
    }
}

/// Decodes a stored record.
pub(super) fn decode(stored: &[u8]) -> Result<Record, LogError> {
    postcard::from_bytes(stored).map_err(|e| LogError::Storage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_and_a_cut_segment_is_an_error() {
        let records: Vec<Record> = (0..5)
            .map(|i| {
                let mut r = Record::new(format!("k{i}"), vec![i as u8; 300 * i]);
                r.headers.push(("h".into(), format!("{i}").into()));
                r
            })
            .collect();
        let mut segment = Vec::new();
        for r in &records {
            push(&mut segment, r).expect("push");
        }
        let back: Vec<Record> = Records::of(&segment)
            .map(|s| decode(s.expect("stored")).expect("decode"))
            .collect();
        assert_eq!(back, records);
        let cut = &segment[..segment.len() - 1];
        let last = Records::of(cut).last().expect("an item");
        assert!(matches!(last, Err(LogError::Storage(m)) if m == "corrupt segment"));
        assert!(Records::of(&[1, 0]).next().expect("item").is_err());
        assert_eq!(Records::of(&[]).count(), 0);
    }

    #[test]
    fn sealed_segments_unseal_to_themselves_and_damage_is_an_error() {
        let mut repetitive = Vec::new();
        for i in 0..40 {
            let mut r = Record::new(format!("acc-{i:08}"), b"an account event".to_vec());
            r.headers
                .push(("ce_type".into(), "dev.tacto.account_upserted".into()));
            push(&mut repetitive, &r).expect("push");
        }
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for segment in [repetitive.clone(), random, Vec::new()] {
            let sealed = seal(&segment).expect("seal");
            assert!(sealed.len() <= segment.len() + 1);
            assert_eq!(
                unseal(&sealed).expect("unseal").as_ref(),
                segment.as_slice()
            );
        }
        let sealed = seal(&repetitive).expect("seal");
        assert_eq!(sealed[0], LZ4);
        assert!(
            sealed.len() * 3 < repetitive.len(),
            "{} of {}",
            sealed.len(),
            repetitive.len()
        );
        // Damage: a cut block, a length the block cannot hold, an unknown format, nothing.
        assert!(unseal(&sealed[..sealed.len() - 3]).is_err());
        let mut huge = sealed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unseal(&huge).is_err());
        assert!(unseal(&[7, 1, 2]).is_err());
        assert!(unseal(&[]).is_err());
    }
}
