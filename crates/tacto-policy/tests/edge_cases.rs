//! One named test for every edge case listed at the end of `shared/compliance-rules.md`, plus
//! the hold, recall and promise behaviour of ARCHITECTURE.md.

mod common;

use chrono::{Datelike, NaiveDate};
use common::*;
use tacto_model::*;
use tacto_policy::last_look;
use tacto_policy::pack::Packs;

fn first_sms_policy() -> tacto_policy::Policy {
    policy_with(
        r#"[{ day = 0, channel = "sms", template = "t", fallback = ["email"] },
            { day = 0, channel = "voice", template = "call" }]"#,
        "",
    )
}

fn only_deferral(events: &[Event]) -> (Timestamp, DecisionRecord) {
    let d = deferrals(events);
    assert_eq!(d.len(), 1, "want one deferral, got {events:#?}");
    (d[0].0, d[0].1.clone())
}

fn assert_between(t: Timestamp, lo: &str, hi: &str) {
    assert!(t >= ts(lo) && t < ts(hi), "{t} not in [{lo}, {hi})");
}

// ---- DST, zones -------------------------------------------------------------------------------

#[test]
fn dst_spring_forward_day_opens_at_0800_daylight_time() {
    // 2026-03-08: New York jumps to EDT at 07:00Z. 11:30Z is 07:30 EDT.
    let mut sim = Sim::new(
        first_sms_policy(),
        &AccountSpec::us_ny(),
        "2026-03-08T11:30:00Z",
    );
    let (until, why) = only_deferral(&sim.log);
    assert_between(until, "2026-03-08T12:00:00Z", "2026-03-08T12:30:00Z");
    assert!(has_rule(&why, "us.fdcpa.hours"), "{why:?}");
    let out = sim.run_until("2026-03-08T13:00:00Z");
    let j = jobs(&out);
    assert_eq!(j.len(), 1);
    assert_eq!(
        j[0].not_before, until,
        "sent at the deferred instant, not dropped"
    );
}

#[test]
fn dst_fall_back_day_opens_at_0800_standard_time_and_closes_at_2100() {
    // 2026-11-01: back to EST at 06:00Z. 12:30Z is 07:30 EST.
    let sim = Sim::new(
        first_sms_policy(),
        &AccountSpec::us_ny(),
        "2026-11-01T12:30:00Z",
    );
    let (until, _) = only_deferral(&sim.log);
    assert_between(until, "2026-11-01T13:00:00Z", "2026-11-01T13:30:00Z");
    // 20:00 EST: allowed, and the job expires by 21:00 EST (02:00Z).
    let sim = Sim::new(
        first_sms_policy(),
        &AccountSpec::us_ny(),
        "2026-11-02T01:00:00Z",
    );
    let j = sim.all_jobs();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].not_after, ts("2026-11-02T02:00:00Z"));
}

#[test]
fn arizona_has_no_dst_so_the_utc_window_is_the_same_all_year() {
    let spec = AccountSpec {
        subdivision: Some("US-AZ"),
        address_zone: Some("America/Phoenix"),
        phone: "+16025550100",
        ..AccountSpec::us_ny()
    };
    for day in ["2026-01-15", "2026-07-15"] {
        let sim = Sim::new(first_sms_policy(), &spec, &format!("{day}T14:30:00Z"));
        let (until, _) = only_deferral(&sim.log);
        assert_between(
            until,
            &format!("{day}T15:00:00Z"),
            &format!("{day}T15:30:00Z"),
        );
    }
    // Denver (same standard offset, with DST) is open at 14:30Z in July: 08:30 MDT.
    let denver = AccountSpec {
        address_zone: Some("America/Denver"),
        phone: "+13035550100",
        ..spec
    };
    let sim = Sim::new(first_sms_policy(), &denver, "2026-07-15T14:30:00Z");
    assert_eq!(sim.all_jobs().len(), 1);
}

