//! `decide(&Account, now, &Policy)`: what to do now, and when to look again.
//!
//! The order of concerns, each able to stop the ones after it:
//! 1. promise resolution (kept / broken);
//! 2. holds (paid in full, deceased, bankruptcy, cease, attorney, dispute, promise, total
//!    opt-out): queued work is recalled, disputes get a customer-service task;
//! 3. queued work that became wrong (a partial payment, an opt-out of its channel) is recalled;
//! 4. a job in flight is waited for;
//! 5. the cadence: the due step is scheduled when every rule allows it now, deferred to the next
//!    allowed instant otherwise (never dropped), or suppressed when no channel may be used.
//!
//! Every output carries a [`DecisionRecord`] with the rules that fired and their sources.

use crate::account::{Account, Point, Profile, flag};
use crate::ledger::{self, Attempt, JobKey, flags as af};
use crate::pack::{CapRule, Pack, RuleRef};
use crate::policy::{PlacedStep, Policy};
use crate::window::{Closure, WindowSpec, local_to_utc};
use crate::zones::candidate_zones;
use chrono::{Days, NaiveDate};
use chrono_tz::Tz;
use std::sync::Arc;
use tacto_model::{
    ArcStr, Channel, ContactJob, DecisionRecord, Event, EventBody, JobId, Reason, ReasonCode,
    Timestamp,
};

/// The result of one decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Output events to append to the log (and apply to the account, in order).
    pub events: Vec<Event>,
    /// When to decide again (`None`: only when a new event arrives).
    pub next_wake: Option<Timestamp>,
}

const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_DAY: i64 = 24 * 60 * MICROS_PER_MINUTE;

/// A rule of Tacto's core, from literals: shared texts, no allocation.
macro_rules! core_rule {
    ($rule:literal, $source:literal $(,)?) => {
        RuleRef {
            rule: arcstr::literal!($rule),
            pack: arcstr::literal!("core"),
            source: arcstr::literal!($source),
        }
    };
}

fn reason(code: ReasonCode, r: &RuleRef, detail: impl Into<String>) -> Reason {
    Reason {
        code,
        rule: r.rule.clone(),
        pack: r.pack.clone(),
        source: r.source.clone(),
        detail: detail.into(),
    }
}

struct Ctx<'a> {
    account: &'a Account,
    profile: &'a Profile,
    policy: &'a Policy,
    packs: std::cell::OnceCell<Vec<Arc<Pack>>>,
    now: i64,
    out: Vec<Event>,
}

impl Ctx<'_> {
    fn emit(&mut self, body: EventBody) {
        let seq = self.account.outputs as usize + self.out.len();
        self.out.push(Event {
            id: crate::account::output_id(&self.account.id, seq),
            occurred_at: Timestamp::from_micros(self.now),
            account_id: self.account.account_id(),
            source: "decide".into(),
            body,
        });
    }

    fn record(&self, reasons: Vec<Reason>) -> DecisionRecord {
        DecisionRecord {
            policy_version: self.policy.file.version.clone(),
            reasons,
        }
    }

    fn policy_rule(&self, rule: ArcStr) -> RuleRef {
        RuleRef {
            rule,
            pack: arcstr::literal!("policy"),
            source: self.policy.source.clone(),
        }
    }

    /// The packs of the account's jurisdiction, looked up on first use (most decisions stop
    /// before they need them).
    fn packs(&self) -> &[Arc<Pack>] {
        self.packs.get_or_init(|| {
            self.policy.packs.for_place(
                &self.profile.place.country,
                self.profile.place.subdivision.as_deref(),
            )
        })
    }

    fn jurisdiction_zones(&self) -> Vec<Tz> {
        // The most specific pack (subdivision) knows the territory best.
        self.packs()
            .last()
            .map(|p| p.zones.clone())
            .unwrap_or_else(|| vec![Tz::UTC])
    }

    fn zones_for(&self, point: Option<&Point>) -> (Vec<Tz>, bool) {
        candidate_zones(
            self.profile.place.address_zone,
            self.profile.place.declared_zone,
            point.map_or(&[][..], |p| &p.zones[..]),
            &self.jurisdiction_zones(),
        )
    }
}

