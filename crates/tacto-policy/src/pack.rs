//! Jurisdiction packs: the law as data. Each pack is a TOML file (`packs/*.toml`) listing
//! allowed hours, holidays, consent requirements, rolling caps, conversation waits and spacing,
//! every rule with its id and legal source. A tenant may replace a pack or add one.

use crate::channels::ChannelSet;
use crate::holidays::{HolidayRules, parse_weekday};
use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tacto_model::{ArcStr, Channel, Jurisdiction};

/// How well a rule's legal basis was verified (from `compliance-rules.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Found in the legal text or an official source.
    Verified,
    /// Secondary sources only.
    Secondary,
    /// Not verified: a conservative reading.
    #[default]
    Unverified,
}

/// Where a rule comes from, for explanations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// Rule id, e.g. `us.reg_f.7in7`.
    pub rule: ArcStr,
    /// Pack id, e.g. `US`, or `policy` for the tenant's own rules.
    pub pack: ArcStr,
    /// Legal or contractual source.
    pub source: ArcStr,
}

/// Contact allowed only during these local hours on these days.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursRule {
    /// Rule id.
    pub rule: ArcStr,
    /// Legal source.
    pub source: ArcStr,
    /// Verification level.
    #[serde(default)]
    pub confidence: Confidence,
    /// Channels it restricts.
    pub channels: Vec<Channel>,
    /// Weekdays (`mon` … `sun`) on which the hours apply; other days are closed.
    pub days: Vec<String>,
    /// Opening time, `HH:MM` local.
    pub start: String,
    /// Closing time, `HH:MM` local (exclusive; `24:00` = midnight).
    pub end: String,
}

/// No contact on these public holidays.
#[derive(Clone, Debug, Deserialize)]
pub struct HolidaysRule {
    /// Rule id.
    pub rule: ArcStr,
    /// Legal source.
    pub source: ArcStr,
    /// Verification level.
    #[serde(default)]
    pub confidence: Confidence,
    /// Channels it closes.
    pub channels: Vec<Channel>,
    /// The calendar.
    #[serde(flatten)]
    pub calendar: HolidayRules,
}

/// At most `max` counted contacts on `channels` in any rolling `window_hours`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CapRule {
    /// Rule id.
    pub rule: ArcStr,
    /// Legal or contractual source.
    pub source: ArcStr,
    /// Verification level.
    #[serde(default)]
    pub confidence: Confidence,
    /// Channels counted and limited together.
    pub channels: Vec<Channel>,
    /// Maximum contacts in the window.
    pub max: u32,
    /// Window length in hours (at most 192).
    pub window_hours: u32,
    /// Attempts that never connected (busy, not in service, never sent) are not counted.
    #[serde(default)]
    pub exclude_never_connected: bool,
    /// While the customer's direct consent to be called is younger than this many hours (and
    /// no conversation happened since), the cap does not apply (Reg F §1006.14(b)(3)(i)).
    #[serde(default)]
    pub consent_exclusion_hours: Option<u32>,
}

/// After a conversation, no contact on `channels` for `hours`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitRule {
    /// Rule id.
    pub rule: ArcStr,
    /// Legal source.
    pub source: ArcStr,
    /// Verification level.
    #[serde(default)]
    pub confidence: Confidence,
    /// Channels blocked during the wait.
    pub channels: Vec<Channel>,
    /// Conversations on these channels start the wait.
    pub triggered_by: Vec<Channel>,
    /// Length of the wait.
    pub hours: u32,
    /// Direct prior consent given after the conversation lifts the wait for that many hours.
    #[serde(default)]
    pub consent_exclusion_hours: Option<u32>,
}

/// At least `min_hours` between two counted contacts on `channels`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpacingRule {
    /// Rule id.
    pub rule: ArcStr,
    /// Legal source.
    pub source: ArcStr,
    /// Verification level.
    #[serde(default)]
    pub confidence: Confidence,
    /// Channels spaced together.
    pub channels: Vec<Channel>,
    /// Minimum gap.
    pub min_hours: u32,
}

