//! An account's state: `fold(events)`. Applying the same event twice changes nothing.
//!
//! The state is kept small (it is held in memory for every account): short strings inline
//! (`CompactString`), zones as `chrono_tz::Tz`, flags as bits, rare parts (promise, disputes,
//! declared times, payments) behind one optional box, the ledger pruned to the longest rule
//! window, and the ids of the last [`RECENT_IDS`] applied events as 64-bit fingerprints.
//! No personal data is kept: contact addresses stay in the event log (dispatch reads them from
//! there); the state keeps only each contact point's id, consent and zones.

use crate::channels::ChannelSet;
use crate::ledger::{
    Attempt, JobKey, MAX_WINDOW_HOURS, flags as af, hours, micros, minute_down, minute_up,
};
use crate::pack::parse_hhmm;
use crate::window::InconvenientRange;
use crate::zones::parse_zone;
use chrono::NaiveDate;
use chrono_tz::Tz;
use compact_str::CompactString;
use std::collections::BTreeMap;
use std::sync::Arc;
use tacto_model::{
    AccountData, AccountId, Channel, DisputeReason, Event, EventBody, EventId, Jurisdiction,
    OutcomeStatus, Timestamp,
};
use thin_vec::ThinVec;

/// How many recent event ids an account remembers for de-duplication. Older duplicates are
/// caught by the log layer (offsets) and by each event's own idempotence (payments by id).
pub const RECENT_IDS: usize = 8;

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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// Id within the account.
    pub id: CompactString,
    /// Channel.
    pub channel: Channel,
    /// Consent.
    pub consent: bool,
    /// Preference, lower first.
    pub preference: i16,
    /// Zones of this point: its own, or its phone area code's (up to two); none if unknown.
    pub zones: [Option<Tz>; 2],
}

/// One debt's balance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DebtState {
    /// Debt id.
    pub id: CompactString,
    /// Outstanding balance, minor units.
    pub balance_minor: i64,
    /// Missed due date.
    pub due_date: NaiveDate,
}

/// The parts of a profile that many accounts share (same currency, product, language and
/// place); [`crate::store::AccountStore`] keeps one copy of each distinct value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Place {
    /// Currency code.
    pub currency: CompactString,
    /// Product line.
    pub product: CompactString,
    /// Template language.
    pub language: CompactString,
    /// Country code.
    pub country: CompactString,
    /// Subdivision code, if any.
    pub subdivision: Option<CompactString>,
    /// Address zone.
    pub address_zone: Option<Tz>,
    /// Declared zone.
    pub declared_zone: Option<Tz>,
}

/// What the system of record says about the customer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// Currency, product, language, jurisdiction and zones (shared between accounts).
    pub place: Arc<Place>,
    /// Debts, with payments since the snapshot applied.
    pub debts: ThinVec<DebtState>,
    /// Risk score.
    pub risk_score: Option<i32>,
    /// Customer value.
    pub customer_value: Option<i32>,
    /// Free attributes, when any.
    pub attributes: Option<Box<BTreeMap<CompactString, CompactString>>>,
    /// Contact points, by preference.
    pub points: ThinVec<Point>,
    /// When the snapshot was taken (its event's `occurred_at`).
    pub as_of: i64,
}

impl Profile {
    /// The jurisdiction, as the model spells it.
    pub fn jurisdiction(&self) -> Jurisdiction {
        Jurisdiction {
            country: self.place.country.to_string(),
            subdivision: self.place.subdivision.as_ref().map(ToString::to_string),
        }
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .as_ref()
            .and_then(|m| m.get(key))
            .map(CompactString::as_str)
    }
}

/// A pending promise to pay.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Promise {
    /// Promise id.
    pub id: CompactString,
    /// Promised amount.
    pub amount_minor: i64,
    /// Due date (customer's local date).
    pub due_date: NaiveDate,
    /// Paid since the promise was made.
    pub paid_minor: i64,
}

/// The instalments of a payment plan after the one pending as the [`Promise`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanRest {
    /// The plan's id; its instalments are promises `{plan_id}/{n}`.
    pub plan_id: CompactString,
    /// Number (from 1) of the next instalment.
    pub next: u16,
    /// The instalments still to come: due date and amount.
    pub rest: ThinVec<(NaiveDate, i64)>,
}

impl PlanRest {
    /// The promise id of instalment `n` of plan `plan_id`.
    pub fn promise_id(plan_id: &str, n: u16) -> CompactString {
        compact_str::format_compact!("{plan_id}/{n}")
    }

