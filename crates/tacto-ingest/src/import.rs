//! CSV imports: one account per row, turned into `account_upserted` events. Valid rows are
//! accepted (idempotently: the same row imported twice is a duplicate); each invalid row is
//! reported with its number, field and reason and writes nothing.
//!
//! Columns (header row required; order free; optional columns may be absent or empty):
//! `account_id, person_id, currency, debt_id, balance_minor, due_date, country` (required),
//! `subdivision, product, risk_score, customer_value, address_zone, language, phone,
//! phone_consent, email, email_consent, birth_date, document_last_digits` (optional). `*_consent`
//! is `true`/`false`/`yes`/`no`/`1`/`0`. `birth_date` (`YYYY-MM-DD`) and `document_last_digits`
//! are the answers the self-service page's identity check accepts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tacto_model::*;

/// One CSV row.
#[derive(Debug, Deserialize)]
struct Row {
    account_id: String,
    person_id: String,
    currency: String,
    debt_id: String,
    balance_minor: i64,
    due_date: Date,
    country: String,
    #[serde(default)]
    subdivision: Option<String>,
    #[serde(default)]
    product: Option<String>,
    #[serde(default)]
    risk_score: Option<i32>,
    #[serde(default)]
    customer_value: Option<i32>,
    #[serde(default)]
    address_zone: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    phone_consent: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_consent: Option<String>,
    #[serde(default)]
    birth_date: Option<Date>,
    #[serde(default)]
    document_last_digits: Option<String>,
}

/// A row that was not imported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowError {
    /// 1-based data row number (the header is row 0).
    pub row: usize,
    /// The column or field.
    pub field: String,
    /// Why.
    pub message: String,
}

