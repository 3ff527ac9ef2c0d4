//! Dialer dispositions, turned into events: `POST /v1/callbacks/dialer` (any dialer, JSON, API
//! key) and `GET|POST /v1/callbacks/vicidial` (Vicidial's "Dispo Call URL", with a shared token).
//!
//! | disposition | becomes |
//! | --- | --- |
//! | `answered` | outcome `answered` |
//! | `right_party_contact`, `refused`, `callback_requested` | outcome `right_party_contact` with a conversation |
//! | `promise_taken` (with `promise`) | outcome `right_party_contact` with a conversation, and a promise (source `dialer`) |
//! | `no_answer`, `busy`, `voicemail`, `disconnected`, `wrong_party` | the same outcome (busy and disconnected never connected) |
//! | `dnc` | an opt-out of calls (and the call's outcome when the job is known) |
//!
//! Other outcomes need the job (`job_id`, Vicidial's `source_id`, which the adapter sets).

use crate::extract::ProblemQuery;
use crate::problem::Problem;
use crate::{Shared, parse, submit};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tacto_model::{
    AccountId, Channel, Date, Event, EventBody, EventId, JobId, OutcomeStatus, PromiseSource,
};

/// A disposition as Tacto names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Someone answered.
    Answered,
    /// The customer was reached.
    RightPartyContact,
    /// The customer was reached and promised to pay.
    PromiseTaken,
    /// The customer was reached and refused.
    Refused,
    /// The customer asked to be called back.
    CallbackRequested,
    /// Nobody answered.
    NoAnswer,
    /// Busy.
    Busy,
    /// A voicemail was left or an answering machine picked up.
    Voicemail,
    /// The number is not in service.
    Disconnected,
    /// Someone else answered.
    WrongParty,
    /// The customer asked not to be called.
    Dnc,
}

/// A promise taken on a call.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromiseIn {
    /// The dialer's id of the promise.
    pub promise_id: String,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// Due date.
    pub due_date: Date,
}

/// `POST /v1/callbacks/dialer`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispositionIn {
    /// The account (the lead's vendor code).
    pub account_id: String,
    /// The job (the lead's source id), when known.
    #[serde(default)]
    pub job_id: Option<JobId>,
    /// The dialer's call id: the same call reported twice is applied once.
    pub call_id: String,
    /// What happened.
    pub disposition: Disposition,
    /// The promise, for `promise_taken`.
    #[serde(default)]
    pub promise: Option<PromiseIn>,
}

/// Vicidial status codes (system and common campaign statuses) as dispositions.
pub fn vicidial_status(status: &str) -> Option<Disposition> {
    Some(match status.to_ascii_uppercase().as_str() {
        "A" | "AA" | "AM" | "AL" | "ADCT" => Disposition::Voicemail,
        "B" | "AB" => Disposition::Busy,
        "NA" | "N" | "AN" | "NANQUE" => Disposition::NoAnswer,
        "DC" | "ADC" => Disposition::Disconnected,
        "WN" | "WRONG" => Disposition::WrongParty,
        "DNC" | "DNCL" | "DNCC" => Disposition::Dnc,
        "NI" | "NP" => Disposition::Refused,
        "CALLBK" | "CBHOLD" => Disposition::CallbackRequested,
        "SALE" | "PTP" | "RPC" | "XFER" => Disposition::RightPartyContact,
        "PU" | "PM" | "DROP" => Disposition::Answered,
        _ => return None,
    })
}

