//! An independent compliance audit of an event log: every scheduled contact is checked again
//! by plain rules (local time in every candidate zone against each pack's hours and holidays,
//! holds, opt-outs, consent, rolling caps with every send at its earliest and its latest possible
//! instant, conversation waits, spacing). It shares no code with `decide` beyond the pack data,
//! so it can prove the decisions right: `tacto demo` reports its count of violations, and the
//! property tests run it over random histories.

use crate::pack::{CapRule, Pack, Packs};
use crate::policy::Policy;
use chrono::{Datelike, NaiveDate, TimeDelta, Timelike};
use chrono_tz::Tz;
use std::collections::HashMap;
use tacto_model::*;

const HOUR: i64 = 3_600_000_000;

/// A contact that broke a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The account.
    pub account_id: AccountId,
    /// What was wrong.
    pub what: String,
}

/// Audits a whole log (many accounts, in log order).
pub fn audit(log: &[Event], policy: &Policy) -> Vec<Violation> {
    let mut by_account: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in log {
        by_account.entry(e.account_id.as_str()).or_default().push(e);
    }
    let mut out = Vec::new();
    for (id, events) in by_account {
        if let Err(what) = audit_account(&events, policy) {
            out.push(Violation {
                account_id: AccountId(id.into()),
                what,
            });
        }
    }
    out
}