/// These channels need the customer's consent on the contact point.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRule {
    /// Rule id.
    pub rule: ArcStr,
    /// Legal source.
    pub source: ArcStr,
    /// Verification level.
    #[serde(default)]
    pub confidence: Confidence,
    /// Channels that need consent.
    pub channels: Vec<Channel>,
}

/// A pack as written in its TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFile {
    /// `US`, `US-MA`, `CO` …: a country or an ISO 3166-2 subdivision.
    pub id: ArcStr,
    /// Human name.
    pub name: String,
    /// Zones the territory spans; used when the customer's own zone is unknown.
    pub zones: Vec<String>,
    /// Allowed hours.
    #[serde(default)]
    pub hours: Vec<HoursRule>,
    /// Holidays.
    #[serde(default)]
    pub holidays: Option<HolidaysRule>,
    /// Consent requirements.
    #[serde(default)]
    pub consent: Vec<ConsentRule>,
    /// Rolling caps.
    #[serde(default)]
    pub caps: Vec<CapRule>,
    /// Waits after a conversation.
    #[serde(default)]
    pub conversation_waits: Vec<WaitRule>,
    /// Minimum spacing.
    #[serde(default)]
    pub spacing: Vec<SpacingRule>,
}

/// A pack that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The TOML does not parse or has unknown fields.
    #[error("pack {file}: {source}")]
    Toml {
        /// The file or pack id.
        file: String,
        /// The parser's message.
        source: toml::de::Error,
    },
    /// A value is out of range or unknown.
    #[error("pack {pack}, rule {rule}: {why}")]
    Invalid {
        /// Pack id.
        pack: String,
        /// Rule id.
        rule: String,
        /// What is wrong.
        why: String,
    },
}

/// Minutes since local midnight, `[start, end)`.
pub type MinuteRange = (u16, u16);

/// Allowed hours for one channel: seven weekdays (Monday first) of local minute ranges, or
/// `None` when the pack does not restrict the channel's hours.
pub type WeekHours = Option<[Vec<MinuteRange>; 7]>;

/// A compiled pack, ready for decisions.
#[derive(Debug)]
pub struct Pack {
    /// The file it came from.
    pub file: PackFile,
    /// Candidate zones.
    pub zones: Vec<Tz>,
    /// Allowed hours per channel (index: `channel_index`).
    pub hours: [WeekHours; 3],
    /// Which rule sets the hours of each channel (for explanations).
    pub hours_rule: [Option<RuleRef>; 3],
    /// Sorted holiday dates.
    pub holidays: Vec<NaiveDate>,
    /// Channels closed on holidays.
    pub holiday_channels: ChannelSet,
    /// Channels that need consent, with the rule.
    pub consent: Vec<(ChannelSet, RuleRef)>,
    /// The allowed intervals computed so far, per zone, channel and local date.
    pub day_windows: crate::window::DayWindows,
}

/// Parses `HH:MM` (00:00–24:00) into minutes since midnight.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// Index of a channel in per-channel arrays.
pub fn channel_index(c: Channel) -> usize {
    match c {
        Channel::Sms => 0,
        Channel::Email => 1,
        Channel::Voice => 2,
    }
}

impl Pack {
    /// Parses and compiles a pack from TOML text.
    pub fn from_toml(text: &str, file_name: &str) -> Result<Self, PackError> {
        let file: PackFile = toml::from_str(text).map_err(|source| PackError::Toml {
            file: file_name.to_owned(),
            source,
        })?;
        Self::compile(file)
    }

