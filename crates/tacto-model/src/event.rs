//! The events: every fact that enters Tacto (inputs) and every decision it takes (outputs).
//!
//! One [`Event`] envelope carries one [`EventBody`]. In JSON the body is externally tagged:
//! `{"payment_received": {...}}`; in Avro it is a union of records whose names are those tags
//! (see `schemas/event.avsc`). The order of the variants is the order of the Avro union and must
//! never change: new variants are appended at the end.

use crate::ids::{AccountId, DebtId, EventId, JobId, PersonId};
use crate::time::{Date, Timestamp};
pub use arcstr::ArcStr;
pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An immutable fact about one account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id; a second event with the same id is acknowledged and ignored.
    pub id: EventId,
    /// When the fact happened (for a payment: when it was paid).
    pub occurred_at: Timestamp,
    /// The account it is about; the partition key on the log.
    pub account_id: AccountId,
    /// Who reported it, e.g. `api`, `webhook:bank`, `dialer:vicidial`, `decide`.
    #[serde(default)]
    pub source: CompactString,
    /// What happened.
    pub body: EventBody,
}

/// What happened. Inputs first, then Tacto's own decisions (outputs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    // ---- inputs --------------------------------------------------------------------------
    /// The account was opened, became delinquent, or its data changed (full replacement).
    AccountUpserted(Box<AccountData>),
    /// Money arrived.
    PaymentReceived {
        /// The payment processor's id; a payment is applied once.
        payment_id: String,
        /// The debt it pays, or `null` to spread over the account's debts in order.
        #[serde(default)]
        debt_id: Option<DebtId>,
        /// Amount in minor units (cents).
        amount_minor: i64,
        /// ISO 4217 code; must match the account's currency.
        currency: String,
        /// Channel of payment, e.g. `card`, `bank_transfer`, `cash`.
        #[serde(default)]
        method: String,
    },
    /// The customer promised to pay an amount by a date.
    PromiseMade {
        /// Unique id of the promise.
        promise_id: String,
        /// Promised amount in minor units.
        amount_minor: i64,
        /// Last day (customer's local date) by which the money is due.
        due_date: Date,
        /// Who took the promise.
        promise_source: PromiseSource,
    },
    /// A promise was withdrawn (by the customer or an agent); contact resumes.
    PromiseCancelled {
        /// The promise withdrawn.
        promise_id: String,
    },
    /// The customer disputes the debt or complains; collection stops until it is resolved.
    DisputeOpened {
        /// Unique id of the dispute.
        dispute_id: String,
        /// Why.
        reason: DisputeReason,
        /// Free text from the customer or agent (kept for customer service, never logged).
        #[serde(default)]
        note: String,
    },
    /// Customer service closed a dispute.
    DisputeResolved {
        /// The dispute closed.
        dispute_id: String,
        /// `true` when the debt was verified and collection may resume; `false` when the
        /// customer was right (the account then stays closed to collection).
        collection_may_resume: bool,
    },
    /// The customer asked not to be contacted on one channel, or on any.
    OptedOut {
        /// The channel, or `null` for every channel.
        #[serde(default)]
        channel: Option<Channel>,
        /// How it arrived, e.g. `sms_stop`, `email_unsubscribe`, `agent`, `self_service`.
        #[serde(default)]
        via: String,
    },
    /// The customer asked, in writing, to stop all communication (FDCPA §1692c(c)).
    CeaseCommunication {},
    /// A bankruptcy filing was notified: automatic stay.
    BankruptcyNotified {},
    /// The customer died.
    DeceasedNotified {},
    /// The customer is represented by an attorney: contact the attorney only.
    AttorneyRepresented {
        /// The attorney's name or firm, for the agents.
        #[serde(default)]
        attorney: String,
    },
    /// The customer said which times are inconvenient (replaces any earlier statement).
    InconvenientTimesDeclared {
        /// Local-time ranges to avoid.
        ranges: Vec<LocalTimeRange>,
    },
    /// The customer gave direct prior consent to be called (Reg F §1006.14(b)(3)(i)).
    CallConsentGiven {},
    /// A provider, dialer or agent reported what happened to a contact.
    ContactOutcome {
        /// The job it is about (`null` for an inbound contact the customer started).
        #[serde(default)]
        job_id: Option<JobId>,
        /// The channel used.
        channel: Channel,
        /// What happened.
        status: OutcomeStatus,
        /// Whether a conversation with the customer took place.
        #[serde(default)]
        conversation: bool,
        /// Whether the customer started it.
        #[serde(default)]
        inbound: bool,
    },

    // ---- outputs (decisions) --------------------------------------------------------------
    /// Tacto decided to contact the customer: a job for dispatch.
    ContactScheduled(Box<ContactJob>),
    /// A due contact may not happen now; it will be retried at `until`.
    ContactDeferred {
        /// The job that was due (it keeps this id when it is scheduled later).
        job_id: JobId,
        /// The cadence step that was due.
        step: String,
        /// When it becomes allowed.
        until: Timestamp,
        /// Why, with the rules that fired.
        decision: DecisionRecord,
    },
    /// A due contact will not happen at all.
    ContactSuppressed {
        /// The job that was due and will not be created.
        job_id: JobId,
        /// The cadence step that was due.
        step: String,
        /// Why, with the rules that fired.
        decision: DecisionRecord,
    },
    /// Queued jobs must be cancelled at every adapter.
    JobsRecalled {
        /// The jobs to cancel.
        job_ids: Vec<JobId>,
        /// Why, with the rules that fired.
        decision: DecisionRecord,
    },
    /// A dispute or complaint needs a person in customer service.
    TaskCreated {
        /// Task id (deterministic).
        task_id: String,
        /// The dispute behind it.
        dispute_id: String,
        /// The dispute's reason.
        reason: DisputeReason,
        /// Why, with the rules that fired.
        decision: DecisionRecord,
    },
    /// A promise was kept: enough was paid by its due date plus grace.
    PromiseKept {
        /// The promise.
        promise_id: String,
        /// Why.
        decision: DecisionRecord,
    },
    /// A promise was broken: contact resumes with the broken-promise treatment.
    PromiseBroken {
        /// The promise.
        promise_id: String,
        /// Why.
        decision: DecisionRecord,
    },

    // ---- inputs added later (the Avro union only grows at its end) -------------------------
    /// The customer agreed a payment plan: instalments in date order. Each instalment holds
    /// contact like a promise (`{plan_id}/{n}`, from 1) until its due date plus grace; when one
    /// is kept the next takes over, when one is broken the plan ends.
    PlanMade {
        /// Unique id of the plan.
        plan_id: String,
        /// The instalments, earliest first.
        instalments: Vec<Instalment>,
        /// Who took it.
        promise_source: PromiseSource,
    },
}