fn hhmm(s: &str) -> u32 {
    let (h, m) = s.split_once(':').unwrap_or(("0", "0"));
    h.parse::<u32>().unwrap_or(0) * 60 + m.parse::<u32>().unwrap_or(0)
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
        if let Ok(t) = s.parse() {
            z.push(t);
        }
    }
    match &point.zone {
        Some(s) => {
            if let Ok(t) = s.parse() {
                z.push(t);
            }
        }
        None if point.channel != Channel::Email => {
            if let Some(zs) = crate::zones::zones_for_phone(&point.address) {
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
            .or_else(|| packs.get(&j.country));
        z = pack.map(|p| p.zones.clone()).unwrap_or_default();
    }
    z
}

/// Is `channel` allowed at `t` in zone `tz` by every pack and the customer's declared times?
fn allowed_at(
    t: i64,
    tz: Tz,
    channel: Channel,
    packs: &[&Pack],
    inconvenient: &[(u32, u32)],
) -> bool {
    let local = Timestamp::from_micros(t).to_datetime().with_timezone(&tz);
    let date: NaiveDate = local.date_naive();
    let minute = local.hour() * 60 + local.minute();
    for p in packs {
        if let Some(h) = &p.file.holidays
            && h.channels.contains(&channel)
            && p.holidays.binary_search(&date).is_ok()
        // sorted (`Pack::holidays`)
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

/// A plan's id, the number of its next instalment, and the instalments left (due, amount).
type PlanLeft = (String, usize, Vec<(NaiveDate, i64)>);

/// Audits one account's events (in order); the first violation found is returned.
pub fn audit_account(log: &[&Event], policy: &Policy) -> Result<(), String> {
    let packs = &policy.packs;
    let mut data: Option<AccountData> = None;
    let mut balance = 0i64;
    let mut stopped: Option<&'static str> = None;
    let mut disputes = 0usize;
    let mut opted_all = false;
    let mut opted: Vec<Channel> = Vec::new();
    let mut promise: Option<(String, i64, NaiveDate, i64)> = None;
    // A payment plan's instalments after the current one: (plan id, next number, rest).
    let mut plan: Option<PlanLeft> = None;
    let mut inconvenient: Vec<(u32, u32)> = Vec::new();
    let mut consent_seen = false;
    let mut conversations: Vec<(Channel, i64)> = Vec::new();
    let mut sent: Vec<Sent> = Vec::new();
    let grace = i64::from(policy.file.promise_grace_days);

    let jobs: Vec<&ContactJob> = log
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ContactScheduled(j) => Some(&**j),
            _ => None,
        })
        .collect();
    for e in log {
        let t = e.occurred_at.as_micros();
        match &e.body {
            EventBody::AccountUpserted(d) => {
                balance = d.debts.iter().map(|x| x.balance_minor).sum();
                data = Some((**d).clone());
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
                plan = None;
            }
            EventBody::PlanMade {
                plan_id,
                instalments,
                ..
            } => {
                let mut all: Vec<(NaiveDate, i64)> = instalments
                    .iter()
                    .map(|i| (i.due_date.naive(), i.amount_minor))
                    .collect();
                let (due, amount) = all.remove(0);
                promise = Some((format!("{plan_id}/1"), amount, due, 0));
                plan = Some((plan_id.clone(), 2, all));
            }
            EventBody::PromiseKept { promise_id, .. } => {
                // The next instalment of the plan, if any, holds contact in its turn, with
                // what was paid beyond the kept one counted toward it.
                let over = promise.as_ref().map_or(0, |p| (p.3 - p.1).max(0));
                promise = None;
                if let Some((id, next, rest)) = plan.as_mut()
                    && promise_id.starts_with(&format!("{id}/"))
                    && !rest.is_empty()
                {
                    let (due, amount) = rest.remove(0);
                    promise = Some((format!("{id}/{next}"), amount, due, over));
                    *next += 1;
                } else {
                    plan = None;
                }
            }
            EventBody::PromiseCancelled { .. } | EventBody::PromiseBroken { .. } => {
                promise = None;
                plan = None;
            }
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
                    && let Some(i) = jobs.iter().position(|j| j.job_id == *id)
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
                        .unwrap_or_default()
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
                let jrefs: Vec<&Pack> = jpacks.iter().map(|p| &**p).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Simulator, synthetic_inputs};

    /// A simulated month of a small synthetic portfolio, every output recorded.
    fn month(policy: &Policy) -> Vec<Event> {
        let start = Timestamp::parse("2026-11-02T00:00:00Z").expect("time");
        let mut sim = Simulator::new(policy, true, true);
        for e in synthetic_inputs(5, 400, start, 30) {
            sim.push(e);
        }
        sim.advance_to(start.plus(TimeDelta::days(30)));
        sim.log
    }

    /// An account's events with its last scheduled contact moved to `at`, for one hour.
    fn moved(events: &[&Event], at: &str) -> Vec<Event> {
        let at = Timestamp::parse(at).expect("time");
        let mut out: Vec<Event> = events.iter().map(|&e| e.clone()).collect();
        if let Some(e) = out
            .iter_mut()
            .rev()
            .find(|e| matches!(e.body, EventBody::ContactScheduled(_)))
            && let EventBody::ContactScheduled(job) = &mut e.body
        {
            e.occurred_at = at;
            job.not_before = at;
            job.not_after = at.plus(TimeDelta::hours(1));
        }
        out
    }

    #[test]
    fn contacts_moved_onto_a_holiday_or_into_the_night_are_reported() {
        let policy = Policy::example();
        let log = month(&policy);
        assert!(audit(&log, &policy).is_empty());
        let mut by_account: HashMap<&str, Vec<&Event>> = HashMap::new();
        for e in &log {
            by_account.entry(e.account_id.as_str()).or_default().push(e);
        }
        let chilean = |(_, events): &(&&str, &Vec<&Event>)| {
            events.iter().any(|e| {
                matches!(&e.body, EventBody::AccountUpserted(d) if d.jurisdiction.country == "CL")
            }) && events
                .iter()
                .any(|e| matches!(e.body, EventBody::ContactScheduled(_)))
        };
        let check = |events: &[Event]| audit_account(&events.iter().collect::<Vec<_>>(), &policy);
        // Wednesday 2026-12-09, noon in Santiago (UTC-3): allowed, for an account whose
        // history leaves its last contact free to move there.
        let (id, events) = by_account
            .iter()
            .filter(chilean)
            .find(|(_, events)| check(&moved(events, "2026-12-09T15:00:00Z")).is_ok())
            .expect("a Chilean account with a contact");
        // The day before at the same hour is a public holiday (Inmaculada Concepción).
        let holiday = check(&moved(events, "2026-12-08T15:00:00Z"));
        assert!(
            holiday
                .as_ref()
                .is_err_and(|e| e.contains("not allowed at")),
            "{id}: {holiday:?}"
        );
        // The same Wednesday at 03:00 in Santiago.
        let night = check(&moved(events, "2026-12-09T06:00:00Z"));
        assert!(
            night.as_ref().is_err_and(|e| e.contains("not allowed at")),
            "{id}: {night:?}"
        );
    }
}