    /// Whether `promise_id` is one of this plan's instalments.
    pub fn owns(&self, promise_id: &str) -> bool {
        promise_id
            .strip_prefix(self.plan_id.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|n| n.parse::<u16>().is_ok())
    }
}

/// An open dispute.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dispute {
    /// Dispute id.
    pub id: CompactString,
    /// Reason.
    pub reason: DisputeReason,
    /// Whether its customer-service task was emitted.
    pub task_created: bool,
}

/// A payment remembered: applied once by id, and re-applied over an older snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deferral {
    /// The job.
    pub key: JobKey,
    /// When it becomes allowed.
    pub until: i64,
}

/// The rarer parts of an account's state, allocated only when one is present.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extras {
    /// Pending promise.
    pub promise: Option<Promise>,
    /// Open disputes.
    pub disputes: ThinVec<Dispute>,
    /// Times the customer declared inconvenient.
    pub inconvenient: ThinVec<InconvenientRange>,
    /// Payments remembered for [`PAYMENT_MEMORY_DAYS`].
    pub payments: ThinVec<PaymentMemo>,
    /// The rest of a payment plan whose current instalment is the promise.
    pub plan: Option<Box<PlanRest>>,
}

impl Extras {
    fn is_empty(&self) -> bool {
        self.promise.is_none()
            && self.plan.is_none()
            && self.disputes.is_empty()
            && self.inconvenient.is_empty()
            && self.payments.is_empty()
    }
}

/// The id of an account's output number `seq` (from 0): `{account}:o{seq}`.
pub fn output_id(account: &str, seq: usize) -> EventId {
    let mut n = itoa::Buffer::new();
    let seq = n.format(seq);
    let mut id = CompactString::with_capacity(account.len() + 2 + seq.len());
    id.push_str(account);
    id.push_str(":o");
    id.push_str(seq);
    EventId(id)
}

/// The sequence number of an output id made by [`output_id`] for `account`, if it is one.
pub fn output_sequence(account: &str, event_id: &str) -> Option<u64> {
    event_id
        .strip_prefix(account)?
        .strip_prefix(":o")?
        .parse()
        .ok()
}

/// The state of one account.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Account {
    /// Account id.
    pub id: CompactString,
    /// System-of-record data; `None` until the account is upserted.
    pub profile: Option<Box<Profile>>,
    /// Promise, disputes, declared times and payments, when any.
    pub extras: Option<Box<Extras>>,
    /// Total outstanding balance.
    pub balance_minor: i64,
    /// Direct prior consent to be called (minutes since the epoch, rounded down; 0 = never).
    pub consent_minute: u32,
    /// Last conversation per channel (index: sms, email, voice; minutes since the epoch,
    /// rounded up; 0 = none).
    pub conversations: [u32; 3],
    /// When the last step was executed (minutes since the epoch, rounded up).
    pub last_step_minute: u32,
    /// Until when the deferred job waits (micros; 0 = no deferral).
    pub deferred_until: i64,
    /// The contact-pressure ledger.
    pub attempts: ThinVec<Attempt>,
    /// Fingerprints of the last applied event ids.
    pub recent: [u64; RECENT_IDS],
    /// Last step executed (scheduled or suppressed), valid when `has_last_step`.
    pub last_step_key: JobKey,
    /// The deferred job, valid when `deferred_until != 0`.
    pub deferred_key: JobKey,
    /// Day 0 of the current cycle.
    pub cycle_start: NaiveDate,
    /// Number of output events applied (the next output's sequence number).
    pub outputs: u32,
    /// Current cadence cycle.
    pub cycle: u16,
    /// See [`flag`].
    pub flags: u16,
    /// Channels opted out of.
    pub opted_out: ChannelSet,
    /// Next slot of `recent` to overwrite.
    pub recent_next: u8,
    /// Whether `last_step_key` is set.
    pub has_last_step: bool,
}

