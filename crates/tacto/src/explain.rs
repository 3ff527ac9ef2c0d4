//! `tacto explain ACCOUNT`: an account's timeline with the reasons behind every decision.

use crate::client::Connection;
use std::fmt::Write as _;

/// Prints the timeline of `account`.
pub fn run(conn: &Connection, account: &str) -> anyhow::Result<()> {
    let timeline = conn.get(&format!("/v1/accounts/{account}/timeline"))?;
    print!("{}", render(&timeline));
    Ok(())
}

/// The timeline as text, one event per line and one line per reason.
pub fn render(timeline: &serde_json::Value) -> String {
    let mut out = String::new();
    for item in timeline.as_array().map(Vec::as_slice).unwrap_or_default() {
        let kind = item["kind"].as_str().unwrap_or("?");
        let body = &item["event"]["body"][kind];
        let mut what = String::new();
        match kind {
            "contact_scheduled" => {
                let _ = write!(
                    what,
                    "{} via {} ({}), send by {}",
                    body["job_id"].as_str().unwrap_or(""),
                    body["channel"].as_str().unwrap_or(""),
                    body["template"].as_str().unwrap_or(""),
                    body["not_after"].as_str().unwrap_or("")
                );
            }
            "contact_deferred" => {
                let _ = write!(
                    what,
                    "{} until {}",
                    body["job_id"].as_str().unwrap_or(""),
                    body["until"].as_str().unwrap_or("")
                );
            }
            "jobs_recalled" => {
                let ids: Vec<&str> = body["job_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                what = ids.join(", ");
            }
            "payment_received" => {
                let _ = write!(
                    what,
                    "{} {}",
                    body["amount_minor"],
                    body["currency"].as_str().unwrap_or("")
                );
            }
            "contact_outcome" => {
                let _ = write!(
                    what,
                    "{} {}",
                    body["job_id"].as_str().unwrap_or("inbound"),
                    body["status"].as_str().unwrap_or("")
                );
            }
            _ => {}
        }
        let _ = writeln!(
            out,
            "{}  {:<28} {}  [{}]",
            item["time"].as_str().unwrap_or(""),
            kind,
            what,
            item["source"].as_str().unwrap_or("")
        );
        for r in body["decision"]["reasons"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let _ = writeln!(
                out,
                "      - {}: {} (rule {}, {}: {})",
                r["code"].as_str().unwrap_or(""),
                r["detail"].as_str().unwrap_or(""),
                r["rule"].as_str().unwrap_or(""),
                r["pack"].as_str().unwrap_or(""),
                r["source"].as_str().unwrap_or("")
            );
        }
    }
    out
}
