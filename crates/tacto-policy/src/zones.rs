//! Which time zones a customer may be in, from every signal we have.
//!
//! The allowed window is the intersection over all candidate zones: the address zone, the
//! declared zone and the contact point's own zone (or its area code's). With no signal at all,
//! every zone of the jurisdiction counts.

use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(Deserialize)]
struct AreaCodeFile {
    codes: BTreeMap<String, Vec<String>>,
}

fn area_codes() -> &'static BTreeMap<String, Vec<Tz>> {
    static CODES: OnceLock<BTreeMap<String, Vec<Tz>>> = OnceLock::new();
    CODES.get_or_init(|| {
        let file: AreaCodeFile = toml::from_str(include_str!("../packs/nanp_area_codes.toml"))
            .unwrap_or_else(|e| panic!("packs/nanp_area_codes.toml is invalid: {e}"));
        file.codes
            .into_iter()
            .map(|(code, zones)| {
                let zones = zones
                    .iter()
                    .map(|z| {
                        z.parse::<Tz>()
                            .unwrap_or_else(|_| panic!("area code {code}: unknown zone {z}"))
                    })
                    .collect();
                (code, zones)
            })
            .collect()
    })
}

/// Zones of a North American (+1) number's area code, if the number is one and the code is known.
pub fn zones_for_phone(e164: &str) -> Option<&'static [Tz]> {
    let rest = e164.strip_prefix("+1")?;
    let code = rest.get(..3)?;
    area_codes().get(code).map(Vec::as_slice)
}

/// Parses an IANA zone name.
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.parse().ok()
}

/// The zones to honour for one contact point (its own zones: explicit or from its area code).
/// `uncertain` is set when the jurisdiction's zones
/// had to stand in for a missing signal.
pub fn candidate_zones(
    address_zone: Option<Tz>,
    declared_zone: Option<Tz>,
    point_zones: &[Option<Tz>],
    jurisdiction_zones: &[Tz],
) -> (Vec<Tz>, bool) {
    let mut zones: Vec<Tz> = Vec::with_capacity(3);
    let mut push = |z: Tz| {
        if !zones.contains(&z) {
            zones.push(z);
        }
    };
    address_zone.into_iter().for_each(&mut push);
    declared_zone.into_iter().for_each(&mut push);
    point_zones.iter().flatten().copied().for_each(&mut push);
    if zones.is_empty() {
        (jurisdiction_zones.to_vec(), true)
    } else {
        (zones, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America;

    #[test]
    fn area_code_table_loads_and_splits_the_panhandle() {
        assert_eq!(
            zones_for_phone("+16175550100"),
            Some(&[America::New_York][..])
        );
        assert_eq!(
            zones_for_phone("+18505550100"),
            Some(&[America::New_York, America::Chicago][..])
        );
        assert_eq!(zones_for_phone("+5715550100"), None);
    }

    #[test]
    fn every_signal_counts_and_unknown_uses_the_jurisdiction() {
        let phone: Vec<Option<Tz>> = zones_for_phone("+13105550100")
            .unwrap_or_default()
            .iter()
            .copied()
            .map(Some)
            .collect();
        let (z, uncertain) = candidate_zones(Some(America::New_York), None, &phone, &[]);
        assert_eq!(z, vec![America::New_York, America::Los_Angeles]);
        assert!(!uncertain);
        let (z, uncertain) =
            candidate_zones(None, None, &[None, None], &[America::Bogota, America::Lima]);
        assert_eq!(z, vec![America::Bogota, America::Lima]);
        assert!(uncertain);
    }
}