/// Who took a promise to pay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromiseSource {
    /// A human agent.
    Agent,
    /// The customer on the self-service page.
    SelfService,
    /// The dialer's disposition.
    Dialer,
    /// Anything else.
    Other,
}

/// Why a customer disputes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeReason {
    /// "I already paid."
    AlreadyPaid,
    /// The product or service failed.
    ServiceFailure,
    /// Identity theft or fraud.
    Fraud,
    /// A complaint about how they were contacted.
    Complaint,
    /// Anything else.
    Other,
}

/// A contact channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Text message.
    Sms,
    /// Email.
    Email,
    /// A phone call (agent, dialer or prerecorded).
    Voice,
}

impl Channel {
    /// Every channel, in a fixed order.
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::Email, Channel::Voice];

    /// The channel's name as it appears in JSON and policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Voice => "voice",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a contact attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Handed to the provider (SMS/email) or dialled (voice), result not yet known.
    Sent,
    /// The provider confirmed delivery.
    Delivered,
    /// The provider could not deliver.
    Failed,
    /// A call was answered (by someone).
    Answered,
    /// The right party was reached.
    RightPartyContact,
    /// A call rang out.
    NoAnswer,
    /// Busy signal: the call never connected.
    Busy,
    /// A voicemail was left.
    Voicemail,
    /// The number is not in service: the call never connected.
    Disconnected,
    /// Someone else answered.
    WrongParty,
    /// The job never reached the customer (recalled or expired before sending).
    NotSent,
}