#[test]
fn two_zone_signals_allow_only_the_intersection() {
    // Address in New York, phone with a Los Angeles area code.
    let spec = AccountSpec {
        phone: "+13105550100",
        ..AccountSpec::us_ny()
    };
    // 14:00Z = 09:00 New York but 06:00 Los Angeles.
    let sim = Sim::new(first_sms_policy(), &spec, "2026-11-16T14:00:00Z");
    let (until, _) = only_deferral(&sim.log);
    assert_between(until, "2026-11-16T16:00:00Z", "2026-11-16T16:30:00Z");
    // 20:30 New York (17:30 LA): allowed, but only until 21:00 New York.
    let sim = Sim::new(first_sms_policy(), &spec, "2026-11-17T01:30:00Z");
    let j = sim.all_jobs();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].not_after, ts("2026-11-17T02:00:00Z"));
}

#[test]
fn unknown_zone_honours_every_zone_of_the_jurisdiction() {
    let spec = AccountSpec {
        subdivision: None,
        address_zone: None,
        phone: "+19995550100", // area code not in the table
        ..AccountSpec::us_ny()
    };
    // 17:00Z = 12:00 New York, 07:00 Honolulu.
    let sim = Sim::new(first_sms_policy(), &spec, "2026-11-16T17:00:00Z");
    let (until, why) = only_deferral(&sim.log);
    assert_between(until, "2026-11-16T18:00:00Z", "2026-11-16T18:30:00Z");
    assert!(has_reason(&why, ReasonCode::ZoneUncertain), "{why:?}");
}

#[test]
fn contact_computed_at_2059_is_refused_by_the_last_look_after_2100() {
    // 01:59Z = 20:59 EST.
    let sim = Sim::new(
        first_sms_policy(),
        &AccountSpec::us_ny(),
        "2026-11-17T01:59:00Z",
    );
    let j = sim.all_jobs();
    assert_eq!(j.len(), 1);
    let job = j[0].clone();
    assert!(job.not_after <= ts("2026-11-17T02:00:00Z"));
    assert!(last_look(&sim.account, &job, ts("2026-11-17T01:59:30Z"), &sim.policy).is_ok());
    let late = last_look(&sim.account, &job, ts("2026-11-17T02:00:30Z"), &sim.policy);
    assert!(late.is_err(), "a send after 21:00 must be refused");
}

// ---- US 7-in-7 --------------------------------------------------------------------------------

