//! The contact-pressure ledger as people read it: for one account at one instant, every cap
//! that governs it with the attempts it counts and when it frees up, every conversation wait
//! in force, and the attempts on record. Computed from the same rules and ledger functions
//! [`crate::decide`] uses, so the console shows exactly what the decisions saw.

use crate::account::Account;
use crate::ledger::{self, flags};
use crate::policy::Policy;
use serde::Serialize;
use tacto_model::{ArcStr, Channel, Timestamp};

/// One cap and how much of it the account has used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapUse {
    /// Rule id.
    pub rule: ArcStr,
    /// The pack (or `policy`) it belongs to.
    pub pack: String,
    /// Its legal or contractual source.
    pub source: ArcStr,
    /// Channels it counts and limits together.
    pub channels: Vec<Channel>,
    /// Counted attempts allowed in the window.
    pub max: u32,
    /// Window length, hours.
    pub window_hours: u32,
    /// Attempts it counts in the window ending now.
    pub used: usize,
    /// When one more contact fits, if it does not now.
    pub free_at: Option<Timestamp>,
}

/// A wait after a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WaitUse {
    /// Rule id.
    pub rule: ArcStr,
    /// The pack it belongs to.
    pub pack: String,
    /// Its legal source.
    pub source: ArcStr,
    /// Channels blocked during the wait.
    pub channels: Vec<Channel>,
    /// Length of the wait, hours.
    pub hours: u32,
    /// The last conversation that starts it, if any.
    pub last_conversation: Option<Timestamp>,
    /// Until when it blocks contact, if it does now.
    pub until: Option<Timestamp>,
}

/// One attempt on record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptUse {
    /// The job.
    pub job_id: String,
    /// Its channel.
    pub channel: Channel,
    /// When it counts: the outcome's time, or while unknown the latest it may be sent.
    pub at: Timestamp,
    /// `queued`, `recalled`, `not_sent`, `never_connected` or `done`.
    pub state: &'static str,
}

/// The ledger of an account at an instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pressure {
    /// Every cap that governs the account.
    pub caps: Vec<CapUse>,
    /// Every conversation wait of its packs.
    pub waits: Vec<WaitUse>,
    /// The attempts kept in the ledger (the longest window), oldest first.
    pub attempts: Vec<AttemptUse>,
}

/// The contact-pressure ledger of `account` at `now` under `policy`.
pub fn pressure(account: &Account, now: Timestamp, policy: &Policy) -> Pressure {
    let Some(profile) = account.profile.as_deref() else {
        return Pressure::default();
    };
    let t = now.as_micros();
    let attempts = &account.attempts[..];
    let packs = policy
        .packs
        .for_place(&profile.place.country, profile.place.subdivision.as_deref());
    let pack_caps = packs
        .iter()
        .flat_map(|p| p.file.caps.iter().map(move |c| (c, p.id().to_owned())));
    let policy_caps = policy.file.caps.iter().map(|c| (c, "policy".to_owned()));
    let caps = pack_caps
        .chain(policy_caps)
        .map(|(cap, pack)| {
            let free = ledger::cap_free_at(attempts, cap, t);
            CapUse {
                rule: cap.rule.clone(),
                pack,
                source: cap.source.clone(),
                channels: cap.channels.clone(),
                max: cap.max,
                window_hours: cap.window_hours,
                used: ledger::cap_count(attempts, cap, t),
                free_at: (free > t).then(|| Timestamp::from_micros(free)),
            }
        })
        .collect();
    let waits = packs
        .iter()
        .flat_map(|p| {
            p.file.conversation_waits.iter().map(|w| {
                let last = account.last_conversation_on(&w.triggered_by);
                let until = last.map(|c| c + ledger::hours(w.hours)).filter(|&u| u > t);
                WaitUse {
                    rule: w.rule.clone(),
                    pack: p.id().to_owned(),
                    source: w.source.clone(),
                    channels: w.channels.clone(),
                    hours: w.hours,
                    last_conversation: last.map(Timestamp::from_micros),
                    until: until.map(Timestamp::from_micros),
                }
            })
        })
        .collect();
    let mut listed: Vec<AttemptUse> = attempts
        .iter()
        .map(|a| AttemptUse {
            job_id: a.key.job_id(account.id.as_str()).0.to_string(),
            channel: a.channel,
            at: Timestamp::from_micros(a.at()),
            state: if a.has(flags::RECALLED) {
                "recalled"
            } else if a.has(flags::NOT_SENT) {
                "not_sent"
            } else if a.has(flags::QUEUED) {
                "queued"
            } else if a.has(flags::NEVER_CONNECTED) {
                "never_connected"
            } else {
                "done"
            },
        })
        .collect();
    listed.sort_by_key(|a| a.at);
    Pressure {
        caps,
        waits,
        attempts: listed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacto_model::{EventBody, EventId, JobId, OutcomeStatus, samples};

    #[test]
    fn the_ledger_counts_calls_against_the_us_7_in_7_cap() {
        let policy = Policy::example();
        let mut a = crate::decide::empty("A-1");
        a.apply(&samples::sample_account("A-1"));
        let now = Timestamp::parse("2026-11-23T16:00:00Z").expect("time");
        // Seven answered calls over the last three days.
        for i in 0..7 {
            let job = tacto_model::ContactJob {
                job_id: JobId(format!("A-1:c0:d{i}.0:a0").into()),
                step: "call".into(),
                channel: Channel::Voice,
                contact_point_id: "mobile".into(),
                template: "agent_call".into(),
                language: "en".into(),
                not_before: now.plus(chrono::TimeDelta::hours(-60 + i * 8)),
                not_after: now.plus(chrono::TimeDelta::hours(-59 + i * 8)),
                balance_minor: 45_000,
                currency: "USD".into(),
                decision: tacto_model::DecisionRecord {
                    policy_version: "t".into(),
                    reasons: Vec::new(),
                },
                due_date: None,
            };
            let at = job.not_before;
            for (n, body) in [
                EventBody::ContactScheduled(Box::new(job.clone())),
                EventBody::ContactOutcome {
                    job_id: Some(job.job_id.clone()),
                    channel: Channel::Voice,
                    status: OutcomeStatus::NoAnswer,
                    conversation: false,
                    inbound: false,
                },
            ]
            .into_iter()
            .enumerate()
            {
                a.apply(&tacto_model::Event {
                    id: EventId(format!("e{i}.{n}").into()),
                    occurred_at: at,
                    account_id: a.account_id(),
                    source: "t".into(),
                    body,
                });
            }
        }
        let p = pressure(&a, now, &policy);
        let cap = p
            .caps
            .iter()
            .find(|c| c.rule.contains("7in7"))
            .expect("the US 7-in-7 cap governs a New York account");
        assert_eq!((cap.used, cap.max, cap.window_hours), (7, 7, 168));
        assert!(cap.free_at.is_some_and(|f| f > now));
        assert_eq!(p.attempts.len(), 7);
        assert!(p.attempts.iter().all(|x| x.state == "done"));
    }
}
