//! Allowed-time windows: local hours, weekdays, holidays and the customer's inconvenient times,
//! turned into UTC intervals and intersected over every candidate zone and every pack.
//!
//! DST: a local opening time that does not exist (spring forward) opens at the jump; an
//! ambiguous one (fall back) opens at the later instant and closes at the earlier one, so the
//! window is never wider than the law allows in either reading.

use crate::pack::{MinuteRange, Pack, RuleRef};
use chrono::{Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone};
use chrono_tz::Tz;
use hashbrown::HashMap;
use std::sync::{Mutex, PoisonError};
use tacto_model::{Channel, ReasonCode, Timestamp};

/// A half-open UTC interval `[start, end)` in microseconds since the epoch.
pub type Interval = (i64, i64);

/// A local range the customer declared inconvenient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InconvenientRange {
    /// Minutes since local midnight, `[start, end)`.
    pub minutes: MinuteRange,
    /// Bit `i` set = applies on weekday `i` (Monday = 0); all bits = every day.
    pub weekdays: u8,
}

/// Why a channel is closed at an instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closure {
    /// The reason code.
    pub code: ReasonCode,
    /// The rule, when a pack's rule closed it (`None` for the customer's own times).
    pub rule: Option<RuleRef>,
    /// The zone in which it is closed.
    pub zone: Tz,
}

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// The UTC instant of local `minute` on `date` in `tz`, resolving DST gaps and overlaps
/// conservatively (see the module docs).
pub fn local_to_utc(tz: Tz, date: NaiveDate, minute: u16, opening: bool) -> i64 {
    let base = date.and_hms_opt(0, 0, 0).unwrap_or(NaiveDateTime::MIN);
    let naive = base + TimeDelta::minutes(i64::from(minute));
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.timestamp_micros(),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.timestamp_micros(), b.timestamp_micros());
            if opening { a.max(b) } else { a.min(b) }
        }
        LocalResult::None => {
            // In a spring-forward gap: the first local minute that exists is the jump instant.
            let mut probe = naive;
            for _ in 0..(24 * 60) {
                probe += TimeDelta::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    // `t` is the first valid minute; the jump happened at its UTC instant
                    // minus the minutes skipped past the gap start, which is `t` itself.
                    return t.timestamp_micros();
                }
            }
            base.and_utc().timestamp_micros()
        }
    }
}

fn local_date(tz: Tz, t: i64) -> NaiveDate {
    Timestamp::from_micros(t)
        .to_datetime()
        .with_timezone(&tz)
        .date_naive()
}

/// Sorted, merged allowed intervals of one pack in one zone for `channel`, over local dates
/// `[first, last]`; `None` when the pack does not restrict the channel at all.
fn pack_zone_intervals(
    pack: &Pack,
    tz: Tz,
    channel: Channel,
    first: NaiveDate,
    last: NaiveDate,
) -> Option<Vec<Interval>> {
    let restricts_hours = pack.hours[crate::pack::channel_index(channel)].is_some();
    let restricts_days = pack.holiday_channels.contains(channel) && !pack.holidays.is_empty();
    if !restricts_hours && !restricts_days {
        return None;
    }
    let mut out = Vec::new();
    pack.day_windows
        .collect(tz, channel, first, last, &mut out, |d, day| {
            day_intervals(pack, tz, channel, d, day)
        });
    Some(normalise(out))
}

/// The allowed intervals of one pack in one zone for `channel` on local date `d`, in order.
fn day_intervals(pack: &Pack, tz: Tz, channel: Channel, d: NaiveDate, out: &mut Vec<Interval>) {
    if pack.is_holiday(channel, d) {
        return;
    }
    match pack.day_hours(channel, d.weekday()) {
        Some(ranges) => {
            for &(s, e) in ranges {
                out.push((local_to_utc(tz, d, s, true), local_to_utc(tz, d, e, false)));
            }
        }
        None => out.push((
            local_to_utc(tz, d, 0, true),
            local_to_utc(tz, d, 1440, false),
        )),
    }
}