fn calls_in_any_7_days(jobs: &[&ContactJob]) -> usize {
    let times: Vec<i64> = jobs.iter().map(|j| j.not_before.as_micros()).collect();
    let week = 168 * 3_600_000_000i64;
    times
        .iter()
        .map(|&t| times.iter().filter(|&&u| u >= t && u < t + week).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn the_8th_call_in_a_rolling_7_days_is_deferred() {
    let mut sim = Sim::new(
        dialer_policy(),
        &AccountSpec::us_ny(),
        "2026-11-16T13:00:00Z",
    );
    let out = sim.run_answering("2026-11-30T13:00:00Z", OutcomeStatus::NoAnswer, false);
    let all: Vec<_> = sim.all_jobs();
    assert!(
        all.len() > 7,
        "the dialer keeps calling after the window frees"
    );
    assert_eq!(calls_in_any_7_days(&all), 7);
    let capped = deferrals(&out)
        .into_iter()
        .find(|(_, r)| has_rule(r, "us.reg_f.7in7"))
        .expect("a deferral citing 7-in-7");
    assert!(has_reason(capped.1, ReasonCode::FrequencyCap));
    // The 8th call waits for the first to leave the window (first outcome 13:01Z + 7 days).
    let eighth = all[7];
    assert!(
        eighth.not_before >= ts("2026-11-23T13:01:00Z"),
        "{}",
        eighth.not_before
    );
}

#[test]
fn busy_signals_do_not_count_but_voicemails_do() {
    let mut busy = Sim::new(
        dialer_policy(),
        &AccountSpec::us_ny(),
        "2026-11-16T13:00:00Z",
    );
    busy.run_answering("2026-11-19T13:00:00Z", OutcomeStatus::Busy, false);
    assert!(
        calls_in_any_7_days(&busy.all_jobs()) > 7,
        "calls that never connect are excluded from 7-in-7"
    );
    let mut vm = Sim::new(
        dialer_policy(),
        &AccountSpec::us_ny(),
        "2026-11-16T13:00:00Z",
    );
    vm.run_answering("2026-11-19T13:00:00Z", OutcomeStatus::Voicemail, false);
    assert_eq!(calls_in_any_7_days(&vm.all_jobs()), 7);
}

#[test]
fn a_conversation_blocks_calls_for_7_days() {
    let mut sim = Sim::new(
        dialer_policy(),
        &AccountSpec::us_ny(),
        "2026-11-16T13:00:00Z",
    );
    let out = sim.run_answering(
        "2026-11-20T13:00:00Z",
        OutcomeStatus::RightPartyContact,
        true,
    );
    assert_eq!(
        sim.all_jobs().len(),
        1,
        "no call after the conversation: {out:#?}"
    );
    assert!(deferrals(&out).iter().any(
        |(u, r)| has_rule(r, "us.reg_f.conversation_wait") && *u >= ts("2026-11-23T13:01:00Z")
    ));
    let out = sim.run_until("2026-11-23T16:00:00Z");
    assert_eq!(jobs(&out).len(), 1, "calls resume after the 7-day wait");
}

#[test]
fn an_inbound_conversation_also_starts_the_wait() {
    let mut sim = Sim::new(
        dialer_policy(),
        &AccountSpec::us_ny(),
        "2026-11-16T12:00:00Z",
    );
    // 07:00 local: deferred. The customer calls in at 07:30.
    sim.now = ts("2026-11-16T12:30:00Z");
    sim.input(EventBody::ContactOutcome {
        job_id: None,
        channel: Channel::Voice,
        status: OutcomeStatus::RightPartyContact,
        conversation: true,
        inbound: true,
    });
    let out = sim.run_until("2026-11-22T12:00:00Z");
    assert!(jobs(&out).is_empty(), "{out:#?}");
}

#[test]
fn direct_consent_lifts_the_conversation_wait() {
    let mut sim = Sim::new(
        dialer_policy(),
        &AccountSpec::us_ny(),
        "2026-11-16T13:00:00Z",
    );
    let job = sim.all_jobs()[0].clone();
    sim.now = ts("2026-11-16T13:05:00Z");
    sim.input(EventBody::ContactOutcome {
        job_id: Some(job.job_id.clone()),
        channel: Channel::Voice,
        status: OutcomeStatus::RightPartyContact,
        conversation: true,
        inbound: false,
    });
    // During the call: "call me back this afternoon".
    sim.input(EventBody::CallConsentGiven {});
    let out = sim.run_until("2026-11-16T18:00:00Z");
    assert!(!jobs(&out).is_empty(), "consent allows the call-back");
}

// ---- SMS in the caps, per country ---------------------------------------------------------------

#[test]
fn sms_does_not_count_toward_us_7_in_7() {
    let mut sim = Sim::new(sms_policy(), &AccountSpec::us_ny(), "2026-11-16T13:00:00Z");
    sim.run_answering("2026-11-18T13:00:00Z", OutcomeStatus::Delivered, false);
    assert!(calls_in_any_7_days(&sim.all_jobs()) > 7);
}

#[test]
fn sms_counts_in_colombia_once_a_day() {
    let spec = AccountSpec::in_country("CO", "America/Bogota");
    // Tuesday 2026-11-17 08:00 Bogota.
    let mut sim = Sim::new(sms_policy(), &spec, "2026-11-17T13:00:00Z");
    let out = sim.run_answering("2026-11-20T13:00:00Z", OutcomeStatus::Delivered, false);
    let j = sim.all_jobs();
    assert!(j.len() >= 2);
    for w in j.windows(2) {
        assert!(
            w[1].not_before.since(w[0].not_before) >= chrono::TimeDelta::hours(24),
            "{} then {}",
            w[0].not_before,
            w[1].not_before
        );
    }
    assert!(
        deferrals(&out)
            .iter()
            .any(|(_, r)| has_rule(r, "co.ley2300.once_a_day"))
    );
}

#[test]
fn sms_counts_in_ecuador_once_a_day() {
    let spec = AccountSpec::in_country("EC", "America/Guayaquil");
    let mut sim = Sim::new(sms_policy(), &spec, "2026-11-17T13:00:00Z");
    sim.run_answering("2026-11-20T13:00:00Z", OutcomeStatus::Delivered, false);
    let j = sim.all_jobs();
    assert!(j.len() >= 2);
    for w in j.windows(2) {
        assert!(w[1].not_before.since(w[0].not_before) >= chrono::TimeDelta::hours(24));
    }
}

#[test]
fn chile_allows_two_messages_a_week_two_days_apart() {
    let spec = AccountSpec::in_country("CL", "America/Santiago");
    // Monday 2026-11-16 10:00 Santiago (UTC-3 in summer).
    let mut sim = Sim::new(sms_policy(), &spec, "2026-11-16T13:00:00Z");
    sim.run_answering("2026-11-30T13:00:00Z", OutcomeStatus::Delivered, false);
    let j = sim.all_jobs();
    assert!(j.len() >= 3, "{j:#?}");
    assert!(j[1].not_before.since(j[0].not_before) >= chrono::TimeDelta::hours(48));
    assert!(j[2].not_before.since(j[0].not_before) >= chrono::TimeDelta::hours(168));
}

// ---- Holidays and Saturdays ---------------------------------------------------------------------

#[test]
fn colombian_festivos_2026_are_computed_with_their_monday_moves() {
    let packs = Packs::builtin().expect("packs");
    let co = packs.get("CO").expect("CO pack");
    let got: Vec<NaiveDate> = co
        .holidays
        .iter()
        .copied()
        .filter(|d| d.year() == 2026)
        .collect();
    let want: Vec<NaiveDate> = [
        (1, 1),
        (1, 12),
        (3, 23),
        (4, 2),
        (4, 3),
        (5, 1),
        (5, 18),
        (6, 8),
        (6, 15),
        (6, 29),
        (7, 20),
        (8, 7),
        (8, 17),
        (10, 12),
        (11, 2),
        (11, 16),
        (12, 8),
        (12, 25),
    ]
    .iter()
    .map(|&(m, d)| NaiveDate::from_ymd_opt(2026, m, d).expect("date"))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn no_contact_on_a_colombian_festivo() {
    let spec = AccountSpec::in_country("CO", "America/Bogota");
    // Monday 2026-01-12 (Reyes, moved from Tuesday the 6th), 08:00 Bogota.
    let sim = Sim::new(sms_policy(), &spec, "2026-01-12T13:00:00Z");
    let (until, why) = only_deferral(&sim.log);
    assert!(has_reason(&why, ReasonCode::Holiday), "{why:?}");
    assert!(has_rule(&why, "co.ley2300.festivos"));
    assert_between(until, "2026-01-13T12:00:00Z", "2026-01-13T12:30:00Z");
}

#[test]
fn colombia_saturday_closes_at_1500() {
    let spec = AccountSpec::in_country("CO", "America/Bogota");
    // Saturday 2026-11-21 14:59 Bogota: allowed until 15:00.
    let sim = Sim::new(sms_policy(), &spec, "2026-11-21T19:59:00Z");
    let j = sim.all_jobs();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].not_after, ts("2026-11-21T20:00:00Z"));
    // 15:30: deferred past Sunday to Monday 07:00.
    let sim = Sim::new(sms_policy(), &spec, "2026-11-21T20:30:00Z");
    let (until, _) = only_deferral(&sim.log);
    assert_between(until, "2026-11-23T12:00:00Z", "2026-11-23T12:30:00Z");
}

#[test]
fn chile_saturday_runs_until_2000() {
    let spec = AccountSpec::in_country("CL", "America/Santiago");
    // Saturday 2026-11-21 19:00 Santiago (UTC-3).
    let sim = Sim::new(sms_policy(), &spec, "2026-11-21T22:00:00Z");
    let j = sim.all_jobs();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].not_after, ts("2026-11-21T23:00:00Z"));
}

