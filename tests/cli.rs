//! End-to-end tests of the `tacto` command line: only its public interface (arguments, files,
//! standard output, exit status).
#![allow(missing_docs)]

use std::process::Command;

fn tacto() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tacto"))
}

#[test]
fn demo_runs_a_portfolio_and_finds_no_violation() {
    let out = tacto()
        .args(["demo", "--accounts", "600", "--days", "20"])
        .output()
        .expect("run tacto demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("contacts scheduled by channel"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("violations found"))
        .expect("an audit line");
    assert!(line.trim_end().ends_with(" 0"), "{line}");
}

/// The demo's summary without its timing line.
fn demo_summary(threads: &str) -> String {
    let out = tacto()
        .args([
            "demo",
            "--accounts",
            "300",
            "--days",
            "14",
            "--threads",
            threads,
        ])
        .output()
        .expect("run tacto demo");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(" s ") && !l.trim_end().ends_with(" s"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_demo_summary_is_the_same_on_any_number_of_threads() {
    let one = demo_summary("1");
    assert!(one.contains("contacts scheduled by channel"), "{one}");
    assert_eq!(one, demo_summary("3"));
}

/// `tacto simulate` over `events` on `threads` threads: the decision lines.
fn simulate_lines(events: &std::path::Path, threads: &str) -> Vec<String> {
    let out = events.with_extension(format!("{threads}.out"));
    let status = tacto()
        .args([
            "simulate",
            "--simulated-provider",
            "--tail-days",
            "2",
            "--events",
        ])
        .arg(events)
        .arg("--out")
        .arg(&out)
        .args(["--threads", threads])
        .status()
        .expect("run tacto simulate");
    assert!(status.success());
    let text = std::fs::read_to_string(&out).expect("decisions");
    text.lines().map(str::to_owned).collect()
}

#[test]
fn simulate_on_threads_writes_the_same_decisions_in_time_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let start = tacto_model::Timestamp::parse("2026-11-02T00:00:00Z").expect("time");
    let mut text = String::new();
    for e in tacto_policy::sim::synthetic_inputs(5, 300, start, 14) {
        text.push_str(&serde_json::to_string(&e).expect("event json"));
        text.push('\n');
    }
    std::fs::write(&events, text).expect("write events");
    let one = simulate_lines(&events, "1");
    let three = simulate_lines(&events, "3");
    assert!(one.len() > 1_000, "{} decisions", one.len());
    assert_eq!(one.len(), three.len());
    let parse = |l: &String| -> serde_json::Value { serde_json::from_str(l).expect("json line") };
    // In time order.
    let times: Vec<String> = three
        .iter()
        .map(|l| parse(l)["time"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in time order");
    // Every account's decisions the same and in the same order.
    let by_account = |lines: &[String]| {
        let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for l in lines {
            let account = parse(l)["account"].as_str().unwrap_or_default().to_owned();
            m.entry(account).or_default().push(l.clone());
        }
        m
    };
    assert_eq!(by_account(&one), by_account(&three));
}

fn account_line() -> String {
    serde_json::json!({
        "id": "e-open", "occurred_at": "2026-11-16T15:00:00Z", "account_id": "A-7",
        "body": {"account_upserted": {
            "person_id": "p-7", "currency": "USD",
            "debts": [{"debt_id": "d-1", "balance_minor": 50000, "due_date": "2026-11-01"}],
            "jurisdiction": {"country": "US", "subdivision": "US-NY"},
            "address_zone": "America/New_York",
            "contact_points": [
                {"id": "mobile", "channel": "sms", "address": "+12125550100", "consent": true},
                {"id": "mobile", "channel": "voice", "address": "+12125550100", "consent": true}
            ],
            "language": "en"
        }}
    })
    .to_string()
}

#[test]
fn simulate_writes_every_decision_and_a_payment_recalls_queued_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let out = dir.path().join("decisions.jsonl");
    let payment = serde_json::json!({
        "id": "e-pay", "occurred_at": "2026-11-16T15:05:00Z", "account_id": "A-7",
        "body": {"payment_received": {"payment_id": "bank-1", "amount_minor": 50000, "currency": "USD"}}
    });
    std::fs::write(&events, format!("{}\n{payment}\n", account_line())).expect("write events");
    let status = tacto()
        .args(["simulate", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run tacto simulate");
    assert!(status.success());
    let text = std::fs::read_to_string(&out).expect("decisions");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"contact_scheduled"), "{text}");
    let recall = lines
        .iter()
        .find(|l| l["kind"] == "jobs_recalled")
        .unwrap_or_else(|| panic!("no recall in {text}"));
    assert_eq!(recall["reasons"][0], "paid_in_full");
    assert_eq!(recall["time"], "2026-11-16T15:05:00Z");
    // Paid in full: nothing after the recall.
    assert!(
        !kinds
            .iter()
            .skip_while(|k| **k != "jobs_recalled")
            .skip(1)
            .any(|k| *k == "contact_scheduled")
    );
}

#[test]
fn simulate_names_the_bad_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, format!("{}\n{{\"id\": 3}}\n", account_line())).expect("write");
    let out = tacto()
        .args(["simulate", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(dir.path().join("o.jsonl"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("events.jsonl:2"), "{err}");
}

#[test]
fn simulate_on_threads_names_the_first_bad_line() {
    // Lines are parsed in batches on several threads: the error is still the file's first.
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let mut text = String::new();
    for n in 1..=9_000 {
        match n {
            5_000 | 7_000 => text.push_str("{\"id\": 3}\n"),
            _ => {
                text.push_str(&account_line().replace("\"e-open\"", &format!("\"e-{n}\"")));
                text.push('\n');
            }
        }
    }
    std::fs::write(&events, text).expect("write");
    for threads in ["1", "3"] {
        let out = tacto()
            .args(["simulate", "--threads", threads, "--events"])
            .arg(&events)
            .arg("--out")
            .arg(dir.path().join("o.jsonl"))
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("events.jsonl:5000:"),
            "{threads} threads: {err}"
        );
    }
}

#[test]
fn simulate_compares_two_policies_on_the_same_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, format!("{}\n", account_line())).expect("write events");
    let example = tacto_policy::policy::EXAMPLE_POLICY;
    let strict = dir.path().join("strict.toml");
    std::fs::write(
        &strict,
        example
            .replace("max = 2\nwindow_hours = 24", "max = 1\nwindow_hours = 24")
            .replace("version = \"example-2026-11\"", "version = \"one-a-day\""),
    )
    .expect("write policy");
    let out = tacto()
        .args(["simulate", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(dir.path().join("o.jsonl"))
        .arg("--compare")
        .arg(&strict)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("example-2026-11") && header.contains("one-a-day"),
        "{stdout}"
    );
    let cell = |section: &str, label: &str| -> Option<(u64, u64)> {
        let l = stdout
            .lines()
            .find(|l| l.starts_with(section) && l.split_whitespace().nth(1) == Some(label))?;
        let n: Vec<u64> = l
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        Some((n[0], n[1]))
    };
    let (a, b) = cell("contacts", "voice").expect("a voice row");
    assert!(a > 0 && b > 0, "{stdout}");
    let (ca, cb) = cell("deferrals", "frequency_cap").unwrap_or((0, 0));
    assert!(
        cb >= ca,
        "the stricter cap defers at least as often: {stdout}"
    );
}

#[test]
fn console_user_prints_an_entry_the_console_accepts() {
    use std::io::Write;
    let run = |password: &str, role: &str| {
        let mut child = tacto()
            .args(["console-user", "--name", "ana", "--role", role])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write");
        child.wait_with_output().expect("output")
    };
    let out = run("correct horse battery", "operator");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let users = tacto_ingest::web::console::parse_users(&text).expect("a valid users file");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, "ana");
    assert_eq!(users[0].role, tacto_ingest::web::console::Role::Operator);
    assert!(!text.contains("correct horse"), "only the hash is printed");
    assert!(
        !run("short", "operator").status.success(),
        "short passwords are refused"
    );
    assert!(
        !run("correct horse battery", "admin").status.success(),
        "unknown roles are refused"
    );
}
