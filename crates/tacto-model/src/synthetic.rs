//! A deterministic synthetic portfolio: accounts across jurisdictions and a month of customer
//! behaviour (payments, promises, disputes, opt-outs, notices). Used by `tacto demo`, the
//! simulator's tests and the benchmarks. Every value derives from a seed by hashing, so the same
//! seed always gives the same portfolio, on every machine.

use crate::event::*;
use crate::ids::*;
use crate::time::{Date, Timestamp};
use chrono::TimeDelta;
use std::collections::BTreeMap;

/// A place: jurisdiction, zone, phone prefix, currency, language.
struct Place {
    country: &'static str,
    subdivision: Option<&'static str>,
    zone: &'static str,
    phone: &'static str,
    currency: &'static str,
    language: &'static str,
}

const PLACES: &[Place] = &[
    Place {
        country: "US",
        subdivision: Some("US-NY"),
        zone: "America/New_York",
        phone: "+1212555",
        currency: "USD",
        language: "en",
    },
    Place {
        country: "US",
        subdivision: Some("US-FL"),
        zone: "America/New_York",
        phone: "+1305555",
        currency: "USD",
        language: "en",
    },
    Place {
        country: "US",
        subdivision: Some("US-MA"),
        zone: "America/New_York",
        phone: "+1617555",
        currency: "USD",
        language: "en",
    },
    Place {
        country: "US",
        subdivision: Some("US-CA"),
        zone: "America/Los_Angeles",
        phone: "+1310555",
        currency: "USD",
        language: "en",
    },
    Place {
        country: "US",
        subdivision: Some("US-AZ"),
        zone: "America/Phoenix",
        phone: "+1602555",
        currency: "USD",
        language: "es",
    },
    Place {
        country: "CO",
        subdivision: None,
        zone: "America/Bogota",
        phone: "+57300555",
        currency: "COP",
        language: "es",
    },
    Place {
        country: "MX",
        subdivision: None,
        zone: "America/Mexico_City",
        phone: "+52155555",
        currency: "MXN",
        language: "es",
    },
    Place {
        country: "PE",
        subdivision: None,
        zone: "America/Lima",
        phone: "+51955555",
        currency: "PEN",
        language: "es",
    },
    Place {
        country: "CL",
        subdivision: None,
        zone: "America/Santiago",
        phone: "+56955555",
        currency: "CLP",
        language: "es",
    },
    Place {
        country: "EC",
        subdivision: None,
        zone: "America/Guayaquil",
        phone: "+59399555",
        currency: "USD",
        language: "es",
    },
    Place {
        country: "GT",
        subdivision: None,
        zone: "America/Guatemala",
        phone: "+50255555",
        currency: "GTQ",
        language: "es",
    },
    Place {
        country: "ES",
        subdivision: None,
        zone: "Europe/Madrid",
        phone: "+34655555",
        currency: "EUR",
        language: "es",
    },
];