fn yes(v: &Option<String>, row: usize, field: &str) -> Result<bool, RowError> {
    match v.as_deref().map(str::trim).unwrap_or("") {
        "" | "false" | "no" | "0" | "n" => Ok(false),
        "true" | "yes" | "1" | "y" => Ok(true),
        other => Err(RowError {
            row,
            field: field.into(),
            message: format!("{other:?} is not true/false"),
        }),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Parses a CSV body into account events (dated `now`), and the rows that failed.
pub fn parse_csv(body: &[u8], now: Timestamp) -> (Vec<(usize, Event)>, Vec<RowError>) {
    // Sized for every line up front: grown row by row, a 50,000-row import's vector was
    // copied into fresh pages at every doubling (5% of a load's CPU: BENCHMARKS.md).
    let mut ok = Vec::with_capacity(body.iter().filter(|&&b| b == b'\n').count());
    let mut errors = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    for (i, rec) in reader.deserialize::<Row>().enumerate() {
        let row = i + 1;
        let r = match rec {
            Ok(r) => r,
            Err(e) => {
                let field = match e.kind() {
                    csv::ErrorKind::Deserialize { err, .. } => err
                        .field()
                        .map(|f| format!("column {}", f + 1))
                        .unwrap_or_else(|| "row".into()),
                    _ => "row".into(),
                };
                errors.push(RowError {
                    row,
                    field,
                    message: e.to_string(),
                });
                continue;
            }
        };
        match to_event(r, row, now) {
            Ok(e) => match tacto_model::validate::validate_input(&e) {
                Ok(()) => ok.push((row, e)),
                Err(f) => errors.push(RowError {
                    row,
                    field: f.field,
                    message: f.message,
                }),
            },
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

fn identity(
    birth_date: Option<Date>,
    document_last_digits: Option<String>,
) -> Option<IdentityAnswers> {
    (birth_date.is_some() || document_last_digits.is_some()).then_some(IdentityAnswers {
        birth_date,
        document_last_digits,
    })
}

fn to_event(r: Row, row: usize, now: Timestamp) -> Result<Event, RowError> {
    let mut points = Vec::new();
    if let Some(phone) = non_empty(r.phone) {
        let consent = yes(&r.phone_consent, row, "phone_consent")?;
        for (channel, pref) in [(Channel::Sms, 1), (Channel::Voice, 2)] {
            points.push(ContactPoint {
                id: "phone".into(),
                channel,
                address: phone.clone(),
                zone: None,
                consent,
                preference: pref,
            });
        }
    }
    if let Some(email) = non_empty(r.email) {
        points.push(ContactPoint {
            id: "email".into(),
            channel: Channel::Email,
            address: email,
            zone: None,
            consent: yes(&r.email_consent, row, "email_consent")?,
            preference: 3,
        });
    }
    let data = AccountData {
        person_id: PersonId(r.person_id.into()),
        currency: r.currency,
        debts: vec![Debt {
            debt_id: DebtId(r.debt_id.into()),
            balance_minor: r.balance_minor,
            due_date: r.due_date,
        }],
        product: non_empty(r.product).unwrap_or_default(),
        risk_score: r.risk_score,
        customer_value: r.customer_value,
        attributes: BTreeMap::new(),
        jurisdiction: Jurisdiction {
            country: r.country,
            subdivision: non_empty(r.subdivision),
        },
        address_zone: non_empty(r.address_zone),
        declared_zone: None,
        contact_points: points,
        language: non_empty(r.language).unwrap_or_default(),
        identity: identity(r.birth_date, non_empty(r.document_last_digits)),
    };
    let body = EventBody::AccountUpserted(Box::new(data));
    // The same row imported twice is the same fact. Hashed in postcard's compact encoding: a
    // digest of the JSON cost 4% of the pipeline's CPU during a load (BENCHMARKS.md).
    let digest = postcard::to_allocvec(&body)
        .map(|b| xxhash_rust::xxh3::xxh3_64(&b))
        .unwrap_or(0);
    Ok(Event {
        id: EventId(format!("{}:import:{digest:016x}", r.account_id).into()),
        occurred_at: now,
        account_id: AccountId(r.account_id.into()),
        source: "import".into(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_rows_become_events_and_bad_rows_are_reported() {
        let csv = "account_id,person_id,currency,debt_id,balance_minor,due_date,country,subdivision,phone,phone_consent\n\
                   A1,P1,USD,D1,5000,2026-10-01,US,US-NY,+12125550100,yes\n\
                   A2,P2,USD,D2,abc,2026-10-01,US,,+12125550101,yes\n\
                   A3,P3,usd,D3,100,2026-10-01,US,,,\n\
                   A4,P4,USD,D4,100,2026-10-01,US,,+12125550102,maybe\n";
        let now = Timestamp::from_micros(0);
        let (ok, errors) = parse_csv(csv.as_bytes(), now);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].0, 1);
        let rows: Vec<usize> = errors.iter().map(|e| e.row).collect();
        assert_eq!(rows, vec![2, 3, 4], "{errors:?}");
        assert_eq!(errors[1].field, "body.account_upserted.currency");
        assert_eq!(errors[2].field, "phone_consent");
        // The same row twice: the same event id.
        let (again, _) = parse_csv(csv.as_bytes(), now);
        assert_eq!(again[0].1.id, ok[0].1.id);
    }

    #[test]
    fn a_row_that_changed_is_a_new_fact() {
        let header = "account_id,person_id,currency,debt_id,balance_minor,due_date,country,phone,phone_consent,birth_date\n";
        let now = Timestamp::from_micros(0);
        let id = |row: &str| {
            let (ok, errors) = parse_csv(format!("{header}{row}\n").as_bytes(), now);
            assert!(errors.is_empty(), "{errors:?}");
            ok[0].1.id.0.clone()
        };
        let first = id("A1,P1,USD,D1,5000,2026-10-01,US,+12125550100,yes,1980-02-03");
        assert_eq!(
            first,
            id("A1,P1,USD,D1,5000,2026-10-01,US,+12125550100,yes,1980-02-03")
        );
        for changed in [
            "A1,P1,USD,D1,4000,2026-10-01,US,+12125550100,yes,1980-02-03",
            "A1,P1,USD,D1,5000,2026-11-01,US,+12125550100,yes,1980-02-03",
            "A1,P1,USD,D1,5000,2026-10-01,US,+12125550199,yes,1980-02-03",
            "A1,P1,USD,D1,5000,2026-10-01,US,+12125550100,no,1980-02-03",
            "A1,P1,USD,D1,5000,2026-10-01,US,+12125550100,yes,1980-02-04",
        ] {
            assert_ne!(first, id(changed), "{changed}");
        }
    }
}