/// The days a pack's windows were computed for, by zone, channel and local date, kept so that
/// the next decision in the same week reuses them (a decision looks about a week ahead, for
/// every candidate zone, every time it places a contact). They depend on the pack alone, so a
/// pack keeps its own; the map is emptied when it reaches [`DayWindows::MAX_DAYS`].
#[derive(Debug, Default)]
pub struct DayWindows {
    days: Mutex<HashMap<DayKey, Box<[Interval]>>>,
}

/// A pack's day: the zone, the channel and the local date.
type DayKey = (Tz, Channel, NaiveDate);

impl DayWindows {
    /// The most days kept before the map starts again empty (a few years of every zone and
    /// channel of a pack).
    pub const MAX_DAYS: usize = 1 << 16;

    /// Appends the intervals of every local date in `[first, last]`, in date order, computing
    /// with `compute` (and keeping) the days not seen before.
    fn collect(
        &self,
        tz: Tz,
        channel: Channel,
        first: NaiveDate,
        last: NaiveDate,
        out: &mut Vec<Interval>,
        compute: impl Fn(NaiveDate, &mut Vec<Interval>),
    ) {
        // A day is inserted whole or not at all, so a poisoned lock still holds good days.
        let mut days = self.days.lock().unwrap_or_else(PoisonError::into_inner);
        if days.len() >= Self::MAX_DAYS {
            days.clear();
        }
        let mut d = first;
        while d <= last {
            let day = days.entry((tz, channel, d)).or_insert_with(|| {
                let mut v = Vec::new();
                compute(d, &mut v);
                v.into_boxed_slice()
            });
            out.extend_from_slice(day);
            d = d.succ_opt().unwrap_or(NaiveDate::MAX);
            if d == NaiveDate::MAX {
                break;
            }
        }
    }