    /// Compiles a parsed pack.
    pub fn compile(file: PackFile) -> Result<Self, PackError> {
        let invalid = |rule: &str, why: String| PackError::Invalid {
            pack: file.id.to_string(),
            rule: rule.to_owned(),
            why,
        };
        let mut zones = Vec::new();
        for z in &file.zones {
            zones.push(
                z.parse::<Tz>()
                    .map_err(|_| invalid("zones", format!("unknown time zone {z:?}")))?,
            );
        }
        if zones.is_empty() {
            return Err(invalid("zones", "a pack needs at least one zone".into()));
        }
        let mut hours: [WeekHours; 3] = [None, None, None];
        let mut hours_rule: [Option<RuleRef>; 3] = [None, None, None];
        for h in &file.hours {
            let start = parse_hhmm(&h.start)
                .ok_or_else(|| invalid(&h.rule, format!("bad start {:?}", h.start)))?;
            let end = parse_hhmm(&h.end)
                .ok_or_else(|| invalid(&h.rule, format!("bad end {:?}", h.end)))?;
            if start >= end {
                return Err(invalid(&h.rule, "start must be before end".into()));
            }
            let mut days = Vec::new();
            for d in &h.days {
                days.push(
                    parse_weekday(d)
                        .ok_or_else(|| invalid(&h.rule, format!("bad weekday {d:?}")))?,
                );
            }
            for &c in &h.channels {
                let i = channel_index(c);
                let week = hours[i].get_or_insert_with(Default::default);
                for d in &days {
                    week[d.num_days_from_monday() as usize].push((start, end));
                }
                hours_rule[i].get_or_insert_with(|| RuleRef {
                    rule: h.rule.clone(),
                    pack: file.id.clone(),
                    source: h.source.clone(),
                });
            }
        }
        let (holidays, holiday_channels) = match &file.holidays {
            Some(h) => (
                h.calendar
                    .expand()
                    .map_err(|e| invalid(&h.rule, e.to_string()))?,
                ChannelSet::from_slice(&h.channels),
            ),
            None => (Vec::new(), ChannelSet::EMPTY),
        };
        for c in &file.caps {
            if c.window_hours == 0 || c.window_hours > crate::ledger::MAX_WINDOW_HOURS {
                return Err(invalid(
                    &c.rule,
                    format!(
                        "window_hours must be 1..={}",
                        crate::ledger::MAX_WINDOW_HOURS
                    ),
                ));
            }
        }
        for w in &file.conversation_waits {
            if w.hours > crate::ledger::MAX_WINDOW_HOURS {
                return Err(invalid(&w.rule, "wait longer than the ledger keeps".into()));
            }
        }
        let consent = file
            .consent
            .iter()
            .map(|c| {
                (
                    ChannelSet::from_slice(&c.channels),
                    RuleRef {
                        rule: c.rule.clone(),
                        pack: file.id.clone(),
                        source: c.source.clone(),
                    },
                )
            })
            .collect();
        Ok(Pack {
            zones,
            hours,
            hours_rule,
            holidays,
            holiday_channels,
            consent,
            file,
            day_windows: crate::window::DayWindows::default(),
        })
    }

    /// The pack's id.
    pub fn id(&self) -> &str {
        &self.file.id
    }

    /// Whether `date` is a holiday that closes `channel`.
    pub fn is_holiday(&self, channel: Channel, date: NaiveDate) -> bool {
        self.holiday_channels.contains(channel) && self.holidays.binary_search(&date).is_ok()
    }

    /// Allowed local minute ranges for a channel on a weekday; `None` = unrestricted.
    pub fn day_hours(&self, channel: Channel, weekday: Weekday) -> Option<&[MinuteRange]> {
        self.hours[channel_index(channel)]
            .as_ref()
            .map(|w| w[weekday.num_days_from_monday() as usize].as_slice())
    }

    /// A reference to one of this pack's rules.
    pub fn rule_ref(&self, rule: &ArcStr, source: &ArcStr) -> RuleRef {
        RuleRef {
            rule: rule.clone(),
            pack: self.file.id.clone(),
            source: source.clone(),
        }
    }