/// The instant a promise's grace ends: the end of `due + grace` days in every candidate zone.
fn promise_deadline(ctx: &Ctx<'_>, due: NaiveDate) -> i64 {
    let day_after = due
        .checked_add_days(Days::new(u64::from(ctx.policy.file.promise_grace_days) + 1))
        .unwrap_or(NaiveDate::MAX);
    let (zones, _) = ctx.zones_for(None);
    zones
        .iter()
        .map(|&tz| local_to_utc(tz, day_after, 0, true))
        .max()
        .unwrap_or(i64::MAX)
}

/// Decides what to do for `account` at `now`.
pub fn decide(account: &Account, now: Timestamp, policy: &Policy) -> Decision {
    let Some(profile) = account.profile.as_deref() else {
        return Decision::default();
    };
    let mut ctx = Ctx {
        account,
        profile,
        policy,
        packs: std::cell::OnceCell::new(),
        now: now.as_micros(),
        out: Vec::new(),
    };
    let wake = decide_inner(&mut ctx);
    Decision {
        events: ctx.out,
        next_wake: wake.map(Timestamp::from_micros),
    }
}

fn decide_inner(ctx: &mut Ctx<'_>) -> Option<i64> {
    let a = ctx.account;
    let now = ctx.now;

    // 1. Promise resolution.
    if let Some(p) = a.promise() {
        if p.paid_minor >= p.amount_minor || a.balance_minor <= 0 {
            let r = core_rule!("core.promise.kept", "tenant policy: promise kept when paid");
            let rec = ctx.record(vec![reason(
                ReasonCode::PromiseKept,
                &r,
                format!("paid {} of {} promised", p.paid_minor, p.amount_minor),
            )]);
            ctx.emit(EventBody::PromiseKept {
                promise_id: (*p.id).into(),
                decision: rec,
            });
            return Some(now);
        }
        let deadline = promise_deadline(ctx, p.due_date);
        if now >= deadline {
            let r = ctx.policy_rule(arcstr::literal!("policy.promise_grace_days"));
            let rec = ctx.record(vec![reason(
                ReasonCode::PromiseBroken,
                &r,
                format!(
                    "paid {} of {} by {} plus {} days' grace",
                    p.paid_minor, p.amount_minor, p.due_date, ctx.policy.file.promise_grace_days
                ),
            )]);
            ctx.emit(EventBody::PromiseBroken {
                promise_id: (*p.id).into(),
                decision: rec,
            });
            return Some(now);
        }
    }

    // Disputes always reach customer service, whatever else holds the account.
    for d in a.disputes().iter().filter(|d| !d.task_created) {
        let r = core_rule!(
            "core.dispute.task",
            "15 U.S.C. §1692g(b): collection stops until the debt is verified",
        );
        let rec = ctx.record(vec![reason(ReasonCode::DisputeHold, &r, "dispute opened")]);
        ctx.emit(EventBody::TaskCreated {
            task_id: format!("{}:task:{}", a.id, d.id),
            dispute_id: (*d.id).into(),
            reason: d.reason,
            decision: rec,
        });
    }

    // 2. Holds.
    if let Some((hold, wake)) = hold(ctx) {
        recall(ctx, |_| true, hold);
        return wake;
    }

    // 3. Queued work that became wrong.
    let opted = a.opted_out;
    if a.queued().any(|q| q.has(af::STALE)) {
        let r = core_rule!(
            "core.partial_payment.replan",
            "Tacto core: work planned for an older balance is recalled",
        );
        let why = reason(
            ReasonCode::PartialPayment,
            &r,
            "a payment changed the balance",
        );
        recall(ctx, |q| q.has(af::STALE), why);
    }
    if a.queued().any(|q| opted.contains(q.channel)) {
        let r = core_rule!(
            "core.opt_out.channel",
            "12 CFR 1006.14(h); 47 CFR 64.1200(a)(10): a request not to use a medium is honoured",
        );
        let why = reason(ReasonCode::OptedOut, &r, "opted out of the channel");
        recall(ctx, |q| opted.contains(q.channel), why);
    }
    if !ctx.out.is_empty() {
        return Some(now);
    }

    // 4. A job in flight: wait for it (or for its latest send instant).
    if let Some(t) = a.queued().filter(|q| q.at() > now).map(|q| q.at()).min() {
        return Some(t);
    }

    // 5. The cadence.
    cadence(ctx)
}

