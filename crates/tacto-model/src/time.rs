//! Instants and calendar dates with one meaning on every wire.
//!
//! JSON (human readable) carries RFC 3339 instants and ISO 8601 dates; Avro carries
//! `timestamp-micros` longs and `date` ints. The serde impls pick the form from
//! `Serializer::is_human_readable`, so one Rust type serves both encodings.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use std::fmt;

/// An instant in UTC with microsecond precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The same instant as a chrono `DateTime<Utc>`.
    pub fn to_datetime(self) -> DateTime<Utc> {
        // Every i64 microsecond count is inside chrono's range (±262,000 years).
        Utc.timestamp_micros(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// This instant moved by a signed duration, saturating at the representable range.
    pub fn plus(self, d: chrono::TimeDelta) -> Self {
        Self(
            self.0
                .saturating_add(d.num_microseconds().unwrap_or(i64::MAX)),
        )
    }

    /// `self - other` as a duration.
    pub fn since(self, other: Timestamp) -> chrono::TimeDelta {
        chrono::TimeDelta::microseconds(self.0.saturating_sub(other.0))
    }

    /// Parses an RFC 3339 instant such as `2026-11-23T10:00:00Z`.
    pub fn parse(s: &str) -> Result<Self, chrono::ParseError> {
        DateTime::parse_from_rfc3339(s).map(|d| Self::from(d.with_timezone(&Utc)))
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(d: DateTime<Utc>) -> Self {
        Self(d.timestamp_micros())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            Timestamp::parse(&s)
                .map_err(|e| D::Error::custom(format!("invalid RFC 3339 timestamp {s:?}: {e}")))
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

/// A calendar date with no time zone (a due date, a holiday).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(NaiveDate);

impl Date {
    /// Wraps a chrono date.
    pub const fn new(d: NaiveDate) -> Self {
        Self(d)
    }

    /// The date from year, month and day, if it exists.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(y, m, d).map(Self)
    }

    /// The chrono date.
    pub const fn naive(self) -> NaiveDate {
        self.0
    }

    /// Days since 1970-01-01 (Avro's `date` logical type).
    pub fn days_since_epoch(self) -> i32 {
        self.0.num_days_from_ce() - EPOCH_DAYS_FROM_CE
    }

    fn from_days_since_epoch(days: i32) -> Option<Self> {
        NaiveDate::from_num_days_from_ce_opt(days.checked_add(EPOCH_DAYS_FROM_CE)?).map(Self)
    }
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

impl From<NaiveDate> for Date {
    fn from(d: NaiveDate) -> Self {
        Self(d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i32(self.days_since_epoch())
        }
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map(Date)
                .map_err(|e| D::Error::custom(format!("invalid date {s:?} (want YYYY-MM-DD): {e}")))
        } else {
            let days = i32::deserialize(d)?;
            Date::from_days_since_epoch(days)
                .ok_or_else(|| D::Error::custom(format!("date out of range: {days} days")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_json_round_trip_is_rfc3339() {
        let t = Timestamp::parse("2026-11-23T10:00:00.123456Z").expect("valid");
        let json = serde_json::to_string(&t).expect("serialize");
        assert_eq!(json, "\"2026-11-23T10:00:00.123456Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).expect("parse"), t);
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = Timestamp::parse("2026-11-23T05:00:00-05:00").expect("valid");
        assert_eq!(t.to_string(), "2026-11-23T10:00:00Z");
    }

    #[test]
    fn date_epoch_days_match_avro() {
        assert_eq!(
            Date::from_ymd(1970, 1, 1).map(Date::days_since_epoch),
            Some(0)
        );
        assert_eq!(
            Date::from_ymd(2026, 11, 23).map(Date::days_since_epoch),
            Some(20_780)
        );
        let d = Date::from_days_since_epoch(20_780).expect("in range");
        assert_eq!(d.to_string(), "2026-11-23");
    }

    #[test]
    fn bad_date_names_the_format() {
        let err = serde_json::from_str::<Date>("\"23/11/2026\"").expect_err("must fail");
        assert!(err.to_string().contains("YYYY-MM-DD"), "{err}");
    }
}
