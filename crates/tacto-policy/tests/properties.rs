//! Compliance as a safety property: random accounts, random event sequences, random times,
//! the runtime's timer loop, and an independent oracle that checks every contact Tacto schedules:
//! never outside the allowed hours (every candidate zone), never on a closed day, never over a
//! rolling cap or inside a conversation wait, never during a promise or dispute hold, never
//! after full payment, opt-out, cease, bankruptcy, death or an attorney notice. Replaying the
//! same history yields the same decisions and ids. The same holds when the clock jumps across a
//! daylight-saving change (timers firing hours late, the clock stepped back).

mod common;

use chrono::TimeDelta;
use common::{AccountSpec, policy_with, ts};
use proptest::prelude::*;
use tacto_model::*;
use tacto_policy::{Account, Policy, settle};

#[derive(Clone, Debug)]
enum Input {
    Pay(i64),
    Promise {
        amount: i64,
        due_in_days: u8,
    },
    /// A payment plan of `count` instalments, the first in `first_in_days`, then every
    /// `every_days`.
    Plan {
        amount: i64,
        first_in_days: u8,
        count: u8,
        every_days: u8,
    },
    CancelPromise,
    Dispute,
    ResolveDispute(bool),
    OptOut(Option<Channel>),
    Cease,
    Bankruptcy,
    Deceased,
    Attorney,
    Inconvenient(u16, u16),
    Consent,
    /// Outcome of the latest job, `minutes` after it may first be sent.
    Outcome {
        status: OutcomeStatus,
        conversation: bool,
        minutes: u16,
    },
    Inbound,
}