    /// How many days are kept.
    pub fn len(&self) -> usize {
        self.days
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no day is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn inconvenient_complement(
    ranges: &[InconvenientRange],
    tz: Tz,
    first: NaiveDate,
    last: NaiveDate,
) -> Vec<Interval> {
    let mut blocked = Vec::new();
    let mut d = first;
    while d <= last {
        let bit = 1u8 << d.weekday().num_days_from_monday();
        for r in ranges.iter().filter(|r| r.weekdays & bit != 0) {
            blocked.push((
                local_to_utc(tz, d, r.minutes.0, true),
                local_to_utc(tz, d, r.minutes.1, false),
            ));
        }
        d = d.succ_opt().unwrap_or(NaiveDate::MAX);
        if d == NaiveDate::MAX {
            break;
        }
    }
    let blocked = normalise(blocked);
    let lo = local_to_utc(tz, first, 0, true);
    let hi = local_to_utc(tz, last, 1440, false);
    complement(&blocked, lo, hi)
}

/// Sorts and merges overlapping or touching intervals, dropping empty ones.
pub fn normalise(mut v: Vec<Interval>) -> Vec<Interval> {
    v.retain(|(s, e)| s < e);
    v.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn complement(v: &[Interval], lo: i64, hi: i64) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut cur = lo;
    for &(s, e) in v {
        if s > cur {
            out.push((cur, s.min(hi)));
        }
        cur = cur.max(e);
    }
    if cur < hi {
        out.push((cur, hi));
    }
    out.retain(|(s, e)| s < e);
    out
}

/// Intersection of two normalised interval lists.
pub fn intersect(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// What constrains one channel for one customer: packs, candidate zones and declared times.
#[derive(Clone, Copy)]
pub struct WindowSpec<'a> {
    /// Packs that govern the account.
    pub packs: &'a [std::sync::Arc<Pack>],
    /// Every zone the customer may be in.
    pub zones: &'a [Tz],
    /// The channel.
    pub channel: Channel,
    /// The customer's inconvenient times.
    pub inconvenient: &'a [InconvenientRange],
}

impl WindowSpec<'_> {
    /// Allowed intervals that end after `from`, computed over `days` local days from `from`.
    /// `None` inside the result means "unrestricted": returned as one interval to `i64::MAX`.
    pub fn intervals(&self, from: i64, days: u64) -> Vec<Interval> {
        let mut acc: Option<Vec<Interval>> = None;
        let lo = from - 36 * 60 * MICROS_PER_MINUTE;
        for &tz in self.zones {
            let first = local_date(tz, lo);
            let last = first.checked_add_days(Days::new(days + 2)).unwrap_or(first);
            for pack in self.packs {
                if let Some(iv) = pack_zone_intervals(pack, tz, self.channel, first, last) {
                    acc = Some(match acc {
                        None => iv,
                        Some(a) => intersect(&a, &iv),
                    });
                }
            }
            if !self.inconvenient.is_empty() {
                let iv = inconvenient_complement(self.inconvenient, tz, first, last);
                acc = Some(match acc {
                    None => iv,
                    Some(a) => intersect(&a, &iv),
                });
            }
        }
        let mut v = acc.unwrap_or_else(|| vec![(i64::MIN, i64::MAX)]);
        v.retain(|&(_, e)| e > from);
        v
    }

    /// The allowed interval containing `t`, or the first one after it, looking up to
    /// `max_days` ahead.
    pub fn open_at_or_after(&self, t: i64, max_days: u64) -> Option<Interval> {
        let mut days = 4;
        loop {
            let iv = self.intervals(t, days);
            // Only trust intervals that end inside the computed horizon (except unbounded).
            let horizon = t + (days as i64) * 24 * 60 * MICROS_PER_MINUTE;
            if let Some(&(s, e)) = iv.first()
                && s < horizon
            {
                return Some((s.max(t), e));
            }
            if days >= max_days {
                return None;
            }
            days = (days * 2).min(max_days);
        }
    }

    /// Why the channel is closed at `t`, or `None` when it is open.
    pub fn closure_at(&self, t: i64) -> Option<Closure> {
        let utc = Timestamp::from_micros(t).to_datetime();
        for &tz in self.zones {
            let local = utc.with_timezone(&tz).naive_local();
            let date = local.date();
            let minute = u16::try_from(
                local
                    .time()
                    .signed_duration_since(chrono::NaiveTime::MIN)
                    .num_minutes(),
            )
            .unwrap_or(0);
            for pack in self.packs {
                if pack.is_holiday(self.channel, date) {
                    return Some(Closure {
                        code: ReasonCode::Holiday,
                        rule: pack.holiday_rule(),
                        zone: tz,
                    });
                }
                if let Some(ranges) = pack.day_hours(self.channel, date.weekday()) {
                    let rule = pack.hours_rule[crate::pack::channel_index(self.channel)].clone();
                    if ranges.is_empty() {
                        return Some(Closure {
                            code: ReasonCode::DayNotAllowed,
                            rule,
                            zone: tz,
                        });
                    }
                    if !ranges.iter().any(|&(s, e)| s <= minute && minute < e) {
                        return Some(Closure {
                            code: ReasonCode::QuietHours,
                            rule,
                            zone: tz,
                        });
                    }
                }
            }
            let bit = 1u8 << date.weekday().num_days_from_monday();
            if self
                .inconvenient
                .iter()
                .any(|r| r.weekdays & bit != 0 && r.minutes.0 <= minute && minute < r.minutes.1)
            {
                return Some(Closure {
                    code: ReasonCode::ConsumerInconvenientTime,
                    rule: None,
                    zone: tz,
                });
            }
        }
        // The interval computation is the authority (it also handles DST edges); fall back to
        // it so that this answer never disagrees with the windows.
        let open = self
            .intervals(t, 1)
            .first()
            .is_some_and(|&(s, e)| s <= t && t < e);
        if open {
            None
        } else {
            Some(Closure {
                code: ReasonCode::QuietHours,
                rule: self
                    .packs
                    .first()
                    .and_then(|p| p.hours_rule[crate::pack::channel_index(self.channel)].clone()),
                zone: self.zones.first().copied().unwrap_or(Tz::UTC),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn spring_forward_gap_opens_at_the_jump() {
        // 2026-03-08 02:30 does not exist in New York; the clock jumps 02:00 EST -> 03:00 EDT
        // at 07:00 UTC.
        let t = local_to_utc(chrono_tz::America::New_York, ymd(2026, 3, 8), 150, true);
        assert_eq!(
            Timestamp::from_micros(t).to_string(),
            "2026-03-08T07:00:00Z"
        );
    }

    #[test]
    fn fall_back_overlap_narrows_the_window() {
        // 2026-11-01 01:30 happens twice in New York (05:30 and 06:30 UTC).
        let tz = chrono_tz::America::New_York;
        let open = local_to_utc(tz, ymd(2026, 11, 1), 90, true);
        let close = local_to_utc(tz, ymd(2026, 11, 1), 90, false);
        assert_eq!(
            Timestamp::from_micros(open).to_string(),
            "2026-11-01T06:30:00Z"
        );
        assert_eq!(
            Timestamp::from_micros(close).to_string(),
            "2026-11-01T05:30:00Z"
        );
    }

    #[test]
    fn a_packs_remembered_days_give_the_windows_computed_afresh() {
        let day = 24 * 60 * MICROS_PER_MINUTE;
        // Three weeks from before the US and EU autumn DST changes.
        let from = Timestamp::parse("2026-10-20T09:17:00Z")
            .expect("time")
            .as_micros();
        let cases = [
            ("US", Some("FL"), chrono_tz::America::New_York),
            ("ES", None, chrono_tz::Europe::Madrid),
        ];
        for (country, subdivision, zone) in cases {
            let zones = [zone, chrono_tz::America::Los_Angeles];
            let kept = crate::Policy::example()
                .packs
                .for_place(country, subdivision);
            assert!(!kept.is_empty(), "{country}");
            for channel in [Channel::Voice, Channel::Sms] {
                for step in 0..21 * 8 {
                    let t = from + step * day / 8;
                    let spec = |packs| WindowSpec {
                        packs,
                        zones: &zones,
                        channel,
                        inconvenient: &[],
                    };
                    let fresh = crate::Policy::example()
                        .packs
                        .for_place(country, subdivision);
                    assert_eq!(
                        spec(&kept).intervals(t, 4),
                        spec(&fresh).intervals(t, 4),
                        "{country} {channel} at {}",
                        Timestamp::from_micros(t)
                    );
                }
            }
            assert!(kept.iter().any(|p| !p.day_windows.is_empty()));
        }
    }

    #[test]
    fn a_day_is_computed_once_and_the_map_stays_bounded() {
        let w = DayWindows::default();
        let computed = std::cell::Cell::new(0);
        let mut out = Vec::new();
        for _ in 0..3 {
            w.collect(
                Tz::UTC,
                Channel::Sms,
                ymd(2026, 1, 1),
                ymd(2026, 1, 7),
                &mut out,
                |d, v| {
                    computed.set(computed.get() + 1);
                    v.push((i64::from(d.ordinal()), 0));
                },
            );
        }
        assert_eq!(computed.get(), 7);
        assert_eq!(w.len(), 7);
        assert_eq!(out.len(), 21);
        assert_eq!(out[..7], out[7..14]);
        // Past the bound, the map starts again rather than growing.
        let first = ymd(2026, 1, 1);
        let last = first
            .checked_add_days(Days::new(DayWindows::MAX_DAYS as u64 + 10))
            .expect("date");
        w.collect(Tz::UTC, Channel::Voice, first, last, &mut out, |_, _| {});
        w.collect(Tz::UTC, Channel::Email, first, first, &mut out, |_, _| {});
        assert!(w.len() <= DayWindows::MAX_DAYS, "{}", w.len());
    }

    #[test]
    fn interval_algebra() {
        assert_eq!(
            normalise(vec![(5, 7), (1, 3), (3, 4), (6, 9)]),
            vec![(1, 4), (5, 9)]
        );
        assert_eq!(
            intersect(&[(0, 10), (20, 30)], &[(5, 25)]),
            vec![(5, 10), (20, 25)]
        );
        assert_eq!(
            complement(&[(2, 3), (5, 6)], 0, 8),
            vec![(0, 2), (3, 5), (6, 8)]
        );
    }
}
