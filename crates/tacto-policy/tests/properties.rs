//! Compliance as a safety property: random accounts, random event sequences, random times,
//! the runtime's timer loop, and an independent oracle that checks every contact Tacto schedules:
//! never outside the allowed hours (every candidate zone), never on a closed day, never over a
//! rolling cap or inside a conversation wait, never during a promise or dispute hold, never
//! after full payment, opt-out, cease, bankruptcy, death or an attorney notice. Replaying the
//! same history yields the same decisions and ids.

mod common;

use chrono::{Datelike, NaiveDate, TimeDelta, Timelike};
use chrono_tz::Tz;
use common::{AccountSpec, policy_with, ts};
use proptest::prelude::*;
use tacto_model::*;
use tacto_policy::pack::{CapRule, Packs};
use tacto_policy::{Account, Policy, settle};

const HOUR: i64 = 3_600_000_000;

#[derive(Clone, Debug)]
enum Input {
    Pay(i64),
    Promise {
        amount: i64,
        due_in_days: u8,
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
            },
        )
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
    let mut now = ts("2026-11-02T00:00:00Z").plus(TimeDelta::minutes(i64::from(sc.start_minutes)));
    let mut wake: Option<Timestamp>;
    let mut data = sc.spec.data();
    data.declared_zone = sc.declared_zone.map(Into::into);
    let push = |account: &mut Account, world: &mut World, now: Timestamp, body: EventBody| {
        let e = Event {
            id: EventId(format!("in-{}", world.log.len())),
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
        EventBody::AccountUpserted(data),
    );
    for (gap, inp) in &sc.steps {
        let target = now.plus(TimeDelta::minutes(i64::from(*gap)));
        // The runtime's timers fire in between.
        while let Some(w) = wake.filter(|w| *w <= target) {
            now = w.max(now);
            let d = settle(&mut account, now, policy);
            world.log.extend(d.events);
            wake = d.next_wake;
        }
        now = target;
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

// ---- The oracle ---------------------------------------------------------------------------------

fn hhmm(s: &str) -> u32 {
    let (h, m) = s.split_once(':').expect("HH:MM in pack");
    h.parse::<u32>().expect("hour") * 60 + m.parse::<u32>().expect("minute")
}

fn weekday_name(d: chrono::Weekday) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][d.num_days_from_monday() as usize]
}

/// The zones the law makes us honour for this contact point (re-derived from the signals).
fn oracle_zones(data: &AccountData, point: &ContactPoint, packs: &Packs) -> Vec<Tz> {
    let mut z: Vec<Tz> = Vec::new();
    for s in [&data.address_zone, &data.declared_zone]
        .into_iter()
        .flatten()
    {
        z.push(s.parse().expect("zone"));
    }
    match &point.zone {
        Some(s) => z.push(s.parse().expect("zone")),
        None if point.channel != Channel::Email => {
            if let Some(zs) = tacto_policy::zones::zones_for_phone(&point.address) {
                z.extend_from_slice(zs);
            }
        }
        None => {}
    }
    if z.is_empty() {
        let j = &data.jurisdiction;
        let pack = j
            .subdivision
            .as_deref()
            .and_then(|s| packs.get(s))
            .or_else(|| packs.get(&j.country))
            .expect("pack");
        z = pack.zones.clone();
    }
    z
}

/// Is `channel` allowed at `t` in zone `tz` by every pack and the customer's declared times?
fn allowed_at(
    t: i64,
    tz: Tz,
    channel: Channel,
    packs: &[&tacto_policy::pack::Pack],
    inconvenient: &[(u32, u32)],
) -> bool {
    let local = Timestamp::from_micros(t).to_datetime().with_timezone(&tz);
    let date: NaiveDate = local.date_naive();
    let minute = local.hour() * 60 + local.minute();
    for p in packs {
        if let Some(h) = &p.file.holidays
            && h.channels.contains(&channel)
            && p.holidays.contains(&date)
        {
            return false;
        }
        let rules: Vec<_> = p
            .file
            .hours
            .iter()
            .filter(|h| h.channels.contains(&channel))
            .collect();
        if !rules.is_empty() {
            let day = weekday_name(date.weekday());
            let ok = rules.iter().any(|h| {
                h.days.iter().any(|d| d == day) && hhmm(&h.start) <= minute && minute < hhmm(&h.end)
            });
            if !ok {
                return false;
            }
        }
    }
    !inconvenient.iter().any(|&(s, e)| s <= minute && minute < e)
}