/// Account flags that stop all contact, most serious first: (flag, code, rule, detail).
const FLAG_HOLDS: &[(u16, ReasonCode, RuleRef, &str)] = &[
    (
        flag::DECEASED,
        ReasonCode::Deceased,
        core_rule!(
            "core.deceased",
            "12 CFR 1006.2(e) (estate representatives only)"
        ),
        "customer deceased",
    ),
    (
        flag::BANKRUPT,
        ReasonCode::Bankruptcy,
        core_rule!(
            "core.bankruptcy_stay",
            "11 U.S.C. §362(a)(6): automatic stay"
        ),
        "bankruptcy notified",
    ),
    (
        flag::CEASE,
        ReasonCode::CeaseCommunication,
        core_rule!("core.cease", "15 U.S.C. §1692c(c)"),
        "customer asked to cease communication",
    ),
    (
        flag::ATTORNEY,
        ReasonCode::AttorneyRepresented,
        core_rule!(
            "core.attorney",
            "15 U.S.C. §1692c(a)(2): contact the attorney only"
        ),
        "represented by an attorney",
    ),
    (
        flag::DISPUTE_UPHELD,
        ReasonCode::DisputeUpheld,
        core_rule!("core.dispute_upheld", "15 U.S.C. §1692g(b)"),
        "a dispute was resolved in the customer's favour",
    ),
];

/// The hold that stops all contact now, with when to look again.
fn hold(ctx: &Ctx<'_>) -> Option<(Reason, Option<i64>)> {
    let a = ctx.account;
    let r = |code, rule: &RuleRef, detail: &str| Some((reason(code, rule, detail), None));
    if a.balance_minor <= 0 {
        return r(
            ReasonCode::PaidInFull,
            &core_rule!(
                "core.paid_in_full",
                "Tacto core: no collection contact on a settled account"
            ),
            "balance is zero",
        );
    }
    for (f, code, rule, detail) in FLAG_HOLDS {
        if a.has(*f) {
            return r(*code, rule, detail);
        }
    }
    if !a.disputes().is_empty() {
        return r(
            ReasonCode::DisputeHold,
            &core_rule!(
                "core.dispute_hold",
                "15 U.S.C. §1692g(b): collection stops until the debt is verified"
            ),
            "dispute open",
        );
    }
    if let Some(p) = a.promise() {
        let until = promise_deadline(ctx, p.due_date);
        let rule = core_rule!(
            "core.promise_hold",
            "tenant policy: no collection contact while a promise to pay is pending",
        );
        return Some((
            reason(
                ReasonCode::PromiseHold,
                &rule,
                format!(
                    "promise of {} due {} (+{} days' grace)",
                    p.amount_minor, p.due_date, ctx.policy.file.promise_grace_days
                ),
            ),
            Some(until),
        ));
    }
    if a.opted_out.is_all() {
        return r(
            ReasonCode::OptedOut,
            &core_rule!(
                "core.opt_out.all",
                "12 CFR 1006.14(h); 47 U.S.C. §227 (revocation of consent)"
            ),
            "opted out of every channel",
        );
    }
    None
}

fn recall(ctx: &mut Ctx<'_>, which: impl Fn(&Attempt) -> bool, why: Reason) {
    let ids: Vec<JobId> = ctx
        .account
        .queued()
        .filter(|q| which(q))
        .map(|q| q.key.job_id(ctx.account.id.as_str()))
        .collect();
    if !ids.is_empty() {
        let rec = ctx.record(vec![why]);
        ctx.emit(EventBody::JobsRecalled {
            job_ids: ids,
            decision: rec,
        });
    }
}

fn days_past_due(profile: &Profile, today: NaiveDate) -> i64 {
    profile
        .debts
        .iter()
        .filter(|d| d.balance_minor > 0)
        .map(|d| (today - d.due_date).num_days())
        .max()
        .unwrap_or(0)
}