#[test]
fn peru_and_ecuador_have_no_saturday_contact() {
    for (country, zone) in [("PE", "America/Lima"), ("EC", "America/Guayaquil")] {
        let spec = AccountSpec::in_country(country, zone);
        // Saturday 2026-11-21 10:00 local (both UTC-5).
        let sim = Sim::new(sms_policy(), &spec, "2026-11-21T15:00:00Z");
        let (until, why) = only_deferral(&sim.log);
        assert!(
            has_reason(&why, ReasonCode::DayNotAllowed),
            "{country}: {why:?}"
        );
        assert_between(until, "2026-11-23T12:00:00Z", "2026-11-23T12:30:00Z");
    }
}

// ---- Notices arriving while jobs are queued ------------------------------------------------------

fn queued_sim() -> (Sim, JobId) {
    let sim = Sim::new(
        first_sms_policy(),
        &AccountSpec::us_ny(),
        "2026-11-16T15:00:00Z",
    );
    let job = sim.all_jobs()[0].job_id.clone();
    (sim, job)
}

fn assert_recalled_for(notice: EventBody, code: ReasonCode) -> Sim {
    let (mut sim, job) = queued_sim();
    sim.now = ts("2026-11-16T15:01:00Z");
    let out = sim.input(notice);
    let r = recalls(&out);
    assert_eq!(r.len(), 1, "one recall for {code:?}: {out:#?}");
    assert!(r[0].0.contains(&job));
    assert!(has_reason(r[0].1, code), "{:?}", r[0].1);
    sim
}