fn events_of(s: &Shared, d: &DispositionIn, source: &str) -> Result<Vec<Event>, Problem> {
    let at = (s.now)();
    let account = AccountId(d.account_id.clone().into());
    let id = |what: &str| EventId(format!("{source}:{}:{what}", d.call_id).into());
    let outcome = |status: OutcomeStatus, conversation: bool| Event {
        id: id("outcome"),
        occurred_at: at,
        account_id: account.clone(),
        source: source.to_owned().into(),
        body: EventBody::ContactOutcome {
            job_id: d.job_id.clone(),
            channel: Channel::Voice,
            status,
            conversation,
            inbound: false,
        },
    };
    Ok(match d.disposition {
        Disposition::Answered => vec![outcome(OutcomeStatus::Answered, false)],
        Disposition::RightPartyContact | Disposition::Refused | Disposition::CallbackRequested => {
            vec![outcome(OutcomeStatus::RightPartyContact, true)]
        }
        Disposition::PromiseTaken => {
            let p = d.promise.as_ref().ok_or_else(|| {
                Problem::invalid(
                    "promise",
                    "promise_taken needs the promise (id, amount, due date)",
                )
            })?;
            vec![
                outcome(OutcomeStatus::RightPartyContact, true),
                Event {
                    id: id("promise"),
                    occurred_at: at,
                    account_id: account.clone(),
                    source: source.to_owned().into(),
                    body: EventBody::PromiseMade {
                        promise_id: p.promise_id.clone(),
                        amount_minor: p.amount_minor,
                        due_date: p.due_date,
                        promise_source: PromiseSource::Dialer,
                    },
                },
            ]
        }
        Disposition::NoAnswer => vec![outcome(OutcomeStatus::NoAnswer, false)],
        Disposition::Busy => vec![outcome(OutcomeStatus::Busy, false)],
        Disposition::Voicemail => vec![outcome(OutcomeStatus::Voicemail, false)],
        Disposition::Disconnected => vec![outcome(OutcomeStatus::Disconnected, false)],
        Disposition::WrongParty => vec![outcome(OutcomeStatus::WrongParty, false)],
        Disposition::Dnc => d
            .job_id
            .as_ref()
            .map(|_| outcome(OutcomeStatus::RightPartyContact, true))
            .into_iter()
            .chain([Event {
                id: id("opt-out"),
                occurred_at: at,
                account_id: account.clone(),
                source: source.to_owned().into(),
                body: EventBody::OptedOut {
                    channel: Some(Channel::Voice),
                    via: "dialer_dnc".into(),
                },
            }])
            .collect(),
    })
}

async fn submit_all(s: &Shared, events: Vec<Event>) -> Result<Response, Problem> {
    let mut last = None;
    for e in events {
        let unique = format!("event:{}", e.id);
        last = Some(submit(s, e, unique).await?);
    }
    last.ok_or_else(|| Problem::malformed("nothing to record"))
}

pub(crate) async fn post_dialer(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let d: DispositionIn = parse(body)?;
    let events = events_of(&s, &d, "dialer")?;
    submit_all(&s, events).await
}

/// The query of Vicidial's Dispo Call URL, e.g.
/// `…/v1/callbacks/vicidial?token=T&account=--A--vendor_lead_code--B--&job=--A--source_id--B--&call=--A--uniqueid--B--&status=--A--dispo--B--`.
#[derive(Deserialize)]
pub(crate) struct VicidialDispo {
    token: String,
    account: String,
    #[serde(default)]
    job: Option<String>,
    call: String,
    status: String,
}

pub(crate) async fn vicidial_dispo(
    State(s): State<Shared>,
    ProblemQuery(q): ProblemQuery<VicidialDispo>,
) -> Result<Response, Problem> {
    let Some(token) = s.config.dialer_token.as_deref() else {
        return Err(Problem::not_found("dialer callbacks are not configured"));
    };
    if !bool::from(q.token.as_bytes().ct_eq(token.as_bytes())) {
        return Err(Problem::unauthorized("wrong dialer token"));
    }
    let disposition = vicidial_status(&q.status).ok_or_else(|| {
        Problem::invalid("status", format!("unknown Vicidial status {:?}", q.status))
    })?;
    let d = DispositionIn {
        account_id: q.account,
        job_id: q.job.filter(|j| !j.is_empty()).map(JobId::from),
        call_id: q.call,
        disposition,
        promise: None,
    };
    let events = events_of(&s, &d, "vicidial")?;
    submit_all(&s, events).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vicidial_statuses_map_to_dispositions() {
        assert_eq!(vicidial_status("A"), Some(Disposition::Voicemail));
        assert_eq!(vicidial_status("b"), Some(Disposition::Busy));
        assert_eq!(vicidial_status("DC"), Some(Disposition::Disconnected));
        assert_eq!(vicidial_status("DNC"), Some(Disposition::Dnc));
        assert_eq!(vicidial_status("NA"), Some(Disposition::NoAnswer));
        assert_eq!(vicidial_status("NI"), Some(Disposition::Refused));
        assert_eq!(vicidial_status("ZZZ"), None);
    }
}
