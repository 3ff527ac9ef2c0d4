//! What the end-to-end tests share.
#![allow(dead_code)]

/// A policy with one SMS step on day 0 in a territory without hour restrictions, so that tests
/// see a job at once whatever the time of day.
pub const POLICY: &str = r#"
version = "e2e-1"
jitter_minutes = 0
[[segments]]
name = "all"
cadence = "main"
[cadences.main]
steps = [{ day = 0, channel = "sms", template = "reminder" }]
[[pack_overrides]]
id = "ZZ"
name = "Test territory without hour restrictions"
zones = ["UTC"]
"#;

/// A policy named `version` with one cadence of `steps` (TOML inline tables) for every account,
/// in the test territory without hour restrictions.
pub fn zz_policy(version: &str, steps: &[&str]) -> String {
    format!(
        r#"
version = "{version}"
jitter_minutes = 0
[[segments]]
name = "all"
cadence = "main"
[cadences.main]
steps = [
  {}
]
[[pack_overrides]]
id = "ZZ"
name = "Test territory without hour restrictions"
zones = ["UTC"]
"#,
        steps.join(",\n  ")
    )
}

/// Starts `tacto run` (or another command that prints `listening on URL` first) with its
/// standard output piped; returns the process and the URL. Keeps reading what it prints, so
/// that it never writes into a closed pipe.
pub fn spawn_listening(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tacto run");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("first line");
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("tacto run did not start: {line:?}"))
        .to_owned();
    (child, base)
}

/// The balance of the accounts [`account_body`] makes.
pub const BALANCE: i64 = 50_000;

/// An account with one debt of [`BALANCE`] and an SMS contact point with consent, in the test
/// territory.
pub fn account_body() -> String {
    account_owing(BALANCE)
}

/// [`account_body`] with a debt of `balance` (minor units).
pub fn account_owing(balance: i64) -> String {
    serde_json::json!({
        "person_id": "p", "currency": "USD",
        "debts": [{"debt_id": "d1", "balance_minor": balance, "due_date": "2026-01-01"}],
        "jurisdiction": {"country": "ZZ"},
        "contact_points": [{"id": "mobile", "channel": "sms", "address": "+12125550100", "consent": true}],
        "language": "en"
    })
    .to_string()
}

pub mod chaos;
pub mod kafka;
pub mod twilio;
