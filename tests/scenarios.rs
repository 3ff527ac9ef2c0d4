//! End-to-end compliance scenarios through the command line: `tacto simulate` runs the real
//! decide logic on a simulated clock over an event file, and the decisions it writes are
//! checked. (Wall-clock scenarios such as "a promise holds until its due date plus grace" cannot
//! wait days in a test; the simulated clock runs exactly the code `tacto run` runs.)
#![allow(missing_docs)]

use serde_json::{Value, json};
use std::process::Command;

const POLICY: &str = r#"
version = "scenarios-1"
jitter_minutes = 0
promise_grace_days = 2
[[segments]]
name = "all"
cadence = "main"
[cadences.main]
steps = [
  { day = 0, channel = "sms", template = "reminder", fallback = ["email"] },
  { day = 0, channel = "voice", template = "call", attempts = 12, retry_after_hours = 2 },
]
[cadences.after_broken]
steps = [{ day = 0, channel = "sms", template = "promise_missed", fallback = ["email"] }]
[broken_promise]
cadence = "after_broken"
"#;

fn upsert(at: &str) -> Value {
    json!({"id": "open", "occurred_at": at, "account_id": "A",
        "body": {"account_upserted": {
            "person_id": "p", "currency": "USD",
            "debts": [{"debt_id": "d", "balance_minor": 50000, "due_date": "2026-10-01"}],
            "jurisdiction": {"country": "US", "subdivision": "US-NY"},
            "address_zone": "America/New_York",
            "contact_points": [
                {"id": "m", "channel": "sms", "address": "+12125550100", "consent": true},
                {"id": "m", "channel": "voice", "address": "+12125550100", "consent": true},
                {"id": "e", "channel": "email", "address": "a@example.com", "consent": true}],
            "language": "en"}}})
}

fn ev(id: &str, at: &str, body: Value) -> Value {
    json!({"id": id, "occurred_at": at, "account_id": "A", "body": body})
}

fn outcome(id: &str, at: &str, job: &str, status: &str, conversation: bool) -> Value {
    ev(
        id,
        at,
        json!({"contact_outcome": {"job_id": job, "channel": "voice", "status": status, "conversation": conversation}}),
    )
}

/// Runs `tacto simulate` and returns the decision lines.
fn simulate(events: &[Value], tail_days: u32) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("events.jsonl");
    let policy = dir.path().join("policy.toml");
    let out = dir.path().join("decisions.jsonl");
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&input, text).expect("events");
    std::fs::write(&policy, POLICY).expect("policy");
    let status = Command::new(env!("CARGO_BIN_EXE_tacto"))
        .args([
            "simulate",
            "--tail-days",
            &tail_days.to_string(),
            "--events",
        ])
        .arg(&input)
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run tacto simulate");
    assert!(status.success());
    std::fs::read_to_string(&out)
        .expect("decisions")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn of_kind<'a>(d: &'a [Value], kind: &str) -> Vec<&'a Value> {
    d.iter().filter(|l| l["kind"] == kind).collect()
}

fn scheduled_between<'a>(d: &'a [Value], from: &str, to: &str) -> Vec<&'a Value> {
    of_kind(d, "contact_scheduled")
        .into_iter()
        .filter(|l| {
            let t = l["time"].as_str().unwrap_or("");
            t >= from && t < to
        })
        .collect()
}

#[test]
fn quiet_hours_defer_and_never_drop() {
    // 03:00Z is 22:00 in New York.
    let d = simulate(&[upsert("2026-11-17T03:00:00Z")], 2);
    let first = &d[0];
    assert_eq!(first["kind"], "contact_deferred", "{d:#?}");
    assert_eq!(first["reasons"][0], "quiet_hours");
    assert_eq!(first["until"], "2026-11-17T13:00:00Z");
    let sent = of_kind(&d, "contact_scheduled");
    assert_eq!(
        sent[0]["time"], "2026-11-17T13:00:00Z",
        "sent when the window opens"
    );
}