fn segment<'p>(ctx: &Ctx<'p>, today: NaiveDate) -> Option<&'p crate::policy::Segment> {
    let p = ctx.profile;
    let dpd = days_past_due(p, today);
    let bal = ctx.account.balance_minor;
    ctx.policy.file.segments.iter().find(|s| {
        let w = &s.when;
        w.min_dpd.is_none_or(|m| dpd >= m)
            && w.max_dpd.is_none_or(|m| dpd <= m)
            && w.min_balance_minor.is_none_or(|m| bal >= m)
            && w.max_balance_minor.is_none_or(|m| bal <= m)
            && w.min_risk
                .is_none_or(|m| p.risk_score.is_some_and(|r| r >= m))
            && w.max_risk
                .is_none_or(|m| p.risk_score.is_some_and(|r| r <= m))
            && w.min_customer_value
                .is_none_or(|m| p.customer_value.is_some_and(|v| v >= m))
            && (w.products.is_empty() || w.products.iter().any(|x| **x == *p.place.product))
            && w.attributes
                .iter()
                .all(|(k, v)| p.attribute(k) == Some(v.as_str()))
    })
}

enum Next {
    Due(usize, u8),
    Wait(i64),
    Done,
}

fn next_step(ctx: &Ctx<'_>, steps: &[PlacedStep], today: NaiveDate) -> Next {
    let a = ctx.account;
    let elapsed = (today - a.cycle_start).num_days();
    let last = a.last_step().filter(|(k, _)| k.cycle == a.cycle);
    let pos = |s: &PlacedStep| (s.step.day, s.slot);
    let after_last = |s: &&PlacedStep| last.is_none_or(|(k, _)| pos(s) > (k.day, k.slot));
    // Steps due now and not done yet; on a late start only the latest due day runs.
    let due: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| after_last(s) && i64::from(s.step.day) <= elapsed)
        .map(|(i, _)| i)
        .collect();
    if let Some(&latest) = due.last() {
        let day = steps[latest].step.day;
        if let Some(&first_of_day) = due.iter().find(|&&i| steps[i].step.day == day) {
            return Next::Due(first_of_day, 0);
        }
    }
    // Another attempt of the last step?
    if let Some((k, at)) = last
        && let Some(i) = steps.iter().position(|s| pos(s) == (k.day, k.slot))
    {
        let s = &steps[i].step;
        if k.attempt + 1 < s.attempts {
            let retry_at = at + ledger::hours(s.retry_after_hours);
            let next_day_start = steps
                .iter()
                .find(|s| after_last(s))
                .map(|s| day_start(a.cycle_start, s.step.day));
            // A newer step supersedes remaining attempts once it is due (handled above).
            return if ctx.now >= retry_at {
                Next::Due(i, k.attempt + 1)
            } else {
                Next::Wait(next_day_start.map_or(retry_at, |d| d.min(retry_at)))
            };
        }
    }
    match steps.iter().find(|s| after_last(s)) {
        Some(s) => Next::Wait(day_start(a.cycle_start, s.step.day)),
        None => Next::Done,
    }
}

fn day_start(cycle_start: NaiveDate, day: u16) -> i64 {
    cycle_start
        .checked_add_days(Days::new(u64::from(day)))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_micros())
        .unwrap_or(i64::MAX)
}