impl OutcomeStatus {
    /// A call that never connected to the customer's line (busy, not in service) or never left.
    /// Reg F excludes these from the 7-in-7 count.
    pub fn never_connected(self) -> bool {
        matches!(
            self,
            OutcomeStatus::Busy | OutcomeStatus::Disconnected | OutcomeStatus::NotSent
        )
    }

    /// Whether the job is finished (no further status expected).
    pub fn is_terminal(self) -> bool {
        !matches!(self, OutcomeStatus::Sent)
    }
}

/// A range of local clock time, optionally on some weekdays only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTimeRange {
    /// Start, `HH:MM` local time, inclusive.
    pub start: String,
    /// End, `HH:MM` local time, exclusive; `24:00` means midnight.
    pub end: String,
    /// ISO weekdays (1 = Monday … 7 = Sunday) it applies to; empty means every day.
    #[serde(default)]
    pub weekdays: Vec<i32>,
}

/// The account's data, as the creditor's system of record knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "account_upserted")] // the Avro union branch's name
pub struct AccountData {
    /// The person behind the account.
    pub person_id: PersonId,
    /// ISO 4217 currency of every balance.
    pub currency: String,
    /// The debts, each with its own balance and due date.
    pub debts: Vec<Debt>,
    /// Product line, e.g. `card`, `loan`, `utility`.
    #[serde(default)]
    pub product: String,
    /// Risk score, higher = riskier (tenant's scale).
    #[serde(default)]
    pub risk_score: Option<i32>,
    /// Customer value score (tenant's scale).
    #[serde(default)]
    pub customer_value: Option<i32>,
    /// Free attributes for segment predicates.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Where the law comes from.
    pub jurisdiction: Jurisdiction,
    /// IANA zone of the postal address, if known.
    #[serde(default)]
    pub address_zone: Option<String>,
    /// IANA zone the customer declared, if any.
    #[serde(default)]
    pub declared_zone: Option<String>,
    /// Ways to reach the customer, with consent and preference.
    #[serde(default)]
    pub contact_points: Vec<ContactPoint>,
    /// BCP 47 language for templates, e.g. `es`, `en`, `pt-BR`.
    #[serde(default)]
    pub language: String,
    /// What the self-service page may ask before it shows anything about the account.
    /// Personal data: kept out of account state and logs.
    #[serde(default)]
    pub identity: Option<IdentityAnswers>,
}

/// Answers to the self-service page's light identity check, as the system of record knows
/// them. Which one is asked is the operator's choice (`--self-service-check`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityAnswers {
    /// The customer's date of birth.
    #[serde(default)]
    pub birth_date: Option<Date>,
    /// The last digits (2 to 8 letters or digits) of the customer's identity document.
    #[serde(default)]
    pub document_last_digits: Option<String>,
}

/// One instalment of a payment plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instalment {
    /// The customer's local date by which it is due.
    pub due_date: Date,
    /// Amount in minor units.
    pub amount_minor: i64,
}

/// One debt of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debt {
    /// The debt's id.
    pub debt_id: DebtId,
    /// Outstanding balance in minor units.
    pub balance_minor: i64,
    /// The date the missed payment was due; days past due count from here.
    pub due_date: Date,
}

/// Country (ISO 3166-1 alpha-2) and optional subdivision (ISO 3166-2 code, e.g. `US-MA`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Jurisdiction {
    /// Country code, e.g. `US`, `CO`.
    pub country: String,
    /// Subdivision code, e.g. `US-FL`.
    #[serde(default)]
    pub subdivision: Option<String>,
}

