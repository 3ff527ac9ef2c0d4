//! `tacto simulate`: the real decision logic on a simulated clock over a file of events.
//!
//! Input: JSON lines, one event each, in the API's event format. Output: one JSON line per
//! decision: `{"time", "account", "kind", "channel", "job_id", "until", "reasons", "event"}`.

use anyhow::{Context, bail};
use serde::Serialize;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use tacto_model::{Event, EventBody, ReasonCode, Timestamp};
use tacto_policy::Policy;
use tacto_policy::sim::Simulator;

/// Options of `tacto simulate`.
pub struct Options {
    pub events: PathBuf,
    pub policy: Option<PathBuf>,
    pub out: PathBuf,
    pub simulated_provider: bool,
    pub tail_days: u32,
    /// A second policy to run the same events under, for a side-by-side summary.
    pub compare: Option<PathBuf>,
}

fn load_policy(path: &std::path::Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy {}", path.display()))?;
    Policy::from_toml(&text).with_context(|| format!("invalid policy {}", path.display()))
}

/// One decision, as written to the output file.
#[derive(Serialize)]
struct Line<'a> {
    time: Timestamp,
    account: &'a str,
    kind: &'static str,
    channel: Option<&'static str>,
    job_id: Option<&'a str>,
    until: Option<Timestamp>,
    reasons: Vec<ReasonCode>,
    event: &'a Event,
}

fn line(e: &Event) -> Line<'_> {
    let (channel, job_id, until, reasons) = match &e.body {
        EventBody::ContactScheduled(j) => (
            Some(j.channel.as_str()),
            Some(j.job_id.as_str()),
            None,
            &j.decision.reasons,
        ),
        EventBody::ContactDeferred {
            job_id,
            until,
            decision,
            ..
        } => (None, Some(job_id.as_str()), Some(*until), &decision.reasons),
        EventBody::ContactSuppressed {
            job_id, decision, ..
        } => (None, Some(job_id.as_str()), None, &decision.reasons),
        EventBody::JobsRecalled { decision, .. }
        | EventBody::TaskCreated { decision, .. }
        | EventBody::PromiseKept { decision, .. }
        | EventBody::PromiseBroken { decision, .. } => (None, None, None, &decision.reasons),
        _ => (None, None, None, &Vec::new() as &Vec<_>),
    };
    Line {
        time: e.occurred_at,
        account: e.account_id.as_str(),
        kind: e.body.type_name(),
        channel,
        job_id,
        until,
        reasons: reasons.iter().map(|r| r.code).collect(),
        event: e,
    }
}

/// What was taken from the simulator's log so far.
#[derive(Default)]
struct Written {
    /// Inputs and the simulated provider's answers.
    facts: usize,
    /// Decisions, written out.
    decisions: usize,
}

impl Written {
    /// Writes the decisions in `log` as JSON lines, counts everything, and empties it.
    fn drain(&mut self, log: &mut Vec<Event>, w: &mut impl Write) -> anyhow::Result<()> {
        for e in log.drain(..) {
            if e.is_decision() {
                serde_json::to_writer(&mut *w, &line(&e))?;
                w.write_all(b"\n")?;
                self.decisions += 1;
            } else {
                self.facts += 1;
            }
        }
        Ok(())
    }
}

/// Reads the events, runs them, writes the decisions.
pub fn run(o: &Options) -> anyhow::Result<()> {
    let policy = match &o.policy {
        Some(p) => load_policy(p)?,
        None => Policy::example(),
    };
    let other = o.compare.as_deref().map(load_policy).transpose()?;
    let file =
        File::open(&o.events).with_context(|| format!("cannot open {}", o.events.display()))?;
    let mut events = Vec::new();
    for (n, l) in BufReader::new(file).lines().enumerate() {
        let l = l.with_context(|| format!("cannot read {}", o.events.display()))?;
        if l.trim().is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(&l)
            .with_context(|| format!("{}:{}: not an event", o.events.display(), n + 1))?;
        if e.is_decision() {
            bail!(
                "{}:{}: {} is a decision; the input holds facts only",
                o.events.display(),
                n + 1,
                e.body.type_name()
            );
        }
        events.push(e);
    }
    events.sort_by_key(|e| e.occurred_at);
    let until = events.last().map(|e| {
        e.occurred_at
            .plus(chrono::TimeDelta::days(i64::from(o.tail_days)))
    });
    let comparison = other.as_ref().map(|b| {
        tacto_policy::sim::compare(
            &policy,
            b,
            &events,
            until.unwrap_or(Timestamp::from_micros(0)),
        )
    });
    let out = File::create(&o.out).with_context(|| format!("cannot write {}", o.out.display()))?;
    let mut w = BufWriter::new(out);
    // Decisions are written as they are made and the log emptied after each input: memory
    // holds the accounts, not the whole history (a month of a large portfolio runs to GBs).
    let mut written = Written::default();
    let mut sim = Simulator::new(&policy, o.simulated_provider, true);
    for e in events {
        sim.push(e);
        written.drain(&mut sim.log, &mut w)?;
    }
    if let Some(t) = until {
        sim.advance_to(t);
        written.drain(&mut sim.log, &mut w)?;
    }
    w.flush()?;
    eprintln!(
        "{} events in, {} decisions written to {}",
        written.facts,
        written.decisions,
        o.out.display()
    );
    if let Some(c) = comparison {
        print_comparison(&c);
    }
    Ok(())
}

/// The side-by-side summary of two policies (both with the simulated provider).
fn print_comparison(c: &tacto_policy::sim::Comparison) {
    println!(
        "{:<14} {:<28} {:>14} {:>14} {:>8}",
        "", "", c.a.0, c.b.0, "change"
    );
    for (section, label, a, b) in c.rows() {
        let change = if a == 0 {
            String::new()
        } else {
            format!("{:+.0}%", (b as f64 - a as f64) * 100.0 / a as f64)
        };
        println!("{section:<14} {label:<28} {a:>14} {b:>14} {change:>8}");
    }
}
