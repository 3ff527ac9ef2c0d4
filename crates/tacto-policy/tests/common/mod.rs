//! A given/when/then harness over the pure core: a simulated clock, an account, and the
//! runtime's timer loop (`settle` at every wake-up).
#![allow(dead_code)]

use std::collections::BTreeMap;
use tacto_model::*;
use tacto_policy::{Account, Policy, settle};

/// A policy for scenario tests: `cadence` is the TOML array of steps of the only segment.
pub fn policy_with(cadence: &str, extra: &str) -> Policy {
    let text = format!(
        r#"
version = "test-1"
promise_grace_days = 2
jitter_minutes = 30
job_validity_hours = 4
horizon_days = 21
[channels.voice]
min_balance_minor = 0
[[segments]]
name = "all"
cadence = "main"
[cadences.main]
steps = {cadence}
[cadences.after_broken]
steps = [{{ day = 0, channel = "sms", template = "promise_missed" }}]
[broken_promise]
cadence = "after_broken"
{extra}
"#
    );
    Policy::from_toml(&text).unwrap_or_else(|e| panic!("test policy: {e}"))
}

/// Many voice attempts, two hours apart: exercises caps.
pub fn dialer_policy() -> Policy {
    policy_with(
        r#"[{ day = 0, channel = "voice", template = "call", attempts = 40, retry_after_hours = 2 }]"#,
        "",
    )
}

/// Many SMS, two hours apart.
pub fn sms_policy() -> Policy {
    policy_with(
        r#"[{ day = 0, channel = "sms", template = "sms", attempts = 40, retry_after_hours = 2 }]"#,
        "",
    )
}

pub fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
}

/// Account data builder.
#[derive(Clone, Debug)]
pub struct AccountSpec {
    pub country: &'static str,
    pub subdivision: Option<&'static str>,
    pub address_zone: Option<&'static str>,
    pub phone: &'static str,
    pub phone_zone: Option<&'static str>,
    pub balance: i64,
    pub due: (i32, u32, u32),
    pub consent: bool,
}

impl AccountSpec {
    pub fn us_ny() -> Self {
        Self {
            country: "US",
            subdivision: Some("US-NY"),
            address_zone: Some("America/New_York"),
            phone: "+12125550100",
            phone_zone: None,
            balance: 50_000,
            due: (2026, 1, 1),
            consent: true,
        }
    }

    pub fn in_country(country: &'static str, zone: &'static str) -> Self {
        Self {
            country,
            subdivision: None,
            address_zone: Some(zone),
            phone: "+5715550100",
            phone_zone: None,
            ..Self::us_ny()
        }
    }

    pub fn data(&self) -> AccountData {
        let point = |id: &str, channel, address: &str| ContactPoint {
            id: id.into(),
            channel,
            address: address.into(),
            zone: self.phone_zone.map(Into::into),
            consent: self.consent,
            preference: 0,
        };
        AccountData {
            person_id: PersonId("p".into()),
            currency: "USD".into(),
            debts: vec![Debt {
                debt_id: DebtId("d1".into()),
                balance_minor: self.balance,
                due_date: Date::from_ymd(self.due.0, self.due.1, self.due.2)
                    .expect("valid due date"),
            }],
            product: "card".into(),
            risk_score: None,
            customer_value: None,
            attributes: BTreeMap::new(),
            jurisdiction: Jurisdiction {
                country: self.country.into(),
                subdivision: self.subdivision.map(Into::into),
            },
            address_zone: self.address_zone.map(Into::into),
            declared_zone: None,
            contact_points: vec![
                point("mobile", Channel::Sms, self.phone),
                point("mobile", Channel::Voice, self.phone),
                point("email", Channel::Email, "x@example.com"),
            ],
            language: "en".into(),
            identity: None,
        }
    }
}

/// The simulated world of one account.
pub struct Sim {
    pub policy: Policy,
    pub account: Account,
    pub now: Timestamp,
    pub wake: Option<Timestamp>,
    pub log: Vec<Event>,
    seq: u32,
}

impl Sim {
    pub fn new(policy: Policy, spec: &AccountSpec, at: &str) -> Self {
        let mut sim = Self {
            policy,
            account: Account::new(AccountId("A1".into())),
            now: ts(at),
            wake: None,
            log: Vec::new(),
            seq: 0,
        };
        sim.input(EventBody::AccountUpserted(Box::new(spec.data())));
        sim
    }

