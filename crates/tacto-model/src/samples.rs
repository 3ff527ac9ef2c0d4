//! Example events of every kind, for documentation, tests and benchmarks.

use crate::event::*;
use crate::ids::*;
use crate::time::{Date, Timestamp};
use std::collections::BTreeMap;

fn at(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap_or(Timestamp::from_micros(0))
}

fn date(y: i32, m: u32, d: u32) -> Date {
    Date::from_ymd(y, m, d).unwrap_or(Date::new(chrono::NaiveDate::MIN))
}

/// A typical US account: one debt, a mobile (SMS and voice) and an email.
pub fn sample_account(account: &str) -> Event {
    Event {
        id: EventId(format!("{account}-open").into()),
        occurred_at: at("2026-11-02T09:00:00Z"),
        account_id: AccountId(account.into()),
        source: "api".into(),
        body: EventBody::AccountUpserted(Box::new(AccountData {
            person_id: PersonId(format!("p-{account}").into()),
            currency: "USD".into(),
            debts: vec![Debt {
                debt_id: DebtId(format!("{account}-d1").into()),
                balance_minor: 45_000,
                due_date: date(2026, 10, 20),
            }],
            product: "card".into(),
            risk_score: Some(620),
            customer_value: Some(3),
            attributes: BTreeMap::from([("branch".to_owned(), "north".to_owned())]),
            jurisdiction: Jurisdiction {
                country: "US".into(),
                subdivision: Some("US-NY".into()),
            },
            address_zone: Some("America/New_York".into()),
            declared_zone: None,
            contact_points: vec![
                ContactPoint {
                    id: "mobile".into(),
                    channel: Channel::Sms,
                    address: "+12125550100".into(),
                    zone: None,
                    consent: true,
                    preference: 1,
                },
                ContactPoint {
                    id: "mobile".into(),
                    channel: Channel::Voice,
                    address: "+12125550100".into(),
                    zone: None,
                    consent: true,
                    preference: 2,
                },
                ContactPoint {
                    id: "email".into(),
                    channel: Channel::Email,
                    address: "someone@example.com".into(),
                    zone: None,
                    consent: true,
                    preference: 3,
                },
            ],
            language: "en".into(),
            identity: Some(IdentityAnswers {
                birth_date: Some(date(1984, 5, 17)),
                document_last_digits: Some("4321".into()),
            }),
        })),
    }
}

fn decision() -> DecisionRecord {
    DecisionRecord {
        policy_version: "sample-1".into(),
        reasons: vec![Reason {
            code: ReasonCode::QuietHours,
            rule: "us.hours".into(),
            pack: "US".into(),
            source: "12 CFR 1006.6(b)(1)(i)".into(),
            detail: "before 08:00 local".into(),
        }],
    }
}

/// One event of every kind, in schema order, all for account `A-1`.
pub fn sample_events() -> Vec<Event> {
    let bodies = vec![
        EventBody::PaymentReceived {
            payment_id: "pay-1".into(),
            debt_id: Some(DebtId("A-1-d1".into())),
            amount_minor: 10_000,
            currency: "USD".into(),
            method: "card".into(),
        },
        EventBody::PromiseMade {
            promise_id: "pr-1".into(),
            amount_minor: 35_000,
            due_date: date(2026, 11, 30),
            promise_source: PromiseSource::SelfService,
        },
        EventBody::PromiseCancelled {
            promise_id: "pr-1".into(),
        },
        EventBody::DisputeOpened {
            dispute_id: "dis-1".into(),
            reason: DisputeReason::AlreadyPaid,
            note: "paid at the branch".into(),
        },
        EventBody::DisputeResolved {
            dispute_id: "dis-1".into(),
            collection_may_resume: true,
        },
        EventBody::OptedOut {
            channel: Some(Channel::Sms),
            via: "sms_stop".into(),
        },
        EventBody::CeaseCommunication {},
        EventBody::BankruptcyNotified {},
        EventBody::DeceasedNotified {},
        EventBody::AttorneyRepresented {
            attorney: "Doe & Roe LLP".into(),
        },
        EventBody::InconvenientTimesDeclared {
            ranges: vec![LocalTimeRange {
                start: "09:00".into(),
                end: "17:00".into(),
                weekdays: vec![1, 2, 3, 4, 5],
            }],
        },
        EventBody::CallConsentGiven {},
        EventBody::ContactOutcome {
            job_id: Some(JobId("A-1:c0:d0.0:a0".into())),
            channel: Channel::Voice,
            status: OutcomeStatus::RightPartyContact,
            conversation: true,
            inbound: false,
        },
        EventBody::ContactScheduled(Box::new(ContactJob {
            job_id: JobId("A-1:c0:d0.0:a0".into()),
            step: "day-0-sms".into(),
            channel: Channel::Sms,
            contact_point_id: "mobile".into(),
            template: "reminder".into(),
            language: "en".into(),
            not_before: at("2026-11-23T13:00:00Z"),
            not_after: at("2026-11-24T02:00:00Z"),
            balance_minor: 45_000,
            currency: "USD".into(),
            decision: decision(),
            due_date: Some(date(2026, 10, 15)),
        })),
        EventBody::ContactDeferred {
            job_id: JobId("A-1:c0:d0.0:a1".into()),
            step: "day-0-sms".into(),
            until: at("2026-11-23T13:07:00Z"),
            decision: decision(),
        },
        EventBody::ContactSuppressed {
            job_id: JobId("A-1:c0:d3.0:a0".into()),
            step: "day-3-voice".into(),
            decision: decision(),
        },
        EventBody::JobsRecalled {
            job_ids: vec![JobId("A-1:c0:d0.0:a0".into())],
            decision: decision(),
        },
        EventBody::TaskCreated {
            task_id: "A-1:task:dis-1".into(),
            dispute_id: "dis-1".into(),
            reason: DisputeReason::AlreadyPaid,
            decision: decision(),
        },
        EventBody::PromiseKept {
            promise_id: "pr-1".into(),
            decision: decision(),
        },
        EventBody::PromiseBroken {
            promise_id: "pr-1".into(),
            decision: decision(),
        },
        EventBody::PlanMade {
            plan_id: "plan-1".into(),
            instalments: vec![
                Instalment {
                    due_date: date(2026, 12, 5),
                    amount_minor: 15_000,
                },
                Instalment {
                    due_date: date(2027, 1, 5),
                    amount_minor: 15_000,
                },
                Instalment {
                    due_date: date(2027, 2, 5),
                    amount_minor: 15_000,
                },
            ],
            promise_source: PromiseSource::SelfService,
        },
    ];
    let mut events = vec![sample_account("A-1")];
    for (i, body) in bodies.into_iter().enumerate() {
        events.push(Event {
            id: EventId(format!("evt-{i}").into()),
            occurred_at: at("2026-11-23T10:00:00Z").plus(chrono::TimeDelta::minutes(i as i64)),
            account_id: AccountId("A-1".into()),
            source: "test".into(),
            body,
        });
    }
    events
}