fn status() -> impl Strategy<Value = OutcomeStatus> {
    prop_oneof![
        Just(OutcomeStatus::Delivered),
        Just(OutcomeStatus::Failed),
        Just(OutcomeStatus::Answered),
        Just(OutcomeStatus::RightPartyContact),
        Just(OutcomeStatus::NoAnswer),
        Just(OutcomeStatus::Busy),
        Just(OutcomeStatus::Voicemail),
        Just(OutcomeStatus::Disconnected),
        Just(OutcomeStatus::WrongParty),
        Just(OutcomeStatus::NotSent),
        Just(OutcomeStatus::Sent),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let channel = prop_oneof![
        Just(None),
        Just(Some(Channel::Sms)),
        Just(Some(Channel::Email)),
        Just(Some(Channel::Voice))
    ];
    prop_oneof![
        3 => (1i64..60_000).prop_map(Input::Pay),
        2 => (1i64..60_000, 0u8..10).prop_map(|(amount, due_in_days)| Input::Promise { amount, due_in_days }),
        1 => (1i64..30_000, 0u8..10, 2u8..5, 1u8..15).prop_map(|(amount, first_in_days, count, every_days)| Input::Plan { amount, first_in_days, count, every_days }),
        1 => Just(Input::CancelPromise),
        1 => Just(Input::Dispute),
        1 => any::<bool>().prop_map(Input::ResolveDispute),
        1 => channel.prop_map(Input::OptOut),
        1 => Just(Input::Cease),
        1 => Just(Input::Bankruptcy),
        1 => Just(Input::Deceased),
        1 => Just(Input::Attorney),
        1 => (0u16..1380, 30u16..600).prop_map(|(s, len)| Input::Inconvenient(s, (s + len).min(1440))),
        1 => Just(Input::Consent),
        12 => (status(), any::<bool>(), 0u16..300).prop_map(|(status, conversation, minutes)| Input::Outcome { status, conversation, minutes }),
        1 => Just(Input::Inbound),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    spec: AccountSpec,
    declared_zone: Option<&'static str>,
    start_minutes: u32,
    steps: Vec<(u32, Input)>,
    policy: usize,
    /// Where the clock starts (minutes are added to it).
    start: &'static str,
    /// Clock jumps, in minutes, taken in turn by the timer loop: a timer fires that much late
    /// (the host slept, or its clock was stepped forward), or, when negative, the clock was
    /// stepped back before the next input arrives.
    jumps: Vec<i16>,
}

/// Country, subdivision, candidate zones, phone numbers.
type Place = (
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    &'static [&'static str],
);

fn spec() -> impl Strategy<Value = (AccountSpec, Option<&'static str>)> {
    let places: Vec<Place> = vec![
        (
            "US",
            Some("US-NY"),
            &["America/New_York"],
            &["+12125550100", "+13105550100", "+19995550100"],
        ),
        (
            "US",
            Some("US-MA"),
            &["America/New_York"],
            &["+16175550100", "+18085550100"],
        ),
        (
            "US",
            Some("US-FL"),
            &["America/New_York", "America/Chicago"],
            &["+13055550100", "+18505550100"],
        ),
        (
            "US",
            None,
            &["America/Phoenix", "America/Denver"],
            &["+16025550100", "+19995550100"],
        ),
        ("CO", None, &["America/Bogota"], &["+5715550100"]),
        (
            "MX",
            None,
            &["America/Mexico_City", "America/Tijuana"],
            &["+525555550100"],
        ),
        ("PE", None, &["America/Lima"], &["+5115550100"]),
        ("CL", None, &["America/Santiago"], &["+5625550100"]),
        ("EC", None, &["America/Guayaquil"], &["+59325550100"]),
        ("GT", None, &["America/Guatemala"], &["+50225550100"]),
        (
            "ES",
            None,
            &["Europe/Madrid", "Atlantic/Canary"],
            &["+34915550100"],
        ),
    ];
    (
        0..places.len(),
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
        0u8..4,
        1_000i64..90_000,
    )
        .prop_map(move |(i, zi, pi, consent, zone_mode, balance)| {
            let (country, sub, zones, phones) = places[i];
            let zone = zones[zi as usize % zones.len()];
            let other = zones[(zi as usize + 1) % zones.len()];
            let spec = AccountSpec {
                country,
                subdivision: sub,
                address_zone: if zone_mode == 0 { None } else { Some(zone) },
                phone: phones[pi as usize % phones.len()],
                phone_zone: if zone_mode == 3 { Some(other) } else { None },
                balance,
                due: (2026, 9, 1),
                consent: consent || zone_mode == 1,
            };
            let declared = if zone_mode == 2 { Some(other) } else { None };
            (spec, declared)
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        spec(),
        0u32..(60 * 24 * 14),
        prop::collection::vec((0u32..(60 * 30), input()), 1..40),
        0usize..3,
    )
        .prop_map(
            |((spec, declared_zone), start_minutes, steps, policy)| Scenario {
                spec,
                declared_zone,
                start_minutes,
                steps,
                policy,
                start: "2026-11-02T00:00:00Z",
                jumps: Vec::new(),
            },
        )
}

/// A scenario that starts within two days before a US daylight-saving change (spring forward
/// on 2026-03-08, fall back on 2026-11-01), in whose clock timers fire late by up to six hours
/// and inputs can arrive after the clock was stepped back by up to two hours.
fn dst_scenario() -> impl Strategy<Value = Scenario> {
    (
        scenario(),
        prop_oneof![Just("2026-03-06T12:00:00Z"), Just("2026-10-30T12:00:00Z")],
        0u32..(60 * 48),
        prop::collection::vec(-120i16..360, 1..12),
    )
        .prop_map(|(mut sc, start, start_minutes, jumps)| {
            sc.start = start;
            sc.start_minutes = start_minutes;
            sc.jumps = jumps;
            sc
        })
}

fn policies() -> Vec<Policy> {
    vec![
        Policy::example(),
        // A dialer that calls every two hours: pushes against every call cap.
        policy_with(
            r#"[{ day = 0, channel = "voice", template = "call", attempts = 60, retry_after_hours = 2, fallback = ["sms"] }]"#,
            "",
        ),
        // Texts and emails every hour, falling back to each other.
        policy_with(
            r#"[{ day = 0, channel = "sms", template = "t", attempts = 60, retry_after_hours = 1, fallback = ["email"] },
                { day = 1, channel = "email", template = "e", attempts = 60, retry_after_hours = 1, fallback = ["sms", "voice"] }]"#,
            "",
        ),
    ]
}

/// Everything that happened, as the oracle sees it.
#[derive(Default)]
struct World {
    log: Vec<Event>,
}

struct Run {
    log: Vec<Event>,
    account: Account,
}

fn run(sc: &Scenario, policy: &Policy) -> Run {
    let mut account = Account::new(AccountId("P1".into()));
    let mut world = World::default();
    let mut now = ts(sc.start).plus(TimeDelta::minutes(i64::from(sc.start_minutes)));
    let mut jumps = sc.jumps.iter().copied().cycle();
    let mut jump = move || i64::from(jumps.next().unwrap_or(0));
    let mut wake: Option<Timestamp>;
    let mut data = sc.spec.data();
    data.declared_zone = sc.declared_zone.map(Into::into);
    let push = |account: &mut Account, world: &mut World, now: Timestamp, body: EventBody| {
        let e = Event {
            id: EventId(format!("in-{}", world.log.len()).into()),
            occurred_at: now,
            account_id: account.account_id(),
            source: "prop".into(),
            body,
        };
        account.apply(&e);
        world.log.push(e);
        let d = settle(account, now, policy);
        world.log.extend(d.events);
        d.next_wake
    };
    wake = push(
        &mut account,
        &mut world,
        now,
        EventBody::AccountUpserted(Box::new(data)),
    );
    for (gap, inp) in &sc.steps {
        let mut target = now.plus(TimeDelta::minutes(i64::from(*gap)));
        // The runtime's timers fire in between (late when the clock jumped forward).
        while let Some(w) = wake.filter(|w| *w <= target) {
            now = w.max(now).plus(TimeDelta::minutes(jump().max(0)));
            target = target.max(now);
            let d = settle(&mut account, now, policy);
            world.log.extend(d.events);
            wake = d.next_wake;
        }
        // A clock stepped back: the input arrives "before" the last decision.
        now = target.plus(TimeDelta::minutes(jump().min(0)));
        let seq = world.log.len();
        let last_job = world.log.iter().rev().find_map(|e| match &e.body {
            EventBody::ContactScheduled(j) => Some(j.clone()),
            _ => None,
        });
        let body = match inp {
            Input::Pay(a) => EventBody::PaymentReceived {
                payment_id: format!("pay-{seq}"),
                debt_id: None,
                amount_minor: *a,
                currency: "USD".into(),
                method: String::new(),
            },
            Input::Promise {
                amount,
                due_in_days,
            } => EventBody::PromiseMade {
                promise_id: format!("pr-{seq}"),
                amount_minor: *amount,
                due_date: Date::new(
                    now.to_datetime().date_naive() + TimeDelta::days(i64::from(*due_in_days)),
                ),
                promise_source: PromiseSource::Agent,
            },
            Input::Plan {
                amount,
                first_in_days,
                count,
                every_days,
            } => {
                let first =
                    now.to_datetime().date_naive() + TimeDelta::days(i64::from(*first_in_days));
                EventBody::PlanMade {
                    plan_id: format!("plan-{seq}"),
                    instalments: (0..i64::from(*count))
                        .map(|k| Instalment {
                            due_date: Date::new(
                                first + TimeDelta::days(k * i64::from(*every_days)),
                            ),
                            amount_minor: *amount,
                        })
                        .collect(),
                    promise_source: PromiseSource::SelfService,
                }
            }
            Input::CancelPromise => match account.promise() {
                Some(p) => EventBody::PromiseCancelled {
                    promise_id: p.id.to_string(),
                },
                None => continue,
            },
            Input::Dispute => EventBody::DisputeOpened {
                dispute_id: format!("dis-{seq}"),
                reason: DisputeReason::Other,
                note: String::new(),
            },
            Input::ResolveDispute(resume) => match account.disputes().first() {
                Some(d) => EventBody::DisputeResolved {
                    dispute_id: d.id.to_string(),
                    collection_may_resume: *resume,
                },
                None => continue,
            },
            Input::OptOut(c) => EventBody::OptedOut {
                channel: *c,
                via: "prop".into(),
            },
            Input::Cease => EventBody::CeaseCommunication {},
            Input::Bankruptcy => EventBody::BankruptcyNotified {},
            Input::Deceased => EventBody::DeceasedNotified {},
            Input::Attorney => EventBody::AttorneyRepresented {
                attorney: String::new(),
            },
            Input::Inconvenient(s, e) => EventBody::InconvenientTimesDeclared {
                ranges: vec![LocalTimeRange {
                    start: format!("{:02}:{:02}", s / 60, s % 60),
                    end: format!("{:02}:{:02}", e / 60, e % 60),
                    weekdays: vec![],
                }],
            },
            Input::Consent => EventBody::CallConsentGiven {},
            Input::Outcome {
                status,
                conversation,
                minutes,
            } => {
                let Some(job) = last_job else { continue };
                // Providers answer after the send, which is after not_before.
                let at = job.not_before.plus(TimeDelta::minutes(i64::from(*minutes)));
                now = now.max(at);
                EventBody::ContactOutcome {
                    job_id: Some(job.job_id),
                    channel: job.channel,
                    status: *status,
                    conversation: *conversation
                        && !matches!(
                            status,
                            OutcomeStatus::Busy
                                | OutcomeStatus::Disconnected
                                | OutcomeStatus::NotSent
                        ),
                    inbound: false,
                }
            }
            Input::Inbound => EventBody::ContactOutcome {
                job_id: None,
                channel: Channel::Voice,
                status: OutcomeStatus::RightPartyContact,
                conversation: true,
                inbound: true,
            },
        };
        wake = push(&mut account, &mut world, now, body);
    }
    // Let the last timers run for two more weeks.
    let end = now.plus(TimeDelta::days(14));
    while let Some(w) = wake.filter(|w| *w <= end) {
        now = w.max(now);
        let d = settle(&mut account, now, policy);
        world.log.extend(d.events);
        wake = d.next_wake;
    }
    Run {
        log: world.log,
        account,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn no_contact_ever_breaks_a_rule(sc in scenario()) {
        let policies = policies();
        let policy = &policies[sc.policy];
        let r = run(&sc, policy);
        let events: Vec<&Event> = r.log.iter().collect();
        if let Err(e) = tacto_policy::audit::audit_account(&events, policy) {
            let trace: Vec<String> = r.log.iter().map(|e| format!("{} {} {:?}", e.occurred_at, e.body.type_name(), e.body)).collect();
            prop_assert!(false, "{e}\n{}", trace.join("\n"));
        }
    }

    #[test]
    fn clock_jumps_across_a_dst_change_never_break_a_rule(sc in dst_scenario()) {
        let policies = policies();
        let policy = &policies[sc.policy];
        let r = run(&sc, policy);
        let events: Vec<&Event> = r.log.iter().collect();
        if let Err(e) = tacto_policy::audit::audit_account(&events, policy) {
            let trace: Vec<String> = r.log.iter().map(|e| format!("{} {} {:?}", e.occurred_at, e.body.type_name(), e.body)).collect();
            prop_assert!(false, "{e}\n{}", trace.join("\n"));
        }
    }

    #[test]
    fn replay_gives_the_same_decisions_and_state(sc in scenario()) {
        let policies = policies();
        let policy = &policies[sc.policy];
        let a = run(&sc, policy);
        let b = run(&sc, policy);
        prop_assert_eq!(&a.log, &b.log);
        // State is fold(events): replaying the whole log (inputs and decisions) rebuilds it.
        let folded = Account::fold(AccountId("P1".into()), a.log.iter());
        prop_assert_eq!(&folded, &a.account);
        // And every event applied twice changes nothing.
        let mut twice = folded.clone();
        for e in a.log.iter().rev().take(tacto_policy::account::RECENT_IDS) {
            prop_assert!(!twice.apply(e));
        }
        prop_assert_eq!(&twice, &a.account);
    }
}