fn cadence(ctx: &mut Ctx<'_>) -> Option<i64> {
    let a = ctx.account;
    let now = ctx.now;
    let today = Timestamp::from_micros(now).to_datetime().date_naive();
    let tomorrow = day_start(today, 1);
    let Some(seg) = segment(ctx, today) else {
        // Days past due grow: a segment may match tomorrow.
        return Some(tomorrow);
    };
    let cadence_name = if a.has(flag::BROKEN_PROMISE_CYCLE) {
        ctx.policy
            .file
            .broken_promise
            .cadence
            .as_deref()
            .unwrap_or(&seg.cadence)
    } else {
        &seg.cadence
    };
    let Some(steps) = ctx.policy.cadences.get(cadence_name) else {
        return None; // validated at load: unreachable for a loaded policy
    };
    let (idx, attempt) = match next_step(ctx, steps, today) {
        Next::Due(i, n) => (i, n),
        Next::Wait(t) => return Some(t.max(now)),
        Next::Done => return None,
    };
    let placed = &steps[idx];
    let key = JobKey {
        cycle: a.cycle,
        day: placed.step.day,
        slot: placed.slot,
        attempt,
    };
    let job_id = key.job_id(a.id.as_str());
    if let Some(d) = a.deferral()
        && d.key == key
        && d.until > now
    {
        return Some(d.until);
    }
    let step_name = [cadence_name, "/", &placed.name].concat();

    if ctx.packs().is_empty() {
        let r = core_rule!(
            "core.unknown_jurisdiction",
            "Tacto core: no pack covers the account's country, so no contact is allowed",
        );
        let why = reason(
            ReasonCode::UnknownJurisdiction,
            &r,
            format!("no pack for {}", ctx.profile.place.country),
        );
        let rec = ctx.record(vec![why]);
        ctx.emit(EventBody::ContactSuppressed {
            job_id,
            step: step_name,
            decision: rec,
        });
        return Some(now);
    }

    // Pick the channel: the step's, then its fallbacks.
    let mut refusals = Vec::new();
    let mut chosen = None;
    for &c in std::iter::once(&placed.step.channel).chain(placed.step.fallback.iter()) {
        match usable_point(ctx, c, placed) {
            Ok(p) => {
                chosen = Some((c, p));
                break;
            }
            Err(r) => refusals.push(r),
        }
    }
    let Some((channel, point)) = chosen else {
        let rec = ctx.record(refusals);
        ctx.emit(EventBody::ContactSuppressed {
            job_id,
            step: step_name,
            decision: rec,
        });
        return Some(now);
    };

    let (zones, uncertain) = ctx.zones_for(Some(point));
    let spec = WindowSpec {
        packs: ctx.packs(),
        zones: &zones,
        channel,
        inconvenient: a.inconvenient(),
    };
    let horizon_days = u64::from(ctx.policy.file.horizon_days);
    let mut reasons = Vec::new();
    if uncertain {
        let r = core_rule!(
            "core.zone.unknown",
            "12 CFR 1006.6(b)(1)(i) commentary: convenient in every location the information suggests",
        );
        reasons.push(reason(
            ReasonCode::ZoneUncertain,
            &r,
            format!("no zone signal: honouring {} zones", zones.len()),
        ));
    }
    match earliest_allowed(ctx, &spec, channel, now, horizon_days, None) {
        Earliest::Now(end) => {
            let validity = ledger::hours(ctx.policy.file.job_validity_hours);
            let not_after = end.min(now + validity);
            let r = ctx.policy_rule(format!("cadence.{cadence_name}").into());
            reasons.insert(
                0,
                reason(
                    ReasonCode::StepDue,
                    &r,
                    format!(
                        "segment {}, step {}, attempt {}",
                        seg.name,
                        placed.name,
                        attempt + 1
                    ),
                ),
            );
            let job = ContactJob {
                job_id,
                step: step_name,
                channel,
                contact_point_id: (*point.id).into(),
                template: placed.step.template.clone(),
                language: ctx.profile.place.language.to_string(),
                not_before: Timestamp::from_micros(now),
                not_after: Timestamp::from_micros(not_after),
                balance_minor: a.balance_minor,
                currency: ctx.profile.place.currency.to_string(),
                decision: ctx.record(reasons),
                due_date: ctx
                    .profile
                    .debts
                    .iter()
                    .filter(|d| d.balance_minor > 0)
                    .map(|d| d.due_date)
                    .min()
                    .map(tacto_model::Date::from),
            };
            ctx.emit(EventBody::ContactScheduled(Box::new(job)));
            Some(not_after)
        }
        Earliest::Later {
            at,
            end,
            reasons: why,
        } => defer(
            ctx,
            key,
            job_id.clone(),
            step_name,
            jittered(&job_id, at, end, ctx.policy.file.jitter_minutes),
            reasons,
            why,
        ),
        // Nothing allowed within the horizon: defer to its end and look again then.
        Earliest::NotWithin(why) => defer(
            ctx,
            key,
            job_id,
            step_name,
            now + horizon_days.max(1) as i64 * MICROS_PER_DAY,
            reasons,
            why,
        ),
    }
}