/// A way to reach the customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPoint {
    /// Stable id within the account, e.g. `mobile`, `home`, `email1`.
    pub id: String,
    /// The channel it serves (a mobile number is listed once per channel: `sms` and `voice`).
    pub channel: Channel,
    /// E.164 number or email address. Personal data: never logged.
    pub address: String,
    /// IANA zone of this phone, if known; otherwise its area code or the jurisdiction decide.
    #[serde(default)]
    pub zone: Option<String>,
    /// Whether the customer consented to this channel at this point (TCPA prior express consent
    /// for automated calls and texts; authorised channel under Colombia's Ley 2300).
    pub consent: bool,
    /// Preference order, lower first.
    #[serde(default)]
    pub preference: i32,
}

/// A contact job handed to dispatch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "contact_scheduled")] // the Avro union branch's name
pub struct ContactJob {
    /// Deterministic id: a replay of the same history yields the same id.
    pub job_id: JobId,
    /// The cadence step that produced it.
    pub step: String,
    /// The channel.
    pub channel: Channel,
    /// The contact point id (dispatch looks up the address in the account).
    pub contact_point_id: String,
    /// Template name; the adapter renders it in `language`.
    pub template: String,
    /// Template language.
    pub language: String,
    /// Earliest send instant.
    pub not_before: Timestamp,
    /// Latest send instant: after it the job must not be sent (handed back to decide).
    pub not_after: Timestamp,
    /// Balance at decision time, minor units, for the template.
    pub balance_minor: i64,
    /// Currency of the balance.
    pub currency: String,
    /// Why, with the rules that allowed it.
    pub decision: DecisionRecord,
    /// The earliest missed due date of the debts still owed, for the template.
    #[serde(default)]
    pub due_date: Option<Date>,
}

/// The explanation attached to every decision.
///
/// Its texts that repeat from decision to decision (the policy version, rule ids, packs,
/// sources) are shared [`ArcStr`]s: a copy is a reference, and a literal costs nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The policy version that decided.
    pub policy_version: ArcStr,
    /// Reasons, most important first.
    pub reasons: Vec<Reason>,
}

impl DecisionRecord {
    /// The snake_case code of the first (most important) reason, `none` when there is none:
    /// how counts and metrics group decisions.
    pub fn first_code(&self) -> &'static str {
        self.reasons.first().map_or("none", |r| r.code.as_str())
    }
}

/// One reason behind a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Machine-readable code.
    pub code: ReasonCode,
    /// The rule id that fired, e.g. `us.reg_f.7in7`.
    pub rule: ArcStr,
    /// The pack or policy section it belongs to, e.g. `US`, `policy`.
    pub pack: ArcStr,
    /// Legal or contractual source, e.g. `12 CFR 1006.14(b)(2)`.
    pub source: ArcStr,
    /// Human-readable detail (no personal data).
    pub detail: String,
}

/// Machine-readable reason codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(test, derive(strum::EnumIter))]
pub enum ReasonCode {
    /// A cadence step became due.
    StepDue,
    /// Outside the allowed hours in the customer's local time.
    QuietHours,
    /// A public holiday on which contact is not allowed.
    Holiday,
    /// A weekday on which contact is not allowed.
    DayNotAllowed,
    /// A time the customer declared inconvenient.
    ConsumerInconvenientTime,
    /// A rolling frequency cap is reached.
    FrequencyCap,
    /// Waiting period after a conversation.
    ConversationWait,
    /// Minimum spacing between contacts.
    Spacing,
    /// A promise to pay is pending.
    PromiseHold,
    /// A dispute or complaint is open.
    DisputeHold,
    /// The account is paid in full.
    PaidInFull,
    /// A partial payment changed the balance: queued work is re-planned.
    PartialPayment,
    /// The customer opted out of this channel or of all.
    OptedOut,
    /// The customer asked to cease communication.
    CeaseCommunication,
    /// Bankruptcy stay.
    Bankruptcy,
    /// The customer died.
    Deceased,
    /// The customer is represented by an attorney.
    AttorneyRepresented,
    /// No consent for this channel.
    NoConsent,
    /// No usable contact point for this channel.
    NoContactPoint,
    /// The balance is below the channel's minimum.
    BelowMinimumBalance,
    /// A promise was kept.
    PromiseKept,
    /// A promise was broken.
    PromiseBroken,
    /// A dispute was resolved in the customer's favour.
    DisputeUpheld,
    /// The time zone could not be determined precisely; every candidate zone was honoured.
    ZoneUncertain,
    /// No segment of the policy matched the account.
    NoSegment,
    /// No jurisdiction pack covers the account's country: nothing is sent.
    UnknownJurisdiction,
}

