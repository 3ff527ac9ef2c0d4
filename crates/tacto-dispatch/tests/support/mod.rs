//! What dispatch's integration tests share: a moment inside calling hours, a policy of one SMS
//! on day 0, appending events, and reading back the outcomes dispatch reported.
// Each test binary compiles this module and uses its own part of it.
#![allow(dead_code)]

use std::sync::Arc;
use tacto_log::{EventLog, events};
use tacto_model::{Event, EventBody, OutcomeStatus, Timestamp};
use tacto_policy::Policy;

/// Inside New York's calling hours (10:00 local).
pub fn now() -> Timestamp {
    Timestamp::parse("2026-11-16T15:00:00Z").expect("time")
}

/// Every account in one segment whose cadence is a single SMS on day 0, without jitter.
pub fn one_sms_policy() -> Arc<Policy> {
    const POLICY: &str = r#"
version = "one-sms-1"
jitter_minutes = 0
[[segments]]
name = "all"
cadence = "main"
[cadences.main]
steps = [{ day = 0, channel = "sms", template = "reminder" }]
"#;
    Arc::new(Policy::from_toml(POLICY).expect("policy"))
}

/// Appends one event to the events topic.
pub fn append(log: &dyn EventLog, event: &Event) {
    log.append(
        events::EVENTS.name(),
        &[events::to_record(event).expect("record")],
    )
    .expect("append");
}

/// An outcome dispatch reported on the events topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    /// The account the job was for.
    pub account: String,
    /// The job's id.
    pub job: Option<String>,
    /// What dispatch reported.
    pub status: OutcomeStatus,
}

/// Every contact outcome on the events topic, partition by partition.
pub fn reported(log: &dyn EventLog) -> Vec<Reported> {
    let mut out = Vec::new();
    for p in 0..log.partitions(events::EVENTS.name()).expect("partitions") {
        for d in log
            .read(events::EVENTS.name(), p, 0, 100_000)
            .expect("read")
        {
            if let Ok(Event {
                account_id,
                body: EventBody::ContactOutcome { job_id, status, .. },
                ..
            }) = events::from_record(&d.record)
            {
                out.push(Reported {
                    account: account_id.to_string(),
                    job: job_id.map(|j| j.to_string()),
                    status,
                });
            }
        }
    }
    out
}