#[test]
fn the_8th_call_in_7_days_is_refused() {
    // The reminder SMS is delivered at once; then calls every two hours from 08:05 New York,
    // each unanswered.
    let mut events = vec![
        upsert("2026-11-16T13:00:00Z"),
        ev(
            "sms",
            "2026-11-16T13:05:00Z",
            json!({"contact_outcome": {
            "job_id": "A:c0:d0.0:a0", "channel": "sms", "status": "delivered"}}),
        ),
    ];
    for (n, hour) in [13, 15, 17, 19, 21, 23].iter().enumerate() {
        events.push(outcome(
            &format!("o{n}"),
            &format!("2026-11-16T{hour}:30:00Z"),
            &format!("A:c0:d0.1:a{n}"),
            "no_answer",
            false,
        ));
    }
    events.push(outcome(
        "o6",
        "2026-11-17T01:30:00Z",
        "A:c0:d0.1:a6",
        "no_answer",
        false,
    ));
    let d = simulate(&events, 10);
    let calls: Vec<_> = of_kind(&d, "contact_scheduled")
        .into_iter()
        .filter(|l| l["channel"] == "voice")
        .collect();
    assert!(calls.len() >= 8, "{d:#?}");
    assert!(calls[6]["time"].as_str().unwrap_or("") < "2026-11-17T02:00:00Z");
    assert!(
        calls[7]["time"].as_str().unwrap_or("") >= "2026-11-23T13:00:00Z",
        "the 8th call waits for the 7-day window: {}",
        calls[7]["time"]
    );
    assert!(of_kind(&d, "contact_deferred").iter().any(|l| {
        l["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("frequency_cap")))
    }));
}

#[test]
fn a_conversation_blocks_calls_for_7_days() {
    let events = vec![
        upsert("2026-11-16T13:00:00Z"),
        outcome(
            "o0",
            "2026-11-16T13:20:00Z",
            "A:c0:d0.1:a0",
            "right_party_contact",
            true,
        ),
    ];
    let d = simulate(&events, 10);
    assert!(
        scheduled_between(&d, "2026-11-16T13:20:00Z", "2026-11-23T13:20:00Z")
            .iter()
            .all(|l| l["channel"] != "voice"),
        "{d:#?}"
    );
    assert!(of_kind(&d, "contact_deferred").iter().any(|l| {
        l["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("conversation_wait")))
    }));
}

#[test]
fn a_promise_at_10_holds_contact_until_due_plus_grace_then_contact_resumes() {
    let events = vec![
        upsert("2026-11-16T14:00:00Z"),
        // 10:00 New York, due Wednesday 18th: held to the end of Friday 20th.
        ev(
            "pr",
            "2026-11-16T15:00:00Z",
            json!({"promise_made": {
            "promise_id": "pr-1", "amount_minor": 50000, "due_date": "2026-11-18", "promise_source": "agent"}}),
        ),
    ];
    let d = simulate(&events, 10);
    let recall = of_kind(&d, "jobs_recalled");
    assert_eq!(recall[0]["reasons"][0], "promise_hold");
    assert!(
        scheduled_between(&d, "2026-11-16T15:00:00Z", "2026-11-21T05:00:00Z").is_empty(),
        "{d:#?}"
    );
    let broken = of_kind(&d, "promise_broken");
    assert_eq!(broken[0]["time"], "2026-11-21T05:00:00Z");
    let after = scheduled_between(&d, "2026-11-21T05:00:00Z", "2026-12-01T00:00:00Z");
    assert_eq!(
        after[0]["event"]["body"]["contact_scheduled"]["template"],
        "promise_missed"
    );
}

#[test]
fn payments_recall_and_end_or_replan_contact() {
    let pay = |id: &str, at: &str, amount: i64| {
        ev(
            id,
            at,
            json!({"payment_received": {"payment_id": id, "amount_minor": amount, "currency": "USD"}}),
        )
    };
    let full = simulate(
        &[
            upsert("2026-11-16T14:00:00Z"),
            pay("p1", "2026-11-16T14:10:00Z", 50000),
        ],
        10,
    );
    assert_eq!(
        of_kind(&full, "jobs_recalled")[0]["reasons"][0],
        "paid_in_full"
    );
    assert!(scheduled_between(&full, "2026-11-16T14:10:00Z", "2027-01-01T00:00:00Z").is_empty());
    let part = simulate(
        &[
            upsert("2026-11-16T14:00:00Z"),
            pay("p1", "2026-11-16T14:10:00Z", 20000),
        ],
        3,
    );
    assert_eq!(
        of_kind(&part, "jobs_recalled")[0]["reasons"][0],
        "partial_payment"
    );
    let later = scheduled_between(&part, "2026-11-16T14:10:00Z", "2027-01-01T00:00:00Z");
    assert!(
        !later.is_empty(),
        "contact continues after a partial payment"
    );
    assert_eq!(
        later[0]["event"]["body"]["contact_scheduled"]["balance_minor"],
        30000
    );
}

#[test]
fn stop_and_disputes_stop_contact_at_once() {
    let stop = simulate(
        &[
            upsert("2026-11-16T14:00:00Z"),
            ev(
                "stop",
                "2026-11-16T14:05:00Z",
                json!({"opted_out": {"channel": "sms", "via": "sms_stop"}}),
            ),
        ],
        5,
    );
    assert_eq!(
        of_kind(&stop, "jobs_recalled")[0]["reasons"][0],
        "opted_out"
    );
    assert!(
        scheduled_between(&stop, "2026-11-16T14:05:00Z", "2027-01-01T00:00:00Z")
            .iter()
            .all(|l| l["channel"] != "sms")
    );
    let dispute = simulate(
        &[
            upsert("2026-11-16T14:00:00Z"),
            ev(
                "dis",
                "2026-11-16T14:05:00Z",
                json!({"dispute_opened": {"dispute_id": "d-1", "reason": "already_paid"}}),
            ),
        ],
        10,
    );
    assert_eq!(of_kind(&dispute, "task_created").len(), 1);
    assert_eq!(
        of_kind(&dispute, "jobs_recalled")[0]["reasons"][0],
        "dispute_hold"
    );
    assert!(scheduled_between(&dispute, "2026-11-16T14:05:00Z", "2027-01-01T00:00:00Z").is_empty());
}
