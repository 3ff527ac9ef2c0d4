//! Public holidays as data: fixed dates, dates moved to the next Monday (Colombia's Ley
//! Emiliani), Easter-relative feasts (computed with `computus`), n-th weekdays and listed dates.

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Deserialize;

/// First and last year for which holidays are expanded when a pack is loaded.
pub const FIRST_YEAR: i32 = 2024;
/// Last year expanded (inclusive).
pub const LAST_YEAR: i32 = 2035;

/// How a pack describes its holidays (see `packs/*.toml`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolidayRules {
    /// `MM-DD` dates every year.
    #[serde(default)]
    pub fixed: Vec<String>,
    /// `MM-DD` dates observed on the next Monday when they fall on another weekday.
    #[serde(default)]
    pub next_monday: Vec<String>,
    /// Days relative to Easter Sunday (e.g. -2 = Good Friday).
    #[serde(default)]
    pub easter: Vec<i64>,
    /// Days relative to Easter Sunday, observed on the next Monday unless already a Monday.
    #[serde(default)]
    pub easter_next_monday: Vec<i64>,
    /// The n-th weekday of a month (n = -1 for the last).
    #[serde(default)]
    pub nth_weekday: Vec<NthWeekday>,
    /// Extra listed dates, `YYYY-MM-DD` (decrees, one-off holidays).
    #[serde(default)]
    pub dates: Vec<String>,
}

/// The n-th weekday of a month, e.g. the first Monday of February.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NthWeekday {
    /// Month, 1–12.
    pub month: u32,
    /// Weekday, `mon` … `sun`.
    pub weekday: String,
    /// 1 = first, 2 = second, … ; -1 = last.
    pub n: i32,
}

/// A holiday description that cannot be expanded.
#[derive(Debug, thiserror::Error)]
#[error("invalid holiday {what:?}: {why}")]
pub struct HolidayError {
    what: String,
    why: &'static str,
}

fn err(what: impl Into<String>, why: &'static str) -> HolidayError {
    HolidayError {
        what: what.into(),
        why,
    }
}

/// Parses `mon` … `sun`.
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

fn month_day(s: &str, year: i32) -> Result<NaiveDate, HolidayError> {
    let (m, d) = s.split_once('-').ok_or_else(|| err(s, "want MM-DD"))?;
    let m: u32 = m.parse().map_err(|_| err(s, "month is not a number"))?;
    let d: u32 = d.parse().map_err(|_| err(s, "day is not a number"))?;
    NaiveDate::from_ymd_opt(year, m, d).ok_or_else(|| err(s, "no such date"))
}

fn next_monday(d: NaiveDate) -> NaiveDate {
    let ahead = (7 - d.weekday().num_days_from_monday()) % 7;
    d + Days::new(u64::from(ahead))
}

fn plus_days(d: NaiveDate, n: i64) -> Option<NaiveDate> {
    if n >= 0 {
        d.checked_add_days(Days::new(n.unsigned_abs()))
    } else {
        d.checked_sub_days(Days::new(n.unsigned_abs()))
    }
}

impl HolidayRules {
    /// Every holiday from [`FIRST_YEAR`] to [`LAST_YEAR`], sorted and without duplicates.
    pub fn expand(&self) -> Result<Vec<NaiveDate>, HolidayError> {
        let mut out = Vec::new();
        for year in FIRST_YEAR..=LAST_YEAR {
            for s in &self.fixed {
                out.push(month_day(s, year)?);
            }
            for s in &self.next_monday {
                out.push(next_monday(month_day(s, year)?));
            }
            let easter = computus::gregorian_naive(year)
                .map_err(|_| err(year.to_string(), "Easter out of range"))?;
            for &n in &self.easter {
                out.push(plus_days(easter, n).ok_or_else(|| err(n.to_string(), "out of range"))?);
            }
            for &n in &self.easter_next_monday {
                let d = plus_days(easter, n).ok_or_else(|| err(n.to_string(), "out of range"))?;
                out.push(next_monday(d));
            }
            for nth in &self.nth_weekday {
                let wd = parse_weekday(&nth.weekday)
                    .ok_or_else(|| err(&nth.weekday, "weekday must be mon..sun"))?;
                let n = u8::try_from(nth.n.unsigned_abs()).unwrap_or(0);
                let d = if nth.n > 0 {
                    NaiveDate::from_weekday_of_month_opt(year, nth.month, wd, n)
                } else if nth.n == -1 {
                    last_weekday_of_month(year, nth.month, wd)
                } else {
                    None
                };
                out.push(d.ok_or_else(|| err(format!("{nth:?}"), "no such weekday"))?);
            }
        }
        for s in &self.dates {
            out.push(
                NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| err(s, "want YYYY-MM-DD"))?,
            );
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

fn last_weekday_of_month(year: i32, month: u32, wd: Weekday) -> Option<NaiveDate> {
    let first_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    let mut d = first_next.pred_opt()?;
    while d.weekday() != wd {
        d = d.pred_opt()?;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn next_monday_keeps_mondays() {
        assert_eq!(next_monday(ymd(2026, 10, 12)), ymd(2026, 10, 12));
        assert_eq!(next_monday(ymd(2026, 1, 6)), ymd(2026, 1, 12));
        assert_eq!(next_monday(ymd(2026, 11, 1)), ymd(2026, 11, 2));
    }

    #[test]
    fn nth_and_last_weekday() {
        let rules = HolidayRules {
            nth_weekday: vec![
                NthWeekday {
                    month: 2,
                    weekday: "mon".into(),
                    n: 1,
                },
                NthWeekday {
                    month: 5,
                    weekday: "mon".into(),
                    n: -1,
                },
            ],
            ..Default::default()
        };
        let days = rules.expand().expect("expands");
        assert!(days.contains(&ymd(2026, 2, 2)));
        assert!(days.contains(&ymd(2026, 5, 25)));
    }

    #[test]
    fn bad_rules_are_errors() {
        let rules = HolidayRules {
            fixed: vec!["02-30".into()],
            ..Default::default()
        };
        assert!(rules.expand().is_err());
    }
}