#[test]
fn sms_stop_recalls_the_queued_sms_and_moves_to_email() {
    let mut sim = assert_recalled_for(
        EventBody::OptedOut {
            channel: Some(Channel::Sms),
            via: "sms_stop".into(),
        },
        ReasonCode::OptedOut,
    );
    let out = sim.run_until("2026-11-20T15:00:00Z");
    assert!(jobs(&out).iter().all(|j| j.channel != Channel::Sms));
}

#[test]
fn cease_recalls_and_stops_everything() {
    let mut sim = assert_recalled_for(
        EventBody::CeaseCommunication {},
        ReasonCode::CeaseCommunication,
    );
    assert!(jobs(&sim.run_until("2026-12-31T00:00:00Z")).is_empty());
}

#[test]
fn dispute_recalls_and_creates_a_customer_service_task() {
    let (mut sim, _) = queued_sim();
    let out = sim.input(EventBody::DisputeOpened {
        dispute_id: "d-1".into(),
        reason: DisputeReason::AlreadyPaid,
        note: String::new(),
    });
    assert_eq!(recalls(&out).len(), 1);
    assert!(out.iter().any(
        |e| matches!(&e.body, EventBody::TaskCreated { dispute_id, .. } if dispute_id == "d-1")
    ));
    assert!(jobs(&sim.run_until("2026-12-31T00:00:00Z")).is_empty());
    // Verified: collection resumes.
    let mut out = sim.input(EventBody::DisputeResolved {
        dispute_id: "d-1".into(),
        collection_may_resume: true,
    });
    out.extend(sim.run_until("2027-01-05T00:00:00Z"));
    assert!(!jobs(&out).is_empty(), "collection resumes once verified");
}

#[test]
fn bankruptcy_recalls_and_stops_everything() {
    let mut sim = assert_recalled_for(EventBody::BankruptcyNotified {}, ReasonCode::Bankruptcy);
    assert!(jobs(&sim.run_until("2026-12-31T00:00:00Z")).is_empty());
}

#[test]
fn attorney_notice_recalls_and_stops_everything() {
    let mut sim = assert_recalled_for(
        EventBody::AttorneyRepresented {
            attorney: "x".into(),
        },
        ReasonCode::AttorneyRepresented,
    );
    assert!(jobs(&sim.run_until("2026-12-31T00:00:00Z")).is_empty());
}

#[test]
fn death_notice_recalls_and_stops_everything() {
    let mut sim = assert_recalled_for(EventBody::DeceasedNotified {}, ReasonCode::Deceased);
    assert!(jobs(&sim.run_until("2026-12-31T00:00:00Z")).is_empty());
}

// ---- Payments and promises ----------------------------------------------------------------------

#[test]
fn payment_in_full_recalls_and_ends_contact() {
    let mut sim = assert_recalled_for(
        EventBody::PaymentReceived {
            payment_id: "pay-1".into(),
            debt_id: None,
            amount_minor: 50_000,
            currency: "USD".into(),
            method: "card".into(),
        },
        ReasonCode::PaidInFull,
    );
    assert!(jobs(&sim.run_until("2026-12-31T00:00:00Z")).is_empty());
}

