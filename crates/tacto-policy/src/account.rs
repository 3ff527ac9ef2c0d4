//! An account's state: `fold(events)`. Applying the same event twice changes nothing.
//!
//! The state is kept small (it is held in memory for every account): identifiers and addresses
//! as boxed strings, zones as `chrono_tz::Tz`, flags as bits, the ledger pruned to the longest
//! rule window, and the ids of the last [`RECENT_IDS`] applied events as 64-bit fingerprints.

use crate::channels::ChannelSet;
use crate::ledger::{Attempt, JobKey, MAX_WINDOW_HOURS, flags as af, hours};
use crate::pack::parse_hhmm;
use crate::window::InconvenientRange;
use crate::zones::parse_zone;
use chrono::NaiveDate;
use chrono_tz::Tz;
use std::collections::BTreeMap;
use tacto_model::{
    AccountData, AccountId, Channel, DisputeReason, Event, EventBody, Jurisdiction, OutcomeStatus,
    Timestamp,
};

/// How many recent event ids an account remembers for de-duplication. Older duplicates are
/// caught by the log layer (offsets) and by each event's own idempotence (payments by id).
pub const RECENT_IDS: usize = 16;

/// How long payments are remembered, so that a stale system-of-record snapshot cannot undo a
/// real-time payment (days).
pub const PAYMENT_MEMORY_DAYS: i64 = 35;

/// Account flags.
pub mod flag {
    /// The customer asked to cease communication.
    pub const CEASE: u16 = 1;
    /// Bankruptcy stay.
    pub const BANKRUPT: u16 = 2;
    /// The customer died.
    pub const DECEASED: u16 = 4;
    /// Represented by an attorney.
    pub const ATTORNEY: u16 = 8;
    /// A dispute was resolved in the customer's favour: no more collection.
    pub const DISPUTE_UPHELD: u16 = 16;
    /// The current cycle follows a broken promise.
    pub const BROKEN_PROMISE_CYCLE: u16 = 32;
}

/// A contact point as kept in state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// Id within the account.
    pub id: Box<str>,
    /// Channel.
    pub channel: Channel,
    /// Address (personal data).
    pub address: Box<str>,
    /// Own zone, if known.
    pub zone: Option<Tz>,
    /// Consent.
    pub consent: bool,
    /// Preference, lower first.
    pub preference: i32,
}

/// One debt's balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebtState {
    /// Debt id.
    pub id: Box<str>,
    /// Outstanding balance, minor units.
    pub balance_minor: i64,
    /// Missed due date.
    pub due_date: NaiveDate,
}

/// What the system of record says about the customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Person id.
    pub person_id: Box<str>,
    /// Currency code.
    pub currency: Box<str>,
    /// Debts, with payments since the snapshot applied.
    pub debts: Vec<DebtState>,
    /// Product line.
    pub product: Box<str>,
    /// Risk score.
    pub risk_score: Option<i32>,
    /// Customer value.
    pub customer_value: Option<i32>,
    /// Free attributes.
    pub attributes: BTreeMap<Box<str>, Box<str>>,
    /// Jurisdiction.
    pub jurisdiction: Jurisdiction,
    /// Address zone.
    pub address_zone: Option<Tz>,
    /// Declared zone.
    pub declared_zone: Option<Tz>,
    /// Contact points, by preference.
    pub points: Vec<Point>,
    /// Template language.
    pub language: Box<str>,
    /// When the snapshot was taken (its event's `occurred_at`).
    pub as_of: i64,
}

/// A pending promise to pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promise {
    /// Promise id.
    pub id: Box<str>,
    /// Promised amount.
    pub amount_minor: i64,
    /// Due date (customer's local date).
    pub due_date: NaiveDate,
    /// Paid since the promise was made.
    pub paid_minor: i64,
}

/// An open dispute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispute {
    /// Dispute id.
    pub id: Box<str>,
    /// Reason.
    pub reason: DisputeReason,
    /// Whether its customer-service task was emitted.
    pub task_created: bool,
}