impl Event {
    /// Whether this event is one of Tacto's own decisions rather than an input fact.
    pub fn is_decision(&self) -> bool {
        self.body.is_decision()
    }
}

impl EventBody {
    /// The explanation of a decision (jobs carry theirs in the job).
    pub fn decision_record(&self) -> Option<&DecisionRecord> {
        match self {
            EventBody::ContactScheduled(job) => Some(&job.decision),
            EventBody::ContactDeferred { decision, .. }
            | EventBody::ContactSuppressed { decision, .. }
            | EventBody::JobsRecalled { decision, .. }
            | EventBody::TaskCreated { decision, .. }
            | EventBody::PromiseKept { decision, .. }
            | EventBody::PromiseBroken { decision, .. } => Some(decision),
            _ => None,
        }
    }

    /// Whether this body is one of Tacto's own decisions rather than an input fact.
    pub fn is_decision(&self) -> bool {
        matches!(
            self,
            EventBody::ContactScheduled(_)
                | EventBody::ContactDeferred { .. }
                | EventBody::ContactSuppressed { .. }
                | EventBody::JobsRecalled { .. }
                | EventBody::TaskCreated { .. }
                | EventBody::PromiseKept { .. }
                | EventBody::PromiseBroken { .. }
        )
    }

    /// The snake_case type name, as in JSON and the Avro union.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::AccountUpserted(_) => "account_upserted",
            EventBody::PaymentReceived { .. } => "payment_received",
            EventBody::PromiseMade { .. } => "promise_made",
            EventBody::PromiseCancelled { .. } => "promise_cancelled",
            EventBody::DisputeOpened { .. } => "dispute_opened",
            EventBody::DisputeResolved { .. } => "dispute_resolved",
            EventBody::OptedOut { .. } => "opted_out",
            EventBody::CeaseCommunication {} => "cease_communication",
            EventBody::BankruptcyNotified {} => "bankruptcy_notified",
            EventBody::DeceasedNotified {} => "deceased_notified",
            EventBody::AttorneyRepresented { .. } => "attorney_represented",
            EventBody::InconvenientTimesDeclared { .. } => "inconvenient_times_declared",
            EventBody::CallConsentGiven {} => "call_consent_given",
            EventBody::ContactOutcome { .. } => "contact_outcome",
            EventBody::ContactScheduled(_) => "contact_scheduled",
            EventBody::ContactDeferred { .. } => "contact_deferred",
            EventBody::ContactSuppressed { .. } => "contact_suppressed",
            EventBody::JobsRecalled { .. } => "jobs_recalled",
            EventBody::TaskCreated { .. } => "task_created",
            EventBody::PromiseKept { .. } => "promise_kept",
            EventBody::PromiseBroken { .. } => "promise_broken",
            EventBody::PlanMade { .. } => "plan_made",
        }
    }
}

impl ReasonCode {
    /// The snake_case code, as in JSON and Avro.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn a_reason_code_names_itself_as_serde_does() {
        use strum::IntoEnumIterator;
        for c in ReasonCode::iter() {
            assert_eq!(
                serde_json::to_value(c).ok(),
                Some(c.as_str().into()),
                "{c:?}"
            );
        }
    }

    #[test]
    fn an_event_stays_small() {
        // Every event is moved several times between the log, the decision and the simulator:
        // the large bodies (an account's data, a contact job) are boxed to keep it small.
        let size = std::mem::size_of::<Event>();
        assert!(size <= 200, "Event is {size} bytes");
    }
}