/// Records a deferral of the due job to `until` (once: an identical deferral is not repeated).
fn defer(
    ctx: &mut Ctx<'_>,
    key: JobKey,
    job_id: JobId,
    step: String,
    until: i64,
    mut reasons: Vec<Reason>,
    why: Vec<Reason>,
) -> Option<i64> {
    if ctx
        .account
        .deferral()
        .is_some_and(|d| d.key == key && d.until == until)
    {
        return Some(until);
    }
    reasons.splice(0..0, why);
    let rec = ctx.record(reasons);
    ctx.emit(EventBody::ContactDeferred {
        job_id,
        step,
        until: Timestamp::from_micros(until),
        decision: rec,
    });
    Some(until)
}

/// A deterministic instant in `[at, end)`, spread over up to `jitter_minutes`.
fn jittered(job: &JobId, at: i64, end: i64, jitter_minutes: u32) -> i64 {
    let span = (i64::from(jitter_minutes) * MICROS_PER_MINUTE).min((end - at) / 2);
    if span <= MICROS_PER_MINUTE {
        return at;
    }
    let minutes = span / MICROS_PER_MINUTE;
    let h = xxhash_rust::xxh3::xxh3_64(job.as_str().as_bytes());
    let offset = (h % minutes.unsigned_abs()) as i64;
    at + offset * MICROS_PER_MINUTE
}

fn usable_point<'p>(ctx: &Ctx<'p>, c: Channel, placed: &PlacedStep) -> Result<&'p Point, Reason> {
    let a = ctx.account;
    if a.opted_out.contains(c) {
        let r = core_rule!(
            "core.opt_out.channel",
            "12 CFR 1006.14(h); 47 CFR 64.1200(a)(10): a request not to use a medium is honoured",
        );
        return Err(reason(
            ReasonCode::OptedOut,
            &r,
            format!("opted out of {c}"),
        ));
    }
    let min = ctx
        .policy
        .channel_min_balance(c)
        .max(placed.step.min_balance_minor.unwrap_or(0));
    if a.balance_minor < min {
        let r = ctx.policy_rule(format!("channels.{c}.min_balance_minor").into());
        return Err(reason(
            ReasonCode::BelowMinimumBalance,
            &r,
            format!("balance {} below {min} for {c}", a.balance_minor),
        ));
    }
    let consent_rule = ctx
        .packs()
        .iter()
        .flat_map(|p| p.consent.iter())
        .find(|(set, _)| set.contains(c))
        .map(|(_, r)| r.clone())
        .or_else(|| {
            ctx.policy
                .file
                .require_consent_everywhere
                .then(|| ctx.policy_rule(arcstr::literal!("require_consent_everywhere")))
        });
    let mut points = ctx
        .profile
        .points
        .iter()
        .filter(|p| p.channel == c)
        .peekable();
    if points.peek().is_none() {
        let r = core_rule!(
            "core.contact_point",
            "Tacto core: a channel needs an address",
        );
        return Err(reason(
            ReasonCode::NoContactPoint,
            &r,
            format!("no {c} contact point"),
        ));
    }
    match &consent_rule {
        None => points.next().ok_or_else(|| unreachable_reason(c)),
        Some(rule) => points
            .find(|p| p.consent)
            .ok_or_else(|| reason(ReasonCode::NoConsent, rule, format!("no consent for {c}"))),
    }
}

fn unreachable_reason(c: Channel) -> Reason {
    let r = core_rule!(
        "core.contact_point",
        "Tacto core: a channel needs an address",
    );
    reason(
        ReasonCode::NoContactPoint,
        &r,
        format!("no {c} contact point"),
    )
}

/// When the next contact on a channel may happen.
pub(crate) enum Earliest {
    /// Allowed now, until `end` (exclusive).
    Now(i64),
    /// Allowed from `at` until `end`, for these reasons not before.
    Later {
        at: i64,
        end: i64,
        reasons: Vec<Reason>,
    },
    /// Not allowed within the horizon.
    NotWithin(Vec<Reason>),
}

fn all_caps<'c>(ctx: &'c Ctx<'_>) -> impl Iterator<Item = (&'c CapRule, &'c ArcStr)> {
    const POLICY: &ArcStr = &arcstr::literal!("policy");
    ctx.packs()
        .iter()
        .flat_map(|p| p.file.caps.iter().map(move |c| (c, &p.file.id)))
        .chain(ctx.policy.file.caps.iter().map(|c| (c, POLICY)))
}