const NO_KEY: JobKey = JobKey {
    cycle: 0,
    day: 0,
    slot: 0,
    attempt: 0,
};

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
            id: CompactString::from(id.as_str()),
            profile: None,
            extras: None,
            balance_minor: 0,
            consent_minute: 0,
            conversations: [0; 3],
            last_step_minute: 0,
            deferred_until: 0,
            attempts: ThinVec::new(),
            recent: [0; RECENT_IDS],
            last_step_key: NO_KEY,
            deferred_key: NO_KEY,
            cycle_start: NaiveDate::MIN,
            outputs: 0,
            cycle: 0,
            flags: 0,
            opted_out: ChannelSet::EMPTY,
            recent_next: 0,
            has_last_step: false,
        }
    }

    /// The account id as the model's type.
    pub fn account_id(&self) -> AccountId {
        AccountId(self.id.clone())
    }

    /// The pending promise.
    pub fn promise(&self) -> Option<&Promise> {
        self.extras.as_ref().and_then(|x| x.promise.as_ref())
    }

    /// Open disputes.
    pub fn disputes(&self) -> &[Dispute] {
        self.extras.as_ref().map_or(&[], |x| &x.disputes)
    }

    /// Times the customer declared inconvenient.
    pub fn inconvenient(&self) -> &[InconvenientRange] {
        self.extras.as_ref().map_or(&[], |x| &x.inconvenient)
    }

    /// Payments remembered.
    pub fn payments(&self) -> &[PaymentMemo] {
        self.extras.as_ref().map_or(&[], |x| &x.payments)
    }

    /// When direct prior consent to be called was given.
    pub fn call_consent_at(&self) -> Option<i64> {
        (self.consent_minute != 0).then_some(micros(self.consent_minute))
    }

    /// The last step executed in any cycle, and when.
    pub fn last_step(&self) -> Option<(JobKey, i64)> {
        self.has_last_step
            .then_some((self.last_step_key, micros(self.last_step_minute)))
    }

    /// The job waiting for its window, if any.
    pub fn deferral(&self) -> Option<Deferral> {
        (self.deferred_until != 0).then_some(Deferral {
            key: self.deferred_key,
            until: self.deferred_until,
        })
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }

    fn set_last_step(&mut self, key: JobKey, at: i64) {
        self.last_step_key = key;
        self.last_step_minute = minute_up(at);
        self.has_last_step = true;
        self.deferred_until = 0;
    }

    fn clear_steps(&mut self) {
        self.has_last_step = false;
        self.deferred_until = 0;
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

    /// Whether this state includes the decision output `event_id`. Outputs are numbered per
    /// account ([`output_id`]), so a reader of a copy that lags behind decide (dispatch's view
    /// of the decide changelog) can tell whether its copy already has the state that produced
    /// an output. An id that is not an output of this account is always included.
    pub fn includes_output(&self, event_id: &str) -> bool {
        output_sequence(&self.id, event_id).is_none_or(|seq| seq < u64::from(self.outputs))
    }

    /// Whether an event with this id was applied recently.
    pub fn seen(&self, event_id: &str) -> bool {
        let fp = fingerprint(event_id);
        self.recent.contains(&fp)
    }

    /// Applies one event. Returns `false` (and changes nothing) for a duplicate or an event
    /// about another account.
    pub fn apply(&mut self, e: &Event) -> bool {
        if e.account_id.as_str() != self.id.as_str() {
            return false;
        }
        let fp = fingerprint(e.id.as_str());
        if self.recent.contains(&fp) {
            return false;
        }
        self.recent[usize::from(self.recent_next) % RECENT_IDS] = fp;
        self.recent_next = ((usize::from(self.recent_next) + 1) % RECENT_IDS) as u8;
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
                let x = self.extras_mut();
                x.plan = None;
                x.promise = Some(Promise {
                    id: promise_id.as_str().into(),
                    amount_minor: *amount_minor,
                    due_date: due_date.naive(),
                    paid_minor: 0,
                });
            }
            EventBody::PlanMade {
                plan_id,
                instalments,
                promise_source: _,
            } => self.start_plan(plan_id, instalments),
            EventBody::PromiseCancelled { promise_id } => {
                if self.end_promise(promise_id) {
                    self.end_plan();
                }
            }
            EventBody::DisputeOpened {
                dispute_id, reason, ..
            } => {
                let x = self.extras_mut();
                if !x.disputes.iter().any(|d| d.id == *dispute_id) {
                    x.disputes.push(Dispute {
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
                let x = self.extras_mut();
                let before = x.disputes.len();
                x.disputes.retain(|d| d.id != *dispute_id);
                if before != x.disputes.len() && !collection_may_resume {
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
                self.extras_mut().inconvenient = ranges
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
            EventBody::CallConsentGiven {} => self.consent_minute = minute_down(now).max(1),
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
                        at_minute: minute_up(job.not_after.as_micros()),
                        key,
                        channel: job.channel,
                        flags: af::QUEUED,
                    });
                    self.set_last_step(key, now);
                }
            }
            EventBody::ContactDeferred { job_id, until, .. } => {
                if let Some(key) = JobKey::parse(job_id.as_str(), self.id.as_str()) {
                    self.deferred_key = key;
                    self.deferred_until = until.as_micros().max(1);
                }
            }
            EventBody::ContactSuppressed { job_id, .. } => {
                if let Some(key) = JobKey::parse(job_id.as_str(), self.id.as_str()) {
                    self.set_last_step(key, now);
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
                if let Some(x) = self.extras.as_mut() {
                    for d in x.disputes.iter_mut().filter(|d| d.id == *dispute_id) {
                        d.task_created = true;
                    }
                }
            }
            EventBody::PromiseKept { promise_id, .. } => {
                let paid = self.promise().map(|p| p.paid_minor - p.amount_minor);
                if self.end_promise(promise_id) && !self.next_instalment(promise_id, paid) {
                    self.new_cycle(now, false);
                }
            }
            EventBody::PromiseBroken { promise_id, .. } => {
                if self.end_promise(promise_id) {
                    self.end_plan();
                    self.new_cycle(now, true);
                }
            }
        }
        self.prune(now);
        true
    }

    /// Ends the pending promise if it has this id; returns whether it did.
    fn end_promise(&mut self, id: &str) -> bool {
        match self.extras.as_mut() {
            Some(x) if x.promise.as_ref().is_some_and(|p| p.id == *id) => {
                x.promise = None;
                true
            }
            _ => false,
        }
    }

    /// After instalment `kept` of a plan was kept, the next one becomes the promise, with what
    /// was paid beyond the kept one (`overpaid`) counted toward it. Whether there was one.
    fn next_instalment(&mut self, kept: &str, overpaid: Option<i64>) -> bool {
        let Some(x) = self.extras.as_mut() else {
            return false;
        };
        let Some(plan) = x.plan.as_mut().filter(|p| p.owns(kept)) else {
            return false;
        };
        if plan.rest.is_empty() {
            x.plan = None;
            return false;
        }
        let (due, amount) = plan.rest.remove(0);
        x.promise = Some(Promise {
            id: PlanRest::promise_id(&plan.plan_id, plan.next),
            amount_minor: amount,
            due_date: due,
            paid_minor: overpaid.unwrap_or(0).max(0),
        });
        plan.next = plan.next.saturating_add(1);
        if plan.rest.is_empty() {
            x.plan = None;
        }
        true
    }

    /// A new plan: its first instalment becomes the promise (replacing any), the rest wait.
    fn start_plan(&mut self, plan_id: &str, instalments: &[tacto_model::Instalment]) {
        let Some((first, rest)) = instalments.split_first() else {
            return;
        };
        let x = self.extras_mut();
        x.promise = Some(Promise {
            id: PlanRest::promise_id(plan_id, 1),
            amount_minor: first.amount_minor,
            due_date: first.due_date.naive(),
            paid_minor: 0,
        });
        x.plan = (!rest.is_empty()).then(|| {
            Box::new(PlanRest {
                plan_id: plan_id.into(),
                next: 2,
                rest: rest
                    .iter()
                    .map(|i| (i.due_date.naive(), i.amount_minor))
                    .collect(),
            })
        });
    }

    fn end_plan(&mut self) {
        if let Some(x) = self.extras.as_mut() {
            x.plan = None;
        }
    }

    /// The rest of the payment plan in progress, if any.
    pub fn plan(&self) -> Option<&PlanRest> {
        self.extras.as_ref().and_then(|x| x.plan.as_deref())
    }

    fn new_cycle(&mut self, now: i64, broken_promise: bool) {
        self.cycle = self.cycle.wrapping_add(1);
        self.cycle_start = Timestamp::from_micros(now).to_datetime().date_naive();
        self.clear_steps();
        if broken_promise {
            self.flags |= flag::BROKEN_PROMISE_CYCLE;
        } else {
            self.flags &= !flag::BROKEN_PROMISE_CYCLE;
        }
    }

    fn upsert(&mut self, data: &AccountData, now: i64) {
        let was_open = self.is_open();
        let had_profile = self.profile.is_some();
        let mut points: ThinVec<Point> = data
            .contact_points
            .iter()
            .map(|p| {
                let mut zones = [None, None];
                match p.zone.as_deref().and_then(parse_zone) {
                    Some(z) => zones[0] = Some(z),
                    None if p.channel != Channel::Email => {
                        for (slot, z) in zones.iter_mut().zip(
                            crate::zones::zones_for_phone(&p.address)
                                .unwrap_or_default()
                                .iter(),
                        ) {
                            *slot = Some(*z);
                        }
                    }
                    None => {}
                }
                Point {
                    id: p.id.as_str().into(),
                    channel: p.channel,
                    consent: p.consent,
                    preference: i16::try_from(p.preference).unwrap_or(i16::MAX),
                    zones,
                }
            })
            .collect();
        points.sort_by_key(|p| p.preference);
        let place = Place {
            currency: data.currency.as_str().into(),
            product: data.product.as_str().into(),
            language: data.language.as_str().into(),
            country: data.jurisdiction.country.as_str().into(),
            subdivision: data.jurisdiction.subdivision.as_deref().map(Into::into),
            address_zone: data.address_zone.as_deref().and_then(parse_zone),
            declared_zone: data.declared_zone.as_deref().and_then(parse_zone),
        };
        let profile = Profile {
            place: Arc::new(place),
            debts: data
                .debts
                .iter()
                .map(|d| DebtState {
                    id: d.debt_id.as_str().into(),
                    balance_minor: d.balance_minor,
                    due_date: d.due_date.naive(),
                })
                .collect(),
            risk_score: data.risk_score,
            customer_value: data.customer_value,
            attributes: (!data.attributes.is_empty()).then(|| {
                Box::new(
                    data.attributes
                        .iter()
                        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                        .collect(),
                )
            }),
            points,
            as_of: now,
        };
        self.profile = Some(Box::new(profile));
        // Payments newer than the snapshot are not in it yet: apply them again.
        let later: Vec<PaymentMemo> = self
            .payments()
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
            self.clear_steps();
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
        if self.payments().iter().any(|p| p.id == id) {
            return; // the same payment reported again
        }
        let Some(p) = self.profile.as_ref() else {
            // A payment before the account is known still counts once it is.
            self.extras_mut().payments.push(PaymentMemo {
                at: now,
                amount_minor: amount.max(0),
                debt: -1,
                id,
            });
            return;
        };
        let same_currency = p.place.currency == *currency;
        let debt = debt_id
            .and_then(|id| p.debts.iter().position(|d| d.id == *id))
            .and_then(|i| i16::try_from(i).ok())
            .unwrap_or(-1);
        if same_currency && amount > 0 {
            self.allocate(amount, debt);
            let x = self.extras_mut();
            x.payments.push(PaymentMemo {
                at: now,
                amount_minor: amount,
                debt,
                id,
            });
            if let Some(pr) = x.promise.as_mut() {
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
            let slot = &mut self.conversations[channel_slot(channel)];
            *slot = (*slot).max(minute_up(now));
        }
        let Some(key) = job_id.and_then(|j| JobKey::parse(j.as_str(), self.id.as_str())) else {
            return;
        };
        for a in self.attempts.iter_mut().filter(|a| a.key == key) {
            if a.has(af::QUEUED) {
                // Date it by the outcome; never later than its latest possible send when the
                // job has not yet gone (NotSent), otherwise by when we heard.
                a.at_minute = minute_up(now);
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
        self.attempts.retain(|a| a.in_queue() || a.at() > horizon);
        let memory = now - PAYMENT_MEMORY_DAYS * 24 * hours(1);
        if let Some(x) = self.extras.as_mut() {
            x.payments.retain(|p| p.at > memory);
            if x.is_empty() {
                self.extras = None;
            }
        }
    }

    /// Attempts still held by adapters.
    pub fn queued(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().filter(|a| a.in_queue())
    }

    /// Last conversation on any of the channels, if any.
    pub fn last_conversation_on(&self, channels: &[Channel]) -> Option<i64> {
        channels
            .iter()
            .map(|&c| self.conversations[channel_slot(c)])
            .filter(|&t| t != 0)
            .max()
            .map(micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ids_round_trip() {
        let id = output_id("ACC:9", 1207);
        assert_eq!(id.0, "ACC:9:o1207");
        assert_eq!(output_sequence("ACC:9", &id.0), Some(1207));
        assert_eq!(output_sequence("ACC", &id.0), None);
        assert_eq!(output_id("A", 0).0, "A:o0");
    }
}