#[test]
fn a_stale_snapshot_does_not_undo_a_real_time_payment() {
    let (mut sim, _) = queued_sim();
    sim.input(EventBody::PaymentReceived {
        payment_id: "pay-1".into(),
        debt_id: None,
        amount_minor: 50_000,
        currency: "USD".into(),
        method: "card".into(),
    });
    // The nightly refresh, taken before the payment, arrives afterwards.
    let data = AccountSpec::us_ny().data();
    sim.input_dated(
        EventBody::AccountUpserted(Box::new(data)),
        "2026-11-16T05:00:00Z",
    );
    assert_eq!(sim.account.balance_minor, 0);
    assert!(jobs(&sim.run_until("2026-12-31T00:00:00Z")).is_empty());
}

#[test]
fn a_partial_payment_recalls_and_replans() {
    let (mut sim, _) = assert_recalled_for_partial();
    sim.run_until("2026-11-17T15:00:00Z");
    let paid_at = ts("2026-11-16T15:01:00Z");
    let all = sim.all_jobs();
    let j: Vec<_> = all.iter().filter(|j| j.not_before >= paid_at).collect();
    assert!(!j.is_empty(), "contact continues after a partial payment");
    assert_eq!(j[0].balance_minor, 30_000, "planned with the new balance");
}

fn assert_recalled_for_partial() -> (Sim, ()) {
    let sim = assert_recalled_for(
        EventBody::PaymentReceived {
            payment_id: "pay-1".into(),
            debt_id: None,
            amount_minor: 20_000,
            currency: "USD".into(),
            method: "card".into(),
        },
        ReasonCode::PartialPayment,
    );
    (sim, ())
}

#[test]
fn the_same_payment_twice_is_applied_once() {
    let (mut sim, _) = queued_sim();
    let pay = EventBody::PaymentReceived {
        payment_id: "pay-1".into(),
        debt_id: None,
        amount_minor: 20_000,
        currency: "USD".into(),
        method: "card".into(),
    };
    sim.input(pay.clone());
    sim.input(pay); // another event id, the same payment id
    assert_eq!(sim.account.balance_minor, 30_000);
}

#[test]
fn a_promise_holds_contact_until_due_date_plus_grace_then_a_broken_promise_resumes() {
    let (mut sim, job) = queued_sim();
    // 10:00 New York.
    let out = sim.input(EventBody::PromiseMade {
        promise_id: "pr-1".into(),
        amount_minor: 50_000,
        due_date: Date::from_ymd(2026, 11, 20).expect("date"),
        promise_source: PromiseSource::Agent,
    });
    let r = recalls(&out);
    assert_eq!(r.len(), 1);
    assert!(r[0].0.contains(&job) && has_reason(r[0].1, ReasonCode::PromiseHold));
    // Nothing until the end of 2026-11-22 (due + 2 days' grace) in New York: 05:00Z on the 23rd.
    let held = sim.run_until("2026-11-23T04:59:00Z");
    assert!(jobs(&held).is_empty(), "{held:#?}");
    let after = sim.run_until("2026-11-23T16:00:00Z");
    assert!(
        after
            .iter()
            .any(|e| matches!(e.body, EventBody::PromiseBroken { .. }))
    );
    let j = jobs(&after);
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].template, "promise_missed");
}

#[test]
fn a_kept_promise_is_recorded_and_a_paid_account_stays_quiet() {
    let (mut sim, _) = queued_sim();
    sim.input(EventBody::PromiseMade {
        promise_id: "pr-1".into(),
        amount_minor: 50_000,
        due_date: Date::from_ymd(2026, 11, 20).expect("date"),
        promise_source: PromiseSource::SelfService,
    });
    sim.now = ts("2026-11-19T15:00:00Z");
    let out = sim.input(EventBody::PaymentReceived {
        payment_id: "pay-1".into(),
        debt_id: None,
        amount_minor: 50_000,
        currency: "USD".into(),
        method: "card".into(),
    });
    assert!(
        out.iter()
            .any(|e| matches!(e.body, EventBody::PromiseKept { .. }))
    );
    assert!(jobs(&sim.run_until("2026-12-31T00:00:00Z")).is_empty());
}