    /// The holiday rule's reference, if any.
    pub fn holiday_rule(&self) -> Option<RuleRef> {
        self.file
            .holidays
            .as_ref()
            .map(|h| self.rule_ref(&h.rule, &h.source))
    }
}

const BUILTIN: &[(&str, &str)] = &[
    ("us.toml", include_str!("../packs/us.toml")),
    ("us-ma.toml", include_str!("../packs/us-ma.toml")),
    ("us-fl.toml", include_str!("../packs/us-fl.toml")),
    ("co.toml", include_str!("../packs/co.toml")),
    ("mx.toml", include_str!("../packs/mx.toml")),
    ("pe.toml", include_str!("../packs/pe.toml")),
    ("cl.toml", include_str!("../packs/cl.toml")),
    ("ec.toml", include_str!("../packs/ec.toml")),
    ("gt.toml", include_str!("../packs/gt.toml")),
    ("es.toml", include_str!("../packs/es.toml")),
];

/// All packs known to a policy, by id.
#[derive(Clone, Debug)]
pub struct Packs {
    by_id: BTreeMap<String, Arc<Pack>>,
}

impl Packs {
    /// The packs shipped with Tacto.
    pub fn builtin() -> Result<Self, PackError> {
        let mut by_id = BTreeMap::new();
        for (name, text) in BUILTIN {
            let pack = Pack::from_toml(text, name)?;
            by_id.insert(pack.id().to_owned(), Arc::new(pack));
        }
        Ok(Self { by_id })
    }

    /// Adds a pack, replacing a pack with the same id (a tenant's override).
    pub fn insert(&mut self, pack: Pack) {
        self.by_id.insert(pack.id().to_owned(), Arc::new(pack));
    }

    /// A pack by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Pack>> {
        self.by_id.get(id)
    }

    /// Every pack id.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// The packs that govern a jurisdiction: the country's and the subdivision's, if any.
    /// Empty when the country has no pack (then nothing may be sent).
    pub fn for_jurisdiction(&self, j: &Jurisdiction) -> Vec<Arc<Pack>> {
        self.for_place(&j.country, j.subdivision.as_deref())
    }

    /// [`Packs::for_jurisdiction`] from the codes.
    pub fn for_place(&self, country: &str, subdivision: Option<&str>) -> Vec<Arc<Pack>> {
        let Some(country) = self.by_id.get(country) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        out.push(country.clone());
        if let Some(sub) = subdivision.and_then(|s| self.by_id.get(s)) {
            out.push(sub.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_pack_loads_and_cites_its_sources() {
        let packs = Packs::builtin().expect("builtin packs load");
        let ids: Vec<_> = packs.ids().collect();
        for want in [
            "US", "US-MA", "US-FL", "CO", "MX", "PE", "CL", "EC", "GT", "ES",
        ] {
            assert!(ids.contains(&want), "missing pack {want}");
        }
        for id in ids {
            let p = packs.get(id).expect("listed");
            for h in &p.file.hours {
                assert!(!h.source.is_empty(), "{id}/{} has no source", h.rule);
            }
            for c in &p.file.caps {
                assert!(!c.source.is_empty(), "{id}/{} has no source", c.rule);
            }
        }
    }

    #[test]
    fn hhmm_parsing() {
        assert_eq!(parse_hhmm("08:00"), Some(480));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("24:01"), None);
        assert_eq!(parse_hhmm("8"), None);
        assert_eq!(parse_hhmm("07:60"), None);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Pack::from_toml(
            r#"id = "X"
name = "x"
zones = ["UTC"]
[[caps]]
rule = "x"
source = "x"
channels = ["voice"]
max = 1
window_hours = 24
maximum = 3
"#,
            "x.toml",
        )
        .expect_err("typo must be rejected");
        assert!(err.to_string().contains("maximum"), "{err}");
    }
}