fn consent_lifts(a: &Account, since_channels: &[Channel], hours: Option<u32>, t: i64) -> bool {
    let (Some(h), Some(c)) = (hours, a.call_consent_at()) else {
        return false;
    };
    let conv = a.last_conversation_on(since_channels);
    t < c + ledger::hours(h) && conv.is_none_or(|v| v <= c)
}

/// The earliest instant `>= t` at which `channel` may be used for this account, with the end
/// of that allowed stretch. `exclude` leaves one job out of the ledger (the job being checked).
fn earliest_allowed(
    ctx: &Ctx<'_>,
    spec: &WindowSpec<'_>,
    channel: Channel,
    t: i64,
    horizon_days: u64,
    exclude: Option<JobKey>,
) -> Earliest {
    let a = ctx.account;
    // The job being checked is not counted against itself (only the last look excludes one).
    let owned: Vec<Attempt>;
    let attempts: &[Attempt] = match exclude {
        None => &a.attempts,
        Some(k) => {
            owned = a.attempts.iter().copied().filter(|x| x.key != k).collect();
            &owned
        }
    };
    let mut reasons: Vec<Reason> = Vec::new();
    let mut add = |r: Reason| {
        if !reasons.iter().any(|x| x.rule == r.rule) {
            reasons.push(r);
        }
    };
    let limit = t + horizon_days.max(1) as i64 * MICROS_PER_DAY;
    let mut cur = t;
    for _ in 0..64 {
        let Some((start, end)) = spec.open_at_or_after(cur, horizon_days.max(1)) else {
            if let Some(c) = spec.closure_at(cur) {
                add(closure_reason(&c));
            }
            return Earliest::NotWithin(reasons);
        };
        if start > cur {
            if let Some(c) = spec.closure_at(cur) {
                add(closure_reason(&c));
            }
            cur = start;
        }
        if cur >= limit {
            return Earliest::NotWithin(reasons);
        }
        let mut moved = false;
        for (cap, pack) in all_caps(ctx) {
            if !cap.channels.contains(&channel)
                || consent_lifts(a, &cap.channels, cap.consent_exclusion_hours, cur)
            {
                continue;
            }
            let free = ledger::cap_free_at(attempts, cap, cur);
            if free > cur {
                let n = ledger::cap_count(attempts, cap, cur);
                let r = RuleRef {
                    rule: cap.rule.clone(),
                    pack: pack.clone(),
                    source: cap.source.clone(),
                };
                add(reason(
                    ReasonCode::FrequencyCap,
                    &r,
                    format!("{n} of {} in {} h", cap.max, cap.window_hours),
                ));
                cur = free;
                moved = true;
            }
        }
        for p in ctx.packs().iter() {
            for w in p.file.conversation_waits.iter() {
                if !w.channels.contains(&channel)
                    || consent_lifts(a, &w.triggered_by, w.consent_exclusion_hours, cur)
                {
                    continue;
                }
                if let Some(conv) = a.last_conversation_on(&w.triggered_by) {
                    let free = conv + ledger::hours(w.hours);
                    if free > cur {
                        add(reason(
                            ReasonCode::ConversationWait,
                            &p.rule_ref(&w.rule, &w.source),
                            format!("conversation less than {} h ago", w.hours),
                        ));
                        cur = free;
                        moved = true;
                    }
                }
            }
            for s in p.file.spacing.iter() {
                if !s.channels.contains(&channel) {
                    continue;
                }
                let free = ledger::spacing_free_at(attempts, s, cur);
                if free > cur {
                    add(reason(
                        ReasonCode::Spacing,
                        &p.rule_ref(&s.rule, &s.source),
                        format!("at least {} h between contacts", s.min_hours),
                    ));
                    cur = free;
                    moved = true;
                }
            }
        }
        if !moved {
            if cur == t && reasons.is_empty() {
                return Earliest::Now(end);
            }
            return Earliest::Later {
                at: cur,
                end,
                reasons,
            };
        }
    }
    Earliest::NotWithin(reasons)
}

fn closure_reason(c: &Closure) -> Reason {
    let r = c.rule.clone().unwrap_or_else(|| {
        core_rule!(
            "consumer.inconvenient_times",
            "12 CFR 1006.6(b)(1): times the consumer said are inconvenient",
        )
    });
    reason(c.code, &r, format!("closed in {}", c.zone.name()))
}

