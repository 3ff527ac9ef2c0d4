//! Field-level validation of input events: what the HTTP API, imports and `tacto simulate`
//! refuse, with the path of the offending field.

use crate::event::*;

/// A field that is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `body.payment_received.amount_minor`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

const MAX_ID: usize = 200;

fn id(field: impl Fn() -> String, v: &str) -> Result<(), FieldError> {
    if v.trim().is_empty() {
        return Err(err(field(), "must not be empty"));
    }
    if v.len() > MAX_ID {
        return Err(err(field(), format!("at most {MAX_ID} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(err(field(), "must not contain control characters"));
    }
    Ok(())
}

fn positive(field: impl Fn() -> String, v: i64) -> Result<(), FieldError> {
    if v <= 0 {
        return Err(err(field(), "must be a positive amount in minor units"));
    }
    Ok(())
}

fn currency(field: impl Fn() -> String, v: &str) -> Result<(), FieldError> {
    if v.len() != 3 || !v.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(err(field(), "must be an ISO 4217 code such as USD"));
    }
    Ok(())
}

fn zone(field: impl Fn() -> String, v: &Option<String>) -> Result<(), FieldError> {
    if let Some(z) = v
        && z.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(err(field(), format!("unknown IANA time zone {z:?}")));
    }
    Ok(())
}

fn hhmm(field: impl Fn() -> String, v: &str) -> Result<u16, FieldError> {
    let bad = || err(field(), "must be HH:MM between 00:00 and 24:00");
    let (h, m) = v.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m > 0) || v.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn phone(field: impl Fn() -> String, v: &str) -> Result<(), FieldError> {
    let digits = v.strip_prefix('+').unwrap_or("");
    if !(7..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(err(field(), "must be an E.164 number such as +12125550100"));
    }
    Ok(())
}

fn email(field: impl Fn() -> String, v: &str) -> Result<(), FieldError> {
    match v.split_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') && v.len() <= 254 => {
            Ok(())
        }
        _ => Err(err(field(), "must be an email address")),
    }
}

/// The most instalments a payment plan may have.
pub const MAX_INSTALMENTS: usize = 60;