/// A payment remembered: applied once by id, and re-applied over an older snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentMemo {
    /// When it was paid (micros).
    pub at: i64,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// Index of the debt it paid, or -1 when spread.
    pub debt: i16,
    /// Fingerprint of the payment id.
    pub id: u64,
}

/// A deferred job waiting for its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deferral {
    /// The job.
    pub key: JobKey,
    /// When it becomes allowed.
    pub until: i64,
}

/// The state of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Account id.
    pub id: AccountId,
    /// System-of-record data; `None` until the account is upserted.
    pub profile: Option<Box<Profile>>,
    /// Total outstanding balance.
    pub balance_minor: i64,
    /// See [`flag`].
    pub flags: u16,
    /// Channels opted out of.
    pub opted_out: ChannelSet,
    /// Pending promise.
    pub promise: Option<Box<Promise>>,
    /// Open disputes.
    pub disputes: Vec<Dispute>,
    /// Times the customer declared inconvenient.
    pub inconvenient: Vec<InconvenientRange>,
    /// Direct prior consent to be called, if given (micros).
    pub call_consent_at: Option<i64>,
    /// Last conversation per channel (index: sms, email, voice).
    pub last_conversation: [Option<i64>; 3],
    /// Current cadence cycle.
    pub cycle: u16,
    /// Day 0 of the current cycle.
    pub cycle_start: NaiveDate,
    /// Last step executed (scheduled or suppressed) and when.
    pub last_step: Option<(JobKey, i64)>,
    /// The job waiting for its window, if any.
    pub deferral: Option<Deferral>,
    /// The contact-pressure ledger.
    pub attempts: Vec<Attempt>,
    /// Payments remembered for [`PAYMENT_MEMORY_DAYS`].
    pub payments: Vec<PaymentMemo>,
    /// Fingerprints of the last applied event ids.
    pub recent: [u64; RECENT_IDS],
    /// Number of output events applied (the next output's sequence number).
    pub outputs: u32,
    /// Number of events applied.
    pub applied: u32,
}

fn fingerprint(id: &str) -> u64 {
    // 0 marks an empty slot; map a zero hash elsewhere.
    xxhash_rust::xxh3::xxh3_64(id.as_bytes()).max(1)
}

fn channel_slot(c: Channel) -> usize {
    crate::pack::channel_index(c)
}

impl Account {
    /// An account with no history.
    pub fn new(id: AccountId) -> Self {
        Self {
            id,
            profile: None,
            balance_minor: 0,
            flags: 0,
            opted_out: ChannelSet::EMPTY,
            promise: None,
            disputes: Vec::new(),
            inconvenient: Vec::new(),
            call_consent_at: None,
            last_conversation: [None; 3],
            cycle: 0,
            cycle_start: NaiveDate::MIN,
            last_step: None,
            deferral: None,
            attempts: Vec::new(),
            payments: Vec::new(),
            recent: [0; RECENT_IDS],
            outputs: 0,
            applied: 0,
        }
    }