#[derive(Clone, Copy)]
struct Sent {
    channel: Channel,
    earliest: i64,
    latest: i64,
    never_connected: bool,
    not_sent: bool,
}

fn check_caps(jobs: &[Sent], cap: &CapRule, pick: impl Fn(&Sent) -> i64) -> Result<(), String> {
    let w = i64::from(cap.window_hours) * HOUR;
    let times: Vec<i64> = jobs
        .iter()
        .filter(|s| cap.channels.contains(&s.channel) && !s.not_sent)
        .filter(|s| !(cap.exclude_never_connected && s.never_connected))
        .map(&pick)
        .collect();
    for &t in &times {
        let n = times.iter().filter(|&&u| u > t - w && u <= t).count();
        if n > cap.max as usize {
            return Err(format!(
                "{}: {n} contacts in {} h ending {}",
                cap.rule,
                cap.window_hours,
                Timestamp::from_micros(t)
            ));
        }
    }
    Ok(())
}

fn oracle(run: &Run, policy: &Policy) -> Result<(), String> {
    let packs = &policy.packs;
    let mut data: Option<AccountData> = None;
    let mut balance = 0i64;
    let mut stopped: Option<&'static str> = None;
    let mut disputes = 0usize;
    let mut opted_all = false;
    let mut opted: Vec<Channel> = Vec::new();
    let mut promise: Option<(String, i64, NaiveDate, i64)> = None;
    let mut inconvenient: Vec<(u32, u32)> = Vec::new();
    let mut consent_seen = false;
    let mut conversations: Vec<(Channel, i64)> = Vec::new();
    let mut sent: Vec<Sent> = Vec::new();
    let grace = i64::from(policy.file.promise_grace_days);

    for e in &run.log {
        let t = e.occurred_at.as_micros();
        match &e.body {
            EventBody::AccountUpserted(d) => {
                balance = d.debts.iter().map(|x| x.balance_minor).sum();
                data = Some(d.clone());
            }
            EventBody::PaymentReceived { amount_minor, .. } => {
                balance -= amount_minor;
                if let Some(p) = promise.as_mut() {
                    p.3 += amount_minor;
                }
            }
            EventBody::PromiseMade {
                promise_id,
                amount_minor,
                due_date,
                ..
            } => {
                promise = Some((promise_id.clone(), *amount_minor, due_date.naive(), 0));
            }
            EventBody::PromiseCancelled { .. }
            | EventBody::PromiseKept { .. }
            | EventBody::PromiseBroken { .. } => promise = None,
            EventBody::DisputeOpened { .. } => disputes += 1,
            EventBody::DisputeResolved {
                collection_may_resume,
                ..
            } => {
                disputes = disputes.saturating_sub(1);
                if !collection_may_resume {
                    stopped = Some("dispute upheld");
                }
            }
            EventBody::OptedOut { channel: None, .. } => opted_all = true,
            EventBody::OptedOut {
                channel: Some(c), ..
            } => opted.push(*c),
            EventBody::CeaseCommunication {} => stopped = Some("cease"),
            EventBody::BankruptcyNotified {} => stopped = Some("bankruptcy"),
            EventBody::DeceasedNotified {} => stopped = Some("deceased"),
            EventBody::AttorneyRepresented { .. } => stopped = Some("attorney"),
            EventBody::InconvenientTimesDeclared { ranges } => {
                inconvenient = ranges
                    .iter()
                    .map(|r| (hhmm(&r.start), hhmm(&r.end)))
                    .collect();
            }
            EventBody::CallConsentGiven {} => consent_seen = true,
            EventBody::ContactOutcome {
                job_id,
                channel,
                status,
                conversation,
                ..
            } => {
                if *conversation {
                    conversations.push((*channel, t));
                }
                if let Some(id) = job_id
                    && let Some(i) = run
                        .log
                        .iter()
                        .filter_map(|e| match &e.body {
                            EventBody::ContactScheduled(j) => Some(j),
                            _ => None,
                        })
                        .position(|j| j.job_id == *id)
                    && let Some(s) = sent.get_mut(i)
                {
                    s.latest = s.latest.min(t);
                    s.never_connected |= status.never_connected();
                    s.not_sent |= *status == OutcomeStatus::NotSent;
                }
            }
            EventBody::ContactScheduled(job) => {
                let who = format!("job {} at {}", job.job_id, e.occurred_at);
                let d = data.as_ref().ok_or("a job before the account exists")?;
                if balance <= 0 {
                    return Err(format!("{who}: after full payment"));
                }
                if let Some(why) = stopped {
                    return Err(format!("{who}: after {why}"));
                }
                if disputes > 0 {
                    return Err(format!("{who}: during a dispute"));
                }
                if opted_all || opted.contains(&job.channel) {
                    return Err(format!("{who}: after opt-out of {}", job.channel));
                }
                if let Some((_, amount, due, paid)) = &promise {
                    // Certainly held until the earliest local midnight after due + grace.
                    let end = (*due + TimeDelta::days(grace + 1))
                        .and_hms_opt(0, 0, 0)
                        .expect("midnight")
                        .and_utc()
                        .timestamp_micros()
                        - 14 * HOUR;
                    if paid < amount && t < end {
                        return Err(format!("{who}: during a promise hold"));
                    }
                }
                let point = d
                    .contact_points
                    .iter()
                    .find(|p| p.channel == job.channel && p.id == job.contact_point_id)
                    .ok_or(format!("{who}: unknown contact point"))?;
                let jpacks: Vec<_> = packs
                    .for_jurisdiction(&d.jurisdiction)
                    .into_iter()
                    .collect();
                let jrefs: Vec<&tacto_policy::pack::Pack> = jpacks.iter().map(|p| &**p).collect();
                if jrefs.is_empty() {
                    return Err(format!("{who}: no pack for the jurisdiction"));
                }
                if jrefs.iter().any(|p| {
                    p.file
                        .consent
                        .iter()
                        .any(|c| c.channels.contains(&job.channel))
                }) && !point.consent
                {
                    return Err(format!("{who}: no consent"));
                }
                let zones = oracle_zones(d, point, packs);
                let (nb, na) = (job.not_before.as_micros(), job.not_after.as_micros());
                if nb != t || na <= nb {
                    return Err(format!(
                        "{who}: bad window {}..{}",
                        job.not_before, job.not_after
                    ));
                }
                let mut s = nb;
                while s < na {
                    for &z in &zones {
                        if !allowed_at(s, z, job.channel, &jrefs, &inconvenient) {
                            return Err(format!(
                                "{who}: not allowed at {} in {z}",
                                Timestamp::from_micros(s)
                            ));
                        }
                    }
                    s += 10 * 60_000_000;
                }
                for &z in &zones {
                    if !allowed_at(na - 1, z, job.channel, &jrefs, &inconvenient) {
                        return Err(format!(
                            "{who}: window end {} not allowed in {z}",
                            job.not_after
                        ));
                    }
                }
                if !consent_seen {
                    for p in &jrefs {
                        for w in p
                            .file
                            .conversation_waits
                            .iter()
                            .filter(|w| w.channels.contains(&job.channel))
                        {
                            for &(c, at) in &conversations {
                                if w.triggered_by.contains(&c)
                                    && nb < at + i64::from(w.hours) * HOUR
                                {
                                    return Err(format!("{who}: inside {}", w.rule));
                                }
                            }
                        }
                    }
                }
                sent.push(Sent {
                    channel: job.channel,
                    earliest: nb,
                    latest: na,
                    never_connected: false,
                    not_sent: false,
                });
            }
            _ => {}
        }
    }
    // Rolling caps and spacing, with every send at its earliest and at its latest instant.
    if let Some(d) = &data {
        let jpacks = packs.for_jurisdiction(&d.jurisdiction);
        let caps = jpacks
            .iter()
            .flat_map(|p| p.file.caps.iter())
            .chain(policy.file.caps.iter())
            .filter(|c| !(consent_seen && c.consent_exclusion_hours.is_some()));
        for cap in caps {
            check_caps(&sent, cap, |s| s.earliest)?;
            check_caps(&sent, cap, |s| s.latest)?;
        }
        for p in &jpacks {
            for rule in &p.file.spacing {
                let v: Vec<&Sent> = sent
                    .iter()
                    .filter(|s| rule.channels.contains(&s.channel) && !s.not_sent)
                    .collect();
                for w in v.windows(2) {
                    if w[1].earliest < w[0].latest + i64::from(rule.min_hours) * HOUR {
                        return Err(format!("{}: contacts too close", rule.rule));
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn no_contact_ever_breaks_a_rule(sc in scenario()) {
        let policies = policies();
        let policy = &policies[sc.policy];
        let r = run(&sc, policy);
        if let Err(e) = oracle(&r, policy) {
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