    /// Applies an input event at the current time and settles; returns the outputs.
    pub fn input(&mut self, body: EventBody) -> Vec<Event> {
        self.seq += 1;
        let e = Event {
            id: EventId(format!("in-{}", self.seq).into()),
            occurred_at: self.now,
            account_id: self.account.account_id(),
            source: "test".into(),
            body,
        };
        self.account.apply(&e);
        self.log.push(e);
        self.settle()
    }

    pub fn settle(&mut self) -> Vec<Event> {
        let d = settle(&mut self.account, self.now, &self.policy);
        self.wake = d.next_wake;
        self.log.extend(d.events.iter().cloned());
        d.events
    }

    /// Runs timers up to `t` (inclusive) and moves the clock there; returns all outputs.
    pub fn run_until(&mut self, t: &str) -> Vec<Event> {
        self.run_until_ts(ts(t))
    }

    pub fn run_until_ts(&mut self, t: Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match self.wake {
                Some(w) if w <= t => {
                    self.now = w.max(self.now);
                    out.extend(self.settle());
                }
                _ => break,
            }
        }
        self.now = t.max(self.now);
        out.extend(self.settle());
        out
    }

    /// Runs timers to `t`, answering every job with `status` right after its not_before.
    pub fn run_answering(
        &mut self,
        t: &str,
        status: OutcomeStatus,
        conversation: bool,
    ) -> Vec<Event> {
        let end = ts(t);
        let mut all = Vec::new();
        // Jobs already scheduled get their outcome first.
        let pending: Vec<ContactJob> = self
            .all_jobs()
            .into_iter()
            .filter(|j| {
                !self.log.iter().any(|e| {
                    matches!(&e.body,
                    EventBody::ContactOutcome { job_id: Some(id), .. } if *id == j.job_id)
                })
            })
            .cloned()
            .collect();
        for job in pending {
            self.now = self
                .now
                .max(job.not_before.plus(chrono::TimeDelta::minutes(1)));
            all.extend(self.input(EventBody::ContactOutcome {
                job_id: Some(job.job_id.clone()),
                channel: job.channel,
                status,
                conversation,
                inbound: false,
            }));
        }
        for _ in 0..10_000 {
            let outs = match self.wake {
                Some(w) if w <= end => {
                    self.now = w.max(self.now);
                    self.settle()
                }
                _ => break,
            };
            for e in &outs {
                if let EventBody::ContactScheduled(job) = &e.body {
                    self.now = job.not_before.plus(chrono::TimeDelta::minutes(1));
                    let more = self.input(EventBody::ContactOutcome {
                        job_id: Some(job.job_id.clone()),
                        channel: job.channel,
                        status,
                        conversation,
                        inbound: false,
                    });
                    all.extend(more);
                }
            }
            all.extend(outs);
        }
        all
    }
}

pub fn jobs(events: &[Event]) -> Vec<&ContactJob> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ContactScheduled(j) => Some(&**j),
            _ => None,
        })
        .collect()
}

pub fn deferrals(events: &[Event]) -> Vec<(Timestamp, &DecisionRecord)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ContactDeferred {
                until, decision, ..
            } => Some((*until, decision)),
            _ => None,
        })
        .collect()
}

pub fn recalls(events: &[Event]) -> Vec<(&Vec<JobId>, &DecisionRecord)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::JobsRecalled { job_ids, decision } => Some((job_ids, decision)),
            _ => None,
        })
        .collect()
}

pub fn has_reason(rec: &DecisionRecord, code: ReasonCode) -> bool {
    rec.reasons.iter().any(|r| r.code == code)
}

pub fn has_rule(rec: &DecisionRecord, rule: &str) -> bool {
    rec.reasons.iter().any(|r| r.rule == rule)
}

impl Sim {
    /// Applies an input dated `occurred_at` (possibly in the past) at the current time.
    pub fn input_dated(&mut self, body: EventBody, occurred_at: &str) -> Vec<Event> {
        self.seq += 1;
        let e = Event {
            id: EventId(format!("in-{}", self.seq).into()),
            occurred_at: ts(occurred_at),
            account_id: self.account.account_id(),
            source: "test".into(),
            body,
        };
        self.account.apply(&e);
        self.log.push(e);
        self.settle()
    }

    /// Every job scheduled so far.
    pub fn all_jobs(&self) -> Vec<&ContactJob> {
        jobs(&self.log)
    }
}