    /// `fold(events)`.
    pub fn fold<'a>(id: AccountId, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut a = Self::new(id);
        for e in events {
            a.apply(e);
        }
        a
    }

    /// Whether a flag is set.
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// Whether the account is open for collection (known, with a positive balance).
    pub fn is_open(&self) -> bool {
        self.profile.is_some() && self.balance_minor > 0
    }

    /// Whether an event with this id was applied recently.
    pub fn seen(&self, event_id: &str) -> bool {
        let fp = fingerprint(event_id);
        self.recent.contains(&fp)
    }

    /// Applies one event. Returns `false` (and changes nothing) for a duplicate or an event
    /// about another account.
    pub fn apply(&mut self, e: &Event) -> bool {
        if e.account_id != self.id {
            return false;
        }
        let fp = fingerprint(e.id.as_str());
        if self.recent.contains(&fp) {
            return false;
        }
        self.recent[self.applied as usize % RECENT_IDS] = fp;
        self.applied = self.applied.wrapping_add(1);
        let now = e.occurred_at.as_micros();
        if e.body.is_decision() {
            self.outputs = self.outputs.wrapping_add(1);
        }
        match &e.body {
            EventBody::AccountUpserted(data) => self.upsert(data, now),
            EventBody::PaymentReceived {
                payment_id,
                debt_id,
                amount_minor,
                currency,
                method: _,
            } => self.pay(
                now,
                fingerprint(payment_id),
                debt_id.as_ref().map(|d| d.as_str()),
                *amount_minor,
                currency,
            ),
            EventBody::PromiseMade {
                promise_id,
                amount_minor,
                due_date,
                promise_source: _,
            } => {
                self.promise = Some(Box::new(Promise {
                    id: promise_id.as_str().into(),
                    amount_minor: *amount_minor,
                    due_date: due_date.naive(),
                    paid_minor: 0,
                }));
            }
            EventBody::PromiseCancelled { promise_id } => {
                if self.promise.as_ref().is_some_and(|p| *p.id == **promise_id) {
                    self.promise = None;
                }
            }
            EventBody::DisputeOpened {
                dispute_id, reason, ..
            } => {
                if !self.disputes.iter().any(|d| *d.id == **dispute_id) {
                    self.disputes.push(Dispute {
                        id: dispute_id.as_str().into(),
                        reason: *reason,
                        task_created: false,
                    });
                }
            }
            EventBody::DisputeResolved {
                dispute_id,
                collection_may_resume,
            } => {
                let before = self.disputes.len();
                self.disputes.retain(|d| *d.id != **dispute_id);
                if before != self.disputes.len() && !collection_may_resume {
                    self.flags |= flag::DISPUTE_UPHELD;
                }
            }
            EventBody::OptedOut { channel, .. } => {
                self.opted_out = match channel {
                    Some(c) => self.opted_out.with(*c),
                    None => ChannelSet::ALL,
                };
            }
            EventBody::CeaseCommunication {} => self.flags |= flag::CEASE,
            EventBody::BankruptcyNotified {} => self.flags |= flag::BANKRUPT,
            EventBody::DeceasedNotified {} => self.flags |= flag::DECEASED,
            EventBody::AttorneyRepresented { .. } => self.flags |= flag::ATTORNEY,
            EventBody::InconvenientTimesDeclared { ranges } => {
                self.inconvenient = ranges
                    .iter()
                    .map(|r| {
                        let weekdays = if r.weekdays.is_empty() {
                            0x7f
                        } else {
                            r.weekdays
                                .iter()
                                .filter(|d| (1..=7).contains(*d))
                                .fold(0u8, |m, d| m | (1 << (d - 1)))
                        };
                        // An unreadable range blocks the whole day: the conservative reading.
                        let minutes = match (parse_hhmm(&r.start), parse_hhmm(&r.end)) {
                            (Some(s), Some(e)) if s < e => (s, e),
                            _ => (0, 1440),
                        };
                        InconvenientRange {
                            minutes,
                            weekdays: if weekdays == 0 { 0x7f } else { weekdays },
                        }
                    })
                    .collect();
            }
            EventBody::CallConsentGiven {} => self.call_consent_at = Some(now),
            EventBody::ContactOutcome {
                job_id,
                channel,
                status,
                conversation,
                inbound: _,
            } => self.outcome(now, job_id.as_ref(), *channel, *status, *conversation),
            EventBody::ContactScheduled(job) => {
                if let Some(key) = JobKey::parse(job.job_id.as_str(), self.id.as_str())
                    && !self.attempts.iter().any(|a| a.key == key)
                {
                    self.attempts.push(Attempt {
                        at: job.not_after.as_micros(),
                        key,
                        channel: job.channel,
                        flags: af::QUEUED,
                    });
                    self.last_step = Some((key, now));
                    self.deferral = None;
                }
            }
            EventBody::ContactDeferred { job_id, until, .. } => {
                if let Some(key) = JobKey::parse(job_id.as_str(), self.id.as_str()) {
                    self.deferral = Some(Deferral {
                        key,
                        until: until.as_micros(),
                    });
                }
            }
            EventBody::ContactSuppressed { job_id, .. } => {
                if let Some(key) = JobKey::parse(job_id.as_str(), self.id.as_str()) {
                    self.last_step = Some((key, now));
                    self.deferral = None;
                }
            }
            EventBody::JobsRecalled { job_ids, .. } => {
                for id in job_ids {
                    if let Some(key) = JobKey::parse(id.as_str(), self.id.as_str()) {
                        for a in self.attempts.iter_mut().filter(|a| a.key == key) {
                            a.flags |= af::RECALLED;
                            a.flags &= !af::STALE;
                        }
                    }
                }
            }
            EventBody::TaskCreated { dispute_id, .. } => {
                for d in self.disputes.iter_mut().filter(|d| *d.id == **dispute_id) {
                    d.task_created = true;
                }
            }
            EventBody::PromiseKept { promise_id, .. } => {
                if self.promise.as_ref().is_some_and(|p| *p.id == **promise_id) {
                    self.promise = None;
                    self.new_cycle(now, false);
                }
            }
            EventBody::PromiseBroken { promise_id, .. } => {
                if self.promise.as_ref().is_some_and(|p| *p.id == **promise_id) {
                    self.promise = None;
                    self.new_cycle(now, true);
                }
            }
        }
        self.prune(now);
        true
    }

    fn new_cycle(&mut self, now: i64, broken_promise: bool) {
        self.cycle = self.cycle.wrapping_add(1);
        self.cycle_start = Timestamp::from_micros(now).to_datetime().date_naive();
        self.last_step = None;
        self.deferral = None;
        if broken_promise {
            self.flags |= flag::BROKEN_PROMISE_CYCLE;
        } else {
            self.flags &= !flag::BROKEN_PROMISE_CYCLE;
        }
    }

    fn upsert(&mut self, data: &AccountData, now: i64) {
        let was_open = self.is_open();
        let had_profile = self.profile.is_some();
        let mut points: Vec<Point> = data
            .contact_points
            .iter()
            .map(|p| Point {
                id: p.id.as_str().into(),
                channel: p.channel,
                address: p.address.as_str().into(),
                zone: p.zone.as_deref().and_then(parse_zone),
                consent: p.consent,
                preference: p.preference,
            })
            .collect();
        points.sort_by_key(|p| p.preference);
        let profile = Profile {
            person_id: data.person_id.as_str().into(),
            currency: data.currency.as_str().into(),
            debts: data
                .debts
                .iter()
                .map(|d| DebtState {
                    id: d.debt_id.as_str().into(),
                    balance_minor: d.balance_minor,
                    due_date: d.due_date.naive(),
                })
                .collect(),
            product: data.product.as_str().into(),
            risk_score: data.risk_score,
            customer_value: data.customer_value,
            attributes: data
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            jurisdiction: data.jurisdiction.clone(),
            address_zone: data.address_zone.as_deref().and_then(parse_zone),
            declared_zone: data.declared_zone.as_deref().and_then(parse_zone),
            points,
            language: data.language.as_str().into(),
            as_of: now,
        };
        self.profile = Some(Box::new(profile));
        // Payments newer than the snapshot are not in it yet: apply them again.
        let later: Vec<PaymentMemo> = self
            .payments
            .iter()
            .copied()
            .filter(|p| p.at > now)
            .collect();
        for p in later {
            self.allocate(p.amount_minor, p.debt);
        }
        self.recompute_balance();
        if self.is_open() && (!was_open || !had_profile) {
            if had_profile {
                self.cycle = self.cycle.wrapping_add(1);
            }
            self.cycle_start = self
                .profile
                .as_ref()
                .and_then(|p| {
                    p.debts
                        .iter()
                        .filter(|d| d.balance_minor > 0)
                        .map(|d| d.due_date)
                        .min()
                })
                .unwrap_or(NaiveDate::MIN);
            self.last_step = None;
            self.deferral = None;
            self.flags &= !flag::BROKEN_PROMISE_CYCLE;
        }
    }

    fn recompute_balance(&mut self) {
        self.balance_minor = self
            .profile
            .as_ref()
            .map(|p| p.debts.iter().map(|d| d.balance_minor.max(0)).sum())
            .unwrap_or(0);
    }

    fn allocate(&mut self, mut amount: i64, debt: i16) {
        let Some(p) = self.profile.as_mut() else {
            return;
        };
        if let Ok(i) = usize::try_from(debt)
            && let Some(d) = p.debts.get_mut(i)
        {
            d.balance_minor -= amount;
            return;
        }
        // Spread over the debts, oldest first.
        let mut order: Vec<usize> = (0..p.debts.len()).collect();
        order.sort_by_key(|&i| p.debts[i].due_date);
        for i in order {
            if amount <= 0 {
                break;
            }
            let d = &mut p.debts[i];
            let take = amount.min(d.balance_minor.max(0));
            d.balance_minor -= take;
            amount -= take;
        }
        if amount > 0
            && let Some(d) = p.debts.first_mut()
        {
            d.balance_minor -= amount; // overpayment: a credit on the first debt
        }
    }

    fn pay(&mut self, now: i64, id: u64, debt_id: Option<&str>, amount: i64, currency: &str) {
        if self.payments.iter().any(|p| p.id == id) {
            return; // the same payment reported again
        }
        let Some(p) = self.profile.as_ref() else {
            // A payment before the account is known still counts once it is.
            self.payments.push(PaymentMemo {
                at: now,
                amount_minor: amount.max(0),
                debt: -1,
                id,
            });
            return;
        };
        let same_currency = *p.currency == *currency;
        let debt = debt_id
            .and_then(|id| p.debts.iter().position(|d| *d.id == *id))
            .and_then(|i| i16::try_from(i).ok())
            .unwrap_or(-1);
        if same_currency && amount > 0 {
            self.allocate(amount, debt);
            self.payments.push(PaymentMemo {
                at: now,
                amount_minor: amount,
                debt,
                id,
            });
            if let Some(pr) = self.promise.as_mut() {
                pr.paid_minor += amount;
            }
            self.recompute_balance();
        }
        // Anything queued was planned for another balance: recall it and plan again.
        for a in self.attempts.iter_mut().filter(|a| a.in_queue()) {
            a.flags |= af::STALE;
        }
    }

    fn outcome(
        &mut self,
        now: i64,
        job_id: Option<&tacto_model::JobId>,
        channel: Channel,
        status: OutcomeStatus,
        conversation: bool,
    ) {
        if conversation {
            let slot = &mut self.last_conversation[channel_slot(channel)];
            *slot = Some(slot.map_or(now, |t| t.max(now)));
        }
        let Some(key) = job_id.and_then(|j| JobKey::parse(j.as_str(), self.id.as_str())) else {
            return;
        };
        for a in self.attempts.iter_mut().filter(|a| a.key == key) {
            if a.has(af::QUEUED) {
                // Date it by the outcome; never later than its latest possible send when the
                // job has not yet gone (NotSent), otherwise by when we heard.
                a.at = now;
            }
            match status {
                OutcomeStatus::NotSent => a.flags |= af::NOT_SENT,
                s if s.never_connected() => a.flags |= af::NEVER_CONNECTED,
                _ => {}
            }
            if status.is_terminal() {
                a.flags &= !af::QUEUED;
            }
        }
    }

    fn prune(&mut self, now: i64) {
        let horizon = now - hours(MAX_WINDOW_HOURS);
        self.attempts.retain(|a| a.in_queue() || a.at > horizon);
        let memory = now - PAYMENT_MEMORY_DAYS * 24 * hours(1);
        self.payments.retain(|p| p.at > memory);
    }

    /// Attempts still held by adapters.
    pub fn queued(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().filter(|a| a.in_queue())
    }

    /// Last conversation on any of the channels, if any.
    pub fn last_conversation_on(&self, channels: &[Channel]) -> Option<i64> {
        channels
            .iter()
            .filter_map(|&c| self.last_conversation[channel_slot(c)])
            .max()
    }
}