/// The last look before a send: is this job still allowed at `now`? Dispatch calls it right
/// before calling a provider. `Err` carries the reasons it is not.
pub fn last_look(
    account: &Account,
    job: &ContactJob,
    now: Timestamp,
    policy: &Policy,
) -> Result<(), Vec<Reason>> {
    let Some(profile) = account.profile.as_deref() else {
        let r = core_rule!("core.unknown_account", "Tacto core: unknown account");
        return Err(vec![reason(
            ReasonCode::NoContactPoint,
            &r,
            "account unknown",
        )]);
    };
    let ctx = Ctx {
        account,
        profile,
        policy,
        packs: std::cell::OnceCell::new(),
        now: now.as_micros(),
        out: Vec::new(),
    };
    if let Some((why, _)) = hold(&ctx) {
        return Err(vec![why]);
    }
    let Some(key) = JobKey::parse(job.job_id.as_str(), account.id.as_str()) else {
        let r = core_rule!(
            "core.job_id",
            "Tacto core: job ids are derived from the account",
        );
        return Err(vec![reason(
            ReasonCode::NoContactPoint,
            &r,
            "job id not of this account",
        )]);
    };
    let attempt = account.attempts.iter().find(|x| x.key == key);
    if attempt.is_none_or(|x| !x.in_queue() || x.has(af::STALE)) {
        let r = core_rule!(
            "core.job_recalled",
            "Tacto core: recalled or finished jobs are not sent",
        );
        return Err(vec![reason(
            ReasonCode::PartialPayment,
            &r,
            "job no longer queued",
        )]);
    }
    if ctx.packs().is_empty() {
        let r = core_rule!("core.unknown_jurisdiction", "Tacto core: no pack");
        return Err(vec![reason(ReasonCode::UnknownJurisdiction, &r, "no pack")]);
    }
    if now > job.not_after || now < job.not_before {
        let r = core_rule!(
            "core.job_window",
            "Tacto core: a job is sent only inside its window",
        );
        return Err(vec![reason(
            ReasonCode::QuietHours,
            &r,
            "outside the job's window",
        )]);
    }
    let point = profile
        .points
        .iter()
        .find(|p| p.channel == job.channel && p.id == job.contact_point_id);
    let Some(point) = point else {
        return Err(vec![unreachable_reason(job.channel)]);
    };
    if account.opted_out.contains(job.channel) {
        let r = core_rule!("core.opt_out.channel", "12 CFR 1006.14(h)");
        return Err(vec![reason(ReasonCode::OptedOut, &r, "opted out")]);
    }
    let (zones, _) = ctx.zones_for(Some(point));
    let spec = WindowSpec {
        packs: ctx.packs(),
        zones: &zones,
        channel: job.channel,
        inconvenient: account.inconvenient(),
    };
    match earliest_allowed(&ctx, &spec, job.channel, ctx.now, 1, Some(key)) {
        Earliest::Now(_) => Ok(()),
        Earliest::Later { reasons, .. } | Earliest::NotWithin(reasons) => Err(reasons),
    }
}

/// Decides and applies until the account is quiet: returns every output, in order, and the
/// next wake-up. This is what the services and the simulator call.
pub fn settle(account: &mut Account, now: Timestamp, policy: &Policy) -> Decision {
    let mut all = Vec::new();
    let mut wake = None;
    // Each round changes state (a recall, a kept promise, a step done); a handful suffice.
    for _ in 0..16 {
        let d = decide(account, now, policy);
        wake = d.next_wake;
        if d.events.is_empty() {
            break;
        }
        for e in &d.events {
            account.apply(e);
        }
        all.extend(d.events);
    }
    // A quiet account never asks to be woken in the past: that would spin a timer loop.
    let floor = now.plus(chrono::TimeDelta::minutes(1));
    Decision {
        events: all,
        next_wake: wake.map(|w| if w <= now { floor } else { w }),
    }
}

/// An account id's state with nothing applied (convenience for tests and tools).
pub fn empty(id: &str) -> Account {
    Account::new(tacto_model::AccountId(id.into()))
}