#[test]
fn each_instalment_of_a_plan_holds_contact_in_turn_and_a_missed_one_ends_the_plan() {
    let (mut sim, job) = queued_sim();
    let out = sim.input(EventBody::PlanMade {
        plan_id: "plan-1".into(),
        instalments: vec![
            Instalment {
                due_date: Date::from_ymd(2026, 11, 20).expect("date"),
                amount_minor: 20_000,
            },
            Instalment {
                due_date: Date::from_ymd(2026, 12, 10).expect("date"),
                amount_minor: 30_000,
            },
        ],
        promise_source: PromiseSource::SelfService,
    });
    let r = recalls(&out);
    assert!(r.len() == 1 && r[0].0.contains(&job), "{out:#?}");
    assert!(has_reason(r[0].1, ReasonCode::PromiseHold));
    // The first instalment is paid early, with 5,000 more: the second now holds, 5,000 of it paid.
    sim.now = ts("2026-11-19T15:00:00Z");
    let out = sim.input(EventBody::PaymentReceived {
        payment_id: "pay-1".into(),
        debt_id: None,
        amount_minor: 25_000,
        currency: "USD".into(),
        method: "card".into(),
    });
    assert!(out.iter().any(|e| matches!(&e.body,
        EventBody::PromiseKept { promise_id, .. } if promise_id == "plan-1/1")));
    let p = sim.account.promise().expect("the second instalment");
    assert_eq!(
        (p.id.as_str(), p.amount_minor, p.paid_minor),
        ("plan-1/2", 30_000, 5_000)
    );
    assert!(
        sim.account.plan().is_none(),
        "no instalment left after the second"
    );
    // Held through the end of 2026-12-12 (due + 2 days' grace) in New York: 05:00Z on the 13th.
    let held = sim.run_until("2026-12-13T04:59:00Z");
    assert!(jobs(&held).is_empty(), "{held:#?}");
    let after = sim.run_until("2026-12-13T18:00:00Z");
    assert!(after.iter().any(|e| matches!(&e.body,
        EventBody::PromiseBroken { promise_id, .. } if promise_id == "plan-1/2")));
    let j = jobs(&after);
    assert_eq!(j.len(), 1, "{after:#?}");
    assert_eq!(j[0].template, "promise_missed");
}

// ---- Idempotence and explanations ---------------------------------------------------------------

#[test]
fn applying_an_event_twice_changes_nothing() {
    let (mut sim, _) = queued_sim();
    let e = sim.log.last().cloned().expect("an event");
    let before = sim.account.clone();
    assert!(!sim.account.apply(&e));
    assert_eq!(sim.account, before);
}

#[test]
fn every_decision_names_its_rule_pack_source_and_policy_version() {
    let mut sim = Sim::new(
        dialer_policy(),
        &AccountSpec::us_ny(),
        "2026-11-16T11:00:00Z",
    );
    sim.run_answering("2026-11-30T13:00:00Z", OutcomeStatus::NoAnswer, false);
    for e in sim.log.iter().filter(|e| e.is_decision()) {
        let json = serde_json::to_value(e).expect("json");
        let rec = json["body"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.get("decision"))
            .unwrap_or_else(|| panic!("no decision record in {json}"));
        assert_eq!(rec["policy_version"], "test-1");
        let reasons = rec["reasons"].as_array().expect("reasons");
        assert!(!reasons.is_empty());
        for r in reasons {
            for field in ["code", "rule", "pack", "source"] {
                assert!(
                    r[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{field} missing in {r}"
                );
            }
        }
    }
}

// ---- Readers of a lagging copy of the state ----------------------------------------------------

#[test]
fn a_copy_of_the_state_tells_whether_it_includes_an_output() {
    let (sim, _) = queued_sim();
    let scheduled = sim
        .log
        .iter()
        .find(|e| matches!(e.body, EventBody::ContactScheduled(_)))
        .expect("a job");
    assert!(sim.account.includes_output(&scheduled.id.0));
    // A copy from before the job was made (the upsert applied, nothing decided yet) does not.
    let mut before = tacto_policy::Account::new(sim.account.account_id());
    before.apply(&sim.log[0]);
    assert!(
        !before.includes_output(&scheduled.id.0),
        "{}",
        scheduled.id.0
    );
    // Ids that are not outputs of this account never make a reader wait.
    assert!(before.includes_output("in-1"));
    assert!(before.includes_output("OTHER:o0"));
}
