//! Segments: the records one transaction appends to one partition, stored together as one
//! value of the store, keyed by the first one's offset. One entry per record cost a B-tree key
//! (topic, partition, offset) and an insert per record, and left the leaves about half full
//! (pages split in the middle while the log grows at its end); a segment is one insert and
//! fills its page. A segment holds records at consecutive offsets, each as a 4-byte
//! little-endian length and then its stored form (postcard).

use crate::{LogError, Record};

/// A segment is closed before it would grow past this many bytes (a record larger than that
/// gets a segment of its own): small enough that reading a few records from the middle of one
/// stays cheap, large enough that most of a page holds records rather than keys.
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
                r.headers.push(("h".into(), format!("{i}")));
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
}