/// Deterministic pseudo-random numbers from (seed, account, purpose).
fn roll(seed: u64, account: u64, purpose: u64) -> u64 {
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&account.to_le_bytes());
    bytes[16..].copy_from_slice(&purpose.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

fn pick(seed: u64, account: u64, purpose: u64, n: u64) -> u64 {
    roll(seed, account, purpose) % n.max(1)
}

/// The id of synthetic account `i`.
pub fn account_id(i: u64) -> AccountId {
    AccountId(format!("acct-{i:07}").into())
}

/// The upsert that opens synthetic account `i`, `days_past_due` days late at `at`.
pub fn account(seed: u64, i: u64, at: Timestamp) -> Event {
    let place = &PLACES[pick(seed, i, 1, PLACES.len() as u64) as usize];
    let dpd = 1 + pick(seed, i, 2, 90) as i64;
    let due = at.to_datetime().date_naive() - TimeDelta::days(dpd);
    // Balances from 20.00 to 2,000.00, skewed small.
    let r = pick(seed, i, 3, 1000) as i64;
    let balance = 2_000 + r * r / 5;
    let phone = format!("{}{:04}", place.phone, i % 10_000);
    let consent = pick(seed, i, 4, 10) < 8;
    let mut points = vec![
        ContactPoint {
            id: "mobile".into(),
            channel: Channel::Sms,
            address: phone.clone(),
            zone: None,
            consent,
            preference: 1,
        },
        ContactPoint {
            id: "mobile".into(),
            channel: Channel::Voice,
            address: phone,
            zone: None,
            consent,
            preference: 2,
        },
    ];
    if pick(seed, i, 5, 10) < 7 {
        points.push(ContactPoint {
            id: "email".into(),
            channel: Channel::Email,
            address: format!("customer{i}@example.com"),
            zone: None,
            consent: true,
            preference: 3,
        });
    }
    Event {
        id: EventId(format!("{}-open", account_id(i)).into()),
        occurred_at: at,
        account_id: account_id(i),
        source: "synthetic".into(),
        body: EventBody::AccountUpserted(Box::new(AccountData {
            person_id: PersonId(format!("person-{i:07}").into()),
            currency: place.currency.into(),
            debts: vec![Debt {
                debt_id: DebtId(format!("debt-{i:07}").into()),
                balance_minor: balance,
                due_date: Date::new(due),
            }],
            product: ["card", "loan", "utility"][pick(seed, i, 6, 3) as usize].into(),
            risk_score: Some(300 + pick(seed, i, 7, 550) as i32),
            customer_value: Some(pick(seed, i, 8, 5) as i32),
            attributes: BTreeMap::new(),
            jurisdiction: Jurisdiction {
                country: place.country.into(),
                subdivision: place.subdivision.map(Into::into),
            },
            address_zone: if pick(seed, i, 9, 10) < 9 {
                Some(place.zone.into())
            } else {
                None
            },
            declared_zone: None,
            contact_points: points,
            language: place.language.into(),
            identity: None,
        })),
    }
}

/// What synthetic account `i` does during `days` days from `start` (sorted by time).
///
/// About 20% pay in full, 15% pay part, 25% promise (two thirds of them keep it), 3% dispute,
/// 6% opt out of SMS, 1% ask to cease, 1% notify bankruptcy.
pub fn behaviour(
    seed: u64,
    i: u64,
    start: Timestamp,
    days: u32,
    balance_minor: i64,
    currency: &str,
) -> Vec<Event> {
    let minutes = i64::from(days) * 24 * 60;
    let at = |purpose: u64| {
        start.plus(TimeDelta::minutes(
            pick(seed, i, purpose, minutes as u64) as i64
        ))
    };
    let id = |kind: &str| EventId(format!("{}-{kind}", account_id(i)).into());
    let mk = |kind: &str, t: Timestamp, body: EventBody| Event {
        id: id(kind),
        occurred_at: t,
        account_id: account_id(i),
        source: "synthetic".into(),
        body,
    };
    let pay = |kind: &str, t: Timestamp, amount: i64| {
        mk(
            kind,
            t,
            EventBody::PaymentReceived {
                payment_id: format!("{}-{kind}", account_id(i)),
                debt_id: None,
                amount_minor: amount,
                currency: currency.into(),
                method: "bank_transfer".into(),
            },
        )
    };
    let mut out = Vec::new();
    let r = pick(seed, i, 20, 100);
    match r {
        0..20 => out.push(pay("pay-full", at(21), balance_minor)),
        20..35 => out.push(pay("pay-part", at(22), balance_minor / 3)),
        35..60 => {
            let t = at(23);
            let due =
                t.to_datetime().date_naive() + TimeDelta::days(2 + pick(seed, i, 24, 8) as i64);
            let amount = balance_minor / 2;
            out.push(mk(
                "promise",
                t,
                EventBody::PromiseMade {
                    promise_id: format!("{}-promise", account_id(i)),
                    amount_minor: amount,
                    due_date: Date::new(due),
                    promise_source: [
                        PromiseSource::Agent,
                        PromiseSource::SelfService,
                        PromiseSource::Dialer,
                    ][pick(seed, i, 25, 3) as usize],
                },
            ));
            if pick(seed, i, 26, 3) < 2 {
                let paid_at = t.plus(TimeDelta::hours(1 + pick(seed, i, 27, 24 * 6) as i64));
                out.push(pay("promise-pay", paid_at, amount));
            }
        }
        60..63 => out.push(mk(
            "dispute",
            at(28),
            EventBody::DisputeOpened {
                dispute_id: format!("{}-dispute", account_id(i)),
                reason: [
                    DisputeReason::AlreadyPaid,
                    DisputeReason::ServiceFailure,
                    DisputeReason::Fraud,
                ][pick(seed, i, 29, 3) as usize],
                note: String::new(),
            },
        )),
        63..69 => out.push(mk(
            "stop",
            at(30),
            EventBody::OptedOut {
                channel: Some(Channel::Sms),
                via: "sms_stop".into(),
            },
        )),
        69..70 => out.push(mk("cease", at(31), EventBody::CeaseCommunication {})),
        70..71 => out.push(mk("bankruptcy", at(32), EventBody::BankruptcyNotified {})),
        _ => {}
    }
    out.sort_by_key(|e| e.occurred_at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_portfolio() {
        let t = Timestamp::parse("2026-11-01T00:00:00Z").expect("time");
        assert_eq!(account(7, 42, t), account(7, 42, t));
        assert_ne!(account(7, 42, t), account(8, 42, t));
        assert_eq!(
            behaviour(7, 42, t, 30, 1000, "USD"),
            behaviour(7, 42, t, 30, 1000, "USD")
        );
    }

    #[test]
    fn portfolios_cover_every_place() {
        let t = Timestamp::parse("2026-11-01T00:00:00Z").expect("time");
        let mut countries = std::collections::BTreeSet::new();
        for i in 0..500 {
            if let EventBody::AccountUpserted(d) = account(1, i, t).body {
                countries.insert(d.jurisdiction.country);
            }
        }
        assert_eq!(countries.len(), 8, "{countries:?}");
    }
}