/// Validates an input event; decisions are refused (only Tacto makes them).
pub fn validate_input(e: &Event) -> Result<(), FieldError> {
    id(|| "id".into(), e.id.as_str())?;
    id(|| "account_id".into(), e.account_id.as_str())?;
    if e.is_decision() {
        return Err(err(
            "body",
            format!("{} is a decision; only Tacto emits it", e.body.type_name()),
        ));
    }
    // Field paths are formatted only when an error names one: this runs for every event.
    let f = |name: &str| format!("body.{}.{name}", e.body.type_name());
    match &e.body {
        EventBody::AccountUpserted(d) => {
            id(|| f("person_id"), d.person_id.as_str())?;
            currency(|| f("currency"), &d.currency)?;
            if d.debts.is_empty() {
                return Err(err(f("debts"), "at least one debt"));
            }
            for (i, debt) in d.debts.iter().enumerate() {
                id(|| f(&format!("debts[{i}].debt_id")), debt.debt_id.as_str())?;
                if debt.balance_minor < 0 {
                    return Err(err(
                        f(&format!("debts[{i}].balance_minor")),
                        "must not be negative",
                    ));
                }
            }
            let j = &d.jurisdiction;
            if j.country.len() != 2 || !j.country.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(err(
                    f("jurisdiction.country"),
                    "must be an ISO 3166-1 alpha-2 code such as US",
                ));
            }
            if let Some(s) = &j.subdivision
                && !s
                    .strip_prefix(j.country.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            {
                return Err(err(
                    f("jurisdiction.subdivision"),
                    "must be an ISO 3166-2 code of the country, such as US-NY",
                ));
            }
            zone(|| f("address_zone"), &d.address_zone)?;
            zone(|| f("declared_zone"), &d.declared_zone)?;
            for (i, p) in d.contact_points.iter().enumerate() {
                let pf = |name: &str| f(&format!("contact_points[{i}].{name}"));
                id(|| pf("id"), &p.id)?;
                zone(|| pf("zone"), &p.zone)?;
                match p.channel {
                    Channel::Sms | Channel::Voice => phone(|| pf("address"), &p.address)?,
                    Channel::Email => email(|| pf("address"), &p.address)?,
                }
            }
            if let Some(digits) = d
                .identity
                .as_ref()
                .and_then(|i| i.document_last_digits.as_deref())
                && (!(2..=8).contains(&digits.len())
                    || !digits.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(err(
                    f("identity.document_last_digits"),
                    "2 to 8 letters or digits",
                ));
            }
        }
        EventBody::PaymentReceived {
            payment_id,
            amount_minor,
            currency: c,
            ..
        } => {
            id(|| f("payment_id"), payment_id)?;
            positive(|| f("amount_minor"), *amount_minor)?;
            currency(|| f("currency"), c)?;
        }
        EventBody::PromiseMade {
            promise_id,
            amount_minor,
            ..
        } => {
            id(|| f("promise_id"), promise_id)?;
            positive(|| f("amount_minor"), *amount_minor)?;
        }
        EventBody::PromiseCancelled { promise_id } => id(|| f("promise_id"), promise_id)?,
        EventBody::PlanMade {
            plan_id,
            instalments,
            ..
        } => {
            id(|| f("plan_id"), plan_id)?;
            if instalments.is_empty() || instalments.len() > MAX_INSTALMENTS {
                return Err(err(
                    f("instalments"),
                    format!("1 to {MAX_INSTALMENTS} instalments"),
                ));
            }
            for (i, x) in instalments.iter().enumerate() {
                positive(
                    || f(&format!("instalments[{i}].amount_minor")),
                    x.amount_minor,
                )?;
                if i > 0 && x.due_date <= instalments[i - 1].due_date {
                    return Err(err(
                        f(&format!("instalments[{i}].due_date")),
                        "instalments must be in date order, one per day at most",
                    ));
                }
            }
        }
        EventBody::DisputeOpened { dispute_id, .. }
        | EventBody::DisputeResolved { dispute_id, .. } => id(|| f("dispute_id"), dispute_id)?,
        EventBody::InconvenientTimesDeclared { ranges } => {
            for (i, r) in ranges.iter().enumerate() {
                let s = hhmm(|| f(&format!("ranges[{i}].start")), &r.start)?;
                let en = hhmm(|| f(&format!("ranges[{i}].end")), &r.end)?;
                if s >= en {
                    return Err(err(f(&format!("ranges[{i}]")), "start must be before end"));
                }
                if r.weekdays.iter().any(|d| !(1..=7).contains(d)) {
                    return Err(err(
                        f(&format!("ranges[{i}].weekdays")),
                        "ISO weekdays 1 (Monday) to 7 (Sunday)",
                    ));
                }
            }
        }
        EventBody::ContactOutcome {
            job_id, inbound, ..
        } => match job_id {
            Some(j) => id(|| f("job_id"), j.as_str())?,
            None if !inbound => {
                return Err(err(f("job_id"), "required unless the contact was inbound"));
            }
            None => {}
        },
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::sample_events;

    #[test]
    fn every_sample_input_is_valid() {
        for e in sample_events().iter().filter(|e| !e.is_decision()) {
            assert_eq!(validate_input(e), Ok(()), "{}", e.body.type_name());
        }
    }

    #[test]
    fn errors_name_the_field() {
        let mut e = sample_events()
            .into_iter()
            .find(|e| e.body.type_name() == "payment_received")
            .expect("sample payment");
        if let EventBody::PaymentReceived { amount_minor, .. } = &mut e.body {
            *amount_minor = 0;
        }
        let err = validate_input(&e).expect_err("zero is not a payment");
        assert_eq!(err.field, "body.payment_received.amount_minor");
    }

    #[test]
    fn bad_zones_phones_and_decisions_are_refused() {
        let mut open = crate::samples::sample_account("A");
        if let EventBody::AccountUpserted(d) = &mut open.body {
            d.address_zone = Some("Mars/Olympus".into());
        }
        assert!(
            validate_input(&open)
                .expect_err("zone")
                .field
                .ends_with("address_zone")
        );
        let mut open = crate::samples::sample_account("A");
        if let EventBody::AccountUpserted(d) = &mut open.body {
            d.contact_points[0].address = "555-0100".into();
        }
        assert!(
            validate_input(&open)
                .expect_err("phone")
                .field
                .contains("contact_points[0].address")
        );
        let decision = sample_events()
            .into_iter()
            .find(|e| e.is_decision())
            .expect("a decision");
        assert_eq!(
            validate_input(&decision).expect_err("decision").field,
            "body"
        );
    }

    #[test]
    fn a_subdivision_must_be_of_the_country() {
        let with = |sub: &str| {
            let mut open = crate::samples::sample_account("A");
            if let EventBody::AccountUpserted(d) = &mut open.body {
                d.jurisdiction.country = "US".into();
                d.jurisdiction.subdivision = Some(sub.into());
            }
            validate_input(&open).map_err(|e| e.field)
        };
        assert_eq!(with("US-NY"), Ok(()));
        for bad in ["CA-ON", "USNY", "US", "-NY"] {
            assert_eq!(
                with(bad),
                Err("body.account_upserted.jurisdiction.subdivision".into()),
                "{bad}"
            );
        }
    }
}
